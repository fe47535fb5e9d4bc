/* hash.c - see hash.h. */
#include "util/hash.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>

#include "util/hex.h"

/* libcrypto is loaded with dlopen on first use, like libcurl (util/curl_dl.h):
 * linked, its relocations cost every clearbox start ~0.85 ms, and most
 * `clearbox run` invocations hash nothing. The four calls below are all
 * clearbox uses. If the library cannot be loaded every function returns -EIO
 * (hash_equal falls back to a constant-time loop of its own). */
#define CRYPTO_SONAME "libcrypto.so.3"

static struct {
    int (*digest)(const void *, size_t, unsigned char *, unsigned int *, const EVP_MD *,
                  ENGINE *);
    const EVP_MD *(*sha256)(void);
    unsigned char *(*hmac)(const EVP_MD *, const void *, int, const unsigned char *, size_t,
                           unsigned char *, unsigned int *);
    bool ok;
} cr;
static pthread_once_t cr_once = PTHREAD_ONCE_INIT;

static void cr_load(void)
{
    void *h = dlopen(CRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    cr.digest = (int (*)(const void *, size_t, unsigned char *, unsigned int *, const EVP_MD *,
                         ENGINE *))dlsym(h, "EVP_Digest");
    cr.sha256 = (const EVP_MD *(*)(void))dlsym(h, "EVP_sha256");
    cr.hmac = (unsigned char *(*)(const EVP_MD *, const void *, int, const unsigned char *,
                                  size_t, unsigned char *, unsigned int *))dlsym(h, "HMAC");
    cr.ok = cr.digest && cr.sha256 && cr.hmac;
}

static bool cr_ready(void)
{
    pthread_once(&cr_once, cr_load);
    return cr.ok;
}

int hash_sha256(const void *data, size_t n, uint8_t out[HASH_SHA256_LEN])
{
    unsigned int len = 0;
    if (!cr_ready() || !cr.digest(data, n, out, &len, cr.sha256(), NULL) ||
        len != HASH_SHA256_LEN)
        return -EIO;
    return 0;
}

int hash_sha256_hex(const void *data, size_t n, char out[HASH_SHA256_HEX])
{
    uint8_t md[HASH_SHA256_LEN];
    int rc = hash_sha256(data, n, md);
    if (rc < 0)
        return rc;
    hex_encode(md, sizeof md, out);
    return 0;
}

int hash_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                     uint8_t out[HASH_SHA256_LEN])
{
    unsigned int len = 0;
    if (keylen > INT32_MAX)
        return -EINVAL;
    if (!cr_ready() || !cr.hmac(cr.sha256(), key, (int)keylen, data, n, out, &len) ||
        len != HASH_SHA256_LEN)
        return -EIO;
    return 0;
}

int hash_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t n,
                         char out[HASH_SHA256_HEX])
{
    uint8_t md[HASH_SHA256_LEN];
    int rc = hash_hmac_sha256(key, keylen, data, n, md);
    if (rc < 0)
        return rc;
    hex_encode(md, sizeof md, out);
    return 0;
}

int hash_equal(const void *a, const void *b, size_t n)
{
    /* Constant time: every byte is looked at whatever differs first. */
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}
