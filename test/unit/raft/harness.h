/* A hand-driven harness for unit tests: members whose outgoing messages are captured, so a test
 * decides exactly what is delivered (etcd raft_test.go style).  Links only kv_raft. */
#ifndef KV_TEST_UNIT_RAFT_HARNESS_H
#define KV_TEST_UNIT_RAFT_HARNESS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/memstore.h"
#include "raft/raft.h"

#define H_MAX_OUT 512

struct h_node
{
    struct raft *r;
    struct raft_memstore ms;
    struct raft_config cfg;
    struct raft_msg out[H_MAX_OUT]; /* Captured messages; entries deep-copied. */
    size_t n_out;
    struct raft_msg snaps[16]; /* Captured snapshot requests. */
    size_t n_snaps;
    raft_index applied;
    struct raft_read_state reads[16];
    size_t n_reads;
};

static inline void h_free_msg(struct raft_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        free(m->entries[i].data.base);
    }
    free((void *)m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

static inline void h_clear(struct h_node *n)
{
    for (size_t i = 0; i < n->n_out; i++) {
        h_free_msg(&n->out[i]);
    }
    n->n_out = 0;
    n->n_snaps = 0;
    n->n_reads = 0;
}

static inline void h_copy_msg(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    dst->entries = NULL;
    if (src->n_entries > 0) {
        struct raft_entry *e = calloc(src->n_entries, sizeof *e);
        for (size_t i = 0; i < src->n_entries; i++) {
            e[i] = src->entries[i];
            e[i].data.base = malloc(e[i].data.len + 1);
            if (e[i].data.len > 0) {
                memcpy(e[i].data.base, src->entries[i].data.base, e[i].data.len);
            }
        }
        dst->entries = e;
    }
}

/* Handle every Ready: persist to the memstore, capture messages, count applied entries. */
static inline int h_drain(struct h_node *n)
{
    while (raft_has_ready(n->r)) {
        struct raft_ready rd;
        int rv = raft_ready(n->r, &rd);
        if (rv != 0) {
            return rv;
        }
        rv = raft_memstore_persist(&n->ms, &rd);
        if (rv != 0) {
            return rv;
        }
        for (size_t i = 0; i < rd.n_msgs && n->n_out < H_MAX_OUT; i++) {
            h_copy_msg(&n->out[n->n_out++], &rd.msgs[i]);
        }
        for (size_t i = 0; i < rd.n_snap_reqs && n->n_snaps < 16; i++) {
            n->snaps[n->n_snaps++] = rd.snap_reqs[i].msg;
        }
        for (size_t i = 0; i < rd.n_reads && n->n_reads < 16; i++) {
            n->reads[n->n_reads++] = rd.reads[i];
        }
        if (rd.snap != NULL) {
            n->applied = rd.snap->index;
        }
        if (rd.n_committed > 0) {
            n->applied = rd.committed[rd.n_committed - 1].index;
        }
        rv = raft_advance(n->r, &rd);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Member @id of a cluster of voters 1..@voters, with @cfg_in overriding defaults (may be NULL). */
static inline int h_start(struct h_node *n,
                          raft_id id,
                          unsigned voters,
                          const struct raft_config *cfg_in)
{
    struct raft_conf conf = {.n_voters = voters};
    for (unsigned i = 0; i < voters; i++) {
        conf.voters[i] = i + 1;
    }
    memset(n, 0, sizeof *n);
    raft_memstore_init(&n->ms, NULL, voters > 0 ? &conf : NULL);
    if (cfg_in != NULL) {
        n->cfg = *cfg_in;
    }
    n->cfg.id = id;
    n->cfg.storage = &n->ms.storage;
    return raft_create(&n->cfg, &n->r, NULL);
}

static inline void h_stop(struct h_node *n)
{
    h_clear(n);
    raft_destroy(n->r);
    n->r = NULL;
    raft_memstore_fini(&n->ms);
}

static inline int h_step(struct h_node *n, const struct raft_event *ev)
{
    int rv = raft_step(n->r, ev);
    int rv2 = h_drain(n);
    return rv != 0 ? rv : rv2;
}

static inline int h_recv(struct h_node *n, const struct raft_msg *m)
{
    struct raft_event ev = {.type = RAFT_EV_RECV, .u.msg = m};
    return h_step(n, &ev);
}

static inline int h_tick(struct h_node *n, unsigned k)
{
    for (unsigned i = 0; i < k; i++) {
        struct raft_event ev = {.type = RAFT_EV_TICK};
        int rv = h_step(n, &ev);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static inline int h_campaign(struct h_node *n)
{
    struct raft_event ev = {.type = RAFT_EV_CAMPAIGN};
    return h_step(n, &ev);
}

static inline int h_propose(struct h_node *n, const char *s, raft_index *index)
{
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    ev.u.propose.data.base = (void *)s;
    ev.u.propose.data.len = strlen(s);
    ev.u.propose.index = index;
    return h_step(n, &ev);
}

/* The last captured message of @type to @to (0: any), or NULL. */
static inline const struct raft_msg *h_find(const struct h_node *n,
                                            enum raft_msg_type type,
                                            raft_id to)
{
    for (size_t i = n->n_out; i > 0; i--) {
        const struct raft_msg *m = &n->out[i - 1];
        if (m->type == type && (to == 0 || m->to == to)) {
            return m;
        }
    }
    return NULL;
}

static inline size_t h_count(const struct h_node *n, enum raft_msg_type type, raft_id to)
{
    size_t k = 0;
    for (size_t i = 0; i < n->n_out; i++) {
        k += n->out[i].type == type && (to == 0 || n->out[i].to == to);
    }
    return k;
}

/* Deliver everything captured among @nodes (index i is member i + 1) until quiet. */
static inline int h_settle(struct h_node *nodes, unsigned count)
{
    for (int round = 0; round < 1000; round++) {
        bool any = false;
        for (unsigned i = 0; i < count; i++) {
            struct h_node *from = &nodes[i];
            size_t n = from->n_out;
            if (n == 0 || from->r == NULL) {
                continue;
            }
            struct raft_msg *batch = malloc(n * sizeof *batch);
            memcpy(batch, from->out, n * sizeof *batch);
            from->n_out = 0;
            for (size_t k = 0; k < n; k++) {
                raft_id to = batch[k].to;
                if (to >= 1 && to <= count && nodes[to - 1].r != NULL) {
                    int rv = h_recv(&nodes[to - 1], &batch[k]);
                    if (rv != 0) {
                        free(batch);
                        return rv;
                    }
                }
                h_free_msg(&batch[k]);
            }
            free(batch);
            any = true;
        }
        if (!any) {
            return 0;
        }
    }
    return -1;
}

#endif /* KV_TEST_UNIT_RAFT_HARNESS_H */
