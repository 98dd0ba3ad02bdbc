/* Background history compaction (etcd keyIndex.compact semantics) in bounded batches. */
#include <assert.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsm/src.h"

/* One pass state: deletions accumulate in a batch written every opts.compact_batch entries. */
struct cpass
{
    struct lsm_store *s;
    int64_t target;
    leveldb_writebatch_t *wb;
    size_t pending;
    struct lsm_buf key;  /* user key of the group being scanned */
    struct lsm_buf held; /* LevelDB key of the newest version <= target so far */
    bool held_tomb;
    bool held_cur; /* held is the key's current record: nothing follows it, it stays */
    bool have_held;
    int64_t batch_start_us; /* CLOCK_MONOTONIC: when the current batch's work began */
    char errmsg[256];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool stopping(struct lsm_store *s);

/* LevelDB makes each write sleep 1 ms while level 0 has 8 tables or more (and stops writes at
 * 12), and an apply queued behind the compactor's write waits that out too.  The compactor
 * holds its deletes while level 0 has 6 or more tables (up to 5 s a batch, then it goes on:
 * a compaction must end). */
static void wait_for_level0(struct lsm_store *s)
{
    for (int i = 0; i < 1000 && !stopping(s); i++) {
        char *v = leveldb_property_value(s->db, "leveldb.num-files-at-level0");
        int n = v != NULL ? atoi(v) : 0;
        leveldb_free(v);
        if (n < 6) {
            return;
        }
        usleep(5000);
    }
}

static int flush(struct cpass *p)
{
    if (p->pending == 0) {
        return 0;
    }
    wait_for_level0(p->s);
    char *err = NULL;
    /* pause_mu lets a checkpoint pause compaction between batches. */
    pthread_mutex_lock(&p->s->pause_mu);
    leveldb_write(p->s->db, p->s->wopts, p->wb, &err);
    pthread_mutex_unlock(&p->s->pause_mu);
    leveldb_writebatch_clear(p->wb);
    p->pending = 0;
    if (err != NULL) {
        leveldb_free(err);
        return LSM_EIO;
    }
    /* Rest as long as the batch took (reading the versions and writing the deletes): the
     * compactor takes at most half of a core, and an apply rarely finds it in LevelDB's write
     * queue or on a core it needs.  kvdb-lsmbench, 1M old revisions: single-put apply p99
     * during compaction 1.2 ms with sched_yield() alone, 0.09 ms with a pause (0.04 without
     * any compaction). */
    int64_t end = now_us(), work = end - p->batch_start_us;
    if (work > 0) {
        usleep((useconds_t)(work < 10000 ? work : 10000));
    }
    p->batch_start_us = now_us();
    return 0;
}

static int del(struct cpass *p, const uint8_t *k, size_t klen)
{
    leveldb_writebatch_delete(p->wb, (const char *)k, klen);
    if (++p->pending < p->s->opts.compact_batch) {
        return 0;
    }
    int rv = flush(p);
    /* Between batches: lsm_close must not wait for a whole pass. */
    return rv == 0 && stopping(p->s) ? LSM_ECLOSED : rv;
}

/* End of a key's versions: a tombstone that was the newest at or below target goes too. */
static int end_key(struct cpass *p)
{
    int rv = 0;
    if (p->have_held && p->held_tomb) {
        assert(!p->held_cur);
        rv = del(p, p->held.p, p->held.len);
    }
    p->have_held = false;
    return rv;
}

static bool stopping(struct lsm_store *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Keep, per key, only the newest version at or below target (unless a tombstone) and
 * everything above target.  Only history records go: a current record is its key's newest
 * version, so it is either above target or the one kept. */
static int compact_history(struct cpass *p, const leveldb_readoptions_t *ro)
{
    struct lsm_vit v;
    int rv = lsm_vit_open(&v, p->s->db, ro, NULL, 0, p->errmsg);
    size_t n = 0;
    while (rv == 0 && (rv = lsm_vit_next(&v)) == 0 && v.valid) {
        if (lsm_keycmp(v.key.p, v.key.len, p->key.p, p->key.len) != 0) {
            rv = end_key(p);
            p->key.len = 0;
            if (rv == 0) {
                rv = lsm_buf_add(&p->key, v.key.p, v.key.len);
            }
        }
        if (rv != 0 || v.meta.mod_rev > p->target) {
            continue;
        }
        if (p->have_held) {
            assert(!p->held_cur);
            rv = del(p, p->held.p, p->held.len); /* superseded at or below target */
        }
        p->held.len = 0;
        if (rv == 0) {
            rv = lsm_buf_add(&p->held, v.raw, v.rawlen);
        }
        p->held_tomb = v.tomb;
        p->held_cur = v.cur;
        p->have_held = true;
        if (++n % 4096 == 0 && stopping(p->s)) {
            rv = LSM_ECLOSED;
        }
    }
    if (rv == 0) {
        rv = end_key(p);
    }
    lsm_vit_close(&v);
    return rv;
}

/* The revision log below target is no longer servable (watchers get LSM_ECOMPACTED). */
static int compact_revlog(struct cpass *p, leveldb_iterator_t *it)
{
    uint8_t k0[13];
    lsm_key_rev(k0, 0, 0);
    int rv = 0;
    for (leveldb_iter_seek(it, (const char *)k0, sizeof k0); rv == 0 && leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &klen);
        if (klen != 13 || k[0] != LSM_P_REV || (int64_t)lsm_get64be(k + 1) >= p->target) {
            break;
        }
        rv = del(p, k, klen);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (rv == 0 && err != NULL) {
        return lsm_ldb_err(p->errmsg, "compact: scan revision log", err);
    }
    leveldb_free(err);
    return rv;
}

static int compact_pass(struct lsm_store *s, int64_t target, char *errmsg)
{
    struct cpass p = {.s = s, .target = target, .batch_start_us = now_us()};
    p.wb = leveldb_writebatch_create();
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(ro, 1);
    leveldb_readoptions_set_fill_cache(ro, 0); /* a full scan would evict the hot set */
    /* One state for the history and current iterators; applies go on meanwhile. */
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(s->db);
    leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, ro);
    int rv = compact_history(&p, ro);
    if (rv == 0) {
        rv = compact_revlog(&p, it);
    }
    if (rv == 0) {
        uint8_t v[8];
        lsm_put64(v, (uint64_t)target);
        leveldb_writebatch_put(p.wb, LSM_META_COMPACTED, strlen(LSM_META_COMPACTED), (char *)v, 8);
        p.pending++;
        rv = flush(&p);
    }
    leveldb_iter_destroy(it);
    leveldb_release_snapshot(s->db, snap);
    leveldb_readoptions_destroy(ro);
    leveldb_writebatch_destroy(p.wb);
    lsm_buf_fini(&p.key);
    lsm_buf_fini(&p.held);
    memcpy(errmsg, p.errmsg, sizeof p.errmsg);
    return rv;
}

/* leveldb_compact_range() rewrites every level but the deepest one holding data, and a memtable
 * flush may put its table straight into level 2: versions written and removed within one
 * memtable (a small store filled up to its quota, then emptied) would stay on disk.  Writing the
 * compaction mark again (same value; the key is in the table the pass's own deletes were flushed
 * into) makes a small table that overlaps it one level up, so a second compact_range merges the
 * two and drops what was removed. */
static void reclaim_deepest(struct lsm_store *s, int64_t target)
{
    uint8_t v[8];
    lsm_put64(v, (uint64_t)target);
    char *err = NULL;
    leveldb_put(s->db, s->wopts, LSM_META_COMPACTED, strlen(LSM_META_COMPACTED), (char *)v, 8,
                &err);
    if (err != NULL) {
        leveldb_free(err); /* nothing lost: the space comes back at LevelDB's own compactions */
        return;
    }
    leveldb_compact_range(s->db, NULL, 0, NULL, 0);
}

void lsm_background_thread(const char *name)
{
    pthread_setname_np(pthread_self(), name);
    /* Per thread on Linux (a thread id is a PRIO_PROCESS id).  Raising nice needs no
     * privilege; failing to is harmless. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
}

static void *compactor_main(void *arg)
{
    lsm_background_thread("kv-lsm-compact");
    struct lsm_store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stopping && s->compact_target <= s->compacted_done) {
            pthread_cond_wait(&s->cond, &s->mu);
        }
        if (s->stopping) {
            break;
        }
        int64_t target = s->compact_target;
        pthread_mutex_unlock(&s->mu);
        char err[256] = "";
        int rv = compact_pass(s, target, err);
        lsm_bg_failed(s, rv, err);
        pthread_mutex_lock(&s->mu);
        if (rv != 0) {
            /* Retried at the next open; reads stay correct meanwhile (they check the mark). */
            s->compactor_dead = true;
            pthread_cond_broadcast(&s->cond);
            break;
        }
        s->compacted_done = target;
        pthread_cond_broadcast(&s->cond);
        if (s->reclaim) {
            /* Out of space (lsm_set_reclaim): give the space of what was just removed back to
             * the file system now rather than whenever LevelDB's own compactions get there.
             * Writes are refused meanwhile anyway; reads go on. */
            pthread_mutex_unlock(&s->mu);
            /* The read view's LevelDB snapshot predates this pass's deletes and would keep every
             * removed version alive through the compaction (writes being refused, no apply
             * comes to replace it): publish a view that includes them first.  Readers still
             * on the old view hold it only for their read. */
            pthread_mutex_lock(&s->apply_mu);
            (void)lsm_view_publish(s); /* ENOMEM: less is reclaimed now, more at the next pass */
            pthread_mutex_unlock(&s->apply_mu);
            leveldb_compact_range(s->db, NULL, 0, NULL, 0);
            reclaim_deepest(s, target);
            pthread_mutex_lock(&s->mu);
            s->db_size_at_ms = 0; /* the next status reads the new size */
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int lsm_compactor_start(struct lsm_store *s)
{
    if (pthread_create(&s->compactor, NULL, compactor_main, s) != 0) {
        lsm_set_err(s->errmsg, "start compaction thread");
        return LSM_ENOMEM;
    }
    s->compactor_started = true;
    return 0;
}

void lsm_compactor_stop(struct lsm_store *s)
{
    if (!s->compactor_started) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->compactor, NULL);
    s->compactor_started = false;
}

void lsm_compactor_kick(struct lsm_store *s, int64_t target)
{
    pthread_mutex_lock(&s->mu);
    if (target > s->compact_target) {
        s->compact_target = target;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

int lsm_compact_wait(struct lsm_store *s, int64_t revision)
{
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && !s->compactor_dead && s->compacted_done < revision) {
        pthread_cond_wait(&s->cond, &s->mu);
    }
    int rv = s->compacted_done >= revision ? 0 : LSM_ECLOSED;
    pthread_mutex_unlock(&s->mu);
    return rv;
}

void lsm_set_reclaim(struct lsm_store *s, bool on)
{
    pthread_mutex_lock(&s->mu);
    s->reclaim = on;
    pthread_mutex_unlock(&s->mu);
}
