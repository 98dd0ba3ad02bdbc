/* Three real members: forwarding from followers, linearizable reads on every member, and the
 * leader killed with kill -9 while a client writes (new leader, no acknowledged write lost, the
 * old leader restarts and catches up). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <signal.h>
#include <unistd.h>

#include "test/integration/fixture.h"
#include "test/integration/writer.h"
#include "test/lib/seed.h"

#define N 3

static int setup(void **state)
{
    return ih_fix_setup(state, N, NULL, 30000, true);
}

static Kvdb__StatusResponse *status(struct ih_fix *f, size_t i)
{
    Kvdb__StatusResponse *st = NULL;
    assert_int_equal(0, ih_status(f->c.m[i].client_port, 2000, &st));
    return st;
}

/* Every member reports the same cluster, leader and member list; member IDs differ. */
static void cluster_forms(void **state)
{
    struct ih_fix *f = *state;
    Kvdb__StatusResponse *st[N];
    for (size_t i = 0; i < N; i++) {
        st[i] = status(f, i);
    }
    for (size_t i = 1; i < N; i++) {
        assert_int_equal(st[i]->header->cluster_id, st[0]->header->cluster_id);
        assert_int_equal(st[i]->leader, st[0]->leader);
        assert_int_not_equal(st[i]->header->member_id, st[0]->header->member_id);
    }
    for (size_t i = 0; i < N; i++) {
        kvdb__status_response__free_unpacked(st[i], NULL);
    }
    Kvdb__MemberListRequest req;
    kvdb__member_list_request__init(&req);
    Kvdb__MemberListResponse *ml = NULL;
    assert_int_equal(0,
                     kvc_call(f->k[1], KVDB__METHOD__METHOD_MEMBER_LIST, &req.base,
                              &kvdb__member_list_response__descriptor, (ProtobufCMessage **)&ml));
    assert_int_equal(ml->n_members, N);
    kvdb__member_list_response__free_unpacked(ml, NULL);
}

/* A write sent to a follower is forwarded to the leader, and is read back from every member. */
static void follower_write_forwarded(void **state)
{
    struct ih_fix *f = *state;
    int l = ih_cluster_leader(&f->c, 10000);
    assert_true(l >= 0);
    for (size_t i = 0; i < N; i++) {
        if ((int)i == l) {
            continue;
        }
        char key[32];
        snprintf(key, sizeof key, "via-%zu", i);
        assert_true(ih_put(f->k[i], key, key) > 0);
        for (size_t j = 0; j < N; j++) {
            char v[32];
            assert_int_equal(1, ih_get(f->k[j], key, false, v, sizeof v));
            assert_string_equal(v, key);
        }
    }
}

/* Register workload: each round writes a new value through a random member and reads it
 * linearizably from every member at once: no member may return an older value. */
static void linearizable_reads_everywhere(void **state)
{
    struct ih_fix *f = *state;
    uint64_t seed = test_seed("linearizable_reads_everywhere");
    for (int round = 0; round < 60; round++) {
        char v[32], got[32];
        snprintf(v, sizeof v, "value-%d", round);
        size_t w = test_rand(&seed) % N;
        int64_t rev = ih_put(f->k[w], "register", v);
        assert_true(rev > 0);
        for (size_t j = 0; j < N; j++) {
            Kvdb__RangeResponse *g = NULL;
            assert_int_equal(0, kvc_get(f->k[j], "register", 8, false, &g));
            assert_int_equal(g->n_kvs, 1);
            assert_int_equal(g->kvs[0]->mod_revision, rev);
            memcpy(got, g->kvs[0]->value.data, g->kvs[0]->value.len);
            got[g->kvs[0]->value.len] = '\0';
            assert_string_equal(got, v);
            assert_true(g->header->revision >= rev);
            kvdb__range_response__free_unpacked(g, NULL);
        }
    }
}

/* kill -9 the leader while a client writes: a new leader takes over, writes continue, every
 * acknowledged write survives, and the old leader restarts and catches up. */
static void kill_leader(void **state)
{
    struct ih_fix *f = *state;
    int old = ih_cluster_leader(&f->c, 10000);
    assert_true(old >= 0);
    Kvdb__StatusResponse *st = status(f, (size_t)old);
    uint64_t old_id = st->leader;
    uint64_t old_term = st->raft_term;
    kvdb__status_response__free_unpacked(st, NULL);

    struct ih_writer *w = &f->w;
    assert_int_equal(0, ih_writer_start(w, &f->c, "w/", 100000, 8));
    assert_int_equal(0, ih_writer_wait_acked(w, 100, 30000));
    ih_fix_close_clients(f);
    assert_int_equal(0, ih_member_stop(&f->c, (size_t)old, SIGKILL));
    size_t before = atomic_load(&w->acked);

    int nl = ih_cluster_leader(&f->c, 30000);
    assert_true(nl >= 0);
    assert_int_not_equal(nl, old);
    st = status(f, (size_t)nl);
    assert_int_not_equal(st->leader, old_id);
    assert_true(st->raft_term > old_term);
    kvdb__status_response__free_unpacked(st, NULL);
    /* Writes continue under the new leader. */
    assert_int_equal(0, ih_writer_wait_acked(w, before + 100, 30000));

    /* The old leader comes back as a follower and catches up while the writer goes on. */
    assert_int_equal(0, ih_member_start(&f->c, (size_t)old));
    assert_int_equal(0, ih_member_wait_up(&f->c, (size_t)old, 30000));
    for (size_t i = 0; i < N; i++) {
        assert_non_null(f->k[i] = ih_client(&f->c, i, 10000));
    }
    assert_int_equal(0, ih_writer_wait_acked(w, atomic_load(&w->acked) + 50, 30000));
    ih_writer_stop(w);

    int64_t rev = ih_put(f->k[nl], "after-restart", "fresh");
    assert_true(rev > 0);
    assert_true(ih_fix_eventually_local(f, (size_t)old, "after-restart", "fresh"));
    for (size_t i = 0; i < N; i++) {
        assert_true(ih_writer_check(w, f->k[i]) >= (long)before + 150);
    }
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(cluster_forms, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(follower_write_forwarded, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_everywhere, setup, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(kill_leader, setup, ih_fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
