/* test_base64.c - util/base64: the encoding clearbox submit sends, the strict
 * check the API applies to content_base64, the decoding the workers do. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "util/base64.h"

TEST(rfc4648_vectors_encode_check_and_decode)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",     "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        char out[BASE64_ENCODED_SIZE(6)], back[16];
        base64_encode(plain[i], n, out);
        ASSERT_STREQ(out, coded[i]);
        ASSERT_EQ(base64_decoded_len(coded[i], strlen(coded[i])), (long long)n);
        ASSERT_EQ(base64_decode(coded[i], strlen(coded[i]), back), (ssize_t)n);
        ASSERT(memcmp(back, plain[i], n) == 0);
    }
}

TEST(every_byte_round_trips)
{
    uint8_t in[256];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    char enc[BASE64_ENCODED_SIZE(256)], dec[256 + 4];
    for (size_t n = 0; n <= 256; n += 17) {
        base64_encode(in, n, enc);
        ASSERT_EQ(strlen(enc), BASE64_ENCODED_SIZE(n) - 1);
        ASSERT_EQ(base64_decoded_len(enc, strlen(enc)), (long long)n);
        ASSERT_EQ(base64_decode(enc, strlen(enc), dec), (ssize_t)n);
        ASSERT(memcmp(dec, in, n) == 0);
    }
}

TEST(strict_check_refuses_what_the_api_refuses)
{
    ASSERT_EQ(base64_decoded_len("Zg", 2), -1);     /* padding left out */
    ASSERT_EQ(base64_decoded_len("Zm9", 3), -1);    /* not a multiple of 4 */
    ASSERT_EQ(base64_decoded_len("Zm9-", 4), -1);   /* URL-safe alphabet */
    ASSERT_EQ(base64_decoded_len("Zm 9", 4), -1);   /* whitespace */
    ASSERT_EQ(base64_decoded_len("Zm9v\n", 5), -1); /* line break */
}

TEST(decode_takes_missing_padding_and_refuses_garbage)
{
    char out[16];
    ASSERT_EQ(base64_decode("Zg", 2, out), 1);
    ASSERT_EQ(out[0], 'f');
    ASSERT_EQ(base64_decode("Zm9vY", 5, out), -EINVAL); /* one dangling character */
    ASSERT_EQ(base64_decode("Zm9*", 4, out), -EINVAL);
}
