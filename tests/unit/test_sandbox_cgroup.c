/* test_sandbox_cgroup.c - the engine's cgroups on the real hierarchies of
 * this machine, v1 or v2: the parents, made once per process and made again
 * when they disappear between two runs (an operator's rmdir); the limits in
 * the live cgroup; and on v1 the pool of stateless directories, its
 * counters, a slot a task is left in, and gc of a dead pool (the pool is
 * v1's alone). Needs root. tests/integration/cgroup_v2_vm.sh runs this on a
 * v2 kernel. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "util/buf.h"
#include "sandbox_testlib.h"
#include "test.h"

static const char *const hier[] = {"memory", "pids", "cpu", "cpuacct", "freezer", "blkio"};
#define PARENT "clearbox-test-parent"

static int run_once(const char *id)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo ok\n");
    s.eval_id = id;
    s.cgroup_parent = PARENT;
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    if (rc == 0 && (r.status != SANDBOX_COMPLETED || strcmp(r.out.data, "ok\n")))
        rc = -EPROTO;
    if (rc < 0)
        fprintf(stderr, "run %s: rc %d, %s\n", id, rc, err);
    sandbox_result_free(&r);
    return rc;
}

static bool v2(void)
{
    return strcmp(sb_cg_mode(), "v2") == 0;
}

static int parents_present(void)
{
    int n = 0;
    char p[256];
    struct stat st;
    if (v2())
        return stat("/sys/fs/cgroup/" PARENT, &st) == 0;
    for (size_t i = 0; i < sizeof hier / sizeof hier[0]; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT, hier[i]);
        n += stat(p, &st) == 0;
    }
    return n;
}

/* The parents, and any empty cgroup a failed earlier run left in them. */
static void parents_remove(void)
{
    char p[256], c[512];
    size_t nh = v2() ? 1 : sizeof hier / sizeof hier[0];
    for (size_t i = 0; i < nh; i++) {
        if (v2())
            snprintf(p, sizeof p, "/sys/fs/cgroup/" PARENT);
        else
            snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT, hier[i]);
        DIR *d = opendir(p);
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (de->d_type == DT_DIR && de->d_name[0] != '.') {
                snprintf(c, sizeof c, "%s/%s", p, de->d_name);
                rmdir(c);
            }
        if (d)
            closedir(d);
        rmdir(p);
    }
}

TEST(parent_removed_between_runs_is_made_again)
{
    if (!sb_need_root())
        return;
    parents_remove();
    ASSERT_EQ(run_once("t-cg-parent-1"), 0);
    int made = parents_present();
    ASSERT_MSG(made >= (v2() ? 1 : 3), "only %d parent cgroups made", made);
    ASSERT_EQ(run_once("t-cg-parent-2"), 0); /* remembered: no mkdir of the parent */
    parents_remove();
    ASSERT_EQ(parents_present(), 0);
    ASSERT_EQ(run_once("t-cg-parent-3"), 0); /* ENOENT: made again */
    ASSERT_EQ(parents_present(), made);
    parents_remove();
}

/* The limits are in the live v1 cgroup, in the kernel's units, while the
 * program runs (the quota relies on a new cgroup's default period). */
struct live_run {
    struct sandbox_spec s;
    int rc;
};

static void *live_run_main(void *arg)
{
    struct live_run *lr = arg;
    struct sandbox_result r;
    char err[256];
    lr->rc = sandbox_run(&lr->s, &r, err, sizeof err);
    if (lr->rc == 0)
        sandbox_result_free(&r);
    return NULL;
}

/* hier_name is ignored on v2 (one directory for every controller) */
static long read_long(const char *hier_name, const char *id, const char *file)
{
    char p[256], b[64] = "";
    if (v2())
        snprintf(p, sizeof p, "/sys/fs/cgroup/" PARENT "/%s/%s", id, file);
    else
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT "/%s/%s", hier_name, id, file);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long v = fgets(b, sizeof b, f) ? strtol(b, NULL, 10) : -1;
    fclose(f);
    return v;
}

TEST(limits_are_in_the_live_cgroup)
{
    if (!sb_need_root())
        return;
    struct live_run lr;
    sb_spec(&lr.s, "sh", "sleep 1\n");
    lr.s.eval_id = "t-cg-live-limits";
    lr.s.cgroup_parent = PARENT;
    lr.s.limits.memory_max_bytes = 96ull << 20;
    lr.s.limits.pids_max = 17;
    lr.s.limits.cpu_cores_milli = 500;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, live_run_main, &lr), 0);
    long quota = -1, period = -1, mem = -1, swap = -1, pids = -1;
    /* until the program runs (init and it in the cgroup): the limits hold
     * before the program exists */
    char procs[256];
    if (v2())
        snprintf(procs, sizeof procs, "/sys/fs/cgroup/" PARENT "/%s/cgroup.procs", lr.s.eval_id);
    else
        snprintf(procs, sizeof procs, "/sys/fs/cgroup/memory/" PARENT "/%s/cgroup.procs",
                 lr.s.eval_id);
    for (int i = 0, n = 0; i < 2000 && n < 2; i++) {
        usleep(2000);
        char line[64];
        FILE *f = fopen(procs, "r");
        for (n = 0; f && fgets(line, sizeof line, f);)
            n++;
        if (f)
            fclose(f);
    }
    quota = read_long("cpu", lr.s.eval_id, v2() ? "cpu.max" : "cpu.cfs_quota_us");
    if (v2()) { /* cpu.max is "QUOTA PERIOD" */
        char p[256], b[64] = "";
        snprintf(p, sizeof p, "/sys/fs/cgroup/" PARENT "/%s/cpu.max", lr.s.eval_id);
        FILE *f = fopen(p, "r");
        if (f && fgets(b, sizeof b, f) && strchr(b, ' '))
            period = strtol(strchr(b, ' ') + 1, NULL, 10);
        if (f)
            fclose(f);
        mem = read_long("memory", lr.s.eval_id, "memory.max");
        swap = read_long("memory", lr.s.eval_id, "memory.swap.max");
    } else {
        period = read_long("cpu", lr.s.eval_id, "cpu.cfs_period_us");
        mem = read_long("memory", lr.s.eval_id, "memory.limit_in_bytes");
        swap = read_long("memory", lr.s.eval_id, "memory.memsw.limit_in_bytes") - mem;
    }
    pids = read_long("pids", lr.s.eval_id, "pids.max");
    pthread_join(t, NULL);
    ASSERT_EQ(lr.rc, 0);
    ASSERT_EQ(period, 100000);
    ASSERT_EQ(quota, 50000); /* half a core */
    ASSERT_EQ(mem, 96L << 20);
    ASSERT_EQ(pids, 17);
    /* no swap: v2 memory.swap.max 0; v1 memsw equal to the limit (where the
     * kernel has swap accounting: without it the file is missing, -1) */
    if (v2() || swap != -1 - (96L << 20))
        ASSERT_EQ(swap, 0);
}

/* ---- the cgroup pool (cgroup.h, docs/sandbox.md "The cgroup pool") ---- */

#define POOL_SD "/run/clearbox-test-pool"
static const char *const pooled_hier[] = {"cpu", "cpuacct", "freezer", "blkio"};

static bool exists(const char *fmt, const char *a, const char *b)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, fmt, a, b);
    return stat(p, &st) == 0;
}

static void slot_name(char *out, size_t n, int k)
{
    snprintf(out, n, "pool-%d-%d", (int)getpid(), k);
}

/* rmdir the slot's directory in each pooled hierarchy; how many went. */
static size_t slot_rmdirs(const char *slot)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], slot);
        n += rmdir(p) == 0;
    }
    return n;
}

static long read_path_long(const char *fmt, const char *a, const char *b)
{
    char p[512], buf[64] = "";
    snprintf(p, sizeof p, fmt, a, b);
    FILE *f = fopen(p, "r");
    if (!f)
        return -2;
    long v = fgets(buf, sizeof buf, f) ? strtol(buf, NULL, 10) : -2;
    fclose(f);
    return v;
}

/* sh code in a pooled run under PARENT with state dir POOL_SD */
static int pool_run(const char *id, const char *code, uint64_t cores_milli,
                    struct sandbox_result *r, char *err, size_t errlen)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh", code);
    s.eval_id = id;
    s.cgroup_parent = PARENT;
    s.state_dir = POOL_SD;
    s.limits.cpu_cores_milli = cores_milli;
    return sandbox_run(&s, r, err, errlen);
}

static void pool_cleanup(void)
{
    sandbox_cgroup_pool_stop();
    parents_remove();
    if (system("rm -rf " POOL_SD) != 0) /* its root template too */
        fprintf(stderr, "could not remove %s\n", POOL_SD);
}

TEST(pool_lends_the_stateless_hierarchies_and_counts_each_run_from_zero)
{
    if (!sb_need_root() || !sb_need_cg_v1("the cgroup pool"))
        return;
    mkdir(POOL_SD, 0711);
    char err[256], slot[64];
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 1);
    /* a second pool in the same process: none */
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 0);
    slot_name(slot, sizeof slot, 1);
    /* one that burns CPU under a quota of half a core, then a short one */
    struct sandbox_result a, b;
    ASSERT_EQ(pool_run("t-cg-pool-a", "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done\n", 500,
                       &a, err, sizeof err),
              0);
    ASSERT_EQ(a.status, SANDBOX_COMPLETED);
    /* between runs: the slot is there in the four pooled hierarchies, with
     * its lock; the run's memory and pids cgroups are gone */
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++)
        ASSERT_MSG(exists("/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], slot),
                   "no %s in %s", slot, pooled_hier[i]);
    ASSERT(exists(POOL_SD "/%s%s", slot, ".lock"));
    ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "memory", slot));
    ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "memory", "t-cg-pool-a"));
    ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "pids", "t-cg-pool-a"));
    ASSERT_EQ(read_path_long("/sys/fs/cgroup/%s/" PARENT "/%s/cpu.cfs_quota_us", "cpu", slot),
              50000);
    ASSERT_EQ(pool_run("t-cg-pool-b", "echo ok\n", 2000, &b, err, sizeof err), 0);
    ASSERT_EQ(b.status, SANDBOX_COMPLETED);
    /* the same slot again, with the second run's quota (two cores) */
    ASSERT_EQ(read_path_long("/sys/fs/cgroup/%s/" PARENT "/%s/cpu.cfs_quota_us", "cpu", slot),
              200000);
    slot_name(slot, sizeof slot, 2);
    ASSERT_MSG(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot),
               "a second slot for sequential runs");
    /* the CPU of each run alone: the first run's does not carry over */
    ASSERT_MSG(a.res.cpu_seconds > 0.05, "a: %.3f s", a.res.cpu_seconds);
    ASSERT_MSG(b.res.cpu_seconds > 0 && b.res.cpu_seconds < a.res.cpu_seconds / 2,
               "b: %.3f s after a: %.3f s", b.res.cpu_seconds, a.res.cpu_seconds);
    ASSERT_MSG(b.res.cpu_user_seconds + b.res.cpu_system_seconds < a.res.cpu_seconds / 2,
               "b: user %.3f + system %.3f s", b.res.cpu_user_seconds, b.res.cpu_system_seconds);
    ASSERT_EQ(b.res.io_read_bytes, 0);
    sandbox_result_free(&a);
    sandbox_result_free(&b);
    /* stopped: nothing of the pool is left */
    sandbox_cgroup_pool_stop();
    slot_name(slot, sizeof slot, 1);
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++)
        ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], slot));
    ASSERT(!exists(POOL_SD "/%s%s", slot, ".lock"));
    /* and runs make their own directories again */
    struct sandbox_result c;
    ASSERT_EQ(pool_run("t-cg-pool-c", "echo ok\n", 0, &c, err, sizeof err), 0);
    sandbox_result_free(&c);
    slot_name(slot, sizeof slot, 2);
    ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot));
    pool_cleanup();
}

/* A task that is still in a pooled cgroup when the run ends (here a host
 * process the test puts there while the program runs, as if it had escaped
 * the sandbox's pid namespace) must never be lent to the next evaluation:
 * the slot is dropped, the run reports the failed teardown, the next run
 * gets a new slot. */
struct pooled_sleeper {
    pid_t pid;
    char slot[64];
    bool moved;
};

static void *move_in_main(void *arg)
{
    struct pooled_sleeper *ps = arg;
    char p[512], v[32];
    snprintf(p, sizeof p, "/sys/fs/cgroup/freezer/" PARENT "/%s/cgroup.procs", ps->slot);
    snprintf(v, sizeof v, "%d", (int)ps->pid);
    for (int i = 0; i < 500 && !ps->moved; i++) { /* until the slot exists */
        FILE *f = fopen(p, "w");
        if (f) {
            ps->moved = fputs(v, f) >= 0;
            ps->moved &= fclose(f) == 0;
        } else {
            usleep(1000);
        }
    }
    return NULL;
}

TEST(pool_never_lends_a_slot_a_task_is_left_in)
{
    if (!sb_need_root() || !sb_need_cg_v1("the cgroup pool"))
        return;
    mkdir(POOL_SD, 0711);
    char err[256];
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 1);
    struct pooled_sleeper ps = {0};
    slot_name(ps.slot, sizeof ps.slot, 1);
    ps.pid = fork();
    ASSERT(ps.pid >= 0);
    if (ps.pid == 0) {
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, move_in_main, &ps), 0);
    struct sandbox_result a;
    int rc = pool_run("t-cg-pool-left", "sleep 0.3\n", 0, &a, err, sizeof err);
    pthread_join(t, NULL);
    ASSERT(ps.moved);
    ASSERT_MSG(rc < 0 && strstr(err, ps.slot), "rc %d: %s", rc, err);
    sandbox_result_free(&a);
    /* the slot's directory stays (the task is in it) and so does its lock
     * file, for gc; the next run gets a new slot */
    ASSERT(exists("/sys/fs/cgroup/%s/" PARENT "/%s", "freezer", ps.slot));
    ASSERT(exists(POOL_SD "/%s%s", ps.slot, ".lock"));
    struct sandbox_result b;
    ASSERT_EQ(pool_run("t-cg-pool-next", "echo ok\n", 0, &b, err, sizeof err), 0);
    ASSERT_EQ(b.status, SANDBOX_COMPLETED);
    sandbox_result_free(&b);
    char second[64];
    slot_name(second, sizeof second, 2);
    ASSERT(exists("/sys/fs/cgroup/%s/" PARENT "/%s", "freezer", second));
    kill(ps.pid, SIGKILL);
    waitpid(ps.pid, NULL, 0);
    slot_rmdirs(ps.slot);
    char p[512];
    snprintf(p, sizeof p, POOL_SD "/%s.lock", ps.slot);
    unlink(p);
    pool_cleanup();
}

/* gc removes the slots of a pool whose process died (their lock is free),
 * at once even when they are young (a service restarted after a crash),
 * and leaves a live pool's alone even when it is old, also when asked about
 * another state directory (then the owner's pid decides). */
static void backdate(const char *fmt, const char *a, const char *b)
{
    char p[512];
    snprintf(p, sizeof p, fmt, a, b);
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
}

TEST(gc_removes_a_dead_pool_and_leaves_a_live_one)
{
    if (!sb_need_root() || !sb_need_cg_v1("the cgroup pool"))
        return;
    mkdir(POOL_SD, 0711);
    char err[256], live[64];
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 1);
    struct sandbox_result r;
    ASSERT_EQ(pool_run("t-cg-pool-gc", "echo ok\n", 0, &r, err, sizeof err), 0);
    sandbox_result_free(&r);
    slot_name(live, sizeof live, 1);
    /* a dead process's slot (no process has pid 2147483646); its lock is free */
    const char *dead = "pool-2147483646-1";
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], dead);
        ASSERT_EQ(mkdir(p, 0755), 0); /* young: made just now */
        backdate("/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], live);
    }
    char p[512];
    snprintf(p, sizeof p, POOL_SD "/%s.lock", dead);
    FILE *f = fopen(p, "w");
    ASSERT(f != NULL);
    fclose(f);
    backdate(POOL_SD "/%s%s", live, ".lock");
    /* asked about another state directory first: the live slot's owner
     * (us) is alive, the dead one's is not */
    struct buf rep;
    buf_init(&rep, NULL, 0, 1 << 16);
    ASSERT(sandbox_gc("/run/clearbox-test-pool-other", PARENT, &rep, err, sizeof err) >= 0);
    ASSERT(exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", live));
    ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", dead));
    rmdir("/run/clearbox-test-pool-other");
    /* the dead one's state directory is in ours */
    ASSERT(sandbox_gc(POOL_SD, PARENT, &rep, err, sizeof err) >= 0);
    ASSERT(!exists(POOL_SD "/%s%s", dead, ".lock"));
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++)
        ASSERT_MSG(exists("/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], live),
                   "gc removed the live slot in %s: %s", pooled_hier[i], rep.data ? rep.data : "");
    ASSERT(exists(POOL_SD "/%s%s", live, ".lock"));
    buf_free(&rep);
    /* still lent out and used */
    ASSERT_EQ(pool_run("t-cg-pool-gc2", "echo ok\n", 0, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    sandbox_result_free(&r);
    pool_cleanup();
}

/* A slot removed from outside while it waits in the pool (an operator, or
 * the gc of an older clearbox that does not know lock files) is dropped as
 * it is lent: the next run gets a new one and completes. */
TEST(pool_drops_a_slot_removed_from_outside)
{
    if (!sb_need_root() || !sb_need_cg_v1("the cgroup pool"))
        return;
    mkdir(POOL_SD, 0711);
    char err[256], slot[64];
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 1);
    struct sandbox_result r;
    ASSERT_EQ(pool_run("t-cg-pool-rm1", "echo ok\n", 0, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    sandbox_result_free(&r);
    slot_name(slot, sizeof slot, 1);
    ASSERT_EQ(slot_rmdirs(slot), sizeof pooled_hier / sizeof pooled_hier[0]);
    int rc = pool_run("t-cg-pool-rm2", "echo ok\n", 0, &r, err, sizeof err);
    ASSERT_MSG(rc == 0 && r.status == SANDBOX_COMPLETED, "rc %d: %s", rc, err);
    sandbox_result_free(&r);
    ASSERT(!exists(POOL_SD "/%s%s", slot, ".lock"));
    slot_name(slot, sizeof slot, 2);
    ASSERT(exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot));
    pool_cleanup();
}

/* A pool stopped while a run holds a slot (a worker pool stops only once
 * its workers are done; this is the order the engine must survive anyway):
 * the free slots go at once, the lent one when its run returns it, and the
 * run itself completes. */
struct pool_bg_run {
    struct sandbox_result r;
    char err[256];
    int rc;
};

static void *pool_bg_main(void *arg)
{
    struct pool_bg_run *b = arg;
    b->rc = pool_run("t-cg-pool-stop-lent", "sleep 0.3\n", 0, &b->r, b->err, sizeof b->err);
    return NULL;
}

TEST(pool_stopped_while_a_slot_is_lent_removes_it_when_it_comes_back)
{
    if (!sb_need_root() || !sb_need_cg_v1("the cgroup pool"))
        return;
    mkdir(POOL_SD, 0711);
    char err[256], slot[64];
    ASSERT_EQ(sandbox_cgroup_pool_start(POOL_SD, PARENT, err, sizeof err), 1);
    slot_name(slot, sizeof slot, 1);
    struct pool_bg_run b = {.rc = -1};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, pool_bg_main, &b), 0);
    for (int i = 0; i < 500 && !exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot); i++)
        usleep(1000);
    bool lent = exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot);
    sandbox_cgroup_pool_stop();
    bool kept_while_lent = exists("/sys/fs/cgroup/%s/" PARENT "/%s", "cpuacct", slot);
    pthread_join(t, NULL);
    ASSERT(lent);
    ASSERT(kept_while_lent);
    ASSERT_MSG(b.rc == 0 && b.r.status == SANDBOX_COMPLETED, "rc %d: %s", b.rc, b.err);
    sandbox_result_free(&b.r);
    for (size_t i = 0; i < sizeof pooled_hier / sizeof pooled_hier[0]; i++)
        ASSERT(!exists("/sys/fs/cgroup/%s/" PARENT "/%s", pooled_hier[i], slot));
    ASSERT(!exists(POOL_SD "/%s%s", slot, ".lock"));
    pool_cleanup();
}
