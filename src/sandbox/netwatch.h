/* netwatch.h - the seccomp user-notification supervisor and the DNS stub.
 *
 * netwatch_start() runs one thread in the parent that
 *   - answers every notification of the sandbox's filter (seccomp.h): for
 *     socket/connect/sendto/sendmsg/sendmmsg/bind it decodes family, address,
 *     port and protocol from the sandboxed process's memory (process_vm_readv,
 *     with SECCOMP_IOCTL_NOTIF_ID_VALID checks before and after every read) and
 *     lets the call CONTINUE (the network namespace is the boundary, so a
 *     program that rewrites its sockaddr after the read still cannot leave);
 *     raw and packet sockets and unexpected families get -EPERM; every other
 *     notified syscall is a blocked one and gets -EPERM;
 *   - serves the DNS stub sockets (127.0.0.1:53 and [::1]:53, UDP and TCP,
 *     made in the child by netwatch_dns_open()): records the name and type
 *     asked, answers REFUSED at once (TCP: 2-byte length prefix).
 * It reports through the caller's callback, once per event:
 *   reason "network_attempt": every attempt to reach anything but the
 *     sandbox's own loopback (connect/sendto/sendmsg/sendmmsg to a non-loopback
 *     address, raw/packet sockets), and every DNS query (attempted_host = the
 *     name); blocked is true (the namespace has no route out). Use of the
 *     sandbox's own loopback, unix sockets and netlink are not reported.
 *   reason "blocked_syscall": syscall name and arch; blocked is true.
 * Bounds: at most max_events_per_reason events per reason reach the callback
 *   (default 100); later ones are only counted (netwatch_stats.suppressed), so
 *   a program that loops costs a counter increment per call. DNS: queries up
 *   to 512 bytes (UDP) / 4096 bytes (TCP), at most 16 TCP connections, each
 *   closed after 2 s; compression pointers in the question are rejected
 *   (FORMERR, counted, not reported).
 * Supervisor death: if the thread or the whole parent goes, the kernel makes
 *   every notified call fail with ENOSYS; nothing is let through.
 * Threads: the callback runs on the supervisor thread; it must not block for
 *   long (the sandboxed call waits) and must not call netwatch_stop().
 *   netwatch_stats() is safe from any thread; start/stop from one thread.
 * Ownership: netwatch_start() takes the listener and DNS fds (closed by
 *   netwatch_stop(), and on failure of netwatch_start()).
 * Errors: 0 or a negative errno, words in err. */
#ifndef CLEARBOX_SANDBOX_NETWATCH_H
#define CLEARBOX_SANDBOX_NETWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum netwatch_reason {
    NETWATCH_NETWORK_ATTEMPT = 0, /* "network_attempt" */
    NETWATCH_BLOCKED_SYSCALL = 1, /* "blocked_syscall" */
    NETWATCH_NREASONS
};

/* One security event, a plain struct: strings are NUL-terminated, "" when
 * not applicable; port is -1 when none. Valid during the callback only. */
struct netwatch_event {
    enum netwatch_reason reason;
    const char *reason_name;   /* "network_attempt" / "blocked_syscall" */
    char syscall[32];          /* "connect", "ptrace", "dns" for a DNS query */
    char arch[16];             /* "x86_64", ... */
    char family[8];            /* inet, inet6, unix, packet, netlink, other */
    char protocol[8];          /* tcp, udp, icmp, raw ("" unknown) */
    char address[112];         /* "93.184.216.34", "2001:db8::1", a unix path */
    int port;                  /* -1 when none */
    char attempted_host[256];  /* the DNS name for a query, else address */
    char dns_type[12];         /* "A", "AAAA", "TYPE65", ... for a query */
    bool blocked;              /* always true today */
    pid_t pid;                 /* caller's pid as the parent sees it (0: DNS) */
    uint64_t ts_ns;            /* wall clock, time_now_ns() */
};

typedef void (*netwatch_event_fn)(const struct netwatch_event *ev, void *arg);

#define NETWATCH_DNS_UDP4 0
#define NETWATCH_DNS_UDP6 1
#define NETWATCH_DNS_TCP4 2
#define NETWATCH_DNS_TCP6 3
#define NETWATCH_DNS_NFDS 4

struct netwatch_config {
    int listener_fd;                    /* from seccomp_listener_fetch(); -1: none */
    int dns_fds[NETWATCH_DNS_NFDS];     /* from netwatch_dns_open(); -1: absent */
    netwatch_event_fn on_event;         /* may be NULL (events only counted) */
    void *arg;                          /* passed to on_event */
    unsigned max_events_per_reason;     /* 0: default 100 */
};

/* Set every fd to -1 and the bound to its default. */
void netwatch_config_init(struct netwatch_config *cfg);

struct netwatch_stats {
    uint64_t notifications;                  /* seccomp notifications answered */
    uint64_t continued;                      /* ... let through */
    uint64_t denied;                         /* ... answered with an error */
    uint64_t events[NETWATCH_NREASONS];      /* events seen, per reason */
    uint64_t suppressed[NETWATCH_NREASONS];  /* events past the bound (not delivered) */
    uint64_t dns_queries;                    /* well-formed queries answered */
    uint64_t dns_malformed;                  /* dropped or FORMERR */
    uint64_t read_failures;                  /* target memory unreadable / id gone */
};

typedef struct netwatch netwatch_t;

/* Start the supervisor thread. On failure every fd in cfg is closed. */
int netwatch_start(const struct netwatch_config *cfg, netwatch_t **out, char *err,
                   size_t errlen);
/* Stop the thread, close every fd, copy the final stats (may be NULL), free.
 * Pending sandboxed calls then fail with ENOSYS. NULL is a no-op. */
void netwatch_stop(netwatch_t *nw, struct netwatch_stats *final);
/* Ask the thread to finish without waiting for it (the engine does this as
 * soon as the program has ended, then reaps init, then calls netwatch_stop,
 * which still owns the join, the fds and the memory). Safe from any thread;
 * repeatable; NULL is a no-op. */
void netwatch_stop_request(netwatch_t *nw);
/* The same, and have the thread call fn(arg) on its way out: work that may
 * run beside the caller's own teardown (the engine removes its state
 * directory and drops init's mount namespace there, ~0.15 ms, while it
 * reads and removes the cgroups). fn runs exactly once: in the thread, or in
 * netwatch_stop if the thread had already ended. Until netwatch_stop
 * returns, the caller must not touch what fn touches. Call it at most once;
 * NULL nw is a no-op (fn is not called). */
void netwatch_stop_request_then(netwatch_t *nw, void (*fn)(void *), void *arg);
void netwatch_stats(netwatch_t *nw, struct netwatch_stats *out);
/* Hand the seccomp listener to a supervisor started without one (the
 * engine starts it as soon as the DNS sockets exist, so the thread is up
 * before the filter is). Takes listener_fd (closed on failure). Safe from
 * any thread. 0, -EBUSY (it already has one) or -EINVAL. Notifications that
 * arrive before the thread picks it up wait in the kernel's queue. */
int netwatch_set_listener(netwatch_t *nw, int listener_fd);

/* Child side, in the sandbox's network namespace after lo is up, while the
 * child still may bind port 53 (CAP_NET_BIND_SERVICE in the namespace's
 * owner), before the filter: make the four stub sockets (close-on-exec, TCP
 * ones listening). A family the namespace lacks (IPv6 disabled) gives -1 for
 * its two fds; IPv4 failing is an error. async-signal-safe. Returns 0 or -errno
 * (fds made so far are closed). Hand them over with seccomp_fds_send(). */
int netwatch_dns_open(int fds[NETWATCH_DNS_NFDS]);

/* The DNS stub's parser, exposed for tests: parse one query of n bytes and
 * build the answer into resp (respmax >= 512), its length in *resplen (0:
 * send nothing). Returns 1 for a well-formed query (answered REFUSED; name in
 * presentation form with non-printables as \DDD, type as "A", "AAAA",
 * "TYPE65", ...), 0 when nothing must be sent (a response, or shorter than a
 * header), -EBADMSG for a malformed query (answered FORMERR). */
int netwatch_dns_answer(const uint8_t *q, size_t n, uint8_t *resp, size_t respmax,
                        size_t *resplen, char *name, size_t namemax, char *type,
                        size_t typemax);

#endif
