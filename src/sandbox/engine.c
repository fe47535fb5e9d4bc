/* engine.c - the engine table, sandbox_run() dispatch, defaults, statuses and
 * the result's event list (the 100-per-reason rule). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/internal.h"
#include "sandbox/sandbox.h"
#include "telemetry/log.h"
#include "telemetry/telemetry.h"
#include "telemetry/trace.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/rand.h"
#include "util/timeutil.h"

static const struct sandbox_engine engines[] = {
    {"native", sandbox__native_run},
};

const struct sandbox_engine *sandbox_engine_find(const char *name)
{
    if (!name)
        name = "native";
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        if (!strcmp(engines[i].name, name))
            return &engines[i];
    return NULL;
}

void sandbox_control_init(struct sandbox_control *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->killed, 0);
}

void sandbox_control_kill(struct sandbox_control *c)
{
    if (c)
        atomic_store(&c->killed, 1);
}

bool sandbox_control_killed(struct sandbox_control *c)
{
    return c && atomic_load(&c->killed) != 0;
}

void sandbox_limits_default(struct sandbox_limits *l)
{
    if (!l->wall_timeout_ms)
        l->wall_timeout_ms = SANDBOX_DEFAULT_WALL_TIMEOUT_MS;
    if (!l->cpu_time_ms)
        l->cpu_time_ms = l->wall_timeout_ms;
    if (!l->memory_max_bytes)
        l->memory_max_bytes = SANDBOX_DEFAULT_MEMORY_MAX_BYTES;
    if (!l->pids_max)
        l->pids_max = SANDBOX_DEFAULT_PIDS_MAX;
    if (!l->output_max_bytes)
        l->output_max_bytes = SANDBOX_DEFAULT_OUTPUT_MAX_BYTES;
    if (!l->disk_max_bytes)
        l->disk_max_bytes = SANDBOX_DEFAULT_DISK_MAX_BYTES;
    if (!l->open_files_max)
        l->open_files_max = SANDBOX_DEFAULT_OPEN_FILES_MAX;
    if (!l->cpu_cores_milli)
        l->cpu_cores_milli = SANDBOX_DEFAULT_CPU_CORES_MILLI;
}

void sandbox_pricing_default(struct sandbox_pricing *p)
{
    if (p->set)
        return;
    p->cents_per_cpu_second = SANDBOX_PRICE_CPU_SECOND;
    p->cents_per_gb_second = SANDBOX_PRICE_GB_SECOND;
    p->cents_per_evaluation = SANDBOX_PRICE_EVALUATION;
    p->set = true;
}

static const char *const status_names[] = {
    [SANDBOX_COMPLETED] = "completed",
    [SANDBOX_TIMEOUT] = "timeout",
    [SANDBOX_CPU_TIME_LIMIT] = "cpu_time_limit",
    [SANDBOX_MEMORY_LIMIT] = "memory_limit",
    [SANDBOX_PIDS_LIMIT] = "pids_limit",
    [SANDBOX_OUTPUT_LIMIT] = "output_limit",
    [SANDBOX_KILLED] = "killed",
    [SANDBOX_ERROR] = "error",
};

const char *sandbox_status_name(enum sandbox_status s)
{
    if ((unsigned)s < sizeof status_names / sizeof status_names[0])
        return status_names[s];
    return "error";
}

int sandbox_status_parse(const char *name, enum sandbox_status *out)
{
    for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++)
        if (name && !strcmp(name, status_names[i])) {
            *out = (enum sandbox_status)i;
            return 0;
        }
    return -EINVAL;
}

const char *sandbox__signal_name(int sig)
{
    static __thread char b[24];
    if (sig <= 0)
        return NULL;
    const char *abbr = sigabbrev_np(sig);
    if (abbr)
        snprintf(b, sizeof b, "SIG%s", abbr);
    else
        snprintf(b, sizeof b, "SIG%d", sig);
    return b;
}

int sandbox__fail(struct sandbox_result *r, int code, const char *reason, char *err, size_t errlen,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error_message, sizeof r->error_message, fmt, ap);
    va_end(ap);
    snprintf(r->error_reason, sizeof r->error_reason, "%s", reason);
    r->status = SANDBOX_ERROR;
    return err_set(err, errlen, code < 0 ? code : -EIO, "%s", r->error_message);
}

/* Reasons get a slot for counting; unknown ones share the last slot. */
static const char *const reasons[] = {"network_attempt", "blocked_syscall", "timeout",
                                      "cpu_time_limit",  "memory_limit",    "pids_limit",
                                      "output_limit",    "disk_limit",      "file_size_limit"};
static size_t reason_slot(const char *reason)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (!strcmp(reasons[i], reason))
            return i;
    return 15;
}

static int push_event(struct sandbox_result *r, const char *reason, bool blocked,
                      const char *members)
{
    if (r->nevents >= SANDBOX_EVENTS_MAX)
        return -E2BIG;
    if (r->nevents % 16 == 0) {
        struct sandbox_event *ne = realloc(r->events, (r->nevents + 16) * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        r->events = ne;
    }
    struct sandbox_event *e = &r->events[r->nevents];
    memset(e, 0, sizeof *e);
    e->ts_ns = time_now_ns();
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    e->blocked = blocked;
    e->details = strdup(members ? members : "");
    if (!e->details)
        return -ENOMEM;
    r->nevents++;
    return 0;
}

int sandbox_result_add_event(struct sandbox_result *r, const char *reason, bool blocked,
                             const char *details_members)
{
    size_t slot = reason_slot(reason);
    uint32_t c = ++r->reason_counts[slot];
    if (c <= SANDBOX_EVENTS_PER_REASON)
        return push_event(r, reason, blocked, details_members);
    if (c == SANDBOX_EVENTS_PER_REASON + 1)
        return push_event(
            r, reason, blocked,
            "\"summary\":true,\"note\":\"later events of this reason are only counted\"");
    return 0;
}

void sandbox_result_degrade(struct sandbox_result *r, const char *what)
{
    for (size_t i = 0; i < r->ndegraded; i++)
        if (!strcmp(r->degraded[i], what))
            return;
    if (r->ndegraded < SANDBOX_DEGRADED_MAX)
        r->degraded[r->ndegraded++] = what;
}

static void result_init(struct sandbox_result *r, const struct sandbox_spec *spec)
{
    memset(r, 0, sizeof *r);
    r->status = SANDBOX_ERROR;
    r->exit_code = -1;
    r->start_ns = time_now_ns();
    r->limits = spec->limits;
    sandbox_limits_default(&r->limits);
    r->pricing = spec->pricing;
    sandbox_pricing_default(&r->pricing);
    buf_init(&r->out, NULL, 0, r->limits.output_max_bytes);
    buf_init(&r->err, NULL, 0, r->limits.output_max_bytes);
    snprintf(r->engine, sizeof r->engine, "%s", spec->engine ? spec->engine : "native");
    snprintf(r->cgroup_mode, sizeof r->cgroup_mode, "none");
    snprintf(r->language, sizeof r->language, "%s", spec->language ? spec->language : "");
    r->code = spec->code;
    r->code_len = spec->code_len;
    struct sandbox_resources *s = &r->res;
    s->cpu_seconds = s->cpu_user_seconds = s->cpu_system_seconds = -1;
    s->memory_mb_seconds = s->memory_peak_mb = -1;
    s->pids_peak = s->io_read_bytes = s->io_write_bytes = -1;
    s->estimated_cost_cents = -1;
    if (spec->eval_id && *spec->eval_id) {
        snprintf(r->eval_id, sizeof r->eval_id, "%s", spec->eval_id);
    } else {
        uint8_t id[16];
        rand_id(id, sizeof id);
        hex_encode(id, sizeof id, r->eval_id);
    }
}

static bool id_ok(const char *id)
{
    if (!*id || strlen(id) > SANDBOX_EVAL_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

/* The three phase spans, children of the caller's current span, made after
 * the fact from the measured phase times (the child side cannot trace). */
static void telemetry_spans(const struct sandbox_result *r)
{
    static const char *const names[] = {"sandbox.create", "sandbox.execute", "sandbox.teardown"};
    double ms[] = {r->create_ms, r->execute_ms, r->teardown_ms};
    uint64_t t = r->start_ns;
    for (int i = 0; i < 3; i++) {
        uint64_t d = (uint64_t)(ms[i] * 1e6);
        trace_span_t *sp = trace_span_start_at(names[i], TRACE_KIND_INTERNAL, NULL, t, 0);
        trace_span_set_str(sp, "eval_id", r->eval_id);
        trace_span_set_str(sp, "engine", r->engine);
        if (i == 1) {
            trace_span_set_str(sp, "status", sandbox_status_name(r->status));
            if (r->exit_code >= 0 && !r->signal)
                trace_span_set_int(sp, "exit_code", r->exit_code);
            trace_span_set_double(sp, "cpu_seconds", r->res.cpu_seconds);
            trace_span_set_double(sp, "memory_peak_mb", r->res.memory_peak_mb);
            trace_span_set_int(sp, "pids_peak", r->res.pids_peak);
            trace_span_set_int(sp, "security_events", (int64_t)r->nevents);
        }
        if (r->status == SANDBOX_ERROR && ((i == 0 && r->execute_ms == 0) || i == 1))
            trace_span_set_status(sp, TRACE_STATUS_ERROR, r->error_message);
        trace_span_end_at(sp, t + d);
        t += d;
    }
}

/* DESIGN.md's metrics, when the process set them up (telemetry_init). The
 * cost counter needs the submitter, so its caller (the service) records it. */
static void record_metrics(const struct sandbox_spec *spec, const struct sandbox_result *r)
{
    const struct telemetry_std *t = telemetry_std();
    if (!t || spec->metrics == SANDBOX_METRICS_NONE)
        return;
    if (spec->metrics != SANDBOX_METRICS_NO_STATUS)
        metrics_counter_inc(metrics_counter_labels(t->evaluations, sandbox_status_name(r->status),
                                                   r->language[0] ? r->language : "unknown"));
    if (r->status == SANDBOX_ERROR) {
        /* A request the engine refused is the caller's error, not a sandbox
         * that failed to come up. */
        if (strcmp(r->error_reason, "invalid_request") != 0)
            metrics_counter_inc(metrics_counter_labels(
                t->sandbox_create_failures, r->error_reason[0] ? r->error_reason : "unknown"));
        return;
    }
    metrics_histogram_observe(t->evaluation_duration, r->duration_ms / 1000.0);
    metrics_histogram_observe(t->sandbox_create, r->create_ms / 1000.0);
    if (r->res.cpu_seconds >= 0)
        metrics_histogram_observe(t->evaluation_cpu, r->res.cpu_seconds);
    if (r->res.memory_peak_mb >= 0)
        metrics_histogram_observe(t->evaluation_memory_peak,
                                  r->res.memory_peak_mb * 1024.0 * 1024.0);
    for (size_t i = 0; i < r->nevents; i++)
        metrics_counter_inc(metrics_counter_labels(t->security_events, r->events[i].reason));
    if (r->nevents > 0)
        metrics_counter_inc(metrics_counter_labels(t->evaluations_flagged,
                                                   r->language[0] ? r->language : "unknown"));
}

int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *out, char *err,
                size_t errlen)
{
    result_init(out, spec);
    if (spec->eval_id && !id_ok(spec->eval_id))
        return sandbox__fail(out, -EINVAL, "invalid_request", err, errlen,
                             "eval_id must be 1-%d characters of [A-Za-z0-9_-]",
                             SANDBOX_EVAL_ID_MAX);
    if (!spec->argv || !spec->argv[0] || spec->argv[0][0] != '/')
        return sandbox__fail(out, -EINVAL, "invalid_request", err, errlen,
                             "argv[0] must be an absolute path");
    /* floors below which the sandbox itself cannot be set up, and a ceiling
     * on what clearbox buffers in its own memory */
    const struct sandbox_limits *l = &out->limits;
    if (l->memory_max_bytes < (4u << 20) || l->pids_max < 2 || l->open_files_max < 16 ||
        l->disk_max_bytes < (64u << 10) || l->output_max_bytes > SANDBOX_OUTPUT_MAX_CEILING ||
        l->wall_timeout_ms > 24ull * 3600 * 1000)
        return sandbox__fail(out, -EINVAL, "invalid_request", err, errlen,
                             "limits out of range: memory >= 4 MiB, pids >= 2, open files >= 16, "
                             "disk >= 64 KiB, output <= %llu bytes, timeout <= 24 h",
                             (unsigned long long)SANDBOX_OUTPUT_MAX_CEILING);
    const struct sandbox_engine *e = sandbox_engine_find(spec->engine);
    if (!e)
        return sandbox__fail(out, -ENOENT, "invalid_request", err, errlen, "unknown engine '%s'",
                             spec->engine);
    struct trace_context ctx;
    if (trace_current_context(&ctx) ||
        (spec->traceparent &&
         trace_traceparent_parse(spec->traceparent, strlen(spec->traceparent), &ctx) == 0))
        hex_encode(ctx.trace_id, sizeof ctx.trace_id, out->trace_id);
    log_logger_t *lg = log_get("sandbox");
    log_info(lg, "evaluation.started", LOG_STR("eval_id", out->eval_id), LOG_STR("engine", e->name),
             LOG_STR("language", out->language), LOG_UINT("code_length", spec->code_len));
    int rc = e->run(spec, out, err, errlen);
    telemetry_spans(out);
    record_metrics(spec, out);
    const struct sandbox_resources *s = &out->res;
    log_info(
        lg, "evaluation.completed", LOG_STR("eval_id", out->eval_id), LOG_STR("engine", e->name),
        LOG_STR("language", out->language), LOG_STR("status", sandbox_status_name(out->status)),
        out->exit_code >= 0 && !out->signal ? LOG_INT("exit_code", out->exit_code)
                                            : LOG_NULL("exit_code"),
        LOG_STR("signal", sandbox__signal_name(out->signal)),
        LOG_DOUBLE("duration_ms", out->duration_ms),
        out->status == SANDBOX_ERROR ? LOG_STR("error", out->error_message) : LOG_NULL("error"),
        LOG_UINT("security_events", out->nevents), LOG_OBJ("resources"),
        LOG_DOUBLE("cpu_seconds", s->cpu_seconds), LOG_DOUBLE("memory_peak_mb", s->memory_peak_mb),
        LOG_DOUBLE("memory_mb_seconds", s->memory_mb_seconds), LOG_INT("pids_peak", s->pids_peak),
        LOG_DOUBLE("estimated_cost_cents", s->estimated_cost_cents), LOG_END_OBJ);
    return rc;
}

void sandbox_result_free(struct sandbox_result *r)
{
    if (!r)
        return;
    buf_free(&r->out);
    buf_free(&r->err);
    for (size_t i = 0; i < r->nevents; i++)
        free(r->events[i].details);
    free(r->events);
    r->events = NULL;
    r->nevents = 0;
}
