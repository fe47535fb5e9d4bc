/* test_trace.c - spans, current-span nesting, W3C Trace Context, the sampler
 * and the batch span processor (queue bounds, drops, flush, shutdown), with a
 * real receiver on 127.0.0.1 or a real trace file as the exporter. */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "otlp_receiver.h"
#include "telemetry/log.h"
#include "telemetry/trace.h"
#include "util/hex.h"
#include "util/timeutil.h"

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* ---- traceparent ------------------------------------------------------------- */

TEST(traceparent_valid_inputs)
{
    struct trace_context c;
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ASSERT_EQ(trace_traceparent_parse(tp, strlen(tp), &c), 0);
    char hex[33];
    hex_encode(c.trace_id, 16, hex);
    ASSERT_STREQ(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    hex_encode(c.span_id, 8, hex);
    ASSERT_STREQ(hex, "00f067aa0ba902b7");
    ASSERT_EQ(c.flags, 1);
    ASSERT(c.remote);
    char out[TRACE_TRACEPARENT_LEN + 1];
    ASSERT_EQ(trace_traceparent_format(&c, out), 55);
    ASSERT_STREQ(out, tp);

    const char *sp = "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t";
    ASSERT_EQ(trace_traceparent_parse(sp, strlen(sp), &c), 0); /* OWS trimmed */
    ASSERT_EQ(c.flags, 0);
    /* future versions: more fields after '-' are allowed; flags other than sampled ignored */
    const char *fut =
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-holds";
    ASSERT_EQ(trace_traceparent_parse(fut, strlen(fut), &c), 0);
    ASSERT_EQ(c.flags, 1);
    const char *fut55 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ASSERT_EQ(trace_traceparent_parse(fut55, strlen(fut55), &c), 0);
    /* version 00 keeps unknown flag bits as they came */
    const char *f2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09";
    ASSERT_EQ(trace_traceparent_parse(f2, strlen(f2), &c), 0);
    ASSERT_EQ(c.flags, 9);
}

TEST(traceparent_malformed_inputs_rejected)
{
    static const char *bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short flags */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",  /* v00 too long */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* v00 extra */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",   /* dash misplaced */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* uppercase */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",   /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* non-hex version */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* non-hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",   /* non-hex flags */
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",   /* separators */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x", /* future: no '-' */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y",
        "00-4bf92f3577b34da6a3ce929d0e0e4736--0f067aa0ba902b7-01",
        " 0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct trace_context c;
        memset(&c, 0x5a, sizeof c);
        ASSERT_MSG(trace_traceparent_parse(bad[i], strlen(bad[i]), &c) == -EINVAL,
                   "accepted bad traceparent \"%s\"", bad[i]);
        ASSERT_MSG(c.trace_id[0] == 0x5a && c.flags == 0x5a, "out touched for \"%s\"", bad[i]);
    }
    /* n shorter than the string: only n bytes are read */
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    struct trace_context c;
    ASSERT_EQ(trace_traceparent_parse(tp, 54, &c), -EINVAL);
    ASSERT_EQ(trace_traceparent_parse(NULL, 0, &c), -EINVAL);
    ASSERT_EQ(trace_context_from_headers(NULL, NULL, &c), -EINVAL);
}

/* ---- tracestate ------------------------------------------------------------------- */

TEST(tracestate_parse_rules)
{
    char out[TRACE_STATE_MAX + 1];
#define TS_OK(in, want)                                                                            \
    do {                                                                                           \
        ASSERT_MSG(trace_tracestate_parse(in, strlen(in), out) == 0, "rejected %s", in);           \
        ASSERT_STREQ(out, want);                                                                   \
    } while (0)
#define TS_BAD(in)                                                                                 \
    do {                                                                                           \
        ASSERT_MSG(trace_tracestate_parse(in, strlen(in), out) == -EINVAL, "accepted %s", in);     \
        ASSERT_STREQ(out, "");                                                                     \
    } while (0)
    TS_OK("", "");
    TS_OK("rojo=00f067aa0ba902b7", "rojo=00f067aa0ba902b7");
    TS_OK(" rojo=00f067aa0ba902b7 ,\tcongo=t61rcWkgMzE ",
          "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    TS_OK("a=1,,b=2, ,", "a=1,b=2");                   /* empty members allowed */
    TS_OK("tenant1@sys=v", "tenant1@sys=v");           /* multi-tenant key */
    TS_OK("1tenant@vendor=x y", "1tenant@vendor=x y"); /* tenant may start with digit */
    TS_OK("k_-*/9=v", "k_-*/9=v");
    TS_BAD("Rojo=1");                   /* uppercase key */
    TS_BAD("1abc=1");                   /* simple key starts with digit */
    TS_BAD("a=");                       /* empty value */
    TS_BAD("a");                        /* no '=' */
    TS_BAD("a=b=c");                    /* '=' in value */
    TS_OK("a=trailing ", "a=trailing"); /* OWS after a member */
    TS_OK("a=in side", "a=in side");
    TS_BAD("t@=1"); /* empty system id */
    TS_BAD("t@Sys=1");
    TS_BAD("a=\x01");
    TS_BAD("a=caf\xc3\xa9"); /* non-ASCII */
#undef TS_OK
#undef TS_BAD
}

TEST(tracestate_bounds)
{
    char in[4096], out[TRACE_STATE_MAX + 1];
    /* 32 members: fine; 33: too many */
    size_t n = 0;
    for (int i = 0; i < 32; i++)
        n += (size_t)snprintf(in + n, sizeof in - n, "%sk%d=v", i ? "," : "", i);
    ASSERT_EQ(trace_tracestate_parse(in, n, out), 0);
    ASSERT_STREQ(out, in);
    n += (size_t)snprintf(in + n, sizeof in - n, ",k32=v");
    ASSERT_EQ(trace_tracestate_parse(in, n, out), -EINVAL);
    /* 512 bytes: fine; 513: too long */
    memset(in, 0, sizeof in);
    memcpy(in, "a=", 2);
    memset(in + 2, 'x', 250);
    memcpy(in + 252, ",b=", 3);
    memset(in + 255, 'y', 256); /* value of 256 chars: the maximum */
    ASSERT_EQ(strlen(in), 511);
    ASSERT_EQ(trace_tracestate_parse(in, 511, out), 0);
    in[511] = 'y'; /* 512 bytes, value 257: too long a value */
    ASSERT_EQ(trace_tracestate_parse(in, 512, out), -EINVAL);
    char big[1200];
    n = 0;
    for (int i = 0; i < 5; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%sk%d=%0200d", i ? "," : "", i, 7);
    ASSERT(n > TRACE_STATE_MAX);
    ASSERT_EQ(trace_tracestate_parse(big, n, out), -EINVAL);
    /* with traceparent: a bad tracestate is dropped, the traceparent kept */
    struct trace_context c;
    ASSERT_EQ(trace_context_from_headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                         "BAD=1", &c),
              0);
    ASSERT_STREQ(c.tracestate, "");
    ASSERT_EQ(trace_context_from_headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                         "ok=1", &c),
              0);
    ASSERT_STREQ(c.tracestate, "ok=1");
}

/* ---- sampler ----------------------------------------------------------------------- */

TEST(sampler_decisions)
{
    uint8_t tid[16] = {1};
    struct trace_context sampled = {.trace_id = {1}, .span_id = {1}, .flags = 1};
    struct trace_context unsampled = {.trace_id = {1}, .span_id = {1}, .flags = 0};
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_ALWAYS_ON, 0, &unsampled, tid));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_ALWAYS_OFF, 0, &sampled, tid));
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_ON, 0, NULL, tid));
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_ON, 0, &sampled, tid));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_ON, 0, &unsampled, tid));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF, 0, NULL, tid));
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF, 0, &sampled, tid));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_ALWAYS_OFF, 0, &unsampled, tid));

    /* traceidratio: last 8 bytes big-endian, >> 1, below ratio * 2^63 (Go SDK) */
    uint8_t lo[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                      0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t hi[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0};
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.5, NULL, lo));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.5, NULL, hi));
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 1.0, NULL, hi));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.0, NULL, (uint8_t[16]){[15] = 1}));
    ASSERT(
        !trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.5, &sampled, hi)); /* ignores parent */
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO, 0.5, &sampled, hi));
    ASSERT(!trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO, 0.5, NULL, hi));
    ASSERT(trace_sampler_decide(TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO, 0.5, NULL, lo));
    /* deterministic and near the ratio on random ids */
    int kept = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t id[16];
        for (int j = 0; j < 16; j++)
            id[j] = (uint8_t)rand();
        bool d = trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.25, NULL, id);
        ASSERT_EQ(d, trace_sampler_decide(TRACE_SAMPLER_TRACEIDRATIO, 0.25, NULL, id));
        kept += d;
    }
    ASSERT_MSG(kept > 4600 && kept < 5400, "kept %d of 20000 at 0.25", kept);

    enum trace_sampler s;
    ASSERT_EQ(trace_sampler_parse("parentbased_traceidratio", &s), 0);
    ASSERT_EQ(s, TRACE_SAMPLER_PARENTBASED_TRACEIDRATIO);
    ASSERT_EQ(trace_sampler_parse("jaeger_remote", &s), -EINVAL);
    ASSERT_EQ(trace_sampler_parse("ALWAYS_ON", &s), -EINVAL);
}

TEST(sampler_from_env)
{
    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
    char err[256];
    ASSERT_EQ(trace_init(NULL, err, sizeof err), 0);
    double r;
    ASSERT_EQ(trace_sampler_get(&r), TRACE_SAMPLER_TRACEIDRATIO);
    ASSERT(r == 0.25);
    ASSERT_EQ(trace_init(NULL, err, sizeof err), -EALREADY);
    trace_shutdown();
    setenv("OTEL_TRACES_SAMPLER_ARG", "1.5", 1);  /* out of range: default 1.0 */
    setenv("OTEL_TRACES_SAMPLER", "nonsense", 1); /* unknown: default */
    ASSERT_EQ(trace_init(NULL, err, sizeof err), 0);
    ASSERT_EQ(trace_sampler_get(&r), TRACE_SAMPLER_PARENTBASED_ALWAYS_ON);
    ASSERT(r == 1.0);
    trace_shutdown();
}

/* ---- spans -------------------------------------------------------------------------- */

TEST(span_ids_valid_and_parentage)
{
    trace_span_t *a = trace_span_start("a", TRACE_KIND_INTERNAL, NULL);
    const struct trace_span_data *d = trace_span_data(a);
    ASSERT(!all_zero(d->trace_id, 16) && !all_zero(d->span_id, 8));
    ASSERT(!d->has_parent);
    ASSERT_EQ(d->flags, TRACE_FLAG_SAMPLED); /* default parentbased_always_on */
    struct trace_context ac;
    trace_span_context(a, &ac);
    trace_span_t *b = trace_span_start("b", TRACE_KIND_CLIENT, &ac);
    const struct trace_span_data *bd = trace_span_data(b);
    ASSERT(memcmp(bd->trace_id, d->trace_id, 16) == 0);
    ASSERT(memcmp(bd->parent_span_id, d->span_id, 8) == 0);
    ASSERT(memcmp(bd->span_id, d->span_id, 8) != 0);
    ASSERT(bd->has_parent && !bd->parent_remote);
    ASSERT_EQ(bd->kind, TRACE_KIND_CLIENT);
    trace_span_end(b);
    trace_span_end(a);
    /* an invalid explicit parent is ignored: new trace */
    struct trace_context zero = {0};
    trace_span_t *c = trace_span_start("c", TRACE_KIND_INTERNAL, &zero);
    ASSERT(!trace_span_data(c)->has_parent);
    trace_span_end(c);
    /* NULL handles do nothing */
    trace_span_set_str(NULL, "k", "v");
    trace_span_add_event(NULL, "e", 0, NULL, 0);
    trace_span_end(NULL);
    ASSERT(!trace_span_is_sampled(NULL));
}

TEST(current_span_nesting_restores_telemetry_current)
{
    ASSERT(!telemetry__current.set);
    trace_span_t *a = trace_span_start("a", TRACE_KIND_SERVER, NULL);
    struct trace_scope sa, sb, sn;
    trace_span_make_current(a, &sa);
    ASSERT(telemetry__current.set);
    ASSERT(memcmp(telemetry__current.span_id, trace_span_data(a)->span_id, 8) == 0);
    ASSERT(memcmp(telemetry__current.trace_id, trace_span_data(a)->trace_id, 16) == 0);
    ASSERT_EQ(telemetry__current.flags, 1);

    trace_span_t *b = trace_span_start("b", TRACE_KIND_INTERNAL, NULL); /* child of current */
    ASSERT(memcmp(trace_span_data(b)->parent_span_id, trace_span_data(a)->span_id, 8) == 0);
    trace_span_make_current(b, &sb);
    ASSERT(memcmp(telemetry__current.span_id, trace_span_data(b)->span_id, 8) == 0);

    trace_span_make_current(NULL, &sn); /* "no span" nests too */
    ASSERT(!telemetry__current.set);
    trace_span_t *r = trace_span_start("r", TRACE_KIND_INTERNAL, NULL);
    ASSERT(!trace_span_data(r)->has_parent);
    trace_span_end(r);
    trace_span_restore(&sn);
    ASSERT(memcmp(telemetry__current.span_id, trace_span_data(b)->span_id, 8) == 0);

    trace_span_t *root =
        trace_span_start_at("root", TRACE_KIND_INTERNAL, NULL, 0, TRACE_START_ROOT);
    ASSERT(!trace_span_data(root)->has_parent);
    trace_span_end(root);

    trace_span_restore(&sb);
    ASSERT(memcmp(telemetry__current.span_id, trace_span_data(a)->span_id, 8) == 0);
    trace_span_end(b);
    trace_span_restore(&sa);
    ASSERT(!telemetry__current.set);
    trace_span_end(a);
    struct trace_context cc;
    ASSERT(!trace_current_context(&cc));
}

TEST(current_span_carries_tracestate_and_stamps_logs)
{
    struct trace_context p;
    ASSERT_EQ(trace_context_from_headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                         "vendor=v1", &p),
              0);
    trace_span_t *s = trace_span_start("evaluation.submit", TRACE_KIND_SERVER, &p);
    struct trace_scope sc;
    trace_span_make_current(s, &sc);
    struct trace_context cur;
    ASSERT(trace_current_context(&cur));
    ASSERT_STREQ(cur.tracestate, "vendor=v1");
    trace_span_t *c = trace_span_start("child", TRACE_KIND_INTERNAL, NULL);
    ASSERT_STREQ(trace_span_data(c)->tracestate, "vendor=v1");
    char tp[TRACE_TRACEPARENT_LEN + 1];
    trace_traceparent_format(&cur, tp);
    ASSERT_CONTAINS(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-");

    /* the logger stamps trace_id/span_id of the current span */
    char path[512];
    snprintf(path, sizeof path, "%s/log.jsonl", test_tmpdir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(fd >= 0);
    log_set_fd(fd);
    log_info(log_get("test"), "inside.span", LOG_INT("n", 1));
    trace_span_restore(&sc);
    log_info(log_get("test"), "outside.span", LOG_INT("n", 2));
    close(fd);
    FILE *f = fopen(path, "r");
    ASSERT(f);
    char line[4096];
    char sid[17];
    hex_encode(trace_span_data(s)->span_id, 8, sid);
    ASSERT(fgets(line, sizeof line, f));
    ASSERT_CONTAINS(line, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"");
    ASSERT_CONTAINS(line, sid);
    ASSERT(fgets(line, sizeof line, f));
    ASSERT_CONTAINS(line, "outside.span");
    ASSERT(!strstr(line, "trace_id"));
    fclose(f);
    trace_span_end(c);
    trace_span_end(s);
}

TEST(span_bounds_and_overwrite)
{
    trace_span_t *s = trace_span_start("bounds", TRACE_KIND_INTERNAL, NULL);
    for (int i = 0; i < TRACE_ATTR_MAX + 8; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        trace_span_set_int(s, k, i);
    }
    trace_span_set_int(s, "k3", 333); /* overwrite, not a new attribute */
    const struct trace_span_data *d = trace_span_data(s);
    ASSERT_EQ(d->nattrs, TRACE_ATTR_MAX);
    ASSERT_EQ(d->dropped_attrs, 8);
    ASSERT_EQ(d->attrs[3].v.i, 333);

    trace_span_t *t = trace_span_start("strings", TRACE_KIND_INTERNAL, NULL);
    static char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[TRACE_VALUE_MAX - 1] = '\xc3'; /* a 2-byte character across the cut */
    big[TRACE_VALUE_MAX] = '\xa9';
    trace_span_set_str(t, "big", big);
    d = trace_span_data(t);
    ASSERT_EQ(d->attrs[0].len, TRACE_VALUE_MAX - 1); /* cut before the character */
    ASSERT_EQ(strlen(d->attrs[0].v.s), TRACE_VALUE_MAX - 1);
    for (int i = 0; i < 10; i++) { /* the arena fills: later values are dropped, counted */
        char k[16];
        snprintf(k, sizeof k, "s%d", i);
        trace_span_set_str(t, k, big);
    }
    ASSERT(d->dropped_attrs > 0);
    for (uint32_t i = 0; i < d->nattrs; i++)
        ASSERT(d->attrs[i].v.s && strlen(d->attrs[i].v.s) == d->attrs[i].len);
    for (int i = 0; i < TRACE_EVENT_MAX + 3; i++)
        trace_span_add_event(s, "ev", 0, (struct trace_attr[]){TRACE_BOOL("b", true)}, 1);
    d = trace_span_data(s);
    ASSERT_EQ(d->nevents, TRACE_EVENT_MAX);
    ASSERT_EQ(d->dropped_events, 3);

    trace_span_set_status(s, TRACE_STATUS_ERROR, "first");
    ASSERT_EQ(d->status, TRACE_STATUS_ERROR);
    ASSERT_STREQ(d->status_msg, "first");
    trace_span_set_status(s, TRACE_STATUS_OK, "ignored");
    trace_span_set_status(s, TRACE_STATUS_ERROR, "too late"); /* OK is final */
    ASSERT_EQ(d->status, TRACE_STATUS_OK);
    ASSERT_STREQ(d->status_msg, "");
    trace_span_end(s);
    trace_span_end(t);
}

/* ---- sampling and export ---------------------------------------------------------- */

static int count_file_spans(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    static char line[1 << 20];
    int spans = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *doc = json_loads(line, 0, NULL);
        if (!doc) {
            fclose(f);
            return -2;
        }
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0);
        spans += (int)json_array_size(json_object_get(ss, "spans"));
        json_decref(doc);
    }
    fclose(f);
    return spans;
}

TEST(unsampled_spans_propagate_but_are_not_exported)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_MSG(trace_init(&o, err, sizeof err) == 0, "%s", err);
    trace_span_t *root = trace_span_start("root", TRACE_KIND_INTERNAL, NULL);
    ASSERT(!trace_span_is_sampled(root));
    const struct trace_span_data *d = trace_span_data(root);
    ASSERT(!all_zero(d->trace_id, 16) && !all_zero(d->span_id, 8));
    struct trace_context c;
    trace_span_context(root, &c);
    char tp[TRACE_TRACEPARENT_LEN + 1];
    trace_traceparent_format(&c, tp);
    ASSERT_EQ(strlen(tp), 55);
    ASSERT_STREQ(tp + 53, "00");
    trace_span_t *child = trace_span_start("child", TRACE_KIND_INTERNAL, &c);
    ASSERT(!trace_span_is_sampled(child));
    /* a sampled remote parent is still followed */
    struct trace_context p;
    ASSERT_EQ(trace_context_from_headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                         NULL, &p),
              0);
    trace_span_t *follow = trace_span_start("follow", TRACE_KIND_SERVER, &p);
    ASSERT(trace_span_is_sampled(follow));
    trace_span_end(child);
    trace_span_end(root);
    trace_span_end(follow);
    trace_shutdown();
    ASSERT_EQ(count_file_spans(path), 1);
}

TEST(sdk_disabled_exports_nothing)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_SDK_DISABLED", "true", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);
    ASSERT(!trace_exporting());
    trace_span_t *s = trace_span_start("x", TRACE_KIND_INTERNAL, NULL);
    ASSERT(!all_zero(trace_span_data(s)->trace_id, 16));
    ASSERT(!trace_span_is_sampled(s));
    trace_span_end(s);
    ASSERT_EQ(trace_flush(1000), 0);
    trace_shutdown();
    ASSERT_EQ(access(path, F_OK), -1); /* the file was not even created */
}

TEST(queue_full_drops_and_counts_without_blocking)
{
    struct rx *rx = rx_start();
    ASSERT(rx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rx_port(rx));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "60000", 1); /* only a full batch triggers export */
    rx_hold(rx, true);                             /* the exporter will block */
    char err[256];
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 5; i++)
        trace_span_end(trace_span_start("first", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(rx_wait(rx, 1, 5000), 1); /* batch of 5 sent, answer held */
    uint64_t t0 = time_mono_ns();
    for (int i = 0; i < 1000; i++)
        trace_span_end(trace_span_start("more", TRACE_KIND_INTERNAL, NULL));
    uint64_t took = time_mono_ns() - t0;
    ASSERT_EQ(trace_dropped_total(), 990); /* the queue holds 10 */
    ASSERT_MSG(took < 50000000ULL, "1000 spans took %" PRIu64 " ns with the exporter blocked",
               took);
    ASSERT_EQ(trace_flush(200), -ETIMEDOUT); /* still blocked */
    rx_hold(rx, false);
    ASSERT_EQ(trace_flush(10000), 0);
    ASSERT_EQ(trace_exported_total(), 15);
    ASSERT_EQ(rx_count(rx), 3);
    int spans = 0;
    for (size_t i = 0; i < rx_count(rx); i++) {
        json_t *doc = json_loadb(rx_get(rx, i)->body, rx_get(rx, i)->body_len, 0, NULL);
        ASSERT(doc);
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0);
        spans += (int)json_array_size(json_object_get(ss, "spans"));
        json_decref(doc);
    }
    ASSERT_EQ(spans, 15);
    trace_shutdown();
    rx_stop(rx);
}

TEST(shutdown_flushes_pending_spans)
{
    struct rx *rx = rx_start();
    ASSERT(rx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", rx_port(rx));
    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url, 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "600000", 1); /* never by timer */
    char err[256];
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 3; i++)
        trace_span_end(trace_span_start("pending", TRACE_KIND_INTERNAL, NULL));
    usleep(100000);
    ASSERT_EQ(rx_count(rx), 0); /* nothing sent yet */
    trace_shutdown();
    ASSERT_EQ(rx_count(rx), 1);
    ASSERT_EQ(trace_exported_total(), 3);
    /* after shutdown: spans still work, nothing is sent */
    trace_span_end(trace_span_start("late", TRACE_KIND_INTERNAL, NULL));
    trace_shutdown();
    ASSERT_EQ(rx_count(rx), 1);
    rx_stop(rx);
}

TEST(schedule_delay_exports_a_partial_batch)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_BSP_SCHEDULE_DELAY", "100", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);
    trace_span_end(trace_span_start("one", TRACE_KIND_INTERNAL, NULL));
    for (int i = 0; i < 50 && count_file_spans(path) < 1; i++)
        usleep(20000);
    ASSERT_EQ(count_file_spans(path), 1); /* within ~100 ms, no flush called */
    trace_shutdown();
}

static void *span_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        trace_span_t *s = trace_span_start("w", TRACE_KIND_INTERNAL, NULL);
        trace_span_set_int(s, "i", i);
        struct trace_scope sc;
        trace_span_make_current(s, &sc);
        trace_span_t *c = trace_span_start("c", TRACE_KIND_INTERNAL, NULL);
        trace_span_end(c);
        trace_span_restore(&sc);
        trace_span_end(s);
    }
    return NULL;
}

TEST(many_threads_every_span_exported_or_counted)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4096", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "10", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, span_worker, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    trace_shutdown();
    uint64_t total = 4 * 20000 * 2;
    ASSERT_EQ(trace_exported_total() + trace_dropped_total(), total);
    ASSERT_EQ((uint64_t)count_file_spans(path), trace_exported_total());
}

TEST(shutdown_is_bounded_by_export_timeout)
{
    struct rx *rx = rx_start();
    ASSERT(rx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rx_port(rx));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "60000", 1);
    setenv("OTEL_BSP_EXPORT_TIMEOUT", "1000", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2", 1);
    rx_hold(rx, true); /* the collector never answers */
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/log.jsonl", test_tmpdir());
    int lfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(lfd >= 0);
    log_set_fd(lfd);
    char err[256];
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 10; i++)
        trace_span_end(trace_span_start("stuck", TRACE_KIND_INTERNAL, NULL));
    uint64_t t0 = time_mono_ns();
    trace_shutdown();
    uint64_t took = time_mono_ns() - t0;
    ASSERT_MSG(took < 2500000000ULL, "shutdown took %" PRIu64 " ns", took);
    ASSERT_EQ(trace_exported_total(), 0);
    ASSERT_EQ(trace_export_failed_total(), 10);
    rx_hold(rx, false);
    rx_stop(rx);
}

TEST(bsp_env_defaults_and_clamping)
{
    struct rx *rx = rx_start();
    ASSERT(rx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rx_port(rx));
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url, 1);
    /* a batch larger than the queue is cut to the queue size (OTel rule) */
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "60000", 1);
    char err[256];
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 4; i++)
        trace_span_end(trace_span_start("s", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(rx_wait(rx, 1, 3000), 1); /* a full batch of 4 went at once */
    trace_shutdown();

    /* invalid values are ignored: the defaults (queue 2048, batch 512) apply */
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots", 1);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-5", 1);
    rx_hold(rx, true);
    ASSERT_MSG(trace_init(NULL, err, sizeof err) == 0, "%s", err);
    uint64_t dropped0 = trace_dropped_total();
    for (int i = 0; i < 512; i++)
        trace_span_end(trace_span_start("s", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(rx_wait(rx, 2, 3000), 2); /* the 512th span made a batch; its answer is held */
    for (int i = 0; i < 3000; i++)
        trace_span_end(trace_span_start("s", TRACE_KIND_INTERNAL, NULL));
    ASSERT_EQ(trace_dropped_total() - dropped0, 3000 - 2048);
    rx_hold(rx, false);
    trace_shutdown();
    rx_stop(rx);
}

/* ---- what reaches the exporter is a copy taken at end ---------------------------- */

/* Every span in the trace file, in order (a new reference). */
static json_t *file_spans(const char *path)
{
    json_t *all = json_array();
    FILE *f = fopen(path, "r");
    if (!f)
        return all;
    static char line[1 << 20];
    while (fgets(line, sizeof line, f)) {
        json_t *doc = json_loads(line, 0, NULL);
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"),
            0);
        json_array_extend(all, json_object_get(ss, "spans"));
        json_decref(doc);
    }
    fclose(f);
    return all;
}

static json_t *span_named(json_t *spans, const char *name)
{
    size_t i;
    json_t *s;
    json_array_foreach(spans, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "name")) ?: "", name) == 0)
            return s;
    }
    return NULL;
}

/* The value object of attribute key in an OTLP attributes array, or NULL. */
static json_t *attr_value(json_t *attrs, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")) ?: "", key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *attr_str(json_t *attrs, const char *key)
{
    return json_string_value(json_object_get(attr_value(attrs, key), "stringValue"));
}

TEST(export_sees_the_span_as_ended_not_its_reused_memory)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_BSP_SCHEDULE_DELAY", "600000", 1); /* nothing leaves before the flush */
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);

    struct trace_context parent;
    ASSERT_EQ(trace_context_from_headers("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                         "vendor=abc,other=1", &parent),
              0);
    trace_span_t *a = trace_span_start("first", TRACE_KIND_SERVER, &parent);
    trace_span_set_str(a, "lang", "python");
    trace_span_set_int(a, "size", 1234);
    trace_span_set_double(a, "ratio", 0.5);
    trace_span_set_bool(a, "ok", true);
    trace_span_set_str(a, "lang", "c"); /* overwritten in place */
    struct trace_attr ev[] = {TRACE_STR("signal", "SIGKILL"), TRACE_INT("code", 137)};
    trace_span_add_event(a, "killed", 0, ev, 2);
    trace_span_add_event(a, "reaped", 0, NULL, 0);
    trace_span_set_status(a, TRACE_STATUS_ERROR, "out of memory");
    trace_span_end(a);
    /* The next spans reuse the same memory with other strings; the first
     * span's record must not change. */
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "later-%d", i);
        trace_span_t *b = trace_span_start(name, TRACE_KIND_INTERNAL, NULL);
        trace_span_set_str(b, "lang", "rust-rust-rust-rust");
        trace_span_set_str(b, "size", "not a number");
        struct trace_attr ev2[] = {TRACE_STR("signal", "SIGTERM")};
        trace_span_add_event(b, "term", 0, ev2, 1);
        trace_span_end(b);
    }
    ASSERT_EQ(trace_flush(5000), 0);
    trace_shutdown();

    json_t *spans = file_spans(path);
    ASSERT_EQ(json_array_size(spans), 4);
    json_t *s = span_named(spans, "first");
    ASSERT(s);
    ASSERT_STREQ(json_string_value(json_object_get(s, "traceState")), "vendor=abc,other=1");
    ASSERT_STREQ(json_string_value(json_object_get(s, "traceId")),
                 "0af7651916cd43dd8448eb211c80319c");
    ASSERT_STREQ(json_string_value(json_object_get(s, "parentSpanId")), "b7ad6b7169203331");
    json_t *attrs = json_object_get(s, "attributes");
    ASSERT_EQ(json_array_size(attrs), 4);
    ASSERT_STREQ(attr_str(attrs, "lang"), "c");
    ASSERT_STREQ(json_string_value(json_object_get(attr_value(attrs, "size"), "intValue")), "1234");
    ASSERT(json_real_value(json_object_get(attr_value(attrs, "ratio"), "doubleValue")) == 0.5);
    ASSERT(json_is_true(json_object_get(attr_value(attrs, "ok"), "boolValue")));
    json_t *events = json_object_get(s, "events");
    ASSERT_EQ(json_array_size(events), 2);
    json_t *e0 = json_array_get(events, 0);
    ASSERT_STREQ(json_string_value(json_object_get(e0, "name")), "killed");
    ASSERT_STREQ(attr_str(json_object_get(e0, "attributes"), "signal"), "SIGKILL");
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(events, 1), "name")), "reaped");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(s, "status"), "message")),
                 "out of memory");
    json_t *l2 = span_named(spans, "later-2");
    ASSERT(l2);
    ASSERT_STREQ(attr_str(json_object_get(l2, "attributes"), "size"), "not a number");
    ASSERT_STREQ(
        attr_str(json_object_get(json_array_get(json_object_get(l2, "events"), 0), "attributes"),
                 "signal"),
        "SIGTERM");
    json_decref(spans);
}

/* Spans near the size bounds fill a thread's record ring long before the
 * queue: the rest are dropped and counted, the caller never waits, and once
 * the export thread gives the space back (the ring wraps) spans go out again. */
TEST(record_ring_full_drops_counts_and_recovers)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64", 1); /* ring: the 64 KiB minimum */
    setenv("OTEL_BSP_SCHEDULE_DELAY", "600000", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);
    static char big[TRACE_VALUE_MAX + 1];
    memset(big, 'v', TRACE_VALUE_MAX);
    uint64_t total = 0;
    for (int round = 0; round < 4; round++) {
        uint64_t d0 = trace_dropped_total(), e0 = trace_exported_total();
        uint64_t t0 = time_mono_ns();
        for (int i = 0; i < 40; i++) {
            trace_span_t *sp = trace_span_start("big", TRACE_KIND_INTERNAL, NULL);
            for (int k = 0; k < 5; k++) { /* ~5 KiB of strings */
                char key[16];
                snprintf(key, sizeof key, "k%d", k);
                trace_span_set_str(sp, key, big);
            }
            trace_span_end(sp);
        }
        ASSERT_MSG(time_mono_ns() - t0 < 2000000000ULL, "ending spans waited");
        total += 40;
        ASSERT_EQ(trace_flush(5000), 0);
        uint64_t dropped = trace_dropped_total() - d0, exported = trace_exported_total() - e0;
        ASSERT_EQ(dropped + exported, 40);
        ASSERT_MSG(dropped > 0 && exported >= 8,
                   "round %d: %" PRIu64 " dropped, %" PRIu64 " exported", round, dropped, exported);
    }
    trace_shutdown();
    ASSERT_EQ(trace_dropped_total() + trace_exported_total(), total);
    ASSERT_EQ((uint64_t)count_file_spans(path), trace_exported_total());
}

/* A thread that exits with records still queued hands its ring on: the
 * records are exported, and the next thread writes after them. */
static void *end_three(void *arg)
{
    for (int i = 0; i < 3; i++) {
        trace_span_t *sp = trace_span_start((const char *)arg, TRACE_KIND_INTERNAL, NULL);
        trace_span_set_str(sp, "who", (const char *)arg);
        trace_span_end(sp);
    }
    return NULL;
}

TEST(records_of_exited_threads_are_exported)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.jsonl", test_tmpdir());
    setenv("OTEL_BSP_SCHEDULE_DELAY", "600000", 1);
    struct trace_options o = {.file_path = path};
    char err[256];
    ASSERT_EQ(trace_init(&o, err, sizeof err), 0);
    static const char *names[] = {"t0", "t1", "t2", "t3", "t4", "t5"};
    for (int i = 0; i < 6; i++) { /* one after another: each takes over the last ring */
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, end_three, (void *)names[i]), 0);
        pthread_join(th, NULL);
    }
    ASSERT_EQ(trace_flush(5000), 0);
    trace_shutdown();
    ASSERT_EQ(trace_exported_total(), 18);
    ASSERT_EQ(trace_dropped_total(), 0);
    json_t *spans = file_spans(path);
    ASSERT_EQ(json_array_size(spans), 18);
    for (size_t i = 0; i < 18; i++) {
        json_t *s = json_array_get(spans, i);
        const char *name = json_string_value(json_object_get(s, "name"));
        ASSERT_STREQ(name, names[i / 3]);
        ASSERT_STREQ(attr_str(json_object_get(s, "attributes"), "who"), names[i / 3]);
    }
    json_decref(spans);
}
