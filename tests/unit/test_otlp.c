/* test_otlp.c - OTLP export end to end: real HTTP requests to a receiver on
 * 127.0.0.1, protobuf bodies decoded by an independent decoder (protoc
 * --decode_raw), JSON bodies parsed by jansson; retries against 503/429;
 * the file exporter; the OTEL_EXPORTER_OTLP_* and resource variables. */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "otlp_receiver.h"
#include "telemetry/log.h"
#include "telemetry/otlp.h"
#include "telemetry/trace.h"
#include "util/hex.h"
#include "util/timeutil.h"

/* ---- a parser for protoc --decode_raw output -------------------------------- */

struct pnode {
    unsigned field;
    char *val;          /* NULL for a message */
    struct pnode *kids; /* first child */
    struct pnode *next; /* next sibling */
};

static struct pnode *pnode_new(unsigned f)
{
    struct pnode *n = calloc(1, sizeof *n);
    n->field = f;
    return n;
}

/* Parse lines "N: value", "N {", "}" from text into children of parent. */
static char *p_parse(char *s, struct pnode *parent)
{
    struct pnode **tail = &parent->kids;
    while (*s) {
        while (*s == ' ')
            s++;
        char *eol = strchr(s, '\n');
        if (eol)
            *eol = '\0';
        if (*s == '}')
            return eol ? eol + 1 : s + strlen(s);
        unsigned f = (unsigned)strtoul(s, &s, 10);
        if (*s == ':') {
            struct pnode *n = pnode_new(f);
            n->val = s + 2;
            *tail = n;
            tail = &n->next;
            s = eol ? eol + 1 : s + strlen(s);
        } else if (*s == ' ' && s[1] == '{') {
            struct pnode *n = pnode_new(f);
            *tail = n;
            tail = &n->next;
            s = p_parse(eol ? eol + 1 : s + strlen(s), n);
        } else {
            s = eol ? eol + 1 : s + strlen(s);
        }
    }
    return s;
}

/* i-th child with field number f (i from 0). */
static struct pnode *p_kid(const struct pnode *n, unsigned f, int i)
{
    for (struct pnode *k = n ? n->kids : NULL; k; k = k->next)
        if (k->field == f && i-- == 0)
            return k;
    return NULL;
}

static int p_count(const struct pnode *n, unsigned f)
{
    int c = 0;
    for (struct pnode *k = n ? n->kids : NULL; k; k = k->next)
        c += k->field == f;
    return c;
}

/* Decode a protoc C-escaped string literal ("...") into out; returns length. */
static size_t p_unescape(const char *v, uint8_t *out, size_t max)
{
    size_t n = 0;
    if (!v || *v != '"')
        return 0;
    for (v++; *v && *v != '"' && n < max; v++) {
        if (*v != '\\') {
            out[n++] = (uint8_t)*v;
            continue;
        }
        v++;
        if (*v >= '0' && *v <= '7') {
            int x = 0;
            for (int i = 0; i < 3 && *v >= '0' && *v <= '7'; i++, v++)
                x = x * 8 + (*v - '0');
            v--;
            out[n++] = (uint8_t)x;
        } else {
            out[n++] = (uint8_t)(*v == 'n' ? '\n' : *v == 'r' ? '\r' : *v == 't' ? '\t' : *v);
        }
    }
    return n;
}

static bool p_str_is(const struct pnode *n, const char *want)
{
    uint8_t b[4096];
    if (!n || !n->val)
        return false;
    size_t len = p_unescape(n->val, b, sizeof b);
    return len == strlen(want) && memcmp(b, want, len) == 0;
}

static bool p_bytes_hex(const struct pnode *n, char *hex, size_t nbytes)
{
    uint8_t b[64];
    if (!n || !n->val || p_unescape(n->val, b, sizeof b) != nbytes)
        return false;
    hex_encode(b, nbytes, hex);
    return true;
}

static uint64_t p_u64(const struct pnode *n)
{
    return n && n->val ? strtoull(n->val, NULL, 0) : UINT64_MAX;
}

/* The KeyValue list kids of field f in n: find the one whose key is k. */
static struct pnode *p_attr(const struct pnode *n, unsigned f, const char *k)
{
    for (int i = 0;; i++) {
        struct pnode *kv = p_kid(n, f, i);
        if (!kv)
            return NULL;
        if (p_str_is(p_kid(kv, 1, 0), k))
            return p_kid(kv, 2, 0); /* the AnyValue */
    }
}

static char *run_decode_raw(const struct rx_req *req)
{
    char in[512], out[512], cmd[1200];
    snprintf(in, sizeof in, "%s/body.pb", test_tmpdir());
    snprintf(out, sizeof out, "%s/body.txt", test_tmpdir());
    FILE *f = fopen(in, "w");
    if (!f)
        return NULL;
    fwrite(req->body, 1, req->body_len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "protoc --decode_raw < '%s' > '%s'", in, out);
    if (system(cmd) != 0)
        return NULL;
    f = fopen(out, "r");
    if (!f)
        return NULL;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

/* ---- helpers ------------------------------------------------------------------ */

static struct rx *start_rx_env(const char *protocol)
{
    struct rx *rx = rx_start();
    if (!rx)
        return NULL;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", rx_port(rx));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    if (protocol)
        setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol, 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "50", 1);
    return rx;
}

/* A span whose ids start with a byte < 8, so protoc --decode_raw cannot take
 * the bytes for a nested message (field number 0 is invalid) and shows them
 * as a string we can compare. Spans rejected here are never ended. */
static trace_span_t *start_decodable(const char *name, enum trace_span_kind kind,
                                     const struct trace_context *parent, unsigned flags)
{
    for (int i = 0; i < 100000; i++) {
        trace_span_t *sp = trace_span_start_at(name, kind, parent, 0, flags);
        const struct trace_span_data *d = trace_span_data(sp);
        if (d->span_id[0] < 8 && d->trace_id[0] < 8)
            return sp;
    }
    return NULL;
}

/* ---- protobuf over HTTP ------------------------------------------------------- */

TEST(export_protobuf_decoded_by_protoc)
{
    struct rx *rx = start_rx_env(NULL);
    ASSERT(rx);
    setenv("OTEL_SERVICE_NAME", "clearbox-test", 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci%20lab,team=eval", 1);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok123,x-tenant=a", 1);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);

    trace_span_t *root =
        start_decodable("evaluation.execute", TRACE_KIND_SERVER, NULL, TRACE_START_ROOT);
    ASSERT(root);
    trace_span_set_str(root, "eval_id", "run-42");
    trace_span_set_int(root, "code_length", -1234567890123LL);
    trace_span_set_double(root, "ratio", 0.5);
    trace_span_set_bool(root, "cached", true);
    trace_span_add_event(root, "sandbox.oom", 0,
                         (struct trace_attr[]){TRACE_STR("cgroup", "v2"), TRACE_INT("pid", 7)}, 2);
    struct trace_context rc;
    trace_span_context(root, &rc);
    trace_span_t *child = start_decodable("sandbox.create", TRACE_KIND_INTERNAL, &rc, 0);
    ASSERT(child);
    trace_span_set_status(child, TRACE_STATUS_ERROR, "clone failed");
    uint64_t t0 = time_now_ns();
    trace_span_end(child);
    trace_span_end(root);
    uint64_t t1 = time_now_ns();
    ASSERT_EQ(trace_flush(10000), 0);
    ASSERT_EQ(rx_wait(rx, 1, 5000), 1);

    const struct rx_req *req = rx_get(rx, 0);
    ASSERT_STREQ(req->method, "POST");
    ASSERT_STREQ(req->path, "/v1/traces");
    char h[256];
    ASSERT(rx_header(req, "Content-Type", h, sizeof h));
    ASSERT_STREQ(h, "application/x-protobuf");
    ASSERT(rx_header(req, "authorization", h, sizeof h));
    ASSERT_STREQ(h, "Bearer tok123");
    ASSERT(rx_header(req, "x-tenant", h, sizeof h));
    ASSERT_STREQ(h, "a");

    char *text = run_decode_raw(req);
    ASSERT_MSG(text, "protoc --decode_raw failed");
    struct pnode top = {0};
    p_parse(text, &top);
    ASSERT_EQ(p_count(&top, 1), 1); /* resource_spans */
    struct pnode *rs = p_kid(&top, 1, 0);
    struct pnode *res = p_kid(rs, 1, 0); /* resource */
    ASSERT(p_str_is(p_kid(p_attr(res, 1, "service.name"), 1, 0), "clearbox-test"));
    ASSERT(p_str_is(p_kid(p_attr(res, 1, "service.version"), 1, 0), CLEARBOX_VERSION));
    ASSERT(p_str_is(p_kid(p_attr(res, 1, "deployment.environment"), 1, 0), "ci lab"));
    ASSERT(p_str_is(p_kid(p_attr(res, 1, "team"), 1, 0), "eval"));
    ASSERT_EQ(p_u64(p_kid(p_attr(res, 1, "process.pid"), 3, 0)), getpid());
    ASSERT(p_attr(res, 1, "host.name"));
    ASSERT(p_attr(res, 1, "service.instance.id"));
    struct pnode *ss = p_kid(rs, 2, 0); /* scope_spans */
    ASSERT(p_str_is(p_kid(p_kid(ss, 1, 0), 1, 0), "clearbox"));
    ASSERT_EQ(p_count(ss, 2), 2);

    const struct trace_span_data *rd = NULL;
    (void)rd;
    char want_tid[33], want_root[17], got[33];
    hex_encode(rc.trace_id, 16, want_tid);
    hex_encode(rc.span_id, 8, want_root);
    /* The child ended first, so it comes first. */
    struct pnode *c = p_kid(ss, 2, 0), *r = p_kid(ss, 2, 1);
    ASSERT(p_bytes_hex(p_kid(r, 1, 0), got, 16));
    ASSERT_STREQ(got, want_tid);
    ASSERT(p_bytes_hex(p_kid(r, 2, 0), got, 8));
    ASSERT_STREQ(got, want_root);
    ASSERT(!p_kid(r, 4, 0)); /* root: no parent_span_id */
    ASSERT(p_str_is(p_kid(r, 5, 0), "evaluation.execute"));
    ASSERT_EQ(p_u64(p_kid(r, 6, 0)), 2); /* SPAN_KIND_SERVER */
    uint64_t start = p_u64(p_kid(r, 7, 0)), end = p_u64(p_kid(r, 8, 0));
    ASSERT(start > 0 && start <= t0);
    ASSERT(end >= t0 && end <= t1 && end >= start);
    ASSERT(p_str_is(p_kid(p_attr(r, 9, "eval_id"), 1, 0), "run-42"));
    /* int64 -1234567890123 as a varint is its two's complement */
    ASSERT_EQ(p_u64(p_kid(p_attr(r, 9, "code_length"), 3, 0)), (uint64_t)-1234567890123LL);
    ASSERT_EQ(p_u64(p_kid(p_attr(r, 9, "ratio"), 4, 0)), 0x3fe0000000000000ULL); /* 0.5 */
    ASSERT_EQ(p_u64(p_kid(p_attr(r, 9, "cached"), 2, 0)), 1);
    struct pnode *ev = p_kid(r, 11, 0);
    ASSERT(ev);
    ASSERT(p_str_is(p_kid(ev, 2, 0), "sandbox.oom"));
    ASSERT(p_u64(p_kid(ev, 1, 0)) >= start);
    ASSERT(p_str_is(p_kid(p_attr(ev, 3, "cgroup"), 1, 0), "v2"));
    ASSERT_EQ(p_u64(p_kid(p_attr(ev, 3, "pid"), 3, 0)), 7);
    ASSERT_EQ(p_u64(p_kid(r, 16, 0)), 0x101); /* sampled, has_is_remote, local */
    ASSERT(!p_kid(r, 15, 0));                 /* status unset: omitted */

    ASSERT(p_bytes_hex(p_kid(c, 1, 0), got, 16));
    ASSERT_STREQ(got, want_tid);
    ASSERT(p_bytes_hex(p_kid(c, 4, 0), got, 8));
    ASSERT_STREQ(got, want_root); /* parent = root */
    ASSERT(p_str_is(p_kid(c, 5, 0), "sandbox.create"));
    ASSERT_EQ(p_u64(p_kid(c, 6, 0)), 1); /* SPAN_KIND_INTERNAL */
    struct pnode *st = p_kid(c, 15, 0);
    ASSERT(p_str_is(p_kid(st, 2, 0), "clone failed"));
    ASSERT_EQ(p_u64(p_kid(st, 3, 0)), 2); /* STATUS_CODE_ERROR */
    trace_shutdown();
    rx_stop(rx);
}

TEST(export_remote_parent_protobuf)
{
    struct rx *rx = start_rx_env("http/protobuf");
    ASSERT(rx);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    struct trace_context p;
    ASSERT_EQ(trace_context_from_headers("00-01f7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
                                         "vendor=abc,other=x y", &p),
              0);
    trace_span_t *sp = start_decodable("evaluation.submit", TRACE_KIND_SERVER, &p, 0);
    ASSERT(sp);
    trace_span_end(sp);
    ASSERT_EQ(trace_flush(10000), 0);
    ASSERT_EQ(rx_wait(rx, 1, 5000), 1);
    char *text = run_decode_raw(rx_get(rx, 0));
    ASSERT(text);
    struct pnode top = {0};
    p_parse(text, &top);
    struct pnode *s = p_kid(p_kid(p_kid(&top, 1, 0), 2, 0), 2, 0);
    char got[33];
    ASSERT(p_bytes_hex(p_kid(s, 1, 0), got, 16));
    ASSERT_STREQ(got, "01f7651916cd43dd8448eb211c80319c");
    ASSERT(p_bytes_hex(p_kid(s, 4, 0), got, 8));
    ASSERT_STREQ(got, "00f067aa0ba902b7");
    ASSERT(p_str_is(p_kid(s, 3, 0), "vendor=abc,other=x y"));
    ASSERT_EQ(p_u64(p_kid(s, 16, 0)), 0x301); /* sampled, remote parent */
    trace_shutdown();
    rx_stop(rx);
}

/* ---- JSON over HTTP ------------------------------------------------------------ */

static bool is_lower_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static json_t *attr_value(json_t *attrs, const char *key)
{
    size_t i;
    json_t *kv;
    json_array_foreach(attrs, i, kv)
    {
        if (strcmp(json_string_value(json_object_get(kv, "key")), key) == 0)
            return json_object_get(kv, "value");
    }
    return NULL;
}

TEST(export_json_follows_otlp_json_rules)
{
    struct rx *rx = start_rx_env("http/json");
    ASSERT(rx);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    trace_span_t *sp = trace_span_start("evaluation.execute", TRACE_KIND_CLIENT, NULL);
    trace_span_set_str(sp, "stdout", "quote\" backslash\\ nl\n bad\xff utf8");
    trace_span_set_int(sp, "big", 9007199254740993LL); /* > 2^53: must be a string */
    trace_span_set_double(sp, "d", 1.25);
    trace_span_set_bool(sp, "b", false);
    trace_span_set_status(sp, TRACE_STATUS_OK, NULL);
    struct trace_context ctx;
    trace_span_context(sp, &ctx);
    trace_span_end(sp);
    ASSERT_EQ(trace_flush(10000), 0);
    ASSERT_EQ(rx_wait(rx, 1, 5000), 1);
    const struct rx_req *req = rx_get(rx, 0);
    char h[128];
    ASSERT(rx_header(req, "Content-Type", h, sizeof h));
    ASSERT_STREQ(h, "application/json");

    json_error_t jerr;
    json_t *doc = json_loadb(req->body, req->body_len, 0, &jerr);
    ASSERT_MSG(doc, "body is not JSON: %s", jerr.text);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    ASSERT(rs);
    json_t *rattrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    ASSERT_STREQ(
        json_string_value(json_object_get(attr_value(rattrs, "service.name"), "stringValue")),
        "clearbox");
    /* process.pid is an int: a decimal string */
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    ASSERT_STREQ(json_string_value(json_object_get(attr_value(rattrs, "process.pid"), "intValue")),
                 pid);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")),
                 "clearbox");
    json_t *s = json_array_get(json_object_get(ss, "spans"), 0);
    ASSERT(s);
    const char *tid = json_string_value(json_object_get(s, "traceId"));
    const char *sid = json_string_value(json_object_get(s, "spanId"));
    ASSERT(is_lower_hex(tid, 32));
    ASSERT(is_lower_hex(sid, 16));
    char want[33];
    hex_encode(ctx.trace_id, 16, want);
    ASSERT_STREQ(tid, want);
    hex_encode(ctx.span_id, 8, want);
    ASSERT_STREQ(sid, want);
    ASSERT(!json_object_get(s, "parentSpanId"));
    ASSERT_STREQ(json_string_value(json_object_get(s, "name")), "evaluation.execute");
    ASSERT(json_is_integer(json_object_get(s, "kind")));
    ASSERT_EQ(json_integer_value(json_object_get(s, "kind")), 3);
    json_t *st = json_object_get(s, "startTimeUnixNano"),
           *en = json_object_get(s, "endTimeUnixNano");
    ASSERT(json_is_string(st) && json_is_string(en));
    ASSERT(strtoull(json_string_value(en), NULL, 10) >= strtoull(json_string_value(st), NULL, 10));
    ASSERT(strtoull(json_string_value(st), NULL, 10) > 1700000000000000000ULL);
    json_t *attrs = json_object_get(s, "attributes");
    ASSERT_STREQ(json_string_value(json_object_get(attr_value(attrs, "stdout"), "stringValue")),
                 "quote\" backslash\\ nl\n bad\xef\xbf\xbd utf8");
    ASSERT_STREQ(json_string_value(json_object_get(attr_value(attrs, "big"), "intValue")),
                 "9007199254740993");
    ASSERT(json_real_value(json_object_get(attr_value(attrs, "d"), "doubleValue")) == 1.25);
    ASSERT(json_is_false(json_object_get(attr_value(attrs, "b"), "boolValue")));
    ASSERT_EQ(json_integer_value(json_object_get(json_object_get(s, "status"), "code")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(s, "flags")), 0x101);
    json_decref(doc);
    trace_shutdown();
    rx_stop(rx);
}

/* ---- retries ------------------------------------------------------------------- */

TEST(retry_503_with_retry_after_then_200)
{
    struct rx *rx = start_rx_env(NULL);
    ASSERT(rx);
    static const char *const answers[] = {"503 Service Unavailable\r\nRetry-After: 1",
                                          "429 Too Many Requests\r\nRetry-After: 1"};
    rx_script(rx, answers, 2);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    trace_span_end(trace_span_start("x", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_flush(20000), 0);
    ASSERT_EQ(rx_wait(rx, 3, 5000), 3);
    /* The same body each time, and at least the Retry-After second between. */
    const struct rx_req *a = rx_get(rx, 0), *b = rx_get(rx, 1), *c = rx_get(rx, 2);
    ASSERT_EQ(a->body_len, c->body_len);
    ASSERT(memcmp(a->body, c->body, a->body_len) == 0);
    ASSERT_MSG(b->at_mono_ns - a->at_mono_ns >= 950000000ULL, "retried after %" PRIu64 " ns",
               b->at_mono_ns - a->at_mono_ns);
    ASSERT(c->at_mono_ns - b->at_mono_ns >= 950000000ULL);
    ASSERT_EQ(trace_exported_total(), 1);
    ASSERT_EQ(trace_export_failed_total(), 0);
    trace_shutdown();
    rx_stop(rx);
}

TEST(retry_503_without_retry_after_uses_backoff)
{
    struct rx *rx = start_rx_env(NULL);
    ASSERT(rx);
    static const char *const answers[] = {"503 Service Unavailable", "503 Service Unavailable"};
    rx_script(rx, answers, 2);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    trace_span_end(trace_span_start("x", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_flush(20000), 0);
    ASSERT_EQ(rx_wait(rx, 3, 5000), 3);
    uint64_t d1 = rx_get(rx, 1)->at_mono_ns - rx_get(rx, 0)->at_mono_ns;
    uint64_t d2 = rx_get(rx, 2)->at_mono_ns - rx_get(rx, 1)->at_mono_ns;
    /* backoff 1: [250, 500] ms, backoff 2: [500, 1000] ms */
    ASSERT_MSG(d1 >= 240000000ULL && d1 < 900000000ULL, "first wait %" PRIu64 " ns", d1);
    ASSERT_MSG(d2 >= 490000000ULL && d2 < 1400000000ULL, "second wait %" PRIu64 " ns", d2);
    ASSERT_EQ(trace_exported_total(), 1);
    trace_shutdown();
    rx_stop(rx);
}

TEST(no_retry_on_400_and_retry_bounded_by_export_timeout)
{
    struct rx *rx = start_rx_env(NULL);
    ASSERT(rx);
    static const char *const answers[] = {"400 Bad Request",
                                          "503 Service Unavailable\r\nRetry-After: 30"};
    rx_script(rx, answers, 2);
    setenv("OTEL_BSP_EXPORT_TIMEOUT", "2000", 1);
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/log.jsonl", test_tmpdir());
    int lfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(lfd >= 0);
    log_set_fd(lfd);
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    trace_span_end(trace_span_start("a", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_flush(10000), 0);
    ASSERT_EQ(rx_count(rx), 1); /* 400: dropped, not retried */
    ASSERT_EQ(trace_export_failed_total(), 1);
    /* and said so in the log, once (rate-limited) */
    FILE *lf = fopen(logpath, "r");
    ASSERT(lf);
    char line[2048] = "";
    ASSERT(fgets(line, sizeof line, lf));
    fclose(lf);
    ASSERT_CONTAINS(line, "\"event\":\"trace.export_failed\"");
    ASSERT_CONTAINS(line, "HTTP 400");
    ASSERT_CONTAINS(line, "\"spans_lost\":1");
    uint64_t t0 = time_mono_ns();
    trace_span_end(trace_span_start("b", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_flush(10000), 0);
    /* 503 with Retry-After 30 s does not fit in the 2 s export timeout: give up now */
    ASSERT(time_mono_ns() - t0 < 1500000000ULL);
    ASSERT_EQ(rx_count(rx), 2);
    ASSERT_EQ(trace_export_failed_total(), 2);
    trace_shutdown();
    rx_stop(rx);
}

TEST(connection_refused_is_retried_within_timeout)
{
    /* A port nobody listens on: take one from a receiver, then stop it. */
    struct rx *rx = rx_start();
    ASSERT(rx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rx_port(rx));
    rx_stop(rx);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    setenv("OTEL_BSP_EXPORT_TIMEOUT", "1500", 1);
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/log.jsonl", test_tmpdir());
    int lfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(lfd >= 0);
    log_set_fd(lfd); /* the export warning goes here, not into the test output */
    char err[256] = "";
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    uint64_t t0 = time_mono_ns();
    trace_span_end(trace_span_start("a", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_flush(10000), 0);
    uint64_t took = time_mono_ns() - t0;
    ASSERT_EQ(trace_export_failed_total(), 1);
    /* retried (backoff >= 250 ms) but gave up inside the export timeout */
    ASSERT_MSG(took >= 250000000ULL && took < 2000000000ULL, "took %" PRIu64 " ns", took);
    FILE *lf = fopen(logpath, "r");
    ASSERT(lf);
    char line[2048] = "";
    ASSERT(fgets(line, sizeof line, lf));
    fclose(lf);
    ASSERT_CONTAINS(line, "gave up after");
    ASSERT_CONTAINS(line, "connect"); /* curl's words, e.g. "Couldn't connect to server" */
    trace_shutdown();
}

/* ---- file exporter ---------------------------------------------------------------- */

TEST(file_exporter_writes_otlp_json_lines)
{
    char path[512];
    snprintf(path, sizeof path, "%s/trace.jsonl", test_tmpdir());
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2", 1);
    struct trace_options o = {.file_path = path};
    char err[256] = "";
    ASSERT_MSG(trace_init(&o, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 5; i++) {
        trace_span_t *sp = trace_span_start("step", TRACE_KIND_INTERNAL, NULL);
        trace_span_set_int(sp, "i", i);
        trace_span_end(sp);
    }
    trace_shutdown(); /* flushes */
    FILE *f = fopen(path, "r");
    ASSERT(f);
    char line[65536];
    int lines = 0, spans = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        json_error_t jerr;
        json_t *doc = json_loads(line, 0, &jerr);
        ASSERT_MSG(doc, "line %d: %s", lines, jerr.text);
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0);
        spans += (int)json_array_size(json_object_get(ss, "spans"));
        json_decref(doc);
    }
    fclose(f);
    ASSERT_EQ(spans, 5);
    ASSERT(lines >= 3); /* batches of at most 2 spans, one line each */
}

/* ---- configuration ------------------------------------------------------------------ */

TEST(config_endpoint_rules)
{
    char url[256];
    ASSERT_EQ(otlp_traces_url("http://c:4318", url, sizeof url), 0);
    ASSERT_STREQ(url, "http://c:4318/v1/traces");
    ASSERT_EQ(otlp_traces_url("http://c:4318/", url, sizeof url), 0);
    ASSERT_STREQ(url, "http://c:4318/v1/traces");
    ASSERT_EQ(otlp_traces_url("http://c:4318/base//", url, sizeof url), 0);
    ASSERT_STREQ(url, "http://c:4318/base/v1/traces");
    ASSERT_EQ(otlp_traces_url("http://c:4318", url, 10), -ENAMETOOLONG);

    static struct otlp_config c;
    char err[256];
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_STREQ(c.endpoint, ""); /* no endpoint: no export */
    ASSERT_EQ(c.timeout_ms, 10000);
    ASSERT_EQ(c.protocol, OTLP_HTTP_PROTOBUF);

    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_STREQ(c.endpoint, "http://collector:4318/v1/traces");
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/custom/path", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_STREQ(c.endpoint, "http://other:9999/custom/path"); /* used as is */

    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_EQ(c.protocol, OTLP_HTTP_JSON);
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf", 1); /* specific wins */
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_EQ(c.protocol, OTLP_HTTP_PROTOBUF);
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "grpc is not supported");
    setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), -EINVAL);
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    unsetenv("OTEL_EXPORTER_OTLP_PROTOCOL");

    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "http://");
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");

    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_EQ(c.timeout_ms, 2500);
    setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "abc", 1); /* invalid: ignored */
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_EQ(c.timeout_ms, 10000);

    /* headers: decoded, trimmed; CR/LF after decoding and bad names refused */
    setenv("OTEL_EXPORTER_OTLP_HEADERS",
           " api-key = s%3Dcret%2C1 ,bad name=x,b(r)=y,x-evil=a%0D%0AHost: y,noequals,=v,k2=v2", 1);
    setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-traces=1", 1);
    ASSERT_EQ(otlp_config_from_env(&c, err, sizeof err), 0);
    ASSERT_EQ(c.nheaders, 3);
    ASSERT_STREQ(c.headers[0], "api-key: s=cret,1");
    ASSERT_STREQ(c.headers[1], "k2: v2");
    ASSERT_STREQ(c.headers[2], "x-traces: 1");
}

TEST(percent_decode_and_retry_after)
{
    char out[16];
    ASSERT_EQ(otlp_percent_decode("a%20b%2c", 8, out, sizeof out), 0);
    ASSERT_STREQ(out, "a b,");
    ASSERT_EQ(otlp_percent_decode("a%2", 3, out, sizeof out), -EINVAL);
    ASSERT_EQ(otlp_percent_decode("a%zz", 4, out, sizeof out), -EINVAL);
    ASSERT_EQ(otlp_percent_decode("a%00", 4, out, sizeof out), -EINVAL);
    ASSERT_EQ(otlp_percent_decode("0123456789abcdefXYZ", 19, out, sizeof out), -E2BIG);
    uint32_t s = 99;
    ASSERT_EQ(otlp_parse_retry_after("3", &s), 0);
    ASSERT_EQ(s, 3);
    ASSERT_EQ(otlp_parse_retry_after(" 120\r\n", &s), 0);
    ASSERT_EQ(s, OTLP_RETRY_AFTER_MAX_S);
    ASSERT_EQ(otlp_parse_retry_after("99999999999999999999999", &s), 0);
    ASSERT_EQ(s, OTLP_RETRY_AFTER_MAX_S);
    ASSERT_EQ(otlp_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", &s), -EINVAL);
    ASSERT_EQ(otlp_parse_retry_after("-1", &s), -EINVAL);
    ASSERT_EQ(otlp_parse_retry_after("", &s), -EINVAL);
    for (unsigned a = 1; a <= 10; a++) {
        uint64_t d = otlp_backoff_ms(a);
        uint64_t full = a >= 5 ? 8000 : 500u << (a - 1);
        ASSERT_MSG(d >= full / 2 && d <= full, "attempt %u: %" PRIu64, a, d);
    }
}

TEST(resource_from_env)
{
    static struct otlp_resource r;
    setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=fromattrs,k=v%2Cw,host.name=h1,broken", 1);
    otlp_resource_from_env(&r);
    const char *svc = NULL, *k = NULL, *host = NULL, *inst = NULL;
    int64_t pid = -1;
    for (size_t i = 0; i < r.n; i++) {
        if (!strcmp(r.attrs[i].key, "service.name"))
            svc = r.attrs[i].sval;
        if (!strcmp(r.attrs[i].key, "k"))
            k = r.attrs[i].sval;
        if (!strcmp(r.attrs[i].key, "host.name"))
            host = r.attrs[i].sval;
        if (!strcmp(r.attrs[i].key, "service.instance.id"))
            inst = r.attrs[i].sval;
        if (!strcmp(r.attrs[i].key, "process.pid") && r.attrs[i].is_int)
            pid = r.attrs[i].ival;
    }
    ASSERT_STREQ(svc, "fromattrs");
    ASSERT_STREQ(k, "v,w");
    ASSERT_STREQ(host, "h1");
    ASSERT_EQ(pid, getpid());
    ASSERT(inst && strlen(inst) == 36 && inst[14] == '4' && inst[8] == '-');
    char first[37];
    snprintf(first, sizeof first, "%s", inst);
    setenv("OTEL_SERVICE_NAME", "named", 1); /* wins over the attribute */
    otlp_resource_from_env(&r);
    for (size_t i = 0; i < r.n; i++) {
        if (!strcmp(r.attrs[i].key, "service.name"))
            ASSERT_STREQ(r.attrs[i].sval, "named");
        if (!strcmp(r.attrs[i].key, "service.instance.id"))
            ASSERT_STREQ(r.attrs[i].sval, first); /* one id per process */
    }
    unsetenv("OTEL_SERVICE_NAME");
    unsetenv("OTEL_RESOURCE_ATTRIBUTES");
    otlp_resource_from_env(&r);
    ASSERT_STREQ(r.attrs[0].key, "service.name");
    ASSERT_STREQ(r.attrs[0].sval, "clearbox");
}

TEST(grpc_protocol_fails_init_clearly)
{
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317", 1);
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", 1);
    char err[256] = "";
    ASSERT_EQ(trace_init(NULL, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "grpc");
    ASSERT(!trace_exporting());
}

TEST(protobuf_encoding_of_large_and_empty_values)
{
    /* Lengths needing 2- and 3-byte varints exercise the body move in pb_close. */
    static struct otlp_resource r;
    otlp_resource_from_env(&r);
    static char big[TRACE_VALUE_MAX + 100];
    memset(big, 'g', sizeof big - 1);
    trace_span_t *spans[40];
    const struct trace_span_data *views[40];
    for (int i = 0; i < 40; i++) {
        spans[i] = trace_span_start("g", TRACE_KIND_INTERNAL, NULL);
        for (int a = 0; a < 5; a++) {
            char key[16];
            snprintf(key, sizeof key, "g%d", a);
            trace_span_set_str(spans[i], key, big);
        }
        trace_span_set_str(spans[i], "gempty", "");
        trace_span_set_int(spans[i], "gzero", 0);
        views[i] = trace_span_data(spans[i]);
    }
    struct buf b;
    buf_init(&b, NULL, 0, OTLP_BODY_MAX);
    ASSERT_EQ(otlp_encode_protobuf(&r, views, 40, &b), 0);
    struct rx_req req = {.body = b.data, .body_len = b.len};
    char *text = run_decode_raw(&req);
    ASSERT(text);
    struct pnode top = {0};
    p_parse(text, &top);
    struct pnode *ss = p_kid(p_kid(&top, 1, 0), 2, 0);
    ASSERT_EQ(p_count(ss, 2), 40);
    struct pnode *s = p_kid(ss, 2, 39);
    uint8_t val[TRACE_VALUE_MAX + 10];
    ASSERT_EQ(p_unescape(p_kid(p_attr(s, 9, "g4"), 1, 0)->val, val, sizeof val), TRACE_VALUE_MAX);
    /* proto3 oneof: an empty string and a zero int are still present */
    ASSERT(p_kid(p_attr(s, 9, "gempty"), 1, 0));
    ASSERT_EQ(p_u64(p_kid(p_attr(s, 9, "gzero"), 3, 0)), 0);
    buf_free(&b);
}
