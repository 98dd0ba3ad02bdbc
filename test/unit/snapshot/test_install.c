/* Install: a crash before any file-system step of receive + install leaves the old snapshot
 * or the complete new one, never a mix, and the transfer then resumes to completion; a file
 * that does not match the manifest at install time is received again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/snapshot/helpers.h"

#define CHUNK 4096u
#define SYNC_BYTES 16384u

static const char *names[] = {"000031.ldb", "000032.ldb", "000033.ldb", "000034.ldb"};
static const size_t sizes[] = {40000, 0, 3000, 20001};
static const char *old_names[] = {"000001.ldb"};
static uint64_t voters[] = {1, 2, 3};

struct fixture
{
    char src[PATH_MAX];
    char root_a[PATH_MAX]; /* leader's snapshots */
    char root_b[PATH_MAX]; /* follower's snapshots: holds an old one (index 100) */
    char snapdir[PATH_MAX];
    uint64_t rng;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[SNAP_ERRMSG_SIZE], name[40];
    scratch_dir(f->src, "src");
    scratch_dir(f->root_a, "a");
    scratch_dir(f->root_b, "b");
    f->rng = test_seed("snap_install");
    for (int i = 0; i < 4; i++) {
        write_file(f->src, names[i], sizes[i], &f->rng);
    }
    write_file(f->src, old_names[0], 777, &f->rng);
    struct snap_meta m = {.index = 900, .term = 3, .revision = 1, .voters = voters, .n_voters = 3};
    struct snap_meta old = {
        .index = 100, .term = 2, .revision = 1, .voters = voters, .n_voters = 3};
    if (snap_create(f->root_a, &m, f->src, names, 4, NULL, err) != 0 ||
        snap_create(f->root_b, &old, f->src, old_names, 1, NULL, err) != 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    snap_dir_name(900, 3, name, sizeof name);
    join(f->snapdir, f->root_a, name);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    snap_fs_fault_set(NULL, NULL);
    rm_tree(f->src);
    rm_tree(f->root_a);
    rm_tree(f->root_b);
    free(f);
    return 0;
}

/* Run a whole transfer + install over a perfect link, stopping at the first error (a crash
 * when the hook trips).  Returns that error, 0 when installed, SNAP_EEXIST if already there. */
static int transfer(const struct fixture *f, uint64_t *sent)
{
    struct snap_sender_opts so = {.chunk_size = CHUNK, .window = 3};
    struct snap_receiver_opts ro = {.sync_bytes = SYNC_BYTES};
    struct snap_sender *s;
    struct snap_receiver *r;
    char err[SNAP_ERRMSG_SIZE];
    unsigned char ack[SNAP_ACK_SIZE];
    const void *man, *c;
    size_t len;
    assert_int_equal(snap_sender_open(f->snapdir, &so, &s, err), 0);
    snap_sender_manifest(s, &man, &len);
    int rv = snap_receiver_open(f->root_b, man, len, &ro, &r, ack, err);
    if (rv == 0) {
        rv = snap_sender_ack(s, ack, sizeof ack);
    }
    while (rv == 0 && !snap_sender_is_done(s)) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_non_null(c);
        rv = snap_receiver_put(r, c, len, ack);
        if (rv == 0) {
            assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
        }
    }
    if (rv == 0) {
        rv = snap_receiver_finish(r, NULL, NULL);
    }
    uint64_t wire, total;
    snap_sender_stats(s, sent, &wire, &total);
    snap_receiver_close(r);
    snap_sender_close(s);
    return rv;
}

/* What a restart sees: exactly one of the old or the complete new snapshot is the latest. */
static uint64_t latest_index(const struct fixture *f)
{
    char err[SNAP_ERRMSG_SIZE];
    bool found;
    size_t skipped;
    struct snap_manifest m;
    assert_int_equal(snap_latest(f->root_b, true, &found, &m, &skipped, err), 0);
    assert_true(found);
    assert_int_equal(skipped, 0); /* never a half-installed snapshot directory */
    uint64_t index = m.meta.index;
    snap_manifest_fini(&m);
    return index;
}

static void assert_new_identical(const struct fixture *f)
{
    char dir[PATH_MAX], name[40], a[PATH_MAX], b[PATH_MAX];
    snap_dir_name(900, 3, name, sizeof name);
    join(dir, f->root_b, name);
    for (int i = 0; i < 4; i++) {
        join(a, f->src, names[i]);
        join(b, dir, names[i]);
        assert_true(same_file(a, b));
    }
}

static void install_crash_at_every_step(void **state)
{
    struct fixture *f = *state;
    uint64_t total_size = 40000 + 3000 + 20001, sent;
    struct crash_hook count = {0};
    snap_fs_fault_set(crash_fault, &count);
    assert_int_equal(transfer(f, &sent), 0); /* a dry run counts the steps */
    snap_fs_fault_set(NULL, NULL);
    const int steps = count.count;
    fprintf(stderr, "receive + install: %d file-system steps\n", steps);
    assert_true(steps > 30);
    for (int at = 1; at <= steps; at++) {
        char err[SNAP_ERRMSG_SIZE], name[40], dir[PATH_MAX];
        teardown(state); /* fresh fixture per crash point */
        setup(state);
        f = *state;
        struct crash_hook h = {.crash_at = at};
        snap_fs_fault_set(crash_fault, &h);
        int rv = transfer(f, &sent);
        snap_fs_fault_set(NULL, NULL);
        assert_true(h.crashed);
        uint64_t index = latest_index(f);
        assert_true(index == 100 || index == 900);
        /* Only the last step (dropping PROGRESS after the rename) may fail unnoticed. */
        assert_true(rv != 0 || index == 900);
        if (index == 900) {
            assert_new_identical(f);
        }
        /* Restart: the transfer resumes (or finds the snapshot installed) and completes. */
        rv = transfer(f, &sent);
        assert_true(rv == 0 || (rv == SNAP_EEXIST && index == 900));
        assert_true(sent <= total_size); /* resumed: never more than one full pass */
        assert_int_equal(latest_index(f), 900);
        assert_new_identical(f);
        /* The old snapshot is still there until retention removes it. */
        snap_dir_name(100, 2, name, sizeof name);
        join(dir, f->root_b, name);
        assert_int_equal(snap_verify(dir, NULL, err), 0);
        assert_int_equal(snap_retain(f->root_b, 1, NULL, err), 0);
        assert_int_not_equal(snap_verify(dir, NULL, err), 0);
    }
}

/* Damage a fully received file in the temporary directory: finish refuses with ECORRUPT and a
 * RESUME from the start of that file, and the resent bytes make the install succeed. */
static void install_detects_damaged_file(void **state)
{
    struct fixture *f = *state;
    struct snap_sender_opts so = {.chunk_size = CHUNK};
    struct snap_sender *s;
    struct snap_receiver *r;
    char err[SNAP_ERRMSG_SIZE], path[PATH_MAX], tmp[PATH_MAX], name[40];
    unsigned char ack[SNAP_ACK_SIZE];
    const void *man, *c;
    size_t len;
    assert_int_equal(snap_sender_open(f->snapdir, &so, &s, err), 0);
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, NULL, &r, ack, err), 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    while (!snap_sender_is_done(s)) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    unsigned char last_ok[SNAP_ACK_SIZE];
    memcpy(last_ok, ack, sizeof ack);
    snap_dir_name(900, 3, name, sizeof name);
    snprintf(tmp, sizeof tmp, "tmp-%s", name);
    join(path, f->root_b, tmp);
    join(tmp, path, names[2]);
    FILE *fp = fopen(tmp, "r+b");
    fseek(fp, 1234, SEEK_SET);
    fputc(0, fp);
    fputc(0xff, fp);
    fclose(fp);
    assert_int_equal(snap_receiver_finish(r, NULL, ack), SNAP_ECORRUPT);
    assert_non_null(strstr(snap_receiver_errmsg(r), names[2]));
    struct snap_ack a;
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_RESUME && a.file == 2 && a.offset == 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    /* An OK of before the reset, still in flight, is stale now: it must not skip file 2. */
    assert_int_equal(snap_sender_ack(s, last_ok, sizeof last_ok), SNAP_ESTALE);
    assert_false(snap_sender_is_done(s));
    while (!snap_sender_is_done(s)) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    assert_int_equal(snap_receiver_finish(r, NULL, NULL), 0);
    snap_receiver_close(r);
    snap_sender_close(s);
    assert_int_equal(latest_index(f), 900);
    assert_new_identical(f);
    /* A second transfer of the same snapshot is refused: it is installed. */
    assert_int_equal(snap_sender_open(f->snapdir, &so, &s, err), 0);
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, NULL, &r, ack, err), SNAP_EEXIST);
    assert_null(r);
    assert_false(snap_sender_is_done(s));
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0); /* RESUME at the end */
    assert_true(snap_sender_is_done(s));
    assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
    assert_null(c);
    snap_sender_close(s);
}

/* Progress belongs to one snapshot identity: a same-index snapshot with another manifest starts
 * over, and the temporary directory of another snapshot is removed. */
static void receiver_starts_over_for_other_snapshot(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE], other_root[PATH_MAX], other_dir[PATH_MAX], name[40];
    struct snap_receiver_opts ro = {.sync_bytes = CHUNK};
    struct snap_sender_opts so = {.chunk_size = CHUNK};
    struct snap_sender *s, *s2;
    struct snap_receiver *r;
    unsigned char ack[SNAP_ACK_SIZE];
    const void *man, *c;
    size_t len;
    assert_int_equal(snap_sender_open(f->snapdir, &so, &s, err), 0);
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &ro, &r, ack, err), 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
    }
    snap_receiver_close(r);
    /* Same index and term, other content (a different manifest crc). */
    scratch_dir(other_root, "other");
    struct snap_meta m = {.index = 900, .term = 3, .revision = 2, .voters = voters, .n_voters = 3};
    assert_int_equal(snap_create(other_root, &m, f->src, names + 2, 2, NULL, err), 0);
    snap_dir_name(900, 3, name, sizeof name);
    join(other_dir, other_root, name);
    assert_int_equal(snap_sender_open(other_dir, &so, &s2, err), 0);
    snap_sender_manifest(s2, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &ro, &r, ack, err), 0);
    struct snap_ack a;
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_RESUME && a.file == 0 && a.offset == 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), SNAP_ESTALE); /* not for s */
    snap_receiver_close(r);
    /* The first snapshot again: its progress is gone (overwritten), it starts over too. */
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &ro, &r, ack, err), 0);
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.file == 0 && a.offset == 0);
    snap_receiver_close(r);
    /* Another index: the temporary directory of 900 is removed. */
    m.index = 950;
    assert_int_equal(snap_create(other_root, &m, f->src, names, 1, NULL, err), 0);
    snap_dir_name(950, 3, name, sizeof name);
    join(other_dir, other_root, name);
    snap_sender_close(s2);
    assert_int_equal(snap_sender_open(other_dir, &so, &s2, err), 0);
    snap_sender_manifest(s2, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &ro, &r, ack, err), 0);
    char tmp[PATH_MAX], tmpname[48];
    snap_dir_name(900, 3, name, sizeof name);
    snprintf(tmpname, sizeof tmpname, "tmp-%s", name);
    join(tmp, f->root_b, tmpname);
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0);
    snap_receiver_close(r);
    snap_sender_close(s);
    snap_sender_close(s2);
    rm_tree(other_root);
}

/* A single failing operation (ENOSPC) at each step, the process going on: the error reaches the
 * caller as SNAP_ENOSPC, nothing half-installed is visible, and a retry completes. */
static void install_error_at_every_step(void **state)
{
    struct fixture *f = *state;
    uint64_t sent;
    for (int at = 1;; at++) {
        teardown(state);
        setup(state);
        f = *state;
        struct crash_hook h = {.crash_at = at, .once = true};
        snap_fs_fault_set(crash_fault, &h);
        int rv = transfer(f, &sent);
        snap_fs_fault_set(NULL, NULL);
        if (!h.crashed) {
            assert_int_equal(rv, 0);
            break;
        }
        uint64_t index = latest_index(f);
        /* The only ignored failure is dropping PROGRESS after the rename. */
        assert_true(rv == SNAP_ENOSPC || (rv == 0 && index == 900));
        assert_true(index == 100 || index == 900);
        rv = transfer(f, &sent);
        assert_true(rv == 0 || (rv == SNAP_EEXIST && index == 900));
        assert_int_equal(latest_index(f), 900);
        assert_new_identical(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(install_crash_at_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(install_error_at_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(install_detects_damaged_file, setup, teardown),
        cmocka_unit_test_setup_teardown(receiver_starts_over_for_other_snapshot, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
