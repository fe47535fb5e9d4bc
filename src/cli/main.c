/* main.c - clearbox entry point: global options, then one subcommand.
 * Subcommands register themselves (cli.h); this file only dispatches. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "telemetry/log.h"

#define CLI_MAX 32
static const struct cli_command *commands[CLI_MAX];
static int ncommands;

void cli__register(const struct cli_command *cmd)
{
    if (ncommands < CLI_MAX)
        commands[ncommands++] = cmd;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "clearbox %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'clearbox %s --help'.\n", cmd);
    return 2;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "clearbox %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val, bool *bad)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return false;
    if (a[n] == '=') {
        *val = a + n + 1;
        return true;
    }
    if (a[n] != '\0')
        return false;
    if (*i + 1 >= argc) {
        *bad = true;
        *val = NULL;
        return true;
    }
    *val = argv[++*i];
    return true;
}

static int cmp_order(const void *a, const void *b)
{
    const struct cli_command *x = *(const struct cli_command *const *)a;
    const struct cli_command *y = *(const struct cli_command *const *)b;
    return x->order - y->order;
}

static void usage(FILE *f)
{
    fprintf(f,
            "clearbox %s - run untrusted code contained, and show everything that happened\n"
            "\n"
            "usage: clearbox [--log-format json|console] [--log-level LEVEL] COMMAND [ARGS]\n"
            "\n"
            "commands:\n",
            CLEARBOX_VERSION);
    qsort(commands, (size_t)ncommands, sizeof commands[0], cmp_order);
    for (int i = 0; i < ncommands; i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f,
            "\n"
            "global options:\n"
            "  --log-format F   json (default when stderr is not a terminal) or console\n"
            "  --log-level L    debug, info, warning, error (env CLEARBOX_LOG_LEVEL; default info)\n"
            "  --help, -h       this help; 'clearbox COMMAND --help' for a command\n"
            "  --version        print the version\n"
            "\n"
            "Docs: README.md and docs/ in the source tree.\n");
}

int main(int argc, char **argv)
{
    int i = 1;
    const char *fmt = NULL, *level = NULL;
    while (i < argc && argv[i][0] == '-') {
        bool bad = false;
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("clearbox %s\n", CLEARBOX_VERSION);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--log-format", &v, &bad)) {
            fmt = v;
        } else if (cli_opt(argc, argv, &i, "--log-level", &v, &bad)) {
            level = v;
        } else {
            fprintf(stderr, "clearbox: unknown option '%s'\nTry 'clearbox --help'.\n", argv[i]);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "clearbox: option '%s' needs a value\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    char err[256];
    if (log_setup(fmt, level, err, sizeof err) < 0) {
        fprintf(stderr, "clearbox: %s\n", err);
        return 2;
    }
    for (int c = 0; c < ncommands; c++)
        if (!strcmp(commands[c]->name, argv[i])) {
            int rc = commands[c]->fn(argc - i, argv + i);
            log_shutdown();
            return rc;
        }
    if (!strcmp(argv[i], "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "clearbox: unknown command '%s'\nTry 'clearbox --help'.\n", argv[i]);
    return 2;
}

static const struct cli_lang langs[] = {
    {"python", "python3", ".py", "/usr/bin/python3", "main.py"},
    {"sh", NULL, ".sh", "/bin/sh", "main.sh"},
};

const struct cli_lang *cli_lang_find(const char *name)
{
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
        if (!strcmp(langs[i].name, name) || (langs[i].alias && !strcmp(langs[i].alias, name)))
            return &langs[i];
    return NULL;
}

const struct cli_lang *cli_lang_from_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return NULL;
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
        if (!strcmp(dot, langs[i].ext))
            return &langs[i];
    return NULL;
}
