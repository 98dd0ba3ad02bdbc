/* raft_memstore: an in-memory struct raft_storage with compaction, for tests and tools. */
#ifndef KV_RAFT_MEMSTORE_H
#define KV_RAFT_MEMSTORE_H

#include "raft/raft.h"

/* Entries after a snapshot point (etcd MemoryStorage).  Not thread-safe: the raft's thread owns
 * it.  Entry data is copied in and owned by the store. */
struct raft_memstore
{
    const struct raft_heap *heap; /* NULL: libc. */
    struct raft_hard_state hs;    /* Last persisted hard state. */
    struct raft_snap_meta snap;   /* Compaction point and its configuration. */
    struct raft_entry *ents;      /* ents[i].index == snap.index + 1 + i. */
    size_t n;
    size_t cap;
    struct raft_storage storage; /* The vtable; ctx is this struct. */
};

/* Initialise an empty store whose snapshot point is (0, 0) with configuration @conf (may be
 * NULL: empty, for a member that will be added later).  @heap may be NULL; it must outlive the
 * store.  Cannot fail. */
void raft_memstore_init(struct raft_memstore *m,
                        const struct raft_heap *heap,
                        const struct raft_conf *conf);

/* Free all entries.  A no-op on a zeroed struct. */
void raft_memstore_fini(struct raft_memstore *m);

/* Append @n consecutive entries, copying data; an index <= last truncates the suffix first.
 * Entries at or below the snapshot point are skipped.  Errors: RAFT_EINVAL (gap),
 * RAFT_ENOMEM (store unchanged). */
int raft_memstore_append(struct raft_memstore *m, const struct raft_entry *ents, size_t n);

/* Record the hard state.  Cannot fail. */
void raft_memstore_set_hard_state(struct raft_memstore *m, const struct raft_hard_state *hs);

/* Discard entries up to and including @index (<= last), keeping their term as the snapshot
 * point, with @conf (the membership at @index) as the snapshot configuration.  Errors:
 * RAFT_EINVAL (index beyond the last entry), RAFT_ECOMPACTED (already compacted). */
int raft_memstore_compact(struct raft_memstore *m, raft_index index, const struct raft_conf *conf);

/* Replace everything with the snapshot @meta (installing a snapshot from the leader): the whole
 * log is discarded, as etcd's MemoryStorage.ApplySnapshot does; the core resends what follows.
 * Errors: RAFT_ECOMPACTED (older than the current snapshot).  Cannot run out of memory. */
int raft_memstore_apply_snapshot(struct raft_memstore *m, const struct raft_snap_meta *meta);

/* Entry @i or NULL when it is not held. */
const struct raft_entry *raft_memstore_get(const struct raft_memstore *m, raft_index i);

/* Last index held (snapshot index when empty). */
raft_index raft_memstore_last(const struct raft_memstore *m);

/* Apply a Ready's persistence part (snapshot, entries, hard state) to @m, in order.  Errors as
 * raft_memstore_append(). */
int raft_memstore_persist(struct raft_memstore *m, const struct raft_ready *rd);

#endif /* KV_RAFT_MEMSTORE_H */
