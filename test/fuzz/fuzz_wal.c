/* Fuzz target: the WAL segment/record decoder and replay.  Input byte 0 picks a mode:
 *  even: the rest is a raw segment file (header, records) decoded and replayed as recovery
 *        does; decoding must stop cleanly at damage and never read out of bounds;
 *  odd:  the rest is a script of records that the target frames with valid checksums (so the
 *        fuzzer gets past the CRCs), then decodes and replays; the memtable must then agree with
 *        a plain array model of Raft log semantics (append, suffix truncation, snapshot). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MODEL_MAX 4096

struct model
{
    uint64_t terms[MODEL_MAX];
    uint64_t last, mem_snap, snap;
    bool broken; /* The script made replay fail: stop comparing. */
};

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

/* Decode and replay @n bytes of records starting at @off; returns records applied. */
static size_t replay(const unsigned char *buf, size_t n, size_t off, struct wal_memtable *m)
{
    struct wal_replay st = {.mem = m};
    size_t applied = 0;
    for (;;) {
        struct wal_rec r;
        const char *why = NULL;
        enum wal_scan s = wal_rec_decode(buf + off, n - off, &r, &why);
        if (s != WAL_SCAN_RECORD) {
            check(s == WAL_SCAN_END || why != NULL);
            return applied;
        }
        check(r.size <= n - off && r.size >= WAL_REC_HEADER_SIZE);
        if (wal_replay_apply(&st, &r, &why) != 0) {
            check(why != NULL);
            return applied;
        }
        applied++;
        off += r.size;
    }
}

/* Invariants of any memtable: every index in [first, last] is readable, in order. */
static void check_memtable(const struct wal_memtable *m)
{
    uint64_t first = wal_memtable_first(m), last = wal_memtable_last(m);
    check(first >= 1 && last + 1 >= first);
    uint64_t t;
    check(wal_memtable_term(m, first - 1, &t) == 0);
    if (last < first) {
        return;
    }
    size_t cap = (size_t)(last - first + 1);
    struct wal_entry *out = malloc(cap * sizeof *out);
    size_t n = 0;
    check(wal_memtable_entries(m, first, last + 1, SIZE_MAX, out, cap, &n) == 0);
    check(n == cap);
    for (size_t i = 0; i < n; i++) {
        check(out[i].index == first + i);
        check(wal_memtable_term(m, out[i].index, &t) == 0 && t == out[i].term);
    }
    free(out);
}

static void raw_mode(const uint8_t *data, size_t size)
{
    struct wal_seg_header h;
    const char *why;
    size_t off = wal_seg_header_decode(data, size, &h, &why) == 0 ? WAL_SEG_HEADER_SIZE : 0;
    struct wal_memtable m;
    wal_memtable_init(&m);
    replay(data, size, off, &m);
    check_memtable(&m);
    wal_memtable_fini(&m);
}

static void model_entries(struct model *md, uint64_t first, const struct wal_entry *e, size_t n)
{
    if (first > md->last + 1) {
        md->broken = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (e[i].index > md->mem_snap) {
            md->terms[e[i].index] = e[i].term;
            md->last = e[i].index;
        }
    }
}

static void model_snapshot(struct model *md, uint64_t index, uint64_t term)
{
    if (index <= md->snap) {
        return;
    }
    md->snap = index;
    if (index <= md->mem_snap) {
        return;
    }
    if (!(index <= md->last && md->terms[index] == term)) {
        md->last = index;
    }
    md->terms[index] = term;
    md->mem_snap = index;
}

/* Build one entries record from the script; returns bytes of script consumed. */
static size_t script_entries(const uint8_t *p,
                             size_t n,
                             unsigned char *out,
                             size_t *len,
                             struct model *md)
{
    if (n < 2) {
        return n;
    }
    /* Mostly append or overwrite near the tail; 0xff makes a gap (replay must refuse it). */
    uint64_t back = p[0] % 16;
    uint64_t first = md->last + 1 > back ? md->last + 1 - back : 1;
    if (p[0] == 0xff) {
        first = md->last + 3;
    }
    if (first + 8 >= MODEL_MAX) {
        return n;
    }
    size_t count = 1 + p[1] % 8, used = 2;
    struct wal_entry e[8];
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t b = used < n ? p[used++] : 0;
        e[i] = (struct wal_entry){first + i, 1 + b % 5, b, p + used, 0};
        e[i].len = (size_t)(b % 7) <= n - used ? (size_t)(b % 7) : n - used;
        used += e[i].len;
        bytes += e[i].len;
    }
    size_t payload = wal_entries_size(count, bytes);
    wal_entries_encode(out + WAL_REC_HEADER_SIZE, e, count);
    *len = wal_rec_seal(out, WAL_REC_ENTRIES, payload);
    if (!md->broken) {
        model_entries(md, first, e, count);
    }
    return used;
}

static void script_mode(const uint8_t *data, size_t size)
{
    struct model *md = calloc(1, sizeof *md);
    unsigned char *seg = malloc(WAL_SEG_HEADER_SIZE + size * 40 + 64);
    struct wal_seg_header h = {WAL_VERSION, 0, 1, 1, 0};
    wal_seg_header_encode(seg, &h);
    size_t len = WAL_SEG_HEADER_SIZE, i = 0;
    while (i < size) {
        uint8_t op = data[i++];
        size_t rec = 0;
        unsigned char *out = seg + len;
        if (op % 4 < 2) {
            i += script_entries(data + i, size - i, out, &rec, md);
        } else if (op % 4 == 2 && i + 2 <= size) {
            uint64_t index = md->last + 8 - data[i] % 32, term = 1 + data[i + 1] % 5;
            index = index >= MODEL_MAX ? MODEL_MAX - 1 : index;
            i += 2;
            wal_put_u64(out + WAL_REC_HEADER_SIZE, index);
            wal_put_u64(out + WAL_REC_HEADER_SIZE + 8, term);
            rec = wal_rec_seal(out, WAL_REC_SNAPSHOT, 16);
            if (!md->broken) {
                model_snapshot(md, index, term);
            }
        } else {
            memset(out + WAL_REC_HEADER_SIZE, op, 24);
            rec = wal_rec_seal(out, WAL_REC_HARD_STATE, 24);
        }
        len += rec;
    }
    struct wal_memtable m;
    wal_memtable_init(&m);
    replay(seg, len, WAL_SEG_HEADER_SIZE, &m);
    check_memtable(&m);
    if (!md->broken) {
        check(wal_memtable_last(&m) == md->last);
        check(wal_memtable_first(&m) == md->mem_snap + 1);
        for (uint64_t k = md->mem_snap + 1; k <= md->last; k++) {
            uint64_t t = 0;
            check(wal_memtable_term(&m, k, &t) == 0 && t == md->terms[k]);
        }
    }
    wal_memtable_fini(&m);
    free(seg);
    free(md);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (data[0] & 1) {
        script_mode(data + 1, size - 1);
    } else {
        raw_mode(data + 1, size - 1);
    }
    return 0;
}
