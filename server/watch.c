/* Watch: the hub of watchers on the loop thread.
 *
 * A watcher is synced (it gets live events as the apply thread posts them) or catching up (the
 * read thread reads its history from the store, lsm_events_read, a bounded batch at a time).
 * Every watcher delivers each revision once and in order: live events below its next revision
 * are dropped, and a catch-up becomes synced only once it has reached past every revision the hub
 * has dispatched live (hub_rev).  A watcher whose connection falls behind (write backlog) is moved
 * back to catching up, so a slow client never holds the member's memory; if the history it needs
 * is compacted meanwhile it is cancelled with the compact revision, as etcd does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/kvconv.h"
#include "server/srv_int.h"

#define CATCHUP_BATCH 1000          /* events per history read */
#define SLOW_BACKLOG (8u << 20)     /* a connection this far behind loses live delivery */
#define PROGRESS_INTERVAL_MS 600000 /* etcd's default progress notification interval */

struct srv_watcher
{
    int64_t id;
    uint32_t slot, gen; /* connection */
    uint64_t stream;    /* frame id of the stream */
    uint8_t *key;
    size_t klen;
    uint8_t *end;
    size_t elen;
    bool prev_kv, no_put, no_delete, progress_notify;
    int64_t next_rev; /* next revision to deliver */
    bool synced;      /* gets live events */
    bool reading;     /* a history read is in flight */
    struct srv_watcher *next;
};

static void watcher_free(struct srv_watcher *w)
{
    free(w->key);
    free(w->end);
    free(w);
}

static struct srv_watcher *find(struct srv *s, int64_t id)
{
    for (struct srv_watcher *w = s->watchers; w != NULL; w = w->next) {
        if (w->id == id) {
            return w;
        }
    }
    return NULL;
}

static void unlink_watcher(struct srv *s, struct srv_watcher *w)
{
    for (struct srv_watcher **pp = &s->watchers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            atomic_fetch_sub(&s->n_watchers, 1);
            return;
        }
    }
}

/* [key, end) with etcd's conventions: empty end = one key, "\0" = every key >= key. */
static bool in_range(const struct srv_watcher *w, const uint8_t *k, size_t n)
{
    size_t m = n < w->klen ? n : w->klen;
    int c = memcmp(k, w->key, m);
    if (w->elen == 0) {
        return c == 0 && n == w->klen;
    }
    if (c < 0 || (c == 0 && n < w->klen)) {
        return false;
    }
    if (w->elen == 1 && w->end[0] == 0) {
        return true;
    }
    m = n < w->elen ? n : w->elen;
    c = memcmp(k, w->end, m);
    return c < 0 || (c == 0 && n < w->elen);
}

static void set_kv(Kvdb__KeyValue *p, const struct lsm_kv *kv)
{
    kvdb__key_value__init(p);
    p->key.data = kv->key;
    p->key.len = kv->key_len;
    p->value.data = kv->value;
    p->value.len = kv->value_len;
    p->create_revision = kv->create_revision;
    p->mod_revision = kv->mod_revision;
    p->version = kv->version;
    p->lease = kv->lease;
}

/* Why a watcher is cancelled when its response cannot be built: etcd cancels a watcher it cannot
 * serve rather than lose events, and the client can watch again from the last revision it got. */
#define OOM_REASON \
    "kvdb: out of memory: events not sent; watch again from the last revision received"

/* The @n events of a response, from @a; NULL when out of memory (or the "watch_alloc" failpoint
 * fails it, as an exhausted heap would). */
static Kvdb__Event **build_events(struct srv *s,
                                  const struct srv_watcher *w,
                                  const struct lsm_event *const *events,
                                  size_t n,
                                  struct srv_arena *a)
{
    if (SRV_FAILPOINT(s->cfg.member_id, "watch_alloc") == SRV_FP_ERROR) {
        return NULL;
    }
    Kvdb__Event **evp = srv_arena_alloc(a, n * sizeof *evp);
    for (size_t i = 0; evp != NULL && i < n; i++) {
        Kvdb__Event *e = srv_arena_alloc(a, sizeof *e);
        Kvdb__KeyValue *kv = srv_arena_alloc(a, 2 * sizeof *kv);
        if (e == NULL || kv == NULL) {
            return NULL;
        }
        kvdb__event__init(e);
        e->type = events[i]->type == LSM_EVENT_PUT ? KVDB__EVENT__EVENT_TYPE__PUT
                                                   : KVDB__EVENT__EVENT_TYPE__DELETE;
        set_kv(&kv[0], &events[i]->kv);
        e->kv = &kv[0];
        if (w->prev_kv && events[i]->has_prev) {
            set_kv(&kv[1], &events[i]->prev_kv);
            e->prev_kv = &kv[1];
        }
        evp[i] = e;
    }
    return evp;
}

/* Send one WatchResponse for @w.  @events may be NULL.  Returns false if the connection is gone
 * or the response could not be built (out of memory: @w was then sent a cancel instead, never a
 * response short of its events); either way the watcher must be dropped. */
static bool respond(struct srv *s,
                    struct srv_watcher *w,
                    const struct lsm_event *const *events,
                    size_t n,
                    int64_t revision,
                    bool created,
                    bool canceled,
                    int64_t compact_rev,
                    const char *reason)
{
    struct srv_conn *c = srv_conn_get(s, w->slot, w->gen);
    if (c == NULL) {
        return false;
    }
    struct srv_arena a = {0};
    Kvdb__Event **evp = n > 0 ? build_events(s, w, events, n, &a) : NULL;
    if (n > 0 && evp == NULL) {
        srv_arena_free(&a);
        respond(s, w, NULL, 0, revision, false, true, 0, OOM_REASON);
        return false;
    }
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = s->cfg.cluster_id;
    h.member_id = s->cfg.member_id;
    h.revision = revision;
    h.raft_term = atomic_load(&s->term_pub);
    Kvdb__WatchResponse r;
    kvdb__watch_response__init(&r);
    r.header = &h;
    r.watch_id = w->id;
    r.created = created;
    r.canceled = canceled;
    r.compact_revision = compact_rev;
    r.cancel_reason = (char *)(reason != NULL ? reason : "");
    r.events = evp;
    r.n_events = n;
    /* Responses without events (created, cancel, progress) fit on the stack, so the cancel
     * above cannot itself fail for want of memory. */
    uint8_t small[256];
    size_t len = kvdb__watch_response__get_packed_size(&r);
    uint8_t *buf = len <= sizeof small ? small : malloc(len);
    if (buf == NULL) {
        srv_arena_free(&a);
        respond(s, w, NULL, 0, revision, false, true, 0, OOM_REASON);
        return false;
    }
    kvdb__watch_response__pack(&r, buf);
    srv_conn_reply(c, w->stream, KVDB__METHOD__METHOD_WATCH, KVDB__ERROR_CODE__OK, NULL, buf, len);
    if (buf != small) {
        free(buf);
    }
    srv_arena_free(&a);
    return srv_conn_get(s, w->slot, w->gen) != NULL;
}

static int64_t compact_revision(struct srv *s)
{
    struct lsm_status st;
    pthread_rwlock_rdlock(&s->lsm_lock);
    lsm_status_get(s->lsm, &st);
    pthread_rwlock_unlock(&s->lsm_lock);
    return st.compact_revision;
}

static void start_catchup(struct srv *s, struct srv_watcher *w)
{
    w->synced = false;
    w->reading = true;
    srv_watch_read_submit(s, w->id, w->key, w->klen, w->end, w->elen, w->next_rev, CATCHUP_BATCH);
}

/* Deliver the events of @evs (revision order) that @w wants, at most WATCH_BATCH per response
 * (cut only between revisions); false if the watcher is gone. */
#define WATCH_BATCH 1000
static bool deliver(struct srv *s,
                    struct srv_watcher *w,
                    const struct lsm_event *evs,
                    size_t n,
                    int64_t revision)
{
    const struct lsm_event **pick = malloc((n > 0 ? n : 1) * sizeof *pick);
    if (pick == NULL) {
        respond(s, w, NULL, 0, revision, false, true, 0, OOM_REASON);
        return false;
    }
    size_t k = 0, start = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const struct lsm_event *e = &evs[i];
        if (e->kv.mod_revision < w->next_rev || !in_range(w, e->kv.key, e->kv.key_len) ||
            (e->type == LSM_EVENT_PUT && w->no_put) ||
            (e->type == LSM_EVENT_DELETE && w->no_delete)) {
            continue;
        }
        if (k - start >= WATCH_BATCH && pick[k - 1]->kv.mod_revision != e->kv.mod_revision) {
            ok = respond(s, w, pick + start, k - start, revision, false, false, 0, NULL);
            start = k;
        }
        pick[k++] = e;
    }
    if (ok && k > start) {
        ok = respond(s, w, pick + start, k - start, revision, false, false, 0, NULL);
    }
    free(pick);
    if (n > 0 && evs[n - 1].kv.mod_revision >= w->next_rev) {
        w->next_rev = evs[n - 1].kv.mod_revision + 1;
    }
    return ok;
}

void srv_watch_on_events(struct srv *s, struct lsm_event *evs, size_t n)
{
    if (n == 0) {
        return;
    }
    int64_t rev = evs[n - 1].kv.mod_revision;
    if (rev > s->hub_rev) {
        s->hub_rev = rev;
    }
    struct srv_watcher **pp = &s->watchers;
    while (*pp != NULL) {
        struct srv_watcher *w = *pp;
        if (!w->synced) {
            pp = &w->next;
            continue;
        }
        struct srv_conn *c = srv_conn_get(s, w->slot, w->gen);
        bool ok = c != NULL;
        if (ok && c->wr.len - c->wr.off > SLOW_BACKLOG) {
            /* Too slow for live events: fall back to reading history once it drains. */
            w->synced = false;
        } else if (ok) {
            ok = deliver(s, w, evs, n, rev);
        }
        if (!ok) {
            *pp = w->next;
            atomic_fetch_sub(&s->n_watchers, 1);
            watcher_free(w);
            continue;
        }
        pp = &w->next;
    }
}

void srv_watch_on_history(struct srv *s,
                          int64_t id,
                          struct lsm_event *evs,
                          size_t n,
                          int64_t next_rev,
                          int err,
                          bool complete)
{
    struct srv_watcher *w = find(s, id);
    if (w == NULL) {
        return; /* cancelled meanwhile */
    }
    w->reading = false;
    bool ok = true;
    if (err == LSM_ECOMPACTED) {
        int64_t crev = compact_revision(s);
        respond(s, w, NULL, 0, crev, false, true, crev,
                "mvcc: required revision has been compacted");
        ok = false;
    } else if (err != 0) {
        respond(s, w, NULL, 0, s->hub_rev, false, true, 0, lsm_strerror(err));
        ok = false;
    } else {
        ok = deliver(s, w, evs, n, next_rev - 1);
        if (ok && next_rev > w->next_rev) {
            w->next_rev = next_rev;
        }
    }
    if (!ok) {
        unlink_watcher(s, w);
        watcher_free(w);
        return;
    }
    if (complete && w->next_rev > s->hub_rev) {
        w->synced = true;
    } else {
        start_catchup(s, w); /* more history, or live events went by meanwhile */
    }
}

static void create(struct srv_conn *c, uint64_t stream, const Kvdb__WatchCreateRequest *r)
{
    struct srv *s = c->s;
    struct srv_watcher *w = calloc(1, sizeof *w);
    if (w == NULL) {
        srv_conn_reply(c, stream, KVDB__METHOD__METHOD_WATCH, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED,
                       "out of memory", NULL, 0);
        return;
    }
    w->slot = c->slot;
    w->gen = c->gen;
    w->stream = stream;
    w->id = r->watch_id != 0 ? r->watch_id : ++s->next_watch_id;
    w->key = malloc(r->key.len + 1);
    w->end = malloc(r->range_end.len + 1);
    if (w->key == NULL || w->end == NULL) {
        watcher_free(w);
        srv_conn_reply(c, stream, KVDB__METHOD__METHOD_WATCH, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED,
                       "out of memory", NULL, 0);
        return;
    }
    /* Empty protobuf bytes arrive as NULL: no memcpy from them. */
    if (r->key.len > 0) {
        memcpy(w->key, r->key.data, r->key.len);
    }
    w->klen = r->key.len;
    if (r->range_end.len > 0) {
        memcpy(w->end, r->range_end.data, r->range_end.len);
    }
    w->elen = r->range_end.len;
    w->prev_kv = r->prev_kv;
    w->progress_notify = r->progress_notify;
    for (size_t i = 0; i < r->n_filters; i++) {
        w->no_put |= r->filters[i] == KVDB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
        w->no_delete |= r->filters[i] == KVDB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    }
    if (find(s, w->id) != NULL) {
        respond(s, w, NULL, 0, s->hub_rev, true, true, 0, "duplicate watch id");
        watcher_free(w);
        return;
    }
    /* Count the watcher before reading the revision: the apply thread publishes the revision
     * before it checks for watchers, so no event falls between the two. */
    atomic_fetch_add(&s->n_watchers, 1);
    int64_t now = atomic_load(&s->revision);
    w->next = s->watchers;
    s->watchers = w;
    if (!respond(s, w, NULL, 0, now, true, false, 0, NULL)) {
        unlink_watcher(s, w);
        watcher_free(w);
        return;
    }
    if (r->start_revision <= 0 || r->start_revision > now) {
        w->next_rev = r->start_revision > now ? r->start_revision : now + 1;
        w->synced = true;
    } else {
        w->next_rev = r->start_revision;
        start_catchup(s, w);
    }
}

void srv_watch_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    Kvdb__WatchRequest *r = kvdb__watch_request__unpack(NULL, f->body.len, f->body.data);
    if (r == NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "malformed WatchRequest", NULL, 0);
        return;
    }
    switch (r->request_union_case) {
    case KVDB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
        create(c, f->id, r->create_request);
        break;
    case KVDB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST: {
        struct srv_watcher *w = find(s, r->cancel_request->watch_id);
        if (w != NULL && w->slot == c->slot && w->gen == c->gen) {
            respond(s, w, NULL, 0, s->hub_rev, false, true, 0, "canceled by the client");
            unlink_watcher(s, w);
            watcher_free(w);
        }
        break;
    }
    case KVDB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST: {
        struct srv_watcher tmp = {.id = -1, .slot = c->slot, .gen = c->gen, .stream = f->id};
        respond(s, &tmp, NULL, 0, s->hub_rev, false, false, 0, NULL);
        break;
    }
    default:
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "empty WatchRequest", NULL, 0);
        break;
    }
    kvdb__watch_request__free_unpacked(r, NULL);
}

void srv_watch_sweep(struct srv *s)
{
    uint64_t now = srv_now_ms();
    bool progress = now - s->last_progress_ms >= PROGRESS_INTERVAL_MS;
    if (progress) {
        s->last_progress_ms = now;
    }
    struct srv_watcher **pp = &s->watchers;
    while (*pp != NULL) {
        struct srv_watcher *w = *pp;
        struct srv_conn *c = srv_conn_get(s, w->slot, w->gen);
        if (c == NULL) {
            /* The connection closed: its watchers go with it. */
            *pp = w->next;
            atomic_fetch_sub(&s->n_watchers, 1);
            watcher_free(w);
            continue;
        }
        if (!w->synced && !w->reading && c->wr.len - c->wr.off < SLOW_BACKLOG / 2) {
            start_catchup(s, w);
        } else if (progress && w->synced && w->progress_notify &&
                   !respond(s, w, NULL, 0, s->hub_rev, false, false, 0, NULL)) {
            *pp = w->next;
            atomic_fetch_sub(&s->n_watchers, 1);
            watcher_free(w);
            continue;
        }
        pp = &w->next;
    }
}

void srv_watch_fini(struct srv *s)
{
    while (s->watchers != NULL) {
        struct srv_watcher *w = s->watchers;
        s->watchers = w->next;
        watcher_free(w);
    }
}
