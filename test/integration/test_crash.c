/* Whole-cluster crashes: kill -9 (or SIGTERM) every member while a pipelined writer runs,
 * restart, and every acknowledged write is there with its revision (twice, so a recovered state
 * crashes again). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <signal.h>
#include <unistd.h>

#include "test/integration/fixture.h"
#include "test/integration/writer.h"

static int setup1(void **state)
{
    return ih_fix_setup(state, 1, NULL, 30000, false);
}

static int setup3(void **state)
{
    return ih_fix_setup(state, 3, NULL, 30000, false);
}

/* Signal every member (@sig) as close together as we can, reap them (a SIGTERM must end in a
 * clean exit 0, also with requests in flight), then start them all again. */
static void stop_all(struct ih_fix *f, int sig)
{
    for (size_t i = 0; i < f->c.n; i++) {
        ih_member_signal(&f->c, i, sig);
    }
    for (size_t i = 0; i < f->c.n; i++) {
        assert_int_equal(0, ih_member_stop(&f->c, i, sig));
    }
    assert_int_equal(0, ih_cluster_start(&f->c, 30000));
}

/* Check the writer's acknowledged writes through every member (linearizable reads). */
static void check_everywhere(struct ih_fix *f, long at_least)
{
    for (size_t i = 0; i < f->c.n; i++) {
        struct kvc *k = ih_client(&f->c, i, 15000);
        assert_non_null(k);
        long n = ih_writer_check(&f->w, k);
        kvc_close(k);
        assert_true(n >= at_least);
    }
}

static void crash_rounds(struct ih_fix *f, unsigned window, int sig)
{
    assert_int_equal(0, ih_writer_start(&f->w, &f->c, "crash/", 1000000, window));
    for (int round = 0; round < 2; round++) {
        /* Crash while writes are in flight: wait for progress, then kill at once. */
        assert_int_equal(0, ih_writer_wait_acked(&f->w, atomic_load(&f->w.acked) + 200, 30000));
        stop_all(f, sig);
        /* The writer resumes against the restarted cluster. */
        assert_int_equal(0, ih_writer_wait_acked(&f->w, atomic_load(&f->w.acked) + 50, 30000));
    }
    ih_writer_stop(&f->w);
    check_everywhere(f, 500);
}

/* Three members, all killed while a writer keeps 16 puts in flight. */
static void crash_all_members_while_writing(void **state)
{
    crash_rounds(*state, 16, SIGKILL);
}

/* One member killed with 32 pipelined puts in flight: group commit must not acknowledge before
 * the WAL is synced. */
static void crash_single_member_while_writing(void **state)
{
    crash_rounds(*state, 32, SIGKILL);
}

/* Three members stopped with SIGTERM while 16 puts are in flight: each exits cleanly, and
 * what it acknowledged before shutting down is there after the restart. */
static void sigterm_all_members_while_writing(void **state)
{
    crash_rounds(*state, 16, SIGTERM);
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(crash_all_members_while_writing, setup3, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(crash_single_member_while_writing, setup1, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(sigterm_all_members_while_writing, setup3, ih_fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
