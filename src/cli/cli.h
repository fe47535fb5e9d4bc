/* cli.h - subcommand registration and the helpers every subcommand shares.
 *
 * Each subcommand lives in its own file and registers itself with
 *     CLI_COMMAND(audit, "verify or show the head of a security audit log", cmd_audit);
 * so main.c never changes when a command is added. A command's function gets
 * argv starting at the command name (argv[0] == "audit") and returns the
 * process exit status: 0 success, 1 failure, 2 usage error (message on stderr
 * via cli_usage_error, nothing on stdout).
 * Global options (before the command): --log-format json|console,
 * --log-level LEVEL; they are applied before the command runs. */
#ifndef CLEARBOX_CLI_H
#define CLEARBOX_CLI_H

#include <stdbool.h>

typedef int (*cli_fn)(int argc, char **argv);

struct cli_command {
    const char *name;
    const char *summary;
    cli_fn fn;
    int order; /* position in --help */
};

void cli__register(const struct cli_command *cmd);

#define CLI_COMMAND(ident, ord, sum, fn_)                                  \
    static const struct cli_command cli__cmd_##ident = {#ident, sum, fn_, ord}; \
    __attribute__((constructor)) static void cli__reg_##ident(void)        \
    {                                                                      \
        cli__register(&cli__cmd_##ident);                                  \
    }

/* "clearbox CMD: message" on stderr and exit status 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "clearbox CMD: message" on stderr; returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Is the option argv[*i] == name (or name=value)? Sets *val to the value
 * (next argument or after '='), advancing *i. Missing value: usage error,
 * reported through *bad. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val, bool *bad);

/* The languages `clearbox run` and `clearbox submit` know: the canonical
 * name (and an alias), the file extension that implies it, the system
 * interpreter and the program's file name in the workspace. */
struct cli_lang {
    const char *name, *alias, *ext, *interp, *file;
};
/* By name or alias, or NULL. */
const struct cli_lang *cli_lang_find(const char *name);
/* From the extension of path (".py" -> python), or NULL. */
const struct cli_lang *cli_lang_from_path(const char *path);

#endif
