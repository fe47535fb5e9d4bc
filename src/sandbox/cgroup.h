/* cgroup.h - per-evaluation control groups, v2 or v1, and their accounting.
 *
 * Layout: <hierarchy>/<parent>/<name>, parent "clearbox" by default, made in
 * the unified hierarchy (v2) or in each v1 hierarchy that carries a controller
 * we use (memory, pids, cpu, cpuacct, freezer, blkio; co-mounted controllers
 * share one directory). Mode detection reads /proc/self/mountinfo: v2 when a
 * cgroup2 mount offers memory and pids in cgroup.controllers, else v1 when
 * memory or pids is mounted as v1, else none (every limit is then degraded).
 *
 * Limits: memory (no swap: memory.swap.max=0, v1 memsw when the kernel has
 * it), pids, CPU bandwidth. Accounting comes from the cgroup files: CPU
 * user/system, memory peak (v2 memory.peak or v1 max_usage_in_bytes, else the
 * sampled maximum), memory integral in MB-seconds (sampled by cgroup_sample),
 * pids peak (pids.peak or sampled), I/O bytes, OOM kills, pids.max hits.
 * Kill: v2 cgroup.kill; v1 freeze, SIGKILL every task, thaw; then wait until
 * empty. Destroy: rmdir every directory made.
 *
 * The pool (v1, long-lived processes: cgroup_pool_start). Four v1
 * hierarchies keep nothing of an evaluation but counters: cpu (its quota),
 * cpuacct (CPU time), freezer (a state we leave thawed) and blkio (I/O
 * bytes). Their directories, named pool-<pid>-<k>, are made once and lent to
 * one evaluation at a time; the counters are read as the difference from
 * what they showed when the previous evaluation ended. The memory and pids
 * hierarchies, whose charges, peaks and failure counts belong to one
 * evaluation, are made fresh every time, as is the one v2 directory. A
 * directory goes back to the pool only when it is empty, was never frozen
 * and its final figures were read; otherwise it is removed. Each slot holds
 * an flock on <state dir>/pool-<pid>-<k>.lock, the same sign of life a run
 * gives, so gc removes the slots of a process that died.
 *
 * Threads: a struct cgroup belongs to one thread. Errors: 0 or negative errno,
 * words in err. cgroup_create leaves nothing behind when it fails. */
#ifndef CLEARBOX_SANDBOX_CGROUP_H
#define CLEARBOX_SANDBOX_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CGROUP_PATH_MAX 512

enum cgroup_mode { CGROUP_NONE = 0, CGROUP_V1, CGROUP_V2 };

enum cgroup_ctl { CG_MEMORY, CG_PIDS, CG_CPU, CG_CPUACCT, CG_FREEZER, CG_BLKIO, CG_NCTL };

/* Where each controller lives (from mountinfo, or given by tests). */
struct cgroup_mounts {
    enum cgroup_mode mode;
    char v2[CGROUP_PATH_MAX];          /* cgroup2 mount, "" if none */
    char v1[CG_NCTL][CGROUP_PATH_MAX]; /* v1 mount per controller, "" if none */
};

struct cgroup_limits {
    uint64_t memory_max_bytes; /* 0: none */
    uint64_t pids_max;         /* 0: none */
    uint64_t cpu_cores_milli;  /* 0: none */
};

struct cgroup_usage {
    int64_t cpu_user_ns, cpu_system_ns, cpu_total_ns; /* -1 unknown */
    int64_t memory_current, memory_peak;              /* bytes, -1 unknown */
    int64_t pids_current, pids_peak;
    int64_t io_read_bytes, io_write_bytes;
    int64_t oom_kills;     /* OOM kills inside the cgroup */
    int64_t pids_max_hits; /* forks refused by pids.max */
    double memory_mb_seconds;
};

struct cgroup_pool_slot;

struct cgroup {
    enum cgroup_mode mode;
    char dir[CG_NCTL][CGROUP_PATH_MAX]; /* v1: per controller ("" none); v2: dir[0] */
    bool made[CG_NCTL];                 /* dir[i] is ours: attach, kill, then rmdir or return */
    bool pooled[CG_NCTL];               /* dir[i] is the pool slot's: returned, not removed */
    struct cgroup_pool_slot *slot;      /* the slot lent to us, or NULL */
    bool attached;                      /* a task was (or may have been) moved in */
    bool froze;                         /* the kill froze the freezer cgroup */
    /* pooled cpuacct/blkio: the raw counters at the start (subtracted from
     * every reading) and at the end (cpu total, user, system; read, write) */
    int64_t base[5], raw[5];
    bool raw_ok;
    bool swap_limited;                  /* no-swap was applied */
    bool peak_native;                   /* memory peak comes from the kernel */
    bool pids_peak_native;
    /* sampling state */
    int sfd[8];         /* files read more than once, kept open (fd + 1; 0: not
                           yet): re-read with pread at 0 instead of
                           open/read/close */
    unsigned sfd_slot;  /* bit i: sfd[i] is the pool slot's, left open */
    uint64_t last_sample_ns;
    int64_t last_memory;
    struct cgroup_usage u;
};

/* Find the hierarchies. root != NULL: use it as a recorded tree, where
 * root/unified (v2) or root/<controller> (v1) are the mounts. */
int cgroup_mounts_detect(struct cgroup_mounts *m, const char *root, char *err, size_t errlen);
const char *cgroup_mode_name(enum cgroup_mode m);

/* Make <parent>/<name> in every hierarchy and apply lim. With mode NONE it
 * does nothing and returns 0. Read back memory limit. */
int cgroup_create(struct cgroup *cg, const struct cgroup_mounts *m, const char *parent,
                  const char *name, const struct cgroup_limits *lim, char *err, size_t errlen);
/* v2: write the limits into cg->dir[0] (exists) and note which native peaks
 * it has. Used by cgroup_create; exposed for the recorded-tree tests. */
int cgroup_v2_apply(struct cgroup *cg, const struct cgroup_limits *lim, char *err, size_t errlen);
/* Move pid into the cgroup (every hierarchy). */
int cgroup_attach(struct cgroup *cg, pid_t pid, char *err, size_t errlen);
/* Read the current figures, update peaks and the memory integral (call every
 * few ms while the program runs, and once at the end). */
int cgroup_sample(struct cgroup *cg, uint64_t now_mono_ns);
/* Read the OOM-kill and pids.max counters into cg->u (cheap; while running). */
int cgroup_sample_events(struct cgroup *cg);
/* Last sample plus the final figures (CPU split, kernel peaks, I/O, events). */
int cgroup_finish(struct cgroup *cg, uint64_t now_mono_ns);
/* Kill every task and wait (up to timeout_ms) until the cgroup is empty. */
int cgroup_kill(struct cgroup *cg, uint64_t timeout_ms, char *err, size_t errlen);
/* Is any task left? (true when unknown) */
bool cgroup_populated(const struct cgroup *cg);
/* rmdir what cgroup_create made (closes the sampled files first). */
int cgroup_destroy(struct cgroup *cg, char *err, size_t errlen);

/* Lend pooled directories to the v1 cgroups made with these mounts and
 * this parent from now on; their slots' locks live in state_dir (which must
 * exist). Returns 1 when it runs, 0 (nothing done) unless m is v1 with a
 * poolable hierarchy, -EBUSY if a pool runs already (one per process). */
int cgroup_pool_start(const struct cgroup_mounts *m, const char *parent, const char *state_dir,
                      char *err, size_t errlen);
/* Remove every slot not lent out (those that are go when returned) and
 * stop lending. */
void cgroup_pool_stop(void);

/* Parsers (exposed for the tests against recorded files). */
/* "key value" lines (memory.events, cpu.stat, pids.events, oom_control): value of key. */
int cgroup_parse_keyed(const char *text, const char *key, int64_t *out);
/* v2 io.stat ("MAJ:MIN rbytes=N wbytes=N ..." per device): sums. */
int cgroup_parse_io_stat(const char *text, int64_t *rbytes, int64_t *wbytes);
/* v1 blkio.throttle.io_service_bytes(_recursive): sums of "Read"/"Write". */
int cgroup_parse_blkio(const char *text, int64_t *rbytes, int64_t *wbytes);

/* Small file helpers shared in the sandbox folder. */
int cgroup_read_file(const char *dir, const char *file, char *out, size_t outlen);
int cgroup_write_file(const char *dir, const char *file, const char *val);

#endif
