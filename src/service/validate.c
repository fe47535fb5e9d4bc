/* validate.c - see validate.h.
 *
 * Order of checks for a body: size (http.c already did), UTF-8 of the whole
 * body (so a bad byte gets "invalid_utf8" rather than jansson's generic
 * parse error), JSON syntax, then each member by a fixed order, stopping at
 * the first failure so the message names one field. Nothing is allocated in
 * the record until every check has passed, except the strings copied at the
 * end (and freed again on failure). */
#include "service/validate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"
#include "util/num.h"

static int fail(struct validate_error *v, int status, const char *code, const char *prefix,
                const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int fail(struct validate_error *v, int status, const char *code, const char *prefix,
                const char *field, const char *fmt, ...)
{
    if (v) {
        v->http_status = status;
        snprintf(v->code, sizeof v->code, "%s", code);
        snprintf(v->field, sizeof v->field, "%s%s", prefix ? prefix : "", field ? field : "");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->message, sizeof v->message, fmt, ap);
        va_end(ap);
    }
    return status == 413 ? -E2BIG : -EINVAL;
}

void validate_bounds_from_config(const struct service_config *c, struct validate_bounds *b)
{
    memset(b, 0, sizeof *b);
    b->limits_default = c->limits_default;
    b->limits_max = c->limits_max;
    b->code_max_bytes = c->code_max_bytes;
    b->stdin_max_bytes = c->stdin_max_bytes;
    b->args_max = c->args_max;
    b->arg_max_bytes = c->arg_max_bytes;
    b->files_max = c->files_max;
    b->file_max_bytes = c->file_max_bytes;
    b->files_total_max_bytes = c->files_total_max_bytes;
    b->metadata_max_bytes = c->metadata_max_bytes;
    b->callback_allow_private = c->callback_allow_private;
}

/* ---- small checks ------------------------------------------------------------- */

bool validate_utf8(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

const char *validate_language(const char *name)
{
    if (!name)
        return NULL;
    if (!strcmp(name, "python") || !strcmp(name, "python3"))
        return "python";
    if (!strcmp(name, "sh"))
        return "sh";
    return NULL;
}

bool validate_path_safe(const char *path, size_t len)
{
    if (!path || len == 0 || len > VALIDATE_PATH_MAX || path[0] == '/')
        return false;
    size_t seg_start = 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = i < len ? (unsigned char)path[i] : '/';
        if (i < len && (c < 0x20 || c == 0x7F || c == '\\'))
            return false;
        if (c == '/') {
            size_t sl = i - seg_start;
            if (sl == 0)
                return false;
            if (sl == 1 && path[seg_start] == '.')
                return false;
            if (sl == 2 && path[seg_start] == '.' && path[seg_start + 1] == '.')
                return false;
            seg_start = i + 1;
        }
    }
    return validate_utf8(path, len);
}

/* ---- the SSRF guard ------------------------------------------------------------------- */

static enum validate_addr_class classify_v4(uint32_t a) /* host order */
{
    uint8_t o1 = (uint8_t)(a >> 24), o2 = (uint8_t)(a >> 16), o3 = (uint8_t)(a >> 8);
    if (o1 == 0)
        return ADDR_UNSPECIFIED;
    if (o1 == 127)
        return ADDR_LOOPBACK;
    if (o1 == 10 || (o1 == 172 && (o2 & 0xF0) == 16) || (o1 == 192 && o2 == 168) ||
        (o1 == 100 && (o2 & 0xC0) == 64))
        return ADDR_PRIVATE;
    if (a == 0xA9FEA9FEu) /* 169.254.169.254 */
        return ADDR_METADATA;
    if (o1 == 169 && o2 == 254)
        return ADDR_LINK_LOCAL;
    if (a == 0xFFFFFFFFu || (o1 & 0xF0) == 224)
        return ADDR_MULTICAST;
    if ((o1 & 0xF0) == 240)
        return ADDR_RESERVED;
    if ((o1 == 192 && o2 == 0 && (o3 == 0 || o3 == 2)) || (o1 == 198 && (o2 & 0xFE) == 18) ||
        (o1 == 198 && o2 == 51 && o3 == 100) || (o1 == 203 && o2 == 0 && o3 == 113))
        return ADDR_RESERVED;
    return ADDR_PUBLIC;
}

static enum validate_addr_class classify_v6(const uint8_t *b)
{
    static const uint8_t zero[16];
    if (!memcmp(b, zero, 16))
        return ADDR_UNSPECIFIED;
    if (!memcmp(b, zero, 15) && b[15] == 1)
        return ADDR_LOOPBACK;
    uint32_t v4 = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) |
                  b[15];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (!memcmp(b, mapped, 12))
        return classify_v4(v4);
    static const uint8_t nat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(b, nat64, 12))
        return classify_v4(v4);
    if (!memcmp(b, zero, 12)) /* ::a.b.c.d, deprecated IPv4-compatible */
        return ADDR_RESERVED;
    if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 embeds an IPv4 address */
        return classify_v4(((uint32_t)b[2] << 24) | ((uint32_t)b[3] << 16) |
                           ((uint32_t)b[4] << 8) | b[5]);
    /* fd00:ec2::254, the AWS IPv6 metadata endpoint */
    static const uint8_t metadata[16] = {0xFD, 0x00, 0x0E, 0xC2, 0, 0, 0, 0,
                                         0,    0,    0,    0,    0, 0, 0x02, 0x54};
    if (!memcmp(b, metadata, 16))
        return ADDR_METADATA;
    if ((b[0] & 0xFE) == 0xFC)
        return ADDR_UNIQUE_LOCAL;
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)
        return ADDR_LINK_LOCAL;
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) /* site-local, deprecated */
        return ADDR_PRIVATE;
    if (b[0] == 0xFF)
        return ADDR_MULTICAST;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8) /* documentation */
        return ADDR_RESERVED;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) /* Teredo */
        return ADDR_RESERVED;
    if (b[0] == 0x01 && !memcmp(b + 1, zero, 7)) /* 100::/64 discard */
        return ADDR_RESERVED;
    return ADDR_PUBLIC;
}

enum validate_addr_class validate_addr_classify(const struct sockaddr *sa)
{
    if (!sa)
        return ADDR_RESERVED;
    if (sa->sa_family == AF_INET)
        return classify_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6)
        return classify_v6(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
    return ADDR_RESERVED;
}

int validate_addr_classify_str(const char *s, enum validate_addr_class *out)
{
    if (!s)
        return -EINVAL;
    char tmp[INET6_ADDRSTRLEN + 8];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof tmp)
            return -EINVAL;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        s = tmp;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        *out = classify_v6(a6.s6_addr);
        return 0;
    }
    /* inet_aton also takes the forms resolvers accept ("2130706433",
     * "0x7f.1", "127.1"), which an attacker would use to hide 127.0.0.1. */
    if (inet_aton(s, &a4) == 1) {
        *out = classify_v4(ntohl(a4.s_addr));
        return 0;
    }
    return -EINVAL;
}

const char *validate_addr_class_name(enum validate_addr_class c)
{
    switch (c) {
    case ADDR_PUBLIC: return "public";
    case ADDR_LOOPBACK: return "loopback";
    case ADDR_PRIVATE: return "private";
    case ADDR_LINK_LOCAL: return "link_local";
    case ADDR_METADATA: return "metadata";
    case ADDR_UNIQUE_LOCAL: return "unique_local";
    case ADDR_UNSPECIFIED: return "unspecified";
    case ADDR_MULTICAST: return "multicast";
    case ADDR_RESERVED: return "reserved";
    }
    return "reserved";
}

bool validate_addr_allowed(enum validate_addr_class c, bool allow_private)
{
    switch (c) {
    case ADDR_PUBLIC: return true;
    case ADDR_LOOPBACK:
    case ADDR_PRIVATE:
    case ADDR_LINK_LOCAL:
    case ADDR_METADATA:
    case ADDR_UNIQUE_LOCAL: return allow_private;
    default: return false;
    }
}

static bool host_is_localhost(const char *h)
{
    size_t n = strlen(h);
    if (n && h[n - 1] == '.')
        n--;
    if (n == 9 && !strncasecmp(h, "localhost", 9))
        return true;
    return n > 10 && !strncasecmp(h + n - 10, ".localhost", 10);
}

int validate_callback_url(const char *url, bool allow_private, char *host_out, size_t hostlen,
                          struct validate_error *verr)
{
    const char *F = "callback_url";
    if (!url)
        return fail(verr, 422, "invalid_url", NULL, F, "callback_url is missing");
    size_t n = strlen(url);
    if (n > STORE_URL_MAX)
        return fail(verr, 422, "invalid_url", NULL, F, "callback_url is longer than %d bytes",
                    STORE_URL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7F)
            return fail(verr, 422, "invalid_url", NULL, F,
                        "callback_url must be ASCII without spaces or control characters "
                        "(percent-encode the rest)");
    }
    const char *p;
    if (!strncasecmp(url, "http://", 7))
        p = url + 7;
    else if (!strncasecmp(url, "https://", 8))
        p = url + 8;
    else
        return fail(verr, 422, "invalid_url", NULL, F, "callback_url must start with http:// or https://");
    size_t alen = strcspn(p, "/?#");
    if (alen == 0)
        return fail(verr, 422, "invalid_url", NULL, F, "callback_url has no host");
    if (memchr(p, '@', alen))
        return fail(verr, 422, "invalid_url", NULL, F,
                    "callback_url must not carry credentials (user@host)");
    char host[256];
    const char *port = NULL;
    size_t portlen = 0;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', alen);
        if (!close || (size_t)(close - p - 1) >= sizeof host)
            return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad IPv6 host");
        memcpy(host, p + 1, (size_t)(close - p - 1));
        host[close - p - 1] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad IPv6 host");
        const char *after = close + 1;
        if (after < p + alen) {
            if (*after != ':')
                return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad port");
            port = after + 1;
            portlen = (size_t)(p + alen - port);
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        size_t hl = colon ? (size_t)(colon - p) : alen;
        if (hl == 0 || hl >= sizeof host || hl > 253)
            return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad host");
        memcpy(host, p, hl);
        host[hl] = '\0';
        if (colon) {
            port = colon + 1;
            portlen = (size_t)(p + alen - port);
        }
        /* letters, digits, '-', '.', labels of 1..63 */
        size_t label = 0;
        for (size_t i = 0; i < hl; i++) {
            char c = host[i];
            if (c == '.') {
                if (label == 0 && i + 1 < hl)
                    return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad host");
                label = 0;
            } else if (isalnum((unsigned char)c) || c == '-' || c == '_') {
                if (++label > 63)
                    return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad host");
            } else {
                return fail(verr, 422, "invalid_url", NULL, F,
                            "callback_url host may hold only letters, digits, '-' and '.'");
            }
        }
    }
    if (port) {
        if (portlen == 0 || portlen > 5)
            return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad port");
        long v = 0;
        for (size_t i = 0; i < portlen; i++) {
            if (!isdigit((unsigned char)port[i]))
                return fail(verr, 422, "invalid_url", NULL, F, "callback_url has a bad port");
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return fail(verr, 422, "invalid_url", NULL, F, "callback_url port must be 1-65535");
    }
    enum validate_addr_class cls;
    bool literal = validate_addr_classify_str(host, &cls) == 0;
    if (!literal && host_is_localhost(host)) {
        cls = ADDR_LOOPBACK;
        literal = true;
    }
    if (literal && !validate_addr_allowed(cls, allow_private))
        return fail(verr, 422, "forbidden_destination", NULL, F,
                    "callback_url points to a %s address; the service does not deliver there%s",
                    validate_addr_class_name(cls),
                    validate_addr_allowed(cls, true) ? " (callback_allow_private is off)" : "");
    if (host_out && hostlen)
        snprintf(host_out, hostlen, "%s", host);
    return 0;
}

/* ---- submissions ------------------------------------------------------------------------- */

static const char *const known_fields[] = {
    "code",     "language",   "stdin",      "args",   "files",        "timeout_s",
    "cpu_time_s", "memory_mb", "pids",      "output_bytes", "disk_mb", "priority",
    "callback_url", "metadata", NULL};

/* A positive number member (seconds, may be fractional) in ms, or default. */
static int get_seconds(const json_t *obj, const char *key, uint64_t def_ms, uint64_t max_ms,
                       const char *prefix, uint64_t *out, struct validate_error *v)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) {
        *out = def_ms;
        return 0;
    }
    if (!json_is_number(j))
        return fail(v, 422, "wrong_type", prefix, key, "%s must be a number of seconds", key);
    double d = json_number_value(j);
    if (!isfinite(d) || d <= 0 || d * 1000.0 > (double)max_ms || num_llround(d * 1000.0) < 1)
        return fail(v, 422, "out_of_range", prefix, key,
                    "%s must be more than 0 and at most %.3f", key, (double)max_ms / 1000.0);
    *out = (uint64_t)num_llround(d * 1000.0);
    return 0;
}

/* A positive integer member times unit, or default. */
static int get_count(const json_t *obj, const char *key, uint64_t unit, uint64_t min,
                     uint64_t def, uint64_t max, const char *prefix, uint64_t *out,
                     struct validate_error *v)
{
    json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(j))
        return fail(v, 422, "wrong_type", prefix, key, "%s must be an integer", key);
    json_int_t x = json_integer_value(j);
    if (x < (json_int_t)(min / unit) || (uint64_t)x > max / unit)
        return fail(v, 422, "out_of_range", prefix, key, "%s must be between %llu and %llu", key,
                    (unsigned long long)(min / unit), (unsigned long long)(max / unit));
    *out = (uint64_t)x * unit;
    return 0;
}

static int check_string(const json_t *j, const char *key, const char *prefix, bool nul_ok,
                        uint64_t max, struct validate_error *v)
{
    if (!json_is_string(j))
        return fail(v, 422, "wrong_type", prefix, key, "%s must be a string", key);
    size_t n = json_string_length(j);
    if (n > max)
        return fail(v, 413, "too_large", prefix, key, "%s is longer than %llu bytes", key,
                    (unsigned long long)max);
    if (!nul_ok && memchr(json_string_value(j), '\0', n))
        return fail(v, 422, "invalid_string", prefix, key, "%s must not contain NUL", key);
    return 0;
}

static char *dump_compact(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

int validate_submission(const json_t *obj, const struct validate_bounds *b, const char *prefix,
                        struct eval_record *out, struct validate_error *v)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj))
        return fail(v, 422, "wrong_type", prefix, "", "the evaluation must be a JSON object");

    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        bool known = false;
        for (size_t i = 0; known_fields[i]; i++)
            known |= !strcmp(key, known_fields[i]);
        if (!known) {
            char k[64];
            snprintf(k, sizeof k, "%s", key);
            return fail(v, 422, "unknown_field", prefix, k, "unknown field '%s'", k);
        }
    }

    /* code, language */
    json_t *code = json_object_get(obj, "code");
    if (!code)
        return fail(v, 422, "missing_field", prefix, "code", "code is required");
    TRY(check_string(code, "code", prefix, true, b->code_max_bytes, v));
    if (json_string_length(code) == 0)
        return fail(v, 422, "out_of_range", prefix, "code", "code is empty");
    json_t *lang = json_object_get(obj, "language");
    if (!lang)
        return fail(v, 422, "missing_field", prefix, "language", "language is required");
    if (!json_is_string(lang))
        return fail(v, 422, "wrong_type", prefix, "language", "language must be a string");
    const char *canon = validate_language(json_string_value(lang));
    if (!canon || strlen(json_string_value(lang)) != json_string_length(lang)) {
        char shown[40];
        snprintf(shown, sizeof shown, "%s", json_string_value(lang));
        return fail(v, 422, "unknown_language", prefix, "language",
                    "unknown language '%s' (use python, python3 or sh)", shown);
    }

    /* stdin, args */
    json_t *in = json_object_get(obj, "stdin");
    if (in && !json_is_null(in))
        TRY(check_string(in, "stdin", prefix, true, b->stdin_max_bytes, v));
    else
        in = NULL;
    json_t *args = json_object_get(obj, "args");
    if (args && json_is_null(args))
        args = NULL;
    if (args) {
        if (!json_is_array(args))
            return fail(v, 422, "wrong_type", prefix, "args", "args must be an array of strings");
        if (json_array_size(args) > (size_t)b->args_max)
            return fail(v, 413, "too_large", prefix, "args", "at most %d args", b->args_max);
        size_t i;
        json_t *a;
        json_array_foreach(args, i, a)
        {
            char f[32];
            snprintf(f, sizeof f, "args[%zu]", i);
            TRY(check_string(a, f, prefix, false, b->arg_max_bytes, v));
        }
    }

    /* files */
    json_t *files = json_object_get(obj, "files");
    if (files && json_is_null(files))
        files = NULL;
    if (files) {
        if (!json_is_array(files))
            return fail(v, 422, "wrong_type", prefix, "files",
                        "files must be an array of {path, content_base64}");
        if (json_array_size(files) > (size_t)b->files_max)
            return fail(v, 413, "too_large", prefix, "files", "at most %d files", b->files_max);
        uint64_t total = 0;
        size_t i;
        json_t *f;
        json_array_foreach(files, i, f)
        {
            char fp[48], fc[48], fe[32];
            snprintf(fe, sizeof fe, "files[%zu]", i);
            snprintf(fp, sizeof fp, "files[%zu].path", i);
            snprintf(fc, sizeof fc, "files[%zu].content_base64", i);
            if (!json_is_object(f))
                return fail(v, 422, "wrong_type", prefix, fe,
                            "%s must be an object {path, content_base64}", fe);
            const char *fk;
            json_t *fv;
            json_object_foreach(f, fk, fv)
            {
                if (strcmp(fk, "path") && strcmp(fk, "content_base64"))
                    return fail(v, 422, "unknown_field", prefix, fe,
                                "%s has an unknown member (only path and content_base64)", fe);
            }
            json_t *path = json_object_get(f, "path");
            json_t *content = json_object_get(f, "content_base64");
            if (!path)
                return fail(v, 422, "missing_field", prefix, fp, "%s is required", fp);
            if (!content)
                return fail(v, 422, "missing_field", prefix, fc, "%s is required", fc);
            TRY(check_string(path, fp, prefix, false, VALIDATE_PATH_MAX, v));
            const char *ps = json_string_value(path);
            size_t pl = json_string_length(path);
            if (!validate_path_safe(ps, pl) || memchr(ps, '/', pl))
                return fail(v, 422, "unsafe_path", prefix, fp,
                            "%s must be a plain file name (no '/', '..', NUL or control "
                            "characters)", fp);
            for (size_t k = 0; k < i; k++) {
                json_t *other = json_object_get(json_array_get(files, k), "path");
                if (!strcmp(json_string_value(other), ps))
                    return fail(v, 422, "duplicate_path", prefix, fp, "%s repeats a path", fp);
            }
            if (!json_is_string(content))
                return fail(v, 422, "wrong_type", prefix, fc, "%s must be a string", fc);
            long long dl =
                base64_decoded_len(json_string_value(content), json_string_length(content));
            if (dl < 0)
                return fail(v, 422, "invalid_base64", prefix, fc,
                            "%s is not valid base64 (standard alphabet, padded)", fc);
            if ((uint64_t)dl > b->file_max_bytes)
                return fail(v, 413, "too_large", prefix, fc, "%s decodes to more than %llu bytes",
                            fc, (unsigned long long)b->file_max_bytes);
            total += (uint64_t)dl;
            if (total > b->files_total_max_bytes)
                return fail(v, 413, "too_large", prefix, "files",
                            "files decode to more than %llu bytes in all",
                            (unsigned long long)b->files_total_max_bytes);
        }
    }

    /* limits */
    const struct config_eval_limits *d = &b->limits_default, *m = &b->limits_max;
    uint64_t timeout_ms, cpu_ms, mem, pids, outb, disk;
    TRY(get_seconds(obj, "timeout_s", d->timeout_ms, m->timeout_ms, prefix, &timeout_ms, v));
    uint64_t cpu_def = d->cpu_time_ms ? d->cpu_time_ms : timeout_ms;
    if (cpu_def > m->cpu_time_ms)
        cpu_def = m->cpu_time_ms;
    TRY(get_seconds(obj, "cpu_time_s", cpu_def, m->cpu_time_ms, prefix, &cpu_ms, v));
    TRY(get_count(obj, "memory_mb", 1u << 20, 4u << 20, d->memory_bytes, m->memory_bytes, prefix,
                  &mem, v));
    TRY(get_count(obj, "pids", 1, 2, d->pids, m->pids, prefix, &pids, v));
    TRY(get_count(obj, "output_bytes", 1, 1, d->output_bytes, m->output_bytes, prefix, &outb, v));
    TRY(get_count(obj, "disk_mb", 1u << 20, 1u << 20, d->disk_bytes, m->disk_bytes, prefix, &disk,
                  v));

    /* priority */
    int priority = 0;
    json_t *pr = json_object_get(obj, "priority");
    if (pr && !json_is_null(pr)) {
        if (!json_is_integer(pr))
            return fail(v, 422, "wrong_type", prefix, "priority", "priority must be an integer");
        json_int_t x = json_integer_value(pr);
        if (x < 0 || x > 9)
            return fail(v, 422, "out_of_range", prefix, "priority", "priority must be 0-9");
        priority = (int)x;
    }

    /* callback_url */
    json_t *cb = json_object_get(obj, "callback_url");
    if (cb && json_is_null(cb))
        cb = NULL;
    if (cb) {
        TRY(check_string(cb, "callback_url", prefix, false, STORE_URL_MAX, v));
        int rc = validate_callback_url(json_string_value(cb), b->callback_allow_private, NULL, 0,
                                       v);
        if (rc < 0) {
            if (v && prefix) {
                char f[VALIDATE_FIELD_MAX];
                snprintf(f, sizeof f, "%s%s", prefix, v->field);
                memcpy(v->field, f, sizeof f);
            }
            return rc;
        }
    }

    /* metadata */
    json_t *md = json_object_get(obj, "metadata");
    if (md && json_is_null(md))
        md = NULL;
    json_t *sub = NULL;
    char *md_text = NULL;
    if (md) {
        if (!json_is_object(md))
            return fail(v, 422, "wrong_type", prefix, "metadata", "metadata must be an object");
        sub = json_object_get(md, "submitter");
        if (sub && json_is_null(sub))
            sub = NULL;
        if (sub) {
            TRY(check_string(sub, "metadata.submitter", prefix, false, STORE_SUBMITTER_MAX, v));
            const char *s = json_string_value(sub);
            for (const char *q = s; *q; q++)
                if ((unsigned char)*q < 0x20 || *q == 0x7F)
                    return fail(v, 422, "invalid_string", prefix, "metadata.submitter",
                                "metadata.submitter must not contain control characters");
        }
        md_text = dump_compact(md);
        if (!md_text)
            return fail(v, 400, "invalid_json", prefix, "metadata", "metadata cannot be encoded");
        if (strlen(md_text) > b->metadata_max_bytes) {
            free(md_text);
            return fail(v, 413, "too_large", prefix, "metadata",
                        "metadata is larger than %llu bytes as JSON",
                        (unsigned long long)b->metadata_max_bytes);
        }
    }

    /* everything passed: fill the record */
    char lim[512];
    snprintf(lim, sizeof lim,
             "{\"wall_timeout_ms\":%llu,\"cpu_time_ms\":%llu,\"memory_max_bytes\":%llu,"
             "\"pids_max\":%llu,\"output_max_bytes\":%llu,\"disk_max_bytes\":%llu}",
             (unsigned long long)timeout_ms, (unsigned long long)cpu_ms,
             (unsigned long long)mem, (unsigned long long)pids, (unsigned long long)outb,
             (unsigned long long)disk);
    out->language = strdup(canon);
    out->code = dup_bytes(json_string_value(code), json_string_length(code));
    out->code_len = json_string_length(code);
    if (in) {
        out->stdin_data = dup_bytes(json_string_value(in), json_string_length(in));
        out->stdin_len = json_string_length(in);
    }
    out->args_json = args ? dump_compact(args) : NULL;
    out->files_json = files ? dump_compact(files) : NULL;
    out->limits_json = strdup(lim);
    out->metadata_json = md_text;
    out->submitter = sub ? strdup(json_string_value(sub)) : NULL;
    out->priority = priority;
    out->callback_url = cb ? strdup(json_string_value(cb)) : NULL;
    if (!out->language || !out->code || (in && !out->stdin_data) || (args && !out->args_json) ||
        (files && !out->files_json) || !out->limits_json || (sub && !out->submitter) ||
        (cb && !out->callback_url)) {
        store_record_clear(out);
        return fail(v, 500, "internal", prefix, "", "out of memory");
    }
    return 0;
}

int validate_submission_body(const char *body, size_t len, const struct validate_bounds *b,
                             struct eval_record *out, struct validate_error *v)
{
    memset(out, 0, sizeof *out);
    if (!validate_utf8(body, len))
        return fail(v, 400, "invalid_utf8", NULL, "", "the request body is not valid UTF-8");
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root)
        return fail(v, 400, "invalid_json", NULL, "", "malformed JSON at line %d column %d: %s",
                    je.line, je.column, je.text);
    int rc = validate_submission(root, b, NULL, out, v);
    json_decref(root);
    return rc;
}

int validate_limits_parse(const char *limits_json, struct sandbox_limits *out, char *err,
                          size_t errlen)
{
    if (!limits_json || !*limits_json)
        return 0;
    json_error_t je;
    json_t *root = json_loads(limits_json, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(err, errlen, -EINVAL, "limits_json: %s", je.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(err, errlen, -EINVAL, "limits_json is not an object");
        goto out;
    }
    static const struct {
        const char *key;
        size_t off;
    } members[] = {
        {"wall_timeout_ms", offsetof(struct sandbox_limits, wall_timeout_ms)},
        {"cpu_time_ms", offsetof(struct sandbox_limits, cpu_time_ms)},
        {"memory_max_bytes", offsetof(struct sandbox_limits, memory_max_bytes)},
        {"pids_max", offsetof(struct sandbox_limits, pids_max)},
        {"output_max_bytes", offsetof(struct sandbox_limits, output_max_bytes)},
        {"disk_max_bytes", offsetof(struct sandbox_limits, disk_max_bytes)},
        {"open_files_max", offsetof(struct sandbox_limits, open_files_max)},
        {"cpu_cores_milli", offsetof(struct sandbox_limits, cpu_cores_milli)},
    };
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        json_t *j = json_object_get(root, members[i].key);
        if (!j)
            continue;
        if (!json_is_integer(j) || json_integer_value(j) < 0) {
            rc = err_set(err, errlen, -EINVAL, "limits_json.%s must be an integer >= 0",
                         members[i].key);
            goto out;
        }
        *(uint64_t *)((char *)out + members[i].off) = (uint64_t)json_integer_value(j);
    }
out:
    json_decref(root);
    return rc;
}
