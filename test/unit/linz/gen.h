/* Seeded generator of linearizable histories (from a real sequential execution), and the
 * facts about a history that prove a mutated answer wrong. */
#ifndef KV_TEST_LINZ_GEN_H
#define KV_TEST_LINZ_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "test/lib/history.h"

/* Shape of a generated history. */
struct gen_opts
{
    uint32_t clients;     /* concurrent clients, each issuing ops one at a time */
    uint32_t keys;        /* keys "k0".."k<keys-1>" */
    size_t ops;           /* total ops */
    unsigned unknown_pct; /* % of ops whose outcome is unknown (half of such writes happen) */
    unsigned failed_pct;  /* % of ops that fail (never happen) */
    int64_t max_gap;      /* max ns between a client's ops */
    int64_t max_dur;      /* max ns an op takes (the overlap knob) */
};

/* Append to @h a history of @o->ops ops: each client issues ops one after another with random
 * gaps and durations; each op takes effect at a random point inside its interval, and the ops
 * are applied to a sequential model in the order of those points, which yields the answers
 * (so the history is linearizable by construction).  Every written value is unique.
 * Op i of the generation is h->ops[first + i] where first is h->n_ops before the call.
 * Returns 0 or a TEST_LINZ_E* code from test_hist_add.  @seed is advanced. */
int gen_history(struct test_hist *h, const struct gen_opts *o, uint64_t *seed);

/* Whether the value of op @i's key is provably the same at every instant of op i's interval
 * in every linearization of @h (no other write can take effect inside it, and one write, or
 * none, is last before it); if so *val is that value (NULL: absent) and true is returned.
 * Borrowed pointers into @h. */
bool gen_stable_value(const struct test_hist *h, size_t i, const char **val);

/* Whether a get @i returning @v (instead of its recorded result) is provably not
 * linearizable in @h: @v was never written to the key by a non-failed op, or only by an op
 * called after @i returned, or a write that finished before another completed write that
 * finished before @i began (a stale read; values are unique), or the key's value is stable
 * during @i and differs from @v. */
bool gen_get_violates(const struct test_hist *h, size_t i, const char *v);

#endif /* KV_TEST_LINZ_GEN_H */
