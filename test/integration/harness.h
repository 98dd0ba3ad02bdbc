/* Real-process test harness: start, stop, kill -9 and restart kvdb members on loopback, find the
 * leader via Status, and talk raw frames to a member's ports. */
#ifndef KV_TEST_INTEGRATION_HARNESS_H
#define KV_TEST_INTEGRATION_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client/kvc.h"
#include "proto/kvdb.pb-c.h"

#define IH_MAX_MEMBERS 5
#define IH_MAX_ARGS 16

/* One member process of a test cluster.  pid is 0 while it is not running. */
struct ih_member
{
    char name[16];        /* "m0", "m1", ... */
    char dir[300];        /* its --data-dir */
    char log[300];        /* its stdout+stderr */
    char endpoint[64];    /* "127.0.0.1:<client port>" */
    uint16_t client_port; /* --listen-client-urls port */
    uint16_t peer_port;   /* --listen-peer-urls port */
    pid_t pid;            /* running process, or 0 */
    int last_status;      /* wait status of the last exit (see ih_member_stop) */
    bool signalled;       /* this test signalled the running process */
    unsigned restarts;    /* restarts after a signal this test did not send (see wait_up) */
};

/* A cluster of N members under one temporary root directory. */
struct ih_cluster
{
    char root[256];                     /* mkdtemp'd under /tmp, removed by ih_cluster_destroy */
    size_t n;                           /* members */
    struct ih_member m[IH_MAX_MEMBERS]; /* members */
    char initial_cluster[512];          /* --initial-cluster value */
    const char *extra[IH_MAX_ARGS];     /* extra flags for every member (borrowed, static) */
    size_t n_extra;
    unsigned nofile; /* RLIMIT_NOFILE (soft and hard) of members started from now; 0: inherit */
};

/*
 * All functions are for the test's main thread, except the ih_raw_* and ih_status helpers,
 * which any thread may call.  They return 0 or -1 and print the reason to stderr, so a test
 * can assert_int_equal(0, ...) and the log tells why.
 *
 * Every started member is registered so that an atexit handler, SIGTERM/SIGINT/SIGALRM handlers
 * and PR_SET_PDEATHSIG kill it even when the test binary dies.
 */

/* Prepare @c for @n members (1..IH_MAX_MEMBERS): a fresh root directory under /tmp and free
 * loopback ports from this binary's own range (derived from the pid).  @extra is a NULL-ended
 * list of flags (static strings) added to every member's command line, or NULL.  Starts
 * nothing. */
int ih_cluster_init(struct ih_cluster *c, size_t n, const char *const *extra);

/* Start every member and wait until each answers Status and one of them leads (@timeout_ms). */
int ih_cluster_start(struct ih_cluster *c, unsigned timeout_ms);

/* Start member @i (fork/exec kvdb) without waiting. */
int ih_member_start(struct ih_cluster *c, size_t i);

/* Start member @i with @more flags (NULL-ended) after the usual ones; later flags win. */
int ih_member_start_with(struct ih_cluster *c, size_t i, const char *const *more);

/* Wait until member @i answers Status (any leader) within @timeout_ms.  A member stopped by a
 * signal this test did not send (the server never signals itself: on a shared machine another
 * suite's cleanup can hit a recycled pid) is reported as such and restarted, at most twice per
 * member; any other death fails. */
int ih_member_wait_up(struct ih_cluster *c, size_t i, unsigned timeout_ms);

/* Send @sig to member @i and reap it (SIGKILL: at once; others: wait up to 20 s, then SIGKILL).
 * Returns 0 if it exited with status 0 (or died of SIGKILL when @sig is SIGKILL), -1 otherwise
 * (crash, sanitizer report, timeout): the member log is printed then. */
int ih_member_stop(struct ih_cluster *c, size_t i, int sig);

/* Send @sig to member @i without waiting (recorded, so its exit is not taken for an outside
 * signal). */
void ih_member_signal(struct ih_cluster *c, size_t i, int sig);

/* Whether member @i's process still runs (reaps it and prints its log if it died). */
bool ih_member_is_alive(struct ih_cluster *c, size_t i);

/* The index of the member every running member agrees leads, waiting up to @timeout_ms;
 * -1 if none. */
int ih_cluster_leader(struct ih_cluster *c, unsigned timeout_ms);

/* SIGTERM every running member; 0 if all exited cleanly. */
int ih_cluster_stop(struct ih_cluster *c);

/* SIGKILL whatever still runs and remove the root directory (unless KV_INTEG_KEEP is set).
 * Safe to call twice and on a zeroed struct. */
void ih_cluster_destroy(struct ih_cluster *c);

/* A client connected to member @i only (or to all members when @i is (size_t)-1), with
 * @timeout_ms as request timeout.  NULL on failure (printed). */
struct kvc *ih_client(struct ih_cluster *c, size_t i, unsigned timeout_ms);

/* Status of the member at @port (one raw call, @timeout_ms).  On 0, *@out is owned by the
 * caller (kvdb__status_response__free_unpacked). */
int ih_status(uint16_t port, unsigned timeout_ms, Kvdb__StatusResponse **out);

/* Put @key=@val (C strings): the new revision, or -1 (printed). */
int64_t ih_put(struct kvc *k, const char *key, const char *val);

/* Get @key into @val (NUL-terminated, at most @cap - 1 bytes; @val may be NULL): 1 found, 0 not
 * found, -1 error (printed). */
int ih_get(struct kvc *k, const char *key, bool serializable, char *val, size_t cap);

/* Whether member @m's log has a line containing @needle. */
bool ih_member_log_has(const struct ih_member *m, const char *needle);

/* XOR the byte at @off of file @path with 0x01, in place (every hard link of it sees the
 * change) or, with @unshare, in a copy renamed over @path first (only this name sees it: a
 * table that only a snapshot still holds).  0 or -1 (printed). */
int ih_file_flip(const char *path, long off, bool unshare);

/* ---- raw sockets ---- */

/* A blocking TCP connection to 127.0.0.1:@port, or -1. */
int ih_raw_dial(uint16_t port);

/* Write all @n bytes; 0 or -1 (peer closed / error). */
int ih_raw_write(int fd, const void *buf, size_t n);

/* Write a 4-byte little-endian length and @n payload bytes. */
int ih_raw_write_frame(int fd, const void *payload, size_t n);

/* Write one client Frame{id, method, body}. */
int ih_raw_send(int fd, uint64_t id, int method, const void *body, size_t n);

/* Read one reply frame within @timeout_ms: 0 and *@out (kvdb__frame__free_unpacked), 1 if the
 * member closed the connection, -1 on timeout or a malformed reply. */
int ih_raw_recv(int fd, unsigned timeout_ms, Kvdb__Frame **out);

/* Whether the member closes @fd within @timeout_ms (reading and discarding any replies). */
bool ih_raw_closed(int fd, unsigned timeout_ms);

/* Milliseconds on the monotonic clock. */
uint64_t ih_now_ms(void);

/* Sleep @ms milliseconds. */
void ih_sleep_ms(unsigned ms);

#endif /* KV_TEST_INTEGRATION_HARNESS_H */
