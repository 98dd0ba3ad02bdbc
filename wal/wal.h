/* The write-ahead log: segmented, checksummed, group-committed storage of the Raft log. */
#ifndef KV_WAL_WAL_H
#define KV_WAL_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wal/codec.h"
#include "wal/crc32c.h"
#include "wal/format.h"
#include "wal/memtable.h"

/* ---- Errors (STYLE.md §3) ---- */

#define WAL_ERRORS(X)                                                 \
    X(WAL_EIO, 100, "I/O error")                                      \
    X(WAL_ENOSPC, 101, "no space left on device")                     \
    X(WAL_ECORRUPT, 102, "corrupt record or segment")                 \
    X(WAL_ENOMEM, 103, "out of memory")                               \
    X(WAL_EINVAL, 104, "invalid argument")                            \
    X(WAL_ELOCKED, 105, "WAL directory is locked by another process") \
    X(WAL_ECOMPACTED, 106, "requested index is compacted")            \
    X(WAL_EUNAVAILABLE, 107, "requested index is not in the log")     \
    X(WAL_ESNAPOLD, 108, "snapshot is older than the current one")

enum wal_err {
#define X(code, num, msg) code = num,
    WAL_ERRORS(X)
#undef X
};

/* Size of every errmsg buffer of this module. */
#define WAL_ERRMSG_SIZE 256

/* The static message of @code ("unknown error" for codes outside the range).  Any thread. */
const char *wal_strerror(int code);

/* ---- Allocation hooks (STYLE.md §4) ---- */

/* Every allocation of this module goes through these; tests replace them to fail the Nth one.
 * wal_set_alloc(NULL, NULL, NULL) restores libc.  Set before any wal object exists. */
void wal_set_alloc(void *(*malloc_fn)(size_t),
                   void *(*realloc_fn)(void *, size_t),
                   void (*free_fn)(void *));
void *wal_malloc(size_t n);
void *wal_realloc(void *p, size_t n);
void wal_free(void *p);

/* ---- Filesystem vtable ---- */

/* All file I/O of the WAL goes through this table so tests can inject faults.  Every function
 * returns 0 or a positive errno value (never -1).  Paths are full paths.  Functions may be called
 * from the loop, writer and pipeline threads concurrently; implementations must be thread-safe.
 * Two things bypass it: the directory listing (opendir) and the lock (flock on the directory fd
 * that open returned, so fds must be real kernel fds).  A batch is one contiguous buffer, so one
 * pwrite per batch is the single write of group commit (no writev needed). */
struct wal_fs
{
    int (*open)(struct wal_fs *fs, const char *path, int flags, int mode, int *fd);
    int (*close)(struct wal_fs *fs, int fd);
    /* Read up to @n bytes at @off; *@got gets the count (short only at end of file). */
    int (*pread)(struct wal_fs *fs, int fd, void *buf, size_t n, off_t off, size_t *got);
    /* Write all @n bytes at @off (partial writes are retried inside, or fail). */
    int (*pwrite)(struct wal_fs *fs, int fd, const void *buf, size_t n, off_t off);
    int (*fdatasync)(struct wal_fs *fs, int fd);
    int (*fsync)(struct wal_fs *fs, int fd); /* Used for directories. */
    /* Reserve [0, @len) so later writes there cannot fail with ENOSPC; may return EOPNOTSUPP. */
    int (*fallocate)(struct wal_fs *fs, int fd, off_t len);
    int (*ftruncate)(struct wal_fs *fs, int fd, off_t len);
    int (*fsize)(struct wal_fs *fs, int fd, off_t *size);
    int (*rename)(struct wal_fs *fs, const char *from, const char *to);
    int (*unlink)(struct wal_fs *fs, const char *path);
    void *data; /* Implementation state. */
};

/* The default POSIX implementation (a static, shared object).  Any thread. */
struct wal_fs *wal_fs_posix(void);

/* ---- Fault-injection filesystem (for tests and tools) ---- */

/* Operations that a fault can target. */
enum wal_fault_op { WAL_FAULT_WRITE = 1, WAL_FAULT_FSYNC, WAL_FAULT_RENAME, WAL_FAULT_FALLOCATE };

/* Create a fault-injecting wrapper around the POSIX filesystem.  It records, per file, every byte
 * written since that file's last fdatasync (with the bytes it replaced), so wal_fault_fs_crash()
 * can drop exactly what a power cut would.  Release with wal_fault_fs_free() after every wal
 * using it is closed.  Errors: WAL_ENOMEM. */
int wal_fault_fs_new(struct wal_fs **out);
void wal_fault_fs_free(struct wal_fs *fs);

/* Make the @nth (1-based, counted from now) operation of kind @op fail with @err (EIO, ENOSPC,
 * ...).  With @sticky, that one and every later one of that kind fail.  @nth == 0 clears. */
void wal_fault_fs_arm(struct wal_fs *fs, enum wal_fault_op op, unsigned nth, int err, bool sticky);

/* Simulate a power cut: undo every write not covered by a completed fdatasync of its file
 * (restoring the replaced bytes and the synced size), then fail every later operation with EIO
 * as a dead process would.  Directory entries (create, rename, unlink) are treated as durable. */
void wal_fault_fs_crash(struct wal_fs *fs);

/* Operations of kind @op performed so far (including failed ones). */
unsigned wal_fault_fs_count(struct wal_fs *fs, enum wal_fault_op op);

/* ---- The WAL ---- */

/* Term, vote and commit index: persisted before any vote is cast (see DESIGN.md). */
struct wal_hard_state
{
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

enum wal_recovery {
    /* A torn tail in the last segment (partial record, bad CRC at the end) is truncated and
     * logged; any other damage is WAL_ECORRUPT.  The default. */
    WAL_RECOVER_TOLERATE_TAIL = 1,
    /* Any damage, including a torn tail, is WAL_ECORRUPT (raft-engine AbsoluteConsistency). */
    WAL_RECOVER_STRICT,
};

struct wal_options
{
    uint64_t segment_size;      /* Cut threshold in bytes; 0 = 64 MiB. */
    enum wal_recovery recovery; /* 0 = WAL_RECOVER_TOLERATE_TAIL. */
    struct wal_fs *fs;          /* NULL = wal_fs_posix(); must outlive the wal. */
    bool no_prealloc;           /* Skip fallocate of spare segments (tests, tmpfs). */
    /* Log sink for recovery notes (torn tail truncated, ...); NULL = stderr.  Called on the
     * thread that calls wal_open. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

/* What wal_open found.  The entries after the snapshot marker are in wal_memtable(). */
struct wal_recovered
{
    struct wal_hard_state hs; /* Last hard state written (zeros if none). */
    uint64_t snap_index;      /* Last snapshot marker (0 if none). */
    uint64_t snap_term;
    uint64_t first_index; /* First entry index in the memtable (snap_index + 1). */
    uint64_t last_index;  /* Last entry index (snap_index if none). */
    unsigned segments;    /* Segment files replayed. */
    uint64_t bytes;       /* Bytes of records replayed. */
    uint64_t torn_bytes;  /* Bytes dropped from a torn tail (0 if clean). */
};

/* Which writes are on disk.  Tickets grow by one per batch: everything enqueued with a ticket
 * <= @ticket is durable. */
struct wal_durable
{
    uint64_t ticket;          /* Last durable batch (0 = none yet). */
    uint64_t index;           /* Last log index as of that batch. */
    uint64_t term;            /* Its term. */
    struct wal_hard_state hs; /* Hard state as of that batch. */
};

struct wal; /* Opaque. */

/* Open (creating if needed) the WAL in directory @dir, take an exclusive lock on it, replay it
 * (rebuilding the memtable), and start the writer and file-pipeline threads.
 * @opts may be NULL for defaults.  @rec (may be NULL) gets what was recovered.  On error
 * @errmsg (WAL_ERRMSG_SIZE bytes, may be NULL) gets context such as "segment
 * /d/0000000000000001-0000000000000040: bad payload crc at offset 4096".
 * Errors: WAL_ELOCKED (another process holds the directory), WAL_ECORRUPT (damage that recovery
 * mode does not allow; the file is left in place, never deleted), WAL_EIO, WAL_ENOSPC,
 * WAL_ENOMEM, WAL_EINVAL.  Any thread; the returned wal then belongs to one "loop" thread. */
int wal_open(const char *dir,
             const struct wal_options *opts,
             struct wal **out,
             struct wal_recovered *rec,
             char *errmsg);

/* Write and sync whatever is queued (unless the wal has failed), stop the threads and free.
 * A no-op on NULL.  Loop thread. */
void wal_close(struct wal *w);

/* Append @n consecutive entries to the log, in the memtable at once and on disk with the next
 * batch.  Never blocks on disk.  An index <= last index replaces the suffix from there (Raft
 * conflict truncation), both in the memtable and, through the record itself, on replay.  Entries
 * at or below the snapshot point are ignored.  Data is copied.  *@ticket (may be NULL) gets the
 * batch ticket to wait for.
 * Errors: WAL_EINVAL (gap or non-consecutive indices); WAL_ENOMEM; the sticky I/O error
 * (WAL_EIO, WAL_ENOSPC) once the wal has failed.  Loop thread. */
int wal_append(struct wal *w, const struct wal_entry *ents, size_t n, uint64_t *ticket);

/* Queue a hard state record (term, vote, commit).  Same contract as wal_append. */
int wal_set_hard_state(struct wal *w, const struct wal_hard_state *hs, uint64_t *ticket);

/* Record that a snapshot covering the log up to (@index, @term) is safely stored elsewhere:
 * queue a snapshot marker, compact the memtable to @index (or reset it when @index is past the
 * last entry), and once the marker is durable release (delete) closed segments whose entries
 * are all < @index, keeping the one that holds @index (etcd ReleaseLockTo).
 * Errors: WAL_ESNAPOLD (@index below the current marker), WAL_ENOMEM, the sticky I/O error.
 * Loop thread. */
int wal_mark_snapshot(struct wal *w, uint64_t index, uint64_t term, uint64_t *ticket);

/* Poll durability into @d.  Never blocks on disk (takes a mutex held only briefly).
 * Errors: the sticky I/O error once the wal has failed (@d still holds the last durable state;
 * nothing after the failure is ever reported durable).  Loop thread (or any). */
int wal_durable(struct wal *w, struct wal_durable *d);

/* An eventfd (nonblocking) that becomes readable after each durable batch or failure, for an
 * ev_io watcher.  Call wal_notify_drain() when it fires, then wal_durable().  Owned by the wal. */
int wal_notify_fd(const struct wal *w);
void wal_notify_drain(struct wal *w);

/* Write and sync the queued batch on the calling thread, if the writer thread is idle, the
 * batch is at most @max_bytes, does not fill the segment and carries no snapshot marker
 * (those go to the writer thread).  Saves the two thread wake-ups of a hand-off, which is most
 * of the overhead of a lone small write.  *@done tells whether it wrote; on success everything
 * queued before the call is durable (no eventfd notification for it).  Errors: the sticky I/O
 * error (the wal has failed, as for the writer thread).  Loop thread. */
int wal_flush_here(struct wal *w, size_t max_bytes, bool *done);

/* Block until batch @ticket is durable (0 = everything queued so far).  For tools and tests; the
 * loop never calls it.  Returns 0 if that batch is durable, even if the wal failed later.
 * Errors: the sticky I/O error if it failed before the batch was durable. */
int wal_sync_wait(struct wal *w, uint64_t ticket);

/* The memtable holding the log (raft storage reads: term, entries, first/last index, bytes).
 * Borrowed for the wal's lifetime; loop thread only.  Add entries only through wal_append and
 * snapshots only through wal_mark_snapshot.  wal_memtable_compact() on it is allowed (it frees
 * memory only: the segments keep those entries until a marker releases them, so a reopen may
 * hold more entries than the memtable did). */
struct wal_memtable *wal_memtable(struct wal *w);

/* Context of the last error (the failure reason once failed).  Borrowed until the next call. */
const char *wal_errmsg(struct wal *w);

/* Counters, for tests and benchmarks.  Any thread. */
struct wal_stats
{
    uint64_t batches;        /* write+fdatasync rounds done. */
    uint64_t bytes_written;  /* Record bytes written. */
    uint64_t segments_cut;   /* Cuts done. */
    uint64_t segments_freed; /* Segments released. */
    uint64_t spare_waits;    /* Cuts that had to wait for the pipeline. */
    uint64_t spares_ready;   /* Preallocated spare files ready now (0..2). */
};
void wal_stats_get(struct wal *w, struct wal_stats *s);

#endif /* KV_WAL_WAL_H */
