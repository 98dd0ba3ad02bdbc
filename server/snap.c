/* Snapshots in the member: creation every --snapshot-count applied entries (apply thread), log
 * compaction behind them, streaming to a lagging follower on a connection of its own (a sender
 * thread per transfer), receiving (a receiver thread per inbound stream) and installing (apply
 * thread), all reported back to the loop as srv_done items.
 *
 * Order on a follower (raft/raft.h: the snapshot data must be in place before raft sees the
 * MsgSnap): receive and verify the files, install them as the new store (the store then skips
 * every entry at or below the snapshot index, so a race with the log is harmless), and only then
 * step the MsgSnap the leader sent at the end of the stream. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "server/srv_int.h"
#include "snapshot/snapshot.h"

#define SNAP_KEEP 3          /* snapshots kept on disk */
#define STREAM_IDLE_MS 30000 /* a transfer with no progress for this long is abandoned */
#define STREAM_SLICE_MS 100  /* waits look at bg_stop this often */
#define STREAM_MAX_FRAME (32u << 20)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- metadata ---- */

static void meta_to_conf(const struct snap_meta *m, struct raft_conf *c)
{
    memset(c, 0, sizeof *c);
    for (uint32_t i = 0; i < m->n_voters && i < RAFT_MAX_MEMBERS; i++) {
        c->voters[c->n_voters++] = m->voters[i];
    }
    for (uint32_t i = 0; i < m->n_learners && i < RAFT_MAX_MEMBERS; i++) {
        c->learners[c->n_learners++] = m->learners[i];
    }
}

/* A stored snapshot failed its check (@why): set it aside, never to be sent, installed or
 * counted again, and ask for a fresh one (a follower that needs a snapshot gets that one).
 * Callers other than start-up hold snap_mu (retention). */
static void set_aside(struct srv *s, const char *dir, const char *why)
{
    char to[PATH_MAX] = "", err[SNAP_ERRMSG_SIZE] = "";
    int rv = snap_set_aside(dir, to, err);
    if (rv == 0) {
        srv_log(SRV_LOG_WARN, "snap", "damaged snapshot: %s; set aside as %s", why, to);
    } else {
        srv_log(SRV_LOG_WARN, "snap", "damaged snapshot: %s; cannot set it aside: %s", why, err);
    }
    atomic_store(&s->snap_redo, true);
}

/* Check snapshot @dir whole (manifest, each file's size and crc32c) before it is sent or
 * installed; a damaged one is set aside.  @m (may be NULL) gets the manifest.  Returns 0 or the
 * snap_verify error, with the reason in @err (SNAP_ERRMSG_SIZE). */
static int check_snapshot(struct srv *s, const char *dir, struct snap_manifest *m, char *err)
{
    int rv = snap_verify(dir, m, err);
    /* A read error or no memory says nothing about the snapshot's content: keep it. */
    if (rv == SNAP_ECORRUPT || rv == SNAP_EMALFORMED || rv == SNAP_EVERSION) {
        set_aside(s, dir, err); /* the message names the file */
    }
    return rv;
}

/* Start-up: check every stored snapshot whole and set aside each damaged one, so that none is
 * ever sent to a follower or installed; the newest good one is then the member's.  A missing
 * manifest is a create or a removal that a crash interrupted, not damage (retention removes
 * it).  Reads every snapshot's files once: the tables are hard links shared with the store, so
 * this also reads most live tables into the page cache. */
static void check_stored(struct srv *s)
{
    struct snap_entry *v = NULL;
    size_t n = 0, checked = 0;
    char err[SNAP_ERRMSG_SIZE] = "";
    uint64_t t0 = srv_now_ms();
    if (snap_list(s->snap_root, &v, &n, err) != 0) {
        srv_log(SRV_LOG_WARN, "snap", "cannot list %s: %s", s->snap_root, err);
        return;
    }
    for (size_t i = n; i-- > 0;) {
        char name[64], dir[PATH_MAX];
        snap_dir_name(v[i].index, v[i].term, name, sizeof name);
        snprintf(dir, sizeof dir, "%s/%s", s->snap_root, name);
        if (v[i].status == SNAP_INCOMPLETE) {
            continue;
        }
        if (v[i].status == SNAP_BAD) {
            set_aside(s, dir, v[i].why); /* names the file */
        } else {
            checked++;
            check_snapshot(s, dir, NULL, err);
        }
    }
    free(v);
    srv_log(SRV_LOG_INFO, "snap", "checked %zu stored snapshots whole in %llu ms", checked,
            (unsigned long long)(srv_now_ms() - t0));
}

int srv_snap_init(struct srv *s, char *errmsg)
{
    snprintf(s->snap_root, sizeof s->snap_root, "%s/member/snap", s->cfg.data_dir);
    if (mkdir(s->snap_root, 0700) != 0 && errno != EEXIST) {
        snprintf(errmsg, SRV_ERRMSG, "mkdir %s: %s", s->snap_root, strerror(errno));
        return SRV_EIO;
    }
    check_stored(s);
    struct snap_manifest m;
    bool found = false;
    size_t skipped = 0;
    char err[SNAP_ERRMSG_SIZE] = "";
    int rv = snap_latest(s->snap_root, false, &found, &m, &skipped, err);
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "snapshots in %s: %s", s->snap_root, err);
        return SRV_EIO;
    }
    s->apply_conf = s->boot_conf;
    if (found) {
        s->snap_meta.index = m.meta.index;
        s->snap_meta.term = m.meta.term;
        meta_to_conf(&m.meta, &s->snap_meta.conf);
        s->last_snap_index = m.meta.index;
        snap_manifest_fini(&m);
        srv_log(SRV_LOG_INFO, "snap", "latest snapshot %llu-%llu (%zu unusable skipped)",
                (unsigned long long)s->snap_meta.index, (unsigned long long)s->snap_meta.term,
                skipped);
    }
    return 0;
}

bool srv_snap_use_at(struct srv *s, uint64_t index)
{
    struct snap_entry *v = NULL;
    size_t n = 0;
    char err[SNAP_ERRMSG_SIZE] = "";
    if (snap_list(s->snap_root, &v, &n, err) != 0) {
        return false;
    }
    bool found = false;
    for (size_t i = n; i-- > 0 && !found;) { /* newest first: the highest term at @index */
        if (v[i].index != index || v[i].status != SNAP_VALID) {
            continue;
        }
        char name[64], dir[PATH_MAX];
        snap_dir_name(v[i].index, v[i].term, name, sizeof name);
        snprintf(dir, sizeof dir, "%s/%s", s->snap_root, name);
        struct snap_manifest m;
        if (snap_verify(dir, &m, err) != 0) {
            srv_log(SRV_LOG_WARN, "snap", "snapshot %s: %s", name, err);
            continue;
        }
        s->snap_meta.index = m.meta.index;
        s->snap_meta.term = m.meta.term;
        meta_to_conf(&m.meta, &s->snap_meta.conf);
        s->last_snap_index = m.meta.index;
        snap_manifest_fini(&m);
        found = true;
        srv_log(SRV_LOG_INFO, "snap", "the store holds snapshot %s: using it, not a newer one",
                name);
    }
    free(v);
    return found;
}

/* ---- creation (apply thread) ---- */

void srv_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                char p[PATH_MAX];
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                if (unlink(p) != 0 && errno == EISDIR) {
                    srv_remove_tree(p);
                }
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static void names_free(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Every file name in @dir into *@names (malloc'ed, with each name; names_free), *@n of them.  All
 * or nothing: a snapshot made from a partial list would look valid and miss tables.
 * Errors: SRV_EIO, SRV_ENOMEM, with @err (SNAP_ERRMSG_SIZE).  The "snap_list" failpoint (error)
 * fails the allocation of one name, the way an exhausted heap would. */
static int list_files(struct srv *s, const char *dir, char ***names, size_t *n, char *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, SNAP_ERRMSG_SIZE, "list %s: %s", dir, strerror(errno));
        return SRV_EIO;
    }
    size_t cap = 64, k = 0;
    char **v = malloc(cap * sizeof *v);
    int rv = v != NULL ? 0 : SRV_ENOMEM;
    struct dirent *de;
    errno = 0;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char **nv = k < cap ? v : realloc(v, (cap *= 2) * sizeof *v);
        if (nv == NULL) {
            rv = SRV_ENOMEM;
            break;
        }
        v = nv;
        bool fail = SRV_FAILPOINT(s->cfg.member_id, "snap_list") == SRV_FP_ERROR;
        if ((v[k] = fail ? NULL : strdup(de->d_name)) == NULL) {
            rv = SRV_ENOMEM;
            break;
        }
        k++;
        errno = 0;
    }
    if (rv == 0 && errno != 0) {
        snprintf(err, SNAP_ERRMSG_SIZE, "list %s: %s", dir, strerror(errno));
        rv = SRV_EIO;
    }
    closedir(d);
    if (rv == SRV_ENOMEM) {
        snprintf(err, SNAP_ERRMSG_SIZE, "list %s: out of memory after %zu names", dir, k);
    }
    if (rv != 0) {
        names_free(v, k);
        return rv;
    }
    *names = v;
    *n = k;
    return 0;
}

/* Checkpoint the store into a new snapshot at its applied index.  Apply thread only. */
/* A checkpoint waiting to become a snapshot (phase 2 of snapshot creation). */
struct pending_snap
{
    struct srv *s;
    char tmp[PATH_MAX];
    struct snap_meta meta;
    struct raft_conf conf; /* meta's voter/learner arrays point in here */
    int64_t revision;
    uint64_t t0;
};

/* Phase 1, on the apply thread (it is what pauses the applies): checkpoint the store (flush
 * LevelDB's memtable, hard-link the tables: milliseconds) and write the member registry, auth
 * state and leases next to it, all as of the applied index.  NULL on failure (logged). */
static struct pending_snap *checkpoint(struct srv *s)
{
    struct pending_snap *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->s = s;
    p->t0 = now_ns();
    snprintf(p->tmp, sizeof p->tmp, "%s/member/checkpoint-%llu.tmp", s->cfg.data_dir,
             (unsigned long long)p->t0);
    struct lsm_status st;
    int rv = lsm_checkpoint(s->lsm, p->tmp, &st);
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "snap", "checkpoint failed: %s: %s", lsm_strerror(rv),
                lsm_errmsg(s->lsm));
        srv_remove_tree(p->tmp);
        free(p);
        return NULL;
    }
    p->conf = s->apply_conf;
    p->meta.index = st.applied_index;
    p->meta.term = st.applied_term;
    p->meta.revision = (uint64_t)st.revision;
    p->meta.compact_revision = (uint64_t)st.compact_revision;
    p->meta.voters = p->conf.voters;
    p->meta.n_voters = p->conf.n_voters;
    p->meta.learners = p->conf.learners;
    p->meta.n_learners = p->conf.n_learners;
    p->revision = st.revision;
    /* Where every member lives, who may do what, and the leases travel in the tables (the
     * store's state records). */
    s->last_snap_index = p->meta.index;
    return p;
}

/* Phase 2, off the apply thread: link the checkpoint into snap/<index>-<term>/ with its
 * checksummed manifest (snap_create reads every new table once for its CRC), keep the newest
 * few, tell the loop.  Frees @p.  @out_dir (PATH_MAX, may be NULL) gets the directory. */
static int finish_snapshot(struct pending_snap *p, char *out_dir)
{
    struct srv *s = p->s;
    char **names = NULL;
    size_t n = 0;
    struct snap_manifest m;
    memset(&m, 0, sizeof m);
    char err[SNAP_ERRMSG_SIZE] = "";
    int rv = list_files(s, p->tmp, &names, &n, err);
    if (rv != 0) {
        /* Abandoned before snap_create: no manifest, so nothing looks like a snapshot. */
        srv_log(SRV_LOG_WARN, "snap", "create snapshot %llu: abandoned: %s",
                (unsigned long long)p->meta.index, err);
        names_free(names, n);
        srv_remove_tree(p->tmp);
        free(p);
        return rv;
    }
    rv = snap_create(s->snap_root, &p->meta, p->tmp, (const char *const *)names, n, &m, err);
    names_free(names, n);
    srv_remove_tree(p->tmp);
    if (rv != 0 && rv != SNAP_EEXIST) {
        srv_log(SRV_LOG_WARN, "snap", "create snapshot %llu: %s: %s",
                (unsigned long long)p->meta.index, snap_strerror(rv), err);
        free(p);
        return rv;
    }
    if (rv == 0) {
        snap_manifest_fini(&m);
    }
    if (out_dir != NULL) {
        char name[64];
        snap_dir_name(p->meta.index, p->meta.term, name, sizeof name);
        snprintf(out_dir, PATH_MAX, "%s/%s", s->snap_root, name);
    }
    size_t removed = 0;
    pthread_mutex_lock(&s->snap_mu); /* retention vs. a client stream picking its directory */
    snap_retain(s->snap_root, SNAP_KEEP, &removed, err);
    pthread_mutex_unlock(&s->snap_mu);
    srv_hist_observe(&s->metrics.snap_create, (now_ns() - p->t0) / 1000);
    srv_log(SRV_LOG_INFO, "snap", "created snapshot %llu-%llu (revision %lld) in %.1f ms",
            (unsigned long long)p->meta.index, (unsigned long long)p->meta.term,
            (long long)p->revision, (double)(now_ns() - p->t0) / 1e6);
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_SNAP_CREATED;
        d->snap.index = p->meta.index;
        d->snap.term = p->meta.term;
        d->snap.conf = p->conf;
        srv_post_done(s, d);
    }
    free(p);
    return 0;
}

static void *finish_main(void *arg)
{
    struct pending_snap *p = arg;
    struct srv *s = p->s;
    finish_snapshot(p, NULL);
    atomic_store(&s->snap_building, false);
    return NULL;
}

bool srv_snap_due(struct srv *s, uint64_t applied)
{
    /* Not due, or the previous one is still being written. */
    return (applied >= s->last_snap_index + s->cfg.snapshot_count || atomic_load(&s->snap_redo)) &&
           !atomic_load(&s->snap_building);
}

void srv_snap_after_apply(struct srv *s, uint64_t applied)
{
    if (!srv_snap_due(s, applied)) {
        return;
    }
    atomic_store(&s->snap_redo, false);
    struct pending_snap *p = checkpoint(s);
    if (p == NULL) {
        return;
    }
    atomic_store(&s->snap_building, true);
    if (srv_bg_start(s, finish_main, p) != 0) {
        finish_snapshot(p, NULL);
        atomic_store(&s->snap_building, false);
    }
}

static int write_all(struct srv *s, int fd, const unsigned char *p, size_t n);

/* ---- streaming a snapshot to a client (Maintenance.Snapshot) ---- */

#define ARCHIVE_MAGIC "KVSNAP1"
#define STREAM_CHUNK (1u << 20)

struct client_stream
{
    struct srv *s;
    int fd;
    uint64_t frame_id;
    char dir[PATH_MAX];
    struct pending_snap *pending; /* finished by the stream thread */
};

static int send_blob(struct client_stream *cs, const void *p, size_t n, uint64_t remaining)
{
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = cs->s->cfg.cluster_id;
    h.member_id = cs->s->cfg.member_id;
    Kvdb__SnapshotResponse r;
    kvdb__snapshot_response__init(&r);
    r.header = &h;
    r.remaining_bytes = remaining;
    r.blob.data = (uint8_t *)p;
    r.blob.len = n;
    size_t blen = kvdb__snapshot_response__get_packed_size(&r);
    uint8_t *body = malloc(blen);
    if (body == NULL) {
        return SRV_ENOMEM;
    }
    kvdb__snapshot_response__pack(&r, body);
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = cs->frame_id;
    f.method = KVDB__METHOD__METHOD_SNAPSHOT;
    f.body.data = body;
    f.body.len = blen;
    struct pb_frame_writer w;
    pb_frame_writer_init(&w);
    int rv = pb_frame_writer_append(&w, &f.base);
    free(body);
    if (rv == 0) {
        const unsigned char *out;
        size_t len = pb_frame_writer_pending(&w, &out);
        rv = write_all(cs->s, cs->fd, out, len);
    }
    pb_frame_writer_fini(&w);
    return rv;
}

/* The archive: "KVSNAP1\0", u32 manifest length (LE), the manifest, then every file's bytes
 * in manifest order (sizes are in the manifest).  kvdb-snapshot reads it. */
static void *client_stream_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-snap-stream");
    struct client_stream *cs = arg;
    char path[PATH_MAX], err[SNAP_ERRMSG_SIZE] = "";
    struct snap_manifest m;
    memset(&m, 0, sizeof m);
    int rv = finish_snapshot(cs->pending, cs->dir);
    if (rv == 0) {
        /* Retention cannot remove it under us: its files are opened below under the lock. */
        pthread_mutex_lock(&cs->s->snap_mu);
        rv = check_snapshot(cs->s, cs->dir, &m, err);
    } else {
        pthread_mutex_lock(&cs->s->snap_mu);
    }
    uint8_t *man = NULL;
    size_t man_len = 0;
    int *fds = NULL;
    if (rv == 0) {
        snprintf(path, sizeof path, "%s/%s", cs->dir, SNAP_MANIFEST_NAME);
        FILE *f = fopen(path, "rb");
        man = malloc(1 << 20);
        man_len = f != NULL && man != NULL ? fread(man, 1, 1 << 20, f) : 0;
        if (f != NULL) {
            fclose(f);
        }
        fds = calloc(m.n_files + 1, sizeof *fds);
        rv = man_len == 0 || fds == NULL ? SRV_EIO : 0;
    }
    uint64_t total = 12 + man_len;
    for (uint32_t i = 0; rv == 0 && i < m.n_files; i++) {
        snprintf(path, sizeof path, "%s/%s", cs->dir, m.files[i].name);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        rv = fds[i] < 0 ? SRV_EIO : 0;
        total += m.files[i].size;
    }
    pthread_mutex_unlock(&cs->s->snap_mu);
    uint8_t *buf = rv == 0 ? malloc(STREAM_CHUNK + 12) : NULL;
    uint64_t sent = 0;
    if (rv == 0 && buf != NULL) {
        memcpy(buf, ARCHIVE_MAGIC, 8);
        wal_put_u32(buf + 8, (uint32_t)man_len);
        memcpy(buf + 12, man, man_len);
        sent = 12 + man_len;
        rv = send_blob(cs, buf, sent, total - sent);
        for (uint32_t i = 0; rv == 0 && i < m.n_files; i++) {
            uint64_t left = m.files[i].size;
            while (rv == 0 && left > 0) {
                size_t want = left < STREAM_CHUNK ? (size_t)left : STREAM_CHUNK;
                ssize_t got = read(fds[i], buf, want);
                if (got <= 0) {
                    rv = SRV_EIO;
                    break;
                }
                left -= (uint64_t)got;
                sent += (uint64_t)got;
                rv = send_blob(cs, buf, (size_t)got, total - sent);
            }
        }
    } else if (rv == 0) {
        rv = SRV_ENOMEM;
    }
    srv_log(rv == 0 ? SRV_LOG_INFO : SRV_LOG_WARN, "snap",
            "snapshot stream to a client: %s (%llu bytes)", rv == 0 ? "done" : "failed",
            (unsigned long long)sent);
    for (uint32_t i = 0; fds != NULL && i < m.n_files; i++) {
        if (fds[i] > 0) {
            close(fds[i]);
        }
    }
    snap_manifest_fini(&m);
    free(fds);
    free(man);
    free(buf);
    close(cs->fd);
    free(cs);
    return NULL;
}

/* Apply thread: checkpoint now (in order with the applies) and let a thread finish the
 * snapshot and stream it on @fd (a detached client connection). */
void srv_snap_stream_to_client(struct srv *s, int fd, uint64_t frame_id)
{
    struct client_stream *cs = calloc(1, sizeof *cs);
    struct pending_snap *p = cs != NULL ? checkpoint(s) : NULL;
    if (p == NULL) {
        free(cs);
        close(fd);
        return;
    }
    cs->s = s;
    cs->fd = fd;
    cs->frame_id = frame_id;
    cs->pending = p;
    if (srv_bg_start(s, client_stream_main, cs) != 0) {
        finish_snapshot(p, NULL);
        close(fd);
        free(cs);
    }
}

/* The loop learned of a new local snapshot: serve it to raft and compact the log behind it,
 * keeping --snapshot-catchup-entries for followers that are only a little behind. */
void srv_snap_created(struct srv *s, const struct raft_snap_meta *meta)
{
    if (meta->index > s->snap_meta.index) {
        s->snap_meta = *meta;
    }
    s->compact_to =
        meta->index > s->cfg.snapshot_catchup ? meta->index - s->cfg.snapshot_catchup : 0;
    srv_snap_compact(s);
}

void srv_snap_compact(struct srv *s)
{
    /* raft/raft.h: the storage may be compacted only between raft_advance() and raft_step(). */
    struct wal_memtable *mt = wal_memtable(s->wal);
    if (s->inflight || s->compact_to < wal_memtable_first(mt)) {
        return;
    }
    uint64_t to = s->compact_to, term = 0;
    if (to > wal_memtable_last(mt) || wal_memtable_term(mt, to, &term) != 0) {
        return;
    }
    int rv = wal_mark_snapshot(s->wal, to, term, NULL);
    if (rv != 0) {
        srv_fail(s, SRV_EIO, "compact the log to %llu: %s", (unsigned long long)to,
                 wal_strerror(rv));
    }
}

/* ---- blocking frame I/O for the stream threads ---- */

/* Wait up to @timeout_ms for @events on @fd, in short slices so that a closing member
 * (srv_close sets bg_stop, then waits for these threads) is not kept waiting: 1 ready, 0 timed
 * out, -1 error or stopping. */
static int wait_fd(struct srv *s, int fd, short events, int timeout_ms)
{
    for (int waited = 0;; waited += STREAM_SLICE_MS) {
        if (atomic_load(&s->bg_stop)) {
            return -1;
        }
        if (waited >= timeout_ms) {
            return 0;
        }
        struct pollfd pf = {.fd = fd, .events = events};
        int left = timeout_ms - waited;
        int pr = poll(&pf, 1, left < STREAM_SLICE_MS ? left : STREAM_SLICE_MS);
        if (pr > 0) {
            return 1;
        }
        if (pr < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int write_all(struct srv *s, int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(s, fd, POLLOUT, STREAM_IDLE_MS) <= 0) {
                return SRV_EIO;
            }
            continue;
        }
        if (w <= 0) {
            return SRV_EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Send one Batch frame with the given stream field (and optional messages). */
static int send_frame(struct srv *s,
                      int fd,
                      int field,
                      const void *data,
                      size_t len,
                      const struct raft_msg *msgs,
                      size_t n_msgs)
{
    struct pb_frame_writer w;
    pb_frame_writer_init(&w);
    int rv;
    if (n_msgs > 0) {
        rv = pb_batch_append(&w, s->cfg.cluster_id, s->cfg.member_id, msgs, n_msgs);
    } else {
        Kvdb__Raftpb__Batch b;
        kvdb__raftpb__batch__init(&b);
        b.cluster_id = s->cfg.cluster_id;
        b.from = s->cfg.member_id;
        ProtobufCBinaryData bin = {len, (uint8_t *)data};
        if (field == 4) {
            b.snap_manifest = bin;
        } else if (field == 5) {
            b.snap_chunk = bin;
        } else {
            b.snap_ack = bin;
        }
        rv = pb_frame_writer_append(&w, &b.base);
    }
    if (rv == 0) {
        const unsigned char *p;
        size_t plen = pb_frame_writer_pending(&w, &p);
        rv = write_all(s, fd, p, plen);
    }
    pb_frame_writer_fini(&w);
    return rv;
}

/* Read the next frame as a decoded Batch (caller frees with pb_batch_free), waiting up to
 * @timeout_ms.  Returns 0, PB_EAGAIN on timeout, or an error. */
static int recv_batch(struct srv *s,
                      int fd,
                      struct pb_frame_reader *rd,
                      int timeout_ms,
                      struct pb_batch *out)
{
    for (;;) {
        const unsigned char *p;
        size_t n;
        int rv = pb_frame_reader_next(rd, &p, &n);
        if (rv == 0) {
            char err[128];
            return pb_batch_decode(p, n, out, err, sizeof err);
        }
        if (rv != PB_EAGAIN) {
            return rv;
        }
        int pr = wait_fd(s, fd, POLLIN, timeout_ms);
        if (pr == 0) {
            return PB_EAGAIN;
        }
        unsigned char *buf;
        size_t room;
        if (pr < 0 || pb_frame_reader_space(rd, 1 << 20, &buf, &room) != 0) {
            return SRV_EIO;
        }
        ssize_t r = recv(fd, buf, room, 0);
        if (r <= 0) {
            return SRV_EIO;
        }
        pb_frame_reader_commit(rd, (size_t)r);
    }
}

/* ---- sending (a thread per transfer) ---- */

struct send_job
{
    struct srv *s;
    struct srv_url url;
    struct raft_msg msg; /* the MsgSnap to deliver after the data */
    char dir[PATH_MAX];
};

static int dial(const struct srv_url *u)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(u->port)};
    inet_pton(AF_INET, u->host, &sa.sin_addr);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Wait for the receiver's next ack and apply it.  Returns 0, PB_EAGAIN after @timeout_ms, or an
 * error. */
static int await_ack(struct srv *s,
                     struct snap_sender *snd,
                     int fd,
                     struct pb_frame_reader *rd,
                     int timeout_ms)
{
    struct pb_batch b;
    int rv = recv_batch(s, fd, rd, timeout_ms, &b);
    if (rv != 0) {
        return rv;
    }
    if (b.pb->snap_ack.len > 0) {
        rv = snap_sender_ack(snd, b.pb->snap_ack.data, b.pb->snap_ack.len);
    }
    pb_batch_free(&b);
    return rv;
}

static int stream_out(struct send_job *j, struct snap_sender *snd, int fd)
{
    struct srv *s = j->s;
    const void *man;
    size_t man_len;
    snap_sender_manifest(snd, &man, &man_len);
    struct pb_frame_reader rd;
    pb_frame_reader_init(&rd, STREAM_MAX_FRAME);
    int rv = send_frame(s, fd, 4, man, man_len, NULL, 0);
    if (rv == 0 && SRV_FAILPOINT(s->cfg.member_id, "snap_manifest_sent") == SRV_FP_ERROR) {
        rv = SRV_EIO;
    }
    /* The receiver answers the manifest with where to start (a resumed transfer skips what it
     * already holds); sending before that answer would only be rewound. */
    if (rv == 0) {
        rv = await_ack(s, snd, fd, &rd, STREAM_IDLE_MS);
    }
    uint64_t last_progress = now_ns();
    while (rv == 0 && !snap_sender_is_done(snd)) {
        if (atomic_load(&s->bg_stop)) {
            rv = SRV_EIO; /* the member is closing */
            break;
        }
        const void *chunk;
        size_t len;
        while (rv == 0 && (rv = snap_sender_next(snd, now_ns(), &chunk, &len)) == 0 &&
               chunk != NULL) {
            rv = send_frame(s, fd, 5, chunk, len, NULL, 0);
        }
        int r = rv == 0 ? await_ack(s, snd, fd, &rd, 200) : rv;
        if (r == 0) {
            last_progress = now_ns();
        } else if (r == PB_EAGAIN) {
            uint64_t idle = now_ns() - last_progress;
            if (idle > STREAM_IDLE_MS * 1000000ull) {
                rv = SRV_EIO;
            } else if (idle > 1000000000ull) {
                snap_sender_timeout(snd); /* a tail chunk or ack was lost: go back */
                last_progress = now_ns();
            }
        } else if (r != SNAP_ESTALE) {
            rv = r;
        }
    }
    if (rv == 0) {
        rv = send_frame(s, fd, 0, NULL, 0, &j->msg, 1);
    }
    pb_frame_reader_fini(&rd);
    return rv;
}

static void *sender_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-snap-send");
    struct send_job *j = arg;
    struct srv *s = j->s;
    char err[SNAP_ERRMSG_SIZE] = "";
    struct snap_sender *snd = NULL;
    uint64_t t0 = now_ns();
    /* Never send a damaged snapshot: the follower would refuse it at the end, and the next try
     * would send it again.  Under snap_mu, as retention could remove it meanwhile. */
    pthread_mutex_lock(&s->snap_mu);
    int rv = check_snapshot(s, j->dir, NULL, err);
    pthread_mutex_unlock(&s->snap_mu);
    if (rv == 0) {
        rv = snap_sender_open(j->dir, NULL, &snd, err);
    }
    if (rv == 0 && SRV_FAILPOINT(s->cfg.member_id, "snap_send") == SRV_FP_ERROR) {
        snprintf(err, sizeof err, "failpoint snap_send");
        rv = SRV_EIO;
    }
    int fd = rv == 0 ? dial(&j->url) : -1;
    if (rv == 0 && fd < 0) {
        snprintf(err, sizeof err, "connect %s: %s", j->url.text, strerror(errno));
        rv = SRV_EIO;
    }
    if (rv == 0) {
        rv = stream_out(j, snd, fd);
        if (rv != 0 && err[0] == '\0') {
            snprintf(err, sizeof err, "stream to %s broke", j->url.text);
        }
    }
    uint64_t sent = 0, wire = 0, total = 0;
    if (snd != NULL) {
        snap_sender_stats(snd, &sent, &wire, &total);
    }
    srv_log(rv == 0 ? SRV_LOG_INFO : SRV_LOG_WARN, "snap",
            "sending snapshot %llu to %llx: %s (%llu of %llu bytes, %llu on the wire, %.0f ms)",
            (unsigned long long)j->msg.snap.index, (unsigned long long)j->msg.to,
            rv == 0 ? "done" : err, (unsigned long long)sent, (unsigned long long)total,
            (unsigned long long)wire, (double)(now_ns() - t0) / 1e6);
    if (fd >= 0) {
        close(fd);
    }
    snap_sender_close(snd);
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_SNAP_SENT;
        d->peer = j->msg.to;
        d->ok = rv == 0;
        srv_post_done(s, d);
    }
    free(j);
    return NULL;
}

/* Leader: raft asked for a snapshot to be sent to @req->msg.to. */
bool srv_snap_send(struct srv *s, const struct raft_snap_req *req)
{
    struct srv_peer *p = srv_peer_find(s, req->msg.to);
    if (p == NULL || p->snap_sending || s->snap_meta.index == 0) {
        return false;
    }
    struct send_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        return false;
    }
    j->s = s;
    j->url = p->url;
    j->msg = req->msg;
    char name[64];
    snap_dir_name(s->snap_meta.index, s->snap_meta.term, name, sizeof name);
    snprintf(j->dir, sizeof j->dir, "%s/%s", s->snap_root, name);
    /* The snapshot that is sent is the one on disk now, whatever raft read before. */
    j->msg.snap = s->snap_meta;
    if (srv_bg_start(s, sender_main, j) != 0) {
        free(j);
        return false;
    }
    p->snap_sending = true;
    return true;
}

/* ---- receiving (a thread per inbound stream) ---- */

struct recv_job
{
    struct srv *s;
    int fd;
    struct pb_frame_reader rd; /* bytes already read by the loop */
    void *manifest;
    size_t manifest_len;
};

static int stream_in(struct recv_job *j,
                     struct snap_receiver **rp,
                     struct raft_msg *msg,
                     char *dir,
                     char *err)
{
    struct srv *s = j->s;
    unsigned char ack[SNAP_ACK_SIZE];
    if (SRV_FAILPOINT(s->cfg.member_id, "snap_recv") == SRV_FP_ERROR) {
        snprintf(err, SNAP_ERRMSG_SIZE, "failpoint snap_recv");
        return SRV_EIO;
    }
    int rv = snap_receiver_open(s->snap_root, j->manifest, j->manifest_len, NULL, rp, ack, err);
    if (rv == SNAP_EEXIST) {
        /* Already here: the ack says "complete", so the sender goes straight to the MsgSnap,
         * which the caller then waits for. */
        send_frame(s, j->fd, 6, ack, sizeof ack, NULL, 0);
        return rv;
    }
    if (rv != 0) {
        return rv;
    }
    rv = send_frame(s, j->fd, 6, ack, sizeof ack, NULL, 0);
    while (rv == 0) {
        struct pb_batch b;
        rv = recv_batch(s, j->fd, &j->rd, STREAM_IDLE_MS, &b);
        if (rv != 0) {
            snprintf(err, SNAP_ERRMSG_SIZE, "stream ended before the snapshot was complete");
            break;
        }
        if (b.pb->snap_chunk.len > 0) {
            snap_receiver_put(*rp, b.pb->snap_chunk.data, b.pb->snap_chunk.len, ack);
            rv = send_frame(s, j->fd, 6, ack, sizeof ack, NULL, 0);
        } else if (b.n_msgs == 1 && b.msgs[0].type == RAFT_MSG_SNAP) {
            *msg = b.msgs[0];
            msg->entries = NULL;
            msg->n_entries = 0;
            pb_batch_free(&b);
            rv = snap_receiver_finish(*rp, dir, NULL);
            if (rv != 0) {
                snprintf(err, SNAP_ERRMSG_SIZE, "%s", snap_receiver_errmsg(*rp));
            }
            return rv;
        }
        pb_batch_free(&b);
    }
    snap_receiver_sync(*rp); /* keep what arrived: the next attempt resumes from here */
    return rv;
}

static void *receiver_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-snap-recv");
    struct recv_job *j = arg;
    struct srv *s = j->s;
    struct snap_receiver *r = NULL;
    struct raft_msg msg;
    memset(&msg, 0, sizeof msg);
    char dir[PATH_MAX] = "", err[SNAP_ERRMSG_SIZE] = "";
    int rv = stream_in(j, &r, &msg, dir, err);
    if (rv == SNAP_EEXIST) {
        /* Wait for the MsgSnap that follows, then install what is already here. */
        struct pb_batch b;
        rv = recv_batch(s, j->fd, &j->rd, STREAM_IDLE_MS, &b);
        if (rv == 0 && b.n_msgs == 1 && b.msgs[0].type == RAFT_MSG_SNAP) {
            msg = b.msgs[0];
            char name[64];
            snap_dir_name(msg.snap.index, msg.snap.term, name, sizeof name);
            snprintf(dir, sizeof dir, "%s/%s", s->snap_root, name);
        } else if (rv == 0) {
            rv = SRV_EIO;
        }
        if (rv == 0) {
            pb_batch_free(&b);
        }
    }
    snap_receiver_close(r);
    close(j->fd);
    pb_frame_reader_fini(&j->rd);
    free(j->manifest);
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "snap", "receiving a snapshot failed: %s", err);
    } else {
        srv_log(SRV_LOG_INFO, "snap", "received snapshot %llu-%llu into %s",
                (unsigned long long)msg.snap.index, (unsigned long long)msg.snap.term, dir);
        struct srv_done *d = calloc(1, sizeof *d);
        if (d != NULL) {
            d->kind = SRV_DONE_SNAP_RECEIVED;
            d->msg = msg;
            d->dir = strdup(dir);
            srv_post_done(s, d);
        }
    }
    atomic_store(&s->snap_receiving, false);
    free(j);
    return NULL;
}

/* An inbound peer connection opened a snapshot stream: take its socket off the loop and give it
 * to a receiver thread.  Frees @b.  Returns false if the thread could not start. */
bool srv_snap_accept(struct srv_conn *c, struct pb_batch *b)
{
    struct srv *s = c->s;
    /* One transfer in at a time: two receivers of one snapshot share its temporary directory,
     * and one that starts over could replace files the other has just verified before it
     * renames the directory into place.  The refused sender retries. */
    if (atomic_exchange(&s->snap_receiving, true)) {
        pb_batch_free(b);
        return false;
    }
    struct recv_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        atomic_store(&s->snap_receiving, false);
        pb_batch_free(b);
        return false;
    }
    j->s = s;
    j->manifest_len = b->pb->snap_manifest.len;
    j->manifest = malloc(j->manifest_len);
    if (j->manifest == NULL) {
        atomic_store(&s->snap_receiving, false);
        free(j);
        pb_batch_free(b);
        return false;
    }
    memcpy(j->manifest, b->pb->snap_manifest.data, j->manifest_len);
    pb_batch_free(b);
    j->fd = srv_conn_detach(c, &j->rd); /* the connection now belongs to the thread */
    if (srv_bg_start(s, receiver_main, j) != 0) {
        atomic_store(&s->snap_receiving, false);
        close(j->fd);
        pb_frame_reader_fini(&j->rd);
        free(j->manifest);
        free(j);
        return false;
    }
    return true;
}

/* ---- installing (apply thread) ---- */

static int rename_dirs(const char *cur, const char *old, const char *next)
{
    srv_remove_tree(old);
    if (rename(cur, old) != 0 && errno != ENOENT) {
        return SRV_EIO;
    }
    if (rename(next, cur) != 0) {
        return SRV_EIO;
    }
    srv_remove_tree(old);
    return 0;
}

/* Replace the store by the snapshot in @dir, unless the store already holds @index.  Returns 0
 * when the store is at or past @index afterwards. */
int srv_snap_install(struct srv *s, const char *dir, uint64_t index, bool *fatal)
{
    *fatal = false;
    if (SRV_FAILPOINT(s->cfg.member_id, "snap_install") == SRV_FP_ERROR) {
        srv_log(SRV_LOG_WARN, "snap", "failpoint snap_install: not installing %s", dir);
        return SRV_EIO;
    }
    struct lsm_status st;
    lsm_status_get(s->lsm, &st);
    if (st.applied_index >= index) {
        return 0; /* the log got there first */
    }
    char db[PATH_MAX], next[PATH_MAX], old[PATH_MAX];
    snprintf(db, sizeof db, "%s/member/db", s->cfg.data_dir);
    snprintf(next, sizeof next, "%s/member/db.next", s->cfg.data_dir);
    snprintf(old, sizeof old, "%s/member/db.old", s->cfg.data_dir);
    srv_remove_tree(next);
    struct lsm_options lo;
    lsm_options_default(&lo);
    lo.max_txn_ops = s->cfg.max_txn_ops;
    lo.no_compression = s->cfg.backend_uncompressed;
    struct lsm_store *fresh = NULL;
    char err[256] = "";
    uint64_t t0 = now_ns();
    /* Checked again whatever the receiver found: one received earlier (already here when the
     * leader sent it again) may have been damaged on disk since. */
    struct snap_manifest m;
    pthread_mutex_lock(&s->snap_mu);
    int rv = check_snapshot(s, dir, &m, err);
    pthread_mutex_unlock(&s->snap_mu);
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "snap", "not installing %s: %s", dir, err);
        return SRV_EIO;
    }
    rv = lsm_open_from_tables(dir, next, &lo, &fresh, err);
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "snap", "build a store from %s: %s: %s", dir, lsm_strerror(rv), err);
        srv_remove_tree(next);
        snap_manifest_fini(&m);
        return SRV_EIO;
    }
    lsm_close(fresh);
    /* Swap under the write lock: readers see the old store or the new one.  A crash between the
     * renames leaves db.next complete, which srv_snap_recover_db() finishes. */
    pthread_rwlock_wrlock(&s->lsm_lock);
    lsm_close(s->lsm);
    s->lsm = NULL;
    rv = rename_dirs(db, old, next);
    int orv = lsm_open(db, &lo, &s->lsm, err);
    pthread_rwlock_unlock(&s->lsm_lock);
    if (rv != 0 || orv != 0) {
        srv_log(SRV_LOG_ERROR, "snap", "swapping in the snapshot store failed: %s", err);
        snap_manifest_fini(&m);
        *fatal = true;
        return SRV_EIO;
    }
    lsm_status_get(s->lsm, &st);
    /* Snapshots of older builds carry the state as files beside the tables. */
    static const char *const files[3] = {"AUTH", "LEASES", "MEMBERS"};
    char serr[SRV_ERRMSG] = "";
    if (srv_state_load(s, dir, files, false, serr) != 0) {
        srv_log(SRV_LOG_ERROR, "snap", "installed snapshot %s: %s", dir, serr);
        snap_manifest_fini(&m);
        *fatal = true; /* the store is the snapshot's, the state beside it is not */
        return SRV_EIO;
    }
    meta_to_conf(&m.meta, &s->apply_conf);
    snap_manifest_fini(&m);
    s->last_snap_index = st.applied_index;
    srv_log(SRV_LOG_INFO, "snap", "installed snapshot at index %llu (revision %lld) in %.0f ms",
            (unsigned long long)st.applied_index, (long long)st.revision,
            (double)(now_ns() - t0) / 1e6);
    return 0;
}

int srv_snap_recover_db(const char *data_dir)
{
    char db[PATH_MAX], next[PATH_MAX], old[PATH_MAX];
    snprintf(db, sizeof db, "%s/member/db", data_dir);
    snprintf(next, sizeof next, "%s/member/db.next", data_dir);
    snprintf(old, sizeof old, "%s/member/db.old", data_dir);
    struct stat sb;
    if (stat(db, &sb) != 0 && stat(next, &sb) == 0) {
        /* Crashed between the two renames: the new store is complete. */
        if (rename(next, db) != 0) {
            return SRV_EIO;
        }
    }
    srv_remove_tree(next);
    srv_remove_tree(old);
    return 0;
}
