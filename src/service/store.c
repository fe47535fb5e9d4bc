/* store.c - the backend-neutral half of the store: URL dispatch, argument
 * validation (backends trust what reaches them), the per-handle mutex, ids,
 * list cursors, the migration driver and the callback delivery rendering.
 *
 * Validation lives here, not in each backend, so SQLite and PostgreSQL refuse
 * exactly the same inputs with the same words. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/store.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"
#include "util/rand.h"
#include "util/timeutil.h"

static const char *const status_names[EVAL_STATUS_COUNT] = {
    [EVAL_QUEUED] = "queued",
    [EVAL_RUNNING] = "running",
    [EVAL_COMPLETED] = "completed",
    [EVAL_TIMEOUT] = "timeout",
    [EVAL_CPU_TIME_LIMIT] = "cpu_time_limit",
    [EVAL_MEMORY_LIMIT] = "memory_limit",
    [EVAL_PIDS_LIMIT] = "pids_limit",
    [EVAL_OUTPUT_LIMIT] = "output_limit",
    [EVAL_KILLED] = "killed",
    [EVAL_ERROR] = "error",
    [EVAL_CANCELLED] = "cancelled",
};

const char *store_status_name(enum eval_status s)
{
    if ((int)s < 0 || s >= EVAL_STATUS_COUNT)
        return NULL;
    return status_names[s];
}

int store_status_parse(const char *name, enum eval_status *out)
{
    if (name)
        for (int i = 0; i < EVAL_STATUS_COUNT; i++)
            if (!strcmp(name, status_names[i])) {
                *out = (enum eval_status)i;
                return 0;
            }
    return -EINVAL;
}

void store_record_clear(struct eval_record *r)
{
    if (!r)
        return;
    free(r->language);
    free(r->code);
    free(r->stdin_data);
    free(r->args_json);
    free(r->files_json);
    free(r->limits_json);
    free(r->metadata_json);
    free(r->submitter);
    free(r->idempotency_key);
    free(r->callback_url);
    free(r->traceparent);
    free(r->tracestate);
    free(r->worker_id);
    free(r->result_json);
    free(r->error_reason);
    free(r->error_message);
    free(r->callbacks_json);
    memset(r, 0, sizeof *r);
}

void store_records_free(struct eval_record *r, size_t n)
{
    if (!r)
        return;
    for (size_t i = 0; i < n; i++)
        store_record_clear(&r[i]);
    free(r);
}

/* ---- ids --------------------------------------------------------------------- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void store_id_new(char out[STORE_ID_LEN])
{
    /* 128 bits: 48-bit ms timestamp, 80 random bits; 26 base32 digits carry
     * 130 bits, the top two are zero (as in ULID). */
    uint64_t ms = time_now_ns() / 1000000u;
    uint8_t rnd[10];
    rand_id(rnd, sizeof rnd);
    uint8_t v[16];
    for (int i = 0; i < 6; i++)
        v[i] = (uint8_t)(ms >> (40 - 8 * i));
    memcpy(v + 6, rnd, sizeof rnd);
    /* Emit 5 bits at a time from the 130-bit big-endian number 00|v. */
    for (int i = 0; i < 26; i++) {
        int bit = i * 5 - 2; /* position of this digit's first bit in v */
        unsigned d = 0;
        for (int k = 0; k < 5; k++) {
            int b = bit + k;
            unsigned x = b < 0 ? 0 : (v[b / 8] >> (7 - b % 8)) & 1u;
            d = (d << 1) | x;
        }
        out[i] = crockford[d];
    }
    out[26] = '\0';
}

bool store_id_valid(const char *s)
{
    if (!s)
        return false;
    for (int i = 0; i < 26; i++)
        if (!s[i] || !strchr(crockford, s[i]))
            return false;
    return s[26] == '\0' && s[0] <= '7';
}

/* ---- validation helpers ---------------------------------------------------- */

static int check_text(const char *v, size_t max, bool required, const char *field, char *err,
                      size_t errlen)
{
    if (!v) {
        if (required)
            return err_set(err, errlen, -EINVAL, "%s is required", field);
        return 0;
    }
    size_t n = strnlen(v, max + 1);
    if (required && n == 0)
        return err_set(err, errlen, -EINVAL, "%s must not be empty", field);
    if (n > max)
        return err_set(err, errlen, -EINVAL, "%s is longer than %zu bytes", field, max);
    return 0;
}

static int check_id(const char *id, char *err, size_t errlen)
{
    if (!store_id_valid(id))
        return err_set(err, errlen, -ENOENT, "no evaluation with that id (ids are 26 characters)");
    return 0;
}

static int check_worker(const char *w, char *err, size_t errlen)
{
    return check_text(w, STORE_WORKER_ID_MAX, true, "worker_id", err, errlen);
}

static int check_lease(int64_t lease_ms, char *err, size_t errlen)
{
    if (lease_ms < 1 || lease_ms > 24LL * 3600 * 1000)
        return err_set(err, errlen, -EINVAL, "lease_ms must be 1 ms to 24 h, not %lld",
                       (long long)lease_ms);
    return 0;
}

/* "00-<32 hex>-<16 hex>-<2 hex>" (W3C trace context, version 00 layout). */
static bool traceparent_ok(const char *t)
{
    if (strlen(t) != 55)
        return false;
    for (int i = 0; i < 55; i++) {
        bool dash = i == 2 || i == 35 || i == 52;
        if (dash ? t[i] != '-' : !strchr("0123456789abcdef", t[i]))
            return false;
    }
    return true;
}

static int check_record(const struct eval_record *r, char *err, size_t errlen)
{
    TRY(check_text(r->language, STORE_LANGUAGE_MAX, true, "language", err, errlen));
    if (!r->code && r->code_len)
        return err_set(err, errlen, -EINVAL, "code is NULL with a length");
    if (r->code_len > STORE_CODE_MAX)
        return err_set(err, errlen, -EINVAL, "code is longer than %u bytes", STORE_CODE_MAX);
    if (!r->stdin_data && r->stdin_len)
        return err_set(err, errlen, -EINVAL, "stdin is NULL with a length");
    if (r->stdin_len > STORE_STDIN_MAX)
        return err_set(err, errlen, -EINVAL, "stdin is longer than %u bytes", STORE_STDIN_MAX);
    TRY(check_text(r->args_json, STORE_JSON_MAX, false, "args", err, errlen));
    TRY(check_text(r->files_json, STORE_JSON_MAX, false, "files", err, errlen));
    TRY(check_text(r->limits_json, STORE_JSON_MAX, false, "limits", err, errlen));
    TRY(check_text(r->metadata_json, STORE_JSON_MAX, false, "metadata", err, errlen));
    TRY(check_text(r->submitter, STORE_SUBMITTER_MAX, false, "metadata.submitter", err, errlen));
    if (r->priority < 0 || r->priority > 9)
        return err_set(err, errlen, -EINVAL, "priority must be 0-9, not %d", r->priority);
    TRY(check_text(r->idempotency_key, STORE_IDEMPOTENCY_KEY_MAX, false, "idempotency_key", err,
                   errlen));
    if (r->idempotency_key && !r->idempotency_key[0])
        return err_set(err, errlen, -EINVAL, "idempotency_key must not be empty");
    TRY(check_text(r->callback_url, STORE_URL_MAX, false, "callback_url", err, errlen));
    if (r->traceparent && !traceparent_ok(r->traceparent))
        return err_set(err, errlen, -EINVAL, "traceparent is not a W3C version-00 traceparent");
    TRY(check_text(r->tracestate, STORE_TRACESTATE_MAX, false, "tracestate", err, errlen));
    if (r->max_attempts < 0 || r->max_attempts > 100)
        return err_set(err, errlen, -EINVAL, "max_attempts must be 1-100, not %d",
                       r->max_attempts);
    if (r->created_ns < 0)
        return err_set(err, errlen, -EINVAL, "created_ns must not be negative");
    return 0;
}

/* ---- open / close ------------------------------------------------------------- */

static int store_migrate_locked(store_t *s, struct store_migration_state *st, size_t cap,
                                size_t *n, bool apply, char *err, size_t errlen);

int store_open(const char *url, const struct store_options *opt, store_t **out, char *err,
               size_t errlen)
{
    *out = NULL;
    if (!url || !*url)
        return err_set(err, errlen, -EINVAL, "database URL is empty (use sqlite:PATH)");
    if (strnlen(url, STORE_DB_URL_MAX + 1) > STORE_DB_URL_MAX)
        return err_set(err, errlen, -EINVAL, "database URL is longer than %d bytes",
                       STORE_DB_URL_MAX);
    struct store_options o = {0};
    if (opt)
        o = *opt;
    if (o.busy_timeout_ms < 0)
        return err_set(err, errlen, -EINVAL, "busy_timeout_ms must not be negative");
    if (o.busy_timeout_ms == 0)
        o.busy_timeout_ms = 5000;

    const struct store_ops *ops;
    const char *target;
    if (!strncmp(url, "sqlite:", 7)) {
        ops = &store_sqlite_ops;
        target = url + 7;
        if (!strncmp(target, "//", 2)) /* sqlite:///abs/path as well */
            target += 2;
        if (!*target)
            return err_set(err, errlen, -EINVAL, "sqlite: URL needs a path (sqlite:PATH)");
    } else if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
        ops = &store_pg_ops; /* libpq takes the whole URL */
        target = url;
    } else {
        return err_set(err, errlen, -EINVAL,
                       "unknown database URL scheme (use sqlite:PATH or postgres://...)");
    }

    store_t *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(err, errlen, -ENOMEM, "out of memory");
    s->ops = ops;
    pthread_mutex_init(&s->mu, NULL);
    int rc = ops->open(s, target, &o, err, errlen);
    if (rc < 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rc;
    }
    if (o.flags & STORE_OPEN_MIGRATE) {
        rc = store_migrate_locked(s, NULL, 0, NULL, true, err, errlen);
        if (rc < 0)
            goto fail;
    }
    if (!(o.flags & STORE_OPEN_NO_CHECK)) {
        int versions[64];
        int64_t when[64];
        size_t nv = 0;
        rc = ops->migrations_applied(s, versions, when, 64, &nv, err, errlen);
        if (rc < 0)
            goto fail;
        int have = nv ? versions[nv - 1] : 0;
        if (have != store_schema_latest()) {
            rc = err_set(err, errlen, -EPROTO,
                         have < store_schema_latest()
                             ? "database schema is at version %d, this clearbox needs %d: "
                               "run 'clearbox migrate --db URL'"
                             : "database schema is at version %d, newer than this clearbox "
                               "(%d): upgrade clearbox",
                         have, store_schema_latest());
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    ops->close(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}

void store_close(store_t *s)
{
    if (!s)
        return;
    s->ops->close(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *store_backend_name(const store_t *s) { return s->ops->name; }

/* Run one backend op under the handle's mutex. */
#define LOCKED(s, call)                    \
    ({                                     \
        pthread_mutex_lock(&(s)->mu);      \
        int locked__rc = (call);           \
        pthread_mutex_unlock(&(s)->mu);    \
        locked__rc;                        \
    })

int store_ping(store_t *s, char *err, size_t errlen)
{
    return LOCKED(s, s->ops->ping(s, err, errlen));
}

int store_check(store_t *s, char *err, size_t errlen)
{
    return LOCKED(s, s->ops->check(s, err, errlen));
}

/* ---- migrations ------------------------------------------------------------- */

static int store_migrate_locked(store_t *s, struct store_migration_state *st, size_t cap,
                                size_t *n, bool apply, char *err, size_t errlen)
{
    size_t nm;
    const struct store_migration *m = store_migrations(&nm);
    int versions[256];
    int64_t when[256];
    size_t nv = 0;
    TRY(s->ops->migrations_applied(s, versions, when, 256, &nv, err, errlen));
    for (size_t i = 0; i < nv; i++) {
        bool known = false;
        for (size_t k = 0; k < nm; k++)
            known |= m[k].version == versions[i];
        if (!known)
            return err_set(err, errlen, -EPROTO,
                           "database has schema version %d, unknown to this clearbox "
                           "(latest %d): upgrade clearbox",
                           versions[i], store_schema_latest());
    }
    int applied = 0;
    size_t out = 0;
    for (size_t k = 0; k < nm; k++) {
        int64_t at = 0;
        for (size_t i = 0; i < nv; i++)
            if (versions[i] == m[k].version)
                at = when[i] ? when[i] : 1;
        bool now = false;
        if (!at && apply) {
            int rc = s->ops->migration_apply(s, &m[k], err, errlen);
            if (rc < 0)
                return rc;
            at = (int64_t)time_now_ns();
            now = rc == 0; /* 1: another process applied it meanwhile */
            applied += now;
        }
        if (st && out < cap)
            st[out++] = (struct store_migration_state){m[k].version, m[k].name, at, now};
    }
    if (n)
        *n = out;
    return applied;
}

int store_migrate(store_t *s, struct store_migration_state *st, size_t cap, size_t *n,
                  char *err, size_t errlen)
{
    return LOCKED(s, store_migrate_locked(s, st, cap, n, true, err, errlen));
}

int store_migration_status(store_t *s, struct store_migration_state *st, size_t cap, size_t *n,
                           char *err, size_t errlen)
{
    return LOCKED(s, store_migrate_locked(s, st, cap, n, false, err, errlen));
}

/* ---- submit and read --------------------------------------------------------- */

int store_insert(store_t *s, const struct eval_record *r, char id_out[STORE_ID_LEN],
                 bool *existed, int64_t *queue_position, char *err, size_t errlen)
{
    bool dummy;
    int64_t pos_dummy;
    if (!r)
        return err_set(err, errlen, -EINVAL, "no record");
    TRY(check_record(r, err, errlen));
    id_out[0] = '\0';
    *(existed ? existed : &dummy) = false;
    return LOCKED(s, s->ops->insert(s, r, id_out, existed ? existed : &dummy,
                                    queue_position ? queue_position : &pos_dummy, err,
                                    errlen));
}

void store_insert_batch(store_t *s, struct store_batch_item *items, size_t n)
{
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_batch_item *it = &items[i];
        it->id[0] = '\0';
        it->err[0] = '\0';
        it->existed = false;
        it->queue_position = 0;
        it->rc = it->rec ? check_record(it->rec, it->err, sizeof it->err)
                         : err_set(it->err, sizeof it->err, -EINVAL, "no record");
        ok += it->rc == 0;
    }
    if (!ok)
        return;
    if (s->ops->insert_batch) {
        LOCKED(s, (s->ops->insert_batch(s, items, n), 0));
        return;
    }
    for (size_t i = 0; i < n; i++) { /* checked above: straight to the backend */
        struct store_batch_item *it = &items[i];
        if (it->rc == 0)
            it->rc = LOCKED(s, s->ops->insert(s, it->rec, it->id, &it->existed,
                                              &it->queue_position, it->err, sizeof it->err));
    }
}

int store_get(store_t *s, const char *id, struct eval_record *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    TRY(check_id(id, err, errlen));
    return LOCKED(s, s->ops->get(s, id, out, err, errlen));
}

/* The cursor is "v1." + 16 hex digits of the last item's position, so a
 * client cannot mistake it for a number; a future layout bumps the prefix. */
static void cursor_encode(int64_t key, char out[STORE_CURSOR_LEN])
{
    snprintf(out, STORE_CURSOR_LEN, "v1.%016llx", (unsigned long long)key);
}

static int cursor_decode(const char *c, int64_t *key, char *err, size_t errlen)
{
    if (strnlen(c, 20) != 19 || strncmp(c, "v1.", 3) != 0)
        return err_set(err, errlen, -EINVAL, "cursor is not one this server returned");
    uint64_t v = 0;
    for (int i = 3; i < 19; i++) {
        char ch = c[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return err_set(err, errlen, -EINVAL, "cursor is not one this server returned");
        v = v << 4 | (uint64_t)d;
    }
    if (v == 0 || v > INT64_MAX)
        return err_set(err, errlen, -EINVAL, "cursor is not one this server returned");
    *key = (int64_t)v;
    return 0;
}

int store_list(store_t *s, const struct store_list_query *q, struct eval_record **items,
               size_t *n, char next_cursor[STORE_CURSOR_LEN], char *err, size_t errlen)
{
    *items = NULL;
    *n = 0;
    struct store_list_query qq = q ? *q : (struct store_list_query){.status = -1};
    if (qq.status < -1 || qq.status >= EVAL_STATUS_COUNT)
        return err_set(err, errlen, -EINVAL, "unknown status filter");
    if (qq.limit == 0)
        qq.limit = 50;
    if (qq.limit < 1 || qq.limit > STORE_LIST_MAX)
        return err_set(err, errlen, -EINVAL, "limit must be 1-%d, not %d", STORE_LIST_MAX,
                       qq.limit);
    TRY(check_text(qq.submitter, STORE_SUBMITTER_MAX, false, "submitter", err, errlen));
    int64_t after = 0; /* 0: from the newest */
    if (qq.cursor && *qq.cursor)
        TRY(cursor_decode(qq.cursor, &after, err, errlen));
    next_cursor[0] = '\0'; /* only now: the caller may pass one buffer as both */
    int64_t last = 0;
    bool more = false;
    int rc = LOCKED(s, s->ops->list(s, &qq, after, items, n, &last, &more, err, errlen));
    if (rc < 0)
        return rc;
    if (more)
        cursor_encode(last, next_cursor);
    return 0;
}

/* ---- the queue --------------------------------------------------------------- */

int store_claim(store_t *s, const char *worker_id, int64_t lease_ms, struct eval_record *out,
                char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    TRY(check_worker(worker_id, err, errlen));
    TRY(check_lease(lease_ms, err, errlen));
    return LOCKED(s, s->ops->claim(s, worker_id, lease_ms, out, err, errlen));
}

int store_heartbeat(store_t *s, const char *id, const char *worker_id, int attempt,
                    int64_t lease_ms, bool *cancel_requested, char *err, size_t errlen)
{
    bool dummy;
    TRY(check_id(id, err, errlen));
    TRY(check_worker(worker_id, err, errlen));
    TRY(check_lease(lease_ms, err, errlen));
    if (attempt < 1)
        return err_set(err, errlen, -EINVAL, "attempt must be >= 1");
    *(cancel_requested ? cancel_requested : &dummy) = false;
    return LOCKED(s, s->ops->heartbeat(s, id, worker_id, attempt, lease_ms,
                                       cancel_requested ? cancel_requested : &dummy, err,
                                       errlen));
}

static int check_finish(const char *id, const char *worker_id, int attempt,
                        const struct store_outcome *o, char *err, size_t errlen)
{
    TRY(check_id(id, err, errlen));
    TRY(check_worker(worker_id, err, errlen));
    if (attempt < 1)
        return err_set(err, errlen, -EINVAL, "attempt must be >= 1");
    if (!o || !store_status_terminal(o->status))
        return err_set(err, errlen, -EINVAL, "finish needs a terminal status");
    TRY(check_text(o->result_json, STORE_JSON_MAX, false, "result", err, errlen));
    TRY(check_text(o->error_reason, 128, false, "error.reason", err, errlen));
    TRY(check_text(o->error_message, STORE_ERROR_MAX, false, "error.message", err, errlen));
    if (o->status == EVAL_ERROR && (!o->error_reason || !*o->error_reason))
        return err_set(err, errlen, -EINVAL, "status error needs error.reason");
    return 0;
}

int store_finish(store_t *s, const char *id, const char *worker_id, int attempt,
                 const struct store_outcome *o, char *err, size_t errlen)
{
    TRY(check_finish(id, worker_id, attempt, o, err, errlen));
    return LOCKED(s, s->ops->finish(s, id, worker_id, attempt, o, err, errlen));
}

int store_finish_claim(store_t *s, const char *id, const char *worker_id, int attempt,
                       const struct store_outcome *o, int64_t lease_ms,
                       struct eval_record *next, int *claim_rc, char *err, size_t errlen)
{
    memset(next, 0, sizeof *next);
    *claim_rc = -ECANCELED;
    TRY(check_finish(id, worker_id, attempt, o, err, errlen));
    TRY(check_lease(lease_ms, err, errlen));
    if (!s->ops->finish_claim) { /* checked above: straight to the backend, twice */
        TRY(LOCKED(s, s->ops->finish(s, id, worker_id, attempt, o, err, errlen)));
        char e2[ERR_LEN];
        *claim_rc = LOCKED(s, s->ops->claim(s, worker_id, lease_ms, next, e2, sizeof e2));
        return 0;
    }
    return LOCKED(s, s->ops->finish_claim(s, id, worker_id, attempt, o, lease_ms, next,
                                          claim_rc, err, errlen));
}

int store_cancel(store_t *s, const char *id, enum eval_status *now_status, char *err,
                 size_t errlen)
{
    enum eval_status dummy;
    TRY(check_id(id, err, errlen));
    return LOCKED(s, s->ops->cancel(s, id, now_status ? now_status : &dummy, err, errlen));
}

int store_requeue_expired(store_t *s, int64_t now_ns, struct store_requeue_counts *c, char *err,
                          size_t errlen)
{
    struct store_requeue_counts dummy;
    if (now_ns < 0)
        return err_set(err, errlen, -EINVAL, "now_ns must not be negative");
    if (!now_ns)
        now_ns = (int64_t)time_now_ns();
    c = c ? c : &dummy;
    memset(c, 0, sizeof *c);
    return LOCKED(s, s->ops->requeue(s, NULL, now_ns, c, err, errlen));
}

int store_requeue_worker(store_t *s, const char *worker_id, struct store_requeue_counts *c,
                         char *err, size_t errlen)
{
    struct store_requeue_counts dummy;
    TRY(check_worker(worker_id, err, errlen));
    c = c ? c : &dummy;
    memset(c, 0, sizeof *c);
    return LOCKED(s, s->ops->requeue(s, worker_id, (int64_t)time_now_ns(), c, err, errlen));
}

int store_queue_stats(store_t *s, struct store_queue_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    return LOCKED(s, s->ops->queue_stats(s, st, err, errlen));
}

int store_submitter_queued(store_t *s, const char *submitter, int64_t *n, char *err,
                           size_t errlen)
{
    *n = 0;
    TRY(check_text(submitter ? submitter : "", STORE_SUBMITTER_MAX, false, "submitter", err,
                   errlen));
    return LOCKED(s, s->ops->submitter_queued(s, submitter ? submitter : "", n, err, errlen));
}

/* ---- retention, callbacks, events -------------------------------------------- */

int store_purge(store_t *s, int64_t age_s, int64_t now_ns, int64_t *deleted, char *err,
                size_t errlen)
{
    int64_t dummy;
    deleted = deleted ? deleted : &dummy;
    *deleted = 0;
    if (age_s < 0 || age_s > 100LL * 365 * 86400)
        return err_set(err, errlen, -EINVAL, "retention age must be 0-100 years in seconds");
    if (now_ns < 0)
        return err_set(err, errlen, -EINVAL, "now_ns must not be negative");
    if (!now_ns)
        now_ns = (int64_t)time_now_ns();
    int64_t before = now_ns - age_s * 1000000000LL;
    return LOCKED(s, s->ops->purge(s, before, deleted, err, errlen));
}

/* The store renders a delivery attempt, so its shape is the same for every
 * backend and always valid JSON (the error text comes from the network).
 * storage must hold 2048 bytes; b->data is the NUL-terminated text. */
static int render_delivery(const struct store_callback_delivery *d, char *storage,
                           struct buf *b, char *err, size_t errlen)
{
    if (!d || d->attempt < 1)
        return err_set(err, errlen, -EINVAL, "delivery attempt must be >= 1");
    if (d->http_status < 0 || d->http_status > 999)
        return err_set(err, errlen, -EINVAL, "http_status must be 0-999");
    buf_init(b, storage, 2048, 2048 - 1);
    struct json w;
    json_init(&w, b);
    char ts[TIME_RFC3339_LEN];
    time_fmt_rfc3339((uint64_t)d->ts_ns, ts);
    json_obj_open(&w);
    json_kv_int(&w, "attempt", d->attempt);
    json_kv_str(&w, "ts", ts);
    json_key(&w, "http_status");
    if (d->http_status)
        json_int(&w, d->http_status);
    else
        json_null_value(&w);
    json_kv_int(&w, "duration_ms", d->duration_ms);
    json_kv_bool(&w, "ok", d->ok);
    json_key(&w, "error");
    if (d->error)
        json_strn_max(&w, d->error, strlen(d->error), 512, NULL);
    else
        json_null_value(&w);
    json_obj_close(&w);
    if (!json_ok(&w))
        return err_set(err, errlen, -E2BIG, "callback delivery record too large");
    return 0;
}

int store_callback_record(store_t *s, const char *id, const struct store_callback_delivery *d,
                          char *err, size_t errlen)
{
    TRY(check_id(id, err, errlen));
    char storage[2048];
    struct buf b;
    TRY(render_delivery(d, storage, &b, err, errlen));
    int rc = LOCKED(s, s->ops->callback_record(s, id, b.data, err, errlen));
    if (rc == -E2BIG)
        return err_set(err, errlen, -E2BIG, "evaluation %s already has %d callback deliveries", id,
                       STORE_CALLBACKS_MAX);
    return rc;
}

/* ---- the webhook outbox ------------------------------------------------------------ */

static const char *const callback_state_names[] = {
    [STORE_CALLBACK_NONE] = "none",
    [STORE_CALLBACK_PENDING] = "pending",
    [STORE_CALLBACK_DELIVERED] = "delivered",
    [STORE_CALLBACK_FAILED] = "failed",
};

const char *store_callback_state_name(enum store_callback_state st)
{
    if ((int)st < 0 || st > STORE_CALLBACK_FAILED)
        return NULL;
    return callback_state_names[st];
}

/* For backends: the state column's text (NULL = none) as the enum. */
int store__callback_state_parse(const char *name)
{
    if (name)
        for (int i = STORE_CALLBACK_PENDING; i <= STORE_CALLBACK_FAILED; i++)
            if (!strcmp(name, callback_state_names[i]))
                return i;
    return STORE_CALLBACK_NONE;
}

static int check_owner(const char *owner, char *err, size_t errlen)
{
    return check_text(owner, STORE_WORKER_ID_MAX, true, "callback owner", err, errlen);
}

int store_callback_claim(store_t *s, const char *owner, int64_t lease_ms,
                         struct eval_record *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    TRY(check_owner(owner, err, errlen));
    TRY(check_lease(lease_ms, err, errlen));
    int64_t now = (int64_t)time_now_ns();
    return LOCKED(s, s->ops->callback_claim(s, owner, lease_ms, now, out, err, errlen));
}

int store_callback_settle(store_t *s, const char *id, const char *owner,
                          const struct store_callback_delivery *d,
                          enum store_callback_state next, int64_t next_ns, char *err,
                          size_t errlen)
{
    TRY(check_id(id, err, errlen));
    TRY(check_owner(owner, err, errlen));
    if (next != STORE_CALLBACK_PENDING && next != STORE_CALLBACK_DELIVERED &&
        next != STORE_CALLBACK_FAILED)
        return err_set(err, errlen, -EINVAL,
                       "a settled delivery is pending, delivered or failed");
    if (next == STORE_CALLBACK_PENDING && next_ns <= 0)
        return err_set(err, errlen, -EINVAL, "a pending delivery needs its next due time");
    if (next != STORE_CALLBACK_PENDING)
        next_ns = 0;
    char storage[2048];
    struct buf b;
    TRY(render_delivery(d, storage, &b, err, errlen));
    return LOCKED(s, s->ops->callback_settle(s, id, owner, d->attempt, b.data,
                                             store_callback_state_name(next), next_ns, err,
                                             errlen));
}

int store_callback_release(store_t *s, const char *owner, char *err, size_t errlen)
{
    TRY(check_owner(owner, err, errlen));
    return LOCKED(s, s->ops->callback_release(s, owner, err, errlen));
}

int store_callback_stats(store_t *s, struct store_callback_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    return LOCKED(s, s->ops->callback_stats(s, st, err, errlen));
}

int store_events(store_t *s, const char *id, int64_t after_seq, struct store_event *ev,
                 size_t cap, char *err, size_t errlen)
{
    TRY(check_id(id, err, errlen));
    if (after_seq < 0)
        return err_set(err, errlen, -EINVAL, "Last-Event-ID must be a non-negative number");
    if (cap == 0 || cap > 10000)
        return err_set(err, errlen, -EINVAL, "events: cap must be 1-10000");
    int n = LOCKED(s, s->ops->events(s, id, after_seq, ev, cap, err, errlen));
    if (n == -EAGAIN) { /* it exists: nothing new */
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    return n; /* a count, -ENOENT or a database error */
}

/* ---- for the backends -------------------------------------------------------- */

int store__why_not(const char *id, bool found, enum eval_status cur, int code,
                   enum eval_status *status, const char *what, char *err, size_t errlen)
{
    if (!found)
        return err_set(err, errlen, -ENOENT, "no evaluation %s", id);
    if (status)
        *status = cur;
    return err_set(err, errlen, code, "%s: evaluation %s is %s", what, id, store_status_name(cur));
}

int store__not_leased(const char *id, enum eval_status cur, const char *worker_id, int attempt,
                      char *err, size_t errlen)
{
    return err_set(err, errlen, -ESTALE,
                   "finish: evaluation %s is %s and no longer leased by worker %s attempt %d", id,
                   store_status_name(cur), worker_id, attempt);
}
