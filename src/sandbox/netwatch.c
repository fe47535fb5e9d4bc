/* netwatch.c - seccomp user-notification supervisor and DNS stub (see
 * netwatch.h for the promises).
 *
 * One thread polls: a stop eventfd, the seccomp listener, the four DNS stub
 * sockets and up to NW_TCP_MAX DNS-over-TCP connections. Everything it does
 * per wake-up is bounded, so a hostile program can slow itself down but not
 * make the supervisor allocate or block:
 *   - a notification is answered before its events are delivered, so the
 *     callback's cost is not added to the sandboxed call;
 *   - memory of the sandboxed process is read with process_vm_readv into
 *     fixed buffers (a sockaddr is at most sizeof(struct sockaddr_storage),
 *     sendmmsg is read for at most NW_MMSG_MAX messages), with
 *     SECCOMP_IOCTL_NOTIF_ID_VALID before and after, so a pid that died and
 *     was reused between RECV and the read is never mistaken for the caller;
 *   - UDP datagrams are drained at most NW_UDP_BATCH per wake-up.
 * The decision never depends on what was read for safety: allowed calls
 * CONTINUE and the network namespace stops what must not leave. What is read
 * only feeds the report. Denials depend on registers only (syscall number,
 * socket() arguments, personality value), which a program cannot change after
 * the fact.
 *
 * Reasons and what is reported:
 *   socket(AF_PACKET | SOCK_RAW on inet)  -EPERM, network_attempt (raw/packet)
 *   socket(other families, netlink other than NETLINK_ROUTE)
 *                                         -EPERM, blocked_syscall "socket"
 *   connect/sendto/sendmsg/sendmmsg to a non-loopback inet/inet6 address
 *                                         CONTINUE, network_attempt
 *   bind, loopback, unix, netlink         CONTINUE, not reported
 *   personality(0|8|0x20000|0x20008|0xffffffff), adjtimex/clock_adjtime with
 *   modes == 0                            CONTINUE, not reported
 *   anything else that reaches us         -EPERM, blocked_syscall */
#include "sandbox/netwatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "sandbox/seccomp.h"
#include "util/err.h"
#include "util/timeutil.h"

#define NW_TCP_MAX 16            /* concurrent DNS-over-TCP connections */
#define NW_TCP_MSG_MAX 4096      /* largest DNS message accepted over TCP */
#define NW_UDP_MSG_MAX 512       /* largest DNS query accepted over UDP */
#define NW_TCP_TIMEOUT_NS (2ull * 1000000000ull)
#define NW_UDP_BATCH 64          /* datagrams per wake-up per socket */
#define NW_MMSG_MAX 64           /* sendmmsg entries decoded per call */
#define NW_EVENTS_PER_CALL 8     /* distinct destinations reported per call */
#define NW_DEFAULT_MAX_EVENTS 100

/* Linux 6.6: wake the supervisor on the caller's CPU (no scheduler round
 * trip per notification). Debian 12's headers predate it. */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

struct tcp_conn {
    int fd;                            /* -1: free slot */
    int v6;                            /* came in on the [::1] listener */
    uint64_t deadline;                 /* time_mono_ns() after which it closes */
    size_t len;                        /* bytes in buf */
    uint8_t *buf;                      /* NW_TCP_BUF bytes in netwatch.tcp_buf */
};
#define NW_TCP_BUF (2 + NW_TCP_MSG_MAX) /* length prefix + message */

struct netwatch {
    pthread_t thread;
    int stopfd;                        /* eventfd: stop */
    int wakefd;                        /* eventfd: a listener is pending */
    int pending;                       /* listener handed over, not yet taken (mu) */
    int listener;                      /* seccomp listener, -1 none */
    bool listener_live;                /* not yet HUP or failed */
    int dns[NETWATCH_DNS_NFDS];
    struct tcp_conn conns[NW_TCP_MAX];
    netwatch_event_fn fn;
    void *arg;
    unsigned max_per_reason;
    uint32_t native_arch;              /* AUDIT_ARCH_* of this build */
    struct seccomp_notif *req;         /* sized by SECCOMP_GET_NOTIF_SIZES */
    struct seccomp_notif_resp *resp;
    size_t req_size, resp_size;
    pthread_mutex_t mu;                /* guards st, pending and the stop hook */
    void (*on_stop)(void *);           /* netwatch_stop_request_then() */
    void *on_stop_arg;
    bool on_stop_taken;                /* called (or being called) */
    struct netwatch_stats st;
    /* Last, and not cleared (nw_alloc): the buffers only a DNS-over-TCP
     * client ever uses, 66 KB. Cleared with the rest (calloc), they cost a
     * `clearbox run` 15 page faults (~2 us each on this VM) at every start;
     * a service's heap hands the same chunk back, already mapped. */
    uint8_t tcp_buf[NW_TCP_MAX][NW_TCP_BUF];
};

/* ---- events ------------------------------------------------------------ */

static const char *const reason_names[NETWATCH_NREASONS] = {"network_attempt",
                                                             "blocked_syscall"};

static void ev_init(struct netwatch_event *ev, enum netwatch_reason r, const char *sys,
                    const char *arch, pid_t pid)
{
    memset(ev, 0, sizeof *ev);
    ev->reason = r;
    ev->reason_name = reason_names[r];
    snprintf(ev->syscall, sizeof ev->syscall, "%s", sys ? sys : "");
    snprintf(ev->arch, sizeof ev->arch, "%s", arch ? arch : "");
    ev->port = -1;
    ev->blocked = true;
    ev->pid = pid;
    ev->ts_ns = time_now_ns();
}

static void emit(struct netwatch *nw, const struct netwatch_event *ev)
{
    bool deliver;
    pthread_mutex_lock(&nw->mu);
    deliver = nw->st.events[ev->reason] < nw->max_per_reason;
    nw->st.events[ev->reason]++;
    if (!deliver)
        nw->st.suppressed[ev->reason]++;
    pthread_mutex_unlock(&nw->mu);
    if (deliver && nw->fn)
        nw->fn(ev, nw->arg);
}

#define STAT_ADD(nw, field, n)             \
    do {                                   \
        pthread_mutex_lock(&(nw)->mu);     \
        (nw)->st.field += (n);             \
        pthread_mutex_unlock(&(nw)->mu);   \
    } while (0)

/* ---- reading the caller -------------------------------------------------- */

static bool notif_valid(const struct netwatch *nw, uint64_t id)
{
    return ioctl(nw->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* Read n bytes at addr of the notifying process, with the id checked before
 * and after (so a recycled pid cannot answer for the caller). */
static int read_target(struct netwatch *nw, const struct seccomp_notif *req, uint64_t addr,
                       void *dst, size_t n)
{
    if (!notif_valid(nw, req->id))
        return -ESRCH;
    struct iovec l = {.iov_base = dst, .iov_len = n};
    struct iovec r = {.iov_base = (void *)(uintptr_t)addr, .iov_len = n};
    ssize_t got = process_vm_readv((pid_t)req->pid, &l, 1, &r, 1, 0);
    if (got < 0 || (size_t)got != n)
        return got < 0 ? -errno : -EFAULT;
    if (!notif_valid(nw, req->id))
        return -ESRCH;
    return 0;
}

/* Protocol of the caller's socket fd: "tcp", "udp", "icmp", "raw", "sctp" or
 * "" when it cannot be seen. */
static void target_sock_proto(struct netwatch *nw, const struct seccomp_notif *req, int fd,
                              char *out, size_t outlen)
{
    out[0] = '\0';
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)req->pid, 0);
    if (pidfd < 0)
        return;
    if (!notif_valid(nw, req->id)) { /* the pidfd may name a recycled pid */
        close(pidfd);
        return;
    }
    int sfd = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    close(pidfd);
    if (sfd < 0)
        return;
    int type = 0, proto = 0;
    socklen_t l1 = sizeof type, l2 = sizeof proto;
    if (getsockopt(sfd, SOL_SOCKET, SO_TYPE, &type, &l1) == 0) {
        if (getsockopt(sfd, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) < 0)
            proto = 0;
        if (type == SOCK_STREAM)
            snprintf(out, outlen, "tcp");
        else if (type == SOCK_DGRAM)
            snprintf(out, outlen, "%s",
                     (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) ? "icmp" : "udp");
        else if (type == SOCK_RAW)
            snprintf(out, outlen, "raw");
        else if (type == SOCK_SEQPACKET)
            snprintf(out, outlen, "sctp");
    }
    close(sfd);
}

/* ---- addresses ----------------------------------------------------------- */

/* A decoded destination. */
struct dest {
    int family;          /* AF_INET / AF_INET6 */
    char addr[INET6_ADDRSTRLEN];
    int port;
};

/* Decode sa (len bytes as read); 1 if it is an inet/inet6 destination outside
 * the sandbox's loopback, 0 otherwise (loopback, any, unix, netlink, short). */
static int dest_decode(const struct sockaddr_storage *ss, size_t len, struct dest *d)
{
    if (len < sizeof(sa_family_t))
        return 0;
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        uint32_t a = ntohl(in->sin_addr.s_addr);
        if ((a >> 24) == 127 || a == 0)
            return 0; /* own loopback, or INADDR_ANY which means loopback */
        d->family = AF_INET;
        inet_ntop(AF_INET, &in->sin_addr, d->addr, sizeof d->addr);
        d->port = ntohs(in->sin_port);
        return 1;
    }
    if (ss->ss_family == AF_INET6 && len >= 24 /* SIN6_LEN_RFC2133 */) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        const struct in6_addr *a = &in6->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a))
            return 0;
        if (IN6_IS_ADDR_V4MAPPED(a) &&
            (a->s6_addr[12] == 127 ||
             (a->s6_addr[12] | a->s6_addr[13] | a->s6_addr[14] | a->s6_addr[15]) == 0))
            return 0;
        d->family = AF_INET6;
        inet_ntop(AF_INET6, a, d->addr, sizeof d->addr);
        d->port = ntohs(in6->sin6_port);
        return 1;
    }
    return 0;
}

/* Read and decode the sockaddr at addr (len from the caller, bounded). */
static int read_dest(struct netwatch *nw, const struct seccomp_notif *req, uint64_t addr,
                     uint64_t len, struct dest *d)
{
    if (addr == 0 || len == 0)
        return 0;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    size_t n = len > sizeof ss ? sizeof ss : (size_t)len;
    int rc = read_target(nw, req, addr, &ss, n);
    if (rc < 0) {
        STAT_ADD(nw, read_failures, 1);
        return rc;
    }
    return dest_decode(&ss, n, d);
}

/* ---- one notification ---------------------------------------------------- */

struct verdict {
    int error;                                   /* 0: CONTINUE, else -errno */
    bool gone;                                   /* caller died: send nothing */
    size_t nev;
    struct netwatch_event ev[NW_EVENTS_PER_CALL];
};

static struct netwatch_event *verdict_event(struct verdict *v, enum netwatch_reason r,
                                            const char *sys, const char *arch, pid_t pid)
{
    if (v->nev >= NW_EVENTS_PER_CALL)
        return NULL;
    struct netwatch_event *ev = &v->ev[v->nev++];
    ev_init(ev, r, sys, arch, pid);
    return ev;
}

static void add_dest_event(struct verdict *v, const struct dest *d, const char *sys,
                           const char *arch, pid_t pid, const char *proto)
{
    for (size_t i = 0; i < v->nev; i++) /* one event per distinct destination */
        if (v->ev[i].port == d->port && strcmp(v->ev[i].address, d->addr) == 0)
            return;
    struct netwatch_event *ev = verdict_event(v, NETWATCH_NETWORK_ATTEMPT, sys, arch, pid);
    if (!ev)
        return;
    snprintf(ev->family, sizeof ev->family, "%s", d->family == AF_INET6 ? "inet6" : "inet");
    snprintf(ev->protocol, sizeof ev->protocol, "%s", proto);
    snprintf(ev->address, sizeof ev->address, "%s", d->addr);
    ev->port = d->port;
    snprintf(ev->attempted_host, sizeof ev->attempted_host, "%s", d->addr);
}

static void on_socket(const struct seccomp_notif *req, const char *arch, struct verdict *v)
{
    int domain = (int)req->data.args[0];   /* the kernel reads ints: so do we */
    int type = (int)req->data.args[1] & 0xf; /* SOCK_TYPE_MASK */
    int proto = (int)req->data.args[2];
    pid_t pid = (pid_t)req->pid;
    struct netwatch_event *ev;

    switch (domain) {
    case AF_UNIX:
        return;
    case AF_INET:
    case AF_INET6:
        if (type != SOCK_RAW && type != SOCK_PACKET)
            return;
        v->error = -EPERM;
        ev = verdict_event(v, NETWATCH_NETWORK_ATTEMPT, "socket", arch, pid);
        snprintf(ev->family, sizeof ev->family, "%s", domain == AF_INET ? "inet" : "inet6");
        snprintf(ev->protocol, sizeof ev->protocol, "raw");
        return;
    case AF_NETLINK:
        if (proto == NETLINK_ROUTE) /* glibc getaddrinfo/if_nameindex: SOCK_RAW is normal */
            return;
        break;
    case AF_PACKET:
        v->error = -EPERM;
        ev = verdict_event(v, NETWATCH_NETWORK_ATTEMPT, "socket", arch, pid);
        snprintf(ev->family, sizeof ev->family, "packet");
        snprintf(ev->protocol, sizeof ev->protocol, "raw");
        return;
    default:
        break;
    }
    v->error = -EPERM;
    ev = verdict_event(v, NETWATCH_BLOCKED_SYSCALL, "socket", arch, pid);
    snprintf(ev->family, sizeof ev->family, "%s", domain == AF_NETLINK ? "netlink" : "other");
}

static void on_dest(struct netwatch *nw, const struct seccomp_notif *req, const char *sys,
                    const char *arch, int fd, uint64_t addr, uint64_t len, struct verdict *v)
{
    struct dest d;
    int rc = read_dest(nw, req, addr, len, &d);
    if (rc == -ESRCH) {
        v->gone = true;
        return;
    }
    if (rc <= 0)
        return;
    char proto[8];
    target_sock_proto(nw, req, fd, proto, sizeof proto);
    add_dest_event(v, &d, sys, arch, (pid_t)req->pid, proto);
}

static void on_sendmsg(struct netwatch *nw, const struct seccomp_notif *req, const char *arch,
                       struct verdict *v)
{
    struct msghdr mh;
    int fd = (int)req->data.args[0];
    int rc = read_target(nw, req, req->data.args[1], &mh, sizeof mh);
    if (rc < 0) {
        v->gone = rc == -ESRCH;
        STAT_ADD(nw, read_failures, 1);
        return;
    }
    on_dest(nw, req, "sendmsg", arch, fd, (uint64_t)(uintptr_t)mh.msg_name, mh.msg_namelen, v);
}

static void on_sendmmsg(struct netwatch *nw, const struct seccomp_notif *req, const char *arch,
                        struct verdict *v)
{
    struct mmsghdr mm[NW_MMSG_MAX];
    int fd = (int)req->data.args[0];
    uint64_t vlen = (unsigned int)req->data.args[2];
    if (vlen > NW_MMSG_MAX)
        vlen = NW_MMSG_MAX; /* the rest is not decoded: the namespace still holds */
    if (vlen == 0)
        return;
    int rc = read_target(nw, req, req->data.args[1], mm, sizeof mm[0] * vlen);
    if (rc < 0) {
        v->gone = rc == -ESRCH;
        STAT_ADD(nw, read_failures, 1);
        return;
    }
    char proto[8] = "";
    bool have_proto = false;
    for (uint64_t i = 0; i < vlen && !v->gone; i++) {
        struct dest d;
        rc = read_dest(nw, req, (uint64_t)(uintptr_t)mm[i].msg_hdr.msg_name,
                       mm[i].msg_hdr.msg_namelen, &d);
        if (rc == -ESRCH)
            v->gone = true;
        if (rc <= 0)
            continue;
        if (!have_proto) {
            target_sock_proto(nw, req, fd, proto, sizeof proto);
            have_proto = true;
        }
        add_dest_event(v, &d, "sendmmsg", arch, (pid_t)req->pid, proto);
    }
}

static bool personality_ok(uint64_t arg)
{
    uint32_t p = (uint32_t)arg; /* the kernel takes an unsigned int */
    return p == 0x0 || p == 0x8 || p == 0x20000 || p == 0x20008 || p == 0xffffffffu;
}

static void blocked(const struct seccomp_notif *req, const char *arch, struct verdict *v)
{
    char name[32];
    seccomp_syscall_name(req->data.arch, req->data.nr, name, sizeof name);
    v->error = -EPERM;
    verdict_event(v, NETWATCH_BLOCKED_SYSCALL, name, arch, (pid_t)req->pid);
}

static void decide(struct netwatch *nw, const struct seccomp_notif *req, struct verdict *v)
{
    const char *arch = seccomp_arch_name(req->data.arch, req->data.nr);
    if (req->data.arch != nw->native_arch || (req->data.nr & 0x40000000)) {
        blocked(req, arch, v); /* foreign ABI: never let through */
        return;
    }
    switch (req->data.nr) {
    case SYS_socket:
        on_socket(req, arch, v);
        return;
    case SYS_connect:
        on_dest(nw, req, "connect", arch, (int)req->data.args[0], req->data.args[1],
                req->data.args[2], v);
        return;
    case SYS_sendto:
        on_dest(nw, req, "sendto", arch, (int)req->data.args[0], req->data.args[4],
                req->data.args[5], v);
        return;
    case SYS_sendmsg:
        on_sendmsg(nw, req, arch, v);
        return;
    case SYS_sendmmsg:
        on_sendmmsg(nw, req, arch, v);
        return;
    case SYS_bind:
        return; /* binding reaches nothing; the namespace has only lo */
    case SYS_personality:
        if (!personality_ok(req->data.args[0]))
            blocked(req, arch, v);
        return;
    case SYS_adjtimex:
    case SYS_clock_adjtime: {
        unsigned int modes = 1;
        uint64_t p = req->data.nr == SYS_adjtimex ? req->data.args[0] : req->data.args[1];
        int rc = read_target(nw, req, p, &modes, sizeof modes);
        if (rc == -ESRCH) {
            v->gone = true;
            return;
        }
        /* modes == 0 only reads; if a thread changes it after our read the
         * kernel still wants CAP_SYS_TIME in the host, which the sandbox lacks. */
        if (rc == 0 && modes == 0)
            return;
        blocked(req, arch, v);
        return;
    }
    default:
        blocked(req, arch, v);
        return;
    }
}

/* Receive and answer one notification. 0, or -errno when the listener is
 * unusable (then the caller stops polling it). */
static int handle_notif(struct netwatch *nw)
{
    memset(nw->req, 0, nw->req_size);
    if (ioctl(nw->listener, SECCOMP_IOCTL_NOTIF_RECV, nw->req) < 0) {
        if (errno == EINTR || errno == ENOENT)
            return 0; /* the caller went away between poll and recv */
        return -errno;
    }
    struct verdict v;
    v.error = 0;
    v.gone = false;
    v.nev = 0;
    decide(nw, nw->req, &v);

    memset(nw->resp, 0, nw->resp_size);
    nw->resp->id = nw->req->id;
    if (v.error) {
        nw->resp->error = v.error;
    } else {
        nw->resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    }
    bool sent = false;
    if (!v.gone) {
        if (ioctl(nw->listener, SECCOMP_IOCTL_NOTIF_SEND, nw->resp) == 0)
            sent = true;
        else if (errno != ENOENT)
            return -errno;
    }
    pthread_mutex_lock(&nw->mu);
    nw->st.notifications++;
    if (sent) {
        if (v.error)
            nw->st.denied++;
        else
            nw->st.continued++;
    }
    pthread_mutex_unlock(&nw->mu);
    /* The attempt happened even if the caller died since: report it. */
    for (size_t i = 0; i < v.nev; i++)
        emit(nw, &v.ev[i]);
    return 0;
}

/* ---- DNS ------------------------------------------------------------------ */

static void dns_type_name(unsigned t, char *out, size_t outlen)
{
    static const struct {
        unsigned t;
        const char *n;
    } names[] = {{1, "A"},     {2, "NS"},    {5, "CNAME"}, {6, "SOA"},   {12, "PTR"},
                 {15, "MX"},   {16, "TXT"},  {28, "AAAA"}, {33, "SRV"},  {35, "NAPTR"},
                 {64, "SVCB"}, {65, "HTTPS"}, {99, "SPF"}, {255, "ANY"}, {257, "CAA"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].t == t) {
            snprintf(out, outlen, "%s", names[i].n);
            return;
        }
    snprintf(out, outlen, "TYPE%u", t);
}

static void header_reply(const uint8_t *q, uint8_t *resp, unsigned rcode, unsigned qdcount)
{
    resp[0] = q[0];
    resp[1] = q[1];
    resp[2] = (uint8_t)(0x80 | (q[2] & 0x79)); /* QR, opcode and RD copied */
    resp[3] = (uint8_t)rcode;                 /* RA=0, Z=0 */
    resp[4] = (uint8_t)(qdcount >> 8);
    resp[5] = (uint8_t)qdcount;
    memset(resp + 6, 0, 6);
}

int netwatch_dns_answer(const uint8_t *q, size_t n, uint8_t *resp, size_t respmax,
                        size_t *resplen, char *name, size_t namemax, char *type,
                        size_t typemax)
{
    *resplen = 0;
    if (namemax)
        name[0] = '\0';
    if (typemax)
        type[0] = '\0';
    if (n < 12 || respmax < 512)
        return 0;
    if (q[2] & 0x80)
        return 0; /* a response: never answer one (no loops) */
    unsigned qdcount = (unsigned)q[4] << 8 | q[5];
    if (qdcount != 1)
        goto formerr;

    size_t p = 12, total = 0, w = 0;
    bool cut = false;
    for (;;) {
        if (p >= n)
            goto formerr;
        unsigned len = q[p];
        if (len == 0) {
            p++;
            break;
        }
        if (len & 0xC0) /* compression pointer or extended label: not in a question */
            goto formerr;
        if (p + 1 + len > n)
            goto formerr;
        total += len + 1;
        if (total > 255)
            goto formerr;
        if (w && !cut) {
            if (w + 1 < namemax)
                name[w++] = '.';
            else
                cut = true;
        }
        for (unsigned i = 0; i < len && !cut; i++) {
            uint8_t c = q[p + 1 + i];
            char tmp[5];
            size_t k;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '*') {
                tmp[0] = (char)c;
                k = 1;
            } else {
                snprintf(tmp, sizeof tmp, "\\%03u", c);
                k = 4;
            }
            if (w + k < namemax) {
                memcpy(name + w, tmp, k);
                w += k;
            } else {
                cut = true;
            }
        }
        p += 1 + len;
    }
    if (p + 4 > n)
        goto formerr;
    if (namemax) {
        if (w == 0 && namemax > 1)
            name[w++] = '.'; /* the root */
        name[w] = '\0';
    }
    unsigned qtype = (unsigned)q[p] << 8 | q[p + 1];
    p += 4;
    if (typemax)
        dns_type_name(qtype, type, typemax);
    /* REFUSED, the question echoed (p - 12 <= 260 bytes: fits in 512). */
    header_reply(q, resp, 5, 1);
    memcpy(resp + 12, q + 12, p - 12);
    *resplen = p;
    return 1;

formerr:
    if (namemax)
        name[0] = '\0';
    header_reply(q, resp, 1, 0);
    *resplen = 12;
    return -EBADMSG;
}

static void dns_event(struct netwatch *nw, bool v6, bool tcp, const char *name,
                      const char *type)
{
    struct netwatch_event ev;
    ev_init(&ev, NETWATCH_NETWORK_ATTEMPT, "dns", "", 0);
    snprintf(ev.family, sizeof ev.family, "%s", v6 ? "inet6" : "inet");
    snprintf(ev.protocol, sizeof ev.protocol, "%s", tcp ? "tcp" : "udp");
    snprintf(ev.address, sizeof ev.address, "%s", v6 ? "::1" : "127.0.0.1");
    ev.port = 53;
    snprintf(ev.attempted_host, sizeof ev.attempted_host, "%s", name);
    snprintf(ev.dns_type, sizeof ev.dns_type, "%s", type);
    emit(nw, &ev);
}

/* Answer one query; returns the response length to send (0: none). */
static size_t dns_handle(struct netwatch *nw, const uint8_t *q, size_t n, bool v6, bool tcp,
                         uint8_t *resp, size_t respmax)
{
    char name[256], type[12];
    size_t rl = 0;
    int rc = netwatch_dns_answer(q, n, resp, respmax, &rl, name, sizeof name, type,
                                 sizeof type);
    if (rc == 1) {
        STAT_ADD(nw, dns_queries, 1);
        dns_event(nw, v6, tcp, name, type);
    } else {
        STAT_ADD(nw, dns_malformed, 1);
    }
    return rl;
}

static void dns_udp(struct netwatch *nw, int fd, bool v6)
{
    for (int i = 0; i < NW_UDP_BATCH; i++) {
        uint8_t q[NW_UDP_MSG_MAX], resp[NW_UDP_MSG_MAX];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(fd, q, sizeof q, MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &fl);
        if (r < 0)
            return; /* EAGAIN: drained */
        size_t n = (size_t)r;
        if (n > sizeof q) { /* oversized: the header is intact, say FORMERR */
            STAT_ADD(nw, dns_malformed, 1);
            if (!(q[2] & 0x80)) {
                header_reply(q, resp, 1, 0);
                sendto(fd, resp, 12, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
            }
            continue;
        }
        size_t rl = dns_handle(nw, q, n, v6, false, resp, sizeof resp);
        if (rl)
            sendto(fd, resp, rl, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
    }
}

static void tcp_close(struct tcp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = 0;
}

static void dns_tcp_accept(struct netwatch *nw, int lfd, bool v6)
{
    for (int i = 0; i < NW_TCP_MAX; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct tcp_conn *slot = NULL;
        for (int k = 0; k < NW_TCP_MAX; k++)
            if (nw->conns[k].fd < 0) {
                slot = &nw->conns[k];
                break;
            }
        if (!slot) { /* full: the client retries or gives up; we stay bounded */
            close(fd);
            STAT_ADD(nw, dns_malformed, 1);
            continue;
        }
        slot->fd = fd;
        slot->v6 = v6;
        slot->len = 0;
        slot->deadline = time_mono_ns() + NW_TCP_TIMEOUT_NS;
    }
}

static void dns_tcp_read(struct netwatch *nw, struct tcp_conn *c)
{
    ssize_t r = read(c->fd, c->buf + c->len, NW_TCP_BUF - c->len);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        tcp_close(c);
        return;
    }
    if (r < 0)
        return;
    c->len += (size_t)r;
    while (c->len >= 2) {
        size_t m = (size_t)c->buf[0] << 8 | c->buf[1];
        if (m > NW_TCP_MSG_MAX || m < 12) {
            STAT_ADD(nw, dns_malformed, 1);
            tcp_close(c);
            return;
        }
        if (c->len < 2 + m)
            return;
        uint8_t out[2 + NW_UDP_MSG_MAX];
        size_t rl = dns_handle(nw, c->buf + 2, m, c->v6, true, out + 2, NW_UDP_MSG_MAX);
        if (rl) {
            out[0] = (uint8_t)(rl >> 8);
            out[1] = (uint8_t)rl;
            ssize_t wr = send(c->fd, out, rl + 2, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (wr != (ssize_t)(rl + 2)) { /* a client that does not read: drop it */
                tcp_close(c);
                return;
            }
        }
        memmove(c->buf, c->buf + 2 + m, c->len - 2 - m);
        c->len -= 2 + m;
    }
    if (c->len == NW_TCP_BUF) /* cannot happen with the bound above; stay safe */
        tcp_close(c);
}

/* ---- the thread ------------------------------------------------------------ */

enum { P_STOP, P_WAKE, P_LISTENER, P_DNS0, P_CONN0 = P_DNS0 + NETWATCH_DNS_NFDS,
       P_MAX = P_CONN0 + NW_TCP_MAX };

/* The stop hook, once: whoever takes it first runs it (mu held to take). */
static void run_stop_hook(struct netwatch *nw)
{
    pthread_mutex_lock(&nw->mu);
    void (*fn)(void *) = nw->on_stop_taken ? NULL : nw->on_stop;
    if (fn)
        nw->on_stop_taken = true;
    void *arg = nw->on_stop_arg;
    pthread_mutex_unlock(&nw->mu);
    if (fn)
        fn(arg);
}

static void nw_loop(struct netwatch *nw);

static void *nw_main(void *p)
{
    struct netwatch *nw = p;
    nw_loop(nw);
    run_stop_hook(nw);
    return NULL;
}

static void nw_loop(struct netwatch *nw)
{
    struct pollfd pfd[P_MAX];
    int slot_of[P_MAX];
    for (;;) {
        size_t n = 0;
        uint64_t now = time_mono_ns();
        int timeout = -1;
        pfd[n] = (struct pollfd){.fd = nw->stopfd, .events = POLLIN};
        slot_of[n++] = P_STOP;
        pfd[n] = (struct pollfd){.fd = nw->wakefd, .events = POLLIN};
        slot_of[n++] = P_WAKE;
        if (nw->listener_live) {
            pfd[n] = (struct pollfd){.fd = nw->listener, .events = POLLIN};
            slot_of[n++] = P_LISTENER;
        }
        for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
            if (nw->dns[i] >= 0) {
                pfd[n] = (struct pollfd){.fd = nw->dns[i], .events = POLLIN};
                slot_of[n++] = P_DNS0 + i;
            }
        for (int i = 0; i < NW_TCP_MAX; i++) {
            struct tcp_conn *c = &nw->conns[i];
            if (c->fd < 0)
                continue;
            if (now >= c->deadline) {
                tcp_close(c);
                continue;
            }
            int ms = (int)((c->deadline - now) / 1000000) + 1;
            if (timeout < 0 || ms < timeout)
                timeout = ms;
            pfd[n] = (struct pollfd){.fd = c->fd, .events = POLLIN};
            slot_of[n++] = P_CONN0 + i;
        }
        int r = poll(pfd, n, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            short re = pfd[i].revents;
            if (!re)
                continue;
            int s = slot_of[i];
            if (s == P_STOP)
                return;
            if (s == P_WAKE) {
                uint64_t v;
                ssize_t rr = read(nw->wakefd, &v, sizeof v);
                (void)rr;
                pthread_mutex_lock(&nw->mu);
                if (nw->pending >= 0 && nw->listener < 0) {
                    nw->listener = nw->pending;
                    nw->listener_live = true;
                    nw->pending = -1;
                    (void)ioctl(nw->listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
                }
                pthread_mutex_unlock(&nw->mu);
                break; /* rebuild the poll set with the listener in it */
            }
            if (s == P_LISTENER) {
                if (re & POLLIN) {
                    if (handle_notif(nw) < 0) {
                        /* unusable listener: close it so waiting and future
                         * calls fail with ENOSYS instead of hanging */
                        close(nw->listener);
                        nw->listener = -1;
                        nw->listener_live = false;
                    }
                } else if (re & (POLLHUP | POLLERR | POLLNVAL)) {
                    nw->listener_live = false; /* no process uses the filter any more */
                }
            } else if (s < P_CONN0) {
                int d = s - P_DNS0;
                if (d == NETWATCH_DNS_UDP4 || d == NETWATCH_DNS_UDP6)
                    dns_udp(nw, nw->dns[d], d == NETWATCH_DNS_UDP6);
                else
                    dns_tcp_accept(nw, nw->dns[d], d == NETWATCH_DNS_TCP6);
            } else {
                struct tcp_conn *c = &nw->conns[s - P_CONN0];
                if (re & POLLIN)
                    dns_tcp_read(nw, c);
                else
                    tcp_close(c);
            }
        }
    }
}

/* ---- API ------------------------------------------------------------------- */

/* Everything but tcp_buf zeroed (see there). From the heap, not a mapping
 * of its own: a service would unmap it after every evaluation, and an unmap
 * in a threaded process interrupts every CPU its threads run on. */
static struct netwatch *nw_alloc(void)
{
    struct netwatch *nw = malloc(sizeof *nw);
    if (nw)
        memset(nw, 0, offsetof(struct netwatch, tcp_buf));
    return nw;
}

void netwatch_config_init(struct netwatch_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listener_fd = -1;
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        cfg->dns_fds[i] = -1;
    cfg->max_events_per_reason = NW_DEFAULT_MAX_EVENTS;
}

static void close_cfg_fds(const struct netwatch_config *cfg)
{
    if (cfg->listener_fd >= 0)
        close(cfg->listener_fd);
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        if (cfg->dns_fds[i] >= 0)
            close(cfg->dns_fds[i]);
}

int netwatch_start(const struct netwatch_config *cfg, netwatch_t **out, char *err,
                   size_t errlen)
{
    if (!cfg || !out)
        return err_set(err, errlen, -EINVAL, "netwatch_start: cfg and out are required");
    *out = NULL;
    struct netwatch *nw = nw_alloc();
    if (!nw) {
        close_cfg_fds(cfg);
        return err_set(err, errlen, -ENOMEM, "netwatch_start: out of memory");
    }
    int rc;
    nw->stopfd = nw->wakefd = nw->pending = -1;
    nw->listener = cfg->listener_fd;
    nw->listener_live = cfg->listener_fd >= 0;
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        nw->dns[i] = cfg->dns_fds[i];
    for (int i = 0; i < NW_TCP_MAX; i++) {
        nw->conns[i].fd = -1;
        nw->conns[i].buf = nw->tcp_buf[i];
    }
    nw->fn = cfg->on_event;
    nw->arg = cfg->arg;
    nw->max_per_reason = cfg->max_events_per_reason ? cfg->max_events_per_reason
                                                    : NW_DEFAULT_MAX_EVENTS;
    nw->native_arch = seccomp_audit_arch_native();
    pthread_mutex_init(&nw->mu, NULL);

    struct seccomp_notif_sizes sizes;
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) {
        rc = err_sys(err, errlen, -errno, "seccomp(SECCOMP_GET_NOTIF_SIZES)");
        goto fail;
    }
    /* The kernel may know a larger struct than our headers: use its size. */
    nw->req_size = sizes.seccomp_notif > sizeof(struct seccomp_notif)
                       ? sizes.seccomp_notif : sizeof(struct seccomp_notif);
    nw->resp_size = sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp)
                        ? sizes.seccomp_notif_resp : sizeof(struct seccomp_notif_resp);
    nw->req = calloc(1, nw->req_size);
    nw->resp = calloc(1, nw->resp_size);
    if (!nw->req || !nw->resp) {
        rc = err_set(err, errlen, -ENOMEM, "netwatch_start: out of memory");
        goto fail;
    }
    if (nw->listener >= 0) /* best effort: older kernels say EINVAL, and that is fine */
        (void)ioctl(nw->listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                    SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    nw->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    nw->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (nw->stopfd < 0 || nw->wakefd < 0) {
        rc = err_sys(err, errlen, -errno, "eventfd");
        goto fail;
    }
    /* Signals stay with the caller's threads, never the supervisor. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&nw->thread, NULL, nw_main, nw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        rc = err_sys(err, errlen, -rc, "pthread_create(netwatch)");
        goto fail;
    }
    *out = nw;
    return 0;
fail:
    close_cfg_fds(cfg);
    if (nw->stopfd >= 0)
        close(nw->stopfd);
    if (nw->wakefd >= 0)
        close(nw->wakefd);
    free(nw->req);
    free(nw->resp);
    pthread_mutex_destroy(&nw->mu);
    free(nw);
    return rc;
}

int netwatch_set_listener(netwatch_t *nw, int listener_fd)
{
    if (!nw || listener_fd < 0) {
        if (listener_fd >= 0)
            close(listener_fd);
        return -EINVAL;
    }
    pthread_mutex_lock(&nw->mu);
    bool busy = nw->pending >= 0 || nw->listener >= 0;
    if (!busy)
        nw->pending = listener_fd;
    pthread_mutex_unlock(&nw->mu);
    if (busy) {
        close(listener_fd);
        return -EBUSY;
    }
    uint64_t one = 1;
    while (write(nw->wakefd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    return 0;
}

void netwatch_stats(netwatch_t *nw, struct netwatch_stats *out)
{
    if (!nw || !out)
        return;
    pthread_mutex_lock(&nw->mu);
    *out = nw->st;
    pthread_mutex_unlock(&nw->mu);
}

void netwatch_stop_request(netwatch_t *nw)
{
    if (!nw)
        return;
    uint64_t one = 1;
    while (write(nw->stopfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void netwatch_stop_request_then(netwatch_t *nw, void (*fn)(void *), void *arg)
{
    if (!nw)
        return;
    pthread_mutex_lock(&nw->mu);
    if (!nw->on_stop_taken) {
        nw->on_stop = fn;
        nw->on_stop_arg = arg;
    }
    pthread_mutex_unlock(&nw->mu);
    netwatch_stop_request(nw);
}

void netwatch_stop(netwatch_t *nw, struct netwatch_stats *final)
{
    if (!nw)
        return;
    netwatch_stop_request(nw);
    pthread_join(nw->thread, NULL);
    run_stop_hook(nw); /* the thread had ended before it was set */
    if (final)
        netwatch_stats(nw, final);
    if (nw->listener >= 0)
        close(nw->listener);
    if (nw->pending >= 0)
        close(nw->pending);
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        if (nw->dns[i] >= 0)
            close(nw->dns[i]);
    for (int i = 0; i < NW_TCP_MAX; i++)
        tcp_close(&nw->conns[i]);
    close(nw->stopfd);
    close(nw->wakefd);
    free(nw->req);
    free(nw->resp);
    pthread_mutex_destroy(&nw->mu);
    free(nw);
}

/* ---- child side: the stub's sockets ------------------------------------------ */

static int stub_socket(int family, int type)
{
    int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(53),
                                 .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc == 0 && type == SOCK_STREAM)
        rc = listen(fd, NW_TCP_MAX);
    if (rc < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int netwatch_dns_open(int fds[NETWATCH_DNS_NFDS])
{
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        fds[i] = -1;
    int rc = stub_socket(AF_INET, SOCK_DGRAM);
    if (rc < 0)
        goto fail;
    fds[NETWATCH_DNS_UDP4] = rc;
    rc = stub_socket(AF_INET, SOCK_STREAM);
    if (rc < 0)
        goto fail;
    fds[NETWATCH_DNS_TCP4] = rc;
    /* IPv6 may be off in the namespace: then the stub serves IPv4 only. */
    rc = stub_socket(AF_INET6, SOCK_DGRAM);
    if (rc >= 0) {
        fds[NETWATCH_DNS_UDP6] = rc;
        rc = stub_socket(AF_INET6, SOCK_STREAM);
        if (rc < 0) {
            close(fds[NETWATCH_DNS_UDP6]);
            fds[NETWATCH_DNS_UDP6] = -1;
        } else {
            fds[NETWATCH_DNS_TCP6] = rc;
        }
    }
    return 0;
fail:
    for (int i = 0; i < NETWATCH_DNS_NFDS; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    return rc;
}
