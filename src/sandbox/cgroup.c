/* cgroup.c - per-evaluation cgroups (v2 and v1) and their accounting.
 *
 * Why both: most hosts run the unified hierarchy (v2), but this project's own
 * machine runs v1 controllers beside an empty v2 mount, so both paths are
 * real. The v1 kill has no cgroup.kill: we freeze (so a fork bomb cannot
 * outrun the kill loop), SIGKILL every task listed, thaw, and poll until the
 * cgroup is empty. Without a freezer we loop kill-and-reread instead.
 *
 * Every write is checked; the memory limit is read back because a kernel
 * may round or refuse it silently. */
#include "sandbox/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/timeutil.h"

static const char *const ctl_names[CG_NCTL] = {"memory",  "pids",    "cpu",
                                               "cpuacct", "freezer", "blkio"};

const char *cgroup_mode_name(enum cgroup_mode m)
{
    switch (m) {
    case CGROUP_V1: return "v1";
    case CGROUP_V2: return "v2";
    default: return "none";
    }
}

/* dir/file, opened with flags (and O_CLOEXEC); -1 with errno on failure. */
static int open_in(const char *dir, const char *file, int flags)
{
    char path[CGROUP_PATH_MAX + 64];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(path, flags | O_CLOEXEC);
}

int cgroup_read_file(const char *dir, const char *file, char *out, size_t outlen)
{
    int fd = open_in(dir, file, O_RDONLY);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n + 1 < outlen) {
        ssize_t r = read(fd, out + n, outlen - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(fd);
    return (int)n;
}

int cgroup_write_file(const char *dir, const char *file, const char *val)
{
    int fd = open_in(dir, file, O_WRONLY | O_TRUNC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(val);
    ssize_t w = write(fd, val, len);
    int e = w < 0 ? -errno : ((size_t)w == len ? 0 : -EIO);
    close(fd);
    return e;
}

static int read_i64(const char *dir, const char *file, int64_t *out)
{
    char b[64];
    int n = cgroup_read_file(dir, file, b, sizeof b);
    if (n < 0)
        return n;
    if (!strncmp(b, "max", 3)) {
        *out = INT64_MAX;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(b, &end, 10);
    if (errno || end == b)
        return -EINVAL;
    *out = v;
    return 0;
}

int cgroup_parse_keyed(const char *text, const char *key, int64_t *out)
{
    size_t kl = strlen(key);
    const char *p = text;
    while (p && *p) {
        if (!strncmp(p, key, kl) && (p[kl] == ' ' || p[kl] == '\t')) {
            char *end;
            long long v = strtoll(p + kl + 1, &end, 10);
            if (end == p + kl + 1)
                return -EINVAL;
            *out = v;
            return 0;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -ENOENT;
}

int cgroup_parse_io_stat(const char *text, int64_t *rbytes, int64_t *wbytes)
{
    int64_t r = 0, w = 0;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        char line[512];
        if (n >= sizeof line)
            n = sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        char *s;
        if ((s = strstr(line, " rbytes=")))
            r += strtoll(s + 8, NULL, 10);
        if ((s = strstr(line, " wbytes=")))
            w += strtoll(s + 8, NULL, 10);
        p = eol ? eol + 1 : p + n;
    }
    *rbytes = r;
    *wbytes = w;
    return 0;
}

int cgroup_parse_blkio(const char *text, int64_t *rbytes, int64_t *wbytes)
{
    int64_t r = 0, w = 0;
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        char dev[32], op[16];
        long long v;
        if (sscanf(p, "%31s %15s %lld", dev, op, &v) == 3) {
            if (!strcmp(op, "Read"))
                r += v;
            else if (!strcmp(op, "Write"))
                w += v;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    *rbytes = r;
    *wbytes = w;
    return 0;
}

/* ---- detection ---------------------------------------------------------- */

static bool has_word(const char *list, const char *word, char sep)
{
    size_t wl = strlen(word);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, sep);
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == wl && !strncmp(p, word, wl))
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

static bool v2_usable(const char *dir)
{
    char c[512];
    if (cgroup_read_file(dir, "cgroup.controllers", c, sizeof c) < 0)
        return false;
    char *nl = strchr(c, '\n');
    if (nl)
        *nl = '\0';
    return has_word(c, "memory", ' ') && has_word(c, "pids", ' ');
}

static void decide_mode(struct cgroup_mounts *m)
{
    if (m->v2[0] && v2_usable(m->v2))
        m->mode = CGROUP_V2;
    else if (m->v1[CG_MEMORY][0] || m->v1[CG_PIDS][0])
        m->mode = CGROUP_V1;
    else
        m->mode = CGROUP_NONE;
}

int cgroup_mounts_detect(struct cgroup_mounts *m, const char *root, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (root) {
        struct stat st;
        char p[CGROUP_PATH_MAX];
        snprintf(p, sizeof p, "%s/unified", root);
        if (stat(p, &st) == 0)
            snprintf(m->v2, sizeof m->v2, "%s", p);
        for (int i = 0; i < CG_NCTL; i++) {
            snprintf(p, sizeof p, "%s/%s", root, ctl_names[i]);
            if (stat(p, &st) == 0)
                snprintf(m->v1[i], sizeof m->v1[i], "%s", p);
        }
        decide_mode(m);
        return 0;
    }
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return err_sys(err, errlen, -errno, "open /proc/self/mountinfo");
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        char mnt[CGROUP_PATH_MAX], fstype[32], src[64], super[1024];
        if (sscanf(line, "%*s %*s %*s %*s %511s", mnt) != 1)
            continue;
        if (sscanf(sep + 3, "%31s %63s %1023s", fstype, src, super) != 3)
            continue;
        if (!strcmp(fstype, "cgroup2")) {
            if (!m->v2[0])
                snprintf(m->v2, sizeof m->v2, "%s", mnt);
        } else if (!strcmp(fstype, "cgroup")) {
            for (int i = 0; i < CG_NCTL; i++)
                if (!m->v1[i][0] && has_word(super, ctl_names[i], ','))
                    snprintf(m->v1[i], sizeof m->v1[i], "%s", mnt);
        }
    }
    fclose(f);
    decide_mode(m);
    return 0;
}

/* ---- create / attach / destroy ----------------------------------------- */

static int mkdir_p1(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

/* Parent cgroups this process has already made (and, on v2, whose
 * controllers it has enabled): a service makes one cgroup per evaluation
 * under the same parent in every hierarchy, and the mkdir that answers
 * EEXIST and the subtree_control writes cost a path walk each. If a parent
 * disappears (an operator removed it), the child's mkdir fails with ENOENT
 * and the parent is made again. */
static pthread_mutex_t parents_mu = PTHREAD_MUTEX_INITIALIZER;
static char parents[16][CGROUP_PATH_MAX];
static int nparents;

static bool parent_known(const char *pdir)
{
    bool known = false;
    pthread_mutex_lock(&parents_mu);
    for (int i = 0; i < nparents && !known; i++)
        known = !strcmp(parents[i], pdir);
    pthread_mutex_unlock(&parents_mu);
    return known;
}

static void parent_remember(const char *pdir, bool known)
{
    pthread_mutex_lock(&parents_mu);
    int at = -1;
    for (int i = 0; i < nparents; i++)
        if (!strcmp(parents[i], pdir))
            at = i;
    if (known && at < 0 && nparents < (int)(sizeof parents / sizeof parents[0]))
        snprintf(parents[nparents++], sizeof parents[0], "%s", pdir);
    else if (!known && at >= 0)
        memcpy(parents[at], parents[--nparents], sizeof parents[0]);
    pthread_mutex_unlock(&parents_mu);
}

/* mkdir child under pdir, making pdir (and running prep on it) first when
 * this process has not yet done so or the child's mkdir says it is gone. */
static int mkdir_under(const char *pdir, const char *child, int (*prep)(const char *, void *),
                       void *arg, const char **failed)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        /* without prep (v1) the child's mkdir says whether the parent is
         * there: a fresh process (each `clearbox run`) skips six mkdirs
         * that would answer EEXIST */
        if (attempt || (prep && !parent_known(pdir))) {
            int rc = mkdir_p1(pdir);
            if (rc == 0 && prep)
                rc = prep(pdir, arg);
            if (rc < 0) {
                *failed = pdir;
                return rc;
            }
            parent_remember(pdir, true);
        }
        if (mkdir(child, 0755) == 0)
            return 0;
        int e = errno;
        if (e != ENOENT || attempt) {
            *failed = child;
            return -e;
        }
        parent_remember(pdir, false);
    }
    *failed = child;
    return -ENOENT;
}

struct v2_prep {
    const char *root;
    char *err;
    size_t errlen;
};

/* Enable the controllers for our subtree; cpu and io are optional. */
static int v2_enable(const char *pdir, void *arg)
{
    struct v2_prep *vp = arg;
    static const char *const want[] = {"+memory", "+pids", "+cpu", "+io"};
    for (size_t i = 0; i < 4; i++) {
        cgroup_write_file(vp->root, "cgroup.subtree_control", want[i]);
        int rc = cgroup_write_file(pdir, "cgroup.subtree_control", want[i]);
        if (rc < 0 && i < 2)
            return err_sys(vp->err, vp->errlen, rc, "enable %s in %s/cgroup.subtree_control",
                           want[i] + 1, pdir);
    }
    return 0;
}

int cgroup_v2_apply(struct cgroup *cg, const struct cgroup_limits *lim, char *err, size_t errlen)
{
    const char *d = cg->dir[0];
    char val[64];
    int rc;
    if (lim->memory_max_bytes) {
        snprintf(val, sizeof val, "%" PRIu64, lim->memory_max_bytes);
        if ((rc = cgroup_write_file(d, "memory.max", val)) < 0)
            return err_sys(err, errlen, rc, "write %s/memory.max", d);
        cg->swap_limited = cgroup_write_file(d, "memory.swap.max", "0") == 0;
        int64_t back;
        if (read_i64(d, "memory.max", &back) < 0 || back > (int64_t)lim->memory_max_bytes)
            return err_set(err, errlen, -EIO, "memory.max did not take %s", val);
    }
    if (lim->pids_max) {
        snprintf(val, sizeof val, "%" PRIu64, lim->pids_max);
        if ((rc = cgroup_write_file(d, "pids.max", val)) < 0)
            return err_sys(err, errlen, rc, "write %s/pids.max", d);
    }
    if (lim->cpu_cores_milli) {
        snprintf(val, sizeof val, "%" PRIu64 " 100000", lim->cpu_cores_milli * 100);
        cgroup_write_file(d, "cpu.max", val); /* optional: cpu may be unavailable */
    }
    struct stat st;
    char p[CGROUP_PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/memory.peak", d);
    cg->peak_native = stat(p, &st) == 0;
    snprintf(p, sizeof p, "%s/pids.peak", d);
    cg->pids_peak_native = stat(p, &st) == 0;
    return 0;
}

/* v1 I/O bytes: the recursive counter where the kernel has it. */
#define BLKIO_BYTES_FILE "blkio.throttle.io_service_bytes_recursive"
#define BLKIO_BYTES_FILE_OLD "blkio.throttle.io_service_bytes"

/* Files kept open (struct cgroup's sfd[]): sampled while the program runs,
 * read again at the end, or (a pool slot's) read in every evaluation. */
enum { SF_MEM, SF_PIDS, SF_CPU, SF_MEMEV, SF_PIDSEV, SF_CPU_USER, SF_CPU_SYS, SF_IO, SF_N };
_Static_assert(SF_N <= sizeof ((struct cgroup *)0)->sfd / sizeof(int), "sfd[] too small");

/* ---- the pool (v1; cgroup.h) ------------------------------------------- */

/* Counters kept per slot: cpuacct usage, usage_user, usage_sys; blkio read,
 * write bytes (struct cgroup's base[] and raw[]). */
enum { RAW_CPU, RAW_CPU_USER, RAW_CPU_SYS, RAW_IO_R, RAW_IO_W, RAW_N };
_Static_assert(RAW_N == sizeof ((struct cgroup *)0)->base / sizeof(int64_t), "base[] size");

struct cgroup_pool_slot {
    char name[48];                      /* pool-<pid>-<k> */
    char dir[CG_NCTL][CGROUP_PATH_MAX]; /* the slot's directories ("" elsewhere) */
    int lock_fd;                        /* flock on <state dir>/<name>.lock */
    int64_t quota;                      /* cpu.cfs_quota_us in force: -1 none, INT64_MIN unknown */
    int64_t base[RAW_N];                /* the counters when the last evaluation ended */
    /* kept open for the slot's life: each directory's cgroup.procs (join,
     * then checked empty), and its counters (sfd[] indices; -1 none) */
    int procs_fd[CG_NCTL];
    int sfd[SF_N];
    bool lent;
};

static struct {
    pthread_mutex_t mu;
    bool on;
    struct cgroup_mounts m;
    char parent[CGROUP_PATH_MAX];
    char sd[PATH_MAX];
    struct cgroup_pool_slot **slots;
    size_t n, cap;
    unsigned made; /* slots made so far: names pool-<pid>-1, -2, ... */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A hierarchy with no per-evaluation state: never one that carries the
 * memory or pids controller (co-mounted controllers share a hierarchy). */
static bool poolable(const struct cgroup_mounts *m, int i)
{
    return (i == CG_CPU || i == CG_CPUACCT || i == CG_FREEZER || i == CG_BLKIO) && m->v1[i][0] &&
           strcmp(m->v1[i], m->v1[CG_MEMORY]) != 0 && strcmp(m->v1[i], m->v1[CG_PIDS]) != 0;
}

static bool same_mounts(const struct cgroup_mounts *a, const struct cgroup_mounts *b)
{
    if (a->mode != b->mode)
        return false;
    for (int i = 0; i < CG_NCTL; i++)
        if (strcmp(a->v1[i], b->v1[i]) != 0)
            return false;
    return true;
}

/* The slot's directory in controller i's hierarchy (co-mounted controllers
 * share the first one's), or NULL. */
static const char *slot_dir(const struct cgroup_pool_slot *s, const struct cgroup_mounts *m, int i)
{
    if (!poolable(m, i))
        return NULL;
    for (int j = 0; j <= i; j++)
        if (s->dir[j][0] && !strcmp(m->v1[j], m->v1[i]))
            return s->dir[j];
    return NULL;
}

/* Close the slot's files and rmdir its cgroups; then, if they are gone,
 * unlink its lock file. If a cgroup stays (tasks in it), the lock file stays
 * too: once our lock is released, gc sees a dead owner and kills what is
 * left. Frees s. */
static int slot_remove(struct cgroup_pool_slot *s, char *err, size_t errlen)
{
    int rc = 0;
    for (int i = 0; i < CG_NCTL; i++)
        if (s->procs_fd[i] >= 0)
            close(s->procs_fd[i]);
    for (int k = 0; k < SF_N; k++)
        if (s->sfd[k] >= 0)
            close(s->sfd[k]);
    for (int i = 0; i < CG_NCTL; i++)
        if (s->dir[i][0] && rmdir(s->dir[i]) < 0 && errno != ENOENT && rc == 0)
            rc = err_sys(err, errlen, -errno, "rmdir %s", s->dir[i]);
    if (rc == 0) { /* unlinked while still locked: gc never takes it for a dead one */
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s.lock", pool.sd, s->name);
        unlink(p);
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
    return rc;
}

/* A new slot: its lock first (so gc never takes its cgroups for a dead
 * run's), then a directory in every poolable hierarchy. NULL on failure
 * (the caller makes fresh directories instead). Called with pool.mu held. */
static struct cgroup_pool_slot *slot_make(void)
{
    const struct cgroup_mounts *m = &pool.m;
    struct cgroup_pool_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lock_fd = -1;
    for (int i = 0; i < CG_NCTL; i++)
        s->procs_fd[i] = -1;
    for (int k = 0; k < SF_N; k++)
        s->sfd[k] = -1;
    s->quota = -1; /* a new cgroup has no quota */
    char name[sizeof s->name]; /* a copy: s->dir's snprintf below must not read *s */
    snprintf(name, sizeof name, "pool-%d-%u", (int)getpid(), pool.made + 1);
    memcpy(s->name, name, sizeof name);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s.lock", pool.sd, s->name);
    s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        slot_remove(s, NULL, 0);
        return NULL;
    }
    pool.made++;
    for (int i = 0; i < CG_NCTL; i++) {
        if (!poolable(m, i))
            continue;
        bool shared = false;
        for (int j = 0; j < i; j++)
            shared |= poolable(m, j) && !strcmp(m->v1[j], m->v1[i]);
        if (shared)
            continue;
        char pdir[CGROUP_PATH_MAX];
        const char *failed;
        if (snprintf(pdir, sizeof pdir, "%s/%s", m->v1[i], pool.parent) >= (int)sizeof pdir ||
            snprintf(s->dir[i], sizeof s->dir[i], "%s/%s", pdir, name) >=
                (int)sizeof s->dir[i] ||
            mkdir_under(pdir, s->dir[i], NULL, NULL, &failed) < 0) {
            s->dir[i][0] = '\0';
            slot_remove(s, NULL, 0);
            return NULL;
        }
        if ((s->procs_fd[i] = open_in(s->dir[i], "cgroup.procs", O_RDWR)) < 0) {
            slot_remove(s, NULL, 0);
            return NULL;
        }
    }
    /* the counters every evaluation reads (one that cannot be opened is
     * opened by name when read, as without the pool) */
    const char *d;
    if ((d = slot_dir(s, m, CG_CPUACCT))) {
        s->sfd[SF_CPU] = open_in(d, "cpuacct.usage", O_RDONLY);
        s->sfd[SF_CPU_USER] = open_in(d, "cpuacct.usage_user", O_RDONLY);
        s->sfd[SF_CPU_SYS] = open_in(d, "cpuacct.usage_sys", O_RDONLY);
    }
    if ((d = slot_dir(s, m, CG_BLKIO)) &&
        (s->sfd[SF_IO] = open_in(d, BLKIO_BYTES_FILE, O_RDONLY)) < 0)
        s->sfd[SF_IO] = open_in(d, BLKIO_BYTES_FILE_OLD, O_RDONLY);
    return s;
}

/* Room for one more slot in pool.slots (pool.mu held). */
static bool pool_room(void)
{
    if (pool.n < pool.cap)
        return true;
    size_t nc = pool.cap ? pool.cap * 2 : 8;
    void *ns = realloc(pool.slots, nc * sizeof *pool.slots);
    if (!ns)
        return false;
    pool.slots = ns;
    pool.cap = nc;
    return true;
}

/* Is every directory of the slot still there and empty? Checked again as it
 * is lent: an operator, or gc of an older version that does not know lock
 * files, may have removed it, or host root moved a task in, since it came
 * back. */
static bool slot_intact(const struct cgroup_pool_slot *s)
{
    for (int i = 0; i < CG_NCTL; i++) {
        char b[32];
        if (s->dir[i][0] && pread(s->procs_fd[i], b, sizeof b, 0) != 0)
            return false;
    }
    return true;
}

/* A slot for a cgroup made with m under parent, or NULL (no pool for these,
 * or none could be made: the caller makes fresh directories). */
static struct cgroup_pool_slot *pool_get(const struct cgroup_mounts *m, const char *parent)
{
    struct cgroup_pool_slot *s = NULL;
    pthread_mutex_lock(&pool.mu);
    if (pool.on && !strcmp(parent, pool.parent) && same_mounts(m, &pool.m)) {
        for (size_t i = 0; i < pool.n && !s; i++) {
            if (pool.slots[i]->lent)
                continue;
            if (slot_intact(pool.slots[i])) {
                s = pool.slots[i];
            } else { /* someone removed or joined it since: drop it */
                slot_remove(pool.slots[i], NULL, 0);
                pool.slots[i--] = pool.slots[--pool.n];
            }
        }
        if (!s && pool_room() && (s = slot_make()))
            pool.slots[pool.n++] = s;
        if (s)
            s->lent = true;
    }
    pthread_mutex_unlock(&pool.mu);
    return s;
}

/* Take the slot back from cg: kept when it can serve the next evaluation
 * as if new (no task joined it, or it is empty, was never frozen and its
 * final counters were read: they become its base), removed otherwise. */
static int pool_put(struct cgroup *cg, char *err, size_t errlen)
{
    struct cgroup_pool_slot *s = cg->slot;
    cg->slot = NULL;
    bool keep = true;
    if (cg->attached) {
        keep = cg->raw_ok && !cg->froze;
        keep = keep && slot_intact(s);
        if (keep)
            memcpy(s->base, cg->raw, sizeof s->base);
    }
    pthread_mutex_lock(&pool.mu);
    s->lent = false;
    if (keep && pool.on) {
        pthread_mutex_unlock(&pool.mu);
        return 0;
    }
    for (size_t i = 0; i < pool.n; i++)
        if (pool.slots[i] == s) {
            pool.slots[i] = pool.slots[--pool.n];
            break;
        }
    int rc = slot_remove(s, err, errlen);
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

int cgroup_pool_start(const struct cgroup_mounts *m, const char *parent, const char *state_dir,
                      char *err, size_t errlen)
{
    bool any = false;
    for (int i = 0; i < CG_NCTL; i++)
        any |= m->mode == CGROUP_V1 && poolable(m, i);
    if (!any)
        return 0;
    if (strlen(parent) >= sizeof pool.parent || strlen(state_dir) >= sizeof pool.sd)
        return err_set(err, errlen, -ENAMETOOLONG, "cgroup pool: path too long");
    pthread_mutex_lock(&pool.mu);
    if (pool.on || pool.n) {
        pthread_mutex_unlock(&pool.mu);
        return err_set(err, errlen, -EBUSY, "the cgroup pool is already running");
    }
    pool.m = *m;
    snprintf(pool.parent, sizeof pool.parent, "%s", parent);
    snprintf(pool.sd, sizeof pool.sd, "%s", state_dir);
    pool.on = true;
    pthread_mutex_unlock(&pool.mu);
    return 1;
}

void cgroup_pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.on = false;
    size_t k = 0;
    for (size_t i = 0; i < pool.n; i++) {
        if (pool.slots[i]->lent)
            pool.slots[k++] = pool.slots[i]; /* removed when it comes back */
        else
            slot_remove(pool.slots[i], NULL, 0);
    }
    pool.n = k;
    if (!k) {
        free(pool.slots);
        pool.slots = NULL;
        pool.cap = 0;
    }
    pthread_mutex_unlock(&pool.mu);
}

/* A counter's value since the slot's base (a counter someone reset below
 * the base counts from zero). */
static int64_t since(int64_t v, int64_t base) { return v >= base ? v - base : v; }

int cgroup_create(struct cgroup *cg, const struct cgroup_mounts *m, const char *parent,
                  const char *name, const struct cgroup_limits *lim, char *err, size_t errlen)
{
    memset(cg, 0, sizeof *cg);
    cg->mode = m->mode;
    cg->u.memory_peak = cg->u.pids_peak = -1;
    cg->last_memory = -1;
    if (m->mode == CGROUP_NONE)
        return 0;
    char val[64];
    int rc;
    if (m->mode == CGROUP_V2) {
        char pdir[CGROUP_PATH_MAX];
        if (snprintf(pdir, sizeof pdir, "%s/%s", m->v2, parent) >= (int)sizeof pdir)
            return err_set(err, errlen, -ENAMETOOLONG, "cgroup path too long");
        if (snprintf(cg->dir[0], sizeof cg->dir[0], "%s/%s", pdir, name) >= (int)sizeof cg->dir[0])
            return err_set(err, errlen, -ENAMETOOLONG, "cgroup path too long");
        struct v2_prep vp = {m->v2, err, errlen};
        const char *failed = NULL;
        err[0] = '\0';
        if ((rc = mkdir_under(pdir, cg->dir[0], v2_enable, &vp, &failed)) < 0)
            return err[0] ? rc : err_sys(err, errlen, rc, "mkdir %s", failed);
        cg->made[0] = true;
        if ((rc = cgroup_v2_apply(cg, lim, err, errlen)) < 0)
            goto fail;
        return 0;
    }
    /* v1: one directory per hierarchy; co-mounted controllers share it.
     * Those of the stateless hierarchies come from the pool when it lends
     * to us (cgroup.h), the others are made here. */
    cg->slot = pool_get(m, parent);
    if (cg->slot) {
        memcpy(cg->base, cg->slot->base, sizeof cg->base);
        for (int k = 0; k < SF_N; k++)
            if (cg->slot->sfd[k] >= 0) {
                cg->sfd[k] = cg->slot->sfd[k] + 1;
                cg->sfd_slot |= 1u << k;
            }
    }
    for (int i = 0; i < CG_NCTL; i++) {
        if (!m->v1[i][0])
            continue;
        bool shared = false;
        for (int j = 0; j < i; j++)
            if (!strcmp(m->v1[j], m->v1[i])) {
                memcpy(cg->dir[i], cg->dir[j], sizeof cg->dir[i]);
                cg->pooled[i] = cg->pooled[j];
                shared = true;
            }
        if (shared)
            continue;
        if (cg->slot && cg->slot->dir[i][0]) {
            memcpy(cg->dir[i], cg->slot->dir[i], sizeof cg->dir[i]);
            cg->made[i] = cg->pooled[i] = true;
            continue;
        }
        char pdir[CGROUP_PATH_MAX];
        if (snprintf(pdir, sizeof pdir, "%s/%s", m->v1[i], parent) >= (int)sizeof pdir) {
            rc = err_set(err, errlen, -ENAMETOOLONG, "cgroup path too long");
            goto fail;
        }
        if (snprintf(cg->dir[i], sizeof cg->dir[i], "%s/%s", pdir, name) >=
            (int)sizeof cg->dir[i]) {
            rc = err_set(err, errlen, -ENAMETOOLONG, "cgroup path too long");
            goto fail;
        }
        const char *failed = NULL;
        if ((rc = mkdir_under(pdir, cg->dir[i], NULL, NULL, &failed)) < 0) {
            err_sys(err, errlen, rc, "mkdir %s", failed);
            cg->dir[i][0] = '\0';
            goto fail;
        }
        cg->made[i] = true;
    }
    if (lim->memory_max_bytes && cg->dir[CG_MEMORY][0]) {
        const char *d = cg->dir[CG_MEMORY];
        snprintf(val, sizeof val, "%" PRIu64, lim->memory_max_bytes);
        if ((rc = cgroup_write_file(d, "memory.limit_in_bytes", val)) < 0) {
            err_sys(err, errlen, rc, "write %s/memory.limit_in_bytes", d);
            goto fail;
        }
        cg->swap_limited = cgroup_write_file(d, "memory.memsw.limit_in_bytes", val) == 0;
        if (!cg->swap_limited)
            cgroup_write_file(d, "memory.swappiness", "0");
        int64_t back;
        if (read_i64(d, "memory.limit_in_bytes", &back) < 0 ||
            back > (int64_t)lim->memory_max_bytes) {
            rc = err_set(err, errlen, -EIO, "memory.limit_in_bytes did not take %s", val);
            goto fail;
        }
        cg->peak_native = true;
    } else if (lim->memory_max_bytes) {
        rc = err_set(err, errlen, -ENOTSUP, "no v1 memory controller mounted");
        goto fail;
    }
    if (lim->pids_max && cg->dir[CG_PIDS][0]) {
        snprintf(val, sizeof val, "%" PRIu64, lim->pids_max);
        if ((rc = cgroup_write_file(cg->dir[CG_PIDS], "pids.max", val)) < 0) {
            err_sys(err, errlen, rc, "write %s/pids.max", cg->dir[CG_PIDS]);
            goto fail;
        }
        struct stat st;
        char p[CGROUP_PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/pids.peak", cg->dir[CG_PIDS]);
        cg->pids_peak_native = stat(p, &st) == 0;
    } else if (lim->pids_max) {
        rc = err_set(err, errlen, -ENOTSUP, "no v1 pids controller mounted");
        goto fail;
    }
    if (cg->dir[CG_CPU][0]) {
        /* a new cgroup's period is the kernel's default, 100000 us, whatever
         * its parent's: the quota below is in those units. A pooled one
         * keeps the quota it was last given (-1: none, as a new one). */
        int64_t want = lim->cpu_cores_milli ? (int64_t)(lim->cpu_cores_milli * 100) : -1;
        int64_t *have = cg->pooled[CG_CPU] ? &cg->slot->quota : NULL;
        if (want != (have ? *have : -1)) {
            snprintf(val, sizeof val, "%" PRId64, want);
            if (have)
                *have = INT64_MIN; /* unknown until the write succeeds */
            if ((rc = cgroup_write_file(cg->dir[CG_CPU], "cpu.cfs_quota_us", val)) < 0) {
                err_sys(err, errlen, rc, "write %s/cpu.cfs_quota_us", cg->dir[CG_CPU]);
                goto fail;
            }
            if (have)
                *have = want;
        }
    }
    return 0;
fail:
    cgroup_destroy(cg, NULL, 0);
    return rc < 0 ? rc : -EIO;
}

int cgroup_attach(struct cgroup *cg, pid_t pid, char *err, size_t errlen)
{
    char val[32];
    snprintf(val, sizeof val, "%d", (int)pid);
    cg->attached = true;
    for (int i = 0; i < CG_NCTL; i++) {
        if (!cg->made[i])
            continue;
        int rc;
        if (cg->pooled[i]) {
            ssize_t w = pwrite(cg->slot->procs_fd[i], val, strlen(val), 0);
            rc = w == (ssize_t)strlen(val) ? 0 : (w < 0 ? -errno : -EIO);
        } else {
            rc = cgroup_write_file(cg->dir[i], "cgroup.procs", val);
        }
        if (rc < 0)
            return err_sys(err, errlen, rc, "attach %d to %s", (int)pid, cg->dir[i]);
    }
    return 0;
}

static const char *dir_of(const struct cgroup *cg, enum cgroup_ctl c)
{
    if (cg->mode == CGROUP_V2)
        return cg->dir[0][0] ? cg->dir[0] : NULL;
    if (cg->mode == CGROUP_V1)
        return cg->dir[c][0] ? cg->dir[c] : NULL;
    return NULL;
}

/* The files read every few ms (and those read again at the end) stay open:
 * a kernfs file read again at offset 0 shows fresh figures. */

static int sample_read(struct cgroup *cg, int which, const char *dir, const char *file, char *out,
                       size_t outlen)
{
    if (!cg->sfd[which]) {
        int fd = open_in(dir, file, O_RDONLY);
        if (fd < 0)
            return -errno;
        cg->sfd[which] = fd + 1;
    }
    ssize_t r;
    do
        r = pread(cg->sfd[which] - 1, out, outlen - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    out[r] = '\0';
    return (int)r;
}

static int sample_i64(struct cgroup *cg, int which, const char *dir, const char *file, int64_t *out)
{
    char b[64];
    int n = sample_read(cg, which, dir, file, b, sizeof b);
    if (n <= 0)
        return n < 0 ? n : -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(b, &end, 10);
    if (errno || end == b)
        return -EINVAL;
    *out = v;
    return 0;
}

static void sample_close(struct cgroup *cg)
{
    for (size_t i = 0; i < sizeof cg->sfd / sizeof cg->sfd[0]; i++)
        if (cg->sfd[i]) {
            if (!(cg->sfd_slot & (1u << i)))
                close(cg->sfd[i] - 1);
            cg->sfd[i] = 0;
        }
    cg->sfd_slot = 0;
}

/* CPU usage (user, system, total) in ns. Returns whether every v1 counter
 * was read (their raw values are kept for a pooled slot's next base). */
static bool read_cpu(struct cgroup *cg, struct cgroup_usage *u)
{
    if (cg->mode == CGROUP_V2) {
        char b[1024];
        int64_t v;
        if (cgroup_read_file(cg->dir[0], "cpu.stat", b, sizeof b) < 0)
            return false;
        if (cgroup_parse_keyed(b, "usage_usec", &v) == 0)
            u->cpu_total_ns = v * 1000;
        if (cgroup_parse_keyed(b, "user_usec", &v) == 0)
            u->cpu_user_ns = v * 1000;
        if (cgroup_parse_keyed(b, "system_usec", &v) == 0)
            u->cpu_system_ns = v * 1000;
        return true;
    }
    const char *d = dir_of(cg, CG_CPUACCT);
    if (!d)
        return true;
    static const char *const files[3] = {"cpuacct.usage", "cpuacct.usage_user",
                                         "cpuacct.usage_sys"};
    static const int sf[3] = {SF_CPU, SF_CPU_USER, SF_CPU_SYS};
    int64_t *out[3] = {&u->cpu_total_ns, &u->cpu_user_ns, &u->cpu_system_ns};
    bool all = true;
    for (int k = RAW_CPU; k <= RAW_CPU_SYS; k++) {
        int64_t v;
        if (sample_i64(cg, sf[k], d, files[k], &v) == 0) {
            cg->raw[k] = v;
            *out[k] = since(v, cg->base[k]);
        } else {
            all = false;
        }
    }
    return all;
}

int cgroup_sample(struct cgroup *cg, uint64_t now)
{
    if (cg->mode == CGROUP_NONE)
        return -ENOTSUP;
    struct cgroup_usage *u = &cg->u;
    int64_t mem = -1, pids = -1;
    const char *d;
    if ((d = dir_of(cg, CG_MEMORY)))
        sample_i64(cg, SF_MEM, d,
                   cg->mode == CGROUP_V2 ? "memory.current" : "memory.usage_in_bytes", &mem);
    if ((d = dir_of(cg, CG_PIDS)))
        sample_i64(cg, SF_PIDS, d, "pids.current", &pids);
    int64_t t = -1;
    if (cg->mode == CGROUP_V2) {
        char b[1024];
        if (sample_read(cg, SF_CPU, cg->dir[0], "cpu.stat", b, sizeof b) > 0 &&
            cgroup_parse_keyed(b, "usage_usec", &t) == 0)
            t *= 1000;
    } else if ((d = dir_of(cg, CG_CPUACCT))) {
        if (sample_i64(cg, SF_CPU, d, "cpuacct.usage", &t) == 0)
            t = since(t, cg->base[RAW_CPU]);
    }
    if (t >= 0)
        u->cpu_total_ns = t;
    if (mem >= 0) {
        u->memory_current = mem;
        if (mem > u->memory_peak)
            u->memory_peak = mem;
        if (cg->last_memory >= 0 && now > cg->last_sample_ns) {
            double dt = (double)(now - cg->last_sample_ns) / 1e9;
            u->memory_mb_seconds +=
                ((double)(mem + cg->last_memory) / 2.0) / (1024.0 * 1024.0) * dt;
        }
        cg->last_memory = mem;
        cg->last_sample_ns = now;
    }
    if (pids >= 0) {
        u->pids_current = pids;
        if (pids > u->pids_peak)
            u->pids_peak = pids;
    }
    return 0;
}

/* Final figures: cpu split, native peaks, io, events. */
static void read_final(struct cgroup *cg)
{
    struct cgroup_usage *u = &cg->u;
    const char *d;
    char b[4096];
    int64_t v;
    bool raw_ok = read_cpu(cg, u);
    if ((d = dir_of(cg, CG_MEMORY))) {
        if (cg->peak_native &&
            read_i64(d, cg->mode == CGROUP_V2 ? "memory.peak" : "memory.max_usage_in_bytes", &v) ==
                0 &&
            v > u->memory_peak)
            u->memory_peak = v;
        const char *f = cg->mode == CGROUP_V2 ? "memory.events" : "memory.oom_control";
        if (sample_read(cg, SF_MEMEV, d, f, b, sizeof b) > 0 &&
            cgroup_parse_keyed(b, "oom_kill", &v) == 0)
            u->oom_kills = v;
    }
    if ((d = dir_of(cg, CG_PIDS))) {
        if (cg->pids_peak_native && read_i64(d, "pids.peak", &v) == 0 && v > u->pids_peak)
            u->pids_peak = v;
        if (sample_read(cg, SF_PIDSEV, d, "pids.events", b, sizeof b) > 0 &&
            cgroup_parse_keyed(b, "max", &v) == 0)
            u->pids_max_hits = v;
    }
    if (cg->mode == CGROUP_V2) {
        if (sample_read(cg, SF_IO, cg->dir[0], "io.stat", b, sizeof b) >= 0)
            cgroup_parse_io_stat(b, &u->io_read_bytes, &u->io_write_bytes);
    } else if ((d = dir_of(cg, CG_BLKIO))) {
        int64_t r, w;
        if (sample_read(cg, SF_IO, d, BLKIO_BYTES_FILE, b, sizeof b) >= 0 ||
            sample_read(cg, SF_IO, d, BLKIO_BYTES_FILE_OLD, b, sizeof b) >= 0) {
            cgroup_parse_blkio(b, &r, &w);
            cg->raw[RAW_IO_R] = r;
            cg->raw[RAW_IO_W] = w;
            u->io_read_bytes = since(r, cg->base[RAW_IO_R]);
            u->io_write_bytes = since(w, cg->base[RAW_IO_W]);
        } else {
            raw_ok = false;
        }
    }
    cg->raw_ok = raw_ok;
}

/* Events that decide a status, cheap enough to read while sampling. */
static void read_events(struct cgroup *cg)
{
    const char *d;
    char b[1024];
    int64_t v;
    if ((d = dir_of(cg, CG_MEMORY))) {
        const char *f = cg->mode == CGROUP_V2 ? "memory.events" : "memory.oom_control";
        if (sample_read(cg, SF_MEMEV, d, f, b, sizeof b) > 0 &&
            cgroup_parse_keyed(b, "oom_kill", &v) == 0)
            cg->u.oom_kills = v;
    }
    if ((d = dir_of(cg, CG_PIDS)) &&
        sample_read(cg, SF_PIDSEV, d, "pids.events", b, sizeof b) > 0 &&
        cgroup_parse_keyed(b, "max", &v) == 0)
        cg->u.pids_max_hits = v;
}

int cgroup_sample_events(struct cgroup *cg)
{
    read_events(cg);
    return 0;
}

int cgroup_finish(struct cgroup *cg, uint64_t now)
{
    if (cg->mode == CGROUP_NONE)
        return -ENOTSUP;
    cgroup_sample(cg, now);
    read_final(cg);
    return 0;
}

static const char *procs_dir(const struct cgroup *cg)
{
    if (cg->mode == CGROUP_V2)
        return cg->dir[0];
    for (int i = 0; i < CG_NCTL; i++)
        if (cg->made[i] && (i == CG_FREEZER || i == CG_PIDS || i == CG_MEMORY))
            return cg->dir[i];
    for (int i = 0; i < CG_NCTL; i++)
        if (cg->made[i])
            return cg->dir[i];
    return NULL;
}

/* SIGKILL every pid in dir/cgroup.procs; returns how many were listed. */
static int kill_listed(const char *dir)
{
    char b[65536];
    int n = cgroup_read_file(dir, "cgroup.procs", b, sizeof b);
    if (n <= 0)
        return 0;
    int count = 0;
    for (char *p = b; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 1) {
            kill((pid_t)pid, SIGKILL);
            count++;
        }
        p = end;
        while (*p == '\n')
            p++;
    }
    return count;
}

bool cgroup_populated(const struct cgroup *cg)
{
    if (cg->mode == CGROUP_NONE)
        return false;
    char b[256];
    if (cg->mode == CGROUP_V2) {
        int64_t v;
        if (cgroup_read_file(cg->dir[0], "cgroup.events", b, sizeof b) > 0 &&
            cgroup_parse_keyed(b, "populated", &v) == 0)
            return v != 0;
    }
    for (int i = 0; i < CG_NCTL; i++) {
        if (!cg->made[i])
            continue;
        int n = cgroup_read_file(cg->dir[i], "cgroup.procs", b, sizeof b);
        if (n != 0)
            return true; /* tasks, or unreadable: assume the worst */
    }
    return false;
}

int cgroup_kill(struct cgroup *cg, uint64_t timeout_ms, char *err, size_t errlen)
{
    if (cg->mode == CGROUP_NONE)
        return 0;
    const char *pd = procs_dir(cg);
    if (!pd)
        return 0;
    /* The usual end: init died and took its pid namespace along, so nothing
     * is left and freeze/kill/thaw would only cost time (~0.2 ms on v1).
     * Every task of the sandbox is in every hierarchy's cgroup (init was
     * attached to all before it forked), so on v1 one hierarchy's list
     * answers; only host root could move a task in one hierarchy alone, and
     * then the rmdir below fails loudly (EBUSY) instead of hiding it. */
    char b[256];
    if (cg->mode == CGROUP_V1 ? cgroup_read_file(pd, "cgroup.procs", b, sizeof b) == 0
                              : !cgroup_populated(cg))
        return 0;
    if (cg->mode == CGROUP_V2) {
        if (cgroup_write_file(cg->dir[0], "cgroup.kill", "1") < 0)
            kill_listed(pd); /* kernels before 5.14 */
    } else {
        const char *fz = cg->made[CG_FREEZER] ? cg->dir[CG_FREEZER] : NULL;
        cg->froze = fz != NULL; /* even a failed write may have started it */
        if (fz && cgroup_write_file(fz, "freezer.state", "FROZEN") == 0) {
            char st[32];
            for (int i = 0; i < 200; i++) { /* FREEZING -> FROZEN, normally at once */
                if (cgroup_read_file(fz, "freezer.state", st, sizeof st) > 0 &&
                    !strncmp(st, "FROZEN", 6))
                    break;
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
            }
            kill_listed(fz);
            cgroup_write_file(fz, "freezer.state", "THAWED");
        }
        for (int i = 0; i < CG_NCTL; i++)
            if (cg->made[i])
                kill_listed(cg->dir[i]);
    }
    uint64_t deadline = time_mono_ns() + timeout_ms * 1000000ull;
    while (cgroup_populated(cg)) {
        if (time_mono_ns() > deadline)
            return err_set(err, errlen, -EBUSY, "cgroup %s still has tasks after kill", pd);
        for (int i = 0; i < CG_NCTL; i++)
            if (cg->made[i])
                kill_listed(cg->dir[i]);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int cgroup_destroy(struct cgroup *cg, char *err, size_t errlen)
{
    int rc = 0;
    sample_close(cg);
    for (int i = 0; i < CG_NCTL; i++) {
        if (!cg->made[i])
            continue;
        if (cg->pooled[i]) { /* the slot's: pool_put below */
            cg->made[i] = false;
            continue;
        }
        /* rmdir may race the last task's exit for a moment: retry briefly */
        int tries = 0;
        while (rmdir(cg->dir[i]) < 0) {
            if (errno == ENOENT)
                break;
            if (errno != EBUSY || ++tries > 500) {
                rc = err_sys(err, errlen, -errno, "rmdir %s", cg->dir[i]);
                break;
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        cg->made[i] = false;
    }
    if (cg->slot) {
        int prc = pool_put(cg, rc == 0 ? err : NULL, errlen);
        if (rc == 0)
            rc = prc;
    }
    return rc;
}
