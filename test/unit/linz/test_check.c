/* The checker on hand-written histories: what must pass, what must fail, and the window. */
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

/* Histories are written in the file format (history.h): "<client> <call> <ret> <outcome> <op>
 * <key> [args] [= result]", times in ns. */
static enum test_linz_verdict check_text_opts(const char *text,
                                              const struct test_linz_opts *o,
                                              struct test_linz_result *r)
{
    struct test_hist h;
    test_hist_init(&h);
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(f);
    int rv = test_hist_read(&h, f, "text");
    if (rv != 0) {
        fprintf(stderr, "%s\n", h.errmsg);
    }
    assert_int_equal(rv, 0);
    fclose(f);
    char err[TEST_LINZ_ERRMSG_SIZE];
    assert_int_equal(test_linz_check(&h, o, r, err), 0);
    test_hist_fini(&h);
    if (r->verdict == TEST_LINZ_VIOLATION) {
        test_linz_result_print(r, stderr);
    }
    return r->verdict;
}

static enum test_linz_verdict check_text(const char *text)
{
    struct test_linz_result r;
    enum test_linz_verdict v = check_text_opts(text, NULL, &r);
    test_linz_result_fini(&r);
    return v;
}

#define LINZ(text) assert_int_equal(check_text(text), TEST_LINZ_OK)
#define NOT_LINZ(text) assert_int_equal(check_text(text), TEST_LINZ_VIOLATION)

static void empty_and_trivial(void **state)
{
    (void)state;
    LINZ("");
    LINZ("1 0 10 ok get x = -\n");
    LINZ("1 0 10 ok put x a\n1 20 30 ok get x = a\n");
    NOT_LINZ("1 0 10 ok get x = a\n");
}

/* Two overlapping writes may take effect in either order; a later read decides which. */
static void concurrent_writes_either_order(void **state)
{
    (void)state;
    const char *writes =
        "1 0 100 ok put x a\n"
        "2 10 90 ok put x b\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%s3 110 120 ok get x = a\n", writes);
    LINZ(buf);
    snprintf(buf, sizeof buf, "%s3 110 120 ok get x = b\n", writes);
    LINZ(buf);
    /* But once two reads in sequence saw b then a, neither order explains it. */
    snprintf(buf, sizeof buf, "%s3 110 120 ok get x = b\n3 130 140 ok get x = a\n", writes);
    NOT_LINZ(buf);
}

/* A read overlapping a write may return the old or the new value. */
static void read_overlapping_write(void **state)
{
    (void)state;
    LINZ("1 0 10 ok put x a\n1 20 60 ok put x b\n2 30 40 ok get x = a\n");
    LINZ("1 0 10 ok put x a\n1 20 60 ok put x b\n2 30 40 ok get x = b\n");
    /* Reads that start before the write and end after it, in both orders. */
    LINZ("1 0 10 ok put x a\n1 30 40 ok put x b\n2 20 50 ok get x = a\n");
    LINZ("1 0 10 ok put x a\n1 30 40 ok put x b\n2 20 50 ok get x = b\n");
    /* Touching intervals count as concurrent. */
    LINZ("1 0 10 ok put x a\n2 10 20 ok get x = -\n");
}

/* Unknown writes may or may not have happened, and may happen long after their call. */
static void unknown_writes(void **state)
{
    (void)state;
    const char *pre =
        "1 0 10 ok put x a\n"
        "2 20 - unknown put x b\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%s3 100 110 ok get x = b\n", pre); /* happened */
    LINZ(buf);
    snprintf(buf, sizeof buf, "%s3 100 110 ok get x = a\n3 120 130 ok get x = a\n", pre);
    LINZ(buf); /* never happened */
    snprintf(buf, sizeof buf, "%s3 30 40 ok get x = a\n3 50 60 ok get x = b\n", pre);
    LINZ(buf); /* happened late */
    snprintf(buf, sizeof buf, "%s3 30 40 ok get x = b\n3 50 60 ok get x = a\n", pre);
    NOT_LINZ(buf); /* it cannot happen twice */
    /* Not before its call. */
    NOT_LINZ("1 0 10 ok put x a\n3 12 18 ok get x = b\n2 20 - unknown put x b\n");
    /* An unknown cas applies only if its compare holds. */
    LINZ("1 0 10 ok put x a\n2 20 - unknown cas x a b\n3 30 40 ok get x = b\n");
    NOT_LINZ("1 0 10 ok put x a\n2 20 - unknown cas x z b\n3 30 40 ok get x = b\n");
    /* Only an unknown write can explain a failed compare against the value just written. */
    LINZ("1 0 10 ok put x a\n2 20 - unknown put x b\n3 30 40 ok cas x a c = false\n");
    LINZ("1 0 10 ok put x a\n2 20 - unknown del x\n3 30 40 ok cas x a c = false\n");
    NOT_LINZ("1 0 10 ok put x a\n2 20 30 failed put x b\n3 30 40 ok cas x a c = false\n");
    /* A chain: an unknown cas applies only after another unknown write made it match. */
    LINZ(
        "1 0 10 ok put x a\n2 20 - unknown put x b\n4 21 - unknown cas x b c\n"
        "3 30 40 ok get x = c\n");
    NOT_LINZ(
        "1 0 10 ok put x a\n2 20 - unknown put x q\n4 21 - unknown cas x b c\n"
        "3 30 40 ok get x = c\n");
    /* An unknown read constrains nothing. */
    LINZ("1 0 10 ok put x a\n2 20 - unknown get x\n");
}

/* Many writes with lost answers, all pending at once: reads pick some of them in any order,
 * but none twice.  (A search that tries every subset of pending unknown ops never ends.) */
static void many_unknown_writes(void **state)
{
    (void)state;
    char text[8192];
    size_t n = 0;
    for (int i = 0; i < 60; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "%d %d - unknown put x v%d\n", i, i, i);
    }
    int reads[] = {10, 30, 5, 59, 0, 31};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "99 %zu %zu ok get x = v%d\n",
                              100 + 10 * i, 105 + 10 * i, reads[i]);
    }
    LINZ(text);
    snprintf(text + n, sizeof text - n, "99 500 510 ok get x = v30\n");
    NOT_LINZ(text);
}

/* Failed ops did not take effect. */
static void failed_ops_dropped(void **state)
{
    (void)state;
    LINZ("1 0 10 ok put x a\n2 20 30 failed put x b\n3 40 50 ok get x = a\n");
    NOT_LINZ("1 0 10 ok put x a\n2 20 30 failed put x b\n3 40 50 ok get x = b\n");
    NOT_LINZ("1 0 10 ok put x a\n2 20 30 failed del x\n3 40 50 ok get x = -\n");
}

static void cas_and_delete(void **state)
{
    (void)state;
    LINZ(
        "1 0 10 ok cas x - a = true\n"
        "2 20 30 ok cas x - b = false\n"
        "2 40 50 ok cas x a c = true\n"
        "1 60 70 ok get x = c\n"
        "1 80 90 ok del x\n"
        "2 100 110 ok get x = -\n"
        "2 120 130 ok cas x - d = true\n");
    /* Delete then a read of the old value. */
    NOT_LINZ("1 0 10 ok put x a\n1 20 30 ok del x\n2 40 50 ok get x = a\n");
    /* A read of absent after an acknowledged put. */
    NOT_LINZ("1 0 10 ok put x a\n2 20 30 ok get x = -\n");
    /* A cas that failed although the value was current. */
    NOT_LINZ("1 0 10 ok put x a\n2 20 30 ok cas x a b = false\n");
    NOT_LINZ("2 20 30 ok cas x - b = false\n");
}

/* A read returns an old value after a newer write completed before the read started. */
static void stale_read(void **state)
{
    (void)state;
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "1 20 30 ok put x b\n"
        "2 40 50 ok get x = a\n");
}

/* An acknowledged put that later reads never see although they see an older value. */
static void lost_write(void **state)
{
    (void)state;
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "2 5 15 ok get x = a\n"
        "3 20 40 ok put x b\n"
        "4 30 35 ok get x = a\n" /* fine: b may not have happened yet */
        "4 50 60 ok get x = a\n" /* b was acknowledged at 40: lost */
        "2 70 80 ok get x = a\n");
}

static void read_of_value_never_written(void **state)
{
    (void)state;
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "2 5 50 ok put x b\n"
        "3 20 30 ok get x = c\n");
}

/* A cas succeeded against a value that was no longer current. */
static void cas_against_stale_value(void **state)
{
    (void)state;
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "2 20 30 ok put x b\n"
        "3 40 50 ok cas x a c = true\n");
    /* Two successful cas from the same expected value cannot both succeed. */
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "2 20 40 ok cas x a b = true\n"
        "3 20 40 ok cas x a c = true\n");
}

/* Two sequential reads during one long write: new then old is impossible. */
static void non_monotonic_read_pair(void **state)
{
    (void)state;
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "1 20 100 ok put x b\n"
        "2 30 40 ok get x = b\n"
        "2 50 60 ok get x = a\n");
    /* Different clients, still ordered in real time. */
    NOT_LINZ(
        "1 0 10 ok put x a\n"
        "1 20 100 ok put x b\n"
        "2 30 40 ok get x = b\n"
        "3 50 60 ok get x = a\n");
}

/* Serializable reads may be stale by design: they are kept out of the check, and counted. */
static void serializable_reads_excluded(void **state)
{
    (void)state;
    struct test_linz_result r;
    const char *h =
        "1 0 10 ok put x a\n"
        "1 20 30 ok put x b\n"
        "2 40 50 ok sget x = a\n"
        "2 60 70 ok sget x = -\n";
    assert_int_equal(check_text_opts(h, NULL, &r), TEST_LINZ_OK);
    assert_int_equal(r.n_serializable, 2);
    assert_int_equal(r.n_ops, 2);
    test_linz_result_fini(&r);
    NOT_LINZ("1 0 10 ok put x a\n1 20 30 ok put x b\n2 40 50 ok get x = a\n");
}

/* Keys are independent: a violation names its key. */
static void keys_are_independent(void **state)
{
    (void)state;
    struct test_linz_result r;
    const char *h =
        "1 0 10 ok put x a\n"
        "1 20 30 ok put y a\n"
        "2 40 50 ok get x = a\n"
        "2 60 70 ok get y = a\n"
        "2 80 90 ok put x b\n"
        "3 100 110 ok get y = b\n";
    assert_int_equal(check_text_opts(h, NULL, &r), TEST_LINZ_VIOLATION);
    assert_string_equal(r.key, "y");
    assert_int_equal(r.n_keys, 2);
    test_linz_result_fini(&r);
    /* The same values on separate keys are not confused. */
    LINZ("1 0 10 ok put x a\n1 20 30 ok put y b\n2 40 50 ok get x = a\n2 40 50 ok get y = b\n");
}

/* The window keeps just the evidence: the stale read and the write it missed. */
static void window_is_small(void **state)
{
    (void)state;
    char text[4096];
    size_t n = 0;
    for (int i = 0; i < 10; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "1 %d %d ok put x v%d\n2 %d %d ok get x = v%d\n", 20 * i, 20 * i + 5,
                              i, 20 * i + 10, 20 * i + 15, i);
    }
    snprintf(text + n, sizeof text - n,
             "1 200 210 ok put x a\n"
             "1 220 230 ok put x b\n"
             "3 215 300 ok put y z\n" /* another key: not in the window */
             "2 240 250 ok get x = a\n"
             "2 260 270 ok get x = b\n");
    struct test_linz_result r;
    assert_int_equal(check_text_opts(text, NULL, &r), TEST_LINZ_VIOLATION);
    assert_string_equal(r.key, "x");
    assert_int_equal(r.n_window, 2);
    assert_true(r.window_from_any);
    assert_int_equal(r.window_start, 220);
    assert_int_equal(r.window_end, 250);
    assert_int_equal(r.window[0].op.kind, TEST_OP_PUT);
    assert_string_equal(r.window[0].op.value, "b");
    assert_int_equal(r.window[1].op.kind, TEST_OP_GET);
    assert_string_equal(r.window[1].op.result, "a");

    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    test_linz_result_print(&r, f);
    fclose(f);
    assert_non_null(strstr(out, "not linearizable"));
    assert_non_null(strstr(out, "key x"));
    assert_non_null(strstr(out, "c2 get x = a (ok)"));
    free(out);
    test_linz_result_fini(&r);
}

/* Reads that the proof does not need are left out of the window. */
static void window_drops_needless_reads(void **state)
{
    (void)state;
    struct test_linz_result r;
    assert_int_equal(check_text_opts("1 0 10 ok put x a\n"
                                     "1 20 30 ok put x b\n"
                                     "2 21 45 ok get x = b\n"
                                     "3 40 50 ok get x = a\n",
                                     NULL, &r),
                     TEST_LINZ_VIOLATION);
    assert_int_equal(r.n_window, 2);
    assert_string_equal(r.window[0].op.value, "b");
    assert_string_equal(r.window[1].op.result, "a");
    test_linz_result_fini(&r);
}

/* A window that needs the initial "absent" keeps the whole prefix. */
static void window_from_absent(void **state)
{
    (void)state;
    struct test_linz_result r;
    assert_int_equal(check_text_opts("1 20 30 ok get x = b\n", NULL, &r), TEST_LINZ_VIOLATION);
    assert_int_equal(r.n_window, 1); /* a read of b from any value is fine; from absent not */
    assert_false(r.window_from_any);
    test_linz_result_fini(&r);
    /* A write running across the window's edge is shown and treated as unknown; a read that
     * does is left out (its answer cannot matter). */
    assert_int_equal(check_text_opts("1 0 10 ok put x a\n"
                                     "3 15 100 ok put x c\n"
                                     "4 5 100 ok get x = a\n"
                                     "1 20 30 ok put x b\n"
                                     "2 40 50 ok get x = a\n",
                                     NULL, &r),
                     TEST_LINZ_VIOLATION);
    assert_int_equal(r.n_window, 3);
    assert_string_equal(r.window[0].op.value, "c");
    assert_true(r.window[0].as_unknown);
    assert_false(r.window[1].as_unknown);
    assert_string_equal(r.window[2].op.result, "a");
    test_linz_result_fini(&r);
}

/* In a long history a violation is found in a short window, not by an exhaustive search of
 * everything before it (which is what made a 10,000-op key take minutes and gigabytes). */
static void long_history_violation_found_in_window(void **state)
{
    (void)state;
    size_t cap = 1 << 20, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    /* 2000 rounds: four clients race to write, then one reads; every read is satisfiable. */
    for (int i = 0; i < 2000; i++) {
        int t = 100 * i;
        for (int c = 0; c < 4; c++) {
            n += (size_t)snprintf(text + n, cap - n, "%d %d %d ok put x v%d.%d\n", c, t, t + 50, i,
                                  c);
        }
        n += (size_t)snprintf(text + n, cap - n, "9 %d %d ok get x = v%d.%d\n", t + 60, t + 70, i,
                              i % 4);
    }
    LINZ(text);
    /* Round 1500 reads a value of round 1499: stale. */
    char *p = strstr(text, "ok get x = v1500.0");
    assert_non_null(p);
    memcpy(p, "ok get x = v1499.0", 18);
    struct test_linz_result r;
    assert_int_equal(check_text_opts(text, NULL, &r), TEST_LINZ_VIOLATION);
    assert_true(r.n_window <= 5);
    assert_string_equal(r.window[r.n_window - 1].op.result, "v1499.0");
    assert_true(r.states < 100000);
    test_linz_result_fini(&r);
    free(text);
}

/* A state budget too small for the search gives up rather than guessing. */
static void budget_gives_up(void **state)
{
    (void)state;
    char text[4096];
    size_t n = 0;
    /* Ten concurrent puts and a read of the first: the search must try many orders. */
    for (int i = 0; i < 10; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n, "%d 0 1000 ok put x v%d\n", i, i);
    }
    snprintf(text + n, sizeof text - n, "99 2000 2010 ok get x = v0\n");
    struct test_linz_opts o = {.max_states = 5};
    struct test_linz_result r;
    assert_int_equal(check_text_opts(text, &o, &r), TEST_LINZ_GAVE_UP);
    assert_string_equal(r.key, "x");
    test_linz_result_fini(&r);
    o.max_states = 1000000;
    assert_int_equal(check_text_opts(text, &o, &r), TEST_LINZ_OK);
    test_linz_result_fini(&r);
    /* A violation on another key still wins over giving up. */
    snprintf(text + n, sizeof text - n, "99 2000 2010 ok get x = v0\n5 0 1 ok get y = q\n");
    o.max_states = 5;
    assert_int_equal(check_text_opts(text, &o, &r), TEST_LINZ_VIOLATION);
    assert_string_equal(r.key, "y");
    test_linz_result_fini(&r);
}

/* Malformed ops added by hand are rejected, not checked. */
static void malformed_op_rejected(void **state)
{
    (void)state;
    struct test_hist h;
    test_hist_init(&h);
    struct test_op op = {.client = 1,
                         .kind = TEST_OP_GET,
                         .outcome = TEST_OUT_OK,
                         .key = "x",
                         .call_ns = 10,
                         .ret_ns = 10};
    assert_int_equal(test_hist_add(&h, &op), 0);
    h.ops[0].ret_ns = 5; /* corrupted after the fact */
    struct test_linz_result r;
    char err[TEST_LINZ_ERRMSG_SIZE] = "";
    assert_int_equal(test_linz_check(&h, NULL, &r, err), TEST_LINZ_EINVAL);
    assert_non_null(strstr(err, "malformed"));
    test_hist_fini(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_and_trivial),
        cmocka_unit_test(concurrent_writes_either_order),
        cmocka_unit_test(read_overlapping_write),
        cmocka_unit_test(unknown_writes),
        cmocka_unit_test(many_unknown_writes),
        cmocka_unit_test(failed_ops_dropped),
        cmocka_unit_test(cas_and_delete),
        cmocka_unit_test(stale_read),
        cmocka_unit_test(lost_write),
        cmocka_unit_test(read_of_value_never_written),
        cmocka_unit_test(cas_against_stale_value),
        cmocka_unit_test(non_monotonic_read_pair),
        cmocka_unit_test(serializable_reads_excluded),
        cmocka_unit_test(keys_are_independent),
        cmocka_unit_test(window_is_small),
        cmocka_unit_test(window_drops_needless_reads),
        cmocka_unit_test(window_from_absent),
        cmocka_unit_test(long_history_violation_found_in_window),
        cmocka_unit_test(budget_gives_up),
        cmocka_unit_test(malformed_op_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
