/* http.h - the service's HTTP server: libmicrohttpd (loaded with dlopen,
 * mhd_dl.h) under a small request/response interface, so routes (api.c) never
 * see MHD.
 *
 * Model: one thread per connection (MHD_USE_THREAD_PER_CONNECTION) under a
 * connection limit, so a handler may block (a store query, a Server-Sent
 * Events stream that polls) without stalling other clients. The handler is
 * called once per request with the whole body in memory.
 *
 * Bodies: at most max_body_bytes are kept. A larger body (by Content-Length,
 * or by counting a chunked one) is read and thrown away up to
 * discard_body_max_bytes and then answered 413 - the "lingering close" of
 * nginx - so a client that sends its whole body before reading the answer
 * (curl without Expect, Python's urllib) gets the 413 instead of a connection
 * reset. A client that sent "Expect: 100-continue" gets the 413 at once,
 * without sending the body. A body beyond the discard cap gets the 413 and the
 * connection is closed.
 *
 * Responses: a status, a content type, a body (copied), extra headers; or a
 * stream (http_stream_fn) that the connection's thread pulls from until it
 * returns HTTP_STREAM_END (Server-Sent Events).
 *
 * Threads: the handler runs on many threads at once; it must be thread-safe.
 * http_server_stop() waits for running handlers (streams are told to end).
 * Ownership: request strings are valid during the handler call only; the
 * response's body is copied by http_respond*.
 * Errors: 0 or a negative errno with words in err. */
#ifndef CLEARBOX_SERVICE_HTTP_H
#define CLEARBOX_SERVICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_PATH_MAX 2048      /* bytes of a request path; longer: 414 */
#define HTTP_HEADERS_MAX 16     /* extra response headers */
#define HTTP_HEADER_VALUE_MAX 512

typedef struct http_server http_server_t;

struct http_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* decoded path without the query ("/v1/evaluations") */
    const char *body;          /* body bytes (NUL-terminated copy), "" if none */
    size_t body_len;
    char remote[64];           /* peer address, "ip:port" */
    void *conn;                /* private: for http_request_header/_query */
    uint64_t start_ns;         /* when the request's headers were complete */
};

/* A request header (case-insensitive name) or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
/* A query argument (decoded) or NULL; present without value gives "". */
const char *http_request_query(const struct http_request *req, const char *name);

/* Streams: return bytes written into buf (1..max), 0 when nothing is ready yet
 * (the server waits a little and calls again), HTTP_STREAM_END when done or
 * HTTP_STREAM_ERROR to drop the connection. Called on the connection's
 * thread; may block briefly. free_fn(arg) runs once when the stream is over. */
#define HTTP_STREAM_END (-1)
#define HTTP_STREAM_ERROR (-2)
typedef ssize_t (*http_stream_fn)(void *arg, uint64_t pos, char *buf, size_t max);

struct http_response {
    int status;
    const char *content_type;            /* NULL: application/json */
    const char *body;
    size_t body_len;
    const char *header_names[HTTP_HEADERS_MAX];
    char header_values[HTTP_HEADERS_MAX][HTTP_HEADER_VALUE_MAX];
    int nheaders;
    http_stream_fn stream;               /* instead of body */
    void *stream_arg;
    void (*stream_free)(void *arg);
    bool close;                          /* Connection: close after this */
    char *owned;                         /* private: the body copy */
};

/* The request handler: fill resp (all zero on entry). */
typedef void (*http_handler_fn)(void *arg, const struct http_request *req,
                                struct http_response *resp);

/* Called after each response is queued: for access logs and metrics. */
typedef void (*http_done_fn)(void *arg, const struct http_request *req, int status,
                             uint64_t duration_ns);

struct http_options {
    const char *listen;                  /* "HOST:PORT" (config.h rules); port 0 = any */
    size_t max_body_bytes;               /* 0 = 1 MiB */
    size_t discard_body_max_bytes;       /* 0 = 4 x max_body_bytes */
    unsigned connections_max;            /* 0 = 256 */
    unsigned timeout_s;                  /* idle connection timeout, 0 = 60 */
    http_handler_fn handler;
    http_done_fn done;                   /* may be NULL */
    void *arg;
};

/* Bind and start serving. On failure nothing runs and *out is NULL. */
int http_server_start(const struct http_options *o, http_server_t **out, char *err,
                      size_t errlen);
/* The bound port (useful with port 0). */
int http_server_port(const http_server_t *s);
/* Stop accepting new connections (SIGTERM, first step); running requests go on. */
void http_server_quiesce(http_server_t *s);
/* True while stopping: streams should end. */
bool http_server_stopping(const http_server_t *s);
/* Stop: ends streams, closes connections, joins threads, frees s. */
void http_server_stop(http_server_t *s);

/* ---- response helpers ----------------------------------------------------- */

/* Copy body into resp (it is freed after sending). content_type NULL = JSON. */
void http_respond(struct http_response *resp, int status, const char *content_type,
                  const char *body, size_t len);
/* {"error": {"code", "message", "field"?}} with status. */
void http_respond_error(struct http_response *resp, int status, const char *code,
                        const char *message, const char *field);
/* Add a header (value copied, cut at HTTP_HEADER_VALUE_MAX - 1). name must be
 * a string literal or outlive the response. */
void http_response_header(struct http_response *resp, const char *name, const char *value);

/* Release a response's body copy (the server calls this; handlers that build
 * a response and then replace it call it too). */
void http_response_clear(struct http_response *resp);

#endif
