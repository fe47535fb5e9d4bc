/* test_validate.c - request validation, the SSRF classifier, and the service
 * configuration layers (validate.h, config.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/config.h"
#include "service/validate.h"
#include "test.h"

static struct validate_bounds bounds(void)
{
    struct service_config c;
    config_defaults(&c);
    struct validate_bounds b;
    validate_bounds_from_config(&c, &b);
    return b;
}

/* Validate body; return the status (0 = accepted) and fill v. */
static int check(const char *body, struct eval_record *r, struct validate_error *v)
{
    struct validate_bounds b = bounds();
    memset(v, 0, sizeof *v);
    int rc = validate_submission_body(body, strlen(body), &b, r, v);
    return rc == 0 ? 0 : v->http_status;
}

TEST(minimal_submission_gets_defaults_in_sandbox_units)
{
    struct eval_record r;
    struct validate_error v;
    ASSERT_EQ(check("{\"code\":\"print(1)\",\"language\":\"python3\"}", &r, &v), 0);
    ASSERT_STREQ(r.language, "python");
    ASSERT_EQ(r.code_len, 8);
    ASSERT_STREQ(r.code, "print(1)");
    ASSERT(r.args_json == NULL && r.files_json == NULL && r.submitter == NULL);
    ASSERT_STREQ(r.limits_json,
                 "{\"wall_timeout_ms\":10000,\"cpu_time_ms\":10000,\"memory_max_bytes\":268435456,"
                 "\"pids_max\":64,\"output_max_bytes\":1048576,\"disk_max_bytes\":67108864}");
    struct sandbox_limits l = {0};
    char err[256];
    ASSERT_EQ(validate_limits_parse(r.limits_json, &l, err, sizeof err), 0);
    ASSERT_EQ(l.wall_timeout_ms, 10000);
    ASSERT_EQ(l.memory_max_bytes, 256u << 20);
    store_record_clear(&r);
}

TEST(full_submission_round_trips_every_member)
{
    struct eval_record r;
    struct validate_error v;
    const char *body =
        "{\"code\":\"a\\u0000b\",\"language\":\"sh\",\"stdin\":\"in\",\"args\":[\"-x\",\"y\"],"
        "\"files\":[{\"path\":\"data.txt\",\"content_base64\":\"aGVsbG8=\"}],"
        "\"timeout_s\":1.5,\"cpu_time_s\":1,\"memory_mb\":64,\"pids\":8,\"output_bytes\":1000,"
        "\"disk_mb\":2,\"priority\":9,\"callback_url\":\"https://example.com/hook\","
        "\"metadata\":{\"submitter\":\"team-a\",\"run\":7}}";
    ASSERT_EQ(check(body, &r, &v), 0);
    ASSERT_EQ(r.code_len, 3); /* NUL kept in code */
    ASSERT(memcmp(r.code, "a\0b", 3) == 0);
    ASSERT_STREQ(r.stdin_data, "in");
    ASSERT_STREQ(r.args_json, "[\"-x\",\"y\"]");
    ASSERT_CONTAINS(r.files_json, "\"data.txt\"");
    ASSERT_CONTAINS(r.limits_json, "\"wall_timeout_ms\":1500,\"cpu_time_ms\":1000");
    ASSERT_CONTAINS(r.limits_json, "\"memory_max_bytes\":67108864,\"pids_max\":8");
    ASSERT_CONTAINS(r.limits_json, "\"output_max_bytes\":1000,\"disk_max_bytes\":2097152");
    ASSERT_EQ(r.priority, 9);
    ASSERT_STREQ(r.submitter, "team-a");
    ASSERT_STREQ(r.callback_url, "https://example.com/hook");
    ASSERT_STREQ(r.metadata_json, "{\"submitter\":\"team-a\",\"run\":7}");
    store_record_clear(&r);
}

struct bad_case {
    const char *body;
    int status;
    const char *code;
    const char *field;
};

TEST(every_rule_gives_its_status_code_and_field)
{
    static const struct bad_case cases[] = {
        {"{\"code\":", 400, "invalid_json", ""},
        {"{\"code\":\"x\",\"language\":\"sh\"} trailing", 400, "invalid_json", ""},
        {"{\"code\":\"x\",\"code\":\"y\",\"language\":\"sh\"}", 400, "invalid_json", ""},
        {"{\"code\":\"\xff\",\"language\":\"sh\"}", 400, "invalid_utf8", ""},
        {"{\"code\":\"\xed\xa0\x80\",\"language\":\"sh\"}", 400, "invalid_utf8", ""}, /* surrogate */
        {"{\"code\":\"\xc0\xaf\",\"language\":\"sh\"}", 400, "invalid_utf8", ""},     /* overlong */
        {"[1]", 422, "wrong_type", ""},
        {"{\"language\":\"sh\"}", 422, "missing_field", "code"},
        {"{\"code\":\"\",\"language\":\"sh\"}", 422, "out_of_range", "code"},
        {"{\"code\":1,\"language\":\"sh\"}", 422, "wrong_type", "code"},
        {"{\"code\":\"x\"}", 422, "missing_field", "language"},
        {"{\"code\":\"x\",\"language\":\"ruby\"}", 422, "unknown_language", "language"},
        {"{\"code\":\"x\",\"language\":\"Python\"}", 422, "unknown_language", "language"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"timeoutt_s\":1}", 422, "unknown_field",
         "timeoutt_s"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"timeout_s\":\"5\"}", 422, "wrong_type",
         "timeout_s"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"timeout_s\":0}", 422, "out_of_range", "timeout_s"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"timeout_s\":-1}", 422, "out_of_range",
         "timeout_s"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"timeout_s\":1e300}", 422, "out_of_range",
         "timeout_s"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"memory_mb\":1000000000}", 422, "out_of_range",
         "memory_mb"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"memory_mb\":1}", 422, "out_of_range", "memory_mb"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"memory_mb\":64.5}", 422, "wrong_type",
         "memory_mb"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"pids\":true}", 422, "wrong_type", "pids"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"priority\":10}", 422, "out_of_range", "priority"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"priority\":-1}", 422, "out_of_range", "priority"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"args\":\"-x\"}", 422, "wrong_type", "args"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"args\":[1]}", 422, "wrong_type", "args[0]"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"args\":[\"a\\u0000b\"]}", 422, "invalid_string",
         "args[0]"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"../etc/passwd\","
         "\"content_base64\":\"\"}]}",
         422, "unsafe_path", "files[0].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"/etc/passwd\","
         "\"content_base64\":\"\"}]}",
         422, "unsafe_path", "files[0].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a/b\","
         "\"content_base64\":\"\"}]}",
         422, "unsafe_path", "files[0].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\\u0000b\","
         "\"content_base64\":\"\"}]}",
         422, "invalid_string", "files[0].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"..\","
         "\"content_base64\":\"\"}]}",
         422, "unsafe_path", "files[0].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\","
         "\"content_base64\":\"!!!!\"}]}",
         422, "invalid_base64", "files[0].content_base64"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\","
         "\"content_base64\":\"\"},{\"path\":\"a\",\"content_base64\":\"\"}]}",
         422, "duplicate_path", "files[1].path"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\"}]}", 422,
         "missing_field", "files[0].content_base64"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\",\"content_base64\":\"\","
         "\"mode\":7}]}",
         422, "unknown_field", "files[0]"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"metadata\":[]}", 422, "wrong_type", "metadata"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"metadata\":{\"submitter\":5}}", 422, "wrong_type",
         "metadata.submitter"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"callback_url\":\"ftp://example.com/\"}", 422,
         "invalid_url", "callback_url"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"callback_url\":\"http://169.254.169.254/\"}",
         422, "forbidden_destination", "callback_url"},
        {"{\"code\":\"x\",\"language\":\"sh\",\"callback_url\":\"http://127.0.0.1:9/\"}", 422,
         "forbidden_destination", "callback_url"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct eval_record r;
        struct validate_error v;
        int st = check(cases[i].body, &r, &v);
        ASSERT_MSG(st == cases[i].status, "case %zu (%s): status %d, want %d (%s: %s)", i,
                   cases[i].body, st, cases[i].status, v.code, v.message);
        ASSERT_MSG(!strcmp(v.code, cases[i].code), "case %zu: code %s, want %s", i, v.code,
                   cases[i].code);
        ASSERT_MSG(!strcmp(v.field, cases[i].field), "case %zu: field '%s', want '%s'", i,
                   v.field, cases[i].field);
        ASSERT_MSG(r.code == NULL && r.language == NULL, "case %zu left data in the record", i);
        ASSERT(v.message[0]);
    }
}

TEST(bounds_give_413_with_the_field)
{
    struct service_config c;
    config_defaults(&c);
    c.code_max_bytes = 10;
    c.files_max = 1;
    c.file_max_bytes = 4;
    c.files_total_max_bytes = 4;
    struct validate_bounds b;
    validate_bounds_from_config(&c, &b);
    struct eval_record r;
    struct validate_error v;
    const char *big = "{\"code\":\"01234567890\",\"language\":\"sh\"}";
    ASSERT_EQ(validate_submission_body(big, strlen(big), &b, &r, &v), -E2BIG);
    ASSERT_EQ(v.http_status, 413);
    ASSERT_STREQ(v.field, "code");
    const char *two = "{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\","
                      "\"content_base64\":\"\"},{\"path\":\"b\",\"content_base64\":\"\"}]}";
    ASSERT_EQ(validate_submission_body(two, strlen(two), &b, &r, &v), -E2BIG);
    ASSERT_STREQ(v.field, "files");
    const char *fat = "{\"code\":\"x\",\"language\":\"sh\",\"files\":[{\"path\":\"a\","
                      "\"content_base64\":\"aGVsbG8=\"}]}"; /* 5 bytes > 4 */
    ASSERT_EQ(validate_submission_body(fat, strlen(fat), &b, &r, &v), -E2BIG);
    ASSERT_STREQ(v.field, "files[0].content_base64");
}

TEST(batch_prefix_names_the_item)
{
    struct validate_bounds b = bounds();
    json_t *o = json_loads("{\"code\":\"x\",\"language\":\"cobol\"}", 0, NULL);
    struct eval_record r;
    struct validate_error v;
    ASSERT(validate_submission(o, &b, "evaluations[3].", &r, &v) < 0);
    ASSERT_STREQ(v.field, "evaluations[3].language");
    json_decref(o);
}

TEST(language_names)
{
    ASSERT_STREQ(validate_language("python"), "python");
    ASSERT_STREQ(validate_language("python3"), "python");
    ASSERT_STREQ(validate_language("sh"), "sh");
    ASSERT(validate_language("bash") == NULL);
    ASSERT(validate_language("") == NULL);
}

TEST(path_safety)
{
    ASSERT(validate_path_safe("a.txt", 5));
    ASSERT(validate_path_safe("dir/a.txt", 9));
    ASSERT(validate_path_safe("..a", 3));
    ASSERT(!validate_path_safe("", 0));
    ASSERT(!validate_path_safe("/abs", 4));
    ASSERT(!validate_path_safe("a/../b", 6));
    ASSERT(!validate_path_safe("a/./b", 5));
    ASSERT(!validate_path_safe("a//b", 4));
    ASSERT(!validate_path_safe("a/", 2));
    ASSERT(!validate_path_safe("a\\b", 3));
    ASSERT(!validate_path_safe("a\0b", 3));
    ASSERT(!validate_path_safe("a\nb", 3));
    ASSERT(!validate_path_safe("\xff", 1));
    char longp[300];
    memset(longp, 'a', sizeof longp);
    ASSERT(!validate_path_safe(longp, 256));
    ASSERT(validate_path_safe(longp, 255));
}

static int cls(const char *s)
{
    enum validate_addr_class c = ADDR_PUBLIC;
    if (validate_addr_classify_str(s, &c) < 0)
        return -1;
    return (int)c;
}

TEST(address_classes)
{
    ASSERT_EQ(cls("8.8.8.8"), ADDR_PUBLIC);
    ASSERT_EQ(cls("2606:4700::1111"), ADDR_PUBLIC);
    ASSERT_EQ(cls("127.0.0.1"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("127.255.1.2"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("::1"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("[::1]"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("2130706433"), ADDR_LOOPBACK); /* 127.0.0.1 in decimal */
    ASSERT_EQ(cls("0x7f.1"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("::ffff:127.0.0.1"), ADDR_LOOPBACK);
    ASSERT_EQ(cls("10.1.2.3"), ADDR_PRIVATE);
    ASSERT_EQ(cls("172.16.0.1"), ADDR_PRIVATE);
    ASSERT_EQ(cls("172.31.255.255"), ADDR_PRIVATE);
    ASSERT_EQ(cls("172.32.0.1"), ADDR_PUBLIC);
    ASSERT_EQ(cls("192.168.1.1"), ADDR_PRIVATE);
    ASSERT_EQ(cls("100.64.0.1"), ADDR_PRIVATE);
    ASSERT_EQ(cls("::ffff:10.0.0.1"), ADDR_PRIVATE);
    ASSERT_EQ(cls("64:ff9b::a00:1"), ADDR_PRIVATE); /* NAT64 of 10.0.0.1 */
    ASSERT_EQ(cls("2002:a00:1::"), ADDR_PRIVATE);   /* 6to4 of 10.0.0.1 */
    ASSERT_EQ(cls("169.254.169.254"), ADDR_METADATA);
    ASSERT_EQ(cls("fd00:ec2::254"), ADDR_METADATA);
    ASSERT_EQ(cls("169.254.1.1"), ADDR_LINK_LOCAL);
    ASSERT_EQ(cls("fe80::1"), ADDR_LINK_LOCAL);
    ASSERT_EQ(cls("fd12:3456::1"), ADDR_UNIQUE_LOCAL);
    ASSERT_EQ(cls("fc00::1"), ADDR_UNIQUE_LOCAL);
    ASSERT_EQ(cls("0.0.0.0"), ADDR_UNSPECIFIED);
    ASSERT_EQ(cls("::"), ADDR_UNSPECIFIED);
    ASSERT_EQ(cls("224.0.0.1"), ADDR_MULTICAST);
    ASSERT_EQ(cls("ff02::1"), ADDR_MULTICAST);
    ASSERT_EQ(cls("255.255.255.255"), ADDR_MULTICAST);
    ASSERT_EQ(cls("240.0.0.1"), ADDR_RESERVED);
    ASSERT_EQ(cls("192.0.2.1"), ADDR_RESERVED);
    ASSERT_EQ(cls("2001:db8::1"), ADDR_RESERVED);
    ASSERT_EQ(cls("example.com"), -1);

    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.0.0.7", &s4.sin_addr);
    ASSERT_EQ(validate_addr_classify((struct sockaddr *)&s4), ADDR_PRIVATE);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &s6.sin6_addr);
    ASSERT_EQ(validate_addr_classify((struct sockaddr *)&s6), ADDR_LOOPBACK);

    ASSERT(validate_addr_allowed(ADDR_PUBLIC, false));
    ASSERT(!validate_addr_allowed(ADDR_LOOPBACK, false));
    ASSERT(validate_addr_allowed(ADDR_LOOPBACK, true));
    ASSERT(validate_addr_allowed(ADDR_METADATA, true) && !validate_addr_allowed(ADDR_METADATA, false));
    ASSERT(!validate_addr_allowed(ADDR_MULTICAST, true));
    ASSERT(!validate_addr_allowed(ADDR_UNSPECIFIED, true));
    ASSERT_STREQ(validate_addr_class_name(ADDR_LINK_LOCAL), "link_local");
}

TEST(callback_urls)
{
    struct validate_error v;
    char host[256];
    ASSERT_EQ(validate_callback_url("https://hooks.example.com:8443/x?y=1", false, host,
                                    sizeof host, &v), 0);
    ASSERT_STREQ(host, "hooks.example.com");
    ASSERT_EQ(validate_callback_url("http://[2606:4700::1111]/h", false, host, sizeof host, &v),
              0);
    ASSERT_STREQ(host, "2606:4700::1111");
    ASSERT_EQ(validate_callback_url("http://127.0.0.1:8080/h", true, host, sizeof host, &v), 0);
    static const char *const bad[] = {
        "http://localhost/",          "http://api.localhost/",     "http://[::1]:80/",
        "http://10.0.0.1/",           "http://169.254.169.254/latest", "http://[fe80::1]/",
        "http://2130706433/",         "http://0.0.0.0/",           "gopher://example.com/",
        "http://user:pw@example.com/", "http://exa mple.com/",      "http://example.com:0/",
        "http://example.com:99999/",  "http:///x",                 "http://ex$ample.com/",
        "http://[::1/",               "HTTP://10.0.0.1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&v, 0, sizeof v);
        ASSERT_MSG(validate_callback_url(bad[i], false, NULL, 0, &v) < 0, "accepted %s", bad[i]);
        ASSERT_EQ(v.http_status, 422);
        ASSERT_STREQ(v.field, "callback_url");
    }
    ASSERT_EQ(validate_callback_url("http://169.254.169.254/", false, NULL, 0, &v), -EINVAL);
    ASSERT_STREQ(v.code, "forbidden_destination");
    ASSERT_CONTAINS(v.message, "metadata");
    char longurl[STORE_URL_MAX + 20];
    memset(longurl, 'a', sizeof longurl - 1);
    longurl[sizeof longurl - 1] = '\0';
    memcpy(longurl, "http://", 7);
    ASSERT(validate_callback_url(longurl, false, NULL, 0, &v) < 0);
}

TEST(utf8_rules)
{
    ASSERT(validate_utf8("héllo €𝄞", strlen("héllo €𝄞")));
    ASSERT(!validate_utf8("\xc3", 1));
    ASSERT(!validate_utf8("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    ASSERT(!validate_utf8("\xe0\x80\xaf", 3));     /* overlong */
    ASSERT(validate_utf8("a\0b", 3));
}

/* ---- config ------------------------------------------------------------------ */

TEST(config_defaults_parse_and_pass_the_checks)
{
    struct service_config c;
    config_defaults(&c);
    ASSERT_STREQ(c.listen, "127.0.0.1:8080");
    ASSERT_STREQ(c.db_url, "sqlite:clearbox.db");
    ASSERT_EQ(c.lease_s, 30);
    ASSERT_EQ(c.max_body_bytes, 8u << 20);
    ASSERT_EQ(c.limits_default.timeout_ms, 10000);
    ASSERT_EQ(c.limits_max.memory_bytes, 4096ull << 20);
    char err[256];
    ASSERT_MSG(config_check(&c, err, sizeof err) == 0, "%s", err);
    /* every default re-parses through config_set */
    for (size_t i = 0; i < config_count(); i++)
        ASSERT(config_key(i) != NULL);
}

TEST(config_precedence_flags_env_file_defaults)
{
    char path[512];
    snprintf(path, sizeof path, "%s/c.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"workers\": 3, \"lease_s\": 40, \"max_body_bytes\": \"2M\", "
               "\"listen\": \"127.0.0.1:9001\", \"callback_allow_private\": true}");
    fclose(f);
    char env_cfg[600];
    snprintf(env_cfg, sizeof env_cfg, "CLEARBOX_CONFIG=%s", path);
    char *envp[] = {env_cfg, "CLEARBOX_WORKERS=5", "CLEARBOX_LEASE_S=50",
                    "CLEARBOX_SERVER=http://x", NULL};
    char *argv[] = {"serve", "--workers", "7", "--token=s3cret", NULL};
    struct service_config c;
    config_defaults(&c);
    char err[256];
    bool help;
    ASSERT_MSG(config_load(&c, 4, argv, envp, &help, err, sizeof err) == 0, "%s", err);
    ASSERT(!help);
    ASSERT_EQ(c.workers, 7);                 /* flag beats env and file */
    ASSERT_EQ(c.lease_s, 50);                /* env beats file */
    ASSERT_EQ(c.max_body_bytes, 2u << 20);   /* file beats default */
    ASSERT_STREQ(c.listen, "127.0.0.1:9001");
    ASSERT(c.callback_allow_private);
    ASSERT_STREQ(c.auth_token, "s3cret");    /* short flag */
    ASSERT_EQ(c.heartbeat_s, 10);            /* default */
    ASSERT_STREQ(c.config_file, path);
    char *js;
    ASSERT_EQ(config_to_json(&c, &js), 0);
    ASSERT_CONTAINS(js, "\"auth_token\":\"(set)\"");
    ASSERT(!strstr(js, "s3cret"));
    free(js);
}

TEST(config_errors_name_the_setting_and_layer)
{
    struct service_config c;
    char err[256];
    bool help;
    config_defaults(&c);
    char *a1[] = {"serve", "--workers", "many", NULL};
    ASSERT_EQ(config_load(&c, 3, a1, NULL, &help, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "--workers");
    config_defaults(&c);
    char *a2[] = {"serve", "--no-such-flag", NULL};
    ASSERT_EQ(config_load(&c, 2, a2, NULL, &help, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "--no-such-flag");
    config_defaults(&c);
    char *e3[] = {"CLEARBOX_MAX_ATTEMPTS=0", NULL};
    char *a3[] = {"serve", NULL};
    ASSERT_EQ(config_load(&c, 1, a3, e3, &help, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "CLEARBOX_MAX_ATTEMPTS");
    char path[512];
    snprintf(path, sizeof path, "%s/bad.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"wokers\": 3}");
    fclose(f);
    config_defaults(&c);
    char *a4[] = {"serve", "--config", path, NULL};
    ASSERT_EQ(config_load(&c, 3, a4, NULL, &help, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "wokers");
    config_defaults(&c);
    char *a5[] = {"serve", "--config", "/nonexistent/c.json", NULL};
    ASSERT_EQ(config_load(&c, 3, a5, NULL, &help, err, sizeof err), -ENOENT);
    config_defaults(&c);
    char *a6[] = {"serve", "-h", NULL};
    ASSERT_EQ(config_load(&c, 2, a6, NULL, &help, err, sizeof err), 0);
    ASSERT(help);
}

TEST(config_check_refuses_open_listen_without_token)
{
    struct service_config c;
    char err[512];
    config_defaults(&c);
    snprintf(c.listen, sizeof c.listen, "0.0.0.0:8080");
    ASSERT_EQ(config_check(&c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "without auth_token");
    c.allow_non_loopback = true;
    ASSERT_EQ(config_check(&c, err, sizeof err), 0);
    c.allow_non_loopback = false;
    snprintf(c.auth_token, sizeof c.auth_token, "t");
    ASSERT_EQ(config_check(&c, err, sizeof err), 0);
    config_defaults(&c);
    snprintf(c.listen, sizeof c.listen, "[::1]:0");
    ASSERT_EQ(config_check(&c, err, sizeof err), 0);
    snprintf(c.listen, sizeof c.listen, "localhost:80");
    ASSERT_EQ(config_check(&c, err, sizeof err), 0);
    snprintf(c.listen, sizeof c.listen, "::1:80");
    ASSERT_EQ(config_check(&c, err, sizeof err), -EINVAL);
    snprintf(c.listen, sizeof c.listen, "127.0.0.1:70000");
    ASSERT_EQ(config_check(&c, err, sizeof err), -EINVAL);
    config_defaults(&c);
    c.heartbeat_s = 30;
    ASSERT_EQ(config_check(&c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "heartbeat_s");
    config_defaults(&c);
    c.limits_default.memory_bytes = c.limits_max.memory_bytes + 1;
    ASSERT_EQ(config_check(&c, err, sizeof err), -EINVAL);
    ASSERT_CONTAINS(err, "default_memory");
}

TEST(config_help_lists_every_setting_with_env_and_default)
{
    char path[512];
    snprintf(path, sizeof path, "%s/help.txt", test_tmpdir());
    FILE *f = fopen(path, "w+");
    config_help(f);
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *text = calloc(1, (size_t)n + 1);
    ASSERT_EQ(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    for (size_t i = 0; i < config_count(); i++) {
        char flag[96], env[96];
        snprintf(flag, sizeof flag, "--%s", config_key(i));
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        snprintf(env, sizeof env, "CLEARBOX_%s", config_key(i));
        for (char *p = env; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        ASSERT_CONTAINS(text, flag);
        ASSERT_CONTAINS(text, env);
    }
    ASSERT_CONTAINS(text, "[default: 127.0.0.1:8080]");
    ASSERT_CONTAINS(text, "[default: sqlite:clearbox.db]");
    free(text);
}

TEST(limits_json_parse_rejects_garbage)
{
    struct sandbox_limits l = {0};
    char err[256];
    ASSERT_EQ(validate_limits_parse(NULL, &l, err, sizeof err), 0);
    ASSERT_EQ(validate_limits_parse("{\"pids_max\":-1}", &l, err, sizeof err), -EINVAL);
    ASSERT_EQ(validate_limits_parse("[]", &l, err, sizeof err), -EINVAL);
    ASSERT_EQ(validate_limits_parse("{", &l, err, sizeof err), -EINVAL);
    ASSERT_EQ(validate_limits_parse("{\"open_files_max\":32}", &l, err, sizeof err), 0);
    ASSERT_EQ(l.open_files_max, 32);
}
