/* list.c - `clearbox list`: evaluations of a running service, newest first
 * (GET /v1/evaluations), as a table; --all follows next_cursor to the end.
 *
 * The table is the output whether or not stdout is a terminal (it is made
 * for grep and awk: one evaluation per line, fixed columns, '-' for none);
 * --json prints the service's shape {items, next_cursor}, with --all one
 * document holding every page's items (next_cursor null).
 * Exit status: 0 listed, 1 refused or unreachable, 2 usage error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "util/err.h"

#define LIST_PAGE_ALL 200 /* page size of --all without --limit */

static void usage(FILE *f)
{
    fprintf(f, "usage: clearbox list [options]\n"
               "List the evaluations of a running `clearbox serve`, newest first.\n"
               "\n"
               "  --status S            only this status (queued, running, completed, timeout,\n"
               "                        cpu_time_limit, memory_limit, pids_limit, output_limit,\n"
               "                        killed, error, cancelled)\n"
               "  --submitter NAME      only this metadata.submitter\n"
               "  --limit N             at most N (1-1000; default 50); with --all, the page size\n"
               "  --all                 every page, following next_cursor\n"
               "  --json                the service's JSON {items, next_cursor}\n");
    client_usage_common(f);
    fprintf(f, "Exit status: 0 listed, 1 refused or unreachable, 2 usage error.\n"
               "See docs/cli.md.\n");
}

/* Append s to b, at most w bytes, control characters as '?', then pad to w. */
static void cell(struct buf *b, const char *s, int w)
{
    int n = 0;
    for (; s && s[n] && n < w; n++) {
        unsigned char ch = (unsigned char)s[n];
        buf_putc(b, ch < 0x20 || ch == 0x7f ? '?' : (char)ch);
    }
    /* a cut multi-byte character would be garbage: back up to its start */
    if (s && s[n] && n > 0) {
        int k = n;
        while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
            k--;
        b->len -= (size_t)(n - k);
        b->data[b->len] = '\0';
        n = k;
    }
    for (int k = n; k < w; k++)
        buf_putc(b, ' ');
}

static void print_header(void)
{
    printf("%-26s  %-14s  %-8s  %4s  %9s  %-16s  %s\n", "ID", "STATUS", "LANGUAGE", "EXIT",
           "DURATION", "SUBMITTER", "CREATED (UTC)");
}

static void print_row(json_t *it)
{
    char storage[512];
    struct buf b;
    buf_init(&b, storage, sizeof storage, 0);
    cell(&b, json_string_value(json_object_get(it, "id")), 26);
    buf_puts(&b, "  ");
    cell(&b, json_string_value(json_object_get(it, "status")), 14);
    buf_puts(&b, "  ");
    cell(&b, json_string_value(json_object_get(it, "language")), 8);
    json_t *ec = json_object_get(it, "exit_code");
    if (json_is_integer(ec))
        buf_printf(&b, "  %4lld", (long long)json_integer_value(ec));
    else
        buf_puts(&b, "     -");
    json_t *d = json_object_get(it, "duration_ms");
    if (json_is_number(d)) {
        double ms = json_number_value(d);
        if (ms < 1000)
            buf_printf(&b, "  %6.0f ms", ms);
        else
            buf_printf(&b, "  %7.1f s", ms / 1000);
    } else {
        buf_puts(&b, "          -");
    }
    buf_puts(&b, "  ");
    const char *sub = json_string_value(json_object_get(it, "submitter"));
    cell(&b, sub && *sub ? sub : "-", 16);
    buf_puts(&b, "  ");
    const char *cr = json_string_value(json_object_get(it, "created_at"));
    char when[20] = "-";
    if (cr && strlen(cr) >= 19) {
        memcpy(when, cr, 19);
        when[19] = '\0';
        if (when[10] == 'T')
            when[10] = ' ';
    }
    cell(&b, when, 19);
    while (b.len && b.data[b.len - 1] == ' ')
        b.data[--b.len] = '\0';
    puts(b.data);
    buf_free(&b);
}

static int cmd_list(int argc, char **argv)
{
    struct client c;
    int rc = client_init(&c, "list");
    if (rc)
        return rc;
    const char *status = NULL, *submitter = NULL;
    long limit = 0;
    bool all = false, json = false, bad = false;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *a = argv[i];
        if ((rc = client_opt(&c, argc, argv, &i, usage)) == CLIENT_OPT_NEXT)
            continue;
        if (rc != CLIENT_OPT_OWN)
            return rc; /* 0 after --help, 2 after a usage error */
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else if (cli_opt(argc, argv, &i, "--status", &v, &bad)) {
            status = v;
        } else if (cli_opt(argc, argv, &i, "--submitter", &v, &bad)) {
            submitter = v;
        } else if (cli_opt(argc, argv, &i, "--limit", &v, &bad)) {
            char *end;
            errno = 0;
            limit = v ? strtol(v, &end, 10) : 0;
            if (v && (errno || end == v || *end || limit < 1 || limit > 1000))
                return cli_usage_error("list", "--limit wants 1-1000, not '%s'", v);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("list", "unknown option '%s'", a);
        } else {
            return cli_usage_error("list", "unexpected argument '%s'", a);
        }
        if (bad)
            return cli_usage_error("list", "option '%s' needs a value", a);
    }
    if (!limit)
        limit = all ? LIST_PAGE_ALL : 50;

    json_t *items = json_array(); /* --all --json: every page's items */
    char *cursor = NULL;
    int ret = 0;
    bool header = false;
    for (;;) {
        char qs[4096];
        struct buf q;
        buf_init(&q, qs, sizeof qs, 0);
        buf_printf(&q, "/v1/evaluations?limit=%ld", limit);
        if (status) {
            buf_puts(&q, "&status=");
            client_url_escape(&q, status);
        }
        if (submitter) {
            buf_puts(&q, "&submitter=");
            client_url_escape(&q, submitter);
        }
        if (cursor) {
            buf_puts(&q, "&cursor=");
            client_url_escape(&q, cursor);
        }
        if (!buf_ok(&q)) {
            ret = cli_usage_error("list", "--status, --submitter or the cursor is too long");
            buf_free(&q);
            break;
        }
        char err[ERR_LEN];
        struct client_response r;
        rc = client_request(&c, "GET", q.data, NULL, 0, NULL, &r, err, sizeof err);
        buf_free(&q);
        if (rc < 0) {
            ret = cli_fail("list", "%s", err);
            break;
        }
        json_t *page = json_object_get(r.json, "items");
        if (r.status != 200 || !json_is_array(page)) {
            ret = r.status == 200 ? cli_fail("list",
                                             "the answer from %s has no items: is it "
                                             "clearbox?",
                                             c.server)
                                  : client_fail_response(&c, &r);
            client_response_free(&r);
            break;
        }
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        if (json && !all) {
            client_print_body(stdout, &r);
            client_response_free(&r);
            break;
        }
        size_t k;
        json_t *it;
        if (json) {
            json_array_extend(items, page);
        } else {
            if (!header) {
                print_header();
                header = true;
            }
            json_array_foreach(page, k, it) print_row(it);
            fflush(stdout);
        }
        if (!all && next && !json && isatty(2))
            fprintf(stderr, "(more: clearbox list --all, or --limit N)\n");
        if (!all || !next) {
            client_response_free(&r);
            break;
        }
        if (cursor && !strcmp(cursor, next)) {
            ret = cli_fail("list", "the service returned the same cursor twice; stopping");
            client_response_free(&r);
            break;
        }
        free(cursor);
        cursor = strdup(next);
        client_response_free(&r);
        if (!cursor) {
            ret = cli_fail("list", "out of memory");
            break;
        }
    }
    if (ret == 0 && json && all) {
        json_t *doc = json_object();
        json_object_set(doc, "items", items);
        json_object_set_new(doc, "next_cursor", json_null());
        if (json_dumpf(doc, stdout, JSON_COMPACT) < 0)
            ret = cli_fail("list", "writing the JSON failed");
        putchar('\n');
        fflush(stdout);
        json_decref(doc);
    }
    json_decref(items);
    free(cursor);
    return ret;
}

CLI_COMMAND(list, 32, "list the evaluations of a running service, newest first", cmd_list)
