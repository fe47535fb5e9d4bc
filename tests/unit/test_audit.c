/* test_audit.c - the promises of telemetry/audit.h, tried against real files,
 * real processes and the real clearbox binary. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "telemetry/audit.h"
#include "telemetry/log.h"
#include "test.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

extern char **environ;

#define NREC 20

/* ---------------------------------------------------------------- helpers */

static char *path_in(const char *name)
{
    static char p[8][512];
    static int i;
    char *s = p[i++ % 8];
    snprintf(s, 512, "%s/%s", test_tmpdir(), name);
    return s;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    size_t got = fread(b, 1, (size_t)sz, f);
    fclose(f);
    b[got] = '\0';
    *n = got;
    return b;
}

static int spit(const char *path, const char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(b, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* Byte offsets where each of the first NREC+1 lines starts (lines[k] = start of
 * line k+1, lines[count] = n). Returns the line count. */
static int line_starts(const char *b, size_t n, size_t *starts, int max)
{
    int c = 0;
    starts[c++] = 0;
    for (size_t i = 0; i < n && c <= max; i++)
        if (b[i] == '\n')
            starts[c++] = i + 1;
    return c - 1;
}

static void make_key(const char *path)
{
    spit(path, "0123456789abcdef-test-key-bytes\n", 32);
}

/* A record the way the sandbox writes one: details from util/json.h. */
static int append_one(audit_log_t *al, const char *eval_id, const char *reason, int i,
                      struct audit_appended *out)
{
    char store[512];
    struct buf b;
    buf_init(&b, store, sizeof store, 0);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    json_kv_bool(&w, "blocked", true);
    json_kv_str(&w, "code_snippet",
                "import socket; socket.create_connection((\"github.com\", 443))");
    json_kv_str(&w, "family", "inet");
    json_kv_str(&w, "protocol", "tcp");
    json_kv_str(&w, "address", "140.82.112.3");
    json_kv_int(&w, "port", 443);
    json_kv_int(&w, "i", i);
    json_obj_close(&w);
    struct audit_event ev = {
        .eval_id = eval_id, .reason = reason, .details_json = b.data, .details_len = b.len};
    char err[ERR_LEN];
    int rc = audit_append(al, &ev, out, err, sizeof err);
    if (rc < 0 && rc != -EBADMSG)
        fprintf(stderr, "append: %s\n", err);
    return rc;
}

static int write_log(const char *path, int n, const char *keypath, char head[HASH_SHA256_HEX])
{
    struct audit_options o = {.key_path = keypath, .fsync = AUDIT_FSYNC_NONE};
    audit_log_t *al;
    char err[ERR_LEN];
    if (audit_log_open(&al, path, &o, err, sizeof err) < 0) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    struct audit_appended a = {0};
    for (int i = 0; i < n; i++)
        if (append_one(al, "ev-0001", i % 2 ? "network_attempt" : "blocked_syscall", i, &a) < 0) {
            audit_log_close(al);
            return -1;
        }
    if (head)
        memcpy(head, a.hash, HASH_SHA256_HEX);
    audit_log_close(al);
    return 0;
}

static int verify1(const char *path, const void *key, size_t keylen, struct audit_verify_result *r,
                   char *err, size_t errlen)
{
    const char *p[1] = {path};
    return audit_verify(p, 1, key, keylen, r, err, errlen);
}

/* Run the real binary; stdout into out. Returns the exit status (or -1). */
static int run_cli(char *const args[], char *out, size_t outlen)
{
    const char *bin = getenv("CLEARBOX");
    if (!bin || !*bin)
        bin = "build/clearbox";
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)bin;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while ((r = read(pfd[0], out + got, outlen - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Rotation logs audit.head events; keep them out of the test output. */
__attribute__((constructor)) static void quiet_logs(void)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        log_set_fd(fd);
}

/* ---------------------------------------------------------------- tests */

TEST(audit_log_round_trip_verifies)
{
    const char *p = path_in("a.log");
    char head[HASH_SHA256_HEX];
    ASSERT_EQ(write_log(p, NREC, NULL, head), 0);
    struct audit_verify_result r;
    char err[512];
    ASSERT_MSG(verify1(p, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, NREC);
    ASSERT_EQ(r.first_seq, 1);
    ASSERT_EQ(r.head_seq, NREC);
    ASSERT_STREQ(r.head_hash, head);
    ASSERT_EQ(r.hmac_records, 0);
    uint64_t seq;
    char h[HASH_SHA256_HEX];
    ASSERT_EQ(audit_head(p, &seq, h, err, sizeof err), 0);
    ASSERT_EQ(seq, NREC);
    ASSERT_STREQ(h, head);

    /* The layout the docs promise, on the first line. */
    size_t n;
    char *b = slurp(p, &n);
    ASSERT(b);
    ASSERT(strncmp(b, "{\"seq\":1,\"ts\":\"", 15) == 0);
    ASSERT_CONTAINS(b, "\"event\":\"evaluation.suspicious\",\"eval_id\":\"ev-0001\","
                       "\"reason\":\"blocked_syscall\",\"details\":{\"blocked\":true,");
    ASSERT_CONTAINS(
        b, ",\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\","
           "\"hash\":\"");
    /* hash = SHA-256 of the bytes before "hash": recompute by hand. */
    const char *hk = strstr(b, "\"hash\":\"");
    char want[HASH_SHA256_HEX];
    hash_sha256_hex(b, (size_t)(hk - b), want);
    ASSERT(strncmp(hk + 8, want, 64) == 0);
    /* Every line is one JSON object on its own. */
    size_t st[NREC + 2];
    ASSERT_EQ(line_starts(b, n, st, NREC + 1), NREC);
    for (int k = 0; k < NREC; k++) {
        json_error_t je;
        json_t *o = json_loadb(b + st[k], st[k + 1] - st[k] - 1, 0, &je);
        ASSERT_MSG(o && json_is_object(o), "line %d: %s", k + 1, je.text);
        ASSERT_EQ(json_integer_value(json_object_get(o, "seq")), k + 1);
        json_decref(o);
    }
    free(b);
}

/* Change every byte of the file, one at a time and in several ways; verify
 * must fail each time and name the line that holds the byte. */
static void flip_all(bool with_key)
{
    const char *p = path_in("f.log"), *m = path_in("m.log"), *kp = path_in("key");
    uint8_t *key = NULL;
    size_t keylen = 0;
    char err[512];
    if (with_key) {
        make_key(kp);
        ASSERT_EQ(audit_key_load(kp, &key, &keylen, err, sizeof err), 0);
    }
    ASSERT_EQ(write_log(p, NREC, with_key ? kp : NULL, NULL), 0);
    size_t n;
    char *b = slurp(p, &n);
    ASSERT(b && n > 1000);
    size_t st[NREC + 2];
    ASSERT_EQ(line_starts(b, n, st, NREC + 1), NREC);
    struct audit_verify_result r;
    ASSERT_EQ(verify1(p, key, keylen, &r, err, sizeof err), 0);
    ASSERT_EQ(r.hmac_checked, with_key);
    /* Same-size edits in place (pwrite, no truncation: ext4 flushes a file
     * that is truncated and rewritten on close, which made this slow). */
    ASSERT_EQ(spit(m, b, n), 0);
    int fd = open(m, O_WRONLY);
    ASSERT(fd >= 0);
    /* Each byte: its low bit flipped, replaced by a newline, and for letters
     * its case flipped (hex digits must be lowercase). */
    int checked = 0;
    int line = 0;
    for (size_t i = 0; i < n; i++) {
        while (i >= st[line + 1])
            line++;
        unsigned char orig = (unsigned char)b[i];
        bool letter = (orig | 0x20) >= 'a' && (orig | 0x20) <= 'z';
        unsigned char repl[3] = {orig ^ 0x01, '\n', orig ^ 0x20};
        for (int v = 0; v < (letter ? 3 : 2); v++) {
            if (repl[v] == orig)
                continue;
            ASSERT_EQ(pwrite(fd, &repl[v], 1, (off_t)i), 1);
            int rc = verify1(m, key, keylen, &r, err, sizeof err);
            ASSERT_EQ(pwrite(fd, &orig, 1, (off_t)i), 1);
            ASSERT_MSG(rc == -EBADMSG, "byte %zu (line %d) 0x%02x->0x%02x not detected (rc %d)", i,
                       line + 1, orig, repl[v], rc);
            ASSERT_MSG(r.bad_line == (uint64_t)line + 1,
                       "byte %zu 0x%02x->0x%02x: bad line %llu, expected %d (%s)", i, orig, repl[v],
                       (unsigned long long)r.bad_line, line + 1, err);
            checked++;
        }
    }
    close(fd);
    ASSERT_EQ(verify1(m, key, keylen, &r, err, sizeof err), 0); /* restored intact */
    /* The end of the file: drop the final newline, add a byte, add a blank line. */
    ASSERT_EQ(spit(m, b, n - 1), 0);
    ASSERT_EQ(verify1(m, key, keylen, &r, err, sizeof err), -EBADMSG);
    ASSERT_EQ(r.bad_line, NREC);
    ASSERT_CONTAINS(err, "no newline");
    const char *extra[] = {"x", "\n", " ", "{}\n"};
    for (int e = 0; e < 4; e++) {
        char *c = malloc(n + 4);
        memcpy(c, b, n);
        memcpy(c + n, extra[e], strlen(extra[e]));
        ASSERT_EQ(spit(m, c, n + strlen(extra[e])), 0);
        free(c);
        ASSERT_EQ(verify1(m, key, keylen, &r, err, sizeof err), -EBADMSG);
        ASSERT_EQ(r.bad_line, NREC + 1);
    }
    fprintf(stderr, "    %d single-byte mutations, all detected\n", checked);
    ASSERT(checked > 2 * (int)n);
    free(b);
    free(key);
}

TEST(audit_every_byte_mutation_is_detected)
{
    flip_all(false);
}
TEST(audit_every_byte_mutation_is_detected_with_hmac)
{
    flip_all(true);
}

TEST(audit_hmac_key_checks)
{
    const char *p = path_in("k.log"), *kp = path_in("key"), *plain = path_in("plain.log");
    make_key(kp);
    ASSERT_EQ(write_log(p, NREC, kp, NULL), 0);
    ASSERT_EQ(write_log(plain, 3, NULL, NULL), 0);
    char err[512];
    struct audit_verify_result r;
    /* Without the key: chain checked, hmac not. */
    ASSERT_EQ(verify1(p, NULL, 0, &r, err, sizeof err), 0);
    ASSERT_EQ(r.hmac_records, NREC);
    ASSERT(!r.hmac_checked);
    /* Wrong key. */
    const char wrong[] = "0123456789abcdef-test-key-bytes?";
    ASSERT_EQ(verify1(p, wrong, 32, &r, err, sizeof err), -EBADMSG);
    ASSERT_EQ(r.bad, AUDIT_BAD_HMAC);
    ASSERT_EQ(r.bad_line, 1);
    /* A log without hmac when a key is expected. */
    ASSERT_EQ(verify1(plain, "0123456789abcdef-test-key-bytes\n", 32, &r, err, sizeof err),
              -EBADMSG);
    ASSERT_EQ(r.bad, AUDIT_BAD_HMAC);
    ASSERT_CONTAINS(err, "no hmac");
    /* Key files that are too short are refused. */
    spit(kp, "short", 5);
    audit_log_t *al;
    struct audit_options o = {.key_path = kp};
    ASSERT_EQ(audit_log_open(&al, p, &o, err, sizeof err), -EINVAL);
    ASSERT(al == NULL);
}

static char *without_line(const char *b, size_t n, const size_t *st, int k, size_t *outn)
{
    /* k 0-based */
    size_t len = st[k + 1] - st[k];
    char *c = malloc(n);
    memcpy(c, b, st[k]);
    memcpy(c + st[k], b + st[k + 1], n - st[k + 1]);
    *outn = n - len;
    return c;
}

TEST(audit_deleted_duplicated_swapped_records_are_detected)
{
    const char *p = path_in("d.log"), *m = path_in("m.log");
    char head[HASH_SHA256_HEX], err[512];
    ASSERT_EQ(write_log(p, NREC, NULL, head), 0);
    size_t n;
    char *b = slurp(p, &n);
    size_t st[NREC + 2];
    ASSERT_EQ(line_starts(b, n, st, NREC + 1), NREC);
    struct audit_verify_result r;
    struct audit_verify_opts anchored = {.expect_head = head};
    const char *mp[1] = {m};
    for (int k = 0; k < NREC; k++) {
        /* delete record k+1 */
        size_t cn;
        char *c = without_line(b, n, st, k, &cn);
        ASSERT_EQ(spit(m, c, cn), 0);
        free(c);
        int rc = verify1(m, NULL, 0, &r, err, sizeof err);
        if (k == NREC - 1) {
            /* Dropping the last record is truncation: only an anchor sees it. */
            ASSERT_EQ(rc, 0);
            ASSERT_EQ(r.records, NREC - 1);
            ASSERT_EQ(audit_verify_ex(mp, 1, &anchored, &r, err, sizeof err), -EBADMSG);
            ASSERT_EQ(r.bad, AUDIT_BAD_ANCHOR);
        } else {
            ASSERT_EQ(rc, -EBADMSG);
            ASSERT_EQ(r.bad, AUDIT_BAD_SEQ);
            ASSERT_EQ(r.bad_line, k + 1);
            ASSERT_EQ(r.bad_seq, k + 2);
        }
        /* duplicate record k+1 right after itself */
        size_t len = st[k + 1] - st[k];
        c = malloc(n + len);
        memcpy(c, b, st[k + 1]);
        memcpy(c + st[k + 1], b + st[k], len);
        memcpy(c + st[k + 1] + len, b + st[k + 1], n - st[k + 1]);
        ASSERT_EQ(spit(m, c, n + len), 0);
        free(c);
        ASSERT_EQ(verify1(m, NULL, 0, &r, err, sizeof err), -EBADMSG);
        ASSERT_EQ(r.bad_line, k + 2);
        ASSERT_EQ(r.bad, AUDIT_BAD_SEQ);
        ASSERT_CONTAINS(err, "seq gap");
        /* swap records k+1 and k+2 */
        if (k + 1 < NREC) {
            size_t l1 = st[k + 1] - st[k], l2 = st[k + 2] - st[k + 1];
            c = malloc(n);
            memcpy(c, b, n);
            memcpy(c + st[k], b + st[k + 1], l2);
            memcpy(c + st[k] + l2, b + st[k], l1);
            ASSERT_EQ(spit(m, c, n), 0);
            free(c);
            ASSERT_EQ(verify1(m, NULL, 0, &r, err, sizeof err), -EBADMSG);
            ASSERT_EQ(r.bad_line, k + 1);
        }
    }
    /* A record moved from another, equally valid log is caught by prev_hash. */
    free(b);
}

TEST(audit_tail_truncation_needs_an_anchor)
{
    const char *p = path_in("t.log"), *m = path_in("m.log");
    char head[HASH_SHA256_HEX], err[512];
    ASSERT_EQ(write_log(p, NREC, NULL, head), 0);
    size_t n;
    char *b = slurp(p, &n);
    size_t st[NREC + 2];
    ASSERT_EQ(line_starts(b, n, st, NREC + 1), NREC);
    const char *mp[1] = {m};
    struct audit_verify_result r;
    /* An older anchor (record 10's hash) is found in the full log. */
    char h10[HASH_SHA256_HEX];
    const char *hk = strstr(b + st[9], "\"hash\":\"");
    memcpy(h10, hk + 8, 64);
    h10[64] = '\0';
    struct audit_verify_opts o10 = {.expect_head = h10};
    ASSERT_EQ(audit_verify_ex((const char *const[]){p}, 1, &o10, &r, err, sizeof err), 0);
    ASSERT_EQ(r.anchor_seq, 10);
    for (int cut = 1; cut <= 12; cut++) {
        ASSERT_EQ(spit(m, b, st[NREC - cut]), 0);
        ASSERT_EQ(verify1(m, NULL, 0, &r, err, sizeof err), 0); /* not detectable alone */
        ASSERT_EQ(r.records, NREC - cut);
        struct audit_verify_opts o = {.expect_head = head};
        ASSERT_EQ(audit_verify_ex(mp, 1, &o, &r, err, sizeof err), -EBADMSG);
        ASSERT_EQ(r.bad, AUDIT_BAD_ANCHOR);
        ASSERT_CONTAINS(err, "truncated");
        ASSERT_EQ(audit_verify_ex(mp, 1, &o10, &r, err, sizeof err), cut <= 10 ? 0 : -EBADMSG);
    }
    free(b);
}

static void child_appends(const char *path, int id, int n, uint64_t rotate)
{
    /* The default fsync policy (every record) without rotation, none with it. */
    struct audit_options o = {.fsync = rotate ? AUDIT_FSYNC_NONE : AUDIT_FSYNC_EVERY,
                              .rotate_bytes = rotate};
    audit_log_t *al;
    char err[ERR_LEN], eid[32];
    snprintf(eid, sizeof eid, "child-%d", id);
    if (audit_log_open(&al, path, &o, err, sizeof err) < 0)
        _exit(2);
    for (int i = 0; i < n; i++)
        if (append_one(al, eid, "network_attempt", i, NULL) < 0)
            _exit(3);
    audit_log_close(al);
    _exit(0);
}

static int collect_files(const char *path, const char **files, int max)
{
    /* Rotated files sort by name (fixed-width seq), then the live file. */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s.0* 2>/dev/null", path);
    FILE *f = popen(cmd, "r");
    int n = 0;
    char line[600];
    while (f && n < max - 1 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        files[n++] = strdup(line);
    }
    if (f)
        pclose(f);
    files[n++] = path;
    return n;
}

static void concurrent(uint64_t rotate, int per_child)
{
    const char *p = path_in("c.log");
    pid_t kids[4];
    for (int c = 0; c < 4; c++) {
        kids[c] = fork();
        ASSERT(kids[c] >= 0);
        if (kids[c] == 0)
            child_appends(p, c, per_child, rotate);
    }
    for (int c = 0; c < 4; c++) {
        int st;
        ASSERT_EQ(waitpid(kids[c], &st, 0), kids[c]);
        ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status 0x%x", c, st);
    }
    const char *files[4096];
    int nf = collect_files(p, files, 4096);
    if (rotate)
        ASSERT_MSG(nf > 2, "expected rotated files, got %d", nf);
    else
        ASSERT_EQ(nf, 1);
    struct audit_verify_result r;
    char err[512];
    ASSERT_MSG(audit_verify(files, (size_t)nf, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 4 * per_child);
    ASSERT_EQ(r.first_seq, 1);
    ASSERT_EQ(r.head_seq, 4 * per_child);
    /* Every child's records are all there. */
    int per[4] = {0};
    for (int i = 0; i < nf; i++) {
        size_t n;
        char *b = slurp(files[i], &n);
        for (char *q = b; (q = strstr(q, "\"eval_id\":\"child-")); q++)
            per[q[17] - '0']++;
        free(b);
    }
    for (int c = 0; c < 4; c++)
        ASSERT_EQ(per[c], per_child);
    if (rotate) {
        /* Out of order fails; the last file alone needs --partial. */
        const char *sw[4096];
        memcpy(sw, files, sizeof(char *) * (size_t)nf);
        sw[0] = files[1];
        sw[1] = files[0];
        ASSERT_EQ(audit_verify(sw, (size_t)nf, NULL, 0, &r, err, sizeof err), -EBADMSG);
        ASSERT_EQ(r.bad_file, 0);
        ASSERT_EQ(r.bad_line, 1);
        ASSERT_EQ(audit_verify(files + nf - 1, 1, NULL, 0, &r, err, sizeof err), -EBADMSG);
        ASSERT_CONTAINS(err, "--partial");
        struct audit_verify_opts po = {.partial = true};
        ASSERT_EQ(audit_verify_ex(files + nf - 1, 1, &po, &r, err, sizeof err), 0);
        ASSERT_EQ(r.head_seq, 4 * per_child);
        /* Dropping a middle file breaks the chain. */
        ASSERT_EQ(audit_verify(files + 1, (size_t)nf - 1, NULL, 0, &r, err, sizeof err), -EBADMSG);
        struct audit_verify_opts po2 = {.partial = true};
        const char *gap[3] = {files[0], files[2], files[nf - 1]};
        ASSERT_EQ(audit_verify_ex(gap, nf > 3 ? 3 : 2, &po2, &r, err, sizeof err), -EBADMSG);
    }
}

TEST(audit_four_processes_append_concurrently)
{
    concurrent(0, 200);
}
TEST(audit_four_processes_append_across_rotations)
{
    concurrent(6000, 200);
}

struct th_arg {
    audit_log_t *al;
    int id;
    int fails;
};

static void *thread_appends(void *p)
{
    struct th_arg *a = p;
    char eid[32];
    snprintf(eid, sizeof eid, "thread-%d", a->id);
    for (int i = 0; i < 200; i++)
        if (append_one(a->al, eid, "blocked_syscall", i, NULL) < 0)
            a->fails++;
    return NULL;
}

TEST(audit_threads_share_one_handle)
{
    const char *p = path_in("th.log");
    audit_log_t *al;
    char err[512];
    struct audit_options o = {.fsync = AUDIT_FSYNC_INTERVAL, .fsync_interval_ms = 5};
    ASSERT_EQ(audit_log_open(&al, p, &o, err, sizeof err), 0);
    pthread_t t[4];
    struct th_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct th_arg){.al = al, .id = i};
        pthread_create(&t[i], NULL, thread_appends, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ASSERT_EQ(a[i].fails, 0);
    }
    uint64_t seq;
    char h[HASH_SHA256_HEX];
    ASSERT_EQ(audit_log_current_head(al, &seq, h, err, sizeof err), 0);
    ASSERT_EQ(seq, 800);
    audit_log_close(al);
    struct audit_verify_result r;
    ASSERT_MSG(verify1(p, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 800);
    ASSERT_STREQ(r.head_hash, h);
}

TEST(audit_rotation_every_record_keeps_the_chain)
{
    const char *p = path_in("r.log");
    audit_log_t *al;
    char err[512];
    struct audit_options o = {.rotate_bytes = 1};
    ASSERT_EQ(audit_log_open(&al, p, &o, err, sizeof err), 0);
    struct audit_appended a;
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(append_one(al, "ev-r", "timeout", i, &a), 0);
    ASSERT_EQ(a.seq, 10);
    audit_log_close(al);
    const char *files[64];
    int nf = collect_files(p, files, 64);
    ASSERT_EQ(nf, 10);
    ASSERT_CONTAINS(files[0], "r.log.000000000001");
    ASSERT_CONTAINS(files[8], "r.log.000000000009");
    struct audit_verify_result r;
    ASSERT_MSG(audit_verify(files, (size_t)nf, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 10);
    ASSERT_STREQ(r.head_hash, a.hash);
    /* The head of a missing live file comes from the newest rotated file. */
    char moved[600];
    snprintf(moved, sizeof moved, "%s.000000000010", p);
    ASSERT_EQ(rename(p, moved), 0);
    uint64_t seq;
    char h[HASH_SHA256_HEX];
    ASSERT_EQ(audit_head(p, &seq, h, err, sizeof err), 0);
    ASSERT_EQ(seq, 10);
    ASSERT_STREQ(h, a.hash);
    /* ... and a new handle continues the chain from it. */
    ASSERT_EQ(audit_log_open(&al, p, NULL, err, sizeof err), 0);
    ASSERT_EQ(append_one(al, "ev-r", "timeout", 10, &a), 0);
    ASSERT_EQ(a.seq, 11);
    audit_log_close(al);
    nf = collect_files(p, files, 64);
    ASSERT_EQ(nf, 11);
    ASSERT_MSG(audit_verify(files, (size_t)nf, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 11);
}

TEST(audit_rate_limit_writes_100_then_one_summary)
{
    const char *p = path_in("rl.log");
    audit_log_t *al;
    char err[512];
    ASSERT_EQ(
        audit_log_open(&al, p, &(struct audit_options){.fsync = AUDIT_FSYNC_NONE}, err, sizeof err),
        0);
    audit_eval_t *ev;
    const char code[] = "while True:\n    try: socket.connect(('1.1.1.1', 53))\n    except: pass\n";
    ASSERT_EQ(audit_eval_begin(&ev, al, "ev-loop", code, sizeof code - 1, err, sizeof err), 0);
    int written = 0, suppressed = 0;
    for (int i = 0; i < 250; i++) {
        struct log_field f[] = {LOG_BOOL("blocked", true), LOG_STR("code_snippet", code),
                                LOG_STR("family", "inet"), LOG_INT("port", 53)};
        struct audit_event e = {.reason = "network_attempt", .details = f, .ndetails = 4};
        struct audit_appended a;
        int rc = audit_eval_append(ev, &e, &a, err, sizeof err);
        ASSERT_MSG(rc >= 0, "%s", err);
        if (rc == 0) {
            written++;
            ASSERT_EQ(a.seq, (uint64_t)written);
        } else {
            suppressed++;
            ASSERT(a.suppressed);
            ASSERT_EQ(a.seq, 0);
        }
    }
    for (int i = 0; i < 3; i++) {
        struct log_field f[] = {LOG_BOOL("blocked", true), LOG_STR("code_snippet", code),
                                LOG_STR("syscall", "ptrace"), LOG_STR("arch", "x86_64")};
        struct audit_event e = {.reason = "blocked_syscall", .details = f, .ndetails = 4};
        ASSERT_EQ(audit_eval_append(ev, &e, NULL, err, sizeof err), 0);
    }
    ASSERT_EQ(written, 100);
    ASSERT_EQ(suppressed, 150);
    ASSERT_EQ(audit_eval_count(ev, "network_attempt"), 250);
    ASSERT_EQ(audit_eval_count(ev, "blocked_syscall"), 3);
    ASSERT_EQ(audit_eval_end(ev, err, sizeof err), 0);
    audit_log_close(al);
    struct audit_verify_result r;
    ASSERT_MSG(verify1(p, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 104);
    size_t n;
    char *b = slurp(p, &n);
    char *last = b + n - 1;
    while (last > b && last[-1] != '\n')
        last--;
    json_error_t je;
    json_t *o = json_loadb(last, (size_t)(b + n - last - 1), 0, &je);
    ASSERT(o);
    ASSERT_STREQ(json_string_value(json_object_get(o, "reason")), "network_attempt");
    ASSERT_STREQ(json_string_value(json_object_get(o, "eval_id")), "ev-loop");
    json_t *d = json_object_get(o, "details");
    ASSERT_EQ(json_integer_value(json_object_get(d, "suppressed")), 150);
    ASSERT_EQ(json_integer_value(json_object_get(d, "written")), 100);
    ASSERT(json_is_true(json_object_get(d, "summary")));
    ASSERT(json_is_true(json_object_get(d, "blocked")));
    ASSERT_STREQ(json_string_value(json_object_get(d, "code_snippet")), code);
    json_decref(o);
    free(b);

    /* Without a log the scope only counts. */
    ASSERT_EQ(audit_eval_begin(&ev, NULL, "ev-count", "x", 1, err, sizeof err), 0);
    struct log_field f[] = {LOG_BOOL("blocked", false), LOG_STR("code_snippet", "x")};
    struct audit_event e = {.reason = "output_limit", .details = f, .ndetails = 2};
    for (int i = 0; i < 101; i++)
        ASSERT_EQ(audit_eval_append(ev, &e, NULL, err, sizeof err), i < 100 ? 0 : 1);
    ASSERT_EQ(audit_eval_end(ev, err, sizeof err), 0);
}

TEST(audit_snippet_is_200_characters)
{
    char code[1000];
    for (int i = 0; i < 300; i++) /* 300 x "é" (2 bytes each) */
        memcpy(code + 2 * i, "\xc3\xa9", 2);
    ASSERT_EQ(audit_snippet_len(code, 600), 400);
    ASSERT_EQ(audit_snippet_len("abc", 3), 3);
    memset(code, 'a', 500);
    ASSERT_EQ(audit_snippet_len(code, 500), 200);
    code[199] = (char)0xe2; /* a 3-byte sequence cut by the end of the input */
    ASSERT_EQ(audit_snippet_len(code, 200), 200);
}

TEST(audit_hostile_strings_stay_valid_json_and_verify)
{
    const char *p = path_in("h.log");
    audit_log_t *al;
    char err[512];
    ASSERT_EQ(
        audit_log_open(&al, p, &(struct audit_options){.fsync = AUDIT_FSYNC_NONE}, err, sizeof err),
        0);
    const char hostile[] =
        "\"}\n{\"seq\":99,\"hash\":\"00\"}\r\n\\\x01\x7f\xff\xfe\xc3(\xed\xa0\x80"
        "\xe2\x80\xa8 ,\"prev_hash\":\"\",\"hash\":\"";
    size_t hn = sizeof hostile - 1;
    char store[1024];
    struct buf b;
    buf_init(&b, store, sizeof store, 0);
    struct json w;
    json_init(&w, &b);
    json_obj_open(&w);
    json_kv_bool(&w, "blocked", true);
    json_key(&w, "code_snippet");
    json_strn(&w, hostile, hn);
    json_key(&w, "hash");
    json_strn(&w, hostile, hn);
    json_obj_close(&w);
    ASSERT(json_ok(&w));
    struct audit_event e = {.eval_id = "ev\"\n\xff",
                            .reason = "network_attempt",
                            .details_json = b.data,
                            .details_len = b.len};
    ASSERT_MSG(audit_append(al, &e, NULL, err, sizeof err) == 0, "%s", err);
    struct log_field f[] = {LOG_BOOL("blocked", false),
                            LOG_STRN("code_snippet", hostile, hn),
                            LOG_OBJ("nested"),
                            LOG_STRN("x", hostile, hn),
                            LOG_ARR("a"),
                            LOG_STRN(NULL, hostile, hn),
                            LOG_NULL(NULL),
                            LOG_END_ARR,
                            LOG_END_OBJ};
    struct audit_event e2 = {.eval_id = "ev-2",
                             .reason = "output_limit",
                             .details = f,
                             .ndetails = sizeof f / sizeof f[0]};
    ASSERT_MSG(audit_append(al, &e2, NULL, err, sizeof err) == 0, "%s", err);

    /* Refused, and nothing written: */
    struct stat st0, st1;
    ASSERT_EQ(stat(p, &st0), 0);
    const char *bad_details[] = {
        "{\"blocked\":true,\n\"code_snippet\":\"x\"}",  /* two lines */
        "{\"blocked\":true}",                           /* no code_snippet */
        "{\"blocked\":\"yes\",\"code_snippet\":\"x\"}", /* blocked not bool */
        "{\"blocked\":true,\"code_snippet\":\"x\"",     /* not JSON */
        "[true]",                                       /* not an object */
        "{\"blocked\":true,\"code_snippet\":\"\xff\"}", /* invalid UTF-8 raw */
    };
    for (size_t i = 0; i < sizeof bad_details / sizeof bad_details[0]; i++) {
        struct audit_event x = {.eval_id = "ev",
                                .reason = "timeout",
                                .details_json = bad_details[i],
                                .details_len = strlen(bad_details[i])};
        ASSERT_EQ(audit_append(al, &x, NULL, err, sizeof err), -EINVAL);
    }
    struct audit_event x = {.eval_id = "ev",
                            .reason = "Network Attempt",
                            .details_json = "{\"blocked\":true,\"code_snippet\":\"\"}",
                            .details_len = 34};
    ASSERT_EQ(audit_append(al, &x, NULL, err, sizeof err), -EINVAL);
    x.reason = "timeout";
    x.eval_id = NULL;
    ASSERT_EQ(audit_append(al, &x, NULL, err, sizeof err), -EINVAL);
    ASSERT_EQ(stat(p, &st1), 0);
    ASSERT_EQ(st0.st_size, st1.st_size);
    audit_log_close(al);

    struct audit_verify_result r;
    ASSERT_MSG(verify1(p, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 2);
    size_t n;
    char *data = slurp(p, &n);
    size_t s[4];
    ASSERT_EQ(line_starts(data, n, s, 3), 2);
    for (int k = 0; k < 2; k++) {
        json_error_t je;
        json_t *o = json_loadb(data + s[k], s[k + 1] - s[k] - 1, JSON_REJECT_DUPLICATES, &je);
        ASSERT_MSG(o, "line %d: %s", k + 1, je.text);
        json_decref(o);
    }
    free(data);
}

TEST(audit_damaged_tail_stops_appends)
{
    const char *p = path_in("dt.log");
    ASSERT_EQ(write_log(p, 3, NULL, NULL), 0);
    int fd = open(p, O_WRONLY | O_APPEND);
    ASSERT(write(fd, "{\"seq\":4,\"ts\"", 13) == 13);
    close(fd);
    audit_log_t *al;
    char err[512];
    ASSERT_EQ(audit_log_open(&al, p, NULL, err, sizeof err), 0);
    ASSERT_EQ(append_one(al, "ev", "timeout", 0, NULL), -EBADMSG);
    audit_log_close(al);
}

TEST(audit_head_is_logged)
{
    const char *p = path_in("hl.log"), *lp = path_in("log.jsonl");
    int lfd = open(lp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(lfd >= 0);
    log_set_fd(lfd);
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_INFO);
    audit_log_t *al;
    char err[512];
    struct audit_options o = {.fsync = AUDIT_FSYNC_NONE, .head_log_every = 5};
    ASSERT_EQ(audit_log_open(&al, p, &o, err, sizeof err), 0);
    struct audit_appended a;
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(append_one(al, "ev", "timeout", i, &a), 0);
    ASSERT_EQ(audit_log_head(al, err, sizeof err), 0);
    audit_log_close(al);
    close(lfd);
    size_t n;
    char *b = slurp(lp, &n);
    ASSERT(b);
    int heads = 0;
    for (char *q = b; (q = strstr(q, "\"event\":\"audit.head\"")); q++)
        heads++;
    ASSERT_EQ(heads, 3);
    ASSERT_CONTAINS(b, "\"trigger\":\"periodic\"");
    ASSERT_CONTAINS(b, "\"trigger\":\"timer\"");
    ASSERT_CONTAINS(b, a.hash);
    ASSERT_CONTAINS(b, "\"seq\":10");
    free(b);
}

TEST(audit_cli_verify_and_head)
{
    const char *p = path_in("cli.log"), *m = path_in("cli-m.log"), *kp = path_in("cli.key");
    make_key(kp);
    char head[HASH_SHA256_HEX], out[4096], want[200];
    ASSERT_EQ(write_log(p, NREC, kp, head), 0);
    int rc = run_cli((char *[]){"audit", "verify", (char *)p, NULL}, out, sizeof out);
    ASSERT_MSG(rc == 0, "exit %d: %s", rc, out);
    ASSERT_CONTAINS(out, "ok: 20 records, seq 1..20 in 1 file");
    snprintf(want, sizeof want, "head: 20 %s", head);
    ASSERT_CONTAINS(out, want);
    ASSERT_CONTAINS(out, "hmac: not checked");
    ASSERT_EQ(run_cli((char *[]){"audit", "verify", "--key", (char *)kp, "--expect-head", head,
                                 (char *)p, NULL},
                      out, sizeof out),
              0);
    ASSERT_CONTAINS(out, "hmac: verified");
    ASSERT_CONTAINS(out, "anchor: found at seq 20");
    ASSERT_EQ(run_cli((char *[]){"audit", "head", (char *)p, NULL}, out, sizeof out), 0);
    snprintf(want, sizeof want, "20 %s\n", head);
    ASSERT_STREQ(out, want);

    /* One flipped byte in record 7. */
    size_t n;
    char *b = slurp(p, &n);
    size_t st[NREC + 2];
    line_starts(b, n, st, NREC + 1);
    b[st[6] + 40] ^= 1;
    spit(m, b, n);
    rc = run_cli((char *[]){"audit", "verify", (char *)m, NULL}, out, sizeof out);
    ASSERT_EQ(rc, 1);
    ASSERT_CONTAINS(out, "FAILED:");
    ASSERT_CONTAINS(out, "line 7 (seq 7)");
    ASSERT_CONTAINS(out, "hash mismatch");
    ASSERT_CONTAINS(out, "verified before it: 6 records");
    /* Truncated: passes alone, fails against the anchor. */
    b[st[6] + 40] ^= 1;
    spit(m, b, st[15]);
    ASSERT_EQ(run_cli((char *[]){"audit", "verify", (char *)m, NULL}, out, sizeof out), 0);
    ASSERT_EQ(run_cli((char *[]){"audit", "verify", "--expect-head", head, (char *)m, NULL}, out,
                      sizeof out),
              1);
    ASSERT_CONTAINS(out, "anchor not found");
    /* Wrong key. */
    spit(kp, "another-key-of-enough-bytes!!", 29);
    ASSERT_EQ(run_cli((char *[]){"audit", "verify", "--key", (char *)kp, (char *)p, NULL}, out,
                      sizeof out),
              1);
    ASSERT_CONTAINS(out, "hmac mismatch");
    free(b);

    /* Usage errors: exit 2, nothing on stdout. */
    char *usage[][5] = {{"audit", NULL},
                        {"audit", "verify", NULL},
                        {"audit", "frobnicate", NULL},
                        {"audit", "verify", "--expect-head", "xyz", NULL},
                        {"audit", "verify", "--bogus", (char *)p, NULL},
                        {"audit", "head", NULL},
                        {"audit", "verify", (char *)p, "--key", NULL}};
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        ASSERT_EQ(run_cli(usage[i], out, sizeof out), 2);
        ASSERT_STREQ(out, "");
    }
    /* A missing file is an error, not a verdict; an empty log has the zero head. */
    ASSERT_EQ(run_cli((char *[]){"audit", "head", "/nonexistent/audit.log", NULL}, out, sizeof out),
              1);
    ASSERT_STREQ(out, "");
    int efd = open(m, O_WRONLY | O_TRUNC);
    close(efd);
    ASSERT_EQ(run_cli((char *[]){"audit", "head", (char *)m, NULL}, out, sizeof out), 0);
    ASSERT_STREQ(out, "0 0000000000000000000000000000000000000000000000000000000000000000\n");
    ASSERT_EQ(run_cli((char *[]){"audit", "verify", (char *)m, NULL}, out, sizeof out), 0);
    ASSERT_CONTAINS(out, "ok: 0 records in 1 file");
    ASSERT_EQ(
        run_cli((char *[]){"audit", "verify", "/nonexistent/audit.log", NULL}, out, sizeof out), 1);
    ASSERT_STREQ(out, "");
}

TEST(audit_large_records_and_limits)
{
    const char *p = path_in("big.log");
    audit_log_t *al;
    char err[512];
    ASSERT_EQ(
        audit_log_open(&al, p, &(struct audit_options){.fsync = AUDIT_FSYNC_NONE}, err, sizeof err),
        0);
    /* Escaping grows control bytes sixfold ("\u0001"): 8000 of them make a
     * 48,000-byte string, so the record is far past the 4 KiB tail window. */
    size_t big = 8000;
    char *code = malloc(9000);
    memset(code, 0x01, 9000);
    struct log_field f[] = {LOG_BOOL("blocked", true), LOG_STRN("code_snippet", code, big)};
    struct audit_event e = {
        .eval_id = "ev-big", .reason = "output_limit", .details = f, .ndetails = 2};
    struct audit_appended a;
    for (int i = 0; i < 3; i++)
        ASSERT_MSG(audit_append(al, &e, &a, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(a.seq, 3);
    /* Past AUDIT_DETAILS_MAX: refused whole. */
    struct stat s0, s1;
    ASSERT_EQ(stat(p, &s0), 0);
    ASSERT(s0.st_size > 3 * 48000);
    f[1] = LOG_STRN("code_snippet", code, 8300);
    ASSERT_EQ(audit_append(al, &e, NULL, err, sizeof err), -EMSGSIZE);
    ASSERT_EQ(stat(p, &s1), 0);
    ASSERT_EQ(s0.st_size, s1.st_size);
    audit_log_close(al);
    free(code);
    /* A fresh handle reads the big tail. */
    ASSERT_EQ(audit_log_open(&al, p, NULL, err, sizeof err), 0);
    ASSERT_EQ(append_one(al, "ev-big", "timeout", 0, &a), 0);
    ASSERT_EQ(a.seq, 4);
    audit_log_close(al);
    struct audit_verify_result r;
    ASSERT_MSG(verify1(p, NULL, 0, &r, err, sizeof err) == 0, "%s", err);
    ASSERT_EQ(r.records, 4);
}
