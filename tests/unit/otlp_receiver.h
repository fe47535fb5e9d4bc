/* otlp_receiver.h - a small HTTP/1.1 server on 127.0.0.1 (ephemeral port) for
 * the tracing tests: it records every request (method, path, headers, body)
 * and answers from a script ("503 Service Unavailable\r\nRetry-After: 1", ...),
 * then 200 once the script is used up. It can hold answers back (an exporter
 * that is blocked) until released. Loopback only; one connection at a time
 * (keep-alive honoured), which is how the OTLP exporter talks.
 * Threads: one server thread; the functions here are safe from the test thread.
 * Bounds: 64 requests recorded, 64 KiB of headers, 64 MiB of body each. */
#ifndef CLEARBOX_TEST_OTLP_RECEIVER_H
#define CLEARBOX_TEST_OTLP_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RX_REQ_MAX 64

struct rx_req {
    char method[16];
    char path[512];
    char *headers; /* raw header block, NUL-terminated */
    char *body;    /* NUL-terminated (the NUL is not counted) */
    size_t body_len;
    uint64_t at_mono_ns; /* when the request was complete */
};

struct rx;

/* Start listening; NULL on failure (errno set). */
struct rx *rx_start(void);
int rx_port(const struct rx *rx);
/* Answers for the next requests, in order: "<status line rest>\r\n<headers>",
 * e.g. "503 Service Unavailable" or "429 Too Many Requests\r\nRetry-After: 1".
 * The strings must outlive the receiver. */
void rx_script(struct rx *rx, const char *const *answers, size_t n);
/* Hold back answers (requests are still read and recorded) until false. */
void rx_hold(struct rx *rx, bool hold);
/* Wait until at least n requests were recorded; returns the count. */
size_t rx_wait(struct rx *rx, size_t n, int timeout_ms);
size_t rx_count(struct rx *rx);
const struct rx_req *rx_get(struct rx *rx, size_t i);
/* Value of header name (case-insensitive) in req, copied into out; false if absent. */
bool rx_header(const struct rx_req *req, const char *name, char *out, size_t outlen);
void rx_stop(struct rx *rx);

#endif
