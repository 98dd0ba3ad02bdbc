/* The LevelDB-backed MVCC state machine: etcd v3's keyspace with revisions, exactly-once apply. */
#ifndef KV_LSM_H
#define KV_LSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Data model (etcd v3 mvcc): every applied request that changes something gets the next main
 * revision; the sub-operations of one txn share it.  Each key carries create_revision,
 * mod_revision, version (1 on creation, +1 per put) and lease.  A delete writes a tombstone and
 * ends the key's generation (the next put creates it again with version 1).
 *
 * On-disk layout: lsm/FORMAT.md.
 *
 * Threads: one apply thread calls lsm_apply() (and lsm_checkpoint()); any number of threads may
 * call the read functions (lsm_range, lsm_events_read, lsm_hash_kv, lsm_status) at the same
 * time.  Reads never wait for an apply: each apply publishes a LevelDB snapshot together with its
 * revision, and a read pins the latest published one for its duration.  A background thread owned
 * by the store performs compaction in bounded batches.
 *
 * Durability: LevelDB writes are not synced.  The WAL is the durable source: after a crash the
 * store reopens at some applied index at or below the last one applied (each apply group is one
 * atomic LevelDB batch, so the state is always that of a whole group), lsm_status() reports it,
 * and the server replays the committed WAL entries after it through lsm_apply().  Entries at or
 * below the applied index are skipped, so replaying more than needed is harmless.
 */

#define LSM_ERRORS(X)                                                 \
    X(LSM_EIO, 200, "I/O error")                                      \
    X(LSM_ECORRUPT, 201, "corrupt store")                             \
    X(LSM_ENOMEM, 202, "out of memory")                               \
    X(LSM_EINVAL, 203, "invalid argument")                            \
    X(LSM_ECOMPACTED, 204, "required revision has been compacted")    \
    X(LSM_EFUTUREREV, 205, "required revision is a future revision")  \
    X(LSM_EEMPTYKEY, 206, "key is not provided")                      \
    X(LSM_EDUPKEY, 207, "duplicate key given in txn request")         \
    X(LSM_EKEYNOTFOUND, 208, "key not found")                         \
    X(LSM_ETOOMANYOPS, 209, "too many operations in txn request")     \
    X(LSM_EVALUEPROVIDED, 210, "value is provided with ignore_value") \
    X(LSM_ELEASEPROVIDED, 211, "lease is provided with ignore_lease") \
    X(LSM_EEXIST, 212, "target already exists")                       \
    X(LSM_ECLOSED, 213, "store is closing")

enum lsm_err {
#define X(code, num, msg) code = num,
    LSM_ERRORS(X)
#undef X
};

/* The message for an LSM_E* code ("unknown error" for others).  Any thread. */
const char *lsm_strerror(int code);

/* A borrowed byte string (request fields).  data may be NULL when len is 0. */
struct lsm_bytes
{
    const void *data;
    size_t len;
};

/* ---- Requests (mirror proto/kvdb.proto; all pointers borrowed for the call) ---- */

enum lsm_op_type {
    LSM_OP_RANGE = 1,
    LSM_OP_PUT,
    LSM_OP_DELETE_RANGE,
    LSM_OP_TXN,
    LSM_OP_COMPACT, /* top level only */
    LSM_OP_NOOP,    /* an entry without a request (leader no-op, conf change): index only */
};

enum lsm_sort_order { LSM_SORT_NONE = 1, LSM_SORT_ASCEND, LSM_SORT_DESCEND };
enum lsm_sort_target {
    LSM_SORT_KEY = 1,
    LSM_SORT_VERSION,
    LSM_SORT_CREATE,
    LSM_SORT_MOD,
    LSM_SORT_VALUE
};

/* Key ranges follow etcd: range_end empty = the single key; range_end = "\0" (one zero byte) =
 * every key >= key; otherwise [key, range_end).  A prefix query is [p, p with its last byte
 * incremented).  A key of "\0" with range_end "\0" means the whole keyspace. */
struct lsm_range_req
{
    struct lsm_bytes key;
    struct lsm_bytes range_end;
    int64_t limit;                    /* 0 = no limit */
    int64_t revision;                 /* 0 = current */
    enum lsm_sort_order sort_order;   /* 0 is taken as NONE */
    enum lsm_sort_target sort_target; /* 0 is taken as KEY */
    bool keys_only;
    bool count_only;
};

struct lsm_put_req
{
    struct lsm_bytes key;
    struct lsm_bytes value;
    int64_t lease; /* 0 = none */
    bool prev_kv;
    bool ignore_value; /* keep the current value (key must exist) */
    bool ignore_lease; /* keep the current lease (key must exist) */
};

struct lsm_delete_req
{
    struct lsm_bytes key;
    struct lsm_bytes range_end;
    bool prev_kv;
};

enum lsm_cmp_result { LSM_CMP_EQUAL = 1, LSM_CMP_GREATER, LSM_CMP_LESS, LSM_CMP_NOT_EQUAL };
enum lsm_cmp_target {
    LSM_CMP_VERSION = 1,
    LSM_CMP_CREATE,
    LSM_CMP_MOD,
    LSM_CMP_VALUE,
    LSM_CMP_LEASE
};

/* etcd applyCompare: the compare holds for every key in [key, range_end); over no keys it is
 * evaluated against an absent kv (all numbers 0) except VALUE, which then fails. */
struct lsm_compare
{
    enum lsm_cmp_result result;
    enum lsm_cmp_target target;
    struct lsm_bytes key;
    struct lsm_bytes range_end;
    int64_t number;         /* version / create / mod revision / lease */
    struct lsm_bytes value; /* for LSM_CMP_VALUE */
};

struct lsm_op;

struct lsm_txn_req
{
    const struct lsm_compare *compares;
    size_t n_compares;
    const struct lsm_op *success;
    size_t n_success;
    const struct lsm_op *failure;
    size_t n_failure;
};

struct lsm_compact_req
{
    int64_t revision;
};

/* One request: a RequestOp, or at top level also Compact / NOOP. */
struct lsm_op
{
    enum lsm_op_type type;
    union
    {
        struct lsm_range_req range;
        struct lsm_put_req put;
        struct lsm_delete_req del;
        struct lsm_txn_req txn;
        struct lsm_compact_req compact;
    } u;
};

/* A record of the member's replicated state outside the keyspace (leases, auth, membership,
 * alarms: whatever the server keeps beside the keys).  Written in the batch of the entry that
 * carries it, so it is atomic with that entry's effects and its applied index, and it travels
 * in the tables of every checkpoint.  It has no revision and is not part of HashKV. */
struct lsm_state_rec
{
    struct lsm_bytes name;  /* non-empty */
    struct lsm_bytes value; /* ignored when del */
    bool del;               /* remove the record (absent already: no-op) */
};

/* A committed raft entry: its position, its decoded request (NULL = no request) and the state
 * records it writes (@state[0..n_state), applied in order after the request; borrowed). */
struct lsm_entry
{
    uint64_t index;
    uint64_t term;
    const struct lsm_op *req;
    const struct lsm_state_rec *state;
    size_t n_state;
};

/* ---- Results (owned by the caller, released with the named function) ---- */

/* A key-value with its mvcc metadata.  key and value point into one allocation owned by the
 * enclosing result (key first; value follows).  value is NULL for keys_only results and delete
 * events. */
struct lsm_kv
{
    uint8_t *key;
    size_t key_len;
    uint8_t *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
};

struct lsm_result;

struct lsm_range_result
{
    struct lsm_kv *kvs;
    size_t n_kvs;
    bool more;     /* limited: more keys matched than returned */
    int64_t count; /* keys in the range at the revision, before the limit */
};

struct lsm_put_result
{
    bool has_prev;
    struct lsm_kv prev_kv;
};

struct lsm_delete_result
{
    int64_t deleted;
    struct lsm_kv *prev_kvs; /* only when prev_kv was asked */
    size_t n_prev_kvs;
};

struct lsm_txn_result
{
    bool succeeded;
    struct lsm_result *responses; /* one per executed op of the taken branch */
    size_t n_responses;
};

/* The response to one request.  err != 0 means the request failed and changed nothing (like an
 * etcd apply error); the raft entry still counts as applied.  Revisions: Put and a DeleteRange
 * that deleted something report their new revision, other requests the current one; a txn
 * reports its new revision if it changed anything, and its sub-responses carry the txn's. */
struct lsm_result
{
    enum lsm_op_type type;
    int err;          /* 0 or LSM_E* */
    bool skipped;     /* apply only: entry at or below the applied index, nothing done */
    int64_t revision; /* header revision (etcd ResponseHeader.revision) */
    union
    {
        struct lsm_range_result range;
        struct lsm_put_result put;
        struct lsm_delete_result del;
        struct lsm_txn_result txn;
    } u;
};

/* Release what a result owns (recursively); leaves it zeroed.  No-op on a zeroed result. */
void lsm_result_fini(struct lsm_result *res);

enum lsm_event_type { LSM_EVENT_PUT = 1, LSM_EVENT_DELETE };

/* A change for the watch hub.  For a delete, kv holds the key and mod_revision (the deletion's
 * revision) only, as in etcd.  prev_kv is the key's previous version in the same generation;
 * from lsm_events_read it is absent when compaction removed it (only possible for events at the
 * compact revision itself). */
struct lsm_event
{
    enum lsm_event_type type;
    struct lsm_kv kv;
    bool has_prev;
    struct lsm_kv prev_kv;
};

/* Release an array of @n events returned by lsm_apply or lsm_events_read.  NULL is fine. */
void lsm_events_free(struct lsm_event *events, size_t n);

/* The outcome of one lsm_apply call. */
struct lsm_apply_out
{
    struct lsm_result *results; /* one per input entry, in order */
    size_t n_results;
    struct lsm_event *events; /* every change of the group, in revision order */
    size_t n_events;
    int64_t revision;       /* current revision after the group */
    uint64_t applied_index; /* applied index after the group */
};

/* Release what an apply outcome owns; leaves it zeroed.  No-op on a zeroed struct. */
void lsm_apply_out_fini(struct lsm_apply_out *out);

/* ---- The store ---- */

struct lsm_options
{
    size_t block_cache_bytes;  /* LevelDB block cache; 0 = 8 MiB */
    int bloom_bits_per_key;    /* 0 = 10; negative = no bloom filter */
    size_t write_buffer_bytes; /* LevelDB memtable; 0 = 16 MiB (two may exist at once) */
    int max_open_files;        /* LevelDB table cache; 0 = 500 */
    size_t key_filter_bytes;   /* Bloom filter of existing keys, so puts of new keys skip a
                                * read; 0 = 8 MiB (about 10 bits per key at 6M keys; more
                                * keys only raise its false positives); see no_key_filter */
    bool no_key_filter;        /* no such filter: every put reads the key's current record */
    size_t max_file_bytes;     /* LevelDB table file size; 0 = 8 MiB (LevelDB's own default,
                                * 2 MiB, makes 1,600 tables at 10M keys: more than the table
                                * cache holds, and every miss reopens a table) */
    size_t max_txn_ops;        /* etcd --max-txn-ops; 0 = 128 */
    size_t compact_batch;      /* history entries deleted per compaction batch; 0 = 128 */
    bool no_compression;       /* new tables uncompressed; false = snappy.  Saves the snappy
                                * decompression on each put's read of the current record, at
                                * about twice the disk (docs/bench-server.md: faster with 200k
                                * keys, slower loads with 1M).  Tables of either kind stay
                                * readable. */
};

/* Fill @opts with the defaults above.  Any thread. */
void lsm_options_default(struct lsm_options *opts);

struct lsm_store;

/* Open (creating if missing) the store in directory @dir.  @opts may be NULL (defaults).  Starts
 * the compaction thread and resumes an unfinished compaction.  A directory is new only if it holds
 * no table, log or MANIFEST file: one that does but lacks a readable CURRENT naming an existing
 * MANIFEST is refused, never repaired or started afresh.
 * Errors: LSM_EIO (LevelDB could not open, e.g. its LOCK is held by another process: message in
 * @errmsg), LSM_ECORRUPT (CURRENT missing or garbled, MANIFEST or tables missing, a bad meta
 * record, another layout version, or LevelDB's paranoid checks found a damaged manifest, log or
 * table: @errmsg names the file or record where it can), LSM_ENOMEM.  On success *@out
 * is owned by the caller (lsm_close).  @errmsg (256 bytes, may be NULL) gets the context on
 * failure.  Any thread. */
int lsm_open(const char *dir, const struct lsm_options *opts, struct lsm_store **out, char *errmsg);

/* Stop the compaction thread (an unfinished compaction resumes at the next open) and close.
 * No other call may be running or follow.  NULL is a no-op. */
void lsm_close(struct lsm_store *s);

/* The last error message of the store's apply/checkpoint thread (reads return theirs through
 * their errmsg argument).  Valid until the next call on that thread. */
const char *lsm_errmsg(const struct lsm_store *s);

/* Apply committed entries @entries[0..n) in one atomic LevelDB batch, together with the new
 * applied (index, term), current revision and compaction mark.  Entries with index <= the
 * applied index are skipped (result.skipped).  Indexes must increase.  Per-request errors
 * (compacted, key not found, ...) go to the entry's result and do not fail the call.
 * @out receives results and events (caller releases with lsm_apply_out_fini, also on error).
 * Errors: LSM_EINVAL (indexes not increasing), LSM_EIO (the LevelDB write failed: nothing of
 * the group is applied; the store refuses further applies until reopened), LSM_ECORRUPT (a read
 * or the write met a damaged table or log, or a background scan of the store did earlier:
 * nothing applied; the message says what LevelDB found), LSM_ENOMEM (nothing applied; the same
 * group may be retried).  Readers see the group once this returns (it
 * publishes a new read view).  Apply thread only. */
int lsm_apply(struct lsm_store *s,
              const struct lsm_entry *entries,
              size_t n,
              struct lsm_apply_out *out);

/* Serve a Range request at the latest published state (the view the last lsm_apply published;
 * physical compaction done since then becomes visible with the next apply).  @out (zeroed by the
 * callee) gets the result; release it with lsm_result_fini.  Errors: LSM_ECOMPACTED,
 * LSM_EFUTUREREV, LSM_EEMPTYKEY, LSM_EIO, LSM_ECORRUPT (a block failed its checksum: nothing
 * of it is returned), LSM_ENOMEM; context in @errmsg (256 bytes, may be NULL).  Any thread. */
int lsm_range(struct lsm_store *s,
              const struct lsm_range_req *req,
              struct lsm_result *out,
              char *errmsg);

/* Watch catch-up: the events with revision >= @start_rev on keys in [key, range_end) (etcd range
 * rules), up to the current revision, in revision order.  Stops at a revision boundary once at
 * least @max_events (0 = no limit) are collected.  *@next_rev is the revision to continue from
 * (current + 1 when everything was returned).  The caller frees *@events with lsm_events_free.
 * Errors: LSM_ECOMPACTED (@start_rev below the compacted revision), LSM_EIO, LSM_ECORRUPT,
 * LSM_ENOMEM.
 * Any thread. */
int lsm_events_read(struct lsm_store *s,
                    struct lsm_bytes key,
                    struct lsm_bytes range_end,
                    int64_t start_rev,
                    size_t max_events,
                    struct lsm_event **events,
                    size_t *n_events,
                    int64_t *next_rev,
                    char *errmsg);

struct lsm_status
{
    uint64_t applied_index;
    uint64_t applied_term;
    int64_t revision;          /* current revision */
    int64_t compact_revision;  /* reads below it fail with LSM_ECOMPACTED */
    int64_t compacted_through; /* history physically removed up to here */
    uint64_t db_size_bytes;    /* bytes of files in the LevelDB directory (<= 1 s old) */
    bool key_filter_complete;  /* the key filter is in use (loaded, built, or a new store) */
};

/* The published state.  db_size_bytes comes from a directory scan done at most once a second
 * (cheap to call per request).  Any thread. */
void lsm_status_get(struct lsm_store *s, struct lsm_status *st);

/* Block until physical compaction reached @revision (etcd Compact physical=true) or the store
 * closes.  Returns 0, or LSM_ECLOSED.  Any thread but the apply thread of a pending compaction. */
int lsm_compact_wait(struct lsm_store *s, int64_t revision);

/* While @on, every finished history compaction is followed by a full LevelDB compaction on the
 * compaction thread, so that the space it freed shows in db_size_bytes at once (the member
 * turns this on while its NOSPACE alarm is raised).  Any thread. */
void lsm_set_reclaim(struct lsm_store *s, bool on);

/* etcd HashKV: a hash of every key version visible at revisions in [compact_revision, @rev]
 * (the versions a fully compacted member keeps), so members at the same applied state agree
 * whatever their physical compaction progress.  @rev 0 = current.  Fills *@hash, *@hash_rev (the
 * revision hashed) and *@compact_rev.  Errors: LSM_ECOMPACTED, LSM_EFUTUREREV, LSM_EIO,
 * LSM_ECORRUPT.
 * Any thread. */
int lsm_hash_kv(struct lsm_store *s,
                int64_t rev,
                uint32_t *hash,
                int64_t *hash_rev,
                int64_t *compact_rev,
                char *errmsg);

/* ---- Replicated state records (struct lsm_state_rec) ---- */

/* Call @fn for every state record whose name starts with @prefix (empty: all), in name order,
 * as the store holds them now (the apply thread's view: records of every applied group).  A
 * nonzero return of @fn stops the scan and is returned.  @name/@value are valid during the call.
 * Errors: LSM_EIO, LSM_ECORRUPT (message in @errmsg, 256 bytes, may be NULL).  Apply thread, or
 * any thread while no apply runs (start-up). */
int lsm_state_scan(struct lsm_store *s,
                   struct lsm_bytes prefix,
                   int (*fn)(void *arg, struct lsm_bytes name, struct lsm_bytes value),
                   void *arg,
                   char *errmsg);

/* Write @recs[0..n) outside any entry, synced, leaving the applied index alone: only for
 * bringing state kept elsewhere by an older build into the store at start.  Errors: LSM_EIO,
 * LSM_EINVAL (an empty name).  Apply thread, or any thread while no apply runs. */
int lsm_state_write(struct lsm_store *s, const struct lsm_state_rec *recs, size_t n, char *errmsg);

/* ---- Integrity ---- */

/* Check every live table file of @s whole: each block against its checksum, the index and the
 * footer, read by LevelDB's own table reader (its repair, run with paranoid checks on hard links
 * of the tables in the scratch directory <dir>.verify, so the store keeps serving meanwhile and
 * is never written).  Costs a read and a decode of every table: about 15 s per GB of tables on
 * the 2-core development machine (docs/architecture.md, "Corruption"): run it off the hot path.
 * Reads and applies check the blocks they touch anyway (paranoid checks and verify_checksums);
 * this finds damage in blocks nothing has read yet, and names the file, which LevelDB's own
 * read errors do not.  @stop (may be NULL) is asked with @arg between batches of 16 tables:
 * true ends the check with LSM_ECLOSED.  @n_tables (may be NULL): how many tables were checked.
 * Errors: LSM_ECORRUPT (@errmsg names the first damaged table and what LevelDB found),
 * LSM_EIO (a table could not be read or linked, or the scratch directory made), LSM_ENOMEM,
 * LSM_ECLOSED.  Any thread; not concurrently with lsm_close(). */
int lsm_verify(struct lsm_store *s,
               bool (*stop)(void *arg),
               void *arg,
               size_t *n_tables,
               char *errmsg);

/* ---- Snapshot support ---- */

/* Checkpoint the state into new directory @dir: pause applies and compaction, flush the LevelDB
 * memtable, hard-link the live table files (listed by the `leveldb.sstables` property) into @dir
 * and write @dir/LSM-CHECKPOINT (text: applied index, term, revision, compact revision and the
 * file list).  Fills @st with the checkpointed state (may be NULL).
 * Errors: LSM_EEXIST (@dir exists), LSM_EIO.  Apply thread only (it is what pauses applies). */
int lsm_checkpoint(struct lsm_store *s, const char *dir, struct lsm_status *st);

/* Build a fresh store in new directory @db_dir from the table files (*.ldb, *.sst) in
 * @tables_dir (a checkpoint, or a received snapshot): link (or copy) them, let LevelDB's repair
 * rebuild the manifest (reading every block with its checksum), compact everything out of level
 * 0, then open it.  The applied index read back is in lsm_status_get().  @tables_dir is left
 * untouched.  Errors: LSM_EEXIST (@db_dir exists), LSM_EIO, LSM_ECORRUPT (a damaged table,
 * named in @errmsg, or no applied index in the tables).  Any thread. */
int lsm_open_from_tables(const char *tables_dir,
                         const char *db_dir,
                         const struct lsm_options *opts,
                         struct lsm_store **out,
                         char *errmsg);

#endif /* KV_LSM_H */
