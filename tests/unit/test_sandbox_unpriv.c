/* test_sandbox_unpriv.c - the native engine as an unprivileged user (uid
 * 65534): it runs where the kernel allows unprivileged user namespaces, says
 * in policy.degraded what it cannot do without a delegated cgroup, and where
 * user namespaces are forbidden it refuses clearly instead of running
 * unconfined. The test starts as root to become nobody (setresuid) and, for
 * the refusal, to make a user namespace whose user.max_user_namespaces is 0
 * (the limit is per user namespace, so the host is not touched). */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "test.h"
#include "util/buf.h"

#define NOBODY 65534

static const char *py_argv[] = {"/usr/bin/python3", "/work/main.py", NULL};

static const char code[] = "import os, socket\n"
                           "print(os.getuid(), os.getgid())\n"
                           "try:\n"
                           "    socket.create_connection(('192.0.2.7', 443), timeout=0.3)\n"
                           "except OSError as e:\n"
                           "    print('connect failed')\n"
                           "try:\n"
                           "    open('/etc/shadow').read()\n"
                           "except OSError:\n"
                           "    print('no shadow')\n"
                           "open('/work/out.txt', 'w').write('x')\n"
                           "try:\n"
                           "    open('/usr/evil', 'w')\n"
                           "except OSError:\n"
                           "    print('usr read-only')\n";

/* In a child: become nobody, run the program, write the result record (or
 * "ERR rc message") to fd; exit 0. */
static void run_as_nobody(int fd, const char *eval_id)
{
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) < 0)
        _exit(90);
    /* changing ids cleared "dumpable"; an exec'd `clearbox run` has it (the
     * parent must write its child's /proc/PID/uid_map) */
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        _exit(93);
    unsetenv("XDG_RUNTIME_DIR");
    struct sandbox_spec s;
    memset(&s, 0, sizeof s);
    s.language = "python";
    s.code = code;
    s.code_len = strlen(code);
    s.code_name = "main.py";
    s.argv = py_argv;
    s.eval_id = eval_id;
    struct sandbox_result r;
    char err[256];
    int rc = sandbox_run(&s, &r, err, sizeof err);
    struct buf b;
    buf_init(&b, NULL, 0, 1 << 20);
    sandbox_result_json(&r, &b);
    if (rc < 0) {
        char line[512];
        int n = snprintf(line, sizeof line, "ERR %d %s\n", rc, err);
        if (write(fd, line, (size_t)n) < 0)
            _exit(91);
    }
    if (write(fd, b.data, b.len) < 0)
        _exit(92);
    _exit(0);
}

static char *collect(pid_t pid, int rfd, int *status)
{
    static char out[1 << 20];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(rfd, out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(rfd);
    waitpid(pid, status, 0);
    return out;
}

static bool has_str(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i,
                       v) if (json_is_string(v) && !strcmp(json_string_value(v), s)) return true;
    return false;
}

TEST(unprivileged_run_is_contained_and_says_what_is_missing)
{
    if (geteuid() != 0) {
        test_skip("needs root to become nobody");
        return;
    }
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        run_as_nobody(p[1], "t-unpriv");
    }
    close(p[1]);
    int st;
    char *out = collect(pid, p[0], &st);
    ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
    if (!strncmp(out, "ERR", 3) && strstr(out, "forbids unprivileged user namespaces")) {
        test_skip("this kernel forbids unprivileged user namespaces (refusal tested below)");
        return;
    }
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    ASSERT_MSG(d != NULL, "not JSON: %.300s", out);
    ASSERT_STREQ(json_string_value(json_object_get(d, "status")), "completed");
    const char *so = json_string_value(json_object_get(d, "stdout"));
    ASSERT_STREQ(so, "1000 1000\nconnect failed\nno shadow\nusr read-only\n");
    json_t *pol = json_object_get(d, "policy");
    json_t *deg = json_object_get(pol, "degraded");
    /* everything it could not do is named */
    ASSERT(has_str(deg, "dedicated_uid"));
    ASSERT(has_str(deg, "memory_limit"));
    ASSERT(has_str(deg, "pids_limit"));
    ASSERT(has_str(deg, "cpu_limit"));
    ASSERT(has_str(deg, "accounting"));
    ASSERT_STREQ(json_string_value(json_object_get(pol, "cgroup_mode")), "none");
    /* ... and what it did still holds: seccomp, the network supervisor */
    ASSERT(json_string_length(json_object_get(json_object_get(pol, "seccomp"), "sha256")) == 64);
    json_t *ev = json_object_get(d, "security_events");
    bool saw = false;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        json_t *det = json_object_get(e, "details");
        if (!strcmp(json_string_value(json_object_get(e, "reason")), "network_attempt") &&
            json_string_value(json_object_get(det, "address")) &&
            !strcmp(json_string_value(json_object_get(det, "address")), "192.0.2.7"))
            saw = true;
    }
    ASSERT_MSG(saw, "no network_attempt for 192.0.2.7 in %.300s", out);
    json_decref(d);
    /* nothing left in nobody's state directory */
    struct stat sst;
    ASSERT_MSG(stat("/tmp/clearbox-65534/t-unpriv", &sst) < 0, "state directory left behind");
}

/* In a user namespace that may not have children (its own
 * user.max_user_namespaces = 0), nobody gets a clear refusal. */
TEST(unprivileged_refused_clearly_where_user_namespaces_are_forbidden)
{
    if (geteuid() != 0) {
        test_skip("needs root to make the restricted namespace");
        return;
    }
    int p[2], go[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(80);
        int fd = open("/proc/sys/user/max_user_namespaces", O_WRONLY);
        if (fd < 0 || write(fd, "0", 1) != 1)
            _exit(81);
        close(fd);
        run_as_nobody(p[1], "t-unpriv-refused");
    }
    close(p[1]);
    close(go[0]);
    /* map the host's ids 0..65534 one to one, so nobody is nobody inside */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    int fd = open(path, O_WRONLY);
    ASSERT(fd >= 0);
    ASSERT(write(fd, "0 0 65535\n", 10) == 10);
    close(fd);
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    fd = open(path, O_WRONLY);
    ASSERT(fd >= 0);
    ASSERT(write(fd, "0 0 65535\n", 10) == 10);
    close(fd);
    ASSERT(write(go[1], "g", 1) == 1);
    close(go[1]);
    int st;
    char *out = collect(pid, p[0], &st);
    ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x: %.200s", st, out);
    ASSERT_MSG(!strncmp(out, "ERR", 3), "it ran: %.300s", out);
    ASSERT_CONTAINS(out, "this host forbids unprivileged user namespaces");
    char *json = strchr(out, '\n');
    ASSERT(json != NULL);
    json_error_t je;
    json_t *d = json_loads(json + 1, 0, &je);
    ASSERT(d != NULL);
    ASSERT_STREQ(json_string_value(json_object_get(d, "status")), "error");
    json_t *er = json_object_get(d, "error");
    ASSERT_STREQ(json_string_value(json_object_get(er, "reason")), "namespace_failed");
    ASSERT_STREQ(json_string_value(json_object_get(d, "stdout")), "");
    json_decref(d);
}

/* In a child that is nobody: plant a stale run (a state directory older than
 * gc's 10 s start-up margin) in sd, run sandbox_gc with the default state
 * directory, and say on fd whether it was reported and removed. Writes "OK"
 * or what went wrong; exits 0. */
static void gc_default_as_nobody(int fd, const char *xdg)
{
    char msg[4096] = "OK";
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) < 0)
        _exit(90);
    /* the state directory the engine itself would pick */
    char sd[512], p[600];
    if (xdg) {
        if (mkdir(xdg, 0700) < 0 && errno != EEXIST)
            _exit(94);
        setenv("XDG_RUNTIME_DIR", xdg, 1);
        snprintf(sd, sizeof sd, "%s/clearbox", xdg);
    } else {
        unsetenv("XDG_RUNTIME_DIR");
        snprintf(sd, sizeof sd, "/tmp/clearbox-%d", NOBODY);
    }
    char def[512];
    sandbox_state_dir_default(def, sizeof def);
    mkdir(sd, 0700); /* as the engine makes it for an unprivileged user */
    snprintf(p, sizeof p, "%s/gc-stale-%d", sd, (int)getpid());
    struct timespec old[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    if (strcmp(def, sd) != 0) {
        snprintf(msg, sizeof msg, "engine default %s, expected %s", def, sd);
    } else if (mkdir(p, 0711) < 0 || utimensat(AT_FDCWD, p, old, 0) < 0) {
        snprintf(msg, sizeof msg, "plant %s: %s", p, strerror(errno));
    } else {
        struct buf b;
        buf_init(&b, NULL, 0, 1 << 16);
        char err[256] = "";
        int n = sandbox_gc(NULL, NULL, &b, err, sizeof err);
        struct stat st;
        if (n < 1 || !b.data || !strstr(b.data, p) || stat(p, &st) == 0)
            snprintf(msg, sizeof msg, "gc returned %d (%s), reported '%.300s', %s %s", n, err,
                     b.data ? b.data : "", p, stat(p, &st) == 0 ? "still there" : "gone");
        buf_free(&b);
        rmdir(p);
    }
    if (xdg) {
        rmdir(sd);
        rmdir(xdg);
    }
    if (write(fd, msg, strlen(msg)) < 0)
        _exit(92);
    _exit(0);
}

/* `clearbox gc` as another user than root looks in the state directory that
 * user's runs use ($XDG_RUNTIME_DIR/clearbox, else /tmp/clearbox-<uid>), not
 * /run/clearbox: a stale run planted there is reported and removed. */
TEST(unprivileged_gc_uses_the_runs_state_directory)
{
    if (geteuid() != 0) {
        test_skip("needs root to become nobody");
        return;
    }
    char xdg[64];
    snprintf(xdg, sizeof xdg, "/tmp/cb-gc-xdg-%d", (int)getpid());
    const char *cases[] = {xdg, NULL};
    for (int i = 0; i < 2; i++) {
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            gc_default_as_nobody(p[1], cases[i]);
        }
        close(p[1]);
        int st;
        char *out = collect(pid, p[0], &st);
        ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
        ASSERT_MSG(!strcmp(out, "OK"), "%s: %s", cases[i] ? "with XDG_RUNTIME_DIR" : "without",
                   out);
    }
}
