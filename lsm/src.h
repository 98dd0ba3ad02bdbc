/* Private to lsm/: pull iterators over a span's keys, now or as of a past revision. */
#ifndef KV_LSM_SRC_H
#define KV_LSM_SRC_H

#include "lsm/internal.h"

/* After lsm_src_next() returns 0, valid says whether key/val/meta hold the next key of the span
 * (ascending).  For a history source, each key yields its newest version at or below rev;
 * tombstones are skipped unless with_tombs (then tomb says so). */
struct lsm_src
{
    leveldb_t *db;
    const leveldb_readoptions_t *ro;
    struct lsm_span sp;
    int64_t rev; /* 0 = current state */
    bool with_tombs;
    char *errmsg;
    leveldb_iterator_t *it;
    bool single_pending; /* current single key: one get, no iterator */
    bool valid;
    bool tomb;
    struct lsm_buf key;
    struct lsm_buf val;
    struct lsm_meta meta;
    struct lsm_buf tmp;
    struct lsm_buf hkey;
};

/* Open over @sp on @db with @ro (borrowed, must outlive the source).  Close even on error. */
int lsm_src_open(struct lsm_src *src,
                 leveldb_t *db,
                 const leveldb_readoptions_t *ro,
                 const struct lsm_span *sp,
                 int64_t rev,
                 char *errmsg);
int lsm_src_next(struct lsm_src *src);
void lsm_src_close(struct lsm_src *src);

#endif /* KV_LSM_SRC_H */
