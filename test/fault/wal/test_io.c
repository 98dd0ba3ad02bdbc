/* I/O failure injection through the fault fs: a failed write, fdatasync, rename or
 * preallocation reaches the caller, nothing after it is reported durable, the WAL stays failed,
 * and what was durable before survives a crash.  ENOSPC keeps its own code.  Failures while
 * opening and at the Nth allocation unwind cleanly (ASan checks the leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>

#include "test/lib/seed.h"
#include "test/unit/wal/util.h"
#include "wal/wal.h"

struct fx
{
    char dir[256];
    struct wal_fs *fs;
    struct wal_options opts;
};

static void quiet(void *ctx, const char *line)
{
    (void)ctx;
    (void)line;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    tw_mkdtemp(f->dir, sizeof f->dir);
    assert_int_equal(wal_fault_fs_new(&f->fs), 0);
    f->opts = (struct wal_options){.segment_size = 64 * 1024, .fs = f->fs, .log = quiet};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    wal_fault_fs_free(f->fs);
    tw_rmdir(f->dir);
    free(f);
    return 0;
}

/* Open on the fault fs, write 1..10 durably, and wait until the pipeline is idle so that the
 * next armed fault hits the writer, not a spare being prepared. */
static struct wal *open_with_ten(struct fx *f)
{
    struct wal *w = NULL;
    assert_int_equal(wal_open(f->dir, &f->opts, &w, NULL, NULL), 0);
    assert_int_equal(tw_append(w, 1, 10, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    struct wal_stats s;
    do {
        sched_yield();
        wal_stats_get(w, &s);
    } while (s.spares_ready < 2);
    return w;
}

/* Reopen on the plain POSIX fs and return the last index. */
static uint64_t reopen_last(struct fx *f)
{
    struct wal_options o = f->opts;
    o.fs = NULL;
    struct wal *w = NULL;
    struct wal_recovered rec;
    char err[WAL_ERRMSG_SIZE] = "";
    int rv = wal_open(f->dir, &o, &w, &rec, err);
    if (rv != 0) {
        fprintf(stderr, "reopen: %s\n", err);
    }
    assert_int_equal(rv, 0);
    for (uint64_t i = 1; i <= rec.last_index; i++) {
        assert_true(tw_check(wal_memtable(w), i, 1));
    }
    wal_close(w);
    return rec.last_index;
}

/* The failed state: the error comes back from every later call, and durability is frozen. */
static void assert_failed(struct wal *w, int code, uint64_t durable_index)
{
    struct wal_durable d;
    assert_int_equal(wal_durable(w, &d), code);
    assert_true(d.index == durable_index);
    assert_int_equal(tw_append(w, 21, 22, 1, NULL), code);
    struct wal_hard_state hs = {9, 9, 9};
    assert_int_equal(wal_set_hard_state(w, &hs, NULL), code);
    assert_int_equal(wal_mark_snapshot(w, 5, 1, NULL), code);
    assert_int_equal(wal_sync_wait(w, 0), code);
    assert_true(strlen(wal_errmsg(w)) > 0);
}

static void fsync_failure_is_sticky(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_FSYNC, 1, EIO, false);
    uint64_t t;
    assert_int_equal(tw_append(w, 11, 20, 1, &t), 0);
    assert_int_equal(wal_sync_wait(w, t), WAL_EIO);
    assert_non_null(strstr(wal_errmsg(w), "fdatasync"));
    assert_failed(w, WAL_EIO, 10);
    /* Only the failed fsync was armed: the WAL still refuses, as PostgreSQL learned it must. */
    wal_fault_fs_crash(f->fs);
    wal_close(w);
    assert_true(reopen_last(f) == 10);
}

/* The same through wal_flush_here: whichever thread writes the batch, the error reaches the
 * caller and the WAL stays failed. */
static void fsync_failure_on_caller(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_FSYNC, 1, EIO, false);
    uint64_t t;
    bool done = true;
    assert_int_equal(tw_append(w, 11, 12, 1, &t), 0);
    int rv = wal_flush_here(w, 1 << 20, &done);
    assert_false(done);
    if (rv == 0) {
        assert_int_equal(wal_sync_wait(w, t), WAL_EIO); /* the writer thread took it */
    } else {
        assert_int_equal(rv, WAL_EIO);
    }
    assert_non_null(strstr(wal_errmsg(w), "fdatasync"));
    assert_failed(w, WAL_EIO, 10);
    assert_int_equal(wal_flush_here(w, 1 << 20, &done), WAL_EIO);
    wal_fault_fs_crash(f->fs);
    wal_close(w);
    assert_true(reopen_last(f) == 10);
}

static void write_failure_reaches_caller(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_WRITE, 1, EIO, false);
    assert_int_equal(tw_append(w, 11, 20, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), WAL_EIO);
    assert_non_null(strstr(wal_errmsg(w), "write"));
    assert_failed(w, WAL_EIO, 10);
    wal_close(w);
    assert_true(reopen_last(f) == 10);
}

static void enospc_keeps_its_code(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_WRITE, 1, ENOSPC, true);
    assert_int_equal(tw_append(w, 11, 20, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), WAL_ENOSPC);
    assert_failed(w, WAL_ENOSPC, 10);
    wal_fault_fs_crash(f->fs);
    wal_close(w);
    assert_true(reopen_last(f) == 10);
}

/* Without a crash the unsynced write may or may not be on disk, but never half of it. */
static void failed_fsync_without_crash_is_all_or_nothing(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_FSYNC, 1, EIO, true);
    assert_int_equal(tw_append(w, 11, 20, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), WAL_EIO);
    wal_close(w);
    uint64_t last = reopen_last(f);
    assert_true(last == 10 || last == 20);
}

/* A cut whose rename fails: the batch before it was durable and stays; the WAL fails. */
static void rename_failure_during_cut(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 4096;
    struct wal *w = open_with_ten(f);
    wal_fault_fs_arm(f->fs, WAL_FAULT_RENAME, 1, EIO, true);
    uint64_t last_ok = 10;
    int rv = 0;
    for (uint64_t i = 11; i < 2000 && rv == 0; i += 10) {
        rv = tw_append(w, i, i + 9, 1, NULL);
        if (rv == 0) {
            rv = wal_sync_wait(w, 0);
        }
        if (rv == 0) {
            last_ok = i + 9;
        }
    }
    assert_int_equal(rv, WAL_EIO);
    struct wal_durable d;
    assert_int_equal(wal_durable(w, &d), WAL_EIO);
    assert_true(d.index == last_ok);
    wal_fault_fs_crash(f->fs);
    wal_close(w);
    assert_true(reopen_last(f) >= last_ok);
}

/* Preallocation failing with ENOSPC is reported when a cut needs the spare, not before. */
static void preallocation_enospc(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 4096;
    /* A fresh WAL cannot start without its first segment's space. */
    wal_fault_fs_arm(f->fs, WAL_FAULT_FALLOCATE, 1, ENOSPC, true);
    struct wal *w = NULL;
    char err[WAL_ERRMSG_SIZE] = "";
    assert_int_equal(wal_open(f->dir, &f->opts, &w, NULL, err), WAL_ENOSPC);
    assert_non_null(strstr(err, "preallocate"));
    /* The first segment gets its space (1st fallocate); every spare fails. */
    wal_fault_fs_arm(f->fs, WAL_FAULT_FALLOCATE, 2, ENOSPC, true);
    assert_int_equal(wal_open(f->dir, &f->opts, &w, NULL, NULL), 0);
    int rv = 0;
    uint64_t last_ok = 0;
    for (uint64_t i = 1; i < 2000 && rv == 0; i += 10) {
        rv = tw_append(w, i, i + 9, 1, NULL);
        rv = rv == 0 ? wal_sync_wait(w, 0) : rv;
        last_ok = rv == 0 ? i + 9 : last_ok;
    }
    assert_int_equal(rv, WAL_ENOSPC);
    assert_true(last_ok > 0);
    assert_non_null(strstr(wal_errmsg(w), "spare"));
    wal_close(w);
    assert_true(reopen_last(f) >= last_ok);
}

/* Fail the Nth operation of each kind while opening a fresh and an existing WAL: a clean error
 * or success, never a crash or leak, and the directory still opens afterwards. */
static void failures_during_open(void **state)
{
    struct fx *f = *state;
    struct wal *w = NULL;
    assert_int_equal(wal_open(f->dir, &f->opts, &w, NULL, NULL), 0);
    assert_int_equal(tw_append(w, 1, 10, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    enum wal_fault_op ops[] = {WAL_FAULT_WRITE, WAL_FAULT_FSYNC, WAL_FAULT_RENAME,
                               WAL_FAULT_FALLOCATE};
    for (size_t k = 0; k < 4; k++) {
        for (unsigned nth = 1; nth <= 4; nth++) {
            char dir2[256];
            tw_mkdtemp(dir2, sizeof dir2);
            const char *dirs[2] = {f->dir, dir2};
            for (int d = 0; d < 2; d++) {
                wal_fault_fs_arm(f->fs, ops[k], nth, EIO, false);
                char err[WAL_ERRMSG_SIZE] = "";
                int rv = wal_open(dirs[d], &f->opts, &w, NULL, err);
                assert_true(rv == 0 || rv == WAL_EIO);
                if (rv == 0) {
                    wal_close(w);
                } else {
                    assert_true(strlen(err) > 0);
                }
                wal_fault_fs_arm(f->fs, ops[k], 0, 0, false);
            }
            tw_rmdir(dir2);
        }
    }
    assert_true(reopen_last(f) == 10);
}

/* ---- Nth allocation failure ---- */

static atomic_long alloc_countdown;

static void *failing_malloc(size_t n)
{
    if (atomic_fetch_sub(&alloc_countdown, 1) == 1) {
        return NULL;
    }
    return malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    if (atomic_fetch_sub(&alloc_countdown, 1) == 1) {
        return NULL;
    }
    return realloc(p, n);
}

/* Fail allocation N for N = 1, 2, ... until a run no longer reaches N: every run either
 * succeeds or reports WAL_ENOMEM, and ASan sees no leak. */
static void oom_at_every_allocation(void **state)
{
    struct fx *f = *state;
    struct wal_options o = f->opts;
    o.fs = NULL;
    o.segment_size = 4096;
    int failures = 0;
    long nth = 1;
    static unsigned char big[200 * 1024]; /* past the slab limit: its own allocation */
    for (;; nth++) {
        char dir[256];
        tw_mkdtemp(dir, sizeof dir);
        atomic_store(&alloc_countdown, nth);
        wal_set_alloc(failing_malloc, failing_realloc, NULL);
        struct wal *w = NULL;
        int rv = wal_open(dir, &o, &w, NULL, NULL);
        for (uint64_t i = 1; rv == 0 && i <= 60; i += 6) {
            rv = tw_append(w, i, i + 5, 1, NULL);
            rv = rv == 0 ? wal_sync_wait(w, 0) : rv;
        }
        struct wal_entry e = {61, 1, 0, big, sizeof big};
        rv = rv == 0 ? wal_append(w, &e, 1, NULL) : rv;
        rv = rv == 0 ? wal_mark_snapshot(w, 30, 1, NULL) : rv;
        rv = rv == 0 ? wal_sync_wait(w, 0) : rv;
        failures += rv != 0;
        assert_true(rv == 0 || rv == WAL_ENOMEM);
        wal_close(w);
        wal_set_alloc(NULL, NULL, NULL);
        tw_rmdir(dir);
        if (atomic_load(&alloc_countdown) > 0) {
            break; /* this run made fewer than nth allocations: all points covered */
        }
    }
    assert_true(nth > 5 && failures >= 5);
}

int main(void)
{
    if (access("/dev/shm", W_OK) == 0) {
        setenv("TMPDIR", "/dev/shm", 1); /* The faults are injected: no need for a real disk. */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fsync_failure_is_sticky, setup, teardown),
        cmocka_unit_test_setup_teardown(fsync_failure_on_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(write_failure_reaches_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(enospc_keeps_its_code, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_fsync_without_crash_is_all_or_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rename_failure_during_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(preallocation_enospc, setup, teardown),
        cmocka_unit_test_setup_teardown(failures_during_open, setup, teardown),
        cmocka_unit_test_setup_teardown(oom_at_every_allocation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
