/* Member lifecycle: data directory, storage recovery, bootstrap, the loop's watchers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/srv_int.h"

/* How long a client request may wait for its entry to apply or its read index (etcd: 5 s plus
 * two election timeouts). */
#define REQUEST_TIMEOUT_BASE_MS 5000

/* ---- the data directory ---- */

static int mkdir_p(const char *path, char *errmsg)
{
    char buf[600];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                snprintf(errmsg, SRV_ERRMSG, "mkdir %s: %s", buf, strerror(errno));
                return SRV_EIO;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
        snprintf(errmsg, SRV_ERRMSG, "mkdir %s: %s", buf, strerror(errno));
        return SRV_EIO;
    }
    return 0;
}

/* The member file records the identity the data directory was created with, so a restart with
 * other flags cannot silently join the data to another cluster.  Written once, atomically
 * (write, fsync, rename, fsync dir). */
int srv_member_file_write(const char *member_dir,
                          uint64_t cluster_id,
                          uint64_t member_id,
                          const uint64_t *voters,
                          size_t n_voters,
                          char *errmsg)
{
    char path[700], tmp[710];
    snprintf(path, sizeof path, "%s/member", member_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(errmsg, SRV_ERRMSG, "create %s: %s", tmp, strerror(errno));
        return SRV_EIO;
    }
    fprintf(f, "kvdb-member 1\n%016" PRIx64 " %016" PRIx64 "\n", cluster_id, member_id);
    for (size_t i = 0; i < n_voters; i++) {
        fprintf(f, "%016" PRIx64 "\n", voters[i]);
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(errmsg, SRV_ERRMSG, "write %s: %s", path, strerror(errno));
        return SRV_EIO;
    }
    FILE *d = fopen(member_dir, "r");
    if (d != NULL) {
        fsync(fileno(d));
        fclose(d);
    }
    return 0;
}

/* Read <dir>/member into s->boot_conf and check it against the flags.  *@found is false (and 0
 * returned) when there is none yet.  Errors: SRV_EIO (unreadable), SRV_EINVAL (another identity),
 * with @errmsg. */
static int member_file_read(struct srv *s, const char *dir, bool *found, char *errmsg)
{
    char path[700];
    snprintf(path, sizeof path, "%s/member", dir);
    *found = false;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(errmsg, SRV_ERRMSG, "open %s: %s", path, strerror(errno));
        return SRV_EIO;
    }
    *found = true;
    int version = 0;
    uint64_t cid = 0, mid = 0, id;
    int rv = 0;
    if (fscanf(f, "kvdb-member %d\n%" SCNx64 " %" SCNx64, &version, &cid, &mid) != 3 ||
        version != 1) {
        snprintf(errmsg, SRV_ERRMSG, "%s: unreadable member file", path);
        rv = SRV_EIO;
    }
    memset(&s->boot_conf, 0, sizeof s->boot_conf);
    while (rv == 0 && fscanf(f, "%" SCNx64, &id) == 1 && s->boot_conf.n_voters < RAFT_MAX_MEMBERS) {
        s->boot_conf.voters[s->boot_conf.n_voters++] = id;
    }
    fclose(f);
    if (rv == 0 && mid == s->cfg.member_id && s->cfg.cluster_state == SRV_CLUSTER_EXISTING) {
        /* A member that joined a running cluster took that cluster's ID when it joined. */
        s->cfg.cluster_id = cid;
    }
    if (rv == 0 && (cid != s->cfg.cluster_id || mid != s->cfg.member_id)) {
        snprintf(errmsg, SRV_ERRMSG,
                 "%s belongs to member %" PRIx64 " of cluster %" PRIx64
                 ", but the flags make this member %" PRIx64 " of cluster %" PRIx64,
                 dir, mid, cid, s->cfg.member_id, s->cfg.cluster_id);
        rv = SRV_EINVAL;
    }
    return rv;
}

/* The membership as of the applied index: the snapshot's, then every configuration entry of the
 * log up to the applied index (the apply thread follows later ones). */
static void conf_at_applied(struct srv *s, uint64_t applied)
{
    s->apply_conf = s->snap_meta.index > 0 ? s->snap_meta.conf : s->boot_conf;
    struct wal_memtable *mt = wal_memtable(s->wal);
    uint64_t last = wal_memtable_last(mt);
    for (uint64_t i = wal_memtable_first(mt); i <= applied && i <= last; i++) {
        struct wal_entry e;
        size_t n = 0;
        if (wal_memtable_entries(mt, i, i + 1, 0, &e, 1, &n) == 0 && n == 1 &&
            e.type == RAFT_ENTRY_CONF) {
            struct raft_conf c;
            if (raft_conf_decode(e.data, e.len, &c) == 0) {
                s->apply_conf = c;
            }
        }
    }
}

static int open_storage(struct srv *s, char *errmsg)
{
    char dir[600], sub[700];
    snprintf(dir, sizeof dir, "%s/member", s->cfg.data_dir);
    int rv = mkdir_p(dir, errmsg);
    if (rv != 0) {
        return rv;
    }
    bool found = false;
    rv = member_file_read(s, dir, &found, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (!found && s->cfg.cluster_state == SRV_CLUSTER_EXISTING) {
        /* Joining a running cluster (after `member add`): no configuration of our own; the
         * leader's entries or snapshot bring it, and the first peer brings the cluster ID
         * (peer.c), which is when the member file is written. */
        s->cluster_id_unknown = true;
    } else if (!found) {
        if (s->cfg.n_members > RAFT_MAX_MEMBERS) {
            snprintf(errmsg, SRV_ERRMSG, "at most %d initial members", RAFT_MAX_MEMBERS);
            return SRV_EINVAL;
        }
        for (size_t i = 0; i < s->cfg.n_members; i++) {
            s->boot_conf.voters[s->boot_conf.n_voters++] = s->cfg.members[i].id;
        }
        rv = srv_member_file_write(dir, s->cfg.cluster_id, s->cfg.member_id, s->boot_conf.voters,
                                   s->boot_conf.n_voters, errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    /* The registry: --initial-cluster, then what the log taught us (member add/update). */
    for (size_t i = 0; i < s->cfg.n_members; i++) {
        s->members[s->n_members++] = s->cfg.members[i];
    }
    if ((rv = srv_snap_init(s, errmsg)) != 0) {
        return rv;
    }
    if (srv_snap_recover_db(s->cfg.data_dir) != 0) {
        snprintf(errmsg, SRV_ERRMSG, "%s: cannot finish an interrupted snapshot install", dir);
        return SRV_EIO;
    }
    snprintf(sub, sizeof sub, "%s/wal", dir);
    struct wal_recovered rec;
    char werr[WAL_ERRMSG_SIZE] = "";
    struct wal_options wo;
    memset(&wo, 0, sizeof wo);
#ifdef KV_FAILPOINTS
    s->wal_fs = srv_fpfs_new(s->cfg.member_id);
    wo.fs = s->wal_fs;
#endif
    rv = wal_open(sub, &wo, &s->wal, &rec, werr);
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "open WAL: %s: %s", wal_strerror(rv), werr);
        return SRV_EIO;
    }
    s->hs = rec.hs;
    snprintf(sub, sizeof sub, "%s/db", dir);
    struct lsm_options lo;
    lsm_options_default(&lo);
    lo.max_txn_ops = s->cfg.max_txn_ops;
    lo.no_compression = s->cfg.backend_uncompressed;
    char lerr[256] = "";
    rv = lsm_open(sub, &lo, &s->lsm, lerr);
    if (rv == LSM_ECORRUPT) {
        /* lerr names the file; the member cannot mend it alone (and must not guess). */
        snprintf(errmsg, SRV_ERRMSG,
                 "open store: %s; restore a snapshot (kvdb-snapshot restore) or remove the "
                 "member's data and add it again",
                 lerr);
        return SRV_EIO;
    }
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "open store: %s: %s", lsm_strerror(rv), lerr);
        return SRV_EIO;
    }
    struct lsm_status st;
    lsm_status_get(s->lsm, &st);
    s->applied_index = st.applied_index;
    atomic_store(&s->applied_pub, st.applied_index);
    atomic_store(&s->revision, st.revision);
    s->hub_rev = st.revision;
    s->last_progress_ms = srv_now_ms();
    if (st.applied_index > rec.last_index && st.applied_index != s->snap_meta.index) {
        /* Installed, then a crash before the WAL's marker; a newer snapshot received since
         * (not installed) must not stand for the store (the branch below records it). */
        srv_snap_use_at(s, st.applied_index);
    }
    conf_at_applied(s, st.applied_index);
    static const char *const files[3] = {"auth", "leases", "members"};
    if ((rv = srv_state_load(s, dir, files, true, errmsg)) != 0) {
        return rv;
    }
    srv_log(SRV_LOG_INFO, "node",
            "recovered %s: hard state term %llu vote %llx commit %llu; log %llu..%llu; "
            "applied %llu, revision %lld",
            s->cfg.data_dir, (unsigned long long)rec.hs.term, (unsigned long long)rec.hs.vote,
            (unsigned long long)rec.hs.commit, (unsigned long long)rec.first_index,
            (unsigned long long)rec.last_index, (unsigned long long)st.applied_index,
            (long long)st.revision);
    if (st.applied_index > rec.last_index && st.applied_index == s->snap_meta.index) {
        /* A snapshot from the leader was installed into the store, but the crash came before
         * the WAL recorded it: record it now (the log restarts after it). */
        uint64_t ticket = 0;
        rv = wal_mark_snapshot(s->wal, s->snap_meta.index, s->snap_meta.term, &ticket);
        if (rv == 0) {
            rv = wal_sync_wait(s->wal, ticket);
        }
        if (rv != 0) {
            snprintf(errmsg, SRV_ERRMSG, "record installed snapshot in the WAL: %s",
                     wal_strerror(rv));
            return SRV_EIO;
        }
        rec.last_index = s->snap_meta.index;
    }
    if (st.applied_index > rec.last_index) {
        snprintf(errmsg, SRV_ERRMSG,
                 "store applied index %llu is past the WAL's last index %llu: the WAL lost "
                 "acknowledged entries",
                 (unsigned long long)st.applied_index, (unsigned long long)rec.last_index);
        return SRV_EIO;
    }
    return 0;
}

static int open_raft(struct srv *s, char *errmsg)
{
    srv_storage_init(s);
    struct raft_config rc;
    memset(&rc, 0, sizeof rc);
    rc.id = s->cfg.member_id;
    rc.heartbeat_tick = 1;
    rc.election_tick = s->cfg.election_ms / s->cfg.heartbeat_ms;
    rc.seed = s->cfg.member_id ^ (uint64_t)srv_now_ms();
    rc.applied = s->applied_index;
    rc.storage = &s->storage;
    char rerr[256] = "";
    int rv = raft_create(&rc, &s->raft, rerr);
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "raft: %s: %s", raft_strerror(rv), rerr);
        return SRV_EIO;
    }
    return 0;
}

/* ---- loop watchers ---- */

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct srv *s = t->data;
    if (s->inflight) {
        s->ticks_held++;
        return;
    }
    struct raft_event ev = {.type = RAFT_EV_TICK};
    raft_step(s->raft, &ev);
}

/* Before the loop sleeps: one ReadIndex for the reads gathered this iteration, drive the Ready,
 * then write every connection's replies in one send each. */
static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv *s = w->data;
    if (s->reads_new != NULL) {
        uint64_t ctx = ++s->next_read_ctx;
        struct srv_read *r = s->reads_new;
        s->reads_new = NULL;
        while (r != NULL) {
            struct srv_read *next = r->next;
            r->ctx = ctx;
            r->issued_ms = srv_now_ms();
            r->next = s->reads_waiting;
            s->reads_waiting = r;
            r = next;
        }
        struct srv_input *in = calloc(1, sizeof *in);
        if (in != NULL) {
            in->type = SRV_IN_READ;
            in->ctx = ctx;
            srv_node_input(s, in);
        }
    }
    if (s->reissue_reads) { /* a new leader is known */
        s->reissue_reads = false;
        srv_kv_reissue_reads(s, true);
        srv_lease_retry_revokes(s); /* the old leader may have lost them */
    }
    srv_node_drive(s);
    srv_done_drain(s); /* replies of entries applied on this thread just now */
    srv_conn_flush_all(s);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    struct srv *s = w->data;
    if (atomic_load(&s->stop_requested)) {
        ev_break(loop, EVBREAK_ALL);
    }
    srv_done_drain(s);
}

static void on_wal(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv *s = w->data;
    wal_notify_drain(s->wal);
    srv_node_drive(s);
}

static void on_sweep(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    srv_kv_sweep(t->data);
    srv_members_publish(t->data);
    srv_watch_sweep(t->data);
    srv_hash_tick(t->data);
    srv_lease_tick(t->data);
    srv_autocompact_tick(t->data);
}

int srv_open(const struct srv_config *cfg, struct srv **out, char *errmsg)
{
    struct srv *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(errmsg, SRV_ERRMSG, "out of memory");
        return SRV_ENOMEM;
    }
    s->cfg = *cfg;
    s->hash_start_pending = cfg->initial_corrupt_check;
    pthread_mutex_init(&s->verify_mu, NULL);
    s->client_l.fd = -1;
    s->peer_l.fd = -1;
    s->request_timeout_ms = REQUEST_TIMEOUT_BASE_MS + 2ull * cfg->election_ms;
    /* Request ids must not repeat across restarts: an entry proposed before a crash may apply
     * after it, and must not answer a new request. */
    s->next_req_id = (srv_now_ms() << 20) | 1;
    s->loop = ev_loop_new(EVFLAG_AUTO);
    int rv = s->loop == NULL ? SRV_ENOMEM : 0;
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "cannot create the event loop");
        goto err;
    }
    if ((rv = open_storage(s, errmsg)) != 0 || (rv = open_raft(s, errmsg)) != 0) {
        goto err;
    }
    if ((rv = srv_peer_listen(s)) != 0 || (rv = srv_client_listen(s)) != 0) {
        if (errmsg != s->errmsg && s->errmsg[0] != '\0') {
            snprintf(errmsg, SRV_ERRMSG, "%s", s->errmsg);
        }
        goto err;
    }
    ev_timer_init(&s->tick, on_tick, cfg->heartbeat_ms / 1000.0, cfg->heartbeat_ms / 1000.0);
    s->tick.data = s;
    ev_timer_start(s->loop, &s->tick);
    ev_timer_init(&s->sweep, on_sweep, 0.5, 0.5);
    s->sweep.data = s;
    ev_timer_start(s->loop, &s->sweep);
    ev_prepare_init(&s->prepare, on_prepare);
    s->prepare.data = s;
    ev_prepare_start(s->loop, &s->prepare);
    ev_async_init(&s->wake, on_wake);
    s->wake.data = s;
    ev_async_start(s->loop, &s->wake);
    ev_io_init(&s->wal_io, on_wal, wal_notify_fd(s->wal), EV_READ);
    s->wal_io.data = s;
    ev_io_start(s->loop, &s->wal_io);
    if ((rv = srv_apply_start(s)) != 0) {
        snprintf(errmsg, SRV_ERRMSG, "cannot start the apply threads");
        goto err;
    }
    srv_peer_start(s);
    srv_store_verify_start(s);
    *out = s;
    return 0;
err:
    srv_close(s);
    return rv;
}

int srv_run(struct srv *s)
{
    srv_log(SRV_LOG_INFO, "node",
            "member %s (%016llx) of cluster %016llx serving clients on %s, peers on %s",
            s->cfg.name, (unsigned long long)s->cfg.member_id,
            (unsigned long long)s->cfg.cluster_id, s->cfg.advertise_client.text,
            s->cfg.advertise_peer.text);
    const struct raft_conf *conf = raft_conf_of(s->raft);
    if (conf->n_voters == 1 && conf->voters[0] == s->cfg.member_id &&
        raft_role(s->raft) != RAFT_LEADER) {
        /* A lone voter need not wait out an election timeout (etcd does the same). */
        struct raft_event ev = {.type = RAFT_EV_CAMPAIGN};
        raft_step(s->raft, &ev);
    }
    while (s->fatal == 0 && !atomic_load(&s->stop_requested)) {
        ev_run(s->loop, 0);
    }
    return s->fatal;
}

void srv_stop(struct srv *s)
{
    atomic_store(&s->stop_requested, true);
    ev_async_send(s->loop, &s->wake);
}

void srv_disconnect(struct srv *s)
{
    srv_peer_close_all(s);
    srv_conns_close_all(s);
}

const char *srv_errmsg(const struct srv *s)
{
    return s->errmsg;
}

uint64_t srv_leader(struct srv *s)
{
    return atomic_load(&s->leader_pub);
}

uint16_t srv_client_port(const struct srv *s)
{
    return s->client_l.port;
}

uint16_t srv_peer_port(const struct srv *s)
{
    return s->peer_l.port;
}

void srv_close(struct srv *s)
{
    if (s == NULL) {
        return;
    }
    srv_apply_stop(s);
    srv_peer_close_all(s);
    srv_bg_wait(s);
    if (s->threads_started || s->done_head != NULL) {
        srv_done_drain(s); /* what the snapshot threads posted while finishing */
        srv_apply_drop_queued(s);
    }
    srv_conns_close_all(s);
    srv_kv_fini(s);
    srv_watch_fini(s);
    srv_lease_fini(s);
    srv_auth_fini(s);
    while (s->in_head != NULL) {
        struct srv_input *in = s->in_head;
        s->in_head = in->next;
        if (in->type == SRV_IN_BATCH) {
            pb_batch_free(&in->batch);
        }
        free(in->data);
        free(in);
    }
    raft_destroy(s->raft);
    wal_close(s->wal);
    if (s->wal_fs != NULL) {
        srv_fpfs_free(s->wal_fs);
    }
    lsm_close(s->lsm);
    free(s->scratch);
    free(s->wents);
    if (s->loop != NULL) {
        ev_loop_destroy(s->loop);
    }
    free(s->corrupt_early);
    pthread_mutex_destroy(&s->verify_mu);
    free(s);
}
