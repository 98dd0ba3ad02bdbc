/* The key filter: an in-memory Bloom filter of every key that has a current record, so that a
 * put of a key that certainly does not exist skips the LevelDB read of its current record.
 * That read is a miss for every new key and costs a probe of each level-0 table and one table
 * per deeper level (about 2.5 µs, 40% of a load's apply time; docs/bench-lsm.md).
 *
 * Only the apply thread reads it.  It is authoritative ("complete") once it holds every key of
 * some state at or before the apply thread's: the store was empty at open, or the file saved
 * at the last clean close matches the applied index (it is removed once read), or the builder
 * thread has scanned the current records of a snapshot taken at open.  Until then every put reads.
 * Keys are never removed (a delete leaves its bits: a false positive only costs the read). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsm/internal.h"

#define KF_FILE "KEYFILTER"
#define KF_MAGIC "KVKEYF01"
#define KF_PROBES 5
#define KF_HDR 48 /* magic, applied index, applied term, bytes, probes, hash */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t key_hash(const uint8_t *k, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ len;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ k[i]) * 1099511628211ull;
    }
    return mix64(h);
}

static uint64_t words_hash(const _Atomic uint64_t *w, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        h = mix64(h ^ atomic_load_explicit(&w[i], memory_order_relaxed));
    }
    return h;
}

/* Double hashing: probe i sets bit (h1 + i * h2) mod size. */
void lsm_kf_add(struct lsm_store *s, const uint8_t *key, size_t len)
{
    struct lsm_kfilter *f = &s->kf;
    if (f->words == NULL) {
        return;
    }
    uint64_t h = key_hash(key, len), h2 = (h >> 32) | 1;
    for (int i = 0; i < KF_PROBES; i++, h += h2) {
        uint64_t bit = h & f->mask;
        atomic_fetch_or_explicit(&f->words[bit >> 6], 1ull << (bit & 63), memory_order_relaxed);
    }
}

bool lsm_kf_absent(struct lsm_store *s, const uint8_t *key, size_t len)
{
    struct lsm_kfilter *f = &s->kf;
    if (f->words == NULL || !atomic_load_explicit(&f->complete, memory_order_acquire)) {
        return false;
    }
    uint64_t h = key_hash(key, len), h2 = (h >> 32) | 1;
    for (int i = 0; i < KF_PROBES; i++, h += h2) {
        uint64_t bit = h & f->mask;
        uint64_t w = atomic_load_explicit(&f->words[bit >> 6], memory_order_relaxed);
        if (!(w & (1ull << (bit & 63)))) {
            return true;
        }
    }
    return false;
}

static void kf_path(const struct lsm_store *s, char *buf, size_t n, const char *suffix)
{
    snprintf(buf, n, "%s/%s%s", s->dir, KF_FILE, suffix);
}

/* Load the filter saved at the last clean close if it describes the applied state. */
static bool kf_load(struct lsm_store *s)
{
    struct lsm_kfilter *f = &s->kf;
    char path[4200];
    kf_path(s, path, sizeof path, "");
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return false;
    }
    uint8_t hdr[KF_HDR];
    bool ok = fread(hdr, 1, sizeof hdr, fp) == sizeof hdr && memcmp(hdr, KF_MAGIC, 8) == 0 &&
              lsm_get64(hdr + 8) == s->applied_index && lsm_get64(hdr + 16) == s->applied_term &&
              lsm_get64(hdr + 24) == f->n_words * 8 && lsm_get64(hdr + 32) == KF_PROBES &&
              fread((void *)f->words, 8, f->n_words, fp) == f->n_words &&
              words_hash(f->words, f->n_words) == lsm_get64(hdr + 40);
    fclose(fp);
    unlink(path); /* stale at the first apply; a crash before the next close means a rebuild */
    if (!ok) {
        memset((void *)f->words, 0, f->n_words * 8);
    }
    return ok;
}

/* Save a complete filter for the next open (best effort: a missing or torn file only means a
 * rebuild).  Called at close, after the last apply. */
static void kf_save(struct lsm_store *s)
{
    struct lsm_kfilter *f = &s->kf;
    char tmp[4200], path[4200];
    kf_path(s, tmp, sizeof tmp, ".tmp");
    kf_path(s, path, sizeof path, "");
    FILE *fp = fopen(tmp, "wb");
    if (fp == NULL) {
        return;
    }
    uint8_t hdr[KF_HDR];
    memcpy(hdr, KF_MAGIC, 8);
    lsm_put64(hdr + 8, s->applied_index);
    lsm_put64(hdr + 16, s->applied_term);
    lsm_put64(hdr + 24, f->n_words * 8);
    lsm_put64(hdr + 32, KF_PROBES);
    lsm_put64(hdr + 40, words_hash(f->words, f->n_words));
    bool ok = fwrite(hdr, 1, sizeof hdr, fp) == sizeof hdr &&
              fwrite((const void *)f->words, 8, f->n_words, fp) == f->n_words;
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
    }
}

static bool kf_stopping(struct lsm_store *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Add every key with a current record in the snapshot taken at open; applies add the keys
 * they create meanwhile, so at the end the filter covers the apply thread's state. */
static void *kf_build_main(void *arg)
{
    struct lsm_store *s = arg;
    struct lsm_kfilter *f = &s->kf;
    lsm_background_thread("kv-lsm-keys");
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(ro, 1);
    leveldb_readoptions_set_fill_cache(ro, 0); /* a full scan would evict the hot set */
    leveldb_readoptions_set_snapshot(ro, f->snap);
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, ro);
    uint8_t pre = LSM_P_CUR;
    size_t n = 0;
    bool stopped = false;
    for (leveldb_iter_seek(it, (const char *)&pre, 1); leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &klen);
        if (klen < 1 || k[0] != LSM_P_CUR) {
            break;
        }
        lsm_kf_add(s, k + 1, klen - 1);
        if (++n % 4096 == 0 && kf_stopping(s)) {
            stopped = true;
            break;
        }
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err == NULL && !stopped) {
        atomic_store_explicit(&f->complete, true, memory_order_release);
    }
    if (err != NULL) {
        /* A failed scan leaves the filter unused (every put reads); a damaged table it met must
         * still stop the applies, or the store would go on with a hole the reads skip. */
        char msg[256];
        int rv = lsm_ldb_err(msg, "build key filter", err);
        lsm_bg_failed(s, rv, msg);
    }
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    return NULL;
}

int lsm_kf_open(struct lsm_store *s)
{
    struct lsm_kfilter *f = &s->kf;
    if (s->opts.key_filter_bytes == 0) {
        return 0; /* disabled */
    }
    size_t bytes = 64u << 10;
    while (bytes * 2 <= s->opts.key_filter_bytes) {
        bytes *= 2;
    }
    f->n_words = bytes / 8;
    f->mask = (uint64_t)bytes * 8 - 1;
    f->words = calloc(f->n_words, sizeof *f->words);
    if (f->words == NULL) {
        return LSM_ENOMEM;
    }
    if (s->applied_index == 0 && s->rev == 0) {
        atomic_store(&f->complete, true); /* a new store: every key will pass lsm_kf_add */
        return 0;
    }
    if (kf_load(s)) {
        atomic_store(&f->complete, true);
        return 0;
    }
    /* The snapshot is taken here, before any apply, so that a key is either in it or added by
     * the apply that creates it. */
    f->snap = leveldb_create_snapshot(s->db);
    if (pthread_create(&f->builder, NULL, kf_build_main, s) != 0) {
        leveldb_release_snapshot(s->db, f->snap);
        f->snap = NULL;
        return 0; /* no filter: every put reads, as without one */
    }
    f->builder_started = true;
    return 0;
}

void lsm_kf_close(struct lsm_store *s)
{
    struct lsm_kfilter *f = &s->kf;
    if (f->builder_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true; /* the builder polls it */
        pthread_mutex_unlock(&s->mu);
        pthread_join(f->builder, NULL);
        f->builder_started = false;
    }
    if (f->snap != NULL) {
        leveldb_release_snapshot(s->db, f->snap);
        f->snap = NULL;
    }
    if (f->words != NULL && atomic_load(&f->complete) && !s->broken) {
        kf_save(s);
    }
    free((void *)f->words);
    f->words = NULL;
}

bool lsm_kf_complete(struct lsm_store *s)
{
    return s->kf.words != NULL && atomic_load(&s->kf.complete);
}
