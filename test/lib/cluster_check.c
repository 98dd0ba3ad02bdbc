/* The cluster fixture's safety checks (see cluster.h): election safety, the commit rule,
 * leader completeness, state machine safety and log matching. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/cluster.h"
#include "test/lib/cluster_int.h"

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "cluster: out of memory\n");
        abort();
    }
    return p;
}

void test_cluster_fail(struct test_cluster *c, const char *fmt, ...)
{
    if (c->failure[0] != '\0') {
        return; /* Keep the first: later ones are usually consequences. */
    }
    int k = snprintf(c->failure, sizeof c->failure, "[%" PRIu64 "ms] ", c->now);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->failure + k, sizeof c->failure - (size_t)k, fmt, ap);
    va_end(ap);
}

uint64_t test_cluster_mix(uint64_t a, uint64_t b)
{
    uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t test_cluster_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

/* ---- invariants ---- */

void test_cluster_record_leader(struct test_cluster *c, raft_id id, raft_term term)
{
    if (term >= c->cap_terms) {
        size_t cap = c->cap_terms == 0 ? 64 : c->cap_terms;
        while (cap <= term) {
            cap *= 2;
        }
        c->leader_of_term = xrealloc(c->leader_of_term, cap * sizeof *c->leader_of_term);
        memset(c->leader_of_term + c->cap_terms, 0,
               (cap - c->cap_terms) * sizeof *c->leader_of_term);
        c->cap_terms = cap;
    }
    if (c->leader_of_term[term] != 0 && c->leader_of_term[term] != id) {
        test_cluster_fail(c, "election safety: %" PRIu64 " and %" PRIu64 " both lead term %" PRIu64,
                          c->leader_of_term[term], id, term);
    }
    c->leader_of_term[term] = id;
}

/* Leader completeness: a new leader holds every entry anyone applied (it is committed). */
void test_cluster_check_leader_complete(struct test_cluster *c, struct test_node *n)
{
    for (raft_index i = n->store.snap.index + 1; i <= c->nrec; i++) {
        const struct raft_entry *e = raft_memstore_get(&n->store, i);
        if (e == NULL || e->term != c->rec[i].term ||
            test_cluster_hash(e->data.base, e->data.len) != c->rec[i].data_hash) {
            test_cluster_fail(
                c, "leader completeness: leader %" PRIu64 " lacks committed index %" PRIu64, n->id,
                i);
            return;
        }
    }
}

/* Thesis 3.6.2: a leader advances its commit index only to an entry of its own term (entries
 * of earlier terms commit indirectly).  A leader learns commit from nobody else, so any advance
 * seen in its Ready was decided by counting. */
void test_cluster_check_leader_commit(struct test_cluster *c,
                                      struct test_node *n,
                                      const struct raft_ready *rd)
{
    if (n->last_role != RAFT_LEADER || rd->hs.commit <= n->last_commit) {
        return;
    }
    const struct raft_entry *e = raft_memstore_get(&n->store, rd->hs.commit);
    if (e != NULL && e->term != rd->hs.term) {
        test_cluster_fail(c,
                          "commit rule: leader %" PRIu64 " of term %" PRIu64
                          " committed index %" PRIu64 " of term %" PRIu64 " by counting",
                          n->id, rd->hs.term, rd->hs.commit, e->term);
    }
}

void test_cluster_apply_entry(struct test_cluster *c,
                              struct test_node *n,
                              const struct raft_entry *e)
{
    if (e->index != n->applied + 1) {
        test_cluster_fail(c, "apply order: %" PRIu64 " applied %" PRIu64 " after %" PRIu64, n->id,
                          e->index, n->applied);
        return;
    }
    uint64_t dh = test_cluster_hash(e->data.base, e->data.len);
    if (e->index <= c->nrec) {
        const struct test_rec *r = &c->rec[e->index];
        if (r->term != e->term || r->data_hash != dh) {
            test_cluster_fail(c,
                              "state machine safety: %" PRIu64
                              " applied a different entry at %" PRIu64 " (term %" PRIu64
                              " vs %" PRIu64 ")",
                              n->id, e->index, e->term, r->term);
            return;
        }
    } else {
        assert(e->index == c->nrec + 1);
        if (c->nrec + 2 > c->caprec) {
            c->caprec = c->caprec == 0 ? 1024 : c->caprec * 2;
            c->rec = xrealloc(c->rec, c->caprec * sizeof *c->rec);
        }
        uint64_t prev = c->nrec == 0 ? 0 : c->rec[c->nrec].cum;
        c->nrec++;
        c->rec[c->nrec].term = e->term;
        c->rec[c->nrec].data_hash = dh;
        c->rec[c->nrec].cum = test_cluster_mix(prev, test_cluster_mix(e->term, dh));
    }
    n->applied = e->index;
    n->hash = c->rec[e->index].cum;
    n->n_applied_total++;
    if (e->type == RAFT_ENTRY_CONF) {
        int rv = raft_conf_decode(e->data.base, e->data.len, &n->applied_conf);
        if (rv != 0) {
            test_cluster_fail(c, "bad configuration entry at %" PRIu64, e->index);
        }
    }
}

void test_cluster_install_snapshot(struct test_cluster *c,
                                   struct test_node *n,
                                   const struct raft_snap_meta *s)
{
    if (s->index > c->nrec) {
        test_cluster_fail(c, "snapshot at %" PRIu64 " beyond anything applied (%zu)", s->index,
                          c->nrec);
        return;
    }
    c->snaps_installed++;
    n->applied = s->index;
    n->hash = s->index == 0 ? 0 : c->rec[s->index].cum;
    n->applied_conf = s->conf;
}

/* Log Matching (thesis 3.5): if two logs hold an entry with the same index and term, they are
 * identical up to it. */
static void check_pair(struct test_cluster *c,
                       const struct raft_memstore *a,
                       const struct raft_memstore *b,
                       raft_id ia,
                       raft_id ib)
{
    raft_index lo = a->snap.index > b->snap.index ? a->snap.index : b->snap.index;
    raft_index la = raft_memstore_last(a), lb = raft_memstore_last(b);
    raft_index hi = la < lb ? la : lb;
    bool matched = false;
    for (raft_index i = hi; i > lo; i--) {
        const struct raft_entry *x = raft_memstore_get(a, i), *y = raft_memstore_get(b, i);
        if (!matched && x->term == y->term) {
            matched = true;
        }
        if (matched && (x->term != y->term || x->type != y->type || x->data.len != y->data.len ||
                        (x->data.len > 0 && memcmp(x->data.base, y->data.base, x->data.len)))) {
            test_cluster_fail(c,
                              "log matching: %" PRIu64 " and %" PRIu64 " differ at %" PRIu64
                              " below a matching entry",
                              ia, ib, i);
            return;
        }
    }
}

/* Committed entries never change: whatever a member's durable log holds up to its durable
 * commit index is exactly what was applied anywhere at those indexes. */
static void check_committed_prefix(struct test_cluster *c, const struct test_node *n)
{
    raft_index hi = n->store.hs.commit;
    if (hi > c->nrec) {
        hi = c->nrec;
    }
    for (raft_index i = n->store.snap.index + 1; i <= hi; i++) {
        const struct raft_entry *e = raft_memstore_get(&n->store, i);
        if (e == NULL) {
            test_cluster_fail(c, "durability: %" PRIu64 " lost committed index %" PRIu64, n->id, i);
            return;
        }
        if (e->term != c->rec[i].term ||
            test_cluster_hash(e->data.base, e->data.len) != c->rec[i].data_hash) {
            test_cluster_fail(c, "committed entry changed: %" PRIu64 " index %" PRIu64, n->id, i);
            return;
        }
    }
}

void test_cluster_check_logs(struct test_cluster *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->nodes[i].exists) {
            check_committed_prefix(c, &c->nodes[i]);
        }
    }
    for (unsigned i = 0; i < c->n; i++) {
        for (unsigned k = i + 1; k < c->n; k++) {
            if (c->nodes[i].exists && c->nodes[k].exists) {
                check_pair(c, &c->nodes[i].store, &c->nodes[k].store, i + 1, k + 1);
            }
        }
    }
}
