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
    X(KVC_EPROTO, 606, "malformed reply")                    \
    X(KVC_EOVERFLOW, 607, "too many replies and events waiting to be read")

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
    unsigned max_backlog;        /* bound of the backlog (below) in frames; 0 = 4096 */
};

/*
 * A client holds one connection at a time to one of its endpoints, and fails over to the next
 * on a connection error or when the member answers UNAVAILABLE (no leader).  Only requests the
 * member cannot have executed are retried: a write whose connection broke after sending is
 * reported as KVC_EIO (its outcome is unknown), like etcd's clientv3.
 *
 * Retry backoff: before its k-th retry (k = 1, 2, ...) kvc_call() sleeps
 * min(50 * 2^(k-1), 1000) ms, that is 50, 100, 200, 400, 800, 1000, 1000, ... ms, cut short at
 * the request deadline.  An attempt sends the request once, to the next endpoint that accepts
 * a connection (dialling each endpoint at most once).  So a call that no member can answer
 * makes 7 attempts in its first 3 s (at 0, 0.05, 0.15, 0.35, 0.75, 1.55 and 2.55 s), then one a
 * second.
 *
 * Threads: a struct kvc belongs to one thread at a time.  Its calls must not overlap (there is
 * no locking inside); use one handle per thread, or serialise the calls yourself.  Handles are
 * independent of each other.  kvc_strerror() and kvc_prefix_end() may be called from any thread.
 *
 * One handle may carry unary calls (kvc_call() and the calls built on it), pipelined requests
 * (kvc_send()/kvc_recv()) and watches (kvc_watch()/kvc_watch_next()) at the same time, all on
 * its one connection.  Frames arrive in the order the member sent them.  A call that waits for
 * its own reply keeps every other frame it reads (watch responses, replies to kvc_send()) in the
 * handle's backlog, in arrival order; nothing is dropped:
 *   - kvc_recv() returns the oldest kept frame of any kind, then reads the connection;
 *   - kvc_watch_next() returns the oldest kept watch response, then reads the connection,
 *     keeping the other frames it passes for kvc_recv();
 *   - the backlog holds at most max_backlog frames or 64 MiB of bodies.  At the bound a call
 *     that would read more returns KVC_EOVERFLOW instead of reading (nothing is lost: the frames
 *     stay kept or unread on the connection); read the backlog with kvc_watch_next()/kvc_recv()
 *     and call again.  A kvc_call() that finds the backlog full sends nothing; one that fills it
 *     while waiting has sent its request, whose outcome is then unknown (as with KVC_ETIMEOUT).
 * A reply to a kvc_call() that gave up (timeout) is dropped when it comes late.
 *
 * When the connection closes (a failover inside kvc_call(), a broken connection), the frames
 * already received are still delivered, then kvc_recv() reports KVC_EIO once if kvc_send()
 * requests were unanswered or watches were open on it, and kvc_watch_next() reports KVC_EIO once
 * if watches were open: their outcome is unknown, and watches must be reopened from the last
 * revision seen + 1.  (kvc_recv() reporting it counts for kvc_watch_next() too.)
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
 * Retries on another endpoint with the backoff described above, until the request timeout.
 * Other frames read meanwhile go to the backlog (above).
 * Errors: KVC_ESERVER (see kvc_server_code/kvc_errmsg), KVC_ETIMEOUT, KVC_EIO, KVC_ECONNECT,
 * KVC_EPROTO, KVC_ENOMEM, KVC_EOVERFLOW (the backlog is full). */
int kvc_call(struct kvc *c,
             Kvdb__Method m,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp);

/* Pipelining: queue a request without waiting (sent at the next kvc_flush(), kvc_recv(),
 * kvc_watch_next() or kvc_call()).  *@id gets its frame id; its reply comes from kvc_recv().
 * Errors: KVC_ENOMEM, KVC_ECONNECT. */
int kvc_send(struct kvc *c, Kvdb__Method m, const ProtobufCMessage *req, uint64_t *id);

/* Write everything queued.  Errors: KVC_EIO. */
int kvc_flush(struct kvc *c);

/* The next frame up to @timeout_ms: the oldest in the backlog, else the next from the
 * connection (a reply to kvc_send() in any order, or a watch response).  *@id gets its frame id,
 * *@code the server's error code, and *@body/@len its body (borrowed until the next kvc_recv()
 * or kvc_close()).  With @timeout_ms 0 it only looks at what is already received.
 * Errors: KVC_ETIMEOUT, KVC_EIO (the connection was lost, see above), KVC_EPROTO, KVC_ENOMEM. */
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
 * from the last revision seen + 1.  Errors: KVC_ECONNECT, KVC_ENOMEM, KVC_EIO. */
int kvc_watch(struct kvc *c, const Kvdb__WatchCreateRequest *req, uint64_t *stream);

/* The next WatchResponse (of any stream) within @timeout_ms: the oldest in the backlog, else
 * the next from the connection; free it with kvdb__watch_response__free_unpacked().  Other
 * frames read meanwhile go to the backlog for kvc_recv().
 * Errors: KVC_ETIMEOUT, KVC_EIO (the connection carrying the watches was lost, see above),
 * KVC_EPROTO, KVC_ESERVER (the member refused the request), KVC_ENOMEM, KVC_EOVERFLOW. */
int kvc_watch_next(struct kvc *c,
                   unsigned timeout_ms,
                   uint64_t *stream,
                   Kvdb__WatchResponse **resp);

/* The smallest key greater than every key with @prefix (etcd GetPrefixRangeEnd) into @out
 * (room for @len bytes); returns its length, 1 ("\0", meaning "all keys") if @prefix is all 0xff.
 */
size_t kvc_prefix_end(const void *prefix, size_t len, uint8_t *out);

#endif /* KV_CLIENT_KVC_H */
