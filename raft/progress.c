/* What the leader knows of each follower's log, and the in-flight window (etcd tracker). */
#include <assert.h>

#include "raft/core.h"

bool raft_inflights_full(const struct raft_inflights *in)
{
    return in->count == in->cap || (in->max_bytes > 0 && in->bytes >= in->max_bytes);
}

void raft_inflights_add(struct raft_inflights *in, raft_index idx, size_t bytes)
{
    assert(in->count < in->cap);
    size_t slot = (in->start + in->count) % in->cap;
    in->idx[slot] = idx;
    in->size[slot] = bytes;
    in->count++;
    in->bytes += bytes;
}

/* Acknowledged up to @idx: every message whose last index is <= @idx has arrived. */
void raft_inflights_free_le(struct raft_inflights *in, raft_index idx)
{
    while (in->count > 0 && in->idx[in->start] <= idx) {
        in->bytes -= in->size[in->start];
        in->start = (in->start + 1) % in->cap;
        in->count--;
    }
    if (in->count == 0) {
        in->start = 0;
    }
}

void raft_inflights_reset(struct raft_inflights *in)
{
    in->start = 0;
    in->count = 0;
    in->bytes = 0;
}

static void reset_state(struct raft_progress *p, enum raft_pr_state s)
{
    p->probe_sent = false;
    p->pending_snap = 0;
    p->state = s;
    raft_inflights_reset(&p->ins);
}

void raft_progress_become_probe(struct raft_progress *p)
{
    /* After a snapshot, probe from the snapshot onwards (etcd BecomeProbe). */
    if (p->state == RAFT_PR_SNAPSHOT) {
        raft_index pending = p->pending_snap;
        reset_state(p, RAFT_PR_PROBE);
        p->next = (p->match + 1 > pending + 1) ? p->match + 1 : pending + 1;
        return;
    }
    reset_state(p, RAFT_PR_PROBE);
    p->next = p->match + 1;
}

void raft_progress_become_replicate(struct raft_progress *p)
{
    reset_state(p, RAFT_PR_REPLICATE);
    p->next = p->match + 1;
}

void raft_progress_become_snapshot(struct raft_progress *p, raft_index snap)
{
    reset_state(p, RAFT_PR_SNAPSHOT);
    p->pending_snap = snap;
}

/* Probe: one message at a time.  Replicate: until the window fills.  Snapshot: wait. */
bool raft_progress_is_paused(const struct raft_progress *p)
{
    switch (p->state) {
    case RAFT_PR_PROBE:
        return p->probe_sent;
    case RAFT_PR_REPLICATE:
        return raft_inflights_full(&p->ins);
    case RAFT_PR_SNAPSHOT:
        return true;
    }
    return true;
}

bool raft_progress_maybe_update(struct raft_progress *p, raft_index n)
{
    bool updated = false;
    if (p->match < n) {
        p->match = n;
        updated = true;
        p->probe_sent = false;
    }
    if (p->next < n + 1) {
        p->next = n + 1;
    }
    return updated;
}

/* A rejection of the MsgApp whose previous index was @rejected, with the follower's hint.
 * Returns false for stale rejections (etcd MaybeDecrTo). */
bool raft_progress_maybe_decr(struct raft_progress *p, raft_index rejected, raft_index hint)
{
    if (p->state == RAFT_PR_REPLICATE) {
        if (rejected <= p->match) {
            return false;
        }
        p->next = p->match + 1;
        return true;
    }
    if (p->next - 1 != rejected) {
        return false;
    }
    raft_index n = rejected < hint + 1 ? rejected : hint + 1;
    p->next = n < p->match + 1 ? p->match + 1 : n;
    if (p->next < 1) {
        p->next = 1;
    }
    p->probe_sent = false;
    return true;
}
