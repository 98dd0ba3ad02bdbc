/* Bit flips in a stopped member's files, each detected and none served (issue #14): a live
 * table, a stored snapshot's table and its manifest, and the middle of a WAL segment.  The
 * member either refuses to start or stops with a line naming the file; a follower that catches
 * up meanwhile gets a good snapshot (docs/architecture.md, "Corruption"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test/integration/fixture.h"
#include "test/integration/writer.h"

#define N_KEYS 200

static void key_of(int i, char *buf, size_t size)
{
    snprintf(buf, size, "k%06d", i);
}

static void value_of(int i, char *buf, size_t size)
{
    snprintf(buf, size, "value-%06d-abcdefghijklmnopqrstuvwxyz", i);
}

/* The file of @dir whose name ends in @suffix and holds @needle: its path and the offset. */
static bool find_in_files(const char *dir,
                          const char *suffix,
                          const char *needle,
                          char *path,
                          size_t size,
                          long *off)
{
    static char buf[16 << 20];
    DIR *d = opendir(dir);
    struct dirent *e;
    bool found = false;
    while (d != NULL && !found && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (len < sl || strcmp(e->d_name + len - sl, suffix) != 0) {
            continue;
        }
        snprintf(path, size, "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        size_t n = fp != NULL ? fread(buf, 1, sizeof buf, fp) : 0;
        if (fp != NULL) {
            fclose(fp);
        }
        char *at = memmem(buf, n, needle, strlen(needle));
        if (at != NULL) {
            *off = at - buf;
            found = true;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return found;
}

/* Put key_of(i) = value_of(i) for i < N_KEYS through member @i. */
static void put_all(struct ih_fix *f, size_t i)
{
    for (int k = 0; k < N_KEYS; k++) {
        char key[32], val[64];
        key_of(k, key, sizeof key);
        value_of(k, val, sizeof val);
        assert_true(ih_put(f->k[i], key, val) > 0);
    }
}

/* Until member @i stops by itself (or @ms pass), read every key from it now and then: each read
 * that succeeds must return the value written.  Returns whether it stopped. */
static bool reads_right_until_stopped(struct ih_fix *f, size_t i, unsigned ms)
{
    uint64_t deadline = ih_now_ms() + ms;
    while (ih_member_is_alive(&f->c, i) && ih_now_ms() < deadline) {
        struct kvc *k = ih_client(&f->c, i, 1000);
        for (int n = 0; k != NULL && n < N_KEYS; n++) {
            char key[32], want[64], got[64] = "";
            key_of(n, key, sizeof key);
            value_of(n, want, sizeof want);
            int rv = ih_get(k, key, true, got, sizeof got);
            if (rv == 1) {
                assert_string_equal(got, want);
            } else if (rv < 0) {
                break; /* refused, or gone: look again whether it stopped */
            }
        }
        if (k != NULL) {
            kvc_close(k);
        }
        ih_sleep_ms(50);
    }
    return !ih_member_is_alive(&f->c, i);
}

static int setup_plain(void **state)
{
    /* Uncompressed tables: a flipped value byte is a wrong value unless checksums are read. */
    static const char *const extra[] = {"--backend-compression", "none", "--snapshot-count", "50",
                                        NULL};
    return ih_fix_setup(state, 1, extra, 30000, true);
}

/* A byte of a value in a live table: the member never returns the damaged value and stops with
 * a line naming the table and what to do (found by its start-up check or by the first read). */
static void live_table_flip_stops_the_member_and_names_the_table(void **state)
{
    struct ih_fix *f = *state;
    struct ih_member *m = &f->c.m[0];
    put_all(f, 0);
    ih_fix_close_clients(f);
    assert_int_equal(0, ih_member_stop(&f->c, 0, SIGTERM));
    char db[400], path[700], val[64];
    long off = 0;
    snprintf(db, sizeof db, "%s/member/db", m->dir);
    value_of(10, val, sizeof val);
    assert_true(find_in_files(db, ".ldb", val, path, sizeof path, &off));
    assert_int_equal(0, ih_file_flip(path, off + 20, false));
    assert_int_equal(0, ih_member_start(&f->c, 0));
    assert_true(reads_right_until_stopped(f, 0, 30000));
    assert_true(ih_member_log_has(m, "store damaged"));
    assert_true(ih_member_log_has(m, path));
    assert_true(ih_member_log_has(m, "kvdb-snapshot restore"));
}

/* A byte in the middle of the WAL's records (not a torn tail): the WAL's rules decide (a
 * closed segment: refused; the last one: cut there, as a torn tail would be) and the member
 * then refuses to start, because its store is past what the WAL holds; nothing wrong is read
 * meanwhile.  (Detected before this change too.) */
static void wal_flip_in_the_middle_is_never_served(void **state)
{
    struct ih_fix *f = *state;
    struct ih_member *m = &f->c.m[0];
    put_all(f, 0);
    ih_fix_close_clients(f);
    assert_int_equal(0, ih_member_stop(&f->c, 0, SIGTERM));
    char wal[400], path[700];
    long off = 0;
    snprintf(wal, sizeof wal, "%s/member/wal", m->dir);
    char val[64];
    value_of(N_KEYS / 2, val, sizeof val);
    bool found = find_in_files(wal, "", val, path, sizeof path, &off);
    assert_true(found);
    assert_int_equal(0, ih_file_flip(path, off + 20, false));
    assert_int_equal(0, ih_member_start(&f->c, 0));
    assert_true(reads_right_until_stopped(f, 0, 15000));
    assert_true(ih_member_log_has(m, path) || ih_member_log_has(m, "WAL lost"));
}

/* The newest snapshot directory (by name) of member @m into @out. */
static bool newest_snapshot(const struct ih_member *m, char *out, size_t size)
{
    char root[400], best[64] = "";
    snprintf(root, sizeof root, "%s/member/snap", m->dir);
    DIR *d = opendir(root);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strlen(e->d_name) == 33 && strcmp(e->d_name, best) > 0) {
            memcpy(best, e->d_name, 34); /* a snapshot name: 33 characters */
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    snprintf(out, size, "%s/%s", root, best);
    return best[0] != '\0';
}

/* The biggest table file of snapshot directory @dir into @out. */
static bool biggest_table(const char *dir, char *out, size_t size, long *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    *bytes = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char p[1400];
        struct stat st;
        size_t len = strlen(e->d_name);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".ldb") == 0 && stat(p, &st) == 0 &&
            st.st_size > *bytes) {
            *bytes = strlen(p) < size ? st.st_size : 0;
            memcpy(out, p, strlen(p) < size ? strlen(p) + 1 : 0);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return *bytes > 0;
}

static int setup_three(void **state)
{
    static const char *const extra[] = {"--snapshot-count", "100", "--snapshot-catchup-entries",
                                        "20", NULL};
    return ih_fix_setup(state, 3, extra, 30000, false);
}

/* Stopped members: one's newest snapshot has a flipped table byte (a table only the snapshot
 * holds), the other's a flipped manifest byte.  At start each sets its damaged snapshot aside
 * with a line naming it; a follower that was down and must catch up by snapshot gets a good
 * one: afterwards it holds every acknowledged write. */
static void snapshot_flips_are_set_aside_and_never_sent(void **state)
{
    struct ih_fix *f = *state;
    int l = ih_cluster_leader(&f->c, 10000);
    assert_true(l >= 0);
    size_t down = (size_t)(l + 1) % 3, a = (size_t)l, b = (size_t)(l + 2) % 3;
    assert_int_equal(0, ih_member_stop(&f->c, down, SIGKILL));
    struct ih_writer *w = &f->w;
    assert_int_equal(0, ih_writer_start(w, &f->c, "snap/", 100000, 16));
    assert_int_equal(0, ih_writer_wait_acked(w, 450, 60000));
    ih_writer_stop(w);
    assert_int_equal(0, ih_member_stop(&f->c, a, SIGTERM));
    assert_int_equal(0, ih_member_stop(&f->c, b, SIGTERM));

    char snap_a[800], snap_b[800], table[1200], manifest[1200], aside[1200];
    long size = 0;
    assert_true(newest_snapshot(&f->c.m[a], snap_a, sizeof snap_a));
    assert_true(biggest_table(snap_a, table, sizeof table, &size));
    assert_int_equal(0, ih_file_flip(table, size / 2, true));
    assert_true(newest_snapshot(&f->c.m[b], snap_b, sizeof snap_b));
    snprintf(manifest, sizeof manifest, "%s/MANIFEST", snap_b);
    struct stat st;
    assert_int_equal(0, stat(manifest, &st));
    assert_int_equal(0, ih_file_flip(manifest, (long)st.st_size / 2, true));

    assert_int_equal(0, ih_member_start(&f->c, a));
    assert_int_equal(0, ih_member_start(&f->c, b));
    assert_int_equal(0, ih_member_wait_up(&f->c, a, 30000));
    assert_int_equal(0, ih_member_wait_up(&f->c, b, 30000));
    assert_true(ih_member_log_has(&f->c.m[a], "damaged snapshot"));
    assert_true(ih_member_log_has(&f->c.m[a], strrchr(table, '/') + 1));
    snprintf(aside, sizeof aside, "%s.broken", snap_a);
    assert_int_equal(0, stat(aside, &st));
    assert_true(ih_member_log_has(&f->c.m[b], "damaged snapshot"));
    assert_true(ih_member_log_has(&f->c.m[b], strrchr(snap_b, '/') + 1));
    snprintf(aside, sizeof aside, "%s.broken", snap_b);
    assert_int_equal(0, stat(aside, &st));

    assert_true(ih_cluster_leader(&f->c, 20000) >= 0);
    assert_non_null(f->k[a] = ih_client(&f->c, (size_t)-1, 15000));
    assert_true(ih_put(f->k[a], "marker", "last") > 0);
    assert_int_equal(0, ih_member_start(&f->c, down));
    assert_int_equal(0, ih_member_wait_up(&f->c, down, 30000));
    assert_non_null(f->k[down] = ih_client(&f->c, down, 15000));
    assert_true(ih_fix_eventually_local(f, down, "marker", "last"));
    assert_true(ih_member_log_has(&f->c.m[down], "installed snapshot"));
    assert_true(ih_writer_check(w, f->k[down]) >= 450);
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(live_table_flip_stops_the_member_and_names_the_table,
                                        setup_plain, ih_fix_teardown),
        cmocka_unit_test_setup_teardown(wal_flip_in_the_middle_is_never_served, setup_plain,
                                        ih_fix_teardown),
        cmocka_unit_test_setup_teardown(snapshot_flips_are_set_aside_and_never_sent, setup_three,
                                        ih_fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
