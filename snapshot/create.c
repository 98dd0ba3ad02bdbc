/* Snapshot directories: create, list, verify, find the latest, retention. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "snapshot/fs.h"
#include "snapshot/snapshot.h"

static int msg(char *errmsg, int code, const char *fmt, const char *a, const char *b)
{
    if (errmsg != NULL) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, fmt, a, b);
    }
    return code;
}

/* Build the manifest skeleton (names only) of snap_create and validate it. */
static int build_manifest(const struct snap_meta *meta,
                          const char *const *names,
                          size_t n,
                          struct snap_manifest *m,
                          char *errmsg)
{
    memset(m, 0, sizeof *m);
    if (n > SNAP_FILES_MAX) {
        return msg(errmsg, SNAP_EINVAL, "create: %s%s", "too many files", "");
    }
    m->meta = *meta;
    m->meta.voters = NULL;
    m->meta.learners = NULL;
    m->n_files = (uint32_t)n;
    m->meta.voters = malloc((meta->n_voters + 1) * sizeof(uint64_t));
    m->meta.learners = malloc((meta->n_learners + 1) * sizeof(uint64_t));
    m->files = calloc(n + 1, sizeof *m->files);
    if (m->meta.voters == NULL || m->meta.learners == NULL || m->files == NULL) {
        snap_manifest_fini(m);
        return SNAP_ENOMEM;
    }
    if (meta->n_voters > 0) {
        memcpy(m->meta.voters, meta->voters, meta->n_voters * sizeof(uint64_t));
    }
    if (meta->n_learners > 0) {
        memcpy(m->meta.learners, meta->learners, meta->n_learners * sizeof(uint64_t));
    }
    for (size_t i = 0; i < n; i++) {
        if (strlen(names[i]) > SNAP_NAME_MAX) {
            snap_manifest_fini(m);
            return msg(errmsg, SNAP_EINVAL, "create: file name too long: %.64s%s", names[i], "");
        }
        strcpy(m->files[i].name, names[i]);
    }
    void *enc;
    size_t len;
    int rv = snap_manifest_encode(m, &enc, &len, NULL, errmsg);
    free(enc);
    if (rv != 0) {
        snap_manifest_fini(m);
    }
    return rv;
}

/* The newest valid snapshot before the one being created: its checksums are reused for files
 * that are the very same inode (LevelDB tables are immutable), so a new snapshot only reads the
 * tables written since.  Everything here is best effort: without it, checksums are computed. */
struct prev
{
    bool found;
    char dir[PATH_MAX];
    struct snap_manifest m;
    const struct snap_file **sorted; /* m.files by name */
};

static int cmp_file_name(const void *a, const void *b)
{
    return strcmp((*(const struct snap_file *const *)a)->name,
                  (*(const struct snap_file *const *)b)->name);
}

static void prev_load(const char *root, struct prev *p)
{
    char name[40];
    size_t skipped;
    memset(p, 0, sizeof *p);
    if (snap_latest(root, false, &p->found, &p->m, &skipped, NULL) != 0 || !p->found) {
        p->found = false;
        return;
    }
    snap_dir_name(p->m.meta.index, p->m.meta.term, name, sizeof name);
    p->sorted = malloc((p->m.n_files + 1) * sizeof *p->sorted);
    if (p->sorted == NULL || snap_fs_path(p->dir, sizeof p->dir, NULL, "%s/%s", root, name)) {
        p->found = false;
        return;
    }
    for (uint32_t i = 0; i < p->m.n_files; i++) {
        p->sorted[i] = &p->m.files[i];
    }
    qsort(p->sorted, p->m.n_files, sizeof *p->sorted, cmp_file_name);
}

static void prev_fini(struct prev *p)
{
    free(p->sorted);
    snap_manifest_fini(&p->m);
}

/* Reuse the checksum of @name when the previous snapshot holds the same inode. */
static bool prev_crc(const struct prev *p,
                     const char *name,
                     const char *linked,
                     struct snap_file *out)
{
    struct snap_file key, *kp = &key;
    char path[PATH_MAX];
    struct stat a, b;
    if (!p->found) {
        return false;
    }
    memcpy(key.name, name, strlen(name) + 1);
    const struct snap_file **hit =
        bsearch(&kp, p->sorted, p->m.n_files, sizeof *p->sorted, cmp_file_name);
    if (hit == NULL || snap_fs_path(path, sizeof path, NULL, "%s/%s", p->dir, name) != 0 ||
        stat(path, &a) != 0 || stat(linked, &b) != 0) {
        return false;
    }
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino || (uint64_t)b.st_size != (*hit)->size) {
        return false;
    }
    out->size = (*hit)->size;
    out->crc = (*hit)->crc;
    return true;
}

/* Link (or copy across devices) every file into @dir and fill in sizes and checksums. */
static int place_files(const char *src_dir,
                       const char *dir,
                       const struct prev *prev,
                       struct snap_manifest *m,
                       char *errmsg)
{
    char from[PATH_MAX], to[PATH_MAX];
    for (uint32_t i = 0; i < m->n_files; i++) {
        const char *name = m->files[i].name;
        int rv = snap_fs_path(from, sizeof from, errmsg, "%s/%s", src_dir, name);
        if (rv == 0) {
            rv = snap_fs_path(to, sizeof to, errmsg, "%s/%s", dir, name);
        }
        int err = 0;
        if (rv == 0) {
            rv = snap_fs_link(from, to, &err, errmsg);
        }
        if (rv != 0 && err == EXDEV) {
            rv = snap_fs_copy(from, to, errmsg);
        }
        if (rv == 0 && !prev_crc(prev, name, to, &m->files[i])) {
            rv = snap_fs_file_crc(to, &m->files[i].size, &m->files[i].crc, errmsg);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* mkdir @dir; a leftover without MANIFEST (a create that crashed) is replaced, a complete
 * snapshot is SNAP_EEXIST. */
static int make_dir(const char *dir, char *errmsg)
{
    char path[PATH_MAX];
    struct stat st;
    int rv = snap_fs_mkdir(dir, 0, errmsg);
    if (rv != SNAP_EEXIST ||
        snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, SNAP_MANIFEST_NAME) != 0 ||
        stat(path, &st) == 0 || errno != ENOENT) {
        return rv;
    }
    rv = snap_fs_remove_dir(dir, errmsg);
    return rv != 0 ? rv : snap_fs_mkdir(dir, 0, errmsg);
}

int snap_create(const char *root,
                const struct snap_meta *meta,
                const char *src_dir,
                const char *const *names,
                size_t n_names,
                struct snap_manifest *out,
                char *errmsg)
{
    struct snap_manifest m;
    char dir[PATH_MAX], name[40];
    if (out != NULL) {
        memset(out, 0, sizeof *out);
    }
    int rv = build_manifest(meta, names, n_names, &m, errmsg);
    if (rv != 0) {
        return rv;
    }
    snap_dir_name(meta->index, meta->term, name, sizeof name);
    rv = snap_fs_path(dir, sizeof dir, errmsg, "%s/%s", root, name);
    if (rv == 0) {
        rv = snap_fs_mkdir(root, 1, errmsg);
    }
    if (rv == 0) {
        rv = make_dir(dir, errmsg);
        if (rv != 0) {
            snap_manifest_fini(&m);
            return rv;
        }
        struct prev prev;
        prev_load(root, &prev);
        rv = place_files(src_dir, dir, &prev, &m, errmsg);
        prev_fini(&prev);
    }
    void *enc = NULL;
    size_t len = 0;
    if (rv == 0) {
        rv = snap_manifest_encode(&m, &enc, &len, &m.crc, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_write_atomic(dir, SNAP_MANIFEST_NAME, enc, len, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(root, errmsg);
    }
    free(enc);
    if (rv != 0) {
        char ignored[SNAP_ERRMSG_SIZE];
        snap_fs_remove_dir(dir, ignored);
        snap_manifest_fini(&m);
        return rv;
    }
    if (out != NULL) {
        *out = m;
    } else {
        snap_manifest_fini(&m);
    }
    return 0;
}

/* Parse "<016x>-<016x>". */
static bool parse_name(const char *s, uint64_t *index, uint64_t *term)
{
    if (strlen(s) != 33 || s[16] != '-') {
        return false;
    }
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 16; i++) {
            char c = s[k * 17 + i];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) {
                return false;
            }
            v[k] = v[k] << 4 | (uint64_t)d;
        }
    }
    *index = v[0];
    *term = v[1];
    return true;
}

/* Read and decode <dir>/MANIFEST into @m (zeroed on any error). */
static int read_manifest(const char *dir, struct snap_manifest *m, char *errmsg)
{
    memset(m, 0, sizeof *m);
    char path[PATH_MAX];
    int rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, SNAP_MANIFEST_NAME);
    void *buf = NULL;
    size_t len = 0;
    if (rv == 0) {
        rv = snap_fs_read_file(path, SNAP_MANIFEST_READ_MAX, &buf, &len, errmsg);
    }
    char why[SNAP_ERRMSG_SIZE] = "";
    if (rv == 0 && (rv = snap_manifest_decode(buf, len, m, why)) != 0 && errmsg != NULL) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "%.180s: %.70s", path, why); /* name the file */
    }
    free(buf);
    return rv;
}

/* Shallow check of one snapshot directory: manifest, identity, file sizes. */
static void check_dir(const char *root, struct snap_entry *e, struct snap_manifest *out)
{
    char dir[PATH_MAX], path[PATH_MAX], name[40];
    struct snap_manifest m;
    snap_dir_name(e->index, e->term, name, sizeof name);
    e->status = SNAP_BAD;
    if (snap_fs_path(dir, sizeof dir, e->why, "%s/%s", root, name) != 0 ||
        snap_fs_path(path, sizeof path, e->why, "%s/%s", dir, SNAP_MANIFEST_NAME) != 0) {
        return;
    }
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        e->status = SNAP_INCOMPLETE;
        msg(e->why, 0, "%s: no %s", name, SNAP_MANIFEST_NAME);
        return;
    }
    e->status = SNAP_BAD;
    if (read_manifest(dir, &m, e->why) != 0) {
        return;
    }
    if (m.meta.index != e->index || m.meta.term != e->term) {
        msg(e->why, 0, "%.180s: manifest is of another snapshot%s", dir, "");
        snap_manifest_fini(&m);
        return;
    }
    for (uint32_t i = 0; i < m.n_files; i++) {
        if (snap_fs_path(path, sizeof path, e->why, "%s/%s", dir, m.files[i].name) != 0 ||
            stat(path, &st) != 0 || (uint64_t)st.st_size != m.files[i].size) {
            msg(e->why, 0, "%.140s/%.64s missing or of the wrong size", dir, m.files[i].name);
            snap_manifest_fini(&m);
            return;
        }
    }
    e->status = SNAP_VALID;
    if (out != NULL) {
        *out = m;
    } else {
        snap_manifest_fini(&m);
    }
}

static int cmp_entry(const void *a, const void *b)
{
    const struct snap_entry *x = a, *y = b;
    if (x->index != y->index) {
        return x->index < y->index ? -1 : 1;
    }
    return x->term < y->term ? -1 : x->term > y->term;
}

int snap_list(const char *root, struct snap_entry **out, size_t *n_out, char *errmsg)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(root);
    if (d == NULL) {
        return errno == ENOENT ? 0 : snap_fs_fail(errmsg, "opendir", root, errno);
    }
    struct snap_entry *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t index, term;
        if (!parse_name(de->d_name, &index, &term)) {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            struct snap_entry *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL) {
                free(v);
                closedir(d);
                return SNAP_ENOMEM;
            }
            v = nv;
        }
        memset(&v[n], 0, sizeof v[n]);
        v[n].index = index;
        v[n].term = term;
        n++;
    }
    closedir(d);
    if (n > 1) {
        qsort(v, n, sizeof *v, cmp_entry);
    }
    for (size_t i = 0; i < n; i++) {
        check_dir(root, &v[i], NULL);
    }
    *out = v;
    *n_out = n;
    return 0;
}

int snap_verify(const char *dir, struct snap_manifest *out, char *errmsg)
{
    struct snap_manifest m;
    char path[PATH_MAX];
    if (out != NULL) {
        memset(out, 0, sizeof *out);
    }
    int rv = read_manifest(dir, &m, errmsg);
    for (uint32_t i = 0; rv == 0 && i < m.n_files; i++) {
        uint64_t size;
        uint32_t crc;
        rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, m.files[i].name);
        if (rv == 0) {
            rv = snap_fs_file_crc(path, &size, &crc, errmsg);
        }
        if (rv == 0 && (size != m.files[i].size || crc != m.files[i].crc)) {
            rv = msg(errmsg, SNAP_ECORRUPT, "%.200s does not match the manifest%s", path, "");
        }
    }
    if (rv != 0) {
        snap_manifest_fini(&m);
        return rv;
    }
    if (out != NULL) {
        *out = m;
    } else {
        snap_manifest_fini(&m);
    }
    return 0;
}

int snap_latest(const char *root,
                bool deep,
                bool *found,
                struct snap_manifest *out,
                size_t *n_skipped,
                char *errmsg)
{
    struct snap_entry *v;
    size_t n;
    *found = false;
    *n_skipped = 0;
    memset(out, 0, sizeof *out);
    int rv = snap_list(root, &v, &n, errmsg);
    for (size_t i = n; rv == 0 && i-- > 0 && !*found;) {
        char dir[PATH_MAX], name[40], why[SNAP_ERRMSG_SIZE];
        snap_dir_name(v[i].index, v[i].term, name, sizeof name);
        snap_fs_path(dir, sizeof dir, NULL, "%s/%s", root, name);
        if (v[i].status == SNAP_VALID) {
            check_dir(root, &v[i], out);
        }
        if (v[i].status == SNAP_VALID && deep) {
            snap_manifest_fini(out);
            int vr = snap_verify(dir, out, why);
            if (vr == SNAP_ENOMEM) {
                rv = vr;
                break;
            }
            if (vr != 0) {
                v[i].status = SNAP_BAD;
                snprintf(v[i].why, sizeof v[i].why, "%s", why);
            }
        }
        if (v[i].status == SNAP_VALID) {
            *found = true;
        } else {
            (*n_skipped)++;
            if (errmsg != NULL) {
                snprintf(errmsg, SNAP_ERRMSG_SIZE, "skipped snapshot: %.200s", v[i].why);
            }
        }
    }
    free(v);
    return rv;
}

int snap_retain(const char *root, size_t keep, size_t *n_removed, char *errmsg)
{
    struct snap_entry *v;
    size_t n, removed = 0;
    if (n_removed != NULL) {
        *n_removed = 0;
    }
    if (keep == 0) {
        return msg(errmsg, SNAP_EINVAL, "retain: keep must be >= 1%s%s", "", "");
    }
    int rv = snap_list(root, &v, &n, errmsg);
    size_t valid_seen = 0;
    bool newer_valid = false;
    for (size_t i = n; rv == 0 && i-- > 0;) {
        bool remove;
        if (v[i].status == SNAP_VALID) {
            remove = ++valid_seen > keep;
            newer_valid = true;
        } else {
            remove = newer_valid;
        }
        if (remove) {
            char dir[PATH_MAX], name[40];
            snap_dir_name(v[i].index, v[i].term, name, sizeof name);
            snap_fs_path(dir, sizeof dir, NULL, "%s/%s", root, name);
            rv = snap_fs_remove_dir(dir, errmsg);
            removed += rv == 0;
        }
    }
    free(v);
    if (rv == 0 && removed > 0) {
        rv = snap_fs_fsync_dir(root, errmsg);
    }
    if (n_removed != NULL) {
        *n_removed = removed;
    }
    return rv;
}

int snap_set_aside(const char *dir, char *out, char *errmsg)
{
    char to[PATH_MAX], parent[PATH_MAX];
    int rv = snap_fs_path(to, sizeof to, errmsg, "%s.broken", dir);
    if (rv == 0) {
        rv = snap_fs_path(parent, sizeof parent, errmsg, "%s", dir);
    }
    if (rv != 0) {
        return rv;
    }
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, sizeof parent, ".");
    } else {
        *slash = '\0';
    }
    struct stat st;
    if (stat(to, &st) == 0) {
        rv = snap_fs_remove_dir(to, errmsg); /* an earlier one of the same snapshot */
    }
    if (rv == 0) {
        rv = snap_fs_rename(dir, to, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(parent, errmsg);
    }
    if (rv == 0 && out != NULL) {
        snprintf(out, PATH_MAX, "%s", to);
    }
    return rv;
}
