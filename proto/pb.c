/* Wire-format helpers. */
#include "proto/pb.h"

#include <stddef.h>
#include <stdint.h>

static const ProtobufCMessage *field_msg(const ProtobufCMessage *msg,
                                         const ProtobufCFieldDescriptor *f,
                                         size_t i)
{
    const char *base = (const char *)msg + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(const void *)base;
        return arr[i];
    }
    return *(const ProtobufCMessage *const *)(const void *)base;
}

static size_t field_count(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return *(const size_t *)(const void *)((const char *)msg + f->quantifier_offset);
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which =
            *(const uint32_t *)(const void *)((const char *)msg + f->quantifier_offset);
        return which == f->id ? 1 : 0;
    }
    return 1;
}

/* Read a varint at *@p (before @end); false when truncated or too long. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            return true;
        }
    }
    return false;
}

/* Walk the fields of one message in [p, end): calls @sub for each length-delimited field
 * @want_a or @want_b, keeping the deepest result.  -1 on malformed input or a too-deep sub. */
static int scan_fields(const uint8_t *p,
                       const uint8_t *end,
                       unsigned want_a,
                       unsigned want_b,
                       int (*sub)(const uint8_t *, const uint8_t *, int, int),
                       int depth,
                       int max)
{
    int best = depth;
    while (p < end) {
        uint64_t tag, len;
        if (!read_varint(&p, end, &tag)) {
            return -1;
        }
        switch (tag & 7) {
        case 0:
            if (!read_varint(&p, end, &len)) {
                return -1;
            }
            break;
        case 1:
            if (end - p < 8) {
                return -1;
            }
            p += 8;
            break;
        case 5:
            if (end - p < 4) {
                return -1;
            }
            p += 4;
            break;
        case 2: {
            if (!read_varint(&p, end, &len) || len > (uint64_t)(end - p)) {
                return -1;
            }
            unsigned field = (unsigned)(tag >> 3);
            if (field == want_a || field == want_b) {
                int d = sub(p, p + len, depth, max);
                if (d < 0) {
                    return -1;
                }
                best = d > best ? d : best;
            }
            p += len;
            break;
        }
        default:
            return -1;
        }
    }
    return best;
}

static int scan_txn(const uint8_t *p, const uint8_t *end, int depth, int max);

/* RequestOp: field 4 is a nested TxnRequest, one level deeper. */
static int scan_op(const uint8_t *p, const uint8_t *end, int depth, int max)
{
    return scan_fields(p, end, 4, 4, scan_txn, depth, max);
}

static int scan_txn(const uint8_t *p, const uint8_t *end, int depth, int max)
{
    if (++depth > max) {
        return -1;
    }
    /* TxnRequest: success (2) and failure (3) are RequestOps. */
    return scan_fields(p, end, 2, 3, scan_op, depth, max);
}

int pb_txn_depth(const uint8_t *buf, size_t len, int max)
{
    return scan_txn(buf, buf + len, 0, max);
}

bool pb_has_unknown_fields(const ProtobufCMessage *msg)
{
    if (msg == NULL) {
        return false;
    }
    if (msg->n_unknown_fields > 0) {
        return true;
    }
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        size_t n = field_count(msg, f);
        for (size_t k = 0; k < n; k++) {
            if (pb_has_unknown_fields(field_msg(msg, f, k))) {
                return true;
            }
        }
    }
    return false;
}
