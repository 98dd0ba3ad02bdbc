/* Pull iterators over the keys of a span (current state, or as of a revision) and over every
 * stored version. */
#include <stdlib.h>
#include <string.h>

#include "lsm/src.h"

static int src_get_single(struct lsm_src *src)
{
    char *err = NULL;
    size_t vlen = 0;
    if (lsm_key_cur(&src->tmp, src->sp.key, src->sp.key_len) != 0) {
        return LSM_ENOMEM;
    }
    char *v = leveldb_get(src->db, src->ro, (const char *)src->tmp.p, src->tmp.len, &vlen, &err);
    if (err != NULL) {
        return lsm_ldb_err(src->errmsg, "get", err);
    }
    src->valid = false;
    if (v == NULL) {
        return 0;
    }
    int rv = LSM_ECORRUPT;
    if (vlen >= LSM_CUR_HDR) {
        lsm_cur_decode((const uint8_t *)v, &src->meta);
        src->key.len = 0;
        src->val.len = 0;
        rv = lsm_buf_add(&src->key, src->sp.key, src->sp.key_len);
        if (rv == 0) {
            rv = lsm_buf_add(&src->val, v + LSM_CUR_HDR, vlen - LSM_CUR_HDR);
        }
        src->valid = rv == 0;
    } else {
        lsm_set_err(src->errmsg, "current record of %zu bytes", vlen);
    }
    leveldb_free(v);
    return rv;
}

static int iter_status(leveldb_iterator_t *it, char *errmsg)
{
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err != NULL) {
        return lsm_ldb_err(errmsg, "iterate", err);
    }
    return 0;
}

int lsm_vit_open(struct lsm_vit *v,
                 leveldb_t *db,
                 const leveldb_readoptions_t *ro,
                 const uint8_t *start,
                 size_t len,
                 char *errmsg)
{
    memset(v, 0, sizeof *v);
    v->errmsg = errmsg;
    v->h = leveldb_create_iterator(db, ro);
    v->c = leveldb_create_iterator(db, ro);
    struct lsm_buf b = {0};
    int rv = lsm_key_hist_prefix(&b, start, len);
    if (rv == 0) {
        leveldb_iter_seek(v->h, (const char *)b.p, b.len);
        rv = lsm_key_cur(&b, start, len);
    }
    if (rv == 0) {
        leveldb_iter_seek(v->c, (const char *)b.p, b.len);
    }
    lsm_buf_fini(&b);
    return rv;
}

void lsm_vit_close(struct lsm_vit *v)
{
    if (v->h != NULL) {
        leveldb_iter_destroy(v->h);
    }
    if (v->c != NULL) {
        leveldb_iter_destroy(v->c);
    }
    lsm_buf_fini(&v->hk);
    lsm_buf_fini(&v->key);
    memset(v, 0, sizeof *v);
}

/* The LevelDB key under @it if it starts with @prefix, else NULL (end of that section). */
static const uint8_t *section_key(leveldb_iterator_t *it, char prefix, size_t *len)
{
    if (!leveldb_iter_valid(it)) {
        return NULL;
    }
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, len);
    return *len >= 1 && k[0] == (uint8_t)prefix ? k : NULL;
}

/* Load the version under v->h (@from_hist) or v->c. */
static int vit_take(struct lsm_vit *v,
                    bool from_hist,
                    const uint8_t *k,
                    size_t klen,
                    int64_t rev,
                    uint32_t sub)
{
    size_t vlen;
    const uint8_t *val = (const uint8_t *)leveldb_iter_value(from_hist ? v->h : v->c, &vlen);
    v->key.len = 0;
    if (from_hist) {
        if (vlen < LSM_HIST_HDR) {
            lsm_set_err(v->errmsg, "history record of %zu bytes", vlen);
            return LSM_ECORRUPT;
        }
        v->tomb = (val[0] & LSM_HIST_TOMB) != 0;
        lsm_meta_decode(val + 1, &v->meta);
        v->meta.mod_rev = rev;
        v->meta.sub = sub;
        v->val = val + LSM_HIST_HDR;
        v->vlen = vlen - LSM_HIST_HDR;
        v->adv = v->h;
        if (lsm_buf_add(&v->key, v->hk.p, v->hk.len) != 0) {
            return LSM_ENOMEM;
        }
    } else {
        if (vlen < LSM_CUR_HDR) {
            lsm_set_err(v->errmsg, "current record of %zu bytes", vlen);
            return LSM_ECORRUPT;
        }
        v->tomb = false;
        lsm_cur_decode(val, &v->meta);
        v->val = val + LSM_CUR_HDR;
        v->vlen = vlen - LSM_CUR_HDR;
        v->adv = v->c;
        if (lsm_buf_add(&v->key, k + 1, klen - 1) != 0) {
            return LSM_ENOMEM;
        }
    }
    v->cur = !from_hist;
    v->raw = k;
    v->rawlen = klen;
    v->valid = true;
    return 0;
}

int lsm_vit_next(struct lsm_vit *v)
{
    if (v->adv != NULL) {
        leveldb_iter_next(v->adv);
        v->adv = NULL;
    }
    v->valid = false;
    size_t hlen = 0, clen = 0;
    int64_t rev = 0;
    uint32_t sub = 0;
    const uint8_t *hk = section_key(v->h, LSM_P_HIST, &hlen);
    const uint8_t *ck = section_key(v->c, LSM_P_CUR, &clen);
    int rv = iter_status(v->h, v->errmsg);
    if (rv == 0) {
        rv = iter_status(v->c, v->errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    if (hk != NULL && lsm_key_hist_parse(hk, hlen, &v->hk, &rev, &sub) != 0) {
        lsm_set_err(v->errmsg, "bad history key");
        return LSM_ECORRUPT;
    }
    if (hk == NULL && ck == NULL) {
        return 0;
    }
    /* On equal user keys history goes first: a key's current record is its newest version. */
    bool from_hist =
        hk != NULL && (ck == NULL || lsm_keycmp(v->hk.p, v->hk.len, ck + 1, clen - 1) <= 0);
    return from_hist ? vit_take(v, true, hk, hlen, rev, sub) : vit_take(v, false, ck, clen, 0, 0);
}

int lsm_src_open(struct lsm_src *src,
                 leveldb_t *db,
                 const leveldb_readoptions_t *ro,
                 const struct lsm_span *sp,
                 int64_t rev,
                 char *errmsg)
{
    memset(src, 0, sizeof *src);
    src->db = db;
    src->ro = ro;
    src->sp = *sp;
    src->rev = rev;
    src->errmsg = errmsg;
    if (rev == 0 && sp->single) {
        src->single_pending = true;
        return 0;
    }
    if (rev != 0) {
        src->vit_open = true;
        int rv = lsm_vit_open(&src->vit, db, ro, sp->key, sp->key_len, errmsg);
        return rv == 0 ? lsm_vit_next(&src->vit) : rv;
    }
    src->it = leveldb_create_iterator(db, ro);
    int rv = lsm_key_cur(&src->tmp, sp->key, sp->key_len);
    if (rv != 0) {
        return rv;
    }
    leveldb_iter_seek(src->it, (const char *)src->tmp.p, src->tmp.len);
    return 0;
}

void lsm_src_close(struct lsm_src *src)
{
    if (src->it != NULL) {
        leveldb_iter_destroy(src->it);
    }
    lsm_buf_fini(&src->key);
    lsm_buf_fini(&src->val);
    if (src->vit_open) {
        lsm_vit_close(&src->vit);
    }
    lsm_buf_fini(&src->tmp);
    memset(src, 0, sizeof *src);
}

/* Past the span's end (user key @k)? */
static bool past_end(const struct lsm_span *sp, const uint8_t *k, size_t klen)
{
    if (sp->single) {
        return lsm_keycmp(k, klen, sp->key, sp->key_len) > 0;
    }
    return !sp->unbounded && lsm_keycmp(k, klen, sp->end, sp->end_len) >= 0;
}

static int next_cur(struct lsm_src *src)
{
    src->valid = false;
    /* At every step, not only at the end: LevelDB's iterator steps over a block that fails its
     * checksum and only its status tells, so a caller that stops early (a limit) would
     * otherwise return keys from past a hole as if nothing were missing. */
    int rv = iter_status(src->it, src->errmsg);
    if (rv != 0 || !leveldb_iter_valid(src->it)) {
        return rv;
    }
    size_t klen, vlen;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(src->it, &klen);
    if (klen < 1 || k[0] != LSM_P_CUR || past_end(&src->sp, k + 1, klen - 1)) {
        return 0;
    }
    const uint8_t *v = (const uint8_t *)leveldb_iter_value(src->it, &vlen);
    if (vlen < LSM_CUR_HDR) {
        lsm_set_err(src->errmsg, "current record of %zu bytes", vlen);
        return LSM_ECORRUPT;
    }
    src->key.len = 0;
    src->val.len = 0;
    if (lsm_buf_add(&src->key, k + 1, klen - 1) != 0 ||
        lsm_buf_add(&src->val, v + LSM_CUR_HDR, vlen - LSM_CUR_HDR) != 0) {
        return LSM_ENOMEM;
    }
    lsm_cur_decode(v, &src->meta);
    src->tomb = false;
    src->valid = true;
    leveldb_iter_next(src->it);
    return 0;
}

/* A key's versions are consecutive in the version iterator: keep the newest at or below
 * src->rev. */
static int next_hist(struct lsm_src *src)
{
    struct lsm_vit *v = &src->vit;
    for (;;) {
        src->valid = false;
        if (!v->valid || past_end(&src->sp, v->key.p, v->key.len)) {
            return 0;
        }
        src->key.len = 0;
        if (lsm_buf_add(&src->key, v->key.p, v->key.len) != 0) {
            return LSM_ENOMEM;
        }
        bool have = false;
        do {
            if (v->meta.mod_rev <= src->rev) {
                src->tomb = v->tomb;
                src->meta = v->meta;
                src->val.len = 0;
                if (lsm_buf_add(&src->val, v->val, v->vlen) != 0) {
                    return LSM_ENOMEM;
                }
                have = true;
            }
            int rv = lsm_vit_next(v);
            if (rv != 0) {
                return rv;
            }
        } while (v->valid && lsm_keycmp(v->key.p, v->key.len, src->key.p, src->key.len) == 0);
        if (have && (src->with_tombs || !src->tomb)) {
            src->valid = true;
            return 0;
        }
    }
}

int lsm_src_next(struct lsm_src *src)
{
    if (src->single_pending) {
        src->single_pending = false;
        return src_get_single(src);
    }
    if (src->rev != 0) {
        return next_hist(src);
    }
    if (src->it == NULL) {
        src->valid = false;
        return 0;
    }
    return next_cur(src);
}

/* Decode the history record under @it if it belongs to @key. */
static int hist_take(leveldb_iterator_t *it,
                     const uint8_t *key,
                     size_t klen,
                     bool *found,
                     struct lsm_buf *val,
                     struct lsm_meta *m,
                     bool *tomb,
                     struct lsm_buf *uk)
{
    size_t hlen, vlen;
    int64_t r;
    uint32_t sub;
    const uint8_t *hk = (const uint8_t *)leveldb_iter_key(it, &hlen);
    *found = false;
    if (hlen < 1 || hk[0] != LSM_P_HIST || lsm_key_hist_parse(hk, hlen, uk, &r, &sub) != 0 ||
        lsm_keycmp(uk->p, uk->len, key, klen) != 0) {
        return 0;
    }
    const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
    if (vlen < LSM_HIST_HDR) {
        return LSM_ECORRUPT;
    }
    *tomb = (v[0] & LSM_HIST_TOMB) != 0;
    lsm_meta_decode(v + 1, m);
    m->mod_rev = r;
    m->sub = sub;
    val->len = 0;
    *found = true;
    return lsm_buf_add(val, v + LSM_HIST_HDR, vlen - LSM_HIST_HDR);
}

/* The current record of @key, if it is the version at (@rev, @sub).  @kb: scratch. */
static int cur_read_at(leveldb_t *db,
                       const leveldb_readoptions_t *ro,
                       const uint8_t *key,
                       size_t klen,
                       int64_t rev,
                       uint32_t sub,
                       bool *found,
                       struct lsm_buf *val,
                       struct lsm_meta *m,
                       bool *tomb,
                       struct lsm_buf *kb,
                       char *errmsg)
{
    if (lsm_key_cur(kb, key, klen) != 0) {
        return LSM_ENOMEM;
    }
    char *err = NULL;
    size_t vlen = 0;
    char *v = leveldb_get(db, ro, (const char *)kb->p, kb->len, &vlen, &err);
    if (err != NULL) {
        return lsm_ldb_err(errmsg, "get", err);
    }
    if (v == NULL) {
        return 0;
    }
    int rv = 0;
    struct lsm_meta cm;
    if (vlen < LSM_CUR_HDR) {
        lsm_set_err(errmsg, "current record of %zu bytes", vlen);
        rv = LSM_ECORRUPT;
    } else {
        lsm_cur_decode((const uint8_t *)v, &cm);
        if (cm.mod_rev == rev && cm.sub == sub) {
            *m = cm;
            *tomb = false;
            val->len = 0;
            rv = lsm_buf_add(val, v + LSM_CUR_HDR, vlen - LSM_CUR_HDR);
            *found = rv == 0;
        }
    }
    leveldb_free(v);
    return rv;
}

int lsm_hist_read(leveldb_t *db,
                  const leveldb_readoptions_t *ro,
                  const uint8_t *key,
                  size_t klen,
                  int64_t rev,
                  uint32_t sub,
                  bool exact,
                  bool *found,
                  struct lsm_buf *val,
                  struct lsm_meta *m,
                  bool *tomb,
                  char *errmsg)
{
    struct lsm_buf hk = {0}, uk = {0};
    *found = false;
    int rv = lsm_key_hist(&hk, key, klen, rev, sub);
    if (rv != 0) {
        return rv;
    }
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    leveldb_iter_seek(it, (const char *)hk.p, hk.len);
    if (exact) {
        size_t n = 0;
        const char *at = leveldb_iter_valid(it) ? leveldb_iter_key(it, &n) : NULL;
        if (at != NULL && n == hk.len && memcmp(at, hk.p, n) == 0) {
            rv = hist_take(it, key, klen, found, val, m, tomb, &uk);
        }
    } else {
        if (leveldb_iter_valid(it)) {
            leveldb_iter_prev(it);
        } else {
            leveldb_iter_seek_to_last(it);
        }
        if (leveldb_iter_valid(it)) {
            rv = hist_take(it, key, klen, found, val, m, tomb, &uk);
        }
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (rv == 0 && err != NULL) {
        rv = lsm_ldb_err(errmsg, "read history", err);
    } else {
        leveldb_free(err);
        if (rv == LSM_ECORRUPT) {
            lsm_set_err(errmsg, "history record too short");
        }
    }
    leveldb_iter_destroy(it);
    if (rv == 0 && exact && !*found) {
        rv = cur_read_at(db, ro, key, klen, rev, sub, found, val, m, tomb, &hk, errmsg);
    }
    lsm_buf_fini(&hk);
    lsm_buf_fini(&uk);
    return rv;
}
