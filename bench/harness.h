/* harness.h - the timing harness every clearbox benchmark shares.
 *
 * A measurement runs the operation in a loop of n iterations, picks n so one
 * repetition takes about BENCH_REP_NS (a calibration pass that doubles as the
 * warm-up), then repeats BENCH_REPS times and keeps the best repetition: on a
 * shared machine noise only ever adds time, so the minimum is the figure least
 * disturbed by other processes. The median is kept too, for the curious.
 * BENCH_QUICK=1 in the environment makes repetitions shorter and fewer.
 *
 * Figures print as one line each, the shape bench/run reads:
 *     NAME VALUE ns/op (baseline NAME VALUE ns/op), target <= T ns: met
 * Threads: bench_measure runs fn on the calling thread; fn may start its own.
 * Errors: a failed setup is reported with bench_fail() (prints to stderr and
 * exits 1), since a benchmark that cannot measure must not print a figure. */
#ifndef CLEARBOX_BENCH_HARNESS_H
#define CLEARBOX_BENCH_HARNESS_H

#include <stdbool.h>
#include <stdint.h>

/* Keep the compiler from deleting work whose result nobody reads: the value
 * (or pointed-to memory) is treated as used, and memory as clobbered. */
#define BENCH_USE(x) __asm__ volatile("" : : "g"(x) : "memory")
#define BENCH_CLOBBER() __asm__ volatile("" : : : "memory")

/* Runs the operation n times. Returns 0, or a negative code to abort. */
typedef int (*bench_fn)(void *arg, uint64_t n);

struct bench_result {
    double best_ns;   /* best repetition, ns per operation */
    double median_ns; /* median repetition, ns per operation */
    uint64_t iters;   /* operations per repetition */
    int reps;
};

bool bench_quick(void);
/* Called from inside fn: leave ns out of the repetition being timed (setup
 * or draining that is not the operation, e.g. waiting for an exporter). */
void bench_exclude_ns(uint64_t ns);
/* Calibrate, warm up, then best-of-reps. Calls bench_fail if fn fails. */
struct bench_result bench_measure(const char *name, bench_fn fn, void *arg);
/* Like bench_measure with a fixed operation count per repetition (for
 * operations whose cost grows with the total, e.g. appending to a file). */
struct bench_result bench_measure_n(const char *name, bench_fn fn, void *arg, uint64_t n);

/* Print a figure line. target_ns <= 0: no target. Returns true if met. */
bool bench_report(const char *name, double ns, const char *base_name, double base_ns,
                  double target_ns);
/* The same with a target relative to the baseline: ns <= max_ratio * base_ns. */
bool bench_report_ratio(const char *name, double ns, const char *base_name, double base_ns,
                        double max_ratio);
/* Print a free-form note line (prefixed "# " so bench/run never reads it as a figure). */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t bench_now_ns(void); /* CLOCK_MONOTONIC */
_Noreturn void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
