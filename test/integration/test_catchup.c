/* Catch-up of a member that was down while the log moved on by several snapshot intervals
 * (--snapshot-count 100, --snapshot-catchup-entries 20).  A binary of its own: it is the test
 * that exercises snapshot transfer between real members once the server sends snapshots. */
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

#define N 3

static int setup(void **state)
{
    static const char *const extra[] = {"--snapshot-count", "100", "--snapshot-catchup-entries",
                                        "20", NULL};
    return ih_fix_setup(state, N, extra, 30000, false);
}

/* The highest index of the "created snapshot <index>-<term>" lines in member @m's log (0: none). */
static unsigned long long created_snapshot(const struct ih_member *m)
{
    FILE *fp = fopen(m->log, "r");
    char line[2048];
    unsigned long long best = 0;
    while (fp != NULL && fgets(line, sizeof line, fp) != NULL) {
        const char *at = strstr(line, "created snapshot ");
        unsigned long long idx;
        if (at != NULL && sscanf(at, "created snapshot %llu-", &idx) == 1 && idx > best) {
            best = idx;
        }
    }
    if (fp != NULL) {
        fclose(fp);
    }
    return best;
}

/* A follower is down while the others take ~600 writes (several snapshot intervals); after a
 * restart it catches up: its local read sees the last write, and a linearizable read through
 * it sees every acknowledged write, and it did so by installing a snapshot. */
static void follower_down_during_compaction_catches_up(void **state)
{
    struct ih_fix *f = *state;
    int l = ih_cluster_leader(&f->c, 10000);
    assert_true(l >= 0);
    size_t down = (size_t)(l + 1) % N;
    assert_int_equal(0, ih_member_stop(&f->c, down, SIGKILL));

    struct ih_writer *w = &f->w;
    assert_int_equal(0, ih_writer_start(w, &f->c, "snap/", 100000, 16));
    assert_int_equal(0, ih_writer_wait_acked(w, 600, 60000));
    ih_writer_stop(w);
    for (size_t i = 0; i < N; i++) {
        if (i != down) {
            assert_non_null(f->k[i] = ih_client(&f->c, i, 15000));
        }
    }
    /* Snapshots are finished off the apply thread and the log is compacted at the next write
     * after that: wait for a snapshot well past the follower's log (it stopped at the start),
     * so that the write below compacts the leader's log beyond it. */
    uint64_t deadline = ih_now_ms() + 30000;
    while (created_snapshot(&f->c.m[l]) < 300 && ih_now_ms() < deadline) {
        ih_sleep_ms(20);
    }
    assert_true(created_snapshot(&f->c.m[l]) >= 300);
    ih_sleep_ms(200); /* the loop takes the finished snapshot from the done queue */
    assert_true(ih_put(f->k[l], "marker", "last") > 0);

    assert_int_equal(0, ih_member_start(&f->c, down));
    assert_int_equal(0, ih_member_wait_up(&f->c, down, 30000));
    assert_non_null(f->k[down] = ih_client(&f->c, down, 15000));
    assert_true(ih_fix_eventually_local(f, down, "marker", "last"));
    /* It got there by snapshot: the leader's log was compacted past it (the server's
     * "installed snapshot" log line is the observable trace of the install). */
    assert_true(ih_member_log_has(&f->c.m[down], "installed snapshot"));
    assert_true(ih_writer_check(w, f->k[down]) >= 600);
    /* And it takes part again: a write through it is read back everywhere. */
    assert_true(ih_put(f->k[down], "back", "yes") > 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(1, ih_get(f->k[i], "back", false, NULL, 0));
    }
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(follower_down_during_compaction_catches_up, setup,
                                        ih_fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
