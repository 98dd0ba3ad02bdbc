/* Per-operation tests with etcd v3 semantics: put, range, delete, txn, compact, events. */
#include "test/unit/lsm/helpers.h"

/* Put assigns revisions; version counts puts within a generation; create_revision stays. */
static void put_assigns_revisions(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    assert_int_equal(fx_put(f, "a", "1"), 0);
    assert_int_equal(fx_put(f, "b", "2"), 0);
    struct lsm_op op = op_put("a", "3");
    op.u.put.prev_kv = true;
    op.u.put.lease = 7;
    struct lsm_result r;
    fx_apply(f, &op, &r);
    assert_int_equal(r.revision, 3);
    assert_true(r.u.put.has_prev);
    assert_kv(&r.u.put.prev_kv, "a", "1", 1, 1, 1);
    lsm_result_fini(&r);

    struct lsm_range_req q = {.key = B("a")};
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.revision, 3);
    assert_int_equal(r.u.range.n_kvs, 1);
    assert_kv(&r.u.range.kvs[0], "a", "3", 1, 3, 2);
    assert_int_equal(r.u.range.kvs[0].lease, 7);
    lsm_result_fini(&r);

    /* ignore_value / ignore_lease keep the current ones; on a missing key: not found. */
    op = op_put("a", NULL);
    op.u.put.ignore_value = true;
    op.u.put.ignore_lease = true;
    fx_apply(f, &op, &r);
    assert_int_equal(r.err, 0);
    lsm_result_fini(&r);
    fx_range(f, &q, 0, &r);
    assert_kv(&r.u.range.kvs[0], "a", "3", 1, 4, 3);
    assert_int_equal(r.u.range.kvs[0].lease, 7);
    lsm_result_fini(&r);
    op = op_put("zz", NULL);
    op.u.put.ignore_value = true;
    fx_apply(f, &op, &r);
    assert_int_equal(r.err, LSM_EKEYNOTFOUND);
    assert_int_equal(r.revision, 4);
    lsm_result_fini(&r);
    op = op_put("a", "x");
    op.u.put.ignore_value = true;
    fx_apply(f, &op, &r);
    assert_int_equal(r.err, LSM_EVALUEPROVIDED);
    lsm_result_fini(&r);
    assert_int_equal(fx_put(f, "", "x"), LSM_EEMPTYKEY);
    fx_free(f);
}

/* Range: single key, [key, end), prefix, from-key; limit/more/count; keys/count only; sort. */
static void range_forms(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    const char *keys[] = {"a", "b", "b1", "b2", "c", "d"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(fx_put(f, keys[i], keys[5 - i]), 0);
    }
    assert_int_equal(fx_put(f, "b1", "again"), 0);
    struct lsm_result r;
    struct lsm_range_req q = {.key = B("b"), .range_end = B("c")};
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 3);
    assert_int_equal(r.u.range.count, 3);
    assert_false(r.u.range.more);
    assert_kv(&r.u.range.kvs[1], "b1", "again", 3, 7, 2);
    lsm_result_fini(&r);

    q.limit = 2;
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 2);
    assert_int_equal(r.u.range.count, 3);
    assert_true(r.u.range.more);
    lsm_result_fini(&r);

    struct lsm_range_req all = {.key = {"\0", 1}, .range_end = {"\0", 1}, .keys_only = true};
    fx_range(f, &all, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 6);
    assert_null(r.u.range.kvs[0].value);
    lsm_result_fini(&r);

    struct lsm_range_req from = {.key = B("c"), .range_end = {"\0", 1}, .count_only = true};
    fx_range(f, &from, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 0);
    assert_int_equal(r.u.range.count, 2);
    lsm_result_fini(&r);

    /* Sort by mod revision descending, limit 2: b1 (rev 7), then d (rev 6). */
    struct lsm_range_req s = {.key = B("a"),
                              .range_end = B("z"),
                              .limit = 2,
                              .sort_order = LSM_SORT_DESCEND,
                              .sort_target = LSM_SORT_MOD};
    fx_range(f, &s, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 2);
    assert_kv(&r.u.range.kvs[0], "b1", NULL, 3, 7, 2);
    assert_kv(&r.u.range.kvs[1], "d", NULL, 6, 6, 1);
    assert_true(r.u.range.more);
    lsm_result_fini(&r);

    /* Value target with no order sorts ascending (etcd). */
    s.sort_order = 0;
    s.sort_target = LSM_SORT_VALUE;
    s.limit = 0;
    fx_range(f, &s, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 6);
    assert_kv(&r.u.range.kvs[0], "d", "a", 6, 6, 1);
    assert_kv(&r.u.range.kvs[1], "b1", "again", 3, 7, 2);
    lsm_result_fini(&r);

    struct lsm_range_req none = {.key = B("x")};
    fx_range(f, &none, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 0);
    assert_int_equal(r.u.range.count, 0);
    lsm_result_fini(&r);
    struct lsm_range_req empty = {.key = B("")};
    fx_range(f, &empty, LSM_EEMPTYKEY, &r);
    lsm_result_fini(&r);
    fx_free(f);
}

/* Delete writes tombstones; a later put starts a new generation; past reads see old state. */
static void delete_and_history(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fx_put(f, "k1", "a"); /* 1 */
    fx_put(f, "k2", "b"); /* 2 */
    fx_put(f, "k3", "c"); /* 3 */
    struct lsm_op d = op_del("k1", "k3");
    d.u.del.prev_kv = true;
    struct lsm_result r;
    fx_apply(f, &d, &r);
    assert_int_equal(r.revision, 4);
    assert_int_equal(r.u.del.deleted, 2);
    assert_int_equal(r.u.del.n_prev_kvs, 2);
    assert_kv(&r.u.del.prev_kvs[1], "k2", "b", 2, 2, 1);
    lsm_result_fini(&r);
    /* Deleting nothing does not bump the revision. */
    d = op_del("nothing", NULL);
    fx_apply(f, &d, &r);
    assert_int_equal(r.u.del.deleted, 0);
    assert_int_equal(r.revision, 4);
    lsm_result_fini(&r);
    fx_put(f, "k1", "new"); /* 5 */

    struct lsm_range_req q = {.key = B("k"), .range_end = B("l")};
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 2);
    assert_kv(&r.u.range.kvs[0], "k1", "new", 5, 5, 1);
    lsm_result_fini(&r);
    for (int64_t rev = 1; rev <= 5; rev++) {
        static const size_t want[] = {0, 1, 2, 3, 1, 2};
        q.revision = rev;
        fx_range(f, &q, 0, &r);
        assert_int_equal(r.u.range.n_kvs, want[rev]);
        assert_int_equal(r.revision, 5);
        lsm_result_fini(&r);
    }
    q.revision = 3;
    fx_range(f, &q, 0, &r);
    assert_kv(&r.u.range.kvs[0], "k1", "a", 1, 1, 1);
    lsm_result_fini(&r);
    q.revision = 6;
    fx_range(f, &q, LSM_EFUTUREREV, &r);
    lsm_result_fini(&r);
    fx_free(f);
}

/* Txn: compares on value/version/create/mod/lease, then/else, one revision, nested txn. */
static void txn_semantics(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fx_put(f, "x", "1"); /* 1 */
    struct lsm_compare cmps[2] = {
        {.result = LSM_CMP_EQUAL, .target = LSM_CMP_VALUE, .key = B("x"), .value = B("1")},
        {.result = LSM_CMP_LESS, .target = LSM_CMP_VERSION, .key = B("x"), .number = 2},
    };
    struct lsm_op inner_ops[1] = {op_put("n", "nested")};
    struct lsm_op then[4] = {
        op_put("x", "2"), op_put("y", "2"), op_range("x", NULL), {.type = LSM_OP_TXN}};
    then[3].u.txn.success = inner_ops;
    then[3].u.txn.n_success = 1;
    struct lsm_op els[1] = {op_range("x", NULL)};
    struct lsm_op t = {.type = LSM_OP_TXN};
    t.u.txn = (struct lsm_txn_req){cmps, 2, then, 4, els, 1};
    struct lsm_result r;
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, 0);
    assert_true(r.u.txn.succeeded);
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.u.txn.n_responses, 4);
    /* The range inside sees the txn's own put. */
    assert_kv(&r.u.txn.responses[2].u.range.kvs[0], "x", "2", 1, 2, 2);
    assert_true(r.u.txn.responses[3].u.txn.succeeded);
    lsm_result_fini(&r);
    struct lsm_range_req q = {.key = B("n")};
    fx_range(f, &q, 0, &r);
    assert_kv(&r.u.range.kvs[0], "n", "nested", 2, 2, 1);
    lsm_result_fini(&r);

    /* Same txn again: the value compare fails -> else branch, read only, no new revision. */
    fx_apply(f, &t, &r);
    assert_false(r.u.txn.succeeded);
    assert_int_equal(r.revision, 2);
    assert_kv(&r.u.txn.responses[0].u.range.kvs[0], "x", "2", 1, 2, 2);
    lsm_result_fini(&r);

    /* Compare on a missing key: value fails, create_revision == 0 holds. */
    struct lsm_compare miss = {
        .result = LSM_CMP_EQUAL, .target = LSM_CMP_CREATE, .key = B("nope"), .number = 0};
    t.u.txn = (struct lsm_txn_req){&miss, 1, NULL, 0, NULL, 0};
    fx_apply(f, &t, &r);
    assert_true(r.u.txn.succeeded);
    lsm_result_fini(&r);
    miss.target = LSM_CMP_VALUE;
    fx_apply(f, &t, &r);
    assert_false(r.u.txn.succeeded);
    lsm_result_fini(&r);

    /* Duplicate keys: two puts, or a put inside a delete range. */
    struct lsm_op dup[2] = {op_put("a", "1"), op_put("a", "2")};
    t.u.txn = (struct lsm_txn_req){NULL, 0, dup, 2, NULL, 0};
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, LSM_EDUPKEY);
    lsm_result_fini(&r);
    dup[1] = op_del("a", "b");
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, LSM_EDUPKEY);
    lsm_result_fini(&r);
    /* Then and else of a nested txn may share a key. */
    struct lsm_op nested = {.type = LSM_OP_TXN};
    nested.u.txn = (struct lsm_txn_req){NULL, 0, dup, 1, dup, 1};
    t.u.txn = (struct lsm_txn_req){NULL, 0, &nested, 1, NULL, 0};
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 3);
    lsm_result_fini(&r);
    /* A range at a future revision inside the taken branch fails the whole txn. */
    struct lsm_op fut[2] = {op_put("q", "1"), op_range("q", NULL)};
    fut[1].u.range.revision = 4;
    t.u.txn = (struct lsm_txn_req){NULL, 0, fut, 2, NULL, 0};
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, LSM_EFUTUREREV);
    assert_int_equal(r.revision, 3);
    lsm_result_fini(&r);
    fx_free(f);
}

/* Compaction: reads below fail, at and above still work; history is physically dropped. */
static void compaction(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    for (int i = 0; i < 10; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        fx_put(f, "k", v); /* revs 1..10 */
    }
    struct lsm_op d = op_del("k", NULL); /* 11 */
    struct lsm_result r;
    fx_apply(f, &d, &r);
    lsm_result_fini(&r);
    fx_put(f, "k", "again"); /* 12 */
    struct lsm_op c = {.type = LSM_OP_COMPACT, .u.compact.revision = 5};
    fx_apply(f, &c, &r);
    assert_int_equal(r.err, 0);
    lsm_result_fini(&r);
    assert_int_equal(lsm_compact_wait(f->s, 5), 0);
    fx_apply(f, &c, &r);
    assert_int_equal(r.err, LSM_ECOMPACTED);
    lsm_result_fini(&r);
    c.u.compact.revision = 13;
    fx_apply(f, &c, &r);
    assert_int_equal(r.err, LSM_EFUTUREREV);
    lsm_result_fini(&r);

    struct lsm_range_req q = {.key = B("k"), .revision = 4};
    fx_range(f, &q, LSM_ECOMPACTED, &r);
    lsm_result_fini(&r);
    q.revision = 5;
    fx_range(f, &q, 0, &r);
    assert_kv(&r.u.range.kvs[0], "k", "4", 1, 5, 5);
    lsm_result_fini(&r);
    q.revision = 11;
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 0);
    lsm_result_fini(&r);

    /* Compacting past the tombstone drops the old generation completely. */
    c.u.compact.revision = 11;
    fx_apply(f, &c, &r);
    lsm_result_fini(&r);
    assert_int_equal(lsm_compact_wait(f->s, 11), 0);
    /* Reads use the view published by the last apply: a no-op entry publishes a fresh one. */
    struct lsm_op noop = {.type = LSM_OP_NOOP};
    fx_apply(f, &noop, &r);
    lsm_result_fini(&r);
    struct lsm_event *ev;
    size_t n;
    int64_t next;
    char err[256];
    assert_int_equal(lsm_events_read(f->s, B("k"), B(NULL), 10, 0, &ev, &n, &next, err),
                     LSM_ECOMPACTED);
    assert_int_equal(lsm_events_read(f->s, B("k"), B(NULL), 11, 0, &ev, &n, &next, err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].type, LSM_EVENT_DELETE);
    assert_false(ev[0].has_prev); /* its previous version was compacted away */
    assert_int_equal(ev[1].type, LSM_EVENT_PUT);
    assert_kv(&ev[1].kv, "k", "again", 12, 12, 1);
    assert_false(ev[1].has_prev);
    assert_int_equal(next, 13);
    lsm_events_free(ev, n);
    q.revision = 11;
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 0);
    lsm_result_fini(&r);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    assert_int_equal(st.compact_revision, 11);
    assert_int_equal(st.compacted_through, 11);
    fx_free(f);
}

/* Apply returns the events; catch-up from history returns the same ones. */
static void events_feed(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct lsm_op ops[3] = {op_put("a", "1"), op_put("b", "1"), op_put("a", "2")};
    struct lsm_op d = op_del("a", "c");
    struct lsm_entry e[4] = {{.index = 1, .term = 1, .req = &ops[0]},
                             {.index = 2, .term = 1, .req = &ops[1]},
                             {.index = 3, .term = 1, .req = &ops[2]},
                             {.index = 4, .term = 1, .req = &d}};
    struct lsm_apply_out out;
    assert_int_equal(lsm_apply(f->s, e, 4, &out), 0);
    assert_int_equal(out.n_events, 5);
    assert_int_equal(out.revision, 4);
    assert_int_equal(out.events[2].type, LSM_EVENT_PUT);
    assert_true(out.events[2].has_prev);
    assert_kv(&out.events[2].prev_kv, "a", "1", 1, 1, 1);
    assert_int_equal(out.events[3].type, LSM_EVENT_DELETE);
    assert_kv(&out.events[3].kv, "a", NULL, 0, 4, 0);
    assert_kv(&out.events[4].prev_kv, "b", "1", 2, 2, 1);

    struct lsm_event *ev;
    size_t n;
    int64_t next;
    char err[256];
    assert_int_equal(lsm_events_read(f->s, B("a"), B("c"), 1, 0, &ev, &n, &next, err), 0);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ev[i].type, out.events[i].type);
        assert_int_equal(ev[i].kv.mod_revision, out.events[i].kv.mod_revision);
        assert_int_equal(ev[i].has_prev, out.events[i].has_prev);
        assert_int_equal(ev[i].prev_kv.version, out.events[i].prev_kv.version);
    }
    lsm_events_free(ev, n);
    /* Only key b, from revision 3; then a bounded read stops at a revision boundary. */
    assert_int_equal(lsm_events_read(f->s, B("b"), B(NULL), 3, 0, &ev, &n, &next, err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].kv.mod_revision, 4);
    lsm_events_free(ev, n);
    assert_int_equal(lsm_events_read(f->s, B("a"), B("c"), 1, 3, &ev, &n, &next, err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(next, 4);
    lsm_events_free(ev, n);
    lsm_apply_out_fini(&out);

    /* Replaying the same entries is a no-op. */
    assert_int_equal(lsm_apply(f->s, e, 4, &out), 0);
    assert_true(out.results[3].skipped);
    assert_int_equal(out.n_events, 0);
    assert_int_equal(out.revision, 4);
    lsm_apply_out_fini(&out);
    fx_free(f);
}

/* etcd accepts a put in one nested txn and a delete range over that key in a later one: both
 * changes share the revision (sub-revisions 0 and 1); the key ends deleted and both events can
 * be caught up from history. */
static void txn_put_then_delete_same_key(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fx_put(f, "k", "old"); /* 1 */
    struct lsm_op put1 = op_put("k", "new");
    struct lsm_op del2 = op_del("a", "z");
    struct lsm_op nested[2] = {{.type = LSM_OP_TXN}, {.type = LSM_OP_TXN}};
    nested[0].u.txn = (struct lsm_txn_req){NULL, 0, &put1, 1, NULL, 0};
    nested[1].u.txn = (struct lsm_txn_req){NULL, 0, &del2, 1, NULL, 0};
    struct lsm_op t = {.type = LSM_OP_TXN};
    t.u.txn = (struct lsm_txn_req){NULL, 0, nested, 2, NULL, 0};
    struct lsm_result r;
    fx_apply(f, &t, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.u.txn.responses[1].u.txn.responses[0].u.del.deleted, 1);
    lsm_result_fini(&r);
    struct lsm_range_req q = {.key = B("k")};
    fx_range(f, &q, 0, &r);
    assert_int_equal(r.u.range.n_kvs, 0);
    lsm_result_fini(&r);
    struct lsm_event *ev;
    size_t n;
    int64_t next;
    char err[256];
    assert_int_equal(lsm_events_read(f->s, B("k"), B(NULL), 2, 0, &ev, &n, &next, err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].type, LSM_EVENT_PUT);
    assert_kv(&ev[0].kv, "k", "new", 1, 2, 2);
    assert_kv(&ev[0].prev_kv, "k", "old", 1, 1, 1);
    assert_int_equal(ev[1].type, LSM_EVENT_DELETE);
    assert_int_equal(ev[1].kv.mod_revision, 2);
    assert_true(ev[1].has_prev);
    assert_kv(&ev[1].prev_kv, "k", "new", 1, 2, 2);
    lsm_events_free(ev, n);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_assigns_revisions),
        cmocka_unit_test(range_forms),
        cmocka_unit_test(delete_and_history),
        cmocka_unit_test(txn_semantics),
        cmocka_unit_test(compaction),
        cmocka_unit_test(events_feed),
        cmocka_unit_test(txn_put_then_delete_same_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
