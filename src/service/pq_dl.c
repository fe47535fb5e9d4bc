/* pq_dl.c - see pq_dl.h. The same shape as util/curl_dl.c. */
#include "service/pq_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/err.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct pq_dl table;
static const struct pq_dl *loaded;
static char load_error[ERR_LEN];

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        *missing = 1;
        snprintf(load_error, sizeof load_error, "%s has no symbol %s", PQ_DL_SONAME, name);
    }
    return p;
}

/* Assign dlsym's void * to a typed function pointer (POSIX allows it). */
#define SYM(field, name) (*(void **)&table.field = sym(h, name, &missing))

static void load(void)
{
    void *h = dlopen(PQ_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load %s (install Debian's libpq5): %s", PQ_DL_SONAME,
                 e ? e : "unknown error");
        return;
    }
    int missing = 0;
    SYM(libVersion, "PQlibVersion");
    SYM(connectdbParams, "PQconnectdbParams");
    SYM(status, "PQstatus");
    SYM(transactionStatus, "PQtransactionStatus");
    SYM(errorMessage, "PQerrorMessage");
    SYM(finish, "PQfinish");
    SYM(reset, "PQreset");
    SYM(backendPID, "PQbackendPID");
    SYM(serverVersion, "PQserverVersion");
    SYM(db, "PQdb");
    SYM(user, "PQuser");
    SYM(host, "PQhost");
    SYM(port, "PQport");
    SYM(parameterStatus, "PQparameterStatus");
    SYM(setNoticeProcessor, "PQsetNoticeProcessor");
    SYM(exec, "PQexec");
    SYM(execParams, "PQexecParams");
    SYM(prepare, "PQprepare");
    SYM(execPrepared, "PQexecPrepared");
    SYM(resultStatus, "PQresultStatus");
    SYM(resultErrorMessage, "PQresultErrorMessage");
    SYM(resultErrorField, "PQresultErrorField");
    SYM(clear, "PQclear");
    SYM(ntuples, "PQntuples");
    SYM(nfields, "PQnfields");
    SYM(ftype, "PQftype");
    SYM(getvalue, "PQgetvalue");
    SYM(getlength, "PQgetlength");
    SYM(getisnull, "PQgetisnull");
    SYM(cmdTuples, "PQcmdTuples");
    if (missing)
        return; /* keep the handle: symbols of a half-usable library stay mapped */
    loaded = &table;
}

const struct pq_dl *pq_dl(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (!loaded)
        err_set(err, errlen, -ENOENT, "%s", load_error);
    return loaded;
}
