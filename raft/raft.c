/* Lifecycle, the single input function, term rules and role transitions. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "raft/core.h"

void raft_trace(struct raft *r, const char *fmt, ...)
{
    if (r->cfg.tracer == NULL || r->cfg.tracer->emit == NULL) {
        return;
    }
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->cfg.tracer->emit(r->cfg.tracer->ctx, r->id, line);
}

static void set_err(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char *errmsg, const char *fmt, ...)
{
    if (errmsg == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

static void fill_defaults(struct raft_config *c)
{
    if (c->election_tick == 0) {
        c->election_tick = 10;
    }
    if (c->heartbeat_tick == 0) {
        c->heartbeat_tick = 1;
    }
    if (c->max_msg_bytes == 0) {
        c->max_msg_bytes = 1u << 20;
    }
    if (c->max_inflight_msgs == 0) {
        c->max_inflight_msgs = 256;
    }
    if (c->max_inflight_bytes == 0) {
        c->max_inflight_bytes = 32u << 20;
    }
    if (c->max_apply_bytes == 0) {
        c->max_apply_bytes = 64u << 20;
    }
}

/* The configuration in effect is the last one in the log (thesis 4.1), else the snapshot's. */
static int load_conf(struct raft *r)
{
    struct raft_snap_meta meta;
    int rv = r->log.st->snapshot(r->log.st->ctx, &meta);
    if (rv != 0) {
        return rv;
    }
    rv = raft_conf_apply(r, &meta.conf, 0);
    if (rv != 0) {
        return rv;
    }
    return raft_conf_revert(r, raft_log_last(&r->log) + 1);
}

/* One block per array for every member slot, so membership changes never allocate. */
static int alloc_windows(struct raft *r)
{
    size_t cap = r->cfg.max_inflight_msgs;
    raft_index *idx = raft_malloc(r->heap, RAFT_MAX_MEMBERS * cap * sizeof *idx);
    size_t *size = raft_malloc(r->heap, RAFT_MAX_MEMBERS * cap * sizeof *size);
    if (idx == NULL || size == NULL) {
        raft_free(r->heap, idx);
        raft_free(r->heap, size);
        return RAFT_ENOMEM;
    }
    r->win_idx = idx;
    r->win_size = size;
    for (unsigned i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_inflights *in = &r->prs[i].ins;
        in->idx = idx + i * cap;
        in->size = size + i * cap;
        in->cap = cap;
        in->max_bytes = r->cfg.max_inflight_bytes;
    }
    return 0;
}

int raft_create(const struct raft_config *cfg, struct raft **out, char *errmsg)
{
    if (cfg == NULL || cfg->id == 0 || cfg->storage == NULL) {
        set_err(errmsg, "raft_create: id and storage are required");
        return RAFT_EINVAL;
    }
    struct raft *r = raft_malloc(cfg->heap, sizeof *r);
    if (r == NULL) {
        set_err(errmsg, "raft_create: out of memory");
        return RAFT_ENOMEM;
    }
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    fill_defaults(&r->cfg);
    r->id = cfg->id;
    r->heap = cfg->heap;
    r->rng = cfg->seed != 0 ? cfg->seed : cfg->id * 0x9e3779b97f4a7c15ull;
    if (r->rng == 0) {
        r->rng = 1;
    }
    struct raft_hard_state hs;
    int rv = alloc_windows(r);
    if (rv == 0) {
        rv = cfg->storage->initial_state(cfg->storage->ctx, &hs);
    }
    if (rv == 0) {
        rv = raft_log_init(&r->log, cfg->storage, cfg->heap);
    }
    if (rv == 0) {
        rv = load_conf(r);
    }
    if (rv != 0) {
        set_err(errmsg, "raft_create: load storage: %s", raft_strerror(rv));
        raft_destroy(r);
        return rv;
    }
    if (hs.commit > raft_log_last(&r->log) || cfg->applied > raft_log_last(&r->log)) {
        set_err(errmsg, "raft_create: commit %llu or applied %llu beyond last index %llu",
                (unsigned long long)hs.commit, (unsigned long long)cfg->applied,
                (unsigned long long)raft_log_last(&r->log));
        raft_destroy(r);
        return RAFT_EINVAL;
    }
    r->term = hs.term;
    r->vote = hs.vote;
    raft_log_commit_to(&r->log, hs.commit);
    if (cfg->applied > r->log.applied) {
        r->log.applied = cfg->applied;
    }
    r->prev_hs = hs;
    raft_become_follower(r, r->term, 0);
    r->prev_role = RAFT_FOLLOWER;
    r->prev_lead = 0;
    *out = r;
    return 0;
}

static void free_outbox(struct raft *r)
{
    for (size_t i = 0; i < r->n_msgs; i++) {
        raft_free(r->heap, (void *)r->msgs[i].entries);
    }
    r->n_msgs = 0;
    r->n_sreqs = 0;
    r->n_reads = 0;
}

void raft_destroy(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    free_outbox(r);
    raft_free(r->heap, r->msgs);
    raft_free(r->heap, r->sreqs);
    raft_free(r->heap, r->reads);
    raft_free(r->heap, r->rreqs);
    raft_free(r->heap, r->apply_buf);
    raft_free(r->heap, r->win_idx);
    raft_free(r->heap, r->win_size);
    raft_log_fini(&r->log);
    raft_free(r->heap, r);
}

struct raft_progress *raft_progress_of(struct raft *r, raft_id id)
{
    for (unsigned i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return &r->prs[i];
        }
    }
    return NULL;
}

unsigned raft_quorum(const struct raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

bool raft_is_promotable(const struct raft *r)
{
    return raft_conf_is_voter(&r->conf, r->id);
}

int raft_send(struct raft *r, struct raft_msg *m)
{
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs == 0 ? 16 : r->cap_msgs * 2;
        struct raft_msg *p = raft_realloc(r->heap, r->msgs, cap * sizeof *p);
        if (p == NULL) {
            raft_free(r->heap, (void *)m->entries);
            return RAFT_ENOMEM;
        }
        r->msgs = p;
        r->cap_msgs = cap;
    }
    m->from = r->id;
    bool votes = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE ||
                 m->type == RAFT_MSG_VOTE_RESP || m->type == RAFT_MSG_PREVOTE_RESP;
    /* Proposals and read requests are forwarded without a term: they are local in spirit. */
    if (!votes && m->type != RAFT_MSG_PROPOSE && m->type != RAFT_MSG_READ_INDEX) {
        m->term = r->term;
    }
    r->msgs[r->n_msgs++] = *m;
    return 0;
}

void raft_reset(struct raft *r, raft_term term)
{
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
    }
    r->lead = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    raft_reset_randomized_timeout(r);
    r->transferee = 0;
    raft_read_reset(r);
    raft_index last = raft_log_last(&r->log);
    for (unsigned i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        p->match = p->id == r->id ? last : 0;
        p->next = last + 1;
        p->state = RAFT_PR_PROBE;
        p->probe_sent = false;
        p->pending_snap = 0;
        p->recent_active = false;
        p->vote = 0;
        p->read_ack = 0;
        raft_inflights_reset(&p->ins);
    }
}

void raft_become_follower(struct raft *r, raft_term term, raft_id lead)
{
    raft_reset(r, term);
    r->lead = lead;
    if (r->role != RAFT_FOLLOWER) {
        raft_trace(r, "become follower term=%llu", (unsigned long long)term);
    }
    r->role = RAFT_FOLLOWER;
}

/* Messages from a higher term (etcd Step).  Returns 1 if @m must be ignored. */
static int on_higher_term(struct raft *r, const struct raft_msg *m)
{
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        bool force = m->context == RAFT_CTX_TRANSFER;
        /* Thesis 4.2.3: ignore vote requests while we believe a leader is alive, so a removed
         * or partitioned member cannot disrupt the cluster. */
        bool in_lease = !r->cfg.disable_check_quorum && r->lead != 0 &&
                        r->election_elapsed < r->cfg.election_tick;
        if (!force && in_lease) {
            raft_trace(r, "ignore %s from %llu term=%llu: leader %llu alive",
                       m->type == RAFT_MSG_VOTE ? "vote" : "prevote", (unsigned long long)m->from,
                       (unsigned long long)m->term, (unsigned long long)r->lead);
            return 1;
        }
    }
    if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
        return 0; /* PreVote never changes the term. */
    }
    bool from_leader =
        m->type == RAFT_MSG_APP || m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_SNAP;
    raft_become_follower(r, m->term, from_leader ? m->from : 0);
    return 0;
}

/* Messages from a lower term.  Always ignored; some get an answer. */
static int on_lower_term(struct raft *r, const struct raft_msg *m)
{
    if (m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_APP) {
        /* With CheckQuorum or PreVote a stale leader might never hear a higher term (we ignore
         * its votes); this reply makes it step down. */
        struct raft_msg resp = {.type = RAFT_MSG_APP_RESP, .to = m->from};
        return raft_send(r, &resp);
    }
    if (m->type == RAFT_MSG_PREVOTE) {
        struct raft_msg resp = {.type = RAFT_MSG_PREVOTE_RESP, .to = m->from, .term = r->term};
        resp.reject = true;
        return raft_send(r, &resp);
    }
    return 0;
}

static int forward_to_leader(struct raft *r, const struct raft_msg *m)
{
    if (r->lead == 0) {
        return 0; /* Dropped: the requester retries (etcd does the same). */
    }
    struct raft_msg fwd = *m;
    fwd.to = r->lead;
    fwd.entries = NULL;
    fwd.n_entries = 0;
    return raft_send(r, &fwd);
}

static int step_follower(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APP:
        r->election_elapsed = 0;
        r->lead = m->from;
        return raft_handle_append(r, m);
    case RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->lead = m->from;
        return raft_handle_heartbeat(r, m);
    case RAFT_MSG_SNAP:
        r->election_elapsed = 0;
        r->lead = m->from;
        return raft_handle_snapshot(r, m);
    case RAFT_MSG_TIMEOUT_NOW:
        /* Thesis 3.10: the leader chose us; campaign now, skipping PreVote and the lease. */
        raft_trace(r, "timeout-now from %llu", (unsigned long long)m->from);
        return raft_campaign(r, true);
    case RAFT_MSG_READ_INDEX:
    case RAFT_MSG_TRANSFER_LEADER:
        return forward_to_leader(r, m);
    case RAFT_MSG_READ_INDEX_RESP:
        return raft_read_state_add(r, m->index, m->context);
    default:
        return 0;
    }
}

static int leader_transfer(struct raft *r, raft_id to)
{
    struct raft_progress *p = raft_progress_of(r, to);
    if (to == r->id || p == NULL || p->learner) {
        return to == r->id ? 0 : RAFT_EINVAL;
    }
    r->transferee = to;
    r->election_elapsed = 0; /* The transfer must finish within an election timeout. */
    raft_trace(r, "transfer leadership to %llu", (unsigned long long)to);
    if (p->match == raft_log_last(&r->log)) {
        struct raft_msg m = {.type = RAFT_MSG_TIMEOUT_NOW, .to = to};
        return raft_send(r, &m);
    }
    bool sent;
    return raft_send_append(r, p, true, &sent);
}

static int step_leader(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APP_RESP:
        return raft_leader_append_resp(r, m);
    case RAFT_MSG_HEARTBEAT_RESP:
        return raft_leader_heartbeat_resp(r, m);
    case RAFT_MSG_READ_INDEX:
        return raft_read_index(r, m->from, m->context);
    case RAFT_MSG_TRANSFER_LEADER: {
        /* A peer's request is not the caller's misuse: refuse it silently. */
        int rv = leader_transfer(r, m->from);
        return rv == RAFT_EINVAL ? 0 : rv;
    }
    case RAFT_MSG_PROPOSE:
        if (r->transferee != 0) {
            return 0;
        }
        for (size_t i = 0; i < m->n_entries; i++) {
            const struct raft_entry *e = &m->entries[i];
            if (e->type != RAFT_ENTRY_NORMAL) {
                continue; /* Conf changes go through RAFT_EV_CONF_CHANGE on the leader. */
            }
            int rv = raft_propose_entry(r, e->type, e->data.base, e->data.len, NULL, NULL);
            if (rv != 0) {
                return rv;
            }
        }
        return 0;
    default:
        return 0;
    }
}

/* Structural checks on untrusted input; semantic checks are the protocol's business. */
static bool msg_is_valid(const struct raft *r, const struct raft_msg *m)
{
    if (m->from == 0 || (m->to != 0 && m->to != r->id) || m->from == r->id ||
        m->type < RAFT_MSG_APP || m->type > RAFT_MSG_TYPE_MAX) {
        return false;
    }
    /* Term 0 only on forwarded requests and on a PreVote rejection by a member still at term
     * 0; anything else without a term would be taken for the current term. */
    if (m->term == 0 && m->type != RAFT_MSG_PROPOSE && m->type != RAFT_MSG_READ_INDEX &&
        m->type != RAFT_MSG_PREVOTE_RESP) {
        return false;
    }
    if (m->n_entries > 0 &&
        (m->entries == NULL || (m->type != RAFT_MSG_APP && m->type != RAFT_MSG_PROPOSE))) {
        return false;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->type < RAFT_ENTRY_NORMAL || e->type > RAFT_ENTRY_EMPTY ||
            (e->data.len > 0 && e->data.base == NULL)) {
            return false;
        }
        if (m->type == RAFT_MSG_APP &&
            (e->index != m->index + 1 + i || e->term > m->term ||
             (i == 0 && e->term < m->log_term) || (i > 0 && e->term < e[-1].term))) {
            return false;
        }
        struct raft_conf c;
        if (e->type == RAFT_ENTRY_CONF && m->type == RAFT_MSG_APP &&
            raft_conf_decode(e->data.base, e->data.len, &c) != 0) {
            return false;
        }
    }
    const struct raft_conf *c = &m->snap.conf;
    if (m->type == RAFT_MSG_SNAP &&
        (c->n_voters + c->n_learners > RAFT_MAX_MEMBERS || m->snap.term > m->term)) {
        return false;
    }
    return true;
}

static int step_msg(struct raft *r, const struct raft_msg *m)
{
    if (!msg_is_valid(r, m)) {
        return RAFT_EINVAL;
    }
    if (m->term > r->term) {
        if (on_higher_term(r, m)) {
            return 0;
        }
    } else if (m->term != 0 && m->term < r->term) {
        return on_lower_term(r, m);
    }
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        return raft_handle_vote(r, m);
    }
    switch (r->role) {
    case RAFT_LEADER:
        return step_leader(r, m);
    case RAFT_FOLLOWER:
        return step_follower(r, m);
    default:
        return raft_step_candidate(r, m);
    }
}

static int propose(struct raft *r, const struct raft_event *ev)
{
    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (r->transferee != 0) {
        return RAFT_EBUSY; /* Thesis 3.10: stop accepting while handing over. */
    }
    return raft_propose_entry(r, RAFT_ENTRY_NORMAL, ev->u.propose.data.base, ev->u.propose.data.len,
                              ev->u.propose.index, ev->u.propose.term);
}

static int transfer(struct raft *r, raft_id to)
{
    if (r->role == RAFT_LEADER) {
        if (r->transferee != 0) {
            return RAFT_EBUSY;
        }
        return leader_transfer(r, to);
    }
    if (r->lead == 0) {
        return RAFT_ENOTLEADER;
    }
    /* Ask the leader; the message's from is the member to transfer to, as in etcd. */
    struct raft_msg m = {.type = RAFT_MSG_TRANSFER_LEADER, .to = r->lead};
    if (to != r->id) {
        return RAFT_EINVAL;
    }
    return raft_send(r, &m);
}

int raft_step(struct raft *r, const struct raft_event *ev)
{
    switch (ev->type) {
    case RAFT_EV_TICK:
        return raft_tick(r);
    case RAFT_EV_RECV:
        return ev->u.msg == NULL ? RAFT_EINVAL : step_msg(r, ev->u.msg);
    case RAFT_EV_PROPOSE:
        return propose(r, ev);
    case RAFT_EV_CONF_CHANGE:
        return raft_conf_change(r, ev->u.cc.type, ev->u.cc.id, ev->u.cc.index);
    case RAFT_EV_READ_INDEX:
        return raft_read_index(r, r->id, ev->u.read_ctx);
    case RAFT_EV_SNAP_STATUS:
        if (r->role != RAFT_LEADER) {
            return 0;
        }
        return raft_leader_snap_status(r, ev->u.snap.peer, ev->u.snap.ok);
    case RAFT_EV_UNREACHABLE: {
        /* Optimistic replication stalls on a dead link; fall back to probing. */
        struct raft_progress *p = raft_progress_of(r, ev->u.peer);
        if (r->role == RAFT_LEADER && p != NULL && p->state == RAFT_PR_REPLICATE) {
            raft_progress_become_probe(p);
        }
        return 0;
    }
    case RAFT_EV_TRANSFER:
        return transfer(r, ev->u.peer);
    case RAFT_EV_CAMPAIGN:
        return raft_campaign(r, false);
    }
    return RAFT_EINVAL;
}

enum raft_role raft_role(const struct raft *r)
{
    return r->role;
}

raft_id raft_leader(const struct raft *r)
{
    return r->lead;
}

raft_term raft_term_of(const struct raft *r)
{
    return r->term;
}

raft_index raft_commit_index(const struct raft *r)
{
    return r->log.committed;
}

raft_index raft_last_index(const struct raft *r)
{
    return raft_log_last(&r->log);
}

raft_id raft_id_of(const struct raft *r)
{
    return r->id;
}

raft_index raft_match_of(const struct raft *r, raft_id id)
{
    if (r->role != RAFT_LEADER) {
        return 0; /* only the leader tracks its followers' logs */
    }
    for (unsigned i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return r->prs[i].match;
        }
    }
    return 0;
}

const struct raft_conf *raft_conf_of(const struct raft *r)
{
    return &r->conf;
}

const char *raft_msg_type_name(enum raft_msg_type t)
{
    static const char *const names[] = {
        "?",           "app",          "app-resp",        "vote",           "vote-resp",
        "prevote",     "prevote-resp", "heartbeat",       "heartbeat-resp", "snap",
        "timeout-now", "read-index",   "read-index-resp", "propose",        "transfer-leader",
    };
    if ((int)t < 1 || t > RAFT_MSG_TYPE_MAX) {
        return "?";
    }
    return names[t];
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}
