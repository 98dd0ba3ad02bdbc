/* The deterministic cluster fixture: N raft members with memstores on a simulated network and
 * one virtual clock, with continuous safety checks (STYLE.md §8). */
#ifndef KV_TEST_CLUSTER_H
#define KV_TEST_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/memstore.h"
#include "raft/raft.h"

#define TEST_CLUSTER_MAX 9

/* A message (or snapshot transfer) in flight. */
struct test_flight
{
    uint64_t at;      /* Delivery time (virtual ms). */
    uint64_t seq;     /* Tie-break: send order. */
    bool snap_report; /* A snapshot-status report to the sender instead of a message. */
    bool snap_ok;
    struct raft_msg msg; /* Entries deep-copied, owned here. */
};

/* Network behaviour of one directed link (overrides the cluster-wide settings when set). */
struct test_link
{
    bool set;
    unsigned delay_min, delay_max; /* Latency range in ms. */
    unsigned drop_pm, dup_pm;      /* Per mille. */
};

/* The member's state machine is a running hash of the applied sequence. */
struct test_node
{
    raft_id id;
    struct raft *raft;                /* NULL while crashed or never started. */
    struct raft_memstore store;       /* What was written: survives crashes, but see synced_hs. */
    struct raft_hard_state synced_hs; /* Hard state as of the last fsync (must_sync Ready). */
    bool exists;                      /* Started once (has a store). */
    raft_index applied;
    uint64_t hash;                 /* Hash of the applied sequence up to @applied. */
    struct raft_conf applied_conf; /* Configuration at @applied (for snapshots). */
    uint64_t next_tick;
    unsigned tick_phase;
    struct raft_read_state reads[64]; /* Read states delivered, latest 64. */
    unsigned n_reads;
    uint64_t n_applied_total;
    int last_role;
    raft_index last_commit; /* Commit index of the previous Ready (leader rule check). */
    bool dirty;             /* Stepped, Ready not yet handled (batching, see batch_pm). */
    uint64_t dirty_until;   /* Handle the Ready before the clock passes this. */
};

/* Every index that anyone applied: what must never change. */
struct test_rec
{
    raft_term term;
    uint64_t data_hash;
    uint64_t cum; /* State hash after applying this index. */
};

struct test_cluster
{
    unsigned n; /* Slots in use (ids 1..n). */
    struct test_node nodes[TEST_CLUSTER_MAX];
    uint64_t now; /* Virtual ms. */
    unsigned tick_ms;
    unsigned election_tick;
    unsigned heartbeat_tick;
    uint64_t rng;
    /* Network */
    struct test_flight *q; /* Binary min-heap on (at, seq). */
    size_t nq, capq;
    uint64_t seq;
    unsigned delay_min, delay_max; /* Per-message latency range (reorders). */
    unsigned drop_pm, dup_pm;      /* Drop / duplicate probability, per mille. */
    bool cut[TEST_CLUSTER_MAX + 1][TEST_CLUSTER_MAX + 1];               /* cut[from][to]. */
    struct test_link links[TEST_CLUSTER_MAX + 1][TEST_CLUSTER_MAX + 1]; /* [from][to]. */
    /* Policy */
    raft_index compact_lag;  /* Compact a store once applied - snap > this (0: never). */
    unsigned fail_snapshots; /* Lose this many upcoming snapshot transfers. */
    /* Per mille of leader Readies whose messages go out and then the leader crashes before
     * persisting (thesis 10.2.1: the leader's MsgApps may race its own fsync). */
    unsigned leader_crash_before_persist_pm;
    /* Per mille of inputs after which the member's Ready waits (up to 3 ms) so that more inputs
     * are stepped first, as a server holding inputs during an fsync does. */
    unsigned batch_pm;
    uint64_t early_crashes;
    size_t max_msg_bytes;
    size_t max_inflight_msgs;
    bool disable_prevote;
    bool disable_check_quorum;
    /* Invariant records */
    struct test_rec *rec; /* rec[i] for index i (rec[0] unused). */
    size_t nrec, caprec;
    raft_id *leader_of_term; /* By term. */
    size_t cap_terms;
    char failure[512]; /* First violated invariant; empty while all hold. */
    /* Trace */
    bool tracing;
    char *trace;
    size_t trace_len, trace_cap;
    struct raft_tracer tracer;
    uint64_t delivered, dropped;
    uint64_t snaps_sent, snaps_installed;
};

/* Boot @voters voters (ids 1..voters) with a fresh store each, all knowing the configuration.
 * @seed drives the network and each member's election randomization. */
void test_cluster_init(struct test_cluster *c, unsigned voters, uint64_t seed);
void test_cluster_fini(struct test_cluster *c);

/* Start member @id with an empty store and no configuration (to be added by a conf change). */
void test_cluster_add_node(struct test_cluster *c, raft_id id);

/* Advance virtual time by @ms, delivering messages and ticks in time order. */
void test_cluster_elapse(struct test_cluster *c, uint64_t ms);
/* Run until @pred(c, arg) holds or @max_ms pass; returns whether it held. */
bool test_cluster_run_until(struct test_cluster *c,
                            bool (*pred)(struct test_cluster *, void *),
                            void *arg,
                            uint64_t max_ms);

/* The leader with the highest term among running members, or 0. */
raft_id test_cluster_leader(struct test_cluster *c);
/* Run until some member leads (and is not about to step down); returns it or 0. */
raft_id test_cluster_elect(struct test_cluster *c, uint64_t max_ms);

/* Propose @len bytes at member @id; returns 0 or the raft error; @index may be NULL. */
int test_cluster_propose(struct test_cluster *c,
                         raft_id id,
                         const void *data,
                         size_t len,
                         raft_index *index);
/* Step an arbitrary event into member @id and drain its Ready. */
int test_cluster_step(struct test_cluster *c, raft_id id, const struct raft_event *ev);
/* Propose until committed everywhere reachable: true if member @id applied it by @max_ms. */
bool test_cluster_commit(struct test_cluster *c,
                         raft_id id,
                         const void *data,
                         size_t len,
                         uint64_t max_ms);

/* Faults */
void test_cluster_crash(struct test_cluster *c, raft_id id); /* Keeps only the store. */
void test_cluster_restart(struct test_cluster *c, raft_id id);
void test_cluster_isolate(struct test_cluster *c, raft_id id); /* Cut both ways to all. */
void test_cluster_heal(struct test_cluster *c);                /* Reconnect everything. */
void test_cluster_cut(struct test_cluster *c, raft_id from, raft_id to, bool cut);
/* Give the link @from -> @to its own latency, loss and duplication (NULL: back to the
 * cluster-wide settings). */
void test_cluster_link(struct test_cluster *c,
                       raft_id from,
                       raft_id to,
                       const struct test_link *link);

bool test_cluster_alive(const struct test_cluster *c, raft_id id);
struct raft *test_cluster_raft(struct test_cluster *c, raft_id id);

/* Check log matching between every pair of stores; records a failure. */
void test_cluster_check_logs(struct test_cluster *c);
/* Highest index applied by anyone. */
raft_index test_cluster_max_applied(const struct test_cluster *c);

/* Golden traces: lines "[ms] id text\n" collected while tracing is on. */
void test_cluster_trace(struct test_cluster *c, bool on);
/* The collected text (NUL-terminated), then cleared by test_cluster_trace_clear(). */
const char *test_cluster_trace_text(struct test_cluster *c);
void test_cluster_trace_clear(struct test_cluster *c);
/* Golden check: true if the trace equals @golden exactly; otherwise prints both (so the new
 * golden can be pasted after review) and returns false.  Clears the trace either way. */
bool test_cluster_trace_expect(struct test_cluster *c, const char *golden);
/* True if @line occurs in the trace (substring). */
bool test_cluster_trace_has(struct test_cluster *c, const char *needle);

#endif /* KV_TEST_CLUSTER_H */
