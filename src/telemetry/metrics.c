/* metrics.c - the metrics registry and its Prometheus/OpenMetrics exposition.
 *
 * Layout. A registry is a mutex and a list of families in registration order.
 * A family is a mutex, a hash table of its series (key: the label values,
 * each followed by a NUL) and a list of them in creation order. Series are
 * never removed, so a handle stays valid until the registry is freed.
 *
 * The hot path. Counter and histogram series keep one "stripe" per CPU slot,
 * each stripe on its own 64-byte cache lines; an update touches only the
 * stripe of the CPU it runs on, with relaxed atomics, so two threads updating
 * one series do not bounce a cache line between cores. The CPU number comes
 * from glibc's registered rseq area (one load, ~1 ns); sched_getcpu() costs
 * ~5 ns here (vDSO) and is not used. Without rseq a thread takes a slot
 * round-robin on first use and keeps it. Stripes are summed when read, so a
 * render may see an update in one stripe and not yet another: each value is
 * exact once writers stop. A histogram's _count and +Inf bucket come from the
 * same bucket reads, so they always agree within one render.
 * Integer counter adds use an integer cell (fetch_add); fractional adds and
 * histogram sums use a double cell updated by compare-and-swap on its bits.
 * Gauges are one padded double (set must be a single value, so no stripes).
 * Rejected: one lock per series (~25 ns uncontended, serialises threads);
 * one shared atomic per series (~5 ns alone, but 2 threads on 2 cores pay a
 * cache-line transfer each, 40-100 ns).
 *
 * Numbers are printed with "%.15g" (or "%.17g" when 15 digits do not round
 * trip), integral values below 1e15 as "N.0", and NaN/+Inf/-Inf as
 * Prometheus spells them. The C locale's decimal point is assumed: clearbox
 * never calls setlocale. */
#include "telemetry/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/timeutil.h"

#define CACHE_LINE 64
#define STRIPES_MAX 16
#define RENDER_MAX ((size_t)64 << 20) /* metrics_render_string's cap */

const double metrics_default_buckets[11] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

/* ------------------------------------------------------------------------ */
/* Types                                                                    */

struct hent {          /* one entry of a string-keyed hash table */
    struct hent *next; /* chain */
    uint64_t hash;
    size_t keylen;
    char *key; /* owned, NUL-terminated (may contain NULs) */
    void *val;
};

struct htab {
    struct hent **b; /* buckets, nb a power of two */
    size_t nb, n;
};

struct mseries {
    /* hot: read on every update */
    _Atomic uint64_t *cells; /* counters, histograms: stripes * stride words */
    uint32_t stride;         /* words per stripe (multiple of 8) */
    uint32_t nbounds;        /* histograms: upper bounds (without +Inf) */
    const double *bounds;    /* histograms: the family's bounds */
    /* cold */
    struct metrics_family *fam;
    struct mseries *next; /* creation order */
    char **values;        /* fam->nlabels sanitised label values */
    uint64_t created_ns;  /* wall clock, for OpenMetrics _created */
    metrics_value_fn fn;  /* function-backed series when non-NULL */
    void *arg;
    /* gauges: one value on its own cache line */
    _Alignas(CACHE_LINE) _Atomic uint64_t gauge_bits;
    char pad[CACHE_LINE - sizeof(uint64_t)];
};

/* The public handle types are the series seen through a typed window. */
struct metrics_counter {
    struct mseries s;
};
struct metrics_gauge {
    struct mseries s;
};
struct metrics_histogram {
    struct mseries s;
};

struct metrics_family {
    struct metrics_registry *reg;
    struct metrics_family *next; /* registration order */
    enum metrics_type type;
    char *name; /* as exposed in text format (counters: base_total) */
    char *base; /* OpenMetrics family name (counters: without _total) */
    char *help;
    char *unit; /* NULL when none */
    size_t nlabels;
    char *labels[METRICS_LABELS_MAX];
    size_t label_max[METRICS_LABELS_MAX]; /* 0 = unbounded */
    struct htab seen[METRICS_LABELS_MAX]; /* distinct values of bounded labels */
    double *bounds;
    size_t nbounds;
    size_t max_series;
    char *exposed[5]; /* every sample/family name this family uses */
    size_t nexposed;
    pthread_mutex_t mu; /* guards series, tab, nseries, seen */
    struct mseries *series, **tail;
    size_t nseries;
    struct htab tab; /* label-value key -> struct mseries */
};

struct metrics_registry {
    pthread_mutex_t mu; /* guards the family list; held while rendering */
    struct metrics_family *fams, **tail;
};

/* ------------------------------------------------------------------------ */
/* Stripes                                                                  */

static unsigned stripe_mask; /* stripes - 1; set once by stripes_init */
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;
static _Atomic unsigned next_slot;
static __thread unsigned tls_slot; /* 0 = not yet assigned, else slot + 1 */

static void stripes_init(void)
{
    /* one stripe per CPU we may run on (rseq's cpu_id picks it): the
     * highest CPU of our affinity mask, not sysconf(_SC_NPROCESSORS_CONF),
     * which reads /sys/devices/system/cpu on every process start (~30 us).
     * A CPU beyond the stripes shares one: slower, never wrong. */
    long n = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = CPU_SETSIZE - 1; c >= 0; c--)
            if (CPU_ISSET(c, &set)) {
                n = c + 1;
                break;
            }
    unsigned s = 1;
    while ((long)s < n && s < STRIPES_MAX)
        s <<= 1;
    stripe_mask = s - 1;
}

static inline unsigned stripe_slot(void)
{
    if (__rseq_size > 0) {
        const struct rseq *r =
            (const struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
        int32_t cpu = (int32_t)__atomic_load_n(&r->cpu_id, __ATOMIC_RELAXED);
        if (cpu >= 0)
            return (unsigned)cpu & stripe_mask;
    }
    if (!tls_slot)
        tls_slot = atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) + 1;
    return (tls_slot - 1) & stripe_mask;
}

static inline uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline void atomic_add_double(_Atomic uint64_t *cell, double v)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ------------------------------------------------------------------------ */
/* Updates                                                                  */
/* Counter stripe: word 0 integer adds, word 1 double adds (bits).          */
/* Histogram stripe: words 0..nbounds bucket counts, word nbounds+1 sum.    */

void metrics_counter_inc(metrics_counter_t *c)
{
    if (!c || !c->s.cells)
        return;
    atomic_fetch_add_explicit(&c->s.cells[stripe_slot() * c->s.stride], 1, memory_order_relaxed);
}

void metrics_counter_add(metrics_counter_t *c, uint64_t n)
{
    if (!c || !c->s.cells)
        return;
    atomic_fetch_add_explicit(&c->s.cells[stripe_slot() * c->s.stride], n, memory_order_relaxed);
}

void metrics_counter_add_f(metrics_counter_t *c, double v)
{
    if (!c || !c->s.cells || !(v >= 0)) /* also drops NaN */
        return;
    atomic_add_double(&c->s.cells[stripe_slot() * c->s.stride + 1], v);
}

void metrics_gauge_set(metrics_gauge_t *g, double v)
{
    if (!g) /* a function-backed gauge ignores it: gauge_bits is not rendered */
        return;
    atomic_store_explicit(&g->s.gauge_bits, dbits(v), memory_order_relaxed);
}

void metrics_gauge_add(metrics_gauge_t *g, double v)
{
    if (!g) /* a function-backed gauge ignores it: gauge_bits is not rendered */
        return;
    atomic_add_double(&g->s.gauge_bits, v);
}

void metrics_gauge_inc(metrics_gauge_t *g)
{
    metrics_gauge_add(g, 1.0);
}
void metrics_gauge_dec(metrics_gauge_t *g)
{
    metrics_gauge_add(g, -1.0);
}

void metrics_histogram_observe(metrics_histogram_t *h, double v)
{
    if (!h)
        return;
    const struct mseries *s = &h->s;
    uint32_t i = 0, n = s->nbounds;
    if (n <= 16) {
        while (i < n && !(v <= s->bounds[i]))
            i++;
    } else { /* first bound >= v */
        uint32_t lo = 0, hi = n;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (v <= s->bounds[mid])
                hi = mid;
            else
                lo = mid + 1;
        }
        i = lo; /* NaN: every comparison is false, lo ends at n (+Inf) */
    }
    _Atomic uint64_t *st = s->cells + (size_t)stripe_slot() * s->stride;
    atomic_fetch_add_explicit(&st[i], 1, memory_order_relaxed);
    atomic_add_double(&st[n + 1], v);
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */

static double counter_read(const struct mseries *s, uint64_t *ipart, double *fpart)
{
    if (s->fn) {
        double v = s->fn(s->arg);
        *ipart = 0;
        *fpart = v;
        return v;
    }
    uint64_t iv = 0;
    double fv = 0;
    for (unsigned k = 0; k <= stripe_mask; k++) {
        iv += atomic_load_explicit(&s->cells[k * s->stride], memory_order_relaxed);
        fv += bitsd(atomic_load_explicit(&s->cells[k * s->stride + 1], memory_order_relaxed));
    }
    *ipart = iv;
    *fpart = fv;
    return (double)iv + fv;
}

static double gauge_read(const struct mseries *s)
{
    if (s->fn)
        return s->fn(s->arg);
    return bitsd(atomic_load_explicit(&s->gauge_bits, memory_order_relaxed));
}

double metrics_counter_value(const metrics_counter_t *c)
{
    uint64_t i;
    double f;
    return c ? counter_read(&c->s, &i, &f) : 0;
}

double metrics_gauge_value(const metrics_gauge_t *g)
{
    return g ? gauge_read(&g->s) : 0;
}

size_t metrics_histogram_read(const metrics_histogram_t *h, uint64_t *counts, size_t ncounts,
                              double *sum)
{
    if (!h)
        return 0;
    const struct mseries *s = &h->s;
    size_t n = s->nbounds + 1;
    double total = 0;
    for (size_t i = 0; i < n && i < ncounts; i++)
        counts[i] = 0;
    for (unsigned k = 0; k <= stripe_mask; k++) {
        const _Atomic uint64_t *st = s->cells + (size_t)k * s->stride;
        for (size_t i = 0; i < n && i < ncounts; i++)
            counts[i] += atomic_load_explicit(&st[i], memory_order_relaxed);
        total += bitsd(atomic_load_explicit(&st[s->nbounds + 1], memory_order_relaxed));
    }
    if (sum)
        *sum = total;
    return n < ncounts ? n : ncounts;
}

/* ------------------------------------------------------------------------ */
/* Hash table (string keys, chained, grows at load 1)                       */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static struct hent *htab_find(const struct htab *t, const char *key, size_t len, uint64_t h)
{
    if (!t->nb)
        return NULL;
    for (struct hent *e = t->b[h & (t->nb - 1)]; e; e = e->next)
        if (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

/* Insert a key known to be absent; 0 or -ENOMEM (table unchanged). */
static int htab_add(struct htab *t, const char *key, size_t len, uint64_t h, void *val)
{
    if (t->n >= t->nb) {
        size_t nb = t->nb ? t->nb * 2 : 16;
        struct hent **b = calloc(nb, sizeof *b);
        if (!b)
            return -ENOMEM;
        for (size_t i = 0; i < t->nb; i++) {
            struct hent *e = t->b[i], *nx;
            for (; e; e = nx) {
                nx = e->next;
                e->next = b[e->hash & (nb - 1)];
                b[e->hash & (nb - 1)] = e;
            }
        }
        free(t->b);
        t->b = b;
        t->nb = nb;
    }
    struct hent *e = malloc(sizeof *e);
    char *k = malloc(len + 1);
    if (!e || !k) {
        free(e);
        free(k);
        return -ENOMEM;
    }
    memcpy(k, key, len);
    k[len] = '\0';
    *e = (struct hent){
        .next = t->b[h & (t->nb - 1)], .hash = h, .keylen = len, .key = k, .val = val};
    t->b[h & (t->nb - 1)] = e;
    t->n++;
    return 0;
}

static void htab_free(struct htab *t)
{
    for (size_t i = 0; i < t->nb; i++) {
        struct hent *e = t->b[i], *nx;
        for (; e; e = nx) {
            nx = e->next;
            free(e->key);
            free(e);
        }
    }
    free(t->b);
    *t = (struct htab){0};
}

/* ------------------------------------------------------------------------ */
/* Names and label values                                                   */

static bool name_ok(const char *s, bool metric)
{
    size_t n = 0;
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return n <= METRICS_NAME_MAX;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Copy s into out (METRICS_LABEL_VALUE_MAX + 1 bytes) as valid UTF-8, cut at a
 * character boundary; returns the length. */
static size_t value_sanitise(const char *s, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), o = 0;
    while (n) {
        size_t l = utf8_len(p, n);
        const char *src = (const char *)p;
        size_t w = l;
        if (!l) {
            src = "\xEF\xBF\xBD"; /* U+FFFD */
            w = 3;
            l = 1;
        }
        if (o + w > METRICS_LABEL_VALUE_MAX)
            break;
        memcpy(out + o, src, w);
        o += w;
        p += l;
        n -= l;
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------------------ */
/* Registry                                                                 */

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static metrics_registry_t *default_reg;

static void default_init(void)
{
    default_reg = metrics_registry_new();
}

metrics_registry_t *metrics_default(void)
{
    pthread_once(&default_once, default_init);
    return default_reg;
}

metrics_registry_t *metrics_registry_new(void)
{
    pthread_once(&stripes_once, stripes_init);
    metrics_registry_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->tail = &r->fams;
    return r;
}

static void series_free(struct mseries *s, size_t nlabels)
{
    if (!s)
        return;
    if (s->values)
        for (size_t i = 0; i < nlabels; i++)
            free(s->values[i]);
    free(s->values);
    free(s->cells);
    free(s);
}

static void family_free(struct metrics_family *f)
{
    if (!f)
        return;
    for (struct mseries *s = f->series, *nx; s; s = nx) {
        nx = s->next;
        series_free(s, f->nlabels);
    }
    htab_free(&f->tab);
    for (size_t i = 0; i < f->nlabels; i++) {
        free(f->labels[i]);
        htab_free(&f->seen[i]);
    }
    for (size_t i = 0; i < f->nexposed; i++)
        free(f->exposed[i]);
    free(f->name);
    free(f->base);
    free(f->help);
    free(f->unit);
    free(f->bounds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void metrics_registry_free(metrics_registry_t *reg)
{
    if (!reg)
        return;
    for (struct metrics_family *f = reg->fams, *nx; f; f = nx) {
        nx = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* ------------------------------------------------------------------------ */
/* Families                                                                 */

static const char *type_name(enum metrics_type t)
{
    return t == METRICS_COUNTER ? "counter" : t == METRICS_GAUGE ? "gauge" : "histogram";
}

static char *dup_suffix(const char *a, const char *b)
{
    char *s;
    if (asprintf(&s, "%s%s", a, b) < 0)
        return NULL;
    return s;
}

static int opts_check(enum metrics_type type, const struct metrics_opts *o, char *err,
                      size_t errlen)
{
    if (!o || !o->name)
        return err_set(err, errlen, -EINVAL, "metrics: a family needs a name");
    if (type != METRICS_COUNTER && type != METRICS_GAUGE && type != METRICS_HISTOGRAM)
        return err_set(err, errlen, -EINVAL, "metrics: %s: unknown metric type %d", o->name,
                       (int)type);
    if (!name_ok(o->name, true))
        return err_set(err, errlen, -EINVAL,
                       "metrics: invalid metric name \"%.64s\" (want [a-zA-Z_:][a-zA-Z0-9_:]*, "
                       "at most %d bytes)",
                       o->name, METRICS_NAME_MAX);
    if (!o->help || !*o->help)
        return err_set(err, errlen, -EINVAL,
                       "metrics: %s: help text is required (promtool flags a family without)",
                       o->name);
    if (type == METRICS_COUNTER && strcmp(o->name, "_total") == 0)
        return err_set(err, errlen, -EINVAL, "metrics: counter name cannot be just \"_total\"");
    if (type == METRICS_HISTOGRAM &&
        (ends_with(o->name, "_bucket") || ends_with(o->name, "_count") ||
         ends_with(o->name, "_sum") || ends_with(o->name, "_created")))
        return err_set(err, errlen, -EINVAL,
                       "metrics: histogram name %s ends in a reserved suffix "
                       "(_bucket, _count, _sum, _created)",
                       o->name);
    if (o->nlabels > METRICS_LABELS_MAX)
        return err_set(err, errlen, -EINVAL, "metrics: %s: %zu labels, at most %d", o->name,
                       o->nlabels, METRICS_LABELS_MAX);
    if (o->nlabels && !o->label_names)
        return err_set(err, errlen, -EINVAL, "metrics: %s: nlabels %zu but no label_names", o->name,
                       o->nlabels);
    for (size_t i = 0; i < o->nlabels; i++) {
        const char *l = o->label_names[i];
        if (!name_ok(l, false))
            return err_set(err, errlen, -EINVAL,
                           "metrics: %s: invalid label name \"%.64s\" (want "
                           "[a-zA-Z_][a-zA-Z0-9_]*)",
                           o->name, l ? l : "(null)");
        if (strncmp(l, "__", 2) == 0)
            return err_set(err, errlen, -EINVAL,
                           "metrics: %s: label names starting with \"__\" are reserved", o->name);
        if (strcmp(l, "quantile") == 0 || (type == METRICS_HISTOGRAM && strcmp(l, "le") == 0))
            return err_set(err, errlen, -EINVAL, "metrics: %s: label name \"%s\" is reserved",
                           o->name, l);
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->label_names[j], l) == 0)
                return err_set(err, errlen, -EINVAL, "metrics: %s: label \"%s\" given twice",
                               o->name, l);
    }
    if (o->unit) {
        if (!*o->unit || !name_ok(o->unit, true))
            return err_set(err, errlen, -EINVAL, "metrics: %s: invalid unit \"%.64s\"", o->name,
                           o->unit);
        char suffix[METRICS_NAME_MAX + 8];
        snprintf(suffix, sizeof suffix, "_%s", o->unit);
        size_t n = strlen(o->name);
        bool ok = ends_with(o->name, suffix);
        if (!ok && type == METRICS_COUNTER && ends_with(o->name, "_total")) {
            char base[METRICS_NAME_MAX + 1];
            snprintf(base, sizeof base, "%.*s", (int)(n - 6), o->name);
            ok = ends_with(base, suffix);
        }
        if (!ok)
            return err_set(err, errlen, -EINVAL,
                           "metrics: %s: the name must end in \"_%s\" to carry unit \"%s\"",
                           o->name, o->unit, o->unit);
    }
    if (type == METRICS_HISTOGRAM && o->buckets) {
        if (o->nbuckets == 0 || o->nbuckets > METRICS_BUCKETS_MAX)
            return err_set(err, errlen, -EINVAL, "metrics: %s: %zu buckets, want 1..%d", o->name,
                           o->nbuckets, METRICS_BUCKETS_MAX);
        for (size_t i = 0; i < o->nbuckets; i++) {
            if (!isfinite(o->buckets[i]))
                return err_set(err, errlen, -EINVAL,
                               "metrics: %s: bucket bounds must be finite (+Inf is implied)",
                               o->name);
            if (i && !(o->buckets[i] > o->buckets[i - 1]))
                return err_set(err, errlen, -EINVAL,
                               "metrics: %s: bucket bounds must increase strictly", o->name);
        }
    }
    if (type != METRICS_HISTOGRAM && o->buckets)
        return err_set(err, errlen, -EINVAL, "metrics: %s: buckets given for a %s", o->name,
                       type_name(type));
    return 0;
}

static struct metrics_family *family_build(enum metrics_type type, const struct metrics_opts *o)
{
    struct metrics_family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->type = type;
    f->tail = &f->series;
    f->max_series = o->max_series ? o->max_series : METRICS_MAX_SERIES_DEFAULT;
    f->help = strdup(o->help);
    f->unit = o->unit ? strdup(o->unit) : NULL;
    if (type == METRICS_COUNTER) {
        size_t n = strlen(o->name);
        bool tot = ends_with(o->name, "_total");
        f->base = strndup(o->name, tot ? n - 6 : n);
        f->name = f->base ? dup_suffix(f->base, "_total") : NULL;
    } else {
        f->name = strdup(o->name);
        f->base = strdup(o->name);
    }
    bool ok = f->help && f->name && f->base && (!o->unit || f->unit);
    f->nlabels = o->nlabels;
    for (size_t i = 0; ok && i < o->nlabels; i++) {
        ok = (f->labels[i] = strdup(o->label_names[i])) != NULL;
        f->label_max[i] = o->label_max_values ? o->label_max_values[i] : 0;
    }
    if (ok && type == METRICS_HISTOGRAM) {
        const double *b = o->buckets ? o->buckets : metrics_default_buckets;
        size_t n = o->buckets ? o->nbuckets : 11;
        ok = (f->bounds = malloc(n * sizeof *b)) != NULL;
        if (ok) {
            memcpy(f->bounds, b, n * sizeof *b);
            f->nbounds = n;
        }
    }
    /* Every name the exposition will use, for collision checks (as the Python
     * client's registry does). */
    const char *sfx[5] = {0};
    size_t ns = 0;
    if (type == METRICS_COUNTER)
        sfx[ns++] = "", sfx[ns++] = "_total", sfx[ns++] = "_created";
    else if (type == METRICS_GAUGE)
        sfx[ns++] = "";
    else
        sfx[ns++] = "", sfx[ns++] = "_bucket", sfx[ns++] = "_sum", sfx[ns++] = "_count",
        sfx[ns++] = "_created";
    for (size_t i = 0; ok && i < ns; i++)
        ok = (f->exposed[f->nexposed++] = dup_suffix(f->base, sfx[i])) != NULL;
    if (!ok) {
        family_free(f);
        return NULL;
    }
    return f;
}

static int series_create(struct metrics_family *f, char **values, metrics_value_fn fn, void *arg,
                         struct mseries **out);

int metrics_family_new(metrics_registry_t *reg, enum metrics_type type,
                       const struct metrics_opts *opts, metrics_family_t **out, char *err,
                       size_t errlen)
{
    if (!reg || !out)
        return err_set(err, errlen, -EINVAL, "metrics: family_new needs a registry and out");
    TRY(opts_check(type, opts, err, errlen));
    struct metrics_family *f = family_build(type, opts);
    if (!f)
        return err_set(err, errlen, -ENOMEM, "metrics: %s: out of memory", opts->name);
    f->reg = reg;

    pthread_mutex_lock(&reg->mu);
    for (struct metrics_family *g = reg->fams; g; g = g->next)
        for (size_t i = 0; i < f->nexposed; i++)
            for (size_t j = 0; j < g->nexposed; j++)
                if (strcmp(f->exposed[i], g->exposed[j]) == 0) {
                    pthread_mutex_unlock(&reg->mu);
                    int rc = err_set(err, errlen, -EEXIST,
                                     "metrics: %s: name \"%s\" is already used by %s %s",
                                     opts->name, f->exposed[i], type_name(g->type), g->name);
                    family_free(f);
                    return rc;
                }
    /* A family without labels has exactly one series: make it now, so it is
     * exposed (as 0) before its first update. */
    if (f->nlabels == 0) {
        struct mseries *s;
        if (series_create(f, NULL, NULL, NULL, &s) < 0) {
            pthread_mutex_unlock(&reg->mu);
            family_free(f);
            return err_set(err, errlen, -ENOMEM, "metrics: %s: out of memory", opts->name);
        }
    }
    *reg->tail = f;
    reg->tail = &f->next;
    pthread_mutex_unlock(&reg->mu);
    *out = f;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Series                                                                   */

/* Key of a tuple: each value followed by a NUL. */
static size_t key_build(char **values, size_t n, char *key)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(values[i]);
        memcpy(key + k, values[i], l + 1);
        k += l + 1;
    }
    return k;
}

/* Make a series with these (already sanitised) values and link it in; the
 * caller holds f->mu (or owns f exclusively) and knows the key is absent. */
static int series_create(struct metrics_family *f, char **values, metrics_value_fn fn, void *arg,
                         struct mseries **out)
{
    char key[METRICS_LABELS_MAX * (METRICS_LABEL_VALUE_MAX + 1)];
    key[0] = '\0';
    size_t klen = key_build(values, f->nlabels, key);
    struct mseries *s = aligned_alloc(CACHE_LINE, sizeof *s);
    if (!s)
        return -ENOMEM;
    memset(s, 0, sizeof *s);
    s->fam = f;
    s->fn = fn;
    s->arg = arg;
    s->created_ns = time_now_ns();
    atomic_store(&s->gauge_bits, dbits(0.0));
    if (f->nlabels) {
        s->values = calloc(f->nlabels, sizeof *s->values);
        if (!s->values)
            goto oom;
        for (size_t i = 0; i < f->nlabels; i++)
            if (!(s->values[i] = strdup(values[i])))
                goto oom;
    }
    if (!fn && f->type != METRICS_GAUGE) {
        size_t words = f->type == METRICS_COUNTER ? 2 : f->nbounds + 2;
        words = (words + 7) & ~(size_t)7; /* whole cache lines per stripe */
        size_t bytes = words * sizeof(uint64_t) * (stripe_mask + 1);
        s->cells = aligned_alloc(CACHE_LINE, bytes);
        if (!s->cells)
            goto oom;
        for (size_t i = 0; i < words * (stripe_mask + 1); i++)
            atomic_init(&s->cells[i], 0); /* 0 is also the bits of +0.0 */
        s->stride = (uint32_t)words;
        s->nbounds = (uint32_t)f->nbounds;
        s->bounds = f->bounds;
    }
    if (htab_add(&f->tab, key, klen, hash_bytes(key, klen), s) < 0)
        goto oom;
    *f->tail = s;
    f->tail = &s->next;
    f->nseries++;
    *out = s;
    return 0;
oom:
    series_free(s, f->nlabels);
    return -ENOMEM;
}

/* Find or make the series for values. fn != NULL asks for a function-backed
 * series, which must not exist yet. */
static int series_get(struct metrics_family *f, enum metrics_type want, const char *const *values,
                      size_t n, metrics_value_fn fn, void *arg, struct mseries **out, char *err,
                      size_t errlen)
{
    if (!f)
        return err_set(err, errlen, -EINVAL, "metrics: no family (did its registration fail?)");
    if (f->type != want)
        return err_set(err, errlen, -EINVAL, "metrics: %s is a %s, not a %s", f->name,
                       type_name(f->type), type_name(want));
    if (n != f->nlabels)
        return err_set(err, errlen, -EINVAL, "metrics: %s takes %zu label values, got %zu", f->name,
                       f->nlabels, n);
    if (n && !values)
        return err_set(err, errlen, -EINVAL, "metrics: %s: label values missing", f->name);

    char store[METRICS_LABELS_MAX][METRICS_LABEL_VALUE_MAX + 1];
    char *v[METRICS_LABELS_MAX];
    for (size_t i = 0; i < n; i++) {
        if (!values[i])
            return err_set(err, errlen, -EINVAL, "metrics: %s: label %s: NULL value", f->name,
                           f->labels[i]);
        value_sanitise(values[i], store[i]);
        v[i] = store[i];
    }
    char key[METRICS_LABELS_MAX * (METRICS_LABEL_VALUE_MAX + 1)];
    key[0] = '\0'; /* n == 0: the empty key */
    size_t klen = key_build(v, n, key);
    uint64_t h = hash_bytes(key, klen);

    int rc = 0;
    pthread_mutex_lock(&f->mu);
    struct hent *e = htab_find(&f->tab, key, klen, h);
    if (!e && !fn) {
        /* Fold: a bounded label's new value past its bound becomes "other";
         * then a tuple past the family's bound becomes all "other". */
        bool changed = false;
        for (size_t i = 0; i < n; i++) {
            if (!f->label_max[i] || strcmp(v[i], METRICS_OTHER) == 0)
                continue;
            size_t l = strlen(v[i]);
            if (htab_find(&f->seen[i], v[i], l, hash_bytes(v[i], l)))
                continue;
            if (f->seen[i].n >= f->label_max[i]) {
                v[i] = (char *)METRICS_OTHER;
                changed = true;
            }
        }
        if (changed) {
            klen = key_build(v, n, key);
            h = hash_bytes(key, klen);
            e = htab_find(&f->tab, key, klen, h);
        }
        if (!e && n && f->nseries >= f->max_series) {
            for (size_t i = 0; i < n; i++)
                v[i] = (char *)METRICS_OTHER;
            klen = key_build(v, n, key);
            h = hash_bytes(key, klen);
            e = htab_find(&f->tab, key, klen, h);
        }
    }
    if (e) {
        struct mseries *s = e->val;
        if (fn || s->fn)
            rc = err_set(err, errlen, -EEXIST,
                         fn ? "metrics: %s: this label tuple already has a series"
                            : "metrics: %s: this label tuple is function-backed",
                         f->name);
        else
            *out = s;
        pthread_mutex_unlock(&f->mu);
        return rc;
    }
    struct mseries *s = NULL;
    rc = series_create(f, v, fn, arg, &s);
    /* Remember the new values of bounded labels. Out of memory here only
     * loosens the bound, never breaks a series. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!f->label_max[i] || strcmp(v[i], METRICS_OTHER) == 0)
            continue;
        size_t l = strlen(v[i]);
        uint64_t vh = hash_bytes(v[i], l);
        if (!htab_find(&f->seen[i], v[i], l, vh))
            (void)htab_add(&f->seen[i], v[i], l, vh, NULL);
    }
    pthread_mutex_unlock(&f->mu);
    if (rc < 0)
        return err_set(err, errlen, rc, "metrics: %s: out of memory", f->name);
    *out = s;
    return 0;
}

int metrics_counter_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                        metrics_counter_t **out, char *err, size_t errlen)
{
    struct mseries *s;
    TRY(series_get(fam, METRICS_COUNTER, values, nvalues, NULL, NULL, &s, err, errlen));
    *out = (metrics_counter_t *)s;
    return 0;
}

int metrics_gauge_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                      metrics_gauge_t **out, char *err, size_t errlen)
{
    struct mseries *s;
    TRY(series_get(fam, METRICS_GAUGE, values, nvalues, NULL, NULL, &s, err, errlen));
    *out = (metrics_gauge_t *)s;
    return 0;
}

int metrics_histogram_get(metrics_family_t *fam, const char *const *values, size_t nvalues,
                          metrics_histogram_t **out, char *err, size_t errlen)
{
    struct mseries *s;
    TRY(series_get(fam, METRICS_HISTOGRAM, values, nvalues, NULL, NULL, &s, err, errlen));
    *out = (metrics_histogram_t *)s;
    return 0;
}

metrics_counter_t *metrics__counter_labels(metrics_family_t *fam, const char *const *v, size_t n)
{
    metrics_counter_t *c = NULL;
    return metrics_counter_get(fam, v, n, &c, NULL, 0) < 0 ? NULL : c;
}

metrics_gauge_t *metrics__gauge_labels(metrics_family_t *fam, const char *const *v, size_t n)
{
    metrics_gauge_t *g = NULL;
    return metrics_gauge_get(fam, v, n, &g, NULL, 0) < 0 ? NULL : g;
}

metrics_histogram_t *metrics__histogram_labels(metrics_family_t *fam, const char *const *v,
                                               size_t n)
{
    metrics_histogram_t *h = NULL;
    return metrics_histogram_get(fam, v, n, &h, NULL, 0) < 0 ? NULL : h;
}

static int func_series(metrics_family_t *fam, enum metrics_type type, const char *const *values,
                       size_t nvalues, metrics_value_fn fn, void *arg, char *err, size_t errlen)
{
    if (!fn)
        return err_set(err, errlen, -EINVAL, "metrics: a function series needs a function");
    if (fam && fam->nlabels == 0) {
        /* The family's single series exists already (made at registration);
         * it becomes function-backed, and updates through its handle are
         * from then on not exposed. */
        pthread_mutex_lock(&fam->mu);
        struct mseries *s = fam->series;
        int rc = 0;
        if (fam->type != type)
            rc = err_set(err, errlen, -EINVAL, "metrics: %s is a %s, not a %s", fam->name,
                         type_name(fam->type), type_name(type));
        else if (nvalues != 0)
            rc = err_set(err, errlen, -EINVAL, "metrics: %s takes 0 label values, got %zu",
                         fam->name, nvalues);
        else if (s->fn)
            rc = err_set(err, errlen, -EEXIST, "metrics: %s is already function-backed", fam->name);
        else {
            s->fn = fn;
            s->arg = arg;
        }
        pthread_mutex_unlock(&fam->mu);
        return rc;
    }
    struct mseries *s;
    return series_get(fam, type, values, nvalues, fn, arg, &s, err, errlen);
}

int metrics_counter_func(metrics_family_t *fam, const char *const *values, size_t nvalues,
                         metrics_value_fn fn, void *arg, char *err, size_t errlen)
{
    return func_series(fam, METRICS_COUNTER, values, nvalues, fn, arg, err, errlen);
}

int metrics_gauge_func(metrics_family_t *fam, const char *const *values, size_t nvalues,
                       metrics_value_fn fn, void *arg, char *err, size_t errlen)
{
    return func_series(fam, METRICS_GAUGE, values, nvalues, fn, arg, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Shortcuts                                                                */

static int simple_new(metrics_registry_t *reg, enum metrics_type type, const struct metrics_opts *o,
                      struct mseries **out, char *err, size_t errlen)
{
    metrics_family_t *f;
    if (!out)
        return err_set(err, errlen, -EINVAL, "metrics: out is NULL");
    TRY(metrics_family_new(reg, type, o, &f, err, errlen));
    *out = f->series;
    return 0;
}

int metrics_counter_new(metrics_registry_t *reg, const char *name, const char *help,
                        metrics_counter_t **out, char *err, size_t errlen)
{
    struct metrics_opts o = {.name = name, .help = help};
    return simple_new(reg, METRICS_COUNTER, &o, (struct mseries **)out, err, errlen);
}

int metrics_gauge_new(metrics_registry_t *reg, const char *name, const char *help,
                      metrics_gauge_t **out, char *err, size_t errlen)
{
    struct metrics_opts o = {.name = name, .help = help};
    return simple_new(reg, METRICS_GAUGE, &o, (struct mseries **)out, err, errlen);
}

int metrics_histogram_new(metrics_registry_t *reg, const char *name, const char *help,
                          const double *buckets, size_t nbuckets, metrics_histogram_t **out,
                          char *err, size_t errlen)
{
    struct metrics_opts o = {.name = name, .help = help, .buckets = buckets, .nbuckets = nbuckets};
    return simple_new(reg, METRICS_HISTOGRAM, &o, (struct mseries **)out, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Exposition                                                               */

static void put_num(struct buf *b, double v)
{
    char s[40];
    if (isnan(v))
        buf_puts(b, "NaN");
    else if (isinf(v))
        buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_printf(b, "%.1f", v);
    else {
        snprintf(s, sizeof s, "%.15g", v);
        if (strtod(s, NULL) != v)
            snprintf(s, sizeof s, "%.17g", v);
        buf_puts(b, s);
    }
}

/* HELP text: backslash and newline escaped; OpenMetrics also escapes '"'. */
static void put_help(struct buf *b, const char *s, bool om)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (*s == '"' && om)
            buf_puts(b, "\\\"");
        else
            buf_putc(b, *s);
    }
}

static void put_label_value(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (*s == '"')
            buf_puts(b, "\\\"");
        else
            buf_putc(b, *s);
    }
}

/* name{labels[,le="x"]} */
static void put_sample_name(struct buf *b, const struct metrics_family *f, const struct mseries *s,
                            const char *name, const char *suffix, const char *le)
{
    buf_puts(b, name);
    buf_puts(b, suffix);
    if (!f->nlabels && !le)
        return;
    buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i)
            buf_putc(b, ',');
        buf_puts(b, f->labels[i]);
        buf_puts(b, "=\"");
        put_label_value(b, s->values[i]);
        buf_putc(b, '"');
    }
    if (le) {
        if (f->nlabels)
            buf_putc(b, ',');
        buf_puts(b, "le=\"");
        buf_puts(b, le);
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static void put_created(struct buf *b, const struct metrics_family *f, const struct mseries *s)
{
    put_sample_name(b, f, s, f->base, "_created", NULL);
    buf_printf(b, " %llu.%09llu\n", (unsigned long long)(s->created_ns / 1000000000u),
               (unsigned long long)(s->created_ns % 1000000000u));
}

static void render_family(struct buf *b, struct metrics_family *f, bool om, unsigned flags)
{
    /* Text format names a counter's family <base>_total (as the Prometheus
     * clients do); OpenMetrics names it <base> and suffixes the sample. */
    const char *fname = om ? f->base : f->name;
    buf_printf(b, "# HELP %s ", fname);
    put_help(b, f->help, om);
    buf_printf(b, "\n# TYPE %s %s\n", fname, type_name(f->type));
    if (om && f->unit)
        buf_printf(b, "# UNIT %s %s\n", fname, f->unit);

    pthread_mutex_lock(&f->mu);
    for (struct mseries *s = f->series; s; s = s->next) {
        if (f->type == METRICS_COUNTER) {
            uint64_t iv;
            double fv;
            double v = counter_read(s, &iv, &fv);
            put_sample_name(b, f, s, f->base, "_total", NULL);
            if (!s->fn && fv == 0)
                buf_printf(b, " %llu\n", (unsigned long long)iv);
            else {
                buf_putc(b, ' ');
                put_num(b, v);
                buf_putc(b, '\n');
            }
            if (om && (flags & METRICS_RENDER_CREATED) && !s->fn)
                put_created(b, f, s);
        } else if (f->type == METRICS_GAUGE) {
            put_sample_name(b, f, s, f->base, "", NULL);
            buf_putc(b, ' ');
            put_num(b, gauge_read(s));
            buf_putc(b, '\n');
        } else {
            uint64_t counts[METRICS_BUCKETS_MAX + 1];
            double sum;
            size_t n = metrics_histogram_read((const metrics_histogram_t *)s, counts,
                                              METRICS_BUCKETS_MAX + 1, &sum);
            uint64_t cum = 0;
            for (size_t i = 0; i < n; i++) {
                struct buf le;
                char les[40];
                buf_init(&le, les, sizeof les, 0);
                if (i + 1 < n)
                    put_num(&le, f->bounds[i]);
                else
                    buf_puts(&le, "+Inf");
                cum += counts[i];
                put_sample_name(b, f, s, f->base, "_bucket", les);
                buf_printf(b, " %llu\n", (unsigned long long)cum);
            }
            put_sample_name(b, f, s, f->base, "_sum", NULL);
            buf_putc(b, ' ');
            put_num(b, sum);
            buf_putc(b, '\n');
            put_sample_name(b, f, s, f->base, "_count", NULL);
            buf_printf(b, " %llu\n", (unsigned long long)cum);
            if (om && (flags & METRICS_RENDER_CREATED))
                put_created(b, f, s);
        }
    }
    pthread_mutex_unlock(&f->mu);
}

int metrics_render(metrics_registry_t *reg, enum metrics_format fmt, unsigned flags,
                   struct buf *out, char *err, size_t errlen)
{
    if (!reg || !out)
        return err_set(err, errlen, -EINVAL, "metrics: render needs a registry and a buffer");
    if (fmt != METRICS_FORMAT_TEXT && fmt != METRICS_FORMAT_OPENMETRICS)
        return err_set(err, errlen, -EINVAL, "metrics: unknown format %d", (int)fmt);
    bool om = fmt == METRICS_FORMAT_OPENMETRICS;
    pthread_mutex_lock(&reg->mu);
    for (struct metrics_family *f = reg->fams; f && buf_ok(out); f = f->next)
        render_family(out, f, om, flags);
    pthread_mutex_unlock(&reg->mu);
    if (om)
        buf_puts(out, "# EOF\n");
    if (out->oom)
        return err_set(err, errlen, -ENOMEM, "metrics: out of memory while rendering");
    if (out->overflow)
        return err_set(err, errlen, -E2BIG, "metrics: the exposition does not fit in %zu bytes",
                       out->max);
    return 0;
}

int metrics_render_string(metrics_registry_t *reg, enum metrics_format fmt, unsigned flags,
                          char **out, size_t *len, char *err, size_t errlen)
{
    if (!out)
        return err_set(err, errlen, -EINVAL, "metrics: out is NULL");
    struct buf b;
    buf_init(&b, NULL, 0, RENDER_MAX);
    int rc = metrics_render(reg, fmt, flags, &b, err, errlen);
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    size_t n = b.len;
    char *s = buf_steal(&b);
    buf_free(&b);
    if (!s)
        return err_set(err, errlen, -ENOMEM, "metrics: out of memory");
    *out = s;
    if (len)
        *len = n;
    return 0;
}

const char *metrics_content_type(enum metrics_format fmt)
{
    return fmt == METRICS_FORMAT_OPENMETRICS ? METRICS_CONTENT_TYPE_OPENMETRICS
                                             : METRICS_CONTENT_TYPE_TEXT;
}

/* Accept: media-range *( ";" param ) *( "," ... ); q defaults to 1. Parsed
 * by hand over the header's bytes: no copy, no strtok. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static bool token_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(p, word, n) == 0;
}

enum metrics_format metrics_format_negotiate(const char *accept)
{
    double q_om = -1, q_text = -1;
    if (!accept)
        return METRICS_FORMAT_TEXT;
    const char *p = accept, *stop = accept + strnlen(accept, 4096);
    while (p < stop) {
        const char *item_end = memchr(p, ',', (size_t)(stop - p));
        if (!item_end)
            item_end = stop;
        const char *t = skip_ws(p, item_end);
        const char *te = t;
        while (te < item_end && *te != ';' && *te != ' ' && *te != '\t')
            te++;
        size_t tl = (size_t)(te - t);
        double q = 1;
        bool version_ok = true;
        for (const char *prm = memchr(te, ';', (size_t)(item_end - te)); prm;) {
            prm = skip_ws(prm + 1, item_end);
            const char *pe = memchr(prm, ';', (size_t)(item_end - prm));
            size_t pl = (size_t)((pe ? pe : item_end) - prm);
            if (pl > 2 && strncasecmp(prm, "q=", 2) == 0) {
                char num[16];
                snprintf(num, sizeof num, "%.*s", (int)(pl - 2 < 15 ? pl - 2 : 15), prm + 2);
                q = strtod(num, NULL);
            } else if (pl >= 8 && strncasecmp(prm, "version=", 8) == 0) {
                version_ok = pl >= 13 && strncmp(prm + 8, "1.0.0", 5) == 0;
            }
            prm = pe;
        }
        if (token_is(t, tl, "application/openmetrics-text")) {
            if (version_ok && q > q_om)
                q_om = q;
        } else if (token_is(t, tl, "text/plain") || token_is(t, tl, "text/*") ||
                   token_is(t, tl, "*/*")) {
            if (q > q_text)
                q_text = q;
        }
        p = item_end < stop ? item_end + 1 : stop;
    }
    return q_om > 0 && q_om >= q_text ? METRICS_FORMAT_OPENMETRICS : METRICS_FORMAT_TEXT;
}
