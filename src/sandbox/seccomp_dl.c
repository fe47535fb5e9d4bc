/* seccomp_dl.c - see seccomp_dl.h. The same shape as util/curl_dl.c. */
#include "sandbox/seccomp_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/err.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct seccomp_dl table;
static const struct seccomp_dl *loaded;
static char load_error[ERR_LEN];

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        *missing = 1;
        snprintf(load_error, sizeof load_error, "%s has no symbol %s", SECCOMP_DL_SONAME, name);
    }
    return p;
}

/* Assign dlsym's void * to a typed function pointer (POSIX allows it). */
#define SYM(field, name) (*(void **)&table.field = sym(h, name, &missing))

static void load(void)
{
    void *h = dlopen(SECCOMP_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load %s (install Debian's libseccomp2): %s", SECCOMP_DL_SONAME,
                 e ? e : "unknown error");
        return;
    }
    int missing = 0;
    SYM(init, "seccomp_init");
    SYM(release, "seccomp_release");
    SYM(attr_set, "seccomp_attr_set");
    SYM(rule_add, "seccomp_rule_add");
    SYM(export_bpf, "seccomp_export_bpf");
    SYM(syscall_resolve_name, "seccomp_syscall_resolve_name");
    SYM(syscall_resolve_num_arch, "seccomp_syscall_resolve_num_arch");
    if (missing)
        return; /* keep the handle: symbols of a half-usable library stay mapped */
    loaded = &table;
}

const struct seccomp_dl *seccomp_dl(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (!loaded)
        err_set(err, errlen, -ENOENT, "%s", load_error);
    return loaded;
}
