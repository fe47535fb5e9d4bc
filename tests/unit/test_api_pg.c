/* test_api_pg.c - the HTTP API end to end on PostgreSQL: the same suite as
 * SQLite (api_cases.h) against a real PostgreSQL server that this binary
 * starts (pg_support.h: initdb + postgres on a unix socket in a temp dir,
 * stopped at exit), plus what only PostgreSQL has: readiness noticing that
 * the database server went away.
 *
 * Each test gets its own schema (search_path in the URL's options), so the
 * tests share one cluster and one database but never see each other's rows.
 * Without a PostgreSQL server installed, every test here fails and says what
 * to install (.ci/run installs it; skipping would hide a missing backend). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pg_support.h"
#include "test.h"

#define BACKEND_NAME "postgres"

/* A schema per test process: t<pid>_api. With no cluster, a URL that cannot
 * connect, so api_start fails and says why. */
static void backend_db_url(char *out, size_t cap)
{
    char schema[64], url[512];
    snprintf(schema, sizeof schema, "t%d_api", (int)getpid());
    const char *u = pg_test_url(schema, url, sizeof url);
    if (!u)
        fprintf(stderr, "    no PostgreSQL test cluster: %s\n", pg_test_error());
    snprintf(out, cap, "%s", u ? u : "postgresql:///clearbox?host=/nonexistent-no-test-cluster");
}

#include "api_cases.h"

/* One cluster for the whole binary, started before the first test forks. */
__attribute__((constructor(300))) static void cluster_start(void)
{
    pg_test_start_for_binary("test_api_pg");
}

__attribute__((destructor)) static void cluster_stop(void) { pg_test_stop(); }

/* ---- PostgreSQL only -------------------------------------------------------------- */

/* The PostgreSQL counterpart of SQLite's deleted file: the server stops.
 * This test starts a cluster of its own (owned by this forked test process)
 * so stopping it leaves the shared one to the other tests. */
TEST(readyz_is_503_when_the_postgres_server_is_stopped)
{
    char err[512];
    ASSERT_MSG(pg_test_start(err, sizeof err) == 0, "second cluster: %s", err);
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    if (!a)
        pg_test_stop();
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_MSG(r.status == 200, "readyz %ld: %s", r.status, r.body);
    resp_free(&r);
    char id[32];
    ASSERT_EQ(submit(PY, NULL, id), 202);
    pg_test_stop();
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    fprintf(stderr, "    readyz after stop: %ld %s\n", r.status, r.body ? r.body : "");
    ASSERT_EQ(r.status, 503);
    ASSERT(json_is_false(jget(r.json, "checks.database.ok")));
    ASSERT_CONTAINS(jstr(r.json, "checks.database.message"), "PostgreSQL");
    ASSERT_CONTAINS(r.headers, "Retry-After:");
    resp_free(&r);
    /* the API says the store is unavailable, it does not hang or crash */
    ASSERT_EQ(request("POST", "/v1/evaluations", JSON_CT, PY, &r), 0);
    fprintf(stderr, "    submit after stop: %ld %s\n", r.status, r.body ? r.body : "");
    ASSERT(r.status >= 500);
    resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    ASSERT_EQ(request("GET", path, NULL, NULL, &r), 0);
    fprintf(stderr, "    get after stop: %ld %s\n", r.status, r.body ? r.body : "");
    ASSERT(r.status >= 500);
    resp_free(&r);
    ASSERT_EQ(request("GET", "/healthz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200); /* alive, just not ready */
    resp_free(&r);
    api_quiesce(a);
    api_stop(a);
}
