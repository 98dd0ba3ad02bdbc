/* Snapshots as sets of opaque table files: manifest, create, retention, chunked resumable
 * streaming (sender/receiver) and atomic install.  Formats: snapshot/FORMAT.md. */
#ifndef KV_SNAPSHOT_H
#define KV_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Errors ------------------------------------------------------------------------------ */

/* Error codes (code, value, message).  0 is success; every code is in 300..399. */
#define SNAP_ERRORS(X)                                                                   \
    X(SNAP_EINVAL, 301, "invalid argument")                                              \
    X(SNAP_ENOMEM, 302, "out of memory")                                                 \
    X(SNAP_EIO, 303, "I/O error")                                                        \
    X(SNAP_ENOSPC, 304, "no space left on device")                                       \
    X(SNAP_ECORRUPT, 305, "snapshot data does not match its checksums")                  \
    X(SNAP_EMALFORMED, 306, "malformed encoding")                                        \
    X(SNAP_EVERSION, 307, "unsupported format version")                                  \
    X(SNAP_ECHUNK, 308, "chunk rejected (corrupt): resend from the acknowledged offset") \
    X(SNAP_EGAP, 309, "chunk out of order: resend from the acknowledged offset")         \
    X(SNAP_ESTALE, 310, "message belongs to another snapshot")                           \
    X(SNAP_EEXIST, 311, "snapshot already exists")                                       \
    X(SNAP_EINCOMPLETE, 312, "transfer is not complete")                                 \
    X(SNAP_ECOMPRESS, 313, "compression failed")

enum snap_error {
#define SNAP_ERR_ENUM(name, value, msg) name = value,
    SNAP_ERRORS(SNAP_ERR_ENUM)
#undef SNAP_ERR_ENUM
};

/* Size of every errmsg buffer this module fills. */
#define SNAP_ERRMSG_SIZE 256

/* Static description of @code ("unknown error" for codes outside the module).  Any thread. */
const char *snap_strerror(int code);

/* ---- Limits ------------------------------------------------------------------------------ */

#define SNAP_NAME_MAX 255      /* longest file name in a snapshot */
#define SNAP_MEMBERS_MAX 4096  /* voters + learners */
#define SNAP_FILES_MAX 1000000 /* files in one snapshot */
#define SNAP_CHUNK_DEFAULT (1u << 20)
#define SNAP_CHUNK_MAX (16u << 20) /* largest raw chunk accepted on the wire */
#define SNAP_MANIFEST_NAME "MANIFEST"
#define SNAP_CHUNK_HEADER_SIZE 56
#define SNAP_ACK_SIZE 44

/* ---- Manifest ---------------------------------------------------------------------------- */

/* One table file of a snapshot. */
struct snap_file
{
    char name[SNAP_NAME_MAX + 1]; /* plain file name: no '/', not "." or ".." */
    uint64_t size;                /* bytes */
    uint32_t crc;                 /* crc32c of the whole content */
};

/* What a snapshot stands for.  Arrays are owned by whoever owns the enclosing struct. */
struct snap_meta
{
    uint64_t index;            /* last applied raft index included */
    uint64_t term;             /* term of that entry */
    uint64_t revision;         /* MVCC revision at @index */
    uint64_t compact_revision; /* MVCC compacted revision, <= @revision */
    uint64_t *voters;          /* voter member ids, non-zero, distinct */
    uint32_t n_voters;         /* >= 1 */
    uint64_t *learners;        /* learner member ids, non-zero, distinct, not voters */
    uint32_t n_learners;
};

/* A decoded manifest: the meta plus the file list.  Owns every array it points to. */
struct snap_manifest
{
    struct snap_meta meta;
    struct snap_file *files; /* in stream order */
    uint32_t n_files;
    uint32_t crc; /* crc32c trailer of the encoding: the snapshot's identity with index+term */
};

/* Free the arrays of @m and zero it.  A zeroed struct is a no-op.  Any thread. */
void snap_manifest_fini(struct snap_manifest *m);

/* Encode @m (its crc field is ignored) into a malloc'd buffer.
 * @out, @out_len: the encoding, owned by the caller (free()).  @crc_out (may be NULL): the trailer.
 * Errors: SNAP_EINVAL if @m breaks a rule that decode enforces (errmsg says which),
 * SNAP_ENOMEM.  Any thread. */
int snap_manifest_encode(const struct snap_manifest *m,
                         void **out,
                         size_t *out_len,
                         uint32_t *crc_out,
                         char *errmsg);

/* Decode and strictly validate @len bytes at @buf into @out (zeroed first; on error @out holds
 * nothing to free).  Every field, count, name and the trailing crc32c are checked, and trailing
 * bytes are refused.  Errors: SNAP_EMALFORMED, SNAP_EVERSION, SNAP_ECORRUPT (checksum),
 * SNAP_ENOMEM.  Any thread. */
int snap_manifest_decode(const void *buf, size_t len, struct snap_manifest *out, char *errmsg);

/* ---- Snapshot directories ---------------------------------------------------------------- */

/* A snapshot lives in <root>/<index:016x>-<term:016x>/ as its files plus MANIFEST.  Functions
 * here are blocking file-system work: call them off the event loop thread, and never on the same
 * root from two threads at once. */

/* Name of the directory of snapshot (@index, @term), written into @buf (>= 34 bytes). */
void snap_dir_name(uint64_t index, uint64_t term, char *buf, size_t size);

/* Create snapshot (@meta->index, @meta->term) under @root (created if missing) from the files
 * @names[0..@n_names) of @src_dir: each is hard-linked (copied only when link fails with EXDEV),
 * its size and crc32c computed, then the manifest is written atomically (tmp, fsync, rename,
 * fsync dir).  The files must be immutable once written (LevelDB tables are): a file that is
 * the same inode as in the newest valid snapshot under @root keeps that snapshot's checksum
 * instead of being read again, so creation reads only the tables written since.  A directory of
 * the same name without MANIFEST (a crashed create) is replaced.  On error the partial directory
 * is removed (best effort; a leftover is "incomplete" and ignored by snap_latest).
 * @out (may be NULL): receives the manifest, caller owns it (snap_manifest_fini).
 * Errors: SNAP_EINVAL (bad meta or names), SNAP_EEXIST, SNAP_EIO, SNAP_ENOSPC, SNAP_ENOMEM. */
int snap_create(const char *root,
                const struct snap_meta *meta,
                const char *src_dir,
                const char *const *names,
                size_t n_names,
                struct snap_manifest *out,
                char *errmsg);

/* Validity of one snapshot directory found by snap_list. */
enum snap_status {
    SNAP_VALID = 1,      /* manifest decodes and every file is there with its size */
    SNAP_INCOMPLETE = 2, /* no manifest: creation or removal did not finish */
    SNAP_BAD = 3,        /* corrupt manifest, or a file missing or of the wrong size */
};

struct snap_entry
{
    uint64_t index;
    uint64_t term;
    enum snap_status status;
    char why[SNAP_ERRMSG_SIZE]; /* for SNAP_INCOMPLETE / SNAP_BAD: what is wrong */
};

/* Snapshots under @root, oldest first (by index, then term).  Directories whose name is not a
 * snapshot name (temporary transfers, other files) are skipped.  A missing root is empty.
 * @out, @n_out: malloc'd array owned by the caller (free()), NULL when empty.
 * Errors: SNAP_EIO, SNAP_ENOMEM. */
int snap_list(const char *root, struct snap_entry **out, size_t *n_out, char *errmsg);

/* Verify snapshot directory @dir completely: manifest, then every file's size and crc32c.
 * @out (may be NULL): the manifest, caller owns it.
 * Errors: SNAP_ECORRUPT, SNAP_EMALFORMED, SNAP_EVERSION, SNAP_EIO, SNAP_ENOMEM. */
int snap_verify(const char *dir, struct snap_manifest *out, char *errmsg);

/* Find the newest valid snapshot under @root for startup.  Newer directories that are
 * incomplete or bad are skipped and counted in @n_skipped (each reported in @errmsg, last one
 * wins).  With @deep, the candidate's crc32c are verified too (snap_verify) and a failure makes
 * it skipped.  @found is false when there is none (not an error); otherwise @out is filled and
 * owned by the caller.  Errors: SNAP_EIO, SNAP_ENOMEM. */
int snap_latest(const char *root,
                bool deep,
                bool *found,
                struct snap_manifest *out,
                size_t *n_skipped,
                char *errmsg);

/* Retention: keep the newest @keep (>= 1) valid snapshots under @root; remove older valid ones
 * and every incomplete or bad one older than the newest valid one.  Removal unlinks MANIFEST
 * first so that a crash leaves an "incomplete" directory, never a valid-looking partial one.
 * @n_removed (may be NULL): directories removed.  Errors: SNAP_EINVAL, SNAP_EIO, SNAP_ENOMEM. */
int snap_retain(const char *root, size_t keep, size_t *n_removed, char *errmsg);

/* Set the snapshot directory @dir aside after it failed a check: rename it to <dir>.broken
 * (replacing an older directory of that name) and fsync its parent.  The name is not a
 * snapshot name, so nothing lists, sends, installs or removes it any more; it stays for a look.
 * @out (may be NULL, PATH_MAX bytes): the new path.
 * Errors: SNAP_EINVAL (@dir too long), SNAP_EIO, SNAP_ENOSPC. */
int snap_set_aside(const char *dir, char *out, char *errmsg);

/* ---- Wire messages ----------------------------------------------------------------------- */

/* A decoded chunk: a view into the buffer it was decoded from (no copy). */
struct snap_chunk
{
    uint64_t index, term;  /* snapshot identity */
    uint32_t manifest_crc; /* snapshot identity */
    uint32_t file;         /* index into the manifest's file list */
    uint64_t offset;       /* byte offset of the raw data in that file */
    uint32_t raw_len;      /* 1..SNAP_CHUNK_MAX */
    uint32_t raw_crc;      /* crc32c of the raw bytes */
    bool compressed;       /* payload is one zstd frame */
    const void *payload;   /* points into the decoded buffer */
    uint32_t payload_len;
};

/* Decode the chunk header of @len bytes at @buf and check its structure and header checksum.
 * The payload is not decompressed (snap_chunk_unpack does it).
 * Errors: SNAP_EMALFORMED, SNAP_EVERSION, SNAP_ECHUNK (header checksum).  Any thread. */
int snap_chunk_decode(const void *buf, size_t len, struct snap_chunk *out, char *errmsg);

/* Decompress (when compressed) the payload of @c into @raw (room for c->raw_len bytes) and check
 * its crc32c.  Errors: SNAP_ECHUNK.  Any thread. */
int snap_chunk_unpack(const struct snap_chunk *c, void *raw, char *errmsg);

/* What an acknowledgement asks of the sender. */
enum snap_ack_status {
    SNAP_ACK_OK = 1,     /* everything before (file, offset) is received */
    SNAP_ACK_RESEND = 2, /* a chunk was rejected: resend from (file, offset) */
    SNAP_ACK_RESUME = 3, /* (re)start of a session: send from exactly (file, offset) */
};

struct snap_ack
{
    enum snap_ack_status status;
    uint16_t session;      /* receiver instance (bumped at every open): a sender ignores acks of
                              an instance older than the one whose RESUME it last applied */
    uint64_t index, term;  /* snapshot identity */
    uint32_t manifest_crc; /* snapshot identity */
    uint32_t file;         /* next wanted position; file == n_files means complete */
    uint64_t offset;
};

/* Encode @a into @buf (SNAP_ACK_SIZE bytes).  Any thread. */
void snap_ack_encode(const struct snap_ack *a, unsigned char buf[SNAP_ACK_SIZE]);

/* Decode an ack.  Errors: SNAP_EMALFORMED, SNAP_EVERSION.  Any thread. */
int snap_ack_decode(const void *buf, size_t len, struct snap_ack *out, char *errmsg);

/* ---- Sender ------------------------------------------------------------------------------ */

struct snap_sender_opts
{
    uint32_t chunk_size; /* raw bytes per chunk; 0 = SNAP_CHUNK_DEFAULT; <= SNAP_CHUNK_MAX */
    uint32_t window;     /* chunks in flight beyond the last ack; 0 = 4 */
    int zstd_level;      /* 0 = 1 (see docs/bench-snap.md); negative = zstd fast levels */
    bool no_zstd;        /* send every chunk uncompressed (fast links, incompressible data) */
    uint64_t rate;       /* bytes/s of raw file data; 0 = unlimited */
    uint64_t burst;      /* token bucket depth in bytes; 0 = one chunk */
};

struct snap_sender;

/* Open a sender over the snapshot directory @dir: its MANIFEST is read and validated and every
 * file is opened and its size checked now, so the data stays readable even if retention
 * removes the directory during the transfer; data is read chunk by chunk as it is sent.
 * The sender starts at position (0, 0); a RESUME ack (or snap_sender_seek) moves it.
 * @out: owned by the caller, release with snap_sender_close.  @opts may be NULL.
 * Errors: SNAP_EINVAL, SNAP_EIO, SNAP_EMALFORMED, SNAP_EVERSION, SNAP_ECORRUPT, SNAP_ENOMEM.
 * A sender is used by one thread at a time (any thread, e.g. a snapshot worker). */
int snap_sender_open(const char *dir,
                     const struct snap_sender_opts *opts,
                     struct snap_sender **out,
                     char *errmsg);

/* Close @s (NULL is a no-op). */
void snap_sender_close(struct snap_sender *s);

/* The encoded manifest, to send first in a session so that the receiver can open.
 * Owned by @s; valid until snap_sender_close. */
void snap_sender_manifest(const struct snap_sender *s, const void **buf, size_t *len);

/* The decoded manifest of @s (owned by @s). */
const struct snap_manifest *snap_sender_manifest_info(const struct snap_sender *s);

/* Produce the next chunk to send, if the window and the rate limit allow.
 * @now_ns: caller's monotonic clock (only read when a rate is set).
 * @chunk, @len: the encoded chunk, owned by @s and valid until the next call; NULL when there is
 * nothing to send now (window full, rate limited, or everything sent).
 * Errors: SNAP_EIO (reading a file), SNAP_ECORRUPT (file shorter than the manifest says),
 * SNAP_ECOMPRESS; errmsg via snap_sender_errmsg. */
int snap_sender_next(struct snap_sender *s, uint64_t now_ns, const void **chunk, size_t *len);

/* Apply an ack from the receiver: OK advances the acknowledged position, RESEND rewinds to it
 * (once per position, so the RESENDs of the chunks already in flight do not rewind again),
 * RESUME moves both the acknowledged and next positions to it, even backwards.
 * Errors: SNAP_EMALFORMED, SNAP_EVERSION, SNAP_ESTALE (another snapshot, or an OK/RESEND of an
 * earlier receiver session still in flight after a RESUME: drop it), SNAP_EINVAL (a position
 * outside the snapshot). */
int snap_sender_ack(struct snap_sender *s, const void *buf, size_t len);

/* Go-back-N timer: nothing was acknowledged for a while (a chunk or ack was lost at the tail):
 * resend everything from the acknowledged position. */
void snap_sender_timeout(struct snap_sender *s);

/* Restart from a known acknowledged position (@file, @offset), e.g. after the sender process
 * restarted and learned it out of band.  Errors: SNAP_EINVAL (outside the snapshot). */
int snap_sender_seek(struct snap_sender *s, uint32_t file, uint64_t offset);

/* True when the receiver has acknowledged every byte. */
bool snap_sender_is_done(const struct snap_sender *s);

/* Nanoseconds until the rate limit allows the next chunk (0 when it already does). */
uint64_t snap_sender_wait_ns(const struct snap_sender *s, uint64_t now_ns);

/* Counters: raw file bytes and encoded chunk bytes produced so far (resends included), and the
 * snapshot's total raw size. */
void snap_sender_stats(const struct snap_sender *s,
                       uint64_t *sent_raw,
                       uint64_t *sent_wire,
                       uint64_t *total);

/* Context of the last error of @s. */
const char *snap_sender_errmsg(const struct snap_sender *s);

/* ---- Receiver ---------------------------------------------------------------------------- */

struct snap_receiver_opts
{
    uint64_t sync_bytes; /* checkpoint progress (fsync + PROGRESS) every this many bytes;
                            0 = 8 MiB.  A receiver restart re-receives at most this much.
                            1 makes every OK ack durable before it is sent: a restart resumes
                            exactly at the last ack, for one fsync per chunk. */
};

struct snap_receiver;

/* Open the receiving side of snapshot @manifest (@len bytes, as sent by the sender) under
 * @root.  Data goes to <root>/tmp-<index>-<term>/; if that directory holds the progress of the
 * same snapshot (same manifest crc), the transfer resumes from its last checkpoint, otherwise it
 * starts over.  Temporary directories of other snapshots are removed (one incoming transfer per
 * root).  @ack (SNAP_ACK_SIZE bytes): a RESUME ack to send back.  @opts may be NULL.
 * @out: owned by the caller: snap_receiver_finish, then snap_receiver_close.
 * Errors: SNAP_EMALFORMED, SNAP_EVERSION, SNAP_ECORRUPT (manifest), SNAP_EEXIST (the snapshot is
 * already installed: no receiver is returned, but @ack holds a RESUME at the end, which makes
 * the sender done at once: send it), SNAP_EIO, SNAP_ENOSPC, SNAP_ENOMEM.  One thread at a time. */
int snap_receiver_open(const char *root,
                       const void *manifest,
                       size_t len,
                       const struct snap_receiver_opts *opts,
                       struct snap_receiver **out,
                       unsigned char ack[SNAP_ACK_SIZE],
                       char *errmsg);

/* Close @r without installing (NULL is a no-op).  Progress is what was last checkpointed: close
 * does not checkpoint, so closing behaves like a crash (call snap_receiver_sync first for a
 * clean stop). */
void snap_receiver_close(struct snap_receiver *r);

/* Take one chunk.  @ack (SNAP_ACK_SIZE bytes) is always filled: send it back.
 * Returns 0 when the chunk was written or was an old duplicate (ack OK).
 * Errors: SNAP_ECHUNK (corrupt: ack RESEND from the acknowledged offset), SNAP_EGAP (a chunk
 * ahead of the acknowledged offset: something before it was lost; ack RESEND), SNAP_ESTALE
 * (another snapshot; ack OK of this one), SNAP_EMALFORMED, SNAP_EIO, SNAP_ENOSPC (the transfer
 * cannot go on: close and retry later). */
int snap_receiver_put(struct snap_receiver *r,
                      const void *chunk,
                      size_t len,
                      unsigned char ack[SNAP_ACK_SIZE]);

/* A RESUME ack at the acknowledged position, for a sender that (re)connects to a receiver that
 * stayed open (after a dropped connection or a sender restart).  @ack: SNAP_ACK_SIZE bytes. */
void snap_receiver_resume_ack(const struct snap_receiver *r, unsigned char ack[SNAP_ACK_SIZE]);

/* Checkpoint now: fsync the data written so far and persist the position.
 * Errors: SNAP_EIO, SNAP_ENOSPC. */
int snap_receiver_sync(struct snap_receiver *r);

/* True when every byte has been received. */
bool snap_receiver_is_complete(const struct snap_receiver *r);

/* Install: verify every file against the manifest (size + crc32c), fsync them, and rename the
 * temporary directory to <root>/<index>-<term> (then fsync @root).  A crash at any step leaves
 * either no new snapshot (the temporary directory, resumable) or the complete new one.
 * @ack (SNAP_ACK_SIZE bytes, may be NULL): on SNAP_ECORRUPT, a RESUME ack from the start of the
 * first bad file, whose progress is reset.  @out_dir (may be NULL, >= PATH_MAX bytes): the
 * installed directory.  Errors: SNAP_EINCOMPLETE, SNAP_ECORRUPT, SNAP_EIO, SNAP_ENOSPC. */
int snap_receiver_finish(struct snap_receiver *r, char *out_dir, unsigned char *ack);

/* Position acknowledged so far (@file == n_files when complete). */
void snap_receiver_position(const struct snap_receiver *r, uint32_t *file, uint64_t *offset);

/* Context of the last error of @r. */
const char *snap_receiver_errmsg(const struct snap_receiver *r);

/* ---- Fault injection (tests) ------------------------------------------------------------- */

/* File-system operations that go through the fault hook: every one that changes disk state. */
enum snap_fs_op {
    SNAP_FS_OPEN = 1, /* create or open for writing */
    SNAP_FS_WRITE,
    SNAP_FS_SYNC,
    SNAP_FS_RENAME,
    SNAP_FS_LINK,
    SNAP_FS_UNLINK,
    SNAP_FS_MKDIR,
    SNAP_FS_RMDIR,
    SNAP_FS_TRUNCATE,
};

/* Return 0 to let the operation run, or an errno value to make it fail with. */
typedef int (*snap_fs_fault_fn)(void *arg, enum snap_fs_op op, const char *path);

/* Install @fn (NULL removes it) for every later operation of this module, process-wide.
 * Tests only: not thread-safe, set it while no snapshot work runs. */
void snap_fs_fault_set(snap_fs_fault_fn fn, void *arg);

#endif /* KV_SNAPSHOT_H */
