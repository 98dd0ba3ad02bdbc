/* Scenario tests named after the claims of the Raft paper and thesis (etcd raft_paper_test.go),
 * on the deterministic cluster fixture; its invariant checks run throughout every test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/lib/cluster.h"
#include "test/lib/seed.h"

#define ASSERT_HEALTHY(c)                                     \
    do {                                                      \
        if ((c)->failure[0] != '\0') {                        \
            fprintf(stderr, "invariant: %s\n", (c)->failure); \
            fail();                                           \
        }                                                     \
    } while (0)

static raft_term term_of(struct test_cluster *c, raft_id id)
{
    return raft_term_of(test_cluster_raft(c, id));
}

/* Election Safety (Figure 3): at most one leader per term, across many elections forced by
 * partitions; the fixture checks every Ready of every member. */
static void election_safety_one_leader_per_term(void **state)
{
    (void)state;
    uint64_t seed = test_seed("election_safety_one_leader_per_term");
    struct test_cluster c;
    test_cluster_init(&c, 5, seed);
    unsigned leaders = 0;
    for (int round = 0; round < 40; round++) {
        raft_id l = test_cluster_elect(&c, 5000);
        assert_int_not_equal(l, 0);
        leaders++;
        test_cluster_isolate(&c, l);
        test_cluster_elapse(&c, 50 + test_rand(&seed) % 300);
        test_cluster_heal(&c);
    }
    ASSERT_HEALTHY(&c);
    assert_true(leaders == 40);
    test_cluster_fini(&c);
}

/* Thesis 3.4: a leader is elected within a few election timeouts, and the trace of the first
 * election is stable (golden). */
static void leader_is_elected_golden_trace(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, 42);
    test_cluster_trace(&c, true);
    raft_id l = test_cluster_elect(&c, 1000);
    assert_int_not_equal(l, 0);
    test_cluster_elapse(&c, 20);
    /* Member 2 pre-campaigns while 3's election is under way: PreVote rejects it without
     * disturbing anyone's term. */
    const char *golden =
        "[107] 3 become pre-candidate term=0\n"
        "[108] 1 grant prevote to 3 term=1\n"
        "[109] 2 grant prevote to 3 term=1\n"
        "[109] 2 become pre-candidate term=0\n"
        "[111] 3 become candidate term=1\n"
        "[112] 3 reject prevote from 2 term=1\n"
        "[113] 1 grant prevote to 2 term=1\n"
        "[114] 1 grant vote to 3 term=1\n"
        "[114] 2 become follower term=1\n"
        "[114] 2 grant vote to 3 term=1\n"
        "[115] 3 become leader term=1\n";
    assert_true(test_cluster_trace_expect(&c, golden));
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

static bool has_entry(struct test_cluster *c, raft_id id, raft_index i, raft_term t)
{
    const struct raft_entry *e = raft_memstore_get(&c->nodes[id - 1].store, i);
    return e != NULL && e->term == t;
}

/* Log Matching (thesis 3.5): a deposed leader's uncommitted suffix is replaced, and all logs
 * agree afterwards. */
static void log_matching_after_divergence(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 5, test_seed("log_matching_after_divergence"));
    raft_id old = test_cluster_elect(&c, 2000);
    assert_true(test_cluster_commit(&c, old, "committed", 9, 1000));
    test_cluster_isolate(&c, old);
    raft_index stale_index;
    assert_int_equal(test_cluster_propose(&c, old, "lost-1", 6, &stale_index), 0);
    assert_int_equal(test_cluster_propose(&c, old, "lost-2", 6, NULL), 0);
    raft_term stale_term = term_of(&c, old);
    test_cluster_elapse(&c, 500);
    raft_id l = test_cluster_elect(&c, 2000);
    assert_int_not_equal(l, old);
    for (int i = 0; i < 5; i++) {
        assert_true(test_cluster_commit(&c, l, "new", 3, 1000));
    }
    assert_true(has_entry(&c, old, stale_index, stale_term));
    test_cluster_heal(&c);
    test_cluster_elapse(&c, 1000);
    assert_false(has_entry(&c, old, stale_index, stale_term));
    test_cluster_check_logs(&c);
    assert_int_equal(raft_last_index(test_cluster_raft(&c, old)),
                     raft_last_index(test_cluster_raft(&c, l)));
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Leader Completeness (thesis 3.6): every later leader holds every committed entry, through
 * repeated leader crashes and restarts. */
static void leader_completeness_across_crashes(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("leader_completeness_across_crashes"));
    char buf[32];
    for (int round = 0; round < 10; round++) {
        raft_id l = test_cluster_elect(&c, 5000);
        assert_int_not_equal(l, 0);
        for (int i = 0; i < 3; i++) {
            int len = snprintf(buf, sizeof buf, "r%d-%d", round, i);
            assert_true(test_cluster_commit(&c, l, buf, (size_t)len, 2000));
        }
        test_cluster_crash(&c, l);
        raft_id next = test_cluster_elect(&c, 5000);
        assert_int_not_equal(next, 0);
        /* The fixture verified completeness when it took office; check explicitly too. */
        for (raft_index i = 1; i <= test_cluster_max_applied(&c); i++) {
            assert_true(raft_memstore_get(&c.nodes[next - 1].store, i) != NULL);
        }
        test_cluster_restart(&c, l);
    }
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

struct has_arg
{
    raft_id id;
    raft_index index;
    raft_term term;
};

static bool pred_has_entry(struct test_cluster *c, void *arg)
{
    const struct has_arg *a = arg;
    return has_entry(c, a->id, a->index, a->term);
}

static raft_id leader_in(struct test_cluster *c, raft_id a, raft_id b, raft_id d)
{
    raft_id l = test_cluster_leader(c);
    return l == a || l == b || l == d ? l : 0;
}

static bool pred_leader_345(struct test_cluster *c, void *arg)
{
    (void)arg;
    return leader_in(c, 3, 4, 5) != 0;
}

static bool pred_leader_12(struct test_cluster *c, void *arg)
{
    (void)arg;
    return leader_in(c, 1, 2, 0) != 0;
}

/* Figure 8 (thesis 3.6.2): an entry of an old term stored on a majority is not committed by the
 * new leader until an entry of its own term is; otherwise a later leader could overwrite it.
 * Every step is forced with partitions; with the rule broken the fixture reports a leader
 * lacking a committed entry or a changed applied entry. */
static void figure8_old_term_entry_not_committed_by_count(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 5, 8);
    c.max_msg_bytes = 1; /* One entry per MsgApp, so index k can arrive without k + 1. */
    for (raft_id i = 1; i <= 5; i++) {
        raft_destroy(c.nodes[i - 1].raft);
        c.nodes[i - 1].raft = NULL;
        test_cluster_restart(&c, i);
    }
    /* (a) S1 leads and replicates index k only to S2. */
    struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
    test_cluster_step(&c, 1, &camp);
    test_cluster_elapse(&c, 50);
    assert_int_equal(test_cluster_leader(&c), 1);
    assert_true(test_cluster_commit(&c, 1, "base", 4, 500));
    for (raft_id i = 3; i <= 5; i++) {
        test_cluster_cut(&c, 1, i, true);
        test_cluster_cut(&c, i, 1, true);
    }
    raft_index k;
    assert_int_equal(test_cluster_propose(&c, 1, "figure-8", 8, &k), 0);
    raft_term t1 = term_of(&c, 1);
    struct has_arg a = {.id = 2, .index = k, .term = t1};
    assert_true(test_cluster_run_until(&c, pred_has_entry, &a, 200));
    /* (b) S1 crashes; S2 is cut off; S3..S5 elect a leader X whose entry at k stays local. */
    test_cluster_crash(&c, 1);
    test_cluster_heal(&c);
    test_cluster_isolate(&c, 2);
    assert_true(test_cluster_run_until(&c, pred_leader_345, NULL, 3000));
    raft_id x = test_cluster_leader(&c);
    test_cluster_isolate(&c, x);
    test_cluster_crash(&c, x);
    /* (c) S1 restarts; S1, S2 and Y elect a leader L in {1, 2} (Z hears nothing from them),
     * which sends k (old term) to Y; L's link to Y is then cut, so k + 1 never reaches Y
     * while Y's acknowledgement of k still arrives. */
    raft_id y = 0, z = 0;
    for (raft_id i = 3; i <= 5; i++) {
        if (i != x) {
            if (y == 0) {
                y = i;
            } else {
                z = i;
            }
        }
    }
    test_cluster_heal(&c);
    test_cluster_isolate(&c, x);
    test_cluster_cut(&c, 1, z, true);
    test_cluster_cut(&c, 2, z, true);
    test_cluster_restart(&c, 1);
    assert_true(test_cluster_run_until(&c, pred_leader_12, NULL, 5000));
    raft_id l = test_cluster_leader(&c);
    a = (struct has_arg){.id = y, .index = k, .term = t1};
    assert_true(test_cluster_run_until(&c, pred_has_entry, &a, 2000));
    test_cluster_cut(&c, l, y, true);
    test_cluster_elapse(&c, 50);
    /* k is on S1, S2 and Y, a majority, but of an old term: not committed. */
    assert_true(raft_commit_index(test_cluster_raft(&c, l)) < k);
    /* (d) L crashes and the other of S1/S2 is cut off: X, Y and Z elect X, whose log is the
     * most up to date, and X overwrites k.  Allowed, because k was never committed. */
    test_cluster_crash(&c, l);
    test_cluster_heal(&c);
    test_cluster_isolate(&c, l == 1 ? 2 : 1);
    test_cluster_restart(&c, x);
    assert_true(test_cluster_run_until(&c, pred_leader_345, NULL, 5000));
    assert_int_equal(test_cluster_leader(&c), x);
    test_cluster_heal(&c);
    test_cluster_restart(&c, l);
    raft_id final = test_cluster_elect(&c, 5000);
    assert_int_not_equal(final, 0);
    assert_true(test_cluster_commit(&c, final, "after", 5, 3000));
    test_cluster_elapse(&c, 500);
    for (raft_id i = 1; i <= 5; i++) {
        assert_false(has_entry(&c, i, k, t1));
    }
    test_cluster_elapse(&c, 500);
    test_cluster_check_logs(&c);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 9.6: with PreVote a member rejoining after a partition does not disrupt the leader:
 * it never raised its term while it could not win. */
static void prevote_stops_rejoining_partitioned_node(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("prevote_stops_rejoining_partitioned_node"));
    raft_id l = test_cluster_elect(&c, 2000);
    test_cluster_elapse(&c, 100); /* Everyone learns the term. */
    raft_term term = term_of(&c, l);
    raft_id f = l == 3 ? 2 : 3;
    assert_int_equal(term_of(&c, f), term);
    test_cluster_isolate(&c, f);
    test_cluster_trace(&c, true);
    test_cluster_elapse(&c, 2000);
    assert_int_equal(term_of(&c, f), term);
    char want[64];
    snprintf(want, sizeof want, "%llu become pre-candidate term=%llu", (unsigned long long)f,
             (unsigned long long)term);
    assert_true(test_cluster_trace_has(&c, want));
    test_cluster_heal(&c);
    test_cluster_elapse(&c, 1000);
    assert_int_equal(test_cluster_leader(&c), l);
    assert_int_equal(term_of(&c, l), term);
    assert_int_equal(term_of(&c, f), term);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* The same claim as a golden trace (fixed seed; STYLE.md §8): a member that cannot hear the
 * others keeps pre-campaigning at its old term; the others, hearing from the leader, ignore
 * its PreVotes; once it hears again it simply follows. */
static void prevote_blocks_stale_rejoin_golden(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, 3);
    raft_id l = test_cluster_elect(&c, 2000);
    test_cluster_elapse(&c, 100);
    assert_int_equal(l, 3);
    test_cluster_cut(&c, 1, 2, true); /* Member 2 can send but not receive. */
    test_cluster_cut(&c, 3, 2, true);
    test_cluster_elapse(&c, 300);
    test_cluster_trace(&c, true);
    test_cluster_elapse(&c, 200);
    test_cluster_heal(&c);
    test_cluster_elapse(&c, 300);
    assert_true(test_cluster_trace_expect(&c,
                                          "[630] 2 become pre-candidate term=1\n"
                                          "[633] 1 ignore prevote from 2 term=2: leader 3 alive\n"
                                          "[633] 3 ignore prevote from 2 term=2: leader 3 alive\n"
                                          "[730] 2 become pre-candidate term=1\n"
                                          "[732] 3 ignore prevote from 2 term=2: leader 3 alive\n"
                                          "[735] 1 ignore prevote from 2 term=2: leader 3 alive\n"
                                          "[759] 2 become follower term=1\n"));
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(term_of(&c, i), 1);
    }
    assert_int_equal(test_cluster_leader(&c), 3);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* The contrast: without PreVote (and CheckQuorum) the same rejoin deposes the leader. */
static void without_prevote_rejoin_disrupts(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, 7);
    c.disable_prevote = true;
    c.disable_check_quorum = true;
    for (raft_id i = 1; i <= 3; i++) {
        test_cluster_crash(&c, i);
        test_cluster_restart(&c, i);
    }
    raft_id l = test_cluster_elect(&c, 2000);
    raft_term term = term_of(&c, l);
    raft_id f = l == 3 ? 2 : 3;
    test_cluster_isolate(&c, f);
    test_cluster_elapse(&c, 2000);
    assert_true(term_of(&c, f) > term + 3);
    test_cluster_heal(&c);
    test_cluster_elapse(&c, 1000);
    assert_true(term_of(&c, test_cluster_elect(&c, 2000)) > term);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 6.2: CheckQuorum makes a leader cut off from the majority step down within two
 * election timeouts, while the majority elects a new one. */
static void checkquorum_isolated_leader_steps_down(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 5, test_seed("checkquorum_isolated_leader_steps_down"));
    raft_id l = test_cluster_elect(&c, 2000);
    test_cluster_isolate(&c, l);
    test_cluster_trace(&c, true);
    test_cluster_elapse(&c, 2 * 10 * 10 + 10);
    assert_int_not_equal(raft_role(test_cluster_raft(&c, l)), RAFT_LEADER);
    char want[64];
    snprintf(want, sizeof want, "%llu step down: no quorum", (unsigned long long)l);
    assert_true(test_cluster_trace_has(&c, want));
    raft_id n = test_cluster_elect(&c, 2000);
    assert_int_not_equal(n, 0);
    assert_int_not_equal(n, l);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(election_safety_one_leader_per_term),
        cmocka_unit_test(leader_is_elected_golden_trace),
        cmocka_unit_test(log_matching_after_divergence),
        cmocka_unit_test(leader_completeness_across_crashes),
        cmocka_unit_test(figure8_old_term_entry_not_committed_by_count),
        cmocka_unit_test(prevote_stops_rejoining_partitioned_node),
        cmocka_unit_test(prevote_blocks_stale_rejoin_golden),
        cmocka_unit_test(without_prevote_rejoin_disrupts),
        cmocka_unit_test(checkquorum_isolated_leader_steps_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
