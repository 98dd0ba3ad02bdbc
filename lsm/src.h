/* Private to lsm/: pull iterators over a span's keys, now or as of a past revision, and over
 * every stored version of the keys. */
#ifndef KV_LSM_SRC_H
#define KV_LSM_SRC_H

#include "lsm/internal.h"

/* Every stored version of the keys from a start key on, in (key, revision, sub) order: the
 * history records (superseded versions and tombstones) merged with the current records (each
 * live key's newest version, newer than all of its history).  Both LevelDB iterators read
 * through the same read options, so give them a snapshot when the store may change meanwhile. */
struct lsm_vit
{
    leveldb_iterator_t *h;   /* 'h' records */
    leveldb_iterator_t *c;   /* 'c' records */
    leveldb_iterator_t *adv; /* the one to step before loading the next version */
    char *errmsg;
    struct lsm_buf hk; /* user key under h (parsed) */
    /* After lsm_vit_next() returns 0: valid says whether the fields below hold a version. */
    bool valid;
    bool cur;             /* a current record (never a tombstone) */
    bool tomb;            /* a tombstone (history only) */
    struct lsm_buf key;   /* user key */
    struct lsm_meta meta; /* with mod_rev and sub */
    const uint8_t *val;   /* borrowed until the next call */
    size_t vlen;
    const uint8_t *raw; /* the LevelDB key, borrowed until the next call */
    size_t rawlen;
};

/* Position before the first version of user key @start (len 0: the first key).  Close even
 * on error.  @ro is borrowed and must outlive the iterator. */
int lsm_vit_open(struct lsm_vit *v,
                 leveldb_t *db,
                 const leveldb_readoptions_t *ro,
                 const uint8_t *start,
                 size_t len,
                 char *errmsg);
/* Load the next version.  Errors: LSM_EIO (LevelDB), LSM_ECORRUPT (bad record), LSM_ENOMEM. */
int lsm_vit_next(struct lsm_vit *v);
void lsm_vit_close(struct lsm_vit *v);

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
    leveldb_iterator_t *it; /* current state */
    struct lsm_vit vit;     /* history: positioned on the first version not yet consumed */
    bool vit_open;
    bool single_pending; /* current single key: one get, no iterator */
    bool valid;
    bool tomb;
    struct lsm_buf key;
    struct lsm_buf val;
    struct lsm_meta meta;
    struct lsm_buf tmp;
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
