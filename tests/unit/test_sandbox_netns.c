/* test_sandbox_netns.c - finished sandboxes' network namespaces, let go in
 * batches (src/sandbox/netns_batch.c; docs/sandbox.md "Network namespaces
 * in batches"). Real namespaces: run as root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/internal.h"
#include "sandbox/sandbox.h"
#include "sandbox_testlib.h"
#include "test.h"

#define HELD_MAX 64

/* The network namespaces this process holds an fd to ("net:[ino]"), other
 * than its own. */
static int held_netns(char held[][64], int max)
{
    char mine[64] = "";
    if (readlink("/proc/self/ns/net", mine, sizeof mine - 1) < 0)
        return -1;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[300], t[64] = "";
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        if (readlink(p, t, sizeof t - 1) <= 0 || strncmp(t, "net:[", 5) != 0 ||
            strcmp(t, mine) == 0)
            continue;
        if (n < max)
            snprintf(held[n], 64, "%s", t);
        n++;
    }
    closedir(d);
    return n;
}

static int nheld(void)
{
    char held[HELD_MAX][64];
    return held_netns(held, HELD_MAX);
}

static bool holds(const char *ns)
{
    char held[HELD_MAX][64];
    int n = held_netns(held, HELD_MAX);
    for (int i = 0; i < n && i < HELD_MAX; i++)
        if (!strcmp(held[i], ns))
            return true;
    return false;
}

/* Run a program that prints its network namespace; ns gets it ("net:[ino]"). */
static void run_ns(const char *id, const char *code, char *ns, size_t nl)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh", code);
    s.eval_id = id;
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    ASSERT_MSG(rc == 0 && r.status == SANDBOX_COMPLETED, "rc %d: %s", rc, err);
    ASSERT_MSG(r.out.len > 5 && !strncmp(r.out.data, "net:[", 5), "printed '%s'",
               r.out.data ? r.out.data : "");
    snprintf(ns, nl, "%.*s", (int)strcspn(r.out.data, "\n"), r.out.data);
    sandbox_result_free(&r);
    char what[256];
    ASSERT_MSG(!sb_leftovers(id, what, sizeof what), "left: %s", what);
}

/* Does any process on the host live in ns? */
static bool ns_has_a_process(const char *ns)
{
    DIR *d = opendir("/proc");
    if (!d)
        return true;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char p[300], t[64] = "";
        snprintf(p, sizeof p, "/proc/%s/ns/net", e->d_name);
        if (readlink(p, t, sizeof t - 1) > 0 && !strcmp(t, ns))
            found = true;
    }
    closedir(d);
    return found;
}

static const char *const PRINT_NS = "readlink /proc/self/ns/net\n";

/* Off (the default, as for `clearbox run`): a run keeps nothing. */
TEST(off_a_run_keeps_no_namespace)
{
    if (!sb_need_root())
        return;
    sandbox_netns_batch(0);
    char ns[64];
    ASSERT_EQ(nheld(), 0);
    run_ns("t-netns-off", PRINT_NS, ns, sizeof ns);
    ASSERT_EQ(nheld(), 0);
}

/* On: each finished run's own namespace is held (the one its program ran
 * in, not ours), until the batch is full; then all go together. A flush
 * lets the held ones go; turning it off does too. */
TEST(held_namespaces_are_the_runs_and_go_as_a_batch)
{
    if (!sb_need_root())
        return;
    char held[HELD_MAX][64], a[64], b[64], c[64];
    sandbox_netns_batch(3);
    run_ns("t-netns-b1", PRINT_NS, a, sizeof a);
    run_ns("t-netns-b2", PRINT_NS, b, sizeof b);
    ASSERT(strcmp(a, b) != 0);
    ASSERT_EQ(held_netns(held, HELD_MAX), 2);
    ASSERT_MSG(holds(a) && holds(b), "held %s, %s; ran in %s, %s", held[0], held[1], a, b);
    run_ns("t-netns-b3", PRINT_NS, c, sizeof c); /* the third fills the batch */
    ASSERT_EQ(held_netns(held, HELD_MAX), 0);
    run_ns("t-netns-b4", PRINT_NS, a, sizeof a);
    ASSERT(holds(a));
    sandbox_netns_flush();
    ASSERT_EQ(held_netns(held, HELD_MAX), 0);
    run_ns("t-netns-b5", PRINT_NS, a, sizeof a);
    ASSERT(holds(a));
    sandbox_netns_batch(0);
    ASSERT_EQ(held_netns(held, HELD_MAX), 0);
}

/* A batch never holds more than SANDBOX_NETNS_BATCH_MAX, whatever was asked
 * for: the run that makes it full lets them all go. */
TEST(a_batch_holds_at_most_the_maximum)
{
    if (!sb_need_root())
        return;
    char ns[64], id[32];
    sandbox_netns_batch(SANDBOX_NETNS_BATCH_MAX + 100);
    for (int i = 1; i < SANDBOX_NETNS_BATCH_MAX; i++) {
        snprintf(id, sizeof id, "t-netns-max%d", i);
        run_ns(id, PRINT_NS, ns, sizeof ns);
    }
    ASSERT_EQ(nheld(), SANDBOX_NETNS_BATCH_MAX - 1);
    run_ns("t-netns-max-last", PRINT_NS, ns, sizeof ns);
    ASSERT_EQ(nheld(), 0);
    sandbox_netns_batch(0);
}

/* None waits long for a batch: a run that ends when the oldest held one is
 * 2 s old lets them all go, its own too. */
TEST(an_old_batch_goes_with_the_next_run)
{
    if (!sb_need_root())
        return;
    char ns[64];
    sandbox_netns_batch(8);
    run_ns("t-netns-old1", PRINT_NS, ns, sizeof ns);
    ASSERT_EQ(nheld(), 1);
    struct timespec ts = {2, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ASSERT_EQ(nheld(), 1); /* nothing goes by itself */
    run_ns("t-netns-old2", PRINT_NS, ns, sizeof ns);
    ASSERT_EQ(nheld(), 0);
    sandbox_netns_batch(0);
}

/* The held fds are close-on-exec, either way they were opened: a program the
 * service execs (none does today) must not inherit them. */
TEST(held_namespaces_are_close_on_exec)
{
    if (!sb_need_root())
        return;
    char ns[64];
    sandbox_netns_batch(4);
    run_ns("t-netns-cloexec1", PRINT_NS, ns, sizeof ns);
    sandbox__netns_via_proc = true;
    run_ns("t-netns-cloexec2", PRINT_NS, ns, sizeof ns);
    sandbox__netns_via_proc = false;
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        char p[64], t[64] = "";
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        if (readlink(p, t, sizeof t - 1) <= 0 || strncmp(t, "net:[", 5) != 0)
            continue;
        int fl = fcntl(fd, F_GETFD);
        ASSERT_MSG(fl >= 0 && (fl & FD_CLOEXEC), "fd %d (%s) is not close-on-exec", fd, t);
        n++;
    }
    ASSERT(n >= 2);
    sandbox_netns_batch(0);
}

/* A held namespace has no process in it, even when the program left
 * daemons behind (they die with the sandbox's pid namespace): only our fd
 * keeps it. */
TEST(a_held_namespace_has_no_process_left)
{
    if (!sb_need_root())
        return;
    char ns[64];
    sandbox_netns_batch(4);
    run_ns("t-netns-daemon",
           "(sleep 30 &)\n"
           "setsid sleep 30 >/dev/null 2>&1 < /dev/null &\n"
           "readlink /proc/self/ns/net\n",
           ns, sizeof ns);
    ASSERT(holds(ns));
    ASSERT_MSG(!ns_has_a_process(ns), "a process still lives in %s", ns);
    sandbox_netns_batch(0);
}

/* Kernels before 6.11 have no PIDFD_GET_NET_NAMESPACE: the engine opens
 * /proc/<init>/ns/net instead, and holds the same namespace. */
TEST(through_proc_the_same_namespace)
{
    if (!sb_need_root())
        return;
    char ns[64];
    sandbox__netns_via_proc = true;
    sandbox_netns_batch(4);
    run_ns("t-netns-proc", PRINT_NS, ns, sizeof ns);
    sandbox__netns_via_proc = false;
    char held[HELD_MAX][64];
    ASSERT_EQ(held_netns(held, HELD_MAX), 1);
    ASSERT_STREQ(held[0], ns);
    sandbox_netns_batch(0);
}

/* Through the spawner (as clearbox serve runs them): the same. */
TEST(through_the_spawner_the_same)
{
    if (!sb_need_root())
        return;
    char err[256];
    if (sandbox_spawner_start(err, sizeof err) < 0) {
        test_skip(err);
        return;
    }
    char ns[64], held[HELD_MAX][64];
    sandbox_netns_batch(4);
    run_ns("t-netns-spawn", PRINT_NS, ns, sizeof ns);
    ASSERT_EQ(held_netns(held, HELD_MAX), 1);
    ASSERT_STREQ(held[0], ns);
    ASSERT(!ns_has_a_process(ns));
    sandbox_netns_batch(0);
    sandbox_spawner_stop();
}

