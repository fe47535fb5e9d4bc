/* process_metrics.c - the standard process_* metrics, read from /proc/self
 * each time the registry is rendered (function-backed series), with the names
 * and meanings of the Prometheus client libraries:
 *   process_cpu_seconds_total       user + system CPU time (CLOCK_PROCESS_CPUTIME_ID,
 *                                   nanosecond resolution, not /proc's clock ticks)
 *   process_resident_memory_bytes   /proc/self/statm resident pages * page size
 *   process_virtual_memory_bytes    /proc/self/statm size * page size
 *   process_open_fds                entries of /proc/self/fd (the directory's own fd excluded)
 *   process_max_fds                 RLIMIT_NOFILE soft limit
 *   process_start_time_seconds      /proc/stat btime + /proc/self/stat starttime / ticks
 * A figure that cannot be read renders as NaN rather than a made-up 0. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "telemetry/metrics.h"
#include "util/err.h"

static double proc_cpu_seconds(void *arg)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
        return NAN;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* field 0 = size, 1 = resident, in pages */
static double proc_statm(int field)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long long size, rss;
    if (!f)
        return NAN;
    int n = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    if (n != 2)
        return NAN;
    return (double)(field == 0 ? size : rss) * (double)sysconf(_SC_PAGESIZE);
}

static double proc_virtual_bytes(void *arg)
{
    return proc_statm(0);
}
static double proc_resident_bytes(void *arg)
{
    return proc_statm(1);
}

static double proc_open_fds(void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return (double)(n - 1); /* the DIR's own descriptor */
}

static double proc_max_fds(void *arg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/* Boot time from /proc/stat plus the process's start in clock ticks since
 * boot (field 22 of /proc/self/stat, counted after the ")" that closes the
 * command name, which may itself hold spaces and parentheses). */
static double proc_start_time(void *arg)
{
    char line[4096];
    unsigned long long btime = 0, start = 0;
    bool have_btime = false;
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return NAN;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1) {
            have_btime = true;
            break;
        }
    fclose(f);
    if (!have_btime)
        return NAN;

    f = fopen("/proc/self/stat", "re");
    if (!f)
        return NAN;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    char *p = strrchr(line, ')');
    if (!p)
        return NAN;
    /* After ")": field 3 (state) is first; starttime is field 22. */
    p++;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    if (!p || sscanf(p, " %llu", &start) != 1)
        return NAN;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        return NAN;
    return (double)btime + (double)start / (double)hz;
}

struct proc_metric {
    enum metrics_type type;
    const char *name, *help, *unit;
    metrics_value_fn fn;
};

static const struct proc_metric proc_metrics[] = {
    {METRICS_COUNTER, "process_cpu_seconds_total",
     "Total user and system CPU time spent in seconds.", "seconds", proc_cpu_seconds},
    {METRICS_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "bytes",
     proc_virtual_bytes},
    {METRICS_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.", "bytes",
     proc_resident_bytes},
    {METRICS_GAUGE, "process_start_time_seconds",
     "Start time of the process since unix epoch in seconds.", "seconds", proc_start_time},
    {METRICS_GAUGE, "process_open_fds", "Number of open file descriptors.", NULL, proc_open_fds},
    {METRICS_GAUGE, "process_max_fds", "Maximum number of open file descriptors.", NULL,
     proc_max_fds},
};

int metrics_register_process(metrics_registry_t *reg, char *err, size_t errlen)
{
    /* Registration is per family; a collision on the first one (the usual
     * "called twice") leaves nothing half-registered. */
    for (size_t i = 0; i < sizeof proc_metrics / sizeof proc_metrics[0]; i++) {
        const struct proc_metric *m = &proc_metrics[i];
        struct metrics_opts o = {.name = m->name, .help = m->help, .unit = m->unit};
        metrics_family_t *fam;
        TRY(metrics_family_new(reg, m->type, &o, &fam, err, errlen));
        if (m->type == METRICS_COUNTER)
            TRY(metrics_counter_func(fam, NULL, 0, m->fn, NULL, err, errlen));
        else
            TRY(metrics_gauge_func(fam, NULL, 0, m->fn, NULL, err, errlen));
    }
    return 0;
}
