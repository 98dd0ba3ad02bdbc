/* Fuzz target: decoding of untrusted peer batches and client frames (what a member reads off a
 * socket).  Decoding must fail cleanly or succeed; re-encoding a decoded message must decode to
 * the same size. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/pb.h"
#include "proto/raftconv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Kvdb__Raftpb__Batch *b = kvdb__raftpb__batch__unpack(NULL, size, data);
    if (b != NULL && !pb_has_unknown_fields(&b->base)) {
        size_t n = kvdb__raftpb__batch__get_packed_size(b);
        uint8_t *buf = malloc(n + 1);
        if (buf != NULL) {
            size_t m = kvdb__raftpb__batch__pack(b, buf);
            if (m != n) {
                abort();
            }
            Kvdb__Raftpb__Batch *again = kvdb__raftpb__batch__unpack(NULL, m, buf);
            if (again == NULL || again->n_msgs != b->n_msgs) {
                abort();
            }
            kvdb__raftpb__batch__free_unpacked(again, NULL);
            free(buf);
        }
    }
    if (b != NULL) {
        kvdb__raftpb__batch__free_unpacked(b, NULL);
    }
    /* The member's real peer decoder: validation into struct raft_msg. */
    struct pb_batch pb;
    char err[128];
    if (pb_batch_decode(data, size, &pb, err, sizeof err) == 0) {
        for (size_t i = 0; i < pb.n_msgs; i++) {
            if (pb.msgs[i].from != pb.from || pb.msgs[i].type < RAFT_MSG_APP ||
                pb.msgs[i].type > RAFT_MSG_TYPE_MAX) {
                abort();
            }
        }
        pb_batch_free(&pb);
    }
    Kvdb__Frame *f = kvdb__frame__unpack(NULL, size, data);
    if (f != NULL) {
        Kvdb__TxnRequest *t = kvdb__txn_request__unpack(NULL, f->body.len, f->body.data);
        if (t != NULL) {
            kvdb__txn_request__free_unpacked(t, NULL);
        }
        kvdb__frame__free_unpacked(f, NULL);
    }
    return 0;
}
