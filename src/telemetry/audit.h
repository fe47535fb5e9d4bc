/* audit.h - the tamper-evident security audit log: hash-chained JSON lines.
 *
 * One record per line, fields in this order (DESIGN.md "Security audit records"):
 *   {"seq":N,"ts":"...","event":"evaluation.suspicious","eval_id":"...",
 *    "reason":"network_attempt","details":{...},"prev_hash":"<64 hex>",
 *    "hash":"<64 hex>"[,"hmac":"<64 hex>"]}\n
 * hash = SHA-256 of the line's bytes from its first byte '{' up to and
 * including the ',' that precedes "hash" (call them P); hmac = HMAC-SHA256
 * keyed by the key file's bytes over the same P. prev_hash is the previous
 * record's hash (64 zeros before seq 1), so the chain binds order: a deleted,
 * duplicated, reordered or edited record is detected. Truncation of the tail is
 * only detected against an anchor (a head hash kept elsewhere). docs/audit.md
 * is the user's reference.
 *
 * Appending: several threads and several processes may append to one file.
 * Each append takes the handle's mutex and an exclusive flock(2) on the file,
 * re-reads the last record's seq and hash (cached while the file's inode and
 * size are unchanged), writes the record with one write(2), then fsyncs per
 * policy. A handle follows rotations made by other processes.
 *
 * Rotation: with rotate_bytes set, a record that would take the file past it
 * first renames FILE to FILE.<seq of its first record, 12 digits>; the new
 * FILE continues seq and the chain (its first prev_hash is the rotated file's
 * head). Verify the files in order: audit verify FILE.0* FILE.
 *
 * Rate limiting: an evaluation scope (audit_eval_begin/append/end) writes the
 * first `rate_limit` (default 100) records per reason, counts the rest, and at
 * audit_eval_end writes one summary record per reason that was cut:
 * details {"blocked", "code_snippet", "summary":true, "suppressed":N, ...}.
 *
 * Details: always a JSON object holding "blocked" (bool) and "code_snippet"
 * (string); audit_append refuses anything else (-EINVAL). Give them either as
 * a pre-rendered one-line object (util/json.h output) or as log_field items.
 *
 * Threads: every function on an audit_log_t is safe from any thread; an
 * audit_eval_t is safe from any thread too (it has its own lock), but
 * audit_eval_end must be the last call on it. audit_verify/audit_head touch
 * no shared state. Do not use a handle across fork(): flock belongs to the
 * open file, which parent and child would share; the child opens its own.
 * Ownership: audit_log_open copies the path and the key; the caller's strings
 * and buffers are only read during the call.
 * Errors: 0 (or the documented positive value) or a negative errno; words in
 * err (may be NULL). A failed append writes nothing (a short write is cut
 * back). The log fails closed: a damaged tail (-EBADMSG) stops appends until
 * an operator looks (audit verify). Library code never prints. */
#ifndef CLEARBOX_TELEMETRY_AUDIT_H
#define CLEARBOX_TELEMETRY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "telemetry/log.h"
#include "util/hash.h"
#include "util/timeutil.h"

#define AUDIT_EVENT_DEFAULT "evaluation.suspicious"
#define AUDIT_RATE_LIMIT_DEFAULT 100 /* records per evaluation and reason */
#define AUDIT_SNIPPET_CHARS 200      /* characters of code in code_snippet */
#define AUDIT_RECORD_MAX 65536       /* bytes of one line, newline included */
#define AUDIT_DETAILS_MAX 49152      /* bytes of the rendered details object */
#define AUDIT_ID_MAX 128             /* bytes of eval_id */
#define AUDIT_NAME_MAX 64            /* bytes of event and reason ([a-z0-9_.]) */
#define AUDIT_KEY_MIN 16             /* bytes of an HMAC key file */
#define AUDIT_KEY_MAX 4096

enum audit_fsync {
    AUDIT_FSYNC_EVERY = 0, /* fdatasync after every record (default) */
    AUDIT_FSYNC_NONE,      /* leave it to the kernel */
    AUDIT_FSYNC_INTERVAL,  /* fdatasync when fsync_interval_ms passed since the last */
};

/* All zero gives the safe defaults. */
struct audit_options {
    const char *key_path;       /* HMAC key file (its bytes are the key); NULL: no hmac */
    enum audit_fsync fsync;     /* default AUDIT_FSYNC_EVERY */
    uint32_t fsync_interval_ms; /* for AUDIT_FSYNC_INTERVAL; 0 means 1000 */
    uint64_t rotate_bytes;      /* rotate before a record would pass this size; 0: never */
    uint32_t rate_limit;        /* per evaluation and reason; 0 means AUDIT_RATE_LIMIT_DEFAULT */
    uint32_t head_log_every;    /* log "audit.head" when seq % N == 0; 0: only on rotation */
};

typedef struct audit_log audit_log_t;
typedef struct audit_eval audit_eval_t;

/* One record to append. Exactly one of details_json / details must be given. */
struct audit_event {
    const char *event;               /* NULL: AUDIT_EVENT_DEFAULT */
    const char *eval_id;             /* required (an audit_eval scope fills it in) */
    const char *reason;              /* required: network_attempt, blocked_syscall, ... */
    const char *details_json;        /* a one-line JSON object (util/json.h output) */
    size_t details_len;              /* bytes of details_json */
    const struct log_field *details; /* or: the object's members as log fields */
    size_t ndetails;
    uint64_t ts_ns; /* 0: now */
};

/* What an append did. */
struct audit_appended {
    uint64_t seq;               /* 0 when not written (suppressed or no log) */
    char hash[HASH_SHA256_HEX]; /* "" when not written */
    char ts[TIME_RFC3339_LEN];  /* the record's ts */
    bool suppressed;            /* audit_eval_append: over the rate limit, counted */
};

/* Open (creating, mode 0600) the log at path. Reads the key file if given
 * (AUDIT_KEY_MIN..AUDIT_KEY_MAX bytes). The file is not read until the first
 * append or audit_log_head. 0 or -errno; *out is NULL on failure. */
int audit_log_open(audit_log_t **out, const char *path, const struct audit_options *opt, char *err,
                   size_t errlen);
void audit_log_close(audit_log_t *al); /* NULL is fine */
const char *audit_log_path(const audit_log_t *al);

/* Append one record now (no rate limiting). 0 or -errno: -EINVAL for a bad
 * event (missing or oversize field, details not an object with blocked and
 * code_snippet, details over several lines), -EMSGSIZE for a record over
 * AUDIT_RECORD_MAX, -EBADMSG when the file's last record does not parse or
 * hash, -EIO/-ENOSPC for a failed write (cut back). out may be NULL. */
int audit_append(audit_log_t *al, const struct audit_event *ev, struct audit_appended *out,
                 char *err, size_t errlen);

/* The head of the chain as the file(s) say now: the last record's seq and
 * hash (seq 0 and 64 zeros for a new log). Reads the tail under the lock. */
int audit_log_current_head(audit_log_t *al, uint64_t *seq, char hash[HASH_SHA256_HEX], char *err,
                           size_t errlen);
/* Emit an "audit.head" info event on log_get("security") with audit_file,
 * seq and hash, for anchoring elsewhere. Call from a timer; the appender also
 * calls it after a rotation and every head_log_every records. */
int audit_log_head(audit_log_t *al, char *err, size_t errlen);

/* Without opening a handle: the head of the log at path (the last record of
 * path, or of its newest rotated file FILE.<digits> when path is empty or
 * missing). Checks the last record's own hash, not the chain. */
int audit_head(const char *path, uint64_t *seq, char hash[HASH_SHA256_HEX], char *err,
               size_t errlen);

/* Bytes of the first AUDIT_SNIPPET_CHARS characters of code (UTF-8 code
 * points; each invalid byte counts as one character). */
size_t audit_snippet_len(const char *code, size_t n);

/* --- rate-limited evaluation scope --- */

/* Begin a scope for one evaluation. al may be NULL: records are then only
 * counted (useful to know what would have been written). code is the
 * submitted program; the scope keeps its snippet for summary records. */
int audit_eval_begin(audit_eval_t **out, audit_log_t *al, const char *eval_id, const char *code,
                     size_t code_len, char *err, size_t errlen);
/* Append through the scope: ev->eval_id may be NULL (the scope's is used).
 * Returns 0 when written (or would be, with no log), 1 when suppressed by
 * the rate limit (counted for the summary), or -errno as audit_append. */
int audit_eval_append(audit_eval_t *ev, const struct audit_event *e, struct audit_appended *out,
                      char *err, size_t errlen);
/* Records seen in this scope for reason (written + suppressed). */
uint64_t audit_eval_count(audit_eval_t *ev, const char *reason);
/* Close the scope: one summary record per reason over the limit, then free.
 * Returns 0 or the first error; the scope is freed either way. NULL is fine. */
int audit_eval_end(audit_eval_t *ev, char *err, size_t errlen);

/* --- verification --- */

enum audit_bad {
    AUDIT_BAD_NONE = 0,
    AUDIT_BAD_JSON,   /* the line is not one JSON object (or has no newline) */
    AUDIT_BAD_FIELD,  /* a field is missing, unexpected or of the wrong type */
    AUDIT_BAD_LAYOUT, /* fields out of the canonical order or form */
    AUDIT_BAD_SEQ,    /* seq is not the previous seq + 1 (or 1 at the start) */
    AUDIT_BAD_PREV,   /* prev_hash is not the previous record's hash */
    AUDIT_BAD_HASH,   /* hash does not match the canonical bytes */
    AUDIT_BAD_HMAC,   /* hmac missing (with a key) or does not match */
    AUDIT_BAD_ANCHOR, /* expect_head is not the hash of any record */
};
const char *audit_bad_name(enum audit_bad b); /* "bad JSON", "seq gap", ... */

struct audit_verify_opts {
    const void *key; /* HMAC key; NULL: hmac fields are not checked */
    size_t keylen;
    const char *expect_head; /* an anchor: a hash that must be in the chain; NULL: none */
    bool partial;            /* accept a first record after seq 1 (earlier files gone) */
};

struct audit_verify_result {
    uint64_t records;                /* records that verified */
    uint64_t first_seq;              /* seq of the first record (0: none) */
    uint64_t head_seq;               /* seq of the last good record (0: none) */
    char head_hash[HASH_SHA256_HEX]; /* its hash (64 zeros: none) */
    uint64_t hmac_records;           /* records carrying an hmac */
    bool hmac_checked;               /* a key was given and every hmac matched */
    uint64_t anchor_seq;             /* seq whose hash is expect_head (0: not found/none) */
    /* First failure (bad != AUDIT_BAD_NONE): */
    enum audit_bad bad;
    uint64_t bad_seq;  /* the record's seq as written, 0 if unreadable */
    uint64_t bad_line; /* 1-based line in paths[bad_file] */
    size_t bad_file;   /* index into paths */
};

/* Verify the files in order as one chain. 0 when intact; -EBADMSG at the
 * first bad record (res says where and why, err says it in words); other
 * -errno for I/O errors (a missing file is -ENOENT). */
int audit_verify(const char *const *paths, size_t n, const void *key, size_t keylen,
                 struct audit_verify_result *res, char *err, size_t errlen);
int audit_verify_ex(const char *const *paths, size_t n, const struct audit_verify_opts *opts,
                    struct audit_verify_result *res, char *err, size_t errlen);

/* Read an HMAC key file (AUDIT_KEY_MIN..AUDIT_KEY_MAX bytes, used as is).
 * *key is malloc'd; the caller frees it (after explicit_bzero). */
int audit_key_load(const char *path, uint8_t **key, size_t *keylen, char *err, size_t errlen);

#endif
