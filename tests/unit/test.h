/* test.h - the clearbox test harness: small, forking, readable output.
 *
 * A test file defines tests with TEST(name) { ... } and links with harness.c,
 * which provides main(). Each test runs in its own forked child (a crash or an
 * abort fails that test only) under a timeout (TEST_TIMEOUT_S, default 120 s).
 * Output: one "PASS name (N ms)" or "FAIL name: file:line: what" per test and a
 * closing line "N passed, N failed" that tests/run-all and CI read.
 *
 * Arguments: test names (or substrings) to run only those; -l lists them.
 * Assertion macros return from the test function at the first failure, so a
 * test's cleanup that must run anyway belongs in a helper called before asserts
 * or in the forked child being discarded (the usual case: it is).
 *
 * Helpers: test_tmpdir() gives a fresh directory, removed after the test;
 * test_skip(why) marks a test skipped (counted apart, never as passed). */
#ifndef CLEARBOX_TEST_H
#define CLEARBOX_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
void test__register(const char *name, test_fn fn);
void test__fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool test__failed(void);

const char *test_tmpdir(void);
void test_skip(const char *why);

#define TEST(name)                                                        \
    static void name(void);                                               \
    __attribute__((constructor)) static void test__reg_##name(void)       \
    {                                                                     \
        test__register(#name, name);                                      \
    }                                                                     \
    static void name(void)

#define ASSERT(cond)                                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            test__fail(__FILE__, __LINE__, "%s", #cond);                  \
            return;                                                       \
        }                                                                 \
    } while (0)

#define ASSERT_MSG(cond, ...)                                             \
    do {                                                                  \
        if (!(cond)) {                                                    \
            test__fail(__FILE__, __LINE__, __VA_ARGS__);                  \
            return;                                                       \
        }                                                                 \
    } while (0)

#define ASSERT_EQ(a, b)                                                   \
    do {                                                                  \
        long long test__a = (long long)(a), test__b = (long long)(b);     \
        if (test__a != test__b) {                                         \
            test__fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a, \
                       #b, test__a, test__b);                             \
            return;                                                       \
        }                                                                 \
    } while (0)

#define ASSERT_NE(a, b)                                                   \
    do {                                                                  \
        long long test__a = (long long)(a), test__b = (long long)(b);     \
        if (test__a == test__b) {                                         \
            test__fail(__FILE__, __LINE__, "%s != %s (both %lld)", #a, #b, \
                       test__a);                                          \
            return;                                                       \
        }                                                                 \
    } while (0)

#define ASSERT_STREQ(a, b)                                                \
    do {                                                                  \
        const char *test__a = (a), *test__b = (b);                        \
        if (!test__a || !test__b || strcmp(test__a, test__b) != 0) {      \
            test__fail(__FILE__, __LINE__, "%s == %s (\"%s\" != \"%s\")", \
                       #a, #b, test__a ? test__a : "(null)",              \
                       test__b ? test__b : "(null)");                     \
            return;                                                       \
        }                                                                 \
    } while (0)

#define ASSERT_CONTAINS(hay, needle)                                      \
    do {                                                                  \
        const char *test__h = (hay), *test__n = (needle);                 \
        if (!test__h || !strstr(test__h, test__n)) {                      \
            test__fail(__FILE__, __LINE__, "%s contains \"%s\" (in: %.400s)", \
                       #hay, test__n, test__h ? test__h : "(null)");      \
            return;                                                       \
        }                                                                 \
    } while (0)

#endif
