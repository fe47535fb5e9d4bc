/* test_api.c - the HTTP API end to end on a real SQLite file: the shared API
 * suite (api_cases.h, also run on PostgreSQL by test_api_pg.c) plus what only
 * SQLite has: readiness noticing that the database file was deleted. */
#include <stdio.h>
#include <unistd.h>

#include "test.h"

#define BACKEND_NAME "sqlite"

static char g_db[600];

static void backend_db_url(char *out, size_t cap)
{
    snprintf(g_db, sizeof g_db, "%s/api.db", test_tmpdir());
    snprintf(out, cap, "sqlite:%s", g_db);
}

#include "api_cases.h"

/* ---- SQLite only ------------------------------------------------------------------ */

TEST(readyz_is_503_when_the_database_is_gone)
{
    struct service_config c;
    base_config(&c);
    api_t *a = start(&c);
    ASSERT(a);
    struct resp r;
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200);
    resp_free(&r);
    char p[700];
    unlink(g_db);
    snprintf(p, sizeof p, "%s-wal", g_db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", g_db);
    unlink(p);
    ASSERT_EQ(request("GET", "/readyz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 503);
    ASSERT(json_is_false(jget(r.json, "checks.database.ok")));
    /* no token configured: every request may see the reason */
    ASSERT_CONTAINS(jstr(r.json, "checks.database.message"), "gone");
    ASSERT_CONTAINS(r.headers, "Retry-After:");
    resp_free(&r);
    ASSERT_EQ(request("GET", "/healthz", NULL, NULL, &r), 0);
    ASSERT_EQ(r.status, 200); /* alive, just not ready */
    resp_free(&r);
    api_quiesce(a);
    api_stop(a);
}
