/* test_netwatch.c - the supervisor and the DNS stub against real seccomp
 * notifications. Every test that touches a non-loopback address runs in a
 * child that first entered a fresh network namespace of its own (only lo,
 * up), so nothing can leave even if the supervisor were wrong. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/netwatch.h"
#include "sandbox/seccomp.h"
#include "sandbox_testlib.h"
#include "test.h"
#include "util/timeutil.h"

/* ---- DNS parser (pure) -------------------------------------------------------- */

static size_t build_query(uint8_t *q, uint16_t id, const char *name, uint16_t type)
{
    memset(q, 0, 12);
    q[0] = (uint8_t)(id >> 8);
    q[1] = (uint8_t)id;
    q[2] = 0x01; /* RD */
    q[5] = 1;    /* QDCOUNT */
    size_t p = 12;
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        q[p++] = (uint8_t)len;
        memcpy(q + p, s, len);
        p += len;
        s += len;
        if (*s == '.')
            s++;
    }
    q[p++] = 0;
    q[p++] = (uint8_t)(type >> 8);
    q[p++] = (uint8_t)type;
    q[p++] = 0;
    q[p++] = 1; /* IN */
    return p;
}

TEST(dns_answer_refuses_and_echoes_question)
{
    uint8_t q[512], r[512];
    size_t n = build_query(q, 0xBEEF, "github.com", 1), rl = 0;
    char name[256], type[12];
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              1);
    ASSERT_STREQ(name, "github.com");
    ASSERT_STREQ(type, "A");
    ASSERT_EQ(rl, n);
    ASSERT_EQ(r[0], 0xBE);
    ASSERT_EQ(r[1], 0xEF);
    ASSERT(r[2] & 0x80);         /* QR */
    ASSERT(r[2] & 0x01);         /* RD echoed */
    ASSERT_EQ(r[3] & 0x0f, 5);   /* REFUSED */
    ASSERT_EQ(r[5], 1);          /* QDCOUNT */
    ASSERT_EQ(r[7] | r[9] | r[11], 0);
    ASSERT(memcmp(r + 12, q + 12, n - 12) == 0);

    n = build_query(q, 1, "example.org", 28);
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              1);
    ASSERT_STREQ(type, "AAAA");
    n = build_query(q, 1, "x.test", 4242);
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              1);
    ASSERT_STREQ(type, "TYPE4242");
}

TEST(dns_answer_rejects_hostile_queries)
{
    uint8_t q[600], r[512];
    size_t rl;
    char name[256], type[12];
    size_t n = build_query(q, 7, "github.com", 1);

    /* a compression pointer in the question */
    uint8_t c[64];
    memcpy(c, q, 12);
    size_t p = 12;
    c[p++] = 3;
    memcpy(c + p, "www", 3);
    p += 3;
    c[p++] = 0xC0;
    c[p++] = 12; /* points back at itself: a loop if followed */
    c[p++] = 0;
    c[p++] = 1;
    c[p++] = 0;
    c[p++] = 1;
    ASSERT_EQ(netwatch_dns_answer(c, p, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              -EBADMSG);
    ASSERT_EQ(rl, 12);
    ASSERT_EQ(r[3] & 0x0f, 1); /* FORMERR */
    ASSERT_STREQ(name, "");

    /* truncated anywhere */
    for (size_t k = 12; k < n; k++)
        ASSERT_EQ(netwatch_dns_answer(q, k, r, sizeof r, &rl, name, sizeof name, type,
                                      sizeof type),
                  -EBADMSG);
    /* shorter than a header, or a response: nothing is sent */
    ASSERT_EQ(netwatch_dns_answer(q, 11, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              0);
    ASSERT_EQ(rl, 0);
    q[2] |= 0x80;
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              0);
    q[2] &= 0x7f;
    /* QDCOUNT 0 and 2 */
    q[5] = 0;
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              -EBADMSG);
    q[5] = 2;
    ASSERT_EQ(netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type, sizeof type),
              -EBADMSG);
    q[5] = 1;
    /* a 64-byte label, and a name over 255 bytes */
    uint8_t big[600];
    memcpy(big, q, 12);
    big[12] = 64;
    memset(big + 13, 'a', 64);
    big[77] = 0;
    memcpy(big + 78, "\0\1\0\1", 4);
    ASSERT_EQ(netwatch_dns_answer(big, 82, r, sizeof r, &rl, name, sizeof name, type,
                                  sizeof type),
              -EBADMSG);
    p = 12;
    for (int i = 0; i < 5; i++) { /* 5 * 64 = 320 > 255 */
        big[p++] = 63;
        memset(big + p, 'b', 63);
        p += 63;
    }
    big[p++] = 0;
    memcpy(big + p, "\0\1\0\1", 4);
    p += 4;
    ASSERT_EQ(netwatch_dns_answer(big, p, r, sizeof r, &rl, name, sizeof name, type,
                                  sizeof type),
              -EBADMSG);
    /* odd bytes in a label come out escaped, never raw */
    memcpy(big, q, 12);
    p = 12;
    big[p++] = 4;
    memcpy(big + p, "a\"\n.", 4);
    p += 4;
    big[p++] = 0;
    memcpy(big + p, "\0\1\0\1", 4);
    p += 4;
    ASSERT_EQ(netwatch_dns_answer(big, p, r, sizeof r, &rl, name, sizeof name, type,
                                  sizeof type),
              1);
    ASSERT_STREQ(name, "a\\034\\010\\046");
}

TEST(dns_answer_survives_random_input)
{
    uint8_t q[600], r[512];
    char name[256], type[12];
    srand(4242);
    for (int it = 0; it < 200000; it++) {
        size_t n = (size_t)(rand() % 300);
        for (size_t i = 0; i < n; i++)
            q[i] = (uint8_t)rand();
        if (n > 5 && (it & 1)) { /* keep it plausible half the time */
            q[2] &= 0x7f;
            q[4] = 0;
            q[5] = 1;
        }
        size_t rl = 9999;
        int rc = netwatch_dns_answer(q, n, r, sizeof r, &rl, name, sizeof name, type,
                                     sizeof type);
        ASSERT(rc == 1 || rc == 0 || rc == -EBADMSG);
        ASSERT(rl <= 512);
        ASSERT(strlen(name) < sizeof name);
        if (rc == 1)
            ASSERT_EQ(r[3] & 0x0f, 5);
    }
}

/* ---- sockets ---------------------------------------------------------------------- */

static int body_sockets(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    fx_say(out, "raw4=%d errno=%d\n", s, s < 0 ? errno : 0);
    s = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
    fx_say(out, "raw6=%d errno=%d\n", s, s < 0 ? errno : 0);
    s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    fx_say(out, "packet=%d errno=%d\n", s, s < 0 ? errno : 0);
    s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    fx_say(out, "nlroute=%s\n", s >= 0 ? "ok" : "fail");
    s = socket(AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */);
    fx_say(out, "nlaudit=%d errno=%d\n", s, s < 0 ? errno : 0);
    s = socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0);
    fx_say(out, "alg=%d errno=%d\n", s, s < 0 ? errno : 0);
    s = socket(AF_INET, SOCK_STREAM, 0);
    fx_say(out, "tcp=%s\n", s >= 0 ? "ok" : "fail");
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    fx_say(out, "unix=%s\n", s >= 0 ? "ok" : "fail");
    return 0;
}

TEST(raw_packet_and_odd_sockets_denied_and_reported)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_sockets, NULL);
    ASSERT_CONTAINS(f.out, "raw4=-1 errno=1\n");
    ASSERT_CONTAINS(f.out, "raw6=-1 errno=1\n");
    ASSERT_CONTAINS(f.out, "packet=-1 errno=1\n");
    ASSERT_CONTAINS(f.out, "nlroute=ok\n");
    ASSERT_CONTAINS(f.out, "nlaudit=-1 errno=1\n");
    ASSERT_CONTAINS(f.out, "alg=-1 errno=1\n");
    ASSERT_CONTAINS(f.out, "tcp=ok\n");
    ASSERT_CONTAINS(f.out, "unix=ok\n");
    ASSERT_EQ(fx_count("network_attempt", "socket", NULL), 3);
    ASSERT_EQ(fx_count("blocked_syscall", "socket", NULL), 2);
    int raw = 0, pkt = 0;
    for (size_t i = 0; i < fx_nev; i++) {
        if (strcmp(fx_ev[i].protocol, "raw") == 0 && strcmp(fx_ev[i].family, "inet") == 0)
            raw++;
        if (strcmp(fx_ev[i].family, "packet") == 0)
            pkt++;
        ASSERT(fx_ev[i].blocked);
        ASSERT_STREQ(fx_ev[i].arch, "x86_64");
    }
    ASSERT_EQ(raw, 1);
    ASSERT_EQ(pkt, 1);
    ASSERT_EQ(f.st.denied, 5);
}

static int body_outside(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = fx_sin4("93.184.216.34", 443);
    int rc = connect(s, (struct sockaddr *)&a, sizeof a);
    fx_say(out, "tcp4=%d errno=%d\n", rc, rc < 0 ? errno : 0);
    close(s);

    s = socket(AF_INET, SOCK_DGRAM, 0);
    a = fx_sin4("8.8.8.8", 53);
    ssize_t r = sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a);
    fx_say(out, "udp4=%zd errno=%d\n", r, r < 0 ? errno : 0);

    struct sockaddr_in m = fx_sin4("1.1.1.1", 123);
    struct iovec iov = {.iov_base = "y", .iov_len = 1};
    struct msghdr mh = {.msg_name = &m, .msg_namelen = sizeof m, .msg_iov = &iov,
                        .msg_iovlen = 1};
    r = sendmsg(s, &mh, 0);
    fx_say(out, "sendmsg=%zd errno=%d\n", r, r < 0 ? errno : 0);

    struct sockaddr_in d[3] = {fx_sin4("9.9.9.9", 53), fx_sin4("9.9.9.9", 53),
                               fx_sin4("1.0.0.1", 53)};
    struct mmsghdr mm[3];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 3; i++) {
        mm[i].msg_hdr.msg_name = &d[i];
        mm[i].msg_hdr.msg_namelen = sizeof d[i];
        mm[i].msg_hdr.msg_iov = &iov;
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    int k = sendmmsg(s, mm, 3, 0);
    fx_say(out, "sendmmsg=%d errno=%d\n", k, k < 0 ? errno : 0);
    close(s);

    s = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = fx_sin6("2001:4860:4860::8888", 443);
    rc = connect(s, (struct sockaddr *)&a6, sizeof a6);
    fx_say(out, "tcp6=%d errno=%d\n", rc, rc < 0 ? errno : 0);
    close(s);
    return 0;
}

TEST(outside_destinations_fail_and_are_reported)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_outside, NULL);
    ASSERT_CONTAINS(f.out, "tcp4=-1 errno=101\n"); /* ENETUNREACH: the namespace holds */
    ASSERT_CONTAINS(f.out, "udp4=-1 errno=101\n");
    ASSERT_CONTAINS(f.out, "sendmsg=-1 errno=101\n");
    ASSERT_CONTAINS(f.out, "sendmmsg=-1 errno=101\n");
    ASSERT_CONTAINS(f.out, "tcp6=-1 errno=101\n");

    const struct netwatch_event *e = fx_find("connect", "93.184.216.34");
    ASSERT_MSG(e != NULL, "no connect event (%zu events)", fx_nev);
    ASSERT_STREQ(e->reason_name, "network_attempt");
    ASSERT_STREQ(e->family, "inet");
    ASSERT_STREQ(e->protocol, "tcp");
    ASSERT_EQ(e->port, 443);
    ASSERT_STREQ(e->attempted_host, "93.184.216.34");
    ASSERT(e->blocked);
    ASSERT(e->ts_ns > 0);
    ASSERT(e->pid > 0);

    e = fx_find("sendto", "8.8.8.8");
    ASSERT(e != NULL);
    ASSERT_STREQ(e->protocol, "udp");
    ASSERT_EQ(e->port, 53);
    e = fx_find("sendmsg", "1.1.1.1");
    ASSERT(e != NULL);
    ASSERT_EQ(e->port, 123);
    ASSERT_STREQ(e->protocol, "udp");
    /* sendmmsg: one event per distinct destination */
    ASSERT_EQ(fx_count("network_attempt", "sendmmsg", "9.9.9.9"), 1);
    ASSERT_EQ(fx_count("network_attempt", "sendmmsg", "1.0.0.1"), 1);
    e = fx_find("connect", "2001:4860:4860::8888");
    ASSERT(e != NULL);
    ASSERT_STREQ(e->family, "inet6");
    ASSERT_STREQ(e->protocol, "tcp");
    ASSERT_EQ(e->port, 443);
    ASSERT_EQ(fx_count("network_attempt", NULL, NULL), 6);
}

/* Loopback inside the sandbox's namespace: works and is never reported. */
static void *accept_one(void *p)
{
    int l = *(int *)p;
    int c = accept(l, NULL, NULL);
    if (c >= 0) {
        char b[8];
        ssize_t r = read(c, b, sizeof b);
        if (r > 0 && write(c, b, (size_t)r) < 0) {
        }
        close(c);
    }
    return NULL;
}

static int body_loopback(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = fx_sin4("127.0.0.1", 0);
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 8) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, accept_one, &l) != 0)
        return 3;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(s, (struct sockaddr *)&a, sizeof a);
    char b[8] = "";
    ssize_t r = -1;
    if (rc == 0 && write(s, "ping", 4) == 4)
        r = read(s, b, sizeof b - 1);
    fx_say(out, "tcp=%d echo=%.*s\n", rc, (int)(r > 0 ? r : 0), b);
    pthread_join(t, NULL);
    close(s);

    /* UDP to ourselves over 127.0.0.1 and ::1 (v4-mapped too) */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = fx_sin4("127.0.0.1", 0);
    al = sizeof ua;
    bind(u, (struct sockaddr *)&ua, sizeof ua);
    getsockname(u, (struct sockaddr *)&ua, &al);
    ssize_t w = sendto(u, "z", 1, 0, (struct sockaddr *)&ua, sizeof ua);
    r = recv(u, b, sizeof b, 0);
    fx_say(out, "udp=%zd/%zd\n", w, r);
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 a6 = fx_sin6("::1", 0);
    al = sizeof a6;
    bind(u6, (struct sockaddr *)&a6, sizeof a6);
    getsockname(u6, (struct sockaddr *)&a6, &al);
    w = sendto(u6, "6", 1, 0, (struct sockaddr *)&a6, sizeof a6);
    r = recv(u6, b, sizeof b, 0);
    fx_say(out, "udp6=%zd/%zd\n", w, r);
    int m6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 mapped = fx_sin6("::ffff:127.0.0.1", ntohs(ua.sin_port));
    w = sendto(m6, "m", 1, 0, (struct sockaddr *)&mapped, sizeof mapped);
    r = recv(u, b, sizeof b, 0);
    fx_say(out, "mapped=%zd/%zd\n", w, r);
    return 0;
}

TEST(own_loopback_works_and_is_not_flagged)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_loopback, NULL);
    ASSERT_CONTAINS(f.out, "tcp=0 echo=ping\n");
    ASSERT_CONTAINS(f.out, "udp=1/1\n");
    ASSERT_CONTAINS(f.out, "udp6=1/1\n");
    ASSERT_CONTAINS(f.out, "mapped=1/1\n");
    if (fx_nev)
        fx_dump();
    ASSERT_EQ(fx_nev, 0);
    ASSERT(f.st.notifications >= 6); /* they did go through the supervisor */
    ASSERT_EQ(f.st.denied, 0);
}

/* ---- DNS through the stub ------------------------------------------------------- */

static int dns_roundtrip(int family, int type, const char *name, uint8_t *resp, size_t max)
{
    uint8_t q[512];
    size_t n = build_query(q, 0x1234, name, 1);
    int s = socket(family, type, 0);
    struct sockaddr_in a4 = fx_sin4("127.0.0.1", 53);
    struct sockaddr_in6 a6 = fx_sin6("::1", 53);
    struct sockaddr *sa = family == AF_INET ? (struct sockaddr *)&a4 : (struct sockaddr *)&a6;
    socklen_t sl = family == AF_INET ? sizeof a4 : sizeof a6;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int got = -1;
    if (type == SOCK_DGRAM) {
        if (sendto(s, q, n, 0, sa, sl) == (ssize_t)n)
            got = (int)recv(s, resp, max, 0);
    } else if (connect(s, sa, sl) == 0) {
        uint8_t tq[514];
        tq[0] = (uint8_t)(n >> 8);
        tq[1] = (uint8_t)n;
        memcpy(tq + 2, q, n);
        if (write(s, tq, n + 2) == (ssize_t)(n + 2)) {
            size_t have = 0;
            while (have < max) {
                ssize_t r = read(s, resp + have, max - have);
                if (r <= 0)
                    break;
                have += (size_t)r;
                if (have >= 2 && have >= 2 + ((size_t)resp[0] << 8 | resp[1]))
                    break;
            }
            got = (int)have;
            if (got >= 2) { /* strip the length prefix */
                memmove(resp, resp + 2, (size_t)got - 2);
                got -= 2;
            }
        }
    }
    close(s);
    return got;
}

static int body_dns(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    uint8_t r[600];
    uint64_t t0 = time_mono_ns();
    int n = dns_roundtrip(AF_INET, SOCK_DGRAM, "github.com", r, sizeof r);
    uint64_t t1 = time_mono_ns();
    fx_say(out, "udp4 n=%d rcode=%d ms=%llu\n", n, n >= 12 ? r[3] & 15 : -1,
           (unsigned long long)((t1 - t0) / 1000000));
    n = dns_roundtrip(AF_INET, SOCK_STREAM, "pypi.org", r, sizeof r);
    fx_say(out, "tcp4 n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    n = dns_roundtrip(AF_INET6, SOCK_DGRAM, "example.com", r, sizeof r);
    fx_say(out, "udp6 n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    n = dns_roundtrip(AF_INET6, SOCK_STREAM, "evil.example", r, sizeof r);
    fx_say(out, "tcp6 n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    return 0;
}

TEST(dns_stub_refuses_at_once_and_records_names)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_dns, NULL);
    ASSERT_CONTAINS(f.out, "udp4 n=28 rcode=5 ms=");
    ASSERT_CONTAINS(f.out, "tcp4 n=26 rcode=5\n");
    char *ms = strstr(f.out, "ms=");
    ASSERT(ms && atoi(ms + 3) < 100);
    ASSERT_EQ(f.dns_mask, 0xf);
    ASSERT_CONTAINS(f.out, "udp6 n=29 rcode=5\n");
    ASSERT_CONTAINS(f.out, "tcp6 n=30 rcode=5\n");
    const char *want[4][3] = {{"github.com", "udp", "127.0.0.1"},
                              {"pypi.org", "tcp", "127.0.0.1"},
                              {"example.com", "udp", "::1"},
                              {"evil.example", "tcp", "::1"}};
    for (int i = 0; i < 4; i++) {
        const struct netwatch_event *e = NULL;
        for (size_t k = 0; k < fx_nev; k++)
            if (strcmp(fx_ev[k].attempted_host, want[i][0]) == 0)
                e = &fx_ev[k];
        ASSERT_MSG(e != NULL, "no event for %s", want[i][0]);
        ASSERT_STREQ(e->reason_name, "network_attempt");
        ASSERT_STREQ(e->syscall, "dns");
        ASSERT_STREQ(e->protocol, want[i][1]);
        ASSERT_STREQ(e->address, want[i][2]);
        ASSERT_EQ(e->port, 53);
        ASSERT_STREQ(e->dns_type, "A");
        ASSERT(e->blocked);
    }
    /* the loopback sends to the stub itself are not flagged: only the 4 queries */
    ASSERT_EQ(fx_nev, 4);
    ASSERT_EQ(f.st.dns_queries, 4);
}

/* getaddrinfo through libc (Python), resolv.conf pointing at the stub. */
static int body_getaddrinfo(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    dup2(out, 1);
    dup2(out, 2);
    char *argv[] = {"/usr/bin/python3", "-c",
                    "import socket, time\n"
                    "t = time.monotonic()\n"
                    "try:\n"
                    "    socket.getaddrinfo('github.com', 443)\n"
                    "    print('resolved?!')\n"
                    "except socket.gaierror as e:\n"
                    "    print('gaierror', e.errno)\n"
                    "print('ms', int((time.monotonic() - t) * 1000))\n",
                    NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
    execve(argv[0], argv, envp);
    return 127;
}

TEST(getaddrinfo_via_stub_fails_fast_with_attempted_host)
{
    struct fx f;
    struct fx_opts o = {.stub_resolv = true};
    FX_RUN(&f, &o, 1, body_getaddrinfo, NULL);
    ASSERT_CONTAINS(f.out, "gaierror");
    char *ms = strstr(f.out, "ms ");
    ASSERT_MSG(ms && atoi(ms + 3) < 1000, "getaddrinfo was slow: %s", f.out);
    size_t hits = 0;
    for (size_t k = 0; k < fx_nev; k++)
        if (strcmp(fx_ev[k].attempted_host, "github.com") == 0 &&
            strcmp(fx_ev[k].syscall, "dns") == 0 && fx_ev[k].port == 53)
            hits++;
    if (!hits)
        fx_dump();
    ASSERT(hits >= 1);
    /* nothing else looked like an escape: only DNS queries were reported */
    ASSERT_EQ(fx_count("network_attempt", "dns", NULL), fx_nev);
}

/* ---- TOCTOU: rewriting the sockaddr after the supervisor read it ---------------- */

struct flip {
    struct sockaddr_in *shared;
    struct sockaddr_in good, bad;
    volatile int stop;
};

static void *flipper(void *p)
{
    struct flip *f = p;
    while (!f->stop) {
        memcpy(f->shared, &f->bad, sizeof f->bad);
        memcpy(f->shared, &f->good, sizeof f->good);
    }
    return NULL;
}

static void *acceptor(void *p)
{
    int l = *(int *)p;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            return NULL;
        close(c);
    }
}

static int body_toctou(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = fx_sin4("127.0.0.1", 0);
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 512) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        return 2;
    static struct sockaddr_in shared;
    struct flip f = {
        .shared = &shared, .good = a, .bad = fx_sin4("93.184.216.34", ntohs(a.sin_port))};
    shared = a;
    pthread_t t1, t2;
    pthread_create(&t2, NULL, acceptor, &l);
    pthread_create(&t1, NULL, flipper, &f);
    int ok = 0, fail = 0, escaped = 0;
    for (int i = 0; i < 1500; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&shared, sizeof shared) == 0) {
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            getpeername(s, (struct sockaddr *)&peer, &pl);
            if (ntohl(peer.sin_addr.s_addr) >> 24 == 127)
                ok++;
            else
                escaped++;
        } else {
            fail++;
        }
        close(s);
    }
    f.stop = 1;
    pthread_join(t1, NULL);
    fx_say(out, "ok=%d fail=%d escaped=%d\n", ok, fail, escaped);
    return 0;
}

TEST(toctou_rewrite_cannot_leave_the_namespace)
{
    struct fx f;
    struct fx_opts o = {.max_events = 5000};
    FX_RUN(&f, &o, 1, body_toctou, NULL);
    int ok = -1, fail = -1, escaped = -1;
    char *p = strstr(f.out, "ok=");
    ASSERT_MSG(p && sscanf(p, "ok=%d fail=%d escaped=%d", &ok, &fail, &escaped) == 3,
               "output: %s", f.out);
    fprintf(stderr, "    ok=%d fail=%d escaped=%d events=%zu\n", ok, fail, escaped, fx_nev);
    ASSERT_EQ(escaped, 0);
    ASSERT_EQ(ok + fail, 1500);
    ASSERT(ok > 0 && fail > 0); /* both addresses were really used */
}

/* ---- bounds: a looping program costs a counter ------------------------------------ */

static int body_loop(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = fx_sin4("10.1.2.3", 80);
    int fails = 0;
    for (int i = 0; i < 1000; i++)
        if (sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a) < 0)
            fails++;
    fx_say(out, "fails=%d\n", fails);
    return 0;
}

TEST(events_are_bounded_per_reason)
{
    struct fx f;
    struct fx_opts o = {.max_events = 100};
    FX_RUN(&f, &o, 1, body_loop, NULL);
    ASSERT_CONTAINS(f.out, "fails=1000\n");
    ASSERT_EQ(fx_nev, 100);
    ASSERT_EQ(f.st.events[NETWATCH_NETWORK_ATTEMPT], 1000);
    ASSERT_EQ(f.st.suppressed[NETWATCH_NETWORK_ATTEMPT], 900);
    ASSERT_EQ(f.st.suppressed[NETWATCH_BLOCKED_SYSCALL], 0);
}

/* ---- DNS over TCP: many idle connections do not wedge the stub ---------------------- */

static int body_tcp_hog(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    int hogs[40];
    struct sockaddr_in a = fx_sin4("127.0.0.1", 53);
    for (int i = 0; i < 40; i++) {
        hogs[i] = socket(AF_INET, SOCK_STREAM, 0);
        connect(hogs[i], (struct sockaddr *)&a, sizeof a);
        if (write(hogs[i], "\xff\xff", 2) < 0) { /* claims 65535 bytes: over the bound */
        }
    }
    uint8_t r[600];
    int n = dns_roundtrip(AF_INET, SOCK_DGRAM, "still.alive", r, sizeof r);
    fx_say(out, "udp n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    usleep(100000);
    n = dns_roundtrip(AF_INET, SOCK_STREAM, "tcp.alive", r, sizeof r);
    fx_say(out, "tcp n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    return 0;
}

TEST(dns_stub_stays_up_under_tcp_abuse)
{
    struct fx f;
    struct fx_opts o = {0};
    FX_RUN(&f, &o, 1, body_tcp_hog, NULL);
    ASSERT_CONTAINS(f.out, "udp n=29 rcode=5\n");
    ASSERT_CONTAINS(f.out, "tcp n=27 rcode=5\n");
    ASSERT(f.st.dns_malformed >= 1);
}

/* ---- IPv6 off in the namespace: the stub serves IPv4 only ------------------------ */

static int body_dns4(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    uint8_t r[600];
    int n = dns_roundtrip(AF_INET, SOCK_DGRAM, "v4.only", r, sizeof r);
    fx_say(out, "udp4 n=%d rcode=%d\n", n, n >= 12 ? r[3] & 15 : -1);
    return 0;
}

TEST(dns_stub_without_ipv6_serves_ipv4)
{
    struct fx f;
    struct fx_opts o = {.no_ipv6 = true};
    FX_RUN(&f, &o, 1, body_dns4, NULL);
    ASSERT_EQ(f.dns_mask, (1 << NETWATCH_DNS_UDP4) | (1 << NETWATCH_DNS_TCP4));
    ASSERT_CONTAINS(f.out, "udp4 n=25 rcode=5\n");
    ASSERT_EQ(fx_count("network_attempt", "dns", "127.0.0.1"), 1);
}

/* ---- the program dies with calls in flight: the supervisor carries on ------------- */

static void *connect_forever(void *p)
{
    (void)p;
    struct sockaddr_in a = fx_sin4("10.0.0.1", 80);
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        connect(s, (struct sockaddr *)&a, sizeof a);
        close(s);
    }
    return NULL;
}

static int body_forever(int out, int go, void *arg)
{
    (void)go;
    (void)arg;
    pthread_t t;
    for (int i = 0; i < 4; i++)
        pthread_create(&t, NULL, connect_forever, NULL);
    fx_say(out, "started\n");
    connect_forever(NULL);
    return 0;
}

TEST(program_killed_mid_call_leaves_supervisor_sound)
{
    struct fx f;
    struct fx_opts o = {.max_events = 10};
    char err[256] = "";
    ASSERT_EQ(fx_start(&f, &o, 1, body_forever, NULL, err, sizeof err), 0);
    usleep(200000);
    uint64_t t0 = time_mono_ns();
    fx_finish(&f, 1); /* SIGKILL with calls in flight, then netwatch_stop */
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    ASSERT(WIFSIGNALED(f.status));
    ASSERT_MSG(ms < 2000, "stop took %llu ms", (unsigned long long)ms);
    ASSERT(f.st.notifications > 100);
    ASSERT_EQ(fx_nev, 10); /* bounded */
    ASSERT(f.st.suppressed[NETWATCH_NETWORK_ATTEMPT] > 0);
}

/* netwatch_stop_request_then: the hook runs once, in the supervisor's
 * thread, before netwatch_stop returns; without a supervisor it never runs. */
struct stop_hook_seen {
    int calls;
    pthread_t thread;
};

static void stop_hook(void *arg)
{
    struct stop_hook_seen *s = arg;
    s->calls++;
    s->thread = pthread_self();
}

TEST(stop_hook_runs_once_in_the_supervisor_thread)
{
    char err[256];
    struct netwatch_config cfg;
    netwatch_config_init(&cfg);
    netwatch_t *nw = NULL;
    ASSERT_EQ(netwatch_start(&cfg, &nw, err, sizeof err), 0);
    struct stop_hook_seen seen = {0};
    netwatch_stop_request_then(nw, stop_hook, &seen);
    netwatch_stop_request(nw); /* repeated requests do not run it again */
    netwatch_stop(nw, NULL);
    ASSERT_EQ(seen.calls, 1);
    ASSERT(!pthread_equal(seen.thread, pthread_self()));
    netwatch_stop_request_then(NULL, stop_hook, &seen);
    ASSERT_EQ(seen.calls, 1);
}

TEST(stop_hook_set_after_the_thread_ended_runs_in_netwatch_stop)
{
    char err[256];
    struct netwatch_config cfg;
    netwatch_config_init(&cfg);
    netwatch_t *nw = NULL;
    ASSERT_EQ(netwatch_start(&cfg, &nw, err, sizeof err), 0);
    netwatch_stop_request(nw); /* the thread ends with no hook to run */
    usleep(100000);
    struct stop_hook_seen seen = {0};
    netwatch_stop_request_then(nw, stop_hook, &seen);
    netwatch_stop(nw, NULL);
    ASSERT_EQ(seen.calls, 1);
    ASSERT(pthread_equal(seen.thread, pthread_self())); /* run by netwatch_stop */
}
