/* Checking table files whole: LevelDB's repair, run with paranoid checks, reads every block of
 * every table with its checksum and moves a table it cannot read whole into lost/.  Run on hard
 * links in a scratch directory, that is a read-only check of the store that names the file. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lsm/internal.h"

#define VERIFY_BATCH 16 /* tables per repair run: how often lsm_verify asks @stop */

/* Remove @dir with its files and those of its subdirectories (repair's lost/). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && (errno == EISDIR || errno == EPERM)) {
            remove_dir(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* What repair's info log in @dir says of table @num ("Table #N: 0 entries Corruption: ..."):
 * the status from "Corruption:"/"IO error:" on, or the whole remark. */
static void lost_reason(const char *dir, unsigned long long num, char *buf, size_t size)
{
    char path[4096], line[512], tag[48];
    snprintf(buf, size, "unreadable");
    snprintf(path, sizeof path, "%s/LOG", dir);
    snprintf(tag, sizeof tag, "Table #%llu: ", num);
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        char *p = strstr(line, tag);
        if (p == NULL || strstr(p, " OK") != NULL) {
            continue;
        }
        p += strlen(tag);
        char *status = strstr(p, "Corruption: ");
        if (status == NULL) {
            status = strstr(p, "IO error: ");
        }
        p = status != NULL ? status : p;
        p[strcspn(p, "\n")] = '\0';
        snprintf(buf, size, "%s", p);
        break;
    }
    if (f != NULL) {
        fclose(f);
    }
}

int lsm_lost_tables(const char *dir, const char *origin, char *errmsg)
{
    char lost[4096];
    snprintf(lost, sizeof lost, "%s/lost", dir);
    DIR *d = opendir(lost);
    if (d == NULL) {
        return 0; /* repair set nothing aside */
    }
    struct dirent *e;
    int rv = 0;
    while (rv == 0 && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || (strcmp(e->d_name + len - 4, ".ldb") != 0 &&
                        strcmp(e->d_name + len - 4, ".sst") != 0)) {
            continue; /* old manifests and logs repair archived: not data */
        }
        char why[256];
        lost_reason(dir, strtoull(e->d_name, NULL, 10), why, sizeof why);
        rv = strncmp(why, "IO error", 8) == 0 ? LSM_EIO : LSM_ECORRUPT;
        lsm_set_err(errmsg, "table %s/%s is damaged: %s", origin, e->d_name, why);
    }
    closedir(d);
    return rv;
}

/* Check tables @nums[0..n) of @dir on links in a fresh @scratch.  *@checked += those still
 * there (a LevelDB compaction may have deleted some since they were listed). */
static int verify_batch(const char *dir,
                        const char *scratch,
                        const uint64_t *nums,
                        size_t n,
                        size_t *checked,
                        char *errmsg)
{
    remove_dir(scratch);
    if (mkdir(scratch, 0755) != 0) {
        lsm_set_err(errmsg, "verify: mkdir %s: %s", scratch, strerror(errno));
        return LSM_EIO;
    }
    size_t linked = 0;
    for (size_t i = 0; i < n; i++) {
        bool gone = false;
        int rv = lsm_table_link(dir, scratch, nums[i], &gone, errmsg);
        if (rv != 0) {
            return rv;
        }
        linked += !gone;
    }
    *checked += linked;
    if (linked == 0) {
        return 0;
    }
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_paranoid_checks(o, 1);
    char *err = NULL;
    leveldb_repair_db(o, scratch, &err);
    leveldb_options_destroy(o);
    if (err != NULL) {
        return lsm_ldb_err(errmsg, "verify: repair", err);
    }
    return lsm_lost_tables(scratch, dir, errmsg);
}

int lsm_verify(struct lsm_store *s,
               bool (*stop)(void *arg),
               void *arg,
               size_t *n_tables,
               char *errmsg)
{
    size_t checked = 0;
    if (n_tables != NULL) {
        *n_tables = 0;
    }
    /* The live set only: a table a compaction is still writing has no footer yet. */
    char *prop = leveldb_property_value(s->db, "leveldb.sstables");
    if (prop == NULL) {
        lsm_set_err(errmsg, "verify: no leveldb.sstables property");
        return LSM_EIO;
    }
    uint64_t *nums = NULL;
    size_t n = 0;
    int rv = lsm_tables_parse(prop, &nums, &n);
    leveldb_free(prop);
    if (rv != 0) {
        lsm_set_err(errmsg, "verify: out of memory");
    }
    char scratch[4096];
    snprintf(scratch, sizeof scratch, "%s.verify", s->dir);
    for (size_t i = 0; rv == 0 && i < n; i += VERIFY_BATCH) {
        if (stop != NULL && stop(arg)) {
            lsm_set_err(errmsg, "verify: stopped");
            rv = LSM_ECLOSED;
            break;
        }
        size_t k = n - i < VERIFY_BATCH ? n - i : VERIFY_BATCH;
        rv = verify_batch(s->dir, scratch, nums + i, k, &checked, errmsg);
    }
    remove_dir(scratch);
    free(nums);
    if (n_tables != NULL) {
        *n_tables = checked;
    }
    return rv;
}
