/* Leader election: randomized timeouts, PreVote, votes, CheckQuorum (thesis 3.4, 3.6, 6.2,
 * 9.6). */
#include <string.h>

#include "raft/core.h"

/* xorshift64: the member's own deterministic randomness (cowsql raft_seed). */
static uint64_t next_rand(struct raft *r)
{
    uint64_t x = r->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->rng = x;
    return x;
}

/* Thesis 3.4: election timeouts are drawn from [T, 2T) so that split votes resolve. */
void raft_reset_randomized_timeout(struct raft *r)
{
    r->randomized_timeout = r->cfg.election_tick + (unsigned)(next_rand(r) % r->cfg.election_tick);
}

static void become_pre_candidate(struct raft *r)
{
    /* PreVote (thesis 9.6) changes neither term nor vote: a partitioned member that cannot win
     * does not disrupt the cluster when it returns. */
    for (unsigned i = 0; i < r->n_prs; i++) {
        r->prs[i].vote = 0;
    }
    r->lead = 0;
    r->role = RAFT_PRE_CANDIDATE;
    raft_trace(r, "become pre-candidate term=%llu", (unsigned long long)r->term);
}

static void become_candidate(struct raft *r)
{
    raft_reset(r, r->term + 1);
    r->vote = r->id;
    r->role = RAFT_CANDIDATE;
    raft_trace(r, "become candidate term=%llu", (unsigned long long)r->term);
}

static int become_leader(struct raft *r)
{
    raft_reset(r, r->term);
    r->lead = r->id;
    r->role = RAFT_LEADER;
    struct raft_progress *self = raft_progress_of(r, r->id);
    if (self != NULL) {
        raft_progress_become_replicate(self);
        self->recent_active = true;
    }
    raft_trace(r, "become leader term=%llu", (unsigned long long)r->term);
    /* Thesis 6.4: a new leader commits an entry of its own term to learn what is committed (and
     * so that ReadIndex and conf changes become possible). */
    return raft_propose_entry(r, RAFT_ENTRY_EMPTY, NULL, 0, NULL, NULL);
}

/* Count the vote from @id; returns 1 won, -1 lost, 0 pending. */
static int poll(struct raft *r, raft_id id, bool granted)
{
    struct raft_progress *p = raft_progress_of(r, id);
    if (p != NULL && p->vote == 0) {
        p->vote = granted ? 1 : 2;
    }
    unsigned yes = 0, no = 0;
    for (unsigned i = 0; i < r->n_prs; i++) {
        if (r->prs[i].learner) {
            continue;
        }
        yes += r->prs[i].vote == 1;
        no += r->prs[i].vote == 2;
    }
    if (yes >= raft_quorum(r)) {
        return 1;
    }
    if (no > r->conf.n_voters - raft_quorum(r)) {
        return -1;
    }
    return 0;
}

int raft_campaign(struct raft *r, bool transfer)
{
    if (!raft_is_promotable(r) || r->role == RAFT_LEADER) {
        return 0;
    }
    bool pre = !r->cfg.disable_prevote && !transfer;
    enum raft_msg_type type;
    raft_term term;
    if (pre) {
        become_pre_candidate(r);
        type = RAFT_MSG_PREVOTE;
        term = r->term + 1; /* The term it would campaign in. */
    } else {
        become_candidate(r);
        type = RAFT_MSG_VOTE;
        term = r->term;
    }
    int res = poll(r, r->id, true);
    if (res == 1) {
        return pre ? raft_campaign(r, true) : become_leader(r);
    }
    for (unsigned i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        if (p->id == r->id || p->learner) {
            continue;
        }
        struct raft_msg m = {.type = type, .to = p->id, .term = term};
        m.index = raft_log_last(&r->log);
        m.log_term = raft_log_last_term(&r->log);
        m.context = transfer ? RAFT_CTX_TRANSFER : 0;
        int rv = raft_send(r, &m);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int raft_tick(struct raft *r)
{
    r->election_elapsed++;
    if (r->role != RAFT_LEADER) {
        if (raft_is_promotable(r) && r->election_elapsed >= r->randomized_timeout) {
            r->election_elapsed = 0;
            return raft_campaign(r, false);
        }
        return 0;
    }
    r->heartbeat_elapsed++;
    if (r->election_elapsed >= r->cfg.election_tick) {
        r->election_elapsed = 0;
        /* Thesis 6.2: a leader that has not heard from a quorum in an election timeout steps
         * down, so clients can find the real leader. */
        if (!r->cfg.disable_check_quorum) {
            unsigned active = 0;
            for (unsigned i = 0; i < r->n_prs; i++) {
                struct raft_progress *p = &r->prs[i];
                if (!p->learner && (p->id == r->id || p->recent_active)) {
                    active++;
                }
                p->recent_active = p->id == r->id;
            }
            /* Self counts only while a voter: a removed leader still needs the others. */
            if (active < raft_quorum(r)) {
                raft_trace(r, "step down: no quorum term=%llu", (unsigned long long)r->term);
                raft_become_follower(r, r->term, 0);
                return 0;
            }
        }
        /* Thesis 3.10: a transfer that did not finish within an election timeout is aborted. */
        r->transferee = 0;
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        return raft_bcast_heartbeat(r, r->read_seq);
    }
    return 0;
}

/* Grant or refuse a (pre-)vote (thesis 3.6.1, 9.6). */
int raft_handle_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can_vote =
        r->vote == m->from || (r->vote == 0 && r->lead == 0) || (pre && m->term > r->term);
    struct raft_msg resp = {.to = m->from};
    resp.type = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP;
    if (can_vote && raft_log_is_up_to_date(&r->log, m->index, m->log_term)) {
        /* The reply carries the requested term so the candidate counts it even for PreVote,
         * where our own term is lower. */
        resp.term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
        raft_trace(r, "grant %s to %llu term=%llu", pre ? "prevote" : "vote",
                   (unsigned long long)m->from, (unsigned long long)m->term);
    } else {
        resp.term = r->term;
        resp.reject = true;
        raft_trace(r, "reject %s from %llu term=%llu", pre ? "prevote" : "vote",
                   (unsigned long long)m->from, (unsigned long long)m->term);
    }
    return raft_send(r, &resp);
}

int raft_step_candidate(struct raft *r, const struct raft_msg *m)
{
    enum raft_msg_type want =
        r->role == RAFT_PRE_CANDIDATE ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP;
    switch (m->type) {
    case RAFT_MSG_APP:
        raft_become_follower(r, m->term, m->from);
        return raft_handle_append(r, m);
    case RAFT_MSG_HEARTBEAT:
        raft_become_follower(r, m->term, m->from);
        return raft_handle_heartbeat(r, m);
    case RAFT_MSG_SNAP:
        raft_become_follower(r, m->term, m->from);
        return raft_handle_snapshot(r, m);
    default:
        break;
    }
    if (m->type != want) {
        return 0;
    }
    int res = poll(r, m->from, !m->reject);
    if (res == 1) {
        return r->role == RAFT_PRE_CANDIDATE ? raft_campaign(r, true) : become_leader(r);
    }
    if (res == -1) {
        raft_become_follower(r, r->term, 0);
    }
    return 0;
}
