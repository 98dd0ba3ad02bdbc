/* The kvdb C client. */
#include "client/kvc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/backlog.h"
#include "proto/frame.h"

#define MAX_ENDPOINTS 16
#define MAX_REPLY (256u << 20)
#define CALL_ID (UINT64_C(1) << 63) /* set in the frame ids of the library's own requests */
#define BACKLOG_DEFAULT 4096        /* kvc_options.max_backlog when 0 */
#define BACKLOG_BYTES (64u << 20)   /* and at most this many body bytes */
#define BACKOFF_FIRST_MS 50         /* kvc.h documents this schedule */
#define BACKOFF_MAX_MS 1000

/* What a lost connection took with it, reported once by kvc_recv()/kvc_watch_next(). */
enum lost {
    LOST_REPLIES = 1, /* kvc_send() requests still unanswered */
    LOST_WATCHES = 2, /* the watches opened on it */
};

struct endpoint
{
    char host[64];
    uint16_t port;
};

struct kvc
{
    struct endpoint eps[MAX_ENDPOINTS];
    size_t n_eps;
    size_t cur; /* endpoint of the live connection */
    int fd;     /* -1 when not connected */
    struct kvc_options opts;
    uint64_t next_id;
    struct pb_frame_reader rd;
    struct pb_frame_writer wr;
    Kvdb__Frame *last;       /* the reply last returned by kvc_recv() */
    struct kvc_backlog kept; /* frames read by one call for another (kvc.h) */
    size_t pipelined;        /* kvc_send() requests on this connection not yet answered */
    bool watching;           /* a watch was opened on this connection */
    unsigned lost;           /* enum lost bits not yet reported */
    char lost_msg[256];      /* the message that reports them */
    Kvdb__ErrorCode server_code;
    char errmsg[256];
    char token[64]; /* from kvc_authenticate() */
    char user[64];  /* kept to authenticate again on another member */
    char password[128];
};

const char *kvc_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case c:            \
        return msg;
        KVC_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int parse_endpoints(struct kvc *c, const char *list)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t != NULL && c->n_eps < MAX_ENDPOINTS;
         t = strtok_r(NULL, ",", &save)) {
        if (strncmp(t, "http://", 7) == 0) {
            t += 7;
        }
        char *colon = strrchr(t, ':');
        if (colon == NULL || (size_t)(colon - t) >= sizeof c->eps[0].host) {
            return KVC_EINVAL;
        }
        struct endpoint *e = &c->eps[c->n_eps];
        memcpy(e->host, t, (size_t)(colon - t));
        e->host[colon - t] = '\0';
        if (strcmp(e->host, "localhost") == 0) {
            strcpy(e->host, "127.0.0.1");
        }
        long port = strtol(colon + 1, NULL, 10);
        if (port <= 0 || port > 65535) {
            return KVC_EINVAL;
        }
        e->port = (uint16_t)port;
        c->n_eps++;
    }
    return c->n_eps > 0 ? 0 : KVC_EINVAL;
}

/* Whether the backlog is at its bound (kvc.h): then nothing more is read into it. */
static int check_backlog(struct kvc *c)
{
    if (c->kept.n < c->opts.max_backlog && c->kept.bytes < BACKLOG_BYTES) {
        return 0;
    }
    snprintf(c->errmsg, sizeof c->errmsg,
             "%zu frames (%zu bytes) wait for kvc_recv/kvc_watch_next: read them first", c->kept.n,
             c->kept.bytes);
    return KVC_EOVERFLOW;
}

/* Append @f to the backlog; takes ownership of @f.  A late reply to a kvc_call() that gave up
 * is nobody's and is dropped.  Errors: KVC_ENOMEM (@f freed and recorded as lost: the caller
 * closes the connection, and kvc_recv()/kvc_watch_next() report it). */
static int keep(struct kvc *c, Kvdb__Frame *f)
{
    if (!(f->id & CALL_ID) && kvc_backlog_push(&c->kept, f) == 0) {
        return 0;
    }
    int rv = 0;
    if (!(f->id & CALL_ID)) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory keeping a frame");
        snprintf(c->lost_msg, sizeof c->lost_msg, "a frame was lost: out of memory");
        c->lost |= f->method == KVDB__METHOD__METHOD_WATCH ? LOST_WATCHES : LOST_REPLIES;
        rv = KVC_ENOMEM;
    }
    kvdb__frame__free_unpacked(f, NULL);
    return rv;
}

/* Note that frame @f arrived on the connection: a reply to kvc_send() is no longer at risk of
 * being lost with it. */
static void arrived(struct kvc *c, const Kvdb__Frame *f)
{
    if (!(f->id & CALL_ID) && f->method != KVDB__METHOD__METHOD_WATCH && c->pipelined > 0) {
        c->pipelined--;
    }
}

/* Keep the complete frames already read from a connection that is being closed: they were
 * delivered by the member, so they are delivered to the caller (before the loss is reported). */
static void salvage(struct kvc *c)
{
    const unsigned char *p;
    size_t n;
    while (pb_frame_reader_next(&c->rd, &p, &n) == 0) {
        Kvdb__Frame *f = kvdb__frame__unpack(NULL, n, p);
        if (f == NULL) {
            return;
        }
        arrived(c, f);
        if (keep(c, f) != 0) {
            return;
        }
    }
}

/* Close the connection.  What it carried for kvc_recv()/kvc_watch_next() (unanswered
 * kvc_send() requests, watches) is recorded as lost, to be reported after the kept frames. */
static void disconnect(struct kvc *c)
{
    if (c->fd >= 0) {
        salvage(c);
        if (c->pipelined > 0 || c->watching) {
            c->lost |= (c->pipelined > 0 ? LOST_REPLIES : 0u) | (c->watching ? LOST_WATCHES : 0u);
            snprintf(c->lost_msg, sizeof c->lost_msg,
                     "connection to %s:%u closed (%.80s): %zu requests unanswered%s",
                     c->eps[c->cur].host, (unsigned)c->eps[c->cur].port, c->errmsg, c->pipelined,
                     c->watching ? ", watches ended" : "");
        }
        close(c->fd);
        c->fd = -1;
    }
    c->pipelined = 0;
    c->watching = false;
    pb_frame_reader_fini(&c->rd);
    pb_frame_reader_init(&c->rd, MAX_REPLY);
    pb_frame_writer_fini(&c->wr);
    pb_frame_writer_init(&c->wr);
}

/* Connect to endpoint @i with the dial timeout. */
static int dial(struct kvc *c, size_t i)
{
    const struct endpoint *e = &c->eps[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "socket: %s", strerror(errno));
        return KVC_ECONNECT;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(e->port)};
    if (inet_pton(AF_INET, e->host, &sa.sin_addr) != 1) {
        close(fd);
        snprintf(c->errmsg, sizeof c->errmsg, "%s: not an IPv4 address", e->host);
        return KVC_ECONNECT;
    }
    int rv = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (rv != 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&p, 1, (int)c->opts.dial_timeout_ms) == 1 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
            rv = 0;
        } else {
            errno = err != 0 ? err : ETIMEDOUT;
        }
    }
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "connect %s:%u: %s", e->host, (unsigned)e->port,
                 strerror(errno));
        close(fd);
        return KVC_ECONNECT;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->cur = i;
    return 0;
}

/* Connect to the current endpoint or, failing that, any other. */
static int ensure_connected(struct kvc *c)
{
    if (c->fd >= 0) {
        return 0;
    }
    for (size_t k = 0; k < c->n_eps; k++) {
        if (dial(c, (c->cur + k) % c->n_eps) == 0) {
            return 0;
        }
    }
    return KVC_ECONNECT;
}

int kvc_open(const char *endpoints, const struct kvc_options *opts, struct kvc **out, char *errmsg)
{
    struct kvc *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(errmsg, 256, "out of memory");
        return KVC_ENOMEM;
    }
    c->fd = -1;
    c->next_id = 1;
    kvc_backlog_init(&c->kept);
    if (opts != NULL) {
        c->opts = *opts;
    }
    if (c->opts.dial_timeout_ms == 0) {
        c->opts.dial_timeout_ms = 2000;
    }
    if (c->opts.request_timeout_ms == 0) {
        c->opts.request_timeout_ms = 15000;
    }
    if (c->opts.max_backlog == 0) {
        c->opts.max_backlog = BACKLOG_DEFAULT;
    }
    pb_frame_reader_init(&c->rd, MAX_REPLY);
    pb_frame_writer_init(&c->wr);
    int rv = parse_endpoints(c, endpoints);
    if (rv != 0) {
        snprintf(errmsg, 256, "bad endpoint list '%s' (want host:port,...)", endpoints);
        kvc_close(c);
        return rv;
    }
    rv = ensure_connected(c);
    if (rv != 0) {
        snprintf(errmsg, 256, "%s", c->errmsg);
        kvc_close(c);
        return rv;
    }
    *out = c;
    return 0;
}

void kvc_close(struct kvc *c)
{
    if (c == NULL) {
        return;
    }
    if (c->last != NULL) {
        kvdb__frame__free_unpacked(c->last, NULL);
    }
    kvc_backlog_fini(&c->kept);
    if (c->fd >= 0) {
        close(c->fd);
    }
    pb_frame_reader_fini(&c->rd);
    pb_frame_writer_fini(&c->wr);
    free(c);
}

const char *kvc_errmsg(const struct kvc *c)
{
    return c->errmsg;
}

Kvdb__ErrorCode kvc_server_code(const struct kvc *c)
{
    return c->server_code;
}

/* Queue @req as method @m in a frame with id @id. */
static int send_frame(struct kvc *c, Kvdb__Method m, const ProtobufCMessage *req, uint64_t id)
{
    if (ensure_connected(c) != 0) {
        return KVC_ECONNECT;
    }
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t stackbuf[4096];
    uint8_t *body = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (body == NULL) {
        return KVC_ENOMEM;
    }
    protobuf_c_message_pack(req, body);
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = id;
    f.method = m;
    f.body.data = body;
    f.body.len = n;
    if (c->token[0] != '\0') {
        f.token = c->token;
    }
    int rv = pb_frame_writer_append(&c->wr, &f.base);
    if (body != stackbuf) {
        free(body);
    }
    return rv != 0 ? KVC_ENOMEM : 0;
}

int kvc_send(struct kvc *c, Kvdb__Method m, const ProtobufCMessage *req, uint64_t *id)
{
    uint64_t want = c->next_id++;
    int rv = send_frame(c, m, req, want);
    if (rv != 0) {
        return rv;
    }
    if (m == KVDB__METHOD__METHOD_WATCH) {
        c->watching = true; /* a stream: no count of its replies */
    } else {
        c->pipelined++;
    }
    *id = want;
    return 0;
}

int kvc_flush(struct kvc *c)
{
    const unsigned char *p;
    size_t n;
    while ((n = pb_frame_writer_pending(&c->wr, &p)) > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            pb_frame_writer_consume(&c->wr, (size_t)w);
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
            poll(&pf, 1, 1000);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            snprintf(c->errmsg, sizeof c->errmsg, "send: %s", strerror(errno));
            disconnect(c);
            return KVC_EIO;
        }
    }
    return 0;
}

/* Read the next frame from the connection by @deadline (now_ms() clock) into *@out (free with
 * kvdb__frame__free_unpacked).  A deadline already past only looks at the bytes buffered.
 * Errors: KVC_ETIMEOUT, KVC_EIO and KVC_EPROTO (the connection is closed), KVC_ENOMEM. */
static int read_frame(struct kvc *c, uint64_t deadline, Kvdb__Frame **out)
{
    for (;;) {
        if (c->fd < 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "not connected");
            return KVC_EIO;
        }
        const unsigned char *p;
        size_t n;
        int rv = pb_frame_reader_next(&c->rd, &p, &n);
        if (rv == 0) {
            *out = kvdb__frame__unpack(NULL, n, p);
            if (*out != NULL) {
                arrived(c, *out);
                return 0;
            }
            snprintf(c->errmsg, sizeof c->errmsg, "undecodable reply frame");
            disconnect(c);
            return KVC_EPROTO;
        }
        if (rv != PB_EAGAIN) {
            snprintf(c->errmsg, sizeof c->errmsg, "reply frame too large");
            disconnect(c);
            return KVC_EPROTO;
        }
        uint64_t now = now_ms();
        if (now >= deadline) {
            return KVC_ETIMEOUT;
        }
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0) {
            continue;
        }
        unsigned char *buf;
        size_t room;
        if (pb_frame_reader_space(&c->rd, 64 * 1024, &buf, &room) != 0) {
            return KVC_ENOMEM;
        }
        ssize_t r = recv(c->fd, buf, room, 0);
        if (r > 0) {
            pb_frame_reader_commit(&c->rd, (size_t)r);
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            snprintf(c->errmsg, sizeof c->errmsg, "connection to %s:%u lost", c->eps[c->cur].host,
                     (unsigned)c->eps[c->cur].port);
            disconnect(c);
            return KVC_EIO;
        }
    }
}

/* Read frames until the one with id @want (into *@out, owned by the caller), keeping the others
 * for kvc_recv()/kvc_watch_next().  Errors: those of read_frame(), KVC_EOVERFLOW (the backlog is
 * at its bound: nothing more is read, nothing is dropped). */
static int wait_for(struct kvc *c, uint64_t want, uint64_t deadline, Kvdb__Frame **out)
{
    for (;;) {
        int rv = check_backlog(c);
        if (rv != 0) {
            return rv;
        }
        Kvdb__Frame *f;
        rv = read_frame(c, deadline, &f);
        if (rv != 0) {
            return rv;
        }
        if (f->id == want) {
            *out = f;
            return 0;
        }
        rv = keep(c, f);
        if (rv != 0) {
            disconnect(c);
            return rv;
        }
    }
}

/* Record a server error frame @f as the last error (kvc_errmsg, kvc_server_code). */
static void note_server_error(struct kvc *c, const Kvdb__Frame *f)
{
    if (f->error != KVDB__ERROR_CODE__OK) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s", f->error_message);
        c->server_code = f->error;
    }
}

/* Report, once, what a lost connection took with it (@what: enum lost bits). */
static int report_lost(struct kvc *c, unsigned what)
{
    c->lost &= ~what;
    snprintf(c->errmsg, sizeof c->errmsg, "%s", c->lost_msg);
    return KVC_EIO;
}

/* The next frame for kvc_recv(): the oldest kept one, else one from the connection (late
 * replies to abandoned kvc_call()s skipped). */
static int next_frame(struct kvc *c, uint64_t deadline, Kvdb__Frame **out)
{
    if ((*out = kvc_backlog_take(&c->kept, false)) != NULL) {
        return 0;
    }
    if (c->lost != 0) {
        return report_lost(c, c->lost);
    }
    for (;;) {
        int rv = read_frame(c, deadline, out);
        if ((rv == KVC_EIO || rv == KVC_EPROTO) && c->lost != 0) {
            report_lost(c, c->lost);
        }
        if (rv != 0 || !((*out)->id & CALL_ID)) {
            return rv;
        }
        kvdb__frame__free_unpacked(*out, NULL);
    }
}

int kvc_recv(struct kvc *c,
             unsigned timeout_ms,
             uint64_t *id,
             Kvdb__ErrorCode *code,
             const uint8_t **body,
             size_t *len)
{
    if (c->fd >= 0) {
        (void)kvc_flush(c); /* a failure closes the connection and is reported in order below */
    }
    if (c->last != NULL) {
        kvdb__frame__free_unpacked(c->last, NULL);
        c->last = NULL;
    }
    int rv = next_frame(c, now_ms() + timeout_ms, &c->last);
    if (rv == KVC_ETIMEOUT) {
        snprintf(c->errmsg, sizeof c->errmsg, "no reply within %u ms", timeout_ms);
    }
    if (rv != 0) {
        c->last = NULL;
        return rv;
    }
    *id = c->last->id;
    *code = c->last->error;
    *body = c->last->body.data;
    *len = c->last->body.len;
    note_server_error(c, c->last);
    return 0;
}

/* True when the server closed our idle connection (it sent EOF or reset it): a request sent on
 * it would be lost with an unknown outcome, so the caller reconnects first. */
static bool peer_closed(struct kvc *c)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (poll(&pf, 1, 0) <= 0) {
        return false;
    }
    if (pf.revents & (POLLERR | POLLHUP)) {
        return true;
    }
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Send one request and wait until @deadline for its reply frame (*@reply, owned by the caller);
 * *@sent tells whether the request may have left.  Retry decisions are the caller's. */
static int call_once(struct kvc *c,
                     Kvdb__Method m,
                     const ProtobufCMessage *req,
                     uint64_t deadline,
                     Kvdb__Frame **reply,
                     bool *sent)
{
    *sent = false;
    if (c->fd >= 0 && c->rd.len == c->rd.off && peer_closed(c)) {
        disconnect(c);
        c->cur = (c->cur + 1) % c->n_eps; /* that member went away: try the next one */
    }
    int rv = check_backlog(c); /* fail before sending: the request is not executed */
    if (rv != 0) {
        return rv;
    }
    uint64_t want = c->next_id++ | CALL_ID;
    rv = send_frame(c, m, req, want);
    if (rv != 0) {
        return rv;
    }
    *sent = true;
    rv = kvc_flush(c);
    return rv != 0 ? rv : wait_for(c, want, deadline, reply);
}

/* Sleep @ms milliseconds (split into seconds and nanoseconds: nanosleep refuses tv_nsec of a
 * second or more), resuming after signals. */
static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int login(struct kvc *c);

/* What kvc_call does with a reply frame @f that is not OK: 0 to retry (after the backoff),
 * -1 to send again at once (logged in again), or the error to return. */
static int on_refused(struct kvc *c, Kvdb__Method m, const Kvdb__Frame *f, bool *reauthed)
{
    note_server_error(c, f);
    /* A member that does not know our token (we failed over, or it expired): log in there and
     * send again; the request was refused, not executed. */
    if (f->error == KVDB__ERROR_CODE__UNAUTHENTICATED && c->user[0] != '\0' &&
        m != KVDB__METHOD__METHOD_AUTHENTICATE && !*reauthed) {
        *reauthed = true;
        return login(c) == 0 ? -1 : KVC_ESERVER;
    }
    /* UNAVAILABLE means the member did not take the request (no leader, stopping): safe to
     * retry elsewhere.  Anything else is the answer. */
    if (f->error != KVDB__ERROR_CODE__UNAVAILABLE) {
        return KVC_ESERVER;
    }
    disconnect(c);
    return 0;
}

int kvc_call(struct kvc *c,
             Kvdb__Method m,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp)
{
    bool reauthed = false;
    uint64_t deadline = now_ms() + c->opts.request_timeout_ms;
    uint64_t backoff = BACKOFF_FIRST_MS;
    for (;;) {
        if (now_ms() >= deadline) {
            snprintf(c->errmsg, sizeof c->errmsg, "no reply within %u ms",
                     c->opts.request_timeout_ms);
            return KVC_ETIMEOUT;
        }
        Kvdb__Frame *f = NULL;
        bool sent = false;
        int rv = call_once(c, m, req, deadline, &f, &sent);
        if (rv == 0 && f->error == KVDB__ERROR_CODE__OK) {
            *resp = protobuf_c_message_unpack(resp_desc, NULL, f->body.len, f->body.data);
            kvdb__frame__free_unpacked(f, NULL);
            if (*resp == NULL) {
                snprintf(c->errmsg, sizeof c->errmsg, "undecodable %s", resp_desc->name);
                return KVC_EPROTO;
            }
            return 0;
        }
        if (rv == 0) {
            rv = on_refused(c, m, f, &reauthed);
            kvdb__frame__free_unpacked(f, NULL);
            if (rv < 0) {
                continue;
            }
        } else if (rv == KVC_ECONNECT || rv == KVC_EIO) {
            /* Reads are idempotent; a write whose request left is not retried. */
            bool idempotent = m == KVDB__METHOD__METHOD_RANGE || m == KVDB__METHOD__METHOD_STATUS ||
                              m == KVDB__METHOD__METHOD_MEMBER_LIST;
            rv = !sent || idempotent ? 0 : rv;
        }
        if (rv == KVC_ETIMEOUT) {
            snprintf(c->errmsg, sizeof c->errmsg, "no reply within %u ms",
                     c->opts.request_timeout_ms);
        }
        if (rv != 0) {
            return rv;
        }
        c->cur = (c->cur + 1) % c->n_eps; /* fail over */
        uint64_t now = now_ms(), left = deadline > now ? deadline - now : 0;
        sleep_ms(left < backoff ? left : backoff);
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
    }
}

int kvc_put(struct kvc *c,
            const void *key,
            size_t klen,
            const void *val,
            size_t vlen,
            Kvdb__PutResponse **resp)
{
    Kvdb__PutRequest r;
    kvdb__put_request__init(&r);
    r.key.data = (uint8_t *)key;
    r.key.len = klen;
    r.value.data = (uint8_t *)val;
    r.value.len = vlen;
    return kvc_call(c, KVDB__METHOD__METHOD_PUT, &r.base, &kvdb__put_response__descriptor,
                    (ProtobufCMessage **)resp);
}

int kvc_get(struct kvc *c,
            const void *key,
            size_t klen,
            bool serializable,
            Kvdb__RangeResponse **resp)
{
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)key;
    r.key.len = klen;
    r.serializable = serializable;
    return kvc_call(c, KVDB__METHOD__METHOD_RANGE, &r.base, &kvdb__range_response__descriptor,
                    (ProtobufCMessage **)resp);
}

int kvc_delete(struct kvc *c, const void *key, size_t klen, Kvdb__DeleteRangeResponse **resp)
{
    Kvdb__DeleteRangeRequest r;
    kvdb__delete_range_request__init(&r);
    r.key.data = (uint8_t *)key;
    r.key.len = klen;
    return kvc_call(c, KVDB__METHOD__METHOD_DELETE_RANGE, &r.base,
                    &kvdb__delete_range_response__descriptor, (ProtobufCMessage **)resp);
}

size_t kvc_prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    const uint8_t *p = prefix;
    for (size_t i = len; i > 0; i--) {
        if (p[i - 1] < 0xff) {
            memcpy(out, p, i - 1);
            out[i - 1] = (uint8_t)(p[i - 1] + 1);
            return i;
        }
    }
    out[0] = 0;
    return 1;
}

int kvc_watch(struct kvc *c, const Kvdb__WatchCreateRequest *req, uint64_t *stream)
{
    Kvdb__WatchRequest w;
    kvdb__watch_request__init(&w);
    w.request_union_case = KVDB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.create_request = (Kvdb__WatchCreateRequest *)req;
    int rv = kvc_send(c, KVDB__METHOD__METHOD_WATCH, &w.base, stream);
    return rv != 0 ? rv : kvc_flush(c);
}

/* The oldest watch response: a kept one, else one from the connection (keeping the other frames
 * read before it for kvc_recv()).  *@out is owned by the caller. */
static int next_watch_frame(struct kvc *c, uint64_t deadline, Kvdb__Frame **out)
{
    if ((*out = kvc_backlog_take(&c->kept, true)) != NULL) {
        return 0;
    }
    if (c->lost & LOST_WATCHES) {
        return report_lost(c, LOST_WATCHES);
    }
    for (;;) {
        int rv = check_backlog(c);
        if (rv != 0) {
            return rv;
        }
        rv = read_frame(c, deadline, out);
        if ((rv == KVC_EIO || rv == KVC_EPROTO) && (c->lost & LOST_WATCHES)) {
            report_lost(c, LOST_WATCHES);
        }
        if (rv != 0 || (*out)->method == KVDB__METHOD__METHOD_WATCH) {
            return rv;
        }
        rv = keep(c, *out);
        if (rv != 0) {
            disconnect(c);
            return rv;
        }
    }
}

int kvc_watch_next(struct kvc *c, unsigned timeout_ms, uint64_t *stream, Kvdb__WatchResponse **resp)
{
    if (c->fd >= 0) {
        (void)kvc_flush(c); /* a failure closes the connection and is reported in order */
    }
    Kvdb__Frame *f;
    int rv = next_watch_frame(c, now_ms() + timeout_ms, &f);
    if (rv == KVC_ETIMEOUT) {
        snprintf(c->errmsg, sizeof c->errmsg, "no watch response within %u ms", timeout_ms);
    }
    if (rv != 0) {
        return rv;
    }
    if (f->error != KVDB__ERROR_CODE__OK) {
        note_server_error(c, f);
        rv = KVC_ESERVER;
    } else if ((*resp = kvdb__watch_response__unpack(NULL, f->body.len, f->body.data)) == NULL) {
        snprintf(c->errmsg, sizeof c->errmsg, "undecodable WatchResponse");
        rv = KVC_EPROTO;
    } else {
        *stream = f->id;
    }
    kvdb__frame__free_unpacked(f, NULL);
    return rv;
}

static int login(struct kvc *c)
{
    Kvdb__AuthRequest r;
    kvdb__auth_request__init(&r);
    r.name = c->user;
    r.password = c->password;
    c->token[0] = '\0';
    Kvdb__AuthResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_AUTHENTICATE, &r.base,
                      &kvdb__auth_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return rv;
    }
    snprintf(c->token, sizeof c->token, "%s", resp->token);
    kvdb__auth_response__free_unpacked(resp, NULL);
    return 0;
}

int kvc_authenticate(struct kvc *c, const char *user, const char *password)
{
    snprintf(c->user, sizeof c->user, "%s", user);
    snprintf(c->password, sizeof c->password, "%s", password);
    int rv = login(c);
    if (rv != 0) {
        c->user[0] = '\0';
        c->password[0] = '\0';
    }
    return rv;
}

int kvc_snapshot(struct kvc *c, FILE *out, uint64_t *bytes)
{
    Kvdb__SnapshotRequest r;
    kvdb__snapshot_request__init(&r);
    uint64_t want = c->next_id++ | CALL_ID;
    int rv = send_frame(c, KVDB__METHOD__METHOD_SNAPSHOT, &r.base, want);
    if (rv == 0) {
        rv = kvc_flush(c);
    }
    uint64_t total = 0;
    while (rv == 0) {
        Kvdb__Frame *f;
        rv = wait_for(c, want, now_ms() + c->opts.request_timeout_ms, &f);
        if (rv != 0) {
            break;
        }
        Kvdb__SnapshotResponse *s = NULL;
        if (f->error != KVDB__ERROR_CODE__OK) {
            note_server_error(c, f);
            rv = KVC_ESERVER;
        } else if ((s = kvdb__snapshot_response__unpack(NULL, f->body.len, f->body.data)) == NULL) {
            snprintf(c->errmsg, sizeof c->errmsg, "undecodable SnapshotResponse");
            rv = KVC_EPROTO;
        }
        kvdb__frame__free_unpacked(f, NULL);
        if (rv != 0) {
            break;
        }
        if (s->blob.len > 0 && fwrite(s->blob.data, 1, s->blob.len, out) != s->blob.len) {
            snprintf(c->errmsg, sizeof c->errmsg, "write: %s", strerror(errno));
            rv = KVC_EIO;
        }
        total += s->blob.len;
        bool last = s->remaining_bytes == 0;
        kvdb__snapshot_response__free_unpacked(s, NULL);
        if (last) {
            break;
        }
    }
    disconnect(c); /* the member closes a snapshot stream's connection */
    if (bytes != NULL) {
        *bytes = total;
    }
    return rv;
}
