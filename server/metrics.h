/* Member metrics, served in the Prometheus text format at /metrics (with /health) on the client
 * port: an HTTP GET there is told apart from the binary protocol by its first bytes. */
#ifndef KV_SERVER_METRICS_H
#define KV_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_HIST_BUCKETS 14

/* A latency histogram with fixed buckets (0.1 ms .. 8 s, doubling).  Lock-free: any thread may
 * observe, any thread may render. */
struct srv_hist
{
    atomic_uint_fast64_t counts[SRV_HIST_BUCKETS + 1]; /* last: +Inf */
    atomic_uint_fast64_t sum_us;
};

/* Record one duration of @us microseconds. */
void srv_hist_observe(struct srv_hist *h, uint64_t us);

struct srv_metrics
{
    atomic_uint_fast64_t leader_changes;
    atomic_uint_fast64_t proposals_failed; /* timed out or refused after validation */
    atomic_uint_fast64_t snap_sent_ok;
    atomic_uint_fast64_t snap_sent_failed;
    atomic_uint_fast64_t snap_installed;
    atomic_uint_fast64_t client_requests;
    atomic_uint_fast64_t peer_batches_dropped;
    struct srv_hist wal_fsync;   /* Ready persisted: hand-off to the WAL until durable */
    struct srv_hist apply;       /* one lsm_apply of a group */
    struct srv_hist snap_create; /* checkpoint + snapshot */
};

#endif /* KV_SERVER_METRICS_H */
