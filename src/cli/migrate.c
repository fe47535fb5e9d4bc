/* migrate.c - `clearbox migrate`: create or upgrade the evaluation store's
 * schema (service/store.h, migrations.c), or show where it stands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "service/store.h"
#include "util/err.h"
#include "util/timeutil.h"

static void migrate_usage(FILE *f)
{
    fprintf(f,
            "usage: clearbox migrate [--db URL] [--status]\n"
            "\n"
            "Apply the evaluation store's pending schema migrations, in order, each in its\n"
            "own transaction, and print what was done. Running it again applies nothing.\n"
            "'clearbox serve' applies pending migrations at startup as well.\n"
            "\n"
            "  --db URL    sqlite:PATH or postgres://... (default: $CLEARBOX_DB, else %s)\n"
            "  --status    only show each migration and whether it is applied\n"
            "  --help      this help\n",
            STORE_DEFAULT_URL);
}

static void print_states(const struct store_migration_state *st, size_t n, bool all)
{
    for (size_t i = 0; i < n; i++) {
        if (!all && !st[i].applied_now)
            continue;
        char when[TIME_RFC3339_LEN] = "pending";
        if (st[i].applied_ns > 1)
            time_fmt_rfc3339((uint64_t)st[i].applied_ns, when);
        if (all)
            printf("%7d  %-30s  %s%s\n", st[i].version, when, st[i].name,
                   st[i].applied_now ? " (applied now)" : "");
        else
            printf("applied %d %s\n", st[i].version, st[i].name);
    }
}

static int cmd_migrate(int argc, char **argv)
{
    const char *url = getenv("CLEARBOX_DB");
    bool status_only = false;
    for (int i = 1; i < argc; i++) {
        bool bad = false;
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            migrate_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--status")) {
            status_only = true;
        } else if (cli_opt(argc, argv, &i, "--db", &v, &bad)) {
            if (bad)
                return cli_usage_error("migrate", "--db needs a URL (sqlite:PATH)");
            url = v;
        } else {
            return cli_usage_error("migrate", "unknown argument '%s'", argv[i]);
        }
    }
    if (!url || !*url)
        url = STORE_DEFAULT_URL;

    char err[ERR_LEN];
    store_t *s;
    struct store_options opt = {.flags = STORE_OPEN_NO_CHECK};
    if (store_open(url, &opt, &s, err, sizeof err) < 0)
        return cli_fail("migrate", "%s", err);
    struct store_migration_state st[64];
    size_t n = 0;
    int rc = status_only ? store_migration_status(s, st, 64, &n, err, sizeof err)
                         : store_migrate(s, st, 64, &n, err, sizeof err);
    store_close(s);
    if (rc < 0)
        return cli_fail("migrate", "%s", err);

    int current = 0, pending = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i].applied_ns)
            current = st[i].version;
        else
            pending++;
    }
    /* postgres://user:PASSWORD@host/...: never print the password. */
    const char *at = strchr(url, '@'), *colon = strstr(url, "://");
    colon = colon ? strchr(colon + 3, ':') : NULL;
    if (at && colon && colon < at && !strncmp(url, "postgres", 8))
        printf("database %.*s:***%s\n", (int)(colon - url), url, at);
    else
        printf("database %s\n", url);
    if (status_only) {
        printf("%7s  %-30s  %s\n", "version", "applied", "name");
        print_states(st, n, true);
        printf("schema at version %d of %d, %d pending\n", current, store_schema_latest(),
               pending);
    } else {
        print_states(st, n, false);
        if (rc == 0)
            printf("schema at version %d: up to date, nothing to apply\n", current);
        else
            printf("schema at version %d: %d migration%s applied\n", current, rc,
                   rc == 1 ? "" : "s");
    }
    return 0;
}

CLI_COMMAND(migrate, 80, "create or upgrade the evaluation store's schema", cmd_migrate);
