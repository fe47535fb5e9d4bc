/* api_cases.h - the HTTP API suite, shared by every store backend:
 * test_api.c runs it on a SQLite file, test_api_pg.c on a throwaway
 * PostgreSQL cluster. A real server (libmicrohttpd) on a loopback port, real
 * clients (libcurl through curl_dl, Python's urllib, raw sockets), the real
 * promtool. No workers run here (the worker tests cover execution); readiness
 * is checked with no_workers_ok.
 *
 * Not a header of the library: included once by each backend's test file,
 * which first defines
 *   void backend_db_url(char *out, size_t cap)  the store URL of this test's
 *       database: the same one on every call within a test, a fresh one per
 *       test (tests run in forked processes, one at a time)
 *   BACKEND_NAME  what /readyz reports as checks.database.backend */
#ifndef CLEARBOX_TEST_API_CASES_H
#define CLEARBOX_TEST_API_CASES_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_support.h"
#include "service/api.h"
#include "service/config.h"
#include "telemetry/log.h"
#include "telemetry/telemetry.h"
#include "telemetry/trace.h"
#include "test.h"
#include "util/curl_dl.h"

static int g_port;

/* ---- the server -------------------------------------------------------------- */

static void base_config(struct service_config *c)
{
    config_defaults(c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:0");
    backend_db_url(c->db_url, sizeof c->db_url);
    c->audit_log[0] = '\0';
}

static api_t *start(const struct service_config *c)
{
    log_set_level(LOG_WARNING);
    struct api_options o = {.cfg = c, .no_workers_ok = true};
    api_t *a = NULL;
    char err[256];
    int rc = api_start(&o, &a, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "api_start: %s\n", err);
        return NULL;
    }
    g_port = api_port(a);
    return a;
}

/* ---- a libcurl client ---------------------------------------------------------- */

struct resp {
    long status;
    char *body;
    size_t len;
    char headers[8192];
    size_t hlen;
    json_t *json;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t k = sz * n;
    char *nb = realloc(r->body, r->len + k + 1);
    if (!nb)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = '\0';
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, k);
        r->hlen += k;
        r->headers[r->hlen] = '\0';
    }
    return k;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* One request on handle h (NULL: a new one). headers NULL-terminated. */
static int request_on(CURL *h, const char *method, const char *path, const char *const *headers,
                      const char *body, long len, struct resp *r)
{
    const struct curl_dl *c = curl_dl(NULL, 0);
    if (!c)
        return -1;
    memset(r, 0, sizeof *r);
    bool own = !h;
    if (own)
        h = c->easy_init();
    char url[2600];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g_port, path);
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = c->slist_append(hl, headers[i]);
    c->easy_setopt(h, CURLOPT_URL, url);
    c->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    c->easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    c->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    c->easy_setopt(h, CURLOPT_WRITEDATA, r);
    c->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    c->easy_setopt(h, CURLOPT_HEADERDATA, r);
    c->easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    c->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        c->easy_setopt(h, CURLOPT_POSTFIELDS, body);
        c->easy_setopt(h, CURLOPT_POSTFIELDSIZE, len >= 0 ? len : (long)strlen(body));
    } else {
        c->easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
        c->easy_setopt(h, CURLOPT_HTTPGET, !strcmp(method, "GET") ? 1L : 0L);
        c->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = c->easy_perform(h);
    if (rc == CURLE_OK)
        c->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    else
        fprintf(stderr, "curl: %s\n", c->easy_strerror(rc));
    c->slist_free_all(hl);
    if (own)
        c->easy_cleanup(h);
    if (r->body)
        r->json = json_loads(r->body, 0, NULL);
    return rc == CURLE_OK ? 0 : -1;
}

static const char *const JSON_CT[] = {"Content-Type: application/json", NULL};

static int request(const char *method, const char *path, const char *const *headers,
                   const char *body, struct resp *r)
{
    return request_on(NULL, method, path, headers, body, -1, r);
}

static const char *jstr(json_t *o, const char *path)
{
    /* "a.b.c" member path */
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", path);
    json_t *cur = o;
    for (char *save = NULL, *k = strtok_r(tmp, ".", &save); k && cur;
         k = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, k);
    return json_string_value(cur);
}

static json_t *jget(json_t *o, const char *path)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", path);
    json_t *cur = o;
    for (char *save = NULL, *k = strtok_r(tmp, ".", &save); k && cur;
         k = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, k);
    return cur;
}

static int submit(const char *body, const char *const *headers, char id[32])
{
    struct resp r;
    if (request("POST", "/v1/evaluations", headers ? headers : JSON_CT, body, &r) < 0)
        return -1;
    int st = (int)r.status;
    if (id) {
        const char *s = jstr(r.json, "id");
        snprintf(id, 32, "%s", s ? s : "");
    }
    resp_free(&r);
    return st;
}

static int count_items(const char *query)
{
    struct resp r;
    char path[256];
    snprintf(path, sizeof path, "/v1/evaluations?limit=1000%s", query ? query : "");
    if (request("GET", path, NULL, NULL, &r) < 0 || r.status != 200) {
        resp_free(&r);
        return -1;
    }
    int n = (int)json_array_size(json_object_get(r.json, "items"));
    resp_free(&r);
    return n;
}

#define PY "{\"code\":\"print(1)\",\"language\":\"python\"}"

/* ---- tests ------------------------------------------------------------------------ */

TEST(health_and_readiness)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(request("GET", "/healthz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STREQ(jstr(r.json, "status"), "ok");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_MSG(r.status == 200, "readyz %ld: %s", r.status, r.body);
    ASSERT_STREQ(jstr(r.json, "status"), "ready");
    ASSERT(json_is_true(jget(r.json, "checks.database.ok")));
    ASSERT_STREQ(jstr(r.json, "checks.database.backend"), BACKEND_NAME); /* the one under test */
    ASSERT(json_is_true(jget(r.json, "checks.queue.ok")));
    ASSERT(jget(r.json, "checks.sandbox.ok") && jget(r.json, "checks.workers.ok"));
    resp_free(&r);
    ASSERT_EQ(request("POST", "/healthz", JSON_CT, "{}", &r), 0);
    ASSERT_EQ(r.status, 405);
    ASSERT_CONTAINS(r.headers, "Allow: GET");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/nope", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 404);
    ASSERT_STREQ(jstr(r.json, "error.code"), "not_found");
    resp_free(&r);
    api_stop(a);
}

TEST(submit_then_get_the_full_record)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    const char *body = "{\"code\":\"print('hi')\",\"language\":\"python3\",\"stdin\":\"x\","
                       "\"args\":[\"a\"],\"files\":[{\"path\":\"d.txt\",\"content_base64\":\"aGk=\"}],"
                       "\"priority\":4,\"memory_mb\":64,\"metadata\":{\"submitter\":\"alice\"}}";
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, body, &r), 0);
    ASSERT_MSG(r.status == 202, "%ld %s", r.status, r.body);
    ASSERT_STREQ(jstr(r.json, "status"), "queued");
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "queue_position")), 1);
    char id[32];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    ASSERT_EQ(strlen(id), 26);
    ASSERT_CONTAINS(r.headers, "Location: /v1/evaluations/");
    resp_free(&r);

    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT(r.json);
    ASSERT_STREQ(jstr(r.json, "id"), id);
    ASSERT_STREQ(jstr(r.json, "eval_id"), id);
    ASSERT_STREQ(jstr(r.json, "status"), "queued");
    ASSERT_STREQ(jstr(r.json, "language"), "python");
    ASSERT_STREQ(jstr(r.json, "code"), "print('hi')");
    ASSERT_STREQ(jstr(r.json, "stdin"), "x");
    ASSERT_STREQ(jstr(r.json, "submitter"), "alice");
    ASSERT_EQ(json_integer_value(jget(r.json, "priority")), 4);
    ASSERT_EQ(json_integer_value(jget(r.json, "limits.memory_max_bytes")), 64 << 20);
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "files"), 0), "path")), "d.txt");
    ASSERT_EQ(strlen(jstr(r.json, "trace_id")), 32);
    ASSERT_EQ(strlen(jstr(r.json, "traceparent")), 55);
    ASSERT_EQ(json_integer_value(jget(r.json, "max_attempts")), c.max_attempts);
    ASSERT(json_is_null(jget(r.json, "exit_code")));
    ASSERT(json_is_null(jget(r.json, "finished_at")));
    ASSERT(json_is_array(jget(r.json, "security_events")));
    ASSERT(jstr(r.json, "created_at") && jstr(r.json, "queued_at"));
    resp_free(&r);

    ASSERT_EQ(request("GET", "/v1/evaluations/01ARZ3NDEKTSV4RRFFQ69G5FAV", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 404);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/v1/evaluations/not-an-id", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 404);
    resp_free(&r);
    ASSERT_EQ(request("DELETE", path, NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 405);
    resp_free(&r);
    api_stop(a);
}

TEST(idempotency_key_returns_the_first_evaluation)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    const char *h1[] = {"Content-Type: application/json", "Idempotency-Key: k-1", NULL};
    const char *h2[] = {"Content-Type: application/json", "Idempotency-Key: k-2", NULL};
    char id1[32], id2[32], id3[32];
    ASSERT_EQ(submit(PY, h1, id1), 202);
    ASSERT_EQ(submit(PY, h1, id2), 200); /* replay */
    ASSERT_STREQ(id1, id2);
    ASSERT_EQ(submit(PY, h2, id3), 202);
    ASSERT(strcmp(id1, id3) != 0);
    ASSERT_EQ(count_items(NULL), 2);
    const char *bad[] = {"Content-Type: application/json", "Idempotency-Key: a b", NULL};
    ASSERT_EQ(submit(PY, bad, NULL), 400);
    ASSERT_EQ(count_items(NULL), 2);
    api_stop(a);
}

TEST(traceparent_makes_submit_a_child_span_and_is_stored)
{
    char tf[600];
    snprintf(tf, sizeof tf, "%s/spans.jsonl", test_tmpdir());
    struct telemetry_options to = {.trace_file = tf, .no_process_metrics = true};
    char err[256];
    ASSERT_MSG(telemetry_init(&to, err, sizeof err) == 0, "%s", err);
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    const char *h[] = {"Content-Type: application/json",
                       "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                       "tracestate: vendor=x", NULL};
    char id[32];
    ASSERT_EQ(submit(PY, h, id), 202);
    struct resp r;
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    ASSERT_STREQ(jstr(r.json, "trace_id"), "0af7651916cd43dd8448eb211c80319c");
    const char *tp = jstr(r.json, "traceparent");
    ASSERT(tp && !strncmp(tp, "00-0af7651916cd43dd8448eb211c80319c-", 36));
    ASSERT(strncmp(tp + 36, "b7ad6b7169203331", 16) != 0); /* our span, not the client's */
    char span_id[17];
    memcpy(span_id, tp + 36, 16);
    span_id[16] = '\0';
    resp_free(&r);
    /* a bad traceparent starts a new trace (W3C: ignore it) */
    const char *hb[] = {"Content-Type: application/json", "traceparent: garbage", NULL};
    char id2[32];
    ASSERT_EQ(submit(PY, hb, id2), 202);
    api_stop(a);
    ASSERT_EQ(trace_flush(10000), 0);
    FILE *f = fopen(tf, "r");
    ASSERT(f);
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (getline(&line, &cap, f) > 0)
        if (strstr(line, "evaluation.submit") && strstr(line, span_id) &&
            strstr(line, "b7ad6b7169203331") && strstr(line, id))
            found = true;
    free(line);
    fclose(f);
    ASSERT_MSG(found, "no evaluation.submit span with parent b7ad6b7169203331 in %s", tf);
}

TEST(batch_accepts_valid_items_and_reports_each_error)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    const char *body = "{\"evaluations\":[" PY ",{\"code\":\"x\",\"language\":\"cobol\"},"
                       "{\"code\":\"echo hi\",\"language\":\"sh\",\"priority\":2}]}";
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, body, &r), 0);
    ASSERT_MSG(r.status == 202, "%ld %s", r.status, r.body);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "accepted")), 2);
    ASSERT_EQ(json_integer_value(json_object_get(r.json, "rejected")), 1);
    json_t *items = json_object_get(r.json, "items");
    ASSERT_EQ(json_array_size(items), 3);
    ASSERT_STREQ(jstr(json_array_get(items, 0), "status"), "queued");
    ASSERT_STREQ(jstr(json_array_get(items, 1), "error.code"), "unknown_language");
    ASSERT_STREQ(jstr(json_array_get(items, 1), "error.field"), "evaluations[1].language");
    ASSERT_EQ(strlen(jstr(json_array_get(items, 2), "id")), 26);
    /* each item's place when it was stored: the priority-2 item goes ahead */
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(items, 0), "queue_position")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(json_array_get(items, 2), "queue_position")), 1);
    resp_free(&r);
    ASSERT_EQ(count_items(NULL), 2);

    /* a batch retried with its Idempotency-Key: the same ids, nothing new */
    const char *hk[] = {"Content-Type: application/json", "Idempotency-Key: batch-1", NULL};
    const char *two = "{\"evaluations\":[" PY "," PY "]}";
    char first[2][32];
    for (int round = 0; round < 2; round++) {
        ASSERT_EQ(request("POST", "/v1/evaluations/batch", hk, two, &r), 0);
        ASSERT_MSG(r.status == 202, "%ld %s", r.status, r.body);
        items = json_object_get(r.json, "items");
        for (size_t i = 0; i < 2; i++) {
            const char *id = jstr(json_array_get(items, i), "id");
            ASSERT(id && strlen(id) == 26);
            if (round == 0)
                snprintf(first[i], sizeof first[i], "%s", id);
            else
                ASSERT_STREQ(id, first[i]);
        }
        ASSERT(strcmp(first[0], first[1]) != 0);
        resp_free(&r);
        ASSERT_EQ(count_items(NULL), 4);
    }

    /* more than 100, none, or not the documented envelope: 422, nothing stored */
    size_t cap = 200 * sizeof PY + 64;
    char *big = malloc(cap);
    size_t n = (size_t)snprintf(big, cap, "{\"evaluations\":[");
    for (int i = 0; i < 101; i++)
        n += (size_t)snprintf(big + n, cap - n, "%s%s", i ? "," : "", PY);
    snprintf(big + n, cap - n, "]}");
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, big, &r), 0);
    ASSERT_EQ(r.status, 422);
    resp_free(&r);
    free(big);
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, "{\"evaluations\":[]}", &r), 0);
    ASSERT_EQ(r.status, 422);
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, "[" PY "]", &r), 0);
    ASSERT_EQ(r.status, 422);
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", NULL, "{}", &r), 0);
    ASSERT_EQ(r.status, 415);
    resp_free(&r);
    ASSERT_EQ(count_items(NULL), 4);
    api_stop(a);
}

TEST(list_pages_newest_first_with_cursors_and_filters)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    char ids[7][32];
    for (int i = 0; i < 7; i++)
        ASSERT_EQ(submit(PY, NULL, ids[i]), 202);
    char path[256] = "/v1/evaluations?limit=3";
    int seen = 0;
    for (int page = 0; page < 4; page++) {
        struct resp r;
        ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
        ASSERT_EQ(r.status, 200);
        json_t *items = json_object_get(r.json, "items");
        for (size_t i = 0; i < json_array_size(items); i++, seen++) {
            ASSERT_STREQ(jstr(json_array_get(items, i), "id"), ids[6 - seen]);
            ASSERT(json_object_get(json_array_get(items, i), "code") == NULL);
        }
        json_t *next = json_object_get(r.json, "next_cursor");
        if (json_is_null(next)) {
            resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/v1/evaluations?limit=3&cursor=%s", json_string_value(next));
        resp_free(&r);
    }
    ASSERT_EQ(seen, 7);
    /* filters and bad parameters */
    struct resp r;
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", ids[0]);
    ASSERT_EQ(request("POST", path, NULL, NULL, &r), 0);
    resp_free(&r);
    ASSERT_EQ(count_items("&status=cancelled"), 1);
    ASSERT_EQ(count_items("&status=queued"), 6);
    ASSERT_EQ(request("GET", "/v1/evaluations?status=bogus", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 400);
    ASSERT_STREQ(jstr(r.json, "error.field"), "status");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/v1/evaluations?limit=0", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 400);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/v1/evaluations?limit=5000", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 400);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/v1/evaluations?cursor=zzzz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 400);
    ASSERT_STREQ(jstr(r.json, "error.field"), "cursor");
    resp_free(&r);
    api_stop(a);
}

TEST(cancel_queued_then_conflict_and_unknown)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    char id[32];
    ASSERT_EQ(submit(PY, NULL, id), 202);
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", id);
    struct resp r;
    ASSERT_EQ(request("POST", path, NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_STREQ(jstr(r.json, "status"), "cancelled");
    resp_free(&r);
    ASSERT_EQ(request("POST", path, NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 409);
    ASSERT_STREQ(jstr(r.json, "error.code"), "already_finished");
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    ASSERT_STREQ(jstr(r.json, "status"), "cancelled");
    ASSERT(jstr(r.json, "finished_at"));
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel", NULL, NULL, &r),
              0);
    ASSERT_EQ(r.status, 404);
    resp_free(&r);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0); /* still there */
    resp_free(&r);
    api_stop(a);
}

TEST(sse_streams_status_events_then_end_and_resumes)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    char id[32];
    ASSERT_EQ(submit(PY, NULL, id), 202);
    char path[160];
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", id);
    struct resp r;
    ASSERT_EQ(request("POST", path, NULL, NULL, &r), 0);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/evaluations/%s/events", id);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_CONTAINS(r.headers, "text/event-stream");
    ASSERT_CONTAINS(r.body, "retry: 1000");
    ASSERT_CONTAINS(r.body, "id: 1\nevent: status\ndata: {\"id\":\"");
    ASSERT_CONTAINS(r.body, "\"status\":\"queued\"");
    ASSERT_CONTAINS(r.body, "id: 2\nevent: status\n");
    ASSERT_CONTAINS(r.body, "\"status\":\"cancelled\"");
    const char *end = strstr(r.body, "event: end");
    ASSERT(end && end > strstr(r.body, "id: 2"));
    resp_free(&r);
    const char *h[] = {"Last-Event-ID: 1", NULL};
    ASSERT_EQ(request("GET", path, h, NULL, &r), 0);
    ASSERT(!strstr(r.body, "id: 1\n"));
    ASSERT_CONTAINS(r.body, "id: 2\n");
    ASSERT_CONTAINS(r.body, "event: end");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/v1/evaluations/01ARZ3NDEKTSV4RRFFQ69G5FAV/events", NULL, NULL, &r),
              0);
    ASSERT_EQ(r.status, 404);
    resp_free(&r);
    const char *hb[] = {"Last-Event-ID: x", NULL};
    ASSERT_EQ(request("GET", path, hb, NULL, &r), 0);
    ASSERT_EQ(r.status, 400);
    resp_free(&r);
    api_stop(a);
}

/* A live stream sees a change made after it opened. */
struct later {
    char id[32];
};
static void *cancel_later(void *arg)
{
    struct later *l = arg;
    usleep(600 * 1000);
    char path[160];
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", l->id);
    struct resp r;
    request("POST", path, NULL, NULL, &r);
    resp_free(&r);
    return NULL;
}

TEST(sse_live_stream_sees_a_later_change)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct later l;
    ASSERT_EQ(submit(PY, NULL, l.id), 202);
    pthread_t th;
    pthread_create(&th, NULL, cancel_later, &l);
    char path[160];
    snprintf(path, sizeof path, "/v1/evaluations/%s/events", l.id);
    struct resp r;
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    pthread_join(th, NULL);
    ASSERT_CONTAINS(r.body, "\"status\":\"cancelled\"");
    ASSERT_CONTAINS(r.body, "event: end");
    resp_free(&r);
    api_stop(a);
}

static struct service_config small_body_config(void)
{
    struct service_config c;
    base_config(&c);
    c.max_body_bytes = 64 * 1024;
    /* bodies below are 4 MB: more than the loopback socket buffers hold, so
     * without the lingering read the client would get a reset (measured:
     * urllib raises BrokenPipeError when the server answers at once) */
    c.discard_body_max_bytes = 8 * 1024 * 1024;
    return c;
}

TEST(oversized_body_gets_a_readable_413_from_curl)
{
    struct service_config c = small_body_config();
    api_t *a = start(&c);
    ASSERT(a);
    size_t n = 4 * 1024 * 1024;
    char *body = malloc(n + 1);
    memset(body, 'x', n);
    body[n] = '\0';
    const struct curl_dl *cd = curl_dl(NULL, 0);
    ASSERT(cd);
    CURL *h = cd->easy_init();
    /* no Expect: the whole body goes first, as most clients do */
    const char *noexp[] = {"Content-Type: application/json", "Expect:", NULL};
    struct resp r;
    ASSERT_EQ(request_on(h, "POST", "/v1/evaluations", noexp, body, (long)n, &r), 0);
    ASSERT_EQ(r.status, 413);
    ASSERT_STREQ(jstr(r.json, "error.code"), "body_too_large");
    resp_free(&r);
    /* the connection stays usable: the body was read and dropped */
    ASSERT_EQ(request_on(h, "POST", "/v1/evaluations", JSON_CT, PY, -1, &r), 0);
    ASSERT_EQ(r.status, 202);
    resp_free(&r);
    cd->easy_cleanup(h);
    /* chunked, no length: counted while it arrives, then discarded */
    const char *chunked[] = {"Content-Type: application/json", "Transfer-Encoding: chunked",
                             "Expect:", NULL};
    ASSERT_EQ(request_on(NULL, "POST", "/v1/evaluations", chunked, body, (long)n, &r), 0);
    ASSERT_EQ(r.status, 413);
    ASSERT_STREQ(jstr(r.json, "error.code"), "body_too_large");
    resp_free(&r);
    /* Expect: 100-continue: answered before the body is sent */
    const char *exp[] = {"Content-Type: application/json", "Expect: 100-continue", NULL};
    ASSERT_EQ(request_on(NULL, "POST", "/v1/evaluations", exp, body, (long)n, &r), 0);
    ASSERT_EQ(r.status, 413);
    resp_free(&r);
    free(body);
    /* past the discard cap, with Expect: still a 413 */
    n = 9 * 1024 * 1024;
    body = malloc(n);
    memset(body, 'y', n);
    ASSERT_EQ(request_on(NULL, "POST", "/v1/evaluations", exp, body, (long)n, &r), 0);
    ASSERT_EQ(r.status, 413);
    resp_free(&r);
    free(body);
    ASSERT_EQ(count_items(NULL), 1);
    api_stop(a);
}

TEST(oversized_body_gets_a_readable_413_from_python_urllib)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return test_skip("/usr/bin/python3 not installed");
    struct service_config c = small_body_config();
    api_t *a = start(&c);
    ASSERT(a);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import urllib.request, urllib.error\n"
             "req = urllib.request.Request(\"http://127.0.0.1:%d/v1/evaluations\", "
             "data=b\"x\" * 4000000, headers={\"Content-Type\": \"application/json\"}, "
             "method=\"POST\")\n"
             "try:\n"
             "    urllib.request.urlopen(req, timeout=60)\n"
             "    print(\"no error\")\n"
             "except urllib.error.HTTPError as e:\n"
             "    print(e.code, e.read().decode())\n"
             "except Exception as e:\n"
             "    print(\"EXC\", repr(e))\n"
             "' 2>&1",
             g_port);
    FILE *p = popen(cmd, "r");
    ASSERT(p);
    char out[1024] = "";
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    pclose(p);
    ASSERT_MSG(!strncmp(out, "413 ", 4), "urllib got: %s", out);
    ASSERT_CONTAINS(out, "body_too_large");
    api_stop(a);
}

TEST(bad_requests_get_4xx_and_store_nothing)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, "{\"code\": ", &r), 0);
    ASSERT_EQ(r.status, 400);
    ASSERT_STREQ(jstr(r.json, "error.code"), "invalid_json");
    ASSERT(jstr(r.json, "error.message"));
    resp_free(&r);
    const char *text[] = {"Content-Type: text/plain", NULL};
    ASSERT_EQ(request("POST", "/v1/evaluations", text, PY, &r), 0);
    ASSERT_EQ(r.status, 415);
    ASSERT_STREQ(jstr(r.json, "error.code"), "unsupported_media_type");
    resp_free(&r);
    const char *charset[] = {"Content-Type: application/json; charset=utf-8", NULL};
    ASSERT_EQ(submit(PY, charset, NULL), 202); /* parameters are fine */
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT,
                      "{\"code\":\"print(\xff)\",\"language\":\"python\"}", &r), 0);
    ASSERT_EQ(r.status, 400);
    ASSERT_STREQ(jstr(r.json, "error.code"), "invalid_utf8");
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT,
                      "{\"code\":\"x\",\"language\":\"python\",\"memory_mb\":99999999}", &r), 0);
    ASSERT_EQ(r.status, 422);
    ASSERT_STREQ(jstr(r.json, "error.code"), "out_of_range");
    ASSERT_STREQ(jstr(r.json, "error.field"), "memory_mb");
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT,
                      "{\"code\":\"x\",\"language\":\"python\",\"timeout_s\":1e308}", &r), 0);
    ASSERT_EQ(r.status, 422);
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, "{\"code\":\"x\",\"language\":\"perl\"}",
                      &r), 0);
    ASSERT_EQ(r.status, 422);
    ASSERT_STREQ(jstr(r.json, "error.code"), "unknown_language");
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, "", &r), 0);
    ASSERT_EQ(r.status, 400);
    resp_free(&r);
    ASSERT_EQ(count_items(NULL), 1);
    api_stop(a);
}

TEST(bearer_token_guards_the_api_but_not_health)
{
    struct service_config c;
    base_config(&c);
    snprintf(c.auth_token, sizeof c.auth_token, "t0ken");
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(submit(PY, NULL, NULL), 401);
    const char *wrong[] = {"Content-Type: application/json", "Authorization: Bearer nope", NULL};
    ASSERT_EQ(submit(PY, wrong, NULL), 401);
    const char *right[] = {"Content-Type: application/json", "Authorization: Bearer t0ken", NULL};
    ASSERT_EQ(submit(PY, right, NULL), 202);
    ASSERT_EQ(request("GET", "/v1/evaluations", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 401);
    ASSERT_CONTAINS(r.headers, "WWW-Authenticate: Bearer");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/metrics", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 401);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/healthz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    resp_free(&r);
    api_stop(a);
}

/* A failing database check on a service with a token: its reason (it can
 * name a file or socket path, a database user) is in /readyz only for a
 * request with the token and always in the service log; without the token,
 * or with a wrong one, the check says "database unreachable". The database
 * fails the backend's way: SQLite's file is deleted; PostgreSQL's server
 * stops (a cluster of this test's own, as in test_api_pg.c, so the shared one
 * stays up for the other tests). */
TEST(readyz_shows_the_database_error_only_with_the_token)
{
    bool pg = !strcmp(BACKEND_NAME, "postgres");
    char err[512];
    if (pg)
        ASSERT_MSG(pg_test_start(err, sizeof err) == 0, "own cluster: %s", err);
    struct service_config c;
    base_config(&c);
    snprintf(c.auth_token, sizeof c.auth_token, "t0ken");
    /* what must not leak: SQLite's file path, PostgreSQL's socket directory */
    char secret[sizeof c.db_url] = "";
    if (pg) {
        const char *h = strstr(c.db_url, "host=");
        ASSERT(h != NULL);
        snprintf(secret, sizeof secret, "%.*s", (int)strcspn(h + 5, "&"), h + 5);
    } else {
        ASSERT(!strncmp(c.db_url, "sqlite:", 7));
        snprintf(secret, sizeof secret, "%.*s", (int)(sizeof secret - 8), c.db_url + 7);
    }
    ASSERT(secret[0] == '/');
    /* the service log, as JSON lines in a file */
    char logp[600];
    snprintf(logp, sizeof logp, "%s/service.log", test_tmpdir());
    int lfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT(lfd >= 0);
    api_t *a = start(&c);
    if (!a && pg)
        pg_test_stop();
    ASSERT(a);
    log_set_format(LOG_FORMAT_JSON);
    log_set_fd(lfd);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_MSG(r.status == 200, "readyz %ld: %s", r.status, r.body);
    ASSERT(jget(r.json, "checks.database.message") == NULL);
    resp_free(&r);
    if (pg) {
        pg_test_stop();
    } else {
        char p[4096 + 8];
        static const char *const sfx[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            ASSERT((size_t)snprintf(p, sizeof p, "%s%s", secret, sfx[i]) < sizeof p);
            unlink(p);
        }
    }
    /* what the detailed reason says on each backend */
    const char *reason = pg ? "PostgreSQL" : "gone";
    /* no token, then a wrong one: the generic message only */
    const char *wrong[] = {"Authorization: Bearer nope", NULL};
    const char *const *hdrs[] = {NULL, wrong};
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(request("GET", "/readyz", hdrs[i], NULL, &r), 0);
        ASSERT_MSG(r.status == 503, "readyz %ld: %s", r.status, r.body);
        ASSERT(json_is_false(jget(r.json, "checks.database.ok")));
        ASSERT_STREQ(jstr(r.json, "checks.database.message"), "database unreachable");
        ASSERT_STREQ(jstr(r.json, "checks.database.backend"), BACKEND_NAME);
        ASSERT_STREQ(jstr(r.json, "status"), "not_ready");
        ASSERT_MSG(!strstr(r.body, secret) && !strstr(r.body, reason),
                   "the reason leaked without the token: %s", r.body);
        ASSERT_CONTAINS(r.headers, "Retry-After:");
        resp_free(&r);
    }
    /* the token: the reason itself */
    const char *right[] = {"Authorization: Bearer t0ken", NULL};
    ASSERT_EQ(request("GET", "/readyz", right, NULL, &r), 0);
    ASSERT_MSG(r.status == 503, "readyz %ld: %s", r.status, r.body);
    ASSERT(json_is_false(jget(r.json, "checks.database.ok")));
    ASSERT_CONTAINS(jstr(r.json, "checks.database.message"), reason);
    ASSERT(strcmp(jstr(r.json, "checks.database.message"), "database unreachable") != 0);
    resp_free(&r);
    api_quiesce(a);
    api_stop(a);
    log_set_fd(2);
    close(lfd);
    /* the log has the reason: on SQLite once for the three probes (the same
     * reason); PostgreSQL's may change from "connection lost" to "cannot
     * connect", which is logged again */
    FILE *f = fopen(logp, "r");
    ASSERT(f != NULL);
    char line[8192];
    int failed = 0;
    bool has_reason = false;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"readiness.check_failed\"") || !strstr(line, "\"database\""))
            continue;
        failed++;
        has_reason = has_reason || strstr(line, reason) != NULL;
    }
    fclose(f);
    ASSERT_MSG(failed >= 1 && (pg || failed == 1) && has_reason, "%d readiness.check_failed lines for the database, "
               "reason %s", failed, has_reason ? "there" : "missing");
}

TEST(submit_rate_and_queued_limits_answer_429_with_retry_after)
{
    struct service_config c;
    base_config(&c);
    c.submit_rate_per_s = 0.01;
    c.submit_burst = 2;
    api_t *a = start(&c);
    ASSERT(a);
    const char *bob = "{\"code\":\"x\",\"language\":\"sh\",\"metadata\":{\"submitter\":\"bob\"}}";
    const char *eve = "{\"code\":\"x\",\"language\":\"sh\",\"metadata\":{\"submitter\":\"eve\"}}";
    ASSERT_EQ(submit(bob, NULL, NULL), 202);
    ASSERT_EQ(submit(bob, NULL, NULL), 202);
    struct resp r;
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, bob, &r), 0);
    ASSERT_EQ(r.status, 429);
    ASSERT_STREQ(jstr(r.json, "error.code"), "rate_limited");
    ASSERT_CONTAINS(r.headers, "Retry-After: ");
    resp_free(&r);
    ASSERT_EQ(submit(eve, NULL, NULL), 202); /* per submitter */
    api_stop(a);

    base_config(&c); /* same database: bob has 2 queued */
    c.submit_rate_per_s = 0;
    c.submitter_queued_max = 3;
    a = start(&c);
    ASSERT(a);
    char id[32];
    ASSERT_EQ(submit(bob, NULL, id), 202);
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, bob, &r), 0);
    ASSERT_EQ(r.status, 429);
    ASSERT_STREQ(jstr(r.json, "error.code"), "queue_full");
    ASSERT_CONTAINS(r.headers, "Retry-After: ");
    resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", id);
    ASSERT_EQ(request("POST", path, NULL, NULL, &r), 0);
    resp_free(&r);
    ASSERT_EQ(submit(bob, NULL, NULL), 202); /* room again */
    /* a batch counts all its items */
    char batch[512];
    snprintf(batch, sizeof batch, "{\"evaluations\":[%s,%s]}", eve, eve);
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, batch, &r), 0);
    ASSERT_EQ(r.status, 202);
    resp_free(&r);
    ASSERT_EQ(request("POST", "/v1/evaluations/batch", JSON_CT, batch, &r), 0);
    ASSERT_EQ(r.status, 429);
    resp_free(&r);
    api_stop(a);
}

TEST(metrics_pass_promtool_in_both_formats)
{
    if (access("/usr/bin/promtool", X_OK) != 0)
        return test_skip("promtool not installed (Debian package prometheus)");
    char err[256];
    struct telemetry_options to = {0};
    ASSERT_MSG(telemetry_init(&to, err, sizeof err) == 0, "%s", err);
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    ASSERT_EQ(submit(PY, NULL, NULL), 202);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    resp_free(&r);
    /* A request is counted when the server has finished sending its answer
     * (libmicrohttpd's completion callback), which may come after the client
     * got it: under load a scrape right after can miss it (measured: 1 run in
     * 60 with 12 test binaries in parallel). Poll, as Prometheus would see it
     * on the next scrape. */
    const char *posted =
        "clearbox_http_requests_total{method=\"POST\",route=\"/v1/evaluations\",code=\"202\"} 1";
    for (int i = 0;; i++) {
        ASSERT_EQ(request("GET", "/metrics", NULL, NULL, &r), 0);
        if (i == 200 || (r.body && strstr(r.body, posted) &&
                         strstr(r.body, "clearbox_http_request_duration_seconds_bucket")))
            break;
        resp_free(&r);
        usleep(50 * 1000);
    }
    ASSERT_EQ(r.status, 200);
    ASSERT_CONTAINS(r.headers, "text/plain; version=0.0.4");
    ASSERT_CONTAINS(r.body, posted);
    ASSERT_CONTAINS(r.body, "clearbox_queue_depth 1");
    ASSERT_CONTAINS(r.body, "clearbox_http_request_duration_seconds_bucket");
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.txt", test_tmpdir());
    FILE *f = fopen(path, "w");
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    resp_free(&r);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < %s > %s.out 2>&1", path, path);
    int st = system(cmd);
    char outp[700];
    snprintf(outp, sizeof outp, "%s.out", path);
    char msg[2048] = "";
    FILE *o = fopen(outp, "r");
    if (o) {
        size_t k = fread(msg, 1, sizeof msg - 1, o);
        msg[k] = '\0';
        fclose(o);
    }
    ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool: %s", msg);
    const char *om[] = {"Accept: application/openmetrics-text; version=1.0.0", NULL};
    ASSERT_EQ(request("GET", "/metrics", om, NULL, &r), 0);
    ASSERT_CONTAINS(r.headers, "application/openmetrics-text");
    ASSERT(r.len > 5 && !strcmp(r.body + r.len - 6, "# EOF\n"));
    resp_free(&r);
    api_stop(a);
}

TEST(readyz_reports_pending_self_check_and_quiesce)
{
    struct service_config c;
    base_config(&c);
    log_set_level(LOG_WARNING);
    struct api_options o = {.cfg = &c}; /* workers expected but none: not ready */
    api_t *a = NULL;
    char err[256];
    ASSERT_EQ(api_start(&o, &a, err, sizeof err), 0);
    g_port = api_port(a);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 503);
    ASSERT(json_is_false(jget(r.json, "checks.sandbox.ok")));
    ASSERT_CONTAINS(jstr(r.json, "checks.sandbox.message"), "pending");
    ASSERT(json_is_false(jget(r.json, "checks.workers.ok")));
    resp_free(&r);
    api_stop(a);
}

struct conc {
    int ok;
    char ids[25][32];
};
static void *submitter_thread(void *arg)
{
    struct conc *c = arg;
    for (int i = 0; i < 25; i++)
        if (submit(PY, NULL, c->ids[i]) == 202)
            c->ok++;
    return NULL;
}

TEST(concurrent_submitters_each_get_a_distinct_evaluation)
{
    struct service_config c;
    base_config(&c);
    c.submit_rate_per_s = 0;
    api_t *a = start(&c);
    ASSERT(a);
    struct conc cs[4];
    pthread_t th[4];
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, submitter_thread, &cs[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(cs[i].ok, 25);
    for (int i = 0; i < 100; i++)
        for (int j = i + 1; j < 100; j++)
            ASSERT(strcmp(cs[i / 25].ids[i % 25], cs[j / 25].ids[j % 25]) != 0);
    ASSERT_EQ(count_items(NULL), 100);
    api_stop(a);
}

TEST(a_raw_socket_request_with_a_lying_length_does_not_hang_the_server)
{
    struct service_config c;
    base_config(&c);
    c.http_timeout_s = 2;
    api_t *a = start(&c);
    ASSERT(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *req = "POST /v1/evaluations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 1000\r\n\r\n{\"code\"";
    ASSERT(write(fd, req, strlen(req)) > 0);
    /* meanwhile other clients are served */
    ASSERT_EQ(submit(PY, NULL, NULL), 202);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf); /* the idle timeout (2 s) closes it */
    ASSERT_MSG(n == 0 || (n < 0 && errno == ECONNRESET), "read %zd errno %d", n, errno);
    close(fd);
    api_stop(a);
}

TEST(readyz_reports_a_stalled_queue)
{
    struct service_config c;
    base_config(&c);
    c.queue_stall_s = 1;
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200); /* empty queue: nothing can stall */
    resp_free(&r);
    ASSERT_EQ(submit(PY, NULL, NULL), 202);
    /* nobody claims it: after queue_stall_s the queue counts as stalled */
    int status = 0;
    for (int i = 0; i < 100 && status != 503; i++) {
        usleep(100 * 1000);
        ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
        status = (int)r.status;
        if (status == 503) {
            ASSERT(json_is_false(jget(r.json, "checks.queue.ok")));
            ASSERT_EQ(json_integer_value(jget(r.json, "checks.queue.depth")), 1);
            ASSERT(json_real_value(jget(r.json, "checks.queue.oldest_queued_age_s")) > 1.0);
            ASSERT(json_is_true(jget(r.json, "checks.database.ok")));
        }
        resp_free(&r);
    }
    ASSERT_EQ(status, 503);
    api_stop(a);
}

#endif
