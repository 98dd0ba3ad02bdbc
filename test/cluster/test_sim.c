/* Many seeds of the randomized simulator.  Argument: the number of seeds.  With KV_TEST_SEED set,
 * seed i of the run is KV_TEST_SEED + i, so a failure replays bit for bit with
 * KV_TEST_SEED=<failing seed> and count 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test/cluster/sim.h"
#include "test/lib/seed.h"

static unsigned long n_seeds = 2000;

static void simulate_many_seeds(void **state)
{
    (void)state;
    uint64_t base = test_seed("cluster_raft_sim");
    struct sim_stats st = {0};
    char failure[512];
    for (unsigned long i = 0; i < n_seeds; i++) {
        uint64_t seed = base + i;
        if (sim_run(seed, 1500, &st, failure, sizeof failure) != 0) {
            fprintf(stderr,
                    "seed %" PRIu64
                    " failed: %s\n"
                    "replay: KV_TEST_SEED=%" PRIu64 " %s 1\n",
                    seed, failure, seed, "cluster_raft_sim");
            fail();
        }
    }
    fprintf(stderr,
            "%lu seeds: %" PRIu64 " entries applied, %" PRIu64 " crashes, %" PRIu64
            " partitions, %" PRIu64 " conf changes, %" PRIu64 " snapshots installed, %" PRIu64
            " transfers, %" PRIu64 " reads, %" PRIu64 " leader crashes before fsync\n",
            n_seeds, st.committed, st.crashes, st.partitions, st.conf_changes, st.snapshots,
            st.transfers, st.reads, st.early_crashes);
}

/* A seed replays bit for bit: same outcome digest twice; another seed differs. */
static void seed_replays_exactly(void **state)
{
    (void)state;
    uint64_t seed = test_seed("seed_replays_exactly");
    char failure[512];
    struct sim_stats a = {0}, b = {0}, other = {0};
    /* Outcomes only: a failing seed is simulate_many_seeds' business. */
    int ra = sim_run(seed, 1500, &a, failure, sizeof failure);
    int rb = sim_run(seed, 1500, &b, failure, sizeof failure);
    sim_run(seed + 1, 1500, &other, failure, sizeof failure);
    assert_int_equal(ra, rb);
    assert_int_equal(a.digest, b.digest);
    assert_int_equal(a.committed, b.committed);
    assert_int_equal(a.crashes, b.crashes);
    assert_int_not_equal(a.digest, other.digest);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        n_seeds = strtoul(argv[1], NULL, 10);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_replays_exactly),
        cmocka_unit_test(simulate_many_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
