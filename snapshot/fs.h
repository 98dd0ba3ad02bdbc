/* Internal: file-system helpers of the snapshot module, every mutation through the fault hook. */
#ifndef KV_SNAPSHOT_FS_H
#define KV_SNAPSHOT_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "snapshot/snapshot.h"

/* A MANIFEST larger than this is refused before it is read (the format's own maximum). */
#define SNAP_MANIFEST_READ_MAX ((size_t)SNAP_FILES_MAX * (SNAP_NAME_MAX + 14) + 65536)

/* All helpers return 0 or a SNAP_E* code and, on error, describe the failing call and path in
 * @errmsg (SNAP_ERRMSG_SIZE bytes, may be NULL). */

/* Map an errno value to a module code: ENOSPC/EDQUOT -> SNAP_ENOSPC, ENOMEM -> SNAP_ENOMEM,
 * anything else -> SNAP_EIO. */
int snap_fs_code(int err);

/* Fill @errmsg with "<what> <path>: <strerror(err)>" and return snap_fs_code(err). */
int snap_fs_fail(char *errmsg, const char *what, const char *path, int err);

/* open(2) for writing with @flags (O_WRONLY or O_RDWR implied by caller); @fd out. */
int snap_fs_open(const char *path, int flags, int *fd, char *errmsg);
int snap_fs_pwrite(int fd, const void *buf, size_t len, off_t off, const char *path, char *errmsg);
int snap_fs_fsync(int fd, const char *path, char *errmsg);
/* Start asynchronous writeback of [@off, @off+@len) (sync_file_range); advisory, never fails:
 * durability still comes from snap_fs_fsync. */
void snap_fs_writeback(int fd, off_t off, size_t len);
int snap_fs_ftruncate(int fd, off_t size, const char *path, char *errmsg);
int snap_fs_fsync_dir(const char *dir, char *errmsg);
int snap_fs_rename(const char *from, const char *to, char *errmsg);
/* link(2); the raw errno is also returned in @err_out (may be NULL) so callers see EXDEV. */
int snap_fs_link(const char *from, const char *to, int *err_out, char *errmsg);
/* unlink(2); a missing file is success. */
int snap_fs_unlink(const char *path, char *errmsg);
/* mkdir(2) mode 0755; @exist_ok makes EEXIST success.  Returns SNAP_EEXIST otherwise. */
int snap_fs_mkdir(const char *path, int exist_ok, char *errmsg);
int snap_fs_rmdir(const char *path, char *errmsg);

/* Write @len bytes at @buf to <dir>/<name> atomically: <name>.tmp, fsync, rename, fsync @dir. */
int snap_fs_write_atomic(const char *dir,
                         const char *name,
                         const void *buf,
                         size_t len,
                         char *errmsg);

/* Read the whole file at @path (at most @max bytes, else SNAP_EMALFORMED) into a malloc'd
 * buffer owned by the caller. */
int snap_fs_read_file(const char *path, size_t max, void **buf, size_t *len, char *errmsg);

/* Size and crc32c of the file at @path. */
int snap_fs_file_crc(const char *path, uint64_t *size, uint32_t *crc, char *errmsg);

/* Copy @from to @to (created exclusively) and fsync it. */
int snap_fs_copy(const char *from, const char *to, char *errmsg);

/* Remove directory @dir and the plain files in it, MANIFEST first.  Missing dir is success. */
int snap_fs_remove_dir(const char *dir, char *errmsg);

/* snprintf into @buf that reports truncation as SNAP_EINVAL. */
int snap_fs_path(char *buf, size_t size, char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* KV_SNAPSHOT_FS_H */
