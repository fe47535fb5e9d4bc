/* mhd_dl.h - libmicrohttpd, loaded with dlopen the first time it is needed.
 *
 * Why: the start-time rule (docs/architecture.md). `clearbox run` and the
 * other short commands must not map the HTTP server library and its
 * dependencies (GnuTLS and friends) at every start; only `clearbox serve`
 * pays for it. Types and constants come from <microhttpd.h>; the calls go
 * through this table, so the linker (--as-needed) drops -lmicrohttpd. The
 * soname is the ABI of Debian's libmicrohttpd12 package.
 *
 * Threads: mhd_dl() is safe from any thread (pthread_once). Errors: NULL with
 * the reason in err (install Debian's libmicrohttpd12). The table lives until
 * exit. */
#ifndef CLEARBOX_SERVICE_MHD_DL_H
#define CLEARBOX_SERVICE_MHD_DL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <microhttpd.h>

#define MHD_DL_SONAME "libmicrohttpd.so.12"

/* Each member has exactly the type of the function it stands for. */
struct mhd_dl {
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_quiesce_daemon) *quiesce_daemon;
    __typeof__(MHD_lookup_connection_value) *lookup_connection_value;
    __typeof__(MHD_get_connection_info) *get_connection_info;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_create_response_from_callback) *create_response_from_callback;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
};

const struct mhd_dl *mhd_dl(char *err, size_t errlen);

#endif
