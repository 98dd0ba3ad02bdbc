/* Wing & Gong linearizability search with Lowe's memoization ("Testing for linearizability",
 * 2017), specialised to one register.  Entries (calls and returns) sit in a doubly linked list
 * in time order; the search linearizes a call whose operation is legal in the current state,
 * lifts it and its return out of the list, and backtracks when it meets a return whose call
 * could not be linearized.  A (set of linearized ops, state) pair seen before is not explored
 * again. */
#include "test/integration/lin.h"

#include <stdlib.h>
#include <string.h>

#define BUDGET 50000000u /* search steps before giving up (-1) */

struct ent
{
    size_t op;
    bool is_call;
    uint64_t time;
    size_t match; /* the other entry of the same op */
    size_t prev, next;
};

struct cache
{
    uint64_t *keys; /* cap slots of (words + 1) uint64: the bitset, then the state */
    bool *used;
    size_t cap, n, words;
};

static uint64_t hash_key(const uint64_t *k, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ k[i]) * 1099511628211ull;
        h ^= h >> 29;
    }
    return h;
}

static int cache_grow(struct cache *c);

/* Add (bits, state); returns 1 if new, 0 if present, -1 out of memory. */
static int cache_add(struct cache *c, const uint64_t *bits, uint64_t state)
{
    size_t len = c->words + 1;
    uint64_t key[LIN_MAX_OPS / 64 + 1];
    memcpy(key, bits, c->words * sizeof *key);
    key[c->words] = state;
    if ((c->n + 1) * 2 > c->cap && cache_grow(c) != 0) {
        return -1;
    }
    size_t i = (size_t)hash_key(key, len) & (c->cap - 1);
    while (c->used[i]) {
        if (memcmp(c->keys + i * len, key, len * sizeof *key) == 0) {
            return 0;
        }
        i = (i + 1) & (c->cap - 1);
    }
    c->used[i] = true;
    memcpy(c->keys + i * len, key, len * sizeof *key);
    c->n++;
    return 1;
}

static int cache_grow(struct cache *c)
{
    size_t len = c->words + 1;
    size_t cap = c->cap == 0 ? 1024 : c->cap * 2;
    struct cache nc = {calloc(cap * len, sizeof *c->keys), calloc(cap, 1), cap, 0, c->words};
    if (nc.keys == NULL || nc.used == NULL) {
        free(nc.keys);
        free(nc.used);
        return -1;
    }
    for (size_t i = 0; i < c->cap; i++) {
        if (c->used[i]) {
            cache_add(&nc, c->keys + i * len, c->keys[i * len + c->words]);
        }
    }
    free(c->keys);
    free(c->used);
    *c = nc;
    return 0;
}

static int cmp_ent(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    /* At equal times calls go first: the two ops count as concurrent (the permissive side). */
    return (int)y->is_call - (int)x->is_call;
}

/* Entries 1..2n in time order; 0 is the head sentinel and 2n+1 the tail sentinel. */
static struct ent *build(const struct lin_op *ops, size_t n)
{
    struct ent *e = calloc(2 * n + 2, sizeof *e);
    if (e == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        e[1 + 2 * i] = (struct ent){.op = i, .is_call = true, .time = ops[i].invoke};
        e[2 + 2 * i] = (struct ent){
            .op = i, .is_call = false, .time = ops[i].unknown ? UINT64_MAX : ops[i].ret};
    }
    qsort(e + 1, 2 * n, sizeof *e, cmp_ent);
    size_t *call_of = calloc(n > 0 ? n : 1, sizeof *call_of);
    if (call_of == NULL) {
        free(e);
        return NULL;
    }
    for (size_t i = 1; i <= 2 * n; i++) {
        if (e[i].is_call) {
            call_of[e[i].op] = i;
        } else {
            e[i].match = call_of[e[i].op];
            e[call_of[e[i].op]].match = i;
        }
    }
    free(call_of);
    for (size_t i = 0; i <= 2 * n + 1; i++) {
        e[i].prev = i > 0 ? i - 1 : 0;
        e[i].next = i + 1;
    }
    return e;
}

static void lift(struct ent *e, size_t call)
{
    size_t ret = e[call].match;
    e[e[call].prev].next = e[call].next;
    e[e[call].next].prev = e[call].prev;
    e[e[ret].prev].next = e[ret].next;
    e[e[ret].next].prev = e[ret].prev;
}

static void unlift(struct ent *e, size_t call)
{
    size_t ret = e[call].match;
    e[e[ret].prev].next = ret;
    e[e[ret].next].prev = ret;
    e[e[call].prev].next = call;
    e[e[call].next].prev = call;
}

struct frame
{
    size_t call;
    uint64_t state;
};

static int search(const struct lin_op *ops,
                  size_t n,
                  struct ent *e,
                  struct cache *c,
                  struct frame *stack)
{
    uint64_t bits[LIN_MAX_OPS / 64 + 1] = {0};
    size_t tail = 2 * n + 1, top = 0;
    uint64_t state = 0;
    size_t cur = e[0].next;
    for (unsigned steps = 0; e[0].next != tail; steps++) {
        if (steps > BUDGET) {
            return -1;
        }
        const struct ent *x = &e[cur];
        const struct lin_op *op = &ops[x->op];
        if (x->is_call) {
            bool legal = op->kind == LIN_WRITE || op->value == state;
            uint64_t next = op->kind == LIN_WRITE ? op->value : state;
            if (legal) {
                bits[x->op / 64] |= 1ull << (x->op % 64);
                int added = cache_add(c, bits, next);
                if (added < 0) {
                    return -1;
                }
                if (added == 1) {
                    stack[top++] = (struct frame){cur, state};
                    state = next;
                    lift(e, cur);
                    cur = e[0].next;
                    continue;
                }
                bits[x->op / 64] &= ~(1ull << (x->op % 64));
            }
            cur = x->next;
            continue;
        }
        if (op->unknown) {
            /* Unknown returns sort last: every op still listed is an unknown write, and those
             * may never have taken effect. */
            return 1;
        }
        if (top == 0) {
            return 0;
        }
        struct frame f = stack[--top];
        bits[e[f.call].op / 64] &= ~(1ull << (e[f.call].op % 64));
        state = f.state;
        unlift(e, f.call);
        cur = e[f.call].next;
    }
    return 1;
}

int lin_check_register(const struct lin_op *ops, size_t n)
{
    if (n > LIN_MAX_OPS) {
        return -1;
    }
    struct ent *e = build(ops, n);
    struct frame *stack = calloc(n + 1, sizeof *stack);
    struct cache c = {NULL, NULL, 0, 0, (n + 63) / 64};
    int rv = -1;
    if (e != NULL && stack != NULL) {
        rv = search(ops, n, e, &c, stack);
    }
    free(e);
    free(stack);
    free(c.keys);
    free(c.used);
    return rv;
}
