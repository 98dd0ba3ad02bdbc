/* SHA-1 (FIPS 180-4), used only to derive stable member and cluster IDs as etcd does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 80; i++) {
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void srv_sha1(const void *data, size_t n, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const unsigned char *p = data;
    size_t left = n;
    while (left >= 64) {
        block(h, p);
        p += 64;
        left -= 64;
    }
    unsigned char tail[128];
    memset(tail, 0, sizeof tail);
    if (left > 0) {
        memcpy(tail, p, left);
    }
    tail[left] = 0x80;
    size_t tlen = left + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) {
        tail[tlen - 1 - (size_t)i] = (unsigned char)(bits >> (8 * i));
    }
    block(h, tail);
    if (tlen == 128) {
        block(h, tail + 64);
    }
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

/* HMAC-SHA1 (RFC 2104) of @n bytes at @msg under @key. */
static void hmac_sha1(const uint8_t *key,
                      size_t klen,
                      const uint8_t *msg,
                      size_t n,
                      uint8_t out[20])
{
    uint8_t k[64] = {0}, pad[64 + 64 + 20];
    if (klen > 64) {
        srv_sha1(key, klen, k);
    } else if (klen > 0) {
        memcpy(k, key, klen);
    }
    /* inner: (k ^ ipad) || msg, hashed in one buffer (messages here are short) */
    uint8_t *inner = malloc(64 + n);
    if (inner == NULL) {
        memset(out, 0, 20);
        return;
    }
    for (int i = 0; i < 64; i++) {
        inner[i] = k[i] ^ 0x36;
        pad[i] = k[i] ^ 0x5c;
    }
    if (n > 0) {
        memcpy(inner + 64, msg, n);
    }
    srv_sha1(inner, 64 + n, pad + 64);
    free(inner);
    srv_sha1(pad, 64 + 20, out);
}

void srv_pbkdf2_sha1(const char *password,
                     const uint8_t *salt,
                     size_t salt_len,
                     unsigned rounds,
                     uint8_t out[20])
{
    /* One output block (20 bytes): U1 = HMAC(P, S || INT(1)), Ui = HMAC(P, Ui-1), T = xor. */
    uint8_t s1[64 + 4];
    size_t sl = salt_len > 64 ? 64 : salt_len;
    memcpy(s1, salt, sl);
    s1[sl] = 0;
    s1[sl + 1] = 0;
    s1[sl + 2] = 0;
    s1[sl + 3] = 1;
    const uint8_t *pw = (const uint8_t *)password;
    size_t pl = strlen(password);
    uint8_t u[20];
    hmac_sha1(pw, pl, s1, sl + 4, u);
    memcpy(out, u, 20);
    for (unsigned r = 1; r < rounds; r++) {
        hmac_sha1(pw, pl, u, 20, u);
        for (int i = 0; i < 20; i++) {
            out[i] ^= u[i];
        }
    }
}
