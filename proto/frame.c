/* Length-prefixed framing. */
#include "proto/frame.h"

#include <stdlib.h>
#include <string.h>

const char *pb_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case c:            \
        return msg;
        PB_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Ensure @buf has room for @need bytes past @len, compacting consumed bytes first so a
 * long-lived connection's buffer stays at its working-set size. */
static int grow(unsigned char **buf, size_t *off, size_t *len, size_t *cap, size_t need)
{
    if (*off > 0 && (*off == *len || *cap - *len < need)) {
        memmove(*buf, *buf + *off, *len - *off);
        *len -= *off;
        *off = 0;
    }
    if (*cap - *len >= need) {
        return 0;
    }
    size_t ncap = *cap > 0 ? *cap : 4096;
    while (ncap - *len < need) {
        ncap *= 2;
    }
    unsigned char *nb = realloc(*buf, ncap);
    if (nb == NULL) {
        return PB_ENOMEM;
    }
    *buf = nb;
    *cap = ncap;
    return 0;
}

void pb_frame_reader_init(struct pb_frame_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->max_frame = max_frame;
}

void pb_frame_reader_fini(struct pb_frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}

int pb_frame_reader_space(struct pb_frame_reader *r, size_t want, unsigned char **p, size_t *n)
{
    int rv = grow(&r->buf, &r->off, &r->len, &r->cap, want);
    if (rv != 0) {
        return rv;
    }
    *p = r->buf + r->len;
    *n = r->cap - r->len;
    return 0;
}

void pb_frame_reader_commit(struct pb_frame_reader *r, size_t n)
{
    r->len += n;
}

int pb_frame_reader_next(struct pb_frame_reader *r, const unsigned char **payload, size_t *len)
{
    size_t avail = r->len - r->off;
    if (avail < PB_FRAME_HDR) {
        return PB_EAGAIN;
    }
    size_t n = get_le32(r->buf + r->off);
    if (n > r->max_frame) {
        return PB_ETOOBIG;
    }
    if (avail - PB_FRAME_HDR < n) {
        return PB_EAGAIN;
    }
    *payload = r->buf + r->off + PB_FRAME_HDR;
    *len = n;
    r->off += PB_FRAME_HDR + n;
    return 0;
}

void pb_frame_writer_init(struct pb_frame_writer *w)
{
    memset(w, 0, sizeof *w);
}

void pb_frame_writer_fini(struct pb_frame_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

int pb_frame_writer_append(struct pb_frame_writer *w, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > UINT32_MAX) {
        return PB_ETOOBIG;
    }
    int rv = grow(&w->buf, &w->off, &w->len, &w->cap, PB_FRAME_HDR + n);
    if (rv != 0) {
        return rv;
    }
    put_le32(w->buf + w->len, (uint32_t)n);
    size_t packed = protobuf_c_message_pack(msg, w->buf + w->len + PB_FRAME_HDR);
    if (packed != n) {
        return PB_EMALFORMED; /* nothing committed: len is unchanged */
    }
    w->len += PB_FRAME_HDR + n;
    return 0;
}

int pb_frame_writer_append_raw(struct pb_frame_writer *w, const void *payload, size_t n)
{
    if (n > UINT32_MAX) {
        return PB_ETOOBIG;
    }
    int rv = grow(&w->buf, &w->off, &w->len, &w->cap, PB_FRAME_HDR + n);
    if (rv != 0) {
        return rv;
    }
    put_le32(w->buf + w->len, (uint32_t)n);
    if (n > 0) {
        memcpy(w->buf + w->len + PB_FRAME_HDR, payload, n);
    }
    w->len += PB_FRAME_HDR + n;
    return 0;
}

int pb_frame_writer_append_bytes(struct pb_frame_writer *w, const void *p, size_t n)
{
    int rv = grow(&w->buf, &w->off, &w->len, &w->cap, n);
    if (rv != 0) {
        return rv;
    }
    if (n > 0) {
        memcpy(w->buf + w->len, p, n);
    }
    w->len += n;
    return 0;
}

size_t pb_frame_writer_pending(const struct pb_frame_writer *w, const unsigned char **p)
{
    *p = w->buf + w->off;
    return w->len - w->off;
}

void pb_frame_writer_consume(struct pb_frame_writer *w, size_t n)
{
    w->off += n;
    if (w->off == w->len) {
        w->off = 0;
        w->len = 0;
    }
}
