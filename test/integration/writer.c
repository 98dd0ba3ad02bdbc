/* A pipelined background writer that remembers what was acknowledged. */
#include "test/integration/writer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WINDOW 64

struct inflight
{
    uint64_t id; /* frame id */
    size_t key;  /* key number */
};

static void key_of(const struct ih_writer *w, size_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%06zu", w->prefix, i);
}

/* Queue puts until the window is full.  Returns false if the connection must be redone. */
static bool fill(struct ih_writer *w, struct kvc *k, struct inflight *fl, size_t *nfl)
{
    while (*nfl < w->window && atomic_load(&w->next) < w->cap && !atomic_load(&w->stop)) {
        size_t i = atomic_load(&w->next);
        char key[64];
        key_of(w, i, key, sizeof key);
        Kvdb__PutRequest p;
        kvdb__put_request__init(&p);
        p.key.data = (uint8_t *)key;
        p.key.len = strlen(key);
        p.value = p.key;
        uint64_t id;
        if (kvc_send(k, KVDB__METHOD__METHOD_PUT, &p.base, &id) != 0) {
            return false; /* not sent: key i stays IH_W_NONE and is not reused */
        }
        atomic_store(&w->next, i + 1);
        w->state[i] = IH_W_UNKNOWN; /* from now on it may be executed */
        fl[(*nfl)++] = (struct inflight){id, i};
    }
    return true;
}

/* Take one reply.  Returns false if the connection must be redone (in-flight writes stay
 * IH_W_UNKNOWN: their outcome is unknown). */
static bool take_reply(struct ih_writer *w, struct kvc *k, struct inflight *fl, size_t *nfl)
{
    uint64_t id;
    Kvdb__ErrorCode code;
    const uint8_t *body;
    size_t len;
    if (kvc_recv(k, 3000, &id, &code, &body, &len) != 0) {
        return false;
    }
    for (size_t j = 0; j < *nfl; j++) {
        if (fl[j].id != id) {
            continue;
        }
        size_t i = fl[j].key;
        fl[j] = fl[--*nfl];
        if (code == KVDB__ERROR_CODE__UNAVAILABLE) {
            /* The client contract (kvc.h): UNAVAILABLE means the member did not take the
             * write, so kvc_call retries it elsewhere.  Hold the server to it: the check
             * fails if this key ever shows up. */
            w->state[i] = IH_W_NONE;
            ih_sleep_ms(20); /* an election is under way: let it finish */
            return true;
        }
        if (code != KVDB__ERROR_CODE__OK) {
            /* DEADLINE_EXCEEDED and others leave the outcome unknown.  Reconnect so that the
             * next attempt may reach another member. */
            return false;
        }
        Kvdb__PutResponse *r = kvdb__put_response__unpack(NULL, len, body);
        if (r != NULL && r->header != NULL) {
            w->rev[i] = r->header->revision;
            w->state[i] = IH_W_ACKED;
            atomic_fetch_add(&w->acked, 1);
        }
        if (r != NULL) {
            kvdb__put_response__free_unpacked(r, NULL);
        }
        break;
    }
    return true;
}

static void *run(void *arg)
{
    struct ih_writer *w = arg;
    struct kvc *k = NULL;
    struct inflight fl[MAX_WINDOW];
    size_t nfl = 0;
    while (!atomic_load(&w->stop)) {
        if (k == NULL) {
            struct kvc_options o = {.dial_timeout_ms = 500, .request_timeout_ms = 3000};
            char err[256];
            if (kvc_open(w->endpoints, &o, &k, err) != 0) {
                k = NULL;
                ih_sleep_ms(20);
                continue;
            }
        }
        bool ok = fill(w, k, fl, &nfl);
        if (ok && nfl == 0) {
            break; /* wrote cap keys */
        }
        if (ok) {
            ok = take_reply(w, k, fl, &nfl);
        }
        if (!ok) {
            kvc_close(k);
            k = NULL;
            nfl = 0;
            ih_sleep_ms(20);
        }
    }
    kvc_close(k);
    return NULL;
}

int ih_writer_start(struct ih_writer *w,
                    struct ih_cluster *c,
                    const char *prefix,
                    size_t cap,
                    unsigned window)
{
    memset(w, 0, sizeof *w);
    size_t off = 0;
    for (size_t i = 0; i < c->n; i++) {
        off += (size_t)snprintf(w->endpoints + off, sizeof w->endpoints - off, "%s%s",
                                i > 0 ? "," : "", c->m[i].endpoint);
    }
    snprintf(w->prefix, sizeof w->prefix, "%s", prefix);
    w->window = window == 0 ? 1 : window > MAX_WINDOW ? MAX_WINDOW : window;
    w->cap = cap;
    w->rev = calloc(cap, sizeof *w->rev);
    w->state = calloc(cap, 1);
    if (w->rev == NULL || w->state == NULL) {
        return -1;
    }
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        return -1;
    }
    w->running = true;
    return 0;
}

int ih_writer_wait_acked(struct ih_writer *w, size_t n, unsigned timeout_ms)
{
    uint64_t deadline = ih_now_ms() + timeout_ms;
    while (atomic_load(&w->acked) < n) {
        if (ih_now_ms() >= deadline) {
            fprintf(stderr, "[integ] writer: %zu of %zu acknowledged within %u ms\n",
                    atomic_load(&w->acked), n, timeout_ms);
            return -1;
        }
        ih_sleep_ms(10);
    }
    return 0;
}

void ih_writer_stop(struct ih_writer *w)
{
    if (w->running) {
        atomic_store(&w->stop, true);
        pthread_join(w->thread, NULL);
        w->running = false;
    }
}

void ih_writer_fini(struct ih_writer *w)
{
    free(w->rev);
    free(w->state);
    w->rev = NULL;
    w->state = NULL;
}

/* Check one key-value of the read-back against what the writer knows. */
static int check_kv(struct ih_writer *w, const Kvdb__KeyValue *kv, uint8_t *seen)
{
    size_t plen = strlen(w->prefix);
    char key[64];
    if (kv->key.len <= plen || kv->key.len >= sizeof key) {
        fprintf(stderr, "[integ] writer: unexpected key of length %zu\n", kv->key.len);
        return -1;
    }
    memcpy(key, kv->key.data, kv->key.len);
    key[kv->key.len] = '\0';
    size_t i = strtoul(key + plen, NULL, 10);
    if (i >= w->cap || w->state[i] == IH_W_NONE) {
        fprintf(stderr, "[integ] writer: %s is present but was never sent or was refused\n", key);
        return -1;
    }
    if (kv->value.len != kv->key.len || memcmp(kv->value.data, kv->key.data, kv->key.len) != 0) {
        fprintf(stderr, "[integ] writer: %s has a wrong value\n", key);
        return -1;
    }
    if (w->state[i] == IH_W_ACKED && kv->mod_revision != w->rev[i]) {
        fprintf(stderr, "[integ] writer: %s at revision %" PRId64 ", acknowledged at %" PRId64 "\n",
                key, kv->mod_revision, w->rev[i]);
        return -1;
    }
    seen[i] = 1;
    return 0;
}

long ih_writer_check(struct ih_writer *w, struct kvc *k)
{
    uint8_t end[64];
    size_t elen = kvc_prefix_end(w->prefix, strlen(w->prefix), end);
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)w->prefix;
    r.key.len = strlen(w->prefix);
    r.range_end.data = end;
    r.range_end.len = elen;
    Kvdb__RangeResponse *g = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_RANGE, &r.base, &kvdb__range_response__descriptor,
                      (ProtobufCMessage **)&g);
    if (rv != 0) {
        fprintf(stderr, "[integ] writer check: range: %s: %s\n", kvc_strerror(rv), kvc_errmsg(k));
        return -1;
    }
    uint8_t *seen = calloc(w->cap > 0 ? w->cap : 1, 1);
    long checked = seen != NULL ? 0 : -1;
    for (size_t j = 0; checked >= 0 && j < g->n_kvs; j++) {
        if (check_kv(w, g->kvs[j], seen) != 0) {
            checked = -1;
        }
    }
    size_t unknown = 0;
    for (size_t i = 0; checked >= 0 && i < w->cap; i++) {
        if (w->state[i] == IH_W_ACKED && !seen[i]) {
            fprintf(stderr, "[integ] writer: acknowledged %s%06zu (rev %" PRId64 ") is LOST\n",
                    w->prefix, i, w->rev[i]);
            checked = -1;
        } else if (w->state[i] == IH_W_ACKED) {
            checked++;
        } else if (w->state[i] == IH_W_UNKNOWN) {
            unknown++;
        }
    }
    fprintf(stderr, "[integ] writer %s: %ld acknowledged writes verified, %zu unknown, %zu read\n",
            w->prefix, checked, unknown, g->n_kvs);
    free(seen);
    kvdb__range_response__free_unpacked(g, NULL);
    return checked;
}
