/* The WAL end to end on a real directory: append, group commit, recovery, overwrite, segment
 * cuts, snapshot release, locking, notification and tail repair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>

#include "test/lib/seed.h"
#include "test/unit/wal/util.h"
#include "wal/wal.h"

struct fx
{
    char dir[256];
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
    f->opts.segment_size = 64 * 1024;
    f->opts.no_prealloc = false;
    f->opts.log = quiet;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tw_rmdir(f->dir);
    free(f);
    return 0;
}

static struct wal *open_ok(struct fx *f, struct wal_recovered *rec)
{
    struct wal *w = NULL;
    char err[WAL_ERRMSG_SIZE] = "";
    int rv = wal_open(f->dir, &f->opts, &w, rec, err);
    if (rv != 0) {
        fprintf(stderr, "wal_open: %s: %s\n", wal_strerror(rv), err);
    }
    assert_int_equal(rv, 0);
    return w;
}

static void append_sync_reopen(void **state)
{
    struct fx *f = *state;
    struct wal_recovered rec;
    struct wal *w = open_ok(f, &rec);
    assert_true(rec.last_index == 0 && rec.snap_index == 0 && rec.segments == 0);
    uint64_t t1, t2;
    assert_int_equal(tw_append(w, 1, 10, 1, &t1), 0);
    struct wal_hard_state hs = {1, 2, 5};
    assert_int_equal(wal_set_hard_state(w, &hs, &t2), 0);
    assert_true(t2 >= t1);
    assert_int_equal(wal_sync_wait(w, t2), 0);
    struct wal_durable d;
    assert_int_equal(wal_durable(w, &d), 0);
    assert_true(d.ticket >= t2 && d.index == 10 && d.term == 1 && d.hs.commit == 5);
    assert_true(tw_check(wal_memtable(w), 7, 1));
    wal_close(w);

    w = open_ok(f, &rec);
    assert_true(rec.last_index == 10 && rec.first_index == 1 && rec.segments == 1);
    assert_true(rec.hs.term == 1 && rec.hs.vote == 2 && rec.hs.commit == 5);
    assert_true(rec.torn_bytes == 0);
    for (uint64_t i = 1; i <= 10; i++) {
        assert_true(tw_check(wal_memtable(w), i, 1));
    }
    /* Appending continues after the recovered tail. */
    assert_int_equal(tw_append(w, 11, 12, 2, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 12 && tw_check(wal_memtable(w), 12, 2));
    wal_close(w);
}

static void bad_appends_are_refused(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    assert_int_equal(tw_append(w, 1, 5, 1, NULL), 0);
    assert_int_equal(tw_append(w, 7, 8, 1, NULL), WAL_EINVAL); /* gap */
    struct wal_entry e[2] = {{6, 1, 0, NULL, 0}, {8, 1, 0, NULL, 0}};
    assert_int_equal(wal_append(w, e, 2, NULL), WAL_EINVAL); /* not consecutive */
    assert_true(strlen(wal_errmsg(w)) > 0);
    assert_true(wal_memtable_last(wal_memtable(w)) == 5);
    wal_close(w);
}

/* Many appends without waiting: tickets rise, every one becomes durable, batches <= appends. */
static void group_commit_pipelines(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 1 << 20;
    struct wal *w = open_ok(f, NULL);
    uint64_t prev = 0, t = 0;
    for (uint64_t i = 1; i <= 2000; i++) {
        assert_int_equal(tw_append(w, i, i, 1, &t), 0);
        assert_true(t >= prev);
        prev = t;
    }
    assert_int_equal(wal_sync_wait(w, t), 0);
    struct wal_durable d;
    assert_int_equal(wal_durable(w, &d), 0);
    assert_true(d.index == 2000 && d.ticket == t);
    struct wal_stats s;
    wal_stats_get(w, &s);
    assert_true(s.batches >= 1 && s.batches <= 2000);
    assert_true(s.batches == t);
    fprintf(stderr, "2000 appends -> %llu write+fdatasync batches\n",
            (unsigned long long)s.batches);
    wal_close(w);
}

static void overwrite_survives_replay(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    assert_int_equal(tw_append(w, 1, 100, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    assert_int_equal(tw_append(w, 50, 60, 2, NULL), 0);
    assert_true(wal_memtable_last(wal_memtable(w)) == 60);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    struct wal_durable d;
    wal_durable(w, &d);
    assert_true(d.index == 60 && d.term == 2);
    wal_close(w);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 60);
    for (uint64_t i = 1; i <= 60; i++) {
        assert_true(tw_check(wal_memtable(w), i, i < 50 ? 1 : 2));
    }
    wal_close(w);
}

/* The overwrite record lands in a later segment than the entries it replaces. */
static void overwrite_across_segments(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 2048;
    struct wal *w = open_ok(f, NULL);
    for (uint64_t i = 1; i <= 300; i += 10) {
        assert_int_equal(tw_append(w, i, i + 9, 1, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    assert_int_equal(tw_append(w, 100, 120, 2, NULL), 0);
    assert_int_equal(tw_append(w, 110, 115, 3, NULL), 0); /* twice in one batch */
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 115 && rec.segments > 5);
    for (uint64_t i = 1; i <= 115; i++) {
        assert_true(tw_check(wal_memtable(w), i, i < 100 ? 1 : i < 110 ? 2 : 3));
    }
    wal_close(w);
}

static void cut_segments_and_replay(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 8 * 1024;
    struct wal *w = open_ok(f, NULL);
    for (uint64_t i = 1; i <= 600; i += 10) {
        assert_int_equal(tw_append(w, i, i + 9, 1 + i / 100, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    struct wal_stats s;
    wal_stats_get(w, &s);
    assert_true(s.segments_cut >= 5);
    wal_close(w);
    assert_int_equal(tw_count(f->dir, "open-"), 1);
    assert_true(tw_count(f->dir, "0") >= 5);
    assert_int_equal(tw_count(f->dir, "tmp-"), 0);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.segments >= 6 && rec.last_index == 600);
    for (uint64_t i = 1; i <= 600; i++) {
        assert_true(tw_check(wal_memtable(w), i, 1 + ((i - 1) / 10 * 10 + 1) / 100));
    }
    wal_close(w);
}

/* After a marker at I, closed segments wholly below I go; the one holding I stays; reopen
 * restores the marker, hard state and the entries after I. */
static void snapshot_releases_segments(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 4 * 1024;
    struct wal *w = open_ok(f, NULL);
    struct wal_hard_state hs = {3, 1, 400};
    assert_int_equal(wal_set_hard_state(w, &hs, NULL), 0);
    for (uint64_t i = 1; i <= 800; i += 20) {
        assert_int_equal(tw_append(w, i, i + 19, 3, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    int before = tw_count(f->dir, "");
    assert_int_equal(wal_mark_snapshot(w, 500, 3, NULL), 0);
    assert_true(wal_memtable_first(wal_memtable(w)) == 501);
    assert_int_equal(wal_mark_snapshot(w, 400, 3, NULL), WAL_ESNAPOLD);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    struct wal_stats s;
    wal_stats_get(w, &s);
    assert_true(s.segments_freed > 0);
    wal_close(w);
    assert_true(tw_count(f->dir, "") < before);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.snap_index == 500 && rec.snap_term == 3);
    assert_true(rec.first_index == 501 && rec.last_index == 800);
    assert_true(rec.hs.term == 3 && rec.hs.commit == 400);
    for (uint64_t i = 501; i <= 800; i++) {
        assert_true(tw_check(wal_memtable(w), i, 3));
    }
    uint64_t t;
    assert_int_equal(wal_memtable_term(wal_memtable(w), 500, &t), 0);
    assert_true(t == 3);
    /* Compacting the memtable directly frees memory only; a later marker below that point
     * is still recorded. */
    assert_int_equal(wal_memtable_compact(wal_memtable(w), 700), 0);
    assert_int_equal(wal_mark_snapshot(w, 600, 3, NULL), 0);
    assert_true(wal_memtable_first(wal_memtable(w)) == 701);
    /* A snapshot past the log resets it. */
    assert_int_equal(wal_mark_snapshot(w, 5000, 9, NULL), 0);
    assert_int_equal(tw_append(w, 5001, 5010, 9, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    w = open_ok(f, &rec);
    assert_true(rec.snap_index == 5000 && rec.first_index == 5001 && rec.last_index == 5010);
    assert_true(tw_check(wal_memtable(w), 5005, 9));
    wal_close(w);
}

static void second_open_is_locked(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    struct wal *w2 = NULL;
    char err[WAL_ERRMSG_SIZE] = "";
    assert_int_equal(wal_open(f->dir, &f->opts, &w2, NULL, err), WAL_ELOCKED);
    assert_non_null(strstr(err, f->dir));
    wal_close(w);
    w2 = open_ok(f, NULL);
    wal_close(w2);
}

/* The lock is on the directory, across processes: a child gets WAL_ELOCKED. */
static void other_process_is_locked_out(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct wal *w2 = NULL;
        char err[WAL_ERRMSG_SIZE] = "";
        int rv = wal_open(f->dir, &f->opts, &w2, NULL, err);
        _exit(rv == WAL_ELOCKED && strstr(err, "lock") != NULL ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wal_close(w);
}

static void notify_fd_fires(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    struct pollfd p = {wal_notify_fd(w), POLLIN, 0};
    assert_int_equal(poll(&p, 1, 0), 0);
    uint64_t t;
    assert_int_equal(tw_append(w, 1, 3, 1, &t), 0);
    assert_int_equal(poll(&p, 1, 10000), 1);
    wal_notify_drain(w);
    struct wal_durable d;
    for (;;) {
        assert_int_equal(wal_durable(w, &d), 0);
        if (d.ticket >= t) {
            break;
        }
        assert_int_equal(poll(&p, 1, 10000), 1);
        wal_notify_drain(w);
    }
    assert_true(d.index == 3);
    wal_close(w);
}

/* wal_flush_here writes a small batch on the caller when the writer is idle: durable on return,
 * replayed like any other.  Big batches are left to the writer. */
static void flush_here_writes_on_caller(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    int inline_writes = 0, tries = 0;
    uint64_t next = 1;
    /* The writer thread, woken by the append, races the caller for each batch (under ASan it
     * often wins); go on until the caller has won a few, for at most 20 s. */
    int64_t deadline = tw_now_ms() + 20000;
    for (; inline_writes < 5 && tw_now_ms() < deadline; tries++, next += 2) {
        uint64_t t;
        bool done = false;
        assert_int_equal(tw_append(w, next, next + 1, 1, &t), 0);
        assert_int_equal(wal_flush_here(w, 1 << 20, &done), 0);
        if (done) {
            /* The writer may have taken the batch first; when it did not, no waiting. */
            struct wal_durable d;
            assert_int_equal(wal_durable(w, &d), 0);
            assert_true(d.ticket >= t && d.index == next + 1);
            inline_writes++;
        } else {
            /* The writer took it: let it finish, or every later append piles up behind its
             * fsync and the writer takes them all (3 of 10 million in one loaded CI run). */
            assert_int_equal(wal_sync_wait(w, t), 0);
        }
    }
    fprintf(stderr, "[wal] %d of %d batches written by the caller\n", inline_writes, tries);
    assert_int_equal(inline_writes, 5);
    /* Larger than the limit: not written here. */
    uint64_t t;
    bool done = true;
    assert_int_equal(tw_append(w, next, next + 99, 1, &t), 0);
    assert_int_equal(wal_flush_here(w, 64, &done), 0);
    assert_false(done);
    assert_int_equal(wal_sync_wait(w, t), 0);
    wal_close(w);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == next + 99);
    for (uint64_t i = 1; i <= next + 99; i++) {
        assert_true(tw_check(wal_memtable(w), i, 1));
    }
    wal_close(w);
}

static char *open_segment_path(struct fx *f, char *buf, size_t n)
{
    DIR *d = opendir(f->dir);
    struct dirent *de;
    buf[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "open-", 5) == 0) {
            snprintf(buf, n, "%s/%s", f->dir, de->d_name);
        }
    }
    closedir(d);
    return buf;
}

/* Garbage after the records of the open segment: tolerated (logged, truncated) by default,
 * WAL_ECORRUPT in strict mode. */
static void torn_tail_modes(void **state)
{
    struct fx *f = *state;
    struct wal *w = open_ok(f, NULL);
    assert_int_equal(tw_append(w, 1, 20, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    char path[512];
    open_segment_path(f, path, sizeof path);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 0x1000), 0); /* clear any preallocation */
    struct stat st;
    fstat(fd, &st);
    close(fd);
    fd = open(path, O_RDWR);
    /* Find the end of the records: the first zero header. */
    unsigned char buf[8192];
    ssize_t got = pread(fd, buf, sizeof buf, 0);
    assert_true(got > 0);
    size_t off = WAL_SEG_HEADER_SIZE;
    struct wal_rec r;
    const char *why;
    while (wal_rec_decode(buf + off, (size_t)got - off, &r, &why) == WAL_SCAN_RECORD) {
        off += r.size;
    }
    unsigned char junk[7] = {1, 2, 3, 4, 5, 6, 7};
    assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)off), (ssize_t)sizeof junk);
    close(fd);

    struct wal *w2 = NULL;
    char err[WAL_ERRMSG_SIZE] = "";
    f->opts.recovery = WAL_RECOVER_STRICT;
    assert_int_equal(wal_open(f->dir, &f->opts, &w2, NULL, err), WAL_ECORRUPT);
    assert_non_null(strstr(err, "open-"));
    assert_non_null(strstr(err, "offset"));
    f->opts.recovery = WAL_RECOVER_TOLERATE_TAIL;
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 20 && rec.torn_bytes > 0);
    assert_int_equal(tw_append(w, 21, 30, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    wal_close(w);
    f->opts.recovery = WAL_RECOVER_STRICT;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 30 && rec.torn_bytes == 0);
    wal_close(w);
}

/* Names of closed segments "<first>-<last>" in hex: the smallest last index among them. */
static uint64_t min_closed_last(struct fx *f, int *count)
{
    DIR *d = opendir(f->dir);
    struct dirent *de;
    uint64_t min = UINT64_MAX;
    *count = 0;
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) == 33 && de->d_name[16] == '-') {
            uint64_t last = strtoull(de->d_name + 17, NULL, 16);
            min = last < min ? last : min;
            (*count)++;
        }
    }
    closedir(d);
    return min;
}

/* etcd ReleaseLockTo: no closed segment left whose entries are all below the marker. */
static void release_keeps_segment_holding_marker(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 2048;
    struct wal *w = open_ok(f, NULL);
    for (uint64_t i = 1; i <= 400; i += 5) {
        assert_int_equal(tw_append(w, i, i + 4, 1, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    int before = 0, after = 0;
    min_closed_last(f, &before);
    assert_int_equal(wal_mark_snapshot(w, 250, 1, NULL), 0);
    assert_int_equal(wal_sync_wait(w, 0), 0);
    assert_true(min_closed_last(f, &after) >= 250);
    assert_true(after > 0 && after < before);
    /* The segment holding 250 stays: replay still has 251.. and term(250). */
    wal_close(w);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.first_index == 251 && rec.last_index == 400 && rec.snap_index == 250);
    uint64_t t = 0;
    assert_int_equal(wal_memtable_term(wal_memtable(w), 250, &t), 0);
    assert_true(t == 1);
    wal_close(w);
}

/* A crash between the two renames of a cut leaves two open- files: both replay, the older gets
 * its closed name. */
static void crash_between_cut_renames(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 2048;
    struct wal *w = open_ok(f, NULL);
    for (uint64_t i = 1; i <= 100; i += 5) {
        assert_int_equal(tw_append(w, i, i + 4, 1, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    wal_close(w);
    /* Find the newest closed segment (largest last) and give it back an open- name. */
    DIR *d = opendir(f->dir);
    struct dirent *de;
    char newest[256] = "";
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) == 33 && strcmp(de->d_name, newest) > 0) {
            snprintf(newest, sizeof newest, "%s", de->d_name);
        }
    }
    closedir(d);
    assert_true(newest[0] != '\0');
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/%s", f->dir, newest);
    snprintf(to, sizeof to, "%s/open-0000000000000000", f->dir); /* any open- name works */
    assert_int_equal(rename(from, to), 0);
    assert_int_equal(tw_count(f->dir, "open-"), 2);
    struct wal_recovered rec;
    w = open_ok(f, &rec);
    assert_true(rec.last_index == 100);
    for (uint64_t i = 1; i <= 100; i++) {
        assert_true(tw_check(wal_memtable(w), i, 1));
    }
    wal_close(w);
    assert_int_equal(tw_count(f->dir, "open-"), 1);
}

/* A missing middle segment is corruption, never a silently shorter log. */
static void missing_segment_is_corruption(void **state)
{
    struct fx *f = *state;
    f->opts.segment_size = 2048;
    struct wal *w = open_ok(f, NULL);
    for (uint64_t i = 1; i <= 100; i += 5) {
        assert_int_equal(tw_append(w, i, i + 4, 1, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    wal_close(w);
    DIR *d = opendir(f->dir);
    struct dirent *de;
    char names[64][256];
    int n = 0;
    while ((de = readdir(d)) != NULL && n < 64) {
        if (strlen(de->d_name) == 33) {
            snprintf(names[n++], sizeof names[0], "%s", de->d_name);
        }
    }
    closedir(d);
    assert_true(n >= 3);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", f->dir, names[1]);
    assert_int_equal(unlink(path), 0);
    char err[WAL_ERRMSG_SIZE] = "";
    assert_int_equal(wal_open(f->dir, &f->opts, &w, NULL, err), WAL_ECORRUPT);
    assert_non_null(strstr(err, "missing segment"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(append_sync_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_appends_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(group_commit_pipelines, setup, teardown),
        cmocka_unit_test_setup_teardown(overwrite_survives_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(cut_segments_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(overwrite_across_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(snapshot_releases_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(second_open_is_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(other_process_is_locked_out, setup, teardown),
        cmocka_unit_test_setup_teardown(notify_fd_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(flush_here_writes_on_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_tail_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(release_keeps_segment_holding_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_between_cut_renames, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_segment_is_corruption, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
