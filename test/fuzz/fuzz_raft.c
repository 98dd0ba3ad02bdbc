/* Fuzz target: event sequences into raft_step.  The input is a script of operations on a
 * 3-member cluster (test/lib/cluster.h): ticks and message delivery in virtual time, proposals,
 * crashes and restarts, partitions, loss and duplication, membership changes, transfers, reads,
 * snapshot failures.  Every message a member sees was produced by a real member, so the
 * fixture's safety invariants (election safety, log matching, leader completeness, state
 * machine safety) must hold for any input; a violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test/lib/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct script
{
    const uint8_t *p;
    size_t n;
};

static unsigned next(struct script *s)
{
    if (s->n == 0) {
        return 0;
    }
    s->n--;
    return *s->p++;
}

static raft_id member(struct test_cluster *c, struct script *s)
{
    return 1 + next(s) % c->n;
}

static void op(struct test_cluster *c, struct script *s, unsigned *next_id)
{
    unsigned code = next(s);
    raft_id id = member(c, s);
    raft_id l = test_cluster_leader(c);
    struct raft_event ev = {.type = RAFT_EV_CAMPAIGN};
    switch (code % 16) {
    case 0:
    case 1:
    case 2:
        if (l != 0) {
            uint8_t buf[8] = {(uint8_t)code, (uint8_t)id, (uint8_t)s->n};
            test_cluster_propose(c, l, buf, 1 + next(s) % 8, NULL);
        }
        break;
    case 3:
        test_cluster_crash(c, id);
        break;
    case 4:
        test_cluster_restart(c, id);
        break;
    case 5:
        test_cluster_isolate(c, id);
        break;
    case 6:
        test_cluster_cut(c, id, member(c, s), true);
        break;
    case 7:
        test_cluster_heal(c);
        break;
    case 8:
        c->drop_pm = next(s) * 2;
        c->dup_pm = next(s);
        break;
    case 9:
        if (l != 0) {
            ev.type = RAFT_EV_CONF_CHANGE;
            ev.u.cc.type = (enum raft_cc_type)(1 + next(s) % 3);
            ev.u.cc.id = next(s) % 2 && *next_id <= TEST_CLUSTER_MAX ? *next_id : id;
            if (ev.u.cc.id == *next_id) {
                test_cluster_add_node(c, (*next_id)++);
            }
            test_cluster_step(c, l, &ev);
        }
        break;
    case 10:
        if (l != 0) {
            ev.type = RAFT_EV_TRANSFER;
            ev.u.peer = id;
            test_cluster_step(c, l, &ev);
        }
        break;
    case 11:
        ev.type = RAFT_EV_READ_INDEX;
        ev.u.read_ctx = next(s);
        test_cluster_step(c, id, &ev);
        break;
    case 12:
        test_cluster_step(c, id, &ev); /* Campaign. */
        break;
    case 13:
        ev.type = RAFT_EV_UNREACHABLE;
        ev.u.peer = member(c, s);
        test_cluster_step(c, id, &ev);
        break;
    case 14:
        c->fail_snapshots = next(s) % 3;
        break;
    default:
        break;
    }
    test_cluster_elapse(c, next(s) % 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct test_cluster c; /* Large: off the stack. */
    struct script s = {.p = data, .n = size};
    unsigned flags = next(&s);
    test_cluster_init(&c, 3, 1 + next(&s));
    c.compact_lag = flags & 1 ? 2 + flags % 8 : 0;
    c.max_msg_bytes = flags & 2 ? 1 + flags % 16 : 0;
    c.max_inflight_msgs = flags & 4 ? 1 + flags % 4 : 0;
    c.delay_max = 1 + flags % 20;
    c.leader_crash_before_persist_pm = flags & 8 ? 20 : 0;
    c.batch_pm = flags & 16 ? 500 : 0;
    unsigned next_id = 4;
    for (unsigned ops = 0; s.n > 0 && ops < 128 && c.failure[0] == '\0'; ops++) {
        op(&c, &s, &next_id);
    }
    test_cluster_check_logs(&c);
    if (c.failure[0] != '\0') {
        fprintf(stderr, "fuzz_raft: invariant violated: %s\n", c.failure);
        abort();
    }
    test_cluster_fini(&c);
    return 0;
}
