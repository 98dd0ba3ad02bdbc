/* Seeded random but well-formed client requests (odd keys, negative limits and revisions,
 * out-of-range enum values, nested txns, compactions) against a real 3-member cluster: each
 * gets a reply with an expected code, no member crashes, and afterwards every replica holds
 * exactly the same data (the apply path is deterministic on every input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

#include "test/integration/fixture.h"
#include "test/lib/seed.h"

#define N 3

static struct ih_fix *fx; /* fx->k[0]: all members, fails over */

static int group_setup(void **state)
{
    (void)state;
    static const char *const extra[] = {"--max-request-bytes", "4096", "--max-txn-ops", "4", NULL};
    fx = ih_fix_start(N, extra, 30000, (size_t)-1);
    return fx != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    void *f = fx;
    fx = NULL;
    return ih_fix_teardown(&f); /* a crashed or leaking member fails here */
}
static uint64_t rng;

/* ---- random request parts (all memory from a per-request arena) ---- */

struct arena
{
    void *p[512];
    size_t n;
};

static void *alloc(struct arena *a, size_t size)
{
    assert_true(a->n < 512);
    void *p = calloc(1, size > 0 ? size : 1);
    assert_non_null(p);
    return a->p[a->n++] = p;
}

static void arena_free(struct arena *a)
{
    while (a->n > 0) {
        free(a->p[--a->n]);
    }
}

static unsigned pick(unsigned n)
{
    return (unsigned)(test_rand(&rng) % n);
}

/* A key: mostly from a small keyspace (so ops collide), sometimes odd bytes. */
static ProtobufCBinaryData rkey(struct arena *a, bool allow_empty)
{
    ProtobufCBinaryData d = {0, NULL};
    unsigned c = pick(10);
    if (c < 7) {
        char *k = alloc(a, 8);
        k[0] = 'f';
        k[1] = '/';
        k[2] = (char)('a' + pick(8));
        d.data = (uint8_t *)k;
        d.len = 3;
    } else if (c < 9 || !allow_empty) {
        d.len = 1 + pick(12);
        d.data = alloc(a, d.len);
        for (size_t i = 0; i < d.len; i++) {
            d.data[i] = (uint8_t)(pick(3) == 0 ? 0xff : pick(3) == 0 ? 0x00 : 'a' + pick(26));
        }
    }
    return d;
}

static ProtobufCBinaryData rend(struct arena *a)
{
    ProtobufCBinaryData d = {0, NULL};
    switch (pick(4)) {
    case 0: /* single key */
        break;
    case 1: /* "\0": from key on */
        d.data = alloc(a, 1);
        d.len = 1;
        break;
    case 2: /* the f/ prefix */
        d.data = (uint8_t *)alloc(a, 2);
        memcpy(d.data, "f0", 2);
        d.len = 2;
        break;
    default: /* anything, possibly below the key (an empty range) */
        d = rkey(a, false);
        break;
    }
    return d;
}

static int64_t rrev(void)
{
    static const int64_t revs[] = {0, 0, 0, -1, -5, 1, 2, 5, 20, 1000000, INT64_MAX};
    return revs[pick(sizeof revs / sizeof revs[0])];
}

static Kvdb__RangeRequest *rrange(struct arena *a)
{
    Kvdb__RangeRequest *r = alloc(a, sizeof *r);
    kvdb__range_request__init(r);
    r->key = rkey(a, true);
    r->range_end = rend(a);
    r->limit = (int64_t)pick(8) - 2;
    r->revision = rrev();
    r->sort_order = (Kvdb__RangeRequest__SortOrder)pick(5); /* 3, 4: not in the enum */
    r->sort_target = (Kvdb__RangeRequest__SortTarget)pick(7);
    r->serializable = pick(2);
    r->keys_only = pick(3) == 0;
    r->count_only = pick(4) == 0;
    return r;
}

static Kvdb__PutRequest *rput(struct arena *a)
{
    Kvdb__PutRequest *p = alloc(a, sizeof *p);
    kvdb__put_request__init(p);
    p->key = rkey(a, true);
    p->value.len = pick(64);
    p->value.data = alloc(a, p->value.len);
    memset(p->value.data, 'v', p->value.len);
    p->prev_kv = pick(2);
    p->lease = pick(8) == 0 ? (int64_t)pick(100) : 0;
    p->ignore_value = pick(8) == 0;
    p->ignore_lease = pick(8) == 0;
    return p;
}

static Kvdb__DeleteRangeRequest *rdel(struct arena *a)
{
    Kvdb__DeleteRangeRequest *d = alloc(a, sizeof *d);
    kvdb__delete_range_request__init(d);
    d->key = rkey(a, true);
    d->range_end = rend(a);
    d->prev_kv = pick(2);
    return d;
}

static Kvdb__TxnRequest *rtxn(struct arena *a, int depth);

static Kvdb__RequestOp **rops(struct arena *a, size_t n, int depth)
{
    Kvdb__RequestOp **ops = alloc(a, (n + 1) * sizeof *ops);
    for (size_t i = 0; i < n; i++) {
        Kvdb__RequestOp *op = ops[i] = alloc(a, sizeof *op);
        kvdb__request_op__init(op);
        switch (pick(depth < 2 ? 4 : 3)) {
        case 0:
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE;
            op->request_range = rrange(a);
            break;
        case 1:
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
            op->request_put = rput(a);
            break;
        case 2:
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            op->request_delete_range = rdel(a);
            break;
        default:
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_TXN;
            op->request_txn = rtxn(a, depth + 1);
            break;
        }
    }
    return ops;
}

static Kvdb__Compare *rcmp(struct arena *a)
{
    Kvdb__Compare *c = alloc(a, sizeof *c);
    kvdb__compare__init(c);
    c->result = (Kvdb__Compare__CompareResult)pick(6);
    c->target = (Kvdb__Compare__CompareTarget)pick(6);
    c->key = rkey(a, true);
    if (pick(3) == 0) {
        c->range_end = rend(a);
    }
    switch (pick(6)) {
    case 0:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_VERSION;
        c->version = rrev();
        break;
    case 1:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = rrev();
        break;
    case 2:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = rrev();
        break;
    case 3:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_VALUE;
        c->value.len = pick(4);
        c->value.data = alloc(a, c->value.len);
        memset(c->value.data, 'v', c->value.len);
        break;
    case 4:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_LEASE;
        c->lease = (int64_t)pick(3);
        break;
    default: /* no target value at all */
        break;
    }
    return c;
}

static Kvdb__TxnRequest *rtxn(struct arena *a, int depth)
{
    Kvdb__TxnRequest *t = alloc(a, sizeof *t);
    kvdb__txn_request__init(t);
    t->n_compare = pick(3);
    t->compare = alloc(a, (t->n_compare + 1) * sizeof *t->compare);
    for (size_t i = 0; i < t->n_compare; i++) {
        t->compare[i] = rcmp(a);
    }
    t->n_success = pick(5);
    t->success = rops(a, t->n_success, depth);
    t->n_failure = pick(4);
    t->failure = rops(a, t->n_failure, depth);
    return t;
}

/* ---- the test ---- */

/* Codes a well-formed but odd request may legitimately get. */
static bool expected_code(Kvdb__ErrorCode code)
{
    return code == KVDB__ERROR_CODE__INVALID_ARGUMENT || code == KVDB__ERROR_CODE__OUT_OF_RANGE ||
           code == KVDB__ERROR_CODE__NOT_FOUND || code == KVDB__ERROR_CODE__FAILED_PRECONDITION ||
           code == KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
}

static void one_request(int i)
{
    struct arena a = {.n = 0};
    ProtobufCMessage *req = NULL;
    const ProtobufCMessageDescriptor *desc = NULL;
    Kvdb__Method m;
    switch (pick(10)) {
    case 0:
    case 1:
        m = KVDB__METHOD__METHOD_RANGE;
        req = &rrange(&a)->base;
        desc = &kvdb__range_response__descriptor;
        break;
    case 2:
    case 3:
    case 4:
        m = KVDB__METHOD__METHOD_PUT;
        req = &rput(&a)->base;
        desc = &kvdb__put_response__descriptor;
        break;
    case 5:
        m = KVDB__METHOD__METHOD_DELETE_RANGE;
        req = &rdel(&a)->base;
        desc = &kvdb__delete_range_response__descriptor;
        break;
    case 9: {
        m = KVDB__METHOD__METHOD_COMPACT;
        Kvdb__CompactionRequest *c = alloc(&a, sizeof *c);
        kvdb__compaction_request__init(c);
        c->revision = pick(4) == 0 ? rrev() : (int64_t)(i / 4);
        c->physical = pick(2);
        req = &c->base;
        desc = &kvdb__compaction_response__descriptor;
        break;
    }
    default:
        m = KVDB__METHOD__METHOD_TXN;
        req = &rtxn(&a, 0)->base;
        desc = &kvdb__txn_response__descriptor;
        break;
    }
    ProtobufCMessage *resp = NULL;
    int rv = kvc_call(fx->k[0], m, req, desc, &resp);
    if (rv == 0) {
        protobuf_c_message_free_unpacked(resp, NULL);
    } else if (rv != KVC_ESERVER || !expected_code(kvc_server_code(fx->k[0]))) {
        fprintf(stderr, "[integ] request %d (method %d): %s: code %d: %s\n", i, (int)m,
                kvc_strerror(rv), (int)kvc_server_code(fx->k[0]), kvc_errmsg(fx->k[0]));
        fail_msg("unexpected outcome of request %d", i);
    }
    arena_free(&a);
}

/* Everything member @i holds (a serializable read of all keys). */
static Kvdb__RangeResponse *dump(size_t i)
{
    struct kvc *k = ih_client(&fx->c, i, 10000);
    assert_non_null(k);
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)"";
    r.key.len = 1; /* "\0" */
    r.range_end.data = (uint8_t *)"";
    r.range_end.len = 1;
    r.serializable = true;
    Kvdb__RangeResponse *g = NULL;
    assert_int_equal(0, kvc_call(k, KVDB__METHOD__METHOD_RANGE, &r.base,
                                 &kvdb__range_response__descriptor, (ProtobufCMessage **)&g));
    kvc_close(k);
    return g;
}

static void assert_same_kvs(const Kvdb__RangeResponse *x, const Kvdb__RangeResponse *y)
{
    assert_int_equal(x->header->revision, y->header->revision);
    assert_int_equal(x->n_kvs, y->n_kvs);
    for (size_t j = 0; j < x->n_kvs; j++) {
        const Kvdb__KeyValue *a = x->kvs[j], *b = y->kvs[j];
        assert_int_equal(a->key.len, b->key.len);
        assert_memory_equal(a->key.data, b->key.data, a->key.len);
        assert_int_equal(a->value.len, b->value.len);
        if (a->value.len > 0) {
            assert_memory_equal(a->value.data, b->value.data, a->value.len);
        }
        assert_int_equal(a->create_revision, b->create_revision);
        assert_int_equal(a->mod_revision, b->mod_revision);
        assert_int_equal(a->version, b->version);
    }
}

/* Wait until every member applied the same index (so their serializable reads are comparable). */
static void wait_applied_equal(void)
{
    uint64_t deadline = ih_now_ms() + 20000;
    while (ih_now_ms() < deadline) {
        uint64_t idx[N];
        bool same = true;
        for (size_t i = 0; i < N; i++) {
            Kvdb__StatusResponse *st = NULL;
            assert_int_equal(0, ih_status(fx->c.m[i].client_port, 2000, &st));
            idx[i] = st->raft_applied_index;
            kvdb__status_response__free_unpacked(st, NULL);
            same = same && idx[i] == idx[0];
        }
        if (same) {
            return;
        }
        ih_sleep_ms(50);
    }
    fail_msg("members did not converge on one applied index");
}

static void random_requests_keep_replicas_identical(void **state)
{
    (void)state;
    rng = test_seed("random_requests_keep_replicas_identical");
    for (int i = 0; i < 400; i++) {
        one_request(i);
    }
    for (size_t i = 0; i < N; i++) {
        assert_true(ih_member_is_alive(&fx->c, i));
    }
    assert_true(ih_put(fx->k[0], "f/last", "x") > 0);
    wait_applied_equal();
    Kvdb__RangeResponse *ref = dump(0);
    assert_true(ref->n_kvs > 0);
    for (size_t i = 1; i < N; i++) {
        Kvdb__RangeResponse *g = dump(i);
        assert_same_kvs(ref, g);
        kvdb__range_response__free_unpacked(g, NULL);
    }
    fprintf(stderr, "[integ] replicas identical: %zu keys at revision %lld\n", ref->n_kvs,
            (long long)ref->header->revision);
    kvdb__range_response__free_unpacked(ref, NULL);
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_requests_keep_replicas_identical),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
