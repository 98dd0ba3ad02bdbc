/* Failpoints: named fault points compiled into the member (gofail / fail-rs in spirit).
 *
 * A site is `SRV_FAILPOINT(member_id, "name")`, which returns 0 to go on or an action to take.
 * Tests arm a point for one member (or all, id 0) with srv_fp_set(); a Debug build also reads
 * KVDB_FAILPOINTS at the first check, e.g.
 *     KVDB_FAILPOINTS="wal_fsync=error;peer_send=drop(20)%;apply=delay(50)"
 * Sites in the tree:
 *   wal_write, wal_fsync, wal_cut      the WAL's file system (error: EIO, delay)
 *   peer_send                          a batch of raft messages to a peer (drop, delay)
 *   apply                              before a group goes into the store (error: stops the
 *                                      member, delay)
 *   snap_send, snap_install            a snapshot transfer / install (error, delay)
 *   snap_manifest_sent                 a transfer reached its receiver (error, delay; its hit
 *                                      count tells tests that a transfer is under way)
 *   snap_recv                          a receiver, before it answers the manifest (error, delay)
 *   accept                             a listener's accept (error: EMFILE, no connection taken)
 *   snap_list                          listing a new snapshot's files (error: one name's
 *                                      allocation fails; the snapshot is abandoned)
 *   watch_alloc                        building a watch response's events (error: out of
 *                                      memory; the watcher is cancelled)
 * Built without KV_FAILPOINTS, sites compile to nothing. */
#ifndef KV_SERVER_FAILPOINT_H
#define KV_SERVER_FAILPOINT_H

#include <stdint.h>

enum srv_fp_action {
    SRV_FP_OFF = 0,
    SRV_FP_ERROR = 1, /* the operation fails (an I/O error where it has one) */
    SRV_FP_DROP,      /* the message is lost */
    SRV_FP_DELAY,     /* sleep, then go on (applied inside the check) */
};

/* Arm failpoint @name for member @member (0: every member): @action fires with @percent
 * probability (1..100) for the next @count hits (0: until cleared); SRV_FP_DELAY sleeps
 * @delay_ms.  SRV_FP_OFF clears it.  Returns 0, or -1 when the table is full (64 points).
 * Any thread. */
int srv_fp_set(const char *name,
               uint64_t member,
               enum srv_fp_action action,
               unsigned percent,
               unsigned count,
               unsigned delay_ms);

/* Clear every failpoint.  Any thread. */
void srv_fp_clear_all(void);

/* Parse a KVDB_FAILPOINTS-style spec ("name=action[(arg)][percent%][*count];...", actions
 * error, drop, delay(ms), off) and arm it for every member.  Returns 0 or -1 on a syntax error
 * (nothing armed after the bad term). */
int srv_fp_parse(const char *spec);

/* The check behind SRV_FAILPOINT: the action to take at @name for @member now (SRV_FP_DELAY is
 * carried out here and reported as SRV_FP_OFF).  Cheap when nothing is armed. */
enum srv_fp_action srv_fp_check(uint64_t member, const char *name);

/* Hits counted so far at @name (armed or not), for tests. */
uint64_t srv_fp_hits(const char *name);

#ifdef KV_FAILPOINTS
#define SRV_FAILPOINT(member, name) srv_fp_check((member), (name))
#else
#define SRV_FAILPOINT(member, name) SRV_FP_OFF
#endif

#endif /* KV_SERVER_FAILPOINT_H */
