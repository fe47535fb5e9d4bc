/* worker.h - the worker pool of `clearbox serve`: N threads that take queued
 * evaluations from the store, run them in the sandbox and record the outcome.
 *
 * Each worker thread has its own store handle and loops: claim (with a lease)
 * -> continue the evaluation's trace (span "evaluation.execute", child of the
 * stored traceparent, with a "queue.wait" event) -> sandbox_run() -> finish
 * with exactly one terminal status and the result record. While the sandbox
 * runs, the thread's heartbeat timer extends the lease every heartbeat_s and
 * reads cancel_requested: a cancel (from any node) kills the sandbox and the
 * evaluation ends `cancelled`; a lost lease (-ESTALE: requeued elsewhere)
 * kills it too and writes nothing, so one evaluation never runs twice at once
 * for longer than one heartbeat.
 *
 * One maintenance thread, every maintenance_ms: requeue expired leases
 * (store_requeue_expired: max attempts -> error{worker_lost}), purge finished
 * evaluations older than retention_s (the audit log is kept), refresh
 * clearbox_queue_depth. At start (unless no_recover): sandbox_gc() kills this
 * node's leftover sandboxes, then every evaluation still `running` under this
 * node's worker ids ("<node_id>/w<N>") is requeued at once, without waiting
 * for its lease. A node takes an exclusive lock (state_dir/node-<id>.lock) so
 * two live processes can never share a node id and requeue each other's work
 * (-EBUSY at start, naming the holder).
 *
 * On each terminal status: security events go to the audit log (rate-limited
 * per evaluation, audit_eval_*) with one `security` logger line per record;
 * metrics through telemetry_std() (sandbox_run itself counts the sandbox
 * families, a cancelled run as "killed"; the pool adds the cost by submitter,
 * queue wait and the endings the sandbox never sees: worker_lost, errors
 * before the run, cancels made by a requeue); the webhook (callback.h)
 * when the record has a callback_url, delivered by the pool's callback threads
 * so a slow receiver never holds a worker. Evaluations that a requeue ends
 * (worker_lost, cancelled) get their metric and webhook from the maintenance
 * thread.
 *
 * Threads: worker_pool_notify/_healthy/_stats are safe from any thread (the
 * HTTP threads call them). start and stop run once each, from one thread.
 * Ownership: the pool copies every string of the options; the audit handle,
 * if given, is borrowed and must outlive the pool.
 * Errors: start returns 0 or a negative errno with words in err (-EINVAL bad
 * option, -EBUSY node id in use, store_open errors); nothing is left running
 * on failure. Never prints. */
#ifndef CLEARBOX_SERVICE_WORKER_H
#define CLEARBOX_SERVICE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sandbox.h"
#include "service/store.h"
#include "telemetry/audit.h"
#include "telemetry/telemetry.h"
#include "util/buf.h"

#define WORKER_MAX 256        /* threads in one pool */
#define WORKER_NODE_ID_MAX 64 /* bytes of node_id ([A-Za-z0-9._-]) */
#define WORKER_LEASE_S_DEFAULT 30
#define WORKER_GRACE_S_DEFAULT 30
#define WORKER_MAINTENANCE_MS_DEFAULT 1000
#define WORKER_POLL_MS_DEFAULT 1000 /* idle re-check without a notify */
#define WORKER_CALLBACK_ATTEMPTS_DEFAULT 5
#define WORKER_CALLBACK_TIMEOUT_MS_DEFAULT 10000
#define WORKER_CALLBACK_BACKOFF_MS_DEFAULT 1000 /* first retry; doubles, cap 60 s */

/* Renders the service's evaluation record (GET /v1/evaluations/{id}) as JSON
 * into b; 0 or a negative errno. Used for webhook bodies. */
typedef int (*worker_record_json_fn)(const struct eval_record *r, struct buf *b);

/* All zero (plus db_url) gives the documented defaults. */
struct worker_options {
    const char *db_url;  /* required: the store ("sqlite:PATH", "postgres://...") */
    int workers;         /* threads, 1..WORKER_MAX; 0 = 1 */
    const char *node_id; /* this process's name in worker ids; NULL = hostname */
    int lease_s;         /* claim lease; 0 = WORKER_LEASE_S_DEFAULT */
    int heartbeat_s;     /* lease renewal + cancel check; 0 = lease_s / 3 (>= 1) */
    int max_attempts;    /* a claim past this many attempts is ended
                            error{worker_lost} without running; 0 = the record's own
                            (the API writes the same config value into each record) */
    int grace_s;         /* default for worker_pool_stop(pool, -1); 0 = 30 */
    int maintenance_ms;  /* requeue/purge/queue-depth period; 0 = 1000 */
    int poll_ms;         /* idle workers re-check the queue; 0 = 1000 */
    int64_t retention_s; /* purge finished evaluations older than this; 0 = keep */

    audit_log_t *audit;     /* borrowed; NULL: use audit_path, or no audit log */
    const char *audit_path; /* opened by the pool when audit is NULL */

    /* the sandbox: a record's limits_json members (sandbox units, as
     * validate.h writes them: wall_timeout_ms, cpu_time_ms, memory_max_bytes,
     * pids_max, output_max_bytes, disk_max_bytes, open_files_max,
     * cpu_cores_milli) override these; zero fields fall to the sandbox
     * defaults */
    struct sandbox_limits default_limits;
    struct sandbox_pricing pricing;
    const char *engine;         /* NULL = native */
    const char *seccomp_policy; /* NULL = default */
    const char *cgroup_parent;  /* NULL = "clearbox" */
    const char *state_dir;      /* NULL = the sandbox default (/run/clearbox as root); the
                                   node lock lives here too */
    bool no_recover;            /* skip sandbox_gc + requeue of this node's work at start */

    /* webhooks (callback.h) */
    const char *callback_secret;       /* HMAC key for X-Clearbox-Signature; NULL = unsigned */
    size_t callback_secret_len;        /* 0 = strlen(callback_secret) */
    bool callback_allow_private;       /* allow loopback/private/link-local destinations */
    int callback_attempts;             /* deliveries tried; 0 = 5 */
    int callback_timeout_ms;           /* per attempt; 0 = 10000 */
    int callback_backoff_ms;           /* first retry delay, doubling (cap 60 s); 0 = 1000 */
    worker_record_json_fn record_json; /* NULL = callback_record_json() (callback.h) */

    const struct telemetry_std *metrics; /* NULL = telemetry_std() (may be NULL: none) */
};

typedef struct worker_pool worker_pool_t;

/* Validate opts, take the node lock, recover (see above), open one store
 * handle per worker and start the threads. *out is NULL on failure. */
int worker_pool_start(const struct worker_options *opts, worker_pool_t **out, char *err,
                      size_t errlen);

/* New work was queued: wake one idle worker now instead of waiting for its
 * poll. Cheap; never blocks on a running evaluation. */
void worker_pool_notify(worker_pool_t *pool);

/* The API set cancel_requested on a running evaluation: if one of this
 * pool's workers runs eval_id, its heartbeat runs now (reads the flag, kills
 * the sandbox) instead of at the next period. A cancel made on another node
 * reaches this one at its next heartbeat (heartbeat_s). Cheap; NULL-safe. */
void worker_pool_cancelled(worker_pool_t *pool, const char *eval_id);

/* Graceful stop, then free: no new claims; running evaluations get grace_s
 * seconds (-1 = opts.grace_s) to finish; the rest are killed and requeued
 * (their attempt counts; at max attempts they end error{worker_lost}).
 * Pending webhooks get what is left of the grace period. Returns 0, or the
 * number (> 0) of evaluations that had to be killed and requeued. NULL is
 * fine. */
int worker_pool_stop(worker_pool_t *pool, int grace_s);

struct worker_pool_stats {
    int workers;                 /* threads started */
    int alive;                   /* threads still looping (a dead one is unhealthy) */
    int busy;                    /* running an evaluation now */
    int idle;                    /* alive and waiting for work */
    int64_t claimed;             /* claims since start */
    int64_t finished;            /* terminal statuses written by this pool */
    int64_t requeued;            /* by maintenance and recovery */
    int64_t lost;                /* error{worker_lost} by maintenance and recovery */
    int64_t purged;              /* retention */
    int64_t queue_depth;         /* at the last maintenance pass (-1 before the first) */
    int64_t oldest_queued_ns;    /* queued_ns of the oldest queued then, 0 if none */
    int64_t last_claim_ns;       /* wall clock of the last claim, 0 if none */
    int64_t last_maintenance_ns; /* wall clock of the last successful pass */
    int callbacks_pending;       /* webhooks waiting for (re)delivery */
};
/* A consistent-enough snapshot (counters read atomically one by one). */
void worker_pool_stats(worker_pool_t *pool, struct worker_pool_stats *st);

/* For /readyz: true when every thread is alive and the maintenance pass
 * succeeded within 3 periods (which also proves the store is reachable).
 * Otherwise false with the reason in why (may be NULL). Queue stalls are for
 * the caller to judge from the stats (oldest_queued_ns vs busy). */
bool worker_pool_healthy(worker_pool_t *pool, char *why, size_t whylen);

/* This process's node id as used in worker ids (the resolved default). */
const char *worker_pool_node_id(const worker_pool_t *pool);

#endif
