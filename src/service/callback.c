/* callback.c - webhooks (see callback.h for the promises).
 *
 * Delivery order of one attempt: parse the URL -> resolve the host -> classify
 * EVERY address (one private answer among public ones is enough to refuse:
 * an attacker controls which answer a resolver returns first) -> pin the
 * first address with CURLOPT_RESOLVE -> POST with no proxy, no redirects and
 * a hard timeout. The check and the connection use the same address, so DNS
 * rebinding between them has nothing to swap.
 *
 * The sender has no queue of its own: the store is the queue (store.h "the
 * webhook outbox"). The statement that writes an evaluation's terminal status
 * also marks its delivery pending, in the same commit, so a delivery exists
 * exactly when the status does and survives kill -9 and restarts with it.
 * Sender threads (on every worker node) claim the delivery due first with a
 * lease, render the record as it is now, send one attempt, and settle it:
 * the attempt is appended to the record's callbacks and the delivery becomes
 * pending again at its next due time, delivered, or failed - one statement,
 * only if the claim is still ours. Between deliveries a thread sleeps until
 * the next due time, a notify (a local worker finished something), or
 * poll_ms (deliveries that appeared on other nodes). Retries: backoff_ms *
 * 2^(n-1), capped, with +-10% jitter so receivers that failed together are
 * not retried in lockstep; the attempt count lives in the store, so a
 * restart continues the schedule where it stopped.
 *
 * At-least-once: a sender that dies between the receiver's 2xx and the
 * settle (or mid-attempt) leaves a lease that runs out; the same attempt,
 * with the same X-Clearbox-Delivery id, is then sent again. A clean stop
 * leaves nothing in flight: it tries what falls due before its deadline and
 * leaves the rest pending for the next start or another node. */
#include "service/callback.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "service/validate.h"
#include "telemetry/log.h"
#include "util/curl_dl.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/rand.h"
#include "util/timeutil.h"

/* ---- signing ------------------------------------------------------------ */

int callback_sign(const void *key, size_t keylen, const void *body, size_t len,
                  char out[CALLBACK_SIG_LEN])
{
    if (!key || !keylen || (!body && len))
        return -EINVAL;
    char hex[HASH_SHA256_HEX];
    int rc = hash_hmac_sha256_hex(key, keylen, body ? body : "", len, hex);
    if (rc < 0)
        return rc;
    snprintf(out, CALLBACK_SIG_LEN, "sha256=%s", hex);
    return 0;
}

/* ---- the address classifier ---------------------------------------------
 * validate.h's: the same classes and rules as the API's check at submit. */

/* ---- URL check ----------------------------------------------------------- */

static int parse_url(const char *url, struct callback_target *t, char *err, size_t errlen)
{
    size_t ulen = strnlen(url, STORE_URL_MAX + 1);
    if (ulen > STORE_URL_MAX)
        return err_set(err, errlen, -EINVAL, "callback_url is longer than %d bytes", STORE_URL_MAX);
    for (size_t i = 0; i < ulen; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return err_set(err, errlen, -EINVAL,
                           "callback_url has whitespace or a control "
                           "character");
    const char *p;
    if (!strncasecmp(url, "http://", 7)) {
        snprintf(t->scheme, sizeof t->scheme, "http");
        t->port = 80;
        p = url + 7;
    } else if (!strncasecmp(url, "https://", 8)) {
        snprintf(t->scheme, sizeof t->scheme, "https");
        t->port = 443;
        p = url + 8;
    } else {
        return err_set(err, errlen, -EINVAL, "callback_url must start with http:// or https://");
    }
    size_t alen = strcspn(p, "/?#");
    const char *auth_end = p + alen;
    if (memchr(p, '@', alen))
        return err_set(err, errlen, -EINVAL, "callback_url must not carry user information");
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', alen);
        if (!rb)
            return err_set(err, errlen, -EINVAL, "callback_url: unclosed '[' in the host");
        host = p + 1;
        host_end = rb;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return err_set(err, errlen, -EINVAL, "callback_url: junk after ']'");
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        host_end = colon ? colon : auth_end;
        if (colon)
            port = colon + 1;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen > CALLBACK_HOST_MAX)
        return err_set(err, errlen, -EINVAL, "callback_url: the host must be 1-%d bytes",
                       CALLBACK_HOST_MAX);
    for (size_t i = 0; i < hlen; i++) {
        char c = host[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || (*p == '[' && c == ':');
        if (!ok)
            return err_set(err, errlen, -EINVAL, "callback_url: bad character in the host");
    }
    memcpy(t->host, host, hlen);
    t->host[hlen] = '\0';
    if (port) {
        size_t plen = (size_t)(auth_end - port);
        if (plen == 0 || plen > 5)
            return err_set(err, errlen, -EINVAL, "callback_url: bad port");
        int v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return err_set(err, errlen, -EINVAL, "callback_url: bad port");
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return err_set(err, errlen, -EINVAL, "callback_url: port out of range");
        t->port = v;
    }
    return 0;
}

int callback_check_url(const char *url, bool allow_private, struct callback_target *t, char *err,
                       size_t errlen)
{
    if (!url || !t)
        return err_set(err, errlen, -EINVAL, "no callback_url");
    memset(t, 0, sizeof *t);
    TRY(parse_url(url, t, err, errlen));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(t->host, NULL, &hints, &res);
    if (g != 0 || !res)
        return err_set(err, errlen, -EHOSTUNREACH, "cannot resolve %s: %s", t->host,
                       g == EAI_SYSTEM ? "system error" : gai_strerror(g));
    int rc = 0;
    bool pinned = false;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        char num[64];
        const void *src = ai->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (!inet_ntop(ai->ai_family, src, num, sizeof num))
            continue;
        enum validate_addr_class c = validate_addr_classify(ai->ai_addr);
        if (!validate_addr_allowed(c, allow_private)) {
            rc = err_set(err, errlen, -EPERM,
                         "callback destination %s resolves to %s, a %s address%s", t->host, num,
                         validate_addr_class_name(c),
                         validate_addr_allowed(c, true) ? " (refused unless callback_allow_private)"
                                                        : " (never allowed)");
            break;
        }
        if (!pinned) {
            snprintf(t->addr, sizeof t->addr, "%s", num);
            t->cls = validate_addr_class_name(c);
            pinned = true;
        }
    }
    freeaddrinfo(res);
    if (rc == 0 && !pinned)
        rc = err_set(err, errlen, -EHOSTUNREACH, "%s has no IPv4 or IPv6 address", t->host);
    return rc;
}

/* ---- one attempt ---------------------------------------------------------- */

static size_t discard_body(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    size_t *total = arg;
    *total += size * n;
    return *total > (1u << 20) ? 0 : size * n; /* a receiver may not stream at us */
}

int callback_post(const struct callback_options *o, const char *url, const char *eval_id,
                  int attempt, const void *body, size_t len, struct callback_attempt *a, char *err,
                  size_t errlen)
{
    memset(a, 0, sizeof *a);
    uint64_t t0 = time_mono_ns();
    struct callback_target t;
    int rc = callback_check_url(url, o->allow_private, &t, a->error, sizeof a->error);
    if (rc < 0) {
        a->duration_ms = (int64_t)((time_mono_ns() - t0) / 1000000);
        return err_set(err, errlen, rc, "%s", a->error);
    }
    const struct curl_dl *c = curl_dl(a->error, sizeof a->error);
    if (!c)
        return err_set(err, errlen, -ENOENT, "%s", a->error);
    CURL *h = c->easy_init();
    if (!h) {
        snprintf(a->error, sizeof a->error, "curl_easy_init failed");
        return err_set(err, errlen, -ENOMEM, "%s", a->error);
    }
    struct curl_slist *hdrs = NULL, *resolve = NULL;
    char line[CALLBACK_HOST_MAX + 128];
    hdrs = c->slist_append(hdrs, "Content-Type: application/json");
    hdrs = c->slist_append(hdrs, "X-Clearbox-Event: evaluation.finished");
    snprintf(line, sizeof line, "X-Clearbox-Delivery: %s.%d", eval_id ? eval_id : "", attempt);
    hdrs = c->slist_append(hdrs, line);
    hdrs = c->slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    if (o->secret && o->secret_len) {
        char sig[CALLBACK_SIG_LEN];
        if (callback_sign(o->secret, o->secret_len, body, len, sig) == 0) {
            snprintf(line, sizeof line, "X-Clearbox-Signature: %s", sig);
            hdrs = c->slist_append(hdrs, line);
        }
    }
    /* pin the checked address; an IP literal needs no resolution at all */
    unsigned char tmp[16];
    bool literal = inet_pton(AF_INET, t.host, tmp) == 1 || inet_pton(AF_INET6, t.host, tmp) == 1;
    if (!literal) {
        bool v6 = strchr(t.addr, ':') != NULL;
        snprintf(line, sizeof line, "%s:%d:%s%s%s", t.host, t.port, v6 ? "[" : "", t.addr,
                 v6 ? "]" : "");
        resolve = c->slist_append(NULL, line);
        c->easy_setopt(h, CURLOPT_RESOLVE, resolve);
    }
    size_t got = 0;
    long timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    c->easy_setopt(h, CURLOPT_URL, url);
    c->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    c->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    c->easy_setopt(h, CURLOPT_PROXY, ""); /* never through $http_proxy: the pin must hold */
    c->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    c->easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    c->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    c->easy_setopt(h, CURLOPT_POST, 1L);
    c->easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
    c->easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    c->easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    c->easy_setopt(h, CURLOPT_USERAGENT, "clearbox-webhook/1");
    c->easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
    c->easy_setopt(h, CURLOPT_WRITEDATA, &got);
    CURLcode cr = c->easy_perform(h);
    long code = 0;
    c->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    a->http_status = (int)code;
    a->duration_ms = (int64_t)((time_mono_ns() - t0) / 1000000);
    if (cr != CURLE_OK && !(cr == CURLE_WRITE_ERROR && code)) {
        snprintf(a->error, sizeof a->error, "%s", c->easy_strerror(cr));
        rc = err_set(err, errlen, cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO, "POST %s: %s",
                     t.host, a->error);
    } else if (code < 200 || code > 299) {
        snprintf(a->error, sizeof a->error, "HTTP %ld", code);
        rc = err_set(err, errlen, -EPROTO, "POST %s: HTTP %ld", t.host, code);
    } else {
        a->ok = true;
        rc = 0;
    }
    c->easy_cleanup(h);
    c->slist_free_all(hdrs);
    if (resolve)
        c->slist_free_all(resolve);
    return rc;
}

/* ---- the record as JSON ------------------------------------------------------ */

static void set_time(json_t *o, const char *key, int64_t ns)
{
    if (ns <= 0) {
        json_object_set_new(o, key, json_null());
        return;
    }
    char ts[TIME_RFC3339_LEN];
    time_fmt_rfc3339((uint64_t)ns, ts);
    json_object_set_new(o, key, json_string(ts));
}

static json_t *parse_or(const char *text, json_t *fallback)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (!v)
        return fallback;
    json_decref(fallback);
    return v;
}

int callback_record_json(const struct eval_record *r, struct buf *b)
{
    /* the result record's members first, then the service fields over them
     * (DESIGN.md: the service record is the result record plus service
     * fields, id = eval_id; the service's status wins, e.g. cancelled) */
    json_t *o = parse_or(r->result_json, json_object());
    if (!json_is_object(o)) {
        json_decref(o);
        o = json_object();
    }
    if (!o)
        return -ENOMEM;
    const char *st = store_status_name(r->status);
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "eval_id", json_string(r->id));
    json_object_set_new(o, "status", json_string(st ? st : "unknown"));
    json_object_set_new(o, "language", r->language ? json_string(r->language) : json_null());
    json_object_set_new(o, "code_length", json_integer((json_int_t)r->code_len));
    json_object_set_new(o, "priority", json_integer(r->priority));
    json_object_set_new(o, "metadata", parse_or(r->metadata_json, json_object()));
    set_time(o, "created_at", r->created_ns);
    set_time(o, "queued_at", r->queued_ns);
    set_time(o, "started_at", r->started_ns);
    set_time(o, "finished_at", r->finished_ns);
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "max_attempts", json_integer(r->max_attempts));
    json_object_set_new(o, "worker_id", r->worker_id ? json_string(r->worker_id) : json_null());
    if (r->traceparent && strlen(r->traceparent) >= 35) {
        char tid[33];
        memcpy(tid, r->traceparent + 3, 32);
        tid[32] = '\0';
        json_object_set_new(o, "trace_id", json_string(tid));
    }
    if (r->error_reason) {
        json_t *e = json_object();
        json_object_set_new(e, "reason", json_string(r->error_reason));
        json_object_set_new(e, "message",
                            r->error_message ? json_string(r->error_message) : json_string(""));
        json_object_set_new(o, "error", e);
    } else if (!json_object_get(o, "error")) {
        json_object_set_new(o, "error", json_null());
    }
    json_object_set_new(o, "cancel_requested", json_boolean(r->cancel_requested));
    json_object_set_new(o, "callback_url",
                        r->callback_url ? json_string(r->callback_url) : json_null());
    json_object_set_new(o, "callbacks", parse_or(r->callbacks_json, json_array()));
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s)
        return -ENOMEM;
    int rc = buf_puts(b, s);
    free(s);
    return rc < 0 ? rc : (buf_ok(b) ? 0 : -E2BIG);
}

/* ---- the sender: the store is the queue -------------------------------------- */

struct callback_sender {
    struct callback_options o;
    callback_render_fn render;
    void *secret;
    char *db_url;
    char owner[STORE_WORKER_ID_MAX];
    int64_t lease_ms; /* claim lease: outlives the slowest attempt */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t kicks;        /* callback_sender_notify calls */
    bool stopping;
    int64_t deadline_ns;
    int64_t pending;       /* pending in the store at the last count */
    int64_t last_warn_ns;  /* rate limit of callback.store_failed */
    int nthreads;
    pthread_t *th;
};

static int64_t backoff_ns(const struct callback_options *o, int attempt_done)
{
    int64_t ms = o->backoff_ms;
    for (int i = 1; i < attempt_done && ms < CALLBACK_BACKOFF_CAP_MS; i++)
        ms *= 2;
    if (ms > CALLBACK_BACKOFF_CAP_MS)
        ms = CALLBACK_BACKOFF_CAP_MS;
    double jitter = 0.9 + 0.2 * rand_unit();
    return (int64_t)((double)ms * jitter * 1e6);
}

/* One line per 10 s at most while the store fails: a database outage must
 * not turn into a log flood from every sender thread. */
static void store_warn(struct callback_sender *s, const char *err)
{
    int64_t now = (int64_t)time_now_ns();
    pthread_mutex_lock(&s->mu);
    bool say = now - s->last_warn_ns >= 10ll * 1000000000ll;
    if (say)
        s->last_warn_ns = now;
    pthread_mutex_unlock(&s->mu);
    if (say)
        log_error(log_get("callback"), "callback.store_failed", LOG_STR("error", err));
}

/* Send attempt r->callback_attempts + 1 of the delivery claimed in r, then
 * settle it in the store: appended to callbacks, and pending again (with its
 * backoff), delivered or failed. */
static void deliver(struct callback_sender *s, store_t *st, const struct eval_record *r)
{
    log_logger_t *lg = log_get("callback");
    int attempt = r->callback_attempts + 1;
    struct callback_attempt a;
    memset(&a, 0, sizeof a);
    int64_t ts_ns = (int64_t)time_now_ns();
    struct buf b;
    buf_init(&b, NULL, 0, CALLBACK_BODY_MAX);
    int rc = r->callback_url ? s->render(r, &b) : -EINVAL;
    bool rendered = rc == 0 && buf_ok(&b);
    if (!rendered) {
        /* nothing to send, now or later: settled as failed */
        snprintf(a.error, sizeof a.error, "%s",
                 r->callback_url ? "cannot render the record for the webhook body"
                                 : "no callback_url");
        log_error(lg, "callback.skipped", LOG_STR("eval_id", r->id),
                  LOG_INT("attempt", attempt), LOG_STR("error", a.error));
        rc = -EINVAL;
    } else {
        char perr[ERR_LEN];
        rc = callback_post(&s->o, r->callback_url, r->id, attempt, b.data, b.len, &a, perr,
                           sizeof perr);
    }
    buf_free(&b);
    bool permanent = rc == -EPERM || rc == -EINVAL || rc == -ENOENT;
    bool last = attempt >= s->o.attempts || permanent;
    enum store_callback_state next = rc == 0 ? STORE_CALLBACK_DELIVERED
                                     : last  ? STORE_CALLBACK_FAILED
                                             : STORE_CALLBACK_PENDING;
    int64_t next_ns = next == STORE_CALLBACK_PENDING
                          ? (int64_t)time_now_ns() + backoff_ns(&s->o, attempt)
                          : 0;
    struct store_callback_delivery sd = {.attempt = attempt,
                                         .ts_ns = ts_ns,
                                         .http_status = a.http_status,
                                         .duration_ms = a.duration_ms,
                                         .ok = a.ok,
                                         .error = a.error[0] ? a.error : NULL};
    char err[ERR_LEN];
    int src = store_callback_settle(st, r->id, s->owner, &sd, next, next_ns, err, sizeof err);
    if (src < 0) /* -ESTALE: another sender took it over after our lease ran out */
        log_warning(lg, "callback.record_failed", LOG_STR("eval_id", r->id),
                    LOG_INT("attempt", attempt), LOG_STR("error", err));
    if (rc == 0)
        log_info(lg, "callback.delivered", LOG_STR("eval_id", r->id), LOG_INT("attempt", attempt),
                 LOG_INT("http_status", a.http_status), LOG_INT("duration_ms", a.duration_ms));
    else if (rendered) /* a render failure was logged as callback.skipped */
        log_warning(lg, last ? "callback.gave_up" : "callback.failed", LOG_STR("eval_id", r->id),
                    LOG_INT("attempt", attempt), LOG_INT("http_status", a.http_status),
                    LOG_INT("duration_ms", a.duration_ms), LOG_STR("error", a.error),
                    LOG_BOOL("retry", !last));
}

/* A sender thread: claim what is due, deliver it, and otherwise sleep until
 * the next due time, a notify, or poll_ms (deliveries that other nodes'
 * workers finished appear in the store without a notify). Stopping: keep
 * going while something falls due before the deadline, then leave the rest
 * pending in the store. */
static void *sender_main(void *arg)
{
    struct callback_sender *s = arg;
    store_t *st = NULL;
    char err[ERR_LEN];
    const int64_t poll_ns = (int64_t)s->o.poll_ms * 1000000;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = (int64_t)time_now_ns();
        if (s->stopping && now >= s->deadline_ns)
            break;
        uint64_t kicks = s->kicks;
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);

        int64_t wake = 0; /* 0: go again at once */
        int rc;
        if (!st && (rc = store_open(s->db_url, NULL, &st, err, sizeof err)) < 0) {
            store_warn(s, err);
            wake = now + poll_ns;
        } else {
            struct eval_record r;
            rc = store_callback_claim(st, s->owner, s->lease_ms, &r, err, sizeof err);
            if (rc == 0) {
                deliver(s, st, &r);
                store_record_clear(&r);
            } else if (rc == -EAGAIN) {
                struct store_callback_stats cs;
                if (store_callback_stats(st, &cs, err, sizeof err) < 0) {
                    store_warn(s, err);
                    cs.pending = -1;
                    cs.next_due_ns = 0;
                }
                wake = now + poll_ns;
                if (cs.next_due_ns > 0 && cs.next_due_ns < wake)
                    wake = cs.next_due_ns > now ? cs.next_due_ns : now + 1000000;
                if (stopping) /* only what falls due before the deadline */
                    wake = cs.next_due_ns > 0 ? (cs.next_due_ns > now ? cs.next_due_ns
                                                                     : now + 1000000)
                                              : INT64_MAX;
                pthread_mutex_lock(&s->mu);
                if (cs.pending >= 0)
                    s->pending = cs.pending;
                pthread_mutex_unlock(&s->mu);
            } else {
                store_warn(s, err);
                wake = now + poll_ns;
            }
        }

        pthread_mutex_lock(&s->mu);
        if (!wake || s->kicks != kicks || s->stopping != stopping)
            continue;
        if (s->stopping && wake > s->deadline_ns)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = wake - (int64_t)time_now_ns();
        if (left <= 0)
            continue;
        int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + left;
        ts.tv_sec = t / 1000000000;
        ts.tv_nsec = t % 1000000000;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    store_close(st);
    return NULL;
}

int callback_sender_start(const struct callback_options *o, const char *db_url,
                          callback_sender_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o)
        return err_set(err, errlen, -EINVAL, "no callback options");
    if (!db_url || !*db_url)
        return err_set(err, errlen, -EINVAL,
                       "the webhook sender needs the store (deliveries are kept there)");
    if (o->attempts < 0 || o->attempts > CALLBACK_ATTEMPTS_MAX || o->timeout_ms < 0 ||
        o->backoff_ms < 0 || o->threads < 0 || o->threads > 64 || o->poll_ms < 0)
        return err_set(err, errlen, -EINVAL,
                       "callback options out of range (attempts 1-%d, threads 1-64)",
                       CALLBACK_ATTEMPTS_MAX);
    if (o->owner && (!*o->owner || strlen(o->owner) > STORE_WORKER_ID_MAX - 16))
        return err_set(err, errlen, -EINVAL, "callback owner must be 1-%d bytes",
                       STORE_WORKER_ID_MAX - 16);
    struct callback_sender *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    s->o = *o;
    if (!s->o.attempts)
        s->o.attempts = 5;
    if (!s->o.timeout_ms)
        s->o.timeout_ms = 10000;
    if (!s->o.backoff_ms)
        s->o.backoff_ms = 1000;
    if (!s->o.threads)
        s->o.threads = 2;
    if (!s->o.poll_ms)
        s->o.poll_ms = CALLBACK_POLL_MS_DEFAULT;
    s->render = o->render ? o->render : callback_record_json;
    /* an attempt is bounded by timeout_ms (connect included) plus the name
     * lookup; the lease outlives both with room to spare */
    s->lease_ms = 2 * (int64_t)s->o.timeout_ms + 30000;
    if (o->owner) {
        snprintf(s->owner, sizeof s->owner, "%s/callback", o->owner);
    } else {
        char host[64] = "";
        gethostname(host, sizeof host - 1);
        snprintf(s->owner, sizeof s->owner, "%s:%ld/callback", host[0] ? host : "node",
                 (long)getpid());
    }
    s->o.owner = NULL;
    s->o.render = NULL;
    if (o->secret && o->secret_len) {
        s->secret = malloc(o->secret_len);
        if (!s->secret)
            goto nomem;
        memcpy(s->secret, o->secret, o->secret_len);
        s->o.secret = s->secret;
    } else {
        s->o.secret = NULL;
        s->o.secret_len = 0;
    }
    if (!(s->db_url = strdup(db_url)))
        goto nomem;

    /* What a previous run left: its leases (a named owner is one process at a
     * time: the worker pool's node lock) and the deliveries still pending. */
    store_t *st;
    int rc = store_open(db_url, NULL, &st, err, errlen);
    if (rc < 0)
        goto fail;
    int released = 0;
    if (o->owner && (released = store_callback_release(st, s->owner, err, errlen)) < 0) {
        rc = released;
        store_close(st);
        goto fail;
    }
    struct store_callback_stats cs;
    rc = store_callback_stats(st, &cs, err, errlen);
    store_close(st);
    if (rc < 0)
        goto fail;
    s->pending = cs.pending;
    if (cs.pending > 0 || released > 0) {
        int64_t due_in = cs.next_due_ns - (int64_t)time_now_ns();
        log_info(log_get("callback"), "callback.resumed", LOG_INT("pending", cs.pending),
                 LOG_INT("leases_released", released),
                 LOG_INT("next_due_ms", due_in > 0 ? due_in / 1000000 : 0),
                 LOG_STR("owner", s->owner));
    }

    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->th = calloc((size_t)s->o.threads, sizeof *s->th);
    if (!s->th) {
        callback_sender_stop(s, 0);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < s->o.threads; i++) {
        int e = pthread_create(&s->th[i], NULL, sender_main, s);
        if (e != 0) {
            callback_sender_stop(s, 0);
            return err_set(err, errlen, -e, "cannot start a callback thread");
        }
        s->nthreads++;
    }
    *out = s;
    return 0;
nomem:
    rc = err_set(err, errlen, -ENOMEM, "out of memory");
fail:
    if (s->secret) {
        explicit_bzero(s->secret, s->o.secret_len);
        free(s->secret);
    }
    free(s->db_url);
    free(s);
    return rc;
}

void callback_sender_notify(callback_sender_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->kicks++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int callback_sender_pending(callback_sender_t *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    int64_t n = s->pending;
    pthread_mutex_unlock(&s->mu);
    return n > INT_MAX ? INT_MAX : (int)n;
}

int callback_sender_stop(callback_sender_t *s, int64_t deadline_ns)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->deadline_ns = deadline_ns ? deadline_ns : (int64_t)time_now_ns();
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(s->th[i], NULL);
    /* what is left stays in the store for the next start or another node */
    int64_t left = s->pending;
    store_t *st;
    char err[ERR_LEN];
    if (store_open(s->db_url, NULL, &st, err, sizeof err) == 0) {
        struct store_callback_stats cs;
        if (store_callback_stats(st, &cs, err, sizeof err) == 0)
            left = cs.pending;
        store_close(st);
    }
    if (left > 0)
        log_info(log_get("callback"), "callback.left_pending", LOG_INT("pending", left),
                 LOG_STR("owner", s->owner));
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->th);
    if (s->secret) {
        explicit_bzero(s->secret, s->o.secret_len);
        free(s->secret);
    }
    free(s->db_url);
    free(s);
    return left > INT_MAX ? INT_MAX : (int)left;
}
