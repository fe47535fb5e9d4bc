/* telemetry.c - see telemetry.h. Bucket layouts are chosen for what each
 * histogram measures (sandbox start in the millisecond range, evaluations in
 * seconds to minutes, memory in powers of two), not the client defaults. */
#include "telemetry/telemetry.h"

#include <errno.h>
#include <stdint.h>

#include "telemetry/log.h"
#include "telemetry/trace.h"
#include "util/err.h"

static const double seconds_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                         2.5,   5,    10,    30,   60,  120,  300};
static const double create_buckets[] = {0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
                                        0.01,   0.025, 0.05,  0.1,   0.25,  1};
static const double memory_buckets[] = {1 << 20,   4 << 20,   16 << 20,  32 << 20,
                                        64 << 20,  128 << 20, 256 << 20, 512 << 20,
                                        1ULL << 30, 2ULL << 30, 4ULL << 30, 8ULL << 30};

static struct telemetry_std g_std;
static bool g_ready; /* the metric families are registered */
static bool g_init;  /* telemetry_init succeeded */

static int family(metrics_registry_t *reg, enum metrics_type type, const char *name,
                  const char *help, const char *unit, const char *const *labels, size_t nlabels,
                  const double *buckets, size_t nbuckets, const size_t *maxv,
                  metrics_family_t **out, char *err, size_t errlen)
{
    struct metrics_opts o = {.name = name,
                             .help = help,
                             .unit = unit,
                             .label_names = labels,
                             .nlabels = nlabels,
                             .buckets = buckets,
                             .nbuckets = nbuckets,
                             .label_max_values = maxv};
    return metrics_family_new(reg, type, &o, out, err, errlen);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int histogram(metrics_registry_t *reg, const char *name, const char *help,
                     const char *unit, const double *b, size_t nb, metrics_histogram_t **out,
                     char *err, size_t errlen)
{
    metrics_family_t *f;
    TRY(family(reg, METRICS_HISTOGRAM, name, help, unit, NULL, 0, b, nb, NULL, &f, err, errlen));
    return metrics_histogram_get(f, NULL, 0, out, err, errlen);
}

/* Spans that never reached the backend: dropped at a full queue, or in a
 * batch whose export failed after its retries. */
static double dropped_traces(void *arg)
{
    return (double)(trace_dropped_total() + trace_export_failed_total());
}
static double dropped_logs(void *arg) { return (double)log_write_errors(); }

int telemetry_metrics_register(metrics_registry_t *reg, size_t submitters_max,
                               struct telemetry_std *o, char *err, size_t errlen)
{
    static const char *const status_language[] = {"status", "language"};
    static const char *const reason[] = {"reason"};
    static const char *const language[] = {"language"};
    static const char *const language_submitter[] = {"language", "submitter"};
    static const char *const signal[] = {"signal"};
    size_t cost_max[2] = {0, submitters_max ? submitters_max : TELEMETRY_SUBMITTERS_MAX_DEFAULT};
    metrics_family_t *f;

    o->reg = reg;
    TRY(family(reg, METRICS_COUNTER, "clearbox_evaluations_total",
               "Evaluations that reached a terminal status, by status and language", NULL,
               status_language, 2, NULL, 0, NULL, &o->evaluations, err, errlen));
    TRY(histogram(reg, "clearbox_evaluation_duration_seconds",
                  "Wall-clock time of an evaluation from sandbox start to end", "seconds",
                  seconds_buckets, N(seconds_buckets), &o->evaluation_duration, err, errlen));
    TRY(family(reg, METRICS_GAUGE, "clearbox_queue_depth", "Evaluations waiting in the queue",
               NULL, NULL, 0, NULL, 0, NULL, &f, err, errlen));
    TRY(metrics_gauge_get(f, NULL, 0, &o->queue_depth, err, errlen));
    TRY(histogram(reg, "clearbox_queue_wait_seconds",
                  "Time from submit to a worker starting the evaluation (event processing lag)",
                  "seconds", seconds_buckets, N(seconds_buckets), &o->queue_wait, err, errlen));
    TRY(histogram(reg, "clearbox_sandbox_create_seconds",
                  "Time to create a sandbox (namespaces, cgroup, rootfs, filter)", "seconds",
                  create_buckets, N(create_buckets), &o->sandbox_create, err, errlen));
    TRY(family(reg, METRICS_COUNTER, "clearbox_sandbox_create_failures_total",
               "Sandboxes that could not be created, by reason", NULL, reason, 1, NULL, 0, NULL,
               &o->sandbox_create_failures, err, errlen));
    TRY(histogram(reg, "clearbox_evaluation_cpu_seconds",
                  "CPU time (user + system) used by one evaluation, from its cgroup", "seconds",
                  seconds_buckets, N(seconds_buckets), &o->evaluation_cpu, err, errlen));
    TRY(histogram(reg, "clearbox_evaluation_memory_peak_bytes",
                  "Peak memory of one evaluation, from its cgroup", "bytes", memory_buckets,
                  N(memory_buckets), &o->evaluation_memory_peak, err, errlen));
    TRY(family(reg, METRICS_COUNTER, "clearbox_security_events_total",
               "Security audit events (network attempts, blocked syscalls, limits), by reason",
               NULL, reason, 1, NULL, 0, NULL, &o->security_events, err, errlen));
    TRY(family(reg, METRICS_COUNTER, "clearbox_evaluations_with_security_events_total",
               "Evaluations that produced at least one security event, by language (with "
               "clearbox_evaluations_total: the share of evaluations with events)",
               NULL, language, 1, NULL, 0, NULL, &o->evaluations_flagged, err, errlen));
    TRY(family(reg, METRICS_COUNTER, "clearbox_cost_cents_total",
               "Estimated cost of evaluations in cents, by language and submitter (submitters "
               "past the configured bound fold into \"other\")",
               NULL, language_submitter, 2, NULL, 0, cost_max, &o->cost_cents, err, errlen));
    TRY(family(reg, METRICS_COUNTER, "clearbox_telemetry_dropped_total",
               "Telemetry items lost: spans dropped at a full export queue or whose export "
               "failed after retries, log lines that could not be written",
               NULL, signal, 1, NULL, 0, NULL, &o->telemetry_dropped, err, errlen));
    TRY(metrics_counter_func(o->telemetry_dropped, (const char *const[]){"traces"}, 1,
                             dropped_traces, NULL, err, errlen));
    TRY(metrics_counter_func(o->telemetry_dropped, (const char *const[]){"logs"}, 1,
                             dropped_logs, NULL, err, errlen));
    return 0;
}

int telemetry_init(const struct telemetry_options *opts, char *err, size_t errlen)
{
    struct telemetry_options none = {0};
    if (!opts)
        opts = &none;
    if (g_init)
        return err_set(err, errlen, -EALREADY, "telemetry is already initialised");
    if (!opts->no_metrics) {
        metrics_registry_t *reg = metrics_default();
        if (!reg)
            return err_set(err, errlen, -ENOMEM, "out of memory for the metrics registry");
        TRY(telemetry_metrics_register(reg, opts->submitters_max, &g_std, err, errlen));
        if (!opts->no_process_metrics)
            TRY(metrics_register_process(reg, err, errlen));
        g_ready = true;
    }
    struct trace_options to = {.file_path = opts->trace_file};
    TRY(trace_init(&to, err, errlen));
    g_init = true;
    return 0;
}

const struct telemetry_std *telemetry_std(void) { return g_ready ? &g_std : NULL; }

void telemetry_shutdown(void)
{
    trace_shutdown();
    log_shutdown();
}
