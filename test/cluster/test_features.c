/* ReadIndex, leadership transfer, membership changes and snapshots on the cluster fixture. */
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

static const struct raft_read_state *read_of(struct test_cluster *c, raft_id id, uint64_t ctx)
{
    struct test_node *n = &c->nodes[id - 1];
    for (unsigned i = 0; i < n->n_reads && i < 64; i++) {
        if (n->reads[i].context == ctx) {
            return &n->reads[i];
        }
    }
    return NULL;
}

static int read_index(struct test_cluster *c, raft_id id, uint64_t ctx)
{
    struct raft_event ev = {.type = RAFT_EV_READ_INDEX, .u.read_ctx = ctx};
    return test_cluster_step(c, id, &ev);
}

static int conf_change(struct test_cluster *c, raft_id at, enum raft_cc_type type, raft_id id)
{
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    ev.u.cc.type = type;
    ev.u.cc.id = id;
    return test_cluster_step(c, at, &ev);
}

static raft_id stable_leader(struct test_cluster *c)
{
    raft_id l = test_cluster_elect(c, 3000);
    assert_int_not_equal(l, 0);
    assert_true(test_cluster_commit(c, l, "warmup", 6, 2000));
    return l;
}

/* Thesis 6.4: reads on the leader wait for a quorum heartbeat round, so a leader cut off from
 * the majority never answers a read that could miss a newer write. */
static void read_index_during_partition(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 5, test_seed("read_index_during_partition"));
    raft_id old = stable_leader(&c);
    assert_int_equal(read_index(&c, old, 1), 0);
    test_cluster_elapse(&c, 20);
    const struct raft_read_state *rs = read_of(&c, old, 1);
    assert_non_null(rs);
    assert_int_equal(rs->index, raft_commit_index(test_cluster_raft(&c, old)));
    test_cluster_isolate(&c, old);
    assert_int_equal(read_index(&c, old, 2), 0);
    raft_id n = 0;
    for (int i = 0; i < 100 && (n == 0 || n == old); i++) {
        test_cluster_elapse(&c, 50);
        n = test_cluster_leader(&c);
    }
    assert_int_not_equal(n, old);
    assert_true(test_cluster_commit(&c, n, "newer", 5, 2000));
    raft_index newer = raft_commit_index(test_cluster_raft(&c, n));
    test_cluster_elapse(&c, 1000);
    assert_null(read_of(&c, old, 2)); /* Never answered. */
    /* The new leader and a follower (through the leader) both read at or after the write. */
    assert_int_equal(read_index(&c, n, 3), 0);
    raft_id f = n == 1 ? 2 : 1;
    if (f == old) {
        f = n == 3 ? 4 : 3;
    }
    assert_int_equal(read_index(&c, f, 4), 0);
    test_cluster_elapse(&c, 50);
    assert_non_null(read_of(&c, n, 3));
    assert_true(read_of(&c, n, 3)->index >= newer);
    assert_non_null(read_of(&c, f, 4));
    assert_true(read_of(&c, f, 4)->index >= newer);
    /* A member with no known leader cannot start a read. */
    assert_int_equal(read_index(&c, old, 5), RAFT_ENOTLEADER);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 3.10: the leader brings the target up to date, then sends TimeoutNow; the target wins
 * at once, well within an election timeout, and proposals are refused meanwhile. */
static void transfer_leadership_to_lagging_member(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("transfer_leadership_to_lagging_member"));
    raft_id l = stable_leader(&c);
    raft_id t = l == 3 ? 1 : 3;
    test_cluster_isolate(&c, t);
    for (int i = 0; i < 20; i++) {
        assert_true(test_cluster_commit(&c, l, "while-away", 10, 1000));
    }
    test_cluster_heal(&c);
    raft_term term = raft_term_of(test_cluster_raft(&c, l));
    test_cluster_trace(&c, true);
    struct raft_event ev = {.type = RAFT_EV_TRANSFER, .u.peer = t};
    assert_int_equal(test_cluster_step(&c, l, &ev), 0);
    assert_int_equal(test_cluster_propose(&c, l, "refused", 7, NULL), RAFT_EBUSY);
    test_cluster_elapse(&c, 60);
    assert_int_equal(test_cluster_leader(&c), t);
    assert_int_equal(raft_term_of(test_cluster_raft(&c, t)), term + 1);
    assert_true(test_cluster_trace_has(&c, "timeout-now from"));
    assert_true(test_cluster_commit(&c, t, "after", 5, 1000));
    /* Transfer requested at a follower goes through the leader. */
    ev.u.peer = l;
    assert_int_equal(test_cluster_step(&c, l, &ev), 0);
    test_cluster_elapse(&c, 60);
    assert_int_equal(test_cluster_leader(&c), l);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Per-link latency: a follower behind a slow link does not slow commits (the fast majority
 * decides), and it still converges. */
static void slow_link_does_not_slow_commit(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("slow_link_does_not_slow_commit"));
    raft_id l = stable_leader(&c);
    raft_id slow = l == 3 ? 1 : 3;
    struct test_link sl = {.delay_min = 40, .delay_max = 60};
    test_cluster_link(&c, l, slow, &sl);
    test_cluster_link(&c, slow, l, &sl);
    uint64_t t0 = c.now;
    for (int i = 0; i < 10; i++) {
        assert_true(test_cluster_commit(&c, l, "fast", 4, 1000));
    }
    assert_true(c.now - t0 < 10 * 15); /* Each commit is one fast round trip. */
    test_cluster_elapse(&c, 300);
    assert_int_equal(c.nodes[slow - 1].applied, test_cluster_max_applied(&c));
    assert_int_equal(test_cluster_leader(&c), l); /* 60 ms heartbeats do not trigger elections. */
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 3.10: a transfer that cannot finish within an election timeout is abandoned and the
 * leader takes proposals again. */
static void transfer_to_unreachable_member_aborts(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("transfer_to_unreachable_member_aborts"));
    raft_id l = stable_leader(&c);
    raft_id t = l == 3 ? 1 : 3;
    test_cluster_isolate(&c, t);
    struct raft_event ev = {.type = RAFT_EV_TRANSFER, .u.peer = t};
    assert_int_equal(test_cluster_step(&c, l, &ev), 0);
    assert_int_equal(test_cluster_step(&c, l, &ev), RAFT_EBUSY);
    assert_int_equal(test_cluster_propose(&c, l, "refused", 7, NULL), RAFT_EBUSY);
    test_cluster_elapse(&c, 10 * 10 + 20);
    assert_int_equal(test_cluster_leader(&c), l);
    assert_true(test_cluster_commit(&c, l, "accepted", 8, 1000));
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

static bool all_applied(struct test_cluster *c, void *arg)
{
    const raft_id *ids = arg;
    for (; *ids != 0; ids++) {
        if (c->nodes[*ids - 1].applied < test_cluster_max_applied(c)) {
            return false;
        }
    }
    return true;
}

/* Thesis 4.1-4.3: add a voter, add a learner, promote it; one change at a time, and only after
 * the leader committed an entry of its term. */
static void add_voter_learner_and_promote(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("add_voter_learner_and_promote"));
    raft_id l = test_cluster_elect(&c, 3000);
    /* Right after election the empty entry is not committed yet. */
    test_cluster_add_node(&c, 4);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, 4), RAFT_EBUSY);
    assert_true(test_cluster_commit(&c, l, "x", 1, 1000));
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, 4), 0);
    assert_int_equal(raft_conf_of(test_cluster_raft(&c, l))->n_voters, 4); /* On append. */
    test_cluster_add_node(&c, 5);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_LEARNER, 5), RAFT_EBUSY);
    test_cluster_elapse(&c, 100);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_LEARNER, 5), 0);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, 1), RAFT_EBUSY);
    test_cluster_elapse(&c, 100);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, l), RAFT_EINVAL);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_LEARNER, l), RAFT_EINVAL);
    for (int i = 0; i < 5; i++) {
        assert_true(test_cluster_commit(&c, l, "more", 4, 1000));
    }
    raft_id everyone[] = {1, 2, 3, 4, 5, 0};
    assert_true(test_cluster_run_until(&c, all_applied, everyone, 1000));
    const struct raft_conf *conf5 = raft_conf_of(test_cluster_raft(&c, 5));
    assert_int_equal(conf5->n_voters, 4);
    assert_int_equal(conf5->n_learners, 1);
    /* A learner never campaigns, even cut off. */
    test_cluster_isolate(&c, 5);
    test_cluster_elapse(&c, 2000);
    assert_int_equal(raft_role(test_cluster_raft(&c, 5)), RAFT_FOLLOWER);
    test_cluster_heal(&c);
    l = test_cluster_elect(&c, 3000);
    assert_true(test_cluster_commit(&c, l, "y", 1, 1000));
    /* Promote it; then the four-voter cluster tolerates losing two of five. */
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, 5), 0);
    test_cluster_elapse(&c, 200);
    assert_int_equal(raft_conf_of(test_cluster_raft(&c, 5))->n_voters, 5);
    raft_id a = l == 1 ? 2 : 1, b = l == 3 ? 4 : 3;
    test_cluster_crash(&c, a);
    test_cluster_crash(&c, b);
    assert_true(test_cluster_commit(&c, l, "two-down", 8, 2000));
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* A learner's acknowledgement never counts towards commitment. */
static void learner_does_not_count_for_commit(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("learner_does_not_count_for_commit"));
    raft_id l = stable_leader(&c);
    test_cluster_add_node(&c, 4);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_LEARNER, 4), 0);
    test_cluster_elapse(&c, 200);
    raft_id a = l == 1 ? 2 : 1, b = l == 3 ? 2 : 3;
    if (a == b) {
        b = 3;
    }
    test_cluster_isolate(&c, a);
    test_cluster_isolate(&c, b);
    raft_index idx;
    assert_int_equal(test_cluster_propose(&c, l, "nope", 4, &idx), 0);
    test_cluster_elapse(&c, 100);
    assert_true(raft_commit_index(test_cluster_raft(&c, l)) < idx);
    assert_true(raft_last_index(test_cluster_raft(&c, 4)) >= idx); /* The learner has it. */
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 4.2.2: a leader removing itself keeps leading until the change commits, then steps
 * down; the rest elect a leader and never hear from it again. */
static void remove_leader(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("remove_leader"));
    raft_id l = stable_leader(&c);
    test_cluster_trace(&c, true);
    assert_int_equal(conf_change(&c, l, RAFT_CC_REMOVE, l), 0);
    assert_int_equal(raft_role(test_cluster_raft(&c, l)), RAFT_LEADER);
    test_cluster_elapse(&c, 100);
    assert_true(test_cluster_trace_has(&c, "step down: removed from configuration"));
    raft_id n = test_cluster_elect(&c, 3000);
    assert_int_not_equal(n, 0);
    assert_int_not_equal(n, l);
    assert_int_equal(raft_conf_of(test_cluster_raft(&c, n))->n_voters, 2);
    assert_true(test_cluster_commit(&c, n, "without", 7, 1000));
    test_cluster_elapse(&c, 3000);
    assert_int_equal(test_cluster_leader(&c), n);
    assert_int_equal(raft_role(test_cluster_raft(&c, l)), RAFT_FOLLOWER);
    /* Remove a follower too; the last voter cannot be removed. */
    raft_id f = 6 - l - n;
    assert_int_equal(conf_change(&c, n, RAFT_CC_REMOVE, f), 0);
    test_cluster_elapse(&c, 100);
    assert_int_equal(raft_conf_of(test_cluster_raft(&c, n))->n_voters, 1);
    assert_int_equal(conf_change(&c, n, RAFT_CC_REMOVE, n), RAFT_EINVAL);
    assert_true(test_cluster_commit(&c, n, "alone", 5, 1000));
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* Thesis 5.3: with compaction, a new member and a member back from a crash catch up through a
 * snapshot request, then ordinary appends. */
static void snapshot_catches_up_new_and_restarted_members(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("snapshot_catches_up_new_and_restarted_members"));
    c.compact_lag = 4;
    raft_id l = stable_leader(&c);
    raft_id f = l == 1 ? 2 : 1;
    test_cluster_crash(&c, f);
    for (int i = 0; i < 30; i++) {
        assert_true(test_cluster_commit(&c, l, "payload", 7, 1000));
    }
    test_cluster_add_node(&c, 4);
    assert_int_equal(conf_change(&c, l, RAFT_CC_ADD_VOTER, 4), 0);
    test_cluster_restart(&c, f);
    raft_id ids[] = {1, 2, 3, 4, 0};
    assert_true(test_cluster_run_until(&c, all_applied, ids, 3000));
    assert_true(c.snaps_installed >= 2);
    assert_true(c.nodes[3].store.snap.index > 0);
    assert_int_equal(raft_conf_of(test_cluster_raft(&c, 4))->n_voters, 4);
    test_cluster_check_logs(&c);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

/* A lost snapshot is reported as failed; the leader retries and the member still catches up. */
static void failed_snapshot_is_retried(void **state)
{
    (void)state;
    struct test_cluster c;
    test_cluster_init(&c, 3, test_seed("failed_snapshot_is_retried"));
    c.compact_lag = 2;
    raft_id l = stable_leader(&c);
    raft_id f = l == 1 ? 2 : 1;
    test_cluster_isolate(&c, f);
    for (int i = 0; i < 10; i++) {
        assert_true(test_cluster_commit(&c, l, "p", 1, 1000));
    }
    test_cluster_trace(&c, true);
    c.fail_snapshots = 2;
    test_cluster_heal(&c);
    raft_id ids[] = {1, 2, 3, 0};
    assert_true(test_cluster_run_until(&c, all_applied, ids, 5000));
    char want[64];
    snprintf(want, sizeof want, "snapshot to %llu failed", (unsigned long long)f);
    assert_true(test_cluster_trace_has(&c, want));
    /* Two transfers were lost; a third one was installed. */
    assert_int_equal(c.fail_snapshots, 0);
    assert_true(c.snaps_installed >= 1);
    ASSERT_HEALTHY(&c);
    test_cluster_fini(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_index_during_partition),
        cmocka_unit_test(transfer_leadership_to_lagging_member),
        cmocka_unit_test(transfer_to_unreachable_member_aborts),
        cmocka_unit_test(slow_link_does_not_slow_commit),
        cmocka_unit_test(add_voter_learner_and_promote),
        cmocka_unit_test(learner_does_not_count_for_commit),
        cmocka_unit_test(remove_leader),
        cmocka_unit_test(snapshot_catches_up_new_and_restarted_members),
        cmocka_unit_test(failed_snapshot_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
