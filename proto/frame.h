/* Length-prefixed framing of protobuf messages on a byte stream (peer and client connections). */
#ifndef KV_PROTO_FRAME_H
#define KV_PROTO_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes of the pb_ module (STYLE.md §3: 400-499). */
#define PB_ERRORS(X)                                  \
    X(PB_ENOMEM, 400, "out of memory")                \
    X(PB_EAGAIN, 401, "no complete frame yet")        \
    X(PB_ETOOBIG, 402, "frame larger than the limit") \
    X(PB_EMALFORMED, 403, "malformed message")        \
    X(PB_EUNKNOWN, 404, "message carries unknown fields")

enum pb_err {
#define X(code, num, msg) code = num,
    PB_ERRORS(X)
#undef X
};

/* The message for @code (a PB_E* value, or "unknown error"). */
const char *pb_strerror(int code);

/* Each frame is a 4-byte little-endian length followed by that many bytes of payload. */
#define PB_FRAME_HDR 4

/* Accumulates bytes read from a stream and splits them into frames.  Owns its buffer.
 * Not thread-safe: one connection, one thread. */
struct pb_frame_reader
{
    unsigned char *buf; /* bytes [off, len) are unconsumed input */
    size_t off;
    size_t len;
    size_t cap;
    size_t max_frame; /* payload limit; a longer frame is PB_ETOOBIG */
};

/* Start empty, refusing frames whose payload exceeds @max_frame bytes. */
void pb_frame_reader_init(struct pb_frame_reader *r, size_t max_frame);

/* Free the buffer.  A no-op on a zeroed struct. */
void pb_frame_reader_fini(struct pb_frame_reader *r);

/* Make room for at least @want bytes and return where to read them (@p, @n: n >= want).
 * Errors: PB_ENOMEM (the reader is unchanged). */
int pb_frame_reader_space(struct pb_frame_reader *r, size_t want, unsigned char **p, size_t *n);

/* Record that @n bytes were written at the pointer pb_frame_reader_space() returned. */
void pb_frame_reader_commit(struct pb_frame_reader *r, size_t n);

/* The next complete frame: sets @payload and @len (borrowed: valid until the next call on @r).
 * Errors: PB_EAGAIN (need more bytes), PB_ETOOBIG (the announced length exceeds the limit: the
 * stream cannot be resynchronised, so the caller closes the connection). */
int pb_frame_reader_next(struct pb_frame_reader *r, const unsigned char **payload, size_t *len);

/* A growable output buffer of frames, written to a socket in one call per batch. */
struct pb_frame_writer
{
    unsigned char *buf; /* bytes [off, len) are waiting to be written */
    size_t off;
    size_t len;
    size_t cap;
};

/* Start empty / free.  _fini is a no-op on a zeroed struct. */
void pb_frame_writer_init(struct pb_frame_writer *w);
void pb_frame_writer_fini(struct pb_frame_writer *w);

/* Append @msg packed as one frame.  Errors: PB_ENOMEM (nothing appended). */
int pb_frame_writer_append(struct pb_frame_writer *w, const ProtobufCMessage *msg);

/* Append @n raw payload bytes as one frame.  Errors: PB_ENOMEM (nothing appended). */
int pb_frame_writer_append_raw(struct pb_frame_writer *w, const void *payload, size_t n);

/* Append @n bytes as they are, without a length prefix (for the HTTP answers served on the
 * client port).  Errors: PB_ENOMEM (nothing appended). */
int pb_frame_writer_append_bytes(struct pb_frame_writer *w, const void *p, size_t n);

/* Pending bytes (@p, returned size) and marking @n of them written. */
size_t pb_frame_writer_pending(const struct pb_frame_writer *w, const unsigned char **p);
void pb_frame_writer_consume(struct pb_frame_writer *w, size_t n);

#endif /* KV_PROTO_FRAME_H */
