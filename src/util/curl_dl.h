/* curl_dl.h - libcurl, loaded with dlopen the first time it is needed.
 *
 * Why: libcurl drags in some thirty shared libraries (TLS, HTTP/2, LDAP,
 * Kerberos, ...). Linked normally, the dynamic loader maps and relocates all
 * of them at every start of every clearbox command — milliseconds on each
 * `clearbox run`, most of which never exports a span. Loading it on first use
 * costs only the commands that talk HTTP (OTLP export, webhooks, clients).
 * The types and constants still come from <curl/curl.h>; only the calls go
 * through this table. The soname is the ABI Debian's libcurl4 package ships.
 *
 * Threads: curl_dl() is safe from any thread (pthread_once); it also runs
 * curl_global_init once. Errors: NULL with the reason in err (the library is
 * missing: install Debian's libcurl4). The table lives until exit. */
#ifndef CLEARBOX_UTIL_CURL_DL_H
#define CLEARBOX_UTIL_CURL_DL_H

#include <curl/curl.h>
#include <stddef.h>

#define CURL_DL_SONAME "libcurl.so.4"

struct curl_dl {
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
};

const struct curl_dl *curl_dl(char *err, size_t errlen);

#endif
