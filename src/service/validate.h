/* validate.h - parse and validate what clients send to the service, and the
 * address classifier of the webhook SSRF guard.
 *
 * A submission body (POST /v1/evaluations, or one item of a batch) becomes a
 * struct eval_record ready for store_insert(), or a struct validate_error that
 * the API turns into {"error": {code, message, field}} with its HTTP status.
 * Nothing is stored or changed here. Every input has a bound (struct
 * validate_bounds, filled from the service config).
 *
 * The request object (docs/api.md, docs/openapi.yaml):
 *   code (string, required), language ("python" | "python3" | "sh", required),
 *   stdin (string), args ([string]), files ([{path, content_base64}]),
 *   timeout_s, cpu_time_s (number > 0), memory_mb, pids, output_bytes, disk_mb
 *   (integer > 0), priority (integer 0-9, default 0), callback_url (http/https),
 *   metadata (object; metadata.submitter a string).
 * Unknown top-level members are refused (422 unknown_field): a typo in a limit
 * must not silently run with the default.
 *
 * What goes into the record (the contract with the worker, worker.c):
 *   language       canonical name: "python" or "sh"
 *   args_json      JSON array of strings, or NULL
 *   files_json     JSON array of {"path": "rel/name", "content_base64": "..."}
 *                  (path: a plain file name - the sandbox places files flat in
 *                  the workspace - so no '/', "..", NUL, backslash or control
 *                  characters, no duplicates; content valid padded base64), or NULL
 *   limits_json    JSON object with every limit resolved (request value, else
 *                  the config default) in sandbox units:
 *                  {"wall_timeout_ms", "cpu_time_ms", "memory_max_bytes",
 *                   "pids_max", "output_max_bytes", "disk_max_bytes"}
 *                  validate_limits_parse() reads it back into sandbox_limits.
 *   metadata_json  the metadata object as compact JSON, or NULL
 *   submitter      metadata.submitter, or NULL
 *
 * Threads: every function is reentrant. Ownership: validate_submission fills
 * the caller's record with malloc'd strings (store_record_clear() frees them);
 * on failure the record is left cleared. Errors: validate_* return 0 or a
 * negative errno; the client-facing reason is in *verr (status 400 for
 * malformed JSON or bad encoding, 422 for valid JSON that breaks a rule,
 * 413 for a part over its bound). */
#ifndef CLEARBOX_SERVICE_VALIDATE_H
#define CLEARBOX_SERVICE_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sandbox/sandbox.h"
#include "service/config.h"
#include "service/store.h"

#define VALIDATE_CODE_MAX 48      /* bytes of an error code */
#define VALIDATE_MESSAGE_MAX 256
#define VALIDATE_FIELD_MAX 128
#define VALIDATE_PATH_MAX 255     /* bytes of a file path */
#define VALIDATE_BATCH_MAX 100    /* items in POST /v1/evaluations/batch */

struct validate_error {
    int http_status;                    /* 400, 413, 422 */
    char code[VALIDATE_CODE_MAX];       /* snake_case: invalid_json, missing_field,
                                           wrong_type, unknown_field, unknown_language,
                                           invalid_utf8, out_of_range, too_large,
                                           unsafe_path, invalid_base64, invalid_url,
                                           forbidden_destination, ... */
    char message[VALIDATE_MESSAGE_MAX];
    char field[VALIDATE_FIELD_MAX];     /* "limits.memory_mb", "files[2].path"; "" = none */
};

/* The bounds a submission is checked against (from struct service_config). */
struct validate_bounds {
    struct config_eval_limits limits_default;
    struct config_eval_limits limits_max;
    uint64_t code_max_bytes, stdin_max_bytes;
    int args_max;
    uint64_t arg_max_bytes;
    int files_max;
    uint64_t file_max_bytes, files_total_max_bytes;
    uint64_t metadata_max_bytes;
    bool callback_allow_private;
};

void validate_bounds_from_config(const struct service_config *c, struct validate_bounds *b);

/* ---- submissions ---------------------------------------------------------- */

/* Parse body[0..len) as JSON (strict: one value, no trailing bytes, UTF-8,
 * no NUL in strings except code/stdin via \u0000) and validate it. */
int validate_submission_body(const char *body, size_t len, const struct validate_bounds *b,
                             struct eval_record *out, struct validate_error *verr);

/* The same for an already-parsed object (a batch item); field names in verr
 * are prefixed with prefix ("evaluations[3]."), which may be NULL. */
int validate_submission(const json_t *obj, const struct validate_bounds *b, const char *prefix,
                        struct eval_record *out, struct validate_error *verr);

/* The canonical language name for name ("python3" -> "python"), or NULL. */
const char *validate_language(const char *name);

/* A workspace path: relative, 1..VALIDATE_PATH_MAX bytes, segments not
 * empty/"."/"..", no NUL, no backslash, no control characters. */
bool validate_path_safe(const char *path, size_t len);

/* Is s[0..n) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
bool validate_utf8(const char *s, size_t n);

/* Read a record's limits_json back (members missing keep their value in out,
 * which the caller initialises, e.g. with sandbox_limits_default()).
 * NULL/"" is fine. -EINVAL for malformed JSON or a negative/non-integer value. */
int validate_limits_parse(const char *limits_json, struct sandbox_limits *out, char *err,
                          size_t errlen);

/* ---- the SSRF guard --------------------------------------------------------- */

enum validate_addr_class {
    ADDR_PUBLIC = 0,      /* a routable unicast address: allowed */
    ADDR_LOOPBACK,        /* 127.0.0.0/8, ::1 */
    ADDR_PRIVATE,         /* 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT) */
    ADDR_LINK_LOCAL,      /* 169.254/16 (except metadata), fe80::/10 */
    ADDR_METADATA,        /* 169.254.169.254, fd00:ec2::254 (cloud metadata) */
    ADDR_UNIQUE_LOCAL,    /* fc00::/7 */
    ADDR_UNSPECIFIED,     /* 0.0.0.0/8, :: */
    ADDR_MULTICAST,       /* 224/4, ff00::/8, 255.255.255.255 */
    ADDR_RESERVED,        /* 240/4, 192.0.0/24, 198.18/15, documentation ranges,
                             64:ff9b::/96 and ::ffff:0:0/96 are classified by
                             the IPv4 address they embed */
};

/* Classify an address (AF_INET or AF_INET6; anything else is ADDR_RESERVED). */
enum validate_addr_class validate_addr_classify(const struct sockaddr *sa);
/* The same for a numeric literal ("10.0.0.1", "::1", "[::1]"); -EINVAL if s
 * is not an IP literal. */
int validate_addr_classify_str(const char *s, enum validate_addr_class *out);
/* "public", "loopback", "private", "link_local", "metadata", ... */
const char *validate_addr_class_name(enum validate_addr_class c);
/* May a webhook be delivered to an address of class c? ADDR_PUBLIC always;
 * loopback, private, link-local, metadata and unique-local only with
 * allow_private; unspecified, multicast and reserved never. */
bool validate_addr_allowed(enum validate_addr_class c, bool allow_private);

/* Check a callback URL's syntax: http:// or https://, a host, an optional
 * port 1-65535, at most STORE_URL_MAX bytes, no userinfo, no whitespace or
 * control characters. A host that is an IP literal is classified now; the
 * name "localhost" (and *.localhost) counts as loopback. Other names are
 * checked again after DNS resolution at delivery time (callback.c). host
 * (may be NULL) receives the host without brackets. verr gets 422
 * invalid_url or forbidden_destination with field "callback_url". */
int validate_callback_url(const char *url, bool allow_private, char *host, size_t hostlen,
                          struct validate_error *verr);

#endif
