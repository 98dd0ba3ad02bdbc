/* Framing, checksums and decoding of WAL segments and records (layout in wal/FORMAT.md).
 * Pure functions over caller buffers: any thread; used by the WAL, kvdb-waldump and the fuzz
 * target.  Decoders never read past the length they are given. */
#ifndef KV_WAL_FORMAT_H
#define KV_WAL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wal/memtable.h"

#define WAL_MAGIC "KVDBWAL" /* 8 bytes with the NUL. */
#define WAL_VERSION 1u
#define WAL_SEG_HEADER_SIZE 40u     /* magic, version, flags, seq, first index, chain, crc. */
#define WAL_REC_HEADER_SIZE 16u     /* hcrc, pcrc, len, type, flags, reserved. */
#define WAL_REC_MAX (64u << 20)     /* Largest payload a decoder accepts. */
#define WAL_ENTRIES_HEADER_SIZE 12u /* first index u64, count u32. */
#define WAL_ENTRY_HEADER_SIZE 13u   /* term u64, type u8, len u32. */

enum wal_rec_type {
    WAL_REC_ENTRIES = 1,    /* Consecutive entries; the first index may be <= the last one seen:
                             * replay then drops the suffix from it (conflict truncation). */
    WAL_REC_HARD_STATE = 2, /* term, vote, commit (3 x u64). */
    WAL_REC_SNAPSHOT = 3,   /* Snapshot marker: index, term (2 x u64). */
};

/* Record flag bits.  WAL_REC_F_ZSTD is reserved for compressed payloads: this version never
 * writes it and a decoder rejects it (as any unknown bit) as corruption. */
#define WAL_REC_F_ZSTD 0x01u

struct wal_seg_header
{
    uint32_t version;
    uint32_t flags;       /* 0. */
    uint64_t seq;         /* Segment sequence number: replay order, 1, 2, ... */
    uint64_t first_index; /* Next log index when the segment was started. */
    uint32_t chain;       /* CRC chain value at the end of the previous segment (0 for seq 1). */
};

/* Encode @h into WAL_SEG_HEADER_SIZE bytes at @buf. */
void wal_seg_header_encode(unsigned char *buf, const struct wal_seg_header *h);

/* Decode a segment header from the @n bytes at @buf.  Returns 0, or WAL_ECORRUPT with a reason
 * in *@why (static string): short, bad magic, bad crc, unknown version. */
int wal_seg_header_decode(const unsigned char *buf,
                          size_t n,
                          struct wal_seg_header *h,
                          const char **why);

/* A decoded record; @payload points into the caller's buffer. */
struct wal_rec
{
    uint32_t hcrc; /* Header CRC: what the segment chain folds in. */
    uint8_t type;
    uint8_t flags;
    const unsigned char *payload;
    size_t len;  /* Payload bytes. */
    size_t size; /* Header + payload bytes consumed. */
};

enum wal_scan {
    WAL_SCAN_RECORD = 1, /* A valid record in *r. */
    WAL_SCAN_END,        /* Clean end: no bytes left, or a zero header (preallocated space). */
    WAL_SCAN_TORN,       /* A record that runs past the end of the bytes (a torn write). */
    WAL_SCAN_BAD,        /* A checksum or field mismatch. */
};

/* Decode the record at the start of the @n bytes at @buf.  Never reads past @n.  On TORN and BAD
 * *@why gets a static reason. */
enum wal_scan wal_rec_decode(const unsigned char *buf,
                             size_t n,
                             struct wal_rec *r,
                             const char **why);

/* Encode a record of @type around the @len payload bytes already placed at
 * @buf + WAL_REC_HEADER_SIZE: fills the header.  Returns the record size. */
size_t wal_rec_seal(unsigned char *buf, uint8_t type, size_t len);

/* Iterator over the entries of a WAL_REC_ENTRIES payload. */
struct wal_entries_iter
{
    const unsigned char *p;
    size_t left;
    uint64_t next_index;
    uint32_t remaining;
};

/* Start iterating @payload.  Returns 0 or WAL_ECORRUPT (too short, zero count, index 0). */
int wal_entries_iter_init(struct wal_entries_iter *it, const unsigned char *payload, size_t len);

/* The next entry into @e (data points into the payload).  Returns 1 for an entry, 0 at the end,
 * or -1 if the payload is malformed (lengths disagree). */
int wal_entries_iter_next(struct wal_entries_iter *it, struct wal_entry *e);

/* Bytes an entries payload of @n entries with @data_bytes total data takes. */
size_t wal_entries_size(size_t n, size_t data_bytes);

/* Encode the @n consecutive entries at @ents into @buf (wal_entries_size() bytes). */
void wal_entries_encode(unsigned char *buf, const struct wal_entry *ents, size_t n);

/* Replay state: what applying records in order yields.  The memtable must be initialised. */
struct wal_replay
{
    struct wal_memtable *mem;
    uint64_t hs_term, hs_vote, hs_commit;
    uint64_t snap_index, snap_term;
    uint64_t records;
};

/* Apply one valid record to @st (entries go into the memtable, honouring suffix truncation;
 * markers compact it).  Returns 0; WAL_ECORRUPT with *@why if the payload is malformed or an
 * entries record leaves a gap after the last index; WAL_ENOMEM. */
int wal_replay_apply(struct wal_replay *st, const struct wal_rec *r, const char **why);

#endif /* KV_WAL_FORMAT_H */
