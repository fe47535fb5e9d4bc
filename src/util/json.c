/* json.c - see json.h.
 *
 * The string escaper is the part that matters: it sees hostile bytes (program
 * output, code snippets, HTTP headers). It copies runs of plain ASCII in one
 * append and decodes everything else as UTF-8 by the rules of RFC 3629
 * (no overlongs, no surrogates, nothing above U+10FFFF); each byte that
 * does not start a valid sequence becomes one U+FFFD. */
#include "util/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(struct json *w, struct buf *b)
{
    w->b = b;
    w->depth = 0;
    w->has_items = 0;
    w->after_key = false;
    w->bad = false;
}

/* Before any value: a comma if needed. */
static void pre_value(struct json *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        uint64_t bit = 1ULL << (w->depth - 1);
        if (w->has_items & bit)
            buf_putc(w->b, ',');
        w->has_items |= bit;
    }
}

static void open_(struct json *w, char c)
{
    pre_value(w);
    if (w->depth >= JSON_MAX_DEPTH) {
        w->bad = true;
        return;
    }
    buf_putc(w->b, c);
    w->depth++;
    w->has_items &= ~(1ULL << (w->depth - 1));
}

static void close_(struct json *w, char c)
{
    if (w->depth == 0 || w->after_key) {
        w->bad = true;
        return;
    }
    w->depth--;
    buf_putc(w->b, c);
}

void json_obj_open(struct json *w) { open_(w, '{'); }
void json_obj_close(struct json *w) { close_(w, '}'); }
void json_arr_open(struct json *w) { open_(w, '['); }
void json_arr_close(struct json *w) { close_(w, ']'); }

void json_keyn(struct json *w, const char *key, size_t n)
{
    if (w->after_key)
        w->bad = true;
    pre_value(w);
    buf_putc(w->b, '"');
    json_escape(w->b, key, n);
    buf_append(w->b, "\":", 2);
    w->after_key = true;
}

void json_key(struct json *w, const char *key) { json_keyn(w, key, strlen(key)); }

static const char hexd[] = "0123456789abcdef";

/* Decode one UTF-8 sequence at s (n bytes left): its length, 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

size_t json_utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t i = max;
    /* Step back over continuation bytes to the start of the sequence that
     * straddles max, then keep it only if it ends by max. */
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    uint32_t cp;
    size_t l = utf8_seq((const unsigned char *)s + i, n - i, &cp);
    if (l && i + l <= max)
        return i + l;
    return i;
}

/* Which bytes need work: control chars, '"', '\\', DEL and everything
 * non-ASCII (checked as UTF-8). */
static const unsigned char escape_table[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x7f ... 0xff] = 1,
};
static inline int needs_escape(unsigned char c) { return escape_table[c]; }

/* Eight bytes at a time (the SWAR tests of "Bit Twiddling Hacks"): does the
 * word hold any byte that needs_escape? Plain text, the common case, is then
 * one load and a few ALU operations per eight bytes. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline int word_needs_escape(uint64_t x)
{
    uint64_t lt20 = (x - ONES * 0x20) & ~x & HIGHS;
    uint64_t q = x ^ (ONES * '"'), bs = x ^ (ONES * '\\');
    uint64_t eq = ((q - ONES) & ~q & HIGHS) | ((bs - ONES) & ~bs & HIGHS);
    uint64_t hi = ((x + ONES) | x) & HIGHS; /* >= 0x7F */
    return (lt20 | eq | hi) != 0;
}

int json_escape(struct buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run + 8 <= n) {
            uint64_t x;
            memcpy(&x, s + run, 8);
            if (word_needs_escape(x))
                break;
            run += 8;
        }
        while (run < n && !needs_escape(s[run]))
            run++;
        if (run > i) {
            if (buf_append(b, s + i, run - i) < 0)
                return -1;
            i = run;
            if (i == n)
                break;
        }
        unsigned char c = s[i];
        char esc[8];
        switch (c) {
        case '"': buf_append(b, "\\\"", 2); i++; continue;
        case '\\': buf_append(b, "\\\\", 2); i++; continue;
        case '\n': buf_append(b, "\\n", 2); i++; continue;
        case '\r': buf_append(b, "\\r", 2); i++; continue;
        case '\t': buf_append(b, "\\t", 2); i++; continue;
        case '\b': buf_append(b, "\\b", 2); i++; continue;
        case '\f': buf_append(b, "\\f", 2); i++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7F) {
            esc[0] = '\\', esc[1] = 'u', esc[2] = '0', esc[3] = '0';
            esc[4] = hexd[c >> 4], esc[5] = hexd[c & 15];
            buf_append(b, esc, 6);
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = utf8_seq(s + i, n - i, &cp);
        if (l == 0) {
            buf_append(b, "\xEF\xBF\xBD", 3); /* U+FFFD for this one byte */
            i++;
        } else if (cp == 0x2028 || cp == 0x2029) {
            buf_append(b, cp == 0x2028 ? "\\u2028" : "\\u2029", 6);
            i += l;
        } else {
            buf_append(b, s + i, l);
            i += l;
        }
    }
    return buf_ok(b) ? 0 : -1;
}

void json_strn(struct json *w, const char *s, size_t n)
{
    pre_value(w);
    buf_putc(w->b, '"');
    json_escape(w->b, s, n);
    buf_putc(w->b, '"');
}

void json_str(struct json *w, const char *s)
{
    if (!s) {
        json_null_value(w);
        return;
    }
    json_strn(w, s, strlen(s));
}

void json_strn_max(struct json *w, const char *s, size_t n, size_t max, bool *cut)
{
    size_t k = json_utf8_cut(s, n, max);
    if (cut)
        *cut = k < n;
    json_strn(w, s, k);
}

void json_int(struct json *w, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    pre_value(w);
    buf_append(w->b, p, (size_t)(tmp + sizeof tmp - p));
}

void json_uint(struct json *w, uint64_t u)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    pre_value(w);
    buf_append(w->b, p, (size_t)(tmp + sizeof tmp - p));
}

static size_t fmt_u64(uint64_t u, char *out)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    return n;
}

size_t json_fmt_double(double v, char out[32])
{
    static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    if (!isfinite(v))
        return 0;
    /* Fast path, exact: if v * 10^k is an integer s below 2^53 for a small k,
     * then s / 10^k (one correctly rounded division of exact operands) is v,
     * and so is strtod of the decimal "s with k decimals": print that. */
    double a = fabs(v);
    if (a < 9e15) {
        for (int k = 0; k < 10; k++) {
            double s = a * p10[k];
            if (s >= 9007199254740992.0)
                break;
            if (s == (double)(uint64_t)s && s / p10[k] == a) {
                char digits[24];
                size_t nd = fmt_u64((uint64_t)s, digits), n = 0;
                if (v < 0)
                    out[n++] = '-';
                if (k == 0) {
                    memcpy(out + n, digits, nd);
                    n += nd;
                } else if (nd > (size_t)k) {
                    memcpy(out + n, digits, nd - (size_t)k);
                    n += nd - (size_t)k;
                    out[n++] = '.';
                    memcpy(out + n, digits + nd - k, (size_t)k);
                    n += (size_t)k;
                } else {
                    out[n++] = '0';
                    out[n++] = '.';
                    for (size_t z = nd; z < (size_t)k; z++)
                        out[n++] = '0';
                    memcpy(out + n, digits, nd);
                    n += nd;
                }
                out[n] = '\0';
                return n;
            }
        }
    }
    int n = snprintf(out, 32, "%.15g", v);
    if (strtod(out, NULL) != v)
        n = snprintf(out, 32, "%.17g", v);
    return (size_t)n;
}

void json_double(struct json *w, double v)
{
    char tmp[32];
    size_t n = json_fmt_double(v, tmp);
    if (n == 0) {
        json_null_value(w);
        return;
    }
    pre_value(w);
    buf_append(w->b, tmp, n);
}

void json_bool(struct json *w, bool v)
{
    pre_value(w);
    if (v)
        buf_append(w->b, "true", 4);
    else
        buf_append(w->b, "false", 5);
}

void json_null_value(struct json *w)
{
    pre_value(w);
    buf_append(w->b, "null", 4);
}

void json_raw(struct json *w, const char *json, size_t n)
{
    pre_value(w);
    buf_append(w->b, json, n);
}
