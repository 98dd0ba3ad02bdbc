/* A linearizability checker for a single register (Wing & Gong's search with Lowe's
 * memoization, as in Knossos/porcupine), for histories recorded against real members. */
#ifndef KV_TEST_INTEGRATION_LIN_H
#define KV_TEST_INTEGRATION_LIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lin_kind { LIN_READ = 1, LIN_WRITE };

/* One operation on the register.  Values are unique per write; 0 is the initial value (the
 * key does not exist). */
struct lin_op
{
    enum lin_kind kind;
    uint64_t value;  /* written, or returned by the read */
    uint64_t invoke; /* time the call started (µs, any monotonic clock) */
    uint64_t ret;    /* time the reply arrived; ignored when unknown */
    bool unknown;    /* a write whose outcome is unknown: it may take effect at any time after
                        invoke, or never */
};

/* Whether @ops (in any order; at most LIN_MAX_OPS) is linearizable for a register that starts
 * at 0.  Reads must all have completed (a failed read has no effect: leave it out).
 * Returns 1 (linearizable), 0 (not), -1 (too many ops, out of memory or search budget
 * exhausted).  Any thread. */
#define LIN_MAX_OPS 1024
int lin_check_register(const struct lin_op *ops, size_t n);

#endif /* KV_TEST_INTEGRATION_LIN_H */
