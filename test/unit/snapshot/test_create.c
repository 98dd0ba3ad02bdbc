/* Snapshot directories: create (hard links, EXDEV copy), verify, listing, latest, retention,
 * and crash at every step of create. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/snapshot/helpers.h"

static uint64_t voters[] = {1, 2, 3};
static const char *names[] = {"000010.ldb", "000011.ldb", "000012.ldb", "000013.log"};

struct fixture
{
    char src[PATH_MAX];  /* the "LevelDB" directory */
    char root[PATH_MAX]; /* the snap directory */
    uint64_t rng;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    scratch_dir(f->src, "src");
    scratch_dir(f->root, "snap");
    f->rng = test_seed("snap_create");
    write_file(f->src, names[0], 300000, &f->rng);
    write_file(f->src, names[1], 0, &f->rng);
    write_file(f->src, names[2], 4097, &f->rng);
    write_file(f->src, names[3], 1, &f->rng);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    snap_fs_fault_set(NULL, NULL);
    rm_tree(f->src);
    rm_tree(f->root);
    free(f);
    return 0;
}

static struct snap_meta meta_at(uint64_t index, uint64_t term)
{
    struct snap_meta m = {.index = index,
                          .term = term,
                          .revision = index * 2,
                          .compact_revision = index,
                          .voters = voters,
                          .n_voters = 3};
    return m;
}

static void snap_path(const struct fixture *f,
                      uint64_t index,
                      uint64_t term,
                      const char *file,
                      char *out)
{
    char name[40], dir[PATH_MAX];
    snap_dir_name(index, term, name, sizeof name);
    join(dir, f->root, name);
    if (file != NULL) {
        join(out, dir, file);
    } else {
        memcpy(out, dir, strlen(dir) + 1);
    }
}

/* Cut @path at its last '/' in place. */
static char *dirname_of(char *path)
{
    *strrchr(path, '/') = '\0';
    return path;
}

static int create(struct fixture *f, uint64_t index, uint64_t term)
{
    char err[SNAP_ERRMSG_SIZE];
    struct snap_meta m = meta_at(index, term);
    return snap_create(f->root, &m, f->src, names, 4, NULL, err);
}

/* Create links every file (same inode, nothing copied), and the result verifies. */
static void create_links_and_verifies(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE], dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    struct snap_meta meta = meta_at(100, 2);
    struct snap_manifest m;
    assert_int_equal(snap_create(f->root, &meta, f->src, names, 4, &m, err), 0);
    assert_int_equal(m.n_files, 4);
    assert_true(m.meta.index == 100 && m.meta.revision == 200);
    assert_true(m.files[0].size == 300000 && m.files[1].size == 0);
    for (int i = 0; i < 4; i++) {
        struct stat sa, sb;
        join(a, f->src, names[i]);
        snap_path(f, 100, 2, names[i], b);
        assert_int_equal(stat(a, &sa), 0);
        assert_int_equal(stat(b, &sb), 0);
        assert_true(sa.st_ino == sb.st_ino); /* a hard link, not a copy */
    }
    snap_path(f, 100, 2, NULL, dir);
    struct snap_manifest v;
    assert_int_equal(snap_verify(dir, &v, err), 0);
    assert_int_equal(v.crc, m.crc);
    assert_int_equal(v.files[2].crc, m.files[2].crc);
    snap_manifest_fini(&v);
    snap_manifest_fini(&m);
    /* Same snapshot again: refused, existing one untouched. */
    assert_int_equal(create(f, 100, 2), SNAP_EEXIST);
    assert_int_equal(snap_verify(dir, NULL, err), 0);
}

/* A file that is the same inode as in the previous snapshot keeps its checksum without being
 * read; a replaced file (new inode: what LevelDB does, tables are immutable) is read again. */
static void create_reuses_checksums_of_same_inode(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE], path[PATH_MAX], dir[PATH_MAX];
    struct snap_meta meta = meta_at(10, 1);
    struct snap_manifest a, b, c;
    assert_int_equal(snap_create(f->root, &meta, f->src, names, 4, &a, err), 0);
    /* Replace file 0 with new content (new inode); overwrite file 2 in place (same inode: a
     * breach of the immutability contract, used here only to observe the reuse). */
    join(path, f->src, names[0]);
    assert_int_equal(unlink(path), 0);
    write_file(f->src, names[0], 300000, &f->rng);
    join(path, f->src, names[2]);
    FILE *fp = fopen(path, "r+b");
    int ch = fgetc(fp);
    fseek(fp, 0, SEEK_SET);
    fputc(ch ^ 1, fp);
    fclose(fp);
    meta = meta_at(20, 1);
    assert_int_equal(snap_create(f->root, &meta, f->src, names, 4, &b, err), 0);
    assert_int_not_equal(b.files[0].crc, a.files[0].crc); /* new inode: read again */
    assert_int_equal(b.files[2].crc, a.files[2].crc);     /* same inode: reused, not read */
    snap_path(f, 20, 1, NULL, dir);
    assert_int_equal(snap_verify(dir, NULL, err), SNAP_ECORRUPT);
    assert_non_null(strstr(err, names[2]));
    /* Without a previous snapshot under the root everything is read. */
    char root2[PATH_MAX];
    scratch_dir(root2, "snap2");
    assert_int_equal(snap_create(root2, &meta, f->src, names, 4, &c, err), 0);
    assert_int_not_equal(c.files[2].crc, a.files[2].crc);
    assert_int_equal(c.files[0].crc, b.files[0].crc);
    rm_tree(root2);
    snap_manifest_fini(&a);
    snap_manifest_fini(&b);
    snap_manifest_fini(&c);
}

static int exdev_fault(void *arg, enum snap_fs_op op, const char *path)
{
    (void)path;
    int *links = arg;
    if (op == SNAP_FS_LINK) {
        (*links)++;
        return EXDEV;
    }
    return 0;
}

/* Across file systems link fails with EXDEV and the files are copied instead. */
static void create_copies_on_exdev(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE], a[PATH_MAX], b[PATH_MAX];
    int links = 0;
    snap_fs_fault_set(exdev_fault, &links);
    assert_int_equal(create(f, 5, 1), 0);
    snap_fs_fault_set(NULL, NULL);
    assert_int_equal(links, 4);
    for (int i = 0; i < 4; i++) {
        struct stat sa, sb;
        join(a, f->src, names[i]);
        snap_path(f, 5, 1, names[i], b);
        assert_int_equal(stat(a, &sa), 0);
        assert_int_equal(stat(b, &sb), 0);
        assert_true(sa.st_ino != sb.st_ino);
        assert_true(same_file(a, b));
    }
    snap_path(f, 5, 1, NULL, a);
    assert_int_equal(snap_verify(a, NULL, err), 0);
}

static void create_rejects_bad_input(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE];
    struct snap_meta m = meta_at(0, 1);
    assert_int_equal(snap_create(f->root, &m, f->src, names, 4, NULL, err), SNAP_EINVAL);
    m = meta_at(3, 1);
    const char *bad[] = {"000010.ldb", "../etc"};
    assert_int_equal(snap_create(f->root, &m, f->src, bad, 2, NULL, err), SNAP_EINVAL);
    const char *dup[] = {"000010.ldb", "000010.ldb"};
    assert_int_equal(snap_create(f->root, &m, f->src, dup, 2, NULL, err), SNAP_EINVAL);
    const char *missing[] = {"000099.ldb"};
    assert_int_equal(snap_create(f->root, &m, f->src, missing, 1, NULL, err), SNAP_EIO);
    assert_non_null(strstr(err, "000099.ldb"));
    /* The failed attempt left nothing behind. */
    struct snap_entry *v;
    size_t n;
    assert_int_equal(snap_list(f->root, &v, &n, err), 0);
    assert_int_equal(n, 0);
    free(v);
}

/* snap_latest skips (and reports) an incomplete and a corrupt newer snapshot; deep mode also
 * catches a flipped byte in a table file. */
static void latest_skips_incomplete_and_corrupt(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE] = "", path[PATH_MAX], dir[PATH_MAX];
    bool found;
    size_t skipped;
    struct snap_manifest m;
    assert_int_equal(snap_latest(f->root, true, &found, &m, &skipped, err), 0);
    assert_false(found);
    assert_int_equal(create(f, 10, 1), 0);
    assert_int_equal(create(f, 20, 1), 0);
    assert_int_equal(create(f, 30, 2), 0);
    assert_int_equal(create(f, 40, 2), 0);
    snap_path(f, 40, 2, SNAP_MANIFEST_NAME, path); /* 40: manifest never written */
    assert_int_equal(unlink(path), 0);
    snap_path(f, 30, 2, names[2], path); /* 30: a file replaced by a shorter one */
    assert_int_equal(unlink(path), 0);
    write_file(strrchr(strcpy(dir, path), '/') == NULL ? "." : dirname_of(dir), names[2], 10,
               &f->rng);
    assert_int_equal(snap_latest(f->root, false, &found, &m, &skipped, err), 0);
    assert_true(found);
    assert_true(m.meta.index == 20);
    assert_int_equal(skipped, 2);
    assert_non_null(strstr(err, "skipped"));
    snap_manifest_fini(&m);
    /* 20: flip one byte of a file without changing its size: only deep verification sees it. */
    snap_path(f, 20, 1, names[3], path);
    FILE *fp = fopen(path, "r+b");
    int c = fgetc(fp);
    fseek(fp, 0, SEEK_SET);
    fputc(c ^ 0x40, fp);
    fclose(fp);
    assert_int_equal(snap_latest(f->root, false, &found, &m, &skipped, err), 0);
    assert_true(found && m.meta.index == 20);
    snap_manifest_fini(&m);
    /* The flipped file is a hard link shared by every snapshot and the source: all are bad. */
    assert_int_equal(snap_latest(f->root, true, &found, &m, &skipped, err), 0);
    assert_false(found);
    assert_int_equal(skipped, 4);
    struct snap_entry *v;
    size_t n;
    assert_int_equal(snap_list(f->root, &v, &n, err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(v[0].status, SNAP_VALID);
    assert_int_equal(v[2].status, SNAP_BAD);
    assert_int_equal(v[3].status, SNAP_INCOMPLETE);
    free(v);
}

/* A snapshot set aside is out of every listing (so never sent, installed or counted by
 * retention) but its files stay; setting the same snapshot aside again replaces the old copy. */
static void set_aside_hides_a_snapshot_and_keeps_its_files(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE] = "", dir[PATH_MAX], out[PATH_MAX], path[PATH_MAX];
    assert_int_equal(create(f, 10, 1), 0);
    assert_int_equal(create(f, 20, 1), 0);
    snap_path(f, 20, 1, NULL, dir);
    assert_int_equal(snap_set_aside(dir, out, err), 0);
    assert_non_null(strstr(out, ".broken"));
    join(path, out, names[0]);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_not_equal(stat(dir, &st), 0);
    struct snap_entry *v;
    size_t n, removed;
    assert_int_equal(snap_list(f->root, &v, &n, err), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].index == 10);
    free(v);
    bool found;
    struct snap_manifest m;
    assert_int_equal(snap_latest(f->root, true, &found, &m, &removed, err), 0);
    assert_true(found && m.meta.index == 10);
    snap_manifest_fini(&m);
    assert_int_equal(snap_retain(f->root, 1, &removed, err), 0);
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(create(f, 20, 1), 0);
    assert_int_equal(snap_set_aside(dir, NULL, err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_not_equal(stat(dir, &st), 0);
}

/* Keep the newest K valid; older ones and dead ones behind them go. */
static void retention_keeps_newest(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE], path[PATH_MAX];
    for (uint64_t i = 1; i <= 6; i++) {
        assert_int_equal(create(f, i * 10, 1), 0);
    }
    snap_path(f, 20, 1, SNAP_MANIFEST_NAME, path);
    unlink(path); /* incomplete, older than the kept ones */
    snap_path(f, 60, 1, SNAP_MANIFEST_NAME, path);
    unlink(path); /* incomplete and newest: maybe being created, kept */
    mkdir(f->root, 0755);
    join(path, f->root, "tmp-0000000000000099-0000000000000001");
    assert_int_equal(mkdir(path, 0755), 0); /* a transfer: not retention's business */
    size_t removed;
    assert_int_equal(snap_retain(f->root, 0, &removed, err), SNAP_EINVAL);
    assert_int_equal(snap_retain(f->root, 2, &removed, err), 0);
    assert_int_equal(removed, 3); /* 10, 20, 30 */
    struct snap_entry *v;
    size_t n;
    assert_int_equal(snap_list(f->root, &v, &n, err), 0);
    assert_int_equal(n, 3);
    assert_true(v[0].index == 40 && v[1].index == 50 && v[2].index == 60);
    free(v);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* The source files are untouched by removing their links. */
    join(path, f->src, names[0]);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_nlink, 4); /* source + snapshots 40, 50 and the incomplete 60 */
    assert_int_equal(snap_retain(f->root, 2, &removed, err), 0);
    assert_int_equal(removed, 0);
}

/* Crash before each file-system step of create: afterwards the snapshot is either absent,
 * invisible (incomplete), or complete and verified; never valid-looking with missing pieces. */
static void create_crash_at_every_step(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE];
    int steps = 0;
    for (int at = 1;; at++) {
        struct crash_hook h = {.crash_at = at};
        snap_fs_fault_set(crash_fault, &h);
        int rv = create(f, 77, 3);
        snap_fs_fault_set(NULL, NULL);
        bool found;
        size_t skipped;
        struct snap_manifest m;
        assert_int_equal(snap_latest(f->root, true, &found, &m, &skipped, err), 0);
        if (!h.crashed) {
            assert_int_equal(rv, 0);
            assert_true(found && m.meta.index == 77);
            snap_manifest_fini(&m);
            break;
        }
        steps++;
        assert_int_not_equal(rv, 0);
        /* Crashing after the manifest's rename leaves a complete snapshot: that is fine, as
         * long as it verifies (deep) whenever it is visible. */
        if (found) {
            assert_true(m.meta.index == 77);
            snap_manifest_fini(&m);
        }
        /* A retry over the leftover (incomplete or complete) then succeeds or says EEXIST. */
        rv = create(f, 77, 3);
        assert_true(rv == 0 || (rv == SNAP_EEXIST && found));
        assert_int_equal(snap_latest(f->root, true, &found, &m, &skipped, err), 0);
        assert_true(found && m.meta.index == 77);
        snap_manifest_fini(&m);
        char dir[PATH_MAX];
        snap_path(f, 77, 3, NULL, dir);
        rm_tree(dir);
    }
    assert_true(steps >= 8);
}

/* One failing operation (ENOSPC) at each step of create: the error is reported as SNAP_ENOSPC
 * with context, no snapshot becomes visible, and the cleanup leaves the name free to retry. */
static void create_error_at_every_step(void **state)
{
    struct fixture *f = *state;
    char err[SNAP_ERRMSG_SIZE];
    for (int at = 1;; at++) {
        struct crash_hook h = {.crash_at = at, .once = true};
        struct snap_meta meta = meta_at(88, 1);
        char cerr[SNAP_ERRMSG_SIZE] = "";
        snap_fs_fault_set(crash_fault, &h);
        int rv = snap_create(f->root, &meta, f->src, names, 4, NULL, cerr);
        snap_fs_fault_set(NULL, NULL);
        bool found;
        size_t skipped;
        struct snap_manifest m;
        assert_int_equal(snap_latest(f->root, true, &found, &m, &skipped, err), 0);
        if (!h.crashed) {
            assert_int_equal(rv, 0);
            assert_true(found);
            snap_manifest_fini(&m);
            break;
        }
        assert_int_equal(rv, SNAP_ENOSPC);
        assert_non_null(strstr(cerr, "No space left"));
        assert_false(found);
        assert_int_equal(create(f, 88, 1), 0); /* the failed attempt cleaned up after itself */
        char dir[PATH_MAX];
        snap_path(f, 88, 1, NULL, dir);
        rm_tree(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_links_and_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(create_reuses_checksums_of_same_inode, setup, teardown),
        cmocka_unit_test_setup_teardown(create_copies_on_exdev, setup, teardown),
        cmocka_unit_test_setup_teardown(create_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(latest_skips_incomplete_and_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(set_aside_hides_a_snapshot_and_keeps_its_files, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(retention_keeps_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(create_crash_at_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(create_error_at_every_step, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
