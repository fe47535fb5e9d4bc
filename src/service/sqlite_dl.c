/* sqlite_dl.c - see sqlite_dl.h. The same shape as util/curl_dl.c. */
#include "service/sqlite_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/err.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct sqlite_dl table;
const struct sqlite_dl *sqlite_dl__loaded;
static char load_error[ERR_LEN];

static void *sym(void *h, const char *name, int *missing)
{
    void *p = dlsym(h, name);
    if (!p && !*missing) {
        *missing = 1;
        snprintf(load_error, sizeof load_error, "%s has no symbol %s", SQLITE_DL_SONAME, name);
    }
    return p;
}

/* Assign dlsym's void * to a typed function pointer (POSIX allows it). */
#define SYM(field, name) (*(void **)&table.field = sym(h, name, &missing))

static void load(void)
{
    void *h = dlopen(SQLITE_DL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load %s (install Debian's libsqlite3-0): %s", SQLITE_DL_SONAME,
                 e ? e : "unknown error");
        return;
    }
    int missing = 0;
    SYM(open_v2, "sqlite3_open_v2");
    SYM(close_v2, "sqlite3_close_v2");
    SYM(busy_timeout, "sqlite3_busy_timeout");
    SYM(busy_handler, "sqlite3_busy_handler");
    SYM(exec, "sqlite3_exec");
    SYM(free, "sqlite3_free");
    SYM(errmsg, "sqlite3_errmsg");
    SYM(errstr, "sqlite3_errstr");
    SYM(system_errno, "sqlite3_system_errno");
    SYM(changes, "sqlite3_changes");
    SYM(last_insert_rowid, "sqlite3_last_insert_rowid");
    SYM(get_autocommit, "sqlite3_get_autocommit");
    SYM(prepare_v2, "sqlite3_prepare_v2");
    SYM(prepare_v3, "sqlite3_prepare_v3");
    SYM(step, "sqlite3_step");
    SYM(reset, "sqlite3_reset");
    SYM(finalize, "sqlite3_finalize");
    SYM(clear_bindings, "sqlite3_clear_bindings");
    SYM(bind_int, "sqlite3_bind_int");
    SYM(bind_int64, "sqlite3_bind_int64");
    SYM(bind_null, "sqlite3_bind_null");
    SYM(bind_text, "sqlite3_bind_text");
    SYM(bind_blob64, "sqlite3_bind_blob64");
    SYM(column_type, "sqlite3_column_type");
    SYM(column_int, "sqlite3_column_int");
    SYM(column_int64, "sqlite3_column_int64");
    SYM(column_text, "sqlite3_column_text");
    SYM(column_blob, "sqlite3_column_blob");
    SYM(column_bytes, "sqlite3_column_bytes");
    if (missing)
        return; /* keep the handle: symbols of a half-usable library stay mapped */
    sqlite_dl__loaded = &table;
}

const struct sqlite_dl *sqlite_dl(char *err, size_t errlen)
{
    pthread_once(&once, load);
    if (!sqlite_dl__loaded)
        err_set(err, errlen, -ENOENT, "%s", load_error);
    return sqlite_dl__loaded;
}
