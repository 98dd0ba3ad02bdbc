/* Private to lsm/: the state of one apply group (pending writes visible to later requests). */
#ifndef KV_LSM_ACTX_H
#define KV_LSM_ACTX_H

#include "lsm/internal.h"

/* One key version written by this group (immutable once made; freed with the group). */
struct lsm_rec
{
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
    bool live; /* false: tombstone */
    struct lsm_meta m;
};

struct lsm_actx
{
    struct lsm_store *s;
    leveldb_writebatch_t *wb;
    struct lsm_rec **ovl; /* newest pending version per key, sorted by key */
    size_t n_ovl, cap_ovl;
    struct lsm_rec **hist; /* every pending version, in revision order */
    size_t n_hist, cap_hist;
    struct lsm_event *ev;
    size_t n_ev, cap_ev;
    int64_t rev;         /* current revision including earlier requests of the group */
    int64_t compact_rev; /* likewise */
    bool compact_changed;
    uint32_t sub;      /* changes made by the request being applied */
    struct lsm_buf kb; /* scratch key */
    struct lsm_buf vb; /* scratch value */
};

/* The current version of @key as this group sees it.  *@found false if absent.  val is
 * borrowed: valid until the next call. */
int lsm_actx_get(struct lsm_actx *c,
                 const uint8_t *key,
                 size_t klen,
                 bool *found,
                 const uint8_t **val,
                 size_t *vlen,
                 struct lsm_meta *m);
/* Visit the live keys of @sp at revision @rev (0 = current) as this group sees them. */
int lsm_actx_scan(struct lsm_actx *c,
                  const struct lsm_span *sp,
                  int64_t rev,
                  lsm_visit_fn fn,
                  void *arg);
/* Record a change (put when @live, else delete) at revision c->rev + 1.  @prev: the version
 * being replaced (NULL if none; required for a delete), with its value; @prev_sub: its
 * sub-revision (lsm_meta.sub as lsm_actx_get or a scan gave it). */
int lsm_actx_write(struct lsm_actx *c,
                   const uint8_t *key,
                   size_t klen,
                   bool live,
                   const uint8_t *val,
                   size_t vlen,
                   const struct lsm_meta *m,
                   const struct lsm_kv *prev,
                   uint32_t prev_sub);

/* txn.c */
int lsm_exec_op(struct lsm_actx *c, const struct lsm_op *op, struct lsm_result *res);

#endif /* KV_LSM_ACTX_H */
