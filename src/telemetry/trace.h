/* trace.h - OpenTelemetry-compatible tracing: spans, W3C Trace Context, a
 * sampler, a batch span processor and OTLP export (see otlp.h, docs/tracing.md).
 *
 *     trace_span_t *sp = trace_span_start("evaluation.execute", TRACE_KIND_INTERNAL, NULL);
 *     trace_span_set_str(sp, "eval_id", id);
 *     struct trace_scope sc;
 *     trace_span_make_current(sp, &sc);   // logs now carry trace_id/span_id
 *     ...                                 // child spans started with parent NULL nest here
 *     trace_span_restore(&sc);
 *     trace_span_end(sp);                 // enqueued for export, never blocks
 *
 * Ids: 128-bit trace ids and 64-bit span ids from rand_id(), never all zero.
 * Every span has valid ids and propagates, sampled or not; only sampled spans
 * (flags bit 0) are recorded and exported.
 *
 * Lifecycle: trace_init() once in main (reads the OTEL_* environment, starts the
 * export thread when an exporter is configured); trace_shutdown() at the end
 * flushes and stops it. Spans may be started before trace_init() or without it:
 * they get ids and propagate, and are not exported.
 *
 * Ownership: trace_span_start() returns a handle owned by the caller until
 * trace_span_end(), which gives it back (the handle is invalid afterwards).
 * Every trace_span_* function accepts NULL and then does nothing, so callers
 * need not check. Strings passed in are copied (cut at the bounds below).
 *
 * Threads: a span is used by one thread at a time (hand it over, don't share).
 * Start and end are safe from any thread and do not block: end copies the span
 * into the calling thread's record ring and puts it on a bounded queue
 * (OTEL_BSP_MAX_QUEUE_SIZE); when the queue is full the span is dropped and
 * counted in trace_dropped_total(). The ring holds (queue + batch size) x 384
 * bytes, rounded up to a power of two (1 MiB by default; it stays allocated
 * while the thread lives, then passes to the next thread): a span that finds
 * it full (very large spans, or an exporter far behind) is dropped and
 * counted the same way. The current span is per thread (telemetry__current
 * in context.h) and nests: make_current saves the previous value, restore
 * puts it back (strict LIFO per thread; a span made current must be restored
 * before it ends). trace_init/trace_shutdown run once from main, not
 * concurrently with other calls to themselves. A child made by fork() must
 * not use tracing before exec (locks may be held by the parent's export
 * thread).
 *
 * A failed export is counted (trace_export_failed_total) and logged as a
 * "trace.export_failed" warning, at most once per 30 s.
 * Errors: 0 or a negative errno with words in err (util/err.h). The span API
 * never fails visibly: past a bound, data is dropped and counted in the span's
 * dropped_* counts (exported as OTLP dropped_attributes_count etc.). */
#ifndef CLEARBOX_TELEMETRY_TRACE_H
#define CLEARBOX_TELEMETRY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "telemetry/context.h"

/* Bounds on what one span holds (untrusted values may end up in attributes). */
#define TRACE_NAME_MAX 128       /* bytes of a span or event name */
#define TRACE_KEY_MAX 128        /* bytes of an attribute key */
#define TRACE_VALUE_MAX 1024     /* bytes of a string attribute value */
#define TRACE_ATTR_MAX 32        /* attributes on a span */
#define TRACE_EVENT_MAX 16       /* events on a span */
#define TRACE_EVENT_ATTR_MAX 32  /* attributes over all events of a span */
#define TRACE_STATUS_MSG_MAX 256 /* bytes of a status description */
#define TRACE_ARENA_BYTES 6144   /* string storage per span */

/* W3C Trace Context bounds. */
#define TRACE_TRACEPARENT_LEN 55   /* "00-<32 hex>-<16 hex>-<2 hex>" */
#define TRACE_STATE_MAX 512        /* bytes of tracestate kept */
#define TRACE_STATE_MEMBERS_MAX 32 /* list-members in tracestate */

#define TRACE_FLAG_SAMPLED 0x01

/* Values equal the OTLP enum values (SpanKind, Status.StatusCode). */
enum trace_span_kind {
    TRACE_KIND_INTERNAL = 1,
    TRACE_KIND_SERVER = 2,
    TRACE_KIND_CLIENT = 3,
    TRACE_KIND_PRODUCER = 4,
    TRACE_KIND_CONSUMER = 5,
};

enum trace_status {
    TRACE_STATUS_UNSET = 0,
    TRACE_STATUS_OK = 1,
    TRACE_STATUS_ERROR = 2,
};

/* A span context: what crosses process boundaries (traceparent + tracestate). */
struct trace_context {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;                        /* W3C trace-flags; bit 0 sampled */
    bool remote;                          /* parsed from a traceparent */
    char tracestate[TRACE_STATE_MAX + 1]; /* validated, "" if none */
};

typedef struct trace_span trace_span_t;

/* ---- configuration and lifecycle ------------------------------------- */

enum trace_sampler {
    TRACE_SAMPLER_PARENTBASED_ALWAYS_ON = 0, /* the default */
    TRACE_SAMPLER_ALWAYS_ON,
    TRACE_SAMPLER_ALWAYS_OFF,
    TRACE_SAMPLER_TRACEIDRATIO,
    TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF,
    TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO,
};

/* Options main() may add to what the environment says. */
struct trace_options {
    const char *file_path; /* also write OTLP JSON lines here (--trace-file), or NULL */
    bool no_env_exporter;  /* ignore OTEL_EXPORTER_OTLP_* (only the file) */
};

/* Read OTEL_SDK_DISABLED, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_SERVICE_NAME,
 * OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_* (see docs/tracing.md), set up
 * the exporters and start the export thread if there is one. opts may be NULL.
 * Errors: -EINVAL for a configuration that cannot work (grpc protocol, a bad
 * endpoint URL), -EALREADY if already initialised, -EIO for a trace file that
 * cannot be opened (the reason is in err). On error nothing is started. */
int trace_init(const struct trace_options *opts, char *err, size_t errlen);

/* Export everything ended so far; waits up to timeout_ms. 0 when the queue
 * drained and the last export finished, -ETIMEDOUT otherwise. */
int trace_flush(uint64_t timeout_ms);

/* Flush (bounded by the export timeout), stop the export thread, close the
 * exporters. Spans ended afterwards are not exported. Safe to call twice. */
void trace_shutdown(void);

/* Spans dropped because the queue or the thread's record ring was full (or
 * no memory could be had for the span). */
uint64_t trace_dropped_total(void);
/* Spans handed to an exporter successfully / that failed to export. */
uint64_t trace_exported_total(void);
uint64_t trace_export_failed_total(void);

/* True when trace_init ran with an exporter and the SDK is not disabled. */
bool trace_exporting(void);

/* The sampler in effect (for `clearbox` diagnostics and tests). */
enum trace_sampler trace_sampler_get(double *ratio);

/* The sampling decision alone (pure function; tests and trace_span_start use it).
 * parent may be NULL (root span). Returns true to sample. */
bool trace_sampler_decide(enum trace_sampler s, double ratio, const struct trace_context *parent,
                          const uint8_t trace_id[16]);

/* Parse a sampler name as in OTEL_TRACES_SAMPLER; 0 or -EINVAL (unknown,
 * including the jaeger/xray samplers, which clearbox does not implement). */
int trace_sampler_parse(const char *name, enum trace_sampler *out);

/* ---- spans ------------------------------------------------------------ */

/* Start a span. parent: an explicit parent context (remote or local), or NULL
 * for the calling thread's current span, or a new trace when none is current.
 * Never returns NULL except when no memory could be had for the span (then
 * every call taking the NULL does nothing and the drop is counted). */
trace_span_t *trace_span_start(const char *name, enum trace_span_kind kind,
                               const struct trace_context *parent);

#define TRACE_START_ROOT 0x1 /* ignore the current span: start a new trace */

/* The same with a start time (0 = now; wall-clock ns since the epoch, as from
 * time_now_ns(), e.g. to cover a wait that began earlier) and flags. */
trace_span_t *trace_span_start_at(const char *name, enum trace_span_kind kind,
                                  const struct trace_context *parent, uint64_t start_ns,
                                  unsigned flags);

void trace_span_set_str(trace_span_t *sp, const char *key, const char *val);
void trace_span_set_strn(trace_span_t *sp, const char *key, const char *val, size_t n);
void trace_span_set_int(trace_span_t *sp, const char *key, int64_t val);
void trace_span_set_double(trace_span_t *sp, const char *key, double val);
void trace_span_set_bool(trace_span_t *sp, const char *key, bool val);

enum trace_attr_type { TRACE_ATTR_STR, TRACE_ATTR_INT, TRACE_ATTR_DOUBLE, TRACE_ATTR_BOOL };

/* An attribute given by the caller (events), built with the macros below. */
struct trace_attr {
    const char *key;
    enum trace_attr_type type;
    union {
        const char *s;
        int64_t i;
        double d;
        bool b;
    } v;
};
#define TRACE_STR(k, val) ((struct trace_attr){.key = (k), .type = TRACE_ATTR_STR, .v.s = (val)})
#define TRACE_INT(k, val)                                                                          \
    ((struct trace_attr){.key = (k), .type = TRACE_ATTR_INT, .v.i = (int64_t)(val)})
#define TRACE_DOUBLE(k, val)                                                                       \
    ((struct trace_attr){.key = (k), .type = TRACE_ATTR_DOUBLE, .v.d = (double)(val)})
#define TRACE_BOOL(k, val) ((struct trace_attr){.key = (k), .type = TRACE_ATTR_BOOL, .v.b = (val)})

/* Add an event (time 0 = now) with n attributes. */
void trace_span_add_event(trace_span_t *sp, const char *name, uint64_t time_ns,
                          const struct trace_attr *attrs, size_t n);

/* Set the status; msg is kept only for TRACE_STATUS_ERROR (per OTel). OK is
 * final: a later ERROR or UNSET does not override it. */
void trace_span_set_status(trace_span_t *sp, enum trace_status st, const char *msg);

/* End now / at end_ns (wall-clock ns). The handle is invalid afterwards. */
void trace_span_end(trace_span_t *sp);
void trace_span_end_at(trace_span_t *sp, uint64_t end_ns);

/* The span's own context (to propagate, or as an explicit parent). */
void trace_span_context(const trace_span_t *sp, struct trace_context *out);
bool trace_span_is_sampled(const trace_span_t *sp);

/* ---- current span (per thread) ----------------------------------------- */

struct trace_scope {
    struct telemetry_span_ref prev;
    trace_span_t *prev_span;
};

/* Make sp the calling thread's current span (sets telemetry__current, which
 * the logger reads); the previous one is saved in *scope. sp NULL makes "no
 * span" current. */
void trace_span_make_current(trace_span_t *sp, struct trace_scope *scope);
/* Put back what was current before the matching make_current. */
void trace_span_restore(struct trace_scope *scope);

/* The current span's context; false (out zeroed) when no span is current. */
bool trace_current_context(struct trace_context *out);

/* ---- W3C Trace Context ------------------------------------------------ */

/* Parse a traceparent header value (s, n bytes; surrounding spaces/tabs are
 * ignored). Version 00 must be exactly 55 bytes; a higher version (not ff)
 * may carry more after a '-' (the spec's forward-compatibility rule). Lowercase
 * hex only; all-zero ids, version ff and malformed values give -EINVAL and
 * leave out untouched. On success out->tracestate is "" and out->remote true. */
int trace_traceparent_parse(const char *s, size_t n, struct trace_context *out);

/* Write "00-<trace-id>-<span-id>-<flags>" and a NUL (56 bytes); returns 55. */
size_t trace_traceparent_format(const struct trace_context *ctx,
                                char out[TRACE_TRACEPARENT_LEN + 1]);

/* Validate a tracestate header value (list-members key=value, at most 32,
 * whole value at most 512 bytes after trimming) and copy it, normalised
 * (spaces around members and empty members removed), into out. -EINVAL for an
 * invalid value (out = ""): per W3C the traceparent is still used. */
int trace_tracestate_parse(const char *s, size_t n, char out[TRACE_STATE_MAX + 1]);

/* traceparent + optional tracestate (may be NULL) in one call: 0 or -EINVAL
 * (invalid traceparent); an invalid tracestate is dropped silently. */
int trace_context_from_headers(const char *traceparent, const char *tracestate,
                               struct trace_context *out);

/* A context with a valid (non-zero) trace id and span id. */
bool trace_context_is_valid(const struct trace_context *ctx);

/* ---- for exporters (otlp.c) and tests ----------------------------------- */

/* A read-only view of a span, valid during an export call (exporters see a
 * copy taken at end) or, from trace_span_data(), until the span ends. Strings
 * point into the span's storage and are NUL-terminated. */
struct trace_attr_data {
    const char *key;
    enum trace_attr_type type;
    uint16_t event; /* for event attributes: index of the event */
    uint32_t len;   /* string length for TRACE_ATTR_STR */
    union {
        const char *s;
        int64_t i;
        double d;
        bool b;
    } v;
};

struct trace_event_data {
    const char *name;
    uint64_t time_ns;
    uint32_t dropped_attrs;
};

struct trace_span_data {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* all zero for a root span */
    bool has_parent;
    bool parent_remote;
    uint8_t flags;
    enum trace_span_kind kind;
    const char *name;
    const char *tracestate; /* "" if none */
    uint64_t start_ns, end_ns;
    enum trace_status status;
    const char *status_msg;              /* "" if none */
    const struct trace_attr_data *attrs; /* span attributes */
    uint32_t nattrs;
    uint32_t dropped_attrs;
    const struct trace_event_data *events;
    uint32_t nevents;
    uint32_t dropped_events;
    const struct trace_attr_data *event_attrs; /* all events' attributes, by event */
    uint32_t nevent_attrs;
};

const struct trace_span_data *trace_span_data(const trace_span_t *sp);

#endif
