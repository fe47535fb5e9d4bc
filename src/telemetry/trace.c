/* trace.c - spans, the current span, W3C Trace Context and the batch span
 * processor (see trace.h).
 *
 * Memory: a span being recorded is one fixed-size slot (its attributes,
 * events and strings live inside it, in a small arena), so setting an
 * attribute never allocates. Slots come from a per-thread cache (refilled
 * from a shared stack of pointers) and go back to it as soon as the span
 * ends: the slot never leaves the thread that used it last, so the next span
 * finds its lines hot in this CPU's cache.
 *
 * Ending a sampled span copies what it holds (the view, the used attributes
 * and events, the used part of the arena: ~370 bytes for four attributes)
 * into a compact record at the tail of the thread's record ring, a byte ring
 * with one producer (the thread) and one consumer (the export thread). Why:
 * the export thread reads every exported byte, which leaves those cache lines
 * shared with its CPU, and the producer must take them back before writing
 * there again. When the exporter read the slots themselves, the next spans
 * reused those slots and paid for it on about nine scattered lines each.
 * Measured (span + 4 attributes, 256 per flush, threads pinned): 215 ns with
 * both threads on one CPU, 365-400 ns on two, and 212 ns on two when the
 * exporter was made to skip reading the slots. With the record ring: 230-240
 * ns on one CPU (the copy), 235-250 ns on two. The ring is written in order,
 * five or six dense lines per span, and the lines TRACE_RING_AHEAD bytes
 * ahead are prefetched for writing (worth ~30 ns on two CPUs). The export
 * thread gives ring space back by storing the end of each exported record in
 * the ring's head (release); the producer reads it (acquire) only when the
 * space it remembers runs out. A thread's ring outlives the thread: at exit
 * it goes on a free list, and the next thread that ends a span takes it
 * over, pending records and all.
 *
 * Batch span processor: ending a sampled span takes one short mutex section
 * (push the record's address on a queue of OTEL_BSP_MAX_QUEUE_SIZE). A full
 * queue or a full record ring drops the span and counts it; the producer
 * never waits for the exporter. One export thread wakes when a batch is full,
 * the schedule delay passed, a flush was asked for, or shutdown began, and
 * hands up to OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans to each exporter with a
 * deadline of OTEL_BSP_EXPORT_TIMEOUT. The mutex costs ~10 ns uncontended
 * (measured: removing it changed neither the one-CPU nor the two-CPU figure). */
#include "telemetry/trace.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "telemetry/log.h"
#include "telemetry/otlp.h"
#include "util/err.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/rand.h"
#include "util/timeutil.h"

/* telemetry__current itself is defined in log.c (the logger reads it). */

#define TRACE_SLOTS_CACHE 1024 /* idle slots kept in the shared stack (~9 MiB) */
#define TRACE_EXPORTERS_MAX 2

/* A thread's record ring: (queue + batch) x TRACE_RING_PER_SPAN bytes rounded
 * up to a power of two within [MIN, MAX]; 1 MiB for the default 2048 + 512.
 * Enough for every queued span at ~384 bytes each (four attributes take
 * ~370); spans near the bounds (up to ~9 KiB) fill it sooner and are dropped
 * and counted like spans that find the queue full. */
#define TRACE_RING_PER_SPAN 384
#define TRACE_RING_MIN (64u * 1024)
#define TRACE_RING_MAX (64u * 1024 * 1024)
#define TRACE_RING_AHEAD 1024 /* bytes ahead of the tail prefetched for writing */

struct trace_span {
    bool recording; /* sampled: attributes kept, exported at end */
    uint32_t arena_used;
    struct trace_span_data d; /* the view; end copies it into a record */
    struct trace_attr_data attrs[TRACE_ATTR_MAX];
    uint16_t klen[TRACE_ATTR_MAX]; /* key lengths, so a lookup rarely compares bytes */
    struct trace_event_data events[TRACE_EVENT_MAX];
    struct trace_attr_data event_attrs[TRACE_EVENT_ATTR_MAX];
    char arena[TRACE_ARENA_BYTES];
};

/* A thread's record ring. Positions grow without wrapping (uint64); the
 * byte at position p lives at buf[p & (cap - 1)]. */
struct span_ring {
    alignas(64) _Atomic uint64_t head; /* export thread: space before this is free */
    alignas(64) uint64_t tail;         /* owner thread: end of the last queued record */
    uint64_t head_seen;                /* owner thread: head as last read */
    size_t cap;                        /* bytes, a power of two */
    char *buf;
    struct span_ring *next; /* on the free list */
};

/* An ended span as the export thread sees it: d's pointers point into the
 * record itself. Followed by attrs, events, event_attrs, then the strings. */
struct trace_rec {
    struct span_ring *ring;
    uint64_t end; /* ring position just past this record */
    struct trace_span_data d;
};

/* ---- global state ----------------------------------------------------- */

static struct {
    /* configuration, written by trace_init before the export thread starts */
    bool disabled;
    enum trace_sampler sampler;
    double ratio;
    uint32_t max_queue, delay_ms, max_batch, export_timeout_ms;

    /* slot pool */
    pthread_mutex_t pool_mu;
    struct trace_span **pool;
    struct span_ring *free_rings; /* rings of threads that exited */
    size_t nfree, pool_cap;
    size_t cache_max; /* idle slots kept: TRACE_SLOTS_CACHE */

    /* queue + export thread */
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* export thread waits here */
    pthread_cond_t done;      /* flushers wait here */
    struct trace_rec **queue; /* records waiting for export, max_queue */
    size_t head, count;       /* queue[head] is the oldest */
    bool running;             /* export thread up, queue accepts spans */
    bool stop;
    uint64_t stop_deadline; /* mono ns: shutdown gives up exporting after this */
    bool flush_wanted;
    bool exporting;
    pthread_t thread;
    const struct trace_span_data **views; /* export thread's scratch, max_batch */
    otlp_exporter_t *exporters[TRACE_EXPORTERS_MAX];
    size_t nexporters;
    bool initialised;
} g = {
    .sampler = TRACE_SAMPLER_PARENTBASED_ALWAYS_ON,
    .ratio = 1.0,
    .max_queue = 2048,
    .delay_ms = 5000,
    .max_batch = 512,
    .export_timeout_ms = 30000,
    .cache_max = TRACE_SLOTS_CACHE,
    .pool_mu = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static atomic_uint_fast64_t g_dropped, g_exported, g_export_failed;
static atomic_bool g_accepting;                      /* mirrors g.running, read without the lock */
static _Atomic size_t g_ring_bytes = TRACE_RING_MIN; /* size of a new record ring */

/* The span made current on this thread (for its tracestate), or NULL. */
static __thread trace_span_t *t_cur_span;

uint64_t trace_dropped_total(void)
{
    return atomic_load_explicit(&g_dropped, memory_order_relaxed);
}
uint64_t trace_exported_total(void)
{
    return atomic_load_explicit(&g_exported, memory_order_relaxed);
}
uint64_t trace_export_failed_total(void)
{
    return atomic_load_explicit(&g_export_failed, memory_order_relaxed);
}

/* ---- slot pool ---------------------------------------------------------- */

/* Each thread keeps a few idle slots of its own (an array, so taking one
 * reads no slot memory), refilled TRACE_TLS_REFILL at a time from the shared
 * stack g.pool; beyond TRACE_TLS_MAX a slot goes back to the stack, beyond
 * cache_max to malloc. A thread's cache and ring are given back when it exits
 * (the key's destructor). Slots leave the thread only that way or when a span
 * is handed to another thread and ends there. */
#define TRACE_TLS_MAX 64
#define TRACE_TLS_REFILL 32

static __thread struct {
    trace_span_t *slots[TRACE_TLS_MAX];
    unsigned n;
    bool registered;        /* the exit destructor is set for this thread */
    struct span_ring *ring; /* this thread's record ring, once it ended a span */
} t_cache;

static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void pool_put_array(trace_span_t **sps, size_t n);

static void cache_release(void *arg)
{
    (void)arg;
    unsigned n = t_cache.n;
    t_cache.n = 0;
    pool_put_array(t_cache.slots, n);
    struct span_ring *r = t_cache.ring;
    t_cache.ring = NULL;
    if (r) { /* the export thread may still read its records: keep it */
        pthread_mutex_lock(&g.pool_mu);
        r->next = g.free_rings;
        g.free_rings = r;
        pthread_mutex_unlock(&g.pool_mu);
    }
}

static void cache_key_make(void)
{
    pthread_key_create(&cache_key, cache_release);
}

static void cache_register(void)
{
    pthread_once(&cache_key_once, cache_key_make);
    pthread_setspecific(cache_key, &t_cache); /* non-NULL, so the destructor runs */
    t_cache.registered = true;
}

static trace_span_t *slot_get(void)
{
    if (!t_cache.n) {
        if (!t_cache.registered)
            cache_register();
        pthread_mutex_lock(&g.pool_mu);
        size_t k = g.nfree < TRACE_TLS_REFILL ? g.nfree : TRACE_TLS_REFILL;
        g.nfree -= k;
        if (k)
            memcpy(t_cache.slots, g.pool + g.nfree, k * sizeof *g.pool);
        pthread_mutex_unlock(&g.pool_mu);
        t_cache.n = (unsigned)k;
        if (!k)
            return malloc(sizeof(trace_span_t));
    }
    return t_cache.slots[--t_cache.n];
}

/* Under pool_mu: room for want more pointers (grows the array up to cache_max). */
static size_t pool_room(size_t want)
{
    if (g.nfree + want > g.pool_cap && g.pool_cap < g.cache_max) {
        size_t cap = g.pool_cap ? g.pool_cap : 256;
        while (cap < g.nfree + want && cap < g.cache_max)
            cap *= 2;
        if (cap > g.cache_max)
            cap = g.cache_max;
        trace_span_t **p = realloc(g.pool, cap * sizeof *p);
        if (p) {
            g.pool = p;
            g.pool_cap = cap;
        }
    }
    size_t room = g.pool_cap - g.nfree;
    return room < want ? room : want;
}

/* Give n slots to the shared stack (beyond its cap: to malloc). */
static void pool_put_array(trace_span_t **sps, size_t n)
{
    pthread_mutex_lock(&g.pool_mu);
    size_t k = pool_room(n);
    if (k)
        memcpy(g.pool + g.nfree, sps, k * sizeof *sps);
    g.nfree += k;
    pthread_mutex_unlock(&g.pool_mu);
    for (size_t i = k; i < n; i++)
        free(sps[i]);
}

/* A slot the calling thread is done with (its span ended). */
static void slot_put(trace_span_t *sp)
{
    if (t_cache.registered && t_cache.n < TRACE_TLS_MAX) {
        t_cache.slots[t_cache.n++] = sp;
        return;
    }
    pool_put_array(&sp, 1);
}

/* After the export thread stopped: free the idle slots, and the rings of
 * exited threads (nothing reads them any more; a later span takes a new one). */
static void pool_drain(void)
{
    pthread_mutex_lock(&g.pool_mu);
    trace_span_t **p = g.pool;
    size_t n = g.nfree;
    g.pool = NULL;
    g.nfree = g.pool_cap = 0;
    struct span_ring *r = g.free_rings;
    g.free_rings = NULL;
    pthread_mutex_unlock(&g.pool_mu);
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    free(p);
    while (r) {
        struct span_ring *next = r->next;
        free(r->buf);
        free(r);
        r = next;
    }
}

/* ---- record rings --------------------------------------------------------- */

static struct span_ring *ring_new(size_t cap)
{
    struct span_ring *r = aligned_alloc(64, (sizeof *r + 63) & ~(size_t)63);
    char *buf = aligned_alloc(64, cap);
    if (!r || !buf) {
        free(r);
        free(buf);
        return NULL;
    }
    memset(r, 0, sizeof *r);
    atomic_init(&r->head, 0);
    r->cap = cap;
    r->buf = buf;
    return r;
}

/* The calling thread's ring, with cap >= the configured size when it can be
 * had: a ring that is too small is swapped while empty (the export thread no
 * longer touches it once head reached tail). NULL when out of memory. */
static struct span_ring *ring_mine(void)
{
    size_t want = atomic_load_explicit(&g_ring_bytes, memory_order_relaxed);
    struct span_ring *r = t_cache.ring;
    if (r && (r->cap >= want || atomic_load_explicit(&r->head, memory_order_acquire) != r->tail))
        return r;
    if (!t_cache.registered)
        cache_register();
    if (!r) {
        pthread_mutex_lock(&g.pool_mu);
        r = g.free_rings;
        if (r)
            g.free_rings = r->next;
        pthread_mutex_unlock(&g.pool_mu);
        if (r) {
            t_cache.ring = r;
            return ring_mine(); /* swapped below if too small and empty */
        }
    }
    struct span_ring *nr = ring_new(want);
    if (!nr)
        return r; /* keep the small one */
    if (r) {
        free(r->buf);
        free(r);
    }
    t_cache.ring = nr;
    return nr;
}

/* Bytes of the record for sp (a multiple of 8). */
static size_t rec_len(const trace_span_t *sp)
{
    const struct trace_span_data *d = &sp->d;
    size_t n = sizeof(struct trace_rec) + d->nattrs * sizeof(struct trace_attr_data) +
               d->nevents * sizeof(struct trace_event_data) +
               d->nevent_attrs * sizeof(struct trace_attr_data) + sp->arena_used;
    return (n + 7) & ~(size_t)7;
}

/* A string of sp's arena, moved to the copy of the arena at ar. */
static const char *rebase(const trace_span_t *sp, const char *ar, const char *s)
{
    uintptr_t p = (uintptr_t)s, a = (uintptr_t)sp->arena;
    return p - a < TRACE_ARENA_BYTES ? ar + (p - a) : s;
}

static void rebase_attrs(const trace_span_t *sp, const char *ar, struct trace_attr_data *a,
                         uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        a[i].key = rebase(sp, ar, a[i].key);
        if (a[i].type == TRACE_ATTR_STR)
            a[i].v.s = rebase(sp, ar, a[i].v.s);
    }
}

static void rec_fill(struct trace_rec *rec, const trace_span_t *sp)
{
    const struct trace_span_data *d = &sp->d;
    char *p = (char *)(rec + 1);
    rec->d = *d;
    struct trace_attr_data *attrs = (struct trace_attr_data *)p;
    memcpy(attrs, sp->attrs, d->nattrs * sizeof *attrs);
    p += d->nattrs * sizeof *attrs;
    struct trace_event_data *events = (struct trace_event_data *)p;
    struct trace_attr_data *eattrs = (struct trace_attr_data *)p;
    if (d->nevents) { /* rare: skip the calls otherwise */
        memcpy(events, sp->events, d->nevents * sizeof *events);
        p += d->nevents * sizeof *events;
        eattrs = (struct trace_attr_data *)p;
        memcpy(eattrs, sp->event_attrs, d->nevent_attrs * sizeof *eattrs);
        p += d->nevent_attrs * sizeof *eattrs;
    }
    memcpy(p, sp->arena, sp->arena_used);
    rec->d.attrs = attrs;
    rec->d.events = events;
    rec->d.event_attrs = eattrs;
    rec->d.name = rebase(sp, p, d->name);
    rec->d.tracestate = rebase(sp, p, d->tracestate);
    rec->d.status_msg = rebase(sp, p, d->status_msg);
    rebase_attrs(sp, p, attrs, d->nattrs);
    for (uint32_t i = 0; i < d->nevents; i++)
        events[i].name = rebase(sp, p, events[i].name);
    rebase_attrs(sp, p, eattrs, d->nevent_attrs);
}

/* ---- span arena ----------------------------------------------------------- */

/* Copy at most max bytes of s (cut on a UTF-8 boundary) into the span's arena;
 * NULL when the arena is full. */
static const char *arena_put(trace_span_t *sp, const char *s, size_t n, size_t max,
                             uint32_t *outlen)
{
    if (!s) {
        s = "";
        n = 0;
    }
    if (n > max)
        n = json_utf8_cut(s, n, max);
    if (n + 1 > TRACE_ARENA_BYTES - sp->arena_used)
        return NULL;
    char *p = sp->arena + sp->arena_used;
    memcpy(p, s, n);
    p[n] = '\0';
    sp->arena_used += (uint32_t)n + 1;
    if (outlen)
        *outlen = (uint32_t)n;
    return p;
}

/* ---- spans ---------------------------------------------------------------- */

/* A random non-zero id of words x 8 bytes (rand_id's rule, without its
 * byte loops: this runs twice per span). */
static void id_new(uint8_t *out, int words)
{
    uint64_t w[2], any;
    do {
        any = 0;
        for (int i = 0; i < words; i++)
            any |= w[i] = rand_u64();
    } while (!any);
    memcpy(out, w, (size_t)words * 8);
}

static bool ids_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

bool trace_context_is_valid(const struct trace_context *ctx)
{
    return ctx && !ids_zero(ctx->trace_id, 16) && !ids_zero(ctx->span_id, 8);
}

trace_span_t *trace_span_start_at(const char *name, enum trace_span_kind kind,
                                  const struct trace_context *parent, uint64_t start_ns,
                                  unsigned flags)
{
    trace_span_t *sp = slot_get();
    if (!sp) {
        atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
        return NULL;
    }
    struct trace_span_data *d = &sp->d;
    sp->arena_used = 0;
    memset(d, 0, sizeof *d);
    d->attrs = sp->attrs;
    d->events = sp->events;
    d->event_attrs = sp->event_attrs;
    d->tracestate = "";
    d->status_msg = "";

    /* Who is the parent: explicit, else the thread's current span. */
    const char *tracestate = "";
    struct trace_context cur;
    if (parent && !trace_context_is_valid(parent))
        parent = NULL;
    if (parent) {
        tracestate = parent->tracestate; /* bounded below: strnlen */
    } else if (!(flags & TRACE_START_ROOT) && telemetry__current.set) {
        memcpy(cur.trace_id, telemetry__current.trace_id, 16);
        memcpy(cur.span_id, telemetry__current.span_id, 8);
        cur.flags = telemetry__current.flags;
        cur.remote = false;
        cur.tracestate[0] = '\0';
        if (trace_context_is_valid(&cur)) {
            parent = &cur;
            if (t_cur_span && memcmp(t_cur_span->d.span_id, cur.span_id, 8) == 0)
                tracestate = t_cur_span->d.tracestate;
        }
    }

    if (parent) {
        memcpy(d->trace_id, parent->trace_id, 16);
        memcpy(d->parent_span_id, parent->span_id, 8);
        d->has_parent = true;
        d->parent_remote = parent->remote;
    } else {
        id_new(d->trace_id, 2);
    }
    id_new(d->span_id, 1);

    bool sampled;
    if (g.disabled)
        sampled = false;
    else
        sampled = trace_sampler_decide(g.sampler, g.ratio, parent, d->trace_id);
    if (g.disabled && parent) /* a disabled SDK passes the caller's decision on */
        d->flags = parent->flags & TRACE_FLAG_SAMPLED;
    else
        d->flags = sampled ? TRACE_FLAG_SAMPLED : 0;
    sp->recording = sampled;
    d->kind =
        (kind >= TRACE_KIND_INTERNAL && kind <= TRACE_KIND_CONSUMER) ? kind : TRACE_KIND_INTERNAL;
    if (tracestate[0])
        d->tracestate = arena_put(sp, tracestate, strnlen(tracestate, TRACE_STATE_MAX + 1),
                                  TRACE_STATE_MAX, NULL);
    if (!d->tracestate)
        d->tracestate = "";
    if (sampled) {
        d->name = arena_put(sp, name, name ? strlen(name) : 0, TRACE_NAME_MAX, NULL);
        d->start_ns = start_ns ? start_ns : time_now_ns();
    }
    if (!d->name)
        d->name = "";
    return sp;
}

trace_span_t *trace_span_start(const char *name, enum trace_span_kind kind,
                               const struct trace_context *parent)
{
    return trace_span_start_at(name, kind, parent, 0, 0);
}

/* The slot for attribute key (an existing one is overwritten, as OTel does). */
static struct trace_attr_data *attr_slot(trace_span_t *sp, const char *key)
{
    if (!sp || !sp->recording || !key)
        return NULL;
    struct trace_span_data *d = &sp->d;
    size_t kn = strlen(key);
    if (kn > TRACE_KEY_MAX)
        kn = json_utf8_cut(key, kn, TRACE_KEY_MAX);
    for (uint32_t i = 0; i < d->nattrs; i++)
        if (sp->klen[i] == kn && memcmp(sp->attrs[i].key, key, kn) == 0)
            return &sp->attrs[i];
    if (d->nattrs >= TRACE_ATTR_MAX) {
        d->dropped_attrs++;
        return NULL;
    }
    struct trace_attr_data *a = &sp->attrs[d->nattrs];
    a->key = arena_put(sp, key, kn, TRACE_KEY_MAX, NULL);
    if (!a->key) {
        d->dropped_attrs++;
        return NULL;
    }
    a->event = 0;
    sp->klen[d->nattrs] = (uint16_t)kn;
    d->nattrs++;
    return a;
}

void trace_span_set_strn(trace_span_t *sp, const char *key, const char *val, size_t n)
{
    struct trace_attr_data *a = attr_slot(sp, key);
    if (!a)
        return;
    uint32_t len = 0;
    const char *s = arena_put(sp, val, val ? n : 0, TRACE_VALUE_MAX, &len);
    if (!s) { /* no room for the value: keep the key with "" rather than a stale value */
        s = "";
        len = 0;
        sp->d.dropped_attrs++;
    }
    a->type = TRACE_ATTR_STR;
    a->v.s = s;
    a->len = len;
}

void trace_span_set_str(trace_span_t *sp, const char *key, const char *val)
{
    trace_span_set_strn(sp, key, val, val ? strlen(val) : 0);
}

void trace_span_set_int(trace_span_t *sp, const char *key, int64_t val)
{
    struct trace_attr_data *a = attr_slot(sp, key);
    if (a) {
        a->type = TRACE_ATTR_INT;
        a->v.i = val;
    }
}

void trace_span_set_double(trace_span_t *sp, const char *key, double val)
{
    struct trace_attr_data *a = attr_slot(sp, key);
    if (a) {
        a->type = TRACE_ATTR_DOUBLE;
        a->v.d = val;
    }
}

void trace_span_set_bool(trace_span_t *sp, const char *key, bool val)
{
    struct trace_attr_data *a = attr_slot(sp, key);
    if (a) {
        a->type = TRACE_ATTR_BOOL;
        a->v.b = val;
    }
}

void trace_span_add_event(trace_span_t *sp, const char *name, uint64_t time_ns,
                          const struct trace_attr *attrs, size_t n)
{
    if (!sp || !sp->recording)
        return;
    struct trace_span_data *d = &sp->d;
    if (d->nevents >= TRACE_EVENT_MAX) {
        d->dropped_events++;
        return;
    }
    struct trace_event_data *ev = &sp->events[d->nevents];
    ev->name = arena_put(sp, name, name ? strlen(name) : 0, TRACE_NAME_MAX, NULL);
    if (!ev->name) {
        d->dropped_events++;
        return;
    }
    ev->time_ns = time_ns ? time_ns : time_now_ns();
    ev->dropped_attrs = 0;
    for (size_t i = 0; i < n; i++) {
        const struct trace_attr *in = &attrs[i];
        struct trace_attr_data *a = &sp->event_attrs[d->nevent_attrs];
        if (d->nevent_attrs >= TRACE_EVENT_ATTR_MAX || !in->key ||
            !(a->key = arena_put(sp, in->key, strlen(in->key), TRACE_KEY_MAX, NULL))) {
            ev->dropped_attrs++;
            continue;
        }
        a->event = (uint16_t)d->nevents;
        a->type = in->type;
        a->len = 0;
        switch (in->type) {
        case TRACE_ATTR_STR:
            a->v.s =
                arena_put(sp, in->v.s, in->v.s ? strlen(in->v.s) : 0, TRACE_VALUE_MAX, &a->len);
            if (!a->v.s) {
                ev->dropped_attrs++;
                continue;
            }
            break;
        case TRACE_ATTR_INT: a->v.i = in->v.i; break;
        case TRACE_ATTR_DOUBLE: a->v.d = in->v.d; break;
        case TRACE_ATTR_BOOL: a->v.b = in->v.b; break;
        default: ev->dropped_attrs++; continue;
        }
        d->nevent_attrs++;
    }
    d->nevents++;
}

void trace_span_set_status(trace_span_t *sp, enum trace_status st, const char *msg)
{
    if (!sp || !sp->recording || sp->d.status == TRACE_STATUS_OK)
        return;
    if (st == TRACE_STATUS_OK) {
        sp->d.status = TRACE_STATUS_OK;
        sp->d.status_msg = "";
    } else if (st == TRACE_STATUS_ERROR) {
        sp->d.status = TRACE_STATUS_ERROR;
        const char *m = msg ? arena_put(sp, msg, strlen(msg), TRACE_STATUS_MSG_MAX, NULL) : "";
        sp->d.status_msg = m ? m : "";
    }
}

void trace_span_context(const trace_span_t *sp, struct trace_context *out)
{
    memset(out, 0, offsetof(struct trace_context, tracestate) + 1);
    out->tracestate[0] = '\0';
    if (!sp)
        return;
    memcpy(out->trace_id, sp->d.trace_id, 16);
    memcpy(out->span_id, sp->d.span_id, 8);
    out->flags = sp->d.flags;
    out->remote = false;
    size_t n = strlen(sp->d.tracestate);
    memcpy(out->tracestate, sp->d.tracestate, n + 1);
}

bool trace_span_is_sampled(const trace_span_t *sp)
{
    return sp && (sp->d.flags & TRACE_FLAG_SAMPLED);
}

const struct trace_span_data *trace_span_data(const trace_span_t *sp)
{
    return sp ? &sp->d : NULL;
}

/* Copy sp into a record on the thread's ring and queue it for export (the
 * slot stays with the caller). Drops and counts when the queue or the ring
 * is full; never waits for the export thread. */
static void queue_push(const trace_span_t *sp)
{
    /* Without an export thread (no exporter, or shut down) no lock at all. */
    if (!atomic_load_explicit(&g_accepting, memory_order_relaxed))
        return;
    struct span_ring *r = ring_mine();
    if (!r)
        goto drop;
    size_t len = rec_len(sp);
    uint64_t pos = r->tail;
    size_t off = (size_t)(pos & (r->cap - 1));
    if (off + len > r->cap) { /* a record never wraps: skip to the start */
        pos += r->cap - off;
        off = 0;
    }
    if (pos + len - r->head_seen > r->cap) {
        r->head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
        if (pos + len - r->head_seen > r->cap)
            goto drop;
    }
    struct trace_rec *rec = (struct trace_rec *)(r->buf + off);
    /* Ask for the lines the next records will use: the export thread's reads
     * left them shared with its CPU. */
    for (size_t a = TRACE_RING_AHEAD; a < TRACE_RING_AHEAD + 384; a += 64)
        __builtin_prefetch(r->buf + ((off + len + a) & (r->cap - 1)), 1, 3);
    rec->ring = r;
    rec->end = pos + len;
    rec_fill(rec, sp);

    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    if (g.count >= g.max_queue) {
        pthread_mutex_unlock(&g.mu);
        goto drop;
    }
    g.queue[(g.head + g.count) % g.max_queue] = rec;
    g.count++;
    if (g.count == g.max_batch) /* once per batch, not per span */
        pthread_cond_signal(&g.wake);
    pthread_mutex_unlock(&g.mu);
    r->tail = pos + len; /* only now: a dropped record's space is used again */
    return;
drop:
    atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
}

void trace_span_end_at(trace_span_t *sp, uint64_t end_ns)
{
    if (!sp)
        return;
    if (t_cur_span == sp)
        t_cur_span = NULL;
    if (!sp->recording) {
        slot_put(sp);
        return;
    }
    sp->d.end_ns = end_ns ? end_ns : time_now_ns();
    if (sp->d.end_ns < sp->d.start_ns)
        sp->d.end_ns = sp->d.start_ns;
    queue_push(sp);
    slot_put(sp);
}

void trace_span_end(trace_span_t *sp)
{
    trace_span_end_at(sp, 0);
}

/* ---- current span ------------------------------------------------------------ */

void trace_span_make_current(trace_span_t *sp, struct trace_scope *scope)
{
    scope->prev = telemetry__current;
    scope->prev_span = t_cur_span;
    if (sp) {
        memcpy(telemetry__current.trace_id, sp->d.trace_id, 16);
        memcpy(telemetry__current.span_id, sp->d.span_id, 8);
        telemetry__current.flags = sp->d.flags;
        telemetry__current.set = true;
    } else {
        memset(&telemetry__current, 0, sizeof telemetry__current);
    }
    t_cur_span = sp;
}

void trace_span_restore(struct trace_scope *scope)
{
    telemetry__current = scope->prev;
    t_cur_span = scope->prev_span;
}

bool trace_current_context(struct trace_context *out)
{
    memset(out, 0, offsetof(struct trace_context, tracestate) + 1);
    if (!telemetry__current.set)
        return false;
    memcpy(out->trace_id, telemetry__current.trace_id, 16);
    memcpy(out->span_id, telemetry__current.span_id, 8);
    out->flags = telemetry__current.flags;
    if (t_cur_span && memcmp(t_cur_span->d.span_id, out->span_id, 8) == 0)
        memcpy(out->tracestate, t_cur_span->d.tracestate, strlen(t_cur_span->d.tracestate) + 1);
    return true;
}

/* ---- W3C Trace Context ----------------------------------------------------- */

static int lowhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int lowhex_decode(const char *s, size_t nbytes, uint8_t *out)
{
    for (size_t i = 0; i < nbytes; i++) {
        int hi = lowhex(s[2 * i]), lo = lowhex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

int trace_traceparent_parse(const char *s, size_t n, struct trace_context *out)
{
    if (!s || !out)
        return -EINVAL;
    trim(&s, &n);
    if (n < TRACE_TRACEPARENT_LEN)
        return -EINVAL;
    uint8_t ver, tid[16], sid[8], fl;
    if (lowhex_decode(s, 1, &ver) < 0 || ver == 0xff)
        return -EINVAL;
    /* Version 00 is exactly 55 bytes. A later version may append fields,
     * always after a '-'; we read the 00 fields and ignore the rest. */
    if (ver == 0 ? n != TRACE_TRACEPARENT_LEN : (n > TRACE_TRACEPARENT_LEN && s[55] != '-'))
        return -EINVAL;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -EINVAL;
    if (lowhex_decode(s + 3, 16, tid) < 0 || lowhex_decode(s + 36, 8, sid) < 0 ||
        lowhex_decode(s + 53, 1, &fl) < 0)
        return -EINVAL;
    if (ids_zero(tid, 16) || ids_zero(sid, 8))
        return -EINVAL;
    memcpy(out->trace_id, tid, 16);
    memcpy(out->span_id, sid, 8);
    /* A later version's flags may mean more; only "sampled" is understood. */
    out->flags = ver == 0 ? fl : (fl & TRACE_FLAG_SAMPLED);
    out->remote = true;
    out->tracestate[0] = '\0';
    return 0;
}

size_t trace_traceparent_format(const struct trace_context *ctx,
                                char out[TRACE_TRACEPARENT_LEN + 1])
{
    char tid[33], sid[17], fl[3];
    hex_encode(ctx->trace_id, 16, tid);
    hex_encode(ctx->span_id, 8, sid);
    hex_encode(&ctx->flags, 1, fl);
    return (size_t)snprintf(out, TRACE_TRACEPARENT_LEN + 1, "00-%s-%s-%s", tid, sid, fl);
}

static bool ts_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool ts_keychar(char c)
{
    return ts_lcalpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}

/* key = simple-key / multi-tenant-key (W3C tracestate, section 3.3.1.3.1). */
static bool ts_key_ok(const char *k, size_t n)
{
    const char *at = memchr(k, '@', n);
    if (!at) {
        if (n < 1 || n > 256 || !ts_lcalpha(k[0]))
            return false;
        for (size_t i = 1; i < n; i++)
            if (!ts_keychar(k[i]))
                return false;
        return true;
    }
    size_t tn = (size_t)(at - k), sn = n - tn - 1;
    if (tn < 1 || tn > 241 || sn < 1 || sn > 14)
        return false;
    if (!ts_lcalpha(k[0]) && !(k[0] >= '0' && k[0] <= '9'))
        return false;
    for (size_t i = 1; i < tn; i++)
        if (!ts_keychar(k[i]))
            return false;
    if (!ts_lcalpha(at[1]))
        return false;
    for (size_t i = 2; i <= sn; i++)
        if (!ts_keychar(at[i]))
            return false;
    return true;
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = printable
 * except ',' and '='. */
static bool ts_value_ok(const char *v, size_t n)
{
    if (n < 1 || n > 256 || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return false;
    }
    return true;
}

int trace_tracestate_parse(const char *s, size_t n, char out[TRACE_STATE_MAX + 1])
{
    out[0] = '\0';
    if (!s)
        return -EINVAL;
    size_t len = 0, members = 0;
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != ',')
            j++;
        const char *m = s + i;
        size_t mn = j - i;
        trim(&m, &mn);
        if (mn) {
            const char *eq = memchr(m, '=', mn);
            if (!eq || !ts_key_ok(m, (size_t)(eq - m)) ||
                !ts_value_ok(eq + 1, mn - (size_t)(eq - m) - 1))
                goto bad;
            if (++members > TRACE_STATE_MEMBERS_MAX)
                goto bad;
            if (len + (len ? 1 : 0) + mn > TRACE_STATE_MAX)
                goto bad;
            if (len)
                out[len++] = ',';
            memcpy(out + len, m, mn);
            len += mn;
        }
        i = j + 1;
    }
    out[len] = '\0';
    return 0;
bad:
    out[0] = '\0';
    return -EINVAL;
}

int trace_context_from_headers(const char *traceparent, const char *tracestate,
                               struct trace_context *out)
{
    if (!traceparent)
        return -EINVAL;
    struct trace_context c;
    TRY(trace_traceparent_parse(traceparent, strlen(traceparent), &c));
    if (tracestate)
        (void)trace_tracestate_parse(tracestate, strlen(tracestate), c.tracestate);
    *out = c;
    return 0;
}

/* ---- configuration ----------------------------------------------------------- */

enum trace_sampler trace_sampler_get(double *ratio)
{
    if (ratio)
        *ratio = g.ratio;
    return g.sampler;
}

bool trace_exporting(void)
{
    return g.running && !g.disabled;
}

/* A positive integer from the environment, or def (the OTel rule: invalid
 * values are ignored). */
static uint32_t env_u32(const char *name, uint32_t def, uint32_t min, uint32_t max)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    while (*end == ' ')
        end++;
    if (errno || *end || v[0] == '-' || x < min || x > max)
        return def;
    return (uint32_t)x;
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v && strcasecmp(v, "true") == 0;
}

static void read_sampler_env(void)
{
    const char *s = getenv("OTEL_TRACES_SAMPLER");
    enum trace_sampler smp = TRACE_SAMPLER_PARENTBASED_ALWAYS_ON;
    if (s && *s && trace_sampler_parse(s, &smp) < 0)
        smp = TRACE_SAMPLER_PARENTBASED_ALWAYS_ON;
    double ratio = 1.0;
    const char *a = getenv("OTEL_TRACES_SAMPLER_ARG");
    if (a && *a) {
        char *end;
        double r = strtod(a, &end);
        if (end != a && *end == '\0' && r >= 0.0 && r <= 1.0)
            ratio = r;
    }
    g.sampler = smp;
    g.ratio = ratio;
}

/* ---- export thread ------------------------------------------------------- */

/* One warning per TRACE_WARN_EVERY_NS at most (a collector that is down
 * would otherwise log every schedule delay), with the spans lost since the
 * last one. Runs on the export thread only. */
#define TRACE_WARN_EVERY_NS (30ull * 1000000000ull)
static void warn_export_failed(const char *err, size_t n)
{
    static uint64_t last_ns, lost;
    lost += n;
    uint64_t now = time_mono_ns();
    if (last_ns && now - last_ns < TRACE_WARN_EVERY_NS)
        return;
    last_ns = now;
    log_warning(log_get("telemetry"), "trace.export_failed", LOG_STR("signal", "traces"),
                LOG_STR("error", err), LOG_UINT("spans_lost", lost));
    lost = 0;
}

static void export_batch(struct trace_rec **batch, size_t n)
{
    const struct trace_span_data **views = g.views;
    for (size_t i = 0; i < n; i++)
        views[i] = &batch[i]->d;
    uint64_t deadline = time_mono_ns() + (uint64_t)g.export_timeout_ms * 1000000u;
    pthread_mutex_lock(&g.mu);
    if (g.stop && g.stop_deadline < deadline)
        deadline = g.stop_deadline;
    pthread_mutex_unlock(&g.mu);
    bool ok = true;
    for (size_t e = 0; e < g.nexporters; e++) {
        char err[ERR_LEN] = "";
        if (otlp_exporter_export(g.exporters[e], views, n, deadline, err, sizeof err) < 0) {
            ok = false;
            warn_export_failed(err, n);
        }
    }
    atomic_fetch_add_explicit(ok ? &g_exported : &g_export_failed, n, memory_order_relaxed);
    /* Give the ring space back, oldest first (a ring's records are queued in
     * order). Read the record before the store: the producer may overwrite it
     * right after. */
    for (size_t i = 0; i < n; i++) {
        struct span_ring *r = batch[i]->ring;
        uint64_t end = batch[i]->end;
        atomic_store_explicit(&r->head, end, memory_order_release);
    }
}

static void *export_main(void *arg)
{
    struct trace_rec **batch = arg;
    pthread_mutex_lock(&g.mu);
    uint64_t next = time_mono_ns() + (uint64_t)g.delay_ms * 1000000u;
    for (;;) {
        while (!g.stop && !g.flush_wanted && g.count < g.max_batch && time_mono_ns() < next) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t left = next - time_mono_ns();
            if ((int64_t)left <= 0)
                break;
            uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + left;
            ts.tv_sec = (time_t)(at / 1000000000u);
            ts.tv_nsec = (long)(at % 1000000000u);
            pthread_cond_timedwait(&g.wake, &g.mu, &ts);
        }
        if (g.count == 0) {
            g.flush_wanted = false;
            pthread_cond_broadcast(&g.done);
            if (g.stop)
                break;
            next = time_mono_ns() + (uint64_t)g.delay_ms * 1000000u;
            continue;
        }
        size_t n = g.count < g.max_batch ? g.count : g.max_batch;
        for (size_t i = 0; i < n; i++) {
            batch[i] = g.queue[g.head];
            g.head = (g.head + 1) % g.max_queue;
        }
        g.count -= n;
        g.exporting = true;
        pthread_mutex_unlock(&g.mu);
        export_batch(batch, n);
        pthread_mutex_lock(&g.mu);
        g.exporting = false;
        if (g.count < g.max_batch)
            next = time_mono_ns() + (uint64_t)g.delay_ms * 1000000u;
        pthread_cond_broadcast(&g.done);
    }
    pthread_mutex_unlock(&g.mu);
    free(batch);
    return NULL;
}

/* The condition variables wait on CLOCK_MONOTONIC (a wall-clock step must not
 * stall or hurry the exporter). */
static void conds_init(void)
{
    static bool done;
    if (done)
        return;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&g.wake);
    pthread_cond_destroy(&g.done);
    pthread_cond_init(&g.wake, &ca);
    pthread_cond_init(&g.done, &ca);
    pthread_condattr_destroy(&ca);
    done = true;
}

int trace_init(const struct trace_options *opts, char *err, size_t errlen)
{
    if (g.initialised)
        return err_set(err, errlen, -EALREADY, "tracing is already initialised");
    struct trace_options none = {0};
    if (!opts)
        opts = &none;

    g.disabled = env_true("OTEL_SDK_DISABLED");
    read_sampler_env();
    uint32_t max_queue = env_u32("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1u << 20);
    uint32_t delay = env_u32("OTEL_BSP_SCHEDULE_DELAY", 5000, 0, 3600000);
    uint32_t batch = env_u32("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1u << 20);
    uint32_t timeout = env_u32("OTEL_BSP_EXPORT_TIMEOUT", 30000, 0, 3600000);
    if (batch > max_queue) /* the spec: must be <= the queue size */
        batch = max_queue;

    otlp_exporter_t *ex[TRACE_EXPORTERS_MAX] = {0};
    size_t nex = 0;
    struct trace_rec **ring = NULL, **bbuf = NULL;
    const struct trace_span_data **views = NULL;
    int rc = 0;
    if (g.disabled) {
        g.initialised = true;
        return 0;
    }
    struct otlp_resource *res = malloc(sizeof *res);
    struct otlp_config *cfg = malloc(sizeof *cfg);
    if (!res || !cfg) {
        rc = err_set(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }
    otlp_resource_from_env(res);
    /* The file first: it never waits, so a slow collector cannot delay it. */
    if (opts->file_path) {
        ex[nex] = otlp_file_exporter_new(opts->file_path, res, err, errlen);
        if (!ex[nex]) {
            rc = -EIO;
            goto fail;
        }
        nex++;
    }
    if (!opts->no_env_exporter) {
        rc = otlp_config_from_env(cfg, err, errlen);
        if (rc < 0)
            goto fail;
        if (cfg->endpoint[0]) {
            ex[nex] = otlp_http_exporter_new(cfg, res, err, errlen);
            if (!ex[nex]) {
                rc = -EINVAL;
                goto fail;
            }
            nex++;
        }
    }
    free(res);
    free(cfg);
    res = NULL;
    cfg = NULL;

    g.max_queue = max_queue;
    g.delay_ms = delay;
    g.max_batch = batch;
    g.export_timeout_ms = timeout;
    size_t rb = ((size_t)max_queue + batch) * TRACE_RING_PER_SPAN;
    size_t ring_bytes = TRACE_RING_MIN;
    while (ring_bytes < rb && ring_bytes < TRACE_RING_MAX)
        ring_bytes *= 2;
    atomic_store_explicit(&g_ring_bytes, ring_bytes, memory_order_relaxed);
    if (nex) {
        ring = calloc(max_queue, sizeof *ring);
        bbuf = calloc(batch, sizeof *bbuf);
        views = calloc(batch, sizeof *views);
        if (!ring || !bbuf || !views) {
            rc = err_set(err, errlen, -ENOMEM, "out of memory for the span queue");
            goto fail;
        }
        conds_init();
        pthread_mutex_lock(&g.mu);
        g.queue = ring;
        g.views = views;
        g.head = g.count = 0;
        g.stop = g.flush_wanted = g.exporting = false;
        memcpy(g.exporters, ex, sizeof ex);
        g.nexporters = nex;
        int prc = pthread_create(&g.thread, NULL, export_main, bbuf);
        if (prc != 0) {
            g.queue = NULL;
            g.views = NULL;
            g.nexporters = 0;
            pthread_mutex_unlock(&g.mu);
            rc = err_sys(err, errlen, -prc, "cannot start the trace export thread");
            goto fail;
        }
        g.running = true;
        atomic_store(&g_accepting, true);
        pthread_mutex_unlock(&g.mu);
    }
    g.initialised = true;
    return 0;
fail:
    for (size_t i = 0; i < nex; i++)
        otlp_exporter_free(ex[i]);
    free(ring);
    free(bbuf);
    free(views);
    free(res);
    free(cfg);
    return rc;
}

int trace_flush(uint64_t timeout_ms)
{
    uint64_t deadline = time_mono_ns() + timeout_ms * 1000000u;
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    g.flush_wanted = true;
    pthread_cond_signal(&g.wake);
    int rc = 0;
    while (g.count > 0 || g.exporting || g.flush_wanted) {
        uint64_t now = time_mono_ns();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (deadline - now);
        ts.tv_sec = (time_t)(at / 1000000000u);
        ts.tv_nsec = (long)(at % 1000000000u);
        pthread_cond_timedwait(&g.done, &g.mu, &ts);
        if (!g.running)
            break;
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

void trace_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        g.initialised = false;
        return;
    }
    /* The export thread drains the queue before it exits, so shutdown
     * flushes; all of it is bounded by one export timeout from now (batches
     * still queued after that fail at once and are counted as failed). */
    g.stop = true;
    g.stop_deadline = time_mono_ns() + (uint64_t)g.export_timeout_ms * 1000000u;
    pthread_cond_signal(&g.wake);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);

    pthread_mutex_lock(&g.mu);
    g.running = false;
    atomic_store(&g_accepting, false);
    struct trace_rec **ring = g.queue;
    g.queue = NULL;
    const struct trace_span_data **views = g.views;
    g.views = NULL;
    size_t nex = g.nexporters;
    g.nexporters = 0;
    pthread_cond_broadcast(&g.done);
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < nex; i++) {
        otlp_exporter_free(g.exporters[i]);
        g.exporters[i] = NULL;
    }
    free(ring);
    free(views);
    pool_drain();
    g.initialised = false;
}
