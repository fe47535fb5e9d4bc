/* audit.c - the hash-chained security audit log (see audit.h, docs/audit.md).
 *
 * What each hash covers. A record is one line
 *     P "hash":"<H>"}\n              or    P "hash":"<H>","hmac":"<M>"}\n
 * where P runs from the line's '{' up to and including the ',' before "hash",
 * and P itself ends with ,"prev_hash":"<64 hex>",. H = hex SHA-256(P), and
 * M = hex HMAC-SHA256(key, P). P holds prev_hash, so H (and M) bind the
 * previous record: change, drop, duplicate or reorder a record and the next
 * check fails. Hex is lowercase, always 64 digits.
 *
 * Why the JSON is canonical without a canonicalisation step: the hash is over
 * the bytes as written, not over a re-serialisation, so there is nothing to
 * canonicalise. What remains is to leave no byte of the line unchecked. Bytes
 * of P are covered by H. The bytes after P have exactly one allowed form
 * (checked character by character: lowercase hex, the closing "}", the final
 * "\n"), so any change there is a layout, hash or hmac failure. Hence every
 * single-byte change anywhere in a file is detected (tests/unit/test_audit.c
 * flips each byte of a log). One exception is inherent to keyless hashing: an
 * hmac field cannot be checked without the key, so verify without --key does
 * not notice a changed hmac digit; it says "hmac: not checked".
 *
 * What verify reports: the first record that fails, by file, 1-based line
 * and seq (as written, 0 if unreadable), with the reason, checked in this
 * order: bad JSON, missing/unexpected field, layout, seq gap, prev_hash
 * mismatch, hash mismatch, hmac mismatch. Then, if an anchor was given, that
 * its hash is in the chain (truncation is invisible otherwise).
 *
 * Appenders coordinate through flock(2) on the live file; a handle whose fd
 * no longer names the path (another process rotated it) reopens. The tail is
 * re-read under the lock unless the file's (dev, inode, size) are what this
 * handle saw after its own last write. A live file that is empty or missing
 * continues the chain from the newest rotated file FILE.<12+ digits>. */
#include "telemetry/audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"
#include "util/json.h"

static const char ZERO_HASH[] = "0000000000000000000000000000000000000000000000000000000000000000";

#define SEQ_PREFIX "{\"seq\":"
#define PREV_KEY ",\"prev_hash\":\""
#define HASH_KEY "\"hash\":\""
#define HMAC_KEY "\",\"hmac\":\""
#define HEXLEN 64
/* ,"prev_hash":"<64>",  */
#define PREV_TAIL_LEN (sizeof PREV_KEY - 1 + HEXLEN + 2)
/* "hash":"<64>"}  and  "hash":"<64>","hmac":"<64>"}  */
#define TAIL_PLAIN_LEN (sizeof HASH_KEY - 1 + HEXLEN + 2)
#define TAIL_HMAC_LEN (sizeof HASH_KEY - 1 + HEXLEN + sizeof HMAC_KEY - 1 + HEXLEN + 2)
#define MAX_EVAL_REASONS 64
#define REOPEN_TRIES 100

/* ------------------------------------------------------------------ */
/* Line layout                                                          */
/* ------------------------------------------------------------------ */

struct line_parts {
    uint64_t seq;     /* from the text, 0 if unreadable */
    size_t plen;      /* bytes of P */
    const char *prev; /* 64 hex digits */
    const char *hash; /* 64 hex digits */
    const char *hmac; /* 64 hex digits or NULL */
};

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Parse `{"seq":N,` at the start; N without leading zeros, 1..19 digits. */
static uint64_t text_seq(const char *line, size_t n)
{
    size_t k = sizeof SEQ_PREFIX - 1;
    if (n < k + 2 || memcmp(line, SEQ_PREFIX, k) != 0 || line[k] < '1' || line[k] > '9')
        return 0;
    uint64_t v = 0;
    size_t i = k;
    for (; i < n && i - k < 19 && line[i] >= '0' && line[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(line[i] - '0');
    if (i >= n || line[i] != ',')
        return 0;
    return v;
}

/* The fixed parts of a line (without its newline). Returns AUDIT_BAD_NONE or
 * AUDIT_BAD_LAYOUT with a message in why. */
static enum audit_bad line_split(const char *line, size_t n, struct line_parts *p, const char **why)
{
    memset(p, 0, sizeof *p);
    p->seq = text_seq(line, n);
    if (!p->seq) {
        *why = "the line does not start with {\"seq\":N,";
        return AUDIT_BAD_LAYOUT;
    }
    if (n < TAIL_PLAIN_LEN + PREV_TAIL_LEN + sizeof SEQ_PREFIX || line[n - 1] != '}' ||
        line[n - 2] != '"') {
        *why = "the line does not end with the hash member and '}'";
        return AUDIT_BAD_LAYOUT;
    }
    const char *t;
    size_t h = sizeof HASH_KEY - 1;
    if (n >= TAIL_HMAC_LEN + PREV_TAIL_LEN && memcmp(line + n - TAIL_HMAC_LEN, HASH_KEY, h) == 0) {
        t = line + n - TAIL_HMAC_LEN;
        if (memcmp(t + h + HEXLEN, HMAC_KEY, sizeof HMAC_KEY - 1) != 0) {
            *why = "the hmac member is not in its canonical form";
            return AUDIT_BAD_LAYOUT;
        }
        p->hmac = t + h + HEXLEN + sizeof HMAC_KEY - 1;
        p->hash = t + h;
        if (!is_lower_hex(p->hmac, HEXLEN)) {
            *why = "hmac is not 64 lowercase hex digits";
            return AUDIT_BAD_LAYOUT;
        }
    } else if (memcmp(line + n - TAIL_PLAIN_LEN, HASH_KEY, h) == 0) {
        t = line + n - TAIL_PLAIN_LEN;
        p->hash = t + h;
    } else {
        *why = "the line does not end with the hash (and hmac) members";
        return AUDIT_BAD_LAYOUT;
    }
    if (!is_lower_hex(p->hash, HEXLEN)) {
        *why = "hash is not 64 lowercase hex digits";
        return AUDIT_BAD_LAYOUT;
    }
    p->plen = (size_t)(t - line);
    const char *pt = line + p->plen - PREV_TAIL_LEN;
    if (memcmp(pt, PREV_KEY, sizeof PREV_KEY - 1) != 0 ||
        memcmp(pt + sizeof PREV_KEY - 1 + HEXLEN, "\",", 2) != 0) {
        *why = "prev_hash is not the member just before hash";
        return AUDIT_BAD_LAYOUT;
    }
    p->prev = pt + sizeof PREV_KEY - 1;
    if (!is_lower_hex(p->prev, HEXLEN)) {
        *why = "prev_hash is not 64 lowercase hex digits";
        return AUDIT_BAD_LAYOUT;
    }
    return AUDIT_BAD_NONE;
}

static int hash_prefix(const char *line, size_t plen, char out[HASH_SHA256_HEX])
{
    return hash_sha256_hex(line, plen, out);
}

/* ------------------------------------------------------------------ */
/* Reading the head of a file                                           */
/* ------------------------------------------------------------------ */

/* The last record of an open file of `size` bytes: its seq and hash, after
 * checking its layout and its own hash. size 0: seq 0. */
static int tail_read(int fd, const char *name, off_t size, uint64_t *seq,
                     char hash[HASH_SHA256_HEX], char *err, size_t errlen)
{
    if (size == 0) {
        *seq = 0;
        return 0;
    }
    char small[4096];
    char *big = NULL;
    char *b = small;
    size_t want = (size_t)size < sizeof small ? (size_t)size : sizeof small;
    int rc = 0;
    for (;;) {
        ssize_t r = pread(fd, b, want, size - (off_t)want);
        if (r < 0) {
            rc = err_sys(err, errlen, -errno, "%s: read", name);
            goto out;
        }
        if ((size_t)r != want) {
            rc = err_set(err, errlen, -EIO, "%s: short read at its tail", name);
            goto out;
        }
        if (b[want - 1] != '\n') {
            rc = err_set(err, errlen, -EBADMSG,
                         "%s ends with a partial record; run 'clearbox audit verify'", name);
            goto out;
        }
        const char *start = NULL;
        for (size_t i = want - 1; i > 0; i--)
            if (b[i - 1] == '\n') {
                start = b + i;
                break;
            }
        if (!start && want == (size_t)size)
            start = b;
        if (!start) {
            if (b == small && (size_t)size > want) {
                /* A record is at most AUDIT_RECORD_MAX bytes; one more byte
                 * reaches the newline that ends the record before it. */
                want = (size_t)size <= AUDIT_RECORD_MAX ? (size_t)size : AUDIT_RECORD_MAX + 1;
                big = malloc(want);
                if (!big) {
                    rc = err_set(err, errlen, -ENOMEM, "out of memory");
                    goto out;
                }
                b = big;
                continue;
            }
            rc = err_set(err, errlen, -EBADMSG, "%s: last record longer than %d bytes", name,
                         AUDIT_RECORD_MAX);
            goto out;
        }
        size_t n = (size_t)(b + want - 1 - start);
        struct line_parts p;
        const char *why = NULL;
        if (line_split(start, n, &p, &why) != AUDIT_BAD_NONE) {
            rc = err_set(err, errlen, -EBADMSG,
                         "%s: last record is damaged (%s); run 'clearbox audit verify'", name, why);
            goto out;
        }
        char h[HASH_SHA256_HEX];
        rc = hash_prefix(start, p.plen, h);
        if (rc < 0)
            goto out;
        if (memcmp(h, p.hash, HEXLEN) != 0) {
            rc = err_set(err, errlen, -EBADMSG,
                         "%s: last record (seq %" PRIu64
                         ") does not match its hash; run 'clearbox audit verify'",
                         name, p.seq);
            goto out;
        }
        *seq = p.seq;
        memcpy(hash, p.hash, HEXLEN);
        hash[HEXLEN] = '\0';
        break;
    }
out:
    free(big);
    return rc;
}

static void path_split(const char *path, char *dir, size_t dlen, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dlen, ".");
        *base = path;
    } else if (slash == path) {
        snprintf(dir, dlen, "/");
        *base = slash + 1;
    } else {
        snprintf(dir, dlen, "%.*s", (int)(slash - path), path);
        *base = slash + 1;
    }
}

/* Newest rotated file of path: FILE.<12+ digits> with the largest number.
 * Returns 1 and its path in out, 0 if there is none, or -errno. */
static int rotated_newest(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
    char dir[4096];
    const char *base;
    path_split(path, dir, sizeof dir, &base);
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return err_sys(err, errlen, -errno, "%s: open directory", dir);
    uint64_t best = 0;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || nm[bl] != '.')
            continue;
        const char *q = nm + bl + 1;
        size_t nd = strspn(q, "0123456789");
        if (nd < 12 || nd > 19 || q[nd] != '\0')
            continue;
        uint64_t v = strtoull(q, NULL, 10);
        if (!found || v > best) {
            best = v;
            found = true;
        }
    }
    closedir(d);
    if (!found)
        return 0;
    snprintf(out, outlen, "%s.%012" PRIu64, path, best);
    return 1;
}

/* Head of the chain continued by an empty/missing live file. */
static int predecessor_head(const char *path, uint64_t *seq, char hash[HASH_SHA256_HEX], char *err,
                            size_t errlen)
{
    char rp[4200];
    int rc = rotated_newest(path, rp, sizeof rp, err, errlen);
    if (rc <= 0) {
        *seq = 0;
        memcpy(hash, ZERO_HASH, sizeof ZERO_HASH);
        return rc;
    }
    int fd = open(rp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "%s: open", rp);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = err_sys(err, errlen, -errno, "%s: stat", rp);
    } else if (st.st_size == 0) {
        rc = err_set(err, errlen, -EBADMSG, "%s: rotated audit file is empty", rp);
    } else {
        rc = tail_read(fd, rp, st.st_size, seq, hash, err, errlen);
    }
    close(fd);
    return rc;
}

int audit_head(const char *path, uint64_t *seq, char hash[HASH_SHA256_HEX], char *err,
               size_t errlen)
{
    if (!path || !seq || !hash)
        return err_set(err, errlen, -EINVAL, "audit_head: path, seq and hash are required");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            /* A live file may be missing right after a rotation, but a path
             * with no rotated files either is a typo, not an empty log. */
            char rp[4200];
            int rc = rotated_newest(path, rp, sizeof rp, err, errlen);
            if (rc == 0)
                return err_set(err, errlen, -ENOENT, "%s: no such audit log", path);
            if (rc < 0)
                return rc;
            return predecessor_head(path, seq, hash, err, errlen);
        }
        return err_sys(err, errlen, -errno, "%s: open", path);
    }
    while (flock(fd, LOCK_SH) < 0 && errno == EINTR) {
    }
    struct stat st;
    int rc;
    if (fstat(fd, &st) < 0)
        rc = err_sys(err, errlen, -errno, "%s: stat", path);
    else if (st.st_size == 0)
        rc = predecessor_head(path, seq, hash, err, errlen);
    else
        rc = tail_read(fd, path, st.st_size, seq, hash, err, errlen);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Keys, names, details                                                 */
/* ------------------------------------------------------------------ */

int audit_key_load(const char *path, uint8_t **key, size_t *keylen, char *err, size_t errlen)
{
    *key = NULL;
    *keylen = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "key file %s", path);
    struct stat st;
    int rc = 0;
    uint8_t *k = NULL;
    if (fstat(fd, &st) < 0) {
        rc = err_sys(err, errlen, -errno, "key file %s: stat", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < AUDIT_KEY_MIN || st.st_size > AUDIT_KEY_MAX) {
        rc = err_set(err, errlen, -EINVAL,
                     "key file %s must be a regular file of %d to %d bytes (try: head -c 32 "
                     "/dev/urandom > KEYFILE)",
                     path, AUDIT_KEY_MIN, AUDIT_KEY_MAX);
        goto out;
    }
    k = malloc((size_t)st.st_size);
    if (!k) {
        rc = err_set(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, k + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? err_sys(err, errlen, -errno, "key file %s: read", path)
                       : err_set(err, errlen, -EIO, "key file %s changed while read", path);
            goto out;
        }
        got += (size_t)r;
    }
    *key = k;
    *keylen = got;
    k = NULL;
out:
    if (k) {
        explicit_bzero(k, (size_t)st.st_size);
        free(k);
    }
    close(fd);
    return rc;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > AUDIT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            return false;
    }
    return true;
}

size_t audit_snippet_len(const char *code, size_t n)
{
    const unsigned char *s = (const unsigned char *)code;
    size_t i = 0;
    for (int chars = 0; i < n && chars < AUDIT_SNIPPET_CHARS; chars++) {
        unsigned char c = s[i];
        size_t len = 1;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4;
        if (len > 1) {
            if (i + len > n) {
                len = 1;
            } else {
                for (size_t k = 1; k < len; k++)
                    if ((s[i + k] & 0xC0) != 0x80) {
                        len = 1;
                        break;
                    }
            }
        }
        i += len;
    }
    return i;
}

/* Render log fields as the members of one object (braces included). */
static int render_fields(struct json *w, const struct log_field *f, size_t n, bool *has_blocked,
                         bool *blocked, bool *has_snippet, char *err, size_t errlen)
{
    int depth = 0;
    /* stack of container kinds: 'o' object, 'a' array; depth 0 is the details object */
    char kind[JSON_MAX_DEPTH];
    json_obj_open(w);
    for (size_t i = 0; i < n; i++) {
        const struct log_field *x = &f[i];
        bool in_arr = depth > 0 && kind[depth - 1] == 'a';
        if (x->type == LOG_F_SKIP)
            continue;
        if (x->type == LOG_F_END_OBJ || x->type == LOG_F_END_ARR) {
            char want = x->type == LOG_F_END_OBJ ? 'o' : 'a';
            if (depth == 0 || kind[depth - 1] != want)
                return err_set(err, errlen, -EINVAL, "details: unbalanced OBJ/ARR fields");
            depth--;
            if (want == 'o')
                json_obj_close(w);
            else
                json_arr_close(w);
            continue;
        }
        if (!in_arr) {
            if (!x->key)
                return err_set(err, errlen, -EINVAL, "details: a member has no key");
            json_key(w, x->key);
        }
        if (depth == 0 && x->key) {
            if (!strcmp(x->key, "blocked")) {
                if (x->type != LOG_F_BOOL)
                    return err_set(err, errlen, -EINVAL, "details.blocked must be a bool");
                *has_blocked = true;
                *blocked = x->v.b;
            } else if (!strcmp(x->key, "code_snippet")) {
                if (x->type != LOG_F_STR && x->type != LOG_F_STRN)
                    return err_set(err, errlen, -EINVAL, "details.code_snippet must be a string");
                *has_snippet = true;
            }
        }
        switch (x->type) {
        case LOG_F_STR: json_str(w, x->v.s); break;
        case LOG_F_STRN: json_strn(w, x->v.s, x->n); break;
        case LOG_F_INT: json_int(w, x->v.i); break;
        case LOG_F_UINT: json_uint(w, x->v.u); break;
        case LOG_F_DOUBLE: json_double(w, x->v.d); break;
        case LOG_F_BOOL: json_bool(w, x->v.b); break;
        case LOG_F_NULL: json_null_value(w); break;
        case LOG_F_RAW:
            return err_set(err, errlen, -EINVAL,
                           "details: RAW fields are not accepted (use details_json)");
        case LOG_F_OBJ:
        case LOG_F_ARR:
            if (depth + 1 >= JSON_MAX_DEPTH)
                return err_set(err, errlen, -EINVAL, "details nest too deep");
            kind[depth++] = x->type == LOG_F_OBJ ? 'o' : 'a';
            if (x->type == LOG_F_OBJ)
                json_obj_open(w);
            else
                json_arr_open(w);
            break;
        default:
            return err_set(err, errlen, -EINVAL, "details: unknown field type %d", (int)x->type);
        }
    }
    if (depth != 0)
        return err_set(err, errlen, -EINVAL, "details: unbalanced OBJ/ARR fields");
    json_obj_close(w);
    return 0;
}

/* A checked event: names valid, details rendered into d. */
struct prepared {
    const char *event;
    const char *reason;
    const char *eval_id;
    struct buf d;
    char dstore[2048];
    bool blocked;
    uint64_t ts_ns;
};

static int prepare(struct prepared *pr, const struct audit_event *ev, const char *scope_eval_id,
                   char *err, size_t errlen)
{
    buf_init(&pr->d, pr->dstore, sizeof pr->dstore, AUDIT_DETAILS_MAX);
    if (!ev)
        return err_set(err, errlen, -EINVAL, "audit: no event");
    pr->event = ev->event ? ev->event : AUDIT_EVENT_DEFAULT;
    pr->reason = ev->reason;
    pr->eval_id = ev->eval_id ? ev->eval_id : scope_eval_id;
    pr->ts_ns = ev->ts_ns;
    if (!valid_name(pr->event))
        return err_set(err, errlen, -EINVAL, "audit: event must be 1..%d of [a-z0-9_.]",
                       AUDIT_NAME_MAX);
    if (!pr->reason || !valid_name(pr->reason))
        return err_set(err, errlen, -EINVAL, "audit: reason must be 1..%d of [a-z0-9_.]",
                       AUDIT_NAME_MAX);
    if (!pr->eval_id || !pr->eval_id[0] || strlen(pr->eval_id) > AUDIT_ID_MAX)
        return err_set(err, errlen, -EINVAL, "audit: eval_id must be 1..%d bytes", AUDIT_ID_MAX);
    bool has_json = ev->details_json != NULL, has_fields = ev->details != NULL;
    if (has_json == has_fields)
        return err_set(err, errlen, -EINVAL, "audit: give exactly one of details_json and details");
    if (has_json) {
        if (ev->details_len > AUDIT_DETAILS_MAX)
            return err_set(err, errlen, -EMSGSIZE, "audit: details over %d bytes",
                           AUDIT_DETAILS_MAX);
        if (memchr(ev->details_json, '\n', ev->details_len) ||
            memchr(ev->details_json, '\r', ev->details_len))
            return err_set(err, errlen, -EINVAL,
                           "audit: details must be one line (render them with util/json.h)");
        json_error_t je;
        json_t *o = json_loadb(ev->details_json, ev->details_len, JSON_REJECT_DUPLICATES, &je);
        if (!o)
            return err_set(err, errlen, -EINVAL, "audit: details are not valid JSON: %s", je.text);
        json_t *b = json_object_get(o, "blocked");
        json_t *s = json_object_get(o, "code_snippet");
        int ok = json_is_object(o) && json_is_boolean(b) && json_is_string(s);
        pr->blocked = ok && json_is_true(b);
        json_decref(o);
        if (!ok)
            return err_set(err, errlen, -EINVAL,
                           "audit: details must be an object with blocked (bool) and "
                           "code_snippet (string)");
        buf_append(&pr->d, ev->details_json, ev->details_len);
    } else {
        struct json w;
        json_init(&w, &pr->d);
        bool hb = false, hs = false;
        int rc = render_fields(&w, ev->details, ev->ndetails, &hb, &pr->blocked, &hs, err, errlen);
        if (rc < 0)
            return rc;
        if (!hb || !hs)
            return err_set(err, errlen, -EINVAL,
                           "audit: details must hold blocked (bool) and code_snippet (string)");
        if (!json_ok(&w))
            return err_set(err, errlen, -EMSGSIZE, "audit: details over %d bytes",
                           AUDIT_DETAILS_MAX);
    }
    if (!buf_ok(&pr->d))
        return err_set(err, errlen, pr->d.oom ? -ENOMEM : -EMSGSIZE, "audit: details too large");
    return 0;
}

/* ------------------------------------------------------------------ */
/* The appender                                                         */
/* ------------------------------------------------------------------ */

struct audit_log {
    pthread_mutex_t mu; /* guards everything below */
    char *path;
    int fd;       /* the live file, -1 when closed */
    uint8_t *key; /* HMAC key or NULL */
    size_t keylen;
    struct audit_options opt;
    bool cache_ok; /* seq/hash are the head of (dev, ino) at size */
    dev_t dev;
    ino_t ino;
    off_t size;
    uint64_t seq;
    char hash[HASH_SHA256_HEX];
    uint64_t last_sync_ns; /* CLOCK_MONOTONIC of the last fdatasync */
};

int audit_log_open(audit_log_t **out, const char *path, const struct audit_options *opt, char *err,
                   size_t errlen)
{
    *out = NULL;
    if (!path || !path[0])
        return err_set(err, errlen, -EINVAL, "audit: a log path is required");
    if (strlen(path) > 4000)
        return err_set(err, errlen, -ENAMETOOLONG, "audit: log path too long");
    audit_log_t *al = calloc(1, sizeof *al);
    if (!al)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    if (opt)
        al->opt = *opt;
    al->opt.key_path = NULL;
    if (al->opt.fsync > AUDIT_FSYNC_INTERVAL) {
        free(al);
        return err_set(err, errlen, -EINVAL, "audit: unknown fsync policy %d", (int)opt->fsync);
    }
    if (!al->opt.fsync_interval_ms)
        al->opt.fsync_interval_ms = 1000;
    if (!al->opt.rate_limit)
        al->opt.rate_limit = AUDIT_RATE_LIMIT_DEFAULT;
    pthread_mutex_init(&al->mu, NULL);
    al->fd = -1;
    al->path = strdup(path);
    int rc = 0;
    if (!al->path) {
        rc = err_set(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }
    if (opt && opt->key_path) {
        rc = audit_key_load(opt->key_path, &al->key, &al->keylen, err, errlen);
        if (rc < 0)
            goto fail;
    }
    al->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (al->fd < 0) {
        rc = err_sys(err, errlen, -errno, "audit log %s: open", path);
        goto fail;
    }
    al->last_sync_ns = time_mono_ns();
    *out = al;
    return 0;
fail:
    audit_log_close(al);
    return rc;
}

void audit_log_close(audit_log_t *al)
{
    if (!al)
        return;
    if (al->fd >= 0) {
        if (al->opt.fsync != AUDIT_FSYNC_NONE)
            fdatasync(al->fd);
        close(al->fd);
    }
    if (al->key) {
        explicit_bzero(al->key, al->keylen);
        free(al->key);
    }
    free(al->path);
    pthread_mutex_destroy(&al->mu);
    free(al);
}

const char *audit_log_path(const audit_log_t *al)
{
    return al ? al->path : NULL;
}

/* With al->mu held: open (if needed) and lock the file the path names now.
 * On success the flock is held and *st describes al->fd. */
static int lock_current(audit_log_t *al, struct stat *st, char *err, size_t errlen)
{
    for (int tries = 0; tries < REOPEN_TRIES; tries++) {
        if (al->fd < 0) {
            al->fd = open(al->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
            if (al->fd < 0)
                return err_sys(err, errlen, -errno, "audit log %s: open", al->path);
        }
        while (flock(al->fd, LOCK_EX) < 0) {
            if (errno != EINTR)
                return err_sys(err, errlen, -errno, "audit log %s: lock", al->path);
        }
        struct stat ps;
        if (fstat(al->fd, st) < 0) {
            int e = -errno;
            flock(al->fd, LOCK_UN);
            return err_sys(err, errlen, e, "audit log %s: stat", al->path);
        }
        if (stat(al->path, &ps) == 0 && ps.st_dev == st->st_dev && ps.st_ino == st->st_ino)
            return 0;
        /* Rotated (or removed) by someone else since we opened it. */
        flock(al->fd, LOCK_UN);
        close(al->fd);
        al->fd = -1;
        al->cache_ok = false;
    }
    return err_set(err, errlen, -EAGAIN, "audit log %s keeps changing under us", al->path);
}

static void unlock_current(audit_log_t *al)
{
    if (al->fd >= 0)
        flock(al->fd, LOCK_UN);
}

/* With the lock held: the chain head for the file described by st. */
static int current_head(audit_log_t *al, const struct stat *st, char *err, size_t errlen)
{
    if (al->cache_ok && al->dev == st->st_dev && al->ino == st->st_ino && al->size == st->st_size)
        return 0;
    int rc;
    if (st->st_size == 0)
        rc = predecessor_head(al->path, &al->seq, al->hash, err, errlen);
    else
        rc = tail_read(al->fd, al->path, st->st_size, &al->seq, al->hash, err, errlen);
    if (rc < 0) {
        al->cache_ok = false;
        return rc;
    }
    al->cache_ok = true;
    al->dev = st->st_dev;
    al->ino = st->st_ino;
    al->size = st->st_size;
    return 0;
}

static void log_head_event(const audit_log_t *al, const char *trigger, const char *file,
                           uint64_t seq, const char *hash)
{
    log_info(log_get("security"), "audit.head", LOG_STR("audit_file", file), LOG_UINT("seq", seq),
             LOG_STR("hash", hash), LOG_STR("trigger", trigger));
    (void)al;
}

/* With the lock held and the file non-empty: rename it to FILE.<first seq>. */
static int rotate(audit_log_t *al, char *err, size_t errlen)
{
    char first[48];
    ssize_t r = pread(al->fd, first, sizeof first - 1, 0);
    if (r < 0)
        return err_sys(err, errlen, -errno, "audit log %s: read", al->path);
    uint64_t fseq = text_seq(first, (size_t)r);
    if (!fseq)
        return err_set(err, errlen, -EBADMSG, "audit log %s: first record is damaged", al->path);
    char np[4200];
    snprintf(np, sizeof np, "%s.%012" PRIu64, al->path, fseq);
    if (al->opt.fsync != AUDIT_FSYNC_NONE)
        fdatasync(al->fd);
    if (renameat2(AT_FDCWD, al->path, AT_FDCWD, np, RENAME_NOREPLACE) < 0) {
        if (errno != EINVAL && errno != ENOSYS)
            return err_sys(err, errlen, -errno, "audit log %s: rotate to %s", al->path, np);
        /* No RENAME_NOREPLACE on this filesystem: link refuses to overwrite. */
        if (link(al->path, np) < 0)
            return err_sys(err, errlen, -errno, "audit log %s: rotate to %s", al->path, np);
        if (unlink(al->path) < 0)
            return err_sys(err, errlen, -errno, "audit log %s: rotate", al->path);
    }
    if (al->opt.fsync != AUDIT_FSYNC_NONE) {
        char dir[4096];
        const char *base;
        path_split(al->path, dir, sizeof dir, &base);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    log_head_event(al, "rotation", np, al->seq, al->hash);
    return 0;
}

static int append_locked_render(audit_log_t *al, struct buf *line, const struct prepared *pr,
                                uint64_t seq, const char *prev, char hash_out[HASH_SHA256_HEX],
                                char ts_out[TIME_RFC3339_LEN])
{
    struct json w;
    buf_reset(line);
    json_init(&w, line);
    time_fmt_rfc3339(pr->ts_ns ? pr->ts_ns : time_now_ns(), ts_out);
    json_obj_open(&w);
    json_kv_uint(&w, "seq", seq);
    json_kv_str(&w, "ts", ts_out);
    json_kv_str(&w, "event", pr->event);
    json_kv_str(&w, "eval_id", pr->eval_id);
    json_kv_str(&w, "reason", pr->reason);
    json_key(&w, "details");
    json_raw(&w, pr->d.data, pr->d.len);
    json_kv_str(&w, "prev_hash", prev);
    buf_putc(line, ',');
    if (!json_ok(&w))
        return line->oom ? -ENOMEM : -EMSGSIZE;
    size_t plen = line->len;
    int rc = hash_prefix(line->data, plen, hash_out);
    if (rc < 0)
        return rc;
    buf_append(line, HASH_KEY, sizeof HASH_KEY - 1);
    buf_append(line, hash_out, HEXLEN);
    if (al->key) {
        char mac[HASH_SHA256_HEX];
        rc = hash_hmac_sha256_hex(al->key, al->keylen, line->data, plen, mac);
        if (rc < 0)
            return rc;
        buf_append(line, HMAC_KEY, sizeof HMAC_KEY - 1);
        buf_append(line, mac, HEXLEN);
    }
    buf_append(line, "\"}\n", 3);
    if (!buf_ok(line))
        return line->oom ? -ENOMEM : -EMSGSIZE;
    return 0;
}

static int append_prepared(audit_log_t *al, const struct prepared *pr, struct audit_appended *out,
                           char *err, size_t errlen)
{
    char store[4096];
    struct buf line;
    buf_init(&line, store, sizeof store, AUDIT_RECORD_MAX);
    char hash[HASH_SHA256_HEX], ts[TIME_RFC3339_LEN];
    uint64_t seq = 0;
    int rc = 0;
    bool log_head = false, written = false;

    pthread_mutex_lock(&al->mu);
    for (int tries = 0;; tries++) {
        struct stat st;
        rc = lock_current(al, &st, err, errlen);
        if (rc < 0)
            goto out_unlocked;
        rc = current_head(al, &st, err, errlen);
        if (rc < 0)
            goto out;
        seq = al->seq + 1;
        rc = append_locked_render(al, &line, pr, seq, al->seq ? al->hash : ZERO_HASH, hash, ts);
        if (rc == -EMSGSIZE) {
            rc = err_set(err, errlen, rc, "audit: record over %d bytes", AUDIT_RECORD_MAX);
            goto out;
        } else if (rc < 0) {
            rc = err_sys(err, errlen, rc, "audit: render record");
            goto out;
        }
        if (al->opt.rotate_bytes && st.st_size > 0 && tries < REOPEN_TRIES &&
            (uint64_t)st.st_size + line.len > al->opt.rotate_bytes) {
            rc = rotate(al, err, errlen);
            if (rc < 0)
                goto out;
            unlock_current(al);
            close(al->fd);
            al->fd = -1;
            al->cache_ok = false;
            continue;
        }
        ssize_t w = write(al->fd, line.data, line.len);
        if (w != (ssize_t)line.len) {
            int e = w < 0 ? errno : ENOSPC;
            /* Cut back a partial record so the chain stays appendable. */
            if (w > 0 && ftruncate(al->fd, st.st_size) < 0)
                al->cache_ok = false;
            rc = err_sys(err, errlen, -e, "audit log %s: write", al->path);
            goto out;
        }
        written = true;
        al->size = st.st_size + (off_t)line.len;
        al->seq = seq;
        memcpy(al->hash, hash, sizeof hash);
        if (al->opt.fsync == AUDIT_FSYNC_EVERY ||
            (al->opt.fsync == AUDIT_FSYNC_INTERVAL &&
             time_mono_ns() - al->last_sync_ns >= (uint64_t)al->opt.fsync_interval_ms * 1000000u)) {
            if (fdatasync(al->fd) < 0)
                rc = err_sys(err, errlen, -errno, "audit log %s: fdatasync", al->path);
            al->last_sync_ns = time_mono_ns();
        }
        log_head = al->opt.head_log_every && seq % al->opt.head_log_every == 0;
        break;
    }
out:
    unlock_current(al);
out_unlocked:
    pthread_mutex_unlock(&al->mu);
    if (written && out) {
        out->seq = seq;
        memcpy(out->hash, hash, sizeof hash);
        memcpy(out->ts, ts, sizeof ts);
    }
    if (log_head)
        log_head_event(al, "periodic", al->path, seq, hash);
    buf_free(&line);
    return rc;
}

int audit_append(audit_log_t *al, const struct audit_event *ev, struct audit_appended *out,
                 char *err, size_t errlen)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!al)
        return err_set(err, errlen, -EINVAL, "audit_append: no log");
    struct prepared pr;
    int rc = prepare(&pr, ev, NULL, err, errlen);
    if (rc == 0)
        rc = append_prepared(al, &pr, out, err, errlen);
    buf_free(&pr.d);
    return rc;
}

int audit_log_current_head(audit_log_t *al, uint64_t *seq, char hash[HASH_SHA256_HEX], char *err,
                           size_t errlen)
{
    if (!al)
        return err_set(err, errlen, -EINVAL, "audit: no log");
    pthread_mutex_lock(&al->mu);
    struct stat st;
    int rc = lock_current(al, &st, err, errlen);
    if (rc == 0) {
        rc = current_head(al, &st, err, errlen);
        if (rc == 0) {
            *seq = al->seq;
            memcpy(hash, al->seq ? al->hash : ZERO_HASH, HASH_SHA256_HEX);
        }
        unlock_current(al);
    }
    pthread_mutex_unlock(&al->mu);
    return rc;
}

int audit_log_head(audit_log_t *al, char *err, size_t errlen)
{
    uint64_t seq;
    char hash[HASH_SHA256_HEX];
    int rc = audit_log_current_head(al, &seq, hash, err, errlen);
    if (rc == 0)
        log_head_event(al, "timer", al->path, seq, hash);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Rate-limited evaluation scope                                        */
/* ------------------------------------------------------------------ */

struct reason_count {
    char reason[AUDIT_NAME_MAX + 1];
    uint64_t count;             /* seen, written or not */
    uint64_t suppressed;        /* not written */
    bool all_blocked;           /* every suppressed record had blocked:true */
    uint64_t first_ns, last_ns; /* ts of the first/last suppressed record */
};

struct audit_eval {
    pthread_mutex_t mu; /* guards r, nr */
    audit_log_t *al;    /* may be NULL: count only */
    char eval_id[AUDIT_ID_MAX + 1];
    char *snippet;
    size_t snippet_len;
    uint32_t limit;
    struct reason_count r[MAX_EVAL_REASONS];
    size_t nr;
};

int audit_eval_begin(audit_eval_t **out, audit_log_t *al, const char *eval_id, const char *code,
                     size_t code_len, char *err, size_t errlen)
{
    *out = NULL;
    if (!eval_id || !eval_id[0] || strlen(eval_id) > AUDIT_ID_MAX)
        return err_set(err, errlen, -EINVAL, "audit: eval_id must be 1..%d bytes", AUDIT_ID_MAX);
    audit_eval_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    ev->snippet_len = code ? audit_snippet_len(code, code_len) : 0;
    ev->snippet = malloc(ev->snippet_len + 1);
    if (!ev->snippet) {
        free(ev);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    if (ev->snippet_len)
        memcpy(ev->snippet, code, ev->snippet_len);
    ev->snippet[ev->snippet_len] = '\0';
    pthread_mutex_init(&ev->mu, NULL);
    ev->al = al;
    snprintf(ev->eval_id, sizeof ev->eval_id, "%s", eval_id);
    ev->limit = al ? al->opt.rate_limit : AUDIT_RATE_LIMIT_DEFAULT;
    *out = ev;
    return 0;
}

static struct reason_count *reason_slot(audit_eval_t *ev, const char *reason)
{
    for (size_t i = 0; i < ev->nr; i++)
        if (!strcmp(ev->r[i].reason, reason))
            return &ev->r[i];
    /* Reasons are clearbox's own names, so the table does not fill up in
     * practice; if it did, the extra reasons share the last slot. */
    if (ev->nr == MAX_EVAL_REASONS)
        return &ev->r[MAX_EVAL_REASONS - 1];
    struct reason_count *s = &ev->r[ev->nr++];
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    s->all_blocked = true;
    return s;
}

int audit_eval_append(audit_eval_t *ev, const struct audit_event *e, struct audit_appended *out,
                      char *err, size_t errlen)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!ev)
        return err_set(err, errlen, -EINVAL, "audit_eval_append: no scope");
    struct prepared pr;
    int rc = prepare(&pr, e, ev->eval_id, err, errlen);
    if (rc < 0)
        goto done;
    pthread_mutex_lock(&ev->mu);
    struct reason_count *s = reason_slot(ev, pr.reason);
    s->count++;
    bool suppress = s->count > ev->limit;
    if (suppress) {
        uint64_t now = pr.ts_ns ? pr.ts_ns : time_now_ns();
        if (!s->suppressed)
            s->first_ns = now;
        s->last_ns = now;
        s->suppressed++;
        s->all_blocked = s->all_blocked && pr.blocked;
    }
    pthread_mutex_unlock(&ev->mu);
    if (suppress) {
        if (out)
            out->suppressed = true;
        rc = 1;
    } else if (ev->al) {
        rc = append_prepared(ev->al, &pr, out, err, errlen);
    } else if (out) {
        time_fmt_rfc3339(pr.ts_ns ? pr.ts_ns : time_now_ns(), out->ts);
    }
done:
    buf_free(&pr.d);
    return rc;
}

uint64_t audit_eval_count(audit_eval_t *ev, const char *reason)
{
    if (!ev || !reason)
        return 0;
    uint64_t n = 0;
    pthread_mutex_lock(&ev->mu);
    for (size_t i = 0; i < ev->nr; i++)
        if (!strcmp(ev->r[i].reason, reason))
            n = ev->r[i].count;
    pthread_mutex_unlock(&ev->mu);
    return n;
}

int audit_eval_end(audit_eval_t *ev, char *err, size_t errlen)
{
    if (!ev)
        return 0;
    int first = 0;
    for (size_t i = 0; i < ev->nr; i++) {
        struct reason_count *s = &ev->r[i];
        if (!s->suppressed || !ev->al)
            continue;
        char store[1024];
        struct buf b;
        buf_init(&b, store, sizeof store, AUDIT_DETAILS_MAX);
        struct json w;
        json_init(&w, &b);
        char t1[TIME_RFC3339_LEN], t2[TIME_RFC3339_LEN];
        time_fmt_rfc3339(s->first_ns, t1);
        time_fmt_rfc3339(s->last_ns, t2);
        json_obj_open(&w);
        json_kv_bool(&w, "blocked", s->all_blocked);
        json_key(&w, "code_snippet");
        json_strn(&w, ev->snippet, ev->snippet_len);
        json_kv_bool(&w, "summary", true);
        json_kv_uint(&w, "suppressed", s->suppressed);
        json_kv_uint(&w, "written", s->count - s->suppressed);
        json_kv_uint(&w, "limit", ev->limit);
        json_kv_str(&w, "first_suppressed_ts", t1);
        json_kv_str(&w, "last_suppressed_ts", t2);
        json_obj_close(&w);
        struct audit_event e = {
            .eval_id = ev->eval_id,
            .reason = s->reason,
            .details_json = b.data,
            .details_len = b.len,
        };
        int rc = json_ok(&w) ? audit_append(ev->al, &e, NULL, err, errlen)
                             : err_set(err, errlen, -EMSGSIZE, "audit: summary too large");
        if (rc < 0 && !first)
            first = rc;
        buf_free(&b);
    }
    free(ev->snippet);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
    return first;
}

/* ------------------------------------------------------------------ */
/* Verification                                                         */
/* ------------------------------------------------------------------ */

const char *audit_bad_name(enum audit_bad b)
{
    switch (b) {
    case AUDIT_BAD_NONE: return "ok";
    case AUDIT_BAD_JSON: return "bad JSON";
    case AUDIT_BAD_FIELD: return "missing field";
    case AUDIT_BAD_LAYOUT: return "bad layout";
    case AUDIT_BAD_SEQ: return "seq gap";
    case AUDIT_BAD_PREV: return "prev_hash mismatch";
    case AUDIT_BAD_HASH: return "hash mismatch";
    case AUDIT_BAD_HMAC: return "hmac mismatch";
    case AUDIT_BAD_ANCHOR: return "anchor not found";
    }
    return "unknown";
}

struct vstate {
    const struct audit_verify_opts *o;
    struct audit_verify_result *res;
    bool started;
    uint64_t prev_seq;
    char prev_hash[HASH_SHA256_HEX];
    char why[200];
    uint64_t bad_seq;
};

static const char *const REQUIRED[] = {"seq",    "ts",      "event",     "eval_id",
                                       "reason", "details", "prev_hash", "hash"};

/* Check the JSON shape of one line: fields present, typed, nothing else. */
static enum audit_bad check_json(struct vstate *v, const char *line, size_t n)
{
    json_error_t je;
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        snprintf(v->why, sizeof v->why, "%s", o ? "not a JSON object" : je.text);
        json_decref(o);
        return AUDIT_BAD_JSON;
    }
    enum audit_bad bad = AUDIT_BAD_NONE;
    json_t *seq = json_object_get(o, "seq");
    if (json_is_integer(seq) && json_integer_value(seq) > 0)
        v->bad_seq = (uint64_t)json_integer_value(seq);
    for (size_t i = 0; i < sizeof REQUIRED / sizeof REQUIRED[0]; i++) {
        json_t *x = json_object_get(o, REQUIRED[i]);
        bool ok = i == 0   ? json_is_integer(x) && json_integer_value(x) > 0
                  : i == 5 ? json_is_object(x)
                           : json_is_string(x);
        if (!ok) {
            snprintf(v->why, sizeof v->why, "%s %s", REQUIRED[i],
                     x ? "has the wrong type" : "is missing");
            bad = AUDIT_BAD_FIELD;
            goto out;
        }
    }
    json_t *hm = json_object_get(o, "hmac");
    if (hm && !json_is_string(hm)) {
        snprintf(v->why, sizeof v->why, "hmac has the wrong type");
        bad = AUDIT_BAD_FIELD;
        goto out;
    }
    size_t want = sizeof REQUIRED / sizeof REQUIRED[0] + (hm ? 1 : 0);
    if (json_object_size(o) != want) {
        snprintf(v->why, sizeof v->why, "unexpected field(s): %zu members, expected %zu",
                 json_object_size(o), want);
        bad = AUDIT_BAD_FIELD;
        goto out;
    }
    json_t *d = json_object_get(o, "details");
    if (!json_is_boolean(json_object_get(d, "blocked")) ||
        !json_is_string(json_object_get(d, "code_snippet"))) {
        snprintf(v->why, sizeof v->why,
                 "details.blocked (bool) or details.code_snippet (string) is missing");
        bad = AUDIT_BAD_FIELD;
    }
out:
    json_decref(o);
    return bad;
}

static enum audit_bad check_line(struct vstate *v, const char *line, size_t n)
{
    v->bad_seq = text_seq(line, n);
    enum audit_bad bad = check_json(v, line, n);
    if (bad)
        return bad;
    struct line_parts p;
    const char *why = NULL;
    if (line_split(line, n, &p, &why) != AUDIT_BAD_NONE) {
        snprintf(v->why, sizeof v->why, "%s", why);
        return AUDIT_BAD_LAYOUT;
    }
    v->bad_seq = p.seq;
    if (!v->started) {
        if (!v->o->partial && (p.seq != 1 || memcmp(p.prev, ZERO_HASH, HEXLEN) != 0)) {
            snprintf(v->why, sizeof v->why,
                     "the chain starts at seq %" PRIu64 ", not at seq 1 with a zero prev_hash "
                     "(earlier files missing? give them first, in order, or use --partial)",
                     p.seq);
            return p.seq != 1 ? AUDIT_BAD_SEQ : AUDIT_BAD_PREV;
        }
    } else {
        if (p.seq != v->prev_seq + 1) {
            snprintf(v->why, sizeof v->why, "expected seq %" PRIu64 ", found %" PRIu64,
                     v->prev_seq + 1, p.seq);
            return AUDIT_BAD_SEQ;
        }
        if (memcmp(p.prev, v->prev_hash, HEXLEN) != 0) {
            snprintf(v->why, sizeof v->why, "prev_hash is not the hash of seq %" PRIu64,
                     v->prev_seq);
            return AUDIT_BAD_PREV;
        }
    }
    char h[HASH_SHA256_HEX];
    if (hash_prefix(line, p.plen, h) < 0) {
        snprintf(v->why, sizeof v->why, "SHA-256 failed");
        return AUDIT_BAD_HASH;
    }
    if (memcmp(h, p.hash, HEXLEN) != 0) {
        snprintf(v->why, sizeof v->why, "the record's bytes do not hash to its hash");
        return AUDIT_BAD_HASH;
    }
    if (p.hmac)
        v->res->hmac_records++;
    if (v->o->key) {
        if (!p.hmac) {
            snprintf(v->why, sizeof v->why, "no hmac, but a key was given");
            return AUDIT_BAD_HMAC;
        }
        char m[HASH_SHA256_HEX];
        if (hash_hmac_sha256_hex(v->o->key, v->o->keylen, line, p.plen, m) < 0 ||
            !hash_equal(m, p.hmac, HEXLEN)) {
            snprintf(v->why, sizeof v->why, "hmac does not match (wrong key or altered record)");
            return AUDIT_BAD_HMAC;
        }
    }
    v->started = true;
    v->prev_seq = p.seq;
    memcpy(v->prev_hash, p.hash, HEXLEN);
    v->prev_hash[HEXLEN] = '\0';
    if (!v->res->records)
        v->res->first_seq = p.seq;
    v->res->records++;
    v->res->head_seq = p.seq;
    memcpy(v->res->head_hash, v->prev_hash, HASH_SHA256_HEX);
    if (v->o->expect_head && !v->res->anchor_seq && !strcmp(v->o->expect_head, v->prev_hash))
        v->res->anchor_seq = p.seq;
    return AUDIT_BAD_NONE;
}

/* Read one file line by line (bounded) and check each line. */
static int verify_file(struct vstate *v, const char *path, size_t idx, uint64_t *lines, char *err,
                       size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(err, errlen, -errno, "%s", path);
    size_t cap = 2 * AUDIT_RECORD_MAX;
    char *b = malloc(cap);
    if (!b) {
        close(fd);
        return err_set(err, errlen, -ENOMEM, "out of memory");
    }
    size_t len = 0, off = 0;
    bool eof = false;
    uint64_t ln = 0;
    int rc = 0;
    enum audit_bad bad = AUDIT_BAD_NONE;
    for (;;) {
        char *nl = memchr(b + off, '\n', len - off);
        if (!nl) {
            if (len - off > AUDIT_RECORD_MAX) {
                ln++;
                v->bad_seq = text_seq(b + off, len - off);
                snprintf(v->why, sizeof v->why, "line longer than %d bytes", AUDIT_RECORD_MAX);
                bad = AUDIT_BAD_JSON;
                break;
            }
            if (eof) {
                if (len > off) {
                    ln++;
                    v->bad_seq = text_seq(b + off, len - off);
                    snprintf(v->why, sizeof v->why,
                             "the last line has no newline (a partial write?)");
                    bad = AUDIT_BAD_JSON;
                }
                break;
            }
            memmove(b, b + off, len - off);
            len -= off;
            off = 0;
            ssize_t r = read(fd, b + len, cap - len);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                rc = err_sys(err, errlen, -errno, "%s: read", path);
                break;
            }
            if (r == 0)
                eof = true;
            len += (size_t)r;
            continue;
        }
        ln++;
        size_t n = (size_t)(nl - (b + off));
        if (n + 1 > AUDIT_RECORD_MAX) {
            v->bad_seq = text_seq(b + off, n);
            snprintf(v->why, sizeof v->why, "line longer than %d bytes", AUDIT_RECORD_MAX);
            bad = AUDIT_BAD_JSON;
            break;
        }
        bad = check_line(v, b + off, n);
        if (bad)
            break;
        off += n + 1;
    }
    free(b);
    close(fd);
    *lines = ln;
    if (rc == 0 && bad) {
        v->res->bad = bad;
        v->res->bad_seq = v->bad_seq;
        v->res->bad_line = ln;
        v->res->bad_file = idx;
        rc = err_set(err, errlen, -EBADMSG, "%s line %" PRIu64 " (seq %" PRIu64 "): %s: %s", path,
                     ln, v->bad_seq, audit_bad_name(bad), v->why);
    }
    return rc;
}

int audit_verify_ex(const char *const *paths, size_t n, const struct audit_verify_opts *opts,
                    struct audit_verify_result *res, char *err, size_t errlen)
{
    static const struct audit_verify_opts none;
    memset(res, 0, sizeof *res);
    memcpy(res->head_hash, ZERO_HASH, sizeof ZERO_HASH);
    if (!opts)
        opts = &none;
    if (!paths || n == 0)
        return err_set(err, errlen, -EINVAL, "audit verify: no files");
    if (opts->key && opts->keylen == 0)
        return err_set(err, errlen, -EINVAL, "audit verify: empty key");
    if (opts->expect_head &&
        (strlen(opts->expect_head) != HEXLEN || !is_lower_hex(opts->expect_head, HEXLEN)))
        return err_set(err, errlen, -EINVAL,
                       "audit verify: the anchor must be 64 lowercase hex digits");
    struct vstate v = {.o = opts, .res = res};
    uint64_t lines = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = verify_file(&v, paths[i], i, &lines, err, errlen);
        if (rc < 0)
            return rc;
    }
    res->hmac_checked = opts->key && res->records > 0;
    if (opts->expect_head && !res->anchor_seq) {
        res->bad = AUDIT_BAD_ANCHOR;
        res->bad_seq = res->head_seq;
        res->bad_line = lines;
        res->bad_file = n - 1;
        return err_set(
            err, errlen, -EBADMSG,
            "%s: anchor not found: %s is not the hash of any record (head is seq %" PRIu64
            "): the log was truncated or rewritten",
            paths[n - 1], opts->expect_head, res->head_seq);
    }
    return 0;
}

int audit_verify(const char *const *paths, size_t n, const void *key, size_t keylen,
                 struct audit_verify_result *res, char *err, size_t errlen)
{
    struct audit_verify_opts o = {.key = key, .keylen = keylen};
    return audit_verify_ex(paths, n, &o, res, err, errlen);
}
