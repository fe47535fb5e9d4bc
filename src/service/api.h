/* api.h - the routes of the evaluation service's HTTP API (docs/api.md,
 * docs/openapi.yaml) on top of http.h and the store (store.h).
 *
 *   POST /v1/evaluations                 submit (202 {id, status, queue_position})
 *   POST /v1/evaluations/batch           up to 100 submissions
 *   GET  /v1/evaluations/{id}            the full record
 *   GET  /v1/evaluations?status=&limit=&cursor=&submitter=   newest first
 *   POST /v1/evaluations/{id}/cancel     409 when already finished
 *   GET  /v1/evaluations/{id}/events     Server-Sent Events, Last-Event-ID resumes
 *   GET  /healthz, /readyz, /metrics
 *
 * The API keeps a small pool of store handles (one connection each) that
 * request threads borrow, so reads run beside the writer (SQLite WAL). The
 * workers are not the API's: the caller (serve.c) passes hooks to wake them
 * and to ask whether they are alive, so the API runs alone in tests.
 *
 * Threads: api_start/api_stop from one thread; everything else is internal.
 * Ownership: cfg is copied. Errors: 0 or a negative errno with words in err. */
#ifndef CLEARBOX_SERVICE_API_H
#define CLEARBOX_SERVICE_API_H

#include <stdbool.h>
#include <stddef.h>

#include "service/config.h"
#include "service/store.h"
#include "util/buf.h"

typedef struct api api_t;

struct api_hooks {
    /* A new evaluation is queued: wake a worker (may be NULL). */
    void (*notify)(void *arg);
    /* A running evaluation got cancel_requested: tell its worker now (may be NULL). */
    void (*cancelled)(void *arg, const char *eval_id);
    /* Workers alive? false with a reason in why (NULL hook: "no workers", not ready
     * unless api_options.no_workers_ok). */
    bool (*workers_healthy)(void *arg, char *why, size_t whylen);
    /* Busy / total workers for /readyz (NULL: unknown). */
    void (*workers_stats)(void *arg, int *busy, int *total);
    void *arg;
};

struct api_options {
    const struct service_config *cfg;
    struct api_hooks hooks;
    bool no_workers_ok;     /* ready without workers (tests; --role api) */
    bool no_api_routes;     /* --role worker: only /healthz, /readyz, /metrics */
    int store_handles;      /* 0 = 8 */
};

/* The service's evaluation record (GET /v1/evaluations/{id}) as JSON into b:
 * the sandbox result record's members plus the service fields (docs/api.md).
 * 0 or -E2BIG/-ENOMEM from the buf. Safe from any thread; also the webhook
 * body (worker_options.record_json). */
int api_record_json(const struct eval_record *r, struct buf *b);

/* Open the store handles, start the HTTP server on cfg->listen. */
int api_start(const struct api_options *o, api_t **out, char *err, size_t errlen);
/* The bound port (cfg->listen may say port 0). */
int api_port(const api_t *a);
/* The sandbox self-check result for /readyz (serve.c runs it at startup).
 * Until set, readyz reports "sandbox self-check pending" and 503. */
void api_set_sandbox_ok(api_t *a, bool ok, const char *why);
/* Stop accepting connections; /readyz answers 503 "shutting down" meanwhile. */
void api_quiesce(api_t *a);
/* Stop the server, close the handles, free a. */
void api_stop(api_t *a);

#endif
