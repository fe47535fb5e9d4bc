/* test_sandbox_control.c - struct sandbox_control (sandbox.h): a kill from
 * another thread ends the run within 100 ms with status killed and nothing
 * left behind; the progress callback runs at the promised interval. Real
 * namespaces and cgroups (needs root). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "sandbox_testlib.h"
#include "test.h"
#include "util/timeutil.h"

struct killer {
    struct sandbox_control *c;
    unsigned delay_ms;
    uint64_t killed_at; /* time_mono_ns() of the kill */
};

static void *kill_later(void *arg)
{
    struct killer *k = arg;
    struct timespec ts = {k->delay_ms / 1000, (long)(k->delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    k->killed_at = time_mono_ns();
    sandbox_control_kill(k->c);
    return NULL;
}

struct beat {
    int calls;
    double last_elapsed_ms, max_gap_ms;
    uint64_t last_ns;
    bool saw_pids;
    char eval_id[SANDBOX_EVAL_ID_MAX + 1];
};

static void on_progress(const struct sandbox_progress *p, void *arg)
{
    struct beat *b = arg;
    uint64_t now = time_mono_ns();
    if (b->calls && (double)(now - b->last_ns) / 1e6 > b->max_gap_ms)
        b->max_gap_ms = (double)(now - b->last_ns) / 1e6;
    b->last_ns = now;
    b->calls++;
    b->last_elapsed_ms = p->elapsed_ms;
    if (p->pids >= 1)
        b->saw_pids = true;
    snprintf(b->eval_id, sizeof b->eval_id, "%s", p->eval_id);
}

/* Promise: a kill from another thread mid-run ends sandbox_run within
 * 100 ms, status killed, SIGKILL, nothing left; progress ran meanwhile. */
TEST(kill_from_another_thread_ends_run_within_100ms)
{
    if (geteuid() != 0) {
        test_skip("needs root (namespaces, cgroups)");
        return;
    }
    struct sandbox_control c;
    sandbox_control_init(&c);
    struct beat b;
    memset(&b, 0, sizeof b);
    c.on_progress = on_progress;
    c.arg = &b;
    c.progress_interval_ms = 20;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "trap '' TERM\nsleep 30 & sleep 30\n");
    s.eval_id = "t-control-kill";
    s.control = &c;
    struct killer k = {.c = &c, .delay_ms = 400};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, kill_later, &k), 0);
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    uint64_t returned = time_mono_ns();
    pthread_join(th, NULL);
    ASSERT_EQ(r.status, SANDBOX_KILLED);
    ASSERT_EQ(r.signal, SIGKILL);
    ASSERT_EQ(r.exit_code, -1);
    double after_kill_ms = (double)(returned - k.killed_at) / 1e6;
    ASSERT_MSG(after_kill_ms < 100, "sandbox_run returned %.1f ms after the kill", after_kill_ms);
    ASSERT_MSG(r.execute_ms > 300, "the program ran only %.1f ms", r.execute_ms);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-control-kill", what, sizeof what), "left behind: %s", what);
    /* heartbeats: ~every 20 ms over ~400 ms (generous bounds under load) */
    ASSERT_MSG(b.calls >= 5, "progress called %d times", b.calls);
    ASSERT_MSG(b.max_gap_ms < 200, "a gap of %.1f ms between progress calls", b.max_gap_ms);
    ASSERT(b.last_elapsed_ms > 200);
    ASSERT(b.saw_pids);
    ASSERT_STREQ(b.eval_id, "t-control-kill");
    ASSERT(sandbox_control_killed(&c));
    sandbox_result_free(&r);
}

/* A kill before the program starts: killed, nothing ran, nothing left. */
TEST(kill_before_start_runs_nothing)
{
    if (geteuid() != 0) {
        test_skip("needs root (namespaces, cgroups)");
        return;
    }
    struct sandbox_control c;
    sandbox_control_init(&c);
    sandbox_control_kill(&c);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo ran\n");
    s.eval_id = "t-control-early";
    s.control = &c;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_KILLED);
    ASSERT_EQ(r.out.len, 0);
    ASSERT(r.execute_ms == 0);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-control-early", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
}

/* Without a kill the control changes nothing; progress stops at the end. */
TEST(progress_only_run_completes)
{
    if (geteuid() != 0) {
        test_skip("needs root (namespaces, cgroups)");
        return;
    }
    struct sandbox_control c;
    sandbox_control_init(&c);
    struct beat b;
    memset(&b, 0, sizeof b);
    c.on_progress = on_progress;
    c.arg = &b;
    c.progress_interval_ms = 1; /* raised to the 10 ms minimum */
    struct sandbox_spec s;
    sb_spec(&s, "sh", "sleep 0.2; echo done\n");
    s.control = &c;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "done\n");
    ASSERT_MSG(b.calls >= 2 && b.calls <= 40, "progress called %d times in ~200 ms", b.calls);
    int calls = b.calls;
    usleep(50000);
    ASSERT_EQ(b.calls, calls); /* nothing after sandbox_run returned */
    sandbox_result_free(&r);
}
