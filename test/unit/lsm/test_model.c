/* Model-based randomized test: random put/delete/range/txn/compact groups applied to the store
 * and to an in-memory model (model.c), every result, event, read and catch-up compared; with
 * close/reopen, "crash" (the store goes back to an older copy of its directory and the entries
 * since are replayed, giving the same results) and checkpoint -> open_from_tables in between.
 * Argument: number of groups (default 1000).  Seed: printed, KV_TEST_SEED replays. */
#include "test/lib/seed.h"
#include "test/unit/lsm/helpers.h"
#include "test/unit/lsm/model.h"

static uint64_t rng;

static uint64_t rnd(uint64_t n)
{
    return n ? test_rand(&rng) % n : 0;
}

/* Everything a generated group points to lives in its arena until the group is dropped. */
struct arena
{
    void **p;
    size_t n, cap;
};

static void *amalloc(struct arena *a, size_t size)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->p = realloc(a->p, a->cap * sizeof *a->p);
    }
    return a->p[a->n++] = calloc(1, size ? size : 1);
}

static void arena_free(struct arena *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->p[i]);
    }
    free(a->p);
    memset(a, 0, sizeof *a);
}

static struct lsm_bytes rkey(void)
{
    int k = (int)rnd(M_NKEYS);
    return (struct lsm_bytes){m_keys[k].b, m_keys[k].len};
}

static struct lsm_bytes rvalue(struct arena *a)
{
    size_t n = rnd(12);
    char *v = amalloc(a, n);
    for (size_t i = 0; i < n; i++) {
        v[i] = (char)('a' + rnd(3)); /* few letters: value compares and sorts tie */
    }
    return (struct lsm_bytes){v, n};
}

/* A range end: single key, from-key, or a key above. */
static struct lsm_bytes rend(void)
{
    uint64_t x = rnd(4);
    if (x == 0) {
        return (struct lsm_bytes){NULL, 0};
    }
    if (x == 1) {
        return (struct lsm_bytes){"\0", 1};
    }
    return rkey();
}

static int64_t rrev(const struct model *m)
{
    uint64_t x = rnd(7);
    if (x < 3) {
        return 0;
    }
    if (x == 6) {
        return -(int64_t)rnd(3); /* etcd: <= 0 is the current revision */
    }
    if (x == 3) {
        return m->rev + (int64_t)rnd(2); /* sometimes future */
    }
    int64_t lo = m->compact > 1 ? m->compact - 1 : 1; /* sometimes compacted */
    return m->rev >= lo ? lo + (int64_t)rnd((uint64_t)(m->rev - lo + 1)) : 0;
}

static void gen_range(const struct model *m, struct lsm_range_req *r)
{
    r->key = rnd(40) ? rkey() : (struct lsm_bytes){NULL, 0};
    r->range_end = rend();
    r->limit = rnd(3) ? 0 : (int64_t)rnd(4);
    r->revision = rrev(m);
    r->sort_order = (enum lsm_sort_order)rnd(4);
    r->sort_target = (enum lsm_sort_target)rnd(6);
    r->keys_only = rnd(4) == 0;
    r->count_only = rnd(8) == 0;
}

static void gen_op(const struct model *m, struct arena *a, struct lsm_op *op, int depth);

static void gen_put(struct arena *a, struct lsm_op *op)
{
    op->type = LSM_OP_PUT;
    struct lsm_put_req *p = &op->u.put;
    p->key = rnd(60) ? rkey() : (struct lsm_bytes){NULL, 0};
    p->lease = (int64_t)rnd(3);
    p->prev_kv = rnd(2);
    p->ignore_value = rnd(8) == 0;
    p->ignore_lease = rnd(8) == 0;
    if (p->ignore_lease && rnd(4)) {
        p->lease = 0;
    }
    p->value = p->ignore_value && rnd(4) ? (struct lsm_bytes){NULL, 0} : rvalue(a);
}

static void gen_txn(const struct model *m, struct arena *a, struct lsm_txn_req *t, int depth)
{
    t->n_compares = rnd(3);
    struct lsm_compare *c = amalloc(a, t->n_compares * sizeof *c);
    for (size_t i = 0; i < t->n_compares; i++) {
        c[i].result = (enum lsm_cmp_result)(1 + rnd(4));
        c[i].target = (enum lsm_cmp_target)(1 + rnd(5));
        c[i].key = rkey();
        c[i].range_end = rnd(4) ? (struct lsm_bytes){NULL, 0} : rend();
        c[i].number = (int64_t)rnd(4) + (rnd(2) ? m->rev - 2 : 0);
        c[i].value = rvalue(a);
    }
    t->compares = c;
    struct lsm_op *ops[2];
    size_t n[2];
    for (int b = 0; b < 2; b++) {
        n[b] = rnd(4);
        ops[b] = amalloc(a, n[b] * sizeof *ops[b]);
        for (size_t i = 0; i < n[b]; i++) {
            gen_op(m, a, &ops[b][i], depth + 1);
        }
    }
    t->success = ops[0];
    t->n_success = n[0];
    t->failure = ops[1];
    t->n_failure = n[1];
}

static void gen_op(const struct model *m, struct arena *a, struct lsm_op *op, int depth)
{
    uint64_t x = rnd(depth < 2 ? 10 : 8);
    if (x < 4) {
        gen_put(a, op);
    } else if (x < 6) {
        op->type = LSM_OP_DELETE_RANGE;
        op->u.del.key = rkey();
        op->u.del.range_end = rnd(3) ? (struct lsm_bytes){NULL, 0} : rend();
        op->u.del.prev_kv = rnd(2);
    } else if (x < 8) {
        op->type = LSM_OP_RANGE;
        gen_range(m, &op->u.range);
    } else {
        op->type = LSM_OP_TXN;
        gen_txn(m, a, &op->u.txn, depth);
    }
}

static void gen_top(const struct model *m, struct arena *a, struct lsm_op *op)
{
    uint64_t x = rnd(40);
    if (x == 0) {
        op->type = LSM_OP_NOOP;
    } else if (x < 3) {
        op->type = LSM_OP_COMPACT;
        int64_t lo = m->compact > 0 ? m->compact : 0;
        op->u.compact.revision = lo + (int64_t)rnd((uint64_t)(m->rev - lo + 2));
    } else {
        gen_op(m, a, op, 0);
    }
}

/* ---- comparing ---- */

static void cmp_kv(const struct lsm_kv *g, const struct lsm_kv *w)
{
    assert_int_equal(g->key_len, w->key_len);
    assert_memory_equal(g->key, w->key, g->key_len);
    assert_int_equal(g->value == NULL, w->value == NULL);
    assert_int_equal(g->value_len, w->value_len);
    if (g->value_len) {
        assert_memory_equal(g->value, w->value, g->value_len);
    }
    assert_int_equal(g->create_revision, w->create_revision);
    assert_int_equal(g->mod_revision, w->mod_revision);
    assert_int_equal(g->version, w->version);
    assert_int_equal(g->lease, w->lease);
}

static void cmp_result(const struct lsm_result *g, const struct lsm_result *w)
{
    assert_int_equal(g->type, w->type);
    assert_int_equal(g->err, w->err);
    assert_int_equal(g->revision, w->revision);
    if (g->err != 0) {
        return;
    }
    switch (g->type) {
    case LSM_OP_RANGE:
        assert_int_equal(g->u.range.count, w->u.range.count);
        assert_int_equal(g->u.range.more, w->u.range.more);
        assert_int_equal(g->u.range.n_kvs, w->u.range.n_kvs);
        for (size_t i = 0; i < g->u.range.n_kvs; i++) {
            cmp_kv(&g->u.range.kvs[i], &w->u.range.kvs[i]);
        }
        break;
    case LSM_OP_PUT:
        assert_int_equal(g->u.put.has_prev, w->u.put.has_prev);
        if (g->u.put.has_prev) {
            cmp_kv(&g->u.put.prev_kv, &w->u.put.prev_kv);
        }
        break;
    case LSM_OP_DELETE_RANGE:
        assert_int_equal(g->u.del.deleted, w->u.del.deleted);
        assert_int_equal(g->u.del.n_prev_kvs, w->u.del.n_prev_kvs);
        for (size_t i = 0; i < g->u.del.n_prev_kvs; i++) {
            cmp_kv(&g->u.del.prev_kvs[i], &w->u.del.prev_kvs[i]);
        }
        break;
    case LSM_OP_TXN:
        assert_int_equal(g->u.txn.succeeded, w->u.txn.succeeded);
        assert_int_equal(g->u.txn.n_responses, w->u.txn.n_responses);
        for (size_t i = 0; i < g->u.txn.n_responses; i++) {
            cmp_result(&g->u.txn.responses[i], &w->u.txn.responses[i]);
        }
        break;
    default:
        break;
    }
}

static void cmp_mver(const struct lsm_kv *g, int key, const struct mver *v, bool del)
{
    assert_int_equal(g->key_len, m_keys[key].len);
    assert_memory_equal(g->key, m_keys[key].b, g->key_len);
    assert_int_equal(g->mod_revision, v->rev);
    if (del) {
        return;
    }
    assert_int_equal(g->value_len, v->vlen);
    if (v->vlen) {
        assert_memory_equal(g->value, v->val, v->vlen);
    }
    assert_int_equal(g->create_revision, v->create);
    assert_int_equal(g->version, v->version);
    assert_int_equal(g->lease, v->lease);
}

/* @check_prev: prev kvs are only guaranteed while compaction cannot have removed them. */
static void cmp_event(const struct lsm_event *g, const struct mevent *w, bool check_prev)
{
    assert_int_equal(g->type, w->type);
    cmp_mver(&g->kv, w->key, &w->kv, w->type == LSM_EVENT_DELETE);
    if (check_prev) {
        assert_int_equal(g->has_prev, w->has_prev);
        if (g->has_prev) {
            cmp_mver(&g->prev_kv, w->key, &w->prev, false);
        }
    }
}

/* ---- the run ---- */

struct group
{
    struct arena a;
    struct lsm_entry *e;
    size_t n;
    struct lsm_apply_out out;
};

struct run
{
    struct fx *f;
    struct model m;
    struct group *log; /* groups applied since the saved copy */
    size_t n_log, cap_log;
    bool have_save;
    char save[160];
};

static void log_clear(struct run *r)
{
    for (size_t i = 0; i < r->n_log; i++) {
        arena_free(&r->log[i].a);
        lsm_apply_out_fini(&r->log[i].out);
    }
    r->n_log = 0;
}

static void step_group(struct run *r)
{
    if (r->n_log == r->cap_log) {
        r->cap_log = r->cap_log ? 2 * r->cap_log : 16;
        r->log = realloc(r->log, r->cap_log * sizeof *r->log);
    }
    struct group *g = &r->log[r->n_log++];
    memset(g, 0, sizeof *g);
    g->n = 1 + rnd(6);
    g->e = amalloc(&g->a, g->n * sizeof *g->e);
    size_t first_ev = r->m.n_ev;
    struct lsm_result *want = calloc(g->n, sizeof *want);
    for (size_t i = 0; i < g->n; i++) {
        struct lsm_op *op = amalloc(&g->a, sizeof *op);
        gen_top(&r->m, &g->a, op);
        g->e[i] =
            (struct lsm_entry){.index = ++r->f->index, .term = 1 + r->f->index / 50, .req = op};
        m_apply(&r->m, op, &want[i]);
    }
    assert_int_equal(lsm_apply(r->f->s, g->e, g->n, &g->out), 0);
    for (size_t i = 0; i < g->n; i++) {
        cmp_result(&g->out.results[i], &want[i]);
        lsm_result_fini(&want[i]);
    }
    free(want);
    assert_int_equal(g->out.n_events, r->m.n_ev - first_ev);
    for (size_t i = 0; i < g->out.n_events; i++) {
        cmp_event(&g->out.events[i], &r->m.ev[first_ev + i], true);
    }
    assert_int_equal(g->out.revision, r->m.rev);
}

static void step_read(struct run *r)
{
    struct lsm_range_req q;
    memset(&q, 0, sizeof q);
    gen_range(&r->m, &q);
    struct lsm_result g, w;
    char err[256];
    int rv = lsm_range(r->f->s, &q, &g, err);
    m_range(&r->m, &q, &w);
    assert_int_equal(rv, w.err);
    cmp_result(&g, &w);
    lsm_result_fini(&g);
    lsm_result_fini(&w);
}

static int bytes_cmp(const uint8_t *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al < bl ? -1 : al > bl);
}

/* etcd range membership of table key @k. */
static bool in_span(int k, struct lsm_bytes key, struct lsm_bytes end)
{
    const struct mkey *a = &m_keys[k];
    int lo = bytes_cmp(a->b, a->len, key.data, key.len);
    if (end.len == 0) {
        return lo == 0;
    }
    if (end.len == 1 && ((const uint8_t *)end.data)[0] == 0) {
        return lo >= 0;
    }
    return lo >= 0 && bytes_cmp(a->b, a->len, end.data, end.len) < 0;
}

static void step_catchup(struct run *r)
{
    struct lsm_bytes key = rkey(), end = rend();
    int64_t start = r->m.compact + (int64_t)rnd((uint64_t)(r->m.rev - r->m.compact + 2));
    if (rnd(10) == 0 && r->m.compact > 1) {
        start = r->m.compact - 1;
    }
    struct lsm_event *ev;
    size_t n;
    int64_t next;
    char err[256];
    int rv = lsm_events_read(r->f->s, key, end, start, 0, &ev, &n, &next, err);
    if (start < r->m.compact) {
        assert_int_equal(rv, LSM_ECOMPACTED);
        return;
    }
    if (rv != 0) {
        fprintf(stderr, "events from %lld: %s\n", (long long)start, err);
    }
    assert_int_equal(rv, 0);
    size_t j = 0;
    for (size_t i = 0; i < r->m.n_ev; i++) {
        const struct mevent *e = &r->m.ev[i];
        if (e->kv.rev < start || !in_span(e->key, key, end)) {
            continue;
        }
        assert_true(j < n);
        cmp_event(&ev[j++], e, e->kv.rev > r->m.compact);
    }
    assert_int_equal(j, n);
    assert_int_equal(next, r->m.rev + 1);
    lsm_events_free(ev, n);
}

static void copy_dir(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
    assert_int_equal(system(cmd), 0);
}

/* Close, keep a copy of the directory (a state LevelDB may come back to after a crash that
 * loses unsynced writes), reopen. */
static void step_save(struct run *r)
{
    lsm_close(r->f->s);
    snprintf(r->save, sizeof r->save, "%s/save", r->f->dir);
    copy_dir(r->f->db, r->save);
    r->have_save = true;
    log_clear(r);
    fx_open(r->f);
}

/* Go back to the saved copy and replay every group since: same results, same events. */
static void step_crash(struct run *r)
{
    uint64_t index = r->f->index;
    lsm_close(r->f->s);
    copy_dir(r->save, r->f->db);
    fx_open(r->f);
    for (size_t i = 0; i < r->n_log; i++) {
        struct group *g = &r->log[i];
        struct lsm_apply_out out;
        assert_int_equal(lsm_apply(r->f->s, g->e, g->n, &out), 0);
        for (size_t j = 0; j < g->n; j++) {
            cmp_result(&out.results[j], &g->out.results[j]);
        }
        assert_int_equal(out.n_events, g->out.n_events);
        lsm_apply_out_fini(&out);
    }
    if (r->n_log > 0) {
        /* Once more: everything is at or below the applied index now. */
        struct group *g = &r->log[r->n_log - 1];
        struct lsm_apply_out out;
        assert_int_equal(lsm_apply(r->f->s, g->e, g->n, &out), 0);
        assert_true(out.results[g->n - 1].skipped);
        assert_int_equal(out.n_events, 0);
        lsm_apply_out_fini(&out);
    }
    r->f->index = index;
    struct lsm_status st;
    lsm_status_get(r->f->s, &st);
    assert_int_equal(st.applied_index, index);
    assert_int_equal(st.revision, r->m.rev);
}

/* Checkpoint, build a store from its tables, compare hashes, and continue on the new store. */
static void step_checkpoint(struct run *r)
{
    static int seq;
    char cp[160], db[160], err[256];
    snprintf(cp, sizeof cp, "%s/cp%d", r->f->dir, seq);
    snprintf(db, sizeof db, "%s/db%d", r->f->dir, seq++);
    struct lsm_status st;
    assert_int_equal(lsm_checkpoint(r->f->s, cp, &st), 0);
    assert_int_equal(st.applied_index, r->f->index);
    uint32_t h1, h2;
    int64_t hr1, hr2, c1, c2;
    assert_int_equal(lsm_hash_kv(r->f->s, 0, &h1, &hr1, &c1, err), 0);
    struct lsm_store *s2;
    assert_int_equal(lsm_open_from_tables(cp, db, NULL, &s2, err), 0);
    struct lsm_status st2;
    lsm_status_get(s2, &st2);
    assert_int_equal(st2.applied_index, r->f->index);
    assert_int_equal(st2.revision, r->m.rev);
    assert_int_equal(st2.compact_revision, r->m.compact);
    assert_int_equal(lsm_hash_kv(s2, 0, &h2, &hr2, &c2, err), 0);
    assert_int_equal(h1, h2);
    assert_int_equal(hr1, hr2);
    lsm_close(r->f->s);
    r->f->s = s2;
    rm_rf(r->f->db);
    rm_rf(cp);
    assert_int_equal(rename(db, r->f->db), 0);
    /* The directory moved under the open store; reopen it at its final path. */
    lsm_close(r->f->s);
    fx_open(r->f);
    r->have_save = false;
    log_clear(r);
}

static void model_run(void **state)
{
    size_t groups = *(size_t *)*state;
    rng = test_seed("lsm_model");
    m_keys_init();
    struct run r;
    memset(&r, 0, sizeof r);
    r.f = fx_new();
    m_init(&r.m);
    step_save(&r);
    for (size_t i = 0; i < groups; i++) {
        step_group(&r);
        uint64_t x = rnd(100);
        if (x < 30) {
            step_read(&r);
        } else if (x < 40) {
            step_catchup(&r);
        } else if (x < 42) {
            step_save(&r);
        } else if (x < 44 && r.have_save) {
            step_crash(&r);
        } else if (x < 45) {
            lsm_close(r.f->s);
            fx_open(r.f);
        } else if (x < 46) {
            step_checkpoint(&r);
        }
    }
    uint32_t h;
    int64_t hr, cr;
    char err[256];
    assert_int_equal(lsm_hash_kv(r.f->s, 0, &h, &hr, &cr, err), 0);
    lsm_close(r.f->s);
    fx_open(r.f);
    uint32_t h2;
    assert_int_equal(lsm_hash_kv(r.f->s, 0, &h2, &hr, &cr, err), 0);
    assert_int_equal(h, h2);
    log_clear(&r);
    free(r.log);
    m_fini(&r.m);
    fx_free(r.f);
}

int main(int argc, char **argv)
{
    static size_t groups = 1000;
    if (argc > 1) {
        groups = (size_t)strtoull(argv[1], NULL, 10);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(model_run, &groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
