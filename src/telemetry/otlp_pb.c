/* otlp_pb.c - ExportTraceServiceRequest in protobuf wire format, by hand.
 *
 * Field numbers come from opentelemetry-proto (collector/trace/v1/
 * trace_service.proto, trace/v1/trace.proto, common/v1/common.proto,
 * resource/v1/resource.proto); they are stable by the protobuf rules.
 *
 * Nested messages are length-prefixed, and the length is known only after the
 * body is written. Rather than computing every size twice, a message is opened
 * with a one-byte length placeholder and, when it closes, the body is moved
 * right if its length needs more varint bytes. Spans are small (one byte of
 * length up to 127 bytes, two up to 16383), so the moves are short except for
 * the two outer messages, each moved once per batch.
 * proto3 rules: zero scalars and empty strings are left out, except inside a
 * oneof (AnyValue), where the field's presence is the type. */
#include "telemetry/otlp.h"

#include <errno.h>
#include <string.h>

/* wire types */
#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

/* ExportTraceServiceRequest */
#define F_REQ_RESOURCE_SPANS 1
/* ResourceSpans */
#define F_RS_RESOURCE 1
#define F_RS_SCOPE_SPANS 2
/* Resource */
#define F_RES_ATTRIBUTES 1
#define F_RES_DROPPED 2
/* ScopeSpans */
#define F_SS_SCOPE 1
#define F_SS_SPANS 2
/* InstrumentationScope */
#define F_SCOPE_NAME 1
#define F_SCOPE_VERSION 2
/* Span */
#define F_SPAN_TRACE_ID 1
#define F_SPAN_SPAN_ID 2
#define F_SPAN_TRACE_STATE 3
#define F_SPAN_PARENT_SPAN_ID 4
#define F_SPAN_NAME 5
#define F_SPAN_KIND 6
#define F_SPAN_START 7
#define F_SPAN_END 8
#define F_SPAN_ATTRIBUTES 9
#define F_SPAN_DROPPED_ATTRS 10
#define F_SPAN_EVENTS 11
#define F_SPAN_DROPPED_EVENTS 12
#define F_SPAN_STATUS 15
#define F_SPAN_FLAGS 16
/* Span.Event */
#define F_EV_TIME 1
#define F_EV_NAME 2
#define F_EV_ATTRIBUTES 3
#define F_EV_DROPPED_ATTRS 4
/* Status */
#define F_STATUS_MESSAGE 2
#define F_STATUS_CODE 3
/* KeyValue, AnyValue */
#define F_KV_KEY 1
#define F_KV_VALUE 2
#define F_AV_STRING 1
#define F_AV_BOOL 2
#define F_AV_INT 3
#define F_AV_DOUBLE 4

/* SpanFlags: trace flags in the low byte, then "has is_remote" and "is_remote". */
#define SPAN_FLAGS_HAS_IS_REMOTE 0x100u
#define SPAN_FLAGS_IS_REMOTE 0x200u

static void pb_varint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    buf_append(b, tmp, n);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void pb_tag(struct buf *b, uint32_t field, unsigned wt)
{
    pb_varint(b, (uint64_t)field << 3 | wt);
}

static void pb_bytes(struct buf *b, uint32_t field, const void *p, size_t n)
{
    pb_tag(b, field, WT_LEN);
    pb_varint(b, n);
    buf_append(b, p, n);
}

static void pb_str(struct buf *b, uint32_t field, const char *s)
{
    if (s && *s)
        pb_bytes(b, field, s, strlen(s));
}

static void pb_uint(struct buf *b, uint32_t field, uint64_t v)
{
    if (v) {
        pb_tag(b, field, WT_VARINT);
        pb_varint(b, v);
    }
}

static void pb_fixed64(struct buf *b, uint32_t field, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    pb_tag(b, field, WT_I64);
    buf_append(b, le, 8);
}

static void pb_fixed32(struct buf *b, uint32_t field, uint32_t v)
{
    uint8_t le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    pb_tag(b, field, WT_I32);
    buf_append(b, le, 4);
}

/* Open a length-delimited field: tag + one placeholder byte. Returns where the
 * body starts. */
static size_t pb_open(struct buf *b, uint32_t field)
{
    pb_tag(b, field, WT_LEN);
    buf_putc(b, 0);
    return b->len;
}

static void pb_close(struct buf *b, size_t start)
{
    if (!buf_ok(b))
        return;
    size_t body = b->len - start;
    size_t k = varint_len(body);
    if (k > 1) {
        if (buf_reserve(b, k - 1) < 0)
            return;
        memmove(b->data + start + k - 1, b->data + start, body);
        b->len += k - 1;
        b->data[b->len] = '\0';
    }
    uint64_t v = body;
    for (size_t i = 0; i < k; i++) {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (i + 1 < k)
            byte |= 0x80;
        b->data[start - 1 + i] = (char)byte;
    }
}

static void pb_kv(struct buf *b, uint32_t field, const char *key, const struct trace_attr_data *a)
{
    size_t kv = pb_open(b, field);
    pb_str(b, F_KV_KEY, key);
    size_t av = pb_open(b, F_KV_VALUE);
    switch (a->type) {
    case TRACE_ATTR_STR: pb_bytes(b, F_AV_STRING, a->v.s, a->len); break;
    case TRACE_ATTR_BOOL:
        pb_tag(b, F_AV_BOOL, WT_VARINT);
        pb_varint(b, a->v.b ? 1 : 0);
        break;
    case TRACE_ATTR_INT:
        pb_tag(b, F_AV_INT, WT_VARINT);
        pb_varint(b, (uint64_t)a->v.i); /* int64: two's complement, 10 bytes if < 0 */
        break;
    case TRACE_ATTR_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &a->v.d, 8);
        pb_fixed64(b, F_AV_DOUBLE, bits);
        break;
    }
    }
    pb_close(b, av);
    pb_close(b, kv);
}

static void pb_res_kv(struct buf *b, const struct otlp_kv *kv)
{
    struct trace_attr_data a = otlp_kv_value(kv);
    pb_kv(b, F_RES_ATTRIBUTES, kv->key, &a);
}

static void pb_span(struct buf *b, const struct trace_span_data *s)
{
    size_t sp = pb_open(b, F_SS_SPANS);
    pb_bytes(b, F_SPAN_TRACE_ID, s->trace_id, 16);
    pb_bytes(b, F_SPAN_SPAN_ID, s->span_id, 8);
    pb_str(b, F_SPAN_TRACE_STATE, s->tracestate);
    if (s->has_parent)
        pb_bytes(b, F_SPAN_PARENT_SPAN_ID, s->parent_span_id, 8);
    pb_str(b, F_SPAN_NAME, s->name);
    pb_uint(b, F_SPAN_KIND, (uint64_t)s->kind);
    pb_fixed64(b, F_SPAN_START, s->start_ns);
    pb_fixed64(b, F_SPAN_END, s->end_ns);
    for (uint32_t i = 0; i < s->nattrs; i++)
        pb_kv(b, F_SPAN_ATTRIBUTES, s->attrs[i].key, &s->attrs[i]);
    pb_uint(b, F_SPAN_DROPPED_ATTRS, s->dropped_attrs);
    uint32_t ea = 0;
    for (uint32_t e = 0; e < s->nevents; e++) {
        size_t ev = pb_open(b, F_SPAN_EVENTS);
        pb_fixed64(b, F_EV_TIME, s->events[e].time_ns);
        pb_str(b, F_EV_NAME, s->events[e].name);
        for (; ea < s->nevent_attrs && s->event_attrs[ea].event == e; ea++)
            pb_kv(b, F_EV_ATTRIBUTES, s->event_attrs[ea].key, &s->event_attrs[ea]);
        pb_uint(b, F_EV_DROPPED_ATTRS, s->events[e].dropped_attrs);
        pb_close(b, ev);
    }
    pb_uint(b, F_SPAN_DROPPED_EVENTS, s->dropped_events);
    if (s->status != TRACE_STATUS_UNSET) {
        size_t st = pb_open(b, F_SPAN_STATUS);
        pb_str(b, F_STATUS_MESSAGE, s->status_msg);
        pb_uint(b, F_STATUS_CODE, (uint64_t)s->status);
        pb_close(b, st);
    }
    pb_fixed32(b, F_SPAN_FLAGS,
               s->flags | SPAN_FLAGS_HAS_IS_REMOTE |
                   (s->has_parent && s->parent_remote ? SPAN_FLAGS_IS_REMOTE : 0));
    pb_close(b, sp);
}

int otlp_encode_protobuf(const struct otlp_resource *res,
                         const struct trace_span_data *const *spans, size_t n, struct buf *out)
{
    size_t rs = pb_open(out, F_REQ_RESOURCE_SPANS);
    size_t r = pb_open(out, F_RS_RESOURCE);
    for (size_t i = 0; i < res->n; i++)
        pb_res_kv(out, &res->attrs[i]);
    pb_uint(out, F_RES_DROPPED, res->dropped);
    pb_close(out, r);
    size_t ss = pb_open(out, F_RS_SCOPE_SPANS);
    size_t sc = pb_open(out, F_SS_SCOPE);
    pb_str(out, F_SCOPE_NAME, "clearbox");
    pb_str(out, F_SCOPE_VERSION, CLEARBOX_VERSION);
    pb_close(out, sc);
    for (size_t i = 0; i < n; i++)
        pb_span(out, spans[i]);
    pb_close(out, ss);
    pb_close(out, rs);
    if (!buf_ok(out))
        return out->oom ? -ENOMEM : -E2BIG;
    return 0;
}
