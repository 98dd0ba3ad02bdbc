/* Internal: encoders shared by the sender and the receiver. */
#ifndef KV_SNAPSHOT_WIRE_H
#define KV_SNAPSHOT_WIRE_H

#include "snapshot/snapshot.h"

/* Write the SNAP_CHUNK_HEADER_SIZE-byte header of @c (payload not included) into @buf. */
void snap_chunk_encode_header(const struct snap_chunk *c, unsigned char *buf);

#endif /* KV_SNAPSHOT_WIRE_H */
