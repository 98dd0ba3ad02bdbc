/* Seeds for randomized tests: printed, and taken from KV_TEST_SEED when set. */
#ifndef KV_TEST_SEED_H
#define KV_TEST_SEED_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The seed for test @name: KV_TEST_SEED if set, else derived from the clock.  Printed so that a
 * failure can be replayed with KV_TEST_SEED=<seed>. */
static inline uint64_t test_seed(const char *name)
{
    const char *env = getenv("KV_TEST_SEED");
    uint64_t s;
    if (env != NULL && *env != '\0') {
        s = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    }
    if (s == 0) {
        s = 1;
    }
    fprintf(stderr, "[seed] %s: KV_TEST_SEED=%" PRIu64 "\n", name, s);
    return s;
}

/* xorshift64*: small, fast and good enough for test inputs.  @state must be non-zero. */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

#endif /* KV_TEST_SEED_H */
