/* store_pg.c - the PostgreSQL backend of the evaluation store (store.h), for
 * many nodes sharing one database (issue 6). libpq comes through pq_dl.h, so
 * only processes that open a postgres:// store ever load it.
 *
 * One statement per operation. Every write that changes a status is one
 * statement: a data-modifying CTE updates the row and appends its event row,
 * so the pair commits together in autocommit mode, with no BEGIN/COMMIT round
 * trips and no transaction left open if the client dies between statements
 * (kill -9 of a client mid-call: the server rolls the statement back).
 *
 * Claims: `SELECT pos ... WHERE status = 'queued' ORDER BY priority DESC, pos
 * LIMIT 1 FOR UPDATE SKIP LOCKED` inside the UPDATE. Each claimer locks the
 * first row no one else holds, so claimers on any number of nodes never wait
 * for each other and never get the same row: under READ COMMITTED, a row that
 * another claimer committed meanwhile is re-checked against `status =
 * 'queued'` after the lock (EvalPlanQual) and skipped. The consequence: claim
 * may return -EAGAIN while the last few queued rows are being claimed by
 * others (each claimer holds at most one), which a claim loop cannot tell
 * from an empty queue and need not.
 *
 * Lease expiry uses the same pattern (SKIP LOCKED in the sub-select), so two
 * nodes requeueing at once split the rows instead of deadlocking, and a row
 * whose heartbeat is in flight is left alone; the lease condition is checked
 * again on the locked row. Cancel is one UPDATE whose CASE decides between
 * "queued -> cancelled" and "running -> cancel_requested", so a claim racing
 * with it cannot slip between two statements.
 *
 * Durability: a call returns after the server committed. The session runs
 * with synchronous_commit on (set at connect when the server default is off;
 * stricter settings such as remote_apply are kept), so the WAL is flushed
 * before COMMIT returns; store_check() refuses a server with fsync=off.
 *
 * Connection: one per handle (store.c's mutex serializes calls on it). When
 * the connection breaks, the call in flight fails with -ECONNRESET and a
 * message that says so, and the next call reconnects (PQreset) and prepares
 * its statements again. Reads, heartbeat and finish are safe to repeat and
 * are retried once on a fresh connection transparently; other writes are not
 * (an insert without idempotency key, a claim, a cancel, a callback record
 * could happen twice), so their caller decides. Serialization failures and
 * deadlocks (40001, 40P01) roll the statement back and are retried.
 *
 * Results come back in binary format (integers big-endian, text and bytea as
 * raw bytes); bytea parameters go in binary, everything else as text. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/pq_dl.h"
#include "service/store.h"
#include "util/err.h"
#include "util/timeutil.h"

enum stmt_id {
    S_INSERT,
    S_IDEM_LOOKUP,
    S_GET,
    S_EXISTS,
    S_LIST_ALL,
    S_LIST_STATUS,
    S_LIST_SUBMITTER,
    S_LIST_STATUS_SUBMITTER,
    S_CLAIM,
    S_HEARTBEAT,
    S_FINISH,
    S_STATE,
    S_CANCEL,
    S_REQUEUE_EXPIRED,
    S_REQUEUE_WORKER,
    S_QUEUE_STATS,
    S_SUBMITTER_QUEUED,
    S_PURGE,
    S_CALLBACK,
    S_CB_CLAIM,
    S_CB_SETTLE,
    S_CB_RELEASE,
    S_CB_STATS,
    S_EVENTS,
    S_COUNT
};

/* Column order shared by every query that returns a record (row_read). */
#define COLS_TAIL                                                                          \
    "args, files, limits, metadata, submitter, priority, idempotency_key, callback_url, "  \
    "traceparent, tracestate, created_ns, queued_ns, started_ns, finished_ns, attempts, "  \
    "max_attempts, worker_id, lease_expires_ns, result, error_reason, error_message, "     \
    "cancel_requested, callbacks::text AS callbacks_text, event_seq, callback_state, "      \
    "callback_attempts, callback_next_ns"
#define COLS_FULL                                                                          \
    "pos, id, status, language, code, length(code) AS code_len, stdin, "                   \
    "length(stdin) AS stdin_len, " COLS_TAIL
#define COLS_LIST                                                                          \
    "pos, id, status, language, NULL::bytea AS code, length(code) AS code_len, "           \
    "NULL::bytea AS stdin, length(stdin) AS stdin_len, " COLS_TAIL
/* 1-based place in the queue of the row aliased e (counts e itself when visible). */
#define QPOS(e)                                                                            \
    "(SELECT count(*) FROM evaluations q WHERE q.status = 'queued' AND (q.priority > " e   \
    ".priority OR (q.priority = " e ".priority AND q.pos <= " e ".pos)))"
/* Part of every statement that writes a terminal status: a row with a
 * callback_url now owes a webhook, due at once (ts = the finish time). Same
 * statement, same commit: the debt is as durable as the status. (The cancel
 * and requeue statements spell it inside their own CASEs.) */
#define CALLBACK_ARM(ts)                                                                   \
    "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, "       \
    "callback_next_ns = CASE WHEN callback_url IS NULL THEN NULL ELSE " ts " END"
/* Append the row's new event (after event_seq was bumped) from CTE `src`. */
#define EVENT_FROM(src, ts)                                                                \
    "ev AS (INSERT INTO evaluation_events (eval_id, seq, status, ts_ns) "                  \
    "SELECT id, event_seq, status, " ts " FROM " src ")"
#define REQUEUE_SET                                                                        \
    "UPDATE evaluations SET "                                                              \
    "status = CASE WHEN cancel_requested THEN 'cancelled' "                                \
    "WHEN attempts >= max_attempts THEN 'error' ELSE 'queued' END, "                       \
    "queued_ns = CASE WHEN cancel_requested OR attempts >= max_attempts THEN queued_ns "   \
    "ELSE $2 END, "                                                                        \
    "finished_ns = CASE WHEN cancel_requested OR attempts >= max_attempts THEN $2 "        \
    "ELSE finished_ns END, "                                                               \
    "error_reason = CASE WHEN NOT cancel_requested AND attempts >= max_attempts "          \
    "THEN 'worker_lost' ELSE error_reason END, "                                           \
    "error_message = CASE WHEN NOT cancel_requested AND attempts >= max_attempts "         \
    "THEN 'the worker running it was lost (no heartbeat or restarted) on each of ' || "    \
    "attempts || ' attempts' ELSE error_message END, "                                     \
    "callback_state = CASE WHEN (cancel_requested OR attempts >= max_attempts) AND "       \
    "callback_url IS NOT NULL THEN 'pending' ELSE callback_state END, "                    \
    "callback_next_ns = CASE WHEN (cancel_requested OR attempts >= max_attempts) AND "     \
    "callback_url IS NOT NULL THEN $2::bigint ELSE callback_next_ns END, "                 \
    "lease_expires_ns = NULL, event_seq = event_seq + 1 "
#define REQUEUE_TAIL                                                                       \
    " RETURNING id, status, event_seq), " EVENT_FROM("r", "$2")                            \
    " SELECT status, count(*) FROM r GROUP BY status"

static const char *const stmt_sql[S_COUNT] = {
    [S_INSERT] =
        "WITH ins AS (INSERT INTO evaluations (id, status, language, code, stdin, args, files, "
        "limits, metadata, submitter, priority, idempotency_key, callback_url, traceparent, "
        "tracestate, created_ns, queued_ns, max_attempts, event_seq) "
        "VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
        "$16, $17, 1) "
        "ON CONFLICT (submitter, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
        "RETURNING id, pos, priority, status, event_seq), " EVENT_FROM("ins", "$16")
        /* The statement's snapshot does not see its own insert: + 1. */
        " SELECT ins.id, 1 + " QPOS("ins") " FROM ins",
    [S_IDEM_LOOKUP] = "SELECT e.id, CASE WHEN e.status = 'queued' THEN " QPOS("e")
                      " ELSE 0 END FROM evaluations e WHERE e.submitter = $1 AND "
                      "e.idempotency_key = $2",
    [S_GET] = "SELECT " COLS_FULL ", CASE WHEN e.status = 'queued' THEN " QPOS("e")
              " ELSE 0 END FROM evaluations e WHERE e.id = $1",
    [S_EXISTS] = "SELECT status FROM evaluations WHERE id = $1",
    [S_LIST_ALL] = "SELECT " COLS_LIST " FROM evaluations WHERE pos < $1 "
                   "ORDER BY pos DESC LIMIT $2",
    [S_LIST_STATUS] = "SELECT " COLS_LIST " FROM evaluations WHERE status = $3 AND pos < $1 "
                      "ORDER BY pos DESC LIMIT $2",
    [S_LIST_SUBMITTER] = "SELECT " COLS_LIST " FROM evaluations WHERE submitter = $3 AND "
                         "pos < $1 ORDER BY pos DESC LIMIT $2",
    [S_LIST_STATUS_SUBMITTER] = "SELECT " COLS_LIST " FROM evaluations WHERE status = $3 AND "
                                "submitter = $4 AND pos < $1 ORDER BY pos DESC LIMIT $2",
    [S_CLAIM] = "WITH c AS (UPDATE evaluations SET status = 'running', worker_id = $1, "
                "lease_expires_ns = $2, attempts = attempts + 1, started_ns = $3, "
                "event_seq = event_seq + 1 "
                "WHERE pos = (SELECT pos FROM evaluations WHERE status = 'queued' "
                "ORDER BY priority DESC, pos LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "AND status = 'queued' RETURNING " COLS_FULL "), " EVENT_FROM("c", "$3")
                " SELECT * FROM c",
    [S_HEARTBEAT] = "UPDATE evaluations SET lease_expires_ns = $4 WHERE id = $1 AND "
                    "status = 'running' AND worker_id = $2 AND attempts = $3 "
                    "RETURNING cancel_requested",
    [S_FINISH] = "WITH f AS (UPDATE evaluations SET status = $4, result = $5, "
                 "error_reason = $6, error_message = $7, finished_ns = $8, "
                 "lease_expires_ns = NULL, event_seq = event_seq + 1, " CALLBACK_ARM("$8::bigint")
                 " WHERE id = $1 AND status = 'running' AND worker_id = $2 AND attempts = $3 "
                 "RETURNING id, status, event_seq), " EVENT_FROM("f", "$8")
                 " SELECT count(*) FROM f",
    [S_STATE] = "SELECT status, worker_id, attempts FROM evaluations WHERE id = $1",
    [S_CANCEL] = "WITH c AS (UPDATE evaluations SET "
                 "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
                 "finished_ns = CASE WHEN status = 'queued' THEN $2 ELSE finished_ns END, "
                 "event_seq = CASE WHEN status = 'queued' THEN event_seq + 1 "
                 "ELSE event_seq END, cancel_requested = TRUE, "
                 "callback_state = CASE WHEN status = 'queued' AND callback_url IS NOT NULL "
                 "THEN 'pending' ELSE callback_state END, "
                 "callback_next_ns = CASE WHEN status = 'queued' AND callback_url IS NOT NULL "
                 "THEN $2::bigint ELSE callback_next_ns END "
                 "WHERE id = $1 AND status IN ('queued', 'running') "
                 "RETURNING id, status, event_seq), "
                 "ev AS (INSERT INTO evaluation_events (eval_id, seq, status, ts_ns) "
                 "SELECT id, event_seq, status, $2 FROM c WHERE status = 'cancelled') "
                 "SELECT status FROM c",
    [S_REQUEUE_EXPIRED] = "WITH r AS (" REQUEUE_SET
                          "WHERE pos IN (SELECT pos FROM evaluations WHERE status = 'running' "
                          "AND lease_expires_ns < $1 FOR UPDATE SKIP LOCKED) "
                          "AND status = 'running' AND lease_expires_ns < $1" REQUEUE_TAIL,
    [S_REQUEUE_WORKER] = "WITH r AS (" REQUEUE_SET
                         "WHERE status = 'running' AND worker_id = $1" REQUEUE_TAIL,
    [S_QUEUE_STATS] = "SELECT (SELECT count(*) FROM evaluations WHERE status = 'queued'), "
                      "(SELECT min(queued_ns) FROM evaluations WHERE status = 'queued'), "
                      "(SELECT count(*) FROM evaluations WHERE status = 'running')",
    [S_SUBMITTER_QUEUED] = "SELECT count(*) FROM evaluations WHERE status = 'queued' AND "
                           "submitter = $1",
    [S_PURGE] = "DELETE FROM evaluations WHERE pos IN (SELECT pos FROM evaluations WHERE "
                "finished_ns IS NOT NULL AND finished_ns < $1 AND "
                "status NOT IN ('queued', 'running') AND "
                "(callback_state IS NULL OR callback_state <> 'pending') "
                "LIMIT 500 FOR UPDATE SKIP LOCKED)",
    [S_CALLBACK] = "UPDATE evaluations SET callbacks = callbacks || jsonb_build_array($2::jsonb) "
                   "WHERE id = $1 AND jsonb_array_length(callbacks) < $3",
    /* the outbox (store.h): claimed like S_CLAIM, SKIP LOCKED so senders on
     * several nodes split the due rows; the lease is checked again on the
     * locked row */
    [S_CB_CLAIM] = "UPDATE evaluations SET callback_lease_ns = $2, callback_owner = $3 "
                   "WHERE pos = (SELECT pos FROM evaluations WHERE callback_state = 'pending' "
                   "AND callback_next_ns <= $1 AND (callback_lease_ns IS NULL OR "
                   "callback_lease_ns < $1) ORDER BY callback_next_ns LIMIT 1 "
                   "FOR UPDATE SKIP LOCKED) AND callback_state = 'pending' AND "
                   "(callback_lease_ns IS NULL OR callback_lease_ns < $1) RETURNING " COLS_FULL,
    [S_CB_SETTLE] = "UPDATE evaluations SET callbacks = CASE WHEN "
                    "jsonb_array_length(callbacks) < $7 THEN "
                    "callbacks || jsonb_build_array($4::jsonb) ELSE callbacks END, "
                    "callback_attempts = $3, callback_state = $5, callback_next_ns = $6, "
                    "callback_lease_ns = NULL, callback_owner = NULL "
                    "WHERE id = $1 AND callback_state = 'pending' AND callback_owner = $2 AND "
                    "callback_attempts = $3::integer - 1",
    [S_CB_RELEASE] = "UPDATE evaluations SET callback_lease_ns = NULL WHERE "
                     "callback_state = 'pending' AND callback_owner = $1 AND "
                     "callback_lease_ns IS NOT NULL",
    [S_CB_STATS] = "SELECT count(*), min(GREATEST(callback_next_ns, "
                   "coalesce(callback_lease_ns + 1, 0))) FROM evaluations "
                   "WHERE callback_state = 'pending'",
    [S_EVENTS] = "SELECT seq, status, ts_ns FROM evaluation_events WHERE eval_id = $1 AND "
                 "seq > $2 ORDER BY seq LIMIT $3",
};

/* Safe to run again after the connection broke mid-call: reads, and writes
 * whose repeat is a no-op (heartbeat sets the same lease; finish is
 * idempotent by contract). */
static const bool stmt_repeatable[S_COUNT] = {
    [S_IDEM_LOOKUP] = true, [S_GET] = true,         [S_EXISTS] = true,
    [S_LIST_ALL] = true,    [S_LIST_STATUS] = true, [S_LIST_SUBMITTER] = true,
    [S_LIST_STATUS_SUBMITTER] = true,               [S_HEARTBEAT] = true,
    [S_FINISH] = true,      [S_STATE] = true,       [S_QUEUE_STATS] = true,
    [S_SUBMITTER_QUEUED] = true,                    [S_EVENTS] = true,
    [S_CB_STATS] = true,
};

struct pg {
    const struct pq_dl *pq;
    PGconn *conn;
    uint32_t prepared;       /* bit per stmt_id prepared on this connection */
    int lock_timeout_ms;     /* store_options.busy_timeout_ms */
    char where[200];         /* user@host:port/db, for messages (no password) */
};

_Static_assert(S_COUNT <= 32, "struct pg.prepared has one bit per statement");

static struct pg *PG(store_t *s) { return s->impl; }

/* ---- errors ------------------------------------------------------------------ */

/* Copy a libpq message on one line: its "\n\t" continuation lines joined
 * with a space, the trailing newline dropped. */
static const char *trim(const char *m, char *buf, size_t cap)
{
    if (!m || !*m)
        m = "unknown error";
    size_t k = 0;
    for (; *m && k + 1 < cap; m++) {
        if (*m == '\n' || *m == '\t' || *m == '\r') {
            if (k && buf[k - 1] != ' ')
                buf[k++] = ' ';
            continue;
        }
        buf[k++] = *m;
    }
    while (k && buf[k - 1] == ' ')
        k--;
    buf[k] = '\0';
    return buf;
}

/* Map a failed result (or a broken connection) to a negative errno. */
static int pg_fail(struct pg *g, const PGresult *r, bool repeatable, const char *what, char *err,
                   size_t errlen)
{
    const struct pq_dl *pq = g->pq;
    char msg[ERR_LEN];
    const char *state = r ? pq->resultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? pq->resultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    trim(primary ? primary : pq->errorMessage(g->conn), msg, sizeof msg);
    if (pq->status(g->conn) != CONNECTION_OK) {
        /* libpq's text: "FATAL:  terminating connection ...\nserver closed ..." */
        char *line = msg;
        if (!strncmp(line, "FATAL:  ", 8))
            line += 8;
        char *more = strstr(line, " server closed the connection");
        if (more && more != line)
            *more = '\0';
        return err_set(err, errlen, -ECONNRESET,
                       "%s: connection to PostgreSQL lost, the next call reconnects%s: %s (%s)",
                       what, repeatable ? "" : " (whether this change was applied is unknown)",
                       line, g->where);
    }
    if (!state)
        return err_set(err, errlen, -EIO, "%s: %s", what, msg);
    int code = -EIO;
    if (!strcmp(state, "42P01") || !strcmp(state, "3F000"))
        return err_set(err, errlen, -EPROTO,
                       "%s: %s (database not migrated: run 'clearbox migrate')", what, msg);
    if (!strcmp(state, "55P03") || !strcmp(state, "57014") || !strcmp(state, "40001") ||
        !strcmp(state, "40P01"))
        return err_set(err, errlen, -EBUSY, "%s: database is busy (lock_timeout %d ms): %s",
                       what, g->lock_timeout_ms, msg);
    if (!strncmp(state, "23", 2))
        code = -EEXIST;
    else if (!strcmp(state, "22021") || !strcmp(state, "22P05"))
        code = -EINVAL; /* text that is not valid UTF-8 */
    else if (!strcmp(state, "53100"))
        code = -ENOSPC;
    else if (!strcmp(state, "53200"))
        code = -ENOMEM;
    else if (!strcmp(state, "42501") || !strncmp(state, "28", 2))
        code = -EACCES;
    else if (!strcmp(state, "25006"))
        code = -EROFS; /* a read-only standby */
    return err_set(err, errlen, code, "%s: %s (SQLSTATE %s)", what, msg, state);
}

/* ---- connection ---------------------------------------------------------------- */

static void notice_ignore(void *arg, const char *message) { (void)arg, (void)message; }

/* Session settings, after every (re)connect. */
static int pg_session(struct pg *g, char *err, size_t errlen)
{
    const struct pq_dl *pq = g->pq;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT set_config('lock_timeout', '%dms', false), "
             "CASE WHEN current_setting('synchronous_commit') = 'off' "
             "THEN set_config('synchronous_commit', 'on', false) END",
             g->lock_timeout_ms);
    PGresult *r = pq->exec(g->conn, sql);
    int rc = 0;
    if (pq->resultStatus(r) != PGRES_TUPLES_OK)
        rc = pg_fail(g, r, true, "session setup", err, errlen);
    pq->clear(r);
    return rc;
}

static int connect_error(struct pg *g, char *err, size_t errlen)
{
    char msg[ERR_LEN];
    trim(g->pq->errorMessage(g->conn), msg, sizeof msg);
    int code = -ECONNREFUSED;
    if (strstr(msg, "authentication") || strstr(msg, "password") ||
        strstr(msg, "permission denied") || strstr(msg, "no pg_hba.conf entry"))
        code = -EACCES;
    else if (strstr(msg, "does not exist"))
        code = -ENOENT;
    else if (strstr(msg, "invalid") || strstr(msg, "missing"))
        code = -EINVAL;
    return err_set(err, errlen, code, "cannot connect to PostgreSQL (%s): %s", g->where, msg);
}

static void describe(struct pg *g)
{
    const struct pq_dl *pq = g->pq;
    const char *user = pq->user(g->conn), *host = pq->host(g->conn), *port = pq->port(g->conn),
               *db = pq->db(g->conn);
    snprintf(g->where, sizeof g->where, "%s@%s:%s/%s", user ? user : "?",
             host && *host ? host : "localhost", port && *port ? port : "5432", db ? db : "?");
}

/* Reconnect if the connection broke since the last call. */
static int pg_connected(struct pg *g, char *err, size_t errlen)
{
    if (g->pq->status(g->conn) == CONNECTION_OK)
        return 0;
    g->prepared = 0; /* prepared statements live in the old session */
    g->pq->reset(g->conn);
    if (g->pq->status(g->conn) != CONNECTION_OK)
        return connect_error(g, err, errlen);
    return pg_session(g, err, errlen);
}

/* ---- parameters and results ---------------------------------------------------- */

#define PARAMS_MAX 20

struct params {
    int n;
    const char *v[PARAMS_MAX];
    int len[PARAMS_MAX];
    int fmt[PARAMS_MAX];
    char num[PARAMS_MAX][24];
};

static void p_text(struct params *p, const char *s)
{
    p->v[p->n] = s; /* NULL = SQL NULL */
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void p_i64(struct params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)x);
    p_text(p, p->num[p->n]);
}

/* Bytes as bytea: NULL pointer = SQL NULL, else exactly n bytes. */
static void p_bytes(struct params *p, const char *b, size_t n)
{
    p->v[p->n] = b ? (n ? b : "") : NULL;
    p->len[p->n] = (int)n;
    p->fmt[p->n] = 1;
    p->n++;
}

static void p_json(struct params *p, const char *s) { p_bytes(p, s, s ? strlen(s) : 0); }

/* Run a prepared statement; the result (tuples or command ok) or NULL with
 * *rc and err set. Prepares on first use per connection, reconnects when the
 * last call broke the connection, repeats repeatable statements once on a
 * fresh connection and any statement after a serialization failure. */
static PGresult *pg_run(struct pg *g, enum stmt_id id, const struct params *p, int *rc,
                        const char *what, char *err, size_t errlen)
{
    const struct pq_dl *pq = g->pq;
    char name[16];
    snprintf(name, sizeof name, "cb_%d", (int)id);
    bool lost_once = false;
    for (int attempt = 0;; attempt++) {
        if ((*rc = pg_connected(g, err, errlen)) < 0)
            return NULL;
        if (!(g->prepared & (1u << id))) {
            PGresult *r = pq->prepare(g->conn, name, stmt_sql[id], 0, NULL);
            if (pq->resultStatus(r) != PGRES_COMMAND_OK) {
                bool lost = pq->status(g->conn) != CONNECTION_OK;
                if (lost && !lost_once) { /* nothing ran: try again on a new connection */
                    lost_once = true;
                    pq->clear(r);
                    continue;
                }
                *rc = pg_fail(g, r, true, what, err, errlen);
                pq->clear(r);
                return NULL;
            }
            pq->clear(r);
            g->prepared |= 1u << id;
        }
        PGresult *r = pq->execPrepared(g->conn, name, p ? p->n : 0, p ? p->v : NULL,
                                       p ? p->len : NULL, p ? p->fmt : NULL, 1);
        ExecStatusType st = pq->resultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            *rc = 0;
            return r;
        }
        const char *state = r ? pq->resultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        bool lost = pq->status(g->conn) != CONNECTION_OK;
        bool conflict = state && (!strcmp(state, "40001") || !strcmp(state, "40P01"));
        if (conflict && attempt < 5) { /* rolled back as a whole: run it again */
            pq->clear(r);
            continue;
        }
        if (lost && stmt_repeatable[id] && !lost_once) {
            lost_once = true;
            pq->clear(r);
            continue;
        }
        *rc = pg_fail(g, r, stmt_repeatable[id], what, err, errlen);
        pq->clear(r);
        return NULL;
    }
}

/* A write whose answer is only how many rows it touched: that count, or
 * -errno (err says why). */
static int64_t pg_run_count(struct pg *g, enum stmt_id id, const struct params *p,
                            const char *what, char *err, size_t errlen)
{
    int rc;
    PGresult *r = pg_run(g, id, p, &rc, what, err, errlen);
    if (!r)
        return rc;
    int64_t k = strtoll(g->pq->cmdTuples(r), NULL, 10);
    g->pq->clear(r);
    return k;
}

/* Integer column of any width (int2/4/8, bool), big-endian; NULL = 0. */
static int64_t col_i64(const struct pq_dl *pq, const PGresult *r, int row, int c)
{
    if (pq->getisnull(r, row, c))
        return 0;
    const unsigned char *b = (const unsigned char *)pq->getvalue(r, row, c);
    int n = pq->getlength(r, row, c);
    if (n < 1 || n > 8)
        return 0;
    uint64_t v = (b[0] & 0x80) && n > 1 ? ~0ULL : 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | b[i];
    return (int64_t)v;
}

/* Copy column c (NULL stays NULL) into a malloc'd NUL-terminated buffer. */
static int col_dup(const struct pq_dl *pq, const PGresult *r, int row, int c, char **out)
{
    *out = NULL;
    if (pq->getisnull(r, row, c))
        return 0;
    size_t n = (size_t)pq->getlength(r, row, c);
    char *b = malloc(n + 1);
    if (!b)
        return -ENOMEM;
    memcpy(b, pq->getvalue(r, row, c), n);
    b[n] = '\0';
    *out = b;
    return 0;
}

static enum eval_status col_status(const struct pq_dl *pq, const PGresult *r, int row, int c)
{
    char buf[32];
    enum eval_status s = EVAL_ERROR;
    int n = pq->getlength(r, row, c);
    if (!pq->getisnull(r, row, c) && n > 0 && n < (int)sizeof buf) {
        memcpy(buf, pq->getvalue(r, row, c), (size_t)n);
        buf[n] = '\0';
        store_status_parse(buf, &s);
    }
    return s;
}

static void col_id(const struct pq_dl *pq, const PGresult *r, int row, int c,
                   char out[STORE_ID_LEN])
{
    int n = pq->getlength(r, row, c);
    if (pq->getisnull(r, row, c) || n < 0 || n >= STORE_ID_LEN)
        n = 0;
    memcpy(out, pq->getvalue(r, row, c), (size_t)n);
    out[n] = '\0';
}

/* Fill rec from a row selected with COLS_FULL or COLS_LIST; *pos gets its pos. */
static int row_read(const struct pq_dl *pq, const PGresult *r, int row, struct eval_record *rec,
                    int64_t *pos)
{
    memset(rec, 0, sizeof *rec);
    if (pos)
        *pos = col_i64(pq, r, row, 0);
    col_id(pq, r, row, 1, rec->id);
    rec->status = col_status(pq, r, row, 2);
    int rc = 0;
    rc |= col_dup(pq, r, row, 3, &rec->language);
    rc |= col_dup(pq, r, row, 4, &rec->code);
    rec->code_len = (size_t)col_i64(pq, r, row, 5);
    rc |= col_dup(pq, r, row, 6, &rec->stdin_data);
    rec->stdin_len = (size_t)col_i64(pq, r, row, 7);
    rc |= col_dup(pq, r, row, 8, &rec->args_json);
    rc |= col_dup(pq, r, row, 9, &rec->files_json);
    rc |= col_dup(pq, r, row, 10, &rec->limits_json);
    rc |= col_dup(pq, r, row, 11, &rec->metadata_json);
    rc |= col_dup(pq, r, row, 12, &rec->submitter);
    rec->priority = (int)col_i64(pq, r, row, 13);
    rc |= col_dup(pq, r, row, 14, &rec->idempotency_key);
    rc |= col_dup(pq, r, row, 15, &rec->callback_url);
    rc |= col_dup(pq, r, row, 16, &rec->traceparent);
    rc |= col_dup(pq, r, row, 17, &rec->tracestate);
    rec->created_ns = col_i64(pq, r, row, 18);
    rec->queued_ns = col_i64(pq, r, row, 19);
    rec->started_ns = col_i64(pq, r, row, 20);
    rec->finished_ns = col_i64(pq, r, row, 21);
    rec->attempts = (int)col_i64(pq, r, row, 22);
    rec->max_attempts = (int)col_i64(pq, r, row, 23);
    rc |= col_dup(pq, r, row, 24, &rec->worker_id);
    rec->lease_expires_ns = col_i64(pq, r, row, 25);
    rc |= col_dup(pq, r, row, 26, &rec->result_json);
    rc |= col_dup(pq, r, row, 27, &rec->error_reason);
    rc |= col_dup(pq, r, row, 28, &rec->error_message);
    rec->cancel_requested = col_i64(pq, r, row, 29) != 0;
    rc |= col_dup(pq, r, row, 30, &rec->callbacks_json);
    rec->event_seq = col_i64(pq, r, row, 31);
    char *cs = NULL;
    rc |= col_dup(pq, r, row, 32, &cs);
    rec->callback_state = store__callback_state_parse(cs);
    free(cs);
    rec->callback_attempts = (int)col_i64(pq, r, row, 33);
    rec->callback_next_ns = col_i64(pq, r, row, 34);
    if (rc) {
        store_record_clear(rec);
        return -ENOMEM;
    }
    return 0;
}

/* An unprepared statement (migrations, checks): binary results. */
static PGresult *pg_adhoc(struct pg *g, const char *sql, const struct params *p, int *rc,
                          const char *what, char *err, size_t errlen)
{
    const struct pq_dl *pq = g->pq;
    for (int attempt = 0;; attempt++) {
        if ((*rc = pg_connected(g, err, errlen)) < 0)
            return NULL;
        PGresult *r = pq->execParams(g->conn, sql, p ? p->n : 0, NULL, p ? p->v : NULL,
                                     p ? p->len : NULL, p ? p->fmt : NULL, 1);
        ExecStatusType st = pq->resultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            *rc = 0;
            return r;
        }
        /* Outside a transaction these are all reads or DDL that did not run. */
        bool lost = pq->status(g->conn) != CONNECTION_OK;
        bool in_tx = pq->transactionStatus(g->conn) != PQTRANS_IDLE;
        if (lost && !in_tx && attempt == 0) {
            pq->clear(r);
            continue;
        }
        *rc = pg_fail(g, r, true, what, err, errlen);
        pq->clear(r);
        return NULL;
    }
}

/* A simple-protocol command (BEGIN, COMMIT, multi-statement migration text). */
static int pg_command(struct pg *g, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = g->pq->exec(g->conn, sql);
    ExecStatusType st = g->pq->resultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pg_fail(g, r, false, what, err, errlen);
    g->pq->clear(r);
    return rc;
}

/* ---- open, close, migrations ------------------------------------------------- */

static void pg_close(store_t *s)
{
    struct pg *g = PG(s);
    if (!g)
        return;
    if (g->conn)
        g->pq->finish(g->conn);
    free(g);
    s->impl = NULL;
}

static int pg_open(store_t *s, const char *url, const struct store_options *opt, char *err,
                   size_t errlen)
{
    const struct pq_dl *pq = pq_dl(err, errlen);
    if (!pq)
        return -ENOENT;
    struct pg *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    s->impl = g;
    g->pq = pq;
    g->lock_timeout_ms = opt->busy_timeout_ms;
    /* Defaults first, so the URL's own connect_timeout etc. win (libpq applies
     * keywords in order and the expanded dbname in its place); the client
     * encoding comes last: the store sends and expects UTF-8. */
    static const char *const keys[] = {"connect_timeout",  "keepalives_idle",
                                       "keepalives_interval", "keepalives_count",
                                       "fallback_application_name", "dbname",
                                       "client_encoding",  NULL};
    const char *vals[] = {"10", "30", "10", "3", "clearbox", url, "UTF8", NULL};
    g->conn = pq->connectdbParams(keys, vals, 1);
    if (!g->conn) {
        pg_close(s);
        return err_set(err, errlen, -ENOMEM, "out of memory (PQconnectdbParams)");
    }
    pq->setNoticeProcessor(g->conn, notice_ignore, NULL); /* library code never prints */
    describe(g);
    int rc;
    if (pq->status(g->conn) != CONNECTION_OK) {
        rc = connect_error(g, err, errlen);
        pg_close(s);
        return rc;
    }
    describe(g);
    if ((rc = pg_session(g, err, errlen)) < 0) {
        pg_close(s);
        return rc;
    }
    return 0;
}

static int pg_ping(store_t *s, char *err, size_t errlen)
{
    int rc;
    PGresult *r = pg_adhoc(PG(s), "SELECT 1", NULL, &rc, "ping", err, errlen);
    if (r)
        PG(s)->pq->clear(r);
    return rc;
}

static int pg_check(store_t *s, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    int rc;
    PGresult *r = pg_adhoc(g,
                           "SELECT current_setting('fsync') = 'on', "
                           "(SELECT count(*) FROM evaluation_events ev WHERE NOT EXISTS "
                           "(SELECT 1 FROM evaluations e WHERE e.id = ev.eval_id)), "
                           "(SELECT count(*) FROM evaluations WHERE "
                           "(status = 'running') <> (lease_expires_ns IS NOT NULL)), "
                           "(SELECT count(*) FROM evaluations WHERE event_seq < 1)",
                           NULL, &rc, "check", err, errlen);
    if (!r)
        return rc;
    bool fsync_on = col_i64(pq, r, 0, 0) != 0;
    int64_t orphans = col_i64(pq, r, 0, 1), lease_bad = col_i64(pq, r, 0, 2),
            seq_bad = col_i64(pq, r, 0, 3);
    pq->clear(r);
    if (!fsync_on)
        return err_set(err, errlen, -EIO,
                       "the PostgreSQL server runs with fsync=off: commits are not durable");
    if (orphans)
        return err_set(err, errlen, -EIO, "%lld status events without their evaluation",
                       (long long)orphans);
    if (lease_bad)
        return err_set(err, errlen, -EIO,
                       "%lld evaluations with a lease that does not match their status",
                       (long long)lease_bad);
    if (seq_bad)
        return err_set(err, errlen, -EIO, "%lld evaluations without a status event",
                       (long long)seq_bad);
    return 0;
}

static int pg_migrations_applied(store_t *s, int *versions, int64_t *applied_ns, size_t cap,
                                 size_t *n, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    *n = 0;
    int rc;
    /* to_regclass follows search_path, as the migrations' CREATE TABLE do. */
    PGresult *r = pg_adhoc(g, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL, &rc,
                           "schema_migrations", err, errlen);
    if (!r)
        return rc;
    bool exists = col_i64(pq, r, 0, 0) != 0;
    pq->clear(r);
    if (!exists)
        return 0; /* a new database */
    r = pg_adhoc(g, "SELECT version, applied_ns FROM schema_migrations ORDER BY version", NULL,
                 &rc, "schema_migrations", err, errlen);
    if (!r)
        return rc;
    int rows = pq->ntuples(r);
    if ((size_t)rows > cap) {
        pq->clear(r);
        return err_set(err, errlen, -E2BIG, "more than %zu migrations recorded", cap);
    }
    for (int i = 0; i < rows; i++) {
        versions[i] = (int)col_i64(pq, r, i, 0);
        applied_ns[i] = col_i64(pq, r, i, 1);
    }
    *n = (size_t)rows;
    pq->clear(r);
    return 0;
}

/* Roll back after a failure inside pg_migration_apply; keeps rc. */
static int tx_abort(struct pg *g, int rc)
{
    if (g->pq->status(g->conn) == CONNECTION_OK &&
        g->pq->transactionStatus(g->conn) != PQTRANS_IDLE) {
        char e2[ERR_LEN];
        pg_command(g, "ROLLBACK", "rollback", e2, sizeof e2);
    }
    return rc;
}

/* 0 = applied now, 1 = another process applied it meanwhile. One transaction
 * holds an advisory lock (so two migrating nodes take turns instead of racing
 * on CREATE TABLE), the migration's SQL and its schema_migrations row. */
static int pg_migration_apply(store_t *s, const struct store_migration *m, char *err,
                              size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    int rc;
    TRY(pg_connected(g, err, errlen));
    TRY(pg_command(g, "BEGIN", "begin", err, errlen));
    if ((rc = pg_command(g,
                         "SELECT pg_advisory_xact_lock(6565726766627801); "
                         "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                         "  version    INTEGER PRIMARY KEY,\n"
                         "  name       TEXT    NOT NULL,\n"
                         "  applied_ns BIGINT  NOT NULL\n"
                         ")",
                         "create schema_migrations", err, errlen)) < 0)
        return tx_abort(g, rc);
    struct params p = {0};
    p_i64(&p, m->version);
    PGresult *r = pq->execParams(g->conn, "SELECT 1 FROM schema_migrations WHERE version = $1",
                                 p.n, NULL, p.v, p.len, p.fmt, 1);
    if (pq->resultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(g, r, false, "schema_migrations", err, errlen);
        pq->clear(r);
        return tx_abort(g, rc);
    }
    bool done = pq->ntuples(r) > 0;
    pq->clear(r);
    if (done)
        return tx_abort(g, 1);
    r = pq->exec(g->conn, m->postgres_sql);
    if (pq->resultStatus(r) != PGRES_COMMAND_OK && pq->resultStatus(r) != PGRES_TUPLES_OK) {
        char what[96];
        snprintf(what, sizeof what, "migration %d (%s) failed", m->version, m->name);
        rc = pg_fail(g, r, false, what, err, errlen);
        pq->clear(r);
        return tx_abort(g, rc);
    }
    pq->clear(r);
    p.n = 0;
    p_i64(&p, m->version);
    p_text(&p, m->name);
    p_i64(&p, (int64_t)time_now_ns());
    r = pq->execParams(g->conn,
                       "INSERT INTO schema_migrations (version, name, applied_ns) "
                       "VALUES ($1, $2, $3)",
                       p.n, NULL, p.v, p.len, p.fmt, 1);
    if (pq->resultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_fail(g, r, false, "record migration", err, errlen);
        pq->clear(r);
        return tx_abort(g, rc);
    }
    pq->clear(r);
    return tx_abort(g, pg_command(g, "COMMIT", "commit migration", err, errlen));
}

/* ---- submit and read ------------------------------------------------------------- */

/* The (id, queue position) row of an insert or an idempotency lookup, if it
 * came; clears r either way. */
static bool take_id_pos(const struct pq_dl *pq, PGresult *r, char id_out[STORE_ID_LEN],
                        int64_t *qpos)
{
    bool hit = pq->ntuples(r) == 1;
    if (hit) {
        col_id(pq, r, 0, 0, id_out);
        *qpos = col_i64(pq, r, 0, 1);
    }
    pq->clear(r);
    return hit;
}

static int pg_insert(store_t *s, const struct eval_record *rec, char id_out[STORE_ID_LEN],
                     bool *existed, int64_t *qpos, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    const char *submitter = rec->submitter ? rec->submitter : "";
    int rc;
    *qpos = 0;
    /* Twice at most: a key's first evaluation could be purged between our
     * conflict and the lookup; the second insert then succeeds. */
    for (int round = 0; round < 2; round++) {
        char id[STORE_ID_LEN];
        store_id_new(id);
        int64_t now = (int64_t)time_now_ns();
        struct params p = {0};
        p_text(&p, id);
        p_text(&p, rec->language);
        p_bytes(&p, rec->code ? rec->code : "", rec->code_len);
        p_bytes(&p, rec->stdin_data, rec->stdin_len);
        p_json(&p, rec->args_json);
        p_json(&p, rec->files_json);
        p_json(&p, rec->limits_json);
        p_json(&p, rec->metadata_json);
        p_text(&p, submitter);
        p_i64(&p, rec->priority);
        p_text(&p, rec->idempotency_key);
        p_text(&p, rec->callback_url);
        p_text(&p, rec->traceparent);
        p_text(&p, rec->tracestate);
        p_i64(&p, rec->created_ns ? rec->created_ns : now);
        p_i64(&p, now);
        p_i64(&p, rec->max_attempts ? rec->max_attempts : STORE_DEFAULT_MAX_ATTEMPTS);
        PGresult *r = pg_run(g, S_INSERT, &p, &rc, "insert evaluation", err, errlen);
        if (!r)
            return rc;
        if (take_id_pos(pq, r, id_out, qpos))
            return 0;
        if (!rec->idempotency_key)
            return err_set(err, errlen, -EIO, "insert evaluation: no row inserted");
        /* The key is taken: return its first evaluation (committed, since
         * ON CONFLICT waited for the other inserter). */
        p.n = 0;
        p_text(&p, submitter);
        p_text(&p, rec->idempotency_key);
        r = pg_run(g, S_IDEM_LOOKUP, &p, &rc, "idempotency lookup", err, errlen);
        if (!r)
            return rc;
        if (take_id_pos(pq, r, id_out, qpos)) {
            *existed = true;
            return 0;
        }
    }
    return err_set(err, errlen, -EBUSY, "insert evaluation: idempotency key kept changing");
}

static int pg_get(store_t *s, const char *id, struct eval_record *out, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, id);
    int rc;
    PGresult *r = pg_run(g, S_GET, &p, &rc, "get evaluation", err, errlen);
    if (!r)
        return rc;
    if (g->pq->ntuples(r) == 0) {
        g->pq->clear(r);
        return err_set(err, errlen, -ENOENT, "no evaluation %s", id);
    }
    rc = row_read(g->pq, r, 0, out, NULL);
    if (rc == 0)
        out->queue_position = col_i64(g->pq, r, 0, 35);
    g->pq->clear(r);
    if (rc < 0)
        return err_set(err, errlen, rc, "out of memory reading %s", id);
    return 0;
}

static int pg_list(store_t *s, const struct store_list_query *lq, int64_t after_key,
                   struct eval_record **items, size_t *n, int64_t *last_key, bool *more,
                   char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    enum stmt_id id = lq->status >= 0 ? (lq->submitter ? S_LIST_STATUS_SUBMITTER : S_LIST_STATUS)
                                      : (lq->submitter ? S_LIST_SUBMITTER : S_LIST_ALL);
    struct params p = {0};
    p_i64(&p, after_key ? after_key : INT64_MAX);
    p_i64(&p, lq->limit + 1); /* one more tells whether a next page exists */
    if (lq->status >= 0)
        p_text(&p, store_status_name((enum eval_status)lq->status));
    if (lq->submitter)
        p_text(&p, lq->submitter);
    int rc;
    PGresult *r = pg_run(g, id, &p, &rc, "list evaluations", err, errlen);
    if (!r)
        return rc;
    int rows = pq->ntuples(r);
    if (rows > lq->limit) {
        *more = true;
        rows = lq->limit;
    }
    struct eval_record *v = NULL;
    if (rows > 0) {
        v = calloc((size_t)rows, sizeof *v);
        if (!v) {
            pq->clear(r);
            return err_set(err, errlen, -ENOMEM, "out of memory");
        }
    }
    for (int k = 0; k < rows; k++) {
        if (row_read(pq, r, k, &v[k], last_key) < 0) {
            pq->clear(r);
            store_records_free(v, (size_t)k);
            *more = false;
            return err_set(err, errlen, -ENOMEM, "out of memory");
        }
    }
    pq->clear(r);
    *items = v;
    *n = (size_t)rows;
    return 0;
}

/* ---- the queue ------------------------------------------------------------------- */

/* The answer of a claim (UPDATE ... RETURNING): its row into *out, or
 * -EAGAIN with `none` when nothing was claimed. Clears r. */
static int claimed_row(struct pg *g, PGresult *r, struct eval_record *out, const char *none,
                       const char *what, char *err, size_t errlen)
{
    if (g->pq->ntuples(r) == 0) {
        g->pq->clear(r);
        return err_set(err, errlen, -EAGAIN, "%s", none);
    }
    int rc = row_read(g->pq, r, 0, out, NULL);
    g->pq->clear(r);
    if (rc < 0) /* committed, but we cannot hand it over: the lease will expire */
        return err_set(err, errlen, rc, "out of memory reading the claimed %s", what);
    return 0;
}

static int pg_claim(store_t *s, const char *worker_id, int64_t lease_ms, struct eval_record *out,
                    char *err, size_t errlen)
{
    struct pg *g = PG(s);
    int64_t now = (int64_t)time_now_ns();
    struct params p = {0};
    p_text(&p, worker_id);
    p_i64(&p, now + lease_ms * 1000000);
    p_i64(&p, now);
    int rc;
    PGresult *r = pg_run(g, S_CLAIM, &p, &rc, "claim", err, errlen);
    if (!r)
        return rc;
    return claimed_row(g, r, out, "nothing queued", "evaluation", err, errlen);
}

/* After a write matched no row: -ENOENT if id does not exist, else the code
 * given (the row exists in another state); *status gets that state. */
static int why_not(struct pg *g, const char *id, int code, enum eval_status *status,
                   const char *what, char *err, size_t errlen)
{
    struct params p = {0};
    p_text(&p, id);
    int rc;
    PGresult *r = pg_run(g, S_EXISTS, &p, &rc, what, err, errlen);
    if (!r)
        return rc;
    bool found = g->pq->ntuples(r) > 0;
    enum eval_status cur = found ? col_status(g->pq, r, 0, 0) : EVAL_QUEUED;
    g->pq->clear(r);
    return store__why_not(id, found, cur, code, status, what, err, errlen);
}

static int pg_heartbeat(store_t *s, const char *id, const char *worker_id, int attempt,
                        int64_t lease_ms, bool *cancel_requested, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, worker_id);
    p_i64(&p, attempt);
    p_i64(&p, (int64_t)time_now_ns() + lease_ms * 1000000);
    int rc;
    PGresult *r = pg_run(g, S_HEARTBEAT, &p, &rc, "heartbeat", err, errlen);
    if (!r)
        return rc;
    bool hit = g->pq->ntuples(r) == 1;
    if (hit)
        *cancel_requested = col_i64(g->pq, r, 0, 0) != 0;
    g->pq->clear(r);
    if (!hit)
        return why_not(g, id, -ESTALE, NULL, "heartbeat: lease lost", err, errlen);
    return 0;
}

static int pg_finish(store_t *s, const char *id, const char *worker_id, int attempt,
                     const struct store_outcome *o, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, worker_id);
    p_i64(&p, attempt);
    p_text(&p, store_status_name(o->status));
    p_json(&p, o->result_json);
    p_text(&p, o->error_reason);
    p_text(&p, o->error_message);
    p_i64(&p, (int64_t)time_now_ns());
    int rc;
    PGresult *r = pg_run(g, S_FINISH, &p, &rc, "finish", err, errlen);
    if (!r)
        return rc;
    int64_t changed = col_i64(pq, r, 0, 0);
    pq->clear(r);
    if (changed == 1)
        return 0;
    /* Not running under this lease: finished before with this outcome
     * (idempotent), or someone else's now. */
    p.n = 0;
    p_text(&p, id);
    r = pg_run(g, S_STATE, &p, &rc, "finish", err, errlen);
    if (!r)
        return rc;
    if (pq->ntuples(r) == 0) {
        pq->clear(r);
        return err_set(err, errlen, -ENOENT, "no evaluation %s", id);
    }
    enum eval_status cur = col_status(pq, r, 0, 0);
    char *w = NULL;
    bool mine = col_dup(pq, r, 0, 1, &w) == 0 && w && !strcmp(w, worker_id) &&
                col_i64(pq, r, 0, 2) == attempt;
    free(w);
    pq->clear(r);
    if (mine && cur == o->status)
        return 0;
    return store__not_leased(id, cur, worker_id, attempt, err, errlen);
}

static int pg_cancel(store_t *s, const char *id, enum eval_status *now_status, char *err,
                     size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, id);
    p_i64(&p, (int64_t)time_now_ns());
    int rc;
    PGresult *r = pg_run(g, S_CANCEL, &p, &rc, "cancel", err, errlen);
    if (!r)
        return rc;
    bool hit = g->pq->ntuples(r) == 1;
    if (hit)
        *now_status = col_status(g->pq, r, 0, 0); /* cancelled, or running + requested */
    g->pq->clear(r);
    if (hit)
        return 0;
    return why_not(g, id, -EALREADY, now_status, "cancel: already finished", err, errlen);
}

static int pg_requeue(store_t *s, const char *worker_id, int64_t now_ns,
                      struct store_requeue_counts *c, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    struct params p = {0};
    if (worker_id)
        p_text(&p, worker_id);
    else
        p_i64(&p, now_ns);
    p_i64(&p, (int64_t)time_now_ns());
    int rc;
    PGresult *r = pg_run(g, worker_id ? S_REQUEUE_WORKER : S_REQUEUE_EXPIRED, &p, &rc, "requeue",
                         err, errlen);
    if (!r)
        return rc;
    for (int i = 0; i < pq->ntuples(r); i++) {
        int k = (int)col_i64(pq, r, i, 1);
        switch (col_status(pq, r, i, 0)) {
        case EVAL_CANCELLED:
            c->cancelled += k;
            break;
        case EVAL_ERROR:
            c->lost += k;
            break;
        default:
            c->requeued += k;
        }
    }
    pq->clear(r);
    return c->requeued + c->lost + c->cancelled;
}

static int pg_queue_stats(store_t *s, struct store_queue_stats *qs, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    int rc;
    PGresult *r = pg_run(g, S_QUEUE_STATS, NULL, &rc, "queue depth", err, errlen);
    if (!r)
        return rc;
    qs->queued = col_i64(g->pq, r, 0, 0);
    qs->oldest_queued_ns = col_i64(g->pq, r, 0, 1); /* NULL when empty: 0 */
    qs->running = col_i64(g->pq, r, 0, 2);
    g->pq->clear(r);
    return 0;
}

static int pg_submitter_queued(store_t *s, const char *submitter, int64_t *n, char *err,
                               size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, submitter);
    int rc;
    PGresult *r = pg_run(g, S_SUBMITTER_QUEUED, &p, &rc, "submitter queued", err, errlen);
    if (!r)
        return rc;
    *n = col_i64(g->pq, r, 0, 0);
    g->pq->clear(r);
    return 0;
}

/* ---- retention, callbacks, events ------------------------------------------------- */

static int pg_purge(store_t *s, int64_t before_ns, int64_t *deleted, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    /* Batches of 500, each its own statement: row locks are held briefly, and
     * SKIP LOCKED lets two nodes purge at once without waiting. */
    for (;;) {
        struct params p = {0};
        p_i64(&p, before_ns);
        int64_t k = pg_run_count(g, S_PURGE, &p, "purge", err, errlen);
        if (k < 0)
            return (int)k;
        *deleted += k;
        if (k < 500)
            return 0;
    }
}

static int pg_callback_record(store_t *s, const char *id, const char *delivery_json, char *err,
                              size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, delivery_json);
    p_i64(&p, STORE_CALLBACKS_MAX);
    int64_t k = pg_run_count(g, S_CALLBACK, &p, "record callback", err, errlen);
    if (k < 0)
        return (int)k;
    if (k == 1)
        return 0;
    return why_not(g, id, -E2BIG, NULL, "record callback", err, errlen);
}

/* ---- the webhook outbox ---------------------------------------------------------- */

static int pg_callback_claim(store_t *s, const char *owner, int64_t lease_ms, int64_t now,
                             struct eval_record *out, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_i64(&p, now);
    p_i64(&p, now + lease_ms * 1000000);
    p_text(&p, owner);
    int rc;
    PGresult *r = pg_run(g, S_CB_CLAIM, &p, &rc, "claim webhook", err, errlen);
    if (!r)
        return rc;
    return claimed_row(g, r, out, "no webhook delivery due", "webhook", err, errlen);
}

static int pg_callback_settle(store_t *s, const char *id, const char *owner, int attempt,
                              const char *delivery_json, const char *state, int64_t next_ns,
                              char *err, size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, owner);
    p_i64(&p, attempt);
    p_text(&p, delivery_json);
    p_text(&p, state);
    if (next_ns)
        p_i64(&p, next_ns);
    else
        p_text(&p, NULL);
    p_i64(&p, STORE_CALLBACKS_MAX);
    int64_t k = pg_run_count(g, S_CB_SETTLE, &p, "settle webhook", err, errlen);
    if (k < 0)
        return (int)k;
    if (k == 1)
        return 0;
    int rc = why_not(g, id, -ESTALE, NULL, "settle webhook", err, errlen);
    if (rc == -ESTALE)
        err_set(err, errlen, -ESTALE,
                "settle webhook: attempt %d of evaluation %s is no longer claimed by %s",
                attempt, id, owner);
    return rc;
}

static int pg_callback_release(store_t *s, const char *owner, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    struct params p = {0};
    p_text(&p, owner);
    return (int)pg_run_count(g, S_CB_RELEASE, &p, "release webhook leases", err, errlen);
}

static int pg_callback_stats(store_t *s, struct store_callback_stats *cs, char *err,
                             size_t errlen)
{
    struct pg *g = PG(s);
    int rc;
    PGresult *r = pg_run(g, S_CB_STATS, NULL, &rc, "webhook stats", err, errlen);
    if (!r)
        return rc;
    cs->pending = col_i64(g->pq, r, 0, 0);
    cs->next_due_ns = col_i64(g->pq, r, 0, 1); /* NULL when none: 0 */
    g->pq->clear(r);
    return 0;
}

static int pg_events(store_t *s, const char *id, int64_t after_seq, struct store_event *ev,
                     size_t cap, char *err, size_t errlen)
{
    struct pg *g = PG(s);
    const struct pq_dl *pq = g->pq;
    struct params p = {0};
    p_text(&p, id);
    p_i64(&p, after_seq);
    p_i64(&p, (int64_t)cap);
    int rc;
    PGresult *r = pg_run(g, S_EVENTS, &p, &rc, "events", err, errlen);
    if (!r)
        return rc;
    int n = pq->ntuples(r);
    for (int i = 0; i < n && (size_t)i < cap; i++) {
        ev[i].seq = col_i64(pq, r, i, 0);
        ev[i].status = col_status(pq, r, i, 1);
        ev[i].ts_ns = col_i64(pq, r, i, 2);
    }
    pq->clear(r);
    if (n == 0) /* nothing new (-EAGAIN), or no such evaluation? */
        return why_not(g, id, -EAGAIN, NULL, "events", err, errlen);
    return n;
}

const struct store_ops store_pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .check = pg_check,
    .migrations_applied = pg_migrations_applied,
    .migration_apply = pg_migration_apply,
    .insert = pg_insert,
    .get = pg_get,
    .list = pg_list,
    .claim = pg_claim,
    .heartbeat = pg_heartbeat,
    .finish = pg_finish,
    .cancel = pg_cancel,
    .requeue = pg_requeue,
    .queue_stats = pg_queue_stats,
    .submitter_queued = pg_submitter_queued,
    .purge = pg_purge,
    .callback_record = pg_callback_record,
    .callback_claim = pg_callback_claim,
    .callback_settle = pg_callback_settle,
    .callback_release = pg_callback_release,
    .callback_stats = pg_callback_stats,
    .events = pg_events,
};
