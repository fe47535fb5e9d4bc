/* harness.c - main() for every test binary: see test.h. */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_MAX 512

static struct {
    const char *name;
    test_fn fn;
} tests[TEST_MAX];
static int ntests;
static bool failed;
static char tmpdir[256];
static int result_fd = -1; /* child -> parent: 'S' skipped */

void test__register(const char *name, test_fn fn)
{
    if (ntests == TEST_MAX) {
        fprintf(stderr, "harness: more than %d tests in one file\n", TEST_MAX);
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void test__fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char msg[1024];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "    %s:%d: %s\n", file, line, msg);
    failed = true;
}

bool test__failed(void) { return failed; }

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/clearbox-test.XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return tmpdir;
}

void test_skip(const char *why)
{
    fprintf(stderr, "    skipped: %s\n", why);
    if (result_fd >= 0 && write(result_fd, "S", 1) != 1)
        abort();
}

static void rm_rf(const char *path)
{
    char cmd[600];
    if (!path[0] || strncmp(path, "/tmp/clearbox-test.", 19) != 0)
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: could not remove %s\n", path);
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return true;
    return false;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    int passed = 0, nfailed = 0, skipped = 0;
    int timeout = 120;
    const char *t = getenv("TEST_TIMEOUT_S");
    if (t && atoi(t) > 0)
        timeout = atoi(t);
    if (argc == 2 && strcmp(argv[1], "-l") == 0) {
        for (int i = 0; i < ntests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < ntests; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0) {
            perror("pipe2");
            return 2;
        }
        long long t0 = mono_ms();
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            close(pfd[0]);
            result_fd = pfd[1];
            setpgid(0, 0);
            alarm((unsigned)timeout);
            tests[i].fn();
            fflush(stdout);
            fflush(stderr);
            rm_rf(tmpdir);
            _exit(failed ? 1 : 0);
        }
        close(pfd[1]);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        kill(-pid, SIGKILL); /* whatever the test left running */
        char c = 0;
        bool was_skipped = read(pfd[0], &c, 1) == 1 && c == 'S';
        close(pfd[0]);
        long long ms = mono_ms() - t0;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            if (was_skipped) {
                skipped++;
                printf("SKIP %s\n", tests[i].name);
            } else {
                passed++;
                printf("PASS %s (%lld ms)\n", tests[i].name, ms);
            }
        } else {
            nfailed++;
            if (WIFSIGNALED(st))
                printf("FAIL %s: killed by signal %d%s (%lld ms)\n", tests[i].name,
                       WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (timeout)" : "", ms);
            else
                printf("FAIL %s (%lld ms)\n", tests[i].name, ms);
        }
    }
    if (skipped)
        printf("%d skipped\n", skipped);
    printf("%d passed, %d failed\n", passed, nfailed);
    return nfailed ? 1 : 0;
}
