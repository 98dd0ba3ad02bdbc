/* The checker on seeded random histories: generated from a real sequential execution they must
 * pass; with one answer mutated, every mutation that provably breaks linearizability must be
 * caught, and the window must contain the mutated op.  Plus a timing printout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/lib/history.h"
#include "test/lib/linz.h"
#include "test/lib/seed.h"
#include "test/unit/linz/gen.h"

/* Rounds are multiplied by this (--scale=N: the slow-labelled soak). */
static int scale = 1;

/* A random shape: a few clients and keys, sometimes heavy overlap, some unknown and failed. */
static struct gen_opts random_opts(uint64_t *seed)
{
    struct gen_opts o = {
        .clients = 1 + (uint32_t)(test_rand(seed) % 8),
        .keys = 1 + (uint32_t)(test_rand(seed) % 4),
        .ops = 20 + test_rand(seed) % 300,
        /* Usually a few unknown ops, sometimes a lot (a partitioned cluster's timeouts). */
        .unknown_pct =
            (unsigned)(test_rand(seed) % 4 == 0 ? test_rand(seed) % 30 : test_rand(seed) % 4),
        .failed_pct = (unsigned)(test_rand(seed) % 5),
        .max_gap = 1 + (int64_t)(test_rand(seed) % 1000),
    };
    o.max_dur = (int64_t)(test_rand(seed) % 4000);
    return o;
}

/* Keep a history that surprised us, for `kvdb-linz <file>`. */
static void keep(struct test_hist *h, const char *what, uint64_t seed)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/linz-%s-%llu.hist", what, (unsigned long long)seed);
    if (test_hist_save(h, path) == 0) {
        fprintf(stderr, "history kept in %s\n", path);
    }
}

/* A budget so that a search blow-up fails the test with the history kept, instead of eating
 * the machine. */
static enum test_linz_verdict check(struct test_hist *h, struct test_linz_result *r)
{
    const struct test_linz_opts budget = {.max_states = 2000000, .max_ns = 20000000000};
    char err[TEST_LINZ_ERRMSG_SIZE];
    assert_int_equal(test_linz_check(h, &budget, r, err), 0);
    if (r->verdict == TEST_LINZ_GAVE_UP) {
        test_linz_result_print(r, stderr);
        keep(h, "gave-up", (uint64_t)h->n_ops);
        fail_msg("checker gave up");
    }
    return r->verdict;
}

static void generated_histories_are_linearizable(void **state)
{
    (void)state;
    uint64_t seed = test_seed("generated_histories_are_linearizable");
    for (int round = 0; round < 150 * scale; round++) {
        uint64_t round_seed = seed;
        struct gen_opts o = random_opts(&seed);
        struct test_hist h;
        test_hist_init(&h);
        assert_int_equal(gen_history(&h, &o, &seed), 0);
        struct test_linz_result r;
        if (check(&h, &r) != TEST_LINZ_OK) {
            test_linz_result_print(&r, stderr);
            keep(&h, "generated", round_seed);
        }
        assert_int_equal(r.verdict, TEST_LINZ_OK);
        test_linz_result_fini(&r);
        test_hist_fini(&h);
    }
}

/* Counters of the mutation campaign. */
struct tally
{
    unsigned tried, provable, detected, detected_unprovable;
};

/* Mutate op @i's answer; returns whether the mutation is a provable violation, or -1 if this
 * op cannot be mutated.  The old answer is saved into *old_result / *old_succeeded. */
static int mutate(struct test_hist *h, size_t i, uint64_t *seed)
{
    struct test_op *op = &h->ops[i];
    if (op->outcome != TEST_OUT_OK || (op->kind != TEST_OP_GET && op->kind != TEST_OP_CAS)) {
        return -1;
    }
    if (op->kind == TEST_OP_CAS) {
        const char *stable;
        op->succeeded = !op->succeeded;
        return gen_stable_value(h, i, &stable);
    }
    /* A value never written, absent, or the value of a random write to the key. */
    const char *v = "never-written";
    uint64_t r = test_rand(seed) % 4;
    if (r == 1) {
        v = NULL;
    } else if (r >= 2) {
        const struct test_op *w = &h->ops[test_rand(seed) % h->n_ops];
        if (strcmp(w->key, op->key) != 0 || w->value == NULL) {
            return -1;
        }
        v = w->value;
    }
    if ((v == NULL && op->result == NULL) ||
        (v != NULL && op->result != NULL && strcmp(v, op->result) == 0)) {
        return -1;
    }
    int provable = gen_get_violates(h, i, v);
    free(op->result);
    op->result = v == NULL ? NULL : strdup(v);
    return provable;
}

/* The window of a violation caused by one mutated op must hold that op as a known op: any
 * window without it is a window of the original, linearizable history (minus reads, which
 * keeps it linearizable).  The exception is a cas flipped to "failed": to the window it is a
 * read, and the reads that saw its value may carry the proof alone. */
static void assert_window_has(const struct test_linz_result *r, const struct test_op *m)
{
    assert_string_equal(r->key, m->key);
    for (size_t i = 0; i < r->n_window; i++) {
        const struct test_op *w = &r->window[i].op;
        if (w->client == m->client && w->call_ns == m->call_ns && w->kind == m->kind) {
            assert_false(r->window[i].as_unknown);
            return;
        }
    }
    if (m->kind != TEST_OP_CAS || m->succeeded) {
        fail_msg("mutated op not in the failing window");
    }
}

static void one_mutation(struct test_hist *h, size_t i, uint64_t *seed, struct tally *t)
{
    struct test_op saved = h->ops[i];
    char *old = saved.result == NULL ? NULL : strdup(saved.result);
    int provable = mutate(h, i, seed);
    if (provable < 0) {
        free(old);
        return;
    }
    t->tried++;
    t->provable += (unsigned)provable;
    struct test_linz_result r;
    enum test_linz_verdict v = check(h, &r);
    if (provable && v != TEST_LINZ_VIOLATION) {
        keep(h, "missed", *seed);
        fail_msg("provable violation at op %zu not detected", i);
    }
    if (v == TEST_LINZ_VIOLATION) {
        t->detected++;
        t->detected_unprovable += !provable;
        assert_window_has(&r, &h->ops[i]);
    }
    test_linz_result_fini(&r);
    free(h->ops[i].result);
    h->ops[i].result = old;
    h->ops[i].succeeded = saved.succeeded;
}

static void mutations_are_detected(void **state)
{
    (void)state;
    uint64_t seed = test_seed("mutations_are_detected");
    struct tally t = {0};
    for (int round = 0; round < 40 * scale; round++) {
        struct gen_opts o = random_opts(&seed);
        o.ops = 20 + o.ops / 3;
        struct test_hist h;
        test_hist_init(&h);
        assert_int_equal(gen_history(&h, &o, &seed), 0);
        for (int m = 0; m < 20; m++) {
            one_mutation(&h, test_rand(&seed) % h.n_ops, &seed, &t);
        }
        test_hist_fini(&h);
    }
    fprintf(stderr,
            "mutations: %u tried, %u provable (all detected), %u detected in all (%u beyond the "
            "provable ones)\n",
            t.tried, t.provable, t.detected, t.detected_unprovable);
    /* The campaign must not be vacuous. */
    assert_true(t.tried >= 200u * (unsigned)scale);
    assert_true(t.provable * 3 >= t.tried);
}

/* A few thousand ops over ten keys from ten clients: printed, not asserted on time. */
static void performance(void **state)
{
    (void)state;
    uint64_t seed = test_seed("performance");
    const struct gen_opts shapes[] = {
        {.clients = 10,
         .keys = 10,
         .ops = 3000,
         .unknown_pct = 1,
         .failed_pct = 1,
         .max_gap = 1000,
         .max_dur = 5000},
        {.clients = 10,
         .keys = 10,
         .ops = 3000,
         .unknown_pct = 2,
         .failed_pct = 2,
         .max_gap = 200,
         .max_dur = 20000},
        {.clients = 10,
         .keys = 1,
         .ops = 2000,
         .unknown_pct = 1,
         .failed_pct = 1,
         .max_gap = 1000,
         .max_dur = 5000},
        /* The soak only: a long recording. */
        {.clients = 16,
         .keys = 10,
         .ops = 100000,
         .unknown_pct = 1,
         .failed_pct = 1,
         .max_gap = 1000,
         .max_dur = 5000},
    };
    size_t n_shapes = sizeof shapes / sizeof shapes[0] - (scale > 1 ? 0 : 1);
    for (size_t i = 0; i < n_shapes; i++) {
        struct test_hist h;
        test_hist_init(&h);
        assert_int_equal(gen_history(&h, &shapes[i], &seed), 0);
        struct test_linz_result r;
        assert_int_equal(check(&h, &r), TEST_LINZ_OK);
        const char *dir = getenv("KV_LINZ_KEEP"); /* keep the histories, e.g. for kvdb-linz */
        if (dir != NULL) {
            char path[256];
            snprintf(path, sizeof path, "%s/perf-%zu.hist", dir, i);
            assert_int_equal(test_hist_save(&h, path), 0);
        }
        fprintf(stderr,
                "perf: %zu ops, %u keys, %u clients, max overlap %lld/%lld ns: %s in %.3f s, "
                "%llu states\n",
                shapes[i].ops, shapes[i].keys, shapes[i].clients, (long long)shapes[i].max_dur,
                (long long)shapes[i].max_gap, test_linz_verdict_str(r.verdict),
                (double)r.elapsed_ns / 1e9, (unsigned long long)r.states);
        test_linz_result_fini(&r);
        test_hist_fini(&h);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strncmp(argv[1], "--scale=", 8) == 0) {
        scale = atoi(argv[1] + 8) > 0 ? atoi(argv[1] + 8) : 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_histories_are_linearizable),
        cmocka_unit_test(mutations_are_detected),
        cmocka_unit_test(performance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
