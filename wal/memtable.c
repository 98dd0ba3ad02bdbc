/* Skiplist memtable keyed by log index, with a tail finger for O(1) in-order appends. */
#include "wal/memtable.h"

#include <assert.h>
#include <string.h>

#include "wal/wal.h"

/* Small nodes are carved from 1 MiB slabs, in append order: one malloc per ~3000 entries of
 * 256 B instead of one each, adjacent nodes share cache lines, and replay touches fewer fresh
 * pages.  A slab is freed when its last node goes (compaction frees from the front, truncation
 * from the back, so slabs empty in order). */
#define SLAB_SIZE (1u << 20)
#define SLAB_MAX_NODE (SLAB_SIZE / 8)

struct wal_slab
{
    size_t refs; /* Live nodes, plus one while it is the memtable's current slab. */
    size_t used;
    size_t cap;
    size_t pad; /* Keeps mem 16-byte aligned. */
    unsigned char mem[];
};

struct wal_mnode
{
    uint64_t index;
    uint64_t term;
    size_t len;
    size_t alloc;          /* Bytes of this node, for accounting. */
    struct wal_slab *slab; /* Where it was carved, or NULL if it is its own allocation. */
    uint8_t type;
    uint8_t height;
    unsigned char *data;      /* Points inside this allocation, after next[]. */
    struct wal_mnode *next[]; /* height links. */
};

void wal_memtable_init(struct wal_memtable *m)
{
    memset(m, 0, sizeof *m);
    m->rng = 0x9e3779b97f4a7c15ull;
}

static void slab_put(struct wal_slab *s)
{
    if (s != NULL && --s->refs == 0) {
        wal_free(s);
    }
}

/* @size bytes for a node: from the current slab when small, else its own allocation. */
static struct wal_mnode *node_alloc(struct wal_memtable *m, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size > SLAB_MAX_NODE) {
        struct wal_mnode *n = wal_malloc(size);
        if (n != NULL) {
            n->slab = NULL;
        }
        return n;
    }
    if (m->slab == NULL || m->slab->cap - m->slab->used < size) {
        /* Slabs grow from 16 KiB to SLAB_SIZE, so a small memtable stays small. */
        size_t cap = m->slab == NULL ? 16384 : m->slab->cap * 2;
        cap = cap > SLAB_SIZE ? SLAB_SIZE : cap;
        cap = cap < size ? size : cap;
        struct wal_slab *s = wal_malloc(sizeof *s + cap);
        if (s == NULL) {
            return NULL;
        }
        s->refs = 1;
        s->used = 0;
        s->cap = cap;
        slab_put(m->slab);
        m->slab = s;
    }
    struct wal_mnode *n = (struct wal_mnode *)(void *)(m->slab->mem + m->slab->used);
    m->slab->used += size;
    m->slab->refs++;
    n->slab = m->slab;
    return n;
}

static void node_free(struct wal_mnode *n)
{
    if (n->slab != NULL) {
        slab_put(n->slab);
    } else {
        wal_free(n);
    }
}

static void free_from(struct wal_mnode *n)
{
    while (n != NULL) {
        struct wal_mnode *next = n->next[0];
        node_free(n);
        n = next;
    }
}

void wal_memtable_fini(struct wal_memtable *m)
{
    if (m->levels > 0) {
        free_from(m->head[0]);
    }
    slab_put(m->slab);
    uint64_t si = m->snap_index, st = m->snap_term;
    memset(m, 0, sizeof *m);
    m->snap_index = si;
    m->snap_term = st;
    m->last = si;
    m->rng = 0x9e3779b97f4a7c15ull;
}

/* Geometric heights with p = 1/4, as LevelDB's skiplist: few links per node, O(log n) search. */
static int random_height(struct wal_memtable *m)
{
    uint64_t x = m->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    uint64_t r = x * 0x2545f4914f6cdd1dull;
    int h = 1;
    while (h < WAL_MEMTABLE_MAX_LEVEL && (r & 3) == 0) {
        h++;
        r >>= 2;
    }
    return h;
}

/* For each level, the last node with index < @index (NULL = before the head).  O(log n). */
static void find_prev(const struct wal_memtable *m,
                      uint64_t index,
                      struct wal_mnode *prev[WAL_MEMTABLE_MAX_LEVEL])
{
    struct wal_mnode *x = NULL;
    for (int l = m->levels - 1; l >= 0; l--) {
        struct wal_mnode *next = x == NULL ? m->head[l] : x->next[l];
        while (next != NULL && next->index < index) {
            x = next;
            next = x->next[l];
        }
        prev[l] = x;
    }
}

/* The node holding @index, or NULL. */
static struct wal_mnode *find(const struct wal_memtable *m, uint64_t index)
{
    if (m->count == 0 || index <= m->snap_index || index > m->last) {
        return NULL;
    }
    /* Appends and recent reads cluster at the tail, and readers walk forward: check the tail
     * and the finger before searching. */
    if (m->tail[0]->index == index) {
        return m->tail[0];
    }
    if (m->finger != NULL) {
        if (m->finger->index == index) {
            return m->finger;
        }
        if (m->finger->next[0] != NULL && m->finger->next[0]->index == index) {
            return m->finger->next[0];
        }
    }
    struct wal_mnode *prev[WAL_MEMTABLE_MAX_LEVEL];
    find_prev(m, index, prev);
    struct wal_mnode *n = prev[0] == NULL ? m->head[0] : prev[0]->next[0];
    return n != NULL && n->index == index ? n : NULL;
}

int wal_memtable_truncate(struct wal_memtable *m, uint64_t index)
{
    if (index <= m->snap_index) {
        return WAL_ECOMPACTED;
    }
    if (index > m->last) {
        return 0;
    }
    /* Zeroed: find_prev() fills only m->levels slots, which gcc -O3 cannot see. */
    struct wal_mnode *prev[WAL_MEMTABLE_MAX_LEVEL] = {0};
    find_prev(m, index, prev);
    struct wal_mnode *victim = prev[0] == NULL ? m->head[0] : prev[0]->next[0];
    m->finger = NULL;
    for (int l = 0; l < m->levels; l++) {
        if (prev[l] == NULL) {
            m->head[l] = NULL;
        } else {
            prev[l]->next[l] = NULL;
        }
        m->tail[l] = prev[l];
    }
    while (victim != NULL) {
        struct wal_mnode *next = victim->next[0];
        m->bytes -= victim->alloc;
        m->count--;
        node_free(victim);
        victim = next;
    }
    while (m->levels > 0 && m->head[m->levels - 1] == NULL) {
        m->levels--;
    }
    m->last = index - 1;
    return 0;
}

static struct wal_mnode *node_new(struct wal_memtable *m, const struct wal_entry *e)
{
    int h = random_height(m);
    size_t links = (size_t)h * sizeof(struct wal_mnode *);
    size_t alloc = sizeof(struct wal_mnode) + links + e->len;
    struct wal_mnode *n = node_alloc(m, alloc);
    if (n == NULL) {
        return NULL;
    }
    n->index = e->index;
    n->term = e->term;
    n->len = e->len;
    n->alloc = alloc;
    n->type = e->type;
    n->height = (uint8_t)h;
    n->data = (unsigned char *)n + sizeof(struct wal_mnode) + links;
    if (e->len > 0) {
        memcpy(n->data, e->data, e->len);
    }
    for (int l = 0; l < h; l++) {
        n->next[l] = NULL;
    }
    return n;
}

/* Link @n after the current tail: O(height). */
static void link_tail(struct wal_memtable *m, struct wal_mnode *n)
{
    for (int l = 0; l < n->height; l++) {
        if (l >= m->levels) {
            m->head[l] = n;
        } else if (m->tail[l] == NULL) {
            m->head[l] = n;
        } else {
            m->tail[l]->next[l] = n;
        }
        m->tail[l] = n;
    }
    if (n->height > m->levels) {
        m->levels = n->height;
    }
    m->last = n->index;
    m->count++;
    m->bytes += n->alloc;
}

int wal_memtable_append(struct wal_memtable *m, const struct wal_entry *ents, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (ents[i].index != ents[i - 1].index + 1) {
            return WAL_EINVAL;
        }
    }
    /* Entries at or below the compaction point are already covered by the snapshot. */
    while (n > 0 && ents[0].index <= m->snap_index) {
        ents++;
        n--;
    }
    if (n == 0) {
        return 0;
    }
    if (ents[0].index > m->last + 1) {
        return WAL_EINVAL;
    }
    /* Allocate first so that a failure leaves the memtable untouched. */
    struct wal_mnode *stack[64];
    struct wal_mnode **nodes = n <= 64 ? stack : wal_malloc(n * sizeof *nodes);
    if (nodes == NULL) {
        return WAL_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        nodes[i] = node_new(m, &ents[i]);
        if (nodes[i] == NULL) {
            while (i-- > 0) {
                node_free(nodes[i]);
            }
            if (nodes != stack) {
                wal_free(nodes);
            }
            return WAL_ENOMEM;
        }
    }
    if (ents[0].index <= m->last) {
        int rv = wal_memtable_truncate(m, ents[0].index);
        assert(rv == 0);
        (void)rv;
    }
    for (size_t i = 0; i < n; i++) {
        link_tail(m, nodes[i]);
    }
    if (nodes != stack) {
        wal_free(nodes);
    }
    return 0;
}

int wal_memtable_term(const struct wal_memtable *m, uint64_t index, uint64_t *term)
{
    if (index < m->snap_index) {
        return WAL_ECOMPACTED;
    }
    if (index > m->last) {
        return WAL_EUNAVAILABLE;
    }
    if (index == m->snap_index) {
        *term = m->snap_term;
        return 0;
    }
    const struct wal_mnode *n = find(m, index);
    assert(n != NULL);
    *term = n->term;
    return 0;
}

int wal_memtable_entries(const struct wal_memtable *m,
                         uint64_t lo,
                         uint64_t hi,
                         size_t max_bytes,
                         struct wal_entry *out,
                         size_t cap,
                         size_t *n)
{
    *n = 0;
    if (lo <= m->snap_index) {
        return WAL_ECOMPACTED;
    }
    if (lo > hi) {
        return WAL_EINVAL;
    }
    if (hi > m->last + 1 || m->count == 0) {
        return WAL_EUNAVAILABLE;
    }
    const struct wal_mnode *x = find(m, lo), *last = NULL;
    size_t bytes = 0;
    while (x != NULL && x->index < hi && *n < cap) {
        bytes += x->len;
        if (*n > 0 && bytes > max_bytes) {
            break;
        }
        out[*n] = (struct wal_entry){x->index, x->term, x->type, x->data, x->len};
        (*n)++;
        last = x;
        x = x->next[0];
    }
    /* The memtable is owned by the calling thread; only the read finger changes.  It rests on
     * the last entry returned: the next MsgApp asks term(last) and entries(last + 1, ...). */
    if (last != NULL) {
        ((struct wal_memtable *)m)->finger = (struct wal_mnode *)last;
    }
    return 0;
}

uint64_t wal_memtable_first(const struct wal_memtable *m)
{
    return m->snap_index + 1;
}

uint64_t wal_memtable_last(const struct wal_memtable *m)
{
    return m->last;
}

int wal_memtable_compact(struct wal_memtable *m, uint64_t index)
{
    if (index <= m->snap_index) {
        return WAL_ECOMPACTED;
    }
    if (index > m->last) {
        return WAL_EUNAVAILABLE;
    }
    uint64_t term = 0;
    int rv = wal_memtable_term(m, index, &term);
    assert(rv == 0);
    (void)rv;
    /* Unlink the prefix at every level: each head advances past nodes <= index. */
    struct wal_mnode *victim = m->levels > 0 ? m->head[0] : NULL;
    m->finger = NULL;
    for (int l = 0; l < m->levels; l++) {
        struct wal_mnode *x = m->head[l];
        while (x != NULL && x->index <= index) {
            x = x->next[l];
        }
        m->head[l] = x;
        if (x == NULL) {
            m->tail[l] = NULL;
        }
    }
    while (victim != NULL && victim->index <= index) {
        struct wal_mnode *next = victim->next[0];
        m->bytes -= victim->alloc;
        m->count--;
        node_free(victim);
        victim = next;
    }
    while (m->levels > 0 && m->head[m->levels - 1] == NULL) {
        m->levels--;
    }
    m->snap_index = index;
    m->snap_term = term;
    return 0;
}

int wal_memtable_apply_snapshot(struct wal_memtable *m, uint64_t index, uint64_t term)
{
    if (index < m->snap_index) {
        return WAL_ESNAPOLD;
    }
    wal_memtable_fini(m);
    m->snap_index = index;
    m->snap_term = term;
    m->last = index;
    return 0;
}

size_t wal_memtable_bytes(const struct wal_memtable *m)
{
    return m->bytes;
}
