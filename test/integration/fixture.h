/* The cmocka fixture most integration tests share: a started cluster, optionally one client
 * per member, and a background writer that teardown stops even when a test fails midway. */
#ifndef KV_TEST_INTEGRATION_FIXTURE_H
#define KV_TEST_INTEGRATION_FIXTURE_H

#include <stdbool.h>

#include "test/integration/harness.h"
#include "test/integration/writer.h"

struct ih_fix
{
    struct ih_cluster c;
    struct kvc *k[IH_MAX_MEMBERS]; /* with clients: one per member, talking to it only */
    struct ih_writer w;            /* zeroed until a test starts it */
};

/* Allocate *@state, start @n members with the extra flags @extra (NULL-terminated, may be
 * NULL), wait up to @start_ms for them, and with @clients open one client per member.
 * Returns 0, or -1 with everything released and *@state NULL (cmocka skips the teardown when
 * a setup fails). */
int ih_fix_setup(void **state, size_t n, const char *const *extra, unsigned start_ms, bool clients);

/* For a group fixture kept in a static: start @n members like ih_fix_setup and open one client,
 * k[0], on member @member ((size_t)-1: all members, failing over).  NULL on failure (everything
 * released).  Release with ih_fix_teardown on a pointer to it. */
struct ih_fix *ih_fix_start(size_t n, const char *const *extra, unsigned start_ms, size_t member);

/* Poll member @i's serializable (local) read of @key through f->k[@i] for up to 30 s until it
 * returns @want. */
bool ih_fix_eventually_local(struct ih_fix *f, size_t i, const char *key, const char *want);

/* Close the clients (a test that restarts members opens new ones). */
void ih_fix_close_clients(struct ih_fix *f);

/* Stop the writer, close the clients, stop and remove the cluster.  Nonzero when a member
 * crashed or leaked (its sanitizer exit code), which fails the test. */
int ih_fix_teardown(void **state);

#endif /* KV_TEST_INTEGRATION_FIXTURE_H */
