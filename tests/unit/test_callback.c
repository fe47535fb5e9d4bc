/* test_callback.c - webhooks against a real HTTP receiver on loopback and a
 * real SQLite store: signature, retries with backoff, the SSRF guard (no
 * connection is made to a refused address), timeouts, deliveries kept in
 * the store across a stop and a new sender, two senders on one store. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "service/callback.h"
#include "service/store.h"
#include "test.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/timeutil.h"

/* ---- a tiny HTTP/1.1 receiver ------------------------------------------------ */

#define RX_MAX 16

struct rx_req {
    char sig[128];
    char delivery[128];
    char event[64];
    char *body;
    size_t len;
};

struct receiver {
    int fd;
    int port;
    pthread_t th;
    int statuses[RX_MAX]; /* answer to request i (0: 200; -1: never answer) */
    pthread_mutex_t mu;
    int n; /* requests seen */
    struct rx_req req[RX_MAX];
    atomic_bool stop;
};

static void header_value(const char *hdrs, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = hdrs; p && *p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL) {
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            snprintf(out, outlen, "%.*s", (int)l, v);
            return;
        }
    }
}

static void *rx_main(void *arg)
{
    struct receiver *rx = arg;
    while (!atomic_load(&rx->stop)) {
        struct pollfd pf = {.fd = rx->fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int c = accept(rx->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[1 << 16];
        size_t got = 0;
        char *end = NULL;
        while (got < sizeof buf - 1 && !(end = strstr(buf, "\r\n\r\n"))) {
            ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
        }
        if (!end) {
            close(c);
            continue;
        }
        char cl[32];
        header_value(buf, "Content-Length", cl, sizeof cl);
        size_t want = (size_t)atol(cl), hl = (size_t)(end + 4 - buf);
        char *body = malloc(want + 1);
        size_t have = got - hl < want ? got - hl : want;
        memcpy(body, end + 4, have);
        while (have < want) {
            ssize_t r = read(c, body + have, want - have);
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        body[have] = '\0';
        pthread_mutex_lock(&rx->mu);
        int i = rx->n < RX_MAX ? rx->n : RX_MAX - 1;
        struct rx_req *q = &rx->req[i];
        free(q->body);
        q->body = body;
        q->len = have;
        *end = '\0';
        header_value(buf, "X-Clearbox-Signature", q->sig, sizeof q->sig);
        header_value(buf, "X-Clearbox-Delivery", q->delivery, sizeof q->delivery);
        header_value(buf, "X-Clearbox-Event", q->event, sizeof q->event);
        int st = rx->statuses[i];
        rx->n++;
        pthread_mutex_unlock(&rx->mu);
        if (st < 0) { /* hang: hold the connection until the client gives up */
            while (!atomic_load(&rx->stop)) {
                struct pollfd cp = {.fd = c, .events = POLLIN};
                if (poll(&cp, 1, 50) > 0) {
                    char t[64];
                    if (read(c, t, sizeof t) <= 0)
                        break;
                }
            }
            close(c);
            continue;
        }
        char resp[128];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                         st ? st : 200);
        if (write(c, resp, (size_t)n) < 0) {
        }
        close(c);
    }
    return NULL;
}

static int rx_start(struct receiver *rx)
{
    memset(rx, 0, sizeof *rx);
    pthread_mutex_init(&rx->mu, NULL);
    rx->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(rx->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(rx->fd, 16) < 0)
        return -errno;
    socklen_t l = sizeof a;
    getsockname(rx->fd, (struct sockaddr *)&a, &l);
    rx->port = ntohs(a.sin_port);
    return pthread_create(&rx->th, NULL, rx_main, rx) ? -EAGAIN : 0;
}

static void rx_stop(struct receiver *rx)
{
    atomic_store(&rx->stop, true);
    pthread_join(rx->th, NULL);
    close(rx->fd);
    for (int i = 0; i < RX_MAX; i++)
        free(rx->req[i].body);
}

static int rx_count(struct receiver *rx)
{
    pthread_mutex_lock(&rx->mu);
    int n = rx->n;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

/* Poll for a condition instead of sleeping a fixed time (busy CI machines). */
static bool wait_count(struct receiver *rx, int n, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        if (rx_count(rx) >= n)
            return true;
        usleep(10000);
    }
    return rx_count(rx) >= n;
}


static const char SECRET[] = "s3cret-webhook-key";

/* ---- signing ------------------------------------------------------------------ */

TEST(sign_known_vector)
{
    char sig[CALLBACK_SIG_LEN];
    const char *msg = "The quick brown fox jumps over the lazy dog";
    ASSERT_EQ(callback_sign("key", 3, msg, strlen(msg), sig), 0);
    ASSERT_STREQ(sig, "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    ASSERT_EQ(callback_sign(NULL, 0, msg, 1, sig), -EINVAL);
}

/* ---- the SSRF guard ------------------------------------------------------------- */

TEST(guard_refuses_private_destinations)
{
    static const char *const refused[] = {
        "http://10.1.2.3/hook",      "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x",       "http://127.0.0.1:9/",
        "http://192.168.0.10/",      "http://172.20.0.1/",
        "http://100.64.1.1/",        "http://[fd12:3456::1]/",
        "http://[fe80::1]/",         "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/", "http://localhost:1/",
        "https://[fd00:ec2::254]/",  "http://169.254.1.1/",
        "http://2130706433/",        "http://0x7f.1:81/",
        "http://[2002:7f00:1::1]/",  "http://[64:ff9b::a00:1]/",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct callback_target t;
        char err[ERR_LEN] = "";
        int rc = callback_check_url(refused[i], false, &t, err, sizeof err);
        ASSERT_MSG(rc == -EPERM, "%s: rc %d (%s)", refused[i], rc, err);
        ASSERT_CONTAINS(err, "callback_allow_private");
        /* allowed explicitly */
        rc = callback_check_url(refused[i], true, &t, err, sizeof err);
        ASSERT_MSG(rc == 0, "%s with allow_private: rc %d (%s)", refused[i], rc, err);
    }
    struct callback_target t;
    char err[ERR_LEN];
    ASSERT_EQ(callback_check_url("http://169.254.169.254/", true, &t, err, sizeof err), 0);
    ASSERT_STREQ(t.cls, "metadata");
    ASSERT_EQ(callback_check_url("http://[::1]:8080/x", true, &t, err, sizeof err), 0);
    ASSERT_STREQ(t.addr, "::1");
    ASSERT_EQ(t.port, 8080);
    ASSERT_STREQ(t.cls, "loopback");
    ASSERT_EQ(callback_check_url("http://[fd00:ec2::254]/", true, &t, err, sizeof err), 0);
    ASSERT_STREQ(t.cls, "metadata");
}

TEST(guard_never_allows_unspecified_multicast_reserved)
{
    static const char *const never[] = {"http://0.0.0.0/",   "http://[::]/",
                                        "http://224.0.0.1/", "http://255.255.255.255/",
                                        "http://240.0.0.1/", "http://[ff02::1]/"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
        struct callback_target t;
        char err[ERR_LEN] = "";
        int rc = callback_check_url(never[i], true, &t, err, sizeof err);
        ASSERT_MSG(rc == -EPERM, "%s: rc %d (%s)", never[i], rc, err);
        ASSERT_CONTAINS(err, "never allowed");
    }
}

TEST(guard_public_literal_and_malformed_urls)
{
    struct callback_target t;
    char err[ERR_LEN];
    /* IP literals: classified without any network traffic */
    ASSERT_EQ(callback_check_url("https://93.184.216.34/hook?x=1", false, &t, err, sizeof err), 0);
    ASSERT_STREQ(t.cls, "public");
    ASSERT_EQ(t.port, 443);
    ASSERT_EQ(callback_check_url("http://[2606:4700::1111]:81/", false, &t, err, sizeof err), 0);
    ASSERT_EQ(t.port, 81);
    static const char *const bad[] = {
        "ftp://1.2.3.4/",        "http://user@1.2.3.4/", "http:///path", "http://1.2.3.4:0/",
        "http://1.2.3.4:70000/", "http://1.2.3.4:8a/",   "http://a b/",  "file:///etc/passwd",
        "http://[::1/",          "gopher://1.2.3.4/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ASSERT_MSG(callback_check_url(bad[i], true, &t, err, sizeof err) == -EINVAL, "%s", bad[i]);
    char big[STORE_URL_MAX + 32];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "http://", 7);
    ASSERT_EQ(callback_check_url(big, true, &t, err, sizeof err), -EINVAL);
}

/* ---- one delivery ---------------------------------------------------------------- */

TEST(post_signed_and_verified_by_receiver)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%d/hook", rx.port); /* name, pinned */
    struct callback_options o = {
        .secret = SECRET, .secret_len = strlen(SECRET), .allow_private = true, .timeout_ms = 5000};
    const char *body = "{\"id\":\"x\",\"status\":\"completed\",\"s\":\"\\u00e9\"}";
    struct callback_attempt a;
    char err[ERR_LEN];
    int rc = callback_post(&o, url, "01ABC", 1, body, strlen(body), &a, err, sizeof err);
    ASSERT_MSG(rc == 0, "%s", err);
    ASSERT(a.ok);
    ASSERT_EQ(a.http_status, 200);
    ASSERT_EQ(rx_count(&rx), 1);
    /* the receiver's check, as docs/operations.md shows it */
    char want[HASH_SHA256_HEX];
    hash_hmac_sha256_hex(SECRET, strlen(SECRET), rx.req[0].body, rx.req[0].len, want);
    ASSERT_EQ(strncmp(rx.req[0].sig, "sha256=", 7), 0);
    ASSERT(hash_equal(rx.req[0].sig + 7, want, 64));
    ASSERT_EQ(rx.req[0].len, strlen(body));
    ASSERT_STREQ(rx.req[0].delivery, "01ABC.1");
    ASSERT_STREQ(rx.req[0].event, "evaluation.finished");
    /* a wrong key does not verify */
    hash_hmac_sha256_hex("other", 5, rx.req[0].body, rx.req[0].len, want);
    ASSERT(!hash_equal(rx.req[0].sig + 7, want, 64));
    rx_stop(&rx);
}

TEST(post_refused_without_allow_private_never_connects)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", rx.port);
    struct callback_options o = {.secret = SECRET, .secret_len = strlen(SECRET)};
    struct callback_attempt a;
    char err[ERR_LEN];
    ASSERT_EQ(callback_post(&o, url, "id", 1, "{}", 2, &a, err, sizeof err), -EPERM);
    ASSERT(!a.ok);
    ASSERT_EQ(a.http_status, 0);
    ASSERT_CONTAINS(a.error, "loopback");
    usleep(100000);
    ASSERT_EQ(rx_count(&rx), 0);
    rx_stop(&rx);
}

TEST(post_non_2xx_and_timeout)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    rx.statuses[0] = 503;
    rx.statuses[1] = -1; /* never answers */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    struct callback_options o = {.allow_private = true, .timeout_ms = 400};
    struct callback_attempt a;
    char err[ERR_LEN];
    ASSERT_EQ(callback_post(&o, url, "id", 1, "{}", 2, &a, err, sizeof err), -EPROTO);
    ASSERT_EQ(a.http_status, 503);
    ASSERT_STREQ(rx.req[0].sig, ""); /* no secret: unsigned */
    uint64_t t0 = time_mono_ns();
    ASSERT_EQ(callback_post(&o, url, "id", 2, "{}", 2, &a, err, sizeof err), -ETIMEDOUT);
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    ASSERT_MSG(ms >= 350 && ms < 5000, "timeout took %llu ms", (unsigned long long)ms);
    ASSERT_EQ(a.http_status, 0);
    rx_stop(&rx);
}

/* ---- the sender: the store is its queue ------------------------------------------ */


/* A finished evaluation with callback_url: inserted, claimed and finished
 * through the store like a worker does, so its delivery is pending. */
static int finished_eval(store_t *s, const char *cb_url, char id[STORE_ID_LEN])
{
    struct eval_record r = {0};
    r.language = "python";
    r.code = "print(1)";
    r.code_len = 8;
    r.callback_url = (char *)cb_url;
    bool existed;
    char err[ERR_LEN];
    int rc = store_insert(s, &r, id, &existed, NULL, err, sizeof err);
    if (rc < 0)
        return rc;
    struct eval_record c;
    if ((rc = store_claim(s, "test/w0", 60000, &c, err, sizeof err)) < 0)
        return rc;
    int attempt = c.attempts;
    bool same = !strcmp(c.id, id);
    store_record_clear(&c);
    if (!same)
        return -EIO;
    struct store_outcome o = {.status = EVAL_COMPLETED, .result_json = "{\"exit_code\":0}"};
    return store_finish(s, id, "test/w0", attempt, &o, err, sizeof err);
}

static int cb_state(store_t *s, const char *id, int *attempts)
{
    struct eval_record r;
    char err[ERR_LEN];
    if (store_get(s, id, &r, err, sizeof err) < 0)
        return -1;
    int st = r.callback_state;
    if (attempts)
        *attempts = r.callback_attempts;
    store_record_clear(&r);
    return st;
}

static bool wait_state(store_t *s, const char *id, int state, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        if (cb_state(s, id, NULL) == state)
            return true;
        usleep(10000);
    }
    return cb_state(s, id, NULL) == state;
}

static store_t *open_store_named(const char *name, char *url, size_t urllen)
{
    snprintf(url, urllen, "sqlite:%s/%s", test_tmpdir(), name);
    struct store_options o = {.flags = STORE_OPEN_MIGRATE};
    store_t *s = NULL;
    char err[ERR_LEN];
    if (store_open(url, &o, &s, err, sizeof err) < 0)
        fprintf(stderr, "    store_open: %s\n", err);
    return s;
}

static store_t *open_store(char *url, size_t urllen)
{
    return open_store_named("cb.db", url, urllen);
}

TEST(finish_makes_the_delivery_pending_in_the_same_commit)
{
    char db[512], err[ERR_LEN], id[STORE_ID_LEN], id2[STORE_ID_LEN];
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);
    ASSERT_EQ(finished_eval(s, "http://127.0.0.1:9/hook", id), 0);
    ASSERT_EQ(finished_eval(s, NULL, id2), 0); /* no callback_url: nothing owed */
    struct eval_record r;
    ASSERT_EQ(store_get(s, id, &r, err, sizeof err), 0);
    ASSERT_EQ(r.callback_state, STORE_CALLBACK_PENDING);
    ASSERT_EQ(r.callback_attempts, 0);
    ASSERT_EQ(r.callback_next_ns, r.finished_ns);
    store_record_clear(&r);
    ASSERT_EQ(cb_state(s, id2, NULL), STORE_CALLBACK_NONE);
    store_close(s);
}

TEST(sender_retries_until_success_and_records_attempts)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    rx.statuses[0] = 500; /* fails first, then succeeds */
    rx.statuses[1] = 502;
    char url[128], db[512], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", rx.port);
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);

    struct callback_options o = {.secret = SECRET,
                                 .secret_len = strlen(SECRET),
                                 .allow_private = true,
                                 .attempts = 5,
                                 .backoff_ms = 50,
                                 .timeout_ms = 5000,
                                 .poll_ms = 60000}; /* only notify or due times wake it */
    callback_sender_t *cs;
    ASSERT_EQ(callback_sender_start(&o, db, &cs, err, sizeof err), 0);
    char id[STORE_ID_LEN];
    ASSERT_EQ(finished_eval(s, url, id), 0);
    uint64_t t0 = time_mono_ns();
    callback_sender_notify(cs);
    ASSERT(wait_count(&rx, 3, 20000));
    uint64_t ms = (time_mono_ns() - t0) / 1000000;
    /* backoff 50 ms then 100 ms (+-10%) */
    ASSERT_MSG(ms >= 130, "three attempts after %llu ms: no backoff?", (unsigned long long)ms);
    ASSERT(wait_state(s, id, STORE_CALLBACK_DELIVERED, 5000));
    for (int i = 0; i < 200 && callback_sender_pending(cs) > 0; i++)
        usleep(10000);
    ASSERT_EQ(callback_sender_pending(cs), 0);
    ASSERT_EQ(callback_sender_stop(cs, 0), 0);
    usleep(200000);
    ASSERT_EQ(rx_count(&rx), 3); /* no delivery after success */
    char want_delivery[64];
    snprintf(want_delivery, sizeof want_delivery, "%s.3", id);
    ASSERT_STREQ(rx.req[2].delivery, want_delivery);
    for (int i = 0; i < 3; i++) {
        char want[HASH_SHA256_HEX];
        hash_hmac_sha256_hex(SECRET, strlen(SECRET), rx.req[i].body, rx.req[i].len, want);
        ASSERT(hash_equal(rx.req[i].sig + 7, want, 64));
        /* the body is the record at that attempt: the attempts before it */
        json_t *body = json_loads(rx.req[i].body, 0, NULL);
        ASSERT_MSG(body, "body %d is not JSON", i);
        ASSERT_STREQ(json_string_value(json_object_get(body, "id")), id);
        ASSERT_EQ(json_array_size(json_object_get(body, "callbacks")), (size_t)i);
        json_decref(body);
    }

    struct eval_record r;
    ASSERT_EQ(store_get(s, id, &r, err, sizeof err), 0);
    ASSERT_EQ(r.callback_attempts, 3);
    ASSERT_EQ(r.callback_next_ns, 0);
    json_t *cbs = json_loads(r.callbacks_json ? r.callbacks_json : "null", 0, NULL);
    ASSERT_MSG(json_is_array(cbs) && json_array_size(cbs) == 3, "callbacks: %s",
               r.callbacks_json ? r.callbacks_json : "(null)");
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(cbs, 0), "http_status")), 500);
    ASSERT(json_is_false(json_object_get(json_array_get(cbs, 0), "ok")));
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(cbs, 2), "http_status")), 200);
    ASSERT(json_is_true(json_object_get(json_array_get(cbs, 2), "ok")));
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(cbs, 2), "attempt")), 3);
    json_decref(cbs);
    store_record_clear(&r);
    store_close(s);
    rx_stop(&rx);
}

TEST(sender_gives_up_after_attempts_and_on_refusal)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    for (int i = 0; i < RX_MAX; i++)
        rx.statuses[i] = 500;
    char url[128], db[512], db2[512], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);
    char id[STORE_ID_LEN], id2[STORE_ID_LEN];
    ASSERT_EQ(finished_eval(s, url, id), 0);
    struct callback_options o = {.allow_private = true, .attempts = 3, .backoff_ms = 20};
    callback_sender_t *cs;
    ASSERT_EQ(callback_sender_start(&o, db, &cs, err, sizeof err), 0);
    ASSERT(wait_state(s, id, STORE_CALLBACK_FAILED, 10000));
    ASSERT_EQ(callback_sender_stop(cs, 0), 0);
    ASSERT_EQ(rx_count(&rx), 3);
    ASSERT_EQ(cb_state(s, id, NULL), STORE_CALLBACK_FAILED);

    /* refused by the guard once private addresses are not allowed: one
     * recorded attempt, no retry, and no connection (its own database, so
     * the sender above could never try it) */
    store_t *s2 = open_store_named("cb2.db", db2, sizeof db2);
    ASSERT(s2);
    ASSERT_EQ(finished_eval(s2, "http://10.0.0.1/", id2), 0);
    callback_sender_t *cs2;
    struct callback_options o2 = {.attempts = 3, .backoff_ms = 20};
    ASSERT_EQ(callback_sender_start(&o2, db2, &cs2, err, sizeof err), 0);
    ASSERT(wait_state(s2, id2, STORE_CALLBACK_FAILED, 10000));
    ASSERT_EQ(callback_sender_stop(cs2, 0), 0);
    struct eval_record r;
    ASSERT_EQ(store_get(s2, id2, &r, err, sizeof err), 0);
    ASSERT_EQ(r.callback_attempts, 1);
    json_t *cbs = json_loads(r.callbacks_json ? r.callbacks_json : "null", 0, NULL);
    ASSERT_MSG(json_is_array(cbs) && json_array_size(cbs) == 1, "%s", r.callbacks_json);
    ASSERT_CONTAINS(json_string_value(json_object_get(json_array_get(cbs, 0), "error")), "private");
    json_decref(cbs);
    store_record_clear(&r);
    store_close(s2);
    store_close(s);
    rx_stop(&rx);
}

/* A stop leaves the waiting retry in the store; a new sender (a restarted
 * node) resumes it with the attempt count and the backoff it had. */
TEST(sender_stop_leaves_pending_and_a_new_sender_resumes)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    rx.statuses[0] = 500;
    char url[128], db[512], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);
    char id[STORE_ID_LEN];
    ASSERT_EQ(finished_eval(s, url, id), 0);
    struct callback_options o = {.secret = SECRET,
                                 .secret_len = strlen(SECRET),
                                 .allow_private = true,
                                 .attempts = 5,
                                 .backoff_ms = 1500,
                                 .owner = "node-a"};
    callback_sender_t *cs;
    ASSERT_EQ(callback_sender_start(&o, db, &cs, err, sizeof err), 0);
    ASSERT(wait_count(&rx, 1, 10000));
    int attempts = 0;
    for (int i = 0; i < 500 && (cb_state(s, id, &attempts), attempts < 1); i++)
        usleep(10000);
    ASSERT_EQ(attempts, 1);
    uint64_t t0 = time_mono_ns();
    ASSERT_EQ(callback_sender_stop(cs, (int64_t)time_now_ns() + 200000000), 1);
    ASSERT((time_mono_ns() - t0) / 1000000 < 1000); /* did not wait for the retry */
    ASSERT_EQ(rx_count(&rx), 1);
    struct eval_record r;
    ASSERT_EQ(store_get(s, id, &r, err, sizeof err), 0);
    ASSERT_EQ(r.callback_state, STORE_CALLBACK_PENDING);
    ASSERT_EQ(r.callback_attempts, 1);
    ASSERT_MSG(r.callback_next_ns > (int64_t)time_now_ns(), "the retry is not in the future");
    ASSERT_MSG(!strstr(r.callbacks_json, "abandoned"), "%s", r.callbacks_json);
    store_record_clear(&r);

    ASSERT_EQ(callback_sender_start(&o, db, &cs, err, sizeof err), 0);
    ASSERT_EQ(callback_sender_pending(cs), 1); /* counted at start */
    ASSERT(wait_state(s, id, STORE_CALLBACK_DELIVERED, 10000));
    ASSERT_EQ(callback_sender_stop(cs, 0), 0);
    ASSERT_EQ(rx_count(&rx), 2);
    char want_delivery[64];
    snprintf(want_delivery, sizeof want_delivery, "%s.2", id);
    ASSERT_STREQ(rx.req[1].delivery, want_delivery);
    char want[HASH_SHA256_HEX];
    hash_hmac_sha256_hex(SECRET, strlen(SECRET), rx.req[1].body, rx.req[1].len, want);
    ASSERT(hash_equal(rx.req[1].sig + 7, want, 64));
    ASSERT_EQ(store_get(s, id, &r, err, sizeof err), 0);
    json_t *cbs = json_loads(r.callbacks_json, 0, NULL);
    ASSERT_MSG(json_array_size(cbs) == 2, "%s", r.callbacks_json);
    ASSERT(json_is_true(json_object_get(json_array_get(cbs, 1), "ok")));
    json_decref(cbs);
    store_record_clear(&r);
    store_close(s);
    rx_stop(&rx);
}

/* Two senders (two nodes) on one store: every delivery goes out once. */
TEST(two_senders_deliver_each_evaluation_once)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    char url[128], db[512], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);
    enum { N = 12 };
    char ids[N][STORE_ID_LEN];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(finished_eval(s, url, ids[i]), 0);
    struct callback_options a = {.allow_private = true, .threads = 3, .owner = "node-a"};
    struct callback_options b = {.allow_private = true, .threads = 3, .owner = "node-b"};
    callback_sender_t *ca, *cb;
    ASSERT_EQ(callback_sender_start(&a, db, &ca, err, sizeof err), 0);
    ASSERT_EQ(callback_sender_start(&b, db, &cb, err, sizeof err), 0);
    for (int i = 0; i < N; i++)
        ASSERT(wait_state(s, ids[i], STORE_CALLBACK_DELIVERED, 10000));
    ASSERT_EQ(callback_sender_stop(ca, 0), 0);
    ASSERT_EQ(callback_sender_stop(cb, 0), 0);
    ASSERT_EQ(rx_count(&rx), N);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            ASSERT_MSG(strcmp(rx.req[i].delivery, rx.req[j].delivery) != 0,
                       "delivery %s sent twice", rx.req[i].delivery);
    store_close(s);
    rx_stop(&rx);
}

static int render_fails(const struct eval_record *r, struct buf *b)
{
    return -E2BIG;
}

TEST(a_record_that_cannot_be_rendered_fails_without_a_request)
{
    struct receiver rx;
    ASSERT_EQ(rx_start(&rx), 0);
    char url[128], db[512], err[ERR_LEN], id[STORE_ID_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx.port);
    store_t *s = open_store(db, sizeof db);
    ASSERT(s);
    ASSERT_EQ(finished_eval(s, url, id), 0);
    struct callback_options o = {.allow_private = true, .render = render_fails};
    callback_sender_t *cs;
    ASSERT_EQ(callback_sender_start(&o, db, &cs, err, sizeof err), 0);
    ASSERT(wait_state(s, id, STORE_CALLBACK_FAILED, 10000));
    ASSERT_EQ(callback_sender_stop(cs, 0), 0);
    ASSERT_EQ(rx_count(&rx), 0);
    struct eval_record r;
    ASSERT_EQ(store_get(s, id, &r, err, sizeof err), 0);
    ASSERT_CONTAINS(r.callbacks_json, "cannot render");
    store_record_clear(&r);
    store_close(s);
    rx_stop(&rx);
}

TEST(sender_needs_the_store)
{
    char err[ERR_LEN];
    struct callback_options o = {0};
    callback_sender_t *cs = NULL;
    ASSERT_EQ(callback_sender_start(&o, NULL, &cs, err, sizeof err), -EINVAL);
    ASSERT(!cs);
    ASSERT_CONTAINS(err, "store");
}

TEST(record_json_is_the_result_record_plus_service_fields)
{
    struct eval_record r = {0};
    snprintf(r.id, sizeof r.id, "01HZZZZZZZZZZZZZZZZZZZZZZZ");
    r.status = EVAL_CANCELLED;
    r.language = "python";
    r.code_len = 8;
    r.metadata_json = "{\"submitter\":\"team-a\"}";
    r.result_json =
        "{\"eval_id\":\"01HZZZZZZZZZZZZZZZZZZZZZZZ\",\"status\":\"killed\","
        "\"exit_code\":null,\"stdout\":\"partial\",\"resources\":{\"cpu_seconds\":0.1}}";
    r.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    r.created_ns = 1700000000000000000;
    r.attempts = 1;
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 20);
    ASSERT_EQ(callback_record_json(&r, &b), 0);
    json_t *o = json_loadb(b.data, b.len, 0, NULL);
    ASSERT(json_is_object(o));
    ASSERT_STREQ(json_string_value(json_object_get(o, "status")), "cancelled");
    ASSERT_STREQ(json_string_value(json_object_get(o, "stdout")), "partial");
    ASSERT_STREQ(json_string_value(json_object_get(o, "id")), r.id);
    ASSERT_STREQ(json_string_value(json_object_get(o, "trace_id")),
                 "0af7651916cd43dd8448eb211c80319c");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(o, "metadata"), "submitter")),
                 "team-a");
    ASSERT_STREQ(json_string_value(json_object_get(o, "created_at")),
                 "2023-11-14T22:13:20.000000000Z");
    ASSERT(json_is_null(json_object_get(o, "finished_at")));
    ASSERT(!json_object_get(o, "code"));
    json_decref(o);
    buf_free(&b);
}
