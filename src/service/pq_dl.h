/* pq_dl.h - libpq, loaded with dlopen the first time it is needed.
 *
 * Why: `clearbox run` must not pay for the service's heavy libraries (see
 * util/curl_dl.h and docs/architecture.md). libpq pulls in OpenSSL, GSSAPI and
 * LDAP; linked normally, every start of every clearbox command would map them.
 * Only the PostgreSQL store backend (store_pg.c) and its tests call libpq, and
 * only through this table, so the linker (--as-needed) drops -lpq from the
 * binary. Types and constants still come from <libpq-fe.h>. The soname is the
 * ABI of Debian's libpq5 package.
 *
 * Threads: pq_dl() is safe from any thread (pthread_once). A PGconn is not:
 * one connection per thread, or a lock around it (store.c's handle mutex).
 * Errors: NULL with the reason in err (the library is missing: install
 * Debian's libpq5). The table lives until exit. */
#ifndef CLEARBOX_SERVICE_PQ_DL_H
#define CLEARBOX_SERVICE_PQ_DL_H

#include <libpq-fe.h>
#include <stddef.h>

#define PQ_DL_SONAME "libpq.so.5"

struct pq_dl {
    int (*libVersion)(void);
    PGconn *(*connectdbParams)(const char *const *keywords, const char *const *values,
                               int expand_dbname);
    ConnStatusType (*status)(const PGconn *);
    PGTransactionStatusType (*transactionStatus)(const PGconn *);
    char *(*errorMessage)(const PGconn *);
    void (*finish)(PGconn *);
    void (*reset)(PGconn *);
    int (*backendPID)(const PGconn *);
    int (*serverVersion)(const PGconn *);
    char *(*db)(const PGconn *);
    char *(*user)(const PGconn *);
    char *(*host)(const PGconn *);
    char *(*port)(const PGconn *);
    const char *(*parameterStatus)(const PGconn *, const char *);
    PQnoticeProcessor (*setNoticeProcessor)(PGconn *, PQnoticeProcessor, void *);
    PGresult *(*exec)(PGconn *, const char *);
    PGresult *(*execParams)(PGconn *, const char *, int, const Oid *, const char *const *,
                            const int *, const int *, int);
    PGresult *(*prepare)(PGconn *, const char *, const char *, int, const Oid *);
    PGresult *(*execPrepared)(PGconn *, const char *, int, const char *const *, const int *,
                              const int *, int);
    ExecStatusType (*resultStatus)(const PGresult *);
    char *(*resultErrorMessage)(const PGresult *);
    char *(*resultErrorField)(const PGresult *, int);
    void (*clear)(PGresult *);
    int (*ntuples)(const PGresult *);
    int (*nfields)(const PGresult *);
    Oid (*ftype)(const PGresult *, int);
    char *(*getvalue)(const PGresult *, int, int);
    int (*getlength)(const PGresult *, int, int);
    int (*getisnull)(const PGresult *, int, int);
    char *(*cmdTuples)(PGresult *);
};

const struct pq_dl *pq_dl(char *err, size_t errlen);

#endif
