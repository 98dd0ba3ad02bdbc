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
