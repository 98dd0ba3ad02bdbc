/* The output side: Ready collects what the application must persist, send and apply; Advance
 * releases it (etcd RawNode.Ready/Advance). */
#include <string.h>

#include "raft/core.h"

static bool hs_equal(const struct raft_hard_state *a, const struct raft_hard_state *b)
{
    return a->term == b->term && a->vote == b->vote && a->commit == b->commit;
}

static void current_hs(const struct raft *r, struct raft_hard_state *hs)
{
    hs->term = r->term;
    hs->vote = r->vote;
    hs->commit = r->log.committed;
}

/* First index still to apply: a pending snapshot covers everything up to its index. */
static raft_index apply_from(const struct raft *r)
{
    raft_index from = r->log.applied + 1;
    if (r->log.has_snap && from <= r->log.snap.index) {
        from = r->log.snap.index + 1;
    }
    return from;
}

bool raft_has_ready(const struct raft *r)
{
    struct raft_hard_state hs;
    current_hs(r, &hs);
    return r->bcast_pending || !hs_equal(&hs, &r->prev_hs) || r->log.has_snap || r->log.n > 0 ||
           r->n_msgs > 0 || r->n_sreqs > 0 || r->n_reads > 0 || r->log.committed >= apply_from(r) ||
           r->role != r->prev_role || r->lead != r->prev_lead;
}

static int collect_committed(struct raft *r, struct raft_ready *rd)
{
    raft_index lo = apply_from(r), hi = r->log.committed + 1;
    if (lo >= hi) {
        return 0;
    }
    size_t want = (size_t)(hi - lo);
    if (want > r->cap_apply_buf) {
        size_t cap = r->cap_apply_buf == 0 ? 64 : r->cap_apply_buf;
        while (cap < want) {
            cap *= 2;
        }
        struct raft_entry *p = raft_realloc(r->heap, r->apply_buf, cap * sizeof *p);
        if (p == NULL) {
            return RAFT_ENOMEM;
        }
        r->apply_buf = p;
        r->cap_apply_buf = cap;
    }
    size_t n;
    int rv = raft_log_slice(&r->log, lo, hi, r->cfg.max_apply_bytes, r->apply_buf, &n);
    if (rv != 0) {
        return rv;
    }
    rd->committed = r->apply_buf;
    rd->n_committed = n;
    return 0;
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    memset(rd, 0, sizeof *rd);
    if (r->bcast_pending && r->role == RAFT_LEADER) {
        int rv = raft_bcast_append(r);
        if (rv != 0) {
            return rv;
        }
    }
    r->bcast_pending = false;
    int rv = collect_committed(r, rd);
    if (rv != 0) {
        return rv;
    }
    current_hs(r, &rd->hs);
    rd->has_hard_state = !hs_equal(&rd->hs, &r->prev_hs);
    if (r->log.has_snap) {
        rd->snap = &r->log.snap;
    }
    rd->entries = r->log.ents;
    rd->n_entries = r->log.n;
    rd->must_sync = rd->n_entries > 0 || rd->snap != NULL || rd->hs.term != r->prev_hs.term ||
                    rd->hs.vote != r->prev_hs.vote;
    /* Thesis 10.2.1, only for a leader whose term and vote are already durable: otherwise the
     * messages would advertise a term (or a vote) a crash could forget. */
    rd->can_send_before_sync = r->role == RAFT_LEADER && rd->hs.term == r->prev_hs.term &&
                               rd->hs.vote == r->prev_hs.vote && rd->snap == NULL;
    rd->msgs = r->msgs;
    rd->n_msgs = r->n_msgs;
    rd->snap_reqs = r->sreqs;
    rd->n_snap_reqs = r->n_sreqs;
    rd->reads = r->reads;
    rd->n_reads = r->n_reads;
    rd->has_soft_state = r->role != r->prev_role || r->lead != r->prev_lead;
    rd->role = r->role;
    rd->leader = r->lead;
    return 0;
}

/* The leader's own copy counts towards commitment only once it is durable. */
static int leader_self_ack(struct raft *r, raft_index persisted)
{
    struct raft_progress *self = raft_progress_of(r, r->id);
    if (r->role != RAFT_LEADER || self == NULL || !raft_progress_maybe_update(self, persisted)) {
        return 0;
    }
    if (raft_maybe_commit(r)) {
        return raft_bcast_append(r);
    }
    return 0;
}

int raft_advance(struct raft *r, const struct raft_ready *rd)
{
    raft_index persisted = rd->n_entries > 0 ? rd->entries[rd->n_entries - 1].index : 0;
    raft_log_stable(&r->log, rd->n_entries, rd->snap != NULL);
    if (rd->n_committed > 0) {
        r->log.applied = rd->committed[rd->n_committed - 1].index;
    }
    if (rd->has_hard_state) {
        r->prev_hs = rd->hs;
    }
    r->prev_role = rd->role;
    r->prev_lead = rd->leader;
    for (size_t i = 0; i < r->n_msgs; i++) {
        raft_free(r->heap, (void *)r->msgs[i].entries);
    }
    r->n_msgs = 0;
    /* The messages that could point at dropped entries are handled: free them now. */
    raft_log_reap(&r->log);
    r->n_sreqs = 0;
    r->n_reads = 0;
    if (persisted != 0 && leader_self_ack(r, persisted) != 0) {
        /* Out of memory queueing MsgApps: they are lost, which Raft tolerates (the next
         * heartbeat round resends).  The acknowledgement itself has been taken. */
    }
    return 0;
}
