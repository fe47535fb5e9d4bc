/* gc.c - remove what a crashed clearbox left behind.
 *
 * A live run holds an exclusive flock on <state>/<id>.lock (or, with
 * --output-dir, on <state>/<id>/lock beside its workspace) for its whole
 * life, so a lock we can take belongs to nobody: the file goes, or the
 * state directory with its workspace mount. A cgroup <hierarchy>/<parent>/<id>
 * is stale when no live run holds either lock; its tasks are killed (the
 * same freeze/kill/thaw as a normal teardown) and it is removed. Entries
 * younger than GC_MIN_AGE_S are left alone: they may belong to a run that is
 * starting (a run makes its cgroups, then, while its program starts, its
 * state directory, then takes the lock; the age rule covers those moments); a
 * cgroup that still has tasks is left alone until it is older than any run
 * can be. The slots of a cgroup pool (cgroup.h) are judged the same way:
 * each holds the lock of <state>/pool-<pid>-<k>.lock while its process
 * lives. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "sandbox/internal.h"
#include "sandbox/sandbox.h"
#include "util/err.h"

/* A run makes its state directory, then takes the lock: anything younger
 * than this may be a run starting up, not a crashed one. */
#define GC_MIN_AGE_S 10
/* Longer than the longest timeout a run may have (24 h). */
#define GC_POPULATED_AGE_S (25 * 3600)

/* freezer.state of a v1 freezer cgroup is FROZEN or FREEZING. */
static bool v1_frozen(const char *dir)
{
    char path[CGROUP_PATH_MAX + 32], st[32] = "";
    if (snprintf(path, sizeof path, "%s/freezer.state", dir) >= (int)sizeof path)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, st, sizeof st - 1);
    close(fd);
    return n > 0 && (strncmp(st, "FROZEN", 6) == 0 || strncmp(st, "FREEZING", 8) == 0);
}

static bool young(const char *path, long age_s)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return false;
    return time(NULL) - st.st_mtime < age_s;
}

/* Does someone hold the flock on path? */
static bool lock_held(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return false;
    bool held = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

/* Is the run <id> alive (either of its locks held by someone)? */
static bool run_alive(const char *sd, const char *id)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/%s.lock", sd, id) < (int)sizeof p && lock_held(p))
        return true;
    return snprintf(p, sizeof p, "%s/%s/lock", sd, id) < (int)sizeof p && lock_held(p);
}

/* The run has its lock file or state directory here and nobody holds its
 * lock: its owner died. (A run with no entry here may belong to another
 * state directory.) */
static bool run_owner_dead(const char *sd, const char *id)
{
    char p[PATH_MAX], f[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", sd, id) >= (int)sizeof p ||
        snprintf(f, sizeof f, "%s/%s.lock", sd, id) >= (int)sizeof f)
        return false;
    return ((lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) ||
            (lstat(f, &st) == 0 && S_ISREG(st.st_mode))) &&
           !run_alive(sd, id);
}

static bool pool_slot_owner_gone(const char *name);

/* <sd>/<id>.lock of a run that died (nobody holds it), once older than
 * GC_MIN_AGE_S (a pool slot's as soon as its owner is gone): removed.
 * Returns -1 if name is no such file. */
static int gc_run_lock(const char *sd, const char *name, struct buf *report)
{
    size_t l = strlen(name);
    if (l < 6 || strcmp(name + l - 5, ".lock") != 0)
        return -1;
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", sd, name) >= (int)sizeof p || lstat(p, &st) < 0 ||
        !S_ISREG(st.st_mode))
        return -1;
    char slot[NAME_MAX + 1];
    snprintf(slot, sizeof slot, "%.*s", (int)(l - 5), name);
    if (lock_held(p) || (young(p, GC_MIN_AGE_S) && !pool_slot_owner_gone(slot)) || unlink(p) < 0)
        return 0;
    buf_printf(report, "removed stale lock %s\n", p);
    return 1;
}

/* The owner's pid of pool-<pid>-<k> (a slot of a process's cgroup pool,
 * cgroup.h; also its lock file's name without ".lock"), or 0. */
static pid_t pool_slot_pid(const char *name)
{
    if (strncmp(name, "pool-", 5) != 0)
        return 0;
    char *end;
    long pid = strtol(name + 5, &end, 10);
    return pid > 0 && pid <= INT32_MAX && *end == '-' ? (pid_t)pid : 0;
}

/* A pool slot whose owner is gone: no process has its pid. The age rule
 * does not apply (a slot is made by its living owner, lock first), so a
 * service restarted after a crash gets its predecessor's slots removed at
 * once. A reused pid only delays that. */
static bool pool_slot_owner_gone(const char *name)
{
    pid_t pid = pool_slot_pid(name);
    return pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
}

/* A pool slot's lock lives in its owner's state directory; when that is
 * another one than ours, the owner's pid says whether the slot may still
 * be lent out (a reused pid only delays its removal). */
static bool pool_slot_owner_elsewhere(const char *sd, const char *name)
{
    pid_t pid = pool_slot_pid(name);
    if (!pid)
        return false;
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s.lock", sd, name) >= (int)sizeof p)
        return true; /* cannot tell: leave it */
    if (lstat(p, &st) == 0)
        return false; /* its lock is here: run_alive has judged */
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* <sd>/node-<id>.lock of a `clearbox serve` that did not stop cleanly (a
 * clean stop removes its own): stale when we can take its lock. Removed
 * while we hold the lock; a service starting meanwhile finds the path gone
 * and makes a new file (worker.c node_lock checks that the path still names
 * the file it locked). */
static int gc_node_lock(const char *sd, const char *name, struct buf *report)
{
    size_t l = strlen(name);
    if (strncmp(name, "node-", 5) != 0 || l < 11 || strcmp(name + l - 5, ".lock") != 0)
        return -1; /* not a node lock */
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/%s", sd, name) >= (int)sizeof p)
        return 0;
    int fd = open(p, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return 0;
    int removed = 0;
    struct stat fst, pst;
    if (fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        stat(p, &pst) == 0 && fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino &&
        unlink(p) == 0) {
        buf_printf(report, "removed stale node lock %s\n", p);
        removed = 1;
    }
    close(fd);
    return removed;
}

static int gc_state(const char *sd, struct buf *report)
{
    DIR *d = opendir(sd);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (!strncmp(de->d_name, "root-", 5))
            continue; /* a root template: roottmpl.c prunes old ones itself */
        int nl = gc_node_lock(sd, de->d_name, report);
        if (nl < 0)
            nl = gc_run_lock(sd, de->d_name, report);
        if (nl >= 0) {
            removed += nl;
            continue;
        }
        if (run_alive(sd, de->d_name))
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", sd, de->d_name) >= (int)sizeof p ||
            young(p, GC_MIN_AGE_S))
            continue;
        if (snprintf(p, sizeof p, "%s/%s/ws", sd, de->d_name) >= (int)sizeof p)
            continue;
        if (umount2(p, MNT_DETACH) == 0)
            buf_printf(report, "unmounted %s\n", p);
        rmdir(p);
        snprintf(p, sizeof p, "%s/%s/root", sd, de->d_name);
        umount2(p, MNT_DETACH);
        rmdir(p);
        snprintf(p, sizeof p, "%s/%s/lock", sd, de->d_name);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s", sd, de->d_name);
        if (rmdir(p) == 0) {
            buf_printf(report, "removed state directory %s\n", p);
            removed++;
        }
    }
    closedir(d);
    return removed;
}

static int gc_cgroups(const char *sd, const char *parent, struct buf *report)
{
    struct cgroup_mounts m;
    if (cgroup_mounts_detect(&m, NULL, NULL, 0) < 0 || m.mode == CGROUP_NONE)
        return 0;
    int removed = 0;
    /* every hierarchy that may hold <parent>/<id> */
    const char *roots[CG_NCTL + 1];
    size_t nr = 0;
    if (m.v2[0])
        roots[nr++] = m.v2;
    /* The freezer hierarchy first: killing a run there empties its cgroups in
     * the other hierarchies, which this same pass can then remove. */
    if (m.v1[CG_FREEZER][0] && !(m.v2[0] && !strcmp(m.v2, m.v1[CG_FREEZER])))
        roots[nr++] = m.v1[CG_FREEZER];
    for (int i = 0; i < CG_NCTL; i++) {
        bool dup = false;
        for (size_t j = 0; j < nr; j++)
            if (!strcmp(roots[j], m.v1[i]))
                dup = true;
        if (m.v1[i][0] && !dup)
            roots[nr++] = m.v1[i];
    }
    for (size_t k = 0; k < nr; k++) {
        char pdir[CGROUP_PATH_MAX];
        if (snprintf(pdir, sizeof pdir, "%s/%s", roots[k], parent) >= (int)sizeof pdir)
            continue;
        DIR *d = opendir(pdir);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_type != DT_DIR || de->d_name[0] == '.')
                continue;
            if (run_alive(sd, de->d_name) || pool_slot_owner_elsewhere(sd, de->d_name))
                continue;
            /* one cgroup per hierarchy; kill with the freezer when this is it */
            struct cgroup cg;
            memset(&cg, 0, sizeof cg);
            cg.mode = (m.v2[0] && !strcmp(roots[k], m.v2)) ? CGROUP_V2 : CGROUP_V1;
            int slot = 0;
            if (cg.mode == CGROUP_V1)
                for (int i = 0; i < CG_NCTL; i++)
                    if (!strcmp(m.v1[i], roots[k]))
                        slot = i;
            if (snprintf(cg.dir[slot], sizeof cg.dir[slot], "%s/%s", pdir, de->d_name) >=
                (int)sizeof cg.dir[slot])
                continue;
            if (cg.mode == CGROUP_V1 && strcmp(m.v1[CG_FREEZER], roots[k]) == 0)
                slot = CG_FREEZER;
            cg.made[slot] = true;
            if (slot != 0 && cg.mode == CGROUP_V2)
                continue;
            /* A crashed run's init dies with it (PDEATHSIG) and takes its
             * pid namespace along, so its cgroups are empty. A populated
             * cgroup without a lock here is more likely a live run with
             * another state directory: leave it until it is older than
             * any run can be. */
            /* ...except a frozen one: only a teardown freezes (holding its
             * run's lock), so frozen without a live run means the owner died
             * in the middle of freeze/kill/thaw, and its tasks stay frozen
             * (PDEATHSIG cannot reach them) until someone thaws and kills. */
            bool abandoned_frozen = cg.mode == CGROUP_V1 && slot == CG_FREEZER &&
                                    v1_frozen(cg.dir[slot]);
            /* ...and a run whose state directory here has lost its owner:
             * its leftover tasks (say, a child between clone and its
             * PDEATHSIG) are ours to kill. */
            bool owner_dead = run_owner_dead(sd, de->d_name);
            if ((young(cg.dir[slot], GC_MIN_AGE_S) && !pool_slot_owner_gone(de->d_name)) ||
                (cgroup_populated(&cg) && !abandoned_frozen && !owner_dead &&
                 young(cg.dir[slot], GC_POPULATED_AGE_S)))
                continue;
            cgroup_kill(&cg, 2000, NULL, 0);
            char path[CGROUP_PATH_MAX];
            snprintf(path, sizeof path, "%s", cg.dir[slot]);
            if (cgroup_destroy(&cg, NULL, 0) == 0) {
                buf_printf(report, "removed cgroup %s\n", path);
                removed++;
            }
        }
        closedir(d);
    }
    return removed;
}

int sandbox_gc(const char *state_dir, const char *cgroup_parent, struct buf *report, char *err,
               size_t errlen)
{
    /* The same default a run uses (root: /run/clearbox; otherwise
     * $XDG_RUNTIME_DIR/clearbox or /tmp/clearbox-<uid>), so gc looks where
     * this user's crashed runs left their state (the engine's buffer size). */
    char sdbuf[PATH_MAX / 4];
    const char *sd = state_dir;
    if (!sd) {
        sandbox_state_dir_default(sdbuf, sizeof sdbuf);
        sd = sdbuf;
    }
    const char *parent = cgroup_parent ? cgroup_parent : SANDBOX_CGROUP_PARENT_DEFAULT;
    /* cgroups first: whether a populated cgroup's owner died is read from
     * its state directory, which gc_state then removes */
    int b = gc_cgroups(sd, parent, report);
    int a = gc_state(sd, report);
    if (a < 0)
        return err_sys(err, errlen, a, "scan %s", sd);
    return a + b;
}
