/* Segment files: listing, replay in sequence order, torn-tail repair, and starting new ones. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_int.h"

#define READ_CHUNK (4u << 20)

int wal_errno_code(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT:
        return WAL_ENOSPC;
    case ENOMEM:
        return WAL_ENOMEM;
    default:
        return WAL_EIO;
    }
}

uint32_t wal_chain_fold(uint32_t chain, const unsigned char *buf, size_t n)
{
    size_t off = 0;
    while (off + WAL_REC_HEADER_SIZE <= n) {
        chain = wal_crc32c_extend(chain, buf + off, 4);
        off += WAL_REC_HEADER_SIZE + wal_get_u32(buf + off + 8);
    }
    return chain;
}

int wal_dir_sync(struct wal *w, char *errmsg)
{
    int rv = w->fs->fsync(w->fs, w->dir_fd);
    if (rv != 0) {
        snprintf(errmsg, WAL_ERRMSG_SIZE, "fsync dir %s: %s", w->dir, strerror(rv));
        return wal_errno_code(rv);
    }
    return 0;
}

static void wal_log(struct wal *w, const char *line)
{
    if (w->opts.log != NULL) {
        w->opts.log(w->opts.log_ctx, line);
    } else {
        fprintf(stderr, "wal: %s\n", line);
    }
}

int wal_seg_start(struct wal *w,
                  int fd,
                  const char *path,
                  uint64_t seq,
                  uint64_t first,
                  uint32_t prev_chain,
                  uint32_t *chain,
                  off_t *off,
                  char *errmsg)
{
    unsigned char buf[WAL_SEG_HEADER_SIZE + 2 * WAL_REC_HEADER_SIZE + 24 + 16];
    struct wal_seg_header h = {WAL_VERSION, 0, seq, first, prev_chain};
    wal_seg_header_encode(buf, &h);
    size_t n = WAL_SEG_HEADER_SIZE;
    /* Restate the hard state and marker so that releasing older segments never loses them. */
    if (w->w_hs.term != 0 || w->w_hs.vote != 0 || w->w_hs.commit != 0) {
        wal_put_u64(buf + n + 16, w->w_hs.term);
        wal_put_u64(buf + n + 24, w->w_hs.vote);
        wal_put_u64(buf + n + 32, w->w_hs.commit);
        n += wal_rec_seal(buf + n, WAL_REC_HARD_STATE, 24);
    }
    if (w->w_snap_index != 0) {
        wal_put_u64(buf + n + 16, w->w_snap_index);
        wal_put_u64(buf + n + 24, w->w_snap_term);
        n += wal_rec_seal(buf + n, WAL_REC_SNAPSHOT, 16);
    }
    int rv = w->fs->pwrite(w->fs, fd, buf, n, 0);
    if (rv == 0) {
        rv = w->fs->fdatasync(w->fs, fd);
    }
    if (rv != 0) {
        snprintf(errmsg, WAL_ERRMSG_SIZE, "start segment %s: %s", path, strerror(rv));
        return wal_errno_code(rv);
    }
    *chain = wal_chain_fold(prev_chain, buf + WAL_SEG_HEADER_SIZE, n - WAL_SEG_HEADER_SIZE);
    *off = (off_t)n;
    return 0;
}

/* ---- Listing ---- */

struct found
{
    struct wal_seg_header h;
    int fd;
    off_t size;
    char path[WAL_PATH_MAX];
    char name[64];
};

static bool is_segment_name(const char *name)
{
    if (strncmp(name, "open-", 5) == 0) {
        return strlen(name) > 5;
    }
    return strlen(name) == 33 && name[16] == '-' && strspn(name, "0123456789abcdef-") == 33;
}

static int cmp_found(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    return x->h.seq < y->h.seq ? -1 : x->h.seq > y->h.seq;
}

static void found_free(struct wal *w, struct found *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i].fd >= 0) {
            w->fs->close(w->fs, f[i].fd);
        }
    }
    wal_free(f);
}

static int open_found(struct wal *w, struct found *f)
{
    int rv = w->fs->open(w->fs, f->path, O_RDWR, 0, &f->fd);
    if (rv == 0) {
        rv = w->fs->fsize(w->fs, f->fd, &f->size);
    }
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "open segment %s: %s", f->path, strerror(rv));
        return wal_errno_code(rv);
    }
    unsigned char buf[WAL_SEG_HEADER_SIZE];
    size_t got = 0;
    rv = w->fs->pread(w->fs, f->fd, buf, sizeof buf, 0, &got);
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "read segment %s: %s", f->path, strerror(rv));
        return wal_errno_code(rv);
    }
    const char *why = NULL;
    if (wal_seg_header_decode(buf, got, &f->h, &why) != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "segment %s: %s at offset 0", f->path, why);
        return WAL_ECORRUPT;
    }
    return 0;
}

/* Open every segment file of the directory (deleting leftover spare files), sorted by seq. */
static int list_segments(struct wal *w, struct found **out, size_t *n_out)
{
    DIR *d = opendir(w->dir);
    if (d == NULL) {
        snprintf(w->errmsg, sizeof w->errmsg, "opendir %s: %s", w->dir, strerror(errno));
        return wal_errno_code(errno);
    }
    struct found *f = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;
    struct dirent *de;
    while (rv == 0 && (de = readdir(d)) != NULL) {
        char path[WAL_PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", w->dir, de->d_name);
        if (strncmp(de->d_name, "tmp-", 4) == 0) {
            /* A spare that was never renamed into place holds nothing durable. */
            w->fs->unlink(w->fs, path);
            continue;
        }
        if (!is_segment_name(de->d_name)) {
            continue;
        }
        if (n == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            struct found *g = wal_realloc(f, cap * sizeof *f);
            if (g == NULL) {
                rv = WAL_ENOMEM;
                break;
            }
            f = g;
        }
        memset(&f[n], 0, sizeof f[n]);
        f[n].fd = -1;
        snprintf(f[n].path, sizeof f[n].path, "%s", path);
        snprintf(f[n].name, sizeof f[n].name, "%s", de->d_name);
        n++;
        rv = open_found(w, &f[n - 1]);
    }
    closedir(d);
    if (rv == 0 && n > 1) {
        qsort(f, n, sizeof *f, cmp_found);
    }
    for (size_t i = 1; rv == 0 && i < n; i++) {
        if (f[i].h.seq != f[i - 1].h.seq + 1) {
            snprintf(w->errmsg, sizeof w->errmsg,
                     "segment %s: seq %" PRIu64 " does not follow %" PRIu64 " (missing segment)",
                     f[i].path, f[i].h.seq, f[i - 1].h.seq);
            rv = WAL_ECORRUPT;
        }
    }
    if (rv != 0) {
        found_free(w, f, n);
        return rv;
    }
    *out = f;
    *n_out = n;
    return 0;
}

/* ---- Scanning one segment ---- */

/* A window over the file: records are decoded from memory, refilled in large reads. */
struct reader
{
    struct wal *w;
    int fd;
    off_t size;
    off_t base; /* File offset of buf[0]. */
    unsigned char *buf;
    size_t cap, len, pos;
};

/* Make @need bytes available at pos (fewer only at end of file).  0 or an errno value. */
static int ensure(struct reader *r, size_t need)
{
    if (r->len - r->pos >= need) {
        return 0;
    }
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    }
    r->base += (off_t)r->pos;
    r->len -= r->pos;
    r->pos = 0;
    /* Small files get a small buffer: reopening many small segments stays cheap. */
    off_t rest = r->size - r->base;
    size_t want = rest < (off_t)READ_CHUNK ? (size_t)(rest > 0 ? rest : 0) : READ_CHUNK;
    want = want < need ? need : want;
    if (want > r->cap) {
        unsigned char *b = wal_realloc(r->buf, want);
        if (b == NULL) {
            return ENOMEM;
        }
        r->buf = b;
        r->cap = want;
    }
    off_t at = r->base + (off_t)r->len;
    size_t room = r->cap - r->len;
    if (at >= r->size) {
        return 0;
    }
    if ((off_t)room > r->size - at) {
        room = (size_t)(r->size - at);
    }
    size_t got = 0;
    int rv = r->w->fs->pread(r->w->fs, r->fd, r->buf + r->len, room, at, &got);
    r->len += got;
    return rv;
}

struct scan
{
    off_t end;          /* End of the valid records. */
    enum wal_scan stop; /* END (clean) or where damage starts: TORN / BAD. */
    const char *why;
    uint64_t min_index;
    uint32_t chain;
    uint64_t bytes;
    bool semantic; /* Stopped at a valid record that does not apply. */
};

/* After a zero header, the rest must be zeros too (preallocated space), else it is damage. */
static int check_zero_rest(struct reader *r, struct scan *sc)
{
    for (;;) {
        for (size_t i = r->pos; i < r->len; i++) {
            if (r->buf[i] != 0) {
                sc->stop = WAL_SCAN_BAD;
                sc->why = "non-zero bytes after the end of the records";
                return 0;
            }
        }
        r->pos = r->len;
        if (r->base + (off_t)r->len >= r->size) {
            return 0;
        }
        int rv = ensure(r, 1);
        if (rv != 0) {
            return rv;
        }
    }
}

static int scan_records(struct reader *r, struct wal_replay *st, struct scan *sc)
{
    for (;;) {
        int rv = ensure(r, WAL_REC_HEADER_SIZE);
        const unsigned char *p = r->buf + r->pos;
        size_t avail = r->len - r->pos;
        if (rv == 0 && avail >= WAL_REC_HEADER_SIZE &&
            wal_get_u32(p) == wal_crc32c(p + 4, WAL_REC_HEADER_SIZE - 4)) {
            uint32_t len = wal_get_u32(p + 8);
            rv = ensure(r, WAL_REC_HEADER_SIZE + (len > WAL_REC_MAX ? 0 : len));
            p = r->buf + r->pos;
            avail = r->len - r->pos;
        }
        if (rv != 0) {
            return rv;
        }
        sc->end = r->base + (off_t)r->pos;
        struct wal_rec rec;
        sc->stop = wal_rec_decode(p, avail, &rec, &sc->why);
        if (sc->stop == WAL_SCAN_END) {
            return check_zero_rest(r, sc);
        }
        if (sc->stop != WAL_SCAN_RECORD) {
            return 0;
        }
        if (rec.type == WAL_REC_ENTRIES && wal_get_u64(rec.payload) < sc->min_index) {
            sc->min_index = wal_get_u64(rec.payload);
        }
        rv = wal_replay_apply(st, &rec, &sc->why);
        if (rv == WAL_ENOMEM) {
            return ENOMEM;
        }
        if (rv != 0) {
            /* A record with valid checksums that does not fit the log is never a torn write
             * (tails are cut at open, so no stale record can follow): always corruption. */
            sc->stop = WAL_SCAN_BAD;
            sc->semantic = true;
            return 0;
        }
        sc->chain = wal_crc32c_extend(sc->chain, p, 4);
        sc->bytes += rec.size;
        r->pos += rec.size;
    }
}

static int scan_segment(struct wal *w, struct found *f, struct wal_replay *st, struct scan *sc)
{
    struct reader r = {w, f->fd, f->size, 0, NULL, 0, 0, 0};
    memset(sc, 0, sizeof *sc);
    sc->min_index = UINT64_MAX;
    sc->chain = f->h.chain;
    int rv = ensure(&r, WAL_SEG_HEADER_SIZE);
    if (rv == 0) {
        r.pos = WAL_SEG_HEADER_SIZE;
        rv = scan_records(&r, st, sc);
    }
    wal_free(r.buf);
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "read segment %s: %s", f->path, strerror(rv));
        return wal_errno_code(rv);
    }
    return 0;
}

/* Cut a damaged tail off the last segment (tolerate-tail mode) and make it appendable again. */
static int repair_tail(struct wal *w, struct found *f, const struct scan *sc)
{
    char line[WAL_ERRMSG_SIZE + 64];
    snprintf(line, sizeof line, "segment %s: %s at offset %lld: truncating %lld torn bytes",
             f->path, sc->why, (long long)sc->end, (long long)(f->size - sc->end));
    wal_log(w, line);
    int rv = w->fs->ftruncate(w->fs, f->fd, sc->end);
    if (rv == 0 && !w->opts.no_prealloc) {
        /* Restore zeroed preallocated space; a file system without fallocate is fine too. */
        int frv = w->fs->fallocate(w->fs, f->fd, (off_t)w->opts.segment_size);
        rv = frv == EOPNOTSUPP ? 0 : frv;
    }
    if (rv == 0) {
        rv = w->fs->fdatasync(w->fs, f->fd);
    }
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "truncate segment %s: %s", f->path, strerror(rv));
        return wal_errno_code(rv);
    }
    return 0;
}

int wal_closed_add(struct wal *w, const struct wal_seg *s)
{
    if (w->n_closed == w->cap_closed) {
        size_t cap = w->cap_closed == 0 ? 16 : w->cap_closed * 2;
        struct wal_seg *c = wal_realloc(w->closed, cap * sizeof *c);
        if (c == NULL) {
            return WAL_ENOMEM;
        }
        w->closed = c;
        w->cap_closed = cap;
    }
    w->closed[w->n_closed++] = *s;
    return 0;
}

/* A replayed segment that is not the last: rename a leftover open-<n> (crash during a cut) to
 * its closed name and remember it for release. */
static int keep_closed(struct wal *w, struct found *f, const struct scan *sc)
{
    struct wal_seg s;
    s.seq = f->h.seq;
    s.first = sc->min_index != UINT64_MAX ? sc->min_index : f->h.first_index;
    s.last = wal_memtable_last(&w->mem);
    snprintf(s.path, sizeof s.path, "%s", f->path);
    if (strncmp(f->name, "open-", 5) == 0) {
        snprintf(s.path, sizeof s.path, "%s/%016" PRIx64 "-%016" PRIx64, w->dir, s.first, s.last);
        int rv = w->fs->rename(w->fs, f->path, s.path);
        if (rv != 0) {
            snprintf(w->errmsg, sizeof w->errmsg, "rename %s: %s", f->path, strerror(rv));
            return wal_errno_code(rv);
        }
    }
    return wal_closed_add(w, &s);
}

static int replay_one(struct wal *w,
                      struct found *f,
                      bool last,
                      struct wal_replay *st,
                      uint32_t *chain,
                      struct wal_recovered *rec)
{
    struct scan sc;
    int rv = scan_segment(w, f, st, &sc);
    if (rv != 0) {
        return rv;
    }
    rec->bytes += sc.bytes;
    bool damaged = sc.stop != WAL_SCAN_END;
    if (damaged && (!last || sc.semantic || w->opts.recovery == WAL_RECOVER_STRICT)) {
        snprintf(w->errmsg, sizeof w->errmsg, "segment %s: %s at offset %lld", f->path, sc.why,
                 (long long)sc.end);
        return WAL_ECORRUPT;
    }
    *chain = sc.chain;
    if (!last) {
        return keep_closed(w, f, &sc);
    }
    if (damaged) {
        rec->torn_bytes = (uint64_t)(f->size - sc.end);
        rv = repair_tail(w, f, &sc);
        if (rv != 0) {
            return rv;
        }
    }
    w->cur.fd = f->fd;
    f->fd = -1;
    w->cur.seq = f->h.seq;
    w->cur.first = f->h.first_index;
    w->cur.min_index = sc.min_index;
    w->cur.off = sc.end;
    w->cur.chain = sc.chain;
    snprintf(w->cur.path, sizeof w->cur.path, "%s", f->path);
    return 0;
}

/* An empty directory: the first segment, seq 1, starting at index 1. */
static int create_first(struct wal *w)
{
    char tmp[WAL_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp-init", w->dir);
    snprintf(w->cur.path, sizeof w->cur.path, "%s/open-%016x", w->dir, 1u);
    int fd = -1;
    int rv = w->fs->open(w->fs, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644, &fd);
    if (rv != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "create %s: %s", tmp, strerror(rv));
        return wal_errno_code(rv);
    }
    if (!w->opts.no_prealloc) {
        /* Like the spares: appends into reserved space need no size update per sync. */
        rv = w->fs->fallocate(w->fs, fd, (off_t)w->opts.segment_size);
        if (rv != 0 && rv != EOPNOTSUPP) {
            w->fs->close(w->fs, fd);
            snprintf(w->errmsg, sizeof w->errmsg, "preallocate %s: %s", tmp, strerror(rv));
            return wal_errno_code(rv);
        }
    }
    w->cur.fd = fd;
    w->cur.seq = 1;
    w->cur.first = 1;
    w->cur.min_index = UINT64_MAX;
    rv = wal_seg_start(w, fd, tmp, 1, 1, 0, &w->cur.chain, &w->cur.off, w->errmsg);
    if (rv != 0) {
        return rv;
    }
    int err = w->fs->rename(w->fs, tmp, w->cur.path);
    if (err != 0) {
        snprintf(w->errmsg, sizeof w->errmsg, "rename %s: %s", tmp, strerror(err));
        return wal_errno_code(err);
    }
    return wal_dir_sync(w, w->errmsg);
}

int wal_recover(struct wal *w, struct wal_recovered *rec)
{
    struct found *f = NULL;
    size_t n = 0;
    int rv = list_segments(w, &f, &n);
    if (rv != 0) {
        return rv;
    }
    struct wal_replay st = {.mem = &w->mem};
    uint32_t chain = 0;
    w->cur.fd = -1;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        if (i == 0 && f[i].h.first_index > 1) {
            /* Older segments were released: the log starts after a snapshot whose marker is
             * restated below (term unknown until then). */
            wal_memtable_apply_snapshot(&w->mem, f[i].h.first_index - 1, 0);
        } else if (i > 0 && f[i].h.chain != chain) {
            snprintf(w->errmsg, sizeof w->errmsg,
                     "segment %s: crc chain mismatch at offset 0 (previous segment damaged or "
                     "replaced)",
                     f[i].path);
            rv = WAL_ECORRUPT;
            break;
        }
        rv = replay_one(w, &f[i], i + 1 == n, &st, &chain, rec);
    }
    found_free(w, f, n);
    if (rv == 0 && n == 0) {
        rv = create_first(w);
    } else if (rv == 0 && n > 1) {
        /* keep_closed may have renamed a leftover open- file: make the name durable. */
        rv = wal_dir_sync(w, w->errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    rec->segments = (unsigned)n;
    w->hs = (struct wal_hard_state){st.hs_term, st.hs_vote, st.hs_commit};
    w->snap_index = st.snap_index;
    w->snap_term = st.snap_term;
    return rv;
}
