/* status.c - `clearbox status ID`: one evaluation's record from a running
 * service (GET /v1/evaluations/{id}).
 *
 * Output as `clearbox run` prints a result: readable on a terminal, the full
 * record as JSON with --json or when stdout is not a terminal.
 * Exit status: 0 the record was shown (whatever its status), 1 the service
 * refused (404: no such evaluation) or could not be reached, 2 usage error. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "util/err.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: clearbox status [options] ID\n"
               "Show evaluation ID from a running `clearbox serve`.\n"
               "\n"
               "  --json                the full record as JSON (default when stdout is not a\n"
               "                        terminal)\n");
    client_usage_common(f);
    fprintf(f, "Exit status: 0 shown, 1 refused (no such evaluation) or unreachable, 2 usage\n"
               "error. See docs/cli.md.\n");
}

static int cmd_status(int argc, char **argv)
{
    struct client c;
    int rc = client_init(&c, "status");
    if (rc)
        return rc;
    bool json = !isatty(1);
    const char *id;
    if ((rc = client_args_id(&c, argc, argv, usage, &json, &id)) >= 0)
        return rc;
    char path[128], err[ERR_LEN];
    snprintf(path, sizeof path, "/v1/evaluations/%s", id);
    struct client_response r;
    if (client_request(&c, "GET", path, NULL, 0, NULL, &r, err, sizeof err) < 0)
        return cli_fail("status", "%s", err);
    int ret = 0;
    if (r.status != 200 || !json_is_object(r.json))
        ret = client_fail_response(&c, &r);
    else if (json)
        client_print_body(stdout, &r);
    else
        client_print_record_text(stdout, r.json);
    client_response_free(&r);
    return ret;
}

CLI_COMMAND(status, 31, "show one evaluation of a running service", cmd_status)
