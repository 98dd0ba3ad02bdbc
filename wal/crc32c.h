/* CRC32C (Castagnoli), as used by the WAL and snapshot formats. */
#ifndef KV_WAL_CRC32C_H
#define KV_WAL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend @crc (0 to start) with @n bytes at @data and return the new CRC.
 * crc32c_extend(crc32c_extend(0, a), b) == crc32c(a || b).  Uses the SSE4.2 instruction when
 * the CPU has it, a slicing-by-8 table otherwise; both give the same result.
 * Thread-safe; any thread. */
uint32_t wal_crc32c_extend(uint32_t crc, const void *data, size_t n);

/* CRC32C of @n bytes at @data. */
static inline uint32_t wal_crc32c(const void *data, size_t n)
{
    return wal_crc32c_extend(0, data, n);
}

/* The software path alone, exposed so tests can check it against the hardware path. */
uint32_t wal_crc32c_extend_sw(uint32_t crc, const void *data, size_t n);

#endif /* KV_WAL_CRC32C_H */
