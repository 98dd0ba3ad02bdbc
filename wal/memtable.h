/* The skiplist memtable: the in-memory, readable Raft log (index -> term, type, data).
 * Not thread-safe: every function is called by the one thread that owns the memtable (for the
 * WAL's memtable, the loop thread).  Allocates through wal_malloc. */
#ifndef KV_WAL_MEMTABLE_H
#define KV_WAL_MEMTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One log entry.  In inputs, @data is borrowed for the call; in outputs of
 * wal_memtable_entries() it points into the memtable (see there). */
struct wal_entry
{
    uint64_t index;   /* Raft log index, >= 1. */
    uint64_t term;    /* Raft term of the entry. */
    uint8_t type;     /* Caller-defined entry type (normal, conf change, ...), opaque here. */
    const void *data; /* Payload bytes; may be NULL when len == 0. */
    size_t len;       /* Payload length in bytes. */
};

struct wal_mnode; /* A skiplist node; private to memtable.c. */
struct wal_slab;  /* A chunk that small nodes are carved from; private to memtable.c. */

#define WAL_MEMTABLE_MAX_LEVEL 20

/* The memtable models etcd's MemoryStorage: a "dummy" position (snap_index, snap_term) marks the
 * compaction point; the readable entries are snap_index+1 .. last.  Keyed by index in a skiplist
 * that keeps a finger on the tail, so in-order appends (the common case) cost O(1) expected and
 * lookups O(log n).  Not thread-safe: one thread (the loop thread) owns it. */
struct wal_memtable
{
    struct wal_mnode *head[WAL_MEMTABLE_MAX_LEVEL]; /* First node at each level. */
    struct wal_mnode *tail[WAL_MEMTABLE_MAX_LEVEL]; /* Last node at each level (append finger). */
    int levels;                                     /* Levels in use, 0 when empty. */
    uint64_t snap_index;                            /* Compaction point: entries <= it are gone. */
    uint64_t snap_term;                             /* Term of the entry at snap_index. */
    uint64_t last;                                  /* Last index (== snap_index when empty). */
    size_t count;                                   /* Entries held. */
    size_t bytes;                                   /* Heap bytes held by nodes (accounting). */
    uint64_t rng;                                   /* xorshift state for node levels. */
    /* Read finger: the last node a read returned.  Raft reads mostly walk forward (term of the
     * previous entry, then the next entries), so lookups of it or its successor are O(1). */
    struct wal_mnode *finger;
    struct wal_slab *slab; /* Slab being filled with small nodes (the memtable holds a ref). */
};

/* Initialise an empty memtable whose compaction point is (0, 0).  Cannot fail. */
void wal_memtable_init(struct wal_memtable *m);

/* Free every node.  A no-op on a zeroed struct. */
void wal_memtable_fini(struct wal_memtable *m);

/* Append @n entries (indices must be consecutive).  Entries at or below the compaction point are
 * ignored; an entry index <= last first truncates the suffix from that index (Raft conflict
 * truncation).  Data is copied.
 * Errors: WAL_EINVAL if indices are not consecutive or the first one is > last + 1 (a gap);
 * WAL_ENOMEM.  On error the memtable is unchanged. */
int wal_memtable_append(struct wal_memtable *m, const struct wal_entry *ents, size_t n);

/* Drop every entry with index >= @index (no-op if @index > last).
 * Errors: WAL_ECOMPACTED if @index <= the compaction point. */
int wal_memtable_truncate(struct wal_memtable *m, uint64_t index);

/* The term of entry @index into @term (the compaction point's term for snap_index).
 * Errors: WAL_ECOMPACTED if @index < snap_index; WAL_EUNAVAILABLE if @index > last. */
int wal_memtable_term(const struct wal_memtable *m, uint64_t index, uint64_t *term);

/* Entries [@lo, @hi) into @out (room for @cap), stopping once their payload bytes would exceed
 * @max_bytes, but always at least one entry (etcd limitSize).  *@n gets the count.  Returned data
 * pointers are borrowed from the memtable until its next append, truncate, compact, snapshot or
 * fini.
 * Errors: WAL_ECOMPACTED if @lo <= snap_index; WAL_EUNAVAILABLE if @hi > last + 1 or the
 * memtable is empty; WAL_EINVAL if @lo > @hi. */
int wal_memtable_entries(const struct wal_memtable *m,
                         uint64_t lo,
                         uint64_t hi,
                         size_t max_bytes,
                         struct wal_entry *out,
                         size_t cap,
                         size_t *n);

/* First readable index (snap_index + 1). */
uint64_t wal_memtable_first(const struct wal_memtable *m);

/* Last index (snap_index when empty). */
uint64_t wal_memtable_last(const struct wal_memtable *m);

/* Discard entries <= @index; @index becomes the compaction point (etcd Compact).
 * Errors: WAL_ECOMPACTED if @index <= snap_index; WAL_EUNAVAILABLE if @index > last. */
int wal_memtable_compact(struct wal_memtable *m, uint64_t index);

/* Reset to a snapshot at (@index, @term): drops every entry (etcd ApplySnapshot).
 * Errors: WAL_ESNAPOLD if @index < snap_index. */
int wal_memtable_apply_snapshot(struct wal_memtable *m, uint64_t index, uint64_t term);

/* Heap bytes held by the entries (node headers, links and payloads). */
size_t wal_memtable_bytes(const struct wal_memtable *m);

#endif /* KV_WAL_MEMTABLE_H */
