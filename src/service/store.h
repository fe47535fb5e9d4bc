/* store.h - the evaluation store and durable queue of the service.
 *
 * One table of evaluation records (DESIGN.md "Contracts": the sandbox result
 * record plus service fields), used as a queue: the API inserts `queued`
 * records, workers claim them with a lease, heartbeat, and finish them with
 * exactly one terminal status. Every status change is also appended to an
 * events table (eval_id, seq, status, ts) that the SSE endpoint replays from a
 * `Last-Event-ID`. docs/storage.md has the schema and the queue semantics.
 *
 * Backends: selected by URL in store_open(): "sqlite:PATH" (WAL, durable
 * commits) and "postgres://..." / "postgresql://..." (store_pg.c, libpq loaded
 * with dlopen; docs/storage.md "PostgreSQL"). A backend is
 * a struct store_ops vtable (bottom of this file); store.c validates every
 * argument before a backend sees it, so backends trust their input.
 *
 * Durability: a call that returns 0 has committed (SQLite: WAL with
 * synchronous=FULL, so the commit survives kill -9 and power loss) - the API
 * may answer 202 after store_insert() returns.
 *
 * Threads: a handle holds one database connection and an internal mutex, so it
 * is safe to share, but calls on one handle run one at a time. For
 * parallelism open one handle per thread (the HTTP pool and each worker):
 * SQLite's WAL lets readers run beside the one writer, and writers wait for
 * each other up to busy_timeout_ms. Two processes may share one database file.
 *
 * Ownership: records returned by store_get/store_list/store_claim are
 * malloc'd; free them with store_record_clear()/store_records_free(). Records
 * passed in (store_insert) are only read.
 *
 * Errors: 0 (or a count) / negative errno with words in err (may be NULL):
 *   -EINVAL    bad argument (the message names the field)
 *   -ENOENT    no such evaluation
 *   -ESTALE    the lease is no longer this worker's (heartbeat, finish)
 *   -EALREADY  cancel of a finished evaluation (HTTP 409)
 *   -EAGAIN    claim: nothing queued
 *   -EBUSY     the database stayed locked past busy_timeout_ms
 *   -ECONNREFUSED  PostgreSQL: cannot connect (open, or reconnecting)
 *   -ECONNRESET    PostgreSQL: the connection broke during this call; the
 *                  next call reconnects (message says if a write may have
 *                  been applied)
 *   -EPROTO    the database schema is newer than this binary, or not migrated
 *   -EIO, -ENOSPC, -ENOMEM   the database failed (message has the details)
 * Never prints. */
#ifndef CLEARBOX_SERVICE_STORE_H
#define CLEARBOX_SERVICE_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* ---- statuses ------------------------------------------------------------ */

enum eval_status {
    EVAL_QUEUED,
    EVAL_RUNNING,
    EVAL_COMPLETED, /* first terminal status */
    EVAL_TIMEOUT,
    EVAL_CPU_TIME_LIMIT,
    EVAL_MEMORY_LIMIT,
    EVAL_PIDS_LIMIT,
    EVAL_OUTPUT_LIMIT,
    EVAL_KILLED,
    EVAL_ERROR,
    EVAL_CANCELLED,
    EVAL_STATUS_COUNT
};

/* "queued", "running", "completed", ...; NULL for an out-of-range value. */
const char *store_status_name(enum eval_status s);
/* 0 and *out, or -EINVAL for an unknown name. */
int store_status_parse(const char *name, enum eval_status *out);
static inline bool store_status_terminal(enum eval_status s)
{
    return s >= EVAL_COMPLETED && s < EVAL_STATUS_COUNT;
}

/* ---- bounds (checked by store.c; the API checks its own, smaller ones) ---- */

#define STORE_ID_LEN 27               /* 26-char id + NUL */
#define STORE_WORKER_ID_MAX 128       /* bytes */
#define STORE_LANGUAGE_MAX 32
#define STORE_SUBMITTER_MAX 256
#define STORE_IDEMPOTENCY_KEY_MAX 256
#define STORE_URL_MAX 2048            /* callback_url */
#define STORE_TRACESTATE_MAX 512      /* W3C: 32 list members, 512 is the common cap */
#define STORE_CODE_MAX (16u << 20)    /* code bytes */
#define STORE_STDIN_MAX (16u << 20)
#define STORE_JSON_MAX (32u << 20)    /* any JSON column (files, result, ...) */
#define STORE_ERROR_MAX 4096          /* error.reason + error.message */
#define STORE_LIST_MAX 1000           /* items per list page */
#define STORE_CALLBACKS_MAX 64        /* delivery attempts kept per evaluation */
#define STORE_CURSOR_LEN 24           /* opaque list cursor + NUL */
#define STORE_DB_URL_MAX 4096
#define STORE_DEFAULT_URL "sqlite:clearbox.db"

/* ---- the record ------------------------------------------------------------ */

/* An evaluation. Text fields are NUL-terminated; code and stdin are bytes
 * with a length (they may hold NUL; a NUL follows them anyway). JSON fields
 * hold JSON text that the API validated (the store keeps the bytes as given:
 * it does not parse them). NULL means absent. Times are ns since the epoch,
 * 0 when not reached. */
struct eval_record {
    char id[STORE_ID_LEN];     /* eval_id: time-ordered, see store_id_new() */
    enum eval_status status;
    char *language;            /* canonical name ("python", "sh") */
    char *code;                /* code_len bytes */
    size_t code_len;
    char *stdin_data;          /* stdin_len bytes; NULL = no stdin */
    size_t stdin_len;
    char *args_json;           /* JSON array, NULL = [] */
    char *files_json;          /* JSON array [{path, content_base64}], NULL = [] */
    char *limits_json;         /* JSON object, NULL = {} */
    char *metadata_json;       /* JSON object, NULL = {} */
    char *submitter;           /* metadata.submitter, NULL/"" = anonymous */
    int priority;              /* 0-9, higher runs first */
    char *idempotency_key;     /* unique per submitter; NULL = none */
    char *callback_url;
    char *traceparent;         /* W3C trace context of the submit span */
    char *tracestate;
    int64_t created_ns;        /* accepted by the API */
    int64_t queued_ns;         /* (re)entered the queue */
    int64_t started_ns;        /* last claim */
    int64_t finished_ns;       /* terminal status reached */
    int attempts;              /* claims so far */
    int max_attempts;          /* 0 on insert = STORE_DEFAULT_MAX_ATTEMPTS */
    char *worker_id;           /* last claimer */
    int64_t lease_expires_ns;  /* while running */
    char *result_json;         /* the sandbox result record as JSON text */
    char *error_reason;        /* error.reason ("worker_lost", ...) */
    char *error_message;
    bool cancel_requested;
    char *callbacks_json;      /* JSON array of delivery attempts, NULL = [] */
    int callback_state;        /* enum store_callback_state (below) */
    int callback_attempts;     /* webhook delivery attempts recorded so far */
    int64_t callback_next_ns;  /* pending: when the next attempt is due; else 0 */
    int64_t event_seq;         /* seq of the latest status event */
    int64_t queue_position;    /* store_insert/store_get: 1-based place among
                                  queued (0 when not queued); list: 0 */
};

#define STORE_DEFAULT_MAX_ATTEMPTS 3

/* Free the record's strings and zero it (the struct itself is the caller's). */
void store_record_clear(struct eval_record *r);
void store_records_free(struct eval_record *r, size_t n);

/* A new eval id: 26 characters of Crockford base32 (ULID layout): 48 bits of
 * milliseconds since the epoch then 80 random bits, so ids sort by creation
 * time to the millisecond and never repeat in practice. */
void store_id_new(char out[STORE_ID_LEN]);
/* Is s a well-formed id (26 chars of the alphabet)? Cheap check before a query. */
bool store_id_valid(const char *s);

/* ---- the handle ------------------------------------------------------------ */

typedef struct store store_t;

enum store_open_flags {
    STORE_OPEN_MIGRATE = 1 << 0, /* apply pending migrations on open */
    STORE_OPEN_NO_CHECK = 1 << 1 /* do not require the schema to be current
                                    (clearbox migrate --status uses this) */
};

struct store_options {
    unsigned flags;          /* enum store_open_flags */
    int busy_timeout_ms;     /* wait for a locked database; 0 = 5000 */
};

/* Open url ("sqlite:PATH" creates the file if needed). Unless
 * STORE_OPEN_NO_CHECK, the schema must be current (after STORE_OPEN_MIGRATE
 * if given), else -EPROTO. opt may be NULL (defaults, no migrate).
 * On failure *out is NULL. */
int store_open(const char *url, const struct store_options *opt, store_t **out, char *err,
               size_t errlen);
void store_close(store_t *s);
/* "sqlite" / "postgres" */
const char *store_backend_name(const store_t *s);
/* A cheap round trip (readyz); 0 or an error. */
int store_ping(store_t *s, char *err, size_t errlen);
/* Full consistency check (SQLite: PRAGMA integrity_check). */
int store_check(store_t *s, char *err, size_t errlen);

/* ---- migrations (migrations.c) -------------------------------------------- */

struct store_migration {
    int version;             /* 1, 2, ... never reused, never edited once released */
    const char *name;        /* snake_case summary */
    const char *sqlite_sql;
    const char *postgres_sql;
};

/* The migrations this binary knows, ascending by version. */
const struct store_migration *store_migrations(size_t *n);
int store_schema_latest(void);

struct store_migration_state {
    int version;
    const char *name;        /* static (from the table above), or "(unknown)" */
    int64_t applied_ns;      /* 0 = pending */
    bool applied_now;        /* by this store_migrate call */
};

/* Apply every pending migration in order, each in its own transaction with
 * its row in schema_migrations, and report each known version's state in
 * st[0..*n) (pass st = NULL to skip the report; cap = room in st). Running it
 * again applies nothing. Returns the number applied now, or an error
 * (-EPROTO when the database has a version this binary does not know). */
int store_migrate(store_t *s, struct store_migration_state *st, size_t cap, size_t *n,
                  char *err, size_t errlen);
/* The same report without applying anything. */
int store_migration_status(store_t *s, struct store_migration_state *st, size_t cap, size_t *n,
                           char *err, size_t errlen);

/* ---- submit and read ------------------------------------------------------- */

/* Insert r as a new queued evaluation; r->id is ignored and a new id made,
 * status/attempts/worker/lease/result/timestamps are set by the store
 * (created_ns/queued_ns = now unless r->created_ns is set). If r has an
 * idempotency_key already used by the same submitter, nothing is inserted:
 * *existed = true and id_out is the first evaluation's id. queue_position
 * (may be NULL) gets the 1-based place in the queue. Durable on return. */
int store_insert(store_t *s, const struct eval_record *r, char id_out[STORE_ID_LEN],
                 bool *existed, int64_t *queue_position, char *err, size_t errlen);
/* One item of store_insert_batch: rec in; rc (0 or -errno), err, and on
 * success id, existed and queue_position out, as store_insert gives them. */
struct store_batch_item {
    const struct eval_record *rec;
    int rc;
    char err[ERR_LEN];
    char id[STORE_ID_LEN];
    bool existed;
    int64_t queue_position;
};

/* store_insert for each of n items, every item durable on return when its
 * rc is 0. SQLite inserts them in one transaction: one commit (one fsync)
 * for the batch instead of one each, and on a failure none of them is
 * stored (each item then has the error). Backends without a batch insert
 * store them one by one, each with its own outcome. */
void store_insert_batch(store_t *s, struct store_batch_item *items, size_t n);
/* The full record; -ENOENT if there is none. out is cleared first. */
int store_get(store_t *s, const char *id, struct eval_record *out, char *err, size_t errlen);

struct store_list_query {
    int status;              /* enum eval_status, or -1 for all */
    int limit;               /* 1..STORE_LIST_MAX; 0 = 50 */
    const char *cursor;      /* NULL/"" = newest; else a next_cursor from before */
    const char *submitter;   /* NULL = everyone */
};

/* Newest first (by insertion order). Items omit code and stdin (code_len and
 * stdin_len are still set) to bound the page. *items is malloc'd (NULL when
 * empty); next_cursor is "" when this was the last page. The cursor is the
 * position of the last item, so rows inserted meanwhile never shift a page:
 * no item is skipped or repeated. A malformed cursor is -EINVAL. q->cursor
 * and next_cursor may be the same buffer. */
int store_list(store_t *s, const struct store_list_query *q, struct eval_record **items,
               size_t *n, char next_cursor[STORE_CURSOR_LEN], char *err, size_t errlen);

/* ---- the queue --------------------------------------------------------------- */

/* Claim the next queued evaluation: highest priority first, FIFO (insertion
 * order) within a priority. Atomically sets running, worker_id, lease_expires
 * = now + lease_ms, attempts + 1, started = now. No two claimers (threads or
 * processes) ever get the same attempt. out gets the full record (its
 * attempts is the lease's attempt number). -EAGAIN when nothing is queued. */
int store_claim(store_t *s, const char *worker_id, int64_t lease_ms, struct eval_record *out,
                char *err, size_t errlen);

/* Extend the lease of (id, worker_id, attempt) to now + lease_ms. -ESTALE if
 * the evaluation is no longer running under this lease (requeued, finished,
 * claimed by another). *cancel_requested (may be NULL) tells the worker to
 * kill the sandbox and finish with EVAL_CANCELLED. */
int store_heartbeat(store_t *s, const char *id, const char *worker_id, int attempt,
                    int64_t lease_ms, bool *cancel_requested, char *err, size_t errlen);

/* Terminal outcome of one attempt. */
struct store_outcome {
    enum eval_status status;     /* a terminal status */
    const char *result_json;     /* the sandbox result record, may be NULL */
    const char *error_reason;    /* with EVAL_ERROR: "sandbox_failed", ... */
    const char *error_message;
};

/* Record the outcome, only while (id, worker_id, attempt) holds the running
 * lease (an expired lease not yet requeued still counts: nobody else has
 * it). Idempotent: finishing again with the same status after success
 * returns 0 and changes nothing. Anything else: -ESTALE. */
int store_finish(store_t *s, const char *id, const char *worker_id, int attempt,
                 const struct store_outcome *o, char *err, size_t errlen);

/* store_finish, then store_claim of the next evaluation for the same
 * worker, in one transaction where the backend can (SQLite: one commit and
 * one fsync per evaluation instead of two). Returns store_finish's result;
 * when the finish failed nothing was claimed and *claim_rc is -ECANCELED.
 * Otherwise *claim_rc is store_claim's: 0 with *next claimed, -EAGAIN when
 * nothing is queued, or an error (the finish still stands). */
int store_finish_claim(store_t *s, const char *id, const char *worker_id, int attempt,
                       const struct store_outcome *o, int64_t lease_ms,
                       struct eval_record *next, int *claim_rc, char *err, size_t errlen);

/* Cancel: queued -> cancelled at once (*now_status = EVAL_CANCELLED);
 * running -> cancel_requested set, reported by the next heartbeat
 * (*now_status = EVAL_RUNNING); finished -> -EALREADY (*now_status = its
 * status). -ENOENT if unknown. now_status may be NULL. */
int store_cancel(store_t *s, const char *id, enum eval_status *now_status, char *err,
                 size_t errlen);

struct store_requeue_counts {
    int requeued;   /* back to queued */
    int lost;       /* attempts exhausted: error / worker_lost */
    int cancelled;  /* cancel had been requested: cancelled */
};

/* Running evaluations whose lease expired before now_ns (0 = now) go back to
 * queued, or to error{worker_lost} when attempts >= max_attempts, or to
 * cancelled when a cancel was requested. */
int store_requeue_expired(store_t *s, int64_t now_ns, struct store_requeue_counts *c, char *err,
                          size_t errlen);
/* The same for every running evaluation of worker_id, lease or not (a
 * restarted single node that killed its leftover sandboxes). */
int store_requeue_worker(store_t *s, const char *worker_id, struct store_requeue_counts *c,
                         char *err, size_t errlen);

struct store_queue_stats {
    int64_t queued;             /* queue depth */
    int64_t running;
    int64_t oldest_queued_ns;   /* queued_ns of the oldest queued, 0 if none */
};
int store_queue_stats(store_t *s, struct store_queue_stats *st, char *err, size_t errlen);
/* Queued evaluations of one submitter ("" = anonymous), for 429 limits. */
int store_submitter_queued(store_t *s, const char *submitter, int64_t *n, char *err,
                           size_t errlen);

/* ---- retention, callbacks, events -------------------------------------------- */

/* Delete finished evaluations whose finished time is older than age_s seconds
 * before now_ns (0 = now), with their events; those whose webhook delivery is
 * still pending are kept until it settles. Returns the count deleted. */
int store_purge(store_t *s, int64_t age_s, int64_t now_ns, int64_t *deleted, char *err,
                size_t errlen);

struct store_callback_delivery {
    int attempt;             /* 1, 2, ... */
    int64_t ts_ns;           /* when it was sent */
    int http_status;         /* 0 = no response */
    int64_t duration_ms;
    bool ok;                 /* 2xx */
    const char *error;       /* transport error or NULL */
};
/* Append one delivery attempt to the record's callbacks array (at most
 * STORE_CALLBACKS_MAX kept; later ones are refused with -E2BIG). */
int store_callback_record(store_t *s, const char *id, const struct store_callback_delivery *d,
                          char *err, size_t errlen);

/* ---- the webhook outbox -------------------------------------------------------
 *
 * A finished evaluation with a callback_url owes one webhook delivery. The
 * statement that writes the terminal status (finish, cancel of a queued
 * evaluation, a requeue that ends it) also sets callback_state = pending and
 * callback_next_ns = the finish time, in the same commit, so the debt survives
 * kill -9 the moment the status does. Senders (callback.c) on any number of
 * nodes claim a due delivery with a lease, exactly like workers claim
 * evaluations, send one attempt, and settle it: the attempt is appended to
 * callbacks and the state moves on (pending again with a later due time,
 * delivered, or failed) in one statement, only if the claim is still theirs.
 * A sender that dies mid-attempt leaves a lease that expires; the attempt is
 * then sent again (at-least-once). */

enum store_callback_state {
    STORE_CALLBACK_NONE,      /* no callback_url, or not finished yet */
    STORE_CALLBACK_PENDING,   /* an attempt is due at callback_next_ns */
    STORE_CALLBACK_DELIVERED, /* a 2xx came back */
    STORE_CALLBACK_FAILED     /* attempts exhausted, or refused for good */
};
/* "none", "pending", "delivered", "failed"; NULL out of range. */
const char *store_callback_state_name(enum store_callback_state s);

/* Claim the pending delivery due first (callback_next_ns <= now) whose lease
 * is free or expired, for owner until now + lease_ms. out gets the full record;
 * the claimed attempt is out->callback_attempts + 1. No two claimers get the
 * same delivery while the lease lasts. -EAGAIN when nothing is due. */
int store_callback_claim(store_t *s, const char *owner, int64_t lease_ms,
                         struct eval_record *out, char *err, size_t errlen);

/* Record attempt d->attempt of a delivery owner claimed, and what follows,
 * in one commit: d is appended to callbacks (while fewer than
 * STORE_CALLBACKS_MAX), callback_attempts = d->attempt, the lease is
 * released and the state becomes next: PENDING (due again at next_ns > 0),
 * DELIVERED or FAILED. -ESTALE when the delivery is no longer owner's claim
 * for that attempt (settled already, or claimed by another after the lease
 * expired), -ENOENT when the evaluation is gone. */
int store_callback_settle(store_t *s, const char *id, const char *owner,
                          const struct store_callback_delivery *d,
                          enum store_callback_state next, int64_t next_ns, char *err,
                          size_t errlen);

/* Release every lease owner holds (a restarted node whose previous process
 * died mid-attempt: the attempt is due again at once). Returns the count. */
int store_callback_release(store_t *s, const char *owner, char *err, size_t errlen);

struct store_callback_stats {
    int64_t pending;      /* deliveries in state pending (claimed or not) */
    int64_t next_due_ns;  /* earliest time one may be claimed; 0 = none pending */
};
int store_callback_stats(store_t *s, struct store_callback_stats *st, char *err, size_t errlen);

struct store_event {
    int64_t seq;             /* 1, 2, ... per evaluation: the SSE event id */
    enum eval_status status;
    int64_t ts_ns;
};
/* Status events of id with seq > after_seq, ascending, at most cap. Returns
 * the count (0: nothing new), -ENOENT if the evaluation does not exist. */
int store_events(store_t *s, const char *id, int64_t after_seq, struct store_event *ev,
                 size_t cap, char *err, size_t errlen);

/* ---- backend interface (implemented by store_sqlite.c and store_pg.c) ---- */

/* Each op gets arguments store.c has validated, runs with the handle's mutex
 * held, and follows the error convention above. */
struct store_ops {
    const char *name;
    int (*open)(store_t *s, const char *target, const struct store_options *opt, char *err,
                size_t errlen);
    void (*close)(store_t *s);
    int (*ping)(store_t *s, char *err, size_t errlen);
    int (*check)(store_t *s, char *err, size_t errlen);
    /* applied versions into applied[0..*n) (ascending) with their times */
    int (*migrations_applied)(store_t *s, int *versions, int64_t *applied_ns, size_t cap,
                              size_t *n, char *err, size_t errlen);
    /* run m's SQL and record it, in one transaction; 1 (nothing done) if the
     * version is recorded already (another process won the race) */
    int (*migration_apply)(store_t *s, const struct store_migration *m, char *err,
                           size_t errlen);
    int (*insert)(store_t *s, const struct eval_record *r, char id_out[STORE_ID_LEN],
                  bool *existed, int64_t *queue_position, char *err, size_t errlen);
    /* optional (NULL: store.c inserts one by one); items' records are
     * checked, their outputs cleared */
    void (*insert_batch)(store_t *s, struct store_batch_item *items, size_t n);
    int (*get)(store_t *s, const char *id, struct eval_record *out, char *err, size_t errlen);
    int (*list)(store_t *s, const struct store_list_query *q, int64_t after_key,
                struct eval_record **items, size_t *n, int64_t *last_key, bool *more,
                char *err, size_t errlen);
    int (*claim)(store_t *s, const char *worker_id, int64_t lease_ms, struct eval_record *out,
                 char *err, size_t errlen);
    int (*heartbeat)(store_t *s, const char *id, const char *worker_id, int attempt,
                     int64_t lease_ms, bool *cancel_requested, char *err, size_t errlen);
    int (*finish)(store_t *s, const char *id, const char *worker_id, int attempt,
                  const struct store_outcome *o, char *err, size_t errlen);
    /* optional (NULL: finish, then claim): both in one transaction; the
     * arguments are checked. A failed claim part must leave the finish
     * committed (or redo it) and report the claim's error in *claim_rc. */
    int (*finish_claim)(store_t *s, const char *id, const char *worker_id, int attempt,
                        const struct store_outcome *o, int64_t lease_ms,
                        struct eval_record *next, int *claim_rc, char *err, size_t errlen);
    int (*cancel)(store_t *s, const char *id, enum eval_status *now_status, char *err,
                  size_t errlen);
    /* worker_id NULL: by lease expiry before now_ns; else all of that worker */
    int (*requeue)(store_t *s, const char *worker_id, int64_t now_ns,
                   struct store_requeue_counts *c, char *err, size_t errlen);
    int (*queue_stats)(store_t *s, struct store_queue_stats *st, char *err, size_t errlen);
    int (*submitter_queued)(store_t *s, const char *submitter, int64_t *n, char *err,
                            size_t errlen);
    int (*purge)(store_t *s, int64_t before_ns, int64_t *deleted, char *err, size_t errlen);
    /* -E2BIG when the evaluation holds STORE_CALLBACKS_MAX deliveries
     * already (store.c words the message) */
    int (*callback_record)(store_t *s, const char *id, const char *delivery_json, char *err,
                           size_t errlen);
    /* -EAGAIN: nothing due */
    int (*callback_claim)(store_t *s, const char *owner, int64_t lease_ms, int64_t now_ns,
                          struct eval_record *out, char *err, size_t errlen);
    /* next_ns 0 = NULL; state is "pending"/"delivered"/"failed"; no row
     * matched: -ESTALE, or -ENOENT when the evaluation does not exist */
    int (*callback_settle)(store_t *s, const char *id, const char *owner, int attempt,
                           const char *delivery_json, const char *state, int64_t next_ns,
                           char *err, size_t errlen);
    int (*callback_release)(store_t *s, const char *owner, char *err, size_t errlen);
    int (*callback_stats)(store_t *s, struct store_callback_stats *st, char *err,
                          size_t errlen);
    /* no rows: -EAGAIN when the evaluation exists (store.c returns 0 for it),
     * -ENOENT when it does not */
    int (*events)(store_t *s, const char *id, int64_t after_seq, struct store_event *ev,
                  size_t cap, char *err, size_t errlen);
};

/* For backends, after a statement on id matched no row: -ENOENT ("no
 * evaluation ID") when the row does not exist (found false), else code with
 * "WHAT: evaluation ID is STATUS"; *status (may be NULL) gets cur. */
int store__why_not(const char *id, bool found, enum eval_status cur, int code,
                   enum eval_status *status, const char *what, char *err, size_t errlen);
/* For backends: finish found id in status cur and not leased by worker_id's
 * attempt; -ESTALE with the words every backend uses. */
int store__not_leased(const char *id, enum eval_status cur, const char *worker_id, int attempt,
                      char *err, size_t errlen);
/* For backends: the callback_state column's text (NULL = none) as an enum
 * store_callback_state value. */
int store__callback_state_parse(const char *name);

/* For tests: the SQLite backend's statements (*n of them), to check their
 * query plans (test_store.c: none sorts or scans the table per call). */
const char *const *store_sqlite__statements(size_t *n);

struct store {
    const struct store_ops *ops;
    void *impl;              /* the backend's state */
    pthread_mutex_t mu;      /* one call at a time per handle */
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

#endif
