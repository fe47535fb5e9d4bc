/* audit.c - `clearbox audit verify|head`: check a security audit log's hash
 * chain, or print its head for anchoring elsewhere. See docs/audit.md.
 *
 * Output: verify prints its verdict on stdout ("ok: ..." and exit 0, or
 * "FAILED: FILE line L (seq S): reason: why" and exit 1); I/O errors go to
 * stderr (exit 1); usage errors exit 2 with nothing on stdout. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "telemetry/audit.h"
#include "util/err.h"

#define MAX_FILES 4096

static void usage(FILE *f)
{
    fprintf(
        f, "usage: clearbox audit verify [--key KEYFILE] [--expect-head HASH] [--partial] FILE...\n"
           "       clearbox audit head FILE\n"
           "\n"
           "verify  recompute the hash chain over FILE... taken in order as one log (rotated\n"
           "        files first: clearbox audit verify audit.log.0* audit.log). Prints the\n"
           "        record count and the head (seq and hash); exit 0 when intact, 1 naming\n"
           "        the first bad record by line and seq.\n"
           "  --key KEYFILE       also check every record's hmac with this key file\n"
           "  --expect-head HASH  an anchor kept elsewhere (from 'audit head' or the\n"
           "                      audit.head log event): fail unless a record has this hash.\n"
           "                      Without one, cutting records off the end is not detectable.\n"
           "  --partial           accept a chain that starts after seq 1 (older files gone)\n"
           "head    print the head of the log: \"SEQ HASH\" (\"0 000...0\" for an empty log)\n");
}

static int cmd_verify(int argc, char **argv)
{
    const char *keypath = NULL, *expect = NULL;
    bool partial = false, opts_done = false;
    const char **files = calloc((size_t)argc, sizeof *files);
    size_t nfiles = 0;
    int ret = 2;
    if (!files)
        return cli_fail("audit", "out of memory");
    for (int i = 1; i < argc; i++) {
        bool bad = false;
        const char *v;
        if (!opts_done && argv[i][0] == '-' && argv[i][1] != '\0') {
            if (!strcmp(argv[i], "--")) {
                opts_done = true;
            } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                usage(stdout);
                ret = 0;
                goto out;
            } else if (cli_opt(argc, argv, &i, "--key", &v, &bad)) {
                keypath = v;
            } else if (cli_opt(argc, argv, &i, "--expect-head", &v, &bad)) {
                expect = v;
            } else if (!strcmp(argv[i], "--partial")) {
                partial = true;
            } else {
                ret = cli_usage_error("audit", "unknown option '%s'", argv[i]);
                goto out;
            }
            if (bad) {
                ret = cli_usage_error("audit", "option '%s' needs a value", argv[i]);
                goto out;
            }
            continue;
        }
        if (nfiles >= MAX_FILES) {
            ret = cli_usage_error("audit", "at most %d files", MAX_FILES);
            goto out;
        }
        files[nfiles++] = argv[i];
    }
    if (nfiles == 0) {
        ret = cli_usage_error("audit", "verify needs at least one FILE");
        goto out;
    }
    char anchor[HASH_SHA256_HEX];
    if (expect) {
        size_t n = strlen(expect);
        if (n != 64 || strspn(expect, "0123456789abcdefABCDEF") != 64) {
            ret = cli_usage_error("audit", "--expect-head needs 64 hex digits");
            goto out;
        }
        for (size_t k = 0; k < n; k++)
            anchor[k] = (expect[k] >= 'A' && expect[k] <= 'F') ? (char)(expect[k] + 32) : expect[k];
        anchor[64] = '\0';
    }
    char err[ERR_LEN + 256];
    uint8_t *key = NULL;
    size_t keylen = 0;
    if (keypath && audit_key_load(keypath, &key, &keylen, err, sizeof err) < 0) {
        ret = cli_fail("audit", "%s", err);
        goto out;
    }
    struct audit_verify_opts o = {
        .key = key, .keylen = keylen, .expect_head = expect ? anchor : NULL, .partial = partial};
    struct audit_verify_result r;
    int rc = audit_verify_ex(files, nfiles, &o, &r, err, sizeof err);
    if (key) {
        explicit_bzero(key, keylen);
        free(key);
    }
    if (rc == -EBADMSG) {
        printf("FAILED: %s\n", err);
        if (r.records)
            printf("verified before it: %" PRIu64 " records, seq %" PRIu64 "..%" PRIu64
                   ", head %" PRIu64 " %s\n",
                   r.records, r.first_seq, r.head_seq, r.head_seq, r.head_hash);
        ret = 1;
        goto out;
    }
    if (rc < 0) {
        ret = cli_fail("audit", "%s", err);
        goto out;
    }
    printf("ok: %" PRIu64 " records", r.records);
    if (r.records)
        printf(", seq %" PRIu64 "..%" PRIu64, r.first_seq, r.head_seq);
    printf(" in %zu file%s\n", nfiles, nfiles == 1 ? "" : "s");
    printf("head: %" PRIu64 " %s\n", r.head_seq, r.head_hash);
    if (r.hmac_checked)
        printf("hmac: verified on every record\n");
    else if (r.hmac_records)
        printf("hmac: not checked (%" PRIu64 " records carry one; give --key)\n", r.hmac_records);
    else
        printf("hmac: none\n");
    if (expect)
        printf("anchor: found at seq %" PRIu64 "\n", r.anchor_seq);
    else
        printf("anchor: none given (records cut from the end would not be noticed)\n");
    ret = 0;
out:
    free(files);
    return ret;
}

static int cmd_head(int argc, char **argv)
{
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return cli_usage_error("audit", "unknown option '%s'", argv[i]);
        if (file)
            return cli_usage_error("audit", "head takes one FILE");
        file = argv[i];
    }
    if (!file)
        return cli_usage_error("audit", "head needs a FILE");
    uint64_t seq;
    char hash[HASH_SHA256_HEX], err[ERR_LEN + 256];
    if (audit_head(file, &seq, hash, err, sizeof err) < 0)
        return cli_fail("audit", "%s", err);
    printf("%" PRIu64 " %s\n", seq, hash);
    return 0;
}

static int cmd_audit(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("audit", "expected 'verify' or 'head'");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(argv[1], "head"))
        return cmd_head(argc - 1, argv + 1);
    return cli_usage_error("audit", "unknown subcommand '%s' (verify or head)", argv[1]);
}

CLI_COMMAND(audit, 60, "verify a security audit log's hash chain, or print its head", cmd_audit)
