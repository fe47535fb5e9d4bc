/* telemetry.h - one place that sets up every signal for a clearbox process
 * and holds the metric families DESIGN.md names, so the sandbox, the service
 * and the CLI record the same series under the same names.
 *
 *   telemetry_init(&opts, err, errlen);     once, early in main, after log_setup
 *   const struct telemetry_std *t = telemetry_std();
 *   metrics_counter_inc(metrics_counter_labels(t->evaluations, "completed", "python"));
 *   telemetry_shutdown();                   flushes traces (bounded), at exit
 *
 * Threads: init and shutdown run once from main; telemetry_std() and the
 * handles in it are safe from any thread afterwards (metrics.h rules).
 * Errors: telemetry_init returns 0 or a negative errno with the words in err
 * (a bad OTEL_* setting, a trace file that cannot be opened); on error nothing
 * is exported but logging and metrics still work, so a caller may go on. */
#ifndef CLEARBOX_TELEMETRY_TELEMETRY_H
#define CLEARBOX_TELEMETRY_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>

#include "telemetry/metrics.h"

#define TELEMETRY_SUBMITTERS_MAX_DEFAULT 100 /* distinct submitter label values */

struct telemetry_options {
    const char *trace_file;   /* --trace-file: OTLP JSON lines, or NULL */
    size_t submitters_max;    /* 0 = TELEMETRY_SUBMITTERS_MAX_DEFAULT */
    bool no_process_metrics;  /* leave out process_* (tests registering twice) */
    bool no_metrics;          /* no registry at all: telemetry_std() stays NULL and
                                 the engine records nothing (`clearbox run` without
                                 --metrics-file, where nobody would read it: the
                                 families cost ~0.07 ms of every start) */
};

/* DESIGN.md's metric set. Families with labels are families; the others are
 * their single series. */
struct telemetry_std {
    metrics_registry_t *reg;
    metrics_family_t *evaluations;               /* clearbox_evaluations_total{status,language} */
    metrics_histogram_t *evaluation_duration;    /* clearbox_evaluation_duration_seconds */
    metrics_gauge_t *queue_depth;                /* clearbox_queue_depth */
    metrics_histogram_t *queue_wait;             /* clearbox_queue_wait_seconds */
    metrics_histogram_t *sandbox_create;         /* clearbox_sandbox_create_seconds */
    metrics_family_t *sandbox_create_failures;   /* ..._sandbox_create_failures_total{reason} */
    metrics_histogram_t *evaluation_cpu;         /* clearbox_evaluation_cpu_seconds */
    metrics_histogram_t *evaluation_memory_peak; /* clearbox_evaluation_memory_peak_bytes */
    metrics_family_t *security_events;           /* clearbox_security_events_total{reason} */
    metrics_family_t *evaluations_flagged;       /* ..._with_security_events_total{language} */
    metrics_family_t *cost_cents;                /* clearbox_cost_cents_total{language,submitter} */
    metrics_family_t *telemetry_dropped;         /* clearbox_telemetry_dropped_total{signal} */
};

/* Register the standard families in reg (any registry: tests use their own).
 * -EEXIST if they are already there. */
int telemetry_metrics_register(metrics_registry_t *reg, size_t submitters_max,
                               struct telemetry_std *out, char *err, size_t errlen);

/* Tracing from the OTEL_* environment (+ opts->trace_file), the standard
 * families and process_* metrics in metrics_default(). */
int telemetry_init(const struct telemetry_options *opts, char *err, size_t errlen);
/* The families registered by telemetry_init (NULL before it ran). */
const struct telemetry_std *telemetry_std(void);
void telemetry_shutdown(void);

#endif
