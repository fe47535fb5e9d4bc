/* json.h - a small streaming JSON writer for the hot paths (log lines, audit
 * records, OTLP/JSON bodies, result records). Parsing is jansson's job.
 *
 * Promise: whatever bytes go in, valid JSON comes out. Strings are checked as
 * UTF-8: invalid sequences become U+FFFD, control characters and DEL are
 * escaped, '"' and '\' are escaped, U+2028/U+2029 are escaped for JavaScript
 * consumers. Non-finite doubles become null. Commas and nesting are tracked by
 * the writer (up to JSON_MAX_DEPTH levels; deeper containers are an error
 * recorded in the writer, caught by json_ok()).
 * The writer appends to a struct buf and never allocates itself; a buf that
 * hits its maximum makes json_ok() false (the caller decides what to do with a
 * cut document: the logger, for instance, renders a short replacement line).
 * Threads: one writer per thread. Nothing here fails loudly: check json_ok(). */
#ifndef CLEARBOX_UTIL_JSON_H
#define CLEARBOX_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define JSON_MAX_DEPTH 32

struct json {
    struct buf *b;
    uint32_t depth;      /* open containers */
    uint64_t has_items;  /* bit d: the container at depth d has an element */
    bool after_key;      /* a key was written, its value comes next */
    bool bad;            /* misuse (too deep, value without key, ...) */
};

void json_init(struct json *w, struct buf *b);
static inline bool json_ok(const struct json *w) { return !w->bad && buf_ok(w->b); }

void json_obj_open(struct json *w);
void json_obj_close(struct json *w);
void json_arr_open(struct json *w);
void json_arr_close(struct json *w);
void json_key(struct json *w, const char *key);
void json_keyn(struct json *w, const char *key, size_t n);

void json_str(struct json *w, const char *s);              /* NULL -> null */
void json_strn(struct json *w, const char *s, size_t n);
/* At most max bytes of s (cut on a character boundary); *cut tells if it was. */
void json_strn_max(struct json *w, const char *s, size_t n, size_t max, bool *cut);
void json_int(struct json *w, int64_t v);
void json_uint(struct json *w, uint64_t v);
void json_double(struct json *w, double v);
void json_bool(struct json *w, bool v);
void json_null_value(struct json *w); /* not json_null: jansson has one */
/* A value already rendered as JSON (trusted: the caller made it). */
void json_raw(struct json *w, const char *json, size_t n);

/* Append s[0..n) to b as the inside of a JSON string (no quotes), applying the
 * rules above. Returns 0 or the buf's error. */
int json_escape(struct buf *b, const char *s, size_t n);

/* Convenience: key + value. */
static inline void json_kv_str(struct json *w, const char *k, const char *v)
{
    json_key(w, k);
    json_str(w, v);
}
static inline void json_kv_int(struct json *w, const char *k, int64_t v)
{
    json_key(w, k);
    json_int(w, v);
}
static inline void json_kv_uint(struct json *w, const char *k, uint64_t v)
{
    json_key(w, k);
    json_uint(w, v);
}
static inline void json_kv_double(struct json *w, const char *k, double v)
{
    json_key(w, k);
    json_double(w, v);
}
static inline void json_kv_bool(struct json *w, const char *k, bool v)
{
    json_key(w, k);
    json_bool(w, v);
}

/* Length of the longest prefix of s[0..n) that is at most max bytes and does
 * not split a UTF-8 sequence. */
size_t json_utf8_cut(const char *s, size_t n, size_t max);

/* Format a double the way json_double does (shortest of %.15g/%.17g that
 * round-trips); out must hold 32 bytes. Returns length, 0 if not finite. */
size_t json_fmt_double(double v, char out[32]);

#endif
