/* submit.c - `clearbox submit FILE`: queue a program on a running service
 * (POST /v1/evaluations) and print its id; with --wait, follow it (Server-Sent
 * Events) and print the result as `clearbox run` does.
 *
 * Output: stdout gets the id (or, with --wait, the result: readable on a
 * terminal, the full record as JSON with --json or when stdout is not a
 * terminal); progress and notes go to stderr, so `id=$(clearbox submit x.py)`
 * and `clearbox submit --wait x.py | jq` work.
 * Exit status: 0 queued (or, with --wait, it ran, whatever its status),
 * 1 not accepted, unreachable, or it ended in status error, 2 usage error. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "util/base64.h"
#include "util/err.h"
#include "util/timeutil.h"

#define SUBMIT_INPUT_MAX ((size_t)16 << 20) /* bytes of the program, --stdin, each --file */
#define SUBMIT_ARGS_MAX 256                 /* the service's own bound is lower (64) */
#define SUBMIT_FILES_MAX 64                 /* the service's is 32 */
#define SUBMIT_METADATA_MAX 64
#define SUBMIT_KEY_MAX 240 /* Idempotency-Key, as the service bounds it */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clearbox submit [options] FILE\n"
            "Queue FILE ('-' = standard input) on a running `clearbox serve` and print\n"
            "the evaluation's id; with --wait, follow it and print the result.\n"
            "\n"
            "  --lang L              python (alias python3), sh, or what the service knows\n"
            "                        (default from the extension: .py, .sh)\n"
            "  --timeout SEC         wall clock limit (service default 10)\n"
            "  --cpu-time SEC        CPU time of all processes (default = timeout)\n"
            "  --memory MB           memory, no swap (service default 256)\n"
            "  --pids N              processes and threads (service default 64)\n"
            "  --output-limit BYTES  captured bytes per stream (service default 1048576)\n"
            "  --disk MB             workspace + /tmp (service default 64)\n"
            "  --stdin FILE          the program's standard input (UTF-8 text)\n"
            "  --arg A               an argument for the program (repeatable)\n"
            "  --file PATH           put PATH into the workspace, by its base name (repeatable)\n"
            "  --priority N          0-9, higher runs first (default 0)\n"
            "  --metadata K=V        a metadata member (repeatable)\n"
            "  --submitter NAME      metadata.submitter: cost, limits and metrics per submitter\n"
            "  --callback-url URL    the service POSTs the record there when it ends\n"
            "  --idempotency-key K   a retried submit with the same key returns the first\n"
            "                        evaluation instead of queueing another\n"
            "  --wait                follow the evaluation and print its result\n"
            "  --json                print JSON: the answer, or with --wait the full record\n"
            "                        (default with --wait when stdout is not a terminal)\n");
    client_usage_common(f);
    fprintf(f, "Exit status: 0 queued (with --wait: it ran, whatever its status), 1 refused,\n"
               "unreachable or ended in status error, 2 usage error. See docs/cli.md.\n");
}

/* Read a whole file (or "-": standard input), at most max bytes. */
static int slurp(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    bool is_stdin = !strcmp(path, "-");
    int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "open %s", path);
    struct stat st;
    if (!is_stdin && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return err_set(err, errlen, -EINVAL, "%s is not a regular file", path);
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int rc = 0;
    for (;;) {
        if (!b) {
            rc = err_set(err, errlen, -ENOMEM, "out of memory reading %s", path);
            break;
        }
        if (n + 1 >= cap) {
            size_t ncap = cap * 2;
            char *nb = cap > max + 1 ? NULL : realloc(b, ncap);
            if (!nb) {
                rc = cap > max + 1 ? err_set(err, errlen, -EFBIG, "%s is larger than %zu MiB",
                                             is_stdin ? "standard input" : path, max >> 20)
                                   : err_set(err, errlen, -ENOMEM, "out of memory");
                break;
            }
            b = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, b + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = err_sys(err, errlen, -errno, "read %s", path);
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            rc = err_set(err, errlen, -EFBIG, "%s is larger than %zu MiB",
                         is_stdin ? "standard input" : path, max >> 20);
            break;
        }
    }
    if (!is_stdin)
        close(fd);
    if (rc < 0) {
        free(b);
        return rc;
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

/* A JSON string of s[0..n), NULL if it is not UTF-8 (the API takes text). */
static json_t *text(const char *s, size_t n)
{
    return json_stringn(s, n);
}

static bool parse_pos(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || !isfinite(v) || v > 1e15)
        return false;
    *out = v;
    return true;
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* ---- waiting ------------------------------------------------------------------------------ */

static volatile int wait_stop;
static void on_signal(int sig)
{
    (void)sig;
    wait_stop = 1;
}

struct progress {
    const char *id;
    bool tty;           /* stderr is a terminal: one updating line */
    char status[32];    /* the last status seen */
    long long position; /* queue position at the last change, -1 unknown */
    char worker[128];
    uint64_t since_ns; /* when this status was first seen here */
    uint64_t drawn_ns; /* last redraw */
    bool line;         /* an updating line is on screen */
    bool terminal;     /* a terminal status arrived */
    bool lost;         /* the stream broke; said so, no event since */
};

static void progress_draw(struct progress *p, bool force)
{
    if (!p->tty || !p->status[0] || p->terminal)
        return;
    uint64_t now = time_mono_ns();
    if (!force && now - p->drawn_ns < 100000000ull)
        return;
    p->drawn_ns = now;
    double s = (double)(now - p->since_ns) / 1e9;
    char pos[48] = "";
    if (!strcmp(p->status, "queued") && p->position > 0)
        snprintf(pos, sizeof pos, " (position %lld)", p->position);
    fprintf(stderr, "\r\033[K%s: %s%s %.1f s …", p->id, p->status, pos, s);
    fflush(stderr);
    p->line = true;
}

static void progress_clear(struct progress *p)
{
    if (p->line) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->line = false;
    }
}

static bool terminal_status(const char *s)
{
    return strcmp(s, "queued") && strcmp(s, "running");
}

static int on_event(void *arg, const char *event, json_t *data)
{
    struct progress *p = arg;
    if (!strcmp(event, "reconnecting")) {
        /* once per outage: the service restarts, or the network is gone */
        if (!p->lost) {
            progress_clear(p);
            fprintf(stderr, "%s: lost the event stream; reconnecting every second (up to 60 s)\n",
                    p->id);
            fflush(stderr);
            p->lost = true;
        }
        return 0;
    }
    if (strcmp(event, "status") || !json_is_object(data))
        return 0;
    p->lost = false;
    const char *st = json_string_value(json_object_get(data, "status"));
    if (!st)
        return 0;
    bool changed = strcmp(st, p->status) != 0;
    json_t *qp = json_object_get(data, "queue_position");
    long long pos = json_is_integer(qp) ? json_integer_value(qp) : -1;
    const char *w = json_string_value(json_object_get(data, "worker_id"));
    if (changed) {
        snprintf(p->status, sizeof p->status, "%s", st);
        p->since_ns = time_mono_ns();
        p->worker[0] = '\0';
    }
    if (pos > 0 || changed)
        p->position = pos;
    if (w)
        snprintf(p->worker, sizeof p->worker, "%s", w);
    p->terminal = terminal_status(st);
    if (p->tty) {
        if (p->terminal)
            progress_clear(p);
        else
            progress_draw(p, true);
    } else if (changed) {
        /* plain lines for logs and pipes: one per change */
        if (!strcmp(st, "queued") && pos > 0)
            fprintf(stderr, "%s: queued (position %lld)\n", p->id, pos);
        else if (!strcmp(st, "running") && p->worker[0])
            fprintf(stderr, "%s: running on %s\n", p->id, p->worker);
        else
            fprintf(stderr, "%s: %s\n", p->id, st);
        fflush(stderr);
    }
    return 0;
}

static int on_tick(void *arg)
{
    progress_draw(arg, false);
    return 0;
}

/* Follow id to its end, then print the full record. */
static int wait_and_print(struct client *c, const char *id, bool json)
{
    struct progress p;
    memset(&p, 0, sizeof p);
    p.id = id;
    p.tty = isatty(2);
    p.position = -1;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    char err[ERR_LEN];
    int rc = client_follow_events(c, id, on_event, on_tick, &p, &wait_stop, err, sizeof err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    progress_clear(&p);
    if (rc == 1) {
        fprintf(stderr,
                "clearbox submit: stopped waiting; %s goes on in the service "
                "(clearbox status %s, clearbox cancel %s)\n",
                id, id, id);
        return 1;
    }
    if (rc < 0)
        return cli_fail("submit", "waiting for %s: %s", id, err);
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    struct client_response r;
    if (client_request(c, "GET", path, NULL, 0, NULL, &r, err, sizeof err) < 0)
        return cli_fail("submit", "%s", err);
    int ret;
    if (r.status != 200 || !json_is_object(r.json)) {
        ret = client_fail_response(c, &r);
    } else {
        if (json)
            client_print_body(stdout, &r);
        else
            client_print_record_text(stdout, r.json);
        const char *st = json_string_value(json_object_get(r.json, "status"));
        ret = st && !strcmp(st, "error") ? 1 : 0;
    }
    client_response_free(&r);
    return ret;
}

/* ---- the command -------------------------------------------------------------------------- */

static int cmd_submit(int argc, char **argv)
{
    struct client c;
    int rc = client_init(&c, "submit");
    if (rc)
        return rc;
    const char *file = NULL, *lang = NULL, *stdin_path = NULL, *submitter = NULL;
    const char *key = NULL, *callback = NULL;
    const char *args[SUBMIT_ARGS_MAX], *files[SUBMIT_FILES_MAX], *meta[SUBMIT_METADATA_MAX];
    size_t nargs = 0, nfiles = 0, nmeta = 0;
    double timeout_s = 0, cpu_s = 0;
    long long memory = -1, pids = -1, outbytes = -1, disk = -1, priority = -1;
    bool wait = false, json = false, json_flag = false, bad = false;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        if ((rc = client_opt(&c, argc, argv, &i, usage)) == CLIENT_OPT_NEXT)
            continue;
        if (rc != CLIENT_OPT_OWN)
            return rc; /* 0 after --help, 2 after a usage error */
        if (!strcmp(a, "--json")) {
            json_flag = true;
        } else if (!strcmp(a, "--wait")) {
            wait = true;
        } else if (cli_opt(argc, argv, &i, "--lang", &v, &bad)) {
            lang = v;
        } else if (cli_opt(argc, argv, &i, "--timeout", &v, &bad)) {
            if (v && !parse_pos(v, &timeout_s))
                return cli_usage_error("submit", "--timeout wants seconds > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--cpu-time", &v, &bad)) {
            if (v && !parse_pos(v, &cpu_s))
                return cli_usage_error("submit", "--cpu-time wants seconds > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--memory", &v, &bad)) {
            if (v && !parse_int(v, 1, 1LL << 40, &memory))
                return cli_usage_error("submit", "--memory wants whole MB > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--pids", &v, &bad)) {
            if (v && !parse_int(v, 1, 1LL << 40, &pids))
                return cli_usage_error("submit", "--pids wants a count > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--output-limit", &v, &bad)) {
            if (v && !parse_int(v, 1, 1LL << 50, &outbytes))
                return cli_usage_error("submit", "--output-limit wants bytes > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--disk", &v, &bad)) {
            if (v && !parse_int(v, 1, 1LL << 40, &disk))
                return cli_usage_error("submit", "--disk wants whole MB > 0, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--priority", &v, &bad)) {
            if (v && !parse_int(v, 0, 9, &priority))
                return cli_usage_error("submit", "--priority wants 0-9, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--stdin", &v, &bad)) {
            stdin_path = v;
        } else if (cli_opt(argc, argv, &i, "--arg", &v, &bad)) {
            if (v && nargs >= SUBMIT_ARGS_MAX)
                return cli_usage_error("submit", "at most %d --arg", SUBMIT_ARGS_MAX);
            if (v)
                args[nargs++] = v;
        } else if (cli_opt(argc, argv, &i, "--file", &v, &bad)) {
            if (v && nfiles >= SUBMIT_FILES_MAX)
                return cli_usage_error("submit", "at most %d --file", SUBMIT_FILES_MAX);
            if (v)
                files[nfiles++] = v;
        } else if (cli_opt(argc, argv, &i, "--metadata", &v, &bad)) {
            if (v && (!strchr(v, '=') || v[0] == '='))
                return cli_usage_error("submit", "--metadata wants K=V, not '%s'", v);
            if (v && nmeta >= SUBMIT_METADATA_MAX)
                return cli_usage_error("submit", "at most %d --metadata", SUBMIT_METADATA_MAX);
            if (v)
                meta[nmeta++] = v;
        } else if (cli_opt(argc, argv, &i, "--submitter", &v, &bad)) {
            if (v && (!*v || strlen(v) > 256))
                return cli_usage_error("submit", "--submitter wants 1-256 bytes");
            submitter = v;
        } else if (cli_opt(argc, argv, &i, "--callback-url", &v, &bad)) {
            callback = v;
        } else if (cli_opt(argc, argv, &i, "--idempotency-key", &v, &bad)) {
            if (v) {
                size_t n = strlen(v);
                bool ok = n >= 1 && n <= SUBMIT_KEY_MAX;
                for (size_t k = 0; k < n; k++)
                    ok &= v[k] >= 0x20 && v[k] <= 0x7e;
                if (!ok)
                    return cli_usage_error(
                        "submit", "--idempotency-key wants 1-%d printable ASCII characters",
                        SUBMIT_KEY_MAX);
            }
            key = v;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("submit", "unknown option '%s'", a);
        } else if (!file) {
            file = a;
        } else {
            return cli_usage_error("submit",
                                   "one FILE only (got '%s' too); use --arg for arguments", a);
        }
        if (bad)
            return cli_usage_error("submit", "option '%s' needs a value", a);
    }
    if (!file)
        return cli_usage_error("submit", "which FILE should run?");
    const struct cli_lang *guessed = lang ? NULL : cli_lang_from_path(file);
    if (!lang && !(lang = guessed ? guessed->name : NULL))
        return cli_usage_error("submit", "cannot tell the language of '%s'; use --lang python|sh",
                               file);
    if (stdin_path && !strcmp(file, "-") && !strcmp(stdin_path, "-"))
        return cli_usage_error("submit", "the program and --stdin cannot both be standard input");
    json = json_flag || (wait && !isatty(1));

    /* the request body */
    char err[ERR_LEN];
    char *code = NULL, *body = NULL;
    size_t code_len = 0;
    json_t *req = json_object();
    int ret = 2;
    if (!req) {
        ret = cli_fail("submit", "out of memory");
        goto out;
    }
    if (slurp(file, SUBMIT_INPUT_MAX, &code, &code_len, err, sizeof err) < 0) {
        cli_usage_error("submit", "%s", err);
        goto out;
    }
    json_t *jcode = text(code, code_len);
    if (!jcode) {
        cli_usage_error("submit", "%s is not UTF-8 text; the service takes the program as text",
                        file);
        goto out;
    }
    json_object_set_new(req, "code", jcode);
    json_object_set_new(req, "language", json_string(lang));
    if (!json_object_get(req, "language")) {
        cli_usage_error("submit", "--lang is not UTF-8");
        goto out;
    }
    if (timeout_s > 0)
        json_object_set_new(req, "timeout_s", json_real(timeout_s));
    if (cpu_s > 0)
        json_object_set_new(req, "cpu_time_s", json_real(cpu_s));
    if (memory > 0)
        json_object_set_new(req, "memory_mb", json_integer(memory));
    if (pids > 0)
        json_object_set_new(req, "pids", json_integer(pids));
    if (outbytes > 0)
        json_object_set_new(req, "output_bytes", json_integer(outbytes));
    if (disk > 0)
        json_object_set_new(req, "disk_mb", json_integer(disk));
    if (priority >= 0)
        json_object_set_new(req, "priority", json_integer(priority));
    if (stdin_path) {
        char *in;
        size_t in_len;
        if (slurp(stdin_path, SUBMIT_INPUT_MAX, &in, &in_len, err, sizeof err) < 0) {
            cli_usage_error("submit", "--stdin: %s", err);
            goto out;
        }
        json_t *s = text(in, in_len);
        free(in);
        if (!s) {
            cli_usage_error("submit", "--stdin %s is not UTF-8 text (the API takes text)",
                            stdin_path);
            goto out;
        }
        json_object_set_new(req, "stdin", s);
    }
    if (nargs) {
        json_t *arr = json_array();
        json_object_set_new(req, "args", arr);
        for (size_t k = 0; k < nargs; k++) {
            json_t *s = json_string(args[k]);
            if (!s) {
                cli_usage_error("submit", "--arg '%s' is not UTF-8", args[k]);
                goto out;
            }
            json_array_append_new(arr, s);
        }
    }
    if (nfiles) {
        json_t *arr = json_array();
        json_object_set_new(req, "files", arr);
        for (size_t k = 0; k < nfiles; k++) {
            char *data;
            size_t len;
            if (slurp(files[k], SUBMIT_INPUT_MAX, &data, &len, err, sizeof err) < 0) {
                cli_usage_error("submit", "--file: %s", err);
                goto out;
            }
            char *b64 = malloc(BASE64_ENCODED_SIZE(len));
            if (!b64) {
                free(data);
                ret = cli_fail("submit", "out of memory");
                goto out;
            }
            base64_encode(data, len, b64);
            free(data);
            const char *base = strrchr(files[k], '/');
            base = base ? base + 1 : files[k];
            json_t *f = json_object();
            json_t *p = json_string(base);
            if (!p) {
                free(b64);
                json_decref(f);
                cli_usage_error("submit", "--file name '%s' is not UTF-8", files[k]);
                goto out;
            }
            json_object_set_new(f, "path", p);
            json_object_set_new(f, "content_base64", json_string(b64));
            free(b64);
            json_array_append_new(arr, f);
        }
    }
    if (nmeta || submitter) {
        json_t *m = json_object();
        json_object_set_new(req, "metadata", m);
        for (size_t k = 0; k < nmeta; k++) {
            const char *eq = strchr(meta[k], '=');
            char name[256];
            size_t nl = (size_t)(eq - meta[k]);
            if (nl >= sizeof name) {
                cli_usage_error("submit", "--metadata key longer than %zu bytes", sizeof name - 1);
                goto out;
            }
            memcpy(name, meta[k], nl);
            name[nl] = '\0';
            json_t *s = json_string(eq + 1);
            if (!s || json_object_set_new(m, name, s) < 0) {
                cli_usage_error("submit", "--metadata '%s' is not UTF-8", meta[k]);
                goto out;
            }
        }
        if (submitter) {
            json_t *s = json_string(submitter);
            if (!s) {
                cli_usage_error("submit", "--submitter is not UTF-8");
                goto out;
            }
            json_object_set_new(m, "submitter", s);
        }
    }
    if (callback) {
        json_t *s = json_string(callback);
        if (!s) {
            cli_usage_error("submit", "--callback-url is not UTF-8");
            goto out;
        }
        json_object_set_new(req, "callback_url", s);
    }
    body = json_dumps(req, JSON_COMPACT);
    if (!body) {
        ret = cli_fail("submit", "out of memory");
        goto out;
    }

    char hdr[SUBMIT_KEY_MAX + 32] = "";
    if (key)
        snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    struct client_response r;
    if (client_request(&c, "POST", "/v1/evaluations", body, strlen(body), key ? hdr : NULL, &r, err,
                       sizeof err) < 0) {
        ret = cli_fail("submit", "%s", err);
        goto out;
    }
    const char *id = json_string_value(json_object_get(r.json, "id"));
    if ((r.status != 202 && r.status != 200) || !id || !client_id_ok(id)) {
        if (r.status == 202 || r.status == 200)
            ret = cli_fail("submit", "the answer from %s has no evaluation id: is it clearbox?",
                           c.server);
        else
            ret = client_fail_response(&c, &r);
        client_response_free(&r);
        goto out;
    }
    char idc[CLIENT_ID_MAX + 1];
    snprintf(idc, sizeof idc, "%s", id);
    json_t *qp = json_object_get(r.json, "queue_position");
    if (json_is_true(json_object_get(r.json, "idempotent_replay")))
        fprintf(stderr,
                "clearbox submit: an earlier submit with this idempotency key made %s; "
                "nothing new was queued\n",
                idc);
    if (!wait) {
        if (json_flag)
            client_print_body(stdout, &r);
        else
            printf("%s\n", idc);
        fflush(stdout);
        if (!json_flag && isatty(2) && json_is_integer(qp))
            fprintf(stderr,
                    "clearbox submit: queued at position %lld; follow it with: clearbox "
                    "status %s\n",
                    (long long)json_integer_value(qp), idc);
        client_response_free(&r);
        ret = 0;
        goto out;
    }
    client_response_free(&r);
    ret = wait_and_print(&c, idc, json);
out:
    free(body);
    free(code);
    if (req)
        json_decref(req);
    return ret;
}

CLI_COMMAND(submit, 30, "queue a program on a running service (--wait: and show its result)",
            cmd_submit)
