/* The in-memory etcd mvcc model (see model.h).  Written from etcd's semantics, independently of
 * lsm/: linear scans over every version, bitmask key sets. */
#include <stdlib.h>
#include <string.h>

#include "test/unit/lsm/model.h"

struct mkey m_keys[M_NKEYS];

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al < bl ? -1 : al > bl);
}

static int key_sort(const void *a, const void *b)
{
    const struct mkey *x = a, *y = b;
    return bcmp_(x->b, x->len, y->b, y->len);
}

/* Prefixes of each other, embedded zero and 0xff bytes: the cases an encoding gets wrong. */
void m_keys_init(void)
{
    static const char *const raw[M_NKEYS] = {
        "a",     "a\0", "a\0a", "a\1", "aa", "ab", "b",  "b\xff", "ba", "bb", "c", "c\0\0",
        "c\0\1", "ca",  "cab",  "d",   "da", "db", "dc", "e",     "ea", "f",  "g", "zz"};
    static const size_t lens[M_NKEYS] = {1, 2, 3, 2, 2, 2, 1, 2, 2, 2, 1, 3,
                                         3, 2, 3, 1, 2, 2, 2, 1, 2, 1, 1, 2};
    for (int i = 0; i < M_NKEYS; i++) {
        memcpy(m_keys[i].b, raw[i], lens[i]);
        m_keys[i].len = lens[i];
    }
    qsort(m_keys, M_NKEYS, sizeof m_keys[0], key_sort);
}

int m_key_index(const void *k, size_t len)
{
    for (int i = 0; i < M_NKEYS; i++) {
        if (bcmp_(m_keys[i].b, m_keys[i].len, k, len) == 0) {
            return i;
        }
    }
    return -1;
}

/* The table keys in etcd range [key, end). */
static uint64_t span_mask(struct lsm_bytes key, struct lsm_bytes end)
{
    uint64_t mask = 0;
    for (int i = 0; i < M_NKEYS; i++) {
        const struct mkey *k = &m_keys[i];
        int lo = bcmp_(k->b, k->len, key.data, key.len);
        bool in;
        if (end.len == 0) {
            in = lo == 0;
        } else if (end.len == 1 && ((const uint8_t *)end.data)[0] == 0) {
            in = lo >= 0;
        } else {
            in = lo >= 0 && bcmp_(k->b, k->len, end.data, end.len) < 0;
        }
        if (in) {
            mask |= 1ull << i;
        }
    }
    return mask;
}

void m_init(struct model *m)
{
    memset(m, 0, sizeof *m);
    m->max_ops = 128;
}

void m_fini(struct model *m)
{
    for (int i = 0; i < M_NKEYS; i++) {
        for (size_t j = 0; j < m->keys[i].n; j++) {
            free(m->keys[i].v[j].val);
        }
        free(m->keys[i].v);
    }
    free(m->ev);
}

/* Newest version of key @k at or below @rev (INT64_MAX = including pending), or NULL. */
static struct mver *newest(struct model *m, int k, int64_t rev)
{
    struct mlist *l = &m->keys[k];
    for (size_t j = l->n; j > 0; j--) {
        if (l->v[j - 1].rev <= rev) {
            return &l->v[j - 1];
        }
    }
    return NULL;
}

static struct mver *live(struct model *m, int k, int64_t rev)
{
    struct mver *v = newest(m, k, rev);
    return v != NULL && !v->tomb ? v : NULL;
}

static void kv_set(struct lsm_kv *kv, int k, const struct mver *v, bool with_value)
{
    size_t n = m_keys[k].len + (with_value ? v->vlen : 0);
    kv->key = malloc(n + 1);
    memcpy(kv->key, m_keys[k].b, m_keys[k].len);
    kv->key_len = m_keys[k].len;
    kv->value = NULL;
    kv->value_len = 0;
    if (with_value) {
        kv->value = kv->key + kv->key_len;
        if (v->vlen) {
            memcpy(kv->value, v->val, v->vlen);
        }
        kv->value_len = v->vlen;
    }
    kv->create_revision = v->create;
    kv->mod_revision = v->rev;
    kv->version = v->version;
    kv->lease = v->lease;
}

static void add_version(struct model *m, int k, const struct mver *nv, const struct mver *prev)
{
    struct mlist *l = &m->keys[k];
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    struct mver *v = &l->v[l->n++];
    *v = *nv;
    v->val = malloc(nv->vlen + 1);
    if (nv->vlen) {
        memcpy(v->val, nv->val, nv->vlen);
    }
    if (m->n_ev == m->cap_ev) {
        m->cap_ev = m->cap_ev ? 2 * m->cap_ev : 64;
        m->ev = realloc(m->ev, m->cap_ev * sizeof *m->ev);
    }
    struct mevent *e = &m->ev[m->n_ev++];
    memset(e, 0, sizeof *e);
    e->type = v->tomb ? LSM_EVENT_DELETE : LSM_EVENT_PUT;
    e->key = k;
    e->kv = *v; /* val pointer stays owned by the list */
    if (prev != NULL) {
        e->has_prev = true;
        e->prev = *prev;
    }
}

/* ---- range ---- */

static int sort_t, sort_sign;

static int cmp64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int kv_order(const struct lsm_kv *a, const struct lsm_kv *b)
{
    int c = 0;
    if (sort_t == LSM_SORT_VERSION) {
        c = cmp64(a->version, b->version);
    } else if (sort_t == LSM_SORT_CREATE) {
        c = cmp64(a->create_revision, b->create_revision);
    } else if (sort_t == LSM_SORT_MOD) {
        c = cmp64(a->mod_revision, b->mod_revision);
    } else if (sort_t == LSM_SORT_VALUE) {
        c = bcmp_(a->value, a->value_len, b->value, b->value_len);
    } else {
        c = bcmp_(a->key, a->key_len, b->key, b->key_len);
    }
    return sort_sign * c;
}

/* Stable insertion sort: equal elements keep their (key) order, like Go's sort.Stable. */
static void stable_sort(struct lsm_kv *kv, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct lsm_kv x = kv[i];
        size_t j = i;
        while (j > 0 && kv_order(&kv[j - 1], &x) > 0) {
            kv[j] = kv[j - 1];
            j--;
        }
        kv[j] = x;
    }
}

/* @cur: the revision "now" (pending changes included when reading at 0). */
static void range_at(struct model *m,
                     const struct lsm_range_req *req,
                     bool pending,
                     struct lsm_range_result *out)
{
    int64_t rev = req->revision > 0 ? req->revision : (pending ? INT64_MAX : m->rev);
    uint64_t mask = span_mask(req->key, req->range_end);
    struct lsm_kv *kvs = calloc(M_NKEYS, sizeof *kvs);
    size_t n = 0;
    for (int k = 0; k < M_NKEYS; k++) {
        struct mver *v = (mask >> k) & 1 ? live(m, k, rev) : NULL;
        if (v != NULL) {
            kv_set(&kvs[n++], k, v, true);
        }
    }
    out->count = (int64_t)n;
    int o = req->sort_order ? (int)req->sort_order : LSM_SORT_NONE;
    int t = req->sort_target ? (int)req->sort_target : LSM_SORT_KEY;
    if (t != LSM_SORT_KEY && o == LSM_SORT_NONE) {
        o = LSM_SORT_ASCEND;
    }
    if (o != LSM_SORT_NONE) {
        sort_t = t;
        sort_sign = o == LSM_SORT_DESCEND ? -1 : 1;
        stable_sort(kvs, n);
    }
    size_t keep = n;
    if (req->limit > 0 && n > (size_t)req->limit) {
        keep = (size_t)req->limit;
        out->more = true;
    }
    if (req->count_only) {
        keep = 0;
        out->more = false;
    }
    for (size_t i = keep; i < n; i++) {
        free(kvs[i].key);
    }
    for (size_t i = 0; i < keep && req->keys_only; i++) {
        kvs[i].value = NULL;
        kvs[i].value_len = 0;
    }
    out->n_kvs = keep;
    out->kvs = kvs;
    if (keep == 0) {
        free(kvs);
        out->kvs = NULL;
    }
}

void m_range(struct model *m, const struct lsm_range_req *req, struct lsm_result *res)
{
    memset(res, 0, sizeof *res);
    res->type = LSM_OP_RANGE;
    res->revision = m->rev;
    if (req->key.len == 0) {
        res->err = LSM_EEMPTYKEY;
    } else if (req->revision > m->rev) {
        res->err = LSM_EFUTUREREV;
    } else if (req->revision > 0 && req->revision < m->compact) {
        res->err = LSM_ECOMPACTED;
    } else {
        range_at(m, req, false, &res->u.range);
    }
}

/* ---- writes ---- */

static bool changed;

static void do_put(struct model *m, const struct lsm_put_req *p, struct lsm_result *res)
{
    int k = m_key_index(p->key.data, p->key.len);
    struct mver *cur = live(m, k, INT64_MAX);
    if (cur == NULL && (p->ignore_value || p->ignore_lease)) {
        res->err = LSM_EKEYNOTFOUND;
        return;
    }
    struct mver prev = cur ? *cur : (struct mver){0};
    struct mver nv = {.rev = m->rev + 1,
                      .create = cur ? cur->create : m->rev + 1,
                      .version = cur ? cur->version + 1 : 1,
                      .lease = p->ignore_lease ? prev.lease : p->lease,
                      .val = p->ignore_value ? prev.val : (uint8_t *)p->value.data,
                      .vlen = p->ignore_value ? prev.vlen : p->value.len};
    if (cur && p->prev_kv) {
        res->u.put.has_prev = true;
        kv_set(&res->u.put.prev_kv, k, cur, true);
    }
    add_version(m, k, &nv, cur ? &prev : NULL);
    changed = true;
}

static void do_delete(struct model *m, const struct lsm_delete_req *d, struct lsm_result *res)
{
    uint64_t mask = span_mask(d->key, d->range_end);
    struct lsm_kv prevs[M_NKEYS];
    size_t n = 0;
    for (int k = 0; k < M_NKEYS; k++) {
        struct mver *cur = (mask >> k) & 1 ? live(m, k, INT64_MAX) : NULL;
        if (cur == NULL) {
            continue;
        }
        struct mver prev = *cur;
        kv_set(&prevs[n++], k, cur, true);
        struct mver tomb = {.rev = m->rev + 1, .tomb = true};
        add_version(m, k, &tomb, &prev);
        changed = true;
    }
    res->u.del.deleted = (int64_t)n;
    if (d->prev_kv && n > 0) {
        res->u.del.prev_kvs = calloc(n, sizeof prevs[0]);
        memcpy(res->u.del.prev_kvs, prevs, n * sizeof prevs[0]);
        res->u.del.n_prev_kvs = n;
    } else {
        for (size_t i = 0; i < n; i++) {
            free(prevs[i].key);
        }
    }
}

/* ---- validation (etcd v3rpc) ---- */

static int check(const struct model *m, const struct lsm_op *op)
{
    switch (op->type) {
    case LSM_OP_RANGE:
        return op->u.range.key.len ? 0 : LSM_EEMPTYKEY;
    case LSM_OP_DELETE_RANGE:
        return op->u.del.key.len ? 0 : LSM_EEMPTYKEY;
    case LSM_OP_PUT:
        if (!op->u.put.key.len) {
            return LSM_EEMPTYKEY;
        }
        if (op->u.put.ignore_value && op->u.put.value.len) {
            return LSM_EVALUEPROVIDED;
        }
        return op->u.put.ignore_lease && op->u.put.lease ? LSM_ELEASEPROVIDED : 0;
    default: {
        const struct lsm_txn_req *t = &op->u.txn;
        if (t->n_compares > m->max_ops || t->n_success > m->max_ops || t->n_failure > m->max_ops) {
            /* lsm checks compares, then each branch's size as it reaches it; the generator
             * never exceeds the limit, so any order does here. */
            return LSM_ETOOMANYOPS;
        }
        for (size_t i = 0; i < t->n_compares; i++) {
            if (!t->compares[i].key.len) {
                return LSM_EEMPTYKEY;
            }
        }
        for (size_t i = 0; i < t->n_success + t->n_failure; i++) {
            const struct lsm_op *o =
                i < t->n_success ? &t->success[i] : &t->failure[i - t->n_success];
            int rv = check(m, o);
            if (rv) {
                return rv;
            }
        }
        return 0;
    }
    }
}

/* etcd checkIntervals with key sets as bitmasks. */
static bool intervals(const struct lsm_op *ops, size_t n, uint64_t *puts, uint64_t *dels)
{
    *puts = *dels = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type == LSM_OP_DELETE_RANGE) {
            *dels |= span_mask(ops[i].u.del.key, ops[i].u.del.range_end);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != LSM_OP_TXN) {
            continue;
        }
        uint64_t pt, dt, pe, de;
        const struct lsm_txn_req *t = &ops[i].u.txn;
        if (!intervals(t->success, t->n_success, &pt, &dt) ||
            !intervals(t->failure, t->n_failure, &pe, &de)) {
            return false;
        }
        if ((pt & (*puts | *dels)) || (pe & *puts & ~pt) || (pe & *dels)) {
            return false;
        }
        *puts |= pt | pe;
        *dels |= dt | de;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type == LSM_OP_PUT) {
            uint64_t b = span_mask(ops[i].u.put.key, (struct lsm_bytes){NULL, 0});
            if (b & (*puts | *dels)) {
                return false;
            }
            *puts |= b;
        }
    }
    return true;
}

/* ---- txn ---- */

static bool compare_one(const struct lsm_compare *c, const struct mver *v)
{
    static const struct mver zero = {0};
    if (v == NULL && c->target == LSM_CMP_VALUE) {
        return false;
    }
    if (v == NULL) {
        v = &zero;
    }
    int r;
    switch (c->target) {
    case LSM_CMP_VALUE:
        r = bcmp_(v->val, v->vlen, c->value.data, c->value.len);
        break;
    case LSM_CMP_CREATE:
        r = cmp64(v->create, c->number);
        break;
    case LSM_CMP_MOD:
        r = cmp64(v->rev, c->number);
        break;
    case LSM_CMP_LEASE:
        r = cmp64(v->lease, c->number);
        break;
    default:
        r = cmp64(v->version, c->number);
    }
    switch (c->result) {
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

static bool compares_hold(struct model *m, const struct lsm_txn_req *t)
{
    for (size_t i = 0; i < t->n_compares; i++) {
        const struct lsm_compare *c = &t->compares[i];
        uint64_t mask = span_mask(c->key, c->range_end);
        bool any = false;
        for (int k = 0; k < M_NKEYS; k++) {
            struct mver *v = (mask >> k) & 1 ? live(m, k, m->rev) : NULL;
            if (v != NULL) {
                any = true;
                if (!compare_one(c, v)) {
                    return false;
                }
            }
        }
        if (!any && !compare_one(c, NULL)) {
            return false;
        }
    }
    return true;
}

/* Path in pre-order, all compares on the state before the txn; then the path's checks. */
static int path(struct model *m, const struct lsm_txn_req *t, bool *p, size_t *n)
{
    bool ok = compares_hold(m, t);
    p[(*n)++] = ok;
    const struct lsm_op *ops = ok ? t->success : t->failure;
    size_t cnt = ok ? t->n_success : t->n_failure;
    int err = 0;
    for (size_t i = 0; i < cnt; i++) {
        const struct lsm_op *o = &ops[i];
        int e = 0;
        if (o->type == LSM_OP_TXN) {
            e = path(m, &o->u.txn, p, n);
        } else if (o->type == LSM_OP_RANGE && o->u.range.revision > m->rev) {
            e = LSM_EFUTUREREV;
        } else if (o->type == LSM_OP_RANGE && o->u.range.revision > 0 &&
                   o->u.range.revision < m->compact) {
            e = LSM_ECOMPACTED;
        } else if (o->type == LSM_OP_PUT && (o->u.put.ignore_value || o->u.put.ignore_lease)) {
            int k = m_key_index(o->u.put.key.data, o->u.put.key.len);
            e = live(m, k, m->rev) ? 0 : LSM_EKEYNOTFOUND;
        }
        if (err == 0) {
            err = e;
        }
    }
    return err;
}

static void exec(struct model *m,
                 const struct lsm_op *op,
                 const bool *p,
                 size_t *pos,
                 struct lsm_result *res);

static void exec_txn(struct model *m,
                     const struct lsm_txn_req *t,
                     const bool *p,
                     size_t *pos,
                     struct lsm_result *res)
{
    bool ok = p[(*pos)++];
    const struct lsm_op *ops = ok ? t->success : t->failure;
    size_t n = ok ? t->n_success : t->n_failure;
    res->u.txn.succeeded = ok;
    res->u.txn.responses = calloc(n + 1, sizeof *res->u.txn.responses);
    res->u.txn.n_responses = n;
    for (size_t i = 0; i < n; i++) {
        exec(m, &ops[i], p, pos, &res->u.txn.responses[i]);
    }
}

static void exec(struct model *m,
                 const struct lsm_op *op,
                 const bool *p,
                 size_t *pos,
                 struct lsm_result *res)
{
    res->type = op->type;
    if (op->type == LSM_OP_PUT) {
        do_put(m, &op->u.put, res);
    } else if (op->type == LSM_OP_DELETE_RANGE) {
        do_delete(m, &op->u.del, res);
    } else if (op->type == LSM_OP_RANGE) {
        if (op->u.range.revision > m->rev) {
            res->err = LSM_EFUTUREREV;
        } else if (op->u.range.revision > 0 && op->u.range.revision < m->compact) {
            res->err = LSM_ECOMPACTED;
        } else {
            range_at(m, &op->u.range, true, &res->u.range);
        }
    } else {
        exec_txn(m, &op->u.txn, p, pos, res);
    }
}

static void set_rev(struct lsm_result *r, int64_t rev)
{
    r->revision = rev;
    for (size_t i = 0; r->type == LSM_OP_TXN && i < r->u.txn.n_responses; i++) {
        set_rev(&r->u.txn.responses[i], rev);
    }
}

void m_apply(struct model *m, const struct lsm_op *op, struct lsm_result *res)
{
    memset(res, 0, sizeof *res);
    res->revision = m->rev;
    if (op == NULL || op->type == LSM_OP_NOOP) {
        res->type = LSM_OP_NOOP;
        return;
    }
    res->type = op->type;
    if (op->type == LSM_OP_COMPACT) {
        int64_t r = op->u.compact.revision;
        if (r <= m->compact) {
            res->err = LSM_ECOMPACTED;
        } else if (r > m->rev) {
            res->err = LSM_EFUTUREREV;
        } else {
            m->compact = r;
        }
        return;
    }
    if ((res->err = check(m, op)) != 0) {
        return;
    }
    changed = false;
    bool p[256];
    size_t n = 0, pos = 0;
    if (op->type == LSM_OP_TXN) {
        uint64_t puts, dels;
        if (!intervals(op, 1, &puts, &dels)) {
            res->err = LSM_EDUPKEY;
            return;
        }
        if ((res->err = path(m, &op->u.txn, p, &n)) != 0) {
            return;
        }
    }
    exec(m, op, p, &pos, res);
    if (changed) {
        m->rev++;
    }
    set_rev(res, m->rev);
}
