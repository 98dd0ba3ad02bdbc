/* bench_unit: the parts of kvdb-bench whose mistakes would silently skew its figures: histogram
 * quantiles and merging, the in-flight table that matches replies to clients, the order of
 * generated keys, and the check that a get reply holds a key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test/lib/seed.h"
#include "tools/bench.h"

/* Quantiles of 1..10000 us come back within the histogram's resolution; max is exact. */
static void test_hist_quantiles(void **state)
{
    (void)state;
    struct hist *h = malloc(sizeof *h);
    assert_non_null(h);
    bench_hist_init(h);
    assert_true(bench_hist_quantile_ms(h, 0.5) == 0);
    for (uint64_t us = 1; us <= 10000; us++) {
        bench_hist_add(h, us * 1000);
    }
    static const double qs[] = {0.1, 0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double want = qs[i] * 10.0; /* ms */
        double got = bench_hist_quantile_ms(h, qs[i]);
        assert_true(got > want * 0.96 && got < want * 1.04);
    }
    assert_true(bench_hist_quantile_ms(h, 1.0) == 10.0);
    assert_int_equal(h->count, 10000);
    assert_int_equal(h->min_ns, 1000);
    free(h);
}

/* Merging two halves gives the same quantiles as recording everything in one. */
static void test_hist_merge(void **state)
{
    (void)state;
    uint64_t seed = test_seed("bench_hist_merge");
    struct hist *a = malloc(sizeof *a), *b = malloc(sizeof *b), *all = malloc(sizeof *all);
    assert_true(a != NULL && b != NULL && all != NULL);
    bench_hist_init(a);
    bench_hist_init(b);
    bench_hist_init(all);
    for (int i = 0; i < 20000; i++) {
        uint64_t ns = test_rand(&seed) % 50000000u; /* up to 50 ms */
        bench_hist_add(i % 2 ? a : b, ns);
        bench_hist_add(all, ns);
    }
    bench_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->max_ns, all->max_ns);
    assert_int_equal(a->min_ns, all->min_ns);
    for (double q = 0.05; q < 1; q += 0.05) {
        assert_true(bench_hist_quantile_ms(a, q) == bench_hist_quantile_ms(all, q));
    }
    free(a);
    free(b);
    free(all);
}

/* Keys keep numeric order as byte order within a key space, in decimal and binary form. */
static void test_key_order(void **state)
{
    (void)state;
    uint64_t seed = test_seed("bench_key_order");
    static const struct
    {
        unsigned size;
        uint64_t space;
    } cases[] = {{3, 1000}, {3, 1u << 24}, {8, 100000000}, {8, 1000000000}, {12, UINT64_MAX}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int i = 0; i < 5000; i++) {
            uint64_t x = test_rand(&seed) % cases[c].space, y = test_rand(&seed) % cases[c].space;
            uint8_t kx[MAX_KEY], ky[MAX_KEY];
            bench_make_key(kx, cases[c].size, cases[c].space, x);
            bench_make_key(ky, cases[c].size, cases[c].space, y);
            int cmp = memcmp(kx, ky, cases[c].size);
            assert_true(x < y ? cmp < 0 : x > y ? cmp > 0 : cmp == 0);
        }
    }
    uint8_t k[MAX_KEY];
    bench_make_key(k, 8, 1000000, 42);
    assert_memory_equal(k, "00000042", 8);
    bench_make_key(k, 2, 1000, 258);
    assert_memory_equal(k, "\x01\x02", 2);
}

/* The in-flight table against a model: random ids (many sharing a home bucket), takes in any
 * order, and takes of ids no longer waited for. */
static void test_table_model(void **state)
{
    (void)state;
    uint64_t seed = test_seed("bench_table_model");
    enum { CLIENTS = 37 };
    struct worker *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->n_clients = CLIENTS;
    w->mask = 127;
    w->slots = calloc(CLIENTS, sizeof *w->slots);
    w->table = calloc(w->mask + 1, sizeof *w->table);
    assert_true(w->slots != NULL && w->table != NULL);
    uint64_t next_id = 1;
    for (int step = 0; step < 200000; step++) {
        unsigned s = (unsigned)(test_rand(&seed) % CLIENTS);
        struct slot *sl = &w->slots[s];
        if (sl->sent_ns == 0) {
            /* Ids jump by multiples of the table size now and then, to collide. */
            next_id += test_rand(&seed) % 4 == 0 ? (w->mask + 1) * (1 + test_rand(&seed) % 3) : 1;
            *sl = (struct slot){.id = next_id, .sent_ns = 1};
            bench_table_put(w, next_id, s);
        } else {
            assert_int_equal(bench_table_take(w, next_id + 1000000), -1);
            assert_int_equal(bench_table_take(w, sl->id), (int)s);
            sl->sent_ns = 0;
            assert_int_equal(bench_table_take(w, sl->id), -1);
        }
    }
    for (unsigned s = 0; s < CLIENTS; s++) {
        if (w->slots[s].sent_ns != 0) {
            assert_int_equal(bench_table_take(w, w->slots[s].id), (int)s);
            w->slots[s].sent_ns = 0;
        }
    }
    for (unsigned i = 0; i <= w->mask; i++) {
        assert_int_equal(w->table[i], 0);
    }
    free(w->slots);
    free(w->table);
    free(w);
}

/* A packed RangeResponse with a KeyValue is recognised; one without, or cut short, is not. */
static void test_range_has_kv(void **state)
{
    (void)state;
    Kvdb__ResponseHeader hdr;
    kvdb__response_header__init(&hdr);
    hdr.revision = 123456789;
    hdr.member_id = 0xfedcba9876543210ull;
    Kvdb__KeyValue kv;
    kvdb__key_value__init(&kv);
    kv.key = (ProtobufCBinaryData){.data = (uint8_t *)"00000001", .len = 8};
    kv.value = (ProtobufCBinaryData){.data = (uint8_t *)"v", .len = 1};
    Kvdb__KeyValue *kvs[] = {&kv};
    Kvdb__RangeResponse r;
    kvdb__range_response__init(&r);
    r.header = &hdr;
    r.count = 1;
    uint8_t buf[256];
    size_t n = kvdb__range_response__pack(&r, buf);
    assert_false(bench_range_has_kv(buf, n)); /* header and count, no kvs */
    r.kvs = kvs;
    r.n_kvs = 1;
    n = kvdb__range_response__pack(&r, buf);
    assert_true(bench_range_has_kv(buf, n));
    assert_false(bench_range_has_kv(buf, 3)); /* cut inside the header */
    assert_false(bench_range_has_kv(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_quantiles), cmocka_unit_test(test_hist_merge),
        cmocka_unit_test(test_key_order),      cmocka_unit_test(test_table_model),
        cmocka_unit_test(test_range_has_kv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
