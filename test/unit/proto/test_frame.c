/* Framing: frames survive any split of the byte stream; oversize frames are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/frame.h"
#include "proto/pb.h"
#include "test/lib/seed.h"

/* Write many frames of random sizes, feed the bytes to a reader in random-sized pieces, and
 * check every frame comes out whole and in order. */
static void frames_survive_any_split(void **state)
{
    (void)state;
    uint64_t seed = test_seed("frames_survive_any_split");
    struct pb_frame_writer w;
    pb_frame_writer_init(&w);
    enum { NFRAMES = 500 };
    size_t sizes[NFRAMES];
    unsigned char payload[3000];
    for (int i = 0; i < NFRAMES; i++) {
        sizes[i] = test_rand(&seed) % sizeof payload;
        memset(payload, i & 0xff, sizes[i]);
        assert_int_equal(pb_frame_writer_append_raw(&w, payload, sizes[i]), 0);
    }
    const unsigned char *out;
    size_t total = pb_frame_writer_pending(&w, &out);

    struct pb_frame_reader r;
    pb_frame_reader_init(&r, sizeof payload);
    size_t fed = 0;
    int got = 0;
    while (fed < total) {
        size_t piece = 1 + test_rand(&seed) % 700;
        if (piece > total - fed) {
            piece = total - fed;
        }
        unsigned char *p;
        size_t room;
        assert_int_equal(pb_frame_reader_space(&r, piece, &p, &room), 0);
        assert_true(room >= piece);
        memcpy(p, out + fed, piece);
        pb_frame_reader_commit(&r, piece);
        fed += piece;
        const unsigned char *f;
        size_t n;
        int rv;
        while ((rv = pb_frame_reader_next(&r, &f, &n)) == 0) {
            assert_true(got < NFRAMES);
            assert_int_equal(n, sizes[got]);
            for (size_t k = 0; k < n; k++) {
                assert_int_equal(f[k], got & 0xff);
            }
            got++;
        }
        assert_int_equal(rv, PB_EAGAIN);
    }
    assert_int_equal(got, NFRAMES);
    pb_frame_writer_consume(&w, total);
    assert_int_equal(pb_frame_writer_pending(&w, &out), 0);
    pb_frame_reader_fini(&r);
    pb_frame_writer_fini(&w);
}

static void oversize_frame_is_refused(void **state)
{
    (void)state;
    struct pb_frame_reader r;
    pb_frame_reader_init(&r, 100);
    unsigned char *p;
    size_t room;
    assert_int_equal(pb_frame_reader_space(&r, 4, &p, &room), 0);
    p[0] = 101; /* 101-byte payload announced, limit 100 */
    p[1] = p[2] = p[3] = 0;
    pb_frame_reader_commit(&r, 4);
    const unsigned char *f;
    size_t n;
    assert_int_equal(pb_frame_reader_next(&r, &f, &n), PB_ETOOBIG);
    assert_string_equal(pb_strerror(PB_ETOOBIG), "frame larger than the limit");
    pb_frame_reader_fini(&r);
    pb_frame_reader_fini(&r); /* a second fini on the zeroed struct is a no-op */
}

static void message_frame_roundtrip(void **state)
{
    (void)state;
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = 9;
    f.method = KVDB__METHOD__METHOD_RANGE;
    struct pb_frame_writer w;
    pb_frame_writer_init(&w);
    assert_int_equal(pb_frame_writer_append(&w, &f.base), 0);
    const unsigned char *out;
    size_t total = pb_frame_writer_pending(&w, &out);
    struct pb_frame_reader r;
    pb_frame_reader_init(&r, 1 << 20);
    unsigned char *p;
    size_t room;
    assert_int_equal(pb_frame_reader_space(&r, total, &p, &room), 0);
    memcpy(p, out, total);
    pb_frame_reader_commit(&r, total);
    const unsigned char *payload;
    size_t n;
    assert_int_equal(pb_frame_reader_next(&r, &payload, &n), 0);
    Kvdb__Frame *g = kvdb__frame__unpack(NULL, n, payload);
    assert_non_null(g);
    assert_int_equal(g->id, 9);
    assert_int_equal(g->method, KVDB__METHOD__METHOD_RANGE);
    assert_false(pb_has_unknown_fields(&g->base));
    kvdb__frame__free_unpacked(g, NULL);
    pb_frame_reader_fini(&r);
    pb_frame_writer_fini(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_survive_any_split),
        cmocka_unit_test(oversize_frame_is_refused),
        cmocka_unit_test(message_frame_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
