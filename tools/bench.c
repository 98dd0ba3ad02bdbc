/* kvdb-bench: load generator for a kvdb member or cluster, in the spirit of etcd's `benchmark`.
 *
 * Command line, run orchestration and report; the load loop is in bench_run.c.
 *
 * usage: kvdb-bench [flags] put|range [KEY [END]]|txn-put|mixed|watch|disk [DIR] */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench.h"

/* ---- Report. ---- */

static void print_latency(const char *title, const struct hist *h, double secs)
{
    double avg = h->count > 0 ? h->sum_ns / (double)h->count / 1e6 : 0;
    double var = h->count > 0 ? h->sum_sq_ms / (double)h->count - avg * avg : 0;
    printf("\n%s:\n", title);
    printf("  Requests:\t%" PRIu64 "\n", h->count);
    printf("  Slowest:\t%.4f ms\n", (double)h->max_ns / 1e6);
    printf("  Fastest:\t%.4f ms\n", h->count > 0 ? (double)h->min_ns / 1e6 : 0);
    printf("  Average:\t%.4f ms\n", avg);
    printf("  Stddev:\t%.4f ms\n", var > 0 ? sqrt(var) : 0);
    printf("  Requests/sec:\t%.1f\n\n", secs > 0 ? (double)h->count / secs : 0);
    bench_hist_print(h);
    printf("\nLatency distribution:\n");
    static const double qs[] = {0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        printf("  %g%% in %.4f ms\n", qs[i] * 100, bench_hist_quantile_ms(h, qs[i]));
    }
}

static void json_latency(const char *prefix, const struct hist *h, double secs)
{
    printf(
        ",\"%sops_per_sec\":%.1f,\"%sp50_ms\":%.4f,\"%sp90_ms\":%.4f,\"%sp99_ms\":%.4f,"
        "\"%sp999_ms\":%.4f,\"%smax_ms\":%.4f,\"%savg_ms\":%.4f",
        prefix, secs > 0 ? (double)h->count / secs : 0, prefix, bench_hist_quantile_ms(h, 0.5),
        prefix, bench_hist_quantile_ms(h, 0.9), prefix, bench_hist_quantile_ms(h, 0.99), prefix,
        bench_hist_quantile_ms(h, 0.999), prefix, bench_hist_quantile_ms(h, 1.0), prefix,
        h->count > 0 ? h->sum_ns / (double)h->count / 1e6 : 0);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void report(const struct config *cfg,
                   const struct totals *t,
                   double secs,
                   const struct rusage *r0,
                   const struct rusage *r1)
{
    double user = tv_s(r1->ru_utime) - tv_s(r0->ru_utime);
    double sys = tv_s(r1->ru_stime) - tv_s(r0->ru_stime);
    double cpu_pct = secs > 0 ? 100 * (user + sys) / secs : 0;
    double us_per_op = t->all.count > 0 ? 1e6 * (user + sys) / (double)t->all.count : 0;
    printf("kvdb-bench %s: %u clients over %u connections, key %u B, value %u B%s\n", cfg->op_name,
           cfg->clients, cfg->conns, cfg->key_size, cfg->val_size,
           cfg->op == OP_RANGE || cfg->op == OP_MIXED
               ? (cfg->serializable ? ", serializable" : ", linearizable")
               : "");
    printf("\nSummary:\n  Total:\t%.4f secs.\n  Errors:\t%" PRIu64 " (%" PRIu64
           " lost in flight)\n",
           secs, t->errors, t->lost);
    for (unsigned i = 0; i < 16; i++) {
        if (t->by_code[i] != 0) {
            printf("    server error code %u: %" PRIu64 "\n", i, t->by_code[i]);
        }
    }
    if (t->first_error[0] != '\0') {
        printf("  First error:\t%s\n", t->first_error);
    }
    if (cfg->op == OP_RANGE || cfg->op == OP_MIXED) {
        printf("  Empty reads:\t%" PRIu64 " (answered OK without a key)\n", t->empty_reads);
    }
    if (cfg->op == OP_MIXED) {
        print_latency("All requests", &t->all, secs);
        print_latency("Writes (put)", &t->writes, secs);
        print_latency("Reads (range)", &t->reads, secs);
    } else {
        print_latency(
            cfg->op == OP_WATCH ? "Watch events (put sent to event received)" : "Requests", &t->all,
            secs);
    }
    printf(
        "\nBenchmark CPU (getrusage): user %.3f s, sys %.3f s = %.1f%% of one core, "
        "%.2f us per request\n",
        user, sys, cpu_pct, us_per_op);
    if (!cfg->json) {
        return;
    }
    printf(
        "{\"op\":\"%s\",\"clients\":%u,\"conns\":%u,\"key_size\":%u,\"val_size\":%u,"
        "\"consistency\":\"%s\",\"requests\":%" PRIu64 ",\"errors\":%" PRIu64
        ",\"empty_reads\":%" PRIu64 ",\"duration_s\":%.4f",
        cfg->op_name, cfg->clients, cfg->conns, cfg->key_size, cfg->val_size,
        cfg->serializable ? "s" : "l", t->all.count, t->errors, t->empty_reads, secs);
    json_latency("", &t->all, secs);
    if (cfg->op == OP_MIXED) {
        json_latency("write_", &t->writes, secs);
        json_latency("read_", &t->reads, secs);
    }
    printf(",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,\"cpu_us_per_op\":%.2f}\n",
           user, sys, cpu_pct, us_per_op);
}

/* ---- Command line. ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvdb-bench [flags] COMMAND\n"
            "commands:\n"
            "  put                 puts of --key-size keys with --val-size values\n"
            "  range [KEY [END]]   gets of KEY (or of generated keys over --key-space-size)\n"
            "  txn-put             transactions of --txn-ops puts each\n"
            "  mixed               puts and gets, --read-ratio of them gets\n"
            "  disk [DIR]          fdatasync latency of 4 KiB overwrites in DIR, --total times\n"
            "  watch               --clients watchers over --conns connections see --total\n"
            "                      puts (one client, at --rate): latency from put to event\n"
            "flags:\n"
            "  --endpoints LIST    comma-separated host:port (127.0.0.1:2379)\n"
            "  --conns N           connections, one thread each (1)\n"
            "  --clients N         logical clients, one request in flight each (1)\n"
            "  --total N           requests in all (10000 unless --duration)\n"
            "  --duration SECS     run for this long instead of --total\n"
            "  --key-size N        key bytes (8)\n"
            "  --val-size N        value bytes (8)\n"
            "  --sequential-keys   key i for request i (else uniform random)\n"
            "  --key-space-size N  distinct keys (1)\n"
            "  --consistency l|s   reads linearizable or serializable (l)\n"
            "  --rate N            requests per second over all clients (0: unlimited)\n"
            "  --read-ratio F      mixed: share of gets (0.5)\n"
            "  --txn-ops N         txn-put: puts per transaction (1)\n"
            "  --timeout MS        a request unanswered this long is an error (10000)\n"
            "  --json              also print one JSON object as the last line\n");
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max || s[0] == '-') {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= min && v <= max)) {
        return false;
    }
    *out = v;
    return true;
}

enum {
    O_ENDPOINTS = 256,
    O_CONNS,
    O_CLIENTS,
    O_TOTAL,
    O_DURATION,
    O_KEY_SIZE,
    O_VAL_SIZE,
    O_SEQ,
    O_KEY_SPACE,
    O_CONSISTENCY,
    O_RATE,
    O_READ_RATIO,
    O_TXN_OPS,
    O_TIMEOUT,
    O_JSON,
    O_HELP,
};

/* Apply one flag; false on a bad value. */
static bool apply_flag(struct config *cfg, int opt, const char *arg)
{
    uint64_t u = 0;
    switch (opt) {
    case O_ENDPOINTS:
        cfg->endpoints = arg;
        return arg[0] != '\0';
    case O_CONNS:
        return parse_u64(arg, 1, MAX_CONNS, &u) && ((cfg->conns = (unsigned)u), true);
    case O_CLIENTS:
        return parse_u64(arg, 1, 1000000, &u) && ((cfg->clients = (unsigned)u), true);
    case O_TOTAL:
        return parse_u64(arg, 1, UINT64_MAX / MAX_TXN_OPS, &cfg->total);
    case O_DURATION:
        return parse_double(arg, 0.001, 1e6, &cfg->duration_s);
    case O_KEY_SIZE:
        return parse_u64(arg, 1, 64, &u) && ((cfg->key_size = (unsigned)u), true);
    case O_VAL_SIZE:
        return parse_u64(arg, 0, 1 << 20, &u) && ((cfg->val_size = (unsigned)u), true);
    case O_SEQ:
        cfg->sequential = true;
        return true;
    case O_KEY_SPACE:
        return parse_u64(arg, 1, UINT64_MAX, &cfg->key_space);
    case O_CONSISTENCY:
        cfg->serializable = strcmp(arg, "s") == 0;
        return strcmp(arg, "s") == 0 || strcmp(arg, "l") == 0;
    case O_RATE:
        return parse_double(arg, 0, 1e9, &cfg->rate);
    case O_READ_RATIO:
        return parse_double(arg, 0, 1, &cfg->read_ratio);
    case O_TXN_OPS:
        return parse_u64(arg, 1, MAX_TXN_OPS, &u) && ((cfg->txn_ops = (unsigned)u), true);
    case O_TIMEOUT:
        return parse_u64(arg, 1, 3600000, &u) && ((cfg->timeout_ms = (unsigned)u), true);
    case O_JSON:
        cfg->json = true;
        return true;
    default:
        return false;
    }
}

static bool parse_command(struct config *cfg, int argc, char **argv)
{
    if (argc < 1) {
        return false;
    }
    static const struct
    {
        const char *name;
        enum op_kind op;
    } cmds[] = {{"put", OP_PUT},     {"range", OP_RANGE}, {"txn-put", OP_TXN_PUT},
                {"mixed", OP_MIXED}, {"watch", OP_WATCH}, {"disk", OP_DISK}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[0], cmds[i].name) == 0) {
            cfg->op = cmds[i].op;
            cfg->op_name = cmds[i].name;
        }
    }
    if (cfg->op == 0 || (cfg->op != OP_RANGE && cfg->op != OP_DISK && argc > 1) || argc > 3 ||
        (cfg->op == OP_DISK && argc > 2)) {
        return false;
    }
    cfg->range_key = argc > 1 ? argv[1] : NULL;
    cfg->range_end = argc > 2 ? argv[2] : NULL;
    return true;
}

static int parse_args(struct config *cfg, int argc, char **argv)
{
    static const struct option longs[] = {
        {"endpoints", required_argument, NULL, O_ENDPOINTS},
        {"conns", required_argument, NULL, O_CONNS},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"total", required_argument, NULL, O_TOTAL},
        {"duration", required_argument, NULL, O_DURATION},
        {"key-size", required_argument, NULL, O_KEY_SIZE},
        {"val-size", required_argument, NULL, O_VAL_SIZE},
        {"sequential-keys", no_argument, NULL, O_SEQ},
        {"key-space-size", required_argument, NULL, O_KEY_SPACE},
        {"consistency", required_argument, NULL, O_CONSISTENCY},
        {"rate", required_argument, NULL, O_RATE},
        {"read-ratio", required_argument, NULL, O_READ_RATIO},
        {"txn-ops", required_argument, NULL, O_TXN_OPS},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *cfg = (struct config){.endpoints = "127.0.0.1:2379",
                           .conns = 1,
                           .clients = 1,
                           .key_size = 8,
                           .val_size = 8,
                           .key_space = 1,
                           .read_ratio = 0.5,
                           .txn_ops = 1,
                           .timeout_ms = 10000};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        if (opt == O_HELP || opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (!apply_flag(cfg, opt, optarg)) {
            if (optarg != NULL && opt != '?') {
                fprintf(stderr, "kvdb-bench: bad value '%s' for --%s\n", optarg,
                        longs[opt - O_ENDPOINTS].name);
            }
            return 2;
        }
    }
    if (!parse_command(cfg, argc - optind, argv + optind)) {
        usage(stderr);
        return 2;
    }
    if (cfg->total != 0 && cfg->duration_s != 0) {
        fprintf(stderr, "kvdb-bench: give --total or --duration, not both\n");
        return 2;
    }
    if (cfg->total == 0 && cfg->duration_s == 0) {
        cfg->total = cfg->op == OP_DISK ? 500 : 10000;
    }
    if (cfg->key_size < 8 && cfg->key_space > (1ull << (8 * cfg->key_size))) {
        fprintf(stderr, "kvdb-bench: --key-space-size is larger than %u-byte keys can hold\n",
                cfg->key_size);
        return 2;
    }
    if (cfg->op == OP_TXN_PUT && cfg->key_space < cfg->txn_ops) {
        fprintf(stderr, "kvdb-bench: txn-put needs --key-space-size >= --txn-ops (%u)\n",
                cfg->txn_ops);
        return 2;
    }
    cfg->conns = cfg->conns > cfg->clients ? cfg->clients : cfg->conns;
    return 0;
}

/* ---- Main. ---- */

static void merge(struct totals *t, const struct worker *w)
{
    bench_hist_merge(&t->writes, &w->lat[0]);
    bench_hist_merge(&t->reads, &w->lat[1]);
    bench_hist_merge(&t->all, &w->lat[0]);
    bench_hist_merge(&t->all, &w->lat[1]);
    t->errors += w->errors;
    t->lost += w->lost;
    t->empty_reads += w->empty_reads;
    for (unsigned i = 0; i < 16; i++) {
        t->by_code[i] += w->err_by_code[i];
    }
    if (t->first_error[0] == '\0' && w->first_error[0] != '\0') {
        snprintf(t->first_error, sizeof t->first_error, "%s", w->first_error);
    }
}

static int run_workers(struct run *run, struct worker *ws, double *secs)
{
    const struct config *cfg = run->cfg;
    pthread_t tids[MAX_CONNS];
    for (unsigned i = 0; i < cfg->conns; i++) {
        unsigned n = cfg->clients / cfg->conns + (i < cfg->clients % cfg->conns ? 1 : 0);
        if (bench_worker_init(&ws[i], run, i, n) != 0) {
            fprintf(stderr, "kvdb-bench: %s\n",
                    ws[i].first_error[0] != '\0' ? ws[i].first_error : "out of memory");
            return 1;
        }
    }
    if (pthread_barrier_init(&run->ready, NULL, cfg->conns + 1) != 0) {
        return 1;
    }
    for (unsigned i = 0; i < cfg->conns; i++) {
        if (pthread_create(&tids[i], NULL, bench_worker_main, &ws[i]) != 0) {
            fprintf(stderr, "kvdb-bench: pthread_create failed\n");
            exit(1); /* the barrier would wait forever for the missing thread */
        }
    }
    run->start_ns = bench_now_ns();
    if (cfg->duration_s > 0) {
        run->stop_ns = run->start_ns + (uint64_t)(cfg->duration_s * 1e9);
    }
    pthread_barrier_wait(&run->ready);
    for (unsigned i = 0; i < cfg->conns; i++) {
        pthread_join(tids[i], NULL);
    }
    *secs = (double)(bench_now_ns() - run->start_ns) / 1e9;
    pthread_barrier_destroy(&run->ready);
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    int rv = parse_args(&cfg, argc, argv);
    if (rv != 0) {
        return rv;
    }
    if (cfg.op == OP_DISK) {
        return bench_disk(cfg.range_key != NULL ? cfg.range_key : ".",
                          cfg.total == 0       ? 500
                          : cfg.total > 100000 ? 100000
                                               : (unsigned)cfg.total,
                          cfg.json);
    }
    struct run run = {.cfg = &cfg};
    run.value = malloc(cfg.val_size + 1);
    struct worker *ws = calloc(cfg.conns, sizeof *ws);
    struct totals *t = calloc(1, sizeof *t);
    if (run.value == NULL || ws == NULL || t == NULL) {
        fprintf(stderr, "kvdb-bench: out of memory\n");
        return 1;
    }
    uint64_t seed = (uint64_t)time(NULL) | 1;
    for (unsigned i = 0; i < cfg.val_size; i++) {
        run.value[i] = (uint8_t)('a' + bench_xorshift(&seed) % 26);
    }
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double secs = 0;
    bench_hist_init(&t->all);
    bench_hist_init(&t->writes);
    bench_hist_init(&t->reads);
    rv = cfg.op == OP_WATCH ? bench_watch(&run, t, &secs) : run_workers(&run, ws, &secs);
    getrusage(RUSAGE_SELF, &r1);
    if (rv == 0) {
        for (unsigned i = 0; cfg.op != OP_WATCH && i < cfg.conns; i++) {
            merge(t, &ws[i]);
        }
        report(&cfg, t, secs, &r0, &r1);
    }
    for (unsigned i = 0; i < cfg.conns; i++) {
        bench_worker_fini(&ws[i]);
    }
    free(ws);
    free(t);
    free(run.value);
    return rv;
}
