/* Embedded test clusters: members on threads of one process. */
#include "server/embed.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/frame.h"
#include "proto/kvdb.pb-c.h"
#include "server/failpoint.h"
#include "server/srv.h"

struct member
{
    struct srv_config cfg;
    struct srv *srv;
    pthread_t thread;
    bool running;
    atomic_bool exited; /* srv_run() returned on its own (a fatal error stopped the member) */
    char endpoint[32];
};

struct srv_embed
{
    struct srv_embed_opts opts;
    char dir[PATH_MAX];
    bool made_dir;
    unsigned n;
    struct member m[SRV_EMBED_MAX];
    char endpoints[SRV_EMBED_MAX * 24];
    bool cut[SRV_EMBED_MAX][SRV_EMBED_MAX]; /* cut[i][j]: i drops traffic with j */
    bool excluded[SRV_EMBED_MAX];           /* isolated: not asked by wait_leader */
    char cluster[SRV_EMBED_MAX * 64];       /* --initial-cluster of the members so far */
};

/* A port the kernel considers free right now (bind to port 0, read it, close). */
/* A loopback port that binds now, below the kernel's ephemeral range (32768 and up by default):
 * a port the kernel hands out for bind(0) is also what it picks as the source port of outgoing
 * connections, so one picked that way and released was seen taken by a client of another test
 * before the member listened on it ("Address already in use"). */
static uint16_t free_port(void)
{
    static _Atomic uint32_t seq;
    uint32_t x =
        (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL) ^ atomic_fetch_add(&seq, 7919);
    for (int tries = 0; tries < 200; tries++) {
        x = x * 1103515245u + 12345u;
        uint16_t port = (uint16_t)(3000 + (x >> 8) % 7000); /* the integration harness takes
                                                             * 10000-31999 (by pid) */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            return 0;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (ok) {
            return port;
        }
    }
    return 0;
}

static void apply_cuts(struct srv_embed *c);

static void *member_main(void *arg)
{
    struct member *m = arg;
    if (srv_run(m->srv) != 0) {
        srv_disconnect(m->srv); /* a crashed process's sockets close */
    }
    atomic_store(&m->exited, true);
    return NULL;
}

static int member_start(struct srv_embed *c, unsigned i, char *errmsg)
{
    struct member *m = &c->m[i];
    int rv = srv_open(&m->cfg, &m->srv, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (pthread_create(&m->thread, NULL, member_main, m) != 0) {
        srv_close(m->srv);
        m->srv = NULL;
        snprintf(errmsg, 256, "cannot start a thread for member %u", i);
        return SRV_ENOMEM;
    }
    atomic_store(&m->exited, false);
    m->running = true;
    return 0;
}

static void member_halt(struct srv_embed *c, unsigned i)
{
    struct member *m = &c->m[i];
    if (!m->running) {
        return;
    }
    srv_stop(m->srv);
    pthread_join(m->thread, NULL);
    srv_close(m->srv);
    m->srv = NULL;
    m->running = false;
}

/* Fill member @i's configuration: @cluster is the --initial-cluster list, @existing joins a
 * running cluster. */
static int configure_one(struct srv_embed *c,
                         unsigned i,
                         const char *cluster,
                         uint16_t peer_port,
                         uint16_t client_port,
                         bool existing,
                         char *errmsg)
{
    struct member *m = &c->m[i];
    snprintf(m->endpoint, sizeof m->endpoint, "127.0.0.1:%u", (unsigned)client_port);
    char name[16], data[PATH_MAX], peer[64], client[64];
    snprintf(name, sizeof name, "m%u", i);
    snprintf(data, sizeof data, "%s/%s", c->dir, name);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%u", (unsigned)peer_port);
    snprintf(client, sizeof client, "http://%s", m->endpoint);
    char hb[16], el[16], sc[24], scu[24], quota[24], cc[24];
    snprintf(cc, sizeof cc, "%ums",
             c->opts.corrupt_check_ms != 0 ? c->opts.corrupt_check_ms : 5 * 60 * 1000);
    snprintf(quota, sizeof quota, "%llu",
             (unsigned long long)(c->opts.quota_bytes != 0 ? c->opts.quota_bytes : 2ull << 30));
    snprintf(hb, sizeof hb, "%u", c->opts.heartbeat_ms != 0 ? c->opts.heartbeat_ms : 50);
    snprintf(el, sizeof el, "%u", c->opts.election_ms != 0 ? c->opts.election_ms : 500);
    snprintf(sc, sizeof sc, "%llu",
             (unsigned long long)(c->opts.snapshot_count != 0 ? c->opts.snapshot_count : 10000));
    snprintf(scu, sizeof scu, "%llu",
             (unsigned long long)(c->opts.snapshot_catchup != 0 ? c->opts.snapshot_catchup : 5000));
    char *argv[] = {"kvdb",
                    "--name",
                    name,
                    "--data-dir",
                    data,
                    "--listen-peer-urls",
                    peer,
                    "--listen-client-urls",
                    client,
                    "--initial-cluster",
                    (char *)cluster,
                    "--initial-cluster-token",
                    "kvdb-embed",
                    "--heartbeat-interval",
                    hb,
                    "--election-timeout",
                    el,
                    "--snapshot-count",
                    sc,
                    "--snapshot-catchup-entries",
                    scu,
                    "--quota-backend-bytes",
                    quota,
                    "--corrupt-check-interval",
                    cc,
                    "--initial-cluster-state",
                    existing ? "existing" : "new"};
    srv_config_defaults(&m->cfg);
    return srv_config_parse(&m->cfg, (int)(sizeof argv / sizeof argv[0]), argv, errmsg, 256);
}

static void rebuild_endpoints(struct srv_embed *c)
{
    char *p = c->endpoints;
    for (unsigned i = 0; i < c->n; i++) {
        p += sprintf(p, "%s%s", i > 0 ? "," : "", c->m[i].endpoint);
    }
}

static int configure(struct srv_embed *c, char *errmsg)
{
    char cluster[SRV_EMBED_MAX * 64] = "";
    uint16_t peer_ports[SRV_EMBED_MAX], client_ports[SRV_EMBED_MAX];
    for (unsigned i = 0; i < c->n; i++) {
        peer_ports[i] = free_port();
        client_ports[i] = free_port();
        if (peer_ports[i] == 0 || client_ports[i] == 0) {
            snprintf(errmsg, 256, "no free loopback port");
            return SRV_EIO;
        }
        size_t len = strlen(cluster);
        snprintf(cluster + len, sizeof cluster - len, "%sm%u=http://127.0.0.1:%u", i > 0 ? "," : "",
                 i, (unsigned)peer_ports[i]);
    }
    snprintf(c->cluster, sizeof c->cluster, "%s", cluster);
    for (unsigned i = 0; i < c->n; i++) {
        int rv = configure_one(c, i, cluster, peer_ports[i], client_ports[i], false, errmsg);
        if (rv != 0) {
            return rv;
        }
    }
    rebuild_endpoints(c);
    return 0;
}

int srv_embed_start(const struct srv_embed_opts *opts, struct srv_embed **out, char *errmsg)
{
    if (opts == NULL || opts->members == 0 || opts->members > SRV_EMBED_MAX) {
        snprintf(errmsg, 256, "members must be 1..%d", SRV_EMBED_MAX);
        return SRV_EINVAL;
    }
    struct srv_embed *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(errmsg, 256, "out of memory");
        return SRV_ENOMEM;
    }
    c->opts = *opts;
    c->n = opts->members;
    if (opts->dir != NULL) {
        snprintf(c->dir, sizeof c->dir, "%s", opts->dir);
    } else {
        snprintf(c->dir, sizeof c->dir, "/tmp/kvdb-embed-XXXXXX");
        if (mkdtemp(c->dir) == NULL) {
            snprintf(errmsg, 256, "mkdtemp: %s", strerror(errno));
            free(c);
            return SRV_EIO;
        }
        c->made_dir = true;
    }
    int rv = configure(c, errmsg);
    for (unsigned i = 0; rv == 0 && i < c->n; i++) {
        rv = member_start(c, i, errmsg);
    }
    if (rv != 0) {
        srv_embed_destroy(c);
        return rv;
    }
    *out = c;
    return 0;
}

/* Send @req as one frame on @fd (the buffer sized from its packed size: requests have no fixed
 * bound).  False with @errmsg on failure. */
static bool send_request(int fd,
                         unsigned i,
                         Kvdb__Method method,
                         const ProtobufCMessage *req,
                         char *errmsg)
{
    size_t blen = protobuf_c_message_get_packed_size(req);
    uint8_t *body = malloc(blen > 0 ? blen : 1);
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = 1;
    f.method = method;
    f.body.data = body;
    f.body.len = body != NULL ? protobuf_c_message_pack(req, body) : 0;
    struct pb_frame_writer w;
    pb_frame_writer_init(&w);
    bool ok = body != NULL && pb_frame_writer_append(&w, &f.base) == 0;
    free(body);
    if (!ok) {
        snprintf(errmsg, 256, "out of memory");
    } else {
        const unsigned char *out;
        size_t n = pb_frame_writer_pending(&w, &out);
        ok = send(fd, out, n, MSG_NOSIGNAL) == (ssize_t)n;
        if (!ok) {
            snprintf(errmsg, 256, "send to member %u: %s", i, strerror(errno));
        }
    }
    pb_frame_writer_fini(&w);
    return ok;
}

/* One request/reply on a fresh connection to member @i's client port (the embedding has no
 * client library: it speaks the frame protocol directly).  *@body is malloc'ed. */
static int rpc(struct srv_embed *c,
               unsigned i,
               Kvdb__Method method,
               const ProtobufCMessage *req,
               uint8_t **body,
               size_t *len,
               char *errmsg)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(c->m[i].cfg.listen_client.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 15};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(errmsg, 256, "connect to member %u: %s", i, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return SRV_EIO;
    }
    bool ok = send_request(fd, i, method, req, errmsg);
    struct pb_frame_reader r;
    pb_frame_reader_init(&r, 1 << 20);
    int rv = SRV_EIO;
    while (ok) {
        const unsigned char *payload;
        size_t plen;
        if (pb_frame_reader_next(&r, &payload, &plen) == 0) {
            Kvdb__Frame *reply = kvdb__frame__unpack(NULL, plen, payload);
            if (reply == NULL) {
                snprintf(errmsg, 256, "malformed reply");
            } else if (reply->error != KVDB__ERROR_CODE__OK) {
                snprintf(errmsg, 256, "member %u: %s", i, reply->error_message);
            } else {
                *body = malloc(reply->body.len + 1);
                if (*body != NULL && reply->body.len > 0) {
                    memcpy(*body, reply->body.data, reply->body.len);
                }
                *len = reply->body.len;
                rv = *body != NULL ? 0 : SRV_ENOMEM;
            }
            if (reply != NULL) {
                kvdb__frame__free_unpacked(reply, NULL);
            }
            break;
        }
        unsigned char *buf;
        size_t room;
        if (pb_frame_reader_space(&r, 4096, &buf, &room) != 0) {
            break;
        }
        ssize_t got = recv(fd, buf, room, 0);
        if (got <= 0) {
            snprintf(errmsg, 256, "member %u: no reply", i);
            break;
        }
        pb_frame_reader_commit(&r, (size_t)got);
    }
    pb_frame_reader_fini(&r);
    close(fd);
    return rv;
}

int srv_embed_add_member(struct srv_embed *c, bool learner, char *errmsg)
{
    if (c->n == SRV_EMBED_MAX) {
        snprintf(errmsg, 256, "at most %d members", SRV_EMBED_MAX);
        return -1;
    }
    int leader = srv_embed_wait_leader(c, 10000);
    if (leader < 0) {
        snprintf(errmsg, 256, "no leader to add a member through");
        return -1;
    }
    uint16_t peer_port = free_port(), client_port = free_port();
    unsigned i = c->n;
    char url[64], name[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)peer_port);
    snprintf(name, sizeof name, "m%u", i);
    Kvdb__MemberAddRequest req;
    kvdb__member_add_request__init(&req);
    char *urls[1] = {url};
    req.peer_urls = urls;
    req.n_peer_urls = 1;
    req.is_learner = learner;
    req.name = name;
    uint8_t *body = NULL;
    size_t len = 0;
    if (rpc(c, (unsigned)leader, KVDB__METHOD__METHOD_MEMBER_ADD, &req.base, &body, &len, errmsg) !=
        0) {
        return -1;
    }
    free(body);
    size_t cl = strlen(c->cluster);
    snprintf(c->cluster + cl, sizeof c->cluster - cl, ",%s=%s", name, url);
    if (configure_one(c, i, c->cluster, peer_port, client_port, true, errmsg) != 0) {
        return -1;
    }
    c->n++;
    rebuild_endpoints(c);
    if (member_start(c, i, errmsg) != 0) {
        return -1;
    }
    return (int)i;
}

int srv_embed_remove_member(struct srv_embed *c, unsigned i, char *errmsg)
{
    if (i >= c->n) {
        snprintf(errmsg, 256, "no member %u", i);
        return SRV_EINVAL;
    }
    int rv = SRV_EIO;
    for (int attempt = 0; attempt < 20 && rv != 0; attempt++) {
        int leader = srv_embed_wait_leader(c, 10000);
        if (leader < 0) {
            snprintf(errmsg, 256, "no leader to remove a member through");
            return SRV_EIO;
        }
        Kvdb__MemberRemoveRequest req;
        kvdb__member_remove_request__init(&req);
        req.id = c->m[i].cfg.member_id;
        uint8_t *body = NULL;
        size_t len = 0;
        rv = rpc(c, (unsigned)leader, KVDB__METHOD__METHOD_MEMBER_REMOVE, &req.base, &body, &len,
                 errmsg);
        free(body);
        if (rv != 0) {
            /* e.g. "another membership change is in progress" or a leader change: retry */
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (rv == 0) {
        member_halt(c, i);
        c->excluded[i] = true; /* gone: wait_leader no longer asks it */
    }
    return rv;
}

int srv_embed_wait_leader(struct srv_embed *c, unsigned timeout_ms)
{
    for (unsigned waited = 0; waited <= timeout_ms; waited += 10) {
        uint64_t leader = 0;
        bool agree = true;
        for (unsigned i = 0; i < c->n; i++) {
            if (!c->m[i].running || atomic_load(&c->m[i].exited) || c->excluded[i]) {
                continue;
            }
            uint64_t l = srv_leader(c->m[i].srv);
            if (l == 0 || (leader != 0 && l != leader)) {
                agree = false;
            }
            leader = l;
        }
        for (unsigned i = 0; agree && i < c->n; i++) {
            if (c->m[i].running && !atomic_load(&c->m[i].exited) && !c->excluded[i] &&
                c->m[i].cfg.member_id == leader) {
                return (int)i;
            }
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

const char *srv_embed_endpoints(const struct srv_embed *c)
{
    return c->endpoints;
}

const char *srv_embed_endpoint(const struct srv_embed *c, unsigned i)
{
    return i < c->n ? c->m[i].endpoint : "";
}

uint64_t srv_embed_member_id(const struct srv_embed *c, unsigned i)
{
    return i < c->n ? c->m[i].cfg.member_id : 0;
}

bool srv_embed_is_running(const struct srv_embed *c, unsigned i)
{
    return i < c->n && c->m[i].running && !atomic_load(&c->m[i].exited);
}

const char *srv_embed_member_error(const struct srv_embed *c, unsigned i)
{
    if (i >= c->n || !c->m[i].running || !atomic_load(&c->m[i].exited) || c->m[i].srv == NULL) {
        return NULL;
    }
    const char *msg = srv_errmsg(c->m[i].srv); /* its thread has ended: no race */
    return msg[0] != '\0' ? msg : NULL;
}

void srv_embed_stop(struct srv_embed *c, unsigned i)
{
    if (i < c->n) {
        member_halt(c, i);
    }
}

void srv_embed_kill(struct srv_embed *c, unsigned i)
{
    /* In one process the difference to stop is only what clients see: both end the loop at once
     * and drop every connection without the answers still queued. */
    if (i < c->n) {
        member_halt(c, i);
    }
}

int srv_embed_restart(struct srv_embed *c, unsigned i, char *errmsg)
{
    if (i >= c->n) {
        snprintf(errmsg, 256, "no member %u", i);
        return SRV_EINVAL;
    }
    member_halt(c, i);
    int rv = member_start(c, i, errmsg);
    if (rv == 0) {
        apply_cuts(c); /* a restart does not heal the network */
    }
    return rv;
}

/* Re-apply the partition table: member i drops traffic with every j where cut[i][j]. */
static void apply_cuts(struct srv_embed *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        uint64_t ids[SRV_EMBED_MAX];
        size_t n = 0;
        for (unsigned j = 0; j < c->n; j++) {
            if (c->cut[i][j]) {
                ids[n++] = c->m[j].cfg.member_id;
            }
        }
        if (c->m[i].running) {
            srv_set_partition(c->m[i].srv, ids, n);
        }
    }
}

void srv_embed_partition(struct srv_embed *c, unsigned i, unsigned j)
{
    if (i < c->n && j < c->n && i != j) {
        c->cut[i][j] = c->cut[j][i] = true;
        apply_cuts(c);
    }
}

void srv_embed_isolate(struct srv_embed *c, unsigned i)
{
    if (i < c->n) {
        c->excluded[i] = true;
    }
    for (unsigned j = 0; j < c->n; j++) {
        srv_embed_partition(c, i, j);
    }
}

void srv_embed_heal(struct srv_embed *c)
{
    memset(c->cut, 0, sizeof c->cut);
    memset(c->excluded, 0, sizeof c->excluded);
    apply_cuts(c);
}

void srv_embed_disk_delay(struct srv_embed *c, unsigned i, unsigned ms)
{
    if (i < c->n) {
        srv_fp_set("wal_fsync", c->m[i].cfg.member_id, ms > 0 ? SRV_FP_DELAY : SRV_FP_OFF, 100, 0,
                   ms);
    }
}

void srv_embed_destroy(struct srv_embed *c)
{
    if (c == NULL) {
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        member_halt(c, i);
        srv_fp_set("wal_fsync", c->m[i].cfg.member_id, SRV_FP_OFF, 0, 0, 0);
    }
    if (!c->opts.keep_dir) {
        if (c->made_dir) {
            srv_remove_tree(c->dir);
        } else {
            for (unsigned i = 0; i < c->n; i++) {
                srv_remove_tree(c->m[i].cfg.data_dir);
            }
        }
    }
    free(c);
}
