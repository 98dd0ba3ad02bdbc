/* Peer transport: one outbound TCP connection per member for raft messages, length-prefixed
 * raftpb.Batch frames, one frame (and one write) per peer per Ready, reconnect with backoff.
 * Inbound peer connections are accepted by the shared connection code (client.c) and their
 * frames land in srv_peer_on_frame(). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "server/srv_int.h"

/* Beyond this many unsent bytes to one peer, messages are dropped (raft retransmits) rather
 * than buffered without bound behind a slow or dead link. */
#define PEER_MAX_BACKLOG (64u << 20)
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
/* What a member sends back on our connection is a short "you were removed" batch. */
#define PEER_ANSWER_MAX_FRAME 4096

static void peer_connect(struct srv_peer *p);

static void report_unreachable(struct srv *s, raft_id id)
{
    struct srv_input *in = calloc(1, sizeof *in);
    if (in == NULL) {
        return; /* raft notices through missing acknowledgements anyway */
    }
    in->type = SRV_IN_UNREACHABLE;
    in->peer = id;
    srv_node_input(s, in);
}

static void peer_disconnect(struct srv_peer *p, const char *why)
{
    struct srv *s = p->s;
    if (p->fd >= 0) {
        ev_io_stop(s->loop, &p->wio);
        ev_io_stop(s->loop, &p->rio);
        close(p->fd);
        uint64_t sup = 0;
        if (srv_log_allow(&p->log, srv_now_ms(), 10000, &sup)) {
            srv_log(SRV_LOG_WARN, "peer", "lost connection to %llx (%s): %s (%llu more)",
                    (unsigned long long)p->id, p->url.text, why, (unsigned long long)sup);
        }
    }
    p->fd = -1;
    p->connected = false;
    /* Whatever was queued is stale by the time we reconnect: raft resends what matters. */
    pb_frame_writer_consume(&p->wr, p->wr.len - p->wr.off);
    pb_frame_reader_fini(&p->rd);
    pb_frame_reader_init(&p->rd, PEER_ANSWER_MAX_FRAME);
    p->backoff_ms = p->backoff_ms == 0 ? BACKOFF_MIN_MS : p->backoff_ms * 2;
    if (p->backoff_ms > BACKOFF_MAX_MS) {
        p->backoff_ms = BACKOFF_MAX_MS;
    }
    ev_timer_set(&p->retry, (double)p->backoff_ms / 1000.0, 0.);
    ev_timer_start(s->loop, &p->retry);
    report_unreachable(s, p->id);
}

/* Write what is queued; on a full socket buffer, wait for writability. */
static void peer_flush(struct srv_peer *p)
{
    const unsigned char *buf;
    size_t n;
    while ((n = pb_frame_writer_pending(&p->wr, &buf)) > 0) {
        ssize_t w = send(p->fd, buf, n, MSG_NOSIGNAL);
        if (w > 0) {
            pb_frame_writer_consume(&p->wr, (size_t)w);
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(p->s->loop, &p->wio);
            return;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        peer_disconnect(p, w == 0 ? "closed" : strerror(errno));
        return;
    }
    ev_io_stop(p->s->loop, &p->wio);
}

static void on_peer_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_peer *p = w->data;
    if (!p->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            peer_disconnect(p, strerror(err));
            return;
        }
        p->connected = true;
        p->backoff_ms = 0;
        srv_log(SRV_LOG_INFO, "peer", "connected to %llx at %s", (unsigned long long)p->id,
                p->url.text);
    }
    peer_flush(p);
}

/* The member at the other end answers only to say that this cluster removed us (tell_removed);
 * otherwise reading notices a closed connection before the next write does. */
static void on_peer_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_peer *p = w->data;
    struct srv *s = p->s;
    for (;;) {
        unsigned char *buf;
        size_t room;
        if (pb_frame_reader_space(&p->rd, 512, &buf, &room) != 0) {
            peer_disconnect(p, "out of memory");
            return;
        }
        ssize_t r = recv(p->fd, buf, room, 0);
        if (r > 0) {
            pb_frame_reader_commit(&p->rd, (size_t)r);
            break;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        peer_disconnect(p, r == 0 ? "closed by the peer" : strerror(errno));
        return;
    }
    const unsigned char *frame;
    size_t len;
    int rv;
    while ((rv = pb_frame_reader_next(&p->rd, &frame, &len)) == 0) {
        struct pb_batch b;
        char err[160];
        if (pb_batch_decode(frame, len, &b, err, sizeof err) != 0) {
            peer_disconnect(p, err);
            return;
        }
        bool removed =
            b.cluster_id == s->cfg.cluster_id && b.from == p->id && b.removed == s->cfg.member_id;
        pb_batch_free(&b);
        if (removed) {
            srv_fail(s, SRV_ECLUSTER,
                     "this member (%llx) was removed from the cluster (member %llx says so)",
                     (unsigned long long)s->cfg.member_id, (unsigned long long)p->id);
            return;
        }
    }
    if (rv != PB_EAGAIN) {
        peer_disconnect(p, "oversized frame from the peer");
    }
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    peer_connect(t->data);
}

static void peer_connect(struct srv_peer *p)
{
    struct srv *s = p->s;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        p->fd = -1;
        peer_disconnect(p, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p->url.port)};
    inet_pton(AF_INET, p->url.host, &sa.sin_addr);
    p->fd = fd;
    p->connected = false;
    ev_io_init(&p->wio, on_peer_writable, fd, EV_WRITE);
    p->wio.data = p;
    ev_io_init(&p->rio, on_peer_readable, fd, EV_READ);
    p->rio.data = p;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        peer_disconnect(p, strerror(errno));
        return;
    }
    ev_io_start(s->loop, &p->wio);
    ev_io_start(s->loop, &p->rio);
}

void srv_peer_start(struct srv *s)
{
    s->peers_started = true;
    for (size_t i = 0; i < s->n_peers; i++) {
        peer_connect(s->peers[i]);
    }
}

struct srv_peer *srv_peer_find(struct srv *s, raft_id id)
{
    for (size_t i = 0; i < s->n_peers; i++) {
        if (s->peers[i]->id == id) {
            return s->peers[i];
        }
    }
    return NULL;
}

int srv_peer_add(struct srv *s, raft_id id, const struct srv_url *url)
{
    if (id == s->cfg.member_id) {
        return 0;
    }
    struct srv_peer *p = srv_peer_find(s, id);
    if (p != NULL) {
        if (strcmp(p->url.text, url->text) != 0) {
            /* The member moved (member update): reconnect to the new address. */
            p->url = *url;
            if (p->fd >= 0) {
                peer_disconnect(p, "peer URL changed");
            }
        }
        return 0;
    }
    if (s->n_peers == SRV_MAX_MEMBERS || (p = calloc(1, sizeof *p)) == NULL) {
        return SRV_ENOMEM;
    }
    p->s = s;
    p->id = id;
    p->url = *url;
    p->fd = -1;
    pb_frame_writer_init(&p->wr);
    pb_frame_reader_init(&p->rd, PEER_ANSWER_MAX_FRAME);
    ev_timer_init(&p->retry, on_retry, 0., 0.);
    p->retry.data = p;
    s->peers[s->n_peers++] = p;
    if (s->peers_started) {
        peer_connect(p);
    }
    return 0;
}

static void peer_free(struct srv *s, struct srv_peer *p)
{
    if (s->loop != NULL) {
        ev_timer_stop(s->loop, &p->retry);
        if (p->fd >= 0) {
            ev_io_stop(s->loop, &p->wio);
            ev_io_stop(s->loop, &p->rio);
        }
    }
    if (p->fd >= 0) {
        close(p->fd);
    }
    pb_frame_writer_fini(&p->wr);
    pb_frame_reader_fini(&p->rd);
    free(p);
}

static bool peer_writable(struct srv *s, struct srv_peer *p, size_t n);

void srv_peer_tell_removed(struct srv *s, raft_id id)
{
    struct srv_peer *p = srv_peer_find(s, id);
    if (p == NULL || !peer_writable(s, p, 1) ||
        pb_batch_append_removed(&p->wr, s->cfg.cluster_id, s->cfg.member_id, id) != 0) {
        return; /* it learns it when it next talks to a member (tell_removed) */
    }
    srv_log(SRV_LOG_INFO, "peer", "member %llx was removed from the cluster: telling it so",
            (unsigned long long)id);
    peer_flush(p);
}

void srv_peer_remove(struct srv *s, raft_id id)
{
    for (size_t i = 0; i < s->n_peers; i++) {
        if (s->peers[i]->id == id) {
            peer_free(s, s->peers[i]);
            s->peers[i] = s->peers[--s->n_peers];
            return;
        }
    }
}

/* Queue @n messages for @p as one frame and try to write it now. */
/* Whether @n messages (or one packed frame) for @p may be queued now; if not they count as lost
 * on the wire (raft retransmits) and a full or broken link is reported unreachable. */
static bool peer_writable(struct srv *s, struct srv_peer *p, size_t n)
{
    enum srv_fp_action fp = SRV_FAILPOINT(s->cfg.member_id, "peer_send");
    bool cut = fp == SRV_FP_DROP || fp == SRV_FP_ERROR || srv_peer_blocked(s, p->id);
    if (!cut && p->connected && p->wr.len - p->wr.off <= PEER_MAX_BACKLOG) {
        return true;
    }
    p->dropped += n;
    atomic_fetch_add(&s->metrics.peer_batches_dropped, n);
    if (!cut && p->connected) {
        report_unreachable(s, p->id);
    }
    return false;
}

static void peer_kick(struct srv_peer *p)
{
    if (!ev_is_active(&p->wio)) {
        peer_flush(p);
    }
}

/* End of the run of messages to the same peer that starts at @i (Ready messages are usually
 * grouped by destination already; each run becomes one frame). */
static size_t run_end(const struct raft_msg *msgs, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && msgs[j].to == msgs[i].to) {
        j++;
    }
    return j;
}

static void peer_queue(struct srv *s, struct srv_peer *p, const struct raft_msg *msgs, size_t n)
{
    if (!peer_writable(s, p, n)) {
        return;
    }
    if (pb_batch_append(&p->wr, s->cfg.cluster_id, s->cfg.member_id, msgs, n) != 0) {
        p->dropped += n;
        return;
    }
    peer_kick(p);
}

void srv_peer_send(struct srv *s, const struct raft_msg *msgs, size_t n)
{
    for (size_t i = 0, j; i < n; i = j) {
        j = run_end(msgs, n, i);
        struct srv_peer *p = srv_peer_find(s, msgs[i].to);
        if (p != NULL) {
            peer_queue(s, p, msgs + i, j - i);
        }
    }
}

/* Messages that must wait for the fsync are packed at once (their entries borrow from raft's
 * log and the WAL's memtable, which this Ready's own append may overwrite) and written when
 * the Ready is durable. */
void srv_peer_hold(struct srv *s, const struct raft_msg *msgs, size_t n)
{
    for (size_t i = 0, j; i < n; i = j) {
        j = run_end(msgs, n, i);
        if (s->n_held == s->cap_held) {
            size_t cap = s->cap_held == 0 ? 8 : s->cap_held * 2;
            struct srv_held *h = realloc(s->held, cap * sizeof *h);
            if (h == NULL) {
                return; /* lost like a dropped packet: raft resends */
            }
            for (size_t k = s->cap_held; k < cap; k++) {
                pb_frame_writer_init(&h[k].wr);
            }
            s->held = h;
            s->cap_held = cap;
        }
        struct srv_held *h = &s->held[s->n_held];
        h->to = msgs[i].to;
        if (pb_batch_append(&h->wr, s->cfg.cluster_id, s->cfg.member_id, msgs + i, j - i) == 0) {
            s->n_held++;
        }
    }
}

void srv_peer_release_held(struct srv *s)
{
    for (size_t i = 0; i < s->n_held; i++) {
        struct srv_held *h = &s->held[i];
        struct srv_peer *p = srv_peer_find(s, h->to);
        const unsigned char *buf;
        size_t len = pb_frame_writer_pending(&h->wr, &buf);
        if (p != NULL && peer_writable(s, p, 1)) {
            if (pb_frame_writer_append_bytes(&p->wr, buf, len) == 0) {
                peer_kick(p);
            } else {
                p->dropped++;
            }
        }
        pb_frame_writer_consume(&h->wr, len);
    }
    s->n_held = 0;
}

void srv_peer_forward(struct srv *s, const void *data, size_t len)
{
    struct srv_peer *p = srv_peer_find(s, s->leader);
    if (p == NULL) {
        return;
    }
    struct raft_entry e = {.type = RAFT_ENTRY_NORMAL};
    e.data.base = (void *)data;
    e.data.len = len;
    struct raft_msg m = {.type = RAFT_MSG_PROPOSE, .to = p->id, .from = s->cfg.member_id};
    m.entries = &e;
    m.n_entries = 1;
    peer_queue(s, p, &m, 1);
}

/* A member this cluster removed is talking to us (it was down when it was removed): answer
 * that it was removed, then close; it stops when it reads this (on_peer_readable). */
static void tell_removed(struct srv_conn *c, raft_id removed)
{
    struct srv *s = c->s;
    if (srv_peer_blocked(s, removed)) {
        return; /* partitioned: lost on the wire */
    }
    uint64_t sup = 0;
    if (srv_log_allow(&s->cluster_log, srv_now_ms(), 10000, &sup)) {
        srv_log(SRV_LOG_WARN, "peer",
                "member %llx was removed from the cluster: telling it so (%llu similar suppressed)",
                (unsigned long long)removed, (unsigned long long)sup);
    }
    if (pb_batch_append_removed(&c->wr, s->cfg.cluster_id, s->cfg.member_id, removed) != 0) {
        srv_conn_close(c);
        return;
    }
    srv_conn_close_after_reply(c);
}

void srv_peer_on_frame(struct srv_conn *c, const unsigned char *p, size_t len)
{
    struct srv *s = c->s;
    struct srv_input *in = calloc(1, sizeof *in);
    if (in == NULL) {
        return; /* dropped like a lost packet */
    }
    char err[160];
    int rv = pb_batch_decode(p, len, &in->batch, err, sizeof err);
    if (rv == 0 && s->cluster_id_unknown && srv_peer_find(s, in->batch.from) != NULL) {
        srv_adopt_cluster_id(s, in->batch.cluster_id);
    }
    if (rv == 0 && in->batch.cluster_id != s->cfg.cluster_id) {
        snprintf(err, sizeof err, "member %llx belongs to cluster %llx, not ours (%llx)",
                 (unsigned long long)in->batch.from, (unsigned long long)in->batch.cluster_id,
                 (unsigned long long)s->cfg.cluster_id);
        rv = SRV_ECLUSTER;
    } else if (rv == 0 && in->batch.removed == s->cfg.member_id &&
               srv_peer_find(s, in->batch.from) != NULL) {
        /* The leader that applied our removal says so (srv_peer_tell_removed): a removed
         * learner gets nothing else, so it would not notice otherwise. */
        srv_fail(s, SRV_ECLUSTER,
                 "this member (%llx) was removed from the cluster (member %llx says so)",
                 (unsigned long long)s->cfg.member_id, (unsigned long long)in->batch.from);
        pb_batch_free(&in->batch);
        free(in);
        return;
    } else if (rv == 0 && srv_peer_find(s, in->batch.from) == NULL) {
        if (srv_members_is_removed(s, in->batch.from)) {
            tell_removed(c, in->batch.from);
            pb_batch_free(&in->batch);
            free(in);
            return;
        }
        snprintf(err, sizeof err, "batch from unknown member %llx",
                 (unsigned long long)in->batch.from);
        rv = SRV_ECLUSTER;
    }
    if (rv != 0) {
        /* Rate-limited: a misconfigured peer retries forever. */
        uint64_t sup = 0;
        if (srv_log_allow(&s->cluster_log, srv_now_ms(), 10000, &sup)) {
            srv_log(SRV_LOG_WARN, "peer", "refused peer connection: %s (%llu similar suppressed)",
                    err, (unsigned long long)sup);
        }
        pb_batch_free(&in->batch);
        free(in);
        srv_conn_close(c);
        return;
    }
    if (srv_peer_blocked(s, in->batch.from)) {
        /* Partitioned (embedding, tests): the batch is lost on the wire. */
        pb_batch_free(&in->batch);
        free(in);
        return;
    }
    if (in->batch.pb->snap_manifest.len > 0) {
        /* This connection carries a snapshot stream: a receiver thread takes it over. */
        if (!srv_snap_accept(c, &in->batch)) {
            srv_conn_close(c);
        }
        free(in);
        return;
    }
    in->type = SRV_IN_BATCH;
    srv_node_input(s, in);
}

int srv_peer_listen(struct srv *s)
{
    for (size_t i = 0; i < s->n_members; i++) {
        int rv = srv_peer_add(s, s->members[i].id, &s->members[i].peer);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

void srv_peer_close_all(struct srv *s)
{
    while (s->n_peers > 0) {
        peer_free(s, s->peers[--s->n_peers]);
    }
    for (size_t i = 0; i < s->cap_held; i++) {
        pb_frame_writer_fini(&s->held[i].wr);
    }
    free(s->held);
    s->held = NULL;
    s->n_held = s->cap_held = 0;
}

bool srv_peer_blocked(struct srv *s, raft_id id)
{
    for (size_t i = 0; i < SRV_MAX_MEMBERS; i++) {
        uint64_t b = atomic_load_explicit(&s->blocked[i], memory_order_relaxed);
        if (b == 0) {
            return false;
        }
        if (b == id) {
            return true;
        }
    }
    return false;
}

void srv_set_partition(struct srv *s, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < SRV_MAX_MEMBERS; i++) {
        atomic_store(&s->blocked[i], i < n ? ids[i] : 0);
    }
}
