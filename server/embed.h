/* Embedded test clusters: N real kvdb members inside one process, for users' own tests.
 *
 * Each member is a full member (its own WAL, LevelDB store, loop and threads) on loopback ports
 * chosen automatically, with its data in a temporary directory.  Clients talk to it through the
 * normal client library (client/kvc.h) at srv_embed_endpoints().  See docs/embedding.md.
 *
 *     struct srv_embed *c;
 *     char err[256];
 *     struct srv_embed_opts o = {.members = 3};
 *     srv_embed_start(&o, &c, err);
 *     int leader = srv_embed_wait_leader(c, 5000);
 *     ... kvc_open(srv_embed_endpoints(c), ...) ... kvc_put(...) ...
 *     srv_embed_kill(c, leader);
 *     ...
 *     srv_embed_destroy(c);
 *
 * A struct srv_embed is driven by one thread at a time (the test's); members run on their own
 * threads. */
#ifndef KV_SERVER_EMBED_H
#define KV_SERVER_EMBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_EMBED_MAX 7

struct srv_embed_opts
{
    unsigned members;        /* 1..SRV_EMBED_MAX */
    const char *dir;         /* parent of the members' data dirs; NULL: a new /tmp/kvdb-embed-* */
    bool keep_dir;           /* do not remove the data dirs at srv_embed_destroy() */
    unsigned heartbeat_ms;   /* 0: 50 (tests want fast elections) */
    unsigned election_ms;    /* 0: 500 */
    uint64_t snapshot_count; /* 0: the member default (10,000) */
    uint64_t snapshot_catchup;
    uint64_t quota_bytes;      /* --quota-backend-bytes; 0: the member default (2 GiB) */
    unsigned corrupt_check_ms; /* --corrupt-check-interval; 0: the member default (5 min) */
};

struct srv_embed;

/* Start @opts->members members as one new cluster (ports picked on 127.0.0.1) and return once
 * all of them serve clients (a leader may not be elected yet: srv_embed_wait_leader()).
 * Errors: SRV_EINVAL, SRV_EIO, SRV_ENOMEM with @errmsg (256 bytes). */
int srv_embed_start(const struct srv_embed_opts *opts, struct srv_embed **out, char *errmsg);

/* Wait up to @timeout_ms until the running members agree on a leader; returns its index
 * (0-based) or -1 on timeout.  Members that stopped on a fatal error and members isolated with
 * srv_embed_isolate() are not asked (an isolated old leader may still believe it leads). */
int srv_embed_wait_leader(struct srv_embed *c, unsigned timeout_ms);

/* "127.0.0.1:p1,127.0.0.1:p2,..." for every member (running or not): for kvc_open().  Borrowed
 * until srv_embed_destroy(). */
const char *srv_embed_endpoints(const struct srv_embed *c);

/* The client endpoint of member @i ("127.0.0.1:port"). */
const char *srv_embed_endpoint(const struct srv_embed *c, unsigned i);

/* Member @i's ID, and whether it is running (started and not stopped by a fatal error). */
uint64_t srv_embed_member_id(const struct srv_embed *c, unsigned i);
bool srv_embed_is_running(const struct srv_embed *c, unsigned i);

/* Why member @i stopped by itself (a fatal error: a failed fsync, its removal from the cluster),
 * or NULL while it runs or after a stop from outside.  Valid until @i restarts or @c is
 * destroyed.  Same thread as the other calls. */
const char *srv_embed_member_error(const struct srv_embed *c, unsigned i);

/* Stop member @i: graceful, like SIGTERM (its WAL batch in progress is written).  Its data
 * stays for srv_embed_restart().  No-op if it is not running. */
void srv_embed_stop(struct srv_embed *c, unsigned i);

/* Kill member @i abruptly: its loop stops at once, in-flight requests are lost and it gets no
 * chance to answer them (as with kill -9 of a process, written data stays: the page cache
 * survives a process crash).  Power-loss crashes are what the WAL's fault file system tests. */
void srv_embed_kill(struct srv_embed *c, unsigned i);

/* Restart a stopped or killed member @i on the same ports and data.  Errors as srv_open. */
int srv_embed_restart(struct srv_embed *c, unsigned i, char *errmsg);

/* Cut the network between members @i and @j both ways (raft messages are dropped). */
void srv_embed_partition(struct srv_embed *c, unsigned i, unsigned j);

/* Cut member @i off from every other member. */
void srv_embed_isolate(struct srv_embed *c, unsigned i);

/* Heal every partition. */
void srv_embed_heal(struct srv_embed *c);

/* Slow member @i's disk: every WAL fdatasync of that member takes @ms longer (0: normal). */
void srv_embed_disk_delay(struct srv_embed *c, unsigned i, unsigned ms);

/* Add a member at runtime: ask the leader (member add, as a learner or a voter), then start the
 * new member with --initial-cluster-state existing.  Returns its index, or -1 with @errmsg. */
int srv_embed_add_member(struct srv_embed *c, bool learner, char *errmsg);

/* Remove member @i from the cluster through the leader (member remove) and stop it.
 * Errors: SRV_EINVAL, SRV_EIO with @errmsg. */
int srv_embed_remove_member(struct srv_embed *c, unsigned i, char *errmsg);

/* Stop every member and free; removes the data dirs unless keep_dir.  NULL is a no-op. */
void srv_embed_destroy(struct srv_embed *c);

#endif /* KV_SERVER_EMBED_H */
