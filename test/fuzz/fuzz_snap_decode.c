/* Fuzz target: the snapshot decoders that read untrusted bytes (a manifest from a peer or a
 * disk, a chunk and an ack off a socket).  Each must refuse cleanly or succeed; a decoded
 * manifest re-encodes to the same bytes, and a decoded chunk unpacks without over-reading.
 * Each input is also tried with its checksums recomputed ("resealed"), so that mutations reach
 * the structural and semantic checks behind the CRCs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/snapshot.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_manifest(const uint8_t *data, size_t size)
{
    struct snap_manifest m;
    char err[SNAP_ERRMSG_SIZE];
    if (snap_manifest_decode(data, size, &m, err) != 0) {
        return;
    }
    void *buf;
    size_t len;
    if (snap_manifest_encode(&m, &buf, &len, NULL, err) != 0 || len != size ||
        memcmp(buf, data, len) != 0) {
        abort();
    }
    free(buf);
    snap_manifest_fini(&m);
}

static void fuzz_chunk(const uint8_t *data, size_t size)
{
    struct snap_chunk c;
    char err[SNAP_ERRMSG_SIZE];
    if (snap_chunk_decode(data, size, &c, err) != 0) {
        return;
    }
    void *raw = malloc(c.raw_len);
    if (raw != NULL) {
        snap_chunk_unpack(&c, raw, err);
        free(raw);
    }
}

static void fuzz_ack(const uint8_t *data, size_t size)
{
    struct snap_ack a;
    char err[SNAP_ERRMSG_SIZE];
    if (snap_ack_decode(data, size, &a, err) == 0 &&
        (a.status < SNAP_ACK_OK || a.status > SNAP_ACK_RESUME)) {
        abort();
    }
}

/* Run @fn on a copy of @data whose checksum at @at (over the bytes before it) is recomputed. */
static void resealed(const uint8_t *data,
                     size_t size,
                     size_t at,
                     void (*fn)(const uint8_t *, size_t))
{
    if (size < at + 4) {
        return;
    }
    uint8_t *copy = malloc(size);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, data, size);
    wal_put_u32(copy + at, wal_crc32c(copy, at));
    fn(copy, size);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_manifest(data, size);
    fuzz_chunk(data, size);
    fuzz_ack(data, size);
    if (size >= 4) {
        resealed(data, size, size - 4, fuzz_manifest);
    }
    resealed(data, size, SNAP_CHUNK_HEADER_SIZE - 4, fuzz_chunk);
    resealed(data, size, SNAP_ACK_SIZE - 4, fuzz_ack);
    return 0;
}
