/* fuzz_validate.c - libFuzzer target for the request parsing and validation
 * of the service (service/validate.h): submission bodies, callback URLs,
 * workspace paths and the UTF-8 check.
 *
 * Build and run (clang 14, Debian):
 *   make fuzz                  # build/fuzz/fuzz_validate
 *   build/fuzz/fuzz_validate -max_total_time=60 fuzz/corpus_validate
 *
 * Besides "no crash, no leak, no UB" (ASan/UBSan), each input checks the
 * promises of validate.h: an accepted submission has a canonical language,
 * its sizes within the bounds, limits_json that validate_limits_parse reads
 * back within limits_max; a refused one leaves the record empty and names an
 * HTTP status of 400, 413 or 422. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/config.h"
#include "service/validate.h"

static struct validate_bounds bounds;
static int ready;

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "broken promise: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        struct service_config c;
        config_defaults(&c);
        c.files_max = 4;                /* small bounds: reach the limits often */
        c.file_max_bytes = 64;
        c.files_total_max_bytes = 128;
        c.code_max_bytes = 4096;
        validate_bounds_from_config(&c, &bounds);
        ready = 1;
    }
    struct eval_record r;
    struct validate_error v;
    memset(&v, 0, sizeof v);
    int rc = validate_submission_body((const char *)data, size, &bounds, &r, &v);
    if (rc == 0) {
        check(r.language && validate_language(r.language) &&
                  !strcmp(validate_language(r.language), r.language),
              "canonical language");
        check(r.code && r.code_len > 0 && r.code_len <= bounds.code_max_bytes, "code bounds");
        check(r.priority >= 0 && r.priority <= 9, "priority range");
        struct sandbox_limits l;
        memset(&l, 0, sizeof l);
        check(validate_limits_parse(r.limits_json, &l, NULL, 0) == 0, "limits_json parses");
        check(l.wall_timeout_ms > 0 && l.wall_timeout_ms <= bounds.limits_max.timeout_ms,
              "timeout within max");
        check(l.memory_max_bytes <= bounds.limits_max.memory_bytes, "memory within max");
        check(l.pids_max <= bounds.limits_max.pids, "pids within max");
        check(validate_utf8(r.code, r.code_len), "code is UTF-8");
        store_record_clear(&r);
    } else {
        check(r.code == NULL && r.language == NULL && r.limits_json == NULL, "record left empty");
        check(v.http_status == 400 || v.http_status == 413 || v.http_status == 422,
              "status is 400/413/422");
        check(v.code[0] != '\0' && v.message[0] != '\0', "error has code and message");
    }

    /* the same bytes as a callback URL and as a path */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char host[256];
    if (validate_callback_url(s, false, host, sizeof host, &v) == 0) {
        enum validate_addr_class cls;
        if (validate_addr_classify_str(host, &cls) == 0)
            check(validate_addr_allowed(cls, false), "accepted URL has an allowed literal host");
    }
    if (validate_path_safe(s, size))
        check(s[0] != '/' && !strstr(s, "/../") && strncmp(s, "../", 3) && strcmp(s, "..") &&
                  !memchr(s, '\0', size),
              "safe path has no traversal");
    free(s);
    return 0;
}
