/* raft_msg <-> wire: random messages survive a round trip; bad peer input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/raftconv.h"
#include "test/lib/seed.h"

static void random_msg(uint64_t *seed, struct raft_msg *m, struct raft_entry *ents, char *data)
{
    memset(m, 0, sizeof *m);
    m->type = (enum raft_msg_type)(1 + test_rand(seed) % RAFT_MSG_TYPE_MAX);
    m->to = 1 + test_rand(seed) % 5;
    m->from = 7;
    m->term = test_rand(seed);
    m->log_term = test_rand(seed) % 1000;
    m->index = test_rand(seed);
    m->commit = test_rand(seed) % 100000;
    m->reject = test_rand(seed) % 2;
    m->reject_hint = test_rand(seed) % 77;
    m->reject_term = test_rand(seed) % 9;
    m->context = test_rand(seed);
    if (m->type == RAFT_MSG_SNAP) {
        m->snap.index = 500;
        m->snap.term = 4;
        m->snap.conf.n_voters = 3;
        m->snap.conf.voters[0] = 1;
        m->snap.conf.voters[1] = 2;
        m->snap.conf.voters[2] = 3;
        /* Sometimes no learners: protobuf-c then decodes a NULL array (UBSan caught a memcpy
         * from it). */
        m->snap.conf.n_learners = (unsigned)(test_rand(seed) % 2);
        m->snap.conf.learners[0] = m->snap.conf.n_learners > 0 ? 9 : 0;
    }
    m->n_entries = test_rand(seed) % 4;
    m->entries = ents;
    for (size_t k = 0; k < m->n_entries; k++) {
        ents[k].term = m->log_term + 1;
        ents[k].index = m->index + 1 + k;
        ents[k].type = (enum raft_entry_type)(1 + test_rand(seed) % 3);
        ents[k].data.len = test_rand(seed) % 40;
        ents[k].data.base = ents[k].data.len ? data + k : NULL;
    }
}

static void assert_msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_true(a->to == b->to && a->from == b->from && a->term == b->term);
    assert_true(a->log_term == b->log_term && a->index == b->index && a->commit == b->commit);
    assert_int_equal(a->reject, b->reject);
    assert_true(a->reject_hint == b->reject_hint && a->reject_term == b->reject_term);
    assert_true(a->context == b->context);
    assert_true(a->snap.index == b->snap.index && a->snap.term == b->snap.term);
    assert_memory_equal(&a->snap.conf, &b->snap.conf, sizeof a->snap.conf);
    assert_int_equal(a->n_entries, b->n_entries);
    for (size_t k = 0; k < a->n_entries; k++) {
        assert_true(a->entries[k].term == b->entries[k].term);
        assert_true(a->entries[k].index == b->entries[k].index);
        assert_int_equal(a->entries[k].type, b->entries[k].type);
        assert_int_equal(a->entries[k].data.len, b->entries[k].data.len);
        if (a->entries[k].data.len > 0) {
            assert_memory_equal(a->entries[k].data.base, b->entries[k].data.base,
                                a->entries[k].data.len);
        }
    }
}

static void random_batches_roundtrip(void **state)
{
    (void)state;
    uint64_t seed = test_seed("random_batches_roundtrip");
    char data[64];
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (char)('a' + i % 26);
    }
    for (int round = 0; round < 300; round++) {
        struct raft_msg msgs[6];
        struct raft_entry ents[6][4];
        size_t n = test_rand(&seed) % 6;
        for (size_t i = 0; i < n; i++) {
            random_msg(&seed, &msgs[i], ents[i], data);
        }
        struct pb_frame_writer w;
        pb_frame_writer_init(&w);
        assert_int_equal(pb_batch_append(&w, 0xc1, 7, msgs, n), 0);
        const unsigned char *p;
        size_t len = pb_frame_writer_pending(&w, &p);
        assert_true(len >= PB_FRAME_HDR);
        struct pb_batch b;
        char err[128];
        assert_int_equal(pb_batch_decode(p + PB_FRAME_HDR, len - PB_FRAME_HDR, &b, err, sizeof err),
                         0);
        assert_true(b.cluster_id == 0xc1 && b.from == 7);
        assert_int_equal(b.n_msgs, n);
        for (size_t i = 0; i < n; i++) {
            assert_msg_equal(&msgs[i], &b.msgs[i]);
        }
        pb_batch_free(&b);
        pb_batch_free(&b); /* no-op on the zeroed struct */
        pb_frame_writer_fini(&w);
    }
}

static void bad_peer_input_is_refused(void **state)
{
    (void)state;
    char err[128];
    struct pb_batch b;
    /* Not protobuf at all. */
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(pb_batch_decode(junk, sizeof junk, &b, err, sizeof err), PB_EMALFORMED);
    /* from = 0: Batch{cluster_id: 1} */
    const uint8_t nofrom[] = {0x08, 0x01};
    assert_int_equal(pb_batch_decode(nofrom, sizeof nofrom, &b, err, sizeof err), PB_EMALFORMED);
    assert_non_null(strstr(err, "member 0"));
    /* Batch{from: 2, msgs: [Message{type: 99, from: 2}]} */
    const uint8_t badtype[] = {0x10, 0x02, 0x1a, 0x04, 0x08, 0x63, 0x18, 0x02};
    assert_int_equal(pb_batch_decode(badtype, sizeof badtype, &b, err, sizeof err), PB_EMALFORMED);
    assert_non_null(strstr(err, "unknown message type 99"));
    /* Batch{from: 2, msgs: [Message{type: 1, from: 3}]}: a forged sender inside the batch. */
    const uint8_t forged[] = {0x10, 0x02, 0x1a, 0x04, 0x08, 0x01, 0x18, 0x03};
    assert_int_equal(pb_batch_decode(forged, sizeof forged, &b, err, sizeof err), PB_EMALFORMED);
    /* An unknown field (99) in the batch. */
    const uint8_t unknown[] = {0x10, 0x02, 0x98, 0x06, 0x01};
    assert_int_equal(pb_batch_decode(unknown, sizeof unknown, &b, err, sizeof err), PB_EUNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_batches_roundtrip),
        cmocka_unit_test(bad_peer_input_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
