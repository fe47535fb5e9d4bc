/* sandbox_testlib.c - see sandbox_testlib.h. */
#include "sandbox_testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "sandbox/seccomp.h"
#include "test.h"
#include "util/timeutil.h"

pthread_mutex_t fx_mu = PTHREAD_MUTEX_INITIALIZER;
size_t fx_nev;
struct netwatch_event fx_ev[FX_MAXEV];

static void fx_on_event(const struct netwatch_event *ev, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&fx_mu);
    if (fx_nev < FX_MAXEV)
        fx_ev[fx_nev++] = *ev;
    pthread_mutex_unlock(&fx_mu);
}

struct fx_ctl {
    int listener; /* fd number in the child, or -errno */
    int mask;     /* which DNS fds came, bit per NETWATCH_DNS_* */
    int cloexec;
};

void fx_say(int out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    if (write(out, line, (size_t)n) < 0) {
    }
}

static int lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(s);
    return rc < 0 ? -e : 0;
}

static int fx_stub_resolv(void)
{
    char path[] = "/tmp/clearbox-resolv.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    const char *txt = "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n";
    if (write(fd, txt, strlen(txt)) < 0) {
    }
    close(fd);
    int rc = 0;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount(path, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0)
        rc = -errno;
    unlink(path); /* the bind mount keeps the inode */
    return rc;
}

static void fx_child(int sock, int ctlw, int out, int go, const struct fx_opts *o,
                     const struct seccomp_prog *prog, fx_body body, void *arg)
{
    struct fx_ctl ctl = {.listener = 0};
    int dns[NETWATCH_DNS_NFDS];
    int rc = 0;
    if (unshare(CLONE_NEWNET) < 0)
        rc = -errno;
    if (rc == 0 && o->no_ipv6) {
        int fd = open("/proc/sys/net/ipv6/conf/all/disable_ipv6", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "1", 1) != 1)
            rc = -EIO;
        if (fd >= 0)
            close(fd);
        fd = open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) != 1)
                rc = -EIO;
            close(fd);
        }
    }
    if (rc == 0)
        rc = lo_up();
    if (rc == 0 && o->stub_resolv)
        rc = fx_stub_resolv();
    if (rc == 0)
        rc = netwatch_dns_open(dns);
    if (rc == 0) {
        int send[NETWATCH_DNS_NFDS];
        size_t n = 0;
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            if (dns[i] >= 0) {
                send[n++] = dns[i];
                ctl.mask |= 1 << i;
            }
        rc = seccomp_fds_send(sock, send, n);
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            if (dns[i] >= 0)
                close(dns[i]);
    }
    close(sock);
    if (rc == 0)
        rc = seccomp_nnp_set();
    int lfd = -1;
    if (rc == 0) {
        lfd = seccomp_prog_load(prog); /* last step: only read/write/close follow */
        rc = lfd < 0 ? lfd : 0;
    }
    ctl.listener = rc < 0 ? rc : lfd;
    if (lfd >= 0)
        ctl.cloexec = (fcntl(lfd, F_GETFD) & FD_CLOEXEC) != 0;
    if (write(ctlw, &ctl, sizeof ctl) != sizeof ctl || rc < 0)
        _exit(100);
    close(ctlw);
    char b;
    if (read(go, &b, 1) != 1) /* the parent holds a copy of the listener now */
        _exit(101);
    close(lfd);
    _exit(body(out, go, arg));
}

/* supervise: 1 = netwatch thread here, 2 = netwatch in a separate process
 * (f->sup), 0 = no supervisor at all (the listener is closed before the child
 * goes on). */
int fx_start(struct fx *f, const struct fx_opts *o, int supervise, fx_body body, void *arg,
             char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    fx_nev = 0;
    struct seccomp_prog prog;
    int rc = seccomp_policy_build(SECCOMP_POLICY_DEFAULT, &prog, err, errlen);
    if (rc < 0)
        return rc;
    int sv[2], ctl[2], out[2], go[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ctl, O_CLOEXEC) < 0 ||
        pipe2(out, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0)
        return -errno;
    f->pid = fork();
    if (f->pid < 0)
        return -errno;
    if (f->pid == 0) {
        close(sv[0]);
        close(ctl[0]);
        close(out[0]);
        close(go[1]);
        /* the body's output must survive exec: keep it open across it */
        fcntl(out[1], F_SETFD, 0);
        fx_child(sv[1], ctl[1], out[1], go[0], o, &prog, body, arg);
    }
    seccomp_prog_free(&prog);
    close(sv[1]);
    close(ctl[1]);
    close(out[1]);
    close(go[0]);
    f->out_r = out[0];
    f->go_w = go[1];

    int fds[SECCOMP_FDS_MAX];
    int n = seccomp_fds_recv(sv[0], fds, SECCOMP_FDS_MAX, err, errlen);
    close(sv[0]);
    struct fx_ctl c;
    ssize_t r = read(ctl[0], &c, sizeof c);
    close(ctl[0]);
    if (n < 0 || r != sizeof c || c.listener < 0) {
        snprintf(err, errlen, "child setup failed: recv=%d ctl=%zd listener=%d", n, r,
                 r == sizeof c ? c.listener : 0);
        return -EIO;
    }
    f->cloexec = c.cloexec;
    f->dns_mask = c.mask;
    struct netwatch_config cfg;
    netwatch_config_init(&cfg);
    for (int i = 0, k = 0; i < NETWATCH_DNS_NFDS; i++)
        if (c.mask & (1 << i))
            cfg.dns_fds[i] = fds[k++];
    cfg.listener_fd = seccomp_listener_fetch(f->pid, c.listener, err, errlen);
    if (cfg.listener_fd < 0)
        return cfg.listener_fd;
    cfg.on_event = fx_on_event;
    if (o->max_events)
        cfg.max_events_per_reason = o->max_events;
    if (supervise == 2) {
        /* a supervisor process of its own, which the test may kill */
        f->sup = fork();
        if (f->sup < 0)
            return -errno;
        if (f->sup == 0) {
            close(f->out_r);
            close(f->go_w);
            netwatch_t *nw;
            if (netwatch_start(&cfg, &nw, NULL, 0) < 0)
                _exit(1);
            for (;;)
                pause();
        }
        close(cfg.listener_fd);
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            if (cfg.dns_fds[i] >= 0)
                close(cfg.dns_fds[i]);
    } else if (supervise) {
        rc = netwatch_start(&cfg, &f->nw, err, errlen);
        if (rc < 0)
            return rc;
    } else {
        close(cfg.listener_fd);
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            if (cfg.dns_fds[i] >= 0)
                close(cfg.dns_fds[i]);
    }
    if (write(f->go_w, "g", 1) != 1)
        return -EIO;
    return 0;
}

/* Read the child's output until EOF (or timeout_ms), reap it, stop netwatch. */
void fx_finish(struct fx *f, int timeout_ms)
{
    uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = time_mono_ns();
        if (now >= end)
            break;
        struct pollfd p = {.fd = f->out_r, .events = POLLIN};
        if (poll(&p, 1, (int)((end - now) / 1000000) + 1) <= 0)
            break;
        if (f->outlen >= sizeof f->out - 1)
            break;
        ssize_t r = read(f->out_r, f->out + f->outlen, sizeof f->out - 1 - f->outlen);
        if (r <= 0)
            break;
        f->outlen += (size_t)r;
    }
    f->out[f->outlen] = '\0';
    kill(f->pid, SIGKILL); /* no-op when it is already done */
    waitpid(f->pid, &f->status, 0);
    close(f->out_r);
    close(f->go_w);
    netwatch_stop(f->nw, &f->st);
    f->nw = NULL;
    if (f->sup > 0) {
        kill(f->sup, SIGKILL);
        waitpid(f->sup, NULL, 0);
    }
}

size_t fx_count(const char *reason, const char *sys, const char *addr)
{
    size_t n = 0;
    pthread_mutex_lock(&fx_mu);
    for (size_t i = 0; i < fx_nev; i++) {
        const struct netwatch_event *e = &fx_ev[i];
        if (reason && strcmp(e->reason_name, reason) != 0)
            continue;
        if (sys && strcmp(e->syscall, sys) != 0)
            continue;
        if (addr && strcmp(e->address, addr) != 0)
            continue;
        n++;
    }
    pthread_mutex_unlock(&fx_mu);
    return n;
}

const struct netwatch_event *fx_find(const char *sys, const char *addr)
{
    const struct netwatch_event *hit = NULL;
    pthread_mutex_lock(&fx_mu);
    for (size_t i = 0; i < fx_nev && !hit; i++)
        if ((!sys || strcmp(fx_ev[i].syscall, sys) == 0) &&
            (!addr || strcmp(fx_ev[i].address, addr) == 0))
            hit = &fx_ev[i];
    pthread_mutex_unlock(&fx_mu);
    return hit;
}

void fx_dump(void)
{
    for (size_t i = 0; i < fx_nev; i++)
        fprintf(stderr, "    event %s %s fam=%s proto=%s addr=%s port=%d host=%s\n",
                fx_ev[i].reason_name, fx_ev[i].syscall, fx_ev[i].family, fx_ev[i].protocol,
                fx_ev[i].address, fx_ev[i].port, fx_ev[i].attempted_host);
}

struct sockaddr_in fx_sin4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

struct sockaddr_in6 fx_sin6(const char *ip, int port)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

/* ---- sandbox_run() in tests ----------------------------------------------------- */

bool sb_need_root(void)
{
    if (geteuid() != 0) {
        test_skip("needs root (namespaces, cgroups)");
        return false;
    }
    return true;
}

int sb_last_cpu(const cpu_set_t *s)
{
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, s))
            last = c;
    return last;
}

const char *sb_cg_mode(void)
{
    struct statfs sf;
    struct stat st;
    if (statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC)
        return "v2";
    if (stat("/sys/fs/cgroup/pids/cgroup.procs", &st) == 0)
        return "v1";
    return "none";
}

const char *sb_cg_pids_root(void)
{
    return strcmp(sb_cg_mode(), "v2") == 0 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/pids";
}

bool sb_need_cg_v1(const char *why)
{
    if (strcmp(sb_cg_mode(), "v1") != 0) {
        char m[160];
        snprintf(m, sizeof m, "cgroup v1 only (%s); this host has %s", why, sb_cg_mode());
        test_skip(m);
        return false;
    }
    return true;
}

void sb_spec(struct sandbox_spec *s, const char *lang, const char *code)
{
    static const char *py_argv[] = {"/usr/bin/python3", "/work/main.py", NULL};
    static const char *sh_argv[] = {"/bin/sh", "/work/main.sh", NULL};
    bool py = !strcmp(lang, "python");
    memset(s, 0, sizeof *s);
    s->language = py ? "python" : "sh";
    s->code = code;
    s->code_len = strlen(code);
    s->code_name = py ? "main.py" : "main.sh";
    s->argv = py ? py_argv : sh_argv;
}

bool sb_leftovers(const char *id, char *what, size_t n)
{
    static const char *const dirs[] = {
        "/run/clearbox/%s",
        "/run/clearbox/%s.lock",
        "/sys/fs/cgroup/memory/clearbox/%s",
        "/sys/fs/cgroup/pids/clearbox/%s",
        "/sys/fs/cgroup/cpu/clearbox/%s",
        "/sys/fs/cgroup/cpuacct/clearbox/%s",
        "/sys/fs/cgroup/freezer/clearbox/%s",
        "/sys/fs/cgroup/blkio/clearbox/%s",
        "/sys/fs/cgroup/unified/clearbox/%s",
        "/sys/fs/cgroup/clearbox/%s", /* a pure v2 host */
    };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char p[512];
        struct stat st;
        snprintf(p, sizeof p, dirs[i], id);
        if (stat(p, &st) == 0) {
            snprintf(what, n, "%s", p);
            return true;
        }
    }
    return false;
}

void sb_setup_failure(const char *id, struct sandbox_result *r)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh", "echo never\n");
    static const char *bad[] = {"/usr/bin/no-such-interpreter", "/work/main.sh", NULL};
    s.argv = bad;
    s.eval_id = id;
    char err[256];
    ASSERT(sandbox_run(&s, r, err, sizeof err) < 0);
    ASSERT_EQ(r->status, SANDBOX_ERROR);
    ASSERT_CONTAINS(r->error_message, "execve");
    ASSERT_EQ(r->out.len, 0);
    char what[512];
    ASSERT_MSG(!sb_leftovers(id, what, sizeof what), "left behind: %s", what);
}
