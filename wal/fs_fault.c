/* Fault-injection filesystem: fail the Nth operation, and "crash" by dropping unsynced bytes
 * (in the spirit of LevelDB's fault_injection_test and canonical raft's test/lib/fault.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal/wal.h"

#define FAULT_OPS 5
#define FAULT_PATH 512

/* Bytes a write replaced, to put back on crash. */
struct undo
{
    off_t off;
    size_t len;
    struct undo *next;
    unsigned char bytes[];
};

/* A file with writes since its last fdatasync. */
struct ffile
{
    char path[FAULT_PATH];
    int fd;            /* -1 once closed. */
    off_t synced_size; /* Size at the last sync (or open). */
    struct undo *undo; /* Newest first. */
    struct ffile *next;
};

struct arm
{
    unsigned nth; /* Countdown: fail when it reaches 1; 0 = disarmed. */
    int err;
    bool sticky;
};

struct fault
{
    struct wal_fs fs;
    pthread_mutex_t mu;
    unsigned count[FAULT_OPS];
    struct arm arm[FAULT_OPS];
    bool dead;
    struct ffile *files;
};

static struct fault *F(struct wal_fs *fs)
{
    return (struct fault *)fs->data;
}

/* Count an operation and decide whether it fails.  Called with the mutex held. */
static int check(struct fault *f, enum wal_fault_op op)
{
    if (f->dead) {
        return EIO;
    }
    f->count[op]++;
    struct arm *a = &f->arm[op];
    if (a->nth == 0) {
        return 0;
    }
    if (a->nth > 1) {
        a->nth--;
        return 0;
    }
    int err = a->err;
    if (!a->sticky) {
        a->nth = 0;
    }
    return err;
}

static struct ffile *lookup(struct fault *f, int fd)
{
    for (struct ffile *x = f->files; x != NULL; x = x->next) {
        if (x->fd == fd) {
            return x;
        }
    }
    return NULL;
}

static void undo_free(struct undo *u)
{
    while (u != NULL) {
        struct undo *next = u->next;
        wal_free(u);
        u = next;
    }
}

static void drop_file(struct fault *f, struct ffile *dead)
{
    for (struct ffile **pp = &f->files; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == dead) {
            *pp = dead->next;
            undo_free(dead->undo);
            wal_free(dead);
            return;
        }
    }
}

static int ft_open(struct wal_fs *fs, const char *path, int flags, int mode, int *fd)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? EIO : wal_fs_posix()->open(fs, path, flags, mode, fd);
    if (rv == 0 && (flags & O_DIRECTORY) == 0) {
        struct ffile *x = wal_malloc(sizeof *x);
        off_t size = 0;
        if (x == NULL) {
            close(*fd);
            rv = ENOMEM;
        } else {
            wal_fs_posix()->fsize(fs, *fd, &size);
            memset(x, 0, sizeof *x);
            snprintf(x->path, sizeof x->path, "%s", path);
            x->fd = *fd;
            x->synced_size = size;
            x->next = f->files;
            f->files = x;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_close(struct wal_fs *fs, int fd)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    struct ffile *x = lookup(f, fd);
    if (x != NULL) {
        /* Keep unsynced writes of a closed file: a crash still loses them. */
        x->fd = -1;
        if (x->undo == NULL) {
            drop_file(f, x);
        }
    }
    int rv = close(fd) == 0 ? 0 : errno;
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_pread(struct wal_fs *fs, int fd, void *buf, size_t n, off_t off, size_t *got)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? EIO : wal_fs_posix()->pread(fs, fd, buf, n, off, got);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_pwrite(struct wal_fs *fs, int fd, const void *buf, size_t n, off_t off)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = check(f, WAL_FAULT_WRITE);
    struct ffile *x = lookup(f, fd);
    if (rv == 0 && x != NULL) {
        struct undo *u = wal_malloc(sizeof *u + n);
        size_t got = 0;
        if (u == NULL) {
            rv = ENOMEM;
        } else {
            wal_fs_posix()->pread(fs, fd, u->bytes, n, off, &got);
            u->off = off;
            u->len = got;
            u->next = x->undo;
            x->undo = u;
        }
    }
    if (rv == 0) {
        rv = wal_fs_posix()->pwrite(fs, fd, buf, n, off);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int sync_common(struct wal_fs *fs, int fd, bool data)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = check(f, WAL_FAULT_FSYNC);
    if (rv == 0) {
        rv = data ? wal_fs_posix()->fdatasync(fs, fd) : wal_fs_posix()->fsync(fs, fd);
    }
    struct ffile *x = lookup(f, fd);
    if (rv == 0 && x != NULL) {
        undo_free(x->undo);
        x->undo = NULL;
        wal_fs_posix()->fsize(fs, fd, &x->synced_size);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_fdatasync(struct wal_fs *fs, int fd)
{
    return sync_common(fs, fd, true);
}

static int ft_fsync(struct wal_fs *fs, int fd)
{
    return sync_common(fs, fd, false);
}

static int ft_fallocate(struct wal_fs *fs, int fd, off_t len)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = check(f, WAL_FAULT_FALLOCATE);
    if (rv == 0) {
        rv = wal_fs_posix()->fallocate(fs, fd, len);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_ftruncate(struct wal_fs *fs, int fd, off_t len)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? EIO : wal_fs_posix()->ftruncate(fs, fd, len);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_fsize(struct wal_fs *fs, int fd, off_t *size)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? EIO : wal_fs_posix()->fsize(fs, fd, size);
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_rename(struct wal_fs *fs, const char *from, const char *to)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = check(f, WAL_FAULT_RENAME);
    if (rv == 0) {
        rv = wal_fs_posix()->rename(fs, from, to);
    }
    if (rv == 0) {
        for (struct ffile *x = f->files; x != NULL; x = x->next) {
            if (strcmp(x->path, from) == 0) {
                snprintf(x->path, sizeof x->path, "%s", to);
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ft_unlink(struct wal_fs *fs, const char *path)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    int rv = f->dead ? EIO : wal_fs_posix()->unlink(fs, path);
    if (rv == 0) {
        for (struct ffile *x = f->files; x != NULL; x = x->next) {
            if (strcmp(x->path, path) == 0 && x->fd < 0) {
                drop_file(f, x);
                break;
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int wal_fault_fs_new(struct wal_fs **out)
{
    struct fault *f = wal_malloc(sizeof *f);
    if (f == NULL) {
        return WAL_ENOMEM;
    }
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->fs = (struct wal_fs){ft_open,      ft_close,     ft_pread, ft_pwrite, ft_fdatasync, ft_fsync,
                            ft_fallocate, ft_ftruncate, ft_fsize, ft_rename, ft_unlink,    f};
    *out = &f->fs;
    return 0;
}

void wal_fault_fs_free(struct wal_fs *fs)
{
    if (fs == NULL) {
        return;
    }
    struct fault *f = F(fs);
    while (f->files != NULL) {
        drop_file(f, f->files);
    }
    pthread_mutex_destroy(&f->mu);
    wal_free(f);
}

void wal_fault_fs_arm(struct wal_fs *fs, enum wal_fault_op op, unsigned nth, int err, bool sticky)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    f->arm[op] = (struct arm){nth, err, sticky};
    pthread_mutex_unlock(&f->mu);
}

unsigned wal_fault_fs_count(struct wal_fs *fs, enum wal_fault_op op)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    unsigned n = f->count[op];
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Put back what unsynced writes replaced (newest first), then cut the size to the synced one. */
static void rollback(struct ffile *x)
{
    int fd = x->fd;
    if (fd < 0) {
        fd = open(x->path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            return;
        }
    }
    for (struct undo *u = x->undo; u != NULL; u = u->next) {
        if (u->len > 0 && pwrite(fd, u->bytes, u->len, u->off) < 0) {
            break;
        }
    }
    off_t size = 0;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        size = st.st_size;
    }
    if (size > x->synced_size) {
        /* Best effort: a crash simulation has nobody to report to. */
        int rv = ftruncate(fd, x->synced_size);
        (void)rv;
    }
    if (x->fd < 0) {
        close(fd);
    }
}

void wal_fault_fs_crash(struct wal_fs *fs)
{
    struct fault *f = F(fs);
    pthread_mutex_lock(&f->mu);
    for (struct ffile *x = f->files; x != NULL; x = x->next) {
        rollback(x);
        undo_free(x->undo);
        x->undo = NULL;
    }
    f->dead = true;
    pthread_mutex_unlock(&f->mu);
}
