/* What the embedded-cluster server tests share: a started cluster with a leader, clients, and
 * the calls and watches whose errors simply fail the test.  Failures go through cmocka, so call
 * these from the test's own thread only (not from a helper thread). */
#ifndef KV_TEST_UNIT_SERVER_FIXTURE_H
#define KV_TEST_UNIT_SERVER_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "client/kvc.h"
#include "server/embed.h"

/* Start the cluster @o describes and wait up to 10 s for a leader, whose index goes to *@leader
 * (when not NULL).  Fails the test otherwise (with the cluster destroyed). */
struct srv_embed *sf_start(const struct srv_embed_opts *o, int *leader);

/* A client of @eps (kvc_open's list) whose requests give up after @timeout_ms. */
struct kvc *sf_client(const char *eps, unsigned timeout_ms);

/* Put @key = @val and return the put's revision; an error fails the test. */
int64_t sf_put(struct kvc *k, const char *key, const char *val);

/* kvc_call for a test that only looks at the outcome: frees the response, returns kvc_call's
 * code (kvc_server_code() still tells the server's). */
int sf_call(struct kvc *k,
            Kvdb__Method m,
            const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *d);

/* Open a watch on @w over [@key, @end) (@end NULL: @key alone) from revision @rev (0: now),
 * with prev_kv (@prev) and the NODELETE filter (@no_delete), and take its "created" response:
 * kvc_watch_next then returns only its events. */
void sf_watch(struct kvc *w,
              const char *key,
              const char *end,
              int64_t rev,
              bool prev,
              bool no_delete);

/* The replicas check that ends every multi-member test: wait (up to @timeout_ms, with nothing
 * being written) until the running members among the first @n report the same applied index and
 * revision, then assert that their HashKV at that revision and every key (value, revisions,
 * lease; read serializably from each member) are equal.  Returns the revision compared. */
int64_t sf_assert_converged(struct srv_embed *c, unsigned n, unsigned timeout_ms);

/* Sleep @ms milliseconds: the pause of the tests' polling loops. */
void sf_sleep_ms(unsigned ms);

#endif /* KV_TEST_UNIT_SERVER_FIXTURE_H */
