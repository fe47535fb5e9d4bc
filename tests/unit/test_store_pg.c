/* test_store_pg.c - service/store.h on PostgreSQL: the same behavioural suite
 * as SQLite (store_cases.h) against a real PostgreSQL server that this binary
 * starts (pg_support.h: initdb + postgres on a unix socket in a temp dir,
 * stopped at exit, and with the parent-death signal even when this process is
 * killed), plus what only the PostgreSQL backend has: connection errors,
 * reconnecting after the server dropped the connection, claims that skip rows
 * another session holds (FOR UPDATE SKIP LOCKED) instead of waiting, two
 * processes expiring the same leases at once, and a least-privilege role.
 *
 * Each test gets its own schema (search_path in the URL's options), so the
 * tests share one cluster and one database but never see each other's rows.
 * Without a PostgreSQL server installed, every test here fails and says what
 * to install (.ci/run installs it; skipping would hide a missing backend). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pg_support.h"
#include "service/pq_dl.h"
#include "service/store.h"
#include "test.h"
#include "util/err.h"

#define BACKEND_NAME "postgres"

/* A schema per (test process, name): t<pid>_<name>. */
static const char *schema_of(const char *name)
{
    static char schema[96];
    snprintf(schema, sizeof schema, "t%d_%s", (int)getpid(), name);
    return schema;
}

static const char *db_url(const char *name)
{
    static char url[512];
    const char *u = pg_test_url(schema_of(name), url, sizeof url);
    if (!u)
        fprintf(stderr, "    no PostgreSQL test cluster: %s\n", pg_test_error());
    return u;
}

static int backend_exec(const char *name, const char *sql)
{
    char e[ERR_LEN];
    int rc = pg_test_exec(schema_of(name), sql, e, sizeof e);
    if (rc < 0)
        fprintf(stderr, "    backend_exec: %s\n", e);
    return rc;
}

#include "store_cases.h"

/* One cluster for the whole binary, started before the first test forks. */
__attribute__((constructor(300))) static void cluster_start(void)
{
    pg_test_start_for_binary("test_store_pg");
}

__attribute__((destructor)) static void cluster_stop(void) { pg_test_stop(); }

/* ---- PostgreSQL only -------------------------------------------------------------- */

TEST(postgres_cluster_is_running)
{
    ASSERT_MSG(pg_test_url(NULL, (char[512]){0}, 512), "no PostgreSQL test cluster: %s",
               pg_test_error());
    store_t *s = db_open("ping");
    ASSERT(s);
    ASSERT_STREQ(store_backend_name(s), "postgres");
    ASSERT_EQ(store_ping(s, err, sizeof err), 0);
    ASSERT_MSG(store_check(s, err, sizeof err) == 0, "check: %s", err);
    store_close(s);
}

TEST(open_reports_connection_errors_clearly)
{
    store_t *s = (store_t *)1;
    ASSERT_EQ(store_open("postgresql:///x?host=/nonexistent-clearbox-dir", NULL, &s, err,
                         sizeof err),
              -ECONNREFUSED);
    ASSERT(s == NULL);
    ASSERT_CONTAINS(err, "cannot connect to PostgreSQL");
    ASSERT_CONTAINS(err, "/nonexistent-clearbox-dir");
    /* A database that does not exist. */
    char url[512];
    ASSERT(pg_test_url(NULL, url, sizeof url));
    char *db = strstr(url, "/clearbox?");
    ASSERT(db);
    char bad[600];
    snprintf(bad, sizeof bad, "%.*s/no_such_db%s", (int)(db - url), url, db + 9);
    ASSERT_EQ(store_open(bad, NULL, &s, err, sizeof err), -ENOENT);
    ASSERT_CONTAINS(err, "no_such_db");
    /* A parameter libpq does not know. */
    snprintf(bad, sizeof bad, "%s&bogus_option=1", url);
    ASSERT_EQ(store_open(bad, NULL, &s, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "bogus_option");
    /* A password in the URL never reaches a message. */
    snprintf(bad, sizeof bad, "postgresql://u:s3cret-pw@/x?host=/nonexistent-clearbox-dir");
    ASSERT(store_open(bad, NULL, &s, err, sizeof err) < 0);
    ASSERT(!strstr(err, "s3cret-pw"));
    /* The schema not migrated: -EPROTO with what to do. */
    ASSERT_EQ(store_open(db_url("unmigrated"), NULL, &s, err, sizeof err), -EPROTO);
    ASSERT_CONTAINS(err, "clearbox migrate");
}

/* Terminate the store's server sessions from another connection and wait
 * until they are gone; 0 when at least one was terminated. */
static int kill_store_sessions(void)
{
    char e[ERR_LEN], v[32];
    PGconn *c = pg_test_connect(NULL, e, sizeof e);
    if (!c)
        return -1;
    int rc = pg_test_query1(c,
                            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                            "FROM pg_stat_activity WHERE application_name = 'clearbox'",
                            v, sizeof v, e, sizeof e);
    pg_test_close(c);
    if (rc < 0)
        fprintf(stderr, "    %s\n", e);
    return rc < 0 ? rc : atoi(v) > 0 ? 0 : -1;
}

TEST(a_dropped_connection_fails_one_write_clearly_then_reconnects)
{
    store_t *s = db_open("reconnect");
    ASSERT(s);
    char id[STORE_ID_LEN], id2[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "x", 0, id), 0);
    /* A read is repeated on a new connection: the caller sees nothing. */
    ASSERT_EQ(kill_store_sessions(), 0);
    struct eval_record g;
    ASSERT_MSG(store_get(s, id, &g, err, sizeof err) == 0, "get after drop: %s", err);
    store_record_clear(&g);
    /* A write whose statement was not prepared on this session yet runs on a
     * new one: the failed PREPARE proves nothing ran. */
    ASSERT_EQ(kill_store_sessions(), 0);
    ASSERT_MSG(insert(s, "y", 0, id2) == 0, "insert after drop: %s", err);
    /* A write that may not repeat, with its statement prepared: it fails
     * once, saying so, and the next call reconnects. */
    ASSERT_EQ(kill_store_sessions(), 0);
    int rc = insert(s, "z", 0, id2);
    ASSERT_EQ(rc, -ECONNRESET);
    fprintf(stderr, "    %s\n", err);
    ASSERT_CONTAINS(err, "connection to PostgreSQL");
    ASSERT_CONTAINS(err, "the next call reconnects");
    ASSERT_EQ(insert(s, "z", 0, id2), 0);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), 3);
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, id);
    store_record_clear(&g);
    /* finish repeats safely (idempotent by contract). */
    ASSERT_EQ(kill_store_sessions(), 0);
    struct store_outcome o = {.status = EVAL_COMPLETED};
    ASSERT_MSG(store_finish(s, id, "w", 1, &o, err, sizeof err) == 0, "finish: %s", err);
    ASSERT_EQ(count_status(s, EVAL_COMPLETED), 1);
    ASSERT_EQ(store_ping(s, err, sizeof err), 0);
    store_close(s);
}

TEST(claim_skips_a_row_another_session_holds_instead_of_waiting)
{
    store_t *s = db_open("skip");
    ASSERT(s);
    char a[STORE_ID_LEN], b[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "first", 0, a), 0);
    ASSERT_EQ(insert(s, "second", 0, b), 0);
    /* Another node's claim in flight: it holds the first row's lock. */
    char e[ERR_LEN], v[64];
    PGconn *other = pg_test_connect(schema_of("skip"), e, sizeof e);
    ASSERT_MSG(other, "%s", e);
    ASSERT_EQ(pg_test_query1(other, "BEGIN; SELECT id FROM evaluations ORDER BY pos LIMIT 1 "
                                    "FOR UPDATE",
                             v, sizeof v, e, sizeof e),
              0);
    ASSERT_STREQ(v, a);
    int64_t t0 = (int64_t)time_mono_ns();
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
    int64_t waited_ms = ((int64_t)time_mono_ns() - t0) / 1000000;
    ASSERT_STREQ(g.id, b); /* skipped, not waited for */
    store_record_clear(&g);
    ASSERT_MSG(waited_ms < 2000, "claim waited %lld ms for a locked row", (long long)waited_ms);
    /* Only the held row is left: nothing to claim while it is held. */
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), -EAGAIN);
    pg_test_close(other); /* its transaction rolls back, the row is free */
    /* the server ends the closed session's transaction asynchronously: give
     * it a moment instead of racing it */
    int rc = -EAGAIN;
    for (int i = 0; i < 200 && rc == -EAGAIN; i++)
        if ((rc = store_claim(s, "w", 60000, &g, err, sizeof err)) == -EAGAIN)
            usleep(10000);
    ASSERT_EQ(rc, 0);
    ASSERT_STREQ(g.id, a);
    store_record_clear(&g);
    store_close(s);
}

/* Two processes requeue the same expired leases at once: every row moves
 * exactly once (the counts add up, each row has one new event). */
TEST(two_processes_expire_the_same_leases_once)
{
    enum { N = 300 };
    store_t *s = db_open("expire2");
    ASSERT(s);
    char id[STORE_ID_LEN];
    for (int i = 0; i < N; i++) {
        struct eval_record r = rec("x", 0);
        r.max_attempts = i % 2 ? 1 : 3; /* half are lost, half requeued */
        ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), 0);
    }
    struct eval_record g;
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(store_claim(s, "dead-node", 1, &g, err, sizeof err), 0);
        store_record_clear(&g);
    }
    const char *url = db_url("expire2");
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pids[2];
    int64_t later = (int64_t)time_now_ns() + 10LL * 1000000000;
    for (int k = 0; k < 2; k++) {
        pids[k] = fork();
        ASSERT(pids[k] >= 0);
        if (pids[k] == 0) {
            char e[ERR_LEN];
            store_t *c;
            if (store_open(url, NULL, &c, e, sizeof e) < 0)
                _exit(3);
            struct store_requeue_counts rc = {0};
            if (store_requeue_expired(c, later, &rc, e, sizeof e) < 0)
                _exit(4);
            char line[64];
            int n = snprintf(line, sizeof line, "%d %d %d\n", rc.requeued, rc.lost,
                             rc.cancelled);
            _exit(write(p[1], line, (size_t)n) == n ? 0 : 5);
        }
    }
    close(p[1]);
    size_t len;
    char *out = slurp_fd(p[0], &len);
    close(p[0]);
    for (int k = 0; k < 2; k++) {
        int st;
        ASSERT_EQ(waitpid(pids[k], &st, 0), pids[k]);
        ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "requeuer %d status %d", k, st);
    }
    int rq = 0, lost = 0, canc = 0;
    char *q = out;
    for (int k = 0; k < 2; k++) {
        int a, b, c, used;
        ASSERT_EQ(sscanf(q, "%d %d %d\n%n", &a, &b, &c, &used), 3);
        q += used;
        rq += a, lost += b, canc += c;
    }
    free(out);
    ASSERT_EQ(rq, N / 2);
    ASSERT_EQ(lost, N / 2);
    ASSERT_EQ(canc, 0);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), N / 2);
    ASSERT_EQ(count_status(s, EVAL_ERROR), N / 2);
    ASSERT_EQ(count_status(s, EVAL_RUNNING), 0);
    /* Each row: queued, running, then exactly one more event. */
    char cursor[STORE_CURSOR_LEN] = "";
    do {
        struct store_list_query lq = {.status = -1, .limit = 100, .cursor = cursor};
        struct eval_record *items;
        size_t n;
        ASSERT_EQ(store_list(s, &lq, &items, &n, cursor, err, sizeof err), 0);
        for (size_t k = 0; k < n; k++) {
            struct store_event ev[8];
            ASSERT_EQ(store_events(s, items[k].id, 0, ev, 8, err, sizeof err), 3);
            ASSERT_EQ(items[k].event_seq, 3);
        }
        store_records_free(items, n);
    } while (cursor[0]);
    ASSERT_EQ(store_check(s, err, sizeof err), 0);
    store_close(s);
}

/* docs/storage.md's roles: an owner role migrates, the service's role has
 * only SELECT/INSERT/UPDATE/DELETE on the tables, and every operation works. */
TEST(a_role_with_table_privileges_only_runs_the_service)
{
    const char *schema = schema_of("roles");
    char sql[1024], e[ERR_LEN];
    snprintf(sql, sizeof sql,
             "DROP ROLE IF EXISTS clearbox_app_%d; CREATE ROLE clearbox_app_%d LOGIN; "
             "GRANT USAGE ON SCHEMA %s TO clearbox_app_%d",
             (int)getpid(), (int)getpid(), schema, (int)getpid());
    store_t *s = db_open("roles"); /* migrated as the superuser (the owner) */
    ASSERT(s);
    store_close(s);
    ASSERT_MSG(pg_test_exec(NULL, sql, e, sizeof e) == 0, "%s", e);
    snprintf(sql, sizeof sql,
             "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO "
             "clearbox_app_%d",
             schema, (int)getpid());
    ASSERT_MSG(pg_test_exec(NULL, sql, e, sizeof e) == 0, "%s", e);
    char url[600];
    snprintf(url, sizeof url, "%s", db_url("roles"));
    char *user = strstr(url, "user=postgres");
    ASSERT(user);
    char app[700];
    snprintf(app, sizeof app, "%.*suser=clearbox_app_%d%s", (int)(user - url), url,
             (int)getpid(), user + strlen("user=postgres"));
    ASSERT_MSG(store_open(app, NULL, &s, err, sizeof err) == 0, "open as app role: %s", err);
    char id[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "x", 0, id), 0);
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w", 1, &g, err, sizeof err), 0);
    store_record_clear(&g);
    struct store_requeue_counts c;
    ASSERT_EQ(store_requeue_expired(s, (int64_t)time_now_ns() + 1000000000LL, &c, err,
                                    sizeof err),
              1);
    ASSERT_EQ(store_cancel(s, id, NULL, err, sizeof err), 0);
    int64_t deleted;
    ASSERT_EQ(store_purge(s, 0, (int64_t)time_now_ns() + 1000, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 1);
    ASSERT_EQ(store_check(s, err, sizeof err), 0);
    /* It cannot change the schema: migrating is the owner's job. */
    ASSERT_EQ(backend_exec("roles", "DELETE FROM schema_migrations"), 0);
    store_close(s);
    struct store_options o = {.flags = STORE_OPEN_MIGRATE};
    ASSERT_EQ(store_open(app, &o, &s, err, sizeof err), -EACCES);
    ASSERT_CONTAINS(err, "permission denied");
}
