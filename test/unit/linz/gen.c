/* Seeded generator of linearizable histories, and provable-violation predicates. */
#include "test/unit/linz/gen.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/seed.h"

/* A generated op before it is added: its linearization point decides its answer. */
struct gop
{
    struct test_op op;
    int64_t lin;  /* the instant it takes effect (inside [call, ret]) */
    bool happens; /* whether it takes effect at all */
    uint32_t key; /* the key's number */
};

/* Strings the ops point to; they stay put while the ops are sorted. */
struct strs
{
    char (*val)[24]; /* op i's value "v<i>" */
    char (*key)[16]; /* key j's name "k<j>" */
};

static int gop_cmp(const void *a, const void *b)
{
    const struct gop *x = a, *y = b;
    if (x->lin != y->lin) {
        return x->lin < y->lin ? -1 : 1;
    }
    return (x > y) - (x < y);
}

static int64_t rand_range(uint64_t *seed, int64_t n)
{
    return n <= 0 ? 0 : (int64_t)(test_rand(seed) % (uint64_t)n);
}

/* Draw the ops: kinds, keys, times, outcomes; answers come later. */
static void draw(struct gop *g, const struct strs *s, const struct gen_opts *o, uint64_t *seed)
{
    int64_t *next = calloc(o->clients, sizeof *next);
    assert(next != NULL);
    for (size_t i = 0; i < o->ops; i++) {
        struct gop *p = &g[i];
        uint32_t c = (uint32_t)(test_rand(seed) % o->clients);
        unsigned r = (unsigned)(test_rand(seed) % 100);
        p->op.client = c;
        p->op.kind = r < 40   ? TEST_OP_GET
                     : r < 70 ? TEST_OP_PUT
                     : r < 80 ? TEST_OP_DEL
                              : TEST_OP_CAS;
        p->key = (uint32_t)(test_rand(seed) % o->keys);
        p->op.key = s->key[p->key];
        p->op.value = p->op.kind == TEST_OP_PUT || p->op.kind == TEST_OP_CAS ? s->val[i] : NULL;
        p->op.call_ns = next[c] + 1 + rand_range(seed, o->max_gap);
        p->op.ret_ns = p->op.call_ns + rand_range(seed, o->max_dur + 1);
        p->lin = p->op.call_ns + rand_range(seed, p->op.ret_ns - p->op.call_ns + 1);
        next[c] = p->op.ret_ns;
        r = (unsigned)(test_rand(seed) % 100);
        p->op.outcome = r < o->unknown_pct                   ? TEST_OUT_UNKNOWN
                        : r < o->unknown_pct + o->failed_pct ? TEST_OUT_FAILED
                                                             : TEST_OUT_OK;
        p->happens = p->op.outcome == TEST_OUT_OK ||
                     (p->op.outcome == TEST_OUT_UNKNOWN && test_rand(seed) % 2 == 0);
    }
    free(next);
}

/* The model: current value per key (index by the key's number), NULL = absent. */
static void execute(struct gop *g, size_t n, uint32_t keys, uint64_t *seed)
{
    const char **cur = calloc(keys, sizeof *cur);
    assert(cur != NULL);
    for (size_t i = 0; i < n; i++) {
        struct gop *p = &g[i];
        const char **v = &cur[p->key];
        if (p->op.kind == TEST_OP_CAS) {
            /* Half the time expect the current value, else an older value or absent. */
            uint64_t r = test_rand(seed) % 4;
            p->op.expected = r < 2 ? (char *)*v : r == 2 ? NULL : g[i / 2].op.value;
        }
        if (!p->happens) {
            continue;
        }
        switch (p->op.kind) {
        case TEST_OP_GET:
            p->op.result = (char *)*v;
            break;
        case TEST_OP_PUT:
            *v = p->op.value;
            break;
        case TEST_OP_DEL:
            *v = NULL;
            break;
        case TEST_OP_CAS: {
            const char *e = p->op.expected;
            p->op.succeeded = (e == NULL && *v == NULL) || (e && *v && strcmp(e, *v) == 0);
            if (p->op.succeeded) {
                *v = p->op.value;
            }
            break;
        }
        }
    }
    free(cur);
}

static int call_cmp(const void *a, const void *b)
{
    const struct gop *x = a, *y = b;
    if (x->op.call_ns != y->op.call_ns) {
        return x->op.call_ns < y->op.call_ns ? -1 : 1;
    }
    return (x > y) - (x < y);
}

int gen_history(struct test_hist *h, const struct gen_opts *o, uint64_t *seed)
{
    struct gop *g = calloc(o->ops + 1, sizeof *g);
    struct strs s = {calloc(o->ops + 1, sizeof *s.val), calloc(o->keys, sizeof *s.key)};
    assert(g != NULL && s.val != NULL && s.key != NULL);
    for (size_t i = 0; i < o->ops; i++) {
        snprintf(s.val[i], sizeof s.val[i], "v%zu", i);
    }
    for (uint32_t j = 0; j < o->keys; j++) {
        snprintf(s.key[j], sizeof s.key[j], "k%u", (unsigned)j);
    }
    draw(g, &s, o, seed);
    qsort(g, o->ops, sizeof *g, gop_cmp);
    execute(g, o->ops, o->keys, seed);
    /* Record in call order, as a recorder would (test_hist_add copies the strings). */
    qsort(g, o->ops, sizeof *g, call_cmp);
    int rv = 0;
    for (size_t i = 0; i < o->ops && rv == 0; i++) {
        rv = test_hist_add(h, &g[i].op);
    }
    free(g);
    free(s.val);
    free(s.key);
    return rv;
}

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether @x may change its key's value (ignoring when). */
static bool may_write(const struct test_op *x)
{
    if (x->outcome == TEST_OUT_FAILED || x->kind == TEST_OP_GET) {
        return false;
    }
    return x->kind != TEST_OP_CAS || x->outcome == TEST_OUT_UNKNOWN || x->succeeded;
}

/* Whether @x is an acknowledged op that did change its key's value. */
static bool did_write(const struct test_op *x)
{
    return x->outcome == TEST_OUT_OK && may_write(x);
}

/* Writes that may matter to op @c: other non-failed writes of its key called by its return. */
static bool relevant(const struct test_op *x, const struct test_op *c)
{
    return x != c && may_write(x) && strcmp(x->key, c->key) == 0 && x->call_ns <= c->ret_ns;
}

bool gen_stable_value(const struct test_hist *h, size_t i, const char **val)
{
    const struct test_op *c = &h->ops[i];
    const struct test_op *last = NULL;
    /* Every relevant write must be acknowledged before c began (else it may land inside c);
     * the last of them is the one called last, if all others finished before its call. */
    for (size_t j = 0; j < h->n_ops; j++) {
        const struct test_op *x = &h->ops[j];
        if (!relevant(x, c)) {
            continue;
        }
        if (x->ret_ns >= c->call_ns) {
            return false;
        }
        if (last == NULL || x->call_ns > last->call_ns) {
            last = x;
        }
    }
    for (size_t j = 0; j < h->n_ops && last != NULL; j++) {
        const struct test_op *x = &h->ops[j];
        if (relevant(x, c) && x != last && x->ret_ns >= last->call_ns) {
            return false; /* x may be linearized after last */
        }
    }
    *val = last == NULL || last->kind == TEST_OP_DEL ? NULL : last->value;
    return true;
}

/* The op that wrote value @v to @key (values are unique), or NULL. */
static const struct test_op *writer_of(const struct test_hist *h, const char *key, const char *v)
{
    for (size_t j = 0; j < h->n_ops; j++) {
        const struct test_op *x = &h->ops[j];
        bool writes = x->kind == TEST_OP_PUT || x->kind == TEST_OP_CAS;
        if (writes && strcmp(x->key, key) == 0 && strcmp(x->value, v) == 0) {
            return x;
        }
    }
    return NULL;
}

/* Whether a completed value-changing write on @key lies strictly between @w and @g. */
static bool overwritten_before(const struct test_hist *h,
                               const struct test_op *w,
                               const struct test_op *g)
{
    for (size_t j = 0; j < h->n_ops; j++) {
        const struct test_op *x = &h->ops[j];
        if (did_write(x) && strcmp(x->key, g->key) == 0 && w->ret_ns < x->call_ns &&
            x->ret_ns < g->call_ns) {
            return true;
        }
    }
    return false;
}

bool gen_get_violates(const struct test_hist *h, size_t i, const char *v)
{
    const struct test_op *g = &h->ops[i];
    const char *stable;
    if (gen_stable_value(h, i, &stable) && !same(stable, v)) {
        return true;
    }
    if (v == NULL) {
        return false; /* absent can be restored by any delete: only the stable case proves */
    }
    const struct test_op *w = writer_of(h, g->key, v);
    if (w == NULL || !may_write(w) || w->call_ns > g->ret_ns) {
        return true; /* never written, or only in the future */
    }
    return did_write(w) && overwritten_before(h, w, g);
}
