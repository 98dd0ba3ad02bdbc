/* Log replication: MsgApp / heartbeats / snapshots out, their handling on followers, and the
 * leader's processing of the replies (thesis 3.5, etcd raft.go). */
#include <assert.h>
#include <string.h>

#include "raft/core.h"

bool raft_committed_in_term(const struct raft *r)
{
    return raft_log_term_or0(&r->log, r->log.committed) == r->term;
}

/* Ask the application to ship the storage's snapshot to @p (thesis 5.3: the follower needs
 * entries that compaction removed). */
static int send_snapshot(struct raft *r, struct raft_progress *p)
{
    if (!p->recent_active) {
        return 0; /* Not worth building a snapshot for a peer we have not heard from. */
    }
    struct raft_snap_meta meta;
    int rv = r->log.st->snapshot(r->log.st->ctx, &meta);
    if (rv != 0) {
        return rv;
    }
    if (r->n_sreqs == r->cap_sreqs) {
        size_t cap = r->cap_sreqs == 0 ? 4 : r->cap_sreqs * 2;
        struct raft_snap_req *s = raft_realloc(r->heap, r->sreqs, cap * sizeof *s);
        if (s == NULL) {
            return RAFT_ENOMEM;
        }
        r->sreqs = s;
        r->cap_sreqs = cap;
    }
    struct raft_msg *m = &r->sreqs[r->n_sreqs++].msg;
    memset(m, 0, sizeof *m);
    m->type = RAFT_MSG_SNAP;
    m->to = p->id;
    m->from = r->id;
    m->term = r->term;
    m->snap = meta;
    raft_progress_become_snapshot(p, meta.index);
    raft_trace(r, "send snapshot to %llu index=%llu", (unsigned long long)p->id,
               (unsigned long long)meta.index);
    return 0;
}

/* Entry headers for a MsgApp to @p into a fresh array (*@out, owned by the caller).
 * RAFT_ECOMPACTED means the follower needs a snapshot. */
static int collect_entries(struct raft *r,
                           const struct raft_progress *p,
                           size_t want,
                           struct raft_entry **out,
                           size_t *n)
{
    if (want > 4096) {
        want = 4096; /* Bounds the header array; the byte limit usually binds first. */
    }
    struct raft_entry *ents = raft_malloc(r->heap, want * sizeof *ents);
    if (ents == NULL) {
        return RAFT_ENOMEM;
    }
    int rv = raft_log_slice(&r->log, p->next, p->next + want, r->cfg.max_msg_bytes, ents, n);
    if (rv != 0) {
        raft_free(r->heap, ents);
        return rv;
    }
    *out = ents;
    return 0;
}

/* Flow control after sending entries up to @last, @bytes of data (thesis 10.2.2: optimistic
 * pipelining in replicate state, one probe at a time otherwise). */
static void sent_entries(struct raft_progress *p, raft_index last, size_t bytes)
{
    if (p->state == RAFT_PR_REPLICATE) {
        p->next = last + 1;
        raft_inflights_add(&p->ins, last, bytes);
    } else {
        p->probe_sent = true;
    }
}

int raft_send_append(struct raft *r, struct raft_progress *p, bool send_if_empty, bool *sent)
{
    *sent = false;
    if (raft_progress_is_paused(p) || p->id == r->id) {
        return 0;
    }
    raft_index prev = p->next - 1;
    raft_term prev_term;
    int rv = raft_log_term(&r->log, prev, &prev_term);
    size_t want = (size_t)(raft_log_last(&r->log) + 1 - p->next);
    if (rv == RAFT_ECOMPACTED) {
        return send_snapshot(r, p);
    }
    if (rv != 0 || (want == 0 && !send_if_empty)) {
        return rv;
    }
    struct raft_entry *ents = NULL;
    size_t n = 0;
    if (want > 0) {
        rv = collect_entries(r, p, want, &ents, &n);
        if (rv != 0) {
            return rv == RAFT_ECOMPACTED ? send_snapshot(r, p) : rv;
        }
    }
    struct raft_msg m = {.type = RAFT_MSG_APP, .to = p->id, .index = prev, .log_term = prev_term};
    m.entries = ents;
    m.n_entries = n;
    m.commit = r->log.committed;
    rv = raft_send(r, &m);
    if (rv != 0) {
        return rv;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += ents[i].data.len;
    }
    if (n > 0) {
        sent_entries(p, ents[n - 1].index, bytes);
    } else if (p->state == RAFT_PR_PROBE) {
        p->probe_sent = true;
    }
    *sent = true;
    return 0;
}

int raft_bcast_append(struct raft *r)
{
    for (unsigned i = 0; i < r->n_prs; i++) {
        bool sent;
        int rv = raft_send_append(r, &r->prs[i], true, &sent);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int raft_bcast_heartbeat(struct raft *r, uint64_t ctx)
{
    for (unsigned i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        if (p->id == r->id) {
            continue;
        }
        /* Never tell a follower to commit past what it is known to hold. */
        struct raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .to = p->id, .context = ctx};
        m.commit = p->match < r->log.committed ? p->match : r->log.committed;
        int rv = raft_send(r, &m);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int cmp_index_desc(const void *a, const void *b)
{
    raft_index x = *(const raft_index *)a, y = *(const raft_index *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Thesis 3.6.2 / Figure 8: advance commit to the largest index a quorum of voters holds, but
 * only if that entry is from the current term; earlier terms commit indirectly. */
bool raft_maybe_commit(struct raft *r)
{
    raft_index m[RAFT_MAX_MEMBERS];
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_prs; i++) {
        if (!r->prs[i].learner) {
            m[n++] = r->prs[i].match;
        }
    }
    if (n == 0) {
        return false;
    }
    /* Insertion sort: at most RAFT_MAX_MEMBERS items. */
    for (unsigned i = 1; i < n; i++) {
        for (unsigned k = i; k > 0 && cmp_index_desc(&m[k - 1], &m[k]) > 0; k--) {
            raft_index t = m[k];
            m[k] = m[k - 1];
            m[k - 1] = t;
        }
    }
    raft_index q = m[raft_quorum(r) - 1];
    if (q > r->log.committed && raft_log_term_or0(&r->log, q) == r->term) {
        bool first_in_term = !raft_committed_in_term(r);
        raft_log_commit_to(&r->log, q);
        if (first_in_term) {
            raft_read_on_committed_in_term(r);
        }
        raft_conf_maybe_step_down(r);
        return true;
    }
    return false;
}

/* Append to the leader's own log.  Its own match advances only at raft_advance(), once the
 * application has persisted the entries. */
int raft_append_local(struct raft *r, const struct raft_entry *ents, size_t n)
{
    int rv = raft_log_append(&r->log, ents, n);
    if (rv != 0) {
        return rv;
    }
    return raft_conf_scan_appended(r, ents, n);
}

int raft_propose_entry(struct raft *r,
                       enum raft_entry_type type,
                       const void *data,
                       size_t len,
                       raft_index *index,
                       raft_term *term)
{
    struct raft_entry e = {.term = r->term, .index = raft_log_last(&r->log) + 1, .type = type};
    e.data.base = (void *)data;
    e.data.len = len;
    int rv = raft_append_local(r, &e, 1);
    if (rv != 0) {
        return rv;
    }
    if (index != NULL) {
        *index = e.index;
    }
    if (term != NULL) {
        *term = e.term;
    }
    /* Sent at raft_ready(): proposals stepped back to back share one MsgApp per follower. */
    r->bcast_pending = true;
    return 0;
}

static int reply_append(struct raft *r, const struct raft_msg *m, raft_index index)
{
    struct raft_msg resp = {.type = RAFT_MSG_APP_RESP, .to = m->from, .index = index};
    return raft_send(r, &resp);
}

/* Follower side of AppendEntries (thesis 3.5, with etcd's fast back-off hint). */
int raft_handle_append(struct raft *r, const struct raft_msg *m)
{
    struct raft_log *l = &r->log;
    if (m->index < l->committed) {
        return reply_append(r, m, l->committed);
    }
    if (!raft_log_match_term(l, m->index, m->log_term)) {
        raft_index last = raft_log_last(l);
        raft_index hint = m->index < last ? m->index : last;
        raft_term hint_term;
        hint = raft_log_find_conflict_by_term(l, hint, m->log_term, &hint_term);
        struct raft_msg resp = {.type = RAFT_MSG_APP_RESP, .to = m->from, .index = m->index};
        resp.reject = true;
        resp.reject_hint = hint;
        resp.reject_term = hint_term;
        resp.log_term = hint_term;
        return raft_send(r, &resp);
    }
    raft_index last_new = m->index + m->n_entries;
    raft_index ci = raft_log_find_conflict(l, m->entries, m->n_entries);
    if (ci != 0) {
        assert(ci > l->committed); /* Log Matching: committed entries never conflict. */
        size_t from = (size_t)(ci - m->index - 1);
        /* Append first (all or nothing), then fix the configuration: if the truncated suffix
         * held the configuration in effect, the previous one applies again (thesis 4.1). */
        bool lost_conf = ci <= raft_log_last(l) && ci <= r->conf_index;
        int rv = raft_log_append(l, m->entries + from, m->n_entries - from);
        if (rv == 0 && lost_conf) {
            rv = raft_conf_revert(r, ci);
        }
        if (rv == 0) {
            rv = raft_conf_scan_appended(r, m->entries + from, m->n_entries - from);
        }
        if (rv != 0) {
            return rv;
        }
    }
    raft_log_commit_to(l, m->commit < last_new ? m->commit : last_new);
    return reply_append(r, m, last_new);
}

int raft_handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
    /* The leader only sends commit <= our match, so it is in our log. */
    if (m->commit <= raft_log_last(&r->log)) {
        raft_log_commit_to(&r->log, m->commit);
    }
    struct raft_msg resp = {.type = RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .context = m->context};
    return raft_send(r, &resp);
}

/* Thesis 5.3: install a snapshot's metadata unless the log already covers it. */
int raft_handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    const struct raft_snap_meta *s = &m->snap;
    if (s->index <= r->log.committed) {
        return reply_append(r, m, r->log.committed);
    }
    if (raft_log_match_term(&r->log, s->index, s->term)) {
        /* We hold the entry already: just learn that it is committed. */
        raft_log_commit_to(&r->log, s->index);
        return reply_append(r, m, raft_log_last(&r->log));
    }
    raft_trace(r, "install snapshot index=%llu term=%llu", (unsigned long long)s->index,
               (unsigned long long)s->term);
    raft_log_restore(&r->log, s);
    int rv = raft_conf_apply(r, &s->conf, 0);
    if (rv != 0) {
        return rv;
    }
    return reply_append(r, m, raft_log_last(&r->log));
}

static int send_more(struct raft *r, struct raft_progress *p)
{
    bool sent = true;
    while (sent) {
        int rv = raft_send_append(r, p, false, &sent);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int after_update(struct raft *r, struct raft_progress *p, bool was_paused)
{
    int rv = 0;
    if (raft_maybe_commit(r)) {
        rv = raft_bcast_append(r);
    } else if (was_paused) {
        bool sent;
        rv = raft_send_append(r, p, true, &sent);
    }
    if (rv == 0 && r->role == RAFT_LEADER) {
        rv = send_more(r, p);
    }
    /* Thesis 3.10: the transferee caught up; let it start an election at once. */
    if (rv == 0 && r->role == RAFT_LEADER && p->id == r->transferee &&
        p->match == raft_log_last(&r->log)) {
        struct raft_msg m = {.type = RAFT_MSG_TIMEOUT_NOW, .to = p->id};
        rv = raft_send(r, &m);
    }
    return rv;
}

int raft_leader_append_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *p = raft_progress_of(r, m->from);
    if (p == NULL) {
        return 0;
    }
    p->recent_active = true;
    if (m->reject) {
        raft_index next_probe = m->reject_hint;
        if (m->reject_term > 0) {
            raft_term unused;
            next_probe =
                raft_log_find_conflict_by_term(&r->log, m->reject_hint, m->reject_term, &unused);
        }
        if (raft_progress_maybe_decr(p, m->index, next_probe)) {
            if (p->state == RAFT_PR_REPLICATE) {
                raft_progress_become_probe(p);
            }
            bool sent;
            return raft_send_append(r, p, true, &sent);
        }
        return 0;
    }
    bool was_paused = raft_progress_is_paused(p);
    if (!raft_progress_maybe_update(p, m->index)) {
        return 0;
    }
    if (p->state == RAFT_PR_PROBE) {
        raft_progress_become_replicate(p);
    } else if (p->state == RAFT_PR_SNAPSHOT && p->match >= p->pending_snap) {
        raft_progress_become_probe(p);
        raft_progress_become_replicate(p);
    } else if (p->state == RAFT_PR_REPLICATE) {
        raft_inflights_free_le(&p->ins, m->index);
    }
    return after_update(r, p, was_paused);
}

int raft_leader_heartbeat_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *p = raft_progress_of(r, m->from);
    if (p == NULL) {
        return 0;
    }
    p->recent_active = true;
    p->probe_sent = false;
    /* A full window may mean lost MsgApps: free one slot so replication makes progress. */
    if (p->state == RAFT_PR_REPLICATE && raft_inflights_full(&p->ins) && p->ins.count > 0) {
        raft_inflights_free_le(&p->ins, p->ins.idx[p->ins.start]);
    }
    if (p->match < raft_log_last(&r->log)) {
        bool sent;
        int rv = raft_send_append(r, p, true, &sent);
        if (rv != 0) {
            return rv;
        }
    }
    if (m->context > p->read_ack) {
        p->read_ack = m->context;
        return raft_read_release(r);
    }
    return 0;
}

int raft_leader_snap_status(struct raft *r, raft_id peer, bool ok)
{
    struct raft_progress *p = raft_progress_of(r, peer);
    if (p == NULL || p->state != RAFT_PR_SNAPSHOT) {
        return 0;
    }
    raft_trace(r, "snapshot to %llu %s", (unsigned long long)peer, ok ? "done" : "failed");
    if (!ok) {
        p->pending_snap = 0;
    }
    /* Either way probe again, after the next heartbeat reply: on success from the snapshot
     * onwards, on failure from the match (which may ask for a new snapshot). */
    raft_progress_become_probe(p);
    p->probe_sent = true;
    return 0;
}
