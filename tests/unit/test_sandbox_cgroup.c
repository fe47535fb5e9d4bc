/* test_sandbox_cgroup.c - the engine's parent cgroups on the real v1
 * hierarchies of this machine: made once per process, and made again when
 * they disappear between two runs (an operator's rmdir). Needs root. */
#include <errno.h>
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
