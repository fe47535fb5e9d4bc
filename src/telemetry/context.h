/* context.h - the per-thread "current span", shared by trace.c (which sets it
 * when a span is made current) and log.c (which stamps trace_id/span_id on
 * every line logged while it is set). Kept apart so logging does not depend on
 * the tracing module's internals.
 * Threads: the variable is thread-local; each thread sees only its own. */
#ifndef CLEARBOX_TELEMETRY_CONTEXT_H
#define CLEARBOX_TELEMETRY_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>

struct telemetry_span_ref {
    uint8_t trace_id[16]; /* W3C trace-id, all zero = invalid */
    uint8_t span_id[8];   /* W3C parent-id of the current span */
    uint8_t flags;        /* W3C trace-flags (bit 0: sampled) */
    bool set;             /* a span is current on this thread */
};

/* Written only by the tracing module (save the old value, set, restore). */
extern __thread struct telemetry_span_ref telemetry__current;

#endif
