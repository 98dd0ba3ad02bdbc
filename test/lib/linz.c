/* Linearizability checker: per-key Wing-Gong search with memoization, and window shrinking. */
#include "test/lib/linz.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Model states: a value id >= 0, or one of these. */
#define ST_ABSENT (-1)
#define ST_ANY (-2)   /* an arbitrary value: the start of a window cut from mid-history */
#define ST_OTHER (-3) /* every value that no op observes (see intern_values) */

/* One op compiled for the search. */
struct lop
{
    enum test_op_kind kind;
    bool unknown;   /* may take effect after its call, or never */
    bool succeeded; /* known cas: the reported outcome */
    int32_t arg;    /* put/cas: the new value id */
    int32_t exp;    /* cas: the expected value id or ST_ABSENT */
    int32_t res;    /* known get: the value id read or ST_ABSENT */
    int64_t call;
    int64_t ret;  /* TEST_HIST_NEVER when unknown */
    size_t src;   /* index into the key's op list */
    int32_t twin; /* unknown: the previous unknown op with the same effect, or -1 */
};

/* A doubly linked list node: a call or return event of an op (node 0 is the head). */
struct node
{
    int32_t prev, next; /* -1: none */
    int32_t op;         /* index into the lop array */
    int32_t match;      /* call: its return node */
    bool is_call;
};

/* Memo of configurations (linearized set, packed model state and constraint; see pack()):
 * open addressing over entry ids.  A set is stored as the span of words between its first
 * word that is not all ones and its last word that is not zero: ops are numbered in call order,
 * so the words before the span are full and those after it empty, and the span stays a word or
 * two however long the history is. */
struct memo
{
    uint64_t *arena;           /* the spans, back to back */
    size_t arena_n, arena_cap; /* words used / allocated */
    size_t *off;               /* entry i's span: arena[off[i] .. off[i] + len[i]) */
    uint32_t *lo;              /* entry i's span starts at this word of the set */
    uint32_t *len;             /* entry i's span length in words */
    uint64_t *conf;            /* entry i's packed state and constraint */
    uint64_t *hash;            /* entry i's hash */
    size_t n, cap;             /* entries used / allocated */
    int32_t *slots;            /* entry id + 1, 0 = empty */
    size_t n_slots;            /* power of two, > 2 * n */
};

/* Everything the checker of one history needs. */
struct ctx
{
    const struct test_op **ops; /* the key's ops (failed ones excluded), by call time */
    size_t n_ops;
    const char **vals; /* sorted distinct observed values of the key: id = index */
    size_t n_vals;
    uint64_t max_states;
    int64_t deadline; /* CLOCK_MONOTONIC ns, or TEST_HIST_NEVER */
    uint64_t states;  /* memoized, summed over all searches */
    bool *dropped;    /* ops left out of the window by prune_reads, or NULL */
    bool *seen;       /* scratch of compile: value ids observed in the window (all false) */
    char *errmsg;
};

static void set_err(struct ctx *c, const char *fmt, ...)
{
    if (c->errmsg == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, TEST_LINZ_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

/* ---- Model ---- */

/* Apply @o in state @s: false if the op's reported outcome is impossible there. */
static bool step(const struct lop *o, int32_t s, int32_t *out)
{
    switch (o->kind) {
    case TEST_OP_PUT:
        *out = o->arg;
        return true;
    case TEST_OP_DEL:
        *out = ST_ABSENT;
        return true;
    case TEST_OP_GET:
        *out = o->res;
        return s == ST_ANY || s == o->res;
    case TEST_OP_CAS:
        if (o->unknown) {
            /* From ANY the compare may or may not hold: ANY covers both results. */
            *out = s == ST_ANY ? ST_ANY : s == o->exp ? o->arg : s;
            return true;
        }
        if (o->succeeded) {
            *out = o->arg;
            return s == ST_ANY || s == o->exp;
        }
        *out = s;
        return s != o->exp;
    }
    assert(false);
    return false;
}

/* ---- Memo ---- */

static void memo_fini(struct memo *m)
{
    free(m->arena);
    free(m->off);
    free(m->lo);
    free(m->len);
    free(m->conf);
    free(m->hash);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int memo_rehash(struct memo *m)
{
    size_t n_slots = m->n_slots ? 2 * m->n_slots : 1024;
    int32_t *slots = calloc(n_slots, sizeof *slots);
    if (slots == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->hash[i] & (n_slots - 1);
        while (slots[j] != 0) {
            j = (j + 1) & (n_slots - 1);
        }
        slots[j] = (int32_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n_slots;
    return 0;
}

/* realloc *p to @n elements of @size bytes; false (and *p intact) on failure. */
static bool grow(void **p, size_t n, size_t size)
{
    void *q = realloc(*p, n * size);
    if (q == NULL) {
        return false;
    }
    *p = q;
    return true;
}

static int memo_grow(struct memo *m)
{
    size_t cap = m->cap ? 2 * m->cap : 512;
    bool ok = grow((void **)&m->off, cap, sizeof *m->off) &&
              grow((void **)&m->lo, cap, sizeof *m->lo) &&
              grow((void **)&m->len, cap, sizeof *m->len) &&
              grow((void **)&m->conf, cap, sizeof *m->conf) &&
              grow((void **)&m->hash, cap, sizeof *m->hash);
    if (ok) {
        m->cap = cap;
    }
    return ok ? 0 : TEST_LINZ_ENOMEM;
}

/* Insert (set, s) unless present; the set is @bits with its span [lo, lo + len).  *added tells
 * which. */
static int memo_insert(struct memo *m,
                       const uint64_t *bits,
                       uint32_t lo,
                       uint32_t len,
                       uint64_t h,
                       uint64_t s,
                       bool *added)
{
    h ^= s * 0x9e3779b97f4a7c15ull;
    *added = false;
    if (2 * (m->n + 1) > m->n_slots && memo_rehash(m) != 0) {
        return TEST_LINZ_ENOMEM;
    }
    size_t j = h & (m->n_slots - 1);
    for (; m->slots[j] != 0; j = (j + 1) & (m->n_slots - 1)) {
        size_t e = (size_t)m->slots[j] - 1;
        if (m->hash[e] == h && m->conf[e] == s && m->lo[e] == lo && m->len[e] == len &&
            memcmp(m->arena + m->off[e], bits + lo, len * sizeof *bits) == 0) {
            return 0;
        }
    }
    if ((m->n == m->cap && memo_grow(m) != 0) || m->n >= INT32_MAX - 1) {
        return TEST_LINZ_ENOMEM;
    }
    if (m->arena_n + len > m->arena_cap) {
        size_t cap = 2 * (m->arena_cap + len) + 1024;
        if (!grow((void **)&m->arena, cap, sizeof *m->arena)) {
            return TEST_LINZ_ENOMEM;
        }
        m->arena_cap = cap;
    }
    memcpy(m->arena + m->arena_n, bits + lo, len * sizeof *bits);
    m->off[m->n] = m->arena_n;
    m->arena_n += len;
    m->lo[m->n] = lo;
    m->len[m->n] = len;
    m->conf[m->n] = s;
    m->hash[m->n] = h;
    m->slots[j] = (int32_t)++m->n;
    *added = true;
    return 0;
}

/* ---- Search ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct event
{
    int64_t time;
    bool is_call;
    bool unknown;
    int32_t op;
};

/* Order: time; calls before returns (equal times are concurrent); known returns before
 * unknown ones; then op index, so the search is deterministic. */
static int event_cmp(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    if (x->is_call != y->is_call) {
        return x->is_call ? -1 : 1;
    }
    if (x->unknown != y->unknown) {
        return x->unknown ? 1 : -1;
    }
    return (x->op > y->op) - (x->op < y->op);
}

/* Build the event list: node 0 is the head, then events in order. */
static struct node *build_list(const struct lop *ops, size_t n)
{
    struct event *ev = malloc(2 * n * sizeof *ev);
    struct node *nodes = malloc((2 * n + 1) * sizeof *nodes);
    int32_t *call_node = malloc(n * sizeof *call_node);
    if (ev == NULL || nodes == NULL || call_node == NULL) {
        free(ev);
        free(nodes);
        free(call_node);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        ev[2 * i] = (struct event){ops[i].call, true, ops[i].unknown, (int32_t)i};
        ev[2 * i + 1] = (struct event){ops[i].ret, false, ops[i].unknown, (int32_t)i};
    }
    qsort(ev, 2 * n, sizeof *ev, event_cmp);
    nodes[0] = (struct node){-1, 2 * n > 0 ? 1 : -1, -1, -1, false};
    for (size_t i = 0; i < 2 * n; i++) {
        int32_t id = (int32_t)i + 1;
        nodes[id] = (struct node){id - 1, i + 1 < 2 * n ? id + 1 : -1, ev[i].op, -1, ev[i].is_call};
        if (ev[i].is_call) {
            call_node[ev[i].op] = id;
        } else {
            nodes[call_node[ev[i].op]].match = id;
        }
    }
    free(ev);
    free(call_node);
    return nodes;
}

static void unlink_node(struct node *nodes, int32_t i)
{
    nodes[nodes[i].prev].next = nodes[i].next;
    if (nodes[i].next != -1) {
        nodes[nodes[i].next].prev = nodes[i].prev;
    }
}

static void relink_node(struct node *nodes, int32_t i)
{
    nodes[nodes[i].prev].next = i;
    if (nodes[i].next != -1) {
        nodes[nodes[i].next].prev = i;
    }
}

/* Lift a call and its return out of the list; unlift restores them (reverse order). */
static void lift(struct node *nodes, int32_t call)
{
    unlink_node(nodes, call);
    unlink_node(nodes, nodes[call].match);
}

static void unlift(struct node *nodes, int32_t call)
{
    relink_node(nodes, nodes[call].match);
    relink_node(nodes, call);
}

/* State of one search run. */
struct run
{
    struct node *nodes;
    uint64_t *bits; /* the linearized set */
    size_t words;   /* words of bits */
    size_t lo;      /* first word of bits that is not all ones (words if none) */
    size_t hi;      /* last word of bits that is not zero, plus one (0 if none) */
    uint64_t *zob;  /* per-op random words: hash of a set = xor of its members' words */
    int32_t *stack_node;
    int32_t *stack_state;
    int32_t *stack_pre;
    struct memo memo;
    uint64_t epoch;   /* bumped whenever the linearized set changes */
    uint64_t d_epoch; /* the epoch the relevance set below was computed for, plus one */
    int32_t *d;       /* states that some pending op would observe (see relevant()) */
    size_t n_d;
    bool d_any; /* a pending op depends on any change of the current state */
};

static void run_fini(struct run *r)
{
    free(r->nodes);
    free(r->bits);
    free(r->zob);
    free(r->stack_node);
    free(r->stack_state);
    free(r->stack_pre);
    free(r->d);
    memo_fini(&r->memo);
    memset(r, 0, sizeof *r);
}

static int run_init(struct run *r, const struct lop *ops, size_t n)
{
    memset(r, 0, sizeof *r);
    r->words = n / 64 + 1;
    r->nodes = build_list(ops, n);
    r->bits = calloc(r->words, sizeof *r->bits);
    r->zob = malloc((n + 1) * sizeof *r->zob);
    r->stack_node = malloc((n + 1) * sizeof *r->stack_node);
    r->stack_state = malloc((n + 1) * sizeof *r->stack_state);
    r->stack_pre = malloc((n + 1) * sizeof *r->stack_pre);
    r->d = malloc((n + 1) * sizeof *r->d);
    if (r->nodes == NULL || r->bits == NULL || r->zob == NULL || r->stack_node == NULL ||
        r->stack_state == NULL || r->stack_pre == NULL || r->d == NULL) {
        run_fini(r);
        return TEST_LINZ_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        r->zob[i] = mix64(i);
    }
    return 0;
}

/* Add op @o to the linearized set, keeping lo and hi exact. */
static void bit_set(struct run *r, int32_t o)
{
    size_t w = (size_t)o / 64;
    r->bits[w] |= 1ull << (o % 64);
    while (r->lo < r->words && r->bits[r->lo] == UINT64_MAX) {
        r->lo++;
    }
    r->hi = w + 1 > r->hi ? w + 1 : r->hi;
}

static void bit_clear(struct run *r, int32_t o)
{
    size_t w = (size_t)o / 64;
    r->bits[w] &= ~(1ull << (o % 64));
    r->lo = w < r->lo ? w : r->lo;
    while (r->hi > 0 && r->bits[r->hi - 1] == 0) {
        r->hi--;
    }
}

static bool over_budget(const struct ctx *c, const struct run *r, uint64_t steps)
{
    if (c->max_states != 0 && r->memo.n > c->max_states) {
        return true;
    }
    return (steps & 1023) == 0 && c->deadline != TEST_HIST_NEVER && test_hist_now() > c->deadline;
}

/* No constraint: the last op linearized was a known one (or none). */
#define NO_PRE INT32_MIN

/*
 * Unknown ops are where a plain search explodes: each stays pending forever, so every subset
 * of them could be linearized at every point.  We search only canonical linearizations, in
 * which every linearized unknown op u changes the state and matters to the op x right after it.
 * Any linearization can be made canonical: if u changes nothing, or x is legal in the state
 * before u with the same result state, drop u (unknown ops may never happen; what follows x
 * is unchanged); an unknown op last in the order is dropped likewise.  Dropping keeps every
 * real-time constraint, so a linearizable history has a canonical linearization.  The
 * constraint "x must depend on u" is carried as @pre, the state before u, and is part of the
 * memoized configuration.
 */
static bool allowed(const struct lop *o,
                    const uint64_t *bits,
                    int32_t state,
                    int32_t pre,
                    int32_t *next)
{
    /* Unknown ops with the same effect are interchangeable once called: use them in call
     * order only, or every subset of them would be tried. */
    if (o->twin >= 0 && (bits[o->twin / 64] & (1ull << (o->twin % 64))) == 0) {
        return false;
    }
    if (!step(o, state, next) || (o->unknown && *next == state)) {
        return false;
    }
    int32_t alt;
    if (pre == NO_PRE || !step(o, pre, &alt)) {
        return true;
    }
    /* Legal before u too: u must change what this op leaves behind (else drop u), and not by
     * merely passing through an op that changes nothing either way (else move u after it). */
    return alt != *next && !(alt == pre && *next == state);
}

static uint64_t pack(int32_t state, int32_t pre)
{
    return (uint64_t)(uint32_t)pre << 32 | (uint32_t)state;
}

/* Collect what the pending ops (the calls before the first return in the list) would observe
 * right after an unknown op taking the state away from @state: the states that make a known get
 * or cas legal, or an unknown cas apply; and whether some op depends on leaving @state at all
 * (a failed cas expecting it, an unknown cas that would apply in it). */
static void collect_observers(struct run *r, const struct lop *ops, int32_t state)
{
    r->n_d = 0;
    r->d_any = false;
    for (int32_t e = r->nodes[0].next; e != -1 && r->nodes[e].is_call; e = r->nodes[e].next) {
        const struct lop *x = &ops[r->nodes[e].op];
        if (x->kind == TEST_OP_GET) {
            r->d[r->n_d++] = x->res;
        } else if (x->kind == TEST_OP_CAS && (x->unknown || x->succeeded)) {
            r->d[r->n_d++] = x->exp;
        }
        bool leaves = x->kind == TEST_OP_CAS && (x->unknown || !x->succeeded);
        r->d_any = r->d_any || (leaves && x->exp == state);
    }
    r->d_epoch = r->epoch + 1;
}

/* Whether an unknown op that moves the state from @state to @next can matter to the op right
 * after it (the canonical form above): some pending op must depend on it.  Without this
 * filter, each of hundreds of unknown writes pending in a long history would be tried, and
 * memoized, at every step. */
static bool relevant(struct run *r, const struct lop *ops, int32_t state, int32_t next)
{
    if (r->d_epoch != r->epoch + 1) {
        collect_observers(r, ops, state);
    }
    for (size_t i = 0; i < r->n_d && !r->d_any; i++) {
        if (r->d[i] == next) {
            return true;
        }
    }
    return r->d_any;
}

/* Linearize op @o of node @e if allowed and new; returns 1 if done, 0 if not, or an error. */
static int try_op(struct run *r,
                  const struct lop *ops,
                  int32_t e,
                  int32_t *state,
                  int32_t *pre,
                  size_t *sp,
                  uint64_t *h)
{
    int32_t o = r->nodes[e].op, next;
    if (!allowed(&ops[o], r->bits, *state, *pre, &next)) {
        return 0;
    }
    if (ops[o].unknown && *pre == NO_PRE && !relevant(r, ops, *state, next)) {
        return 0;
    }
    int32_t npre = ops[o].unknown ? *state : NO_PRE;
    bool added;
    bit_set(r, o);
    uint32_t len = r->hi > r->lo ? (uint32_t)(r->hi - r->lo) : 0;
    if (memo_insert(&r->memo, r->bits, (uint32_t)r->lo, len, *h ^ r->zob[o], pack(next, npre),
                    &added) != 0) {
        return -1;
    }
    if (!added) {
        bit_clear(r, o);
        return 0;
    }
    r->stack_node[*sp] = e;
    r->stack_state[*sp] = *state;
    r->stack_pre[(*sp)++] = *pre;
    *state = next;
    *pre = npre;
    *h ^= r->zob[o];
    lift(r->nodes, e);
    r->epoch++;
    return 1;
}

/* The search loop proper (see linz.h).  Fills *v. */
static int search_loop(struct ctx *c,
                       struct run *r,
                       const struct lop *ops,
                       size_t n_known,
                       int32_t state,
                       enum test_linz_verdict *v)
{
    struct node *nodes = r->nodes;
    size_t sp = 0, done = 0;
    uint64_t h = 0, steps = 0;
    int32_t pre = NO_PRE;
    int32_t e = nodes[0].next;
    while (done < n_known) {
        if (over_budget(c, r, ++steps)) {
            *v = TEST_LINZ_GAVE_UP;
            return 0;
        }
        assert(e != -1);
        int32_t o = nodes[e].op;
        if (nodes[e].is_call) {
            int rv = try_op(r, ops, e, &state, &pre, &sp, &h);
            if (rv < 0) {
                return TEST_LINZ_ENOMEM;
            }
            done += rv > 0 && !ops[o].unknown;
            e = rv > 0 ? nodes[0].next : nodes[e].next;
            continue;
        }
        /* A return whose op is not linearized yet: undo the last choice. */
        assert(!ops[o].unknown);
        if (sp == 0) {
            *v = TEST_LINZ_VIOLATION;
            return 0;
        }
        e = r->stack_node[--sp];
        state = r->stack_state[sp];
        pre = r->stack_pre[sp];
        o = nodes[e].op;
        bit_clear(r, o);
        h ^= r->zob[o];
        done -= !ops[o].unknown;
        unlift(nodes, e);
        r->epoch++;
        e = nodes[e].next;
    }
    *v = TEST_LINZ_OK;
    return 0;
}

/* A sort record for finding twins: unknown ops with the same effect. */
struct twin_key
{
    int64_t k[4]; /* known-ness, kind, arg, expected: equal keys mean the same effect */
    int32_t idx;  /* op index (call order) */
};

static int twin_cmp(const void *a, const void *b)
{
    const struct twin_key *x = a, *y = b;
    for (int i = 0; i < 4; i++) {
        if (x->k[i] != y->k[i]) {
            return x->k[i] < y->k[i] ? -1 : 1;
        }
    }
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Link each unknown op of @ops (in call order) to its previous twin. */
static int link_twins(struct lop *ops, size_t n)
{
    struct twin_key *t = malloc((n + 1) * sizeof *t);
    if (t == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct lop *o = &ops[i];
        t[i] = (struct twin_key){
            {o->unknown ? 0 : (int64_t)i + 1, o->kind, o->kind == TEST_OP_DEL ? 0 : o->arg,
             o->kind == TEST_OP_CAS ? o->exp : 0},
            (int32_t)i};
        ops[i].twin = -1;
    }
    qsort(t, n, sizeof *t, twin_cmp);
    for (size_t i = 1; i < n; i++) {
        if (t[i].k[0] == 0 && memcmp(t[i].k, t[i - 1].k, sizeof t[i].k) == 0) {
            ops[t[i].idx].twin = t[i - 1].idx;
        }
    }
    free(t);
    return 0;
}

/* Is the history @ops (from state @init) linearizable? */
static int search(struct ctx *c, struct lop *ops, size_t n, int32_t init, enum test_linz_verdict *v)
{
    size_t n_known = 0;
    for (size_t i = 0; i < n; i++) {
        n_known += !ops[i].unknown;
    }
    if (n_known == 0) {
        *v = TEST_LINZ_OK;
        return 0;
    }
    struct run r = {0};
    int rv = link_twins(ops, n);
    if (rv == 0) {
        rv = run_init(&r, ops, n);
    }
    if (rv == 0) {
        rv = search_loop(c, &r, ops, n_known, init, v);
        c->states += r.memo.n;
    }
    if (rv != 0) {
        set_err(c, "linearizability search over %zu ops: out of memory", n);
    }
    run_fini(&r);
    return rv;
}

/* ---- Compiling a key's ops for a window ---- */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int32_t value_id(const struct ctx *c, const char *s)
{
    if (s == NULL) {
        return ST_ABSENT;
    }
    const char **p = bsearch(&s, c->vals, c->n_vals, sizeof *c->vals, str_cmp);
    return p == NULL ? ST_OTHER : (int32_t)(p - c->vals);
}

/* Collect the distinct observed values of the key's ops into c->vals: those a get returned or a
 * cas compared against.  Every other value gets the one id ST_OTHER: the model's verdicts only
 * ever compare the state with observed values, so values nobody observes are
 * indistinguishable, and merging them lets the search treat their writers as twins. */
static int intern_values(struct ctx *c)
{
    c->vals = malloc((2 * c->n_ops + 1) * sizeof *c->vals);
    if (c->vals == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->n_ops; i++) {
        const struct test_op *o = c->ops[i];
        const char *s[2] = {o->expected, o->result};
        for (size_t j = 0; j < 2; j++) {
            if (s[j] != NULL) {
                c->vals[n++] = s[j];
            }
        }
    }
    qsort(c->vals, n, sizeof *c->vals, str_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u == 0 || strcmp(c->vals[u - 1], c->vals[i]) != 0) {
            c->vals[u++] = c->vals[i];
        }
    }
    c->n_vals = u;
    c->seen = calloc(u + 1, sizeof *c->seen);
    return c->seen == NULL ? TEST_LINZ_ENOMEM : 0;
}

/* How the window [s, t] sees op @o: false if it is left out; *unknown if it is treated as
 * unknown (see linz.h for why these cuts are sound). */
static bool in_window(const struct test_op *o, int64_t s, int64_t t, bool *unknown)
{
    bool known = o->outcome == TEST_OUT_OK;
    if (o->call_ns > t || (known && o->call_ns < s && o->ret_ns < s)) {
        return false;
    }
    *unknown = !known || o->ret_ns > t || o->call_ns < s;
    /* A read whose answer is not used constrains nothing. */
    return !(*unknown && o->kind == TEST_OP_GET);
}

/* As intern_values does for the key, give every value no op of this window observes the id
 * ST_OTHER, so that the writers of values observed only outside the window (such as unknown
 * writes long ago, which every later window must keep) become twins. */
static void merge_unobserved(const struct ctx *c, struct lop *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t v = ops[i].kind == TEST_OP_GET   ? ops[i].res
                    : ops[i].kind == TEST_OP_CAS ? ops[i].exp
                                                 : -1;
        if (v >= 0) {
            c->seen[v] = true;
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool writes = ops[i].kind == TEST_OP_PUT || ops[i].kind == TEST_OP_CAS;
        if (writes && ops[i].arg >= 0 && !c->seen[ops[i].arg]) {
            ops[i].arg = ST_OTHER;
        }
    }
    for (size_t i = 0; i < n; i++) {
        c->seen[ops[i].res >= 0 ? ops[i].res : 0] = false;
        c->seen[ops[i].exp >= 0 ? ops[i].exp : 0] = false;
    }
}

/* Compile the ops of window [s, t] into @out (room for c->n_ops); returns the count. */
static size_t compile(const struct ctx *c, int64_t s, int64_t t, struct lop *out)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_ops; i++) {
        const struct test_op *o = c->ops[i];
        bool unknown;
        if (!in_window(o, s, t, &unknown) || (c->dropped != NULL && c->dropped[i])) {
            continue;
        }
        out[n++] = (struct lop){
            .kind = o->kind,
            .unknown = unknown,
            .succeeded = o->succeeded,
            .arg = value_id(c, o->value),
            .exp = value_id(c, o->expected),
            .res = value_id(c, o->result),
            .call = o->call_ns,
            .ret = unknown ? TEST_HIST_NEVER : o->ret_ns,
            .src = i,
        };
    }
    merge_unobserved(c, out, n);
    return n;
}

/* Is window [s, t] (from state @init) a proven violation?  Gave-up counts as no. */
static int window_violates(struct ctx *c,
                           struct lop *buf,
                           int64_t s,
                           int64_t t,
                           int32_t init,
                           bool *violates)
{
    size_t n = compile(c, s, t, buf);
    enum test_linz_verdict v;
    int rv = search(c, buf, n, init, &v);
    *violates = rv == 0 && v == TEST_LINZ_VIOLATION;
    return rv;
}

static int i64_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorted distinct call times (and return times of OK ops if @with_ret) in [lo, hi]. */
static size_t cut_times(const struct ctx *c, int64_t lo, int64_t hi, bool with_ret, int64_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_ops; i++) {
        const struct test_op *o = c->ops[i];
        if (o->call_ns >= lo && o->call_ns <= hi) {
            out[n++] = o->call_ns;
        }
        if (with_ret && o->outcome == TEST_OUT_OK && o->ret_ns >= lo && o->ret_ns <= hi) {
            out[n++] = o->ret_ns;
        }
    }
    qsort(out, n, sizeof *out, i64_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u == 0 || out[u - 1] != out[i]) {
            out[u++] = out[i];
        }
    }
    return u;
}

/* A window [s, t] of a key, checked from state init. */
struct span
{
    int64_t s, t;
    int32_t init;
};

/* Earliest T in (in->s, in->t] such that [in->s, T] still violates; in violates. */
static int shrink_end(struct ctx *c,
                      struct lop *buf,
                      const struct span *in,
                      int64_t *times,
                      int64_t *t)
{
    size_t n = cut_times(c, in->s, in->t, true, times);
    if (in->t != TEST_HIST_NEVER) {
        times[n++] = in->t; /* known to violate; the largest candidate */
    }
    size_t lo = 0, hi = n - 1;
    int rv = 0;
    while (lo < hi && rv == 0) {
        size_t mid = lo + (hi - lo) / 2;
        bool bad;
        rv = window_violates(c, buf, in->s, times[mid], in->init, &bad);
        if (bad) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    *t = times[hi];
    return rv;
}

/* Shrink the violating window @in to @out: first its end, then its start (see linz.h). */
static int shrink(struct ctx *c, struct lop *buf, const struct span *in, struct span *out)
{
    int64_t *times = malloc((2 * c->n_ops + 2) * sizeof *times);
    if (times == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    *out = *in;
    int rv = shrink_end(c, buf, in, times, &out->t);
    /* Latest S after in->s from an arbitrary value; none: keep in's start and state. */
    size_t n = rv == 0 ? cut_times(c, in->s, out->t, false, times) : 0;
    size_t first = n > 0 && times[0] == in->s ? 1 : 0;
    size_t good = first; /* candidates before good are known to violate */
    size_t top = n;      /* candidates at or after top are known not to */
    while (good < top && rv == 0) {
        size_t mid = good + (top - good) / 2;
        bool bad;
        rv = window_violates(c, buf, times[mid], out->t, ST_ANY, &bad);
        if (bad) {
            good = mid + 1;
        } else {
            top = mid;
        }
    }
    if (good > first) {
        out->s = times[good - 1];
        out->init = ST_ANY;
    }
    free(times);
    return rv;
}

/* Ops per window of the first pass (see scan_windows). */
#define WINDOW_OPS 64

/* Look for a violation inside short windows (WINDOW_OPS ops by call order, half
 * overlapping) before searching the whole key: proving a violation needs an exhaustive search
 * of everything before it, which for a long history is ruinous, while a window is a sound
 * proof on its own (see linz.h).  *hit tells whether @found was set. */
static int scan_windows(struct ctx *c, struct lop *buf, struct span *found, bool *hit)
{
    *hit = false;
    if (c->n_ops <= 2 * WINDOW_OPS) {
        return 0; /* the whole search is as cheap */
    }
    int rv = 0;
    for (size_t a = 0; rv == 0; a += WINDOW_OPS / 2) {
        size_t b = a + WINDOW_OPS < c->n_ops ? a + WINDOW_OPS : c->n_ops;
        struct span sp = {a == 0 ? INT64_MIN : c->ops[a]->call_ns, c->ops[b - 1]->call_ns,
                          a == 0 ? ST_ABSENT : ST_ANY};
        for (size_t i = a; i < b; i++) {
            const struct test_op *o = c->ops[i];
            if (o->outcome == TEST_OUT_OK && o->ret_ns > sp.t) {
                sp.t = o->ret_ns; /* let the window's own ops complete */
            }
        }
        bool bad;
        rv = window_violates(c, buf, sp.s, sp.t, sp.init, &bad);
        if (rv == 0 && bad) {
            *found = sp;
            *hit = true;
        }
        if (*hit || b == c->n_ops) {
            break;
        }
    }
    return rv;
}

/* At most this many reads are tried for removal: each try is a search. */
#define PRUNE_TRIES 64

/* Leave out of window [s, t] every known read (get, or cas that failed: neither changes the
 * state) whose removal keeps the window violating.  Sound: removing a read from a
 * linearizable history leaves it linearizable, so the smaller window still proves the
 * violation. */
static int prune_reads(struct ctx *c, struct lop *buf, int64_t s, int64_t t, int32_t init)
{
    c->dropped = calloc(c->n_ops + 1, sizeof *c->dropped);
    if (c->dropped == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    int rv = 0;
    for (size_t i = 0, tries = 0; i < c->n_ops && tries < PRUNE_TRIES && rv == 0; i++) {
        const struct test_op *o = c->ops[i];
        bool unknown, bad;
        bool read = o->kind == TEST_OP_GET || (o->kind == TEST_OP_CAS && !o->succeeded);
        if (!read || !in_window(o, s, t, &unknown) || unknown) {
            continue;
        }
        tries++;
        c->dropped[i] = true;
        rv = window_violates(c, buf, s, t, init, &bad);
        c->dropped[i] = bad;
    }
    return rv;
}

/* ---- Driver ---- */

static int op_ptr_cmp(const void *a, const void *b)
{
    const struct test_op *x = *(const struct test_op *const *)a;
    const struct test_op *y = *(const struct test_op *const *)b;
    int k = strcmp(x->key, y->key);
    if (k != 0) {
        return k;
    }
    if (x->call_ns != y->call_ns) {
        return x->call_ns < y->call_ns ? -1 : 1;
    }
    return (x > y) - (x < y);
}

static char *dup_opt(const char *s, bool *ok)
{
    char *d = s == NULL ? NULL : strdup(s);
    *ok = *ok && (s == NULL || d != NULL);
    return d;
}

/* Copy the window [s, t] of the key into the result. */
static int fill_window(const struct ctx *c, int64_t s, int64_t t, struct test_linz_result *out)
{
    out->window = calloc(c->n_ops, sizeof *out->window);
    bool ok = out->window != NULL;
    out->key = ok ? strdup(c->ops[0]->key) : NULL;
    ok = ok && out->key != NULL;
    for (size_t i = 0; i < c->n_ops && ok; i++) {
        bool unknown;
        const struct test_op *o = c->ops[i];
        if (!in_window(o, s, t, &unknown) || (c->dropped != NULL && c->dropped[i])) {
            continue;
        }
        struct test_linz_wop *w = &out->window[out->n_window++];
        w->op = *o;
        w->as_unknown = unknown && o->outcome == TEST_OUT_OK;
        w->op.key = dup_opt(o->key, &ok);
        w->op.value = dup_opt(o->value, &ok);
        w->op.expected = dup_opt(o->expected, &ok);
        w->op.result = dup_opt(o->result, &ok);
    }
    out->window_start = s;
    out->window_end = t;
    return ok ? 0 : TEST_LINZ_ENOMEM;
}

/* Check one key (c->ops set); on a violation fill the window into @out. */
static int check_key(struct ctx *c, struct test_linz_result *out, enum test_linz_verdict *v)
{
    struct lop *buf = malloc((c->n_ops + 1) * sizeof *buf);
    int rv = buf == NULL ? TEST_LINZ_ENOMEM : intern_values(c);
    struct span sp = {INT64_MIN, TEST_HIST_NEVER, ST_ABSENT};
    bool hit = false;
    if (rv == 0) {
        out->n_ops += compile(c, INT64_MIN, TEST_HIST_NEVER, buf);
        rv = scan_windows(c, buf, &sp, &hit);
    }
    if (rv == 0 && hit) {
        *v = TEST_LINZ_VIOLATION;
    } else if (rv == 0) {
        size_t n = compile(c, INT64_MIN, TEST_HIST_NEVER, buf);
        rv = search(c, buf, n, ST_ABSENT, v);
    }
    if (rv == 0 && *v == TEST_LINZ_VIOLATION) {
        struct span w;
        rv = shrink(c, buf, &sp, &w);
        if (rv == 0) {
            rv = prune_reads(c, buf, w.s, w.t, w.init);
        }
        if (rv == 0) {
            out->window_from_any = w.init == ST_ANY;
            rv = fill_window(c, w.s, w.t, out);
        }
        free(c->dropped);
        c->dropped = NULL;
    }
    if (rv == TEST_LINZ_ENOMEM) {
        set_err(c, "check key %s (%zu ops): out of memory", c->ops[0]->key, c->n_ops);
    }
    free(c->vals);
    c->vals = NULL;
    free(c->seen);
    c->seen = NULL;
    free(buf);
    return rv;
}

/* Pointers to the non-failed ops of @h sorted by key, then call time. */
static int sorted_ops(struct test_hist *h,
                      struct ctx *c,
                      const struct test_op ***ops,
                      size_t *n,
                      size_t *excluded)
{
    *ops = malloc((h->n_ops + 1) * sizeof **ops);
    if (*ops == NULL) {
        set_err(c, "sort %zu ops: out of memory", h->n_ops);
        return TEST_LINZ_ENOMEM;
    }
    *n = 0;
    for (size_t i = 0; i < h->n_ops; i++) {
        const struct test_op *o = &h->ops[i];
        bool bad_kind = o->kind < TEST_OP_PUT || o->kind > TEST_OP_CAS;
        bool bad_out = o->outcome < TEST_OUT_OK || o->outcome > TEST_OUT_UNKNOWN;
        if (o->key == NULL || bad_kind || bad_out ||
            (o->outcome == TEST_OUT_OK && o->ret_ns < o->call_ns)) {
            set_err(c, "op %zu is malformed (key, kind, outcome or times)", i);
            free(*ops);
            return TEST_LINZ_EINVAL;
        }
        if (o->serializable) {
            (*excluded)++; /* serializable reads are outside the claim */
        } else if (o->outcome != TEST_OUT_FAILED) {
            (*ops)[(*n)++] = o;
        }
    }
    qsort(*ops, *n, sizeof **ops, op_ptr_cmp);
    return 0;
}

/* Check each key of the sorted @ops in turn; stop at the first violation.  The first key given
 * up on is reported only if no key violates. */
static int check_keys(struct ctx *c,
                      const struct test_op **ops,
                      size_t n,
                      struct test_linz_result *out)
{
    char *gave_up = NULL;
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0;) {
        size_t j = i + 1;
        while (j < n && strcmp(ops[j]->key, ops[i]->key) == 0) {
            j++;
        }
        out->n_keys++;
        c->ops = ops + i;
        c->n_ops = j - i;
        enum test_linz_verdict v = TEST_LINZ_OK;
        rv = check_key(c, out, &v);
        out->states = c->states;
        if (rv == 0 && v == TEST_LINZ_VIOLATION) {
            out->verdict = v;
            free(gave_up);
            return 0;
        }
        if (rv == 0 && v == TEST_LINZ_GAVE_UP && gave_up == NULL) {
            gave_up = strdup(ops[i]->key);
            rv = gave_up == NULL ? TEST_LINZ_ENOMEM : 0;
        }
        i = j;
    }
    out->verdict = gave_up != NULL ? TEST_LINZ_GAVE_UP : TEST_LINZ_OK;
    out->key = gave_up;
    return rv;
}

int test_linz_check(struct test_hist *h,
                    const struct test_linz_opts *opts,
                    struct test_linz_result *out,
                    char *errmsg)
{
    int64_t start = test_hist_now();
    memset(out, 0, sizeof *out);
    struct ctx c = {.errmsg = errmsg, .deadline = TEST_HIST_NEVER};
    if (opts != NULL) {
        c.max_states = opts->max_states;
        if (opts->max_ns > 0) {
            c.deadline = start + opts->max_ns;
        }
    }
    pthread_mutex_lock(&h->lock);
    const struct test_op **ops;
    size_t n;
    int rv = sorted_ops(h, &c, &ops, &n, &out->n_serializable);
    if (rv == 0) {
        rv = check_keys(&c, ops, n, out);
        free(ops);
    }
    pthread_mutex_unlock(&h->lock);
    out->elapsed_ns = test_hist_now() - start;
    if (rv != 0) {
        test_linz_result_fini(out);
    }
    return rv;
}

void test_linz_result_fini(struct test_linz_result *r)
{
    for (size_t i = 0; i < r->n_window; i++) {
        struct test_op *o = &r->window[i].op;
        free(o->key);
        free(o->value);
        free(o->expected);
        free(o->result);
    }
    free(r->window);
    free(r->key);
    memset(r, 0, sizeof *r);
}

const char *test_linz_verdict_str(enum test_linz_verdict v)
{
    switch (v) {
    case TEST_LINZ_OK:
        return "linearizable";
    case TEST_LINZ_VIOLATION:
        return "not linearizable";
    case TEST_LINZ_GAVE_UP:
        return "gave up";
    }
    return "invalid verdict";
}

void test_linz_result_print(const struct test_linz_result *r, FILE *f)
{
    fprintf(f, "linz: %s (%zu ops, %zu keys, %" PRIu64 " states, %.3f s)\n",
            test_linz_verdict_str(r->verdict), r->n_ops, r->n_keys, r->states,
            (double)r->elapsed_ns / 1e9);
    if (r->n_serializable > 0) {
        fprintf(f, "linz: %zu serializable reads not checked (outside the claim)\n",
                r->n_serializable);
    }
    if (r->verdict == TEST_LINZ_GAVE_UP) {
        fprintf(f, "linz: gave up on key %s\n", r->key);
    }
    if (r->verdict != TEST_LINZ_VIOLATION) {
        return;
    }
    int64_t t0 = r->n_window > 0 ? r->window[0].op.call_ns : 0;
    fprintf(f,
            "linz: key %s: these %zu op(s) cannot be linearized (starting from %s; times in ms "
            "after %" PRId64 " ns):\n",
            r->key, r->n_window, r->window_from_any ? "any value" : "absent", t0);
    for (size_t i = 0; i < r->n_window; i++) {
        char buf[256];
        test_op_format(&r->window[i].op, t0, buf, sizeof buf);
        fprintf(f, "  %s%s\n", buf,
                r->window[i].as_unknown ? "  <- overlaps the window edge: treated as unknown" : "");
    }
}
