/* hex.h - lowercase hex encoding. Threads: safe. */
#ifndef CLEARBOX_UTIL_HEX_H
#define CLEARBOX_UTIL_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Writes 2*n hex digits and a NUL into out (2*n+1 bytes). */
void hex_encode(const uint8_t *in, size_t n, char *out);
/* Decodes exactly 2*n hex digits (either case) from in; 0 or -EINVAL. */
int hex_decode(const char *in, size_t n, uint8_t *out);

#endif
