/* Recorded histories of client operations on a key-value store, for linearizability checks. */
#ifndef KV_TEST_HISTORY_H
#define KV_TEST_HISTORY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Error codes of the history recorder and the checker (test/lib range 900-999). */
#define TEST_LINZ_ERRORS(X)                      \
    X(TEST_LINZ_ENOMEM, 900, "out of memory")    \
    X(TEST_LINZ_EINVAL, 901, "invalid argument") \
    X(TEST_LINZ_EIO, 902, "I/O error")           \
    X(TEST_LINZ_EPARSE, 903, "malformed history file")
enum test_linz_err {
#define X(code, num, msg) code = num,
    TEST_LINZ_ERRORS(X)
#undef X
};

/* Size of every errmsg buffer of this module. */
#define TEST_LINZ_ERRMSG_SIZE 256

/* The message for a TEST_LINZ_E* code ("unknown error" for any other value). */
const char *test_linz_strerror(int code);

/* The operations of the model "key -> optional value". */
enum test_op_kind {
    TEST_OP_PUT = 1, /* set key to value */
    TEST_OP_GET,     /* read key: ok returns the value or absent */
    TEST_OP_DEL,     /* make key absent */
    TEST_OP_CAS      /* txn compare-and-set: iff value == expected (NULL: absent), set new */
};

/* What the client learned. */
enum test_outcome {
    TEST_OUT_OK = 1, /* took effect exactly once; result/succeeded are valid */
    TEST_OUT_FAILED, /* definitely did not take effect (e.g. UNAVAILABLE before proposing) */
    TEST_OUT_UNKNOWN /* timeout or lost connection: may take effect at any time after call, or
                        never; also the state of an op that was invoked but never completed */
};

/* "Never returned": the return time of an unknown op. */
#define TEST_HIST_NEVER INT64_MAX

/* One operation.  Keys and values are NUL-terminated byte strings (any byte but NUL); a NULL
 * value pointer means "absent".  Inside a struct test_hist every string is owned by the
 * history. */
struct test_op
{
    uint32_t client;        /* client id: a client issues one op at a time (it abandons an
                               unknown op before its next) */
    enum test_op_kind kind; /* the operation */
    enum test_outcome outcome;
    char *key;         /* the key (never NULL) */
    char *value;       /* put: the value; cas: the new value; else NULL */
    char *expected;    /* cas: the expected value, NULL for "expected absent" */
    char *result;      /* get with OK: the value read, NULL if absent */
    bool succeeded;    /* cas with OK: whether the compare held and the write happened */
    bool serializable; /* get served from a member's local state (not linearizable by design):
                          recorded and saved, but excluded from the linearizability check */
    int64_t call_ns;   /* CLOCK_MONOTONIC ns when the client sent the request */
    int64_t ret_ns;    /* CLOCK_MONOTONIC ns when the answer arrived; TEST_HIST_NEVER if unknown */
};

/* A growable, thread-safe list of operations. */
struct test_hist
{
    pthread_mutex_t lock; /* guards everything below */
    struct test_op *ops;  /* ops in invocation order (recording) or file order (loading) */
    size_t n_ops;
    size_t cap;
    bool inited; /* set by test_hist_init: makes _fini on a zeroed struct a no-op */
    char errmsg[TEST_LINZ_ERRMSG_SIZE]; /* context of the last error */
};

/* Initialize an empty history.  Errors: none (returns 0).  Any thread. */
int test_hist_init(struct test_hist *h);

/* Free every op and string.  A zeroed struct is a no-op.  No other thread may use @h. */
void test_hist_fini(struct test_hist *h);

/* CLOCK_MONOTONIC in nanoseconds: the one clock of every recorded time. */
int64_t test_hist_now(void);

/* Record the invocation of an operation by @client, timestamped now, with outcome UNKNOWN
 * until test_hist_ok/test_hist_fail completes it (an op never completed stays unknown, which is
 * exactly right for a client that crashed or timed out).
 * @key must not be NULL; @value is the put/cas new value (NULL for get/del); @expected is the
 * cas expected value (NULL: expected absent; ignored for other ops).  Strings are copied.
 * @id receives the handle to pass to the completion functions.
 * Errors: TEST_LINZ_EINVAL (NULL key, put/cas without value, bad kind), TEST_LINZ_ENOMEM.
 * Thread-safe: any thread, concurrently with other recording calls. */
int test_hist_invoke(struct test_hist *h,
                     uint32_t client,
                     enum test_op_kind kind,
                     const char *key,
                     const char *value,
                     const char *expected,
                     size_t *id);

/* Mark get @id as a serializable read (see struct test_op).  Errors: TEST_LINZ_EINVAL (bad id,
 * not a get).  Thread-safe. */
int test_hist_mark_serializable(struct test_hist *h, size_t id);

/* Complete op @id as OK, timestamped now.  @result (copied, NULL = absent) is the value a get
 * read; @succeeded is the cas outcome; both are ignored for other kinds.
 * Errors: TEST_LINZ_EINVAL (bad id or op already completed), TEST_LINZ_ENOMEM.  Thread-safe. */
int test_hist_ok(struct test_hist *h, size_t id, const char *result, bool succeeded);

/* Complete op @id as FAILED (it definitely did not take effect), timestamped now.
 * Errors: TEST_LINZ_EINVAL.  Thread-safe. */
int test_hist_fail(struct test_hist *h, size_t id);

/* Append a complete op (times and outcome as given): for loaders, generators and hand-written
 * tests.  @op is borrowed; its strings are copied.  For UNKNOWN ops ret_ns is forced to
 * TEST_HIST_NEVER.  Errors: TEST_LINZ_EINVAL (NULL key, put/cas without value, bad kind or
 * outcome, ret_ns < call_ns), TEST_LINZ_ENOMEM.  Thread-safe. */
int test_hist_add(struct test_hist *h, const struct test_op *op);

/* Format @op readably into @buf (always NUL-terminated, truncated to @size), e.g.
 * "c3 put k1 v7 (ok) [1.000200, 1.000950] ms" (times in ms relative to @t0_ns, exact to the
 * ns; an unknown op's return is "-").
 * Strings are escaped as in the file format.  Returns @buf.  Any thread. */
char *test_op_format(const struct test_op *op, int64_t t0_ns, char *buf, size_t size);

/*
 * File format (text, one op per line; `#` starts a comment line; blank lines are ignored):
 *
 *   <client> <call_ns> <ret_ns> <outcome> <op> <key> [<args>] [= <result>]
 *
 *   client   decimal id
 *   call_ns  decimal CLOCK_MONOTONIC ns
 *   ret_ns   decimal ns, or `-` for unknown ops
 *   outcome  ok | failed | unknown
 *   op/args  put <key> <value> | get <key> | sget <key> | del <key> |
 *            cas <key> <expected> <new>      (sget: a serializable get)
 *   result   only for ok get/sget (`= <value>`) and ok cas (`= true` / `= false`)
 *
 * A string token is `-` for absent (NULL), `""` for the empty string, and otherwise the bytes
 * with `%`, `"`, bytes <= 0x20 and bytes >= 0x7f written as %XX (hex); a string that is
 * exactly "-" is written as %2D.  Example:
 *
 *   # kvdb history v1
 *   1 1000 2000 ok put k1 v1
 *   2 1500 2500 ok get k1 = v1
 *   3 1600 - unknown cas k1 - v2
 *   2 2600 2900 ok cas k1 v1 hello%20world = true
 */

/* Write every op of @h to @f in the file format.  Errors: TEST_LINZ_EIO.  Any thread; ops
 * being recorded concurrently are written in their current state. */
int test_hist_write(struct test_hist *h, FILE *f);

/* Save @h to @path (created or truncated).  Errors: TEST_LINZ_EIO (with path and errno text in
 * h->errmsg).  Any thread. */
int test_hist_save(struct test_hist *h, const char *path);

/* Append the ops read from @f to @h.  @name names the input in error messages.
 * Errors: TEST_LINZ_EPARSE ("<name>:<line>: ..." in h->errmsg), TEST_LINZ_EIO,
 * TEST_LINZ_ENOMEM.  On error the ops read before the bad line stay in @h. */
int test_hist_read(struct test_hist *h, FILE *f, const char *name);

/* Load the ops of the file @path into @h (appended).  Errors: as test_hist_read. */
int test_hist_load(struct test_hist *h, const char *path);

#endif /* KV_TEST_HISTORY_H */
