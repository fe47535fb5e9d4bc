/* seccomp.h - the sandbox's syscall policy (libseccomp) and the fd hand-over
 * between the sandbox child and the supervising parent.
 *
 * The policy is an allowlist in the spirit of Docker's default profile (this
 * kernel is newer than libseccomp's syscall table, so a denylist would miss new
 * syscalls). docs/sandbox-seccomp.md lists every rule and why. In short:
 *   - allowlisted syscalls run;                      (SCMP_ACT_ALLOW)
 *   - the dangerous ones (ptrace, mount family, unshare, bpf, keyctl, io_uring,
 *     clock setting, module loading, clone with namespace flags, odd
 *     personality values, foreign-arch calls, ...) go to the supervisor, which
 *     answers -EPERM and reports a `blocked_syscall` event; (SCMP_ACT_NOTIFY)
 *   - socket, connect, sendto (with a destination), sendmsg, sendmmsg and bind
 *     go to the supervisor, which decodes and reports them (netwatch.h);
 *   - clone3 fails with ENOSYS so libc falls back to clone, whose flags the
 *     filter can check; seccomp(2) with SECCOMP_FILTER_FLAG_NEW_LISTENER is
 *     denied (a program's own newer USER_NOTIF filter would otherwise receive,
 *     and could let through, the calls ours denies);
 *   - anything else fails with ENOSYS, silently (new or unknown syscalls:
 *     callers fall back on ENOSYS; see the doc for why not EPERM).
 * If the supervisor is gone, every notified call fails with ENOSYS (kernel
 * behaviour for a listener without a reader): calls fail, never succeed.
 *
 * Order of use (the engine, src/sandbox/native.c):
 *   parent, before clone:  seccomp_policy_build()  -> struct seccomp_prog
 *   init, last step before forking the program (CAP_SYS_ADMIN in its user
 *   namespace stands in for no_new_privs):
 *                          fd = seccomp_prog_load(&prog); write fd number to
 *                          the parent; keep fd open until init exits; fork
 *   program:               prctl(PR_SET_NO_NEW_PRIVS), check the filter is
 *                          on (PR_GET_SECCOMP), execve
 *   parent:                listener = seccomp_listener_fetch(init_pid, fdnum)
 *                          -> netwatch_set_listener() (the thread already runs).
 * (A child without CAP_SYS_ADMIN sets no_new_privs first, and must keep the
 * listener open, or wait for an ack, until the parent has its copy.)
 * The listener crosses with pidfd_getfd(2), not SCM_RIGHTS: once the filter is
 * on, the child's own sendmsg would be sent to the listener nobody reads yet
 * (deadlock). seccomp_fds_send/recv (SCM_RIGHTS) are for fds made before the
 * filter, such as the DNS stub's sockets (netwatch_dns_open()).
 *
 * Threads: seccomp_policy_build/describe are safe from any thread (no shared
 *   state). seccomp_prog_load, seccomp_nnp_set and seccomp_fds_send are
 *   async-signal-safe (no allocation, no locks): safe in a clone()d child of a
 *   multi-threaded parent.
 * Ownership: struct seccomp_prog owns its filter array; seccomp_prog_free()
 *   releases it (a child may simply exec: it never frees).
 * Errors: 0 / an fd / a count, or a negative errno; words in err when given. */
#ifndef CLEARBOX_SANDBOX_SECCOMP_H
#define CLEARBOX_SANDBOX_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SECCOMP_POLICY_DEFAULT "default" /* the only policy so far */
#define SECCOMP_POLICY_NAME_MAX 32
#define SECCOMP_SHA256_HEX 65 /* 64 hex digits + NUL */

struct sock_filter; /* <linux/filter.h> */

/* A built filter, ready for the kernel. */
struct seccomp_prog {
    struct sock_filter *insns;                 /* BPF program (heap) */
    unsigned short len;                        /* instructions in insns */
    char name[SECCOMP_POLICY_NAME_MAX];        /* policy name, "default" */
    char sha256[SECCOMP_SHA256_HEX];           /* of the canonical description */
};

/* Build the named policy for the native architecture (parent side, may
 * allocate). The first call per process reads the cache file (about 20 us;
 * seccomp.c explains the key and the checks) or, on a miss, runs libseccomp
 * and OpenSSL (about 10 ms) and rewrites the file; later calls copy the
 * program held in memory (thread-safe). -ENOENT for an unknown name, -EIO if
 * libseccomp fails. On failure *out is zeroed. */
int seccomp_policy_build(const char *name, struct seccomp_prog *out, char *err, size_t errlen);
/* Tests and the benchmark: build without the cache. compact false gives
 * libseccomp's own program; true the one seccomp_policy_build() uses (the
 * compact program of seccomp_compact.h when it proves equal, else
 * libseccomp's). */
int seccomp_policy_build_fresh(const char *name, bool compact, struct seccomp_prog *out,
                               char *err, size_t errlen);
/* The policy's rules as data (seccomp_compact.h), numbers from libseccomp. */
struct seccomp_rules;
int seccomp_policy_rules(const char *name, struct seccomp_rules *r, char *err, size_t errlen);
/* The AUDIT_ARCH_ value of the architecture this binary was built for (what
 * seccomp_data.arch holds for native calls), without loading libseccomp. */
uint32_t seccomp_audit_arch_native(void);
void seccomp_prog_free(struct seccomp_prog *p);

/* The BPF cache, exposed for tests and `clearbox gc`. Directory:
 * $CLEARBOX_CACHE_DIR, else SECCOMP_CACHE_DIR_DEFAULT. path: the file for a
 * policy in this binary (-ENOENT: the binary has no build id, no cache).
 * load: 0 and a program (free it) when the file passes every check; -ENOENT
 * (absent), -EPERM (owner or mode wrong, a symlink), -EBADMSG (key, size or
 * checksum wrong). store: write p atomically (0 or -errno). */
#define SECCOMP_CACHE_DIR_DEFAULT "/var/cache/clearbox"
#define SECCOMP_OPTIMIZE 2 /* libseccomp's binary tree (seccomp.c says why) */
int seccomp_cache_path(const char *name, char *out, size_t outlen);
int seccomp_cache_load(const char *name, struct seccomp_prog *out);
int seccomp_cache_store(const struct seccomp_prog *p);

/* The policy's canonical description: one rule per line, sorted
 * ("allow read", "notify ptrace", "errno:38 clone3", "allow clone if arg0&...",
 * ...), the same bytes the SHA-256 covers. Writes a NUL-terminated text into
 * out (truncated to outlen) and returns its full length, or -ENOENT.
 * sha256_hex (may be NULL) receives the hash. For the result's `policy`. */
int seccomp_policy_describe(const char *name, char *out, size_t outlen,
                            char sha256_hex[SECCOMP_SHA256_HEX], char *err, size_t errlen);

/* Child side. PR_SET_NO_NEW_PRIVS; 0 or -errno. */
int seccomp_nnp_set(void);
/* Install p with SECCOMP_FILTER_FLAG_NEW_LISTENER (no_new_privs must be set,
 * or the caller must hold CAP_SYS_ADMIN in its user namespace, as the
 * sandbox's init does: it loads the filter and the program inherits it).
 * Returns the listener fd (close-on-exec) or -errno. After this, only
 * allowlisted syscalls work without a supervisor: keep the rest of the child
 * to read/write/close/execve. */
int seccomp_prog_load(const struct seccomp_prog *p);

/* Parent side: duplicate fd number `fdnum` of process `pid` into this process
 * (pidfd_open + pidfd_getfd; close-on-exec). Returns the new fd or -errno
 * (-ESRCH: gone; -EPERM: no ptrace access to the child). */
int seccomp_listener_fetch(pid_t pid, int fdnum, char *err, size_t errlen);

/* SCM_RIGHTS over a unix socket (a socketpair made before clone). send: up to
 * SECCOMP_FDS_MAX fds with one byte of payload; async-signal-safe; 0 or
 * -errno. recv: waits for one message, stores up to max fds (close-on-exec)
 * and returns how many came, or -errno (-EPIPE: peer closed without sending;
 * fds beyond max or a truncated message are closed and -EMSGSIZE returned). */
#define SECCOMP_FDS_MAX 8
int seccomp_fds_send(int sock, const int *fds, size_t n);
int seccomp_fds_recv(int sock, int *fds, size_t max, char *err, size_t errlen);

/* Names for reports: the arch of an AUDIT_ARCH_* value ("x86_64", "x86",
 * "x32", "aarch64", ...; "unknown" otherwise) and a syscall's name for an
 * (AUDIT_ARCH, nr) pair into out ("syscall_NNN" when unknown). Thread-safe. */
const char *seccomp_arch_name(uint32_t audit_arch, int nr);
void seccomp_syscall_name(uint32_t audit_arch, int nr, char *out, size_t outlen);

#endif
