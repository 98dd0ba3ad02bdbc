/* Crash consistency: cut the open segment at every byte offset and flip bits in every byte of
 * it and of a closed segment, then reopen.  Synced data survives every cut past it, nothing
 * half-written ever appears (the recovered log is exactly the records wholly before the damage),
 * strict mode refuses any damage, and damage in a closed segment is WAL_ECORRUPT naming the file
 * and offset.  A second test crashes a live WAL at random moments through the fault fs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>

#include "test/lib/seed.h"
#include "test/unit/wal/util.h"
#include "wal/wal.h"

#define MAX_RECS 512
#define SEG_SIZE (8 * 1024)

static void quiet(void *ctx, const char *line)
{
    (void)ctx;
    (void)line;
}

static uint64_t term_of(uint64_t i)
{
    return 1 + i / 50;
}

/* The files of a built WAL: closed segments stay as they are; the open one is in memory. */
struct layout
{
    char src[256];
    char scratch[256];
    char open_name[256];
    char closed_name[256]; /* The first closed segment (the one we damage). */
    unsigned char *open_buf;
    size_t open_len;
    size_t n_bounds;
    size_t bound[MAX_RECS];     /* End offset of each record in the open segment. */
    uint64_t last_at[MAX_RECS]; /* Last index once that record is applied. */
    uint64_t base_last;         /* Last index before the open segment's records. */
    size_t synced_end;          /* A boundary taken as "synced" (the middle record). */
    uint64_t synced;            /* Last index at synced_end. */
};

static void read_file(const char *path, unsigned char **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(*buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
}

static void scan_layout(struct layout *l)
{
    DIR *d = opendir(l->src);
    struct dirent *de;
    l->closed_name[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "open-", 5) == 0) {
            snprintf(l->open_name, sizeof l->open_name, "%s", de->d_name);
        } else if (de->d_name[0] == '0' &&
                   (l->closed_name[0] == '\0' || strcmp(de->d_name, l->closed_name) < 0)) {
            snprintf(l->closed_name, sizeof l->closed_name, "%s", de->d_name);
        }
    }
    closedir(d);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", l->src, l->open_name);
    read_file(path, &l->open_buf, &l->open_len);
    struct wal_seg_header h;
    const char *why;
    assert_int_equal(wal_seg_header_decode(l->open_buf, l->open_len, &h, &why), 0);
    l->base_last = h.first_index - 1;
    size_t off = WAL_SEG_HEADER_SIZE;
    uint64_t last = l->base_last;
    struct wal_rec r;
    while (wal_rec_decode(l->open_buf + off, l->open_len - off, &r, &why) == WAL_SCAN_RECORD) {
        if (r.type == WAL_REC_ENTRIES) {
            last = wal_get_u64(r.payload) + wal_get_u32(r.payload + 8) - 1;
        }
        off += r.size;
        assert_true(l->n_bounds < MAX_RECS);
        l->bound[l->n_bounds] = off;
        l->last_at[l->n_bounds++] = last;
    }
    assert_int_equal(off, l->open_len); /* no_prealloc: the file ends with the records */
    assert_true(l->n_bounds > 8);
    l->synced_end = l->bound[l->n_bounds / 2];
    l->synced = l->last_at[l->n_bounds / 2];
}

/* Write batches of 3 entries with small segments until two are closed, then 8 more batches
 * into the open segment (a few KiB). */
static int setup(void **state)
{
    struct layout *l = calloc(1, sizeof *l);
    const char *shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (shm != NULL) {
        setenv("TMPDIR", shm, 1); /* fsync is free there: thousands of reopens stay quick */
    }
    tw_mkdtemp(l->src, sizeof l->src);
    tw_mkdtemp(l->scratch, sizeof l->scratch);
    struct wal_options o = {.segment_size = SEG_SIZE, .no_prealloc = true, .log = quiet};
    struct wal *w = NULL;
    assert_int_equal(wal_open(l->src, &o, &w, NULL, NULL), 0);
    struct wal_hard_state hs = {1, 1, 0};
    int tail = 8; /* batches written after the second cut: the open segment's records */
    for (uint64_t i = 1; tail > 0; i += 3) {
        for (uint64_t j = i; j <= i + 2; j++) {
            assert_int_equal(tw_append(w, j, j, term_of(j), NULL), 0);
        }
        hs.term = term_of(i + 2);
        hs.commit = i;
        assert_int_equal(wal_set_hard_state(w, &hs, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
        struct wal_stats st;
        wal_stats_get(w, &st);
        tail -= st.segments_cut >= 2;
    }
    wal_close(w);
    scan_layout(l);
    assert_true(l->closed_name[0] != '\0');
    *state = l;
    return 0;
}

static int teardown(void **state)
{
    struct layout *l = *state;
    if (l == NULL) {
        return 0;
    }
    tw_rmdir(l->src);
    tw_rmdir(l->scratch);
    free(l->open_buf);
    free(l);
    return 0;
}

static void write_file(const char *dir, const char *name, const unsigned char *b, size_t n)
{
    char to[600];
    snprintf(to, sizeof to, "%s/%s", dir, name);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, n), (ssize_t)n);
    close(fd);
}

/* Make the scratch dir hold the built WAL with the open segment replaced by @buf and, if
 * @damaged is set, that closed segment by @dbuf.  Closed segments are hard links (replay never
 * writes them), so only the replaced files are rewritten. */
static void stage(struct layout *l,
                  const unsigned char *buf,
                  size_t len,
                  const char *damaged,
                  const unsigned char *dbuf,
                  size_t dlen)
{
    static char staged[256];
    if (strcmp(staged, l->scratch) != 0 || damaged != NULL) {
        tw_rmdir(l->scratch);
        mkdir(l->scratch, 0700);
        DIR *d = opendir(l->src);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.' || strcmp(de->d_name, l->open_name) == 0 ||
                (damaged != NULL && strcmp(de->d_name, damaged) == 0)) {
                continue;
            }
            char from[600], to[600];
            snprintf(from, sizeof from, "%s/%s", l->src, de->d_name);
            snprintf(to, sizeof to, "%s/%s", l->scratch, de->d_name);
            assert_int_equal(link(from, to), 0);
        }
        closedir(d);
        snprintf(staged, sizeof staged, "%s", damaged != NULL ? "" : l->scratch);
    }
    write_file(l->scratch, l->open_name, buf, len);
    if (damaged != NULL) {
        write_file(l->scratch, damaged, dbuf, dlen);
    }
}

static int reopen(struct layout *l, enum wal_recovery mode, struct wal_recovered *rec, char *err)
{
    struct wal_options o = {
        .segment_size = SEG_SIZE, .no_prealloc = true, .recovery = mode, .log = quiet};
    struct wal *w = NULL;
    int rv = wal_open(l->scratch, &o, &w, rec, err);
    if (rv == 0) {
        for (uint64_t i = 1; i <= rec->last_index; i++) {
            if (!tw_check(wal_memtable(w), i, term_of(i))) {
                fprintf(stderr, "entry %llu wrong after reopen\n", (unsigned long long)i);
                rv = -1;
            }
        }
        wal_close(w);
    }
    return rv;
}

/* The last index once every record ending at or before @off is applied. */
static uint64_t expected_last(const struct layout *l, size_t off)
{
    uint64_t last = l->base_last;
    for (size_t i = 0; i < l->n_bounds && l->bound[i] <= off; i++) {
        last = l->last_at[i];
    }
    return last;
}

/* True if the file cut at @off ends cleanly: at a record boundary, or with only zero bytes after
 * one (a cut inside a header that starts with zero bytes looks like preallocated space). */
static bool is_boundary(const struct layout *l, size_t off)
{
    size_t start = WAL_SEG_HEADER_SIZE;
    for (size_t i = 0; i < l->n_bounds && l->bound[i] <= off; i++) {
        start = l->bound[i];
    }
    for (size_t i = start; i < off; i++) {
        if (l->open_buf[i] != 0) {
            return false;
        }
    }
    return true;
}

static void cut_at_every_offset(void **state)
{
    struct layout *l = *state;
    char err[WAL_ERRMSG_SIZE];
    for (size_t off = 0; off <= l->open_len; off++) {
        stage(l, l->open_buf, off, NULL, NULL, 0);
        struct wal_recovered rec;
        int rv = reopen(l, WAL_RECOVER_TOLERATE_TAIL, &rec, err);
        if (off < WAL_SEG_HEADER_SIZE) {
            /* The header is synced before the file gets its name: damage there is corruption. */
            assert_int_equal(rv, WAL_ECORRUPT);
            continue;
        }
        if (rv != 0) {
            fprintf(stderr, "cut at %zu: %d %s\n", off, rv, err);
        }
        assert_int_equal(rv, 0);
        assert_true(rec.last_index == expected_last(l, off));
        if (off >= l->synced_end) {
            assert_true(rec.last_index >= l->synced);
        }
        assert_true((rec.torn_bytes == 0) == is_boundary(l, off));
        stage(l, l->open_buf, off, NULL, NULL, 0);
        rv = reopen(l, WAL_RECOVER_STRICT, &rec, err);
        assert_int_equal(rv, is_boundary(l, off) ? 0 : WAL_ECORRUPT);
    }
}

static void flip_every_byte_of_open_segment(void **state)
{
    struct layout *l = *state;
    uint64_t seed = test_seed("flip_every_byte_of_open_segment");
    unsigned char *buf = malloc(l->open_len + 64);
    char err[WAL_ERRMSG_SIZE];
    /* Include a zero tail, as preallocated files have, to flip bits there too. */
    size_t len = l->open_len + 64;
    for (size_t off = 0; off < len; off++) {
        memcpy(buf, l->open_buf, l->open_len);
        memset(buf + l->open_len, 0, 64);
        buf[off] ^= (unsigned char)(1u << (test_rand(&seed) % 8));
        stage(l, buf, len, NULL, NULL, 0);
        struct wal_recovered rec;
        int rv = reopen(l, WAL_RECOVER_TOLERATE_TAIL, &rec, err);
        if (off < WAL_SEG_HEADER_SIZE) {
            assert_int_equal(rv, WAL_ECORRUPT);
            continue;
        }
        assert_int_equal(rv, 0);
        /* Everything wholly before the damaged record survives; nothing after it appears. */
        size_t rec_start = WAL_SEG_HEADER_SIZE;
        for (size_t i = 0; i < l->n_bounds && l->bound[i] <= off; i++) {
            rec_start = l->bound[i];
        }
        assert_true(rec.last_index == expected_last(l, rec_start));
        stage(l, buf, len, NULL, NULL, 0);
        assert_int_equal(reopen(l, WAL_RECOVER_STRICT, &rec, err), WAL_ECORRUPT);
        assert_non_null(strstr(err, l->open_name));
    }
    free(buf);
}

/* A closed segment is never "a torn tail": any flipped bit or cut is WAL_ECORRUPT with the file
 * and offset, and the file stays in place. */
static void damage_in_closed_segment_is_corruption(void **state)
{
    struct layout *l = *state;
    uint64_t seed = test_seed("damage_in_closed_segment_is_corruption");
    char path[512], err[WAL_ERRMSG_SIZE];
    snprintf(path, sizeof path, "%s/%s", l->src, l->closed_name);
    unsigned char *orig;
    size_t len;
    read_file(path, &orig, &len);
    unsigned char *buf = malloc(len);
    /* Every byte of the header and the first records, then a random stride. */
    for (size_t off = 0; off < len; off += off < 1024 ? 1 : 1 + test_rand(&seed) % 16) {
        memcpy(buf, orig, len);
        buf[off] ^= (unsigned char)(1u << (test_rand(&seed) % 8));
        stage(l, l->open_buf, l->open_len, l->closed_name, buf, len);
        struct wal_recovered rec;
        assert_int_equal(reopen(l, WAL_RECOVER_TOLERATE_TAIL, &rec, err), WAL_ECORRUPT);
        assert_non_null(strstr(err, l->closed_name));
        assert_non_null(strstr(err, "offset"));
        assert_int_equal(tw_count(l->scratch, l->closed_name), 1);
    }
    for (size_t cut = 0; cut < len; cut += 1 + test_rand(&seed) % 97) {
        stage(l, l->open_buf, l->open_len, l->closed_name, orig, cut);
        struct wal_recovered rec;
        assert_int_equal(reopen(l, WAL_RECOVER_TOLERATE_TAIL, &rec, err), WAL_ECORRUPT);
    }
    free(buf);
    free(orig);
}

/* A live WAL crashed at random moments (the fault fs drops every byte not covered by a
 * completed fdatasync): whatever was reported durable before the crash is there after it, and
 * the recovered log is a prefix of what was appended. */
static void random_crashes_keep_durable_prefix(void **state)
{
    (void)state;
    uint64_t seed = test_seed("random_crashes_keep_durable_prefix");
    for (int round = 0; round < 20; round++) {
        char dir[256];
        tw_mkdtemp(dir, sizeof dir);
        struct wal_fs *fs;
        assert_int_equal(wal_fault_fs_new(&fs), 0);
        struct wal_options o = {.segment_size = 16 * 1024, .fs = fs, .log = quiet};
        struct wal *w = NULL;
        assert_int_equal(wal_open(dir, &o, &w, NULL, NULL), 0);
        uint64_t next = 1, crash_at = 50 + test_rand(&seed) % 400;
        struct wal_durable d = {0};
        for (uint64_t step = 0; step < crash_at; step++) {
            uint64_t n = 1 + test_rand(&seed) % 5;
            assert_int_equal(tw_append(w, next, next + n - 1, term_of(next + n - 1), NULL), 0);
            next += n;
            if (test_rand(&seed) % 8 == 0) {
                assert_int_equal(wal_sync_wait(w, 0), 0);
            }
        }
        assert_int_equal(wal_durable(w, &d), 0);
        wal_fault_fs_crash(fs);
        wal_close(w);
        wal_fault_fs_free(fs);
        o.fs = NULL;
        struct wal_recovered rec;
        char err[WAL_ERRMSG_SIZE] = "";
        int rv = wal_open(dir, &o, &w, &rec, err);
        if (rv != 0) {
            fprintf(stderr, "round %d: %s\n", round, err);
        }
        assert_int_equal(rv, 0);
        assert_true(rec.last_index >= d.index);
        assert_true(rec.last_index < next);
        for (uint64_t i = 1; i <= rec.last_index; i++) {
            /* tw_append gave a whole call the term of its last index. */
            struct wal_entry e;
            size_t k;
            assert_int_equal(wal_memtable_entries(wal_memtable(w), i, i + 1, SIZE_MAX, &e, 1, &k),
                             0);
            assert_true(tw_check(wal_memtable(w), i, e.term));
        }
        wal_close(w);
        tw_rmdir(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cut_at_every_offset),
        cmocka_unit_test(flip_every_byte_of_open_segment),
        cmocka_unit_test(damage_in_closed_segment_is_corruption),
        cmocka_unit_test(random_crashes_keep_durable_prefix),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
