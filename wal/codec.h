/* Little-endian fixed-width and varint encodings shared by the on-disk formats. */
#ifndef KV_WAL_CODEC_H
#define KV_WAL_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* All formats are little-endian regardless of the host (STYLE.md §7). */
static inline void wal_put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void wal_put_u64(unsigned char *p, uint64_t v)
{
    wal_put_u32(p, (uint32_t)v);
    wal_put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t wal_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t wal_get_u64(const unsigned char *p)
{
    return (uint64_t)wal_get_u32(p) | (uint64_t)wal_get_u32(p + 4) << 32;
}

/* Longest varint encoding of a uint64_t. */
#define WAL_VARINT_MAX 10

/* Write @v as a LEB128 varint at @p (room for WAL_VARINT_MAX bytes) and return its length. */
size_t wal_put_varint(unsigned char *p, uint64_t v);

/* Decode a varint from the @n bytes at @p into @out.  Returns the number of bytes consumed, or 0
 * if the input is truncated or longer than a uint64_t allows (malformed): never reads past @n. */
size_t wal_get_varint(const unsigned char *p, size_t n, uint64_t *out);

#endif /* KV_WAL_CODEC_H */
