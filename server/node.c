/* The Ready loop: ties the raft core to the WAL, the peer transport and the apply thread.
 *
 * Processing follows raft/raft.h's contract.  A Ready is taken in two phases so the loop never
 * blocks on disk: start_ready() hands entries and hard state to the WAL writer thread (and, on a
 * leader, sends its messages at once, thesis 10.2.1); finish_ready() runs once the WAL reports
 * the batch durable: it sends the remaining messages (a follower's acknowledgements), hands the
 * committed entries to the apply thread and calls raft_advance().  raft_step() may not run in
 * between, so inputs that arrive meanwhile are held in order and stepped after the advance; the
 * next Ready then carries all of them, which is the group commit. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

void srv_fail(struct srv *s, int code, const char *fmt, ...)
{
    if (s->fatal != 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    s->fatal = code;
    srv_log(SRV_LOG_ERROR, "node", "fatal: %s; stopping", s->errmsg);
    ev_break(s->loop, EVBREAK_ALL);
}

/* ---- raft_storage over the WAL's memtable ---- */

static int map_wal_err(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case WAL_ECOMPACTED:
        return RAFT_ECOMPACTED;
    case WAL_EUNAVAILABLE:
        return RAFT_EUNAVAILABLE;
    case WAL_ENOMEM:
        return RAFT_ENOMEM;
    default:
        return RAFT_ESTORAGE;
    }
}

static int st_initial_state(void *ctx, struct raft_hard_state *hs)
{
    struct srv *s = ctx;
    hs->term = s->hs.term;
    hs->vote = s->hs.vote;
    hs->commit = s->hs.commit;
    return 0;
}

static int st_entries(void *ctx,
                      raft_index lo,
                      raft_index hi,
                      size_t max_bytes,
                      struct raft_entry *out,
                      size_t *n_out)
{
    struct srv *s = ctx;
    size_t want = (size_t)(hi - lo);
    if (want > s->scratch_cap) {
        struct wal_entry *p = realloc(s->scratch, want * sizeof *p);
        if (p == NULL) {
            return RAFT_ENOMEM;
        }
        s->scratch = p;
        s->scratch_cap = want;
    }
    size_t n = 0;
    int rv = wal_memtable_entries(wal_memtable(s->wal), lo, hi, max_bytes, s->scratch, want, &n);
    if (rv != 0) {
        return map_wal_err(rv);
    }
    for (size_t i = 0; i < n; i++) {
        out[i].index = s->scratch[i].index;
        out[i].term = s->scratch[i].term;
        out[i].type = (enum raft_entry_type)s->scratch[i].type;
        out[i].data.base = (void *)s->scratch[i].data;
        out[i].data.len = s->scratch[i].len;
    }
    *n_out = n;
    return 0;
}

static int st_term(void *ctx, raft_index i, raft_term *out)
{
    struct srv *s = ctx;
    return map_wal_err(wal_memtable_term(wal_memtable(s->wal), i, out));
}

static raft_index st_first(void *ctx)
{
    struct srv *s = ctx;
    return wal_memtable_first(wal_memtable(s->wal));
}

static raft_index st_last(void *ctx)
{
    struct srv *s = ctx;
    return wal_memtable_last(wal_memtable(s->wal));
}

static int st_snapshot(void *ctx, struct raft_snap_meta *out)
{
    struct srv *s = ctx;
    if (s->snap_meta.index > 0) {
        /* The latest snapshot on disk; the log may start before it (the catch-up tail). */
        *out = s->snap_meta;
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->index = wal_memtable_first(wal_memtable(s->wal)) - 1;
    if (out->index > 0) {
        int rv = st_term(ctx, out->index, &out->term);
        if (rv != 0) {
            return rv;
        }
    }
    /* No snapshot yet: the log starts at the bootstrap configuration. */
    out->conf = s->boot_conf;
    return 0;
}

int srv_storage_init(struct srv *s)
{
    s->storage.ctx = s;
    s->storage.initial_state = st_initial_state;
    s->storage.entries = st_entries;
    s->storage.term = st_term;
    s->storage.first_index = st_first;
    s->storage.last_index = st_last;
    s->storage.snapshot = st_snapshot;
    return 0;
}

/* ---- stepping inputs ---- */

static void input_free(struct srv_input *in)
{
    if (in->type == SRV_IN_BATCH) {
        pb_batch_free(&in->batch);
    }
    free(in->data);
    free(in);
}

/* Step one message; messages raft refuses are dropped (peers are untrusted, raft tolerates
 * loss). */
static void step_msg(struct srv *s, const struct raft_msg *m)
{
    struct raft_event ev = {.type = RAFT_EV_RECV};
    ev.u.msg = m;
    int rv = raft_step(s->raft, &ev);
    if (rv == RAFT_ENOMEM || rv == RAFT_ESTORAGE) {
        srv_fail(s, SRV_EIO, "raft step %s from %llx: %s", raft_msg_type_name(m->type),
                 (unsigned long long)m->from, raft_strerror(rv));
    }
}

static void step_input(struct srv *s, struct srv_input *in)
{
    switch (in->type) {
    case SRV_IN_BATCH:
        for (size_t i = 0; i < in->batch.n_msgs; i++) {
            const struct raft_msg *m = &in->batch.msgs[i];
            if (m->type == RAFT_MSG_PROPOSE) {
                /* A follower forwarded client writes: propose them here if we lead. */
                for (size_t k = 0; k < m->n_entries; k++) {
                    srv_node_propose(s, m->entries[k].data.base, m->entries[k].data.len, 0);
                }
                continue;
            }
            step_msg(s, m);
        }
        break;
    case SRV_IN_PROPOSE:
        srv_node_propose(s, in->data, in->len, in->req_id);
        break;
    case SRV_IN_READ: {
        struct raft_event ev = {.type = RAFT_EV_READ_INDEX};
        ev.u.read_ctx = in->ctx;
        raft_step(s->raft, &ev); /* a lost request times out like a lost message */
        break;
    }
    case SRV_IN_UNREACHABLE: {
        struct raft_event ev = {.type = RAFT_EV_UNREACHABLE};
        ev.u.peer = in->peer;
        raft_step(s->raft, &ev);
        break;
    }
    case SRV_IN_SNAP_STATUS: {
        struct raft_event ev = {.type = RAFT_EV_SNAP_STATUS};
        ev.u.snap.peer = in->peer;
        ev.u.snap.ok = in->ok;
        raft_step(s->raft, &ev);
        break;
    }
    case SRV_IN_MSG:
        step_msg(s, &in->msg);
        break;
    }
}

void srv_node_input(struct srv *s, struct srv_input *in)
{
    if (!s->inflight) {
        step_input(s, in);
        input_free(in);
        return;
    }
    in->next = NULL;
    if (s->in_tail != NULL) {
        s->in_tail->next = in;
    } else {
        s->in_head = in;
    }
    s->in_tail = in;
}

int srv_node_propose(struct srv *s, const void *data, size_t len, uint64_t req_id)
{
    if (s->inflight) {
        struct srv_input *in = calloc(1, sizeof *in);
        void *copy = malloc(len > 0 ? len : 1);
        if (in == NULL || copy == NULL) {
            free(in);
            free(copy);
            return RAFT_ENOMEM;
        }
        if (len > 0) {
            memcpy(copy, data, len);
        }
        in->type = SRV_IN_PROPOSE;
        in->data = copy;
        in->len = len;
        in->req_id = req_id;
        srv_node_input(s, in);
        return 0;
    }
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    ev.u.propose.data.base = (void *)data;
    ev.u.propose.data.len = len;
    int rv = raft_step(s->raft, &ev);
    if (rv == RAFT_ENOTLEADER && req_id != 0 && s->leader != 0 && s->leader != s->cfg.member_id) {
        srv_peer_forward(s, data, len);
        return 0;
    }
    return rv;
}

static void step_held_inputs(struct srv *s)
{
    if (s->ticks_held > 0) {
        unsigned n = s->ticks_held;
        s->ticks_held = 0;
        struct raft_event ev = {.type = RAFT_EV_TICK};
        for (unsigned i = 0; i < n; i++) {
            raft_step(s->raft, &ev);
        }
    }
    while (s->in_head != NULL && !s->inflight) {
        struct srv_input *in = s->in_head;
        s->in_head = in->next;
        if (s->in_head == NULL) {
            s->in_tail = NULL;
        }
        step_input(s, in);
        input_free(in);
    }
}

/* ---- the Ready ---- */

static int wal_entries(struct srv *s, const struct raft_ready *rd)
{
    if (rd->n_entries > s->wents_cap) {
        struct wal_entry *p = realloc(s->wents, rd->n_entries * sizeof *p);
        if (p == NULL) {
            return WAL_ENOMEM;
        }
        s->wents = p;
        s->wents_cap = rd->n_entries;
    }
    for (size_t i = 0; i < rd->n_entries; i++) {
        const struct raft_entry *e = &rd->entries[i];
        s->wents[i].index = e->index;
        s->wents[i].term = e->term;
        s->wents[i].type = (uint8_t)e->type;
        s->wents[i].data = e->data.base;
        s->wents[i].len = e->data.len;
    }
    return 0;
}

static void note_soft_state(struct srv *s, const struct raft_ready *rd)
{
    if (!rd->has_soft_state) {
        return;
    }
    if (rd->leader != s->leader) {
        srv_log(SRV_LOG_INFO, "raft", "member %llx: leader is now %llx (term %llu, role %s)",
                (unsigned long long)s->cfg.member_id, (unsigned long long)rd->leader,
                (unsigned long long)rd->hs.term, raft_role_name(rd->role));
    }
    bool changed = rd->leader != s->leader;
    s->leader = rd->leader;
    s->role = rd->role;
    if (changed) {
        atomic_fetch_add(&s->metrics.leader_changes, 1);
    }
    if (changed && rd->leader != 0) {
        s->reissue_reads = true; /* asked of the old leader: ask the new one */
    }
    if (changed) {
        srv_members_on_leader(s);
        if (rd->leader == s->cfg.member_id) {
            srv_lease_promote(s); /* every lease gets a full TTL under the new leader */
        }
    }
    atomic_store(&s->leader_pub, rd->leader);
}

static void finish_ready(struct srv *s)
{
    struct raft_ready *rd = &s->rd;
    srv_peer_release_held(s); /* the acknowledgements, now that they are true */
    if (rd->n_committed > 0) {
        srv_apply_submit(s, rd->committed, rd->n_committed);
    }
    for (size_t i = 0; i < rd->n_reads; i++) {
        /* Every read waiting on this ReadIndex batch may run once applied >= index. */
        struct srv_read **pp = &s->reads_waiting, *batch = NULL;
        while (*pp != NULL) {
            struct srv_read *r = *pp;
            if (r->ctx == rd->reads[i].context) {
                *pp = r->next;
                r->read_index = rd->reads[i].index;
                r->next = batch;
                batch = r;
            } else {
                pp = &r->next;
            }
        }
        if (batch != NULL) {
            srv_read_submit(s, batch);
        }
    }
    /* Snapshots to send run on threads of their own and report back (SRV_DONE_SNAP_SENT);
     * one that cannot start is reported failed at once, and raft asks again later. */
    size_t n_failed = 0;
    raft_id failed[RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < rd->n_snap_reqs; i++) {
        if (!srv_snap_send(s, &rd->snap_reqs[i]) && n_failed < RAFT_MAX_MEMBERS) {
            failed[n_failed++] = rd->snap_reqs[i].msg.to;
        }
    }
    int rv = raft_advance(s->raft, rd);
    if (rv != 0) {
        srv_fail(s, SRV_EIO, "raft advance: %s", raft_strerror(rv));
        return;
    }
    s->inflight = false;
    for (size_t i = 0; i < n_failed; i++) {
        struct raft_event ev = {.type = RAFT_EV_SNAP_STATUS};
        ev.u.snap.peer = failed[i];
        ev.u.snap.ok = false;
        raft_step(s->raft, &ev);
    }
    if (s->compact_to >= wal_memtable_first(wal_memtable(s->wal))) {
        srv_snap_compact(s);
    }
}

static void start_ready(struct srv *s)
{
    struct raft_ready *rd = &s->rd;
    int rv = raft_ready(s->raft, rd);
    if (rv != 0) {
        srv_fail(s, SRV_EIO, "raft ready: %s", raft_strerror(rv));
        return;
    }
    note_soft_state(s, rd);
    s->inflight = true;
    uint64_t ticket = 0;
    if (rd->snap != NULL) {
        /* The store already holds it (installed before the MsgSnap was stepped); reset the log
         * to it.  The marker is durable before anything this Ready sends. */
        rv = wal_mark_snapshot(s->wal, rd->snap->index, rd->snap->term, &ticket);
        if (rv != 0) {
            srv_fail(s, SRV_EIO, "wal snapshot marker: %s", wal_strerror(rv));
            return;
        }
        if (rd->snap->index > s->snap_meta.index) {
            s->snap_meta = *rd->snap;
        }
    }
    /* Thesis 10.2.1: the leader's appends go out in parallel with its own fsync; it counts its
     * own copy only at raft_advance(). */
    if (rd->can_send_before_sync && rd->n_msgs > 0) {
        srv_peer_send(s, rd->msgs, rd->n_msgs);
    } else if (rd->n_msgs > 0) {
        /* Packed now, sent once durable: the append below may overwrite memtable entries
         * these messages borrow (a leader that stepped down with MsgApps in its outbox). */
        srv_peer_hold(s, rd->msgs, rd->n_msgs);
    }
    if (rd->n_entries > 0) {
        rv = wal_entries(s, rd);
        if (rv == 0) {
            rv = wal_append(s->wal, s->wents, rd->n_entries, &ticket);
        }
    }
    if (rv == 0 && rd->has_hard_state) {
        s->hs.term = rd->hs.term;
        s->hs.vote = rd->hs.vote;
        s->hs.commit = rd->hs.commit;
        atomic_store(&s->term_pub, rd->hs.term);
        /* A change of the commit index alone need not be durable (etcd does not sync it
         * either): it rides along with the next record that must be synced.  Writing it on
         * its own cost a second fdatasync per write at low concurrency. */
        if (rd->must_sync) {
            rv = wal_set_hard_state(s->wal, &s->hs, &ticket);
        }
    }
    if (rv != 0) {
        srv_fail(s, SRV_EIO, "wal append: %s", wal_strerror(rv));
        return;
    }
    s->ticket = ticket;
    s->persist_start_us = srv_now_us();
    if (!rd->must_sync && rd->snap == NULL) {
        /* Only the commit index changed (or nothing to persist): no need to wait. */
        finish_ready(s);
    }
}

void srv_node_drive(struct srv *s)
{
    for (int rounds = 0; rounds < 64 && s->fatal == 0; rounds++) {
        if (s->inflight) {
            struct wal_durable d;
            int rv = wal_durable(s->wal, &d);
            if (rv != 0) {
                srv_fail(s, SRV_EIO, "wal sync: %s", wal_strerror(rv));
                return;
            }
            if (d.ticket < s->ticket) {
                /* A small batch is written right here: the loop has nothing to step until it
                 * is durable anyway (inputs are held), and the hand-off to the WAL writer and
                 * back costs two thread wake-ups.  Bigger batches keep the writer thread, so
                 * the loop reads and parses the next requests during the fsync. */
                bool done = false;
                rv = wal_flush_here(s->wal, SRV_WAL_INLINE_BYTES, &done);
                if (rv == 0 && done) {
                    rv = wal_durable(s->wal, &d);
                }
                if (rv != 0) {
                    srv_fail(s, SRV_EIO, "wal sync: %s", wal_strerror(rv));
                    return;
                }
                if (d.ticket < s->ticket) {
                    return; /* the WAL's eventfd wakes us */
                }
            }
            if (s->rd.must_sync) {
                srv_hist_observe(&s->metrics.wal_fsync, srv_now_us() - s->persist_start_us);
            }
            finish_ready(s);
            if (s->fatal != 0) {
                return;
            }
        }
        step_held_inputs(s);
        if (!raft_has_ready(s->raft)) {
            return;
        }
        start_ready(s);
    }
}

void srv_node_read(struct srv *s, struct srv_read *r)
{
    /* Linearizable reads gathered during one loop iteration share one ReadIndex request. */
    r->next = s->reads_new;
    s->reads_new = r;
}

void srv_node_on_done(struct srv *s, struct srv_done *d)
{
    switch (d->kind) {
    case SRV_DONE_REPLY:
        srv_kv_on_done(s, d);
        break;
    case SRV_DONE_FATAL:
        if (d->errmsg != NULL) {
            srv_fail(s, SRV_EIO, "%s", d->errmsg); /* a damaged store (corrupt.c) */
            break;
        }
        srv_fail(s, SRV_EIO, "the apply thread stopped: the store cannot follow the log");
        break;
    case SRV_DONE_SNAP_CREATED:
        srv_snap_created(s, &d->snap);
        break;
    case SRV_DONE_SNAP_SENT: {
        struct srv_peer *p = srv_peer_find(s, d->peer);
        if (p != NULL) {
            p->snap_sending = false;
        }
        atomic_fetch_add(d->ok ? &s->metrics.snap_sent_ok : &s->metrics.snap_sent_failed, 1);
        struct srv_input *in = calloc(1, sizeof *in);
        if (in != NULL) {
            in->type = SRV_IN_SNAP_STATUS;
            in->peer = d->peer;
            in->ok = d->ok;
            srv_node_input(s, in);
        }
        break;
    }
    case SRV_DONE_SNAP_RECEIVED:
        if (raft_commit_index(s->raft) >= d->msg.snap.index) {
            srv_log(SRV_LOG_INFO, "snap", "snapshot %llu is behind our commit index %llu: ignored",
                    (unsigned long long)d->msg.snap.index,
                    (unsigned long long)raft_commit_index(s->raft));
            break;
        }
        srv_apply_install(s, d->dir, &d->msg);
        break;
    case SRV_DONE_SNAP_FAILED:
        srv_log(SRV_LOG_WARN, "snap",
                "snapshot %llu not installed; waiting for the leader to resend",
                (unsigned long long)d->msg.snap.index);
        break;
    case SRV_DONE_MEMBER_REMOVED:
        srv_members_on_removed(s, d);
        break;
    case SRV_DONE_MEMBER_ATTR:
        srv_members_on_attr(s, d);
        break;
    case SRV_DONE_LEASE:
        srv_lease_on_done(s, d->watch_id, d->next_rev);
        break;
    case SRV_DONE_AUTH:
        srv_auth_on_state(s, d->body, d->len);
        break;
    case SRV_DONE_ALARMS:
        srv_alarm_on_set(s, d->body, d->len);
        break;
    case SRV_DONE_HASH:
    case SRV_DONE_CORRUPT:
        srv_hash_on_done(s, d);
        break;
    case SRV_DONE_CONF:
        srv_members_on_conf(s, d->snap.index, &d->snap.conf);
        break;
    case SRV_DONE_EVENTS:
        srv_watch_on_events(s, d->events, d->n_events);
        break;
    case SRV_DONE_HISTORY:
        srv_watch_on_history(s, d->watch_id, d->events, d->n_events, d->next_rev, d->err,
                             d->complete);
        break;
    case SRV_DONE_SNAP_INSTALLED: {
        atomic_fetch_add(&s->metrics.snap_installed, 1);
        struct srv_input *in = calloc(1, sizeof *in);
        if (in != NULL) {
            in->type = SRV_IN_MSG;
            in->msg = d->msg;
            srv_node_input(s, in);
        }
        break;
    }
    }
}
