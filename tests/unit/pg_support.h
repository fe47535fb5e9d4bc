/* pg_support.h - a throwaway PostgreSQL cluster for tests.
 *
 * pg_test_start() runs initdb into a fresh /tmp/clearbox-pg.XXXXXX and starts
 * `postgres` on a unix socket in that directory only (listen_addresses is
 * empty: no TCP at all), as the `postgres` user when run as root (PostgreSQL
 * refuses root), with the parent-death signal set to SIGINT (fast shutdown),
 * so the server goes away with the process that started it even when that
 * process is killed. pg_test_stop() shuts it down and removes the directory.
 * The binaries come from $CLEARBOX_PG_BINDIR, else the newest
 * /usr/lib/postgresql/<15..17>/bin (Debian's postgresql package); when none
 * is there, start fails with a message that says what to install: the
 * PostgreSQL tests fail, they do not skip (.ci/run installs PostgreSQL).
 *
 * Threads: start and stop from the main thread only. Errors: 0 or a negative
 * errno with words in err. Only for tests: trust authentication, one cluster
 * per process. */
#ifndef CLEARBOX_TEST_PG_SUPPORT_H
#define CLEARBOX_TEST_PG_SUPPORT_H

#include <libpq-fe.h>
#include <stddef.h>

int pg_test_start(char *err, size_t errlen);
void pg_test_stop(void);
/* For a test binary's constructor: pg_test_start() unless the binary was
 * only asked to list its tests (-l); a failure is said on stderr under
 * name (the tests that need the cluster then fail with their own words). */
void pg_test_start_for_binary(const char *name);
/* Why start failed ("" if it did not), for tests to report. */
const char *pg_test_error(void);

/* "postgresql:///clearbox?host=DIR&port=N&user=postgres", or NULL when no
 * cluster runs. With schema != NULL: "...&options=-csearch_path%3DSCHEMA" and
 * the schema is created first (a fresh namespace per test; its name must be
 * [a-z0-9_]). */
const char *pg_test_url(const char *schema, char *out, size_t cap);

/* A superuser connection to the test database with search_path = schema
 * (NULL: public); NULL with err on failure. Close it with pg_test_close. */
PGconn *pg_test_connect(const char *schema, char *err, size_t errlen);
void pg_test_close(PGconn *c);
/* Run sql (one or more statements) on a fresh connection; 0 or -EIO. */
int pg_test_exec(const char *schema, const char *sql, char *err, size_t errlen);
/* Run one query returning one value; the text of row 0 column 0 in out. */
int pg_test_query1(PGconn *c, const char *sql, char *out, size_t cap, char *err, size_t errlen);

#endif
