/* kvdb-bench: the latency histogram (log-linear buckets, like HdrHistogram with 5 bits of
 * sub-bucket precision) and its etcd-style printout. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tools/bench.h"

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - 5u; /* v >> e lies in [HIST_SUB, 2 * HIST_SUB) */
    unsigned i = e * HIST_SUB + (unsigned)(v >> e);
    return i < HIST_BINS ? i : HIST_BINS - 1;
}

/* The middle of bin @i, in ns. */
static double hist_value(unsigned i)
{
    if (i < 2 * HIST_SUB) {
        return i;
    }
    unsigned e = i / HIST_SUB - 1;
    uint64_t sub = i - e * HIST_SUB;
    return ((double)(sub << e) + (double)((sub + 1) << e)) / 2;
}

void bench_hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

void bench_hist_add(struct hist *h, uint64_t ns)
{
    h->bins[hist_index(ns)]++;
    h->count++;
    h->sum_ns += (double)ns;
    double ms = (double)ns / 1e6;
    h->sum_sq_ms += ms * ms;
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
    if (ns < h->min_ns) {
        h->min_ns = ns;
    }
}

void bench_hist_merge(struct hist *into, const struct hist *h)
{
    for (unsigned i = 0; i < HIST_BINS; i++) {
        into->bins[i] += h->bins[i];
    }
    into->count += h->count;
    into->sum_ns += h->sum_ns;
    into->sum_sq_ms += h->sum_sq_ms;
    into->max_ns = h->max_ns > into->max_ns ? h->max_ns : into->max_ns;
    into->min_ns = h->min_ns < into->min_ns ? h->min_ns : into->min_ns;
}

/* The @q quantile (0..1) in ms; the exact max for q = 1. */
double bench_hist_quantile_ms(const struct hist *h, double q)
{
    if (h->count == 0) {
        return 0;
    }
    if (q >= 1) {
        return (double)h->max_ns / 1e6;
    }
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    rank = rank == 0 ? 1 : rank;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BINS; i++) {
        seen += h->bins[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return (v > (double)h->max_ns ? (double)h->max_ns : v) / 1e6;
        }
    }
    return (double)h->max_ns / 1e6;
}

void bench_hist_print(const struct hist *h)
{
    static const double edges[] = {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1,    2,    5,
                                   10,   20,   50,   100, 200, 500, 1000, 2000, 5000};
    enum { N_EDGES = sizeof edges / sizeof edges[0] };
    uint64_t counts[N_EDGES + 1] = {0};
    for (unsigned i = 0; i < HIST_BINS; i++) {
        if (h->bins[i] == 0) {
            continue;
        }
        double ms = hist_value(i) / 1e6;
        unsigned b = 0;
        while (b < N_EDGES && ms >= edges[b]) {
            b++;
        }
        counts[b] += h->bins[i];
    }
    unsigned first = 0, last = N_EDGES;
    while (first < N_EDGES && counts[first] == 0) {
        first++;
    }
    while (last > first && counts[last] == 0) {
        last--;
    }
    uint64_t peak = 1;
    for (unsigned b = first; b <= last; b++) {
        peak = counts[b] > peak ? counts[b] : peak;
    }
    printf("Response time histogram (ms):\n");
    for (unsigned b = first; b <= last; b++) {
        char lo[16], hi[16];
        snprintf(lo, sizeof lo, "%g", b == 0 ? 0.0 : edges[b - 1]);
        snprintf(hi, sizeof hi, "%g", b < N_EDGES ? edges[b] : INFINITY);
        int bar = (int)(40 * counts[b] / peak);
        printf("  %7s - %-7s [%9" PRIu64 "]\t|", lo, hi, counts[b]);
        for (int i = 0; i < bar; i++) {
            putchar('#');
        }
        putchar('\n');
    }
}
