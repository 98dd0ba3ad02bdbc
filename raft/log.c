/* The member's view of its log: the stable part in struct raft_storage, plus an unstable tail
 * (and possibly an incoming snapshot) not yet handed to the application (etcd raftLog). */
#include <assert.h>
#include <string.h>

#include "raft/core.h"

int raft_log_init(struct raft_log *l, const struct raft_storage *st, const struct raft_heap *h)
{
    memset(l, 0, sizeof *l);
    l->st = st;
    l->heap = h;
    l->offset = st->last_index(st->ctx) + 1;
    /* Everything at or below the snapshot point is committed and applied by definition. */
    l->committed = st->first_index(st->ctx) - 1;
    l->applied = l->committed;
    return 0;
}

/* Drop unstable entries [from, n): their data goes to the dead list (see struct raft_log). */
static void free_range(struct raft_log *l, size_t from)
{
    for (size_t i = from; i < l->n; i++) {
        void *data = l->ents[i].data.base;
        if (data == NULL) {
            continue;
        }
        if (l->n_dead == l->cap_dead) {
            size_t cap = l->cap_dead == 0 ? 16 : l->cap_dead * 2;
            void **d = raft_realloc(l->heap, l->dead, cap * sizeof *d);
            if (d == NULL) {
                /* No room to defer: free now.  Only an outbox message built from this entry
                 * before the truncation could still point at it (as before this list). */
                raft_free(l->heap, data);
                continue;
            }
            l->dead = d;
            l->cap_dead = cap;
        }
        l->dead[l->n_dead++] = data;
    }
    l->n = from;
}

void raft_log_reap(struct raft_log *l)
{
    for (size_t i = 0; i < l->n_dead; i++) {
        raft_free(l->heap, l->dead[i]);
    }
    l->n_dead = 0;
}

void raft_log_fini(struct raft_log *l)
{
    if (l->ents != NULL) {
        free_range(l, 0);
        raft_free(l->heap, l->ents);
    }
    raft_log_reap(l);
    raft_free(l->heap, l->dead);
    memset(l, 0, sizeof *l);
}

raft_index raft_log_first(const struct raft_log *l)
{
    if (l->has_snap) {
        return l->snap.index + 1;
    }
    return l->st->first_index(l->st->ctx);
}

raft_index raft_log_last(const struct raft_log *l)
{
    if (l->n > 0) {
        return l->offset + l->n - 1;
    }
    if (l->has_snap) {
        return l->snap.index;
    }
    return l->st->last_index(l->st->ctx);
}

int raft_log_term(const struct raft_log *l, raft_index i, raft_term *out)
{
    raft_index dummy = raft_log_first(l) - 1;
    if (i < dummy) {
        return RAFT_ECOMPACTED;
    }
    if (i > raft_log_last(l)) {
        return RAFT_EUNAVAILABLE;
    }
    if (l->n > 0 && i >= l->offset) {
        *out = l->ents[i - l->offset].term;
        return 0;
    }
    if (l->has_snap && i == l->snap.index) {
        *out = l->snap.term;
        return 0;
    }
    return l->st->term(l->st->ctx, i, out);
}

raft_term raft_log_term_or0(const struct raft_log *l, raft_index i)
{
    raft_term t = 0;
    if (raft_log_term(l, i, &t) != 0) {
        return 0;
    }
    return t;
}

raft_term raft_log_last_term(const struct raft_log *l)
{
    return raft_log_term_or0(l, raft_log_last(l));
}

bool raft_log_match_term(const struct raft_log *l, raft_index i, raft_term t)
{
    raft_term have;
    if (raft_log_term(l, i, &have) != 0) {
        return false;
    }
    return have == t;
}

/* Thesis 3.6.1: a candidate's log is at least as up to date if its last term is higher, or equal
 * with an index at least as high. */
bool raft_log_is_up_to_date(const struct raft_log *l, raft_index last, raft_term term)
{
    raft_term my = raft_log_last_term(l);
    return term > my || (term == my && last >= raft_log_last(l));
}

int raft_log_slice(const struct raft_log *l,
                   raft_index lo,
                   raft_index hi,
                   size_t max_bytes,
                   struct raft_entry *out,
                   size_t *n)
{
    *n = 0;
    if (lo < raft_log_first(l)) {
        return RAFT_ECOMPACTED;
    }
    if (hi > raft_log_last(l) + 1 || lo > hi) {
        return RAFT_EUNAVAILABLE;
    }
    size_t bytes = 0;
    raft_index i = lo;
    raft_index stable_hi = l->n > 0 && l->offset < hi ? l->offset : hi;
    if (i < stable_hi) {
        size_t got = 0;
        int rv = l->st->entries(l->st->ctx, i, stable_hi, max_bytes, out, &got);
        if (rv != 0) {
            return rv;
        }
        for (size_t k = 0; k < got; k++) {
            bytes += out[k].data.len;
        }
        *n = got;
        i += got;
        if (i < stable_hi) {
            return 0; /* The byte limit stopped it. */
        }
    }
    for (; i < hi; i++) {
        const struct raft_entry *e = &l->ents[i - l->offset];
        if (*n > 0 && bytes + e->data.len > max_bytes) {
            break;
        }
        bytes += e->data.len;
        out[(*n)++] = *e;
    }
    return 0;
}

static int ensure_cap(struct raft_log *l, size_t want)
{
    if (want <= l->cap) {
        return 0;
    }
    size_t cap = l->cap == 0 ? 64 : l->cap;
    while (cap < want) {
        cap *= 2;
    }
    struct raft_entry *p = raft_realloc(l->heap, l->ents, cap * sizeof *p);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    l->ents = p;
    l->cap = cap;
    return 0;
}

/* Copies first, so that running out of memory leaves the log as it was. */
int raft_log_append(struct raft_log *l, const struct raft_entry *ents, size_t n)
{
    if (n == 0) {
        return 0;
    }
    raft_index after = ents[0].index;
    size_t keep;
    if (after == l->offset + l->n) {
        keep = l->n;
    } else if (after <= l->offset) {
        keep = 0;
    } else {
        keep = (size_t)(after - l->offset);
    }
    if (ensure_cap(l, keep + n) != 0) {
        return RAFT_ENOMEM;
    }
    /* Copy the data into temporaries first: truncation below frees entries for good. */
    void *bufs[64];
    void **tmp = n <= 64 ? bufs : raft_malloc(l->heap, n * sizeof *tmp);
    if (tmp == NULL) {
        return RAFT_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        tmp[i] = NULL;
        if (ents[i].data.len > 0) {
            tmp[i] = raft_malloc(l->heap, ents[i].data.len);
            if (tmp[i] == NULL) {
                for (size_t k = 0; k < i; k++) {
                    raft_free(l->heap, tmp[k]);
                }
                if (tmp != bufs) {
                    raft_free(l->heap, tmp);
                }
                return RAFT_ENOMEM;
            }
            memcpy(tmp[i], ents[i].data.base, ents[i].data.len);
        }
    }
    free_range(l, keep);
    if (keep == 0) {
        l->offset = after;
    }
    for (size_t i = 0; i < n; i++) {
        l->ents[keep + i] = ents[i];
        l->ents[keep + i].data.base = tmp[i];
    }
    l->n = keep + n;
    if (tmp != bufs) {
        raft_free(l->heap, tmp);
    }
    return 0;
}

raft_index raft_log_find_conflict(const struct raft_log *l, const struct raft_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!raft_log_match_term(l, ents[i].index, ents[i].term)) {
            return ents[i].index;
        }
    }
    return 0;
}

raft_index raft_log_find_conflict_by_term(const struct raft_log *l,
                                          raft_index index,
                                          raft_term term,
                                          raft_term *term_out)
{
    for (;;) {
        raft_term t;
        if (raft_log_term(l, index, &t) != 0) {
            /* Compacted or missing: the caller probes from here. */
            *term_out = 0;
            return index;
        }
        if (t <= term || index == 0) {
            *term_out = t;
            return index;
        }
        index--;
    }
}

void raft_log_commit_to(struct raft_log *l, raft_index i)
{
    if (i > l->committed) {
        assert(i <= raft_log_last(l));
        l->committed = i;
    }
}

void raft_log_restore(struct raft_log *l, const struct raft_snap_meta *meta)
{
    free_range(l, 0);
    l->offset = meta->index + 1;
    l->has_snap = true;
    l->snap = *meta;
    l->committed = meta->index;
}

void raft_log_stable(struct raft_log *l, size_t n, bool snap)
{
    if (snap) {
        l->has_snap = false;
        if (l->applied < l->snap.index) {
            l->applied = l->snap.index;
        }
    }
    if (n == 0) {
        return;
    }
    assert(n <= l->n);
    for (size_t i = 0; i < n; i++) {
        raft_free(l->heap, l->ents[i].data.base);
    }
    memmove(l->ents, l->ents + n, (l->n - n) * sizeof *l->ents);
    l->n -= n;
    l->offset += n;
}
