/* kvdb-lsmbench: throughput and latency figures for the lsm state machine.
 *
 *   kvdb-lsmbench [--dir DIR] [--keys N] [--value BYTES] [--skip-compaction] [--baseline]
 *                 [--no-compression] [--max-file-mib N]
 *
 * Phases: fdatasync latency of DIR's disk; load N keys in apply groups of 128 puts; single-put
 * applies; warm point gets (1 and 2 threads); 100-key ranges; RSS; then N overwrites (N old
 * revisions) and apply latency, paced (groups of 128 at 200/s, single puts at 5,000/s), for
 * 10 s without and then during the compaction of those revisions.  --baseline first measures bare
 * LevelDB (puts and gets) on the same disk, the ceiling for lsm's figures.  Prints one line per
 * figure. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <leveldb/c.h>

#include "lsm/lsm.h"

static uint64_t n_keys = 1000000;
static size_t value_len = 256;
static char *pool; /* random letters; each put takes its value at a random offset */
#define POOL_BYTES (4u << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Keys are dense "key%010llu" in [0, n_keys); loads visit them in a scattered order. */
static void key_of(uint64_t i, char *buf)
{
    snprintf(buf, 24, "key%010llu", (unsigned long long)(i % 10000000000ull));
}

static uint64_t scatter(uint64_t i)
{
    return (i * 2654435761ull) % n_keys; /* bijective: gcd(2654435761, 10^k) = 1 */
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_d);
    return v[(size_t)(p * (double)(n - 1))];
}

static void die(const char *what, int rv, const char *msg)
{
    fprintf(stderr, "lsmbench: %s: %s (%s)\n", what, lsm_strerror(rv), msg ? msg : "");
    exit(1);
}

/* RSS from /proc/self/status: total, anonymous (heap: memtables, caches, our buffers) and
 * file-backed (LevelDB mmaps table files; those pages are clean page cache, reclaimable). */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0) {
            kib = atol(line + n);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kib;
}

static void print_rss(const char *when)
{
    printf("rss %s: %ld MiB (anon %ld MiB, file-backed %ld MiB)\n", when,
           status_kib("VmRSS:") / 1024, status_kib("RssAnon:") / 1024,
           status_kib("RssFile:") / 1024);
}

static void fsync_latency(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("fsync probe");
        return;
    }
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    double lat[200];
    for (int i = 0; i < 200; i++) {
        double t = now();
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
            perror("fsync probe");
            break;
        }
        lat[i] = now() - t;
    }
    close(fd);
    unlink(path);
    printf("fdatasync 4KiB append: p50 %.3f ms, p99 %.3f ms\n", pct(lat, 200, 0.5) * 1e3,
           pct(lat, 200, 0.99) * 1e3);
}

struct writer
{
    struct lsm_store *s;
    uint64_t index;
    char keys[128][24];
    struct lsm_op ops[128];
    struct lsm_entry e[128];
};

/* Apply one group of @n puts of keys @first.. (mapped through @map). */
static void put_group(struct writer *w, uint64_t first, size_t n, bool scattered)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t k = scattered ? scatter(first + i) : (first + i) % n_keys;
        key_of(k, w->keys[i]);
        w->ops[i] = (struct lsm_op){.type = LSM_OP_PUT};
        w->ops[i].u.put.key = (struct lsm_bytes){w->keys[i], 13};
        w->ops[i].u.put.value =
            (struct lsm_bytes){pool + rnd() % (POOL_BYTES - value_len), value_len};
        w->e[i] = (struct lsm_entry){.index = ++w->index, .term = 1, .req = &w->ops[i]};
    }
    struct lsm_apply_out out;
    int rv = lsm_apply(w->s, w->e, n, &out);
    if (rv != 0) {
        die("apply", rv, lsm_errmsg(w->s));
    }
    lsm_apply_out_fini(&out);
}

static void load(struct writer *w)
{
    double t = now();
    for (uint64_t i = 0; i < n_keys; i += 128) {
        put_group(w, i, n_keys - i < 128 ? n_keys - i : 128, true);
    }
    double dt = now() - t;
    printf("load %" PRIu64 " keys, groups of 128: %.0f puts/s (%.1f s)\n", n_keys,
           (double)n_keys / dt, dt);
}

static void singles(struct writer *w, uint64_t n)
{
    double t = now();
    for (uint64_t i = 0; i < n; i++) {
        put_group(w, rnd() % n_keys, 1, false);
    }
    double dt = now() - t;
    printf("single-put applies (overwrites): %.0f puts/s (%" PRIu64 " puts)\n", (double)n / dt, n);
}

struct getter
{
    struct lsm_store *s;
    uint64_t n;
    uint64_t seed;
    bool range;
    uint64_t found;
};

static void *get_main(void *arg)
{
    struct getter *g = arg;
    char key[24], end[24], err[256];
    uint64_t x = g->seed;
    for (uint64_t i = 0; i < g->n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t k = x % (g->range ? n_keys - 100 : n_keys);
        key_of(k, key);
        struct lsm_range_req q = {.key = {key, 13}};
        if (g->range) {
            key_of(k + 100, end);
            q.range_end = (struct lsm_bytes){end, 13};
        }
        struct lsm_result r;
        int rv = lsm_range(g->s, &q, &r, err);
        if (rv != 0) {
            die("range", rv, err);
        }
        g->found += r.u.range.n_kvs;
        lsm_result_fini(&r);
    }
    return NULL;
}

static void reads(struct lsm_store *s, int threads, bool range, uint64_t per_thread)
{
    struct getter g[4];
    pthread_t th[4];
    double t = now();
    for (int i = 0; i < threads; i++) {
        g[i] = (struct getter){s, per_thread, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1), range, 0};
        pthread_create(&th[i], NULL, get_main, &g[i]);
    }
    uint64_t found = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        found += g[i].found;
    }
    double dt = now() - t;
    uint64_t total = per_thread * (uint64_t)threads;
    printf("%s, %d thread(s): %.0f %s/s (%.1f kvs per read)\n",
           range ? "100-key ranges" : "point gets (warm)", threads, (double)total / dt,
           range ? "ranges" : "gets", (double)found / (double)total);
}

/* Latency of @groups applies of @size puts each, in ms. */
/* Apply @groups groups of @size puts at @rate groups per second (paced, so that the phases
 * with and without a compaction load the store alike and compare interference, not
 * saturation), or until history compaction reaches @wait_rev (> 0). */
static void apply_latency(struct writer *w,
                          const char *label,
                          size_t groups,
                          size_t size,
                          double rate,
                          struct lsm_store *s,
                          int64_t wait_rev)
{
    double *lat = malloc(groups * sizeof *lat);
    size_t n = 0;
    double t0 = now();
    for (; n < groups; n++) {
        double due = t0 + (double)n / rate, t = now();
        if (t < due) {
            struct timespec ts = {(time_t)(due - t),
                                  (long)((due - t - (double)(time_t)(due - t)) * 1e9)};
            nanosleep(&ts, NULL);
            t = now();
        }
        put_group(w, rnd() % n_keys, size, false);
        lat[n] = (now() - t) * 1e3;
        if (wait_rev > 0 && n >= 100 && n % 64 == 0) {
            struct lsm_status st;
            lsm_status_get(s, &st);
            if (st.compacted_through >= wait_rev) {
                n++;
                break;
            }
        }
    }
    double dt = now() - t0;
    /* pct() sorts: read the max after it. */
    double p50 = pct(lat, n, 0.5);
    double p99 = pct(lat, n, 0.99);
    double max = lat[n - 1];
    printf(
        "apply latency, groups of %zu at %.0f/s, %s: p50 %.3f ms, p99 %.3f ms, max %.3f ms "
        "(%zu groups in %.1f s)\n",
        size, rate, label, p50, p99, max, n, dt);
    free(lat);
}

static void compaction_phase(struct writer *w)
{
    /* N overwrites leave N old revisions below the current one. */
    for (uint64_t i = 0; i < n_keys; i += 128) {
        put_group(w, i, 128, true);
    }
    struct lsm_status st;
    lsm_status_get(w->s, &st);
    int64_t target = st.revision;
    /* 200 groups of 128 (25,600 puts/s) and 5,000 single puts per second: a busy member's
     * apply rates, 10 s without a compaction, then for as long as one runs. */
    apply_latency(w, "no compaction", 2000, 128, 200, w->s, 0);
    apply_latency(w, "no compaction", 50000, 1, 5000, w->s, 0);
    struct lsm_op c = {.type = LSM_OP_COMPACT, .u.compact.revision = target};
    struct lsm_entry e = {.index = ++w->index, .term = 1, .req = &c};
    struct lsm_apply_out out;
    double t = now();
    int rv = lsm_apply(w->s, &e, 1, &out);
    if (rv != 0 || out.results[0].err != 0) {
        die("compact", rv ? rv : out.results[0].err, lsm_errmsg(w->s));
    }
    lsm_apply_out_fini(&out);
    apply_latency(w, "during compaction", 1000000, 128, 200, w->s, target);
    lsm_compact_wait(w->s, target);
    printf("compaction of %" PRIu64 " old revisions: %.1f s\n", n_keys, now() - t);
    /* Once more with single puts, against a second compaction of the same size. */
    for (uint64_t i = 0; i < n_keys; i += 128) {
        put_group(w, i, 128, true);
    }
    lsm_status_get(w->s, &st);
    c.u.compact.revision = st.revision;
    e = (struct lsm_entry){.index = ++w->index, .term = 1, .req = &c};
    if (lsm_apply(w->s, &e, 1, &out) != 0) {
        die("compact", LSM_EIO, lsm_errmsg(w->s));
    }
    lsm_apply_out_fini(&out);
    apply_latency(w, "during compaction", 100000000, 1, 5000, w->s, st.revision);
    lsm_compact_wait(w->s, st.revision);
}

/* The ceiling: bare LevelDB with lsm's options, one 256-byte record per put and no read (lsm
 * reads the current record, then writes it and the revision log entry, plus the replaced
 * version into history on an overwrite). */
static void raw_baseline(const char *dir, const struct lsm_options *lo)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw", dir);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_cache_t *cache = leveldb_cache_create_lru(lo->block_cache_bytes);
    leveldb_filterpolicy_t *bloom = leveldb_filterpolicy_create_bloom(lo->bloom_bits_per_key);
    leveldb_options_set_create_if_missing(o, 1);
    leveldb_options_set_cache(o, cache);
    leveldb_options_set_filter_policy(o, bloom);
    leveldb_options_set_write_buffer_size(o, lo->write_buffer_bytes);
    leveldb_options_set_max_open_files(o, lo->max_open_files);
    leveldb_options_set_max_file_size(o, lo->max_file_bytes);
    leveldb_options_set_compression(
        o, lo->no_compression ? leveldb_no_compression : leveldb_snappy_compression);
    char *err = NULL;
    leveldb_t *db = leveldb_open(o, path, &err);
    if (err != NULL) {
        fprintf(stderr, "raw leveldb: %s\n", err);
        exit(1);
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    char key[24];
    double t = now();
    for (uint64_t i = 0; i < n_keys; i += 128) {
        leveldb_writebatch_clear(b);
        for (uint64_t j = i; j < i + 128 && j < n_keys; j++) {
            key_of(scatter(j), key);
            leveldb_writebatch_put(b, key, 13, pool + rnd() % (POOL_BYTES - value_len), value_len);
        }
        leveldb_write(db, wo, b, &err);
    }
    double dt = now() - t;
    printf("baseline: bare leveldb, 1 record per put, groups of 128: %.0f puts/s\n",
           (double)n_keys / dt);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    t = now();
    for (int i = 0; i < 500000; i++) {
        key_of(rnd() % n_keys, key);
        size_t vlen;
        char *v = leveldb_get(db, ro, key, 13, &vlen, &err);
        leveldb_free(v);
    }
    printf("baseline: bare leveldb point gets, 1 thread: %.0f gets/s\n", 500000 / (now() - t));
    leveldb_readoptions_destroy(ro);
    leveldb_writebatch_destroy(b);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    leveldb_options_destroy(o);
    leveldb_cache_destroy(cache);
    leveldb_filterpolicy_destroy(bloom);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", path);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    char dir[4096] = "";
    bool compaction = true;
    bool baseline = false;
    struct lsm_options opts;
    lsm_options_default(&opts);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        } else if (!strcmp(argv[i], "--keys") && i + 1 < argc) {
            n_keys = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--value") && i + 1 < argc) {
            value_len = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--skip-compaction")) {
            compaction = false;
        } else if (!strcmp(argv[i], "--baseline")) {
            baseline = true;
        } else if (!strcmp(argv[i], "--max-file-mib") && i + 1 < argc) {
            opts.max_file_bytes = (size_t)strtoull(argv[++i], NULL, 10) << 20;
        } else if (!strcmp(argv[i], "--no-compression")) {
            opts.no_compression = true; /* the server's --backend-compression none */
        } else {
            fprintf(stderr,
                    "usage: %s [--dir DIR] [--keys N] [--value BYTES] "
                    "[--skip-compaction] [--baseline] [--no-compression] [--max-file-mib N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "/tmp/kvdb-lsmbench-XXXXXX");
        if (mkdtemp(dir) == NULL) {
            perror("mkdtemp");
            return 1;
        }
    }
    if (value_len == 0 || value_len > POOL_BYTES / 2) {
        fprintf(stderr, "lsmbench: --value must be in 1..%u\n", POOL_BYTES / 2);
        return 2;
    }
    pool = malloc(POOL_BYTES);
    for (size_t i = 0; i < POOL_BYTES; i++) {
        pool[i] = (char)('a' + rnd() % 26); /* distinct values, so compression gains little */
    }
    fsync_latency(dir);
    if (baseline) {
        raw_baseline(dir, &opts);
    }
    char db[4200], err[256];
    snprintf(db, sizeof db, "%s/db", dir);
    static struct writer w;
    int rv = lsm_open(db, &opts, &w.s, err);
    if (rv != 0) {
        die("open", rv, err);
    }
    print_rss("before load");
    load(&w);
    print_rss("after load");
    singles(&w, 100000);
    reads(w.s, 1, false, 200000); /* warm-up */
    reads(w.s, 1, false, 1000000);
    reads(w.s, 2, false, 1000000);
    reads(w.s, 1, true, 50000);
    reads(w.s, 2, true, 50000);
    struct lsm_status st;
    lsm_status_get(w.s, &st);
    print_rss("after reads");
    printf("db size %.1f MiB\n", (double)st.db_size_bytes / (1 << 20));
    if (compaction) {
        compaction_phase(&w);
        lsm_status_get(w.s, &st);
        printf("db size after compactions: %.1f MiB\n", (double)st.db_size_bytes / (1 << 20));
        print_rss("at the end");
    }
    lsm_close(w.s);
    free(pool);
    printf("dir: %s (remove it when done)\n", dir);
    return 0;
}
