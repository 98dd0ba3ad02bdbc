/* Leases (etcd's): grant with a TTL, attach keys on put, keep-alive, revoke, time-to-live, list.
 *
 * The lease table (ID -> granted TTL) is replicated: grants and revokes are log entries, applied
 * by the apply thread; each lease is a state record of the store ("lease/" + ID), written in
 * the batch of its grant and deleted in that of its revoke, so tables and snapshots carry it.  The
 * apply thread also keeps which keys each lease holds, maintained from the store's change events
 * and rebuilt from the store at start, so a revoke deletes exactly those keys in one revision on
 * every member.  Expiry is the leader's: it tracks each lease's deadline on the loop, renews it
 * on keep-alive, proposes a revoke when it passes, and on becoming leader gives every lease a
 * full TTL again (etcd's promote), so leases survive leader changes. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/kvconv.h"
#include "server/srv_int.h"
#include "wal/codec.h"

/* ---- the apply thread's table ---- */

struct lease_key
{
    uint8_t *key;
    size_t len;
};

struct srv_lease
{
    int64_t id;
    int64_t ttl;
    struct lease_key *keys;
    size_t n_keys;
    size_t cap_keys;
};

static struct srv_lease *find(struct srv_lease *v, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].id == id) {
            return &v[i];
        }
    }
    return NULL;
}

bool srv_lease_exists(struct srv *s, int64_t id)
{
    return find(s->leases, s->n_leases, id) != NULL;
}

bool srv_lease_known(struct srv *s, int64_t id)
{
    for (size_t i = 0; i < s->n_mirror; i++) {
        if (s->lease_mirror[i].id == id) {
            return !s->lease_mirror[i].revoking;
        }
    }
    return false;
}

static void key_add(struct srv_lease *l, const uint8_t *k, size_t n)
{
    for (size_t i = 0; i < l->n_keys; i++) {
        if (l->keys[i].len == n && memcmp(l->keys[i].key, k, n) == 0) {
            return;
        }
    }
    if (l->n_keys == l->cap_keys) {
        size_t cap = l->cap_keys == 0 ? 8 : l->cap_keys * 2;
        struct lease_key *nk = realloc(l->keys, cap * sizeof *nk);
        if (nk == NULL) {
            return;
        }
        l->keys = nk;
        l->cap_keys = cap;
    }
    uint8_t *copy = malloc(n > 0 ? n : 1);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, k, n);
    l->keys[l->n_keys].key = copy;
    l->keys[l->n_keys].len = n;
    l->n_keys++;
}

static void key_remove(struct srv_lease *l, const uint8_t *k, size_t n)
{
    for (size_t i = 0; i < l->n_keys; i++) {
        if (l->keys[i].len == n && memcmp(l->keys[i].key, k, n) == 0) {
            free(l->keys[i].key);
            l->keys[i] = l->keys[--l->n_keys];
            return;
        }
    }
}

static void lease_free(struct srv_lease *l)
{
    for (size_t i = 0; i < l->n_keys; i++) {
        free(l->keys[i].key);
    }
    free(l->keys);
}

/* Tell the loop about a lease (granted: ttl > 0; gone: ttl == 0). */
static void post(struct srv *s, int64_t id, int64_t ttl)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_LEASE;
        d->watch_id = id;
        d->next_rev = ttl;
        srv_post_done(s, d);
    }
}

static int table_put(struct srv *s, int64_t id, int64_t ttl)
{
    if (s->n_leases == s->cap_leases) {
        size_t cap = s->cap_leases == 0 ? 16 : s->cap_leases * 2;
        struct srv_lease *v = realloc(s->leases, cap * sizeof *v);
        if (v == NULL) {
            return LSM_ENOMEM;
        }
        s->leases = v;
        s->cap_leases = cap;
    }
    struct srv_lease *l = &s->leases[s->n_leases++];
    memset(l, 0, sizeof *l);
    l->id = id;
    l->ttl = ttl;
    return 0;
}

/* The state record of lease @id: name "lease/" + ID (8 bytes, big-endian: name order is ID
 * order), value its granted TTL (8 bytes, little-endian). */
#define LEASE_REC_PREFIX "lease/"

void srv_lease_rec(int64_t id, int64_t ttl, bool del, struct srv_lease_rec *out)
{
    memcpy(out->name, LEASE_REC_PREFIX, 6);
    for (int i = 0; i < 8; i++) {
        out->name[6 + i] = (uint8_t)((uint64_t)id >> (56 - 8 * i));
    }
    wal_put_u64(out->val, (uint64_t)ttl);
    out->rec.name.data = out->name;
    out->rec.name.len = sizeof out->name;
    out->rec.value.data = out->val;
    out->rec.value.len = sizeof out->val;
    out->rec.del = del;
}

static int load_rec(void *arg, struct lsm_bytes name, struct lsm_bytes value)
{
    struct srv *s = arg;
    if (name.len != 14 || value.len != 8) {
        return SRV_EIO; /* not a record this build writes */
    }
    uint64_t id = 0;
    for (int i = 0; i < 8; i++) {
        id = id << 8 | ((const uint8_t *)name.data)[6 + i];
    }
    int64_t ttl = (int64_t)wal_get_u64(value.data);
    return find(s->leases, s->n_leases, (int64_t)id) == NULL ? table_put(s, (int64_t)id, ttl) : 0;
}

int srv_lease_load(struct srv *s, bool at_start, char *errmsg)
{
    if (!at_start) {
        post(s, 0, -1); /* the loop forgets every lease it knew */
    }
    for (size_t i = 0; i < s->n_leases; i++) {
        lease_free(&s->leases[i]);
    }
    s->n_leases = 0;
    struct lsm_bytes prefix = {LEASE_REC_PREFIX, 6};
    char err[256] = "";
    int rv = lsm_state_scan(s->lsm, prefix, load_rec, s, err);
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "read the leases from the store: %s",
                 err[0] != '\0' ? err : "bad lease record");
        return rv == LSM_ENOMEM || rv == SRV_ENOMEM ? SRV_ENOMEM : SRV_EIO;
    }
    if (s->n_leases == 0) {
        return 0;
    }
    /* Which keys each lease holds: one scan of the store (only when leases exist). */
    struct lsm_range_req all = {.key = {"\0", 1}, .range_end = {"\0", 1}, .keys_only = true};
    struct lsm_result res;
    memset(&res, 0, sizeof res);
    rv = lsm_range(s->lsm, &all, &res, err);
    if (rv != 0) {
        /* A lease without its keys would not delete them at revoke: this member's state would
         * differ from its peers'.  (LSM_ECORRUPT: a damaged table, named where LevelDB says.) */
        lsm_result_fini(&res);
        snprintf(errmsg, SRV_ERRMSG, "find the leased keys in the store: %s: %s", lsm_strerror(rv),
                 err);
        return rv == LSM_ENOMEM ? SRV_ENOMEM : SRV_EIO;
    }
    if (rv == 0) {
        for (size_t i = 0; i < res.u.range.n_kvs; i++) {
            const struct lsm_kv *kv = &res.u.range.kvs[i];
            struct srv_lease *l = kv->lease != 0 ? find(s->leases, s->n_leases, kv->lease) : NULL;
            if (l != NULL) {
                key_add(l, kv->key, kv->key_len);
            }
        }
    }
    lsm_result_fini(&res);
    for (size_t i = 0; i < s->n_leases; i++) {
        if (at_start) {
            srv_lease_on_done(s, s->leases[i].id, s->leases[i].ttl);
        } else {
            post(s, s->leases[i].id, s->leases[i].ttl);
        }
    }
    return 0;
}

int srv_lease_read_file(const char *path, struct srv_lease_rec **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT ? 0 : SRV_EIO;
    }
    int64_t id, ttl;
    size_t cap = 0;
    int rv = 0;
    while (rv == 0 && fscanf(f, "%" SCNd64 " %" SCNd64, &id, &ttl) == 2) {
        if (*n == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            struct srv_lease_rec *v = realloc(*out, cap * sizeof *v);
            if (v == NULL) {
                rv = SRV_ENOMEM;
                break;
            }
            *out = v;
        }
        srv_lease_rec(id, ttl, false, &(*out)[(*n)++]);
    }
    fclose(f);
    return rv;
}

void srv_lease_fini(struct srv *s)
{
    for (size_t i = 0; i < s->n_leases; i++) {
        lease_free(&s->leases[i]);
    }
    free(s->leases);
    s->leases = NULL;
    s->n_leases = 0;
    free(s->lease_mirror);
    s->lease_mirror = NULL;
}

/* Apply thread: a group's change events keep the key sets current. */
void srv_lease_on_events(struct srv *s, const struct lsm_event *evs, size_t n)
{
    if (s->n_leases == 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct lsm_event *e = &evs[i];
        int64_t before = e->has_prev ? e->prev_kv.lease : 0;
        int64_t after = e->type == LSM_EVENT_PUT ? e->kv.lease : 0;
        if (before == after) {
            continue;
        }
        struct srv_lease *l = before != 0 ? find(s->leases, s->n_leases, before) : NULL;
        if (l != NULL) {
            key_remove(l, e->kv.key, e->kv.key_len);
        }
        l = after != 0 ? find(s->leases, s->n_leases, after) : NULL;
        if (l != NULL) {
            key_add(l, e->kv.key, e->kv.key_len);
        }
    }
}

int srv_lease_grant(struct srv *s, int64_t id, int64_t ttl)
{
    int rv = table_put(s, id, ttl);
    if (rv == 0) {
        post(s, id, ttl);
    }
    return rv;
}

/* Apply thread: build the store op of a revoke (a txn deleting every key of the lease, one
 * revision), with arrays from @a.  Returns 0, or LSM_EKEYNOTFOUND when there is no such lease.
 * The table entry goes at srv_lease_revoked(), after the op is applied. */
/* Byte order of user keys (shorter first on a common prefix), as etcd sorts a lease's keys. */
static int key_cmp(const void *pa, const void *pb)
{
    const struct lease_key *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n > 0 ? memcmp(a->key, b->key, n) : 0;
    return c != 0 ? c : (a->len > b->len) - (a->len < b->len);
}

int srv_lease_revoke_op(struct srv *s, int64_t id, struct srv_arena *a, struct lsm_op *op)
{
    struct srv_lease *l = find(s->leases, s->n_leases, id);
    if (l == NULL) {
        return LSM_EKEYNOTFOUND;
    }
    struct lsm_op *dels = srv_arena_alloc(a, (l->n_keys > 0 ? l->n_keys : 1) * sizeof *dels);
    if (dels == NULL) {
        return LSM_ENOMEM;
    }
    /* In key order: the list's own order depends on each member's history (swap removals, a
     * rebuild by scan), and the deletes' sub-revisions must be the same on every member. */
    if (l->n_keys > 1) {
        qsort(l->keys, l->n_keys, sizeof *l->keys, key_cmp);
    }
    for (size_t i = 0; i < l->n_keys; i++) {
        dels[i].type = LSM_OP_DELETE_RANGE;
        dels[i].u.del.key.data = l->keys[i].key;
        dels[i].u.del.key.len = l->keys[i].len;
    }
    memset(op, 0, sizeof *op);
    op->type = LSM_OP_TXN;
    op->u.txn.success = dels;
    op->u.txn.n_success = l->n_keys;
    return 0;
}

void srv_lease_revoked(struct srv *s, int64_t id)
{
    for (size_t i = 0; i < s->n_leases; i++) {
        if (s->leases[i].id == id) {
            lease_free(&s->leases[i]);
            s->leases[i] = s->leases[--s->n_leases];
            post(s, id, 0);
            return;
        }
    }
}

/* ---- the loop's mirror: deadlines on the leader ---- */

static struct srv_lease_clock *clock_find(struct srv *s, int64_t id)
{
    for (size_t i = 0; i < s->n_mirror; i++) {
        if (s->lease_mirror[i].id == id) {
            return &s->lease_mirror[i];
        }
    }
    return NULL;
}

void srv_lease_on_done(struct srv *s, int64_t id, int64_t ttl)
{
    if (id == 0 && ttl < 0) {
        s->n_mirror = 0; /* a snapshot replaced the table */
        return;
    }
    struct srv_lease_clock *c = clock_find(s, id);
    if (ttl == 0) {
        if (c != NULL) {
            *c = s->lease_mirror[--s->n_mirror];
        }
        return;
    }
    if (c == NULL) {
        if (s->n_mirror == s->cap_mirror) {
            size_t cap = s->cap_mirror == 0 ? 16 : s->cap_mirror * 2;
            struct srv_lease_clock *v = realloc(s->lease_mirror, cap * sizeof *v);
            if (v == NULL) {
                return;
            }
            s->lease_mirror = v;
            s->cap_mirror = cap;
        }
        c = &s->lease_mirror[s->n_mirror++];
    }
    c->id = id;
    c->ttl = ttl;
    c->deadline_ms = srv_now_ms() + (uint64_t)ttl * 1000;
    c->revoking = false;
}

/* Became leader: every lease gets a full TTL from now (no lease expires because of an
 * election). */
void srv_lease_promote(struct srv *s)
{
    uint64_t now = srv_now_ms();
    for (size_t i = 0; i < s->n_mirror; i++) {
        s->lease_mirror[i].deadline_ms = now + (uint64_t)s->lease_mirror[i].ttl * 1000;
        s->lease_mirror[i].revoking = false;
    }
}

static int propose_lease(struct srv *s, uint64_t req_id, bool grant, int64_t id, int64_t ttl)
{
    Kvdb__LeaseGrantRequest g;
    Kvdb__LeaseRevokeRequest r;
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.id = req_id;
    ir.member = s->cfg.member_id;
    if (grant) {
        kvdb__lease_grant_request__init(&g);
        g.id = id;
        g.ttl = ttl;
        ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT;
        ir.lease_grant = &g;
    } else {
        kvdb__lease_revoke_request__init(&r);
        r.id = id;
        ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE;
        ir.lease_revoke = &r;
    }
    uint8_t buf[64]; /* integers only: at most 46 bytes */
    assert(kvdb__internal_request__get_packed_size(&ir) <= sizeof buf);
    size_t n = kvdb__internal_request__pack(&ir, buf);
    return srv_node_propose(s, buf, n, req_id);
}

/* A client's revoke: proposed here when we lead, else forwarded to the leader; answered when
 * its entry applies on this member (the entry names us).  Notes the leader it went through, so
 * that a leader change proposes it again. */
static int propose_revoke(struct srv *s, struct srv_pending *p)
{
    p->via = s->leader;
    p->retry_ms = srv_now_ms() + s->cfg.election_ms;
    return propose_lease(s, p->req_id, false, (int64_t)p->arg_id, 0);
}

/* A revoke's entry is lost when the leader it reached loses its leadership (isolated, paused,
 * killed) before replicating it, or drops it (a leadership transfer); it would then wait for its
 * request timeout and answer an unknown outcome.  Proposing it again is safe: the second copy
 * to apply finds the lease gone and applies as nothing, and only the first answers the client.
 * (A copy still in flight when the first applies could revoke a lease granted again under the
 * same ID in between; etcd's client, which retries revokes, has the same window.) */
static void retry_revoke(struct srv *s, struct srv_pending *p)
{
    if (p->method != KVDB__METHOD__METHOD_LEASE_REVOKE || s->leader == 0) {
        return;
    }
    if (p->via == s->leader && srv_now_ms() < p->retry_ms) {
        return; /* the same leader has it, and not for long yet */
    }
    propose_revoke(s, p); /* on failure (no leader, out of memory) the next sweep tries again */
}

void srv_lease_retry_revokes(struct srv *s)
{
    srv_pending_each(s, retry_revoke);
}

/* Every sweep: client revokes waiting too long go again; the leader revokes what expired. */
void srv_lease_tick(struct srv *s)
{
    srv_lease_retry_revokes(s);
    if (s->role != RAFT_LEADER) {
        return;
    }
    uint64_t now = srv_now_ms();
    for (size_t i = 0; i < s->n_mirror; i++) {
        struct srv_lease_clock *c = &s->lease_mirror[i];
        if (!c->revoking && c->deadline_ms <= now && propose_lease(s, 0, false, c->id, 0) == 0) {
            c->revoking = true; /* the applied revoke removes it */
            srv_log(SRV_LOG_INFO, "lease", "lease %" PRId64 " expired: revoking", c->id);
        }
    }
}

/* ---- client methods ---- */

static void reply_msg(struct srv_conn *c, const Kvdb__Frame *f, const ProtobufCMessage *m)
{
    srv_conn_reply_msg(c, f->id, f->method, m);
}

static void fail(struct srv_conn *c, const Kvdb__Frame *f, Kvdb__ErrorCode code, const char *msg)
{
    srv_conn_reply(c, f->id, f->method, code, msg, NULL, 0);
}

/* A lease ID for a grant that names none: unused among the leases this leader knows (etcd's
 * leader draws again on a collision too).  Mixed with the member ID, because members started in
 * the same millisecond count request IDs alike, and their grants drew the same IDs. */
static int64_t new_lease_id(struct srv *s)
{
    for (;;) {
        uint64_t x = (s->next_req_id++ ^ s->cfg.member_id) * 0x9e3779b97f4a7c15ull;
        int64_t id = (int64_t)(x >> 1); /* positive, as etcd's IDs */
        if (id != 0 && clock_find(s, id) == NULL) {
            return id;
        }
    }
}

/* Any member takes a revoke, as in etcd (it goes through the log): no front check of the
 * lease, whose table on this member may lag the log (a new leader that has not applied a grant
 * yet); the apply answers "not found" deterministically. */
static void revoke_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    if (!srv_alarm_admit(c, f)) {
        return; /* CORRUPT refuses revokes (NOSPACE lets them free space) */
    }
    if (s->leader == 0) {
        fail(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "no leader");
        return;
    }
    Kvdb__LeaseRevokeRequest *r =
        kvdb__lease_revoke_request__unpack(NULL, f->body.len, f->body.data);
    if (r == NULL) {
        fail(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT, "malformed LeaseRevokeRequest");
        return;
    }
    int64_t id = r->id;
    kvdb__lease_revoke_request__free_unpacked(r, NULL);
    struct srv_pending *p = srv_pending_for(c, f);
    if (p == NULL) {
        fail(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->arg_id = (uint64_t)id;
    if (propose_revoke(s, p) != 0) {
        srv_pending_release(s, srv_pending_take(s, p->req_id));
        fail(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "no leader");
    }
}

void srv_lease_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    if (f->method == KVDB__METHOD__METHOD_LEASE_REVOKE) {
        revoke_request(c, f);
        return;
    }
    if (s->role != RAFT_LEADER && f->method != KVDB__METHOD__METHOD_LEASE_LEASES) {
        /* Deadlines live on the leader (etcd forwards these to it); the client fails over. */
        fail(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        return;
    }
    Kvdb__ResponseHeader h;
    srv_header(s, &h, atomic_load(&s->term_pub));
    switch (f->method) {
    case KVDB__METHOD__METHOD_LEASE_GRANT: {
        if (!srv_alarm_admit(c, f)) {
            return; /* NOSPACE and CORRUPT refuse grants */
        }
        int64_t id = 0, ttl = 0;
        Kvdb__LeaseGrantRequest *r =
            kvdb__lease_grant_request__unpack(NULL, f->body.len, f->body.data);
        if (r == NULL || r->ttl <= 0 || r->id < 0) {
            fail(c, f, KVDB__ERROR_CODE__INVALID_ARGUMENT, "lease TTL must be positive");
            if (r != NULL) {
                kvdb__lease_grant_request__free_unpacked(r, NULL);
            }
            return;
        }
        id = r->id;
        /* etcd's minimum TTL: long enough to survive an election. */
        int64_t min_ttl = (int64_t)((3ull * s->cfg.election_ms / 2 + 999) / 1000);
        ttl = r->ttl < min_ttl ? min_ttl : r->ttl;
        kvdb__lease_grant_request__free_unpacked(r, NULL);
        if (id == 0) {
            id = new_lease_id(s);
        }
        if (clock_find(s, id) != NULL) {
            fail(c, f, KVDB__ERROR_CODE__FAILED_PRECONDITION, "lease already exists");
            return;
        }
        struct srv_pending *p = srv_pending_for(c, f);
        if (p == NULL) {
            fail(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        if (propose_lease(s, p->req_id, true, id, ttl) != 0) {
            srv_pending_release(s, srv_pending_take(s, p->req_id));
            fail(c, f, KVDB__ERROR_CODE__UNAVAILABLE, "not the leader");
        }
        return;
    }
    case KVDB__METHOD__METHOD_LEASE_KEEP_ALIVE:
    case KVDB__METHOD__METHOD_LEASE_TIME_TO_LIVE: {
        bool ka = f->method == KVDB__METHOD__METHOD_LEASE_KEEP_ALIVE;
        int64_t id = 0;
        if (ka) {
            Kvdb__LeaseKeepAliveRequest *r =
                kvdb__lease_keep_alive_request__unpack(NULL, f->body.len, f->body.data);
            id = r != NULL ? r->id : 0;
            if (r != NULL) {
                kvdb__lease_keep_alive_request__free_unpacked(r, NULL);
            }
        } else {
            Kvdb__LeaseTimeToLiveRequest *r =
                kvdb__lease_time_to_live_request__unpack(NULL, f->body.len, f->body.data);
            id = r != NULL ? r->id : 0;
            if (r != NULL) {
                kvdb__lease_time_to_live_request__free_unpacked(r, NULL);
            }
        }
        struct srv_lease_clock *lc = clock_find(s, id);
        if (lc == NULL || lc->revoking) {
            if (ka) {
                fail(c, f, KVDB__ERROR_CODE__NOT_FOUND, "requested lease not found");
                return;
            }
            Kvdb__LeaseTimeToLiveResponse t;
            kvdb__lease_time_to_live_response__init(&t);
            t.header = &h;
            t.id = id;
            t.ttl = -1;
            reply_msg(c, f, &t.base);
            return;
        }
        uint64_t now = srv_now_ms();
        if (ka) {
            lc->deadline_ms = now + (uint64_t)lc->ttl * 1000;
            Kvdb__LeaseKeepAliveResponse r;
            kvdb__lease_keep_alive_response__init(&r);
            r.header = &h;
            r.id = id;
            r.ttl = lc->ttl;
            reply_msg(c, f, &r.base);
        } else {
            Kvdb__LeaseTimeToLiveResponse t;
            kvdb__lease_time_to_live_response__init(&t);
            t.header = &h;
            t.id = id;
            t.ttl = lc->deadline_ms > now ? (int64_t)((lc->deadline_ms - now + 999) / 1000) : 0;
            t.grantedttl = lc->ttl;
            reply_msg(c, f, &t.base);
        }
        return;
    }
    case KVDB__METHOD__METHOD_LEASE_LEASES: {
        Kvdb__LeaseStatus *st = calloc(s->n_mirror + 1, sizeof *st);
        Kvdb__LeaseStatus **stp = calloc(s->n_mirror + 1, sizeof *stp);
        if (st == NULL || stp == NULL) {
            free(st);
            free(stp);
            fail(c, f, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        for (size_t i = 0; i < s->n_mirror; i++) {
            kvdb__lease_status__init(&st[i]);
            st[i].id = s->lease_mirror[i].id;
            stp[i] = &st[i];
        }
        Kvdb__LeaseLeasesResponse r;
        kvdb__lease_leases_response__init(&r);
        r.header = &h;
        r.leases = stp;
        r.n_leases = s->n_mirror;
        reply_msg(c, f, &r.base);
        free(st);
        free(stp);
        return;
    }
    default:
        fail(c, f, KVDB__ERROR_CODE__UNIMPLEMENTED, "unknown lease method");
    }
}

/* The apply thread's reply to a grant or revoke proposed here. */
uint8_t *srv_lease_reply(struct srv *s, const Kvdb__InternalRequest *ir, uint64_t term, size_t *len)
{
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = s->cfg.cluster_id;
    h.member_id = s->cfg.member_id;
    h.raft_term = term;
    h.revision = atomic_load(&s->revision);
    uint8_t *buf;
    if (ir->request_case == KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT) {
        Kvdb__LeaseGrantResponse r;
        kvdb__lease_grant_response__init(&r);
        r.header = &h;
        r.id = ir->lease_grant->id;
        r.ttl = ir->lease_grant->ttl;
        *len = kvdb__lease_grant_response__get_packed_size(&r);
        buf = malloc(*len > 0 ? *len : 1);
        if (buf != NULL) {
            kvdb__lease_grant_response__pack(&r, buf);
        }
    } else {
        Kvdb__LeaseRevokeResponse r;
        kvdb__lease_revoke_response__init(&r);
        r.header = &h;
        *len = kvdb__lease_revoke_response__get_packed_size(&r);
        buf = malloc(*len > 0 ? *len : 1);
        if (buf != NULL) {
            kvdb__lease_revoke_response__pack(&r, buf);
        }
    }
    return buf;
}
