/* A damaged store: a read, an apply or the start-up check met a table that fails its checksum.
 * The member then refuses every read and stops with one line naming the file and what to do.
 *
 * Why stop rather than stay up refusing (docs/architecture.md, "Corruption"): a member that
 * refuses reads but still votes and acknowledges appends counts toward quorums with a store it
 * cannot apply to; stopping takes it out of them at once, as etcd's fatal corruption log does.
 * Its peers keep their quorum whenever the cluster could lose one member anyway. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

#define WHAT_TO_DO                                                                              \
    "restore this member from a healthy member's snapshot (kvctl snapshot save, kvdb-snapshot " \
    "restore) or remove it and add it back with an empty data dir"

struct srv_corrupt_report
{
    struct srv *s;
    char what[32];    /* "read", "apply", ... */
    char detail[256]; /* the store's message */
    bool located;     /* @detail already names the damaged table (lsm_verify's) */
};

bool srv_store_is_corrupt(struct srv *s)
{
    return atomic_load(&s->store_corrupt);
}

static bool closing(void *arg)
{
    return atomic_load(&((struct srv *)arg)->bg_stop);
}

/* lsm_verify under the lock that keeps the store from being swapped, one check at a time (two
 * would share the scratch directory). */
static int verify(struct srv *s, size_t *n_tables, char *err)
{
    pthread_mutex_lock(&s->verify_mu);
    pthread_rwlock_rdlock(&s->lsm_lock);
    int rv = s->lsm != NULL ? lsm_verify(s->lsm, closing, s, n_tables, err) : 0;
    pthread_rwlock_unlock(&s->lsm_lock);
    pthread_mutex_unlock(&s->verify_mu);
    return rv;
}

/* Stop the member with the line of @r (the loop reads it from the FATAL item). */
static void report_stop(struct srv_corrupt_report *r)
{
    struct srv *s = r->s;
    char msg[1024];
    snprintf(msg, sizeof msg, "store damaged (found by %s): %s: %s", r->what, r->detail,
             WHAT_TO_DO);
    if (strlen(msg) >= SRV_ERRMSG) {
        srv_log(SRV_LOG_ERROR, "store", "%s", msg); /* the fatal line below is cut short */
    }
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_FATAL;
        d->errmsg = strdup(msg);
        srv_post_done(s, d);
    }
}

/* LevelDB's own read errors do not say which table failed: find it before stopping. */
static void *report_main(void *arg)
{
    struct srv_corrupt_report *r = arg;
    char err[256] = "";
    if (!r->located && verify(r->s, NULL, err) == LSM_ECORRUPT) {
        snprintf(r->detail, sizeof r->detail, "%s", err);
    }
    report_stop(r);
    free(r);
    return NULL;
}

/* Report @r from a thread of its own, or here when none can start. */
static void report_start(struct srv_corrupt_report *r)
{
    if (srv_bg_start(r->s, report_main, r) != 0) {
        report_stop(r);
        free(r);
    }
}

void srv_store_corrupt(struct srv *s, const char *what, const char *detail)
{
    if (atomic_exchange(&s->store_corrupt, true)) {
        return; /* reported already */
    }
    struct srv_corrupt_report *r = calloc(1, sizeof *r);
    if (r == NULL) {
        struct srv_done *d = calloc(1, sizeof *d);
        if (d != NULL) {
            d->kind = SRV_DONE_FATAL; /* the generic line, but the member stops */
            srv_post_done(s, d);
        }
        return;
    }
    r->s = s;
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->detail, sizeof r->detail, "%s", detail);
    if (!s->threads_started) {
        s->corrupt_early = r; /* during start-up: srv_store_verify_start() reports it */
        return;
    }
    report_start(r);
}

/* Start-up: every live table checked whole, in the background (about 15 s per GB: serving does
 * not wait for it; reads and applies check what they touch meanwhile). */
static void *verify_main(void *arg)
{
    struct srv *s = arg;
    uint64_t t0 = srv_now_ms();
    size_t n = 0;
    char err[256] = "";
    int rv = verify(s, &n, err);
    if (rv == 0) {
        srv_log(SRV_LOG_INFO, "store", "checked %zu tables whole in %llu ms: no damage", n,
                (unsigned long long)(srv_now_ms() - t0));
    } else if (rv == LSM_ECORRUPT && !atomic_exchange(&s->store_corrupt, true)) {
        struct srv_corrupt_report *r = calloc(1, sizeof *r);
        if (r != NULL) {
            r->s = s;
            r->located = true;
            snprintf(r->what, sizeof r->what, "the start-up check");
            snprintf(r->detail, sizeof r->detail, "%s", err);
            report_stop(r);
            free(r);
        }
    } else if (rv != LSM_ECORRUPT && rv != LSM_ECLOSED) {
        srv_log(SRV_LOG_WARN, "store", "start-up check of the tables failed: %s: %s",
                lsm_strerror(rv), err);
    }
    return NULL;
}

void srv_store_verify_start(struct srv *s)
{
    if (s->corrupt_early != NULL) {
        struct srv_corrupt_report *r = s->corrupt_early;
        s->corrupt_early = NULL;
        report_start(r);
        return;
    }
    if (srv_bg_start(s, verify_main, s) != 0) {
        srv_log(SRV_LOG_WARN, "store", "cannot start the start-up check of the tables");
    }
}
