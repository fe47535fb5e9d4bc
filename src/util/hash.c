/* hash.c - see hash.h. */
#include "util/hash.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util/hex.h"

int hash_sha256(const void *data, size_t n, uint8_t out[HASH_SHA256_LEN])
{
    unsigned int len = 0;
    if (!EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) || len != HASH_SHA256_LEN)
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
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) || len != HASH_SHA256_LEN)
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

int hash_equal(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }
