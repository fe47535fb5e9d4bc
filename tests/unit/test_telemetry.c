/* test_telemetry.c - the standard metric set of DESIGN.md: every name is
 * there, the exposition passes the real promtool, user-supplied submitter
 * values are bounded, and the dropped-telemetry counter reads live values. */
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "telemetry/telemetry.h"
#include "test.h"

static int promtool_check(const char *text, char *out, size_t outlen)
{
    char path[300], cmd[700];
    snprintf(path, sizeof path, "%s/metrics.txt", test_tmpdir());
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(telemetry_standard_metrics_render_and_pass_promtool)
{
    char err[256], out[4096];
    metrics_registry_t *reg = metrics_registry_new();
    struct telemetry_std t;
    ASSERT_EQ(telemetry_metrics_register(reg, 3, &t, err, sizeof err), 0);
    metrics_counter_inc(metrics_counter_labels(t.evaluations, "completed", "python"));
    metrics_histogram_observe(t.evaluation_duration, 0.3);
    metrics_gauge_set(t.queue_depth, 15);
    metrics_histogram_observe(t.queue_wait, 0.02);
    metrics_histogram_observe(t.sandbox_create, 0.0021);
    metrics_counter_inc(metrics_counter_labels(t.sandbox_create_failures, "cgroup"));
    metrics_histogram_observe(t.evaluation_cpu, 2.5);
    metrics_histogram_observe(t.evaluation_memory_peak, 300e6);
    metrics_counter_inc(metrics_counter_labels(t.security_events, "network_attempt"));
    metrics_counter_add_f(metrics_counter_labels(t.cost_cents, "python", "alice \"a\"\n"), 0.05);
    ASSERT_EQ(metrics_register_process(reg, err, sizeof err), 0);
    char *text = NULL;
    ASSERT_EQ(metrics_render_string(reg, METRICS_FORMAT_TEXT, 0, &text, NULL, err, sizeof err), 0);
    static const char *names[] = {
        "clearbox_evaluations_total{status=\"completed\",language=\"python\"} 1",
        "clearbox_evaluation_duration_seconds_bucket{le=\"0.5\"} 1",
        "clearbox_queue_depth 15",
        "clearbox_queue_wait_seconds_count 1",
        "clearbox_sandbox_create_seconds_bucket{le=\"0.003\"} 1",
        "clearbox_sandbox_create_failures_total{reason=\"cgroup\"} 1",
        "clearbox_evaluation_cpu_seconds_sum 2.5",
        "clearbox_evaluation_memory_peak_bytes_bucket{le=\"536870912.0\"} 1",
        "clearbox_security_events_total{reason=\"network_attempt\"} 1",
        "clearbox_cost_cents_total{language=\"python\",submitter=\"alice \\\"a\\\"\\n\"} 0.05",
        "clearbox_telemetry_dropped_total{signal=\"traces\"} 0",
        "clearbox_telemetry_dropped_total{signal=\"logs\"} 0",
        "process_resident_memory_bytes",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ASSERT_CONTAINS(text, names[i]);
    int rc = promtool_check(text, out, sizeof out);
    ASSERT_MSG(rc == 0 && out[0] == '\0', "promtool exit %d: %s", rc, out);
    free(text);
    ASSERT_EQ(telemetry_metrics_register(reg, 3, &t, err, sizeof err), -EEXIST);
    metrics_registry_free(reg);
}

TEST(telemetry_submitter_label_is_bounded)
{
    char err[256];
    metrics_registry_t *reg = metrics_registry_new();
    struct telemetry_std t;
    ASSERT_EQ(telemetry_metrics_register(reg, 3, &t, err, sizeof err), 0);
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        metrics_counter_add_f(metrics_counter_labels(t.cost_cents, "sh", name), 1);
    }
    char *text = NULL;
    ASSERT_EQ(metrics_render_string(reg, METRICS_FORMAT_TEXT, 0, &text, NULL, err, sizeof err), 0);
    ASSERT_CONTAINS(text, "submitter=\"user-2\"} 1");
    ASSERT(!strstr(text, "user-3\""));
    ASSERT_CONTAINS(text, "clearbox_cost_cents_total{language=\"sh\",submitter=\"other\"} 47");
    free(text);
    metrics_registry_free(reg);
}
