/* Store-level behaviour: checkpoint -> open_from_tables, HashKV, reopen, concurrent readers. */
#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test/lib/seed.h"
#include "test/unit/lsm/helpers.h"

/* Apply @n puts of keys "key%06d" (value = @tag + index) in groups of 64. */
static void fill(struct fx *f, int n, const char *tag)
{
    char keys[64][16], vals[64][32];
    struct lsm_op ops[64];
    struct lsm_entry e[64];
    for (int i = 0; i < n;) {
        int g = 0;
        for (; g < 64 && i < n; g++, i++) {
            snprintf(keys[g], sizeof keys[g], "key%06d", i);
            snprintf(vals[g], sizeof vals[g], "%s-%d-padding-padding", tag, i);
            ops[g] = op_put(keys[g], vals[g]);
            e[g] = (struct lsm_entry){.index = ++f->index, .term = 2, .req = &ops[g]};
        }
        struct lsm_apply_out out;
        assert_int_equal(lsm_apply(f->s, e, (size_t)g, &out), 0);
        lsm_apply_out_fini(&out);
    }
}

/* The round trip the snapshot module relies on: tables hard-linked at an applied index build a
 * store with the same applied index, revision, keyspace hash and contents. */
static void checkpoint_round_trip(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fill(f, 20000, "v1");
    fill(f, 20000, "v2"); /* a second version of every key: history to carry */
    struct lsm_op c = {.type = LSM_OP_COMPACT, .u.compact.revision = 30000};
    struct lsm_result r;
    fx_apply(f, &c, &r);
    lsm_result_fini(&r);
    fill(f, 100, "v3");

    char cp[160], db[160], err[256];
    snprintf(cp, sizeof cp, "%s/cp", f->dir);
    snprintf(db, sizeof db, "%s/restored", f->dir);
    struct lsm_status st;
    assert_int_equal(lsm_checkpoint(f->s, cp, &st), 0);
    assert_int_equal(st.applied_index, f->index);
    assert_int_equal(st.revision, 40100);
    assert_int_equal(lsm_checkpoint(f->s, cp, &st), LSM_EEXIST);
    struct stat sb;
    char path[200];
    snprintf(path, sizeof path, "%s/LSM-CHECKPOINT", cp);
    assert_int_equal(stat(path, &sb), 0);

    /* Writes after the checkpoint are not in it. */
    fill(f, 10, "v4");
    struct lsm_store *s2;
    assert_int_equal(lsm_open_from_tables(cp, db, NULL, &s2, err), 0);
    struct lsm_status st2;
    lsm_status_get(s2, &st2);
    assert_int_equal(st2.applied_index, st.applied_index);
    assert_int_equal(st2.applied_term, 2);
    assert_int_equal(st2.revision, 40100);
    assert_int_equal(st2.compact_revision, 30000);

    struct lsm_range_req q = {.key = B("key000005")};
    assert_int_equal(lsm_range(s2, &q, &r, err), 0);
    assert_kv(&r.u.range.kvs[0], "key000005", "v3-5-padding-padding", 6, 40006, 3);
    lsm_result_fini(&r);
    struct lsm_range_req all = {.key = B("key"), .range_end = B("kez"), .count_only = true};
    assert_int_equal(lsm_range(s2, &all, &r, err), 0);
    assert_int_equal(r.u.range.count, 20000);
    lsm_result_fini(&r);
    /* History at or above the compaction point came along. */
    q.key = B("key009999");
    q.revision = 30000;
    assert_int_equal(lsm_range(s2, &q, &r, err), 0);
    assert_kv(&r.u.range.kvs[0], "key009999", "v2-9999-padding-padding", 10000, 30000, 2);
    lsm_result_fini(&r);

    /* Same hash as the source at the checkpointed revision. */
    uint32_t h1, h2;
    int64_t hr, cr;
    assert_int_equal(lsm_hash_kv(f->s, 40100, &h1, &hr, &cr, err), 0);
    assert_int_equal(lsm_hash_kv(s2, 0, &h2, &hr, &cr, err), 0);
    assert_int_equal(h1, h2);
    assert_int_equal(hr, 40100);

    /* The restored store takes the next entries. */
    struct lsm_op p = op_put("new", "x");
    struct lsm_entry e = {.index = st.applied_index + 1, .term = 3, .req = &p};
    struct lsm_apply_out out;
    assert_int_equal(lsm_apply(s2, &e, 1, &out), 0);
    assert_int_equal(out.revision, 40101);
    lsm_apply_out_fini(&out);
    lsm_close(s2);
    assert_int_equal(lsm_open_from_tables(cp, db, NULL, &s2, err), LSM_EEXIST);
    /* A directory without tables is not a snapshot. */
    char empty[160], db3[160];
    snprintf(empty, sizeof empty, "%s/empty", f->dir);
    snprintf(db3, sizeof db3, "%s/db3", f->dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(lsm_open_from_tables(empty, db3, NULL, &s2, err), LSM_ECORRUPT);
    assert_null(s2);
    fx_free(f);
}

/* HashKV depends on the logical state only, not on how far physical compaction got. */
static int collect_state(void *arg, struct lsm_bytes name, struct lsm_bytes value)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%.*s=%.*s;", (int)name.len, (const char *)name.data, (int)value.len,
             (const char *)value.data);
    return 0;
}

static void state_of(struct lsm_store *s, const char *prefix, char *out)
{
    out[0] = '\0';
    char err[256];
    assert_int_equal(lsm_state_scan(s, B(prefix), collect_state, out, err), 0);
}

/* State records are written with their entry's batch (not when the entry is skipped), survive a
 * reopen and travel in a checkpoint's tables, and are invisible to the keyspace and HashKV. */
static void state_records_apply_with_their_entry(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    uint32_t h0, h1;
    int64_t hr, cr;
    char err[256], got[512];
    fill(f, 10, "v");
    assert_int_equal(lsm_hash_kv(f->s, 0, &h0, &hr, &cr, err), 0);
    struct lsm_state_rec recs[3] = {{.name = B("lease/1"), .value = B("ttl10")},
                                    {.name = B("lease/2"), .value = B("ttl20")},
                                    {.name = B("auth"), .value = B("on")}};
    struct lsm_entry e = {.index = f->index + 1, .term = 2, .state = recs, .n_state = 3};
    struct lsm_apply_out out;
    assert_int_equal(lsm_apply(f->s, &e, 1, &out), 0);
    lsm_apply_out_fini(&out);
    f->index++;
    state_of(f->s, "lease/", got);
    assert_string_equal(got, "lease/1=ttl10;lease/2=ttl20;");
    /* A replayed entry (at the applied index) writes nothing. */
    struct lsm_state_rec del = {.name = B("lease/1"), .del = true};
    e = (struct lsm_entry){.index = f->index, .term = 2, .state = &del, .n_state = 1};
    assert_int_equal(lsm_apply(f->s, &e, 1, &out), 0);
    assert_true(out.results[0].skipped);
    lsm_apply_out_fini(&out);
    state_of(f->s, "", got);
    assert_string_equal(got, "auth=on;lease/1=ttl10;lease/2=ttl20;");
    e.index = ++f->index;
    assert_int_equal(lsm_apply(f->s, &e, 1, &out), 0);
    lsm_apply_out_fini(&out);
    state_of(f->s, "", got);
    assert_string_equal(got, "auth=on;lease/2=ttl20;");
    /* Not keys, not hashed. */
    assert_int_equal(lsm_hash_kv(f->s, 0, &h1, &hr, &cr, err), 0);
    assert_int_equal(h0, h1);
    struct lsm_range_req all = {.key = B("\0"), .range_end = B("\0"), .count_only = true};
    all.key.len = all.range_end.len = 1;
    struct lsm_result r;
    assert_int_equal(lsm_range(f->s, &all, &r, err), 0);
    assert_int_equal(r.u.range.count, 10);
    lsm_result_fini(&r);
    /* Written outside an entry (an older build's files moved in): the applied index stays. */
    struct lsm_state_rec mark = {.name = B("state"), .value = B("1")};
    assert_int_equal(lsm_state_write(f->s, &mark, 1, err), 0);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    assert_int_equal(st.applied_index, f->index);
    /* Reopen, then a checkpoint's tables. */
    lsm_close(f->s);
    fx_open(f);
    state_of(f->s, "", got);
    assert_string_equal(got, "auth=on;lease/2=ttl20;state=1;");
    char cp[160], db[160];
    snprintf(cp, sizeof cp, "%s/cp", f->dir);
    snprintf(db, sizeof db, "%s/restored", f->dir);
    assert_int_equal(lsm_checkpoint(f->s, cp, NULL), 0);
    struct lsm_store *s2;
    assert_int_equal(lsm_open_from_tables(cp, db, NULL, &s2, err), 0);
    state_of(s2, "", got);
    assert_string_equal(got, "auth=on;lease/2=ttl20;state=1;");
    lsm_close(s2);
    fx_free(f);
}

static void hash_ignores_compaction_progress(void **state)
{
    (void)state;
    struct fx *a = fx_new(), *b = fx_new();
    for (int round = 0; round < 3; round++) {
        fill(a, 300, round ? "x" : "y");
        fill(b, 300, round ? "x" : "y");
    }
    struct lsm_op c = {.type = LSM_OP_COMPACT, .u.compact.revision = 700};
    struct lsm_result r;
    fx_apply(a, &c, &r);
    lsm_result_fini(&r);
    char err[256];
    uint32_t ha, hb;
    int64_t hr, cr;
    /* The view published with the compaction predates any physical deletion... */
    assert_int_equal(lsm_hash_kv(a->s, 0, &ha, &hr, &cr, err), 0);
    assert_int_equal(cr, 700);
    assert_int_equal(lsm_compact_wait(a->s, 700), 0);
    /* ...and a no-op entry publishes one taken after it: same logical state, same hash. */
    struct lsm_op noop = {.type = LSM_OP_NOOP};
    fx_apply(a, &noop, &r);
    lsm_result_fini(&r);
    assert_int_equal(lsm_hash_kv(a->s, 0, &hb, &hr, &cr, err), 0);
    assert_int_equal(ha, hb);
    assert_int_equal(hr, 900);
    /* b: the same history and compaction, so the same hash; a different value changes it. */
    fx_apply(b, &c, &r);
    lsm_result_fini(&r);
    assert_int_equal(lsm_hash_kv(b->s, 0, &hb, &hr, &cr, err), 0);
    assert_int_equal(ha, hb);
    assert_int_equal(lsm_hash_kv(a->s, 650, &ha, &hr, &cr, err), LSM_ECOMPACTED);
    assert_int_equal(lsm_hash_kv(a->s, 5000, &ha, &hr, &cr, err), LSM_EFUTUREREV);
    fx_put(b, "key000001", "other");
    fx_put(a, "key000001", "same");
    assert_int_equal(lsm_hash_kv(a->s, 0, &ha, &hr, &cr, err), 0);
    assert_int_equal(lsm_hash_kv(b->s, 0, &hb, &hr, &cr, err), 0);
    assert_int_not_equal(ha, hb);
    fx_free(a);
    fx_free(b);
}

struct reader
{
    struct lsm_store *s;
    int64_t last;
    atomic_int reads; /* read by the writer to know the readers ran */
    atomic_bool *stop;
    int failures;
};

/* Each apply writes the same counter to "a" and "b" in one txn: a consistent view shows both
 * equal and at the header revision, and revisions never go back. */
static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    char err[256];
    while (!atomic_load(rd->stop)) {
        struct lsm_range_req q = {.key = B("a"), .range_end = B("c")};
        struct lsm_result r;
        if (lsm_range(rd->s, &q, &r, err) != 0) {
            rd->failures++;
            break;
        }
        bool ok = r.revision >= rd->last;
        if (r.u.range.n_kvs == 2) {
            const struct lsm_kv *x = &r.u.range.kvs[0], *y = &r.u.range.kvs[1];
            ok = ok && x->value_len == y->value_len &&
                 memcmp(x->value, y->value, x->value_len) == 0 && x->mod_revision == r.revision &&
                 y->mod_revision == r.revision;
        } else {
            ok = ok && r.u.range.n_kvs == 0 && r.revision == 0;
        }
        rd->failures += !ok;
        rd->last = r.revision;
        atomic_fetch_add(&rd->reads, 1);
        lsm_result_fini(&r);
    }
    return NULL;
}

static void concurrent_reads_see_whole_groups(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    atomic_bool stop;
    atomic_init(&stop, false);
    struct reader rd[2] = {{.s = f->s, .stop = &stop}, {.s = f->s, .stop = &stop}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    }
    for (int i = 0;
         i < 2000 ||
         ((atomic_load(&rd[0].reads) < 50 || atomic_load(&rd[1].reads) < 50) && i < 200000);
         i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        struct lsm_op ops[2] = {op_put("a", v), op_put("b", v)};
        struct lsm_op t = {.type = LSM_OP_TXN};
        t.u.txn.success = ops;
        t.u.txn.n_success = 2;
        struct lsm_result r;
        fx_apply(f, &t, &r);
        assert_int_equal(r.err, 0);
        lsm_result_fini(&r);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rd[i].failures, 0);
        assert_true(atomic_load(&rd[i].reads) > 0);
    }
    fx_free(f);
}

/* State survives close/reopen; entries at or below the applied index are skipped. */
static void reopen_keeps_applied_index(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fill(f, 100, "a");
    lsm_close(f->s);
    fx_open(f);
    assert_int_equal(f->index, 100);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    assert_int_equal(st.revision, 100);
    assert_true(st.db_size_bytes > 0);
    struct lsm_op p = op_put("key000001", "replayed");
    struct lsm_entry e[2] = {{.index = 100, .term = 2, .req = &p},
                             {.index = 101, .term = 2, .req = &p}};
    struct lsm_apply_out out;
    assert_int_equal(lsm_apply(f->s, e, 2, &out), 0);
    assert_true(out.results[0].skipped);
    assert_false(out.results[1].skipped);
    assert_int_equal(out.results[1].revision, 101);
    lsm_apply_out_fini(&out);
    /* Indexes must increase within a group. */
    struct lsm_entry bad[2] = {{.index = 105, .term = 2, .req = &p},
                               {.index = 104, .term = 2, .req = &p}};
    assert_int_equal(lsm_apply(f->s, bad, 2, &out), LSM_EINVAL);
    lsm_apply_out_fini(&out);
    assert_string_equal(lsm_strerror(LSM_ECOMPACTED), "required revision has been compacted");
    assert_string_equal(lsm_strerror(1), "unknown error");
    fx_free(f);
}

/* Every key000000..key<n-1> from fill(): version @want[i]; values from fill(@tag).  Every 37th
 * key's previous version is still readable one revision before its current one (the put moved
 * it to history, which needs the put to have found it). */
static void check_fill(struct fx *f, int n, const int64_t *want_v, const char *tag)
{
    struct lsm_range_req req = {.key = B("key"), .range_end = B("kez")};
    struct lsm_result res;
    fx_range(f, &req, 0, &res);
    assert_int_equal(res.u.range.n_kvs, n);
    for (int i = 0; i < n; i++) {
        const struct lsm_kv *kv = &res.u.range.kvs[i];
        int64_t want = want_v[i];
        assert_int_equal(kv->version, want);
        assert_true(kv->value_len > strlen(tag) && memcmp(kv->value, tag, strlen(tag)) == 0);
        if (want > 1 && i % 37 == 0) {
            struct lsm_range_req old = {.key = {kv->key, kv->key_len},
                                        .revision = kv->mod_revision - 1};
            struct lsm_result o;
            fx_range(f, &old, 0, &o);
            assert_int_equal(o.u.range.n_kvs, 1);
            assert_int_equal(o.u.range.kvs[0].version, want - 1);
            assert_int_equal(o.u.range.kvs[0].create_revision, kv->create_revision);
            lsm_result_fini(&o);
        }
    }
    lsm_result_fini(&res);
}

/* Add @k to the expected versions of the first @n keys (a fill() of @n keys @k times). */
static void bump(int64_t *v, int n, int k)
{
    for (int i = 0; i < n; i++) {
        v[i] += k;
    }
}

static bool key_filter_ready(struct fx *f)
{
    struct lsm_status st;
    for (int i = 0; i < 10000; i++) {
        lsm_status_get(f->s, &st);
        if (st.key_filter_complete) {
            return true;
        }
        usleep(1000);
    }
    return false;
}

/* Run a shell command naming @path as %1$s (any number of times). */
static void sh(const char *fmt, const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, path);
    assert_int_equal(system(cmd), 0);
}

/* Open @f's store again, wait for its key filter, put keys 0..@n-1 once more and check them
 * against @v (bumped). */
static void reopen_fill_check(struct fx *f, int64_t *v, int n, const char *tag)
{
    fx_open(f);
    assert_true(key_filter_ready(f));
    fill(f, n, tag);
    bump(v, n, 1);
    check_fill(f, n, v, tag);
}

/* The key filter lets puts of new keys skip the read of their current record.  It must never
 * call an existing key new: whether it comes from a new store, from the file saved at a clean
 * close, or from a rebuild after a crash, a stale or corrupt file, every put of an existing key
 * still finds it (version, create_revision, the old version in history). */
static void key_filter_never_misses_a_key(void **state)
{
    (void)state;
    static int64_t v[800]; /* expected version per key */
    struct fx *f = fx_new();
    assert_true(key_filter_ready(f)); /* a new store: complete at once */
    fill(f, 500, "a");
    fill(f, 500, "b");
    bump(v, 500, 2);
    check_fill(f, 500, v, "b");

    /* Clean close: saved, loaded (and removed) at open. */
    lsm_close(f->s);
    char path[256];
    snprintf(path, sizeof path, "%s/KEYFILTER", f->db);
    assert_int_equal(access(path, F_OK), 0);
    fx_open(f);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    assert_true(st.key_filter_complete);
    assert_int_equal(access(path, F_OK), -1);
    fill(f, 600, "c");
    bump(v, 600, 1);
    check_fill(f, 600, v, "c");

    /* A filter saved at an older applied index is not trusted: keys 600..699 came later. */
    lsm_close(f->s);
    sh("cp '%1$s' '%1$s.old'", path);
    fx_open(f);
    fill(f, 700, "d");
    bump(v, 700, 1);
    lsm_close(f->s);
    sh("mv '%1$s.old' '%1$s'", path);
    reopen_fill_check(f, v, 700, "e"); /* rebuilt from the store */

    /* A corrupt file, and no file (a crash): rebuilt too. */
    lsm_close(f->s);
    sh("printf x | dd of='%1$s' bs=1 seek=100 conv=notrunc status=none", path);
    reopen_fill_check(f, v, 700, "f");
    lsm_close(f->s);
    sh("rm '%1$s'", path);
    reopen_fill_check(f, v, 800, "g"); /* keys 700..799 are new */
    fx_free(f);
}

/* Set (len 8) or remove (NULL) the layout version record of a closed store, behind its back. */
static void set_format(const char *db, const uint8_t *v)
{
    char *err = NULL;
    leveldb_options_t *o = leveldb_options_create();
    leveldb_t *ldb = leveldb_open(o, db, &err);
    assert_null(err);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    if (v != NULL) {
        leveldb_put(ldb, wo, "m/format", 8, (const char *)v, 8, &err);
    } else {
        leveldb_delete(ldb, wo, "m/format", 8, &err);
    }
    assert_null(err);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(ldb);
    leveldb_options_destroy(o);
}

/* A store of another layout (or an old one without the record) is refused with a message, and
 * left as it was: putting the record back opens it with its data. */
static void other_layout_refused(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fill(f, 10, "a");
    lsm_close(f->s);
    f->s = NULL;
    char err[256];
    struct lsm_store *s = NULL;
    uint8_t v1[8] = {1}, v2[8] = {2};
    set_format(f->db, v1);
    assert_int_equal(lsm_open(f->db, NULL, &s, err), LSM_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(err, "layout version 1"));
    set_format(f->db, NULL);
    assert_int_equal(lsm_open(f->db, NULL, &s, err), LSM_ECORRUPT);
    assert_non_null(strstr(err, "layout version 0"));
    set_format(f->db, v2);
    fx_open(f);
    assert_int_equal(f->index, 10);
    fx_free(f);
}

/* The names of @db's files, sorted and joined by spaces (to see that a refused open changed
 * nothing). */
static void list_dir(const char *db, char *out, size_t size)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -v '^LOG' | tr '\\n' ' '", db);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    pclose(p);
}

/* Open @db expecting @code with an error naming @what; the directory is left as it was. */
static void open_refused(const char *db, int code, const char *what)
{
    char before[2048], after[2048], err[256] = "";
    list_dir(db, before, sizeof before);
    struct lsm_store *s = NULL;
    assert_int_equal(lsm_open(db, NULL, &s, err), code);
    assert_null(s);
    if (strstr(err, what) == NULL) {
        fail_msg("open error \"%s\" does not name %s", err, what);
    }
    list_dir(db, after, sizeof after);
    assert_string_equal(before, after);
}

/* A store directory that lost CURRENT, has a garbled one or lost its MANIFEST is refused with a
 * message naming the file, not taken for a new store (LevelDB would start an empty database and
 * delete the tables), and nothing in it is changed: put back, the store opens with its data.  A
 * LOCK held by another open store is named as such. */
static void damaged_directory_refused_naming_the_file(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    fill(f, 3000, "a");
    lsm_close(f->s);
    f->s = NULL;
    char cur[200], bak[220], manifest[64] = "", mpath[200], mbak[220];
    snprintf(cur, sizeof cur, "%s/CURRENT", f->db);
    snprintf(bak, sizeof bak, "%s.bak", cur);
    FILE *c = fopen(cur, "r");
    assert_non_null(c);
    assert_non_null(fgets(manifest, sizeof manifest, c));
    fclose(c);
    manifest[strcspn(manifest, "\n")] = '\0';
    snprintf(mpath, sizeof mpath, "%s/%s", f->db, manifest);
    snprintf(mbak, sizeof mbak, "%s.bak", mpath);

    assert_int_equal(rename(cur, bak), 0);
    open_refused(f->db, LSM_ECORRUPT, "CURRENT is missing");
    sh("printf 'MANIFEST-00000x' > '%s/CURRENT'", f->db);
    open_refused(f->db, LSM_ECORRUPT, "CURRENT is garbled");
    assert_int_equal(rename(bak, cur), 0);
    assert_int_equal(rename(mpath, mbak), 0);
    open_refused(f->db, LSM_ECORRUPT, manifest);
    assert_int_equal(rename(mbak, mpath), 0);

    fx_open(f);
    assert_int_equal(f->index, 3000);
    open_refused(f->db, LSM_EIO, "LOCK is held");
    fx_free(f);

    /* An empty directory, or one with only LevelDB's info log, is a new store. */
    f = fx_new();
    lsm_close(f->s);
    rm_rf(f->db);
    assert_int_equal(mkdir(f->db, 0700), 0);
    sh("echo info > '%s/LOG'", f->db);
    fx_open(f);
    assert_int_equal(f->index, 0);
    fx_free(f);
}

/* Compaction in small batches, interrupted by close, resumes at open and ends in the same
 * logical state (same HashKV) as an uninterrupted one. */
static void compaction_resumes_after_close(void **state)
{
    (void)state;
    struct fx *a = fx_new(), *b = fx_new();
    for (int round = 0; round < 3; round++) {
        fill(a, 300, round == 1 ? "two" : "x");
        fill(b, 300, round == 1 ? "two" : "x");
    }
    lsm_close(a->s);
    struct lsm_options o;
    memset(&o, 0, sizeof o);
    o.compact_batch = 7;
    char err[256];
    assert_int_equal(lsm_open(a->db, &o, &a->s, err), 0);
    struct lsm_op c = {.type = LSM_OP_COMPACT, .u.compact.revision = 600};
    struct lsm_result r;
    fx_apply(a, &c, &r);
    lsm_result_fini(&r);
    fx_apply(b, &c, &r);
    lsm_result_fini(&r);
    lsm_close(a->s); /* most likely mid-pass */
    assert_int_equal(lsm_open(a->db, &o, &a->s, err), 0);
    assert_int_equal(lsm_compact_wait(a->s, 600), 0);
    assert_int_equal(lsm_compact_wait(b->s, 600), 0);
    struct lsm_status st;
    lsm_status_get(a->s, &st);
    assert_int_equal(st.compact_revision, 600);
    assert_int_equal(st.compacted_through, 600);
    struct lsm_op noop = {.type = LSM_OP_NOOP};
    fx_apply(a, &noop, &r);
    lsm_result_fini(&r);
    fx_apply(b, &noop, &r);
    lsm_result_fini(&r);
    struct lsm_range_req q = {.key = B("key000299"), .revision = 600};
    assert_int_equal(lsm_range(a->s, &q, &r, err), 0);
    assert_kv(&r.u.range.kvs[0], "key000299", "two-299-padding-padding", 300, 600, 2);
    lsm_result_fini(&r);
    q.revision = 599;
    assert_int_equal(lsm_range(a->s, &q, &r, err), LSM_ECOMPACTED);
    lsm_result_fini(&r);
    uint32_t ha, hb;
    int64_t hr, cr;
    assert_int_equal(lsm_hash_kv(a->s, 0, &ha, &hr, &cr, err), 0);
    assert_int_equal(lsm_hash_kv(b->s, 0, &hb, &hr, &cr, err), 0);
    assert_int_equal(ha, hb);
    fx_free(a);
    fx_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checkpoint_round_trip),
        cmocka_unit_test(state_records_apply_with_their_entry),
        cmocka_unit_test(hash_ignores_compaction_progress),
        cmocka_unit_test(concurrent_reads_see_whole_groups),
        cmocka_unit_test(reopen_keeps_applied_index),
        cmocka_unit_test(compaction_resumes_after_close),
        cmocka_unit_test(other_layout_refused),
        cmocka_unit_test(damaged_directory_refused_naming_the_file),
        cmocka_unit_test(key_filter_never_misses_a_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
