/* The WAL object: batching on the loop thread, the writer thread (one write + one fdatasync per
 * batch, segment cuts, release) and the file pipeline thread (preallocated spare segments). */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal/wal_int.h"

/* Entries records are cut at about this payload size, so a huge append does not make one
 * huge record that replay must hold at once. */
#define WAL_REC_TARGET (1u << 20)

/* ---- Batches (loop thread, under mu) ---- */

static void batch_reset(struct wal_batch *b, uint64_t ticket)
{
    b->len = 0;
    b->ticket = ticket;
    b->min_index = UINT64_MAX;
    b->has_snap = false;
}

static unsigned char *batch_reserve(struct wal_batch *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap == 0 ? 64 * 1024 : b->cap;
        while (cap - b->len < n) {
            cap *= 2;
        }
        unsigned char *buf = wal_realloc(b->buf, cap);
        if (buf == NULL) {
            return NULL;
        }
        b->buf = buf;
        b->cap = cap;
    }
    return b->buf + b->len;
}

/* Record the log state the batch leaves behind, for durability reports and new segments. */
static void batch_note(struct wal *w)
{
    struct wal_batch *b = &w->pending;
    b->last_index = wal_memtable_last(&w->mem);
    b->last_term = 0;
    wal_memtable_term(&w->mem, b->last_index, &b->last_term);
    b->hs = w->hs;
    b->snap_index = w->snap_index;
    b->snap_term = w->snap_term;
}

/* Encode @n entries as one or more entries records into the pending batch. */
static int encode_entries(struct wal *w, const struct wal_entry *ents, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i, bytes = 0;
        do {
            bytes += ents[j].len;
            j++;
        } while (j < n && bytes + ents[j].len <= WAL_REC_TARGET);
        size_t payload = wal_entries_size(j - i, bytes);
        unsigned char *p = batch_reserve(&w->pending, WAL_REC_HEADER_SIZE + payload);
        if (p == NULL) {
            return WAL_ENOMEM;
        }
        wal_entries_encode(p + WAL_REC_HEADER_SIZE, ents + i, j - i);
        w->pending.len += wal_rec_seal(p, WAL_REC_ENTRIES, payload);
        i = j;
    }
    if (ents[0].index < w->pending.min_index) {
        w->pending.min_index = ents[0].index;
    }
    return 0;
}

static int encode_fixed(struct wal *w, uint8_t type, uint64_t a, uint64_t b, uint64_t c)
{
    size_t len = type == WAL_REC_HARD_STATE ? 24 : 16;
    unsigned char *p = batch_reserve(&w->pending, WAL_REC_HEADER_SIZE + len);
    if (p == NULL) {
        return WAL_ENOMEM;
    }
    wal_put_u64(p + WAL_REC_HEADER_SIZE, a);
    wal_put_u64(p + WAL_REC_HEADER_SIZE + 8, b);
    if (len == 24) {
        wal_put_u64(p + WAL_REC_HEADER_SIZE + 16, c);
    }
    w->pending.len += wal_rec_seal(p, type, len);
    return 0;
}

/* Hand the pending batch to the writer.  Called with mu held after encoding. */
static void enqueue(struct wal *w, uint64_t *ticket)
{
    batch_note(w);
    if (ticket != NULL) {
        *ticket = w->pending.len > 0 ? w->pending.ticket : w->pending.ticket - 1;
    }
    pthread_cond_signal(&w->work);
}

static int check_entries(const struct wal_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ents[i].index == 0 || (i > 0 && ents[i].index != ents[i - 1].index + 1) ||
            ents[i].len > WAL_REC_MAX - WAL_ENTRIES_HEADER_SIZE - WAL_ENTRY_HEADER_SIZE ||
            (ents[i].len > 0 && ents[i].data == NULL)) {
            return WAL_EINVAL;
        }
    }
    return 0;
}

int wal_append(struct wal *w, const struct wal_entry *ents, size_t n, uint64_t *ticket)
{
    int rv = check_entries(ents, n);
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "append: bad entry indices or sizes");
        return rv;
    }
    pthread_mutex_lock(&w->mu);
    if (w->failed != 0) {
        rv = w->failed;
        snprintf(w->errmsg, sizeof w->errmsg, "append: wal failed: %s", w->fail_msg);
        pthread_mutex_unlock(&w->mu);
        return rv;
    }
    /* Entries at or below the snapshot are covered by it: neither kept nor logged. */
    while (n > 0 && ents[0].index <= w->snap_index) {
        ents++;
        n--;
    }
    /* Reserve first, so a failed allocation cannot leave the memtable ahead of the batch. */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += WAL_ENTRY_HEADER_SIZE + ents[i].len;
    }
    /* At most one record per entry, each with under 32 bytes of framing. */
    if (n > 0 && batch_reserve(&w->pending, bytes + (n + 1) * 32) == NULL) {
        rv = WAL_ENOMEM;
    }
    if (rv == 0 && n > 0) {
        rv = wal_memtable_append(&w->mem, ents, n);
    }
    if (rv == 0 && n > 0) {
        rv = encode_entries(w, ents, n);
        assert(rv == 0);
    }
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "append [%" PRIu64 ", +%zu): %s",
                 n > 0 ? ents[0].index : 0, n, wal_strerror(rv));
    }
    enqueue(w, ticket);
    pthread_mutex_unlock(&w->mu);
    return rv;
}

int wal_set_hard_state(struct wal *w, const struct wal_hard_state *hs, uint64_t *ticket)
{
    pthread_mutex_lock(&w->mu);
    int rv = w->failed;
    if (rv == 0 && memcmp(hs, &w->hs, sizeof *hs) != 0) {
        rv = encode_fixed(w, WAL_REC_HARD_STATE, hs->term, hs->vote, hs->commit);
        if (rv == 0) {
            w->hs = *hs;
        }
    }
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "set hard state: %s",
                 w->failed != 0 ? w->fail_msg : wal_strerror(rv));
    }
    enqueue(w, ticket);
    pthread_mutex_unlock(&w->mu);
    return rv;
}

/* etcd: Compact when the log holds (index, term), ApplySnapshot (reset) otherwise. */
static int snapshot_memtable(struct wal *w, uint64_t index, uint64_t term)
{
    if (index <= w->mem.snap_index) {
        return 0; /* The caller already compacted the memtable past it. */
    }
    uint64_t t = 0;
    if (index > w->mem.snap_index && wal_memtable_term(&w->mem, index, &t) == 0 && t == term) {
        return wal_memtable_compact(&w->mem, index);
    }
    return wal_memtable_apply_snapshot(&w->mem, index, term);
}

int wal_mark_snapshot(struct wal *w, uint64_t index, uint64_t term, uint64_t *ticket)
{
    pthread_mutex_lock(&w->mu);
    int rv = w->failed;
    if (rv == 0 && index < w->snap_index) {
        rv = WAL_ESNAPOLD;
    }
    if (rv == 0 && index > w->snap_index) {
        rv = encode_fixed(w, WAL_REC_SNAPSHOT, index, term, 0);
        if (rv == 0) {
            rv = snapshot_memtable(w, index, term);
            assert(rv == 0);
            w->snap_index = index;
            w->snap_term = term;
            w->pending.has_snap = true;
        }
    }
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "mark snapshot %" PRIu64 ": %s", index,
                 w->failed != 0 ? w->fail_msg : wal_strerror(rv));
    }
    enqueue(w, ticket);
    pthread_mutex_unlock(&w->mu);
    return rv;
}

int wal_durable(struct wal *w, struct wal_durable *d)
{
    pthread_mutex_lock(&w->mu);
    *d = w->durable;
    int rv = w->failed;
    pthread_mutex_unlock(&w->mu);
    return rv;
}

int wal_notify_fd(const struct wal *w)
{
    return w->event_fd;
}

void wal_notify_drain(struct wal *w)
{
    uint64_t v;
    ssize_t r = read(w->event_fd, &v, sizeof v);
    (void)r; /* EAGAIN: nothing to drain. */
}

int wal_sync_wait(struct wal *w, uint64_t ticket)
{
    pthread_mutex_lock(&w->mu);
    if (ticket == 0) {
        ticket = w->pending.len > 0 ? w->pending.ticket : w->pending.ticket - 1;
    }
    while (w->failed == 0 && w->durable.ticket < ticket) {
        pthread_cond_wait(&w->done, &w->mu);
    }
    /* A batch that became durable before a later failure is still durable. */
    int rv = w->durable.ticket >= ticket ? 0 : w->failed;
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "sync: %s", w->fail_msg);
    }
    pthread_mutex_unlock(&w->mu);
    return rv;
}

struct wal_memtable *wal_memtable(struct wal *w)
{
    return &w->mem;
}

const char *wal_errmsg(struct wal *w)
{
    return w->errmsg;
}

void wal_stats_get(struct wal *w, struct wal_stats *s)
{
    pthread_mutex_lock(&w->mu);
    *s = w->stats;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&w->pmu);
    s->spares_ready = (uint64_t)w->n_spares;
    pthread_mutex_unlock(&w->pmu);
}

/* ---- File pipeline thread ---- */

/* Create, preallocate and sync one spare file, and make its name durable. */
static int make_spare(struct wal *w, struct wal_spare *sp, char *errmsg)
{
    snprintf(sp->path, sizeof sp->path, "%s/tmp-%" PRIu64, w->dir, ++w->spare_counter);
    int rv = w->fs->open(w->fs, sp->path, O_RDWR | O_CREAT | O_TRUNC, 0644, &sp->fd);
    if (rv != 0) {
        snprintf(errmsg, WAL_ERRMSG_SIZE, "create spare %s: %s", sp->path, strerror(rv));
        return wal_errno_code(rv);
    }
    if (!w->opts.no_prealloc) {
        rv = w->fs->fallocate(w->fs, sp->fd, (off_t)w->opts.segment_size);
        rv = rv == EOPNOTSUPP ? 0 : rv;
    }
    if (rv == 0) {
        rv = w->fs->fdatasync(w->fs, sp->fd);
    }
    if (rv != 0) {
        snprintf(errmsg, WAL_ERRMSG_SIZE, "preallocate spare %s: %s", sp->path, strerror(rv));
        w->fs->close(w->fs, sp->fd);
        w->fs->unlink(w->fs, sp->path);
        return wal_errno_code(rv);
    }
    return wal_dir_sync(w, errmsg);
}

static void *pipeline_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-wal-files");
    struct wal *w = arg;
    pthread_mutex_lock(&w->pmu);
    for (;;) {
        while (!w->p_stop && (w->n_spares == WAL_SPARES || w->p_err != 0)) {
            pthread_cond_wait(&w->pcond, &w->pmu);
        }
        if (w->p_stop) {
            break;
        }
        pthread_mutex_unlock(&w->pmu);
        struct wal_spare sp;
        char msg[WAL_ERRMSG_SIZE];
        int rv = make_spare(w, &sp, msg);
        pthread_mutex_lock(&w->pmu);
        if (rv != 0) {
            /* Reported only when the writer needs a spare: an append never fails for it early. */
            w->p_err = rv;
            memcpy(w->p_msg, msg, sizeof msg);
        } else {
            w->spares[w->n_spares++] = sp;
        }
        pthread_cond_broadcast(&w->pcond);
    }
    pthread_mutex_unlock(&w->pmu);
    return NULL;
}

/* Take a ready spare, waiting for the pipeline if it lags (counted in spare_waits). */
static int take_spare(struct wal *w, struct wal_spare *sp)
{
    pthread_mutex_lock(&w->pmu);
    bool waited = false;
    while (w->n_spares == 0 && w->p_err == 0) {
        waited = true;
        pthread_cond_wait(&w->pcond, &w->pmu);
    }
    int rv = 0;
    if (w->n_spares > 0) {
        *sp = w->spares[0];
        w->n_spares--;
        memmove(&w->spares[0], &w->spares[1], (size_t)w->n_spares * sizeof *sp);
        pthread_cond_broadcast(&w->pcond);
    } else {
        rv = w->p_err;
        memcpy(w->werr, w->p_msg, sizeof w->werr);
    }
    pthread_mutex_unlock(&w->pmu);
    if (waited) {
        pthread_mutex_lock(&w->mu);
        w->stats.spare_waits++;
        pthread_mutex_unlock(&w->mu);
    }
    return rv;
}

/* ---- Writer thread ---- */

static int io_fail(struct wal *w, int err, const char *what, const char *path)
{
    snprintf(w->werr, sizeof w->werr, "%s %s: %s", what, path, strerror(err));
    return wal_errno_code(err);
}

/* One write + one fdatasync for the whole batch: the group commit. */
static int write_batch(struct wal *w, const struct wal_batch *b)
{
    int rv = w->fs->pwrite(w->fs, w->cur.fd, b->buf, b->len, w->cur.off);
    if (rv != 0) {
        return io_fail(w, rv, "write", w->cur.path);
    }
    rv = w->fs->fdatasync(w->fs, w->cur.fd);
    if (rv != 0) {
        return io_fail(w, rv, "fdatasync", w->cur.path);
    }
    w->cur.chain = wal_chain_fold(w->cur.chain, b->buf, b->len);
    w->cur.off += (off_t)b->len;
    if (b->min_index < w->cur.min_index) {
        w->cur.min_index = b->min_index;
    }
    w->w_last_index = b->last_index;
    w->w_last_term = b->last_term;
    w->w_hs = b->hs;
    w->w_snap_index = b->snap_index;
    w->w_snap_term = b->snap_term;
    return 0;
}

/* Close the current segment and continue in a preallocated spare.  Order matters for crashes:
 * the new file is complete and synced before it gets its open- name; the old one is trimmed
 * and synced before it gets its closed name; the directory is synced last.  Replay orders by
 * header seq, so a crash between the renames only leaves two open- files, both valid. */
static int cut(struct wal *w)
{
    struct wal_spare sp;
    int rv = take_spare(w, &sp);
    if (rv != 0) {
        return rv;
    }
    uint64_t seq = w->cur.seq + 1;
    uint32_t chain = 0;
    off_t off = 0;
    rv = wal_seg_start(w, sp.fd, sp.path, seq, w->w_last_index + 1, w->cur.chain, &chain, &off,
                       w->werr);
    int err = 0;
    if (rv == 0 && (err = w->fs->ftruncate(w->fs, w->cur.fd, w->cur.off)) == 0) {
        err = w->fs->fdatasync(w->fs, w->cur.fd);
    }
    struct wal_seg s;
    s.seq = w->cur.seq;
    s.first = w->cur.min_index != UINT64_MAX ? w->cur.min_index : w->cur.first;
    s.last = w->w_last_index;
    snprintf(s.path, sizeof s.path, "%s/%016" PRIx64 "-%016" PRIx64, w->dir, s.first, s.last);
    char open_path[WAL_PATH_MAX];
    snprintf(open_path, sizeof open_path, "%s/open-%016" PRIx64, w->dir, seq);
    if (rv == 0 && err == 0 && (err = w->fs->rename(w->fs, sp.path, open_path)) == 0) {
        err = w->fs->rename(w->fs, w->cur.path, s.path);
    }
    if (rv == 0 && err != 0) {
        rv = io_fail(w, err, "cut segment", w->cur.path);
    }
    if (rv == 0) {
        rv = wal_dir_sync(w, w->werr);
    }
    if (rv != 0) {
        w->fs->close(w->fs, sp.fd);
        return rv;
    }
    w->fs->close(w->fs, w->cur.fd);
    rv = wal_closed_add(w, &s);
    w->cur = (struct wal_cur){sp.fd, seq, w->w_last_index + 1, UINT64_MAX, off, chain, ""};
    snprintf(w->cur.path, sizeof w->cur.path, "%s", open_path);
    return rv;
}

/* etcd ReleaseLockTo: delete closed segments whose entries are all below the marker, oldest
 * first, keeping the one that holds it.  A failed unlink only stops the release. */
static size_t release(struct wal *w)
{
    size_t k = 0;
    while (k < w->n_closed && w->closed[k].last < w->w_snap_index) {
        if (w->fs->unlink(w->fs, w->closed[k].path) != 0) {
            break;
        }
        k++;
    }
    if (k > 0) {
        memmove(w->closed, w->closed + k, (w->n_closed - k) * sizeof *w->closed);
        w->n_closed -= k;
        char msg[WAL_ERRMSG_SIZE];
        wal_dir_sync(w, msg);
    }
    return k;
}

static void publish(struct wal *w, int rv, const struct wal_batch *b, bool notify)
{
    if (rv != 0 && w->failed == 0) {
        w->failed = rv;
        memcpy(w->fail_msg, w->werr, sizeof w->fail_msg);
    }
    if (rv == 0 && b != NULL) {
        w->durable = (struct wal_durable){b->ticket, b->last_index, b->last_term, b->hs};
        w->stats.batches++;
        w->stats.bytes_written += b->len;
    }
    pthread_cond_broadcast(&w->done);
    if (notify || rv != 0) {
        uint64_t one = 1;
        ssize_t r = write(w->event_fd, &one, sizeof one);
        (void)r; /* A saturated counter still reads as readable. */
    }
}

/* After the batch is durable and reported: cut when the segment is full. */
static int after_batch(struct wal *w)
{
    int rv = 0;
    uint64_t cuts = 0;
    if ((uint64_t)w->cur.off >= w->opts.segment_size) {
        rv = cut(w);
        cuts = rv == 0;
    }
    pthread_mutex_lock(&w->mu);
    w->stats.segments_cut += cuts;
    if (rv != 0) {
        publish(w, rv, NULL, true);
    }
    pthread_mutex_unlock(&w->mu);
    return rv;
}

/* Take the pending batch for writing.  Called with mu held. */
static void take_pending(struct wal *w)
{
    struct wal_batch tmp = w->writing;
    w->writing = w->pending;
    w->pending = tmp;
    batch_reset(&w->pending, w->writing.ticket + 1);
    w->busy = true;
}

int wal_flush_here(struct wal *w, size_t max_bytes, bool *done)
{
    *done = false;
    pthread_mutex_lock(&w->mu);
    int rv = w->failed;
    if (rv != 0 || w->busy || w->pending.len == 0 || w->pending.len > max_bytes ||
        w->pending.has_snap || (uint64_t)w->cur.off + w->pending.len >= w->opts.segment_size) {
        if (rv != 0) {
            snprintf(w->errmsg, sizeof w->errmsg, "sync: %s", w->fail_msg);
        }
        pthread_mutex_unlock(&w->mu);
        return rv;
    }
    take_pending(w);
    pthread_mutex_unlock(&w->mu);
    rv = write_batch(w, &w->writing);
    pthread_mutex_lock(&w->mu);
    publish(w, rv, &w->writing, false);
    w->busy = false;
    if (w->pending.len > 0) {
        pthread_cond_signal(&w->work);
    }
    rv = w->failed;
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "sync: %s", w->fail_msg);
    }
    pthread_mutex_unlock(&w->mu);
    *done = rv == 0;
    return rv;
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-wal-writer");
    struct wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && (w->pending.len == 0 || w->failed != 0 || w->busy)) {
            pthread_cond_wait(&w->work, &w->mu);
        }
        /* wal_close and wal_flush_here both run on the loop thread: never at once. */
        assert(!w->busy);
        if (w->pending.len == 0 || w->failed != 0) {
            break;
        }
        take_pending(w);
        pthread_mutex_unlock(&w->mu);

        int rv = write_batch(w, &w->writing);
        /* Release before reporting, so that a caller who waited for a marker sees its
         * segments gone; markers are rare, so the latency does not matter. */
        size_t freed = rv == 0 && w->writing.has_snap ? release(w) : 0;
        pthread_mutex_lock(&w->mu);
        w->stats.segments_freed += freed;
        publish(w, rv, &w->writing, true);
        pthread_mutex_unlock(&w->mu);
        if (rv == 0) {
            after_batch(w);
        }
        pthread_mutex_lock(&w->mu);
        w->busy = false;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- Open and close ---- */

static int open_dir(struct wal *w, const char *dir)
{
    if (strlen(dir) + 40 >= sizeof w->dir) {
        snprintf(w->errmsg, sizeof w->errmsg, "directory name too long: %s", dir);
        return WAL_EINVAL;
    }
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(w->errmsg, sizeof w->errmsg, "mkdir %s: %s", dir, strerror(errno));
        return wal_errno_code(errno);
    }
    int rv = w->fs->open(w->fs, dir, O_RDONLY | O_DIRECTORY, 0, &w->dir_fd);
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "open %s: %s", dir, strerror(rv));
        return wal_errno_code(rv);
    }
    if (flock(w->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        snprintf(w->errmsg, sizeof w->errmsg, "lock %s: %s", dir,
                 err == EWOULDBLOCK ? "held by another process or handle" : strerror(err));
        return err == EWOULDBLOCK ? WAL_ELOCKED : wal_errno_code(err);
    }
    w->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->event_fd < 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "eventfd: %s", strerror(errno));
        return wal_errno_code(errno);
    }
    return 0;
}

static struct wal *wal_new(const struct wal_options *opts)
{
    struct wal *w = wal_malloc(sizeof *w);
    if (w == NULL) {
        return NULL;
    }
    memset(w, 0, sizeof *w);
    if (opts != NULL) {
        w->opts = *opts;
    }
    if (w->opts.segment_size == 0) {
        w->opts.segment_size = WAL_DEFAULT_SEGMENT;
    }
    if (w->opts.recovery == 0) {
        w->opts.recovery = WAL_RECOVER_TOLERATE_TAIL;
    }
    w->fs = w->opts.fs != NULL ? w->opts.fs : wal_fs_posix();
    w->dir_fd = -1;
    w->event_fd = -1;
    w->cur.fd = -1;
    wal_memtable_init(&w->mem);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done, NULL);
    pthread_mutex_init(&w->pmu, NULL);
    pthread_cond_init(&w->pcond, NULL);
    batch_reset(&w->pending, 1);
    return w;
}

/* Release everything; threads must be stopped. */
static void wal_free_all(struct wal *w)
{
    for (int i = 0; i < w->n_spares; i++) {
        w->fs->close(w->fs, w->spares[i].fd);
        w->fs->unlink(w->fs, w->spares[i].path);
    }
    if (w->cur.fd >= 0) {
        w->fs->close(w->fs, w->cur.fd);
    }
    if (w->event_fd >= 0) {
        close(w->event_fd);
    }
    if (w->dir_fd >= 0) {
        w->fs->close(w->fs, w->dir_fd); /* Drops the flock. */
    }
    wal_memtable_fini(&w->mem);
    wal_free(w->pending.buf);
    wal_free(w->writing.buf);
    wal_free(w->closed);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->pmu);
    pthread_cond_destroy(&w->pcond);
    wal_free(w);
}

static int start_threads(struct wal *w)
{
    int err = pthread_create(&w->pipeline, NULL, pipeline_main, w);
    if (err == 0) {
        w->pipeline_started = true;
        err = pthread_create(&w->writer, NULL, writer_main, w);
    }
    if (err == 0) {
        w->writer_started = true;
        return 0;
    }
    snprintf(w->errmsg, sizeof w->errmsg, "start threads: %s", strerror(err));
    return WAL_ENOMEM;
}

static void stop_threads(struct wal *w)
{
    if (w->writer_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->work);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->writer, NULL);
    }
    if (w->pipeline_started) {
        pthread_mutex_lock(&w->pmu);
        w->p_stop = true;
        pthread_cond_broadcast(&w->pcond);
        pthread_mutex_unlock(&w->pmu);
        pthread_join(w->pipeline, NULL);
    }
}

int wal_open(const char *dir,
             const struct wal_options *opts,
             struct wal **out,
             struct wal_recovered *rec,
             char *errmsg)
{
    struct wal_recovered dummy;
    rec = rec != NULL ? rec : &dummy;
    memset(rec, 0, sizeof *rec);
    struct wal *w = wal_new(opts);
    if (w == NULL) {
        if (errmsg != NULL) {
            snprintf(errmsg, WAL_ERRMSG_SIZE, "open %s: out of memory", dir);
        }
        return WAL_ENOMEM;
    }
    int rv = open_dir(w, dir);
    if (rv == 0) {
        rv = wal_recover(w, rec);
    }
    if (rv == 0) {
        w->w_last_index = wal_memtable_last(&w->mem);
        wal_memtable_term(&w->mem, w->w_last_index, &w->w_last_term);
        w->w_hs = w->hs;
        w->w_snap_index = w->snap_index;
        w->w_snap_term = w->snap_term;
        w->durable = (struct wal_durable){0, w->w_last_index, w->w_last_term, w->hs};
        rec->hs = w->hs;
        rec->snap_index = w->snap_index;
        rec->snap_term = w->snap_term;
        rec->first_index = wal_memtable_first(&w->mem);
        rec->last_index = w->w_last_index;
        rv = start_threads(w);
    }
    if (rv != 0) {
        if (errmsg != NULL) {
            snprintf(errmsg, WAL_ERRMSG_SIZE, "%s", w->errmsg);
        }
        stop_threads(w);
        wal_free_all(w);
        return rv;
    }
    *out = w;
    return 0;
}

void wal_close(struct wal *w)
{
    if (w == NULL) {
        return;
    }
    stop_threads(w);
    wal_free_all(w);
}
