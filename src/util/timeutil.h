/* timeutil.h - clocks and RFC 3339 timestamps.
 * time_now_ns() is wall-clock (CLOCK_REALTIME) nanoseconds since the epoch, for
 * records; time_mono_ns() is CLOCK_MONOTONIC, for durations. Both are vDSO
 * calls (~20 ns). time_fmt_rfc3339() writes "2026-11-27T10:34:39.123456789Z"
 * (30 bytes + NUL) and caches the date part per thread, so the hot path does
 * not call gmtime_r. Threads: all safe. Errors: none. */
#ifndef CLEARBOX_UTIL_TIME_H
#define CLEARBOX_UTIL_TIME_H

#include <stddef.h>
#include <stdint.h>

#define TIME_RFC3339_LEN 31 /* buffer size including the NUL */

uint64_t time_now_ns(void);
uint64_t time_mono_ns(void);
/* Returns the length written (30). */
size_t time_fmt_rfc3339(uint64_t ns, char out[TIME_RFC3339_LEN]);
/* Milliseconds version for humans: "2026-11-27 10:34:39.123" (24 bytes). */
size_t time_fmt_human(uint64_t ns, char out[32]);

#endif
