/* Manifest, chunk and ack encodings: round trips and rejection of every corruption. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "snapshot/snapshot.h"
#include "snapshot/wire.h"
#include "test/lib/seed.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

static uint64_t voters[] = {1, 2, 3};
static uint64_t learners[] = {7};
static struct snap_file files[] = {
    {"000005.ldb", 2000000, 0xdeadbeef},
    {"000007.ldb", 0, 0},
    {"000009.ldb", 12345, 0x01020304},
};

static struct snap_manifest sample(void)
{
    struct snap_manifest m = {.meta = {.index = 10000,
                                       .term = 7,
                                       .revision = 55555,
                                       .compact_revision = 40000,
                                       .voters = voters,
                                       .n_voters = 3,
                                       .learners = learners,
                                       .n_learners = 1},
                              .files = files,
                              .n_files = 3};
    return m;
}

static void encode_sample(void **buf, size_t *len, uint32_t *crc)
{
    struct snap_manifest m = sample();
    char err[SNAP_ERRMSG_SIZE];
    assert_int_equal(snap_manifest_encode(&m, buf, len, crc, err), 0);
}

static void manifest_roundtrip(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    uint32_t crc;
    char err[SNAP_ERRMSG_SIZE];
    encode_sample(&buf, &len, &crc);
    struct snap_manifest out;
    assert_int_equal(snap_manifest_decode(buf, len, &out, err), 0);
    assert_true(out.meta.index == 10000 && out.meta.term == 7);
    assert_true(out.meta.revision == 55555 && out.meta.compact_revision == 40000);
    assert_int_equal(out.meta.n_voters, 3);
    assert_true(out.meta.voters[2] == 3);
    assert_int_equal(out.meta.n_learners, 1);
    assert_true(out.meta.learners[0] == 7);
    assert_int_equal(out.n_files, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out.files[i].name, files[i].name);
        assert_true(out.files[i].size == files[i].size);
        assert_int_equal(out.files[i].crc, files[i].crc);
    }
    assert_int_equal(out.crc, crc);
    assert_int_equal(crc, wal_get_u32((unsigned char *)buf + len - 4));
    /* Re-encoding the decoded manifest gives the same bytes. */
    void *again;
    size_t len2;
    assert_int_equal(snap_manifest_encode(&out, &again, &len2, NULL, err), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, again, len);
    free(again);
    snap_manifest_fini(&out);
    snap_manifest_fini(&out); /* a zeroed struct is a no-op */
    free(buf);
}

/* Every single-bit flip and every truncation or extension is refused. */
static void manifest_rejects_every_corruption(void **state)
{
    (void)state;
    void *buf;
    size_t len;
    char err[SNAP_ERRMSG_SIZE];
    struct snap_manifest out;
    encode_sample(&buf, &len, NULL);
    unsigned char *b = buf;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            int rv = snap_manifest_decode(b, len, &out, err);
            assert_true(rv == SNAP_ECORRUPT || rv == SNAP_EMALFORMED || rv == SNAP_EVERSION);
            assert_int_equal(out.n_files, 0);
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    for (size_t n = 0; n < len; n++) {
        assert_int_not_equal(snap_manifest_decode(b, n, &out, err), 0);
    }
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, b, len);
    longer[len] = 0;
    assert_int_not_equal(snap_manifest_decode(longer, len + 1, &out, err), 0);
    free(longer);
    free(buf);
}

/* Re-seal @b after a deliberate edit so that only the semantic checks can catch it. */
static void reseal(unsigned char *b, size_t len)
{
    wal_put_u32(b + len - 4, wal_crc32c(b, len - 4));
}

static int decode_edited(size_t off, const void *bytes, size_t n)
{
    void *buf;
    size_t len;
    char err[SNAP_ERRMSG_SIZE];
    struct snap_manifest out;
    encode_sample(&buf, &len, NULL);
    memcpy((unsigned char *)buf + off, bytes, n);
    reseal(buf, len);
    int rv = snap_manifest_decode(buf, len, &out, err);
    snap_manifest_fini(&out);
    free(buf);
    return rv;
}

/* Well-sealed but invalid content: every rule is enforced on decode. */
static void manifest_rejects_bad_content(void **state)
{
    (void)state;
    const unsigned char zero8[8] = {0}, one4[4] = {1, 0, 0, 0}, v2[4] = {2, 0, 0, 0};
    unsigned char big[4];
    assert_int_equal(decode_edited(4, v2, 4), SNAP_EVERSION);
    assert_int_equal(decode_edited(8, zero8, 8), SNAP_EMALFORMED);  /* index 0 */
    assert_int_equal(decode_edited(16, zero8, 8), SNAP_EMALFORMED); /* term 0 */
    assert_int_equal(decode_edited(24, zero8, 8), SNAP_EMALFORMED); /* revision < compacted */
    assert_int_equal(decode_edited(52, one4, 4), SNAP_EMALFORMED);  /* flags */
    assert_int_equal(decode_edited(56, zero8, 8), SNAP_EMALFORMED); /* voter id 0 */
    unsigned char two[8] = {2, 0, 0, 0, 0, 0, 0, 0}, three[8] = {3, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(decode_edited(56, two, 8), SNAP_EMALFORMED);   /* duplicate voter */
    assert_int_equal(decode_edited(80, three, 8), SNAP_EMALFORMED); /* learner is a voter */
    wal_put_u32(big, 0xffffffffu);
    assert_int_equal(decode_edited(40, big, 4), SNAP_EMALFORMED); /* voter count */
    assert_int_equal(decode_edited(48, big, 4), SNAP_EMALFORMED); /* file count */
    wal_put_u32(big, 4);
    assert_int_equal(decode_edited(48, big, 4), SNAP_EMALFORMED); /* one file too many */
    wal_put_u32(big, 2);
    assert_int_equal(decode_edited(48, big, 4), SNAP_EMALFORMED); /* trailing bytes */
    wal_put_u32(big, 0);
    assert_int_equal(decode_edited(40, big, 4), SNAP_EMALFORMED); /* no voters */
    /* File names: first entry at 88 (u16 length then name). */
    assert_int_equal(decode_edited(90, "../005.ldb", 10), SNAP_EMALFORMED);
    assert_int_equal(decode_edited(90, "000005/ldb", 10), SNAP_EMALFORMED);
    assert_int_equal(decode_edited(90, "000005\0ldb", 10), SNAP_EMALFORMED);
    assert_int_equal(decode_edited(90, "MANIFEST.x", 10), SNAP_EMALFORMED);
    assert_int_equal(decode_edited(90, "000007.ldb", 10), SNAP_EMALFORMED); /* duplicate */
    const unsigned char zero2[2] = {0, 0}, huge2[2] = {0xff, 0xff};
    assert_int_equal(decode_edited(88, zero2, 2), SNAP_EMALFORMED);
    assert_int_equal(decode_edited(88, huge2, 2), SNAP_EMALFORMED);
}

static void manifest_encode_refuses_invalid(void **state)
{
    (void)state;
    char err[SNAP_ERRMSG_SIZE];
    void *buf;
    size_t len;
    struct snap_manifest m = sample();
    m.meta.n_voters = 0;
    assert_int_equal(snap_manifest_encode(&m, &buf, &len, NULL, err), SNAP_EINVAL);
    assert_null(buf);
    m = sample();
    struct snap_file bad[1] = {{".", 1, 1}};
    m.files = bad;
    m.n_files = 1;
    assert_int_equal(snap_manifest_encode(&m, &buf, &len, NULL, err), SNAP_EINVAL);
    assert_non_null(strstr(err, "name"));
    m = sample();
    m.meta.compact_revision = m.meta.revision + 1;
    assert_int_equal(snap_manifest_encode(&m, &buf, &len, NULL, err), SNAP_EINVAL);
}

static size_t sample_chunk(unsigned char *buf, const unsigned char *raw, uint32_t n)
{
    struct snap_chunk c = {.index = 9,
                           .term = 2,
                           .manifest_crc = 0xabcdef01,
                           .file = 1,
                           .offset = 4096,
                           .raw_len = n,
                           .raw_crc = wal_crc32c(raw, n),
                           .payload_len = n};
    snap_chunk_encode_header(&c, buf);
    memcpy(buf + SNAP_CHUNK_HEADER_SIZE, raw, n);
    return SNAP_CHUNK_HEADER_SIZE + n;
}

/* Every bit flip of a chunk is caught by decode or unpack (header crc, raw crc). */
static void chunk_rejects_every_corruption(void **state)
{
    (void)state;
    uint64_t rng = test_seed("chunk_rejects_every_corruption");
    unsigned char raw[100], buf[SNAP_CHUNK_HEADER_SIZE + 100], out[100];
    char err[SNAP_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof raw; i++) {
        raw[i] = (unsigned char)test_rand(&rng);
    }
    size_t len = sample_chunk(buf, raw, sizeof raw);
    struct snap_chunk c;
    assert_int_equal(snap_chunk_decode(buf, len, &c, err), 0);
    assert_int_equal(snap_chunk_unpack(&c, out, err), 0);
    assert_memory_equal(out, raw, sizeof raw);
    assert_true(c.offset == 4096 && c.file == 1 && c.index == 9 && c.term == 2);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (unsigned char)(1u << bit);
            int rv = snap_chunk_decode(buf, len, &c, err);
            if (rv == 0) {
                rv = snap_chunk_unpack(&c, out, err);
            }
            assert_int_not_equal(rv, 0);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    }
    for (size_t n = 0; n < len; n++) {
        assert_int_not_equal(snap_chunk_decode(buf, n, &c, err), 0);
    }
}

static void ack_roundtrip_and_rejects(void **state)
{
    (void)state;
    struct snap_ack a = {.status = SNAP_ACK_RESEND,
                         .session = 0xbeef,
                         .index = 11,
                         .term = 3,
                         .manifest_crc = 0x12345678,
                         .file = 4,
                         .offset = 1u << 20},
                    b;
    unsigned char buf[SNAP_ACK_SIZE];
    char err[SNAP_ERRMSG_SIZE];
    snap_ack_encode(&a, buf);
    assert_int_equal(snap_ack_decode(buf, sizeof buf, &b, err), 0);
    assert_int_equal(b.status, SNAP_ACK_RESEND);
    assert_int_equal(b.session, 0xbeef);
    assert_true(b.index == 11 && b.term == 3 && b.file == 4 && b.offset == 1u << 20);
    assert_int_equal(b.manifest_crc, 0x12345678);
    for (size_t i = 0; i < sizeof buf; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (unsigned char)(1u << bit);
            assert_int_not_equal(snap_ack_decode(buf, sizeof buf, &b, err), 0);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    }
    assert_int_equal(snap_ack_decode(buf, sizeof buf - 1, &b, err), SNAP_EMALFORMED);
}

static void strerror_covers_codes(void **state)
{
    (void)state;
    assert_string_equal(snap_strerror(0), "success");
    assert_string_equal(snap_strerror(SNAP_ECHUNK),
                        "chunk rejected (corrupt): resend from the acknowledged offset");
    assert_string_equal(snap_strerror(399), "unknown error");
    for (int c = 301; c <= 313; c++) {
        assert_string_not_equal(snap_strerror(c), "unknown error");
    }
    char name[40];
    snap_dir_name(0x10, 0x2, name, sizeof name);
    assert_string_equal(name, "0000000000000010-0000000000000002");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(manifest_roundtrip),
        cmocka_unit_test(manifest_rejects_every_corruption),
        cmocka_unit_test(manifest_rejects_bad_content),
        cmocka_unit_test(manifest_encode_refuses_invalid),
        cmocka_unit_test(chunk_rejects_every_corruption),
        cmocka_unit_test(ack_roundtrip_and_rejects),
        cmocka_unit_test(strerror_covers_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
