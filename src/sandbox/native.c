/* native.c - the native engine: namespaces, pivot_root, cgroups, seccomp.
 *
 * Threat model: the program is hostile. It may try to escape (mounts, setuid
 * files, ptrace, namespaces), exhaust the host (fork, memory, CPU, disk,
 * output), reach the network, or hide what it did. The boundary is the set
 * of namespaces (user, pid, mount, net, ipc, uts, cgroup) plus the cgroup
 * limits; seccomp narrows the kernel surface and makes attempts visible.
 *
 * Processes:
 *   clearbox (parent, host root)
 *     └─ init   pid 1 of the new pid namespace, uid 0 of the new user
 *        │      namespace (host uid SANDBOX_HOST_UID_BASE, never host root).
 *        │      Builds the root, brings lo up, opens the DNS stub sockets,
 *        │      loads the seccomp filter, then forks the program (which
 *        │      inherits the filter) and reaps zombies. When the program
 *        │      ends, init reports its wait status and exits; the kernel then
 *        │      kills everything left in the pid namespace (double-forked
 *        │      daemons included), and the parent also kills the cgroup.
 *        └─ program  uid 1000 (host SANDBOX_HOST_UID_BASE + 1000), no
 *                    capabilities (bounding set emptied), no_new_privs,
 *                    rlimits, the filter (inherited, checked), then execve.
 *
 * Control channel: one SOCK_SEQPACKET socketpair, in this order.
 *   parent -> init  "G"  uid/gid maps written: go (init has already
 *                        unshared its network, IPC and UTS namespaces)
 *   init -> parent  "D" + SCM_RIGHTS, "M<mask>"  the DNS stub's sockets
 *                        (the parent starts the supervisor thread)
 *   parent -> init  "C"  cgroups made and init in them: fork the program
 *   init -> parent  "L<fd>"  init loaded the seccomp filter; its listener's
 *                        fd number (the parent copies it with pidfd_getfd)
 *   parent -> init  "A"  copied: init closes its own copy
 *   init -> parent  "X"  the program has exec'd
 *   anyone -> parent "E<message>" on a failed step, then _exit: fail closed.
 * The parent makes its cgroups while init builds the root, so the two
 * halves of the setup run in parallel (docs/sandbox.md "Performance").
 *
 * Filesystem: init (or, with --output-dir, the parent on the host) mounts a
 * tmpfs (size = disk limit, owned by the program's uid) at <state>/<id>/ws
 * holding work/ and tmp/; init mounts
 * a small tmpfs at <state>/<id>/root in its private mount namespace, fills it
 * (ro /usr, /bin /lib* links, a generated /etc, /dev with five bind-mounted
 * nodes, fresh /proc with /proc/sys ro, /work and /tmp from ws), remounts it
 * read-only and pivots into it. /sys is absent.
 *
 * The child side uses no malloc and no stdio (the parent may be threaded). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "sandbox/internal.h"
#include "sandbox/netwatch.h"
#include "sandbox/sandbox.h"
#include "sandbox/roottmpl.h"
#include "sandbox/seccomp.h"
#include "telemetry/log.h"
#include "util/err.h"
#include "util/io.h"
#include "util/fdpass.h"
#include "util/json.h"
#include "util/timeutil.h"

#define SETUP_TIMEOUT_MS 10000
#define CTL_MSG_MAX 512
#define OUTPUT_COPY_FILES_MAX 10000
#define OUTPUT_COPY_DEPTH_MAX 32

struct nrun {
    /* The CPUs we may use, and the one the parent runs on when it clones
     * init (see spread_cpus). */
    cpu_set_t cpus;
    bool have_cpus; /* cpus holds the caller's mask (the program takes it, see program_main) */
    int parent_cpu;
    const struct sandbox_spec *spec;
    struct sandbox_result *r;
    struct cgroup_mounts mounts;
    struct cgroup cg;
    char id[SANDBOX_EVAL_ID_MAX + 1];
    char sd[PATH_MAX / 4 - 64]; /* <state_dir> */
    char state[PATH_MAX / 4];   /* <state_dir>/<id> */
    char ws[PATH_MAX / 4];      /* state/ws: the workspace tmpfs */
    char root[PATH_MAX / 4];    /* state/root: init's new root */
    char work[PATH_MAX / 4], tmp[PATH_MAX / 4];
    int lock_fd;
    bool state_made, ws_mounted, root_made;
    bool lock_made; /* <sd>/<id>.lock is ours (made and locked): unlink it at the end */
    bool unpriv;      /* not root: single-uid map, workspace made by init */
    bool ws_in_init;  /* init mounts and fills the workspace in its own mount
                         namespace (unless --output-dir needs it on the host) */
    char rootfs[256]; /* "" (the host's /usr) or the rootfs directory */
    char tmpl[PATH_MAX / 4]; /* the root template (roottmpl.h), or "" */
    int stdin_fd;
    int out_p[2], err_p[2], ctl[2], status_p[2];
    const char *envp[SANDBOX_ENV_MAX + 8];
    char env_tp[128];
    struct seccomp_prog prog;
    bool have_prog;
    netwatch_t *nw;
    pthread_mutex_t ev_lock;
    pid_t init_pid;
    int pidfd;
    bool spawned; /* init is the spawner's child, not ours */
    int mntns_fd; /* init's mount namespace, held so that init's exit need not tear it down */
    int held_netns; /* init's network namespace, for netns_batch.c (or -1) */
    int decided; /* a status decided by a limit/cancel, or -1 */
    bool killed; /* we killed the sandbox */
    bool prog_done;
    int prog_wstatus;
    bool disk_full; /* init saw the workspace tmpfs full when the program ended */
    uint64_t t0, t_exec, t_end;
    uint64_t cpu_limit_ns;
    /* clock marks per phase ($CLEARBOX_PHASE_MARKS=1 prints them on stderr) */
    const char *mark_name[24];
    uint64_t mark_ns[24];
    int nmarks;
    volatile uint64_t *cmarks; /* shared page for child-side marks, or NULL */
};

static void mark(struct nrun *n, const char *what)
{
    if (n->nmarks < 24) {
        n->mark_name[n->nmarks] = what;
        n->mark_ns[n->nmarks++] = time_mono_ns();
    }
}

/* Child-side marks go into a shared page (only with CLEARBOX_PHASE_MARKS=1):
 * init and the program write clock readings there, the parent prints them. */
enum {
    CM_START, CM_G,      CM_UNSHARED, CM_ROOT,   CM_PIVOT, CM_NETNS, CM_DNS,
    CM_C,     CM_FORKED, CM_FILTER,   CM_EXEC,   CM_NETH,  CM_N
};
static const char *const cmark_names[CM_N] = {
    "init:start",     "init:go",     "init:unshared",  "init:root_built",
    "init:pivoted",   "init:netns",  "init:dns_open",  "init:cgroup_go",
    "prog:forked",    "prog:filter_on", "prog:execve", "netns_helper:done"};
static void cmark(struct nrun *n, int which)
{
    if (n->cmarks)
        n->cmarks[which] = time_mono_ns();
}

static bool marks_on(void)
{
    const char *e = getenv("CLEARBOX_PHASE_MARKS");
    return e && !strcmp(e, "1");
}

static void marks_print(const struct nrun *n)
{
    if (!marks_on())
        return;
    char line[2048];
    int len = snprintf(line, sizeof line, "phase marks (ms since start=%" PRIu64 "):", n->t0);
    for (int i = 0; i < n->nmarks && len < (int)sizeof line; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, " %s=%.3f", n->mark_name[i],
                        (double)(n->mark_ns[i] - n->t0) / 1e6);
    for (int i = 0; n->cmarks && i < CM_N && len < (int)sizeof line; i++)
        if (n->cmarks[i])
            len += snprintf(line + len, sizeof line - (size_t)len, " %s=%.3f", cmark_names[i],
                            (double)(n->cmarks[i] - n->t0) / 1e6);
    fprintf(stderr, "%s\n", line);
}

/* ======================================================================
 * Child side (init and program). No malloc, no stdio.
 * ==================================================================== */

static void child_fail(int ctl, int e, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
static void child_fail(int ctl, int e, const char *fmt, ...)
{
    char msg[CTL_MSG_MAX];
    msg[0] = 'E';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + 1, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 2)
        n = (int)sizeof msg - 2;
    if (e) {
        /* strerror_r may take gettext's locks: not in a raw-cloned child */
        const char *es = strerrordesc_np(e);
        if (!es)
            es = "unknown error";
        int m = snprintf(msg + 1 + n, sizeof msg - 1 - (size_t)n, ": %s", es);
        if (m > 0)
            n += m;
        if ((size_t)n > sizeof msg - 2)
            n = (int)sizeof msg - 2;
    }
    ssize_t w = write(ctl, msg, (size_t)n + 1);
    (void)w;
    _exit(127);
}

#define CK(ctl, expr, ...)                                                                         \
    do {                                                                                           \
        if ((expr) < 0)                                                                            \
            child_fail((ctl), errno, __VA_ARGS__);                                                 \
    } while (0)

/* Raw set*id: glibc's wrappers broadcast the change to every thread of the
 * process (setxid), and a child made with a raw clone() of a threaded parent
 * inherits a thread list of threads that do not exist in it: the wrapper
 * would wait for them forever. The kernel call changes the calling thread,
 * which in the child is the whole process. */
static int sys_setresuid(uid_t id)
{
    return (int)syscall(SYS_setresuid, id, id, id);
}

static int sys_setresgid(gid_t id)
{
    return (int)syscall(SYS_setresgid, id, id, id);
}

/* Bind src on dst, then remount with ro/nosuid/nodev, keeping the flags the
 * kernel locks in a user namespace (a remount that drops them is EPERM). */
static int bind_mount(const char *src, const char *dst, bool ro, unsigned long extra)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return -1;
    struct statfs sf;
    if (statfs(dst, &sf) < 0)
        return -1;
    unsigned long fl = MS_REMOUNT | MS_BIND | extra;
    if (ro)
        fl |= MS_RDONLY;
    if (sf.f_flags & ST_NOSUID)
        fl |= MS_NOSUID;
    if (sf.f_flags & ST_NODEV)
        fl |= MS_NODEV;
    if (sf.f_flags & ST_NOEXEC)
        fl |= MS_NOEXEC;
    if (sf.f_flags & ST_NOATIME)
        fl |= MS_NOATIME;
    if (sf.f_flags & ST_NODIRATIME)
        fl |= MS_NODIRATIME;
    if (sf.f_flags & ST_RELATIME)
        fl |= MS_RELATIME;
    return mount(NULL, dst, NULL, fl, NULL);
}

static void path_join(char *out, size_t n, const char *a, const char *b)
{
    snprintf(out, n, "%s/%s", a, b);
}

/* The mounts on the skeleton at n->root (a tmpfs, or the read-only bind of
 * the root template), and the root read-only at the end. */
static void mount_root(struct nrun *n, int ctl, bool root_ro)
{
    char p[PATH_MAX], q[PATH_MAX], src[PATH_MAX];
    /* /usr read-only, and the rootfs's top-level directories where they are
     * not links. Plain binds: mounts inside the rootfs's usr/ are not
     * carried along, so everything the program sees there is read-only. */
    snprintf(src, sizeof src, "%s/usr", n->rootfs);
    path_join(p, sizeof p, n->root, "usr");
    CK(ctl, bind_mount(src, p, true, MS_NOSUID | MS_NODEV), "bind %s", src);
    for (size_t i = 0; i < ROOTTMPL_NTOPS; i++) {
        struct stat st;
        path_join(p, sizeof p, n->root, roottmpl_tops[i]);
        if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
            continue; /* a link, or absent */
        snprintf(src, sizeof src, "%s/%s", n->rootfs, roottmpl_tops[i]);
        CK(ctl, bind_mount(src, p, true, MS_NOSUID | MS_NODEV), "bind %s", src);
    }
    /* /dev: five nodes bind-mounted from the host, nothing else */
    for (size_t i = 0; i < ROOTTMPL_NDEVS; i++) {
        snprintf(p, sizeof p, "%s/dev/%s", n->root, roottmpl_devs[i]);
        snprintf(q, sizeof q, "/dev/%s", roottmpl_devs[i]);
        /* a plain bind keeps the host /dev mount's nosuid; noexec would add
         * nothing (execve refuses a character device), so no remount */
        CK(ctl, mount(q, p, NULL, MS_BIND, NULL), "bind %s", q);
    }
    /* the workspace and /tmp: that tmpfs was mounted nosuid,nodev (by init
     * or the parent), and a bind keeps both */
    path_join(p, sizeof p, n->root, "work");
    CK(ctl, mount(n->work, p, NULL, MS_BIND, NULL), "bind workspace");
    path_join(p, sizeof p, n->root, "tmp");
    CK(ctl, mount(n->tmp, p, NULL, MS_BIND, NULL), "bind tmp");
    /* a fresh /proc for the new pid namespace; others' processes invisible */
    path_join(p, sizeof p, n->root, "proc");
    CK(ctl, mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2"), "mount /proc");
    snprintf(q, sizeof q, "%s/proc/sys", n->root);
    CK(ctl, bind_mount(q, q, true, MS_NOSUID | MS_NODEV | MS_NOEXEC), "make /proc/sys read-only");
    /* the root itself read-only (a template's bind already is) */
    if (root_ro)
        CK(ctl,
           mount(NULL, n->root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
                 NULL),
           "remount the root read-only");
}

static void loopback_up(int ctl)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CK(ctl, s, "socket for lo");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    CK(ctl, ioctl(s, SIOCGIFFLAGS, &ifr), "get lo flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    CK(ctl, ioctl(s, SIOCSIFFLAGS, &ifr), "bring lo up");
    close(s);
}

static int ws_fill(struct nrun *n, uid_t owner, char *what, size_t wl);

static void set_rlimit(int ctl, int res, rlim_t v, const char *name)
{
    struct rlimit rl = {v, v};
    CK(ctl, setrlimit(res, &rl), "setrlimit %s", name);
}

static void program_main(struct nrun *n, int ctl) __attribute__((noreturn));
static void program_main(struct nrun *n, int ctl)
{
    const struct sandbox_spec *spec = n->spec;
    cmark(n, CM_FORKED);
    /* The program starts with what a shell would give it: no signal
     * blocked (clearbox serve blocks SIGTERM/SIGINT in its threads) and no
     * signal ignored (it ignores SIGPIPE; ignored ones survive execve). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* the raw call: glibc's sigaction refuses the two real-time signals it
     * reserves for itself, and those can be ignored too */
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
    } ksa, kdfl = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP &&
            syscall(SYS_rt_sigaction, sig, NULL, &ksa, sizeof ksa.mask) == 0 &&
            ksa.handler == SIG_IGN)
            syscall(SYS_rt_sigaction, sig, &kdfl, NULL, sizeof kdfl.mask);
    close(n->status_p[1]);
    CK(ctl, dup2(n->stdin_fd, 0), "dup2 stdin");
    CK(ctl, dup2(n->out_p[1], 1), "dup2 stdout");
    CK(ctl, dup2(n->err_p[1], 2), "dup2 stderr");
    CK(ctl, chdir("/work"), "chdir /work");
    /* Capabilities: empty the bounding set while we still may, then become
     * uid 1000 (the kernel clears permitted/effective), then clear the rest
     * and read it back. */
    for (int c = 0; c <= 63; c++) {
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL && c > 0)
            break; /* past the kernel's last capability: numbers are dense */
        child_fail(ctl, errno, "drop capability %d from the bounding set", c);
    }
    CK(ctl, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
    CK(ctl, sys_setresgid(SANDBOX_UID), "setresgid");
    CK(ctl, sys_setresuid(SANDBOX_UID), "setresuid");
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    CK(ctl, syscall(SYS_capset, &hdr, data), "capset");
    CK(ctl, syscall(SYS_capget, &hdr, data), "capget");
    if (data[0].effective || data[0].permitted || data[0].inheritable || data[1].effective ||
        data[1].permitted || data[1].inheritable)
        child_fail(ctl, 0, "capabilities still held after the drop");
    uid_t ru, eu, su;
    if (getresuid(&ru, &eu, &su) < 0 || ru != SANDBOX_UID || eu != SANDBOX_UID || su != SANDBOX_UID)
        child_fail(ctl, 0, "uid is not %d after setresuid", SANDBOX_UID);
    /* every inherited fd closes at exec (ctl and init's listener copy too) */
    CK(ctl, syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC), "close_range");
    CK(ctl, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
    /* the seccomp filter came with the fork (init loaded it); read it back */
    if (n->have_prog && prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2)
        child_fail(ctl, 0, "the seccomp filter is not on");
    cmark(n, CM_FILTER);
    /* The caller's CPU mask, again: joining a v2 cgroup with the cpuset
     * controller reset it to the cpuset's CPUs (kernels before 6.2 do not
     * keep a task's own affinity across that). Best effort: a mask the
     * cpuset does not allow at all stays the cpuset's. */
    if (n->have_cpus)
        sched_setaffinity(0, sizeof n->cpus, &n->cpus);
    execve(spec->argv[0], (char *const *)spec->argv, (char *const *)n->envp);
    child_fail(ctl, errno, "execve %s", spec->argv[0]);
}

/* The network namespace costs ~0.5 ms to make (the kernel registers its
 * sysctl tables and brings up lo's device), more than the whole root. So
 * init does not make it itself: a helper task does, on the other CPU, while
 * init builds the root, and init joins it (setns) once the root is built.
 *
 * The helper shares init's memory and fd table (CLONE_VM | CLONE_FILES) and
 * nothing else: its own nsproxy, so unshare(CLONE_NEWNET) changes only it.
 * It is created by init inside the new user namespace, so the namespace it
 * makes is owned by that user namespace, exactly as if init had made it
 * (init holds CAP_SYS_ADMIN there, which setns needs). It runs on a small
 * static stack, makes only raw system calls through syscall(2) and never
 * touches the heap, stdio or locks; it leaves its answer (an fd to the new
 * namespace, or -errno) in netns_fd and exits. init reaps it with waitpid
 * before reading the answer, which orders the two. */
static char netns_stack[16384] __attribute__((aligned(64)));
static volatile int netns_fd = -1;
static volatile uint64_t netns_helper_done_ns;

static int netns_helper(void *arg)
{
    (void)arg;
    int fd;
    if (syscall(SYS_unshare, CLONE_NEWNET) < 0)
        fd = -EPERM;
    else if ((fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/thread-self/ns/net",
                                O_RDONLY | O_CLOEXEC)) < 0)
        fd = -ENOENT;
    netns_fd = fd;
    netns_helper_done_ns = time_mono_ns();
    return 0;
}

/* A new task starts on its creator's CPU and runs there only when the
 * creator sleeps or its slice ends (measured on a 2-CPU VM: 1.8 ms while the
 * creator stays busy, 0.07 ms when it waits), so work meant to run beside
 * the creator's would run after it. Send pid to the CPUs of cpus other than
 * `away` (none left: leave it). Pure system calls (init uses it). */
static void spread_cpus(pid_t pid, const cpu_set_t *cpus, int away)
{
    cpu_set_t other = *cpus;
    if (away >= 0 && away < CPU_SETSIZE)
        CPU_CLR(away, &other);
    if (CPU_COUNT(&other) > 0)
        sched_setaffinity(pid, sizeof other, &other);
}

static pid_t netns_helper_start(const struct nrun *n)
{
    /* the stack grows down: pass its top */
    pid_t h = clone(netns_helper, netns_stack + sizeof netns_stack,
                    CLONE_VM | CLONE_FILES | SIGCHLD, NULL);
    /* like init: where init is not */
    if (h > 0 && n->parent_cpu >= 0)
        spread_cpus(h, &n->cpus, sched_getcpu());
    return h;
}

/* Wait for the helper and join its namespace (after the root is built). */
static void netns_join(struct nrun *n, int ctl, pid_t helper)
{
    int st;
    while (waitpid(helper, &st, 0) < 0)
        if (errno != EINTR)
            child_fail(ctl, errno, "wait for the network namespace helper");
    if (n->cmarks)
        n->cmarks[CM_NETH] = netns_helper_done_ns;
    int fd = netns_fd;
    if (fd < 0)
        child_fail(ctl, -fd, "make the network namespace");
    CK(ctl, setns(fd, CLONE_NEWNET), "join the new network namespace");
    close(fd);
}

static int init_main(struct nrun *n) __attribute__((noreturn));
static int init_main(struct nrun *n)
{
    cmark(n, CM_START);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* Keep only our five fds, renumbered 3..7, and close everything else we
     * inherited: in a threaded parent that includes other runs' pipes and
     * control sockets, whose EOF must not wait for this sandbox. */
    int keep[5] = {n->ctl[1], n->out_p[1], n->err_p[1], n->status_p[1], n->stdin_fd};
    for (int i = 0; i < 5; i++) {
        keep[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 64);
        if (keep[i] < 0)
            _exit(127);
    }
    for (int i = 0; i < 5; i++)
        if (dup3(keep[i], 3 + i, O_CLOEXEC) < 0)
            _exit(127);
    if (syscall(SYS_close_range, 8u, ~0u, 0u) < 0)
        _exit(127);
    n->ctl[1] = 3;
    n->out_p[1] = 4;
    n->err_p[1] = 5;
    n->status_p[1] = 6;
    n->stdin_fd = 7;
    n->ctl[0] = n->out_p[0] = n->err_p[0] = n->status_p[0] = -1;
    int ctl = n->ctl[1];
    /* The new network (by the helper, see netns_helper), IPC and UTS
     * namespaces need only the capabilities we hold in the new user
     * namespace, not its id maps: start them now, while the parent writes
     * the maps and makes the cgroups. */
    pid_t nh = netns_helper_start(n);
    if (nh < 0)
        child_fail(ctl, errno, "start the network namespace helper");
    CK(ctl, unshare(CLONE_NEWIPC | CLONE_NEWUTS), "unshare the IPC and UTS namespaces");
    cmark(n, CM_UNSHARED);
    /* "G", and the root template's path when the parent has one */
    char go[1 + sizeof n->tmpl];
    ssize_t gl = read(ctl, go, sizeof go - 1);
    if (gl < 1 || go[0] != 'G')
        _exit(127); /* the parent gave up */
    go[gl] = '\0';
    memcpy(n->tmpl, go + 1, (size_t)gl);
    cmark(n, CM_G);
    /* The parent sent us to another CPU than its own (spread_cpus): back to
     * every CPU we may use, before the program inherits the mask. Here, not
     * as we start: the parent sends us away right after the clone, and we
     * may already run on the other CPU by then, so a mask restored earlier
     * could be narrowed again after it (the program then got one CPU). "G"
     * comes after that call. The netns helper gets its own mask. */
    if (n->parent_cpu >= 0)
        sched_setaffinity(0, sizeof n->cpus, &n->cpus);
    /* become uid/gid 0 of the new namespace (host SANDBOX_HOST_UID_BASE);
     * unprivileged, only SANDBOX_UID is mapped and we already are it (with
     * every capability in the new namespace, as its creator) */
    if (!n->unpriv) {
        CK(ctl, sys_setresgid(0), "setresgid 0");
        CK(ctl, sys_setresuid(0), "setresuid 0");
    }
    CK(ctl, sethostname("clearbox", 8), "sethostname");
    CK(ctl, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make / private");
    /* The root template lives in the state directory, which the scratch
     * tmpfs below covers: hold it by an fd, bind it through /proc/self/fd.
     * If we cannot reach it (a state directory under a path only the host's
     * root may traverse), the skeleton goes on a tmpfs as without one. */
    int tmpl_fd = -1;
    if (n->tmpl[0])
        tmpl_fd = open(n->tmpl, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (n->ws_in_init) {
        /* A scratch tmpfs over the state directory (in our namespace only;
         * the host never sees it) holds the two mount points. */
        CK(ctl,
           mount("tmpfs", n->sd, "tmpfs", MS_NOSUID | MS_NODEV, "size=16k,nr_inodes=8,mode=0700"),
           "mount the scratch tmpfs");
        snprintf(n->ws, sizeof n->ws, "%s/ws", n->sd);
        snprintf(n->root, sizeof n->root, "%s/root", n->sd);
        snprintf(n->work, sizeof n->work, "%s/ws/work", n->sd);
        snprintf(n->tmp, sizeof n->tmp, "%s/ws/tmp", n->sd);
        CK(ctl, mkdir(n->ws, 0700), "mkdir %s", n->ws);
        CK(ctl, mkdir(n->root, 0755), "mkdir %s", n->root);
        /* The workspace tmpfs, made here in our mount namespace: it dies
         * with the namespace, so the parent neither mounts nor unmounts on
         * the host (~0.5 ms). Unprivileged, the parent could not mount at
         * all, and we already are the program's uid. Sizes and ids are
         * read in our user namespace (uid 1000 = the program). */
        char opts[128], what[PATH_MAX + 64];
        if (n->unpriv)
            snprintf(opts, sizeof opts, "size=%" PRIu64 ",mode=0755", n->r->limits.disk_max_bytes);
        else
            snprintf(opts, sizeof opts, "size=%" PRIu64 ",mode=0755,uid=%d,gid=%d",
                     n->r->limits.disk_max_bytes, SANDBOX_UID, SANDBOX_UID);
        CK(ctl, mount("tmpfs", n->ws, "tmpfs", MS_NOSUID | MS_NODEV, opts),
           "mount the workspace tmpfs");
        int wrc = ws_fill(n, n->unpriv ? (uid_t)-1 : SANDBOX_UID, what, sizeof what);
        if (wrc < 0)
            child_fail(ctl, -wrc, "%s", what);
    }
    if (tmpl_fd >= 0) {
        /* the fixed part made once per host, read-only (roottmpl.h) */
        char fdp[32];
        snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", tmpl_fd);
        CK(ctl, bind_mount(fdp, n->root, true, MS_NOSUID | MS_NODEV), "bind the root template");
        close(tmpl_fd);
        mount_root(n, ctl, false);
    } else {
        CK(ctl,
           mount("tmpfs", n->root, "tmpfs", MS_NOSUID | MS_NODEV,
                 "size=1m,nr_inodes=128,mode=0755"),
           "mount the root tmpfs");
        /* the same skeleton, written here (roottmpl_build) */
        char what[PATH_MAX + 64];
        int brc = roottmpl_build(n->root, n->rootfs, what, sizeof what);
        if (brc < 0)
            child_fail(ctl, -brc, "%s", what);
        mount_root(n, ctl, true);
    }
    cmark(n, CM_ROOT);
    CK(ctl, chdir(n->root), "chdir to the new root");
    CK(ctl, syscall(SYS_pivot_root, ".", "."), "pivot_root");
    CK(ctl, umount2(".", MNT_DETACH), "detach the old root");
    CK(ctl, chdir("/"), "chdir /");
    cmark(n, CM_PIVOT);
    netns_join(n, ctl, nh);
    cmark(n, CM_NETNS);
    loopback_up(ctl);
    int dns[NETWATCH_DNS_NFDS];
    int rc = netwatch_dns_open(dns);
    if (rc < 0)
        child_fail(ctl, -rc, "open the DNS stub sockets");
    int pass[NETWATCH_DNS_NFDS];
    size_t np = 0;
    char have = 0;
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++) {
        if (dns[i] >= 0) {
            pass[np++] = dns[i];
            have |= (char)(1 << i);
        }
    }
    CK(ctl, fdpass_send(ctl, "D", 1, pass, np), "send the DNS sockets");
    char mask[2] = {'M', (char)('0' + have)};
    CK(ctl, write(ctl, mask, 2), "send the DNS mask");
    for (size_t i = 0; i < np; i++)
        close(pass[i]);
    cmark(n, CM_DNS);
    /* limits every process of the sandbox inherits */
    const struct sandbox_limits *l = &n->r->limits;
    set_rlimit(ctl, RLIMIT_NOFILE, l->open_files_max, "NOFILE");
    set_rlimit(ctl, RLIMIT_FSIZE, l->disk_max_bytes, "FSIZE");
    set_rlimit(ctl, RLIMIT_CORE, 0, "CORE");
    set_rlimit(ctl, RLIMIT_MEMLOCK, 64 << 10, "MEMLOCK");
    set_rlimit(ctl, RLIMIT_MSGQUEUE, 0, "MSGQUEUE");
    /* a per-process CPU backstop a little past the cgroup's limit */
    set_rlimit(ctl, RLIMIT_CPU, (rlim_t)(l->cpu_time_ms / 1000 + 2), "CPU");
    /* without a pids cgroup (unprivileged), RLIMIT_NPROC counts the tasks
     * of our uid in this user namespace: the fork bomb backstop */
    if (n->unpriv)
        set_rlimit(ctl, RLIMIT_NPROC, (rlim_t)l->pids_max, "NPROC");
    /* wait until the parent has put us in the evaluation's cgroup (its
     * limits must hold before the program exists), then root a cgroup
     * namespace there so the program sees "/" as its cgroup */
    char cgo;
    if (read(ctl, &cgo, 1) != 1 || cgo != 'C')
        _exit(127); /* the parent gave up */
    cmark(n, CM_C);
    CK(ctl, unshare(CLONE_NEWCGROUP), "unshare the cgroup namespace");
    /* The seccomp filter, loaded here so the program inherits it with the
     * fork; we need only wait4/write/statfs/exit under it. We keep the
     * listener open until we exit, so the parent can take its copy with
     * pidfd_getfd whenever it reads "L" (notifications wait in the kernel
     * meanwhile) and nobody waits for a round trip. We may load it without
     * no_new_privs: we hold CAP_SYS_ADMIN in our user namespace; the
     * program sets no_new_privs itself before execve. */
    int lfd = -1;
    if (n->have_prog) {
        lfd = seccomp_prog_load(&n->prog);
        if (lfd < 0)
            child_fail(ctl, -lfd, "load the seccomp filter");
        char m[16];
        int ml = snprintf(m, sizeof m, "L%d", lfd);
        if (write(ctl, m, (size_t)ml) != ml)
            _exit(127);
    }
    /* vfork: init's address space is a copy of clearbox's (large); the
     * program child only reads it and ends in execve or _exit, and init has
     * nothing to do until then, so sharing it saves the page-table copy.
     * Everything the child changes (ids, caps, fds, filter) is per task. */
    pid_t prog = vfork();
    if (prog < 0)
        child_fail(ctl, errno, "fork the program");
    if (prog == 0)
        program_main(n, ctl);
    /* vfork returns once the program has exec'd (or failed and said so) */
    if (send(ctl, "X", 1, MSG_NOSIGNAL) != 1)
        _exit(127);
    /* Wait for the parent's copy of the listener ("A", sent before it reads
     * "X"), then drop ours: from now on the parent's is the only one, so if
     * its supervisor goes, notified calls fail with ENOSYS, not hang. */
    if (lfd >= 0) {
        char ack;
        if (read(ctl, &ack, 1) != 1 || ack != 'A')
            _exit(1);
        close(lfd);
    }
    close(n->out_p[1]);
    close(n->err_p[1]);
    close(n->stdin_fd);
    /* reap everything; report the program's status and leave: the kernel
     * then kills whatever it left behind in this pid namespace */
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w == prog) {
            /* the wait status, and whether the workspace tmpfs is full
             * (what the disk_limit event reports) */
            struct statfs sf;
            int rep[2] = {st, statfs("/work", &sf) == 0 && sf.f_bavail == 0};
            ssize_t wr = write(n->status_p[1], rep, sizeof rep);
            (void)wr;
            _exit(0);
        }
        if (w < 0 && errno == ECHILD)
            _exit(1);
    }
}

/* ======================================================================
 * The spawner (clearbox serve).
 *
 * Cloning init from the service process copies the page tables of a large,
 * many-threaded process, and every page any of its threads then writes
 * while init lives takes a copy-on-write fault: measured, about a third of
 * the service's own CPU per evaluation. So the service forks a small,
 * single-threaded spawner at startup, before it has threads or a database,
 * and from then on asks it to clone each init. Everything else (maps,
 * cgroups, supervision, teardown) stays in the worker, which gets init's
 * pid and a pidfd back; init is the spawner's child, so the worker waits on
 * the pidfd instead of waitpid.
 *
 * One request: "S" + SCM_RIGHTS [memfd, ctl, out, err, status, stdin], the
 * memfd holding what init needs (spawn_blob_*: paths, limits, argv, env,
 * the program's files, the seccomp program); the answer "P<pid>" +
 * SCM_RIGHTS [pidfd], or "E<errno>". Requests are serialised by a mutex
 * (a clone takes ~0.1 ms). The spawner dies with the service
 * (PR_SET_PDEATHSIG) and init with the spawner; if the spawner is gone, the
 * worker clones init itself, as `clearbox run` always does.
 * ==================================================================== */
#define SPAWN_MAGIC 0x63627370u /* "cbsp" */
#define SPAWN_NFDS 6
_Static_assert(SPAWN_NFDS <= FDPASS_MAX && NETWATCH_DNS_NFDS <= FDPASS_MAX,
               "fdpass carries at most FDPASS_MAX descriptors");

struct blob {
    char *p;
    size_t len, cap;
    bool oom;
};

static void blob_put(struct blob *b, const void *d, size_t len)
{
    if (b->oom)
        return;
    if (b->len + len > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + len)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, d, len);
    b->len += len;
}

static void blob_u64(struct blob *b, uint64_t v) { blob_put(b, &v, sizeof v); }

/* a byte string (NULL and "" differ: length UINT64_MAX for NULL) */
static void blob_bytes(struct blob *b, const void *d, size_t len)
{
    blob_u64(b, d ? (uint64_t)len : UINT64_MAX);
    if (d)
        blob_put(b, d, len);
}

/* a C string, stored with its NUL */
static void blob_str(struct blob *b, const char *s) { blob_bytes(b, s, s ? strlen(s) + 1 : 0); }

struct rd {
    const char *p;
    size_t left;
    bool bad;
};

static uint64_t rd_u64(struct rd *r)
{
    uint64_t v = 0;
    if (r->bad || r->left < sizeof v) {
        r->bad = true;
        return 0;
    }
    memcpy(&v, r->p, sizeof v);
    r->p += sizeof v;
    r->left -= sizeof v;
    return v;
}

static const char *rd_bytes(struct rd *r, size_t *len)
{
    uint64_t n = rd_u64(r);
    *len = 0;
    if (r->bad || n == UINT64_MAX)
        return NULL;
    if (n > r->left) {
        r->bad = true;
        return NULL;
    }
    const char *s = r->p;
    r->p += n;
    r->left -= n;
    *len = (size_t)n;
    return s;
}

static const char *rd_str(struct rd *r)
{
    size_t n;
    const char *s = rd_bytes(r, &n);
    if (s && (n == 0 || s[n - 1] != '\0')) {
        r->bad = true;
        return NULL;
    }
    return s;
}

/* What init reads from n, in the order spawn_blob_read expects it. */
static int spawn_blob_write(const struct nrun *n, struct blob *b)
{
    const struct sandbox_spec *spec = n->spec;
    blob_u64(b, SPAWN_MAGIC);
    blob_u64(b, (uint64_t)n->unpriv | (uint64_t)n->ws_in_init << 1 | (uint64_t)n->have_prog << 2 |
                    (uint64_t)n->have_cpus << 3);
    blob_put(b, &n->r->limits, sizeof n->r->limits);
    blob_put(b, &n->cpus, sizeof n->cpus);
    blob_str(b, n->sd);
    blob_str(b, n->ws);
    blob_str(b, n->root);
    blob_str(b, n->work);
    blob_str(b, n->tmp);
    blob_str(b, n->rootfs);
    blob_str(b, spec->code_name);
    blob_bytes(b, spec->code, spec->code ? spec->code_len : 0);
    size_t nf = spec->nfiles < SANDBOX_FILES_MAX ? spec->nfiles : SANDBOX_FILES_MAX;
    blob_u64(b, nf);
    for (size_t i = 0; i < nf; i++) {
        blob_str(b, spec->files[i].name);
        blob_bytes(b, spec->files[i].data ? spec->files[i].data : "", spec->files[i].len);
        blob_u64(b, spec->files[i].executable);
    }
    size_t na = 0;
    while (spec->argv[na])
        na++;
    blob_u64(b, na);
    for (size_t i = 0; i < na; i++)
        blob_str(b, spec->argv[i]);
    size_t ne = 0;
    while (n->envp[ne])
        ne++;
    blob_u64(b, ne);
    for (size_t i = 0; i < ne; i++)
        blob_str(b, n->envp[i]);
    blob_bytes(b, n->have_prog ? (const void *)n->prog.insns : NULL,
               n->have_prog ? n->prog.len * sizeof *n->prog.insns : 0);
    return b->oom ? -ENOMEM : 0;
}

/* The spawner's side: rebuild an nrun (and the spec and limits it points
 * to) from the blob. Storage is static or malloc'd and kept until the next
 * request: init, a fork, has its own copy. */
static int spawn_blob_read(const char *p, size_t len, struct nrun *n)
{
    static struct sandbox_spec spec;
    static struct sandbox_result res;
    static const char *argv[4096];
    static struct sandbox_file files[SANDBOX_FILES_MAX];
    static struct sock_filter *insns;
    struct rd r = {p, len, false};
    memset(n, 0, sizeof *n);
    memset(&spec, 0, sizeof spec);
    memset(&res, 0, sizeof res);
    n->spec = &spec;
    n->r = &res;
    if (rd_u64(&r) != SPAWN_MAGIC)
        return -EPROTO;
    uint64_t fl = rd_u64(&r);
    n->unpriv = fl & 1;
    n->ws_in_init = (fl >> 1) & 1;
    n->have_prog = (fl >> 2) & 1;
    n->have_cpus = (fl >> 3) & 1;
    if (r.left < sizeof res.limits + sizeof n->cpus)
        return -EPROTO;
    memcpy(&res.limits, r.p, sizeof res.limits);
    r.p += sizeof res.limits;
    r.left -= sizeof res.limits;
    memcpy(&n->cpus, r.p, sizeof n->cpus);
    r.p += sizeof n->cpus;
    r.left -= sizeof n->cpus;
    struct {
        char *dst;
        size_t n;
    } paths[] = {{n->sd, sizeof n->sd},     {n->ws, sizeof n->ws},     {n->root, sizeof n->root},
                 {n->work, sizeof n->work}, {n->tmp, sizeof n->tmp}, {n->rootfs, sizeof n->rootfs}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        const char *s = rd_str(&r);
        if (!s || strlen(s) >= paths[i].n)
            return -EPROTO;
        memcpy(paths[i].dst, s, strlen(s) + 1);
    }
    spec.code_name = rd_str(&r);
    spec.code = rd_bytes(&r, &spec.code_len);
    uint64_t nf = rd_u64(&r);
    if (nf > SANDBOX_FILES_MAX)
        return -EPROTO;
    for (uint64_t i = 0; i < nf; i++) {
        files[i].name = rd_str(&r);
        files[i].data = rd_bytes(&r, &files[i].len);
        files[i].executable = rd_u64(&r) != 0;
        if (!files[i].name || !files[i].data)
            return -EPROTO;
    }
    spec.files = files;
    spec.nfiles = (size_t)nf;
    uint64_t na = rd_u64(&r);
    if (na == 0 || na >= sizeof argv / sizeof argv[0])
        return -EPROTO;
    for (uint64_t i = 0; i < na; i++)
        if (!(argv[i] = rd_str(&r)))
            return -EPROTO;
    argv[na] = NULL;
    spec.argv = argv;
    uint64_t ne = rd_u64(&r);
    if (ne >= sizeof n->envp / sizeof n->envp[0])
        return -EPROTO;
    for (uint64_t i = 0; i < ne; i++)
        if (!(n->envp[i] = rd_str(&r)))
            return -EPROTO;
    n->envp[ne] = NULL;
    size_t pl;
    const char *prog = rd_bytes(&r, &pl);
    if (r.bad ||
        (n->have_prog && (!prog || !pl || pl % sizeof *insns || pl / sizeof *insns > 0xffff)))
        return -EPROTO;
    if (n->have_prog) {
        free(insns); /* the previous request's (its init has its own copy) */
        if (!(insns = malloc(pl)))
            return -ENOMEM;
        memcpy(insns, prog, pl);
        n->prog.insns = insns;
        n->prog.len = (unsigned short)(pl / sizeof *insns);
    }
    n->decided = -1;
    n->lock_fd = n->pidfd = n->mntns_fd = n->held_netns = -1;
    n->parent_cpu = -1; /* the spawner sleeps right after the clone */
    return 0;
}

static void spawner_serve_one(int sock)
{
    char msg[16];
    int fds[SPAWN_NFDS];
    size_t nfds;
    int len = fdpass_recv(sock, msg, sizeof msg, fds, SPAWN_NFDS, &nfds);
    if (len <= 0)
        _exit(0); /* the service closed its end (or is gone): so are we */
    int e = 0, pidfd = -1;
    pid_t pid = -1;
    void *map = MAP_FAILED;
    struct stat st;
    static struct nrun nn;
    if (msg[0] != 'S' || nfds != SPAWN_NFDS || fstat(fds[0], &st) < 0 || st.st_size <= 0)
        e = EPROTO;
    if (!e && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fds[0], 0)) ==
                  MAP_FAILED)
        e = errno;
    if (!e)
        e = -spawn_blob_read(map, (size_t)st.st_size, &nn);
    if (!e) {
        nn.ctl[1] = fds[1];
        nn.out_p[1] = fds[2];
        nn.err_p[1] = fds[3];
        nn.status_p[1] = fds[4];
        nn.stdin_fd = fds[5];
        nn.ctl[0] = nn.out_p[0] = nn.err_p[0] = nn.status_p[0] = -1;
        pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_PIDFD |
                                            SIGCHLD,
                             0, &pidfd, 0, 0);
        if (pid == 0)
            init_main(&nn);
        if (pid < 0)
            e = errno;
    }
    if (map != MAP_FAILED)
        munmap(map, (size_t)st.st_size);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    char rep[32];
    int rl = e ? snprintf(rep, sizeof rep, "E%d", e) : snprintf(rep, sizeof rep, "P%d", (int)pid);
    if (fdpass_send(sock, rep, (size_t)rl, &pidfd, e ? 0 : 1) < 0 && pid > 0)
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0); /* nobody will watch it */
    if (pidfd >= 0)
        close(pidfd);
}

/* Buckets of each sandbox's own TCP hash table (spawner_own_netns). */
#define SANDBOX_TCP_EHASH_ENTRIES "1024"

/* The spawner moves into a network namespace of its own, where
 * net.ipv4.tcp_child_ehash_entries is set. The kernel reads that sysctl from
 * the namespace of the task that makes a new one, so every sandbox's network
 * namespace (its netns helper descends from the spawner) then gets its own
 * small TCP hash table instead of sharing the host's. When such a namespace
 * is destroyed the kernel purges the TIME_WAIT sockets of its own table
 * (1,024 buckets); a namespace that shares the host's table makes it walk
 * all of that one (262,144 buckets on a 24 GB host): 0.12 ms of a kernel
 * worker's CPU per evaluation measured. Nothing else changes: the sandbox's
 * namespace is new and empty either way, and the spawner never uses the
 * network. Kernels before 6.1 have no such sysctl: the spawner then goes
 * back to the namespace it came from. Best effort; the result is silent. */
static void spawner_own_netns(void)
{
    int host = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (host < 0)
        return;
    if (unshare(CLONE_NEWNET) == 0) {
        int fd = open("/proc/sys/net/ipv4/tcp_child_ehash_entries", O_WRONLY | O_CLOEXEC);
        bool set = fd >= 0 && write(fd, SANDBOX_TCP_EHASH_ENTRIES,
                                    sizeof SANDBOX_TCP_EHASH_ENTRIES - 1) ==
                                  (ssize_t)(sizeof SANDBOX_TCP_EHASH_ENTRIES - 1);
        if (fd >= 0)
            close(fd);
        if (!set && setns(host, CLONE_NEWNET) < 0)
            _exit(1); /* stranded in an empty namespace: the service says so */
    }
    close(host);
}

/* ---- the spawner's mount table ------------------------------------------------
 *
 * Every init starts as a copy of its parent's mount table (CLONE_NEWNS), makes
 * it private, pivots away from it and detaches it: all of it work per mount,
 * 5-9 us each measured (docs/benchmarks.md), which on a host with hundreds of
 * mounts (containers' overlays, kubelet volumes, snaps) is milliseconds per
 * evaluation. init binds each host path it uses plainly (never recursively),
 * so it needs only the mount that holds each of those paths and that mount's
 * ancestors; a fresh /proc needs a fully visible /proc beside it (with what is
 * mounted below it). So the spawner moves into a mount namespace of its own,
 * a slave of the host's (the host's later changes to the mounts it keeps
 * still reach it), and detaches every other mount there. Only runs that use
 * the spawner's state directory and the host's root (the service's runs) go
 * through it; any other clones init directly (spawner_covers). */
/* p is dir or below it */
static bool path_under(const char *p, const char *dir)
{
    size_t l = strlen(dir);
    if (l == 1 && dir[0] == '/')
        return p[0] == '/';
    return strncmp(p, dir, l) == 0 && (p[l] == '\0' || p[l] == '/');
}

/* realpath() of the longest existing prefix of path, the rest appended. */
static void resolve_prefix(const char *path, char *out, size_t n)
{
    char head[PATH_MAX], buf[PATH_MAX];
    snprintf(head, sizeof head, "%s", path);
    for (;;) {
        if (realpath(head, buf)) {
            const char *rest = path + strlen(head);
            snprintf(out, n, "%s%s", strcmp(buf, "/") == 0 && *rest ? "" : buf, rest);
            return;
        }
        char *slash = strrchr(head, '/');
        if (!slash || slash == head) {
            snprintf(out, n, "%s", path);
            return;
        }
        *slash = '\0';
    }
}

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void mountinfo_unescape(char *s)
{
    char *d = s;
    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *d++ = *s++;
        }
    }
    *d = '\0';
}

/* Does init need the mount at mount point mp (see above)? state_dir is the
 * state directory with its links resolved, as mountinfo names mounts. */
static bool spawner_mount_needed(const char *mp, const char *state_dir)
{
    char p[PATH_MAX];
    if (path_under(state_dir, mp) || path_under(mp, state_dir) ||
        path_under("/usr", mp) || path_under("/proc", mp) || path_under(mp, "/proc"))
        return true;
    for (size_t i = 0; i < ROOTTMPL_NTOPS; i++) {
        snprintf(p, sizeof p, "/%s", roottmpl_tops[i]);
        if (path_under(p, mp))
            return true;
    }
    for (size_t i = 0; i < ROOTTMPL_NDEVS; i++) {
        snprintf(p, sizeof p, "/dev/%s", roottmpl_devs[i]);
        if (path_under(p, mp))
            return true;
    }
    return false;
}

/* In the spawner, before it serves: the namespace above. Returns how many
 * mounts it detached, or -errno when unshare failed and the spawner is still
 * in the host's namespace (that only costs time). Once it has a namespace of
 * its own, the spawner must not serve runs that need mounts the host makes
 * later (spawner_covers), trimmed or not: 0 or more. Nothing is detached
 * unless the copy is first a slave: a detach in a copy that still shares
 * its mounts with the host's would propagate to the host. */
static int spawner_trim_mounts(const char *state_dir)
{
    if (unshare(CLONE_NEWNS) < 0)
        return -errno;
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        return 0;
    int detached = 0;
    /* a detach takes what is mounted below too, and a mount point may hold
     * several mounts stacked: read again until nothing unneeded is left */
    for (int pass = 0; pass < 8; pass++) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
            return detached;
        char line[8192];
        char(*todo)[PATH_MAX] = NULL;
        size_t nt = 0, cap = 0;
        while (fgets(line, sizeof line, f)) {
            /* id parent major:minor root mount-point options ... */
            char *sv = NULL, *mp = NULL;
            char *t = strtok_r(line, " ", &sv);
            for (int i = 0; t && i < 4; i++)
                t = strtok_r(NULL, " ", &sv);
            mp = t;
            if (!mp)
                continue;
            mountinfo_unescape(mp);
            if (spawner_mount_needed(mp, state_dir))
                continue;
            if (nt == cap) {
                size_t nc = cap ? cap * 2 : 64;
                void *m = realloc(todo, nc * sizeof *todo);
                if (!m)
                    break;
                todo = m;
                cap = nc;
            }
            snprintf(todo[nt++], PATH_MAX, "%s", mp);
        }
        fclose(f);
        if (nt == 0) {
            free(todo);
            return detached;
        }
        int before = detached;
        for (size_t i = nt; i-- > 0;) /* children before their parents */
            if (umount2(todo[i], MNT_DETACH) == 0)
                detached++;
        free(todo);
        if (detached == before)
            return detached; /* nothing more will go */
    }
    return detached;
}

static void spawner_main(int sock) __attribute__((noreturn));
static void spawner_main(int sock)
{
    for (;;) {
        /* reap the inits of finished sandboxes (the workers watch them
         * through pidfds; only their exit status is left for us) */
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        struct pollfd pf = {.fd = sock, .events = POLLIN};
        int pr = poll(&pf, 1, 200);
        if (pr < 0 && errno != EINTR)
            _exit(1);
        if (pr > 0)
            spawner_serve_one(sock);
    }
}

static struct {
    pthread_mutex_t mu;
    int sock; /* our end, -1: none (or it died) */
    pid_t pid;
    bool trimmed;                   /* it runs in a mount namespace of its own */
    char state_dir[PATH_MAX / 4]; /* ... kept for runs below this state directory */
} spw = {PTHREAD_MUTEX_INITIALIZER, -1, -1, false, ""};

/* Can init of this run come from the spawner? Only if what init will look
 * for on the host is in the spawner's trimmed mount table: the run's state
 * directory (and so its root template) at or below the spawner's, the host's
 * root (no rootfs), the workspace made by init (with --output-dir the parent
 * mounts it on the host, where the spawner may not see it). */
static bool spawner_covers(const struct nrun *n)
{
    if (!spw.trimmed)
        return true;
    return n->ws_in_init && n->rootfs[0] == '\0' && path_under(n->sd, spw.state_dir);
}

int sandbox_spawner_start(char *err, size_t errlen)
{
    if (geteuid() != 0)
        return 0; /* unprivileged: init must map our own uid, clone it ourselves */
    pthread_mutex_lock(&spw.mu);
    if (spw.sock >= 0) {
        pthread_mutex_unlock(&spw.mu);
        return 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        pthread_mutex_unlock(&spw.mu);
        return err_sys(err, errlen, -errno, "spawner socketpair");
    }
    char sd[sizeof spw.state_dir], sd_real[PATH_MAX];
    sandbox_state_dir_default(sd, sizeof sd);
    resolve_prefix(sd, sd_real, sizeof sd_real);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        pthread_mutex_unlock(&spw.mu);
        return err_sys(err, errlen, -e, "fork the spawner");
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != parent)
            _exit(0);
        prctl(PR_SET_NAME, "clearbox-spawn", 0, 0, 0);
        /* keep our socket (as fd 3) and stdio; nothing else of the service */
        if (dup3(sv[1], 3, O_CLOEXEC) < 0)
            _exit(1);
        syscall(SYS_close_range, 4u, ~0u, 0u);
        spawner_own_netns();
        /* ready: "R1" in a mount namespace of its own, "R0" in the host's */
        const char *ready = spawner_trim_mounts(sd_real) >= 0 ? "R1" : "R0";
        if (send(3, ready, 2, MSG_NOSIGNAL) != 2)
            _exit(1);
        spawner_main(3);
    }
    close(sv[1]);
    char ready[2] = {0, 0};
    struct pollfd pf = {.fd = sv[0], .events = POLLIN};
    if (poll(&pf, 1, 5000) != 1 || recv(sv[0], ready, 2, 0) != 2 || ready[0] != 'R') {
        close(sv[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pthread_mutex_unlock(&spw.mu);
        return err_set(err, errlen, -ECHILD, "the sandbox spawner did not start");
    }
    spw.sock = sv[0];
    spw.pid = pid;
    spw.trimmed = ready[1] == '1';
    snprintf(spw.state_dir, sizeof spw.state_dir, "%s", sd);
    pthread_mutex_unlock(&spw.mu);
    return 0;
}

void sandbox_spawner_stop(void)
{
    pthread_mutex_lock(&spw.mu);
    if (spw.sock >= 0) {
        close(spw.sock); /* the spawner sees EOF and exits */
        spw.sock = -1;
    }
    if (spw.pid > 0) /* also one that died or was given up on */
        waitpid(spw.pid, NULL, 0);
    spw.pid = -1;
    pthread_mutex_unlock(&spw.mu);
}

/* Ask the spawner for init. Returns its pid (and *pidfd), -ENOTCONN when
 * there is no spawner (the caller clones itself), or another -errno. */
static pid_t spawner_clone(struct nrun *n, int *pidfd, char *err, size_t errlen)
{
    if (spw.sock < 0) /* unlocked peek: it only ever goes from >= 0 to -1 */
        return -ENOTCONN;
    struct blob b = {0};
    int rc = spawn_blob_write(n, &b);
    int mfd = -1;
    if (rc == 0 && ((mfd = memfd_create("clearbox-spawn", MFD_CLOEXEC)) < 0 ||
                    io_write_all(mfd, b.p, b.len) < 0))
        rc = -errno;
    free(b.p);
    if (rc < 0) {
        if (mfd >= 0)
            close(mfd);
        return err_set(err, errlen, rc, "prepare the spawn request");
    }
    int fds[SPAWN_NFDS] = {mfd, n->ctl[1], n->out_p[1], n->err_p[1], n->status_p[1], n->stdin_fd};
    pthread_mutex_lock(&spw.mu);
    if (spw.sock < 0 || !spawner_covers(n)) {
        pthread_mutex_unlock(&spw.mu);
        close(mfd);
        return -ENOTCONN;
    }
    char rep[32];
    int got[1];
    size_t ngot = 0;
    int len = -EPIPE;
    if (fdpass_send(spw.sock, "S", 1, fds, SPAWN_NFDS) == 0) {
        /* a clone takes well under a millisecond; a spawner that has not
         * answered in SETUP_TIMEOUT_MS is stuck, and every worker waits on
         * this mutex: give up on it */
        struct pollfd pf = {.fd = spw.sock, .events = POLLIN};
        int pr;
        while ((pr = poll(&pf, 1, SETUP_TIMEOUT_MS)) < 0 && errno == EINTR)
            ;
        len = pr == 1 ? fdpass_recv(spw.sock, rep, sizeof rep - 1, got, 1, &ngot) : -ETIMEDOUT;
    }
    if (len <= 0) {
        /* the spawner is gone (or stuck): from now on every worker clones
         * init itself */
        if (len == -ETIMEDOUT && spw.pid > 0)
            kill(spw.pid, SIGKILL);
        close(spw.sock);
        spw.sock = -1;
        log_warning(log_get("sandbox"), "sandbox.spawner_lost",
                    LOG_STR("reason", len == -ETIMEDOUT ? "no answer in 10 s" : "it is gone"),
                    LOG_INT("spawner_pid", spw.pid));
        pthread_mutex_unlock(&spw.mu);
        close(mfd);
        for (size_t i = 0; i < ngot; i++)
            close(got[i]);
        return -ENOTCONN;
    }
    pthread_mutex_unlock(&spw.mu);
    close(mfd);
    rep[len] = '\0';
    if (rep[0] == 'P' && ngot == 1) {
        *pidfd = got[0];
        return (pid_t)atoi(rep + 1);
    }
    for (size_t i = 0; i < ngot; i++)
        close(got[i]);
    int e = rep[0] == 'E' ? atoi(rep + 1) : EPROTO;
    errno = e > 0 ? e : EPROTO;
    return -errno;
}

/* ======================================================================
 * Parent side.
 * ==================================================================== */

/* The hierarchies do not move while we run: detect once per process. */
static struct cgroup_mounts mounts_cached;
static int mounts_rc;
static pthread_once_t mounts_once = PTHREAD_ONCE_INIT;
static void mounts_detect_once(void)
{
    mounts_rc = cgroup_mounts_detect(&mounts_cached, NULL, NULL, 0);
}

/* Built filters, kept for the life of the process (one per policy name). */
static pthread_mutex_t prog_lock = PTHREAD_MUTEX_INITIALIZER;
static struct seccomp_prog prog_cache[4];
static size_t prog_cached;
static int prog_get(const char *name, struct seccomp_prog *out, char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&prog_lock);
    size_t i = 0;
    while (i < prog_cached && strcmp(prog_cache[i].name, name))
        i++;
    if (i == prog_cached) {
        if (prog_cached == sizeof prog_cache / sizeof prog_cache[0]) {
            rc = err_set(err, errlen, -E2BIG, "too many seccomp policies in one process");
            goto out;
        }
        if ((rc = seccomp_policy_build(name, &prog_cache[i], err, errlen)) < 0)
            goto out;
        prog_cached++;
    }
    *out = prog_cache[i]; /* shares the instructions; never freed */
out:
    pthread_mutex_unlock(&prog_lock);
    return rc;
}

int sandbox_cgroup_pool_start(const char *state_dir, const char *cgroup_parent, char *err,
                              size_t errlen)
{
    if (geteuid() != 0)
        return 0;
    pthread_once(&mounts_once, mounts_detect_once);
    if (mounts_rc < 0 || mounts_cached.mode != CGROUP_V1)
        return 0;
    char sdbuf[PATH_MAX / 4];
    if (!state_dir) {
        sandbox_state_dir_default(sdbuf, sizeof sdbuf);
        state_dir = sdbuf;
    }
    int rc = cgroup_pool_start(&mounts_cached,
                               cgroup_parent ? cgroup_parent : SANDBOX_CGROUP_PARENT_DEFAULT,
                               state_dir, err, errlen);
    return rc == -EBUSY ? 0 : rc;
}

void sandbox_cgroup_pool_stop(void) { cgroup_pool_stop(); }

static pthread_once_t groups_once = PTHREAD_ONCE_INIT;
static void drop_groups(void)
{
    if (geteuid() == 0)
        setgroups(0, NULL);
}

static int write_proc(pid_t pid, const char *file, const char *text, char *err, size_t errlen)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)pid, file);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "open %s", p);
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int e = w < 0 ? -errno : ((size_t)w == len ? 0 : -EIO);
    close(fd);
    if (e < 0)
        return err_sys(err, errlen, e, "write %s", p);
    return 0;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    size_t l = strnlen(src, n - 1);
    memcpy(dst, src, l);
    dst[l] = '\0';
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* The default state directory: /run/clearbox for root; for another user
 * $XDG_RUNTIME_DIR/clearbox (when that is a directory of theirs), else
 * /tmp/clearbox-<uid>. Either way it must turn out to be a directory owned
 * by us (state_prepare checks with lstat), so a planted one is refused. */
void sandbox_state_dir_default(char *out, size_t n)
{
    if (geteuid() == 0) {
        snprintf(out, n, "%s", SANDBOX_STATE_DIR_DEFAULT);
        return;
    }
    const char *x = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (x && x[0] == '/' && lstat(x, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
        snprintf(out, n, "%s/clearbox", x) < (int)n)
        return;
    snprintf(out, n, "/tmp/clearbox-%u", (unsigned)geteuid());
}

/* The workspace's content: work/ (the program and the --file's) and tmp/,
 * owned by owner ((uid_t)-1: leave as made). Runs in the parent (with
 * --output-dir: the tmpfs is mounted on the host, owner = the program's host
 * uid) or in init (the tmpfs lives in init's mount namespace; owner = the
 * program's uid there). No malloc: safe in the raw-cloned child. On failure
 * returns -errno, the step in what. */
static int ws_fill(struct nrun *n, uid_t owner, char *what, size_t wl)
{
    const struct sandbox_spec *spec = n->spec;
    bool do_chown = owner != (uid_t)-1;
    uid_t hu = owner;
    char p[PATH_MAX];
    if (mkdir(n->work, 0755) < 0 || (do_chown && chown(n->work, hu, hu) < 0) ||
        mkdir(n->tmp, 01777) < 0 || (do_chown && chown(n->tmp, hu, hu) < 0) ||
        chmod(n->tmp, 01777) < 0) {
        snprintf(what, wl, "prepare the workspace");
        return -errno;
    }
    size_t nf = spec->nfiles < SANDBOX_FILES_MAX ? spec->nfiles : SANDBOX_FILES_MAX;
    for (size_t i = 0; i <= nf; i++) {
        const char *name = i < nf ? spec->files[i].name : spec->code_name;
        const char *data = i < nf ? spec->files[i].data : spec->code;
        size_t len = i < nf ? spec->files[i].len : spec->code_len;
        bool x = i < nf && spec->files[i].executable;
        if (i == nf && !(spec->code && spec->code_name))
            break;
        snprintf(p, sizeof p, "%s/%s", n->work, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, x ? 0755 : 0644);
        if (fd < 0) {
            snprintf(what, wl, "create %s", p);
            return -errno;
        }
        int rc = io_write_all(fd, data, len) < 0 ? -errno : 0;
        if (rc == 0 && do_chown && fchown(fd, hu, hu) < 0)
            rc = -errno;
        close(fd);
        if (rc < 0) {
            snprintf(what, wl, "write %s (disk limit %" PRIu64 " bytes?)", p,
                     n->r->limits.disk_max_bytes);
            return rc;
        }
    }
    return 0;
}

static bool file_name_ok(const char *name)
{
    return name && *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* Before clone: the paths (init gets a copy of them) and the file names. */
static int state_paths(struct nrun *n, char *err, size_t errlen)
{
    const struct sandbox_spec *spec = n->spec;
    char sdbuf[PATH_MAX / 4];
    const char *sd = spec->state_dir;
    if (!sd) {
        sandbox_state_dir_default(sdbuf, sizeof sdbuf);
        sd = sdbuf;
    }
    if (snprintf(n->sd, sizeof n->sd, "%s", sd) >= (int)sizeof n->sd ||
        snprintf(n->state, sizeof n->state, "%s/%s", sd, n->id) >= (int)sizeof n->state ||
        snprintf(n->ws, sizeof n->ws, "%s/ws", n->state) >= (int)sizeof n->ws ||
        snprintf(n->root, sizeof n->root, "%s/root", n->state) >= (int)sizeof n->root ||
        snprintf(n->work, sizeof n->work, "%s/work", n->ws) >= (int)sizeof n->work ||
        snprintf(n->tmp, sizeof n->tmp, "%s/tmp", n->ws) >= (int)sizeof n->tmp)
        return err_set(err, errlen, -ENAMETOOLONG, "state path too long");
    if (spec->code && spec->code_name && !file_name_ok(spec->code_name))
        return err_set(err, errlen, -EINVAL, "bad workspace file name '%s'", spec->code_name);
    for (size_t i = 0; i < spec->nfiles; i++)
        if (i >= SANDBOX_FILES_MAX || !file_name_ok(spec->files[i].name))
            return err_set(err, errlen, -EINVAL, "bad workspace file name '%s' (or more than %d)",
                           i < SANDBOX_FILES_MAX && spec->files[i].name ? spec->files[i].name : "",
                           SANDBOX_FILES_MAX);
    return 0;
}

/* The state directory itself, before the clone: init mounts its scratch
 * tmpfs over it as soon as it has "G". */
static int state_dir_check(struct nrun *n, char *err, size_t errlen)
{
    const char *sd = n->sd;
    if (mkdir(sd, n->unpriv ? 0700 : 0711) < 0 && errno != EEXIST)
        return err_sys(err, errlen, -errno, "mkdir %s", sd);
    struct stat st;
    if (lstat(sd, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return err_set(err, errlen, -EPERM, "%s is not a directory owned by us", sd);
    return 0;
}

/* The run's sign of life for gc (an flock held for its whole life), and
 * with --output-dir its workspace on the host. Without --output-dir nothing
 * else of the run is on the host, so the lock is a file, <sd>/<id>.lock,
 * not a directory: nothing to mkdir and rmdir (on a disk mounted with
 * online discard, the rmdir that frees a directory's block waits for the
 * device: ~0.26 ms per run on /run here). A file left by a crashed run with
 * the same id is taken over; one a live run holds is refused. With
 * --output-dir: <sd>/<id>/ holds the lock and the mount points, before the
 * clone (init's mount namespace must see the workspace); else after "C",
 * off the way to the program. */
static int state_prepare(struct nrun *n, char *err, size_t errlen)
{
    char p[PATH_MAX];
    if (n->ws_in_init) {
        snprintf(p, sizeof p, "%s.lock", n->state);
        n->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (n->lock_fd < 0 || flock(n->lock_fd, LOCK_EX | LOCK_NB) < 0)
            return err_sys(err, errlen, -errno, "lock %s", p);
        n->lock_made = true;
        return 0;
    }
    if (mkdir(n->state, 0711) < 0)
        return err_sys(err, errlen, -errno, "mkdir %s", n->state);
    n->state_made = true;
    snprintf(p, sizeof p, "%s/lock", n->state);
    n->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (n->lock_fd < 0 || flock(n->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return err_sys(err, errlen, -errno, "lock %s", p);
    /* Mount points on the host only when the parent mounts the workspace
     * (--output-dir). Otherwise init makes its own on a scratch tmpfs: a
     * host directory that was a mount point in init's (dead) namespace costs
     * ~0.6 ms to rmdir (the kernel detaches the mount first). */
    if (mkdir(n->ws, 0700) < 0 || mkdir(n->root, 0755) < 0)
        return err_sys(err, errlen, -errno, "mkdir in %s", n->state);
    n->root_made = true;
    uid_t hu = SANDBOX_HOST_UID_BASE + SANDBOX_UID;
    char opts[128];
    snprintf(opts, sizeof opts, "size=%" PRIu64 ",mode=0755,uid=%u,gid=%u",
             n->r->limits.disk_max_bytes, (unsigned)hu, (unsigned)hu);
    if (mount("tmpfs", n->ws, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return err_sys(err, errlen, -errno, "mount the workspace tmpfs on %s", n->ws);
    n->ws_mounted = true;
    char what[PATH_MAX + 64];
    int rc = ws_fill(n, hu, what, sizeof what);
    if (rc < 0)
        return err_sys(err, errlen, rc, "%s", what);
    return 0;
}

/* Copy regular files and directories from src to dst, never following links. */
static int copy_tree(int sfd, int dfd, int depth, uint64_t *budget, unsigned *files)
{
    if (depth > OUTPUT_COPY_DEPTH_MAX)
        return -ELOOP;
    DIR *d = fdopendir(sfd);
    if (!d) {
        close(sfd);
        return -errno;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) && rc == 0) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (++*files > OUTPUT_COPY_FILES_MAX)
            return closedir(d), -E2BIG;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(dfd, de->d_name, 0755) < 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            int s2 = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d2 = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 >= 0 && d2 >= 0)
                rc = copy_tree(s2, d2, depth + 1, budget, files);
            else if (s2 >= 0)
                close(s2);
            if (d2 >= 0)
                close(d2);
        } else if (S_ISREG(st.st_mode)) {
            if ((uint64_t)st.st_size > *budget) {
                rc = -EFBIG;
                break;
            }
            int in = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            int out = openat(dfd, de->d_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                             st.st_mode & 0755);
            char b[65536];
            ssize_t r;
            while (in >= 0 && out >= 0 && (r = read(in, b, sizeof b)) > 0) {
                if ((uint64_t)r > *budget) {
                    rc = -EFBIG;
                    break;
                }
                *budget -= (uint64_t)r;
                if (io_write_all(out, b, (size_t)r) < 0) {
                    rc = -errno;
                    break;
                }
            }
            if (in >= 0)
                close(in);
            if (out >= 0)
                close(out);
        } /* symlinks, fifos, sockets, devices: skipped */
    }
    closedir(d);
    return rc;
}

static int output_copy(struct nrun *n, char *err, size_t errlen)
{
    const char *dst = n->spec->output_dir;
    if (mkdir(dst, 0755) < 0 && errno != EEXIST)
        return err_sys(err, errlen, -errno, "mkdir %s", dst);
    int s = open(n->work, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int d = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s < 0 || d < 0) {
        int e = -errno;
        if (s >= 0)
            close(s);
        if (d >= 0)
            close(d);
        return err_sys(err, errlen, e, "open %s", s < 0 ? n->work : dst);
    }
    uint64_t budget = n->r->limits.disk_max_bytes;
    unsigned files = 0;
    int rc = copy_tree(s, d, 0, &budget, &files);
    close(d);
    if (rc < 0)
        return err_sys(err, errlen, rc, "copy the workspace to %s", dst);
    return 0;
}

static void state_cleanup(struct nrun *n)
{
    if (n->ws_mounted && umount2(n->ws, MNT_DETACH) == 0)
        n->ws_mounted = false;
    if (n->state_made) {
        if (!n->ws_mounted)
            rmdir(n->ws);
        if (n->root_made)
            rmdir(n->root);
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/lock", n->state);
        unlink(p);
        if (rmdir(n->state) == 0 || errno == ENOENT)
            n->state_made = false;
    }
    if (n->lock_made) { /* unlinked while still locked: gc never takes it for a dead run's */
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s.lock", n->state);
        unlink(p);
        n->lock_made = false;
    }
    close_fd(&n->lock_fd);
}

/* Killed from outside: the old sig_atomic_t flag or the control. */
static bool cancelled(const struct nrun *n)
{
    const struct sandbox_spec *spec = n->spec;
    return (spec->cancel && *spec->cancel) || sandbox_control_killed(spec->control);
}

static void decide(struct nrun *n, enum sandbox_status s)
{
    if (n->decided < 0)
        n->decided = (int)s;
}

/* Teardown that needs nothing else done first: the run's lock file (with
 * --output-dir the state directory, removed after the copy instead) and
 * our hold on init's mount namespace. Runs in the supervisor's
 * thread as it stops (netwatch_stop_request_then) beside the rest of the
 * teardown, so it touches only these. */
static void teardown_beside(void *arg)
{
    struct nrun *n = arg;
    if (!n->ws_mounted)
        state_cleanup(n);
    close_fd(&n->mntns_fd);
}

/* SIGKILL to init (whose death takes the pid namespace along). Through the
 * pidfd: init may be the spawner's child, reaped behind our back, and a
 * pid alone could then name a new process. */
static void kill_init(struct nrun *n)
{
    if (n->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, n->pidfd, SIGKILL, NULL, 0);
    else if (n->init_pid > 0 && !n->spawned)
        kill(n->init_pid, SIGKILL);
}

static void kill_all(struct nrun *n)
{
    if (n->init_pid > 0)
        kill_init(n);
    n->killed = true;
}

/* netwatch callback: one security event (runs on the supervisor thread). */
static void on_netwatch(const struct netwatch_event *ev, void *arg)
{
    struct nrun *n = arg;
    char storage[1024];
    struct buf b;
    buf_init(&b, storage, sizeof storage, sizeof storage - 1);
    struct json w;
    json_init(&w, &b);
    /* members only: render an object and strip the braces */
    json_obj_open(&w);
    json_kv_str(&w, "syscall", ev->syscall);
    if (ev->reason == NETWATCH_NETWORK_ATTEMPT) {
        json_kv_str(&w, "family", ev->family);
        json_key(&w, "protocol");
        ev->protocol[0] ? json_str(&w, ev->protocol) : json_null_value(&w);
        json_kv_str(&w, "address", ev->address);
        json_key(&w, "port");
        ev->port >= 0 ? json_int(&w, ev->port) : json_null_value(&w);
        json_kv_str(&w, "attempted_host", ev->attempted_host);
        if (ev->dns_type[0])
            json_kv_str(&w, "dns_type", ev->dns_type);
    } else {
        json_kv_str(&w, "arch", ev->arch);
    }
    json_obj_close(&w);
    if (!json_ok(&w) || b.len < 2)
        return;
    b.data[b.len - 1] = '\0';
    pthread_mutex_lock(&n->ev_lock);
    sandbox_result_add_event(n->r, ev->reason_name, ev->blocked, b.data + 1);
    pthread_mutex_unlock(&n->ev_lock);
}

#ifndef PIDFD_GET_NET_NAMESPACE
#define PIDFD_GET_NET_NAMESPACE _IO(0xFF, 4) /* Linux 6.11 */
#endif

bool sandbox__netns_via_proc; /* tests: take the /proc way below */

/* An fd to init's network namespace (it has joined it once it sent "M"), or
 * -1: through the pidfd where the kernel can (exact; the fd comes
 * close-on-exec), else /proc/<pid>/ns/net and a check that init still lives
 * (so the pid was not reused meanwhile: init is not reaped while it lives).
 * Only held for netns_batch.c, never entered; a miss just lets the namespace
 * go with init, as without batching. */
static int init_netns_open(struct nrun *n)
{
    int fd = n->pidfd >= 0 && !sandbox__netns_via_proc
                 ? ioctl(n->pidfd, PIDFD_GET_NET_NAMESPACE, 0)
                 : -1;
    if (fd >= 0)
        return fd;
    if (n->init_pid <= 0 || n->pidfd < 0)
        return -1;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/ns/net", (int)n->init_pid);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && syscall(SYS_pidfd_send_signal, n->pidfd, 0, NULL, 0) < 0)
        close_fd(&fd);
    return fd;
}

/* Wait until the program has exec'd (or setup failed). */
static int setup_wait(struct nrun *n, char *err, size_t errlen)
{
    int dns[NETWATCH_DNS_NFDS] = {-1, -1, -1, -1};
    int got[NETWATCH_DNS_NFDS];
    size_t ngot = 0;
    int rc = 0;
    uint64_t deadline = time_mono_ns() + SETUP_TIMEOUT_MS * 1000000ull;
    for (;;) {
        uint64_t now = time_mono_ns();
        if (now >= deadline) {
            rc = err_set(err, errlen, -ETIMEDOUT, "sandbox setup took more than %d ms",
                         SETUP_TIMEOUT_MS);
            break;
        }
        if (cancelled(n)) {
            rc = -ECANCELED; /* not an error: the caller turns it into killed */
            break;
        }
        struct pollfd pf = {.fd = n->ctl[0], .events = POLLIN};
        int pr = poll(&pf, 1, 10); /* short slices: a kill must be seen soon */
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        char msg[CTL_MSG_MAX + 1];
        int fds[NETWATCH_DNS_NFDS];
        size_t nfds;
        ssize_t len = fdpass_recv(n->ctl[0], msg, CTL_MSG_MAX, fds, NETWATCH_DNS_NFDS, &nfds);
        if (len < 0) {
            rc = err_sys(err, errlen, (int)len, "read the sandbox control channel");
            break;
        }
        if (len == 0)
            break; /* EOF: init is gone (supervise() sees how) */
        msg[len] = '\0';
        if (msg[0] == 'X' && len == 1)
            break; /* the program has exec'd */
        if (msg[0] == 'E') {
            for (size_t i = 0; i < nfds; i++)
                close(fds[i]);
            rc = err_set(err, errlen, -EPERM, "sandbox setup failed: %s", msg + 1);
            break;
        } else if (msg[0] == 'D') {
            for (size_t i = 0; i < nfds; i++)
                got[ngot++] = fds[i];
        } else if (msg[0] == 'M' && len == 2) {
            mark(n, "root_built");
            if (n->held_netns < 0 && sandbox__netns_batching())
                n->held_netns = init_netns_open(n);
            int mask = msg[1] - '0';
            size_t k = 0;
            for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
                if ((mask & (1 << i)) && k < ngot)
                    dns[i] = got[k++];
            ngot = 0;
            /* start the supervisor now, while init forks the program and it
             * loads its filter; the listener follows ("L") */
            struct netwatch_config cfg;
            netwatch_config_init(&cfg);
            memcpy(cfg.dns_fds, dns, sizeof dns);
            for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
                dns[i] = -1; /* netwatch owns them now */
            cfg.on_event = on_netwatch;
            cfg.arg = n;
            cfg.max_events_per_reason = SANDBOX_EVENTS_PER_REASON;
            if ((rc = netwatch_start(&cfg, &n->nw, err, errlen)) < 0)
                break;
            mark(n, "supervisor_started");
        } else if (msg[0] == 'L') {
            mark(n, "filter_loaded");
            int fdnum = atoi(msg + 1);
            int lfd = seccomp_listener_fetch(n->init_pid, fdnum, err, errlen);
            if (lfd < 0) {
                rc = lfd;
                break;
            }
            if (!n->nw) {
                close(lfd);
                rc = err_set(err, errlen, -EPROTO, "the program's filter came before the root");
                break;
            }
            if ((rc = netwatch_set_listener(n->nw, lfd)) < 0) {
                err_set(err, errlen, rc, "hand the seccomp listener to the supervisor");
                break;
            }
            mark(n, "listener_handed");
            /* init drops its copy of the listener when it reads this */
            if (send(n->ctl[0], "A", 1, MSG_NOSIGNAL) != 1) {
                rc = err_sys(err, errlen, -errno, "ack the sandbox's init");
                break;
            }
        } else {
            for (size_t i = 0; i < nfds; i++)
                close(fds[i]);
        }
    }
    /* no seccomp: the DNS stub still runs */
    if (rc == 0 && !n->nw && (dns[0] >= 0 || dns[1] >= 0)) {
        struct netwatch_config cfg;
        netwatch_config_init(&cfg);
        memcpy(cfg.dns_fds, dns, sizeof dns);
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            dns[i] = -1;
        cfg.on_event = on_netwatch;
        cfg.arg = n;
        rc = netwatch_start(&cfg, &n->nw, err, errlen);
    }
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        if (dns[i] >= 0)
            close(dns[i]);
    for (size_t i = 0; i < ngot; i++)
        close(got[i]);
    return rc;
}

static void build_env(struct nrun *n)
{
    const struct sandbox_spec *spec = n->spec;
    static const char *const base[] = {"PATH=/usr/bin:/bin", "HOME=/work", "LANG=C.UTF-8"};
    size_t k = 0;
    for (size_t i = 0; i < 3; i++) {
        bool overridden = false;
        size_t kl = (size_t)(strchr(base[i], '=') - base[i]) + 1;
        for (size_t j = 0; spec->env && spec->env[j]; j++)
            if (!strncmp(spec->env[j], base[i], kl))
                overridden = true;
        if (!overridden)
            n->envp[k++] = base[i];
    }
    if (spec->traceparent && *spec->traceparent) {
        snprintf(n->env_tp, sizeof n->env_tp, "TRACEPARENT=%s", spec->traceparent);
        n->envp[k++] = n->env_tp;
    }
    for (size_t j = 0; spec->env && spec->env[j] && k < SANDBOX_ENV_MAX + 6; j++)
        n->envp[k++] = spec->env[j];
    n->envp[k] = NULL;
}

/* Read what is there; enforce the per-stream limit. false at EOF. */
static bool pump(struct nrun *n, int *fd, struct buf *b, bool *trunc)
{
    char chunk[65536];
    for (;;) {
        ssize_t r = read(*fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return true; /* EAGAIN */
        if (r == 0) {
            close_fd(fd);
            return false;
        }
        if (*trunc)
            continue; /* discard after the limit */
        size_t room = b->max - b->len;
        if ((size_t)r > room) {
            buf_append(b, chunk, room);
            *trunc = true;
            decide(n, SANDBOX_OUTPUT_LIMIT);
            kill_all(n);
            continue;
        }
        buf_append(b, chunk, (size_t)r);
    }
}

static void check_limits(struct nrun *n)
{
    if (n->cg.mode == CGROUP_NONE)
        return;
    cgroup_sample(&n->cg, time_mono_ns());
    cgroup_sample_events(&n->cg);
    if (n->cg.u.oom_kills > 0) {
        decide(n, SANDBOX_MEMORY_LIMIT);
        kill_all(n);
    } else if (n->cg.u.pids_max_hits > 0) {
        decide(n, SANDBOX_PIDS_LIMIT);
        kill_all(n);
    } else if (n->cg.u.cpu_total_ns >= 0 && (uint64_t)n->cg.u.cpu_total_ns >= n->cpu_limit_ns) {
        decide(n, SANDBOX_CPU_TIME_LIMIT);
        kill_all(n);
    }
}

static void progress_report(struct nrun *n, uint64_t now)
{
    struct sandbox_control *c = n->spec->control;
    const struct cgroup_usage *u = &n->cg.u;
    bool cg = n->cg.mode != CGROUP_NONE;
    struct sandbox_progress p = {
        .eval_id = n->r->eval_id,
        .elapsed_ms = (double)(now - n->t_exec) / 1e6,
        .cpu_seconds = cg && u->cpu_total_ns >= 0 ? (double)u->cpu_total_ns / 1e9 : -1,
        .memory_mb = cg && u->memory_current >= 0 ? (double)u->memory_current / 1048576.0 : -1,
        .pids = cg ? u->pids_current : -1,
    };
    pthread_mutex_lock(&n->ev_lock);
    p.security_events = n->r->nevents;
    pthread_mutex_unlock(&n->ev_lock);
    c->on_progress(&p, c->arg);
}

static void supervise(struct nrun *n)
{
    const struct sandbox_spec *spec = n->spec;
    struct sandbox_result *r = n->r;
    struct sandbox_control *ctl = spec->control;
    uint64_t deadline = n->t_exec + r->limits.wall_timeout_ms * 1000000ull;
    uint64_t next_sample = n->t_exec;
    uint64_t every = ctl && ctl->progress_interval_ms ? ctl->progress_interval_ms : 1000;
    if (every < 10)
        every = 10;
    uint64_t next_progress = n->t_exec;
    bool init_gone = false;
    uint64_t drain_deadline = 0;
    /* Until both streams are at EOF and the program's status is in: init
     * writes it on the status pipe before it exits, so we need not wait for
     * init's own exit (the kernel tears its namespaces down meanwhile, ~0.3
     * ms and more under load; the teardown below waits for it after stopping
     * the supervisor). */
    while (n->out_p[0] >= 0 || n->err_p[0] >= 0 || !(init_gone || n->prog_done)) {
        uint64_t now = time_mono_ns();
        if (cancelled(n) && !n->killed) {
            decide(n, SANDBOX_KILLED);
            kill_all(n);
        }
        if (now >= deadline && !n->killed) {
            decide(n, SANDBOX_TIMEOUT);
            kill_all(n);
        }
        if (now >= next_sample && !init_gone) {
            check_limits(n);
            /* every 5 ms for the first 20 ms (short programs get a few
             * samples of the memory integral), then every 10 ms. Every 1 ms
             * at first cost a python start 0.24 ms of wall time (13
             * wake-ups of this thread beside it on 2 CPUs); the peaks come
             * from the cgroup's own maxima, not from these samples. */
            uint64_t age = now - n->t_exec;
            next_sample = now + (age < 20000000ull ? 5000000ull : 10000000ull);
        }
        if (ctl && ctl->on_progress && !init_gone && now >= next_progress) {
            progress_report(n, now);
            next_progress = now + every * 1000000ull;
        }
        if (init_gone) {
            if (!drain_deadline)
                drain_deadline = now + 1000000000ull;
            else if (now > drain_deadline)
                break;
        }
        struct pollfd pf[4];
        int np = 0, io = -1, ie = -1, ip = -1, is = -1;
        if (n->out_p[0] >= 0)
            io = np, pf[np++] = (struct pollfd){.fd = n->out_p[0], .events = POLLIN};
        if (n->err_p[0] >= 0)
            ie = np, pf[np++] = (struct pollfd){.fd = n->err_p[0], .events = POLLIN};
        if (!init_gone)
            ip = np, pf[np++] = (struct pollfd){.fd = n->pidfd, .events = POLLIN};
        if (!n->prog_done && !init_gone)
            is = np, pf[np++] = (struct pollfd){.fd = n->status_p[0], .events = POLLIN};
        uint64_t wake = next_sample < deadline ? next_sample : deadline;
        int tmo = 10;
        if (wake > now && (wake - now) / 1000000ull < 10)
            tmo = (int)((wake - now) / 1000000ull) + 1;
        if (init_gone)
            tmo = 10;
        int pr = poll(pf, (nfds_t)np, tmo);
        if (pr <= 0)
            continue;
        if (io >= 0 && pf[io].revents)
            pump(n, &n->out_p[0], &r->out, &r->out_truncated);
        if (ie >= 0 && pf[ie].revents)
            pump(n, &n->err_p[0], &r->err, &r->err_truncated);
        if (is >= 0 && pf[is].revents) {
            int rep[2];
            ssize_t rd = read(n->status_p[0], rep, sizeof rep);
            if (rd == (ssize_t)sizeof rep) {
                n->prog_done = true;
                n->prog_wstatus = rep[0];
                n->disk_full = rep[1] != 0;
                n->t_end = time_mono_ns();
            }
        }
        if (ip >= 0 && pf[ip].revents) {
            init_gone = true;
            if (!n->t_end)
                n->t_end = time_mono_ns();
            int rep[2];
            ssize_t rd = n->prog_done ? 0 : read(n->status_p[0], rep, sizeof rep);
            if (rd == (ssize_t)sizeof rep) {
                n->prog_done = true;
                n->prog_wstatus = rep[0];
                n->disk_full = rep[1] != 0;
            }
        }
    }
    if (!n->t_end)
        n->t_end = time_mono_ns();
    mark(n, "program_ended");
}

static void finish_result(struct nrun *n)
{
    struct sandbox_result *r = n->r;
    struct cgroup_usage *u = &n->cg.u;
    if (n->prog_done) {
        if (WIFEXITED(n->prog_wstatus)) {
            r->exit_code = WEXITSTATUS(n->prog_wstatus);
        } else if (WIFSIGNALED(n->prog_wstatus)) {
            r->signal = WTERMSIG(n->prog_wstatus);
        }
    } else {
        r->signal = SIGKILL; /* we ended it */
    }
    if (n->cg.mode != CGROUP_NONE) {
        if (u->oom_kills > 0)
            decide(n, SANDBOX_MEMORY_LIMIT);
        else if (u->pids_max_hits > 0)
            decide(n, SANDBOX_PIDS_LIMIT);
        else if (u->cpu_total_ns >= 0 && (uint64_t)u->cpu_total_ns >= n->cpu_limit_ns)
            decide(n, SANDBOX_CPU_TIME_LIMIT);
    }
    if (r->signal == SIGXCPU)
        decide(n, SANDBOX_CPU_TIME_LIMIT);
    r->status = n->decided >= 0 ? (enum sandbox_status)n->decided : SANDBOX_COMPLETED;
    /* the limit that fired is a security event (DESIGN.md audit reasons) */
    char m[256];
    const struct sandbox_limits *l = &r->limits;
    switch (r->status) {
    case SANDBOX_TIMEOUT:
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"ms\"", l->wall_timeout_ms);
        break;
    case SANDBOX_CPU_TIME_LIMIT:
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"ms\",\"observed\":%" PRId64,
                 l->cpu_time_ms, u->cpu_total_ns >= 0 ? u->cpu_total_ns / 1000000 : -1);
        break;
    case SANDBOX_MEMORY_LIMIT:
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"bytes\",\"oom_kills\":%" PRId64,
                 l->memory_max_bytes, u->oom_kills);
        break;
    case SANDBOX_PIDS_LIMIT:
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"tasks\",\"refused_forks\":%" PRId64,
                 l->pids_max, u->pids_max_hits);
        break;
    case SANDBOX_OUTPUT_LIMIT:
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"bytes\",\"stream\":\"%s\"",
                 l->output_max_bytes, r->out_truncated ? "stdout" : "stderr");
        break;
    default: m[0] = '\0';
    }
    if (m[0])
        sandbox_result_add_event(r, sandbox_status_name(r->status), true, m);
    if (r->signal == SIGXFSZ) {
        snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"bytes\"", l->disk_max_bytes);
        sandbox_result_add_event(r, "file_size_limit", true, m);
    }
    if (r->signal)
        r->exit_code = -1;
}

static void fill_resources(struct nrun *n)
{
    struct sandbox_result *r = n->r;
    struct sandbox_resources *s = &r->res;
    struct cgroup_usage *u = &n->cg.u;
    s->wall_seconds = (double)(n->t_end - n->t_exec) / 1e9;
    s->container_count = 1;
    if (n->cg.mode == CGROUP_NONE) {
        sandbox_result_degrade(r, "accounting");
        s->estimated_cost_cents = r->pricing.cents_per_evaluation;
        return;
    }
    if (u->cpu_user_ns >= 0)
        s->cpu_user_seconds = (double)u->cpu_user_ns / 1e9;
    if (u->cpu_system_ns >= 0)
        s->cpu_system_seconds = (double)u->cpu_system_ns / 1e9;
    if (u->cpu_total_ns >= 0)
        s->cpu_seconds = (double)u->cpu_total_ns / 1e9;
    else if (u->cpu_user_ns >= 0 && u->cpu_system_ns >= 0)
        s->cpu_seconds = s->cpu_user_seconds + s->cpu_system_seconds;
    if (u->memory_peak >= 0)
        s->memory_peak_mb = (double)u->memory_peak / (1024.0 * 1024.0);
    s->memory_mb_seconds = u->memory_mb_seconds;
    s->pids_peak = u->pids_peak;
    s->io_read_bytes = u->io_read_bytes;
    s->io_write_bytes = u->io_write_bytes;
    if (!n->cg.peak_native)
        sandbox_result_degrade(r, "memory_peak_sampled");
    if (!n->cg.pids_peak_native)
        sandbox_result_degrade(r, "pids_peak_sampled");
    if (s->cpu_seconds < 0)
        sandbox_result_degrade(r, "cpu_accounting");
    double cents = r->pricing.cents_per_evaluation;
    if (s->cpu_seconds > 0)
        cents += s->cpu_seconds * r->pricing.cents_per_cpu_second;
    if (s->memory_mb_seconds > 0)
        cents += s->memory_mb_seconds / 1024.0 * r->pricing.cents_per_gb_second;
    s->estimated_cost_cents = cents;
}

/* A rootfs directory must be an absolute path to a real directory holding
 * usr/, and neither may be writable by everyone (anyone could plant the
 * programs the sandbox runs). */
static int rootfs_check(struct nrun *n, const char *dir, char *err, size_t errlen)
{
    struct stat st;
    char usr[PATH_MAX];
    bool dotdot = false;
    for (const char *q = strstr(dir, "/.."); q && !dotdot; q = strstr(q + 1, "/.."))
        dotdot = q[3] == '/' || q[3] == '\0';
    if (dir[0] != '/' || dotdot || strlen(dir) >= sizeof n->rootfs)
        return err_set(err, errlen, -EINVAL,
                       "'%.64s' must be an absolute path without '..', "
                       "shorter than %zu bytes",
                       dir, sizeof n->rootfs);
    if (lstat(dir, &st) < 0)
        return err_sys(err, errlen, -errno, "%s", dir);
    if (!S_ISDIR(st.st_mode))
        return err_set(err, errlen, -ENOTDIR, "%s is not a directory (symlinks are refused)", dir);
    if (st.st_mode & S_IWOTH)
        return err_set(err, errlen, -EPERM, "%s is writable by everyone", dir);
    snprintf(usr, sizeof usr, "%s/usr", dir);
    if (lstat(usr, &st) < 0 || !S_ISDIR(st.st_mode))
        return err_set(err, errlen, -ENOENT, "%s has no usr/ directory", dir);
    if (st.st_mode & S_IWOTH)
        return err_set(err, errlen, -EPERM, "%s is writable by everyone", usr);
    snprintf(n->rootfs, sizeof n->rootfs, "%s", dir);
    size_t l = strlen(n->rootfs);
    while (l > 1 && n->rootfs[l - 1] == '/')
        n->rootfs[--l] = '\0';
    memcpy(n->r->rootfs, n->rootfs, sizeof n->r->rootfs);
    return 0;
}

/* Why clone into new namespaces failed, in words a user can act on. */
static const char *clone_failure(int e, char *b, size_t n)
{
    const char *es = strerrordesc_np(e) ? strerrordesc_np(e) : "error";
    if (geteuid() != 0 && (e == EPERM || e == ENOSPC || e == EACCES))
        snprintf(b, n,
                 "this host forbids unprivileged user namespaces (clone: %.32s); run clearbox as "
                 "root, or allow them (user.max_user_namespaces, "
                 "kernel.unprivileged_userns_clone, AppArmor)",
                 es);
    else
        snprintf(b, n, "clone into new namespaces: %.32s (are user namespaces allowed?)", es);
    return b;
}

static int setup_wait(struct nrun *n, char *err, size_t errlen);

/* Did init report a failed step ("E...") in the next 50 ms? Used when a
 * parent step fails in a way that may only be the consequence. */
static bool child_error(struct nrun *n, char *why, size_t wl)
{
    struct pollfd pf = {.fd = n->ctl[0], .events = POLLIN};
    char msg[CTL_MSG_MAX + 1];
    int fds[NETWATCH_DNS_NFDS];
    size_t nfds = 0;
    if (poll(&pf, 1, 50) != 1)
        return false;
    ssize_t len = fdpass_recv(n->ctl[0], msg, CTL_MSG_MAX, fds, NETWATCH_DNS_NFDS, &nfds);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    if (len < 2 || msg[0] != 'E')
        return false;
    msg[len] = '\0';
    snprintf(why, wl, "sandbox setup failed: %.200s", msg + 1);
    return true;
}

/* init is gone before it got "G" or "C": it reported why on the control
 * channel (a failed step), which is the error to show. */
static int start_failed(struct nrun *n, char *err, size_t errlen)
{
    int e = errno;
    char why[ERR_LEN];
    if (setup_wait(n, why, sizeof why) < 0)
        return sandbox__fail(n->r, -EPERM, "sandbox_setup_failed", err, errlen, "%s", why);
    return sandbox__fail(n->r, -e, "sandbox_failed", err, errlen, "start the sandbox: %s",
                         strerrordesc_np(e) ? strerrordesc_np(e) : "error");
}

/* A kill that came before the program ran: status killed, nothing ran. */
static int killed_before_exec(struct nrun *n)
{
    decide(n, SANDBOX_KILLED);
    n->killed = true;
    n->t_exec = n->t_end = time_mono_ns();
    n->r->create_ms = (double)(n->t_exec - n->t0) / 1e6;
    return 0;
}

int sandbox__native_run(const struct sandbox_spec *spec, struct sandbox_result *r, char *err,
                        size_t errlen)
{
    struct nrun nn, *n = &nn;
    memset(n, 0, sizeof *n);
    n->spec = spec;
    n->r = r;
    n->t0 = time_mono_ns();
    n->decided = -1;
    n->lock_fd = n->stdin_fd = n->pidfd = n->mntns_fd = n->held_netns = -1;
    n->out_p[0] = n->out_p[1] = n->err_p[0] = n->err_p[1] = -1;
    n->ctl[0] = n->ctl[1] = n->status_p[0] = n->status_p[1] = -1;
    pthread_mutex_init(&n->ev_lock, NULL);
    snprintf(n->id, sizeof n->id, "%s", r->eval_id);
    n->cpu_limit_ns = r->limits.cpu_time_ms * 1000000ull;
    int rc = 0;
    const char *reason = "sandbox_failed";
    char e2[ERR_LEN];

    /* Unprivileged mode: a user namespace mapping only SANDBOX_UID to our
     * own uid; no cgroup unless one is delegated to us (policy.degraded says
     * what is missing). The program never runs with less than namespaces,
     * the read-only root, seccomp, rlimits and the wall clock. */
    n->unpriv = geteuid() != 0;
    if (n->unpriv) {
        sandbox_result_degrade(r, "dedicated_uid"); /* the program's host uid is ours */
        if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1) {
            rc = sandbox__fail(r, -EPERM, "sandbox_unavailable", err, errlen,
                               "unprivileged mode needs a dumpable process (it writes its "
                               "child's /proc/PID/uid_map): after setresuid, call "
                               "prctl(PR_SET_DUMPABLE, 1) or exec");
            goto out;
        }
        if (spec->output_dir) {
            rc = sandbox__fail(r, -EOPNOTSUPP, "invalid_request", err, errlen,
                               "--output-dir needs root: unprivileged, the workspace lives only "
                               "in the sandbox's own mount namespace");
            goto out;
        }
    } else {
        pthread_once(&groups_once, drop_groups);
    }

    /* seccomp policy (parent side, may allocate) */
    const char *pol = spec->seccomp_policy ? spec->seccomp_policy : SECCOMP_POLICY_DEFAULT;
    if (spec->no_seccomp) {
        sandbox_result_degrade(r, "seccomp");
        snprintf(r->seccomp_name, sizeof r->seccomp_name, "none");
    } else {
        /* built once per process and policy: libseccomp takes ~4 ms */
        if ((rc = prog_get(pol, &n->prog, e2, sizeof e2)) < 0) {
            rc = sandbox__fail(r, rc, "policy_invalid", err, errlen, "seccomp policy: %s", e2);
            goto out;
        }
        n->have_prog = true;
        copy_str(r->seccomp_name, sizeof r->seccomp_name, n->prog.name);
        copy_str(r->seccomp_sha256, sizeof r->seccomp_sha256, n->prog.sha256);
        mark(n, "seccomp_built");
        copy_str(r->seccomp_name, sizeof r->seccomp_name, n->prog.name);
        copy_str(r->seccomp_sha256, sizeof r->seccomp_sha256, n->prog.sha256);
    }

    n->ws_in_init = n->unpriv || !spec->output_dir;
    if (spec->rootfs && (rc = rootfs_check(n, spec->rootfs, e2, sizeof e2)) < 0) {
        rc = sandbox__fail(r, rc, "invalid_request", err, errlen, "rootfs: %s", e2);
        goto out;
    }
    if (marks_on()) {
        void *pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (pg != MAP_FAILED)
            n->cmarks = pg;
    }
    /* With --output-dir the parent mounts the workspace on the host, which
     * init's mount namespace only sees if it is there before the clone. */
    if ((rc = state_paths(n, e2, sizeof e2)) < 0 || (rc = state_dir_check(n, e2, sizeof e2)) < 0 ||
        (!n->ws_in_init && (rc = state_prepare(n, e2, sizeof e2)) < 0)) {
        rc = sandbox__fail(r, rc, "workspace_failed", err, errlen, "workspace: %s", e2);
        goto out;
    }
    /* The root template (privileged runs): made once per host, checked on
     * every run (~10 us; ~50 us in a fresh process). Here, before the clone:
     * after it, init's network-namespace helper shares our CPU and would
     * hold "G" back behind its ~0.45 ms in the kernel. Without a template,
     * init builds the same skeleton on a tmpfs, as unprivileged runs do. */
    if (!n->unpriv && roottmpl_ensure(n->sd, n->rootfs, n->tmpl, sizeof n->tmpl, e2, sizeof e2) < 0) {
        log_warning(log_get("sandbox"), "sandbox.root_template_failed", LOG_STR("eval_id", n->id),
                    LOG_STR("error", e2));
        n->tmpl[0] = '\0';
    }
    if (spec->stdin_data) {
        n->stdin_fd = memfd_create("stdin", MFD_CLOEXEC);
        if (n->stdin_fd < 0 || io_write_all(n->stdin_fd, spec->stdin_data, spec->stdin_len) < 0 ||
            lseek(n->stdin_fd, 0, SEEK_SET) < 0) {
            rc = sandbox__fail(r, -errno, reason, err, errlen, "stdin: %s",
                               strerror_r(errno, e2, sizeof e2));
            goto out;
        }
    } else {
        n->stdin_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (n->stdin_fd < 0 || pipe2(n->out_p, O_CLOEXEC) < 0 || pipe2(n->err_p, O_CLOEXEC) < 0 ||
        pipe2(n->status_p, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, n->ctl) < 0) {
        rc = sandbox__fail(r, -errno, reason, err, errlen, "pipes: %s",
                           strerror_r(errno, e2, sizeof e2));
        goto out;
    }
    build_env(n);
    mark(n, "pipes_ready");
    if (cancelled(n)) {
        rc = killed_before_exec(n);
        goto out;
    }

    /* user, pid and mount namespaces here; init unshares the network (the
     * costly one: ~0.4 ms), IPC and UTS namespaces itself, in parallel with
     * our cgroup work. They are owned by the new user namespace either way. */
    /* Left on our CPU, init would wait for our maps, state directory and
     * cgroups, and the "parallel" halves of the setup would run one after
     * the other: a directly cloned init is sent to another CPU
     * (spread_cpus) and takes its full mask back once it has "G". */
    n->parent_cpu = -1;
    n->have_cpus = sched_getaffinity(0, sizeof n->cpus, &n->cpus) == 0;
    if (n->have_cpus && CPU_COUNT(&n->cpus) > 1)
        n->parent_cpu = sched_getcpu();
    pid_t pid = n->cmarks ? -ENOTCONN : spawner_clone(n, &n->pidfd, e2, sizeof e2);
    if (pid > 0) {
        n->spawned = true; /* the spawner's child: watched through the pidfd */
    } else if (pid == -ENOTCONN) {
        pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, 0, 0,
                             0, 0);
        if (pid == 0)
            init_main(n);
        if (pid < 0) {
            pid = -errno;
        } else {
            n->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
            if (n->parent_cpu >= 0)
                spread_cpus(pid, &n->cpus, n->parent_cpu);
        }
    }
    if (pid < 0) {
        rc = sandbox__fail(r, pid, "namespace_failed", err, errlen, "%s",
                           clone_failure(-pid, e2, sizeof e2));
        goto out;
    }
    n->init_pid = pid;
    close_fd(&n->ctl[1]);
    close_fd(&n->out_p[1]);
    close_fd(&n->err_p[1]);
    close_fd(&n->status_p[1]);
    close_fd(&n->stdin_fd);
    {
        char mp[64];
        snprintf(mp, sizeof mp, "/proc/%d/ns/mnt", (int)pid);
        n->mntns_fd = open(mp, O_RDONLY | O_CLOEXEC);
    }
    mark(n, "cloned");
    char map[128], gmap[128];
    if (n->unpriv) {
        /* an unprivileged writer may map its own ids, once each */
        snprintf(map, sizeof map, "%u %u 1\n", SANDBOX_UID, (unsigned)geteuid());
        snprintf(gmap, sizeof gmap, "%u %u 1\n", SANDBOX_UID, (unsigned)getegid());
    } else {
        snprintf(map, sizeof map, "0 %u 1\n%u %u 1\n", SANDBOX_HOST_UID_BASE, SANDBOX_UID,
                 SANDBOX_HOST_UID_BASE + SANDBOX_UID);
        snprintf(gmap, sizeof gmap, "%s", map);
    }
    if (n->pidfd < 0) {
        rc = sandbox__fail(r, -errno, reason, err, errlen, "pidfd_open: %s",
                           strerror_r(errno, e2, sizeof e2));
        goto out;
    }
    if ((rc = write_proc(pid, "setgroups", "deny", e2, sizeof e2)) < 0 ||
        (rc = write_proc(pid, "uid_map", map, e2, sizeof e2)) < 0 ||
        (rc = write_proc(pid, "gid_map", gmap, e2, sizeof e2)) < 0) {
        char why[ERR_LEN];
        if (child_error(n, why, sizeof why)) /* init failed first (its unshare) */
            rc = sandbox__fail(r, -EPERM, "sandbox_setup_failed", err, errlen, "%s", why);
        else
            rc = sandbox__fail(r, rc, "namespace_failed", err, errlen, "user namespace: %s", e2);
        goto out;
    }
    mark(n, "maps_written");
    /* Go: init builds its root (its helper makes the network namespace)
     * while we make the state directory and make and join the cgroups (the
     * two halves run in parallel); it waits for "C" before it forks the
     * program. */
    /* "G", with the root template's path (checked before the clone) */
    char g[1 + sizeof n->tmpl];
    size_t glen = (size_t)snprintf(g, sizeof g, "G%s", n->tmpl);
    if (send(n->ctl[0], g, glen, MSG_NOSIGNAL) != (ssize_t)glen) {
        rc = start_failed(n, err, errlen);
        goto out;
    }
    /* where the cgroup hierarchies are (read once per process, here where
     * init is busy with its network namespace: off the path to the program) */
    if (spec->cgroup_root) {
        rc = cgroup_mounts_detect(&n->mounts, spec->cgroup_root, e2, sizeof e2);
    } else {
        pthread_once(&mounts_once, mounts_detect_once);
        rc = mounts_rc;
        n->mounts = mounts_cached;
        snprintf(e2, sizeof e2, "cannot read /proc/self/mountinfo");
    }
    if (rc < 0) {
        rc = sandbox__fail(r, rc, "cgroup_failed", err, errlen, "cgroup: %s", e2);
        goto out;
    }
    snprintf(r->cgroup_mode, sizeof r->cgroup_mode, "%s", cgroup_mode_name(n->mounts.mode));
    if (n->mounts.mode == CGROUP_NONE) {
        sandbox_result_degrade(r, "memory_limit");
        sandbox_result_degrade(r, "pids_limit");
        sandbox_result_degrade(r, "cpu_limit");
    }

    /* cgroups: made and joined after the clone (below) */
    struct cgroup_limits cl = {r->limits.memory_max_bytes, r->limits.pids_max,
                               r->limits.cpu_cores_milli};
    rc = n->mounts.mode == CGROUP_NONE
             ? 0
             : cgroup_create(&n->cg, &n->mounts,
                             spec->cgroup_parent ? spec->cgroup_parent
                                                 : SANDBOX_CGROUP_PARENT_DEFAULT,
                             n->id, &cl, e2, sizeof e2);
    if (rc < 0 && n->unpriv && (rc == -EACCES || rc == -EPERM || rc == -EROFS)) {
        /* no cgroup delegated to this user: run without, and say so */
        memset(&n->cg, 0, sizeof n->cg);
        n->cg.mode = CGROUP_NONE;
        snprintf(r->cgroup_mode, sizeof r->cgroup_mode, "none");
        sandbox_result_degrade(r, "memory_limit");
        sandbox_result_degrade(r, "pids_limit");
        sandbox_result_degrade(r, "cpu_limit");
        rc = 0;
    }
    if (rc < 0) {
        rc = sandbox__fail(r, rc, "cgroup_failed", err, errlen, "cgroup: %s", e2);
        goto out;
    }
    if (n->cg.mode != CGROUP_NONE && !n->cg.swap_limited)
        sandbox_result_degrade(r, "swap_limit");
    if (n->cg.mode == CGROUP_V1 && !n->cg.made[CG_FREEZER])
        sandbox_result_degrade(r, "freezer");
    mark(n, "cgroup_made");
    if ((rc = cgroup_attach(&n->cg, pid, e2, sizeof e2)) < 0) {
        rc = sandbox__fail(r, rc, "cgroup_failed", err, errlen, "cgroup: %s", e2);
        goto out;
    }
    mark(n, "cgroup_attached");
    if (send(n->ctl[0], "C", 1, MSG_NOSIGNAL) != 1) {
        rc = start_failed(n, err, errlen);
        goto out;
    }
    /* The run's lock file (what tells `clearbox gc` the run is alive) while
     * init loads the filter and forks the program: on the way to "C" it cost
     * ~0.07 ms (an ext4 /run here). gc leaves cgroups younger
     * than GC_MIN_AGE_S alone, so the moment before it exists is covered. */
    if (n->ws_in_init && (rc = state_prepare(n, e2, sizeof e2)) < 0) {
        rc = sandbox__fail(r, rc, "workspace_failed", err, errlen, "workspace: %s", e2);
        goto out;
    }
    mark(n, "workspace_ready");
    if ((rc = setup_wait(n, e2, sizeof e2)) == -ECANCELED) {
        rc = killed_before_exec(n);
        goto out;
    }
    if (rc < 0) {
        rc = sandbox__fail(r, rc, "sandbox_setup_failed", err, errlen, "%s", e2);
        goto out;
    }
    close_fd(&n->ctl[0]);
    fcntl(n->out_p[0], F_SETFL, O_NONBLOCK);
    fcntl(n->err_p[0], F_SETFL, O_NONBLOCK);
    fcntl(n->status_p[0], F_SETFL, O_NONBLOCK);
    n->t_exec = time_mono_ns();
    mark(n, "exec");
    r->create_ms = (double)(n->t_exec - n->t0) / 1e6;

    supervise(n);

out:;
    /* teardown: always, whatever happened above */
    uint64_t t_td = time_mono_ns();
    if (n->init_pid > 0 && (!n->t_exec || !n->prog_done))
        kill_init(n);
    /* The supervisor's thread winds down while init is still exiting (see
     * supervise()) and we reap it: the two wake-ups overlap. A call still
     * pending in the sandbox then fails (ENOSYS), never passes; init's exit
     * kills whatever could still make one. On its way out the thread removes
     * the run's lock file (unless the workspace is on the host for
     * --output-dir) and drops init's mount namespace (each a filesystem round
     * trip: ~0.15 ms together) while we reap init and read and remove the
     * cgroups. */
    if (n->nw) {
        netwatch_stop_request_then(n->nw, teardown_beside, n);
    } else {
        teardown_beside(n);
        mark(n, "workspace_removed");
    }
    if (n->init_pid > 0 && n->spawned) {
        /* the spawner reaps it; its pidfd becomes readable when it is gone */
        struct pollfd pf = {.fd = n->pidfd, .events = POLLIN};
        while (poll(&pf, 1, -1) < 0 && errno == EINTR)
            ;
    } else if (n->init_pid > 0) {
        int st;
        while (waitpid(n->init_pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    mark(n, "init_reaped");
    if (n->cg.mode != CGROUP_NONE) {
        if (cgroup_kill(&n->cg, 2000, e2, sizeof e2) < 0 && rc == 0)
            rc = sandbox__fail(r, -EBUSY, "teardown_failed", err, errlen, "%s", e2);
        cgroup_finish(&n->cg, time_mono_ns());
    }
    mark(n, "cgroup_killed");
    if (rc == 0) {
        finish_result(n);
        fill_resources(n);
        struct statfs sf;
        if (n->disk_full || (n->ws_mounted && statfs(n->ws, &sf) == 0 && sf.f_bavail == 0)) {
            char m[96];
            snprintf(m, sizeof m, "\"limit\":%" PRIu64 ",\"unit\":\"bytes\"",
                     r->limits.disk_max_bytes);
            sandbox_result_add_event(r, "disk_limit", true, m);
        }
        if (n->ws_mounted && spec->output_dir && output_copy(n, e2, sizeof e2) < 0)
            sandbox_result_add_event(r, "output_copy_failed", false, NULL);
    }
    if (n->ws_mounted) { /* --output-dir: after the copy */
        state_cleanup(n);
        mark(n, "workspace_removed");
    }
    if (n->cg.mode != CGROUP_NONE && cgroup_destroy(&n->cg, e2, sizeof e2) < 0 && rc == 0)
        rc = sandbox__fail(r, -EBUSY, "teardown_failed", err, errlen, "%s", e2);
    mark(n, "cgroup_removed");
    /* joins the thread: teardown_beside has run (there or here) */
    netwatch_stop(n->nw, NULL);
    n->nw = NULL;
    mark(n, "supervisor_stopped");
    if (n->state_made || n->lock_made || n->lock_fd >= 0) /* a setup that failed before the supervisor */
        state_cleanup(n);
    close_fd(&n->mntns_fd);
    /* every process of the sandbox is gone: its namespace may wait for a batch */
    sandbox__netns_put(n->held_netns);
    n->held_netns = -1;
    close_fd(&n->pidfd);
    close_fd(&n->stdin_fd);
    close_fd(&n->ctl[0]);
    close_fd(&n->ctl[1]);
    for (int i = 0; i < 2; i++) {
        close_fd(&n->out_p[i]);
        close_fd(&n->err_p[i]);
        close_fd(&n->status_p[i]);
    }
    pthread_mutex_destroy(&n->ev_lock);
    uint64_t t_done = time_mono_ns();
    if (n->t_exec) {
        r->execute_ms = (double)(n->t_end - n->t_exec) / 1e6;
    } else {
        r->create_ms = (double)(t_td - n->t0) / 1e6;
    }
    r->teardown_ms = (double)(t_done - t_td) / 1e6;
    r->duration_ms = (double)(t_done - n->t0) / 1e6;
    marks_print(n);
    if (n->cmarks)
        munmap((void *)n->cmarks, 4096);
    return rc;
}
