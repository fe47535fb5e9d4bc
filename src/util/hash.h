/* hash.h - SHA-256 and HMAC-SHA256 over OpenSSL's EVP interface.
 * libcrypto is loaded with dlopen on first use (see hash.c for why).
 * Threads: safe (no shared state). Errors: 0 or -EIO when libcrypto fails
 * or cannot be loaded
 * (which it does not for these algorithms short of memory exhaustion). */
#ifndef CLEARBOX_UTIL_HASH_H
#define CLEARBOX_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_SHA256_LEN 32
#define HASH_SHA256_HEX 65 /* 64 hex digits + NUL */

int hash_sha256(const void *data, size_t n, uint8_t out[HASH_SHA256_LEN]);
int hash_sha256_hex(const void *data, size_t n, char out[HASH_SHA256_HEX]);
int hash_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                     uint8_t out[HASH_SHA256_LEN]);
int hash_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t n,
                         char out[HASH_SHA256_HEX]);
/* Constant-time comparison of n bytes: 1 if equal. */
int hash_equal(const void *a, const void *b, size_t n);

#endif
