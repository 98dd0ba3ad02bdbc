/* kvdb-walbench: WAL group-commit throughput and append-to-durable latency for fixed-size
 * entries at several batch sizes, beside a raw write+fdatasync loop on the same disk in the same
 * run (the physical limit), and replay speed of a large WAL.
 *
 * usage: kvdb-walbench [-d dir] [-t seconds-per-run] [-s entry-bytes] [-r replay-MiB] [-K] [-R]
 * The directory (default ./walbench.d) should be on the disk under test; it is emptied first
 * and removed at the end unless -K keeps it.  -R only replays the WAL already in the directory,
 * in this fresh process (the restart case). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wal/wal.h"

struct cfg
{
    const char *dir;
    double secs;
    size_t entry;
    size_t replay_mib;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(dir);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Latency samples in seconds; sorted on report. */
struct lat
{
    double *v;
    size_t n, cap;
};

static void lat_add(struct lat *l, double x, size_t times)
{
    for (size_t i = 0; i < times; i++) {
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 4096;
            l->v = realloc(l->v, l->cap * sizeof *l->v);
        }
        l->v[l->n++] = x;
    }
}

static double lat_pct(struct lat *l, double p)
{
    if (l->n == 0) {
        return 0;
    }
    qsort(l->v, l->n, sizeof *l->v, cmp_double);
    size_t k = (size_t)(p * (double)(l->n - 1));
    return l->v[k];
}

/* The physical limit: append @entry bytes + fdatasync, as often as possible. */
static double raw_fdatasync(const struct cfg *c, bool prealloc, struct lat *l)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/raw", c->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("open raw");
        exit(1);
    }
    /* Preallocated like a WAL segment, so no sync has to update the file size. */
    if (prealloc && (fallocate(fd, 0, 0, 64 << 20) != 0 || fsync(fd) != 0)) {
        perror("fallocate raw");
        exit(1);
    }
    char *buf = calloc(1, c->entry + 32);
    double t0 = now(), t;
    size_t ops = 0;
    while ((t = now()) - t0 < c->secs) {
        if (pwrite(fd, buf, c->entry + 32, (off_t)(ops * (c->entry + 32))) < 0 ||
            fdatasync(fd) != 0) {
            perror("raw write+fdatasync");
            exit(1);
        }
        lat_add(l, now() - t, 1);
        ops++;
    }
    double rate = (double)ops / (now() - t0);
    close(fd);
    unlink(path);
    free(buf);
    return rate;
}

struct call
{
    uint64_t ticket;
    double t;
};

/* Append batches of @batch entries for c->secs with at most @window calls in flight (1 =
 * closed loop: append, wait for durability, repeat), waiting on the notify eventfd as the
 * server loop does.  Returns entries/s; latency per entry into @l. */
static double wal_run(const struct cfg *c, size_t batch, size_t window, struct lat *l)
{
    rm_dir(c->dir);
    mkdir(c->dir, 0755);
    struct wal *w;
    char err[WAL_ERRMSG_SIZE];
    if (wal_open(c->dir, NULL, &w, NULL, err) != 0) {
        fprintf(stderr, "wal_open: %s\n", err);
        exit(1);
    }
    struct wal_entry *e = calloc(batch, sizeof *e);
    unsigned char *data = malloc(c->entry);
    memset(data, 0xab, c->entry);
    struct call *calls = calloc(window, sizeof *calls);
    size_t head = 0, inflight = 0;
    uint64_t next = 1, done = 0;
    struct pollfd p = {wal_notify_fd(w), POLLIN, 0};
    double t0 = now();
    while (now() - t0 < c->secs || inflight > 0) {
        if (inflight < window && now() - t0 < c->secs) {
            for (size_t i = 0; i < batch; i++) {
                e[i] = (struct wal_entry){next + i, 1, 1, data, c->entry};
            }
            struct call *k = &calls[(head + inflight) % window];
            k->t = now();
            if (wal_append(w, e, batch, &k->ticket) != 0) {
                fprintf(stderr, "append: %s\n", wal_errmsg(w));
                exit(1);
            }
            next += batch;
            inflight++;
            if (inflight < window) {
                continue;
            }
        }
        poll(&p, 1, 1000);
        wal_notify_drain(w);
        struct wal_durable d;
        if (wal_durable(w, &d) != 0) {
            fprintf(stderr, "durable: %s\n", wal_errmsg(w));
            exit(1);
        }
        double t = now();
        while (inflight > 0 && calls[head].ticket <= d.ticket) {
            lat_add(l, t - calls[head].t, batch);
            done += batch;
            head = (head + 1) % window;
            inflight--;
        }
        /* Keep the memtable bounded, as raft compaction would. */
        if (d.index > 100000 && d.index - 100000 > wal_memtable_first(wal_memtable(w)) + 50000) {
            wal_memtable_compact(wal_memtable(w), d.index - 100000);
        }
    }
    double rate = (double)done / (now() - t0);
    wal_close(w);
    free(e);
    free(data);
    free(calls);
    return rate;
}

/* Time @runs reopens (replay into the memtable) of the WAL in c->dir and print them. */
static void replay_runs(const struct cfg *c, int runs_n)
{
    struct wal *w;
    char err[WAL_ERRMSG_SIZE];
    double runs[3];
    for (int k = 0; k < runs_n; k++) {
        struct wal_recovered rec;
        double t0 = now();
        if (wal_open(c->dir, NULL, &w, &rec, err) != 0) {
            fprintf(stderr, "reopen: %s\n", err);
            exit(1);
        }
        double dt = now() - t0;
        size_t mem = wal_memtable_bytes(wal_memtable(w));
        wal_close(w);
        runs[k] = (double)rec.bytes / dt / 1e6;
        printf("replay %d: %.0f MiB of records in %u segments, %" PRIu64
               " entries of %zu B: %.3f s = %.0f MB/s (%.0f entries/s), memtable %.0f MiB\n",
               k + 1, (double)rec.bytes / 1048576.0, rec.segments, rec.last_index, c->entry, dt,
               runs[k], (double)rec.last_index / dt, (double)mem / 1048576.0);
    }
    if (runs_n == 3) {
        qsort(runs, 3, sizeof runs[0], cmp_double);
        printf("replay median: %.0f MB/s\n", runs[1]);
    }
}

/* Write ~@mib MiB of entries (not timed as replay), then time three replays. */
static void replay_bench(const struct cfg *c)
{
    rm_dir(c->dir);
    mkdir(c->dir, 0755);
    struct wal *w;
    char err[WAL_ERRMSG_SIZE];
    if (wal_open(c->dir, NULL, &w, NULL, err) != 0) {
        fprintf(stderr, "wal_open: %s\n", err);
        exit(1);
    }
    enum { B = 256 };
    struct wal_entry e[B];
    unsigned char *data = malloc(c->entry);
    memset(data, 0x5a, c->entry);
    uint64_t target = (uint64_t)c->replay_mib << 20, bytes = 0, next = 1;
    double tw = now();
    while (bytes < target) {
        for (size_t i = 0; i < B; i++) {
            e[i] = (struct wal_entry){next + i, 1, 1, data, c->entry};
        }
        if (wal_append(w, e, B, NULL) != 0) {
            fprintf(stderr, "append: %s\n", wal_errmsg(w));
            exit(1);
        }
        next += B;
        bytes += B * (c->entry + 13);
        if ((next / B) % 64 == 0) {
            wal_sync_wait(w, 0);
            /* The writer's memtable copy is not what is measured: keep memory flat. */
            uint64_t last = wal_memtable_last(wal_memtable(w));
            wal_memtable_compact(wal_memtable(w), last);
        }
    }
    wal_sync_wait(w, 0);
    struct wal_stats st;
    wal_stats_get(w, &st);
    double write_s = now() - tw;
    wal_close(w);
    printf("  (writing it took %.1f s with syncs every 64 batches: %.0f MB/s, %" PRIu64
           " batches, %" PRIu64 " segment cuts, %" PRIu64 " of them waited for a spare)\n",
           write_s, (double)st.bytes_written / write_s / 1e6, st.batches, st.segments_cut,
           st.spare_waits);
    free(data);
    replay_runs(c, 3);
}

/* The memtable alone: in-order appends (the common case), random term() and entries() reads. */
static void memtable_bench(const struct cfg *c)
{
    enum { N = 1000000 };
    struct wal_memtable m;
    wal_memtable_init(&m);
    unsigned char *data = calloc(1, c->entry);
    double t0 = now();
    for (uint64_t i = 1; i <= N; i++) {
        struct wal_entry e = {i, 1, 1, data, c->entry};
        if (wal_memtable_append(&m, &e, 1) != 0) {
            fprintf(stderr, "memtable append failed\n");
            exit(1);
        }
    }
    double app = now() - t0;
    uint64_t x = 88172645463325252ull, sum = 0;
    t0 = now();
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t t = 0;
        wal_memtable_term(&m, 1 + x % N, &t);
        sum += t;
    }
    double term = now() - t0;
    struct wal_entry out[64];
    size_t n = 0;
    t0 = now();
    for (int i = 0; i < N / 64; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t lo = 1 + x % (N - 64);
        wal_memtable_entries(&m, lo, lo + 64, SIZE_MAX, out, 64, &n);
        sum += n;
    }
    double ents = now() - t0;
    /* Replication-like: walk the log forward 64 entries at a time (hits the read finger). */
    t0 = now();
    for (uint64_t lo = 1; lo + 64 <= N; lo += 64) {
        wal_memtable_entries(&m, lo, lo + 64, SIZE_MAX, out, 64, &n);
        sum += n;
    }
    double seq = now() - t0;
    printf(
        "memtable: %d in-order appends of %zu B: %.0f /s; random term(): %.0f /s; "
        "random entries(lo, lo+64): %.0f calls/s; sequential entries(lo, lo+64): %.0f calls/s; "
        "%.1f MiB held (%.0f B/entry)%s\n",
        N, c->entry, N / app, N / term, (N / 64) / ents, (N / 64) / seq,
        (double)wal_memtable_bytes(&m) / 1048576.0, (double)wal_memtable_bytes(&m) / N,
        sum == 0 ? " (!)" : "");
    wal_memtable_fini(&m);
    free(data);
}

/* The disk is shared and noisy: alternate the raw loops and the closed-loop batch-1 WAL run
 * three times and compare each trio. */
static void raw_vs_batch1(const struct cfg *cp)
{
    const struct cfg c = *cp;
    double ratios[3];
    for (int round = 0; round < 3; round++) {
        struct lat raw = {0}, pre = {0}, one = {0};
        double raw_rate = raw_fdatasync(&c, false, &raw);
        double pre_rate = raw_fdatasync(&c, true, &pre);
        double one_rate = wal_run(&c, 1, 1, &one);
        double limit = raw_rate > pre_rate ? raw_rate : pre_rate;
        ratios[round] = one_rate / limit;
        printf(
            "round %d: raw append %zu B+fdatasync %.0f ops/s (p50 %.3f ms, p99 %.3f ms); "
            "raw into preallocated %.0f ops/s (p50 %.3f ms, p99 %.3f ms)\n"
            "         wal batch 1 %.0f entries/s (p50 %.3f ms, p99 %.3f ms): %.2fx the "
            "faster raw\n",
            round + 1, c.entry + 32, raw_rate, lat_pct(&raw, 0.5) * 1e3, lat_pct(&raw, 0.99) * 1e3,
            pre_rate, lat_pct(&pre, 0.5) * 1e3, lat_pct(&pre, 0.99) * 1e3, one_rate,
            lat_pct(&one, 0.5) * 1e3, lat_pct(&one, 0.99) * 1e3, ratios[round]);
        free(raw.v);
        free(pre.v);
        free(one.v);
    }
    qsort(ratios, 3, sizeof ratios[0], cmp_double);
    printf("batch 1 vs raw fdatasync: median %.2fx\n", ratios[1]);
}

/* Throughput and latency for batch sizes 1, 16, 256, closed loop and pipelined. */
static void group_commit_table(const struct cfg *cp)
{
    const struct cfg c = *cp;
    printf("%-6s %-8s %14s %12s %10s %10s\n", "batch", "window", "entries/s", "batches/s", "p50 ms",
           "p99 ms");
    size_t batches[] = {1, 16, 256};
    size_t windows[] = {1, 64};
    for (size_t wi = 0; wi < 2; wi++) {
        for (size_t bi = 0; bi < 3; bi++) {
            struct lat l = {0};
            double rate = wal_run(&c, batches[bi], windows[wi], &l);
            printf("%-6zu %-8zu %14.0f %12.0f %10.3f %10.3f\n", batches[bi], windows[wi], rate,
                   rate / (double)batches[bi], lat_pct(&l, 0.5) * 1e3, lat_pct(&l, 0.99) * 1e3);
            free(l.v);
        }
    }
}

int main(int argc, char **argv)
{
    struct cfg c = {"./walbench.d", 3.0, 256, 1024};
    bool keep = false, replay_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "d:t:s:r:KR")) != -1) {
        switch (opt) {
        case 'K':
            keep = true;
            break;
        case 'R':
            replay_only = true;
            break;
        case 'd':
            c.dir = optarg;
            break;
        case 't':
            c.secs = atof(optarg);
            break;
        case 's':
            c.entry = (size_t)atol(optarg);
            break;
        case 'r':
            c.replay_mib = (size_t)atol(optarg);
            break;
        default:
            fprintf(stderr,
                    "usage: kvdb-walbench [-d dir] [-t secs] [-s entry-bytes] "
                    "[-r replay-MiB] [-K keep dir] [-R replay only]\n");
            return 1;
        }
    }
    if (replay_only) {
        /* A fresh process, as after a restart: the WAL left by an earlier run with -K. */
        replay_runs(&c, 1);
        return 0;
    }
    rm_dir(c.dir);
    mkdir(c.dir, 0755);
    memtable_bench(&c);
    raw_vs_batch1(&c);
    group_commit_table(&c);
    if (c.replay_mib > 0) {
        replay_bench(&c);
    }
    if (!keep) {
        rm_dir(c.dir);
    }
    return 0;
}
