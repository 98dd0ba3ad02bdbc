/* Receiver: writes chunks into a temporary directory, checkpoints its position so that a
 * restart resumes, and installs the verified snapshot with one directory rename. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "snapshot/fs.h"
#include "snapshot/snapshot.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

#define PROGRESS_NAME "PROGRESS"
#define PROGRESS_MAGIC 0x5053564bu /* "KVSP" */
#define PROGRESS_VERSION 1u
#define PROGRESS_SIZE 48
#define TMP_PREFIX "tmp-"

struct snap_receiver
{
    char tmp[PATH_MAX];   /* <root>/tmp-<name>: the transfer in progress */
    char final[PATH_MAX]; /* <root>/<name>: where finish puts it */
    char root[PATH_MAX];
    struct snap_manifest m;
    uint64_t sync_bytes;
    uint32_t file;      /* acknowledged position: a non-empty file or n_files */
    uint64_t off;       /* ... and the offset in it */
    uint64_t since_ck;  /* bytes written since the last checkpoint */
    uint16_t session;   /* this instance: one more than the last persisted one */
    int fd;             /* open data file or -1 */
    uint32_t fd_file;   /* which one */
    unsigned char *raw; /* decompression buffer */
    size_t raw_cap;
    char errmsg[SNAP_ERRMSG_SIZE];
};

static void normalize(struct snap_receiver *r)
{
    while (r->file < r->m.n_files && r->off >= r->m.files[r->file].size) {
        r->file++;
        r->off = 0;
    }
}

static void make_ack(const struct snap_receiver *r, enum snap_ack_status st, unsigned char *buf)
{
    struct snap_ack a = {.status = st,
                         .index = r->m.meta.index,
                         .term = r->m.meta.term,
                         .manifest_crc = r->m.crc,
                         .file = r->file,
                         .offset = r->off,
                         .session = r->session};
    snap_ack_encode(&a, buf);
}

static int file_path(const struct snap_receiver *r, uint32_t i, char *buf, size_t size)
{
    return snap_fs_path(buf, size, NULL, "%s/%s", r->tmp, r->m.files[i].name);
}

static void close_fd(struct snap_receiver *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
}

/* Durable checkpoint: the data before (file, off) is on disk, then PROGRESS says so. */
static int checkpoint(struct snap_receiver *r)
{
    char path[PATH_MAX];
    int rv = 0;
    if (r->fd >= 0) {
        file_path(r, r->fd_file, path, sizeof path);
        rv = snap_fs_fsync(r->fd, path, r->errmsg);
    }
    unsigned char b[PROGRESS_SIZE];
    wal_put_u32(b, PROGRESS_MAGIC);
    wal_put_u32(b + 4, PROGRESS_VERSION);
    wal_put_u64(b + 8, r->m.meta.index);
    wal_put_u64(b + 16, r->m.meta.term);
    wal_put_u32(b + 24, r->m.crc);
    wal_put_u32(b + 28, r->file);
    wal_put_u64(b + 32, r->off);
    wal_put_u32(b + 40, r->session);
    wal_put_u32(b + 44, wal_crc32c(b, 44));
    if (rv == 0) {
        rv = snap_fs_write_atomic(r->tmp, PROGRESS_NAME, b, sizeof b, r->errmsg);
    }
    if (rv == 0) {
        r->since_ck = 0;
    }
    return rv;
}

/* Position from a PROGRESS file of the same snapshot; false if there is none usable. */
static bool load_progress(struct snap_receiver *r)
{
    char path[PATH_MAX];
    void *buf;
    size_t len;
    if (snap_fs_path(path, sizeof path, NULL, "%s/%s", r->tmp, PROGRESS_NAME) != 0 ||
        snap_fs_read_file(path, 4096, &buf, &len, NULL) != 0) {
        return false;
    }
    const unsigned char *b = buf;
    bool ok = len == PROGRESS_SIZE && wal_get_u32(b) == PROGRESS_MAGIC &&
              wal_get_u32(b + 4) == PROGRESS_VERSION && wal_get_u32(b + 44) == wal_crc32c(b, 44) &&
              wal_get_u64(b + 8) == r->m.meta.index && wal_get_u64(b + 16) == r->m.meta.term &&
              wal_get_u32(b + 24) == r->m.crc;
    if (ok) {
        r->file = wal_get_u32(b + 28);
        r->off = wal_get_u64(b + 32);
        r->session = (uint16_t)(wal_get_u32(b + 40) + 1);
        ok = r->file < r->m.n_files ? r->off <= r->m.files[r->file].size
                                    : r->file == r->m.n_files && r->off == 0;
    }
    free(buf);
    if (!ok) {
        r->file = 0;
        r->off = 0;
    }
    return ok;
}

/* The temporary directory holds this very manifest (PROGRESS is only written after it). */
static bool same_manifest(const struct snap_receiver *r, const void *manifest, size_t len)
{
    char path[PATH_MAX];
    void *buf;
    size_t n;
    if (snap_fs_path(path, sizeof path, NULL, "%s/%s", r->tmp, SNAP_MANIFEST_NAME) != 0 ||
        snap_fs_read_file(path, len, &buf, &n, NULL) != 0) {
        return false;
    }
    bool same = n == len && memcmp(buf, manifest, len) == 0;
    free(buf);
    return same;
}

/* A session for a transfer with no usable PROGRESS: from the clock, so that it is unlikely to
 * match an instance whose PROGRESS was lost while its acks are still in flight. */
static uint16_t fresh_session(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint16_t)((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec * 2654435761u);
}

/* Fresh start: empty temporary directory with the manifest, every file created empty (so
 * empty files need no chunk), and a PROGRESS at (0, 0). */
static int start_over(struct snap_receiver *r, const void *menc, size_t len)
{
    int rv = snap_fs_remove_dir(r->tmp, r->errmsg);
    if (rv == 0) {
        rv = snap_fs_mkdir(r->tmp, 0, r->errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_write_atomic(r->tmp, SNAP_MANIFEST_NAME, menc, len, r->errmsg);
    }
    for (uint32_t i = 0; rv == 0 && i < r->m.n_files; i++) {
        char path[PATH_MAX];
        int fd = -1;
        rv = file_path(r, i, path, sizeof path);
        if (rv == 0) {
            rv = snap_fs_open(path, O_WRONLY | O_CREAT | O_TRUNC, &fd, r->errmsg);
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    r->file = 0;
    r->off = 0;
    if (rv == 0) {
        rv = checkpoint(r); /* also makes the created files' entries durable */
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(r->root, r->errmsg);
    }
    return rv;
}

/* Remove the temporary directories of other snapshots: one incoming transfer per root. */
static int remove_other_tmps(struct snap_receiver *r)
{
    DIR *d = opendir(r->root);
    if (d == NULL) {
        return snap_fs_fail(r->errmsg, "opendir", r->root, errno);
    }
    const char *mine = strrchr(r->tmp, '/') + 1;
    struct dirent *de;
    int rv = 0;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0 ||
            strcmp(de->d_name, mine) == 0) {
            continue;
        }
        rv = snap_fs_path(path, sizeof path, r->errmsg, "%s/%s", r->root, de->d_name);
        if (rv == 0) {
            rv = snap_fs_remove_dir(path, r->errmsg);
        }
    }
    closedir(d);
    return rv;
}

static int open_paths(struct snap_receiver *r, const char *root)
{
    char name[40];
    snap_dir_name(r->m.meta.index, r->m.meta.term, name, sizeof name);
    int rv = snap_fs_path(r->root, sizeof r->root, r->errmsg, "%s", root);
    if (rv == 0) {
        rv = snap_fs_path(r->tmp, sizeof r->tmp, r->errmsg, "%s/" TMP_PREFIX "%s", root, name);
    }
    if (rv == 0) {
        rv = snap_fs_path(r->final, sizeof r->final, r->errmsg, "%s/%s", root, name);
    }
    struct stat st;
    if (rv == 0 && stat(r->final, &st) == 0) {
        snprintf(r->errmsg, sizeof r->errmsg, "receive: %.200s already exists", r->final);
        rv = SNAP_EEXIST;
    }
    if (rv == 0) {
        rv = snap_fs_mkdir(root, 1, r->errmsg);
    }
    return rv;
}

static int open_receiver(struct snap_receiver *r,
                         const char *root,
                         const void *manifest,
                         size_t len)
{
    int rv = snap_manifest_decode(manifest, len, &r->m, r->errmsg);
    if (rv == 0) {
        rv = open_paths(r, root);
    }
    if (rv == 0) {
        rv = remove_other_tmps(r);
    }
    if (rv != 0) {
        return rv;
    }
    /* Resume only over the very same manifest: its crc is the snapshot's identity.  Either way
     * the new session is persisted before its first ack, so no later instance reuses it. */
    if (load_progress(r) && same_manifest(r, manifest, len)) {
        rv = checkpoint(r);
    } else {
        r->session = fresh_session();
        rv = start_over(r, manifest, len);
    }
    normalize(r);
    return rv;
}

int snap_receiver_open(const char *root,
                       const void *manifest,
                       size_t len,
                       const struct snap_receiver_opts *opts,
                       struct snap_receiver **out,
                       unsigned char ack[SNAP_ACK_SIZE],
                       char *errmsg)
{
    *out = NULL;
    struct snap_receiver *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return SNAP_ENOMEM;
    }
    r->fd = -1;
    r->sync_bytes = opts != NULL && opts->sync_bytes > 0 ? opts->sync_bytes : 8u << 20;
    int rv = open_receiver(r, root, manifest, len);
    if (rv == SNAP_EEXIST) {
        /* Installed already: tell the sender there is nothing left to send. */
        r->file = r->m.n_files;
        r->off = 0;
        r->session = fresh_session();
        make_ack(r, SNAP_ACK_RESUME, ack);
    }
    if (rv != 0) {
        if (errmsg != NULL) {
            snprintf(errmsg, SNAP_ERRMSG_SIZE, "%s", r->errmsg);
        }
        snap_receiver_close(r);
        return rv;
    }
    make_ack(r, SNAP_ACK_RESUME, ack);
    *out = r;
    return 0;
}

void snap_receiver_close(struct snap_receiver *r)
{
    if (r == NULL) {
        return;
    }
    close_fd(r);
    snap_manifest_fini(&r->m);
    free(r->raw);
    free(r);
}

static int reject(struct snap_receiver *r, int code, unsigned char *ack)
{
    make_ack(r, SNAP_ACK_RESEND, ack);
    return code;
}

/* Write the verified raw bytes of the chunk at the current position and advance. */
static int store(struct snap_receiver *r, const unsigned char *raw, uint32_t len)
{
    char path[PATH_MAX];
    int rv = file_path(r, r->file, path, sizeof path);
    if (rv == 0 && (r->fd < 0 || r->fd_file != r->file)) {
        close_fd(r);
        rv = snap_fs_open(path, O_WRONLY, &r->fd, r->errmsg);
        r->fd_file = r->file;
    }
    if (rv == 0) {
        rv = snap_fs_pwrite(r->fd, raw, len, (off_t)r->off, path, r->errmsg);
    }
    if (rv == 0) {
        /* Start writeback now so the fsync at the end of the file finds little left to do:
         * the disk works while the network does. */
        snap_fs_writeback(r->fd, (off_t)r->off, len);
    }
    if (rv != 0) {
        return rv;
    }
    r->off += len;
    r->since_ck += len;
    if (r->off == r->m.files[r->file].size) {
        /* A finished file is made durable at once, so a checkpoint only syncs the open one. */
        rv = snap_fs_fsync(r->fd, path, r->errmsg);
        close_fd(r);
        normalize(r);
    }
    if (rv == 0 && r->since_ck >= r->sync_bytes) {
        rv = checkpoint(r);
    }
    return rv;
}

/* The verified raw bytes of @c: the payload itself when it is not compressed (no copy). */
static int unpack(struct snap_receiver *r, const struct snap_chunk *c, const unsigned char **data)
{
    if (!c->compressed) {
        if (wal_crc32c(c->payload, c->raw_len) != c->raw_crc) {
            snprintf(r->errmsg, sizeof r->errmsg, "chunk file %u offset %llu: crc32c mismatch",
                     (unsigned)c->file, (unsigned long long)c->offset);
            return SNAP_ECHUNK;
        }
        *data = c->payload;
        return 0;
    }
    if (c->raw_len > r->raw_cap) {
        unsigned char *p = realloc(r->raw, c->raw_len);
        if (p == NULL) {
            return SNAP_ENOMEM;
        }
        r->raw = p;
        r->raw_cap = c->raw_len;
    }
    *data = r->raw;
    return snap_chunk_unpack(c, r->raw, r->errmsg);
}

int snap_receiver_put(struct snap_receiver *r,
                      const void *chunk,
                      size_t len,
                      unsigned char ack[SNAP_ACK_SIZE])
{
    struct snap_chunk c;
    if (snap_chunk_decode(chunk, len, &c, r->errmsg) != 0) {
        return reject(r, SNAP_ECHUNK, ack);
    }
    if (c.index != r->m.meta.index || c.term != r->m.meta.term || c.manifest_crc != r->m.crc) {
        snprintf(r->errmsg, sizeof r->errmsg, "chunk of snapshot %llu/%llu, receiving %llu/%llu",
                 (unsigned long long)c.index, (unsigned long long)c.term,
                 (unsigned long long)r->m.meta.index, (unsigned long long)r->m.meta.term);
        make_ack(r, SNAP_ACK_OK, ack);
        return SNAP_ESTALE;
    }
    if (c.file >= r->m.n_files || c.offset + c.raw_len > r->m.files[c.file].size) {
        snprintf(r->errmsg, sizeof r->errmsg, "chunk file %u offset %llu: outside the snapshot",
                 (unsigned)c.file, (unsigned long long)c.offset);
        return reject(r, SNAP_ECHUNK, ack);
    }
    if (c.file < r->file || (c.file == r->file && c.offset < r->off)) {
        make_ack(r, SNAP_ACK_OK, ack); /* duplicate of what we have */
        return 0;
    }
    if (c.file != r->file || c.offset != r->off) {
        snprintf(r->errmsg, sizeof r->errmsg, "chunk file %u offset %llu: expected %u/%llu",
                 (unsigned)c.file, (unsigned long long)c.offset, (unsigned)r->file,
                 (unsigned long long)r->off);
        return reject(r, SNAP_EGAP, ack);
    }
    const unsigned char *data;
    if (unpack(r, &c, &data) != 0) {
        return reject(r, SNAP_ECHUNK, ack);
    }
    int rv = store(r, data, c.raw_len);
    make_ack(r, SNAP_ACK_OK, ack);
    return rv;
}

void snap_receiver_resume_ack(const struct snap_receiver *r, unsigned char ack[SNAP_ACK_SIZE])
{
    make_ack(r, SNAP_ACK_RESUME, ack);
}

int snap_receiver_sync(struct snap_receiver *r)
{
    return checkpoint(r);
}

bool snap_receiver_is_complete(const struct snap_receiver *r)
{
    return r->file >= r->m.n_files;
}

void snap_receiver_position(const struct snap_receiver *r, uint32_t *file, uint64_t *offset)
{
    *file = r->file;
    *offset = r->off;
}

const char *snap_receiver_errmsg(const struct snap_receiver *r)
{
    return r->errmsg;
}

/* Check file @i against the manifest and make it durable. */
static int verify_file(struct snap_receiver *r, uint32_t i)
{
    char path[PATH_MAX];
    uint64_t size;
    uint32_t crc;
    int rv = file_path(r, i, path, sizeof path);
    if (rv == 0) {
        rv = snap_fs_file_crc(path, &size, &crc, r->errmsg);
    }
    if (rv == 0 && (size != r->m.files[i].size || crc != r->m.files[i].crc)) {
        snprintf(r->errmsg, sizeof r->errmsg, "install: %.200s does not match the manifest",
                 r->m.files[i].name);
        return SNAP_ECORRUPT;
    }
    int fd = rv == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (rv == 0 && fd < 0) {
        rv = snap_fs_fail(r->errmsg, "open", path, errno);
    }
    if (rv == 0) {
        rv = snap_fs_fsync(fd, path, r->errmsg);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

/* A file failed verification: receive it again from its start. */
static int reset_to(struct snap_receiver *r, uint32_t i, unsigned char *ack)
{
    char path[PATH_MAX], msgbuf[SNAP_ERRMSG_SIZE];
    int fd = -1;
    memcpy(msgbuf, r->errmsg, sizeof msgbuf);
    close_fd(r);
    r->file = i;
    r->off = 0;
    r->session++; /* acks still in flight claim bytes that are now dropped: make them stale */
    normalize(r);
    int rv = file_path(r, i, path, sizeof path);
    if (rv == 0) {
        rv = snap_fs_open(path, O_WRONLY | O_TRUNC, &fd, r->errmsg);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rv == 0) {
        rv = checkpoint(r);
    }
    if (ack != NULL) {
        make_ack(r, SNAP_ACK_RESUME, ack);
    }
    memcpy(r->errmsg, msgbuf, sizeof msgbuf);
    return rv != 0 ? rv : SNAP_ECORRUPT;
}

int snap_receiver_finish(struct snap_receiver *r, char *out_dir, unsigned char *ack)
{
    if (r->file < r->m.n_files) {
        snprintf(r->errmsg, sizeof r->errmsg, "install: at file %u offset %llu of %u files",
                 (unsigned)r->file, (unsigned long long)r->off, (unsigned)r->m.n_files);
        return SNAP_EINCOMPLETE;
    }
    /* Record completion first: a crash during install then resumes straight to install. */
    int rv = checkpoint(r);
    for (uint32_t i = 0; rv == 0 && i < r->m.n_files; i++) {
        rv = verify_file(r, i);
        if (rv == SNAP_ECORRUPT) {
            return reset_to(r, i, ack);
        }
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(r->tmp, r->errmsg);
    }
    /* The commit point: the snapshot appears under its final name complete, or not at all. */
    if (rv == 0) {
        rv = snap_fs_rename(r->tmp, r->final, r->errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(r->root, r->errmsg);
    }
    if (rv == 0) {
        /* Leftover bookkeeping only: a crash before this unlink leaves a harmless file. */
        char path[PATH_MAX];
        if (snap_fs_path(path, sizeof path, r->errmsg, "%s/%s", r->final, PROGRESS_NAME) == 0) {
            snap_fs_unlink(path, r->errmsg);
        }
        if (out_dir != NULL) {
            snprintf(out_dir, PATH_MAX, "%s", r->final);
        }
    }
    return rv;
}
