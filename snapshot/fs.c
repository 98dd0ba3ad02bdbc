/* File-system helpers: errno mapping, durable writes and the test fault hook. */
#include "snapshot/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "wal/crc32c.h"

static snap_fs_fault_fn fault_fn;
static void *fault_arg;

void snap_fs_fault_set(snap_fs_fault_fn fn, void *arg)
{
    fault_fn = fn;
    fault_arg = arg;
}

/* The errno to fail @op on @path with, or 0 to run it. */
static int fault(enum snap_fs_op op, const char *path)
{
    return fault_fn != NULL ? fault_fn(fault_arg, op, path) : 0;
}

int snap_fs_code(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT:
        return SNAP_ENOSPC;
    case ENOMEM:
        return SNAP_ENOMEM;
    default:
        return SNAP_EIO;
    }
}

int snap_fs_fail(char *errmsg, const char *what, const char *path, int err)
{
    if (errmsg != NULL) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "%s %s: %s", what, path, strerror(err));
    }
    return snap_fs_code(err);
}

int snap_fs_path(char *buf, size_t size, char *errmsg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        if (errmsg != NULL) {
            snprintf(errmsg, SNAP_ERRMSG_SIZE, "path too long: %.200s", buf);
        }
        return SNAP_EINVAL;
    }
    return 0;
}

int snap_fs_open(const char *path, int flags, int *fd, char *errmsg)
{
    int err = fault(SNAP_FS_OPEN, path);
    if (err == 0) {
        *fd = open(path, flags | O_CLOEXEC, 0644);
        err = *fd < 0 ? errno : 0;
    }
    return err != 0 ? snap_fs_fail(errmsg, "open", path, err) : 0;
}

int snap_fs_pwrite(int fd, const void *buf, size_t len, off_t off, const char *path, char *errmsg)
{
    int err = fault(SNAP_FS_WRITE, path);
    const char *p = buf;
    while (err == 0 && len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            break;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return err != 0 ? snap_fs_fail(errmsg, "write", path, err) : 0;
}

int snap_fs_fsync(int fd, const char *path, char *errmsg)
{
    int err = fault(SNAP_FS_SYNC, path);
    if (err == 0 && fsync(fd) != 0) {
        err = errno;
    }
    return err != 0 ? snap_fs_fail(errmsg, "fsync", path, err) : 0;
}

void snap_fs_writeback(int fd, off_t off, size_t len)
{
    (void)sync_file_range(fd, off, (off_t)len, SYNC_FILE_RANGE_WRITE);
}

int snap_fs_ftruncate(int fd, off_t size, const char *path, char *errmsg)
{
    int err = fault(SNAP_FS_TRUNCATE, path);
    if (err == 0 && ftruncate(fd, size) != 0) {
        err = errno;
    }
    return err != 0 ? snap_fs_fail(errmsg, "truncate", path, err) : 0;
}

int snap_fs_fsync_dir(const char *dir, char *errmsg)
{
    int err = fault(SNAP_FS_SYNC, dir);
    if (err == 0) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) {
            err = errno;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    return err != 0 ? snap_fs_fail(errmsg, "fsync dir", dir, err) : 0;
}

int snap_fs_rename(const char *from, const char *to, char *errmsg)
{
    int err = fault(SNAP_FS_RENAME, from);
    if (err == 0 && rename(from, to) != 0) {
        err = errno;
    }
    return err != 0 ? snap_fs_fail(errmsg, "rename", from, err) : 0;
}

int snap_fs_link(const char *from, const char *to, int *err_out, char *errmsg)
{
    int err = fault(SNAP_FS_LINK, from);
    if (err == 0 && link(from, to) != 0) {
        err = errno;
    }
    if (err_out != NULL) {
        *err_out = err;
    }
    return err != 0 ? snap_fs_fail(errmsg, "link", from, err) : 0;
}

int snap_fs_unlink(const char *path, char *errmsg)
{
    int err = fault(SNAP_FS_UNLINK, path);
    if (err == 0 && unlink(path) != 0 && errno != ENOENT) {
        err = errno;
    }
    return err != 0 ? snap_fs_fail(errmsg, "unlink", path, err) : 0;
}

int snap_fs_mkdir(const char *path, int exist_ok, char *errmsg)
{
    int err = fault(SNAP_FS_MKDIR, path);
    if (err == 0 && mkdir(path, 0755) != 0) {
        err = errno;
        if (err == EEXIST) {
            if (exist_ok) {
                return 0;
            }
            snap_fs_fail(errmsg, "mkdir", path, err);
            return SNAP_EEXIST;
        }
    }
    return err != 0 ? snap_fs_fail(errmsg, "mkdir", path, err) : 0;
}

int snap_fs_rmdir(const char *path, char *errmsg)
{
    int err = fault(SNAP_FS_RMDIR, path);
    if (err == 0 && rmdir(path) != 0 && errno != ENOENT) {
        err = errno;
    }
    return err != 0 ? snap_fs_fail(errmsg, "rmdir", path, err) : 0;
}

int snap_fs_write_atomic(const char *dir,
                         const char *name,
                         const void *buf,
                         size_t len,
                         char *errmsg)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    int rv = snap_fs_path(tmp, sizeof tmp, errmsg, "%s/%s.tmp", dir, name);
    if (rv == 0) {
        rv = snap_fs_path(dst, sizeof dst, errmsg, "%s/%s", dir, name);
    }
    int fd = -1;
    if (rv == 0) {
        rv = snap_fs_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, &fd, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_pwrite(fd, buf, len, 0, tmp, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_fsync(fd, tmp, errmsg);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rv == 0) {
        rv = snap_fs_rename(tmp, dst, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_fsync_dir(dir, errmsg);
    }
    return rv;
}

int snap_fs_read_file(const char *path, size_t max, void **buf, size_t *len, char *errmsg)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return snap_fs_fail(errmsg, "open", path, errno);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return snap_fs_fail(errmsg, "stat", path, err);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "%s: %lld bytes, more than %zu", path,
                 (long long)st.st_size, max);
        return SNAP_EMALFORMED;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *p = malloc(n > 0 ? n : 1);
    if (p == NULL) {
        close(fd);
        return SNAP_ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            int err = r < 0 ? errno : EIO;
            free(p);
            close(fd);
            return snap_fs_fail(errmsg, "read", path, err);
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = p;
    *len = n;
    return 0;
}

int snap_fs_file_crc(const char *path, uint64_t *size, uint32_t *crc, char *errmsg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return snap_fs_fail(errmsg, "open", path, errno);
    }
    enum { BUF = 1 << 18 };
    unsigned char *buf = malloc(BUF);
    if (buf == NULL) {
        close(fd);
        return SNAP_ENOMEM;
    }
    uint64_t total = 0;
    uint32_t c = 0;
    int rv = 0;
    for (;;) {
        ssize_t r = read(fd, buf, BUF);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rv = snap_fs_fail(errmsg, "read", path, errno);
            break;
        }
        if (r == 0) {
            break;
        }
        c = wal_crc32c_extend(c, buf, (size_t)r);
        total += (uint64_t)r;
    }
    free(buf);
    close(fd);
    *size = total;
    *crc = c;
    return rv;
}

int snap_fs_copy(const char *from, const char *to, char *errmsg)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return snap_fs_fail(errmsg, "open", from, errno);
    }
    int out = -1;
    int rv = snap_fs_open(to, O_WRONLY | O_CREAT | O_EXCL, &out, errmsg);
    enum { BUF = 1 << 18 };
    unsigned char *buf = rv == 0 ? malloc(BUF) : NULL;
    if (rv == 0 && buf == NULL) {
        rv = SNAP_ENOMEM;
    }
    off_t off = 0;
    while (rv == 0) {
        ssize_t r = read(in, buf, BUF);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rv = snap_fs_fail(errmsg, "read", from, errno);
        } else if (r == 0) {
            break;
        } else {
            rv = snap_fs_pwrite(out, buf, (size_t)r, off, to, errmsg);
            off += r;
        }
    }
    if (rv == 0) {
        rv = snap_fs_fsync(out, to, errmsg);
    }
    free(buf);
    close(in);
    if (out >= 0) {
        close(out);
    }
    return rv;
}

int snap_fs_remove_dir(const char *dir, char *errmsg)
{
    char path[PATH_MAX];
    int rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, SNAP_MANIFEST_NAME);
    if (rv == 0) {
        rv = snap_fs_unlink(path, errmsg);
    }
    DIR *d = rv == 0 ? opendir(dir) : NULL;
    if (rv == 0 && d == NULL) {
        return errno == ENOENT ? 0 : snap_fs_fail(errmsg, "opendir", dir, errno);
    }
    struct dirent *de;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, de->d_name);
        if (rv == 0) {
            rv = snap_fs_unlink(path, errmsg);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    if (rv == 0) {
        rv = snap_fs_rmdir(dir, errmsg);
    }
    return rv;
}
