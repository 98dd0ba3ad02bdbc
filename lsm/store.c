/* Opening and closing the store, published read views, status, and releasing results. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lsm/internal.h"

const char *lsm_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case num:          \
        return msg;
        LSM_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

void lsm_options_default(struct lsm_options *o)
{
    memset(o, 0, sizeof *o); /* every flag off; callers set fields after this */
    o->block_cache_bytes = 8u << 20;
    o->bloom_bits_per_key = 10;
    o->write_buffer_bytes = 16u << 20;
    o->max_open_files = 500;
    o->max_file_bytes = 8u << 20;
    o->key_filter_bytes = 8u << 20;
    o->max_txn_ops = 128;
    o->compact_batch = 128;
}

static void options_resolve(struct lsm_options *o, const struct lsm_options *in)
{
    lsm_options_default(o);
    if (in == NULL) {
        return;
    }
    if (in->block_cache_bytes) {
        o->block_cache_bytes = in->block_cache_bytes;
    }
    if (in->bloom_bits_per_key) {
        o->bloom_bits_per_key = in->bloom_bits_per_key;
    }
    if (in->write_buffer_bytes) {
        o->write_buffer_bytes = in->write_buffer_bytes;
    }
    if (in->max_open_files) {
        o->max_open_files = in->max_open_files;
    }
    if (in->max_file_bytes) {
        o->max_file_bytes = in->max_file_bytes;
    }
    if (in->key_filter_bytes) {
        o->key_filter_bytes = in->key_filter_bytes;
    }
    if (in->no_key_filter) {
        o->key_filter_bytes = 0;
    }
    if (in->max_txn_ops) {
        o->max_txn_ops = in->max_txn_ops;
    }
    if (in->compact_batch) {
        o->compact_batch = in->compact_batch;
    }
    o->no_compression = in->no_compression;
}

/* Read an 8- or 16-byte meta record; absent records read as zero. */
static int meta_read(struct lsm_store *s, const char *name, uint64_t *a, uint64_t *b)
{
    char *err = NULL;
    size_t vlen = 0;
    char *v = leveldb_get(s->db, s->ropts, name, strlen(name), &vlen, &err);
    if (err != NULL) {
        return lsm_ldb_err(s->errmsg, name, err);
    }
    *a = 0;
    if (b != NULL) {
        *b = 0;
    }
    if (v == NULL) {
        return 0;
    }
    size_t want = b != NULL ? 16 : 8;
    if (vlen != want) {
        leveldb_free(v);
        lsm_set_err(s->errmsg, "meta record %s: %zu bytes, want %zu", name, vlen, want);
        return LSM_ECORRUPT;
    }
    *a = lsm_get64((const uint8_t *)v);
    if (b != NULL) {
        *b = lsm_get64((const uint8_t *)v + 8);
    }
    leveldb_free(v);
    return 0;
}

/* A new store records its layout version; an existing one must have this build's. */
static int check_format(struct lsm_store *s, uint64_t rev)
{
    uint64_t format;
    int rv = meta_read(s, LSM_META_FORMAT, &format, NULL);
    if (rv != 0 || format == LSM_FORMAT) {
        return rv;
    }
    if (format != 0 || s->applied_index != 0 || rev != 0) {
        lsm_set_err(s->errmsg,
                    "store layout version %llu, this build reads version %d (lsm/FORMAT.md): "
                    "restore a snapshot saved from the old data dir with the old build's tools",
                    (unsigned long long)format, LSM_FORMAT);
        return LSM_ECORRUPT;
    }
    uint8_t v[8];
    lsm_put64(v, LSM_FORMAT);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, 1); /* once, at creation */
    char *err = NULL;
    leveldb_put(s->db, wo, LSM_META_FORMAT, strlen(LSM_META_FORMAT), (char *)v, sizeof v, &err);
    leveldb_writeoptions_destroy(wo);
    return err != NULL ? lsm_ldb_err(s->errmsg, "record layout version", err) : 0;
}

static int load_state(struct lsm_store *s)
{
    uint64_t rev, crev, done;
    int rv = meta_read(s, LSM_META_APPLIED, &s->applied_index, &s->applied_term);
    if (rv == 0) {
        rv = meta_read(s, LSM_META_REV, &rev, NULL);
    }
    if (rv == 0) {
        rv = meta_read(s, LSM_META_COMPACT, &crev, NULL);
    }
    if (rv == 0) {
        rv = meta_read(s, LSM_META_COMPACTED, &done, NULL);
    }
    if (rv == 0) {
        rv = check_format(s, rev);
    }
    if (rv != 0) {
        return rv;
    }
    s->rev = (int64_t)rev;
    s->compact_rev = (int64_t)crev;
    s->compact_target = (int64_t)crev;
    s->compacted_done = (int64_t)done;
    return 0;
}

/* A file of LevelDB's data (tables, logs, manifests), not its info log or lock file. */
static bool is_store_file(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "MANIFEST-", 9) == 0 ||
           (n > 4 && (strcmp(name + n - 4, ".ldb") == 0 || strcmp(name + n - 4, ".sst") == 0 ||
                      strcmp(name + n - 4, ".log") == 0));
}

/* How many store files @dir holds, and one of their names in @example. */
static size_t count_store_files(const char *dir, char *example, size_t size)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (is_store_file(e->d_name) && n++ == 0) {
            snprintf(example, size, "%s", e->d_name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* Read CURRENT into @manifest: "MANIFEST-<digits>\n" is all it may hold.  ENOENT if absent,
 * EINVAL if garbled, or the errno of the read. */
static int read_current(const char *dir, char *manifest, size_t size)
{
    char path[4096], buf[64];
    snprintf(path, sizeof path, "%s/CURRENT", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int err = ferror(f) ? EIO : 0;
    fclose(f);
    buf[n] = '\0';
    if (err != 0) {
        return err;
    }
    size_t digits = 0;
    while (n > 9 && isdigit((unsigned char)buf[9 + digits])) {
        digits++;
    }
    if (strncmp(buf, "MANIFEST-", 9) != 0 || digits == 0 || n != 9 + digits + 1 ||
        buf[n - 1] != '\n') {
        return EINVAL;
    }
    buf[n - 1] = '\0';
    snprintf(manifest, size, "%s", buf);
    return 0;
}

/* LevelDB takes a directory without CURRENT for a new database (create_if_missing): it would
 * start an empty store over the old one and delete its tables as obsolete.  So before LevelDB
 * sees it, a directory that holds store files must have a readable CURRENT naming a MANIFEST
 * that exists.  Nothing is repaired: the caller restores or re-adds the member. */
static int check_dir(struct lsm_store *s)
{
    char manifest[64], example[256] = "", path[4096];
    int err = read_current(s->dir, manifest, sizeof manifest);
    if (err == ENOENT) {
        size_t n = count_store_files(s->dir, example, sizeof example);
        if (n == 0) {
            return 0; /* a new store (or a directory LevelDB never got to write) */
        }
        lsm_set_err(s->errmsg,
                    "CURRENT is missing but %zu store files remain (%s...): a damaged or "
                    "incomplete store, not a new one",
                    n, example);
        return LSM_ECORRUPT;
    }
    if (err == EINVAL) {
        lsm_set_err(s->errmsg,
                    "CURRENT is garbled (it must name the MANIFEST file): the store is damaged");
        return LSM_ECORRUPT;
    }
    if (err != 0) {
        lsm_set_err(s->errmsg, "read CURRENT: %s", strerror(err));
        return LSM_EIO;
    }
    snprintf(path, sizeof path, "%s/%s", s->dir, manifest);
    struct stat st;
    if (stat(path, &st) != 0) {
        err = errno;
        lsm_set_err(s->errmsg, "CURRENT names %s, which is %s: the store is damaged", manifest,
                    err == ENOENT ? "missing" : strerror(err));
        return err == ENOENT ? LSM_ECORRUPT : LSM_EIO;
    }
    return 0;
}

/* LevelDB's open errors, with the two that need a person's decision told apart: a LOCK held by
 * another process (another member on this directory) and a corruption (missing tables, a bad
 * MANIFEST). */
static int open_err(struct lsm_store *s, char *err)
{
    int rv = LSM_EIO;
    if (strstr(err, "/LOCK: ") != NULL) {
        lsm_set_err(s->errmsg,
                    "LOCK is held (%s): is another member running on this data dir? Stop it first",
                    err);
    } else if (strncmp(err, "Corruption: ", 12) == 0) {
        lsm_set_err(s->errmsg, "%s: the store is damaged", err + 12);
        rv = LSM_ECORRUPT;
    } else {
        lsm_set_err(s->errmsg, "open leveldb: %s", err);
    }
    leveldb_free(err);
    return rv;
}

static int ldb_open(struct lsm_store *s)
{
    int rv = check_dir(s);
    if (rv != 0) {
        return rv;
    }
    const struct lsm_options *o = &s->opts;
    s->lopts = leveldb_options_create();
    s->cache = leveldb_cache_create_lru(o->block_cache_bytes);
    leveldb_options_set_cache(s->lopts, s->cache);
    if (o->bloom_bits_per_key > 0) {
        s->filter = leveldb_filterpolicy_create_bloom(o->bloom_bits_per_key);
        leveldb_options_set_filter_policy(s->lopts, s->filter);
    }
    leveldb_options_set_write_buffer_size(s->lopts, o->write_buffer_bytes);
    leveldb_options_set_max_open_files(s->lopts, o->max_open_files);
    leveldb_options_set_max_file_size(s->lopts, o->max_file_bytes);
    leveldb_options_set_create_if_missing(s->lopts, 1);
    /* A damaged table, log or manifest fails the open, the read or the compaction that meets
     * it, instead of LevelDB dropping what it cannot read: the member must not serve, or hand
     * a follower, a state that differs from the log's. */
    leveldb_options_set_paranoid_checks(s->lopts, 1);
    leveldb_options_set_compression(
        s->lopts, o->no_compression ? leveldb_no_compression : leveldb_snappy_compression);
    s->ropts = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(s->ropts, 1);
    s->wopts = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(s->wopts, 0);
    char *err = NULL;
    s->db = leveldb_open(s->lopts, s->dir, &err);
    if (err != NULL) {
        s->db = NULL;
        return open_err(s, err);
    }
    return 0;
}

int lsm_open(const char *dir, const struct lsm_options *opts, struct lsm_store **out, char *errmsg)
{
    *out = NULL;
    struct lsm_store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->dir = strdup(dir)) == NULL) {
        free(s);
        lsm_set_err(errmsg, "open %s: out of memory", dir);
        return LSM_ENOMEM;
    }
    options_resolve(&s->opts, opts);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->pause_mu, NULL);
    pthread_mutex_init(&s->apply_mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rv = ldb_open(s);
    if (rv == 0) {
        rv = load_state(s);
    }
    if (rv == 0) {
        rv = lsm_kf_open(s);
    }
    if (rv == 0) {
        rv = lsm_view_publish(s);
    }
    if (rv == 0) {
        rv = lsm_compactor_start(s);
    }
    if (rv != 0) {
        lsm_set_err(errmsg, "open %s: %s", dir, s->errmsg);
        lsm_close(s);
        return rv;
    }
    *out = s;
    return 0;
}

void lsm_close(struct lsm_store *s)
{
    if (s == NULL) {
        return;
    }
    lsm_compactor_stop(s);
    if (s->db != NULL) {
        lsm_kf_close(s);
    }
    if (s->view != NULL) {
        lsm_view_release(s, s->view);
        s->view = NULL;
    }
    if (s->db != NULL) {
        leveldb_close(s->db);
    }
    if (s->lopts != NULL) {
        leveldb_options_destroy(s->lopts);
    }
    if (s->cache != NULL) {
        leveldb_cache_destroy(s->cache);
    }
    if (s->filter != NULL) {
        leveldb_filterpolicy_destroy(s->filter);
    }
    if (s->ropts != NULL) {
        leveldb_readoptions_destroy(s->ropts);
    }
    if (s->wopts != NULL) {
        leveldb_writeoptions_destroy(s->wopts);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->pause_mu);
    pthread_mutex_destroy(&s->apply_mu);
    pthread_cond_destroy(&s->cond);
    free(s->dir);
    free(s);
}

void lsm_bg_failed(struct lsm_store *s, int rv, const char *msg)
{
    if (rv != LSM_ECORRUPT) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&s->bg_corrupt)) {
        snprintf(s->bg_errmsg, sizeof s->bg_errmsg, "%s", msg);
        atomic_store(&s->bg_corrupt, true);
    }
    pthread_mutex_unlock(&s->mu);
}

const char *lsm_errmsg(const struct lsm_store *s)
{
    return s->errmsg;
}

struct lsm_view *lsm_view_acquire(struct lsm_store *s)
{
    pthread_mutex_lock(&s->mu);
    struct lsm_view *v = s->view;
    atomic_fetch_add(&v->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return v;
}

void lsm_view_release(struct lsm_store *s, struct lsm_view *v)
{
    if (atomic_fetch_sub(&v->refs, 1) == 1) {
        leveldb_readoptions_destroy(v->ro);
        leveldb_release_snapshot(s->db, v->snap);
        free(v);
    }
}

int lsm_view_publish(struct lsm_store *s)
{
    struct lsm_view *v = calloc(1, sizeof *v);
    if (v == NULL) {
        return LSM_ENOMEM;
    }
    v->snap = leveldb_create_snapshot(s->db);
    v->ro = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(v->ro, 1); /* a flipped bit is an error, not data */
    leveldb_readoptions_set_snapshot(v->ro, v->snap);
    v->rev = s->rev;
    v->compact_rev = s->compact_rev;
    v->applied_index = s->applied_index;
    v->applied_term = s->applied_term;
    atomic_init(&v->refs, 1);
    pthread_mutex_lock(&s->mu);
    struct lsm_view *old = s->view;
    s->view = v;
    pthread_mutex_unlock(&s->mu);
    if (old != NULL) {
        lsm_view_release(s, old);
    }
    return 0;
}

static uint64_t dir_size(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    uint64_t total = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            total += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return total;
}

void lsm_status_get(struct lsm_store *s, struct lsm_status *st)
{
    struct lsm_view *v = lsm_view_acquire(s);
    st->applied_index = v->applied_index;
    st->applied_term = v->applied_term;
    st->revision = v->rev;
    st->compact_revision = v->compact_rev;
    lsm_view_release(s, v);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_lock(&s->mu);
    st->compacted_through = s->compacted_done;
    st->key_filter_complete = lsm_kf_complete(s);
    /* The directory scan costs a stat per file: callers may ask per request (quota checks). */
    bool stale = s->db_size_at_ms == 0 || now_ms - s->db_size_at_ms >= 1000;
    pthread_mutex_unlock(&s->mu);
    uint64_t size = stale ? dir_size(s->dir) : 0;
    pthread_mutex_lock(&s->mu);
    if (stale) {
        s->db_size = size;
        s->db_size_at_ms = now_ms;
    }
    st->db_size_bytes = s->db_size;
    pthread_mutex_unlock(&s->mu);
}

void lsm_result_fini(struct lsm_result *r)
{
    switch (r->type) {
    case LSM_OP_RANGE:
        for (size_t i = 0; i < r->u.range.n_kvs; i++) {
            lsm_kv_fini(&r->u.range.kvs[i]);
        }
        free(r->u.range.kvs);
        break;
    case LSM_OP_PUT:
        lsm_kv_fini(&r->u.put.prev_kv);
        break;
    case LSM_OP_DELETE_RANGE:
        for (size_t i = 0; i < r->u.del.n_prev_kvs; i++) {
            lsm_kv_fini(&r->u.del.prev_kvs[i]);
        }
        free(r->u.del.prev_kvs);
        break;
    case LSM_OP_TXN:
        for (size_t i = 0; i < r->u.txn.n_responses; i++) {
            lsm_result_fini(&r->u.txn.responses[i]);
        }
        free(r->u.txn.responses);
        break;
    default:
        break;
    }
    memset(r, 0, sizeof *r);
}

void lsm_events_free(struct lsm_event *ev, size_t n)
{
    for (size_t i = 0; ev != NULL && i < n; i++) {
        lsm_kv_fini(&ev[i].kv);
        lsm_kv_fini(&ev[i].prev_kv);
    }
    free(ev);
}

void lsm_apply_out_fini(struct lsm_apply_out *out)
{
    for (size_t i = 0; out->results != NULL && i < out->n_results; i++) {
        lsm_result_fini(&out->results[i]);
    }
    free(out->results);
    lsm_events_free(out->events, out->n_events);
    memset(out, 0, sizeof *out);
}
