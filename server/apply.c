/* The apply thread (committed entries -> one LSM write batch per group), the job queues it
 * shares with the read thread (read.c), and the done queue: both threads post finished requests
 * back to the loop through s->done_* and the ev_async watcher. */
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/kvconv.h"
#include "server/srv_int.h"

/* ---- queues ---- */

static void queue_init(struct srv_queue *q)
{
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->head = q->tail = NULL;
    q->stop = false;
}

void srv_queue_push(struct srv_queue *q, struct srv_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail != NULL) {
        q->tail->next = j;
    } else {
        q->head = j;
    }
    q->tail = j;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

/* The apply queue: take every queued job once no apply is running, and mark one running.
 * NULL once stopped and drained. */
static struct srv_job *apply_take(struct srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while ((q->head == NULL || q->busy) && !q->stop) {
        pthread_cond_wait(&q->cond, &q->mu);
    }
    struct srv_job *j = q->busy ? NULL : q->head;
    q->head = q->tail = NULL;
    q->busy = j != NULL;
    pthread_mutex_unlock(&q->mu);
    return j;
}

/* Claim the apply side for an inline apply: only when nothing is queued or running, so
 * entries still apply in log order. */
static bool apply_claim_idle(struct srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    bool ok = q->head == NULL && !q->busy && !q->stop;
    q->busy = ok || q->busy;
    pthread_mutex_unlock(&q->mu);
    return ok;
}

static void apply_release(struct srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->busy = false;
    if (q->head != NULL) {
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->mu);
}

/* Take every queued job (a list), waiting for one; NULL once stopped and drained. */
struct srv_job *srv_queue_take_all(struct srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (q->head == NULL && !q->stop) {
        pthread_cond_wait(&q->cond, &q->mu);
    }
    struct srv_job *j = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return j;
}

void srv_post_done(struct srv *s, struct srv_done *d)
{
    d->next = NULL;
    pthread_mutex_lock(&s->done_mu);
    if (s->done_tail != NULL) {
        s->done_tail->next = d;
    } else {
        s->done_head = d;
    }
    s->done_tail = d;
    pthread_mutex_unlock(&s->done_mu);
    ev_async_send(s->loop, &s->wake);
}

struct srv_done *srv_make_done(const struct lsm_result *res, int err, const Kvdb__ResponseHeader *h)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return NULL;
    }
    const char *msg = NULL;
    if (err == 0 && res != NULL) {
        err = res->err;
    }
    d->code = srv_conv_error(err, &msg);
    if (err != 0) {
        d->errmsg = strdup(msg);
        return d;
    }
    if (srv_conv_pack(res, h, &d->body, &d->len) != 0) {
        d->code = KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
        d->errmsg = strdup("out of memory packing the response");
    }
    return d;
}

/* ---- apply ---- */

#define GROUP_CONFS 8

struct apply_group
{
    uint64_t conf_index[GROUP_CONFS]; /* configuration entries of the group, in order */
    struct raft_conf confs[GROUP_CONFS];
    size_t n_confs;
    struct lsm_entry *ents;
    struct lsm_op *ops;
    Kvdb__InternalRequest **irs;
    int *errs; /* per entry: an error decided here (lease not found) */
    size_t n;
    size_t cap;
    struct srv_arena arena;
    bool on_loop; /* the loop thread's group: never takes a snapshot (it would stall the loop) */
    uint64_t applied; /* the store's applied index before this group: entries at or below it are
                       * skipped by the store, so they change nothing here either */

    /* The change of a state entry (state_entry(): such a group holds that entry alone): the
     * record it writes in the batch, and what becomes the apply thread's state once the batch
     * applied (finish_state). */
    struct lsm_state_rec rec;
    struct srv_lease_rec lease_rec;
    uint8_t *state_buf; /* auth: the packed state; registry changes: the encoded registry */
    size_t state_len;
    bool members_next; /* members/n_members: the registry after the entry */
    struct srv_member members[SRV_MAX_MEMBERS];
    size_t n_members;
    struct srv_member member; /* MemberAttr: the member it sets */
};

#define REC_AUTH "auth"
#define REC_MEMBERS "members"
#define REC_ALARMS "alarms"

static int group_reserve(struct apply_group *g, size_t n)
{
    if (n <= g->cap) {
        return 0;
    }
    struct lsm_entry *e = realloc(g->ents, n * sizeof *e);
    if (e != NULL) {
        g->ents = e;
    }
    struct lsm_op *o = realloc(g->ops, n * sizeof *o);
    if (o != NULL) {
        g->ops = o;
    }
    Kvdb__InternalRequest **r = realloc(g->irs, n * sizeof *r);
    if (r != NULL) {
        g->irs = r;
    }
    int *errs = realloc(g->errs, n * sizeof *errs);
    if (errs != NULL) {
        g->errs = errs;
    }
    if (e == NULL || o == NULL || r == NULL || errs == NULL) {
        return LSM_ENOMEM;
    }
    g->cap = n;
    return 0;
}

/* The request of a normal entry, or NULL (no-ops, configuration entries, undecodable bytes). */
static Kvdb__InternalRequest *decode_entry(const struct srv_job *j, const struct srv_job_ent *e)
{
    if (e->type != RAFT_ENTRY_NORMAL || e->len == 0) {
        return NULL;
    }
    Kvdb__InternalRequest *ir =
        kvdb__internal_request__unpack(NULL, e->len, (const uint8_t *)j->buf + e->off);
    if (ir == NULL) {
        /* Every member decodes the same bytes and skips them the same way. */
        srv_log(SRV_LOG_WARN, "apply", "entry %llu: undecodable request, applied as a no-op",
                (unsigned long long)e->index);
    }
    return ir;
}

/* Entries that change the member's replicated state beside the keyspace (membership, auth,
 * leases) are applied in a group of their own, so that every entry sees exactly the state the
 * entries before it left, however the log was cut into groups (a member catching up applies the
 * log in bigger groups than the leader did: a grant and a put attached to it in one group once
 * gave a different answer there). */
static bool state_entry(const struct srv_job_ent *e, const Kvdb__InternalRequest *ir)
{
    if (e->type == RAFT_ENTRY_CONF) {
        return true;
    }
    if (ir == NULL) {
        return false;
    }
    switch (ir->request_case) {
    case KVDB__INTERNAL_REQUEST__REQUEST_MEMBER_ATTR:
    case KVDB__INTERNAL_REQUEST__REQUEST_AUTH:
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
    case KVDB__INTERNAL_REQUEST__REQUEST_ALARM:
        return true;
    default:
        return false;
    }
}

static void set_rec(struct apply_group *g, size_t i, const char *name, bool take_buf)
{
    g->rec.name.data = name;
    g->rec.name.len = strlen(name);
    g->rec.value.data = take_buf ? g->state_buf : NULL;
    g->rec.value.len = take_buf ? g->state_len : 0;
    g->rec.del = false;
    g->ents[i].state = &g->rec;
    g->ents[i].n_state = 1;
}

/* The registry change @g->members as the "members" record of entry @i. */
static void members_rec(struct apply_group *g, size_t i)
{
    g->members_next = true;
    g->state_buf = (uint8_t *)srv_members_encode(g->members, g->n_members, &g->state_len);
    if (g->state_buf == NULL) {
        g->errs[i] = LSM_ENOMEM; /* flush_group fails the group: nothing applied */
        return;
    }
    set_rec(g, i, REC_MEMBERS, true);
}

static void conf_entry(struct srv *s, struct apply_group *g, size_t i, const void *buf, size_t len)
{
    struct raft_conf c;
    if (raft_conf_decode(buf, len, &c) != 0) {
        return;
    }
    if (g->n_confs < GROUP_CONFS) {
        g->conf_index[g->n_confs] = g->ents[i].index;
        g->confs[g->n_confs++] = c;
    }
    if (srv_members_next_conf(s, &s->apply_conf, &c, g->members, &g->n_members)) {
        members_rec(g, i);
    }
}

/* The record of state entry @i (request @ir), and its outcome where it is decided here. */
static void state_add(struct srv *s, struct apply_group *g, size_t i, Kvdb__InternalRequest *ir)
{
    switch (ir->request_case) {
    case KVDB__INTERNAL_REQUEST__REQUEST_MEMBER_ATTR:
        if (srv_members_next_attr(s, ir->member_attr, g->members, &g->n_members, &g->member)) {
            members_rec(g, i);
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_AUTH:
        g->state_buf = srv_auth_next(s, ir->auth, &g->state_len);
        if (g->state_buf != NULL) {
            set_rec(g, i, REC_AUTH, true);
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_ALARM:
        if (srv_alarm_next(s, ir->alarm, &g->state_buf, &g->state_len) != 0) {
            g->errs[i] = LSM_ENOMEM; /* flush_group fails the group: nothing applied */
        } else if (g->state_buf != NULL) {
            set_rec(g, i, REC_ALARMS, true);
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
        if ((g->errs[i] = srv_alarm_apply_check(s, ir)) != 0) {
            return; /* NOSPACE or CORRUPT, as on every member */
        }
        if (srv_lease_exists(s, ir->lease_grant->id)) {
            g->errs[i] = LSM_EEXIST;
            return;
        }
        srv_lease_rec(ir->lease_grant->id, ir->lease_grant->ttl, false, &g->lease_rec);
        g->ents[i].state = &g->lease_rec.rec;
        g->ents[i].n_state = 1;
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
        if ((g->errs[i] = srv_alarm_apply_check(s, ir)) != 0) {
            return; /* CORRUPT */
        }
        /* One txn deleting every key of the lease, and the lease's record. */
        g->errs[i] = srv_lease_revoke_op(s, ir->lease_revoke->id, &g->arena, &g->ops[i]);
        if (g->errs[i] != 0) {
            g->ops[i].type = LSM_OP_NOOP;
            return;
        }
        srv_lease_rec(ir->lease_revoke->id, 0, true, &g->lease_rec);
        g->ents[i].state = &g->lease_rec.rec;
        g->ents[i].n_state = 1;
        return;
    default:
        return;
    }
}

/* Add one entry (its request already decoded into @ir, owned by the group from now on). */
static void group_add(struct srv *s,
                      struct apply_group *g,
                      const struct srv_job *j,
                      const struct srv_job_ent *e,
                      Kvdb__InternalRequest *ir)
{
    size_t i = g->n++;
    memset(&g->ents[i], 0, sizeof g->ents[i]);
    g->ents[i].index = e->index;
    g->ents[i].term = e->term;
    g->ents[i].req = &g->ops[i];
    g->irs[i] = ir;
    g->errs[i] = 0;
    memset(&g->ops[i], 0, sizeof g->ops[i]);
    g->ops[i].type = LSM_OP_NOOP;
    if (e->index <= g->applied) {
        return; /* replayed after a restart: the store skips it, nothing else happens either */
    }
    if (e->type == RAFT_ENTRY_CONF) {
        conf_entry(s, g, i, j->buf + e->off, e->len);
        return;
    }
    if (ir == NULL) {
        return; /* leader no-ops only advance the applied index */
    }
    if (state_entry(e, ir)) {
        state_add(s, g, i, ir);
        return;
    }
    if ((g->errs[i] = srv_alarm_apply_check(s, ir)) != 0) {
        return; /* refused by an alarm: decided from replicated state, so on every member */
    }
    if (ir->request_case == KVDB__INTERNAL_REQUEST__REQUEST_HASH_REPORT) {
        return; /* no store operation: srv_hash_apply after the group */
    }
    if (ir->request_case == KVDB__INTERNAL_REQUEST__REQUEST_PUT && ir->put->lease != 0 &&
        !srv_lease_exists(s, ir->put->lease)) {
        g->errs[i] = LSM_EKEYNOTFOUND; /* the lease was revoked after the check */
        return;
    }
    if (srv_conv_internal(ir, &g->arena, &g->ops[i]) != 0) {
        srv_log(SRV_LOG_WARN, "apply", "entry %llu: invalid request, applied as a no-op",
                (unsigned long long)e->index);
        g->ops[i].type = LSM_OP_NOOP;
    }
}

static void group_reset(struct apply_group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->irs[i] != NULL) {
            kvdb__internal_request__free_unpacked(g->irs[i], NULL);
        }
    }
    g->n = 0;
    g->n_confs = 0;
    srv_arena_free(&g->arena);
    free(g->state_buf);
    g->state_buf = NULL;
    g->state_len = 0;
    g->members_next = false;
}

static void publish_applied(struct srv *s, const struct lsm_apply_out *out)
{
    pthread_mutex_lock(&s->applied_mu);
    s->applied_index = out->applied_index;
    pthread_cond_broadcast(&s->applied_cond);
    pthread_mutex_unlock(&s->applied_mu);
    atomic_store(&s->revision, out->revision);
    atomic_store(&s->applied_pub, out->applied_index);
}

static void post_reply(struct srv *s,
                       uint64_t req_id,
                       uint8_t *body,
                       size_t len,
                       Kvdb__ErrorCode code,
                       const char *msg)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        free(body);
        return;
    }
    d->req_id = req_id;
    d->body = body;
    d->len = len;
    d->code = code;
    d->errmsg = msg != NULL ? strdup(msg) : NULL;
    srv_post_done(s, d);
}

/* The effects of entry @i that are not store operations, and its reply when proposed here. */
static void finish_entry(struct srv *s,
                         struct apply_group *g,
                         size_t i,
                         const struct lsm_result *res)
{
    const Kvdb__InternalRequest *ir = g->irs[i];
    if (ir == NULL || res->skipped) {
        return;
    }
    bool mine = ir->member == s->cfg.member_id && ir->id != 0;
    uint64_t term = g->ents[i].term;
    size_t len = 0;
    if (g->errs[i] == SRV_ENOSPACE || g->errs[i] == SRV_ECORRUPT) {
        if (mine) {
            Kvdb__ErrorCode code;
            const char *msg;
            srv_alarm_error(g->errs[i], &code, &msg);
            post_reply(s, ir->id, NULL, 0, code, msg);
        }
        return;
    }
    switch (ir->request_case) {
    case KVDB__INTERNAL_REQUEST__REQUEST_ALARM:
        if (mine) {
            uint8_t *body = srv_alarm_reply(s, ir->alarm, term, &len);
            post_reply(s, ir->id, body, len,
                       body != NULL ? KVDB__ERROR_CODE__OK : KVDB__ERROR_CODE__RESOURCE_EXHAUSTED,
                       body != NULL ? NULL : "out of memory");
        }
        if (g->state_buf != NULL) {
            srv_alarm_install(s, g->state_buf, g->state_len, false);
            g->state_buf = NULL;
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_AUTH:
        if (g->state_buf != NULL) {
            srv_auth_install(s, g->state_buf, g->state_len);
            g->state_buf = NULL;
        }
        if (mine) {
            uint8_t *body = srv_auth_change_reply(s, term, &len);
            post_reply(s, ir->id, body, len, KVDB__ERROR_CODE__OK, NULL);
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_HASH_REPORT:
        srv_hash_apply(s, ir->hash_report);
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_MEMBER_ATTR:
        if (g->members_next) {
            srv_members_commit_attr(s, g->members, g->n_members, &g->member, mine ? ir->id : 0);
        }
        return;
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT: {
        int rv = g->errs[i] != 0 ? g->errs[i]
                                 : srv_lease_grant(s, ir->lease_grant->id, ir->lease_grant->ttl);
        if (mine && rv == 0) {
            uint8_t *body = srv_lease_reply(s, ir, term, &len);
            post_reply(s, ir->id, body, len, KVDB__ERROR_CODE__OK, NULL);
        } else if (mine) {
            post_reply(s, ir->id, NULL, 0, KVDB__ERROR_CODE__FAILED_PRECONDITION,
                       "lease already exists");
        }
        return;
    }
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
        if (g->errs[i] == 0) {
            srv_lease_revoked(s, ir->lease_revoke->id);
        }
        if (mine && g->errs[i] == 0) {
            uint8_t *body = srv_lease_reply(s, ir, term, &len);
            post_reply(s, ir->id, body, len, KVDB__ERROR_CODE__OK, NULL);
        } else if (mine) {
            post_reply(s, ir->id, NULL, 0, KVDB__ERROR_CODE__NOT_FOUND,
                       "requested lease not found");
        }
        return;
    default:
        break;
    }
    if (!mine) {
        return;
    }
    if (g->errs[i] == LSM_EKEYNOTFOUND) {
        post_reply(s, ir->id, NULL, 0, KVDB__ERROR_CODE__NOT_FOUND, "requested lease not found");
        return;
    }
    Kvdb__ResponseHeader h;
    srv_header(s, &h, term);
    struct srv_done *d = srv_make_done(res, 0, &h);
    if (d != NULL) {
        d->req_id = ir->id;
        srv_post_done(s, d);
    }
}

/* Apply the group as one LSM batch (one LevelDB write), then its other effects and replies. */
static int flush_group(struct srv *s, struct apply_group *g)
{
    if (g->n == 0) {
        return 0;
    }
    struct lsm_apply_out out;
    memset(&out, 0, sizeof out);
    if (SRV_FAILPOINT(s->cfg.member_id, "apply") == SRV_FP_ERROR) {
        group_reset(g);
        return LSM_EIO; /* as if the store failed: the member stops */
    }
    for (size_t i = 0; i < g->n; i++) {
        if (g->errs[i] == LSM_ENOMEM) {
            group_reset(g);
            return LSM_ENOMEM; /* a state record could not be built: nothing applied */
        }
    }
    uint64_t t0 = srv_now_us();
    int rv = lsm_apply(s->lsm, g->ents, g->n, &out);
    srv_hist_observe(&s->metrics.apply, srv_now_us() - t0);
    if (rv != 0) {
        group_reset(g);
        return rv;
    }
    /* Lease key sets first: a revoke later in the log must see these changes. */
    srv_lease_on_events(s, out.events, out.n_events);
    for (size_t i = 0; i < g->n; i++) {
        finish_entry(s, g, i, &out.results[i]);
    }
    publish_applied(s, &out);
    /* After publishing the revision (watch.c's create() relies on this order). */
    if (out.n_events > 0 && atomic_load(&s->n_watchers) > 0) {
        struct srv_done *d = calloc(1, sizeof *d);
        if (d != NULL) {
            d->kind = SRV_DONE_EVENTS;
            d->events = out.events;
            d->n_events = out.n_events;
            out.events = NULL;
            out.n_events = 0;
            srv_post_done(s, d);
        }
    }
    /* The registry before the configuration reaches the loop: the loop's reconcile_peers
     * tells removed members so by the registry's marks. */
    if (g->n_confs > 0 && g->members_next) {
        srv_members_commit_conf(s, g->members, g->n_members);
    }
    for (size_t i = 0; i < g->n_confs; i++) {
        /* The membership as of the applied index, for the snapshots taken here. */
        s->apply_conf = g->confs[i];
        struct srv_done *d = calloc(1, sizeof *d);
        if (d != NULL) {
            d->kind = SRV_DONE_CONF;
            d->snap.index = g->conf_index[i];
            d->snap.conf = g->confs[i];
            srv_post_done(s, d);
        }
    }
    g->n_confs = 0;
    uint64_t applied = out.applied_index;
    g->applied = applied;
    lsm_apply_out_fini(&out);
    group_reset(g);
    if (!g->on_loop) {
        srv_snap_after_apply(s, applied); /* else the next group found due goes to the thread */
    }
    return 0;
}

/* Apply every queued job: one LSM group (one LevelDB write batch) for all of them, cut around
 * each state entry (state_entry()). */
static int apply_jobs(struct srv *s, struct apply_group *g, struct srv_job *jobs)
{
    size_t n = 0;
    for (struct srv_job *j = jobs; j != NULL; j = j->next) {
        n += j->n_ents;
    }
    if (group_reserve(g, n) != 0) {
        return LSM_ENOMEM;
    }
    struct lsm_status st;
    lsm_status_get(s->lsm, &st);
    g->applied = st.applied_index;
    for (struct srv_job *j = jobs; j != NULL; j = j->next) {
        for (size_t i = 0; i < j->n_ents; i++) {
            Kvdb__InternalRequest *ir = decode_entry(j, &j->ents[i]);
            bool alone = state_entry(&j->ents[i], ir);
            int rv = alone && g->n > 0 ? flush_group(s, g) : 0;
            if (rv != 0) {
                if (ir != NULL) {
                    kvdb__internal_request__free_unpacked(ir, NULL);
                }
                return rv;
            }
            group_add(s, g, j, &j->ents[i], ir);
            if (alone && (rv = flush_group(s, g)) != 0) {
                return rv;
            }
        }
    }
    return flush_group(s, g);
}

static void free_job(struct srv_job *j);

static void free_jobs(struct srv_job *j)
{
    while (j != NULL) {
        struct srv_job *next = j->next;
        free_job(j);
        j = next;
    }
}

/* Also closes the client connection of a snapshot job that never ran (stream_to_client takes
 * it over when it runs). */
static void free_job(struct srv_job *j)
{
    if (j->type == SRV_JOB_SNAPSHOT && j->fd >= 0) {
        close(j->fd);
    }
    free(j->ents);
    free(j->buf);
    free(j->dir);
    free(j);
}

static void run_install(struct srv *s, struct srv_job *j)
{
    bool fatal = false;
    int rv = srv_snap_install(s, j->dir, j->msg.snap.index, &fatal);
    struct lsm_status st;
    pthread_rwlock_rdlock(&s->lsm_lock);
    if (s->lsm != NULL) {
        lsm_status_get(s->lsm, &st);
        struct lsm_apply_out out = {.applied_index = st.applied_index, .revision = st.revision};
        publish_applied(s, &out);
    }
    pthread_rwlock_unlock(&s->lsm_lock);
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        /* A failed install leaves the old store: the leader sends the snapshot again.  Only a
         * failed swap (no store left) stops the member. */
        d->kind = rv == 0 ? SRV_DONE_SNAP_INSTALLED : fatal ? SRV_DONE_FATAL : SRV_DONE_SNAP_FAILED;
        d->ok = rv == 0;
        d->msg = j->msg;
        srv_post_done(s, d);
    }
}

/* Apply the jobs in order: runs of apply jobs as one LSM group each, installs in between. */
static int run_jobs(struct srv *s, struct apply_group *g, struct srv_job *jobs)
{
    while (jobs != NULL) {
        struct srv_job *end = jobs;
        while (end->next != NULL && end->next->type == SRV_JOB_APPLY &&
               jobs->type == SRV_JOB_APPLY) {
            end = end->next;
        }
        struct srv_job *rest = end->next;
        end->next = NULL;
        int rv = 0;
        if (jobs->type == SRV_JOB_SNAPSHOT) {
            srv_snap_stream_to_client(s, jobs->fd, jobs->frame_id);
            jobs->fd = -1;
        } else if (jobs->type == SRV_JOB_INSTALL) {
            run_install(s, jobs);
        } else {
            rv = apply_jobs(s, g, jobs);
        }
        while (jobs != NULL) {
            struct srv_job *next = jobs->next;
            free_job(jobs);
            jobs = next;
        }
        if (rv != 0) {
            while (rest != NULL) {
                struct srv_job *next = rest->next;
                free_job(rest);
                rest = next;
            }
            return rv;
        }
        jobs = rest;
    }
    return 0;
}

/* The store can no longer follow the log: stop the member (the loop reads this). */
static void apply_failed(struct srv *s, int rv)
{
    atomic_store(&s->apply_dead, true);
    if (rv == LSM_ECORRUPT) {
        srv_store_corrupt(s, "an apply", lsm_errmsg(s->lsm)); /* stops the member */
        return;
    }
    srv_log(SRV_LOG_ERROR, "apply", "apply failed: %s: %s", lsm_strerror(rv), lsm_errmsg(s->lsm));
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_FATAL;
        srv_post_done(s, d);
    }
}

static void group_free(struct apply_group *g)
{
    if (g != NULL) {
        free(g->ents);
        free(g->ops);
        free(g->irs);
        free(g->errs);
    }
}

static void *apply_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-apply");
    struct srv *s = arg;
    struct apply_group g;
    memset(&g, 0, sizeof g);
    struct srv_job *jobs;
    while ((jobs = apply_take(&s->applyq)) != NULL) {
        int rv = 0;
        if (atomic_load(&s->apply_dead)) {
            free_jobs(jobs);
        } else {
            rv = run_jobs(s, &g, jobs);
        }
        apply_release(&s->applyq);
        if (rv != 0) {
            apply_failed(s, rv);
            break;
        }
    }
    group_free(&g);
    return NULL;
}

struct bg
{
    struct srv *s;
    void *(*fn)(void *);
    void *arg;
};

static void *bg_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-bg");
    struct bg b = *(struct bg *)arg;
    free(arg);
    b.fn(b.arg);
    atomic_fetch_sub(&b.s->bg_threads, 1);
    return NULL;
}

int srv_bg_start(struct srv *s, void *(*fn)(void *), void *arg)
{
    if (atomic_load(&s->bg_stop)) {
        return SRV_EIO; /* closing: srv_bg_wait has counted the threads already */
    }
    struct bg *b = malloc(sizeof *b);
    if (b == NULL) {
        return SRV_ENOMEM;
    }
    b->s = s;
    b->fn = fn;
    b->arg = arg;
    atomic_fetch_add(&s->bg_threads, 1);
    pthread_t t;
    if (pthread_create(&t, NULL, bg_main, b) != 0) {
        atomic_fetch_sub(&s->bg_threads, 1);
        free(b);
        return SRV_ENOMEM;
    }
    pthread_detach(t);
    return 0;
}

void srv_bg_wait(struct srv *s)
{
    /* Until every thread is gone: they use @s to the end.  Transfers look at bg_stop at least
     * every 100 ms (a blocked send gives up after 5 s); building a snapshot's manifest ends by
     * itself.  (A bounded wait here let a slow transfer outlive the member: use after free.) */
    atomic_store(&s->bg_stop, true);
    for (int i = 1; atomic_load(&s->bg_threads) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        if (i % 1000 == 0) {
            srv_log(SRV_LOG_WARN, "snap", "closing: waiting for %d snapshot threads",
                    atomic_load(&s->bg_threads));
        }
    }
}

void srv_apply_snapshot_job(struct srv *s, int fd, uint64_t frame_id)
{
    struct srv_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        close(fd);
        return;
    }
    j->type = SRV_JOB_SNAPSHOT;
    j->fd = fd;
    j->frame_id = frame_id;
    srv_queue_push(&s->applyq, j);
}

void srv_apply_install(struct srv *s, const char *dir, const struct raft_msg *msg)
{
    struct srv_job *j = calloc(1, sizeof *j);
    char *d = strdup(dir);
    if (j == NULL || d == NULL) {
        free(j);
        free(d);
        return; /* the leader retries the snapshot */
    }
    j->type = SRV_JOB_INSTALL;
    j->dir = d;
    j->msg = *msg;
    srv_queue_push(&s->applyq, j);
}

#define INLINE_MAX_ENTRIES 8
#define INLINE_MAX_BYTES (64u << 10)

void srv_apply_submit(struct srv *s, const struct raft_entry *ents, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += ents[i].data.len;
    }
    struct srv_job *j = calloc(1, sizeof *j);
    if (j != NULL) {
        j->ents = malloc(n * sizeof *j->ents);
        j->buf = malloc(bytes > 0 ? bytes : 1);
    }
    if (j == NULL || j->ents == NULL || j->buf == NULL) {
        free_jobs(j);
        srv_fail(s, SRV_ENOMEM, "out of memory queueing %zu committed entries", n);
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        j->ents[i].index = ents[i].index;
        j->ents[i].term = ents[i].term;
        j->ents[i].type = ents[i].type;
        j->ents[i].off = off;
        j->ents[i].len = ents[i].data.len;
        if (ents[i].data.len > 0) {
            memcpy(j->buf + off, ents[i].data.base, ents[i].data.len);
        }
        off += ents[i].data.len;
    }
    j->n_ents = n;
    j->type = SRV_JOB_APPLY;
    /* A small group while the apply thread is idle is applied right here: the hand-off to the
     * apply thread and back (two wake-ups) costs more than the apply itself, which is what a
     * lone client waits on.  Not when a snapshot is due (its checkpoint flushes LevelDB's
     * memtable) or for big groups, which would hold up the loop. */
    if (n <= INLINE_MAX_ENTRIES && bytes <= INLINE_MAX_BYTES && s->inline_group != NULL &&
        !atomic_load(&s->apply_dead) && apply_claim_idle(&s->applyq)) {
        /* Read while the apply side is ours: the apply thread writes the snapshot state. */
        bool due = srv_snap_due(s, ents[n - 1].index);
        int rv = due ? 0 : run_jobs(s, s->inline_group, j);
        apply_release(&s->applyq);
        if (rv != 0) {
            apply_failed(s, rv);
        }
        if (!due) {
            return;
        }
    }
    srv_queue_push(&s->applyq, j);
}

/* ---- lifecycle and the loop side ---- */

/* Read-queue jobs that will not run (queued after the read thread stopped). */
static void free_read_jobs(struct srv_job *j)
{
    while (j != NULL) {
        struct srv_job *next = j->next;
        srv_reads_free(j->reads);
        free(j->buf);
        free(j);
        j = next;
    }
}

void srv_done_drain(struct srv *s)
{
    pthread_mutex_lock(&s->done_mu);
    struct srv_done *d = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->done_mu);
    while (d != NULL) {
        struct srv_done *next = d->next;
        srv_node_on_done(s, d);
        free(d->errmsg);
        free(d->dir);
        lsm_events_free(d->events, d->n_events);
        free(d->body);
        free(d);
        d = next;
    }
}

int srv_apply_start(struct srv *s)
{
    queue_init(&s->applyq);
    queue_init(&s->readq);
    pthread_mutex_init(&s->done_mu, NULL);
    pthread_mutex_init(&s->applied_mu, NULL);
    pthread_rwlock_init(&s->lsm_lock, NULL);
    pthread_mutex_init(&s->snap_mu, NULL);
    pthread_cond_init(&s->applied_cond, NULL);
    s->inline_group = calloc(1, sizeof *s->inline_group);
    if (s->inline_group != NULL) {
        s->inline_group->on_loop = true;
    }
    if (s->inline_group == NULL || pthread_create(&s->apply_thread, NULL, apply_main, s) != 0) {
        free(s->inline_group);
        s->inline_group = NULL;
        return SRV_ENOMEM;
    }
    if (pthread_create(&s->read_thread, NULL, srv_read_main, s) != 0) {
        s->applyq.stop = true;
        pthread_cond_signal(&s->applyq.cond);
        pthread_join(s->apply_thread, NULL);
        return SRV_ENOMEM;
    }
    s->threads_started = true;
    return 0;
}

static void queue_stop(struct srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

void srv_apply_stop(struct srv *s)
{
    if (!s->threads_started) {
        return;
    }
    /* The apply thread drains what was committed before it stops. */
    queue_stop(&s->applyq);
    pthread_join(s->apply_thread, NULL);
    queue_stop(&s->readq);
    pthread_mutex_lock(&s->applied_mu);
    pthread_cond_broadcast(&s->applied_cond);
    pthread_mutex_unlock(&s->applied_mu);
    pthread_join(s->read_thread, NULL);
    group_free(s->inline_group);
    free(s->inline_group);
    s->inline_group = NULL;
    s->threads_started = false;
    srv_done_drain(s);
    srv_apply_drop_queued(s);
}

void srv_apply_drop_queued(struct srv *s)
{
    free_jobs(s->applyq.head);
    s->applyq.head = s->applyq.tail = NULL;
    free_read_jobs(s->readq.head);
    s->readq.head = s->readq.tail = NULL;
}
