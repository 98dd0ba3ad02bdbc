/* Key and value encodings of the LevelDB layout (lsm/FORMAT.md), and small helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/internal.h"

void lsm_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint64_t lsm_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

void lsm_put64be(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[7 - i] = (uint8_t)(v >> (8 * i));
    }
}

uint64_t lsm_get64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int lsm_buf_reserve(struct lsm_buf *b, size_t n)
{
    if (b->len + n <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        return LSM_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int lsm_buf_add(struct lsm_buf *b, const void *p, size_t n)
{
    if (lsm_buf_reserve(b, n) != 0) {
        return LSM_ENOMEM;
    }
    if (n > 0) {
        memcpy(b->p + b->len, p, n);
    }
    b->len += n;
    return 0;
}

void lsm_buf_fini(struct lsm_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

int lsm_key_cur(struct lsm_buf *b, const void *key, size_t len)
{
    uint8_t p = LSM_P_CUR;
    b->len = 0;
    if (lsm_buf_add(b, &p, 1) != 0 || lsm_buf_add(b, key, len) != 0) {
        return LSM_ENOMEM;
    }
    return 0;
}

/* History keys escape 0x00 as 00 FF and end the user key with 00 01, so the encoding is
 * prefix-free and orders like the user keys; the revision follows big-endian, giving the
 * "key, then revision" order. */
int lsm_key_hist_prefix(struct lsm_buf *b, const void *key, size_t len)
{
    const uint8_t *k = key;
    b->len = 0;
    if (lsm_buf_reserve(b, 1 + 2 * len + 10) != 0) {
        return LSM_ENOMEM;
    }
    b->p[b->len++] = LSM_P_HIST;
    for (size_t i = 0; i < len; i++) {
        b->p[b->len++] = k[i];
        if (k[i] == 0) {
            b->p[b->len++] = 0xff;
        }
    }
    return 0;
}

int lsm_key_hist(struct lsm_buf *b, const void *key, size_t len, int64_t rev, uint32_t sub)
{
    if (lsm_key_hist_prefix(b, key, len) != 0) {
        return LSM_ENOMEM;
    }
    b->p[b->len++] = 0;
    b->p[b->len++] = 1;
    lsm_put64be(b->p + b->len, (uint64_t)rev);
    b->len += 8;
    for (int i = 3; i >= 0; i--) {
        b->p[b->len++] = (uint8_t)(sub >> (8 * i));
    }
    return 0;
}

int lsm_key_hist_parse(const uint8_t *k,
                       size_t klen,
                       struct lsm_buf *key,
                       int64_t *rev,
                       uint32_t *sub)
{
    key->len = 0;
    if (klen < 1 + LSM_HIST_SUFFIX || k[0] != LSM_P_HIST) {
        return LSM_ECORRUPT;
    }
    size_t end = klen - LSM_HIST_SUFFIX;
    if (k[end] != 0 || k[end + 1] != 1) {
        return LSM_ECORRUPT;
    }
    if (lsm_buf_reserve(key, end) != 0) {
        return LSM_ENOMEM;
    }
    for (size_t i = 1; i < end; i++) {
        key->p[key->len++] = k[i];
        if (k[i] == 0) {
            if (i + 1 >= end || k[i + 1] != 0xff) {
                return LSM_ECORRUPT;
            }
            i++;
        }
    }
    *rev = (int64_t)lsm_get64be(k + end + 2);
    if (sub != NULL) {
        *sub = (uint32_t)k[end + 10] << 24 | (uint32_t)k[end + 11] << 16 |
               (uint32_t)k[end + 12] << 8 | k[end + 13];
    }
    return 0;
}

void lsm_key_rev(uint8_t out[13], int64_t rev, uint32_t sub)
{
    out[0] = LSM_P_REV;
    lsm_put64be(out + 1, (uint64_t)rev);
    for (int i = 0; i < 4; i++) {
        out[12 - i] = (uint8_t)(sub >> (8 * i));
    }
}

void lsm_meta_encode(uint8_t *p, const struct lsm_meta *m)
{
    lsm_put64(p, (uint64_t)m->create_rev);
    lsm_put64(p + 8, (uint64_t)m->mod_rev);
    lsm_put64(p + 16, (uint64_t)m->version);
    lsm_put64(p + 24, (uint64_t)m->lease);
}

void lsm_meta_decode(const uint8_t *p, struct lsm_meta *m)
{
    m->create_rev = (int64_t)lsm_get64(p);
    m->mod_rev = (int64_t)lsm_get64(p + 8);
    m->version = (int64_t)lsm_get64(p + 16);
    m->lease = (int64_t)lsm_get64(p + 24);
    m->sub = 0;
}

void lsm_cur_encode(uint8_t p[LSM_CUR_HDR], const struct lsm_meta *m)
{
    lsm_meta_encode(p, m);
    for (int i = 0; i < 4; i++) {
        p[LSM_META_LEN + 3 - i] = (uint8_t)(m->sub >> (8 * i));
    }
}

void lsm_cur_decode(const uint8_t p[LSM_CUR_HDR], struct lsm_meta *m)
{
    lsm_meta_decode(p, m);
    const uint8_t *q = p + LSM_META_LEN;
    m->sub = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

void lsm_span_make(struct lsm_span *sp, struct lsm_bytes key, struct lsm_bytes end)
{
    memset(sp, 0, sizeof *sp);
    sp->key = key.data;
    sp->key_len = key.len;
    if (end.len == 0) {
        sp->single = true;
    } else if (end.len == 1 && ((const uint8_t *)end.data)[0] == 0) {
        sp->unbounded = true;
    } else {
        sp->end = end.data;
        sp->end_len = end.len;
    }
}

int lsm_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

bool lsm_span_has(const struct lsm_span *sp, const uint8_t *k, size_t len)
{
    int c = lsm_keycmp(k, len, sp->key, sp->key_len);
    if (sp->single) {
        return c == 0;
    }
    if (c < 0) {
        return false;
    }
    return sp->unbounded || lsm_keycmp(k, len, sp->end, sp->end_len) < 0;
}

int lsm_kv_fill(struct lsm_kv *kv,
                const uint8_t *key,
                size_t klen,
                const uint8_t *val,
                size_t vlen,
                bool with_value,
                const struct lsm_meta *m)
{
    size_t n = klen + (with_value ? vlen : 0);
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL) {
        return LSM_ENOMEM;
    }
    if (klen) {
        memcpy(p, key, klen);
    }
    kv->key = p;
    kv->key_len = klen;
    kv->value = NULL;
    kv->value_len = 0;
    if (with_value) {
        if (vlen) {
            memcpy(p + klen, val, vlen);
        }
        kv->value = p + klen;
        kv->value_len = vlen;
    }
    kv->create_revision = m->create_rev;
    kv->mod_revision = m->mod_rev;
    kv->version = m->version;
    kv->lease = m->lease;
    return 0;
}

void lsm_kv_fini(struct lsm_kv *kv)
{
    free(kv->key);
    memset(kv, 0, sizeof *kv);
}

void lsm_set_err(char *errmsg, const char *fmt, ...)
{
    if (errmsg == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, 256, fmt, ap);
    va_end(ap);
}

int lsm_ldb_err(char *errmsg, const char *what, char *err)
{
    /* leveldb::Status::ToString() starts with the status kind: a failed checksum, a bad block or
     * a bad manifest is "Corruption: ...", and serving around it would return damaged data. */
    int rv = err != NULL && strncmp(err, "Corruption: ", 12) == 0 ? LSM_ECORRUPT : LSM_EIO;
    lsm_set_err(errmsg, "%s: %s", what, err ? err : "unknown leveldb error");
    leveldb_free(err);
    return rv;
}
