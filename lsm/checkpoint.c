/* Snapshot support: checkpoint the live table files, and build a store from table files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lsm/internal.h"

/* Table numbers from the `leveldb.sstables` property: lines " <number>:<size>[...]". */
int lsm_tables_parse(const char *prop, uint64_t **out, size_t *n)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    for (const char *line = prop; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n') {
            line++;
        }
        char *end;
        unsigned long long num = strtoull(line, &end, 10);
        if (end == line || *end != ':') {
            continue;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            uint64_t *v = realloc(*out, cap * sizeof *v);
            if (v == NULL) {
                return LSM_ENOMEM;
            }
            *out = v;
        }
        (*out)[(*n)++] = num;
    }
    return 0;
}

int lsm_table_link(const char *src_dir, const char *dir, uint64_t num, bool *gone, char *errmsg)
{
    static const char *const exts[] = {"ldb", "sst"};
    char from[4096], to[4096];
    *gone = false;
    for (size_t i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%06llu.%s", src_dir, (unsigned long long)num, exts[i]);
        snprintf(to, sizeof to, "%s/%06llu.%s", dir, (unsigned long long)num, exts[i]);
        if (link(from, to) == 0) {
            return 0;
        }
        if (errno != ENOENT) {
            lsm_set_err(errmsg, "link %s -> %s: %s", from, to, strerror(errno));
            return LSM_EIO;
        }
    }
    *gone = true;
    return 0;
}

static int write_manifest(const char *dir,
                          const struct lsm_status *st,
                          const uint64_t *tables,
                          size_t n,
                          char *errmsg)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/LSM-CHECKPOINT", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        lsm_set_err(errmsg, "create %s: %s", path, strerror(errno));
        return LSM_EIO;
    }
    fprintf(f, "applied_index %llu\napplied_term %llu\nrevision %lld\ncompact_revision %lld\n",
            (unsigned long long)st->applied_index, (unsigned long long)st->applied_term,
            (long long)st->revision, (long long)st->compact_revision);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "table %06llu\n", (unsigned long long)tables[i]);
    }
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        lsm_set_err(errmsg, "write %s: %s", path, strerror(errno));
        return LSM_EIO;
    }
    return 0;
}

static void unlink_tables(const char *dir, const uint64_t *tables, size_t n)
{
    char path[4096];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%06llu.ldb", dir, (unsigned long long)tables[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%06llu.sst", dir, (unsigned long long)tables[i]);
        unlink(path);
    }
}

/* Flush, list and link once; *@retry when a listed table vanished (a LevelDB compaction
 * finished in between), after undoing the links. */
static int checkpoint_once(struct lsm_store *s,
                           const char *dir,
                           uint64_t **tables,
                           size_t *n,
                           bool *retry)
{
    *retry = false;
    /* A manual compaction over an empty key range flushes the memtable and moves nothing. */
    leveldb_compact_range(s->db, "\0", 1, "\0", 1);
    char *prop = leveldb_property_value(s->db, "leveldb.sstables");
    if (prop == NULL) {
        lsm_set_err(s->errmsg, "checkpoint: no leveldb.sstables property");
        return LSM_EIO;
    }
    int rv = lsm_tables_parse(prop, tables, n);
    leveldb_free(prop);
    for (size_t i = 0; i < *n && rv == 0; i++) {
        bool gone;
        rv = lsm_table_link(s->dir, dir, (*tables)[i], &gone, s->errmsg);
        if (rv == 0 && gone) {
            unlink_tables(dir, *tables, i);
            *retry = true;
            break;
        }
    }
    return rv;
}

int lsm_checkpoint(struct lsm_store *s, const char *dir, struct lsm_status *st)
{
    if (mkdir(dir, 0755) != 0) {
        lsm_set_err(s->errmsg, "checkpoint: mkdir %s: %s", dir, strerror(errno));
        return errno == EEXIST ? LSM_EEXIST : LSM_EIO;
    }
    /* Applies run on this thread, so they are paused already; pause the compactor too, so the
     * flushed tables hold every write made so far and nothing is half done. */
    pthread_mutex_lock(&s->pause_mu);
    uint64_t *tables = NULL;
    size_t n = 0;
    bool retry = true;
    int rv = 0;
    for (int attempt = 0; rv == 0 && retry && attempt < 10; attempt++) {
        free(tables);
        tables = NULL;
        rv = checkpoint_once(s, dir, &tables, &n, &retry);
    }
    struct lsm_status mine = {
        .applied_index = s->applied_index,
        .applied_term = s->applied_term,
        .revision = s->rev,
        .compact_revision = s->compact_rev,
    };
    pthread_mutex_unlock(&s->pause_mu);
    if (rv == 0 && retry) {
        lsm_set_err(s->errmsg, "checkpoint: table set kept changing");
        rv = LSM_EIO;
    }
    if (rv == 0) {
        rv = write_manifest(dir, &mine, tables, n, s->errmsg);
    }
    free(tables);
    if (rv == 0 && st != NULL) {
        *st = mine;
    }
    return rv;
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY);
    int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL, 0644);
    int rv = in < 0 || out < 0 ? -1 : 0;
    char buf[65536];
    ssize_t r;
    while (rv == 0 && (r = read(in, buf, sizeof buf)) != 0) {
        if (r < 0 || write(out, buf, (size_t)r) != r) {
            rv = -1;
        }
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0 && close(out) != 0) {
        rv = -1;
    }
    return rv;
}

static int place_tables(const char *tables_dir, const char *db_dir, size_t *n, char *errmsg)
{
    DIR *d = opendir(tables_dir);
    if (d == NULL) {
        lsm_set_err(errmsg, "open %s: %s", tables_dir, strerror(errno));
        return LSM_EIO;
    }
    struct dirent *e;
    int rv = 0;
    *n = 0;
    while (rv == 0 && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 ||
            (strcmp(e->d_name + len - 4, ".ldb") && strcmp(e->d_name + len - 4, ".sst"))) {
            continue;
        }
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", tables_dir, e->d_name);
        snprintf(to, sizeof to, "%s/%s", db_dir, e->d_name);
        /* Table files are immutable, so sharing the inode with the source is safe. */
        if (link(from, to) != 0 && (errno != EXDEV || copy_file(from, to) != 0)) {
            lsm_set_err(errmsg, "place %s: %s", from, strerror(errno));
            rv = LSM_EIO;
        }
        (*n)++;
    }
    closedir(d);
    return rv;
}

/* Repair writes a manifest with every table in level 0; a full compaction then merges them by
 * sequence number (level-0 point lookups go by file number, which is not safe across levels
 * of the source) and leaves level 0 empty, so writes are not throttled.  With paranoid checks
 * repair reads every block with its checksum and moves a table it cannot read whole into
 * lost/ (keeping what it could read): that would be a store missing data, so it fails. */
static int rebuild(const char *tables_dir,
                   const char *db_dir,
                   const struct lsm_options *opts,
                   char *errmsg)
{
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 0);
    leveldb_options_set_paranoid_checks(o, 1);
    /* The compaction rewrites every table: give them the bloom filters the store will use. */
    int bits = opts != NULL && opts->bloom_bits_per_key != 0 ? opts->bloom_bits_per_key : 10;
    leveldb_filterpolicy_t *bloom = bits > 0 ? leveldb_filterpolicy_create_bloom(bits) : NULL;
    if (bloom != NULL) {
        leveldb_options_set_filter_policy(o, bloom);
    }
    bool none = opts != NULL && opts->no_compression;
    leveldb_options_set_compression(o, none ? leveldb_no_compression : leveldb_snappy_compression);
    char *err = NULL;
    leveldb_repair_db(o, db_dir, &err);
    int rv = 0;
    if (err != NULL) {
        rv = lsm_ldb_err(errmsg, "repair", err);
    } else {
        rv = lsm_lost_tables(db_dir, tables_dir, errmsg);
    }
    leveldb_t *db = rv == 0 ? leveldb_open(o, db_dir, &err) : NULL;
    if (rv == 0 && err != NULL) {
        rv = lsm_ldb_err(errmsg, "open repaired", err);
    }
    if (db != NULL) {
        leveldb_compact_range(db, NULL, 0, NULL, 0);
        leveldb_close(db);
    }
    leveldb_options_destroy(o);
    if (bloom != NULL) {
        leveldb_filterpolicy_destroy(bloom);
    }
    return rv;
}

int lsm_open_from_tables(const char *tables_dir,
                         const char *db_dir,
                         const struct lsm_options *opts,
                         struct lsm_store **out,
                         char *errmsg)
{
    *out = NULL;
    if (mkdir(db_dir, 0755) != 0) {
        lsm_set_err(errmsg, "mkdir %s: %s", db_dir, strerror(errno));
        return errno == EEXIST ? LSM_EEXIST : LSM_EIO;
    }
    size_t n = 0;
    int rv = place_tables(tables_dir, db_dir, &n, errmsg);
    if (rv == 0 && n == 0) {
        lsm_set_err(errmsg, "no table files in %s", tables_dir);
        rv = LSM_ECORRUPT;
    }
    if (rv == 0) {
        rv = rebuild(tables_dir, db_dir, opts, errmsg);
    }
    if (rv == 0) {
        rv = lsm_open(db_dir, opts, out, errmsg);
    }
    if (rv == 0 && (*out)->applied_index == 0) {
        lsm_set_err(errmsg, "tables in %s hold no applied index", tables_dir);
        lsm_close(*out);
        *out = NULL;
        rv = LSM_ECORRUPT;
    }
    return rv;
}
