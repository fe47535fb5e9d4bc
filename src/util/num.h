/* num.h - rounding without libm.
 *
 * clearbox needs only ceil, round and llround from libm, and linking libm
 * costs every `clearbox` start a library load (docs/architecture.md: the
 * start budget of `clearbox run`). These are exact for every double: values
 * of 2^52 and beyond are already integers and come back unchanged, as do NaN
 * and the infinities. Rounding is half away from zero, like round(3). */
#ifndef CLEARBOX_UTIL_NUM_H
#define CLEARBOX_UTIL_NUM_H

#include <stdint.h>

static inline double num_floor(double v)
{
    if (!(__builtin_fabs(v) < 4503599627370496.0)) /* 2^52: integral, or NaN/inf */
        return v;
    double t = (double)(int64_t)v; /* towards zero */
    t = t > v ? t - 1.0 : t;
    return t == 0.0 ? __builtin_copysign(0.0, v) : t; /* -0 stays -0, as in libm */
}

static inline double num_ceil(double v)
{
    if (!(__builtin_fabs(v) < 4503599627370496.0))
        return v;
    double t = (double)(int64_t)v;
    t = t < v ? t + 1.0 : t;
    return t == 0.0 ? __builtin_copysign(0.0, v) : t; /* ceil(-0.3) is -0 */
}

static inline double num_round(double v)
{
    if (__builtin_signbit(v))
        return -num_round(-v);
    double t = num_floor(v);
    return v - t >= 0.5 ? t + 1.0 : t; /* v - t is exact here */
}

/* The caller keeps v finite and within long long's range, as for llround. */
static inline long long num_llround(double v)
{
    return (long long)num_round(v);
}

#endif
