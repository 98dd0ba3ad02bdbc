/* Manifest encoding and strict validation; error strings. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/snapshot.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

#define MANIFEST_MAGIC 0x4d53564bu /* "KVSM" */
#define MANIFEST_VERSION 1u
#define MANIFEST_HEADER 56u
#define MANIFEST_FILE_MIN 15u /* u16 len + 1 name byte + u64 size + u32 crc */

const char *snap_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define SNAP_ERR_CASE(name, value, msg) \
    case value:                         \
        return msg;
        SNAP_ERRORS(SNAP_ERR_CASE)
#undef SNAP_ERR_CASE
    default:
        return "unknown error";
    }
}

void snap_dir_name(uint64_t index, uint64_t term, char *buf, size_t size)
{
    snprintf(buf, size, "%016" PRIx64 "-%016" PRIx64, index, term);
}

void snap_manifest_fini(struct snap_manifest *m)
{
    free(m->meta.voters);
    free(m->meta.learners);
    free(m->files);
    memset(m, 0, sizeof *m);
}

static int invalid(char *errmsg, int code, const char *what)
{
    if (errmsg != NULL) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "manifest: %s", what);
    }
    return code;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ids are non-zero and distinct across voters and learners. */
static int check_members(const struct snap_meta *m, int code, char *errmsg)
{
    size_t n = (size_t)m->n_voters + m->n_learners;
    if (m->n_voters == 0) {
        return invalid(errmsg, code, "no voters");
    }
    if (n > SNAP_MEMBERS_MAX) {
        return invalid(errmsg, code, "too many members");
    }
    uint64_t *ids = malloc(n * sizeof *ids);
    if (ids == NULL) {
        return SNAP_ENOMEM;
    }
    memcpy(ids, m->voters, m->n_voters * sizeof *ids);
    if (m->n_learners > 0) {
        memcpy(ids + m->n_voters, m->learners, m->n_learners * sizeof *ids);
    }
    qsort(ids, n, sizeof *ids, cmp_u64);
    int rv = ids[0] == 0 ? invalid(errmsg, code, "member id 0") : 0;
    for (size_t i = 1; rv == 0 && i < n; i++) {
        if (ids[i] == ids[i - 1]) {
            rv = invalid(errmsg, code, "duplicate member id");
        }
    }
    free(ids);
    return rv;
}

/* Names the snapshot directories use for themselves. */
static bool is_reserved(const char *name)
{
    return strncmp(name, "MANIFEST", 8) == 0 || strncmp(name, "PROGRESS", 8) == 0;
}

static bool name_is_valid(const char *name, size_t len)
{
    if (len == 0 || len > SNAP_NAME_MAX || memchr(name, '/', len) != NULL ||
        memchr(name, '\0', len) != NULL) {
        return false;
    }
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.')) {
        return false;
    }
    return true;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const struct snap_file *const *)a)->name,
                  (*(const struct snap_file *const *)b)->name);
}

static int check_files(const struct snap_file *files, uint32_t n, int code, char *errmsg)
{
    if (n > SNAP_FILES_MAX) {
        return invalid(errmsg, code, "too many files");
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strnlen(files[i].name, sizeof files[i].name);
        if (!name_is_valid(files[i].name, len) || is_reserved(files[i].name)) {
            return invalid(errmsg, code, "bad file name");
        }
    }
    if (n < 2) {
        return 0;
    }
    const struct snap_file **sorted = malloc(n * sizeof *sorted);
    if (sorted == NULL) {
        return SNAP_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        sorted[i] = &files[i];
    }
    qsort(sorted, n, sizeof *sorted, cmp_name);
    int rv = 0;
    for (uint32_t i = 1; rv == 0 && i < n; i++) {
        if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0) {
            rv = invalid(errmsg, code, "duplicate file name");
        }
    }
    free(sorted);
    return rv;
}

static int check_manifest(const struct snap_manifest *m, int code, char *errmsg)
{
    if (m->meta.index == 0 || m->meta.term == 0) {
        return invalid(errmsg, code, "index and term must be >= 1");
    }
    if (m->meta.compact_revision > m->meta.revision) {
        return invalid(errmsg, code, "compacted revision above revision");
    }
    int rv = check_members(&m->meta, code, errmsg);
    return rv != 0 ? rv : check_files(m->files, m->n_files, code, errmsg);
}

int snap_manifest_encode(const struct snap_manifest *m,
                         void **out,
                         size_t *out_len,
                         uint32_t *crc_out,
                         char *errmsg)
{
    *out = NULL;
    *out_len = 0;
    int rv = check_manifest(m, SNAP_EINVAL, errmsg);
    if (rv != 0) {
        return rv;
    }
    size_t len = MANIFEST_HEADER + 8 * ((size_t)m->meta.n_voters + m->meta.n_learners) + 4;
    for (uint32_t i = 0; i < m->n_files; i++) {
        len += 14 + strlen(m->files[i].name);
    }
    unsigned char *buf = malloc(len), *p = buf;
    if (buf == NULL) {
        return SNAP_ENOMEM;
    }
    wal_put_u32(p, MANIFEST_MAGIC);
    wal_put_u32(p + 4, MANIFEST_VERSION);
    wal_put_u64(p + 8, m->meta.index);
    wal_put_u64(p + 16, m->meta.term);
    wal_put_u64(p + 24, m->meta.revision);
    wal_put_u64(p + 32, m->meta.compact_revision);
    wal_put_u32(p + 40, m->meta.n_voters);
    wal_put_u32(p + 44, m->meta.n_learners);
    wal_put_u32(p + 48, m->n_files);
    wal_put_u32(p + 52, 0);
    p += MANIFEST_HEADER;
    for (uint32_t i = 0; i < m->meta.n_voters; i++, p += 8) {
        wal_put_u64(p, m->meta.voters[i]);
    }
    for (uint32_t i = 0; i < m->meta.n_learners; i++, p += 8) {
        wal_put_u64(p, m->meta.learners[i]);
    }
    for (uint32_t i = 0; i < m->n_files; i++) {
        size_t n = strlen(m->files[i].name);
        p[0] = (unsigned char)n;
        p[1] = (unsigned char)(n >> 8);
        memcpy(p + 2, m->files[i].name, n);
        p += 2 + n;
        wal_put_u64(p, m->files[i].size);
        wal_put_u32(p + 8, m->files[i].crc);
        p += 12;
    }
    uint32_t crc = wal_crc32c(buf, (size_t)(p - buf));
    wal_put_u32(p, crc);
    if (crc_out != NULL) {
        *crc_out = crc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

static int decode_ids(const unsigned char **p, const unsigned char *end, uint32_t n, uint64_t **out)
{
    if (n == 0) {
        return 0;
    }
    if ((size_t)(end - *p) / 8 < n) {
        return SNAP_EMALFORMED;
    }
    *out = malloc(n * sizeof **out);
    if (*out == NULL) {
        return SNAP_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++, *p += 8) {
        (*out)[i] = wal_get_u64(*p);
    }
    return 0;
}

static int decode_files(const unsigned char *p,
                        const unsigned char *end,
                        struct snap_manifest *m,
                        char *errmsg)
{
    if (m->n_files > SNAP_FILES_MAX || (size_t)(end - p) / MANIFEST_FILE_MIN < m->n_files) {
        return invalid(errmsg, SNAP_EMALFORMED, "file count exceeds the encoding");
    }
    if (m->n_files > 0) {
        m->files = calloc(m->n_files, sizeof *m->files);
        if (m->files == NULL) {
            return SNAP_ENOMEM;
        }
    }
    for (uint32_t i = 0; i < m->n_files; i++) {
        if (end - p < 2) {
            return invalid(errmsg, SNAP_EMALFORMED, "truncated file entry");
        }
        size_t n = (size_t)p[0] | (size_t)p[1] << 8;
        if (n == 0 || n > SNAP_NAME_MAX || (size_t)(end - p) < 2 + n + 12) {
            return invalid(errmsg, SNAP_EMALFORMED, "bad file entry length");
        }
        if (!name_is_valid((const char *)p + 2, n)) {
            return invalid(errmsg, SNAP_EMALFORMED, "bad file name");
        }
        memcpy(m->files[i].name, p + 2, n);
        p += 2 + n;
        m->files[i].size = wal_get_u64(p);
        m->files[i].crc = wal_get_u32(p + 8);
        p += 12;
    }
    return p == end ? 0 : invalid(errmsg, SNAP_EMALFORMED, "trailing bytes");
}

static int decode_body(const unsigned char *b, size_t len, struct snap_manifest *m, char *errmsg)
{
    const unsigned char *end = b + len - 4, *p = b + MANIFEST_HEADER;
    m->meta.index = wal_get_u64(b + 8);
    m->meta.term = wal_get_u64(b + 16);
    m->meta.revision = wal_get_u64(b + 24);
    m->meta.compact_revision = wal_get_u64(b + 32);
    m->meta.n_voters = wal_get_u32(b + 40);
    m->meta.n_learners = wal_get_u32(b + 44);
    m->n_files = wal_get_u32(b + 48);
    if (wal_get_u32(b + 52) != 0) {
        return invalid(errmsg, SNAP_EMALFORMED, "unknown flags");
    }
    if ((uint64_t)m->meta.n_voters + m->meta.n_learners > SNAP_MEMBERS_MAX) {
        return invalid(errmsg, SNAP_EMALFORMED, "too many members");
    }
    int rv = decode_ids(&p, end, m->meta.n_voters, &m->meta.voters);
    if (rv == 0) {
        rv = decode_ids(&p, end, m->meta.n_learners, &m->meta.learners);
    }
    if (rv == SNAP_EMALFORMED) {
        return invalid(errmsg, rv, "member count exceeds the encoding");
    }
    if (rv == 0) {
        rv = decode_files(p, end, m, errmsg);
    }
    return rv != 0 ? rv : check_manifest(m, SNAP_EMALFORMED, errmsg);
}

int snap_manifest_decode(const void *buf, size_t len, struct snap_manifest *out, char *errmsg)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < MANIFEST_HEADER + 4) {
        return invalid(errmsg, SNAP_EMALFORMED, "truncated");
    }
    if (wal_get_u32(b) != MANIFEST_MAGIC) {
        return invalid(errmsg, SNAP_EMALFORMED, "bad magic");
    }
    /* Checksum before version: a flipped bit must read as corruption, not as a new format. */
    uint32_t crc = wal_crc32c(b, len - 4);
    if (crc != wal_get_u32(b + len - 4)) {
        return invalid(errmsg, SNAP_ECORRUPT, "checksum mismatch");
    }
    if (wal_get_u32(b + 4) != MANIFEST_VERSION) {
        return invalid(errmsg, SNAP_EVERSION, "unsupported version");
    }
    int rv = decode_body(b, len, out, errmsg);
    if (rv != 0) {
        snap_manifest_fini(out);
        return rv;
    }
    out->crc = crc;
    return 0;
}
