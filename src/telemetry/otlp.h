/* otlp.h - OTLP trace export: the OTEL_EXPORTER_OTLP_* configuration, the
 * resource, the two encodings of ExportTraceServiceRequest (protobuf, written
 * by hand in otlp_pb.c; JSON in otlp_json.c) and two exporters: OTLP/HTTP
 * (libcurl, retries with backoff) and a file of OTLP JSON lines.
 *
 * trace.c drives all of this from its export thread; other code only needs
 * trace.h. The pieces are public so tests can check each one alone.
 *
 * Ownership: an exporter owns a copy of the config and resource it was given.
 * Threads: an exporter is used by one thread at a time (the export thread);
 *   the parse/encode functions are pure and safe from any thread.
 * Errors: 0 or a negative errno with words in err (util/err.h); export returns
 *   -EIO (non-retryable HTTP status), -ETIMEDOUT (out of time while retrying),
 *   -ECONNREFUSED etc. for transport failures, -E2BIG for an oversized body. */
#ifndef CLEARBOX_TELEMETRY_OTLP_H
#define CLEARBOX_TELEMETRY_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "telemetry/trace.h"
#include "util/buf.h"

#define OTLP_URL_MAX 2048
#define OTLP_HEADERS_MAX 16  /* headers from OTEL_EXPORTER_OTLP_HEADERS */
#define OTLP_HEADER_MAX 1024 /* "Name: value" */
#define OTLP_RESOURCE_ATTRS_MAX 32
#define OTLP_RES_KEY_MAX 128
#define OTLP_RES_VALUE_MAX 256
#define OTLP_BODY_MAX (64u << 20) /* one encoded batch */
#define OTLP_RETRY_AFTER_MAX_S 30 /* a longer Retry-After is cut to this */

enum otlp_protocol { OTLP_HTTP_PROTOBUF = 0, OTLP_HTTP_JSON };

struct otlp_config {
    char endpoint[OTLP_URL_MAX]; /* full traces URL; "" = export nothing */
    enum otlp_protocol protocol;
    size_t nheaders;
    char headers[OTLP_HEADERS_MAX][OTLP_HEADER_MAX]; /* "Name: value" */
    uint32_t timeout_ms;                             /* one HTTP request (default 10000) */
};

/* Read the OTEL_EXPORTER_OTLP_(TRACES_)* variables. The TRACES_ form wins.
 * ENDPOINT gets "/v1/traces" appended (one slash); TRACES_ENDPOINT is used as
 * is. -EINVAL: protocol grpc (not supported) or unknown, an endpoint that is
 * not http(s)://. A bad timeout is ignored (the OTel rule: default applies);
 * malformed header entries (bad name, CR/LF in the value) are skipped. */
int otlp_config_from_env(struct otlp_config *out, char *err, size_t errlen);

/* base + "/v1/traces", exactly one slash between; 0 or -ENAMETOOLONG. */
int otlp_traces_url(const char *base, char *out, size_t outlen);

/* Decode %XX escapes of s[0..n) into out (NUL-terminated, at most outlen-1
 * bytes); 0, -EINVAL (bad escape or NUL byte) or -E2BIG. */
int otlp_percent_decode(const char *s, size_t n, char *out, size_t outlen);

/* Parse "k1=v1,k2=v2" (the OTEL_*_HEADERS and OTEL_RESOURCE_ATTRIBUTES form):
 * keys and values trimmed, values percent-decoded. Calls fn for each good
 * pair; an entry without '=' or with an empty key or bad escape is skipped.
 * Returns the number of pairs passed to fn. */
int otlp_parse_kv_list(const char *s, void (*fn)(void *arg, const char *k, const char *v),
                       void *arg);

struct otlp_kv {
    char key[OTLP_RES_KEY_MAX];
    bool is_int;
    int64_t ival;
    char sval[OTLP_RES_VALUE_MAX];
};

struct otlp_resource {
    size_t n;
    struct otlp_kv attrs[OTLP_RESOURCE_ATTRS_MAX];
    uint32_t dropped;
};

/* service.name (OTEL_SERVICE_NAME, else service.name from
 * OTEL_RESOURCE_ATTRIBUTES, else "clearbox"), service.version, a random
 * service.instance.id (UUID v4, one per process), host.name, process.pid, plus
 * the OTEL_RESOURCE_ATTRIBUTES pairs. Never fails. */
void otlp_resource_from_env(struct otlp_resource *out);

/* A resource attribute's value in the span attribute form both encoders
 * write (a string value points into kv->sval). */
struct trace_attr_data otlp_kv_value(const struct otlp_kv *kv);

/* Append one ExportTraceServiceRequest (one ResourceSpans, one ScopeSpans with
 * scope "clearbox") to out. 0, or the buf's error (-E2BIG/-ENOMEM). */
int otlp_encode_protobuf(const struct otlp_resource *res,
                         const struct trace_span_data *const *spans, size_t n, struct buf *out);
int otlp_encode_json(const struct otlp_resource *res, const struct trace_span_data *const *spans,
                     size_t n, struct buf *out);

/* Retry-After in its seconds form ("120"): 0 and *secs (cut to
 * OTLP_RETRY_AFTER_MAX_S), or -EINVAL (HTTP-date form and junk are ignored). */
int otlp_parse_retry_after(const char *v, uint32_t *secs);

/* Backoff before retry number attempt (1, 2, ...): exponential from 500 ms,
 * doubled each time, capped at 8 s, with jitter: a uniform value in
 * [d/2, d]. */
uint64_t otlp_backoff_ms(unsigned attempt);

typedef struct otlp_exporter otlp_exporter_t;

otlp_exporter_t *otlp_http_exporter_new(const struct otlp_config *cfg,
                                        const struct otlp_resource *res, char *err, size_t errlen);
/* Append OTLP JSON lines (one request per line) to path (created 0644). */
otlp_exporter_t *otlp_file_exporter_new(const char *path, const struct otlp_resource *res,
                                        char *err, size_t errlen);

/* Send one batch; retries (HTTP) until deadline_mono_ns (time_mono_ns clock). */
int otlp_exporter_export(otlp_exporter_t *ex, const struct trace_span_data *const *spans, size_t n,
                         uint64_t deadline_mono_ns, char *err, size_t errlen);
/* HTTP requests made so far (attempts, retries included); for tests. */
uint64_t otlp_exporter_attempts(const otlp_exporter_t *ex);
void otlp_exporter_free(otlp_exporter_t *ex);

#endif
