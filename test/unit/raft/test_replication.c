/* Log replication and flow control with hand-delivered messages (thesis 3.5, 3.6, 10.2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/unit/raft/harness.h"

static void start_three(struct h_node *nodes, const struct raft_config *cfg)
{
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(h_start(&nodes[i - 1], i, 3, cfg), 0);
    }
}

static void stop_all(struct h_node *nodes, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        h_stop(&nodes[i]);
    }
}

static void elect_one(struct h_node *nodes, unsigned n)
{
    assert_int_equal(h_campaign(&nodes[0]), 0);
    assert_int_equal(h_settle(nodes, n), 0);
    assert_int_equal(raft_role(nodes[0].r), RAFT_LEADER);
}

/* Thesis 3.6.2 / Figure 8: a leader never commits an entry of an earlier term by counting
 * replicas; it commits it only together with an entry of its own term. */
static void leader_commits_only_entries_of_its_term(void **state)
{
    (void)state;
    struct h_node n;
    struct raft_config cfg = {.max_msg_bytes = 1};
    /* Member 1 holds index 1 (term 1) and 2 (term 2) from earlier leaders, uncommitted. */
    assert_int_equal(h_start(&n, 1, 3, &cfg), 0);
    struct raft_entry es[2] = {{.index = 1, .term = 1, .type = RAFT_ENTRY_NORMAL},
                               {.index = 2, .term = 2, .type = RAFT_ENTRY_NORMAL}};
    es[0].data = (struct raft_buf){"aaaa", 4};
    es[1].data = (struct raft_buf){"bbbb", 4};
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 2, .to = 1, .term = 2};
    app.entries = es;
    app.n_entries = 2;
    assert_int_equal(h_recv(&n, &app), 0);
    assert_int_equal(raft_commit_index(n.r), 0);
    h_tick(&n, 30);
    /* It becomes leader of term 4 (votes from 2 and 3). */
    struct raft_msg v = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 3};
    assert_int_equal(raft_role(n.r), RAFT_PRE_CANDIDATE);
    assert_int_equal(h_recv(&n, &v), 0);
    v.type = RAFT_MSG_VOTE_RESP;
    assert_int_equal(h_recv(&n, &v), 0);
    assert_int_equal(raft_role(n.r), RAFT_LEADER);
    raft_term term = raft_term_of(n.r);
    assert_int_equal(raft_last_index(n.r), 3); /* The empty entry of its term. */
    /* Both followers acknowledge index 2 (term 2): a majority holds it, but no commit. */
    struct raft_msg ack = {.type = RAFT_MSG_APP_RESP, .to = 1, .term = term, .index = 2};
    ack.from = 2;
    assert_int_equal(h_recv(&n, &ack), 0);
    ack.from = 3;
    assert_int_equal(h_recv(&n, &ack), 0);
    assert_int_equal(raft_commit_index(n.r), 0);
    /* Once a majority holds index 3 (its own term), everything up to 3 commits. */
    ack.index = 3;
    assert_int_equal(h_recv(&n, &ack), 0);
    assert_int_equal(raft_commit_index(n.r), 3);
    assert_int_equal(n.applied, 3);
    h_stop(&n);
}

/* Fast back-off: the follower's rejection names the term and index to retry from, so the leader
 * skips a whole conflicting term in one round trip (etcd findConflictByTerm). */
static void rejection_hint_skips_conflicting_term(void **state)
{
    (void)state;
    struct h_node f;
    assert_int_equal(h_start(&f, 2, 3, NULL), 0);
    /* Follower log: 1..3 term 1, 4..20 term 3 (from a deposed leader). */
    struct raft_entry es[20];
    for (int i = 0; i < 20; i++) {
        es[i] = (struct raft_entry){.index = (raft_index)i + 1, .term = i < 3 ? 1 : 3};
        es[i].type = RAFT_ENTRY_EMPTY;
    }
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 3, .to = 2, .term = 3};
    app.entries = es;
    app.n_entries = 20;
    assert_int_equal(h_recv(&f, &app), 0);
    /* A leader of term 5 whose log has term 4 from index 4 probes at index 30 (term 4). */
    struct raft_msg probe = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 5};
    probe.index = 30;
    probe.log_term = 4;
    h_clear(&f);
    assert_int_equal(h_recv(&f, &probe), 0);
    const struct raft_msg *r = h_find(&f, RAFT_MSG_APP_RESP, 1);
    assert_non_null(r);
    assert_true(r->reject);
    /* Hint: our last index with term <= 4, i.e. 20 (term 3). */
    assert_int_equal(r->reject_hint, 20);
    assert_int_equal(r->reject_term, 3);
    /* Probing at 20 with term 4 (the leader's term there): the whole term-3 run is skipped. */
    probe.index = 20;
    h_clear(&f);
    assert_int_equal(h_recv(&f, &probe), 0);
    r = h_find(&f, RAFT_MSG_APP_RESP, 1);
    assert_true(r->reject);
    probe.index = r->reject_hint;
    probe.log_term = r->reject_term;
    h_clear(&f);
    assert_int_equal(h_recv(&f, &probe), 0);
    r = h_find(&f, RAFT_MSG_APP_RESP, 1);
    assert_false(r->reject);
    h_stop(&f);
}

/* The leader's side of back-off: a full exchange converges in a few round trips. */
static void diverged_follower_converges(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    /* Member 3 misses 50 entries, then catches up through probe and replicate. */
    struct raft *r3 = nodes[2].r;
    nodes[2].r = NULL;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(h_propose(&nodes[0], "entry", NULL), 0);
        assert_int_equal(h_settle(nodes, 3), 0);
    }
    nodes[2].r = r3;
    h_clear(&nodes[2]);
    assert_int_equal(h_tick(&nodes[0], 1), 0); /* Heartbeat, reply, then MsgApp. */
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(raft_last_index(nodes[2].r), raft_last_index(nodes[0].r));
    assert_int_equal(raft_commit_index(nodes[2].r), 51);
    stop_all(nodes, 3);
}

/* The leader's view of each log (raft_match_of): its own persisted last index, a follower's
 * acknowledged index, which lags while the follower misses entries; 0 off the leader and for
 * non-members. */
static void leader_reports_each_members_match(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    struct raft *r3 = nodes[2].r;
    nodes[2].r = NULL; /* member 3 misses the next entries */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(h_propose(&nodes[0], "entry", NULL), 0);
        assert_int_equal(h_settle(nodes, 3), 0);
    }
    raft_index last = raft_last_index(nodes[0].r);
    assert_int_equal(raft_match_of(nodes[0].r, 1), last);
    assert_int_equal(raft_match_of(nodes[0].r, 2), last);
    assert_true(raft_match_of(nodes[0].r, 3) + 10 <= last);
    assert_int_equal(raft_match_of(nodes[0].r, 99), 0);
    assert_int_equal(raft_match_of(nodes[1].r, 2), 0); /* a follower tracks no progress */
    nodes[2].r = r3;
    h_clear(&nodes[2]);
    assert_int_equal(h_tick(&nodes[0], 1), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(raft_match_of(nodes[0].r, 3), last);
    stop_all(nodes, 3);
}

/* Flow control: in replicate state at most max_inflight_msgs MsgApps are outstanding. */
static void inflight_window_caps_messages(void **state)
{
    (void)state;
    struct h_node nodes[3];
    struct raft_config cfg = {.max_inflight_msgs = 2};
    start_three(nodes, &cfg);
    elect_one(nodes, 3);
    h_clear(&nodes[0]);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(h_propose(&nodes[0], "x", NULL), 0);
    }
    assert_int_equal(h_count(&nodes[0], RAFT_MSG_APP, 2), 2);
    /* Acknowledging the first frees one slot and lets all pending entries go in one message. */
    struct raft_msg ack = {.type = RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 1};
    ack.index = h_find(&nodes[0], RAFT_MSG_APP, 2)->index; /* Second message's prev index. */
    h_clear(&nodes[0]);
    assert_int_equal(h_recv(&nodes[0], &ack), 0);
    const struct raft_msg *m = h_find(&nodes[0], RAFT_MSG_APP, 2);
    assert_non_null(m);
    assert_int_equal(m->n_entries, 4);
    stop_all(nodes, 3);
}

/* Flow control by bytes, and the per-message byte limit. */
static void byte_limits_split_and_cap(void **state)
{
    (void)state;
    struct h_node nodes[3];
    struct raft_config cfg = {.max_msg_bytes = 10, .max_inflight_bytes = 25};
    start_three(nodes, &cfg);
    elect_one(nodes, 3);
    h_clear(&nodes[0]);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(h_propose(&nodes[0], "12345", NULL), 0);
    }
    /* Each proposal went out alone; after 25 bytes (5 messages of 5) the window is full. */
    assert_int_equal(h_count(&nodes[0], RAFT_MSG_APP, 3), 5);
    /* Resending after a reject batches two 5-byte entries per message (limit 10). */
    struct raft_msg rej = {.type = RAFT_MSG_APP_RESP, .from = 3, .to = 1, .term = 1};
    rej.reject = true;
    rej.index = raft_last_index(nodes[0].r) - 1;
    rej.reject_hint = 1;
    h_clear(&nodes[0]);
    assert_int_equal(h_recv(&nodes[0], &rej), 0);
    const struct raft_msg *m = h_find(&nodes[0], RAFT_MSG_APP, 3);
    assert_non_null(m);
    assert_int_equal(m->index, 1);
    assert_int_equal(m->n_entries, 2);
    stop_all(nodes, 3);
}

/* Heartbeats carry commit, but never past what the follower is known to hold. */
static void heartbeat_commit_is_capped_by_match(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    struct raft *r3 = nodes[2].r;
    nodes[2].r = NULL; /* Member 3 misses the next entries. */
    assert_int_equal(h_propose(&nodes[0], "a", NULL), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    nodes[2].r = r3;
    assert_int_equal(raft_commit_index(nodes[0].r), 2);
    h_clear(&nodes[0]);
    assert_int_equal(h_tick(&nodes[0], 1), 0);
    assert_int_equal(h_find(&nodes[0], RAFT_MSG_HEARTBEAT, 2)->commit, 2);
    assert_int_equal(h_find(&nodes[0], RAFT_MSG_HEARTBEAT, 3)->commit, 1);
    stop_all(nodes, 3);
}

/* Thesis 5.3: a follower that needs compacted entries gets a snapshot request in Ready; appends
 * pause until the report, then resume after the snapshot. */
static void compacted_follower_gets_snapshot(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    struct raft *r3 = nodes[2].r;
    nodes[2].r = NULL;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(h_propose(&nodes[0], "s", NULL), 0);
        assert_int_equal(h_settle(nodes, 3), 0);
    }
    struct raft_conf conf = *raft_conf_of(nodes[0].r);
    assert_int_equal(raft_memstore_compact(&nodes[0].ms, 8, &conf), 0);
    nodes[2].r = r3;
    h_clear(&nodes[2]);
    h_clear(&nodes[0]);
    assert_int_equal(h_tick(&nodes[0], 1), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(nodes[0].n_snaps, 1);
    struct raft_msg snap = nodes[0].snaps[0];
    assert_int_equal(snap.to, 3);
    assert_int_equal(snap.snap.index, 8);
    assert_int_equal(snap.snap.conf.n_voters, 3);
    /* Paused: new proposals are not sent to 3. */
    h_clear(&nodes[0]);
    assert_int_equal(h_propose(&nodes[0], "t", NULL), 0);
    assert_null(h_find(&nodes[0], RAFT_MSG_APP, 3));
    /* The follower installs the metadata and resets its log. */
    h_clear(&nodes[2]);
    assert_int_equal(h_recv(&nodes[2], &snap), 0);
    assert_int_equal(nodes[2].ms.snap.index, 8);
    assert_int_equal(raft_last_index(nodes[2].r), 8);
    assert_int_equal(raft_commit_index(nodes[2].r), 8);
    assert_int_equal(nodes[2].applied, 8);
    struct raft_event rep = {.type = RAFT_EV_SNAP_STATUS, .u.snap = {.peer = 3, .ok = true}};
    assert_int_equal(h_step(&nodes[0], &rep), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(h_tick(&nodes[0], 1), 0);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(raft_last_index(nodes[2].r), raft_last_index(nodes[0].r));
    assert_int_equal(raft_commit_index(nodes[2].r), raft_commit_index(nodes[0].r));
    stop_all(nodes, 3);
}

/* Restart from storage: hard state, log and applied index survive; nothing is re-applied. */
static void restart_keeps_hard_state_and_log(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 1, NULL), 0);
    assert_int_equal(h_tick(&n, 20), 0);
    assert_int_equal(h_propose(&n, "a", NULL), 0);
    raft_term term = raft_term_of(n.r);
    raft_destroy(n.r);
    struct raft_config cfg = n.cfg;
    cfg.applied = 2;
    assert_int_equal(raft_create(&cfg, &n.r, NULL), 0);
    assert_int_equal(raft_term_of(n.r), term);
    assert_int_equal(raft_last_index(n.r), 2);
    assert_int_equal(raft_commit_index(n.r), 2);
    struct raft_ready rd;
    while (raft_has_ready(n.r)) {
        assert_int_equal(raft_ready(n.r, &rd), 0);
        assert_int_equal(rd.n_committed, 0);
        assert_int_equal(raft_advance(n.r, &rd), 0);
    }
    cfg.applied = 9; /* Beyond the log: misuse. */
    struct raft *bad;
    char err[256];
    assert_int_equal(raft_create(&cfg, &bad, err), RAFT_EINVAL);
    h_stop(&n);
}

/* Thesis 6.4: a new leader serves ReadIndex only after committing an entry of its term, and
 * only once a quorum acknowledged a heartbeat sent after the request. */
static void read_index_waits_for_term_commit_and_quorum(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    assert_int_equal(h_campaign(&n), 0);
    struct raft_msg v = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 1};
    assert_int_equal(h_recv(&n, &v), 0);
    v.type = RAFT_MSG_VOTE_RESP;
    assert_int_equal(h_recv(&n, &v), 0);
    assert_int_equal(raft_role(n.r), RAFT_LEADER);
    h_clear(&n);
    struct raft_event rd = {.type = RAFT_EV_READ_INDEX, .u.read_ctx = 77};
    assert_int_equal(h_step(&n, &rd), 0);
    struct raft_msg fwd = {.type = RAFT_MSG_READ_INDEX, .from = 3, .to = 1, .context = 88};
    assert_int_equal(h_recv(&n, &fwd), 0);
    assert_null(h_find(&n, RAFT_MSG_HEARTBEAT, 0)); /* Waits: nothing committed in term 1. */
    assert_int_equal(n.n_reads, 0);
    struct raft_msg ack = {.type = RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 1, .index = 1};
    assert_int_equal(h_recv(&n, &ack), 0);
    assert_int_equal(raft_commit_index(n.r), 1);
    const struct raft_msg *hb = h_find(&n, RAFT_MSG_HEARTBEAT, 3);
    assert_non_null(hb);
    assert_true(hb->context > 0);
    assert_int_equal(n.n_reads, 0); /* Not before a quorum confirms leadership. */
    struct raft_msg hr = {.type = RAFT_MSG_HEARTBEAT_RESP, .from = 3, .to = 1, .term = 1};
    hr.context = hb->context - 1; /* An older round does not count. */
    assert_int_equal(h_recv(&n, &hr), 0);
    assert_int_equal(n.n_reads, 0);
    hr.context = hb->context;
    h_clear(&n);
    assert_int_equal(h_recv(&n, &hr), 0);
    assert_int_equal(n.n_reads, 1);
    assert_int_equal(n.reads[0].context, 77);
    assert_int_equal(n.reads[0].index, 1);
    const struct raft_msg *resp = h_find(&n, RAFT_MSG_READ_INDEX_RESP, 3);
    assert_non_null(resp);
    assert_int_equal(resp->context, 88);
    assert_int_equal(resp->index, 1);
    h_stop(&n);
}

/* MsgPropose (a proposal forwarded by a member) is appended by the leader like a local one;
 * configuration entries cannot sneak in that way. */
static void leader_appends_forwarded_proposals(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    raft_index last = raft_last_index(nodes[0].r);
    struct raft_entry es[3] = {
        {.type = RAFT_ENTRY_NORMAL}, {.type = RAFT_ENTRY_CONF}, {.type = RAFT_ENTRY_NORMAL}};
    es[0].data = (struct raft_buf){"a", 1};
    es[2].data = (struct raft_buf){"b", 1};
    struct raft_msg prop = {.type = RAFT_MSG_PROPOSE, .from = 2, .to = 1};
    prop.entries = es;
    prop.n_entries = 3;
    assert_int_equal(h_recv(&nodes[0], &prop), 0);
    assert_int_equal(raft_last_index(nodes[0].r), last + 2);
    assert_int_equal(h_settle(nodes, 3), 0);
    assert_int_equal(raft_commit_index(nodes[2].r), last + 2);
    stop_all(nodes, 3);
}

/* An unreachable report turns optimistic replication into probing: one MsgApp at a time. */
static void unreachable_peer_is_probed(void **state)
{
    (void)state;
    struct h_node nodes[3];
    start_three(nodes, NULL);
    elect_one(nodes, 3);
    struct raft_event ev = {.type = RAFT_EV_UNREACHABLE, .u.peer = 2};
    assert_int_equal(h_step(&nodes[0], &ev), 0);
    h_clear(&nodes[0]);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_propose(&nodes[0], "x", NULL), 0);
    }
    assert_int_equal(h_count(&nodes[0], RAFT_MSG_APP, 2), 1);
    assert_int_equal(h_count(&nodes[0], RAFT_MSG_APP, 3), 3);
    stop_all(nodes, 3);
}

/* Thesis 10.2.1 only holds for a leader whose term and vote are durable: a member that
 * campaigned and won between two Readies must persist before sending anything. */
static void early_send_needs_durable_term_and_vote(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 3, NULL), 0);
    struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
    assert_int_equal(raft_step(n.r, &camp), 0);
    struct raft_msg v = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 1};
    struct raft_event ev = {.type = RAFT_EV_RECV, .u.msg = &v};
    assert_int_equal(raft_step(n.r, &ev), 0);
    v.type = RAFT_MSG_VOTE_RESP;
    assert_int_equal(raft_step(n.r, &ev), 0);
    struct raft_ready rd;
    assert_int_equal(raft_ready(n.r, &rd), 0);
    assert_int_equal(rd.role, RAFT_LEADER);
    assert_true(rd.must_sync);
    assert_false(rd.can_send_before_sync); /* Term 1 and the self-vote are not durable. */
    assert_int_equal(raft_memstore_persist(&n.ms, &rd), 0);
    assert_int_equal(raft_advance(n.r, &rd), 0);
    h_drain(&n);
    struct raft_msg ack = {.type = RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 1, .index = 1};
    assert_int_equal(h_recv(&n, &ack), 0); /* Member 2 leaves probe state. */
    h_clear(&n);
    struct raft_event prop = {.type = RAFT_EV_PROPOSE};
    prop.u.propose.data = (struct raft_buf){"x", 1};
    assert_int_equal(raft_step(n.r, &prop), 0);
    assert_int_equal(raft_ready(n.r, &rd), 0);
    assert_true(rd.n_msgs > 0);
    assert_true(rd.can_send_before_sync);
    assert_int_equal(raft_advance(n.r, &rd), 0);
    h_stop(&n);
}

static int step_recv(struct raft *r, const struct raft_msg *m)
{
    struct raft_event ev = {.type = RAFT_EV_RECV, .u.msg = m};
    return raft_step(r, &ev);
}

/* Several inputs between two Readies: a conflict inside the unstable tail truncates it, and an
 * append right after a not-yet-installed snapshot matches against the snapshot's term. */
static void follower_handles_inputs_batched_before_ready(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 2, 3, NULL), 0);
    struct raft_entry es[5];
    for (int i = 0; i < 5; i++) {
        es[i] = (struct raft_entry){.index = (raft_index)i + 1, .term = 1};
        es[i].type = RAFT_ENTRY_NORMAL;
        es[i].data = (struct raft_buf){"old", 3};
    }
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 1};
    app.entries = es;
    app.n_entries = 5;
    assert_int_equal(step_recv(n.r, &app), 0);
    struct raft_entry ne[2] = {{.index = 4, .term = 2, .type = RAFT_ENTRY_NORMAL},
                               {.index = 5, .term = 2, .type = RAFT_ENTRY_NORMAL}};
    ne[0].data = (struct raft_buf){"new", 3};
    ne[1].data = (struct raft_buf){"new", 3};
    struct raft_msg app2 = {.type = RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 3};
    app2.log_term = 1;
    app2.entries = ne;
    app2.n_entries = 2;
    app2.commit = 4;
    assert_int_equal(step_recv(n.r, &app2), 0);
    assert_int_equal(h_drain(&n), 0);
    assert_int_equal(raft_memstore_last(&n.ms), 5);
    assert_int_equal(raft_memstore_get(&n.ms, 3)->term, 1);
    assert_int_equal(raft_memstore_get(&n.ms, 4)->term, 2);
    assert_memory_equal(raft_memstore_get(&n.ms, 5)->data.base, "new", 3);
    assert_int_equal(n.applied, 4);
    /* Snapshot at 10 (term 2), then entries 11..12 before any Ready. */
    struct raft_msg snap = {.type = RAFT_MSG_SNAP, .from = 3, .to = 2, .term = 2};
    snap.snap.index = 10;
    snap.snap.term = 2;
    snap.snap.conf = (struct raft_conf){.n_voters = 3, .voters = {1, 2, 3}};
    assert_int_equal(step_recv(n.r, &snap), 0);
    assert_int_equal(raft_last_index(n.r), 10);
    struct raft_entry after[2] = {{.index = 11, .term = 2, .type = RAFT_ENTRY_EMPTY},
                                  {.index = 12, .term = 2, .type = RAFT_ENTRY_EMPTY}};
    struct raft_msg app3 = {.type = RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 10};
    app3.log_term = 2;
    app3.entries = after;
    app3.n_entries = 2;
    app3.commit = 12;
    assert_int_equal(step_recv(n.r, &app3), 0);
    struct raft_ready rd;
    assert_int_equal(raft_ready(n.r, &rd), 0);
    assert_non_null(rd.snap);
    assert_int_equal(rd.snap->index, 10);
    assert_int_equal(rd.n_entries, 2);
    assert_int_equal(rd.n_committed, 2); /* 11 and 12; up to 10 comes with the snapshot. */
    assert_int_equal(rd.committed[0].index, 11);
    assert_int_equal(raft_memstore_persist(&n.ms, &rd), 0);
    assert_int_equal(raft_advance(n.r, &rd), 0);
    assert_int_equal(n.ms.snap.index, 10);
    assert_int_equal(raft_memstore_last(&n.ms), 12);
    h_stop(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(leader_commits_only_entries_of_its_term),
        cmocka_unit_test(rejection_hint_skips_conflicting_term),
        cmocka_unit_test(diverged_follower_converges),
        cmocka_unit_test(leader_reports_each_members_match),
        cmocka_unit_test(inflight_window_caps_messages),
        cmocka_unit_test(byte_limits_split_and_cap),
        cmocka_unit_test(heartbeat_commit_is_capped_by_match),
        cmocka_unit_test(compacted_follower_gets_snapshot),
        cmocka_unit_test(restart_keeps_hard_state_and_log),
        cmocka_unit_test(read_index_waits_for_term_commit_and_quorum),
        cmocka_unit_test(leader_appends_forwarded_proposals),
        cmocka_unit_test(unreachable_peer_is_probed),
        cmocka_unit_test(early_send_needs_durable_term_and_vote),
        cmocka_unit_test(follower_handles_inputs_batched_before_ready),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
