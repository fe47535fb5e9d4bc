/* store_sqlite.c - the SQLite backend of the evaluation store (store.h).
 *
 * Durability: WAL journal with synchronous=FULL. In WAL mode NORMAL already
 * survives a crash of the process (kill -9) but may lose the last commits on
 * power loss; the API answers 202 only after the insert committed, so a lost
 * commit would be an accepted evaluation that vanished. FULL fsyncs the WAL
 * on every commit, which costs one fsync per write (measured figures are in
 * docs/storage.md) and makes "202 means stored" true even after power loss.
 *
 * Concurrency: every write that reads first (insert with idempotency, claim,
 * finish, cancel, requeue) runs in BEGIN IMMEDIATE, which takes SQLite's one
 * write lock before the read, so two claimers - threads with their own handle
 * or other processes - serialize and never pick the same row. A deferred
 * transaction could not do that: upgrading its read lock fails with
 * SQLITE_BUSY without calling the busy handler. Single-statement writes
 * (heartbeat, purge batches, callback records) rely on autocommit.
 *
 * Queries that should use a partial index name the status literally
 * (status = 'queued'): SQLite's planner uses a partial index only when the
 * query's WHERE visibly implies the index's WHERE.
 *
 * Statements are prepared lazily (after migrations created the tables) and
 * kept for the life of the handle. The handle's mutex (store.c) makes every
 * call here single-threaded, so the connection is opened with NOMUTEX. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/sqlite_dl.h"
#include "service/store.h"
#include "util/err.h"
#include "util/timeutil.h"

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_IDEM_LOOKUP,
    S_INSERT,
    S_EVENT_ADD,
    S_QUEUE_POS,
    S_GET,
    S_EXISTS,
    S_LIST_ALL,
    S_LIST_STATUS,
    S_LIST_SUBMITTER,
    S_LIST_STATUS_SUBMITTER,
    S_CLAIM_PICK,
    S_CLAIM_SET,
    S_GET_BY_POS,
    S_HEARTBEAT,
    S_STATE,
    S_FINISH,
    S_CANCEL_QUEUED,
    S_CANCEL_REQUEST,
    S_EXPIRED,
    S_OF_WORKER,
    S_REQUEUE,
    S_LOSE,
    S_CANCEL_RUNNING,
    S_COUNT_QUEUED,
    S_COUNT_RUNNING,
    S_SUBMITTER_QUEUED,
    S_PURGE,
    S_CALLBACK,
    S_CB_PICK,
    S_CB_LEASE,
    S_CB_SETTLE,
    S_CB_RELEASE,
    S_CB_STATS,
    S_EVENTS,
    S_COUNT
};

#define COLS_TAIL                                                                          \
    "args, files, limits, metadata, submitter, priority, idempotency_key, callback_url, "  \
    "traceparent, tracestate, created_ns, queued_ns, started_ns, finished_ns, attempts, "  \
    "max_attempts, worker_id, lease_expires_ns, result, error_reason, error_message, "     \
    "cancel_requested, callbacks, event_seq, callback_state, callback_attempts, "          \
    "callback_next_ns"
#define COLS_FULL "pos, id, status, language, code, length(code), stdin, length(stdin), " COLS_TAIL
#define COLS_LIST "pos, id, status, language, NULL, length(code), NULL, length(stdin), " COLS_TAIL
/* The next event of a row: bump event_seq and append (id, seq, status, ts). */
#define EVENT_BUMP "event_seq = event_seq + 1"
/* Part of every statement that writes a terminal status: a row with a
 * callback_url now owes a webhook, due at once (ts = the finish time). Same
 * statement, same commit: the debt is as durable as the status. */
#define CALLBACK_ARM(ts)                                                                   \
    "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, "       \
    "callback_next_ns = CASE WHEN callback_url IS NULL THEN NULL ELSE " ts " END"

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_IDEM_LOOKUP] = "SELECT id FROM evaluations WHERE submitter = ?1 AND idempotency_key = ?2",
    [S_INSERT] = "INSERT INTO evaluations (id, status, language, code, stdin, args, files, "
                 "limits, metadata, submitter, priority, idempotency_key, callback_url, "
                 "traceparent, tracestate, created_ns, queued_ns, max_attempts, event_seq) "
                 "VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                 "?14, ?15, ?16, ?17, 1)",
    [S_EVENT_ADD] = "INSERT INTO evaluation_events (eval_id, seq, status, ts_ns) "
                    "SELECT id, event_seq, status, ?2 FROM evaluations WHERE id = ?1",
    /* Two counts over the queue index (INDEXED BY: the planner otherwise
     * picks the status index and scans every queued row: 2.5 ms at 8,000
     * queued against 0.4-0.7 ms). */
    [S_QUEUE_POS] = "SELECT (SELECT count(*) FROM evaluations INDEXED BY evaluations_queue "
                    "WHERE status = 'queued' AND priority > ?1) + (SELECT count(*) FROM "
                    "evaluations INDEXED BY evaluations_queue WHERE status = 'queued' AND "
                    "priority = ?1 AND pos <= ?2)",
    [S_GET] = "SELECT " COLS_FULL " FROM evaluations WHERE id = ?1",
    [S_EXISTS] = "SELECT status FROM evaluations WHERE id = ?1",
    /* NOT INDEXED: the rowid order; with ANALYZE statistics the planner
     * skip-scanned the submitter index and sorted every row */
    [S_LIST_ALL] = "SELECT " COLS_LIST " FROM evaluations NOT INDEXED WHERE pos < ?1 "
                   "ORDER BY pos DESC LIMIT ?2",
    [S_LIST_STATUS] = "SELECT " COLS_LIST " FROM evaluations WHERE status = ?3 AND pos < ?1 "
                      "ORDER BY pos DESC LIMIT ?2",
    [S_LIST_SUBMITTER] = "SELECT " COLS_LIST " FROM evaluations WHERE submitter = ?4 AND "
                         "pos < ?1 ORDER BY pos DESC LIMIT ?2",
    [S_LIST_STATUS_SUBMITTER] = "SELECT " COLS_LIST " FROM evaluations WHERE status = ?3 AND "
                                "submitter = ?4 AND pos < ?1 ORDER BY pos DESC LIMIT ?2",
    /* INDEXED BY: without statistics the planner takes the status index
     * and sorts every queued row for each claim (3-5 ms at 8,000 queued,
     * 0.1 ms per claim at 100) instead of reading the queue index's first
     * entry (30-100 us) */
    [S_CLAIM_PICK] = "SELECT pos FROM evaluations INDEXED BY evaluations_queue "
                     "WHERE status = 'queued' ORDER BY priority DESC, pos LIMIT 1",
    [S_CLAIM_SET] = "UPDATE evaluations SET status = 'running', worker_id = ?2, "
                    "lease_expires_ns = ?3, attempts = attempts + 1, started_ns = ?4, "
                    EVENT_BUMP " WHERE pos = ?1 AND status = 'queued'",
    [S_GET_BY_POS] = "SELECT " COLS_FULL " FROM evaluations WHERE pos = ?1",
    [S_HEARTBEAT] = "UPDATE evaluations SET lease_expires_ns = ?4 WHERE id = ?1 AND "
                    "status = 'running' AND worker_id = ?2 AND attempts = ?3 "
                    "RETURNING cancel_requested",
    [S_STATE] = "SELECT status, worker_id, attempts FROM evaluations WHERE id = ?1",
    [S_FINISH] = "UPDATE evaluations SET status = ?2, result = ?3, error_reason = ?4, "
                 "error_message = ?5, finished_ns = ?6, lease_expires_ns = NULL, " EVENT_BUMP
                 ", " CALLBACK_ARM("?6") " WHERE id = ?1 AND status = 'running'",
    [S_CANCEL_QUEUED] = "UPDATE evaluations SET status = 'cancelled', finished_ns = ?2, "
                        "cancel_requested = 1, " EVENT_BUMP ", " CALLBACK_ARM("?2")
                        " WHERE id = ?1 AND status = 'queued'",
    [S_CANCEL_REQUEST] = "UPDATE evaluations SET cancel_requested = 1 WHERE id = ?1 AND "
                         "status = 'running'",
    [S_EXPIRED] = "SELECT id, attempts, max_attempts, cancel_requested FROM evaluations "
                  "WHERE status = 'running' AND lease_expires_ns < ?1",
    [S_OF_WORKER] = "SELECT id, attempts, max_attempts, cancel_requested FROM evaluations "
                    "WHERE status = 'running' AND worker_id = ?1",
    [S_REQUEUE] = "UPDATE evaluations SET status = 'queued', queued_ns = ?2, "
                  "lease_expires_ns = NULL, " EVENT_BUMP " WHERE id = ?1 AND status = 'running'",
    [S_LOSE] = "UPDATE evaluations SET status = 'error', error_reason = 'worker_lost', "
               "error_message = ?3, finished_ns = ?2, lease_expires_ns = NULL, " EVENT_BUMP
               ", " CALLBACK_ARM("?2") " WHERE id = ?1 AND status = 'running'",
    [S_CANCEL_RUNNING] = "UPDATE evaluations SET status = 'cancelled', finished_ns = ?2, "
                         "lease_expires_ns = NULL, " EVENT_BUMP ", " CALLBACK_ARM("?2")
                         " WHERE id = ?1 AND status = 'running'",
    [S_COUNT_QUEUED] = "SELECT count(*), min(queued_ns) FROM evaluations WHERE status = 'queued'",
    [S_COUNT_RUNNING] = "SELECT count(*) FROM evaluations WHERE status = 'running'",
    /* INDEXED BY: the planner otherwise counts through the submitter's
     * whole history (submitter_pos): 33 ms per submit at 100,000 finished
     * against 1 ms over the queued-only index */
    [S_SUBMITTER_QUEUED] = "SELECT count(*) FROM evaluations INDEXED BY "
                           "evaluations_queued_submitter WHERE status = 'queued' AND "
                           "submitter = ?1",
    [S_PURGE] = "DELETE FROM evaluations WHERE pos IN (SELECT pos FROM evaluations WHERE "
                "finished_ns IS NOT NULL AND finished_ns < ?1 AND "
                "status NOT IN ('queued', 'running') AND "
                "(callback_state IS NULL OR callback_state <> 'pending') LIMIT 500)",
    [S_CALLBACK] = "UPDATE evaluations SET callbacks = json_insert(callbacks, '$[#]', json(?2)) "
                   "WHERE id = ?1 AND json_array_length(callbacks) < ?3",
    /* the outbox (store.h): pick under BEGIN IMMEDIATE like S_CLAIM_PICK */
    [S_CB_PICK] = "SELECT pos FROM evaluations WHERE callback_state = 'pending' AND "
                  "callback_next_ns <= ?1 AND (callback_lease_ns IS NULL OR "
                  "callback_lease_ns < ?1) ORDER BY callback_next_ns LIMIT 1",
    [S_CB_LEASE] = "UPDATE evaluations SET callback_lease_ns = ?2, callback_owner = ?3 "
                   "WHERE pos = ?1 AND callback_state = 'pending'",
    [S_CB_SETTLE] = "UPDATE evaluations SET callbacks = CASE WHEN "
                    "json_array_length(callbacks) < ?7 THEN "
                    "json_insert(callbacks, '$[#]', json(?4)) ELSE callbacks END, "
                    "callback_attempts = ?3, callback_state = ?5, callback_next_ns = ?6, "
                    "callback_lease_ns = NULL, callback_owner = NULL "
                    "WHERE id = ?1 AND callback_state = 'pending' AND callback_owner = ?2 AND "
                    "callback_attempts = ?3 - 1",
    [S_CB_RELEASE] = "UPDATE evaluations SET callback_lease_ns = NULL WHERE "
                     "callback_state = 'pending' AND callback_owner = ?1 AND "
                     "callback_lease_ns IS NOT NULL",
    [S_CB_STATS] = "SELECT count(*), min(max(callback_next_ns, "
                   "coalesce(callback_lease_ns + 1, 0))) FROM evaluations "
                   "WHERE callback_state = 'pending'",
    [S_EVENTS] = "SELECT seq, status, ts_ns FROM evaluation_events WHERE eval_id = ?1 AND "
                 "seq > ?2 ORDER BY seq LIMIT ?3",
};

const char *const *store_sqlite__statements(size_t *n)
{
    *n = S_COUNT;
    return stmt_sql;
}

/* SQLite through its dlopen table (sqlite_dl.h): every call below happens on
 * a database that sq_open opened after loading it. */
static inline const struct sqlite_dl *dl(void) { return sqlite_dl_table(); }

struct sq {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    uint64_t busy_timeout_ns;
    uint64_t busy_since_ns; /* when the current wait for the lock began */
};

static struct sq *SQ(store_t *s) { return s->impl; }

/* The busy handler. SQLite's own (sqlite3_busy_timeout) sleeps 1, 2, 5, 10,
 * 15, 20, 25, 25, 50, 50, 100 ms between tries: a worker whose claim meets
 * a batch insert holding the write lock for a millisecond slept 10-100 ms
 * (docs/benchmarks.md measured 1.5 s of such sleeps in 5 s). Writers here
 * hold the lock for well under a millisecond, so retry after 50 us,
 * doubling up to 2 ms, until the same busy_timeout has passed. */
static int sq_busy(void *arg, int count)
{
    struct sq *q = arg;
    uint64_t now = time_mono_ns();
    if (count == 0)
        q->busy_since_ns = now;
    if (now - q->busy_since_ns >= q->busy_timeout_ns)
        return 0; /* give up: SQLITE_BUSY */
    uint64_t us = count < 6 ? 50u << count : 2000u;
    struct timespec ts = {0, (long)(us * 1000u)};
    nanosleep(&ts, NULL);
    return 1;
}

/* ---- errors ------------------------------------------------------------------ */

/* Map an SQLite result to a negative errno and say what failed. */
static int sq_fail(struct sq *q, int rc, const char *what, char *err, size_t errlen)
{
    const char *msg = q->db ? dl()->errmsg(q->db) : dl()->errstr(rc);
    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return err_set(err, errlen, -EBUSY, "%s: database is locked (busy_timeout passed): %s",
                       what, msg);
    case SQLITE_FULL:
        code = -ENOSPC;
        break;
    case SQLITE_NOMEM:
        code = -ENOMEM;
        break;
    case SQLITE_READONLY:
        code = -EROFS;
        break;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        code = -EACCES;
        break;
    case SQLITE_CONSTRAINT:
        code = -EEXIST;
        break;
    case SQLITE_CANTOPEN: {
        int e = q->db ? dl()->system_errno(q->db) : 0;
        code = e ? -e : -EIO;
        break;
    }
    case SQLITE_ERROR:
        if (strstr(msg, "no such table"))
            return err_set(err, errlen, -EPROTO,
                           "%s: %s (database not migrated: run 'clearbox migrate')", what, msg);
        code = -EIO;
        break;
    default:
        code = -EIO;
    }
    return err_set(err, errlen, code, "%s: %s", what, msg);
}

/* The prepared statement id, reset and unbound; prepared on first use. */
static int sq_prep(struct sq *q, enum stmt_id id, sqlite3_stmt **out, char *err, size_t errlen)
{
    if (!q->st[id]) {
        int rc = dl()->prepare_v3(q->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &q->st[id], NULL);
        if (rc != SQLITE_OK) {
            q->st[id] = NULL;
            return sq_fail(q, rc, "prepare", err, errlen);
        }
    }
    dl()->reset(q->st[id]);
    dl()->clear_bindings(q->st[id]);
    *out = q->st[id];
    return 0;
}

/* Step a statement that returns no rows (or whose rows we ignore); reset it. */
static int sq_exec(struct sq *q, sqlite3_stmt *st, const char *what, char *err, size_t errlen)
{
    int rc;
    while ((rc = dl()->step(st)) == SQLITE_ROW)
        ;
    dl()->reset(st);
    return rc == SQLITE_DONE ? 0 : sq_fail(q, rc, what, err, errlen);
}

/* Step to the first row: 1 = row, 0 = none, negative = error (reset). */
static int sq_row(struct sq *q, sqlite3_stmt *st, const char *what, char *err, size_t errlen)
{
    int rc = dl()->step(st);
    if (rc == SQLITE_ROW)
        return 1;
    dl()->reset(st);
    return rc == SQLITE_DONE ? 0 : sq_fail(q, rc, what, err, errlen);
}

static int sq_simple(struct sq *q, enum stmt_id id, const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    TRY(sq_prep(q, id, &st, err, errlen));
    return sq_exec(q, st, what, err, errlen);
}

static int tx_begin(struct sq *q, char *err, size_t errlen)
{
    return sq_simple(q, S_BEGIN, "begin", err, errlen);
}

static int tx_commit(struct sq *q, char *err, size_t errlen)
{
    int rc = sq_simple(q, S_COMMIT, "commit", err, errlen);
    if (rc < 0 && !dl()->get_autocommit(q->db)) {
        char e2[ERR_LEN];
        sq_simple(q, S_ROLLBACK, "rollback", e2, sizeof e2);
    }
    return rc;
}

/* Roll back after a failure; keeps rc and the first error message. */
static int tx_abort(struct sq *q, int rc)
{
    if (!dl()->get_autocommit(q->db)) {
        char e2[ERR_LEN];
        sq_simple(q, S_ROLLBACK, "rollback", e2, sizeof e2);
    }
    return rc;
}

/* ---- binding and reading --------------------------------------------------------- */

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? dl()->bind_text(st, i, s, (int)strlen(s), SQLITE_STATIC) : dl()->bind_null(st, i);
}

/* Bytes as a blob: NULL pointer = SQL NULL, else exactly n bytes (n may be 0). */
static int bind_bytes(sqlite3_stmt *st, int i, const char *p, size_t n)
{
    if (!p)
        return dl()->bind_null(st, i);
    return dl()->bind_blob64(st, i, n ? p : "", n, SQLITE_STATIC);
}

static int bind_json(sqlite3_stmt *st, int i, const char *s)
{
    return s ? bind_bytes(st, i, s, strlen(s)) : dl()->bind_null(st, i);
}

/* Copy column i (NULL stays NULL) into a malloc'd NUL-terminated buffer. */
static int col_dup(sqlite3_stmt *st, int i, char **out, size_t *len)
{
    *out = NULL;
    if (len)
        *len = 0;
    if (dl()->column_type(st, i) == SQLITE_NULL)
        return 0;
    const void *p = dl()->column_blob(st, i);
    size_t n = (size_t)dl()->column_bytes(st, i);
    char *c = malloc(n + 1);
    if (!c)
        return -ENOMEM;
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    *out = c;
    if (len)
        *len = n;
    return 0;
}

static int64_t col_i64(sqlite3_stmt *st, int i) { return dl()->column_int64(st, i); }

static enum eval_status col_status(sqlite3_stmt *st, int i)
{
    enum eval_status s = EVAL_ERROR;
    store_status_parse((const char *)dl()->column_text(st, i), &s);
    return s;
}

/* Fill r from a row selected with COLS_FULL or COLS_LIST; *pos gets its pos. */
static int row_read(sqlite3_stmt *st, struct eval_record *r, int64_t *pos)
{
    memset(r, 0, sizeof *r);
    if (pos)
        *pos = col_i64(st, 0);
    const char *id = (const char *)dl()->column_text(st, 1);
    snprintf(r->id, sizeof r->id, "%s", id ? id : "");
    r->status = col_status(st, 2);
    int rc = 0;
    rc |= col_dup(st, 3, &r->language, NULL);
    rc |= col_dup(st, 4, &r->code, NULL);
    r->code_len = (size_t)col_i64(st, 5);
    rc |= col_dup(st, 6, &r->stdin_data, NULL);
    r->stdin_len = (size_t)col_i64(st, 7);
    rc |= col_dup(st, 8, &r->args_json, NULL);
    rc |= col_dup(st, 9, &r->files_json, NULL);
    rc |= col_dup(st, 10, &r->limits_json, NULL);
    rc |= col_dup(st, 11, &r->metadata_json, NULL);
    rc |= col_dup(st, 12, &r->submitter, NULL);
    r->priority = (int)col_i64(st, 13);
    rc |= col_dup(st, 14, &r->idempotency_key, NULL);
    rc |= col_dup(st, 15, &r->callback_url, NULL);
    rc |= col_dup(st, 16, &r->traceparent, NULL);
    rc |= col_dup(st, 17, &r->tracestate, NULL);
    r->created_ns = col_i64(st, 18);
    r->queued_ns = col_i64(st, 19);
    r->started_ns = col_i64(st, 20);
    r->finished_ns = col_i64(st, 21);
    r->attempts = (int)col_i64(st, 22);
    r->max_attempts = (int)col_i64(st, 23);
    rc |= col_dup(st, 24, &r->worker_id, NULL);
    r->lease_expires_ns = col_i64(st, 25);
    rc |= col_dup(st, 26, &r->result_json, NULL);
    rc |= col_dup(st, 27, &r->error_reason, NULL);
    rc |= col_dup(st, 28, &r->error_message, NULL);
    r->cancel_requested = col_i64(st, 29) != 0;
    rc |= col_dup(st, 30, &r->callbacks_json, NULL);
    r->event_seq = col_i64(st, 31);
    r->callback_state =
        store__callback_state_parse((const char *)dl()->column_text(st, 32));
    r->callback_attempts = (int)col_i64(st, 33);
    r->callback_next_ns = col_i64(st, 34);
    if (rc) {
        store_record_clear(r);
        return -ENOMEM;
    }
    return 0;
}

/* ---- open, close, migrations ------------------------------------------------- */

static int sq_pragma(struct sq *q, const char *sql, const char *want, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = dl()->prepare_v2(q->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(q, rc, sql, err, errlen);
    rc = dl()->step(st);
    int ret = 0;
    if (rc == SQLITE_ROW && want) {
        const char *got = (const char *)dl()->column_text(st, 0);
        if (!got || strcasecmp(got, want) != 0)
            ret = err_set(err, errlen, -EIO, "%s gave '%s', not '%s'", sql, got ? got : "",
                          want);
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ret = sq_fail(q, rc, sql, err, errlen);
    }
    dl()->finalize(st);
    return ret;
}

static void sq_close(store_t *s)
{
    struct sq *q = SQ(s);
    if (!q)
        return;
    for (int i = 0; i < S_COUNT; i++)
        dl()->finalize(q->st[i]);
    dl()->close_v2(q->db);
    free(q);
    s->impl = NULL;
}

static int sq_open(store_t *s, const char *path, const struct store_options *opt, char *err,
                   size_t errlen)
{
    bool memory = !strcmp(path, ":memory:");
    /* The database holds submitted code and results: create it 0600 (SQLite
     * gives its -wal and -shm files the database file's mode). */
    if (!memory) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return err_sys(err, errlen, -errno, "cannot open database %s", path);
        close(fd);
    }
    if (!sqlite_dl(err, errlen))
        return -ENOENT;
    struct sq *q = calloc(1, sizeof *q);
    if (!q)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    s->impl = q;
    int rc = dl()->open_v2(path, &q->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        rc = sq_fail(q, rc, "open", err, errlen);
        goto fail;
    }
    q->busy_timeout_ns = (uint64_t)(opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms : 0) * 1000000u;
    dl()->busy_handler(q->db, sq_busy, q);
    rc = sq_pragma(q, "PRAGMA journal_mode=WAL", memory ? "memory" : "wal", err, errlen);
    if (rc < 0)
        goto fail;
    if ((rc = sq_pragma(q, "PRAGMA synchronous=FULL", NULL, err, errlen)) < 0 ||
        (rc = sq_pragma(q, "PRAGMA foreign_keys=ON", NULL, err, errlen)) < 0 ||
        (rc = sq_pragma(q, "PRAGMA foreign_keys", "1", err, errlen)) < 0 ||
        (rc = sq_pragma(q, "PRAGMA synchronous", "2", err, errlen)) < 0)
        goto fail;
    return 0;
fail:
    sq_close(s);
    return rc;
}

static int sq_ping(store_t *s, char *err, size_t errlen)
{
    return sq_pragma(SQ(s), "SELECT 1", "1", err, errlen);
}

static int sq_check(store_t *s, char *err, size_t errlen)
{
    int rc = sq_pragma(SQ(s), "PRAGMA integrity_check", "ok", err, errlen);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st;
    rc = dl()->prepare_v2(SQ(s)->db, "PRAGMA foreign_key_check", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(SQ(s), rc, "foreign_key_check", err, errlen);
    rc = dl()->step(st);
    dl()->finalize(st);
    if (rc == SQLITE_ROW)
        return err_set(err, errlen, -EIO, "foreign_key_check found orphan events");
    return rc == SQLITE_DONE ? 0 : sq_fail(SQ(s), rc, "foreign_key_check", err, errlen);
}

static int sq_migrations_applied(store_t *s, int *versions, int64_t *applied_ns, size_t cap,
                                 size_t *n, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    *n = 0;
    sqlite3_stmt *st;
    int rc = dl()->prepare_v2(q->db,
                                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'schema_migrations'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(q, rc, "schema_migrations", err, errlen);
    rc = dl()->step(st);
    dl()->finalize(st);
    if (rc == SQLITE_DONE)
        return 0; /* a new database */
    if (rc != SQLITE_ROW)
        return sq_fail(q, rc, "schema_migrations", err, errlen);
    rc = dl()->prepare_v2(q->db,
                            "SELECT version, applied_ns FROM schema_migrations ORDER BY version",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(q, rc, "schema_migrations", err, errlen);
    while ((rc = dl()->step(st)) == SQLITE_ROW) {
        if (*n >= cap) {
            dl()->finalize(st);
            return err_set(err, errlen, -E2BIG, "more than %zu migrations recorded", cap);
        }
        versions[*n] = dl()->column_int(st, 0);
        applied_ns[*n] = dl()->column_int64(st, 1);
        (*n)++;
    }
    dl()->finalize(st);
    return rc == SQLITE_DONE ? 0 : sq_fail(q, rc, "schema_migrations", err, errlen);
}

/* 0 = applied now, 1 = another process applied it meanwhile. */
static int sq_migration_apply(store_t *s, const struct store_migration *m, char *err,
                              size_t errlen)
{
    struct sq *q = SQ(s);
    char *emsg = NULL;
    TRY(tx_begin(q, err, errlen));
    int rc = dl()->exec(q->db,
                          "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                          "  version    INTEGER PRIMARY KEY,\n"
                          "  name       TEXT    NOT NULL,\n"
                          "  applied_ns INTEGER NOT NULL\n"
                          ")",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return tx_abort(q, sq_fail(q, rc, "create schema_migrations", err, errlen));
    sqlite3_stmt *st;
    rc = dl()->prepare_v2(q->db, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &st,
                            NULL);
    if (rc != SQLITE_OK)
        return tx_abort(q, sq_fail(q, rc, "schema_migrations", err, errlen));
    dl()->bind_int(st, 1, m->version);
    rc = dl()->step(st);
    dl()->finalize(st);
    if (rc == SQLITE_ROW) {
        tx_abort(q, 0);
        return 1;
    }
    rc = dl()->exec(q->db, m->sqlite_sql, NULL, NULL, &emsg);
    if (rc != SQLITE_OK) {
        int code = err_set(err, errlen, -EIO, "migration %d (%s) failed: %s", m->version, m->name,
                           emsg ? emsg : dl()->errstr(rc));
        dl()->free(emsg);
        return tx_abort(q, code);
    }
    rc = dl()->prepare_v2(q->db,
                            "INSERT INTO schema_migrations (version, name, applied_ns) "
                            "VALUES (?1, ?2, ?3)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return tx_abort(q, sq_fail(q, rc, "schema_migrations", err, errlen));
    dl()->bind_int(st, 1, m->version);
    dl()->bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    dl()->bind_int64(st, 3, (int64_t)time_now_ns());
    rc = dl()->step(st);
    dl()->finalize(st);
    if (rc != SQLITE_DONE)
        return tx_abort(q, sq_fail(q, rc, "record migration", err, errlen));
    return tx_commit(q, err, errlen);
}

/* ---- submit and read ------------------------------------------------------------- */

static int add_event(struct sq *q, const char *id, int64_t ts, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_EVENT_ADD, &st, err, errlen));
    bind_text(st, 1, id);
    dl()->bind_int64(st, 2, ts);
    return sq_exec(q, st, "add event", err, errlen);
}

static int queue_position(struct sq *q, int priority, int64_t pos, int64_t *out, char *err,
                          size_t errlen)
{
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_QUEUE_POS, &st, err, errlen));
    dl()->bind_int(st, 1, priority);
    dl()->bind_int64(st, 2, pos);
    int rc = sq_row(q, st, "queue position", err, errlen);
    if (rc < 0)
        return rc;
    *out = rc ? col_i64(st, 0) : 0;
    dl()->reset(st);
    return 0;
}

/* Position of an existing row by id: 0 when it is not queued. */
static int queue_position_of(struct sq *q, const char *id, int64_t *out, char *err,
                             size_t errlen)
{
    sqlite3_stmt *st;
    *out = 0;
    int rc = dl()->prepare_v2(q->db,
                                "SELECT priority, pos FROM evaluations WHERE id = ?1 AND "
                                "status = 'queued'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(q, rc, "queue position", err, errlen);
    bind_text(st, 1, id);
    rc = dl()->step(st);
    int prio = dl()->column_int(st, 0);
    int64_t pos = dl()->column_int64(st, 1);
    dl()->finalize(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sq_fail(q, rc, "queue position", err, errlen);
    return queue_position(q, prio, pos, out, err, errlen);
}

/* Inside a write transaction: insert r (or find its idempotency key's
 * first evaluation: *existed). id_out is set either way. */
static int insert_rows(struct sq *q, const struct eval_record *r, char id_out[STORE_ID_LEN],
                       bool *existed, int64_t *qpos, char *err, size_t errlen)
{
    const char *submitter = r->submitter ? r->submitter : "";
    sqlite3_stmt *st;
    int rc;
    *qpos = 0;
    if (r->idempotency_key) {
        TRY(sq_prep(q, S_IDEM_LOOKUP, &st, err, errlen));
        bind_text(st, 1, submitter);
        bind_text(st, 2, r->idempotency_key);
        rc = sq_row(q, st, "idempotency lookup", err, errlen);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            snprintf(id_out, STORE_ID_LEN, "%s", (const char *)dl()->column_text(st, 0));
            dl()->reset(st);
            *existed = true;
            return queue_position_of(q, id_out, qpos, err, errlen);
        }
    }
    char id[STORE_ID_LEN];
    store_id_new(id);
    int64_t now = (int64_t)time_now_ns();
    int64_t created = r->created_ns ? r->created_ns : now;
    TRY(sq_prep(q, S_INSERT, &st, err, errlen));
    bind_text(st, 1, id);
    bind_text(st, 2, r->language);
    bind_bytes(st, 3, r->code ? r->code : "", r->code_len);
    bind_bytes(st, 4, r->stdin_data, r->stdin_len);
    bind_json(st, 5, r->args_json);
    bind_json(st, 6, r->files_json);
    bind_json(st, 7, r->limits_json);
    bind_json(st, 8, r->metadata_json);
    bind_text(st, 9, submitter);
    dl()->bind_int(st, 10, r->priority);
    bind_text(st, 11, r->idempotency_key);
    bind_text(st, 12, r->callback_url);
    bind_text(st, 13, r->traceparent);
    bind_text(st, 14, r->tracestate);
    dl()->bind_int64(st, 15, created);
    dl()->bind_int64(st, 16, now);
    dl()->bind_int(st, 17, r->max_attempts ? r->max_attempts : STORE_DEFAULT_MAX_ATTEMPTS);
    TRY(sq_exec(q, st, "insert evaluation", err, errlen));
    int64_t pos = dl()->last_insert_rowid(q->db);
    TRY(add_event(q, id, now, err, errlen));
    TRY(queue_position(q, r->priority, pos, qpos, err, errlen));
    snprintf(id_out, STORE_ID_LEN, "%s", id);
    return 0;
}

static int sq_insert(store_t *s, const struct eval_record *r, char id_out[STORE_ID_LEN],
                     bool *existed, int64_t *qpos, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    TRY(tx_begin(q, err, errlen));
    int rc = insert_rows(q, r, id_out, existed, qpos, err, errlen);
    if (rc < 0 || *existed) /* nothing written: roll back the empty transaction */
        rc = tx_abort(q, rc);
    else
        rc = tx_commit(q, err, errlen);
    if (rc < 0)
        id_out[0] = '\0';
    return rc;
}

/* Every item in one transaction: one commit for the batch. A failure rolls
 * all of it back and every item gets the error. */
static void sq_insert_batch(store_t *s, struct store_batch_item *items, size_t n)
{
    struct sq *q = SQ(s);
    char err[ERR_LEN];
    int rc = tx_begin(q, err, sizeof err);
    bool wrote = false;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct store_batch_item *it = &items[i];
        if (it->rc == 0) {
            rc = insert_rows(q, it->rec, it->id, &it->existed, &it->queue_position, err,
                             sizeof err);
            wrote |= !it->existed;
        }
    }
    if (rc == 0)
        rc = wrote ? tx_commit(q, err, sizeof err) : tx_abort(q, 0);
    else
        tx_abort(q, rc);
    if (rc == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct store_batch_item *it = &items[i];
        if (it->rc == 0) {
            it->rc = rc;
            snprintf(it->err, sizeof it->err, "%s", err);
            it->id[0] = '\0';
            it->existed = false;
            it->queue_position = 0;
        }
    }
}

static int sq_get(store_t *s, const char *id, struct eval_record *out, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_GET, &st, err, errlen));
    bind_text(st, 1, id);
    int rc = sq_row(q, st, "get evaluation", err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return err_set(err, errlen, -ENOENT, "no evaluation %s", id);
    int64_t pos;
    rc = row_read(st, out, &pos);
    dl()->reset(st);
    if (rc < 0)
        return err_set(err, errlen, rc, "out of memory reading %s", id);
    if (out->status == EVAL_QUEUED) {
        rc = queue_position(q, out->priority, pos, &out->queue_position, err, errlen);
        if (rc < 0) {
            store_record_clear(out);
            return rc;
        }
    }
    return 0;
}

static int sq_list(store_t *s, const struct store_list_query *lq, int64_t after_key,
                   struct eval_record **items, size_t *n, int64_t *last_key, bool *more,
                   char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    enum stmt_id id = lq->status >= 0 ? (lq->submitter ? S_LIST_STATUS_SUBMITTER : S_LIST_STATUS)
                                      : (lq->submitter ? S_LIST_SUBMITTER : S_LIST_ALL);
    sqlite3_stmt *st;
    TRY(sq_prep(q, id, &st, err, errlen));
    dl()->bind_int64(st, 1, after_key ? after_key : INT64_MAX);
    dl()->bind_int(st, 2, lq->limit + 1); /* one more tells whether a next page exists */
    if (lq->status >= 0)
        bind_text(st, 3, store_status_name((enum eval_status)lq->status));
    if (lq->submitter)
        bind_text(st, 4, lq->submitter);
    struct eval_record *v = calloc((size_t)lq->limit, sizeof *v);
    if (!v)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    size_t k = 0;
    int rc;
    while ((rc = dl()->step(st)) == SQLITE_ROW) {
        if (k == (size_t)lq->limit) {
            *more = true;
            break;
        }
        if (row_read(st, &v[k], last_key) < 0) {
            dl()->reset(st);
            store_records_free(v, k);
            return err_set(err, errlen, -ENOMEM, "out of memory");
        }
        k++;
    }
    dl()->reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_records_free(v, k);
        return sq_fail(q, rc, "list evaluations", err, errlen);
    }
    if (k == 0) {
        free(v);
        v = NULL;
    }
    *items = v;
    *n = k;
    return 0;
}

/* ---- the queue ------------------------------------------------------------------- */

/* Inside a claim's transaction: the row just claimed (at queue position
 * pos) into *out. 0 or -errno; the caller aborts the transaction. */
static int read_claimed(struct sq *q, int64_t pos, struct eval_record *out, const char *what,
                        char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = sq_prep(q, S_GET_BY_POS, &st, err, errlen);
    if (rc < 0)
        return rc;
    dl()->bind_int64(st, 1, pos);
    rc = sq_row(q, st, what, err, errlen);
    if (rc <= 0)
        return rc < 0 ? rc : err_set(err, errlen, -EIO, "claimed row vanished");
    rc = row_read(st, out, NULL);
    dl()->reset(st);
    return rc < 0 ? err_set(err, errlen, rc, "out of memory") : 0;
}

/* Inside a write transaction: claim the next queued evaluation into *out.
 * 0, -EAGAIN (nothing queued) or an error (out cleared). */
static int claim_rows(struct sq *q, const char *worker_id, int64_t lease_ms,
                      struct eval_record *out, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc;
    TRY(sq_prep(q, S_CLAIM_PICK, &st, err, errlen));
    rc = sq_row(q, st, "pick next", err, errlen);
    if (rc <= 0)
        return rc < 0 ? rc : err_set(err, errlen, -EAGAIN, "nothing queued");
    int64_t pos = col_i64(st, 0);
    dl()->reset(st);
    int64_t now = (int64_t)time_now_ns();
    TRY(sq_prep(q, S_CLAIM_SET, &st, err, errlen));
    dl()->bind_int64(st, 1, pos);
    bind_text(st, 2, worker_id);
    dl()->bind_int64(st, 3, now + lease_ms * 1000000);
    dl()->bind_int64(st, 4, now);
    TRY(sq_exec(q, st, "claim", err, errlen));
    if (dl()->changes(q->db) != 1) /* cannot happen under BEGIN IMMEDIATE */
        return err_set(err, errlen, -EIO, "claim: row changed under the write lock");
    TRY(read_claimed(q, pos, out, "read claimed", err, errlen));
    if ((rc = add_event(q, out->id, now, err, errlen)) < 0) {
        store_record_clear(out);
        return rc;
    }
    return 0;
}

static int sq_claim(store_t *s, const char *worker_id, int64_t lease_ms, struct eval_record *out,
                    char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    TRY(tx_begin(q, err, errlen));
    int rc = claim_rows(q, worker_id, lease_ms, out, err, errlen);
    if (rc < 0)
        return tx_abort(q, rc);
    if ((rc = tx_commit(q, err, errlen)) < 0)
        store_record_clear(out);
    return rc;
}

/* After a write matched no row: -ENOENT if id does not exist, else the code
 * given (the row exists in another state); *status gets that state. */
static int why_not(struct sq *q, const char *id, int code, enum eval_status *status,
                   const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_EXISTS, &st, err, errlen));
    bind_text(st, 1, id);
    int rc = sq_row(q, st, what, err, errlen);
    if (rc < 0)
        return rc;
    enum eval_status cur = rc ? col_status(st, 0) : EVAL_QUEUED;
    dl()->reset(st);
    return store__why_not(id, rc == 1, cur, code, status, what, err, errlen);
}

static int sq_heartbeat(store_t *s, const char *id, const char *worker_id, int attempt,
                        int64_t lease_ms, bool *cancel_requested, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_HEARTBEAT, &st, err, errlen));
    bind_text(st, 1, id);
    bind_text(st, 2, worker_id);
    dl()->bind_int(st, 3, attempt);
    dl()->bind_int64(st, 4, (int64_t)time_now_ns() + lease_ms * 1000000);
    int rc = sq_row(q, st, "heartbeat", err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return why_not(q, id, -ESTALE, NULL, "heartbeat: lease lost", err, errlen);
    *cancel_requested = col_i64(st, 0) != 0;
    return sq_exec(q, st, "heartbeat", err, errlen); /* finish the statement: commits */
}

/* Inside a write transaction: record the outcome. 0 = written, 1 = the
 * same outcome was recorded before (nothing written), or an error. */
static int finish_rows(struct sq *q, const char *id, const char *worker_id, int attempt,
                       const struct store_outcome *o, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_STATE, &st, err, errlen));
    bind_text(st, 1, id);
    int rc = sq_row(q, st, "finish", err, errlen);
    if (rc <= 0)
        return rc < 0 ? rc : err_set(err, errlen, -ENOENT, "no evaluation %s", id);
    enum eval_status cur = col_status(st, 0);
    const char *w = (const char *)dl()->column_text(st, 1);
    bool mine = w && !strcmp(w, worker_id) && dl()->column_int(st, 2) == attempt;
    dl()->reset(st);
    if (mine && cur == o->status)
        return 1; /* finished before with this outcome: idempotent */
    if (!mine || cur != EVAL_RUNNING)
        return store__not_leased(id, cur, worker_id, attempt, err, errlen);
    int64_t now = (int64_t)time_now_ns();
    TRY(sq_prep(q, S_FINISH, &st, err, errlen));
    bind_text(st, 1, id);
    bind_text(st, 2, store_status_name(o->status));
    bind_json(st, 3, o->result_json);
    bind_text(st, 4, o->error_reason);
    bind_text(st, 5, o->error_message);
    dl()->bind_int64(st, 6, now);
    TRY(sq_exec(q, st, "finish", err, errlen));
    TRY(add_event(q, id, now, err, errlen));
    return 0;
}

static int sq_finish(store_t *s, const char *id, const char *worker_id, int attempt,
                     const struct store_outcome *o, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    TRY(tx_begin(q, err, errlen));
    int rc = finish_rows(q, id, worker_id, attempt, o, err, errlen);
    if (rc != 0)
        return tx_abort(q, rc < 0 ? rc : 0);
    return tx_commit(q, err, errlen);
}

/* The finish and the next claim in one transaction: one commit. */
static int sq_finish_claim(store_t *s, const char *id, const char *worker_id, int attempt,
                           const struct store_outcome *o, int64_t lease_ms,
                           struct eval_record *next, int *claim_rc, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    TRY(tx_begin(q, err, errlen));
    int rc = finish_rows(q, id, worker_id, attempt, o, err, errlen);
    if (rc < 0)
        return tx_abort(q, rc);
    char e2[ERR_LEN];
    int crc = claim_rows(q, worker_id, lease_ms, next, e2, sizeof e2);
    if (crc < 0 && crc != -EAGAIN) { /* roll both back; the finish alone */
        tx_abort(q, crc);
        *claim_rc = crc;
        return sq_finish(s, id, worker_id, attempt, o, err, errlen);
    }
    if (rc == 1 && crc == -EAGAIN) { /* nothing written */
        *claim_rc = crc;
        return tx_abort(q, 0);
    }
    if ((rc = tx_commit(q, err, errlen)) < 0) {
        if (crc == 0)
            store_record_clear(next);
        return rc; /* *claim_rc stays -ECANCELED */
    }
    *claim_rc = crc;
    return 0;
}

static int sq_cancel(store_t *s, const char *id, enum eval_status *now_status, char *err,
                     size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    int rc;
    TRY(tx_begin(q, err, errlen));
    int64_t now = (int64_t)time_now_ns();
    if ((rc = sq_prep(q, S_CANCEL_QUEUED, &st, err, errlen)) < 0)
        return tx_abort(q, rc);
    bind_text(st, 1, id);
    dl()->bind_int64(st, 2, now);
    if ((rc = sq_exec(q, st, "cancel", err, errlen)) < 0)
        return tx_abort(q, rc);
    if (dl()->changes(q->db) == 1) {
        *now_status = EVAL_CANCELLED;
        if ((rc = add_event(q, id, now, err, errlen)) < 0)
            return tx_abort(q, rc);
        return tx_commit(q, err, errlen);
    }
    if ((rc = sq_prep(q, S_CANCEL_REQUEST, &st, err, errlen)) < 0)
        return tx_abort(q, rc);
    bind_text(st, 1, id);
    if ((rc = sq_exec(q, st, "cancel", err, errlen)) < 0)
        return tx_abort(q, rc);
    if (dl()->changes(q->db) == 1) {
        *now_status = EVAL_RUNNING;
        return tx_commit(q, err, errlen);
    }
    rc = why_not(q, id, -EALREADY, now_status, "cancel: already finished", err, errlen);
    return tx_abort(q, rc);
}

struct lost_row {
    char id[STORE_ID_LEN];
    int attempts, max_attempts;
    bool cancel;
};

static int sq_requeue(store_t *s, const char *worker_id, int64_t now_ns,
                      struct store_requeue_counts *c, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    int rc;
    struct lost_row *rows = NULL;
    size_t n = 0, cap = 0;
    TRY(tx_begin(q, err, errlen));
    if ((rc = sq_prep(q, worker_id ? S_OF_WORKER : S_EXPIRED, &st, err, errlen)) < 0)
        return tx_abort(q, rc);
    if (worker_id)
        bind_text(st, 1, worker_id);
    else
        dl()->bind_int64(st, 1, now_ns);
    /* Collect first, then update: no writes under an open cursor. */
    while ((rc = dl()->step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct lost_row *nr = realloc(rows, ncap * sizeof *rows);
            if (!nr) {
                dl()->reset(st);
                free(rows);
                return tx_abort(q, err_set(err, errlen, -ENOMEM, "out of memory"));
            }
            rows = nr;
            cap = ncap;
        }
        snprintf(rows[n].id, STORE_ID_LEN, "%s", (const char *)dl()->column_text(st, 0));
        rows[n].attempts = dl()->column_int(st, 1);
        rows[n].max_attempts = dl()->column_int(st, 2);
        rows[n].cancel = dl()->column_int(st, 3) != 0;
        n++;
    }
    dl()->reset(st);
    if (rc != SQLITE_DONE) {
        free(rows);
        return tx_abort(q, sq_fail(q, rc, "find lost leases", err, errlen));
    }
    int64_t now = (int64_t)time_now_ns();
    for (size_t i = 0; i < n; i++) {
        struct lost_row *r = &rows[i];
        enum stmt_id sid = r->cancel                          ? S_CANCEL_RUNNING
                           : r->attempts >= r->max_attempts ? S_LOSE
                                                              : S_REQUEUE;
        if ((rc = sq_prep(q, sid, &st, err, errlen)) < 0)
            goto fail;
        bind_text(st, 1, r->id);
        dl()->bind_int64(st, 2, now);
        char msg[160];
        if (sid == S_LOSE) {
            snprintf(msg, sizeof msg,
                     "the worker running it was lost (no heartbeat or restarted) on each of "
                     "%d attempts",
                     r->attempts);
            bind_text(st, 3, msg);
        }
        if ((rc = sq_exec(q, st, "requeue", err, errlen)) < 0 ||
            (rc = add_event(q, r->id, now, err, errlen)) < 0)
            goto fail;
        if (sid == S_CANCEL_RUNNING)
            c->cancelled++;
        else if (sid == S_LOSE)
            c->lost++;
        else
            c->requeued++;
    }
    free(rows);
    rows = NULL;
    if ((rc = tx_commit(q, err, errlen)) < 0)
        goto fail;
    return c->requeued + c->lost + c->cancelled;
fail:
    free(rows);
    memset(c, 0, sizeof *c);
    return tx_abort(q, rc);
}

static int sq_queue_stats(store_t *s, struct store_queue_stats *qs, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_COUNT_QUEUED, &st, err, errlen));
    int rc = sq_row(q, st, "queue depth", err, errlen);
    if (rc < 0)
        return rc;
    qs->queued = col_i64(st, 0);
    qs->oldest_queued_ns = col_i64(st, 1); /* NULL when empty: 0 */
    dl()->reset(st);
    TRY(sq_prep(q, S_COUNT_RUNNING, &st, err, errlen));
    rc = sq_row(q, st, "running count", err, errlen);
    if (rc < 0)
        return rc;
    qs->running = col_i64(st, 0);
    dl()->reset(st);
    return 0;
}

static int sq_submitter_queued(store_t *s, const char *submitter, int64_t *n, char *err,
                               size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_SUBMITTER_QUEUED, &st, err, errlen));
    bind_text(st, 1, submitter);
    int rc = sq_row(q, st, "submitter queued", err, errlen);
    if (rc < 0)
        return rc;
    *n = col_i64(st, 0);
    dl()->reset(st);
    return 0;
}

/* ---- retention, callbacks, events ------------------------------------------------- */

static int sq_purge(store_t *s, int64_t before_ns, int64_t *deleted, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    /* Batches of 500 in their own transactions: the write lock is never held
     * long enough to stall submits and claims behind a big purge. */
    for (;;) {
        TRY(sq_prep(q, S_PURGE, &st, err, errlen));
        dl()->bind_int64(st, 1, before_ns);
        TRY(sq_exec(q, st, "purge", err, errlen));
        int k = dl()->changes(q->db);
        *deleted += k;
        if (k < 500)
            return 0;
    }
}

static int sq_callback_record(store_t *s, const char *id, const char *delivery_json, char *err,
                              size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_CALLBACK, &st, err, errlen));
    bind_text(st, 1, id);
    bind_text(st, 2, delivery_json);
    dl()->bind_int(st, 3, STORE_CALLBACKS_MAX);
    TRY(sq_exec(q, st, "record callback", err, errlen));
    if (dl()->changes(q->db) == 1)
        return 0;
    return why_not(q, id, -E2BIG, NULL, "record callback", err, errlen);
}

/* ---- the webhook outbox ---------------------------------------------------------- */

static int sq_callback_claim(store_t *s, const char *owner, int64_t lease_ms, int64_t now,
                             struct eval_record *out, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    int rc;
    /* Senders poll: look first without the write lock, so an idle poll never
     * stalls submits and claims behind BEGIN IMMEDIATE. */
    TRY(sq_prep(q, S_CB_PICK, &st, err, errlen));
    dl()->bind_int64(st, 1, now);
    rc = sq_row(q, st, "pick due webhook", err, errlen);
    if (rc <= 0)
        return rc < 0 ? rc : err_set(err, errlen, -EAGAIN, "no webhook delivery due");
    dl()->reset(st);
    TRY(tx_begin(q, err, errlen)); /* the write lock before the pick: one claimer at a time */
    if ((rc = sq_prep(q, S_CB_PICK, &st, err, errlen)) < 0)
        return tx_abort(q, rc);
    dl()->bind_int64(st, 1, now);
    rc = sq_row(q, st, "pick due webhook", err, errlen);
    if (rc <= 0) {
        tx_abort(q, 0);
        return rc < 0 ? rc : err_set(err, errlen, -EAGAIN, "no webhook delivery due");
    }
    int64_t pos = col_i64(st, 0);
    dl()->reset(st);
    if ((rc = sq_prep(q, S_CB_LEASE, &st, err, errlen)) < 0)
        return tx_abort(q, rc);
    dl()->bind_int64(st, 1, pos);
    dl()->bind_int64(st, 2, now + lease_ms * 1000000);
    bind_text(st, 3, owner);
    if ((rc = sq_exec(q, st, "claim webhook", err, errlen)) < 0)
        return tx_abort(q, rc);
    if ((rc = read_claimed(q, pos, out, "read claimed webhook", err, errlen)) < 0)
        return tx_abort(q, rc);
    if ((rc = tx_commit(q, err, errlen)) < 0) {
        store_record_clear(out);
        return tx_abort(q, rc);
    }
    return 0;
}

static int sq_callback_settle(store_t *s, const char *id, const char *owner, int attempt,
                              const char *delivery_json, const char *state, int64_t next_ns,
                              char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_CB_SETTLE, &st, err, errlen));
    bind_text(st, 1, id);
    bind_text(st, 2, owner);
    dl()->bind_int(st, 3, attempt);
    bind_text(st, 4, delivery_json);
    bind_text(st, 5, state);
    if (next_ns)
        dl()->bind_int64(st, 6, next_ns);
    else
        dl()->bind_null(st, 6);
    dl()->bind_int(st, 7, STORE_CALLBACKS_MAX);
    TRY(sq_exec(q, st, "settle webhook", err, errlen));
    if (dl()->changes(q->db) == 1)
        return 0;
    int rc = why_not(q, id, -ESTALE, NULL, "settle webhook", err, errlen);
    if (rc == -ESTALE)
        err_set(err, errlen, -ESTALE,
                "settle webhook: attempt %d of evaluation %s is no longer claimed by %s",
                attempt, id, owner);
    return rc;
}

static int sq_callback_release(store_t *s, const char *owner, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_CB_RELEASE, &st, err, errlen));
    bind_text(st, 1, owner);
    TRY(sq_exec(q, st, "release webhook leases", err, errlen));
    return dl()->changes(q->db);
}

static int sq_callback_stats(store_t *s, struct store_callback_stats *cs, char *err,
                             size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_CB_STATS, &st, err, errlen));
    int rc = sq_row(q, st, "webhook stats", err, errlen);
    if (rc < 0)
        return rc;
    cs->pending = col_i64(st, 0);
    cs->next_due_ns = col_i64(st, 1); /* NULL when none: 0 */
    dl()->reset(st);
    return 0;
}

static int sq_events(store_t *s, const char *id, int64_t after_seq, struct store_event *ev,
                     size_t cap, char *err, size_t errlen)
{
    struct sq *q = SQ(s);
    sqlite3_stmt *st;
    TRY(sq_prep(q, S_EVENTS, &st, err, errlen));
    bind_text(st, 1, id);
    dl()->bind_int64(st, 2, after_seq);
    dl()->bind_int64(st, 3, (int64_t)cap);
    int n = 0, rc;
    while ((rc = dl()->step(st)) == SQLITE_ROW) {
        ev[n].seq = col_i64(st, 0);
        ev[n].status = col_status(st, 1);
        ev[n].ts_ns = col_i64(st, 2);
        n++;
    }
    dl()->reset(st);
    if (rc != SQLITE_DONE)
        return sq_fail(q, rc, "events", err, errlen);
    if (n == 0) /* nothing new (-EAGAIN), or no such evaluation? */
        return why_not(q, id, -EAGAIN, NULL, "events", err, errlen);
    return n;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .check = sq_check,
    .migrations_applied = sq_migrations_applied,
    .migration_apply = sq_migration_apply,
    .insert = sq_insert,
    .insert_batch = sq_insert_batch,
    .get = sq_get,
    .list = sq_list,
    .claim = sq_claim,
    .heartbeat = sq_heartbeat,
    .finish = sq_finish,
    .finish_claim = sq_finish_claim,
    .cancel = sq_cancel,
    .requeue = sq_requeue,
    .queue_stats = sq_queue_stats,
    .submitter_queued = sq_submitter_queued,
    .purge = sq_purge,
    .callback_record = sq_callback_record,
    .callback_claim = sq_callback_claim,
    .callback_settle = sq_callback_settle,
    .callback_release = sq_callback_release,
    .callback_stats = sq_callback_stats,
    .events = sq_events,
};
