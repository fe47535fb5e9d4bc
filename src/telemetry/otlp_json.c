/* otlp_json.c - ExportTraceServiceRequest as OTLP/JSON.
 *
 * The OTLP spec's JSON rules (which differ from plain proto3 JSON): trace and
 * span ids are lowercase hex strings, not base64; field names are lowerCamelCase;
 * enums are integers; 64-bit integers (times, intValue) are decimal strings.
 * Fields with default values are left out, as the proto3 JSON mapping allows. */
#include "telemetry/otlp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/hex.h"
#include "util/json.h"

static void j_u64str(struct json *w, const char *key, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    json_kv_str(w, key, tmp);
}

static void j_hex(struct json *w, const char *key, const uint8_t *p, size_t n)
{
    char tmp[33];
    hex_encode(p, n, tmp);
    json_kv_str(w, key, tmp);
}

static void j_kv(struct json *w, const char *key, const struct trace_attr_data *a)
{
    json_obj_open(w);
    json_kv_str(w, "key", key);
    json_key(w, "value");
    json_obj_open(w);
    switch (a->type) {
    case TRACE_ATTR_STR:
        json_key(w, "stringValue");
        json_strn(w, a->v.s, a->len);
        break;
    case TRACE_ATTR_BOOL: json_kv_bool(w, "boolValue", a->v.b); break;
    case TRACE_ATTR_INT: {
        char tmp[24];
        snprintf(tmp, sizeof tmp, "%" PRId64, a->v.i);
        json_kv_str(w, "intValue", tmp);
        break;
    }
    case TRACE_ATTR_DOUBLE: json_kv_double(w, "doubleValue", a->v.d); break;
    }
    json_obj_close(w);
    json_obj_close(w);
}

static void j_span(struct json *w, const struct trace_span_data *s)
{
    json_obj_open(w);
    j_hex(w, "traceId", s->trace_id, 16);
    j_hex(w, "spanId", s->span_id, 8);
    if (s->tracestate[0])
        json_kv_str(w, "traceState", s->tracestate);
    if (s->has_parent)
        j_hex(w, "parentSpanId", s->parent_span_id, 8);
    json_kv_uint(w, "flags",
                 (uint64_t)s->flags | 0x100u | (s->has_parent && s->parent_remote ? 0x200u : 0));
    json_kv_str(w, "name", s->name);
    json_kv_int(w, "kind", (int64_t)s->kind);
    j_u64str(w, "startTimeUnixNano", s->start_ns);
    j_u64str(w, "endTimeUnixNano", s->end_ns);
    if (s->nattrs) {
        json_key(w, "attributes");
        json_arr_open(w);
        for (uint32_t i = 0; i < s->nattrs; i++)
            j_kv(w, s->attrs[i].key, &s->attrs[i]);
        json_arr_close(w);
    }
    if (s->dropped_attrs)
        json_kv_uint(w, "droppedAttributesCount", s->dropped_attrs);
    if (s->nevents) {
        json_key(w, "events");
        json_arr_open(w);
        uint32_t ea = 0;
        for (uint32_t e = 0; e < s->nevents; e++) {
            json_obj_open(w);
            j_u64str(w, "timeUnixNano", s->events[e].time_ns);
            json_kv_str(w, "name", s->events[e].name);
            if (ea < s->nevent_attrs && s->event_attrs[ea].event == e) {
                json_key(w, "attributes");
                json_arr_open(w);
                for (; ea < s->nevent_attrs && s->event_attrs[ea].event == e; ea++)
                    j_kv(w, s->event_attrs[ea].key, &s->event_attrs[ea]);
                json_arr_close(w);
            }
            if (s->events[e].dropped_attrs)
                json_kv_uint(w, "droppedAttributesCount", s->events[e].dropped_attrs);
            json_obj_close(w);
        }
        json_arr_close(w);
    }
    if (s->dropped_events)
        json_kv_uint(w, "droppedEventsCount", s->dropped_events);
    if (s->status != TRACE_STATUS_UNSET) {
        json_key(w, "status");
        json_obj_open(w);
        if (s->status_msg[0])
            json_kv_str(w, "message", s->status_msg);
        json_kv_int(w, "code", (int64_t)s->status);
        json_obj_close(w);
    }
    json_obj_close(w);
}

int otlp_encode_json(const struct otlp_resource *res, const struct trace_span_data *const *spans,
                     size_t n, struct buf *out)
{
    struct json w;
    json_init(&w, out);
    json_obj_open(&w);
    json_key(&w, "resourceSpans");
    json_arr_open(&w);
    json_obj_open(&w);

    json_key(&w, "resource");
    json_obj_open(&w);
    json_key(&w, "attributes");
    json_arr_open(&w);
    for (size_t i = 0; i < res->n; i++) {
        struct trace_attr_data a = otlp_kv_value(&res->attrs[i]);
        j_kv(&w, res->attrs[i].key, &a);
    }
    json_arr_close(&w);
    if (res->dropped)
        json_kv_uint(&w, "droppedAttributesCount", res->dropped);
    json_obj_close(&w);

    json_key(&w, "scopeSpans");
    json_arr_open(&w);
    json_obj_open(&w);
    json_key(&w, "scope");
    json_obj_open(&w);
    json_kv_str(&w, "name", "clearbox");
    json_kv_str(&w, "version", CLEARBOX_VERSION);
    json_obj_close(&w);
    json_key(&w, "spans");
    json_arr_open(&w);
    for (size_t i = 0; i < n; i++)
        j_span(&w, spans[i]);
    json_arr_close(&w);
    json_obj_close(&w);
    json_arr_close(&w);

    json_obj_close(&w);
    json_arr_close(&w);
    json_obj_close(&w);
    if (!json_ok(&w))
        return out->oom ? -ENOMEM : -E2BIG;
    return 0;
}
