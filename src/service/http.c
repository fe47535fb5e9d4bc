/* http.c - see http.h.
 *
 * The request lifecycle in libmicrohttpd's access handler (called several
 * times per request):
 *   1. headers complete (*con_cls NULL): make the per-request state; decide
 *      from Content-Length whether the body fits. Too big and the client asked
 *      "Expect: 100-continue", or too big even to discard: answer 413 now
 *      (MHD then closes the connection without reading the body).
 *   2. body pieces: keep them (bounded by max_body_bytes) or, once over the
 *      bound, count and drop them up to discard_body_max_bytes. Past that the
 *      connection is dropped (MHD cannot answer in the middle of a body).
 *   3. body complete: the handler runs (or the 413 goes out).
 * We open the listening socket ourselves (MHD_OPTION_LISTEN_SOCKET) so port 0
 * can be read back and IPv6 literals need no MHD flag juggling.
 * Rejected: MHD's thread pool with epoll. Handlers block (store queries, SSE
 * streams polling for new events), and a blocked pool thread stalls every
 * connection it owns; one thread per connection under a connection limit is
 * simple and measured fast enough (docs/api.md, "Performance"). */
#include "service/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "service/config.h"
#include "service/mhd_dl.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"
#include "util/timeutil.h"

struct http_server {
    const struct mhd_dl *mhd;
    struct MHD_Daemon *daemon;
    int listen_fd;
    int port;
    bool quiesced;
    atomic_bool stopping;
    struct http_options o;
    char listen[CONFIG_LISTEN_MAX];
};

struct req_state {
    struct http_server *srv;
    struct http_request req;
    struct buf body;        /* heap, bounded by max_body_bytes */
    uint64_t received;      /* body bytes seen */
    bool too_large;         /* over max_body_bytes: discarding */
    bool answered;          /* a response was queued */
    int status;
    char path[HTTP_PATH_MAX + 1];
};

struct stream_state {
    struct http_server *srv;
    http_stream_fn fn;
    void *arg;
    void (*free_fn)(void *arg);
};

/* ---- response helpers ------------------------------------------------------ */

void http_response_clear(struct http_response *resp)
{
    free(resp->owned);
    resp->owned = NULL;
    resp->body = NULL;
    resp->body_len = 0;
}

void http_respond(struct http_response *resp, int status, const char *content_type,
                  const char *body, size_t len)
{
    http_response_clear(resp);
    resp->status = status;
    resp->content_type = content_type;
    resp->owned = malloc(len + 1);
    if (!resp->owned) {
        resp->status = 500;
        resp->body = "";
        return;
    }
    memcpy(resp->owned, body, len);
    resp->owned[len] = '\0';
    resp->body = resp->owned;
    resp->body_len = len;
}

void http_respond_error(struct http_response *resp, int status, const char *code,
                        const char *message, const char *field)
{
    char storage[1024];
    struct buf b;
    buf_init(&b, storage, sizeof storage, 16384);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    json_key(&w, "error");
    json_obj_open(&w);
    json_kv_str(&w, "code", code);
    json_kv_str(&w, "message", message);
    if (field && *field)
        json_kv_str(&w, "field", field);
    json_obj_close(&w);
    json_obj_close(&w);
    buf_putc(&b, '\n');
    http_respond(resp, status, NULL, b.data, b.len);
    buf_free(&b);
}

void http_response_header(struct http_response *resp, const char *name, const char *value)
{
    if (resp->nheaders >= HTTP_HEADERS_MAX)
        return;
    resp->header_names[resp->nheaders] = name;
    snprintf(resp->header_values[resp->nheaders], HTTP_HEADER_VALUE_MAX, "%s", value);
    resp->nheaders++;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    struct req_state *st = (struct req_state *)((char *)req - offsetof(struct req_state, req));
    return st->srv->mhd->lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_query(const struct http_request *req, const char *name)
{
    struct req_state *st = (struct req_state *)((char *)req - offsetof(struct req_state, req));
    const char *v = st->srv->mhd->lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
    return v;
}

/* ---- streams ---------------------------------------------------------------- */

/* MHD's content reader. One thread per connection: when the stream has nothing
 * yet, wait here (polling the stop flag) instead of returning 0, which MHD
 * would call again at once in this mode. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_state *ss = cls;
    for (;;) {
        if (atomic_load(&ss->srv->stopping))
            return MHD_CONTENT_READER_END_OF_STREAM;
        ssize_t n = ss->fn(ss->arg, pos, buf, max);
        if (n > 0)
            return n;
        if (n == HTTP_STREAM_END)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void stream_free(void *cls)
{
    struct stream_state *ss = cls;
    if (ss->free_fn)
        ss->free_fn(ss->arg);
    free(ss);
}

/* ---- queueing a response ----------------------------------------------------- */

static enum MHD_Result queue(struct req_state *st, struct MHD_Connection *conn,
                             struct http_response *r)
{
    const struct mhd_dl *mhd = st->srv->mhd;
    struct MHD_Response *mr;
    if (r->stream) {
        struct stream_state *ss = calloc(1, sizeof *ss);
        if (!ss) {
            if (r->stream_free)
                r->stream_free(r->stream_arg);
            return MHD_NO;
        }
        ss->srv = st->srv;
        ss->fn = r->stream;
        ss->arg = r->stream_arg;
        ss->free_fn = r->stream_free;
        mr = mhd->create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, ss,
                                                stream_free);
        if (!mr) {
            stream_free(ss);
            return MHD_NO;
        }
    } else {
        mr = mhd->create_response_from_buffer(r->body_len, (void *)(r->body ? r->body : ""),
                                              MHD_RESPMEM_MUST_COPY);
        if (!mr)
            return MHD_NO;
    }
    mhd->add_response_header(mr, "Content-Type",
                             r->content_type ? r->content_type : "application/json");
    for (int i = 0; i < r->nheaders; i++)
        mhd->add_response_header(mr, r->header_names[i], r->header_values[i]);
    if (r->close)
        mhd->add_response_header(mr, "Connection", "close");
    enum MHD_Result ok = mhd->queue_response(conn, (unsigned)r->status, mr);
    mhd->destroy_response(mr);
    st->answered = true;
    st->status = r->status;
    return ok;
}

static enum MHD_Result queue_error(struct req_state *st, struct MHD_Connection *conn, int status,
                                   const char *code, const char *message, bool close)
{
    struct http_response r = {0};
    http_respond_error(&r, status, code, message, NULL);
    r.close = close;
    enum MHD_Result ok = queue(st, conn, &r);
    http_response_clear(&r);
    return ok;
}

static enum MHD_Result queue_too_large(struct req_state *st, struct MHD_Connection *conn,
                                       bool close)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the request body is larger than %zu bytes",
             st->srv->o.max_body_bytes);
    return queue_error(st, conn, 413, "body_too_large", msg, close);
}

/* ---- the access handler ----------------------------------------------------------- */

static void fill_remote(struct http_server *srv, struct MHD_Connection *conn, char *out,
                        size_t len)
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        srv->mhd->get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        port = ntohs(s4->sin_port);
        snprintf(out, len, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        port = ntohs(s6->sin6_port);
        snprintf(out, len, "[%s]:%d", ip, port);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *srv = cls;
    struct req_state *st = *con_cls;

    if (!st) { /* 1. headers complete */
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        *con_cls = st;
        st->srv = srv;
        st->req.conn = conn;
        st->req.method = method;
        st->req.start_ns = time_mono_ns();
        fill_remote(srv, conn, st->req.remote, sizeof st->req.remote);
        size_t ulen = strlen(url);
        if (ulen > HTTP_PATH_MAX) {
            st->req.path = "";
            return queue_error(st, conn, 414, "uri_too_long", "the request path is too long",
                               true);
        }
        memcpy(st->path, url, ulen + 1);
        st->req.path = st->path;
        buf_init(&st->body, NULL, 0, srv->o.max_body_bytes);

        const char *cl = srv->mhd->lookup_connection_value(conn, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || *end)
                n = ~0ull;
            if (n > srv->o.max_body_bytes) {
                st->too_large = true;
                const char *expect = srv->mhd->lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                       MHD_HTTP_HEADER_EXPECT);
                bool wants_continue = expect && !strcasecmp(expect, "100-continue");
                if (wants_continue || n > srv->o.discard_body_max_bytes)
                    return queue_too_large(st, conn, true);
            }
        }
        return MHD_YES;
    }

    if (st->answered) { /* answered early; MHD drains or closes */
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (*upload_data_size) { /* 2. a piece of the body */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        st->received += n;
        if (st->received > srv->o.discard_body_max_bytes)
            return MHD_NO; /* past the discard cap: drop the connection */
        if (!st->too_large) {
            if (buf_append(&st->body, upload_data, n) < 0) {
                if (st->body.oom)
                    return MHD_NO;
                st->too_large = true; /* over max: discard from now on */
                buf_free(&st->body);
                buf_init(&st->body, NULL, 0, srv->o.max_body_bytes);
            }
        }
        return MHD_YES;
    }

    /* 3. the whole request is here */
    if (st->too_large)
        return queue_too_large(st, conn, false);
    st->req.body = st->body.len ? st->body.data : "";
    st->req.body_len = st->body.len;

    struct http_response resp = {0};
    srv->o.handler(srv->o.arg, &st->req, &resp);
    if (!resp.status)
        resp.status = 500;
    enum MHD_Result ok = queue(st, conn, &resp);
    http_response_clear(&resp);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct req_state *st = *con_cls;
    if (!st)
        return;
    if (srv->o.done && st->answered)
        srv->o.done(srv->o.arg, &st->req, st->status, time_mono_ns() - st->req.start_ns);
    buf_free(&st->body);
    free(st);
    *con_cls = NULL;
}

/* ---- lifecycle ----------------------------------------------------------------- */

static int listen_socket(const char *listen_addr, int *fd_out, int *port_out, char *err,
                         size_t errlen)
{
    char host[CONFIG_LISTEN_MAX];
    int port;
    bool loopback;
    TRY(config_listen_parse(listen_addr, host, sizeof host, &port, &loopback, err, errlen));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    int family;
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        family = AF_INET6;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
    } else {
        return err_set(err, errlen, -EINVAL,
                       "listen address '%s': the host must be an IP address or localhost",
                       listen_addr);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        int e = errno;
        close(fd);
        return err_sys(err, errlen, -e, "cannot listen on %s", listen_addr);
    }
    if (listen(fd, 1024) < 0) {
        int e = errno;
        close(fd);
        return err_sys(err, errlen, -e, "listen on %s", listen_addr);
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(family == AF_INET ? s4->sin_port : s6->sin6_port);
    *fd_out = fd;
    return 0;
}

int http_server_start(const struct http_options *o, http_server_t **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!o || !o->handler || !o->listen)
        return err_set(err, errlen, -EINVAL, "http_server_start: handler and listen needed");
    const struct mhd_dl *mhd = mhd_dl(err, errlen);
    if (!mhd)
        return -ENOENT;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    s->mhd = mhd;
    s->o = *o;
    snprintf(s->listen, sizeof s->listen, "%s", o->listen);
    s->o.listen = s->listen;
    if (!s->o.max_body_bytes)
        s->o.max_body_bytes = 1u << 20;
    if (!s->o.discard_body_max_bytes)
        s->o.discard_body_max_bytes = 4 * s->o.max_body_bytes;
    if (s->o.discard_body_max_bytes < s->o.max_body_bytes)
        s->o.discard_body_max_bytes = s->o.max_body_bytes;
    if (!s->o.connections_max)
        s->o.connections_max = 256;
    if (!s->o.timeout_s)
        s->o.timeout_s = 60;
    int rc = listen_socket(s->listen, &s->listen_fd, &s->port, err, errlen);
    if (rc < 0) {
        free(s);
        return rc;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC;
    s->daemon = mhd->start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->o.connections_max, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
    if (!s->daemon) {
        close(s->listen_fd);
        free(s);
        return err_set(err, errlen, -EIO, "libmicrohttpd could not start on %s", o->listen);
    }
    *out = s;
    return 0;
}

int http_server_port(const http_server_t *s) { return s ? s->port : -1; }

void http_server_quiesce(http_server_t *s)
{
    if (!s || s->quiesced)
        return;
    MHD_socket fd = s->mhd->quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    s->quiesced = true;
}

bool http_server_stopping(const http_server_t *s) { return s && atomic_load(&s->stopping); }

void http_server_stop(http_server_t *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    http_server_quiesce(s);
    s->mhd->stop_daemon(s->daemon);
    free(s);
}
