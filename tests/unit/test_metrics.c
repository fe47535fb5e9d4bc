/* test_metrics.c - the promises of telemetry/metrics.h: values, exposition
 * bytes in both formats, escaping, histogram buckets, exact totals under
 * concurrent updates, cardinality folding, error paths, and the real
 * `promtool check metrics` (text format) plus the Python client's strict
 * OpenMetrics parser (promtool only knows the text format: it lints an
 * OpenMetrics counter family "foo" as a counter without "_total"). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "telemetry/metrics.h"
#include "test.h"
#include "util/err.h"

#define PROMTOOL "/usr/bin/promtool"
#define PYTHON "/usr/bin/python3"

static char *render(metrics_registry_t *r, enum metrics_format fmt, unsigned flags)
{
    char *s = NULL;
    char err[ERR_LEN];
    if (metrics_render_string(r, fmt, flags, &s, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "render: %s\n", err);
        return NULL;
    }
    return s;
}

/* Run argv with stdin from the file `in`, stdout+stderr into out (NUL
 * terminated, cut at outlen - 1). Returns the exit status, or -1. */
static int run_tool(char *const argv[], const char *in, char *out, size_t outlen)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(in, O_RDONLY);
        if (fd < 0)
            _exit(126);
        dup2(fd, 0);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t n = 0;
    ssize_t r;
    char sink[4096];
    /* Keep reading past a full buffer so the child never blocks on the pipe. */
    while ((r = n < outlen - 1 ? read(pfd[0], out + n, outlen - 1 - n)
                               : read(pfd[0], sink, sizeof sink)) > 0)
        if (n < outlen - 1)
            n += (size_t)r;
    out[n] = '\0';
    close(pfd[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *write_tmp(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(content, f);
    fclose(f);
    return path;
}

/* A small registry used by the exact-output tests. */
static metrics_registry_t *small_registry(void)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_family_t *evals, *hist;
    metrics_gauge_t *depth;
    char err[ERR_LEN];
    struct metrics_opts o = {.name = "clearbox_evaluations_total",
                             .help = "Evaluations finished, by status and language.",
                             .label_names = (const char *const[]){"status", "language"},
                             .nlabels = 2};
    if (metrics_family_new(r, METRICS_COUNTER, &o, &evals, err, sizeof err) < 0)
        return NULL;
    metrics_counter_add(metrics_counter_labels(evals, "completed", "python"), 3);
    metrics_counter_inc(metrics_counter_labels(evals, "timeout", "sh"));
    if (metrics_gauge_new(r, "clearbox_queue_depth", "Evaluations waiting.", &depth, err,
                          sizeof err) < 0)
        return NULL;
    metrics_gauge_set(depth, 7);
    struct metrics_opts h = {.name = "clearbox_test_seconds",
                             .help = "A test histogram.",
                             .unit = "seconds",
                             .buckets = (const double[]){0.1, 1, 10},
                             .nbuckets = 3};
    if (metrics_family_new(r, METRICS_HISTOGRAM, &h, &hist, err, sizeof err) < 0)
        return NULL;
    metrics_histogram_t *hs = metrics_histogram_labels(hist);
    metrics_histogram_observe(hs, 0.0625);
    metrics_histogram_observe(hs, 1); /* on a bound: counts in le="1.0" */
    metrics_histogram_observe(hs, 0.5);
    metrics_histogram_observe(hs, 20);
    return r;
}

TEST(text_format_exact)
{
    metrics_registry_t *r = small_registry();
    ASSERT(r);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_STREQ(s,
                 "# HELP clearbox_evaluations_total Evaluations finished, by status and language.\n"
                 "# TYPE clearbox_evaluations_total counter\n"
                 "clearbox_evaluations_total{status=\"completed\",language=\"python\"} 3\n"
                 "clearbox_evaluations_total{status=\"timeout\",language=\"sh\"} 1\n"
                 "# HELP clearbox_queue_depth Evaluations waiting.\n"
                 "# TYPE clearbox_queue_depth gauge\n"
                 "clearbox_queue_depth 7.0\n"
                 "# HELP clearbox_test_seconds A test histogram.\n"
                 "# TYPE clearbox_test_seconds histogram\n"
                 "clearbox_test_seconds_bucket{le=\"0.1\"} 1\n"
                 "clearbox_test_seconds_bucket{le=\"1.0\"} 3\n"
                 "clearbox_test_seconds_bucket{le=\"10.0\"} 3\n"
                 "clearbox_test_seconds_bucket{le=\"+Inf\"} 4\n"
                 "clearbox_test_seconds_sum 21.5625\n"
                 "clearbox_test_seconds_count 4\n");
    free(s);
    metrics_registry_free(r);
}

TEST(openmetrics_format_exact)
{
    metrics_registry_t *r = small_registry();
    ASSERT(r);
    char *s = render(r, METRICS_FORMAT_OPENMETRICS, 0);
    ASSERT_STREQ(s, "# HELP clearbox_evaluations Evaluations finished, by status and language.\n"
                    "# TYPE clearbox_evaluations counter\n"
                    "clearbox_evaluations_total{status=\"completed\",language=\"python\"} 3\n"
                    "clearbox_evaluations_total{status=\"timeout\",language=\"sh\"} 1\n"
                    "# HELP clearbox_queue_depth Evaluations waiting.\n"
                    "# TYPE clearbox_queue_depth gauge\n"
                    "clearbox_queue_depth 7.0\n"
                    "# HELP clearbox_test_seconds A test histogram.\n"
                    "# TYPE clearbox_test_seconds histogram\n"
                    "# UNIT clearbox_test_seconds seconds\n"
                    "clearbox_test_seconds_bucket{le=\"0.1\"} 1\n"
                    "clearbox_test_seconds_bucket{le=\"1.0\"} 3\n"
                    "clearbox_test_seconds_bucket{le=\"10.0\"} 3\n"
                    "clearbox_test_seconds_bucket{le=\"+Inf\"} 4\n"
                    "clearbox_test_seconds_sum 21.5625\n"
                    "clearbox_test_seconds_count 4\n"
                    "# EOF\n");
    free(s);
    /* _created only when asked, only in OpenMetrics, never for gauges. */
    s = render(r, METRICS_FORMAT_OPENMETRICS, METRICS_RENDER_CREATED);
    ASSERT_CONTAINS(s, "clearbox_evaluations_created{status=\"timeout\",language=\"sh\"} 1");
    ASSERT_CONTAINS(s, "\nclearbox_test_seconds_created 1");
    ASSERT(!strstr(s, "queue_depth_created"));
    free(s);
    s = render(r, METRICS_FORMAT_TEXT, METRICS_RENDER_CREATED);
    ASSERT(!strstr(s, "_created"));
    free(s);
    metrics_registry_free(r);
}

TEST(values_counter_gauge)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_counter_t *c;
    metrics_gauge_t *g;
    char err[ERR_LEN];
    ASSERT_EQ(metrics_counter_new(r, "t_total", "h", &c, err, sizeof err), 0);
    ASSERT_EQ(metrics_gauge_new(r, "g", "h", &g, err, sizeof err), 0);
    ASSERT(metrics_counter_value(c) == 0);
    metrics_counter_inc(c);
    metrics_counter_add(c, 41);
    ASSERT(metrics_counter_value(c) == 42);
    metrics_counter_add_f(c, 0.5);
    metrics_counter_add_f(c, -3);  /* ignored: counters do not go down */
    metrics_counter_add_f(c, NAN); /* ignored */
    ASSERT(metrics_counter_value(c) == 42.5);
    metrics_gauge_set(g, 10);
    metrics_gauge_add(g, -2.5);
    metrics_gauge_inc(g);
    metrics_gauge_dec(g);
    metrics_gauge_dec(g);
    ASSERT(metrics_gauge_value(g) == 6.5);
    /* NULL handles are accepted and ignored. */
    metrics_counter_inc(NULL);
    metrics_gauge_set(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "\nt_total 42.5\n");
    ASSERT_CONTAINS(s, "\ng 6.5\n");
    free(s);
    /* A counter named without _total is exposed with it. */
    metrics_counter_t *c2;
    ASSERT_EQ(metrics_counter_new(r, "plain", "h", &c2, err, sizeof err), 0);
    s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "# TYPE plain_total counter\nplain_total 0\n");
    free(s);
    metrics_registry_free(r);
}

TEST(number_formatting)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_family_t *f;
    char err[ERR_LEN];
    struct metrics_opts o = {
        .name = "n", .help = "h", .label_names = (const char *const[]){"k"}, .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &o, &f, err, sizeof err), 0);
    metrics_gauge_set(metrics_gauge_labels(f, "nan"), NAN);
    metrics_gauge_set(metrics_gauge_labels(f, "pinf"), INFINITY);
    metrics_gauge_set(metrics_gauge_labels(f, "ninf"), -INFINITY);
    metrics_gauge_set(metrics_gauge_labels(f, "tenth"), 0.1);
    metrics_gauge_set(metrics_gauge_labels(f, "third"), 1.0 / 3);
    metrics_gauge_set(metrics_gauge_labels(f, "big"), 1e20);
    metrics_gauge_set(metrics_gauge_labels(f, "neg"), -2);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "n{k=\"nan\"} NaN\n");
    ASSERT_CONTAINS(s, "n{k=\"pinf\"} +Inf\n");
    ASSERT_CONTAINS(s, "n{k=\"ninf\"} -Inf\n");
    ASSERT_CONTAINS(s, "n{k=\"tenth\"} 0.1\n");
    ASSERT_CONTAINS(s, "n{k=\"third\"} 0.33333333333333331\n"); /* round-trips */
    ASSERT_CONTAINS(s, "n{k=\"big\"} 1e+20\n");
    ASSERT_CONTAINS(s, "n{k=\"neg\"} -2.0\n");
    free(s);
    metrics_registry_free(r);
}

TEST(label_and_help_escaping)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_family_t *f;
    char err[ERR_LEN];
    struct metrics_opts o = {.name = "esc_total",
                             .help = "back\\slash \"quoted\"\nnext line",
                             .label_names = (const char *const[]){"v"},
                             .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err), 0);
    metrics_counter_inc(metrics_counter_labels(f, "a\"b\\c\nd"));
    metrics_counter_inc(metrics_counter_labels(f, "bad\xff utf8"));
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "# HELP esc_total back\\\\slash \"quoted\"\\nnext line\n");
    ASSERT_CONTAINS(s, "esc_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
    ASSERT_CONTAINS(s, "esc_total{v=\"bad\xEF\xBF\xBD utf8\"} 1\n");
    free(s);
    s = render(r, METRICS_FORMAT_OPENMETRICS, 0);
    ASSERT_CONTAINS(s, "# HELP esc back\\\\slash \\\"quoted\\\"\\nnext line\n");
    ASSERT_CONTAINS(s, "esc_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
    free(s);
    metrics_registry_free(r);
}

TEST(long_label_value_is_cut)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_family_t *f;
    char err[ERR_LEN];
    struct metrics_opts o = {
        .name = "cut_total", .help = "h", .label_names = (const char *const[]){"v"}, .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err), 0);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[METRICS_LABEL_VALUE_MAX - 1] = '\xC3'; /* a 2-byte char across the limit */
    big[METRICS_LABEL_VALUE_MAX] = '\xA9';
    metrics_counter_t *a = metrics_counter_labels(f, big);
    ASSERT(a);
    big[1500] = 'y'; /* differs only past the cut: the same series */
    ASSERT(metrics_counter_labels(f, big) == a);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    const char *v = strstr(s, "cut_total{v=\"");
    ASSERT(v);
    v += strlen("cut_total{v=\"");
    ASSERT_EQ(strchr(v, '"') - v, METRICS_LABEL_VALUE_MAX - 1);
    free(s);
    metrics_registry_free(r);
}

TEST(histogram_buckets)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_histogram_t *h, *d;
    char err[ERR_LEN];
    ASSERT_EQ(metrics_histogram_new(r, "d_seconds", "h", NULL, 0, &d, err, sizeof err), 0);
    uint64_t counts[METRICS_BUCKETS_MAX + 1];
    double sum;
    ASSERT_EQ(metrics_histogram_read(d, counts, 64, &sum), 12); /* 11 defaults + Inf */
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "d_seconds_bucket{le=\"0.005\"} 0\nd_seconds_bucket{le=\"0.01\"} 0\n"
                       "d_seconds_bucket{le=\"0.025\"} 0\nd_seconds_bucket{le=\"0.05\"} 0\n"
                       "d_seconds_bucket{le=\"0.1\"} 0\nd_seconds_bucket{le=\"0.25\"} 0\n"
                       "d_seconds_bucket{le=\"0.5\"} 0\nd_seconds_bucket{le=\"1.0\"} 0\n"
                       "d_seconds_bucket{le=\"2.5\"} 0\nd_seconds_bucket{le=\"5.0\"} 0\n"
                       "d_seconds_bucket{le=\"10.0\"} 0\nd_seconds_bucket{le=\"+Inf\"} 0\n"
                       "d_seconds_sum 0.0\nd_seconds_count 0\n");
    free(s);

    /* 40 bounds: the binary-search path. */
    double b[40];
    for (int i = 0; i < 40; i++)
        b[i] = i + 1;
    ASSERT_EQ(metrics_histogram_new(r, "wide", "h", b, 40, &h, err, sizeof err), 0);
    metrics_histogram_observe(h, 0.5); /* le=1 */
    metrics_histogram_observe(h, 1);   /* le=1 */
    metrics_histogram_observe(h, 1.5); /* le=2 */
    metrics_histogram_observe(h, 40);  /* le=40 */
    metrics_histogram_observe(h, 41);  /* +Inf */
    metrics_histogram_observe(h, NAN); /* +Inf */
    metrics_histogram_observe(h, -5);  /* le=1 */
    ASSERT_EQ(metrics_histogram_read(h, counts, 64, &sum), 41);
    ASSERT_EQ(counts[0], 3);
    ASSERT_EQ(counts[1], 1);
    ASSERT_EQ(counts[39], 1);
    ASSERT_EQ(counts[40], 2);
    ASSERT(isnan(sum));
    s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "wide_bucket{le=\"1.0\"} 3\nwide_bucket{le=\"2.0\"} 4\n"
                       "wide_bucket{le=\"3.0\"} 4\n");
    ASSERT_CONTAINS(s, "wide_bucket{le=\"39.0\"} 4\nwide_bucket{le=\"40.0\"} 5\n"
                       "wide_bucket{le=\"+Inf\"} 7\nwide_sum NaN\nwide_count 7\n");
    free(s);
    metrics_registry_free(r);
}

static double read_double(void *arg)
{
    return *(const double *)arg;
}

TEST(function_backed_series)
{
    metrics_registry_t *r = metrics_registry_new();
    metrics_family_t *f, *g;
    char err[ERR_LEN];
    struct metrics_opts o = {.name = "clearbox_telemetry_dropped_total",
                             .help = "Telemetry items dropped, by signal.",
                             .label_names = (const char *const[]){"signal"},
                             .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err), 0);
    double dropped = 17, temp = -3.25;
    ASSERT_EQ(
        metrics_counter_func(f, (const char *const[]){"traces"}, 1, NULL, NULL, err, sizeof err),
        -EINVAL);
    ASSERT_EQ(metrics_counter_func(f, (const char *const[]){"traces"}, 1, read_double, &dropped,
                                   err, sizeof err),
              0);
    /* The tuple is taken: neither a second function nor a plain series. */
    ASSERT_EQ(metrics_counter_func(f, (const char *const[]){"traces"}, 1, read_double, &dropped,
                                   err, sizeof err),
              -EEXIST);
    metrics_counter_t *c;
    ASSERT_EQ(metrics_counter_get(f, (const char *const[]){"traces"}, 1, &c, err, sizeof err),
              -EEXIST);
    ASSERT_CONTAINS(err, "function-backed");
    metrics_counter_inc(metrics_counter_labels(f, "logs"));
    ASSERT_EQ(metrics_gauge_new(r, "temp", "h", NULL, err, sizeof err), -EINVAL); /* out NULL */
    struct metrics_opts go = {.name = "temp_celsius", .help = "h", .unit = "celsius"};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &go, &g, err, sizeof err), 0);
    ASSERT_EQ(metrics_gauge_func(g, NULL, 0, read_double, &temp, err, sizeof err), 0);
    ASSERT_EQ(metrics_gauge_func(g, NULL, 0, read_double, &temp, err, sizeof err), -EEXIST);
    ASSERT_EQ(metrics_counter_func(g, NULL, 0, read_double, &temp, err, sizeof err), -EINVAL);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "clearbox_telemetry_dropped_total{signal=\"traces\"} 17.0\n"
                       "clearbox_telemetry_dropped_total{signal=\"logs\"} 1\n");
    ASSERT_CONTAINS(s, "\ntemp_celsius -3.25\n");
    free(s);
    dropped = 20; /* read at render time */
    temp = 1.5;
    s = render(r, METRICS_FORMAT_OPENMETRICS, METRICS_RENDER_CREATED);
    ASSERT_CONTAINS(s, "clearbox_telemetry_dropped_total{signal=\"traces\"} 20.0\n");
    ASSERT(!strstr(s, "dropped_created{signal=\"traces\"}")); /* unknown for a function */
    ASSERT_CONTAINS(s, "dropped_created{signal=\"logs\"}");
    ASSERT_CONTAINS(s, "# UNIT temp_celsius celsius\ntemp_celsius 1.5\n");
    free(s);
    metrics_registry_free(r);
}

struct worker_arg {
    metrics_counter_t *c;
    metrics_histogram_t *h;
    metrics_gauge_t *g;
    int n;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        metrics_counter_inc(a->c);
        metrics_counter_add_f(a->c, 0.5);
        metrics_histogram_observe(a->h, (i % 4) * 0.25); /* 0, .25, .5, .75 */
        metrics_gauge_add(a->g, 1);
    }
    return NULL;
}

TEST(concurrent_updates_total_exactly)
{
    enum { THREADS = 8, N = 200000 };
    metrics_registry_t *r = metrics_registry_new();
    char err[ERR_LEN];
    struct worker_arg a = {.n = N};
    ASSERT_EQ(metrics_counter_new(r, "conc_total", "h", &a.c, err, sizeof err), 0);
    ASSERT_EQ(metrics_histogram_new(r, "conc_seconds", "h", (const double[]){0.1, 0.6}, 2, &a.h,
                                    err, sizeof err),
              0);
    ASSERT_EQ(metrics_gauge_new(r, "conc_gauge", "h", &a.g, err, sizeof err), 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, worker, &a), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* Integer adds 1.6M + half-adds 0.8M, all exact in binary. */
    ASSERT(metrics_counter_value(a.c) == THREADS * N * 1.5);
    ASSERT(metrics_gauge_value(a.g) == THREADS * N);
    uint64_t counts[3];
    double sum;
    ASSERT_EQ(metrics_histogram_read(a.h, counts, 3, &sum), 3);
    ASSERT_EQ(counts[0], THREADS * N / 4); /* 0 */
    ASSERT_EQ(counts[1], THREADS * N / 2); /* .25 .5 */
    ASSERT_EQ(counts[2], THREADS * N / 4); /* .75 */
    ASSERT(sum == THREADS * (N / 4) * 1.5);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "conc_total 2400000.0\n");
    ASSERT_CONTAINS(s, "conc_seconds_bucket{le=\"+Inf\"} 1600000\n");
    ASSERT_CONTAINS(s, "conc_seconds_count 1600000\n");
    free(s);
    metrics_registry_free(r);
}

/* Rendering while others update: every render parses, counts only grow. */
static void *render_loop(void *p)
{
    metrics_registry_t *r = p;
    for (int i = 0; i < 200; i++) {
        char *s = render(r, METRICS_FORMAT_OPENMETRICS, METRICS_RENDER_CREATED);
        if (!s || !strstr(s, "# EOF\n"))
            return (void *)1;
        free(s);
    }
    return NULL;
}

TEST(render_while_updating)
{
    metrics_registry_t *r = metrics_registry_new();
    char err[ERR_LEN];
    metrics_family_t *f;
    struct metrics_opts o = {
        .name = "busy_total", .help = "h", .label_names = (const char *const[]){"k"}, .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, render_loop, r), 0);
    char v[16];
    for (int i = 0; i < 2000; i++) { /* new series appear while rendering */
        snprintf(v, sizeof v, "%d", i % 500);
        metrics_counter_inc(metrics_counter_labels(f, v));
    }
    void *ret;
    pthread_join(t, &ret);
    ASSERT(ret == NULL);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "busy_total{k=\"499\"} 4\n");
    free(s);
    metrics_registry_free(r);
}

TEST(cardinality_folding)
{
    metrics_registry_t *r = metrics_registry_new();
    char err[ERR_LEN];
    metrics_family_t *cost, *cap;
    struct metrics_opts o = {.name = "clearbox_cost_cents_total",
                             .help = "h",
                             .label_names = (const char *const[]){"language", "submitter"},
                             .nlabels = 2,
                             .label_max_values = (const size_t[]){0, 2}};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &o, &cost, err, sizeof err), 0);
    metrics_counter_add(metrics_counter_labels(cost, "python", "alice"), 1);
    metrics_counter_add(metrics_counter_labels(cost, "python", "bob"), 2);
    metrics_counter_add(metrics_counter_labels(cost, "python", "carol"), 4);  /* folds */
    metrics_counter_add(metrics_counter_labels(cost, "sh", "dave"), 8);       /* folds */
    metrics_counter_add(metrics_counter_labels(cost, "sh", "alice"), 16);     /* known */
    metrics_counter_add(metrics_counter_labels(cost, "python", "carol"), 32); /* folds */
    metrics_counter_add(metrics_counter_labels(cost, "sh", "other"), 64);     /* literal */
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "{language=\"python\",submitter=\"alice\"} 1\n"
                       "clearbox_cost_cents_total{language=\"python\",submitter=\"bob\"} 2\n"
                       "clearbox_cost_cents_total{language=\"python\",submitter=\"other\"} 36\n"
                       "clearbox_cost_cents_total{language=\"sh\",submitter=\"other\"} 72\n"
                       "clearbox_cost_cents_total{language=\"sh\",submitter=\"alice\"} 16\n");
    ASSERT(!strstr(s, "carol"));
    ASSERT(!strstr(s, "dave"));
    free(s);

    /* The family-wide bound: past 3 series every new tuple is all "other". */
    struct metrics_opts c = {.name = "capped",
                             .help = "h",
                             .label_names = (const char *const[]){"a", "b"},
                             .nlabels = 2,
                             .max_series = 3};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &c, &cap, err, sizeof err), 0);
    metrics_gauge_inc(metrics_gauge_labels(cap, "1", "x"));
    metrics_gauge_inc(metrics_gauge_labels(cap, "2", "x"));
    metrics_gauge_inc(metrics_gauge_labels(cap, "3", "x"));
    metrics_gauge_inc(metrics_gauge_labels(cap, "4", "x"));
    metrics_gauge_inc(metrics_gauge_labels(cap, "5", "y"));
    metrics_gauge_inc(metrics_gauge_labels(cap, "2", "x")); /* existing: still its own */
    s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "capped{a=\"1\",b=\"x\"} 1.0\ncapped{a=\"2\",b=\"x\"} 2.0\n"
                       "capped{a=\"3\",b=\"x\"} 1.0\ncapped{a=\"other\",b=\"other\"} 2.0\n");
    free(s);
    metrics_registry_free(r);
}

TEST(error_paths)
{
    metrics_registry_t *r = metrics_registry_new();
    char err[ERR_LEN] = "";
    metrics_family_t *f;
    metrics_counter_t *c;
    const char *bad_names[] = {"", "1abc", "a-b", "a b", "é", "a.b"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        struct metrics_opts o = {.name = bad_names[i], .help = "h"};
        ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &o, &f, err, sizeof err), -EINVAL);
        ASSERT_CONTAINS(err, "invalid metric name");
    }
    struct metrics_opts ok_colon = {.name = "ns:sub_metric", .help = "h"};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &ok_colon, &f, err, sizeof err), 0);
    char longname[METRICS_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct metrics_opts lo = {.name = longname, .help = "h"};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &lo, &f, err, sizeof err), -EINVAL);

    const char *bad_labels[] = {"1x", "a:b", "__reserved", "quantile", "", "x-y"};
    for (size_t i = 0; i < sizeof bad_labels / sizeof *bad_labels; i++) {
        struct metrics_opts o = {.name = "lbl",
                                 .help = "h",
                                 .label_names = (const char *const[]){bad_labels[i]},
                                 .nlabels = 1};
        ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &o, &f, err, sizeof err), -EINVAL);
    }
    struct metrics_opts le = {
        .name = "h", .help = "h", .label_names = (const char *const[]){"le"}, .nlabels = 1};
    ASSERT_EQ(metrics_family_new(r, METRICS_HISTOGRAM, &le, &f, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "reserved");
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &le, &f, err, sizeof err), 0); /* gauge: fine */
    struct metrics_opts twice = {
        .name = "tw", .help = "h", .label_names = (const char *const[]){"a", "a"}, .nlabels = 2};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &twice, &f, err, sizeof err), -EINVAL);
    struct metrics_opts nohelp = {.name = "nh"};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &nohelp, &f, err, sizeof err), -EINVAL);
    nohelp.help = ""; /* promtool lints a family without help */
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &nohelp, &f, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "help text is required");

    /* Duplicates, including names that would collide once suffixed. */
    ASSERT_EQ(metrics_counter_new(r, "dup_total", "h", &c, err, sizeof err), 0);
    ASSERT_EQ(metrics_counter_new(r, "dup_total", "h", &c, err, sizeof err), -EEXIST);
    ASSERT_CONTAINS(err, "already used");
    ASSERT_EQ(metrics_counter_new(r, "dup", "h", &c, err, sizeof err), -EEXIST);
    metrics_gauge_t *g;
    ASSERT_EQ(metrics_gauge_new(r, "dup_total", "h", &g, err, sizeof err), -EEXIST);
    metrics_histogram_t *h;
    ASSERT_EQ(metrics_histogram_new(r, "hh", "h", NULL, 0, &h, err, sizeof err), 0);
    ASSERT_EQ(metrics_gauge_new(r, "hh_count", "h", &g, err, sizeof err), -EEXIST);
    ASSERT_EQ(metrics_histogram_new(r, "x_bucket", "h", NULL, 0, &h, err, sizeof err), -EINVAL);

    /* Buckets. */
    ASSERT_EQ(metrics_histogram_new(r, "b1", "h", (const double[]){1, 1}, 2, &h, err, sizeof err),
              -EINVAL);
    ASSERT_EQ(metrics_histogram_new(r, "b2", "h", (const double[]){2, 1}, 2, &h, err, sizeof err),
              -EINVAL);
    ASSERT_EQ(
        metrics_histogram_new(r, "b3", "h", (const double[]){1, INFINITY}, 2, &h, err, sizeof err),
        -EINVAL);
    ASSERT_EQ(metrics_histogram_new(r, "b4", "h", (const double[]){NAN}, 1, &h, err, sizeof err),
              -EINVAL);
    double many[METRICS_BUCKETS_MAX + 1];
    for (int i = 0; i <= METRICS_BUCKETS_MAX; i++)
        many[i] = i;
    ASSERT_EQ(
        metrics_histogram_new(r, "b5", "h", many, METRICS_BUCKETS_MAX + 1, &h, err, sizeof err),
        -EINVAL);
    ASSERT_EQ(metrics_histogram_new(r, "b6", "h", many, METRICS_BUCKETS_MAX, &h, err, sizeof err),
              0);

    /* Units must be the name's last part. */
    struct metrics_opts u1 = {.name = "wait_seconds", .help = "h", .unit = "bytes"};
    ASSERT_EQ(metrics_family_new(r, METRICS_GAUGE, &u1, &f, err, sizeof err), -EINVAL);
    struct metrics_opts u2 = {.name = "cpu_seconds_total", .help = "h", .unit = "seconds"};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &u2, &f, err, sizeof err), 0);

    /* Label counts and types at lookup. */
    struct metrics_opts two = {.name = "two_total",
                               .help = "h",
                               .label_names = (const char *const[]){"a", "b"},
                               .nlabels = 2};
    ASSERT_EQ(metrics_family_new(r, METRICS_COUNTER, &two, &f, err, sizeof err), 0);
    ASSERT_EQ(metrics_counter_get(f, (const char *const[]){"x"}, 1, &c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "takes 2 label values, got 1");
    ASSERT_EQ(metrics_counter_get(f, (const char *const[]){"x", "y", "z"}, 3, &c, err, sizeof err),
              -EINVAL);
    ASSERT_EQ(metrics_counter_get(f, (const char *const[]){"x", NULL}, 2, &c, err, sizeof err),
              -EINVAL);
    ASSERT(metrics_counter_labels(f, "only-one") == NULL);
    ASSERT(metrics_gauge_labels(f, "x", "y") == NULL); /* a counter family */
    ASSERT_EQ(metrics_gauge_get(f, (const char *const[]){"x", "y"}, 2, &g, err, sizeof err),
              -EINVAL);
    ASSERT_CONTAINS(err, "is a counter, not a gauge");
    ASSERT(metrics_counter_labels(f, "x", "y") != NULL);
    ASSERT(metrics_counter_labels(f, "x", "y") == metrics_counter_labels(f, "x", "y"));

    /* Failed registrations left nothing behind: the output still lints. */
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT(s);
    ASSERT(!strstr(s, "b5"));
    ASSERT(!strstr(s, "lbl"));
    free(s);
    metrics_registry_free(r);
}

TEST(process_metrics)
{
    metrics_registry_t *r = metrics_registry_new();
    char err[ERR_LEN];
    ASSERT_EQ(metrics_register_process(r, err, sizeof err), 0);
    ASSERT_EQ(metrics_register_process(r, err, sizeof err), -EEXIST);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    const char *names[] = {"process_cpu_seconds_total ",
                           "process_virtual_memory_bytes ",
                           "process_resident_memory_bytes ",
                           "process_start_time_seconds ",
                           "process_open_fds ",
                           "process_max_fds "};
    for (size_t i = 0; i < 6; i++) {
        char pat[80];
        snprintf(pat, sizeof pat, "\n%s", names[i]);
        const char *p = strstr(s, pat);
        ASSERT_MSG(p, "missing %s in %s", names[i], s);
        double v = strtod(p + strlen(pat), NULL);
        ASSERT_MSG(isfinite(v) && v >= 0, "%s= %g", names[i], v);
    }
    /* Plausible values: started within the last hour, some memory, fds open. */
    double start = strtod(strstr(s, "\nprocess_start_time_seconds ") + 28, NULL);
    ASSERT_MSG(fabs(start - (double)time(NULL)) < 3600, "start %f", start);
    double rss = strtod(strstr(s, "\nprocess_resident_memory_bytes ") + 31, NULL);
    ASSERT(rss > 100000);
    int fd = open("/dev/null", O_RDONLY);
    double fds1 = strtod(strstr(s, "\nprocess_open_fds ") + 18, NULL);
    free(s);
    s = render(r, METRICS_FORMAT_TEXT, 0);
    double fds2 = strtod(strstr(s, "\nprocess_open_fds ") + 18, NULL);
    ASSERT_EQ((long)fds2, (long)fds1 + 1);
    close(fd);
    free(s);
    s = render(r, METRICS_FORMAT_OPENMETRICS, 0);
    ASSERT_CONTAINS(s, "# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n"
                       "process_cpu_seconds_total ");
    free(s);
    metrics_registry_free(r);
}

/* A registry with the awkward cases: escapes, NaN/Inf, bounded labels,
 * function series, process metrics, every type, units. */
static metrics_registry_t *nasty_registry(void)
{
    metrics_registry_t *r = small_registry();
    char err[ERR_LEN];
    metrics_family_t *f, *g;
    if (!r || metrics_register_process(r, err, sizeof err) < 0)
        return NULL;
    struct metrics_opts o = {.name = "clearbox_security_events_total",
                             .help = "Security events \"quoted\", back\\slash\nnew line.",
                             .label_names = (const char *const[]){"reason"},
                             .nlabels = 1};
    if (metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err) < 0)
        return NULL;
    metrics_counter_inc(metrics_counter_labels(f, "a\"quote"));
    metrics_counter_inc(metrics_counter_labels(f, "back\\slash"));
    metrics_counter_inc(metrics_counter_labels(f, "new\nline"));
    metrics_counter_inc(metrics_counter_labels(f, "all \\\"\n three"));
    metrics_counter_inc(metrics_counter_labels(f, ""));
    metrics_counter_add_f(metrics_counter_labels(f, "unicode \xE2\x9C\x93 \xff"), 0.25);
    struct metrics_opts go = {.name = "clearbox_odd_values",
                              .help = "h",
                              .label_names = (const char *const[]){"k"},
                              .nlabels = 1};
    if (metrics_family_new(r, METRICS_GAUGE, &go, &g, err, sizeof err) < 0)
        return NULL;
    metrics_gauge_set(metrics_gauge_labels(g, "nan"), NAN);
    metrics_gauge_set(metrics_gauge_labels(g, "inf"), INFINITY);
    metrics_gauge_set(metrics_gauge_labels(g, "ninf"), -INFINITY);
    metrics_gauge_set(metrics_gauge_labels(g, "tiny"), 1e-300);
    metrics_gauge_set(metrics_gauge_labels(g, "neg"), -12.5);
    struct metrics_opts ho = {.name = "clearbox_evaluation_memory_peak_bytes",
                              .help = "Peak.",
                              .unit = "bytes",
                              .label_names = (const char *const[]){"language"},
                              .nlabels = 1,
                              .buckets = (const double[]){1e6, 1e7, 1e8, 1e9},
                              .nbuckets = 4};
    if (metrics_family_new(r, METRICS_HISTOGRAM, &ho, &f, err, sizeof err) < 0)
        return NULL;
    metrics_histogram_observe(metrics_histogram_labels(f, "python"), 3e7);
    metrics_histogram_observe(metrics_histogram_labels(f, "sh\"x"), 2e9);
    struct metrics_opts lo = {.name = "clearbox_labelled_empty_total",
                              .help = "No series yet.",
                              .label_names = (const char *const[]){"x"},
                              .nlabels = 1};
    if (metrics_family_new(r, METRICS_COUNTER, &lo, &f, err, sizeof err) < 0)
        return NULL;
    return r;
}

TEST(promtool_check_metrics_text)
{
    ASSERT_MSG(access(PROMTOOL, X_OK) == 0, PROMTOOL " missing (make deps installs prometheus)");
    metrics_registry_t *r = nasty_registry();
    ASSERT(r);
    char *s = render(r, METRICS_FORMAT_TEXT, 0);
    ASSERT(s);
    const char *in = write_tmp("metrics.txt", s);
    ASSERT(in);
    char out[8192];
    int rc = run_tool((char *const[]){PROMTOOL, "check", "metrics", NULL}, in, out, sizeof out);
    ASSERT_MSG(rc == 0 && out[0] == '\0', "promtool rc=%d: %s\n--- input:\n%s", rc, out, s);

    /* The check can fail: a counter without _total and a broken escape. */
    const char *bad = write_tmp("bad.txt", "# HELP foo x\n# TYPE foo counter\nfoo 1\n");
    rc = run_tool((char *const[]){PROMTOOL, "check", "metrics", NULL}, bad, out, sizeof out);
    ASSERT_MSG(rc != 0 && strstr(out, "_total"), "promtool accepted a bad file: rc=%d %s", rc, out);
    bad = write_tmp("bad2.txt", "# TYPE foo_total counter\nfoo_total{a=\"\\x\"} 1\n");
    rc = run_tool((char *const[]){PROMTOOL, "check", "metrics", NULL}, bad, out, sizeof out);
    ASSERT_MSG(rc != 0, "promtool accepted a bad escape: rc=%d %s", rc, out);
    free(s);
    metrics_registry_free(r);
}

/* The Python client's parsers read the label values back exactly. */
static const char *pyparse =
    "import sys, json\n"
    "fmt = sys.argv[1]\n"
    "if fmt == 'om':\n"
    "    from prometheus_client.openmetrics.parser import text_string_to_metric_families\n"
    "else:\n"
    "    from prometheus_client.parser import text_string_to_metric_families\n"
    "n = 0\n"
    "for fam in text_string_to_metric_families(sys.stdin.read()):\n"
    "    for s in fam.samples:\n"
    "        n += 1\n"
    "        print(json.dumps([fam.type, fam.unit, s.name, s.labels, repr(s.value)],\n"
    "                         sort_keys=True))\n"
    "print('samples', n)\n";

static void check_python_parse(const char *fmt, enum metrics_format f)
{
    ASSERT_MSG(access(PYTHON, X_OK) == 0, PYTHON " missing");
    metrics_registry_t *r = nasty_registry();
    ASSERT(r);
    char *s = render(r, f, METRICS_RENDER_CREATED);
    ASSERT(s);
    const char *in = write_tmp("m.txt", s);
    static char out[65536];
    int rc = run_tool((char *const[]){PYTHON, "-c", (char *)pyparse, (char *)fmt, NULL}, in, out,
                      sizeof out);
    ASSERT_MSG(rc == 0, "parser rc=%d: %s\n--- input:\n%s", rc, out, s);
    ASSERT_CONTAINS(out, "\"reason\": \"all \\\\\\\"\\n three\"");
    ASSERT_CONTAINS(out, "\"reason\": \"a\\\"quote\"");
    ASSERT_CONTAINS(out, "\"reason\": \"unicode \\u2713 \\ufffd\"");
    ASSERT_CONTAINS(out, "\"language\": \"sh\\\"x\", \"le\": \"+Inf\"}, \"1");
    ASSERT_CONTAINS(out, "\"process_cpu_seconds_total\"");
    ASSERT_CONTAINS(out, "\"k\": \"nan\"}, \"nan\"]");
    free(s);
    metrics_registry_free(r);
}

TEST(python_client_parses_text)
{
    check_python_parse("text", METRICS_FORMAT_TEXT);
}

TEST(python_client_parses_openmetrics)
{
    check_python_parse("om", METRICS_FORMAT_OPENMETRICS);
    if (test__failed())
        return;
    /* The strict parser does fail on a broken document (no # EOF). */
    const char *in = write_tmp("bad.om", "# TYPE a gauge\na 1\n");
    char out[4096];
    int rc =
        run_tool((char *const[]){PYTHON, "-c", (char *)pyparse, "om", NULL}, in, out, sizeof out);
    ASSERT_MSG(rc != 0, "OpenMetrics parser accepted a document without # EOF: %s", out);
}

TEST(content_negotiation)
{
    ASSERT_EQ(metrics_format_negotiate(NULL), METRICS_FORMAT_TEXT);
    ASSERT_EQ(metrics_format_negotiate(""), METRICS_FORMAT_TEXT);
    ASSERT_EQ(metrics_format_negotiate("*/*"), METRICS_FORMAT_TEXT);
    ASSERT_EQ(metrics_format_negotiate("text/plain;version=0.0.4"), METRICS_FORMAT_TEXT);
    /* What Prometheus 2.x sends. */
    ASSERT_EQ(metrics_format_negotiate(
                  "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                  "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
              METRICS_FORMAT_OPENMETRICS);
    ASSERT_EQ(metrics_format_negotiate("application/openmetrics-text"), METRICS_FORMAT_OPENMETRICS);
    ASSERT_EQ(metrics_format_negotiate("Application/OpenMetrics-Text; q=0.9, text/plain; q=0.5"),
              METRICS_FORMAT_OPENMETRICS);
    ASSERT_EQ(metrics_format_negotiate("application/openmetrics-text;q=0.2,text/plain"),
              METRICS_FORMAT_TEXT);
    ASSERT_EQ(metrics_format_negotiate("application/openmetrics-text;q=0"), METRICS_FORMAT_TEXT);
    ASSERT_EQ(metrics_format_negotiate("application/openmetrics-text;version=0.0.1"),
              METRICS_FORMAT_TEXT);
    ASSERT_STREQ(metrics_content_type(METRICS_FORMAT_TEXT),
                 "text/plain; version=0.0.4; charset=utf-8");
    ASSERT_STREQ(metrics_content_type(METRICS_FORMAT_OPENMETRICS),
                 "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

TEST(render_into_bounded_buf)
{
    metrics_registry_t *r = small_registry();
    ASSERT(r);
    char store[64];
    struct buf b;
    char err[ERR_LEN];
    buf_init(&b, store, sizeof store, 0);
    ASSERT_EQ(metrics_render(r, METRICS_FORMAT_TEXT, 0, &b, err, sizeof err), -E2BIG);
    ASSERT_CONTAINS(err, "does not fit");
    buf_free(&b);
    buf_init(&b, store, sizeof store, 1 << 20); /* grows onto the heap */
    ASSERT_EQ(metrics_render(r, METRICS_FORMAT_OPENMETRICS, 0, &b, err, sizeof err), 0);
    ASSERT(b.len > 64);
    ASSERT_CONTAINS(b.data, "# EOF\n");
    buf_free(&b);
    metrics_registry_free(r);
}

TEST(default_registry)
{
    metrics_registry_t *d = metrics_default();
    ASSERT(d);
    ASSERT(d == metrics_default());
    metrics_counter_t *c;
    char err[ERR_LEN];
    ASSERT_EQ(metrics_counter_new(d, "default_test_total", "h", &c, err, sizeof err), 0);
    metrics_counter_inc(c);
    char *s = render(d, METRICS_FORMAT_TEXT, 0);
    ASSERT_CONTAINS(s, "default_test_total 1\n");
    free(s);
}

/* ---- allocation failure: fail the Nth allocation for N = 1, 2, ... ----
 * The test binary replaces malloc & co. (glibc allows it; the real ones are
 * __libc_*). Off under ASan/TSan, which bring their own allocator. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#include <stdatomic.h>
#define FAULTSIM 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static _Atomic long fault_at;    /* 0 = off, else fail the fault_at-th allocation */
static _Atomic long fault_count; /* allocations since armed */
static _Atomic long live;        /* allocations not yet freed */

static bool fault_now(void)
{
    return atomic_load(&fault_at) && atomic_fetch_add(&fault_count, 1) + 1 == fault_at;
}

void *malloc(size_t n)
{
    void *p = fault_now() ? NULL : __libc_malloc(n);
    if (p)
        live++;
    return p;
}

void *calloc(size_t a, size_t b)
{
    void *p = fault_now() ? NULL : __libc_calloc(a, b);
    if (p)
        live++;
    return p;
}

void *realloc(void *old, size_t n)
{
    if (old && n == 0) {
        live--;
        return __libc_realloc(old, 0);
    }
    void *p = fault_now() ? NULL : __libc_realloc(old, n);
    if (p && !old)
        live++;
    return p;
}

void *aligned_alloc(size_t align, size_t n)
{
    void *p = fault_now() ? NULL : __libc_memalign(align, n);
    if (p)
        live++;
    return p;
}

void free(void *p)
{
    if (p)
        live--;
    __libc_free(p);
}
#endif

#ifdef FAULTSIM
static bool ok_or_enomem(int rc)
{
    return rc == 0 || rc == -ENOMEM;
}

/* One pass over the API; every step either works or says -ENOMEM. */
static int fault_scenario(void)
{
    char err[ERR_LEN];
    metrics_registry_t *r = metrics_registry_new();
    if (!r)
        return 0;
    metrics_family_t *f = NULL;
    struct metrics_opts o = {.name = "fs_total",
                             .help = "h",
                             .label_names = (const char *const[]){"a", "b"},
                             .nlabels = 2,
                             .label_max_values = (const size_t[]){0, 2}};
    int rc = metrics_family_new(r, METRICS_COUNTER, &o, &f, err, sizeof err);
    if (!ok_or_enomem(rc))
        return 1;
    char v[8];
    for (int i = 0; f && i < 40; i++) { /* grows the hash table */
        snprintf(v, sizeof v, "%d", i);
        metrics_counter_t *c = NULL;
        rc = metrics_counter_get(f, (const char *const[]){v, v}, 2, &c, err, sizeof err);
        if (!ok_or_enomem(rc) || (rc == 0) != (c != NULL))
            return 2;
        metrics_counter_inc(c);
    }
    metrics_histogram_t *h = NULL;
    rc = metrics_histogram_new(r, "fs_seconds", "h", NULL, 0, &h, err, sizeof err);
    if (!ok_or_enomem(rc))
        return 3;
    metrics_histogram_observe(h, 0.3);
    rc = metrics_register_process(r, err, sizeof err);
    if (!ok_or_enomem(rc))
        return 4;
    char *s = NULL;
    rc = metrics_render_string(r, METRICS_FORMAT_OPENMETRICS, METRICS_RENDER_CREATED, &s, NULL, err,
                               sizeof err);
    if (!ok_or_enomem(rc) || (rc == 0 && !strstr(s, "# EOF\n")))
        return 5;
    free(s);
    metrics_registry_free(r);
    return 0;
}
#endif

TEST(allocation_failures)
{
#ifdef FAULTSIM
    long n;
    for (n = 1; n < 100000; n++) {
        long before = live;
        fault_count = 0;
        fault_at = n;
        int bad = fault_scenario();
        long used = fault_count;
        fault_at = 0;
        ASSERT_MSG(!bad, "allocation %ld failing: step %d gave something other than -ENOMEM", n,
                   bad);
        ASSERT_MSG(live == before, "allocation %ld failing: %ld allocations leaked", n,
                   live - before);
        if (used < n) /* nothing failed: every allocation point was covered */
            break;
    }
    ASSERT(n > 20);
#else
    test_skip("the allocator is the sanitizer's here");
#endif
}
