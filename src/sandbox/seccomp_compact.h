/* seccomp_compact.h - a small BPF program for the sandbox's syscall policy,
 * and the interpreter that proves it equal to libseccomp's.
 *
 * Why. The kernel's cost to install a filter grows with its length (checks,
 * conversion to eBPF, JIT, and the per-syscall action cache it computes by
 * running the filter once per syscall number): measured here, about 40 us
 * plus 0.29 us per instruction. libseccomp's binary tree for the default
 * policy is 487 instructions (~180 us, on the way to every program's start);
 * it tests each syscall number on its own. Most of the policy is runs of
 * neighbouring numbers with the same action, so a binary search over those
 * runs does the same job in about a quarter of the instructions.
 *
 * How it is trusted. libseccomp still resolves every name and still builds
 * its own program; seccomp.c keeps the compact program only when
 * seccomp_bpf_equivalent() finds both give the same action for every
 * syscall number up to SECCOMP_COMPACT_NR_CHECK, the x32 range, the edges of
 * the 32-bit space, foreign architectures, and, for each argument rule,
 * argument values on both sides of every bit of its mask. Otherwise the
 * libseccomp program is used, as before. Both run only on the build (a
 * cache miss), never per sandbox.
 *
 * Threads: no shared state. Errors: negative errno. */
#ifndef CLEARBOX_SANDBOX_SECCOMP_COMPACT_H
#define CLEARBOX_SANDBOX_SECCOMP_COMPACT_H

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECCOMP_COMPACT_RULES_MAX 512 /* (nr, action) pairs */
#define SECCOMP_COMPACT_CONDS_MAX 8   /* argument rules */
#define SECCOMP_COMPACT_NR_CHECK 2048 /* every number below is compared */

/* "allow if (args[arg] & mask) == 0, else if_set": the policy's argument
 * rules all have this shape (sendto's destination, clone's namespace flags,
 * seccomp's NEW_LISTENER flag). */
struct seccomp_cond {
    int nr;
    int arg;          /* 0..5 */
    uint64_t mask;    /* non-zero */
    uint32_t if_clear; /* SECCOMP_RET_* when (arg & mask) == 0 */
    uint32_t if_set;
};

struct seccomp_rules {
    uint32_t arch;        /* AUDIT_ARCH_* accepted; other arches get badarch */
    bool x32_bit;         /* x86_64: numbers with bit 30 set are x32: badarch */
    uint32_t badarch;     /* action for a foreign arch (and x32) */
    uint32_t dflt;        /* action for a number listed nowhere */
    size_t n;
    int nr[SECCOMP_COMPACT_RULES_MAX];
    uint32_t act[SECCOMP_COMPACT_RULES_MAX];
    size_t nconds;
    struct seccomp_cond conds[SECCOMP_COMPACT_CONDS_MAX];
};

/* Compile rules into out (room for max instructions). Returns the length,
 * -EINVAL for inconsistent rules (a number listed twice, or both plain and
 * conditional), -E2BIG when it does not fit or a jump would exceed BPF's
 * 255-instruction reach. */
int seccomp_compact_build(const struct seccomp_rules *r, struct sock_filter *out, size_t max);

/* Run a classic BPF seccomp program on one input, as the kernel would.
 * *ok is false (and 0 returned) for a malformed program: an instruction the
 * interpreter does not know, a jump or load out of range, no return. */
uint32_t seccomp_bpf_run(const struct sock_filter *p, size_t len, const struct seccomp_data *d,
                         bool *ok);

/* Do a and b give the same action on the inputs described above (r names the
 * argument rules to probe)? 1 yes, 0 no (the first difference in why), or
 * -EINVAL if either program is malformed. */
int seccomp_bpf_equivalent(const struct sock_filter *a, size_t alen, const struct sock_filter *b,
                           size_t blen, const struct seccomp_rules *r, char *why, size_t whylen);

#endif
