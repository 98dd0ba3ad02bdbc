/* Private to lsm/: the store object, key encodings and helpers shared by the lsm sources. */
#ifndef KV_LSM_INTERNAL_H
#define KV_LSM_INTERNAL_H

#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>

#include "lsm/lsm.h"

/* Key prefixes (lsm/FORMAT.md). */
#define LSM_P_META 'm'
#define LSM_P_CUR 'c'
#define LSM_P_HIST 'h'
#define LSM_P_REV 'r'
#define LSM_P_STATE 's' /* replicated state records: 's' + name */

/* A published read view: a LevelDB snapshot and the state it holds.  Reference-counted so the
 * apply thread can publish a new one while readers still use the old. */
struct lsm_view
{
    const leveldb_snapshot_t *snap;
    leveldb_readoptions_t *ro; /* reads at snap; shared by the view's readers (read-only) */
    int64_t rev;
    int64_t compact_rev;
    uint64_t applied_index;
    uint64_t applied_term;
    atomic_int refs;
};

/* keyfilter.c: keys with a current record, so that puts of new keys skip a read. */
struct lsm_kfilter
{
    _Atomic uint64_t *words; /* NULL: disabled */
    size_t n_words;
    uint64_t mask;                  /* bits - 1 (a power of two) */
    atomic_bool complete;           /* holds every key of the apply thread's state */
    const leveldb_snapshot_t *snap; /* the builder's, taken at open */
    pthread_t builder;
    bool builder_started;
};

struct lsm_store
{
    leveldb_t *db;
    leveldb_options_t *lopts;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *filter;
    leveldb_readoptions_t *ropts; /* no snapshot: apply thread reads */
    leveldb_writeoptions_t *wopts;
    struct lsm_options opts;
    char *dir;

    /* Apply-thread state (only the apply thread touches it). */
    uint64_t applied_index;
    uint64_t applied_term;
    int64_t rev;
    int64_t compact_rev;
    bool broken; /* a LevelDB write failed: refuse further applies */
    char errmsg[256];

    pthread_mutex_t mu; /* guards view, and the compaction fields below */
    struct lsm_view *view;

    pthread_mutex_t pause_mu; /* held by a compaction batch; checkpoint takes it to pause it */
    pthread_mutex_t apply_mu; /* held over an apply group's write and view publish; lets the
                               * compactor publish a view of a whole applied state */
    pthread_cond_t cond;      /* compaction target raised / progress / stop */
    pthread_t compactor;
    bool compactor_started;
    bool stopping;
    bool compactor_dead;    /* a compaction pass failed; retried at the next open */
    bool reclaim;           /* after each compaction pass, compact LevelDB fully (out of space) */
    int64_t compact_target; /* guarded by mu */
    int64_t compacted_done; /* guarded by mu */
    uint64_t db_size;       /* guarded by mu: last directory scan */
    int64_t db_size_at_ms;  /* guarded by mu: when (CLOCK_MONOTONIC ms), 0 = never */

    struct lsm_kfilter kf;

    atomic_bool bg_corrupt; /* a background scan met a damaged table: applies fail */
    char bg_errmsg[256];    /* what it found; written once, before bg_corrupt is set */
};

/* Decoded metadata of a key version (the mvcc fields besides key and value). */
struct lsm_meta
{
    int64_t create_rev;
    int64_t mod_rev;
    int64_t version;
    int64_t lease;
    uint32_t sub; /* change number within mod_rev (etcd's sub-revision); not in the 32-byte
                   * meta encoding: history keys and current records carry it */
};

/* ---- codec.c ---- */
void lsm_put64(uint8_t *p, uint64_t v);
uint64_t lsm_get64(const uint8_t *p);
void lsm_put64be(uint8_t *p, uint64_t v);
uint64_t lsm_get64be(const uint8_t *p);

/* A growable byte buffer used to build keys. */
struct lsm_buf
{
    uint8_t *p;
    size_t len;
    size_t cap;
};
int lsm_buf_reserve(struct lsm_buf *b, size_t n);
int lsm_buf_add(struct lsm_buf *b, const void *p, size_t n);
void lsm_buf_fini(struct lsm_buf *b);

/* state.c: @k = the LevelDB key of state record @name.  0 or LSM_ENOMEM. */
int lsm_state_key(struct lsm_buf *k, struct lsm_bytes name);

/* 'c' + key. */
int lsm_key_cur(struct lsm_buf *b, const void *key, size_t len);
/* 'h' + escaped key (no terminator): a bound for history scans. */
int lsm_key_hist_prefix(struct lsm_buf *b, const void *key, size_t len);
/* 'h' + escaped key + terminator (00 01) + big-endian rev + big-endian sub.  The sub-revision
 * keeps both versions when one txn puts a key and then deletes it (a put in one nested txn, a
 * delete range in a later one: etcd allows that). */
#define LSM_HIST_SUFFIX 14
int lsm_key_hist(struct lsm_buf *b, const void *key, size_t len, int64_t rev, uint32_t sub);
/* Split a history key: unescaped user key into @key (reset first), revision, sub (may be NULL). */
int lsm_key_hist_parse(const uint8_t *k,
                       size_t klen,
                       struct lsm_buf *key,
                       int64_t *rev,
                       uint32_t *sub);
/* 'r' + big-endian rev + big-endian sub. */
void lsm_key_rev(uint8_t out[13], int64_t rev, uint32_t sub);

/* Current value: meta (32 bytes) + sub (4, big-endian) + value.  History value: flags (1) +
 * meta + value. */
#define LSM_META_LEN 32
#define LSM_CUR_HDR 36
#define LSM_HIST_HDR 33
#define LSM_HIST_TOMB 1
void lsm_meta_encode(uint8_t *p, const struct lsm_meta *m);
/* Decode the 32 meta bytes; m->sub is set to 0 (the caller knows it from the record's key). */
void lsm_meta_decode(const uint8_t *p, struct lsm_meta *m);
/* The header of a current record: meta and sub. */
void lsm_cur_encode(uint8_t p[LSM_CUR_HDR], const struct lsm_meta *m);
void lsm_cur_decode(const uint8_t p[LSM_CUR_HDR], struct lsm_meta *m);

/* Range bounds in user-key space: @end_len == 0 with @unbounded false = single key. */
struct lsm_span
{
    const uint8_t *key;
    size_t key_len;
    const uint8_t *end;
    size_t end_len;
    bool single;    /* range_end empty */
    bool unbounded; /* range_end "\0": every key >= key */
};
void lsm_span_make(struct lsm_span *sp, struct lsm_bytes key, struct lsm_bytes end);
/* Does user key @k lie in @sp? */
bool lsm_span_has(const struct lsm_span *sp, const uint8_t *k, size_t len);
/* Compare user keys bytewise (shorter first on a common prefix). */
int lsm_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* A kv copy owning one allocation (key then value). */
int lsm_kv_fill(struct lsm_kv *kv,
                const uint8_t *key,
                size_t klen,
                const uint8_t *val,
                size_t vlen,
                bool with_value,
                const struct lsm_meta *m);
void lsm_kv_fini(struct lsm_kv *kv);

/* Copy a LevelDB error into @errmsg as "@what: <err>", free it, and return LSM_ECORRUPT for a
 * LevelDB corruption status (its text names the file only where LevelDB does), else LSM_EIO. */
int lsm_ldb_err(char *errmsg, const char *what, char *err);
void lsm_set_err(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- store.c ---- */
/* A background thread's (compactor, key filter builder) failure @rv: when it is LSM_ECORRUPT,
 * remember @msg (the first one) so that the next lsm_apply fails with it.  Any thread. */
void lsm_bg_failed(struct lsm_store *s, int rv, const char *msg);
struct lsm_view *lsm_view_acquire(struct lsm_store *s);
void lsm_view_release(struct lsm_store *s, struct lsm_view *v);
/* Publish the apply thread's state with a fresh snapshot. */
int lsm_view_publish(struct lsm_store *s);

/* ---- read.c: visiting the keys of a span at a revision ---- */

/* Called per live key version in key order; return nonzero to stop (that value is returned). */
typedef int (*lsm_visit_fn)(void *arg,
                            const uint8_t *key,
                            size_t klen,
                            const uint8_t *val,
                            size_t vlen,
                            const struct lsm_meta *m);

/* Collects a range result from visits. */
struct lsm_collect
{
    const struct lsm_range_req *req;
    struct lsm_range_result *res;
    size_t cap;
    size_t stop_after; /* 0 = keep all kvs; else stop copying after this many */
    int err;
};
int lsm_collect_visit(void *arg,
                      const uint8_t *key,
                      size_t klen,
                      const uint8_t *val,
                      size_t vlen,
                      const struct lsm_meta *m);
/* Sort and truncate a collected range result (etcd applierV3backend.Range). */
void lsm_collect_finish(struct lsm_collect *c);
/* How many kvs to copy before sorting is needed: limit + 1, or 0 for all. */
size_t lsm_collect_bound(const struct lsm_range_req *req);

/* Read one version of @key: with @exact, the version at (@rev, @sub), from history or the
 * current record; otherwise the newest one strictly before (@rev, @sub) in history.  (For a
 * version that exists, the one before it is always in history: the current record is a key's
 * newest version.)  *@found false if none; *@tomb for a tombstone. */
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
                  char *errmsg);

/* ---- checkpoint.c ---- */
/* Table numbers from a `leveldb.sstables` property value into *@out (malloc'd), *@n.
 * LSM_ENOMEM (*@out then holds what was parsed: free it). */
int lsm_tables_parse(const char *prop, uint64_t **out, size_t *n);
/* Link table @num of @src_dir into @dir under its own name; *@gone when LevelDB already deleted
 * it.  LSM_EIO with @errmsg. */
int lsm_table_link(const char *src_dir, const char *dir, uint64_t num, bool *gone, char *errmsg);

/* ---- verify.c ---- */
/* After a paranoid repair of @dir: LSM_ECORRUPT (or LSM_EIO for a read error) naming, as
 * @origin/<file>, the first table repair moved into @dir/lost; 0 when none. */
int lsm_lost_tables(const char *dir, const char *origin, char *errmsg);

/* ---- keyfilter.c ---- */
/* After load_state: take the saved filter, or start a build, or none (opts).  LSM_ENOMEM. */
int lsm_kf_open(struct lsm_store *s);
/* Stop the builder; save a complete filter.  Before LevelDB closes; no apply may follow. */
void lsm_kf_close(struct lsm_store *s);
/* Record a key that gets a current record.  Apply thread (and the builder). */
void lsm_kf_add(struct lsm_store *s, const uint8_t *key, size_t len);
/* True only if @key certainly has no current record.  Apply thread. */
bool lsm_kf_absent(struct lsm_store *s, const uint8_t *key, size_t len);
bool lsm_kf_complete(struct lsm_store *s);

/* ---- compact.c ---- */
/* Name the calling background thread and give it the lowest CPU priority (nice 19), so that
 * when it competes with the apply thread for a core the apply thread runs. */
void lsm_background_thread(const char *name);
int lsm_compactor_start(struct lsm_store *s);
void lsm_compactor_stop(struct lsm_store *s);
void lsm_compactor_kick(struct lsm_store *s, int64_t target);

/* ---- meta keys ---- */
#define LSM_META_APPLIED "m/applied"     /* index(8) term(8) */
#define LSM_META_REV "m/rev"             /* rev(8) */
#define LSM_META_COMPACT "m/compact"     /* compact revision(8): reads below fail */
#define LSM_META_COMPACTED "m/compacted" /* history physically compacted through(8) */
#define LSM_META_FORMAT "m/format"       /* layout version(8), LSM_FORMAT */

/* Layout version.  1: every version in history, current records without sub.  2: history
 * holds only superseded versions and tombstones (lsm/FORMAT.md). */
#define LSM_FORMAT 2

#endif /* KV_LSM_INTERNAL_H */
