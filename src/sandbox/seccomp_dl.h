/* seccomp_dl.h - libseccomp, loaded with dlopen only when a filter has to be
 * generated (a cache miss) or a foreign syscall number named.
 *
 * Why: the exported filter comes from the BPF cache (seccomp.c) on almost
 * every `clearbox run`, so libseccomp is needed about once per host and
 * binary; linked normally, the dynamic loader maps and relocates it at every
 * start of every clearbox command (~0.1 ms measured on the reference machine:
 * hello-world 0.63 -> 0.76 ms median with -lseccomp). Only seccomp.c calls it,
 * through this table, so the linker (--as-needed) drops -lseccomp from the
 * binary. Types, constants and macros (SCMP_ACT_*, SCMP_A4, ...) still come
 * from <seccomp.h>. The soname is the ABI of Debian's libseccomp2 package.
 *
 * Threads: seccomp_dl() is safe from any thread (pthread_once); never call it
 * in a clone()d child (it may allocate). Errors: NULL with the reason in err
 * (the library is missing: install Debian's libseccomp2). The table lives
 * until exit. */
#ifndef CLEARBOX_SANDBOX_SECCOMP_DL_H
#define CLEARBOX_SANDBOX_SECCOMP_DL_H

#include <seccomp.h>
#include <stddef.h>

#define SECCOMP_DL_SONAME "libseccomp.so.2"

struct seccomp_dl {
    scmp_filter_ctx (*init)(uint32_t def_action);
    void (*release)(scmp_filter_ctx ctx);
    int (*attr_set)(scmp_filter_ctx ctx, enum scmp_filter_attr attr, uint32_t value);
    int (*rule_add)(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                    ...);
    int (*export_bpf)(const scmp_filter_ctx ctx, int fd);
    int (*syscall_resolve_name)(const char *name);
    char *(*syscall_resolve_num_arch)(uint32_t arch_token, int num);
};

const struct seccomp_dl *seccomp_dl(char *err, size_t errlen);

#endif
