/* Executing requests inside an apply group: Put, DeleteRange, Range and Txn with etcd's
 * validation (v3rpc checks), compares (applyCompare) and path rules (compareToPath). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/actx.h"

/* ---- validation: etcd v3rpc checkRequests / checkIntervals ---- */

struct klist
{
    struct lsm_span *v;
    size_t n, cap;
};

static int klist_add(struct klist *l, const struct lsm_span *sp)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct lsm_span *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            return LSM_ENOMEM;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *sp;
    return 0;
}

static bool klist_hits(const struct klist *l, const uint8_t *k, size_t klen)
{
    for (size_t i = 0; i < l->n; i++) {
        if (lsm_span_has(&l->v[i], k, klen)) {
            return true;
        }
    }
    return false;
}

static int check_op(const struct lsm_op *op, size_t max_ops);

static int check_ops(const struct lsm_op *ops, size_t n, size_t max_ops)
{
    if (n > max_ops) {
        return LSM_ETOOMANYOPS;
    }
    for (size_t i = 0; i < n; i++) {
        int rv = check_op(&ops[i], max_ops);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int check_op(const struct lsm_op *op, size_t max_ops)
{
    switch (op->type) {
    case LSM_OP_RANGE:
        return op->u.range.key.len == 0 ? LSM_EEMPTYKEY : 0;
    case LSM_OP_PUT:
        if (op->u.put.key.len == 0) {
            return LSM_EEMPTYKEY;
        }
        if (op->u.put.ignore_value && op->u.put.value.len != 0) {
            return LSM_EVALUEPROVIDED;
        }
        if (op->u.put.ignore_lease && op->u.put.lease != 0) {
            return LSM_ELEASEPROVIDED;
        }
        return 0;
    case LSM_OP_DELETE_RANGE:
        return op->u.del.key.len == 0 ? LSM_EEMPTYKEY : 0;
    case LSM_OP_TXN: {
        const struct lsm_txn_req *t = &op->u.txn;
        if (t->n_compares > max_ops) {
            return LSM_ETOOMANYOPS;
        }
        for (size_t i = 0; i < t->n_compares; i++) {
            if (t->compares[i].key.len == 0) {
                return LSM_EEMPTYKEY;
            }
        }
        int rv = check_ops(t->success, t->n_success, max_ops);
        return rv != 0 ? rv : check_ops(t->failure, t->n_failure, max_ops);
    }
    default:
        return LSM_EINVAL;
    }
}

/* A branch's puts must not repeat a key nor fall in a delete range of the same txn; then and
 * else of a nested txn exclude each other, so they may repeat each other's keys. */
static int check_intervals(const struct lsm_op *ops,
                           size_t n,
                           struct klist *puts,
                           struct klist *dels);

static int klist_append(struct klist *to, const struct klist *from)
{
    int rv = 0;
    for (size_t j = 0; j < from->n && rv == 0; j++) {
        rv = klist_add(to, &from->v[j]);
    }
    return rv;
}

/* A nested txn: its branches' puts must not hit this level's puts or deletes so far. */
static int check_nested(const struct lsm_txn_req *t, struct klist *puts, struct klist *dels)
{
    struct klist pt = {0}, dt = {0}, pe = {0}, de = {0};
    int rv = check_intervals(t->success, t->n_success, &pt, &dt);
    if (rv == 0) {
        rv = check_intervals(t->failure, t->n_failure, &pe, &de);
    }
    for (size_t j = 0; j < pt.n && rv == 0; j++) {
        if (klist_hits(puts, pt.v[j].key, pt.v[j].key_len) ||
            klist_hits(dels, pt.v[j].key, pt.v[j].key_len)) {
            rv = LSM_EDUPKEY;
        }
    }
    for (size_t j = 0; j < pe.n && rv == 0; j++) {
        bool in_then = klist_hits(&pt, pe.v[j].key, pe.v[j].key_len);
        if ((klist_hits(puts, pe.v[j].key, pe.v[j].key_len) && !in_then) ||
            klist_hits(dels, pe.v[j].key, pe.v[j].key_len)) {
            rv = LSM_EDUPKEY;
        }
    }
    if (rv == 0) {
        rv = klist_append(puts, &pt);
    }
    if (rv == 0) {
        rv = klist_append(puts, &pe);
    }
    if (rv == 0) {
        rv = klist_append(dels, &dt);
    }
    if (rv == 0) {
        rv = klist_append(dels, &de);
    }
    free(pt.v);
    free(dt.v);
    free(pe.v);
    free(de.v);
    return rv;
}

static int check_intervals(const struct lsm_op *ops,
                           size_t n,
                           struct klist *puts,
                           struct klist *dels)
{
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (ops[i].type == LSM_OP_DELETE_RANGE) {
            struct lsm_span sp;
            lsm_span_make(&sp, ops[i].u.del.key, ops[i].u.del.range_end);
            rv = klist_add(dels, &sp);
        }
    }
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (ops[i].type == LSM_OP_TXN) {
            rv = check_nested(&ops[i].u.txn, puts, dels);
        }
    }
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (ops[i].type != LSM_OP_PUT) {
            continue;
        }
        const struct lsm_put_req *p = &ops[i].u.put;
        if (klist_hits(puts, p->key.data, p->key.len) ||
            klist_hits(dels, p->key.data, p->key.len)) {
            return LSM_EDUPKEY;
        }
        struct lsm_span sp;
        lsm_span_make(&sp, p->key, (struct lsm_bytes){NULL, 0});
        rv = klist_add(puts, &sp);
    }
    return rv;
}

/* ---- compares and the path (all evaluated on the state before the txn) ---- */

struct path
{
    bool *v;
    size_t n, cap, pos;
};

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static bool compare_kv(const struct lsm_compare *cmp,
                       const uint8_t *val,
                       size_t vlen,
                       const struct lsm_meta *m)
{
    int r = 0;
    switch (cmp->target) {
    case LSM_CMP_VALUE:
        r = lsm_keycmp(val, vlen, cmp->value.data, cmp->value.len);
        break;
    case LSM_CMP_CREATE:
        r = cmp_i64(m->create_rev, cmp->number);
        break;
    case LSM_CMP_MOD:
        r = cmp_i64(m->mod_rev, cmp->number);
        break;
    case LSM_CMP_LEASE:
        r = cmp_i64(m->lease, cmp->number);
        break;
    default:
        r = cmp_i64(m->version, cmp->number);
        break;
    }
    switch (cmp->result) {
    case LSM_CMP_GREATER:
        return r > 0;
    case LSM_CMP_LESS:
        return r < 0;
    case LSM_CMP_NOT_EQUAL:
        return r != 0;
    default:
        return r == 0;
    }
}

struct cmp_visit
{
    const struct lsm_compare *cmp;
    size_t seen;
    bool ok;
};

static int cmp_visit(void *arg,
                     const uint8_t *key,
                     size_t klen,
                     const uint8_t *val,
                     size_t vlen,
                     const struct lsm_meta *m)
{
    (void)key;
    (void)klen;
    struct cmp_visit *cv = arg;
    cv->seen++;
    if (!compare_kv(cv->cmp, val, vlen, m)) {
        cv->ok = false;
        return -1; /* stop: one failing key fails the compare */
    }
    return 0;
}

/* etcd applyCompare. */
static int compare_eval(struct lsm_actx *c, const struct lsm_compare *cmp, bool *ok)
{
    struct lsm_span sp;
    lsm_span_make(&sp, cmp->key, cmp->range_end);
    struct cmp_visit cv = {.cmp = cmp, .ok = true};
    int rv = lsm_actx_scan(c, &sp, 0, cmp_visit, &cv);
    if (rv != 0 && rv != -1) {
        return rv;
    }
    if (cv.seen == 0) {
        /* No key: a VALUE compare fails; others compare against zeros. */
        struct lsm_meta zero = {0};
        cv.ok = cmp->target != LSM_CMP_VALUE && compare_kv(cmp, NULL, 0, &zero);
    }
    *ok = cv.ok;
    return 0;
}

static int path_push(struct path *p, bool b)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        bool *v = realloc(p->v, cap * sizeof *v);
        if (v == NULL) {
            return LSM_ENOMEM;
        }
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = b;
    return 0;
}

/* Pre-order: this txn's outcome, then those of the nested txns of the taken branch. */
static int path_build(struct lsm_actx *c, const struct lsm_txn_req *t, struct path *p)
{
    bool ok = true;
    for (size_t i = 0; i < t->n_compares && ok; i++) {
        int rv = compare_eval(c, &t->compares[i], &ok);
        if (rv != 0) {
            return rv;
        }
    }
    int rv = path_push(p, ok);
    const struct lsm_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (ops[i].type == LSM_OP_TXN) {
            rv = path_build(c, &ops[i].u.txn, p);
        }
    }
    return rv;
}

/* etcd checkRequests along the path: range revisions and ignore_* puts on missing keys. */
static int path_check(struct lsm_actx *c, const struct lsm_txn_req *t, struct path *p)
{
    bool ok = p->v[p->pos++];
    const struct lsm_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n; i++) {
        const struct lsm_op *op = &ops[i];
        int rv = 0;
        if (op->type == LSM_OP_TXN) {
            rv = path_check(c, &op->u.txn, p);
        } else if (op->type == LSM_OP_RANGE && op->u.range.revision > c->rev) {
            rv = LSM_EFUTUREREV;
        } else if (op->type == LSM_OP_RANGE && op->u.range.revision > 0 &&
                   op->u.range.revision < c->compact_rev) {
            rv = LSM_ECOMPACTED;
        } else if (op->type == LSM_OP_PUT && (op->u.put.ignore_value || op->u.put.ignore_lease)) {
            bool found;
            const uint8_t *v;
            size_t vlen;
            struct lsm_meta m;
            rv = lsm_actx_get(c, op->u.put.key.data, op->u.put.key.len, &found, &v, &vlen, &m);
            if (rv == 0 && !found) {
                rv = LSM_EKEYNOTFOUND;
            }
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* ---- execution ---- */

static int exec_put(struct lsm_actx *c, const struct lsm_put_req *req, struct lsm_result *res)
{
    bool found;
    const uint8_t *old = NULL;
    size_t olen = 0;
    struct lsm_meta om = {0};
    int rv = lsm_actx_get(c, req->key.data, req->key.len, &found, &old, &olen, &om);
    if (rv != 0) {
        return rv;
    }
    if (!found && (req->ignore_value || req->ignore_lease)) {
        res->err = LSM_EKEYNOTFOUND;
        return 0;
    }
    struct lsm_kv prev = {0};
    if (found && (rv = lsm_kv_fill(&prev, req->key.data, req->key.len, old, olen, true, &om))) {
        return rv;
    }
    struct lsm_meta m = {
        .create_rev = found ? om.create_rev : c->rev + 1,
        .mod_rev = c->rev + 1,
        .version = found ? om.version + 1 : 1,
        .lease = req->ignore_lease ? om.lease : req->lease,
    };
    const uint8_t *val = req->ignore_value ? prev.value : req->value.data;
    size_t vlen = req->ignore_value ? prev.value_len : req->value.len;
    rv = lsm_actx_write(c, req->key.data, req->key.len, true, val, vlen, &m, found ? &prev : NULL,
                        om.sub);
    if (rv == 0 && found && req->prev_kv) {
        res->u.put.has_prev = true;
        res->u.put.prev_kv = prev;
    } else {
        lsm_kv_fini(&prev);
    }
    return rv;
}

struct del_collect
{
    struct lsm_kv *kvs;
    uint32_t *subs; /* each kv's sub-revision */
    size_t n, cap;
};

static int del_visit(void *arg,
                     const uint8_t *key,
                     size_t klen,
                     const uint8_t *val,
                     size_t vlen,
                     const struct lsm_meta *m)
{
    struct del_collect *d = arg;
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        struct lsm_kv *kvs = realloc(d->kvs, cap * sizeof *kvs);
        if (kvs == NULL) {
            return LSM_ENOMEM;
        }
        d->kvs = kvs;
        uint32_t *subs = realloc(d->subs, cap * sizeof *subs);
        if (subs == NULL) {
            return LSM_ENOMEM;
        }
        d->subs = subs;
        d->cap = cap;
    }
    int rv = lsm_kv_fill(&d->kvs[d->n], key, klen, val, vlen, true, m);
    if (rv == 0) {
        d->subs[d->n++] = m->sub;
    }
    return rv;
}

static int exec_delete(struct lsm_actx *c, const struct lsm_delete_req *req, struct lsm_result *res)
{
    struct lsm_span sp;
    lsm_span_make(&sp, req->key, req->range_end);
    struct del_collect d = {0};
    int rv = lsm_actx_scan(c, &sp, 0, del_visit, &d);
    for (size_t i = 0; i < d.n && rv == 0; i++) {
        rv = lsm_actx_write(c, d.kvs[i].key, d.kvs[i].key_len, false, NULL, 0, NULL, &d.kvs[i],
                            d.subs[i]);
    }
    res->u.del.deleted = (int64_t)d.n;
    if (rv == 0 && req->prev_kv) {
        res->u.del.prev_kvs = d.kvs;
        res->u.del.n_prev_kvs = d.n;
        free(d.subs);
        return 0;
    }
    for (size_t i = 0; i < d.n; i++) {
        lsm_kv_fini(&d.kvs[i]);
    }
    free(d.kvs);
    free(d.subs);
    return rv;
}

static int exec_range(struct lsm_actx *c, const struct lsm_range_req *req, struct lsm_result *res)
{
    if (req->revision > c->rev) {
        res->err = LSM_EFUTUREREV;
        return 0;
    }
    if (req->revision > 0 && req->revision < c->compact_rev) {
        res->err = LSM_ECOMPACTED;
        return 0;
    }
    struct lsm_span sp;
    lsm_span_make(&sp, req->key, req->range_end);
    struct lsm_collect col = {
        .req = req, .res = &res->u.range, .stop_after = lsm_collect_bound(req)};
    /* etcd: a revision <= 0 means the current one. */
    int rv = lsm_actx_scan(c, &sp, req->revision > 0 ? req->revision : 0, lsm_collect_visit, &col);
    if (rv == 0) {
        lsm_collect_finish(&col);
    }
    return rv;
}

static int exec_txn_ops(struct lsm_actx *c,
                        const struct lsm_txn_req *t,
                        struct path *p,
                        struct lsm_result *res);

static int exec_one(struct lsm_actx *c,
                    const struct lsm_op *op,
                    struct path *p,
                    struct lsm_result *res)
{
    res->type = op->type;
    switch (op->type) {
    case LSM_OP_PUT:
        return exec_put(c, &op->u.put, res);
    case LSM_OP_DELETE_RANGE:
        return exec_delete(c, &op->u.del, res);
    case LSM_OP_RANGE:
        return exec_range(c, &op->u.range, res);
    case LSM_OP_TXN:
        return exec_txn_ops(c, &op->u.txn, p, res);
    default:
        res->err = LSM_EINVAL;
        return 0;
    }
}

static int exec_txn_ops(struct lsm_actx *c,
                        const struct lsm_txn_req *t,
                        struct path *p,
                        struct lsm_result *res)
{
    bool ok = p->v[p->pos++];
    const struct lsm_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    res->u.txn.succeeded = ok;
    res->u.txn.responses = calloc(n ? n : 1, sizeof *res->u.txn.responses);
    if (res->u.txn.responses == NULL) {
        return LSM_ENOMEM;
    }
    res->u.txn.n_responses = n;
    for (size_t i = 0; i < n; i++) {
        int rv = exec_one(c, &ops[i], p, &res->u.txn.responses[i]);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Sub-responses carry the txn's header revision. */
static void set_revision(struct lsm_result *res, int64_t rev)
{
    res->revision = rev;
    if (res->type == LSM_OP_TXN) {
        for (size_t i = 0; i < res->u.txn.n_responses; i++) {
            set_revision(&res->u.txn.responses[i], rev);
        }
    }
}

static int exec_txn(struct lsm_actx *c, const struct lsm_txn_req *t, struct lsm_result *res)
{
    struct klist puts = {0}, dels = {0};
    struct lsm_op self = {.type = LSM_OP_TXN, .u.txn = *t};
    int rv = check_intervals(&self, 1, &puts, &dels);
    free(puts.v);
    free(dels.v);
    if (rv == LSM_EDUPKEY) {
        res->err = rv;
        return 0;
    }
    struct path p = {0};
    if (rv == 0) {
        rv = path_build(c, t, &p);
    }
    if (rv == 0) {
        rv = path_check(c, t, &p);
        if (rv == LSM_EFUTUREREV || rv == LSM_ECOMPACTED || rv == LSM_EKEYNOTFOUND) {
            res->err = rv;
            rv = 0;
        } else if (rv == 0) {
            p.pos = 0;
            rv = exec_txn_ops(c, t, &p, res);
        }
    }
    free(p.v);
    return rv;
}

int lsm_exec_op(struct lsm_actx *c, const struct lsm_op *op, struct lsm_result *res)
{
    res->type = op->type;
    int rv = check_op(op, c->s->opts.max_txn_ops);
    if (rv != 0) {
        res->err = rv;
        res->revision = c->rev;
        return 0;
    }
    struct path none = {0};
    rv = op->type == LSM_OP_TXN ? exec_txn(c, &op->u.txn, res) : exec_one(c, op, &none, res);
    if (rv == 0 && res->err != 0) {
        /* A failed request changes nothing; a txn fails before its first write. */
        assert(c->sub == 0);
    }
    if (c->sub > 0) {
        c->rev++;
    }
    set_revision(res, c->rev);
    return rv;
}
