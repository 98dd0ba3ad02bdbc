/* The history recorder: concurrent recording, completion rules, and the text file format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "test/lib/history.h"
#include "test/lib/linz.h"
#include "test/lib/seed.h"
#include "test/unit/linz/gen.h"

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void assert_same_ops(const struct test_hist *a, const struct test_hist *b)
{
    assert_int_equal(a->n_ops, b->n_ops);
    for (size_t i = 0; i < a->n_ops; i++) {
        const struct test_op *x = &a->ops[i], *y = &b->ops[i];
        assert_int_equal(x->client, y->client);
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->outcome, y->outcome);
        assert_true(same_str(x->key, y->key));
        assert_true(same_str(x->value, y->value));
        assert_true(same_str(x->expected, y->expected));
        assert_true(same_str(x->result, y->result));
        assert_int_equal(x->succeeded, y->succeeded);
        assert_int_equal(x->serializable, y->serializable);
        assert_int_equal(x->call_ns, y->call_ns);
        assert_int_equal(x->ret_ns, y->ret_ns);
    }
}

/* Write @h to memory and read it back into @out. */
static void roundtrip(struct test_hist *h, struct test_hist *out)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(test_hist_write(h, f), 0);
    fclose(f);
    f = fmemopen(buf, len, "r");
    test_hist_init(out);
    int rv = test_hist_read(out, f, "mem");
    if (rv != 0) {
        fprintf(stderr, "%s\n%s", out->errmsg, buf);
    }
    assert_int_equal(rv, 0);
    fclose(f);
    free(buf);
}

static void add(struct test_hist *h, struct test_op op)
{
    assert_int_equal(test_hist_add(h, &op), 0);
}

/* Every byte but NUL survives the text format, and absent differs from empty and from "-". */
static void format_roundtrip_odd_strings(void **state)
{
    (void)state;
    const char *odd[] = {"",  "-",  "%",     "%25", "\"\"", "a b\tc\nd", "\x01\x7f\xff",
                         "=", "--", "héllo", "#x",  "ok",   "k"};
    struct test_hist h, back;
    test_hist_init(&h);
    size_t n = sizeof odd / sizeof odd[0];
    for (size_t i = 0; i < n; i++) {
        const char *o = odd[i], *p = odd[(i + 1) % n];
        add(&h, (struct test_op){.client = (uint32_t)i,
                                 .kind = TEST_OP_PUT,
                                 .outcome = TEST_OUT_OK,
                                 .key = (char *)o,
                                 .value = (char *)p,
                                 .call_ns = (int64_t)i,
                                 .ret_ns = (int64_t)i + 5});
        add(&h, (struct test_op){.client = 1,
                                 .kind = TEST_OP_GET,
                                 .outcome = TEST_OUT_OK,
                                 .key = (char *)p,
                                 .result = i % 2 ? NULL : (char *)o,
                                 .call_ns = -7,
                                 .ret_ns = 0});
        add(&h, (struct test_op){.client = UINT32_MAX,
                                 .kind = TEST_OP_CAS,
                                 .outcome = TEST_OUT_OK,
                                 .key = (char *)o,
                                 .expected = i % 3 ? NULL : (char *)p,
                                 .value = (char *)o,
                                 .succeeded = i % 2,
                                 .call_ns = 1,
                                 .ret_ns = INT64_MAX - 1});
    }
    add(&h, (struct test_op){.client = 2,
                             .kind = TEST_OP_DEL,
                             .outcome = TEST_OUT_FAILED,
                             .key = "k",
                             .call_ns = 3,
                             .ret_ns = 4});
    add(&h, (struct test_op){.client = 2,
                             .kind = TEST_OP_CAS,
                             .outcome = TEST_OUT_UNKNOWN,
                             .key = "k",
                             .value = "v",
                             .call_ns = 5,
                             .ret_ns = 6});
    add(&h, (struct test_op){.client = 2,
                             .kind = TEST_OP_GET,
                             .outcome = TEST_OUT_UNKNOWN,
                             .key = "k",
                             .result = "ignored",
                             .call_ns = 5});
    /* What add normalizes: unknown ops never return, and carry no answer. */
    assert_int_equal(h.ops[h.n_ops - 2].ret_ns, TEST_HIST_NEVER);
    assert_null(h.ops[h.n_ops - 1].result);
    add(&h, (struct test_op){.client = 3,
                             .kind = TEST_OP_GET,
                             .outcome = TEST_OUT_OK,
                             .key = "k",
                             .result = "-",
                             .serializable = true,
                             .call_ns = 7,
                             .ret_ns = 8});
    add(&h, (struct test_op){.client = 3,
                             .kind = TEST_OP_PUT,
                             .outcome = TEST_OUT_OK,
                             .key = "k",
                             .value = "x",
                             .serializable = true,
                             .call_ns = 9,
                             .ret_ns = 9});
    assert_false(h.ops[h.n_ops - 1].serializable); /* only gets can be serializable */
    roundtrip(&h, &back);
    assert_same_ops(&h, &back);
    test_hist_fini(&back);
    test_hist_fini(&h);
}

/* The documented example parses as documented. */
static void format_example(void **state)
{
    (void)state;
    const char *text =
        "# kvdb history v1\n"
        "1 1000 2000 ok put k1 v1\n"
        "\n"
        "2 1500 2500 ok get k1 = v1\n"
        "4 1500 2500 ok sget k1 = -\n"
        "3 1600 - unknown cas k1 - v2\n"
        "  2 2600 2900 ok cas k1 v1 hello%20world = true\n";
    struct test_hist h;
    test_hist_init(&h);
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_int_equal(test_hist_read(&h, f, "example"), 0);
    fclose(f);
    assert_int_equal(h.n_ops, 5);
    assert_string_equal(h.ops[1].result, "v1");
    assert_true(h.ops[2].serializable);
    assert_int_equal(h.ops[2].kind, TEST_OP_GET);
    assert_null(h.ops[2].result);
    assert_int_equal(h.ops[3].outcome, TEST_OUT_UNKNOWN);
    assert_null(h.ops[3].expected);
    assert_string_equal(h.ops[3].value, "v2");
    assert_string_equal(h.ops[4].value, "hello world");
    assert_true(h.ops[4].succeeded);
    struct test_linz_result r;
    assert_int_equal(test_linz_check(&h, NULL, &r, NULL), 0);
    assert_int_equal(r.verdict, TEST_LINZ_OK);
    test_linz_result_fini(&r);
    test_hist_fini(&h);
}

/* Bad lines are refused with the file name and line number. */
static void format_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "1 10 20 ok put k\n",        "1 10 20 ok get k\n",         "1 10 - ok put k v\n",
        "1 10 20 unknown put k v\n", "1 10 20 maybe put k v\n",    "1 10 20 ok inc k\n",
        "x 10 20 ok del k\n",        "1 1x 20 ok del k\n",         "1 20 10 ok del k\n",
        "1 10 20 ok get k v\n",      "1 10 20 ok cas k a b = 1\n", "1 10 20 ok put - v\n",
        "1 10 20 ok put k %4\n",     "1 10 20 ok put k %00\n",     "1 10 20 ok put k a\"b\n",
        "1 10 20 ok put k v = v\n",  "-1 10 20 ok del k\n",        "1 10 20 ok cas k a - = true\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "# header\n1 0 5 ok del k\n%s", bad[i]);
        struct test_hist h;
        test_hist_init(&h);
        FILE *f = fmemopen(text, strlen(text), "r");
        int rv = test_hist_read(&h, f, "bad.hist");
        fclose(f);
        if (rv != TEST_LINZ_EPARSE) {
            fail_msg("accepted: %s", bad[i]);
        }
        assert_non_null(strstr(h.errmsg, "bad.hist:3: "));
        assert_int_equal(h.n_ops, 1); /* the good line before stays */
        test_hist_fini(&h);
    }
}

static void save_and_load_file(void **state)
{
    (void)state;
    uint64_t seed = test_seed("save_and_load_file");
    struct gen_opts o = {.clients = 5,
                         .keys = 3,
                         .ops = 500,
                         .unknown_pct = 5,
                         .failed_pct = 5,
                         .max_gap = 100,
                         .max_dur = 400};
    struct test_hist h, back;
    test_hist_init(&h);
    test_hist_init(&back);
    assert_int_equal(gen_history(&h, &o, &seed), 0);
    char path[] = "/tmp/linz-hist-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(test_hist_save(&h, path), 0);
    assert_int_equal(test_hist_load(&back, path), 0);
    unlink(path);
    assert_same_ops(&h, &back);
    struct test_linz_result r1, r2;
    assert_int_equal(test_linz_check(&h, NULL, &r1, NULL), 0);
    assert_int_equal(test_linz_check(&back, NULL, &r2, NULL), 0);
    assert_int_equal(r1.verdict, TEST_LINZ_OK);
    assert_int_equal(r2.verdict, TEST_LINZ_OK);
    assert_int_equal(r1.states, r2.states);
    test_linz_result_fini(&r1);
    test_linz_result_fini(&r2);
    assert_int_equal(test_hist_load(&back, "/nonexistent/dir/h"), TEST_LINZ_EIO);
    assert_non_null(strstr(back.errmsg, "/nonexistent/dir/h"));
    assert_int_equal(test_hist_save(&back, "/nonexistent/dir/h"), TEST_LINZ_EIO);
    test_hist_fini(&back);
    test_hist_fini(&h);
}

/* Completion rules: each op completes once; put/cas need a value. */
static void completion_rules(void **state)
{
    (void)state;
    struct test_hist zero;
    memset(&zero, 0, sizeof zero);
    test_hist_fini(&zero); /* a no-op */
    struct test_hist h;
    test_hist_init(&h);
    size_t a, b, c;
    assert_int_equal(test_hist_invoke(&h, 1, TEST_OP_PUT, "k", NULL, NULL, &a), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_invoke(&h, 1, TEST_OP_GET, NULL, NULL, NULL, &a), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_invoke(&h, 1, TEST_OP_PUT, "k", "v", NULL, &a), 0);
    assert_int_equal(test_hist_invoke(&h, 2, TEST_OP_GET, "k", NULL, NULL, &b), 0);
    assert_int_equal(test_hist_invoke(&h, 3, TEST_OP_CAS, "k", "w", NULL, &c), 0);
    assert_int_equal(test_hist_ok(&h, a, "ignored", true), 0);
    assert_int_equal(test_hist_ok(&h, a, NULL, false), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_fail(&h, a), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_ok(&h, 99, NULL, false), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_ok(&h, b, "v", false), 0);
    assert_int_equal(test_hist_mark_serializable(&h, a), TEST_LINZ_EINVAL); /* a put */
    assert_int_equal(test_hist_mark_serializable(&h, 99), TEST_LINZ_EINVAL);
    assert_int_equal(test_hist_mark_serializable(&h, b), 0);
    assert_true(h.ops[b].serializable);
    /* c never completes: it stays unknown. */
    assert_int_equal(h.n_ops, 3);
    assert_null(h.ops[a].result);
    assert_false(h.ops[a].succeeded);
    assert_string_equal(h.ops[b].result, "v");
    assert_int_equal(h.ops[c].outcome, TEST_OUT_UNKNOWN);
    assert_int_equal(h.ops[c].ret_ns, TEST_HIST_NEVER);
    assert_true(h.ops[a].call_ns <= h.ops[b].call_ns && h.ops[b].call_ns <= h.ops[c].call_ns);
    assert_true(h.ops[a].call_ns <= h.ops[a].ret_ns);
    assert_string_equal(test_linz_strerror(TEST_LINZ_EPARSE), "malformed history file");
    assert_string_equal(test_linz_strerror(0), "unknown error");
    test_hist_fini(&h);
}

/* ---- Real threads on a real linearizable store ---- */

#define N_THREADS 8
#define N_KEYS 3

/* A register store whose every op runs under one mutex: linearizable by construction. */
struct store
{
    pthread_mutex_t lock;
    char *val[N_KEYS];
};

struct worker
{
    struct test_hist *h;
    struct store *s;
    uint32_t id;
    uint64_t seed;
    int ops;
    int errors; /* recorder calls that failed (cmocka asserts belong to the main thread) */
};

/* One op on the store; returns the result a get read (a copy) via *got. */
static bool store_apply(struct store *s,
                        int k,
                        enum test_op_kind kind,
                        const char *v,
                        const char *expected,
                        char **got)
{
    bool ok = true;
    pthread_mutex_lock(&s->lock);
    char **cur = &s->val[k];
    if (kind == TEST_OP_GET) {
        *got = *cur ? strdup(*cur) : NULL;
    } else if (kind == TEST_OP_CAS) {
        ok =
            (expected == NULL && *cur == NULL) || (expected && *cur && strcmp(expected, *cur) == 0);
    }
    if ((kind == TEST_OP_PUT || kind == TEST_OP_DEL || (kind == TEST_OP_CAS && ok))) {
        free(*cur);
        *cur = v ? strdup(v) : NULL;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->ops; i++) {
        int k = (int)(test_rand(&w->seed) % N_KEYS);
        char key[8], v[32], e[32];
        snprintf(key, sizeof key, "k%d", k);
        snprintf(v, sizeof v, "t%u-%d", w->id, i);
        snprintf(e, sizeof e, "t%u-%d", w->id, i - 1);
        enum test_op_kind kind = (enum test_op_kind)(1 + test_rand(&w->seed) % 4);
        const char *val = kind == TEST_OP_PUT || kind == TEST_OP_CAS ? v : NULL;
        const char *exp = test_rand(&w->seed) % 2 ? e : NULL;
        uint64_t fate = test_rand(&w->seed) % 20;
        size_t id;
        if (test_hist_invoke(w->h, w->id, kind, key, val, exp, &id) != 0) {
            w->errors++;
            continue;
        }
        if (fate == 0) { /* refused before it could happen */
            w->errors += test_hist_fail(w->h, id) != 0;
            continue;
        }
        char *got = NULL;
        bool ok = store_apply(w->s, k, kind, val, exp, &got);
        if (fate != 1) { /* fate 1: the answer is lost, the op stays unknown */
            w->errors += test_hist_ok(w->h, id, got, ok) != 0;
        }
        free(got);
    }
    return NULL;
}

static void threads_record_a_linearizable_store(void **state)
{
    (void)state;
    uint64_t seed = test_seed("threads_record_a_linearizable_store");
    struct test_hist h;
    test_hist_init(&h);
    struct store s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct worker w[N_THREADS];
    pthread_t t[N_THREADS];
    for (uint32_t i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){&h, &s, i, test_rand(&seed) | 1, 400, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    assert_int_equal(h.n_ops, N_THREADS * 400);
    struct test_linz_result r;
    assert_int_equal(test_linz_check(&h, NULL, &r, NULL), 0);
    if (r.verdict != TEST_LINZ_OK) {
        test_linz_result_print(&r, stderr);
    }
    assert_int_equal(r.verdict, TEST_LINZ_OK);
    fprintf(stderr, "threads: %zu ops checked in %.3f s\n", r.n_ops, (double)r.elapsed_ns / 1e9);
    test_linz_result_fini(&r);
    for (int k = 0; k < N_KEYS; k++) {
        free(s.val[k]);
    }
    test_hist_fini(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_roundtrip_odd_strings),
        cmocka_unit_test(format_example),
        cmocka_unit_test(format_errors),
        cmocka_unit_test(save_and_load_file),
        cmocka_unit_test(completion_rules),
        cmocka_unit_test(threads_record_a_linearizable_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
