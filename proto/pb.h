/* Wire-format helpers shared by the peer transport and the client service. */
#ifndef KV_PROTO_PB_H
#define KV_PROTO_PB_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "proto/kvdb.pb-c.h"
#include "proto/raftpb.pb-c.h"

/* True if @msg or any message nested in it carries fields this build does not know.  Members
 * refuse such input with a clear error instead of silently dropping data (a newer peer or a
 * corrupt frame).  Also catches protobuf-c's acceptance of the invalid field number 0.
 * Borrowed @msg; any thread. */
bool pb_has_unknown_fields(const ProtobufCMessage *msg);

/* The nesting depth of the encoded TxnRequest @buf (1: no nested txn), found by scanning the
 * wire format without decoding it and without recursing past @max levels.  Returns -1 when the
 * nesting is deeper than @max or the encoding is malformed.  protobuf-c decodes nested
 * messages recursively, so untrusted input must pass this before kvdb__txn_request__unpack():
 * a few hundred KB of nesting would otherwise overflow the stack.  Any thread. */
int pb_txn_depth(const uint8_t *buf, size_t len, int max);

#endif /* KV_PROTO_PB_H */
