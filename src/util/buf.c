/* buf.c - see buf.h. */
#include "util/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, char *storage, size_t cap, size_t max)
{
    b->data = storage;
    b->cap = storage ? cap : 0;
    b->len = 0;
    b->max = max ? max : (cap ? cap - 1 : SIZE_MAX / 2);
    b->heap = false;
    b->overflow = b->oom = false;
    if (b->cap)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    if (b->heap)
        free(b->data);
    b->data = NULL;
    b->cap = b->len = 0;
    b->heap = false;
}

int buf_reserve(struct buf *b, size_t n)
{
    if (n > b->max - b->len || b->len > b->max) {
        b->overflow = true;
        return -E2BIG;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    char *p;
    if (b->heap) {
        p = realloc(b->data, ncap);
    } else {
        p = malloc(ncap);
        if (p && b->len)
            memcpy(p, b->data, b->len);
    }
    if (!p) {
        b->oom = true;
        return -ENOMEM;
    }
    b->data = p;
    b->cap = ncap;
    b->heap = true;
    b->data[b->len] = '\0';
    return 0;
}

int buf__append_slow(struct buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < room) {
        b->len += (size_t)n;
        return 0;
    }
    if (b->cap)
        b->data[b->len] = '\0'; /* undo the partial write */
    int rc = buf_reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *buf_steal(struct buf *b)
{
    char *s;
    if (b->heap) {
        s = b->data;
    } else {
        s = malloc(b->len + 1);
        if (!s)
            return NULL;
        if (b->len)
            memcpy(s, b->data, b->len);
        s[b->len] = '\0';
    }
    b->data = NULL;
    b->cap = b->len = 0;
    b->heap = false;
    return s;
}
