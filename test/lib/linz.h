/* Linearizability checker for "key -> optional value" histories (Wing-Gong with Lowe's
 * memoization, per key, as in Porcupine). */
#ifndef KV_TEST_LINZ_H
#define KV_TEST_LINZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "test/lib/history.h"

/*
 * What is checked.  Keys are independent registers (every op touches one key), so the history
 * is split by key and each key is checked alone (Porcupine's partitioning; sound and complete
 * for this model).  The model starts with every key absent.
 *
 * - OK ops must take effect atomically at one point between their call and return.
 * - FAILED ops are dropped: they did not take effect.
 * - Serializable gets (struct test_op.serializable) are dropped and counted: a member may
 *   serve them from stale local state, so they are outside the linearizability claim.
 * - UNKNOWN ops may take effect at any point after their call (return time +infinity) or not at
 *   all (Jepsen/Porcupine "info" ops).  An unknown get constrains nothing and is dropped; an
 *   unknown cas sets the new value iff the value equals expected where it is linearized.
 * - Two ops whose return and call times are equal count as concurrent.
 *
 * The search (Wing & Gong 1993; Lowe 2017) walks the ops in call/return order, tries to
 * linearize each pending op whose call precedes every pending return, backtracks at a return
 * whose op is not linearized yet, and remembers every (linearized set, model state) pair it has
 * seen so that no configuration is explored twice.  Success comes as soon as every OK op is
 * linearized (the unknown ops left over never happened, or happened at the end).
 *
 * Violations first.  Proving that a history is not linearizable needs an exhaustive search of
 * everything before the violation, which is ruinous for a long history, whereas a linearizable
 * one is usually confirmed quickly.  So a key with more than 128 ops is first checked in short
 * windows (64 ops by call order, half overlapping, each from an arbitrary value, cut as
 * below); a violating window is a proof on its own.  Only if none violates is the whole key
 * searched.
 *
 * The failing window.  When a key is not linearizable, the checker shrinks the evidence:
 * first the earliest time T such that the ops called by T (those still running at T counted as
 * unknown) are already not linearizable, then the latest time S such that the ops called in
 * [S, T] are still not linearizable from an arbitrary starting value (ops that finished before
 * S are dropped; ops called before S but still running at S count as unknown).  Both cuts are
 * sound: a cut of a linearizable history is linearizable, so the window proves the violation
 * on its own.  Last, each known read in the window (a get, or a cas that failed) is left out
 * if the window still fails without it (removing a read keeps a linearizable history
 * linearizable, so this is sound too; at most 64 reads are tried).  The result is the
 * smallest window found by these steps, not a global minimum over all windows.
 */

/*
 * Typical use in a fault test (link kv_testlib_linz):
 *
 *   struct test_hist h;
 *   test_hist_init(&h);
 *   ... in each client thread, around every request:
 *   size_t id;
 *   test_hist_invoke(&h, client, TEST_OP_GET, key, NULL, NULL, &id);
 *   rc = kvc_get(...);
 *   if (rc == 0) test_hist_ok(&h, id, value_or_NULL, false);
 *   else if (definitely_not_applied(rc)) test_hist_fail(&h, id);
 *   else ;  (timeout, connection lost: leave it, it stays unknown)
 *   ... after the run:
 *   struct test_linz_result r;
 *   struct test_linz_opts budget = {.max_states = 10000000, .max_ns = 60000000000};
 *   test_linz_check(&h, &budget, &r, errmsg);
 *   if (r.verdict != TEST_LINZ_OK) { test_linz_result_print(&r, stderr);
 *                                    test_hist_save(&h, "/tmp/failing.hist"); }
 *   test_linz_result_fini(&r);
 *   test_hist_fini(&h);
 *
 * A saved history is re-checked with `kvdb-linz /tmp/failing.hist`.
 */

/* Verdicts; the first value is 1 so a zeroed result is invalid. */
enum test_linz_verdict {
    TEST_LINZ_OK = 1,    /* linearizable */
    TEST_LINZ_VIOLATION, /* not linearizable: see the window */
    TEST_LINZ_GAVE_UP    /* the state or time budget ran out before an answer */
};

/* Budgets; zero fields mean "no limit". */
struct test_linz_opts
{
    uint64_t max_states; /* memoized configurations per search (a key, or one of its
                            windows) before giving up */
    int64_t max_ns;      /* wall time (CLOCK_MONOTONIC) for the whole check */
};

/* One op of a failing window. */
struct test_linz_wop
{
    struct test_op op; /* a copy of the recorded op (strings owned by the result) */
    bool as_unknown;   /* the window treats it as unknown: it overlaps a cut */
};

/* The verdict and, for a violation, the evidence. */
struct test_linz_result
{
    enum test_linz_verdict verdict;
    char *key;                    /* violating key, or the key given up on; else NULL */
    struct test_linz_wop *window; /* violation: the ops of the failing window, by call time */
    size_t n_window;
    bool window_from_any;  /* the window starts from an arbitrary value (else from absent) */
    int64_t window_start;  /* S: ops called at/after it (or running at it) are in the window */
    int64_t window_end;    /* T: ops called after it are left out */
    size_t n_keys;         /* keys in the history */
    size_t n_ops;          /* ops checked (failed ops and unknown gets excluded) */
    size_t n_serializable; /* serializable gets left out of the check */
    uint64_t states;       /* configurations memoized, summed over every search */
    int64_t elapsed_ns;    /* time spent in test_linz_check */
};

/* Check @h.  @opts may be NULL (no budget).  @out is filled (zeroed first); release it with
 * test_linz_result_fini.  The verdict is in out->verdict; the return value reports only
 * errors.  Keys are checked in byte order and the first violating key is reported.
 * @errmsg (TEST_LINZ_ERRMSG_SIZE bytes, may be NULL) gets context on error.
 * Errors: TEST_LINZ_ENOMEM, TEST_LINZ_EINVAL (an op with a bad kind, outcome or times).
 * @h is locked for the duration of the check (recording threads wait).  Memory: 50-100 bytes
 * per memoized configuration of the largest search (see docs/bench-linz.md).
 * Any thread; checks of different histories may run in parallel. */
int test_linz_check(struct test_hist *h,
                    const struct test_linz_opts *opts,
                    struct test_linz_result *out,
                    char *errmsg);

/* Free what @r owns.  A zeroed result is a no-op. */
void test_linz_result_fini(struct test_linz_result *r);

/* "linearizable", "not linearizable" or "gave up". */
const char *test_linz_verdict_str(enum test_linz_verdict v);

/* Print @r readably to @f: the verdict, counts, and for a violation the key, the window and
 * its ops (client, op, args, call/return times relative to the window start, outcome; ops the
 * window treats as unknown are marked).  Any thread. */
void test_linz_result_print(const struct test_linz_result *r, FILE *f);

#endif /* KV_TEST_LINZ_H */
