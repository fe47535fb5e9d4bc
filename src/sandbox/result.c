/* result.c - the result record (DESIGN.md "Contracts") as JSON, and the short
 * summary printed on a terminal. Everything the program produced goes
 * through util/json.h, so invalid UTF-8 becomes U+FFFD and the document is
 * always valid JSON. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sandbox/internal.h"
#include "sandbox/sandbox.h"
#include "util/json.h"
#include "util/timeutil.h"
#include "util/num.h"

/* Bytes of the first SANDBOX_CODE_SNIPPET characters (code points; an
 * invalid byte counts as one). */
static size_t snippet_len(const char *s, size_t n)
{
    size_t i = 0, chars = 0;
    while (i < n && chars < SANDBOX_CODE_SNIPPET) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (i + k > n)
            k = 1;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                k = 1;
        i += k;
        chars++;
    }
    return i;
}

static double ms3(double v)
{
    return num_round(v * 1000.0) / 1000.0;
}

static void kv_num_or_null(struct json *w, const char *k, double v, int digits)
{
    json_key(w, k);
    if (v < 0) {
        json_null_value(w);
        return;
    }
    double f = 1.0; /* 10^digits, exact (no libm: util/num.h) */
    for (int i = 0; i < digits; i++)
        f *= 10.0;
    json_double(w, num_round(v * f) / f);
}

static void kv_i64_or_null(struct json *w, const char *k, int64_t v)
{
    json_key(w, k);
    if (v < 0)
        json_null_value(w);
    else
        json_int(w, v);
}

int sandbox_event_details_json(const struct sandbox_result *r, const struct sandbox_event *e,
                               struct buf *d)
{
    /* blocked, code_snippet, then the members the engine rendered */
    buf_puts(d, e->blocked ? "{\"blocked\":true,\"code_snippet\":\""
                           : "{\"blocked\":false,\"code_snippet\":\"");
    if (r->code)
        json_escape(d, r->code, snippet_len(r->code, r->code_len));
    buf_putc(d, '"');
    if (e->details && *e->details) {
        buf_putc(d, ',');
        buf_puts(d, e->details);
    }
    buf_putc(d, '}');
    return buf_ok(d) ? 0 : -E2BIG;
}

static void render_event(struct json *w, const struct sandbox_result *r,
                         const struct sandbox_event *e)
{
    char ts[TIME_RFC3339_LEN];
    time_fmt_rfc3339(e->ts_ns, ts);
    json_obj_open(w);
    json_kv_str(w, "ts", ts);
    json_kv_str(w, "event", "evaluation.suspicious");
    json_kv_str(w, "eval_id", r->eval_id);
    json_kv_str(w, "reason", e->reason);
    char storage[2048];
    struct buf d;
    buf_init(&d, storage, sizeof storage, 65536);
    sandbox_event_details_json(r, e, &d);
    json_key(w, "details");
    if (buf_ok(&d))
        json_raw(w, d.data, d.len);
    else
        json_null_value(w);
    buf_free(&d);
    json_obj_close(w);
}

int sandbox_result_json(const struct sandbox_result *r, struct buf *b)
{
    struct json w;
    json_init(&w, b);
    json_obj_open(&w);
    json_kv_str(&w, "eval_id", r->eval_id);
    json_kv_str(&w, "status", sandbox_status_name(r->status));
    json_key(&w, "error");
    if (r->status == SANDBOX_ERROR) {
        json_obj_open(&w);
        json_kv_str(&w, "reason", r->error_reason[0] ? r->error_reason : "sandbox_failed");
        json_kv_str(&w, "message", r->error_message);
        json_obj_close(&w);
    } else {
        json_null_value(&w);
    }
    json_key(&w, "exit_code");
    if (r->exit_code >= 0 && !r->signal && r->status != SANDBOX_ERROR)
        json_int(&w, r->exit_code);
    else
        json_null_value(&w);
    json_key(&w, "signal");
    if (r->signal)
        json_str(&w, sandbox__signal_name(r->signal));
    else
        json_null_value(&w);
    json_key(&w, "stdout");
    json_strn(&w, r->out.data ? r->out.data : "", r->out.len);
    json_key(&w, "stderr");
    json_strn(&w, r->err.data ? r->err.data : "", r->err.len);
    json_kv_bool(&w, "stdout_truncated", r->out_truncated);
    json_kv_bool(&w, "stderr_truncated", r->err_truncated);
    json_kv_double(&w, "duration_ms", ms3(r->duration_ms));
    json_key(&w, "phases");
    json_obj_open(&w);
    json_kv_double(&w, "create_ms", ms3(r->create_ms));
    json_kv_double(&w, "execute_ms", ms3(r->execute_ms));
    json_kv_double(&w, "teardown_ms", ms3(r->teardown_ms));
    json_obj_close(&w);

    const struct sandbox_resources *s = &r->res;
    json_key(&w, "resources");
    json_obj_open(&w);
    kv_num_or_null(&w, "cpu_seconds", s->cpu_seconds, 6);
    kv_num_or_null(&w, "cpu_user_seconds", s->cpu_user_seconds, 6);
    kv_num_or_null(&w, "cpu_system_seconds", s->cpu_system_seconds, 6);
    kv_num_or_null(&w, "memory_mb_seconds", s->memory_mb_seconds, 6);
    kv_num_or_null(&w, "memory_peak_mb", s->memory_peak_mb, 3);
    kv_num_or_null(&w, "wall_seconds", s->wall_seconds, 6);
    kv_i64_or_null(&w, "pids_peak", s->pids_peak);
    kv_i64_or_null(&w, "io_read_bytes", s->io_read_bytes);
    kv_i64_or_null(&w, "io_write_bytes", s->io_write_bytes);
    json_kv_int(&w, "container_count", s->container_count);
    kv_num_or_null(&w, "estimated_cost_cents", s->estimated_cost_cents, 8);
    json_obj_close(&w);

    json_key(&w, "security_events");
    json_arr_open(&w);
    for (size_t i = 0; i < r->nevents; i++)
        render_event(&w, r, &r->events[i]);
    json_arr_close(&w);

    json_key(&w, "trace_id");
    if (r->trace_id[0])
        json_str(&w, r->trace_id);
    else
        json_null_value(&w);

    const struct sandbox_limits *l = &r->limits;
    json_key(&w, "policy");
    json_obj_open(&w);
    json_kv_str(&w, "engine", r->engine);
    json_kv_str(&w, "language", r->language);
    json_key(&w, "limits");
    json_obj_open(&w);
    json_kv_uint(&w, "wall_timeout_ms", l->wall_timeout_ms);
    json_kv_uint(&w, "cpu_time_ms", l->cpu_time_ms);
    json_kv_uint(&w, "memory_max_bytes", l->memory_max_bytes);
    json_kv_uint(&w, "pids_max", l->pids_max);
    json_kv_uint(&w, "output_max_bytes", l->output_max_bytes);
    json_kv_uint(&w, "disk_max_bytes", l->disk_max_bytes);
    json_kv_uint(&w, "open_files_max", l->open_files_max);
    json_kv_uint(&w, "cpu_cores_milli", l->cpu_cores_milli);
    json_obj_close(&w);
    json_key(&w, "seccomp");
    json_obj_open(&w);
    json_kv_str(&w, "name", r->seccomp_name[0] ? r->seccomp_name : "none");
    json_key(&w, "sha256");
    if (r->seccomp_sha256[0])
        json_str(&w, r->seccomp_sha256);
    else
        json_null_value(&w);
    json_obj_close(&w);
    json_kv_str(&w, "cgroup_mode", r->cgroup_mode);
    json_kv_str(&w, "network", "loopback_only");
    json_kv_str(&w, "rootfs", r->rootfs[0] ? r->rootfs : "host");
    json_key(&w, "pricing");
    json_obj_open(&w);
    json_kv_double(&w, "cents_per_cpu_second", r->pricing.cents_per_cpu_second);
    json_kv_double(&w, "cents_per_gb_second", r->pricing.cents_per_gb_second);
    json_kv_double(&w, "cents_per_evaluation", r->pricing.cents_per_evaluation);
    json_obj_close(&w);
    json_kv_str(&w, "version", CLEARBOX_VERSION);
    json_key(&w, "degraded");
    json_arr_open(&w);
    for (size_t i = 0; i < r->ndegraded; i++)
        json_str(&w, r->degraded[i]);
    json_arr_close(&w);
    json_obj_close(&w);

    json_obj_close(&w);
    return json_ok(&w) ? 0 : (b->oom ? -ENOMEM : -E2BIG);
}

/* Length of the valid UTF-8 sequence at s[0..n) and its code point, or 0 when
 * the bytes there are not one (truncated, overlong, surrogate, > U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t k;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[j] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return k;
}

/* Append what the program produced so a terminal shows it and never obeys it:
 * C0 controls other than \n and \t, DEL and bytes that are not UTF-8 become \xNN;
 * C1 controls (U+0080-U+009F: CSI, OSC... on terminals that honour them) and
 * the bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069,
 * which reorder what the operator reads) become \uNNNN. \r is shown too: a
 * bare carriage return lets a program overwrite what was printed before it.
 * The exact bytes stay available in the JSON record (--json). */
static void put_terminal_safe(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x7F)
            run++;
        if (run > i) {
            buf_append(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = u[i];
        if (c == '\n' || c == '\t') {
            buf_putc(b, (char)c);
            i++;
            continue;
        }
        if (c < 0x80) { /* C0 or DEL */
            buf_printf(b, "\\x%02x", c);
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_seq(u + i, n - i, &cp);
        if (!k) {
            buf_printf(b, "\\x%02x", c);
            i++;
        } else if (cp <= 0x9F || (cp >= 0x202A && cp <= 0x202E) ||
                   (cp >= 0x2066 && cp <= 0x2069)) {
            buf_printf(b, "\\u%04x", (unsigned)cp);
            i += k;
        } else {
            buf_append(b, s + i, k);
            i += k;
        }
    }
}

static void put_terminal_safe_str(struct buf *b, const char *s)
{
    if (s)
        put_terminal_safe(b, s, strlen(s));
}

int sandbox_result_text(const struct sandbox_result *r, struct buf *b)
{
    buf_printf(b, "clearbox: %s", sandbox_status_name(r->status));
    if (r->status == SANDBOX_ERROR) {
        buf_puts(b, " (");
        put_terminal_safe_str(b, r->error_reason);
        buf_puts(b, ": ");
        put_terminal_safe_str(b, r->error_message);
        buf_putc(b, ')');
    }
    else if (r->signal)
        buf_printf(b, ", killed by %s", sandbox__signal_name(r->signal));
    else
        buf_printf(b, ", exit code %d", r->exit_code);
    buf_printf(b, " in %.1f ms (create %.1f, execute %.1f, teardown %.1f)\n", r->duration_ms,
               r->create_ms, r->execute_ms, r->teardown_ms);
    const struct sandbox_resources *s = &r->res;
    if (s->cpu_seconds >= 0)
        buf_printf(b,
                   "  cpu %.3f s, memory peak %.1f MB, %.3f MB-s, pids peak %" PRId64
                   ", cost %.6f cents\n",
                   s->cpu_seconds, s->memory_peak_mb, s->memory_mb_seconds, s->pids_peak,
                   s->estimated_cost_cents);
    /* details hold names the program chose (a DNS name, a path): JSON-escaped
     * already, but C1 and bidi characters are valid JSON string content */
    for (size_t i = 0; i < r->nevents; i++) {
        buf_printf(b, "  security event: %s {", r->events[i].reason);
        put_terminal_safe_str(b, r->events[i].details);
        buf_puts(b, "}\n");
    }
    if (r->ndegraded) {
        buf_puts(b, "  degraded:");
        for (size_t i = 0; i < r->ndegraded; i++)
            buf_printf(b, " %s", r->degraded[i]);
        buf_putc(b, '\n');
    }
    if (r->out.len) {
        buf_printf(b, "--- stdout%s ---\n", r->out_truncated ? " (truncated)" : "");
        put_terminal_safe(b, r->out.data, r->out.len);
        if (r->out.data[r->out.len - 1] != '\n')
            buf_putc(b, '\n');
    }
    if (r->err.len) {
        buf_printf(b, "--- stderr%s ---\n", r->err_truncated ? " (truncated)" : "");
        put_terminal_safe(b, r->err.data, r->err.len);
        if (r->err.data[r->err.len - 1] != '\n')
            buf_putc(b, '\n');
    }
    return buf_ok(b) ? 0 : -E2BIG;
}
