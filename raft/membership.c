/* Membership changes, one server at a time (thesis 4.1-4.2): each RAFT_ENTRY_CONF carries the
 * whole new configuration, which takes effect as soon as it is appended to a log. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "raft/core.h"

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint64_t get_u64(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

size_t raft_conf_size(const struct raft_conf *c)
{
    return 8 + 8 * (size_t)(c->n_voters + c->n_learners);
}

size_t raft_conf_encode(const struct raft_conf *c, void *buf)
{
    unsigned char *p = buf;
    put_u32(p, c->n_voters);
    put_u32(p + 4, c->n_learners);
    p += 8;
    for (unsigned i = 0; i < c->n_voters; i++, p += 8) {
        put_u64(p, c->voters[i]);
    }
    for (unsigned i = 0; i < c->n_learners; i++, p += 8) {
        put_u64(p, c->learners[i]);
    }
    return raft_conf_size(c);
}

static bool has_id(const raft_id *ids, unsigned n, raft_id id)
{
    for (unsigned i = 0; i < n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

bool raft_conf_is_voter(const struct raft_conf *c, raft_id id)
{
    return has_id(c->voters, c->n_voters, id);
}

bool raft_conf_is_learner(const struct raft_conf *c, raft_id id)
{
    return has_id(c->learners, c->n_learners, id);
}

int raft_conf_decode(const void *buf, size_t len, struct raft_conf *c)
{
    const unsigned char *p = buf;
    memset(c, 0, sizeof *c);
    if (len < 8) {
        return RAFT_EINVAL;
    }
    uint64_t nv = get_u64(p, 4), nl = get_u64(p + 4, 4);
    if (nv + nl > RAFT_MAX_MEMBERS || len != 8 + 8 * (nv + nl)) {
        return RAFT_EINVAL;
    }
    p += 8;
    for (uint64_t i = 0; i < nv + nl; i++, p += 8) {
        raft_id id = get_u64(p, 8);
        if (id == 0 || raft_conf_is_voter(c, id) || raft_conf_is_learner(c, id)) {
            return RAFT_EINVAL;
        }
        if (i < nv) {
            c->voters[c->n_voters++] = id;
        } else {
            c->learners[c->n_learners++] = id;
        }
    }
    return 0;
}

static void progress_add(struct raft *r, raft_id id, bool learner)
{
    struct raft_progress *p = raft_progress_of(r, id);
    if (p != NULL) {
        p->learner = learner;
        return;
    }
    assert(r->n_prs < RAFT_MAX_MEMBERS);
    p = &r->prs[r->n_prs];
    /* The slot keeps its preallocated window (raft_create), so adding cannot fail. */
    struct raft_inflights ins = p->ins;
    memset(p, 0, sizeof *p);
    p->ins = ins;
    raft_inflights_reset(&p->ins);
    r->n_prs++;
    p->id = id;
    p->learner = learner;
    p->state = RAFT_PR_PROBE;
    p->next = raft_log_last(&r->log) + 1;
    p->match = id == r->id ? raft_log_last(&r->log) : 0;
    /* A new member counts as active so CheckQuorum gives it an election timeout to respond. */
    p->recent_active = true;
}

static void progress_remove(struct raft *r, unsigned i)
{
    /* Swap, so that both slots keep owning their windows. */
    struct raft_progress t = r->prs[i];
    r->prs[i] = r->prs[r->n_prs - 1];
    r->prs[r->n_prs - 1] = t;
    r->n_prs--;
}

/* Make @c the configuration in effect (from the entry at @index, 0 for a snapshot). */
int raft_conf_apply(struct raft *r, const struct raft_conf *c, raft_index index)
{
    for (unsigned i = 0; i < c->n_voters + c->n_learners; i++) {
        bool learner = i >= c->n_voters;
        raft_id id = learner ? c->learners[i - c->n_voters] : c->voters[i];
        progress_add(r, id, learner);
    }
    for (unsigned i = 0; i < r->n_prs;) {
        raft_id id = r->prs[i].id;
        if (!raft_conf_is_voter(c, id) && !raft_conf_is_learner(c, id)) {
            progress_remove(r, i);
        } else {
            i++;
        }
    }
    r->conf = *c;
    r->conf_index = index;
    if (r->transferee != 0 && !raft_conf_is_voter(c, r->transferee)) {
        r->transferee = 0;
    }
    raft_trace(r, "conf index=%llu voters=%u learners=%u", (unsigned long long)index, c->n_voters,
               c->n_learners);
    return 0;
}

int raft_conf_scan_appended(struct raft *r, const struct raft_entry *ents, size_t n)
{
    for (size_t i = n; i > 0; i--) {
        const struct raft_entry *e = &ents[i - 1];
        if (e->type != RAFT_ENTRY_CONF) {
            continue;
        }
        struct raft_conf c;
        if (raft_conf_decode(e->data.base, e->data.len, &c) != 0) {
            /* Only the leader's raft_conf_change() creates these: a bad one is corruption. */
            assert(!"malformed configuration entry");
            return RAFT_EINVAL;
        }
        int rv = raft_conf_apply(r, &c, e->index);
        if (rv == 0 && r->role == RAFT_LEADER) {
            /* A smaller quorum may commit more; new members get entries at once. */
            raft_maybe_commit(r);
            rv = raft_bcast_append(r);
        }
        return rv;
    }
    return 0;
}

/* The log is about to lose every entry from @before on: restore the configuration of the last
 * configuration entry before it, else the snapshot's.  Rare (conflicts), so it scans. */
/* Index of the last configuration entry in [lo, hi), or 0; decodes it into @c.  Reads in
 * chunks, newest first, since a restart scans the whole log this way. */
static int last_conf_in(struct raft *r,
                        raft_index lo,
                        raft_index hi,
                        struct raft_conf *c,
                        raft_index *found)
{
    struct raft_entry chunk[64];
    *found = 0;
    while (hi > lo) {
        raft_index from = hi - lo > 64 ? hi - 64 : lo;
        size_t got = 0;
        while (from + got < hi) { /* A storage may return a chunk in pieces. */
            size_t n;
            int rv = raft_log_slice(&r->log, from + got, hi, SIZE_MAX, chunk + got, &n);
            if (rv != 0) {
                return rv;
            }
            if (n == 0) {
                return RAFT_ESTORAGE;
            }
            got += n;
        }
        for (size_t k = got; k > 0; k--) {
            const struct raft_entry *e = &chunk[k - 1];
            if (e->type == RAFT_ENTRY_CONF) {
                *found = e->index;
                return raft_conf_decode(e->data.base, e->data.len, c);
            }
        }
        hi = from;
    }
    return 0;
}

int raft_conf_revert(struct raft *r, raft_index before)
{
    struct raft_conf c;
    raft_index at;
    int rv = last_conf_in(r, raft_log_first(&r->log), before, &c, &at);
    if (rv != 0) {
        return rv;
    }
    if (at != 0) {
        return raft_conf_apply(r, &c, at);
    }
    struct raft_snap_meta meta;
    if (r->log.has_snap) {
        meta = r->log.snap;
    } else {
        rv = r->log.st->snapshot(r->log.st->ctx, &meta);
        if (rv != 0) {
            return rv;
        }
    }
    return raft_conf_apply(r, &meta.conf, 0);
}

static int next_conf(const struct raft_conf *cur,
                     enum raft_cc_type type,
                     raft_id id,
                     struct raft_conf *out)
{
    *out = *cur;
    bool voter = raft_conf_is_voter(cur, id), learner = raft_conf_is_learner(cur, id);
    struct raft_conf c = *cur;
    out->n_voters = 0;
    out->n_learners = 0;
    for (unsigned i = 0; i < c.n_voters; i++) {
        if (c.voters[i] != id) {
            out->voters[out->n_voters++] = c.voters[i];
        }
    }
    for (unsigned i = 0; i < c.n_learners; i++) {
        if (c.learners[i] != id) {
            out->learners[out->n_learners++] = c.learners[i];
        }
    }
    switch (type) {
    case RAFT_CC_ADD_VOTER:
        if (voter) {
            return RAFT_EINVAL;
        }
        out->voters[out->n_voters++] = id;
        break;
    case RAFT_CC_ADD_LEARNER:
        if (voter || learner) {
            return RAFT_EINVAL; /* Demotion is not supported: remove, then re-add. */
        }
        out->learners[out->n_learners++] = id;
        break;
    case RAFT_CC_REMOVE:
        if (!voter && !learner) {
            return RAFT_EINVAL;
        }
        if (voter && cur->n_voters == 1) {
            return RAFT_EINVAL; /* Would leave no voter at all. */
        }
        break;
    default:
        return RAFT_EINVAL;
    }
    return out->n_voters + out->n_learners > RAFT_MAX_MEMBERS ? RAFT_ETOOBIG : 0;
}

int raft_conf_change(struct raft *r, enum raft_cc_type type, raft_id id, raft_index *index)
{
    if (id == 0) {
        return RAFT_EINVAL;
    }
    if (r->role != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    /* One change at a time, and only once this leader committed an entry of its term: the fix
     * for the single-server-change bug described on raft-dev (Ongaro, 2015). */
    if (r->conf_index > r->log.committed || !raft_committed_in_term(r) || r->transferee != 0) {
        return RAFT_EBUSY;
    }
    struct raft_conf c;
    int rv = next_conf(&r->conf, type, id, &c);
    if (rv != 0) {
        return rv;
    }
    unsigned char buf[8 + 8 * RAFT_MAX_MEMBERS];
    size_t len = raft_conf_encode(&c, buf);
    raft_trace(r, "propose conf change %s %llu",
               type == RAFT_CC_ADD_VOTER ? "add-voter"
                                         : (type == RAFT_CC_ADD_LEARNER ? "add-learner" : "remove"),
               (unsigned long long)id);
    return raft_propose_entry(r, RAFT_ENTRY_CONF, buf, len, index, NULL);
}

/* Thesis 4.2.2: a leader removed from the configuration keeps replicating until the removal
 * commits, then steps down. */
void raft_conf_maybe_step_down(struct raft *r)
{
    if (r->role == RAFT_LEADER && !raft_conf_is_voter(&r->conf, r->id) &&
        r->log.committed >= r->conf_index) {
        raft_trace(r, "step down: removed from configuration");
        raft_become_follower(r, r->term, 0);
    }
}
