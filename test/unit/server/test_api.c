/* Client API behaviours across faults, through embedded members: watch ordering and exactly-once
 * delivery across a leader change, lease expiry across a leader change, and the Kubernetes
 * compactor race (tools/compactor.c) with 3 clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>

#include "test/unit/server/fixture.h"
#include "tools/compactor.h"

enum { TIMEOUT_MS = 20000 }; /* the clients' request timeout */

/* A watcher on a follower sees every write of the run once and in order, while the leader is
 * killed in the middle. */
static void watch_exactly_once_across_leader_change(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    unsigned follower = ((unsigned)leader + 1) % 3, other = ((unsigned)leader + 2) % 3;
    struct kvc *w = sf_client(srv_embed_endpoint(c, follower), TIMEOUT_MS);
    sf_watch(w, "w/", "w0", 0, false, false);

    /* Writes through the member that is neither leader nor the watcher's. */
    char eps[128];
    snprintf(eps, sizeof eps, "%s,%s", srv_embed_endpoint(c, other),
             srv_embed_endpoint(c, follower));
    struct kvc *k = sf_client(eps, TIMEOUT_MS);
    enum { N = 60 };
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "w/%03d", i);
        sf_put(k, key, "v");
        if (i == N / 2) {
            srv_embed_kill(c, (unsigned)leader);
            assert_true(srv_embed_wait_leader(c, 10000) >= 0);
        }
    }
    uint64_t stream;
    Kvdb__WatchResponse *wr;
    int seen = 0;
    int64_t last_rev = 0;
    while (seen < N) {
        int rv = kvc_watch_next(w, 10000, &stream, &wr);
        if (rv != 0) {
            fail_msg("watch: %s after %d events", kvc_strerror(rv), seen);
        }
        assert_false(wr->canceled);
        for (size_t i = 0; i < wr->n_events; i++, seen++) {
            snprintf(key, sizeof key, "w/%03d", seen);
            assert_int_equal(wr->events[i]->kv->key.len, strlen(key));
            assert_memory_equal(wr->events[i]->kv->key.data, key, strlen(key));
            assert_true(wr->events[i]->kv->mod_revision > last_rev);
            last_rev = wr->events[i]->kv->mod_revision;
        }
        kvdb__watch_response__free_unpacked(wr, NULL);
    }
    /* No duplicate trails behind. */
    assert_int_equal(kvc_watch_next(w, 500, &stream, &wr), KVC_ETIMEOUT);
    kvc_close(w);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A lease that nobody keeps alive expires even though its leader died: the new leader
 * gives it a full TTL, then revokes it. */
static void lease_expires_across_leader_change(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    struct kvc *k = sf_client(srv_embed_endpoints(c), TIMEOUT_MS);
    Kvdb__LeaseGrantRequest g;
    kvdb__lease_grant_request__init(&g);
    g.ttl = 2;
    Kvdb__LeaseGrantResponse *gr;
    assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_LEASE_GRANT, &g.base,
                              &kvdb__lease_grant_response__descriptor, (ProtobufCMessage **)&gr),
                     0);
    Kvdb__PutRequest p;
    kvdb__put_request__init(&p);
    p.key.data = (uint8_t *)"ephemeral";
    p.key.len = 9;
    p.value.data = (uint8_t *)"x";
    p.value.len = 1;
    p.lease = gr->id;
    kvdb__lease_grant_response__free_unpacked(gr, NULL);
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_PUT, &p.base, &kvdb__put_response__descriptor),
                     0);
    srv_embed_kill(c, (unsigned)leader);
    assert_true(srv_embed_wait_leader(c, 10000) >= 0);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) {
        sf_sleep_ms(100);
        Kvdb__RangeResponse *rr;
        if (kvc_get(k, "ephemeral", 9, false, &rr) == 0) {
            gone = rr->n_kvs == 0;
            kvdb__range_response__free_unpacked(rr, NULL);
        }
    }
    assert_true(gone);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* ---- the compactor race ---- */

struct racer
{
    const char *eps;
    pthread_barrier_t *barrier;
    int rounds;
    int wins[8];
    int64_t compacted[8];
    int errors;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct kvc *k;
    char err[256];
    struct kvc_options o = {.request_timeout_ms = TIMEOUT_MS};
    if (kvc_open(r->eps, &o, &k, err) != 0) {
        r->errors++;
    }
    int64_t version = 0;
    for (int i = 0; i < r->rounds; i++) {
        pthread_barrier_wait(r->barrier);
        int64_t compacted = 0;
        int won = k != NULL ? compactor_round(k, &version, &compacted) : -1;
        r->wins[i] = won == 1;
        r->compacted[i] = compacted;
        r->errors += won < 0;
        pthread_barrier_wait(r->barrier);
    }
    kvc_close(k);
    return NULL;
}

static void compactor_race_compacts_once_per_round(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), TIMEOUT_MS);
    enum { RACERS = 3, ROUNDS = 5 };
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, RACERS + 1);
    struct racer racers[RACERS];
    pthread_t t[RACERS];
    for (int i = 0; i < RACERS; i++) {
        memset(&racers[i], 0, sizeof racers[i]);
        racers[i].eps = srv_embed_endpoint(c, (unsigned)i);
        racers[i].barrier = &barrier;
        racers[i].rounds = ROUNDS;
        pthread_create(&t[i], NULL, race, &racers[i]);
    }
    char key[16];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < 10; i++) { /* writes between compactions */
            snprintf(key, sizeof key, "data/%d", i);
            sf_put(k, key, "v");
        }
        pthread_barrier_wait(&barrier); /* go */
        pthread_barrier_wait(&barrier); /* round done */
        int wins = 0;
        for (int i = 0; i < RACERS; i++) {
            wins += racers[i].wins[round];
        }
        assert_int_equal(wins, 1); /* exactly one compaction per interval */
    }
    int compactions = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(racers[i].errors, 0);
        for (int r = 0; r < ROUNDS; r++) {
            compactions += racers[i].compacted[r] > 0;
        }
    }
    assert_int_equal(compactions, ROUNDS - 1); /* the first round only sets the key */
    /* History before the last compaction is gone. */
    Kvdb__RangeRequest rq;
    kvdb__range_request__init(&rq);
    rq.key.data = (uint8_t *)"data/0";
    rq.key.len = 6;
    rq.revision = 2;
    assert_int_equal(
        sf_call(k, KVDB__METHOD__METHOD_RANGE, &rq.base, &kvdb__range_response__descriptor),
        KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__OUT_OF_RANGE);
    pthread_barrier_destroy(&barrier);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* The NOSPACE alarm: over the quota, puts are refused (deletes and compaction still pass);
 * deleting and compacting brings the store back under the quota, and once the alarm is
 * disarmed (etcd: it stays until then) writes pass again. */
static void quota_exceeded_and_cleared(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1, .quota_bytes = 256 * 1024};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), TIMEOUT_MS);
    char key[32], val[1024];
    /* Letters that do not compress away (with snappy tables a run of one byte would fit the
     * quota after compaction whether or not the removed versions were reclaimed). */
    uint32_t x = 2463534242u;
    for (size_t i = 0; i + 1 < sizeof val; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        val[i] = (char)('a' + x % 26);
    }
    val[sizeof val - 1] = '\0';
    bool refused = false;
    for (int i = 0; i < 2000 && !refused; i++) {
        snprintf(key, sizeof key, "big/%04d", i);
        Kvdb__PutResponse *r;
        int rv = kvc_put(k, key, strlen(key), val, strlen(val), &r);
        if (rv == 0) {
            kvdb__put_response__free_unpacked(r, NULL);
        } else {
            assert_int_equal(rv, KVC_ESERVER);
            assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__RESOURCE_EXHAUSTED);
            assert_string_equal(kvc_errmsg(k), "etcdserver: mvcc: database space exceeded");
            refused = true;
        }
        if (i % 50 == 49) {
            sf_sleep_ms(600); /* the quota is checked twice a second */
        }
    }
    assert_true(refused);
    /* Free space: delete everything, compact at the current revision. */
    Kvdb__DeleteRangeRequest d;
    kvdb__delete_range_request__init(&d);
    d.key.data = (uint8_t *)"big/";
    d.key.len = 4;
    d.range_end.data = (uint8_t *)"big0";
    d.range_end.len = 4;
    Kvdb__DeleteRangeResponse *dr;
    assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_DELETE_RANGE, &d.base,
                              &kvdb__delete_range_response__descriptor, (ProtobufCMessage **)&dr),
                     0);
    int64_t rev = dr->header->revision;
    kvdb__delete_range_response__free_unpacked(dr, NULL);
    Kvdb__CompactionRequest cr;
    kvdb__compaction_request__init(&cr);
    cr.revision = rev;
    assert_int_equal(
        sf_call(k, KVDB__METHOD__METHOD_COMPACT, &cr.base, &kvdb__compaction_response__descriptor),
        0);
    /* Disarm (DEACTIVATE every NOSPACE alarm) until a put passes: while the store is still
     * over the quota, the next check raises the alarm again. */
    bool cleared = false;
    for (int i = 0; i < 100 && !cleared; i++) {
        sf_sleep_ms(200);
        Kvdb__AlarmRequest ar;
        kvdb__alarm_request__init(&ar);
        ar.action = KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
        ar.alarm = KVDB__ALARM_TYPE__NOSPACE;
        assert_int_equal(
            sf_call(k, KVDB__METHOD__METHOD_ALARM, &ar.base, &kvdb__alarm_response__descriptor), 0);
        Kvdb__PutResponse *r;
        if (kvc_put(k, "after", 5, "ok", 2, &r) == 0) {
            kvdb__put_response__free_unpacked(r, NULL);
            cleared = true;
        }
    }
    assert_true(cleared);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* How many members the MemberList of member @via shows with the client URL they serve on. */
static size_t listed_client_urls(struct srv_embed *c, unsigned via, unsigned members)
{
    struct kvc *k = sf_client(srv_embed_endpoint(c, via), 5000);
    Kvdb__MemberListRequest lr;
    kvdb__member_list_request__init(&lr);
    Kvdb__MemberListResponse *ml = NULL;
    size_t right = 0;
    if (kvc_call(k, KVDB__METHOD__METHOD_MEMBER_LIST, &lr.base,
                 &kvdb__member_list_response__descriptor, (ProtobufCMessage **)&ml) == 0) {
        for (size_t i = 0; i < ml->n_members; i++) {
            for (unsigned m = 0; m < members; m++) {
                char want[64];
                snprintf(want, sizeof want, "http://%s", srv_embed_endpoint(c, m));
                right += ml->members[i]->id == srv_embed_member_id(c, m) &&
                         ml->members[i]->n_client_urls == 1 &&
                         strcmp(ml->members[i]->client_urls[0], want) == 0;
            }
        }
        kvdb__member_list_response__free_unpacked(ml, NULL);
    }
    kvc_close(k);
    return right;
}

/* Each member publishes its client URL through raft (etcd's publish), so every member lists
 * every member's, and keeps them across a restart. */
static void member_list_shows_every_client_url(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    for (unsigned via = 0; via < 3; via++) {
        size_t n = 0;
        for (int i = 0; i < 100 && (n = listed_client_urls(c, via, 3)) < 3; i++) {
            sf_sleep_ms(50);
        }
        assert_int_equal(n, 3);
    }
    char err[256];
    srv_embed_stop(c, 1);
    assert_int_equal(srv_embed_restart(c, 1, err), 0);
    assert_true(srv_embed_wait_leader(c, 10000) >= 0);
    assert_int_equal(listed_client_urls(c, 1, 3), 3); /* from its registry file at once */
    srv_embed_destroy(c);
}

/* Membership and maintenance methods, success and error paths: member add (bad URL, duplicate),
 * promote (not a learner, unknown), update, remove (unknown), move-leader (not a voter, then to
 * a voter), HashKV equal on every member. */
static void membership_and_maintenance_paths(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), TIMEOUT_MS);
    sf_put(k, "a", "1");
    char err[256];

    Kvdb__MemberAddRequest add;
    kvdb__member_add_request__init(&add);
    char *bad[1] = {"not a url"};
    add.peer_urls = bad;
    add.n_peer_urls = 1;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_ADD, &add.base,
                             &kvdb__member_add_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__INVALID_ARGUMENT);

    /* A learner joins (embedding helper), cannot be promoted twice, then is promoted. */
    int l = srv_embed_add_member(c, true, err);
    assert_true(l >= 0);
    uint64_t lid = srv_embed_member_id(c, (unsigned)l);
    Kvdb__MemberPromoteRequest pr;
    kvdb__member_promote_request__init(&pr);
    pr.id = 12345;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_PROMOTE, &pr.base,
                             &kvdb__member_list_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__NOT_FOUND);
    pr.id = srv_embed_member_id(c, 0);
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_PROMOTE, &pr.base,
                             &kvdb__member_list_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__FAILED_PRECONDITION);
    pr.id = lid;
    int rv = KVC_ESERVER;
    for (int i = 0; i < 50 && rv != 0; i++) { /* it may still be catching up */
        rv = sf_call(k, KVDB__METHOD__METHOD_MEMBER_PROMOTE, &pr.base,
                     &kvdb__member_list_response__descriptor);
        if (rv != 0) {
            sf_sleep_ms(100);
        }
    }
    assert_int_equal(rv, 0);

    /* Adding the same peer URL again is refused. */
    char url[64];
    Kvdb__MemberListRequest lr;
    kvdb__member_list_request__init(&lr);
    Kvdb__MemberListResponse *ml;
    assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_MEMBER_LIST, &lr.base,
                              &kvdb__member_list_response__descriptor, (ProtobufCMessage **)&ml),
                     0);
    assert_int_equal(ml->n_members, 4);
    for (size_t i = 0; i < ml->n_members; i++) {
        if (ml->members[i]->id == lid) {
            snprintf(url, sizeof url, "%s", ml->members[i]->peer_urls[0]);
            assert_false(ml->members[i]->is_learner);
        }
    }
    kvdb__member_list_response__free_unpacked(ml, NULL);
    char *dup[1] = {url};
    add.peer_urls = dup;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_ADD, &add.base,
                             &kvdb__member_add_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__FAILED_PRECONDITION);

    /* Update keeps its URL (same address: a no-op change through the log). */
    Kvdb__MemberUpdateRequest up;
    kvdb__member_update_request__init(&up);
    up.id = lid;
    up.peer_urls = dup;
    up.n_peer_urls = 1;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_UPDATE, &up.base,
                             &kvdb__member_list_response__descriptor),
                     0);
    up.id = 999;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_UPDATE, &up.base,
                             &kvdb__member_list_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__NOT_FOUND);

    /* Remove of an unknown member. */
    Kvdb__MemberRemoveRequest rm;
    kvdb__member_remove_request__init(&rm);
    rm.id = 999;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_REMOVE, &rm.base,
                             &kvdb__member_list_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__NOT_FOUND);

    /* Move-leader: to a non-member is refused; to the promoted member works. */
    Kvdb__MoveLeaderRequest mv;
    kvdb__move_leader_request__init(&mv);
    mv.targetid = 999;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MOVE_LEADER, &mv.base,
                             &kvdb__move_leader_response__descriptor),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__INVALID_ARGUMENT);
    mv.targetid = lid;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MOVE_LEADER, &mv.base,
                             &kvdb__move_leader_response__descriptor),
                     0);
    assert_int_equal(srv_embed_wait_leader(c, 10000), l);

    /* Every member's keyspace hashes the same at the same revision (a member still catching
     * up answers "future revision" for a while). */
    Kvdb__PutResponse *pb;
    assert_int_equal(kvc_put(k, "b", 1, "2", 1, &pb), 0);
    int64_t rev_b = pb->header->revision;
    kvdb__put_response__free_unpacked(pb, NULL);
    uint32_t first = 0;
    for (unsigned m = 0; m < 4; m++) {
        struct kvc *mk = sf_client(srv_embed_endpoint(c, m), TIMEOUT_MS);
        Kvdb__HashKVRequest hr;
        kvdb__hash_kvrequest__init(&hr);
        hr.revision = rev_b;
        Kvdb__HashKVResponse *h = NULL;
        for (int i = 0; i < 100 && h == NULL; i++) {
            if (kvc_call(mk, KVDB__METHOD__METHOD_HASH_KV, &hr.base,
                         &kvdb__hash_kvresponse__descriptor, (ProtobufCMessage **)&h) != 0) {
                h = NULL;
                sf_sleep_ms(50);
            }
        }
        assert_non_null(h);
        assert_true(h->hash_revision == rev_b);
        if (m == 0) {
            first = h->hash;
        }
        assert_int_equal(h->hash, first);
        kvdb__hash_kvresponse__free_unpacked(h, NULL);
        kvc_close(mk);
    }
    kvc_close(k);
    srv_embed_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(watch_exactly_once_across_leader_change),
        cmocka_unit_test(lease_expires_across_leader_change),
        cmocka_unit_test(compactor_race_compacts_once_per_round),
        cmocka_unit_test(quota_exceeded_and_cleared),
        cmocka_unit_test(membership_and_maintenance_paths),
        cmocka_unit_test(member_list_shows_every_client_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
