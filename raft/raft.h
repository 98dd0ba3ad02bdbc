/* The Raft protocol as a pure, deterministic state machine driven by events (RawNode shape). */
#ifndef KV_RAFT_RAFT_H
#define KV_RAFT_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Usage and the Ready/Advance contract (etcd-io/raft doc.go, thesis 10.2.1)
 * --------------------------------------------------------------------------
 * One thread owns a struct raft.  It feeds every input through raft_step() (ticks, received
 * messages, proposals, reads, reports).  Then, while raft_has_ready(), it calls raft_ready() and
 * handles the returned struct raft_ready in this order:
 *   1. If rd.snap != NULL, install the snapshot (state + raft_storage, e.g.
 *      raft_memstore_apply_snapshot()) before anything else.
 *   2. Append rd.entries to the storage and persist rd.hs when rd.has_hard_state; fsync when
 *      rd.must_sync.  This must be durable BEFORE sending rd.msgs, with one exception: when
 *      rd.can_send_before_sync is true (a leader whose term and vote did not change since the
 *      previous Ready), rd.msgs may go out in parallel with the fsync (thesis 10.2.1), because
 *      the leader counts its own copy only at raft_advance().  Do not decide this from rd.role
 *      alone: a member that voted, campaigned and won between two Readies is a leader whose new
 *      term and vote are not durable yet.
 *   3. Send rd.msgs (and start sending a snapshot for every rd.snap_reqs[i]).
 *   4. Apply rd.committed in order, and serve rd.reads once applied >= their index.
 *   5. Call raft_advance(r, &rd): it tells the core that all of the above is done (in particular
 *      that rd.entries are durable).
 * raft_step() must not be called between raft_ready() and raft_advance().  The storage may be
 * compacted (raft_memstore_compact()) only between raft_advance() and the next raft_step(),
 * because pending messages borrow entry data from it.
 *
 * Nothing here does I/O, reads a clock or draws outside randomness: the same config, storage
 * and event sequence give the same outputs bit for bit.  There is no global state.
 */

typedef uint64_t raft_id;    /* Member id; 0 means "none". */
typedef uint64_t raft_term;  /* Term number. */
typedef uint64_t raft_index; /* Log index; the first entry is 1. */

/* Error codes (STYLE.md §3): caller misuse or out of memory only.  Protocol rejections are reply
 * messages, never errors. */
#define RAFT_ERRORS(X)                                                    \
    X(RAFT_ENOMEM, 1, "out of memory")                                    \
    X(RAFT_EINVAL, 2, "invalid argument")                                 \
    X(RAFT_ENOTLEADER, 3, "not the leader")                               \
    X(RAFT_EBUSY, 4, "a configuration change or transfer is in progress") \
    X(RAFT_ECOMPACTED, 5, "requested index is compacted")                 \
    X(RAFT_EUNAVAILABLE, 6, "requested index is not in the log")          \
    X(RAFT_ESTORAGE, 7, "storage failure")                                \
    X(RAFT_ETOOBIG, 8, "too many members")
enum raft_err {
#define X(code, num, msg) code = num,
    RAFT_ERRORS(X)
#undef X
};

/* The message for @code; "unknown error" for codes not in RAFT_ERRORS.  Any thread. */
const char *raft_strerror(int code);

/* Allocation hooks (STYLE.md §4): everything the core and the memstore allocate goes through
 * these, so tests can fail the Nth allocation.  NULL members fall back to libc. */
struct raft_heap
{
    void *ctx;                                           /* Passed back to the hooks. */
    void *(*malloc)(void *ctx, size_t size);             /* Like malloc(3). */
    void *(*realloc)(void *ctx, void *ptr, size_t size); /* Like realloc(3). */
    void (*free)(void *ctx, void *ptr);                  /* Like free(3). */
};

/* A byte range.  Ownership is stated wherever one is passed. */
struct raft_buf
{
    void *base; /* May be NULL when len == 0. */
    size_t len;
};

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 1, /* Application data. */
    RAFT_ENTRY_CONF,       /* A full membership configuration (raft_conf_encode()). */
    RAFT_ENTRY_EMPTY,      /* Appended by a new leader (thesis 6.4); carries nothing. */
};

struct raft_entry
{
    raft_term term;
    raft_index index;
    enum raft_entry_type type;
    struct raft_buf data;
};

/* Largest voters + learners in one configuration; keeps configurations fixed-size. */
#define RAFT_MAX_MEMBERS 16

/* A membership configuration (proto ConfState). */
struct raft_conf
{
    unsigned n_voters;
    unsigned n_learners;
    raft_id voters[RAFT_MAX_MEMBERS];
    raft_id learners[RAFT_MAX_MEMBERS];
};

/* Snapshot metadata (proto SnapshotMeta).  index == 0 means "no snapshot". */
struct raft_snap_meta
{
    raft_index index; /* Last index the snapshot covers. */
    raft_term term;   /* Term of that entry. */
    struct raft_conf conf;
};

/* What must be durable before voting or acknowledging (etcd HardState). */
struct raft_hard_state
{
    raft_term term;
    raft_id vote;
    raft_index commit;
};

/* Message types: values equal proto/raftpb.proto MessageType. */
enum raft_msg_type {
    RAFT_MSG_APP = 1,
    RAFT_MSG_APP_RESP,
    RAFT_MSG_VOTE,
    RAFT_MSG_VOTE_RESP,
    RAFT_MSG_PREVOTE,
    RAFT_MSG_PREVOTE_RESP,
    RAFT_MSG_HEARTBEAT,
    RAFT_MSG_HEARTBEAT_RESP,
    RAFT_MSG_SNAP,
    RAFT_MSG_TIMEOUT_NOW,
    RAFT_MSG_READ_INDEX,
    RAFT_MSG_READ_INDEX_RESP,
    RAFT_MSG_PROPOSE,
    RAFT_MSG_TRANSFER_LEADER,
};
#define RAFT_MSG_TYPE_MAX RAFT_MSG_TRANSFER_LEADER

/* Vote requests with this context come from a leadership transfer and bypass the leader lease. */
#define RAFT_CTX_TRANSFER 1

/* A peer message, field for field the proto Message. */
struct raft_msg
{
    enum raft_msg_type type;
    raft_id to;
    raft_id from;
    raft_term term;
    raft_term log_term; /* Term of entry @index (App, Vote); hint term in rejections. */
    raft_index index;
    const struct raft_entry *entries; /* Borrowed (see raft_step() and raft_ready()). */
    size_t n_entries;
    raft_index commit;
    bool reject;
    raft_index reject_hint;     /* Rejection: the follower's suggested probe index. */
    raft_term reject_term;      /* Rejection: the term of the follower's entry at reject_hint. */
    struct raft_snap_meta snap; /* MsgSnap only. */
    uint64_t context;           /* ReadIndex request id; RAFT_CTX_TRANSFER on votes. */
};

enum raft_role {
    RAFT_FOLLOWER = 1,
    RAFT_PRE_CANDIDATE,
    RAFT_CANDIDATE,
    RAFT_LEADER,
};

/* A linearizable read is safe once the state machine has applied @index. */
struct raft_read_state
{
    raft_index index;
    uint64_t context; /* The caller's request id from RAFT_EV_READ_INDEX. */
};

/* The leader asks the application to send a snapshot to @msg.to: ship the snapshot data covering
 * @msg.snap, then deliver @msg (a MsgSnap) to that peer, then report with RAFT_EV_SNAP_STATUS. */
struct raft_snap_req
{
    struct raft_msg msg;
};

enum raft_cc_type {
    RAFT_CC_ADD_VOTER = 1, /* Also promotes a learner. */
    RAFT_CC_ADD_LEARNER,
    RAFT_CC_REMOVE,
};

enum raft_event_type {
    RAFT_EV_TICK = 1,    /* One logical clock tick. */
    RAFT_EV_RECV,        /* A message from a peer: u.msg. */
    RAFT_EV_PROPOSE,     /* Leader only: append u.propose.data. */
    RAFT_EV_CONF_CHANGE, /* Leader only: u.cc. */
    RAFT_EV_READ_INDEX,  /* u.read_ctx: request a linearizable read point. */
    RAFT_EV_SNAP_STATUS, /* u.snap: the snapshot send to a peer finished. */
    RAFT_EV_UNREACHABLE, /* u.peer: the transport failed to reach a peer. */
    RAFT_EV_TRANSFER,    /* u.peer: hand leadership to that voter. */
    RAFT_EV_CAMPAIGN,    /* Start an election now (tests, operator tooling). */
};

struct raft_event
{
    enum raft_event_type type;
    union
    {
        const struct raft_msg *msg; /* Borrowed; entries are copied. */
        struct
        {
            struct raft_buf data; /* Borrowed; copied into the log. */
            raft_index *index;    /* Out, may be NULL: index the entry got. */
            raft_term *term;      /* Out, may be NULL: its term. */
        } propose;
        struct
        {
            enum raft_cc_type type;
            raft_id id;
            raft_index *index; /* Out, may be NULL. */
        } cc;
        uint64_t read_ctx;
        struct
        {
            raft_id peer;
            bool ok;
        } snap;
        raft_id peer;
    } u;
};

/* Everything the application must do, in the contract's order (see the top of this file).
 * All pointers are borrowed and valid until raft_advance(). */
struct raft_ready
{
    bool has_hard_state;               /* hs changed since the last Ready: persist it. */
    struct raft_hard_state hs;         /* Current hard state. */
    bool must_sync;                    /* Entries or term/vote changed: fsync before sending. */
    bool can_send_before_sync;         /* Leader, same term and vote: msgs may race the fsync. */
    const struct raft_snap_meta *snap; /* Snapshot to install first, or NULL. */
    const struct raft_entry *entries;  /* Append to storage (may overwrite a conflicting tail). */
    size_t n_entries;
    const struct raft_entry *committed; /* Apply in order. */
    size_t n_committed;
    const struct raft_msg *msgs; /* Send. */
    size_t n_msgs;
    const struct raft_snap_req *snap_reqs; /* Snapshots to send. */
    size_t n_snap_reqs;
    const struct raft_read_state *reads; /* Read points that became safe. */
    size_t n_reads;
    bool has_soft_state; /* role/leader changed since the last Ready. */
    enum raft_role role;
    raft_id leader; /* 0 when unknown. */
};

/* The synchronous log storage the core reads the stable part of its log from (etcd Storage).
 * Every callback gets @ctx.  The application appends to it while handling a Ready. */
struct raft_storage
{
    void *ctx;
    /* The durable hard state (term, vote, commit); zeroes for a new member.  The configuration
     * comes from the log and snapshot(). */
    int (*initial_state)(void *ctx, struct raft_hard_state *hs);
    /* Fill @out (room for hi - lo) with entries [lo, hi), stopping once their data exceeds
     * @max_bytes (but always at least one).  Data stays owned by the storage and must remain
     * valid until it is truncated or compacted.  Errors: RAFT_ECOMPACTED (lo too old),
     * RAFT_EUNAVAILABLE (hi - 1 past the last index). */
    int (*entries)(void *ctx,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   struct raft_entry *out,
                   size_t *n_out);
    /* Term of entry @i, for first_index - 1 <= i <= last_index.  Same errors as entries. */
    int (*term)(void *ctx, raft_index i, raft_term *out);
    raft_index (*first_index)(void *ctx); /* Snapshot index + 1. */
    raft_index (*last_index)(void *ctx);  /* Last stored index (snapshot index when empty). */
    /* Metadata of the most recent snapshot (index 0 when none): its configuration is the
     * membership at that point. */
    int (*snapshot)(void *ctx, struct raft_snap_meta *out);
};

/* Optional trace sink: stable one-line descriptions of decisions, for golden tests. */
struct raft_tracer
{
    void *ctx;
    void (*emit)(void *ctx, raft_id id, const char *line);
};

struct raft_config
{
    raft_id id;                         /* This member, non-zero. */
    unsigned election_tick;             /* Base election timeout in ticks (0: 10). */
    unsigned heartbeat_tick;            /* Heartbeat interval in ticks (0: 1). */
    uint64_t seed;                      /* Seeds election-timeout randomization (0: id). */
    size_t max_msg_bytes;               /* Entry bytes per MsgApp (0: 1 MiB). */
    size_t max_inflight_msgs;           /* MsgApps in flight per follower (0: 256). */
    size_t max_inflight_bytes;          /* Entry bytes in flight per follower (0: 32 MiB). */
    size_t max_apply_bytes;             /* Committed entry bytes per Ready (0: 64 MiB). */
    bool disable_prevote;               /* PreVote (thesis 9.6) is on unless set. */
    bool disable_check_quorum;          /* CheckQuorum (thesis 6.2) is on unless set. */
    raft_index applied;                 /* Last index the state machine applied (restart). */
    const struct raft_storage *storage; /* Must outlive the raft. */
    const struct raft_heap *heap;       /* NULL for libc; must outlive the raft. */
    const struct raft_tracer *tracer;   /* NULL for none; must outlive the raft. */
};

struct raft; /* Opaque. */

/* Create a member from @cfg, loading its hard state, snapshot and configuration from
 * cfg->storage (the configuration is that of the last configuration entry in the log, else the
 * snapshot's).  On success *@out owns the raft (free with raft_destroy()).
 * Errors: RAFT_EINVAL (id 0, no storage, applied beyond the log), RAFT_ENOMEM, RAFT_ESTORAGE
 * and storage errors.  @errmsg (may be NULL, 256 bytes) receives context on error. */
int raft_create(const struct raft_config *cfg, struct raft **out, char *errmsg);

/* Free @r and everything it owns.  NULL is a no-op. */
void raft_destroy(struct raft *r);

/* Feed one input.  Borrowed inputs are copied.  Errors: RAFT_EINVAL (malformed event, e.g. a
 * message from 0 or to another member), RAFT_ENOTLEADER (propose / conf change on a
 * non-leader; redirect to the leader), RAFT_EBUSY (a configuration change is uncommitted, the
 * leader has not committed an entry in its term yet, or a transfer is in progress),
 * RAFT_ETOOBIG, RAFT_ENOMEM (state unchanged except that messages may be lost, which Raft
 * tolerates), storage errors.  Must not be called between raft_ready() and raft_advance(). */
int raft_step(struct raft *r, const struct raft_event *ev);

/* True when raft_ready() would return something to do. */
bool raft_has_ready(const struct raft *r);

/* Collect pending work into @rd (see struct raft_ready).  Errors: RAFT_ENOMEM and storage
 * errors (nothing is consumed; retry later). */
int raft_ready(struct raft *r, struct raft_ready *rd);

/* Acknowledge that @rd (the last raft_ready() output) was fully handled.  Releases its memory.
 * Returns 0: it cannot fail (messages it could not queue for lack of memory are dropped, which
 * Raft tolerates).  The int return leaves room for storage errors later. */
int raft_advance(struct raft *r, const struct raft_ready *rd);

/* Introspection, any time on the owning thread. */
enum raft_role raft_role(const struct raft *r);
raft_id raft_leader(const struct raft *r);
raft_term raft_term_of(const struct raft *r);
raft_index raft_commit_index(const struct raft *r);
raft_index raft_last_index(const struct raft *r);
raft_id raft_id_of(const struct raft *r);
/* Leader only: the highest index known to be in member @id's log (its progress match; for the
 * leader itself, what it has persisted).  0 when @r is not the leader or @id is not in the
 * configuration.  Read-only: for decisions outside the protocol, such as whether a learner has
 * caught up enough to be promoted (etcd's isLearnerReady). */
raft_index raft_match_of(const struct raft *r, raft_id id);
/* The configuration in effect (the last one appended to the log). */
const struct raft_conf *raft_conf_of(const struct raft *r);

/* Encode @c as a RAFT_ENTRY_CONF payload into @buf (room for raft_conf_size()); returns bytes
 * written.  Little-endian: u32 n_voters, u32 n_learners, then u64 ids. */
size_t raft_conf_size(const struct raft_conf *c);
size_t raft_conf_encode(const struct raft_conf *c, void *buf);
/* Decode; RAFT_EINVAL on a malformed payload. */
int raft_conf_decode(const void *buf, size_t len, struct raft_conf *c);
bool raft_conf_is_voter(const struct raft_conf *c, raft_id id);
bool raft_conf_is_learner(const struct raft_conf *c, raft_id id);

/* Names for traces and messages. */
const char *raft_msg_type_name(enum raft_msg_type t);
const char *raft_role_name(enum raft_role r);

#endif /* KV_RAFT_RAFT_H */
