/* Chunk and ack wire encodings (snapshot/FORMAT.md). */
#include <stdio.h>
#include <string.h>
#include <zstd.h>

#include "snapshot/wire.h"
#include "wal/codec.h"
#include "wal/crc32c.h"

#define CHUNK_MAGIC 0x4353564bu /* "KVSC" */
#define ACK_MAGIC 0x4153564bu   /* "KVSA" */
#define WIRE_VERSION 1u
#define CHUNK_FLAG_ZSTD 0x01u

static int wire_error(char *errmsg, int code, const char *what)
{
    if (errmsg != NULL) {
        snprintf(errmsg, SNAP_ERRMSG_SIZE, "%s", what);
    }
    return code;
}

void snap_chunk_encode_header(const struct snap_chunk *c, unsigned char *buf)
{
    wal_put_u32(buf, CHUNK_MAGIC);
    buf[4] = WIRE_VERSION;
    buf[5] = c->compressed ? CHUNK_FLAG_ZSTD : 0;
    buf[6] = 0;
    buf[7] = 0;
    wal_put_u64(buf + 8, c->index);
    wal_put_u64(buf + 16, c->term);
    wal_put_u32(buf + 24, c->manifest_crc);
    wal_put_u32(buf + 28, c->file);
    wal_put_u64(buf + 32, c->offset);
    wal_put_u32(buf + 40, c->raw_len);
    wal_put_u32(buf + 44, c->payload_len);
    wal_put_u32(buf + 48, c->raw_crc);
    wal_put_u32(buf + 52, wal_crc32c(buf, 52));
}

int snap_chunk_decode(const void *buf, size_t len, struct snap_chunk *out, char *errmsg)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < SNAP_CHUNK_HEADER_SIZE) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: truncated header");
    }
    if (wal_get_u32(b) != CHUNK_MAGIC) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: bad magic");
    }
    /* Checksum before version: a flipped bit must read as corruption, not as a new format. */
    if (wal_crc32c(b, 52) != wal_get_u32(b + 52)) {
        return wire_error(errmsg, SNAP_ECHUNK, "chunk: header checksum mismatch");
    }
    if (b[4] != WIRE_VERSION) {
        return wire_error(errmsg, SNAP_EVERSION, "chunk: unsupported version");
    }
    if ((b[5] & ~CHUNK_FLAG_ZSTD) != 0 || b[6] != 0 || b[7] != 0) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: unknown flags");
    }
    out->compressed = (b[5] & CHUNK_FLAG_ZSTD) != 0;
    out->index = wal_get_u64(b + 8);
    out->term = wal_get_u64(b + 16);
    out->manifest_crc = wal_get_u32(b + 24);
    out->file = wal_get_u32(b + 28);
    out->offset = wal_get_u64(b + 32);
    out->raw_len = wal_get_u32(b + 40);
    out->payload_len = wal_get_u32(b + 44);
    out->raw_crc = wal_get_u32(b + 48);
    out->payload = b + SNAP_CHUNK_HEADER_SIZE;
    if (out->raw_len == 0 || out->raw_len > SNAP_CHUNK_MAX) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: raw length out of range");
    }
    if ((uint64_t)out->payload_len != len - SNAP_CHUNK_HEADER_SIZE) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: payload length mismatch");
    }
    if (out->offset > UINT64_MAX - out->raw_len) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: offset overflows");
    }
    if (out->compressed ? out->payload_len > ZSTD_compressBound(out->raw_len)
                        : out->payload_len != out->raw_len) {
        return wire_error(errmsg, SNAP_EMALFORMED, "chunk: payload size impossible");
    }
    return 0;
}

int snap_chunk_unpack(const struct snap_chunk *c, void *raw, char *errmsg)
{
    if (c->compressed) {
        size_t n = ZSTD_decompress(raw, c->raw_len, c->payload, c->payload_len);
        if (ZSTD_isError(n)) {
            if (errmsg != NULL) {
                snprintf(errmsg, SNAP_ERRMSG_SIZE, "chunk file %u offset %llu: zstd: %s",
                         (unsigned)c->file, (unsigned long long)c->offset, ZSTD_getErrorName(n));
            }
            return SNAP_ECHUNK;
        }
        if (n != c->raw_len) {
            return wire_error(errmsg, SNAP_ECHUNK, "chunk: decompressed length mismatch");
        }
    } else {
        memcpy(raw, c->payload, c->raw_len);
    }
    if (wal_crc32c(raw, c->raw_len) != c->raw_crc) {
        if (errmsg != NULL) {
            snprintf(errmsg, SNAP_ERRMSG_SIZE, "chunk file %u offset %llu: crc32c mismatch",
                     (unsigned)c->file, (unsigned long long)c->offset);
        }
        return SNAP_ECHUNK;
    }
    return 0;
}

void snap_ack_encode(const struct snap_ack *a, unsigned char buf[SNAP_ACK_SIZE])
{
    wal_put_u32(buf, ACK_MAGIC);
    buf[4] = WIRE_VERSION;
    buf[5] = (unsigned char)a->status;
    buf[6] = (unsigned char)a->session;
    buf[7] = (unsigned char)(a->session >> 8);
    wal_put_u64(buf + 8, a->index);
    wal_put_u64(buf + 16, a->term);
    wal_put_u32(buf + 24, a->manifest_crc);
    wal_put_u32(buf + 28, a->file);
    wal_put_u64(buf + 32, a->offset);
    wal_put_u32(buf + 40, wal_crc32c(buf, 40));
}

int snap_ack_decode(const void *buf, size_t len, struct snap_ack *out, char *errmsg)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len != SNAP_ACK_SIZE) {
        return wire_error(errmsg, SNAP_EMALFORMED, "ack: wrong length");
    }
    if (wal_get_u32(b) != ACK_MAGIC) {
        return wire_error(errmsg, SNAP_EMALFORMED, "ack: bad magic");
    }
    if (wal_crc32c(b, 40) != wal_get_u32(b + 40)) {
        return wire_error(errmsg, SNAP_EMALFORMED, "ack: checksum mismatch");
    }
    if (b[4] != WIRE_VERSION) {
        return wire_error(errmsg, SNAP_EVERSION, "ack: unsupported version");
    }
    if (b[5] < SNAP_ACK_OK || b[5] > SNAP_ACK_RESUME) {
        return wire_error(errmsg, SNAP_EMALFORMED, "ack: bad status");
    }
    out->status = (enum snap_ack_status)b[5];
    out->session = (uint16_t)(b[6] | b[7] << 8);
    out->index = wal_get_u64(b + 8);
    out->term = wal_get_u64(b + 16);
    out->manifest_crc = wal_get_u32(b + 24);
    out->file = wal_get_u32(b + 28);
    out->offset = wal_get_u64(b + 32);
    return 0;
}
