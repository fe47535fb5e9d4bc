/* test_log.c - telemetry/log.h promises: valid JSON whatever the values, one
 * write per line (16 threads x 10,000 lines never interleave), bound and
 * thread context fields, trace ids of the current span, no allocation on the
 * hot path, the console renderer, the level filter. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "telemetry/context.h"
#include "telemetry/log.h"
#include "test.h"

/* Point the logger at a fresh file; return its path. */
static const char *capture(char *path, size_t n, enum log_format f)
{
    snprintf(path, n, "%s/log.%d", test_tmpdir(), rand());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    log_set_fd(fd);
    log_set_format(f);
    log_set_level(LOG_DEBUG);
    log_set_service("clearbox-test");
    return path;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t r = fread(s, 1, (size_t)n, f);
    s[r] = '\0';
    fclose(f);
    return s;
}

static json_t *first_line(const char *path)
{
    char *s = slurp(path);
    if (!s)
        return NULL;
    char *nl = strchr(s, '\n');
    if (nl)
        *nl = '\0';
    json_error_t e;
    json_t *j = json_loads(s, JSON_ALLOW_NUL, &e);
    if (!j)
        fprintf(stderr, "    not JSON (%s): %.300s\n", e.text, s);
    free(s);
    return j;
}

TEST(log_line_has_standard_fields_in_order)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    log_info(log_root(), "evaluation.queued", LOG_STR("eval_id", "e1"),
             LOG_INT("queue_depth", 15), LOG_DOUBLE("cpu", 2.5), LOG_BOOL("ok", true),
             LOG_NULL("nothing"), LOG_OBJ("resources"), LOG_UINT("container_count", 1),
             LOG_ARR("tags"), LOG_STR(NULL, "a"), LOG_INT(NULL, 2), LOG_END_ARR, LOG_END_OBJ);
    char *s = slurp(path);
    ASSERT(s);
    ASSERT_MSG(strncmp(s, "{\"ts\":\"", 7) == 0, "line starts with ts: %s", s);
    ASSERT_CONTAINS(s, "\",\"level\":\"info\",\"event\":\"evaluation.queued\","
                       "\"service\":\"clearbox-test\",\"logger\":\"clearbox\"");
    ASSERT_CONTAINS(s, "\"resources\":{\"container_count\":1,\"tags\":[\"a\",2]}}\n");
    free(s);
    json_t *j = first_line(path);
    ASSERT(j);
    const char *ts = json_string_value(json_object_get(j, "ts"));
    ASSERT(ts && strlen(ts) == 30 && ts[10] == 'T' && ts[19] == '.' && ts[29] == 'Z');
    ASSERT_EQ(json_integer_value(json_object_get(j, "queue_depth")), 15);
    ASSERT(json_real_value(json_object_get(j, "cpu")) == 2.5);
    ASSERT(json_is_true(json_object_get(j, "ok")));
    ASSERT(json_is_null(json_object_get(j, "nothing")));
    ASSERT(!json_object_get(j, "trace_id")); /* no span current */
    json_decref(j);
}

TEST(log_trace_ids_of_current_span)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    for (int i = 0; i < 16; i++)
        telemetry__current.trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++)
        telemetry__current.span_id[i] = (uint8_t)(0x10 + i);
    telemetry__current.set = true;
    log_warning(log_root(), "x");
    telemetry__current.set = false;
    json_t *j = first_line(path);
    ASSERT(j);
    ASSERT_STREQ(json_string_value(json_object_get(j, "trace_id")),
                 "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    ASSERT_STREQ(json_string_value(json_object_get(j, "span_id")), "1011121314151617");
    ASSERT_STREQ(json_string_value(json_object_get(j, "level")), "warning");
    json_decref(j);
}

TEST(log_bound_and_thread_context)
{
    char path[256], err[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    const struct log_field bf[] = {LOG_STR("worker_id", "executor-1")};
    log_logger_t *sec = log_get("security");
    log_logger_t *lg = log_bind(sec, bf, 1, err, sizeof err);
    ASSERT(lg);
    const struct log_field bf2[] = {LOG_STR("engine", "native")};
    log_logger_t *lg2 = log_bind(lg, bf2, 1, err, sizeof err);
    ASSERT(lg2);
    const struct log_field cf[] = {LOG_STR("eval_id", "e42"), LOG_OBJ("o"), LOG_INT("k", 1),
                                   LOG_END_OBJ};
    int tok = log_ctx_push(cf, 4);
    ASSERT(tok >= 0);
    log_error(lg2, "evaluation.suspicious", LOG_STR("reason", "network_attempt"));
    log_ctx_pop(tok);
    log_info(lg2, "after.pop");
    log_free(lg2);
    log_free(lg);
    char *s = slurp(path);
    char *nl = strchr(s, '\n');
    ASSERT(nl);
    *nl = '\0';
    ASSERT_CONTAINS(s, "\"logger\":\"security\",\"worker_id\":\"executor-1\","
                       "\"engine\":\"native\",\"eval_id\":\"e42\",\"o\":{\"k\":1},"
                       "\"reason\":\"network_attempt\"}");
    ASSERT(!strstr(nl + 1, "e42")); /* popped */
    ASSERT_CONTAINS(nl + 1, "\"worker_id\":\"executor-1\"");
    free(s);
}

TEST(log_nested_ctx_push_keeps_outer_fields)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    const struct log_field a[] = {LOG_STR("eval_id", "outer")};
    const struct log_field b[] = {LOG_STR("worker_id", "inner")};
    int ta = log_ctx_push(a, 1);
    int tb = log_ctx_push(b, 1);
    ASSERT(ta >= 0 && tb > ta);
    log_info(log_root(), "both");
    log_ctx_pop(tb);
    log_info(log_root(), "outer.only");
    log_ctx_pop(ta);
    char *s = slurp(path);
    ASSERT(s);
    ASSERT_EQ(strlen(s), 0 + (size_t)(strrchr(s, '\n') - s) + 1); /* no NUL inside */
    ASSERT_CONTAINS(s, "\"eval_id\":\"outer\",\"worker_id\":\"inner\"}");
    char *nl = strchr(s, '\n');
    ASSERT_CONTAINS(nl, "\"event\":\"outer.only\"");
    ASSERT_CONTAINS(nl, "\"eval_id\":\"outer\"}");
    free(s);
    json_t *j = first_line(path);
    ASSERT(j);
    json_decref(j);
}

TEST(log_ctx_scope_pops_at_end_of_block)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    {
        LOG_CTX_SCOPE(LOG_STR("eval_id", "scoped"));
        log_info(log_root(), "inside");
    }
    log_info(log_root(), "outside");
    char *s = slurp(path);
    char *nl = strchr(s, '\n');
    ASSERT(nl && strstr(s, "scoped") && strstr(s, "scoped") < nl);
    ASSERT(!strstr(nl, "scoped"));
    free(s);
}

TEST(log_malformed_fields_rejected_or_repaired)
{
    char path[256], err[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    const struct log_field bad[] = {LOG_OBJ("o"), LOG_INT("k", 1)};
    ASSERT(!log_bind(log_root(), bad, 2, err, sizeof err));
    ASSERT_CONTAINS(err, "malformed");
    ASSERT_EQ(log_ctx_push(bad, 2), -EINVAL);
    /* emitting repairs instead, and says so */
    log_info(log_root(), "repaired", LOG_OBJ("o"), LOG_INT("k", 1), LOG_END_ARR, LOG_END_OBJ,
             LOG_END_OBJ, LOG_STR(NULL, "keyless"));
    json_t *j = first_line(path);
    ASSERT(j);
    ASSERT(json_is_true(json_object_get(j, "log_malformed_fields")));
    json_decref(j);
}

TEST(log_hostile_values_stay_valid_json)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    char nasty[300];
    for (int i = 0; i < 256; i++)
        nasty[i] = (char)i;
    memcpy(nasty + 256, "\"}\n{\"level\":\"critical\"", 23);
    log_info(log_root(), "ev\"il\n", LOG_STRN("v", nasty, 279), LOG_STRN("k\"ey\n", "x", 1));
    char *s = slurp(path);
    ASSERT(s);
    ASSERT_EQ(strchr(s, '\n') - s + 1, (long)strlen(s)); /* exactly one line */
    free(s);
    json_t *j = first_line(path);
    ASSERT(j);
    ASSERT_STREQ(json_string_value(json_object_get(j, "level")), "info");
    ASSERT_STREQ(json_string_value(json_object_get(j, "event")), "ev\"il\n");
    json_decref(j);
}

TEST(log_long_values_cut_and_long_lines_replaced)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    size_t big = LOG_VALUE_MAX * 3;
    char *v = malloc(big);
    memset(v, 'x', big);
    log_info(log_root(), "big.value", LOG_STRN("v", v, big));
    json_t *j = first_line(path);
    ASSERT(j);
    const char *s = json_string_value(json_object_get(j, "v"));
    ASSERT(s && strlen(s) < LOG_VALUE_MAX + 64);
    ASSERT_CONTAINS(s, "bytes cut]");
    json_decref(j);

    /* 40 values of 8 KiB exceed LOG_LINE_MAX: a short valid line instead. */
    capture(path, sizeof path, LOG_FORMAT_JSON);
    struct log_field f[41];
    f[0] = (struct log_field){.type = LOG_F_SKIP};
    char keys[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        f[i + 1] = LOG_STRN(keys[i], v, LOG_VALUE_MAX);
    }
    log__emit(log_root(), LOG_INFO, "huge.line", f, 41);
    j = first_line(path);
    ASSERT(j);
    ASSERT(json_is_true(json_object_get(j, "log_truncated")));
    ASSERT_STREQ(json_string_value(json_object_get(j, "event")), "huge.line");
    json_decref(j);
    free(v);
}

TEST(log_level_filter_and_parse)
{
    char path[256], err[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    log_set_level(LOG_WARNING);
    int evaluated = 0;
    log_info(log_root(), "hidden", LOG_INT("n", ++evaluated));
    log_error(log_root(), "shown");
    ASSERT_EQ(evaluated, 0); /* a disabled level does not evaluate fields */
    char *s = slurp(path);
    ASSERT(!strstr(s, "hidden"));
    ASSERT_CONTAINS(s, "shown");
    free(s);
    enum log_level l;
    ASSERT_EQ(log_level_parse("WARN", &l), 0);
    ASSERT_EQ(l, LOG_WARNING);
    ASSERT_EQ(log_level_parse("loud", &l), -EINVAL);
    ASSERT_EQ(log_setup("xml", NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "json or console");
    setenv("CLEARBOX_LOG_LEVEL", "shouty", 1);
    ASSERT_EQ(log_setup("json", NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "CLEARBOX_LOG_LEVEL");
    setenv("CLEARBOX_LOG_LEVEL", "error", 1);
    setenv("OTEL_SERVICE_NAME", "svc-from-env", 1);
    ASSERT_EQ(log_setup("json", NULL, err, sizeof err), 0);
    ASSERT(!log_enabled(log_root(), LOG_WARNING));
    ASSERT(log_enabled(log_root(), LOG_ERROR));
}

TEST(log_console_renderer_readable_and_safe)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_CONSOLE);
    log_info(log_get("security"), "evaluation.suspicious", LOG_STR("reason", "network_attempt"),
             LOG_STR("msg", "two words\x1b[31m"), LOG_INT("n", 3), LOG_OBJ("details"),
             LOG_BOOL("blocked", true), LOG_END_OBJ);
    char *s = slurp(path);
    ASSERT(s);
    ASSERT_CONTAINS(s, "[info    ] evaluation.suspicious");
    ASSERT_CONTAINS(s, "logger=security reason=network_attempt msg=\"two words\\u001b[31m\" n=3 "
                       "details={\"blocked\":true}");
    ASSERT(!strchr(s, '\x1b')); /* not a terminal: no colour, and never raw ESC */
    free(s);
}

/* The promise from STYLE.md: 16 threads log 10,000 lines each, and every
 * line must still parse as JSON alone. */
#define NTHREADS 16
#define NLINES 10000
static void *spam(void *arg)
{
    long id = (long)arg;
    char pad[600];
    memset(pad, 'a' + (int)id, sizeof pad);
    for (int i = 0; i < NLINES; i++)
        log_info(log_root(), "spam", LOG_INT("thread", id), LOG_INT("i", i),
                 LOG_STRN("pad", pad, (size_t)(i % 7) * 80));
    return NULL;
}

TEST(log_threads_never_interleave)
{
    char path[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, spam, (void *)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    char *s = slurp(path);
    ASSERT(s);
    int lines = 0, per[NTHREADS] = {0};
    for (char *p = s, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        ASSERT(nl);
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &e);
        ASSERT_MSG(j, "line %d is not JSON alone: %s", lines + 1, e.text);
        long id = (long)json_integer_value(json_object_get(j, "thread"));
        ASSERT(id >= 0 && id < NTHREADS);
        ASSERT_EQ(json_integer_value(json_object_get(j, "i")), per[id]); /* in order */
        per[id]++;
        json_decref(j);
        lines++;
    }
    ASSERT_EQ(lines, NTHREADS * NLINES);
    free(s);
}

#if !defined(__SANITIZE_ADDRESS__)
/* Count allocations by interposing malloc for this binary (glibc only). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static __thread int counting;
static __thread long allocs;
void *malloc(size_t n)
{
    if (counting)
        allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    if (counting)
        allocs++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    if (counting)
        allocs++;
    return __libc_realloc(p, n);
}

TEST(log_ordinary_event_does_not_allocate)
{
    char path[256], err[256];
    capture(path, sizeof path, LOG_FORMAT_JSON);
    const struct log_field bf[] = {LOG_STR("worker_id", "w1")};
    log_logger_t *lg = log_bind(log_root(), bf, 1, err, sizeof err);
    ASSERT(lg);
    log_info(lg, "warm.up"); /* first line on a thread may set up TLS */
    counting = 1;
    for (int i = 0; i < 1000; i++)
        log_info(lg, "evaluation.processing", LOG_STR("eval_id", "abc"),
                 LOG_INT("code_length", 1234), LOG_STR("engine", "native"),
                 LOG_INT("queue_depth", 15), LOG_DOUBLE("cpu", 0.25), LOG_BOOL("ok", true));
    counting = 0;
    ASSERT_EQ(allocs, 0);
    log_free(lg);
}
#endif
