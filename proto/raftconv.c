/* raft_msg <-> raftpb.Message. */
#include "proto/raftconv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pb.h"

static void conf_to_pb(const struct raft_conf *c, Kvdb__Raftpb__ConfState *cs, uint64_t *ids)
{
    kvdb__raftpb__conf_state__init(cs);
    if (c->n_voters > 0) {
        memcpy(ids, c->voters, c->n_voters * sizeof *ids);
    }
    if (c->n_learners > 0) {
        memcpy(ids + c->n_voters, c->learners, c->n_learners * sizeof *ids);
    }
    cs->voters = ids;
    cs->n_voters = c->n_voters;
    cs->learners = ids + c->n_voters;
    cs->n_learners = c->n_learners;
}

int pb_batch_append(struct pb_frame_writer *w,
                    uint64_t cluster_id,
                    raft_id from,
                    const struct raft_msg *msgs,
                    size_t n)
{
    size_t n_ents = 0;
    for (size_t i = 0; i < n; i++) {
        n_ents += msgs[i].n_entries;
    }
    /* One allocation for every temporary the packed form needs. */
    size_t sz = n * (sizeof(Kvdb__Raftpb__Message) + sizeof(Kvdb__Raftpb__Message *) +
                     sizeof(Kvdb__Raftpb__SnapshotMeta) + sizeof(Kvdb__Raftpb__ConfState) +
                     2 * RAFT_MAX_MEMBERS * sizeof(uint64_t)) +
                n_ents * (sizeof(Kvdb__Raftpb__Entry) + sizeof(Kvdb__Raftpb__Entry *));
    char *mem = malloc(sz > 0 ? sz : 1);
    if (mem == NULL) {
        return PB_ENOMEM;
    }
    Kvdb__Raftpb__Message *pm = (Kvdb__Raftpb__Message *)(void *)mem;
    Kvdb__Raftpb__Message **pmp = (Kvdb__Raftpb__Message **)(void *)(pm + n);
    Kvdb__Raftpb__SnapshotMeta *sm = (Kvdb__Raftpb__SnapshotMeta *)(void *)(pmp + n);
    Kvdb__Raftpb__ConfState *cs = (Kvdb__Raftpb__ConfState *)(void *)(sm + n);
    uint64_t *ids = (uint64_t *)(void *)(cs + n);
    Kvdb__Raftpb__Entry *pe = (Kvdb__Raftpb__Entry *)(void *)(ids + n * 2 * RAFT_MAX_MEMBERS);
    Kvdb__Raftpb__Entry **pep = (Kvdb__Raftpb__Entry **)(void *)(pe + n_ents);

    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        const struct raft_msg *m = &msgs[i];
        Kvdb__Raftpb__Message *p = &pm[i];
        kvdb__raftpb__message__init(p);
        pmp[i] = p;
        p->type = (Kvdb__Raftpb__MessageType)m->type;
        p->to = m->to;
        p->from = m->from;
        p->term = m->term;
        p->log_term = m->log_term;
        p->index = m->index;
        p->commit = m->commit;
        p->reject = m->reject;
        p->reject_hint = m->reject_hint;
        p->reject_term = m->reject_term;
        p->context = m->context;
        if (m->type == RAFT_MSG_SNAP) {
            kvdb__raftpb__snapshot_meta__init(&sm[i]);
            sm[i].index = m->snap.index;
            sm[i].term = m->snap.term;
            conf_to_pb(&m->snap.conf, &cs[i], ids + i * 2 * RAFT_MAX_MEMBERS);
            sm[i].conf = &cs[i];
            p->snapshot = &sm[i];
        }
        p->n_entries = m->n_entries;
        p->entries = pep + e;
        for (size_t k = 0; k < m->n_entries; k++, e++) {
            const struct raft_entry *re = &m->entries[k];
            kvdb__raftpb__entry__init(&pe[e]);
            pe[e].term = re->term;
            pe[e].index = re->index;
            /* Wire values: NORMAL 0, CONF_CHANGE 1, EMPTY 2. */
            pe[e].type = (Kvdb__Raftpb__EntryType)(re->type - RAFT_ENTRY_NORMAL);
            pe[e].data.data = re->data.base;
            pe[e].data.len = re->data.len;
            pep[e] = &pe[e];
        }
    }
    Kvdb__Raftpb__Batch b;
    kvdb__raftpb__batch__init(&b);
    b.cluster_id = cluster_id;
    b.from = from;
    b.n_msgs = n;
    b.msgs = pmp;
    int rv = pb_frame_writer_append(w, &b.base);
    free(mem);
    return rv;
}

static int conf_from_pb(const Kvdb__Raftpb__ConfState *cs, struct raft_conf *c)
{
    memset(c, 0, sizeof *c);
    if (cs == NULL) {
        return 0;
    }
    if (cs->n_voters + cs->n_learners > RAFT_MAX_MEMBERS) {
        return PB_EMALFORMED;
    }
    c->n_voters = (unsigned)cs->n_voters;
    c->n_learners = (unsigned)cs->n_learners;
    /* protobuf-c leaves empty repeated fields NULL: memcpy must not see them. */
    if (cs->n_voters > 0) {
        memcpy(c->voters, cs->voters, cs->n_voters * sizeof *cs->voters);
    }
    if (cs->n_learners > 0) {
        memcpy(c->learners, cs->learners, cs->n_learners * sizeof *cs->learners);
    }
    return 0;
}

static int msg_from_pb(const Kvdb__Raftpb__Message *p,
                       struct raft_msg *m,
                       struct raft_entry *ents,
                       char *errmsg,
                       size_t errlen)
{
    if (p->type < KVDB__RAFTPB__MESSAGE_TYPE__MSG_APP || (int)p->type > RAFT_MSG_TYPE_MAX) {
        snprintf(errmsg, errlen, "unknown message type %d", (int)p->type);
        return PB_EMALFORMED;
    }
    memset(m, 0, sizeof *m);
    m->type = (enum raft_msg_type)p->type;
    m->to = p->to;
    m->from = p->from;
    m->term = p->term;
    m->log_term = p->log_term;
    m->index = p->index;
    m->commit = p->commit;
    m->reject = p->reject;
    m->reject_hint = p->reject_hint;
    m->reject_term = p->reject_term;
    m->context = p->context;
    if (p->snapshot != NULL) {
        m->snap.index = p->snapshot->index;
        m->snap.term = p->snapshot->term;
        if (conf_from_pb(p->snapshot->conf, &m->snap.conf) != 0) {
            snprintf(errmsg, errlen, "snapshot configuration has too many members");
            return PB_EMALFORMED;
        }
    }
    m->entries = ents;
    m->n_entries = p->n_entries;
    for (size_t k = 0; k < p->n_entries; k++) {
        const Kvdb__Raftpb__Entry *pe = p->entries[k];
        if ((int)pe->type < 0 || (int)pe->type > KVDB__RAFTPB__ENTRY_TYPE__ENTRY_EMPTY) {
            snprintf(errmsg, errlen, "unknown entry type %d", (int)pe->type);
            return PB_EMALFORMED;
        }
        ents[k].term = pe->term;
        ents[k].index = pe->index;
        ents[k].type = (enum raft_entry_type)(pe->type + RAFT_ENTRY_NORMAL);
        ents[k].data.base = pe->data.data;
        ents[k].data.len = pe->data.len;
    }
    return 0;
}

int pb_batch_append_removed(struct pb_frame_writer *w,
                            uint64_t cluster_id,
                            raft_id from,
                            raft_id removed)
{
    Kvdb__Raftpb__Batch b;
    kvdb__raftpb__batch__init(&b);
    b.cluster_id = cluster_id;
    b.from = from;
    b.removed = removed;
    return pb_frame_writer_append(w, &b.base) == 0 ? 0 : PB_ENOMEM;
}

int pb_batch_decode(const void *buf, size_t len, struct pb_batch *out, char *errmsg, size_t errlen)
{
    memset(out, 0, sizeof *out);
    Kvdb__Raftpb__Batch *b = kvdb__raftpb__batch__unpack(NULL, len, buf);
    if (b == NULL) {
        snprintf(errmsg, errlen, "undecodable peer batch (%zu bytes)", len);
        return PB_EMALFORMED;
    }
    int rv = 0;
    if (pb_has_unknown_fields(&b->base)) {
        snprintf(errmsg, errlen, "peer batch carries unknown fields");
        rv = PB_EUNKNOWN;
        goto err;
    }
    if (b->from == 0) {
        snprintf(errmsg, errlen, "peer batch from member 0");
        rv = PB_EMALFORMED;
        goto err;
    }
    size_t n_ents = 0;
    for (size_t i = 0; i < b->n_msgs; i++) {
        n_ents += b->msgs[i]->n_entries;
    }
    out->msgs = calloc(b->n_msgs > 0 ? b->n_msgs : 1, sizeof *out->msgs);
    out->ents = calloc(n_ents > 0 ? n_ents : 1, sizeof *out->ents);
    if (out->msgs == NULL || out->ents == NULL) {
        rv = PB_ENOMEM;
        snprintf(errmsg, errlen, "out of memory decoding a peer batch");
        goto err;
    }
    size_t e = 0;
    for (size_t i = 0; i < b->n_msgs; i++) {
        rv = msg_from_pb(b->msgs[i], &out->msgs[i], out->ents + e, errmsg, errlen);
        if (rv != 0) {
            goto err;
        }
        if (out->msgs[i].from != b->from) {
            snprintf(errmsg, errlen, "message from %llx inside a batch from %llx",
                     (unsigned long long)out->msgs[i].from, (unsigned long long)b->from);
            rv = PB_EMALFORMED;
            goto err;
        }
        e += b->msgs[i]->n_entries;
    }
    out->n_msgs = b->n_msgs;
    out->cluster_id = b->cluster_id;
    out->from = b->from;
    out->removed = b->removed;
    out->pb = b;
    return 0;
err:
    free(out->msgs);
    free(out->ents);
    kvdb__raftpb__batch__free_unpacked(b, NULL);
    memset(out, 0, sizeof *out);
    return rv;
}

void pb_batch_free(struct pb_batch *b)
{
    if (b->pb != NULL) {
        kvdb__raftpb__batch__free_unpacked(b->pb, NULL);
    }
    free(b->msgs);
    free(b->ents);
    memset(b, 0, sizeof *b);
}
