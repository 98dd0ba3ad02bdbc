/* Leader election rules, one member at a time with hand-delivered messages (thesis ch. 3, 9). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/lib/seed.h"
#include "test/unit/raft/harness.h"

static void single_voter_elects_itself_and_commits_empty_entry(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 1, NULL), 0);
    assert_int_equal(h_tick(&n, 20), 0);
    assert_int_equal(raft_role(n.r), RAFT_LEADER);
    assert_int_equal(raft_term_of(n.r), 1);
    /* Thesis 6.4: the new leader's first entry is an empty one of its term, now committed. */
    assert_int_equal(raft_commit_index(n.r), 1);
    assert_int_equal(raft_memstore_get(&n.ms, 1)->type, RAFT_ENTRY_EMPTY);
    assert_int_equal(n.applied, 1);
    raft_index idx;
    assert_int_equal(h_propose(&n, "x", &idx), 0);
    assert_int_equal(idx, 2);
    assert_int_equal(n.applied, 2);
    h_stop(&n);
}

static unsigned ticks_to_campaign(uint64_t seed)
{
    struct h_node n;
    struct raft_config cfg = {.seed = seed};
    assert_int_equal(h_start(&n, 1, 3, &cfg), 0);
    unsigned t = 0;
    while (raft_role(n.r) == RAFT_FOLLOWER && t < 100) {
        h_tick(&n, 1);
        t++;
    }
    h_stop(&n);
    return t;
}

/* Thesis 3.4: timeouts are random in [T, 2T), from the member's own seeded generator, so a run
 * replays exactly. */
static void election_timeout_is_randomized_and_replayable(void **state)
{
    (void)state;
    uint64_t seed = test_seed("election_timeout_is_randomized_and_replayable");
    bool seen[21] = {false};
    for (int i = 0; i < 200; i++) {
        uint64_t s = test_rand(&seed) | 1;
        unsigned t = ticks_to_campaign(s);
        assert_in_range(t, 10, 20);
        assert_int_equal(t, ticks_to_campaign(s));
        seen[t] = true;
    }
    unsigned distinct = 0;
    for (int i = 0; i <= 20; i++) {
        distinct += seen[i];
    }
    assert_true(distinct >= 5);
}

/* Thesis 9.6: PreVote asks with term + 1 but changes neither term nor vote. */
static void prevote_leaves_term_and_vote_alone(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    assert_int_equal(h_campaign(&n), 0);
    assert_int_equal(raft_role(n.r), RAFT_PRE_CANDIDATE);
    assert_int_equal(raft_term_of(n.r), 0);
    const struct raft_msg *m = h_find(&n, RAFT_MSG_PREVOTE, 2);
    assert_non_null(m);
    assert_int_equal(m->term, 1);
    assert_int_equal(n.ms.hs.vote, 0);
    /* One grant is a quorum of 3 with itself: now the real election, term 1. */
    struct raft_msg g = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &g), 0);
    assert_int_equal(raft_role(n.r), RAFT_CANDIDATE);
    assert_int_equal(raft_term_of(n.r), 1);
    assert_int_equal(n.ms.hs.vote, 1); /* Durable before the vote requests go out. */
    assert_non_null(h_find(&n, RAFT_MSG_VOTE, 3));
    h_stop(&n);
}

/* Election safety at the voter: at most one vote per term, and it is durable. */
static void voter_grants_one_vote_per_term(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    struct raft_msg v = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1, .term = 5};
    assert_int_equal(h_recv(&n, &v), 0);
    const struct raft_msg *r = h_find(&n, RAFT_MSG_VOTE_RESP, 2);
    assert_non_null(r);
    assert_false(r->reject);
    assert_int_equal(n.ms.hs.vote, 2);
    assert_int_equal(n.ms.hs.term, 5);
    v.from = 3;
    assert_int_equal(h_recv(&n, &v), 0);
    r = h_find(&n, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(r);
    assert_true(r->reject);
    /* Asking again (a duplicate) gets the same answer. */
    v.from = 2;
    h_clear(&n);
    assert_int_equal(h_recv(&n, &v), 0);
    assert_false(h_find(&n, RAFT_MSG_VOTE_RESP, 2)->reject);
    h_stop(&n);
}

/* Thesis 3.6.1 (election restriction): no vote for a candidate whose log is less up to date. */
static void voter_rejects_stale_log(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    struct raft_entry es[2] = {{.index = 1, .term = 2, .type = RAFT_ENTRY_EMPTY},
                               {.index = 2, .term = 2, .type = RAFT_ENTRY_EMPTY}};
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 2, .to = 1, .term = 2};
    app.entries = es;
    app.n_entries = 2;
    assert_int_equal(h_recv(&n, &app), 0);
    assert_int_equal(raft_last_index(n.r), 2);
    h_tick(&n, 30); /* Leader lease over. */
    struct raft_msg v = {.type = RAFT_MSG_VOTE, .from = 3, .to = 1, .term = 3};
    v.index = 5;
    v.log_term = 1; /* Longer but older. */
    h_clear(&n);
    assert_int_equal(h_recv(&n, &v), 0);
    assert_true(h_find(&n, RAFT_MSG_VOTE_RESP, 3)->reject);
    v.term = 4;
    v.index = 2;
    v.log_term = 2; /* As up to date: granted. */
    assert_int_equal(h_recv(&n, &v), 0);
    assert_false(h_find(&n, RAFT_MSG_VOTE_RESP, 3)->reject);
    h_stop(&n);
}

/* Thesis 4.2.3: while a leader is heard from, higher-term vote requests are ignored without
 * changing term, unless they come from a leadership transfer. */
static void follower_with_live_leader_ignores_votes(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    struct raft_msg hb = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &hb), 0);
    assert_int_equal(raft_leader(n.r), 2);
    struct raft_msg v = {.type = RAFT_MSG_VOTE, .from = 3, .to = 1, .term = 7};
    h_clear(&n);
    assert_int_equal(h_recv(&n, &v), 0);
    assert_int_equal(raft_term_of(n.r), 1);
    assert_null(h_find(&n, RAFT_MSG_VOTE_RESP, 3));
    v.context = RAFT_CTX_TRANSFER;
    assert_int_equal(h_recv(&n, &v), 0);
    assert_int_equal(raft_term_of(n.r), 7);
    assert_false(h_find(&n, RAFT_MSG_VOTE_RESP, 3)->reject);
    h_stop(&n);
}

static void elect_leader_of_three(struct h_node *nodes)
{
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(h_start(&nodes[i - 1], i, 3, NULL), 0);
    }
    assert_int_equal(h_campaign(&nodes[0]), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(raft_role(nodes[0].r), RAFT_LEADER);
}

/* Thesis 6.2 (CheckQuorum): a leader that hears from no quorum for an election timeout steps
 * down. */
static void leader_without_quorum_steps_down(void **state)
{
    (void)state;
    struct h_node nodes[3];
    elect_leader_of_three(nodes);
    h_clear(&nodes[0]);
    assert_int_equal(h_tick(&nodes[0], 10), 0); /* The first round counts the election. */
    assert_int_equal(raft_role(nodes[0].r), RAFT_LEADER);
    assert_int_equal(h_tick(&nodes[0], 10), 0);
    assert_int_equal(raft_role(nodes[0].r), RAFT_FOLLOWER);
    assert_int_equal(raft_term_of(nodes[0].r), 1);
    for (int i = 0; i < 3; i++) {
        h_stop(&nodes[i]);
    }
}

/* A stale leader learns the new term from the reply to its heartbeat and steps down. */
static void stale_leader_steps_down_on_higher_term(void **state)
{
    (void)state;
    struct h_node nodes[3];
    elect_leader_of_three(nodes);
    struct raft_msg resp = {.type = RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 9};
    assert_int_equal(h_recv(&nodes[0], &resp), 0);
    assert_int_equal(raft_role(nodes[0].r), RAFT_FOLLOWER);
    assert_int_equal(raft_term_of(nodes[0].r), 9);
    /* And a lower-term heartbeat is answered with the higher term (CheckQuorum/PreVote). */
    struct raft_msg hb = {.type = RAFT_MSG_HEARTBEAT, .from = 3, .to = 1, .term = 2};
    h_clear(&nodes[0]);
    assert_int_equal(h_recv(&nodes[0], &hb), 0);
    const struct raft_msg *r = h_find(&nodes[0], RAFT_MSG_APP_RESP, 3);
    assert_non_null(r);
    assert_int_equal(r->term, 9);
    for (int i = 0; i < 3; i++) {
        h_stop(&nodes[i]);
    }
}

static void candidate_yields_to_leader_of_same_term(void **state)
{
    (void)state;
    struct h_node n;
    struct raft_config cfg = {.disable_prevote = true};
    assert_int_equal(h_start(&n, 1, 3, &cfg), 0);
    assert_int_equal(h_campaign(&n), 0);
    assert_int_equal(raft_role(n.r), RAFT_CANDIDATE);
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 2, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &app), 0);
    assert_int_equal(raft_role(n.r), RAFT_FOLLOWER);
    assert_int_equal(raft_leader(n.r), 2);
    /* A lost election (a quorum rejects) also returns to follower. */
    assert_int_equal(h_tick(&n, 40), 0);
    h_stop(&n);
}

static void misuse_is_reported(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    assert_int_equal(h_propose(&n, "x", NULL), RAFT_ENOTLEADER);
    struct raft_msg bad = {.type = RAFT_MSG_APP, .from = 0, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &bad), RAFT_EINVAL);
    bad.from = 2;
    bad.to = 3;
    assert_int_equal(h_recv(&n, &bad), RAFT_EINVAL);
    /* Structurally broken peer input is refused before it touches any state. */
    struct raft_entry es[2] = {{.index = 1, .term = 1, .type = RAFT_ENTRY_EMPTY},
                               {.index = 3, .term = 1, .type = RAFT_ENTRY_EMPTY}};
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 2, .to = 1, .term = 1};
    app.entries = es;
    app.n_entries = 2; /* Not consecutive. */
    assert_int_equal(h_recv(&n, &app), RAFT_EINVAL);
    es[1].index = 2;
    es[1].term = 5; /* Newer than the message's term. */
    assert_int_equal(h_recv(&n, &app), RAFT_EINVAL);
    es[1].term = 1;
    es[1].type = RAFT_ENTRY_CONF; /* Undecodable configuration. */
    assert_int_equal(h_recv(&n, &app), RAFT_EINVAL);
    struct raft_msg hb = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 1};
    hb.entries = es;
    hb.n_entries = 1; /* Entries only travel in MsgApp / MsgPropose. */
    assert_int_equal(h_recv(&n, &hb), RAFT_EINVAL);
    struct raft_msg snap = {.type = RAFT_MSG_SNAP, .from = 2, .to = 1, .term = 1};
    snap.snap.index = 5;
    snap.snap.term = 1;
    snap.snap.conf.n_voters = RAFT_MAX_MEMBERS + 1;
    assert_int_equal(h_recv(&n, &snap), RAFT_EINVAL);
    struct raft_msg noterm = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 0};
    assert_int_equal(h_recv(&n, &noterm), RAFT_EINVAL);
    struct raft_msg unknown = {.type = (enum raft_msg_type)99, .from = 2, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &unknown), RAFT_EINVAL);
    assert_int_equal(raft_term_of(n.r), 0);
    assert_int_equal(raft_last_index(n.r), 0);
    struct raft_event ev = {.type = (enum raft_event_type)99};
    assert_int_equal(raft_step(n.r, &ev), RAFT_EINVAL);
    struct raft_config none = {0};
    struct raft *r = NULL;
    char err[256];
    assert_int_equal(raft_create(&none, &r, err), RAFT_EINVAL);
    assert_non_null(strstr(err, "required"));
    h_stop(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_voter_elects_itself_and_commits_empty_entry),
        cmocka_unit_test(election_timeout_is_randomized_and_replayable),
        cmocka_unit_test(prevote_leaves_term_and_vote_alone),
        cmocka_unit_test(voter_grants_one_vote_per_term),
        cmocka_unit_test(voter_rejects_stale_log),
        cmocka_unit_test(follower_with_live_leader_ignores_votes),
        cmocka_unit_test(leader_without_quorum_steps_down),
        cmocka_unit_test(stale_leader_steps_down_on_higher_term),
        cmocka_unit_test(candidate_yields_to_leader_of_same_term),
        cmocka_unit_test(misuse_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
