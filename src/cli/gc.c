/* gc.c - `clearbox gc`: remove what a crashed clearbox left behind (state
 * directories and their workspace mounts, per-evaluation cgroups with their
 * processes) and say what was removed. Live runs are never touched: each
 * holds a lock on its state directory. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "util/buf.h"
#include "util/err.h"

static int cmd_gc(int argc, char **argv)
{
    const char *state = NULL, *parent = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        bool bad = false;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char sd[PATH_MAX];
            sandbox_state_dir_default(sd, sizeof sd);
            printf("usage: clearbox gc [--state-dir DIR] [--cgroup-parent NAME]\n"
                   "Remove state directories, workspace mounts and cgroups left by crashed runs,\n"
                   "and the node lock files of services that did not stop cleanly.\n"
                   "Prints one line per removed item.\n"
                   "  --state-dir DIR       default: the one runs use: /run/clearbox as root;\n"
                   "                        otherwise $XDG_RUNTIME_DIR/clearbox (when it is the\n"
                   "                        user's own directory), else /tmp/clearbox-<uid>;\n"
                   "                        for this user now: %s\n"
                   "  --cgroup-parent NAME  default: clearbox\n",
                   sd);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--state-dir", &v, &bad)) {
            state = v;
        } else if (cli_opt(argc, argv, &i, "--cgroup-parent", &v, &bad)) {
            parent = v;
        } else {
            return cli_usage_error("gc", "unknown argument '%s'", argv[i]);
        }
        if (bad)
            return cli_usage_error("gc", "option '%s' needs a value", argv[i]);
    }
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 20);
    char err[ERR_LEN];
    int n = sandbox_gc(state, parent, &b, err, sizeof err);
    if (n < 0) {
        buf_free(&b);
        return cli_fail("gc", "%s", err);
    }
    fwrite(b.data ? b.data : "", 1, b.len, stdout);
    printf("removed %d item%s\n", n, n == 1 ? "" : "s");
    buf_free(&b);
    return 0;
}

CLI_COMMAND(gc, 60, "remove cgroups, mounts and directories left by crashed runs", cmd_gc)
