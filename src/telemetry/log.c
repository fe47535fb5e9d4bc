/* log.c - structured logging; see log.h for the promises.
 *
 * Design. A line is rendered front to back into a per-thread buffer and handed
 * to the kernel with one write(2). Bound fields (log_bind) and thread context
 * fields (log_ctx_push) are rendered once, when bound or pushed, into JSON and
 * console fragments that each line copies verbatim; the hot path only renders
 * the event's own fields. Configuration (level, format, fd) is a handful of
 * relaxed atomics read per line, so changing it needs no lock.
 *
 * What was rejected: a lock around write (one write(2) of a whole line is
 * already atomic for regular files opened O_APPEND and for pipes up to
 * PIPE_BUF; longer lines to a pipe may interleave with other processes, which
 * no lock of ours could prevent anyway); a background writer thread (it would
 * lose lines on a crash, which is when logs matter most). */
#include "telemetry/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "telemetry/context.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/timeutil.h"

__thread struct telemetry_span_ref telemetry__current;

struct log_logger {
    char name[64];
    char name_json[200];  /* ,"logger":"<name>" rendered once */
    size_t name_json_len;
    char *json;         /* bound fields as ,"k":v... (each with a leading comma) */
    size_t json_len;
    char *console;      /* bound fields as " k=v..." */
    size_t console_len;
    struct log_logger *next; /* named-logger list (roots only) */
};

static _Atomic int g_level = LOG_INFO;
static _Atomic int g_format = LOG_FORMAT_JSON;
static _Atomic int g_fd = 2;
static _Atomic bool g_color;
static _Atomic uint64_t g_write_errors;
static char g_service[128] = "clearbox";
static char g_service_json[300] = ",\"service\":\"clearbox\"";
static size_t g_service_json_len = 21;

static pthread_mutex_t g_names_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_logger *g_named;
static struct log_logger g_root = {.name = "clearbox",
                                   .name_json = ",\"logger\":\"clearbox\"",
                                   .name_json_len = 20};

static void set_name(struct log_logger *lg, const char *name)
{
    snprintf(lg->name, sizeof lg->name, "%s", name);
    struct buf b;
    buf_init(&b, lg->name_json, sizeof lg->name_json, 0);
    buf_puts(&b, ",\"logger\":\"");
    json_escape(&b, lg->name, strlen(lg->name));
    buf_putc(&b, '"');
    lg->name_json_len = b.len;
}

/* ------------------------------------------------------------------ config */

int log_level_parse(const char *name, enum log_level *out)
{
    static const struct {
        const char *n;
        enum log_level l;
    } t[] = {{"debug", LOG_DEBUG},     {"info", LOG_INFO},   {"warning", LOG_WARNING},
             {"warn", LOG_WARNING},    {"error", LOG_ERROR}, {"critical", LOG_CRITICAL}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcasecmp(name, t[i].n)) {
            *out = t[i].l;
            return 0;
        }
    return -EINVAL;
}

const char *log_level_name(enum log_level l)
{
    switch (l) {
    case LOG_DEBUG: return "debug";
    case LOG_INFO: return "info";
    case LOG_WARNING: return "warning";
    case LOG_ERROR: return "error";
    case LOG_CRITICAL: return "critical";
    }
    return "info";
}

static bool want_color(int fd)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(fd) && !(nc && *nc);
}

void log_set_fd(int fd)
{
    atomic_store(&g_fd, fd);
    atomic_store(&g_color, want_color(fd));
}
void log_set_format(enum log_format f) { atomic_store(&g_format, (int)f); }
void log_set_level(enum log_level l) { atomic_store(&g_level, (int)l); }

void log_set_service(const char *service)
{
    /* Called at start-up only (see log.h), so no lock against readers. */
    snprintf(g_service, sizeof g_service, "%s", service);
    struct buf b;
    buf_init(&b, g_service_json, sizeof g_service_json, 0);
    buf_puts(&b, ",\"service\":\"");
    json_escape(&b, g_service, strlen(g_service));
    buf_putc(&b, '"');
    g_service_json_len = b.len;
}

int log_setup(const char *format, const char *level, char *err, size_t errlen)
{
    enum log_level l = LOG_INFO;
    const char *env = getenv("CLEARBOX_LOG_LEVEL");
    if (level) {
        if (log_level_parse(level, &l) < 0)
            return err_set(err, errlen, -EINVAL,
                           "unknown log level '%s' (use debug, info, warning, error or critical)",
                           level);
    } else if (env && *env) {
        if (log_level_parse(env, &l) < 0)
            return err_set(err, errlen, -EINVAL,
                           "CLEARBOX_LOG_LEVEL='%s' is not a level (use debug, info, warning, "
                           "error or critical)",
                           env);
    }
    enum log_format f = isatty(2) ? LOG_FORMAT_CONSOLE : LOG_FORMAT_JSON;
    if (format) {
        if (!strcmp(format, "json"))
            f = LOG_FORMAT_JSON;
        else if (!strcmp(format, "console"))
            f = LOG_FORMAT_CONSOLE;
        else
            return err_set(err, errlen, -EINVAL, "unknown log format '%s' (use json or console)",
                           format);
    }
    const char *svc = getenv("OTEL_SERVICE_NAME");
    log_set_service(svc && *svc ? svc : "clearbox");
    log_set_level(l);
    log_set_format(f);
    log_set_fd(2);
    return 0;
}

void log_shutdown(void) { /* lines are written synchronously: nothing to flush */ }

uint64_t log_write_errors(void) { return atomic_load(&g_write_errors); }

bool log_enabled(const log_logger_t *lg, enum log_level l)
{
    (void)lg;
    return (int)l >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

/* ------------------------------------------------------------- rendering */

static void render_string(struct json *w, const char *s, size_t len)
{
    if (len <= LOG_VALUE_MAX) {
        json_strn(w, s, len);
        return;
    }
    /* Keep the head and say inside the value itself how much was cut. */
    size_t k = json_utf8_cut(s, len, LOG_VALUE_MAX);
    json_raw(w, "\"", 1);
    json_escape(w->b, s, k);
    buf_printf(w->b, "...[%zu bytes cut]\"", len - k);
}

/* Render the one value that starts at f[0] (a scalar, or a container with
 * everything up to its matching close) and return how many fields it used.
 * Missing closes are added and keys inside arrays ignored, so the output is
 * valid JSON whatever the caller passed; *bad says the input was malformed. */
static size_t render_value(struct json *w, const struct log_field *f, size_t n, bool *bad)
{
    const struct log_field *x = &f[0];
    switch (x->type) {
    case LOG_F_STR:
        if (!x->v.s)
            json_null_value(w);
        else
            render_string(w, x->v.s, strlen(x->v.s));
        return 1;
    case LOG_F_STRN:
        if (!x->v.s)
            json_null_value(w);
        else
            render_string(w, x->v.s, x->n);
        return 1;
    case LOG_F_INT: json_int(w, x->v.i); return 1;
    case LOG_F_UINT: json_uint(w, x->v.u); return 1;
    case LOG_F_DOUBLE: json_double(w, x->v.d); return 1;
    case LOG_F_BOOL: json_bool(w, x->v.b); return 1;
    case LOG_F_RAW:
        if (x->v.s && x->n)
            json_raw(w, x->v.s, x->n);
        else
            json_null_value(w);
        return 1;
    case LOG_F_OBJ:
    case LOG_F_ARR: break;
    default: json_null_value(w); return 1;
    }
    bool arr = x->type == LOG_F_ARR;
    if (w->depth >= JSON_MAX_DEPTH - 1) {
        /* Too deep: render null and skip to the matching close. */
        *bad = true;
        json_null_value(w);
        size_t i = 1;
        int lvl = 1;
        for (; i < n && lvl; i++) {
            if (f[i].type == LOG_F_OBJ || f[i].type == LOG_F_ARR)
                lvl++;
            else if (f[i].type == LOG_F_END_OBJ || f[i].type == LOG_F_END_ARR)
                lvl--;
        }
        return i;
    }
    if (arr)
        json_arr_open(w);
    else
        json_obj_open(w);
    size_t i = 1;
    while (i < n) {
        const struct log_field *y = &f[i];
        if (y->type == LOG_F_SKIP) {
            i++;
            continue;
        }
        if (y->type == LOG_F_END_OBJ || y->type == LOG_F_END_ARR) {
            if ((y->type == LOG_F_END_ARR) != arr)
                *bad = true;
            i++;
            goto close;
        }
        if (!arr)
            json_key(w, y->key ? y->key : "_");
        if (!arr && !y->key)
            *bad = true;
        i += render_value(w, y, n - i, bad);
    }
    *bad = true; /* ran out of fields before the close */
close:
    if (arr)
        json_arr_close(w);
    else
        json_obj_close(w);
    return i;
}

/* Members of the enclosing object: key, value, key, value... */
static void render_members(struct json *w, const struct log_field *f, size_t n, bool *bad)
{
    size_t i = 0;
    while (i < n) {
        const struct log_field *x = &f[i];
        if (x->type == LOG_F_SKIP) {
            i++;
            continue;
        }
        if (x->type == LOG_F_END_OBJ || x->type == LOG_F_END_ARR) {
            *bad = true; /* a close without an open */
            i++;
            continue;
        }
        json_key(w, x->key ? x->key : "_");
        if (!x->key)
            *bad = true;
        i += render_value(w, x, n - i, bad);
    }
}

/* Console: key=value pairs; strings bare when they are plain words, else
 * quoted; containers as compact JSON. Everything goes through the JSON
 * escaper, so a hostile value cannot drive the terminal. */
static void render_console(struct buf *b, const struct log_field *f, size_t n, bool color,
                           bool *bad)
{
    size_t i = 0;
    while (i < n) {
        const struct log_field *x = &f[i];
        if (x->type == LOG_F_SKIP) {
            i++;
            continue;
        }
        if (x->type == LOG_F_END_OBJ || x->type == LOG_F_END_ARR) {
            *bad = true;
            i++;
            continue;
        }
        const char *key = x->key ? x->key : "_";
        buf_putc(b, ' ');
        if (color)
            buf_puts(b, "\033[36m");
        json_escape(b, key, strlen(key));
        buf_puts(b, color ? "\033[0m=\033[35m" : "=");
        if ((x->type == LOG_F_STR || x->type == LOG_F_STRN) && x->v.s) {
            size_t len = x->type == LOG_F_STR ? strlen(x->v.s) : x->n;
            bool plain = len > 0 && len <= LOG_VALUE_MAX;
            for (size_t j = 0; j < len && plain; j++) {
                unsigned char c = (unsigned char)x->v.s[j];
                plain = c > ' ' && c != '"' && c != '\\' && c < 0x7f;
            }
            if (plain) {
                buf_append(b, x->v.s, len);
                i++;
            } else {
                struct json w;
                json_init(&w, b);
                i += render_value(&w, x, n - i, bad);
            }
        } else {
            struct json w;
            json_init(&w, b);
            i += render_value(&w, x, n - i, bad);
        }
        if (color)
            buf_puts(b, "\033[0m");
    }
}

/* Render fields once into a fragment: JSON ",k:v,k2:v2" and console " k=v".
 * Returns 0 or -EINVAL (malformed), -E2BIG (over max), -ENOMEM. */
static int render_fragment(const struct log_field *f, size_t n, struct buf *js, struct buf *con)
{
    bool bad = false;
    struct json w;
    json_init(&w, js);
    /* Pretend we are inside an object that already has a member, so every
     * member gets its leading comma. */
    w.depth = 1;
    w.has_items = 1;
    render_members(&w, f, n, &bad);
    render_console(con, f, n, false, &bad);
    if (bad)
        return -EINVAL;
    if (!buf_ok(js) || !buf_ok(con))
        return js->oom || con->oom ? -ENOMEM : -E2BIG;
    return 0;
}

/* ---------------------------------------------------------------- loggers */

log_logger_t *log_root(void) { return &g_root; }

log_logger_t *log_get(const char *name)
{
    if (!name || !*name || !strcmp(name, g_root.name))
        return &g_root;
    pthread_mutex_lock(&g_names_lock);
    struct log_logger *lg;
    for (lg = g_named; lg; lg = lg->next)
        if (!strncmp(lg->name, name, sizeof lg->name - 1))
            break;
    if (!lg) {
        lg = calloc(1, sizeof *lg);
        if (lg) {
            set_name(lg, name);
            lg->next = g_named;
            g_named = lg;
        }
    }
    pthread_mutex_unlock(&g_names_lock);
    return lg ? lg : &g_root; /* out of memory: log under the root name */
}

log_logger_t *log_bind(const log_logger_t *parent, const struct log_field *fields, size_t n,
                       char *err, size_t errlen)
{
    if (!parent)
        parent = &g_root;
    struct buf js, con;
    buf_init(&js, NULL, 0, LOG_LINE_INLINE / 2);
    buf_init(&con, NULL, 0, LOG_LINE_INLINE / 2);
    if (parent->json_len)
        buf_append(&js, parent->json, parent->json_len);
    if (parent->console_len)
        buf_append(&con, parent->console, parent->console_len);
    int rc = render_fragment(fields, n, &js, &con);
    struct log_logger *lg = NULL;
    if (rc == 0 && !(lg = calloc(1, sizeof *lg)))
        rc = -ENOMEM;
    if (rc < 0) {
        buf_free(&js);
        buf_free(&con);
        err_set(err, errlen, rc,
                rc == -EINVAL   ? "log_bind: malformed fields (unbalanced LOG_OBJ/LOG_ARR or a "
                                  "member without a key)"
                : rc == -E2BIG  ? "log_bind: bound fields exceed %d bytes"
                                : "log_bind: out of memory",
                LOG_LINE_INLINE / 2);
        return NULL;
    }
    set_name(lg, parent->name);
    lg->json_len = js.len;
    lg->console_len = con.len;
    lg->json = js.len ? buf_steal(&js) : NULL;
    lg->console = con.len ? buf_steal(&con) : NULL;
    buf_free(&js);
    buf_free(&con);
    if ((lg->json_len && !lg->json) || (lg->console_len && !lg->console)) {
        log_free(lg);
        err_set(err, errlen, -ENOMEM, "log_bind: out of memory");
        return NULL;
    }
    return lg;
}

void log_free(log_logger_t *lg)
{
    if (!lg || lg == &g_root)
        return;
    /* Named loggers live until exit; only bound ones are freed. */
    for (struct log_logger *x = g_named; x; x = x->next)
        if (x == lg)
            return;
    free(lg->json);
    free(lg->console);
    free(lg);
}

/* ---------------------------------------------------------- thread context */

#define CTX_MAX (LOG_LINE_INLINE / 4)
#define CTX_DEPTH 32

static __thread struct {
    char json[CTX_MAX];
    char console[CTX_MAX];
    size_t json_len, console_len;
    int depth;
    size_t saved_json[CTX_DEPTH], saved_console[CTX_DEPTH];
} ctx;

int log_ctx_push(const struct log_field *fields, size_t n)
{
    if (ctx.depth >= CTX_DEPTH)
        return -E2BIG;
    /* Append after what is there: a buf over the context storage that
     * already holds json_len bytes (buf_init would write a NUL at [0]). */
    struct buf js = {.data = ctx.json, .len = ctx.json_len, .cap = CTX_MAX, .max = CTX_MAX - 1};
    struct buf con = {
        .data = ctx.console, .len = ctx.console_len, .cap = CTX_MAX, .max = CTX_MAX - 1};
    int rc = render_fragment(fields, n, &js, &con);
    if (rc < 0) {
        ctx.json[ctx.json_len] = '\0';
        ctx.console[ctx.console_len] = '\0';
        return rc;
    }
    int token = ctx.depth;
    ctx.saved_json[token] = ctx.json_len;
    ctx.saved_console[token] = ctx.console_len;
    ctx.depth++;
    ctx.json_len = js.len;
    ctx.console_len = con.len;
    return token;
}

void log_ctx_pop(int token)
{
    if (token < 0 || token >= ctx.depth)
        return;
    ctx.json_len = ctx.saved_json[token];
    ctx.console_len = ctx.saved_console[token];
    ctx.depth = token;
}

void log__ctx_cleanup(int *token) { log_ctx_pop(*token); }

/* ------------------------------------------------------------------- emit */

static void write_line(const char *p, size_t n)
{
    int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            atomic_fetch_add(&g_write_errors, 1);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static __thread char line_storage[LOG_LINE_INLINE];

static void emit_json(const log_logger_t *lg, enum log_level l, const char *event,
                      const struct log_field *fields, size_t n, bool short_form)
{
    struct buf b;
    struct json w;
    char ts[TIME_RFC3339_LEN];
    buf_init(&b, line_storage, sizeof line_storage, LOG_LINE_MAX);
    json_init(&w, &b);
    time_fmt_rfc3339(time_now_ns(), ts);
    buf_append(&b, "{\"ts\":\"", 7);
    buf_append(&b, ts, 30);
    buf_append(&b, "\",\"level\":\"", 11);
    buf_puts(&b, log_level_name(l));
    buf_append(&b, "\",\"event\":", 10);
    /* From here on the writer tracks commas: we are inside the object. */
    w.depth = 1;
    w.has_items = 1;
    w.after_key = true;
    json_str(&w, event ? event : "");
    buf_append(&b, g_service_json, g_service_json_len);
    buf_append(&b, lg->name_json, lg->name_json_len);
    const struct telemetry_span_ref *sp = &telemetry__current;
    if (sp->set) {
        char tid[33], sid[17];
        hex_encode(sp->trace_id, 16, tid);
        hex_encode(sp->span_id, 8, sid);
        buf_append(&b, ",\"trace_id\":\"", 13);
        buf_append(&b, tid, 32);
        buf_append(&b, "\",\"span_id\":\"", 13);
        buf_append(&b, sid, 16);
        buf_putc(&b, '"');
    }
    bool bad = false;
    if (short_form) {
        buf_puts(&b, ",\"log_truncated\":true");
    } else {
        if (lg->json_len)
            buf_append(&b, lg->json, lg->json_len);
        if (ctx.json_len)
            buf_append(&b, ctx.json, ctx.json_len);
        render_members(&w, fields, n, &bad);
        if (bad)
            buf_puts(&b, ",\"log_malformed_fields\":true");
    }
    buf_append(&b, "}\n", 2);
    if (!buf_ok(&b) && !short_form) {
        buf_free(&b);
        emit_json(lg, l, event, NULL, 0, true);
        return;
    }
    write_line(b.data, b.len);
    buf_free(&b);
}

static const char *level_color(enum log_level l)
{
    switch (l) {
    case LOG_DEBUG: return "\033[34m";
    case LOG_INFO: return "\033[32m";
    case LOG_WARNING: return "\033[33m";
    case LOG_ERROR: return "\033[31m";
    case LOG_CRITICAL: return "\033[1;31m";
    }
    return "";
}

static void emit_console(const log_logger_t *lg, enum log_level l, const char *event,
                         const struct log_field *fields, size_t n)
{
    bool color = atomic_load_explicit(&g_color, memory_order_relaxed);
    struct buf b;
    char ts[32];
    buf_init(&b, line_storage, sizeof line_storage, LOG_LINE_MAX);
    time_fmt_human(time_now_ns(), ts);
    if (color)
        buf_puts(&b, "\033[2m");
    buf_puts(&b, ts);
    if (color)
        buf_puts(&b, "\033[0m");
    buf_printf(&b, " [%s%-8s%s] ", color ? level_color(l) : "", log_level_name(l),
               color ? "\033[0m" : "");
    if (color)
        buf_puts(&b, "\033[1m");
    size_t ev0 = b.len;
    json_escape(&b, event ? event : "", event ? strlen(event) : 0);
    size_t evlen = b.len - ev0;
    if (color)
        buf_puts(&b, "\033[0m");
    for (size_t pad = evlen; pad < 30; pad++)
        buf_putc(&b, ' ');
    if (lg != &g_root) {
        buf_puts(&b, color ? " \033[36mlogger\033[0m=\033[35m" : " logger=");
        json_escape(&b, lg->name, strlen(lg->name));
        if (color)
            buf_puts(&b, "\033[0m");
    }
    if (lg->console_len)
        buf_append(&b, lg->console, lg->console_len);
    if (ctx.console_len)
        buf_append(&b, ctx.console, ctx.console_len);
    bool bad = false;
    render_console(&b, fields, n, color, &bad);
    const struct telemetry_span_ref *sp = &telemetry__current;
    if (sp->set) {
        char tid[33];
        hex_encode(sp->trace_id, 16, tid);
        buf_printf(&b, color ? " \033[2mtrace_id=%s\033[0m" : " trace_id=%s", tid);
    }
    buf_putc(&b, '\n');
    if (!buf_ok(&b)) {
        b.len = 0;
        b.overflow = b.oom = false;
        buf_printf(&b, "%s [%-8s] (line too long, cut) ", ts, log_level_name(l));
        json_escape(&b, event ? event : "", event ? strlen(event) : 0);
        buf_putc(&b, '\n');
    }
    write_line(b.data, b.len);
    buf_free(&b);
}

void log__emit(const log_logger_t *lg, enum log_level l, const char *event,
               const struct log_field *fields, size_t n)
{
    if (!lg)
        lg = &g_root;
    if (atomic_load_explicit(&g_format, memory_order_relaxed) == LOG_FORMAT_CONSOLE)
        emit_console(lg, l, event, fields, n);
    else
        emit_json(lg, l, event, fields, n, false);
}
