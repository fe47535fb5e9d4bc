/* cancel.c - `clearbox cancel ID` (POST /v1/evaluations/{id}/cancel).
 *
 * A queued evaluation is cancelled at once and never runs; a running one is
 * marked and its worker kills it, so it ends cancelled a moment later.
 * Prints the new status (--json: the service's answer).
 * Exit status: 0 cancelled or cancel requested, 1 the service refused (409:
 * it already finished; 404) or could not be reached, 2 usage error. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "util/err.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: clearbox cancel [options] ID\n"
               "Cancel evaluation ID on a running `clearbox serve`: a queued one never runs,\n"
               "a running one is killed; both end cancelled.\n"
               "\n"
               "  --json                print the service's answer as JSON\n");
    client_usage_common(f);
    fprintf(f, "Exit status: 0 cancelled (or cancel requested for a running one), 1 refused\n"
               "(already finished, no such evaluation) or unreachable, 2 usage error.\n"
               "See docs/cli.md.\n");
}

static int cmd_cancel(int argc, char **argv)
{
    struct client c;
    int rc = client_init(&c, "cancel");
    if (rc)
        return rc;
    bool json = false;
    const char *id;
    if ((rc = client_args_id(&c, argc, argv, usage, &json, &id)) >= 0)
        return rc;
    char path[128], err[ERR_LEN];
    snprintf(path, sizeof path, "/v1/evaluations/%s/cancel", id);
    struct client_response r;
    if (client_request(&c, "POST", path, NULL, 0, NULL, &r, err, sizeof err) < 0)
        return cli_fail("cancel", "%s", err);
    int ret = 0;
    const char *st = json_string_value(json_object_get(r.json, "status"));
    if ((r.status != 200 && r.status != 202) || !st) {
        ret = client_fail_response(&c, &r);
    } else if (json) {
        client_print_body(stdout, &r);
    } else if (r.status == 200) {
        printf("%s %s\n", id, strcmp(st, "cancelled") ? "cancel requested" : "cancelled");
    } else {
        printf("%s cancel requested: it is running and ends cancelled when its worker has "
               "killed it\n",
               id);
    }
    fflush(stdout);
    client_response_free(&r);
    return ret;
}

CLI_COMMAND(cancel, 33, "cancel a queued or running evaluation", cmd_cancel)
