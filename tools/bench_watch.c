/* kvdb-bench watch: latency from a put to its watch event (etcd `benchmark watch-latency`).
 *
 * Watcher threads (one per connection) open their watchers on the bench key range and wait for
 * every "created" reply before the put thread starts, so no event can predate a watcher.  The
 * put thread writes each value with its sequence number in the first 8 bytes and records the
 * send time under that number; a watcher reads the number back out of the event. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/bench.h"

struct wshared
{
    struct run *run;
    _Atomic uint64_t *sent_ns; /* per put sequence number; 0 until sent */
    _Atomic bool puts_done;
    _Atomic uint64_t puts_end_ns;
    uint64_t put_errors;
    char put_error[512];
};

struct wthread
{
    struct wshared *sh;
    unsigned n_watchers;
    struct kvc *c;
    struct hist lat;
    uint64_t events; /* put events of ours received, over all watchers */
    uint64_t errors;
    char error[512];
};

/* Watch [key 0, key space-1] inclusive: the range end is the last key with a 0 byte appended. */
static int open_watchers(struct wthread *w)
{
    const struct config *cfg = w->sh->run->cfg;
    uint8_t key[MAX_KEY], end[MAX_KEY + 1];
    bench_make_key(key, cfg->key_size, cfg->key_space, 0);
    bench_make_key(end, cfg->key_size, cfg->key_space, cfg->key_space - 1);
    end[cfg->key_size] = 0;
    Kvdb__WatchCreateRequest req;
    kvdb__watch_create_request__init(&req);
    req.key = (ProtobufCBinaryData){.data = key, .len = cfg->key_size};
    req.range_end = (ProtobufCBinaryData){.data = end, .len = cfg->key_size + 1u};
    for (unsigned i = 0; i < w->n_watchers; i++) {
        uint64_t stream;
        int rv = kvc_watch(w->c, &req, &stream);
        if (rv != 0) {
            snprintf(w->error, sizeof w->error, "watch: %s: %.255s", kvc_strerror(rv),
                     kvc_errmsg(w->c));
            return rv;
        }
    }
    for (unsigned created = 0; created < w->n_watchers;) {
        uint64_t stream;
        Kvdb__WatchResponse *resp = NULL;
        int rv = kvc_watch_next(w->c, 10000, &stream, &resp);
        if (rv != 0) {
            snprintf(w->error, sizeof w->error, "watch create: %s: %.255s", kvc_strerror(rv),
                     kvc_errmsg(w->c));
            return rv;
        }
        created += resp->created ? 1 : 0;
        kvdb__watch_response__free_unpacked(resp, NULL);
    }
    return 0;
}

static void take_events(struct wthread *w, const Kvdb__WatchResponse *resp, uint64_t now)
{
    const struct config *cfg = w->sh->run->cfg;
    for (size_t i = 0; i < resp->n_events; i++) {
        const Kvdb__Event *ev = resp->events[i];
        if (ev->type != KVDB__EVENT__EVENT_TYPE__PUT || ev->kv == NULL || ev->kv->value.len < 8) {
            continue;
        }
        uint64_t seq = 0;
        memcpy(&seq, ev->kv->value.data, 8);
        if (seq >= cfg->total) {
            continue; /* not one of ours */
        }
        uint64_t sent = atomic_load_explicit(&w->sh->sent_ns[seq], memory_order_acquire);
        if (sent != 0 && now > sent) {
            bench_hist_add(&w->lat, now - sent);
            w->events++;
        }
    }
}

static void *watch_main(void *arg)
{
    struct wthread *w = arg;
    const struct config *cfg = w->sh->run->cfg;
    uint64_t want = cfg->total * w->n_watchers;
    pthread_barrier_wait(&w->sh->run->ready);
    while (w->events < want) {
        uint64_t stream;
        Kvdb__WatchResponse *resp = NULL;
        int rv = kvc_watch_next(w->c, 100, &stream, &resp);
        if (rv == 0) {
            take_events(w, resp, bench_now_ns());
            bool canceled = resp->canceled;
            kvdb__watch_response__free_unpacked(resp, NULL);
            if (!canceled) {
                continue;
            }
            snprintf(w->error, sizeof w->error, "a watcher was canceled by the server");
            break;
        }
        if (rv != KVC_ETIMEOUT) {
            snprintf(w->error, sizeof w->error, "watch: %s: %.255s", kvc_strerror(rv),
                     kvc_errmsg(w->c));
            break;
        }
        /* Events still missing this long after the last put are lost. */
        uint64_t end = atomic_load(&w->sh->puts_end_ns);
        if (atomic_load(&w->sh->puts_done) && bench_now_ns() > end + cfg->timeout_ms * 1000000ull) {
            snprintf(w->error, sizeof w->error, "events missing %u ms after the last put",
                     cfg->timeout_ms);
            break;
        }
    }
    w->errors = want - w->events;
    return NULL;
}

/* Sleep until @t (CLOCK_MONOTONIC ns). */
static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

static void put_all(struct wshared *sh, struct kvc *c)
{
    const struct config *cfg = sh->run->cfg;
    uint8_t key[MAX_KEY];
    uint8_t *val = sh->run->value; /* this thread alone writes the value from now on */
    uint64_t start = bench_now_ns();
    for (uint64_t seq = 0; seq < cfg->total; seq++) {
        if (cfg->rate > 0) {
            sleep_until(start + (uint64_t)((double)seq * 1e9 / cfg->rate));
        }
        bench_make_key(key, cfg->key_size, cfg->key_space, seq % cfg->key_space);
        memcpy(val, &seq, 8);
        atomic_store_explicit(&sh->sent_ns[seq], bench_now_ns(), memory_order_release);
        Kvdb__PutResponse *resp = NULL;
        int rv = kvc_put(c, key, cfg->key_size, val, cfg->val_size, &resp);
        if (rv == 0) {
            kvdb__put_response__free_unpacked(resp, NULL);
        } else if (sh->put_errors++ == 0) {
            snprintf(sh->put_error, sizeof sh->put_error, "put: %s: %.255s", kvc_strerror(rv),
                     kvc_errmsg(c));
        }
    }
    atomic_store(&sh->puts_end_ns, bench_now_ns());
    atomic_store(&sh->puts_done, true);
}

static int connect_all(struct wshared *sh, struct wthread *ws, struct kvc **putc)
{
    const struct config *cfg = sh->run->cfg;
    char errmsg[256] = "";
    int rv = kvc_open(cfg->endpoints, NULL, putc, errmsg);
    for (unsigned i = 0; rv == 0 && i < cfg->conns; i++) {
        ws[i].sh = sh;
        ws[i].n_watchers = cfg->clients / cfg->conns + (i < cfg->clients % cfg->conns ? 1 : 0);
        bench_hist_init(&ws[i].lat);
        rv = kvc_open(cfg->endpoints, NULL, &ws[i].c, errmsg);
        if (rv == 0) {
            rv = open_watchers(&ws[i]);
            snprintf(errmsg, sizeof errmsg, "%.255s", ws[i].error);
        }
    }
    if (rv != 0) {
        fprintf(stderr, "kvdb-bench watch: %s: %s\n", kvc_strerror(rv), errmsg);
    }
    return rv;
}

static void collect(struct wshared *sh, struct wthread *ws, struct totals *t)
{
    const struct config *cfg = sh->run->cfg;
    for (unsigned i = 0; i < cfg->conns; i++) {
        bench_hist_merge(&t->all, &ws[i].lat);
        t->errors += ws[i].errors;
        t->lost += ws[i].errors;
        if (t->first_error[0] == '\0' && ws[i].error[0] != '\0') {
            snprintf(t->first_error, sizeof t->first_error, "%s", ws[i].error);
        }
    }
    t->errors += sh->put_errors;
    if (sh->put_errors > 0) {
        snprintf(t->first_error, sizeof t->first_error, "%s", sh->put_error);
    }
}

int bench_watch(struct run *run, struct totals *t, double *secs)
{
    const struct config *cfg = run->cfg;
    static struct wshared sh; /* outlives the threads; one watch run per process */
    sh = (struct wshared){.run = run};
    sh.sent_ns = calloc(cfg->total, sizeof *sh.sent_ns);
    struct wthread *ws = calloc(cfg->conns, sizeof *ws);
    pthread_t *tids = calloc(cfg->conns, sizeof *tids);
    struct kvc *putc = NULL;
    int rv = sh.sent_ns == NULL || ws == NULL || tids == NULL ? 1 : 0;
    if (rv == 0 && cfg->val_size < 8) {
        fprintf(stderr, "kvdb-bench watch: --val-size must be >= 8 (it carries the put number)\n");
        rv = 1;
    }
    if (rv == 0) {
        rv = connect_all(&sh, ws, &putc) != 0 ? 1 : 0;
    }
    if (rv == 0 && pthread_barrier_init(&run->ready, NULL, cfg->conns + 1) != 0) {
        rv = 1;
    }
    unsigned started = 0;
    for (; rv == 0 && started < cfg->conns; started++) {
        if (pthread_create(&tids[started], NULL, watch_main, &ws[started]) != 0) {
            fprintf(stderr, "kvdb-bench watch: pthread_create failed\n");
            exit(1); /* the barrier would wait forever for the missing thread */
        }
    }
    if (rv == 0) {
        pthread_barrier_wait(&run->ready);
        run->start_ns = bench_now_ns();
        put_all(&sh, putc);
        for (unsigned i = 0; i < started; i++) {
            pthread_join(tids[i], NULL);
        }
        *secs = (double)(bench_now_ns() - run->start_ns) / 1e9;
        pthread_barrier_destroy(&run->ready);
        collect(&sh, ws, t);
    }
    kvc_close(putc);
    for (unsigned i = 0; ws != NULL && i < cfg->conns; i++) {
        kvc_close(ws[i].c);
    }
    free(tids);
    free(ws);
    free((void *)sh.sent_ns);
    return rv;
}
