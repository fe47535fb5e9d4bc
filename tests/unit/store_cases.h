/* store_cases.h - the behavioural suite of service/store.h, shared by every
 * backend: test_store.c runs it on SQLite files, test_store_pg.c on a
 * throwaway PostgreSQL cluster. Every operation and its error paths,
 * idempotency, priority + FIFO, cursor pages that stay stable under inserts,
 * leases (heartbeat, expiry, max attempts), cancel in every state, purge,
 * callbacks, the SSE event feed, migrations (twice, and through the clearbox
 * CLI), hostile bytes stored exactly, two processes claiming from one queue,
 * concurrent idempotent retries, and kill -9 of a client in the middle of
 * writes.
 *
 * Not a header of the library: included once by each backend's test file,
 * which first defines
 *   const char *db_url(const char *name)   a fresh database per name and test
 *   int backend_exec(const char *name, const char *sql)  SQL behind the store's back
 *   BACKEND_NAME                           what store_backend_name() says */
#ifndef CLEARBOX_TEST_STORE_CASES_H
#define CLEARBOX_TEST_STORE_CASES_H

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "service/store.h"
#include "test.h"
#include "util/err.h"
#include "util/timeutil.h"

static char err[ERR_LEN];

static store_t *db_open(const char *name)
{
    store_t *s = NULL;
    struct store_options o = {.flags = STORE_OPEN_MIGRATE};
    const char *url = db_url(name);
    if (!url)
        return NULL;
    if (store_open(url, &o, &s, err, sizeof err) < 0) {
        fprintf(stderr, "    store_open: %s\n", err);
        return NULL;
    }
    return s;
}

static struct eval_record rec(const char *code, int priority)
{
    struct eval_record r = {0};
    r.language = (char *)"python";
    r.code = (char *)code;
    r.code_len = strlen(code);
    r.priority = priority;
    return r;
}

static int insert(store_t *s, const char *code, int priority, char id[STORE_ID_LEN])
{
    struct eval_record r = rec(code, priority);
    return store_insert(s, &r, id, NULL, NULL, err, sizeof err);
}

static int64_t count_status(store_t *s, int status)
{
    int64_t total = 0;
    char cursor[STORE_CURSOR_LEN] = "";
    do {
        struct store_list_query q = {.status = status, .limit = STORE_LIST_MAX, .cursor = cursor};
        struct eval_record *items;
        size_t n;
        if (store_list(s, &q, &items, &n, cursor, err, sizeof err) < 0)
            return -1;
        total += (int64_t)n;
        store_records_free(items, n);
    } while (cursor[0]);
    return total;
}
/* ---- open and migrations ------------------------------------------------------------ */

TEST(open_requires_a_migrated_schema)
{
    store_t *s;
    ASSERT_EQ(store_open(db_url("plain"), NULL, &s, err, sizeof err), -EPROTO);
    ASSERT_CONTAINS(err, "clearbox migrate");
    struct store_options o = {.flags = STORE_OPEN_NO_CHECK};
    ASSERT_EQ(store_open(db_url("plain"), &o, &s, err, sizeof err), 0);
    struct store_migration_state st[8];
    size_t n;
    ASSERT_EQ(store_migration_status(s, st, 8, &n, err, sizeof err), 0);
    ASSERT_EQ(n, (size_t)store_schema_latest());
    ASSERT_EQ(st[0].applied_ns, 0);
    ASSERT_STREQ(st[0].name, "create_evaluations");
    ASSERT_STREQ(st[1].name, "durable_webhook_deliveries");
    store_close(s);
}
TEST(migrations_apply_once_and_are_recorded)
{
    struct store_options o = {.flags = STORE_OPEN_NO_CHECK};
    store_t *s;
    ASSERT_EQ(store_open(db_url("m"), &o, &s, err, sizeof err), 0);
    struct store_migration_state st[8];
    size_t n;
    int64_t before = (int64_t)time_now_ns();
    ASSERT_EQ(store_migrate(s, st, 8, &n, err, sizeof err), store_schema_latest());
    ASSERT_EQ(n, (size_t)store_schema_latest());
    ASSERT(st[0].applied_now);
    ASSERT(st[0].applied_ns >= before);
    ASSERT_EQ(store_migrate(s, st, 8, &n, err, sizeof err), 0); /* second run: nothing */
    ASSERT(!st[0].applied_now);
    ASSERT(st[0].applied_ns >= before);
    store_close(s);
    /* Reopen with the check: current. Then with MIGRATE again: still fine. */
    ASSERT_EQ(store_open(db_url("m"), NULL, &s, err, sizeof err), 0);
    store_close(s);
    s = db_open("m");
    ASSERT(s);
    store_close(s);
    /* A version from a newer clearbox is refused. */
    ASSERT_EQ(backend_exec("m", "INSERT INTO schema_migrations VALUES (999, 'future', 1)"), 0);
    ASSERT_EQ(store_open(db_url("m"), NULL, &s, err, sizeof err), -EPROTO);
    ASSERT_CONTAINS(err, "newer");
    ASSERT_EQ(store_open(db_url("m"), &o, &s, err, sizeof err), 0);
    ASSERT_EQ(store_migrate(s, st, 8, &n, err, sizeof err), -EPROTO);
    ASSERT_CONTAINS(err, "999");
    store_close(s);
}

/* Run build/clearbox (or $CLEARBOX) with args; output into out. */
static int run_cli(char *out, size_t cap, const char *const *args)
{
    const char *bin = getenv("CLEARBOX");
    if (!bin || access(bin, X_OK) != 0)
        bin = "build/clearbox";
    if (access(bin, X_OK) != 0)
        return -1000;
    int p[2];
    if (pipe(p) < 0)
        return -1001;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        char *argv[16] = {(char *)bin};
        int i = 0;
        for (; args[i] && i < 14; i++)
            argv[i + 1] = (char *)args[i];
        argv[i + 1] = NULL;
        unsetenv("CLEARBOX_DB");
        execv(bin, argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = read(p[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = '\0';
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
TEST(cli_migrate_applies_then_reports_up_to_date)
{
    char out[4096];
    const char *url = db_url("cli");
    const char *a1[] = {"migrate", "--db", url, NULL};
    int rc = run_cli(out, sizeof out, a1);
    if (rc == -1000) {
        test_skip("build/clearbox not built (set CLEARBOX)");
        return;
    }
    ASSERT_MSG(rc == 0, "exit %d: %s", rc, out);
    ASSERT_CONTAINS(out, "applied 1 create_evaluations");
    ASSERT_CONTAINS(out, "applied 2 durable_webhook_deliveries");
    ASSERT_CONTAINS(out, "schema at version 2: 2 migrations applied");
    rc = run_cli(out, sizeof out, a1);
    ASSERT_MSG(rc == 0, "exit %d: %s", rc, out);
    ASSERT_CONTAINS(out, "up to date, nothing to apply");
    ASSERT(!strstr(out, "applied 1"));
    const char *a2[] = {"migrate", "--db", url, "--status", NULL};
    rc = run_cli(out, sizeof out, a2);
    ASSERT_MSG(rc == 0, "exit %d: %s", rc, out);
    ASSERT_CONTAINS(out, "create_evaluations");
    ASSERT_CONTAINS(out, "schema at version 2 of 2, 0 pending");
    /* --status on a new database applies nothing. */
    const char *a3[] = {"migrate", "--db", db_url("cli2"), "--status", NULL};
    rc = run_cli(out, sizeof out, a3);
    ASSERT_MSG(rc == 0, "exit %d: %s", rc, out);
    ASSERT_CONTAINS(out, "pending");
    ASSERT_CONTAINS(out, "schema at version 0 of 2, 2 pending");
    const char *a5[] = {"migrate", "--bogus", NULL};
    ASSERT_EQ(run_cli(out, sizeof out, a5), 2);
    const char *a6[] = {"migrate", "--db", NULL};
    ASSERT_EQ(run_cli(out, sizeof out, a6), 2);
}
/* ---- insert and get ------------------------------------------------------------------ */

TEST(insert_get_round_trips_every_field_and_hostile_bytes)
{
    store_t *s = db_open("rt");
    ASSERT(s);
    static const char code[] = "print(1)\0\xff\xfe hidden after NUL\n";
    static const char in[] = "\0\0\x01\x80stdin\xc3";
    static const char meta[] = "{\"submitter\":\"alice\",\"note\":\"\xff\xc0\x80 bad utf8\"}";
    struct eval_record r = {0};
    r.language = (char *)"python";
    r.code = (char *)code;
    r.code_len = sizeof code - 1;
    r.stdin_data = (char *)in;
    r.stdin_len = sizeof in - 1;
    r.args_json = (char *)"[\"-v\",\"x\"]";
    r.files_json = (char *)"[{\"path\":\"a.txt\",\"content_base64\":\"aGk=\"}]";
    r.limits_json = (char *)"{\"timeout_s\":5,\"memory_mb\":256}";
    r.metadata_json = (char *)meta;
    r.submitter = (char *)"alice";
    r.priority = 7;
    r.idempotency_key = (char *)"key-1";
    r.callback_url = (char *)"http://127.0.0.1:9/hook";
    r.traceparent = (char *)"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    r.tracestate = (char *)"rojo=00f067aa0ba902b7";
    r.max_attempts = 5;
    char id[STORE_ID_LEN];
    bool existed = true;
    int64_t pos = 0;
    int64_t t0 = (int64_t)time_now_ns();
    ASSERT_EQ(store_insert(s, &r, id, &existed, &pos, err, sizeof err), 0);
    ASSERT(!existed);
    ASSERT_EQ(pos, 1);
    ASSERT(store_id_valid(id));

    struct eval_record g;
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, id);
    ASSERT_EQ(g.status, EVAL_QUEUED);
    ASSERT_STREQ(g.language, "python");
    ASSERT_EQ(g.code_len, sizeof code - 1);
    ASSERT(memcmp(g.code, code, sizeof code - 1) == 0);
    ASSERT_EQ(g.stdin_len, sizeof in - 1);
    ASSERT(memcmp(g.stdin_data, in, sizeof in - 1) == 0);
    ASSERT(memcmp(g.metadata_json, meta, sizeof meta) == 0); /* incl. the NUL */
    ASSERT_STREQ(g.args_json, "[\"-v\",\"x\"]");
    ASSERT_STREQ(g.files_json, r.files_json);
    ASSERT_STREQ(g.limits_json, r.limits_json);
    ASSERT_STREQ(g.submitter, "alice");
    ASSERT_EQ(g.priority, 7);
    ASSERT_STREQ(g.idempotency_key, "key-1");
    ASSERT_STREQ(g.callback_url, "http://127.0.0.1:9/hook");
    ASSERT_STREQ(g.traceparent, r.traceparent);
    ASSERT_STREQ(g.tracestate, r.tracestate);
    ASSERT(g.created_ns >= t0 && g.created_ns <= (int64_t)time_now_ns());
    ASSERT_EQ(g.queued_ns, g.created_ns);
    ASSERT_EQ(g.started_ns, 0);
    ASSERT_EQ(g.finished_ns, 0);
    ASSERT_EQ(g.attempts, 0);
    ASSERT_EQ(g.max_attempts, 5);
    ASSERT(g.worker_id == NULL);
    ASSERT(g.result_json == NULL);
    ASSERT(!g.cancel_requested);
    ASSERT_STREQ(g.callbacks_json, "[]");
    ASSERT_EQ(g.event_seq, 1);
    ASSERT_EQ(g.queue_position, 1);
    store_record_clear(&g);

    /* Defaults: no stdin, no JSON, default attempts; empty code is allowed. */
    struct eval_record m = rec("", 0);
    ASSERT_EQ(store_insert(s, &m, id, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_EQ(g.code_len, 0);
    ASSERT(g.code && g.code[0] == '\0');
    ASSERT(g.stdin_data == NULL);
    ASSERT(g.args_json == NULL && g.metadata_json == NULL);
    ASSERT_STREQ(g.submitter, "");
    ASSERT_EQ(g.max_attempts, STORE_DEFAULT_MAX_ATTEMPTS);
    store_record_clear(&g);
    /* Empty stdin is kept apart from no stdin. */
    m.stdin_data = (char *)"";
    m.stdin_len = 0;
    ASSERT_EQ(store_insert(s, &m, id, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT(g.stdin_data != NULL);
    ASSERT_EQ(g.stdin_len, 0);
    store_record_clear(&g);

    ASSERT_EQ(store_get(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &g, err, sizeof err), -ENOENT);
    ASSERT_EQ(store_get(s, "'; DROP TABLE evaluations; --", &g, err, sizeof err), -ENOENT);
    ASSERT_EQ(store_get(s, "", &g, err, sizeof err), -ENOENT);
    store_close(s);
}

TEST(insert_refuses_invalid_records_and_changes_nothing)
{
    store_t *s = db_open("inv");
    ASSERT(s);
    char id[STORE_ID_LEN];
    struct eval_record r = rec("x", 10);
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "priority");
    r = rec("x", -1);
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    r = rec("x", 0);
    r.language = NULL;
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "language");
    r.language = (char *)"";
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    r = rec("x", 0);
    r.traceparent = (char *)"00-zz-00f067aa0ba902b7-01";
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "traceparent");
    r = rec("x", 0);
    r.code = NULL;
    r.code_len = 5;
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    r = rec("x", 0);
    r.code_len = (size_t)STORE_CODE_MAX + 1; /* checked before any byte is read */
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "code is longer");
    r = rec("x", 0);
    r.idempotency_key = (char *)"";
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    char big[STORE_SUBMITTER_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    r = rec("x", 0);
    r.submitter = big;
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "submitter");
    r = rec("x", 0);
    r.max_attempts = 1000;
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), -EINVAL);
    ASSERT_EQ(count_status(s, -1), 0);
    store_close(s);
}

TEST(idempotency_key_returns_the_first_evaluation)
{
    store_t *s = db_open("idem");
    ASSERT(s);
    struct eval_record r = rec("print(1)", 3);
    r.submitter = (char *)"alice";
    r.idempotency_key = (char *)"abc";
    char id1[STORE_ID_LEN], id2[STORE_ID_LEN], id3[STORE_ID_LEN], id4[STORE_ID_LEN];
    bool existed;
    int64_t pos;
    ASSERT_EQ(store_insert(s, &r, id1, &existed, &pos, err, sizeof err), 0);
    ASSERT(!existed);
    r.code = (char *)"print(2)"; /* a retry, even with another body, gets the first */
    ASSERT_EQ(store_insert(s, &r, id2, &existed, &pos, err, sizeof err), 0);
    ASSERT(existed);
    ASSERT_STREQ(id2, id1);
    ASSERT_EQ(pos, 1);
    r.submitter = (char *)"bob"; /* the key is per submitter */
    ASSERT_EQ(store_insert(s, &r, id3, &existed, NULL, err, sizeof err), 0);
    ASSERT(!existed);
    ASSERT(strcmp(id3, id1) != 0);
    r.idempotency_key = NULL; /* no key: always new */
    ASSERT_EQ(store_insert(s, &r, id4, &existed, NULL, err, sizeof err), 0);
    ASSERT_EQ(store_insert(s, &r, id2, &existed, NULL, err, sizeof err), 0);
    ASSERT(!existed);
    ASSERT(strcmp(id4, id2) != 0);
    ASSERT_EQ(count_status(s, -1), 4);
    struct eval_record g;
    ASSERT_EQ(store_get(s, id1, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.code, "print(1)");
    store_record_clear(&g);
    /* After it ran, the retry still returns it (and its place is 0). */
    ASSERT_EQ(store_claim(s, "w", 1000, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, id1);
    store_record_clear(&g);
    r.submitter = (char *)"alice";
    r.idempotency_key = (char *)"abc";
    ASSERT_EQ(store_insert(s, &r, id2, &existed, &pos, err, sizeof err), 0);
    ASSERT(existed);
    ASSERT_STREQ(id2, id1);
    ASSERT_EQ(pos, 0);
    store_close(s);
}

/* ---- the queue ----------------------------------------------------------------------- */

/* A batch: every valid item stored with its own id and place in the queue,
 * an invalid one refused alone, an idempotent retry inside and across
 * batches given the first evaluation. */
TEST(insert_batch_stores_each_item_with_its_own_outcome)
{
    store_t *s = db_open("batch");
    ASSERT(s);
    struct eval_record r[6];
    for (int i = 0; i < 6; i++)
        r[i] = rec("print(1)", i == 4 ? 7 : 0);
    r[2].priority = 10; /* invalid */
    r[3].submitter = r[5].submitter = (char *)"alice";
    r[3].idempotency_key = r[5].idempotency_key = (char *)"k";
    struct store_batch_item it[6] = {0};
    for (int i = 0; i < 6; i++)
        it[i].rec = &r[i];
    store_insert_batch(s, it, 6);
    for (int i = 0; i < 6; i++)
        if (i != 2)
            ASSERT_MSG(it[i].rc == 0, "item %d: %s", i, it[i].err);
    ASSERT_EQ(it[2].rc, -EINVAL);
    ASSERT_CONTAINS(it[2].err, "priority");
    ASSERT_STREQ(it[2].id, "");
    /* places: item 4 (priority 7) first, then 0, 1, 3 in order */
    ASSERT_EQ(it[0].queue_position, 1);
    ASSERT_EQ(it[1].queue_position, 2);
    ASSERT_EQ(it[3].queue_position, 3);
    ASSERT_EQ(it[4].queue_position, 1);
    ASSERT(!it[0].existed && !it[3].existed && !it[4].existed);
    ASSERT(it[5].existed);
    ASSERT_STREQ(it[5].id, it[3].id);
    ASSERT(strcmp(it[0].id, it[1].id) != 0);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), 4);
    /* a second batch retrying the key: the first evaluation again */
    struct store_batch_item again[1] = {{.rec = &r[3]}};
    store_insert_batch(s, again, 1);
    ASSERT_EQ(again[0].rc, 0);
    ASSERT(again[0].existed);
    ASSERT_STREQ(again[0].id, it[3].id);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), 4);
    /* claims follow the queue: priority 7, then insertion order */
    const int order[] = {4, 0, 1, 3};
    for (int k = 0; k < 4; k++) {
        struct eval_record g;
        ASSERT_EQ(store_claim(s, "w", 1000, &g, err, sizeof err), 0);
        ASSERT_STREQ(g.id, it[order[k]].id);
        store_record_clear(&g);
    }
    store_close(s);
}

/* A batch item without a record, or with an invalid one, is refused on its
 * own before the backend sees the batch; a batch of only those stores
 * nothing. */
TEST(insert_batch_refuses_items_without_a_valid_record)
{
    store_t *s = db_open("batchbad");
    ASSERT(s);
    struct eval_record bad = rec("x", 10);
    struct store_batch_item it[2] = {{.rec = NULL}, {.rec = &bad}};
    store_insert_batch(s, it, 2);
    ASSERT_EQ(it[0].rc, -EINVAL);
    ASSERT_CONTAINS(it[0].err, "no record");
    ASSERT_EQ(it[1].rc, -EINVAL);
    ASSERT_CONTAINS(it[1].err, "priority");
    ASSERT_EQ(count_status(s, -1), 0);
    store_close(s);
}

TEST(claim_takes_highest_priority_first_and_fifo_within)
{
    store_t *s = db_open("prio");
    ASSERT(s);
    static const int prio[] = {0, 5, 9, 5, 0, 9, 1, 5, 9, 0};
    enum { N = sizeof prio / sizeof prio[0] };
    char ids[N][STORE_ID_LEN];
    int64_t pos;
    for (int i = 0; i < N; i++) {
        struct eval_record r = rec("x", prio[i]);
        ASSERT_EQ(store_insert(s, &r, ids[i], NULL, &pos, err, sizeof err), 0);
    }
    /* Queue position of the last (priority 0, inserted last): after everything. */
    ASSERT_EQ(pos, N);
    struct eval_record g;
    ASSERT_EQ(store_get(s, ids[7], &g, err, sizeof err), 0); /* 3 nines, 2 earlier 5s */
    ASSERT_EQ(g.queue_position, 6);
    store_record_clear(&g);
    static const int order[] = {2, 5, 8, 1, 3, 7, 6, 0, 4, 9};
    for (int k = 0; k < N; k++) {
        ASSERT_EQ(store_claim(s, "w1", 30000, &g, err, sizeof err), 0);
        ASSERT_MSG(!strcmp(g.id, ids[order[k]]), "claim %d got priority %d, want item %d", k,
                   g.priority, order[k]);
        ASSERT_EQ(g.status, EVAL_RUNNING);
        ASSERT_EQ(g.attempts, 1);
        ASSERT_STREQ(g.worker_id, "w1");
        ASSERT(g.started_ns > 0);
        ASSERT(g.lease_expires_ns > g.started_ns + 29000000000LL);
        ASSERT_EQ(g.queue_position, 0);
        store_record_clear(&g);
    }
    ASSERT_EQ(store_claim(s, "w1", 30000, &g, err, sizeof err), -EAGAIN);
    ASSERT_EQ(store_claim(s, "", 30000, &g, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_claim(s, "w1", 0, &g, err, sizeof err), -EINVAL);
    store_close(s);
}

TEST(heartbeat_and_finish_hold_only_for_the_lease_owner)
{
    store_t *s = db_open("hb");
    ASSERT(s);
    char id[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "x", 0, id), 0);
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w1", 1000, &g, err, sizeof err), 0);
    int64_t lease0 = g.lease_expires_ns;
    store_record_clear(&g);
    bool cancel = true;
    ASSERT_EQ(store_heartbeat(s, id, "w1", 1, 60000, &cancel, err, sizeof err), 0);
    ASSERT(!cancel);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT(g.lease_expires_ns > lease0 + 50000000000LL);
    store_record_clear(&g);
    ASSERT_EQ(store_heartbeat(s, id, "w2", 1, 1000, NULL, err, sizeof err), -ESTALE);
    ASSERT_EQ(store_heartbeat(s, id, "w1", 2, 1000, NULL, err, sizeof err), -ESTALE);
    ASSERT_EQ(store_heartbeat(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "w1", 1, 1000, NULL, err,
                              sizeof err),
              -ENOENT);
    struct store_outcome o = {.status = EVAL_COMPLETED, .result_json = "{\"exit_code\":0}"};
    ASSERT_EQ(store_finish(s, id, "w2", 1, &o, err, sizeof err), -ESTALE);
    ASSERT_CONTAINS(err, "no longer leased");
    ASSERT_EQ(store_finish(s, id, "w1", 1, &o, err, sizeof err), 0);
    ASSERT_EQ(store_finish(s, id, "w1", 1, &o, err, sizeof err), 0); /* idempotent */
    struct store_outcome o2 = {.status = EVAL_TIMEOUT};
    ASSERT_EQ(store_finish(s, id, "w1", 1, &o2, err, sizeof err), -ESTALE);
    ASSERT_EQ(store_heartbeat(s, id, "w1", 1, 1000, NULL, err, sizeof err), -ESTALE);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_COMPLETED);
    ASSERT_STREQ(g.result_json, "{\"exit_code\":0}");
    ASSERT(g.finished_ns >= g.started_ns && g.finished_ns > 0);
    ASSERT_EQ(g.lease_expires_ns, 0);
    ASSERT_EQ(g.event_seq, 3);
    store_record_clear(&g);
    /* Argument errors. */
    struct store_outcome bad = {.status = EVAL_RUNNING};
    ASSERT_EQ(store_finish(s, id, "w1", 1, &bad, err, sizeof err), -EINVAL);
    struct store_outcome noreason = {.status = EVAL_ERROR};
    ASSERT_EQ(store_finish(s, id, "w1", 1, &noreason, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_finish(s, id, "w1", 0, &o, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_finish(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "w1", 1, &o, err, sizeof err),
              -ENOENT);
    /* error with a reason */
    ASSERT_EQ(insert(s, "y", 0, id), 0);
    ASSERT_EQ(store_claim(s, "w1", 1000, &g, err, sizeof err), 0);
    store_record_clear(&g);
    struct store_outcome oe = {.status = EVAL_ERROR, .error_reason = "sandbox_failed",
                               .error_message = "clone: EPERM"};
    ASSERT_EQ(store_finish(s, id, "w1", 1, &oe, err, sizeof err), 0);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_ERROR);
    ASSERT_STREQ(g.error_reason, "sandbox_failed");
    ASSERT_STREQ(g.error_message, "clone: EPERM");
    store_record_clear(&g);
    store_close(s);
}

/* store_finish_claim: the finish, then the next evaluation claimed for the
 * same worker; a finish that fails claims nothing; an empty queue leaves the
 * finish standing with -EAGAIN; an idempotent finish still claims. */
TEST(finish_claim_finishes_then_claims_the_next)
{
    store_t *s = db_open("fc");
    ASSERT(s);
    char a[STORE_ID_LEN], b[STORE_ID_LEN], c[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "a", 0, a), 0);
    ASSERT_EQ(insert(s, "b", 0, b), 0);
    ASSERT_EQ(insert(s, "c", 5, c), 0);
    struct eval_record g, next;
    ASSERT_EQ(store_claim(s, "w1", 1000, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, c);
    store_record_clear(&g);
    struct store_outcome o = {.status = EVAL_COMPLETED, .result_json = "{\"exit_code\":0}"};
    int crc = 0;
    /* not the lease owner: refused, nothing claimed */
    ASSERT_EQ(store_finish_claim(s, c, "w2", 1, &o, 1000, &next, &crc, err, sizeof err),
              -ESTALE);
    ASSERT_EQ(crc, -ECANCELED);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), 2);
    ASSERT_EQ(count_status(s, EVAL_RUNNING), 1);
    /* the owner: c finished, a claimed (FIFO), one commit */
    ASSERT_EQ(store_finish_claim(s, c, "w1", 1, &o, 60000, &next, &crc, err, sizeof err), 0);
    ASSERT_EQ(crc, 0);
    ASSERT_STREQ(next.id, a);
    ASSERT_EQ(next.status, EVAL_RUNNING);
    ASSERT_STREQ(next.worker_id, "w1");
    ASSERT_EQ(next.attempts, 1);
    ASSERT_STREQ(next.code, "a");
    ASSERT(next.lease_expires_ns > next.started_ns + 50000000000LL);
    store_record_clear(&next);
    ASSERT_EQ(store_get(s, c, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_COMPLETED);
    ASSERT_STREQ(g.result_json, "{\"exit_code\":0}");
    ASSERT_EQ(g.event_seq, 3);
    store_record_clear(&g);
    ASSERT_EQ(store_get(s, a, &g, err, sizeof err), 0);
    ASSERT_EQ(g.event_seq, 2);
    store_record_clear(&g);
    /* finishing c again with its outcome is idempotent and still claims b */
    ASSERT_EQ(store_finish_claim(s, c, "w1", 1, &o, 1000, &next, &crc, err, sizeof err), 0);
    ASSERT_EQ(crc, 0);
    ASSERT_STREQ(next.id, b);
    store_record_clear(&next);
    /* a finished, nothing left to claim: the finish stands */
    ASSERT_EQ(store_finish_claim(s, a, "w1", 1, &o, 1000, &next, &crc, err, sizeof err), 0);
    ASSERT_EQ(crc, -EAGAIN);
    ASSERT_EQ(next.id[0], '\0');
    ASSERT_EQ(count_status(s, EVAL_COMPLETED), 2);
    ASSERT_EQ(count_status(s, EVAL_RUNNING), 1);
    /* argument errors claim nothing either */
    struct store_outcome bad = {.status = EVAL_RUNNING};
    ASSERT_EQ(store_finish_claim(s, b, "w1", 1, &bad, 1000, &next, &crc, err, sizeof err),
              -EINVAL);
    ASSERT_EQ(crc, -ECANCELED);
    ASSERT_EQ(store_finish_claim(s, b, "w1", 1, &o, 0, &next, &crc, err, sizeof err), -EINVAL);
    store_close(s);
}

TEST(expired_leases_requeue_then_fail_as_worker_lost)
{
    store_t *s = db_open("lease");
    ASSERT(s);
    char id[STORE_ID_LEN], other[STORE_ID_LEN];
    struct eval_record r = rec("x", 0);
    r.max_attempts = 2;
    ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), 0);
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w1", 50, &g, err, sizeof err), 0);
    store_record_clear(&g);
    struct store_requeue_counts c;
    /* Not expired yet: nothing moves. */
    ASSERT_EQ(store_requeue_expired(s, 0, &c, err, sizeof err), 0);
    ASSERT_EQ(c.requeued, 0);
    int64_t later = (int64_t)time_now_ns() + 1000000000LL;
    ASSERT_EQ(store_requeue_expired(s, later, &c, err, sizeof err), 1);
    ASSERT_EQ(c.requeued, 1);
    ASSERT_EQ(c.lost, 0);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_QUEUED);
    ASSERT_EQ(g.attempts, 1);
    ASSERT_EQ(g.lease_expires_ns, 0);
    ASSERT(g.queued_ns > g.created_ns);
    store_record_clear(&g);
    /* The old lease is gone. */
    ASSERT_EQ(store_heartbeat(s, id, "w1", 1, 1000, NULL, err, sizeof err), -ESTALE);
    /* Another evaluation, queued later, must not jump ahead of the requeued one. */
    ASSERT_EQ(insert(s, "y", 0, other), 0);
    ASSERT_EQ(store_claim(s, "w2", 50, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, id);
    ASSERT_EQ(g.attempts, 2);
    store_record_clear(&g);
    struct store_outcome o = {.status = EVAL_COMPLETED};
    ASSERT_EQ(store_finish(s, id, "w1", 1, &o, err, sizeof err), -ESTALE); /* attempt 1 is over */
    later = (int64_t)time_now_ns() + 1000000000LL;
    ASSERT_EQ(store_requeue_expired(s, later, &c, err, sizeof err), 1);
    ASSERT_EQ(c.lost, 1);
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_ERROR);
    ASSERT_STREQ(g.error_reason, "worker_lost");
    ASSERT_CONTAINS(g.error_message, "2 attempts");
    ASSERT(g.finished_ns > 0);
    store_record_clear(&g);
    ASSERT_EQ(store_finish(s, id, "w2", 2, &o, err, sizeof err), -ESTALE);
    /* The event feed tells the whole story. */
    struct store_event ev[16];
    int n = store_events(s, id, 0, ev, 16, err, sizeof err);
    ASSERT_EQ(n, 5);
    static const enum eval_status want[] = {EVAL_QUEUED, EVAL_RUNNING, EVAL_QUEUED,
                                            EVAL_RUNNING, EVAL_ERROR};
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(ev[i].seq, i + 1);
        ASSERT_EQ(ev[i].status, want[i]);
        ASSERT(i == 0 || ev[i].ts_ns >= ev[i - 1].ts_ns);
    }
    store_close(s);
}

TEST(requeue_worker_moves_only_that_workers_running_rows)
{
    store_t *s = db_open("rw");
    ASSERT(s);
    char id[4][STORE_ID_LEN];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(insert(s, "x", 0, id[i]), 0);
    struct eval_record g;
    const char *who[] = {"node-a", "node-b", "node-a"};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(store_claim(s, who[i], 600000, &g, err, sizeof err), 0);
        store_record_clear(&g);
    }
    struct store_requeue_counts c;
    ASSERT_EQ(store_requeue_worker(s, "node-a", &c, err, sizeof err), 2);
    ASSERT_EQ(c.requeued, 2);
    struct store_queue_stats qs;
    ASSERT_EQ(store_queue_stats(s, &qs, err, sizeof err), 0);
    ASSERT_EQ(qs.queued, 3);
    ASSERT_EQ(qs.running, 1);
    ASSERT_EQ(store_get(s, id[1], &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_RUNNING);
    ASSERT_STREQ(g.worker_id, "node-b");
    store_record_clear(&g);
    ASSERT_EQ(store_requeue_worker(s, "node-a", &c, err, sizeof err), 0);
    ASSERT_EQ(store_requeue_worker(s, "", &c, err, sizeof err), -EINVAL);
    store_close(s);
}

TEST(cancel_in_every_state)
{
    store_t *s = db_open("cancel");
    ASSERT(s);
    char q1[STORE_ID_LEN], r1[STORE_ID_LEN], r2[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "queued", 0, q1), 0);
    ASSERT_EQ(insert(s, "running", 9, r1), 0);
    ASSERT_EQ(insert(s, "running2", 8, r2), 0);
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, r1);
    store_record_clear(&g);
    ASSERT_EQ(store_claim(s, "w", 1, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, r2);
    store_record_clear(&g);

    /* queued: cancelled at once, never claimed. */
    enum eval_status st;
    ASSERT_EQ(store_cancel(s, q1, &st, err, sizeof err), 0);
    ASSERT_EQ(st, EVAL_CANCELLED);
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), -EAGAIN);
    ASSERT_EQ(store_get(s, q1, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_CANCELLED);
    ASSERT(g.finished_ns > 0);
    ASSERT_EQ(g.attempts, 0);
    store_record_clear(&g);

    /* running: requested, seen by the heartbeat, finished as cancelled. */
    ASSERT_EQ(store_cancel(s, r1, &st, err, sizeof err), 0);
    ASSERT_EQ(st, EVAL_RUNNING);
    ASSERT_EQ(store_cancel(s, r1, &st, err, sizeof err), 0); /* twice: still fine */
    bool cancel = false;
    ASSERT_EQ(store_heartbeat(s, r1, "w", 1, 60000, &cancel, err, sizeof err), 0);
    ASSERT(cancel);
    struct store_outcome o = {.status = EVAL_CANCELLED};
    ASSERT_EQ(store_finish(s, r1, "w", 1, &o, err, sizeof err), 0);

    /* finished: 409. */
    ASSERT_EQ(store_cancel(s, r1, &st, err, sizeof err), -EALREADY);
    ASSERT_EQ(st, EVAL_CANCELLED);
    ASSERT_CONTAINS(err, "cancelled");
    ASSERT_EQ(store_cancel(s, q1, &st, err, sizeof err), -EALREADY);
    ASSERT_EQ(store_cancel(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &st, err, sizeof err), -ENOENT);

    /* running, cancel requested, then its worker died: cancelled, not requeued. */
    ASSERT_EQ(store_cancel(s, r2, &st, err, sizeof err), 0);
    struct store_requeue_counts c;
    ASSERT_EQ(store_requeue_expired(s, (int64_t)time_now_ns() + 1000000000LL, &c, err,
                                    sizeof err),
              1);
    ASSERT_EQ(c.cancelled, 1);
    ASSERT_EQ(store_get(s, r2, &g, err, sizeof err), 0);
    ASSERT_EQ(g.status, EVAL_CANCELLED);
    store_record_clear(&g);
    ASSERT_EQ(store_cancel(s, r2, &st, err, sizeof err), -EALREADY);
    store_close(s);
}

TEST(queue_stats_and_per_submitter_counts)
{
    store_t *s = db_open("stats");
    ASSERT(s);
    struct store_queue_stats qs;
    ASSERT_EQ(store_queue_stats(s, &qs, err, sizeof err), 0);
    ASSERT_EQ(qs.queued, 0);
    ASSERT_EQ(qs.oldest_queued_ns, 0);
    int64_t t0 = (int64_t)time_now_ns();
    const char *subs[] = {"alice", "bob", "alice", NULL, "alice"};
    char id[STORE_ID_LEN];
    for (int i = 0; i < 5; i++) {
        struct eval_record r = rec("x", 0);
        r.submitter = (char *)subs[i];
        ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), 0);
    }
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w", 1000, &g, err, sizeof err), 0); /* alice's first */
    store_record_clear(&g);
    ASSERT_EQ(store_queue_stats(s, &qs, err, sizeof err), 0);
    ASSERT_EQ(qs.queued, 4);
    ASSERT_EQ(qs.running, 1);
    ASSERT(qs.oldest_queued_ns >= t0 && qs.oldest_queued_ns <= (int64_t)time_now_ns());
    int64_t n;
    ASSERT_EQ(store_submitter_queued(s, "alice", &n, err, sizeof err), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(store_submitter_queued(s, "bob", &n, err, sizeof err), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(store_submitter_queued(s, NULL, &n, err, sizeof err), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(store_submitter_queued(s, "carol", &n, err, sizeof err), 0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(store_ping(s, err, sizeof err), 0);
    ASSERT_EQ(store_check(s, err, sizeof err), 0);
    ASSERT_STREQ(store_backend_name(s), BACKEND_NAME);
    store_close(s);
}

/* ---- list and cursors -------------------------------------------------------------- */

TEST(list_pages_are_stable_under_concurrent_inserts)
{
    store_t *s = db_open("list");
    ASSERT(s);
    enum { N = 250, PAGE = 37 };
    static char ids[N][STORE_ID_LEN];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(insert(s, "x", i % 10, ids[i]), 0);
    char cursor[STORE_CURSOR_LEN] = "";
    int seen = 0, pages = 0;
    do {
        struct store_list_query q = {.status = -1, .limit = PAGE, .cursor = cursor};
        struct eval_record *items;
        size_t n;
        ASSERT_EQ(store_list(s, &q, &items, &n, cursor, err, sizeof err), 0);
        pages++;
        for (size_t k = 0; k < n; k++) {
            /* newest first: exactly the original items in reverse, nothing new */
            ASSERT_MSG(seen < N && !strcmp(items[k].id, ids[N - 1 - seen]),
                       "page %d item %zu: %s is not item %d", pages, k, items[k].id,
                       N - 1 - seen);
            ASSERT(items[k].code == NULL); /* lists omit code */
            ASSERT_EQ(items[k].code_len, 1);
            seen++;
        }
        store_records_free(items, n);
        /* Others submit between pages. */
        char extra[STORE_ID_LEN];
        for (int k = 0; k < 3; k++)
            ASSERT_EQ(insert(s, "new", 9, extra), 0);
    } while (cursor[0]);
    ASSERT_EQ(seen, N);
    ASSERT_EQ(pages, (N + PAGE - 1) / PAGE);

    /* Exactly-full last page: no cursor after it. */
    struct store_list_query q = {.status = -1, .limit = N + 3 * pages};
    struct eval_record *items;
    size_t n;
    ASSERT_EQ(store_list(s, &q, &items, &n, cursor, err, sizeof err), 0);
    ASSERT_EQ(n, (size_t)(N + 3 * pages));
    ASSERT_STREQ(cursor, "");
    store_records_free(items, n);

    /* Status filter + pages. */
    struct eval_record g;
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
        store_record_clear(&g);
    }
    ASSERT_EQ(count_status(s, EVAL_RUNNING), 5);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), N + 3 * pages - 5);
    ASSERT_EQ(count_status(s, EVAL_COMPLETED), 0);

    /* Bad input. */
    struct store_list_query bad = {.status = -1, .cursor = "v1.zzzz"};
    ASSERT_EQ(store_list(s, &bad, &items, &n, cursor, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "cursor");
    bad.cursor = "12345";
    ASSERT_EQ(store_list(s, &bad, &items, &n, cursor, err, sizeof err), -EINVAL);
    bad.cursor = "v1.0000000000000000";
    ASSERT_EQ(store_list(s, &bad, &items, &n, cursor, err, sizeof err), -EINVAL);
    struct store_list_query lim = {.status = -1, .limit = STORE_LIST_MAX + 1};
    ASSERT_EQ(store_list(s, &lim, &items, &n, cursor, err, sizeof err), -EINVAL);
    lim.limit = -3;
    ASSERT_EQ(store_list(s, &lim, &items, &n, cursor, err, sizeof err), -EINVAL);
    struct store_list_query stq = {.status = EVAL_STATUS_COUNT};
    ASSERT_EQ(store_list(s, &stq, &items, &n, cursor, err, sizeof err), -EINVAL);
    store_close(s);
}

TEST(list_filters_by_submitter)
{
    store_t *s = db_open("lsub");
    ASSERT(s);
    char id[STORE_ID_LEN];
    for (int i = 0; i < 30; i++) {
        struct eval_record r = rec("x", 0);
        r.submitter = (char *)(i % 3 ? "bob" : "alice");
        ASSERT_EQ(store_insert(s, &r, id, NULL, NULL, err, sizeof err), 0);
    }
    struct store_list_query q = {.status = -1, .limit = 4, .submitter = "alice"};
    char cursor[STORE_CURSOR_LEN];
    int total = 0;
    do {
        struct eval_record *items;
        size_t n;
        ASSERT_EQ(store_list(s, &q, &items, &n, cursor, err, sizeof err), 0);
        for (size_t k = 0; k < n; k++)
            ASSERT_STREQ(items[k].submitter, "alice");
        total += (int)n;
        store_records_free(items, n);
        q.cursor = cursor;
    } while (cursor[0]);
    ASSERT_EQ(total, 10);
    store_close(s);
}

/* ---- retention, callbacks, events ---------------------------------------------------- */

TEST(purge_deletes_only_old_finished_evaluations)
{
    store_t *s = db_open("purge");
    ASSERT(s);
    char done[3][STORE_ID_LEN], queued[STORE_ID_LEN], running[STORE_ID_LEN];
    struct eval_record g;
    struct store_outcome o = {.status = EVAL_COMPLETED};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(insert(s, "x", 0, done[i]), 0);
        ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
        ASSERT_EQ(store_finish(s, g.id, "w", 1, &o, err, sizeof err), 0);
        store_record_clear(&g);
    }
    ASSERT_EQ(insert(s, "q", 0, queued), 0);
    ASSERT_EQ(insert(s, "r", 0, running), 0);
    ASSERT_EQ(store_cancel(s, queued, NULL, err, sizeof err), 0); /* finished: cancelled */
    ASSERT_EQ(insert(s, "q2", 0, queued), 0);
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
    store_record_clear(&g);
    int64_t deleted;
    /* Age 3600 s: nothing is that old. */
    ASSERT_EQ(store_purge(s, 3600, 0, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 0);
    /* Pretend it is two hours later. */
    int64_t later = (int64_t)time_now_ns() + 7200LL * 1000000000LL;
    ASSERT_EQ(store_purge(s, 3600, later, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 4); /* 3 completed + 1 cancelled */
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(store_get(s, done[i], &g, err, sizeof err), -ENOENT);
        struct store_event ev[4];
        ASSERT_EQ(store_events(s, done[i], 0, ev, 4, err, sizeof err), -ENOENT);
    }
    ASSERT_EQ(count_status(s, -1), 2); /* the queued and the running one stay */
    ASSERT_EQ(store_check(s, err, sizeof err), 0); /* no orphan events */
    ASSERT_EQ(store_purge(s, -1, 0, &deleted, err, sizeof err), -EINVAL);
    store_close(s);
}

TEST(purge_in_batches_deletes_everything_due)
{
    store_t *s = db_open("purgebig");
    ASSERT(s);
    char id[STORE_ID_LEN];
    for (int i = 0; i < 1001; i++)
        ASSERT_EQ(insert(s, "x", 0, id), 0);
    /* cancel all of them, found through the list */
    char cursor[STORE_CURSOR_LEN] = "";
    do {
        struct store_list_query q = {.status = EVAL_QUEUED, .limit = 500, .cursor = cursor};
        struct eval_record *items;
        size_t n;
        ASSERT_EQ(store_list(s, &q, &items, &n, cursor, err, sizeof err), 0);
        for (size_t k = 0; k < n; k++)
            ASSERT_EQ(store_cancel(s, items[k].id, NULL, err, sizeof err), 0);
        store_records_free(items, n);
    } while (cursor[0]);
    int64_t deleted;
    ASSERT_EQ(store_purge(s, 0, (int64_t)time_now_ns() + 1000, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 1001); /* batches of 500, 500, 1 */
    ASSERT_EQ(count_status(s, -1), 0);
    store_close(s);
}

TEST(callback_deliveries_are_appended_and_bounded)
{
    store_t *s = db_open("cb");
    ASSERT(s);
    char id[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "x", 0, id), 0);
    struct store_callback_delivery d = {.attempt = 1, .ts_ns = (int64_t)time_now_ns(),
                                        .http_status = 0, .duration_ms = 3, .ok = false,
                                        .error = "connect: refused \"x\"\n\xff"};
    ASSERT_EQ(store_callback_record(s, id, &d, err, sizeof err), 0);
    d.attempt = 2;
    d.http_status = 204;
    d.ok = true;
    d.error = NULL;
    ASSERT_EQ(store_callback_record(s, id, &d, err, sizeof err), 0);
    struct eval_record g;
    ASSERT_EQ(store_get(s, id, &g, err, sizeof err), 0);
    json_error_t je;
    json_t *j = json_loads(g.callbacks_json, 0, &je);
    ASSERT_MSG(j, "callbacks not JSON: %s", g.callbacks_json);
    ASSERT_EQ(json_array_size(j), 2);
    ASSERT(json_is_null(json_object_get(json_array_get(j, 0), "http_status")));
    ASSERT_CONTAINS(json_string_value(json_object_get(json_array_get(j, 0), "error")), "refused");
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(j, 1), "http_status")), 204);
    ASSERT(json_is_true(json_object_get(json_array_get(j, 1), "ok")));
    json_decref(j);
    store_record_clear(&g);
    for (int i = 3; i <= STORE_CALLBACKS_MAX; i++) {
        d.attempt = i;
        ASSERT_EQ(store_callback_record(s, id, &d, err, sizeof err), 0);
    }
    d.attempt = STORE_CALLBACKS_MAX + 1;
    ASSERT_EQ(store_callback_record(s, id, &d, err, sizeof err), -E2BIG);
    ASSERT_EQ(store_callback_record(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &d, err, sizeof err),
              -ENOENT);
    d.attempt = 0;
    ASSERT_EQ(store_callback_record(s, id, &d, err, sizeof err), -EINVAL);
    store_close(s);
}

/* ---- the webhook outbox --------------------------------------------------------------- */

/* Insert with a callback_url (or none), claim, finish with status. */
static int finished_with_cb(store_t *s, const char *cb_url, enum eval_status status,
                            char id[STORE_ID_LEN])
{
    struct eval_record r = rec("x", 0);
    r.callback_url = (char *)cb_url;
    TRY(store_insert(s, &r, id, NULL, NULL, err, sizeof err));
    struct eval_record c;
    TRY(store_claim(s, "w1", 60000, &c, err, sizeof err));
    int attempt = c.attempts;
    bool same = !strcmp(c.id, id);
    store_record_clear(&c);
    if (!same)
        return -EIO;
    struct store_outcome o = {.status = status, .error_reason = "sandbox_failed"};
    return store_finish(s, id, "w1", attempt, &o, err, sizeof err);
}

static int cb_state_of(store_t *s, const char *id, int *attempts, int64_t *next_ns)
{
    struct eval_record g;
    if (store_get(s, id, &g, err, sizeof err) < 0)
        return -1;
    int st = g.callback_state;
    if (attempts)
        *attempts = g.callback_attempts;
    if (next_ns)
        *next_ns = g.callback_next_ns;
    store_record_clear(&g);
    return st;
}

TEST(every_terminal_path_makes_a_webhook_pending)
{
    store_t *s = db_open("cbarm");
    ASSERT(s);
    const char *url = "http://127.0.0.1:9/hook";
    char a[STORE_ID_LEN], b[STORE_ID_LEN], c[STORE_ID_LEN], d[STORE_ID_LEN], e[STORE_ID_LEN];
    char f[STORE_ID_LEN];
    int64_t t0 = (int64_t)time_now_ns();
    /* finish */
    ASSERT_EQ(finished_with_cb(s, url, EVAL_COMPLETED, a), 0);
    ASSERT_EQ(finished_with_cb(s, NULL, EVAL_COMPLETED, b), 0);
    int64_t next;
    int n;
    ASSERT_EQ(cb_state_of(s, a, &n, &next), STORE_CALLBACK_PENDING);
    ASSERT_EQ(n, 0);
    ASSERT(next >= t0 && next <= (int64_t)time_now_ns());
    ASSERT_EQ(cb_state_of(s, b, NULL, NULL), STORE_CALLBACK_NONE);
    /* cancel of a queued evaluation */
    struct eval_record r = rec("x", 0);
    r.callback_url = (char *)url;
    ASSERT_EQ(store_insert(s, &r, c, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(cb_state_of(s, c, NULL, NULL), STORE_CALLBACK_NONE); /* not before the end */
    enum eval_status st;
    ASSERT_EQ(store_cancel(s, c, &st, err, sizeof err), 0);
    ASSERT_EQ(st, EVAL_CANCELLED);
    ASSERT_EQ(cb_state_of(s, c, NULL, NULL), STORE_CALLBACK_PENDING);
    /* a requeue that ends it: worker_lost (max_attempts 1), and cancelled */
    r.max_attempts = 1;
    ASSERT_EQ(store_insert(s, &r, d, NULL, NULL, err, sizeof err), 0);
    struct eval_record cl;
    ASSERT_EQ(store_claim(s, "w9", 60000, &cl, err, sizeof err), 0);
    ASSERT_STREQ(cl.id, d);
    store_record_clear(&cl);
    r.max_attempts = 0;
    ASSERT_EQ(store_insert(s, &r, e, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(store_claim(s, "w9", 60000, &cl, err, sizeof err), 0);
    ASSERT_STREQ(cl.id, e);
    store_record_clear(&cl);
    ASSERT_EQ(store_cancel(s, e, &st, err, sizeof err), 0);
    ASSERT_EQ(st, EVAL_RUNNING);
    ASSERT_EQ(cb_state_of(s, e, NULL, NULL), STORE_CALLBACK_NONE);
    /* and a requeued one (attempts left) owes nothing yet */
    ASSERT_EQ(store_insert(s, &r, f, NULL, NULL, err, sizeof err), 0);
    ASSERT_EQ(store_claim(s, "w9", 60000, &cl, err, sizeof err), 0);
    ASSERT_STREQ(cl.id, f);
    store_record_clear(&cl);
    struct store_requeue_counts rc;
    ASSERT_EQ(store_requeue_worker(s, "w9", &rc, err, sizeof err), 3);
    ASSERT_EQ(rc.lost, 1);
    ASSERT_EQ(rc.cancelled, 1);
    ASSERT_EQ(rc.requeued, 1);
    ASSERT_EQ(cb_state_of(s, d, NULL, NULL), STORE_CALLBACK_PENDING);
    ASSERT_EQ(cb_state_of(s, e, NULL, NULL), STORE_CALLBACK_PENDING);
    ASSERT_EQ(cb_state_of(s, f, NULL, NULL), STORE_CALLBACK_NONE);
    struct store_callback_stats cs;
    ASSERT_EQ(store_callback_stats(s, &cs, err, sizeof err), 0);
    ASSERT_EQ(cs.pending, 4);
    ASSERT(cs.next_due_ns >= t0 && cs.next_due_ns <= (int64_t)time_now_ns());
    store_close(s);
}

TEST(webhook_claims_are_leased_settled_once_and_released)
{
    store_t *s = db_open("cbclaim");
    ASSERT(s);
    char a[STORE_ID_LEN], b[STORE_ID_LEN];
    ASSERT_EQ(finished_with_cb(s, "http://127.0.0.1:9/a", EVAL_COMPLETED, a), 0);
    ASSERT_EQ(finished_with_cb(s, "http://127.0.0.1:9/b", EVAL_ERROR, b), 0);
    struct eval_record g, h, x;
    /* due first is claimed first; a claimed one is not claimed again */
    ASSERT_EQ(store_callback_claim(s, "node-a", 60000, &g, err, sizeof err), 0);
    ASSERT_STREQ(g.id, a);
    ASSERT_EQ(g.callback_attempts, 0);
    ASSERT_STREQ(g.callback_url, "http://127.0.0.1:9/a");
    ASSERT_EQ(store_callback_claim(s, "node-b", 60000, &h, err, sizeof err), 0);
    ASSERT_STREQ(h.id, b);
    ASSERT_EQ(store_callback_claim(s, "node-b", 60000, &x, err, sizeof err), -EAGAIN);
    struct store_callback_stats cs;
    ASSERT_EQ(store_callback_stats(s, &cs, err, sizeof err), 0);
    ASSERT_EQ(cs.pending, 2);
    ASSERT(cs.next_due_ns > (int64_t)time_now_ns() + 50000000000ll); /* the leases */

    /* attempt 1 of a failed: pending again, due later; only its owner settles */
    struct store_callback_delivery d = {.attempt = 1, .ts_ns = (int64_t)time_now_ns(),
                                        .http_status = 500, .duration_ms = 4, .error = "HTTP 500"};
    int64_t due = (int64_t)time_now_ns() + 3600ll * 1000000000ll;
    ASSERT_EQ(store_callback_settle(s, a, "node-b", &d, STORE_CALLBACK_PENDING, due, err,
                                    sizeof err),
              -ESTALE);
    ASSERT_EQ(store_callback_settle(s, a, "node-a", &d, STORE_CALLBACK_PENDING, due, err,
                                    sizeof err),
              0);
    ASSERT_EQ(store_callback_settle(s, a, "node-a", &d, STORE_CALLBACK_PENDING, due, err,
                                    sizeof err),
              -ESTALE); /* settled already: the claim is gone */
    int n;
    int64_t next;
    ASSERT_EQ(cb_state_of(s, a, &n, &next), STORE_CALLBACK_PENDING);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(next, due);
    ASSERT_EQ(store_callback_claim(s, "node-a", 60000, &x, err, sizeof err), -EAGAIN);
    ASSERT_EQ(store_get(s, a, &x, err, sizeof err), 0);
    ASSERT_CONTAINS(x.callbacks_json, "HTTP 500");
    store_record_clear(&x);

    /* node-b "crashed" holding b: its restart releases the lease, the attempt
     * is due again at once; the attempt number is the same */
    ASSERT_EQ(store_callback_release(s, "node-b", err, sizeof err), 1);
    ASSERT_EQ(store_callback_release(s, "node-b", err, sizeof err), 0);
    ASSERT_EQ(store_callback_claim(s, "node-c", 60000, &x, err, sizeof err), 0);
    ASSERT_STREQ(x.id, b);
    ASSERT_EQ(x.callback_attempts, 0);
    store_record_clear(&x);
    d.http_status = 200;
    d.ok = true;
    d.error = NULL;
    ASSERT_EQ(store_callback_settle(s, b, "node-b", &d, STORE_CALLBACK_DELIVERED, 0, err,
                                    sizeof err),
              -ESTALE); /* the old claim lost it */
    ASSERT_EQ(store_callback_settle(s, b, "node-c", &d, STORE_CALLBACK_DELIVERED, 0, err,
                                    sizeof err),
              0);
    ASSERT_EQ(cb_state_of(s, b, &n, &next), STORE_CALLBACK_DELIVERED);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(next, 0);

    /* an expired lease is claimable by anyone */
    ASSERT_EQ(backend_exec("cbclaim", "UPDATE evaluations SET callback_next_ns = 1"), 0);
    ASSERT_EQ(store_callback_claim(s, "node-c", 1, &x, err, sizeof err), 0);
    ASSERT_STREQ(x.id, a);
    ASSERT_EQ(x.callback_attempts, 1);
    store_record_clear(&x);
    usleep(5000);
    ASSERT_EQ(store_callback_claim(s, "node-d", 60000, &x, err, sizeof err), 0);
    ASSERT_STREQ(x.id, a);
    store_record_clear(&x);
    d.attempt = 2;
    d.ok = false;
    d.http_status = 0;
    d.error = "connect refused";
    ASSERT_EQ(store_callback_settle(s, a, "node-d", &d, STORE_CALLBACK_FAILED, 0, err,
                                    sizeof err),
              0);
    ASSERT_EQ(cb_state_of(s, a, &n, NULL), STORE_CALLBACK_FAILED);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(store_callback_stats(s, &cs, err, sizeof err), 0);
    ASSERT_EQ(cs.pending, 0);
    ASSERT_EQ(cs.next_due_ns, 0);
    ASSERT_EQ(store_callback_claim(s, "node-a", 60000, &x, err, sizeof err), -EAGAIN);

    /* bad arguments */
    ASSERT_EQ(store_callback_settle(s, a, "node-d", &d, STORE_CALLBACK_PENDING, 0, err,
                                    sizeof err),
              -EINVAL);
    ASSERT_EQ(store_callback_settle(s, a, "node-d", &d, STORE_CALLBACK_NONE, 0, err, sizeof err),
              -EINVAL);
    ASSERT_EQ(store_callback_settle(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "node-d", &d,
                                    STORE_CALLBACK_FAILED, 0, err, sizeof err),
              -ENOENT);
    ASSERT_EQ(store_callback_claim(s, "", 60000, &x, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_callback_claim(s, "node-a", 0, &x, err, sizeof err), -EINVAL);
    store_record_clear(&g);
    store_record_clear(&h);
    store_close(s);
}

TEST(purge_keeps_evaluations_whose_webhook_is_pending)
{
    store_t *s = db_open("cbpurge");
    ASSERT(s);
    char a[STORE_ID_LEN], b[STORE_ID_LEN];
    ASSERT_EQ(finished_with_cb(s, "http://127.0.0.1:9/a", EVAL_COMPLETED, a), 0);
    ASSERT_EQ(finished_with_cb(s, NULL, EVAL_COMPLETED, b), 0);
    int64_t deleted = 0;
    ASSERT_EQ(store_purge(s, 0, (int64_t)time_now_ns() + 1000, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 1);
    ASSERT_EQ(cb_state_of(s, a, NULL, NULL), STORE_CALLBACK_PENDING);
    struct eval_record x;
    ASSERT_EQ(store_callback_claim(s, "n", 60000, &x, err, sizeof err), 0);
    store_record_clear(&x);
    struct store_callback_delivery d = {.attempt = 1, .ts_ns = 1, .http_status = 200, .ok = true};
    ASSERT_EQ(store_callback_settle(s, a, "n", &d, STORE_CALLBACK_DELIVERED, 0, err, sizeof err),
              0);
    ASSERT_EQ(store_purge(s, 0, (int64_t)time_now_ns() + 1000, &deleted, err, sizeof err), 0);
    ASSERT_EQ(deleted, 1); /* settled: now it goes */
    ASSERT_EQ(count_status(s, -1), 0);
    store_close(s);
}

/* Senders on four handles (four nodes) drain the outbox together: every
 * delivery is claimed exactly once while its lease holds. */
struct cb_drainer {
    const char *url;
    char owner[32];
    int claimed;
    char ids[64][STORE_ID_LEN];
    int rc;
};

static void *cb_drain(void *arg)
{
    struct cb_drainer *d = arg;
    store_t *s = NULL;
    char e[ERR_LEN];
    if ((d->rc = store_open(d->url, NULL, &s, e, sizeof e)) < 0)
        return NULL;
    for (;;) {
        struct eval_record r;
        int rc = store_callback_claim(s, d->owner, 60000, &r, e, sizeof e);
        if (rc == -EAGAIN)
            break;
        if (rc < 0 || d->claimed >= 64) {
            d->rc = rc < 0 ? rc : -E2BIG;
            break;
        }
        snprintf(d->ids[d->claimed++], STORE_ID_LEN, "%s", r.id);
        struct store_callback_delivery dl = {.attempt = r.callback_attempts + 1, .ts_ns = 1,
                                             .http_status = 200, .ok = true};
        rc = store_callback_settle(s, r.id, d->owner, &dl, STORE_CALLBACK_DELIVERED, 0, e,
                                   sizeof e);
        store_record_clear(&r);
        if (rc < 0) {
            d->rc = rc;
            break;
        }
    }
    store_close(s);
    return NULL;
}

TEST(concurrent_senders_claim_each_delivery_once)
{
    store_t *s = db_open("cbconc");
    ASSERT(s);
    enum { N = 40, T = 4 };
    char ids[N][STORE_ID_LEN];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(finished_with_cb(s, "http://127.0.0.1:9/", EVAL_COMPLETED, ids[i]), 0);
    static struct cb_drainer d[T];
    pthread_t th[T];
    static char url[512];
    snprintf(url, sizeof url, "%s", db_url("cbconc"));
    for (int t = 0; t < T; t++) {
        memset(&d[t], 0, sizeof d[t]);
        d[t].url = url;
        snprintf(d[t].owner, sizeof d[t].owner, "node-%d", t);
        ASSERT_EQ(pthread_create(&th[t], NULL, cb_drain, &d[t]), 0);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    int total = 0;
    for (int t = 0; t < T; t++) {
        ASSERT_MSG(d[t].rc == 0, "drainer %d: %d", t, d[t].rc);
        total += d[t].claimed;
    }
    ASSERT_EQ(total, N);
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < d[t].claimed; k++)
                seen += !strcmp(d[t].ids[k], ids[i]);
        ASSERT_MSG(seen == 1, "%s claimed %d times", ids[i], seen);
        int n;
        ASSERT_EQ(cb_state_of(s, ids[i], &n, NULL), STORE_CALLBACK_DELIVERED);
        ASSERT_EQ(n, 1);
    }
    store_close(s);
}

/* A database migrated to version 1 by an older clearbox, with finished rows:
 * version 2 settles them from their recorded attempts and resumes nothing. */
TEST(migration_2_settles_rows_finished_before_it)
{
    struct store_options o = {.flags = STORE_OPEN_NO_CHECK};
    store_t *s;
    ASSERT_EQ(store_open(db_url("up"), &o, &s, err, sizeof err), 0);
    store_close(s);
    size_t nm;
    const struct store_migration *m = store_migrations(&nm);
    ASSERT(nm >= 2);
    bool pg = !strcmp(BACKEND_NAME, "postgres");
    ASSERT_EQ(backend_exec("up", pg ? m[0].postgres_sql : m[0].sqlite_sql), 0);
    ASSERT_EQ(backend_exec("up", "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                                 "name TEXT NOT NULL, applied_ns BIGINT NOT NULL);"
                                 "INSERT INTO schema_migrations VALUES (1, 'create_evaluations', 1)"),
              0);
    const char *ins =
        pg ? "INSERT INTO evaluations (id, status, language, code, callback_url, created_ns, "
             "queued_ns, finished_ns, callbacks, event_seq) VALUES "
             "('01ARZ3NDEKTSV4RRFFQ69G5FA1', 'completed', 'sh', 'x', 'http://h/', 1, 1, 2, "
             "'[{\"attempt\":1,\"ok\":false},{\"attempt\":2,\"ok\":true}]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA2', 'error', 'sh', 'x', 'http://h/', 1, 1, 2, "
             "'[{\"attempt\":1,\"ok\":false}]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA3', 'completed', 'sh', 'x', NULL, 1, 1, 2, '[]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA4', 'queued', 'sh', 'x', 'http://h/', 1, 1, NULL, "
             "'[]', 1)"
           : "INSERT INTO evaluations (id, status, language, code, callback_url, created_ns, "
             "queued_ns, finished_ns, callbacks, event_seq) VALUES "
             "('01ARZ3NDEKTSV4RRFFQ69G5FA1', 'completed', 'sh', 'x', 'http://h/', 1, 1, 2, "
             "'[{\"attempt\":1,\"ok\":false},{\"attempt\":2,\"ok\":true}]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA2', 'error', 'sh', 'x', 'http://h/', 1, 1, 2, "
             "'[{\"attempt\":1,\"ok\":false}]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA3', 'completed', 'sh', 'x', NULL, 1, 1, 2, '[]', 1),"
             "('01ARZ3NDEKTSV4RRFFQ69G5FA4', 'queued', 'sh', 'x', 'http://h/', 1, 1, NULL, "
             "'[]', 1)";
    ASSERT_EQ(backend_exec("up", ins), 0);
    ASSERT_EQ(store_open(db_url("up"), NULL, &s, err, sizeof err), -EPROTO); /* not current */
    s = db_open("up");
    ASSERT(s);
    int n;
    ASSERT_EQ(cb_state_of(s, "01ARZ3NDEKTSV4RRFFQ69G5FA1", &n, NULL), STORE_CALLBACK_DELIVERED);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(cb_state_of(s, "01ARZ3NDEKTSV4RRFFQ69G5FA2", &n, NULL), STORE_CALLBACK_FAILED);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(cb_state_of(s, "01ARZ3NDEKTSV4RRFFQ69G5FA3", NULL, NULL), STORE_CALLBACK_NONE);
    ASSERT_EQ(cb_state_of(s, "01ARZ3NDEKTSV4RRFFQ69G5FA4", NULL, NULL), STORE_CALLBACK_NONE);
    struct eval_record x;
    ASSERT_EQ(store_callback_claim(s, "n", 60000, &x, err, sizeof err), -EAGAIN);
    store_close(s);
}

TEST(events_resume_after_last_event_id)
{
    store_t *s = db_open("ev");
    ASSERT(s);
    char id[STORE_ID_LEN];
    ASSERT_EQ(insert(s, "x", 0, id), 0);
    struct store_event ev[8];
    ASSERT_EQ(store_events(s, id, 0, ev, 8, err, sizeof err), 1);
    ASSERT_EQ(ev[0].status, EVAL_QUEUED);
    ASSERT_EQ(store_events(s, id, 1, ev, 8, err, sizeof err), 0); /* nothing new */
    struct eval_record g;
    ASSERT_EQ(store_claim(s, "w", 60000, &g, err, sizeof err), 0);
    store_record_clear(&g);
    struct store_outcome o = {.status = EVAL_OUTPUT_LIMIT};
    ASSERT_EQ(store_finish(s, id, "w", 1, &o, err, sizeof err), 0);
    ASSERT_EQ(store_events(s, id, 1, ev, 8, err, sizeof err), 2);
    ASSERT_EQ(ev[0].seq, 2);
    ASSERT_EQ(ev[0].status, EVAL_RUNNING);
    ASSERT_EQ(ev[1].seq, 3);
    ASSERT_EQ(ev[1].status, EVAL_OUTPUT_LIMIT);
    ASSERT_EQ(store_events(s, id, 0, ev, 2, err, sizeof err), 2); /* cap respected */
    ASSERT_EQ(store_events(s, id, -1, ev, 8, err, sizeof err), -EINVAL);
    ASSERT_EQ(store_events(s, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 0, ev, 8, err, sizeof err), -ENOENT);
    store_close(s);
}

/* ---- concurrency and crashes ------------------------------------------------------- */

struct claimer {
    const char *url;
    const char *worker;
    int out_fd;
    int claimed;
    int errors;
};

/* Claim until the queue is empty; write each claimed id + '\n' to out_fd. */
static void *claim_loop(void *arg)
{
    struct claimer *c = arg;
    char e[ERR_LEN];
    store_t *s;
    if (store_open(c->url, NULL, &s, e, sizeof e) < 0) {
        c->errors++;
        return NULL;
    }
    for (;;) {
        struct eval_record g;
        int rc = store_claim(s, c->worker, 60000, &g, e, sizeof e);
        if (rc == -EAGAIN)
            break;
        if (rc < 0) {
            fprintf(stderr, "    claim: %s\n", e);
            c->errors++;
            break;
        }
        char line[64];
        int n = snprintf(line, sizeof line, "%s %d\n", g.id, g.attempts);
        if (write(c->out_fd, line, (size_t)n) != n)
            c->errors++;
        struct store_outcome o = {.status = EVAL_COMPLETED};
        if (store_finish(s, g.id, c->worker, g.attempts, &o, e, sizeof e) < 0)
            c->errors++;
        store_record_clear(&g);
        c->claimed++;
    }
    store_close(s);
    return NULL;
}

static char *slurp_fd(int fd, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    ssize_t k;
    while ((k = read(fd, b + n, cap - n - 1)) > 0) {
        n += (size_t)k;
        if (cap - n < 1024)
            b = realloc(b, cap *= 2);
    }
    b[n] = '\0';
    *len = n;
    return b;
}

TEST(two_processes_claim_each_evaluation_exactly_once)
{
    enum { N = 500 };
    store_t *s = db_open("mp");
    ASSERT(s);
    static char ids[N][STORE_ID_LEN];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(insert(s, "x", i % 3, ids[i]), 0);
    const char *url = db_url("mp");
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        pids[k] = fork();
        ASSERT(pids[k] >= 0);
        if (pids[k] == 0) {
            close(p[0]);
            /* Two threads per process, each with its own handle. */
            struct claimer c[2] = {{url, k ? "proc-b-1" : "proc-a-1", p[1], 0, 0},
                                   {url, k ? "proc-b-2" : "proc-a-2", p[1], 0, 0}};
            pthread_t t[2];
            for (int i = 0; i < 2; i++)
                pthread_create(&t[i], NULL, claim_loop, &c[i]);
            for (int i = 0; i < 2; i++)
                pthread_join(t[i], NULL);
            _exit(c[0].errors + c[1].errors ? 1 : 0);
        }
    }
    close(p[1]);
    size_t len;
    char *out = slurp_fd(p[0], &len);
    close(p[0]);
    for (int k = 0; k < 2; k++) {
        int st;
        ASSERT_EQ(waitpid(pids[k], &st, 0), pids[k]);
        ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "claimer %d failed (status %d)", k, st);
    }
    /* Every id exactly once, each as attempt 1. */
    static char got[N + 10][STORE_ID_LEN];
    int n = 0;
    for (char *q = out; *q;) {
        char *nl = strchr(q, '\n');
        ASSERT(nl);
        *nl = '\0';
        ASSERT(n < N + 10);
        int attempt = 0;
        ASSERT_EQ(sscanf(q, "%26s %d", got[n], &attempt), 2);
        ASSERT_EQ(attempt, 1);
        n++;
        q = nl + 1;
    }
    free(out);
    ASSERT_EQ(n, N);
    qsort(got, (size_t)n, STORE_ID_LEN, (int (*)(const void *, const void *))strcmp);
    qsort(ids, N, STORE_ID_LEN, (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < N; i++)
        ASSERT_MSG(!strcmp(got[i], ids[i]), "claimed set differs at %d: %s vs %s", i, got[i],
                   ids[i]);
    ASSERT_EQ(count_status(s, EVAL_COMPLETED), N);
    struct eval_record g;
    for (int i = 0; i < N; i += 50) {
        ASSERT_EQ(store_get(s, ids[i], &g, err, sizeof err), 0);
        ASSERT_EQ(g.attempts, 1);
        ASSERT_EQ(g.event_seq, 3);
        store_record_clear(&g);
    }
    store_close(s);
}

struct sharer {
    store_t *s;
    int ok;
};

static void *share_insert(void *arg)
{
    struct sharer *sh = arg;
    char e[ERR_LEN], id[STORE_ID_LEN];
    for (int i = 0; i < 100; i++) {
        struct eval_record r = rec("shared", i % 10);
        if (store_insert(sh->s, &r, id, NULL, NULL, e, sizeof e) == 0)
            sh->ok++;
    }
    return NULL;
}

TEST(one_handle_shared_by_threads_serializes_safely)
{
    store_t *s = db_open("share");
    ASSERT(s);
    struct sharer sh[4] = {{s, 0}, {s, 0}, {s, 0}, {s, 0}};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, share_insert, &sh[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(sh[i].ok, 100);
    ASSERT_EQ(count_status(s, EVAL_QUEUED), 400);
    store_close(s);
}

/* A child inserts (and claims/finishes every third) in a loop, reporting each
 * id after store_insert returned; the parent kills it with SIGKILL at a random
 * moment. Every reported id must be there, and the database must check. */
TEST(kill_9_mid_transaction_loses_no_committed_insert)
{
    store_t *s0 = db_open("crash");
    ASSERT(s0);
    store_close(s0);
    const char *url = db_url("crash");
    static char reported[20000][STORE_ID_LEN];
    int nrep = 0;
    for (int round = 0; round < 4; round++) {
        int p[2];
        ASSERT_EQ(pipe(p), 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            char e[ERR_LEN], id[STORE_ID_LEN];
            store_t *s;
            if (store_open(url, NULL, &s, e, sizeof e) < 0)
                _exit(3);
            for (int i = 0;; i++) {
                struct eval_record r = rec("print('crash test')", i % 10);
                if (store_insert(s, &r, id, NULL, NULL, e, sizeof e) < 0)
                    _exit(4);
                char line[STORE_ID_LEN + 1];
                memcpy(line, id, 26);
                line[26] = '\n';
                if (write(p[1], line, 27) != 27)
                    _exit(5);
                if (i % 3 == 0) {
                    struct eval_record g;
                    if (store_claim(s, "crasher", 60000, &g, e, sizeof e) == 0) {
                        struct store_outcome o = {.status = EVAL_COMPLETED, .result_json = "{}"};
                        store_finish(s, g.id, "crasher", g.attempts, &o, e, sizeof e);
                        store_record_clear(&g);
                    }
                }
            }
        }
        close(p[1]);
        struct timespec ts = {0, (long)(50 + rand() % 250) * 1000000L};
        nanosleep(&ts, NULL);
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        int st;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child exited early: %d", st);
        size_t len;
        char *out = slurp_fd(p[0], &len);
        close(p[0]);
        for (size_t off = 0; off + 27 <= len && nrep < 20000; off += 27) {
            memcpy(reported[nrep], out + off, 26);
            reported[nrep][26] = '\0';
            nrep++;
        }
        free(out);
    }
    ASSERT_MSG(nrep > 20, "only %d inserts reported in 4 rounds", nrep);
    store_t *s;
    ASSERT_EQ(store_open(url, NULL, &s, err, sizeof err), 0);
    ASSERT_EQ(store_check(s, err, sizeof err), 0);
    struct eval_record g;
    for (int i = 0; i < nrep; i++) {
        ASSERT_MSG(store_get(s, reported[i], &g, err, sizeof err) == 0, "lost %s: %s",
                   reported[i], err);
        /* Every row is in one consistent state with its events. */
        ASSERT(g.status == EVAL_QUEUED || g.status == EVAL_RUNNING ||
               g.status == EVAL_COMPLETED);
        struct store_event ev[8];
        int ne = store_events(s, g.id, 0, ev, 8, err, sizeof err);
        ASSERT_EQ(ne, g.event_seq);
        ASSERT_EQ(ev[ne - 1].status, g.status);
        store_record_clear(&g);
    }
    /* A crashed worker's running rows come back with requeue_worker. */
    struct store_requeue_counts c;
    ASSERT(store_requeue_worker(s, "crasher", &c, err, sizeof err) >= 0);
    ASSERT_EQ(count_status(s, EVAL_RUNNING), 0);
    fprintf(stderr, "    %d committed inserts over 4 kills, all present\n", nrep);
    store_close(s);
}

/* Two processes retry the same submit at the same time: one evaluation. */
TEST(concurrent_retries_with_one_idempotency_key_make_one_evaluation)
{
    store_t *s = db_open("idemrace");
    ASSERT(s);
    const char *url = db_url("idemrace");
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        pids[k] = fork();
        ASSERT(pids[k] >= 0);
        if (pids[k] == 0) {
            close(p[0]);
            char e[ERR_LEN], id[STORE_ID_LEN];
            store_t *c;
            if (store_open(url, NULL, &c, e, sizeof e) < 0)
                _exit(3);
            for (int i = 0; i < 40; i++) {
                struct eval_record r = rec("x", 0);
                r.submitter = (char *)"alice";
                char key[32];
                snprintf(key, sizeof key, "retry-%d", i);
                r.idempotency_key = key;
                if (store_insert(c, &r, id, NULL, NULL, e, sizeof e) < 0)
                    _exit(4);
                char line[64];
                int n = snprintf(line, sizeof line, "%d %s\n", i, id);
                if (write(p[1], line, (size_t)n) != n)
                    _exit(5);
            }
            _exit(0);
        }
    }
    close(p[1]);
    size_t len;
    char *out = slurp_fd(p[0], &len);
    close(p[0]);
    for (int k = 0; k < 2; k++) {
        int st;
        ASSERT_EQ(waitpid(pids[k], &st, 0), pids[k]);
        ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "inserter %d status %d", k, st);
    }
    static char first[40][STORE_ID_LEN];
    int lines = 0;
    for (char *q = out; *q; lines++) {
        char *nl = strchr(q, '\n');
        ASSERT(nl);
        *nl = '\0';
        int i;
        char id[STORE_ID_LEN];
        ASSERT_EQ(sscanf(q, "%d %26s", &i, id), 2);
        ASSERT(i >= 0 && i < 40);
        if (!first[i][0])
            memcpy(first[i], id, STORE_ID_LEN);
        ASSERT_MSG(!strcmp(first[i], id), "key retry-%d gave %s and %s", i, first[i], id);
        q = nl + 1;
    }
    free(out);
    ASSERT_EQ(lines, 80);
    ASSERT_EQ(count_status(s, -1), 40);
    store_close(s);
}

#endif
