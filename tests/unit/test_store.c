/* test_store.c - service/store.h on real SQLite files: the shared
 * behavioural suite (store_cases.h, also run on PostgreSQL by
 * test_store_pg.c) plus what only SQLite has: ids and status names, URL
 * errors, file mode, WAL pragmas, and the CLI refusing an unreachable
 * PostgreSQL. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "service/store.h"
#include "test.h"
#include "util/err.h"

#define BACKEND_NAME "sqlite"

static const char *db_url(const char *name)
{
    static char url[512];
    snprintf(url, sizeof url, "sqlite:%s/%s.db", test_tmpdir(), name);
    return url;
}

static int backend_exec(const char *name, const char *sql)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.db", test_tmpdir(), name);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

#include "store_cases.h"

/* ---- SQLite only ------------------------------------------------------------------ */

/* ---- the busy handler (store_sqlite.c sq_busy) --------------------------------------- */

struct lock_holder {
    sqlite3 *db;
    int hold_ms;
};

static void *release_later(void *arg)
{
    struct lock_holder *h = arg;
    struct timespec ts = {h->hold_ms / 1000, (long)(h->hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL);
    return NULL;
}

static double since_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* A write lock another connection holds briefly is waited for (retries every
 * 50 us-2 ms, not SQLite's 1-100 ms sleeps); one held past busy_timeout_ms
 * gives -EBUSY after about that long. */
TEST(busy_writer_is_waited_for_then_given_up_at_the_timeout)
{
    store_t *s = NULL;
    struct store_options o = {.flags = STORE_OPEN_MIGRATE, .busy_timeout_ms = 300};
    ASSERT_EQ(store_open(db_url("busy"), &o, &s, err, sizeof err), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/busy.db", test_tmpdir());
    struct lock_holder h = {NULL, 40};
    ASSERT_EQ(sqlite3_open(path, &h.db), SQLITE_OK);
    struct eval_record r;
    struct timespec t0;

    ASSERT_EQ(sqlite3_exec(h.db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, release_later, &h), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ(store_claim(s, "w-busy", 1000, &r, err, sizeof err), -EAGAIN); /* got the lock */
    double waited = since_ms(&t0);
    pthread_join(th, NULL);
    ASSERT_MSG(waited >= 30 && waited < 250, "waited %.1f ms for a 40 ms lock", waited);

    ASSERT_EQ(sqlite3_exec(h.db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ(store_claim(s, "w-busy", 1000, &r, err, sizeof err), -EBUSY);
    waited = since_ms(&t0);
    ASSERT_CONTAINS(err, "busy_timeout");
    ASSERT_MSG(waited >= 290 && waited < 2000, "gave up after %.1f ms (busy_timeout 300)", waited);
    sqlite3_exec(h.db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(h.db);
    store_close(s);
}

/* ---- names, ids ---------------------------------------------------------------- */

TEST(status_names_round_trip)
{
    for (int i = 0; i < EVAL_STATUS_COUNT; i++) {
        enum eval_status s;
        ASSERT_EQ(store_status_parse(store_status_name((enum eval_status)i), &s), 0);
        ASSERT_EQ(s, i);
        ASSERT_EQ(store_status_terminal(s), i >= EVAL_COMPLETED);
    }
    enum eval_status s;
    ASSERT_EQ(store_status_parse("finished", &s), -EINVAL);
    ASSERT_EQ(store_status_parse(NULL, &s), -EINVAL);
    ASSERT(store_status_name(EVAL_STATUS_COUNT) == NULL);
    ASSERT_STREQ(store_status_name(EVAL_CPU_TIME_LIMIT), "cpu_time_limit");
}

TEST(ids_are_unique_valid_and_time_ordered)
{
    enum { N = 20000 };
    static char ids[N][STORE_ID_LEN];
    for (int i = 0; i < N; i++) {
        store_id_new(ids[i]);
        ASSERT_MSG(store_id_valid(ids[i]), "invalid id %s", ids[i]);
        ASSERT_EQ(strlen(ids[i]), 26);
    }
    /* Ids made in a later millisecond sort after earlier ones. */
    char a[STORE_ID_LEN], b[STORE_ID_LEN];
    store_id_new(a);
    struct timespec ts = {0, 3000000};
    nanosleep(&ts, NULL);
    store_id_new(b);
    ASSERT(strcmp(a, b) < 0);
    qsort(ids, N, STORE_ID_LEN, (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < N; i++)
        ASSERT_MSG(strcmp(ids[i - 1], ids[i]) != 0, "duplicate id %s", ids[i]);
    ASSERT(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FA"));    /* 25 */
    ASSERT(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAVX")); /* 27 */
    ASSERT(!store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAU"));  /* U not in alphabet */
    ASSERT(!store_id_valid("81ARZ3NDEKTSV4RRFFQ69G5FAV"));  /* > 128 bits */
    ASSERT(store_id_valid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    ASSERT(!store_id_valid("' OR 1=1 --"));
}
TEST(open_refuses_bad_urls_clearly)
{
    store_t *s = (store_t *)1;
    /* postgres:// goes to the PostgreSQL backend (test_store_pg.c); here a
     * socket directory that does not exist, so nothing is contacted. */
    ASSERT_EQ(store_open("postgresql:///x?host=/nonexistent-clearbox-dir", NULL, &s, err,
                         sizeof err),
              -ECONNREFUSED);
    ASSERT(s == NULL);
    ASSERT_CONTAINS(err, "cannot connect to PostgreSQL");
    ASSERT_EQ(store_open("mysql://x", NULL, &s, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "sqlite:PATH");
    ASSERT_EQ(store_open("", NULL, &s, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_open("sqlite:", NULL, &s, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_open("sqlite:/nonexistent-dir/x/y.db", NULL, &s, err, sizeof err), -ENOENT);
    ASSERT_CONTAINS(err, "/nonexistent-dir/x/y.db");
    /* A file that is not a database. */
    char path[512];
    snprintf(path, sizeof path, "%s/junk.db", test_tmpdir());
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database at all\n", f);
    fclose(f);
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s", path);
    ASSERT(store_open(url, NULL, &s, err, sizeof err) < 0);
    ASSERT(s == NULL);
    ASSERT_CONTAINS(err, "not a database");
}
TEST(pragmas_give_durable_wal)
{
    store_t *s = db_open("p");
    ASSERT(s);
    store_close(s);
    sqlite3 *db;
    char path[512];
    snprintf(path, sizeof path, "%s/p.db", test_tmpdir());
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_STREQ((const char *)sqlite3_column_text(st, 0), "wal"); /* persistent */
    sqlite3_finalize(st);
    sqlite3_close(db);
}
TEST(database_file_is_private)
{
    store_t *s = db_open("mode");
    ASSERT(s);
    store_close(s);
    /* The file holds code: 0600. */
    struct stat sb;
    char path[512];
    snprintf(path, sizeof path, "%s/mode.db", test_tmpdir());
    ASSERT_EQ(stat(path, &sb), 0);
    ASSERT_EQ(sb.st_mode & 0777, 0600);
}

TEST(cli_migrate_reports_an_unreachable_postgres)
{
    char out[4096];
    const char *a[] = {"migrate", "--db", "postgresql:///x?host=/nonexistent-clearbox-dir", NULL};
    int rc = run_cli(out, sizeof out, a);
    if (rc == -1000) {
        test_skip("build/clearbox not built (set CLEARBOX)");
        return;
    }
    ASSERT_EQ(rc, 1);
    ASSERT_CONTAINS(out, "cannot connect to PostgreSQL");
}

/* ---- query plans ------------------------------------------------------------------- */

/* The plan of one statement, its lines joined by " | ". */
static int plan_of(sqlite3 *db, const char *sql, char *out, size_t n)
{
    char q[4096];
    snprintf(q, sizeof q, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return -1;
    size_t off = 0;
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW && off < n)
        off += (size_t)snprintf(out + off, n - off, "%s%s", off ? " | " : "",
                                (const char *)sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
    return 0;
}

/* Whether one statement's plan keeps its cost independent of the history:
 * no sort of its rows in a temporary b-tree, no scan of the whole table,
 * and the per-claim and per-submit reads on the queued-only indexes. Says
 * which statement and plan when not. */
static bool plan_ok(sqlite3 *db, const char *sql, int *claim, int *submitter)
{
    char plan[2048];
    if (plan_of(db, sql, plan, sizeof plan) < 0)
        return false;
    bool ok = !strstr(plan, "TEMP B-TREE") &&
              (!strstr(plan, "SCAN evaluations") || strstr(plan, "USING"));
    if (strstr(sql, "status = 'queued'") && strstr(sql, "ORDER BY priority")) {
        ok = ok && strstr(plan, "evaluations_queue");
        ++*claim;
    }
    if (strstr(sql, "status = 'queued' AND submitter = ?")) {
        ok = ok && strstr(plan, "evaluations_queued_submitter");
        ++*submitter;
    }
    if (!ok)
        fprintf(stderr, "    %s\n      plan: %s\n", sql, plan);
    return ok;
}

/* No statement's cost may grow with the history (plan_ok), with the
 * planner's default guesses and after ANALYZE (an operator may run it; the
 * statistics changed plans for the worse before the statements named their
 * indexes). Without statistics SQLite sorted every queued row per claim and
 * counted a submitter's whole history per submit; with them it sorted the
 * table for the unfiltered list. The database holds finished and queued
 * rows, as a long-lived service's does. */
TEST(no_statement_sorts_or_scans_the_history)
{
    store_t *s = db_open("plans");
    ASSERT(s);
    char id[STORE_ID_LEN];
    for (int i = 0; i < 50; i++)
        ASSERT_EQ(insert(s, "print(1)", i % 3, id), 0);
    store_close(s);
    ASSERT_EQ(backend_exec("plans", "UPDATE evaluations SET status = 'completed', "
                                    "finished_ns = 1 WHERE pos % 2 = 0"),
              0);
    char path[512];
    snprintf(path, sizeof path, "%s/plans.db", test_tmpdir());
    size_t n;
    const char *const *sql = store_sqlite__statements(&n);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            ASSERT_EQ(backend_exec("plans", "ANALYZE"), 0);
        sqlite3 *db;
        ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
        int checked = 0, bad = 0, claim = 0, submitter = 0;
        for (size_t i = 0; i < n; i++) {
            bool dml = !strncmp(sql[i], "SELECT", 6) || !strncmp(sql[i], "UPDATE", 6) ||
                       !strncmp(sql[i], "DELETE", 6) || !strncmp(sql[i], "INSERT", 6);
            if (!dml)
                continue; /* BEGIN, COMMIT, ROLLBACK */
            bad += !plan_ok(db, sql[i], &claim, &submitter);
            checked++;
        }
        sqlite3_close(db);
        ASSERT_EQ(bad, 0);
        ASSERT_EQ(claim, 1);
        ASSERT_EQ(submitter, 1);
        ASSERT(checked > 30);
    }
}

/* A batch is one transaction in SQLite: when one item's insert fails in the
 * database (a trigger here), none of the batch is stored and every item
 * that was tried carries the error; the next batch goes through. */
TEST(insert_batch_is_all_or_nothing)
{
    store_t *s = db_open("batchtx");
    ASSERT(s);
    ASSERT_EQ(backend_exec("batchtx", "CREATE TRIGGER boom BEFORE INSERT ON evaluations "
                                      "WHEN NEW.code = CAST('boom' AS BLOB) "
                                      "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"),
              0);
    struct eval_record r[3] = {rec("print(1)", 0), rec("boom", 0), rec("print(3)", 0)};
    struct store_batch_item it[3] = {{.rec = &r[0]}, {.rec = &r[1]}, {.rec = &r[2]}};
    store_insert_batch(s, it, 3);
    for (int i = 0; i < 3; i++) {
        ASSERT(it[i].rc < 0);
        ASSERT_CONTAINS(it[i].err, "boom refused");
        ASSERT_STREQ(it[i].id, "");
    }
    ASSERT_EQ(count_status(s, -1), 0);
    r[1] = rec("print(2)", 0);
    store_insert_batch(s, it, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_MSG(it[i].rc == 0, "item %d: %s", i, it[i].err);
    ASSERT_EQ(count_status(s, -1), 3);
    store_close(s);
}

/* When the claim half of store_finish_claim fails in the database (a
 * trigger refuses the claim's update here), the finish is still recorded
 * and the claim's error is reported; nothing is claimed. */
TEST(finish_claim_keeps_the_finish_when_the_claim_fails)
{
    store_t *s = db_open("fcfail");
    ASSERT(s);
    char a[STORE_ID_LEN], b[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "a", 0, a), 0);
    ASSERT_EQ(insert(s, "b", 0, b), 0);
    struct eval_record g, next;
    ASSERT_EQ(store_claim(s, "w1", 1000, &g, err, sizeof err), 0);
    store_record_clear(&g);
    ASSERT_EQ(backend_exec("fcfail", "CREATE TRIGGER noclaim BEFORE UPDATE OF status ON "
                                     "evaluations WHEN NEW.status = 'running' "
                                     "BEGIN SELECT RAISE(ABORT, 'claim refused'); END"),
              0);
    struct store_outcome o = {.status = EVAL_COMPLETED};
    int crc = 0;
    ASSERT_EQ(store_finish_claim(s, a, "w1", 1, &o, 1000, &next, &crc, err, sizeof err), 0);
    ASSERT(crc < 0 && crc != -EAGAIN && crc != -ECANCELED);
    ASSERT_EQ(next.id[0], '\0');
    ASSERT_EQ(store_get(s, a, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_COMPLETED);
    store_record_clear(&g);
    ASSERT_EQ(store_get(s, b, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_QUEUED);
    store_record_clear(&g);
    store_close(s);
}
