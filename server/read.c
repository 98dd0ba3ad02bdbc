/* The read thread: linearizable ranges once the applied index reaches their read index,
 * serializable ones at once, watch catch-up reads and the corruption check's HashKV.  Results
 * go back to the loop through the done queue, as the apply thread's do. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/kvconv.h"
#include "server/srv_int.h"

static bool wait_applied(struct srv *s, uint64_t index)
{
    pthread_mutex_lock(&s->applied_mu);
    while (s->applied_index < index && !s->readq.stop) {
        pthread_cond_wait(&s->applied_cond, &s->applied_mu);
    }
    bool ok = s->applied_index >= index;
    pthread_mutex_unlock(&s->applied_mu);
    return ok;
}

/* HashKV: a hash of the keyspace at a revision (etcd's), to compare members. */
static struct srv_done *run_hash(struct srv *s, const struct srv_read *r)
{
    Kvdb__HashKVRequest *req = kvdb__hash_kvrequest__unpack(NULL, r->len, r->body);
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        if (req != NULL) {
            kvdb__hash_kvrequest__free_unpacked(req, NULL);
        }
        return NULL;
    }
    const char *msg;
    if (req == NULL) {
        d->code = srv_conv_error(LSM_EINVAL, &msg);
        d->errmsg = strdup("malformed HashKVRequest");
        return d;
    }
    uint32_t hash = 0;
    int64_t hrev = 0, crev = 0;
    char err[256] = "";
    int rv = LSM_ECORRUPT; /* a damaged store serves nothing */
    if (!srv_store_is_corrupt(s)) {
        pthread_rwlock_rdlock(&s->lsm_lock);
        rv = lsm_hash_kv(s->lsm, req->revision, &hash, &hrev, &crev, err);
        pthread_rwlock_unlock(&s->lsm_lock);
        if (rv == LSM_ECORRUPT) {
            srv_store_corrupt(s, "a HashKV read", err);
        }
    }
    kvdb__hash_kvrequest__free_unpacked(req, NULL);
    d->code = srv_conv_error(rv, &msg);
    if (rv != 0) {
        d->errmsg = strdup(msg);
        return d;
    }
    Kvdb__ResponseHeader h;
    srv_header(s, &h, atomic_load(&s->term_pub));
    h.revision = hrev;
    Kvdb__HashKVResponse resp;
    kvdb__hash_kvresponse__init(&resp);
    resp.header = &h;
    resp.hash = hash;
    resp.compact_revision = crev;
    resp.hash_revision = hrev;
    d->len = kvdb__hash_kvresponse__get_packed_size(&resp);
    d->body = malloc(d->len);
    if (d->body != NULL) {
        kvdb__hash_kvresponse__pack(&resp, d->body);
    }
    return d;
}

static void run_read(struct srv *s, struct srv_read *r)
{
    struct srv_done *d = NULL;
    if (r->method == KVDB__METHOD__METHOD_HASH_KV) {
        d = run_hash(s, r);
        if (d != NULL) {
            d->slot = r->slot;
            d->gen = r->gen;
            d->frame_id = r->frame_id;
            d->method = r->method;
            srv_post_done(s, d);
        }
        return;
    }
    Kvdb__RangeRequest *req = kvdb__range_request__unpack(NULL, r->len, r->body);
    Kvdb__ResponseHeader h;
    srv_header(s, &h, atomic_load(&s->term_pub));
    if (req == NULL) {
        d = srv_make_done(NULL, LSM_EINVAL, &h);
    } else {
        struct lsm_range_req lr;
        srv_conv_range(req, &lr);
        struct lsm_result res;
        memset(&res, 0, sizeof res);
        char err[256];
        int rv = LSM_ECORRUPT; /* a damaged store serves nothing */
        if (!srv_store_is_corrupt(s)) {
            pthread_rwlock_rdlock(&s->lsm_lock);
            rv = lsm_range(s->lsm, &lr, &res, err);
            pthread_rwlock_unlock(&s->lsm_lock);
            if (rv == LSM_ECORRUPT) {
                srv_store_corrupt(s, "a read", err);
            }
        }
        d = srv_make_done(&res, rv, &h);
        lsm_result_fini(&res);
        kvdb__range_request__free_unpacked(req, NULL);
    }
    if (d != NULL) {
        d->slot = r->slot;
        d->gen = r->gen;
        d->frame_id = r->frame_id;
        d->method = r->method;
        srv_post_done(s, d);
    }
}

static void run_history(struct srv *s, struct srv_job *j)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return;
    }
    struct lsm_bytes key = {j->buf, j->klen}, end = {j->buf + j->klen, j->elen};
    char err[256];
    d->err = LSM_ECORRUPT; /* a damaged store serves nothing */
    if (!srv_store_is_corrupt(s)) {
        pthread_rwlock_rdlock(&s->lsm_lock);
        d->err = lsm_events_read(s->lsm, key, end, j->start_rev, j->max_events, &d->events,
                                 &d->n_events, &d->next_rev, err);
        pthread_rwlock_unlock(&s->lsm_lock);
        if (d->err == LSM_ECORRUPT) {
            srv_store_corrupt(s, "a watch's history read", err);
        }
    }
    d->kind = SRV_DONE_HISTORY;
    d->watch_id = j->watch_id;
    d->complete = d->err == 0 && (j->max_events == 0 || d->n_events < j->max_events);
    srv_post_done(s, d);
}

void srv_watch_read_submit(struct srv *s,
                           int64_t id,
                           const uint8_t *key,
                           size_t klen,
                           const uint8_t *end,
                           size_t elen,
                           int64_t start_rev,
                           size_t max)
{
    struct srv_job *j = calloc(1, sizeof *j);
    char *buf = malloc(klen + elen + 1);
    if (j == NULL || buf == NULL) {
        free(j);
        free(buf);
        /* Report the failure so the watcher is cancelled rather than stuck. */
        struct srv_done *d = calloc(1, sizeof *d);
        if (d != NULL) {
            d->kind = SRV_DONE_HISTORY;
            d->watch_id = id;
            d->err = LSM_ENOMEM;
            srv_post_done(s, d);
        }
        return;
    }
    memcpy(buf, key, klen);
    memcpy(buf + klen, end, elen);
    j->type = SRV_JOB_HISTORY;
    j->buf = buf;
    j->klen = klen;
    j->elen = elen;
    j->watch_id = id;
    j->start_rev = start_rev;
    j->max_events = max;
    srv_queue_push(&s->readq, j);
}

void srv_read_hash(struct srv *s, int64_t rev, uint64_t round)
{
    struct srv_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        return; /* the next round asks again */
    }
    j->type = SRV_JOB_HASH;
    j->start_rev = rev;
    j->watch_id = (int64_t)round;
    srv_queue_push(&s->readq, j);
}

void *srv_read_main(void *arg)
{
    pthread_setname_np(pthread_self(), "kv-read");
    struct srv *s = arg;
    struct srv_job *jobs;
    while ((jobs = srv_queue_take_all(&s->readq)) != NULL) {
        for (struct srv_job *j = jobs; j != NULL;) {
            struct srv_job *next = j->next;
            if (j->type == SRV_JOB_HASH) {
                srv_hash_run(s, j->start_rev, (uint64_t)j->watch_id);
                free(j);
                j = next;
                continue;
            }
            if (j->type == SRV_JOB_HISTORY) {
                run_history(s, j);
                free(j->buf);
                free(j);
                j = next;
                continue;
            }
            for (struct srv_read *r = j->reads; r != NULL;) {
                struct srv_read *rn = r->next;
                if (wait_applied(s, r->read_index)) {
                    run_read(s, r);
                }
                free(r->body);
                free(r);
                r = rn;
            }
            free(j);
            j = next;
        }
    }
    return NULL;
}

void srv_read_submit(struct srv *s, struct srv_read *reads)
{
    struct srv_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        srv_reads_free(reads);
        return; /* the clients time out */
    }
    j->type = SRV_JOB_READ;
    j->reads = reads;
    srv_queue_push(&s->readq, j);
}

