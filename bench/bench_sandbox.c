/* bench_sandbox.c - what the sandbox costs, against bare execution and bwrap.
 *
 * Interleaved runs (bare, bwrap, clearbox, bare, bwrap, clearbox, ...) so
 * machine noise hits every variant alike; median and p95 of each. Programs:
 * a trivial shell script (":") and /usr/bin/python3 running "pass". bwrap
 * gets what issue 4 names: ro /usr, proc, dev, tmpfs /tmp, --unshare-all.
 * clearbox runs with everything on (namespaces, cgroups + accounting,
 * seccomp supervision, DNS stub, telemetry logs). The engine alone
 * (sandbox_run() in this process, as the service calls it) is measured
 * against a bare fork+exec from the same process, with its phase times.
 * Then the seccomp filter as each CLI process gets it: built by libseccomp
 * (a cache miss) against read from the cache file. Last, monitoring
 * overhead: a 250 ms CPU-bound program with telemetry off
 * (log level error, no trace file) and on (info logs + --trace-file).
 * Needs root. BENCH_QUICK=1: fewer runs. CLEARBOX_BEFORE=PATH adds another
 * clearbox binary (say, the previous commit's) to the interleaved runs, so a
 * change is measured before and after in the same run. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "sandbox/sandbox.h"
#include "sandbox/seccomp.h"
#include "telemetry/log.h"

extern char **environ;

static char dir[64];
static const char *clearbox, *clearbox_before;

static void write_file(const char *name, const char *text)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        bench_fail("write %s: %s", p, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Run argv with stdio on /dev/null; returns wall ns, fails on a bad exit. */
static uint64_t run_ns(char *const argv[], char *const envp[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    uint64_t t0 = bench_now_ns();
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        bench_fail("spawn %s: %s", argv[0], strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    uint64_t t = bench_now_ns() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bench_fail("%s %s exited with status 0x%x", argv[0], argv[1] ? argv[1] : "", st);
    return t;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct stats {
    double median, p95;
};

static struct stats stats_of(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_u64);
    struct stats s = {(double)v[n / 2], (double)v[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1]};
    return s;
}

enum { BARE, BWRAP, CLEARBOX, BEFORE, NVAR };
static const char *const var_names[NVAR] = {"bare", "bwrap", "clearbox", "clearbox_before"};

static bool variant_on(int v, bool have_bwrap)
{
    return (v != BWRAP || have_bwrap) && (v != BEFORE || clearbox_before);
}

static void compare(const char *what, char *const argv[NVAR][32], int n, bool have_bwrap,
                    double python_ratio)
{
    uint64_t *t[NVAR];
    for (int v = 0; v < NVAR; v++)
        t[v] = calloc((size_t)n, sizeof(uint64_t));
    for (int v = 0; v < NVAR; v++) /* warm caches once */
        if (variant_on(v, have_bwrap))
            run_ns(argv[v], NULL);
    for (int i = 0; i < n; i++)
        for (int v = 0; v < NVAR; v++)
            if (variant_on(v, have_bwrap))
                t[v][i] = run_ns(argv[v], NULL);
    struct stats s[NVAR];
    for (int v = 0; v < NVAR; v++)
        if (variant_on(v, have_bwrap))
            s[v] = stats_of(t[v], n);
    for (int v = 0; v < NVAR; v++)
        if (variant_on(v, have_bwrap))
            bench_note("%s %s: median %.2f ms, p95 %.2f ms, overhead %.2f ms, %.2fx bare (%d "
                       "interleaved runs)",
                       what, var_names[v], s[v].median / 1e6, s[v].p95 / 1e6,
                       (s[v].median - s[BARE].median) / 1e6, s[v].median / s[BARE].median, n);
    char name[96], base[96];
    double cb_over = s[CLEARBOX].median - s[BARE].median;
    snprintf(name, sizeof name, "sandbox_overhead_%s_clearbox", what);
    snprintf(base, sizeof base, "sandbox_overhead_%s_bwrap", what);
    if (have_bwrap) {
        double bw_over = s[BWRAP].median - s[BARE].median;
        bench_report(name, cb_over, base, bw_over, python_ratio > 0 ? 0 : 3e6);
        if (cb_over > bw_over)
            bench_note("clearbox's overhead is above bwrap's in this run");
    } else {
        bench_report(name, cb_over, "none(bwrap missing)", 0, python_ratio > 0 ? 0 : 3e6);
    }
    if (python_ratio > 0) {
        snprintf(name, sizeof name, "sandbox_%s_clearbox", what);
        snprintf(base, sizeof base, "sandbox_%s_bare", what);
        bench_report_ratio(name, s[CLEARBOX].median, base, s[BARE].median, python_ratio);
    }
    for (int v = 0; v < NVAR; v++)
        free(t[v]);
}

/* The engine alone, in this process, against fork+exec of the same program. */
static void engine_alone(int n)
{
    static const char *argv[] = {"/bin/sh", "/work/main.sh", NULL};
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.language = "sh";
    spec.code = ":\n";
    spec.code_len = 2;
    spec.code_name = "main.sh";
    spec.argv = argv;
    char script[128];
    snprintf(script, sizeof script, "%s/trivial.sh", dir);
    char *bare[] = {"/bin/sh", script, NULL};
    uint64_t *tb = calloc((size_t)n, sizeof(uint64_t)), *te = calloc((size_t)n, sizeof(uint64_t));
    double create = 0, exec_ = 0, teardown = 0;
    for (int i = -1; i < n; i++) {
        uint64_t b = run_ns(bare, NULL);
        struct sandbox_result r;
        char err[256];
        uint64_t t0 = bench_now_ns();
        if (sandbox_run(&spec, &r, err, sizeof err) < 0 || r.status != SANDBOX_COMPLETED)
            bench_fail("sandbox_run: %s", err);
        uint64_t e = bench_now_ns() - t0;
        if (i >= 0) {
            tb[i] = b;
            te[i] = e;
            create += r.create_ms;
            exec_ += r.execute_ms;
            teardown += r.teardown_ms;
        }
        sandbox_result_free(&r);
    }
    struct stats sb = stats_of(tb, n), se = stats_of(te, n);
    bench_note(
        "engine in-process: sandbox_run median %.2f ms p95 %.2f ms; fork+exec median %.2f ms; "
        "mean phases create %.2f / execute %.2f / teardown %.2f ms",
        se.median / 1e6, se.p95 / 1e6, sb.median / 1e6, create / n, exec_ / n, teardown / n);
    bench_report("sandbox_engine_overhead_trivial", se.median - sb.median, "fork_exec_trivial",
                 sb.median, 3e6);
    free(tb);
    free(te);
}

/* Time fn(arg) in a fresh child (fn's state stays there); fn returns < 0 on
 * failure, which fails the benchmark with what. */
static uint64_t child_time(int (*fn)(void *), void *arg, const char *what)
{
    int p[2];
    if (pipe(p) < 0)
        bench_fail("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t t0 = bench_now_ns();
        int rc = fn(arg);
        uint64_t t = bench_now_ns() - t0;
        if (rc < 0 || write(p[1], &t, sizeof t) != (ssize_t)sizeof t)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    uint64_t t = 0;
    if (read(p[0], &t, sizeof t) != (ssize_t)sizeof t)
        bench_fail("%s failed in the child", what);
    close(p[0]);
    waitpid(pid, NULL, 0);
    return t;
}

/* The seccomp filter, the way each `clearbox run` process gets it: built
 * with libseccomp (a cache miss: generation, the description's SHA-256,
 * the file written) against read from the cache file. A fresh process each
 * time (the filter is also kept in memory per process). */
static int filter_build(void *cache_dir)
{
    setenv("CLEARBOX_CACHE_DIR", cache_dir, 1);
    struct seccomp_prog prog;
    char err[256];
    return seccomp_policy_build(SECCOMP_POLICY_DEFAULT, &prog, err, sizeof err);
}

static uint64_t filter_once(const char *cache_dir)
{
    return child_time(filter_build, (void *)cache_dir, "seccomp_policy_build");
}

static void filter_cache(int n)
{
    uint64_t *cold = calloc((size_t)n, sizeof(uint64_t)),
             *warm = calloc((size_t)n, sizeof(uint64_t));
    char cd[160], cmd[200];
    for (int i = 0; i < n; i++) {
        snprintf(cd, sizeof cd, "%s/cache%d", dir, i);
        cold[i] = filter_once(cd); /* empty directory: a miss, which writes the file */
        warm[i] = filter_once(cd); /* the file: a hit */
        snprintf(cmd, sizeof cmd, "rm -rf %s", cd);
        if (system(cmd) != 0)
            bench_note("could not remove %s", cd);
    }
    struct stats sc = stats_of(cold, n), sw = stats_of(warm, n);
    bench_note(
        "seccomp filter per process: libseccomp build median %.2f ms, cache file median %.3f ms",
        sc.median / 1e6, sw.median / 1e6);
    bench_report("seccomp_filter_from_cache", sw.median, "seccomp_filter_built", sc.median, 0);
    free(cold);
    free(warm);
}

/* What installing the filter costs the kernel, on the way to every
 * program's start: libseccomp's own program against the compact one the
 * engine uses (seccomp_compact.h), each loaded by a fresh child. */
static int filter_install(void *p)
{
    if (seccomp_nnp_set() < 0)
        return -1;
    return seccomp_prog_load(p); /* the timed part includes prctl: ~1 us */
}

static uint64_t load_once(const struct seccomp_prog *p)
{
    return child_time(filter_install, (void *)p, "loading the seccomp filter");
}

static void filter_load(int n)
{
    struct seccomp_prog lib, compact;
    char err[256];
    if (seccomp_policy_build_fresh(SECCOMP_POLICY_DEFAULT, false, &lib, err, sizeof err) < 0 ||
        seccomp_policy_build_fresh(SECCOMP_POLICY_DEFAULT, true, &compact, err, sizeof err) < 0)
        bench_fail("seccomp_policy_build_fresh: %s", err);
    uint64_t *a = calloc((size_t)n, sizeof(uint64_t)), *b = calloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++) { /* interleaved */
        a[i] = load_once(&compact);
        b[i] = load_once(&lib);
    }
    struct stats sa = stats_of(a, n), sb = stats_of(b, n);
    bench_note("seccomp filter load in the kernel: compact %u insns median %.3f ms, libseccomp "
               "%u insns median %.3f ms",
               compact.len, sa.median / 1e6, lib.len, sb.median / 1e6);
    bench_report("seccomp_filter_load_compact", sa.median, "seccomp_filter_load_libseccomp",
                 sb.median, 0);
    free(a);
    free(b);
    seccomp_prog_free(&lib);
    seccomp_prog_free(&compact);
}

static void monitoring(int n)
{
    char prog[128], trace[128];
    snprintf(prog, sizeof prog, "%s/busy.py", dir);
    snprintf(trace, sizeof trace, "%s/trace.jsonl", dir);
    char *off[] = {(char *)clearbox, "run", "--json", prog, NULL};
    char *on[] = {(char *)clearbox, "run", "--json", "--trace-file", trace, prog, NULL};
    char *env_off[] = {"CLEARBOX_LOG_LEVEL=error", "OTEL_SDK_DISABLED=true", "PATH=/usr/bin:/bin",
                       NULL};
    char *env_on[] = {"CLEARBOX_LOG_LEVEL=info", "PATH=/usr/bin:/bin", NULL};
    uint64_t *a = calloc((size_t)n, sizeof(uint64_t)), *b = calloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++) {
        a[i] = run_ns(off, env_off);
        b[i] = run_ns(on, env_on);
    }
    struct stats sa = stats_of(a, n), sb = stats_of(b, n);
    bench_report_ratio("sandbox_250ms_telemetry_on", sb.median, "sandbox_250ms_telemetry_off",
                       sa.median, 1.02);
    free(a);
    free(b);
}

int main(void)
{
    if (geteuid() != 0) {
        bench_note("bench_sandbox needs root (namespaces, cgroups); skipped");
        return 0;
    }
    clearbox = getenv("CLEARBOX");
    if (!clearbox)
        clearbox = "build/clearbox";
    if (access(clearbox, X_OK) != 0)
        bench_fail("CLEARBOX=%s is not executable", clearbox);
    clearbox_before = getenv("CLEARBOX_BEFORE");
    if (clearbox_before && !*clearbox_before)
        clearbox_before = NULL;
    if (clearbox_before && access(clearbox_before, X_OK) != 0)
        bench_fail("CLEARBOX_BEFORE=%s is not executable", clearbox_before);
    log_set_level(LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/bench-sandbox.XXXXXX");
    if (!mkdtemp(dir))
        bench_fail("mkdtemp: %s", strerror(errno));
    chmod(dir, 0755);
    write_file("trivial.sh", ":\n");
    write_file("pass.py", "pass\n");
    write_file("busy.py",
               "import time\nt=time.process_time()\nwhile time.process_time()-t<0.25: pass\n");
    bool have_bwrap = access("/usr/bin/bwrap", X_OK) == 0;
    if (!have_bwrap)
        bench_note("bwrap not found (apt-get install bubblewrap): no bwrap baseline");
    int n = bench_quick() ? 12 : 60;
    char sh_path[128], py_path[128];
    snprintf(sh_path, sizeof sh_path, "%s/trivial.sh", dir);
    snprintf(py_path, sizeof py_path, "%s/pass.py", dir);
#define BWRAP_ARGS                                                                                 \
    "/usr/bin/bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink",    \
        "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", \
        "--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--ro-bind"
    char *sh[NVAR][32] = {
        {"/bin/sh", sh_path, NULL},
        {BWRAP_ARGS, sh_path, "/work/main.sh", "/bin/sh", "/work/main.sh", NULL},
        {(char *)clearbox, "run", "--json", sh_path, NULL},
        {(char *)clearbox_before, "run", "--json", sh_path, NULL},
    };
    char *py[NVAR][32] = {
        {"/usr/bin/python3", py_path, NULL},
        {BWRAP_ARGS, py_path, "/work/main.py", "/usr/bin/python3", "/work/main.py", NULL},
        {(char *)clearbox, "run", "--json", py_path, NULL},
        {(char *)clearbox_before, "run", "--json", py_path, NULL},
    };
    compare("trivial_sh", sh, n, have_bwrap, 0);
    compare("python_pass", py, n, have_bwrap, 1.3);
    filter_cache(bench_quick() ? 5 : 20); /* before anything builds a filter in this process */
    filter_load(bench_quick() ? 20 : 100);
    engine_alone(n);
    monitoring(bench_quick() ? 5 : 15);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        bench_note("could not remove %s", dir);
    return 0;
}
