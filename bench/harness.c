/* harness.c - calibration, best-of-N timing and figure lines for the
 * benchmarks (see harness.h). */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_REPS 7
#define BENCH_REPS_QUICK 3
#define BENCH_REP_NS 100000000ull      /* 100 ms per repetition */
#define BENCH_REP_NS_QUICK 10000000ull /* 10 ms */
#define BENCH_MAX_ITERS (1ull << 32)

bool bench_quick(void)
{
    const char *q = getenv("BENCH_QUICK");
    return q && strcmp(q, "1") == 0;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void bench_note(const char *fmt, ...)
{
    va_list ap;
    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static uint64_t excluded_ns;

void bench_exclude_ns(uint64_t ns) { excluded_ns += ns; }

static uint64_t time_run(const char *name, bench_fn fn, void *arg, uint64_t n)
{
    excluded_ns = 0;
    uint64_t t0 = bench_now_ns();
    int rc = fn(arg, n);
    uint64_t dt = bench_now_ns() - t0;
    dt = dt > excluded_ns ? dt - excluded_ns : 0;
    if (rc < 0)
        bench_fail("%s: the operation failed (code %d)", name, rc);
    return dt ? dt : 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static struct bench_result best_of(const char *name, bench_fn fn, void *arg, uint64_t n)
{
    struct bench_result r = {.iters = n, .reps = bench_quick() ? BENCH_REPS_QUICK : BENCH_REPS};
    double per[BENCH_REPS];
    for (int i = 0; i < r.reps; i++)
        per[i] = (double)time_run(name, fn, arg, n) / (double)n;
    qsort(per, (size_t)r.reps, sizeof per[0], cmp_double);
    r.best_ns = per[0];
    r.median_ns = per[r.reps / 2];
    return r;
}

struct bench_result bench_measure(const char *name, bench_fn fn, void *arg)
{
    uint64_t want = bench_quick() ? BENCH_REP_NS_QUICK : BENCH_REP_NS;
    uint64_t n = 16, dt;
    /* Calibration is also the warm-up: caches, branch predictors, lazily
     * mapped pages and first-use allocations are all settled by the end. */
    for (;;) {
        dt = time_run(name, fn, arg, n);
        if (dt >= want / 4 || n >= BENCH_MAX_ITERS)
            break;
        n *= dt < want / 64 ? 8 : 2;
    }
    double scaled = (double)n * (double)want / (double)dt;
    n = scaled < 16 ? 16 : scaled > (double)BENCH_MAX_ITERS ? BENCH_MAX_ITERS : (uint64_t)scaled;
    time_run(name, fn, arg, n); /* one full-length warm-up repetition */
    return best_of(name, fn, arg, n);
}

struct bench_result bench_measure_n(const char *name, bench_fn fn, void *arg, uint64_t n)
{
    time_run(name, fn, arg, n / 4 ? n / 4 : 1); /* warm-up */
    return best_of(name, fn, arg, n ? n : 1);
}

bool bench_report(const char *name, double ns, const char *base_name, double base_ns,
                  double target_ns)
{
    bool met = target_ns <= 0 || ns <= target_ns;
    printf("%s %.1f ns/op (baseline %s %.1f ns/op)", name, ns, base_name, base_ns);
    if (target_ns > 0)
        printf(", target <= %.0f ns: %s", target_ns, met ? "met" : "MISSED");
    putchar('\n');
    fflush(stdout);
    return met;
}

bool bench_report_ratio(const char *name, double ns, const char *base_name, double base_ns,
                        double max_ratio)
{
    bool met = ns <= max_ratio * base_ns;
    printf("%s %.1f ns/op (baseline %s %.1f ns/op), target <= %.2fx baseline: %s\n", name, ns,
           base_name, base_ns, max_ratio, met ? "met" : "MISSED");
    fflush(stdout);
    return met;
}
