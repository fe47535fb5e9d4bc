/* test_sandbox.c - the sandbox engine against real namespaces, cgroups and
 * seccomp (needs root), plus the cgroup parsers and the v2 code paths
 * against a recorded v2 file tree (this machine runs cgroup v1; those tests
 * are named *_v2_recorded). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "sandbox/sandbox.h"
#include "sandbox_testlib.h"
#include "telemetry/metrics.h"
#include "telemetry/telemetry.h"
#include "test.h"
#include "util/buf.h"

static json_t *result_doc(const struct sandbox_result *r)
{
    struct buf b;
    buf_init(&b, NULL, 0, 16 << 20);
    if (sandbox_result_json(r, &b) < 0)
        return NULL;
    json_error_t je;
    json_t *d = json_loadb(b.data, b.len, 0, &je);
    buf_free(&b);
    return d;
}

/* ---- parsers and recorded v2 tree ------------------------------------- */

TEST(parse_keyed_files)
{
    int64_t v = -1;
    const char *events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 3\noom_group_kill 0\n";
    ASSERT_EQ(cgroup_parse_keyed(events, "oom_kill", &v), 0);
    ASSERT_EQ(v, 3);
    ASSERT_EQ(cgroup_parse_keyed(events, "oom", &v), 0);
    ASSERT_EQ(v, 1); /* "oom" must not match "oom_kill" */
    ASSERT_EQ(cgroup_parse_keyed(events, "absent", &v), -ENOENT);
    const char *oomc = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
    ASSERT_EQ(cgroup_parse_keyed(oomc, "oom_kill", &v), 0);
    ASSERT_EQ(v, 7);
}

TEST(parse_io_files)
{
    int64_t r = 0, w = 0;
    const char *iostat =
        "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n"
        "8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=0 dios=0\n";
    ASSERT_EQ(cgroup_parse_io_stat(iostat, &r, &w), 0);
    ASSERT_EQ(r, 1459200 + 90430464);
    ASSERT_EQ(w, 314773504 + 299008000);
    const char *blkio = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n";
    ASSERT_EQ(cgroup_parse_blkio(blkio, &r, &w), 0);
    ASSERT_EQ(r, 4096);
    ASSERT_EQ(w, 8192);
}

static void put(const char *dir, const char *file, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void get(const char *dir, const char *file, char *out, size_t n)
{
    out[0] = '\0';
    cgroup_read_file(dir, file, out, n);
}

/* Recorded from a cgroup v2 host (Debian 12, systemd): the root of the
 * unified hierarchy offers these controllers. */
TEST(detect_v2_recorded)
{
    char p[512];
    const char *t = test_tmpdir();
    snprintf(p, sizeof p, "%s/unified", t);
    mkdir(p, 0755);
    put(p, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    struct cgroup_mounts m;
    ASSERT_EQ(cgroup_mounts_detect(&m, t, NULL, 0), 0);
    ASSERT_EQ(m.mode, CGROUP_V2);
    /* an empty v2 hierarchy beside v1 controllers (this machine) is v1 */
    put(p, "cgroup.controllers", "\n");
    snprintf(p, sizeof p, "%s/memory", t);
    mkdir(p, 0755);
    ASSERT_EQ(cgroup_mounts_detect(&m, t, NULL, 0), 0);
    ASSERT_EQ(m.mode, CGROUP_V1);
    /* nothing usable: none */
    rmdir(p);
    ASSERT_EQ(cgroup_mounts_detect(&m, t, NULL, 0), 0);
    ASSERT_EQ(m.mode, CGROUP_NONE);
}

TEST(create_v2_recorded_fails_closed)
{
    char p[512];
    const char *t = test_tmpdir();
    snprintf(p, sizeof p, "%s/unified", t);
    mkdir(p, 0755);
    put(p, "cgroup.controllers", "cpu io memory pids\n");
    put(p, "cgroup.subtree_control", "");
    snprintf(p, sizeof p, "%s/unified/cb", t);
    mkdir(p, 0755);
    put(p, "cgroup.subtree_control", "");
    struct cgroup_mounts m;
    ASSERT_EQ(cgroup_mounts_detect(&m, t, NULL, 0), 0);
    ASSERT_EQ(m.mode, CGROUP_V2);
    /* a plain directory has no memory.max for the kernel to take: refuse, leave nothing */
    struct cgroup cg;
    struct cgroup_limits lim = {256u << 20, 64, 1500};
    char err[256];
    ASSERT(cgroup_create(&cg, &m, "cb", "e1", &lim, err, sizeof err) < 0);
    ASSERT_CONTAINS(err, "memory.max");
    struct stat st;
    snprintf(p, sizeof p, "%s/unified/cb/e1", t);
    ASSERT_MSG(stat(p, &st) < 0, "the failed create left %s", p);
    char sc[64];
    snprintf(p, sizeof p, "%s/unified/cb", t);
    get(p, "cgroup.subtree_control", sc, sizeof sc);
    ASSERT_CONTAINS(sc, "+"); /* it enabled controllers for its subtree */
}

TEST(limits_and_accounting_v2_recorded)
{
    /* interface files as a v2 kernel shows them in a fresh cgroup, then as
     * they read after a run (recorded from a v2 host) */
    const char *d = test_tmpdir();
    put(d, "memory.max", "max\n");
    put(d, "memory.swap.max", "max\n");
    put(d, "pids.max", "max\n");
    put(d, "cpu.max", "max 100000\n");
    put(d, "memory.peak", "0\n");
    put(d, "pids.peak", "0\n");
    struct cgroup cg;
    memset(&cg, 0, sizeof cg);
    cg.mode = CGROUP_V2;
    snprintf(cg.dir[0], sizeof cg.dir[0], "%s", d);
    cg.u.memory_peak = cg.u.pids_peak = -1;
    cg.last_memory = -1;
    struct cgroup_limits lim = {256u << 20, 64, 1500};
    char err[256], b[128];
    ASSERT_EQ(cgroup_v2_apply(&cg, &lim, err, sizeof err), 0);
    get(d, "memory.max", b, sizeof b);
    ASSERT_STREQ(b, "268435456");
    get(d, "memory.swap.max", b, sizeof b);
    ASSERT_STREQ(b, "0");
    get(d, "pids.max", b, sizeof b);
    ASSERT_STREQ(b, "64");
    get(d, "cpu.max", b, sizeof b);
    ASSERT_STREQ(b, "150000 100000");
    ASSERT(cg.swap_limited && cg.peak_native && cg.pids_peak_native);
    /* after a run */
    put(d, "memory.current", "10485760\n");
    put(d, "pids.current", "3\n");
    put(d, "cpu.stat", "usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\nnr_periods 0\n");
    put(d, "memory.peak", "33554432\n");
    put(d, "pids.peak", "7\n");
    put(d, "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n");
    put(d, "pids.events", "max 2\n");
    put(d, "io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
    ASSERT_EQ(cgroup_sample(&cg, 1000000000ull), 0);
    ASSERT_EQ(cgroup_sample(&cg, 2000000000ull), 0);
    ASSERT_EQ(cgroup_finish(&cg, 2000000000ull), 0);
    ASSERT_EQ(cg.u.cpu_total_ns, 250000000);
    ASSERT_EQ(cg.u.cpu_user_ns, 200000000);
    ASSERT_EQ(cg.u.cpu_system_ns, 50000000);
    ASSERT_EQ(cg.u.memory_peak, 33554432);
    ASSERT_EQ(cg.u.pids_peak, 7);
    ASSERT_EQ(cg.u.oom_kills, 1);
    ASSERT_EQ(cg.u.pids_max_hits, 2);
    ASSERT_EQ(cg.u.io_read_bytes, 4096);
    ASSERT_EQ(cg.u.io_write_bytes, 8192);
    /* 10 MiB held for one second between the two samples = 10 MB-s */
    ASSERT_MSG(cg.u.memory_mb_seconds > 9.99 && cg.u.memory_mb_seconds < 10.01, "%f",
               cg.u.memory_mb_seconds);
}

/* The v2 kill path against a recorded tree. What is real: our writes and
 * reads, and the SIGKILL a listed task gets. What a v2 kernel would do on
 * its own (kill on "1" in cgroup.kill, flip "populated") cannot happen in a
 * plain directory, so the test checks the request and the loud timeout
 * instead of pretending to be the kernel. */
static struct cgroup recorded_v2(const char *d)
{
    struct cgroup cg;
    memset(&cg, 0, sizeof cg);
    cg.mode = CGROUP_V2;
    cg.made[0] = true;
    snprintf(cg.dir[0], sizeof cg.dir[0], "%s", d);
    return cg;
}

TEST(kill_empty_cgroup_is_a_no_op_v2_recorded)
{
    const char *d = test_tmpdir();
    put(d, "cgroup.events", "populated 0\nfrozen 0\n");
    put(d, "cgroup.kill", "");
    put(d, "cgroup.procs", "");
    struct cgroup cg = recorded_v2(d);
    char err[256], b[16];
    ASSERT(!cgroup_populated(&cg));
    ASSERT_EQ(cgroup_kill(&cg, 1000, err, sizeof err), 0);
    get(d, "cgroup.kill", b, sizeof b);
    ASSERT_STREQ(b, ""); /* nothing to kill: not even the request */
}

TEST(kill_requests_cgroup_kill_and_fails_loudly_v2_recorded)
{
    const char *d = test_tmpdir();
    pid_t child = fork();
    ASSERT(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    char procs[32], b[256];
    snprintf(procs, sizeof procs, "%d\n", (int)child);
    put(d, "cgroup.events", "populated 1\nfrozen 0\n");
    put(d, "cgroup.kill", "");
    put(d, "cgroup.procs", procs);
    struct cgroup cg = recorded_v2(d);
    ASSERT(cgroup_populated(&cg));
    char err[256];
    /* the kernel would empty it; a recorded tree stays "populated 1" */
    ASSERT_EQ(cgroup_kill(&cg, 50, err, sizeof err), -EBUSY);
    ASSERT_CONTAINS(err, "still has tasks");
    get(d, "cgroup.kill", b, sizeof b);
    ASSERT_STREQ(b, "1"); /* the v2 request was made */
    int st;
    ASSERT_EQ(waitpid(child, &st, 0), child); /* and the listed task got SIGKILL */
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ---- the engine, for real --------------------------------------------- */

TEST(runs_python_and_reports)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "python",
            "import os,sys\nprint('hi', os.getuid(), os.getcwd())\nsys.stderr.write('e')\n"
            "print(sorted(k for k in os.environ))\n");
    s.eval_id = "t-runs-python";
    s.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const char *env[] = {"FOO=bar", NULL};
    s.env = env;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_STREQ(sandbox_status_name(r.status), "completed");
    ASSERT_EQ(r.exit_code, 0);
    ASSERT_CONTAINS(r.out.data, "hi 1000 /work");
    ASSERT_CONTAINS(r.out.data, "['FOO', 'HOME', 'LANG', 'PATH', 'TRACEPARENT']");
    ASSERT_STREQ(r.err.data, "e");
    ASSERT(r.res.cpu_seconds > 0);
    ASSERT(r.res.memory_peak_mb > 0);
    ASSERT(r.res.pids_peak >= 1);
    ASSERT(r.res.estimated_cost_cents > 0);
    ASSERT_STREQ(r.cgroup_mode, sb_cg_mode());
    ASSERT_EQ(strlen(r.seccomp_sha256), 64);
    ASSERT_STREQ(r.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    json_t *d = result_doc(&r);
    ASSERT(d);
    static const char *const keys[] = {"eval_id",         "status",           "error",
                                       "exit_code",       "signal",           "stdout",
                                       "stderr",          "stdout_truncated", "stderr_truncated",
                                       "duration_ms",     "phases",           "resources",
                                       "security_events", "trace_id",         "policy"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ASSERT_MSG(json_object_get(d, keys[i]), "result lacks %s", keys[i]);
    static const char *const rk[] = {
        "cpu_seconds",    "cpu_user_seconds", "cpu_system_seconds",  "memory_mb_seconds",
        "memory_peak_mb", "wall_seconds",     "pids_peak",           "io_read_bytes",
        "io_write_bytes", "container_count",  "estimated_cost_cents"};
    json_t *res = json_object_get(d, "resources");
    for (size_t i = 0; i < sizeof rk / sizeof rk[0]; i++)
        ASSERT_MSG(json_object_get(res, rk[i]), "resources lacks %s", rk[i]);
    json_decref(d);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-runs-python", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
}

/* init is sent to another CPU than its parent's while the sandbox is set up
 * (native.c spread_cpus) and takes the caller's mask back: the program gets
 * exactly the CPUs its caller may use, all of them or one. */
TEST(program_gets_the_callers_cpu_mask)
{
    if (!sb_need_root())
        return;
    cpu_set_t all, one;
    ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
    char want_all[64] = "", want_one[64];
    int first = -1, last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all)) {
            if (first < 0)
                first = c;
            last = c;
        }
    if (CPU_COUNT(&all) == last - first + 1)
        snprintf(want_all, sizeof want_all, first == last ? "%d" : "%d-%d", first, last);
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    snprintf(want_one, sizeof want_one, "%d", last);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
        struct sandbox_spec s;
        sb_spec(&s, "sh", SB_PRINT_CPUS_SH);
        s.eval_id = pass ? "t-cpus-one" : "t-cpus-all";
        struct sandbox_result r;
        char err[256];
        ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
        ASSERT_EQ(r.status, SANDBOX_COMPLETED);
        r.out.data[strcspn(r.out.data, "\n")] = '\0';
        if (pass == 1)
            ASSERT_STREQ(r.out.data, want_one);
        else if (want_all[0]) /* a contiguous set: its list is first-last */
            ASSERT_STREQ(r.out.data, want_all);
        sandbox_result_free(&r);
    }
    sched_setaffinity(0, sizeof all, &all);
}

/* The host's root, on which init pivots, is detached before the program
 * runs: `..` from a top-level directory is the sandbox's own root (while the
 * old root sits on the new one, `..` steps into it), and the mount table
 * holds only the sandbox's mounts, none of the host's. */
TEST(the_old_root_is_gone_before_the_program_runs)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh",
            "for d in / /usr/.. /proc/.. /work/.. /tmp/.. /dev/..; do stat -c '%d:%i' $d; done "
            "| sort -u | wc -l\n"
            "cut -d' ' -f5 /proc/self/mountinfo | grep -c -v -x -E "
            "'/|/usr|/dev/(null|zero|full|random|urandom)|/work|/tmp|/proc|/proc/sys'\n"
            "cut -d' ' -f5 /proc/self/mountinfo | grep -c -x /\n");
    s.eval_id = "t-old-root";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    /* one directory behind every "..", no mount point of the host's, one root */
    ASSERT_STREQ(r.out.data, "1\n0\n1\n");
    sandbox_result_free(&r);
}

TEST(exit_code_stdin_and_files)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "read line; cat data.txt; echo \" $line\"; exit 7\n");
    s.stdin_data = "from-stdin\n";
    s.stdin_len = strlen(s.stdin_data);
    struct sandbox_file f = {"data.txt", "file-content", 12, false};
    s.files = &f;
    s.nfiles = 1;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_EQ(r.exit_code, 7);
    ASSERT_STREQ(r.out.data, "file-content from-stdin\n");
    sandbox_result_free(&r);
}

TEST(timeout_kills_quickly)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "trap '' TERM INT; while :; do sleep 1; done\n");
    s.limits.wall_timeout_ms = 300;
    s.eval_id = "t-timeout";
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_TIMEOUT);
    ASSERT_EQ(r.signal, SIGKILL);
    ASSERT_EQ(r.exit_code, -1);
    ASSERT_MSG(r.execute_ms < 800, "timeout took %.1f ms", r.execute_ms);
    ASSERT(r.nevents >= 1);
    ASSERT_STREQ(r.events[0].reason, "timeout");
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-timeout", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
}

static volatile sig_atomic_t cancel_flag;
static void *cancel_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 300000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    cancel_flag = 1;
    return NULL;
}

TEST(cancel_gives_killed)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "sleep 30\n");
    s.cancel = &cancel_flag;
    s.eval_id = "t-cancel";
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, NULL);
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    pthread_join(th, NULL);
    ASSERT_EQ(r.status, SANDBOX_KILLED);
    ASSERT_MSG(r.execute_ms > 250 && r.execute_ms < 2000, "killed after %.1f ms", r.execute_ms);
    char what[512];
    ASSERT_MSG(!sb_leftovers("t-cancel", what, sizeof what), "left behind: %s", what);
    sandbox_result_free(&r);
}

TEST(output_limit_keeps_first_bytes)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "python",
            "import sys\nsys.stdout.write('A'*1000)\nsys.stdout.flush()\n"
            "while True: sys.stdout.write('B'*65536)\n");
    s.limits.output_max_bytes = 4096;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_OUTPUT_LIMIT);
    ASSERT(r.out_truncated);
    ASSERT_EQ(r.out.len, 4096);
    ASSERT_EQ(r.out.data[0], 'A');
    ASSERT_EQ(r.out.data[999], 'A');
    ASSERT_EQ(r.out.data[1000], 'B');
    ASSERT_MSG(r.execute_ms < 1000, "a flood took %.1f ms to stop", r.execute_ms);
    sandbox_result_free(&r);
}

TEST(invalid_utf8_output_stays_json)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh", "printf 'ok\\377\\376\\n'\n");
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    json_t *d = result_doc(&r);
    ASSERT(d);
    ASSERT_STREQ(json_string_value(json_object_get(d, "stdout")), "ok\xEF\xBF\xBD\xEF\xBF\xBD\n");
    json_decref(d);
    sandbox_result_free(&r);
}

TEST(memory_and_pids_limits)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "python", "a=[]\nwhile True: a.append(bytearray(8<<20))\n");
    s.limits.memory_max_bytes = 64u << 20;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_MEMORY_LIMIT);
    ASSERT(r.res.memory_peak_mb > 50 && r.res.memory_peak_mb <= 64.5);
    sandbox_result_free(&r);
    sb_spec(&s, "sh", "i=0; while [ $i -lt 50 ]; do sleep 5 & i=$((i+1)); done; wait\n");
    s.limits.pids_max = 10;
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.status, SANDBOX_PIDS_LIMIT);
    ASSERT(r.res.pids_peak >= 9 && r.res.pids_peak <= 10);
    sandbox_result_free(&r);
}

TEST(setup_failure_fails_closed)
{
    if (!sb_need_root())
        return;
    struct sandbox_result r;
    sb_setup_failure("t-fail-closed", &r);
    if (test__failed())
        return;
    json_t *d = result_doc(&r);
    ASSERT(d);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(d, "error"), "reason")),
                 "sandbox_setup_failed");
    json_decref(d);
    sandbox_result_free(&r);
    /* bad eval id: refused before anything is made */
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo never\n");
    s.eval_id = "../../etc";
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), -EINVAL);
    sandbox_result_free(&r);
}

TEST(output_dir_copies_files_not_links)
{
    if (!sb_need_root())
        return;
    struct sandbox_spec s;
    sb_spec(&s, "sh",
            "echo data > a.txt; mkdir d; echo x > d/b; ln -s /etc/passwd link; mkfifo fifo\n");
    char out[512];
    snprintf(out, sizeof out, "%s/out", test_tmpdir());
    s.output_dir = out;
    struct sandbox_result r;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    ASSERT_EQ(r.exit_code, 0);
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/a.txt", out);
    ASSERT_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/d/b", out);
    ASSERT_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/link", out);
    ASSERT(lstat(p, &st) < 0);
    snprintf(p, sizeof p, "%s/fifo", out);
    ASSERT(lstat(p, &st) < 0);
    sandbox_result_free(&r);
}

/* Node lock files of services that did not stop cleanly go; a held one (a
 * live service) and files that only look alike stay. */
TEST(gc_removes_stale_node_locks_keeps_held_ones)
{
    char sd[512], p[600];
    snprintf(sd, sizeof sd, "%s/state-nodelocks", test_tmpdir());
    ASSERT_EQ(mkdir(sd, 0711), 0);
    snprintf(p, sizeof p, "%s/node-crashed.lock", sd);
    int stale = open(p, O_RDWR | O_CREAT, 0600);
    ASSERT(stale >= 0);
    close(stale); /* its holder is gone */
    snprintf(p, sizeof p, "%s/node-live.lock", sd);
    int live = open(p, O_RDWR | O_CREAT, 0600);
    ASSERT(live >= 0);
    ASSERT_EQ(flock(live, LOCK_EX), 0); /* another open file: gc's flock conflicts */
    snprintf(p, sizeof p, "%s/node-dir.lock", sd);
    ASSERT_EQ(mkdir(p, 0700), 0); /* not a regular file */
    snprintf(p, sizeof p, "%s/notes.lock", sd);
    close(open(p, O_RDWR | O_CREAT, 0600)); /* not a node lock */
    struct buf rep;
    buf_init(&rep, NULL, 0, 1 << 20);
    char err[256];
    ASSERT(sandbox_gc(sd, "clearbox-test-no-such-parent", &rep, err, sizeof err) >= 0);
    ASSERT_CONTAINS(rep.data ? rep.data : "", "removed stale node lock");
    ASSERT_CONTAINS(rep.data ? rep.data : "", "node-crashed.lock");
    struct stat st;
    snprintf(p, sizeof p, "%s/node-crashed.lock", sd);
    ASSERT(stat(p, &st) < 0 && errno == ENOENT);
    snprintf(p, sizeof p, "%s/node-live.lock", sd);
    ASSERT_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/node-dir.lock", sd);
    ASSERT_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/notes.lock", sd);
    ASSERT_EQ(stat(p, &st), 0);
    buf_free(&rep);
    close(live);
}

TEST(gc_removes_stale_keeps_live)
{
    if (!sb_need_root())
        return;
    char sd[512], p[600], cgd[256], stale[300], busy[300];
    snprintf(sd, sizeof sd, "%s/state", test_tmpdir());
    snprintf(cgd, sizeof cgd, "%s/clearbox", sb_cg_pids_root());
    snprintf(stale, sizeof stale, "%s/stale1", cgd);
    snprintf(busy, sizeof busy, "%s/busy1", cgd);
    mkdir(sd, 0711);
    /* a stale run: state dir with a mounted workspace, and a cgroup */
    snprintf(p, sizeof p, "%s/stale1", sd);
    mkdir(p, 0711);
    snprintf(p, sizeof p, "%s/stale1/ws", sd);
    mkdir(p, 0700);
    ASSERT_EQ(mount("tmpfs", p, "tmpfs", 0, "size=1m"), 0);
    mkdir(cgd, 0755);
    ASSERT_EQ(mkdir(stale, 0755), 0);
    /* old enough to be a crashed run, not one starting up */
    struct timespec old[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    snprintf(p, sizeof p, "%s/stale1", sd);
    ASSERT_EQ(utimensat(AT_FDCWD, p, old, 0), 0);
    ASSERT_EQ(utimensat(AT_FDCWD, stale, old, 0), 0);
    /* a populated, unlocked cgroup (a live run with another state dir) stays */
    pid_t sleeper = fork();
    if (sleeper == 0) {
        pause();
        _exit(0);
    }
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)sleeper);
    ASSERT_EQ(mkdir(busy, 0755), 0);
    ASSERT_EQ(cgroup_write_file(busy, "cgroup.procs", pidtxt), 0);
    ASSERT_EQ(utimensat(AT_FDCWD, busy, old, 0), 0);
    /* a young one (a run starting up) stays */
    snprintf(p, sizeof p, "%s/young1", sd);
    mkdir(p, 0711);
    /* a live run: its lock is held */
    snprintf(p, sizeof p, "%s/live1", sd);
    mkdir(p, 0711);
    snprintf(p, sizeof p, "%s/live1/lock", sd);
    int lfd = open(p, O_RDWR | O_CREAT, 0600);
    ASSERT(lfd >= 0);
    ASSERT_EQ(flock(lfd, LOCK_EX), 0);
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 16);
    char err[256];
    int n = sandbox_gc(sd, NULL, &b, err, sizeof err);
    ASSERT_MSG(n >= 2, "gc removed %d: %s", n, b.data ? b.data : "");
    ASSERT_CONTAINS(b.data, "stale1");
    struct stat st;
    snprintf(p, sizeof p, "%s/stale1", sd);
    ASSERT(stat(p, &st) < 0);
    ASSERT(stat(stale, &st) < 0);
    snprintf(p, sizeof p, "%s/live1", sd);
    ASSERT_EQ(stat(p, &st), 0);
    snprintf(p, sizeof p, "%s/young1", sd);
    ASSERT_EQ(stat(p, &st), 0);
    bool busy_kept = stat(busy, &st) == 0;
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    rmdir(busy);
    ASSERT_MSG(busy_kept, "gc removed a populated cgroup");
    close(lfd);
    buf_free(&b);
}

/* A run whose owner died in the middle of teardown's freeze/kill/thaw leaves
 * its tasks frozen (PDEATHSIG cannot reach them), populated in every v1
 * hierarchy. gc must thaw and kill them and remove every cgroup of the run in
 * one pass, though populated cgroups are otherwise left alone for a day. */
/* Without --output-dir a run leaves only <sd>/<id>.lock on the host: a held
 * one keeps the run's cgroup, an old one nobody holds goes with its cgroup,
 * a young one stays (a run starting up). */
TEST(gc_judges_runs_by_their_lock_files)
{
    if (!sb_need_root())
        return;
    char sd[512], p[600];
    snprintf(sd, sizeof sd, "%s/state-lockfiles", test_tmpdir());
    ASSERT_EQ(mkdir(sd, 0711), 0);
    char cgd[256];
    snprintf(cgd, sizeof cgd, "%s/clearbox", sb_cg_pids_root());
    mkdir(cgd, 0755);
    struct timespec old[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    static const char *const ids[3] = {"lf-live", "lf-stale", "lf-young"};
    int live = -1;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s.lock", sd, ids[i]);
        int fd = open(p, O_RDWR | O_CREAT, 0600);
        ASSERT(fd >= 0);
        if (i == 0) {
            ASSERT_EQ(flock(fd, LOCK_EX), 0); /* gc's own open conflicts */
            live = fd;
        } else {
            close(fd);
        }
        snprintf(p, sizeof p, "%s/%s", cgd, ids[i]);
        ASSERT_EQ(mkdir(p, 0755), 0);
        if (i < 2) {
            ASSERT_EQ(utimensat(AT_FDCWD, p, old, 0), 0);
            snprintf(p, sizeof p, "%s/%s.lock", sd, ids[i]);
            ASSERT_EQ(utimensat(AT_FDCWD, p, old, 0), 0);
        }
    }
    struct buf rep;
    buf_init(&rep, NULL, 0, 1 << 16);
    char err[256];
    int n = sandbox_gc(sd, NULL, &rep, err, sizeof err);
    bool kept[3], cg_kept[3];
    struct stat st;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s.lock", sd, ids[i]);
        kept[i] = stat(p, &st) == 0;
        unlink(p);
        snprintf(p, sizeof p, "%s/%s", cgd, ids[i]);
        cg_kept[i] = stat(p, &st) == 0;
        rmdir(p);
    }
    close(live);
    ASSERT_MSG(n >= 2, "gc removed %d: %s", n, rep.data ? rep.data : "");
    ASSERT_CONTAINS(rep.data ? rep.data : "", "removed stale lock");
    ASSERT(kept[0] && cg_kept[0]);
    ASSERT(!kept[1] && !cg_kept[1]);
    ASSERT(kept[2] && cg_kept[2]);
    buf_free(&rep);
}

/* While a run lives its state on the host is <sd>/<id>.lock, locked, and no
 * directory; when it returns, nothing. */
struct lock_watch {
    char path[600], dir[600];
    bool seen_locked, seen_dir;
    volatile bool done;
};

static void *lock_watch_main(void *arg)
{
    struct lock_watch *w = arg;
    struct stat st;
    while (!w->done && !w->seen_locked) {
        int fd = open(w->path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            w->seen_locked = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
            close(fd);
        }
        w->seen_dir |= stat(w->dir, &st) == 0;
        usleep(1000);
    }
    return NULL;
}

TEST(a_run_holds_a_lock_file_and_leaves_nothing)
{
    if (!sb_need_root())
        return;
    /* under /run: the sandbox's init must reach it (the test's own temporary
     * directory is private to the host's root) */
    const char *sd = "/run/clearbox-test-lockrun";
    struct sandbox_spec s;
    sb_spec(&s, "sh", "sleep 0.3\n");
    s.eval_id = "t-lock-file-run";
    s.state_dir = sd;
    struct lock_watch w = {0};
    snprintf(w.path, sizeof w.path, "%s/%s.lock", sd, s.eval_id);
    snprintf(w.dir, sizeof w.dir, "%s/%s", sd, s.eval_id);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, lock_watch_main, &w), 0);
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    w.done = true;
    pthread_join(t, NULL);
    ASSERT_MSG(rc == 0 && r.status == SANDBOX_COMPLETED, "rc %d: %s", rc, err);
    sandbox_result_free(&r);
    ASSERT_MSG(w.seen_locked, "no locked %s while the run lived", w.path);
    ASSERT(!w.seen_dir);
    struct stat st;
    ASSERT(stat(w.path, &st) < 0 && errno == ENOENT);
    char what[256];
    ASSERT_MSG(!sb_leftovers(s.eval_id, what, sizeof what), "left: %s", what);
    if (system("rm -rf /run/clearbox-test-lockrun") != 0) /* and its root template */
        fprintf(stderr, "could not remove %s\n", sd);
}

TEST(gc_kills_abandoned_frozen_run)
{
    if (!sb_need_root())
        return;
    struct stat st;
    if (stat("/sys/fs/cgroup/freezer", &st) < 0 || stat("/sys/fs/cgroup/pids", &st) < 0) {
        test_skip("no v1 freezer and pids hierarchies (v2 hosts use cgroup.kill)");
        return;
    }
    char sd[512];
    snprintf(sd, sizeof sd, "%s/state", test_tmpdir());
    mkdir(sd, 0711);
    static const char *dirs[] = {"/sys/fs/cgroup/freezer/clearbox/frozen1",
                                 "/sys/fs/cgroup/pids/clearbox/frozen1"};
    mkdir("/sys/fs/cgroup/freezer/clearbox", 0755);
    mkdir("/sys/fs/cgroup/pids/clearbox", 0755);
    pid_t sleeper = fork();
    if (sleeper == 0) {
        for (;;)
            pause();
    }
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)sleeper);
    struct timespec old[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(mkdir(dirs[i], 0755), 0);
        ASSERT_EQ(cgroup_write_file(dirs[i], "cgroup.procs", pidtxt), 0);
        ASSERT_EQ(utimensat(AT_FDCWD, dirs[i], old, 0), 0);
    }
    ASSERT_EQ(cgroup_write_file(dirs[0], "freezer.state", "FROZEN"), 0);
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 16);
    char err[256];
    int n = sandbox_gc(sd, NULL, &b, err, sizeof err);
    int wst = 0;
    pid_t w = waitpid(sleeper, &wst, WNOHANG);
    bool gone0 = stat(dirs[0], &st) < 0, gone1 = stat(dirs[1], &st) < 0;
    if (w == 0) { /* cleanup before asserting: the test failed */
        cgroup_write_file(dirs[0], "freezer.state", "THAWED");
        kill(sleeper, SIGKILL);
        waitpid(sleeper, NULL, 0);
    }
    rmdir(dirs[0]);
    rmdir(dirs[1]);
    ASSERT_MSG(w == sleeper && WIFSIGNALED(wst), "the frozen task was not killed (gc: %s)",
               b.data ? b.data : "");
    ASSERT_MSG(gone0 && gone1 && n >= 2, "gc removed %d: %s", n, b.data ? b.data : "");
    buf_free(&b);
}

/* A populated cgroup whose run still has its state directory here, unlocked:
 * the owner died (a task between clone and its PDEATHSIG can outlive it), so
 * gc kills the tasks and removes the cgroup at once. */
TEST(gc_kills_populated_run_whose_owner_died)
{
    if (!sb_need_root())
        return;
    struct stat st;
    if (stat("/sys/fs/cgroup/pids", &st) < 0) {
        test_skip("no v1 pids hierarchy");
        return;
    }
    char sd[512], p[600];
    snprintf(sd, sizeof sd, "%s/state", test_tmpdir());
    mkdir(sd, 0711);
    snprintf(p, sizeof p, "%s/dead1", sd);
    ASSERT_EQ(mkdir(p, 0711), 0);
    snprintf(p, sizeof p, "%s/dead1/lock", sd);
    int lfd = open(p, O_RDWR | O_CREAT, 0600); /* exists, nobody holds it */
    ASSERT(lfd >= 0);
    close(lfd);
    const char *dir = "/sys/fs/cgroup/pids/clearbox/dead1";
    mkdir("/sys/fs/cgroup/pids/clearbox", 0755);
    pid_t sleeper = fork();
    if (sleeper == 0) {
        for (;;)
            pause();
    }
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)sleeper);
    ASSERT_EQ(mkdir(dir, 0755), 0);
    ASSERT_EQ(cgroup_write_file(dir, "cgroup.procs", pidtxt), 0);
    struct timespec old[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, dir, old, 0), 0);
    snprintf(p, sizeof p, "%s/dead1", sd);
    ASSERT_EQ(utimensat(AT_FDCWD, p, old, 0), 0);
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 16);
    char err[256];
    sandbox_gc(sd, NULL, &b, err, sizeof err);
    int wst = 0;
    pid_t w = waitpid(sleeper, &wst, WNOHANG);
    bool gone = stat(dir, &st) < 0;
    if (w == 0) {
        kill(sleeper, SIGKILL);
        waitpid(sleeper, NULL, 0);
    }
    rmdir(dir);
    ASSERT_MSG(w == sleeper && gone, "owner-less populated run not removed (gc: %s)",
               b.data ? b.data : "");
    buf_free(&b);
}

TEST(status_names_round_trip)
{
    for (int i = SANDBOX_COMPLETED; i <= SANDBOX_ERROR; i++) {
        enum sandbox_status s;
        ASSERT_EQ(sandbox_status_parse(sandbox_status_name((enum sandbox_status)i), &s), 0);
        ASSERT_EQ(s, i);
    }
    enum sandbox_status s;
    ASSERT_EQ(sandbox_status_parse("queued", &s), -EINVAL);
}

TEST(events_rate_limited_per_reason)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh", "x");
    struct sandbox_result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < 250; i++)
        ASSERT_EQ(sandbox_result_add_event(&r, "network_attempt", true, "\"port\":1"), 0);
    ASSERT_EQ(sandbox_result_add_event(&r, "blocked_syscall", true, NULL), 0);
    ASSERT_EQ(r.nevents, 102); /* 100 + one summary + the other reason */
    ASSERT_CONTAINS(r.events[100].details, "\"summary\":true");
    sandbox_result_free(&r);
}

struct conc {
    const char *code;
    struct sandbox_result r;
    int rc;
};

static void *conc_run(void *arg)
{
    struct conc *c = arg;
    struct sandbox_spec s;
    sb_spec(&s, "sh", c->code);
    char err[256];
    c->rc = sandbox_run(&s, &c->r, err, sizeof err);
    return NULL;
}

/* Runs from several threads do not hold each other up (a sandbox must not
 * inherit another run's pipes) and all clean up. */
TEST(concurrent_runs_independent)
{
    if (!sb_need_root())
        return;
    struct conc slow = {.code = "sleep 1.5\n"};
    struct conc fast[4];
    pthread_t ts, tf[4];
    pthread_create(&ts, NULL, conc_run, &slow);
    usleep(100000); /* the slow one is running: its init holds its fds */
    for (int i = 0; i < 4; i++) {
        fast[i] = (struct conc){.code = "echo fast\n"};
        pthread_create(&tf[i], NULL, conc_run, &fast[i]);
    }
    /* all runs end before the first check (a failed one returns: the test
     * process must not exit under runs still going) */
    for (int i = 0; i < 4; i++)
        pthread_join(tf[i], NULL);
    pthread_join(ts, NULL);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(fast[i].rc, 0);
        ASSERT_EQ(fast[i].r.status, SANDBOX_COMPLETED);
        ASSERT_STREQ(fast[i].r.out.data, "fast\n");
        ASSERT_MSG(fast[i].r.duration_ms < 1000, "a fast run took %.1f ms beside a slow one",
                   fast[i].r.duration_ms);
        sandbox_result_free(&fast[i].r);
    }
    ASSERT_EQ(slow.r.status, SANDBOX_COMPLETED);
    sandbox_result_free(&slow.r);
}

/* With telemetry set up, a run records DESIGN.md's metrics. */
TEST(metrics_recorded)
{
    if (!sb_need_root())
        return;
    struct telemetry_options o = {.no_process_metrics = true};
    char err[256];
    ASSERT_EQ(telemetry_init(&o, err, sizeof err), 0);
    struct sandbox_spec s;
    sb_spec(&s, "sh", "sleep 2\n");
    s.limits.wall_timeout_ms = 200;
    struct sandbox_result r;
    ASSERT_EQ(sandbox_run(&s, &r, err, sizeof err), 0);
    sandbox_result_free(&r);
    char *text = NULL;
    ASSERT_EQ(metrics_render_string(telemetry_std()->reg, METRICS_FORMAT_TEXT, 0, &text, NULL, err,
                                    sizeof err),
              0);
    ASSERT_CONTAINS(text, "clearbox_evaluations_total{status=\"timeout\",language=\"sh\"} 1");
    ASSERT_CONTAINS(text, "clearbox_security_events_total{reason=\"timeout\"} 1");
    ASSERT_CONTAINS(text, "clearbox_sandbox_create_seconds_count 1");
    ASSERT_CONTAINS(text, "clearbox_evaluation_cpu_seconds_count 1");
    free(text);
    telemetry_shutdown();
}
