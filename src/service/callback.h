/* callback.h - webhooks: POST an evaluation's record to its callback_url when
 * it reaches a terminal status, signed, retried, guarded against SSRF.
 *
 * The request: POST <callback_url>, Content-Type: application/json, the body
 * is the evaluation record (as GET /v1/evaluations/{id} shows it), headers
 *   X-Clearbox-Signature: sha256=<hex HMAC-SHA256 of the body, keyed by the
 *                         configured secret>   (absent when no secret is set)
 *   X-Clearbox-Event: evaluation.finished
 *   X-Clearbox-Delivery: <eval_id>.<attempt>
 * as GitHub and Stripe webhooks do: the receiver recomputes the HMAC over the
 * raw body and compares in constant time (docs/operations.md has code).
 * A 2xx answer is success; anything else (or no answer within timeout_ms) is
 * retried after backoff_ms, 2x, 4x, ... (cap CALLBACK_BACKOFF_CAP_MS), up to
 * attempts tries. Redirects are not followed. Each attempt is appended to the
 * record and logged ("callback.delivered" / "callback.failed" /
 * "callback.gave_up" / "callback.skipped" on logger "callback").
 *
 * Durable (store.h "the webhook outbox"): the delivery is in the store from
 * the commit of the terminal status on; senders claim it with a lease, so a
 * restart or another node resumes it with its attempt count and backoff.
 * Delivery is at-least-once: a sender that dies after the receiver answered
 * but before the attempt was recorded sends that attempt again (same
 * X-Clearbox-Delivery). Receivers deduplicate by eval_id (or the delivery
 * id). Each attempt's body is the record as it is then: its callbacks array
 * lists the attempts before it.
 *
 * SSRF guard: the URL must be http(s) with a host; the host is resolved and
 * EVERY address must be public: loopback, private (10/8, 172.16/12,
 * 192.168/16, 100.64/10 CGNAT), link-local (169.254/16, fe80::/10, which holds
 * the cloud metadata address 169.254.169.254), unique-local fc00::/7,
 * unspecified, multicast, broadcast, IPv4-mapped/compatible forms of these,
 * and other reserved ranges are refused (-EPERM); allow_private admits
 * loopback, private, link-local, metadata and unique-local (never
 * unspecified, multicast or reserved). The classes are validate.h's
 * (validate_addr_classify), the same rules the API applies at submit. The
 * connection is pinned to the checked address with CURLOPT_RESOLVE, so a DNS
 * answer that changes between check and connect (rebinding) cannot move it.
 *
 * Threads: callback_sign/_check_url/_post/_record_json are pure or use only
 * their arguments (safe from any thread). A sender owns its threads and one
 * store handle per thread; notify/pending are safe from any thread; stop
 * runs once. Ownership: start copies its options. libcurl is loaded on
 * first use (util/curl_dl.h). Errors: 0 or a negative errno, words in err. */
#ifndef CLEARBOX_SERVICE_CALLBACK_H
#define CLEARBOX_SERVICE_CALLBACK_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/store.h"
#include "util/buf.h"

#define CALLBACK_SIG_LEN (7 + 64 + 1)      /* "sha256=" + 64 hex + NUL */
#define CALLBACK_BODY_MAX (STORE_JSON_MAX) /* bytes of one webhook body */
#define CALLBACK_QUEUE_MAX 10000           /* pending deliveries per sender */
#define CALLBACK_BACKOFF_CAP_MS 60000
#define CALLBACK_ATTEMPTS_MAX 32
#define CALLBACK_HOST_MAX 253
#define CALLBACK_POLL_MS_DEFAULT 2000      /* look for deliveries of other nodes */

/* Renders the webhook body of a record; 0 or a negative errno. */
typedef int (*callback_render_fn)(const struct eval_record *r, struct buf *b);

struct callback_options {
    const void *secret; /* HMAC key; NULL = requests go unsigned */
    size_t secret_len;
    bool allow_private; /* allow loopback/private/link-local/... destinations */
    int attempts;       /* 1..CALLBACK_ATTEMPTS_MAX; 0 = 5 */
    int timeout_ms;     /* per attempt, connect included; 0 = 10000 */
    int backoff_ms;     /* delay before the 2nd attempt, doubling; 0 = 1000 */
    int threads;        /* sender threads; 0 = 2 */
    int poll_ms;        /* look for due deliveries at least this often; 0 = 2000 */
    callback_render_fn render; /* the body; NULL = callback_record_json */
    const char *owner;  /* this node's name for delivery leases (one process per
                           name, e.g. the worker pool's node id): its leases left
                           by a crash are released at start. NULL = host:pid */
};

/* "sha256=<64 lowercase hex>" of HMAC-SHA256(key, body). 0 or -EINVAL/-EIO. */
int callback_sign(const void *key, size_t keylen, const void *body, size_t len,
                  char out[CALLBACK_SIG_LEN]);

/* A checked destination: where the connection will go. */
struct callback_target {
    char scheme[8];                   /* "http" / "https" */
    char host[CALLBACK_HOST_MAX + 1]; /* as in the URL (brackets removed) */
    int port;
    char addr[64];   /* the pinned address, numeric */
    const char *cls; /* its class: "public", "loopback", ... (static) */
};

/* Parse url, resolve its host, apply the guard. -EINVAL malformed URL or
 * scheme, -EHOSTUNREACH no address, -EPERM a refused address class (err
 * names the address and the class). */
int callback_check_url(const char *url, bool allow_private, struct callback_target *t, char *err,
                       size_t errlen);

/* One delivery attempt, synchronous. */
struct callback_attempt {
    int http_status; /* 0 = no response */
    int64_t duration_ms;
    bool ok;         /* 2xx */
    char error[256]; /* "" or why it failed (guard refusal, transport) */
};
/* Check, sign and POST body once. Returns 0 when a 2xx came back, else a
 * negative errno (-EPERM guard, -EHOSTUNREACH, -ETIMEDOUT, -EPROTO non-2xx,
 * -EIO transport); *a is always filled. */
int callback_post(const struct callback_options *o, const char *url, const char *eval_id,
                  int attempt, const void *body, size_t len, struct callback_attempt *a, char *err,
                  size_t errlen);

/* The record as the API shows it (DESIGN.md result record + service fields):
 * id, status, language, priority, metadata, timestamps (RFC 3339), attempts,
 * max_attempts, worker_id, trace_id, error, result (the stored result JSON),
 * callbacks. Without code and stdin. Renders into b; 0 or -E2BIG/-ENOMEM. */
int callback_record_json(const struct eval_record *r, struct buf *b);

/* ---- the sender: threads that deliver what the store holds ------------------ */

typedef struct callback_sender callback_sender_t;

/* Open db_url (required: the deliveries live there), release the leases this
 * owner left behind, log "callback.resumed" with the count when deliveries
 * are pending, and start the threads (each with its own store handle). */
int callback_sender_start(const struct callback_options *o, const char *db_url,
                          callback_sender_t **out, char *err, size_t errlen);
/* A delivery became pending (a local evaluation finished): look now instead
 * of at the next poll. NULL is fine. */
void callback_sender_notify(callback_sender_t *s);
/* Deliveries pending in the store at the sender's last look (any node's). */
int callback_sender_pending(callback_sender_t *s);
/* Deliveries due before deadline_ns (wall clock, 0 = now) are still tried,
 * retries included while they fall before it; the rest stay pending in the
 * store (logged as "callback.left_pending"), for the next start or another
 * node. Then threads stop and everything is freed. Returns the number left
 * pending. NULL is fine. */
int callback_sender_stop(callback_sender_t *s, int64_t deadline_ns);

#endif
