/* otlp.c - OTLP configuration, resource and the two exporters (see otlp.h).
 *
 * HTTP export follows the OTLP/HTTP spec: POST to <endpoint>, Content-Type
 * application/x-protobuf or application/json, 2xx is success. 429, 502, 503,
 * 504 and transport failures (refused, reset, timed out) are retried with
 * exponential backoff and jitter, or after the server's Retry-After (seconds
 * form), but never past the batch's deadline: a retry that cannot finish in
 * time is not started. Other statuses drop the batch (retrying a 400 never
 * helps). Headers from the environment are checked for CR/LF after decoding,
 * so a value cannot smuggle another header into the request. */
#include "telemetry/otlp.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util/curl_dl.h"
#include "util/err.h"
#include "util/io.h"
#include "util/hex.h"
#include "util/rand.h"
#include "util/timeutil.h"

#ifndef CLEARBOX_VERSION
#define CLEARBOX_VERSION "0.0.0"
#endif

/* ---- small parsers ------------------------------------------------------ */

int otlp_traces_url(const char *base, char *out, size_t outlen)
{
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    int w = snprintf(out, outlen, "%.*s/v1/traces", (int)n, base);
    if (w < 0 || (size_t)w >= outlen) {
        if (outlen)
            out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int otlp_percent_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    if (!outlen)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -EINVAL;
            uint8_t byte;
            if (hex_decode(s + i + 1, 1, &byte) < 0)
                return -EINVAL;
            c = (char)byte;
            i += 2;
        }
        if (c == '\0')
            return -EINVAL;
        if (o + 1 >= outlen)
            return -E2BIG;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static void trim_span(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

int otlp_parse_kv_list(const char *s, void (*fn)(void *arg, const char *k, const char *v),
                       void *arg)
{
    int count = 0;
    if (!s)
        return 0;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (eq) {
            const char *k = s, *v = eq + 1;
            size_t kn = (size_t)(eq - s), vn = len - kn - 1;
            trim_span(&k, &kn);
            trim_span(&v, &vn);
            char key[OTLP_RES_KEY_MAX], val[OTLP_HEADER_MAX];
            if (kn && kn < sizeof key && otlp_percent_decode(v, vn, val, sizeof val) == 0) {
                memcpy(key, k, kn);
                key[kn] = '\0';
                fn(arg, key, val);
                count++;
            }
        }
        if (!end)
            break;
        s = end + 1;
    }
    return count;
}

int otlp_parse_retry_after(const char *v, uint32_t *secs)
{
    if (!v)
        return -EINVAL;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!isdigit((unsigned char)*v))
        return -EINVAL;
    uint64_t x = 0;
    while (isdigit((unsigned char)*v)) {
        if (x < 1000000)
            x = x * 10 + (uint64_t)(*v - '0');
        v++;
    }
    while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
        v++;
    if (*v)
        return -EINVAL;
    *secs = x > OTLP_RETRY_AFTER_MAX_S ? OTLP_RETRY_AFTER_MAX_S : (uint32_t)x;
    return 0;
}

uint64_t otlp_backoff_ms(unsigned attempt)
{
    uint64_t d = 500;
    for (unsigned i = 1; i < attempt && d < 8000; i++)
        d *= 2;
    if (d > 8000)
        d = 8000;
    return d / 2 + (uint64_t)(rand_unit() * (double)(d / 2 + 1));
}

/* ---- configuration ------------------------------------------------------ */

static const char *env2(const char *specific, const char *general)
{
    const char *v = getenv(specific);
    if (v && *v)
        return v;
    v = getenv(general);
    return (v && *v) ? v : NULL;
}

static bool header_name_ok(const char *k)
{
    if (!*k)
        return false;
    for (const char *p = k; *p; p++) {
        unsigned char c = (unsigned char)*p;
        /* RFC 9110 token characters */
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

static void add_header(void *arg, const char *k, const char *v)
{
    struct otlp_config *c = arg;
    if (c->nheaders >= OTLP_HEADERS_MAX || !header_name_ok(k) || strpbrk(v, "\r\n"))
        return;
    int w = snprintf(c->headers[c->nheaders], OTLP_HEADER_MAX, "%s: %s", k, v);
    if (w > 0 && w < OTLP_HEADER_MAX)
        c->nheaders++;
}

int otlp_config_from_env(struct otlp_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->timeout_ms = 10000;
    out->protocol = OTLP_HTTP_PROTOBUF;

    const char *proto = env2("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
    if (proto) {
        if (strcmp(proto, "http/protobuf") == 0)
            out->protocol = OTLP_HTTP_PROTOBUF;
        else if (strcmp(proto, "http/json") == 0)
            out->protocol = OTLP_HTTP_JSON;
        else if (strcmp(proto, "grpc") == 0)
            return err_set(err, errlen, -EINVAL,
                           "OTLP protocol grpc is not supported: set "
                           "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (collector port 4318)");
        else
            return err_set(err, errlen, -EINVAL,
                           "unknown OTLP protocol \"%.64s\": use http/protobuf or http/json",
                           proto);
    }

    const char *t = env2("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT");
    if (t) {
        char *end;
        errno = 0;
        unsigned long long ms = strtoull(t, &end, 10);
        if (!errno && end != t && *end == '\0' && t[0] != '-' && ms > 0 && ms <= 3600000)
            out->timeout_ms = (uint32_t)ms; /* invalid values are ignored (OTel rule) */
    }

    const char *traces = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const char *base = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    const char *which = NULL;
    if (traces && *traces) {
        which = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
        if (strlen(traces) >= sizeof out->endpoint)
            return err_set(err, errlen, -EINVAL, "%s is too long", which);
        memcpy(out->endpoint, traces, strlen(traces) + 1);
    } else if (base && *base) {
        which = "OTEL_EXPORTER_OTLP_ENDPOINT";
        if (otlp_traces_url(base, out->endpoint, sizeof out->endpoint) < 0)
            return err_set(err, errlen, -EINVAL, "%s is too long", which);
    }
    if (which && strncasecmp(out->endpoint, "http://", 7) != 0 &&
        strncasecmp(out->endpoint, "https://", 8) != 0) {
        out->endpoint[0] = '\0';
        return err_set(err, errlen, -EINVAL,
                       "%s must start with http:// or https:// (e.g. http://localhost:4318)",
                       which);
    }
    if (which && strpbrk(out->endpoint, " \t\r\n")) {
        out->endpoint[0] = '\0';
        return err_set(err, errlen, -EINVAL, "%s contains white space", which);
    }

    /* The general headers first, then the traces ones (which may add more). */
    otlp_parse_kv_list(getenv("OTEL_EXPORTER_OTLP_HEADERS"), add_header, out);
    otlp_parse_kv_list(getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), add_header, out);
    return 0;
}

/* ---- resource ------------------------------------------------------------ */

static void res_set(struct otlp_resource *r, const char *key, const char *sval, bool is_int,
                    int64_t ival)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        if (strcmp(r->attrs[i].key, key) == 0)
            break;
    if (i == r->n) {
        if (r->n >= OTLP_RESOURCE_ATTRS_MAX || strlen(key) >= OTLP_RES_KEY_MAX) {
            r->dropped++;
            return;
        }
        r->n++;
    }
    struct otlp_kv *kv = &r->attrs[i];
    snprintf(kv->key, sizeof kv->key, "%s", key);
    kv->is_int = is_int;
    kv->ival = ival;
    kv->sval[0] = '\0';
    if (!is_int)
        snprintf(kv->sval, sizeof kv->sval, "%s", sval);
}

static void res_add_env(void *arg, const char *k, const char *v)
{
    res_set(arg, k, v, false, 0);
}

static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;
static char uuid_str[37];

static void uuid_make(void)
{
    uint8_t u[16];
    if (rand_secure(u, sizeof u) < 0)
        rand_id(u, sizeof u);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char h[33];
    hex_encode(u, 16, h);
    snprintf(uuid_str, sizeof uuid_str, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16,
             h + 20);
}

struct trace_attr_data otlp_kv_value(const struct otlp_kv *kv)
{
    struct trace_attr_data a = {.type = kv->is_int ? TRACE_ATTR_INT : TRACE_ATTR_STR};
    if (kv->is_int) {
        a.v.i = kv->ival;
    } else {
        a.v.s = kv->sval;
        a.len = (uint32_t)strlen(kv->sval);
    }
    return a;
}

void otlp_resource_from_env(struct otlp_resource *out)
{
    memset(out, 0, sizeof *out);
    pthread_once(&uuid_once, uuid_make);
    char host[256];
    if (gethostname(host, sizeof host) < 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';

    res_set(out, "service.name", "clearbox", false, 0);
    res_set(out, "service.version", CLEARBOX_VERSION, false, 0);
    res_set(out, "service.instance.id", uuid_str, false, 0);
    if (host[0])
        res_set(out, "host.name", host, false, 0);
    res_set(out, "process.pid", NULL, true, (int64_t)getpid());
    otlp_parse_kv_list(getenv("OTEL_RESOURCE_ATTRIBUTES"), res_add_env, out);
    const char *svc = getenv("OTEL_SERVICE_NAME");
    if (svc && *svc)
        res_set(out, "service.name", svc, false, 0);
}

/* ---- exporters ------------------------------------------------------------ */

enum ex_kind { EX_HTTP, EX_FILE };

struct otlp_exporter {
    enum ex_kind kind;
    struct otlp_resource res;
    uint64_t attempts;
    /* HTTP */
    struct otlp_config cfg;
    CURL *curl;
    struct curl_slist *hdrs;
    int retry_after; /* seconds from the last response, -1 if none */
    char resp[512];  /* the start of the last response body, for errors */
    size_t resp_len;
    /* file */
    int fd;
};

/* libcurl's calls, loaded on first use (util/curl_dl.h explains why). An
 * exporter exists only after curl_dl() succeeded, so cu is never NULL where
 * it is used; after the first call it is one atomic load. */
#define cu (curl_dl(NULL, 0))

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct otlp_exporter *ex = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[64];
        size_t vn = len - (sizeof name - 1);
        if (vn >= sizeof v)
            vn = sizeof v - 1;
        memcpy(v, p + sizeof name - 1, vn);
        v[vn] = '\0';
        uint32_t secs;
        if (otlp_parse_retry_after(v, &secs) == 0)
            ex->retry_after = (int)secs;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct otlp_exporter *ex = arg;
    size_t len = size * n;
    size_t room = sizeof ex->resp - 1 - ex->resp_len;
    size_t take = len < room ? len : room;
    memcpy(ex->resp + ex->resp_len, p, take);
    ex->resp_len += take;
    ex->resp[ex->resp_len] = '\0';
    return len;
}

otlp_exporter_t *otlp_http_exporter_new(const struct otlp_config *cfg,
                                        const struct otlp_resource *res, char *err, size_t errlen)
{
    if (!cfg->endpoint[0]) {
        err_set(err, errlen, -EINVAL, "no OTLP endpoint");
        return NULL;
    }
    if (!curl_dl(err, errlen))
        return NULL;
    struct otlp_exporter *ex = calloc(1, sizeof *ex);
    if (!ex) {
        err_set(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    ex->kind = EX_HTTP;
    ex->fd = -1;
    ex->cfg = *cfg;
    ex->res = *res;
    ex->curl = cu->easy_init();
    if (!ex->curl)
        goto oom;
    struct curl_slist *h = cu->slist_append(NULL, cfg->protocol == OTLP_HTTP_JSON
                                                       ? "Content-Type: application/json"
                                                       : "Content-Type: application/x-protobuf");
    if (!h)
        goto oom;
    ex->hdrs = h;
    if (!(h = cu->slist_append(ex->hdrs, "User-Agent: clearbox/" CLEARBOX_VERSION)))
        goto oom;
    if (!(h = cu->slist_append(ex->hdrs, "Expect:"))) /* no 100-continue round trip */
        goto oom;
    for (size_t i = 0; i < cfg->nheaders; i++)
        if (!(h = cu->slist_append(ex->hdrs, cfg->headers[i])))
            goto oom;
    CURL *c = ex->curl;
    cu->easy_setopt(c, CURLOPT_URL, ex->cfg.endpoint);
    cu->easy_setopt(c, CURLOPT_HTTPHEADER, ex->hdrs);
    cu->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cu->easy_setopt(c, CURLOPT_POST, 1L);
    cu->easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    cu->easy_setopt(c, CURLOPT_HEADERDATA, ex);
    cu->easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    cu->easy_setopt(c, CURLOPT_WRITEDATA, ex);
    cu->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cu->easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    /* a collector on this machine is never reached through a proxy */
    cu->easy_setopt(c, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    return ex;
oom:
    otlp_exporter_free(ex);
    err_set(err, errlen, -ENOMEM, "cannot set up the HTTP client");
    return NULL;
}

otlp_exporter_t *otlp_file_exporter_new(const char *path, const struct otlp_resource *res,
                                        char *err, size_t errlen)
{
    struct otlp_exporter *ex = calloc(1, sizeof *ex);
    if (!ex) {
        err_set(err, errlen, -ENOMEM, "out of memory");
        return NULL;
    }
    ex->kind = EX_FILE;
    ex->res = *res;
    ex->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (ex->fd < 0) {
        err_sys(err, errlen, -errno, "cannot open trace file %s", path);
        free(ex);
        return NULL;
    }
    return ex;
}

void otlp_exporter_free(otlp_exporter_t *ex)
{
    if (!ex)
        return;
    /* a file exporter never loaded libcurl: do not load it (~7 ms) to
     * free nothing */
    if (ex->curl)
        cu->easy_cleanup(ex->curl);
    if (ex->hdrs)
        cu->slist_free_all(ex->hdrs);
    if (ex->fd >= 0)
        close(ex->fd);
    free(ex);
}

uint64_t otlp_exporter_attempts(const otlp_exporter_t *ex)
{
    return ex ? ex->attempts : 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static bool curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return true;
    default: return false;
    }
}

static int http_export(struct otlp_exporter *ex, const char *body, size_t n, uint64_t deadline,
                       char *err, size_t errlen)
{
    CURL *c = ex->curl;
    cu->easy_setopt(c, CURLOPT_POSTFIELDS, body);
    cu->easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    for (unsigned attempt = 1;; attempt++) {
        uint64_t now = time_mono_ns();
        if (now >= deadline)
            return err_set(err, errlen, -ETIMEDOUT, "OTLP export: out of time");
        uint64_t left_ms = (deadline - now) / 1000000u;
        if (left_ms == 0)
            left_ms = 1;
        long to = (long)(left_ms < ex->cfg.timeout_ms ? left_ms : ex->cfg.timeout_ms);
        cu->easy_setopt(c, CURLOPT_TIMEOUT_MS, to);
        cu->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, to);
        ex->retry_after = -1;
        ex->resp_len = 0;
        ex->resp[0] = '\0';
        ex->attempts++;
        CURLcode rc = cu->easy_perform(c);
        long status = 0;
        char last[160];
        bool retry;
        int code;
        if (rc == CURLE_OK) {
            cu->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            if (status >= 200 && status < 300)
                return 0;
            retry = status == 429 || status == 502 || status == 503 || status == 504;
            code = -EIO;
            snprintf(last, sizeof last, "HTTP %ld%s%.100s", status, ex->resp_len ? ": " : "",
                     ex->resp);
        } else {
            retry = curl_retryable(rc);
            code = rc == CURLE_COULDNT_CONNECT      ? -ECONNREFUSED
                   : rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
                                                    : -EIO;
            snprintf(last, sizeof last, "%s", cu->easy_strerror(rc));
        }
        if (!retry)
            return err_set(err, errlen, code, "OTLP export to %s: %s", ex->cfg.endpoint, last);
        /* Retry-After: 0 must not turn into a tight loop: at least 100 ms. */
        uint64_t wait = ex->retry_after > 0    ? (uint64_t)ex->retry_after * 1000u
                        : ex->retry_after == 0 ? 100
                                               : otlp_backoff_ms(attempt);
        now = time_mono_ns();
        if (now + wait * 1000000u >= deadline)
            return err_set(err, errlen, -ETIMEDOUT,
                           "OTLP export to %s: gave up after %u attempt%s (last: %s)",
                           ex->cfg.endpoint, attempt, attempt == 1 ? "" : "s", last);
        sleep_ms(wait);
    }
}

int otlp_exporter_export(otlp_exporter_t *ex, const struct trace_span_data *const *spans, size_t n,
                         uint64_t deadline_mono_ns, char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, NULL, 0, OTLP_BODY_MAX);
    int rc;
    if (ex->kind == EX_FILE) {
        rc = otlp_encode_json(&ex->res, spans, n, &b);
        if (rc == 0)
            rc = buf_putc(&b, '\n');
        if (rc == 0)
            rc = io_write_all(ex->fd, b.data, b.len);
        if (rc < 0)
            err_sys(err, errlen, rc, "cannot write the trace file");
    } else {
        rc = ex->cfg.protocol == OTLP_HTTP_JSON ? otlp_encode_json(&ex->res, spans, n, &b)
                                                : otlp_encode_protobuf(&ex->res, spans, n, &b);
        if (rc < 0)
            err_set(err, errlen, rc, "OTLP batch does not encode in %u bytes", OTLP_BODY_MAX);
        else
            rc = http_export(ex, b.data, b.len, deadline_mono_ns, err, errlen);
    }
    buf_free(&b);
    return rc;
}
