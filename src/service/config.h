/* config.h - the settings of `clearbox serve`, each with a default, a unit in
 * its name, a flag, an environment variable and a config-file key.
 *
 * Precedence (issue 5): command-line flag > CLEARBOX_* environment variable >
 * config file (JSON object, parsed with jansson; --config FILE or
 * $CLEARBOX_CONFIG) > built-in default. Every setting is one row of a table in
 * config.c, so `clearbox serve --help`, docs/configuration.md and the parser
 * cannot disagree: config_help() prints the table with the defaults.
 *
 *   struct service_config c;
 *   config_defaults(&c);
 *   if (config_load(&c, argc, argv, environ, err, sizeof err) < 0) ...   // all layers
 *   if (config_check(&c, err, sizeof err) < 0) ...                       // cross-field rules
 *
 * Names: file key `max_body_bytes`, flag `--max-body-bytes`, environment
 * `CLEARBOX_MAX_BODY_BYTES` (the key upper-cased with the prefix). A few
 * settings have a short flag as well as the long one (--listen, --db,
 * --workers, --audit-log, --config, --token).
 *
 * Ownership: the struct holds everything inline (fixed arrays), so it can be
 * copied and needs no free. Threads: fill it once in main; read-only after.
 * Errors: 0 or -EINVAL with the offending setting and where it came from
 * ("--workers", "CLEARBOX_WORKERS", "config file key workers") in err; -ENOENT
 * / -EIO for a config file that cannot be read. Never prints (config_help
 * writes to the FILE it is given). */
#ifndef CLEARBOX_SERVICE_CONFIG_H
#define CLEARBOX_SERVICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_LISTEN_MAX 256
#define CONFIG_PATH_MAX 4096
#define CONFIG_SECRET_MAX 512
#define CONFIG_NODE_ID_MAX 64
#define CONFIG_FILE_MAX (1u << 20) /* bytes of a config file */

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:8080"

/* Limits of one evaluation as the API takes them (request units). */
struct config_eval_limits {
    uint64_t timeout_ms;       /* wall clock */
    uint64_t cpu_time_ms;      /* 0 = same as timeout_ms */
    uint64_t memory_bytes;
    uint64_t pids;
    uint64_t output_bytes;     /* per stream */
    uint64_t disk_bytes;
};

struct service_config {
    /* where and how to listen */
    char listen[CONFIG_LISTEN_MAX];   /* "HOST:PORT", "[V6]:PORT"; port 0 = any (tests) */
    bool allow_non_loopback;          /* listen off loopback without a token */
    char auth_token[CONFIG_SECRET_MAX]; /* bearer token; "" = no authentication */
    int http_connections_max;         /* one thread per connection (http.h) */
    uint64_t max_body_bytes;          /* request body; larger gets 413 */
    uint64_t discard_body_max_bytes;  /* an oversized body is read and dropped up to
                                         this before the 413 (lingering close) */
    int http_timeout_s;               /* idle connection timeout */

    /* storage, audit, identity */
    char db_url[CONFIG_PATH_MAX];     /* "sqlite:PATH" */
    char audit_log[CONFIG_PATH_MAX];  /* "" = no audit log */
    char audit_key_file[CONFIG_PATH_MAX]; /* HMAC key for the audit chain, "" = none */
    int audit_head_interval_s;        /* log the chain's head (audit.head) this often */
    char node_id[CONFIG_NODE_ID_MAX]; /* worker ids are NODE-N; "" = hostname */
    char config_file[CONFIG_PATH_MAX];/* where the file layer came from, "" = none */

    /* workers and the queue */
    char role[8];                     /* "all", "api" (no workers) or "worker"
                                         (workers; HTTP only for /healthz,
                                         /readyz, /metrics) */
    int workers;                      /* 0 = number of online CPUs */
    int lease_s;                      /* a claim's lease */
    int heartbeat_s;                  /* lease renewal period (< lease_s) */
    int max_attempts;                 /* claims before error/worker_lost */
    int grace_s;                      /* SIGTERM: let running evaluations finish */
    int64_t retention_s;              /* purge finished evaluations older; 0 = keep */
    int queue_stall_s;                /* readyz: oldest queued older than this with
                                         idle workers = stalled; 0 = never */

    /* admission */
    int submitter_queued_max;         /* queued per metadata.submitter; 0 = no limit */
    double submit_rate_per_s;         /* per submitter (token bucket); 0 = no limit */
    int submit_burst;                 /* bucket size */
    int submitters_max;               /* distinct submitter label values in metrics */

    /* what one evaluation may ask for */
    struct config_eval_limits limits_default;
    struct config_eval_limits limits_max;
    uint64_t code_max_bytes;
    uint64_t stdin_max_bytes;
    int args_max;                     /* count */
    uint64_t arg_max_bytes;           /* bytes of one argument */
    int files_max;                    /* count */
    uint64_t file_max_bytes;          /* decoded bytes of one file */
    uint64_t files_total_max_bytes;   /* decoded bytes of all files */
    uint64_t metadata_max_bytes;      /* metadata object as JSON text */

    /* webhooks */
    char callback_secret[CONFIG_SECRET_MAX]; /* HMAC key; "" = unsigned */
    bool callback_allow_private;      /* allow loopback/private/... destinations */
    int callback_retries;             /* attempts after the first */
    int callback_timeout_s;
};

/* Which parts this node runs (cfg->role, checked by config_check). */
static inline bool config_role_api(const struct service_config *c)
{
    return c->role[0] != 'w'; /* "all" or "api" */
}
static inline bool config_role_workers(const struct service_config *c)
{
    return c->role[0] != 'a' || c->role[1] != 'p'; /* "all" or "worker" */
}

/* Fill every field with its built-in default. */
void config_defaults(struct service_config *c);

/* Apply the layers over what c holds (call config_defaults first): the config
 * file (--config in argv, else $CLEARBOX_CONFIG), then CLEARBOX_* from envp
 * (NULL-terminated "K=V" list; NULL = none), then the flags in argv[1..argc).
 * argv[0] is the command name. A flag that is not a setting (or --help) is
 * -EINVAL "unknown option"; *help (may be NULL) is set for --help/-h and
 * parsing stops there. Unknown CLEARBOX_* variables that are not settings are
 * ignored (other commands have their own, such as CLEARBOX_SERVER); unknown
 * keys in the config file are -EINVAL (a typo should not pass silently). */
int config_load(struct service_config *c, int argc, char **argv, char **envp, bool *help,
                char *err, size_t errlen);

/* One setting by its file key ("workers", "max_body_bytes"), value as text
 * (booleans: true/false/1/0/yes/no; sizes: bytes, optional K/M/G suffix of
 * 1024s). source names the layer in error messages. */
int config_set(struct service_config *c, const char *key, const char *value, const char *source,
               char *err, size_t errlen);

/* Read a JSON config file (an object of key: value, values of the setting's
 * type or strings) and apply it. */
int config_load_file(struct service_config *c, const char *path, char *err, size_t errlen);

/* Rules across settings: heartbeat_s < lease_s, limits_default <= limits_max,
 * max_body_bytes <= discard_body_max_bytes, the listen address parses, a
 * non-loopback listen address needs auth_token or allow_non_loopback,
 * db_url is set. -EINVAL with the reason. */
int config_check(const struct service_config *c, char *err, size_t errlen);

/* Split c->listen into host (without brackets) and port; true for a
 * loopback address (127.0.0.0/8, ::1, "localhost"). -EINVAL if malformed. */
int config_listen_parse(const char *listen, char *host, size_t hostlen, int *port,
                        bool *loopback, char *err, size_t errlen);

/* The usage text: every setting with its flag, environment variable, default
 * and summary. */
void config_help(FILE *f);

/* Settings as a JSON object (secrets shown as "(set)"), for logs and tests. */
int config_to_json(const struct service_config *c, char **out);

/* Number of settings and the i-th one's file key (docs/tests iterate them). */
size_t config_count(void);
const char *config_key(size_t i);

#endif
