/* Replicated alarms through embedded members (etcd's Alarm API): an alarm raised through the
 * log is listed by every member and refuses writes on every member with etcd's message, reads
 * go on, a disarm resumes writes, and the alarm survives a restart and reaches a member that
 * catches up by snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/unit/server/fixture.h"

#define NOSPACE_MSG "etcdserver: mvcc: database space exceeded"
#define CORRUPT_MSG "etcdserver: corrupt cluster"

/* An Alarm call; returns kvc_call's code and the response (when OK) in *@out (may be NULL). */
static int alarm_call(struct kvc *k,
                      Kvdb__AlarmRequest__AlarmAction action,
                      uint64_t member,
                      Kvdb__AlarmType type,
                      Kvdb__AlarmResponse **out)
{
    Kvdb__AlarmRequest r;
    kvdb__alarm_request__init(&r);
    r.action = action;
    r.memberid = member;
    r.alarm = type;
    Kvdb__AlarmResponse *resp = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_ALARM, &r.base, &kvdb__alarm_response__descriptor,
                      (ProtobufCMessage **)&resp);
    if (out != NULL) {
        *out = resp;
    } else if (resp != NULL) {
        kvdb__alarm_response__free_unpacked(resp, NULL);
    }
    return rv;
}

/* Whether member @i's AlarmList holds exactly the alarms @members/@types (@n of them). */
static bool lists(struct srv_embed *c,
                  unsigned i,
                  const uint64_t *members,
                  const Kvdb__AlarmType *types,
                  size_t n)
{
    struct kvc *k = sf_client(srv_embed_endpoint(c, i), 3000);
    Kvdb__AlarmResponse *a = NULL;
    bool same = false;
    if (alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__GET, 0, KVDB__ALARM_TYPE__NONE, &a) == 0) {
        same = a->n_alarms == n;
        for (size_t j = 0; same && j < n; j++) {
            bool found = false;
            for (size_t m = 0; m < a->n_alarms; m++) {
                found = found ||
                        (a->alarms[m]->memberid == members[j] && a->alarms[m]->alarm == types[j]);
            }
            same = found;
        }
        kvdb__alarm_response__free_unpacked(a, NULL);
    }
    kvc_close(k);
    return same;
}

/* Wait (10 s) until every running member among the first @n lists exactly those alarms. */
static void wait_listed(struct srv_embed *c,
                        unsigned n,
                        const uint64_t *members,
                        const Kvdb__AlarmType *types,
                        size_t n_alarms)
{
    for (unsigned i = 0; i < n; i++) {
        bool ok = false;
        for (int t = 0; t < 200 && !ok; t++) {
            ok = !srv_embed_is_running(c, i) || lists(c, i, members, types, n_alarms);
            if (!ok) {
                sf_sleep_ms(50);
            }
        }
        if (!ok) {
            fail_msg("member %u does not list the %zu expected alarms", i, n_alarms);
        }
    }
}

/* GET /health from endpoint @ep ("127.0.0.1:port"): the whole HTTP answer into @out. */
static void health(const char *ep, char *out, size_t cap)
{
    const char *colon = strrchr(ep, ':');
    assert_non_null(colon);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, out + len, cap - 1 - len)) > 0) {
        len += (size_t)n; /* the member closes after the answer */
    }
    out[len] = '\0';
    close(fd);
}

static int put(struct kvc *k, const char *key)
{
    Kvdb__PutResponse *r;
    int rv = kvc_put(k, key, strlen(key), "v", 1, &r);
    if (rv == 0) {
        kvdb__put_response__free_unpacked(r, NULL);
    }
    return rv;
}

/* A put on member @i's own connection must be refused with @code and @msg. */
static void assert_put_refused(struct srv_embed *c,
                               unsigned i,
                               Kvdb__ErrorCode code,
                               const char *msg)
{
    struct kvc *k = sf_client(srv_embed_endpoint(c, i), 5000);
    assert_int_equal(put(k, "refused"), KVC_ESERVER);
    assert_int_equal(kvc_server_code(k), code);
    assert_string_equal(kvc_errmsg(k), msg);
    kvc_close(k);
}

static bool exists(struct kvc *k, const char *key, bool serializable)
{
    Kvdb__RangeResponse *r;
    assert_int_equal(kvc_get(k, key, strlen(key), serializable, &r), 0);
    bool e = r->n_kvs == 1;
    kvdb__range_response__free_unpacked(r, NULL);
    return e;
}

static int txn_put(struct kvc *k, const char *key)
{
    Kvdb__PutRequest p;
    kvdb__put_request__init(&p);
    p.key.data = (uint8_t *)key;
    p.key.len = strlen(key);
    Kvdb__RequestOp op = KVDB__REQUEST_OP__INIT;
    op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &p;
    Kvdb__RequestOp *ops[1] = {&op};
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.success = ops;
    t.n_success = 1;
    return sf_call(k, KVDB__METHOD__METHOD_TXN, &t.base, &kvdb__txn_response__descriptor);
}

static int del(struct kvc *k, const char *key)
{
    Kvdb__DeleteRangeRequest d;
    kvdb__delete_range_request__init(&d);
    d.key.data = (uint8_t *)key;
    d.key.len = strlen(key);
    return sf_call(k, KVDB__METHOD__METHOD_DELETE_RANGE, &d.base,
                   &kvdb__delete_range_response__descriptor);
}

/* NOSPACE raised on one member through the log: every member lists it and refuses puts, txns
 * with a put and lease grants with etcd's message; deletes and reads (serializable and
 * linearizable, on every member) go on; a disarm resumes writes everywhere. */
static void nospace_alarm_refuses_writes_on_every_member_until_disarmed(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 10000);
    sf_put(k, "before", "1");
    uint64_t m1 = srv_embed_member_id(c, 1);
    Kvdb__AlarmType nospace = KVDB__ALARM_TYPE__NOSPACE;
    Kvdb__AlarmResponse *a = NULL;
    assert_int_equal(alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, m1, nospace, &a),
                     0);
    assert_int_equal(a->n_alarms, 1); /* etcd answers with the alarm activated */
    assert_int_equal(a->alarms[0]->memberid, m1);
    kvdb__alarm_response__free_unpacked(a, NULL);
    wait_listed(c, 3, &m1, &nospace, 1);
    char http[1024];
    health(srv_embed_endpoint(c, 0), http, sizeof http); /* etcd's: the cluster's alarms */
    assert_non_null(strstr(http, "503"));
    assert_non_null(strstr(http, "\"reason\":\"ALARM NOSPACE\""));
    for (unsigned i = 0; i < 3; i++) {
        assert_put_refused(c, i, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, NOSPACE_MSG);
        struct kvc *mk = sf_client(srv_embed_endpoint(c, i), 5000);
        assert_true(exists(mk, "before", true));
        assert_true(exists(mk, "before", false));
        assert_int_equal(txn_put(mk, "txn"), KVC_ESERVER);
        assert_int_equal(kvc_server_code(mk), KVDB__ERROR_CODE__RESOURCE_EXHAUSTED);
        kvc_close(mk);
    }
    Kvdb__LeaseGrantRequest g;
    kvdb__lease_grant_request__init(&g);
    g.ttl = 60;
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_LEASE_GRANT, &g.base,
                             &kvdb__lease_grant_response__descriptor),
                     KVC_ESERVER);
    assert_string_equal(kvc_errmsg(k), NOSPACE_MSG);
    assert_int_equal(del(k, "before"), 0); /* deletes free space: they pass */
    /* Disarm as etcdctl does: DEACTIVATE the listed alarm. */
    assert_int_equal(alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, m1, nospace, &a),
                     0);
    assert_int_equal(a->n_alarms, 1); /* the alarm deactivated */
    kvdb__alarm_response__free_unpacked(a, NULL);
    wait_listed(c, 3, NULL, NULL, 0);
    health(srv_embed_endpoint(c, 0), http, sizeof http);
    assert_non_null(strstr(http, "200 OK"));
    for (unsigned i = 0; i < 3; i++) {
        struct kvc *mk = sf_client(srv_embed_endpoint(c, i), 10000);
        assert_int_equal(put(mk, "after"), 0);
        kvc_close(mk);
    }
    sf_assert_converged(c, 3, 10000);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* Every member decides at apply as well: puts pipelined right behind the ACTIVATE on one
 * connection pass the leader's front door (its copy of the alarms is updated only once the
 * alarm applies) and are refused at apply, on every member alike: none is stored anywhere. */
static void alarm_refuses_writes_at_apply_on_every_member(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    struct kvc *k = sf_client(srv_embed_endpoint(c, (unsigned)leader), 10000);
    Kvdb__AlarmRequest r;
    kvdb__alarm_request__init(&r);
    r.action = KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    r.memberid = srv_embed_member_id(c, 0);
    r.alarm = KVDB__ALARM_TYPE__NOSPACE;
    uint64_t id;
    assert_int_equal(kvc_send(k, KVDB__METHOD__METHOD_ALARM, &r.base, &id), 0);
    enum { N = 20 };
    char key[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(key[i], sizeof key[i], "raced-%02d", i);
        Kvdb__PutRequest p;
        kvdb__put_request__init(&p);
        p.key.data = (uint8_t *)key[i];
        p.key.len = strlen(key[i]);
        assert_int_equal(kvc_send(k, KVDB__METHOD__METHOD_PUT, &p.base, &id), 0);
    }
    assert_int_equal(kvc_flush(k), 0);
    for (int i = 0; i < N + 1; i++) {
        Kvdb__ErrorCode code;
        const uint8_t *body;
        size_t len;
        assert_int_equal(kvc_recv(k, 10000, &id, &code, &body, &len), 0);
        assert_true(code == KVDB__ERROR_CODE__OK || code == KVDB__ERROR_CODE__RESOURCE_EXHAUSTED);
    }
    sf_assert_converged(c, 3, 10000);
    for (unsigned m = 0; m < 3; m++) {
        struct kvc *mk = sf_client(srv_embed_endpoint(c, m), 5000);
        for (int i = 0; i < N; i++) {
            assert_false(exists(mk, key[i], true));
        }
        kvc_close(mk);
    }
    kvc_close(k);
    srv_embed_destroy(c);
}

/* CORRUPT refuses every write (deletes too) with etcd's message; reads go on. */
static void corrupt_alarm_refuses_every_write(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 10000);
    sf_put(k, "k", "1");
    uint64_t m2 = srv_embed_member_id(c, 2);
    Kvdb__AlarmType corrupt = KVDB__ALARM_TYPE__CORRUPT;
    assert_int_equal(alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, m2, corrupt, NULL),
                     0);
    wait_listed(c, 3, &m2, &corrupt, 1);
    for (unsigned i = 0; i < 3; i++) {
        assert_put_refused(c, i, KVDB__ERROR_CODE__DATA_LOSS, CORRUPT_MSG);
    }
    assert_int_equal(del(k, "k"), KVC_ESERVER);
    assert_string_equal(kvc_errmsg(k), CORRUPT_MSG);
    assert_true(exists(k, "k", false));
    assert_int_equal(
        alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, m2, corrupt, NULL), 0);
    wait_listed(c, 3, NULL, NULL, 0);
    assert_int_equal(del(k, "k"), 0);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* The alarm is replicated state: it survives a restart of every member, and a member that joins
 * later and catches up by snapshot (the log before it was compacted) holds it and refuses
 * writes too. */
static void alarm_survives_restart_and_reaches_member_by_snapshot(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3, .snapshot_count = 20, .snapshot_catchup = 5};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 20000);
    sf_put(k, "k", "1");
    uint64_t m0 = srv_embed_member_id(c, 0);
    Kvdb__AlarmType nospace = KVDB__ALARM_TYPE__NOSPACE;
    assert_int_equal(alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, m0, nospace, NULL),
                     0);
    wait_listed(c, 3, &m0, &nospace, 1);
    char key[32];
    for (int i = 0; i < 60; i++) { /* deletes pass: entries past a snapshot and its catch-up */
        snprintf(key, sizeof key, "none-%02d", i);
        assert_int_equal(del(k, key), 0);
    }
    char err[256];
    int joined = srv_embed_add_member(c, true, err);
    if (joined < 0) {
        fail_msg("add learner: %s", err);
    }
    struct kvc *jk = sf_client(srv_embed_endpoint(c, (unsigned)joined), 10000);
    bool caught_up = false;
    for (int t = 0; t < 200 && !caught_up; t++) {
        caught_up = exists(jk, "k", true);
        if (!caught_up) {
            sf_sleep_ms(50);
        }
    }
    assert_true(caught_up);
    kvc_close(jk);
    wait_listed(c, (unsigned)joined + 1, &m0, &nospace, 1);
    assert_put_refused(c, (unsigned)joined, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, NOSPACE_MSG);
    kvc_close(k);
    for (unsigned i = 0; i <= (unsigned)joined; i++) {
        srv_embed_stop(c, i);
    }
    for (unsigned i = 0; i <= (unsigned)joined; i++) {
        if (srv_embed_restart(c, i, err) != 0) {
            fail_msg("restart %u: %s", i, err);
        }
    }
    assert_true(srv_embed_wait_leader(c, 10000) >= 0);
    wait_listed(c, (unsigned)joined + 1, &m0, &nospace, 1);
    assert_put_refused(c, 1, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, NOSPACE_MSG);
    k = sf_client(srv_embed_endpoints(c), 20000);
    assert_int_equal(
        alarm_call(k, KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, m0, nospace, NULL), 0);
    wait_listed(c, (unsigned)joined + 1, NULL, NULL, 0);
    sf_put(k, "resumed", "1");
    sf_assert_converged(c, (unsigned)joined + 1, 10000);
    kvc_close(k);
    srv_embed_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nospace_alarm_refuses_writes_on_every_member_until_disarmed),
        cmocka_unit_test(alarm_refuses_writes_at_apply_on_every_member),
        cmocka_unit_test(corrupt_alarm_refuses_every_write),
        cmocka_unit_test(alarm_survives_restart_and_reaches_member_by_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
