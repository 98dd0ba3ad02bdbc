/* Linearizable reads without log writes: ReadIndex (thesis 6.4). */
#include <string.h>

#include "raft/core.h"

int raft_read_state_add(struct raft *r, raft_index index, uint64_t ctx)
{
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads == 0 ? 8 : r->cap_reads * 2;
        struct raft_read_state *p = raft_realloc(r->heap, r->reads, cap * sizeof *p);
        if (p == NULL) {
            return RAFT_ENOMEM;
        }
        r->reads = p;
        r->cap_reads = cap;
    }
    r->reads[r->n_reads].index = index;
    r->reads[r->n_reads].context = ctx;
    r->n_reads++;
    return 0;
}

void raft_read_reset(struct raft *r)
{
    /* Requests die with the leadership that took them; requesters retry on timeout. */
    r->n_rreqs = 0;
}

static bool confirmed(const struct raft *r, uint64_t seq)
{
    unsigned acks = 0;
    for (unsigned i = 0; i < r->n_prs; i++) {
        const struct raft_progress *p = &r->prs[i];
        if (!p->learner && (p->id == r->id || p->read_ack >= seq)) {
            acks++;
        }
    }
    return acks >= raft_quorum(r);
}

/* Answer, oldest first, every request whose heartbeat round a quorum acknowledged. */
int raft_read_release(struct raft *r)
{
    size_t done = 0;
    int rv = 0;
    while (done < r->n_rreqs && rv == 0) {
        const struct raft_read_req *q = &r->rreqs[done];
        if (q->seq == 0 || !confirmed(r, q->seq)) {
            break;
        }
        if (q->from == r->id) {
            rv = raft_read_state_add(r, q->index, q->ctx);
        } else {
            struct raft_msg m = {.type = RAFT_MSG_READ_INDEX_RESP, .to = q->from};
            m.index = q->index;
            m.context = q->ctx;
            rv = raft_send(r, &m);
        }
        if (rv == 0) {
            done++;
        }
    }
    memmove(r->rreqs, r->rreqs + done, (r->n_rreqs - done) * sizeof *r->rreqs);
    r->n_rreqs -= done;
    return rv;
}

/* Thesis 6.4 step 1: the read index is only known once the leader committed an entry of its
 * own term; requests that arrived before that get their index and round now. */
int raft_read_on_committed_in_term(struct raft *r)
{
    bool any = false;
    for (size_t i = 0; i < r->n_rreqs; i++) {
        if (r->rreqs[i].seq == 0) {
            if (!any) {
                r->read_seq++;
            }
            any = true;
            r->rreqs[i].index = r->log.committed;
            r->rreqs[i].seq = r->read_seq;
        }
    }
    if (!any) {
        return 0;
    }
    int rv = raft_bcast_heartbeat(r, r->read_seq);
    return rv != 0 ? rv : raft_read_release(r);
}

int raft_read_index(struct raft *r, raft_id from, uint64_t ctx)
{
    if (r->role != RAFT_LEADER) {
        if (from != r->id) {
            return 0;
        }
        if (r->role != RAFT_FOLLOWER || r->lead == 0) {
            return RAFT_ENOTLEADER;
        }
        /* A follower asks the leader for the read index (thesis 6.4.1). */
        struct raft_msg m = {.type = RAFT_MSG_READ_INDEX, .to = r->lead, .context = ctx};
        return raft_send(r, &m);
    }
    if (r->n_rreqs == r->cap_rreqs) {
        size_t cap = r->cap_rreqs == 0 ? 8 : r->cap_rreqs * 2;
        struct raft_read_req *p = raft_realloc(r->heap, r->rreqs, cap * sizeof *p);
        if (p == NULL) {
            return RAFT_ENOMEM;
        }
        r->rreqs = p;
        r->cap_rreqs = cap;
    }
    struct raft_read_req *q = &r->rreqs[r->n_rreqs++];
    q->ctx = ctx;
    q->from = from;
    q->index = 0;
    q->seq = 0;
    if (!raft_committed_in_term(r)) {
        return 0; /* Waits for raft_read_on_committed_in_term(). */
    }
    /* Step 2: record the commit index, then confirm leadership with a heartbeat round. */
    q->index = r->log.committed;
    q->seq = ++r->read_seq;
    int rv = raft_bcast_heartbeat(r, q->seq);
    return rv != 0 ? rv : raft_read_release(r);
}
