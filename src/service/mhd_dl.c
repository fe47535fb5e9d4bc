/* mhd_dl.c - see mhd_dl.h (the same shape as util/curl_dl.c). */
#include "service/mhd_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/err.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct mhd_dl table;
static const struct mhd_dl *loaded;
static char load_error[ERR_LEN];

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        *missing = 1;
        snprintf(load_error, sizeof load_error, "%s has no symbol %s", MHD_DL_SONAME, name);
    }
    return p;
}

#define LOAD(member, name) table.member = (__typeof__(table.member))sym(h, name, &missing)

static void load(void)
{
    void *h = dlopen(MHD_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load %s (install Debian's libmicrohttpd12): %s", MHD_DL_SONAME,
                 e ? e : "unknown error");
        return;
    }
    int missing = 0;
    LOAD(start_daemon, "MHD_start_daemon");
    LOAD(stop_daemon, "MHD_stop_daemon");
    LOAD(quiesce_daemon, "MHD_quiesce_daemon");
    LOAD(lookup_connection_value, "MHD_lookup_connection_value");
    LOAD(get_connection_info, "MHD_get_connection_info");
    LOAD(create_response_from_buffer, "MHD_create_response_from_buffer");
    LOAD(create_response_from_callback, "MHD_create_response_from_callback");
    LOAD(add_response_header, "MHD_add_response_header");
    LOAD(queue_response, "MHD_queue_response");
    LOAD(destroy_response, "MHD_destroy_response");
    if (missing)
        return; /* keep the handle mapped: see curl_dl.c */
    loaded = &table;
}

const struct mhd_dl *mhd_dl(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (!loaded)
        err_set(err, errlen, -ENOENT, "%s", load_error);
    return loaded;
}
