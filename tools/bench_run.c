/* kvdb-bench: the per-connection load loop.
 *
 * One thread per connection drives its share of the logical clients by pipelining: a client
 * has at most one request in flight, many clients share a connection, replies come back in any
 * order and are matched to their client by frame id through a small open-addressing table.
 * Latency is CLOCK_MONOTONIC from queueing a request to handling its reply.  The hot path
 * allocates nothing itself: requests are packed from stack structs and a per-thread key
 * buffer, and reply bodies are not unpacked beyond the frame the client library decodes. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench.h"

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

void bench_make_key(uint8_t *out, unsigned size, uint64_t space, uint64_t n)
{
    char dec[24];
    /* One encoding for the whole key space: mixing them would break the order. */
    if ((unsigned)snprintf(dec, sizeof dec, "%" PRIu64, space - 1) <= size) {
        int len = snprintf(dec, sizeof dec, "%" PRIu64, n);
        memset(out, '0', size - (unsigned)len);
        memcpy(out + size - (unsigned)len, dec, (size_t)len);
        return;
    }
    memset(out, 0, size);
    for (unsigned i = 0; i < 8 && i < size; i++) {
        out[size - 1 - i] = (uint8_t)(n >> (8 * i));
    }
}

static uint64_t pick_key(struct worker *w, uint64_t op_no)
{
    const struct config *cfg = w->run->cfg;
    if (cfg->sequential) {
        return op_no % cfg->key_space;
    }
    return bench_xorshift(&w->rng) % cfg->key_space;
}

/* ---- Request construction (stack structs, packed at once by kvc_send). ---- */

static int send_put(struct worker *w, uint64_t op_no, uint64_t *id)
{
    const struct config *cfg = w->run->cfg;
    bench_make_key(w->key, cfg->key_size, cfg->key_space, pick_key(w, op_no));
    Kvdb__PutRequest req;
    kvdb__put_request__init(&req);
    req.key.data = w->key;
    req.key.len = cfg->key_size;
    req.value.data = w->run->value;
    req.value.len = cfg->val_size;
    return kvc_send(w->c, KVDB__METHOD__METHOD_PUT, &req.base, id);
}

static int send_range(struct worker *w, uint64_t op_no, uint64_t *id)
{
    const struct config *cfg = w->run->cfg;
    Kvdb__RangeRequest req;
    kvdb__range_request__init(&req);
    if (cfg->range_key != NULL) {
        req.key.data = (uint8_t *)cfg->range_key;
        req.key.len = strlen(cfg->range_key);
        if (cfg->range_end != NULL) {
            req.range_end.data = (uint8_t *)cfg->range_end;
            req.range_end.len = strlen(cfg->range_end);
        }
    } else {
        bench_make_key(w->key, cfg->key_size, cfg->key_space, pick_key(w, op_no));
        req.key.data = w->key;
        req.key.len = cfg->key_size;
    }
    req.serializable = cfg->serializable;
    return kvc_send(w->c, KVDB__METHOD__METHOD_RANGE, &req.base, id);
}

/* etcd `benchmark txn-put`: a transaction without compares whose success branch holds
 * --txn-ops puts of distinct keys. */
static int send_txn_put(struct worker *w, uint64_t op_no, uint64_t *id)
{
    const struct config *cfg = w->run->cfg;
    Kvdb__PutRequest puts[MAX_TXN_OPS];
    Kvdb__RequestOp ops[MAX_TXN_OPS];
    Kvdb__RequestOp *op_ptrs[MAX_TXN_OPS];
    /* Consecutive key numbers from one pick: a transaction may not put one key twice. */
    uint64_t first = pick_key(w, op_no * cfg->txn_ops);
    for (unsigned i = 0; i < cfg->txn_ops; i++) {
        bench_make_key(w->keys[i], cfg->key_size, cfg->key_space, (first + i) % cfg->key_space);
        kvdb__put_request__init(&puts[i]);
        puts[i].key.data = w->keys[i];
        puts[i].key.len = cfg->key_size;
        puts[i].value.data = w->run->value;
        puts[i].value.len = cfg->val_size;
        kvdb__request_op__init(&ops[i]);
        ops[i].request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
        ops[i].request_put = &puts[i];
        op_ptrs[i] = &ops[i];
    }
    Kvdb__TxnRequest req;
    kvdb__txn_request__init(&req);
    req.n_success = cfg->txn_ops;
    req.success = op_ptrs;
    return kvc_send(w->c, KVDB__METHOD__METHOD_TXN, &req.base, id);
}

/* ---- The per-connection loop. ---- */

void bench_table_put(struct worker *w, uint64_t id, unsigned slot)
{
    unsigned i = (unsigned)id & w->mask;
    while (w->table[i] != 0) {
        i = (i + 1) & w->mask;
    }
    w->table[i] = slot + 1;
}

int bench_table_take(struct worker *w, uint64_t id)
{
    unsigned i = (unsigned)id & w->mask;
    while (w->table[i] != 0) {
        unsigned s = w->table[i] - 1;
        if (w->slots[s].sent_ns != 0 && w->slots[s].id == id) {
            /* Backward-shift deletion keeps every probe chain intact. */
            unsigned hole = i;
            for (unsigned j = (i + 1) & w->mask; w->table[j] != 0; j = (j + 1) & w->mask) {
                unsigned home = (unsigned)w->slots[w->table[j] - 1].id & w->mask;
                if (((j - home) & w->mask) >= ((j - hole) & w->mask)) {
                    w->table[hole] = w->table[j];
                    hole = j;
                }
            }
            w->table[hole] = 0;
            return (int)s;
        }
        i = (i + 1) & w->mask;
    }
    return -1;
}

static void note_error(struct worker *w, const char *what)
{
    w->errors++;
    if (w->first_error[0] == '\0') {
        snprintf(w->first_error, sizeof w->first_error, "%s", what);
    }
}

/* Claim the next op number, or false when the run has issued all it may. */
static bool claim_op(struct worker *w, uint64_t now, uint64_t *op_no)
{
    const struct config *cfg = w->run->cfg;
    if (w->run->stop_ns != 0 && now >= w->run->stop_ns) {
        return false;
    }
    uint64_t n = atomic_fetch_add_explicit(&w->run->next_op, 1, memory_order_relaxed);
    if (cfg->total != 0 && n >= cfg->total) {
        return false;
    }
    *op_no = n;
    return true;
}

/* Queue requests for idle clients as the rate allows.  Returns false once nothing more will be
 * issued by this worker. */
static bool issue(struct worker *w, uint64_t now)
{
    const struct config *cfg = w->run->cfg;
    while (w->n_idle > 0) {
        if (w->rate > 0 && now < w->next_issue_ns) {
            return true;
        }
        uint64_t op_no;
        if (!claim_op(w, now, &op_no)) {
            return false;
        }
        if (w->rate > 0) {
            /* A fixed schedule, so sends due while every client was busy go out now, but
             * at most 10 ms of such backlog: a stall must not turn into a long burst. */
            if (w->next_issue_ns + 10000000u < now) {
                w->next_issue_ns = now - 10000000u;
            }
            w->next_issue_ns += (uint64_t)(1e9 / w->rate);
        }
        bool is_read =
            cfg->op == OP_RANGE ||
            (cfg->op == OP_MIXED &&
             (double)(bench_xorshift(&w->rng) >> 11) / 9007199254740992.0 < cfg->read_ratio);
        uint64_t id;
        int rv = cfg->op == OP_TXN_PUT ? send_txn_put(w, op_no, &id)
                 : is_read             ? send_range(w, op_no, &id)
                                       : send_put(w, op_no, &id);
        if (rv != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "send: %s: %s", kvc_strerror(rv), kvc_errmsg(w->c));
            note_error(w, msg);
            continue;
        }
        unsigned s = w->idle[--w->n_idle];
        w->slots[s] = (struct slot){.id = id, .sent_ns = bench_now_ns(), .is_read = is_read};
        bench_table_put(w, id, s);
    }
    return true;
}

bool bench_range_has_kv(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint64_t tag = 0, n = 0;
        for (unsigned sh = 0; i < len && sh < 64; sh += 7) {
            tag |= (uint64_t)(p[i] & 0x7f) << sh;
            if ((p[i++] & 0x80) == 0) {
                break;
            }
        }
        if ((tag & 7) == 2 && (tag >> 3) == 2) {
            return true;
        }
        if ((tag & 7) != 0 && (tag & 7) != 2) {
            return false; /* RangeResponse has only varint and length-delimited fields */
        }
        for (unsigned sh = 0; i < len && sh < 64; sh += 7) {
            n |= (uint64_t)(p[i] & 0x7f) << sh;
            if ((p[i++] & 0x80) == 0) {
                break;
            }
        }
        if ((tag & 7) == 2) {
            if (n > len - i) {
                return false;
            }
            i += n;
        }
    }
    return false;
}

static void complete(struct worker *w,
                     uint64_t id,
                     Kvdb__ErrorCode code,
                     const uint8_t *body,
                     size_t len)
{
    uint64_t t = bench_now_ns();
    int s = bench_table_take(w, id);
    if (s < 0) {
        return;
    }
    struct slot *sl = &w->slots[s];
    unsigned cls = w->run->cfg->op == OP_MIXED && sl->is_read ? 1 : 0;
    if (code == KVDB__ERROR_CODE__OK) {
        bench_hist_add(&w->lat[cls], t - sl->sent_ns);
        if (sl->is_read && !bench_range_has_kv(body, len)) {
            w->empty_reads++;
        }
        w->ok[cls]++;
    } else {
        w->err_by_code[(unsigned)code < 16 ? (unsigned)code : 15]++;
        note_error(w, kvc_errmsg(w->c));
    }
    sl->sent_ns = 0;
    w->idle[w->n_idle++] = (unsigned)s;
}

/* Give up on requests in flight: all of them after a broken connection (@all), else those
 * older than the request timeout.  Their replies, if any come, are ignored. */
static void expire(struct worker *w, bool all, const char *why)
{
    uint64_t limit = bench_now_ns() - (uint64_t)w->run->cfg->timeout_ms * 1000000u;
    for (unsigned s = 0; s < w->n_clients; s++) {
        struct slot *sl = &w->slots[s];
        if (sl->sent_ns != 0 && (all || sl->sent_ns < limit)) {
            int taken = bench_table_take(w, sl->id);
            assert(taken == (int)s);
            (void)taken;
            sl->sent_ns = 0;
            w->idle[w->n_idle++] = s;
            w->lost++;
            note_error(w, why);
        }
    }
}

/* How long kvc_recv may block: until the next paced send, a duration end, or 50 ms. */
static unsigned wait_ms(const struct worker *w, uint64_t now, bool more)
{
    uint64_t until = now + 50000000u;
    if (more && w->rate > 0 && w->n_idle > 0 && w->next_issue_ns < until) {
        until = w->next_issue_ns;
    }
    if (more && w->run->stop_ns != 0 && w->run->stop_ns < until) {
        until = w->run->stop_ns;
    }
    /* At least 1 ms: kvc_recv with 0 only looks at what is already buffered. */
    return until > now + 1000000u ? (unsigned)((until - now + 999999) / 1000000) : 1;
}

void *bench_worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&w->run->ready);
    bool more = true;
    for (;;) {
        uint64_t now = bench_now_ns();
        if (more) {
            more = issue(w, now);
        }
        if (w->n_idle == w->n_clients) {
            if (!more) {
                break;
            }
            /* Nothing in flight: pacing (or a failed send) left every client idle. */
            unsigned ms = wait_ms(w, now, more);
            struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        uint64_t id;
        Kvdb__ErrorCode code;
        const uint8_t *body;
        size_t len;
        int rv = kvc_recv(w->c, wait_ms(w, now, more), &id, &code, &body, &len);
        if (rv == KVC_ETIMEOUT) {
            expire(w, false, "request timed out");
            continue;
        }
        if (rv != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "recv: %s: %s", kvc_strerror(rv), kvc_errmsg(w->c));
            expire(w, true, msg);
            continue;
        }
        complete(w, id, code, body, len);
        /* Drain replies already buffered (timeout 0 never touches the socket) before queueing
         * the next batch, so one send() carries many requests. */
        while ((rv = kvc_recv(w->c, 0, &id, &code, &body, &len)) == 0) {
            complete(w, id, code, body, len);
        }
        if (rv != KVC_ETIMEOUT) {
            char msg[300];
            snprintf(msg, sizeof msg, "recv: %s: %s", kvc_strerror(rv), kvc_errmsg(w->c));
            expire(w, true, msg);
        }
    }
    return NULL;
}

/* ---- Setup. ---- */

/* @list rotated to start at its (@i mod n)-th endpoint, so connections spread over members the
 * way etcd's benchmark spreads them, while each keeps the others for failover. */
static void rotate_endpoints(const char *list, unsigned i, char *out, size_t cap)
{
    const char *parts[64];
    size_t lens[64];
    unsigned n = 0;
    for (const char *p = list; *p != '\0' && n < 64;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        parts[n] = p;
        lens[n++] = len;
        p += len + (comma != NULL ? 1 : 0);
    }
    out[0] = '\0';
    size_t used = 0;
    for (unsigned k = 0; k < n && used < cap; k++) {
        unsigned j = (i + k) % n;
        int w =
            snprintf(out + used, cap - used, "%s%.*s", k > 0 ? "," : "", (int)lens[j], parts[j]);
        used += w > 0 ? (size_t)w : 0;
    }
}

int bench_worker_init(struct worker *w, struct run *run, unsigned index, unsigned n_clients)
{
    const struct config *cfg = run->cfg;
    memset(w, 0, sizeof *w);
    w->run = run;
    w->index = index;
    w->n_clients = n_clients;
    w->rate = cfg->rate * n_clients / cfg->clients;
    /* Nanoseconds and pid: two runs started within one second must not draw the same keys (a
     * get run would then read exactly the keys the put run before it wrote). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = 0x9e3779b97f4a7c15ull * (index + 1) ^ (uint64_t)ts.tv_sec * 1000000007u ^
             (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
    w->rng = w->rng != 0 ? w->rng : 1;
    unsigned size = 1;
    while (size < 2 * n_clients) {
        size <<= 1;
    }
    w->mask = size - 1;
    w->slots = calloc(n_clients, sizeof *w->slots);
    w->idle = calloc(n_clients, sizeof *w->idle);
    w->table = calloc(size, sizeof *w->table);
    if (w->slots == NULL || w->idle == NULL || w->table == NULL) {
        return KVC_ENOMEM;
    }
    for (unsigned s = 0; s < n_clients; s++) {
        w->idle[w->n_idle++] = n_clients - 1 - s;
    }
    bench_hist_init(&w->lat[0]);
    bench_hist_init(&w->lat[1]);
    char eps[1024];
    rotate_endpoints(cfg->endpoints, index, eps, sizeof eps);
    char errmsg[256] = "";
    int rv = kvc_open(eps, NULL, &w->c, errmsg);
    if (rv != 0) {
        snprintf(w->first_error, sizeof w->first_error, "connect %.200s: %.255s", eps, errmsg);
    }
    return rv;
}

void bench_worker_fini(struct worker *w)
{
    kvc_close(w->c);
    free(w->slots);
    free(w->idle);
    free(w->table);
}
