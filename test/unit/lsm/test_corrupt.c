/* A flipped byte in a table file is an error, never data: reads, the whole-store check and a
 * store built from snapshot tables each name it (docs/architecture.md, "Corruption"). */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test/unit/lsm/helpers.h"

#define N_KEYS 200

/* Uncompressed tables, so that a value's bytes are in the file as written and a flip in one is
 * a wrong value (not a failed decompression) unless the checksum is checked. */
static void open_plain(struct fx *f)
{
    struct lsm_options o;
    lsm_options_default(&o);
    o.no_compression = true;
    char err[256];
    assert_int_equal(lsm_open(f->db, &o, &f->s, err), 0);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    f->index = st.applied_index;
}

static void value_of(int i, char *buf, size_t size)
{
    snprintf(buf, size, "value-%06d-abcdefghijklmnopqrstuvwxyz", i);
}

/* A store whose N_KEYS values sit in table files: reopening moves LevelDB's log into a table. */
static struct fx *filled(void)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/kv-lsm-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/db", f->dir);
    open_plain(f);
    for (int i = 0; i < N_KEYS; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "key-%06d", i);
        value_of(i, v, sizeof v);
        assert_int_equal(fx_put(f, k, v), 0);
    }
    lsm_close(f->s);
    open_plain(f);
    lsm_close(f->s);
    f->s = NULL;
    return f;
}

/* Find the table in @dir holding @needle; its path into @path and the offset into *@off. */
static bool find_in_tables(const char *dir, const char *needle, char *path, size_t size, long *off)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".ldb") != 0) {
            continue;
        }
        snprintf(path, size, "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        static char buf[1 << 22];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        for (size_t i = 0; i + strlen(needle) <= n; i++) {
            if (memcmp(buf + i, needle, strlen(needle)) == 0) {
                *off = (long)i;
                found = true;
                break;
            }
        }
    }
    closedir(d);
    return found;
}

/* XOR one byte of @path at @off with 0x01 (in place: every hard link sees it). */
static void flip(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x01;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

/* Give @path an inode of its own (a copy renamed over it), so a flip reaches no other link. */
static void unshare(const char *path)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *in = fopen(path, "rb"), *out = fopen(tmp, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* Flip a byte in the middle of value @i's bytes in its table under @dir; its path to @path. */
static void damage_value(const char *dir, int i, char *path, size_t size)
{
    char v[64];
    long off = 0;
    value_of(i, v, sizeof v);
    assert_true(find_in_tables(dir, v, path, size, &off));
    flip(path, off + 20);
}

static void read_of_a_flipped_block_fails_as_corrupt(void **state)
{
    (void)state;
    struct fx *f = filled();
    char path[512];
    damage_value(f->db, 100, path, sizeof path);
    open_plain(f);
    struct lsm_op op = op_range("key-000100", NULL);
    struct lsm_result res;
    memset(&res, 0, sizeof res);
    char err[256] = "";
    int rv = lsm_range(f->s, &op.u.range, &res, err);
    /* Without verify_checksums LevelDB returns the damaged value here, with 0. */
    assert_int_equal(rv, LSM_ECORRUPT);
    assert_int_equal(res.u.range.n_kvs, 0);
    assert_non_null(strstr(err, "checksum mismatch"));
    lsm_result_fini(&res);
    /* A scan over the block fails too (LevelDB's iterator skips a bad block and reports it
     * afterwards: nothing of the scan may be used). */
    op = op_range("key-", "key.");
    rv = lsm_range(f->s, &op.u.range, &res, err);
    assert_int_equal(rv, LSM_ECORRUPT);
    lsm_result_fini(&res);
    fx_free(f);
}

static void verify_names_the_damaged_table(void **state)
{
    (void)state;
    struct fx *f = filled();
    open_plain(f);
    size_t n = 0;
    char err[256] = "";
    assert_int_equal(lsm_verify(f->s, NULL, NULL, &n, err), 0);
    assert_true(n >= 1);
    lsm_close(f->s);
    char path[512];
    damage_value(f->db, 7, path, sizeof path);
    open_plain(f);
    assert_int_equal(lsm_verify(f->s, NULL, NULL, &n, err), LSM_ECORRUPT);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "checksum mismatch"));
    /* The check leaves nothing behind and the store itself untouched. */
    char scratch[256];
    struct stat sb;
    snprintf(scratch, sizeof scratch, "%s.verify", f->db);
    assert_int_not_equal(stat(scratch, &sb), 0);
    assert_int_equal(stat(path, &sb), 0);
    fx_free(f);
}

static bool stop_now(void *arg)
{
    (void)arg;
    return true;
}

static void verify_stops_when_asked(void **state)
{
    (void)state;
    struct fx *f = filled();
    open_plain(f);
    char err[256] = "";
    assert_int_equal(lsm_verify(f->s, stop_now, NULL, NULL, err), LSM_ECLOSED);
    fx_free(f);
}

static void store_from_a_damaged_snapshot_table_is_refused(void **state)
{
    (void)state;
    struct fx *f = filled();
    open_plain(f);
    char cp[256], next[256], path[512], err[256] = "";
    snprintf(cp, sizeof cp, "%s/cp", f->dir);
    snprintf(next, sizeof next, "%s/next", f->dir);
    assert_int_equal(lsm_checkpoint(f->s, cp, NULL), 0);
    lsm_close(f->s);
    f->s = NULL;
    /* Damage the checkpoint's copy only (a table LevelDB has since compacted away). */
    long off = 0;
    char v[64];
    value_of(50, v, sizeof v);
    assert_true(find_in_tables(cp, v, path, sizeof path, &off));
    unshare(path);
    flip(path, off + 20);
    struct lsm_store *s = NULL;
    /* Repair without paranoid checks keeps the damaged block and the store serves it. */
    assert_int_equal(lsm_open_from_tables(cp, next, NULL, &s, err), LSM_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(err, path));
    open_plain(f); /* the live store was not touched */
    struct lsm_op op = op_range("key-000050", NULL);
    struct lsm_result res;
    memset(&res, 0, sizeof res);
    assert_int_equal(lsm_range(f->s, &op.u.range, &res, err), 0);
    assert_int_equal(res.u.range.n_kvs, 1);
    assert_memory_equal(res.u.range.kvs[0].value, v, strlen(v));
    lsm_result_fini(&res);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_of_a_flipped_block_fails_as_corrupt),
        cmocka_unit_test(verify_names_the_damaged_table),
        cmocka_unit_test(verify_stops_when_asked),
        cmocka_unit_test(store_from_a_damaged_snapshot_table_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
