/* config.c - see config.h. One table row per setting: its key, type, where it
 * lives in struct service_config, the default as text and a summary. The
 * defaults are applied by parsing that text, so the help output shows exactly
 * what the parser produces. */
#include "service/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sandbox.h"
#include "service/store.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"
#include "util/num.h"

enum cfg_type {
    T_STR,    /* char array */
    T_SECRET, /* char array, never printed */
    T_BOOL,
    T_INT,    /* int, >= min */
    T_I64,    /* int64_t seconds etc. */
    T_SIZE,   /* uint64_t bytes, K/M/G suffixes */
    T_DOUBLE, /* >= 0 */
    T_S_MS,   /* seconds (may be fractional) stored as uint64_t milliseconds */
    T_MB_B,   /* MiB stored as uint64_t bytes */
    T_U64,    /* plain count stored as uint64_t */
};

struct cfg_row {
    const char *key;
    enum cfg_type type;
    size_t off;
    size_t size;        /* T_STR: array size */
    const char *def;    /* default as text */
    double min, max;    /* numeric range (inclusive) */
    const char *flag2;  /* an extra short flag, or NULL */
    const char *help;
};

#define F(field) offsetof(struct service_config, field), sizeof(((struct service_config *)0)->field)
#define BIG 9.0e15

static const struct cfg_row rows[] = {
    {"listen", T_STR, F(listen), CONFIG_DEFAULT_LISTEN, 0, 0, NULL,
     "HOST:PORT to listen on ([::1]:PORT for IPv6; port 0 picks one)"},
    {"auth_token", T_SECRET, F(auth_token), "", 0, 0, "--token",
     "bearer token every API request must carry (Authorization: Bearer ...); empty = none"},
    {"allow_non_loopback", T_BOOL, F(allow_non_loopback), "false", 0, 0, NULL,
     "allow a non-loopback listen address without auth_token"},
    {"http_connections_max", T_INT, F(http_connections_max), "256", 1, 65536, NULL,
     "concurrent HTTP connections (one thread each)"},
    {"max_body_bytes", T_SIZE, F(max_body_bytes), "8M", 1024, BIG, NULL,
     "largest request body; larger gets 413"},
    {"discard_body_max_bytes", T_SIZE, F(discard_body_max_bytes), "64M", 1024, BIG, NULL,
     "an oversized body is read and dropped up to this before the 413"},
    {"http_timeout_s", T_INT, F(http_timeout_s), "60", 1, 86400, NULL,
     "idle HTTP connection timeout"},
    {"db", T_STR, F(db_url), STORE_DEFAULT_URL, 0, 0, NULL,
     "evaluation store URL: sqlite:PATH or postgres://... (docs/storage.md); same default as clearbox migrate"},
    {"audit_log", T_STR, F(audit_log), "clearbox-audit.log", 0, 0, NULL,
     "security audit log file (JSON lines, hash chain); empty = none"},
    {"audit_key_file", T_STR, F(audit_key_file), "", 0, 0, NULL,
     "key file for the audit chain's HMAC; empty = no HMAC"},
    {"audit_head_interval_s", T_INT, F(audit_head_interval_s), "300", 1, 86400, NULL,
     "log the audit chain's head as an audit.head event this often (and every 1000 "
     "records), so a log store anchors it"},
    {"node_id", T_STR, F(node_id), "", 0, 0, NULL,
     "this node's name in worker ids (NODE-N); empty = the host name"},
    {"role", T_STR, F(role), "all", 0, 0, NULL,
     "what this node runs: all (API and workers), api (no workers; many API nodes "
     "can share one PostgreSQL queue) or worker (workers; HTTP serves only /healthz, "
     "/readyz and /metrics)"},
    {"workers", T_INT, F(workers), "0", 0, 1024, NULL,
     "sandbox worker threads; 0 = number of online CPUs"},
    {"lease_s", T_INT, F(lease_s), "30", 2, 86400, NULL,
     "lease of a claimed evaluation; renewed by heartbeats"},
    {"heartbeat_s", T_INT, F(heartbeat_s), "10", 1, 86400, NULL,
     "lease renewal period (must be < lease_s)"},
    {"max_attempts", T_INT, F(max_attempts), "3", 1, 100, NULL,
     "claims of one evaluation before it ends error/worker_lost"},
    {"grace_s", T_INT, F(grace_s), "30", 0, 86400, NULL,
     "on SIGTERM, how long running evaluations may finish before they are requeued"},
    {"retention_s", T_I64, F(retention_s), "604800", 0, BIG, NULL,
     "purge finished evaluations older than this; 0 = keep forever"},
    {"queue_stall_s", T_INT, F(queue_stall_s), "300", 0, 86400 * 30, NULL,
     "readyz fails when the oldest queued evaluation waited this long; 0 = never"},
    {"submitter_queued_max", T_INT, F(submitter_queued_max), "1000", 0, 1e9, NULL,
     "queued evaluations per metadata.submitter before 429; 0 = no limit"},
    {"submit_rate_per_s", T_DOUBLE, F(submit_rate_per_s), "50", 0, 1e9, NULL,
     "submissions per second per submitter before 429; 0 = no limit"},
    {"submit_burst", T_INT, F(submit_burst), "100", 1, 1e9, NULL,
     "burst of submissions allowed above the rate"},
    {"submitters_max", T_INT, F(submitters_max), "100", 1, 100000, NULL,
     "distinct submitter label values in metrics (the rest fold into 'other')"},
    {"default_timeout_s", T_S_MS, F(limits_default.timeout_ms), "10", 0.001, 86400, NULL,
     "wall clock limit of an evaluation that asks for none"},
    {"max_timeout_s", T_S_MS, F(limits_max.timeout_ms), "300", 0.001, 86400, NULL,
     "largest timeout_s a request may ask for"},
    {"default_cpu_time_s", T_S_MS, F(limits_default.cpu_time_ms), "0", 0, 86400, NULL,
     "CPU time limit by default; 0 = the timeout"},
    {"max_cpu_time_s", T_S_MS, F(limits_max.cpu_time_ms), "300", 0.001, 86400, NULL,
     "largest cpu_time_s a request may ask for"},
    {"default_memory_mb", T_MB_B, F(limits_default.memory_bytes), "256", 4, 1048576, NULL,
     "memory limit (no swap) by default"},
    {"max_memory_mb", T_MB_B, F(limits_max.memory_bytes), "4096", 4, 1048576, NULL,
     "largest memory_mb a request may ask for"},
    {"default_pids", T_U64, F(limits_default.pids), "64", 2, 1e6, NULL,
     "processes and threads by default"},
    {"max_pids", T_U64, F(limits_max.pids), "1024", 2, 1e6, NULL,
     "largest pids a request may ask for"},
    {"default_output_bytes", T_SIZE, F(limits_default.output_bytes), "1M", 1, 256.0 * 1048576,
     NULL, "captured bytes per output stream by default"},
    {"max_output_bytes", T_SIZE, F(limits_max.output_bytes), "16M", 1, 256.0 * 1048576, NULL,
     "largest output_bytes a request may ask for"},
    {"default_disk_mb", T_MB_B, F(limits_default.disk_bytes), "64", 1, 1048576, NULL,
     "workspace + /tmp size by default"},
    {"max_disk_mb", T_MB_B, F(limits_max.disk_bytes), "1024", 1, 1048576, NULL,
     "largest disk_mb a request may ask for"},
    {"code_max_bytes", T_SIZE, F(code_max_bytes), "1M", 1, STORE_CODE_MAX, NULL,
     "largest program text"},
    {"stdin_max_bytes", T_SIZE, F(stdin_max_bytes), "1M", 0, STORE_STDIN_MAX, NULL,
     "largest stdin"},
    {"args_max", T_INT, F(args_max), "64", 0, SANDBOX_ARGS_MAX, NULL,
     "arguments per evaluation"},
    {"arg_max_bytes", T_SIZE, F(arg_max_bytes), "4K", 1, 1048576, NULL,
     "bytes of one argument"},
    {"files_max", T_INT, F(files_max), "32", 0, 64, NULL, "extra files per evaluation"},
    {"file_max_bytes", T_SIZE, F(file_max_bytes), "1M", 0, 1e9, NULL,
     "decoded bytes of one file"},
    {"files_total_max_bytes", T_SIZE, F(files_total_max_bytes), "4M", 0, 1e9, NULL,
     "decoded bytes of all files of one evaluation"},
    {"metadata_max_bytes", T_SIZE, F(metadata_max_bytes), "16K", 2, 1048576, NULL,
     "metadata object as JSON text"},
    {"callback_secret", T_SECRET, F(callback_secret), "", 0, 0, NULL,
     "HMAC-SHA256 key of X-Clearbox-Signature on webhooks; empty = unsigned"},
    {"callback_allow_private", T_BOOL, F(callback_allow_private), "false", 0, 0, NULL,
     "allow webhooks to loopback, private, link-local and metadata addresses"},
    {"callback_retries", T_INT, F(callback_retries), "5", 0, 20, NULL,
     "webhook retries after the first attempt (exponential backoff)"},
    {"callback_timeout_s", T_INT, F(callback_timeout_s), "10", 1, 300, NULL,
     "timeout of one webhook delivery"},
};
#define NROWS (sizeof rows / sizeof rows[0])

size_t config_count(void) { return NROWS; }
const char *config_key(size_t i) { return i < NROWS ? rows[i].key : NULL; }

static const struct cfg_row *row_find(const char *key)
{
    for (size_t i = 0; i < NROWS; i++)
        if (!strcmp(rows[i].key, key))
            return &rows[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
             !strcasecmp(v, "off"))
        *out = false;
    else
        return -EINVAL;
    return 0;
}

/* A finite number, with an optional K/M/G (1024s) suffix when sizes is set. */
static int parse_number(const char *v, bool sizes, double *out)
{
    while (isspace((unsigned char)*v))
        v++;
    if (!*v)
        return -EINVAL;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || !isfinite(d))
        return -EINVAL;
    if (sizes && *end) {
        double m = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K': m = 1024.0; break;
        case 'M': m = 1048576.0; break;
        case 'G': m = 1073741824.0; break;
        default: return -EINVAL;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
        d *= m;
    }
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return -EINVAL;
    *out = d;
    return 0;
}

static int row_set(struct service_config *c, const struct cfg_row *r, const char *value,
                   const char *source, char *err, size_t errlen)
{
    char *p = (char *)c + r->off;
    switch (r->type) {
    case T_STR:
    case T_SECRET: {
        size_t n = strlen(value);
        if (n >= r->size)
            return err_set(err, errlen, -EINVAL, "%s: %s is longer than %zu bytes", source,
                           r->key, r->size - 1);
        memcpy(p, value, n + 1);
        return 0;
    }
    case T_BOOL:
        if (parse_bool(value, (bool *)p) < 0)
            return err_set(err, errlen, -EINVAL, "%s: %s must be true or false, not '%s'",
                           source, r->key, value);
        return 0;
    default:
        break;
    }
    double d;
    bool sizes = r->type == T_SIZE;
    if (parse_number(value, sizes, &d) < 0)
        return err_set(err, errlen, -EINVAL, "%s: %s must be a number%s, not '%s'", source,
                       r->key, sizes ? " (bytes, K/M/G suffixes allowed)" : "", value);
    bool integral = r->type != T_DOUBLE && r->type != T_S_MS;
    if (integral && d != floor(d))
        return err_set(err, errlen, -EINVAL, "%s: %s must be a whole number, not '%s'", source,
                       r->key, value);
    bool zero_ok = !strcmp(r->def, "0") && r->type == T_S_MS; /* "0 = the timeout" */
    if ((d < r->min && !(zero_ok && d == 0)) || d > r->max)
        return err_set(err, errlen, -EINVAL, "%s: %s must be between %g and %g, not '%s'",
                       source, r->key, r->min, r->max, value);
    switch (r->type) {
    case T_INT: *(int *)p = (int)d; break;
    case T_I64: *(int64_t *)p = (int64_t)d; break;
    case T_SIZE:
    case T_U64: *(uint64_t *)p = (uint64_t)d; break;
    case T_DOUBLE: *(double *)p = d; break;
    case T_S_MS: *(uint64_t *)p = (uint64_t)num_llround(d * 1000.0); break;
    case T_MB_B: *(uint64_t *)p = (uint64_t)d << 20; break;
    default: break;
    }
    return 0;
}

int config_set(struct service_config *c, const char *key, const char *value, const char *source,
               char *err, size_t errlen)
{
    if (!c || !key || !value)
        return err_set(err, errlen, -EINVAL, "config_set: missing argument");
    const struct cfg_row *r = row_find(key);
    if (!r)
        return err_set(err, errlen, -EINVAL, "%s: unknown setting '%s'", source ? source : "",
                       key);
    return row_set(c, r, value, source ? source : key, err, errlen);
}

void config_defaults(struct service_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NROWS; i++) {
        int rc = row_set(c, &rows[i], rows[i].def, "default", NULL, 0);
        (void)rc; /* the table's own defaults parse (test_validate checks) */
    }
}

/* ---- the file layer ------------------------------------------------------------ */

int config_load_file(struct service_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_sys(err, errlen, -errno, "config file %s", path);
    char *text = malloc(CONFIG_FILE_MAX + 1);
    if (!text) {
        fclose(f);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    size_t n = fread(text, 1, CONFIG_FILE_MAX + 1, f);
    bool bad_read = ferror(f);
    fclose(f);
    if (bad_read) {
        free(text);
        return err_set(err, errlen, -EIO, "config file %s: read error", path);
    }
    if (n > CONFIG_FILE_MAX) {
        free(text);
        return err_set(err, errlen, -EINVAL, "config file %s is larger than %u bytes", path,
                       CONFIG_FILE_MAX);
    }
    json_error_t je;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return err_set(err, errlen, -EINVAL, "config file %s: line %d: %s", path, je.line,
                       je.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(err, errlen, -EINVAL, "config file %s: must be a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        char source[300];
        snprintf(source, sizeof source, "config file %s key %s", path, key);
        const struct cfg_row *r = row_find(key);
        if (!r) {
            rc = err_set(err, errlen, -EINVAL, "config file %s: unknown setting '%s'", path,
                         key);
            goto out;
        }
        char num[64];
        const char *text_v;
        if (json_is_string(v)) {
            text_v = json_string_value(v);
        } else if (json_is_boolean(v)) {
            text_v = json_is_true(v) ? "true" : "false";
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text_v = num;
        } else if (json_is_real(v)) {
            snprintf(num, sizeof num, "%.17g", json_real_value(v));
            text_v = num;
        } else {
            rc = err_set(err, errlen, -EINVAL, "%s: must be a string, number or boolean",
                         source);
            goto out;
        }
        rc = row_set(c, r, text_v, source, err, errlen);
        if (rc < 0)
            goto out;
    }
    snprintf(c->config_file, sizeof c->config_file, "%s", path);
out:
    json_decref(root);
    return rc;
}

/* ---- all layers -------------------------------------------------------------------- */

static const char *env_get(char **envp, const char *name)
{
    if (!envp)
        return NULL;
    size_t n = strlen(name);
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static void env_name(const char *key, char *out, size_t len)
{
    size_t j = (size_t)snprintf(out, len, "CLEARBOX_");
    for (size_t i = 0; key[i] && j + 1 < len; i++)
        out[j++] = (char)toupper((unsigned char)key[i]);
    out[j] = '\0';
}

static void flag_name(const char *key, char *out, size_t len)
{
    size_t j = (size_t)snprintf(out, len, "--");
    for (size_t i = 0; key[i] && j + 1 < len; i++)
        out[j++] = key[i] == '_' ? '-' : key[i];
    out[j] = '\0';
}

/* Does argv[*i] name flag (as "--flag VALUE" or "--flag=VALUE")? */
static int match_flag(int argc, char **argv, int *i, const char *flag, const char **val,
                      char *err, size_t errlen)
{
    size_t n = strlen(flag);
    const char *a = argv[*i];
    if (strncmp(a, flag, n))
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n])
        return 0;
    if (*i + 1 >= argc)
        return err_set(err, errlen, -EINVAL, "%s needs a value", flag);
    *val = argv[++*i];
    return 1;
}

int config_load(struct service_config *c, int argc, char **argv, char **envp, bool *help,
                char *err, size_t errlen)
{
    if (help)
        *help = false;
    /* 1. which config file: --config beats $CLEARBOX_CONFIG */
    const char *file = env_get(envp, "CLEARBOX_CONFIG");
    for (int i = 1; i < argc; i++) {
        const char *v;
        int m = match_flag(argc, argv, &i, "--config", &v, err, errlen);
        if (m < 0)
            return m;
        if (m)
            file = v;
    }
    if (file && *file)
        TRY(config_load_file(c, file, err, errlen));

    /* 2. the environment */
    for (size_t k = 0; k < NROWS; k++) {
        char name[96];
        env_name(rows[k].key, name, sizeof name);
        const char *v = env_get(envp, name);
        if (v)
            TRY(row_set(c, &rows[k], v, name, err, errlen));
    }

    /* 3. flags */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (help)
                *help = true;
            return 0;
        }
        const char *v;
        int m = match_flag(argc, argv, &i, "--config", &v, err, errlen);
        if (m < 0)
            return m;
        if (m)
            continue;
        bool done = false;
        for (size_t k = 0; k < NROWS && !done; k++) {
            char flag[96];
            flag_name(rows[k].key, flag, sizeof flag);
            const char *names[2] = {flag, rows[k].flag2};
            for (int j = 0; j < 2 && !done; j++) {
                if (!names[j])
                    continue;
                if (rows[k].type == T_BOOL && !strcmp(a, names[j])) {
                    /* a bare boolean flag means true */
                    TRY(row_set(c, &rows[k], "true", names[j], err, errlen));
                    done = true;
                    break;
                }
                m = match_flag(argc, argv, &i, names[j], &v, err, errlen);
                if (m < 0)
                    return m;
                if (m) {
                    TRY(row_set(c, &rows[k], v, names[j], err, errlen));
                    done = true;
                }
            }
        }
        if (!done)
            return err_set(err, errlen, -EINVAL, "unknown option '%s' (see --help)", a);
    }
    return 0;
}

/* ---- checks ----------------------------------------------------------------------- */

int config_listen_parse(const char *listen, char *host, size_t hostlen, int *port,
                        bool *loopback, char *err, size_t errlen)
{
    if (!listen || !*listen)
        return err_set(err, errlen, -EINVAL, "listen address is empty");
    const char *colon;
    const char *h = listen;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return err_set(err, errlen, -EINVAL, "listen address '%s': use [V6ADDR]:PORT",
                           listen);
        h = listen + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return err_set(err, errlen, -EINVAL, "listen address '%s': use HOST:PORT", listen);
        hl = (size_t)(colon - listen);
        if (memchr(listen, ':', hl))
            return err_set(err, errlen, -EINVAL,
                           "listen address '%s': put an IPv6 address in brackets", listen);
    }
    if (hl == 0 || hl >= hostlen)
        return err_set(err, errlen, -EINVAL, "listen address '%s': bad host", listen);
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
        return err_set(err, errlen, -EINVAL, "listen address '%s': port must be 0-65535",
                       listen);
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    struct in_addr a4;
    struct in6_addr a6;
    bool lo;
    if (!strcmp(host, "localhost"))
        lo = true;
    else if (inet_pton(AF_INET, host, &a4) == 1)
        lo = (ntohl(a4.s_addr) >> 24) == 127;
    else if (inet_pton(AF_INET6, host, &a6) == 1)
        lo = IN6_IS_ADDR_LOOPBACK(&a6);
    else
        return err_set(err, errlen, -EINVAL,
                       "listen address '%s': the host must be an IP address or localhost",
                       listen);
    if (loopback)
        *loopback = lo;
    return 0;
}

static bool limits_le(const struct config_eval_limits *a, const struct config_eval_limits *b,
                      const char **which)
{
    if (a->timeout_ms > b->timeout_ms)
        return *which = "timeout", false;
    if (a->cpu_time_ms > b->cpu_time_ms)
        return *which = "cpu_time", false;
    if (a->memory_bytes > b->memory_bytes)
        return *which = "memory", false;
    if (a->pids > b->pids)
        return *which = "pids", false;
    if (a->output_bytes > b->output_bytes)
        return *which = "output", false;
    if (a->disk_bytes > b->disk_bytes)
        return *which = "disk", false;
    return true;
}

int config_check(const struct service_config *c, char *err, size_t errlen)
{
    char host[CONFIG_LISTEN_MAX];
    int port;
    bool lo;
    TRY(config_listen_parse(c->listen, host, sizeof host, &port, &lo, err, errlen));
    if (!lo && !c->auth_token[0] && !c->allow_non_loopback)
        return err_set(err, errlen, -EINVAL,
                       "refusing to listen on %s without auth_token: anyone who can reach it "
                       "could run code. Set --token (or CLEARBOX_AUTH_TOKEN), or pass "
                       "--allow-non-loopback if a proxy in front authenticates",
                       c->listen);
    if (!c->db_url[0])
        return err_set(err, errlen, -EINVAL, "db is empty (use sqlite:PATH)");
    if (strcmp(c->role, "all") && strcmp(c->role, "api") && strcmp(c->role, "worker"))
        return err_set(err, errlen, -EINVAL, "role '%s' is not one of all, api, worker", c->role);
    if (c->heartbeat_s >= c->lease_s)
        return err_set(err, errlen, -EINVAL, "heartbeat_s (%d) must be less than lease_s (%d)",
                       c->heartbeat_s, c->lease_s);
    if (c->max_body_bytes > c->discard_body_max_bytes)
        return err_set(err, errlen, -EINVAL,
                       "max_body_bytes must not exceed discard_body_max_bytes");
    const char *which;
    if (!limits_le(&c->limits_default, &c->limits_max, &which))
        return err_set(err, errlen, -EINVAL, "default_%s is above max_%s", which, which);
    if (c->file_max_bytes > c->files_total_max_bytes)
        return err_set(err, errlen, -EINVAL,
                       "file_max_bytes must not exceed files_total_max_bytes");
    return 0;
}

/* ---- help and JSON ---------------------------------------------------------------------- */

void config_help(FILE *f)
{
    fprintf(f, "usage: clearbox serve [OPTIONS]\n"
               "\n"
               "Run the evaluation service: the HTTP API (docs/api.md), the durable queue and\n"
               "the sandbox workers. Settings come from flags, then CLEARBOX_* environment\n"
               "variables, then a JSON config file (--config FILE or CLEARBOX_CONFIG), then\n"
               "the defaults below; docs/configuration.md explains each one. Sizes take K/M/G.\n"
               "\n"
               "  --config FILE  (CLEARBOX_CONFIG)\n"
               "        JSON object of the settings below, by their key\n");
    for (size_t i = 0; i < NROWS; i++) {
        const struct cfg_row *r = &rows[i];
        char flag[96], env[96];
        flag_name(r->key, flag, sizeof flag);
        env_name(r->key, env, sizeof env);
        const char *arg = r->type == T_BOOL ? "" : r->type == T_STR || r->type == T_SECRET
                                                       ? " TEXT"
                                                       : " N";
        fprintf(f, "  %s%s%s%s  (%s; key %s)\n        %s [default: %s]\n", flag, arg,
                r->flag2 ? ", " : "", r->flag2 ? r->flag2 : "", env, r->key, r->help,
                r->def[0] ? r->def : "empty");
    }
    fprintf(f, "\n  --help         this help\n"
               "\nSIGTERM or SIGINT: stop accepting, let running evaluations finish within\n"
               "grace_s, requeue the rest, flush telemetry, exit 0.\n");
}

int config_to_json(const struct service_config *c, char **out)
{
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 20);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    for (size_t i = 0; i < NROWS; i++) {
        const struct cfg_row *r = &rows[i];
        const char *p = (const char *)c + r->off;
        json_key(&w, r->key);
        switch (r->type) {
        case T_STR: json_str(&w, p); break;
        case T_SECRET: json_str(&w, p[0] ? "(set)" : ""); break;
        case T_BOOL: json_bool(&w, *(const bool *)p); break;
        case T_INT: json_int(&w, *(const int *)p); break;
        case T_I64: json_int(&w, *(const int64_t *)p); break;
        case T_SIZE:
        case T_U64: json_uint(&w, *(const uint64_t *)p); break;
        case T_DOUBLE: json_double(&w, *(const double *)p); break;
        case T_S_MS: json_double(&w, (double)*(const uint64_t *)p / 1000.0); break;
        case T_MB_B: json_uint(&w, *(const uint64_t *)p >> 20); break;
        }
    }
    json_obj_close(&w);
    if (!json_ok(&w)) {
        buf_free(&b);
        return -ENOMEM;
    }
    *out = buf_steal(&b);
    return *out ? 0 : -ENOMEM;
}
