/* Applying committed entries: one LevelDB batch per group, with pending writes visible to the
 * later requests of the same group through an in-memory overlay. */
#include <stdlib.h>
#include <string.h>

#include "lsm/actx.h"
#include "lsm/src.h"

static struct lsm_rec *rec_new(const uint8_t *key,
                               size_t klen,
                               bool live,
                               const uint8_t *val,
                               size_t vlen,
                               const struct lsm_meta *m)
{
    struct lsm_rec *r = malloc(sizeof *r + klen + vlen + 1);
    if (r == NULL) {
        return NULL;
    }
    r->key = (uint8_t *)(r + 1);
    r->klen = klen;
    r->val = r->key + klen;
    r->vlen = vlen;
    if (klen) {
        memcpy(r->key, key, klen);
    }
    if (vlen) {
        memcpy(r->val, val, vlen);
    }
    r->live = live;
    r->m = *m;
    return r;
}

/* Index of the first overlay entry with key >= @key. */
static size_t ovl_lower(struct lsm_rec **v, size_t n, const uint8_t *key, size_t klen)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lsm_keycmp(v[mid]->key, v[mid]->klen, key, klen) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return 0;
    }
    size_t c = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, c * size);
    if (q == NULL) {
        return LSM_ENOMEM;
    }
    *p = q;
    *cap = c;
    return 0;
}

/* Insert or replace @r in the sorted array @v. */
static int ovl_set(struct lsm_rec ***v, size_t *n, size_t *cap, struct lsm_rec *r)
{
    size_t i = ovl_lower(*v, *n, r->key, r->klen);
    if (i < *n && lsm_keycmp((*v)[i]->key, (*v)[i]->klen, r->key, r->klen) == 0) {
        (*v)[i] = r;
        return 0;
    }
    if (grow((void **)v, cap, *n, sizeof **v) != 0) {
        return LSM_ENOMEM;
    }
    memmove(*v + i + 1, *v + i, (*n - i) * sizeof **v);
    (*v)[i] = r;
    (*n)++;
    return 0;
}

int lsm_actx_get(struct lsm_actx *c,
                 const uint8_t *key,
                 size_t klen,
                 bool *found,
                 const uint8_t **val,
                 size_t *vlen,
                 struct lsm_meta *m)
{
    size_t i = ovl_lower(c->ovl, c->n_ovl, key, klen);
    if (i < c->n_ovl && lsm_keycmp(c->ovl[i]->key, c->ovl[i]->klen, key, klen) == 0) {
        struct lsm_rec *r = c->ovl[i];
        *found = r->live;
        *val = r->val;
        *vlen = r->vlen;
        *m = r->m;
        return 0;
    }
    if (lsm_kf_absent(c->s, key, klen)) {
        *found = false; /* a new key: no read */
        return 0;
    }
    if (lsm_key_cur(&c->kb, key, klen) != 0) {
        return LSM_ENOMEM;
    }
    char *err = NULL;
    size_t n = 0;
    char *v = leveldb_get(c->s->db, c->s->ropts, (const char *)c->kb.p, c->kb.len, &n, &err);
    if (err != NULL) {
        return lsm_ldb_err(c->s->errmsg, "get", err);
    }
    *found = v != NULL;
    if (v == NULL) {
        return 0;
    }
    int rv = LSM_ECORRUPT;
    if (n >= LSM_CUR_HDR) {
        lsm_cur_decode((const uint8_t *)v, m);
        c->vb.len = 0;
        rv = lsm_buf_add(&c->vb, v + LSM_CUR_HDR, n - LSM_CUR_HDR);
        *val = c->vb.p;
        *vlen = n - LSM_CUR_HDR;
    } else {
        lsm_set_err(c->s->errmsg, "current record of %zu bytes", n);
    }
    leveldb_free(v);
    return rv;
}

/* Merge a LevelDB source with pending versions @v[0..n) (newer, so they win on equal keys). */
static int merge_scan(struct lsm_actx *c,
                      const struct lsm_span *sp,
                      int64_t rev,
                      struct lsm_rec **v,
                      size_t n,
                      lsm_visit_fn fn,
                      void *arg)
{
    struct lsm_src src;
    int rv = lsm_src_open(&src, c->s->db, c->s->ropts, sp, rev, c->s->errmsg);
    size_t i = ovl_lower(v, n, sp->key, sp->key_len);
    if (rv == 0) {
        rv = lsm_src_next(&src);
    }
    while (rv == 0) {
        bool ov = i < n && lsm_span_has(sp, v[i]->key, v[i]->klen);
        if (!ov && !src.valid) {
            break;
        }
        int cmp = !ov          ? 1
                  : !src.valid ? -1
                               : lsm_keycmp(v[i]->key, v[i]->klen, src.key.p, src.key.len);
        if (cmp <= 0) {
            struct lsm_rec *r = v[i++];
            if (r->live) {
                rv = fn(arg, r->key, r->klen, r->val, r->vlen, &r->m);
            }
            if (rv == 0 && cmp == 0) {
                rv = lsm_src_next(&src);
            }
        } else {
            rv = fn(arg, src.key.p, src.key.len, src.val.p, src.val.len, &src.meta);
            if (rv == 0) {
                rv = lsm_src_next(&src);
            }
        }
    }
    lsm_src_close(&src);
    return rv;
}

int lsm_actx_scan(struct lsm_actx *c,
                  const struct lsm_span *sp,
                  int64_t rev,
                  lsm_visit_fn fn,
                  void *arg)
{
    if (rev == 0 || (rev >= c->rev && c->sub == 0)) {
        return merge_scan(c, sp, 0, c->ovl, c->n_ovl, fn, arg);
    }
    /* A past revision: the group's own versions at or below @rev are newer than LevelDB's. */
    struct lsm_rec **v = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;
    for (size_t i = 0; i < c->n_hist && c->hist[i]->m.mod_rev <= rev && rv == 0; i++) {
        if (lsm_span_has(sp, c->hist[i]->key, c->hist[i]->klen)) {
            rv = ovl_set(&v, &n, &cap, c->hist[i]);
        }
    }
    if (rv == 0) {
        rv = merge_scan(c, sp, rev, v, n, fn, arg);
    }
    free(v);
    return rv;
}

static int event_add(struct lsm_actx *c, struct lsm_rec *r, const struct lsm_kv *prev)
{
    if (grow((void **)&c->ev, &c->cap_ev, c->n_ev, sizeof *c->ev) != 0) {
        return LSM_ENOMEM;
    }
    struct lsm_event *e = &c->ev[c->n_ev];
    memset(e, 0, sizeof *e);
    e->type = r->live ? LSM_EVENT_PUT : LSM_EVENT_DELETE;
    struct lsm_meta dm = {.mod_rev = r->m.mod_rev};
    int rv = lsm_kv_fill(&e->kv, r->key, r->klen, r->val, r->vlen, r->live, r->live ? &r->m : &dm);
    if (rv == 0 && prev != NULL) {
        struct lsm_meta pm = {prev->create_revision, prev->mod_revision, prev->version, prev->lease,
                              0};
        e->has_prev = true;
        rv = lsm_kv_fill(&e->prev_kv, prev->key, prev->key_len, prev->value, prev->value_len, true,
                         &pm);
    }
    if (rv != 0) {
        lsm_kv_fini(&e->kv);
        return rv;
    }
    c->n_ev++;
    return 0;
}

/* A version's history record: flags + meta + value under (key, revision, sub). */
static int hist_put(struct lsm_actx *c,
                    const uint8_t *key,
                    size_t klen,
                    bool tomb,
                    const struct lsm_meta *m,
                    const uint8_t *val,
                    size_t vlen)
{
    uint8_t hdr[LSM_HIST_HDR];
    hdr[0] = tomb ? LSM_HIST_TOMB : 0;
    lsm_meta_encode(hdr + 1, m);
    c->vb.len = 0;
    if (lsm_buf_add(&c->vb, hdr, sizeof hdr) || lsm_buf_add(&c->vb, val, vlen) ||
        lsm_key_hist(&c->kb, key, klen, m->mod_rev, m->sub)) {
        return LSM_ENOMEM;
    }
    leveldb_writebatch_put(c->wb, (char *)c->kb.p, c->kb.len, (char *)c->vb.p, c->vb.len);
    return 0;
}

/* The current record holds a key's newest version; the version it replaces moves to history,
 * and a delete leaves a tombstone there.  A first put writes no history at all. */
static int batch_write(struct lsm_actx *c,
                       struct lsm_rec *r,
                       const struct lsm_kv *prev,
                       uint32_t prev_sub)
{
    int rv = 0;
    if (prev != NULL) {
        struct lsm_meta pm = {prev->create_revision, prev->mod_revision, prev->version, prev->lease,
                              prev_sub};
        rv = hist_put(c, r->key, r->klen, false, &pm, prev->value, prev->value_len);
    }
    if (rv == 0 && !r->live) {
        rv = hist_put(c, r->key, r->klen, true, &r->m, NULL, 0);
    }
    if (rv != 0 || lsm_key_cur(&c->kb, r->key, r->klen) != 0) {
        return LSM_ENOMEM;
    }
    if (r->live) {
        uint8_t hdr[LSM_CUR_HDR];
        lsm_cur_encode(hdr, &r->m);
        c->vb.len = 0;
        if (lsm_buf_add(&c->vb, hdr, sizeof hdr) || lsm_buf_add(&c->vb, r->val, r->vlen)) {
            return LSM_ENOMEM;
        }
        leveldb_writebatch_put(c->wb, (char *)c->kb.p, c->kb.len, (char *)c->vb.p, c->vb.len);
    } else {
        leveldb_writebatch_delete(c->wb, (char *)c->kb.p, c->kb.len);
    }
    /* Revision log: (revision, sub) -> type + key, for watch catch-up. */
    uint8_t rk[13];
    lsm_key_rev(rk, r->m.mod_rev, r->m.sub);
    c->vb.len = 0;
    uint8_t t = r->live ? 'P' : 'D';
    if (lsm_buf_add(&c->vb, &t, 1) || lsm_buf_add(&c->vb, r->key, r->klen)) {
        return LSM_ENOMEM;
    }
    leveldb_writebatch_put(c->wb, (char *)rk, sizeof rk, (char *)c->vb.p, c->vb.len);
    return 0;
}

int lsm_actx_write(struct lsm_actx *c,
                   const uint8_t *key,
                   size_t klen,
                   bool live,
                   const uint8_t *val,
                   size_t vlen,
                   const struct lsm_meta *m,
                   const struct lsm_kv *prev,
                   uint32_t prev_sub)
{
    struct lsm_meta tm = {.mod_rev = c->rev + 1};
    struct lsm_rec *r =
        rec_new(key, klen, live, live ? val : NULL, live ? vlen : 0, live ? m : &tm);
    if (r == NULL) {
        return LSM_ENOMEM;
    }
    if (grow((void **)&c->hist, &c->cap_hist, c->n_hist, sizeof *c->hist) != 0) {
        free(r);
        return LSM_ENOMEM;
    }
    c->hist[c->n_hist++] = r; /* owns r from here on */
    r->m.sub = c->sub;
    if (live) {
        lsm_kf_add(c->s, key, klen); /* before the batch is written: a superset is harmless */
    }
    int rv = ovl_set(&c->ovl, &c->n_ovl, &c->cap_ovl, r);
    if (rv == 0) {
        rv = batch_write(c, r, prev, prev_sub);
    }
    if (rv == 0) {
        rv = event_add(c, r, prev);
    }
    c->sub++;
    return rv;
}

static void actx_fini(struct lsm_actx *c)
{
    for (size_t i = 0; i < c->n_hist; i++) {
        free(c->hist[i]);
    }
    free(c->hist);
    free(c->ovl);
    lsm_events_free(c->ev, c->n_ev);
    if (c->wb != NULL) {
        leveldb_writebatch_destroy(c->wb);
    }
    lsm_buf_fini(&c->kb);
    lsm_buf_fini(&c->vb);
}

static void compact_req(struct lsm_actx *c,
                        const struct lsm_compact_req *req,
                        struct lsm_result *res)
{
    res->revision = c->rev;
    if (req->revision <= c->compact_rev) {
        res->err = LSM_ECOMPACTED;
    } else if (req->revision > c->rev) {
        res->err = LSM_EFUTUREREV;
    } else {
        c->compact_rev = req->revision;
        c->compact_changed = true;
    }
}

static int apply_entry(struct lsm_actx *c, const struct lsm_entry *e, struct lsm_result *res)
{
    if (e->req == NULL || e->req->type == LSM_OP_NOOP) {
        res->type = LSM_OP_NOOP;
        res->revision = c->rev;
        return 0;
    }
    if (e->req->type == LSM_OP_COMPACT) {
        res->type = LSM_OP_COMPACT;
        compact_req(c, &e->req->u.compact, res);
        return 0;
    }
    c->sub = 0;
    return lsm_exec_op(c, e->req, res);
}

static void put_meta(leveldb_writebatch_t *wb, const char *name, uint64_t a, const uint64_t *b)
{
    uint8_t v[16];
    lsm_put64(v, a);
    if (b != NULL) {
        lsm_put64(v + 8, *b);
    }
    leveldb_writebatch_put(wb, name, strlen(name), (char *)v, b != NULL ? 16 : 8);
}

/* The entry's state records, into the group's batch. */
static int put_state(struct lsm_actx *c, const struct lsm_entry *e)
{
    for (size_t i = 0; i < e->n_state; i++) {
        const struct lsm_state_rec *r = &e->state[i];
        if (r->name.len == 0 || lsm_state_key(&c->kb, r->name) != 0) {
            lsm_set_err(c->s->errmsg, "apply: entry %llu: bad state record",
                        (unsigned long long)e->index);
            return r->name.len == 0 ? LSM_EINVAL : LSM_ENOMEM;
        }
        if (r->del) {
            leveldb_writebatch_delete(c->wb, (char *)c->kb.p, c->kb.len);
        } else {
            leveldb_writebatch_put(c->wb, (char *)c->kb.p, c->kb.len, r->value.data, r->value.len);
        }
    }
    return 0;
}

static int apply_group(struct lsm_store *s,
                       struct lsm_actx *c,
                       const struct lsm_entry *entries,
                       size_t n,
                       struct lsm_apply_out *out)
{
    uint64_t last = s->applied_index, term = s->applied_term;
    for (size_t i = 0; i < n; i++) {
        const struct lsm_entry *e = &entries[i];
        if (i > 0 && e->index <= entries[i - 1].index) {
            lsm_set_err(s->errmsg, "apply: index %llu after %llu", (unsigned long long)e->index,
                        (unsigned long long)entries[i - 1].index);
            return LSM_EINVAL;
        }
        struct lsm_result *res = &out->results[i];
        if (e->index <= s->applied_index) {
            res->type = e->req != NULL ? e->req->type : LSM_OP_NOOP;
            res->skipped = true;
            res->revision = s->rev;
            continue;
        }
        int rv = apply_entry(c, e, res);
        if (rv == 0) {
            rv = put_state(c, e);
        }
        if (rv != 0) {
            return rv;
        }
        last = e->index;
        term = e->term;
    }
    if (last == s->applied_index) {
        return 0; /* everything skipped: nothing to write */
    }
    put_meta(c->wb, LSM_META_APPLIED, last, &term);
    put_meta(c->wb, LSM_META_REV, (uint64_t)c->rev, NULL);
    if (c->compact_changed) {
        put_meta(c->wb, LSM_META_COMPACT, (uint64_t)c->compact_rev, NULL);
    }
    char *err = NULL;
    leveldb_write(s->db, s->wopts, c->wb, &err);
    if (err != NULL) {
        s->broken = true;
        return lsm_ldb_err(s->errmsg, "apply: write batch", err);
    }
    s->applied_index = last;
    s->applied_term = term;
    s->rev = c->rev;
    s->compact_rev = c->compact_rev;
    return lsm_view_publish(s);
}

int lsm_apply(struct lsm_store *s,
              const struct lsm_entry *entries,
              size_t n,
              struct lsm_apply_out *out)
{
    memset(out, 0, sizeof *out);
    if (s->broken) {
        lsm_set_err(s->errmsg, "apply: an earlier write failed; reopen the store");
        return LSM_EIO;
    }
    if (atomic_load(&s->bg_corrupt)) {
        lsm_set_err(s->errmsg, "apply: %s", s->bg_errmsg);
        return LSM_ECORRUPT;
    }
    out->results = calloc(n ? n : 1, sizeof *out->results);
    if (out->results == NULL) {
        return LSM_ENOMEM;
    }
    out->n_results = n;
    struct lsm_actx c = {.s = s, .rev = s->rev, .compact_rev = s->compact_rev};
    c.wb = leveldb_writebatch_create();
    /* Applies and checkpoints both run on the apply thread, so they never overlap; apply_mu is
     * for the compactor's view publish (compact.c). */
    pthread_mutex_lock(&s->apply_mu);
    int rv = apply_group(s, &c, entries, n, out);
    pthread_mutex_unlock(&s->apply_mu);
    if (rv == 0) {
        out->events = c.ev;
        out->n_events = c.n_ev;
        c.ev = NULL;
        c.n_ev = 0;
        if (c.compact_changed) {
            lsm_compactor_kick(s, c.compact_rev);
        }
    }
    out->revision = s->rev;
    out->applied_index = s->applied_index;
    actx_fini(&c);
    return rv;
}
