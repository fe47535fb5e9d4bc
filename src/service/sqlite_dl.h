/* sqlite_dl.h - SQLite, loaded with dlopen the first time a store opens.
 *
 * Why: `clearbox run` must not pay for the service's libraries (see
 * util/curl_dl.h and docs/architecture.md). libsqlite3 is 1.4 MB of code with
 * ~1,000 relocations: linked normally, the dynamic loader maps and relocates
 * it at every start of every clearbox command, about 0.4 ms per start on the
 * reference machine (measured: a hello-world 0.46 ms -> 0.75 ms minimum with
 * -lsqlite3). Only the SQLite store backend (store_sqlite.c) calls it, and
 * only through this table, so the linker (--as-needed) drops -lsqlite3 from
 * the binary. Types and constants still come from <sqlite3.h>. The soname is
 * the ABI of Debian's libsqlite3-0 package.
 *
 * Threads: sqlite_dl() is safe from any thread (pthread_once). Once it has
 * returned the table, sqlite_dl_table() returns the same pointer without a
 * check: call it only on objects made after a successful sqlite_dl() (an
 * open database), which is what store_sqlite.c does. Errors: NULL with the
 * reason in err (the library is missing: install Debian's libsqlite3-0). The
 * table lives until exit. */
#ifndef CLEARBOX_SERVICE_SQLITE_DL_H
#define CLEARBOX_SERVICE_SQLITE_DL_H

#include <sqlite3.h>
#include <stddef.h>

#define SQLITE_DL_SONAME "libsqlite3.so.0"

struct sqlite_dl {
    int (*open_v2)(const char *, sqlite3 **, int, const char *);
    int (*close_v2)(sqlite3 *);
    int (*busy_timeout)(sqlite3 *, int);
    int (*busy_handler)(sqlite3 *, int (*)(void *, int), void *);
    int (*exec)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *,
                char **);
    void (*free)(void *);
    const char *(*errmsg)(sqlite3 *);
    const char *(*errstr)(int);
    int (*system_errno)(sqlite3 *);
    int (*changes)(sqlite3 *);
    sqlite3_int64 (*last_insert_rowid)(sqlite3 *);
    int (*get_autocommit)(sqlite3 *);
    int (*prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int (*prepare_v3)(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **,
                      const char **);
    int (*step)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*finalize)(sqlite3_stmt *);
    int (*clear_bindings)(sqlite3_stmt *);
    int (*bind_int)(sqlite3_stmt *, int, int);
    int (*bind_int64)(sqlite3_stmt *, int, sqlite3_int64);
    int (*bind_null)(sqlite3_stmt *, int);
    int (*bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int (*bind_blob64)(sqlite3_stmt *, int, const void *, sqlite3_uint64, void (*)(void *));
    int (*column_type)(sqlite3_stmt *, int);
    int (*column_int)(sqlite3_stmt *, int);
    sqlite3_int64 (*column_int64)(sqlite3_stmt *, int);
    const unsigned char *(*column_text)(sqlite3_stmt *, int);
    const void *(*column_blob)(sqlite3_stmt *, int);
    int (*column_bytes)(sqlite3_stmt *, int);
};

const struct sqlite_dl *sqlite_dl(char *err, size_t errlen);

/* The table sqlite_dl() loaded (see Threads above). */
extern const struct sqlite_dl *sqlite_dl__loaded;
static inline const struct sqlite_dl *sqlite_dl_table(void) { return sqlite_dl__loaded; }

#endif
