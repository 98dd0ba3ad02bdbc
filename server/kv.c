/* The client methods on the loop thread: validation, proposals and their pending table, reads,
 * Status and MemberList.  Results of writes and reads come back from the apply and read threads
 * as srv_done items (srv_kv_on_done). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "proto/pb.h"
#include "server/srv_int.h"

#define KVDB_VERSION "0.1.0"

static void reply_error(struct srv_conn *c,
                        const Kvdb__Frame *f,
                        Kvdb__ErrorCode code,
                        const char *msg)
{
    srv_conn_reply(c, f->id, f->method, code, msg, NULL, 0);
}

/* ---- the pending table: request id -> waiting client ---- */

static size_t slot_of(const struct srv *s, uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (s->ptable_cap - 1);
}

static int pending_grow(struct srv *s)
{
    size_t cap = s->ptable_cap == 0 ? 1024 : s->ptable_cap * 2;
    struct srv_pending **t = calloc(cap, sizeof *t);
    if (t == NULL) {
        return SRV_ENOMEM;
    }
    struct srv_pending **old = s->ptable;
    size_t old_cap = s->ptable_cap;
    s->ptable = t;
    s->ptable_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        while (old[i] != NULL) {
            struct srv_pending *p = old[i];
            old[i] = p->next;
            size_t k = slot_of(s, p->req_id);
            p->next = t[k];
            t[k] = p;
        }
    }
    free(old);
    return 0;
}

struct srv_pending *srv_pending_add(struct srv *s)
{
    if (s->n_pending + 1 > s->ptable_cap && pending_grow(s) != 0) {
        return NULL;
    }
    struct srv_pending *p = s->pfree;
    if (p != NULL) {
        s->pfree = p->next;
    } else if ((p = malloc(sizeof *p)) == NULL) {
        return NULL;
    }
    p->req_id = s->next_req_id++;
    size_t k = slot_of(s, p->req_id);
    p->next = s->ptable[k];
    s->ptable[k] = p;
    s->n_pending++;
    return p;
}

struct srv_pending *srv_pending_take(struct srv *s, uint64_t id)
{
    if (s->ptable_cap == 0) {
        return NULL;
    }
    struct srv_pending **pp = &s->ptable[slot_of(s, id)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->req_id == id) {
            struct srv_pending *p = *pp;
            *pp = p->next;
            s->n_pending--;
            return p;
        }
    }
    return NULL;
}

void srv_pending_release(struct srv *s, struct srv_pending *p)
{
    p->next = s->pfree;
    s->pfree = p;
}

void srv_header(const struct srv *s, Kvdb__ResponseHeader *h, uint64_t term)
{
    kvdb__response_header__init(h);
    h->cluster_id = s->cfg.cluster_id;
    h->member_id = s->cfg.member_id;
    h->raft_term = term;
    h->revision = atomic_load(&((struct srv *)s)->revision);
}

struct srv_pending *srv_pending_for(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv_pending *p = srv_pending_add(c->s);
    if (p != NULL) {
        p->slot = c->slot;
        p->gen = c->gen;
        p->frame_id = f->id;
        p->method = f->method;
        p->deadline_ms = srv_now_ms() + c->s->request_timeout_ms;
        p->arg_id = 0;
        p->arg_learner = false;
        p->conf_index = 0;
        p->via = 0;
        p->retry_ms = 0;
    }
    return p;
}

void srv_pending_each(struct srv *s, void (*fn)(struct srv *s, struct srv_pending *p))
{
    for (size_t i = 0; i < s->ptable_cap; i++) {
        for (struct srv_pending *p = s->ptable[i]; p != NULL; p = p->next) {
            fn(s, p);
        }
    }
}

/* ---- writes ---- */

/* InternalRequest{id, member, <field>: body} built without re-encoding the client's body: a
 * sub-message field is its tag, its length and its bytes. */
static size_t internal_request(uint8_t *out,
                               uint64_t id,
                               uint64_t member,
                               unsigned field,
                               const uint8_t *body,
                               size_t len)
{
    size_t n = 0;
    out[n++] = 0x08;
    n += wal_put_varint(out + n, id);
    out[n++] = 0x10;
    n += wal_put_varint(out + n, member);
    out[n++] = (uint8_t)(field << 3 | 2);
    n += wal_put_varint(out + n, len);
    if (len > 0) { /* an all-default body arrives as NULL */
        memcpy(out + n, body, len);
    }
    return n + len;
}

/* Front-door validation (etcd's checks before proposing): the body decodes, and its sizes are
 * within the limits.  Returns an error code and sets @msg, or OK. */
static Kvdb__ErrorCode validate_write(const struct srv *s, const Kvdb__Frame *f, const char **msg)
{
    if (f->body.len > s->cfg.max_request_bytes) {
        *msg = "request is too large";
        return KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
    }
    switch (f->method) {
    case KVDB__METHOD__METHOD_PUT: {
        Kvdb__PutRequest *r = kvdb__put_request__unpack(NULL, f->body.len, f->body.data);
        Kvdb__ErrorCode code = KVDB__ERROR_CODE__OK;
        if (r == NULL) {
            *msg = "malformed PutRequest";
            return KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        if (r->key.len == 0) {
            *msg = "key is not provided";
            code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
        } else if (r->key.len > s->cfg.max_key_bytes) {
            *msg = "key is too large";
            code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
        } else if (r->lease != 0 && !srv_lease_known((struct srv *)s, r->lease)) {
            *msg = "requested lease not found";
            code = KVDB__ERROR_CODE__NOT_FOUND;
        }
        kvdb__put_request__free_unpacked(r, NULL);
        return code;
    }
    case KVDB__METHOD__METHOD_DELETE_RANGE: {
        Kvdb__DeleteRangeRequest *r =
            kvdb__delete_range_request__unpack(NULL, f->body.len, f->body.data);
        Kvdb__ErrorCode code = KVDB__ERROR_CODE__OK;
        if (r == NULL) {
            *msg = "malformed DeleteRangeRequest";
            return KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        if (r->key.len == 0) {
            *msg = "key is not provided";
            code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
        } else if (r->key.len > s->cfg.max_key_bytes || r->range_end.len > s->cfg.max_key_bytes) {
            *msg = "key is too large";
            code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        kvdb__delete_range_request__free_unpacked(r, NULL);
        return code;
    }
    case KVDB__METHOD__METHOD_TXN: {
        /* Bound the nesting before protobuf-c's recursive decoder sees it (kvconv.c applies
         * the same limit). */
        if (pb_txn_depth(f->body.data, f->body.len, SRV_MAX_TXN_DEPTH) < 0) {
            *msg = "malformed TxnRequest or txn nested too deeply";
            return KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        Kvdb__TxnRequest *r = kvdb__txn_request__unpack(NULL, f->body.len, f->body.data);
        Kvdb__ErrorCode code = KVDB__ERROR_CODE__OK;
        if (r == NULL) {
            *msg = "malformed TxnRequest";
            return KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        if (r->n_success > s->cfg.max_txn_ops || r->n_failure > s->cfg.max_txn_ops ||
            r->n_compare > s->cfg.max_txn_ops) {
            *msg = "too many operations in txn request";
            code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        kvdb__txn_request__free_unpacked(r, NULL);
        return code;
    }
    case KVDB__METHOD__METHOD_COMPACT: {
        Kvdb__CompactionRequest *r =
            kvdb__compaction_request__unpack(NULL, f->body.len, f->body.data);
        if (r == NULL) {
            *msg = "malformed CompactionRequest";
            return KVDB__ERROR_CODE__INVALID_ARGUMENT;
        }
        kvdb__compaction_request__free_unpacked(r, NULL);
        return KVDB__ERROR_CODE__OK;
    }
    default:
        *msg = "unknown method";
        return KVDB__ERROR_CODE__UNIMPLEMENTED;
    }
}

static unsigned internal_field(Kvdb__Method m)
{
    switch (m) {
    case KVDB__METHOD__METHOD_PUT:
        return 3;
    case KVDB__METHOD__METHOD_DELETE_RANGE:
        return 4;
    case KVDB__METHOD__METHOD_TXN:
        return 5;
    default:
        return 6; /* compaction */
    }
}

static void handle_write(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    const char *msg = NULL;
    Kvdb__ErrorCode code = validate_write(s, f, &msg);
    if (code != KVDB__ERROR_CODE__OK) {
        reply_error(c, f, code, msg);
        return;
    }
    if (s->leader == 0) {
        reply_error(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "no leader");
        return;
    }
    if (!srv_alarm_admit(c, f)) {
        return; /* refused (NOSPACE: deletes and compaction still pass, they free space) */
    }
    struct srv_pending *p = srv_pending_for(c, f);
    uint8_t stackbuf[4096];
    size_t need = f->body.len + 3 * WAL_VARINT_MAX + 3;
    uint8_t *buf = need <= sizeof stackbuf ? stackbuf : malloc(need);
    if (p == NULL || buf == NULL) {
        if (p != NULL) {
            srv_pending_release(s, srv_pending_take(s, p->req_id));
        }
        reply_error(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t n = internal_request(buf, p->req_id, s->cfg.member_id, internal_field(f->method),
                                f->body.data, f->body.len);
    int rv = srv_node_propose(s, buf, n, p->req_id);
    if (buf != stackbuf) {
        free(buf);
    }
    if (rv != 0) {
        srv_pending_release(s, srv_pending_take(s, p->req_id));
        reply_error(
            c, f,
            rv == RAFT_ENOTLEADER ? KVDB__ERROR_CODE__UNAVAILABLE : KVDB__ERROR_CODE__INTERNAL,
            rv == RAFT_ENOTLEADER ? "no leader" : raft_strerror(rv));
    }
}

/* An auth change through the log, answered like a write once applied. */
void srv_kv_propose_auth(struct srv_conn *c, const Kvdb__Frame *f, const Kvdb__AuthChange *ch)
{
    struct srv *s = c->s;
    if (s->leader == 0) {
        reply_error(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "no leader");
        return;
    }
    struct srv_pending *p = srv_pending_for(c, f);
    if (p == NULL) {
        reply_error(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.id = p->req_id;
    ir.member = s->cfg.member_id;
    ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_AUTH;
    ir.auth = (Kvdb__AuthChange *)ch;
    /* Sized from the change (a role's permissions have no fixed bound); the frame reader
     * already bounded the request. */
    size_t n = kvdb__internal_request__get_packed_size(&ir);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    int rv = RAFT_ENOMEM;
    if (buf != NULL) {
        kvdb__internal_request__pack(&ir, buf);
        rv = srv_node_propose(s, buf, n, p->req_id);
        free(buf);
    }
    if (rv != 0) {
        srv_pending_release(s, srv_pending_take(s, p->req_id));
        if (rv == RAFT_ENOMEM) {
            reply_error(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        } else {
            reply_error(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "no leader");
        }
    }
}

/* ---- reads ---- */

static void handle_range(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    bool serializable = true; /* HashKV is local, as in etcd */
    if (f->method == KVDB__METHOD__METHOD_RANGE) {
        Kvdb__RangeRequest *r = kvdb__range_request__unpack(NULL, f->body.len, f->body.data);
        if (r == NULL) {
            reply_error(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT, "malformed RangeRequest");
            return;
        }
        serializable = r->serializable;
        bool empty = r->key.len == 0;
        kvdb__range_request__free_unpacked(r, NULL);
        if (empty) {
            reply_error(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT, "key is not provided");
            return;
        }
    }
    struct srv_read *rd = calloc(1, sizeof *rd);
    void *body = malloc(f->body.len > 0 ? f->body.len : 1);
    if (rd == NULL || body == NULL) {
        free(rd);
        free(body);
        reply_error(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (f->body.len > 0) {
        memcpy(body, f->body.data, f->body.len);
    }
    rd->slot = c->slot;
    rd->gen = c->gen;
    rd->frame_id = f->id;
    rd->method = f->method;
    rd->body = body;
    rd->len = f->body.len;
    rd->deadline_ms = srv_now_ms() + s->request_timeout_ms;
    if (serializable) {
        srv_read_submit(s, rd); /* local state, no ReadIndex */
    } else {
        srv_node_read(s, rd);
    }
}

/* ---- immediate methods ---- */

static void handle_status(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    struct lsm_status st;
    pthread_rwlock_rdlock(&s->lsm_lock);
    lsm_status_get(s->lsm, &st);
    pthread_rwlock_unlock(&s->lsm_lock);
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = s->cfg.cluster_id;
    h.member_id = s->cfg.member_id;
    h.revision = st.revision;
    h.raft_term = raft_term_of(s->raft);
    Kvdb__StatusResponse r;
    kvdb__status_response__init(&r);
    r.header = &h;
    r.version = KVDB_VERSION;
    r.db_size = (int64_t)st.db_size_bytes;
    r.leader = s->leader;
    r.raft_index = raft_commit_index(s->raft);
    r.raft_term = h.raft_term;
    r.raft_applied_index = st.applied_index;
    r.is_learner = raft_conf_is_learner(raft_conf_of(s->raft), s->cfg.member_id);
    srv_conn_reply_msg(c, f->id, f->method, &r.base);
}

void srv_kv_dispatch(struct srv_conn *c, const Kvdb__Frame *f)
{
    atomic_fetch_add_explicit(&c->s->metrics.client_requests, 1, memory_order_relaxed);
    if (!srv_auth_check(c, f)) {
        return; /* answered: unauthenticated or permission denied */
    }
    if (f->method >= KVDB__METHOD__METHOD_AUTH_ENABLE &&
        f->method <= KVDB__METHOD__METHOD_ROLE_LIST) {
        srv_auth_request(c, f);
        return;
    }
    switch (f->method) {
    case KVDB__METHOD__METHOD_RANGE:
    case KVDB__METHOD__METHOD_HASH_KV:
        handle_range(c, f);
        break;
    case KVDB__METHOD__METHOD_ALARM:
        srv_alarm_request(c, f);
        break;
    case KVDB__METHOD__METHOD_PUT:
    case KVDB__METHOD__METHOD_DELETE_RANGE:
    case KVDB__METHOD__METHOD_TXN:
    case KVDB__METHOD__METHOD_COMPACT:
        handle_write(c, f);
        break;
    case KVDB__METHOD__METHOD_STATUS:
        handle_status(c, f);
        break;
    case KVDB__METHOD__METHOD_MEMBER_LIST:
        srv_members_list(c, f);
        break;
    case KVDB__METHOD__METHOD_MEMBER_ADD:
    case KVDB__METHOD__METHOD_MEMBER_REMOVE:
    case KVDB__METHOD__METHOD_MEMBER_UPDATE:
    case KVDB__METHOD__METHOD_MEMBER_PROMOTE:
    case KVDB__METHOD__METHOD_MOVE_LEADER:
        srv_members_request(c, f);
        break;
    case KVDB__METHOD__METHOD_WATCH:
        srv_watch_request(c, f);
        break;
    case KVDB__METHOD__METHOD_SNAPSHOT: {
        /* The stream takes over this connection (snap.c): the apply thread takes a snapshot
         * in order with the applies, then a thread writes it out. */
        struct srv *s = c->s;
        struct pb_frame_reader rd;
        uint64_t id = f->id;
        int fd = srv_conn_detach(c, &rd); /* frees c */
        pb_frame_reader_fini(&rd);
        srv_apply_snapshot_job(s, fd, id);
        return;
    }
    case KVDB__METHOD__METHOD_LEASE_GRANT:
    case KVDB__METHOD__METHOD_LEASE_REVOKE:
    case KVDB__METHOD__METHOD_LEASE_KEEP_ALIVE:
    case KVDB__METHOD__METHOD_LEASE_TIME_TO_LIVE:
    case KVDB__METHOD__METHOD_LEASE_LEASES:
        srv_lease_request(c, f);
        break;
    default:
        /* A client speaking another protocol version: answer, then hang up. */
        reply_error(c, f, KVDB__ERROR_CODE__UNIMPLEMENTED,
                    "unknown method: closing the connection");
        srv_conn_close_after_reply(c);
        break;
    }
}

void srv_kv_on_done(struct srv *s, struct srv_done *d)
{
    uint32_t slot = d->slot, gen = d->gen;
    uint64_t frame_id = d->frame_id;
    uint32_t method = d->method;
    if (d->req_id != 0) {
        struct srv_pending *p = srv_pending_take(s, d->req_id);
        if (p == NULL) {
            return; /* timed out already, or proposed by an earlier incarnation */
        }
        slot = p->slot;
        gen = p->gen;
        frame_id = p->frame_id;
        method = p->method;
        srv_pending_release(s, p);
    }
    struct srv_conn *c = srv_conn_get(s, slot, gen);
    if (c != NULL) {
        srv_conn_reply(c, frame_id, method, d->code, d->errmsg, d->body, d->len);
    }
}

static void expire_reads(struct srv *s, struct srv_read **pp, uint64_t now)
{
    while (*pp != NULL) {
        struct srv_read *r = *pp;
        if (r->deadline_ms > now) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        struct srv_conn *c = srv_conn_get(s, r->slot, r->gen);
        if (c != NULL) {
            srv_conn_reply(c, r->frame_id, r->method, KVDB__ERROR_CODE__DEADLINE_EXCEEDED,
                           "request timed out: no read index from a leader", NULL, 0);
        }
        free(r->body);
        free(r);
    }
}

/* Ask raft again for the read index of waiting reads: every batch (@all, after a leader change,
 * when a request to the old leader is lost for sure) or those waiting longer than an election
 * timeout (the request or its answer was lost, or there was no leader to ask).  Raft answers
 * each request; duplicates find no reads left and are ignored. */
void srv_kv_reissue_reads(struct srv *s, bool all)
{
    uint64_t now = srv_now_ms(), last_ctx = 0;
    for (struct srv_read *r = s->reads_waiting; r != NULL; r = r->next) {
        if (!all && now - r->issued_ms < s->cfg.election_ms) {
            continue;
        }
        r->issued_ms = now;
        if (r->ctx == last_ctx) {
            continue; /* reads of one batch are contiguous: one request per batch */
        }
        last_ctx = r->ctx;
        struct srv_input *in = calloc(1, sizeof *in);
        if (in != NULL) {
            in->type = SRV_IN_READ;
            in->ctx = r->ctx;
            srv_node_input(s, in);
        }
    }
}

/* Free bytes of the file system holding @dir, or UINT64_MAX when unknown. */
static uint64_t free_bytes(const char *dir)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0) {
        return UINT64_MAX;
    }
    return (uint64_t)v.f_bavail * v.f_frsize;
}

/* Refresh the store size and raise this member's NOSPACE alarm (etcd's quota) when the store
 * outgrows --quota-backend-bytes or the disk is nearly full (less than four of the largest
 * requests free: a write refused now is better than one the disk refuses later).  The alarm is
 * replicated: only a disarm clears it, and a member still short of space raises it again here. */
static void check_quota(struct srv *s)
{
    struct lsm_status st;
    pthread_rwlock_rdlock(&s->lsm_lock);
    lsm_status_get(s->lsm, &st);
    pthread_rwlock_unlock(&s->lsm_lock);
    s->db_size = st.db_size_bytes;
    bool over = s->cfg.quota_backend_bytes > 0 && st.db_size_bytes > s->cfg.quota_backend_bytes;
    uint64_t avail = free_bytes(s->cfg.data_dir);
    bool short_of_disk = avail < 4 * (uint64_t)s->cfg.max_request_bytes;
    if ((over || short_of_disk) &&
        !srv_alarm_has(s->alarms, s->n_alarms, s->cfg.member_id, KVDB__ALARM_TYPE__NOSPACE) &&
        srv_alarm_raise(s, s->cfg.member_id, KVDB__ALARM_TYPE__NOSPACE) == 0) {
        srv_log(SRV_LOG_WARN, "alarm",
                "NOSPACE: store %llu bytes (quota %llu), %llu bytes free on disk",
                (unsigned long long)st.db_size_bytes,
                (unsigned long long)s->cfg.quota_backend_bytes, (unsigned long long)avail);
    }
    bool reclaim = over || atomic_load(&s->nospace_local);
    if (reclaim != s->reclaim) {
        s->reclaim = reclaim;
        /* While short of space, compactions give their space back at once. */
        pthread_rwlock_rdlock(&s->lsm_lock);
        lsm_set_reclaim(s->lsm, reclaim);
        pthread_rwlock_unlock(&s->lsm_lock);
    }
}

void srv_kv_sweep(struct srv *s)
{
    check_quota(s);
    srv_kv_reissue_reads(s, false);
    uint64_t now = srv_now_ms();
    for (size_t i = 0; i < s->ptable_cap; i++) {
        struct srv_pending **pp = &s->ptable[i];
        while (*pp != NULL) {
            struct srv_pending *p = *pp;
            if (p->deadline_ms > now) {
                pp = &p->next;
                continue;
            }
            *pp = p->next;
            s->n_pending--;
            struct srv_conn *c = srv_conn_get(s, p->slot, p->gen);
            if (c != NULL) {
                /* etcd's ErrTimeout: the outcome is unknown, the write may still apply. */
                atomic_fetch_add(&s->metrics.proposals_failed, 1);
                srv_conn_reply(c, p->frame_id, p->method, KVDB__ERROR_CODE__DEADLINE_EXCEEDED,
                               "request timed out", NULL, 0);
            }
            srv_pending_release(s, p);
        }
    }
    expire_reads(s, &s->reads_waiting, now);
    expire_reads(s, &s->reads_new, now);
    for (struct srv_pending **pp = &s->conf_waits; *pp != NULL;) {
        struct srv_pending *p = *pp;
        if (p->deadline_ms > now) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        struct srv_conn *c = srv_conn_get(s, p->slot, p->gen);
        if (c != NULL) {
            srv_conn_reply(c, p->frame_id, p->method, KVDB__ERROR_CODE__DEADLINE_EXCEEDED,
                           "membership change timed out (it may still apply)", NULL, 0);
        }
        srv_pending_release(s, p);
    }
    srv_members_on_leader(s); /* a move-leader past its deadline */
}

void srv_reads_free(struct srv_read *r)
{
    while (r != NULL) {
        struct srv_read *next = r->next;
        free(r->body);
        free(r);
        r = next;
    }
}

void srv_kv_fini(struct srv *s)
{
    for (size_t i = 0; i < s->ptable_cap; i++) {
        while (s->ptable[i] != NULL) {
            struct srv_pending *p = s->ptable[i];
            s->ptable[i] = p->next;
            free(p);
        }
    }
    free(s->ptable);
    s->ptable = NULL;
    s->ptable_cap = 0;
    while (s->conf_waits != NULL) {
        struct srv_pending *p = s->conf_waits;
        s->conf_waits = p->next;
        free(p);
    }
    while (s->pfree != NULL) {
        struct srv_pending *p = s->pfree;
        s->pfree = p->next;
        free(p);
    }
    srv_reads_free(s->reads_new);
    srv_reads_free(s->reads_waiting);
    s->reads_new = s->reads_waiting = NULL;
}
