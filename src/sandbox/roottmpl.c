/* roottmpl.c - the sandbox root's fixed part, made once per host
 * (roottmpl.h). */
#include "sandbox/roottmpl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/fnv.h"
#include "util/io.h"

/* what build() writes beyond the tables (modes, empty device files): change
 * it when that changes; the tables themselves are hashed into the key */
#define ROOTTMPL_FORMAT "clearbox root template 1"
#define ROOTTMPL_PRUNE_AGE_S (25 * 3600) /* longer than any run (24 h) */
#define ROOTTMPL_TEMP_AGE_S 600          /* a build that died half-way */
#define ROOTTMPL_TOUCH_S 3600            /* a used template's mtime is at most this old */

const char *const roottmpl_dirs[ROOTTMPL_NDIRS] = {"usr", "etc", "dev", "proc", "tmp", "work"};
const char *const roottmpl_tops[ROOTTMPL_NTOPS] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
const char *const roottmpl_devs[ROOTTMPL_NDEVS] = {"null", "zero", "full", "random", "urandom"};
const struct roottmpl_pair roottmpl_etc[ROOTTMPL_NETC] = {
    {"passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
               "sandbox:x:1000:1000:sandbox:/work:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
    {"group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"},
    {"hosts", "127.0.0.1 localhost clearbox\n::1 localhost ip6-localhost ip6-loopback\n"},
    {"resolv.conf", "nameserver 127.0.0.1\nnameserver ::1\noptions timeout:1 attempts:1\n"},
    {"nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                      "networks: files\nprotocols: files\nservices: files\n"},
    {"hostname", "clearbox\n"},
};
const struct roottmpl_pair roottmpl_dev_links[ROOTTMPL_NLINKS] = {{"fd", "/proc/self/fd"},
                                                    {"stdin", "/proc/self/fd/0"},
                                                    {"stdout", "/proc/self/fd/1"},
                                                    {"stderr", "/proc/self/fd/2"}};


/* Everything the skeleton depends on, hashed. */
static uint64_t key_of(const char *rootfs)
{
    uint64_t h = fnv1a64(FNV1A64_INIT, ROOTTMPL_FORMAT, sizeof ROOTTMPL_FORMAT);
    /* the skeleton's own definition: a clearbox that writes another /etc
     * or other names gets its own template, with or without a new format */
    for (size_t i = 0; i < ROOTTMPL_NDIRS; i++)
        h = fnv1a64(h, roottmpl_dirs[i], strlen(roottmpl_dirs[i]) + 1);
    for (size_t i = 0; i < ROOTTMPL_NTOPS; i++)
        h = fnv1a64(h, roottmpl_tops[i], strlen(roottmpl_tops[i]) + 1);
    for (size_t i = 0; i < ROOTTMPL_NETC; i++) {
        h = fnv1a64(h, roottmpl_etc[i].name, strlen(roottmpl_etc[i].name) + 1);
        h = fnv1a64(h, roottmpl_etc[i].text, strlen(roottmpl_etc[i].text) + 1);
    }
    for (size_t i = 0; i < ROOTTMPL_NDEVS; i++)
        h = fnv1a64(h, roottmpl_devs[i], strlen(roottmpl_devs[i]) + 1);
    for (size_t i = 0; i < ROOTTMPL_NLINKS; i++) {
        h = fnv1a64(h, roottmpl_dev_links[i].name, strlen(roottmpl_dev_links[i].name) + 1);
        h = fnv1a64(h, roottmpl_dev_links[i].text, strlen(roottmpl_dev_links[i].text) + 1);
    }
    h = fnv1a64(h, rootfs, strlen(rootfs) + 1);
    char p[PATH_MAX], t[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", rootfs);
    if (stat(p, &st) == 0) {
        uint64_t id[5] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
                          (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec};
        h = fnv1a64(h, id, sizeof id);
    } else {
        h = fnv1a64(h, "no ld.so.cache", 15);
    }
    for (size_t i = 0; i < ROOTTMPL_NTOPS; i++) {
        snprintf(p, sizeof p, "%s/%s", rootfs, roottmpl_tops[i]);
        ssize_t n = readlink(p, t, sizeof t - 1);
        if (n >= 0) {
            h = fnv1a64(h, "link", 5);
            h = fnv1a64(h, t, (size_t)n);
        } else if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            h = fnv1a64(h, "dir", 4);
        } else {
            h = fnv1a64(h, "none", 5);
        }
    }
    return h;
}

/* A usable template: a real directory of root's, writable by no one else. */
static bool usable_st(const char *dir, struct stat *st)
{
    return lstat(dir, st) == 0 && S_ISDIR(st->st_mode) && st->st_uid == 0 &&
           !(st->st_mode & 022);
}

static bool usable(const char *dir)
{
    struct stat st;
    return usable_st(dir, &st);
}

static int put_file(int dfd, const char *name, const char *text, size_t len, mode_t mode)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    int rc = len ? io_write_all(fd, text, len) : 0;
    if (rc == 0 && fchmod(fd, mode) < 0) /* not the umask's */
        rc = -errno;
    close(fd);
    return rc;
}

/* ld.so.cache: the rootfs's own copy (at most 8 MiB) */
static int put_copy(int dfd, const char *name, const char *src)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return errno == ENOENT ? 0 : -errno; /* optional */
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return -e;
    }
    char b[65536];
    size_t total = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(in, b, sizeof b);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        total += (size_t)r;
        if (total > ((size_t)8 << 20)) {
            rc = -EFBIG;
            break;
        }
        if ((rc = io_write_all(out, b, (size_t)r)) < 0)
            break;
    }
    if (rc == 0 && fchmod(out, 0644) < 0)
        rc = -errno;
    close(in);
    close(out);
    return rc;
}

int roottmpl_build(const char *dir, const char *rootfs, char *err, size_t errlen)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0)
        return err_sys(err, errlen, -errno, "open %s", dir);
    int rc = 0;
    char p[PATH_MAX], t[PATH_MAX];
    const char *what = "";
    for (size_t i = 0; i < ROOTTMPL_NDIRS && rc == 0; i++)
        if (mkdirat(dfd, roottmpl_dirs[i], 0755) < 0 || fchmodat(dfd, roottmpl_dirs[i], 0755, 0) < 0)
            rc = -errno, what = roottmpl_dirs[i];
    for (size_t i = 0; i < ROOTTMPL_NTOPS && rc == 0; i++) {
        snprintf(p, sizeof p, "%s/%s", rootfs, roottmpl_tops[i]);
        ssize_t n = readlink(p, t, sizeof t - 1);
        struct stat st;
        if (n >= 0) {
            t[n] = '\0';
            if (symlinkat(t, dfd, roottmpl_tops[i]) < 0)
                rc = -errno, what = roottmpl_tops[i];
        } else if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            /* a mount point: init binds the rootfs's directory there */
            if (mkdirat(dfd, roottmpl_tops[i], 0755) < 0 ||
                fchmodat(dfd, roottmpl_tops[i], 0755, 0) < 0)
                rc = -errno, what = roottmpl_tops[i];
        }
    }
    for (size_t i = 0; i < ROOTTMPL_NETC && rc == 0; i++) {
        snprintf(p, sizeof p, "etc/%s", roottmpl_etc[i].name);
        if ((rc = put_file(dfd, p, roottmpl_etc[i].text, strlen(roottmpl_etc[i].text), 0644)) < 0)
            what = p;
    }
    if (rc == 0) {
        snprintf(t, sizeof t, "%s/etc/ld.so.cache", rootfs);
        if ((rc = put_copy(dfd, "etc/ld.so.cache", t)) < 0)
            what = "etc/ld.so.cache";
    }
    for (size_t i = 0; i < ROOTTMPL_NDEVS && rc == 0; i++) {
        /* empty files: init binds the host's nodes on them */
        snprintf(p, sizeof p, "dev/%s", roottmpl_devs[i]);
        if ((rc = put_file(dfd, p, "", 0, 0666)) < 0)
            what = p;
    }
    for (size_t i = 0; i < ROOTTMPL_NLINKS && rc == 0; i++) {
        snprintf(p, sizeof p, "dev/%s", roottmpl_dev_links[i].name);
        if (symlinkat(roottmpl_dev_links[i].text, dfd, p) < 0)
            rc = -errno, what = p;
    }
    if (rc == 0 && fchmod(dfd, 0755) < 0)
        rc = -errno, what = ".";
    close(dfd);
    return rc < 0 ? err_sys(err, errlen, rc, "root skeleton in %s: %s", dir, what) : 0;
}

/* rm -r of a template (or a half-built one): only what build() makes. */
static void remove_tree(const char *dir)
{
    char p[PATH_MAX];
    for (size_t i = 0; i < ROOTTMPL_NETC; i++) {
        snprintf(p, sizeof p, "%s/etc/%s", dir, roottmpl_etc[i].name);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", dir);
    unlink(p);
    for (size_t i = 0; i < ROOTTMPL_NDEVS; i++) {
        snprintf(p, sizeof p, "%s/dev/%s", dir, roottmpl_devs[i]);
        unlink(p);
    }
    for (size_t i = 0; i < ROOTTMPL_NLINKS; i++) {
        snprintf(p, sizeof p, "%s/dev/%s", dir, roottmpl_dev_links[i].name);
        unlink(p);
    }
    for (size_t i = 0; i < ROOTTMPL_NTOPS; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, roottmpl_tops[i]);
        if (unlink(p) < 0)
            rmdir(p);
    }
    for (size_t i = 0; i < ROOTTMPL_NDIRS; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, roottmpl_dirs[i]);
        rmdir(p);
    }
    rmdir(dir);
    snprintf(p, sizeof p, "%s.src", dir);
    unlink(p);
}

/* <template>.src holds the rootfs it was made from ("" = the host), so
 * prune() can drop the template of a rootfs directory that is gone. */
static void write_src(const char *dir, const char *rootfs)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s.src", dir) >= (int)sizeof p)
        return;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return; /* best effort: without it, the age rule alone applies */
    (void)io_write_all(fd, rootfs, strlen(rootfs));
    close(fd);
}

/* The template's rootfs directory no longer exists (a temporary rootfs). */
static bool rootfs_gone(const char *dir)
{
    char p[PATH_MAX], src[PATH_MAX];
    if (snprintf(p, sizeof p, "%s.src", dir) >= (int)sizeof p)
        return false;
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, src, sizeof src - 1);
    close(fd);
    if (n <= 0)
        return false; /* the host's, or unreadable */
    src[n] = '\0';
    struct stat st;
    return src[0] == '/' && lstat(src, &st) < 0 && errno == ENOENT;
}

/* Old templates (another host state) no run can still use, templates of a
 * rootfs directory that is gone (after ten minutes), and builds that died
 * half-way. */
static void prune(const char *sd, const char *keep)
{
    DIR *d = opendir(sd);
    if (!d)
        return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        bool tmpl = !strncmp(de->d_name, "root-", 5), temp = !strncmp(de->d_name, ".root-", 6);
        if ((!tmpl && !temp) || !strcmp(de->d_name, keep))
            continue;
        char p[PATH_MAX];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", sd, de->d_name) >= (int)sizeof p ||
            lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        long age = (long)(now - st.st_mtime);
        if (age > (tmpl ? ROOTTMPL_PRUNE_AGE_S : ROOTTMPL_TEMP_AGE_S) ||
            (tmpl && age > ROOTTMPL_TEMP_AGE_S && rootfs_gone(p)))
            remove_tree(p);
    }
    closedir(d);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

int roottmpl_ensure(const char *state_dir, const char *rootfs, char *out, size_t outlen,
                    char *err, size_t errlen)
{
    if (geteuid() != 0)
        return err_set(err, errlen, -EPERM, "the root template needs root");
    char name[32], dir[PATH_MAX];
    snprintf(name, sizeof name, "root-%016" PRIx64, key_of(rootfs));
    if (snprintf(dir, sizeof dir, "%s/%s", state_dir, name) >= (int)sizeof dir ||
        strlen(dir) >= outlen)
        return err_set(err, errlen, -ENAMETOOLONG, "root template path too long");
    /* the directory that holds it must be root's alone too */
    if (!usable(state_dir))
        return err_set(err, errlen, -EPERM, "%s is not root's alone", state_dir);
    pthread_mutex_lock(&mu);
    int rc = 0;
    struct stat st;
    if (usable_st(dir, &st)) {
        /* in use: keep its mtime within the hour, so that prune() (a day)
         * never takes a template a process still binds */
        if (time(NULL) - st.st_mtime > ROOTTMPL_TOUCH_S)
            utimensat(AT_FDCWD, dir, NULL, 0);
    } else {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s/.%s.%d.%ld", state_dir, name, (int)getpid(),
                 (long)time(NULL));
        if (mkdir(tmp, 0700) < 0) {
            rc = err_sys(err, errlen, -errno, "mkdir %s", tmp);
        } else if ((rc = roottmpl_build(tmp, rootfs, err, errlen)) < 0) {
            remove_tree(tmp);
        } else if ((write_src(dir, rootfs), rename(tmp, dir) < 0)) {
            int e = errno;
            remove_tree(tmp); /* another process made it first: use theirs */
            if (!usable(dir))
                rc = err_sys(err, errlen, -e, "rename %s to %s", tmp, dir);
        } else {
            prune(state_dir, name);
        }
    }
    pthread_mutex_unlock(&mu);
    if (rc == 0)
        memcpy(out, dir, strlen(dir) + 1);
    return rc;
}
