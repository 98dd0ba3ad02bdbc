/* The randomized simulator (virtraft2's invariant list, cowsql test/fuzzy): seeded chaos on the
 * cluster fixture, with every safety check of the fixture on, then healing and liveness. */
#include "test/cluster/sim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/cluster.h"
#include "test/lib/seed.h"

struct sim
{
    struct test_cluster c;
    uint64_t rng;
    uint64_t seed;
    unsigned next_id; /* Ids are never reused (etcd forbids it too). */
    unsigned proposals;
    struct sim_stats *st;
};

static uint64_t pick(struct sim *s, uint64_t n)
{
    return n == 0 ? 0 : test_rand(&s->rng) % n;
}

static raft_id random_node(struct sim *s)
{
    return 1 + pick(s, s->c.n);
}

static void propose(struct sim *s)
{
    raft_id l = test_cluster_leader(&s->c);
    if (l == 0) {
        return;
    }
    char buf[64];
    int len = snprintf(buf, sizeof buf, "seed %" PRIu64 " op %u", s->seed, s->proposals++);
    test_cluster_propose(&s->c, l, buf, (size_t)len, NULL);
}

static void conf_change(struct sim *s)
{
    raft_id l = test_cluster_leader(&s->c);
    if (l == 0) {
        return;
    }
    const struct raft_conf *conf = raft_conf_of(test_cluster_raft(&s->c, l));
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    unsigned what = (unsigned)pick(s, 4);
    if (what == 0 && s->next_id <= TEST_CLUSTER_MAX && conf->n_voters < 7) {
        ev.u.cc.type = pick(s, 2) ? RAFT_CC_ADD_VOTER : RAFT_CC_ADD_LEARNER;
        ev.u.cc.id = s->next_id++;
        test_cluster_add_node(&s->c, ev.u.cc.id);
    } else if (what == 1 && conf->n_learners > 0) {
        ev.u.cc.type = RAFT_CC_ADD_VOTER; /* Promote. */
        ev.u.cc.id = conf->learners[pick(s, conf->n_learners)];
    } else if (what == 2 && conf->n_voters > 3) {
        ev.u.cc.type = RAFT_CC_REMOVE;
        ev.u.cc.id = conf->voters[pick(s, conf->n_voters)];
    } else if (what == 3 && conf->n_learners > 0) {
        ev.u.cc.type = RAFT_CC_REMOVE;
        ev.u.cc.id = conf->learners[pick(s, conf->n_learners)];
    } else {
        return;
    }
    if (test_cluster_step(&s->c, l, &ev) == 0) {
        s->st->conf_changes++;
    }
}

static void fault_step(struct sim *s, unsigned action, raft_id id)
{
    struct test_cluster *c = &s->c;
    raft_id l = test_cluster_leader(c);
    if (action < 5) {
        if (test_cluster_alive(c, id)) {
            test_cluster_crash(c, id);
            s->st->crashes++;
        }
    } else if (action < 8) {
        /* Leaders are where the interesting histories start (Figure 8). */
        if (l != 0) {
            test_cluster_crash(c, l);
            s->st->crashes++;
        }
    } else if (action < 18) {
        test_cluster_restart(c, id);
    } else if (action < 21) {
        test_cluster_isolate(c, id);
        s->st->partitions++;
    } else if (action < 23) {
        if (l != 0) {
            test_cluster_isolate(c, l);
            s->st->partitions++;
        }
    } else if (action < 26) {
        test_cluster_cut(c, id, random_node(s), true);
        s->st->partitions++;
    } else {
        test_cluster_heal(c);
    }
}

static void chaos_step(struct sim *s)
{
    struct test_cluster *c = &s->c;
    unsigned action = (unsigned)pick(s, 100);
    raft_id id = random_node(s);
    if (action < 40) {
        propose(s);
    } else if (action < 74) {
        fault_step(s, action - 40, id);
    } else if (action < 78) {
        conf_change(s);
    } else if (action < 80) {
        raft_id l = test_cluster_leader(c);
        if (l != 0) {
            struct raft_event ev = {.type = RAFT_EV_TRANSFER, .u.peer = random_node(s)};
            if (test_cluster_step(c, l, &ev) == 0) {
                s->st->transfers++;
            }
        }
    } else if (action < 84) {
        if (test_cluster_alive(c, id)) {
            struct raft_event ev = {.type = RAFT_EV_READ_INDEX, .u.read_ctx = pick(s, 1000)};
            test_cluster_step(c, id, &ev);
            s->st->reads++;
        }
    }
    test_cluster_elapse(c, 1 + pick(s, 40));
}

static void configure(struct sim *s)
{
    struct test_cluster *c = &s->c;
    c->delay_min = 1;
    c->delay_max = 1 + (unsigned)pick(s, 30);
    c->drop_pm = pick(s, 3) == 0 ? 0 : (unsigned)pick(s, 150);
    c->dup_pm = (unsigned)pick(s, 50);
    c->compact_lag = pick(s, 2) ? 0 : 2 + pick(s, 20);
    c->max_msg_bytes = pick(s, 2) ? 0 : 1 + pick(s, 100);
    c->max_inflight_msgs = pick(s, 2) ? 0 : 1 + pick(s, 4);
    c->leader_crash_before_persist_pm = pick(s, 4) == 0 ? 1 + (unsigned)pick(s, 30) : 0;
    c->batch_pm = pick(s, 3) == 0 ? 100 + (unsigned)pick(s, 800) : 0;
    /* Some links of their own: slow, lossy or duplicating in one direction only. */
    for (unsigned k = (unsigned)pick(s, 4); k > 0; k--) {
        struct test_link l = {.delay_min = 1 + (unsigned)pick(s, 20)};
        l.delay_max = l.delay_min + (unsigned)pick(s, 60);
        l.drop_pm = (unsigned)pick(s, 300);
        l.dup_pm = (unsigned)pick(s, 100);
        test_cluster_link(c, 1 + pick(s, 5), 1 + pick(s, 5), &l);
    }
}

static bool members_caught_up(struct test_cluster *c, void *arg)
{
    raft_index want = *(const raft_index *)arg;
    raft_id l = test_cluster_leader(c);
    if (l == 0) {
        return false;
    }
    const struct raft_conf *conf = raft_conf_of(test_cluster_raft(c, l));
    for (unsigned i = 0; i < conf->n_voters + conf->n_learners; i++) {
        raft_id id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];
        if (c->nodes[id - 1].applied < want) {
            return false;
        }
    }
    return true;
}

/* After healing: a leader within bounded time, a proposal commits, everyone applies it. */
static void heal_and_check(struct sim *s)
{
    struct test_cluster *c = &s->c;
    test_cluster_heal(c);
    memset(c->links, 0, sizeof c->links);
    c->drop_pm = 0;
    c->dup_pm = 0;
    c->leader_crash_before_persist_pm = 0;
    for (raft_id id = 1; id <= c->n; id++) {
        test_cluster_restart(c, id);
    }
    raft_id l = test_cluster_elect(c, 10000);
    if (l == 0) {
        snprintf(c->failure, sizeof c->failure, "liveness: no leader 10 s after healing");
        return;
    }
    bool ok = false;
    /* A proposal can be refused (a transfer in progress) or lost with a deposed leader: retry
     * a few times, which stays bounded in virtual time. */
    for (int attempt = 0; attempt < 10 && !ok; attempt++) {
        l = test_cluster_elect(c, 10000);
        ok = l != 0 && test_cluster_commit(c, l, "final", 5, 3000);
        if (!ok) {
            test_cluster_elapse(c, 300);
        }
    }
    if (!ok) {
        if (c->failure[0] == '\0') {
            snprintf(c->failure, sizeof c->failure, "liveness: no commit after healing");
        }
        return;
    }
    raft_index want = test_cluster_max_applied(c);
    if (!test_cluster_run_until(c, members_caught_up, &want, 10000) && c->failure[0] == '\0') {
        snprintf(c->failure, sizeof c->failure,
                 "liveness: members did not all apply %" PRIu64 " within 10 s", want);
    }
    test_cluster_check_logs(c);
}

int sim_run(uint64_t seed, uint64_t chaos_ms, struct sim_stats *st, char *failure, size_t cap)
{
    static struct sim s; /* Large: keep it off the stack.  Tests run single-threaded. */
    memset(&s, 0, sizeof s);
    s.seed = seed;
    s.rng = seed == 0 ? 1 : seed;
    s.st = st;
    unsigned voters = pick(&s, 4) == 0 ? 5 : 3;
    test_cluster_init(&s.c, voters, seed ^ 0x5bd1e995u);
    configure(&s);
    /* KV_SIM_TRACE=1 prints the full trace of a failing run (use with a single seed). */
    const char *tr = getenv("KV_SIM_TRACE");
    test_cluster_trace(&s.c, tr != NULL && *tr == '1');
    s.next_id = voters + 1;
    uint64_t end = s.c.now + chaos_ms;
    while (s.c.now < end && s.c.failure[0] == '\0') {
        chaos_step(&s);
        test_cluster_check_logs(&s.c); /* Every step: the logs are short. */
    }
    if (s.c.failure[0] == '\0') {
        heal_and_check(&s);
    }
    st->committed += test_cluster_max_applied(&s.c);
    st->snapshots += s.c.snaps_installed;
    st->early_crashes += s.c.early_crashes;
    uint64_t state = s.c.nrec > 0 ? s.c.rec[s.c.nrec].cum : 0;
    st->digest = st->digest * 31 + (state ^ s.c.delivered * 0x9e3779b97f4a7c15ull ^
                                    s.c.dropped << 20 ^ s.c.now << 40 ^ s.c.nrec);
    int rv = 0;
    if (s.c.failure[0] != '\0') {
        snprintf(failure, cap, "%s", s.c.failure);
        rv = -1;
        if (s.c.tracing) {
            fputs(test_cluster_trace_text(&s.c), stderr);
        }
    }
    test_cluster_fini(&s.c);
    return rv;
}
