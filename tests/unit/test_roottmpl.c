/* test_roottmpl.c - the sandbox root's fixed part, made once per host
 * (src/sandbox/roottmpl.h), on real directories: what it holds, that it is
 * made once and then reused, that a changed rootfs gets a new one and old
 * ones are pruned only once no run can use them, that a template or state
 * directory someone else could write is refused, and that a sandbox still
 * runs, on its own tmpfs skeleton, when the template cannot be used.
 * Needs root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/roottmpl.h"
#include "sandbox/sandbox.h"
#include "sandbox_testlib.h"
#include "test.h"

/* a small rootfs: usr/, merged-usr links, its own ld.so.cache */
static void make_rootfs(const char *rf, const char *cache)
{
    char p[PATH_MAX + 32];
    mkdir(rf, 0755);
    snprintf(p, sizeof p, "%s/usr", rf);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/etc", rf);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/bin", rf);
    symlink("usr/bin", p);
    snprintf(p, sizeof p, "%s/lib64", rf);
    mkdir(p, 0755); /* a real directory: a mount point in the template */
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", rf);
    FILE *f = fopen(p, "w");
    fputs(cache, f);
    fclose(f);
}

/* A state directory and a rootfs in this test's directory: sd, rf. */
static void setup(char sd[512], char rf[512])
{
    snprintf(sd, 512, "%s/state", test_tmpdir());
    snprintf(rf, 512, "%s/rootfs", test_tmpdir());
    mkdir(sd, 0711);
    make_rootfs(rf, "cache one");
}

/* Set a path's atime and mtime to age_s seconds ago. */
static int age_by(const char *path, long age_s)
{
    struct timeval tv[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    return utimes(path, tv);
}

static bool is_link_to(const char *p, const char *target)
{
    char t[PATH_MAX];
    ssize_t n = readlink(p, t, sizeof t - 1);
    if (n < 0)
        return false;
    t[n] = '\0';
    return !strcmp(t, target);
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

TEST(template_holds_the_skeleton_and_is_reused)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512], t1[512], t2[512], p[PATH_MAX], err[256];
    setup(sd, rf);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t1, sizeof t1, err, sizeof err), 0);
    struct stat st;
    ASSERT_EQ(lstat(t1, &st), 0);
    ASSERT(S_ISDIR(st.st_mode) && st.st_uid == 0 && (st.st_mode & 07777) == 0755);
    for (size_t i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", t1, roottmpl_dirs[i]);
        ASSERT_MSG(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s", p);
        snprintf(p, sizeof p, "%s/etc/%s", t1, roottmpl_etc[i].name);
        ASSERT_EQ(file_size(p), (long)strlen(roottmpl_etc[i].text));
    }
    snprintf(p, sizeof p, "%s/bin", t1);
    ASSERT(is_link_to(p, "usr/bin"));
    snprintf(p, sizeof p, "%s/lib64", t1);
    ASSERT(lstat(p, &st) == 0 && S_ISDIR(st.st_mode));
    snprintf(p, sizeof p, "%s/sbin", t1);
    ASSERT(lstat(p, &st) < 0); /* absent in the rootfs, absent here */
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", t1);
    ASSERT_EQ(file_size(p), 9L); /* the rootfs's own, "cache one" */
    for (size_t i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/dev/%s", t1, roottmpl_devs[i]);
        ASSERT(stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0);
    }
    snprintf(p, sizeof p, "%s/dev/fd", t1);
    ASSERT(is_link_to(p, "/proc/self/fd"));
    /* the second call finds it: same path, not rebuilt */
    snprintf(p, sizeof p, "%s/etc/passwd", t1);
    struct stat a, b;
    ASSERT_EQ(stat(p, &a), 0);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err), 0);
    ASSERT_STREQ(t1, t2);
    ASSERT_EQ(stat(p, &b), 0);
    ASSERT_EQ((long)a.st_ino, (long)b.st_ino);
}

TEST(changed_rootfs_gets_a_new_template_and_old_ones_go_after_a_day)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512], t1[512], t2[512], t3[512], p[PATH_MAX];
    char err[256];
    setup(sd, rf);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t1, sizeof t1, err, sizeof err), 0);
    /* ldconfig rewrote the cache: a new template; the old one may still be
     * in use by a running sandbox, so it stays */
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", rf);
    unlink(p);
    make_rootfs(rf, "cache number two");
    ASSERT_EQ(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err), 0);
    ASSERT(strcmp(t1, t2) != 0);
    struct stat st;
    ASSERT_EQ(lstat(t1, &st), 0);
    /* a day later no run can use it: the next new template prunes it */
    ASSERT_EQ(age_by(t1, 26 * 3600), 0);
    unlink(p);
    make_rootfs(rf, "cache number three!");
    ASSERT_EQ(roottmpl_ensure(sd, rf, t3, sizeof t3, err, sizeof err), 0);
    ASSERT(lstat(t1, &st) < 0 && errno == ENOENT);
    ASSERT_EQ(lstat(t2, &st), 0); /* younger than a day: kept */
    ASSERT_EQ(lstat(t3, &st), 0);
}

TEST(a_template_others_could_write_is_refused)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512], t1[512], t2[512], err[256];
    setup(sd, rf);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t1, sizeof t1, err, sizeof err), 0);
    ASSERT_EQ(chmod(t1, 0777), 0);
    ASSERT(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err) < 0);
    ASSERT_EQ(chmod(t1, 0755), 0);
    ASSERT_EQ(chown(t1, 1234, 1234), 0);
    ASSERT(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err) < 0);
    ASSERT_EQ(chown(t1, 0, 0), 0);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err), 0);
    /* the directory that holds them must be root's alone too */
    ASSERT_EQ(chmod(sd, 0777), 0);
    ASSERT(roottmpl_ensure(sd, rf, t2, sizeof t2, err, sizeof err) < 0);
    ASSERT_CONTAINS(err, "root's alone");
    ASSERT_EQ(chmod(sd, 0711), 0);
}

/* Through the engine: the program's root is the template, read-only; with
 * an unusable template the run still works on a tmpfs skeleton. */
static void run_look(const char *sd, struct sandbox_result *r)
{
    struct sandbox_spec s;
    sb_spec(&s, "sh",
            "cat /etc/hostname; ls /dev | tr '\\n' ' '; echo; "
            "touch /etc/x 2>/dev/null && echo WRITABLE; touch /x 2>/dev/null && echo WRITABLE; "
            "while read -r id pid dev root mp rest; do [ \"$mp\" = / ] && "
            "echo \"root mount $root ${rest#* - }\"; done < /proc/self/mountinfo\n");
    s.state_dir = sd;
    char err[256];
    ASSERT_EQ(sandbox_run(&s, r, err, sizeof err), 0);
}

TEST(sandbox_root_comes_from_the_template_or_a_tmpfs)
{
    if (!sb_need_root())
        return;
    char sd[512];
    /* init (the host's uid 100000) must be able to walk to the template */
    ASSERT_EQ(chmod(test_tmpdir(), 0711), 0);
    snprintf(sd, sizeof sd, "%s/state", test_tmpdir());
    mkdir(sd, 0711);
    chmod(sd, 0711);
    struct sandbox_result r;
    run_look(sd, &r);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_CONTAINS(r.out.data, "clearbox\n");
    ASSERT_CONTAINS(r.out.data, "fd full null random stderr stdin stdout urandom zero");
    ASSERT(!strstr(r.out.data, "WRITABLE"));
    ASSERT_CONTAINS(r.out.data, "/root-"); /* the root mount: the template, bound */
    ASSERT(!strstr(r.out.data, "root mount / tmpfs"));
    char tmpl[PATH_MAX], err[256];
    ASSERT_EQ(roottmpl_ensure(sd, "", tmpl, sizeof tmpl, err, sizeof err), 0);
    sandbox_result_free(&r);
    /* someone could write it: refused, and the run builds its own root */
    ASSERT_EQ(chmod(tmpl, 0777), 0);
    run_look(sd, &r);
    ASSERT_EQ(chmod(tmpl, 0755), 0);
    ASSERT_EQ(r.status, SANDBOX_COMPLETED);
    ASSERT_CONTAINS(r.out.data, "clearbox\n");
    ASSERT_CONTAINS(r.out.data, "fd full null random stderr stdin stdout urandom zero");
    ASSERT(!strstr(r.out.data, "WRITABLE"));
    ASSERT_CONTAINS(r.out.data, "root mount / tmpfs"); /* its own skeleton on a tmpfs */
    sandbox_result_free(&r);
}

TEST(a_template_in_use_is_refreshed_and_not_pruned)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512], rf2[512], t1[512], t2[512], err[256];
    setup(sd, rf);
    snprintf(rf2, sizeof rf2, "%s/rootfs2", test_tmpdir());
    make_rootfs(rf2, "another rootfs");
    ASSERT_EQ(roottmpl_ensure(sd, rf, t1, sizeof t1, err, sizeof err), 0);
    /* a long-lived service has used it for two days */
    ASSERT_EQ(age_by(t1, 48 * 3600), 0);
    ASSERT_EQ(roottmpl_ensure(sd, rf, t1, sizeof t1, err, sizeof err), 0);
    struct stat st;
    ASSERT_EQ(lstat(t1, &st), 0);
    ASSERT(time(NULL) - st.st_mtime < 60); /* refreshed by the use */
    /* another rootfs's first run prunes only what nobody used for a day */
    ASSERT_EQ(roottmpl_ensure(sd, rf2, t2, sizeof t2, err, sizeof err), 0);
    ASSERT(strcmp(t1, t2) != 0);
    ASSERT_EQ(lstat(t1, &st), 0);
}

TEST(concurrent_first_runs_agree_on_one_template)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512];
    setup(sd, rf);
    enum { N = 6 };
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    for (int i = 0; i < N; i++) {
        if (fork() == 0) {
            char t[512], err[256];
            int rc = roottmpl_ensure(sd, rf, t, sizeof t, err, sizeof err);
            char line[600];
            int n = snprintf(line, sizeof line, "%d %s\n", rc, rc == 0 ? t : err);
            _exit(write(p[1], line, (size_t)n) == n ? 0 : 1);
        }
    }
    close(p[1]);
    char all[8192] = "";
    size_t len = 0;
    ssize_t r;
    while ((r = read(p[0], all + len, sizeof all - 1 - len)) > 0)
        len += (size_t)r;
    all[len] = '\0';
    close(p[0]);
    for (int i = 0; i < N; i++)
        wait(NULL);
    /* every one got the same template, and no half-built one is left */
    char first[600] = "";
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        ASSERT_MSG(!strncmp(l, "0 ", 2), "%s", l);
        if (!lines++)
            snprintf(first, sizeof first, "%s", l);
        ASSERT_STREQ(l, first);
    }
    ASSERT_EQ(lines, N);
    DIR *d = opendir(sd);
    ASSERT(d);
    int entries = 0, temps = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        entries++;
        temps += !strncmp(de->d_name, ".root-", 6);
    }
    closedir(d);
    ASSERT_EQ(temps, 0);
    ASSERT_EQ(entries, 2); /* the template and its .src */
}

TEST(the_template_of_a_deleted_rootfs_goes_with_the_next_new_one)
{
    if (!sb_need_root())
        return;
    char sd[512], rf[512], rf2[512], keep[512], gone[512], t[512], p[PATH_MAX], err[256];
    setup(sd, rf);
    snprintf(rf2, sizeof rf2, "%s/rootfs-temporary", test_tmpdir());
    make_rootfs(rf2, "a test's rootfs");
    ASSERT_EQ(roottmpl_ensure(sd, rf, keep, sizeof keep, err, sizeof err), 0);
    ASSERT_EQ(roottmpl_ensure(sd, rf2, gone, sizeof gone, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s.src", gone);
    struct stat st;
    ASSERT_EQ(stat(p, &st), 0);
    ASSERT_EQ((long)st.st_size, (long)strlen(rf2));
    /* the test that made it is over: its rootfs is gone */
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rf2);
    ASSERT_EQ(system(cmd), 0);
    /* a fresh one stays (a run may just have started with it) */
    make_rootfs(rf, "cache one, again");
    ASSERT_EQ(roottmpl_ensure(sd, rf, t, sizeof t, err, sizeof err), 0);
    ASSERT_EQ(lstat(gone, &st), 0);
    /* twenty minutes later, the next new template takes it and its .src */
    ASSERT_EQ(age_by(gone, 1200), 0);
    ASSERT_EQ(age_by(keep, 1200), 0);
    make_rootfs(rf, "cache one, a third time");
    ASSERT_EQ(roottmpl_ensure(sd, rf, t, sizeof t, err, sizeof err), 0);
    ASSERT(lstat(gone, &st) < 0 && errno == ENOENT);
    ASSERT(lstat(p, &st) < 0 && errno == ENOENT);
    ASSERT_EQ(lstat(keep, &st), 0); /* its rootfs exists: the day rule */
}
