#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "test/unit/server/fixture.h"

struct srv_embed *sf_start(const struct srv_embed_opts *o, int *leader)
{
    struct srv_embed *c;
    char err[256];
    if (srv_embed_start(o, &c, err) != 0) {
        fail_msg("start %u members: %s", o->members, err);
    }
    int l = srv_embed_wait_leader(c, 10000);
    if (l < 0) {
        srv_embed_destroy(c); /* not left running under the next test */
        fail_msg("no leader in 10 s");
    }
    if (leader != NULL) {
        *leader = l;
    }
    return c;
}

struct kvc *sf_client(const char *eps, unsigned timeout_ms)
{
    struct kvc_options o = {.request_timeout_ms = timeout_ms};
    struct kvc *k = NULL;
    char err[256];
    if (kvc_open(eps, &o, &k, err) != 0) {
        fail_msg("open %s: %s", eps, err);
    }
    return k;
}

int64_t sf_put(struct kvc *k, const char *key, const char *val)
{
    Kvdb__PutResponse *r = NULL;
    int rv = kvc_put(k, key, strlen(key), val, strlen(val), &r);
    if (rv != 0) {
        fail_msg("put %s: %s: %s", key, kvc_strerror(rv), kvc_errmsg(k));
    }
    int64_t rev = r->header->revision;
    kvdb__put_response__free_unpacked(r, NULL);
    return rev;
}

int sf_call(struct kvc *k,
            Kvdb__Method m,
            const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *resp = NULL;
    int rv = kvc_call(k, m, req, d, &resp);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rv;
}

void sf_watch(struct kvc *w,
              const char *key,
              const char *end,
              int64_t rev,
              bool prev,
              bool no_delete)
{
    Kvdb__WatchCreateRequest r;
    kvdb__watch_create_request__init(&r);
    r.key.data = (uint8_t *)key;
    r.key.len = strlen(key);
    if (end != NULL) {
        r.range_end.data = (uint8_t *)end;
        r.range_end.len = strlen(end);
    }
    r.start_revision = rev;
    r.prev_kv = prev;
    Kvdb__WatchCreateRequest__FilterType nodel = KVDB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    if (no_delete) {
        r.filters = &nodel;
        r.n_filters = 1;
    }
    uint64_t stream;
    assert_int_equal(kvc_watch(w, &r, &stream), 0);
    /* The "created" response comes first. */
    Kvdb__WatchResponse *resp;
    assert_int_equal(kvc_watch_next(w, 10000, &stream, &resp), 0);
    assert_true(resp->created);
    kvdb__watch_response__free_unpacked(resp, NULL);
}

void sf_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Status of the member at @ep, or NULL when it does not answer. */
static Kvdb__StatusResponse *status_of(const char *ep)
{
    struct kvc *k = sf_client(ep, 2000);
    Kvdb__StatusRequest req;
    kvdb__status_request__init(&req);
    Kvdb__StatusResponse *resp = NULL;
    if (kvc_call(k, KVDB__METHOD__METHOD_STATUS, &req.base, &kvdb__status_response__descriptor,
                 (ProtobufCMessage **)&resp) != 0) {
        resp = NULL;
    }
    kvc_close(k);
    return resp;
}

/* Every key of member @ep as one comparable byte string (key, value, revisions, lease per key),
 * read serializably (this member's own state). */
static char *dump_keys(const char *ep, size_t *len)
{
    struct kvc *k = sf_client(ep, 5000);
    Kvdb__RangeRequest req;
    kvdb__range_request__init(&req);
    req.key.data = (uint8_t *)"\0";
    req.key.len = 1;
    req.range_end.data = (uint8_t *)"\0";
    req.range_end.len = 1;
    req.serializable = true;
    Kvdb__RangeResponse *r = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_RANGE, &req.base, &kvdb__range_response__descriptor,
                      (ProtobufCMessage **)&r);
    if (rv != 0) {
        fail_msg("range on %s: %s", ep, kvc_errmsg(k));
    }
    size_t cap = 64, n = 0;
    for (size_t i = 0; i < r->n_kvs; i++) {
        cap += r->kvs[i]->key.len + r->kvs[i]->value.len + 64;
    }
    char *out = malloc(cap);
    assert_non_null(out);
    for (size_t i = 0; i < r->n_kvs; i++) {
        const Kvdb__KeyValue *kv = r->kvs[i];
        memcpy(out + n, kv->key.data, kv->key.len);
        n += kv->key.len;
        memcpy(out + n, kv->value.data, kv->value.len);
        n += kv->value.len;
        n += (size_t)snprintf(out + n, cap - n, "|%lld %lld %lld %lld\n",
                              (long long)kv->create_revision, (long long)kv->mod_revision,
                              (long long)kv->version, (long long)kv->lease);
    }
    kvdb__range_response__free_unpacked(r, NULL);
    kvc_close(k);
    *len = n;
    return out;
}

static uint32_t hash_of(const char *ep, int64_t rev)
{
    struct kvc *k = sf_client(ep, 5000);
    Kvdb__HashKVRequest req;
    kvdb__hash_kvrequest__init(&req);
    req.revision = rev;
    Kvdb__HashKVResponse *resp = NULL;
    int rv = kvc_call(k, KVDB__METHOD__METHOD_HASH_KV, &req.base,
                      &kvdb__hash_kvresponse__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        fail_msg("hashkv at %lld on %s: %s", (long long)rev, ep, kvc_errmsg(k));
    }
    uint32_t h = resp->hash;
    assert_int_equal(resp->hash_revision, rev);
    kvdb__hash_kvresponse__free_unpacked(resp, NULL);
    kvc_close(k);
    return h;
}

/* Wait until every running member reports the same applied index and revision (nothing is being
 * written meanwhile), or fail after @timeout_ms.  Returns that revision. */
static int64_t wait_same_applied(struct srv_embed *c, unsigned n, unsigned timeout_ms)
{
    char last[512] = "";
    unsigned mismatches = 0; /* in a row: one could be a read between an apply and its header */
    for (unsigned waited = 0;; waited += 50) {
        uint64_t applied = 0;
        int64_t rev = -1;
        bool same = true, same_rev = true;
        size_t off = 0;
        for (unsigned i = 0; i < n && same; i++) {
            if (!srv_embed_is_running(c, i)) {
                continue;
            }
            Kvdb__StatusResponse *st = status_of(srv_embed_endpoint(c, i));
            if (st == NULL) {
                same = false;
                break;
            }
            off += (size_t)snprintf(last + off, sizeof last - off > 0 ? sizeof last - off : 0,
                                    " m%u applied %llu rev %lld;", i,
                                    (unsigned long long)st->raft_applied_index,
                                    (long long)st->header->revision);
            if (off >= sizeof last) {
                off = sizeof last - 1;
            }
            if (rev < 0) {
                applied = st->raft_applied_index;
                rev = st->header->revision;
            } else if (st->raft_applied_index != applied) {
                same = false;
            } else if (st->header->revision != rev) {
                same_rev = false;
            }
            kvdb__status_response__free_unpacked(st, NULL);
        }
        mismatches = same && !same_rev ? mismatches + 1 : 0;
        if (mismatches == 3) {
            fail_msg("members applied the same log but hold different revisions:%s", last);
        }
        if (same && rev >= 0) {
            return rev;
        }
        if (waited >= timeout_ms) {
            fail_msg("members did not reach one applied index in %u ms:%s", timeout_ms, last);
        }
        sf_sleep_ms(50);
    }
}

int64_t sf_assert_converged(struct srv_embed *c, unsigned n, unsigned timeout_ms)
{
    int64_t rev = wait_same_applied(c, n, timeout_ms);
    int first = -1;
    uint32_t h0 = 0;
    char *d0 = NULL;
    size_t l0 = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!srv_embed_is_running(c, i)) {
            continue;
        }
        uint32_t h = hash_of(srv_embed_endpoint(c, i), rev);
        size_t len;
        char *d = dump_keys(srv_embed_endpoint(c, i), &len);
        if (first < 0) {
            first = (int)i;
            h0 = h;
            d0 = d;
            l0 = len;
            continue;
        }
        if (h != h0 || len != l0 || memcmp(d, d0, len) != 0) {
            fail_msg(
                "members m%d and m%u differ at revision %lld: hashkv %08x vs %08x, keys "
                "%zu vs %zu bytes:\n--- m%d\n%.*s--- m%u\n%.*s",
                first, i, (long long)rev, h0, h, l0, len, first, (int)(l0 < 2000 ? l0 : 2000), d0,
                i, (int)(len < 2000 ? len : 2000), d);
        }
        free(d);
    }
    free(d0);
    return rev;
}
