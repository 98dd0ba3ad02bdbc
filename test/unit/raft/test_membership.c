/* Configuration entries: take effect on append, revert on truncation, survive restarts, and
 * respect the size limit (thesis 4.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/unit/raft/harness.h"

static struct raft_entry conf_entry(raft_index index,
                                    raft_term term,
                                    const struct raft_conf *c,
                                    unsigned char *buf)
{
    struct raft_entry e = {.index = index, .term = term, .type = RAFT_ENTRY_CONF};
    e.data.base = buf;
    e.data.len = raft_conf_encode(c, buf);
    return e;
}

/* A follower adopts a configuration as soon as it appends it, and drops it again when the
 * entry is overwritten by a new leader. */
static void conf_takes_effect_on_append_and_reverts_on_truncation(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 2, 3, NULL), 0);
    struct raft_conf four = {.n_voters = 4, .voters = {1, 2, 3, 4}};
    unsigned char buf[256];
    struct raft_entry es[2] = {{.index = 1, .term = 1, .type = RAFT_ENTRY_EMPTY}};
    es[1] = conf_entry(2, 1, &four, buf);
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .commit = 1};
    app.entries = es;
    app.n_entries = 2;
    assert_int_equal(h_recv(&n, &app), 0);
    assert_int_equal(raft_conf_of(n.r)->n_voters, 4); /* Uncommitted, yet in effect. */
    /* A leader of term 2 never had it: its entry 2 replaces ours. */
    struct raft_entry repl = {.index = 2, .term = 2, .type = RAFT_ENTRY_EMPTY};
    struct raft_msg app2 = {.type = RAFT_MSG_APP, .from = 3, .to = 2, .term = 2};
    app2.index = 1;
    app2.log_term = 1;
    app2.entries = &repl;
    app2.n_entries = 1;
    assert_int_equal(h_recv(&n, &app2), 0);
    assert_int_equal(raft_memstore_get(&n.ms, 2)->term, 2);
    assert_int_equal(raft_conf_of(n.r)->n_voters, 3);
    h_stop(&n);
}

/* After a restart the configuration is the last one in the log, not the snapshot's. */
static void restart_loads_last_conf_in_log(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 2, 3, NULL), 0);
    struct raft_conf c = {.n_voters = 3, .voters = {1, 2, 3}, .n_learners = 1, .learners = {9}};
    unsigned char buf[256];
    struct raft_entry es[2] = {{.index = 1, .term = 1, .type = RAFT_ENTRY_EMPTY}};
    es[1] = conf_entry(2, 1, &c, buf);
    struct raft_msg app = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 1};
    app.entries = es;
    app.n_entries = 2;
    assert_int_equal(h_recv(&n, &app), 0);
    /* 150 more entries: the restart scan crosses several chunks. */
    struct raft_entry more[150];
    for (int i = 0; i < 150; i++) {
        more[i] = (struct raft_entry){.index = 3 + (raft_index)i, .term = 1};
        more[i].type = RAFT_ENTRY_EMPTY;
    }
    struct raft_msg app2 = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 2};
    app2.log_term = 1;
    app2.entries = more;
    app2.n_entries = 150;
    assert_int_equal(h_recv(&n, &app2), 0);
    raft_destroy(n.r);
    assert_int_equal(raft_create(&n.cfg, &n.r, NULL), 0);
    assert_int_equal(raft_last_index(n.r), 152);
    const struct raft_conf *got = raft_conf_of(n.r);
    assert_int_equal(got->n_voters, 3);
    assert_int_equal(got->n_learners, 1);
    assert_true(raft_conf_is_learner(got, 9));
    h_stop(&n);
}

static int cc(struct h_node *n, enum raft_cc_type type, raft_id id)
{
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    ev.u.cc.type = type;
    ev.u.cc.id = id;
    return h_step(n, &ev);
}

/* A single voter grows to RAFT_MAX_MEMBERS; one more is refused.  Promotion and removal of a
 * learner are single changes too. */
static void membership_is_bounded_and_validated(void **state)
{
    (void)state;
    struct h_node n;
    assert_int_equal(h_start(&n, 1, 1, NULL), 0);
    assert_int_equal(h_tick(&n, 20), 0);
    assert_int_equal(raft_role(n.r), RAFT_LEADER);
    for (raft_id id = 2; id <= RAFT_MAX_MEMBERS; id++) {
        assert_int_equal(cc(&n, RAFT_CC_ADD_LEARNER, id), 0);
    }
    assert_int_equal(cc(&n, RAFT_CC_ADD_LEARNER, 99), RAFT_ETOOBIG);
    assert_int_equal(cc(&n, RAFT_CC_ADD_LEARNER, 2), RAFT_EINVAL); /* Already a learner. */
    assert_int_equal(cc(&n, RAFT_CC_REMOVE, 99), RAFT_EINVAL);     /* Not a member. */
    assert_int_equal(cc(&n, RAFT_CC_ADD_VOTER, 0), RAFT_EINVAL);
    assert_int_equal(cc(&n, RAFT_CC_REMOVE, 3), 0);
    raft_index idx;
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    ev.u.cc.type = RAFT_CC_ADD_VOTER; /* Promote. */
    ev.u.cc.id = 2;
    ev.u.cc.index = &idx;
    assert_int_equal(h_step(&n, &ev), 0);
    const struct raft_conf *c = raft_conf_of(n.r);
    assert_int_equal(c->n_voters, 2);
    assert_int_equal(c->n_learners, RAFT_MAX_MEMBERS - 3);
    assert_false(raft_conf_is_learner(c, 2));
    /* Two voters in effect at once: the promotion itself now needs member 2, and the next
     * change waits for it. */
    assert_true(raft_commit_index(n.r) < idx);
    assert_int_equal(cc(&n, RAFT_CC_REMOVE, 5), RAFT_EBUSY);
    h_stop(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conf_takes_effect_on_append_and_reverts_on_truncation),
        cmocka_unit_test(restart_loads_last_conf_in_log),
        cmocka_unit_test(membership_is_bounded_and_validated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
