/* pg_support.c - see pg_support.h. */
#include "pg_support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "service/pq_dl.h"
#include "util/err.h"

#define PG_TEST_PORT 55432 /* names the socket file only: there is no TCP listener */
#define PG_TEST_DB "clearbox"

static char dir[128];      /* the cluster's directory, "" when none */
static char bindir[256];
static pid_t server_pid;
static pid_t owner_pid;    /* the process that started it (children never stop it) */
static char start_error[512];

const char *pg_test_error(void) { return start_error; }

static bool usable_bindir(const char *d)
{
    char p[300];
    snprintf(p, sizeof p, "%s/initdb", d);
    if (access(p, X_OK) != 0)
        return false;
    snprintf(p, sizeof p, "%s/postgres", d);
    return access(p, X_OK) == 0;
}

static int find_bindir(char *err, size_t errlen)
{
    const char *env = getenv("CLEARBOX_PG_BINDIR");
    if (env && *env) {
        if (!usable_bindir(env))
            return err_set(err, errlen, -ENOENT,
                           "CLEARBOX_PG_BINDIR=%s has no initdb and postgres", env);
        snprintf(bindir, sizeof bindir, "%s", env);
        return 0;
    }
    for (int v = 17; v >= 15; v--) {
        char d[64];
        snprintf(d, sizeof d, "/usr/lib/postgresql/%d/bin", v);
        if (usable_bindir(d)) {
            snprintf(bindir, sizeof bindir, "%s", d);
            return 0;
        }
    }
    return err_set(err, errlen, -ENOENT,
                   "PostgreSQL server not found: no initdb in /usr/lib/postgresql/{15,16,17}/bin "
                   "(install Debian's postgresql package: make deps, or apt-get install "
                   "postgresql; or set CLEARBOX_PG_BINDIR)");
}

/* In a forked child: become the cluster's owner (postgres refuses root). */
static void drop_to_owner(uid_t uid, gid_t gid)
{
    if (getuid() != 0)
        return;
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        _exit(126);
}

/* Fork + exec argv as the owner with stdout/stderr into logfile. */
static pid_t spawn(char *const argv[], const char *logfile, uid_t uid, gid_t gid, int deathsig)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (getuid() == 0 && fchown(fd, uid, gid) != 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
    }
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
        dup2(nul, 0);
    setpgid(0, 0); /* not in the test's process group: the harness kills that one */
    drop_to_owner(uid, gid);
    if (deathsig)
        prctl(PR_SET_PDEATHSIG, deathsig);
    if (chdir(dir) != 0)
        _exit(126);
    setenv("LC_ALL", "C", 1);
    unsetenv("PGDATA");
    execv(argv[0], argv);
    _exit(127);
}

static void log_tail(const char *logfile, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(logfile, "r");
    if (!f)
        return;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    const char *p = n > 300 ? buf + n - 300 : buf;
    size_t k = strnlen(p, cap - 1);
    memcpy(out, p, k);
    out[k] = '\0';
    for (char *q = out; *q; q++)
        if (*q == '\n')
            *q = ' ';
}

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void notice_ignore(void *arg, const char *message) { (void)arg, (void)message; }

static PGconn *connect_db(const char *db, const char *schema, char *err, size_t errlen)
{
    const struct pq_dl *pq = pq_dl(err, errlen);
    if (!pq)
        return NULL;
    char port[16], opts[160] = "";
    snprintf(port, sizeof port, "%d", PG_TEST_PORT);
    if (schema)
        snprintf(opts, sizeof opts, "-csearch_path=%s", schema);
    const char *keys[] = {"host", "port", "user", "dbname", "application_name",
                          "connect_timeout", schema ? "options" : NULL, NULL};
    const char *vals[] = {dir, port, "postgres", db, "clearbox-test", "10", opts, NULL};
    PGconn *c = pq->connectdbParams(keys, vals, 0);
    if (c)
        pq->setNoticeProcessor(c, notice_ignore, NULL);
    if (!c || pq->status(c) != CONNECTION_OK) {
        err_set(err, errlen, -ECONNREFUSED, "connect to the test cluster: %s",
                c ? pq->errorMessage(c) : "out of memory");
        if (c)
            pq->finish(c);
        return NULL;
    }
    return c;
}

static int exec_on(PGconn *c, const char *sql, char *err, size_t errlen)
{
    const struct pq_dl *pq = pq_dl(err, errlen);
    PGresult *r = pq->exec(c, sql);
    ExecStatusType st = pq->resultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = err_set(err, errlen, -EIO, "%s: %s", sql, pq->resultErrorMessage(r));
    pq->clear(r);
    return rc;
}

/* A run killed with SIGKILL stops its server (parent-death signal) but
 * cannot remove its directory. Remove those left behind: no postmaster.pid
 * (the server removes it at shutdown) and untouched for ten minutes (so a
 * cluster another run is creating right now is left alone). */
static void sweep_stale(void)
{
    DIR *d = opendir("/tmp");
    if (!d)
        return;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "clearbox-pg.", 12) != 0 || strlen(e->d_name) != 18)
            continue;
        char p[300];
        struct stat sb;
        snprintf(p, sizeof p, "/tmp/%s/data/postmaster.pid", e->d_name);
        if (access(p, F_OK) == 0)
            continue;
        snprintf(p, sizeof p, "/tmp/%s", e->d_name);
        if (lstat(p, &sb) != 0 || !S_ISDIR(sb.st_mode) || now - sb.st_mtime < 600)
            continue;
        char cmd[340];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
        if (system(cmd) != 0)
            fprintf(stderr, "pg_support: could not remove %s\n", p);
    }
    closedir(d);
}

int pg_test_start(char *err, size_t errlen)
{
    start_error[0] = '\0';
    sweep_stale();
    int rc = find_bindir(start_error, sizeof start_error);
    if (rc < 0)
        return err_set(err, errlen, rc, "%s", start_error);
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (uid == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            snprintf(start_error, sizeof start_error,
                     "running as root and there is no 'postgres' user to run the test server "
                     "as (Debian's postgresql package creates it)");
            return err_set(err, errlen, -ENOENT, "%s", start_error);
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    snprintf(dir, sizeof dir, "/tmp/clearbox-pg.XXXXXX");
    if (!mkdtemp(dir)) {
        rc = err_sys(start_error, sizeof start_error, -errno, "mkdtemp");
        dir[0] = '\0';
        return err_set(err, errlen, rc, "%s", start_error);
    }
    if (getuid() == 0 && chown(dir, uid, gid) != 0) {
        rc = err_sys(start_error, sizeof start_error, -errno, "chown %s", dir);
        goto fail;
    }
    owner_pid = getpid();
    char data[200], initdb[300], postgres[300], ilog[200], plog[200];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(initdb, sizeof initdb, "%s/initdb", bindir);
    snprintf(postgres, sizeof postgres, "%s/postgres", bindir);
    snprintf(ilog, sizeof ilog, "%s/initdb.log", dir);
    snprintf(plog, sizeof plog, "%s/postgres.log", dir);
    /* --no-sync: the cluster is thrown away, initdb's own fsyncs only cost
     * time; the server itself runs with fsync on (the store checks it). */
    char *iargv[] = {initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                     "--locale=C", "--no-sync", NULL};
    pid_t pid = spawn(iargv, ilog, uid, gid, SIGKILL);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char tail[320];
        log_tail(ilog, tail, sizeof tail);
        rc = err_set(start_error, sizeof start_error, -EIO, "initdb failed: %s", tail);
        goto fail;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", PG_TEST_PORT);
    char *pargv[] = {postgres, "-D", data, "-k", dir, "-p", port,
                     "-c", "listen_addresses=",
                     "-c", "max_connections=60",
                     "-c", "shared_buffers=32MB",
                     "-c", "log_min_messages=warning",
                     NULL};
    server_pid = spawn(pargv, plog, uid, gid, SIGINT);
    if (server_pid < 0) {
        rc = err_sys(start_error, sizeof start_error, -errno, "fork postgres");
        server_pid = 0;
        goto fail;
    }
    /* Ready when a connection to the maintenance database works. */
    char e[ERR_LEN];
    PGconn *c = NULL;
    for (int waited = 0; waited < 60000; waited += 50) {
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = 0;
            char tail[320];
            log_tail(plog, tail, sizeof tail);
            rc = err_set(start_error, sizeof start_error, -EIO, "postgres exited: %s", tail);
            goto fail;
        }
        char sock[200];
        snprintf(sock, sizeof sock, "%s/.s.PGSQL.%d", dir, PG_TEST_PORT);
        if (access(sock, F_OK) == 0 && (c = connect_db("postgres", NULL, e, sizeof e)))
            break;
        msleep(50);
    }
    if (!c) {
        rc = err_set(start_error, sizeof start_error, -ETIMEDOUT,
                     "postgres did not accept connections within 60 s: %s", e);
        goto fail;
    }
    rc = exec_on(c, "CREATE DATABASE " PG_TEST_DB, start_error, sizeof start_error);
    pq_dl(NULL, 0)->finish(c);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    pg_test_stop();
    return err_set(err, errlen, rc, "%s", start_error);
}

void pg_test_stop(void)
{
    if (!dir[0] || getpid() != owner_pid)
        return;
    if (server_pid > 0) {
        kill(server_pid, SIGINT); /* fast shutdown: abort sessions, checkpoint */
        int st;
        for (int waited = 0; waited < 30000; waited += 20) {
            if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
                server_pid = 0;
                break;
            }
            msleep(20);
        }
        if (server_pid > 0) {
            kill(server_pid, SIGKILL);
            waitpid(server_pid, &st, 0);
            server_pid = 0;
        }
    }
    if (!strncmp(dir, "/tmp/clearbox-pg.", 17)) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "pg_support: could not remove %s\n", dir);
    }
    dir[0] = '\0';
}

const char *pg_test_url(const char *schema, char *out, size_t cap)
{
    if (!dir[0])
        return NULL;
    if (schema) {
        char e[ERR_LEN], sql[200];
        snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", schema);
        if (pg_test_exec(NULL, sql, e, sizeof e) < 0) {
            fprintf(stderr, "    pg_test_url: %s\n", e);
            return NULL;
        }
        snprintf(out, cap, "postgresql:///%s?host=%s&port=%d&user=postgres"
                           "&options=-csearch_path%%3D%s",
                 PG_TEST_DB, dir, PG_TEST_PORT, schema);
    } else {
        snprintf(out, cap, "postgresql:///%s?host=%s&port=%d&user=postgres", PG_TEST_DB, dir,
                 PG_TEST_PORT);
    }
    return out;
}

PGconn *pg_test_connect(const char *schema, char *err, size_t errlen)
{
    if (!dir[0]) {
        err_set(err, errlen, -ENOENT, "no test cluster: %s", start_error);
        return NULL;
    }
    return connect_db(PG_TEST_DB, schema, err, errlen);
}

void pg_test_close(PGconn *c)
{
    if (c)
        pq_dl(NULL, 0)->finish(c);
}

int pg_test_exec(const char *schema, const char *sql, char *err, size_t errlen)
{
    PGconn *c = pg_test_connect(schema, err, errlen);
    if (!c)
        return -ECONNREFUSED;
    int rc = exec_on(c, sql, err, errlen);
    pg_test_close(c);
    return rc;
}

int pg_test_query1(PGconn *c, const char *sql, char *out, size_t cap, char *err, size_t errlen)
{
    const struct pq_dl *pq = pq_dl(err, errlen);
    PGresult *r = pq->exec(c, sql);
    int rc = 0;
    if (pq->resultStatus(r) != PGRES_TUPLES_OK || pq->ntuples(r) < 1)
        rc = err_set(err, errlen, -EIO, "%s: %s", sql, pq->resultErrorMessage(r));
    else
        snprintf(out, cap, "%s", pq->getvalue(r, 0, 0));
    pq->clear(r);
    return rc;
}

void pg_test_start_for_binary(const char *name)
{
    FILE *f = fopen("/proc/self/cmdline", "r");
    if (f) {
        char buf[512];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        size_t first = strlen(buf) + 1;
        if (first < n && !strcmp(buf + first, "-l"))
            return;
    }
    char e[512];
    if (pg_test_start(e, sizeof e) < 0)
        fprintf(stderr, "%s: cannot start PostgreSQL: %s\n", name, e);
}
