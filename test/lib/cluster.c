/* The deterministic cluster fixture (see cluster.h). */
#include "test/lib/cluster.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/cluster_int.h"
#include "test/lib/seed.h"

#define NEVER UINT64_MAX

static void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        fprintf(stderr, "cluster: out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "cluster: out of memory\n");
        abort();
    }
    return p;
}

static uint64_t rnd(struct test_cluster *c, uint64_t n)
{
    return n == 0 ? 0 : test_rand(&c->rng) % n;
}

/* ---- trace ---- */

static void trace_emit(void *ctx, raft_id id, const char *line)
{
    struct test_cluster *c = ctx;
    if (!c->tracing) {
        return;
    }
    char buf[320];
    int k = snprintf(buf, sizeof buf, "[%" PRIu64 "] %" PRIu64 " %s\n", c->now, id, line);
    size_t len = (size_t)k < sizeof buf ? (size_t)k : sizeof buf - 1;
    if (c->trace_len + len + 1 > c->trace_cap) {
        c->trace_cap = (c->trace_cap + len + 1) * 2;
        c->trace = xrealloc(c->trace, c->trace_cap);
    }
    memcpy(c->trace + c->trace_len, buf, len);
    c->trace_len += len;
    c->trace[c->trace_len] = '\0';
}

void test_cluster_trace(struct test_cluster *c, bool on)
{
    c->tracing = on;
}

const char *test_cluster_trace_text(struct test_cluster *c)
{
    return c->trace != NULL ? c->trace : "";
}

void test_cluster_trace_clear(struct test_cluster *c)
{
    c->trace_len = 0;
    if (c->trace != NULL) {
        c->trace[0] = '\0';
    }
}

bool test_cluster_trace_expect(struct test_cluster *c, const char *golden)
{
    const char *got = test_cluster_trace_text(c);
    bool ok = strcmp(got, golden) == 0;
    if (!ok) {
        size_t i = 0;
        while (got[i] != '\0' && got[i] == golden[i]) {
            i++;
        }
        fprintf(stderr, "golden trace mismatch at byte %zu\n--- expected\n%s--- got\n%s---\n", i,
                golden, got);
    }
    test_cluster_trace_clear(c);
    return ok;
}

bool test_cluster_trace_has(struct test_cluster *c, const char *needle)
{
    return strstr(test_cluster_trace_text(c), needle) != NULL;
}

/* ---- network queue: binary heap on (at, seq) ---- */

static bool before(const struct test_flight *a, const struct test_flight *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void q_push(struct test_cluster *c, const struct test_flight *f)
{
    if (c->nq == c->capq) {
        c->capq = c->capq == 0 ? 256 : c->capq * 2;
        c->q = xrealloc(c->q, c->capq * sizeof *c->q);
    }
    size_t i = c->nq++;
    c->q[i] = *f;
    while (i > 0 && before(&c->q[i], &c->q[(i - 1) / 2])) {
        struct test_flight t = c->q[i];
        c->q[i] = c->q[(i - 1) / 2];
        c->q[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static struct test_flight q_pop(struct test_cluster *c)
{
    struct test_flight top = c->q[0];
    c->q[0] = c->q[--c->nq];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nq && before(&c->q[l], &c->q[m])) {
            m = l;
        }
        if (r < c->nq && before(&c->q[r], &c->q[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        struct test_flight t = c->q[i];
        c->q[i] = c->q[m];
        c->q[m] = t;
        i = m;
    }
    return top;
}

static void free_msg(struct raft_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        free(m->entries[i].data.base);
    }
    free((void *)m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

static void copy_msg(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    if (src->n_entries == 0) {
        dst->entries = NULL;
        return;
    }
    struct raft_entry *e = xmalloc(src->n_entries * sizeof *e);
    for (size_t i = 0; i < src->n_entries; i++) {
        e[i] = src->entries[i];
        e[i].data.base = xmalloc(e[i].data.len);
        if (e[i].data.len > 0) {
            memcpy(e[i].data.base, src->entries[i].data.base, e[i].data.len);
        }
    }
    dst->entries = e;
}

/* The settings of link @from -> @to: its own, or the cluster-wide ones. */
static struct test_link link_of(const struct test_cluster *c, raft_id from, raft_id to)
{
    if (from <= TEST_CLUSTER_MAX && to <= TEST_CLUSTER_MAX && c->links[from][to].set) {
        return c->links[from][to];
    }
    struct test_link l = {.set = true, .delay_min = c->delay_min, .delay_max = c->delay_max};
    l.drop_pm = c->drop_pm;
    l.dup_pm = c->dup_pm;
    return l;
}

static uint64_t latency(struct test_cluster *c, const struct test_link *l)
{
    unsigned hi = l->delay_max > l->delay_min ? l->delay_max : l->delay_min;
    return l->delay_min + rnd(c, hi - l->delay_min + 1);
}

static bool linked(const struct test_cluster *c, raft_id from, raft_id to)
{
    return from <= TEST_CLUSTER_MAX && to <= TEST_CLUSTER_MAX && !c->cut[from][to];
}

static void net_send(struct test_cluster *c, const struct raft_msg *m)
{
    struct test_link l = link_of(c, m->from, m->to);
    if (m->to == 0 || m->to > c->n || !linked(c, m->from, m->to) || rnd(c, 1000) < l.drop_pm) {
        c->dropped++;
        return;
    }
    unsigned copies = rnd(c, 1000) < l.dup_pm ? 2 : 1;
    for (unsigned k = 0; k < copies; k++) {
        struct test_flight f = {.at = c->now + latency(c, &l), .seq = c->seq++};
        copy_msg(&f.msg, m);
        q_push(c, &f);
    }
}

/* A snapshot transfer: the MsgSnap arrives after the data would have; the sender hears how it
 * went at the same time.  A lost transfer is reported as a failure. */
static void net_send_snapshot(struct test_cluster *c, const struct raft_msg *m)
{
    struct test_link l = link_of(c, m->from, m->to);
    bool ok = m->to >= 1 && m->to <= c->n && linked(c, m->from, m->to) &&
              rnd(c, 1000) >= l.drop_pm && c->nodes[m->to - 1].raft != NULL;
    uint64_t at = c->now + latency(c, &l) * 2;
    c->snaps_sent++;
    if (c->fail_snapshots > 0) {
        c->fail_snapshots--;
        ok = false;
    }
    if (ok) {
        struct test_flight f = {.at = at, .seq = c->seq++};
        copy_msg(&f.msg, m);
        q_push(c, &f);
    }
    struct test_flight rep = {.at = at + 1, .seq = c->seq++, .snap_report = true, .snap_ok = ok};
    rep.msg.to = m->from;
    rep.msg.from = m->to;
    q_push(c, &rep);
}

/* ---- ready processing ---- */
/* Thesis 10.2.1 mode: the leader sent this Ready's messages, then crashed before its fsync
 * finished, so nothing of the Ready is durable on it.  Returns true if it crashed.  Draws
 * randomness only when enabled, so other scenarios keep their streams (goldens). */
static bool maybe_crash_before_sync(struct test_cluster *c,
                                    struct test_node *n,
                                    const struct raft_ready *rd)
{
    if (!rd->can_send_before_sync || rd->n_entries == 0 || c->leader_crash_before_persist_pm == 0 ||
        rnd(c, 1000) >= c->leader_crash_before_persist_pm) {
        return false;
    }
    for (size_t i = 0; i < rd->n_msgs; i++) {
        net_send(c, &rd->msgs[i]);
    }
    c->early_crashes++;
    test_cluster_crash(c, n->id);
    return true;
}

/* Persist, check, send and apply one Ready, in the order raft.h prescribes. */
static bool handle_ready(struct test_cluster *c, struct test_node *n, const struct raft_ready *rd)
{
    int rv = raft_memstore_persist(&n->store, rd);
    if (rv != 0) {
        test_cluster_fail(c, "persist on %" PRIu64 ": %s", n->id, raft_strerror(rv));
        return false;
    }
    /* A Ready that changes only the commit index needs no fsync, and a crash may lose it. */
    if (rd->must_sync) {
        n->synced_hs = n->store.hs;
    }
    if (rd->snap != NULL) {
        test_cluster_install_snapshot(c, n, rd->snap);
    }
    if (rd->role == RAFT_LEADER) {
        test_cluster_record_leader(c, n->id, rd->hs.term);
        if (n->last_role != RAFT_LEADER) {
            test_cluster_check_leader_complete(c, n);
        }
        test_cluster_check_leader_commit(c, n, rd);
    }
    n->last_commit = rd->hs.commit;
    n->last_role = (int)rd->role;
    for (size_t i = 0; i < rd->n_msgs; i++) {
        net_send(c, &rd->msgs[i]);
    }
    for (size_t i = 0; i < rd->n_snap_reqs; i++) {
        net_send_snapshot(c, &rd->snap_reqs[i].msg);
    }
    for (size_t i = 0; i < rd->n_committed; i++) {
        test_cluster_apply_entry(c, n, &rd->committed[i]);
    }
    for (size_t i = 0; i < rd->n_reads; i++) {
        n->reads[n->n_reads % 64] = rd->reads[i];
        n->n_reads++;
    }
    return true;
}

static void drain(struct test_cluster *c, struct test_node *n)
{
    n->dirty = false;
    while (n->raft != NULL && raft_has_ready(n->raft)) {
        struct raft_ready rd;
        int rv = raft_ready(n->raft, &rd);
        if (rv != 0) {
            test_cluster_fail(c, "raft_ready on %" PRIu64 ": %s", n->id, raft_strerror(rv));
            return;
        }
        if (maybe_crash_before_sync(c, n, &rd) || !handle_ready(c, n, &rd)) {
            return;
        }
        rv = raft_advance(n->raft, &rd);
        if (rv != 0) {
            test_cluster_fail(c, "raft_advance on %" PRIu64 ": %s", n->id, raft_strerror(rv));
            return;
        }
        /* Compaction is allowed right after raft_advance() (raft.h). */
        if (c->compact_lag > 0 && n->applied > n->store.snap.index + c->compact_lag) {
            raft_memstore_compact(&n->store, n->applied, &n->applied_conf);
        }
    }
}

/* ---- lifecycle ---- */

static void start_node(struct test_cluster *c, struct test_node *n)
{
    struct raft_config cfg = {.id = n->id};
    cfg.election_tick = c->election_tick;
    cfg.heartbeat_tick = c->heartbeat_tick;
    cfg.seed = test_cluster_mix(c->rng, n->id);
    cfg.storage = &n->store.storage;
    cfg.tracer = &c->tracer;
    cfg.applied = n->store.snap.index;
    cfg.max_msg_bytes = c->max_msg_bytes;
    cfg.max_inflight_msgs = c->max_inflight_msgs;
    cfg.disable_prevote = c->disable_prevote;
    cfg.disable_check_quorum = c->disable_check_quorum;
    char err[256];
    int rv = raft_create(&cfg, &n->raft, err);
    if (rv != 0) {
        test_cluster_fail(c, "raft_create %" PRIu64 ": %s", n->id, err);
        n->raft = NULL;
        return;
    }
    n->applied = n->store.snap.index;
    n->hash = n->applied == 0 || n->applied > c->nrec ? 0 : c->rec[n->applied].cum;
    n->applied_conf = n->store.snap.conf;
    n->next_tick = c->now + 1 + n->tick_phase;
    n->synced_hs = n->store.hs;
    n->last_role = RAFT_FOLLOWER;
    n->last_commit = raft_commit_index(n->raft);
}

void test_cluster_init(struct test_cluster *c, unsigned voters, uint64_t seed)
{
    assert(voters >= 1 && voters <= TEST_CLUSTER_MAX);
    memset(c, 0, sizeof *c);
    c->rng = seed == 0 ? 1 : seed;
    c->tick_ms = 10;
    c->election_tick = 10;
    c->heartbeat_tick = 1;
    c->delay_min = 1;
    c->delay_max = 5;
    c->tracer.ctx = c;
    c->tracer.emit = trace_emit;
    struct raft_conf conf = {.n_voters = voters};
    for (unsigned i = 0; i < voters; i++) {
        conf.voters[i] = i + 1;
    }
    c->n = voters;
    for (unsigned i = 0; i < voters; i++) {
        struct test_node *n = &c->nodes[i];
        n->id = i + 1;
        n->exists = true;
        n->tick_phase = (unsigned)rnd(c, c->tick_ms);
        raft_memstore_init(&n->store, NULL, &conf);
        start_node(c, n);
    }
}

void test_cluster_add_node(struct test_cluster *c, raft_id id)
{
    assert(id >= 1 && id <= TEST_CLUSTER_MAX);
    struct test_node *n = &c->nodes[id - 1];
    assert(!n->exists);
    if (id > c->n) {
        c->n = (unsigned)id;
    }
    n->id = id;
    n->exists = true;
    n->tick_phase = (unsigned)rnd(c, c->tick_ms);
    raft_memstore_init(&n->store, NULL, NULL);
    start_node(c, n);
}

void test_cluster_fini(struct test_cluster *c)
{
    for (unsigned i = 0; i < TEST_CLUSTER_MAX; i++) {
        raft_destroy(c->nodes[i].raft);
        raft_memstore_fini(&c->nodes[i].store);
    }
    for (size_t i = 0; i < c->nq; i++) {
        free_msg(&c->q[i].msg);
    }
    free(c->q);
    free(c->rec);
    free(c->leader_of_term);
    free(c->trace);
    memset(c, 0, sizeof *c);
}

void test_cluster_crash(struct test_cluster *c, raft_id id)
{
    struct test_node *n = &c->nodes[id - 1];
    if (n->raft != NULL) {
        n->store.hs = n->synced_hs; /* Unsynced commit-index updates are lost. */
    }
    raft_destroy(n->raft);
    n->raft = NULL;
    n->dirty = false; /* Its pending Ready was never handled: nothing of it happened. */
    n->last_role = 0;
}

void test_cluster_restart(struct test_cluster *c, raft_id id)
{
    struct test_node *n = &c->nodes[id - 1];
    if (n->raft == NULL && n->exists) {
        start_node(c, n);
        drain(c, n);
    }
}

bool test_cluster_alive(const struct test_cluster *c, raft_id id)
{
    return id >= 1 && id <= c->n && c->nodes[id - 1].raft != NULL;
}

struct raft *test_cluster_raft(struct test_cluster *c, raft_id id)
{
    return test_cluster_alive(c, id) ? c->nodes[id - 1].raft : NULL;
}

void test_cluster_cut(struct test_cluster *c, raft_id from, raft_id to, bool cut)
{
    c->cut[from][to] = cut;
}

void test_cluster_link(struct test_cluster *c,
                       raft_id from,
                       raft_id to,
                       const struct test_link *link)
{
    assert(from <= TEST_CLUSTER_MAX && to <= TEST_CLUSTER_MAX);
    if (link == NULL) {
        memset(&c->links[from][to], 0, sizeof c->links[from][to]);
        return;
    }
    c->links[from][to] = *link;
    c->links[from][to].set = true;
}

void test_cluster_isolate(struct test_cluster *c, raft_id id)
{
    for (raft_id o = 1; o <= TEST_CLUSTER_MAX; o++) {
        if (o != id) {
            c->cut[id][o] = true;
            c->cut[o][id] = true;
        }
    }
}

void test_cluster_heal(struct test_cluster *c)
{
    memset(c->cut, 0, sizeof c->cut);
}

/* ---- running ---- */

/* Handle @n's Ready now, or (batch_pm) a little later so that more inputs pile up. */
static void drain_soon(struct test_cluster *c, struct test_node *n)
{
    if (c->batch_pm > 0 && rnd(c, 1000) < c->batch_pm) {
        if (!n->dirty) {
            n->dirty = true;
            n->dirty_until = c->now + rnd(c, 4);
        }
        return;
    }
    drain(c, n);
}

/* Handle the Ready of every member that waited past @before (all with NEVER). */
static bool drain_dirty(struct test_cluster *c, uint64_t before)
{
    bool any = false;
    for (unsigned i = 0; i < c->n; i++) {
        struct test_node *n = &c->nodes[i];
        if (n->dirty && (before == NEVER || n->dirty_until < before)) {
            drain(c, n);
            any = true;
        }
    }
    return any;
}

static void deliver(struct test_cluster *c, struct test_flight *f)
{
    struct test_node *n = &c->nodes[f->msg.to - 1];
    /* A snapshot report is local to the sender: the transport always reports the outcome. */
    if (n->raft == NULL || (!f->snap_report && !linked(c, f->msg.from, f->msg.to))) {
        c->dropped++;
        free_msg(&f->msg);
        return;
    }
    struct raft_event ev;
    if (f->snap_report) {
        ev.type = RAFT_EV_SNAP_STATUS;
        ev.u.snap.peer = f->msg.from;
        ev.u.snap.ok = f->snap_ok;
    } else {
        ev.type = RAFT_EV_RECV;
        ev.u.msg = &f->msg;
    }
    c->delivered++;
    int rv = raft_step(n->raft, &ev);
    free_msg(&f->msg);
    if (rv != 0) {
        test_cluster_fail(c, "raft_step on %" PRIu64 ": %s", n->id, raft_strerror(rv));
    }
    drain_soon(c, n);
}

static struct test_node *next_ticker(struct test_cluster *c)
{
    struct test_node *best = NULL;
    for (unsigned i = 0; i < c->n; i++) {
        struct test_node *n = &c->nodes[i];
        if (n->raft != NULL && (best == NULL || n->next_tick < best->next_tick)) {
            best = n;
        }
    }
    return best;
}

/* Process the earliest event if it is due by @until; false when none is. */
static bool run_one(struct test_cluster *c, uint64_t until)
{
    struct test_node *t;
    uint64_t t_tick, t_msg, at;
    do {
        t = next_ticker(c);
        t_tick = t != NULL ? t->next_tick : NEVER;
        t_msg = c->nq > 0 ? c->q[0].at : NEVER;
        at = t_msg <= t_tick ? t_msg : t_tick;
        /* Waiting Readies are handled before time moves past their deadline; that may queue
         * earlier events, so look again. */
    } while (drain_dirty(c, at > until ? until + 1 : at));
    if (at == NEVER || at > until) {
        return false;
    }
    c->now = at;
    if (t_msg <= t_tick) {
        struct test_flight f = q_pop(c);
        deliver(c, &f);
        return true;
    }
    t->next_tick += c->tick_ms;
    struct raft_event ev = {.type = RAFT_EV_TICK};
    int rv = raft_step(t->raft, &ev);
    if (rv != 0) {
        test_cluster_fail(c, "tick on %" PRIu64 ": %s", t->id, raft_strerror(rv));
    }
    drain_soon(c, t);
    return true;
}

void test_cluster_elapse(struct test_cluster *c, uint64_t ms)
{
    uint64_t until = c->now + ms;
    while (run_one(c, until)) {
    }
    drain_dirty(c, NEVER);
    c->now = until;
}

bool test_cluster_run_until(struct test_cluster *c,
                            bool (*pred)(struct test_cluster *, void *),
                            void *arg,
                            uint64_t max_ms)
{
    uint64_t until = c->now + max_ms;
    while (!pred(c, arg)) {
        if (!run_one(c, until)) {
            drain_dirty(c, NEVER);
            c->now = until;
            return pred(c, arg);
        }
    }
    return true;
}

raft_id test_cluster_leader(struct test_cluster *c)
{
    raft_id best = 0;
    raft_term bt = 0;
    for (unsigned i = 0; i < c->n; i++) {
        struct raft *r = c->nodes[i].raft;
        if (r != NULL && raft_role(r) == RAFT_LEADER && raft_term_of(r) >= bt) {
            best = c->nodes[i].id;
            bt = raft_term_of(r);
        }
    }
    return best;
}

static bool has_leader(struct test_cluster *c, void *arg)
{
    (void)arg;
    return test_cluster_leader(c) != 0;
}

raft_id test_cluster_elect(struct test_cluster *c, uint64_t max_ms)
{
    test_cluster_run_until(c, has_leader, NULL, max_ms);
    return test_cluster_leader(c);
}

int test_cluster_step(struct test_cluster *c, raft_id id, const struct raft_event *ev)
{
    struct test_node *n = &c->nodes[id - 1];
    if (n->raft == NULL) {
        return RAFT_EINVAL;
    }
    int rv = raft_step(n->raft, ev);
    drain(c, n);
    return rv;
}

int test_cluster_propose(struct test_cluster *c,
                         raft_id id,
                         const void *data,
                         size_t len,
                         raft_index *index)
{
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    ev.u.propose.data.base = (void *)data;
    ev.u.propose.data.len = len;
    ev.u.propose.index = index;
    return test_cluster_step(c, id, &ev);
}

struct applied_arg
{
    raft_id id;
    raft_index index;
};

static bool node_applied(struct test_cluster *c, void *arg)
{
    const struct applied_arg *a = arg;
    return c->nodes[a->id - 1].applied >= a->index;
}

bool test_cluster_commit(struct test_cluster *c,
                         raft_id id,
                         const void *data,
                         size_t len,
                         uint64_t max_ms)
{
    raft_index index = 0;
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    raft_term term = 0;
    ev.u.propose.data.base = (void *)data;
    ev.u.propose.data.len = len;
    ev.u.propose.index = &index;
    ev.u.propose.term = &term;
    if (test_cluster_step(c, id, &ev) != 0) {
        return false;
    }
    struct applied_arg a = {.id = id, .index = index};
    if (!test_cluster_run_until(c, node_applied, &a, max_ms)) {
        return false;
    }
    return index <= c->nrec && c->rec[index].term == term &&
           c->rec[index].data_hash == test_cluster_hash(data, len);
}

raft_index test_cluster_max_applied(const struct test_cluster *c)
{
    return c->nrec;
}
