/* test_seccomp.c - the "default" syscall policy under a real kernel: each
 * test forks a child that enters a fresh network namespace of its own (so
 * nothing could leave even if the policy were wrong), installs the filter as
 * its last setup step and exercises calls; the parent supervises with
 * netwatch and collects the events. Benign programs (/usr/bin/python3,
 * /bin/sh) run under the filter to show the allowlist is complete enough. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/netwatch.h"
#include "sandbox/seccomp.h"
#include "sandbox/seccomp_compact.h"
#include "sandbox_testlib.h"
#include "test.h"
#include "util/timeutil.h"

/* ---- the policy as data ------------------------------------------------------ */

TEST(policy_description_is_sorted_hashed_and_stable)
{
    static char text[65536], again[65536];
    char sha[SECCOMP_SHA256_HEX], sha2[SECCOMP_SHA256_HEX], err[256];
    int n = seccomp_policy_describe("default", text, sizeof text, sha, err, sizeof err);
    ASSERT_MSG(n > 0, "%s", err);
    ASSERT((size_t)n < sizeof text);
    ASSERT_EQ(strlen(sha), 64);
    ASSERT_EQ(seccomp_policy_describe("default", again, sizeof again, sha2, err, sizeof err), n);
    ASSERT_STREQ(sha, sha2);
    ASSERT_STREQ(text, again);
    /* the promised rules are in it */
    ASSERT_CONTAINS(text, "default errno ENOSYS\n");
    ASSERT_CONTAINS(text, "errno ENOSYS clone3\n");
    ASSERT_CONTAINS(text, "notify ptrace deny\n");
    ASSERT_CONTAINS(text, "notify mount deny\n");
    ASSERT_CONTAINS(text, "notify io_uring_setup deny\n");
    ASSERT_CONTAINS(text, "notify connect decode\n");
    ASSERT_CONTAINS(text, "allow clone if (arg0 & 0x7e020000) == 0\n");
    ASSERT_CONTAINS(text, "allow read\n");
    /* sorted, one rule per line, no duplicates */
    char *prev = NULL, *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (prev)
            ASSERT_MSG(strcmp(prev, line) < 0, "not sorted/unique: \"%s\" then \"%s\"", prev,
                       line);
        prev = line;
    }
    /* the hash is the SHA-256 of exactly these bytes: a truncated copy still
     * reports the full length */
    char small[16];
    ASSERT_EQ(seccomp_policy_describe("default", small, sizeof small, NULL, NULL, 0), n);
    ASSERT_EQ(strlen(small), sizeof small - 1);
    ASSERT_EQ(seccomp_policy_describe("nope", NULL, 0, sha, err, sizeof err), -ENOENT);
    ASSERT_CONTAINS(err, "unknown seccomp policy");
}

TEST(policy_build_gives_bpf_with_the_description_hash)
{
    struct seccomp_prog p;
    char err[256], sha[SECCOMP_SHA256_HEX];
    ASSERT_EQ(seccomp_policy_build("default", &p, err, sizeof err), 0);
    ASSERT(p.insns != NULL);
    ASSERT(p.len > 50 && p.len < 4096);
    ASSERT_STREQ(p.name, "default");
    ASSERT(seccomp_policy_describe("default", NULL, 0, sha, NULL, 0) > 0);
    ASSERT_STREQ(p.sha256, sha);
    seccomp_prog_free(&p);
    ASSERT(p.insns == NULL);
    ASSERT_EQ(seccomp_policy_build("bogus", &p, err, sizeof err), -ENOENT);
    ASSERT(p.insns == NULL);
}

TEST(fds_cross_a_socketpair)
{
    int sv[2], pa[2], pb[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(pipe(pa), 0);
    ASSERT_EQ(pipe(pb), 0);
    int send[2] = {pa[1], pb[1]};
    ASSERT_EQ(seccomp_fds_send(sv[0], send, 2), 0);
    int got[4];
    char err[256];
    ASSERT_EQ(seccomp_fds_recv(sv[1], got, 4, err, sizeof err), 2);
    ASSERT(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
    ASSERT_EQ(write(got[0], "a", 1), 1);
    ASSERT_EQ(write(got[1], "b", 1), 1);
    char c;
    ASSERT_EQ(read(pa[0], &c, 1), 1);
    ASSERT_EQ(c, 'a');
    ASSERT_EQ(read(pb[0], &c, 1), 1);
    ASSERT_EQ(c, 'b');
    /* more fds than the receiver has room for: all closed, -EMSGSIZE */
    ASSERT_EQ(seccomp_fds_send(sv[0], send, 2), 0);
    ASSERT_EQ(seccomp_fds_recv(sv[1], got, 1, err, sizeof err), -EMSGSIZE);
    ASSERT_EQ(seccomp_fds_send(sv[0], send, SECCOMP_FDS_MAX + 1), -EINVAL);
    /* the peer closing without sending */
    close(sv[0]);
    ASSERT_EQ(seccomp_fds_recv(sv[1], got, 4, err, sizeof err), -EPIPE);
}

/* ---- blocked syscalls ------------------------------------------------------------ */

static void try_call(int out, const char *name, long rc)
{
    fx_say(out, "%s=%ld/%d\n", name, rc, rc < 0 ? errno : 0);
}

static int body_blocked(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    errno = 0;
    try_call(out, "ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    try_call(out, "mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    try_call(out, "umount2", umount2("/", MNT_DETACH));
    try_call(out, "unshare", unshare(CLONE_NEWUSER));
    try_call(out, "setns", setns(0, 0));
    try_call(out, "bpf", syscall(SYS_bpf, 0, NULL, 0));
    try_call(out, "keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, -1, 0));
    try_call(out, "add_key", syscall(SYS_add_key, "user", "k", "v", 1, -1));
    try_call(out, "io_uring_setup", syscall(SYS_io_uring_setup, 8, NULL));
    struct timespec ts = {.tv_sec = 1};
    try_call(out, "clock_settime", clock_settime(CLOCK_REALTIME, &ts));
    try_call(out, "perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    try_call(out, "userfaultfd", syscall(SYS_userfaultfd, 0));
    try_call(out, "open_tree_attr", syscall(467, -1, "/", 0, NULL, 0));
    char b[8];
    struct iovec l = {b, sizeof b}, r = {b, sizeof b};
    try_call(out, "process_vm_readv", syscall(SYS_process_vm_readv, getppid(), &l, 1, &r, 1, 0));
    try_call(out, "kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    try_call(out, "init_module", syscall(SYS_init_module, NULL, 0, ""));
    try_call(out, "personality_odd", personality(ADDR_NO_RANDOMIZE));
    try_call(out, "settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    /* the harmless forms pass without a report */
    try_call(out, "personality_query", personality(0xffffffff));
    struct timex tx = {.modes = 0};
    long a = adjtimex(&tx);
    fx_say(out, "adjtimex_read=%s\n", a >= 0 ? "ok" : "fail");
    tx.modes = ADJ_OFFSET;
    try_call(out, "adjtimex_set", adjtimex(&tx));
    return 0;
}

TEST(dangerous_syscalls_fail_eperm_and_are_reported)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_blocked, NULL);
    static const char *const names[] = {
        "ptrace", "mount", "umount2", "unshare", "setns", "bpf", "keyctl", "add_key",
        "io_uring_setup", "clock_settime", "perf_event_open", "userfaultfd", "open_tree_attr",
        "process_vm_readv", "kexec_load", "init_module", "settimeofday"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s=-1/1\n", names[i]); /* EPERM */
        ASSERT_CONTAINS(f.out, want);
        ASSERT_MSG(fx_count("blocked_syscall", names[i], NULL) == 1, "no event for %s",
                   names[i]);
    }
    ASSERT_CONTAINS(f.out, "personality_odd=-1/1\n");
    ASSERT_EQ(fx_count("blocked_syscall", "personality", NULL), 1);
    ASSERT_CONTAINS(f.out, "adjtimex_read=ok\n");
    ASSERT_CONTAINS(f.out, "adjtimex_set=-1/1\n");
    /* the set only (glibc 2.36 implements adjtimex with clock_adjtime) */
    ASSERT_EQ(fx_count("blocked_syscall", "adjtimex", NULL) +
                  fx_count("blocked_syscall", "clock_adjtime", NULL),
              1);
    ASSERT(strstr(f.out, "personality_query=-1") == NULL);
    for (size_t i = 0; i < fx_nev; i++) {
        ASSERT_STREQ(fx_ev[i].arch, "x86_64");
        ASSERT(fx_ev[i].blocked);
        ASSERT_EQ(fx_ev[i].port, -1);
    }
    ASSERT_EQ(fx_nev, sizeof names / sizeof names[0] + 2);
    ASSERT_EQ(fx_count("network_attempt", NULL, NULL), 0);
}

static void *thread_fn(void *p)
{
    *(int *)p = 42;
    return NULL;
}

static int body_clone(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    char args[88];
    memset(args, 0, sizeof args);
    try_call(out, "clone3", syscall(SYS_clone3, args, sizeof args));
    try_call(out, "clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    try_call(out, "clone_newnet", syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0));
    pid_t p = fork();
    if (p == 0)
        _exit(7);
    int st = 0;
    waitpid(p, &st, 0);
    fx_say(out, "fork_exit=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    int v = 0;
    pthread_t t;
    int rc = pthread_create(&t, NULL, thread_fn, &v);
    if (rc == 0)
        pthread_join(t, NULL);
    fx_say(out, "thread=%d/%d\n", rc, v);
    return 0;
}

TEST(clone3_enosys_namespace_clone_denied_threads_and_fork_work)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_clone, NULL);
    ASSERT_CONTAINS(f.out, "clone3=-1/38\n"); /* ENOSYS, so libc falls back */
    ASSERT_CONTAINS(f.out, "clone_newuser=-1/1\n");
    ASSERT_CONTAINS(f.out, "clone_newnet=-1/1\n");
    ASSERT_CONTAINS(f.out, "fork_exit=7\n");
    ASSERT_CONTAINS(f.out, "thread=0/42\n");
    ASSERT_EQ(fx_count("blocked_syscall", "clone", NULL), 2);
    ASSERT_EQ(fx_count("blocked_syscall", "clone3", NULL), 0);
    ASSERT_EQ(fx_nev, 2);
}

static int body_unknown(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    try_call(out, "statmount", syscall(457, NULL, NULL, 0, 0));
    try_call(out, "nr1000", syscall(1000));
    try_call(out, "mbind", syscall(SYS_mbind, 0, 0, 0, NULL, 0, 0));
    /* mseal is newer than libseccomp 2.5.4 and allowed by number: the kernel
     * answers for itself (EINVAL for a misaligned address), not ENOSYS */
    try_call(out, "mseal", syscall(462, 1, 1, 0));
    return 0;
}

TEST(unknown_syscalls_get_enosys_silently)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_unknown, NULL);
    ASSERT_CONTAINS(f.out, "statmount=-1/38\n");
    ASSERT_CONTAINS(f.out, "nr1000=-1/38\n");
    ASSERT_CONTAINS(f.out, "mbind=-1/38\n");
    ASSERT_CONTAINS(f.out, "mseal=-1/22\n");
    ASSERT_EQ(fx_nev, 0);
}

static int body_foreign(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    /* x32 ABI: the x86_64 number with bit 30 set */
    try_call(out, "x32_getpid", syscall(0x40000000 | 39));
#if defined(__x86_64__)
    long r;
    /* i386 ABI through int 0x80: getpid is 20 there */
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    fx_say(out, "i386_getpid=%ld\n", r);
#endif
    return 0;
}

TEST(foreign_abi_calls_are_denied_and_reported)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_foreign, NULL);
    ASSERT_CONTAINS(f.out, "x32_getpid=-1/1\n");
    const struct netwatch_event *e = fx_find("getpid", NULL);
    ASSERT_MSG(e != NULL, "no event; out: %s", f.out);
    ASSERT_STREQ(e->reason_name, "blocked_syscall");
    ASSERT_STREQ(e->arch, "x32");
    ASSERT_CONTAINS(f.out, "i386_getpid=-1\n"); /* -EPERM in eax */
    size_t x86 = 0;
    for (size_t i = 0; i < fx_nev; i++)
        if (strcmp(fx_ev[i].arch, "x86") == 0 && strcmp(fx_ev[i].syscall, "getpid") == 0)
            x86++;
    ASSERT_EQ(x86, 1);
}

/* ---- without a supervisor every notified call fails ---------------------------------- */

static int body_nosup(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    try_call(out, "socket", socket(AF_INET, SOCK_STREAM, 0));
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    fx_say(out, "unix=%d\n", u >= 0 ? 0 : errno);
    try_call(out, "ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    try_call(out, "mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    try_call(out, "getpid_ok", getpid() > 0 ? 0 : -1);
    return 0;
}

TEST(no_supervisor_means_calls_fail_enosys)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 0, body_nosup, NULL);
    ASSERT_CONTAINS(f.out, "socket=-1/38\n");
    ASSERT_CONTAINS(f.out, "unix=38\n");
    ASSERT_CONTAINS(f.out, "ptrace=-1/38\n");
    ASSERT_CONTAINS(f.out, "mount=-1/38\n");
    ASSERT_CONTAINS(f.out, "getpid_ok=0/0\n");
}

static int body_killsup(int out, int go, void *arg)
{
    (void)arg;
    struct sockaddr_in a = fx_sin4("93.184.216.34", 80);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    fx_say(out, "before socket=%s\n", s >= 0 ? "ok" : "fail");
    try_call(out, "before_ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    fx_say(out, "phase1\n");
    char c;
    if (read(go, &c, 1) != 1) /* the test kills the supervisor meanwhile */
        return 3;
    try_call(out, "after_socket", socket(AF_INET, SOCK_STREAM, 0));
    try_call(out, "after_connect", connect(s, (struct sockaddr *)&a, sizeof a));
    try_call(out, "after_ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    try_call(out, "after_unshare", unshare(CLONE_NEWNET));
    return 0;
}

TEST(killed_supervisor_makes_calls_fail_never_succeed)
{
    struct fx f;
    struct fx_opts o = {0};
    char err[256] = "";
    int rc = fx_start(&f, &o, 2, body_killsup, NULL, err, sizeof err);
    ASSERT_MSG(rc == 0, "fx_start: %d %s", rc, err);
    /* wait for phase 1, then SIGKILL the supervisor process */
    uint64_t end = time_mono_ns() + 10000000000ull;
    while (!strstr(f.out, "phase1\n") && time_mono_ns() < end) {
        struct pollfd p = {.fd = f.out_r, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t r = read(f.out_r, f.out + f.outlen, sizeof f.out - 1 - f.outlen);
        if (r <= 0)
            break;
        f.outlen += (size_t)r;
        f.out[f.outlen] = '\0';
    }
    ASSERT_CONTAINS(f.out, "before socket=ok\n");
    ASSERT_CONTAINS(f.out, "before_ptrace=-1/1\n"); /* supervisor alive: EPERM */
    ASSERT_EQ(kill(f.sup, SIGKILL), 0);
    ASSERT_EQ(waitpid(f.sup, NULL, 0), f.sup);
    f.sup = 0;
    ASSERT_EQ(write(f.go_w, "g", 1), 1);
    fx_finish(&f, 10000);
    ASSERT_CONTAINS(f.out, "after_socket=-1/38\n");
    ASSERT_CONTAINS(f.out, "after_connect=-1/38\n");
    ASSERT_CONTAINS(f.out, "after_ptrace=-1/38\n");
    ASSERT_CONTAINS(f.out, "after_unshare=-1/38\n");
    ASSERT(WIFEXITED(f.status) && WEXITSTATUS(f.status) == 0);
}

/* A program must not become its own supervisor: a newer USER_NOTIF filter of
 * its own would receive the calls ours denies and could let them through. */
static int body_own_filter(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog fp = {.len = 1, .filter = allow};
    struct sock_filter notify[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF)};
    struct sock_fprog np = {.len = 1, .filter = notify};
    try_call(out, "own_listener",
             syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &np));
    /* the 32-bit flags argument with junk above: still seen */
    try_call(out, "own_listener_hi",
             syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                     0x100000000UL | SECCOMP_FILTER_FLAG_NEW_LISTENER, &np));
    try_call(out, "own_filter", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp));
    try_call(out, "ptrace_after", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    return 0;
}

TEST(program_cannot_install_its_own_listener)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_own_filter, NULL);
    ASSERT_CONTAINS(f.out, "own_listener=-1/1\n");
    ASSERT(strstr(f.out, "own_listener_hi=-1/") != NULL); /* EPERM, or EINVAL from the kernel */
    ASSERT_CONTAINS(f.out, "own_filter=0/0\n");       /* filters that only take away: fine */
    ASSERT_CONTAINS(f.out, "ptrace_after=-1/1\n");    /* ours still answers */
    ASSERT(fx_count("blocked_syscall", "seccomp", NULL) >= 1);
    ASSERT_EQ(fx_count("blocked_syscall", "ptrace", NULL), 1);
}

TEST(listener_fd_is_close_on_exec)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_nosup, NULL);
    ASSERT_EQ(f.cloexec, 1);
}

/* ---- benign programs pass untouched ------------------------------------------------- */

static int body_exec(int out, int go, void *arg)
{
    (void)go;
    char *const *argv = arg;
    dup2(out, 1);
    dup2(out, 2);
    char *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp", NULL};
    execve(argv[0], argv, envp);
    fx_say(out, "execve failed: %d\n", errno);
    return 127;
}

static const char py_workload[] =
    "import json, subprocess, threading, socket, ssl, multiprocessing, hashlib, os, sys\n"
    "import tempfile, asyncio, sqlite3, concurrent.futures, random, time, signal\n"
    "assert json.loads(json.dumps({'a': [1, 2]})) == {'a': [1, 2]}\n"
    "out = subprocess.run(['/bin/sh', '-c', 'echo hello | tr a-z A-Z'],\n"
    "                     capture_output=True, text=True).stdout.strip()\n"
    "assert out == 'HELLO', out\n"
    "r = []\n"
    "ts = [threading.Thread(target=lambda i=i: r.append(i * i)) for i in range(4)]\n"
    "[t.start() for t in ts]; [t.join() for t in ts]\n"
    "assert sorted(r) == [0, 1, 4, 9]\n"
    "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n"
    "port = srv.getsockname()[1]\n"
    "def serve():\n"
    "    c, _ = srv.accept(); c.sendall(c.recv(16).upper()); c.close()\n"
    "th = threading.Thread(target=serve); th.start()\n"
    "c = socket.create_connection(('127.0.0.1', port)); c.sendall(b'abc')\n"
    "assert c.recv(16) == b'ABC'; th.join()\n"
    "a, b = socket.socketpair(); a.send(b'x'); assert b.recv(1) == b'x'\n"
    "ctx = ssl.create_default_context(); assert ctx.verify_mode == ssl.CERT_REQUIRED\n"
    "assert hashlib.sha256(b'').hexdigest().startswith('e3b0')\n"
    "with tempfile.TemporaryDirectory() as d:\n"
    "    db = sqlite3.connect(os.path.join(d, 'x.db')); db.execute('create table t(x)')\n"
    "    db.execute('insert into t values (1)'); db.commit()\n"
    "async def main():\n"
    "    await asyncio.sleep(0.01); return 5\n"
    "assert asyncio.run(main()) == 5\n"
    "def sq(x): return x * x\n"
    "if __name__ == '__main__':\n"
    "    with multiprocessing.Pool(2) as p:\n"
    "        assert p.map(sq, range(5)) == [0, 1, 4, 9, 16]\n"
    "    with concurrent.futures.ProcessPoolExecutor(2) as ex:\n"
    "        assert list(ex.map(sq, range(3))) == [0, 1, 4]\n"
    "    with concurrent.futures.ThreadPoolExecutor(4) as ex:\n"
    "        assert sum(ex.map(sq, range(10))) == 285\n"
    "    print('OK', os.cpu_count() > 0, len(os.listdir('/')) > 0)\n";

TEST(python_benign_workload_runs_without_events)
{
    struct fx f;
    struct fx_opts o = {0};
    char *argv[] = {"/usr/bin/python3", "-c", (char *)py_workload, NULL};
    FX_RUN(&f, &o, 1, body_exec, argv);
    if (fx_nev)
        fx_dump();
    ASSERT_CONTAINS(f.out, "OK True True\n");
    ASSERT(WIFEXITED(f.status) && WEXITSTATUS(f.status) == 0);
    ASSERT_EQ(fx_nev, 0);
    ASSERT_EQ(f.st.denied, 0);
}

TEST(sh_pipelines_run_without_events)
{
    struct fx f;
    struct fx_opts o = {0};
    char *argv[] = {"/bin/sh", "-c",
                    "set -e; echo hello | tr a-z A-Z | sed s/HELLO/DONE/;"
                    " for i in 1 2 3; do echo $i; done | wc -l;"
                    " ls /usr/bin | head -n 3 | wc -l; x=$(date +%Y); test -n \"$x\";"
                    " (sleep 0.01 &); wait; cat /etc/passwd | grep -c root >/dev/null;"
                    " echo $((6*7)); echo end",
                    NULL};
    FX_RUN(&f, &o, 1, body_exec, argv);
    if (fx_nev)
        fx_dump();
    ASSERT_CONTAINS(f.out, "DONE\n3\n3\n42\nend\n");
    ASSERT(WIFEXITED(f.status) && WEXITSTATUS(f.status) == 0);
    ASSERT_EQ(fx_nev, 0);
}

/* ---- the BPF cache (seccomp.h) -------------------------------------------- */

static void cache_here(void)
{
    char d[512];
    snprintf(d, sizeof d, "%s/cache", test_tmpdir());
    setenv("CLEARBOX_CACHE_DIR", d, 1);
}

/* A miss builds with libseccomp and writes the file; the file then loads to
 * the same program and hash (a later process uses it instead of libseccomp). */
TEST(cache_written_on_miss_and_loads_identically)
{
    if (geteuid() != 0) {
        test_skip("the cache is root's (owner check)");
        return;
    }
    cache_here();
    char path[1024], err[256];
    ASSERT_EQ(seccomp_cache_path("default", path, sizeof path), 0);
    ASSERT_CONTAINS(path, "/cache/seccomp-default-");
    struct seccomp_prog built, loaded;
    ASSERT_EQ(seccomp_cache_load("default", &loaded), -ENOENT);
    ASSERT_EQ(seccomp_policy_build("default", &built, err, sizeof err), 0);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0644);
    ASSERT_EQ(seccomp_cache_load("default", &loaded), 0);
    ASSERT_EQ(loaded.len, built.len);
    ASSERT(memcmp(loaded.insns, built.insns, built.len * sizeof(struct sock_filter)) == 0);
    ASSERT_STREQ(loaded.sha256, built.sha256);
    char sha[SECCOMP_SHA256_HEX];
    ASSERT(seccomp_policy_describe("default", NULL, 0, sha, NULL, 0) > 0);
    ASSERT_STREQ(loaded.sha256, sha); /* the policy's identity, not the BPF's */
    seccomp_prog_free(&built);
    seccomp_prog_free(&loaded);
}

/* Promise: a file that fails any check is not used. */
TEST(cache_refuses_corrupt_foreign_and_linked_files)
{
    if (geteuid() != 0) {
        test_skip("the cache is root's (owner check)");
        return;
    }
    cache_here();
    char path[1024], err[256];
    struct seccomp_prog p, q;
    ASSERT_EQ(seccomp_policy_build("default", &p, err, sizeof err), 0);
    ASSERT_EQ(seccomp_cache_path("default", path, sizeof path), 0);
    /* one flipped bit in the program */
    int fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    unsigned char c;
    ASSERT_EQ(pread(fd, &c, 1, 400), 1);
    c ^= 1;
    ASSERT_EQ(pwrite(fd, &c, 1, 400), 1);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EBADMSG);
    c ^= 1;
    ASSERT_EQ(pwrite(fd, &c, 1, 400), 1);
    ASSERT_EQ(seccomp_cache_load("default", &q), 0);
    seccomp_prog_free(&q);
    /* truncated */
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    ASSERT_EQ(ftruncate(fd, st.st_size - 8), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EBADMSG);
    close(fd);
    /* rewritten, then made writable by others */
    ASSERT_EQ(seccomp_cache_store(&p), 0);
    ASSERT_EQ(chmod(path, 0666), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EPERM);
    /* owned by someone else */
    ASSERT_EQ(chmod(path, 0644), 0);
    ASSERT_EQ(chown(path, 65534, 65534), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EPERM);
    /* a symlink in its place */
    char other[1100];
    snprintf(other, sizeof other, "%s.real", path);
    ASSERT_EQ(rename(path, other), 0);
    ASSERT_EQ(chown(other, 0, 0), 0);
    ASSERT_EQ(symlink(other, path), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EPERM);
    /* a directory others may write */
    unlink(path);
    ASSERT_EQ(rename(other, path), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), 0);
    seccomp_prog_free(&q);
    char d[512];
    snprintf(d, sizeof d, "%s/cache", test_tmpdir());
    ASSERT_EQ(chmod(d, 0777), 0);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EPERM);
    seccomp_prog_free(&p);
}

/* Another binary's (or another libseccomp's) file under our name: the key
 * inside it differs and it is refused. */
TEST(cache_refuses_a_file_with_another_key)
{
    if (geteuid() != 0) {
        test_skip("the cache is root's (owner check)");
        return;
    }
    cache_here();
    char path[1024], err[256];
    struct seccomp_prog p, q;
    ASSERT_EQ(seccomp_policy_build("default", &p, err, sizeof err), 0);
    ASSERT_EQ(seccomp_cache_path("default", path, sizeof path), 0);
    int fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    char key[160];
    ASSERT_EQ(pread(fd, key, sizeof key, 8), (ssize_t)sizeof key);
    char *lib = strstr(key, "libseccomp=");
    ASSERT(lib != NULL);
    lib[11] = lib[11] == '9' ? '8' : '9'; /* another libseccomp version */
    ASSERT_EQ(pwrite(fd, key, sizeof key, 8), (ssize_t)sizeof key);
    close(fd);
    ASSERT_EQ(seccomp_cache_load("default", &q), -EBADMSG);
    seccomp_prog_free(&p);
}

/* ---- the compact program (seccomp_compact.h) --------------------------------- */

TEST(compact_program_equals_libseccomp_and_is_the_one_used)
{
    char err[256], why[512] = "";
    struct seccomp_rules *r = malloc(sizeof *r);
    ASSERT(r);
    ASSERT_EQ(seccomp_policy_rules(SECCOMP_POLICY_DEFAULT, r, err, sizeof err), 0);
    struct seccomp_prog lib, compact, used;
    ASSERT_EQ(seccomp_policy_build_fresh(SECCOMP_POLICY_DEFAULT, false, &lib, err, sizeof err), 0);
    ASSERT_EQ(seccomp_policy_build_fresh(SECCOMP_POLICY_DEFAULT, true, &compact, err, sizeof err),
              0);
    ASSERT_MSG(compact.len * 3 < lib.len, "compact %u insns, libseccomp %u", compact.len, lib.len);
    ASSERT_EQ(seccomp_bpf_equivalent(compact.insns, compact.len, lib.insns, lib.len, r, why,
                                     sizeof why),
              1);
    ASSERT_STREQ(compact.sha256, lib.sha256); /* one policy, whichever program */
    /* what the engine loads: built through a fresh cache */
    setenv("CLEARBOX_CACHE_DIR", test_tmpdir(), 1);
    ASSERT_EQ(seccomp_policy_build(SECCOMP_POLICY_DEFAULT, &used, err, sizeof err), 0);
    ASSERT_EQ(used.len, compact.len);
    ASSERT(!memcmp(used.insns, compact.insns, compact.len * sizeof *used.insns));
    seccomp_prog_free(&lib);
    seccomp_prog_free(&compact);
    seccomp_prog_free(&used);
    free(r);
}

/* The reference: what a rule set says for one input, by table lookup. */
static uint32_t rules_lookup(const struct seccomp_rules *r, const struct seccomp_data *d)
{
    if (d->arch != r->arch)
        return r->badarch;
    uint32_t nr = (uint32_t)d->nr;
    if (r->x32_bit && nr >= 0x40000000u)
        return nr == 0xffffffffu ? r->dflt : r->badarch;
    for (size_t i = 0; i < r->n; i++)
        if ((uint32_t)r->nr[i] == nr)
            return r->act[i];
    for (size_t i = 0; i < r->nconds; i++)
        if ((uint32_t)r->conds[i].nr == nr)
            return (d->args[r->conds[i].arg] & r->conds[i].mask) ? r->conds[i].if_set
                                                                  : r->conds[i].if_clear;
    return r->dflt;
}

static uint64_t xs64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST(compact_compiler_matches_a_table_lookup)
{
    static const uint32_t acts[] = {SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF,
                                    SECCOMP_RET_ERRNO | 1, SECCOMP_RET_KILL_PROCESS,
                                    SECCOMP_RET_ERRNO | 38};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    struct seccomp_rules *r = malloc(sizeof *r);
    struct sock_filter *p = malloc(BPF_MAXINSNS * sizeof *p);
    ASSERT(r && p);
    int built = 0;
    for (int round = 0; round < 200; round++) {
        memset(r, 0, sizeof *r);
        r->arch = round % 3 ? 0xc000003eu : 0xc00000b7u;
        r->x32_bit = round % 3 != 0;
        r->badarch = SECCOMP_RET_USER_NOTIF;
        r->dflt = acts[xs64(&seed) % 5];
        bool used[700] = {false};
        /* long runs of a few actions, like a real policy, or scattered */
        size_t want = xs64(&seed) % (round % 2 ? 400 : 60);
        int stride = round % 2 ? 1 : 7;
        uint32_t act = acts[0];
        for (size_t i = 0; i < want; i++) {
            int nr = (int)(xs64(&seed) % 700);
            if (stride == 1)
                nr = (int)((i * 17 / 10) % 700);
            if (used[nr])
                continue;
            used[nr] = true;
            if (xs64(&seed) % 8 == 0)
                act = acts[xs64(&seed) % 5];
            r->nr[r->n] = nr;
            r->act[r->n++] = act;
        }
        size_t nc = xs64(&seed) % 4;
        for (size_t i = 0; i < nc; i++) {
            int nr = 700 + (int)i * 3;
            uint64_t mask = xs64(&seed);
            if (i == 1)
                mask &= 0xffffffffull; /* low word only */
            if (i == 2)
                mask &= 0xffffffff00000000ull; /* high word only */
            if (!mask)
                mask = 1;
            r->conds[r->nconds++] = (struct seccomp_cond){nr, (int)(xs64(&seed) % 6), mask,
                                                          acts[xs64(&seed) % 5],
                                                          acts[xs64(&seed) % 5]};
        }
        int len = seccomp_compact_build(r, p, BPF_MAXINSNS);
        if (len == -E2BIG)
            continue; /* too many runs for 8-bit jumps: the caller keeps libseccomp's */
        ASSERT_MSG(len > 0, "round %d: build gave %d", round, len);
        built++;
        for (uint32_t nr = 0; nr < 1200; nr++) {
            uint32_t nrs[] = {nr, 0x40000000u + nr, 0xffffffffu - nr};
            for (size_t k = 0; k < 3; k++) {
                struct seccomp_data d = {.nr = (int)nrs[k], .arch = r->arch};
                for (int a = 0; a < 6; a++)
                    d.args[a] = xs64(&seed) & (xs64(&seed) % 2 ? ~0ull : 0);
                bool ok;
                uint32_t got = seccomp_bpf_run(p, (size_t)len, &d, &ok);
                ASSERT(ok);
                ASSERT_MSG(got == rules_lookup(r, &d), "round %d nr 0x%x: 0x%x, want 0x%x",
                           round, nrs[k], got, rules_lookup(r, &d));
            }
        }
        struct seccomp_data foreign = {.nr = 0, .arch = 0x40000003u};
        bool ok;
        ASSERT_EQ(seccomp_bpf_run(p, (size_t)len, &foreign, &ok), r->badarch);
    }
    ASSERT_MSG(built > 150, "only %d of 200 rule sets compiled", built);
    free(p);
    free(r);
}

TEST(compact_compiler_refuses_inconsistent_or_oversized_rules)
{
    struct seccomp_rules *r = calloc(1, sizeof *r);
    struct sock_filter p[BPF_MAXINSNS];
    ASSERT(r);
    r->arch = 0xc000003eu;
    r->x32_bit = true;
    r->dflt = SECCOMP_RET_ERRNO | 38;
    r->badarch = SECCOMP_RET_USER_NOTIF;
    r->nr[0] = r->nr[1] = 5;
    r->act[0] = r->act[1] = SECCOMP_RET_ALLOW;
    r->n = 2;
    ASSERT_EQ(seccomp_compact_build(r, p, BPF_MAXINSNS), -EINVAL); /* listed twice */
    r->n = 1;
    r->conds[0] = (struct seccomp_cond){5, 0, 1, SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF};
    r->nconds = 1;
    ASSERT_EQ(seccomp_compact_build(r, p, BPF_MAXINSNS), -EINVAL); /* plain and conditional */
    r->nconds = 0;
    r->nr[0] = 0x40000001;
    ASSERT_EQ(seccomp_compact_build(r, p, BPF_MAXINSNS), -EINVAL); /* an x32 number */
    /* every other number allowed: 400 runs, jumps beyond 255 */
    r->n = 0;
    for (int nr = 0; nr < 800; nr += 2) {
        r->nr[r->n] = nr;
        r->act[r->n++] = SECCOMP_RET_ALLOW;
    }
    ASSERT_EQ(seccomp_compact_build(r, p, BPF_MAXINSNS), -E2BIG);
    ASSERT_EQ(seccomp_compact_build(r, p, 10), -E2BIG); /* no room */
    free(r);
}

TEST(bpf_interpreter_and_equivalence_catch_faults)
{
    struct seccomp_data d = {.nr = 1, .arch = 0xc000003eu};
    bool ok;
    struct sock_filter past_end[] = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
                                     BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1, 5, 0),
                                     BPF_STMT(BPF_RET | BPF_K, 0)};
    seccomp_bpf_run(past_end, 3, &d, &ok);
    ASSERT(!ok);
    struct sock_filter no_ret[] = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0)};
    seccomp_bpf_run(no_ret, 1, &d, &ok);
    ASSERT(!ok);
    struct sock_filter bad_load[] = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 64),
                                     BPF_STMT(BPF_RET | BPF_K, 0)};
    seccomp_bpf_run(bad_load, 2, &d, &ok);
    ASSERT(!ok);
    struct sock_filter good[] = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
                                 BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 1),
                                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 1)};
    ASSERT_EQ(seccomp_bpf_run(good, 4, &d, &ok), SECCOMP_RET_ALLOW);
    ASSERT(ok);

    /* one changed action in the real compact program is found, with where */
    char err[256], why[512] = "";
    struct seccomp_rules *r = malloc(sizeof *r);
    ASSERT(r);
    ASSERT_EQ(seccomp_policy_rules(SECCOMP_POLICY_DEFAULT, r, err, sizeof err), 0);
    struct seccomp_prog c;
    ASSERT_EQ(seccomp_policy_build_fresh(SECCOMP_POLICY_DEFAULT, true, &c, err, sizeof err), 0);
    struct sock_filter *bent = malloc(c.len * sizeof *bent);
    ASSERT(bent);
    memcpy(bent, c.insns, c.len * sizeof *bent);
    int flipped = 0;
    for (int i = c.len - 1; i >= 0 && !flipped; i--)
        if (bent[i].code == (BPF_RET | BPF_K) && bent[i].k == SECCOMP_RET_USER_NOTIF) {
            bent[i].k = SECCOMP_RET_ALLOW; /* every audited call would pass */
            flipped = 1;
        }
    ASSERT(flipped);
    ASSERT_EQ(seccomp_bpf_equivalent(bent, c.len, c.insns, c.len, r, why, sizeof why), 0);
    ASSERT_CONTAINS(why, "nr ");
    free(bent);
    seccomp_prog_free(&c);
    free(r);
}
