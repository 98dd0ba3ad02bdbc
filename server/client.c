/* Accepted connections (clients and inbound peers): nonblocking reads split into frames, replies
 * buffered per connection and written once per loop iteration (srv_conn_flush_all). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv *s = w->data;
    enum srv_conn_kind kind = w == &s->client_lio ? SRV_CONN_CLIENT : SRV_CONN_PEER_IN;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                srv_log(SRV_LOG_WARN, "net", "accept: %s", strerror(errno));
            }
            return;
        }
        if (srv_conn_accept(s, fd, kind) != 0) {
            close(fd);
        }
    }
}

static int start_listener(struct srv *s,
                          const struct srv_url *u,
                          int *fd,
                          uint16_t *port,
                          ev_io *io)
{
    int rv = listen_on(u, fd, port, s->errmsg);
    if (rv != 0) {
        return rv;
    }
    ev_io_init(io, on_accept, *fd, EV_READ);
    io->data = s;
    ev_io_start(s->loop, io);
    return 0;
}

int srv_client_listen(struct srv *s)
{
    int rv =
        start_listener(s, &s->cfg.listen_client, &s->client_lfd, &s->client_port, &s->client_lio);
    if (rv == 0) {
        rv = start_listener(s, &s->cfg.listen_peer, &s->peer_lfd, &s->peer_port, &s->peer_lio);
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
        if (c->kind == SRV_CONN_CLIENT && !c->sniffed && c->rd.len - c->rd.off >= 4) {
            /* "GET " as a frame length would be 542 MB, over any limit: it is HTTP. */
            c->sniffed = true;
            c->http = memcmp(c->rd.buf + c->rd.off, "GET ", 4) == 0;
        }
        if (c->http) {
            size_t have = c->rd.len - c->rd.off;
            const char *req = (const char *)c->rd.buf + c->rd.off;
            if (memmem(req, have, "\r\n\r\n", 4) != NULL || have > 8192) {
                srv_http_handle(c, req, have);
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
    ev_io_start(s->loop, &c->rio);
    s->conns[slot] = c;
    return 0;
}

static void conn_unlink(struct srv_conn *c)
{
    struct srv *s = c->s;
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
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
    if (s->client_lfd > 0) {
        if (s->loop != NULL) {
            ev_io_stop(s->loop, &s->client_lio);
        }
        close(s->client_lfd);
        s->client_lfd = -1;
    }
    if (s->peer_lfd > 0) {
        if (s->loop != NULL) {
            ev_io_stop(s->loop, &s->peer_lio);
        }
        close(s->peer_lfd);
        s->peer_lfd = -1;
    }
}
