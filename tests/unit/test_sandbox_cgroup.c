/* test_sandbox_cgroup.c - the engine's parent cgroups on the real v1
 * hierarchies of this machine: made once per process, and made again when
 * they disappear between two runs (an operator's rmdir). Needs root. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
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

static int parents_present(void)
{
    int n = 0;
    char p[256];
    struct stat st;
    for (size_t i = 0; i < sizeof hier / sizeof hier[0]; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT, hier[i]);
        n += stat(p, &st) == 0;
    }
    return n;
}

static void parents_remove(void)
{
    char p[256];
    for (size_t i = 0; i < sizeof hier / sizeof hier[0]; i++) {
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT, hier[i]);
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
    ASSERT_MSG(made >= 3, "only %d parent cgroups made", made);
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

static long read_long(const char *hier_name, const char *id, const char *file)
{
    char p[256], b[64] = "";
    snprintf(p, sizeof p, "/sys/fs/cgroup/%s/" PARENT "/%s/%s", hier_name, id, file);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long v = fgets(b, sizeof b, f) ? strtol(b, NULL, 10) : -1;
    fclose(f);
    return v;
}

TEST(v1_limits_are_in_the_live_cgroup)
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
    long quota = -1, period = -1, mem = -1, pids = -1;
    for (int i = 0; i < 400 && quota < 0; i++) { /* until the cgroup exists */
        usleep(2000);
        quota = read_long("cpu", lr.s.eval_id, "cpu.cfs_quota_us");
    }
    period = read_long("cpu", lr.s.eval_id, "cpu.cfs_period_us");
    mem = read_long("memory", lr.s.eval_id, "memory.limit_in_bytes");
    pids = read_long("pids", lr.s.eval_id, "pids.max");
    pthread_join(t, NULL);
    ASSERT_EQ(lr.rc, 0);
    ASSERT_EQ(period, 100000);
    ASSERT_EQ(quota, 50000); /* half a core */
    ASSERT_EQ(mem, 96L << 20);
    ASSERT_EQ(pids, 17);
}
