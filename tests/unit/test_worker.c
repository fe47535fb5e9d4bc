/* test_worker.c - the worker pool against a real SQLite file and real
 * sandbox runs (root): every accepted evaluation reaches exactly one terminal
 * status; cancel of queued and running ones; lease loss; max attempts;
 * kill -9 of a process running a pool, then a restart; graceful stop;
 * retention; audit + security log lines; webhooks to a loopback receiver. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_support.h"
#include "service/callback.h"
#include "service/store.h"
#include "service/worker.h"
#include "telemetry/audit.h"
#include "telemetry/log.h"
#include "telemetry/telemetry.h"
#include "test.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define CGPARENT "clearbox-test-worker"
#define LONG_LIMITS "{\"wall_timeout_ms\":60000}"
#define SLEEP_CODE "import time\ntime.sleep(30)\n"

struct env {
    char db[512], state[512], audit[512], logs[512];
    store_t *s;
    metrics_registry_t *reg;
    struct telemetry_std m;
};

static bool root_or_skip(void)
{
    if (geteuid() != 0) {
        test_skip("needs root (the sandbox: namespaces, cgroups)");
        return false;
    }
    return true;
}

static int env_init(struct env *e)
{
    memset(e, 0, sizeof *e);
    snprintf(e->db, sizeof e->db, "sqlite:%s/w.db", test_tmpdir());
    snprintf(e->state, sizeof e->state, "%s/state", test_tmpdir());
    chmod(test_tmpdir(), 0711); /* the sandbox's user namespace traverses to state/ */
    snprintf(e->audit, sizeof e->audit, "%s/audit.log", test_tmpdir());
    snprintf(e->logs, sizeof e->logs, "%s/log.jsonl", test_tmpdir());
    struct store_options so = {.flags = STORE_OPEN_MIGRATE};
    char err[ERR_LEN];
    if (store_open(e->db, &so, &e->s, err, sizeof err) < 0) {
        fprintf(stderr, "    store_open: %s\n", err);
        return -1;
    }
    e->reg = metrics_registry_new();
    if (!e->reg || telemetry_metrics_register(e->reg, 0, &e->m, err, sizeof err) < 0)
        return -1;
    /* the test's log lines go to a file the test can read */
    int fd = open(e->logs, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    log_set_format(LOG_FORMAT_JSON);
    if (!getenv("WDEBUG"))
        log_set_fd(fd);
    return 0;
}

static void opts_init(struct env *e, struct worker_options *o, const char *node, int workers)
{
    memset(o, 0, sizeof *o);
    o->db_url = e->db;
    o->workers = workers;
    o->node_id = node;
    o->state_dir = e->state;
    o->cgroup_parent = CGPARENT;
    o->audit_path = e->audit;
    o->maintenance_ms = 100;
    o->poll_ms = 200;
    o->metrics = &e->m;
}

struct ins {
    const char *code, *language, *limits, *args, *files, *stdin_data, *callback_url, *metadata,
        *traceparent;
    int priority, max_attempts;
};

static int insert(struct env *e, const struct ins *in, char id[STORE_ID_LEN])
{
    struct eval_record r = {0};
    r.language = (char *)(in->language ? in->language : "python");
    r.code = (char *)in->code;
    r.code_len = strlen(in->code);
    r.limits_json = (char *)in->limits;
    r.args_json = (char *)in->args;
    r.files_json = (char *)in->files;
    r.stdin_data = (char *)in->stdin_data;
    r.stdin_len = in->stdin_data ? strlen(in->stdin_data) : 0;
    r.callback_url = (char *)in->callback_url;
    r.metadata_json = (char *)in->metadata;
    r.traceparent = (char *)in->traceparent;
    r.priority = in->priority;
    r.max_attempts = in->max_attempts;
    if (in->metadata && strstr(in->metadata, "team-a"))
        r.submitter = "team-a";
    bool existed;
    char err[ERR_LEN];
    int rc = store_insert(e->s, &r, id, &existed, NULL, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "    insert: %s\n", err);
    return rc;
}

static int insert_code(struct env *e, const char *code, const char *limits, char id[STORE_ID_LEN])
{
    struct ins in = {.code = code, .limits = limits};
    return insert(e, &in, id);
}

/* Poll until id has a status in the mask (bit per enum eval_status). */
static int wait_status(struct env *e, const char *id, unsigned mask, int timeout_ms,
                       struct eval_record *out)
{
    uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    char err[ERR_LEN];
    for (;;) {
        struct eval_record r;
        int rc = store_get(e->s, id, &r, err, sizeof err);
        if (rc < 0)
            return rc;
        if (mask & (1u << r.status)) {
            if (out)
                *out = r;
            else
                store_record_clear(&r);
            return 0;
        }
        store_record_clear(&r);
        if (time_mono_ns() > end)
            return -ETIMEDOUT;
        usleep(20000);
    }
}

#define TERMINAL_MASK                                                                              \
    (((1u << EVAL_STATUS_COUNT) - 1) & ~((1u << EVAL_QUEUED) | (1u << EVAL_RUNNING)))
#define BIT(s) (1u << (s))

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    while (b && (n += fread(b + n, 1, cap - n, f)) == cap) {
        cap *= 2;
        b = realloc(b, cap + 1);
    }
    fclose(f);
    if (b)
        b[n] = '\0';
    return b;
}

/* The status events of id as a string "queued,running,completed". */
static void events_str(struct env *e, const char *id, char *out, size_t outlen)
{
    struct store_event ev[32];
    char err[ERR_LEN];
    int n = store_events(e->s, id, 0, ev, 32, err, sizeof err);
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, o < outlen ? outlen - o : 0, "%s%s", i ? "," : "",
                              store_status_name(ev[i].status));
}

static int terminal_events(struct env *e, const char *id)
{
    struct store_event ev[32];
    char err[ERR_LEN];
    int n = store_events(e->s, id, 0, ev, 32, err, sizeof err), t = 0;
    for (int i = 0; i < n; i++)
        t += store_status_terminal(ev[i].status);
    return t;
}

/* The workspaces of runs killed with their process stay mounted until a gc
 * finds them old enough (10 s); unmount them so the test dir can go. */
static void unmount_leftovers(const struct env *e)
{
    DIR *d = opendir(e->state);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[1024];
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s/ws", e->state, de->d_name);
        if (umount2(p, MNT_DETACH) < 0 && getenv("WDEBUG"))
            fprintf(stderr, "umount %s: %d\n", p, errno);
        snprintf(p, sizeof p, "%s/%s/root", e->state, de->d_name);
        umount2(p, MNT_DETACH);
    }
    closedir(d);
}

/* ---- basic run, trace continuation, metrics, logs ------------------------------ */

TEST(runs_an_evaluation_and_continues_its_trace)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char id[STORE_ID_LEN], err[ERR_LEN];
    struct ins in = {.code = "print(1)",
                     .metadata = "{\"submitter\":\"team-a\"}",
                     .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
    ASSERT_EQ(insert(&e, &in, id), 0);
    struct worker_options o;
    opts_init(&e, &o, "n1", 2);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, id, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "status %s: %s", store_status_name(r.status),
               r.result_json ? r.result_json : r.error_message);
    ASSERT_EQ(r.attempts, 1);
    ASSERT(r.worker_id && !strncmp(r.worker_id, "n1/w", 4));
    ASSERT_CONTAINS(r.result_json, "\"stdout\":\"1\\n\"");
    /* the sandbox ran inside the stored trace */
    ASSERT_CONTAINS(r.result_json, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"");
    store_record_clear(&r);
    char evs[256];
    events_str(&e, id, evs, sizeof evs);
    ASSERT_STREQ(evs, "queued,running,completed");

    ASSERT(worker_pool_healthy(p, err, sizeof err));
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.workers, 2);
    ASSERT_EQ(st.alive, 2);
    ASSERT_EQ(st.claimed, 1);
    ASSERT_EQ(st.finished, 1);
    ASSERT_STREQ(worker_pool_node_id(p), "n1");
    ASSERT_EQ(worker_pool_stop(p, 5), 0);

    /* metrics: queue wait observed, cost attributed to the submitter */
    uint64_t counts[METRICS_BUCKETS_MAX + 1];
    size_t nb = metrics_histogram_read(e.m.queue_wait, counts, METRICS_BUCKETS_MAX + 1, NULL);
    uint64_t total = 0;
    for (size_t i = 0; i < nb; i++)
        total += counts[i];
    ASSERT_EQ(total, 1);
    ASSERT(metrics_counter_value(metrics_counter_labels(e.m.cost_cents, "python", "team-a")) > 0);

    /* the log lines carry the seed's fields */
    char *logs = slurp(e.logs);
    ASSERT(logs);
    char *claimed = strstr(logs, "\"event\":\"evaluation.claimed\"");
    ASSERT_MSG(claimed, "no evaluation.claimed in %.500s", logs);
    if (getenv("WDEBUG")) {
        FILE *df = fopen("/tmp/w_dbg.log", "w");
        fputs(logs, df);
        fclose(df);
    }
    char *eol = strchr(claimed, '\n');
    if (eol)
        *eol = '\0';
    ASSERT_CONTAINS(claimed, id);
    ASSERT_CONTAINS(claimed, "\"worker_id\":\"n1/w");
    ASSERT_CONTAINS(claimed, "\"engine\":\"native\"");
    ASSERT_CONTAINS(claimed, "\"queue_depth\":");
    ASSERT_CONTAINS(claimed, "\"code_length\":8");
    ASSERT_CONTAINS(claimed, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"");
    free(logs);
}

TEST(two_workers_forty_evaluations_each_end_exactly_once)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    enum { N = 40 };
    char ids[N][STORE_ID_LEN], err[ERR_LEN];
    struct worker_options o;
    opts_init(&e, &o, "n2", 2);
    o.poll_ms = 5000; /* wake-ups must come from notify, not polling */
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    uint64_t t0 = time_mono_ns();
    for (int i = 0; i < N; i++) {
        struct ins in = {.code = i % 2 ? "print(1)" : "echo 1",
                         .language = i % 2 ? "python" : "sh",
                         .priority = i % 3};
        ASSERT_EQ(insert(&e, &in, ids[i]), 0);
        worker_pool_notify(p);
    }
    for (int i = 0; i < N; i++) {
        struct eval_record r;
        ASSERT_EQ(wait_status(&e, ids[i], TERMINAL_MASK, 60000, &r), 0);
        ASSERT_MSG(r.status == EVAL_COMPLETED, "%d: %s %s", i, store_status_name(r.status),
                   r.error_message ? r.error_message : "");
        ASSERT_EQ(r.attempts, 1);
        ASSERT_CONTAINS(r.result_json, "\"stdout\":\"1\\n\"");
        store_record_clear(&r);
        ASSERT_EQ(terminal_events(&e, ids[i]), 1);
    }
    double s = (double)(time_mono_ns() - t0) / 1e9;
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.claimed, N);
    ASSERT_EQ(st.finished, N);
    ASSERT_EQ(worker_pool_stop(p, 5), 0);
    fprintf(stderr, "    40 evaluations with 2 workers: %.2f s\n", s);
    /* both workers took part */
    char *logs = slurp(e.logs);
    ASSERT_CONTAINS(logs, "\"worker_id\":\"n2/w0\"");
    ASSERT_CONTAINS(logs, "\"worker_id\":\"n2/w1\"");
    free(logs);
}

TEST(spec_from_record_args_stdin_files_limits)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char id[STORE_ID_LEN], bad1[STORE_ID_LEN], bad2[STORE_ID_LEN], slow[STORE_ID_LEN];
    char err[ERR_LEN];
    /* data.txt holds "hello" */
    struct ins in = {.code = "import sys\nprint(sys.argv[1:], sys.stdin.read(), "
                             "open('data.txt').read())",
                     .args = "[\"a\",\"b c\"]",
                     .stdin_data = "IN",
                     .files = "[{\"path\":\"data.txt\",\"content_base64\":\"aGVsbG8=\"}]"};
    ASSERT_EQ(insert(&e, &in, id), 0);
    struct ins b1 = {.code = "x", .language = "cobol"};
    ASSERT_EQ(insert(&e, &b1, bad1), 0);
    struct ins b2 = {.code = "x", .files = "[{\"path\":\"f\",\"content_base64\":\"!!\"}]"};
    ASSERT_EQ(insert(&e, &b2, bad2), 0);
    ASSERT_EQ(insert_code(&e, "import time\ntime.sleep(5)", "{\"wall_timeout_ms\":300}", slow), 0);
    struct worker_options o;
    opts_init(&e, &o, "n3", 2);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, id, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "%s", r.result_json ? r.result_json : "");
    ASSERT_CONTAINS(r.result_json, "['a', 'b c'] IN hello");
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, bad1, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_STREQ(r.error_reason, "invalid_request");
    ASSERT_CONTAINS(r.error_message, "cobol");
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, bad2, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_CONTAINS(r.error_message, "base64");
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, slow, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_MSG(r.status == EVAL_TIMEOUT, "%s", store_status_name(r.status));
    ASSERT_CONTAINS(r.result_json, "\"wall_timeout_ms\":300");
    store_record_clear(&r);
    worker_pool_stop(p, 5);
}

/* ---- cancel ------------------------------------------------------------------------ */

TEST(cancel_queued_never_runs_and_running_is_killed)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], b[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e, SLEEP_CODE, LONG_LIMITS, a), 0);
    ASSERT_EQ(insert_code(&e, "print(2)", NULL, b), 0);
    struct worker_options o;
    opts_init(&e, &o, "n4", 1); /* one worker: b waits behind a */
    /* the process-wide families, which sandbox_run counts in too */
    struct telemetry_options to = {.no_process_metrics = true};
    ASSERT_EQ(telemetry_init(&to, err, sizeof err), 0);
    o.metrics = NULL;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, a, BIT(EVAL_RUNNING), 20000, NULL), 0);
    enum eval_status now;
    ASSERT_EQ(store_cancel(e.s, b, &now, err, sizeof err), 0);
    ASSERT_EQ(now, EVAL_CANCELLED);
    ASSERT_EQ(store_cancel(e.s, a, &now, err, sizeof err), 0);
    ASSERT_EQ(now, EVAL_RUNNING);
    uint64_t t0 = time_mono_ns();
    worker_pool_cancelled(p, a); /* the API's poke: no wait for the 10 s heartbeat */
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 20000, &r), 0);
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    ASSERT_EQ(r.status, EVAL_CANCELLED);
    ASSERT_MSG(ms < 5000, "cancel took %llu ms", (unsigned long long)ms);
    ASSERT_CONTAINS(r.result_json, "\"signal\":\"SIGKILL\"");
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, b, TERMINAL_MASK, 1000, &r), 0);
    ASSERT_EQ(r.status, EVAL_CANCELLED);
    ASSERT_EQ(r.attempts, 0);
    ASSERT_EQ(r.started_ns, 0);
    store_record_clear(&r);
    ASSERT_EQ(terminal_events(&e, a), 1);
    ASSERT_EQ(worker_pool_stop(p, 5), 0);
    /* counted exactly once (sandbox_run counts it, as "killed") */
    const struct telemetry_std *ts = telemetry_std();
    double killed =
        metrics_counter_value(metrics_counter_labels(ts->evaluations, "killed", "python"));
    double cancelled =
        metrics_counter_value(metrics_counter_labels(ts->evaluations, "cancelled", "python"));
    ASSERT_MSG(killed + cancelled == 1, "killed %g cancelled %g", killed, cancelled);
}

TEST(cancel_from_another_node_reaches_at_the_next_heartbeat)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e, SLEEP_CODE, LONG_LIMITS, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "n5", 1);
    o.lease_s = 4;
    o.heartbeat_s = 1;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, a, BIT(EVAL_RUNNING), 20000, NULL), 0);
    /* another process's store handle, no poke */
    store_t *other;
    ASSERT_EQ(store_open(e.db, NULL, &other, err, sizeof err), 0);
    ASSERT_EQ(store_cancel(other, a, NULL, err, sizeof err), 0);
    store_close(other);
    uint64_t t0 = time_mono_ns();
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 20000, &r), 0);
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    ASSERT_EQ(r.status, EVAL_CANCELLED);
    ASSERT_MSG(ms < 4000, "cancel took %llu ms with a 1 s heartbeat", (unsigned long long)ms);
    store_record_clear(&r);
    worker_pool_stop(p, 5);
}

/* ---- leases ----------------------------------------------------------------------------- */

TEST(heartbeat_keeps_a_long_run_past_its_lease)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e, "import time\ntime.sleep(3.5)\nprint('done')", LONG_LIMITS, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "n6", 1);
    o.lease_s = 2;
    o.heartbeat_s = 1;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 30000, &r), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "%s", store_status_name(r.status));
    ASSERT_EQ(r.attempts, 1); /* never requeued although it ran past lease_s */
    ASSERT_CONTAINS(r.result_json, "done");
    store_record_clear(&r);
    worker_pool_stop(p, 5);
}

TEST(lost_lease_kills_the_run_and_writes_nothing)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e, SLEEP_CODE, LONG_LIMITS, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "n7", 1);
    o.lease_s = 4;
    o.heartbeat_s = 1;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, a, BIT(EVAL_RUNNING), 20000, &r), 0);
    char wid[STORE_WORKER_ID_MAX];
    snprintf(wid, sizeof wid, "%s", r.worker_id);
    store_record_clear(&r);
    /* someone else requeues it (as a recovering node would) */
    struct store_requeue_counts c = {0};
    ASSERT(store_requeue_worker(e.s, wid, &c, err, sizeof err) >= 0);
    ASSERT_EQ(c.requeued, 1);
    /* the only worker can claim attempt 2 only after its first sandbox died:
     * the 30 s sleep was killed when the heartbeat saw -ESTALE */
    uint64_t t0 = time_mono_ns();
    for (;;) {
        ASSERT_EQ(store_get(e.s, a, &r, err, sizeof err), 0);
        bool second = r.status == EVAL_RUNNING && r.attempts == 2;
        store_record_clear(&r);
        if (second)
            break;
        ASSERT_MSG(time_mono_ns() - t0 < 15000000000ull, "attempt 2 never started");
        usleep(20000);
    }
    char evs[256];
    events_str(&e, a, evs, sizeof evs);
    ASSERT_STREQ(evs, "queued,running,queued,running"); /* attempt 1 wrote no status */
    ASSERT_EQ(store_cancel(e.s, a, NULL, err, sizeof err), 0);
    worker_pool_cancelled(p, a);
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_EQ(r.status, EVAL_CANCELLED);
    store_record_clear(&r);
    worker_pool_stop(p, 5);
}

TEST(expired_leases_requeue_then_max_attempts_is_worker_lost)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char once[STORE_ID_LEN], twice[STORE_ID_LEN], capped[STORE_ID_LEN], err[ERR_LEN];
    struct ins i1 = {.code = "print(1)", .max_attempts = 1};
    struct ins i2 = {.code = "print(2)", .max_attempts = 3};
    struct ins i3 = {.code = "print(3)", .max_attempts = 9, .priority = 9}; /* claimed first */
    ASSERT_EQ(insert(&e, &i1, once), 0);
    ASSERT_EQ(insert(&e, &i2, twice), 0);
    ASSERT_EQ(insert(&e, &i3, capped), 0);
    /* a worker elsewhere claims all three and dies: 1 ms leases */
    struct eval_record r;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(store_claim(e.s, "ghost/w0", 1, &r, err, sizeof err), 0);
        store_record_clear(&r);
    }
    /* capped dies twice more */
    usleep(5000);
    struct store_requeue_counts c = {0};
    ASSERT(store_requeue_expired(e.s, 0, &c, err, sizeof err) >= 0);
    ASSERT_EQ(c.requeued, 2);
    ASSERT_EQ(c.lost, 1); /* `once` had max_attempts 1 */
    for (;;) {
        ASSERT_EQ(store_claim(e.s, "ghost/w0", 1, &r, err, sizeof err), 0);
        bool done = !strcmp(r.id, capped) && r.attempts == 3;
        store_record_clear(&r);
        usleep(5000);
        store_requeue_expired(e.s, 0, NULL, err, sizeof err);
        if (done)
            break;
    }
    struct worker_options o;
    opts_init(&e, &o, "n8", 1);
    o.max_attempts = 3; /* a 4th attempt is refused without running */
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, once, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_STREQ(r.error_reason, "worker_lost");
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, twice, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "%s", store_status_name(r.status));
    ASSERT_EQ(r.attempts, 2);
    store_record_clear(&r);
    ASSERT_EQ(wait_status(&e, capped, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_STREQ(r.error_reason, "worker_lost");
    ASSERT_EQ(r.attempts, 4);
    ASSERT(!r.result_json); /* never ran */
    store_record_clear(&r);
    worker_pool_stop(p, 5);
}

/* ---- crash and restart ----------------------------------------------------------------- */

TEST(kill9_mid_run_then_restart_loses_nothing)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    enum { N = 16 };
    char ids[N][STORE_ID_LEN], err[ERR_LEN];
    for (int i = 0; i < N; i++) {
        /* every fourth one also tries the network: audit records */
        const char *code = i % 4 == 0 ? "import socket,time\n"
                                        "s=socket.socket()\ns.settimeout(0.3)\n"
                                        "print(s.connect_ex(('10.1.2.3',80)))\ntime.sleep(0.3)\n"
                                      : "import time\ntime.sleep(0.4)\nprint(1)\n";
        ASSERT_EQ(insert_code(&e, code, NULL, ids[i]), 0);
    }
    pid_t child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        struct env ce = e;
        struct worker_options o;
        opts_init(&ce, &o, "k9", 2);
        o.lease_s = 60; /* recovery must not wait for these */
        worker_pool_t *p;
        if (worker_pool_start(&o, &p, err, sizeof err) < 0) {
            fprintf(stderr, "child: %s\n", err);
            _exit(1);
        }
        for (;;)
            pause();
    }
    /* kill it in the middle: some finished, some running */
    uint64_t t0 = time_mono_ns();
    int done = 0, running = 0;
    while (time_mono_ns() - t0 < 30000000000ull) {
        done = running = 0;
        for (int i = 0; i < N; i++) {
            struct eval_record r;
            if (store_get(e.s, ids[i], &r, err, sizeof err) == 0) {
                done += store_status_terminal(r.status);
                running += r.status == EVAL_RUNNING;
                store_record_clear(&r);
            }
        }
        if (done >= 3 && running >= 1)
            break;
        usleep(10000);
    }
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    ASSERT_MSG(done >= 3 && running >= 1, "no busy moment to kill at (done %d running %d)", done,
               running);
    /* the dead node's evaluations are still `running` with long leases */
    running = 0;
    for (int i = 0; i < N; i++) {
        struct eval_record r;
        ASSERT_EQ(store_get(e.s, ids[i], &r, err, sizeof err), 0);
        running += r.status == EVAL_RUNNING;
        store_record_clear(&r);
    }
    ASSERT(running >= 1);

    /* restart the node: recovery requeues at once, all finish well before 60 s */
    struct worker_options o;
    opts_init(&e, &o, "k9", 2);
    o.lease_s = 60;
    worker_pool_t *p;
    t0 = time_mono_ns();
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.requeued, running);
    for (int i = 0; i < N; i++) {
        struct eval_record r;
        ASSERT_EQ(wait_status(&e, ids[i], TERMINAL_MASK, 40000, &r), 0);
        ASSERT_MSG(r.status == EVAL_COMPLETED, "%d: %s %s %s", i, store_status_name(r.status),
                   r.error_message ? r.error_message : "", r.worker_id ? r.worker_id : "");
        ASSERT(r.attempts <= 2);
        store_record_clear(&r);
        ASSERT_EQ(terminal_events(&e, ids[i]), 1);
        /* never two attempts at once: each running follows a queued */
        char evs[256];
        events_str(&e, ids[i], evs, sizeof evs);
        ASSERT_MSG(!strstr(evs, "running,running"), "%s", evs);
    }
    ASSERT_MSG((time_mono_ns() - t0) / 1000000000ull < 40, "recovery waited for the leases");
    worker_pool_stop(p, 5);
    unmount_leftovers(&e);
    /* the audit chain written by both processes verifies */
    const char *paths[] = {e.audit};
    struct audit_verify_result vr;
    ASSERT_MSG(audit_verify(paths, 1, NULL, 0, &vr, err, sizeof err) == 0, "%s", err);
    ASSERT(vr.records >= 1);
}

TEST(node_id_in_use_is_refused)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char err[ERR_LEN];
    struct worker_options o;
    opts_init(&e, &o, "same", 1);
    worker_pool_t *p1, *p2;
    ASSERT_MSG(worker_pool_start(&o, &p1, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(worker_pool_start(&o, &p2, err, sizeof err), -EBUSY);
    ASSERT_CONTAINS(err, "node-id");
    ASSERT(p2 == NULL);
    char lock_same[600], lock_other[600];
    snprintf(lock_same, sizeof lock_same, "%s/node-same.lock", e.state);
    snprintf(lock_other, sizeof lock_other, "%s/node-other.lock", e.state);
    struct stat st;
    ASSERT_EQ(stat(lock_same, &st), 0); /* the refused start left the holder's file */
    o.node_id = "other";
    ASSERT_MSG(worker_pool_start(&o, &p2, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(stat(lock_other, &st), 0);
    worker_pool_stop(p2, 1);
    ASSERT_MSG(stat(lock_other, &st) < 0 && errno == ENOENT, "a clean stop left %s", lock_other);
    worker_pool_stop(p1, 1);
    ASSERT_MSG(stat(lock_same, &st) < 0 && errno == ENOENT, "a clean stop left %s", lock_same);
    ASSERT_MSG(worker_pool_start(&o, &p2, err, sizeof err) == 0, "%s", err); /* released */
    worker_pool_stop(p2, 1);
    o.node_id = "same"; /* a restart right after a clean stop */
    ASSERT_MSG(worker_pool_start(&o, &p1, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(worker_pool_start(&o, &p2, err, sizeof err), -EBUSY); /* and it still excludes */
    worker_pool_stop(p1, 1);
    ASSERT(stat(lock_same, &st) < 0);
    /* bad options */
    o.node_id = "a/b";
    ASSERT_EQ(worker_pool_start(&o, &p2, err, sizeof err), -EINVAL);
    o.node_id = "x";
    o.lease_s = 2;
    o.heartbeat_s = 2;
    ASSERT_EQ(worker_pool_start(&o, &p2, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "heartbeat_s");
}

struct lock_starter {
    struct worker_options *o;
    worker_pool_t *p;
    int rc;
    char err[ERR_LEN];
};

static void *lock_starter_main(void *arg)
{
    struct lock_starter *ls = arg;
    ls->rc = worker_pool_start(ls->o, &ls->p, ls->err, sizeof ls->err);
    return NULL;
}

/* A pool that waits for the node lock while its holder stops cleanly (the
 * holder unlinks the file, then releases the lock) must end up holding the
 * file at the path, not the unlinked one: else a third process would take
 * the node id too. */
TEST(node_lock_waiter_takes_the_new_file_after_a_clean_stop)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    struct worker_options o;
    opts_init(&e, &o, "handover", 1);
    char path[600];
    snprintf(path, sizeof path, "%s/node-handover.lock", e.state);
    mkdir(e.state, 0711);
    /* the holder: another process, as far as flock is concerned (its own
     * open file description) */
    int hfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT(hfd >= 0);
    ASSERT_EQ(flock(hfd, LOCK_EX), 0);
    struct lock_starter ls = {.o = &o};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, lock_starter_main, &ls), 0);
    /* the starter retries for up to 2 s */
    usleep(300 * 1000);
    ASSERT_EQ(unlink(path), 0); /* the holder's clean stop */
    close(hfd);
    pthread_join(th, NULL);
    ASSERT_MSG(ls.rc == 0, "start after the holder stopped: %s", ls.err);
    struct stat st;
    ASSERT_MSG(stat(path, &st) == 0, "the pool holds an unlinked lock file");
    int tfd = open(path, O_RDWR | O_CLOEXEC);
    ASSERT(tfd >= 0);
    bool excluded = flock(tfd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(tfd);
    ASSERT_MSG(excluded, "the file at %s is not locked by the pool", path);
    worker_pool_stop(ls.p, 1);
    ASSERT(stat(path, &st) < 0);
}

/* After a crash (kill -9) the lock file stays behind, unlocked: the next
 * start takes it over, and its clean stop removes it. */
TEST(node_lock_file_kept_after_a_crash_and_reused)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    struct worker_options o;
    opts_init(&e, &o, "crashy", 1);
    char path[600], err[ERR_LEN];
    snprintf(path, sizeof path, "%s/node-crashy.lock", e.state);
    int pp[2];
    ASSERT_EQ(pipe2(pp, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        worker_pool_t *p;
        char c = worker_pool_start(&o, &p, err, sizeof err) == 0 ? 'y' : 'n';
        if (write(pp[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(pp[1]);
    char c = 0;
    ssize_t n = read(pp[0], &c, 1);
    close(pp[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ASSERT_MSG(n == 1 && c == 'y', "the child's pool did not start");
    struct stat st;
    ASSERT_MSG(stat(path, &st) == 0, "the crashed pool's lock file is gone");
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "restart after kill -9: %s", err);
    worker_pool_stop(p, 1);
    ASSERT(stat(path, &st) < 0);
}

/* ---- graceful stop ------------------------------------------------------------------------ */

TEST(graceful_stop_finishes_short_runs_and_requeues_long_ones)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char shortid[STORE_ID_LEN], longid[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e, "import time\ntime.sleep(0.8)\nprint('ok')", LONG_LIMITS, shortid),
              0);
    ASSERT_EQ(insert_code(&e, SLEEP_CODE, LONG_LIMITS, longid), 0);
    struct worker_options o;
    opts_init(&e, &o, "g1", 2);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, shortid, BIT(EVAL_RUNNING), 20000, NULL), 0);
    ASSERT_EQ(wait_status(&e, longid, BIT(EVAL_RUNNING), 20000, NULL), 0);
    uint64_t t0 = time_mono_ns();
    ASSERT_EQ(worker_pool_stop(p, 3), 1); /* one killed and requeued */
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    ASSERT_MSG(ms >= 2900 && ms < 8000, "stop took %llu ms with a 3 s grace",
               (unsigned long long)ms);
    struct eval_record r;
    ASSERT_EQ(store_get(e.s, shortid, &r, err, sizeof err), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "%s", store_status_name(r.status));
    store_record_clear(&r);
    ASSERT_EQ(store_get(e.s, longid, &r, err, sizeof err), 0);
    ASSERT_MSG(r.status == EVAL_QUEUED, "%s", store_status_name(r.status));
    ASSERT_EQ(r.attempts, 1);
    store_record_clear(&r);
    /* a stop with nothing running is immediate */
    opts_init(&e, &o, "g1", 1);
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, longid, BIT(EVAL_RUNNING), 20000, NULL), 0);
    ASSERT_EQ(store_cancel(e.s, longid, NULL, err, sizeof err), 0);
    worker_pool_cancelled(p, longid);
    ASSERT_EQ(wait_status(&e, longid, TERMINAL_MASK, 20000, NULL), 0);
    t0 = time_mono_ns();
    ASSERT_EQ(worker_pool_stop(p, 30), 0);
    ASSERT((time_mono_ns() - t0) / 1000000 < 2000);
}

/* ---- retention, audit, webhooks --------------------------------------------------------- */

TEST(retention_purges_finished_evaluations_keeps_audit)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(
        insert_code(&e, "import socket\nsocket.socket().connect_ex(('10.9.9.9',80))", NULL, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "r1", 1);
    o.retention_s = 1;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 20000, NULL), 0);
    uint64_t t0 = time_mono_ns();
    struct eval_record r;
    int rc;
    while ((rc = store_get(e.s, a, &r, err, sizeof err)) == 0) {
        store_record_clear(&r);
        ASSERT_MSG(time_mono_ns() - t0 < 10000000000ull, "not purged after 10 s");
        usleep(50000);
    }
    ASSERT_EQ(rc, -ENOENT);
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.purged, 1);
    worker_pool_stop(p, 5);
    char *audit = slurp(e.audit);
    ASSERT_MSG(audit && strstr(audit, a), "the audit log lost the record");
    free(audit);
}

TEST(security_events_go_to_audit_and_security_log)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    ASSERT_EQ(insert_code(&e,
                          "import socket\nfor i in range(3):\n"
                          "    socket.socket().connect_ex(('10.9.9.9',80+i))\nprint('tried')",
                          NULL, a),
              0);
    struct worker_options o;
    opts_init(&e, &o, "s1", 1);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    struct eval_record r;
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_MSG(r.status == EVAL_COMPLETED, "%s", store_status_name(r.status));
    ASSERT_CONTAINS(r.result_json, "network_attempt");
    store_record_clear(&r);
    worker_pool_stop(p, 5);
    const char *paths[] = {e.audit};
    struct audit_verify_result vr;
    ASSERT_MSG(audit_verify(paths, 1, NULL, 0, &vr, err, sizeof err) == 0, "%s", err);
    ASSERT(vr.records >= 3);
    char *audit = slurp(e.audit);
    ASSERT_CONTAINS(audit, a);
    ASSERT_CONTAINS(audit, "\"reason\":\"network_attempt\"");
    ASSERT_CONTAINS(audit, "10.9.9.9");
    free(audit);
    /* one security log line per audit record */
    char *logs = slurp(e.logs);
    int lines = 0;
    for (char *q = logs, *nl; q && *q; q = nl ? nl + 1 : NULL) {
        nl = strchr(q, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(q, "\"logger\":\"security\"") &&
            strstr(q, "\"event\":\"evaluation.suspicious\"") && strstr(q, a))
            lines++;
        if (nl)
            *nl = '\n';
    }
    ASSERT_EQ(lines, (int)vr.records);
    ASSERT_CONTAINS(logs, "\"audit_seq\":1");
    free(logs);
    ASSERT(metrics_counter_value(metrics_counter_labels(e.m.cost_cents, "python", "anonymous")) >
           0);
}

/* a one-shot receiver for the webhook */
struct hook {
    int fd, port;
    pthread_t th;
    char sig[128];
    char *body;
    size_t len;
};

static void *hook_main(void *arg)
{
    struct hook *h = arg;
    struct pollfd pf = {.fd = h->fd, .events = POLLIN};
    int pr;
    /* EINTR: glibc's setgroups (the sandbox's first run) signals every thread */
    while ((pr = poll(&pf, 1, 30000)) < 0 && errno == EINTR) {
    }
    if (pr <= 0)
        return NULL;
    int c = accept(h->fd, NULL, NULL);
    static char buf[1 << 20];
    size_t got = 0;
    char *end = NULL;
    while (got < sizeof buf - 1) {
        ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
        if (!end && (end = strstr(buf, "\r\n\r\n"))) {
        }
        if (end) {
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            size_t want = cl ? (size_t)atol(cl + 17) : 0;
            if (got - (size_t)(end + 4 - buf) >= want)
                break;
        }
    }
    if (end) {
        char *s = strcasestr(buf, "\r\nX-Clearbox-Signature: ");
        if (s)
            snprintf(h->sig, sizeof h->sig, "%.*s", (int)strcspn(s + 24, "\r\n"), s + 24);
        h->len = got - (size_t)(end + 4 - buf);
        h->body = malloc(h->len + 1);
        memcpy(h->body, end + 4, h->len);
        h->body[h->len] = '\0';
    }
    const char *resp = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    if (write(c, resp, strlen(resp)) < 0) {
    }
    close(c);
    return NULL;
}

TEST(webhook_delivered_signed_on_terminal_status)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    struct hook h = {0};
    h.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(h.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(listen(h.fd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(h.fd, (struct sockaddr *)&sa, &sl);
    h.port = ntohs(sa.sin_port);
    ASSERT_EQ(pthread_create(&h.th, NULL, hook_main, &h), 0);
    char url[128], a[STORE_ID_LEN], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/done", h.port);
    struct ins in = {.code = "print('hooked')", .callback_url = url};
    ASSERT_EQ(insert(&e, &in, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "h1", 1);
    o.callback_secret = "topsecret";
    o.callback_allow_private = true; /* the receiver is on loopback */
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    pthread_join(h.th, NULL);
    ASSERT(h.body);
    char want[HASH_SHA256_HEX];
    hash_hmac_sha256_hex("topsecret", 9, h.body, h.len, want);
    ASSERT_EQ(strncmp(h.sig, "sha256=", 7), 0);
    ASSERT(hash_equal(h.sig + 7, want, 64));
    json_t *j = json_loadb(h.body, h.len, 0, NULL);
    ASSERT(json_is_object(j));
    ASSERT_STREQ(json_string_value(json_object_get(j, "id")), a);
    ASSERT_STREQ(json_string_value(json_object_get(j, "status")), "completed");
    ASSERT_STREQ(json_string_value(json_object_get(j, "stdout")), "hooked\n");
    json_decref(j);
    /* the delivery is in the record */
    struct eval_record r;
    for (int i = 0; i < 200; i++) {
        ASSERT_EQ(store_get(e.s, a, &r, err, sizeof err), 0);
        bool rec = r.callbacks_json && strstr(r.callbacks_json, "\"ok\":true");
        store_record_clear(&r);
        if (rec)
            break;
        usleep(20000);
    }
    ASSERT_EQ(store_get(e.s, a, &r, err, sizeof err), 0);
    ASSERT_CONTAINS(r.callbacks_json, "\"http_status\":204");
    store_record_clear(&r);
    free(h.body);
    close(h.fd);
    worker_pool_stop(p, 5);
}

static int hook_start(struct hook *h)
{
    memset(h, 0, sizeof *h);
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(h->fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(h->fd, 4) < 0)
        return -errno;
    socklen_t sl = sizeof sa;
    getsockname(h->fd, (struct sockaddr *)&sa, &sl);
    h->port = ntohs(sa.sin_port);
    return pthread_create(&h->th, NULL, hook_main, h) ? -EAGAIN : 0;
}

TEST(worker_lost_by_maintenance_is_counted_and_sends_its_webhook)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    struct hook h;
    ASSERT_EQ(hook_start(&h), 0);
    char url[128], a[STORE_ID_LEN], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/lost", h.port);
    struct ins in = {.code = "print(1)", .callback_url = url, .max_attempts = 1};
    ASSERT_EQ(insert(&e, &in, a), 0);
    /* a worker of another node claims it and vanishes (lease 1 ms) */
    struct eval_record r;
    ASSERT_EQ(store_claim(e.s, "gone/w0", 1, &r, err, sizeof err), 0);
    store_record_clear(&r);
    struct worker_options o;
    opts_init(&e, &o, "m1", 1);
    o.callback_allow_private = true;
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, a, TERMINAL_MASK, 10000, &r), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_STREQ(r.error_reason, "worker_lost");
    store_record_clear(&r);
    pthread_join(h.th, NULL);
    ASSERT_MSG(h.body, "no webhook for a worker_lost evaluation");
    json_t *j = json_loadb(h.body, h.len, 0, NULL);
    ASSERT_STREQ(json_string_value(json_object_get(j, "status")), "error");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(j, "error"), "reason")),
                 "worker_lost");
    json_decref(j);
    free(h.body);
    close(h.fd);
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.lost, 1);
    ASSERT_EQ(st.claimed, 0);
    worker_pool_stop(p, 5);
    ASSERT_EQ(metrics_counter_value(metrics_counter_labels(e.m.evaluations, "error", "python")), 1);
}

TEST(unhealthy_when_the_store_stops_answering)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char err[ERR_LEN], why[256] = "";
    struct worker_options o;
    opts_init(&e, &o, "u1", 1);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_MSG(worker_pool_healthy(p, why, sizeof why), "%s", why);
    /* break the database under the pool: every maintenance pass now fails */
    sqlite3 *db;
    ASSERT_EQ(sqlite3_open(e.db + strlen("sqlite:"), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE evaluations", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    uint64_t t0 = time_mono_ns();
    while (worker_pool_healthy(p, why, sizeof why)) {
        ASSERT_MSG(time_mono_ns() - t0 < 10000000000ull, "still healthy after 10 s");
        usleep(50000);
    }
    ASSERT_CONTAINS(why, "maintenance");
    struct worker_pool_stats st;
    worker_pool_stats(p, &st);
    ASSERT_EQ(st.alive, 1); /* the threads live on and keep retrying */
    worker_pool_stop(p, 1);
}

/* ---- two nodes on PostgreSQL ------------------------------------------------------------ */

static void two_nodes_on_postgres(struct env *e, const char *url)
{
    char err[ERR_LEN];
    struct store_options so = {.flags = STORE_OPEN_MIGRATE};
    store_close(e->s);
    e->s = NULL;
    ASSERT_MSG(store_open(url, &so, &e->s, err, sizeof err) == 0, "%s", err);
    snprintf(e->db, sizeof e->db, "%s", url);
    enum { N = 30 };
    char ids[N][STORE_ID_LEN], slow[STORE_ID_LEN];
    ASSERT_EQ(insert_code(e, SLEEP_CODE, LONG_LIMITS, slow), 0);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(insert_code(e, "import time\ntime.sleep(0.05)\nprint(1)", NULL, ids[i]), 0);
    struct worker_options oa, ob;
    opts_init(e, &oa, "pa", 2);
    opts_init(e, &ob, "pb", 2);
    oa.heartbeat_s = ob.heartbeat_s = 1;
    oa.lease_s = ob.lease_s = 5;
    worker_pool_t *pa, *pb;
    ASSERT_MSG(worker_pool_start(&oa, &pa, err, sizeof err) == 0, "%s", err);
    ASSERT_MSG(worker_pool_start(&ob, &pb, err, sizeof err) == 0, "%s", err);
    int on_a = 0, on_b = 0;
    for (int i = 0; i < N; i++) {
        struct eval_record r;
        ASSERT_EQ(wait_status(e, ids[i], TERMINAL_MASK, 60000, &r), 0);
        ASSERT_MSG(r.status == EVAL_COMPLETED, "%d: %s %s", i, store_status_name(r.status),
                   r.error_message ? r.error_message : "");
        ASSERT_EQ(r.attempts, 1);
        on_a += !strncmp(r.worker_id, "pa/", 3);
        on_b += !strncmp(r.worker_id, "pb/", 3);
        store_record_clear(&r);
        ASSERT_EQ(terminal_events(e, ids[i]), 1);
    }
    ASSERT_EQ(on_a + on_b, N);
    ASSERT_MSG(on_a > 0 && on_b > 0, "one node did everything (a %d, b %d)", on_a, on_b);
    /* cancel the long one through "the other" node's API: no poke reaches
     * the node running it; its heartbeat (1 s) must find the flag */
    struct eval_record r;
    ASSERT_EQ(wait_status(e, slow, BIT(EVAL_RUNNING), 20000, &r), 0);
    worker_pool_t *other = !strncmp(r.worker_id, "pa/", 3) ? pb : pa;
    store_record_clear(&r);
    ASSERT_EQ(store_cancel(e->s, slow, NULL, err, sizeof err), 0);
    worker_pool_cancelled(other, slow); /* a no-op there: not its evaluation */
    uint64_t t0 = time_mono_ns();
    ASSERT_EQ(wait_status(e, slow, TERMINAL_MASK, 20000, &r), 0);
    ASSERT_EQ(r.status, EVAL_CANCELLED);
    store_record_clear(&r);
    ASSERT_MSG((time_mono_ns() - t0) / 1000000 < 5000, "cross-node cancel too slow");
    worker_pool_stop(pa, 5);
    worker_pool_stop(pb, 5);
    store_close(e->s);
    e->s = NULL;
}

TEST(two_nodes_share_a_postgres_queue)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char perr[512], url[512];
    int rc = pg_test_start(perr, sizeof perr);
    ASSERT_MSG(rc == 0, "cannot start PostgreSQL: %s", perr);
    if (pg_test_url(NULL, url, sizeof url))
        two_nodes_on_postgres(&e, url);
    pg_test_stop(); /* even when the body failed */
}

TEST(stop_at_the_last_attempt_ends_worker_lost)
{
    if (!root_or_skip())
        return;
    struct env e;
    ASSERT_EQ(env_init(&e), 0);
    char a[STORE_ID_LEN], err[ERR_LEN];
    struct ins in = {.code = SLEEP_CODE, .limits = LONG_LIMITS, .max_attempts = 1};
    ASSERT_EQ(insert(&e, &in, a), 0);
    struct worker_options o;
    opts_init(&e, &o, "z1", 1);
    worker_pool_t *p;
    ASSERT_MSG(worker_pool_start(&o, &p, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(wait_status(&e, a, BIT(EVAL_RUNNING), 20000, NULL), 0);
    uint64_t t0 = time_mono_ns();
    ASSERT_EQ(worker_pool_stop(p, 0), 1); /* no grace: killed at once */
    ASSERT_MSG((time_mono_ns() - t0) / 1000000 < 3000, "stop with grace 0 waited");
    struct eval_record r;
    ASSERT_EQ(store_get(e.s, a, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, EVAL_ERROR);
    ASSERT_STREQ(r.error_reason, "worker_lost");
    store_record_clear(&r);
    ASSERT_EQ(terminal_events(&e, a), 1);
    ASSERT_EQ(metrics_counter_value(metrics_counter_labels(e.m.evaluations, "error", "python")), 1);
}
