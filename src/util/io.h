/* io.h - small I/O helpers. Pure system calls (usable in a forked child). */
#ifndef CLEARBOX_UTIL_IO_H
#define CLEARBOX_UTIL_IO_H

#include <stddef.h>

/* Write all n bytes of p to fd (EINTR and short writes retried). 0, or
 * -errno with errno set. */
int io_write_all(int fd, const void *p, size_t n);

#endif
