/* A background writer for failure tests: puts distinct keys through a pipelined client with
 * failover, records which writes were acknowledged, and checks afterwards that every
 * acknowledged write survived. */
#ifndef KV_TEST_INTEGRATION_WRITER_H
#define KV_TEST_INTEGRATION_WRITER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "test/integration/harness.h"

enum ih_wstate { IH_W_NONE = 0, IH_W_ACKED, IH_W_UNKNOWN };

struct ih_writer
{
    char endpoints[IH_MAX_MEMBERS * 64]; /* every member of the cluster */
    char prefix[32];                     /* keys are "<prefix>NNNNNN", value = key */
    unsigned window;                     /* requests in flight (1 = one at a time) */
    size_t cap;                          /* most keys it will write */
    int64_t *rev;                        /* [cap] mod revision of each acknowledged put */
    uint8_t *state;                      /* [cap] enum ih_wstate */
    atomic_size_t next;                  /* keys attempted so far */
    atomic_size_t acked;                 /* acknowledged puts */
    atomic_bool stop;
    pthread_t thread;
    bool running;
};

/* Start writing to every member of @c (at most @cap keys, @window in flight) on a new thread.
 * Returns 0 or -1.  The writer only reads its own copy of the endpoints, so the main thread
 * may kill and restart members meanwhile. */
int ih_writer_start(struct ih_writer *w,
                    struct ih_cluster *c,
                    const char *prefix,
                    size_t cap,
                    unsigned window);

/* Wait until at least @n writes were acknowledged since start, up to @timeout_ms: 0 or -1. */
int ih_writer_wait_acked(struct ih_writer *w, size_t n, unsigned timeout_ms);

/* Stop and join the thread.  Safe to call twice. */
void ih_writer_stop(struct ih_writer *w);

/* Read the prefix back from the cluster (linearizable, through client @k) and check that every
 * acknowledged key is there with its value and revision, unknown ones are either there or not,
 * and nothing else is.  Returns the number of acknowledged keys checked, or -1 (printed). */
long ih_writer_check(struct ih_writer *w, struct kvc *k);

/* Free the arrays (after ih_writer_stop). */
void ih_writer_fini(struct ih_writer *w);

#endif /* KV_TEST_INTEGRATION_WRITER_H */
