/* Membership through embedded members: a learner is promoted only once it is in sync with the
 * leader (etcd's isLearnerReady), and the refusal carries etcd's message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/unit/server/fixture.h"

#define NOT_IN_SYNC "etcdserver: can only promote a learner member which is in sync with leader"

static int promote(struct kvc *k, uint64_t id)
{
    Kvdb__MemberPromoteRequest r;
    kvdb__member_promote_request__init(&r);
    r.id = id;
    return sf_call(k, KVDB__METHOD__METHOD_MEMBER_PROMOTE, &r.base,
                   &kvdb__member_list_response__descriptor);
}

static bool is_learner(struct kvc *k, uint64_t id)
{
    Kvdb__MemberListRequest r;
    kvdb__member_list_request__init(&r);
    Kvdb__MemberListResponse *ml;
    assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_MEMBER_LIST, &r.base,
                              &kvdb__member_list_response__descriptor, (ProtobufCMessage **)&ml),
                     0);
    bool learner = false, found = false;
    for (size_t i = 0; i < ml->n_members; i++) {
        if (ml->members[i]->id == id) {
            found = true;
            learner = ml->members[i]->is_learner;
        }
    }
    kvdb__member_list_response__free_unpacked(ml, NULL);
    assert_true(found);
    return learner;
}

/* A learner cut off from the cluster while the leader's log grows tenfold holds well under 90%
 * of it: promoting it is refused with etcd's FailedPrecondition and message, through a client
 * whose first endpoint is a follower too.  Once its link is back and it caught up, the same
 * request promotes it. */
static void promote_refuses_a_learner_until_it_is_in_sync(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    char err[256];
    int l = srv_embed_add_member(c, true, err);
    if (l < 0) {
        fail_msg("add learner: %s", err);
    }
    uint64_t lid = srv_embed_member_id(c, (unsigned)l);
    srv_embed_isolate(c, (unsigned)l);
    /* The voters' endpoints, a follower first: the refusal is the leader's, after failover. */
    char eps[256];
    unsigned f1 = leader == 0 ? 1 : 0, f2 = 3 - (unsigned)leader - f1;
    snprintf(eps, sizeof eps, "%s,%s,%s", srv_embed_endpoint(c, f1), srv_embed_endpoint(c, f2),
             srv_embed_endpoint(c, (unsigned)leader));
    struct kvc *k = sf_client(eps, 20000);
    char key[32];
    for (int i = 0; i < 200; i++) { /* 10x the log the learner may hold (about 20 entries) */
        snprintf(key, sizeof key, "k%03d", i);
        sf_put(k, key, "v");
    }
    assert_int_equal(promote(k, lid), KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__FAILED_PRECONDITION);
    assert_string_equal(kvc_errmsg(k), NOT_IN_SYNC);
    assert_true(is_learner(k, lid));

    srv_embed_heal(c);
    int rv = KVC_ESERVER;
    for (int i = 0; i < 200 && rv != 0; i++) { /* until it caught up: 10 s at most */
        rv = promote(k, lid);
        if (rv != 0) {
            assert_int_equal(rv, KVC_ESERVER);
            assert_string_equal(kvc_errmsg(k), NOT_IN_SYNC);
            sf_sleep_ms(50);
        }
    }
    assert_int_equal(rv, 0);
    assert_false(is_learner(k, lid));
    sf_put(k, "after-promote", "1");
    kvc_close(k);
    srv_embed_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(promote_refuses_a_learner_until_it_is_in_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
