/* err.c - see err.h. */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int err_sys(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        char eb[128];
        va_start(ap, fmt);
        int n = vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < errlen)
            snprintf(err + n, errlen - (size_t)n, ": %s", err_str(-code, eb, sizeof eb));
    }
    return code;
}

const char *err_str(int errnum, char *buf, size_t len)
{
    /* GNU strerror_r returns a pointer that may or may not be buf. */
    const char *s = strerror_r(errnum, buf, len);
    if (s != buf)
        snprintf(buf, len, "%s", s);
    return buf;
}
