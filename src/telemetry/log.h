/* log.h - structured logging: an event name plus typed key/values, rendered as
 * one JSON line (or a readable console line) per event. The structlog of C.
 *
 *     log_info(lg, "evaluation.queued",
 *              LOG_STR("eval_id", id), LOG_INT("queue_depth", depth),
 *              LOG_OBJ("resources"), LOG_DOUBLE("cpu_seconds", 2.5), LOG_END_OBJ,
 *              LOG_ARR("args"), LOG_STR(NULL, "a"), LOG_STR(NULL, "b"), LOG_END_ARR);
 *
 * Every line carries, in this order: ts (RFC 3339 UTC, nanoseconds), level,
 * event, service, logger, trace_id and span_id (when a span is current on the
 * thread, see context.h), the logger's bound fields, the thread's context
 * fields, then the event's own fields.
 *
 * Loggers: log_get("security") returns a named logger (created once, never
 * freed; names are copied). log_bind() derives a logger with extra bound fields
 * (eval_id, worker_id, ...); the caller owns it and frees it with log_free().
 * Thread context: log_ctx_push() adds fields to every line logged on the
 * calling thread until the matching log_ctx_pop() (strict LIFO).
 *
 * Promises:
 *  - Any bytes in any value give valid JSON (util/json.h rules). String values
 *    are cut at LOG_VALUE_MAX bytes, a line at LOG_LINE_MAX bytes; a line that
 *    would be longer is replaced by a short valid line with "log_truncated":true
 *    and the event name, so nothing is silently malformed.
 *  - One write(2) per line (looping only on a partial write), so lines from many
 *    threads and processes do not interleave.
 *  - No allocation for an ordinary event: lines render into a per-thread
 *    buffer; only a line longer than LOG_LINE_INLINE bytes uses the heap.
 *  - A disabled level costs one compare; fields are not evaluated.
 * Threads: every function is safe from any thread, except log_setup(),
 * log_set_fd() and log_shutdown(), which run once at start/end of main.
 * Errors: log_setup/log_bind return 0 / NULL with words in err; emitting never
 * fails visibly (a failed write is counted in log_write_errors()). */
#ifndef CLEARBOX_TELEMETRY_LOG_H
#define CLEARBOX_TELEMETRY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG_VALUE_MAX 8192     /* bytes of one string value before it is cut */
#define LOG_LINE_INLINE 16384  /* per-thread buffer: lines up to this never allocate */
#define LOG_LINE_MAX 262144    /* hard cap on one line */

enum log_level { LOG_DEBUG = 10, LOG_INFO = 20, LOG_WARNING = 30, LOG_ERROR = 40, LOG_CRITICAL = 50 };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_CONSOLE };

enum log_ftype {
    LOG_F_SKIP,     /* placeholder, renders nothing */
    LOG_F_STR,      /* v.s, NUL-terminated (NULL renders null) */
    LOG_F_STRN,     /* v.s with n bytes */
    LOG_F_INT,      /* v.i */
    LOG_F_UINT,     /* v.u */
    LOG_F_DOUBLE,   /* v.d (non-finite renders null) */
    LOG_F_BOOL,     /* v.b */
    LOG_F_NULL,
    LOG_F_RAW,      /* v.s, n bytes of JSON the caller rendered (trusted) */
    LOG_F_OBJ,      /* opens an object; fields up to LOG_F_END_OBJ are members */
    LOG_F_END_OBJ,
    LOG_F_ARR,      /* opens an array; fields up to LOG_F_END_ARR are items (key NULL) */
    LOG_F_END_ARR,
};

struct log_field {
    const char *key; /* NULL inside arrays */
    enum log_ftype type;
    size_t n;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
};

#define LOG_STR(k, val) ((struct log_field){.key = (k), .type = LOG_F_STR, .v.s = (val)})
#define LOG_STRN(k, val, len) \
    ((struct log_field){.key = (k), .type = LOG_F_STRN, .n = (len), .v.s = (val)})
#define LOG_INT(k, val) ((struct log_field){.key = (k), .type = LOG_F_INT, .v.i = (int64_t)(val)})
#define LOG_UINT(k, val) ((struct log_field){.key = (k), .type = LOG_F_UINT, .v.u = (uint64_t)(val)})
#define LOG_DOUBLE(k, val) ((struct log_field){.key = (k), .type = LOG_F_DOUBLE, .v.d = (double)(val)})
#define LOG_BOOL(k, val) ((struct log_field){.key = (k), .type = LOG_F_BOOL, .v.b = (val)})
#define LOG_NULL(k) ((struct log_field){.key = (k), .type = LOG_F_NULL})
#define LOG_RAW(k, json, len) \
    ((struct log_field){.key = (k), .type = LOG_F_RAW, .n = (len), .v.s = (json)})
#define LOG_OBJ(k) ((struct log_field){.key = (k), .type = LOG_F_OBJ})
#define LOG_END_OBJ ((struct log_field){.type = LOG_F_END_OBJ})
#define LOG_ARR(k) ((struct log_field){.key = (k), .type = LOG_F_ARR})
#define LOG_END_ARR ((struct log_field){.type = LOG_F_END_ARR})

typedef struct log_logger log_logger_t;

/* Configure from flags and the environment: format "json" | "console" | NULL
 * (NULL: console when stderr is a terminal, else json), level name or NULL
 * (NULL: $CLEARBOX_LOG_LEVEL, else info), service from $OTEL_SERVICE_NAME,
 * else "clearbox". Returns 0 or -EINVAL with the reason in err. */
int log_setup(const char *format, const char *level, char *err, size_t errlen);
/* Where lines go (default 2). The fd is not closed by the logger. */
void log_set_fd(int fd);
void log_set_format(enum log_format f);
void log_set_level(enum log_level l);
void log_set_service(const char *service);
/* Parse "debug", "info", "warning"/"warn", "error", "critical"; -EINVAL else. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level l);
void log_shutdown(void);
uint64_t log_write_errors(void);

/* The root logger ("clearbox") and named ones ("security", "http", ...). */
log_logger_t *log_root(void);
log_logger_t *log_get(const char *name);
/* A logger with parent's name and bound fields plus fields[0..n). NULL on
 * ENOMEM or bad fields (unbalanced OBJ/ARR), with the reason in err. */
log_logger_t *log_bind(const log_logger_t *parent, const struct log_field *fields, size_t n,
                       char *err, size_t errlen);
void log_free(log_logger_t *lg);

/* Thread context: returns a token for log_ctx_pop, or -E2BIG when the
 * per-thread context (LOG_LINE_INLINE / 4 bytes rendered) is full, -EINVAL for
 * unbalanced fields. Pop with the token restores the context as it was. */
int log_ctx_push(const struct log_field *fields, size_t n);
void log_ctx_pop(int token);

bool log_enabled(const log_logger_t *lg, enum log_level l);
void log__emit(const log_logger_t *lg, enum log_level l, const char *event,
               const struct log_field *fields, size_t n);

#define log_at(lg, lvl, event, ...)                                                \
    do {                                                                           \
        const log_logger_t *log__lg = (lg);                                        \
        if (log_enabled(log__lg, (lvl))) {                                         \
            const struct log_field log__f[] = {{.type = LOG_F_SKIP}, ##__VA_ARGS__}; \
            log__emit(log__lg, (lvl), (event), log__f, sizeof log__f / sizeof log__f[0]); \
        }                                                                          \
    } while (0)
#define log_debug(lg, event, ...) log_at(lg, LOG_DEBUG, event, ##__VA_ARGS__)
#define log_info(lg, event, ...) log_at(lg, LOG_INFO, event, ##__VA_ARGS__)
#define log_warning(lg, event, ...) log_at(lg, LOG_WARNING, event, ##__VA_ARGS__)
#define log_error(lg, event, ...) log_at(lg, LOG_ERROR, event, ##__VA_ARGS__)
#define log_critical(lg, event, ...) log_at(lg, LOG_CRITICAL, event, ##__VA_ARGS__)

/* Push fields on this thread's context for the rest of the enclosing block:
 *     LOG_CTX_SCOPE(LOG_STR("eval_id", id));   popped at the end of the scope. */
void log__ctx_cleanup(int *token);
#define LOG_CTX_SCOPE(...)                                                          \
    const struct log_field log__cf[] = {__VA_ARGS__};                               \
    __attribute__((cleanup(log__ctx_cleanup))) int log__ctok =                      \
        log_ctx_push(log__cf, sizeof log__cf / sizeof log__cf[0])

#endif
