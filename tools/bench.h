/* kvdb-bench internals shared by tools/bench.c (command line, report), tools/bench_run.c (the
 * per-connection load loop) and tools/bench_hist.c (latency histogram). */
#ifndef KV_TOOLS_BENCH_H
#define KV_TOOLS_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "client/kvc.h"

#define MAX_CONNS 1024
#define MAX_KEY 64
#define MAX_TXN_OPS 128

/* ---- Latency histogram: log-linear buckets over nanoseconds (~3% resolution). ---- */

#define HIST_SUB 32    /* sub-buckets per power of two */
#define HIST_BINS 1280 /* covers up to 2^40 ns (~18 min) */

struct hist
{
    uint64_t bins[HIST_BINS];
    uint64_t count;
    uint64_t max_ns;
    uint64_t min_ns;
    double sum_ns;
    double sum_sq_ms; /* for the standard deviation */
};

/* Reset @h to empty.  Single-threaded, like every bench_hist_ call on one histogram. */
void bench_hist_init(struct hist *h);

/* Record one latency of @ns nanoseconds. */
void bench_hist_add(struct hist *h, uint64_t ns);

/* Add every sample of @h to @into. */
void bench_hist_merge(struct hist *into, const struct hist *h);

/* The @q quantile (0..1) in ms, to the bucket's resolution; the exact max for q >= 1; 0 when
 * empty. */
double bench_hist_quantile_ms(const struct hist *h, double q);

/* Print @h to stdout as etcd's benchmark does: counts per latency band with a bar. */
void bench_hist_print(const struct hist *h);

/* ---- Configuration. ---- */

enum op_kind { OP_PUT = 1, OP_RANGE, OP_TXN_PUT, OP_MIXED, OP_WATCH, OP_DISK };

struct config
{
    enum op_kind op;
    const char *op_name;
    const char *endpoints;
    unsigned conns;
    unsigned clients;
    uint64_t total;    /* 0: run for duration_s */
    double duration_s; /* 0: run until total */
    unsigned key_size;
    unsigned val_size;
    bool sequential;
    uint64_t key_space;
    bool serializable;
    double rate;         /* requests per second over all clients; 0 = unlimited */
    double read_ratio;   /* mixed: share of reads */
    unsigned txn_ops;    /* txn-put: puts per transaction */
    unsigned timeout_ms; /* a request not answered by then counts as an error */
    bool json;
    const char *range_key; /* range: fixed key (etcd `benchmark range KEY`), or NULL */
    const char *range_end;
};

/* ---- Shared run state. ---- */

struct run
{
    const struct config *cfg;
    _Atomic uint64_t next_op; /* ops claimed so far: bounds --total, numbers sequential keys */
    uint64_t start_ns;
    uint64_t stop_ns; /* --duration: no new request after this */
    uint8_t *value;   /* val_size random bytes, shared read-only */
    pthread_barrier_t ready;
};

/* One logical client. */
struct slot
{
    uint64_t id;      /* frame id of the request in flight */
    uint64_t sent_ns; /* 0 when idle */
    bool is_read;
};

struct worker
{
    struct run *run;
    unsigned index;
    unsigned n_clients;
    double rate; /* this worker's share of --rate */
    struct kvc *c;
    struct slot *slots;
    unsigned *idle; /* stack of idle slot numbers */
    unsigned n_idle;
    unsigned *table; /* open addressing: frame id -> slot number + 1 (0 = empty) */
    unsigned mask;
    uint64_t rng;
    uint64_t next_issue_ns; /* --rate pacing */
    uint8_t key[MAX_KEY];
    uint8_t keys[MAX_TXN_OPS][MAX_KEY];
    struct hist lat[2]; /* [0] writes (or all), [1] reads in mixed */
    uint64_t ok[2];
    uint64_t errors;
    uint64_t err_by_code[16];
    uint64_t lost;        /* requests lost with a broken connection or timed out */
    uint64_t empty_reads; /* successful ranges that found no key */
    char first_error[512];
    int open_rv;
};

/* The merged results of a run. */
struct totals
{
    struct hist all, writes, reads;
    uint64_t errors, lost, empty_reads, by_code[16];
    char first_error[512]; /* empty if none */
};

/* CLOCK_MONOTONIC in ns. */
uint64_t bench_now_ns(void);

/* Next value of the xorshift64 generator in *@s (never 0). */
uint64_t bench_xorshift(uint64_t *s);

/* Key number @n (< @space) as @size bytes into @out: zero-padded decimal when every number of
 * the space fits (readable with kvctl), else big-endian binary right-aligned.  Within one space
 * the order of numbers is the byte order of keys, provided @space <= 256^@size (checked by the
 * command line). */
void bench_make_key(uint8_t *out, unsigned size, uint64_t space, uint64_t n);

/* The worker's in-flight table (open addressing on the frame id, backward-shift deletion):
 * record that slot @slot waits for reply @id (w->slots[slot] must already hold @id and a
 * non-zero sent_ns); the table has room for every client.  Worker thread only. */
void bench_table_put(struct worker *w, uint64_t id, unsigned slot);

/* Remove and return the slot waiting for @id, or -1 if none does (a reply we gave up on). */
int bench_table_take(struct worker *w, uint64_t id);

/* Whether a packed RangeResponse of @len bytes at @p holds at least one KeyValue (field 2),
 * read from its top-level tags without unpacking, so checking every reply costs no allocation.
 * Malformed input counts as empty. */
bool bench_range_has_kv(const uint8_t *p, size_t len);

/* Prepare worker @index driving @n_clients clients of @run and connect it (to the endpoints
 * rotated to start at the @index-th, so connections spread over members).  @run must outlive
 * the worker.  Errors: those of kvc_open (w->first_error says which endpoint), KVC_ENOMEM.
 * bench_worker_fini() releases it either way. */
int bench_worker_init(struct worker *w, struct run *run, unsigned index, unsigned n_clients);

/* Close the connection and free.  A zeroed worker is a no-op. */
void bench_worker_fini(struct worker *w);

/* Thread body: waits at run->ready, then runs the load until the run's total or duration is
 * reached and every request in flight is answered or expired.  @arg is the struct worker. */
void *bench_worker_main(void *arg);

/* The `watch` command (etcd `benchmark watch-latency`): cfg->clients watchers over cfg->conns
 * connections watch the bench key range while one client puts cfg->total values (at cfg->rate,
 * or back to back), each carrying its sequence number; the latency of each event is from
 * sending its put to a watcher receiving it.  Fills @t (all = event latencies; errors = events
 * never received, failed puts and watch errors) and *@secs.  Returns 0, or 1 after printing
 * why the run could not start. */
int bench_watch(struct run *run, struct totals *t, double *secs);

/* The `disk` command: time @count pwrite(4 KiB) + fdatasync overwrites of a preallocated,
 * written file in @dir and print p50/p90/p99/max/mean (and a JSON line with @json).  Returns 0,
 * or 1 after printing the failing call. */
int bench_disk(const char *dir, unsigned count, bool json);

#endif /* KV_TOOLS_BENCH_H */
