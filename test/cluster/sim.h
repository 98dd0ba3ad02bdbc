/* The randomized cluster simulator: one seeded run of chaos, then healing and liveness checks. */
#ifndef KV_TEST_CLUSTER_SIM_H
#define KV_TEST_CLUSTER_SIM_H

#include <stddef.h>
#include <stdint.h>

struct sim_stats
{
    uint64_t committed; /* Entries applied (highest index). */
    uint64_t elections; /* Terms with a leader. */
    uint64_t crashes, partitions, conf_changes, snapshots, transfers, reads;
    uint64_t early_crashes; /* Leaders crashed after sending, before persisting. */
    uint64_t digest;        /* Mix of each run's outcome (state hash, traffic, clock). */
};

/* Run seed @seed for @chaos_ms of virtual time; returns 0, or -1 with @failure (size @cap) set to
 * the first violated invariant. */
int sim_run(uint64_t seed, uint64_t chaos_ms, struct sim_stats *st, char *failure, size_t cap);

#endif /* KV_TEST_CLUSTER_SIM_H */
