/* Varint encoding (LEB128, as protobuf and LevelDB use). */
#include "wal/codec.h"

size_t wal_put_varint(unsigned char *p, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (unsigned char)v;
    return i;
}

size_t wal_get_varint(const unsigned char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < WAL_VARINT_MAX; i++) {
        uint64_t b = p[i];
        /* The tenth byte may carry only the top bit of a uint64_t. */
        if (i == WAL_VARINT_MAX - 1 && b > 1) {
            return 0;
        }
        v |= (b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}
