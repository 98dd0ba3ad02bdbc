/* The kvdb C client: connections to members, pipelined requests, retries and failover. */
#ifndef KV_CLIENT_KVC_H
#define KV_CLIENT_KVC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/kvdb.pb-c.h"

/* Error codes of the client library (600-699). */
#define KVC_ERRORS(X)                                        \
    X(KVC_ENOMEM, 600, "out of memory")                      \
    X(KVC_EINVAL, 601, "invalid argument")                   \
    X(KVC_ECONNECT, 602, "cannot connect to any endpoint")   \
    X(KVC_EIO, 603, "connection lost")                       \
    X(KVC_ETIMEOUT, 604, "request timed out")                \
    X(KVC_ESERVER, 605, "the server answered with an error") \
    X(KVC_EPROTO, 606, "malformed reply")

enum kvc_err {
#define X(code, num, msg) code = num,
    KVC_ERRORS(X)
#undef X
};

/* The message for @code, or "unknown error".  Any thread. */
const char *kvc_strerror(int code);

struct kvc_options
{
    unsigned dial_timeout_ms;    /* connect timeout per endpoint; 0 = 2000 */
    unsigned request_timeout_ms; /* whole-call deadline including retries; 0 = 15000 */
};

/*
 * A client holds one connection at a time to one of its endpoints, and fails over to the next
 * on a connection error or when the member answers UNAVAILABLE (no leader).  Only requests the
 * member cannot have executed are retried: a write whose connection broke after sending is
 * reported as KVC_EIO (its outcome is unknown), like etcd's clientv3.
 * A struct kvc is used by one thread at a time.
 */
struct kvc;

/* Connect to the first reachable of @endpoints ("host:port" or "http://host:port",
 * comma-separated).  @opts may be NULL.  On success *@out owns the client (kvc_close()).
 * Errors: KVC_EINVAL (no endpoint parses), KVC_ECONNECT, KVC_ENOMEM; @errmsg (256 bytes) gets
 * context. */
int kvc_open(const char *endpoints, const struct kvc_options *opts, struct kvc **out, char *errmsg);

/* Close the connection and free.  NULL is a no-op. */
void kvc_close(struct kvc *c);

/* The last error's context: the server's message for KVC_ESERVER, the cause otherwise. */
const char *kvc_errmsg(const struct kvc *c);

/* The server's error code of the last KVC_ESERVER. */
Kvdb__ErrorCode kvc_server_code(const struct kvc *c);

/* One request/response call: packs @req, sends it as method @m, waits for its reply and unpacks
 * it with @resp_desc into *@resp (free with protobuf_c_message_free_unpacked(*resp, NULL)).
 * Retries on another endpoint as described above, until the request timeout.
 * Errors: KVC_ESERVER (see kvc_server_code/kvc_errmsg), KVC_ETIMEOUT, KVC_EIO, KVC_ECONNECT,
 * KVC_EPROTO, KVC_ENOMEM. */
int kvc_call(struct kvc *c,
             Kvdb__Method m,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp);

/* Pipelining: queue a request without waiting (sent at the next kvc_flush() or kvc_recv()).
 * *@id gets its frame id.  Errors: KVC_ENOMEM, KVC_EIO. */
int kvc_send(struct kvc *c, Kvdb__Method m, const ProtobufCMessage *req, uint64_t *id);

/* Write everything queued.  Errors: KVC_EIO. */
int kvc_flush(struct kvc *c);

/* Wait for the next reply (any order) up to @timeout_ms: *@id its frame id, *@code the server's
 * error code, and on OK the body in *@body/@len (borrowed until the next kvc_recv()).
 * Errors: KVC_ETIMEOUT, KVC_EIO, KVC_EPROTO. */
int kvc_recv(struct kvc *c,
             unsigned timeout_ms,
             uint64_t *id,
             Kvdb__ErrorCode *code,
             const uint8_t **body,
             size_t *len);

/* Convenience calls (etcd clientv3 Put/Get/Delete).  Replies as kvc_call(). */
int kvc_put(struct kvc *c,
            const void *key,
            size_t klen,
            const void *val,
            size_t vlen,
            Kvdb__PutResponse **resp);
int kvc_get(struct kvc *c,
            const void *key,
            size_t klen,
            bool serializable,
            Kvdb__RangeResponse **resp);
int kvc_delete(struct kvc *c, const void *key, size_t klen, Kvdb__DeleteRangeResponse **resp);

/* Authenticate as @user with @password (auth enabled on the cluster): every later request
 * carries the token.  The credentials are kept so that the client authenticates again when a
 * member it fails over to does not know the token (tokens are per member) or it expired.
 * Errors: KVC_ESERVER (wrong user or password, auth not enabled), and those of kvc_call. */
int kvc_authenticate(struct kvc *c, const char *user, const char *password);

/* Ask the member for a fresh snapshot and write the archive it streams (snapshot/FORMAT.md,
 * "archive"; kvdb-snapshot reads it) to @out.  The stream uses up the current connection (the
 * client reconnects for its next call).  *@bytes (may be NULL) gets the archive's size.
 * Errors: KVC_ESERVER, KVC_EIO (the stream broke: @out holds a partial archive), KVC_ETIMEOUT,
 * KVC_EPROTO. */
int kvc_snapshot(struct kvc *c, FILE *out, uint64_t *bytes);

/* Open a watch stream carrying one watcher created by @req; *@stream gets the stream's frame id.
 * Its responses (first "created", then events, progress and "canceled") come from
 * kvc_watch_next.  Watches live on the current connection: after a connection loss reopen them
 * from the last revision seen + 1.  Errors: as kvc_send, KVC_ECONNECT. */
int kvc_watch(struct kvc *c, const Kvdb__WatchCreateRequest *req, uint64_t *stream);

/* The next WatchResponse (of any stream) within @timeout_ms; free it with
 * kvdb__watch_response__free_unpacked().  Replies that are not watch responses are skipped.
 * Errors: KVC_ETIMEOUT, KVC_EIO, KVC_EPROTO, KVC_ESERVER (the member refused the request). */
int kvc_watch_next(struct kvc *c,
                   unsigned timeout_ms,
                   uint64_t *stream,
                   Kvdb__WatchResponse **resp);

/* The smallest key greater than every key with @prefix (etcd GetPrefixRangeEnd) into @out
 * (room for @len bytes); returns its length, 1 ("\0", meaning "all keys") if @prefix is all 0xff.
 */
size_t kvc_prefix_end(const void *prefix, size_t len, uint8_t *out);

#endif /* KV_CLIENT_KVC_H */
