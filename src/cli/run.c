/* run.c - `clearbox run`: run one program in the sandbox and print the result.
 *
 * Flags override the policy file, which overrides the defaults (sandbox.h).
 * Exit status: 0 the evaluation ran (whatever its status), 1 clearbox could
 * not run it (status error; the JSON is still printed), 2 usage error
 * (message on stderr, nothing on stdout). Ctrl-C / SIGTERM kill the program,
 * clean up, and print the result with status killed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "telemetry/audit.h"
#include "telemetry/log.h"
#include "telemetry/telemetry.h"
#include "telemetry/trace.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/timeutil.h"
#include "util/num.h"

#define RUN_CODE_MAX (4u << 20) /* bytes of the program file */

/* $CLEARBOX_PHASE_MARKS=1: clock readings of the command's own phases
 * (around the engine's), printed on stderr at the end. */
static const char *cli_mark_name[8];
static uint64_t cli_mark_ns[8];
static int cli_nmarks;
static bool cli_marks;
static void cli_mark(const char *what)
{
    if (cli_marks && cli_nmarks < 8) {
        cli_mark_name[cli_nmarks] = what;
        cli_mark_ns[cli_nmarks++] = time_mono_ns();
    }
}

static void cli_marks_print(void)
{
    if (!cli_marks)
        return;
    char line[512];
    int len = snprintf(line, sizeof line, "cli marks (monotonic ns):");
    for (int i = 0; i < cli_nmarks && len < (int)sizeof line; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, " %s=%" PRIu64, cli_mark_name[i],
                        cli_mark_ns[i]);
    fprintf(stderr, "%s\n", line);
}

static volatile sig_atomic_t run_cancel;
static void on_signal(int sig)
{
    (void)sig;
    run_cancel = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: clearbox run [options] FILE\n"
           "Run FILE in the sandbox (new user/pid/mount/net/ipc/uts/cgroup namespaces,\n"
           "read-only root, cgroup limits, seccomp) and print the result record.\n"
           "\n"
           "  --lang python|sh      language (default from the extension: .py, .sh)\n"
           "  --timeout SEC         wall clock limit (default 10)\n"
           "  --cpu-time SEC        CPU time of all processes (default = timeout)\n"
           "  --memory MB           memory, no swap (default 256)\n"
           "  --pids N              processes and threads (default 64)\n"
           "  --output-limit BYTES  per stream; the rest is cut and the program ended (default "
           "1048576)\n"
           "  --disk MB             workspace + /tmp, and the largest file (default 64)\n"
           "  --open-files N        open files per process (default 256)\n"
           "  --stdin FILE          the program's standard input (default empty)\n"
           "  --arg A               an argument for the program (repeatable)\n"
           "  --file PATH           copy PATH into the workspace (repeatable)\n"
           "  --env K=V             add to the environment (repeatable)\n"
           "  --policy FILE         a JSON policy (deploy/policies/); flags override it\n"
           "  --output-dir DIR      copy the workspace here after the run\n"
           "  --audit-log FILE      append the security events to this audit log\n"
           "  --trace-file FILE     write the spans as OTLP JSON lines here\n"
           "  --cgroup-parent NAME  parent cgroup in each hierarchy (default clearbox)\n"
           "  --rootfs DIR          the program sees DIR's usr/, bin, lib* (e.g. made by\n"
           "                        debootstrap) instead of the host's (default: host)\n"
           "  --eval-id ID          use this evaluation id (default: random)\n"
           "  --submitter NAME      submitter label of clearbox_cost_cents_total (default cli)\n"
           "  --metrics-file FILE   write the metrics (Prometheus text) here at the end\n"
           "  --json                print the JSON record (default when stdout is not a terminal)\n"
           "See docs/sandbox.md.\n");
}

/* Read a whole file, at most max bytes. */
static int slurp(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, errlen, -EINVAL, "%s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return err_set(err, errlen, -EFBIG, "%s is larger than %zu bytes", path, max);
    }
    char *b = malloc((size_t)st.st_size + 1);
    if (!b) {
        close(fd);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, b + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

/* Parse a positive number (may be fractional) times scale into *out. */
static bool parse_num(const char *s, double scale, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || !isfinite(v) || v * scale > 1e18)
        return false;
    *out = (uint64_t)num_llround(v * scale);
    return *out > 0;
}

static int policy_u64(json_t *o, const char *key, uint64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return err_set(err, errlen, -EINVAL, "policy: limits.%s must be a positive integer", key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int policy_load(const char *path, struct sandbox_spec *spec, char *seccomp_name,
                       size_t seccomp_len, char *cgparent, size_t cglen, char *rootfs,
                       size_t rootfs_len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(err, errlen, -EINVAL, "policy %s: line %d: %s", path, je.line, je.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(err, errlen, -EINVAL, "policy %s: not a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "name") || !strcmp(key, "description")) {
            continue;
        } else if (!strcmp(key, "limits")) {
            static const char *const known[] = {
                "wall_timeout_ms",  "cpu_time_ms",    "memory_max_bytes", "pids_max",
                "output_max_bytes", "disk_max_bytes", "open_files_max",   "cpu_cores_milli"};
            const char *k2;
            json_t *v2;
            json_object_foreach(val, k2, v2)
            {
                bool ok = false;
                for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
                    ok |= !strcmp(k2, known[i]);
                if (!ok) {
                    rc = err_set(err, errlen, -EINVAL, "policy: unknown limit '%s'", k2);
                    goto out;
                }
            }
            struct sandbox_limits *l = &spec->limits;
            if ((rc = policy_u64(val, "wall_timeout_ms", &l->wall_timeout_ms, err, errlen)) < 0 ||
                (rc = policy_u64(val, "cpu_time_ms", &l->cpu_time_ms, err, errlen)) < 0 ||
                (rc = policy_u64(val, "memory_max_bytes", &l->memory_max_bytes, err, errlen)) < 0 ||
                (rc = policy_u64(val, "pids_max", &l->pids_max, err, errlen)) < 0 ||
                (rc = policy_u64(val, "output_max_bytes", &l->output_max_bytes, err, errlen)) < 0 ||
                (rc = policy_u64(val, "disk_max_bytes", &l->disk_max_bytes, err, errlen)) < 0 ||
                (rc = policy_u64(val, "open_files_max", &l->open_files_max, err, errlen)) < 0 ||
                (rc = policy_u64(val, "cpu_cores_milli", &l->cpu_cores_milli, err, errlen)) < 0)
                goto out;
        } else if (!strcmp(key, "seccomp_policy") && json_is_string(val)) {
            snprintf(seccomp_name, seccomp_len, "%s", json_string_value(val));
        } else if (!strcmp(key, "cgroup_parent") && json_is_string(val)) {
            snprintf(cgparent, cglen, "%s", json_string_value(val));
        } else if (!strcmp(key, "rootfs") && json_is_string(val)) {
            if (json_string_length(val) >= rootfs_len || json_string_value(val)[0] != '/') {
                rc = err_set(err, errlen, -EINVAL, "policy: rootfs must be an absolute path");
                goto out;
            }
            snprintf(rootfs, rootfs_len, "%s", json_string_value(val));
        } else if (!strcmp(key, "pricing") && json_is_object(val)) {
            struct sandbox_pricing *p = &spec->pricing;
            sandbox_pricing_default(p);
            static const char *const pk[] = {"cents_per_cpu_second", "cents_per_gb_second",
                                             "cents_per_evaluation"};
            double *dst[] = {&p->cents_per_cpu_second, &p->cents_per_gb_second,
                             &p->cents_per_evaluation};
            const char *k2;
            json_t *v2;
            json_object_foreach(val, k2, v2)
            {
                size_t i = 0;
                while (i < 3 && strcmp(k2, pk[i]))
                    i++;
                if (i == 3 || !json_is_number(v2) || json_number_value(v2) < 0) {
                    rc = err_set(err, errlen, -EINVAL,
                                 "policy: pricing.%s must be a known, non-negative number", k2);
                    goto out;
                }
                *dst[i] = json_number_value(v2);
            }
        } else {
            rc = err_set(err, errlen, -EINVAL, "policy %s: unknown or mistyped setting '%s'", path,
                         key);
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

/* One `security` logger line per security event (DESIGN.md's audit record
 * shape: eval_id, reason, details), with the audit record's seq and hash
 * when it went into the audit log. */
static void security_log(const struct sandbox_result *r, const struct sandbox_event *e,
                         const struct buf *details, const struct audit_appended *ap)
{
    log_logger_t *lg = log_get("security");
    bool written = ap && ap->seq > 0;
    log_warning(lg, "evaluation.suspicious", LOG_STR("eval_id", r->eval_id),
                LOG_STR("reason", e->reason), LOG_BOOL("blocked", e->blocked),
                buf_ok(details) ? LOG_RAW("details", details->data, details->len)
                                : LOG_NULL("details"),
                written ? LOG_UINT("audit_seq", ap->seq) : LOG_NULL("audit_seq"),
                written ? LOG_STR("audit_hash", ap->hash) : LOG_NULL("audit_hash"));
}

/* Write the run's security events into the audit log (rate-limited scope,
 * path may be NULL: no audit log) and log each on the security logger. */
static int audit_write(const char *path, const struct sandbox_result *r, char *err, size_t errlen)
{
    audit_log_t *al = NULL;
    audit_eval_t *ev = NULL;
    int rc = 0;
    if (path && (rc = audit_log_open(&al, path, NULL, err, errlen)) < 0)
        al = NULL; /* still log the events below */
    if (al)
        rc =
            audit_eval_begin(&ev, al, r->eval_id, r->code ? r->code : "", r->code_len, err, errlen);
    for (size_t i = 0; i < r->nevents; i++) {
        char storage[4096];
        struct buf d;
        buf_init(&d, storage, sizeof storage, AUDIT_DETAILS_MAX);
        sandbox_event_details_json(r, &r->events[i], &d);
        struct audit_event ae = {.reason = r->events[i].reason,
                                 .details_json = d.data,
                                 .details_len = d.len,
                                 .ts_ns = r->events[i].ts_ns};
        struct audit_appended ap;
        memset(&ap, 0, sizeof ap);
        if (ev && rc >= 0 && buf_ok(&d))
            rc = audit_eval_append(ev, &ae, &ap, err, errlen);
        security_log(r, &r->events[i], &d, &ap);
        buf_free(&d);
    }
    if (!al)
        return rc;
    int rc2 = audit_eval_end(ev, rc < 0 ? NULL : err, errlen);
    audit_log_close(al);
    return rc < 0 ? rc : rc2;
}

/* --metrics-file: the process's registry in Prometheus text format, written
 * to a temporary file and renamed (node_exporter's textfile collector reads
 * such files). */
static int metrics_write(const char *path, char *err, size_t errlen)
{
    const struct telemetry_std *t = telemetry_std();
    if (!t)
        return err_set(err, errlen, -ENOENT, "telemetry is not set up");
    char *text = NULL;
    size_t len = 0;
    int rc = metrics_render_string(t->reg, METRICS_FORMAT_TEXT, 0, &text, &len, err, errlen);
    if (rc < 0)
        return rc;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        free(text);
        return err_set(err, errlen, -ENAMETOOLONG, "--metrics-file path too long");
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        free(text);
        return err_sys(err, errlen, -errno, "open %s", tmp);
    }
    /* Blocks allocated now, not at writeback: replacing a file by rename,
     * ext4 (auto_da_alloc) otherwise flushes the new file's delayed
     * allocation inside rename(), 1.3 ms of every run here (0.2 ms with
     * this). Best effort: a filesystem without fallocate just skips it. */
    if (len > 0)
        (void)fallocate(fd, 0, 0, (off_t)len);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = err_sys(err, errlen, -errno, "write %s", tmp);
            break;
        }
        off += (size_t)w;
    }
    free(text);
    if (close(fd) < 0 && rc == 0)
        rc = err_sys(err, errlen, -errno, "close %s", tmp);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = err_sys(err, errlen, -errno, "rename %s to %s", tmp, path);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

static int cmd_run(int argc, char **argv)
{
    const char *pm = getenv("CLEARBOX_PHASE_MARKS");
    cli_marks = pm && !strcmp(pm, "1");
    cli_mark("cmd_start");
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    const char *lang_name = NULL, *file = NULL, *stdin_path = NULL, *policy = NULL;
    const char *audit_path = NULL, *trace_path = NULL, *metrics_path = NULL;
    const char *submitter = "cli";
    const char *args[SANDBOX_ARGS_MAX + 4];
    const char *envs[SANDBOX_ENV_MAX + 1];
    const char *file_paths[SANDBOX_FILES_MAX];
    size_t nargs = 0, nenv = 0, nfiles = 0;
    bool json = !isatty(1), bad = false;
    struct sandbox_limits fl;
    memset(&fl, 0, sizeof fl);
    const char *cgparent_flag = NULL, *rootfs_flag = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (cli_opt(argc, argv, &i, "--lang", &v, &bad)) {
            lang_name = v;
        } else if (cli_opt(argc, argv, &i, "--timeout", &v, &bad)) {
            if (v && !parse_num(v, 1000, &fl.wall_timeout_ms))
                return cli_usage_error("run", "--timeout wants seconds > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--cpu-time", &v, &bad)) {
            if (v && !parse_num(v, 1000, &fl.cpu_time_ms))
                return cli_usage_error("run", "--cpu-time wants seconds > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--memory", &v, &bad)) {
            if (v && !parse_num(v, 1024.0 * 1024.0, &fl.memory_max_bytes))
                return cli_usage_error("run", "--memory wants MB > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--pids", &v, &bad)) {
            if (v && !parse_num(v, 1, &fl.pids_max))
                return cli_usage_error("run", "--pids wants a count > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--output-limit", &v, &bad)) {
            if (v && !parse_num(v, 1, &fl.output_max_bytes))
                return cli_usage_error("run", "--output-limit wants bytes > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--disk", &v, &bad)) {
            if (v && !parse_num(v, 1024.0 * 1024.0, &fl.disk_max_bytes))
                return cli_usage_error("run", "--disk wants MB > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--open-files", &v, &bad)) {
            if (v && !parse_num(v, 1, &fl.open_files_max))
                return cli_usage_error("run", "--open-files wants a count > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--stdin", &v, &bad)) {
            stdin_path = v;
        } else if (cli_opt(argc, argv, &i, "--arg", &v, &bad)) {
            if (v && nargs >= SANDBOX_ARGS_MAX)
                return cli_usage_error("run", "at most %d --arg", SANDBOX_ARGS_MAX);
            if (v)
                args[nargs++] = v;
        } else if (cli_opt(argc, argv, &i, "--file", &v, &bad)) {
            if (v && nfiles >= SANDBOX_FILES_MAX)
                return cli_usage_error("run", "at most %d --file", SANDBOX_FILES_MAX);
            if (v)
                file_paths[nfiles++] = v;
        } else if (cli_opt(argc, argv, &i, "--env", &v, &bad)) {
            if (v && (!strchr(v, '=') || v[0] == '='))
                return cli_usage_error("run", "--env wants K=V, not '%s'", v);
            if (v && nenv >= SANDBOX_ENV_MAX)
                return cli_usage_error("run", "at most %d --env", SANDBOX_ENV_MAX);
            if (v)
                envs[nenv++] = v;
        } else if (cli_opt(argc, argv, &i, "--policy", &v, &bad)) {
            policy = v;
        } else if (cli_opt(argc, argv, &i, "--output-dir", &v, &bad)) {
            spec.output_dir = v;
        } else if (cli_opt(argc, argv, &i, "--audit-log", &v, &bad)) {
            audit_path = v;
        } else if (cli_opt(argc, argv, &i, "--trace-file", &v, &bad)) {
            trace_path = v;
        } else if (cli_opt(argc, argv, &i, "--cgroup-parent", &v, &bad)) {
            cgparent_flag = v;
        } else if (cli_opt(argc, argv, &i, "--rootfs", &v, &bad)) {
            if (v && v[0] != '/')
                return cli_usage_error("run", "--rootfs wants an absolute path, not '%s'", v);
            rootfs_flag = v;
        } else if (cli_opt(argc, argv, &i, "--eval-id", &v, &bad)) {
            spec.eval_id = v;
        } else if (cli_opt(argc, argv, &i, "--submitter", &v, &bad)) {
            if (v && (!*v || strlen(v) > 128))
                return cli_usage_error("run", "--submitter wants 1-128 bytes");
            if (v)
                submitter = v;
        } else if (cli_opt(argc, argv, &i, "--metrics-file", &v, &bad)) {
            metrics_path = v;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("run", "unknown option '%s'", a);
        } else if (!file) {
            file = a;
        } else {
            return cli_usage_error("run", "one FILE only (got '%s' too); use --arg for arguments",
                                   a);
        }
        if (bad)
            return cli_usage_error("run", "option '%s' needs a value", a);
    }
    if (!file)
        return cli_usage_error("run", "which FILE should run?");
    const struct cli_lang *lg = lang_name ? cli_lang_find(lang_name) : cli_lang_from_path(file);
    if (!lg) {
        if (lang_name)
            return cli_usage_error("run", "unknown language '%s' (known: python, sh)", lang_name);
        return cli_usage_error("run", "cannot tell the language of '%s'; use --lang python|sh",
                               file);
    }
    if (cgparent_flag &&
        (!*cgparent_flag || strchr(cgparent_flag, '/') || strstr(cgparent_flag, "..")))
        return cli_usage_error("run", "--cgroup-parent wants one path component");

    char err[ERR_LEN];
    char seccomp_name[64] = "", cgparent[128] = "", rootfs[1024] = "";
    if (policy && policy_load(policy, &spec, seccomp_name, sizeof seccomp_name, cgparent,
                              sizeof cgparent, rootfs, sizeof rootfs, err, sizeof err) < 0)
        return cli_usage_error("run", "%s", err);
    /* flags override the policy */
    uint64_t *fv[] = {&fl.wall_timeout_ms,  &fl.cpu_time_ms,    &fl.memory_max_bytes, &fl.pids_max,
                      &fl.output_max_bytes, &fl.disk_max_bytes, &fl.open_files_max};
    uint64_t *sv[] = {&spec.limits.wall_timeout_ms,  &spec.limits.cpu_time_ms,
                      &spec.limits.memory_max_bytes, &spec.limits.pids_max,
                      &spec.limits.output_max_bytes, &spec.limits.disk_max_bytes,
                      &spec.limits.open_files_max};
    for (size_t i = 0; i < sizeof fv / sizeof fv[0]; i++)
        if (*fv[i])
            *sv[i] = *fv[i];
    if (fl.wall_timeout_ms && !fl.cpu_time_ms)
        spec.limits.cpu_time_ms = 0; /* CPU time follows the timeout unless given */
    if (seccomp_name[0])
        spec.seccomp_policy = seccomp_name;
    spec.cgroup_parent = cgparent_flag ? cgparent_flag : (cgparent[0] ? cgparent : NULL);
    spec.rootfs = rootfs_flag ? rootfs_flag : (rootfs[0] ? rootfs : NULL);

    struct sandbox_limits eff = spec.limits;
    sandbox_limits_default(&eff);
    char *code = NULL, *in = NULL;
    size_t code_len = 0, in_len = 0;
    struct sandbox_file files[SANDBOX_FILES_MAX];
    memset(files, 0, sizeof files);
    int ret = 1;
    if (slurp(file, RUN_CODE_MAX, &code, &code_len, err, sizeof err) < 0) {
        ret = cli_usage_error("run", "%s", err);
        goto out;
    }
    if (stdin_path && slurp(stdin_path, eff.disk_max_bytes, &in, &in_len, err, sizeof err) < 0) {
        ret = cli_usage_error("run", "--stdin: %s", err);
        goto out;
    }
    for (size_t i = 0; i < nfiles; i++) {
        char *data;
        size_t len;
        if (slurp(file_paths[i], eff.disk_max_bytes, &data, &len, err, sizeof err) < 0) {
            ret = cli_usage_error("run", "--file: %s", err);
            goto out;
        }
        const char *base = strrchr(file_paths[i], '/');
        files[i].name = base ? base + 1 : file_paths[i];
        files[i].data = data;
        files[i].len = len;
        struct stat st;
        files[i].executable = stat(file_paths[i], &st) == 0 && (st.st_mode & 0100);
    }

    char guest_path[64];
    snprintf(guest_path, sizeof guest_path, "/work/%s", lg->file);
    const char *argvv[SANDBOX_ARGS_MAX + 4];
    size_t na = 0;
    argvv[na++] = lg->interp;
    argvv[na++] = guest_path;
    for (size_t i = 0; i < nargs; i++)
        argvv[na++] = args[i];
    argvv[na] = NULL;
    envs[nenv] = NULL;
    spec.argv = argvv;
    spec.language = lg->name;
    spec.code = code;
    spec.code_len = code_len;
    spec.code_name = lg->file;
    spec.env = envs;
    spec.stdin_data = in;
    spec.stdin_len = in_len;
    spec.files = files;
    spec.nfiles = nfiles;
    spec.cancel = &run_cancel;

    /* tracing: evaluation.execute, child of the caller's TRACEPARENT if any */
    struct telemetry_options topts = {.trace_file = trace_path, .no_metrics = !metrics_path};
    if (telemetry_init(&topts, err, sizeof err) < 0) {
        ret = cli_usage_error("run", "tracing: %s", err);
        goto out;
    }
    struct trace_context parent;
    const char *env_tp = getenv("TRACEPARENT");
    bool has_parent = env_tp && trace_traceparent_parse(env_tp, strlen(env_tp), &parent) == 0;
    trace_span_t *sp =
        trace_span_start("evaluation.execute", TRACE_KIND_INTERNAL, has_parent ? &parent : NULL);
    struct trace_scope scope;
    trace_span_make_current(sp, &scope);
    struct trace_context ctx;
    char tp[TRACE_TRACEPARENT_LEN + 1] = "";
    if (trace_current_context(&ctx))
        trace_traceparent_format(&ctx, tp);
    spec.traceparent = tp[0] ? tp : NULL;

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    struct sandbox_result res;
    cli_mark("engine_start");
    int rc = sandbox_run(&spec, &res, err, sizeof err);
    cli_mark("engine_end");

    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    /* inside the span's scope, so the security lines carry its trace_id */
    if (res.nevents) {
        char aerr[ERR_LEN];
        if (audit_write(audit_path, &res, aerr, sizeof aerr) < 0)
            fprintf(stderr, "clearbox run: audit log %s: %s\n", audit_path, aerr);
    }
    trace_span_set_str(sp, "eval_id", res.eval_id);
    trace_span_set_str(sp, "engine", res.engine);
    trace_span_set_str(sp, "language", lg->name);
    trace_span_set_int(sp, "code_length", (int64_t)code_len);
    trace_span_set_str(sp, "status", sandbox_status_name(res.status));
    if (res.exit_code >= 0 && !res.signal)
        trace_span_set_int(sp, "exit_code", res.exit_code);
    if (res.status == SANDBOX_ERROR)
        trace_span_set_status(sp, TRACE_STATUS_ERROR, res.error_message);
    trace_span_restore(&scope);
    trace_span_end(sp);

    /* the cost counter needs the submitter, so the caller records it (the
     * engine records the other DESIGN.md metrics) */
    const struct telemetry_std *tstd = telemetry_std();
    if (tstd && res.status != SANDBOX_ERROR && res.res.estimated_cost_cents > 0)
        metrics_counter_add_f(metrics_counter_labels(tstd->cost_cents, lg->name, submitter),
                              res.res.estimated_cost_cents);
    if (metrics_path) {
        char merr[ERR_LEN];
        if (metrics_write(metrics_path, merr, sizeof merr) < 0)
            fprintf(stderr, "clearbox run: --metrics-file: %s\n", merr);
    }
    struct buf b;
    buf_init(&b, NULL, 0, (size_t)64 << 20);
    if (json) {
        sandbox_result_json(&res, &b);
        buf_putc(&b, '\n');
    } else {
        sandbox_result_text(&res, &b);
    }
    cli_mark("rendered");
    fwrite(b.data ? b.data : "", 1, b.len, stdout);
    fflush(stdout);
    buf_free(&b);
    if (rc < 0 && !json)
        fprintf(stderr, "clearbox run: %s\n", err);
    if (res.status != SANDBOX_ERROR && res.ndegraded) {
        /* never silently weaker: name every missing protection or figure */
        char miss[512];
        int ml = 0;
        for (size_t i = 0; i < res.ndegraded && ml < (int)sizeof miss; i++)
            ml += snprintf(miss + ml, sizeof miss - (size_t)ml, "%s%s", i ? ", " : "",
                           res.degraded[i]);
        fprintf(stderr,
                "clearbox run: warning: ran without %s (policy.degraded; see docs/sandbox.md)\n",
                miss);
    }
    ret = (rc < 0 || res.status == SANDBOX_ERROR) ? 1 : 0;
    sandbox_result_free(&res);
    telemetry_shutdown();
    cli_mark("telemetry_shut");
    cli_marks_print();
out:
    free(code);
    free(in);
    for (size_t i = 0; i < nfiles; i++)
        free((void *)files[i].data);
    return ret;
}

CLI_COMMAND(run, 10, "run one program in the sandbox and print the result", cmd_run)
