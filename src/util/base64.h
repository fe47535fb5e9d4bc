/* base64.h - standard base64 (RFC 4648 alphabet, '=' padding), as the API's
 * content_base64 fields carry it. Threads: safe (no state). */
#ifndef CLEARBOX_UTIL_BASE64_H
#define CLEARBOX_UTIL_BASE64_H

#include <stddef.h>
#include <sys/types.h>

/* The padded encoding of in[0..n), NUL-terminated, no line breaks, into out
 * (BASE64_ENCODED_SIZE(n) bytes). */
#define BASE64_ENCODED_SIZE(n) (4 * (((n) + 2) / 3) + 1)
void base64_encode(const void *in, size_t n, char *out);

/* Strict check of s[0..n): a multiple of 4 characters of the alphabet with at
 * most two '=' at the end. The decoded length, or -1. */
long long base64_decoded_len(const char *s, size_t n);

/* Decodes in[0..n) into out (at least n / 4 * 3 + 3 bytes); trailing '='
 * may be left out. The decoded length, or -EINVAL. */
ssize_t base64_decode(const char *in, size_t n, char *out);

#endif
