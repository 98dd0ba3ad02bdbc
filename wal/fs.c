/* The POSIX filesystem vtable, the fault-injection wrapper, allocation hooks and error strings. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal/wal.h"

/* ---- errors and allocation ---- */

const char *wal_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case num:          \
        return msg;
        WAL_ERRORS(X)
#undef X
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

static void *(*hook_malloc)(size_t) = malloc;
static void *(*hook_realloc)(void *, size_t) = realloc;
static void (*hook_free)(void *) = free;

void wal_set_alloc(void *(*malloc_fn)(size_t),
                   void *(*realloc_fn)(void *, size_t),
                   void (*free_fn)(void *))
{
    hook_malloc = malloc_fn != NULL ? malloc_fn : malloc;
    hook_realloc = realloc_fn != NULL ? realloc_fn : realloc;
    hook_free = free_fn != NULL ? free_fn : free;
}

void *wal_malloc(size_t n)
{
    return hook_malloc(n);
}

void *wal_realloc(void *p, size_t n)
{
    return hook_realloc(p, n);
}

void wal_free(void *p)
{
    hook_free(p);
}

/* ---- POSIX ---- */

static int px_open(struct wal_fs *fs, const char *path, int flags, int mode, int *fd)
{
    (void)fs;
    int f;
    do {
        f = open(path, flags | O_CLOEXEC, mode);
    } while (f < 0 && errno == EINTR);
    if (f < 0) {
        return errno;
    }
    *fd = f;
    return 0;
}

static int px_close(struct wal_fs *fs, int fd)
{
    (void)fs;
    return close(fd) == 0 ? 0 : errno;
}

static int px_pread(struct wal_fs *fs, int fd, void *buf, size_t n, off_t off, size_t *got)
{
    (void)fs;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno;
        }
        if (r == 0) {
            break;
        }
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

static int px_pwrite(struct wal_fs *fs, int fd, const void *buf, size_t n, off_t off)
{
    (void)fs;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno;
        }
        done += (size_t)r;
    }
    return 0;
}

static int px_fdatasync(struct wal_fs *fs, int fd)
{
    (void)fs;
    return fdatasync(fd) == 0 ? 0 : errno;
}

static int px_fsync(struct wal_fs *fs, int fd)
{
    (void)fs;
    return fsync(fd) == 0 ? 0 : errno;
}

static int px_fallocate(struct wal_fs *fs, int fd, off_t len)
{
    (void)fs;
    return fallocate(fd, 0, 0, len) == 0 ? 0 : errno;
}

static int px_ftruncate(struct wal_fs *fs, int fd, off_t len)
{
    (void)fs;
    return ftruncate(fd, len) == 0 ? 0 : errno;
}

static int px_fsize(struct wal_fs *fs, int fd, off_t *size)
{
    (void)fs;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return errno;
    }
    *size = st.st_size;
    return 0;
}

static int px_rename(struct wal_fs *fs, const char *from, const char *to)
{
    (void)fs;
    return rename(from, to) == 0 ? 0 : errno;
}

static int px_unlink(struct wal_fs *fs, const char *path)
{
    (void)fs;
    return unlink(path) == 0 ? 0 : errno;
}

static struct wal_fs posix_fs = {px_open,      px_close,  px_pread,     px_pwrite,
                                 px_fdatasync, px_fsync,  px_fallocate, px_ftruncate,
                                 px_fsize,     px_rename, px_unlink,    NULL};

struct wal_fs *wal_fs_posix(void)
{
    return &posix_fs;
}
