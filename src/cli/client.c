/* client.c - see client.h. The HTTP side of submit, status, list and cancel.
 *
 * Design notes:
 * - libcurl comes through util/curl_dl.h (dlopen on first use), so the other
 *   commands never load it; only the easy interface is used.
 * - Proxies: $http_proxy and friends are honoured (a remote service may sit
 *   behind one), except for loopback, which never goes through a proxy: a
 *   local `clearbox serve` must not be sent to a proxy because the user's
 *   shell has one set.
 * - Anything a server sends is bounded (CLIENT_BODY_MAX for an answer,
 *   SSE_LINE_MAX for an event) and, when printed for a terminal, stripped of
 *   control characters, so a hostile program's output cannot drive the
 *   user's terminal (escape sequences) through `clearbox status`. */
#include "cli/client.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/curl_dl.h"
#include "util/err.h"
#include "util/timeutil.h"
#include "util/num.h"

#define SSE_LINE_MAX ((size_t)1 << 20)               /* one field line of an event */
#define SSE_ERRBODY_MAX ((size_t)64 << 10)           /* an error answer instead of a stream */
#define SSE_IDLE_MS 45000L                           /* the server sends a keepalive every 15 s */
#define SSE_RECONNECT_FOR_NS (60ull * 1000000000ull) /* without progress, then give up */
#define REFUSAL_BODY_QUOTE 200                       /* bytes of a non-JSON error body shown */

/* ---- settings ---------------------------------------------------------------------------- */

/* A server URL: http(s)://, bounded, no whitespace or control characters (it
 * goes into a request line). Trailing slashes are dropped. */
static int server_set(struct client *c, const char *url, const char *from)
{
    size_t n = strlen(url);
    if (n > CLIENT_SERVER_MAX)
        return cli_usage_error(c->cmd, "%s is longer than %d bytes", from, CLIENT_SERVER_MAX);
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return cli_usage_error(c->cmd, "%s wants http://HOST:PORT or https://..., not '%s'", from,
                               url);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return cli_usage_error(c->cmd, "%s must not contain spaces or control characters",
                                   from);
    size_t host = (size_t)(strstr(url, "://") - url) + 3;
    if (host >= n || url[host] == '/' || url[host] == ':' || url[host] == '?' || url[host] == '#')
        return cli_usage_error(c->cmd, "%s names no host: '%s'", from, url);
    while (n > host && url[n - 1] == '/')
        n--;
    memcpy(c->server, url, n);
    c->server[n] = '\0';
    return 0;
}

/* A token goes into a header: printable ASCII only, so it cannot end the
 * header line and add its own. */
static int token_set(struct client *c, const char *t, const char *from)
{
    size_t n = strlen(t);
    if (n > CLIENT_TOKEN_MAX)
        return cli_usage_error(c->cmd, "%s is longer than %d bytes", from, CLIENT_TOKEN_MAX);
    for (size_t i = 0; i < n; i++)
        if (t[i] < 0x21 || t[i] > 0x7e)
            return cli_usage_error(c->cmd, "%s must be printable ASCII without spaces", from);
    memcpy(c->token, t, n + 1);
    return 0;
}

static int timeout_set(struct client *c, const char *v, const char *from)
{
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (errno || end == v || *end || !(s > 0) || s > 86400)
        return cli_usage_error(c->cmd, "%s wants seconds (0 < S <= 86400), not '%s'", from, v);
    c->request_timeout_ms = (long)num_ceil(s * 1000);
    return 0;
}

int client_init(struct client *c, const char *cmd)
{
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    snprintf(c->server, sizeof c->server, "%s", CLIENT_DEFAULT_SERVER);
    c->request_timeout_ms = 60000;
    c->connect_timeout_ms = 10000;
    const char *v;
    if ((v = getenv("CLEARBOX_SERVER")) && *v && server_set(c, v, "CLEARBOX_SERVER"))
        return 2;
    if ((v = getenv("CLEARBOX_TOKEN")) && *v && token_set(c, v, "CLEARBOX_TOKEN"))
        return 2;
    if ((v = getenv("CLEARBOX_REQUEST_TIMEOUT")) && *v &&
        timeout_set(c, v, "CLEARBOX_REQUEST_TIMEOUT"))
        return 2;
    return 0;
}

int client_opt(struct client *c, int argc, char **argv, int *i, void (*usage)(FILE *))
{
    const char *v = NULL, *a = argv[*i];
    bool bad = false;
    int rc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        usage(stdout);
        return 0;
    }
    if (cli_opt(argc, argv, i, "--server", &v, &bad)) {
        rc = bad ? 2 : server_set(c, v, "--server");
    } else if (cli_opt(argc, argv, i, "--token", &v, &bad)) {
        rc = bad ? 2 : token_set(c, v, "--token");
    } else if (cli_opt(argc, argv, i, "--request-timeout", &v, &bad)) {
        rc = bad ? 2 : timeout_set(c, v, "--request-timeout");
    } else {
        return CLIENT_OPT_OWN;
    }
    if (bad)
        return cli_usage_error(c->cmd, "option '%s' needs a value", a);
    return rc ? 2 : CLIENT_OPT_NEXT;
}

int client_args_id(struct client *c, int argc, char **argv, void (*usage)(FILE *), bool *json,
                   const char **id)
{
    *id = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = client_opt(c, argc, argv, &i, usage);
        if (rc == CLIENT_OPT_NEXT)
            continue;
        if (rc != CLIENT_OPT_OWN)
            return rc;
        if (!strcmp(a, "--json"))
            *json = true;
        else if (a[0] == '-' && a[1])
            return cli_usage_error(c->cmd, "unknown option '%s'", a);
        else if (!*id)
            *id = a;
        else
            return cli_usage_error(c->cmd, "one ID only (got '%s' too)", a);
    }
    if (!*id)
        return cli_usage_error(c->cmd, "which evaluation? (an ID from clearbox submit or list)");
    if (!client_id_ok(*id))
        return cli_usage_error(c->cmd, "'%s' is not an evaluation id", *id);
    return -1;
}

void client_usage_common(FILE *f)
{
    fprintf(f,
            "  --server URL          the service (env CLEARBOX_SERVER; default %s)\n"
            "  --token T             bearer token (better: env CLEARBOX_TOKEN, which ps does\n"
            "                        not show)\n"
            "  --request-timeout S   give up on a request after S seconds (env\n"
            "                        CLEARBOX_REQUEST_TIMEOUT; default 60)\n",
            CLIENT_DEFAULT_SERVER);
}

bool client_id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!isalnum((unsigned char)s[n]) && s[n] != '-' && s[n] != '_')
            return false;
    return n > 0 && n <= CLIENT_ID_MAX;
}

void client_url_escape(struct buf *b, const char *s)
{
    static const char hexd[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf_putc(b, (char)ch);
        } else {
            char e[3] = {'%', hexd[ch >> 4], hexd[ch & 15]};
            buf_append(b, e, 3);
        }
    }
}

/* Copy a header value for messages: printable ASCII only, bounded. */
static void copy_clean(char *dst, size_t cap, const char *src)
{
    size_t k = 0;
    for (; src && src[k] && k + 1 < cap; k++)
        dst[k] = isprint((unsigned char)src[k]) ? src[k] : '?';
    dst[k] = '\0';
}

/* ---- one request ------------------------------------------------------------------------ */

struct recv {
    struct buf *b;
    char *retry_after;
    size_t retry_after_len;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct recv *r = arg;
    if (buf_append(r->b, p, sz * n) < 0)
        return 0; /* over CLIENT_BODY_MAX: curl stops with a write error */
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct recv *r = arg;
    size_t len = sz * n;
    static const char name[] = "retry-after:";
    if (r->retry_after && len > sizeof name - 1 && !strncasecmp(p, name, sizeof name - 1)) {
        const char *v = p + sizeof name - 1;
        size_t vl = len - (sizeof name - 1);
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        size_t k = 0;
        for (; k < vl && k + 1 < r->retry_after_len; k++)
            r->retry_after[k] = isprint((unsigned char)v[k]) ? v[k] : '?';
        r->retry_after[k] = '\0';
    }
    return len;
}

/* Is the server's host 127.x.x.x, localhost or [::1] (exactly: not
 * localhost.example.com)? */
static bool host_is_loopback(const char *server)
{
    const char *h = strstr(server, "://");
    h = h ? h + 3 : server;
    size_t n = strcspn(h, "/?#");
    if (h[0] == '[')
        return n >= 5 && !strncmp(h, "[::1]", 5) && (n == 5 || h[5] == ':');
    size_t hl = strcspn(h, ":/?#");
    if (hl == 9 && !strncmp(h, "localhost", 9))
        return true;
    if (hl < 4 || strncmp(h, "127.", 4))
        return false;
    for (size_t i = 4; i < hl; i++)
        if (!isdigit((unsigned char)h[i]) && h[i] != '.')
            return false;
    return true;
}

/* The options every request shares. hdrs is the caller's list (freed by it). */
static struct curl_slist *easy_common(const struct curl_dl *d, CURL *h, struct client *c,
                                      const char *url, const char *accept, bool has_body,
                                      const char *extra_header, char *errbuf)
{
    d->easy_setopt(h, CURLOPT_URL, url);
    d->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    d->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    d->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    d->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    d->easy_setopt(h, CURLOPT_USERAGENT, "clearbox/" CLEARBOX_VERSION);
    d->easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (host_is_loopback(c->server))
        d->easy_setopt(h, CURLOPT_PROXY, "");
    struct curl_slist *hdrs = NULL, *t;
    char line[CLIENT_TOKEN_MAX + 32];
    snprintf(line, sizeof line, "Accept: %s", accept);
    hdrs = d->slist_append(hdrs, line);
    if (has_body && hdrs && (t = d->slist_append(hdrs, "Content-Type: application/json")))
        hdrs = t;
    if (c->token[0] && hdrs) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", c->token);
        if ((t = d->slist_append(hdrs, line)))
            hdrs = t;
    }
    if (extra_header && hdrs && (t = d->slist_append(hdrs, extra_header)))
        hdrs = t;
    /* the caller's trace joins the evaluation's trace (docs/api.md, Tracing) */
    const char *tp = getenv("TRACEPARENT");
    if (tp && strlen(tp) == 55 && hdrs) {
        bool ok = true;
        for (const char *q = tp; *q; q++)
            ok &= isxdigit((unsigned char)*q) || *q == '-';
        snprintf(line, sizeof line, "traceparent: %s", tp);
        if (ok && (t = d->slist_append(hdrs, line)))
            hdrs = t;
    }
    if (hdrs)
        d->easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    return hdrs;
}

/* The words for a failed transfer: the base URL, what went wrong, what to do. */
static int transport_error(const struct client *c, const struct curl_dl *d, CURL *h, CURLcode rc,
                           const char *errbuf, long timeout_ms, char *err, size_t errlen)
{
    long oserr = 0;
    d->easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        if (oserr == ECONNREFUSED)
            return err_set(err, errlen, -ECONNREFUSED,
                           "cannot reach %s: connection refused — is `clearbox serve` running? "
                           "(--server, CLEARBOX_SERVER)",
                           c->server);
        if (oserr) {
            char eb[128];
            return err_set(err, errlen, -(int)oserr, "cannot reach %s: %s", c->server,
                           err_str((int)oserr, eb, sizeof eb));
        }
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        return err_set(err, errlen, -EHOSTUNREACH, "cannot reach %s: unknown host (%s)", c->server,
                       errbuf[0] ? errbuf : "DNS lookup failed");
    case CURLE_OPERATION_TIMEDOUT:
        return err_set(err, errlen, -ETIMEDOUT,
                       "no answer from %s within %.0f s (--request-timeout, "
                       "CLEARBOX_REQUEST_TIMEOUT)",
                       c->server, (double)timeout_ms / 1000.0);
    case CURLE_UNSUPPORTED_PROTOCOL:
        return err_set(err, errlen, -EPROTONOSUPPORT, "cannot reach %s: %s", c->server,
                       errbuf[0] ? errbuf : "protocol not supported");
    default: break;
    }
    return err_set(err, errlen, -EIO, "cannot reach %s: %s", c->server,
                   errbuf[0] ? errbuf : d->easy_strerror(rc));
}

int client_request(struct client *c, const char *method, const char *path, const char *body,
                   size_t body_len, const char *extra_header, struct client_response *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    buf_init(&out->body, NULL, 0, CLIENT_BODY_MAX);
    const struct curl_dl *d = curl_dl(err, errlen);
    if (!d)
        return -ENOENT;
    char url[CLIENT_SERVER_MAX + 4096];
    if (snprintf(url, sizeof url, "%s%s", c->server, path) >= (int)sizeof url)
        return err_set(err, errlen, -ENAMETOOLONG, "request URL too long");
    CURL *h = d->easy_init();
    if (!h)
        return err_set(err, errlen, -ENOMEM, "curl_easy_init failed");
    char errbuf[CURL_ERROR_SIZE] = "";
    bool post = !strcmp(method, "POST");
    struct curl_slist *hdrs =
        easy_common(d, h, c, url, "application/json", body != NULL, extra_header, errbuf);
    d->easy_setopt(h, CURLOPT_TIMEOUT_MS, c->request_timeout_ms);
    if (post) {
        d->easy_setopt(h, CURLOPT_POST, 1L);
        d->easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        d->easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
    } else if (strcmp(method, "GET")) {
        d->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    struct recv r = {.b = &out->body,
                     .retry_after = out->retry_after,
                     .retry_after_len = sizeof out->retry_after};
    d->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    d->easy_setopt(h, CURLOPT_WRITEDATA, &r);
    d->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    d->easy_setopt(h, CURLOPT_HEADERDATA, &r);
    CURLcode rc = d->easy_perform(h);
    int ret = 0;
    if (rc == CURLE_WRITE_ERROR && !buf_ok(&out->body))
        ret = err_set(err, errlen, -EMSGSIZE, "the answer from %s is larger than %zu MiB",
                      c->server, CLIENT_BODY_MAX >> 20);
    else if (rc != CURLE_OK)
        ret = transport_error(c, d, h, rc, errbuf, c->request_timeout_ms, err, errlen);
    else {
        d->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
        char *ct = NULL;
        d->easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
        copy_clean(out->content_type, sizeof out->content_type, ct);
    }
    d->slist_free_all(hdrs);
    d->easy_cleanup(h);
    if (ret < 0) {
        buf_free(&out->body);
        return ret;
    }
    if (out->body.len) {
        json_error_t je;
        out->json = json_loadb(out->body.data, out->body.len, 0, &je);
    }
    return 0;
}

void client_response_free(struct client_response *r)
{
    if (r->json)
        json_decref(r->json);
    r->json = NULL;
    buf_free(&r->body);
}

/* ---- error words ------------------------------------------------------------------------ */

/* Append s to b with control characters (C0, DEL, C1) shown as \xNN, at most
 * max bytes of s (0: all). For text from a server going to a terminal. */
static void put_clean(struct buf *b, const char *s, size_t n, size_t max)
{
    if (max && n > max)
        n = max;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool c1 = ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                  (unsigned char)s[i + 1] <= 0x9f;
        if (c1) {
            buf_printf(b, "\\x%02x", (unsigned char)s[++i]);
        } else if ((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f) {
            buf_printf(b, "\\x%02x", ch);
        } else {
            buf_putc(b, (char)ch);
        }
    }
}

/* The words for an answer that is not a success, into b:
 *   server refused the request (404 not_found, field f): message
 * or, when the body is not clearbox's error object (another server on that
 * port, a proxy's error page):
 *   URL answered 404 (text/html), not a clearbox error: "<first line>" — is ... */
static void refusal_words(struct buf *b, const char *server, long status, const char *ctype,
                          json_t *json, const char *raw, size_t raw_len, const char *retry_after)
{
    json_t *e = json_is_object(json) ? json_object_get(json, "error") : NULL;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *field = json_string_value(json_object_get(e, "field"));
    if (!code && !msg) {
        buf_printf(b, "%s answered %ld", server, status);
        if (ctype && ctype[0])
            buf_printf(b, " (%s)", ctype);
        buf_puts(b, ", not a clearbox error");
        size_t n = 0;
        while (n < raw_len && raw[n] != '\n' && raw[n] != '\r')
            n++;
        if (n) {
            buf_puts(b, ": \"");
            put_clean(b, raw, n, REFUSAL_BODY_QUOTE);
            buf_puts(b, n > REFUSAL_BODY_QUOTE ? "...\"" : "\"");
        }
        if (status != 401 && status != 429 && status < 500)
            buf_puts(b, " — is it the clearbox service? (--server, CLEARBOX_SERVER)");
    } else {
        buf_printf(b, "server refused the request (%ld", status);
        if (code) {
            buf_putc(b, ' ');
            put_clean(b, code, strlen(code), 64);
        }
        if (field) {
            buf_puts(b, ", field ");
            put_clean(b, field, strlen(field), 128);
        }
        buf_puts(b, ")");
        if (msg) {
            buf_puts(b, ": ");
            put_clean(b, msg, strlen(msg), 1024);
        }
    }
    if (status == 401)
        buf_puts(b, " — pass the service's token with --token or CLEARBOX_TOKEN");
    if (status == 429 && retry_after && retry_after[0])
        buf_printf(b, " — retry after %s s", retry_after);
}

int client_fail_response(const struct client *c, const struct client_response *r)
{
    char storage[2048];
    struct buf b;
    buf_init(&b, storage, sizeof storage, 0);
    refusal_words(&b, c->server, r->status, r->content_type, r->json,
                  r->body.data ? r->body.data : "", r->body.len, r->retry_after);
    int rc = cli_fail(c->cmd, "%s", b.data);
    buf_free(&b);
    return rc;
}

/* ---- Server-Sent Events ----------------------------------------------------------------- */

struct sse {
    const struct curl_dl *d;
    CURL *h;
    client_sse_fn on_event;
    client_tick_fn on_tick;
    void *arg;
    volatile int *stop;
    struct buf line;   /* the line being read */
    struct buf data;   /* data lines of the event being read */
    char event[64];    /* its name */
    long long last_id; /* the last id: line seen (-1: none) */
    bool cr;           /* the last byte was '\r' (a following '\n' is the same end) */
    bool checked;      /* the status code was looked at */
    long status;
    struct buf errbody; /* the body when the status is not 200 */
    char ctype[64];     /* its Content-Type */
    bool not_stream;    /* an error status, or not text/event-stream */
    bool progress;      /* an event arrived during this connection */
    bool ended, stopped;
};

static int sse_dispatch(struct sse *s)
{
    if (!s->data.len && !s->event[0])
        return 0;
    if (s->data.len && s->data.data[s->data.len - 1] == '\n')
        s->data.data[--s->data.len] = '\0';
    const char *name = s->event[0] ? s->event : "message";
    json_error_t je;
    json_t *j = s->data.len ? json_loadb(s->data.data, s->data.len, 0, &je) : NULL;
    s->progress = true;
    int rc = s->on_event ? s->on_event(s->arg, name, j) : 0;
    if (j)
        json_decref(j);
    if (!strcmp(name, "end"))
        s->ended = true;
    if (rc)
        s->stopped = true;
    s->event[0] = '\0';
    buf_reset(&s->data);
    return s->ended || s->stopped;
}

/* One line of the stream (without its end). Returns nonzero to stop. */
static int sse_line(struct sse *s, const char *l, size_t n)
{
    if (n == 0)
        return sse_dispatch(s);
    if (l[0] == ':')
        return 0; /* comment: keepalive */
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && *v == ' ')
        v++, vl--;
    if (fl == 5 && !memcmp(l, "event", 5)) {
        size_t k = vl < sizeof s->event - 1 ? vl : sizeof s->event - 1;
        memcpy(s->event, v, k);
        s->event[k] = '\0';
    } else if (fl == 4 && !memcmp(l, "data", 4)) {
        buf_append(&s->data, v, vl);
        buf_putc(&s->data, '\n');
    } else if (fl == 2 && !memcmp(l, "id", 2)) {
        char num[32];
        if (vl && vl < sizeof num) {
            memcpy(num, v, vl);
            num[vl] = '\0';
            char *end;
            errno = 0;
            long long id = strtoll(num, &end, 10);
            if (!errno && !*end && id >= 0)
                s->last_id = id;
        }
    }
    return 0;
}

static size_t sse_body(char *p, size_t sz, size_t n, void *arg)
{
    struct sse *s = arg;
    size_t len = sz * n;
    if (!s->checked) {
        s->checked = true;
        s->d->easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
        char *ct = NULL;
        s->d->easy_getinfo(s->h, CURLINFO_CONTENT_TYPE, &ct);
        copy_clean(s->ctype, sizeof s->ctype, ct);
    }
    if (s->status != 200 || strncmp(s->ctype, "text/event-stream", 17)) {
        /* an error, or not an event stream (another program on that port) */
        s->not_stream = true;
        buf_append(&s->errbody, p, len); /* bounded; the rest is dropped */
        return len;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (ch == '\n' && s->cr) {
            s->cr = false;
            continue;
        }
        s->cr = ch == '\r';
        if (ch == '\n' || ch == '\r') {
            int stop = sse_line(s, s->line.data ? s->line.data : "", s->line.len);
            buf_reset(&s->line);
            if (stop)
                return 0;
        } else if (buf_putc(&s->line, ch) < 0) {
            return 0; /* a line over SSE_LINE_MAX: not our server */
        }
    }
    if (!buf_ok(&s->data))
        return 0;
    return len;
}

static int sse_xferinfo(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    struct sse *s = arg;
    if (s->stop && *s->stop)
        return 1;
    if (s->on_tick && s->on_tick(s->arg)) {
        s->stopped = true;
        return 1;
    }
    return 0;
}

/* Sleep ms in small steps, ticking; nonzero when told to stop. */
static int sse_pause(struct sse *s, long ms)
{
    for (long t = 0; t < ms; t += 100) {
        if (s->stop && *s->stop)
            return 1;
        if (s->on_tick && s->on_tick(s->arg))
            return 1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int client_follow_events(struct client *c, const char *id, client_sse_fn on_event,
                         client_tick_fn on_tick, void *arg, volatile int *stop, char *err,
                         size_t errlen)
{
    const struct curl_dl *d = curl_dl(err, errlen);
    if (!d)
        return -ENOENT;
    if (!client_id_ok(id))
        return err_set(err, errlen, -EINVAL, "'%s' is not an evaluation id", id);
    char url[CLIENT_SERVER_MAX + 128];
    snprintf(url, sizeof url, "%s/v1/evaluations/%s/events", c->server, id);
    struct sse s;
    memset(&s, 0, sizeof s);
    s.d = d;
    s.on_event = on_event;
    s.on_tick = on_tick;
    s.arg = arg;
    s.stop = stop;
    s.last_id = -1;
    buf_init(&s.line, NULL, 0, SSE_LINE_MAX);
    buf_init(&s.data, NULL, 0, SSE_LINE_MAX);
    buf_init(&s.errbody, NULL, 0, SSE_ERRBODY_MAX);
    uint64_t last_progress = time_mono_ns();
    int ret = 0;
    for (;;) {
        CURL *h = d->easy_init();
        if (!h) {
            ret = err_set(err, errlen, -ENOMEM, "curl_easy_init failed");
            break;
        }
        s.h = h;
        s.checked = false;
        s.not_stream = false;
        s.ctype[0] = '\0';
        s.status = 0;
        s.progress = false;
        s.cr = false;
        buf_reset(&s.line);
        buf_reset(&s.data);
        buf_reset(&s.errbody);
        s.event[0] = '\0';
        char errbuf[CURL_ERROR_SIZE] = "";
        char resume[64] = "";
        if (s.last_id >= 0)
            snprintf(resume, sizeof resume, "Last-Event-ID: %lld", s.last_id);
        struct curl_slist *hdrs = easy_common(d, h, c, url, "text/event-stream", false,
                                              resume[0] ? resume : NULL, errbuf);
        /* no overall timeout: an evaluation may wait in the queue for long;
         * a silent connection (no keepalive) is a dead one */
        d->easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        d->easy_setopt(h, CURLOPT_LOW_SPEED_TIME, SSE_IDLE_MS / 1000);
        d->easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_body);
        d->easy_setopt(h, CURLOPT_WRITEDATA, &s);
        d->easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        d->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, sse_xferinfo);
        d->easy_setopt(h, CURLOPT_XFERINFODATA, &s);
        CURLcode rc = d->easy_perform(h);
        if (!s.checked && rc == CURLE_OK)
            d->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &s.status);
        char terr[CLIENT_SERVER_MAX + 128] = "";
        if (rc == CURLE_OPERATION_TIMEDOUT)
            snprintf(terr, sizeof terr, "the event stream from %s was silent for %ld s", c->server,
                     SSE_IDLE_MS / 1000);
        else if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR && rc != CURLE_ABORTED_BY_CALLBACK)
            transport_error(c, d, h, rc, errbuf, SSE_IDLE_MS, terr, sizeof terr);
        d->slist_free_all(hdrs);
        d->easy_cleanup(h);
        if (s.ended) {
            ret = 0;
            break;
        }
        if (s.stopped || (stop && *stop)) {
            ret = 1;
            break;
        }
        if (s.status && (s.status != 200 || s.not_stream)) {
            json_error_t je;
            json_t *j = s.errbody.len ? json_loadb(s.errbody.data, s.errbody.len, 0, &je) : NULL;
            char storage[2048];
            struct buf b;
            buf_init(&b, storage, sizeof storage, 0);
            refusal_words(&b, c->server, s.status, s.ctype, j, s.errbody.data ? s.errbody.data : "",
                          s.errbody.len, NULL);
            ret = err_set(err, errlen, -EPROTO, "%s", b.data);
            buf_free(&b);
            if (j)
                json_decref(j);
            break;
        }
        if (rc == CURLE_WRITE_ERROR) {
            ret = err_set(err, errlen, -EMSGSIZE,
                          "the event stream from %s has a line over %zu KiB: is it clearbox?",
                          c->server, SSE_LINE_MAX >> 10);
            break;
        }
        /* the stream closed or failed before `end`: reopen where it stopped */
        if (s.progress)
            last_progress = time_mono_ns();
        if (time_mono_ns() - last_progress > SSE_RECONNECT_FOR_NS) {
            ret = err_set(err, errlen, -EIO, "%s (gave up after 60 s of retrying)",
                          terr[0] ? terr : "the event stream keeps closing");
            break;
        }
        if (on_event && on_event(arg, "reconnecting", NULL)) {
            ret = 1;
            break;
        }
        if (sse_pause(&s, 1000)) {
            ret = 1;
            break;
        }
    }
    buf_free(&s.line);
    buf_free(&s.data);
    buf_free(&s.errbody);
    return ret;
}

/* ---- presenting records ----------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool jnum(json_t *o, const char *k, double *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

/* Parse "2026-11-27T11:30:38.396237897Z" (or with +hh:mm) into seconds. */
static bool parse_rfc3339(const char *s, double *out)
{
    if (!s)
        return false;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    double frac = 0;
    const char *p = s + n;
    if (*p == '.') {
        double scale = 0.1;
        for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    double off = 0;
    if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return false;
        off = (*p == '+' ? 1 : -1) * (hh * 3600.0 + mm * 60.0);
    } else if (*p != 'Z' && *p != 'z') {
        return false;
    }
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (double)t + frac - off;
    return true;
}

double client_seconds_between(json_t *from, json_t *to)
{
    double a, b;
    if (!parse_rfc3339(json_string_value(from), &a) || !parse_rfc3339(json_string_value(to), &b))
        return NAN;
    return b - a;
}

static void put_stream(struct buf *b, json_t *rec, const char *name, const char *trunc_key)
{
    json_t *v = json_object_get(rec, name);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s || !n)
        return;
    buf_printf(b, "--- %s%s ---\n", name,
               json_is_true(json_object_get(rec, trunc_key)) ? " (truncated)" : "");
    put_clean(b, s, n, 0);
    if (s[n - 1] != '\n')
        buf_putc(b, '\n');
}

void client_print_record_text(FILE *f, json_t *rec)
{
    struct buf b;
    buf_init(&b, NULL, 0, CLIENT_BODY_MAX * 2);
    const char *status = jstr(rec, "status");
    double v, ms;
    json_t *error = json_object_get(rec, "error");
    buf_puts(&b, "clearbox: ");
    put_clean(&b, status ? status : "unknown", strlen(status ? status : "unknown"), 64);
    if (json_is_object(error)) {
        const char *r = jstr(error, "reason"), *m = jstr(error, "message");
        buf_puts(&b, " (");
        put_clean(&b, r ? r : "?", strlen(r ? r : "?"), 64);
        buf_puts(&b, ": ");
        put_clean(&b, m ? m : "", strlen(m ? m : ""), 1024);
        buf_putc(&b, ')');
    } else if (status && !strcmp(status, "queued")) {
        if (jnum(rec, "queue_position", &v))
            buf_printf(&b, " (position %.0f)", v);
    } else if (status && !strcmp(status, "running")) {
        const char *w = jstr(rec, "worker_id");
        if (w) {
            buf_puts(&b, " on ");
            put_clean(&b, w, strlen(w), 128);
        }
    } else if (jstr(rec, "signal")) {
        buf_puts(&b, ", killed by ");
        put_clean(&b, jstr(rec, "signal"), strlen(jstr(rec, "signal")), 32);
    } else if (jnum(rec, "exit_code", &v)) {
        buf_printf(&b, ", exit code %.0f", v);
    }
    if (json_is_true(json_object_get(rec, "cancel_requested")) && status &&
        !strcmp(status, "running"))
        buf_puts(&b, ", cancel requested");
    if (jnum(rec, "duration_ms", &ms)) {
        json_t *ph = json_object_get(rec, "phases");
        double cr, ex, td;
        if (jnum(ph, "create_ms", &cr) && jnum(ph, "execute_ms", &ex) &&
            jnum(ph, "teardown_ms", &td))
            buf_printf(&b, " in %.1f ms (create %.1f, execute %.1f, teardown %.1f)", ms, cr, ex,
                       td);
        else
            buf_printf(&b, " in %.1f ms", ms);
    }
    buf_putc(&b, '\n');

    json_t *res = json_object_get(rec, "resources");
    double cpu, peak, mbs, pids, cost;
    if (jnum(res, "cpu_seconds", &cpu)) {
        buf_printf(&b, "  cpu %.3f s", cpu);
        if (jnum(res, "memory_peak_mb", &peak))
            buf_printf(&b, ", memory peak %.1f MB", peak);
        if (jnum(res, "memory_mb_seconds", &mbs))
            buf_printf(&b, ", %.3f MB-s", mbs);
        if (jnum(res, "pids_peak", &pids))
            buf_printf(&b, ", pids peak %.0f", pids);
        if (jnum(res, "estimated_cost_cents", &cost))
            buf_printf(&b, ", cost %.6f cents", cost);
        buf_putc(&b, '\n');
    }
    json_t *events = json_object_get(rec, "security_events");
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *reason = jstr(ev, "reason");
        json_t *det = json_object_get(ev, "details");
        json_t *copy = json_is_object(det) ? json_copy(det) : NULL;
        if (copy) {
            /* as `clearbox run` shows them: what happened, without the
             * always-present blocked flag and code snippet */
            json_object_del(copy, "blocked");
            json_object_del(copy, "code_snippet");
        }
        char *d = copy ? json_dumps(copy, JSON_COMPACT) : NULL;
        buf_puts(&b, "  security event: ");
        put_clean(&b, reason ? reason : "?", strlen(reason ? reason : "?"), 64);
        if (d) {
            buf_putc(&b, ' ');
            put_clean(&b, d, strlen(d), 4096);
        }
        buf_putc(&b, '\n');
        free(d);
        if (copy)
            json_decref(copy);
    }
    json_t *deg = json_object_get(json_object_get(rec, "policy"), "degraded");
    if (json_array_size(deg)) {
        buf_puts(&b, "  degraded:");
        json_array_foreach(deg, i, ev)
        {
            const char *s = json_string_value(ev);
            if (s) {
                buf_putc(&b, ' ');
                put_clean(&b, s, strlen(s), 128);
            }
        }
        buf_putc(&b, '\n');
    }
    /* the service's part: which evaluation, who, where it ran, the trace */
    const char *id = jstr(rec, "id"), *lang = jstr(rec, "language");
    const char *sub = jstr(rec, "submitter"), *worker = jstr(rec, "worker_id");
    buf_puts(&b, "  id ");
    put_clean(&b, id ? id : "?", strlen(id ? id : "?"), 64);
    if (lang) {
        buf_puts(&b, ", ");
        put_clean(&b, lang, strlen(lang), 32);
    }
    if (sub) {
        buf_puts(&b, ", submitter ");
        put_clean(&b, sub, strlen(sub), 256);
    }
    double att, maxatt, prio;
    if (jnum(rec, "priority", &prio) && prio != 0)
        buf_printf(&b, ", priority %.0f", prio);
    if (worker && status && strcmp(status, "running")) {
        buf_puts(&b, ", worker ");
        put_clean(&b, worker, strlen(worker), 128);
    }
    if (jnum(rec, "attempts", &att) && att > 1 && jnum(rec, "max_attempts", &maxatt))
        buf_printf(&b, ", attempt %.0f of %.0f", att, maxatt);
    double wait = client_seconds_between(json_object_get(rec, "queued_at"),
                                         json_object_get(rec, "started_at"));
    if (isfinite(wait) && wait >= 0 && wait < 1)
        buf_printf(&b, ", waited %.1f ms in the queue", wait * 1000.0);
    else if (isfinite(wait) && wait >= 1)
        buf_printf(&b, ", waited %.1f s in the queue", wait);
    buf_putc(&b, '\n');
    const char *trace = jstr(rec, "trace_id");
    if (trace) {
        buf_puts(&b, "  trace_id ");
        put_clean(&b, trace, strlen(trace), 64);
        buf_putc(&b, '\n');
    }
    put_stream(&b, rec, "stdout", "stdout_truncated");
    put_stream(&b, rec, "stderr", "stderr_truncated");
    fwrite(b.data ? b.data : "", 1, b.len, f);
    if (!buf_ok(&b))
        fputs("clearbox: (the record is too large to show in full; use --json)\n", f);
    fflush(f);
    buf_free(&b);
}

void client_print_body(FILE *f, const struct client_response *r)
{
    if (r->body.len) {
        fwrite(r->body.data, 1, r->body.len, f);
        if (r->body.data[r->body.len - 1] != '\n')
            fputc('\n', f);
    }
    fflush(f);
}
