/* sampler.c - the OTel head samplers (see trace.h, docs/tracing.md).
 *
 * traceidratio is deterministic on the trace id, as the OTel SDKs do it, so
 * every service sampling with the same ratio keeps the same traces: the Go SDK
 * takes the last 8 bytes of the trace id as a big-endian integer, shifts it
 * right by one and samples when that is below ratio * 2^63. We do the same, so
 * a trace that clearbox keeps is also kept by a Go service with that ratio. */
#include "telemetry/trace.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static bool ratio_decide(double ratio, const uint8_t trace_id[16])
{
    if (!(ratio > 0.0)) /* also NaN */
        return false;
    if (ratio >= 1.0)
        return true;
    uint64_t bound = (uint64_t)(ratio * 9223372036854775808.0); /* ratio * 2^63 */
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = (x << 8) | trace_id[i];
    return (x >> 1) < bound;
}

bool trace_sampler_decide(enum trace_sampler s, double ratio, const struct trace_context *parent,
                          const uint8_t trace_id[16])
{
    bool has_parent = parent && trace_context_is_valid(parent);
    switch (s) {
    case TRACE_SAMPLER_ALWAYS_ON: return true;
    case TRACE_SAMPLER_ALWAYS_OFF: return false;
    case TRACE_SAMPLER_TRACEIDRATIO: return ratio_decide(ratio, trace_id);
    case TRACE_SAMPLER_PARENTBASED_ALWAYS_ON:
        return has_parent ? (parent->flags & TRACE_FLAG_SAMPLED) != 0 : true;
    case TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF:
        return has_parent ? (parent->flags & TRACE_FLAG_SAMPLED) != 0 : false;
    case TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO:
        return has_parent ? (parent->flags & TRACE_FLAG_SAMPLED) != 0
                          : ratio_decide(ratio, trace_id);
    }
    return false;
}

int trace_sampler_parse(const char *name, enum trace_sampler *out)
{
    static const struct {
        const char *name;
        enum trace_sampler s;
    } names[] = {
        {"always_on", TRACE_SAMPLER_ALWAYS_ON},
        {"always_off", TRACE_SAMPLER_ALWAYS_OFF},
        {"traceidratio", TRACE_SAMPLER_TRACEIDRATIO},
        {"parentbased_always_on", TRACE_SAMPLER_PARENTBASED_ALWAYS_ON},
        {"parentbased_always_off", TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF},
        {"parentbased_traceidratio", TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO},
    };
    if (!name)
        return -EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].s;
            return 0;
        }
    }
    return -EINVAL;
}
