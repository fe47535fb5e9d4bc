/* fnv.h - FNV-1a, 64 bits: a fast hash for cache keys and torn-file checks
 * (the seccomp BPF cache, the root template's key). Not for anything an
 * attacker chooses to collide. */
#ifndef CLEARBOX_UTIL_FNV_H
#define CLEARBOX_UTIL_FNV_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_INIT 0xcbf29ce484222325ull

static inline uint64_t fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
