/* Sender: cuts the files of a snapshot into checksummed, zstd-compressed chunks, go-back-N with
 * a window, resumable from any acknowledged position, optionally rate limited. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "snapshot/fs.h"
#include "snapshot/wire.h"
#include "wal/crc32c.h"

struct snap_sender
{
    char dir[PATH_MAX];
    struct snap_manifest m;
    void *menc; /* encoded manifest */
    size_t menc_len;
    uint64_t *prefix; /* prefix[i]: stream offset of file i; prefix[n_files]: total */
    struct snap_sender_opts o;
    uint64_t acked;      /* stream offset acknowledged by the receiver */
    uint64_t next;       /* stream offset of the next chunk to send */
    bool session_known;  /* a RESUME was applied: acks of other sessions are stale */
    uint16_t session;    /* the receiver session of that RESUME */
    bool rewound;        /* a rewind to rewound_at happened and nothing advanced since */
    uint64_t rewound_at; /* where that rewind went */
    int *fds;            /* every file, opened at open: pins the data against retention */
    unsigned char *raw;  /* chunk_size bytes */
    unsigned char *out;  /* header + compress bound */
    size_t out_cap;
    ZSTD_CCtx *cctx;
    double tokens;    /* token bucket (bytes); sending needs > 0 */
    uint64_t last_ns; /* clock of the last refill */
    bool clock_set;
    uint64_t sent_raw, sent_wire;
    char errmsg[SNAP_ERRMSG_SIZE];
};

static int setup(struct snap_sender *s, char *errmsg)
{
    uint32_t n = s->m.n_files;
    s->prefix = malloc((n + 1) * sizeof *s->prefix);
    if (s->prefix == NULL) {
        return SNAP_ENOMEM;
    }
    s->prefix[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (s->m.files[i].size > UINT64_MAX / 2 - s->prefix[i]) {
            snprintf(errmsg, SNAP_ERRMSG_SIZE, "sender %.200s: snapshot too large", s->dir);
            return SNAP_EINVAL;
        }
        s->prefix[i + 1] = s->prefix[i] + s->m.files[i].size;
    }
    s->out_cap = SNAP_CHUNK_HEADER_SIZE + ZSTD_compressBound(s->o.chunk_size);
    s->raw = malloc(s->o.chunk_size);
    s->out = malloc(s->out_cap);
    s->cctx = ZSTD_createCCtx();
    if (s->raw == NULL || s->out == NULL || s->cctx == NULL) {
        return SNAP_ENOMEM;
    }
    s->tokens = (double)s->o.burst;
    return 0;
}

static int set_opts(struct snap_sender *s, const struct snap_sender_opts *opts, char *errmsg)
{
    if (opts != NULL) {
        s->o = *opts;
    }
    if (s->o.chunk_size == 0) {
        s->o.chunk_size = SNAP_CHUNK_DEFAULT;
    }
    if (s->o.window == 0) {
        s->o.window = 4;
    }
    if (s->o.zstd_level == 0) {
        s->o.zstd_level = 1;
    }
    if (s->o.burst == 0) {
        s->o.burst = s->o.chunk_size;
    }
    if (s->o.chunk_size > SNAP_CHUNK_MAX || s->o.zstd_level > ZSTD_maxCLevel() ||
        s->o.zstd_level < ZSTD_minCLevel()) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "sender: chunk size or zstd level out of range");
        return SNAP_EINVAL;
    }
    return 0;
}

/* Open every file up front and check its size: a snapshot removed by retention while it is
 * being sent stays readable through these descriptors, and a damaged one fails here, early. */
static int open_files(struct snap_sender *s, char *errmsg)
{
    char path[PATH_MAX];
    s->fds = malloc((s->m.n_files + 1) * sizeof *s->fds);
    if (s->fds == NULL) {
        return SNAP_ENOMEM;
    }
    for (uint32_t i = 0; i < s->m.n_files; i++) {
        s->fds[i] = -1;
    }
    for (uint32_t i = 0; i < s->m.n_files; i++) {
        int rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", s->dir, s->m.files[i].name);
        if (rv != 0) {
            return rv;
        }
        s->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (s->fds[i] < 0 || fstat(s->fds[i], &st) != 0) {
            return snap_fs_fail(errmsg, "open", path, errno);
        }
        if ((uint64_t)st.st_size != s->m.files[i].size) {
            snprintf(errmsg, SNAP_ERRMSG_SIZE, "sender: %.200s: size differs from the manifest",
                     s->m.files[i].name);
            return SNAP_ECORRUPT;
        }
    }
    return 0;
}

int snap_sender_open(const char *dir,
                     const struct snap_sender_opts *opts,
                     struct snap_sender **out,
                     char *errmsg)
{
    *out = NULL;
    struct snap_sender *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SNAP_ENOMEM;
    }
    char path[PATH_MAX];
    int rv = snap_fs_path(s->dir, sizeof s->dir, errmsg, "%s", dir);
    if (rv == 0) {
        rv = set_opts(s, opts, errmsg);
    }
    if (rv == 0) {
        rv = snap_fs_path(path, sizeof path, errmsg, "%s/%s", dir, SNAP_MANIFEST_NAME);
    }
    if (rv == 0) {
        rv = snap_fs_read_file(path, SNAP_MANIFEST_READ_MAX, &s->menc, &s->menc_len, errmsg);
    }
    if (rv == 0) {
        rv = snap_manifest_decode(s->menc, s->menc_len, &s->m, errmsg);
    }
    if (rv == 0) {
        rv = setup(s, errmsg);
    }
    if (rv == 0) {
        rv = open_files(s, errmsg);
    }
    if (rv != 0) {
        snap_sender_close(s);
        return rv;
    }
    *out = s;
    return 0;
}

void snap_sender_close(struct snap_sender *s)
{
    if (s == NULL) {
        return;
    }
    for (uint32_t i = 0; s->fds != NULL && i < s->m.n_files; i++) {
        if (s->fds[i] >= 0) {
            close(s->fds[i]);
        }
    }
    free(s->fds);
    snap_manifest_fini(&s->m);
    free(s->menc);
    free(s->prefix);
    free(s->raw);
    free(s->out);
    ZSTD_freeCCtx(s->cctx);
    free(s);
}

void snap_sender_manifest(const struct snap_sender *s, const void **buf, size_t *len)
{
    *buf = s->menc;
    *len = s->menc_len;
}

const struct snap_manifest *snap_sender_manifest_info(const struct snap_sender *s)
{
    return &s->m;
}

/* The non-empty file holding stream offset @g (n_files when @g is the end). */
static uint32_t locate(const struct snap_sender *s, uint64_t g)
{
    uint32_t lo = 0, hi = s->m.n_files; /* last i in [0, n] with prefix[i] <= g */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (s->prefix[mid] <= g) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

static int to_stream(const struct snap_sender *s, uint32_t file, uint64_t off, uint64_t *g)
{
    if (file > s->m.n_files || (file == s->m.n_files && off != 0) ||
        (file < s->m.n_files && off > s->m.files[file].size)) {
        return SNAP_EINVAL;
    }
    *g = s->prefix[file] + off;
    return 0;
}

static void refill(struct snap_sender *s, uint64_t now_ns)
{
    if (s->clock_set && now_ns > s->last_ns) {
        s->tokens += (double)(now_ns - s->last_ns) * (double)s->o.rate / 1e9;
        if (s->tokens > (double)s->o.burst) {
            s->tokens = (double)s->o.burst;
        }
    }
    if (!s->clock_set || now_ns > s->last_ns) {
        s->last_ns = now_ns;
        s->clock_set = true;
    }
}

uint64_t snap_sender_wait_ns(const struct snap_sender *s, uint64_t now_ns)
{
    if (s->o.rate == 0) {
        return 0;
    }
    double t = s->tokens;
    if (s->clock_set && now_ns > s->last_ns) {
        t += (double)(now_ns - s->last_ns) * (double)s->o.rate / 1e9;
    }
    if (t > 0) {
        return 0;
    }
    return (uint64_t)((1.0 - t) * 1e9 / (double)s->o.rate) + 1;
}

static int read_at(struct snap_sender *s, uint32_t file, uint64_t off, uint32_t len)
{
    int fd = s->fds[file];
    uint32_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, s->raw + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return snap_fs_fail(s->errmsg, "read", s->m.files[file].name, errno);
        }
        if (r == 0) {
            snprintf(s->errmsg, sizeof s->errmsg, "read %.200s: shorter than the manifest says",
                     s->m.files[file].name);
            return SNAP_ECORRUPT;
        }
        got += (uint32_t)r;
    }
    return 0;
}

/* Build the chunk for [off, off+len) of @file into s->out; return its encoded size. */
static int build_chunk(struct snap_sender *s,
                       uint32_t file,
                       uint64_t off,
                       uint32_t len,
                       size_t *out_len)
{
    int rv = read_at(s, file, off, len);
    if (rv != 0) {
        return rv;
    }
    struct snap_chunk c = {.index = s->m.meta.index,
                           .term = s->m.meta.term,
                           .manifest_crc = s->m.crc,
                           .file = file,
                           .offset = off,
                           .raw_len = len,
                           .raw_crc = wal_crc32c(s->raw, len)};
    unsigned char *payload = s->out + SNAP_CHUNK_HEADER_SIZE;
    size_t z = len;
    if (!s->o.no_zstd) {
        z = ZSTD_compressCCtx(s->cctx, payload, s->out_cap - SNAP_CHUNK_HEADER_SIZE, s->raw, len,
                              s->o.zstd_level);
    }
    if (ZSTD_isError(z)) {
        snprintf(s->errmsg, sizeof s->errmsg, "zstd: %s", ZSTD_getErrorName(z));
        return SNAP_ECOMPRESS;
    }
    /* Table files are often compressed already: send them raw rather than grow them. */
    c.compressed = z < len;
    c.payload_len = c.compressed ? (uint32_t)z : len;
    if (!c.compressed) {
        memcpy(payload, s->raw, len);
    }
    snap_chunk_encode_header(&c, s->out);
    *out_len = SNAP_CHUNK_HEADER_SIZE + c.payload_len;
    return 0;
}

int snap_sender_next(struct snap_sender *s, uint64_t now_ns, const void **chunk, size_t *len)
{
    *chunk = NULL;
    *len = 0;
    uint64_t total = s->prefix[s->m.n_files];
    if (s->o.rate > 0) {
        refill(s, now_ns);
    }
    if (s->next >= total || s->next - s->acked >= (uint64_t)s->o.window * s->o.chunk_size ||
        (s->o.rate > 0 && s->tokens <= 0)) {
        return 0;
    }
    uint32_t file = locate(s, s->next);
    uint64_t off = s->next - s->prefix[file];
    uint64_t left = s->m.files[file].size - off;
    uint32_t n = left < s->o.chunk_size ? (uint32_t)left : s->o.chunk_size;
    int rv = build_chunk(s, file, off, n, len);
    if (rv != 0) {
        return rv;
    }
    *chunk = s->out;
    s->next += n;
    s->sent_raw += n;
    s->sent_wire += *len;
    if (s->o.rate > 0) {
        s->tokens -= n;
    }
    return 0;
}

int snap_sender_ack(struct snap_sender *s, const void *buf, size_t len)
{
    struct snap_ack a;
    uint64_t g;
    int rv = snap_ack_decode(buf, len, &a, s->errmsg);
    if (rv != 0) {
        return rv;
    }
    if (a.index != s->m.meta.index || a.term != s->m.meta.term || a.manifest_crc != s->m.crc) {
        snprintf(s->errmsg, sizeof s->errmsg, "ack for snapshot %llu/%llu, sending %llu/%llu",
                 (unsigned long long)a.index, (unsigned long long)a.term,
                 (unsigned long long)s->m.meta.index, (unsigned long long)s->m.meta.term);
        return SNAP_ESTALE;
    }
    if (to_stream(s, a.file, a.offset, &g) != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "ack position file %u offset %llu out of range",
                 (unsigned)a.file, (unsigned long long)a.offset);
        return SNAP_EINVAL;
    }
    if (a.status == SNAP_ACK_RESUME) {
        s->acked = s->next = g;
        s->rewound = false;
        s->session_known = true;
        s->session = a.session;
        return 0;
    }
    /* An ack of a receiver instance before the last RESUME describes data that instance may
     * have lost: applying it could skip bytes the new one never got. */
    if (s->session_known && a.session != s->session) {
        snprintf(s->errmsg, sizeof s->errmsg, "ack of receiver session %u, current %u",
                 (unsigned)a.session, (unsigned)s->session);
        return SNAP_ESTALE;
    }
    if (g > s->acked) {
        s->acked = g;
    }
    if (s->next < s->acked) {
        s->next = s->acked;
    }
    /* Every chunk in flight behind a lost one draws a RESEND for the same position: rewind once
     * (go-back-N); the timer covers a resent chunk that is lost again. */
    if (a.status == SNAP_ACK_RESEND && g == s->acked && s->next > g &&
        !(s->rewound && s->rewound_at == g)) {
        s->next = g;
        s->rewound = true;
        s->rewound_at = g;
    }
    return 0;
}

void snap_sender_timeout(struct snap_sender *s)
{
    s->next = s->acked;
    s->rewound = true;
    s->rewound_at = s->acked;
}

int snap_sender_seek(struct snap_sender *s, uint32_t file, uint64_t offset)
{
    uint64_t g;
    if (to_stream(s, file, offset, &g) != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "seek: file %u offset %llu out of range",
                 (unsigned)file, (unsigned long long)offset);
        return SNAP_EINVAL;
    }
    s->acked = s->next = g;
    s->rewound = false;
    return 0;
}

bool snap_sender_is_done(const struct snap_sender *s)
{
    return s->acked >= s->prefix[s->m.n_files];
}

void snap_sender_stats(const struct snap_sender *s,
                       uint64_t *sent_raw,
                       uint64_t *sent_wire,
                       uint64_t *total)
{
    *sent_raw = s->sent_raw;
    *sent_wire = s->sent_wire;
    *total = s->prefix[s->m.n_files];
}

const char *snap_sender_errmsg(const struct snap_sender *s)
{
    return s->errmsg;
}
