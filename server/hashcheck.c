/* The corruption check: members compare HashKV at one revision (etcd's corruption check, done
 * through the log).
 *
 * A member computes its HashKV at its applied revision R on the read thread and proposes a
 * HashReport{member, R, compact revision, hash}.  Every member applies the same reports in the
 * same order: the first report of a round (a revision) makes every other member compute and
 * report its own hash at R (its store has applied at least through R by then, since the report
 * was computed before it was proposed).  Once a majority of the voters reported one hash (with
 * the same compact revision: HashKV covers versions from it on), every member whose report
 * differs is corrupt; the verdict is the same on every member, since it depends only on the
 * log.  Each member then proposes a CORRUPT alarm naming the member and logs the revision and
 * both hashes; the alarm refuses writes cluster-wide until an operator disarms it.
 *
 * Rounds start on the leader every --corrupt-check-interval, and on every member once at start
 * (--initial-corrupt-check) as soon as it has applied what its leader had committed. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* ---- the loop ---- */

static void propose_report(struct srv *s, const struct srv_done *d)
{
    Kvdb__HashReport r;
    kvdb__hash_report__init(&r);
    r.member = s->cfg.member_id;
    r.revision = d->hash_rev;
    r.compact_revision = d->hash_compact;
    r.hash = d->hash;
    r.round = d->hash_round;
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.member = s->cfg.member_id;
    ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_HASH_REPORT;
    ir.hash_report = &r;
    uint8_t buf[64];
    assert(kvdb__internal_request__get_packed_size(&ir) <= sizeof buf);
    size_t n = kvdb__internal_request__pack(&ir, buf);
    int rv = srv_node_propose(s, buf, n, s->next_req_id++); /* an id: a follower forwards */
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "corrupt",
                "cannot propose this member's hash at revision %" PRId64
                ": %s (the next round asks again)",
                d->hash_rev, raft_strerror(rv));
    }
}

/* A new round's ID: unique enough that two rounds at one revision (no writes between them)
 * are told apart. */
static uint64_t new_round(struct srv *s)
{
    return srv_now_ms() << 20 ^ s->cfg.member_id;
}

void srv_hash_tick(struct srv *s)
{
    uint64_t now = srv_now_ms();
    if (s->cfg.corrupt_check_ms != 0 && s->role == RAFT_LEADER && now >= s->hash_next_ms) {
        s->hash_next_ms = now + s->cfg.corrupt_check_ms;
        srv_read_hash(s, 0, new_round(s));
    }
    if (s->hash_start_pending && s->leader != 0 &&
        atomic_load(&s->applied_pub) >= raft_commit_index(s->raft)) {
        s->hash_start_pending = false;
        srv_read_hash(s, 0, new_round(s));
    }
}

void srv_hash_on_done(struct srv *s, const struct srv_done *d)
{
    if (d->kind == SRV_DONE_HASH) {
        if (d->err == 0) {
            propose_report(s, d);
        } else if (d->err != LSM_ECOMPACTED) {
            srv_log(SRV_LOG_WARN, "corrupt", "HashKV at revision %" PRId64 " failed: %s",
                    d->hash_rev, lsm_strerror(d->err));
        }
        return;
    }
    /* SRV_DONE_CORRUPT */
    srv_log(SRV_LOG_ERROR, "corrupt",
            "member %" PRIx64 " holds different data: its HashKV at revision %" PRId64
            " (compact revision %" PRId64 ") is %08" PRIx32
            ", a majority of the members has "
            "%08" PRIx32
            "%s; raising the CORRUPT alarm (writes are refused cluster-wide). "
            "Restore that member from a snapshot or remove it and add it again, then "
            "disarm the alarm",
            d->hash_member, d->hash_rev, d->hash_compact, d->hash, (uint32_t)d->next_rev,
            d->ok ? "" : " (no majority agrees: every member that reported is named)");
    int rv = srv_alarm_raise(s, d->hash_member, KVDB__ALARM_TYPE__CORRUPT);
    if (rv != 0) {
        srv_log(SRV_LOG_WARN, "corrupt", "cannot raise the CORRUPT alarm now: %s",
                srv_strerror(rv));
    }
}

/* ---- the read thread ---- */

void srv_hash_run(struct srv *s, int64_t rev, uint64_t round)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return; /* the next round asks again */
    }
    char err[256] = "";
    pthread_rwlock_rdlock(&s->lsm_lock);
    d->err = lsm_hash_kv(s->lsm, rev, &d->hash, &d->hash_rev, &d->hash_compact, err);
    pthread_rwlock_unlock(&s->lsm_lock);
    if (d->err != 0) {
        d->hash_rev = rev;
    }
    d->kind = SRV_DONE_HASH;
    d->hash_round = round;
    srv_post_done(s, d);
}

/* ---- the apply thread ---- */

static struct srv_hash_round *round_for(struct srv *s, uint64_t id, int64_t rev)
{
    struct srv_hash_round *oldest = &s->hash_rounds[0];
    for (size_t i = 0; i < SRV_HASH_ROUNDS; i++) {
        struct srv_hash_round *r = &s->hash_rounds[i];
        if (r->id == id && r->rev == rev) {
            return r;
        }
        if (r->seq < oldest->seq) {
            oldest = r;
        }
    }
    memset(oldest, 0, sizeof *oldest);
    oldest->id = id;
    oldest->rev = rev;
    oldest->seq = ++s->hash_seq;
    return oldest;
}

static bool is_voter(const struct raft_conf *c, uint64_t id)
{
    return raft_conf_is_voter(c, id);
}

static void post_corrupt(struct srv *s, const struct srv_hash_report *bad, uint32_t want, bool ok)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d != NULL) {
        d->kind = SRV_DONE_CORRUPT;
        d->hash_member = bad->member;
        d->hash_rev = bad->rev;
        d->hash_compact = bad->compact;
        d->hash = bad->hash;
        d->next_rev = want;
        d->ok = ok;
        srv_post_done(s, d);
    }
}

/* The hash a majority of the voters reported with compact revision @compact, if any. */
static bool majority(const struct srv *s,
                     const struct srv_hash_round *r,
                     int64_t compact,
                     uint32_t *hash)
{
    for (size_t i = 0; i < r->n; i++) {
        size_t votes = 0;
        for (size_t j = 0; j < r->n; j++) {
            if (r->r[j].compact == compact && r->r[j].hash == r->r[i].hash &&
                is_voter(&s->apply_conf, r->r[j].member)) {
                votes++;
            }
        }
        if (r->r[i].compact == compact && votes * 2 > s->apply_conf.n_voters) {
            *hash = r->r[i].hash;
            return true;
        }
    }
    return false;
}

/* Name every member whose report differs from the majority's (or, once every voter reported
 * and none agrees with a majority, every reporter). */
static void decide(struct srv *s, struct srv_hash_round *r, int64_t compact)
{
    uint32_t want = 0;
    bool ok = majority(s, r, compact, &want);
    size_t voters = 0;
    for (size_t i = 0; i < r->n; i++) {
        voters += r->r[i].compact == compact && is_voter(&s->apply_conf, r->r[i].member);
    }
    if (!ok && voters < s->apply_conf.n_voters) {
        return; /* not decided yet */
    }
    for (size_t i = 0; i < r->n; i++) {
        struct srv_hash_report *p = &r->r[i];
        if (p->compact == compact && !p->named && (!ok || p->hash != want)) {
            p->named = true;
            post_corrupt(s, p, want, ok);
        }
    }
}

void srv_hash_apply(struct srv *s, const Kvdb__HashReport *rep)
{
    if (rep->member == 0 || rep->revision <= 0) {
        return; /* not a report this build makes: every member skips it alike */
    }
    struct srv_hash_round *r = round_for(s, rep->round, rep->revision);
    for (size_t i = 0; i < r->n; i++) {
        if (r->r[i].member == rep->member) {
            return; /* one report per member and round: the first counts */
        }
    }
    if (r->n == SRV_HASH_REPORTS) {
        return;
    }
    r->r[r->n++] = (struct srv_hash_report){.member = rep->member,
                                            .rev = rep->revision,
                                            .compact = rep->compact_revision,
                                            .hash = rep->hash};
    if (rep->member == s->cfg.member_id) {
        r->asked = true;
    } else if (!r->asked) {
        r->asked = true;
        srv_read_hash(s, rep->revision, rep->round); /* our report follows */
    }
    decide(s, r, rep->compact_revision);
}
