/* Conversions between struct raft_msg and the peer wire format (proto/raftpb.proto). */
#ifndef KV_PROTO_RAFTCONV_H
#define KV_PROTO_RAFTCONV_H

#include <stddef.h>
#include <stdint.h>

#include "proto/frame.h"
#include "proto/raftpb.pb-c.h"
#include "raft/raft.h"

/* Append one frame holding @msgs[0..n) (all to the same peer) as a raftpb Batch stamped with
 * @cluster_id and @from.  Entry data is copied into @w.  Errors: PB_ENOMEM (nothing appended).
 * Borrowed inputs; one thread per writer. */
int pb_batch_append(struct pb_frame_writer *w,
                    uint64_t cluster_id,
                    raft_id from,
                    const struct raft_msg *msgs,
                    size_t n);

/* Append one frame telling @removed, a member that the cluster @cluster_id removed, so; @from
 * is the member answering.  Errors: PB_ENOMEM (nothing appended).  One thread per writer. */
int pb_batch_append_removed(struct pb_frame_writer *w,
                            uint64_t cluster_id,
                            raft_id from,
                            raft_id removed);

/* A decoded, validated batch.  msgs and their entries borrow from the decoded message: valid
 * until pb_batch_free(). */
struct pb_batch
{
    uint64_t cluster_id;
    raft_id from;
    raft_id removed; /* nonzero: "member <removed> was removed from the cluster" */
    struct raft_msg *msgs;
    size_t n_msgs;
    Kvdb__Raftpb__Batch *pb; /* owns the bytes msgs point into */
    struct raft_entry *ents; /* every message's entries, in one array */
};

/* Decode and validate the frame payload @buf (untrusted peer input).  Rejects unknown fields,
 * unknown message or entry types, a zero sender, and configurations larger than
 * RAFT_MAX_MEMBERS.  Errors: PB_EMALFORMED / PB_EUNKNOWN with @errmsg saying what is wrong,
 * PB_ENOMEM.  On error @out needs no free. */
int pb_batch_decode(const void *buf, size_t len, struct pb_batch *out, char *errmsg, size_t errlen);

/* Release a decoded batch.  A no-op on a zeroed struct. */
void pb_batch_free(struct pb_batch *b);

#endif /* KV_PROTO_RAFTCONV_H */
