/* protobuf-c round-trips of the peer and client messages, and rejection of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/pb.h"

static void raft_message_roundtrip(void **state)
{
    (void)state;
    Kvdb__Raftpb__Entry e[2];
    Kvdb__Raftpb__Entry *ep[2] = {&e[0], &e[1]};
    for (int i = 0; i < 2; i++) {
        kvdb__raftpb__entry__init(&e[i]);
        e[i].term = 7;
        e[i].index = 100 + (uint64_t)i;
        e[i].type = i == 0 ? KVDB__RAFTPB__ENTRY_TYPE__ENTRY_NORMAL
                           : KVDB__RAFTPB__ENTRY_TYPE__ENTRY_CONF_CHANGE;
        e[i].data.data = (uint8_t *)(i == 0 ? "hello" : "");
        e[i].data.len = i == 0 ? 5 : 0;
    }
    Kvdb__Raftpb__Message m;
    kvdb__raftpb__message__init(&m);
    m.type = KVDB__RAFTPB__MESSAGE_TYPE__MSG_APP;
    m.to = 2;
    m.from = 0xfedcba9876543210ull;
    m.term = 7;
    m.log_term = 6;
    m.index = 99;
    m.commit = 98;
    m.n_entries = 2;
    m.entries = ep;

    size_t n = kvdb__raftpb__message__get_packed_size(&m);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(kvdb__raftpb__message__pack(&m, buf), n);

    Kvdb__Raftpb__Message *out = kvdb__raftpb__message__unpack(NULL, n, buf);
    assert_non_null(out);
    assert_int_equal(out->type, KVDB__RAFTPB__MESSAGE_TYPE__MSG_APP);
    assert_true(out->from == m.from);
    assert_int_equal(out->term, 7);
    assert_int_equal(out->log_term, 6);
    assert_int_equal(out->index, 99);
    assert_int_equal(out->commit, 98);
    assert_int_equal(out->n_entries, 2);
    assert_int_equal(out->entries[1]->index, 101);
    assert_int_equal(out->entries[1]->type, KVDB__RAFTPB__ENTRY_TYPE__ENTRY_CONF_CHANGE);
    assert_int_equal(out->entries[0]->data.len, 5);
    assert_memory_equal(out->entries[0]->data.data, "hello", 5);
    assert_false(out->reject);
    assert_null(out->snapshot);
    kvdb__raftpb__message__free_unpacked(out, NULL);

    /* Every truncation of a valid message either fails to decode or decodes to a prefix: it
     * never crashes (run under ASan in the sanitizer build). */
    for (size_t k = 0; k < n; k++) {
        Kvdb__Raftpb__Message *t = kvdb__raftpb__message__unpack(NULL, k, buf);
        if (t != NULL) {
            assert_true(t->n_entries <= 2);
            kvdb__raftpb__message__free_unpacked(t, NULL);
        }
    }
    free(buf);
}

static void client_frame_roundtrip(void **state)
{
    (void)state;
    Kvdb__PutRequest put;
    kvdb__put_request__init(&put);
    put.key.data = (uint8_t *)"k";
    put.key.len = 1;
    put.value.data = (uint8_t *)"v1";
    put.value.len = 2;
    put.prev_kv = 1;
    uint8_t body[64];
    size_t bn = kvdb__put_request__pack(&put, body);

    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = 42;
    f.method = KVDB__METHOD__METHOD_PUT;
    f.body.data = body;
    f.body.len = bn;
    uint8_t buf[128];
    size_t fn = kvdb__frame__pack(&f, buf);

    Kvdb__Frame *g = kvdb__frame__unpack(NULL, fn, buf);
    assert_non_null(g);
    assert_int_equal(g->id, 42);
    assert_int_equal(g->method, KVDB__METHOD__METHOD_PUT);
    Kvdb__PutRequest *p = kvdb__put_request__unpack(NULL, g->body.len, g->body.data);
    assert_non_null(p);
    assert_memory_equal(p->value.data, "v1", 2);
    assert_true(p->prev_kv);
    kvdb__put_request__free_unpacked(p, NULL);
    kvdb__frame__free_unpacked(g, NULL);
}

static void malformed_input_is_rejected(void **state)
{
    (void)state;
    /* A length-delimited field (entries, tag 7) claiming more bytes than the buffer holds. */
    const uint8_t bad[] = {0x3a, 0x7f, 0x08, 0x01};
    assert_null(kvdb__raftpb__message__unpack(NULL, sizeof bad, bad));
    /* A varint that never terminates. */
    const uint8_t bad2[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_null(kvdb__raftpb__message__unpack(NULL, sizeof bad2, bad2));
}

/* Unknown fields, at the top or nested, are detected so members can refuse them; includes the
 * field-number-0 tag protobuf-c accepts but cannot re-encode (found by fuzz_pb). */
static void unknown_fields_are_detected(void **state)
{
    (void)state;
    const uint8_t field0[] = {0x80, 0x00, 0x27};
    Kvdb__Raftpb__Batch *b = kvdb__raftpb__batch__unpack(NULL, sizeof field0, field0);
    assert_non_null(b);
    assert_true(pb_has_unknown_fields(&b->base));
    kvdb__raftpb__batch__free_unpacked(b, NULL);

    /* Batch{msgs: [Message{type: 1, field 99: 5}]}: unknown field inside a repeated message. */
    const uint8_t nested[] = {0x1a, 0x05, 0x08, 0x01, 0x98, 0x06, 0x05};
    b = kvdb__raftpb__batch__unpack(NULL, sizeof nested, nested);
    assert_non_null(b);
    assert_int_equal(b->n_msgs, 1);
    assert_true(pb_has_unknown_fields(&b->base));
    kvdb__raftpb__batch__free_unpacked(b, NULL);

    const uint8_t clean[] = {0x08, 0x07, 0x1a, 0x02, 0x08, 0x01};
    b = kvdb__raftpb__batch__unpack(NULL, sizeof clean, clean);
    assert_non_null(b);
    assert_int_equal(b->cluster_id, 7);
    assert_false(pb_has_unknown_fields(&b->base));
    kvdb__raftpb__batch__free_unpacked(b, NULL);
}

/* Nesting depth of txns is measured on the wire, without protobuf-c's recursion. */
static void txn_depth_is_bounded(void **state)
{
    (void)state;
    enum { DEEP = 20000 };
    uint8_t *buf = malloc((size_t)DEEP * 12 + 4);
    assert_non_null(buf);
    uint8_t *end = buf + (size_t)DEEP * 12 + 4, *p = end;
    int depth = 1; /* the innermost, empty TxnRequest */
    for (int i = 0; i < DEEP; i++) {
        /* Wrap the current message as RequestOp.request_txn (field 4), then as
         * TxnRequest.success (field 2): one level deeper. */
        for (int k = 0; k < 2; k++) {
            size_t len = (size_t)(end - p);
            uint8_t v[10];
            size_t n = 0;
            do {
                v[n++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
                len >>= 7;
            } while (len > 0);
            p -= n;
            memcpy(p, v, n);
            *--p = k == 0 ? 0x22 : 0x12;
        }
        depth++;
        if (depth == 16) {
            assert_int_equal(pb_txn_depth(p, (size_t)(end - p), 16), 16);
            assert_int_equal(pb_txn_depth(p, (size_t)(end - p), 15), -1);
        }
    }
    assert_int_equal(pb_txn_depth(p, (size_t)(end - p), 16), -1);
    /* A flat txn with compares and a put; and a truncated one. */
    const uint8_t flat[] = {0x0a, 0x02, 0x1a, 0x00, 0x12, 0x04, 0x12, 0x02, 0x0a, 0x00};
    assert_int_equal(pb_txn_depth(flat, sizeof flat, 16), 1);
    assert_int_equal(pb_txn_depth(flat, sizeof flat - 1, 16), -1);
    assert_int_equal(pb_txn_depth(NULL, 0, 16), 1);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raft_message_roundtrip),
        cmocka_unit_test(client_frame_roundtrip),
        cmocka_unit_test(malformed_input_is_rejected),
        cmocka_unit_test(unknown_fields_are_detected),
        cmocka_unit_test(txn_depth_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
