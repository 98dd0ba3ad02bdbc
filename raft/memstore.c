/* raft_memstore: struct raft_storage over an array in memory (etcd MemoryStorage). */
#include <string.h>

#include "raft/core.h"
#include "raft/memstore.h"

static int ms_initial_state(void *ctx, struct raft_hard_state *hs)
{
    const struct raft_memstore *m = ctx;
    *hs = m->hs;
    return 0;
}

static raft_index ms_first(void *ctx)
{
    const struct raft_memstore *m = ctx;
    return m->snap.index + 1;
}

static raft_index ms_last(void *ctx)
{
    const struct raft_memstore *m = ctx;
    return m->snap.index + m->n;
}

static int ms_term(void *ctx, raft_index i, raft_term *out)
{
    const struct raft_memstore *m = ctx;
    if (i < m->snap.index) {
        return RAFT_ECOMPACTED;
    }
    if (i == m->snap.index) {
        *out = m->snap.term;
        return 0;
    }
    if (i > ms_last(ctx)) {
        return RAFT_EUNAVAILABLE;
    }
    *out = m->ents[i - m->snap.index - 1].term;
    return 0;
}

static int ms_entries(void *ctx,
                      raft_index lo,
                      raft_index hi,
                      size_t max_bytes,
                      struct raft_entry *out,
                      size_t *n_out)
{
    const struct raft_memstore *m = ctx;
    *n_out = 0;
    if (lo <= m->snap.index) {
        return RAFT_ECOMPACTED;
    }
    if (hi > ms_last(ctx) + 1) {
        return RAFT_EUNAVAILABLE;
    }
    size_t bytes = 0;
    for (raft_index i = lo; i < hi; i++) {
        const struct raft_entry *e = &m->ents[i - m->snap.index - 1];
        if (*n_out > 0 && bytes + e->data.len > max_bytes) {
            break;
        }
        bytes += e->data.len;
        out[(*n_out)++] = *e;
    }
    return 0;
}

static int ms_snapshot(void *ctx, struct raft_snap_meta *out)
{
    const struct raft_memstore *m = ctx;
    *out = m->snap;
    return 0;
}

void raft_memstore_init(struct raft_memstore *m,
                        const struct raft_heap *heap,
                        const struct raft_conf *conf)
{
    memset(m, 0, sizeof *m);
    m->heap = heap;
    if (conf != NULL) {
        m->snap.conf = *conf;
    }
    m->storage.ctx = m;
    m->storage.initial_state = ms_initial_state;
    m->storage.entries = ms_entries;
    m->storage.term = ms_term;
    m->storage.first_index = ms_first;
    m->storage.last_index = ms_last;
    m->storage.snapshot = ms_snapshot;
}

static void truncate_from(struct raft_memstore *m, size_t k)
{
    for (size_t i = k; i < m->n; i++) {
        raft_free(m->heap, m->ents[i].data.base);
    }
    m->n = k;
}

void raft_memstore_fini(struct raft_memstore *m)
{
    if (m->ents != NULL) {
        truncate_from(m, 0);
        raft_free(m->heap, m->ents);
    }
    m->ents = NULL;
    m->n = 0;
    m->cap = 0;
}

int raft_memstore_append(struct raft_memstore *m, const struct raft_entry *ents, size_t n)
{
    /* Skip what the snapshot already covers. */
    while (n > 0 && ents[0].index <= m->snap.index) {
        ents++;
        n--;
    }
    if (n == 0) {
        return 0;
    }
    if (ents[0].index > ms_last(m) + 1) {
        return RAFT_EINVAL;
    }
    size_t keep = (size_t)(ents[0].index - m->snap.index - 1);
    if (keep + n > m->cap) {
        size_t cap = m->cap == 0 ? 64 : m->cap;
        while (cap < keep + n) {
            cap *= 2;
        }
        struct raft_entry *p = raft_realloc(m->heap, m->ents, cap * sizeof *p);
        if (p == NULL) {
            return RAFT_ENOMEM;
        }
        m->ents = p;
        m->cap = cap;
    }
    /* Copy all data before truncating so that failure leaves the store unchanged. */
    void **copies = raft_malloc(m->heap, n * sizeof *copies);
    if (copies == NULL) {
        return RAFT_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        copies[i] = NULL;
        if (ents[i].data.len == 0) {
            continue;
        }
        copies[i] = raft_malloc(m->heap, ents[i].data.len);
        if (copies[i] == NULL) {
            for (size_t k = 0; k < i; k++) {
                raft_free(m->heap, copies[k]);
            }
            raft_free(m->heap, copies);
            return RAFT_ENOMEM;
        }
        memcpy(copies[i], ents[i].data.base, ents[i].data.len);
    }
    truncate_from(m, keep);
    for (size_t i = 0; i < n; i++) {
        m->ents[keep + i] = ents[i];
        m->ents[keep + i].data.base = copies[i];
    }
    m->n = keep + n;
    raft_free(m->heap, copies);
    return 0;
}

void raft_memstore_set_hard_state(struct raft_memstore *m, const struct raft_hard_state *hs)
{
    m->hs = *hs;
}

int raft_memstore_compact(struct raft_memstore *m, raft_index index, const struct raft_conf *conf)
{
    if (index <= m->snap.index) {
        return RAFT_ECOMPACTED;
    }
    if (index > ms_last(m)) {
        return RAFT_EINVAL;
    }
    size_t drop = (size_t)(index - m->snap.index);
    m->snap.term = m->ents[drop - 1].term;
    for (size_t i = 0; i < drop; i++) {
        raft_free(m->heap, m->ents[i].data.base);
    }
    memmove(m->ents, m->ents + drop, (m->n - drop) * sizeof *m->ents);
    m->n -= drop;
    m->snap.index = index;
    m->snap.conf = *conf;
    return 0;
}

int raft_memstore_apply_snapshot(struct raft_memstore *m, const struct raft_snap_meta *meta)
{
    if (meta->index <= m->snap.index) {
        return RAFT_ECOMPACTED;
    }
    truncate_from(m, 0);
    m->snap = *meta;
    if (m->hs.commit < meta->index) {
        m->hs.commit = meta->index;
    }
    return 0;
}

const struct raft_entry *raft_memstore_get(const struct raft_memstore *m, raft_index i)
{
    if (i <= m->snap.index || i > m->snap.index + m->n) {
        return NULL;
    }
    return &m->ents[i - m->snap.index - 1];
}

raft_index raft_memstore_last(const struct raft_memstore *m)
{
    return m->snap.index + m->n;
}

int raft_memstore_persist(struct raft_memstore *m, const struct raft_ready *rd)
{
    if (rd->snap != NULL) {
        int rv = raft_memstore_apply_snapshot(m, rd->snap);
        if (rv != 0 && rv != RAFT_ECOMPACTED) {
            return rv;
        }
    }
    int rv = raft_memstore_append(m, rd->entries, rd->n_entries);
    if (rv != 0) {
        return rv;
    }
    if (rd->has_hard_state) {
        m->hs = rd->hs;
    }
    return 0;
}
