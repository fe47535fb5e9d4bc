/* fdpass.h - file descriptors over a unix socket (SCM_RIGHTS), one message
 * at a time: the sandbox's control channel, its DNS stub's sockets, the
 * spawner's requests and answers. Pure system calls: usable in a forked
 * child of a threaded process. */
#ifndef CLEARBOX_UTIL_FDPASS_H
#define CLEARBOX_UTIL_FDPASS_H

#include <stddef.h>

#define FDPASS_MAX 8 /* descriptors in one message */

/* Send len (>= 1) bytes of msg and n (<= FDPASS_MAX) descriptors as one
 * message (MSG_NOSIGNAL; EINTR retried). 0, or -errno with errno set. */
int fdpass_send(int sock, const void *msg, size_t len, const int *fds, size_t n);

/* Receive one message: up to max bytes into msg, its descriptors
 * (close-on-exec) into fds, their count into *nfds. Returns the payload's
 * length (0: the peer closed without sending) or -errno; -EMSGSIZE when
 * more than maxfds came or some were cut off (all of them are closed). */
int fdpass_recv(int sock, void *msg, size_t max, int *fds, size_t maxfds, size_t *nfds);

#endif
