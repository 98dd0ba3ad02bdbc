/* The C client (client/kvc.h) against embedded members: a watch, unary calls and pipelined
 * requests on one handle each get all of their frames; the backlog's bound fails a call instead
 * of dropping frames; retries with no leader follow the documented backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/unit/server/fixture.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The next event of @k's watch (waiting up to 10 s); fails the test on an error. */
static const Kvdb__Event *next_event(struct kvc *k, Kvdb__WatchResponse **hold, size_t *i)
{
    while (*hold == NULL || *i == (*hold)->n_events) {
        if (*hold != NULL) {
            kvdb__watch_response__free_unpacked(*hold, NULL);
            *hold = NULL;
        }
        uint64_t stream;
        int rv = kvc_watch_next(k, 10000, &stream, hold);
        if (rv != 0) {
            fail_msg("watch: %s: %s", kvc_strerror(rv), kvc_errmsg(k));
        }
        assert_false((*hold)->canceled);
        *i = 0;
    }
    return (*hold)->events[(*i)++];
}

/* Issue #14.10: the puts' replies and the watch's events share one connection; each put's call
 * reads the events sent before its reply, and must keep them for kvc_watch_next. */
static void watch_and_puts_on_one_handle_get_every_event_and_reply(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 10000);
    sf_watch(k, "w", NULL, 0, false, false);
    enum { N = 5 };
    int64_t revs[N];
    char val[8];
    for (int i = 0; i < N; i++) {
        snprintf(val, sizeof val, "v%d", i);
        revs[i] = sf_put(k, "w", val);
    }
    Kvdb__WatchResponse *hold = NULL;
    size_t at = 0;
    for (int i = 0; i < N; i++) {
        const Kvdb__Event *e = next_event(k, &hold, &at);
        snprintf(val, sizeof val, "v%d", i);
        assert_int_equal(e->type, KVDB__EVENT__EVENT_TYPE__PUT);
        assert_int_equal(e->kv->mod_revision, revs[i]);
        assert_int_equal(e->kv->value.len, strlen(val));
        assert_memory_equal(e->kv->value.data, val, strlen(val));
    }
    kvdb__watch_response__free_unpacked(hold, NULL);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A serializable read sent with kvc_send is answered at once, before a put sent after it is
 * committed: the put's call reads that reply first and must keep it for kvc_recv. */
static void pipelined_reply_read_by_a_call_is_delivered_by_recv(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 10000);
    int64_t rev = sf_put(k, "p", "1");
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    r.key.data = (uint8_t *)"p";
    r.key.len = 1;
    r.serializable = true;
    uint64_t sent;
    assert_int_equal(kvc_send(k, KVDB__METHOD__METHOD_RANGE, &r.base, &sent), 0);
    assert_true(sf_put(k, "p", "2") > rev);

    uint64_t id;
    Kvdb__ErrorCode code;
    const uint8_t *body;
    size_t len;
    int rv = kvc_recv(k, 5000, &id, &code, &body, &len);
    if (rv != 0) {
        fail_msg("recv: %s: %s", kvc_strerror(rv), kvc_errmsg(k));
    }
    assert_int_equal(id, sent);
    assert_int_equal(code, KVDB__ERROR_CODE__OK);
    Kvdb__RangeResponse *rr = kvdb__range_response__unpack(NULL, len, body);
    assert_non_null(rr);
    assert_int_equal(rr->n_kvs, 1);
    assert_int_equal(rr->kvs[0]->mod_revision, rev);
    kvdb__range_response__free_unpacked(rr, NULL);
    assert_int_equal(kvc_recv(k, 0, &id, &code, &body, &len), KVC_ETIMEOUT);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* With the backlog bounded at 2 frames, unread events make a put fail with KVC_EOVERFLOW; after
 * the watcher reads them, every revision's event is there, in order, none missing. */
static void backlog_bound_fails_the_call_and_drops_nothing(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc_options ko = {.request_timeout_ms = 10000, .max_backlog = 2};
    struct kvc *k = NULL;
    char err[256];
    assert_int_equal(kvc_open(srv_embed_endpoints(c), &ko, &k, err), 0);
    sf_watch(k, "o", NULL, 0, false, false);
    int64_t first = sf_put(k, "o", "x");
    int64_t last = first;
    int rv = 0;
    for (int i = 0; i < 10 && rv == 0; i++) {
        Kvdb__PutResponse *r = NULL;
        rv = kvc_put(k, "o", 1, "x", 1, &r);
        if (rv == 0) {
            last = r->header->revision;
            kvdb__put_response__free_unpacked(r, NULL);
        }
    }
    assert_int_equal(rv, KVC_EOVERFLOW);

    /* Read up to the last acknowledged put, put once more (the backlog has room again), and read
     * on to that one: the revisions seen must be consecutive (a put that failed while waiting
     * may have executed: its event is then among them). */
    Kvdb__WatchResponse *hold = NULL;
    size_t at = 0;
    int64_t want = first;
    while (want <= last) {
        assert_int_equal(next_event(k, &hold, &at)->kv->mod_revision, want++);
    }
    int64_t final = sf_put(k, "o", "y");
    while (want <= final) {
        assert_int_equal(next_event(k, &hold, &at)->kv->mod_revision, want++);
    }
    kvdb__watch_response__free_unpacked(hold, NULL);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A call that fails over to another member closes the connection that carried the handle's
 * watch: kvc_watch_next must say so (KVC_EIO, once) instead of waiting on the new connection for
 * events that will never come. */
static void watch_lost_in_a_failover_is_reported_once(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    unsigned follower = ((unsigned)leader + 1) % 3;
    char eps[128];
    snprintf(eps, sizeof eps, "%s,%s", srv_embed_endpoint(c, follower),
             srv_embed_endpoint(c, (unsigned)leader));
    struct kvc *k = sf_client(eps, 10000);
    sf_watch(k, "f", NULL, 0, false, false);
    srv_embed_kill(c, follower);
    Kvdb__RangeResponse *rr = NULL;
    int rv = kvc_get(k, "f", 1, false, &rr); /* a read: retried on the leader */
    if (rv != 0) {
        fail_msg("get: %s: %s", kvc_strerror(rv), kvc_errmsg(k));
    }
    kvdb__range_response__free_unpacked(rr, NULL);

    uint64_t stream;
    Kvdb__WatchResponse *wr = NULL;
    uint64_t t0 = now_ms();
    assert_int_equal(kvc_watch_next(k, 5000, &stream, &wr), KVC_EIO);
    assert_true(now_ms() - t0 < 1000);
    assert_non_null(strstr(kvc_errmsg(k), "watches ended"));
    assert_int_equal(kvc_watch_next(k, 100, &stream, &wr), KVC_ETIMEOUT);

    /* Reopened on the new connection, the watch works. */
    sf_watch(k, "f", NULL, 0, false, false);
    int64_t rev = sf_put(k, "f", "1");
    Kvdb__WatchResponse *hold = NULL;
    size_t at = 0;
    assert_int_equal(next_event(k, &hold, &at)->kv->mod_revision, rev);
    kvdb__watch_response__free_unpacked(hold, NULL);
    kvc_close(k);
    sf_assert_converged(c, 3, 10000);
    srv_embed_destroy(c);
}

/* kvdb_server_client_requests_total of the member at @ep ("127.0.0.1:port"), from /metrics. */
static double client_requests(const char *ep)
{
    const char *colon = strrchr(ep, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    static char buf[1 << 16];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0) {
        len += (size_t)n; /* the member closes after answering */
    }
    close(fd);
    buf[len] = '\0';
    const char *name = "\nkvdb_server_client_requests_total ";
    const char *p = strstr(buf, name);
    if (p == NULL) {
        fail_msg("no %s in /metrics of %s", name + 1, ep);
    }
    return strtod(p + strlen(name), NULL);
}

/* Issue #14.10: with no leader a put is refused with UNAVAILABLE and retried; the retries must
 * sleep 50, 100, 200, 400, 800, 1000 ms... (kvc.h), so 7 attempts in 3 s, not a busy loop. */
static void no_leader_call_retries_on_the_documented_backoff(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    unsigned survivor = ((unsigned)leader + 1) % 3;
    srv_embed_kill(c, (unsigned)leader);
    srv_embed_kill(c, ((unsigned)leader + 2) % 3);
    const char *ep = srv_embed_endpoint(c, survivor);

    /* Wait until the survivor knows it has no leader (an election timeout). */
    struct kvc *k = sf_client(ep, 3000);
    uint64_t until = now_ms() + 10000;
    for (;;) {
        Kvdb__StatusRequest sr;
        kvdb__status_request__init(&sr);
        Kvdb__StatusResponse *st = NULL;
        assert_int_equal(kvc_call(k, KVDB__METHOD__METHOD_STATUS, &sr.base,
                                  &kvdb__status_response__descriptor, (ProtobufCMessage **)&st),
                         0);
        bool none = st->leader == 0;
        kvdb__status_response__free_unpacked(st, NULL);
        if (none) {
            break;
        }
        assert_true(now_ms() < until);
        sf_sleep_ms(20);
    }

    double before = client_requests(ep);
    uint64_t t0 = now_ms();
    Kvdb__PutResponse *pr = NULL;
    int rv = kvc_put(k, "k", 1, "v", 1, &pr);
    uint64_t took = now_ms() - t0;
    double attempts = client_requests(ep) - before;
    print_message("put without a leader: %s after %llu ms, %.0f attempts\n", kvc_strerror(rv),
                  (unsigned long long)took, attempts);
    assert_int_equal(rv, KVC_ETIMEOUT);
    assert_int_equal(kvc_server_code(k), KVDB__ERROR_CODE__UNAVAILABLE);
    assert_true(took >= 2900 && took < 4000);
    assert_true(attempts >= 6 && attempts <= 8);
    kvc_close(k);
    srv_embed_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(watch_and_puts_on_one_handle_get_every_event_and_reply),
        cmocka_unit_test(pipelined_reply_read_by_a_call_is_delivered_by_recv),
        cmocka_unit_test(backlog_bound_fails_the_call_and_drops_nothing),
        cmocka_unit_test(watch_lost_in_a_failover_is_reported_once),
        cmocka_unit_test(no_leader_call_retries_on_the_documented_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
