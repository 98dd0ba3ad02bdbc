/* Private to raft/: the state of a member and the helpers its source files share. */
#ifndef KV_RAFT_CORE_H
#define KV_RAFT_CORE_H

#include "raft/raft.h"

/* ---- heap (heap.c) ---- */
void *raft_malloc(const struct raft_heap *h, size_t size);
void *raft_realloc(const struct raft_heap *h, void *p, size_t size);
void raft_free(const struct raft_heap *h, void *p);

/* ---- the log: storage (stable) + unstable tail (log.c), etcd raftLog ---- */
struct raft_log
{
    const struct raft_storage *st;
    const struct raft_heap *heap;
    bool has_snap;              /* An incoming snapshot not yet handed out / installed. */
    struct raft_snap_meta snap; /* Valid when has_snap. */
    struct raft_entry *ents;    /* Unstable entries; ents[i].index == offset + i; owned data. */
    size_t n;
    size_t cap;
    raft_index offset;
    raft_index committed;
    raft_index applied;
    /* Data of unstable entries dropped by a conflicting append or a snapshot.  Messages in the
     * outbox may still point at it (a leader's MsgApp built before it stepped down), so it is
     * freed only at raft_advance(), once the Ready carrying those messages was handled. */
    void **dead;
    size_t n_dead;
    size_t cap_dead;
};

/* Free the data of dropped entries (raft_advance(), raft_log_fini()). */
void raft_log_reap(struct raft_log *l);

int raft_log_init(struct raft_log *l, const struct raft_storage *st, const struct raft_heap *h);
void raft_log_fini(struct raft_log *l);
raft_index raft_log_first(const struct raft_log *l);
raft_index raft_log_last(const struct raft_log *l);
/* 0, RAFT_ECOMPACTED or RAFT_EUNAVAILABLE (or a storage error). */
int raft_log_term(const struct raft_log *l, raft_index i, raft_term *out);
raft_term raft_log_term_or0(const struct raft_log *l, raft_index i);
raft_term raft_log_last_term(const struct raft_log *l);
bool raft_log_match_term(const struct raft_log *l, raft_index i, raft_term t);
bool raft_log_is_up_to_date(const struct raft_log *l, raft_index last, raft_term term);
/* Entry headers for [lo, hi) into @out (room for hi - lo), data borrowed, at most @max_bytes
 * (at least one entry). */
int raft_log_slice(const struct raft_log *l,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   struct raft_entry *out,
                   size_t *n);
/* Append copies of @ents (consecutive), truncating any unstable suffix they overlap. */
int raft_log_append(struct raft_log *l, const struct raft_entry *ents, size_t n);
/* First index in @ents whose term conflicts with the log (or is new); 0 if all match. */
raft_index raft_log_find_conflict(const struct raft_log *l,
                                  const struct raft_entry *ents,
                                  size_t n);
/* Largest index <= @index whose term is <= @term (etcd findConflictByTerm). */
raft_index raft_log_find_conflict_by_term(const struct raft_log *l,
                                          raft_index index,
                                          raft_term term,
                                          raft_term *term_out);
void raft_log_commit_to(struct raft_log *l, raft_index i);
void raft_log_restore(struct raft_log *l, const struct raft_snap_meta *meta);
/* The Ready persisted the first @n unstable entries (and the snapshot if @snap). */
void raft_log_stable(struct raft_log *l, size_t n, bool snap);

/* ---- progress and flow control (progress.c), etcd tracker ---- */
enum raft_pr_state { RAFT_PR_PROBE = 1, RAFT_PR_REPLICATE, RAFT_PR_SNAPSHOT };

/* A ring of in-flight MsgApp (last index, bytes), capped by count and bytes. */
struct raft_inflights
{
    size_t start;
    size_t count;
    size_t cap;
    size_t bytes;
    size_t max_bytes;
    raft_index *idx;
    size_t *size;
};

struct raft_progress
{
    raft_id id;
    bool learner;
    enum raft_pr_state state;
    raft_index match;
    raft_index next;
    raft_index pending_snap; /* Snapshot index being sent (state snapshot). */
    bool probe_sent;         /* Probe state: one MsgApp out, wait for its reply. */
    bool recent_active;      /* Heard from since the last CheckQuorum round. */
    int vote;                /* 0 none, 1 granted, 2 rejected. */
    uint64_t read_ack;       /* Highest ReadIndex round acknowledged. */
    struct raft_inflights ins;
};

bool raft_progress_is_paused(const struct raft_progress *p);
void raft_progress_become_probe(struct raft_progress *p);
void raft_progress_become_replicate(struct raft_progress *p);
void raft_progress_become_snapshot(struct raft_progress *p, raft_index snap);
bool raft_progress_maybe_update(struct raft_progress *p, raft_index n);
bool raft_progress_maybe_decr(struct raft_progress *p, raft_index rejected, raft_index hint);
void raft_inflights_add(struct raft_inflights *in, raft_index idx, size_t bytes);
void raft_inflights_free_le(struct raft_inflights *in, raft_index idx);
bool raft_inflights_full(const struct raft_inflights *in);
void raft_inflights_reset(struct raft_inflights *in);

/* ---- the member ---- */
struct raft_read_req
{
    uint64_t ctx;     /* Caller's context. */
    raft_id from;     /* Requesting member (self or a follower). */
    raft_index index; /* Commit index at request time; 0 while waiting for a term commit. */
    uint64_t seq;     /* Heartbeat round that must be acknowledged by a quorum. */
};

struct raft
{
    raft_id id;
    struct raft_config cfg; /* With defaults filled in. */
    const struct raft_heap *heap;
    raft_term term;
    raft_id vote;
    raft_id lead;
    enum raft_role role;
    struct raft_log log;
    struct raft_conf conf; /* In effect: the last one appended (thesis 4.1). */
    raft_index conf_index; /* Index of the entry it came from (0: snapshot/bootstrap). */
    struct raft_progress prs[RAFT_MAX_MEMBERS];
    unsigned n_prs;
    raft_index *win_idx; /* Backing blocks of every slot's in-flight window. */
    size_t *win_size;
    unsigned election_elapsed;
    unsigned heartbeat_elapsed;
    unsigned randomized_timeout;
    raft_id transferee;
    uint64_t rng;
    /* ReadIndex */
    struct raft_read_req *rreqs;
    size_t n_rreqs, cap_rreqs;
    uint64_t read_seq;
    struct raft_read_state *reads;
    size_t n_reads, cap_reads;
    /* Outbox, released by raft_advance(). */
    struct raft_msg *msgs;
    size_t n_msgs, cap_msgs;
    struct raft_snap_req *sreqs;
    size_t n_sreqs, cap_sreqs;
    /* Ready bookkeeping */
    struct raft_hard_state prev_hs;
    enum raft_role prev_role;
    raft_id prev_lead;
    struct raft_entry *apply_buf;
    size_t cap_apply_buf;
    bool bcast_pending; /* New entries to send: batched into one MsgApp per peer per Ready. */
    char errmsg[256];
};

/* Internal helpers.  All run on the thread that owns @r; errors are RAFT_ENOMEM or storage
 * errors unless stated otherwise. */

/* raft.c */
/* Emit a trace line through cfg.tracer (no-op without one). */
void raft_trace(struct raft *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Become follower of @lead (0: unknown) in @term, resetting timers and leader state. */
void raft_become_follower(struct raft *r, raft_term term, raft_id lead);
/* The progress slot of member @id, or NULL when not in the configuration. */
struct raft_progress *raft_progress_of(struct raft *r, raft_id id);
/* Majority of the voters in effect. */
unsigned raft_quorum(const struct raft *r);
/* Only voters campaign. */
bool raft_is_promotable(const struct raft *r);
/* Queue @m for the next Ready, stamping from and (except votes and forwarded requests) term.
 * Takes ownership of m->entries (an array from raft_malloc), also on error. */
int raft_send(struct raft *r, struct raft_msg *m);
/* Common part of every role change: term (clearing the vote when it changes), timers,
 * transfer, pending reads and every follower's progress. */
void raft_reset(struct raft *r, raft_term term);

/* election.c */
/* Start a (pre-)election; @transfer skips PreVote and marks requests to bypass the lease. */
int raft_campaign(struct raft *r, bool transfer);
void raft_reset_randomized_timeout(struct raft *r);
/* One logical clock tick: election timeout, heartbeats, CheckQuorum. */
int raft_tick(struct raft *r);
/* Answer a MsgVote / MsgPreVote of the current (or PreVote's next) term. */
int raft_handle_vote(struct raft *r, const struct raft_msg *m);
/* Messages while (pre-)candidate: count votes, yield to a leader. */
int raft_step_candidate(struct raft *r, const struct raft_msg *m);

/* replication.c */
/* Send @p what it lacks (or a snapshot request), unless flow control pauses it; *@sent tells
 * whether a message went out.  @send_if_empty sends an empty MsgApp (probe, commit update). */
int raft_send_append(struct raft *r, struct raft_progress *p, bool send_if_empty, bool *sent);
int raft_bcast_append(struct raft *r);
/* Heartbeat every other member, carrying ReadIndex round @ctx. */
int raft_bcast_heartbeat(struct raft *r, uint64_t ctx);
/* Leader: advance commit by counting current-term replicas; true if it moved. */
bool raft_maybe_commit(struct raft *r);
/* Append to our own log (copies) and adopt any configuration among @ents. */
int raft_append_local(struct raft *r, const struct raft_entry *ents, size_t n);
/* Follower side of MsgApp / MsgHeartbeat / MsgSnap. */
int raft_handle_append(struct raft *r, const struct raft_msg *m);
int raft_handle_heartbeat(struct raft *r, const struct raft_msg *m);
int raft_handle_snapshot(struct raft *r, const struct raft_msg *m);
/* Leader side of the replies and of RAFT_EV_SNAP_STATUS. */
int raft_leader_append_resp(struct raft *r, const struct raft_msg *m);
int raft_leader_heartbeat_resp(struct raft *r, const struct raft_msg *m);
int raft_leader_snap_status(struct raft *r, raft_id peer, bool ok);
/* Leader: append one entry of the current term (data copied); the broadcast happens at the
 * next raft_ready().  @index and @term (may be NULL) receive its position. */
int raft_propose_entry(struct raft *r,
                       enum raft_entry_type type,
                       const void *data,
                       size_t len,
                       raft_index *index,
                       raft_term *term);
/* The entry at the commit index is of the current term (thesis 6.4). */
bool raft_committed_in_term(const struct raft *r);

/* membership.c */
/* Make @c the configuration in effect, from the entry at @index (0: snapshot).  Cannot fail
 * (member slots are preallocated); returns 0. */
int raft_conf_apply(struct raft *r, const struct raft_conf *c, raft_index index);
/* Adopt the last configuration entry among freshly appended @ents, if any. */
int raft_conf_scan_appended(struct raft *r, const struct raft_entry *ents, size_t n);
/* Restore the configuration in effect before index @before (after truncating from it). */
int raft_conf_revert(struct raft *r, raft_index before);
/* Leader: propose a one-server change.  RAFT_ENOTLEADER, RAFT_EBUSY, RAFT_EINVAL,
 * RAFT_ETOOBIG. */
int raft_conf_change(struct raft *r, enum raft_cc_type type, raft_id id, raft_index *index);
/* A leader no longer voting steps down once its removal is committed. */
void raft_conf_maybe_step_down(struct raft *r);

/* readindex.c */
/* A read request from @from (us, or a follower via MsgReadIndex).  RAFT_ENOTLEADER for local
 * requests without a known leader. */
int raft_read_index(struct raft *r, raft_id from, uint64_t ctx);
/* Answer the requests whose heartbeat round a quorum acknowledged. */
int raft_read_release(struct raft *r);
/* The first commit of the leader's term: give waiting requests their index and round. */
int raft_read_on_committed_in_term(struct raft *r);
void raft_read_reset(struct raft *r);
/* Queue a read state for the next Ready. */
int raft_read_state_add(struct raft *r, raft_index index, uint64_t ctx);

#endif /* KV_RAFT_CORE_H */
