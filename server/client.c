/* Accepted connections (clients and inbound peers): nonblocking reads split into frames, replies
 * buffered per connection and written once per loop iteration (srv_conn_flush_all). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/pb.h"
#include "server/srv_int.h"

/* Hard cap on one frame from a client; requests over --max-request-bytes but under this get a
 * clean RESOURCE_EXHAUSTED reply, larger ones close the connection. */
#define CLIENT_HARD_MAX (64u << 20)
/* Peers send batches of entries up to raft's message limit; allow generous headroom. */
#define PEER_HARD_MAX (256u << 20)
/* A client that does not read its replies is cut off beyond this backlog. */
#define CONN_MAX_BACKLOG (256u << 20)

static int listen_on(const struct srv_url *u, int *fd_out, uint16_t *port_out, char *errmsg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errmsg, SRV_ERRMSG, "socket: %s", strerror(errno));
        return SRV_EIO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(u->port)};
    if (inet_pton(AF_INET, u->host, &sa.sin_addr) != 1) {
        snprintf(errmsg, SRV_ERRMSG, "listen %s: not an IPv4 address", u->text);
        close(fd);
        return SRV_EINVAL;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
        snprintf(errmsg, SRV_ERRMSG, "listen %s: %s", u->text, strerror(errno));
        close(fd);
        return SRV_EIO;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port_out = ntohs(sa.sin_port);
    *fd_out = fd;
    return 0;
}

/* Accepted connections leave this many fds below RLIMIT_NOFILE, besides the store's table cache,
 * for the WAL, compactions, snapshot files and transfers, and peer connections. */
#define FD_KEEP_EXTRA 64
/* A listener whose accept ran out of fds or memory rests this long before trying again. */
#define ACCEPT_PAUSE_S 0.1
/* Refused connections are logged at most once per this interval, with their count. */
#define ACCEPT_LOG_MS 10000
/* An HTTP request's headers must arrive within this time of its first bytes (Go's
 * ReadHeaderTimeout), and its reply must be taken within the second: a client cannot hold a
 * connection and its fd by sending or reading slowly. */
#define HTTP_HEADER_TIMEOUT_S 5.0
#define HTTP_REPLY_TIMEOUT_S 30.0

/* The first fd number that accept on a @kind listener must not keep.  fds are numbered
 * lowest-free, so an accepted fd at or past it means every fd below it is in use (by anything in
 * the process): clients then get a prompt close instead of taking the fds the store and the WAL
 * need to go on (LevelDB fails a compaction for good when it cannot open a file).  Peers may
 * use half of the extra headroom, so that a flood of clients cannot cut the cluster apart. */
static int accept_fd_max(enum srv_conn_kind kind)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > INT_MAX) {
        return INT_MAX;
    }
    struct lsm_options lo;
    lsm_options_default(&lo);
    rlim_t keep = (rlim_t)lo.max_open_files + FD_KEEP_EXTRA;
    if (keep > rl.rlim_cur / 2) {
        keep = rl.rlim_cur / 2; /* a small limit: still serve some clients */
    }
    if (kind == SRV_CONN_PEER_IN) {
        keep = keep > FD_KEEP_EXTRA / 2 ? keep - FD_KEEP_EXTRA / 2 : 0;
    }
    return (int)(rl.rlim_cur - keep);
}

/* Count a refused connection and log it once per interval. */
static void note_refused(struct srv_listener *l, const char *why)
{
    uint64_t sup;
    l->refused++;
    if (srv_log_allow(&l->log, srv_now_ms(), ACCEPT_LOG_MS, &sup)) {
        srv_log(SRV_LOG_WARN, "net", "%s port: %s (%llu accepts refused since the last line)",
                l->name, why, (unsigned long long)l->refused);
        l->refused = 0;
    }
}

/* Errors accept(2) reports for one failed connection (Linux passes pending network errors on):
 * the next one may succeed at once. */
static bool accept_error_is_per_connection(int err)
{
    return err == ECONNABORTED || err == EPROTO || err == EPERM || err == ENETDOWN ||
           err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
           err == EOPNOTSUPP || err == ENETUNREACH;
}

static void on_accept_pause_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct srv_listener *l = t->data;
    ev_io_start(loop, &l->io);
}

/*
 * Out of fds (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), or any error that is not about one
 * connection: stop watching the listener for ACCEPT_PAUSE_S.  The listening socket stays
 * readable while connections wait, so retrying at once spins the loop (the bug: millions of log
 * lines a second and clients starved).  This is Go's net/http answer (which etcd runs on): rest
 * and retry, leaving the waiting connections in the backlog to be taken when fds come free.
 * libuv's alternative, closing a reserve fd to accept and close them, races with the apply and
 * store threads opening files (one of them may take the freed number); and accept_fd_max()
 * already closes excess connections promptly before the process runs out.
 */
static void accept_pause(struct srv_listener *l, int err)
{
    char why[128];
    snprintf(why, sizeof why, "accept: %s: not accepting for %.0f ms", strerror(err),
             ACCEPT_PAUSE_S * 1000);
    ev_io_stop(l->s->loop, &l->io);
    ev_timer_set(&l->pause, ACCEPT_PAUSE_S, 0.);
    ev_timer_start(l->s->loop, &l->pause);
    note_refused(l, why);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_listener *l = w->data;
    struct srv *s = l->s;
    for (int i = 0; i < 64; i++) {
        int fd;
        if (SRV_FAILPOINT(s->cfg.member_id, "accept") == SRV_FP_ERROR) {
            fd = -1;
            errno = EMFILE;
        } else {
            fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno != EINTR && !accept_error_is_per_connection(errno)) {
                accept_pause(l, errno);
                return;
            }
            continue;
        }
        if (fd >= l->fd_max) {
            close(fd);
            char why[160];
            snprintf(why, sizeof why,
                     "closing new connections: %d fds in use, the rest of RLIMIT_NOFILE is kept "
                     "for the store and the WAL",
                     l->fd_max);
            note_refused(l, why);
            continue;
        }
        if (srv_conn_accept(s, fd, l->kind) != 0) {
            close(fd);
        }
    }
}

static int start_listener(struct srv *s,
                          const struct srv_url *u,
                          enum srv_conn_kind kind,
                          struct srv_listener *l)
{
    int rv = listen_on(u, &l->fd, &l->port, s->errmsg);
    if (rv != 0) {
        return rv;
    }
    l->s = s;
    l->kind = kind;
    l->name = kind == SRV_CONN_CLIENT ? "client" : "peer";
    l->fd_max = accept_fd_max(kind);
    ev_io_init(&l->io, on_accept, l->fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->pause, on_accept_pause_end, ACCEPT_PAUSE_S, 0.);
    l->pause.data = l;
    ev_io_start(s->loop, &l->io);
    return 0;
}

static void stop_listener(struct srv *s, struct srv_listener *l)
{
    if (l->fd < 0) {
        return;
    }
    if (s->loop != NULL) {
        ev_io_stop(s->loop, &l->io);
        ev_timer_stop(s->loop, &l->pause);
    }
    close(l->fd);
    l->fd = -1;
}

int srv_client_listen(struct srv *s)
{
    int rv = start_listener(s, &s->cfg.listen_client, SRV_CONN_CLIENT, &s->client_l);
    if (rv == 0) {
        rv = start_listener(s, &s->cfg.listen_peer, SRV_CONN_PEER_IN, &s->peer_l);
    }
    return rv;
}

struct srv_conn *srv_conn_get(struct srv *s, uint32_t slot, uint32_t gen)
{
    if (slot >= s->n_conns || s->conns[slot] == NULL || s->gens[slot] != gen) {
        return NULL;
    }
    return s->conns[slot];
}

static void mark_dirty(struct srv_conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = c->s->dirty;
        c->s->dirty = c;
    }
}

static void conn_flush(struct srv_conn *c)
{
    const unsigned char *buf;
    size_t n;
    while ((n = pb_frame_writer_pending(&c->wr, &buf)) > 0) {
        ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (w > 0) {
            pb_frame_writer_consume(&c->wr, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->writing) {
                ev_io_start(c->s->loop, &c->wio);
                c->writing = true;
            }
            return;
        }
        srv_conn_close(c);
        return;
    }
    if (c->writing) {
        ev_io_stop(c->s->loop, &c->wio);
        c->writing = false;
    }
    if (c->closing) {
        srv_conn_close(c);
    }
}

void srv_conn_close_after_reply(struct srv_conn *c)
{
    /* Stop reading: nothing more this client sends is trusted. */
    c->closing = true;
    ev_io_stop(c->s->loop, &c->rio);
    mark_dirty(c);
}

void srv_conn_flush_all(struct srv *s)
{
    while (s->dirty != NULL) {
        struct srv_conn *c = s->dirty;
        s->dirty = c->next_dirty;
        c->dirty = false;
        if (!c->writing) {
            conn_flush(c); /* may close c */
        }
    }
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(w->data);
}

void srv_conn_reply(struct srv_conn *c,
                    uint64_t frame_id,
                    uint32_t method,
                    Kvdb__ErrorCode code,
                    const char *errmsg,
                    const uint8_t *body,
                    size_t len)
{
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = frame_id;
    f.method = (Kvdb__Method)method;
    f.error = code;
    f.error_message = (char *)(errmsg != NULL ? errmsg : "");
    f.body.data = (uint8_t *)body;
    f.body.len = len;
    if (c->wr.len - c->wr.off > CONN_MAX_BACKLOG || pb_frame_writer_append(&c->wr, &f.base) != 0) {
        srv_log(SRV_LOG_WARN, "client", "closing a client that does not read its replies");
        srv_conn_close(c);
        return;
    }
    mark_dirty(c);
}

void srv_conn_reply_msg(struct srv_conn *c,
                        uint64_t frame_id,
                        uint32_t method,
                        const ProtobufCMessage *m)
{
    uint8_t small[512]; /* most replies: no allocation */
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = len <= sizeof small ? small : malloc(len);
    if (buf == NULL) {
        srv_conn_reply(c, frame_id, method, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory",
                       NULL, 0);
        return;
    }
    protobuf_c_message_pack(m, buf);
    srv_conn_reply(c, frame_id, method, KVDB__ERROR_CODE__OK, NULL, buf, len);
    if (buf != small) {
        free(buf);
    }
}

/* Decode one client frame and hand it to the KV service; undecodable frames get an error
 * reply with id 0, since their id cannot be trusted. */
static void client_frame(struct srv_conn *c, const unsigned char *p, size_t len)
{
    Kvdb__Frame *f = kvdb__frame__unpack(NULL, len, p);
    if (f == NULL) {
        srv_conn_reply(c, 0, KVDB__METHOD__METHOD_UNKNOWN, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "malformed request frame: closing the connection", NULL, 0);
        srv_conn_close_after_reply(c);
        return;
    }
    if (pb_has_unknown_fields(&f->base)) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "request frame carries unknown fields: closing the connection", NULL, 0);
        srv_conn_close_after_reply(c);
    } else {
        srv_kv_dispatch(c, f);
    }
    kvdb__frame__free_unpacked(f, NULL);
}

static void on_http_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_conn *c = t->data;
    srv_log(SRV_LOG_DEBUG, "http", "closing an HTTP connection: %s in time",
            c->closing ? "reply not read" : "request headers not complete");
    srv_conn_close(c);
}

static void http_deadline_set(struct srv_conn *c, double after_s)
{
    ev_timer_stop(c->s->loop, &c->http_deadline);
    ev_timer_set(&c->http_deadline, after_s, 0.);
    ev_timer_start(c->s->loop, &c->http_deadline);
}

/*
 * Tell HTTP from the native protocol by the first 4 bytes: "GET " as a frame length would be
 * 542 MB, over any limit.  The header deadline starts with the first byte that may begin
 * "GET ", so a client that stops after 1 to 3 of them is timed out too; a native frame whose
 * length bytes start that way loses the deadline with its 4th byte.  Native connections never
 * get one: watch streams are idle for hours legitimately.
 */
static void sniff(struct srv_conn *c)
{
    size_t have = c->rd.len - c->rd.off;
    bool maybe_http = memcmp(c->rd.buf + c->rd.off, "GET ", have < 4 ? have : 4) == 0;
    if (have >= 4) {
        c->sniffed = true;
        c->http = maybe_http;
    }
    if (!maybe_http) {
        ev_timer_stop(c->s->loop, &c->http_deadline);
    } else if (!ev_is_active(&c->http_deadline)) {
        http_deadline_set(c, HTTP_HEADER_TIMEOUT_S);
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_conn *c = w->data;
    uint32_t slot = c->slot, gen = c->gen;
    struct srv *s = c->s;
    for (int round = 0; round < 16; round++) {
        unsigned char *buf;
        size_t room;
        if (pb_frame_reader_space(&c->rd, 64 * 1024, &buf, &room) != 0) {
            srv_conn_close(c);
            return;
        }
        ssize_t n = recv(c->fd, buf, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            srv_conn_close(c);
            return;
        }
        if (n < 0) {
            break;
        }
        pb_frame_reader_commit(&c->rd, (size_t)n);
        if (c->kind == SRV_CONN_CLIENT && !c->sniffed) {
            sniff(c);
        }
        if (c->http) {
            size_t have = c->rd.len - c->rd.off;
            const char *req = (const char *)c->rd.buf + c->rd.off;
            if (memmem(req, have, "\r\n\r\n", 4) != NULL || have > 8192) {
                http_deadline_set(c, HTTP_REPLY_TIMEOUT_S);
                srv_http_handle(c, req, have); /* may close c */
                return;
            }
            continue;
        }
        const unsigned char *frame;
        size_t flen;
        int rv;
        while ((rv = pb_frame_reader_next(&c->rd, &frame, &flen)) == 0) {
            if (c->kind == SRV_CONN_CLIENT) {
                client_frame(c, frame, flen);
            } else {
                srv_peer_on_frame(c, frame, flen);
            }
            if (srv_conn_get(s, slot, gen) == NULL || c->closing) {
                return; /* closed, or closing, while handling the frame */
            }
        }
        if (rv == PB_ETOOBIG) {
            srv_log(SRV_LOG_WARN, "net", "closing connection: frame over the hard limit");
            srv_conn_close(c);
            return;
        }
        if ((size_t)n < room) {
            break;
        }
    }
}

int srv_conn_accept(struct srv *s, int fd, enum srv_conn_kind kind)
{
    uint32_t slot = 0;
    while (slot < s->n_conns && s->conns[slot] != NULL) {
        slot++;
    }
    if (slot == s->n_conns) {
        uint32_t n = s->n_conns == 0 ? 64 : s->n_conns * 2;
        struct srv_conn **c = realloc(s->conns, n * sizeof *c);
        if (c == NULL) {
            return SRV_ENOMEM;
        }
        s->conns = c;
        uint32_t *g = realloc(s->gens, n * sizeof *g);
        if (g == NULL) {
            return SRV_ENOMEM;
        }
        s->gens = g;
        for (uint32_t i = s->n_conns; i < n; i++) {
            s->conns[i] = NULL;
            s->gens[i] = 0;
        }
        s->n_conns = n;
    }
    struct srv_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return SRV_ENOMEM;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->s = s;
    c->kind = kind;
    c->fd = fd;
    c->slot = slot;
    c->gen = ++s->gens[slot];
    pb_frame_reader_init(&c->rd, kind == SRV_CONN_CLIENT ? CLIENT_HARD_MAX : PEER_HARD_MAX);
    pb_frame_writer_init(&c->wr);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    c->rio.data = c;
    c->wio.data = c;
    ev_timer_init(&c->http_deadline, on_http_deadline, HTTP_HEADER_TIMEOUT_S, 0.);
    c->http_deadline.data = c;
    ev_io_start(s->loop, &c->rio);
    s->conns[slot] = c;
    return 0;
}

static void conn_unlink(struct srv_conn *c)
{
    struct srv *s = c->s;
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->http_deadline);
    s->conns[c->slot] = NULL;
    if (c->dirty) {
        struct srv_conn **pp = &s->dirty;
        while (*pp != c) {
            pp = &(*pp)->next_dirty;
        }
        *pp = c->next_dirty;
    }
}

int srv_conn_detach(struct srv_conn *c, struct pb_frame_reader *rd)
{
    conn_unlink(c);
    int fd = c->fd;
    *rd = c->rd; /* unread bytes go with the socket */
    pb_frame_writer_fini(&c->wr);
    /* The new owner uses blocking I/O. */
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    free(c);
    return fd;
}

void srv_conn_close(struct srv_conn *c)
{
    conn_unlink(c);
    close(c->fd);
    pb_frame_reader_fini(&c->rd);
    pb_frame_writer_fini(&c->wr);
    free(c);
}

void srv_conns_close_all(struct srv *s)
{
    for (uint32_t i = 0; i < s->n_conns; i++) {
        if (s->conns[i] != NULL) {
            srv_conn_close(s->conns[i]);
        }
    }
    free(s->conns);
    free(s->gens);
    s->conns = NULL;
    s->gens = NULL;
    s->n_conns = 0;
    stop_listener(s, &s->client_l);
    stop_listener(s, &s->peer_l);
}
