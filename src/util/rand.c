/* rand.c - see rand.h. xoshiro256** by Blackman and Vigna (public domain
 * algorithm), seeded through splitmix64 from 32 bytes of getrandom. */
#include "util/rand.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

static __thread uint64_t st[4];
static __thread pid_t st_pid;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

int rand_secure(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void seed(void)
{
    uint64_t s[4];
    if (rand_secure(s, sizeof s) < 0) {
        /* getrandom cannot fail on Linux >= 3.17 after early boot; if it does,
         * ids must still differ between threads and processes. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
        s[1] = (uint64_t)getpid();
        s[2] = (uint64_t)(uintptr_t)&ts;
        s[3] = (uint64_t)(uintptr_t)st;
    }
    for (int i = 0; i < 4; i++) { /* splitmix64 so no state word is zero */
        uint64_t z = s[i] + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        st[i] = z ^ (z >> 31);
    }
    st_pid = getpid();
}

uint64_t rand_u64(void)
{
    /* getpid() is a real syscall since glibc 2.25 dropped its cache, so the
     * fork check compares against a value refreshed by pthread_atfork instead. */
    extern pid_t rand__pid;
    if (__builtin_expect(st_pid != rand__pid || st_pid == 0, 0))
        seed();
    uint64_t r = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

pid_t rand__pid;

static void after_fork_child(void) { rand__pid = getpid(); }

__attribute__((constructor)) static void rand_init(void)
{
    rand__pid = getpid();
    pthread_atfork(NULL, NULL, after_fork_child);
}

double rand_unit(void) { return (double)(rand_u64() >> 11) * 0x1.0p-53; }

void rand_id(uint8_t *out, size_t n)
{
    if (n == 0)
        return;
    for (;;) {
        uint8_t any = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = rand_u64();
            size_t k = n - i < 8 ? n - i : 8;
            memcpy(out + i, &r, k);
        }
        for (size_t i = 0; i < n; i++)
            any |= out[i];
        if (any)
            return;
    }
}
