/* One real member: the KV API end to end (put/get/delete/txn/range, revisions, compaction
 * errors), restart with SIGTERM and with kill -9 keeps every acknowledged write, and the data
 * dir lock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test/integration/fixture.h"

static int setup(void **state)
{
    return ih_fix_setup(state, 1, NULL, 20000, true);
}

/* A Range call; on 0, *@out is owned by the caller. */
static int range(struct kvc *k,
                 const char *key,
                 const char *end,
                 int64_t rev,
                 int64_t limit,
                 Kvdb__RangeResponse **out)
{
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)key;
    r.key.len = strlen(key);
    r.range_end.data = (uint8_t *)end;
    r.range_end.len = end != NULL ? strlen(end) : 0;
    r.revision = rev;
    r.limit = limit;
    return kvc_call(k, KVDB__METHOD__METHOD_RANGE, &r.base, &kvdb__range_response__descriptor,
                    (ProtobufCMessage **)out);
}

static int compact(struct kvc *k, int64_t rev)
{
    Kvdb__CompactionRequest r;
    kvdb__compaction_request__init(&r);
    r.revision = rev;
    Kvdb__CompactionResponse *resp = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_COMPACT, &r.base,
                      &kvdb__compaction_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv == 0) {
        kvdb__compaction_response__free_unpacked(resp, NULL);
    }
    return rv;
}

static void assert_kv(const Kvdb__KeyValue *kv, const char *key, const char *val)
{
    assert_int_equal(kv->key.len, strlen(key));
    assert_memory_equal(kv->key.data, key, strlen(key));
    if (val != NULL) {
        assert_int_equal(kv->value.len, strlen(val));
        assert_memory_equal(kv->value.data, val, strlen(val));
    }
}

/* Revisions, versions and create/mod revisions follow etcd's rules through put, overwrite and
 * delete. */
static void put_get_delete(void **state)
{
    struct ih_fix *f = *state;
    int64_t r1 = ih_put(f->k[0], "a", "1");
    assert_true(r1 > 0);
    int64_t r2 = ih_put(f->k[0], "a", "2");
    assert_int_equal(r2, r1 + 1);

    Kvdb__RangeResponse *g = NULL;
    assert_int_equal(0, range(f->k[0], "a", NULL, 0, 0, &g));
    assert_int_equal(g->n_kvs, 1);
    assert_kv(g->kvs[0], "a", "2");
    assert_int_equal(g->kvs[0]->create_revision, r1);
    assert_int_equal(g->kvs[0]->mod_revision, r2);
    assert_int_equal(g->kvs[0]->version, 2);
    assert_int_equal(g->header->revision, r2);
    kvdb__range_response__free_unpacked(g, NULL);

    Kvdb__DeleteRangeResponse *d = NULL;
    assert_int_equal(0, kvc_delete(f->k[0], "a", 1, &d));
    assert_int_equal(d->deleted, 1);
    assert_int_equal(d->header->revision, r2 + 1);
    kvdb__delete_range_response__free_unpacked(d, NULL);
    assert_int_equal(0, ih_get(f->k[0], "a", false, NULL, 0));
    assert_int_equal(0, ih_get(f->k[0], "a", true, NULL, 0));

    /* Deleting nothing does not create a revision. */
    assert_int_equal(0, kvc_delete(f->k[0], "a", 1, &d));
    assert_int_equal(d->deleted, 0);
    assert_int_equal(d->header->revision, r2 + 1);
    kvdb__delete_range_response__free_unpacked(d, NULL);

    /* Recreated: a fresh create revision and version 1. */
    int64_t r4 = ih_put(f->k[0], "a", "3");
    assert_int_equal(0, range(f->k[0], "a", NULL, 0, 0, &g));
    assert_int_equal(g->kvs[0]->create_revision, r4);
    assert_int_equal(g->kvs[0]->version, 1);
    kvdb__range_response__free_unpacked(g, NULL);

    /* Status reports this member as its own leader, the store's revision and progress. */
    Kvdb__StatusResponse *st = NULL;
    assert_int_equal(0, ih_status(f->c.m[0].client_port, 2000, &st));
    assert_int_equal(st->leader, st->header->member_id);
    assert_int_equal(st->header->revision, r4);
    assert_true(st->raft_term >= 1);
    assert_true(st->raft_applied_index >= 4); /* at least the four writes */
    assert_true(st->raft_index >= st->raft_applied_index);
    assert_true(st->db_size > 0);
    assert_true(strlen(st->version) > 0);
    kvdb__status_response__free_unpacked(st, NULL);
}

/* Prefix ranges come back sorted by key; limit truncates with more=true and the full count. */
static void range_prefix_limit(void **state)
{
    struct ih_fix *f = *state;
    const char *keys[] = {"p/c", "p/a", "q/x", "p/b", "o/z"};
    for (size_t i = 0; i < 5; i++) {
        assert_true(ih_put(f->k[0], keys[i], keys[i]) > 0);
    }
    uint8_t end[8];
    size_t n = kvc_prefix_end("p/", 2, end);
    char endstr[8];
    memcpy(endstr, end, n);
    endstr[n] = '\0';
    assert_string_equal(endstr, "p0");

    Kvdb__RangeResponse *g = NULL;
    assert_int_equal(0, range(f->k[0], "p/", endstr, 0, 0, &g));
    assert_int_equal(g->n_kvs, 3);
    assert_int_equal(g->count, 3);
    assert_false(g->more);
    assert_kv(g->kvs[0], "p/a", "p/a");
    assert_kv(g->kvs[1], "p/b", "p/b");
    assert_kv(g->kvs[2], "p/c", "p/c");
    kvdb__range_response__free_unpacked(g, NULL);

    assert_int_equal(0, range(f->k[0], "p/", endstr, 0, 2, &g));
    assert_int_equal(g->n_kvs, 2);
    assert_int_equal(g->count, 3);
    assert_true(g->more);
    assert_kv(g->kvs[1], "p/b", NULL);
    kvdb__range_response__free_unpacked(g, NULL);

    /* range_end "\0": every key from "p/b" on. */
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)"p/b";
    r.key.len = 3;
    r.range_end.data = (uint8_t *)"";
    r.range_end.len = 1;
    r.keys_only = true;
    assert_int_equal(0, kvc_call(f->k[0], KVDB__METHOD__METHOD_RANGE, &r.base,
                                 &kvdb__range_response__descriptor, (ProtobufCMessage **)&g));
    assert_int_equal(g->n_kvs, 3);
    assert_kv(g->kvs[0], "p/b", "");
    assert_kv(g->kvs[2], "q/x", "");
    kvdb__range_response__free_unpacked(g, NULL);
}

/* Reads at a past revision see the value as of then; a future revision is OUT_OF_RANGE. */
static void revisions(void **state)
{
    struct ih_fix *f = *state;
    int64_t r1 = ih_put(f->k[0], "r", "v1");
    int64_t r2 = ih_put(f->k[0], "r", "v2");
    Kvdb__DeleteRangeResponse *d = NULL;
    assert_int_equal(0, kvc_delete(f->k[0], "r", 1, &d));
    int64_t r3 = d->header->revision;
    kvdb__delete_range_response__free_unpacked(d, NULL);
    assert_int_equal(r3, r2 + 1);

    Kvdb__RangeResponse *g = NULL;
    assert_int_equal(0, range(f->k[0], "r", NULL, r1, 0, &g));
    assert_int_equal(g->n_kvs, 1);
    assert_kv(g->kvs[0], "r", "v1");
    kvdb__range_response__free_unpacked(g, NULL);
    assert_int_equal(0, range(f->k[0], "r", NULL, r2, 0, &g));
    assert_kv(g->kvs[0], "r", "v2");
    kvdb__range_response__free_unpacked(g, NULL);
    assert_int_equal(0, range(f->k[0], "r", NULL, r3, 0, &g));
    assert_int_equal(g->n_kvs, 0);
    kvdb__range_response__free_unpacked(g, NULL);

    assert_int_equal(KVC_ESERVER, range(f->k[0], "r", NULL, r3 + 100, 0, &g));
    assert_int_equal(kvc_server_code(f->k[0]), KVDB__ERROR_CODE__OUT_OF_RANGE);
}

/* Compaction drops history below its revision: older reads and repeated or future compactions
 * are OUT_OF_RANGE, the compacted revision itself and newer stay readable. */
static void compaction_errors(void **state)
{
    struct ih_fix *f = *state;
    int64_t r1 = ih_put(f->k[0], "c", "v1");
    int64_t r2 = ih_put(f->k[0], "c", "v2");
    int64_t r3 = ih_put(f->k[0], "c", "v3");
    assert_true(r1 > 0 && r2 > r1 && r3 > r2);
    assert_int_equal(0, compact(f->k[0], r2));

    Kvdb__RangeResponse *g = NULL;
    assert_int_equal(KVC_ESERVER, range(f->k[0], "c", NULL, r1, 0, &g));
    assert_int_equal(kvc_server_code(f->k[0]), KVDB__ERROR_CODE__OUT_OF_RANGE);
    assert_int_equal(0, range(f->k[0], "c", NULL, r2, 0, &g));
    assert_kv(g->kvs[0], "c", "v2");
    kvdb__range_response__free_unpacked(g, NULL);
    assert_int_equal(0, range(f->k[0], "c", NULL, 0, 0, &g));
    assert_kv(g->kvs[0], "c", "v3");
    kvdb__range_response__free_unpacked(g, NULL);

    assert_int_equal(KVC_ESERVER, compact(f->k[0], r1));
    assert_int_equal(kvc_server_code(f->k[0]), KVDB__ERROR_CODE__OUT_OF_RANGE);
    assert_int_equal(KVC_ESERVER, compact(f->k[0], r3 + 100));
    assert_int_equal(kvc_server_code(f->k[0]), KVDB__ERROR_CODE__OUT_OF_RANGE);
    /* The member still takes writes after refusing. */
    assert_int_equal(ih_put(f->k[0], "c", "v4"), r3 + 1);
}

static Kvdb__RequestOp *put_op(Kvdb__RequestOp *op,
                               Kvdb__PutRequest *p,
                               const char *k,
                               const char *v)
{
    kvdb__request_op__init(op);
    kvdb__put_request__init(p);
    p->key.data = (uint8_t *)k;
    p->key.len = strlen(k);
    p->value.data = (uint8_t *)v;
    p->value.len = strlen(v);
    op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    return op;
}

/* A txn whose compare holds runs its success ops atomically (one revision); one whose compare
 * fails runs the failure ops. */
static void txn(void **state)
{
    struct ih_fix *f = *state;
    int64_t r0 = ih_put(f->k[0], "t", "old");
    Kvdb__Compare cmp;
    kvdb__compare__init(&cmp);
    Kvdb__Compare *cmps[] = {&cmp};
    cmp.result = KVDB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = KVDB__COMPARE__COMPARE_TARGET__VALUE;
    cmp.key.data = (uint8_t *)"t";
    cmp.key.len = 1;
    cmp.target_union_case = KVDB__COMPARE__TARGET_UNION_VALUE;
    cmp.value.data = (uint8_t *)"old";
    cmp.value.len = 3;
    Kvdb__RequestOp ops[3];
    Kvdb__PutRequest puts[2];
    Kvdb__RangeRequest rr;
    kvdb__range_request__init(&rr);
    rr.key.data = (uint8_t *)"t";
    rr.key.len = 1;
    Kvdb__RequestOp *succ[] = {put_op(&ops[0], &puts[0], "t", "new"),
                               put_op(&ops[1], &puts[1], "t2", "also")};
    kvdb__request_op__init(&ops[2]);
    ops[2].request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ops[2].request_range = &rr;
    Kvdb__RequestOp *fail[] = {&ops[2]};
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.compare = cmps;
    t.n_compare = 1;
    t.success = succ;
    t.n_success = 2;
    t.failure = fail;
    t.n_failure = 1;

    Kvdb__TxnResponse *resp = NULL;
    assert_int_equal(0, kvc_call(f->k[0], KVDB__METHOD__METHOD_TXN, &t.base,
                                 &kvdb__txn_response__descriptor, (ProtobufCMessage **)&resp));
    assert_true(resp->succeeded);
    assert_int_equal(resp->n_responses, 2);
    assert_int_equal(resp->header->revision, r0 + 1); /* both puts in one revision */
    kvdb__txn_response__free_unpacked(resp, NULL);
    char v[32];
    assert_int_equal(1, ih_get(f->k[0], "t", false, v, sizeof v));
    assert_string_equal(v, "new");
    assert_int_equal(1, ih_get(f->k[0], "t2", false, v, sizeof v));
    assert_string_equal(v, "also");

    /* Same txn again: "t" is no longer "old", so the failure branch reads it. */
    assert_int_equal(0, kvc_call(f->k[0], KVDB__METHOD__METHOD_TXN, &t.base,
                                 &kvdb__txn_response__descriptor, (ProtobufCMessage **)&resp));
    assert_false(resp->succeeded);
    assert_int_equal(resp->n_responses, 1);
    assert_int_equal(resp->responses[0]->response_case, KVDB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
    Kvdb__RangeResponse *g = resp->responses[0]->response_range;
    assert_int_equal(g->n_kvs, 1);
    assert_kv(g->kvs[0], "t", "new");
    assert_int_equal(resp->header->revision, r0 + 1); /* a read-only branch: no new revision */
    kvdb__txn_response__free_unpacked(resp, NULL);
}

/* Write @n keys "<prefix>NNNN" and check they all read back with their put revisions. */
static void write_keys(struct kvc *k, const char *prefix, int n, int64_t *revs)
{
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s%04d", prefix, i);
        revs[i] = ih_put(k, key, key);
        assert_true(revs[i] > 0);
    }
}

static void check_keys(struct kvc *k, const char *prefix, int n, const int64_t *revs)
{
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s%04d", prefix, i);
        Kvdb__RangeResponse *g = NULL;
        assert_int_equal(0, range(k, key, NULL, 0, 0, &g));
        assert_int_equal(g->n_kvs, 1);
        assert_kv(g->kvs[0], key, key);
        assert_int_equal(g->kvs[0]->mod_revision, revs[i]);
        kvdb__range_response__free_unpacked(g, NULL);
    }
}

/* Restart after @sig: the member recovers every acknowledged write with its revision. */
static void restart_after(struct ih_fix *f, int sig, const char *prefix)
{
    enum { N = 200 };
    int64_t revs[N];
    write_keys(f->k[0], prefix, N, revs);
    kvc_close(f->k[0]);
    f->k[0] = NULL;
    assert_int_equal(0, ih_member_stop(&f->c, 0, sig));
    assert_int_equal(0, ih_cluster_start(&f->c, 20000));
    f->k[0] = ih_client(&f->c, 0, 10000);
    assert_non_null(f->k[0]);
    check_keys(f->k[0], prefix, N, revs);
    /* New writes continue the revision sequence. */
    assert_int_equal(ih_put(f->k[0], "after", "x"), revs[N - 1] + 1);
}

static void restart_sigterm_keeps_writes(void **state)
{
    restart_after(*state, SIGTERM, "term/");
}

static void restart_sigint_keeps_writes(void **state)
{
    restart_after(*state, SIGINT, "int/");
}

/* kill -9 right after the last acknowledgement: nothing acknowledged may be lost; twice, so the
 * second recovery starts from a recovered state. */
static void restart_kill9_keeps_writes(void **state)
{
    restart_after(*state, SIGKILL, "kill1/");
    restart_after(*state, SIGKILL, "kill2/");
}

/* A second member on the same data dir is refused (the dir is locked) and the first keeps
 * serving. */
static void data_dir_locked(void **state)
{
    struct ih_fix *f = *state;
    struct ih_cluster twin = f->c;
    struct ih_member *m = &twin.m[0];
    m->pid = 0;
    snprintf(m->log, sizeof m->log, "%s/twin.log", f->c.root);
    char client[64], peer[64];
    snprintf(client, sizeof client, "http://127.0.0.1:%u", (unsigned)m->client_port + 1000u);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%u", (unsigned)m->peer_port + 1000u);
    const char *more[] = {"--listen-client-urls", client, "--listen-peer-urls", peer, NULL};
    assert_int_equal(0, ih_member_start_with(&twin, 0, more));
    uint64_t deadline = ih_now_ms() + 20000;
    while (ih_member_is_alive(&twin, 0) && ih_now_ms() < deadline) {
        ih_sleep_ms(20);
    }
    assert_int_equal(twin.m[0].pid, 0); /* it exited by itself */
    assert_true(WIFEXITED(twin.m[0].last_status));
    assert_int_not_equal(WEXITSTATUS(twin.m[0].last_status), 0);
    assert_true(ih_put(f->k[0], "still", "here") > 0);
    assert_true(ih_member_is_alive(&f->c, 0));
}

/* Prepend tag @tag and the varint length of [p, end) before p; returns the new start. */
static uint8_t *wrap(uint8_t *p, const uint8_t *end, uint8_t tag)
{
    size_t len = (size_t)(end - p);
    uint8_t v[10];
    size_t n = 0;
    do {
        v[n++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
        len >>= 7;
    } while (len > 0);
    p -= n;
    memcpy(p, v, n);
    *--p = tag;
    return p;
}

/* Regression (found here, fixed in 58e11f8): a TxnRequest nested 50,000 levels deep
 * (Txn.success[0] = RequestOp{request_txn = Txn{...}}, ~350 KB, under the default
 * --max-request-bytes) was unpacked by protobuf-c's recursive decoder on the loop thread and
 * overflowed its stack.  Now: a clear INVALID_ARGUMENT, the member alive. */
static void deeply_nested_txn_is_refused(void **state)
{
    struct ih_fix *f = *state;
    enum { DEPTH = 50000 };
    size_t cap = (size_t)DEPTH * 12 + 16;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    uint8_t *end = buf + cap;
    uint8_t *p = end; /* innermost: an empty TxnRequest */
    for (int i = 0; i < DEPTH; i++) {
        p = wrap(p, end, 0x22); /* RequestOp.request_txn (field 4) */
        p = wrap(p, end, 0x12); /* TxnRequest.success (field 2) */
    }
    int fd = ih_raw_dial(f->c.m[0].client_port);
    assert_true(fd >= 0);
    assert_int_equal(0, ih_raw_send(fd, 9, KVDB__METHOD__METHOD_TXN, p, (size_t)(end - p)));
    free(buf);
    Kvdb__Frame *r = NULL;
    int rv = ih_raw_recv(fd, 20000, &r);
    close(fd);
    bool alive = ih_member_is_alive(&f->c, 0);
    assert_true(alive);
    assert_int_equal(rv, 0);
    assert_int_equal(r->error, KVDB__ERROR_CODE__INVALID_ARGUMENT);
    kvdb__frame__free_unpacked(r, NULL);
}

/* Regression (found here, fixed in 58e11f8): the signal handler used the member after
 * srv_close() freed it, so a second SIGTERM during shutdown was a heap-use-after-free (ASan;
 * the report could then deadlock against LeakSanitizer's exit check and hang the member).
 * Any number of SIGTERMs must end in a clean exit 0. */
static void repeated_sigterm_during_shutdown(void **state)
{
    struct ih_fix *f = *state;
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        assert_true(ih_put(f->k[0], key, "v") > 0);
    }
    uint64_t deadline = ih_now_ms() + 20000;
    while (ih_member_is_alive(&f->c, 0) && ih_now_ms() < deadline) {
        ih_member_signal(&f->c, 0, SIGTERM); /* a zombie keeps its pid until is_alive reaps it */
        ih_sleep_ms(2);
    }
    assert_int_equal(f->c.m[0].pid, 0); /* it exited */
    assert_true(WIFEXITED(f->c.m[0].last_status));
    assert_int_equal(WEXITSTATUS(f->c.m[0].last_status), 0);
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(put_get_delete, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(range_prefix_limit, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(revisions, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(compaction_errors, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(txn, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(restart_sigterm_keeps_writes, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(restart_sigint_keeps_writes, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(restart_kill9_keeps_writes, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(data_dir_locked, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(deeply_nested_txn_is_refused, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(repeated_sigterm_during_shutdown, setup, ih_fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
