/* Internals shared by the server's files; not part of any public API. */
#ifndef KV_SERVER_SRV_INT_H
#define KV_SERVER_SRV_INT_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lsm/lsm.h"
#include "proto/frame.h"
#include "proto/kvdb.pb-c.h"
#include "proto/raftconv.h"
#include "raft/raft.h"
#include "server/config.h"
#include "server/failpoint.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/srv.h"
#include "wal/wal.h"

#define SRV_ERRMSG 256
#define SRV_MAX_TXN_DEPTH 16 /* nested txns (etcd bounds them too) */
/* WAL batches up to this size are written and synced on the loop thread (node.c). */
#define SRV_WAL_INLINE_BYTES 4096

/* ---- connections (client.c, peer.c) ---- */

enum srv_conn_kind { SRV_CONN_CLIENT = 1, SRV_CONN_PEER_IN };

/* An accepted connection.  Lives in s->conns[slot]; (slot, gen) names it safely after it is
 * gone, so late replies to a closed connection are dropped. */
struct srv_conn
{
    struct srv *s;
    enum srv_conn_kind kind;
    int fd;
    uint32_t slot;
    uint32_t gen;
    ev_io rio;
    ev_io wio;
    bool writing;           /* wio started: the socket's buffer is full */
    bool dirty;             /* on s->dirty: has frames to write this iteration */
    bool closing;           /* a protocol error was answered: close once the reply is written */
    bool sniffed;           /* the first bytes were checked for an HTTP request */
    bool http;              /* an HTTP request (/metrics, /health) */
    ev_timer http_deadline; /* HTTP only: headers, then the reply's write, must finish by it */
    struct srv_conn *next_dirty;
    struct pb_frame_reader rd;
    struct pb_frame_writer wr;
};

/* A listening socket (client.c): accepts connections of one kind on the loop thread. */
struct srv_listener
{
    struct srv *s;
    enum srv_conn_kind kind;
    const char *name; /* "client" or "peer", for log lines */
    int fd;           /* -1 when not listening */
    int fd_max;       /* accepted fds from this number up are closed at once */
    uint16_t port;
    ev_io io;
    ev_timer pause;           /* restarts io after accept ran out of fds or memory */
    uint64_t refused;         /* accepts failed, or closed at once, since the last log line */
    struct srv_log_limit log; /* one line per interval about refused connections */
};

/* An outbound peer connection (one per other member); messages to that member go here. */
struct srv_peer
{
    struct srv *s;
    raft_id id;
    struct srv_url url;
    int fd; /* -1 when not connected */
    bool connected;
    ev_io wio;
    ev_io rio; /* members only answer on this connection to say we were removed */
    struct pb_frame_reader rd;
    ev_timer retry;
    unsigned backoff_ms;
    struct pb_frame_writer wr;
    uint64_t dropped;
    struct srv_log_limit log; /* rate-limits connect failures */
    bool snap_sending;        /* a snapshot sender thread works for this peer */
    bool pending_add;         /* being added: keep it though the configuration lacks it yet */
};

/* Packed peer frames waiting for a Ready's fsync (peer.c). */
struct srv_held
{
    raft_id to;
    struct pb_frame_writer wr;
};

/* ---- pending client requests awaiting apply (kv.c) ---- */

struct srv_pending
{
    uint64_t req_id;
    uint32_t slot;
    uint32_t gen;
    uint64_t frame_id;
    uint32_t method;
    uint64_t deadline_ms;
    uint64_t arg_id;          /* member add: the new member; lease revoke: the lease */
    bool arg_learner;         /* member add: as a learner */
    uint64_t conf_index;      /* membership: answered once this configuration entry applies */
    uint64_t via;             /* lease revoke: the leader it was last proposed through */
    uint64_t retry_ms;        /* lease revoke: propose again from then if still unanswered */
    struct srv_pending *next; /* hash chain, free list or conf_waits */
};

/* ---- inputs held while a Ready is in flight (node.c) ---- */

enum srv_input_type {
    SRV_IN_BATCH = 1,
    SRV_IN_PROPOSE,
    SRV_IN_READ,
    SRV_IN_UNREACHABLE,
    SRV_IN_SNAP_STATUS,
    SRV_IN_MSG,
};

struct srv_input
{
    enum srv_input_type type;
    struct srv_input *next;
    struct pb_batch batch; /* SRV_IN_BATCH: owned */
    void *data;            /* SRV_IN_PROPOSE: owned bytes */
    size_t len;
    uint64_t req_id;     /* SRV_IN_PROPOSE: the pending request, 0 for forwarded ones */
    uint64_t ctx;        /* SRV_IN_READ */
    raft_id peer;        /* SRV_IN_UNREACHABLE, SRV_IN_SNAP_STATUS */
    bool ok;             /* SRV_IN_SNAP_STATUS */
    struct raft_msg msg; /* SRV_IN_MSG: a message without entries */
};

/* ---- work for the apply and read threads (apply.c) ---- */

/* A committed entry copied out of a Ready. */
struct srv_job_ent
{
    uint64_t index;
    uint64_t term;
    enum raft_entry_type type;
    size_t off; /* into the job's buf */
    size_t len;
};

/* A read request: a RangeRequest body to run once applied >= read_index. */
struct srv_read
{
    uint32_t slot;
    uint32_t gen;
    uint64_t frame_id;
    uint32_t method;
    uint64_t read_index; /* 0: serializable, run at once */
    uint64_t ctx;        /* ReadIndex batch this read waits on (0: none) */
    uint64_t deadline_ms;
    uint64_t issued_ms; /* when its ReadIndex request went to raft */
    void *body;         /* owned request bytes */
    size_t len;
    struct srv_read *next;
};

enum srv_job_type {
    SRV_JOB_APPLY = 1,
    SRV_JOB_READ,
    SRV_JOB_INSTALL,
    SRV_JOB_HISTORY,
    SRV_JOB_SNAPSHOT, /* take a snapshot and stream it to a client */
    SRV_JOB_HASH,     /* read thread: HashKV at start_rev for round watch_id (hashcheck.c) */
};

struct srv_job
{
    enum srv_job_type type;
    struct srv_job *next;
    struct srv_job_ent *ents; /* SRV_JOB_APPLY */
    size_t n_ents;
    char *buf;
    struct srv_read *reads; /* SRV_JOB_READ: a list */
    char *dir;              /* SRV_JOB_INSTALL: the received snapshot */
    struct raft_msg msg;    /* SRV_JOB_INSTALL: the MsgSnap to step once installed */
    int64_t watch_id;       /* SRV_JOB_HISTORY: watcher, range (in buf: key then end), start */
    size_t klen, elen;
    int64_t start_rev;
    size_t max_events;
    int fd;            /* SRV_JOB_SNAPSHOT: the client's connection, now the job's */
    uint64_t frame_id; /* SRV_JOB_SNAPSHOT */
};

enum srv_done_kind {
    SRV_DONE_REPLY = 0,      /* a client reply */
    SRV_DONE_FATAL,          /* the apply thread failed: stop the member */
    SRV_DONE_SNAP_CREATED,   /* snap: a local snapshot exists */
    SRV_DONE_SNAP_SENT,      /* peer, ok: a sender thread finished */
    SRV_DONE_SNAP_RECEIVED,  /* msg, dir: a snapshot arrived complete and verified */
    SRV_DONE_SNAP_INSTALLED, /* msg, ok: the store now holds the snapshot */
    SRV_DONE_SNAP_FAILED,    /* msg: installing a received snapshot failed (old store kept) */
    SRV_DONE_EVENTS,         /* events: changes of an applied group, for watchers */
    SRV_DONE_MEMBER_ATTR,    /* member, req_id: a member's attributes were applied */
    SRV_DONE_MEMBER_REMOVED, /* member.id, member.removed: a member left or rejoined */
    SRV_DONE_CONF,           /* snap.index, snap.conf: a configuration entry was applied */
    SRV_DONE_AUTH,           /* body: the new packed auth state */
    SRV_DONE_LEASE,          /* watch_id: lease ID, next_rev: TTL (0: gone; ID 0, -1: reset) */
    SRV_DONE_HISTORY,        /* watch_id, events, next_rev, err, complete: a catch-up read */
    SRV_DONE_ALARMS,         /* body: the new alarm set (alarm.c's record bytes) */
    SRV_DONE_HASH,           /* hash, hash_rev, hash_compact, err: this member's HashKV */
    SRV_DONE_CORRUPT,        /* hash_member, hash_rev, hash_compact, hash; next_rev: the
                              * majority's hash, ok: a majority agreed (hashcheck.c) */
};

/* A finished request or background task, from another thread back to the loop. */
struct srv_done
{
    struct srv_done *next;
    enum srv_done_kind kind;
    raft_id peer;
    bool ok;
    struct raft_snap_meta snap;
    struct raft_msg msg;
    char *dir;
    struct lsm_event *events; /* owned */
    size_t n_events;
    struct srv_member member;
    int64_t watch_id;
    int64_t next_rev;
    int err;
    bool complete;
    uint64_t req_id; /* writes: the pending request; 0 for reads */
    uint32_t slot;   /* reads: the connection */
    uint32_t gen;
    uint64_t frame_id;
    uint32_t method;
    Kvdb__ErrorCode code;
    char *errmsg;  /* owned, may be NULL */
    uint8_t *body; /* owned packed response */
    size_t len;
    uint32_t hash; /* SRV_DONE_HASH, SRV_DONE_CORRUPT */
    int64_t hash_rev;
    int64_t hash_compact;
    uint64_t hash_member;
    uint64_t hash_round;
};

/* One member's HashKV report in a round of the corruption check (hashcheck.c). */
struct srv_hash_report
{
    uint64_t member;
    int64_t rev;
    int64_t compact;
    uint32_t hash;
    bool named; /* reported as corrupt already */
};

#define SRV_HASH_ROUNDS 4
#define SRV_HASH_REPORTS (2 * SRV_MAX_MEMBERS)

/* The reports of one revision, as applied (apply thread). */
struct srv_hash_round
{
    uint64_t id;  /* HashReport.round */
    int64_t rev;  /* 0: unused */
    uint64_t seq; /* order of creation: the oldest is reused */
    bool asked;   /* this member's own hash was reported or asked for */
    size_t n;
    struct srv_hash_report r[SRV_HASH_REPORTS];
};

/* An auth token issued by this member (auth.c). */
struct srv_token
{
    char token[33];
    char user[64];
    uint64_t expiry_ms;
};

/* A lease's deadline on the leader (lease.c). */
struct srv_lease_clock
{
    int64_t id;
    int64_t ttl;
    uint64_t deadline_ms;
    bool revoking;
};

/* An active alarm (alarm.c): etcd's AlarmMember. */
#define SRV_MAX_ALARMS 64
struct srv_alarm
{
    uint64_t member;
    int type; /* Kvdb__AlarmType: NOSPACE, CORRUPT */
};

/* A FIFO between threads, with a condition variable for the consumer. */
struct srv_queue
{
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct srv_job *head;
    struct srv_job *tail;
    bool stop;
    bool busy; /* apply queue: jobs are being applied (by the apply thread or inline) */
};

struct srv
{
    struct srv_config cfg;
    char errmsg[SRV_ERRMSG];
    int fatal; /* first fatal error, stops the loop */
    struct ev_loop *loop;
    ev_timer tick;
    ev_prepare prepare;
    ev_async wake; /* completions from the apply/read threads, and srv_stop() */
    ev_io wal_io;
    ev_timer sweep;
    atomic_bool stop_requested;

    /* storage */
    struct wal *wal;
    struct wal_fs *wal_fs; /* failpoint wrapper, or NULL for plain POSIX */
    struct lsm_store *lsm;
    struct raft *raft;
    struct raft_storage storage;
    struct raft_conf boot_conf; /* configuration at index 0 (bootstrap) */
    struct wal_hard_state hs;   /* last hard state handed to the WAL */
    struct wal_entry *scratch;  /* storage callback scratch */
    size_t scratch_cap;
    struct wal_entry *wents; /* Ready -> WAL conversion scratch */
    size_t wents_cap;

    /* Ready in flight */
    bool inflight;
    uint64_t ticket;
    struct raft_ready rd;
    struct srv_input *in_head;
    struct srv_input *in_tail;
    unsigned ticks_held;
    raft_id leader;
    enum raft_role role;

    /* network */
    struct srv_listener client_l;
    struct srv_listener peer_l;
    struct srv_conn **conns;
    uint32_t *gens;
    uint32_t n_conns;
    struct srv_conn *dirty;
    struct srv_peer *peers[SRV_MAX_MEMBERS]; /* each allocated on its own: watchers point in */
    struct srv_held *held;                   /* this Ready's messages, packed, until its fsync */
    size_t n_held;
    size_t cap_held;
    size_t n_peers;
    bool peers_started;
    struct srv_log_limit cluster_log;
    _Atomic uint64_t blocked[SRV_MAX_MEMBERS]; /* partitioned peers (embedding, tests); 0 = free */

    /* requests */
    uint64_t next_req_id;
    uint64_t publish_next_ms; /* srv_members_publish: next attempt */
    struct srv_pending **ptable;
    size_t ptable_cap;
    size_t n_pending;
    struct srv_pending *pfree;
    uint64_t next_read_ctx;
    struct srv_read *reads_new;     /* linearizable reads not yet given a ReadIndex */
    struct srv_read *reads_waiting; /* reads waiting for their ReadIndex answer */
    uint64_t request_timeout_ms;
    bool reissue_reads; /* the leader changed: ask the new one for waiting reads */

    /* apply and read threads */
    pthread_t apply_thread;
    pthread_t read_thread;
    bool threads_started;
    struct srv_queue applyq;
    struct srv_queue readq;
    struct apply_group *inline_group; /* scratch of the applies run on the loop thread */
    atomic_bool apply_dead;           /* an apply failed: nothing more is applied */
    pthread_mutex_t done_mu;
    struct srv_done *done_head;
    struct srv_done *done_tail;
    pthread_mutex_t applied_mu;
    pthread_cond_t applied_cond;
    uint64_t applied_index; /* guarded by applied_mu */
    atomic_int_fast64_t revision;
    atomic_uint_fast64_t applied_pub;
    atomic_uint_fast64_t term_pub;
    atomic_uint_fast64_t leader_pub;
    /* current leader, for srv_leader() */ /* current raft term, for reply headers off the loop
                                            */
    pthread_rwlock_t lsm_lock;             /* readers vs. a snapshot install swapping s->lsm */

    /* membership (membership.c) */
    struct srv_member members[SRV_MAX_MEMBERS]; /* registry: ID -> name, peer URL (loop) */
    size_t n_members;
    struct srv_member apply_members[SRV_MAX_MEMBERS]; /* the same, apply thread's copy */
    size_t n_apply_members;
    struct srv_pending *conf_waits; /* requests answered when a configuration entry applies */
    bool was_in_conf;               /* seen ourselves in a configuration: removal stops us */
    bool cluster_id_unknown;        /* joining: take the cluster ID from the first peer */
    uint32_t move_slot, move_gen;   /* a pending move-leader */
    uint64_t move_frame, move_target, move_deadline;

    /* leases (lease.c) */
    struct srv_lease *leases; /* apply thread: ID -> TTL and keys */
    size_t n_leases;
    size_t cap_leases;
    struct srv_lease_clock *lease_mirror; /* loop: deadlines (kept by the leader) */
    size_t n_mirror;
    size_t cap_mirror;

    /* auth (auth.c) */
    Kvdb__AuthState *auth;       /* loop's copy, for checks */
    Kvdb__AuthState *apply_auth; /* apply thread's copy */
    struct srv_token *tokens;
    size_t n_tokens;
    size_t cap_tokens;

    /* metrics and alarms (metrics.c, kv.c, alarm.c) */
    struct srv_metrics metrics;
    uint64_t db_size; /* refreshed by the sweep timer */
    bool reclaim;     /* over the quota: compactions give their space back at once */
    struct srv_alarm alarms[SRV_MAX_ALARMS]; /* the replicated set, loop's copy */
    size_t n_alarms;
    struct srv_alarm apply_alarms[SRV_MAX_ALARMS]; /* the same, apply thread's copy */
    size_t n_apply_alarms;
    uint64_t alarm_retry_ms[3]; /* srv_alarm_raise: next proposal of each type for us */
    atomic_bool nospace_local;  /* the WAL or the store hit ENOSPC: writes refused here */
    bool wal_nospace;           /* loop: the Ready in flight waits for space (node.c) */
    bool store_nospace;         /* loop: the apply thread waits for space (apply.c) */
    ev_timer wal_retry;         /* node.c: persist the held Ready again */
    atomic_bool apply_stalled;  /* apply.c: a group waits for space; reads past it fail */
    uint64_t persist_start_us;

    /* auto-compaction (autocompact.c), leader only */
    uint64_t ac_time[11];
    int64_t ac_rev[11];
    size_t ac_head;
    size_t ac_n;
    uint64_t ac_last_ms;
    int64_t ac_last_rev;

    /* watch (watch.c) */
    struct srv_watcher *watchers;
    atomic_long n_watchers; /* read by the apply thread: post events only when someone watches */
    int64_t hub_rev;        /* highest revision dispatched to synced watchers */
    int64_t next_watch_id;
    uint64_t last_progress_ms;

    /* snapshots (snap.c) */
    char snap_root[600];
    struct raft_snap_meta snap_meta; /* latest local snapshot (loop thread) */
    struct raft_conf apply_conf;     /* configuration as of the applied index (apply thread) */
    uint64_t last_snap_index;        /* apply thread */
    uint64_t compact_to;             /* log compaction waiting for a safe point (loop) */
    atomic_bool snap_building;       /* a snapshot is being written off the apply thread */
    atomic_int bg_threads;           /* snapshot threads still running (srv_close waits) */
    atomic_bool bg_stop;             /* srv_close: snapshot transfers give up at once */
    atomic_bool snap_receiving;      /* a snapshot receiver thread runs (one at a time) */
    pthread_mutex_t snap_mu;         /* retention vs. readers of the snapshot directory */
    atomic_bool snap_redo;           /* the newest snapshot was set aside: take one at the next
                                        applied entry */

    /* a damaged store (corrupt.c) */
    atomic_bool store_corrupt; /* reads are refused; the member is stopping */
    struct srv_corrupt_report
        *corrupt_early;        /* found during start-up, reported once the threads run */
    pthread_mutex_t verify_mu; /* one lsm_verify at a time (they share a scratch dir) */

    /* corruption check (hashcheck.c) */
    struct srv_hash_round hash_rounds[SRV_HASH_ROUNDS]; /* apply thread */
    uint64_t hash_seq;                                  /* apply thread */
    uint64_t hash_next_ms;                              /* loop: next round as leader */
    bool hash_start_pending;                            /* loop: the start-up report is due */
};

/* corrupt.c: a damaged store */

/* A read or apply met LSM_ECORRUPT (@what: "read", "apply", ...; @detail: the store's
 * message).  From now on reads answer an error instead of reading, and the member stops with
 * one fatal line naming the damaged table (found with lsm_verify on a background thread when
 * @detail does not name it) and what to do.  The first call wins.  Any thread. */
void srv_store_corrupt(struct srv *s, const char *what, const char *detail);

/* Whether a damaged store was found: reads are not served.  Any thread. */
bool srv_store_is_corrupt(struct srv *s);

/* After the threads started: check every live table in the background (lsm_verify); a damaged
 * one stops the member as srv_store_corrupt does.  Reports one found during start-up instead.
 * Loop thread, once. */
void srv_store_verify_start(struct srv *s);

/* node.c: the Ready loop */
void srv_node_drive(struct srv *s);
void srv_node_input(struct srv *s, struct srv_input *in);
int srv_node_propose(struct srv *s, const void *data, size_t len, uint64_t req_id);
void srv_node_read(struct srv *s, struct srv_read *r);
void srv_node_on_done(struct srv *s, struct srv_done *d);
void srv_fail(struct srv *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int srv_storage_init(struct srv *s);

/* peer.c: peer transport */
int srv_peer_listen(struct srv *s);
void srv_peer_start(struct srv *s);
void srv_peer_send(struct srv *s, const struct raft_msg *msgs, size_t n);
void srv_peer_hold(struct srv *s, const struct raft_msg *msgs, size_t n);
void srv_peer_release_held(struct srv *s);
void srv_peer_forward(struct srv *s, const void *data, size_t len);
void srv_peer_close_all(struct srv *s);
/* Leader: member @id has just left the configuration: queue a "removed" batch on our link to it
 * (best effort) so that it stops at once, as a removed learner gets no other message. */
void srv_peer_tell_removed(struct srv *s, raft_id id);
void srv_peer_on_frame(struct srv_conn *c, const unsigned char *p, size_t len);

/* client.c: connections */
int srv_client_listen(struct srv *s);
int srv_conn_accept(struct srv *s, int fd, enum srv_conn_kind kind);
void srv_conn_close(struct srv_conn *c);
struct srv_conn *srv_conn_get(struct srv *s, uint32_t slot, uint32_t gen);
void srv_conn_reply(struct srv_conn *c,
                    uint64_t frame_id,
                    uint32_t method,
                    Kvdb__ErrorCode code,
                    const char *errmsg,
                    const uint8_t *body,
                    size_t len);
/* Reply OK to @frame_id with @m packed, whatever its size (the buffer is sized from its packed
 * size); out of memory answers RESOURCE_EXHAUSTED instead, never nothing.  @m is borrowed.  Loop
 * thread. */
void srv_conn_reply_msg(struct srv_conn *c,
                        uint64_t frame_id,
                        uint32_t method,
                        const ProtobufCMessage *m);
void srv_conn_flush_all(struct srv *s);
void srv_conn_close_after_reply(struct srv_conn *c);
/* A reply header: this member and cluster, @term, the current revision.  Any thread. */
void srv_header(const struct srv *s, Kvdb__ResponseHeader *h, uint64_t term);
/* A pending request for frame @f on @c, answered within the request timeout.  NULL on OOM. */
struct srv_pending *srv_pending_for(struct srv_conn *c, const Kvdb__Frame *f);
/* Call @fn on every request waiting for its entry to apply (not those waiting on a
 * configuration).  @fn may propose but must not add or take pending requests.  Loop thread. */
void srv_pending_each(struct srv *s, void (*fn)(struct srv *s, struct srv_pending *p));
void srv_http_handle(struct srv_conn *c, const char *req, size_t len);
void srv_conns_close_all(struct srv *s);

/* kv.c: the client methods */
void srv_kv_dispatch(struct srv_conn *c, const Kvdb__Frame *f);
void srv_kv_on_done(struct srv *s, struct srv_done *d);
void srv_kv_sweep(struct srv *s);
void srv_autocompact_tick(struct srv *s);
void srv_kv_reissue_reads(struct srv *s, bool all);
void srv_kv_fini(struct srv *s);

/* state.c: the replicated state beside the keyspace (registry, auth, leases), from the store.
 * A store that has never held it takes an older build's files @dir/@files (auth, leases,
 * members) in first.  @at_start: on the opening thread, before the loop and apply threads run
 * (sets both copies directly); otherwise the apply thread after a snapshot install (the loop
 * is told through the done queue).  Errors: SRV_EIO, SRV_ENOMEM with @errmsg (SRV_ERRMSG). */
int srv_state_load(struct srv *s,
                   const char *dir,
                   const char *const files[3],
                   bool at_start,
                   char *errmsg);

/* alarm.c: replicated alarms (etcd's Alarm API) */
/* "NOSPACE", "CORRUPT" or "NONE".  Any thread. */
const char *srv_alarm_name(int type);
/* Whether @v/@n holds an alarm of @member (0: any member) and @type (NONE: any type). */
bool srv_alarm_has(const struct srv_alarm *v, size_t n, uint64_t member, int type);
/* The alarms record's bytes @buf/@len into @v (SRV_MAX_ALARMS) / *@n.  Errors: SRV_EIO. */
int srv_alarm_decode(const void *buf, size_t len, struct srv_alarm *v, size_t *n);
/* Apply thread: the "alarms" record after @r (malloc'd into *@buf, *@len), or *@buf NULL when
 * @r changes nothing (every member skips it alike).  Returns 0 or LSM_ENOMEM. */
int srv_alarm_next(struct srv *s, const Kvdb__AlarmRequest *r, uint8_t **buf, size_t *len);
/* Apply thread, once the batch holding record @buf (owned from now on; NULL: no alarms)
 * applied, or after loading it: it becomes the apply thread's set; the loop gets a copy
 * (@at_start: set directly, before the loop runs). */
void srv_alarm_install(struct srv *s, uint8_t *buf, size_t len, bool at_start);
/* Loop: SRV_DONE_ALARMS. */
void srv_alarm_on_set(struct srv *s, const uint8_t *buf, size_t len);
/* Apply thread: SRV_ENOSPACE or SRV_ECORRUPT when the apply thread's alarms refuse @ir (the
 * same on every member), else 0. */
int srv_alarm_apply_check(const struct srv *s, const Kvdb__InternalRequest *ir);
/* The reply code and etcd's message for SRV_ENOSPACE / SRV_ECORRUPT.  Any thread. */
void srv_alarm_error(int err, Kvdb__ErrorCode *code, const char **msg);
/* Loop: false (and @f answered) when the alarms, or a full disk here, refuse write @f. */
bool srv_alarm_admit(struct srv_conn *c, const Kvdb__Frame *f);
/* Loop: propose ACTIVATE @type for @member through raft, unless it is active already or (for
 * this member) proposed within the last 2 s.  Errors: SRV_EINVAL (type or member invalid),
 * RAFT_ENOTLEADER (no leader known), raft's proposal errors. */
int srv_alarm_raise(struct srv *s, uint64_t member, int type);
/* Apply thread: the AlarmResponse (packed, malloc'd, *@len; NULL on OOM) of entry @r, before
 * its record is installed: the alarms it activates or deactivates (etcd's answer). */
uint8_t *srv_alarm_reply(struct srv *s, const Kvdb__AlarmRequest *r, uint64_t term, size_t *len);
/* Loop: the Alarm method (GET from the loop's copy; ACTIVATE, DEACTIVATE through the log). */
void srv_alarm_request(struct srv_conn *c, const Kvdb__Frame *f);
/* Loop: "ALARM NOSPACE, ALARM CORRUPT" (etcd's /health reason) into @out (@cap bytes);
 * returns how many alarms (a full disk here counts as NOSPACE). */
size_t srv_alarm_describe(const struct srv *s, char *out, size_t cap);

/* apply.c: the job queues shared by the apply and read threads (any thread pushes; the
 * queue's own thread takes: every queued job as a list, waiting for one; NULL once stopped and
 * drained), and the done item of a request's result (@res, or the error @err; NULL when memory
 * ran out).  read.c: the read thread's main (started by srv_apply_start). */
void srv_queue_push(struct srv_queue *q, struct srv_job *j);
struct srv_job *srv_queue_take_all(struct srv_queue *q);
struct srv_done *srv_make_done(const struct lsm_result *res,
                               int err,
                               const Kvdb__ResponseHeader *h);
void *srv_read_main(void *arg);

/* hashcheck.c: the corruption check through the log.
 * srv_hash_tick (loop, every sweep): start a round as leader every --corrupt-check-interval,
 * and this member's start-up report once it has applied its leader's commit index.
 * srv_hash_on_done (loop): SRV_DONE_HASH proposes our report; SRV_DONE_CORRUPT logs the verdict
 * and proposes the CORRUPT alarm for the member named.
 * srv_hash_run (read thread): HashKV at @rev (0: current), posted as SRV_DONE_HASH.
 * srv_hash_apply (apply thread, after the report's group applied): records the report, asks for
 * our own hash in a round others started, and decides. */
void srv_hash_tick(struct srv *s);
void srv_hash_on_done(struct srv *s, const struct srv_done *d);
void srv_hash_run(struct srv *s, int64_t rev, uint64_t round);
void srv_hash_apply(struct srv *s, const Kvdb__HashReport *rep);
/* apply.c: queue srv_hash_run(@rev, @round) on the read thread.  Any thread. */
void srv_read_hash(struct srv *s, int64_t rev, uint64_t round);

/* fpfs.c: the WAL file system with failpoints */
struct wal_fs *srv_fpfs_new(uint64_t member);
void srv_fpfs_free(struct wal_fs *fs);

/* membership.c */
int srv_members_load(const char *path, struct srv_member *v, size_t *n);
int srv_members_save(const char *path, const struct srv_member *v, size_t n);
/* The registry as the store's "members" record: the line format of srv_members_save.
 * decode adds @buf's entries to @v/@n (0, or SRV_ENOMEM); encode returns a malloc'd text
 * (length *@len) or NULL when memory ran out.  Any thread. */
int srv_members_decode(const void *buf, size_t len, struct srv_member *v, size_t *n);
char *srv_members_encode(const struct srv_member *v, size_t n, size_t *len);
/* Apply thread: the registry after MemberAttr @a into @v/@n (SRV_MAX_MEMBERS) and the member it
 * sets into *@m, without changing the current one; false when @a is invalid (every member
 * skips it alike). */
bool srv_members_next_attr(const struct srv *s,
                           const Kvdb__MemberAttr *a,
                           struct srv_member *v,
                           size_t *n,
                           struct srv_member *m);
/* Apply thread, once the batch with the new "members" record applied: @v/@n becomes the
 * registry and the loop learns @m (@req_id: the MemberAttr request proposed here, or 0). */
void srv_members_commit_attr(struct srv *s,
                             const struct srv_member *v,
                             size_t n,
                             const struct srv_member *m,
                             uint64_t req_id);
/* Apply thread: the registry after configuration @prev became @next into @v/@n: members that
 * left @next marked removed, members in @next unmarked.  Returns whether anything changed. */
bool srv_members_next_conf(const struct srv *s,
                           const struct raft_conf *prev,
                           const struct raft_conf *next,
                           struct srv_member *v,
                           size_t *n);
/* Apply thread, once that batch applied: @v/@n becomes the registry; the loop learns every
 * member whose mark changed. */
void srv_members_commit_conf(struct srv *s, const struct srv_member *v, size_t n);
/* Loop: SRV_DONE_MEMBER_REMOVED. */
void srv_members_on_removed(struct srv *s, const struct srv_done *d);
/* Loop: whether the registry marks @id removed. */
bool srv_members_is_removed(const struct srv *s, uint64_t id);
/* Loop, every sweep: propose our advertised client URL (a MemberAttr) until the registry has
 * it, so that every member lists it in MemberList. */
void srv_members_publish(struct srv *s);
void srv_members_on_attr(struct srv *s, const struct srv_done *d);
void srv_members_on_conf(struct srv *s, uint64_t index, const struct raft_conf *conf);
void srv_members_on_leader(struct srv *s);
void srv_adopt_cluster_id(struct srv *s, uint64_t cluster_id);
void srv_members_request(struct srv_conn *c, const Kvdb__Frame *f);
void srv_members_list(struct srv_conn *c, const Kvdb__Frame *f);
void srv_conf_wait(struct srv *s, struct srv_pending *p, uint64_t index);
struct srv_pending *srv_pending_add(struct srv *s);
struct srv_pending *srv_pending_take(struct srv *s, uint64_t id);
void srv_pending_release(struct srv *s, struct srv_pending *p);

/* lease.c */
struct srv_arena;
/* The state record of a lease (name and value stored inline; rec points into it). */
struct srv_lease_rec
{
    struct lsm_state_rec rec;
    uint8_t name[14];
    uint8_t val[8];
};
/* Fill @out with the record of lease @id granted for @ttl (@del: its removal).  Any thread. */
void srv_lease_rec(int64_t id, int64_t ttl, bool del, struct srv_lease_rec *out);
/* Rebuild the apply thread's lease table from the store's records, and each lease's keys from
 * the store.  @at_start: on the opening thread before the loop runs (the loop's deadlines are
 * set directly); otherwise (after a snapshot install, apply thread) the loop is told through the
 * done queue.  Errors: SRV_EIO, SRV_ENOMEM with @errmsg (SRV_ERRMSG bytes). */
int srv_lease_load(struct srv *s, bool at_start, char *errmsg);
/* Parse a lease file of an older build ("ID TTL" lines) into records (*@out, malloc'd, *@n).
 * A missing file is 0 leases.  Errors: SRV_EIO, SRV_ENOMEM. */
int srv_lease_read_file(const char *path, struct srv_lease_rec **out, size_t *n);
void srv_lease_fini(struct srv *s);
bool srv_lease_exists(struct srv *s, int64_t id);
bool srv_lease_known(struct srv *s, int64_t id);
void srv_lease_on_events(struct srv *s, const struct lsm_event *evs, size_t n);
/* Apply thread, after the grant's batch (which wrote its record) applied: add it to the table
 * and tell the loop.  Returns 0 or LSM_ENOMEM. */
int srv_lease_grant(struct srv *s, int64_t id, int64_t ttl);
int srv_lease_revoke_op(struct srv *s, int64_t id, struct srv_arena *a, struct lsm_op *op);
void srv_lease_revoked(struct srv *s, int64_t id);
void srv_lease_on_done(struct srv *s, int64_t id, int64_t ttl);
void srv_lease_promote(struct srv *s);
void srv_lease_tick(struct srv *s);
/* Loop: propose again, through the leader now known, every client revoke still unanswered
 * (etcd retries a revoke until it commits or its request times out).  The leader changed, or
 * the sweep found one waiting an election timeout. */
void srv_lease_retry_revokes(struct srv *s);
void srv_lease_request(struct srv_conn *c, const Kvdb__Frame *f);
uint8_t *srv_lease_reply(struct srv *s,
                         const Kvdb__InternalRequest *ir,
                         uint64_t term,
                         size_t *len);

/* auth.c */
/* Both copies of the auth state from the store's packed "auth" record @buf (NULL: empty).
 * Errors: SRV_EIO (undecodable record), SRV_ENOMEM.  Before the loop and apply threads run. */
int srv_auth_init(struct srv *s, const uint8_t *buf, size_t len);
void srv_auth_fini(struct srv *s);
bool srv_auth_check(struct srv_conn *c, const Kvdb__Frame *f);
void srv_auth_request(struct srv_conn *c, const Kvdb__Frame *f);
/* Apply thread: the packed state after change @c (malloc'd, length *@len), or NULL when @c
 * changes nothing (invalid: every member skips it alike) or memory ran out. */
uint8_t *srv_auth_next(struct srv *s, const Kvdb__AuthChange *c, size_t *len);
/* Apply thread, once the batch holding the new "auth" record applied: @buf (owned from now on)
 * becomes the state, and the loop gets a copy. */
void srv_auth_install(struct srv *s, uint8_t *buf, size_t len);
/* Read the auth file of an older build (*@buf malloc'd; a missing file gives NULL, 0).
 * Errors: SRV_EIO, SRV_ENOMEM.  Any thread. */
int srv_auth_read_file(const char *path, uint8_t **buf, size_t *len);
void srv_auth_on_state(struct srv *s, const uint8_t *buf, size_t len);
uint8_t *srv_auth_change_reply(struct srv *s, uint64_t term, size_t *len);
void srv_kv_propose_auth(struct srv_conn *c, const Kvdb__Frame *f, const Kvdb__AuthChange *ch);

/* watch.c: watchers */
void srv_watch_request(struct srv_conn *c, const Kvdb__Frame *f);
void srv_watch_on_events(struct srv *s, struct lsm_event *evs, size_t n);
void srv_watch_on_history(struct srv *s,
                          int64_t id,
                          struct lsm_event *evs,
                          size_t n,
                          int64_t next_rev,
                          int err,
                          bool complete);
void srv_watch_sweep(struct srv *s);
void srv_watch_fini(struct srv *s);
void srv_watch_read_submit(struct srv *s,
                           int64_t id,
                           const uint8_t *key,
                           size_t klen,
                           const uint8_t *end,
                           size_t elen,
                           int64_t start_rev,
                           size_t max);

/* snap.c: snapshots */
int srv_snap_init(struct srv *s, char *errmsg);
/* Startup: make the valid local snapshot at @index the member's snapshot (snap_meta), instead of
 * the newest one.  For a store that holds a snapshot installed just before a crash that left
 * the WAL without its marker, when a newer snapshot had been received since but not installed.
 * False if there is no valid snapshot at @index. */
bool srv_snap_use_at(struct srv *s, uint64_t index);
void srv_snap_after_apply(struct srv *s, uint64_t applied);
/* Would applying through @applied start a snapshot?  Apply side (the thread applying). */
bool srv_snap_due(struct srv *s, uint64_t applied);
void srv_snap_created(struct srv *s, const struct raft_snap_meta *meta);
void srv_snap_compact(struct srv *s);
bool srv_snap_send(struct srv *s, const struct raft_snap_req *req);
bool srv_snap_accept(struct srv_conn *c, struct pb_batch *b);
int srv_snap_install(struct srv *s, const char *dir, uint64_t index, bool *fatal);
int srv_snap_recover_db(const char *data_dir);
void srv_snap_stream_to_client(struct srv *s, int fd, uint64_t frame_id);
void srv_apply_snapshot_job(struct srv *s, int fd, uint64_t frame_id);
struct srv_peer *srv_peer_find(struct srv *s, raft_id id);
int srv_peer_add(struct srv *s, raft_id id, const struct srv_url *url);
void srv_peer_remove(struct srv *s, raft_id id);
bool srv_peer_blocked(struct srv *s, raft_id id);
int srv_conn_detach(struct srv_conn *c, struct pb_frame_reader *rd);

/* apply.c: apply and read threads */
void srv_post_done(struct srv *s, struct srv_done *d);
int srv_bg_start(struct srv *s, void *(*fn)(void *), void *arg);
void srv_bg_wait(struct srv *s);
void srv_apply_install(struct srv *s, const char *dir, const struct raft_msg *msg);
int srv_apply_start(struct srv *s);
void srv_apply_stop(struct srv *s);
/* Loop thread, after srv_apply_stop: free the jobs queued since (a final srv_done_drain can
 * queue the install of a snapshot received just before the stop; the leader resends it). */
void srv_apply_drop_queued(struct srv *s);
void srv_apply_submit(struct srv *s, const struct raft_entry *ents, size_t n);
void srv_read_submit(struct srv *s, struct srv_read *reads);
/* Free a list of reads that will not run (kv.c).  Any thread that owns the list. */
void srv_reads_free(struct srv_read *r);
void srv_done_drain(struct srv *s);

#endif /* KV_SERVER_SRV_INT_H */
