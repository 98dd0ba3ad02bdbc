/* The WAL's file system as the member uses it: POSIX with the wal_write, wal_fsync and wal_cut
 * failpoints in front (see server/failpoint.h).  Without KV_FAILPOINTS the member uses the plain
 * POSIX vtable. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "server/failpoint.h"
#include "server/srv_int.h"

struct fpfs
{
    struct wal_fs fs; /* first: the WAL passes &fs back to us */
    struct wal_fs *base;
    uint64_t member;
};

static struct fpfs *of(struct wal_fs *fs)
{
    return (struct fpfs *)(void *)fs;
}

static int f_open(struct wal_fs *fs, const char *path, int flags, int mode, int *fd)
{
    return of(fs)->base->open(of(fs)->base, path, flags, mode, fd);
}

static int f_close(struct wal_fs *fs, int fd)
{
    return of(fs)->base->close(of(fs)->base, fd);
}

static int f_pread(struct wal_fs *fs, int fd, void *buf, size_t n, off_t off, size_t *got)
{
    return of(fs)->base->pread(of(fs)->base, fd, buf, n, off, got);
}

static int f_pwrite(struct wal_fs *fs, int fd, const void *buf, size_t n, off_t off)
{
    if (SRV_FAILPOINT(of(fs)->member, "wal_write") == SRV_FP_ERROR) {
        return EIO;
    }
    return of(fs)->base->pwrite(of(fs)->base, fd, buf, n, off);
}

static int f_fdatasync(struct wal_fs *fs, int fd)
{
    if (SRV_FAILPOINT(of(fs)->member, "wal_fsync") == SRV_FP_ERROR) {
        return EIO;
    }
    return of(fs)->base->fdatasync(of(fs)->base, fd);
}

static int f_fsync(struct wal_fs *fs, int fd)
{
    return of(fs)->base->fsync(of(fs)->base, fd);
}

static int f_fallocate(struct wal_fs *fs, int fd, off_t len)
{
    return of(fs)->base->fallocate(of(fs)->base, fd, len);
}

static int f_ftruncate(struct wal_fs *fs, int fd, off_t len)
{
    return of(fs)->base->ftruncate(of(fs)->base, fd, len);
}

static int f_fsize(struct wal_fs *fs, int fd, off_t *size)
{
    return of(fs)->base->fsize(of(fs)->base, fd, size);
}

static int f_rename(struct wal_fs *fs, const char *from, const char *to)
{
    /* Renames are how segments are cut (and spares put in place). */
    if (SRV_FAILPOINT(of(fs)->member, "wal_cut") == SRV_FP_ERROR) {
        return EIO;
    }
    return of(fs)->base->rename(of(fs)->base, from, to);
}

static int f_unlink(struct wal_fs *fs, const char *path)
{
    return of(fs)->base->unlink(of(fs)->base, path);
}

struct wal_fs *srv_fpfs_new(uint64_t member)
{
    struct fpfs *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->base = wal_fs_posix();
    f->member = member;
    f->fs.open = f_open;
    f->fs.close = f_close;
    f->fs.pread = f_pread;
    f->fs.pwrite = f_pwrite;
    f->fs.fdatasync = f_fdatasync;
    f->fs.fsync = f_fsync;
    f->fs.fallocate = f_fallocate;
    f->fs.ftruncate = f_ftruncate;
    f->fs.fsize = f_fsize;
    f->fs.rename = f_rename;
    f->fs.unlink = f_unlink;
    return &f->fs;
}

void srv_fpfs_free(struct wal_fs *fs)
{
    free(of(fs));
}
