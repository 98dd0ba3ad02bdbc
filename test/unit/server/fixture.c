#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

void sf_put(struct kvc *k, const char *key, const char *val)
{
    Kvdb__PutResponse *r = NULL;
    int rv = kvc_put(k, key, strlen(key), val, strlen(val), &r);
    if (rv != 0) {
        fail_msg("put %s: %s: %s", key, kvc_strerror(rv), kvc_errmsg(k));
    }
    kvdb__put_response__free_unpacked(r, NULL);
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
