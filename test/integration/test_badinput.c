/* Bad input on the client and peer ports of a real 3-member cluster: every case gets a clear
 * error or a closed connection, never a crash, and the members keep serving.  The cluster is
 * shared by the whole group; its teardown fails if any member crashed or leaked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

#include "proto/raftpb.pb-c.h"
#include "test/integration/fixture.h"
#include "test/lib/seed.h"

#define N 3
#define MAX_REQUEST 4096
#define MAX_TXN_OPS 4
#define CLIENT_HARD_MAX (64u << 20) /* server/client.c: larger frames close the connection */

static struct ih_fix *fx; /* fx->k[0]: talks to member 0 only */

static int group_setup(void **state)
{
    (void)state;
    static const char *const extra[] = {"--max-request-bytes", "4096", "--max-txn-ops", "4", NULL};
    fx = ih_fix_start(N, extra, 30000, 0);
    return fx != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    void *f = fx;
    fx = NULL;
    return ih_fix_teardown(&f); /* a crashed or leaking member fails here */
}

/* Every member runs, one leads, and member 0 still takes a write and reads it back. */
static void assert_cluster_serves(void)
{
    for (size_t i = 0; i < N; i++) {
        assert_true(ih_member_is_alive(&fx->c, i));
    }
    assert_true(ih_cluster_leader(&fx->c, 20000) >= 0);
    static int n;
    char key[32], v[32];
    snprintf(key, sizeof key, "alive-%d", n++);
    assert_true(ih_put(fx->k[0], key, key) > 0);
    for (size_t i = 0; i < N; i++) {
        struct kvc *k = ih_client(&fx->c, i, 10000);
        assert_non_null(k);
        assert_int_equal(1, ih_get(k, key, false, v, sizeof v));
        assert_string_equal(v, key);
        kvc_close(k);
    }
}

/* Send one raw frame {id, method, body} on a new connection and return the reply's error code
 * (checking the id echoes), or -1 if the connection closed. */
static int raw_call(int method, const void *body, size_t n, char *msg, size_t cap)
{
    int fd = ih_raw_dial(fx->c.m[0].client_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_send(fd, 77, method, body, n));
    Kvdb__Frame *f = NULL;
    int rv = ih_raw_recv(fd, 10000, &f);
    close(fd);
    assert_true(rv >= 0); /* a reply or a close, never silence */
    if (rv == 1) {
        return -1;
    }
    int code = f->error;
    assert_int_equal(f->id, 77);
    snprintf(msg, cap, "%s", f->error_message);
    kvdb__frame__free_unpacked(f, NULL);
    return code;
}

/* A frame whose payload is not protobuf gets INVALID_ARGUMENT (with id 0: its id is unknown). */
static void frame_not_protobuf(void **state)
{
    (void)state;
    int fd = ih_raw_dial(fx->c.m[0].client_port);
    assert_true(fd >= 0);
    const unsigned char junk[] = {0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(0, ih_raw_write_frame(fd, junk, sizeof junk));
    Kvdb__Frame *f = NULL;
    assert_int_equal(0, ih_raw_recv(fd, 10000, &f));
    assert_int_equal(f->error, KVDB__ERROR_CODE__INVALID_ARGUMENT);
    assert_int_equal(f->id, 0);
    assert_true(strlen(f->error_message) > 0);
    kvdb__frame__free_unpacked(f, NULL);
    close(fd);

    /* A valid frame with a body that is not the method's request message. */
    char msg[256];
    assert_int_equal(KVDB__ERROR_CODE__INVALID_ARGUMENT,
                     raw_call(KVDB__METHOD__METHOD_PUT, junk, sizeof junk, msg, sizeof msg));
    assert_int_equal(KVDB__ERROR_CODE__INVALID_ARGUMENT,
                     raw_call(KVDB__METHOD__METHOD_RANGE, junk, sizeof junk, msg, sizeof msg));
    assert_int_equal(KVDB__ERROR_CODE__INVALID_ARGUMENT,
                     raw_call(KVDB__METHOD__METHOD_TXN, junk, sizeof junk, msg, sizeof msg));
    assert_cluster_serves();
}

static void unknown_method(void **state)
{
    (void)state;
    char msg[256];
    assert_int_equal(KVDB__ERROR_CODE__UNIMPLEMENTED, raw_call(99, NULL, 0, msg, sizeof msg));
    assert_true(strlen(msg) > 0);
    assert_int_equal(KVDB__ERROR_CODE__UNIMPLEMENTED,
                     raw_call(KVDB__METHOD__METHOD_UNKNOWN, NULL, 0, msg, sizeof msg));
    assert_cluster_serves();
}

/* Over --max-request-bytes but under the hard limit: RESOURCE_EXHAUSTED, nothing written. */
static void request_over_max_bytes(void **state)
{
    (void)state;
    static char big[MAX_REQUEST + 100];
    memset(big, 'x', sizeof big);
    Kvdb__PutResponse *r = NULL;
    assert_int_equal(KVC_ESERVER, kvc_put(fx->k[0], "big", 3, big, sizeof big, &r));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__RESOURCE_EXHAUSTED);
    assert_int_equal(0, ih_get(fx->k[0], "big", false, NULL, 0));
    /* Just under the limit is fine. */
    assert_int_equal(0, kvc_put(fx->k[0], "big", 3, big, MAX_REQUEST - 64, &r));
    kvdb__put_response__free_unpacked(r, NULL);
    assert_cluster_serves();
}

/* A frame announcing more than the hard limit closes that connection (client and peer port);
 * another connection opened before it keeps working. */
static void frame_over_hard_limit(void **state)
{
    (void)state;
    int other = ih_raw_dial(fx->c.m[0].client_port);
    int fd = ih_raw_dial(fx->c.m[0].client_port);
    assert_true(other >= 0 && fd >= 0);
    uint32_t n = CLIENT_HARD_MAX + 1;
    unsigned char hdr[8] = {(unsigned char)n,
                            (unsigned char)(n >> 8),
                            (unsigned char)(n >> 16),
                            (unsigned char)(n >> 24),
                            1,
                            2,
                            3,
                            4};
    assert_int_equal(0, ih_raw_write(fd, hdr, sizeof hdr));
    assert_true(ih_raw_closed(fd, 10000));
    close(fd);
    /* The same with 0xffffffff. */
    fd = ih_raw_dial(fx->c.m[0].client_port);
    memset(hdr, 0xff, 4);
    assert_int_equal(0, ih_raw_write(fd, hdr, sizeof hdr));
    assert_true(ih_raw_closed(fd, 10000));
    close(fd);

    /* On the peer port too (its hard limit is larger, 256 MiB, but not 4 GiB). */
    fd = ih_raw_dial(fx->c.m[0].peer_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_write(fd, hdr, sizeof hdr));
    assert_true(ih_raw_closed(fd, 10000));
    close(fd);

    assert_int_equal(0, ih_raw_send(other, 5, KVDB__METHOD__METHOD_STATUS, NULL, 0));
    Kvdb__Frame *f = NULL;
    assert_int_equal(0, ih_raw_recv(other, 10000, &f));
    assert_int_equal(f->id, 5);
    assert_int_equal(f->error, KVDB__ERROR_CODE__OK);
    kvdb__frame__free_unpacked(f, NULL);
    close(other);
    assert_cluster_serves();
}

/* Truncated frames (header cut, payload cut) followed by a close do no harm. */
static void truncated_frames(void **state)
{
    (void)state;
    const uint16_t ports[] = {fx->c.m[0].client_port, fx->c.m[0].peer_port};
    for (size_t p = 0; p < 2; p++) {
        int fd = ih_raw_dial(ports[p]);
        assert_true(fd >= 0);
        assert_int_equal(0, ih_raw_write(fd, "\x10\x00", 2));
        close(fd);
        fd = ih_raw_dial(ports[p]);
        assert_int_equal(0, ih_raw_write(fd, "\x64\x00\x00\x00\x08\x01\x10", 7));
        close(fd);
    }
    assert_cluster_serves();
}

static void empty_key(void **state)
{
    (void)state;
    Kvdb__PutResponse *pr = NULL;
    assert_int_equal(KVC_ESERVER, kvc_put(fx->k[0], "", 0, "v", 1, &pr));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    Kvdb__DeleteRangeResponse *dr = NULL;
    assert_int_equal(KVC_ESERVER, kvc_delete(fx->k[0], "", 0, &dr));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    assert_cluster_serves();
}

/* etcd checks the key of every op inside a txn and of a Range (ErrGRPCEmptyKey). */
static void empty_key_in_txn_and_range(void **state)
{
    (void)state;
    Kvdb__RequestOp op, *opp = &op;
    Kvdb__PutRequest put;
    kvdb__request_op__init(&op);
    kvdb__put_request__init(&put);
    op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.success = &opp;
    t.n_success = 1;
    Kvdb__TxnResponse *tr = NULL;
    assert_int_equal(KVC_ESERVER,
                     kvc_call(fx->k[0], KVDB__METHOD__METHOD_TXN, &t.base,
                              &kvdb__txn_response__descriptor, (ProtobufCMessage **)&tr));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    Kvdb__RangeResponse *rr = NULL;
    assert_int_equal(KVC_ESERVER, kvc_get(fx->k[0], "", 0, false, &rr));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    assert_cluster_serves();
}

/* A txn with @n_ops puts of distinct keys "txn-<n>-<i>". */
static int txn_with(size_t n_ops)
{
    Kvdb__RequestOp ops[16], *opp[16];
    Kvdb__PutRequest puts[16];
    char keys[16][48];
    for (size_t i = 0; i < n_ops; i++) {
        snprintf(keys[i], sizeof keys[i], "txn-%zu-%zu", n_ops, i);
        kvdb__request_op__init(&ops[i]);
        kvdb__put_request__init(&puts[i]);
        puts[i].key.data = (uint8_t *)keys[i];
        puts[i].key.len = strlen(keys[i]);
        ops[i].request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
        ops[i].request_put = &puts[i];
        opp[i] = &ops[i];
    }
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.success = opp;
    t.n_success = n_ops;
    Kvdb__TxnResponse *resp = NULL;
    int rv = kvc_call(fx->k[0], KVDB__METHOD__METHOD_TXN, &t.base, &kvdb__txn_response__descriptor,
                      (ProtobufCMessage **)&resp);
    if (rv == 0) {
        kvdb__txn_response__free_unpacked(resp, NULL);
    }
    return rv;
}

static void txn_too_many_ops(void **state)
{
    (void)state;
    assert_int_equal(0, txn_with(MAX_TXN_OPS));
    assert_int_equal(1, ih_get(fx->k[0], "txn-4-3", false, NULL, 0));
    assert_int_equal(KVC_ESERVER, txn_with(MAX_TXN_OPS + 1));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    assert_int_equal(0, ih_get(fx->k[0], "txn-5-0", false, NULL, 0)); /* nothing of it applied */
    assert_cluster_serves();
}

/* --max-txn-ops also bounds a nested txn (etcd's checkTxnRequest recurses): Txn{success:
 * [Txn{success: 5 puts}]} is refused and nothing of it is applied. */
static void nested_txn_too_many_ops(void **state)
{
    (void)state;
    Kvdb__RequestOp ops[MAX_TXN_OPS + 1], *opp[MAX_TXN_OPS + 1];
    Kvdb__PutRequest puts[MAX_TXN_OPS + 1];
    char keys[MAX_TXN_OPS + 1][32];
    for (size_t i = 0; i <= MAX_TXN_OPS; i++) {
        snprintf(keys[i], sizeof keys[i], "nested-%zu", i);
        kvdb__request_op__init(&ops[i]);
        kvdb__put_request__init(&puts[i]);
        puts[i].key.data = (uint8_t *)keys[i];
        puts[i].key.len = strlen(keys[i]);
        ops[i].request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
        ops[i].request_put = &puts[i];
        opp[i] = &ops[i];
    }
    Kvdb__TxnRequest inner, outer;
    kvdb__txn_request__init(&inner);
    inner.success = opp;
    inner.n_success = MAX_TXN_OPS + 1;
    Kvdb__RequestOp op, *opp1 = &op;
    kvdb__request_op__init(&op);
    op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op.request_txn = &inner;
    kvdb__txn_request__init(&outer);
    outer.success = &opp1;
    outer.n_success = 1;
    Kvdb__TxnResponse *resp = NULL;
    assert_int_equal(KVC_ESERVER,
                     kvc_call(fx->k[0], KVDB__METHOD__METHOD_TXN, &outer.base,
                              &kvdb__txn_response__descriptor, (ProtobufCMessage **)&resp));
    assert_int_equal(kvc_server_code(fx->k[0]), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    assert_int_equal(0, ih_get(fx->k[0], "nested-0", false, NULL, 0));
    assert_cluster_serves();
}

/* A peer Batch frame with @cluster_id from @from (one heartbeat to member 0) on a new
 * connection to member 0's peer port; returns whether the member closed it. */
static bool peer_batch_closed(uint64_t cluster_id, uint64_t from, uint64_t to)
{
    Kvdb__Raftpb__Message m;
    kvdb__raftpb__message__init(&m);
    m.type = KVDB__RAFTPB__MESSAGE_TYPE__MSG_HEARTBEAT;
    m.to = to;
    m.from = from;
    m.term = 1;
    Kvdb__Raftpb__Message *mp = &m;
    Kvdb__Raftpb__Batch b;
    kvdb__raftpb__batch__init(&b);
    b.cluster_id = cluster_id;
    b.from = from;
    b.msgs = &mp;
    b.n_msgs = 1;
    uint8_t buf[256];
    size_t n = kvdb__raftpb__batch__pack(&b, buf);
    int fd = ih_raw_dial(fx->c.m[0].peer_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_write_frame(fd, buf, n));
    bool closed = ih_raw_closed(fd, 5000);
    close(fd);
    return closed;
}

/* Count lines containing @needle in member 0's log. */
static int log_count(const char *needle)
{
    FILE *f = fopen(fx->c.m[0].log, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* A peer of another cluster (or an unknown member) is refused: the connection is closed, the
 * refusal is logged at a limited rate, and the member keeps serving. */
static void peer_wrong_cluster_id(void **state)
{
    (void)state;
    Kvdb__StatusResponse *st = NULL;
    assert_int_equal(0, ih_status(fx->c.m[0].client_port, 2000, &st));
    uint64_t cid = st->header->cluster_id, self = st->header->member_id;
    kvdb__status_response__free_unpacked(st, NULL);
    Kvdb__StatusResponse *st1 = NULL;
    assert_int_equal(0, ih_status(fx->c.m[1].client_port, 2000, &st1));
    uint64_t peer = st1->header->member_id;
    kvdb__status_response__free_unpacked(st1, NULL);

    int before = log_count("refused peer connection");
    for (int i = 0; i < 20; i++) {
        assert_true(peer_batch_closed(cid ^ 0x5a5a5a5a, peer, self));
    }
    assert_true(peer_batch_closed(cid, 0x1234567, self)); /* right cluster, unknown member */
    int logged = log_count("refused peer connection") - before;
    assert_true(logged >= 1);
    assert_true(logged <= 3); /* rate-limited: not one line per attempt */
    assert_cluster_serves();
}

/* One raw request with an empty body on a new connection: 0 and *@code, or -1 (no reply). */
static int empty_body_call(int method, int *code)
{
    int fd = ih_raw_dial(fx->c.m[0].client_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_send(fd, 4, method, NULL, 0));
    Kvdb__Frame *r = NULL;
    int rv = ih_raw_recv(fd, 10000, &r);
    close(fd);
    if (rv != 0) {
        return -1;
    }
    *code = r->error;
    kvdb__frame__free_unpacked(r, NULL);
    return 0;
}

/* Regression (found here, fixed in 58e11f8): a request whose protobuf body is empty (all
 * fields default) arrives with body.data == NULL, and the member copied it with memcpy, which
 * the UBSan build aborts on.  An empty RangeRequest is a Range of the empty key: it gets
 * INVALID_ARGUMENT ("key is not provided", as etcd). */
static void range_with_empty_body(void **state)
{
    (void)state;
    int code = -1;
    assert_int_equal(0, empty_body_call(KVDB__METHOD__METHOD_RANGE, &code));
    assert_true(ih_member_is_alive(&fx->c, 0));
    assert_int_equal(code, KVDB__ERROR_CODE__INVALID_ARGUMENT);
}

/* Regression (found here, fixed in 58e11f8): the same NULL-body memcpy on the write path,
 * for an empty Txn (valid: no compares, no ops; etcd answers succeeded=true) and a Compact at
 * revision 0.  Each gets a reply and the member lives. */
static void write_with_empty_body(void **state)
{
    (void)state;
    int code = -1;
    assert_int_equal(0, empty_body_call(KVDB__METHOD__METHOD_TXN, &code));
    assert_true(ih_member_is_alive(&fx->c, 0));
    assert_int_equal(code, KVDB__ERROR_CODE__OK);
    assert_int_equal(0, empty_body_call(KVDB__METHOD__METHOD_COMPACT, &code));
    assert_true(ih_member_is_alive(&fx->c, 0));
}

/* Regression (found here, fixed in 58e11f8): a peer message carrying a snapshot
 * configuration without learners (every MsgSnap of a cluster without learners) was decoded
 * with a NULL memcpy (UBSan abort), before the batch's cluster ID was checked, so anyone
 * reaching the peer port could stop a member.  The foreign batch is refused (connection
 * closed) and the member keeps running. */
static void peer_snapshot_conf_without_learners(void **state)
{
    (void)state;
    uint64_t voters[] = {1};
    Kvdb__Raftpb__ConfState conf;
    kvdb__raftpb__conf_state__init(&conf);
    conf.voters = voters;
    conf.n_voters = 1;
    Kvdb__Raftpb__SnapshotMeta meta;
    kvdb__raftpb__snapshot_meta__init(&meta);
    meta.index = 10;
    meta.term = 1;
    meta.conf = &conf;
    Kvdb__Raftpb__Message m;
    kvdb__raftpb__message__init(&m);
    m.type = KVDB__RAFTPB__MESSAGE_TYPE__MSG_SNAP;
    m.from = 1;
    m.to = 2;
    m.term = 1;
    m.snapshot = &meta;
    Kvdb__Raftpb__Message *mp = &m;
    Kvdb__Raftpb__Batch b;
    kvdb__raftpb__batch__init(&b);
    b.cluster_id = 42; /* not this cluster's */
    b.from = 1;
    b.msgs = &mp;
    b.n_msgs = 1;
    uint8_t buf[256];
    size_t n = kvdb__raftpb__batch__pack(&b, buf);
    int fd = ih_raw_dial(fx->c.m[0].peer_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_write_frame(fd, buf, n));
    assert_true(ih_raw_closed(fd, 10000));
    close(fd);
    ih_sleep_ms(200);
    assert_true(ih_member_is_alive(&fx->c, 0));
    assert_true(ih_put(fx->k[0], "still", "alive") > 0);
}

/* Random bytes at @port: @rounds connections, each a random mix of raw bytes and frames with
 * random payloads (some announcing huge lengths), then a close. */
static void spray(uint16_t port, uint64_t *seed, int rounds)
{
    static unsigned char buf[8192];
    for (int r = 0; r < rounds; r++) {
        int fd = ih_raw_dial(port);
        assert_true(fd >= 0);
        size_t n = 1 + test_rand(seed) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            buf[i] = (unsigned char)test_rand(seed);
        }
        switch (test_rand(seed) % 3) {
        case 0: /* raw bytes */
            (void)ih_raw_write(fd, buf, n);
            break;
        case 1: /* well-framed random payload: reaches the protobuf decoder */
            (void)ih_raw_write_frame(fd, buf, n);
            break;
        default: { /* a valid Frame envelope around a random body */
            int method = (int)(test_rand(seed) % 9);
            (void)ih_raw_send(fd, test_rand(seed), method, buf, n % 512);
            break;
        }
        }
        if (test_rand(seed) % 4 == 0) {
            ih_sleep_ms(1); /* sometimes let the member answer before the close */
        }
        close(fd);
    }
}

static void garbage_client_port(void **state)
{
    (void)state;
    uint64_t seed = test_seed("garbage_client_port");
    for (size_t i = 0; i < N; i++) {
        spray(fx->c.m[i].client_port, &seed, 100);
    }
    assert_cluster_serves();
}

static void garbage_peer_port(void **state)
{
    (void)state;
    uint64_t seed = test_seed("garbage_peer_port");
    for (size_t i = 0; i < N; i++) {
        spray(fx->c.m[i].peer_port, &seed, 100);
    }
    assert_cluster_serves();
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_not_protobuf),
        cmocka_unit_test(unknown_method),
        cmocka_unit_test(request_over_max_bytes),
        cmocka_unit_test(frame_over_hard_limit),
        cmocka_unit_test(truncated_frames),
        cmocka_unit_test(empty_key),
        cmocka_unit_test(empty_key_in_txn_and_range),
        cmocka_unit_test(txn_too_many_ops),
        cmocka_unit_test(nested_txn_too_many_ops),
        cmocka_unit_test(peer_wrong_cluster_id),
        cmocka_unit_test(range_with_empty_body),
        cmocka_unit_test(write_with_empty_body),
        cmocka_unit_test(peer_snapshot_conf_without_learners),
        cmocka_unit_test(garbage_client_port),
        cmocka_unit_test(garbage_peer_port),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
