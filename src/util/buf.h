/* buf.h - bounded byte buffers (curl's dynbuf idea: every buffer has a maximum).
 *
 * A buf starts on caller storage (often the stack, so the hot path never
 * allocates) and moves to the heap only when it outgrows it, never beyond
 * `max` bytes. An append that does not fit is refused whole: nothing is
 * appended, the buffer stays valid, `overflow` is set and -E2BIG returned
 * (-ENOMEM if the heap said no; `oom` is set). Callers that build a document
 * check buf_ok() once at the end instead of after every append.
 * The content is always NUL-terminated (the NUL is not counted in len).
 * Threads: a buf belongs to one thread at a time. Ownership: buf_free() frees
 * the heap copy, never the caller's storage. */
#ifndef CLEARBOX_UTIL_BUF_H
#define CLEARBOX_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;         /* content, NUL-terminated */
    size_t len;         /* bytes used, without the NUL */
    size_t cap;         /* bytes available in data, NUL included */
    size_t max;         /* hard limit on len */
    bool heap;          /* data was malloc'd here */
    bool overflow;      /* an append was refused for max */
    bool oom;           /* an append was refused for memory */
};

/* Start on storage[cap] (may be NULL/0: heap from the first append). max is
 * the largest len allowed; 0 means cap - 1. */
void buf_init(struct buf *b, char *storage, size_t cap, size_t max);
void buf_free(struct buf *b);
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
    b->overflow = b->oom = false;
    if (b->cap)
        b->data[0] = '\0';
}
static inline bool buf_ok(const struct buf *b) { return !b->overflow && !b->oom; }

/* Make room for n more bytes; 0, -E2BIG or -ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
int buf__append_slow(struct buf *b, const void *p, size_t n);
/* Append n bytes / a C string / one char. Inline fast path: the common case
 * (room in the buffer) is a bounds check and a copy. */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (__builtin_expect(b->len + n + 1 <= b->cap, 1)) {
        __builtin_memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return buf__append_slow(b, p, n);
}
static inline int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, __builtin_strlen(s));
}
static inline int buf_putc(struct buf *b, char c)
{
    if (__builtin_expect(b->len + 2 <= b->cap, 1)) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return 0;
    }
    return buf__append_slow(b, &c, 1);
}
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Take the content as a malloc'd string (copied if it lived on caller storage);
 * the buf is left empty. NULL on allocation failure. */
char *buf_steal(struct buf *b);

#endif
