/* otlp_receiver.c - see otlp_receiver.h. A deliberately plain HTTP/1.1 server:
 * Content-Length bodies only (what libcurl sends for a POST with a known size). */
#include "otlp_receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_HDR_MAX (64 * 1024)
#define RX_BODY_MAX (64u << 20)

struct rx {
    int lfd;
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool hold;
    const char *const *script;
    size_t nscript, next_answer;
    struct rx_req reqs[RX_REQ_MAX];
    size_t nreqs;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Read into buf until stop; 1 on data, 0 on EOF, -1 on error/stop. */
static ssize_t rx_read(struct rx *rx, int fd, char *p, size_t n)
{
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, 100);
        pthread_mutex_lock(&rx->mu);
        bool stop = rx->stop;
        pthread_mutex_unlock(&rx->mu);
        if (stop)
            return -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR)
            continue;
        return got;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

bool rx_header(const struct rx_req *req, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = req->headers;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            size_t vn = len - nl - 1;
            while (vn && (*v == ' ' || *v == '\t')) {
                v++;
                vn--;
            }
            snprintf(out, outlen, "%.*s", (int)vn, v);
            return true;
        }
        p = eol ? eol + 2 : NULL;
    }
    return false;
}

/* Serve one connection until it closes. */
static void rx_serve(struct rx *rx, int fd)
{
    char *hdr = malloc(RX_HDR_MAX + 1);
    size_t have = 0;
    if (!hdr)
        return;
    for (;;) {
        /* headers */
        char *end;
        hdr[have] = '\0';
        while (!(end = strstr(hdr, "\r\n\r\n"))) {
            if (have >= RX_HDR_MAX)
                goto out;
            ssize_t got = rx_read(rx, fd, hdr + have, RX_HDR_MAX - have);
            if (got <= 0)
                goto out;
            have += (size_t)got;
            hdr[have] = '\0';
        }
        size_t hlen = (size_t)(end - hdr) + 4;
        struct rx_req req = {0};
        sscanf(hdr, "%15s %511s", req.method, req.path);
        const char *first_eol = strstr(hdr, "\r\n");
        size_t blk = (size_t)(end - first_eol) - 2 + 2; /* header lines incl. last CRLF */
        req.headers = malloc(blk + 1);
        if (!req.headers)
            goto out;
        memcpy(req.headers, first_eol + 2, blk);
        req.headers[blk] = '\0';
        char cl[32] = "0";
        rx_header(&req, "Content-Length", cl, sizeof cl);
        size_t blen = strtoull(cl, NULL, 10);
        if (blen > RX_BODY_MAX) {
            free(req.headers);
            goto out;
        }
        req.body = malloc(blen + 1);
        if (!req.body) {
            free(req.headers);
            goto out;
        }
        size_t extra = have - hlen;
        size_t take = extra < blen ? extra : blen;
        memcpy(req.body, hdr + hlen, take);
        memmove(hdr, hdr + hlen + take, have - hlen - take);
        have -= hlen + take;
        while (take < blen) {
            ssize_t got = rx_read(rx, fd, req.body + take, blen - take);
            if (got <= 0) {
                free(req.headers);
                free(req.body);
                goto out;
            }
            take += (size_t)got;
        }
        req.body[blen] = '\0';
        req.body_len = blen;
        req.at_mono_ns = mono_ns();

        pthread_mutex_lock(&rx->mu);
        if (rx->nreqs < RX_REQ_MAX) {
            rx->reqs[rx->nreqs++] = req;
        } else {
            free(req.headers);
            free(req.body);
        }
        pthread_cond_broadcast(&rx->cv);
        while (rx->hold && !rx->stop)
            pthread_cond_wait(&rx->cv, &rx->mu);
        const char *ans = rx->next_answer < rx->nscript ? rx->script[rx->next_answer++] : "200 OK";
        bool stop = rx->stop;
        pthread_mutex_unlock(&rx->mu);
        if (stop)
            goto out;
        char resp[1024];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %s\r\nContent-Type: application/x-protobuf\r\n"
                         "Content-Length: 0\r\n\r\n",
                         ans);
        if (n < 0 || (size_t)n >= sizeof resp || write_all(fd, resp, (size_t)n) < 0)
            goto out;
    }
out:
    free(hdr);
}

static void *rx_main(void *arg)
{
    struct rx *rx = arg;
    for (;;) {
        struct pollfd pf = {.fd = rx->lfd, .events = POLLIN};
        int r = poll(&pf, 1, 100);
        pthread_mutex_lock(&rx->mu);
        bool stop = rx->stop;
        pthread_mutex_unlock(&rx->mu);
        if (stop)
            break;
        if (r <= 0)
            continue;
        int fd = accept(rx->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        rx_serve(rx, fd);
        close(fd);
    }
    return NULL;
}

struct rx *rx_start(void)
{
    struct rx *rx = calloc(1, sizeof *rx);
    if (!rx)
        return NULL;
    pthread_mutex_init(&rx->mu, NULL);
    pthread_cond_init(&rx->cv, NULL);
    rx->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (rx->lfd < 0 || bind(rx->lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(rx->lfd, 8) < 0 || getsockname(rx->lfd, (struct sockaddr *)&sa, &sl) < 0) {
        if (rx->lfd >= 0)
            close(rx->lfd);
        free(rx);
        return NULL;
    }
    rx->port = ntohs(sa.sin_port);
    if (pthread_create(&rx->thread, NULL, rx_main, rx) != 0) {
        close(rx->lfd);
        free(rx);
        return NULL;
    }
    return rx;
}

int rx_port(const struct rx *rx)
{
    return rx->port;
}

void rx_script(struct rx *rx, const char *const *answers, size_t n)
{
    pthread_mutex_lock(&rx->mu);
    rx->script = answers;
    rx->nscript = n;
    rx->next_answer = 0;
    pthread_mutex_unlock(&rx->mu);
}

void rx_hold(struct rx *rx, bool hold)
{
    pthread_mutex_lock(&rx->mu);
    rx->hold = hold;
    pthread_cond_broadcast(&rx->cv);
    pthread_mutex_unlock(&rx->mu);
}

size_t rx_wait(struct rx *rx, size_t n, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&rx->mu);
    while (rx->nreqs < n)
        if (pthread_cond_timedwait(&rx->cv, &rx->mu, &ts) == ETIMEDOUT)
            break;
    size_t got = rx->nreqs;
    pthread_mutex_unlock(&rx->mu);
    return got;
}

size_t rx_count(struct rx *rx)
{
    pthread_mutex_lock(&rx->mu);
    size_t n = rx->nreqs;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

const struct rx_req *rx_get(struct rx *rx, size_t i)
{
    pthread_mutex_lock(&rx->mu);
    const struct rx_req *r = i < rx->nreqs ? &rx->reqs[i] : NULL;
    pthread_mutex_unlock(&rx->mu);
    return r;
}

void rx_stop(struct rx *rx)
{
    if (!rx)
        return;
    pthread_mutex_lock(&rx->mu);
    rx->stop = true;
    pthread_cond_broadcast(&rx->cv);
    pthread_mutex_unlock(&rx->mu);
    pthread_join(rx->thread, NULL);
    close(rx->lfd);
    for (size_t i = 0; i < rx->nreqs; i++) {
        free(rx->reqs[i].headers);
        free(rx->reqs[i].body);
    }
    pthread_mutex_destroy(&rx->mu);
    pthread_cond_destroy(&rx->cv);
    free(rx);
}
