/* serve.c - `clearbox serve`: the evaluation service (issue 5).
 *
 * Startup, in order: settings (flags > CLEARBOX_* > config file > defaults,
 * service/config.h) and their cross-checks (a non-loopback listen address
 * without a token is refused here); telemetry; the audit log; the worker pool
 * (which recovers this node's leftovers); the HTTP API (which opens the store
 * and applies pending migrations); a sandbox self-check in the background
 * (readyz says "pending" until it passes). Then wait for SIGTERM/SIGINT.
 *
 * Shutdown: stop accepting connections (readyz 503), give running
 * evaluations grace_s to finish (the pool requeues the rest), stop the API,
 * flush telemetry, log service.stopped, exit 0. A second signal during the
 * grace period is not special: the pool's grace bound still holds.
 * SIGTERM/SIGINT are blocked before any thread starts, so every thread
 * inherits the mask and only sigwait() below receives them. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "service/api.h"
#include "service/config.h"
#include "service/worker.h"
#include "telemetry/audit.h"
#include "telemetry/log.h"
#include "telemetry/telemetry.h"
#include "util/err.h"

extern char **environ;

/* The API's hooks reach the pool through g_pool under a read lock; shutdown
 * takes the write lock to clear it before the pool is stopped and freed, so a
 * request still in flight during the grace period never touches freed memory
 * (it sees "no pool": not healthy, nothing to notify; a cancel still reaches a
 * running evaluation through the store, which the worker's heartbeat reads). */
static pthread_rwlock_t g_pool_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct worker_pool *g_pool;

static void hook_notify(void *arg)
{
    pthread_rwlock_rdlock(&g_pool_lock);
    if (g_pool)
        worker_pool_notify(g_pool);
    pthread_rwlock_unlock(&g_pool_lock);
}
static void hook_cancelled(void *arg, const char *id)
{
    pthread_rwlock_rdlock(&g_pool_lock);
    if (g_pool)
        worker_pool_cancelled(g_pool, id);
    pthread_rwlock_unlock(&g_pool_lock);
}
static bool hook_healthy(void *arg, char *why, size_t n)
{
    bool ok = false;
    pthread_rwlock_rdlock(&g_pool_lock);
    if (g_pool)
        ok = worker_pool_healthy(g_pool, why, n);
    else
        snprintf(why, n, "workers are stopping");
    pthread_rwlock_unlock(&g_pool_lock);
    return ok;
}
static void hook_stats(void *arg, int *busy, int *total)
{
    struct worker_pool_stats st = {0};
    pthread_rwlock_rdlock(&g_pool_lock);
    if (g_pool)
        worker_pool_stats(g_pool, &st);
    pthread_rwlock_unlock(&g_pool_lock);
    *busy = st.busy;
    *total = st.workers;
}

/* Take the pool away from the hooks; returns it for stopping. */
static struct worker_pool *pool_detach(void)
{
    pthread_rwlock_wrlock(&g_pool_lock);
    struct worker_pool *p = g_pool;
    g_pool = NULL;
    pthread_rwlock_unlock(&g_pool_lock);
    return p;
}

/* The sandbox self-check: `exit 0` in sh under default limits must complete. */
struct selfcheck {
    api_t *api;
    const struct service_config *cfg;
};

static void *selfcheck_main(void *arg)
{
    struct selfcheck *sc = arg;
    static const char code[] = "exit 0\n";
    const char *argv[] = {"/bin/sh", "/work/main.sh", NULL};
    struct sandbox_spec spec = {
        .language = "sh",
        .code = code,
        .code_len = sizeof code - 1,
        .code_name = "main.sh",
        .argv = argv,
        .eval_id = "selfcheck",
        .metrics = SANDBOX_METRICS_NONE, /* not an evaluation */
    };
    spec.limits.wall_timeout_ms = 10000;
    struct sandbox_result res;
    char err[ERR_LEN] = "";
    int rc = sandbox_run(&spec, &res, err, sizeof err);
    char why[ERR_LEN + 16];
    bool ok = rc == 0 && res.status == SANDBOX_COMPLETED && res.exit_code == 0;
    if (ok)
        snprintf(why, sizeof why, "passed (%.1f ms, engine %s, cgroup %s)", res.duration_ms,
                 res.engine, res.cgroup_mode);
    else
        snprintf(why, sizeof why, "failed: %s", rc < 0 ? err
                                                : res.status == SANDBOX_ERROR ? res.error_message
                                                : sandbox_status_name(res.status));
    sandbox_result_free(&res);
    api_set_sandbox_ok(sc->api, ok, why);
    log_at(log_get("service"), ok ? LOG_INFO : LOG_ERROR, "sandbox.selfcheck",
           LOG_BOOL("ok", ok), LOG_STR("message", why));
    return NULL;
}

static int cmd_serve(int argc, char **argv)
{
    static struct service_config cfg; /* large: keep it off the stack */
    char err[ERR_LEN];
    bool help = false;
    config_defaults(&cfg);
    if (config_load(&cfg, argc, argv, environ, &help, err, sizeof err) < 0)
        return cli_usage_error("serve", "%s", err);
    if (help) {
        config_help(stdout);
        return 0;
    }
    if (config_check(&cfg, err, sizeof err) < 0)
        return cli_usage_error("serve", "%s", err);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The sandbox spawner, while this process is still small and has one
     * thread (see sandbox_spawner_start); only where workers will run. */
    if (config_role_workers(&cfg) && sandbox_spawner_start(err, sizeof err) < 0)
        fprintf(stderr, "clearbox serve: %s (sandboxes are cloned by the workers)\n", err);

    log_logger_t *lg = log_get("service");
    struct telemetry_options topts = {.submitters_max = (size_t)cfg.submitters_max};
    if (telemetry_init(&topts, err, sizeof err) < 0)
        log_warning(lg, "telemetry.init_failed", LOG_STR("message", err));

    int ret = 1;
    audit_log_t *audit = NULL;
    worker_pool_t *pool = NULL;
    api_t *api = NULL;
    if (cfg.audit_log[0]) {
        struct audit_options ao = {.key_path = cfg.audit_key_file[0] ? cfg.audit_key_file : NULL,
                                   .head_log_every = 1000};
        if (audit_log_open(&audit, cfg.audit_log, &ao, err, sizeof err) < 0) {
            cli_fail("serve", "audit log %s: %s", cfg.audit_log, err);
            goto out;
        }
    }

    int nworkers = cfg.workers;
    if (nworkers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nworkers = n > 0 ? (int)n : 1;
    }
    if (nworkers > WORKER_MAX)
        nworkers = WORKER_MAX;
    struct worker_options wo = {
        .db_url = cfg.db_url,
        .workers = nworkers,
        .node_id = cfg.node_id[0] ? cfg.node_id : NULL,
        .lease_s = cfg.lease_s,
        .heartbeat_s = cfg.heartbeat_s,
        .max_attempts = cfg.max_attempts,
        .grace_s = cfg.grace_s,
        .retention_s = cfg.retention_s,
        .audit = audit,
        .callback_secret = cfg.callback_secret[0] ? cfg.callback_secret : NULL,
        .callback_allow_private = cfg.callback_allow_private,
        .callback_attempts = cfg.callback_retries + 1,
        .callback_timeout_ms = cfg.callback_timeout_s * 1000,
        .record_json = api_record_json,
    };
    /* the pool opens its own store handles; migrate first so it finds the schema */
    {
        store_t *s;
        struct store_options so = {.flags = STORE_OPEN_MIGRATE};
        if (store_open(cfg.db_url, &so, &s, err, sizeof err) < 0) {
            cli_fail("serve", "database %s: %s", cfg.db_url, err);
            goto out;
        }
        store_close(s);
    }
    /* --role: an API node runs no workers (and needs no sandbox); a worker
     * node keeps HTTP only for health and metrics. */
    bool run_workers = config_role_workers(&cfg);
    if (run_workers) {
        if (worker_pool_start(&wo, &pool, err, sizeof err) < 0) {
            cli_fail("serve", "workers: %s", err);
            goto out;
        }
        pthread_rwlock_wrlock(&g_pool_lock);
        g_pool = pool;
        pthread_rwlock_unlock(&g_pool_lock);
    }
    struct api_options ao = {
        .cfg = &cfg,
        .no_workers_ok = !run_workers,
        .no_api_routes = !config_role_api(&cfg),
    };
    if (run_workers)
        ao.hooks = (struct api_hooks){.notify = hook_notify,
                                      .cancelled = hook_cancelled,
                                      .workers_healthy = hook_healthy,
                                      .workers_stats = hook_stats,
                                      .arg = pool};
    if (api_start(&ao, &api, err, sizeof err) < 0) {
        cli_fail("serve", "%s", err);
        goto out;
    }

    if (run_workers) {
        static struct selfcheck sc;
        sc.api = api;
        sc.cfg = &cfg;
        pthread_t th;
        if (pthread_create(&th, NULL, selfcheck_main, &sc) == 0)
            pthread_detach(th);
        else
            api_set_sandbox_ok(api, false, "cannot start the self-check thread");
    }

    char where[CONFIG_LISTEN_MAX + 16];
    {
        char host[CONFIG_LISTEN_MAX];
        int port;
        bool lo;
        config_listen_parse(cfg.listen, host, sizeof host, &port, &lo, NULL, 0);
        snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                 api_port(api));
    }
    log_info(lg, "service.started", LOG_STR("listen", where), LOG_STR("db", cfg.db_url),
             LOG_STR("role", cfg.role), LOG_INT("workers", run_workers ? nworkers : 0),
             LOG_STR("node_id", pool ? worker_pool_node_id(pool) : cfg.node_id),
             LOG_STR("audit_log", cfg.audit_log), LOG_BOOL("auth", cfg.auth_token[0] != 0),
             LOG_STR("version", CLEARBOX_VERSION));

    /* Wait for SIGTERM/SIGINT; meanwhile log the audit chain's head every
     * audit_head_interval_s, so a log store holds anchors that make a cut
     * tail of the audit log detectable (docs/audit.md). */
    int sig = 0;
    for (;;) {
        struct timespec ts = {.tv_sec = cfg.audit_head_interval_s};
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig > 0)
            break;
        if (sig < 0 && errno == EAGAIN && audit && audit_log_head(audit, err, sizeof err) < 0)
            log_warning(lg, "audit.head_failed", LOG_STR("message", err));
    }
    log_info(lg, "service.stopping", LOG_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"),
             LOG_INT("grace_s", cfg.grace_s));
    api_quiesce(api);
    pool_detach();
    int killed = pool ? worker_pool_stop(pool, cfg.grace_s) : 0;
    pool = NULL;
    api_stop(api);
    api = NULL;
    log_info(lg, "service.stopped", LOG_STR("listen", where),
             LOG_INT("requeued", killed > 0 ? killed : 0));
    ret = 0;
out:
    if (api)
        api_stop(api);
    if (pool) {
        pool_detach();
        worker_pool_stop(pool, 0);
    }
    audit_log_close(audit);
    sandbox_spawner_stop();
    telemetry_shutdown();
    return ret;
}

CLI_COMMAND(serve, 20, "run the evaluation service (HTTP API, queue, sandbox workers)", cmd_serve)
