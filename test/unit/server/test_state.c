/* The differential apply test (issue 14): one log, applied from the start by members that were
 * there from the beginning, from a snapshot taken midway by a member that joined later, and
 * replayed from a local snapshot plus the WAL by a member killed and restarted, must give every
 * one of them the same store: the same HashKV at one revision and byte-identical replicated
 * state records (leases, auth, member registry).  The workload mixes leases, txn with compares
 * on mod revisions, auth changes and compaction, from a printed seed (KV_TEST_SEED replays it). */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <leveldb/c.h>

#include "lsm/lsm.h"
#include "test/lib/seed.h"
#include "test/unit/server/fixture.h"

#define KEYS 16
#define MAX_LEASES 32

struct load
{
    struct kvc *k;
    uint64_t rng;
    int64_t leases[MAX_LEASES];
    size_t n_leases;
    unsigned users;
    unsigned roles;
};

static uint64_t next(struct load *l)
{
    l->rng ^= l->rng << 13;
    l->rng ^= l->rng >> 7;
    l->rng ^= l->rng << 17;
    return l->rng;
}

static int call(struct load *l,
                Kvdb__Method m,
                const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *d,
                ProtobufCMessage **resp)
{
    int rv = kvc_call(l->k, m, req, d, resp);
    if (rv == KVC_EPROTO || rv == KVC_ENOMEM || rv == KVC_EINVAL || rv == KVC_EOVERFLOW) {
        fail_msg("method %d: %s: %s", (int)m, kvc_strerror(rv), kvc_errmsg(l->k));
    }
    /* A refused request (lease gone, user exists) is part of the workload, and so is a write
     * whose outcome is unknown because its member was killed: the check is the replicas'. */
    return rv;
}

static void put(struct load *l, const char *key, int64_t lease)
{
    Kvdb__PutRequest r;
    kvdb__put_request__init(&r);
    char val[32];
    snprintf(val, sizeof val, "v%" PRIu64, next(l) % 1000);
    r.key.data = (uint8_t *)key;
    r.key.len = strlen(key);
    r.value.data = (uint8_t *)val;
    r.value.len = strlen(val);
    r.lease = lease;
    ProtobufCMessage *resp = NULL;
    call(l, KVDB__METHOD__METHOD_PUT, &r.base, &kvdb__put_response__descriptor, &resp);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

static void lease_op(struct load *l, bool grant)
{
    ProtobufCMessage *resp = NULL;
    if (grant || l->n_leases == 0) {
        Kvdb__LeaseGrantRequest r;
        kvdb__lease_grant_request__init(&r);
        r.ttl = 600; /* nothing expires during the test: every lease change is in the log */
        if (call(l, KVDB__METHOD__METHOD_LEASE_GRANT, &r.base,
                 &kvdb__lease_grant_response__descriptor, &resp) == 0 &&
            l->n_leases < MAX_LEASES) {
            l->leases[l->n_leases++] = ((Kvdb__LeaseGrantResponse *)resp)->id;
        }
    } else {
        size_t i = next(l) % l->n_leases;
        Kvdb__LeaseRevokeRequest r;
        kvdb__lease_revoke_request__init(&r);
        r.id = l->leases[i];
        call(l, KVDB__METHOD__METHOD_LEASE_REVOKE, &r.base,
             &kvdb__lease_revoke_response__descriptor, &resp);
        l->leases[i] = l->leases[--l->n_leases];
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

/* A txn: if @key's mod revision is still the one just read, put it, else put another key. */
static void txn(struct load *l, const char *key)
{
    Kvdb__RangeRequest rr;
    kvdb__range_request__init(&rr);
    rr.key.data = (uint8_t *)key;
    rr.key.len = strlen(key);
    Kvdb__RangeResponse *g = NULL;
    if (call(l, KVDB__METHOD__METHOD_RANGE, &rr.base, &kvdb__range_response__descriptor,
             (ProtobufCMessage **)&g) != 0) {
        return;
    }
    int64_t mod = g->n_kvs == 1 ? g->kvs[0]->mod_revision : 0;
    kvdb__range_response__free_unpacked(g, NULL);
    Kvdb__Compare cmp;
    kvdb__compare__init(&cmp);
    cmp.result = KVDB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = KVDB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key.data = (uint8_t *)key;
    cmp.key.len = strlen(key);
    cmp.target_union_case = KVDB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = next(l) % 4 == 0 ? mod - 1 : mod; /* sometimes stale: the failure branch */
    Kvdb__PutRequest ps, pf;
    kvdb__put_request__init(&ps);
    kvdb__put_request__init(&pf);
    ps.key = cmp.key;
    ps.value.data = (uint8_t *)"txn-ok";
    ps.value.len = 6;
    pf.key.data = (uint8_t *)"txn-failed";
    pf.key.len = 10;
    pf.value = ps.value;
    Kvdb__RequestOp os, of;
    kvdb__request_op__init(&os);
    kvdb__request_op__init(&of);
    os.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    os.request_put = &ps;
    of.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    of.request_put = &pf;
    Kvdb__RequestOp *sp = &os, *fp = &of;
    Kvdb__Compare *cp = &cmp;
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.compare = &cp;
    t.n_compare = 1;
    t.success = &sp;
    t.n_success = 1;
    t.failure = &fp;
    t.n_failure = 1;
    ProtobufCMessage *resp = NULL;
    call(l, KVDB__METHOD__METHOD_TXN, &t.base, &kvdb__txn_response__descriptor, &resp);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

static void auth_op(struct load *l)
{
    Kvdb__AuthRequest r;
    kvdb__auth_request__init(&r);
    char name[16], role[16];
    Kvdb__Permission perm;
    kvdb__permission__init(&perm);
    Kvdb__Method m;
    switch (next(l) % 5) {
    case 0:
        m = KVDB__METHOD__METHOD_USER_ADD;
        snprintf(name, sizeof name, "u%u", l->users++);
        r.password = "pw";
        break;
    case 1:
        m = KVDB__METHOD__METHOD_ROLE_ADD;
        snprintf(name, sizeof name, "r%u", l->roles++);
        break;
    case 2:
        m = KVDB__METHOD__METHOD_ROLE_GRANT_PERMISSION;
        snprintf(name, sizeof name, "r%u", (unsigned)(next(l) % (l->roles + 1)));
        perm.permtype = KVDB__PERMISSION__TYPE__READWRITE;
        perm.key.data = (uint8_t *)"k";
        perm.key.len = 1;
        r.perm = &perm;
        break;
    case 3:
        m = KVDB__METHOD__METHOD_USER_GRANT_ROLE;
        snprintf(name, sizeof name, "u%u", (unsigned)(next(l) % (l->users + 1)));
        snprintf(role, sizeof role, "r%u", (unsigned)(next(l) % (l->roles + 1)));
        r.role = role;
        break;
    default:
        m = KVDB__METHOD__METHOD_USER_DELETE;
        snprintf(name, sizeof name, "u%u", (unsigned)(next(l) % (l->users + 1)));
        break;
    }
    r.name = name;
    ProtobufCMessage *resp = NULL;
    call(l, m, &r.base, &kvdb__auth_response__descriptor, &resp);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

static void step(struct load *l)
{
    char key[16];
    snprintf(key, sizeof key, "k%02u", (unsigned)(next(l) % KEYS));
    unsigned what = (unsigned)(next(l) % 100);
    if (what < 40) {
        put(l, key, 0);
    } else if (what < 55) {
        put(l, key, l->n_leases > 0 ? l->leases[next(l) % l->n_leases] : 0);
    } else if (what < 63) {
        lease_op(l, true);
    } else if (what < 68) {
        lease_op(l, false);
    } else if (what < 80) {
        txn(l, key);
    } else if (what < 88) {
        auth_op(l);
    } else if (what < 96) {
        Kvdb__DeleteRangeRequest dr;
        kvdb__delete_range_request__init(&dr);
        dr.key.data = (uint8_t *)key;
        dr.key.len = strlen(key);
        ProtobufCMessage *resp = NULL;
        call(l, KVDB__METHOD__METHOD_DELETE_RANGE, &dr.base,
             &kvdb__delete_range_response__descriptor, &resp);
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    } else {
        Kvdb__StatusRequest sr;
        kvdb__status_request__init(&sr);
        Kvdb__StatusResponse *st = NULL;
        if (call(l, KVDB__METHOD__METHOD_STATUS, &sr.base, &kvdb__status_response__descriptor,
                 (ProtobufCMessage **)&st) != 0) {
            return;
        }
        Kvdb__CompactionRequest cr;
        kvdb__compaction_request__init(&cr);
        cr.revision = st->header->revision - 5; /* keep some history */
        kvdb__status_response__free_unpacked(st, NULL);
        ProtobufCMessage *resp = NULL;
        if (cr.revision > 0) {
            call(l, KVDB__METHOD__METHOD_COMPACT, &cr.base, &kvdb__compaction_response__descriptor,
                 &resp);
        }
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
}

struct dump
{
    char *p;
    size_t len, cap;
};

static int dump_rec(void *arg, struct lsm_bytes name, struct lsm_bytes value)
{
    struct dump *d = arg;
    size_t need = d->len + name.len + value.len + 32;
    if (need > d->cap) {
        d->cap = need * 2;
        d->p = realloc(d->p, d->cap);
        assert_non_null(d->p);
    }
    d->len += (size_t)snprintf(d->p + d->len, d->cap - d->len, "%zu:", name.len);
    memcpy(d->p + d->len, name.data, name.len);
    d->len += name.len;
    d->len += (size_t)snprintf(d->p + d->len, d->cap - d->len, "=%zu:", value.len);
    memcpy(d->p + d->len, value.data, value.len);
    d->len += value.len;
    return 0;
}

/* A stopped member's store: HashKV at @rev and every state record. */
static uint32_t read_store(const char *dir, unsigned i, int64_t rev, struct dump *d)
{
    char db[600], err[256];
    snprintf(db, sizeof db, "%s/m%u/member/db", dir, i);
    struct lsm_store *s;
    if (lsm_open(db, NULL, &s, err) != 0) {
        fail_msg("open %s: %s", db, err);
    }
    uint32_t h;
    int64_t hr, cr;
    if (lsm_hash_kv(s, rev, &h, &hr, &cr, err) != 0) {
        fail_msg("hash %s at %lld: %s", db, (long long)rev, err);
    }
    struct lsm_bytes all = {"", 0};
    assert_int_equal(lsm_state_scan(s, all, dump_rec, d, err), 0);
    lsm_close(s);
    return h;
}

static void one_log_gives_one_state_by_every_path(void **state)
{
    (void)state;
    uint64_t seed = test_seed("one_log_gives_one_state_by_every_path");
    char dir[] = "/tmp/kvdb-state-XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* Snapshots every 40 entries, 5 kept behind: the member added midway catches up by one. */
    struct srv_embed_opts o = {
        .members = 3, .dir = dir, .snapshot_count = 40, .snapshot_catchup = 5};
    struct srv_embed *c = sf_start(&o, NULL);
    struct load l = {.k = sf_client(srv_embed_endpoints(c), 20000), .rng = seed};
    char err[256];
    int joined = -1;
    for (int i = 0; i < 360; i++) {
        step(&l);
        if (i == 120) {
            joined = srv_embed_add_member(c, false, err);
            if (joined < 0) {
                fail_msg("add member: %s", err);
            }
        }
        if (i == 240) {
            srv_embed_kill(c, 1);
        }
        if (i == 250 && srv_embed_restart(c, 1, err) != 0) {
            fail_msg("restart m1: %s", err);
        }
    }
    kvc_close(l.k);
    unsigned n = (unsigned)joined + 1;
    int64_t rev = sf_assert_converged(c, n, 30000);
    for (unsigned i = 0; i < n; i++) {
        srv_embed_stop(c, i);
    }
    struct dump d0 = {0};
    uint32_t h0 = read_store(dir, 0, rev, &d0);
    assert_true(d0.len > 0); /* leases, auth and the registry were written */
    for (unsigned i = 1; i < n; i++) {
        struct dump d = {0};
        uint32_t h = read_store(dir, i, rev, &d);
        if (h != h0 || d.len != d0.len || memcmp(d.p, d0.p, d.len) != 0) {
            fail_msg(
                "m%u's store differs from m0's at revision %lld (hash %08x vs %08x, state "
                "records %zu vs %zu bytes); seed %" PRIu64,
                i, (long long)rev, h, h0, d.len, d0.len, seed);
        }
        free(d.p);
    }
    printf("%u members agree at revision %lld: hash %08x, %zu bytes of state records\n", n,
           (long long)rev, h0, d0.len);
    free(d0.p);
    srv_embed_destroy(c);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Plant a current record for @key straight into a stopped member's LevelDB (meta: revisions 1,
 * version 1, no lease; sub 0): readable data the log never wrote, so its HashKV differs. */
static void plant_key(const char *dir, unsigned i, const char *key)
{
    char db[600];
    snprintf(db, sizeof db, "%s/m%u/member/db", dir, i);
    leveldb_options_t *o = leveldb_options_create();
    char *err = NULL;
    leveldb_t *l = leveldb_open(o, db, &err);
    if (err != NULL) {
        fail_msg("open %s: %s", db, err);
    }
    char k[64], v[64];
    size_t kl = (size_t)snprintf(k, sizeof k, "c%s", key);
    memset(v, 0, sizeof v);
    v[0] = 1;  /* create revision */
    v[8] = 1;  /* mod revision */
    v[16] = 1; /* version */
    memcpy(v + 36, "planted", 7);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, 1);
    leveldb_put(l, wo, k, kl, v, 43, &err);
    assert_null(err);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(l);
    leveldb_options_destroy(o);
}

static bool has_corrupt_alarm(struct kvc *k, uint64_t member)
{
    Kvdb__AlarmRequest r;
    kvdb__alarm_request__init(&r);
    r.action = KVDB__ALARM_REQUEST__ALARM_ACTION__GET;
    Kvdb__AlarmResponse *resp = NULL;
    if (kvc_call(k, KVDB__METHOD__METHOD_ALARM, &r.base, &kvdb__alarm_response__descriptor,
                 (ProtobufCMessage **)&resp) != 0) {
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < resp->n_alarms; i++) {
        found = found || (resp->alarms[i]->memberid == member &&
                          resp->alarms[i]->alarm == KVDB__ALARM_TYPE__CORRUPT);
    }
    kvdb__alarm_response__free_unpacked(resp, NULL);
    return found;
}

static bool wait_corrupt_alarm(struct kvc *k, uint64_t member, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 100) {
        if (has_corrupt_alarm(k, member)) {
            return true;
        }
        sf_sleep_ms(100);
    }
    return false;
}

/* A member whose store holds data the log never wrote is named by the corruption check: at its
 * start (its own report against the others'), and again by the periodic check after the alarm
 * is disarmed; the CORRUPT alarm refuses writes on every member. */
static void a_member_holding_other_data_is_named_corrupt(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-corrupt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct srv_embed_opts o = {.members = 3, .dir = dir, .corrupt_check_ms = 1000};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "key%02d", i);
        sf_put(k, key, "v");
    }
    sf_assert_converged(c, 3, 20000);
    /* Rounds so far found nothing. */
    for (unsigned i = 0; i < 3; i++) {
        assert_false(has_corrupt_alarm(k, srv_embed_member_id(c, i)));
    }
    srv_embed_stop(c, 2);
    plant_key(dir, 2, "planted");
    char err[256];
    if (srv_embed_restart(c, 2, err) != 0) {
        fail_msg("restart m2: %s", err);
    }
    uint64_t bad = srv_embed_member_id(c, 2);
    assert_true(wait_corrupt_alarm(k, bad, 15000));
    for (unsigned i = 0; i < 2; i++) {
        assert_false(has_corrupt_alarm(k, srv_embed_member_id(c, i)));
    }
    /* Writes are refused on every member. */
    for (unsigned i = 0; i < 3; i++) {
        struct kvc *mk = sf_client(srv_embed_endpoint(c, i), 5000);
        Kvdb__PutResponse *pr = NULL;
        assert_int_equal(kvc_put(mk, "after", 5, "x", 1, &pr), KVC_ESERVER);
        assert_non_null(strstr(kvc_errmsg(mk), "corrupt"));
        kvc_close(mk);
    }
    /* Disarmed: the periodic check (every second on the leader) names it again. */
    Kvdb__AlarmRequest r;
    kvdb__alarm_request__init(&r);
    r.action = KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE;
    r.memberid = bad;
    r.alarm = KVDB__ALARM_TYPE__CORRUPT;
    assert_int_equal(
        sf_call(k, KVDB__METHOD__METHOD_ALARM, &r.base, &kvdb__alarm_response__descriptor), 0);
    assert_true(wait_corrupt_alarm(k, bad, 15000));
    kvc_close(k);
    srv_embed_destroy(c);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_log_gives_one_state_by_every_path),
        cmocka_unit_test(a_member_holding_other_data_is_named_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
