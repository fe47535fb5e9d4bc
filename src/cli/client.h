/* client.h - what the client commands (submit, status, list, cancel) share:
 * the server address and token, HTTP requests to the evaluation API through
 * libcurl (loaded with dlopen, util/curl_dl.h, so `clearbox run` never pays
 * for it), the Server-Sent Events reader behind `submit --wait`, and the
 * wording of errors.
 *
 * Settings, strongest first: flags (--server URL, --token T,
 * --request-timeout S), then CLEARBOX_SERVER, CLEARBOX_TOKEN,
 * CLEARBOX_REQUEST_TIMEOUT, then http://127.0.0.1:8080, no token, 60 s.
 *
 * Errors a user meets read as one line on stderr, for example
 *   "clearbox status: server refused the request (404 not_found): no such
 *   evaluation" or "clearbox submit: cannot reach http://127.0.0.1:8080:
 *   connection refused — is `clearbox serve` running?".
 *
 * Every answer body is bounded (CLIENT_BODY_MAX), so a wrong --server cannot
 * make the client swallow the machine's memory.
 *
 * Threads: one struct client per thread. Ownership: a client_response owns
 * its body and parsed JSON until client_response_free. Errors: 0 or a
 * negative errno with the words in err; the client_fail_* helpers print
 * and return the exit status 1. */
#ifndef CLEARBOX_CLI_CLIENT_H
#define CLEARBOX_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/buf.h"

#define CLIENT_DEFAULT_SERVER "http://127.0.0.1:8080"
#define CLIENT_SERVER_MAX 1024              /* bytes of --server */
#define CLIENT_TOKEN_MAX 4096               /* bytes of the bearer token */
#define CLIENT_BODY_MAX ((size_t)256 << 20) /* an answer: 2 streams of 16 MiB, escaped */
#define CLIENT_ID_MAX 64                    /* bytes of an evaluation id */

struct client {
    const char *cmd;                    /* "submit": the word in messages */
    char server[CLIENT_SERVER_MAX + 1]; /* base URL, no trailing '/' */
    char token[CLIENT_TOKEN_MAX + 1];   /* "" = no Authorization header */
    long request_timeout_ms;            /* whole request; not the event stream */
    long connect_timeout_ms;
};

struct client_response {
    long status;           /* HTTP status */
    struct buf body;       /* as received, NUL-terminated */
    json_t *json;          /* the body parsed, NULL if it is not JSON */
    char retry_after[32];  /* Retry-After header, "" if none */
    char content_type[64]; /* Content-Type header (for messages), "" if none */
};

/* Defaults and environment. A bad environment value is a usage error:
 * returns 2 after printing it, else 0. */
int client_init(struct client *c, const char *cmd);

/* The head of every client command's argument loop: is argv[*i] --help/-h
 * (usage printed on stdout) or one of the shared options (--server, --token,
 * --request-timeout)? CLIENT_OPT_NEXT: consumed (advances *i), go on with the
 * next argument; CLIENT_OPT_OWN: not ours, the command parses it; otherwise
 * the exit status to return at once: 0 after --help, 2 after a usage error
 * (already printed). */
#define CLIENT_OPT_OWN (-1)
#define CLIENT_OPT_NEXT (-2)
int client_opt(struct client *c, int argc, char **argv, int *i, void (*usage)(FILE *));

/* The whole argument list of a command that takes one evaluation id and
 * --json (status, cancel): `CMD [shared options] [--json] ID`. *json is left
 * as the caller set it unless --json is given. -1 to go on with *id set (a
 * well-formed id, client_id_ok), otherwise the exit status to return (0 after
 * --help, 2 after a usage error, already printed). */
int client_args_id(struct client *c, int argc, char **argv, void (*usage)(FILE *), bool *json,
                   const char **id);

/* The help lines of the shared options, for each command's usage. */
void client_usage_common(FILE *f);

/* Is s an evaluation id as the server makes them (letters, digits, '-', '_';
 * 1..CLIENT_ID_MAX bytes)? Lets the command refuse nonsense before a request. */
bool client_id_ok(const char *s);

/* One request: method, path (starting with '/', already escaped) and an
 * optional JSON body. Any HTTP answer is 0 (look at out->status); a failure
 * to get one (refused, unreachable, timed out, body over CLIENT_BODY_MAX) is
 * negative with a readable message naming the URL in err. extra_header may
 * be NULL ("Idempotency-Key: K"). */
int client_request(struct client *c, const char *method, const char *path, const char *body,
                   size_t body_len, const char *extra_header, struct client_response *out,
                   char *err, size_t errlen);
void client_response_free(struct client_response *r);

/* An answer that is not the hoped-for status: print
 *   clearbox CMD: server refused the request (STATUS CODE, field F): MESSAGE
 * (a hint for 401 and 429) and return 1. A body that is not clearbox's error
 * object (another server on that port, a proxy's page) is named as such, its
 * first line quoted (bounded, control characters escaped). */
int client_fail_response(const struct client *c, const struct client_response *r);

/* Percent-encode s (RFC 3986 unreserved kept) into b. */
void client_url_escape(struct buf *b, const char *s);

/* ---- Server-Sent Events (GET /v1/evaluations/{id}/events) ---- */

/* Called for each event: name ("status", "end"), data (parsed JSON, NULL if
 * the data was not JSON); and with "reconnecting" (data NULL) each time a
 * lost stream is about to be reopened. Return 0 to go on, nonzero to stop. */
typedef int (*client_sse_fn)(void *arg, const char *event, json_t *data);
/* Called at least once a second while the stream is open (to redraw a
 * progress line); may be NULL. Return nonzero to stop (Ctrl-C). */
typedef int (*client_tick_fn)(void *arg);

/* Follow the events of evaluation id until `end` arrives or a callback
 * stops. A dropped stream is reopened with Last-Event-ID (up to 10 times in a
 * row, 1 s apart), so a restart of the service is survived. 0 when `end`
 * arrived, 1 when a callback stopped it, negative with err on failure; an
 * HTTP error answer (404) is -EPROTO with the server's words in err.
 * stop may be NULL; *stop set (a signal handler) ends the wait with 1. */
int client_follow_events(struct client *c, const char *id, client_sse_fn on_event,
                         client_tick_fn on_tick, void *arg, volatile int *stop, char *err,
                         size_t errlen);

/* ---- presenting records ---- */

/* Print the record (GET /v1/evaluations/{id}) as `clearbox run` prints its
 * result: a readable summary (status line, cost, security events, stdout,
 * stderr) plus the service's lines (id, worker, queue wait, trace id). */
void client_print_record_text(FILE *f, json_t *rec);
/* Print a JSON body as received, ending with one newline. */
void client_print_body(FILE *f, const struct client_response *r);

/* Seconds between two RFC 3339 timestamps of a record (NAN if either is not
 * a string it can read). */
double client_seconds_between(json_t *from, json_t *to);

#endif
