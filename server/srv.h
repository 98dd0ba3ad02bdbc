/* The kvdb member: one process (or one embedded instance) serving peers and clients. */
#ifndef KV_SERVER_SRV_H
#define KV_SERVER_SRV_H

#include <stddef.h>
#include <stdint.h>

#include "server/config.h"

struct srv; /* Opaque. */

/*
 * Threads: a member runs one libev loop thread (network and the raft core), the WAL's writer
 * thread (grouped write + fdatasync), an apply thread (committed entries into the LSM store)
 * and a read thread (linearizable and serializable reads).  srv_run() makes the calling thread
 * the loop thread.
 */

/* Create the data directory (or recover it), open the WAL and the store, load the raft state and
 * bind the peer and client listeners of @cfg (copied).  On success *@out owns the member; free
 * it with srv_close().
 * Errors: SRV_EINVAL (bad configuration, cluster ID mismatch with the data dir), SRV_EIO
 * (storage could not be opened or recovered, a listener could not be bound), SRV_ENOMEM;
 * @errmsg (256 bytes) says what and where.  Any thread. */
int srv_open(const struct srv_config *cfg, struct srv **out, char *errmsg);

/* Run the loop until srv_stop() is called or a fatal storage error stops the member.  Returns 0
 * after srv_stop(), or the error (SRV_EIO) that stopped it; srv_errmsg() tells more. */
int srv_run(struct srv *s);

/* Ask a running member to stop: the loop finishes its current iteration and srv_run() returns.
 * Async-signal-safe and callable from any thread. */
void srv_stop(struct srv *s);

/* Stop the threads, flush and close the WAL and the store, close sockets and free.  Must not be
 * called while srv_run() runs.  NULL is a no-op. */
void srv_close(struct srv *s);

/* After srv_run() returned on a fatal error, on the same thread: close every connection and
 * listener, so clients and peers notice at once (what the exit of a kvdb process does).
 * srv_close() is still needed. */
void srv_disconnect(struct srv *s);

/* The last fatal error's context ("" if none).  Valid until srv_close(). */
const char *srv_errmsg(const struct srv *s);

/* The leader this member knows of (0: none).  Any thread. */
uint64_t srv_leader(struct srv *s);

/* The ports actually bound (useful when the configuration asked for port 0). */
uint16_t srv_client_port(const struct srv *s);
uint16_t srv_peer_port(const struct srv *s);

/* Drop every raft message to and from the members in @ids (at most SRV_MAX_MEMBERS): a network
 * partition as this member sees it.  @n == 0 heals.  Snapshot streams are not affected.  For
 * embedded clusters and tests.  Any thread. */
void srv_set_partition(struct srv *s, const uint64_t *ids, size_t n);

/* Remove @dir and everything under it, as far as possible (errors are ignored: for scratch and
 * superseded directories).  Any thread. */
void srv_remove_tree(const char *dir);

/* Write <member_dir>/member, the identity of a data directory: @cluster_id, @member_id and the
 * bootstrap voters (@voters, @n_voters).  kvdb refuses to start on a data directory whose member
 * file names another identity than its flags give.  Used by srv_open() on a new data directory
 * and by `kvdb-snapshot restore`.  Errors: SRV_EIO with @errmsg (256 bytes).  Any thread. */
int srv_member_file_write(const char *member_dir,
                          uint64_t cluster_id,
                          uint64_t member_id,
                          const uint64_t *voters,
                          size_t n_voters,
                          char *errmsg);

#endif /* KV_SERVER_SRV_H */
