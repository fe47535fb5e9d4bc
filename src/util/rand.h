/* rand.h - fast random numbers for ids (trace and span ids, eval ids, jitter).
 * A per-thread xoshiro256** generator seeded from getrandom(2) (the kernel
 * CSPRNG), reseeded after fork (the pid is checked), so two processes or
 * threads never share a stream. Not for keys or secrets: use rand_secure().
 * Threads: safe (state is per thread). Errors: rand_secure returns 0 or -errno. */
#ifndef CLEARBOX_UTIL_RAND_H
#define CLEARBOX_UTIL_RAND_H

#include <stddef.h>
#include <stdint.h>

uint64_t rand_u64(void);
/* A uniform double in [0, 1). */
double rand_unit(void);
/* n random bytes, never all zero when n > 0 (trace ids must not be zero). */
void rand_id(uint8_t *out, size_t n);
/* Bytes straight from the kernel CSPRNG. */
int rand_secure(void *out, size_t n);

#endif
