/* worker.c - the worker pool (see worker.h for the promises).
 *
 * Threads of a pool:
 *   worker i        claim -> run -> finish, one evaluation at a time, with its
 *                   own store handle; waits on pool->work_cv when idle.
 *   heartbeat i     started for each evaluation: every heartbeat period (or
 *                   when poked by worker_pool_cancelled) extends the lease
 *                   and reads cancel_requested; sets the sandbox's cancel
 *                   flag on cancel / lost lease / shutdown. Shares worker i's
 *                   store handle (the worker is inside sandbox_run meanwhile;
 *                   store handles serialise calls).
 *   maintenance     requeue expired leases, purge, queue depth.
 *   callback        the webhook sender's threads (callback.c).
 *
 * Why a kill reason and not just the cancel flag: the same flag stops the
 * sandbox for three different endings. Cancel -> finish `cancelled`; lost
 * lease -> write nothing (someone else owns the evaluation now); shutdown ->
 * requeue. The first reason set wins (compare-and-swap), so a shutdown during
 * a cancel still ends `cancelled`.
 *
 * Order on a terminal status: audit records, then store_finish (so a client
 * that sees the status can already find the audit records), then metrics and
 * the webhook (which carries the finished record). */
#include "service/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/callback.h"
#include "telemetry/log.h"
#include "telemetry/trace.h"
#include "util/base64.h"
#include "util/err.h"
#include "util/timeutil.h"

#define PURGE_EVERY_NS (10ll * 1000000000ll)
#define GC_EVERY_NS (60ll * 1000000000ll)

enum kill_reason { KILL_NONE = 0, KILL_CANCEL, KILL_LOST, KILL_STOP };

struct worker {
    struct worker_pool *pool;
    int index;
    char id[STORE_WORKER_ID_MAX];
    store_t *st;
    pthread_t th;
    bool started;
    atomic_bool alive;
    atomic_bool busy;
    /* the running evaluation (hb_mu) */
    pthread_mutex_t hb_mu;
    pthread_cond_t hb_cv;
    char run_id[STORE_ID_LEN];
    int run_attempt;
    /* The heartbeat thread lives as long as the worker (a thread per
     * evaluation cost a create, an exit and a stack madvise each time):
     * hb_armed while an evaluation runs; hb_in_call while it is inside
     * store_heartbeat() on w->st, which the worker waits out before it uses
     * the store again; hb_quit ends it. */
    bool hb_armed, hb_in_call, hb_quit, hb_poke;
    pthread_t hb_th;
    bool hb_started;
    atomic_int kill_reason;
    volatile sig_atomic_t cancel; /* the sandbox's kill switch */
};

struct worker_pool {
    struct worker_options o;
    /* owned copies of the option strings */
    char *db_url, *node_id, *audit_path, *engine, *seccomp_policy, *cgroup_parent, *state_dir;
    char node_buf[WORKER_NODE_ID_MAX + 1];
    audit_log_t *audit;
    bool own_audit;
    bool cgroup_pool; /* we started the sandbox engine's cgroup pool */
    const struct telemetry_std *m;
    log_logger_t *lg;
    bool lg_borrowed;
    int lock_fd;
    callback_sender_t *cb;

    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* idle workers wait here */
    pthread_cond_t idle_cv;  /* stop waits here for busy workers */
    pthread_cond_t maint_cv; /* the maintenance thread sleeps here */
    uint64_t notify_seq;
    atomic_bool stopping;
    atomic_bool kill_all; /* the grace period is over: kill what runs */

    struct worker *w;
    int nworkers;
    pthread_t maint_th;
    bool maint_started;
    store_t *maint_st;
    int64_t last_purge_ns;
    int64_t last_maint_warn_ns;

    atomic_int busy;
    atomic_int alive;
    atomic_llong claimed, finished, requeued, lost, purged, queue_depth, oldest_queued_ns,
        last_claim_ns, last_maintenance_ns;
};

/* ---- small helpers -------------------------------------------------------- */

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static void abs_deadline(struct timespec *ts, int64_t from_now_ns)
{
    clock_gettime(CLOCK_REALTIME, ts);
    int64_t t = (int64_t)ts->tv_sec * 1000000000ll + ts->tv_nsec + from_now_ns;
    ts->tv_sec = t / 1000000000ll;
    ts->tv_nsec = t % 1000000000ll;
}

static bool node_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > WORKER_NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- the language table (DESIGN.md "Languages") ----------------------------- */

struct lang {
    const char *name, *alias, *interp, *file;
};
static const struct lang langs[] = {
    {"python", "python3", "/usr/bin/python3", "main.py"},
    {"sh", NULL, "/bin/sh", "main.sh"},
};

static const struct lang *lang_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
        if (!strcmp(langs[i].name, name) || (langs[i].alias && !strcmp(langs[i].alias, name)))
            return &langs[i];
    return NULL;
}

/* ---- the record -> the sandbox spec --------------------------------------- */

struct prepared {
    struct sandbox_spec spec;
    char run_id[SANDBOX_EVAL_ID_MAX + 1];
    const char *argv[SANDBOX_ARGS_MAX + 3];
    char guest_path[64];
    json_t *args; /* owns the argument strings */
    struct sandbox_file files[SANDBOX_FILES_MAX];
    size_t nfiles;
};

static void prepared_free(struct prepared *p)
{
    json_decref(p->args);
    for (size_t i = 0; i < p->nfiles; i++) {
        free((void *)p->files[i].name);
        free((void *)p->files[i].data);
    }
}

static int limits_from_json(const char *text, struct sandbox_limits *l, char *err, size_t errlen)
{
    if (!text || !*text)
        return 0;
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return err_set(err, errlen, -EINVAL, "limits_json is not a JSON object");
    }
    static const char *const keys[] = {"wall_timeout_ms", "cpu_time_ms",      "memory_max_bytes",
                                       "pids_max",        "output_max_bytes", "disk_max_bytes",
                                       "open_files_max",  "cpu_cores_milli"};
    uint64_t *dst[] = {&l->wall_timeout_ms, &l->cpu_time_ms,      &l->memory_max_bytes,
                       &l->pids_max,        &l->output_max_bytes, &l->disk_max_bytes,
                       &l->open_files_max,  &l->cpu_cores_milli};
    int rc = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            rc = err_set(err, errlen, -EINVAL, "limits.%s must be a non-negative integer", keys[i]);
            break;
        }
        *dst[i] = (uint64_t)json_integer_value(v);
    }
    json_decref(o);
    return rc;
}

static int prepare(const struct worker_pool *pool, const struct eval_record *r, struct prepared *p,
                   char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    const struct lang *lg = lang_find(r->language);
    if (!lg)
        return err_set(err, errlen, -EINVAL, "unknown language '%s'",
                       r->language ? r->language : "");
    struct sandbox_spec *s = &p->spec;
    s->limits = pool->o.default_limits;
    TRY(limits_from_json(r->limits_json, &s->limits, err, errlen));
    s->pricing = pool->o.pricing;
    s->engine = pool->engine;
    s->seccomp_policy = pool->seccomp_policy;
    s->cgroup_parent = pool->cgroup_parent;
    s->state_dir = pool->state_dir;
    /* A retry after a crash must not collide with what the crashed attempt
     * left (its state directory and cgroups are named by the run id, and the
     * gc leaves young ones alone): attempts after the first run as
     * "<id>-<attempt>". The result record and the audit log still say <id>. */
    if (r->attempts > 1)
        snprintf(p->run_id, sizeof p->run_id, "%s-%d", r->id, r->attempts);
    else
        snprintf(p->run_id, sizeof p->run_id, "%s", r->id);
    s->eval_id = p->run_id;
    s->language = lg->name;
    s->code = r->code ? r->code : "";
    s->code_len = r->code ? r->code_len : 0;
    s->code_name = lg->file;
    s->stdin_data = r->stdin_data;
    s->stdin_len = r->stdin_data ? r->stdin_len : 0;

    snprintf(p->guest_path, sizeof p->guest_path, "/work/%s", lg->file);
    size_t na = 0;
    p->argv[na++] = lg->interp;
    p->argv[na++] = p->guest_path;
    if (r->args_json && *r->args_json) {
        p->args = json_loads(r->args_json, 0, NULL);
        if (!json_is_array(p->args))
            return err_set(err, errlen, -EINVAL, "args_json is not a JSON array");
        if (json_array_size(p->args) > SANDBOX_ARGS_MAX)
            return err_set(err, errlen, -E2BIG, "more than %d args", SANDBOX_ARGS_MAX);
        size_t i;
        json_t *v;
        json_array_foreach(p->args, i, v)
        {
            if (!json_is_string(v))
                return err_set(err, errlen, -EINVAL, "args[%zu] is not a string", i);
            p->argv[na++] = json_string_value(v);
        }
    }
    p->argv[na] = NULL;
    s->argv = p->argv;

    if (r->files_json && *r->files_json) {
        json_t *fa = json_loads(r->files_json, 0, NULL);
        int rc = 0;
        if (!json_is_array(fa)) {
            rc = err_set(err, errlen, -EINVAL, "files_json is not a JSON array");
        } else if (json_array_size(fa) > SANDBOX_FILES_MAX) {
            rc = err_set(err, errlen, -E2BIG, "more than %d files", SANDBOX_FILES_MAX);
        } else {
            size_t i;
            json_t *f;
            json_array_foreach(fa, i, f)
            {
                const char *path = json_string_value(json_object_get(f, "path"));
                json_t *c = json_object_get(f, "content_base64");
                const char *b64 = json_string_value(c);
                if (!path || !b64) {
                    rc = err_set(err, errlen, -EINVAL, "files[%zu] needs path and content_base64",
                                 i);
                    break;
                }
                size_t blen = json_string_length(c);
                char *data = malloc(blen / 4 * 3 + 4);
                char *name = strdup(path);
                ssize_t dl = data ? base64_decode(b64, blen, data) : -ENOMEM;
                if (!name || dl < 0) {
                    free(data);
                    free(name);
                    rc = err_set(err, errlen, dl == -ENOMEM || !name ? -ENOMEM : -EINVAL,
                                 "files[%zu].content_base64 is not valid base64", i);
                    break;
                }
                p->files[p->nfiles].name = name;
                p->files[p->nfiles].data = data;
                p->files[p->nfiles].len = (size_t)dl;
                p->nfiles++;
            }
        }
        json_decref(fa);
        if (rc < 0)
            return rc;
        s->files = p->files;
        s->nfiles = p->nfiles;
    }
    return 0;
}

static enum eval_status status_from_sandbox(enum sandbox_status s)
{
    switch (s) {
    case SANDBOX_COMPLETED: return EVAL_COMPLETED;
    case SANDBOX_TIMEOUT: return EVAL_TIMEOUT;
    case SANDBOX_CPU_TIME_LIMIT: return EVAL_CPU_TIME_LIMIT;
    case SANDBOX_MEMORY_LIMIT: return EVAL_MEMORY_LIMIT;
    case SANDBOX_PIDS_LIMIT: return EVAL_PIDS_LIMIT;
    case SANDBOX_OUTPUT_LIMIT: return EVAL_OUTPUT_LIMIT;
    case SANDBOX_KILLED: return EVAL_KILLED;
    default: return EVAL_ERROR;
    }
}

/* ---- heartbeat ------------------------------------------------------------ */

static void set_kill(struct worker *w, enum kill_reason why)
{
    int expected = KILL_NONE;
    atomic_compare_exchange_strong(&w->kill_reason, &expected, (int)why);
    w->cancel = 1;
}

/* The heartbeat thread ticks every heartbeat period whether or not a run is
 * armed, and beats when a tick finds one armed (or at once when poked by a
 * cancel). So arming and disarming need not wake it: a run's first beat
 * comes within one period of its claim, as the lease needs, and a short
 * evaluation costs this thread nothing (it used to take two wake-ups and
 * two context switches of the worker per evaluation). */
static void *heartbeat_main(void *arg)
{
    struct worker *w = arg;
    struct worker_pool *pool = w->pool;
    int64_t period_ns = (int64_t)pool->o.heartbeat_s * 1000000000ll;
    int64_t lease_ms = (int64_t)pool->o.lease_s * 1000;
    pthread_mutex_lock(&w->hb_mu);
    int64_t next = (int64_t)time_mono_ns() + period_ns;
    while (!w->hb_quit) {
        int64_t now = (int64_t)time_mono_ns();
        if (!w->hb_armed || (!w->hb_poke && now < next)) {
            if (now >= next)
                next = now + period_ns; /* a tick with nothing armed */
            struct timespec ts;
            abs_deadline(&ts, next - now);
            pthread_cond_timedwait(&w->hb_cv, &w->hb_mu, &ts);
            continue;
        }
        next = now + period_ns;
        w->hb_poke = false;
        char id[STORE_ID_LEN];
        memcpy(id, w->run_id, sizeof id);
        int attempt = w->run_attempt;
        w->hb_in_call = true;
        pthread_mutex_unlock(&w->hb_mu);

        bool cancel = false;
        char err[ERR_LEN];
        int rc = store_heartbeat(w->st, id, w->id, attempt, lease_ms, &cancel, err, sizeof err);
        if (rc == -ESTALE) {
            log_warning(pool->lg, "evaluation.lease_lost", LOG_STR("eval_id", id),
                        LOG_STR("worker_id", w->id), LOG_INT("attempt", attempt));
            set_kill(w, KILL_LOST);
        } else if (rc < 0) {
            /* keep going: the lease may still be ours; if it expires, the next
             * heartbeat sees -ESTALE and kills the run */
            log_warning(pool->lg, "evaluation.heartbeat_failed", LOG_STR("eval_id", id),
                        LOG_STR("error", err));
        } else if (cancel) {
            set_kill(w, KILL_CANCEL);
        }
        pthread_mutex_lock(&w->hb_mu);
        w->hb_in_call = false;
        pthread_cond_broadcast(&w->hb_cv);
    }
    pthread_mutex_unlock(&w->hb_mu);
    return NULL;
}

/* Start beating for run_id (the caller set it under hb_mu) / stop and wait
 * until the heartbeat thread is out of the store. */
static void heartbeat_arm(struct worker *w, bool poke)
{
    pthread_mutex_lock(&w->hb_mu);
    w->hb_armed = true;
    w->hb_poke = poke;
    if (poke) /* otherwise the next tick beats (heartbeat_main) */
        pthread_cond_broadcast(&w->hb_cv);
    pthread_mutex_unlock(&w->hb_mu);
}

static void heartbeat_disarm(struct worker *w)
{
    pthread_mutex_lock(&w->hb_mu);
    w->hb_armed = false;
    w->run_id[0] = '\0';
    while (w->hb_in_call)
        pthread_cond_wait(&w->hb_cv, &w->hb_mu);
    pthread_mutex_unlock(&w->hb_mu);
}

/* ---- one evaluation ----------------------------------------------------------- */

static void audit_and_log(struct worker_pool *pool, const struct eval_record *r,
                          const struct sandbox_result *res)
{
    if (!res->nevents)
        return;
    log_logger_t *sec = log_get("security");
    audit_eval_t *ev = NULL;
    char err[ERR_LEN];
    int rc = audit_eval_begin(&ev, pool->audit, r->id, res->code ? res->code : "", res->code_len,
                              err, sizeof err);
    if (rc < 0)
        log_error(sec, "audit.append_failed", LOG_STR("eval_id", r->id), LOG_STR("error", err));
    for (size_t i = 0; i < res->nevents; i++) {
        char storage[4096];
        struct buf d;
        buf_init(&d, storage, sizeof storage, AUDIT_DETAILS_MAX);
        sandbox_event_details_json(res, &res->events[i], &d);
        struct audit_appended ap = {0};
        int arc = -1;
        if (ev && buf_ok(&d)) {
            struct audit_event ae = {.reason = res->events[i].reason,
                                     .details_json = d.data,
                                     .details_len = d.len,
                                     .ts_ns = res->events[i].ts_ns};
            arc = audit_eval_append(ev, &ae, &ap, err, sizeof err);
            if (arc < 0)
                log_error(sec, "audit.append_failed", LOG_STR("eval_id", r->id),
                          LOG_STR("reason", res->events[i].reason), LOG_STR("error", err));
        }
        if (arc != 1) /* not suppressed by the rate limit: one line per record */
            log_warning(sec, "evaluation.suspicious", LOG_STR("eval_id", r->id),
                        LOG_STR("reason", res->events[i].reason),
                        LOG_BOOL("blocked", res->events[i].blocked),
                        ap.seq ? LOG_UINT("audit_seq", ap.seq) : LOG_NULL("audit_seq"),
                        buf_ok(&d) && d.len ? LOG_RAW("details", d.data, d.len)
                                            : LOG_NULL("details"));
        buf_free(&d);
    }
    if (ev && audit_eval_end(ev, err, sizeof err) < 0)
        log_error(sec, "audit.append_failed", LOG_STR("eval_id", r->id), LOG_STR("error", err));
}

/* The commit of the terminal status made the webhook pending in the store
 * (store.h "the webhook outbox"); wake the sender so it goes out now rather
 * than at its next poll. */
static void send_callback_rec(struct worker_pool *pool, const struct eval_record *rec)
{
    if (rec->callback_url)
        callback_sender_notify(pool->cb);
}

static void send_callback(struct worker *w, const char *id)
{
    callback_sender_notify(w->pool->cb);
}

static void after_requeue(struct worker_pool *pool, const char *id);

static void count_status(struct worker_pool *pool, const char *status, const char *language)
{
    if (pool->m)
        metrics_counter_inc(
            metrics_counter_labels(pool->m->evaluations, status, language ? language : "unknown"));
}

/* Finish without running (bad record, attempts exhausted). */
static void finish_error(struct worker *w, const struct eval_record *r, const char *reason,
                         const char *msg, log_logger_t *lg)
{
    struct store_outcome o = {.status = EVAL_ERROR, .error_reason = reason, .error_message = msg};
    char err[ERR_LEN];
    int rc = store_finish(w->st, r->id, w->id, r->attempts, &o, err, sizeof err);
    if (rc < 0) {
        log_warning(lg, "evaluation.finish_failed", LOG_STR("error", err));
        return;
    }
    atomic_fetch_add(&w->pool->finished, 1);
    count_status(w->pool, "error", r->language);
    log_error(lg, "evaluation.finished", LOG_STR("status", "error"),
              LOG_STR("error_reason", reason), LOG_STR("error", msg),
              LOG_INT("attempt", r->attempts));
    if (r->callback_url)
        send_callback(w, r->id);
}

/* Run r to its end. With next, the finish also claims the next evaluation
 * (one commit for both, store_finish_claim) unless the pool is stopping:
 * true when *next holds one, for the caller to run. */
static bool run_one(struct worker *w, struct eval_record *r, struct eval_record *next)
{
    bool chained = false;
    struct worker_pool *pool = w->pool;
    int64_t depth = atomic_load(&pool->queue_depth);
    int64_t wait_ns =
        r->started_ns > r->queued_ns && r->queued_ns ? r->started_ns - r->queued_ns : 0;
    const char *engine = pool->engine ? pool->engine : "native";
    const char *submitter = r->submitter && *r->submitter ? r->submitter : "anonymous";

    /* every line on this thread while it runs (the sandbox's too) carries
     * the worker and the queue depth; one push (see the report on nesting) */
    LOG_CTX_SCOPE(LOG_STR("worker_id", w->id), LOG_INT("queue_depth", depth < 0 ? 0 : depth));
    struct log_field bf[] = {LOG_STR("eval_id", r->id), LOG_STR("engine", engine),
                             LOG_STR("language", r->language ? r->language : ""),
                             LOG_UINT("code_length", r->code_len)};
    char err[ERR_LEN];
    log_logger_t *lg = log_bind(pool->lg, bf, sizeof bf / sizeof bf[0], err, sizeof err);
    log_logger_t *L = lg ? lg : pool->lg;
    if (pool->m)
        metrics_histogram_observe(pool->m->queue_wait, (double)wait_ns / 1e9);
    /* the trace: continue the submit's trace; the queue wait as its own span */
    struct trace_context parent;
    bool has_parent =
        r->traceparent && trace_context_from_headers(r->traceparent, r->tracestate, &parent) == 0;
    if (has_parent && r->queued_ns > 0 && r->started_ns >= r->queued_ns) {
        trace_span_t *qs = trace_span_start_at("evaluation.queue_wait", TRACE_KIND_INTERNAL,
                                               &parent, (uint64_t)r->queued_ns, 0);
        trace_span_set_str(qs, "eval_id", r->id);
        trace_span_set_int(qs, "queue_depth", depth);
        trace_span_end_at(qs, (uint64_t)r->started_ns);
    }
    trace_span_t *sp =
        trace_span_start("evaluation.execute", TRACE_KIND_CONSUMER, has_parent ? &parent : NULL);
    trace_span_set_str(sp, "eval_id", r->id);
    trace_span_set_str(sp, "worker_id", w->id);
    trace_span_set_str(sp, "engine", engine);
    trace_span_set_str(sp, "language", r->language ? r->language : "");
    trace_span_set_int(sp, "code_length", (int64_t)r->code_len);
    trace_span_set_int(sp, "attempt", r->attempts);
    trace_span_set_double(sp, "queue_wait_ms", (double)wait_ns / 1e6);
    struct trace_scope scope;
    trace_span_make_current(sp, &scope);
    log_info(L, "evaluation.claimed", LOG_INT("attempt", r->attempts),
             LOG_INT("priority", r->priority), LOG_DOUBLE("queue_wait_ms", (double)wait_ns / 1e6));

    if (pool->o.max_attempts > 0 && r->attempts > pool->o.max_attempts) {
        char msg[160];
        snprintf(msg, sizeof msg, "attempt %d exceeds max_attempts %d: earlier attempts were lost",
                 r->attempts, pool->o.max_attempts);
        finish_error(w, r, "worker_lost", msg, L);
        trace_span_set_status(sp, TRACE_STATUS_ERROR, msg);
        goto out_span;
    }

    struct prepared p;
    if (prepare(pool, r, &p, err, sizeof err) < 0) {
        prepared_free(&p);
        finish_error(w, r, "invalid_request", err, L);
        trace_span_set_status(sp, TRACE_STATUS_ERROR, err);
        goto out_span;
    }
    struct trace_context cur;
    char tp[TRACE_TRACEPARENT_LEN + 1] = "";
    if (trace_current_context(&cur))
        trace_traceparent_format(&cur, tp);
    p.spec.traceparent = tp[0] ? tp : NULL;
    p.spec.cancel = &w->cancel;
    p.spec.metrics = SANDBOX_METRICS_NO_STATUS;

    /* arm the heartbeat */
    w->cancel = 0;
    atomic_store(&w->kill_reason, KILL_NONE);
    pthread_mutex_lock(&w->hb_mu);
    memcpy(w->run_id, r->id, sizeof w->run_id);
    w->run_attempt = r->attempts;
    pthread_mutex_unlock(&w->hb_mu);
    if (w->hb_started)
        heartbeat_arm(w, r->cancel_requested); /* poke: cancelled between claim and now */
    else
        log_error(L, "evaluation.heartbeat_failed", LOG_STR("error", "no heartbeat thread"));
    /* stop scans run_id under hb_mu after setting kill_all; we set run_id
     * under hb_mu before reading it: one of the two sees the other */
    if (atomic_load(&pool->kill_all))
        set_kill(w, KILL_STOP);

    struct sandbox_result res;
    char serr[ERR_LEN] = "";
    sandbox_run(&p.spec, &res, serr, sizeof serr);
    snprintf(res.eval_id, sizeof res.eval_id, "%s", r->id); /* not the run id */

    heartbeat_disarm(w); /* from here on the store handle is ours alone */

    /* security events are real whatever happens to the lease */
    audit_and_log(pool, r, &res);

    int why = atomic_load(&w->kill_reason);
    struct store_outcome o = {.status = status_from_sandbox(res.status)};
    if (why == KILL_CANCEL)
        o.status = EVAL_CANCELLED;
    if (o.status == EVAL_ERROR) {
        o.error_reason = "sandbox_failed";
        o.error_message = res.error_message[0] ? res.error_message : serr;
    }
    struct buf rb;
    buf_init(&rb, NULL, 0, STORE_JSON_MAX);
    if (sandbox_result_json(&res, &rb) == 0 && buf_ok(&rb))
        o.result_json = rb.data;

    trace_span_set_str(sp, "status", store_status_name(o.status));
    if (res.exit_code >= 0 && !res.signal)
        trace_span_set_int(sp, "exit_code", res.exit_code);
    if (o.status == EVAL_ERROR)
        trace_span_set_status(sp, TRACE_STATUS_ERROR, o.error_message);

    if (why == KILL_LOST) {
        log_warning(L, "evaluation.abandoned", LOG_STR("reason", "lease_lost"),
                    LOG_INT("attempt", r->attempts));
        trace_span_set_status(sp, TRACE_STATUS_ERROR, "lease lost");
    } else if (why == KILL_STOP && res.status == SANDBOX_KILLED) {
        struct store_requeue_counts c = {0};
        int rc = store_requeue_worker(w->st, w->id, &c, err, sizeof err);
        log_warning(L, "evaluation.requeued", LOG_STR("reason", "shutdown"),
                    LOG_INT("attempt", r->attempts), LOG_INT("requeued", c.requeued),
                    LOG_INT("lost", c.lost), rc < 0 ? LOG_STR("error", err) : LOG_NULL("error"));
        atomic_fetch_add(&pool->requeued, c.requeued);
        atomic_fetch_add(&pool->lost, c.lost);
        if (c.lost || c.cancelled) /* the requeue ended it: metric + webhook */
            after_requeue(pool, r->id);
        trace_span_set_status(sp, TRACE_STATUS_ERROR, "killed at shutdown, requeued");
    } else {
        int crc = -ECANCELED;
        bool chain = next && !atomic_load(&pool->stopping) && !atomic_load(&pool->kill_all);
        int rc = chain ? store_finish_claim(w->st, r->id, w->id, r->attempts, &o,
                                            (int64_t)pool->o.lease_s * 1000, next, &crc, err,
                                            sizeof err)
                       : store_finish(w->st, r->id, w->id, r->attempts, &o, err, sizeof err);
        chained = chain && crc == 0;
        if (rc < 0) {
            log_warning(L, "evaluation.finish_failed", LOG_STR("error", err),
                        LOG_STR("status", store_status_name(o.status)));
        } else {
            atomic_fetch_add(&pool->finished, 1);
            /* sandbox_run leaves clearbox_evaluations_total to us
             * (SANDBOX_METRICS_NO_STATUS): the service's status is what counts */
            count_status(pool, store_status_name(o.status), r->language);
            double cents = res.res.estimated_cost_cents;
            if (pool->m && cents > 0)
                metrics_counter_add_f(
                    metrics_counter_labels(pool->m->cost_cents, r->language, submitter), cents);
            log_at(L, o.status == EVAL_ERROR ? LOG_ERROR : LOG_INFO, "evaluation.finished",
                   LOG_STR("status", store_status_name(o.status)),
                   res.exit_code >= 0 && !res.signal ? LOG_INT("exit_code", res.exit_code)
                                                     : LOG_NULL("exit_code"),
                   LOG_DOUBLE("duration_ms", res.duration_ms), LOG_INT("attempt", r->attempts),
                   LOG_UINT("security_events", res.nevents), LOG_STR("submitter", submitter),
                   cents >= 0 ? LOG_DOUBLE("cost_cents", cents) : LOG_NULL("cost_cents"),
                   o.error_reason ? LOG_STR("error_reason", o.error_reason)
                                  : LOG_NULL("error_reason"),
                   o.error_message ? LOG_STR("error", o.error_message) : LOG_NULL("error"));
            if (r->callback_url)
                send_callback(w, r->id);
        }
    }
    buf_free(&rb);
    sandbox_result_free(&res);
    prepared_free(&p);
out_span:
    trace_span_restore(&scope);
    trace_span_end(sp);
    log_free(lg);
    return chained;
}

/* ---- the worker thread ----------------------------------------------------- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct worker_pool *pool = w->pool;
    int64_t lease_ms = (int64_t)pool->o.lease_s * 1000;
    int64_t last_err_log = 0;
    w->hb_started = pthread_create(&w->hb_th, NULL, heartbeat_main, w) == 0;
    if (!w->hb_started)
        log_error(pool->lg, "worker.heartbeat_failed", LOG_STR("worker_id", w->id),
                  LOG_STR("error", "cannot start the heartbeat thread"));
    struct eval_record r, next;
    bool chained = false; /* r was claimed by the last finish: run it */
    while (chained || !atomic_load(&pool->stopping)) {
        pthread_mutex_lock(&pool->mu);
        uint64_t seq = pool->notify_seq;
        pthread_mutex_unlock(&pool->mu);

        char err[ERR_LEN];
        /* busy before the claim, so stop never sees a claimed-but-idle
         * worker (a chained claim keeps it busy from the last run on) */
        if (!chained) {
            atomic_store(&w->busy, true);
            atomic_fetch_add(&pool->busy, 1);
        }
        int rc = chained                        ? 0
                 : atomic_load(&pool->stopping) ? -ESHUTDOWN
                                                : store_claim(w->st, w->id, lease_ms, &r, err,
                                                              sizeof err);
        if (rc == 0) {
            atomic_fetch_add(&pool->claimed, 1);
            atomic_store(&pool->last_claim_ns, (long long)time_now_ns());
            chained = run_one(w, &r, &next);
            store_record_clear(&r);
            if (chained) {
                r = next;
                continue;
            }
        }
        atomic_store(&w->busy, false);
        atomic_fetch_sub(&pool->busy, 1);
        if (rc != 0) /* nothing claimed: no batch to wait for */
            sandbox_netns_flush();
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->idle_cv);
        if (rc == 0) {
            pthread_mutex_unlock(&pool->mu);
            continue;
        }
        if (rc != -EAGAIN && rc != -ESHUTDOWN) {
            int64_t now = (int64_t)time_mono_ns();
            if (now - last_err_log > 30000000000ll) {
                log_error(pool->lg, "worker.claim_failed", LOG_STR("worker_id", w->id),
                          LOG_STR("error", err));
                last_err_log = now;
            }
        }
        /* nothing queued: sleep until notified or the poll period passes */
        if (pool->notify_seq == seq && !atomic_load(&pool->stopping)) {
            struct timespec ts;
            abs_deadline(&ts, (int64_t)pool->o.poll_ms * 1000000ll);
            pthread_cond_timedwait(&pool->work_cv, &pool->mu, &ts);
        }
        pthread_mutex_unlock(&pool->mu);
    }
    if (w->hb_started) {
        pthread_mutex_lock(&w->hb_mu);
        w->hb_quit = true;
        pthread_cond_broadcast(&w->hb_cv);
        pthread_mutex_unlock(&w->hb_mu);
        pthread_join(w->hb_th, NULL);
        w->hb_started = false;
    }
    atomic_store(&w->alive, false);
    atomic_fetch_sub(&pool->alive, 1);
    return NULL;
}

/* ---- maintenance and recovery ------------------------------------------------- */

static void account_requeue(struct worker_pool *pool, const struct store_requeue_counts *c,
                            const char *why)
{
    if (!c->requeued && !c->lost && !c->cancelled)
        return;
    atomic_fetch_add(&pool->requeued, c->requeued);
    atomic_fetch_add(&pool->lost, c->lost);
    log_warning(pool->lg, "queue.requeued", LOG_STR("reason", why),
                LOG_INT("requeued", c->requeued), LOG_INT("worker_lost", c->lost),
                LOG_INT("cancelled", c->cancelled));
    if (c->requeued) {
        pthread_mutex_lock(&pool->mu);
        pool->notify_seq++;
        pthread_cond_broadcast(&pool->work_cv);
        pthread_mutex_unlock(&pool->mu);
    }
}

/* A running evaluation as maintenance and recovery see it. */
struct running {
    char id[STORE_ID_LEN];
    char wid[STORE_WORKER_ID_MAX];
    int64_t lease_expires_ns;
};

/* Every running evaluation (few: at most the workers of all nodes), listed
 * before a requeue so that what the requeue ended can be followed up. */
static int running_list(struct worker_pool *pool, struct running **out, size_t *n, char *err,
                        size_t errlen)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    char cursor[STORE_CURSOR_LEN] = "";
    for (;;) {
        struct store_list_query q = {
            .status = EVAL_RUNNING, .limit = STORE_LIST_MAX, .cursor = cursor};
        struct eval_record *items = NULL;
        size_t ni = 0;
        int rc = store_list(pool->maint_st, &q, &items, &ni, cursor, err, errlen);
        if (rc < 0) {
            free(*out);
            *out = NULL;
            *n = 0;
            return rc;
        }
        for (size_t i = 0; i < ni; i++) {
            if (*n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                struct running *g = realloc(*out, nc * sizeof *g);
                if (!g) {
                    store_records_free(items, ni);
                    free(*out);
                    *out = NULL;
                    *n = 0;
                    return err_set(err, errlen, -ENOMEM, "out of memory");
                }
                *out = g;
                cap = nc;
            }
            struct running *x = &(*out)[(*n)++];
            snprintf(x->id, sizeof x->id, "%s", items[i].id);
            snprintf(x->wid, sizeof x->wid, "%s", items[i].worker_id ? items[i].worker_id : "");
            x->lease_expires_ns = items[i].lease_expires_ns;
        }
        store_records_free(items, ni);
        if (!cursor[0])
            return 0;
    }
}

/* After a requeue: an evaluation it ended (worker_lost, or cancelled) gets
 * its metric and its webhook like any other terminal status. */
static void after_requeue(struct worker_pool *pool, const char *id)
{
    struct eval_record rec;
    char err[ERR_LEN];
    if (store_get(pool->maint_st, id, &rec, err, sizeof err) < 0)
        return;
    if (store_status_terminal(rec.status)) {
        count_status(pool, store_status_name(rec.status), rec.language);
        log_warning(pool->lg, "evaluation.finished", LOG_STR("eval_id", rec.id),
                    LOG_STR("status", store_status_name(rec.status)),
                    LOG_STR("error_reason", rec.error_reason), LOG_INT("attempt", rec.attempts),
                    LOG_STR("worker_id", rec.worker_id));
        send_callback_rec(pool, &rec);
    }
    store_record_clear(&rec);
}

static int maintenance_pass(struct worker_pool *pool, char *err, size_t errlen)
{
    /* expired leases: list first (cheap, and usually nothing), requeue with
     * the same cut-off, then follow up what the requeue ended */
    int64_t now = (int64_t)time_now_ns();
    struct running *run;
    size_t nrun;
    TRY(running_list(pool, &run, &nrun, err, errlen));
    bool any = false;
    for (size_t i = 0; i < nrun; i++)
        any |= run[i].lease_expires_ns < now;
    if (any) {
        struct store_requeue_counts c = {0};
        int rc = store_requeue_expired(pool->maint_st, now, &c, err, errlen);
        if (rc < 0) {
            free(run);
            return rc;
        }
        account_requeue(pool, &c, "lease_expired");
        for (size_t i = 0; c.lost + c.cancelled > 0 && i < nrun; i++)
            if (run[i].lease_expires_ns < now)
                after_requeue(pool, run[i].id);
    }
    free(run);
    /* purge every 10 s, or a quarter of a short retention, not every pass */
    int64_t every = PURGE_EVERY_NS;
    if (pool->o.retention_s > 0 && pool->o.retention_s * 250000000ll < every)
        every = pool->o.retention_s * 250000000ll;
    if (pool->o.retention_s > 0 && now - pool->last_purge_ns >= every) {
        int64_t deleted = 0;
        TRY(store_purge(pool->maint_st, pool->o.retention_s, 0, &deleted, err, errlen));
        pool->last_purge_ns = now;
        if (deleted) {
            atomic_fetch_add(&pool->purged, deleted);
            log_info(pool->lg, "retention.purged", LOG_INT("deleted", deleted),
                     LOG_INT("retention_s", pool->o.retention_s));
        }
    }
    struct store_queue_stats qs;
    TRY(store_queue_stats(pool->maint_st, &qs, err, errlen));
    atomic_store(&pool->queue_depth, qs.queued);
    atomic_store(&pool->oldest_queued_ns, qs.oldest_queued_ns);
    if (pool->m)
        metrics_gauge_set(pool->m->queue_depth, (double)qs.queued);
    atomic_store(&pool->last_maintenance_ns, (long long)time_now_ns());
    return 0;
}

/* Leftovers of crashed runs (workspace mounts, cgroups) that sandbox_gc
 * skipped at start because they were too young to be sure. */
static void gc_leftovers(struct worker_pool *pool)
{
    struct buf report;
    buf_init(&report, NULL, 0, 1 << 20);
    char err[ERR_LEN];
    int n = sandbox_gc(pool->state_dir, pool->cgroup_parent, &report, err, sizeof err);
    if (n > 0)
        log_warning(pool->lg, "worker.gc", LOG_INT("removed", n),
                    LOG_STRN("report", report.data ? report.data : "", report.len));
    buf_free(&report);
}

static void *maintenance_main(void *arg)
{
    struct worker_pool *pool = arg;
    int64_t last_gc = (int64_t)time_mono_ns();
    pthread_mutex_lock(&pool->mu);
    while (!atomic_load(&pool->stopping)) {
        struct timespec ts;
        abs_deadline(&ts, (int64_t)pool->o.maintenance_ms * 1000000ll);
        pthread_cond_timedwait(&pool->maint_cv, &pool->mu, &ts);
        if (atomic_load(&pool->stopping))
            break;
        pthread_mutex_unlock(&pool->mu);
        char err[ERR_LEN];
        if (!pool->o.no_recover && (int64_t)time_mono_ns() - last_gc > GC_EVERY_NS) {
            gc_leftovers(pool);
            last_gc = (int64_t)time_mono_ns();
        }
        if (maintenance_pass(pool, err, sizeof err) < 0) {
            int64_t now = (int64_t)time_mono_ns();
            if (now - pool->last_maint_warn_ns > 30000000000ll) {
                log_error(pool->lg, "worker.maintenance_failed", LOG_STR("error", err));
                pool->last_maint_warn_ns = now;
            }
        }
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* A restarted node: kill leftover sandboxes, then requeue every evaluation
 * still running under one of this node's worker ids (any index: the previous
 * run may have had more workers). */
static int recover_node(struct worker_pool *pool, char *err, size_t errlen)
{
    gc_leftovers(pool);

    char prefix[WORKER_NODE_ID_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", pool->node_id);
    size_t plen = strlen(prefix);
    /* collect first, requeue after: requeueing while paging would move rows */
    struct running *run;
    size_t nrun;
    TRY(running_list(pool, &run, &nrun, err, errlen));
    struct store_requeue_counts total = {0};
    int rc = 0;
    for (size_t i = 0; rc >= 0 && i < nrun; i++) {
        if (strncmp(run[i].wid, prefix, plen))
            continue;
        bool done = false; /* one requeue per worker id */
        for (size_t j = 0; j < i && !done; j++)
            done = !strcmp(run[j].wid, run[i].wid);
        if (done)
            continue;
        struct store_requeue_counts c = {0};
        rc = store_requeue_worker(pool->maint_st, run[i].wid, &c, err, errlen);
        total.requeued += c.requeued;
        total.lost += c.lost;
        total.cancelled += c.cancelled;
    }
    account_requeue(pool, &total, "node_restart");
    for (size_t i = 0; total.lost + total.cancelled > 0 && i < nrun; i++)
        if (!strncmp(run[i].wid, prefix, plen))
            after_requeue(pool, run[i].id);
    free(run);
    return rc < 0 ? rc : 0;
}

/* <state_dir>/node-<id>.lock: an exclusive flock held for the pool's life
 * keeps two live processes with one node id apart. A clean stop unlinks the
 * file while still holding the lock (node_unlock), so nothing is left behind;
 * after a crash the file stays, unlocked, and the next start reuses it. */
static int node_lock_path(const struct worker_pool *pool, char *path, size_t n)
{
    return snprintf(path, n, "%s/node-%s.lock", pool->state_dir, pool->node_id) >= (int)n
               ? -ENAMETOOLONG
               : 0;
}

static int node_lock(struct worker_pool *pool, char *err, size_t errlen)
{
    /* as the sandbox makes it: 0711 as root (its user namespace must
     * traverse it), 0700 otherwise */
    if (mkdir(pool->state_dir, geteuid() == 0 ? 0711 : 0700) < 0 && errno != EEXIST)
        return err_sys(err, errlen, -errno, "create the state directory %s", pool->state_dir);
    char path[PATH_MAX];
    if (node_lock_path(pool, path, sizeof path) < 0)
        return err_set(err, errlen, -ENAMETOOLONG, "state_dir is too long");
    /* after a kill -9 the dead process's sandbox children may hold the lock
     * (inherited until their exec) for a moment while PDEATHSIG ends them */
    int fd = -1, e = 0;
    for (int tries = 0;; tries++) {
        if (fd < 0) {
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
            if (fd < 0)
                return err_sys(err, errlen, -errno, "open %s", path);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            /* The holder we waited for may have stopped cleanly and unlinked
             * the file: a lock on an unlinked file excludes nobody (the next
             * start makes a new one), so the path must still name ours. */
            struct stat fst, pst;
            if (fstat(fd, &fst) == 0 && stat(path, &pst) == 0 && fst.st_dev == pst.st_dev &&
                fst.st_ino == pst.st_ino) {
                e = 0;
                break;
            }
            close(fd);
            fd = -1;
            e = ESTALE;
            if (tries >= 40)
                break;
            continue; /* open the file that is there now */
        }
        e = errno;
        if (e != EWOULDBLOCK || tries >= 40) /* 2 s */
            break;
        usleep(50000);
    }
    if (e) {
        char holder[32] = "";
        if (fd >= 0) {
            ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
            holder[n > 0 ? n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
            close(fd);
        }
        if (e == EWOULDBLOCK)
            return err_set(err, errlen, -EBUSY,
                           "node id '%s' is in use by another process (pid %s); give each "
                           "process its own --node-id",
                           pool->node_id, holder[0] ? holder : "?");
        if (e == ESTALE)
            return err_set(err, errlen, -EBUSY,
                           "lock %s: the file was replaced under each attempt; is another "
                           "process with node id '%s' starting and stopping?",
                           path, pool->node_id);
        return err_sys(err, errlen, -e, "lock %s", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0) {
        /* the pid is only a hint for the message above */
    }
    pool->lock_fd = fd;
    return 0;
}

/* Release the node lock, removing its file first: unlinked while we still
 * hold the lock, no other process can be holding it (one that opened the
 * file and waits sees at its flock that the path no longer names it). */
static void node_unlock(struct worker_pool *pool)
{
    if (pool->lock_fd < 0)
        return;
    char path[PATH_MAX], eb[128];
    if (node_lock_path(pool, path, sizeof path) == 0 && unlink(path) < 0 && errno != ENOENT) {
        int e = errno;
        log_warning(pool->lg, "worker.node_lock_unlink_failed", LOG_STR("path", path),
                    LOG_STR("error", err_str(e, eb, sizeof eb)));
    }
    close(pool->lock_fd); /* releases the node lock */
    pool->lock_fd = -1;
}

/* ---- the public API ----------------------------------------------------------- */

static void pool_free(struct worker_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->nworkers; i++) {
        store_close(pool->w[i].st);
        pthread_mutex_destroy(&pool->w[i].hb_mu);
        pthread_cond_destroy(&pool->w[i].hb_cv);
    }
    free(pool->w);
    store_close(pool->maint_st);
    if (pool->own_audit)
        audit_log_close(pool->audit);
    if (pool->cgroup_pool) /* every worker has returned its slot */
        sandbox_cgroup_pool_stop();
    sandbox_netns_batch(0); /* lets the held ones go */
    node_unlock(pool); /* a clean stop or a failed start: no crash */
    if (!pool->lg_borrowed)
        log_free(pool->lg);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->idle_cv);
    pthread_cond_destroy(&pool->maint_cv);
    free(pool->db_url);
    free(pool->node_id);
    free(pool->audit_path);
    free(pool->engine);
    free(pool->seccomp_policy);
    free(pool->cgroup_parent);
    free(pool->state_dir);
    free((void *)pool->o.callback_secret);
    free(pool);
}

int worker_pool_start(const struct worker_options *opts, worker_pool_t **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->db_url || !*opts->db_url)
        return err_set(err, errlen, -EINVAL, "worker options: db_url is required");
    const struct worker_options *o = opts;
    if (o->workers < 0 || o->workers > WORKER_MAX)
        return err_set(err, errlen, -EINVAL, "workers must be 1-%d", WORKER_MAX);
    if (o->lease_s < 0 || o->heartbeat_s < 0 || o->max_attempts < 0 || o->grace_s < 0 ||
        o->maintenance_ms < 0 || o->poll_ms < 0 || o->retention_s < 0)
        return err_set(err, errlen, -EINVAL, "worker options must not be negative");
    int lease = o->lease_s ? o->lease_s : WORKER_LEASE_S_DEFAULT;
    int hb = o->heartbeat_s ? o->heartbeat_s : (lease / 3 ? lease / 3 : 1);
    if (hb >= lease)
        return err_set(err, errlen, -EINVAL,
                       "heartbeat_s (%d) must be shorter than lease_s (%d), or a running "
                       "evaluation loses its lease between heartbeats",
                       hb, lease);
    if (o->node_id && !node_id_ok(o->node_id))
        return err_set(err, errlen, -EINVAL, "node_id must be 1-%d characters of [A-Za-z0-9._-]",
                       WORKER_NODE_ID_MAX);
    if (o->callback_secret_len > 4096)
        return err_set(err, errlen, -EINVAL, "callback secret longer than 4096 bytes");

    struct worker_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    pool->lock_fd = -1;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->idle_cv, NULL);
    pthread_cond_init(&pool->maint_cv, NULL);
    pool->o = *o;
    pool->o.workers = o->workers ? o->workers : 1;
    pool->o.lease_s = lease;
    pool->o.heartbeat_s = hb;
    pool->o.grace_s = o->grace_s ? o->grace_s : WORKER_GRACE_S_DEFAULT;
    pool->o.maintenance_ms = o->maintenance_ms ? o->maintenance_ms : WORKER_MAINTENANCE_MS_DEFAULT;
    pool->o.poll_ms = o->poll_ms ? o->poll_ms : WORKER_POLL_MS_DEFAULT;
    atomic_store(&pool->queue_depth, -1);

    bool oom = false;
    if (!o->node_id) {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        size_t j = 0;
        for (size_t i = 0; host[i] && j < WORKER_NODE_ID_MAX; i++) {
            char c = host[i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-';
            pool->node_buf[j++] = ok ? c : '_';
        }
        if (!j)
            snprintf(pool->node_buf, sizeof pool->node_buf, "node");
    }
    pool->node_id = dup_opt(o->node_id ? o->node_id : pool->node_buf, &oom);
    pool->db_url = dup_opt(o->db_url, &oom);
    pool->audit_path = dup_opt(o->audit_path, &oom);
    pool->engine = dup_opt(o->engine, &oom);
    pool->seccomp_policy = dup_opt(o->seccomp_policy, &oom);
    pool->cgroup_parent = dup_opt(o->cgroup_parent, &oom);
    char sd_default[PATH_MAX];
    /* the sandbox's own rule, so the node lock sits beside the runs */
    sandbox_state_dir_default(sd_default, sizeof sd_default);
    pool->state_dir = dup_opt(o->state_dir ? o->state_dir : sd_default, &oom);
    size_t slen = o->callback_secret ? (o->callback_secret_len ? o->callback_secret_len
                                                               : strlen(o->callback_secret))
                                     : 0;
    pool->o.callback_secret = NULL;
    pool->o.callback_secret_len = slen;
    if (slen) {
        char *sec = malloc(slen + 1);
        if (sec) {
            memcpy(sec, o->callback_secret, slen);
            sec[slen] = '\0';
        } else {
            oom = true;
        }
        pool->o.callback_secret = sec;
    }
    pool->o.db_url = pool->db_url;
    pool->o.node_id = pool->node_id;
    pool->o.audit_path = pool->audit_path;
    pool->o.engine = pool->engine;
    pool->o.seccomp_policy = pool->seccomp_policy;
    pool->o.cgroup_parent = pool->cgroup_parent;
    pool->o.state_dir = pool->state_dir;
    pool->m = o->metrics ? o->metrics : telemetry_std();
    int rc;
    if (oom) {
        rc = err_set(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }
    struct log_field nf[] = {LOG_STR("node_id", pool->node_id)};
    pool->lg = log_bind(log_get("worker"), nf, 1, NULL, 0);
    if (!pool->lg) {
        pool->lg = log_get("worker");
        pool->lg_borrowed = true;
    }

    if ((rc = node_lock(pool, err, errlen)) < 0)
        goto fail;
    /* the stateless v1 cgroups, lent from one evaluation to the next
     * (docs/sandbox.md "The cgroup pool"); without it each run makes its own */
    char cperr[ERR_LEN];
    int cp = sandbox_cgroup_pool_start(pool->state_dir, pool->cgroup_parent, cperr, sizeof cperr);
    if (cp < 0)
        log_warning(pool->lg, "worker.cgroup_pool_failed", LOG_STR("error", cperr));
    pool->cgroup_pool = cp == 1;
    /* finished sandboxes' network namespaces go in batches, for about half
     * the kernel's CPU (docs/sandbox.md "Network namespaces in batches") */
    sandbox_netns_batch(SANDBOX_NETNS_BATCH_MAX);
    if (o->audit) {
        pool->audit = o->audit;
    } else if (o->audit_path) {
        if ((rc = audit_log_open(&pool->audit, o->audit_path, NULL, err, errlen)) < 0)
            goto fail;
        pool->own_audit = true;
    }
    if ((rc = store_open(pool->db_url, NULL, &pool->maint_st, err, errlen)) < 0)
        goto fail;
    /* the webhook sender first: recovery may end evaluations that have one */
    struct callback_options co = {.secret = pool->o.callback_secret,
                                  .secret_len = slen,
                                  .allow_private = o->callback_allow_private,
                                  .attempts = o->callback_attempts,
                                  .timeout_ms = o->callback_timeout_ms,
                                  .backoff_ms = o->callback_backoff_ms,
                                  .render = pool->o.record_json,
                                  .owner = pool->node_id};
    if ((rc = callback_sender_start(&co, pool->db_url, &pool->cb, err, errlen)) < 0)
        goto fail;
    if (!o->no_recover && (rc = recover_node(pool, err, errlen)) < 0)
        goto fail;
    if ((rc = maintenance_pass(pool, err, errlen)) < 0)
        goto fail;

    pool->w = calloc((size_t)pool->o.workers, sizeof *pool->w);
    if (!pool->w) {
        rc = err_set(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < pool->o.workers; i++) {
        struct worker *w = &pool->w[i];
        w->pool = pool;
        w->index = i;
        pthread_mutex_init(&w->hb_mu, NULL);
        pthread_cond_init(&w->hb_cv, NULL);
        pool->nworkers++;
        snprintf(w->id, sizeof w->id, "%s/w%d", pool->node_id, i);
        if ((rc = store_open(pool->db_url, NULL, &w->st, err, errlen)) < 0)
            goto fail;
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->w[i];
        atomic_store(&w->alive, true);
        atomic_fetch_add(&pool->alive, 1);
        int e = pthread_create(&w->th, NULL, worker_main, w);
        if (e) {
            atomic_store(&w->alive, false);
            atomic_fetch_sub(&pool->alive, 1);
            rc = err_set(err, errlen, -e, "cannot start worker thread %d", i);
            goto fail_threads;
        }
        w->started = true;
    }
    int e = pthread_create(&pool->maint_th, NULL, maintenance_main, pool);
    if (e) {
        rc = err_set(err, errlen, -e, "cannot start the maintenance thread");
        goto fail_threads;
    }
    pool->maint_started = true;
    log_info(pool->lg, "worker.pool_started", LOG_INT("workers", pool->nworkers),
             LOG_INT("lease_s", pool->o.lease_s), LOG_INT("heartbeat_s", pool->o.heartbeat_s),
             LOG_INT("retention_s", pool->o.retention_s),
             LOG_STR("store", store_backend_name(pool->maint_st)),
             LOG_INT("queue_depth", atomic_load(&pool->queue_depth)));
    *out = pool;
    return 0;

fail_threads:
    atomic_store(&pool->stopping, true);
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->nworkers; i++)
        if (pool->w[i].started) {
            set_kill(&pool->w[i], KILL_STOP);
            pthread_join(pool->w[i].th, NULL);
        }
fail:
    callback_sender_stop(pool->cb, 0);
    pool_free(pool);
    return rc;
}

void worker_pool_notify(worker_pool_t *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->notify_seq++;
    pthread_cond_broadcast(&pool->work_cv); /* a batch queues many: wake every idle worker */
    pthread_mutex_unlock(&pool->mu);
}

void worker_pool_cancelled(worker_pool_t *pool, const char *eval_id)
{
    if (!pool || !eval_id)
        return;
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->w[i];
        if (!atomic_load(&w->busy))
            continue;
        pthread_mutex_lock(&w->hb_mu);
        if (!strcmp(w->run_id, eval_id)) {
            w->hb_poke = true;
            pthread_cond_broadcast(&w->hb_cv);
        }
        pthread_mutex_unlock(&w->hb_mu);
    }
}

int worker_pool_stop(worker_pool_t *pool, int grace_s)
{
    if (!pool)
        return 0;
    int grace = grace_s < 0 ? pool->o.grace_s : grace_s;
    int64_t t0 = (int64_t)time_now_ns();
    int64_t deadline = t0 + (int64_t)grace * 1000000000ll;
    log_info(pool->lg, "worker.pool_stopping", LOG_INT("busy", atomic_load(&pool->busy)),
             LOG_INT("grace_s", grace));
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stopping, true);
    pthread_cond_broadcast(&pool->work_cv);
    pthread_cond_broadcast(&pool->maint_cv);
    while (atomic_load(&pool->busy) > 0 && (int64_t)time_now_ns() < deadline) {
        struct timespec ts;
        int64_t left = deadline - (int64_t)time_now_ns();
        abs_deadline(&ts, left < 100000000 ? left : 100000000);
        pthread_cond_timedwait(&pool->idle_cv, &pool->mu, &ts);
    }
    pthread_mutex_unlock(&pool->mu);
    atomic_store(&pool->kill_all, true);
    int killed = 0;
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->w[i];
        pthread_mutex_lock(&w->hb_mu);
        bool running = w->run_id[0] != '\0';
        pthread_mutex_unlock(&w->hb_mu);
        if (running) {
            set_kill(w, KILL_STOP);
            killed++;
        }
    }
    for (int i = 0; i < pool->nworkers; i++)
        if (pool->w[i].started)
            pthread_join(pool->w[i].th, NULL);
    if (pool->maint_started)
        pthread_join(pool->maint_th, NULL);
    int64_t now = (int64_t)time_now_ns();
    int abandoned = callback_sender_stop(pool->cb, deadline > now ? deadline : now);
    log_info(pool->lg, "worker.pool_stopped", LOG_INT("killed", killed),
             LOG_INT("callbacks_left_pending", abandoned),
             LOG_DOUBLE("duration_ms", (double)((int64_t)time_now_ns() - t0) / 1e6));
    pool_free(pool);
    return killed;
}

void worker_pool_stats(worker_pool_t *pool, struct worker_pool_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!pool)
        return;
    st->workers = pool->nworkers;
    st->alive = atomic_load(&pool->alive);
    int busy = 0;
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->w[i];
        pthread_mutex_lock(&w->hb_mu);
        busy += w->run_id[0] != '\0';
        pthread_mutex_unlock(&w->hb_mu);
    }
    st->busy = busy;
    st->idle = st->alive > busy ? st->alive - busy : 0;
    st->claimed = atomic_load(&pool->claimed);
    st->finished = atomic_load(&pool->finished);
    st->requeued = atomic_load(&pool->requeued);
    st->lost = atomic_load(&pool->lost);
    st->purged = atomic_load(&pool->purged);
    st->queue_depth = atomic_load(&pool->queue_depth);
    st->oldest_queued_ns = atomic_load(&pool->oldest_queued_ns);
    st->last_claim_ns = atomic_load(&pool->last_claim_ns);
    st->last_maintenance_ns = atomic_load(&pool->last_maintenance_ns);
    st->callbacks_pending = callback_sender_pending(pool->cb);
}

bool worker_pool_healthy(worker_pool_t *pool, char *why, size_t whylen)
{
    if (!pool) {
        err_set(why, whylen, -EINVAL, "no worker pool");
        return false;
    }
    int alive = atomic_load(&pool->alive);
    if (alive < pool->nworkers) {
        err_set(why, whylen, -EIO, "%d of %d worker threads have stopped", pool->nworkers - alive,
                pool->nworkers);
        return false;
    }
    if (atomic_load(&pool->stopping)) {
        err_set(why, whylen, -ESHUTDOWN, "the worker pool is stopping");
        return false;
    }
    int64_t last = atomic_load(&pool->last_maintenance_ns);
    int64_t age_ms = ((int64_t)time_now_ns() - last) / 1000000;
    if (age_ms > 3ll * pool->o.maintenance_ms + 2000) {
        err_set(why, whylen, -EIO,
                "no successful maintenance pass for %lld ms (the store may be unreachable)",
                (long long)age_ms);
        return false;
    }
    return true;
}

const char *worker_pool_node_id(const worker_pool_t *pool)
{
    return pool ? pool->node_id : NULL;
}
