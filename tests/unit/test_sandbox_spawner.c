/* test_sandbox_spawner.c - the sandbox spawner (clearbox serve's way of
 * cloning init, docs/sandbox.md "The spawner") against real namespaces and
 * cgroups: the same results as a direct clone, init really is the spawner's
 * child, kills and failures through it leave nothing behind, and the engine
 * falls back to cloning init itself when the spawner is gone.
 *
 * Its own binary: once started, the spawner serves every sandbox_run() of
 * the process (each test runs in its own forked child and starts its own).
 * Needs root (skips otherwise). */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "sandbox_testlib.h"
#include "test.h"

/* The pid of our child named clearbox-spawn, or -1. */
static pid_t spawner_pid(void)
{
    char p[128], kids[4096];
    snprintf(p, sizeof p, "/proc/self/task/%d/children", (int)getpid());
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(kids, 1, sizeof kids - 1, f);
    fclose(f);
    kids[n] = '\0';
    for (char *sv = NULL, *t = strtok_r(kids, " \n", &sv); t; t = strtok_r(NULL, " \n", &sv)) {
        char comm[64] = "";
        snprintf(p, sizeof p, "/proc/%s/comm", t);
        FILE *c = fopen(p, "r");
        if (c) {
            if (fgets(comm, sizeof comm, c))
                comm[strcspn(comm, "\n")] = '\0';
            fclose(c);
        }
        if (!strcmp(comm, "clearbox-spawn"))
            return (pid_t)atoi(t);
    }
    return -1;
}

/* How many children the process has right now, over all its threads
 * (a thread's clone is a child of that thread's task). */
static int children_of(pid_t pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/task", (int)pid);
    DIR *d = opendir(p);
    if (!d)
        return -1;
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char q[512], kids[4096];
        snprintf(q, sizeof q, "/proc/%d/task/%s/children", (int)pid, e->d_name);
        FILE *f = fopen(q, "r");
        if (!f)
            continue;
        size_t n = fread(kids, 1, sizeof kids - 1, f);
        fclose(f);
        kids[n] = '\0';
        for (char *sv = NULL, *t = strtok_r(kids, " \n", &sv); t; t = strtok_r(NULL, " \n", &sv))
            k++;
    }
    closedir(d);
    return k;
}

/* Start the spawner of this test's process; false (a failure) if it
 * cannot be started or is not there. */
static bool spawner_up(void)
{
    char err[256];
    if (sandbox_spawner_start(err, sizeof err) < 0) {
        test__fail(__FILE__, __LINE__, "sandbox_spawner_start: %s", err);
        return false;
    }
    if (spawner_pid() <= 0) {
        test__fail(__FILE__, __LINE__, "no clearbox-spawn child after sandbox_spawner_start");
        return false;
    }
    return true;
}

struct bg {
    struct sandbox_spec s;
    struct sandbox_result r;
    int rc;
};

static void *bg_run(void *arg)
{
    struct bg *b = arg;
    char err[256];
    b->rc = sandbox_run(&b->s, &b->r, err, sizeof err);
    return NULL;
}

TEST(start_forks_one_small_spawner)
{
    if (!sb_need_root())
        return;
    char err[256];
    ASSERT_EQ(spawner_pid(), -1);
    ASSERT_EQ(sandbox_spawner_start(err, sizeof err), 0);
    ASSERT_EQ(sandbox_spawner_start(err, sizeof err), 0); /* idempotent */
    pid_t sp = spawner_pid();
    ASSERT_MSG(sp > 0, "no clearbox-spawn child");
    ASSERT_EQ(children_of(sp), 0);
}

/* The program, its files, stdin, environment and limits reach init through
 * the spawner's memfd exactly as through a direct clone. */
TEST(runs_programs_like_a_direct_clone)
{
    if (!sb_need_root() || !spawner_up())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "python",
            "import os,sys\nprint(os.getuid(), os.getcwd(), open('data.bin','rb').read().hex())\n"
            "print(sys.stdin.read().strip(), sorted(k for k in os.environ))\n"
            "print(os.access('tool.sh', os.X_OK), sys.argv[1:])\n");
    static const char *argv[] = {"/usr/bin/python3", "/work/main.py", "a b", "", NULL};
    s.argv = argv;
    s.eval_id = "t-spawn-runs";
    s.stdin_data = "from-stdin\n";
    s.stdin_len = strlen(s.stdin_data);
    s.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const char *env[] = {"FOO=bar", NULL};
    s.env = env;
    static const char bin[] = {0, 1, 2, (char)0xff};
    struct sandbox_file f[2] = {{"data.bin", bin, sizeof bin, false},
                                {"tool.sh", "#!/bin/sh\n", 10, true}};
    s.files = f;
    s.nfiles = 2;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "1000 /work 000102ff\n"
                             "from-stdin ['FOO', 'HOME', 'LANG', 'PATH', 'TRACEPARENT']\n"
                             "True ['a b', '']\n");
    ASSERT(r.res.cpu_seconds > 0);
    ASSERT(r.res.memory_peak_mb > 0);
    ASSERT_EQ(strlen(r.seccomp_sha256), 64);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-spawn-runs", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
}

/* The spawner lives in a network namespace of its own with
 * tcp_child_ehash_entries set (spawner_own_netns), so a sandbox's namespace
 * has its own TCP hash table, not a share of the host's (a negative
 * tcp_ehash_entries); ours is untouched. */
TEST(sandboxes_get_their_own_tcp_hash)
{
    if (!sb_need_root())
        return;
    const char *knob = "/proc/sys/net/ipv4/tcp_child_ehash_entries";
    if (access(knob, F_OK) != 0) {
        test_skip("no net.ipv4.tcp_child_ehash_entries (kernel before 6.1)");
        return;
    }
    char before[32] = "", after[32] = "";
    FILE *f = fopen(knob, "r");
    ASSERT(f && fgets(before, sizeof before, f));
    fclose(f);
    if (!spawner_up())
        return;
    char mine[64] = "", its[64] = "", p[64];
    snprintf(p, sizeof p, "/proc/%d/ns/net", (int)spawner_pid());
    ASSERT(readlink("/proc/self/ns/net", mine, sizeof mine - 1) > 0);
    ASSERT(readlink(p, its, sizeof its - 1) > 0);
    ASSERT(strcmp(mine, its) != 0);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "cat /proc/sys/net/ipv4/tcp_ehash_entries\n");
    s.eval_id = "t-spawn-ehash";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "1024\n");
    sandbox_result_free(&r);
    f = fopen(knob, "r");
    ASSERT(f && fgets(after, sizeof after, f));
    fclose(f);
    ASSERT_STREQ(after, before);
}

/* While a sandbox runs, its init is the spawner's child, not ours. */
TEST(init_is_the_spawners_child)
{
    if (!sb_need_root() || !spawner_up())
        return;
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    int before = children_of(getpid());
    struct bg b;
    sb_spec(&b.s, "sh", "sleep 1\n");
    b.s.eval_id = "t-spawn-child";
    pthread_t th;
    pthread_create(&th, NULL, bg_run, &b);
    int seen = 0;
    for (int i = 0; i < 80 && !seen; i++) {
        usleep(10000);
        seen = children_of(sp);
    }
    int ours = children_of(getpid());
    pthread_join(th, NULL);
    ASSERT_MSG(seen >= 1, "the spawner had no child while the sandbox ran");
    ASSERT_EQ(ours, before); /* no init of ours */
    ASSERT_EQ(b.rc, 0);
    ASSERT_EQ(b.r.status, SANDBOX_COMPLETED);
    sandbox_result_free(&b.r);
}

/* p is dir or below it */
static bool under(const char *p, const char *dir)
{
    size_t l = strlen(dir);
    if (!strcmp(dir, "/"))
        return true;
    return !strncmp(p, dir, l) && (p[l] == '\0' || p[l] == '/');
}

/* The mount points in /proc/PID/mountinfo (unescaped enough for this
 * host's: no spaces). Returns how many, at most max. */
static int mount_points(pid_t pid, char (*mp)[512], int max)
{
    char p[64], line[4096];
    snprintf(p, sizeof p, "/proc/%d/mountinfo", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char point[512];
        if (sscanf(line, "%*s %*s %*s %*s %511s", point) == 1)
            snprintf(mp[n++], sizeof mp[0], "%s", point);
    }
    fclose(f);
    return n;
}

/* Every init copies the spawner's mount table, so the spawner keeps only
 * what init uses: the mounts holding the state directory, /usr and the
 * device nodes, with their ancestors, /proc with what is below it, and what
 * is below the state directory. The host's other mounts (/sys here, and on
 * container hosts hundreds of overlays) are not in it. */
TEST(the_spawner_keeps_only_the_mounts_init_needs)
{
    if (!sb_need_root() || !spawner_up())
        return;
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    static char mine[512][512], its[512][512];
    int nm = mount_points(getpid(), mine, 512), ns = mount_points(sp, its, 512);
    ASSERT(nm > 0 && ns > 0);
    struct stat a, b;
    ASSERT_EQ(stat("/proc/self/ns/mnt", &a), 0);
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/ns/mnt", (int)sp);
    ASSERT_EQ(stat(p, &b), 0);
    ASSERT_MSG(a.st_ino != b.st_ino, "the spawner is in our mount namespace");
    char sd[256];
    sandbox_state_dir_default(sd, sizeof sd);
    const char *uses[] = {sd, "/usr", "/dev/null", "/dev/urandom", "/proc"};
    bool have_proc = false, have_sys = false;
    for (int i = 0; i < ns; i++) {
        bool needed = under(its[i], "/proc") || under(its[i], sd);
        for (size_t k = 0; k < sizeof uses / sizeof uses[0]; k++)
            needed = needed || under(uses[k], its[i]);
        ASSERT_MSG(needed, "the spawner keeps %s, which init does not use", its[i]);
        have_proc = have_proc || !strcmp(its[i], "/proc");
    }
    ASSERT_MSG(have_proc, "no /proc in the spawner's mount table: init could not mount its own");
    for (int i = 0; i < nm; i++)
        have_sys = have_sys || under(mine[i], "/sys");
    if (have_sys) /* this host has /sys mounted: the spawner must have dropped it */
        ASSERT_MSG(ns < nm, "the spawner has %d mounts, the host %d", ns, nm);
    /* and the sandboxes it clones still get what they need */
    struct sandbox_spec s;
    sb_spec(&s, "sh", "cat /dev/null; head -c 4 /dev/urandom | wc -c; ls /usr/bin/python3\n");
    s.eval_id = "t-spawn-trimmed";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "4\n/usr/bin/python3\n");
    sandbox_result_free(&r);
}

/* The spawner drops mounts in a copy of the host's table, and a detach in a
 * copy whose mounts are still shared with the host's would propagate back
 * and unmount them on the host. So the copy is made a slave first. Here, in
 * this test's own mount namespace (the "host"), a tmpfs inside a shared
 * tmpfs stays mounted while the spawner drops its copies of both. */
TEST(the_spawner_drops_mounts_only_in_its_own_copy)
{
    if (!sb_need_root())
        return;
    ASSERT_EQ(unshare(CLONE_NEWNS), 0); /* this test process only */
    ASSERT_EQ(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    char dir[] = "/tmp/clearbox-shared-XXXXXX", inner[64];
    ASSERT(mkdtemp(dir) != NULL);
    ASSERT_EQ(mount("tmpfs", dir, "tmpfs", 0, "size=16k"), 0);
    ASSERT_EQ(mount(NULL, dir, NULL, MS_SHARED, NULL), 0);
    snprintf(inner, sizeof inner, "%s/in", dir);
    ASSERT_EQ(mkdir(inner, 0755), 0);
    ASSERT_EQ(mount("tmpfs", inner, "tmpfs", 0, "size=16k"), 0);
    if (!spawner_up())
        return;
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    static char mp[512][512];
    int n = mount_points(getpid(), mp, 512);
    bool here = false, there = false;
    for (int i = 0; i < n; i++)
        here = here || !strcmp(mp[i], inner);
    n = mount_points(sp, mp, 512);
    for (int i = 0; i < n; i++)
        there = there || under(mp[i], dir);
    sandbox_spawner_stop();
    umount2(dir, MNT_DETACH);
    rmdir(dir);
    ASSERT_MSG(!there, "the spawner kept mounts under %s, which init does not use", dir);
    ASSERT_MSG(here, "the spawner's detach of %s reached its parent's mount namespace", inner);
}

/* A run whose state directory is not in the spawner's view (here on
 * /dev/shm, a mount the spawner dropped) clones init itself, and works. */
TEST(a_run_the_spawner_cannot_see_clones_init_directly)
{
    if (!sb_need_root() || !spawner_up())
        return;
    struct stat st;
    if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode))
        return; /* no /dev/shm on this host */
    char sd[] = "/dev/shm/clearbox-test-XXXXXX";
    ASSERT(mkdtemp(sd) != NULL);
    ASSERT_EQ(chmod(sd, 0711), 0);
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    int before = children_of(getpid());
    struct bg b;
    sb_spec(&b.s, "sh", "sleep 0.5; echo elsewhere\n");
    b.s.eval_id = "t-spawn-elsewhere";
    b.s.state_dir = sd;
    pthread_t th;
    pthread_create(&th, NULL, bg_run, &b);
    int ours = 0, its = 0;
    for (int i = 0; i < 40 && !ours; i++) {
        usleep(10000);
        ours = children_of(getpid()) - before;
        its = children_of(sp);
    }
    pthread_join(th, NULL);
    ASSERT_EQ(b.rc, 0);
    ASSERT_EQ(b.r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(b.r.out.data, "elsewhere\n");
    ASSERT_MSG(ours >= 1 && its == 0, "init was not our own child (ours %d, the spawner's %d)",
               ours, its);
    sandbox_result_free(&b.r);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", sd);
    ASSERT_EQ(system(cmd), 0);
}

/* The program starts with no signal blocked or ignored, although this
 * process (like clearbox serve) blocks SIGTERM and ignores SIGPIPE. */
TEST(program_gets_default_signals)
{
    if (!sb_need_root() || !spawner_up())
        return;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    void (*oldpipe)(int) = signal(SIGPIPE, SIG_IGN);
    void (*oldrt)(int) = signal(SIGRTMIN + 1, SIG_IGN);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "grep -E '^Sig(Blk|Ign)' /proc/self/status\n");
    s.eval_id = "t-spawn-signals";
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, oldpipe);
    signal(SIGRTMIN + 1, oldrt);
    ASSERT_EQ(rc, 0);
    ASSERT_STREQ(r.out.data, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    sandbox_result_free(&r);
}

/* The program runs on the CPUs of the thread that asked for it, not on the
 * spawner's (the service's at start), here one CPU of two or more. */
TEST(program_gets_the_callers_cpu_mask_through_the_spawner)
{
    if (!sb_need_root() || !spawner_up())
        return;
    cpu_set_t all, one;
    ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
    if (CPU_COUNT(&all) < 2) {
        test_skip("needs two CPUs");
        return;
    }
    int last = sb_last_cpu(&all);
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    struct sandbox_spec s;
    sb_spec(&s, "sh", SB_PRINT_CPUS_SH);
    s.eval_id = "t-spawn-cpus";
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    sched_setaffinity(0, sizeof all, &all);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    char want[16];
    snprintf(want, sizeof want, "%d\n", last);
    ASSERT_STREQ(r.out.data, want);
    sandbox_result_free(&r);
}

TEST(timeout_through_the_spawner)
{
    if (!sb_need_root() || !spawner_up())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "trap '' TERM INT; while :; do sleep 1; done\n");
    s.limits.wall_timeout_ms = 300;
    s.eval_id = "t-spawn-timeout";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_TIMEOUT);
    ASSERT_EQ(r.signal, SIGKILL);
    ASSERT_MSG(r.execute_ms < 800, "timeout took %.1f ms", r.execute_ms);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-spawn-timeout", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
    /* the spawner reaps its inits: no zombie stays for long */
    pid_t sp = spawner_pid();
    int k = -1;
    for (int i = 0; i < 100 && k != 0; i++) {
        usleep(10000);
        k = children_of(sp);
    }
    ASSERT_EQ(k, 0);
}

TEST(setup_failure_through_the_spawner_fails_closed)
{
    if (!sb_need_root() || !spawner_up())
        return;
    struct sandbox_result r;
    sb_setup_failure("t-spawn-fail", &r);
    sandbox_result_free(&r);
}

TEST(concurrent_runs_through_one_spawner)
{
    if (!sb_need_root() || !spawner_up())
        return;
    struct bg b[4];
    pthread_t th[4];
    char ids[4][32];
    for (int i = 0; i < 4; i++) {
        sb_spec(&b[i].s, "sh", "echo \"$((6 * 7))\"\n");
        snprintf(ids[i], sizeof ids[i], "t-spawn-conc-%d", i);
        b[i].s.eval_id = ids[i];
        pthread_create(&th[i], NULL, bg_run, &b[i]);
    }
    /* every run ends before the first check: a failed check returns, and
     * the test process would exit under runs still going (their cgroups and
     * state directories left behind for the next run to trip over) */
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(b[i].rc, 0);
        ASSERT_EQ(b[i].r.status, SANDBOX_COMPLETED);
        ASSERT_STREQ(b[i].r.out.data, "42\n");
        sandbox_result_free(&b[i].r);
    }
}

/* A dead spawner (killed from outside) costs one failed request; the engine
 * then clones init itself, and says nothing to the caller. */
TEST(dead_spawner_falls_back_to_a_direct_clone)
{
    if (!sb_need_root() || !spawner_up())
        return;
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    ASSERT_EQ(kill(sp, SIGKILL), 0);
    int st;
    ASSERT_EQ(waitpid(sp, &st, 0), sp);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo fallback\n");
    s.eval_id = "t-spawn-fallback";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "fallback\n");
    sandbox_result_free(&r);
    sandbox_spawner_stop(); /* its socket is already closed: a no-op */
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-spawn-fallback", what, sizeof what), "left behind: %s", what);
}

TEST(stop_ends_the_spawner)
{
    if (!sb_need_root())
        return;
    char err[256];
    ASSERT_EQ(sandbox_spawner_start(err, sizeof err), 0);
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    sandbox_spawner_stop();
    ASSERT_EQ(spawner_pid(), -1);
    ASSERT(kill(sp, 0) < 0);
}

/* A spawner that stops answering (here: stopped with SIGSTOP) must not hold
 * the workers forever: after SETUP_TIMEOUT_MS (10 s) the request is given
 * up, the spawner killed, and the run goes on with a direct clone. */
TEST(stuck_spawner_is_given_up_and_the_run_goes_on)
{
    if (!sb_need_root() || !spawner_up())
        return;
    pid_t sp = spawner_pid();
    ASSERT(sp > 0);
    ASSERT_EQ(kill(sp, SIGSTOP), 0);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo after-a-stuck-spawner\n");
    s.eval_id = "t-spawn-stuck";
    struct sandbox_result r;
    char err[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_STREQ(r.out.data, "after-a-stuck-spawner\n");
    ASSERT_MSG(waited >= 9.5 && waited < 20, "gave up after %.1f s", waited);
    sandbox_result_free(&r);
    /* killed, and reaped by stop */
    sandbox_spawner_stop();
    ASSERT_EQ(spawner_pid(), -1);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-spawn-stuck", what, sizeof what), "left behind: %s", what);
}
