/* Linearizability of a register on a real 3-member cluster: concurrent clients write unique
 * values and read linearizably through different members while the leader is killed with
 * kill -9 and restarted, or paused (SIGSTOP) and resumed; the recorded history must be
 * linearizable (test/lib/linz.h, the checker the embedded nemesis uses too; its own tests are
 * unit_linz_*), and a mutated copy of it must not be. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "test/integration/harness.h"
#include "test/lib/linz.h"
#include "test/lib/seed.h"

#define N 3
#define CLIENTS 4
#define OPS_PER_CLIENT 120

/* ---- the real cluster ---- */

struct client
{
    size_t idx;
    char endpoints[IH_MAX_MEMBERS * 64]; /* rotated so that clients start on different members */
    uint64_t seed;
    struct test_hist *hist; /* shared by the clients (it locks) */
    atomic_size_t done;     /* ops attempted, for the nemesis to pace itself */
    pthread_t thread;
};

/* Run one op and record it: a write that was never sent failed; one with any other error
 * (timeout, lost connection, DEADLINE_EXCEEDED) may have run and stays unknown. */
static void one_op(struct client *cl, struct kvc *k, uint64_t seq)
{
    size_t id;
    int rv;
    if (test_rand(&cl->seed) % 2 == 0) {
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)((uint64_t)(cl->idx + 1) << 32 | seq));
        assert_int_equal(
            0, test_hist_invoke(cl->hist, (uint32_t)cl->idx, TEST_OP_PUT, "reg", v, NULL, &id));
        Kvdb__PutResponse *r = NULL;
        rv = kvc_put(k, "reg", 3, v, strlen(v), &r);
        if (rv == 0) {
            kvdb__put_response__free_unpacked(r, NULL);
            test_hist_ok(cl->hist, id, NULL, false);
        } else if (rv == KVC_ECONNECT) {
            test_hist_fail(cl->hist, id);
        }
        return;
    }
    assert_int_equal(
        0, test_hist_invoke(cl->hist, (uint32_t)cl->idx, TEST_OP_GET, "reg", NULL, NULL, &id));
    Kvdb__RangeResponse *r = NULL;
    rv = kvc_get(k, "reg", 3, false, &r);
    if (rv != 0) {
        test_hist_fail(cl->hist, id); /* a failed read has no effect */
        return;
    }
    char v[32] = "";
    if (r->n_kvs > 0) {
        size_t len = r->kvs[0]->value.len < 31 ? r->kvs[0]->value.len : 31;
        memcpy(v, r->kvs[0]->value.data, len);
    }
    test_hist_ok(cl->hist, id, r->n_kvs > 0 ? v : NULL, false);
    kvdb__range_response__free_unpacked(r, NULL);
}

static void *client_run(void *arg)
{
    struct client *cl = arg;
    struct kvc_options o = {.dial_timeout_ms = 500, .request_timeout_ms = 5000};
    struct kvc *k = NULL;
    char err[256];
    for (uint64_t seq = 1; seq <= OPS_PER_CLIENT; seq++) {
        if (k == NULL && kvc_open(cl->endpoints, &o, &k, err) != 0) {
            k = NULL;
            ih_sleep_ms(50);
        } else {
            one_op(cl, k, seq);
        }
        atomic_store(&cl->done, (size_t)seq);
    }
    kvc_close(k);
    return NULL;
}

struct fix
{
    struct ih_cluster c;
    struct client cl[CLIENTS];
    struct test_hist hist;
    bool started;
};

static int setup(void **state);

static int setup_try(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    *state = f;
    if (f == NULL || test_hist_init(&f->hist) != 0 || ih_cluster_init(&f->c, N, NULL) != 0 ||
        ih_cluster_start(&f->c, 30000) != 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    if (f == NULL) {
        return 0;
    }
    for (size_t i = 0; f->started && i < CLIENTS; i++) {
        pthread_join(f->cl[i].thread, NULL);
    }
    int rv = ih_cluster_stop(&f->c); /* a crashed or leaking member fails the test */
    ih_cluster_destroy(&f->c);
    test_hist_fini(&f->hist);
    free(f);
    return rv;
}

/* cmocka skips the teardown when the setup fails: clean up here (members, temp dir, memory). */
static int setup(void **state)
{
    if (setup_try(state) != 0) {
        teardown(state);
        *state = NULL;
        return -1;
    }
    return 0;
}

static size_t total_done(struct fix *f)
{
    size_t n = 0;
    for (size_t i = 0; i < CLIENTS; i++) {
        n += atomic_load(&f->cl[i].done);
    }
    return n;
}

static void start_clients(struct fix *f, uint64_t seed)
{
    for (size_t i = 0; i < CLIENTS; i++) {
        struct client *cl = &f->cl[i];
        cl->idx = i;
        cl->seed = seed + i * 0x9e3779b97f4a7c15ull;
        cl->hist = &f->hist;
        size_t off = 0;
        for (size_t j = 0; j < N; j++) {
            off += (size_t)snprintf(cl->endpoints + off, sizeof cl->endpoints - off, "%s%s",
                                    j > 0 ? "," : "", f->c.m[(i + j) % N].endpoint);
        }
    }
    for (size_t i = 0; i < CLIENTS; i++) {
        assert_int_equal(0, pthread_create(&f->cl[i].thread, NULL, client_run, &f->cl[i]));
    }
    f->started = true;
}

/* @quiet: a violation is the expected answer (the mutated copy): do not print it. */
static enum test_linz_verdict verdict(struct test_hist *h, bool quiet)
{
    struct test_linz_opts budget = {.max_states = 20000000, .max_ns = 60000000000};
    struct test_linz_result r;
    char err[TEST_LINZ_ERRMSG_SIZE] = "";
    assert_int_equal(0, test_linz_check(h, &budget, &r, err));
    enum test_linz_verdict v = r.verdict;
    if (v != TEST_LINZ_OK && !quiet) {
        test_linz_result_print(&r, stderr);
    }
    test_linz_result_fini(&r);
    return v;
}

/* The history must be linearizable, and the checker must reject a mutated copy. */
static void check_history(struct fix *f)
{
    struct test_hist *h = &f->hist;
    size_t writes = 0, unknown = 0, failed = 0;
    for (size_t i = 0; i < h->n_ops; i++) {
        writes += h->ops[i].kind == TEST_OP_PUT;
        unknown += h->ops[i].outcome == TEST_OUT_UNKNOWN;
        failed += h->ops[i].outcome == TEST_OUT_FAILED;
    }
    fprintf(stderr, "[integ] history: %zu ops (%zu writes, %zu unknown, %zu failed)\n", h->n_ops,
            writes, unknown, failed);
    assert_true(h->n_ops - failed >= CLIENTS * OPS_PER_CLIENT / 2); /* most were served */
    if (verdict(h, false) != TEST_LINZ_OK) {
        test_hist_save(h, "/tmp/kvdb-integ-linearizable.hist");
        fail_msg(
            "not linearizable; history saved to /tmp/kvdb-integ-linearizable.hist "
            "(kvdb-linz re-checks it)");
    }

    /* The checker is not vacuous on this very history: a read that saw a value although a
     * write had completed before it started, made to see the initial value (absent) instead,
     * must be rejected (no deletes: the register never becomes absent again). */
    int64_t first_write_done = INT64_MAX;
    for (size_t i = 0; i < h->n_ops; i++) {
        const struct test_op *op = &h->ops[i];
        if (op->kind == TEST_OP_PUT && op->outcome == TEST_OUT_OK &&
            op->ret_ns < first_write_done) {
            first_write_done = op->ret_ns;
        }
    }
    size_t victim = h->n_ops;
    for (size_t i = 0; i < h->n_ops && victim == h->n_ops; i++) {
        const struct test_op *op = &h->ops[i];
        if (op->kind == TEST_OP_GET && op->outcome == TEST_OUT_OK &&
            op->call_ns > first_write_done) {
            victim = i;
        }
    }
    assert_true(victim < h->n_ops);
    free(h->ops[victim].result);
    h->ops[victim].result = NULL;
    assert_int_equal(TEST_LINZ_VIOLATION, verdict(h, true));
}

/* Wait until the members other than @old agree on a leader that is not @old. */
static bool new_leader_elsewhere(struct fix *f, size_t old)
{
    Kvdb__StatusResponse *st = NULL;
    assert_int_equal(0, ih_status(f->c.m[(old + 1) % N].client_port, 2000, &st));
    uint64_t old_id = st->leader;
    kvdb__status_response__free_unpacked(st, NULL);
    uint64_t deadline = ih_now_ms() + 30000;
    while (ih_now_ms() < deadline) {
        uint64_t seen[N] = {0};
        bool agree = true;
        for (size_t i = 0; i < N; i++) {
            if (i == old || ih_status(f->c.m[i].client_port, 500, &st) != 0) {
                continue;
            }
            seen[i] = st->leader;
            kvdb__status_response__free_unpacked(st, NULL);
        }
        uint64_t first = seen[(old + 1) % N];
        for (size_t i = 0; i < N; i++) {
            agree = agree && (i == old || (seen[i] == first && first != 0 && first != old_id));
        }
        if (agree) {
            return true;
        }
        ih_sleep_ms(50);
    }
    return false;
}

/* Wait until the clients have attempted @n ops in all (or 90 s passed). */
static void wait_progress(struct fix *f, size_t n)
{
    uint64_t deadline = ih_now_ms() + 90000;
    while (total_done(f) < n && ih_now_ms() < deadline) {
        ih_sleep_ms(5);
    }
}

static void join_clients(struct fix *f)
{
    for (size_t i = 0; i < CLIENTS; i++) {
        pthread_join(f->cl[i].thread, NULL);
    }
    f->started = false;
}

/* kill -9 the leader (or a follower) a third of the way through, restart it at two thirds. */
static void kill_and_restart(struct fix *f, const char *name, bool leader)
{
    start_clients(f, test_seed(name));
    wait_progress(f, CLIENTS * OPS_PER_CLIENT / 3);
    int l = ih_cluster_leader(&f->c, 10000);
    assert_true(l >= 0);
    size_t victim = leader ? (size_t)l : (size_t)(l + 1) % N;
    assert_int_equal(0, ih_member_stop(&f->c, victim, SIGKILL));
    wait_progress(f, 2 * CLIENTS * OPS_PER_CLIENT / 3);
    assert_int_equal(0, ih_member_start(&f->c, victim));
    join_clients(f);
    check_history(f);
    assert_int_equal(0, ih_member_wait_up(&f->c, victim, 30000));
}

static void register_linearizable_across_leader_kill(void **state)
{
    kill_and_restart(*state, "register_linearizable_across_leader_kill", true);
}

/* Clients on the killed follower fail over; the restarted follower serves linearizable reads
 * again only once it caught up. */
static void register_linearizable_across_follower_kill(void **state)
{
    kill_and_restart(*state, "register_linearizable_across_follower_kill", false);
}

/* Regression: with the leader paused by SIGSTOP until the others elect a new one, then
 * resumed, a MsgApp from the new leader stepped while the old leader's Ready was in flight
 * truncated the conflicting unstable tail and freed entries the Ready still pointed at
 * (heap-use-after-free under ASan, freed bytes sent to peers in a release build).  Truncated
 * entries now live until raft_advance() (raft/log.c raft_log_reap). */
static void register_linearizable_across_leader_pause(void **state)
{
    struct fix *f = *state;
    start_clients(f, test_seed("register_linearizable_across_leader_pause"));
    for (size_t k = 1; k <= 5; k++) {
        /* A paused leader (a long GC or VM pause) wakes up still believing it leads, with
         * proposals of its old term in flight: it must not answer reads from stale state, and
         * must give way to the new leader's log.  Resume it as soon as the others elected. */
        wait_progress(f, k * CLIENTS * OPS_PER_CLIENT / 6);
        int l = ih_cluster_leader(&f->c, 10000);
        assert_true(l >= 0);
        ih_member_signal(&f->c, (size_t)l, SIGSTOP);
        bool elected = new_leader_elsewhere(f, (size_t)l);
        ih_member_signal(&f->c, (size_t)l, SIGCONT);
        assert_true(elected);
    }
    join_clients(f);
    check_history(f);
    for (size_t i = 0; i < N; i++) {
        assert_true(ih_member_is_alive(&f->c, i));
    }
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(register_linearizable_across_leader_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(register_linearizable_across_follower_kill, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(register_linearizable_across_leader_pause, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
