/* timeutil.c - see timeutil.h. */
#include "util/timeutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The "YYYY-MM-DDTHH:MM:SS" of the last second formatted on this thread. */
static __thread struct {
    uint64_t sec;
    char text[20];
    int valid;
} cache;

static void fmt_second(uint64_t sec)
{
    if (cache.valid && cache.sec == sec)
        return;
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[80]; /* room for any int, so the format cannot truncate */
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(cache.text, tmp, 19);
    cache.text[19] = '\0';
    cache.sec = sec;
    cache.valid = 1;
}

size_t time_fmt_rfc3339(uint64_t ns, char out[TIME_RFC3339_LEN])
{
    uint64_t sec = ns / 1000000000ULL;
    uint32_t frac = (uint32_t)(ns % 1000000000ULL);
    fmt_second(sec);
    memcpy(out, cache.text, 19);
    out[19] = '.';
    for (int i = 28; i >= 20; i--) {
        out[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    out[29] = 'Z';
    out[30] = '\0';
    return 30;
}

size_t time_fmt_human(uint64_t ns, char out[32])
{
    uint64_t sec = ns / 1000000000ULL;
    fmt_second(sec);
    memcpy(out, cache.text, 19);
    out[10] = ' ';
    int n = snprintf(out + 19, 13, ".%03u", (unsigned)(ns % 1000000000ULL / 1000000));
    return 19 + (size_t)n;
}
