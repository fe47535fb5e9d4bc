/* api.c - the HTTP routes of the evaluation service (see api.h, docs/api.md).
 *
 * A request: authenticate (when a token is set), route by method and path,
 * borrow a store handle for the queries, render JSON with util/json.h, give
 * the handle back. A submit is one durable insert (store_insert) plus a read
 * of the queue depth for the log line and the gauge; the trace context of its
 * server span is stored with the evaluation so the worker continues the trace.
 *
 * Admission control runs before the insert: a token bucket per submitter
 * (rate) and the submitter's queued count (store_submitter_queued). Both
 * answer 429 with Retry-After. Known race: two submits of one submitter may
 * both pass the queued-count check at the limit; the bound is soft by the
 * number of concurrent requests, which the connection limit bounds. */
#include "service/api.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "service/http.h"
#include "service/store.h"
#include "service/validate.h"
#include "telemetry/log.h"
#include "telemetry/metrics.h"
#include "telemetry/telemetry.h"
#include "telemetry/trace.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/timeutil.h"
#include "util/num.h"

#define API_HANDLES_DEFAULT 8
#define API_HANDLES_MAX 64
#define RATE_SLOTS 1024
#define RATE_PROBE 8
#define SSE_POLL_NS (250ull * 1000 * 1000)
#define SSE_KEEPALIVE_NS (15ull * 1000 * 1000 * 1000)
#define SSE_EVENTS_BATCH 32
#define QUEUED_RETRY_AFTER_S 10

struct rate_slot {
    char key[STORE_SUBMITTER_MAX + 1];
    bool used;
    double tokens;
    uint64_t last_ns;
};

/* /readyz's checks, in the order of its response. */
enum { READY_DATABASE, READY_WORKERS, READY_SANDBOX, READY_QUEUE, READY_NCHECKS };

/* What the service log last said about one readiness check: a probe every
 * few seconds logs a failing check when it starts failing, when its reason
 * changes and once a minute while it lasts, not on every probe. */
struct ready_log {
    bool failing;
    uint64_t at_ns;         /* when the failure was last logged */
    char why[ERR_LEN + 16]; /* and with which reason */
};
#define READY_LOG_REPEAT_NS (60ull * 1000000000ull)

struct api {
    struct service_config cfg;
    struct validate_bounds bounds;
    struct api_hooks hooks;
    bool no_workers_ok;
    bool no_api_routes;
    http_server_t *http;
    log_logger_t *log;

    /* the store handles: one writer that every insert and cancel shares (its
     * internal mutex queues writers in-process, where a wait is a condition
     * variable, instead of SQLite's busy handler, which sleeps in steps of
     * milliseconds: measured 440 -> see docs/api.md "Performance"), and a
     * pool of readers that request threads borrow */
    store_t *writer;
    store_t *handles[API_HANDLES_MAX];
    int nhandles;
    int free_stack[API_HANDLES_MAX];
    int nfree;
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;

    /* readiness */
    pthread_mutex_t state_mu;
    bool sandbox_set, sandbox_ok;
    char sandbox_why[ERR_LEN + 16];
    atomic_bool quiescing;
    struct ready_log ready_log[READY_NCHECKS]; /* under state_mu */

    /* admission */
    pthread_mutex_t rate_mu;
    struct rate_slot *rate;

    /* metrics */
    metrics_registry_t *reg;
    metrics_family_t *http_requests;  /* clearbox_http_requests_total{method,route,code} */
    metrics_family_t *http_duration;  /* clearbox_http_request_duration_seconds{route} */
    metrics_gauge_t *queue_depth;
    _Atomic int64_t depth;            /* queue depth estimate (queue_depth_now) */
    _Atomic uint64_t depth_at_ns;     /* when it was last counted */
};

/* ---- the handle pool --------------------------------------------------------- */

static store_t *handle_get(struct api *a)
{
    pthread_mutex_lock(&a->pool_mu);
    while (a->nfree == 0)
        pthread_cond_wait(&a->pool_cv, &a->pool_mu);
    store_t *s = a->handles[a->free_stack[--a->nfree]];
    pthread_mutex_unlock(&a->pool_mu);
    return s;
}

static void handle_put(struct api *a, store_t *s)
{
    pthread_mutex_lock(&a->pool_mu);
    for (int i = 0; i < a->nhandles; i++)
        if (a->handles[i] == s)
            a->free_stack[a->nfree++] = i;
    pthread_cond_signal(&a->pool_cv);
    pthread_mutex_unlock(&a->pool_mu);
}

/* ---- small helpers ----------------------------------------------------------------- */

static void respond_buf(struct http_response *resp, int status, struct buf *b)
{
    if (!buf_ok(b)) {
        http_respond_error(resp, 500, "internal", "the response could not be rendered", NULL);
        return;
    }
    buf_putc(b, '\n');
    http_respond(resp, status, NULL, b->data, b->len);
}

/* Store failures: the client gets the kind and what to do; the details (a
 * libpq message names the database user, host or socket path) go to the
 * operator's log only. */
static void store_error(struct http_response *resp, int rc, const char *err)
{
    if (rc == -ENOENT) {
        http_respond_error(resp, 404, "not_found", "no such evaluation", NULL);
        return;
    }
    log_warning(log_get("http"), "http.store_error", LOG_INT("errno", -rc),
                LOG_STR("message", err));
    if (rc == -EBUSY)
        http_respond_error(resp, 503, "database_busy", "the database is busy; retry shortly",
                           NULL);
    else
        http_respond_error(resp, 503, "database_error",
                           "the database is unavailable; retry later (details are in the "
                           "service's log)",
                           NULL);
}

static void kv_time(struct json *w, const char *k, int64_t ns)
{
    json_key(w, k);
    if (ns <= 0) {
        json_null_value(w);
        return;
    }
    char t[TIME_RFC3339_LEN];
    time_fmt_rfc3339((uint64_t)ns, t);
    json_str(w, t);
}

static void kv_str_or_null(struct json *w, const char *k, const char *v)
{
    json_key(w, k);
    if (v && *v)
        json_str(w, v);
    else
        json_null_value(w);
}

/* The trace id (32 hex) from a stored traceparent, or "". */
static void trace_id_of(const struct eval_record *r, char out[33])
{
    out[0] = '\0';
    if (r->traceparent && strlen(r->traceparent) >= 35) {
        memcpy(out, r->traceparent + 3, 32);
        out[32] = '\0';
    }
}

static void kv_error(struct json *w, const struct eval_record *r)
{
    json_key(w, "error");
    if (!r->error_reason && !r->error_message) {
        json_null_value(w);
        return;
    }
    json_obj_open(w);
    json_kv_str(w, "reason", r->error_reason ? r->error_reason : "");
    json_kv_str(w, "message", r->error_message ? r->error_message : "");
    json_obj_close(w);
}

static void kv_json(struct json *w, const char *k, const char *text, const char *dflt)
{
    json_key(w, k);
    const char *t = text && *text ? text : dflt;
    json_raw(w, t, strlen(t));
}

/* Members of the record common to the summary and the full record. */
static void record_common(struct json *w, const struct eval_record *r, const char *status)
{
    char tid[33];
    trace_id_of(r, tid);
    json_kv_str(w, "id", r->id);
    json_kv_str(w, "status", status ? status : store_status_name(r->status));
    json_kv_str(w, "language", r->language);
    json_kv_int(w, "priority", r->priority);
    kv_str_or_null(w, "submitter", r->submitter);
    json_kv_uint(w, "code_length", r->code_len);
    kv_time(w, "created_at", r->created_ns);
    kv_time(w, "queued_at", r->queued_ns);
    kv_time(w, "started_at", r->started_ns);
    kv_time(w, "finished_at", r->finished_ns);
    json_kv_int(w, "attempts", r->attempts);
    kv_str_or_null(w, "worker_id", r->worker_id);
    kv_str_or_null(w, "trace_id", tid);
    json_key(w, "queue_position");
    if (r->status == EVAL_QUEUED && r->queue_position > 0)
        json_int(w, r->queue_position);
    else
        json_null_value(w);
    json_kv_bool(w, "cancel_requested", r->cancel_requested);
    kv_error(w, r);
}

/* Summary (list items, SSE data): the common members plus exit_code and
 * duration_ms from the result. status overrides the record's (SSE replays). */
static void record_summary(struct json *w, const struct eval_record *r, const char *status)
{
    json_obj_open(w);
    record_common(w, r, status);
    json_t *res = r->result_json ? json_loads(r->result_json, 0, NULL) : NULL;
    json_t *ec = res ? json_object_get(res, "exit_code") : NULL;
    json_t *dm = res ? json_object_get(res, "duration_ms") : NULL;
    json_key(w, "exit_code");
    if (json_is_integer(ec))
        json_int(w, json_integer_value(ec));
    else
        json_null_value(w);
    json_key(w, "duration_ms");
    if (json_is_number(dm))
        json_double(w, json_number_value(dm));
    else
        json_null_value(w);
    json_decref(res);
    json_obj_close(w);
}

/* Members of the sandbox result record the service shows at top level
 * (DESIGN.md: the evaluation record is the result record plus service
 * fields); null until the evaluation has a result. */
static const char *const result_members[] = {
    "exit_code", "signal",  "stdout",    "stderr",          "stdout_truncated",
    "stderr_truncated", "duration_ms", "phases", "resources", "security_events",
    "policy", NULL};

static void record_full(struct json *w, const struct eval_record *r)
{
    json_obj_open(w);
    json_kv_str(w, "eval_id", r->id);
    record_common(w, r, NULL);
    json_key(w, "code");
    json_strn(w, r->code ? r->code : "", r->code ? r->code_len : 0);
    json_key(w, "stdin");
    if (r->stdin_data)
        json_strn(w, r->stdin_data, r->stdin_len);
    else
        json_null_value(w);
    kv_json(w, "args", r->args_json, "[]");
    json_key(w, "files");
    json_arr_open(w); /* names and sizes; the contents stay in the store */
    json_t *files = r->files_json ? json_loads(r->files_json, 0, NULL) : NULL;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        json_obj_open(w);
        json_kv_str(w, "path", json_string_value(json_object_get(f, "path")));
        size_t b64 = json_string_length(json_object_get(f, "content_base64"));
        json_kv_uint(w, "content_base64_length", b64);
        json_obj_close(w);
    }
    json_decref(files);
    json_arr_close(w);
    kv_json(w, "limits", r->limits_json, "{}");
    kv_json(w, "metadata", r->metadata_json, "{}");
    json_kv_int(w, "max_attempts", r->max_attempts);
    kv_str_or_null(w, "callback_url", r->callback_url);
    kv_json(w, "callbacks", r->callbacks_json, "[]");
    kv_str_or_null(w, "traceparent", r->traceparent);

    json_t *res = r->result_json ? json_loads(r->result_json, 0, NULL) : NULL;
    for (size_t k = 0; result_members[k]; k++) {
        json_key(w, result_members[k]);
        json_t *v = res ? json_object_get(res, result_members[k]) : NULL;
        /* 15 significant digits: 19.296, not jansson's 19.295999999999999 */
        char *text =
            v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) : NULL;
        if (text)
            json_raw(w, text, strlen(text));
        else if (!strcmp(result_members[k], "security_events"))
            json_raw(w, "[]", 2);
        else
            json_null_value(w);
        free(text);
    }
    json_decref(res);
    json_obj_close(w);
}

int api_record_json(const struct eval_record *r, struct buf *b)
{
    struct json w;
    json_init(&w, b);
    record_full(&w, r);
    if (!json_ok(&w))
        return b->oom ? -ENOMEM : -E2BIG;
    return 0;
}

/* ---- admission: per-submitter token buckets -------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Take n tokens for submitter; false with *retry_after_s when the bucket is
 * short. The table is fixed-size: a new submitter evicts the least recently
 * seen of its probe window, which at worst forgives that one's debt. */
static bool rate_take(struct api *a, const char *submitter, int n, int *retry_after_s)
{
    double rate = a->cfg.submit_rate_per_s;
    if (rate <= 0)
        return true;
    double burst = a->cfg.submit_burst;
    uint64_t now = time_mono_ns();
    uint64_t h = fnv1a(submitter);
    pthread_mutex_lock(&a->rate_mu);
    struct rate_slot *slot = NULL, *oldest = NULL;
    for (int i = 0; i < RATE_PROBE; i++) {
        struct rate_slot *s = &a->rate[(h + (uint64_t)i) % RATE_SLOTS];
        if (s->used && !strcmp(s->key, submitter)) {
            slot = s;
            break;
        }
        if (!oldest || !s->used || (oldest->used && s->last_ns < oldest->last_ns))
            oldest = s;
    }
    if (!slot) {
        slot = oldest;
        snprintf(slot->key, sizeof slot->key, "%s", submitter);
        slot->used = true;
        slot->tokens = burst;
        slot->last_ns = now;
    }
    slot->tokens += (double)(now - slot->last_ns) / 1e9 * rate;
    if (slot->tokens > burst)
        slot->tokens = burst;
    slot->last_ns = now;
    bool ok = slot->tokens >= n;
    if (ok)
        slot->tokens -= n;
    else
        *retry_after_s = (int)num_ceil((n - slot->tokens) / rate);
    pthread_mutex_unlock(&a->rate_mu);
    if (!ok && *retry_after_s < 1)
        *retry_after_s = 1;
    return ok;
}

static void respond_429(struct http_response *resp, const char *code, const char *msg,
                        int retry_after_s)
{
    http_respond_error(resp, 429, code, msg, NULL);
    char v[16];
    snprintf(v, sizeof v, "%d", retry_after_s);
    http_response_header(resp, "Retry-After", v);
}

/* Queued-count limit of one submitter; false and a 429 in resp when full. */
static bool queued_ok(struct api *a, store_t *s, const char *submitter, int adding,
                      struct http_response *resp)
{
    if (a->cfg.submitter_queued_max <= 0)
        return true;
    int64_t n = 0;
    char err[ERR_LEN];
    int rc = store_submitter_queued(s, submitter, &n, err, sizeof err);
    if (rc < 0) {
        store_error(resp, rc, err);
        return false;
    }
    if (n + adding > a->cfg.submitter_queued_max) {
        char msg[160];
        snprintf(msg, sizeof msg, "submitter has %lld queued evaluations (limit %d)",
                 (long long)n, a->cfg.submitter_queued_max);
        respond_429(resp, "queue_full", msg, QUEUED_RETRY_AFTER_S);
        return false;
    }
    return true;
}

/* ---- submit ------------------------------------------------------------------------- */

static bool content_type_json(const struct http_request *req)
{
    const char *ct = http_request_header(req, "Content-Type");
    if (!ct)
        return false;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n == 16 && !strncasecmp(ct, "application/json", 16);
}

/* Idempotency-Key: 1..STORE_IDEMPOTENCY_KEY_MAX printable ASCII; NULL if
 * absent; false (and a 400 in resp) when malformed. */
static bool idempotency_key(const struct http_request *req, const char **key,
                            struct http_response *resp)
{
    *key = http_request_header(req, "Idempotency-Key");
    if (!*key)
        return true;
    size_t n = strlen(*key);
    bool ok = n > 0 && n <= STORE_IDEMPOTENCY_KEY_MAX - 16;
    for (size_t i = 0; ok && i < n; i++)
        ok = (*key)[i] > 0x20 && (*key)[i] < 0x7F;
    if (!ok)
        http_respond_error(resp, 400, "invalid_header",
                           "Idempotency-Key must be 1-240 printable ASCII characters",
                           "Idempotency-Key");
    return ok;
}

struct submit_result {
    char id[STORE_ID_LEN];
    bool existed;
    int64_t queue_position;
    enum eval_status status;
};

/* The submit span's trace context, stored with r so the worker continues
 * the trace; tp is the traceparent's room (r points into it and into ctx). */
static void trace_stamp(struct eval_record *r, trace_span_t *span, struct trace_context *ctx,
                        char tp[TRACE_TRACEPARENT_LEN + 1])
{
    trace_span_context(span, ctx);
    trace_traceparent_format(ctx, tp);
    r->traceparent = tp;
    r->tracestate = ctx->tracestate[0] ? ctx->tracestate : NULL;
}

/* After an insert: an existing evaluation's (idempotent retry) own status
 * and place; the span's attributes. */
static void submitted(struct api *a, const struct eval_record *r, trace_span_t *span,
                      struct submit_result *out)
{
    out->status = EVAL_QUEUED;
    if (out->existed) {
        struct eval_record first;
        if (store_get(a->writer, out->id, &first, NULL, 0) == 0) {
            out->status = first.status;
            out->queue_position = first.queue_position;
            store_record_clear(&first);
        }
    }
    trace_span_set_str(span, "eval_id", out->id);
    trace_span_set_str(span, "language", r->language);
    trace_span_set_int(span, "code_length", (int64_t)r->code_len);
}

/* Insert one validated record under a submit span. */
static int submit_one(struct api *a, struct eval_record *r, trace_span_t *span,
                      struct submit_result *out, char *err, size_t errlen)
{
    struct trace_context ctx;
    char tp[TRACE_TRACEPARENT_LEN + 1];
    trace_stamp(r, span, &ctx, tp);
    int rc = store_insert(a->writer, r, out->id, &out->existed, &out->queue_position, err,
                          errlen);
    r->traceparent = NULL; /* not ours to free */
    r->tracestate = NULL;
    if (rc < 0)
        return rc;
    submitted(a, r, span, out);
    return 0;
}

/* The queue depth for the evaluation.queued line and the gauge. Counting the
 * queue is O(depth) in SQLite, so it is counted at most every
 * DEPTH_REFRESH_NS and submits in between add one each: exact to within the
 * claims of the last 250 ms (the worker pool refreshes the gauge as well). */
#define DEPTH_REFRESH_NS (250ull * 1000 * 1000)

static int64_t queue_depth_now(struct api *a)
{
    uint64_t now = time_mono_ns();
    uint64_t at = atomic_load(&a->depth_at_ns);
    if (now - at < DEPTH_REFRESH_NS || !atomic_compare_exchange_strong(&a->depth_at_ns, &at, now))
        return atomic_fetch_add(&a->depth, 1) + 1;
    struct store_queue_stats st = {0};
    store_t *s = handle_get(a);
    int rc = store_queue_stats(s, &st, NULL, 0);
    handle_put(a, s);
    if (rc < 0)
        return atomic_fetch_add(&a->depth, 1) + 1;
    atomic_store(&a->depth, st.queued);
    if (a->queue_depth)
        metrics_gauge_set(a->queue_depth, (double)st.queued);
    return st.queued;
}

static void log_queued(struct api *a, const struct eval_record *r,
                       const struct submit_result *sr)
{
    if (sr->existed) {
        log_info(a->log, "evaluation.idempotent_replay", LOG_STR("eval_id", sr->id),
                 LOG_STR("status", store_status_name(sr->status)));
        return;
    }
    int64_t depth = queue_depth_now(a);
    log_info(a->log, "evaluation.queued", LOG_STR("eval_id", sr->id),
             LOG_INT("queue_depth", depth), LOG_UINT("code_length", r->code_len),
             LOG_STR("language", r->language), LOG_INT("priority", r->priority),
             LOG_STR("submitter", r->submitter ? r->submitter : ""));
}

static void submit_result_json(struct json *w, const struct submit_result *sr)
{
    json_obj_open(w);
    json_kv_str(w, "id", sr->id);
    json_kv_str(w, "status", store_status_name(sr->status));
    json_key(w, "queue_position");
    if (sr->status == EVAL_QUEUED && sr->queue_position > 0)
        json_int(w, sr->queue_position);
    else
        json_null_value(w);
    if (sr->existed)
        json_kv_bool(w, "idempotent_replay", true);
    json_obj_close(w);
}

/* The submit span: a server span, child of the client's traceparent if any. */
static trace_span_t *submit_span(const struct http_request *req, const char *route)
{
    struct trace_context parent;
    bool has = trace_context_from_headers(http_request_header(req, "traceparent"),
                                          http_request_header(req, "tracestate"), &parent) == 0;
    trace_span_t *sp = trace_span_start_at("evaluation.submit", TRACE_KIND_SERVER,
                                           has ? &parent : NULL, 0, TRACE_START_ROOT);
    trace_span_set_str(sp, "http.request.method", req->method);
    trace_span_set_str(sp, "url.path", route);
    return sp;
}

static void end_span(trace_span_t *sp, int status)
{
    trace_span_set_int(sp, "http.response.status_code", status);
    if (status >= 500)
        trace_span_set_status(sp, TRACE_STATUS_ERROR, "server error");
    trace_span_end(sp);
}

static void route_submit(struct api *a, const struct http_request *req,
                         struct http_response *resp)
{
    trace_span_t *sp = submit_span(req, "/v1/evaluations");
    struct trace_scope sc;
    trace_span_make_current(sp, &sc);
    struct eval_record r;
    memset(&r, 0, sizeof r);
    store_t *s = NULL;
    const char *key;
    if (!content_type_json(req)) {
        http_respond_error(resp, 415, "unsupported_media_type",
                           "send the evaluation as Content-Type: application/json", NULL);
        goto out;
    }
    if (!idempotency_key(req, &key, resp))
        goto out;
    struct validate_error verr;
    if (validate_submission_body(req->body, req->body_len, &a->bounds, &r, &verr) < 0) {
        http_respond_error(resp, verr.http_status, verr.code, verr.message, verr.field);
        goto out;
    }
    r.idempotency_key = (char *)key;
    r.max_attempts = a->cfg.max_attempts;
    const char *who = r.submitter ? r.submitter : "";
    int retry;
    if (!rate_take(a, who, 1, &retry)) {
        respond_429(resp, "rate_limited", "too many submissions; retry later", retry);
        goto out;
    }
    s = handle_get(a);
    bool room = queued_ok(a, s, who, 1, resp);
    handle_put(a, s);
    s = NULL;
    if (!room)
        goto out;
    struct submit_result sr;
    char err[ERR_LEN];
    int rc = submit_one(a, &r, sp, &sr, err, sizeof err);
    if (rc < 0) {
        store_error(resp, rc, err);
        goto out;
    }
    log_queued(a, &r, &sr);
    if (!sr.existed && a->hooks.notify)
        a->hooks.notify(a->hooks.arg);
    char storage[256];
    struct buf b;
    buf_init(&b, storage, sizeof storage, 4096);
    struct json w;
    json_init(&w, &b);
    submit_result_json(&w, &sr);
    respond_buf(resp, sr.existed ? 200 : 202, &b);
    buf_free(&b);
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/evaluations/%s", sr.id);
    http_response_header(resp, "Location", loc);
out:
    if (s)
        handle_put(a, s);
    r.idempotency_key = NULL;
    store_record_clear(&r);
    trace_span_restore(&sc);
    end_span(sp, resp->status);
}

static void route_batch(struct api *a, const struct http_request *req,
                        struct http_response *resp)
{
    trace_span_t *sp = submit_span(req, "/v1/evaluations/batch");
    struct trace_scope sc;
    trace_span_make_current(sp, &sc);
    json_t *root = NULL;
    store_t *s = NULL;
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 20);
    const char *key;
    if (!content_type_json(req)) {
        http_respond_error(resp, 415, "unsupported_media_type",
                           "send the batch as Content-Type: application/json", NULL);
        goto out;
    }
    if (!idempotency_key(req, &key, resp))
        goto out;
    if (!validate_utf8(req->body, req->body_len)) {
        http_respond_error(resp, 400, "invalid_utf8", "the request body is not valid UTF-8",
                           NULL);
        goto out;
    }
    json_error_t je;
    root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        http_respond_error(resp, 400, "invalid_json", msg, NULL);
        goto out;
    }
    json_t *items = json_object_get(root, "evaluations");
    if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(items)) {
        http_respond_error(resp, 422, "wrong_type",
                           "the batch must be {\"evaluations\": [ ... ]} and nothing else",
                           "evaluations");
        goto out;
    }
    size_t n = json_array_size(items);
    if (n == 0 || n > VALIDATE_BATCH_MAX) {
        http_respond_error(resp, 422, "out_of_range", "a batch holds 1 to 100 evaluations",
                           "evaluations");
        goto out;
    }
    /* validate every item first, so rate and queue limits count only valid ones */
    struct eval_record *recs = calloc(n, sizeof *recs);
    struct validate_error *errs = calloc(n, sizeof *errs);
    bool *valid = calloc(n, sizeof *valid);
    if (!recs || !errs || !valid) {
        free(recs);
        free(errs);
        free(valid);
        http_respond_error(resp, 500, "internal", "out of memory", NULL);
        goto out;
    }
    int nvalid = 0;
    for (size_t i = 0; i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "evaluations[%zu].", i);
        valid[i] = validate_submission(json_array_get(items, i), &a->bounds, prefix, &recs[i],
                                       &errs[i]) == 0;
        recs[i].max_attempts = a->cfg.max_attempts;
        nvalid += valid[i];
    }
    /* admission per submitter of the batch (counted together per name) */
    int retry = 0;
    bool admitted = true;
    s = handle_get(a);
    for (size_t i = 0; i < n && admitted; i++) {
        if (!valid[i])
            continue;
        const char *who = recs[i].submitter ? recs[i].submitter : "";
        bool seen = false;
        int count = 0;
        for (size_t j = 0; j < n; j++) {
            if (!valid[j])
                continue;
            const char *o = recs[j].submitter ? recs[j].submitter : "";
            if (!strcmp(o, who)) {
                if (j < i)
                    seen = true;
                count++;
            }
        }
        if (seen)
            continue;
        if (!rate_take(a, who, count, &retry)) {
            respond_429(resp, "rate_limited", "too many submissions; retry later", retry);
            admitted = false;
        } else if (!queued_ok(a, s, who, count, resp)) {
            admitted = false;
        }
    }
    handle_put(a, s);
    s = NULL;
    if (admitted) {
        /* the valid items in one store call: one commit for the batch */
        struct store_batch_item *bi = calloc(n, sizeof *bi);
        char (*ik)[STORE_IDEMPOTENCY_KEY_MAX] = key ? calloc(n, sizeof *ik) : NULL;
        if (!bi || (key && !ik)) {
            free(bi);
            free(ik);
            http_respond_error(resp, 500, "internal", "out of memory", NULL);
            goto out_recs;
        }
        struct trace_context ctx;
        char tp[TRACE_TRACEPARENT_LEN + 1];
        for (size_t i = 0; i < n; i++) {
            if (!valid[i])
                continue;
            trace_stamp(&recs[i], sp, &ctx, tp);
            if (key) {
                snprintf(ik[i], sizeof ik[i], "%s:%zu", key, i);
                recs[i].idempotency_key = ik[i];
            }
            bi[i].rec = &recs[i];
        }
        store_insert_batch(a->writer, bi, n);
        for (size_t i = 0; i < n; i++) { /* not ours to free */
            recs[i].traceparent = recs[i].tracestate = NULL;
            recs[i].idempotency_key = NULL;
        }
        struct json w;
        json_init(&w, &b);
        json_obj_open(&w);
        json_key(&w, "items");
        json_arr_open(&w);
        int accepted = 0, rejected = 0;
        bool any_new = false;
        for (size_t i = 0; i < n; i++) {
            json_obj_open(&w);
            json_kv_int(&w, "index", (int64_t)i);
            if (valid[i]) {
                struct submit_result sr = {.existed = bi[i].existed,
                                           .queue_position = bi[i].queue_position};
                memcpy(sr.id, bi[i].id, sizeof sr.id);
                if (bi[i].rc == 0) {
                    submitted(a, &recs[i], sp, &sr);
                    accepted++;
                    any_new |= !sr.existed;
                    log_queued(a, &recs[i], &sr);
                    json_kv_str(&w, "id", sr.id);
                    json_kv_str(&w, "status", store_status_name(sr.status));
                    json_key(&w, "queue_position");
                    if (sr.status == EVAL_QUEUED && sr.queue_position > 0)
                        json_int(&w, sr.queue_position);
                    else
                        json_null_value(&w);
                } else {
                    rejected++;
                    json_key(&w, "error");
                    json_obj_open(&w);
                    json_kv_str(&w, "code", "database_error");
                    json_kv_str(&w, "message", bi[i].err);
                    json_obj_close(&w);
                }
            } else {
                rejected++;
                json_key(&w, "error");
                json_obj_open(&w);
                json_kv_str(&w, "code", errs[i].code);
                json_kv_str(&w, "message", errs[i].message);
                if (errs[i].field[0])
                    json_kv_str(&w, "field", errs[i].field);
                json_kv_int(&w, "status", errs[i].http_status);
                json_obj_close(&w);
            }
            json_obj_close(&w);
        }
        free(bi);
        free(ik);
        json_arr_close(&w);
        json_kv_int(&w, "accepted", accepted);
        json_kv_int(&w, "rejected", rejected);
        json_obj_close(&w);
        if (any_new && a->hooks.notify)
            a->hooks.notify(a->hooks.arg);
        respond_buf(resp, 202, &b);
        trace_span_set_int(sp, "clearbox.batch.accepted", accepted);
        trace_span_set_int(sp, "clearbox.batch.rejected", rejected);
    }
out_recs:
    for (size_t i = 0; i < n; i++)
        store_record_clear(&recs[i]);
    free(recs);
    free(errs);
    free(valid);
out:
    if (s)
        handle_put(a, s);
    json_decref(root);
    buf_free(&b);
    trace_span_restore(&sc);
    end_span(sp, resp->status);
}

/* ---- read, list, cancel ------------------------------------------------------------- */

static void route_get(struct api *a, const char *id, struct http_response *resp)
{
    if (!store_id_valid(id)) {
        http_respond_error(resp, 404, "not_found", "no such evaluation", NULL);
        return;
    }
    struct eval_record r;
    char err[ERR_LEN];
    store_t *s = handle_get(a);
    int rc = store_get(s, id, &r, err, sizeof err);
    handle_put(a, s);
    if (rc < 0) {
        store_error(resp, rc, err);
        return;
    }
    char storage[8192];
    struct buf b;
    buf_init(&b, storage, sizeof storage, (size_t)STORE_JSON_MAX * 2);
    struct json w;
    json_init(&w, &b);
    record_full(&w, &r);
    respond_buf(resp, 200, &b);
    buf_free(&b);
    store_record_clear(&r);
}

static void route_list(struct api *a, const struct http_request *req,
                       struct http_response *resp)
{
    struct store_list_query q = {.status = -1, .limit = 50};
    const char *st = http_request_query(req, "status");
    if (st && *st) {
        enum eval_status es;
        if (store_status_parse(st, &es) < 0) {
            http_respond_error(resp, 400, "invalid_parameter",
                               "status must be one of queued, running, completed, timeout, "
                               "cpu_time_limit, memory_limit, pids_limit, output_limit, "
                               "killed, error, cancelled",
                               "status");
            return;
        }
        q.status = (int)es;
    }
    const char *lim = http_request_query(req, "limit");
    if (lim && *lim) {
        char *end;
        errno = 0;
        long v = strtol(lim, &end, 10);
        if (errno || *end || v < 1 || v > STORE_LIST_MAX) {
            http_respond_error(resp, 400, "invalid_parameter", "limit must be 1-1000", "limit");
            return;
        }
        q.limit = (int)v;
    }
    const char *cur = http_request_query(req, "cursor");
    if (cur && *cur) {
        if (strlen(cur) >= STORE_CURSOR_LEN) {
            http_respond_error(resp, 400, "invalid_parameter", "malformed cursor", "cursor");
            return;
        }
        q.cursor = cur;
    }
    const char *sub = http_request_query(req, "submitter");
    if (sub) {
        if (strlen(sub) > STORE_SUBMITTER_MAX) {
            http_respond_error(resp, 400, "invalid_parameter", "submitter is too long",
                               "submitter");
            return;
        }
        q.submitter = sub;
    }
    struct eval_record *items = NULL;
    size_t n = 0;
    char next[STORE_CURSOR_LEN];
    char err[ERR_LEN];
    store_t *s = handle_get(a);
    int rc = store_list(s, &q, &items, &n, next, err, sizeof err);
    handle_put(a, s);
    if (rc == -EINVAL) {
        http_respond_error(resp, 400, "invalid_parameter", "malformed cursor", "cursor");
        return;
    }
    if (rc < 0) {
        store_error(resp, rc, err);
        return;
    }
    struct buf b;
    buf_init(&b, NULL, 0, (size_t)64 << 20);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    json_key(&w, "items");
    json_arr_open(&w);
    for (size_t i = 0; i < n; i++)
        record_summary(&w, &items[i], NULL);
    json_arr_close(&w);
    kv_str_or_null(&w, "next_cursor", next);
    json_obj_close(&w);
    respond_buf(resp, 200, &b);
    buf_free(&b);
    store_records_free(items, n);
}

static void route_cancel(struct api *a, const char *id, struct http_response *resp)
{
    if (!store_id_valid(id)) {
        http_respond_error(resp, 404, "not_found", "no such evaluation", NULL);
        return;
    }
    enum eval_status now = EVAL_QUEUED;
    char err[ERR_LEN];
    int rc = store_cancel(a->writer, id, &now, err, sizeof err);
    if (rc == -EALREADY) {
        char msg[128];
        snprintf(msg, sizeof msg, "the evaluation already finished (%s)", store_status_name(now));
        http_respond_error(resp, 409, "already_finished", msg, NULL);
        return;
    }
    if (rc < 0) {
        store_error(resp, rc, err);
        return;
    }
    log_info(a->log, "evaluation.cancel_requested", LOG_STR("eval_id", id),
             LOG_STR("status", store_status_name(now)));
    if (now == EVAL_RUNNING && a->hooks.cancelled)
        a->hooks.cancelled(a->hooks.arg, id);
    char body[160];
    int len = snprintf(body, sizeof body, "{\"id\":\"%s\",\"status\":\"%s\",\"cancel_requested\":true}\n",
                       id, store_status_name(now));
    http_respond(resp, now == EVAL_CANCELLED ? 200 : 202, NULL, body, (size_t)len);
}

/* ---- Server-Sent Events ---------------------------------------------------------------- */

struct sse {
    struct api *a;
    char id[STORE_ID_LEN];
    int64_t after;        /* last seq sent */
    struct buf out;       /* rendered, not yet handed to the server */
    size_t out_pos;
    bool done;            /* end event rendered */
    uint64_t last_poll_ns, last_send_ns;
};

static void sse_free(void *arg)
{
    struct sse *e = arg;
    buf_free(&e->out);
    free(e);
}

/* Render new events into e->out; 0, or -ENOENT when the evaluation is gone. */
static int sse_poll(struct sse *e)
{
    struct store_event ev[SSE_EVENTS_BATCH];
    store_t *s = handle_get(e->a);
    int n = store_events(s, e->id, e->after, ev, SSE_EVENTS_BATCH, NULL, 0);
    struct eval_record r;
    bool have = false;
    if (n > 0)
        have = store_get(s, e->id, &r, NULL, 0) == 0;
    handle_put(e->a, s);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        buf_printf(&e->out, "id: %lld\nevent: status\ndata: ", (long long)ev[i].seq);
        struct json w;
        json_init(&w, &e->out);
        if (have && ev[i].seq >= r.event_seq) {
            /* the latest change: the record's summary as it is now */
            record_summary(&w, &r, NULL);
        } else {
            /* an older change (a replay): what it was and when */
            json_obj_open(&w);
            json_kv_str(&w, "id", e->id);
            json_kv_str(&w, "status", store_status_name(ev[i].status));
            kv_time(&w, "at", ev[i].ts_ns);
            json_obj_close(&w);
        }
        buf_puts(&e->out, "\n\n");
        e->after = ev[i].seq;
        if (store_status_terminal(ev[i].status)) {
            buf_puts(&e->out, "event: end\ndata: {}\n\n");
            e->done = true;
            break;
        }
    }
    if (have)
        store_record_clear(&r);
    return 0;
}

static ssize_t sse_read(void *arg, uint64_t pos, char *dst, size_t max)
{
    struct sse *e = arg;
    if (e->out_pos < e->out.len) {
        size_t n = e->out.len - e->out_pos;
        if (n > max)
            n = max;
        memcpy(dst, e->out.data + e->out_pos, n);
        e->out_pos += n;
        if (e->out_pos == e->out.len) {
            buf_reset(&e->out);
            e->out_pos = 0;
        }
        e->last_send_ns = time_mono_ns();
        return (ssize_t)n;
    }
    if (e->done)
        return HTTP_STREAM_END;
    uint64_t now = time_mono_ns();
    if (now - e->last_poll_ns >= SSE_POLL_NS) {
        e->last_poll_ns = now;
        int rc = sse_poll(e);
        if (rc == -ENOENT) {
            buf_puts(&e->out, "event: end\ndata: {\"reason\":\"gone\"}\n\n");
            e->done = true;
        }
        if (!buf_ok(&e->out))
            return HTTP_STREAM_ERROR;
        if (e->out.len)
            return sse_read(arg, pos, dst, max);
    }
    if (now - e->last_send_ns >= SSE_KEEPALIVE_NS) {
        buf_puts(&e->out, ": keepalive\n\n");
        return sse_read(arg, pos, dst, max);
    }
    return 0;
}

static void route_events(struct api *a, const struct http_request *req, const char *id,
                         struct http_response *resp)
{
    if (!store_id_valid(id)) {
        http_respond_error(resp, 404, "not_found", "no such evaluation", NULL);
        return;
    }
    int64_t after = 0;
    const char *last = http_request_header(req, "Last-Event-ID");
    if (!last)
        last = http_request_query(req, "last_event_id");
    if (last && *last) {
        char *end;
        errno = 0;
        long long v = strtoll(last, &end, 10);
        if (errno || *end || v < 0) {
            http_respond_error(resp, 400, "invalid_header",
                               "Last-Event-ID must be an event id from this stream",
                               "Last-Event-ID");
            return;
        }
        after = v;
    }
    struct sse *e = calloc(1, sizeof *e);
    if (!e) {
        http_respond_error(resp, 500, "internal", "out of memory", NULL);
        return;
    }
    e->a = a;
    snprintf(e->id, sizeof e->id, "%s", id);
    e->after = after;
    buf_init(&e->out, NULL, 0, 1 << 20);
    e->last_send_ns = time_mono_ns();
    buf_puts(&e->out, "retry: 1000\n\n");
    /* the first poll here: an unknown id is a plain 404, not a stream */
    e->last_poll_ns = time_mono_ns();
    int rc = sse_poll(e);
    if (rc < 0) {
        sse_free(e);
        store_error(resp, rc, "the database failed");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/event-stream";
    resp->stream = sse_read;
    resp->stream_arg = e;
    resp->stream_free = sse_free;
    http_response_header(resp, "Cache-Control", "no-cache");
    http_response_header(resp, "X-Accel-Buffering", "no");
}

/* ---- health, readiness, metrics ------------------------------------------------------ */

static bool authorized(struct api *a, const struct http_request *req);

/* For SQLite, the file must still be where the URL says (an open connection
 * keeps working on an unlinked file, hiding a lost database). */
static bool sqlite_file_present(const char *url, char *why, size_t whylen)
{
    if (strncmp(url, "sqlite:", 7))
        return true;
    const char *path = url + 7;
    if (!strncmp(path, "//", 2))
        path += 2;
    if (!*path || !strcmp(path, ":memory:"))
        return true;
    if (access(path, F_OK) == 0)
        return true;
    snprintf(why, whylen, "database file %s is gone", path);
    return false;
}

/* Log a readiness check's state change (see struct ready_log): the detailed
 * reason goes to the operator's log, where /readyz without a token does not
 * show it. */
static void ready_log_check(struct api *a, int check, const char *name, bool ok, const char *why)
{
    uint64_t now = time_mono_ns();
    pthread_mutex_lock(&a->state_mu);
    struct ready_log *l = &a->ready_log[check];
    bool log_fail = false, log_ok = false;
    if (!ok) {
        log_fail = !l->failing || strcmp(l->why, why) != 0 || now - l->at_ns >= READY_LOG_REPEAT_NS;
        if (log_fail) {
            l->at_ns = now;
            snprintf(l->why, sizeof l->why, "%s", why);
        }
    } else {
        log_ok = l->failing;
    }
    l->failing = !ok;
    pthread_mutex_unlock(&a->state_mu);
    if (log_fail)
        log_warning(a->log, "readiness.check_failed", LOG_STR("check", name),
                    LOG_STR("message", why));
    else if (log_ok)
        log_info(a->log, "readiness.check_recovered", LOG_STR("check", name));
}

/* One check's "message". A passing check keeps its informational text
 * (fixed wording of ours: engine and cgroup mode, "no workers ..."). A
 * failing check's reason can name a database user, host, socket or file
 * path: an authenticated request (any request when the service has no token,
 * as for the other routes) gets it, an unauthenticated one a generic text;
 * the service log always has it (ready_log_check). */
static void ready_message(struct json *w, bool ok, const char *generic, const char *why,
                          bool details)
{
    if (ok || details) {
        if (why[0])
            json_kv_str(w, "message", why);
        else if (!ok)
            json_kv_str(w, "message", generic);
        return;
    }
    json_kv_str(w, "message", generic);
}

static void route_readyz(struct api *a, const struct http_request *req,
                         struct http_response *resp)
{
    char dbwhy[ERR_LEN] = "", wwhy[256] = "", swhy[ERR_LEN + 16] = "";
    struct store_queue_stats qs = {0};
    store_t *s = handle_get(a);
    bool db_ok = store_ping(s, dbwhy, sizeof dbwhy) == 0 &&
                 store_queue_stats(s, &qs, dbwhy, sizeof dbwhy) == 0 &&
                 sqlite_file_present(a->cfg.db_url, dbwhy, sizeof dbwhy);
    handle_put(a, s);
    if (db_ok && a->queue_depth)
        metrics_gauge_set(a->queue_depth, (double)qs.queued);

    bool w_ok;
    int busy = -1, total = -1;
    if (a->hooks.workers_healthy) {
        w_ok = a->hooks.workers_healthy(a->hooks.arg, wwhy, sizeof wwhy);
        if (a->hooks.workers_stats)
            a->hooks.workers_stats(a->hooks.arg, &busy, &total);
    } else {
        w_ok = a->no_workers_ok;
        snprintf(wwhy, sizeof wwhy, "no workers in this process");
    }

    pthread_mutex_lock(&a->state_mu);
    bool sb_set = a->sandbox_set, sb_ok = a->sandbox_ok;
    snprintf(swhy, sizeof swhy, "%s", a->sandbox_set ? a->sandbox_why : "self-check pending");
    pthread_mutex_unlock(&a->state_mu);
    if (!sb_set && a->no_workers_ok)
        sb_ok = true, snprintf(swhy, sizeof swhy, "not needed: no workers");

    double oldest_s = 0;
    if (db_ok && qs.queued > 0 && qs.oldest_queued_ns > 0)
        oldest_s = (double)((int64_t)time_now_ns() - qs.oldest_queued_ns) / 1e9;
    /* stalled: work waits too long while no worker is busy with anything */
    bool q_ok = !(a->cfg.queue_stall_s > 0 && oldest_s > a->cfg.queue_stall_s && qs.running == 0);
    bool quiescing = atomic_load(&a->quiescing);
    bool ready = db_ok && w_ok && sb_ok && q_ok && !quiescing;
    char qwhy[160] = "";
    if (!q_ok)
        snprintf(qwhy, sizeof qwhy,
                 "the oldest queued evaluation has waited %.0f s (queue_stall_s %d) and no "
                 "evaluation is running",
                 oldest_s, a->cfg.queue_stall_s);

    ready_log_check(a, READY_DATABASE, "database", db_ok, dbwhy);
    ready_log_check(a, READY_WORKERS, "workers", w_ok, wwhy);
    /* a pending self-check is not a failure to log */
    ready_log_check(a, READY_SANDBOX, "sandbox", sb_ok || !sb_set, swhy);
    ready_log_check(a, READY_QUEUE, "queue", q_ok, qwhy);
    bool details = authorized(a, req);

    char storage[2048];
    struct buf b;
    buf_init(&b, storage, sizeof storage, 16384);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    json_kv_str(&w, "status", ready ? "ready" : quiescing ? "shutting_down" : "not_ready");
    json_key(&w, "checks");
    json_obj_open(&w);
    json_key(&w, "database");
    json_obj_open(&w);
    json_kv_bool(&w, "ok", db_ok);
    json_kv_str(&w, "backend", store_backend_name(s));
    ready_message(&w, db_ok, "database unreachable", dbwhy, details);
    json_obj_close(&w);
    json_key(&w, "workers");
    json_obj_open(&w);
    json_kv_bool(&w, "ok", w_ok);
    if (total >= 0) {
        json_kv_int(&w, "busy", busy);
        json_kv_int(&w, "total", total);
    }
    ready_message(&w, w_ok, "workers not healthy", wwhy, details);
    json_obj_close(&w);
    json_key(&w, "sandbox");
    json_obj_open(&w);
    json_kv_bool(&w, "ok", sb_ok);
    if (!sb_set && !sb_ok) /* fixed wording, nothing to hide */
        json_kv_str(&w, "message", swhy);
    else
        ready_message(&w, sb_ok, "sandbox self-check failed", swhy, details);
    json_obj_close(&w);
    json_key(&w, "queue");
    json_obj_open(&w);
    json_kv_bool(&w, "ok", q_ok);
    json_kv_int(&w, "depth", qs.queued);
    json_kv_int(&w, "running", qs.running);
    json_kv_double(&w, "oldest_queued_age_s", oldest_s);
    ready_message(&w, q_ok, "queue stalled", qwhy, details);
    json_obj_close(&w);
    json_obj_close(&w);
    json_obj_close(&w);
    respond_buf(resp, ready ? 200 : 503, &b);
    buf_free(&b);
    if (!ready)
        http_response_header(resp, "Retry-After", "5");
}

static void route_metrics(struct api *a, const struct http_request *req,
                          struct http_response *resp)
{
    enum metrics_format fmt = metrics_format_negotiate(http_request_header(req, "Accept"));
    char *text = NULL;
    size_t len = 0;
    char err[ERR_LEN];
    /* A node without workers (--role api) has no pool refreshing the queue
     * depth every second; without this its gauge kept the value of the last
     * submit (tests/integration/multinode_pg.sh). One count per scrape. */
    if (!a->hooks.workers_stats && a->queue_depth) {
        struct store_queue_stats qs = {0};
        store_t *s = handle_get(a);
        if (store_queue_stats(s, &qs, NULL, 0) == 0)
            metrics_gauge_set(a->queue_depth, (double)qs.queued);
        handle_put(a, s);
    }
    if (metrics_render_string(a->reg, fmt, 0, &text, &len, err, sizeof err) < 0) {
        http_respond_error(resp, 500, "internal", err, NULL);
        return;
    }
    http_respond(resp, 200, metrics_content_type(fmt), text, len);
    free(text);
}

/* ---- dispatch --------------------------------------------------------------------------- */

static bool authorized(struct api *a, const struct http_request *req)
{
    if (!a->cfg.auth_token[0])
        return true;
    const char *h = http_request_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    const char *tok = h + 7;
    size_t n = strlen(tok), m = strlen(a->cfg.auth_token);
    /* compare digests: constant time and independent of the lengths */
    uint8_t d1[32], d2[32];
    hash_sha256(tok, n, d1);
    hash_sha256(a->cfg.auth_token, m, d2);
    return hash_equal(d1, d2, 32) == 1;
}

static void method_not_allowed(struct http_response *resp, const char *allow)
{
    http_respond_error(resp, 405, "method_not_allowed", "method not allowed on this path", NULL);
    http_response_header(resp, "Allow", allow);
}

/* The route template for metrics and spans (bounded label values). */
static const char *route_name(const char *path)
{
    if (!strcmp(path, "/v1/evaluations"))
        return "/v1/evaluations";
    if (!strcmp(path, "/v1/evaluations/batch"))
        return "/v1/evaluations/batch";
    if (!strncmp(path, "/v1/evaluations/", 16)) {
        const char *rest = strchr(path + 16, '/');
        if (!rest)
            return "/v1/evaluations/{id}";
        if (!strcmp(rest, "/cancel"))
            return "/v1/evaluations/{id}/cancel";
        if (!strcmp(rest, "/events"))
            return "/v1/evaluations/{id}/events";
    }
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics"))
        return path;
    return "other";
}

static void handle(void *arg, const struct http_request *req, struct http_response *resp)
{
    struct api *a = arg;
    const char *p = req->path;
    bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
    bool post = !strcmp(req->method, "POST");

    if (!strcmp(p, "/healthz")) {
        if (!get)
            return method_not_allowed(resp, "GET");
        static const char ok[] = "{\"status\":\"ok\"}\n";
        return http_respond(resp, 200, NULL, ok, sizeof ok - 1);
    }
    if (!strcmp(p, "/readyz")) {
        if (!get)
            return method_not_allowed(resp, "GET");
        return route_readyz(a, req, resp);
    }
    if (!authorized(a, req)) {
        http_respond_error(resp, 401, "unauthorized",
                           "missing or wrong bearer token (Authorization: Bearer TOKEN)", NULL);
        http_response_header(resp, "WWW-Authenticate", "Bearer realm=\"clearbox\"");
        return;
    }
    if (!strcmp(p, "/metrics")) {
        if (!get)
            return method_not_allowed(resp, "GET");
        return route_metrics(a, req, resp);
    }
    if (a->no_api_routes && !strncmp(p, "/v1/", 4))
        return http_respond_error(resp, 404, "not_found",
                                  "this node runs workers only (role worker): send API "
                                  "requests to an API node",
                                  NULL);
    if (!strcmp(p, "/v1/evaluations")) {
        if (post) {
            if (atomic_load(&a->quiescing))
                return http_respond_error(resp, 503, "shutting_down",
                                          "the service is shutting down", NULL);
            return route_submit(a, req, resp);
        }
        if (get)
            return route_list(a, req, resp);
        return method_not_allowed(resp, "GET, POST");
    }
    if (!strcmp(p, "/v1/evaluations/batch")) {
        if (!post)
            return method_not_allowed(resp, "POST");
        if (atomic_load(&a->quiescing))
            return http_respond_error(resp, 503, "shutting_down", "the service is shutting down",
                                      NULL);
        return route_batch(a, req, resp);
    }
    if (!strncmp(p, "/v1/evaluations/", 16)) {
        const char *id = p + 16;
        const char *slash = strchr(id, '/');
        char idbuf[STORE_ID_LEN];
        size_t idlen = slash ? (size_t)(slash - id) : strlen(id);
        if (idlen != STORE_ID_LEN - 1) {
            http_respond_error(resp, 404, "not_found", "no such evaluation", NULL);
            return;
        }
        memcpy(idbuf, id, idlen);
        idbuf[idlen] = '\0';
        if (!slash) {
            if (!get)
                return method_not_allowed(resp, "GET");
            return route_get(a, idbuf, resp);
        }
        if (!strcmp(slash, "/cancel")) {
            if (!post)
                return method_not_allowed(resp, "POST");
            return route_cancel(a, idbuf, resp);
        }
        if (!strcmp(slash, "/events")) {
            if (!get)
                return method_not_allowed(resp, "GET");
            return route_events(a, req, idbuf, resp);
        }
    }
    http_respond_error(resp, 404, "not_found", "no such endpoint", NULL);
}

static void done(void *arg, const struct http_request *req, int status, uint64_t duration_ns)
{
    struct api *a = arg;
    const char *route = route_name(req->path ? req->path : "");
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    if (a->http_requests)
        metrics_counter_inc(metrics_counter_labels(a->http_requests, req->method, route, code));
    if (a->http_duration && strcmp(route, "/v1/evaluations/{id}/events"))
        metrics_histogram_observe(metrics_histogram_labels(a->http_duration, route),
                                  (double)duration_ns / 1e9);
    log_debug(a->log, "http.request", LOG_STR("http.request.method", req->method),
              LOG_STR("url.path", req->path), LOG_INT("http.response.status_code", status),
              LOG_DOUBLE("duration_ms", (double)duration_ns / 1e6),
              LOG_STR("client.address", req->remote));
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static metrics_registry_t *metrics_reg_done;
static metrics_family_t *g_http_requests, *g_http_duration;

static void metrics_setup(struct api *a)
{
    const struct telemetry_std *t = telemetry_std();
    a->reg = t ? t->reg : metrics_default();
    a->queue_depth = t ? t->queue_depth : NULL;
    pthread_mutex_lock(&metrics_mu);
    if (metrics_reg_done != a->reg) {
        static const char *const req_labels[] = {"method", "route", "code"};
        static const char *const dur_labels[] = {"route"};
        static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,   0.25,   0.5,   1,    2.5};
        /* method is bounded by MHD (known methods) plus folding past 16 values */
        static const size_t req_max[] = {16, 0, 0};
        struct metrics_opts ro = {.name = "clearbox_http_requests_total",
                                  .help = "HTTP requests answered by the API, by method, "
                                          "route template and status code",
                                  .label_names = req_labels,
                                  .nlabels = 3,
                                  .label_max_values = req_max};
        struct metrics_opts dur = {.name = "clearbox_http_request_duration_seconds",
                                   .help = "Time from the request's headers to its response, "
                                           "by route template (SSE streams excluded)",
                                   .unit = "seconds",
                                   .label_names = dur_labels,
                                   .nlabels = 1,
                                   .buckets = buckets,
                                   .nbuckets = sizeof buckets / sizeof buckets[0]};
        g_http_requests = g_http_duration = NULL;
        if (metrics_family_new(a->reg, METRICS_COUNTER, &ro, &g_http_requests, NULL, 0) < 0)
            g_http_requests = NULL;
        if (metrics_family_new(a->reg, METRICS_HISTOGRAM, &dur, &g_http_duration, NULL, 0) < 0)
            g_http_duration = NULL;
        metrics_reg_done = a->reg;
    }
    a->http_requests = g_http_requests;
    a->http_duration = g_http_duration;
    pthread_mutex_unlock(&metrics_mu);
}

static void api_free(struct api *a)
{
    store_close(a->writer);
    for (int i = 0; i < a->nhandles; i++)
        store_close(a->handles[i]);
    free(a->rate);
    pthread_mutex_destroy(&a->pool_mu);
    pthread_cond_destroy(&a->pool_cv);
    pthread_mutex_destroy(&a->state_mu);
    pthread_mutex_destroy(&a->rate_mu);
    free(a);
}

int api_start(const struct api_options *o, api_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o || !o->cfg)
        return err_set(err, errlen, -EINVAL, "api_start: cfg is required");
    struct api *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    a->cfg = *o->cfg;
    validate_bounds_from_config(&a->cfg, &a->bounds);
    a->hooks = o->hooks;
    a->no_workers_ok = o->no_workers_ok;
    a->no_api_routes = o->no_api_routes;
    a->log = log_get("api");
    pthread_mutex_init(&a->pool_mu, NULL);
    pthread_cond_init(&a->pool_cv, NULL);
    pthread_mutex_init(&a->state_mu, NULL);
    pthread_mutex_init(&a->rate_mu, NULL);
    a->rate = calloc(RATE_SLOTS, sizeof *a->rate);
    if (!a->rate) {
        api_free(a);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    int nh = o->store_handles > 0 ? o->store_handles : API_HANDLES_DEFAULT;
    if (nh > API_HANDLES_MAX)
        nh = API_HANDLES_MAX;
    struct store_options wo = {.flags = STORE_OPEN_MIGRATE};
    int wrc = store_open(a->cfg.db_url, &wo, &a->writer, err, errlen);
    if (wrc < 0) {
        api_free(a);
        return wrc;
    }
    for (int i = 0; i < nh; i++) {
        struct store_options so = {0};
        int rc = store_open(a->cfg.db_url, &so, &a->handles[i], err, errlen);
        if (rc < 0) {
            api_free(a);
            return rc;
        }
        a->free_stack[a->nfree++] = i;
        a->nhandles++;
    }
    metrics_setup(a);
    struct http_options ho = {
        .listen = a->cfg.listen,
        .max_body_bytes = a->cfg.max_body_bytes,
        .discard_body_max_bytes = a->cfg.discard_body_max_bytes,
        .connections_max = (unsigned)a->cfg.http_connections_max,
        .timeout_s = (unsigned)a->cfg.http_timeout_s,
        .handler = handle,
        .done = done,
        .arg = a,
    };
    int rc = http_server_start(&ho, &a->http, err, errlen);
    if (rc < 0) {
        api_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int api_port(const api_t *a) { return a ? http_server_port(a->http) : -1; }

void api_set_sandbox_ok(api_t *a, bool ok, const char *why)
{
    pthread_mutex_lock(&a->state_mu);
    a->sandbox_set = true;
    a->sandbox_ok = ok;
    snprintf(a->sandbox_why, sizeof a->sandbox_why, "%s", why ? why : "");
    pthread_mutex_unlock(&a->state_mu);
}

void api_quiesce(api_t *a)
{
    if (!a)
        return;
    atomic_store(&a->quiescing, true);
    http_server_quiesce(a->http);
}

void api_stop(api_t *a)
{
    if (!a)
        return;
    atomic_store(&a->quiescing, true);
    http_server_stop(a->http);
    api_free(a);
}
