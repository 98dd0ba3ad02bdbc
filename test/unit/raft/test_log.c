/* The storage side: raft_memstore, the configuration codec, the in-flight window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "raft/core.h"
#include "raft/memstore.h"
#include "test/lib/seed.h"

static struct raft_entry ent(raft_index i, raft_term t, const char *s)
{
    struct raft_entry e = {.index = i, .term = t, .type = RAFT_ENTRY_NORMAL};
    e.data.base = (void *)s;
    e.data.len = strlen(s);
    return e;
}

static void memstore_appends_truncates_and_reads(void **state)
{
    (void)state;
    struct raft_memstore m;
    raft_memstore_init(&m, NULL, NULL);
    struct raft_entry es[3] = {ent(1, 1, "a"), ent(2, 1, "bb"), ent(3, 2, "ccc")};
    assert_int_equal(raft_memstore_append(&m, es, 3), 0);
    const struct raft_storage *st = &m.storage;
    assert_int_equal(st->first_index(st->ctx), 1);
    assert_int_equal(st->last_index(st->ctx), 3);
    raft_term t;
    assert_int_equal(st->term(st->ctx, 0, &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(st->term(st->ctx, 3, &t), 0);
    assert_int_equal(t, 2);
    assert_int_equal(st->term(st->ctx, 4, &t), RAFT_EUNAVAILABLE);
    /* A byte limit stops early but always returns one entry. */
    struct raft_entry out[3];
    size_t n;
    assert_int_equal(st->entries(st->ctx, 1, 4, 3, out, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(st->entries(st->ctx, 3, 4, 0, out, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(out[0].data.base, "ccc", 3);
    /* Overwriting from index 2 drops the old suffix (conflict truncation). */
    struct raft_entry repl = ent(2, 3, "x");
    assert_int_equal(raft_memstore_append(&m, &repl, 1), 0);
    assert_int_equal(st->last_index(st->ctx), 2);
    assert_int_equal(raft_memstore_get(&m, 2)->term, 3);
    /* A gap is refused. */
    struct raft_entry gap = ent(9, 3, "g");
    assert_int_equal(raft_memstore_append(&m, &gap, 1), RAFT_EINVAL);
    raft_memstore_fini(&m);
}

static void memstore_compacts_and_installs_snapshots(void **state)
{
    (void)state;
    struct raft_conf conf = {.n_voters = 1, .voters = {1}};
    struct raft_memstore m;
    raft_memstore_init(&m, NULL, &conf);
    struct raft_entry es[4] = {ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 2, "c"), ent(4, 2, "d")};
    assert_int_equal(raft_memstore_append(&m, es, 4), 0);
    assert_int_equal(raft_memstore_compact(&m, 3, &conf), 0);
    const struct raft_storage *st = &m.storage;
    raft_term t;
    assert_int_equal(st->first_index(st->ctx), 4);
    assert_int_equal(st->term(st->ctx, 3, &t), 0);
    assert_int_equal(t, 2);
    assert_int_equal(st->term(st->ctx, 2, &t), RAFT_ECOMPACTED);
    struct raft_entry out[2];
    size_t n;
    assert_int_equal(st->entries(st->ctx, 3, 5, 100, out, &n), RAFT_ECOMPACTED);
    assert_int_equal(raft_memstore_compact(&m, 2, &conf), RAFT_ECOMPACTED);
    assert_int_equal(raft_memstore_compact(&m, 9, &conf), RAFT_EINVAL);
    /* Appending entries the snapshot covers skips them. */
    assert_int_equal(raft_memstore_append(&m, es, 4), 0);
    assert_int_equal(raft_memstore_last(&m), 4);
    struct raft_snap_meta meta = {.index = 10, .term = 5, .conf = conf};
    assert_int_equal(raft_memstore_apply_snapshot(&m, &meta), 0);
    assert_int_equal(st->first_index(st->ctx), 11);
    assert_int_equal(st->last_index(st->ctx), 10);
    assert_int_equal(m.hs.commit, 10);
    assert_int_equal(raft_memstore_apply_snapshot(&m, &meta), RAFT_ECOMPACTED);
    raft_memstore_fini(&m);
    raft_memstore_fini(&m); /* Idempotent. */
}

static void conf_codec_roundtrips_and_rejects_garbage(void **state)
{
    (void)state;
    uint64_t seed = test_seed("conf_codec_roundtrips_and_rejects_garbage");
    for (int round = 0; round < 200; round++) {
        struct raft_conf c = {0};
        unsigned total = 1 + (unsigned)(test_rand(&seed) % RAFT_MAX_MEMBERS);
        for (unsigned i = 0; i < total; i++) {
            raft_id id = 1000 * (round + 1) + i;
            if (test_rand(&seed) % 3 == 0) {
                c.learners[c.n_learners++] = id;
            } else {
                c.voters[c.n_voters++] = id;
            }
        }
        unsigned char buf[8 + 8 * RAFT_MAX_MEMBERS];
        size_t len = raft_conf_encode(&c, buf);
        assert_int_equal(len, raft_conf_size(&c));
        struct raft_conf d;
        assert_int_equal(raft_conf_decode(buf, len, &d), 0);
        assert_memory_equal(&c, &d, sizeof c);
        /* Any truncation is refused. */
        assert_int_equal(raft_conf_decode(buf, len - 1 - test_rand(&seed) % (len - 1), &d),
                         RAFT_EINVAL);
    }
    unsigned char dup[24] = {2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 7};
    struct raft_conf d;
    assert_int_equal(raft_conf_decode(dup, sizeof dup, &d), RAFT_EINVAL);
    unsigned char zero[16] = {1};
    assert_int_equal(raft_conf_decode(zero, sizeof zero, &d), RAFT_EINVAL);
}

static void inflights_cap_count_and_bytes(void **state)
{
    (void)state;
    raft_index idx[4];
    size_t size[4];
    struct raft_inflights in = {.cap = 4, .max_bytes = 100, .idx = idx, .size = size};
    raft_inflights_add(&in, 5, 10);
    raft_inflights_add(&in, 7, 10);
    raft_inflights_add(&in, 9, 10);
    assert_false(raft_inflights_full(&in));
    raft_inflights_add(&in, 12, 10);
    assert_true(raft_inflights_full(&in)); /* By count. */
    raft_inflights_free_le(&in, 7);
    assert_int_equal(in.count, 2);
    assert_int_equal(in.bytes, 20);
    raft_inflights_add(&in, 13, 80);       /* Wraps around the ring. */
    assert_true(raft_inflights_full(&in)); /* By bytes: 100. */
    raft_inflights_free_le(&in, 100);
    assert_int_equal(in.count, 0);
    assert_int_equal(in.bytes, 0);
}

static void progress_probe_replicate_snapshot(void **state)
{
    (void)state;
    raft_index idx[2];
    size_t size[2];
    struct raft_progress p = {.id = 2, .state = RAFT_PR_PROBE, .next = 10};
    p.ins = (struct raft_inflights){.cap = 2, .idx = idx, .size = size};
    /* Probe: a stale rejection (not for next - 1) is ignored; a fresh one uses the hint. */
    assert_false(raft_progress_maybe_decr(&p, 5, 1));
    assert_true(raft_progress_maybe_decr(&p, 9, 3));
    assert_int_equal(p.next, 4);
    assert_true(raft_progress_maybe_update(&p, 6));
    assert_int_equal(p.match, 6);
    raft_progress_become_replicate(&p);
    assert_int_equal(p.next, 7);
    raft_inflights_add(&p.ins, 8, 1);
    raft_inflights_add(&p.ins, 9, 1);
    assert_true(raft_progress_is_paused(&p));
    /* Replicate: rejections at or below match are stale. */
    assert_false(raft_progress_maybe_decr(&p, 6, 0));
    assert_true(raft_progress_maybe_decr(&p, 8, 0));
    assert_int_equal(p.next, 7);
    raft_progress_become_snapshot(&p, 50);
    assert_true(raft_progress_is_paused(&p));
    raft_progress_become_probe(&p);
    assert_int_equal(p.next, 51); /* Resume after the snapshot. */
}

static void strerror_covers_codes(void **state)
{
    (void)state;
    assert_string_equal(raft_strerror(RAFT_ENOMEM), "out of memory");
    assert_string_equal(raft_strerror(RAFT_ENOTLEADER), "not the leader");
    assert_string_equal(raft_strerror(12345), "unknown error");
    assert_string_equal(raft_msg_type_name(RAFT_MSG_APP), "app");
    assert_string_equal(raft_msg_type_name(RAFT_MSG_TRANSFER_LEADER), "transfer-leader");
    assert_string_equal(raft_role_name(RAFT_PRE_CANDIDATE), "pre-candidate");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memstore_appends_truncates_and_reads),
        cmocka_unit_test(memstore_compacts_and_installs_snapshots),
        cmocka_unit_test(conf_codec_roundtrips_and_rejects_garbage),
        cmocka_unit_test(inflights_cap_count_and_bytes),
        cmocka_unit_test(progress_probe_replicate_snapshot),
        cmocka_unit_test(strerror_covers_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
