/* bench_service.c - what `clearbox serve` costs, each figure beside a
 * baseline measured in the same run against the same server.
 *
 * One server: `$CLEARBOX serve` on 127.0.0.1 with an ephemeral port, a
 * fresh SQLite file and audit log in a temp directory, 2 workers (the
 * configured parallelism; BENCH_WORKERS overrides), the per-submitter rate
 * and queued limits off (one anonymous client submits thousands). It is
 * stopped at the end (SIGTERM, then SIGKILL after 20 s), also when this
 * program fails or is interrupted. In order:
 *
 *  1. GET /v1/evaluations/{id} (a finished record) latency at a fixed
 *     1,000 req/s from an open-loop generator (below), p50/p99/max;
 *     baseline: GET /healthz at the same rate. Target p99 < 5 ms. Then
 *     (a note) both again while the workers run evaluations all the time.
 *  2. GET /metrics round trip (sequential, keep-alive), median; baseline:
 *     the GET /healthz round trip, interleaved. Target < 5 ms.
 *  3. End-to-end evaluations/s of `print(1)` in Python: N submitted in
 *     batches of 100, waited for (every record checked: completed, exit 0,
 *     stdout "1\n"); time from the first submit to the last finished_at.
 *     Baseline: /usr/bin/python3 main.py (stdout through a pipe, checked),
 *     N runs on as many parallel lanes as workers. Nine rounds, each a pair
 *     run back to back (bare first in even rounds, the service first in odd
 *     ones); the figure is the round with the median ratio of the pair's
 *     two rates. On a shared machine the contention moves within seconds:
 *     a pair compares one moment, while each side's best round compares two
 *     different ones (notes give that and all rounds together as well).
 *     Target >= 75% of bare.
 *  4. Submit throughput: wrk -t2 -c16 with a Lua script POSTing print(1) to
 *     /v1/evaluations; baseline: the same wrk against GET /healthz. During
 *     this phase every worker is held by a sleeping evaluation (priority 9),
 *     so the submits queue up and measure the API + durable insert alone,
 *     not the CPU the sandboxes would take. The queue depth afterwards must
 *     equal wrk's request count (a WARNING note if not). A second wrk run
 *     on the queue the first left shows the cost of a deeper queue.
 *  5. BENCH_SOAK_S=SECONDS (not by default; runs before 4): steady open-loop
 *     load (200 req/s: GET record, 1 in 20 a submit, 1 in 200 /metrics) for
 *     that long, RSS of the serve process sampled every 5 s; start (mean of
 *     the first quarter) vs end (mean of the last quarter) and the
 *     least-squares slope.
 *
 * The open-loop generator sends on a fixed schedule (request k at
 * t0 + k/rate) over keep-alive connections, opening another connection
 * (up to 64) when every open one is waiting, and measures each latency from
 * the scheduled send time, so a stall in the server shows up as latency of
 * every request scheduled during it (no coordinated omission).
 *
 * BENCH_QUICK=1: shorter phases. Needs root (the sandbox) and wrk. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "util/err.h"

/* strerror_r into a temporary buffer (thread-safe, unlike strerror) */
#define ESTR(e) err_str((e), (char[128]){0}, 128)

extern char **environ;

/* the evaluation every phase submits (no escapes: it is also a Lua string) */
static const char *PRINT1 = "{\"code\":\"print(1)\",\"language\":\"python\"}";

static char dir[64];
static volatile pid_t server_pid = -1, wrk_pid = -1;
static int port;
static int workers = 2;
static int met_count, missed_count;

/* ---- the server ------------------------------------------------------------ */

static void server_stop(void)
{
    if (server_pid <= 0)
        return;
    kill(server_pid, SIGTERM);
    int st;
    for (int i = 0; i < 2000; i++) { /* 20 s */
        pid_t r = waitpid(server_pid, &st, WNOHANG);
        if (r == server_pid || (r < 0 && errno == ECHILD)) {
            server_pid = -1;
            return;
        }
        usleep(10000);
    }
    fprintf(stderr, "bench: the server did not stop within 20 s of SIGTERM; SIGKILL\n");
    kill(server_pid, SIGKILL);
    waitpid(server_pid, &st, 0);
    server_pid = -1;
}

static void cleanup(void)
{
    server_stop();
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench: could not remove %s\n", dir);
        dir[0] = 0;
    }
}

/* SIGINT/SIGTERM/SIGHUP: only async-signal-safe calls. Stop wrk and the
 * server (SIGTERM, SIGKILL after 20 s), remove the temp directory, exit 1. */
static void on_signal(int sig)
{
    (void)sig;
    if (wrk_pid > 0)
        kill(wrk_pid, SIGKILL);
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        int st;
        for (int i = 0; i < 2000 && waitpid(server_pid, &st, WNOHANG) == 0; i++) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
            if (i == 1999) {
                kill(server_pid, SIGKILL);
                waitpid(server_pid, &st, 0);
            }
        }
    }
    if (dir[0]) {
        pid_t pid = fork();
        if (pid == 0) {
            char *argv[] = {"/bin/rm", "-rf", dir, NULL};
            execv(argv[0], argv);
            _exit(127);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    _exit(1);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2048) {
            cap *= 2;
            b = realloc(b, cap);
        }
    }
    fclose(f);
    b[n] = 0;
    if (len)
        *len = n;
    return b;
}

static void server_start(const char *clearbox)
{
    char db[128], audit[128], logp[128], wk[16];
    snprintf(db, sizeof db, "sqlite:%s/bench.db", dir);
    snprintf(audit, sizeof audit, "%s/audit.log", dir);
    snprintf(logp, sizeof logp, "%s/serve.log", dir);
    snprintf(wk, sizeof wk, "%d", workers);
    char *argv[] = {(char *)clearbox, "serve", "--listen", "127.0.0.1:0", "--db", db,
                    "--audit-log", audit, "--workers", wk, "--submit-rate-per-s", "0",
                    "--submitter-queued-max", "0", "--grace-s", "1", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t spid;
    int rc = posix_spawn(&spid, clearbox, &fa, NULL, argv, environ);
    server_pid = spid;
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        bench_fail("spawn %s serve: %s", clearbox, ESTR(rc));
    /* the log's service.started line names the port; the self-check follows */
    for (int i = 0; i < 3000; i++) { /* 30 s */
        char *log = read_file(logp, NULL);
        const char *p = log ? strstr(log, "\"event\":\"service.started\"") : NULL;
        const char *l = p ? strstr(p, "\"listen\":\"127.0.0.1:") : NULL;
        if (l)
            port = atoi(l + strlen("\"listen\":\"127.0.0.1:"));
        bool checked = log && strstr(log, "\"event\":\"sandbox.selfcheck\"");
        bool ok = log && strstr(log, "\"event\":\"sandbox.selfcheck\",\"service\":\"clearbox\","
                                     "\"logger\":\"service\",\"ok\":true");
        free(log);
        if (port && checked) {
            if (!ok)
                bench_fail("the server's sandbox self-check failed (see %s)", logp);
            return;
        }
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = -1;
            char *all = read_file(logp, NULL);
            fprintf(stderr, "%s", all ? all : "");
            free(all);
            bench_fail("the server exited during startup (status 0x%x)", st);
        }
        usleep(10000);
    }
    bench_fail("the server did not log service.started + sandbox.selfcheck within 30 s");
}

static long server_rss_kb(void)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/status", (int)server_pid);
    char *s = read_file(p, NULL);
    const char *r = s ? strstr(s, "VmRSS:") : NULL;
    long kb = r ? strtol(r + 6, NULL, 10) : -1;
    free(s);
    return kb;
}

/* utime+stime and cutime+cstime of one process, in clock ticks; false if
 * it cannot be read (gone). */
static bool proc_ticks(pid_t pid, unsigned long long *self, unsigned long long *children)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    char *s = read_file(p, NULL);
    const char *r = s ? strrchr(s, ')') : NULL;
    unsigned long long ut = 0, st = 0;
    long long cut = 0, cst = 0;
    bool ok = r && sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
                          &ut, &st, &cut, &cst) == 4;
    free(s);
    *self = ut + st;
    *children = (unsigned long long)(cut + cst);
    return ok;
}

/* CPU seconds of the serve process: its own threads, and the sandboxes
 * (init, the program): its reaped children, plus what its living children
 * (the sandbox spawner, see docs/sandbox.md) used and reaped. */
static void server_cpu(double *self_s, double *children_s)
{
    unsigned long long self, children;
    if (!proc_ticks(server_pid, &self, &children))
        bench_fail("cannot read /proc/%d/stat", (int)server_pid);
    char p[96];
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)server_pid, (int)server_pid);
    char *kids = read_file(p, NULL);
    char *save = NULL;
    for (char *t = kids ? strtok_r(kids, " \n", &save) : NULL; t;
         t = strtok_r(NULL, " \n", &save)) {
        unsigned long long ks, kc;
        if (proc_ticks((pid_t)atoi(t), &ks, &kc))
            children += ks + kc;
    }
    free(kids);
    double hz = (double)sysconf(_SC_CLK_TCK);
    *self_s = (double)self / hz;
    *children_s = (double)children / hz;
}

static double children_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- a blocking keep-alive HTTP/1.1 client ------------------------------ */

struct conn {
    int fd;
    char *buf; /* the last response: headers + body, NUL-terminated */
    size_t cap;
    uint64_t last_ns; /* end of the last response */
};

static int tcp_connect(bool nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        bench_fail("socket: %s", ESTR(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        bench_fail("connect 127.0.0.1:%d: %s", port, ESTR(errno));
    return fd;
}

static void conn_open(struct conn *c)
{
    c->fd = tcp_connect(false);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!c->buf) {
        c->cap = 1 << 16;
        c->buf = malloc(c->cap);
    }
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

/* Headers of buf[0..n): returns the header length (through CRLFCRLF) or 0;
 * sets *status and *clen (-1 when there is no Content-Length). */
static size_t parse_head(const char *buf, size_t n, int *status, long *clen)
{
    const char *e = memmem(buf, n, "\r\n\r\n", 4);
    if (!e)
        return 0;
    size_t hl = (size_t)(e - buf) + 4;
    *status = (n > 12 && !memcmp(buf, "HTTP/1.1 ", 9)) ? atoi(buf + 9) : -1;
    *clen = -1;
    for (const char *l = memchr(buf, '\n', hl); l && l < e; l = memchr(l, '\n', (size_t)(e - l))) {
        l++;
        if (!strncasecmp(l, "Content-Length:", 15)) {
            *clen = strtol(l + 15, NULL, 10);
            break;
        }
    }
    return hl;
}

/* Send one request and read its whole response into c->buf. Returns the
 * status; *body points into c->buf. */
static int http_do(struct conn *c, const char *method, const char *path, const char *body,
                   const char **resp_body, size_t *resp_len)
{
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int hn;
    if (body)
        hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, blen);
    else
        hn = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method,
                      path);
    /* the server closes connections idle for http_timeout_s (60 s): after a
     * long phase on other connections, start a fresh one */
    if (c->fd >= 0 && bench_now_ns() - c->last_ns > 20000000000ull) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->fd < 0)
        conn_open(c);
    for (int attempt = 0;; attempt++) {
        struct iovec iov[2] = {{head, (size_t)hn}, {(void *)body, blen}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = body ? 2 : 1};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w == (ssize_t)((size_t)hn + blen))
            break;
        if (attempt == 0 && w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            close(c->fd); /* the server closed an idle connection: reconnect once */
            c->fd = -1;
            conn_open(c);
            continue;
        }
        bench_fail("send %s %s: %s", method, path, w < 0 ? ESTR(errno) : "short write");
    }
    size_t n = 0, hl = 0;
    int status = -1;
    long clen = -1;
    for (;;) {
        if (c->cap - n < 4096) {
            c->cap *= 2;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t r = recv(c->fd, c->buf + n, c->cap - n - 1, 0);
        if (r <= 0)
            bench_fail("%s %s: %s", method, path, r == 0 ? "connection closed" : ESTR(errno));
        n += (size_t)r;
        if (!hl) {
            hl = parse_head(c->buf, n, &status, &clen);
            if (hl && clen < 0)
                bench_fail("%s %s: response without Content-Length", method, path);
        }
        if (hl && n >= hl + (size_t)clen)
            break;
    }
    c->buf[n] = 0;
    c->last_ns = bench_now_ns();
    if (resp_body)
        *resp_body = c->buf + hl;
    if (resp_len)
        *resp_len = (size_t)clen;
    return status;
}

static json_t *http_json(struct conn *c, const char *method, const char *path, const char *body,
                         int want_status)
{
    const char *b;
    size_t bl;
    int st = http_do(c, method, path, body, &b, &bl);
    if (st != want_status)
        bench_fail("%s %s: status %d, wanted %d: %.300s", method, path, st, want_status, b);
    json_error_t je;
    json_t *j = json_loadb(b, bl, 0, &je);
    if (!j)
        bench_fail("%s %s: bad JSON: %s", method, path, je.text);
    return j;
}

/* ---- the open-loop generator ----------------------------------------------- */

#define OL_MAX_CONNS 64

struct ol_req {
    const char *text; /* the whole request */
    size_t len;
};

struct ol_conn {
    int fd;
    bool busy, connected;
    uint64_t sched;
    size_t got, hl;
    long clen;
    int status;
    char head[8192];
};

struct ol_result {
    double *lat_ms; /* per request, by schedule index; < 0 = failed */
    uint64_t n, ok, bad_status, failed, conns, late_max_ns;
    double wall_s;
};

/* Request k is reqs[pick(k)]; pick NULL = reqs[0]. */
static struct ol_result open_loop(const struct ol_req *reqs, size_t (*pick)(uint64_t k),
                                  double rate, double seconds)
{
    struct ol_result res = {0};
    res.n = (uint64_t)(rate * seconds);
    res.lat_ms = calloc(res.n, sizeof(double));
    struct ol_conn *cs = calloc(OL_MAX_CONNS, sizeof *cs);
    int ncs = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    uint64_t interval = (uint64_t)(1e9 / rate);
    uint64_t t0 = bench_now_ns() + 20000000ull;
    uint64_t deadline = t0 + (uint64_t)(seconds * 1e9) + 30000000000ull;
    uint64_t next_sched = 0, next_send = 0, done = 0;
    for (int i = 0; i < 4; i++) { /* a few warm connections to start with */
        cs[ncs].fd = tcp_connect(true);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)ncs};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[ncs].fd, &ev);
        ncs++;
    }
    while (done < res.n) {
        uint64_t now = bench_now_ns();
        if (now > deadline)
            bench_fail("open loop: %llu of %llu responses after the deadline",
                       (unsigned long long)done, (unsigned long long)res.n);
        while (next_sched < res.n && t0 + next_sched * interval <= now)
            next_sched++;
        /* send every due request on an idle connection, opening more if needed */
        while (next_send < next_sched) {
            int idle = -1;
            for (int i = 0; i < ncs; i++)
                if (cs[i].connected && !cs[i].busy) {
                    idle = i;
                    break;
                }
            if (idle < 0) {
                bool connecting = false;
                for (int i = 0; i < ncs; i++)
                    connecting |= !cs[i].connected && cs[i].fd >= 0;
                if (!connecting && ncs < OL_MAX_CONNS) {
                    memset(&cs[ncs], 0, sizeof cs[ncs]);
                    cs[ncs].fd = tcp_connect(true);
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                                             .data.u32 = (uint32_t)ncs};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cs[ncs].fd, &ev);
                    ncs++;
                }
                break;
            }
            struct ol_conn *c = &cs[idle];
            const struct ol_req *rq = &reqs[pick ? pick(next_send) : 0];
            ssize_t w = send(c->fd, rq->text, rq->len, MSG_NOSIGNAL);
            if (w != (ssize_t)rq->len)
                bench_fail("open loop: send: %s", w < 0 ? ESTR(errno) : "short write");
            c->busy = true;
            c->sched = next_send;
            c->got = c->hl = 0;
            uint64_t late = now - (t0 + next_send * interval);
            if (late > res.late_max_ns)
                res.late_max_ns = late;
            next_send++;
        }
        uint64_t wait_ns = 0;
        if (next_sched < res.n) {
            uint64_t due = t0 + next_sched * interval;
            now = bench_now_ns();
            wait_ns = due > now ? due - now : 0;
        } else {
            wait_ns = 100000000ull;
        }
        struct timespec ts = {(time_t)(wait_ns / 1000000000ull), (long)(wait_ns % 1000000000ull)};
        struct epoll_event evs[OL_MAX_CONNS];
        int ne = epoll_pwait2(ep, evs, OL_MAX_CONNS, &ts, NULL);
        if (ne < 0 && errno != EINTR)
            bench_fail("epoll_pwait2: %s", ESTR(errno));
        for (int e = 0; e < ne; e++) {
            struct ol_conn *c = &cs[evs[e].data.u32];
            if (!c->connected) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (soerr)
                    bench_fail("open loop: connect: %s", ESTR(soerr));
                c->connected = true;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                res.conns++;
                continue;
            }
            for (;;) {
                char tmp[65536];
                char *dst = c->hl ? tmp : c->head + c->got;
                size_t room = c->hl ? sizeof tmp : sizeof c->head - c->got - 1;
                if (!c->hl && room == 0)
                    bench_fail("open loop: response headers over %zu bytes", sizeof c->head);
                ssize_t r = recv(c->fd, dst, room, 0);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    break;
                if (r <= 0) { /* closed: a busy request fails; reconnect */
                    if (c->busy) {
                        res.lat_ms[c->sched] = -1;
                        res.failed++;
                        done++;
                    }
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    memset(c, 0, sizeof *c);
                    c->fd = tcp_connect(true);
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                                             .data.u32 = evs[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                    break;
                }
                if (!c->busy)
                    bench_fail("open loop: %zd bytes nobody asked for", r);
                c->got += (size_t)r;
                if (!c->hl) {
                    c->hl = parse_head(c->head, c->got, &c->status, &c->clen);
                    if (c->hl && c->clen < 0)
                        bench_fail("open loop: response without Content-Length");
                }
                if (c->hl && c->got >= c->hl + (size_t)c->clen) {
                    if (c->got > c->hl + (size_t)c->clen)
                        bench_fail("open loop: more bytes than Content-Length");
                    uint64_t t = bench_now_ns();
                    double lat = (double)(t - (t0 + c->sched * interval)) / 1e6;
                    res.lat_ms[c->sched] = lat;
                    if (c->status >= 200 && c->status < 300)
                        res.ok++;
                    else
                        res.bad_status++;
                    c->busy = false;
                    done++;
                    break;
                }
            }
        }
    }
    res.wall_s = (double)(bench_now_ns() - t0) / 1e9;
    for (int i = 0; i < ncs; i++)
        if (cs[i].fd > 0)
            close(cs[i].fd);
    close(ep);
    free(cs);
    return res;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct pct {
    double p50, p90, p99, max;
};

/* Percentiles of the successful latencies (sorts a copy). */
static struct pct percentiles(const double *v, uint64_t n)
{
    double *s = malloc((n ? n : 1) * sizeof *s);
    uint64_t m = 0;
    for (uint64_t i = 0; i < n; i++)
        if (v[i] >= 0)
            s[m++] = v[i];
    struct pct p = {0};
    if (m) {
        qsort(s, m, sizeof *s, cmp_double);
        p.p50 = s[m / 2];
        p.p90 = s[(m * 90) / 100];
        p.p99 = s[(m * 99) / 100 < m ? (m * 99) / 100 : m - 1];
        p.max = s[m - 1];
    }
    free(s);
    return p;
}

/* ---- figure lines ------------------------------------------------------------ */

/* NAME VALUE UNIT (baseline NAME VALUE UNIT)[, target ...: met|MISSED] */
static void figure(const char *name, double v, const char *unit, const char *base, double bv,
                   const char *bunit, const char *target, int met /* -1: no target */)
{
    printf("%s %.2f %s (baseline %s %.2f %s)", name, v, unit, base, bv, bunit);
    if (met >= 0) {
        printf(", %s: %s", target, met ? "met" : "MISSED");
        if (met)
            met_count++;
        else
            missed_count++;
    }
    putchar('\n');
    fflush(stdout);
}

static char *req_text(const char *method, const char *path, const char *body)
{
    char *t = NULL;
    int n;
    if (body)
        n = asprintf(&t,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, strlen(body), body);
    else
        n = asprintf(&t, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    if (n < 0)
        bench_fail("asprintf: out of memory");
    return t;
}

/* ---- evaluations ------------------------------------------------------------- */


/* Submit one evaluation and return its id (caller frees). */
static char *submit_one(struct conn *c, const char *body)
{
    json_t *j = http_json(c, "POST", "/v1/evaluations", body, 202);
    char *id = strdup(json_string_value(json_object_get(j, "id")));
    json_decref(j);
    return id;
}

static bool terminal(const char *st)
{
    return st && strcmp(st, "queued") != 0 && strcmp(st, "running") != 0;
}

static double rfc3339_s(const char *s)
{
    struct tm tm = {0};
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p)
        bench_fail("bad timestamp %s", s ? s : "(null)");
    double frac = *p == '.' ? strtod(p, NULL) : 0;
    return (double)timegm(&tm) + frac;
}

static double realtime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for one evaluation to reach a terminal status, polling every
 * poll_us; returns the record. */
static json_t *wait_record_every(struct conn *c, const char *id, double timeout_s,
                                 useconds_t poll_us)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    uint64_t end = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        json_t *r = http_json(c, "GET", path, NULL, 200);
        if (terminal(json_string_value(json_object_get(r, "status"))))
            return r;
        json_decref(r);
        if (bench_now_ns() > end)
            bench_fail("evaluation %s not finished after %.0f s", id, timeout_s);
        usleep(poll_us);
    }
}

static json_t *wait_record(struct conn *c, const char *id, double timeout_s)
{
    return wait_record_every(c, id, timeout_s, 5000);
}

/* N print(1) evaluations in batches of 100; returns evaluations per second
 * from the first submit to the last finished_at. */
struct e2e_stats {
    char per_worker[256]; /* "vm/w0 60, vm/w1 60" */
    double duration, create, execute, teardown, held; /* mean ms per evaluation */
    double cpu_self, cpu_children, cpu_cgroup;        /* mean CPU ms per evaluation */
    double machine_busy, machine_idle; /* ms per evaluation, all CPUs (/proc/stat) */
};

/* The machine's busy and idle time so far, in ms over all CPUs (the first
 * line of /proc/stat: idle and iowait count as idle, steal as neither). */
static void machine_ms(double *busy, double *idle)
{
    unsigned long long v[8] = {0};
    char *t = read_file("/proc/stat", NULL);
    if (!t || sscanf(t, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]) != 8)
        bench_fail("cannot read /proc/stat");
    free(t);
    double hz = (double)sysconf(_SC_CLK_TCK);
    *busy = 1000.0 * (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    *idle = 1000.0 * (double)(v[3] + v[4]) / hz;
}

static double service_round(struct conn *c, int n, struct e2e_stats *es)
{
    char **ids = calloc((size_t)n, sizeof *ids);
    double self0, child0, busy0, idle0;
    server_cpu(&self0, &child0);
    machine_ms(&busy0, &idle0);
    double t_start = realtime_s();
    int got = 0;
    while (got < n) {
        int k = n - got < 100 ? n - got : 100;
        size_t cap = (size_t)k * 64 + 64;
        char *body = malloc(cap);
        size_t off = (size_t)snprintf(body, cap, "{\"evaluations\":[");
        for (int i = 0; i < k; i++)
            off += (size_t)snprintf(body + off, cap - off, "%s%s", i ? "," : "", PRINT1);
        snprintf(body + off, cap - off, "]}");
        json_t *j = http_json(c, "POST", "/v1/evaluations/batch", body, 202);
        free(body);
        json_t *items = json_object_get(j, "items");
        if (json_array_size(items) != (size_t)k)
            bench_fail("batch: %zu items for %d", json_array_size(items), k);
        for (int i = 0; i < k; i++) {
            const char *id = json_string_value(json_object_get(json_array_get(items, (size_t)i), "id"));
            if (!id)
                bench_fail("batch item %d refused", i);
            ids[got++] = strdup(id);
        }
        json_decref(j);
    }
    /* Wait for the queue to drain with two one-item list queries every 50
     * ms; read and check the records only afterwards. The figure ends at the
     * last finished_at (the server's clock), so this costs the measurement
     * nothing, and the workers do not share the CPUs with a record read per
     * evaluation while they run (it was one full GET each, ~0.15 ms). */
    uint64_t give_up = bench_now_ns() + 120ull * 1000000000ull;
    for (;;) {
        usleep(50000);
        json_t *q = http_json(c, "GET", "/v1/evaluations?status=queued&limit=1", NULL, 200);
        json_t *r = http_json(c, "GET", "/v1/evaluations?status=running&limit=1", NULL, 200);
        bool idle = json_array_size(json_object_get(q, "items")) == 0 &&
                    json_array_size(json_object_get(r, "items")) == 0;
        json_decref(q);
        json_decref(r);
        if (idle)
            break;
        if (bench_now_ns() > give_up)
            bench_fail("%d evaluations not finished after 120 s", n);
    }
    double self1, child1, busy1, idle1;
    server_cpu(&self1, &child1);
    machine_ms(&busy1, &idle1);
    double t_seen = realtime_s();
    double last = 0;
    struct e2e_stats sum = {0};
    char wid[64][64];
    int wcount[64] = {0}, nw = 0;
    for (int i = 0; i < n; i++) {
        json_t *r = wait_record_every(c, ids[i], 1, 50000);
        const char *st = json_string_value(json_object_get(r, "status"));
        const char *out = json_string_value(json_object_get(r, "stdout"));
        json_int_t ec = json_integer_value(json_object_get(r, "exit_code"));
        if (strcmp(st, "completed") != 0 || ec != 0 || !out || strcmp(out, "1\n") != 0)
            bench_fail("evaluation %s: status %s, exit %lld, stdout %s", ids[i], st,
                       (long long)ec, out ? out : "null");
        double f = rfc3339_s(json_string_value(json_object_get(r, "finished_at")));
        if (f > last)
            last = f;
        const char *w = json_string_value(json_object_get(r, "worker_id"));
        int k = 0;
        while (k < nw && strcmp(wid[k], w ? w : "?") != 0)
            k++;
        if (k == nw && nw < 64)
            snprintf(wid[nw++], sizeof wid[0], "%s", w ? w : "?");
        if (k < 64)
            wcount[k]++;
        json_t *ph = json_object_get(r, "phases");
        sum.duration += json_real_value(json_object_get(r, "duration_ms"));
        sum.create += json_real_value(json_object_get(ph, "create_ms"));
        sum.execute += json_real_value(json_object_get(ph, "execute_ms"));
        sum.teardown += json_real_value(json_object_get(ph, "teardown_ms"));
        sum.held += 1000 * (f - rfc3339_s(json_string_value(json_object_get(r, "started_at"))));
        sum.cpu_cgroup += 1000 * json_real_value(json_object_get(
                                     json_object_get(r, "resources"), "cpu_seconds"));
        json_decref(r);
        free(ids[i]);
    }
    free(ids);
    es->duration = sum.duration / n;
    es->create = sum.create / n;
    es->execute = sum.execute / n;
    es->teardown = sum.teardown / n;
    es->held = sum.held / n;
    size_t off = 0;
    es->per_worker[0] = 0;
    for (int k = 0; k < nw && off < sizeof es->per_worker; k++)
        off += (size_t)snprintf(es->per_worker + off, sizeof es->per_worker - off, "%s%s %d",
                                k ? ", " : "", wid[k], wcount[k]);
    es->cpu_cgroup = sum.cpu_cgroup / n;
    /* idle after the last finish until the poll saw it (up to 50 ms on
     * every CPU) is the benchmark's, not the service's */
    double tail = (t_seen > last ? t_seen - last : 0) * 1000.0 * (double)sysconf(_SC_NPROCESSORS_ONLN);
    double idle = idle1 - idle0 - tail;
    es->machine_busy = (busy1 - busy0) / n;
    es->machine_idle = (idle > 0 ? idle : 0) / n;
    es->cpu_self = 1000 * (self1 - self0) / n;
    es->cpu_children = 1000 * (child1 - child0) / n;
    return n / (last - t_start);
}

/* Bare: /usr/bin/python3 main.py, n runs over `workers` parallel lanes. */
struct lane {
    int runs;
    char *script;
};

static void *bare_lane(void *arg)
{
    struct lane *l = arg;
    char *argv[] = {"/usr/bin/python3", l->script, NULL};
    for (int i = 0; i < l->runs; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            bench_fail("pipe: %s", ESTR(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        pid_t pid;
        int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        if (rc != 0)
            bench_fail("spawn python3: %s", ESTR(rc));
        char out[16];
        size_t n = 0;
        ssize_t r;
        while ((r = read(p[0], out + n, sizeof out - 1 - n)) > 0)
            n += (size_t)r;
        close(p[0]);
        out[n] = 0;
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strcmp(out, "1\n") != 0)
            bench_fail("bare python3: status 0x%x, stdout '%s'", st, out);
    }
    return NULL;
}

static double bare_round(int n, double *cpu_ms)
{
    double cpu0 = children_cpu_s();
    char script[128];
    snprintf(script, sizeof script, "%s/main.py", dir);
    pthread_t th[64];
    struct lane lanes[64];
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < workers; i++) {
        lanes[i].runs = n / workers + (i < n % workers);
        lanes[i].script = script;
        pthread_create(&th[i], NULL, bare_lane, &lanes[i]);
    }
    for (int i = 0; i < workers; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(bench_now_ns() - t0) / 1e9;
    *cpu_ms = 1000 * (children_cpu_s() - cpu0) / n;
    return n / wall;
}

/* ---- wrk -------------------------------------------------------------------- */

struct wrk_out {
    double rps, p50_ms, p99_ms;
    long requests, non2xx, sock_errors;
};

static double wrk_ms(const char *text, const char *label)
{
    const char *p = strstr(text, label);
    if (!p)
        return -1;
    p += strlen(label);
    char *e;
    double v = strtod(p, &e);
    if (!strncmp(e, "us", 2))
        return v / 1000;
    if (!strncmp(e, "ms", 2))
        return v;
    if (!strncmp(e, "s", 1))
        return v * 1000;
    if (!strncmp(e, "m", 1))
        return v * 60000;
    return -1;
}

static struct wrk_out run_wrk(const char *script, const char *path, int seconds)
{
    char url[128], dur[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    snprintf(dur, sizeof dur, "%ds", seconds);
    char *argv[12];
    int a = 0;
    argv[a++] = "wrk";
    argv[a++] = "-t2";
    argv[a++] = "-c16";
    argv[a++] = "-d";
    argv[a++] = dur;
    argv[a++] = "--latency";
    if (script) {
        argv[a++] = "-s";
        argv[a++] = (char *)script;
    }
    argv[a++] = url;
    argv[a] = NULL;
    char outp[128];
    snprintf(outp, sizeof outp, "%s/wrk.out", dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, "wrk", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        bench_fail("spawn wrk: %s (apt-get install wrk; make deps)", ESTR(rc));
    wrk_pid = pid;
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    wrk_pid = -1;
    char *text = read_file(outp, NULL);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !text)
        bench_fail("wrk %s exited 0x%x: %s", path, st, text ? text : "");
    struct wrk_out w = {0};
    const char *p = strstr(text, "Requests/sec:");
    w.rps = p ? strtod(p + 13, NULL) : -1;
    const char *dist = strstr(text, "Latency Distribution");
    w.p50_ms = dist ? wrk_ms(dist, " 50%") : -1;
    w.p99_ms = dist ? wrk_ms(dist, " 99%") : -1;
    p = strstr(text, " requests in ");
    if (p) {
        while (p > text && p[-1] >= '0' && p[-1] <= '9')
            p--;
        w.requests = strtol(p, NULL, 10);
    }
    p = strstr(text, "Non-2xx or 3xx responses:");
    w.non2xx = p ? strtol(p + 25, NULL, 10) : 0;
    p = strstr(text, "Socket errors:");
    if (p) {
        long c = 0, r = 0, wr = 0, t = 0;
        sscanf(p, "Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &c, &r, &wr, &t);
        w.sock_errors = c + r + wr + t;
    }
    if (w.rps < 0 || w.p99_ms < 0 || w.requests <= 0)
        bench_fail("cannot read wrk's output: %s", text);
    free(text);
    return w;
}

/* ---- phases --------------------------------------------------------------- */

/* Keeps the queue non-empty: a batch of 50 print(1) whenever fewer than 25
 * are queued, until stop. */
struct feeder {
    volatile bool stop;
    int batches;
};

static json_int_t queue_depth(struct conn *c, json_int_t *running)
{
    json_t *ready = http_json(c, "GET", "/readyz", NULL, 200);
    json_t *q = json_object_get(json_object_get(ready, "checks"), "queue");
    json_int_t d = json_integer_value(json_object_get(q, "depth"));
    if (running)
        *running = json_integer_value(json_object_get(q, "running"));
    json_decref(ready);
    return d;
}

static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    struct conn c = {.fd = -1};
    char body[64 * 50 + 64];
    size_t off = (size_t)snprintf(body, sizeof body, "{\"evaluations\":[");
    for (int i = 0; i < 50; i++)
        off += (size_t)snprintf(body + off, sizeof body - off, "%s%s", i ? "," : "", PRINT1);
    snprintf(body + off, sizeof body - off, "]}");
    while (!f->stop) {
        if (queue_depth(&c, NULL) < 25) {
            json_decref(http_json(&c, "POST", "/v1/evaluations/batch", body, 202));
            f->batches++;
        }
        usleep(50000);
    }
    conn_close(&c);
    return NULL;
}

/* Wait until nothing is queued or running; returns the seconds waited. */
static double wait_idle(void)
{
    struct conn c = {.fd = -1};
    uint64_t t0 = bench_now_ns();
    for (;;) {
        json_int_t running;
        if (queue_depth(&c, &running) == 0 && running == 0)
            break;
        if (bench_now_ns() - t0 > 120000000000ull)
            bench_fail("the queue did not drain within 120 s");
        usleep(20000);
    }
    conn_close(&c);
    return (double)(bench_now_ns() - t0) / 1e9;
}

static void phase_get_latency(const char *id)
{
    double secs = bench_quick() ? 3 : 10, hsecs = bench_quick() ? 2 : 5;
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    struct ol_req get = {req_text("GET", path, NULL), 0};
    struct ol_req hz = {req_text("GET", "/healthz", NULL), 0};
    get.len = strlen(get.text);
    hz.len = strlen(hz.text);
    struct ol_result rh = open_loop(&hz, NULL, 1000, hsecs);
    struct ol_result rg = open_loop(&get, NULL, 1000, secs);
    struct pct ph = percentiles(rh.lat_ms, rh.n), pg = percentiles(rg.lat_ms, rg.n);
    bench_note("open loop at 1000 req/s: GET record %llu requests in %.1f s (%llu non-2xx, %llu "
               "failed, %llu connections, sends at most %.2f ms late); p50 %.3f p90 %.3f p99 "
               "%.3f max %.2f ms",
               (unsigned long long)rg.n, rg.wall_s, (unsigned long long)rg.bad_status,
               (unsigned long long)rg.failed, (unsigned long long)rg.conns,
               (double)rg.late_max_ns / 1e6, pg.p50, pg.p90, pg.p99, pg.max);
    bench_note("open loop at 1000 req/s: /healthz %llu requests in %.1f s (%llu non-2xx, %llu "
               "failed, %llu connections); p50 %.3f p90 %.3f p99 %.3f max %.2f ms",
               (unsigned long long)rh.n, rh.wall_s, (unsigned long long)rh.bad_status,
               (unsigned long long)rh.failed, (unsigned long long)rh.conns, ph.p50, ph.p90,
               ph.p99, ph.max);
    if (rg.bad_status || rg.failed || rh.bad_status || rh.failed)
        bench_fail("open loop: requests failed (see the notes above)");
    figure("get_latency_p50", pg.p50, "ms", "healthz_latency_p50", ph.p50, "ms", NULL, -1);
    figure("get_latency_p99", pg.p99, "ms", "healthz_latency_p99", ph.p99, "ms",
           "target <= 5 ms at 1000 req/s", pg.p99 < 5.0);
    free(rg.lat_ms);
    free(rh.lat_ms);

    /* the same GETs while every worker runs print(1) evaluations */
    static struct feeder fd;
    fd.stop = false;
    fd.batches = 0;
    pthread_t th;
    pthread_create(&th, NULL, feeder_main, &fd);
    struct ol_result rbh = open_loop(&hz, NULL, 1000, bench_quick() ? 2 : 3);
    struct ol_result rb = open_loop(&get, NULL, 1000, bench_quick() ? 2 : 5);
    fd.stop = true;
    pthread_join(th, NULL);
    struct pct pb = percentiles(rb.lat_ms, rb.n), pbh = percentiles(rbh.lat_ms, rbh.n);
    double drain = wait_idle();
    bench_note("while the workers run print(1) evaluations (%d batches of 50 kept queued), "
               "1000 req/s: GET record %llu requests, %llu non-2xx, %llu failed; p50 %.3f p90 "
               "%.3f p99 %.3f max %.2f ms; /healthz %llu requests, p50 %.3f p90 %.3f p99 %.3f "
               "max %.2f ms (queue drained %.1f s later)",
               fd.batches, (unsigned long long)rb.n, (unsigned long long)rb.bad_status,
               (unsigned long long)rb.failed, pb.p50, pb.p90, pb.p99, pb.max,
               (unsigned long long)rbh.n, pbh.p50, pbh.p90, pbh.p99, pbh.max, drain);
    if (rb.bad_status || rb.failed || rbh.bad_status || rbh.failed)
        bench_fail("open loop: requests failed while busy (see the note above)");
    free(rbh.lat_ms);
    free((char *)hz.text);
    free(rb.lat_ms);
    free((char *)get.text);
}

static void phase_metrics(struct conn *c)
{
    int n = bench_quick() ? 100 : 400;
    double *tm = calloc((size_t)n, sizeof *tm), *th = calloc((size_t)n, sizeof *th);
    size_t bytes = 0;
    for (int i = -10; i < n; i++) { /* 10 warm-up pairs */
        uint64_t t0 = bench_now_ns();
        const char *b;
        size_t bl;
        if (http_do(c, "GET", "/metrics", NULL, &b, &bl) != 200)
            bench_fail("GET /metrics failed");
        uint64_t t1 = bench_now_ns();
        if (http_do(c, "GET", "/healthz", NULL, NULL, NULL) != 200)
            bench_fail("GET /healthz failed");
        uint64_t t2 = bench_now_ns();
        if (i >= 0) {
            tm[i] = (double)(t1 - t0) / 1e6;
            th[i] = (double)(t2 - t1) / 1e6;
            bytes = bl;
        }
    }
    struct pct pm = percentiles(tm, (uint64_t)n), ph = percentiles(th, (uint64_t)n);
    bench_note("GET /metrics (%zu bytes, Prometheus text) round trip over %d sequential "
               "requests: p50 %.3f p99 %.3f max %.2f ms; /healthz p50 %.3f p99 %.3f ms",
               bytes, n, pm.p50, pm.p99, pm.max, ph.p50, ph.p99);
    figure("metrics_render", pm.p50, "ms", "healthz_round_trip", ph.p50, "ms",
           "target <= 5 ms (median round trip)", pm.p50 < 5.0);
    free(tm);
    free(th);
}

static void phase_e2e(struct conn *c)
{
    enum { ROUNDS_MAX = 9 };
    int rounds = bench_quick() ? 1 : ROUNDS_MAX, n = bench_quick() ? 40 : 120;
    double best_s = 0, best_b = 0, bare_cpu = 0, sum_s = 0, sum_b = 0; /* seconds */
    double rs[ROUNDS_MAX], rb[ROUNDS_MAX], ratio[ROUNDS_MAX], sorted[ROUNDS_MAX];
    struct e2e_stats es = {0};
    char all[768] = "", spread[1536] = "";
    size_t off = 0, soff = 0;
    for (int r = 0; r < rounds; r++) {
        double bc, b, s;
        struct e2e_stats m;
        if (r % 2 == 0) {
            b = bare_round(n, &bc);
            s = service_round(c, n, &m);
        } else {
            s = service_round(c, n, &m);
            b = bare_round(n, &bc);
        }
        sum_b += n / b;
        sum_s += n / s;
        rs[r] = s;
        rb[r] = b;
        ratio[r] = sorted[r] = s / b;
        if (b > best_b) {
            best_b = b;
            bare_cpu = bc;
        }
        if (s > best_s) {
            best_s = s;
            es = m;
        }
        if (off < sizeof all)
            off += (size_t)snprintf(all + off, sizeof all - off, "%s%.1f/%.1f", r ? ", " : "", s,
                                    b);
        if (soff < sizeof spread)
            soff += (size_t)snprintf(spread + soff, sizeof spread - soff, "%s[%s]", r ? " " : "",
                                     m.per_worker);
    }
    qsort(sorted, (size_t)rounds, sizeof sorted[0], cmp_double);
    int med = 0; /* the round whose ratio is the median (rounds is odd) */
    for (int r = 0; r < rounds; r++)
        if (ratio[r] == sorted[rounds / 2])
            med = r;
    bench_note("end to end, %d print(1) evaluations per round, %d workers vs %d bare lanes; "
               "rounds (service/bare per s, each pair back to back): %s; evaluations per "
               "worker: %s",
               n, workers, workers, all, spread);
    bench_note("ratio per round from %.0f%% to %.0f%%, median %.0f%% (round %d); each side's "
               "best round: %.1f evals/s against %.1f bare runs/s (%.0f%%); all rounds together: "
               "%.1f against %.1f (%.0f%%)",
               100 * sorted[0], 100 * sorted[rounds - 1], 100 * ratio[med], med + 1, best_s,
               best_b, 100 * best_s / best_b, rounds * n / sum_s, rounds * n / sum_b,
               100 * sum_b / sum_s);
    bench_note("best service round, mean per evaluation: started_at..finished_at %.1f ms, "
               "sandbox duration_ms %.1f (create %.1f, execute %.1f, teardown %.1f); "
               "a bare run takes %.1f ms per lane",
               es.held, es.duration, es.create, es.execute, es.teardown,
               1000.0 * workers / best_b);
    bench_note("CPU per evaluation: serve's own threads %.1f ms + its reaped children (sandbox "
               "init and the program) %.1f ms = %.1f ms, of which the program's cgroup %.1f ms; "
               "bare python3 %.1f ms per run",
               es.cpu_self, es.cpu_children, es.cpu_self + es.cpu_children, es.cpu_cgroup,
               bare_cpu);
    bench_note("the whole machine in the best service round, per evaluation: busy %.1f ms, "
               "idle %.1f ms (/proc/stat over the round on %ld CPUs, the benchmark's polling "
               "included, the idle after the last finish left out)",
               es.machine_busy, es.machine_idle, sysconf(_SC_NPROCESSORS_ONLN));
    char target[96];
    snprintf(target, sizeof target, "target >= 75%% of baseline (%.0f%%, median of %d pairs)",
             100 * ratio[med], rounds);
    figure("e2e_evaluations", rs[med], "evals/s", "bare_python3_runs", rb[med], "runs/s", target,
           ratio[med] >= 0.75);
}

/* wrk somewhere on PATH? */
static bool have_wrk(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char p[4200];
        snprintf(p, sizeof p, "%s/wrk", d);
        if (access(p, X_OK) == 0)
            return true;
    }
    return false;
}

static void phase_submit(struct conn *c)
{
    if (!have_wrk()) {
        bench_note("submit_throughput not measured: wrk not found (apt-get install wrk; make deps)");
        return;
    }
    int secs = bench_quick() ? 2 : 5;
    /* hold every worker with a sleeping evaluation so submits only queue */
    char **hold = calloc((size_t)workers, sizeof *hold);
    for (int i = 0; i < workers; i++)
        hold[i] = submit_one(c, "{\"code\":\"import time\\ntime.sleep(300)\\n\",\"language\":"
                                "\"python\",\"timeout_s\":300,\"priority\":9}");
    for (int i = 0; i < workers; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/evaluations/%s", hold[i]);
        for (int k = 0;; k++) {
            json_t *r = http_json(c, "GET", path, NULL, 200);
            bool running = !strcmp(json_string_value(json_object_get(r, "status")), "running");
            json_decref(r);
            if (running)
                break;
            if (k > 3000)
                bench_fail("the holding evaluation %s did not start within 30 s", hold[i]);
            usleep(10000);
        }
    }
    char lua[128];
    snprintf(lua, sizeof lua, "%s/submit.lua", dir);
    FILE *f = fopen(lua, "w");
    if (!f)
        bench_fail("write %s: %s", lua, ESTR(errno));
    fprintf(f, "wrk.method = \"POST\"\n"
               "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
               "wrk.body = '%s'\n",
            PRINT1);
    fclose(f);
    struct wrk_out wh = run_wrk(NULL, "/healthz", secs);
    struct wrk_out ws = run_wrk(lua, "/v1/evaluations", secs);
    json_int_t depth = queue_depth(c, NULL);
    bench_note("wrk -t2 -c16 -d%ds: /healthz %ld requests, p50 %.2f p99 %.2f ms; submit %ld "
               "requests (%ld non-2xx, %ld socket errors), p50 %.2f p99 %.2f ms; queue depth "
               "after: %lld (every worker held, so nothing ran)",
               secs, wh.requests, wh.p50_ms, wh.p99_ms, ws.requests, ws.non2xx, ws.sock_errors,
               ws.p50_ms, ws.p99_ms, (long long)depth);
    if (wh.non2xx || ws.non2xx)
        bench_fail("wrk saw non-2xx responses");
    /* wrk counts completed responses; up to one request per connection may
     * have been queued when wrk stopped reading */
    if (depth < ws.requests || depth > ws.requests + 16)
        bench_note("WARNING: queue depth %lld, wrk counted %ld answered submits", (long long)depth,
                   ws.requests);
    figure("submit_throughput", ws.rps, "req/s", "healthz_throughput", wh.rps, "req/s", NULL, -1);
    /* the same again on the queue the first run left: does a submit slow
     * down as the queue deepens? */
    struct wrk_out ws2 = run_wrk(lua, "/v1/evaluations", secs);
    json_int_t depth2 = queue_depth(c, NULL);
    bench_note("submit again from queue depth %lld to %lld: %.1f req/s, p50 %.2f p99 %.2f ms "
               "(%ld non-2xx); the first run went from 0 to %lld at %.1f req/s",
               (long long)depth, (long long)depth2, ws2.rps, ws2.p50_ms, ws2.p99_ms, ws2.non2xx,
               (long long)depth, ws.rps);
    for (int i = 0; i < workers; i++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", hold[i]);
        http_do(c, "POST", path, "{}", NULL, NULL);
        free(hold[i]);
    }
    free(hold);
}

/* ---- the soak --------------------------------------------------------------- */

static size_t soak_pick(uint64_t k)
{
    if (k % 200 == 199)
        return 2;
    return k % 20 == 19 ? 1 : 0;
}

struct sampler {
    volatile bool stop;
    double t[4096];
    long kb[4096];
    int n;
};

static void *sample_main(void *arg)
{
    struct sampler *s = arg;
    uint64_t t0 = bench_now_ns();
    while (!s->stop && s->n < 4096) {
        s->t[s->n] = (double)(bench_now_ns() - t0) / 1e9;
        s->kb[s->n] = server_rss_kb();
        s->n++;
        for (int i = 0; i < 50 && !s->stop; i++)
            usleep(100000);
    }
    return NULL;
}

static void phase_soak(const char *id, double secs)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    struct ol_req reqs[3] = {{req_text("GET", path, NULL), 0},
                             {req_text("POST", "/v1/evaluations", PRINT1), 0},
                             {req_text("GET", "/metrics", NULL), 0}};
    for (int i = 0; i < 3; i++)
        reqs[i].len = strlen(reqs[i].text);
    static struct sampler s;
    pthread_t th;
    pthread_create(&th, NULL, sample_main, &s);
    struct ol_result r = open_loop(reqs, soak_pick, 200, secs);
    s.stop = true;
    pthread_join(th, NULL);
    if (s.n < 4)
        bench_fail("soak: too few RSS samples (%d)", s.n);
    int q = s.n / 4;
    double start = 0, end = 0;
    for (int i = 0; i < q; i++) {
        start += (double)s.kb[i];
        end += (double)s.kb[s.n - q + i];
    }
    start /= q;
    end /= q;
    double mt = 0, mk = 0, sxy = 0, sxx = 0;
    for (int i = 0; i < s.n; i++) {
        mt += s.t[i];
        mk += (double)s.kb[i];
    }
    mt /= s.n;
    mk /= s.n;
    for (int i = 0; i < s.n; i++) {
        sxy += (s.t[i] - mt) * ((double)s.kb[i] - mk);
        sxx += (s.t[i] - mt) * (s.t[i] - mt);
    }
    double slope_kb_min = sxx > 0 ? sxy / sxx * 60 : 0;
    /* the same over the second half: does growth level off? */
    double ht = 0, hk = 0, hxy = 0, hxx = 0;
    int h0 = s.n / 2, hn = s.n - s.n / 2;
    for (int i = h0; i < s.n; i++) {
        ht += s.t[i];
        hk += (double)s.kb[i];
    }
    ht /= hn;
    hk /= hn;
    for (int i = h0; i < s.n; i++) {
        hxy += (s.t[i] - ht) * ((double)s.kb[i] - hk);
        hxx += (s.t[i] - ht) * (s.t[i] - ht);
    }
    double slope2_kb_min = hxx > 0 ? hxy / hxx * 60 : 0;
    struct pct p = percentiles(r.lat_ms, r.n);
    bench_note("soak %.0f s at 200 req/s (GET record, 1/20 submit, 1/200 /metrics): %llu "
               "requests, %llu non-2xx, %llu failed; latency p50 %.3f p99 %.3f max %.2f ms",
               secs, (unsigned long long)r.n, (unsigned long long)r.bad_status,
               (unsigned long long)r.failed, p.p50, p.p99, p.max);
    long mn = s.kb[0], mx = s.kb[0];
    for (int i = 0; i < s.n; i++) {
        mn = s.kb[i] < mn ? s.kb[i] : mn;
        mx = s.kb[i] > mx ? s.kb[i] : mx;
    }
    bench_note("soak RSS every 5 s: first %ld KB at %.0f s, last %ld KB at %.0f s, min %ld, max "
               "%ld KB; least-squares slope %.1f KB/min over %d samples, %.1f KB/min over the "
               "second half",
               s.kb[0], s.t[0], s.kb[s.n - 1], s.t[s.n - 1], mn, mx, slope_kb_min, s.n,
               slope2_kb_min);
    figure("soak_rss_end", end / 1024, "MB", "soak_rss_start", start / 1024, "MB",
           "target end <= 1.10x start (flat)", end <= 1.10 * start);
    free(r.lat_ms);
    for (int i = 0; i < 3; i++)
        free((char *)reqs[i].text);
}

int main(void)
{
    if (geteuid() != 0) {
        bench_note("bench_service needs root (the sandbox: namespaces, cgroups); skipped");
        return 0;
    }
    const char *clearbox = getenv("CLEARBOX");
    if (!clearbox)
        clearbox = "build/clearbox";
    if (access(clearbox, X_OK) != 0)
        bench_fail("CLEARBOX=%s is not executable", clearbox);
    const char *w = getenv("BENCH_WORKERS");
    if (w && atoi(w) > 0 && atoi(w) <= 64)
        workers = atoi(w);
    snprintf(dir, sizeof dir, "/tmp/bench-service.XXXXXX");
    if (!mkdtemp(dir))
        bench_fail("mkdtemp: %s", ESTR(errno));
    chmod(dir, 0755);
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGPIPE, SIG_IGN);
    {
        char p[128];
        snprintf(p, sizeof p, "%s/main.py", dir);
        FILE *f = fopen(p, "w");
        if (!f)
            bench_fail("write %s: %s", p, ESTR(errno));
        fputs("print(1)\n", f);
        fclose(f);
    }
    uint64_t t0 = bench_now_ns();
    server_start(clearbox);
    bench_note("clearbox serve on 127.0.0.1:%d, %d workers, SQLite %s/bench.db, audit log on, "
               "info logs to a file; started in %.2f s",
               port, workers, dir, (double)(bench_now_ns() - t0) / 1e9);
    struct conn c = {.fd = -1};
    char *id = submit_one(&c, PRINT1);
    json_decref(wait_record(&c, id, 60));

    /* BENCH_ONLY=e2e|get|metrics|submit runs one phase (while working on it) */
    const char *only = getenv("BENCH_ONLY");
#define PHASE(name) (!only || !*only || !strcmp(only, name))
    if (PHASE("get"))
        phase_get_latency(id);
    if (PHASE("metrics"))
        phase_metrics(&c);
    if (PHASE("e2e"))
        phase_e2e(&c);
    const char *soak = getenv("BENCH_SOAK_S");
    if (soak && atof(soak) > 0)
        phase_soak(id, atof(soak));
    if (PHASE("submit"))
        phase_submit(&c);
#undef PHASE
    conn_close(&c);
    free(id);
    long rss = server_rss_kb();
    uint64_t ts = bench_now_ns();
    server_stop();
    bench_note("serve RSS at the end %.1f MB; SIGTERM to exit %.2f s; whole run %.1f s",
               (double)rss / 1024, (double)(bench_now_ns() - ts) / 1e9,
               (double)(bench_now_ns() - t0) / 1e9);
    printf("targets: %d met, %d missed\n", met_count, missed_count);
    return 0;
}
