/* Internals shared by wal.c (threads, batching) and segment.c (files, recovery).  Not public. */
#ifndef KV_WAL_WAL_INT_H
#define KV_WAL_WAL_INT_H

#include <pthread.h>

#include "wal/wal.h"

#define WAL_PATH_MAX 512
#define WAL_DEFAULT_SEGMENT (64ull << 20)
#define WAL_SPARES 2

/* A closed segment, kept for release. */
struct wal_seg
{
    uint64_t seq;
    uint64_t first; /* Lowest entry index in it (header first index if none). */
    uint64_t last;  /* Last log index when it was closed. */
    char path[WAL_PATH_MAX];
};

/* Records queued by the loop thread, written by the writer thread as one write + one sync. */
struct wal_batch
{
    unsigned char *buf;
    size_t len, cap;
    uint64_t ticket;
    uint64_t min_index;  /* Lowest entry index in the batch (UINT64_MAX if none). */
    uint64_t last_index; /* Log tail after the batch. */
    uint64_t last_term;
    struct wal_hard_state hs; /* Hard state after the batch. */
    uint64_t snap_index;      /* Snapshot marker after the batch. */
    uint64_t snap_term;
    bool has_snap; /* The batch carries a new marker: release after it is durable. */
};

/* The segment being written (writer thread only, after open). */
struct wal_cur
{
    int fd;
    uint64_t seq;
    uint64_t first;     /* Header first index. */
    uint64_t min_index; /* Lowest entry index written in it (UINT64_MAX if none). */
    off_t off;          /* End of valid data. */
    uint32_t chain;     /* Running CRC chain. */
    char path[WAL_PATH_MAX];
};

struct wal_spare
{
    int fd;
    char path[WAL_PATH_MAX];
};

struct wal
{
    char dir[WAL_PATH_MAX];
    struct wal_fs *fs;
    struct wal_options opts;
    int dir_fd;   /* Holds the flock. */
    int event_fd; /* Durability notifications. */
    char errmsg[WAL_ERRMSG_SIZE];

    /* Loop thread. */
    struct wal_memtable mem;
    struct wal_hard_state hs;
    uint64_t snap_index, snap_term;

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t work; /* Writer: a batch is pending, or stop. */
    pthread_cond_t done; /* Waiters: a batch became durable, or failure. */
    struct wal_batch pending;
    struct wal_durable durable;
    int failed; /* Sticky error code, 0 while healthy. */
    char fail_msg[WAL_ERRMSG_SIZE];
    bool stop;
    bool busy; /* A batch is being written (by the writer or wal_flush_here's caller). */
    struct wal_stats stats;

    /* Writer side: the writer thread, or wal_flush_here()'s caller, whichever set busy. */
    struct wal_batch writing;
    char werr[WAL_ERRMSG_SIZE]; /* Writer's error context, copied to fail_msg. */
    struct wal_cur cur;
    struct wal_seg *closed;
    size_t n_closed, cap_closed;
    uint64_t w_last_index, w_last_term;
    struct wal_hard_state w_hs;
    uint64_t w_snap_index, w_snap_term;
    pthread_t writer;
    bool writer_started;

    /* File pipeline, under pmu. */
    pthread_mutex_t pmu;
    pthread_cond_t pcond;
    struct wal_spare spares[WAL_SPARES];
    int n_spares;
    int p_err;
    char p_msg[WAL_ERRMSG_SIZE];
    bool p_stop;
    uint64_t spare_counter;
    pthread_t pipeline;
    bool pipeline_started;
};

/* Map an errno value to a WAL error code. */
int wal_errno_code(int err);

/* Replay the directory into @w (memtable, hard state, marker, closed list, cur) and prepare the
 * open segment for appending (creating the first one if none).  Called by wal_open before any
 * thread starts.  Errors as wal_open, with context in w->errmsg. */
int wal_recover(struct wal *w, struct wal_recovered *rec);

/* Start a fresh segment file @path (already open as @fd) with a header for @seq and restating
 * the hard state and marker; fdatasync it.  Writer thread (or wal_open).  Returns the chain after
 * the restated records in *@chain and the data end in *@off. */
int wal_seg_start(struct wal *w,
                  int fd,
                  const char *path,
                  uint64_t seq,
                  uint64_t first,
                  uint32_t prev_chain,
                  uint32_t *chain,
                  off_t *off,
                  char *errmsg);

/* fsync the WAL directory; context into @errmsg (WAL_ERRMSG_SIZE). */
int wal_dir_sync(struct wal *w, char *errmsg);

/* Remember a closed segment for release.  Errors: WAL_ENOMEM. */
int wal_closed_add(struct wal *w, const struct wal_seg *s);

/* Fold the record headers of @n bytes of whole records into @chain. */
uint32_t wal_chain_fold(uint32_t chain, const unsigned char *buf, size_t n);

#endif /* KV_WAL_WAL_INT_H */
