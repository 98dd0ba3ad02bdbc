/* Pull iterators over the keys of a span: current state, or history as of a revision. */
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
        lsm_meta_decode((const uint8_t *)v, &src->meta);
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
    src->it = leveldb_create_iterator(db, ro);
    int rv = rev == 0 ? lsm_key_cur(&src->tmp, sp->key, sp->key_len)
                      : lsm_key_hist_prefix(&src->tmp, sp->key, sp->key_len);
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
    lsm_buf_fini(&src->tmp);
    lsm_buf_fini(&src->hkey);
    memset(src, 0, sizeof *src);
}

static int iter_status(struct lsm_src *src)
{
    char *err = NULL;
    leveldb_iter_get_error(src->it, &err);
    if (err != NULL) {
        return lsm_ldb_err(src->errmsg, "iterate", err);
    }
    return 0;
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
    if (!leveldb_iter_valid(src->it)) {
        return iter_status(src);
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
    lsm_meta_decode(v, &src->meta);
    src->tomb = false;
    src->valid = true;
    leveldb_iter_next(src->it);
    return 0;
}

/* Take the history entry under the iterator as the candidate version of src->key. */
static int take_hist(struct lsm_src *src, int64_t rev)
{
    size_t vlen;
    const uint8_t *v = (const uint8_t *)leveldb_iter_value(src->it, &vlen);
    if (vlen < LSM_HIST_HDR) {
        lsm_set_err(src->errmsg, "history record of %zu bytes", vlen);
        return LSM_ECORRUPT;
    }
    src->tomb = (v[0] & LSM_HIST_TOMB) != 0;
    lsm_meta_decode(v + 1, &src->meta);
    src->meta.mod_rev = rev;
    src->val.len = 0;
    return lsm_buf_add(&src->val, v + LSM_HIST_HDR, vlen - LSM_HIST_HDR);
}

/* One user key's versions are consecutive: keep the newest at or below src->rev. */
static int next_hist(struct lsm_src *src)
{
    for (;;) {
        src->valid = false;
        if (!leveldb_iter_valid(src->it)) {
            return iter_status(src);
        }
        size_t klen;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(src->it, &klen);
        if (klen < 1 || k[0] != LSM_P_HIST) {
            return 0;
        }
        int64_t r;
        int rv = lsm_key_hist_parse(k, klen, &src->key, &r, NULL);
        if (rv != 0) {
            lsm_set_err(src->errmsg, "bad history key");
            return rv;
        }
        if (past_end(&src->sp, src->key.p, src->key.len)) {
            return 0;
        }
        bool have = false;
        while (leveldb_iter_valid(src->it)) {
            k = (const uint8_t *)leveldb_iter_key(src->it, &klen);
            if (k[0] != LSM_P_HIST || lsm_key_hist_parse(k, klen, &src->hkey, &r, NULL) != 0 ||
                lsm_keycmp(src->hkey.p, src->hkey.len, src->key.p, src->key.len) != 0) {
                break;
            }
            if (r <= src->rev) {
                if ((rv = take_hist(src, r)) != 0) {
                    return rv;
                }
                have = true;
            }
            leveldb_iter_next(src->it);
        }
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
    if (src->it == NULL) {
        src->valid = false;
        return 0;
    }
    return src->rev == 0 ? next_cur(src) : next_hist(src);
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
    const uint8_t *hk = (const uint8_t *)leveldb_iter_key(it, &hlen);
    *found = false;
    if (hlen < 1 || hk[0] != LSM_P_HIST || lsm_key_hist_parse(hk, hlen, uk, &r, NULL) != 0 ||
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
    val->len = 0;
    *found = true;
    return lsm_buf_add(val, v + LSM_HIST_HDR, vlen - LSM_HIST_HDR);
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
    lsm_buf_fini(&hk);
    lsm_buf_fini(&uk);
    return rv;
}
