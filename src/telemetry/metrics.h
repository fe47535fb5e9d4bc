/* metrics.h - counters, gauges and histograms with labels, exposed as
 * Prometheus text 0.0.4 or OpenMetrics 1.0.
 *
 * Model: a registry holds families (one metric name, help, type, label names);
 * a family holds series, one per tuple of label values, made on first use.
 * Handles (registry, family, series) stay valid until metrics_registry_free().
 * The default registry (metrics_default()) lives until the process exits.
 *
 * Threads: metrics_counter_inc/_add/_add_f, metrics_gauge_* and
 *   metrics_histogram_observe are safe from any thread, never block, never
 *   allocate and take no lock (striped, cache-line padded atomics; a counter
 *   or histogram series keeps one stripe per CPU slot and sums them when
 *   rendered). Making families and series, and rendering, take a mutex.
 *   Every update function accepts a NULL series and does nothing, so a failed
 *   lookup never crashes an instrumented path.
 *
 * Errors: 0 or a negative errno: -EINVAL (bad name, empty help, bad label
 *   count, type mismatch, bad buckets), -EEXIST (a family or function series
 *   that would expose a name/series already there), -ENOMEM, -E2BIG (render
 *   buffer full). The message goes to the caller's err buffer (may be NULL). On
 *   failure nothing was registered. Never prints.
 *
 * Names: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 *   [a-zA-Z_][a-zA-Z0-9_]* and must not start with "__"; "le" is reserved
 *   for histograms, "quantile" always. A counter may be named with or without
 *   "_total"; its samples are always exposed as <base>_total (OpenMetrics
 *   family name <base>). A unit, if given, must be the name's last component
 *   (before "_total"): name "clearbox_queue_wait_seconds", unit "seconds".
 *
 * Untrusted label values: values longer than METRICS_LABEL_VALUE_MAX bytes are
 *   cut (at a UTF-8 boundary); invalid UTF-8 becomes U+FFFD. A family bounds
 *   its series (max_series, default METRICS_MAX_SERIES_DEFAULT) and may bound
 *   the distinct values of single labels (label_max_values): past a bound the
 *   new value (for a family bound: every value of the tuple) becomes
 *   METRICS_OTHER ("other"), and that series is always allowed. */
#ifndef CLEARBOX_TELEMETRY_METRICS_H
#define CLEARBOX_TELEMETRY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define METRICS_CONTENT_TYPE_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_CONTENT_TYPE_OPENMETRICS                                                           \
    "application/openmetrics-text; version=1.0.0; charset=utf-8"

#define METRICS_NAME_MAX 200        /* metric and label name length */
#define METRICS_LABELS_MAX 16       /* label names per family */
#define METRICS_LABEL_VALUE_MAX 256 /* bytes kept of one label value */
#define METRICS_BUCKETS_MAX 64      /* histogram upper bounds (without +Inf) */
#define METRICS_MAX_SERIES_DEFAULT 10000
#define METRICS_OTHER "other"

typedef struct metrics_registry metrics_registry_t;
typedef struct metrics_family metrics_family_t;
typedef struct metrics_counter metrics_counter_t;
typedef struct metrics_gauge metrics_gauge_t;
typedef struct metrics_histogram metrics_histogram_t;

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };
enum metrics_format { METRICS_FORMAT_TEXT, METRICS_FORMAT_OPENMETRICS };

/* Render flags. METRICS_RENDER_CREATED: OpenMetrics adds <name>_created
 * samples (counters, histograms); the text format ignores it. */
#define METRICS_RENDER_CREATED 0x1u

/* Prometheus client defaults. */
extern const double metrics_default_buckets[11]; /* .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 */

/* What a family is. Strings are copied; arrays are copied. */
struct metrics_opts {
    const char *name;               /* required */
    const char *help;               /* required, non-empty (promtool lints empty
                                       help), any UTF-8, escaped on output */
    const char *unit;               /* optional OpenMetrics unit ("seconds", "bytes") */
    const char *const *label_names; /* nlabels names, NULL when nlabels == 0 */
    size_t nlabels;                 /* <= METRICS_LABELS_MAX */
    const double *buckets;          /* histograms: strictly increasing, finite upper
                                       bounds, +Inf implied; NULL = default buckets */
    size_t nbuckets;                /* <= METRICS_BUCKETS_MAX */
    size_t max_series;              /* 0 = METRICS_MAX_SERIES_DEFAULT */
    const size_t *label_max_values; /* NULL, or nlabels entries: distinct values
                                       kept per label before folding; 0 = unbounded */
};

/* ---- registries ---- */

/* A new empty registry; NULL on allocation failure. */
metrics_registry_t *metrics_registry_new(void);
/* Frees the registry, its families and series; every handle from it dies. */
void metrics_registry_free(metrics_registry_t *reg);
/* The process-wide registry (made on first call, never freed). Never NULL
 * unless memory ran out on the first call. */
metrics_registry_t *metrics_default(void);

/* ---- families ---- */

/* Register a family of the given type. *out receives the handle. */
int metrics_family_new(metrics_registry_t *reg, enum metrics_type type,
                       const struct metrics_opts *opts, metrics_family_t **out, char *err,
                       size_t errlen);

/* Shortcuts for a family without labels: register it and return its single
 * series. buckets may be NULL (defaults). */
int metrics_counter_new(metrics_registry_t *reg, const char *name, const char *help,
                        metrics_counter_t **out, char *err, size_t errlen);
int metrics_gauge_new(metrics_registry_t *reg, const char *name, const char *help,
                      metrics_gauge_t **out, char *err, size_t errlen);
int metrics_histogram_new(metrics_registry_t *reg, const char *name, const char *help,
                          const double *buckets, size_t nbuckets, metrics_histogram_t **out,
                          char *err, size_t errlen);

/* ---- series ---- */

/* The series for one tuple of label values (exactly the family's label count;
 * values NULL when it has none), made on first use (after folding, see top).
 * -EINVAL for a wrong count, a NULL value or a family of another type;
 * -EEXIST if the tuple is a function-backed series. */
int metrics_counter_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                        metrics_counter_t **out, char *err, size_t errlen);
int metrics_gauge_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                      metrics_gauge_t **out, char *err, size_t errlen);
int metrics_histogram_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                          metrics_histogram_t **out, char *err, size_t errlen);

/* Same, counting the values for you and returning NULL on any error:
 *   metrics_counter_inc(metrics_counter_labels(fam, "completed", "python"));
 * A lookup hashes the values and takes the family's mutex (~50-100 ns):
 * keep the handle when the label values are fixed. */
#define METRICS__VALUES(...)                                                                       \
    (const char *const[])                                                                          \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define METRICS__NVALUES(...) (sizeof(METRICS__VALUES(__VA_ARGS__)) / sizeof(const char *))
#define metrics_counter_labels(fam, ...)                                                           \
    metrics__counter_labels((fam), METRICS__VALUES(__VA_ARGS__), METRICS__NVALUES(__VA_ARGS__))
#define metrics_gauge_labels(fam, ...)                                                             \
    metrics__gauge_labels((fam), METRICS__VALUES(__VA_ARGS__), METRICS__NVALUES(__VA_ARGS__))
#define metrics_histogram_labels(fam, ...)                                                         \
    metrics__histogram_labels((fam), METRICS__VALUES(__VA_ARGS__), METRICS__NVALUES(__VA_ARGS__))
metrics_counter_t *metrics__counter_labels(metrics_family_t *fam, const char *const *v, size_t n);
metrics_gauge_t *metrics__gauge_labels(metrics_family_t *fam, const char *const *v, size_t n);
metrics_histogram_t *metrics__histogram_labels(metrics_family_t *fam, const char *const *v,
                                               size_t n);

/* A series whose value is read by fn(arg) each time the registry is rendered
 * (counter or gauge families only). fn runs under the registry's render lock,
 * must be thread-safe with respect to its own data and must not call back
 * into this registry. A NaN result is exposed as NaN. */
typedef double (*metrics_value_fn)(void *arg);
int metrics_counter_func(metrics_family_t *fam, const char *const *values, size_t nvalues,
                         metrics_value_fn fn, void *arg, char *err, size_t errlen);
int metrics_gauge_func(metrics_family_t *fam, const char *const *values, size_t nvalues,
                       metrics_value_fn fn, void *arg, char *err, size_t errlen);

/* ---- updates: lock-free, allocation-free, NULL-tolerant ---- */

void metrics_counter_inc(metrics_counter_t *c);
void metrics_counter_add(metrics_counter_t *c, uint64_t n); /* integer fast path */
void metrics_counter_add_f(metrics_counter_t *c, double v); /* v < 0 or NaN: ignored */

void metrics_gauge_set(metrics_gauge_t *g, double v);
void metrics_gauge_add(metrics_gauge_t *g, double v); /* v may be negative */
void metrics_gauge_inc(metrics_gauge_t *g);
void metrics_gauge_dec(metrics_gauge_t *g);

void metrics_histogram_observe(metrics_histogram_t *h, double v); /* NaN counts in +Inf */

/* Current values (sums over stripes), for tests and for code that reads back. */
double metrics_counter_value(const metrics_counter_t *c);
double metrics_gauge_value(const metrics_gauge_t *g);
/* Per-bucket (non-cumulative) counts: counts[0..nbuckets] (last = above the
 * highest bound); returns nbuckets + 1 (entries written, up to ncounts) and
 * stores the sum of observations in *sum (may be NULL). */
size_t metrics_histogram_read(const metrics_histogram_t *h, uint64_t *counts, size_t ncounts,
                              double *sum);

/* ---- exposition ---- */

/* Append the whole registry to out in the given format (families in
 * registration order, series in creation order). On -E2BIG/-ENOMEM out holds
 * a cut document the caller must not serve. */
int metrics_render(metrics_registry_t *reg, enum metrics_format fmt, unsigned flags,
                   struct buf *out, char *err, size_t errlen);
/* Same into a malloc'd NUL-terminated string the caller frees; *len may be NULL. */
int metrics_render_string(metrics_registry_t *reg, enum metrics_format fmt, unsigned flags,
                          char **out, size_t *len, char *err, size_t errlen);
/* Content-Type header value for a format. */
const char *metrics_content_type(enum metrics_format fmt);
/* Choose a format from an HTTP Accept header (NULL = text): OpenMetrics when
 * the client accepts application/openmetrics-text with a q-value at least as
 * high as text/plain's, else text. */
enum metrics_format metrics_format_negotiate(const char *accept);

/* ---- process metrics ---- */

/* Register process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds as function-backed series read from /proc/self
 * at render time (a value that cannot be read is exposed as NaN).
 * -EEXIST if already registered in reg. */
int metrics_register_process(metrics_registry_t *reg, char *err, size_t errlen);

#endif
