/* sandbox_testlib.h - the fixture test_seccomp and test_netwatch share: a
 * forked child in a fresh network namespace of its own (only lo, up), under
 * the "default" seccomp policy, supervised by netwatch, whose events land in
 * one collector the test then reads.
 *
 * The child's setup, in order: unshare(CLONE_NEWNET), optionally disable
 * IPv6, bring lo up, optionally bind-mount a resolv.conf naming 127.0.0.1,
 * open the DNS stub's sockets and pass them to the parent, set no_new_privs,
 * load the filter (last: only read/write/close follow), report the listener
 * over a pipe and wait for "go". Then it runs the test's body and _exits with
 * its return value. Nothing the body does can leave the namespace even if the
 * policy or the supervisor were wrong.
 *
 * Only for tests: one fixture at a time per process; the collector is global
 * (fx_ev/fx_nev, fx_mu held while netwatch's thread appends). After
 * fx_finish() the supervisor is stopped and the tests read fx_ev directly.
 * Errors: fx_start returns 0 or a negative errno with words in err. Nothing
 * here runs at load time: linking this file into a test binary costs nothing
 * until fx_start is called. */
#ifndef CLEARBOX_TEST_SANDBOX_TESTLIB_H
#define CLEARBOX_TEST_SANDBOX_TESTLIB_H

#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sandbox/netwatch.h"

/* ---- the event collector ---------------------------------------------------- */

#define FX_MAXEV 2048
extern pthread_mutex_t fx_mu;
extern size_t fx_nev; /* events collected, at most FX_MAXEV */
extern struct netwatch_event fx_ev[FX_MAXEV];

/* How many events match; a NULL argument matches anything. */
size_t fx_count(const char *reason, const char *sys, const char *addr);
/* The first event with this syscall and address (NULL: any), or NULL. */
const struct netwatch_event *fx_find(const char *sys, const char *addr);
/* Every collected event, one line each on stderr (for a failing test). */
void fx_dump(void);

/* ---- the child -------------------------------------------------------------- */

/* What runs in the child under the filter. out: write end of the output pipe
 * (kept open across exec); go: the read end of the parent's "go" pipe (it
 * reaches EOF when the parent finishes). The return value is the exit code. */
typedef int (*fx_body)(int out, int go, void *arg);

struct fx_opts {
    unsigned max_events; /* 0: netwatch default */
    bool stub_resolv;    /* bind-mount a resolv.conf naming 127.0.0.1 */
    bool no_ipv6;        /* disable IPv6 in the child's namespace first */
};

struct fx {
    pid_t pid;
    int out_r, go_w;
    netwatch_t *nw;
    char out[65536];
    size_t outlen;
    int status;
    int cloexec; /* the child saw FD_CLOEXEC on its listener */
    int dns_mask;
    pid_t sup; /* supervisor process (mode 2) */
    struct netwatch_stats st;
};

/* Fork the child and start supervising it; clears the collector first.
 * supervise: 1 = netwatch thread here, 2 = netwatch in a separate process
 * (f->sup, which the test may kill), 0 = no supervisor at all (the listener
 * is closed before the child goes on). */
int fx_start(struct fx *f, const struct fx_opts *o, int supervise, fx_body body, void *arg,
             char *err, size_t errlen);
/* Read the child's output until EOF (or timeout_ms) into f->out (NUL
 * terminated), kill and reap the child, stop netwatch into f->st, kill the
 * supervisor process if any. */
void fx_finish(struct fx *f, int timeout_ms);

/* Start, then finish with a 30 s bound; a failed start fails the test. Needs
 * test.h (ASSERT_MSG) in the including file. */
#define FX_RUN(f, opts, sup, body, arg)                                                            \
    do {                                                                                           \
        char fx__err[256] = "";                                                                    \
        int fx__rc = fx_start((f), (opts), (sup), (body), (arg), fx__err, sizeof fx__err);         \
        ASSERT_MSG(fx__rc == 0, "fx_start: %d %s", fx__rc, fx__err);                               \
        fx_finish((f), 30000);                                                                     \
    } while (0)

/* ---- small helpers for bodies ------------------------------------------------ */

/* printf to fd out, one write of at most 511 bytes; errors ignored (a body
 * has nowhere to report them). */
void fx_say(int out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct sockaddr_in fx_sin4(const char *ip, int port);
struct sockaddr_in6 fx_sin6(const char *ip, int port);

/* ---- sandbox_run() in tests (test_sandbox*.c) ------------------------------- */

struct sandbox_spec;
/* True as root; otherwise marks the test skipped ("needs root") and false. */
bool sb_need_root(void);
/* The host's cgroup mode, seen independently of the engine: "v2" when
 * /sys/fs/cgroup is the unified hierarchy (cgroup2), "v1" when it holds the
 * v1 pids hierarchy, else "none". */
const char *sb_cg_mode(void);
/* Where clearbox's cgroups of the pids controller live: "/sys/fs/cgroup/pids"
 * on v1, "/sys/fs/cgroup" on v2 (one directory for every controller). */
const char *sb_cg_pids_root(void);
/* On v1 only: true; on a v2 host marks the test skipped (why: what is
 * v1-only) and false. */
bool sb_need_cg_v1(const char *why);
/* sh code that prints the CPUs the program may run on (its
 * Cpus_allowed_list, e.g. "0-1" or "1") */
#define SB_PRINT_CPUS_SH "sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status\n"
/* The highest CPU in s, -1 if none. */
int sb_last_cpu(const cpu_set_t *s);
/* A zeroed spec running code as /work/main.py with /usr/bin/python3
 * (lang "python") or as /work/main.sh with /bin/sh (any other lang). */
void sb_spec(struct sandbox_spec *s, const char *lang, const char *code);
/* Is anything of run `id` left: its state directory in /run/clearbox or a
 * cgroup clearbox/<id> in any hierarchy (v1, v2 or hybrid)? The first found goes into what. */
bool sb_leftovers(const char *id, char *what, size_t n);
struct sandbox_result;
/* Run `id` with an interpreter that does not exist and check that it fails
 * closed: an error result naming execve, no output, nothing left behind.
 * The result stays in r for more checks (free it); the checks report
 * through the harness. */
void sb_setup_failure(const char *id, struct sandbox_result *r);

#endif
