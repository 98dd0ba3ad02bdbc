/* The skiplist memtable against etcd MemoryStorage semantics and a reference model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test/lib/seed.h"
#include "test/unit/wal/util.h"
#include "wal/wal.h"

static void fill(struct wal_memtable *m, uint64_t lo, uint64_t hi, uint64_t term)
{
    for (uint64_t i = lo; i <= hi; i++) {
        unsigned char buf[300];
        tw_fill(buf, tw_len(i), i, term);
        struct wal_entry e = {i, term, 1, buf, tw_len(i)};
        assert_int_equal(wal_memtable_append(m, &e, 1), 0);
    }
}

static void empty_memtable(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    assert_true(wal_memtable_first(&m) == 1);
    assert_true(wal_memtable_last(&m) == 0);
    uint64_t t = 9;
    assert_int_equal(wal_memtable_term(&m, 0, &t), 0);
    assert_true(t == 0);
    assert_int_equal(wal_memtable_term(&m, 1, &t), WAL_EUNAVAILABLE);
    struct wal_entry e[4];
    size_t n;
    assert_int_equal(wal_memtable_entries(&m, 1, 1, 100, e, 4, &n), WAL_EUNAVAILABLE);
    assert_true(wal_memtable_bytes(&m) == 0);
    wal_memtable_fini(&m);
}

static void append_read_term(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    fill(&m, 1, 1000, 3);
    assert_true(wal_memtable_last(&m) == 1000);
    for (uint64_t i = 1; i <= 1000; i++) {
        assert_true(tw_check(&m, i, 3));
        uint64_t t;
        assert_int_equal(wal_memtable_term(&m, i, &t), 0);
        assert_true(t == 3);
    }
    struct wal_entry e[1000];
    size_t n;
    assert_int_equal(wal_memtable_entries(&m, 10, 20, SIZE_MAX, e, 1000, &n), 0);
    assert_int_equal(n, 10);
    assert_true(e[0].index == 10 && e[9].index == 19);
    /* A gap is refused and changes nothing. */
    struct wal_entry gap = {1002, 3, 1, NULL, 0};
    assert_int_equal(wal_memtable_append(&m, &gap, 1), WAL_EINVAL);
    assert_true(wal_memtable_last(&m) == 1000);
    assert_true(wal_memtable_bytes(&m) > 1000 * 32);
    wal_memtable_fini(&m);
    assert_true(wal_memtable_bytes(&m) == 0);
}

/* etcd limitSize: stop before exceeding max_bytes, but always return at least one entry. */
static void entries_max_bytes(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    unsigned char buf[100] = {0};
    for (uint64_t i = 1; i <= 10; i++) {
        struct wal_entry e = {i, 1, 1, buf, 100};
        assert_int_equal(wal_memtable_append(&m, &e, 1), 0);
    }
    struct wal_entry out[10];
    size_t n;
    assert_int_equal(wal_memtable_entries(&m, 1, 11, 0, out, 10, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(wal_memtable_entries(&m, 1, 11, 250, out, 10, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(wal_memtable_entries(&m, 1, 11, 300, out, 10, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(wal_memtable_entries(&m, 3, 11, SIZE_MAX, out, 10, &n), 0);
    assert_int_equal(n, 8);
    assert_int_equal(wal_memtable_entries(&m, 3, 12, SIZE_MAX, out, 10, &n), WAL_EUNAVAILABLE);
    assert_int_equal(wal_memtable_entries(&m, 5, 4, SIZE_MAX, out, 10, &n), WAL_EINVAL);
    wal_memtable_fini(&m);
}

/* Raft conflict truncation: appending at i <= last replaces the suffix from i. */
static void overwrite_truncates_suffix(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    fill(&m, 1, 100, 1);
    size_t before = wal_memtable_bytes(&m);
    fill(&m, 50, 60, 2);
    assert_true(wal_memtable_last(&m) == 60);
    for (uint64_t i = 1; i < 50; i++) {
        assert_true(tw_check(&m, i, 1));
    }
    for (uint64_t i = 50; i <= 60; i++) {
        assert_true(tw_check(&m, i, 2));
    }
    assert_true(wal_memtable_bytes(&m) < before);
    assert_int_equal(wal_memtable_truncate(&m, 1), 0);
    assert_true(wal_memtable_last(&m) == 0);
    assert_true(wal_memtable_bytes(&m) == 0);
    fill(&m, 1, 5, 4);
    assert_true(tw_check(&m, 5, 4));
    wal_memtable_fini(&m);
}

/* etcd MemoryStorage.Compact: at or below the first index is ErrCompacted, beyond the last an
 * error (etcd panics); the compacted point keeps its term. */
static void compact_semantics(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    fill(&m, 1, 100, 1);
    fill(&m, 51, 100, 2);
    assert_int_equal(wal_memtable_compact(&m, 101), WAL_EUNAVAILABLE);
    assert_int_equal(wal_memtable_compact(&m, 60), 0);
    assert_true(wal_memtable_first(&m) == 61);
    uint64_t t;
    assert_int_equal(wal_memtable_term(&m, 60, &t), 0);
    assert_true(t == 2);
    assert_int_equal(wal_memtable_term(&m, 59, &t), WAL_ECOMPACTED);
    assert_int_equal(wal_memtable_compact(&m, 60), WAL_ECOMPACTED);
    assert_int_equal(wal_memtable_compact(&m, 10), WAL_ECOMPACTED);
    struct wal_entry out[50];
    size_t n;
    assert_int_equal(wal_memtable_entries(&m, 60, 70, SIZE_MAX, out, 50, &n), WAL_ECOMPACTED);
    assert_int_equal(wal_memtable_entries(&m, 61, 101, SIZE_MAX, out, 50, &n), 0);
    assert_int_equal(n, 40);
    /* Entries at or below the compaction point are ignored; truncating there is refused. */
    fill(&m, 55, 65, 3);
    assert_true(tw_check(&m, 61, 3));
    assert_true(wal_memtable_last(&m) == 65);
    assert_int_equal(wal_memtable_truncate(&m, 60), WAL_ECOMPACTED);
    assert_int_equal(wal_memtable_compact(&m, 65), 0);
    assert_true(wal_memtable_bytes(&m) == 0);
    assert_true(wal_memtable_last(&m) == 65);
    fill(&m, 66, 70, 3);
    assert_true(tw_check(&m, 70, 3));
    wal_memtable_fini(&m);
}

static void apply_snapshot_resets(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    fill(&m, 1, 10, 1);
    assert_int_equal(wal_memtable_apply_snapshot(&m, 500, 7), 0);
    assert_true(wal_memtable_first(&m) == 501 && wal_memtable_last(&m) == 500);
    uint64_t t;
    assert_int_equal(wal_memtable_term(&m, 500, &t), 0);
    assert_true(t == 7);
    assert_int_equal(wal_memtable_apply_snapshot(&m, 400, 7), WAL_ESNAPOLD);
    fill(&m, 501, 510, 7);
    assert_true(tw_check(&m, 510, 7));
    wal_memtable_fini(&m);
}

/* A replication-like walk (term of the previous entry, then the next entries) interleaved with
 * overwrites and compactions: the read finger must never return stale or freed nodes. */
static void forward_walk_with_truncation(void **state)
{
    (void)state;
    struct wal_memtable m;
    wal_memtable_init(&m);
    fill(&m, 1, 500, 1);
    struct wal_entry out[16];
    size_t n;
    uint64_t next = 1, t;
    for (int round = 0; round < 200; round++) {
        if (m.count == 0) {
            fill(&m, wal_memtable_last(&m) + 1, wal_memtable_last(&m) + 100, 1 + (uint64_t)round);
        }
        if (next > wal_memtable_last(&m) || next < wal_memtable_first(&m)) {
            next = wal_memtable_first(&m);
        }
        if (next > 1 && next - 1 >= wal_memtable_first(&m) - 1) {
            assert_int_equal(wal_memtable_term(&m, next - 1, &t), 0);
        }
        uint64_t hi = next + 16 > wal_memtable_last(&m) + 1 ? wal_memtable_last(&m) + 1 : next + 16;
        assert_int_equal(wal_memtable_entries(&m, next, hi, SIZE_MAX, out, 16, &n), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(out[i].index == next + i);
            uint64_t want;
            assert_int_equal(wal_memtable_term(&m, out[i].index, &want), 0);
            assert_true(out[i].term == want);
        }
        next += n;
        if (round % 7 == 3) {
            /* Overwrite the suffix right where the finger rests. */
            uint64_t from = next > 2 ? next - 2 : 1;
            if (from > wal_memtable_first(&m)) {
                fill(&m, from, from + 30, 2 + (uint64_t)round);
            }
        }
        if (round % 11 == 5 && next > wal_memtable_first(&m) + 1) {
            assert_int_equal(wal_memtable_compact(&m, next - 1), 0);
        }
    }
    wal_memtable_fini(&m);
}

/* Random appends, overwrites and compactions against an array model. */
static void random_against_model(void **state)
{
    (void)state;
    uint64_t seed = test_seed("memtable_random_against_model");
    struct wal_memtable m;
    wal_memtable_init(&m);
    enum { N = 20000 };
    static uint64_t terms[N + 2];
    uint64_t first = 1, last = 0, term = 1;
    for (int step = 0; step < 3000; step++) {
        uint64_t r = test_rand(&seed) % 100;
        if (r < 70 && last + 40 < N) {
            uint64_t from = last + 1;
            if (r < 10 && last >= first) {
                from = first + test_rand(&seed) % (last - first + 1);
                term++;
            }
            uint64_t to = from + test_rand(&seed) % 30;
            fill(&m, from, to, term);
            for (uint64_t i = from; i <= to; i++) {
                terms[i] = term;
            }
            last = to;
        } else if (r < 75 && last >= first) {
            uint64_t c = first + test_rand(&seed) % (last - first + 1);
            assert_int_equal(wal_memtable_compact(&m, c), 0);
            first = c + 1;
        } else if (last >= first) {
            uint64_t i = first + test_rand(&seed) % (last - first + 1);
            assert_true(tw_check(&m, i, terms[i]));
        }
        assert_true(wal_memtable_first(&m) == first);
        assert_true(wal_memtable_last(&m) == last);
    }
    for (uint64_t i = first; i <= last; i++) {
        assert_true(tw_check(&m, i, terms[i]));
    }
    assert_int_equal(m.count, last - first + 1);
    wal_memtable_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_memtable),
        cmocka_unit_test(append_read_term),
        cmocka_unit_test(entries_max_bytes),
        cmocka_unit_test(overwrite_truncates_suffix),
        cmocka_unit_test(compact_semantics),
        cmocka_unit_test(apply_snapshot_resets),
        cmocka_unit_test(forward_walk_with_truncation),
        cmocka_unit_test(random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
