/* err.h - the error convention every clearbox module follows.
 *
 * Functions return 0 (or a count) on success and a negative errno-style code on
 * failure. The human words go into a buffer the caller passed (err, errlen),
 * which may be NULL/0 when the caller does not want them. Library code never
 * prints. err_set() writes the message and returns the code so a failure is
 * one line:   return err_set(err, errlen, -EINVAL, "limit must be > 0");
 * Threads: all functions here are safe from any thread. */
#ifndef CLEARBOX_UTIL_ERR_H
#define CLEARBOX_UTIL_ERR_H

#include <stddef.h>

#define ERR_LEN 256 /* enough for any message clearbox writes */

/* Write the formatted message into err (if given) and return code. */
int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like err_set, appending ": <strerror(-code)>" to the message. */
int err_sys(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* strerror_r that always yields a string in buf (thread-safe). */
const char *err_str(int errnum, char *buf, size_t len);

/* Run a step returning 0 or negative; return its code from the caller on failure. */
#define TRY(expr)                    \
    do {                             \
        int try__rc = (expr);        \
        if (try__rc < 0)             \
            return try__rc;          \
    } while (0)

#endif
