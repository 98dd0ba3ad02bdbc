/* Runtime membership: the member registry (ID -> name, peer URL), member add / remove / update /
 * promote and move-leader, and keeping the peer connections in line with the configuration.
 *
 * The raft configuration holds only member IDs; where each member lives is replicated as a
 * MemberAttr entry through the log.  Adding a member is therefore two entries: its attributes
 * (so that every member, the leader first, can connect to it), then raft's configuration change
 * (a learner or a voter).  The client is answered once the configuration entry is applied.  The
 * registry is the store's state record "members", written in the batch of the entry that
 * changes it (a MemberAttr, or a configuration change marking members removed), so it travels
 * inside every snapshot's tables and a member that catches up by snapshot knows everyone.
 *
 * A removed member keeps its registry entry, marked removed: if it comes back (it was down when
 * it was removed, so it never applied its removal) its peers answer its first batch with a
 * "removed" batch and it stops, as etcd's members do on HTTP 410 from their peers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/srv_int.h"

/* ---- the registry file: "id name peer_url [client_url|-] [removed]" lines ---- */

static void registry_put(struct srv_member *v, size_t *n, const struct srv_member *m)
{
    for (size_t i = 0; i < *n; i++) {
        if (v[i].id == m->id) {
            if (m->name[0] != '\0') {
                memcpy(v[i].name, m->name, sizeof v[i].name);
            }
            v[i].peer = m->peer;
            v[i].removed = m->removed;
            if (m->client.port != 0) {
                v[i].client = m->client;
            }
            return;
        }
    }
    if (*n < SRV_MAX_MEMBERS) {
        v[(*n)++] = *m;
    }
}

static void members_read(FILE *f, struct srv_member *v, size_t *n)
{
    char line[512], name[SRV_NAME_MAX], url[SRV_URL_MAX], curl[SRV_URL_MAX], mark[16];
    uint64_t id;
    while (fgets(line, sizeof line, f) != NULL) {
        int got = sscanf(line, "%" SCNx64 " %63s %127s %127s %15s", &id, name, url, curl, mark);
        if (got < 3) {
            continue;
        }
        struct srv_member m;
        memset(&m, 0, sizeof m);
        m.id = id;
        /* The fourth field was "removed" alone before client URLs were kept. */
        const char *flag = got == 5 ? mark : got == 4 ? curl : "";
        m.removed = strcmp(flag, "removed") == 0;
        if (got >= 4 && strcmp(curl, "-") != 0 && strcmp(curl, "removed") != 0) {
            srv_url_parse(curl, &m.client);
        }
        snprintf(m.name, sizeof m.name, "%s", strcmp(name, "-") == 0 ? "" : name);
        if (srv_url_parse(url, &m.peer) == 0) {
            registry_put(v, n, &m);
        }
    }
}

static void members_write(FILE *f, const struct srv_member *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%016" PRIx64 " %s %s %s%s\n", v[i].id, v[i].name[0] != '\0' ? v[i].name : "-",
                v[i].peer.text, v[i].client.port != 0 ? v[i].client.text : "-",
                v[i].removed ? " removed" : "");
    }
}

int srv_members_load(const char *path, struct srv_member *v, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT ? 0 : SRV_EIO;
    }
    members_read(f, v, n);
    fclose(f);
    return 0;
}

int srv_members_save(const char *path, const struct srv_member *v, size_t n)
{
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return SRV_EIO;
    }
    members_write(f, v, n);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : SRV_EIO;
}

int srv_members_decode(const void *buf, size_t len, struct srv_member *v, size_t *n)
{
    if (len == 0) {
        return 0;
    }
    FILE *f = fmemopen((void *)buf, len, "r");
    if (f == NULL) {
        return SRV_ENOMEM;
    }
    members_read(f, v, n);
    fclose(f);
    return 0;
}

char *srv_members_encode(const struct srv_member *v, size_t n, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (f == NULL) {
        return NULL;
    }
    members_write(f, v, n);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

bool srv_members_next_attr(const struct srv *s,
                           const Kvdb__MemberAttr *a,
                           struct srv_member *v,
                           size_t *n,
                           struct srv_member *m)
{
    memset(m, 0, sizeof *m);
    m->id = a->id;
    snprintf(m->name, sizeof m->name, "%s", a->name != NULL ? a->name : "");
    if (a->peer_url == NULL || srv_url_parse(a->peer_url, &m->peer) != 0) {
        return false; /* validated by the proposer; every member skips it alike */
    }
    if (a->client_url != NULL && a->client_url[0] != '\0') {
        srv_url_parse(a->client_url, &m->client);
    }
    memcpy(v, s->apply_members, s->n_apply_members * sizeof *v);
    *n = s->n_apply_members;
    registry_put(v, n, m);
    return true;
}

static void post_member(struct srv *s,
                        enum srv_done_kind kind,
                        const struct srv_member *m,
                        uint64_t req_id)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = kind;
        d->member = *m;
        d->req_id = req_id;
        srv_post_done(s, d);
    }
}

void srv_members_commit_attr(struct srv *s,
                             const struct srv_member *v,
                             size_t n,
                             const struct srv_member *m,
                             uint64_t req_id)
{
    memcpy(s->apply_members, v, n * sizeof *v);
    s->n_apply_members = n;
    post_member(s, SRV_DONE_MEMBER_ATTR, m, req_id);
}

static bool in_conf(const struct raft_conf *c, uint64_t id)
{
    return raft_conf_is_voter(c, id) || raft_conf_is_learner(c, id);
}

bool srv_members_next_conf(const struct srv *s,
                           const struct raft_conf *prev,
                           const struct raft_conf *next,
                           struct srv_member *v,
                           size_t *n)
{
    bool changed = false;
    memcpy(v, s->apply_members, s->n_apply_members * sizeof *v);
    *n = s->n_apply_members;
    for (size_t i = 0; i < *n; i++) {
        bool removed = v[i].removed;
        if (in_conf(next, v[i].id)) {
            removed = false; /* (re)joined */
        } else if (in_conf(prev, v[i].id)) {
            removed = true;
        }
        changed = changed || removed != v[i].removed;
        v[i].removed = removed;
    }
    return changed;
}

void srv_members_commit_conf(struct srv *s, const struct srv_member *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct srv_member *old = NULL;
        for (size_t j = 0; j < s->n_apply_members; j++) {
            if (s->apply_members[j].id == v[i].id) {
                old = &s->apply_members[j];
            }
        }
        if (old == NULL || old->removed != v[i].removed) {
            post_member(s, SRV_DONE_MEMBER_REMOVED, &v[i], 0);
        }
    }
    memcpy(s->apply_members, v, n * sizeof *v);
    s->n_apply_members = n;
}

/* ---- the loop side ---- */

static const struct srv_member *lookup(const struct srv *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_members; i++) {
        if (s->members[i].id == id) {
            return &s->members[i];
        }
    }
    return NULL;
}

void srv_members_on_removed(struct srv *s, const struct srv_done *d)
{
    for (size_t i = 0; i < s->n_members; i++) {
        if (s->members[i].id == d->member.id) {
            s->members[i].removed = d->member.removed;
        }
    }
}

bool srv_members_is_removed(const struct srv *s, uint64_t id)
{
    const struct srv_member *m = lookup(s, id);
    /* Never a member of our configuration, whatever the registry says. */
    return m != NULL && m->removed && !in_conf(raft_conf_of(s->raft), id);
}

/* Connect to every member of @conf whose address is known; drop peers no longer in it. */
static void reconcile_peers(struct srv *s, const struct raft_conf *conf)
{
    for (unsigned i = 0; i < conf->n_voters + conf->n_learners; i++) {
        uint64_t id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];
        const struct srv_member *m = lookup(s, id);
        if (m != NULL) {
            srv_peer_add(s, id, &m->peer);
        }
        struct srv_peer *p = srv_peer_find(s, id);
        if (p != NULL) {
            p->pending_add = false; /* added: from now on the configuration decides */
        }
    }
    for (size_t i = 0; i < s->n_peers;) {
        uint64_t id = s->peers[i]->id;
        if (!raft_conf_is_voter(conf, id) && !raft_conf_is_learner(conf, id) &&
            !s->peers[i]->pending_add) {
            /* Only the leader tells: its configuration is the newest, so a member removed and
             * added back since is never told by a member that is still catching up. */
            if (s->role == RAFT_LEADER && srv_members_is_removed(s, id)) {
                srv_peer_tell_removed(s, id);
            }
            srv_peer_remove(s, id); /* swaps the last peer in: do not advance */
            continue;
        }
        i++;
    }
}

static void members_reply(struct srv *s,
                          struct srv_conn *c,
                          uint64_t frame_id,
                          uint32_t method,
                          uint64_t added);

void srv_members_on_attr(struct srv *s, const struct srv_done *d)
{
    registry_put(s->members, &s->n_members, &d->member);
    /* Connect at once, before raft needs to reach it: the configuration change follows.  (Not
     * to a removed member, which a snapshot's registry also lists.) */
    if (!d->member.removed && srv_peer_add(s, d->member.id, &d->member.peer) == 0) {
        struct srv_peer *p = srv_peer_find(s, d->member.id);
        if (p != NULL && !raft_conf_is_voter(raft_conf_of(s->raft), d->member.id) &&
            !raft_conf_is_learner(raft_conf_of(s->raft), d->member.id)) {
            p->pending_add = true;
        }
    }
    struct srv_pending *p = d->req_id != 0 ? srv_pending_take(s, d->req_id) : NULL;
    if (p == NULL) {
        return;
    }
    struct srv_conn *c = srv_conn_get(s, p->slot, p->gen);
    if (p->method == KVDB__METHOD__METHOD_MEMBER_UPDATE) {
        if (c != NULL) {
            members_reply(s, c, p->frame_id, p->method, 0);
        }
        srv_pending_release(s, p);
        return;
    }
    /* Member add: now the configuration change. */
    raft_index index = 0;
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    ev.u.cc.type = p->arg_learner ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_VOTER;
    ev.u.cc.id = p->arg_id;
    ev.u.cc.index = &index;
    int rv = s->inflight ? RAFT_EBUSY : raft_step(s->raft, &ev);
    if (rv != 0) {
        if (c != NULL) {
            srv_conn_reply(c, p->frame_id, p->method, KVDB__ERROR_CODE__FAILED_PRECONDITION,
                           rv == RAFT_EBUSY ? "another membership change is in progress: retry"
                                            : raft_strerror(rv),
                           NULL, 0);
        }
        srv_pending_release(s, p);
        return;
    }
    srv_conf_wait(s, p, index);
}

void srv_conf_wait(struct srv *s, struct srv_pending *p, uint64_t index)
{
    p->conf_index = index;
    p->next = s->conf_waits;
    s->conf_waits = p;
}

/* A configuration entry was applied (apply thread -> loop). */
void srv_members_on_conf(struct srv *s, uint64_t index, const struct raft_conf *conf)
{
    bool in =
        raft_conf_is_voter(conf, s->cfg.member_id) || raft_conf_is_learner(conf, s->cfg.member_id);
    if (in) {
        s->was_in_conf = true;
    }
    reconcile_peers(s, conf);
    struct srv_pending **pp = &s->conf_waits;
    while (*pp != NULL) {
        struct srv_pending *p = *pp;
        if (p->conf_index > index) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        struct srv_conn *c = srv_conn_get(s, p->slot, p->gen);
        if (c != NULL) {
            members_reply(s, c, p->frame_id, p->method, p->arg_id);
        }
        srv_pending_release(s, p);
    }
    if (!in && s->was_in_conf) {
        /* etcd's behaviour: a removed member stops.  Its data stays for inspection.  Answers
         * already queued (the remove itself, when the leader removed itself) go out first. */
        srv_conn_flush_all(s);
        srv_fail(s, SRV_ECLUSTER, "this member (%llx) was removed from the cluster",
                 (unsigned long long)s->cfg.member_id);
    }
}

/* A joining member learns the cluster's ID from the first member of --initial-cluster that
 * talks to it, and records it (with no bootstrap voters) so restarts keep it. */
void srv_adopt_cluster_id(struct srv *s, uint64_t cluster_id)
{
    char dir[600], err[SRV_ERRMSG];
    snprintf(dir, sizeof dir, "%s/member", s->cfg.data_dir);
    if (srv_member_file_write(dir, cluster_id, s->cfg.member_id, NULL, 0, err) != 0) {
        srv_log(SRV_LOG_WARN, "member", "%s", err);
        return;
    }
    s->cfg.cluster_id = cluster_id;
    s->cluster_id_unknown = false;
    srv_log(SRV_LOG_INFO, "member", "joined cluster %016llx", (unsigned long long)cluster_id);
}

/* ---- replies ---- */

static void fill_member(const struct srv *s,
                        uint64_t id,
                        bool learner,
                        Kvdb__Member *m,
                        char **purl,
                        char **curl)
{
    kvdb__member__init(m);
    m->id = id;
    m->is_learner = learner;
    const struct srv_member *r = lookup(s, id);
    if (r != NULL) {
        m->name = (char *)r->name;
        *purl = (char *)r->peer.text;
        m->peer_urls = purl;
        m->n_peer_urls = 1;
    }
    /* Ours we know; the others' once they published them (srv_members_publish). */
    const char *c = id == s->cfg.member_id             ? s->cfg.advertise_client.text
                    : r != NULL && r->client.port != 0 ? r->client.text
                                                       : NULL;
    if (c != NULL) {
        *curl = (char *)c;
        m->client_urls = curl;
        m->n_client_urls = 1;
    }
}

/* The members of the configuration in effect, as MemberListResponse-like arrays. */
struct mlist
{
    Kvdb__Member ms[RAFT_MAX_MEMBERS * 2];
    Kvdb__Member *mp[RAFT_MAX_MEMBERS * 2];
    char *purl[RAFT_MAX_MEMBERS * 2];
    char *curl[RAFT_MAX_MEMBERS * 2];
    size_t n;
};

static void list_members(const struct srv *s, struct mlist *l)
{
    const struct raft_conf *conf = raft_conf_of(s->raft);
    l->n = 0;
    for (unsigned i = 0; i < conf->n_voters + conf->n_learners; i++) {
        bool learner = i >= conf->n_voters;
        uint64_t id = learner ? conf->learners[i - conf->n_voters] : conf->voters[i];
        fill_member(s, id, learner, &l->ms[l->n], &l->purl[l->n], &l->curl[l->n]);
        l->mp[l->n] = &l->ms[l->n];
        l->n++;
    }
}

static void members_reply(struct srv *s,
                          struct srv_conn *c,
                          uint64_t frame_id,
                          uint32_t method,
                          uint64_t added)
{
    struct mlist l;
    list_members(s, &l);
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = s->cfg.cluster_id;
    h.member_id = s->cfg.member_id;
    h.raft_term = raft_term_of(s->raft);
    h.revision = atomic_load(&s->revision);
    ProtobufCMessage *msg;
    Kvdb__MemberAddResponse add;
    Kvdb__MemberListResponse list; /* same fields for remove/update/promote/list */
    Kvdb__Member added_m;
    char *apurl = NULL, *acurl = NULL;
    if (method == KVDB__METHOD__METHOD_MEMBER_ADD) {
        kvdb__member_add_response__init(&add);
        add.header = &h;
        add.members = l.mp;
        add.n_members = l.n;
        fill_member(s, added, raft_conf_is_learner(raft_conf_of(s->raft), added), &added_m, &apurl,
                    &acurl);
        add.member = &added_m;
        msg = &add.base;
    } else {
        kvdb__member_list_response__init(&list);
        list.header = &h;
        list.members = l.mp;
        list.n_members = l.n;
        msg = &list.base;
    }
    /* MemberRemove/Update/Promote responses have the same wire shape as MemberListResponse:
     * header (1) and members (2). */
    srv_conn_reply_msg(c, frame_id, method, msg);
}

void srv_members_list(struct srv_conn *c, const Kvdb__Frame *f)
{
    members_reply(c->s, c, f->id, f->method, 0);
}

/* ---- requests ---- */

/* Propose a MemberAttr entry answered through @p once applied. */
static int propose_attr(struct srv *s,
                        uint64_t req_id,
                        uint64_t id,
                        const char *name,
                        const char *url,
                        const char *client_url)
{
    Kvdb__MemberAttr a;
    kvdb__member_attr__init(&a);
    a.id = id;
    a.name = (char *)name;
    a.peer_url = (char *)url;
    a.client_url = (char *)client_url;
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.id = req_id;
    ir.member = s->cfg.member_id;
    ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_MEMBER_ATTR;
    ir.member_attr = &a;
    uint8_t buf[512];
    if (kvdb__internal_request__get_packed_size(&ir) > sizeof buf) {
        return RAFT_EINVAL;
    }
    size_t n = kvdb__internal_request__pack(&ir, buf);
    return srv_node_propose(s, buf, n, req_id);
}

void srv_members_publish(struct srv *s)
{
    uint64_t now = srv_now_ms();
    if (s->leader == 0 || now < s->publish_next_ms ||
        !in_conf(raft_conf_of(s->raft), s->cfg.member_id)) {
        return;
    }
    const struct srv_member *me = lookup(s, s->cfg.member_id);
    if (me == NULL ||
        (me->client.port != 0 && strcmp(me->client.text, s->cfg.advertise_client.text) == 0)) {
        return; /* unknown to the registry yet (joining), or published */
    }
    /* Like etcd's publish: through raft, so every member lists it; retried until applied (a
     * forwarded proposal can be lost with a leader change). */
    s->publish_next_ms = now + 2000;
    int rv = propose_attr(s, s->next_req_id++, me->id, s->cfg.name, me->peer.text,
                          s->cfg.advertise_client.text);
    if (rv != 0 && rv != RAFT_ENOTLEADER) {
        srv_log(SRV_LOG_WARN, "member", "publishing our client URL: %s", raft_strerror(rv));
    }
}

static void fail_req(struct srv_conn *c,
                     const Kvdb__Frame *f,
                     Kvdb__ErrorCode code,
                     const char *msg)
{
    srv_conn_reply(c, f->id, f->method, code, msg, NULL, 0);
}

static void member_add(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    Kvdb__MemberAddRequest *r = kvdb__member_add_request__unpack(NULL, f->body.len, f->body.data);
    struct srv_url url;
    if (r == NULL || r->n_peer_urls != 1 || srv_url_parse(r->peer_urls[0], &url) != 0) {
        fail_req(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                 "member add needs exactly one peer URL (http://host:port)");
        if (r != NULL) {
            kvdb__member_add_request__free_unpacked(r, NULL);
        }
        return;
    }
    uint64_t id = srv_member_id(url.text, s->cfg.cluster_token);
    const struct raft_conf *conf = raft_conf_of(s->raft);
    if (raft_conf_is_voter(conf, id) || raft_conf_is_learner(conf, id)) {
        fail_req(c, f, KVDB__ERROR_CODE__FAILED_PRECONDITION, "peer URL already exists");
    } else {
        struct srv_pending *p = srv_pending_for(c, f);
        if (p == NULL) {
            fail_req(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        } else {
            p->arg_id = id;
            p->arg_learner = r->is_learner;
            if (propose_attr(s, p->req_id, id, r->name != NULL ? r->name : "", url.text, NULL) !=
                0) {
                srv_pending_release(s, srv_pending_take(s, p->req_id));
                fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
            }
        }
    }
    kvdb__member_add_request__free_unpacked(r, NULL);
}

static void member_update(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    Kvdb__MemberUpdateRequest *r =
        kvdb__member_update_request__unpack(NULL, f->body.len, f->body.data);
    struct srv_url url;
    if (r == NULL || r->n_peer_urls != 1 || srv_url_parse(r->peer_urls[0], &url) != 0) {
        fail_req(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                 "member update needs an ID and one peer URL");
    } else if (lookup(s, r->id) == NULL) {
        fail_req(c, f, KVDB__ERROR_CODE__NOT_FOUND, "member not found");
    } else {
        struct srv_pending *p = srv_pending_for(c, f);
        if (p == NULL ||
            propose_attr(s, p->req_id, r->id, lookup(s, r->id)->name, url.text, NULL) != 0) {
            if (p != NULL) {
                srv_pending_release(s, srv_pending_take(s, p->req_id));
            }
            fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        }
    }
    if (r != NULL) {
        kvdb__member_update_request__free_unpacked(r, NULL);
    }
}

/* etcd's readyPercentThreshold: a learner may become a voter once its log holds at least 90%
 * of the leader's. */
#define LEARNER_READY_PERCENT 90
#define LEARNER_NOT_READY \
    "etcdserver: can only promote a learner member which is in sync with leader"

/* Leader: whether learner @id has caught up enough to vote (etcd's isLearnerReady compares the
 * learner's match index with the leader's own).  Promoting one far behind would give the cluster
 * a voter that cannot acknowledge anything yet, so a quorum could be lost with one more failure. */
static bool learner_is_ready(const struct srv *s, uint64_t id)
{
    raft_index learner = raft_match_of(s->raft, id);
    raft_index leader = raft_match_of(s->raft, s->cfg.member_id);
    return learner * 100 >= leader * LEARNER_READY_PERCENT;
}

/* Remove and promote are raft configuration changes on the leader. */
static void member_change(struct srv_conn *c, const Kvdb__Frame *f, enum raft_cc_type type)
{
    struct srv *s = c->s;
    uint64_t id;
    if (type == RAFT_CC_REMOVE) {
        Kvdb__MemberRemoveRequest *r =
            kvdb__member_remove_request__unpack(NULL, f->body.len, f->body.data);
        id = r != NULL ? r->id : 0;
        if (r != NULL) {
            kvdb__member_remove_request__free_unpacked(r, NULL);
        }
    } else {
        Kvdb__MemberPromoteRequest *r =
            kvdb__member_promote_request__unpack(NULL, f->body.len, f->body.data);
        id = r != NULL ? r->id : 0;
        if (r != NULL) {
            kvdb__member_promote_request__free_unpacked(r, NULL);
        }
    }
    const struct raft_conf *conf = raft_conf_of(s->raft);
    if (id == 0 || (!raft_conf_is_voter(conf, id) && !raft_conf_is_learner(conf, id))) {
        fail_req(c, f, KVDB__ERROR_CODE__NOT_FOUND, "member not found");
        return;
    }
    if (type == RAFT_CC_ADD_VOTER && !raft_conf_is_learner(conf, id)) {
        fail_req(c, f, KVDB__ERROR_CODE__FAILED_PRECONDITION, "can only promote a learner");
        return;
    }
    if (s->role != RAFT_LEADER) {
        fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        return;
    }
    if (type == RAFT_CC_ADD_VOTER && !learner_is_ready(s, id)) {
        /* etcd's ErrLearnerNotReady, gRPC FailedPrecondition: retry once it caught up. */
        fail_req(c, f, KVDB__ERROR_CODE__FAILED_PRECONDITION, LEARNER_NOT_READY);
        return;
    }
    raft_index index = 0;
    struct raft_event ev = {.type = RAFT_EV_CONF_CHANGE};
    ev.u.cc.type = type;
    ev.u.cc.id = id;
    ev.u.cc.index = &index;
    int rv = s->inflight ? RAFT_EBUSY : raft_step(s->raft, &ev);
    if (rv != 0) {
        fail_req(c, f,
                 rv == RAFT_ENOTLEADER ? KVDB__ERROR_CODE__UNAVAILABLE
                                       : KVDB__ERROR_CODE__FAILED_PRECONDITION,
                 rv == RAFT_EBUSY ? "another membership change is in progress: retry"
                                  : raft_strerror(rv));
        return;
    }
    struct srv_pending *p = srv_pending_for(c, f);
    if (p != NULL) {
        srv_pending_take(s, p->req_id); /* waits on the configuration index, not an entry id */
        srv_conf_wait(s, p, index);
    }
}

static void move_leader(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    Kvdb__MoveLeaderRequest *r = kvdb__move_leader_request__unpack(NULL, f->body.len, f->body.data);
    uint64_t target = r != NULL ? r->targetid : 0;
    if (r != NULL) {
        kvdb__move_leader_request__free_unpacked(r, NULL);
    }
    if (!raft_conf_is_voter(raft_conf_of(s->raft), target)) {
        fail_req(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT, "the target is not a voter");
        return;
    }
    if (s->role != RAFT_LEADER) {
        fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        return;
    }
    struct raft_event ev = {.type = RAFT_EV_TRANSFER};
    ev.u.peer = target;
    if (s->inflight) {
        fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "busy: retry");
        return;
    }
    raft_step(s->raft, &ev);
    s->move_slot = c->slot;
    s->move_gen = c->gen;
    s->move_frame = f->id;
    s->move_target = target;
    s->move_deadline = srv_now_ms() + 5ull * s->cfg.election_ms;
}

/* The leader changed (loop): answer a pending move-leader. */
void srv_members_on_leader(struct srv *s)
{
    if (s->move_target == 0) {
        return;
    }
    bool done = s->leader == s->move_target;
    if (!done && srv_now_ms() < s->move_deadline) {
        return;
    }
    struct srv_conn *c = srv_conn_get(s, s->move_slot, s->move_gen);
    if (c != NULL) {
        if (done) {
            Kvdb__ResponseHeader h;
            kvdb__response_header__init(&h);
            h.cluster_id = s->cfg.cluster_id;
            h.member_id = s->cfg.member_id;
            h.raft_term = raft_term_of(s->raft);
            Kvdb__MoveLeaderResponse resp;
            kvdb__move_leader_response__init(&resp);
            resp.header = &h;
            srv_conn_reply_msg(c, s->move_frame, KVDB__METHOD__METHOD_MOVE_LEADER, &resp.base);
        } else {
            srv_conn_reply(c, s->move_frame, KVDB__METHOD__METHOD_MOVE_LEADER,
                           KVDB__ERROR_CODE__DEADLINE_EXCEEDED, "leadership transfer timed out",
                           NULL, 0);
        }
    }
    s->move_target = 0;
}

void srv_members_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    if (c->s->role != RAFT_LEADER) {
        /* Membership changes run on the leader (the configuration change is its step); the
         * client library fails over to the next endpoint on UNAVAILABLE. */
        fail_req(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        return;
    }
    switch (f->method) {
    case KVDB__METHOD__METHOD_MEMBER_ADD:
        member_add(c, f);
        break;
    case KVDB__METHOD__METHOD_MEMBER_UPDATE:
        member_update(c, f);
        break;
    case KVDB__METHOD__METHOD_MEMBER_REMOVE:
        member_change(c, f, RAFT_CC_REMOVE);
        break;
    case KVDB__METHOD__METHOD_MEMBER_PROMOTE:
        member_change(c, f, RAFT_CC_ADD_VOTER);
        break;
    case KVDB__METHOD__METHOD_MOVE_LEADER:
        move_leader(c, f);
        break;
    default:
        break;
    }
}
