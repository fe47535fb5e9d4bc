/* test_json.c - util/json.h and util/buf.h: whatever bytes go in, valid JSON
 * comes out (checked by jansson, an independent parser). */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "test.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/rand.h"

static json_t *parse(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j)
        fprintf(stderr, "    jansson: %s at %d: %.200s\n", e.text, e.position, s);
    return j;
}

TEST(json_document_shape)
{
    char st[256];
    struct buf b;
    struct json w;
    buf_init(&b, st, sizeof st, 4096);
    json_init(&w, &b);
    json_obj_open(&w);
    json_kv_str(&w, "s", "x\"y\\z\n");
    json_kv_int(&w, "i", -9223372036854775807LL - 1);
    json_kv_uint(&w, "u", 18446744073709551615ULL);
    json_kv_double(&w, "d", 0.1);
    json_kv_double(&w, "inf", 1.0 / 0.0);
    json_kv_bool(&w, "t", true);
    json_key(&w, "a");
    json_arr_open(&w);
    json_int(&w, 1);
    json_str(&w, NULL);
    json_obj_open(&w);
    json_obj_close(&w);
    json_arr_close(&w);
    json_obj_close(&w);
    ASSERT(json_ok(&w));
    ASSERT_STREQ(b.data, "{\"s\":\"x\\\"y\\\\z\\n\",\"i\":-9223372036854775808,"
                         "\"u\":18446744073709551615,\"d\":0.1,\"inf\":null,\"t\":true,"
                         "\"a\":[1,null,{}]}");
    /* jansson stops at INT64_MAX, so parse a copy without the u64 member */
    char *u = strstr(b.data, "18446744073709551615");
    ASSERT(u);
    memcpy(u, "                   1", 20);
    json_t *j = parse(b.data);
    ASSERT(j);
    json_decref(j);
    buf_free(&b);
}

TEST(json_invalid_utf8_becomes_replacement)
{
    struct buf b;
    struct json w;
    buf_init(&b, NULL, 0, 4096);
    json_init(&w, &b);
    /* lone continuation, overlong '/', surrogate, > U+10FFFF, truncated seq */
    const char in[] = "a\x80" "b\xC0\xAF" "c\xED\xA0\x80" "d\xF4\x90\x80\x80" "e\xE2\x82";
    json_strn(&w, in, sizeof in - 1);
    ASSERT(json_ok(&w));
    json_t *j = parse(b.data);
    ASSERT(j);
    const char *s = json_string_value(j);
    ASSERT(s);
    ASSERT(strstr(s, "a\xEF\xBF\xBD" "b") == s);
    ASSERT(!strstr(s, "\xC0"));
    ASSERT(!strstr(s, "\xED\xA0"));
    json_decref(j);
    buf_free(&b);
}

TEST(json_control_chars_and_separators_escaped)
{
    struct buf b;
    struct json w;
    buf_init(&b, NULL, 0, 4096);
    json_init(&w, &b);
    char in[40];
    for (int i = 0; i < 32; i++)
        in[i] = (char)i;
    memcpy(in + 32, "\x7f\xE2\x80\xA8", 4);
    json_strn(&w, in, 36);
    for (size_t i = 0; i < b.len; i++)
        ASSERT((unsigned char)b.data[i] >= 0x20 && b.data[i] != 0x7f);
    ASSERT_CONTAINS(b.data, "\\u2028");
    ASSERT_CONTAINS(b.data, "\\u0000");
    json_t *j = parse(b.data);
    ASSERT(j);
    ASSERT_EQ(json_string_length(j), 36); /* every byte came back */
    json_decref(j);
    buf_free(&b);
}

/* 20,000 random byte strings: each renders to JSON jansson accepts, and a
 * string that was valid UTF-8 comes back byte for byte. */
TEST(json_random_bytes_always_valid)
{
    for (int round = 0; round < 20000; round++) {
        unsigned char in[64];
        size_t n = rand_u64() % sizeof in;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rand_u64();
            /* bias towards interesting bytes */
            in[i] = (unsigned char)((r & 3) == 0 ? 0x80 + (r >> 8) % 0x80 : (r >> 8) & 0xff);
        }
        char st[512];
        struct buf b;
        struct json w;
        buf_init(&b, st, sizeof st, 1024);
        json_init(&w, &b);
        json_arr_open(&w);
        json_strn(&w, (const char *)in, n);
        json_arr_close(&w);
        ASSERT(json_ok(&w));
        json_error_t e;
        json_t *j = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &e);
        ASSERT_MSG(j, "round %d: %s", round, e.text);
        json_decref(j);
    }
}

TEST(json_utf8_cut_keeps_whole_characters)
{
    const char *s = "ab\xE2\x82\xAC" "cd"; /* a b € c d */
    ASSERT_EQ(json_utf8_cut(s, 7, 100), 7);
    ASSERT_EQ(json_utf8_cut(s, 7, 4), 2);
    ASSERT_EQ(json_utf8_cut(s, 7, 5), 5);
    ASSERT_EQ(json_utf8_cut(s, 7, 2), 2);
    bool cut = false;
    struct buf b;
    struct json w;
    buf_init(&b, NULL, 0, 100);
    json_init(&w, &b);
    json_strn_max(&w, s, 7, 3, &cut);
    ASSERT(cut);
    ASSERT_STREQ(b.data, "\"ab\"");
    buf_free(&b);
}

TEST(json_misuse_is_caught)
{
    struct buf b;
    struct json w;
    buf_init(&b, NULL, 0, 100);
    json_init(&w, &b);
    json_obj_close(&w);
    ASSERT(!json_ok(&w));
    json_init(&w, &b);
    for (int i = 0; i < JSON_MAX_DEPTH + 1; i++)
        json_arr_open(&w);
    ASSERT(!json_ok(&w));
    buf_free(&b);
}

TEST(buf_refuses_past_max_and_stays_valid)
{
    char st[8];
    struct buf b;
    buf_init(&b, st, sizeof st, 10);
    ASSERT_EQ(buf_puts(&b, "hello"), 0);
    ASSERT_EQ(buf_puts(&b, "world!"), -E2BIG);
    ASSERT_STREQ(b.data, "hello");
    ASSERT(!buf_ok(&b));
    ASSERT_EQ(buf_puts(&b, "12345"), 0); /* exactly max, moves to the heap */
    ASSERT(b.heap);
    ASSERT_STREQ(b.data, "hello12345");
    ASSERT_EQ(buf_printf(&b, "%d", 7), -E2BIG);
    ASSERT_STREQ(b.data, "hello12345");
    char *s = buf_steal(&b);
    ASSERT_STREQ(s, "hello12345");
    free(s);
    buf_free(&b);
}

TEST(json_double_round_trips)
{
    double v[] = {0.1, 1e300, -2.5e-308, 3.0, 123456789012.375, 1.0 / 3.0};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[32];
        size_t n = json_fmt_double(v[i], out);
        ASSERT(n > 0);
        ASSERT(strtod(out, NULL) == v[i]);
    }
}

TEST(json_double_exact_text_and_random_round_trip)
{
    static const struct {
        double v;
        const char *s;
    } t[] = {{2.5, "2.5"},      {0.05, "0.05"},      {-1.25, "-1.25"}, {100, "100"},
             {1e-7, "0.0000001"}, {123.456, "123.456"}, {0.1, "0.1"},   {-0.0, "0"},
             {1e300, "1e+300"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char out[32];
        json_fmt_double(t[i].v, out);
        ASSERT_STREQ(out, t[i].s);
    }
    for (int i = 0; i < 200000; i++) {
        uint64_t bits = rand_u64();
        double v;
        if (i % 2) {
            memcpy(&v, &bits, sizeof v);
        } else { /* short decimals, where the fast path runs */
            v = (double)(int64_t)(bits % 2000000000) / (double)(1ULL << (bits >> 60));
            v = (double)(int64_t)(v * 1000) / 1000.0;
        }
        char out[32];
        size_t n = json_fmt_double(v, out);
        if (!n)
            continue; /* not finite */
        ASSERT_MSG(strtod(out, NULL) == v, "%.17g printed as %s", v, out);
    }
}
