/* CRC32C against published vectors; fixed-width and varint round-trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test/lib/seed.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

/* RFC 3720 (iSCSI) appendix B.4 test vectors, plus the common "123456789" check value. */
static void crc32c_rfc3720_vectors(void **state)
{
    (void)state;
    unsigned char buf[32];
    memset(buf, 0, sizeof buf);
    assert_int_equal(wal_crc32c(buf, 32), 0x8a9136aa);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(wal_crc32c(buf, 32), 0x62a8ab43);
    for (int i = 0; i < 32; i++) {
        buf[i] = (unsigned char)i;
    }
    assert_int_equal(wal_crc32c(buf, 32), 0x46dd794e);
    for (int i = 0; i < 32; i++) {
        buf[i] = (unsigned char)(31 - i);
    }
    assert_int_equal(wal_crc32c(buf, 32), 0x113fdb5c);
    assert_int_equal(wal_crc32c("123456789", 9), 0xe3069283);
    assert_int_equal(wal_crc32c("", 0), 0);
}

/* Hardware and table paths agree at every length and alignment, and extending in pieces equals
 * one pass. */
static void crc32c_paths_agree(void **state)
{
    (void)state;
    uint64_t seed = test_seed("crc32c_paths_agree");
    unsigned char buf[1100];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (unsigned char)test_rand(&seed);
    }
    for (size_t off = 0; off < 9; off++) {
        for (size_t n = 0; n + off <= sizeof buf; n += 1 + n / 8) {
            uint32_t a = wal_crc32c(buf + off, n);
            assert_int_equal(a, wal_crc32c_extend_sw(0, buf + off, n));
            size_t cut = n / 3;
            uint32_t b = wal_crc32c_extend(wal_crc32c(buf + off, cut), buf + off + cut, n - cut);
            assert_int_equal(a, b);
        }
    }
}

static void fixed_roundtrip_is_little_endian(void **state)
{
    (void)state;
    unsigned char p[8];
    wal_put_u32(p, 0x04030201u);
    assert_int_equal(p[0], 1);
    assert_int_equal(p[3], 4);
    assert_int_equal(wal_get_u32(p), 0x04030201u);
    wal_put_u64(p, 0x0807060504030201ull);
    assert_int_equal(p[0], 1);
    assert_int_equal(p[7], 8);
    assert_true(wal_get_u64(p) == 0x0807060504030201ull);
}

static void varint_roundtrip(void **state)
{
    (void)state;
    uint64_t seed = test_seed("varint_roundtrip");
    const uint64_t edges[] = {0,
                              1,
                              127,
                              128,
                              255,
                              16383,
                              16384,
                              UINT32_MAX,
                              (uint64_t)UINT32_MAX + 1,
                              UINT64_MAX - 1,
                              UINT64_MAX};
    unsigned char buf[WAL_VARINT_MAX];
    for (size_t i = 0; i < sizeof edges / sizeof edges[0] + 10000; i++) {
        uint64_t v = i < sizeof edges / sizeof edges[0]
                         ? edges[i]
                         : test_rand(&seed) >> (test_rand(&seed) % 64);
        size_t n = wal_put_varint(buf, v);
        assert_true(n >= 1 && n <= WAL_VARINT_MAX);
        uint64_t out = ~v;
        assert_int_equal(wal_get_varint(buf, n, &out), n);
        assert_true(out == v);
        /* Every truncation is detected, never over-read. */
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(wal_get_varint(buf, k, &out), 0);
        }
    }
    assert_int_equal(wal_put_varint(buf, 300), 2);
    assert_int_equal(buf[0], 0xac);
    assert_int_equal(buf[1], 0x02);
}

static void varint_rejects_overlong(void **state)
{
    (void)state;
    unsigned char p[11];
    uint64_t out;
    memset(p, 0xff, sizeof p);
    assert_int_equal(wal_get_varint(p, sizeof p, &out), 0);
    /* Ten bytes whose last byte carries more than one bit overflow 64 bits. */
    memset(p, 0x80, 9);
    p[9] = 0x02;
    assert_int_equal(wal_get_varint(p, 10, &out), 0);
    p[9] = 0x01;
    assert_int_equal(wal_get_varint(p, 10, &out), 10);
    assert_true(out == 1ull << 63);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32c_rfc3720_vectors),           cmocka_unit_test(crc32c_paths_agree),
        cmocka_unit_test(fixed_roundtrip_is_little_endian), cmocka_unit_test(varint_roundtrip),
        cmocka_unit_test(varint_rejects_overlong),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
