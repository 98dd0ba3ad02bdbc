/* Watch through a real member (embedded): history catch-up, live events, filters, prev_kv,
 * cancel, compaction, and watchers on a follower. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/failpoint.h"
#include "test/unit/server/fixture.h"

struct fix
{
    struct srv_embed *c;
    struct kvc *k;
};

static int setup(void **state)
{
    static struct fix f;
    struct srv_embed_opts o = {.members = 3};
    f.c = sf_start(&o, NULL);
    f.k = sf_client(srv_embed_endpoints(f.c), 15000);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    kvc_close(f->k);
    srv_embed_destroy(f->c);
    return 0;
}

static void del(struct kvc *k, const char *key)
{
    Kvdb__DeleteRangeResponse *r;
    assert_int_equal(kvc_delete(k, key, strlen(key), &r), 0);
    kvdb__delete_range_response__free_unpacked(r, NULL);
}

/* Collect events from @w until @n arrived (or fail after 10 s).  Returns the events' "TYPE key
 * value[/prev]" joined by '|'. */
static void collect(struct kvc *w, size_t n, char *out, size_t cap)
{
    size_t got = 0;
    out[0] = '\0';
    while (got < n) {
        uint64_t stream;
        Kvdb__WatchResponse *r;
        int rv = kvc_watch_next(w, 10000, &stream, &r);
        if (rv != 0) {
            fail_msg("watch: %s after %zu of %zu events: %s", kvc_strerror(rv), got, n, out);
        }
        assert_false(r->canceled);
        for (size_t i = 0; i < r->n_events; i++, got++) {
            const Kvdb__Event *e = r->events[i];
            size_t len = strlen(out);
            snprintf(out + len, cap - len, "%s%s %.*s %.*s", len > 0 ? "|" : "",
                     e->type == KVDB__EVENT__EVENT_TYPE__PUT ? "PUT" : "DEL", (int)e->kv->key.len,
                     e->kv->key.data, (int)e->kv->value.len, e->kv->value.data);
            if (e->prev_kv != NULL) {
                len = strlen(out);
                snprintf(out + len, cap - len, "/%.*s", (int)e->prev_kv->value.len,
                         e->prev_kv->value.data);
            }
        }
        kvdb__watch_response__free_unpacked(r, NULL);
    }
}

static struct kvc *watcher(struct fix *f, unsigned member)
{
    return sf_client(srv_embed_endpoint(f->c, member), 10000);
}

/* History from a past revision, then live events, on a prefix, on every member. */
static void history_then_live_on_each_member(void **state)
{
    struct fix *f = *state;
    int64_t first = sf_put(f->k, "h/a", "1");
    sf_put(f->k, "h/b", "1");
    sf_put(f->k, "other", "x");
    sf_put(f->k, "h/a", "2");
    del(f->k, "h/b");
    for (unsigned m = 0; m < 3; m++) {
        struct kvc *w = watcher(f, m);
        sf_watch(w, "h/", "h0", first, true, false);
        /* The history includes the live puts of the members watched before. */
        char got[1024], want_hist[1024] = "PUT h/a 1|PUT h/b 1|PUT h/a 2/1|DEL h/b /1";
        for (unsigned prev = 0; prev < m; prev++) {
            size_t len = strlen(want_hist);
            snprintf(want_hist + len, sizeof want_hist - len, "|PUT h/live%u v", prev);
        }
        collect(w, 4 + m, got, sizeof got);
        assert_string_equal(got, want_hist);
        char key[16];
        snprintf(key, sizeof key, "h/live%u", m);
        sf_put(f->k, key, "v");
        sf_put(f->k, "zzz", "not watched");
        collect(w, 1, got, sizeof got);
        char want[64];
        snprintf(want, sizeof want, "PUT %s v", key);
        assert_string_equal(got, want);
        kvc_close(w);
    }
}

/* A NODELETE filter and a single-key watch from now. */
static void filters_and_single_key(void **state)
{
    struct fix *f = *state;
    struct kvc *w = watcher(f, 1);
    sf_watch(w, "f/k", NULL, 0, false, true);
    sf_put(f->k, "f/k", "1");
    sf_put(f->k, "f/k2", "no"); /* another key */
    del(f->k, "f/k");           /* filtered */
    sf_put(f->k, "f/k", "2");
    char got[256];
    collect(w, 2, got, sizeof got);
    assert_string_equal(got, "PUT f/k 1|PUT f/k 2");
    kvc_close(w);
}

/* A watch from a compacted revision is cancelled with the compact revision. */
static void compacted_revision_cancels(void **state)
{
    struct fix *f = *state;
    int64_t r1 = sf_put(f->k, "c/k", "1");
    int64_t r2 = sf_put(f->k, "c/k", "2");
    Kvdb__CompactionRequest cr;
    kvdb__compaction_request__init(&cr);
    cr.revision = r2;
    assert_int_equal(sf_call(f->k, KVDB__METHOD__METHOD_COMPACT, &cr.base,
                             &kvdb__compaction_response__descriptor),
                     0);
    struct kvc *w = watcher(f, 0);
    Kvdb__WatchCreateRequest r;
    kvdb__watch_create_request__init(&r);
    r.key.data = (uint8_t *)"c/k";
    r.key.len = 3;
    r.start_revision = r1;
    uint64_t stream;
    assert_int_equal(kvc_watch(w, &r, &stream), 0);
    bool canceled = false;
    for (int i = 0; i < 3 && !canceled; i++) {
        Kvdb__WatchResponse *wr;
        assert_int_equal(kvc_watch_next(w, 10000, &stream, &wr), 0);
        if (wr->canceled) {
            canceled = true;
            assert_true(wr->compact_revision >= r2);
        }
        kvdb__watch_response__free_unpacked(wr, NULL);
    }
    assert_true(canceled);
    kvc_close(w);
}

/* Events whose response cannot be built (out of memory: the "watch_alloc" failpoint) cancel the
 * watcher with a reason the client sees, as etcd would rather than lose events; the response
 * never arrives without them.  Another watcher, built afterwards, gets the next events. */
static void out_of_memory_cancels_instead_of_dropping_events(void **state)
{
    struct fix *f = *state;
    struct kvc *w = watcher(f, 2);
    sf_watch(w, "oom/k", NULL, 0, false, false);
    assert_int_equal(
        srv_fp_set("watch_alloc", srv_embed_member_id(f->c, 2), SRV_FP_ERROR, 100, 1, 0), 0);
    sf_put(f->k, "oom/k", "1");
    uint64_t stream;
    Kvdb__WatchResponse *r;
    assert_int_equal(kvc_watch_next(w, 10000, &stream, &r), 0);
    srv_fp_clear_all();
    assert_true(r->canceled);
    assert_int_equal(r->n_events, 0);
    assert_non_null(strstr(r->cancel_reason, "out of memory"));
    kvdb__watch_response__free_unpacked(r, NULL);
    kvc_close(w);

    w = watcher(f, 2);
    sf_watch(w, "oom/k", NULL, 0, false, false);
    sf_put(f->k, "oom/k", "2");
    char got[64];
    collect(w, 1, got, sizeof got);
    assert_string_equal(got, "PUT oom/k 2");
    kvc_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(history_then_live_on_each_member),
        cmocka_unit_test(filters_and_single_key),
        cmocka_unit_test(compacted_revision_cancels),
        cmocka_unit_test(out_of_memory_cancels_instead_of_dropping_events),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
