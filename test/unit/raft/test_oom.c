/* Out of memory at the Nth allocation, for every N a small scenario performs (SQLite-style
 * malloc tests): the core reports RAFT_ENOMEM, never crashes or leaks (ASan), and the cluster
 * still converges once memory is back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/unit/raft/harness.h"

struct countdown
{
    long left; /* Allocations until the failure; < 0: never fail. */
    unsigned long failures;
    unsigned long calls;
};

static void *cd_malloc(void *ctx, size_t size)
{
    struct countdown *c = ctx;
    c->calls++;
    if (c->left >= 0 && c->left-- == 0) {
        c->failures++;
        return NULL;
    }
    return malloc(size);
}

static void *cd_realloc(void *ctx, void *p, size_t size)
{
    struct countdown *c = ctx;
    c->calls++;
    if (c->left >= 0 && c->left-- == 0) {
        c->failures++;
        return NULL;
    }
    return realloc(p, size);
}

static void cd_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void check_rv(int rv)
{
    if (rv != 0 && rv != RAFT_ENOMEM) {
        fprintf(stderr, "unexpected error %d (%s)\n", rv, raft_strerror(rv));
        fail();
    }
}

/* Deliver captured messages until quiet, tolerating ENOMEM (the message is then lost). */
static void settle(struct h_node *nodes, unsigned count)
{
    for (int round = 0; round < 200; round++) {
        bool any = false;
        for (unsigned i = 0; i < count; i++) {
            size_t n = nodes[i].n_out;
            if (n == 0) {
                continue;
            }
            any = true;
            struct raft_msg *batch = malloc(n * sizeof *batch);
            memcpy(batch, nodes[i].out, n * sizeof *batch);
            nodes[i].n_out = 0;
            for (size_t k = 0; k < n; k++) {
                if (batch[k].to >= 1 && batch[k].to <= count) {
                    check_rv(h_recv(&nodes[batch[k].to - 1], &batch[k]));
                }
                h_free_msg(&batch[k]);
            }
            free(batch);
        }
        if (!any) {
            return;
        }
    }
}

static bool scenario(struct countdown *cd)
{
    struct raft_heap heap = {
        .ctx = cd, .malloc = cd_malloc, .realloc = cd_realloc, .free = cd_free};
    struct raft_config cfg = {.heap = &heap, .max_inflight_msgs = 4};
    struct h_node nodes[3];
    for (raft_id i = 1; i <= 3; i++) {
        int rv = h_start(&nodes[i - 1], i, 3, &cfg);
        check_rv(rv);
        if (rv != 0) {
            cd->left = -1;
            assert_int_equal(h_start(&nodes[i - 1], i, 3, &cfg), 0);
        }
    }
    check_rv(h_campaign(&nodes[0]));
    settle(nodes, 3);
    for (int i = 0; i < 8; i++) {
        for (unsigned k = 0; k < 3; k++) {
            if (raft_role(nodes[k].r) == RAFT_LEADER) {
                check_rv(h_propose(&nodes[k], "payload", NULL));
            }
        }
        settle(nodes, 3);
    }
    /* Memory is back: ticks repair whatever was lost. */
    cd->left = -1;
    bool converged = false;
    for (int t = 0; t < 400 && !converged; t++) {
        for (unsigned k = 0; k < 3; k++) {
            check_rv(h_tick(&nodes[k], 1));
        }
        settle(nodes, 3);
        raft_id l = 0;
        for (unsigned k = 0; k < 3; k++) {
            if (raft_role(nodes[k].r) == RAFT_LEADER) {
                l = k + 1;
            }
        }
        if (l == 0 || raft_commit_index(nodes[l - 1].r) != raft_last_index(nodes[l - 1].r)) {
            continue;
        }
        converged = true;
        for (unsigned k = 0; k < 3; k++) {
            converged = converged && nodes[k].applied == raft_commit_index(nodes[l - 1].r);
        }
    }
    for (unsigned k = 0; k < 3; k++) {
        h_stop(&nodes[k]);
    }
    return converged;
}

static void every_allocation_can_fail(void **state)
{
    (void)state;
    struct countdown probe = {.left = -1};
    assert_true(scenario(&probe));
    unsigned long total = probe.calls;
    assert_true(total > 20);
    unsigned long failed = 0;
    for (unsigned long n = 0; n < total; n++) {
        struct countdown cd = {.left = (long)n};
        assert_true(scenario(&cd));
        failed += cd.failures;
    }
    assert_true(failed > total / 2);
    fprintf(stderr, "%lu allocation points failed once each; all converged\n", total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_allocation_can_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
