/* sandbox.h - run one untrusted program contained, measured and audited.
 *
 * The engine interface: a caller fills a struct sandbox_spec (what to run,
 * every limit, the pricing table), calls sandbox_run() and gets a struct
 * sandbox_result (status per DESIGN.md "Contracts", output, phases, the cost
 * record from the cgroup, security events, the policy actually applied).
 * sandbox_result_json() renders the result record exactly as DESIGN.md says.
 *
 * Engines: "native" (namespaces + pivot_root + cgroups + seccomp; native.c).
 * sandbox_engine_find() looks one up by name; more engines plug in through
 * the table in engine.c.
 *
 * Promises:
 *  - Fail closed: if any isolation step fails, the program is never started;
 *    the result has status SANDBOX_ERROR and error {reason, message}.
 *  - Cleanup always: when sandbox_run returns, no process of the evaluation
 *    is alive, and its cgroups, mounts and state directory are gone (a
 *    crashed clearbox leaves them for `clearbox gc`, see sandbox_gc()).
 *  - Output is bounded per stream (limits.output_max_bytes): the first bytes
 *    are kept, the rest dropped, and the program is killed (output_limit).
 *  - The program's environment is exactly PATH, HOME, LANG, TRACEPARENT and
 *    spec->env (K=V strings).
 *  - Not root: the same isolation in a user namespace that maps only the
 *    program's uid to the caller's; what needs a cgroup or a dedicated uid is
 *    named in degraded[] (never silently dropped); where unprivileged user
 *    namespaces are forbidden, status error (namespace_failed) says so. The
 *    caller must be dumpable (docs/sandbox.md "Unprivileged mode").
 * Threads: sandbox_run may run concurrently from several threads (each run
 *   has its own state). As root, the first call drops the calling process's
 *   supplementary groups (setgroups(0, NULL)) so the sandbox cannot inherit
 *   them through the user namespace (setgroups is denied inside).
 * Ownership: the caller owns spec and everything it points to; the result's
 *   buffers belong to the result until sandbox_result_free().
 * Errors: sandbox_run returns 0 when the evaluation ran or was refused by a
 *   limit (whatever its status) and a negative errno when clearbox could not
 *   run it; then out->status is SANDBOX_ERROR with the words in out->error_*
 *   and in err. */
#ifndef CLEARBOX_SANDBOX_H
#define CLEARBOX_SANDBOX_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define SANDBOX_EVAL_ID_MAX 64        /* bytes of an eval id ([A-Za-z0-9_-]) */
#define SANDBOX_EVENTS_PER_REASON 100 /* then one summary event with the count */
#define SANDBOX_EVENTS_MAX 1024       /* events kept in one result */
#define SANDBOX_FILES_MAX 64          /* extra files copied into the workspace */
#define SANDBOX_ARGS_MAX 256
#define SANDBOX_ENV_MAX 64
#define SANDBOX_CODE_SNIPPET 200 /* characters of code in every audit record */
#define SANDBOX_DEGRADED_MAX 16

/* The uids the sandbox uses: inside, setup runs as 0 and the program as 1000;
 * on the host these map to SANDBOX_HOST_UID_BASE and +1000 (never host root). */
#define SANDBOX_UID 1000
#define SANDBOX_HOST_UID_BASE 100000u

enum sandbox_status {
    SANDBOX_COMPLETED = 0,
    SANDBOX_TIMEOUT,
    SANDBOX_CPU_TIME_LIMIT,
    SANDBOX_MEMORY_LIMIT,
    SANDBOX_PIDS_LIMIT,
    SANDBOX_OUTPUT_LIMIT,
    SANDBOX_KILLED,
    SANDBOX_ERROR,
};

/* Every limit, with its unit in its name. 0 means "the default" (below). */
struct sandbox_limits {
    uint64_t wall_timeout_ms;  /* wall clock from exec; default 10000 */
    uint64_t cpu_time_ms;      /* user+system CPU of the whole cgroup; default = wall */
    uint64_t memory_max_bytes; /* RAM, no swap; default 256 MiB */
    uint64_t pids_max;         /* tasks in the cgroup; default 64 */
    uint64_t output_max_bytes; /* per stream (stdout, stderr); default 1 MiB */
    uint64_t disk_max_bytes;   /* workspace + /tmp tmpfs, and RLIMIT_FSIZE; default 64 MiB */
    uint64_t open_files_max;   /* RLIMIT_NOFILE; default 256 */
    uint64_t cpu_cores_milli;  /* CPU bandwidth in thousandths of a core; default 1000 */
};

#define SANDBOX_DEFAULT_WALL_TIMEOUT_MS 10000u
#define SANDBOX_DEFAULT_MEMORY_MAX_BYTES (256ull << 20)
#define SANDBOX_DEFAULT_PIDS_MAX 64u
#define SANDBOX_DEFAULT_OUTPUT_MAX_BYTES (1ull << 20)
#define SANDBOX_DEFAULT_DISK_MAX_BYTES (64ull << 20)
#define SANDBOX_DEFAULT_OPEN_FILES_MAX 256u
#define SANDBOX_DEFAULT_CPU_CORES_MILLI 1000u
/* Accepted ranges (sandbox_run refuses others with -EINVAL, invalid_request):
 * memory >= 4 MiB, pids >= 2, open files >= 16, disk >= 64 KiB,
 * output <= SANDBOX_OUTPUT_MAX_CEILING per stream, timeout <= 24 h. */
#define SANDBOX_OUTPUT_MAX_CEILING (256ull << 20)

/* The pricing table (cents). Defaults are documented in docs/sandbox.md. */
struct sandbox_pricing {
    double cents_per_cpu_second; /* default 0.00112 ($0.04048 per vCPU-hour) */
    double cents_per_gb_second;  /* default 0.000124 ($0.004445 per GB-hour) */
    double cents_per_evaluation; /* default 0.001 */
    bool set;                    /* false: use the defaults */
};
#define SANDBOX_PRICE_CPU_SECOND 0.00112
#define SANDBOX_PRICE_GB_SECOND 0.000124
#define SANDBOX_PRICE_EVALUATION 0.001

/* A file placed in the workspace before the program starts. */
struct sandbox_file {
    const char *name; /* relative name in the workspace, no '/' or ".." */
    const char *data;
    size_t len;
    bool executable;
};

/* ---- control from other threads: kill and progress ----------------------
 * For a caller that must stop a running evaluation or watch it (the
 * service's worker: cancel, shutdown, lease heartbeat). It owns a struct
 * sandbox_control, sets it up and points spec->control at it:
 *
 *   struct sandbox_control c;
 *   sandbox_control_init(&c);
 *   c.on_progress = heartbeat; c.arg = job; c.progress_interval_ms = 500;
 *   spec.control = &c;
 *   sandbox_run(&spec, &res, err, sizeof err);    thread A
 *   sandbox_control_kill(&c);                     thread B, any time
 *
 * Promises:
 *  - sandbox_control_kill() is safe from any thread and from a signal handler
 *    (one atomic store), before, during or after the run.
 *  - After it, sandbox_run ends within 100 ms (the engine looks at the flag
 *    at least every 10 ms during setup and execution), with status `killed`
 *    (the caller may report it as `cancelled`), every process dead and
 *    everything cleaned up as on any other path. A kill that comes before the
 *    program starts gives `killed` without running it.
 *  - on_progress (may be NULL) runs on the thread inside sandbox_run: once
 *    right after the program starts, then at least every
 *    progress_interval_ms (default 1000, minimum 10) until it ends. It must
 *    not block (the limits are checked on the same thread); it may call
 *    sandbox_control_kill().
 * The control must outlive the sandbox_run call; one control serves one run
 * at a time (re-init it for the next). */
struct sandbox_progress {
    const char *eval_id;
    double elapsed_ms;  /* since the program started */
    double cpu_seconds; /* of the whole cgroup so far; -1 unknown */
    double memory_mb;   /* current; -1 unknown */
    int64_t pids;       /* current tasks; -1 unknown */
    size_t security_events;
};

struct sandbox_control {
    /* public: set by the caller after sandbox_control_init */
    void (*on_progress)(const struct sandbox_progress *p, void *arg);
    void *arg;
    uint64_t progress_interval_ms; /* 0 = 1000 */
    /* private */
    atomic_int killed;
};

/* The state directory a run uses when spec->state_dir is NULL: /run/clearbox
 * for root; otherwise $XDG_RUNTIME_DIR/clearbox when that is the caller's own
 * directory, else /tmp/clearbox-<uid>. Callers that keep their own files
 * beside the runs' (the service's node locks) use the same rule. */
void sandbox_state_dir_default(char *out, size_t n);

/* Fork a small single-threaded helper that clones every later sandbox's
 * init (the native engine; docs/sandbox.md "The spawner"). For a long-lived
 * process that runs many sandboxes from many threads (clearbox serve): call
 * it early, before threads and big allocations, since cloning init from a
 * large threaded process costs about 1 ms per sandbox in page-table copies
 * and copy-on-write faults. Optional: without it (or after it died) the
 * engine clones init itself. As root only; unprivileged it does nothing.
 * 0 or -errno (err says why). */
int sandbox_spawner_start(char *err, size_t errlen);
void sandbox_spawner_stop(void);

/* Lend the v1 cgroup directories that keep no per-evaluation state (cpu,
 * cpuacct, freezer, blkio) from one run to the next instead of making and
 * removing them every time (docs/sandbox.md "The cgroup pool"): for a
 * long-lived process (clearbox serve), whose runs use this state directory
 * (NULL: the default) and cgroup parent (NULL: the default). As root on a v1
 * host only. Returns 1 if the pool now runs, 0 if there is none to run
 * (v2, no cgroups, unprivileged, or one runs already), or -errno.
 * sandbox_cgroup_pool_stop removes its directories (call it once no run is
 * left); a process that dies leaves them to gc. */
int sandbox_cgroup_pool_start(const char *state_dir, const char *cgroup_parent, char *err,
                              size_t errlen);
void sandbox_cgroup_pool_stop(void);

/* Hold each finished sandbox's network namespace and let them go together,
 * up to max at a time (at most SANDBOX_NETNS_BATCH_MAX; 0 or 1: each run
 * lets its own go, the default): the kernel tears a batch of namespaces down
 * for about half the CPU of one at a time (docs/sandbox.md "Network
 * namespaces in batches"). For a long-lived process that runs many sandboxes
 * (clearbox serve). A held namespace has no process left in it; none is held
 * for more than about 2 s past the next run's end. sandbox_netns_flush lets
 * the held ones go now (a worker with nothing to do calls it); changing max
 * flushes too. */
#define SANDBOX_NETNS_BATCH_MAX 32
void sandbox_netns_batch(unsigned max);
void sandbox_netns_flush(void);

void sandbox_control_init(struct sandbox_control *c);
void sandbox_control_kill(struct sandbox_control *c);
bool sandbox_control_killed(struct sandbox_control *c);

struct sandbox_spec {
    const char *engine;   /* "native" (NULL = native) */
    const char *eval_id;  /* NULL: one is made (32 hex digits) */
    const char *language; /* canonical name ("python", "sh") for records */
    const char *code;     /* the program text (written as code_name) */
    size_t code_len;
    const char *code_name;   /* "main.py" */
    const char *const *argv; /* full argv, argv[0] an absolute path; NULL-terminated */
    const char *const *env;  /* extra "K=V" (NULL-terminated, may be NULL) */
    const char *stdin_data;  /* given to the program's stdin (NULL: /dev/null) */
    size_t stdin_len;
    const struct sandbox_file *files;
    size_t nfiles;
    const char *traceparent;    /* TRACEPARENT for the program (NULL: none) */
    const char *cgroup_parent;  /* parent cgroup name in each hierarchy; NULL "clearbox" */
    const char *cgroup_root;    /* NULL: found from /proc/self/mountinfo (tests set it) */
    const char *state_dir;      /* NULL: /run/clearbox (root), else $XDG_RUNTIME_DIR/clearbox
                                   or /tmp/clearbox-<uid> */
    const char *output_dir;     /* copy the workspace out here after the run, or NULL
                                   (root only: -EOPNOTSUPP, invalid_request otherwise) */
    const char *seccomp_policy; /* policy name ("default"); NULL = default */
    const char *rootfs;         /* a root directory (e.g. made by debootstrap) whose usr/ and
                                   bin, sbin, lib* links or directories the program sees,
                                   read-only, instead of the host's; NULL = the host's */
    struct sandbox_limits limits;
    struct sandbox_pricing pricing;
    volatile sig_atomic_t *cancel;   /* when *cancel becomes non-zero: kill, status killed */
    struct sandbox_control *control; /* kill from any thread, progress (NULL: none) */
    /* Which of DESIGN.md's metrics sandbox_run records (telemetry_std()):
     * SANDBOX_METRICS_ALL (0, `clearbox run`): everything;
     * SANDBOX_METRICS_NO_STATUS: all but clearbox_evaluations_total, for a
     *   caller whose final status differs from the sandbox's (the service:
     *   a cancel is `cancelled`, a run killed at shutdown is requeued);
     * SANDBOX_METRICS_NONE: nothing (self-checks, which are not evaluations). */
    enum { SANDBOX_METRICS_ALL = 0, SANDBOX_METRICS_NO_STATUS, SANDBOX_METRICS_NONE } metrics;
    bool no_seccomp;                 /* tests only: recorded in policy.degraded */
};

/* The cost record (DESIGN.md "Cost record"). A field that could not be
 * measured is negative and named in policy.degraded; JSON renders it null. */
struct sandbox_resources {
    double cpu_seconds, cpu_user_seconds, cpu_system_seconds;
    double memory_mb_seconds, memory_peak_mb, wall_seconds;
    int64_t pids_peak, io_read_bytes, io_write_bytes;
    int container_count;
    double estimated_cost_cents;
};

/* One security event: the audit record of this run without chain fields. */
struct sandbox_event {
    uint64_t ts_ns;
    char reason[32];
    char *details; /* rendered JSON members of "details" after blocked and
                      code_snippet (without braces, may be ""), malloc'd */
    bool blocked;
};

struct sandbox_result {
    char eval_id[SANDBOX_EVAL_ID_MAX + 1];
    enum sandbox_status status;
    char error_reason[48]; /* snake_case, when status == SANDBOX_ERROR */
    char error_message[256];
    int exit_code;       /* -1 when a signal ended it (or never started) */
    int signal;          /* 0 when it exited */
    struct buf out, err; /* captured streams (bounded), content NUL-terminated */
    bool out_truncated, err_truncated;
    uint64_t start_ns; /* wall clock at sandbox_run entry */
    double duration_ms, create_ms, execute_ms, teardown_ms;
    struct sandbox_resources res;
    struct sandbox_event *events;
    size_t nevents;
    uint32_t reason_counts[16]; /* per reason index, for the 100-per-reason rule */
    char trace_id[33];          /* "" when none */
    /* the policy actually applied */
    struct sandbox_limits limits;
    struct sandbox_pricing pricing;
    char engine[16];
    char cgroup_mode[8]; /* "v1", "v2", "none" */
    char seccomp_name[32];
    char seccomp_sha256[65];
    char rootfs[256]; /* "" = the host's /usr */
    const char *degraded[SANDBOX_DEGRADED_MAX];
    size_t ndegraded;
    char language[32];
    const char *code; /* borrowed from the spec for code_snippet */
    size_t code_len;
};

/* ---- engines ----------------------------------------------------------- */

struct sandbox_engine {
    const char *name;
    int (*run)(const struct sandbox_spec *spec, struct sandbox_result *out, char *err,
               size_t errlen);
};

/* NULL when unknown. */
const struct sandbox_engine *sandbox_engine_find(const char *name);

/* Fill every zero limit with its default and pricing with defaults when unset. */
void sandbox_limits_default(struct sandbox_limits *l);
void sandbox_pricing_default(struct sandbox_pricing *p);

/* Run spec with its engine. See the promises above. out is initialised here
 * (even on error) and must be freed with sandbox_result_free(). */
int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *out, char *err,
                size_t errlen);
void sandbox_result_free(struct sandbox_result *r);

/* "completed", "timeout", ...; the enum from a name (-EINVAL if unknown). */
const char *sandbox_status_name(enum sandbox_status s);
int sandbox_status_parse(const char *name, enum sandbox_status *out);

/* Record a security event (reason from the audit vocabulary; details_members
 * rendered JSON members or NULL). Applies the 100-per-reason rule: the 101st
 * event of a reason becomes one summary event; later ones are only counted.
 * Returns 0, or -ENOMEM / -E2BIG (event dropped). */
int sandbox_result_add_event(struct sandbox_result *r, const char *reason, bool blocked,
                             const char *details_members);
/* Name a protection or figure that was unavailable (static string). */
void sandbox_result_degrade(struct sandbox_result *r, const char *what);

/* Render the result record (DESIGN.md) as one JSON object into b. Returns 0
 * or -E2BIG/-ENOMEM from the buf. */
int sandbox_result_json(const struct sandbox_result *r, struct buf *b);

/* An event's "details" object ({"blocked":..,"code_snippet":..,...}) as one
 * line of JSON, appended to d (for the result and for the audit log). */
int sandbox_event_details_json(const struct sandbox_result *r, const struct sandbox_event *e,
                               struct buf *d);

/* The summary line for a terminal. */
int sandbox_result_text(const struct sandbox_result *r, struct buf *b);

/* Remove what crashed runs left behind under state_dir (NULL: default) and the
 * cgroup parent (NULL: "clearbox"): state directories whose lock is free, their
 * mounts, and cgroups with no live owner (their processes are killed first).
 * Writes one line per removed item into report. Returns the count removed or
 * a negative errno. */
int sandbox_gc(const char *state_dir, const char *cgroup_parent, struct buf *report, char *err,
               size_t errlen);

#endif
