/* curl_dl.c - see curl_dl.h. */
#include "util/curl_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/err.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct curl_dl table;
static const struct curl_dl *loaded;
static char load_error[ERR_LEN];

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        *missing = 1;
        snprintf(load_error, sizeof load_error, "%s has no symbol %s", CURL_DL_SONAME, name);
    }
    return p;
}

static void load(void)
{
    void *h = dlopen(CURL_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load %s (install Debian's libcurl4): %s", CURL_DL_SONAME,
                 e ? e : "unknown error");
        return;
    }
    int missing = 0;
    CURLcode (*global_init)(long) = (CURLcode(*)(long))sym(h, "curl_global_init", &missing);
    table.easy_init = (CURL * (*)(void)) sym(h, "curl_easy_init", &missing);
    table.easy_setopt = (CURLcode(*)(CURL *, CURLoption, ...))sym(h, "curl_easy_setopt", &missing);
    table.easy_perform = (CURLcode(*)(CURL *))sym(h, "curl_easy_perform", &missing);
    table.easy_getinfo = (CURLcode(*)(CURL *, CURLINFO, ...))sym(h, "curl_easy_getinfo", &missing);
    table.easy_cleanup = (void (*)(CURL *))sym(h, "curl_easy_cleanup", &missing);
    table.easy_strerror = (const char *(*)(CURLcode))sym(h, "curl_easy_strerror", &missing);
    table.slist_append = (struct curl_slist * (*)(struct curl_slist *, const char *))
        sym(h, "curl_slist_append", &missing);
    table.slist_free_all = (void (*)(struct curl_slist *))sym(h, "curl_slist_free_all", &missing);
    if (missing)
        return; /* keep the handle: symbols of a half-usable library stay mapped */
    if (global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed");
        return;
    }
    loaded = &table;
}

const struct curl_dl *curl_dl(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (!loaded)
        err_set(err, errlen, -ENOENT, "%s", load_error);
    return loaded;
}
