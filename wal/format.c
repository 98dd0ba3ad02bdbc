/* Segment headers, record framing and the replay of decoded records. */
#include "wal/format.h"

#include <string.h>

#include "wal/wal.h"

void wal_seg_header_encode(unsigned char *buf, const struct wal_seg_header *h)
{
    memset(buf, 0, WAL_SEG_HEADER_SIZE);
    memcpy(buf, WAL_MAGIC, 8);
    wal_put_u32(buf + 8, h->version);
    wal_put_u32(buf + 12, h->flags);
    wal_put_u64(buf + 16, h->seq);
    wal_put_u64(buf + 24, h->first_index);
    wal_put_u32(buf + 32, h->chain);
    wal_put_u32(buf + 36, wal_crc32c(buf, 36));
}

int wal_seg_header_decode(const unsigned char *buf,
                          size_t n,
                          struct wal_seg_header *h,
                          const char **why)
{
    if (n < WAL_SEG_HEADER_SIZE) {
        *why = "short segment header";
        return WAL_ECORRUPT;
    }
    if (memcmp(buf, WAL_MAGIC, 8) != 0) {
        *why = "bad segment magic";
        return WAL_ECORRUPT;
    }
    if (wal_get_u32(buf + 36) != wal_crc32c(buf, 36)) {
        *why = "bad segment header crc";
        return WAL_ECORRUPT;
    }
    h->version = wal_get_u32(buf + 8);
    h->flags = wal_get_u32(buf + 12);
    h->seq = wal_get_u64(buf + 16);
    h->first_index = wal_get_u64(buf + 24);
    h->chain = wal_get_u32(buf + 32);
    if (h->version != WAL_VERSION || h->flags != 0) {
        *why = "unknown segment version or flags";
        return WAL_ECORRUPT;
    }
    if (h->seq == 0 || h->first_index == 0) {
        *why = "zero segment seq or first index";
        return WAL_ECORRUPT;
    }
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

static bool payload_len_ok(uint8_t type, size_t len)
{
    switch (type) {
    case WAL_REC_ENTRIES:
        return len >= WAL_ENTRIES_HEADER_SIZE;
    case WAL_REC_HARD_STATE:
        return len == 24;
    case WAL_REC_SNAPSHOT:
        return len == 16;
    default:
        return false;
    }
}

enum wal_scan wal_rec_decode(const unsigned char *buf,
                             size_t n,
                             struct wal_rec *r,
                             const char **why)
{
    if (n == 0) {
        return WAL_SCAN_END;
    }
    if (n < WAL_REC_HEADER_SIZE) {
        if (all_zero(buf, n)) {
            return WAL_SCAN_END;
        }
        *why = "partial record header";
        return WAL_SCAN_TORN;
    }
    /* Preallocated space reads as zeros; a zero header cannot be valid (its crc is not 0). */
    if (all_zero(buf, WAL_REC_HEADER_SIZE)) {
        return WAL_SCAN_END;
    }
    if (wal_get_u32(buf) != wal_crc32c(buf + 4, WAL_REC_HEADER_SIZE - 4)) {
        *why = "bad record header crc";
        return WAL_SCAN_BAD;
    }
    uint32_t len = wal_get_u32(buf + 8);
    r->hcrc = wal_get_u32(buf);
    r->type = buf[12];
    r->flags = buf[13];
    if (r->flags != 0 || buf[14] != 0 || buf[15] != 0 || len > WAL_REC_MAX ||
        !payload_len_ok(r->type, len)) {
        *why = "bad record type, flags or length";
        return WAL_SCAN_BAD;
    }
    if (len > n - WAL_REC_HEADER_SIZE) {
        *why = "record runs past end of file";
        return WAL_SCAN_TORN;
    }
    r->payload = buf + WAL_REC_HEADER_SIZE;
    r->len = len;
    r->size = WAL_REC_HEADER_SIZE + (size_t)len;
    if (wal_get_u32(buf + 4) != wal_crc32c(r->payload, len)) {
        *why = "bad record payload crc";
        return WAL_SCAN_BAD;
    }
    return WAL_SCAN_RECORD;
}

size_t wal_rec_seal(unsigned char *buf, uint8_t type, size_t len)
{
    wal_put_u32(buf + 4, wal_crc32c(buf + WAL_REC_HEADER_SIZE, len));
    wal_put_u32(buf + 8, (uint32_t)len);
    buf[12] = type;
    buf[13] = 0;
    buf[14] = 0;
    buf[15] = 0;
    wal_put_u32(buf, wal_crc32c(buf + 4, WAL_REC_HEADER_SIZE - 4));
    return WAL_REC_HEADER_SIZE + len;
}

int wal_entries_iter_init(struct wal_entries_iter *it, const unsigned char *payload, size_t len)
{
    if (len < WAL_ENTRIES_HEADER_SIZE) {
        return WAL_ECORRUPT;
    }
    it->next_index = wal_get_u64(payload);
    it->remaining = wal_get_u32(payload + 8);
    it->p = payload + WAL_ENTRIES_HEADER_SIZE;
    it->left = len - WAL_ENTRIES_HEADER_SIZE;
    if (it->remaining == 0 || it->next_index == 0 || it->next_index > UINT64_MAX - it->remaining) {
        return WAL_ECORRUPT;
    }
    return 0;
}

int wal_entries_iter_next(struct wal_entries_iter *it, struct wal_entry *e)
{
    if (it->remaining == 0) {
        return it->left == 0 ? 0 : -1;
    }
    if (it->left < WAL_ENTRY_HEADER_SIZE) {
        return -1;
    }
    uint32_t len = wal_get_u32(it->p + 9);
    if (len > it->left - WAL_ENTRY_HEADER_SIZE) {
        return -1;
    }
    e->index = it->next_index++;
    e->term = wal_get_u64(it->p);
    e->type = it->p[8];
    e->data = it->p + WAL_ENTRY_HEADER_SIZE;
    e->len = len;
    it->p += WAL_ENTRY_HEADER_SIZE + len;
    it->left -= WAL_ENTRY_HEADER_SIZE + len;
    it->remaining--;
    return 1;
}

size_t wal_entries_size(size_t n, size_t data_bytes)
{
    return WAL_ENTRIES_HEADER_SIZE + n * WAL_ENTRY_HEADER_SIZE + data_bytes;
}

void wal_entries_encode(unsigned char *buf, const struct wal_entry *ents, size_t n)
{
    wal_put_u64(buf, ents[0].index);
    wal_put_u32(buf + 8, (uint32_t)n);
    unsigned char *p = buf + WAL_ENTRIES_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        wal_put_u64(p, ents[i].term);
        p[8] = ents[i].type;
        wal_put_u32(p + 9, (uint32_t)ents[i].len);
        if (ents[i].len > 0) {
            memcpy(p + WAL_ENTRY_HEADER_SIZE, ents[i].data, ents[i].len);
        }
        p += WAL_ENTRY_HEADER_SIZE + ents[i].len;
    }
}

/* Entries go to the memtable in chunks: one call per chunk keeps the append O(1) per entry. */
static int replay_entries(struct wal_replay *st, const struct wal_rec *r, const char **why)
{
    struct wal_entries_iter it;
    if (wal_entries_iter_init(&it, r->payload, r->len) != 0) {
        *why = "malformed entries record";
        return WAL_ECORRUPT;
    }
    if (it.next_index > wal_memtable_last(st->mem) + 1) {
        *why = "entries record leaves a gap in the log";
        return WAL_ECORRUPT;
    }
    struct wal_entry chunk[64];
    size_t n = 0;
    int got;
    while ((got = wal_entries_iter_next(&it, &chunk[n])) == 1) {
        if (++n == 64) {
            int rv = wal_memtable_append(st->mem, chunk, n);
            if (rv != 0) {
                *why = "memtable append failed";
                return rv;
            }
            n = 0;
        }
    }
    if (got < 0) {
        *why = "malformed entries record";
        return WAL_ECORRUPT;
    }
    int rv = n > 0 ? wal_memtable_append(st->mem, chunk, n) : 0;
    if (rv != 0) {
        *why = "memtable append failed";
    }
    return rv;
}

/* A marker at or below the current one is a repeat (each segment restates it): ignore it. */
static int replay_snapshot(struct wal_replay *st, uint64_t index, uint64_t term)
{
    if (index <= st->snap_index) {
        return 0;
    }
    st->snap_index = index;
    st->snap_term = term;
    if (index <= st->mem->snap_index) {
        /* The log already starts after it: older segments were released by a later marker,
         * which follows in the replay. */
        return 0;
    }
    uint64_t t = 0;
    if (index > st->mem->snap_index && wal_memtable_term(st->mem, index, &t) == 0 && t == term) {
        return wal_memtable_compact(st->mem, index);
    }
    return wal_memtable_apply_snapshot(st->mem, index, term);
}

int wal_replay_apply(struct wal_replay *st, const struct wal_rec *r, const char **why)
{
    st->records++;
    switch (r->type) {
    case WAL_REC_ENTRIES:
        return replay_entries(st, r, why);
    case WAL_REC_HARD_STATE:
        st->hs_term = wal_get_u64(r->payload);
        st->hs_vote = wal_get_u64(r->payload + 8);
        st->hs_commit = wal_get_u64(r->payload + 16);
        return 0;
    case WAL_REC_SNAPSHOT: {
        int rv = replay_snapshot(st, wal_get_u64(r->payload), wal_get_u64(r->payload + 8));
        if (rv != 0) {
            *why = "snapshot marker out of order";
        }
        return rv == WAL_ESNAPOLD ? WAL_ECORRUPT : rv;
    }
    default:
        *why = "unknown record type";
        return WAL_ECORRUPT;
    }
}
