/* The fault suite: while clients run random put/get/delete/cas on a few keys against an
 * embedded cluster, a nemesis kills and restarts members, isolates the leader, cuts links, slows
 * a disk, fails the leader's fsync through a failpoint, and adds and removes members.  Every
 * run ends with a linearizability check of the recorded history (test/lib/linz.h) and a check
 * that every acknowledged write is there after recovery.
 *
 * KV_TEST_SEED replays a run's choices (timing still varies); KV_NEMESIS_SECONDS sets its
 * length (default 6).  scripts/soak.sh runs it for as long as you like.  A failing history is
 * saved to /tmp/kvdb-nemesis-<seed>.hist for test_linz / kvdb-linz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "client/kvc.h"
#include "server/embed.h"
#include "server/failpoint.h"
#include "test/lib/history.h"
#include "test/lib/linz.h"
#include "test/lib/seed.h"

#define CLIENTS 4
#define KEYS 4
#define MAX_ACKED 100000

struct run
{
    struct srv_embed *c;
    char endpoints[512];
    struct test_hist hist;
    atomic_bool stop;
    uint64_t seed;
    /* acknowledged writes of unique keys: must all be there at the end */
    pthread_mutex_t ack_mu;
    char (*acked)[32];
    size_t n_acked;
    atomic_ulong ops_ok, ops_unknown, ops_failed;
    unsigned faults[8];
};

struct client
{
    struct run *r;
    uint32_t id;
    uint64_t rng;
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* An error after the request may have left: the outcome is unknown.  A server error other than
 * a timeout means it was refused. */
static bool unknown_outcome(struct kvc *k, int rv)
{
    if (rv == KVC_ESERVER) {
        return kvc_server_code(k) == KVDB__ERROR_CODE__DEADLINE_EXCEEDED;
    }
    return true;
}

static void record_result(struct client *cl,
                          struct kvc *k,
                          size_t id,
                          int rv,
                          const char *res,
                          bool succeeded)
{
    struct run *r = cl->r;
    if (rv == 0) {
        test_hist_ok(&r->hist, id, res, succeeded);
        atomic_fetch_add(&r->ops_ok, 1);
    } else if (unknown_outcome(k, rv)) {
        atomic_fetch_add(&r->ops_unknown, 1); /* left incomplete: unknown */
    } else {
        test_hist_fail(&r->hist, id);
        atomic_fetch_add(&r->ops_failed, 1);
    }
}

static void do_get(struct client *cl, struct kvc *k, const char *key)
{
    size_t id;
    test_hist_invoke(&cl->r->hist, cl->id, TEST_OP_GET, key, NULL, NULL, &id);
    Kvdb__RangeResponse *resp = NULL;
    int rv = kvc_get(k, key, strlen(key), false, &resp);
    char *val = NULL;
    if (rv == 0 && resp->n_kvs == 1) {
        /* protobuf bytes are not NUL-terminated (strndup's sanitizer check reads one past) */
        size_t n = resp->kvs[0]->value.len;
        val = malloc(n + 1);
        if (val != NULL) {
            memcpy(val, resp->kvs[0]->value.data, n);
            val[n] = '\0';
        }
    }
    if (rv == 0 || !unknown_outcome(k, rv)) {
        record_result(cl, k, id, rv, val, false);
    } else {
        test_hist_fail(&cl->r->hist, id); /* a read that got no answer changed nothing */
    }
    free(val);
    if (resp != NULL) {
        kvdb__range_response__free_unpacked(resp, NULL);
    }
}

static void do_put(struct client *cl, struct kvc *k, const char *key, const char *val)
{
    size_t id;
    test_hist_invoke(&cl->r->hist, cl->id, TEST_OP_PUT, key, val, NULL, &id);
    Kvdb__PutResponse *resp = NULL;
    int rv = kvc_put(k, key, strlen(key), val, strlen(val), &resp);
    record_result(cl, k, id, rv, NULL, false);
    if (resp != NULL) {
        kvdb__put_response__free_unpacked(resp, NULL);
    }
}

static void do_del(struct client *cl, struct kvc *k, const char *key)
{
    size_t id;
    test_hist_invoke(&cl->r->hist, cl->id, TEST_OP_DEL, key, NULL, NULL, &id);
    Kvdb__DeleteRangeResponse *resp = NULL;
    int rv = kvc_delete(k, key, strlen(key), &resp);
    record_result(cl, k, id, rv, NULL, false);
    if (resp != NULL) {
        kvdb__delete_range_response__free_unpacked(resp, NULL);
    }
}

/* cas as a txn: if value(key) == expected (version(key) == 0 for "absent") then put new. */
static void do_cas(struct client *cl,
                   struct kvc *k,
                   const char *key,
                   const char *expected,
                   const char *val)
{
    size_t id;
    test_hist_invoke(&cl->r->hist, cl->id, TEST_OP_CAS, key, val, expected, &id);
    Kvdb__Compare cmp;
    kvdb__compare__init(&cmp);
    cmp.key.data = (uint8_t *)key;
    cmp.key.len = strlen(key);
    cmp.result = KVDB__COMPARE__COMPARE_RESULT__EQUAL;
    if (expected != NULL) {
        cmp.target = KVDB__COMPARE__COMPARE_TARGET__VALUE;
        cmp.target_union_case = KVDB__COMPARE__TARGET_UNION_VALUE;
        cmp.value.data = (uint8_t *)expected;
        cmp.value.len = strlen(expected);
    } else {
        cmp.target = KVDB__COMPARE__COMPARE_TARGET__VERSION;
        cmp.target_union_case = KVDB__COMPARE__TARGET_UNION_VERSION;
        cmp.version = 0;
    }
    Kvdb__PutRequest put;
    kvdb__put_request__init(&put);
    put.key = cmp.key;
    put.value.data = (uint8_t *)val;
    put.value.len = strlen(val);
    Kvdb__RequestOp op;
    kvdb__request_op__init(&op);
    op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Kvdb__Compare *cmps[1] = {&cmp};
    Kvdb__RequestOp *ops[1] = {&op};
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.compare = cmps;
    t.n_compare = 1;
    t.success = ops;
    t.n_success = 1;
    Kvdb__TxnResponse *resp = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_TXN, &t.base, &kvdb__txn_response__descriptor,
                      (ProtobufCMessage **)&resp);
    record_result(cl, k, id, rv, NULL, rv == 0 && resp->succeeded);
    if (resp != NULL) {
        kvdb__txn_response__free_unpacked(resp, NULL);
    }
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct run *r = cl->r;
    struct kvc *k = NULL;
    char err[256];
    struct kvc_options o = {.request_timeout_ms = 3000, .dial_timeout_ms = 500};
    char last[KEYS][32] = {{0}}; /* the last value this client saw per key ("" = absent) */
    /* Each client starts at another member, so reads go through followers too. */
    char eps[1100];
    const char *p = r->endpoints;
    for (uint32_t skip = 0; skip < cl->id % 3 && strchr(p, ',') != NULL; skip++) {
        p = strchr(p, ',') + 1;
    }
    snprintf(eps, sizeof eps, "%s,%.*s", p, (int)(p - r->endpoints), r->endpoints);
    if (eps[strlen(eps) - 1] == ',') {
        eps[strlen(eps) - 1] = '\0';
    }
    unsigned seq = 0;
    while (!atomic_load(&r->stop)) {
        if (k == NULL && kvc_open(eps, &o, &k, err) != 0) {
            k = NULL;
            sleep_ms(50);
            continue;
        }
        unsigned key_i = (unsigned)(test_rand(&cl->rng) % KEYS);
        char key[16], val[32];
        snprintf(key, sizeof key, "k%u", key_i);
        snprintf(val, sizeof val, "c%u-%u", cl->id, ++seq);
        unsigned dice = (unsigned)(test_rand(&cl->rng) % 100);
        if (dice < 35) {
            do_put(cl, k, key, val);
        } else if (dice < 70) {
            do_get(cl, k, key);
        } else if (dice < 80) {
            do_del(cl, k, key);
        } else if (dice < 92) {
            do_cas(cl, k, key, last[key_i][0] != '\0' ? last[key_i] : NULL, val);
            snprintf(last[key_i], sizeof last[key_i], "%s", val);
        } else {
            /* A write-once key: if acknowledged, it must be there at the end. */
            char akey[32];
            snprintf(akey, sizeof akey, "ack/%u/%u", cl->id, seq);
            Kvdb__PutResponse *resp = NULL;
            if (kvc_put(k, akey, strlen(akey), "1", 1, &resp) == 0) {
                pthread_mutex_lock(&r->ack_mu);
                if (r->n_acked < MAX_ACKED) {
                    snprintf(r->acked[r->n_acked++], 32, "%s", akey);
                }
                pthread_mutex_unlock(&r->ack_mu);
                kvdb__put_response__free_unpacked(resp, NULL);
            }
        }
    }
    kvc_close(k);
    return NULL;
}

/* ---- the nemesis ---- */

enum fault { F_KILL, F_ISOLATE_LEADER, F_CUT_LINK, F_SLOW_DISK, F_FSYNC_FAIL, F_MEMBERSHIP };

static void nemesis_step(struct run *r, uint64_t *rng, bool *removed, unsigned *added)
{
    struct srv_embed *c = r->c;
    enum fault f = (enum fault)(test_rand(rng) % 6);
    int leader = srv_embed_wait_leader(c, 3000);
    unsigned n = 0;
    unsigned live[SRV_EMBED_MAX];
    for (unsigned i = 0; i < SRV_EMBED_MAX; i++) {
        if (!removed[i] && srv_embed_member_id(c, i) != 0) {
            live[n++] = i;
        }
    }
    unsigned victim = live[test_rand(rng) % n];
    char err[256];
    r->faults[f]++;
    switch (f) {
    case F_KILL:
        srv_embed_kill(c, victim);
        sleep_ms(200 + (unsigned)(test_rand(rng) % 600));
        srv_embed_restart(c, victim, err);
        break;
    case F_ISOLATE_LEADER:
        if (leader >= 0) {
            srv_embed_isolate(c, (unsigned)leader);
            sleep_ms(600 + (unsigned)(test_rand(rng) % 600));
            srv_embed_heal(c);
        }
        break;
    case F_CUT_LINK: {
        unsigned other = live[test_rand(rng) % n];
        srv_embed_partition(c, victim, other);
        sleep_ms(300 + (unsigned)(test_rand(rng) % 500));
        srv_embed_heal(c);
        break;
    }
    case F_SLOW_DISK:
        srv_embed_disk_delay(c, victim, 30);
        sleep_ms(500);
        srv_embed_disk_delay(c, victim, 0);
        break;
    case F_FSYNC_FAIL:
        if (leader >= 0) {
            /* The leader's next fsync fails: it stops rather than acknowledge unsynced data. */
            srv_fp_set("wal_fsync", srv_embed_member_id(c, (unsigned)leader), SRV_FP_ERROR, 100, 1,
                       0);
            for (int i = 0; i < 40 && srv_embed_is_running(c, (unsigned)leader); i++) {
                sleep_ms(25);
            }
            srv_fp_set("wal_fsync", srv_embed_member_id(c, (unsigned)leader), SRV_FP_OFF, 0, 0, 0);
            srv_embed_restart(c, (unsigned)leader, err);
        }
        break;
    case F_MEMBERSHIP:
        if (*added < 2 && n < SRV_EMBED_MAX) {
            if (srv_embed_add_member(c, test_rand(rng) % 2 == 0, err) >= 0) {
                (*added)++;
            }
        } else {
            /* Remove the newest added member that is still in: voters stay >= 3. */
            for (unsigned i = SRV_EMBED_MAX; i-- > 3;) {
                if (srv_embed_member_id(c, i) != 0 && !removed[i]) {
                    if (srv_embed_remove_member(c, i, err) == 0) {
                        removed[i] = true;
                        (*added)--;
                    }
                    break;
                }
            }
        }
        break;
    }
}

/* ---- the run ---- */

static void run_once(void **state)
{
    (void)state;
    struct run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->seed = test_seed("nemesis");
    const char *secs_env = getenv("KV_NEMESIS_SECONDS");
    unsigned secs = secs_env != NULL ? (unsigned)atoi(secs_env) : 6;
    r->acked = calloc(MAX_ACKED, sizeof *r->acked);
    assert_non_null(r->acked);
    pthread_mutex_init(&r->ack_mu, NULL);
    assert_int_equal(test_hist_init(&r->hist), 0);
    struct srv_embed_opts o = {.members = 3, .snapshot_count = 300, .snapshot_catchup = 50};
    char err[256];
    assert_int_equal(srv_embed_start(&o, &r->c, err), 0);
    assert_true(srv_embed_wait_leader(r->c, 10000) >= 0);
    snprintf(r->endpoints, sizeof r->endpoints, "%s", srv_embed_endpoints(r->c));

    pthread_t threads[CLIENTS];
    struct client clients[CLIENTS];
    for (uint32_t i = 0; i < CLIENTS; i++) {
        clients[i].r = r;
        clients[i].id = i + 1;
        clients[i].rng = r->seed * (i + 1) * 0x9e3779b97f4a7c15ull | 1;
        pthread_create(&threads[i], NULL, client_main, &clients[i]);
    }
    uint64_t rng = r->seed ^ 0xabcdef;
    bool removed[SRV_EMBED_MAX] = {false};
    unsigned added = 0;
    int64_t end = test_hist_now() + (int64_t)secs * 1000000000;
    while (test_hist_now() < end) {
        nemesis_step(r, &rng, removed, &added);
        sleep_ms(100 + (unsigned)(test_rand(&rng) % 300));
    }
    /* Recovery: heal, bring every member back, let the clients see it. */
    srv_embed_heal(r->c);
    srv_fp_clear_all();
    for (unsigned i = 0; i < SRV_EMBED_MAX; i++) {
        if (srv_embed_member_id(r->c, i) != 0 && !removed[i] && !srv_embed_is_running(r->c, i)) {
            assert_int_equal(srv_embed_restart(r->c, i, err), 0);
        }
    }
    assert_true(srv_embed_wait_leader(r->c, 15000) >= 0);
    sleep_ms(500);
    atomic_store(&r->stop, true);
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(threads[i], NULL);
    }

    /* Final reads of every key, and every acknowledged write-once key. */
    struct kvc *k;
    struct kvc_options ko = {.request_timeout_ms = 15000};
    assert_int_equal(kvc_open(srv_embed_endpoints(r->c), &ko, &k, err), 0);
    struct client fin = {.r = r, .id = 99};
    for (unsigned i = 0; i < KEYS; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%u", i);
        do_get(&fin, k, key);
    }
    uint8_t end_key[] = "ack0";
    Kvdb__RangeRequest rq;
    kvdb__range_request__init(&rq);
    rq.key.data = (uint8_t *)"ack/";
    rq.key.len = 4;
    rq.range_end.data = end_key;
    rq.range_end.len = 4;
    rq.keys_only = true;
    Kvdb__RangeResponse *rr;
    assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_RANGE, &rq.base,
                              &kvdb__range_response__descriptor, (ProtobufCMessage **)&rr),
                     0);
    size_t missing = 0;
    for (size_t a = 0; a < r->n_acked; a++) {
        bool found = false;
        for (size_t i = 0; i < rr->n_kvs && !found; i++) {
            found = rr->kvs[i]->key.len == strlen(r->acked[a]) &&
                    memcmp(rr->kvs[i]->key.data, r->acked[a], rr->kvs[i]->key.len) == 0;
        }
        if (!found) {
            fprintf(stderr, "[nemesis] acknowledged write lost: %s\n", r->acked[a]);
            missing++;
        }
    }
    kvdb__range_response__free_unpacked(rr, NULL);
    kvc_close(k);

    struct test_linz_opts lo = {.max_states = 5000000, .max_ns = 60ll * 1000000000};
    struct test_linz_result res;
    char lerr[256] = "";
    int rv = test_linz_check(&r->hist, &lo, &res, lerr);
    fprintf(stderr,
            "[nemesis] seed %llu, %u s: %lu ok, %lu unknown, %lu failed ops, %zu acked writes "
            "(%zu missing); faults kill %u isolate %u cut %u slow-disk %u fsync %u member %u; "
            "linearizability: %s (%llu states, %.1f ms)\n",
            (unsigned long long)r->seed, secs, (unsigned long)atomic_load(&r->ops_ok),
            (unsigned long)atomic_load(&r->ops_unknown), (unsigned long)atomic_load(&r->ops_failed),
            r->n_acked, missing, r->faults[F_KILL], r->faults[F_ISOLATE_LEADER],
            r->faults[F_CUT_LINK], r->faults[F_SLOW_DISK], r->faults[F_FSYNC_FAIL],
            r->faults[F_MEMBERSHIP], rv == 0 ? test_linz_verdict_str(res.verdict) : lerr,
            (unsigned long long)(rv == 0 ? res.states : 0),
            rv == 0 ? (double)res.elapsed_ns / 1e6 : 0.0);
    bool bad = rv != 0 || res.verdict == TEST_LINZ_VIOLATION || missing > 0;
    if (bad) {
        char path[128];
        snprintf(path, sizeof path, "/tmp/kvdb-nemesis-%llu.hist", (unsigned long long)r->seed);
        test_hist_save(&r->hist, path);
        if (rv == 0) {
            test_linz_result_print(&res, stderr);
        }
        fprintf(stderr, "[nemesis] history saved to %s\n", path);
    }
    if (rv == 0) {
        test_linz_result_fini(&res);
    }
    srv_embed_destroy(r->c);
    test_hist_fini(&r->hist);
    free(r->acked);
    free(r);
    assert_int_equal(rv, 0);
    assert_false(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
