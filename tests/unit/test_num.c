/* test_num.c - util/num.h against libm's own floor, ceil and round, over
 * the awkward values (halves, the double just below 0.5, 2^52 and 2^53,
 * signed zero, the infinities) and a million random doubles of every
 * magnitude. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "util/num.h"

/* same value, same sign of zero, or both NaN */
static bool same(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

static bool check(double v)
{
    return same(num_floor(v), floor(v)) && same(num_ceil(v), ceil(v)) &&
           same(num_round(v), round(v));
}

TEST(awkward_values_match_libm)
{
    static const double vals[] = {0.0,
                                  -0.0,
                                  0.5,
                                  -0.5,
                                  1.5,
                                  -1.5,
                                  2.5,
                                  -2.5,
                                  0.49999999999999994,
                                  -0.49999999999999994,
                                  0.5000000000000001,
                                  1e-300,
                                  -1e-300,
                                  4503599627370495.5,
                                  -4503599627370495.5,
                                  4503599627370496.0,
                                  4503599627370497.0,
                                  9007199254740993.0,
                                  1e300,
                                  -1e300,
                                  INFINITY,
                                  -INFINITY,
                                  NAN};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        ASSERT_MSG(check(vals[i]), "value %.17g: floor %.17g/%.17g ceil %.17g/%.17g round %.17g/%.17g",
                   vals[i], num_floor(vals[i]), floor(vals[i]), num_ceil(vals[i]), ceil(vals[i]),
                   num_round(vals[i]), round(vals[i]));
    ASSERT_EQ(num_llround(2.5), 3);
    ASSERT_EQ(num_llround(-2.5), -3);
    ASSERT_EQ(num_llround(1999.9999999), 2000);
}

TEST(random_doubles_of_every_magnitude_match_libm)
{
    uint64_t s = 0x243f6a8885a308d3ull;
    for (int i = 0; i < 1000000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double v;
        if (i % 2) {
            memcpy(&v, &s, sizeof v); /* any bit pattern: every exponent */
        } else {
            /* near the integers, where rounding happens */
            v = (double)(int64_t)(s >> 20) / (double)(1u << (s & 15));
            if (s & 16)
                v = -v;
        }
        ASSERT_MSG(check(v), "value %.17g (bits 0x%016llx)", v, (unsigned long long)s);
    }
}
