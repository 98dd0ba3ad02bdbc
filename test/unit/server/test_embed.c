/* Embedded clusters (server/embed.h) and failpoints: the user-facing example of docs/embedding.md
 * plus partitions, a slow disk and injected faults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <dirent.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/failpoint.h"
#include "server/srv.h"
#include "snapshot/snapshot.h"
#include "test/unit/server/fixture.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The value of @k, or NULL; @serializable reads the member's local state. */
static char *get(struct kvc *c, const char *k, bool serializable, int *rv)
{
    Kvdb__RangeResponse *r = NULL;
    *rv = kvc_get(c, k, strlen(k), serializable, &r);
    if (*rv != 0) {
        return NULL;
    }
    char *v = NULL;
    if (r->n_kvs == 1) {
        size_t n = r->kvs[0]->value.len;
        v = malloc(n + 1);
        if (v != NULL) {
            memcpy(v, r->kvs[0]->value.data, n);
            v[n] = '\0';
        }
    }
    kvdb__range_response__free_unpacked(r, NULL);
    return v;
}

static void assert_value(struct kvc *c, const char *k, const char *want)
{
    int rv;
    char *v = get(c, k, false, &rv);
    if (rv != 0) {
        fail_msg("get %s: %s: %s", k, kvc_strerror(rv), kvc_errmsg(c));
    }
    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

/* docs/embedding.md's example: a 3-member cluster, writes, the leader killed, data intact. */
static void example_kill_the_leader(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);

    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    char key[32], val[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "key-%03d", i);
        snprintf(val, sizeof val, "value-%d", i);
        sf_put(k, key, val);
    }
    srv_embed_kill(c, (unsigned)leader);
    int next = srv_embed_wait_leader(c, 10000);
    assert_true(next >= 0 && next != leader);
    sf_put(k, "after", "kill"); /* the client fails over to a live member */
    for (int i = 0; i < 100; i += 7) {
        snprintf(key, sizeof key, "key-%03d", i);
        snprintf(val, sizeof val, "value-%d", i);
        assert_value(k, key, val);
    }
    kvc_close(k);

    /* The killed member restarts and catches up. */
    char err[256];
    assert_int_equal(srv_embed_restart(c, (unsigned)leader, err), 0);
    struct kvc *old = sf_client(srv_embed_endpoint(c, (unsigned)leader), 15000);
    assert_value(old, "after", "kill");
    kvc_close(old);
    srv_embed_destroy(c);
}

/* An isolated leader loses its role; the majority elects another and keeps serving; a
 * linearizable read on the isolated member cannot succeed; after healing it catches up. */
static void partition_isolates_the_leader(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    sf_put(k, "p", "before");

    srv_embed_isolate(c, (unsigned)leader);
    int next = srv_embed_wait_leader(c, 10000); /* the majority's new leader */
    assert_true(next >= 0 && next != leader);
    unsigned other = ((unsigned)leader + 1) % 3;
    struct kvc *maj = sf_client(srv_embed_endpoint(c, other), 15000);
    sf_put(maj, "p", "during");

    struct kvc *iso = sf_client(srv_embed_endpoint(c, (unsigned)leader), 1500);
    int rv;
    char *v = get(iso, "p", false, &rv);
    assert_int_not_equal(rv, 0); /* no quorum: no linearizable read */
    free(v);
    v = get(iso, "p", true, &rv); /* serializable: the isolated member's stale state */
    assert_int_equal(rv, 0);
    assert_string_equal(v, "before");
    free(v);
    kvc_close(iso);

    srv_embed_heal(c);
    iso = sf_client(srv_embed_endpoint(c, (unsigned)leader), 15000);
    assert_value(iso, "p", "during");
    kvc_close(iso);
    kvc_close(maj);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A slow disk on every member makes each write wait at least that long (one fsync per batch
 * on the commit path). */
static void slow_disk_slows_commits(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    assert_true(leader == 0);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    sf_put(k, "warm", "up");
    srv_embed_disk_delay(c, 0, 100);
    double t0 = now_ms();
    sf_put(k, "slow", "1");
    double took = now_ms() - t0;
    assert_true(took >= 100.0);
    srv_embed_disk_delay(c, 0, 0);
    assert_value(k, "slow", "1");
    kvc_close(k);
    srv_embed_destroy(c);
}

/* Failpoints: dropping half the peer messages still lets the cluster commit; a failed fsync on
 * the leader stops it (a write is never acknowledged without its fsync) and another member
 * takes over with every acknowledged write. */
static void failpoints_drop_messages_and_fail_fsync(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 20000);

    /* Through the leader: raft retransmits lost appends.  (A write forwarded by a follower is
     * one message; losing it loses the write, with an unknown outcome, as in etcd.) */
    struct kvc *lk = sf_client(srv_embed_endpoint(c, (unsigned)leader), 20000);
    assert_int_equal(srv_fp_set("peer_send", 0, SRV_FP_DROP, 50, 0, 0), 0);
    sf_put(lk, "lossy", "ok");
    kvc_close(lk);
    assert_true(srv_fp_hits("peer_send") > 0);
    assert_int_equal(srv_fp_set("peer_send", 0, SRV_FP_OFF, 0, 0, 0), 0);

    uint64_t lid = srv_embed_member_id(c, (unsigned)leader);
    assert_int_equal(srv_fp_set("wal_fsync", lid, SRV_FP_ERROR, 100, 1, 0), 0);
    /* Writes until the leader hits the failed fsync and stops: they may fail (outcome unknown)
     * but none is acknowledged without its fsync. */
    for (int i = 0; i < 200 && srv_embed_is_running(c, (unsigned)leader); i++) {
        Kvdb__PutResponse *r = NULL;
        if (kvc_put(k, "during-fault", 12, "y", 1, &r) == 0) {
            kvdb__put_response__free_unpacked(r, NULL);
        }
    }
    assert_false(srv_embed_is_running(c, (unsigned)leader));
    int next = srv_embed_wait_leader(c, 15000);
    assert_true(next >= 0 && next != leader);
    kvc_close(k);
    k = sf_client(srv_embed_endpoints(c), 20000);
    sf_put(k, "after-fault", "ok");
    assert_value(k, "lossy", "ok");
    assert_value(k, "after-fault", "ok");
    srv_fp_clear_all();
    kvc_close(k);
    srv_embed_destroy(c);
}

/* Runtime membership: a learner joins and catches up, a voter joins, a member is removed; the
 * cluster keeps serving and the new members hold the data. */
static void members_join_and_leave(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3, .snapshot_count = 50, .snapshot_catchup = 10};
    struct srv_embed *c = sf_start(&o, NULL);
    char err[256];
    struct kvc *k = sf_client(srv_embed_endpoints(c), 20000);
    char key[32];
    for (int i = 0; i < 120; i++) { /* past a snapshot: the new members catch up by snapshot */
        snprintf(key, sizeof key, "m-%03d", i);
        sf_put(k, key, "v");
    }
    int learner = srv_embed_add_member(c, true, err);
    if (learner < 0) {
        fail_msg("add learner: %s", err);
    }
    int voter = srv_embed_add_member(c, false, err);
    if (voter < 0) {
        fail_msg("add voter: %s", err);
    }
    sf_put(k, "after-join", "1");
    /* Both new members catch up (serializable reads of their own state). */
    for (int m = learner; m <= voter; m++) {
        struct kvc *mk = sf_client(srv_embed_endpoint(c, (unsigned)m), 20000);
        int rv = -1;
        char *v = NULL;
        for (int tries = 0; tries < 200 && v == NULL; tries++) {
            v = get(mk, "after-join", true, &rv);
            if (v == NULL) {
                sf_sleep_ms(50);
            }
        }
        assert_non_null(v);
        assert_string_equal(v, "1");
        free(v);
        v = get(mk, "m-007", true, &rv);
        assert_non_null(v);
        free(v);
        kvc_close(mk);
    }
    /* Remove an original member; the cluster (now 4 voters + 1 learner) goes on. */
    assert_int_equal(srv_embed_remove_member(c, 0, err), 0);
    /* If it led, the others elect a leader first (a write forwarded to a leader that is going
     * away is lost, with a timeout, as in etcd). */
    assert_true(srv_embed_wait_leader(c, 10000) > 0);
    kvc_close(k);
    k = sf_client(srv_embed_endpoints(c), 20000);
    sf_put(k, "after-remove", "1");
    assert_value(k, "after-remove", "1");
    kvc_close(k);
    sf_assert_converged(c, 5, 20000);
    srv_embed_destroy(c);
}

/* A removed learner stops promptly, as etcd's removed members do, instead of serving stale
 * serializable reads (issue 14.2: it ran on for ~45 s; the leader stops replicating to it at
 * once, so it never applies its own removal: the leader now tells it). */
static void removed_learner_stops_promptly(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    char err[256];
    struct kvc *k = sf_client(srv_embed_endpoints(c), 20000);
    sf_put(k, "a", "1");
    int learner = srv_embed_add_member(c, true, err);
    if (learner < 0) {
        fail_msg("add learner: %s", err);
    }
    sf_assert_converged(c, 4, 20000);
    Kvdb__MemberRemoveRequest r;
    kvdb__member_remove_request__init(&r);
    r.id = srv_embed_member_id(c, (unsigned)learner);
    assert_int_equal(sf_call(k, KVDB__METHOD__METHOD_MEMBER_REMOVE, &r.base,
                             &kvdb__member_remove_response__descriptor),
                     0);
    unsigned waited = 0;
    while (srv_embed_is_running(c, (unsigned)learner) && waited < 10000) {
        sf_sleep_ms(20);
        waited += 20;
    }
    printf("removed learner %llx stopped after %u ms: %s\n", (unsigned long long)r.id, waited,
           srv_embed_member_error(c, (unsigned)learner));
    assert_false(srv_embed_is_running(c, (unsigned)learner));
    assert_true(waited <= 3000); /* a few election timeouts at most */
    assert_non_null(strstr(srv_embed_member_error(c, (unsigned)learner), "was removed"));
    sf_put(k, "b", "2");
    kvc_close(k);
    sf_assert_converged(c, 3, 20000);
    srv_embed_destroy(c);
}

/* A member removed while it was down never applies its removal; when it comes back, its peers
 * answer that it was removed and it stops (etcd's members do on HTTP 410), instead of running
 * outside the cluster and serving stale serializable reads. */
static void removed_while_down_stops_on_restart(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    unsigned gone = ((unsigned)leader + 1) % 3;
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    sf_put(k, "before", "1");
    srv_embed_kill(c, gone);
    char err[256];
    if (srv_embed_remove_member(c, gone, err) != 0) {
        fail_msg("remove member %u: %s", gone, err);
    }
    sf_put(k, "after-remove", "1");
    assert_int_equal(srv_embed_restart(c, gone, err), 0);
    bool stopped = false;
    for (int i = 0; i < 300 && !stopped; i++) {
        stopped = !srv_embed_is_running(c, gone);
        if (!stopped) {
            sf_sleep_ms(50);
        }
    }
    assert_true(stopped);
    const char *why = srv_embed_member_error(c, gone);
    assert_non_null(why);
    assert_non_null(strstr(why, "was removed from the cluster"));
    /* The two remaining members go on. */
    sf_put(k, "after-restart", "1");
    assert_value(k, "after-remove", "1");
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A member closes promptly while one of its snapshot transfers waits on a receiver that does
 * not answer, and the transfer thread does not outlive it: srv_close used to wait at most 40 s
 * for such threads and then free what they still read (an ASan nemesis run caught the use after
 * free). */
static void stop_during_a_stuck_snapshot_transfer(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3, .snapshot_count = 100, .snapshot_catchup = 10};
    int leader;
    struct srv_embed *c = sf_start(&o, &leader);
    unsigned f = ((unsigned)leader + 1) % 3;
    struct kvc *k = sf_client(srv_embed_endpoint(c, (unsigned)leader), 15000);
    srv_embed_stop(c, f);
    char key[16];
    for (int i = 0; i < 500; i++) { /* several snapshots: the log no longer reaches f */
        snprintf(key, sizeof key, "s%03d", i);
        sf_put(k, key, "v");
    }
    kvc_close(k);
    /* f's receiver sits on the manifest for 15 s; the leader's transfer waits for its answer. */
    assert_int_equal(
        srv_fp_set("snap_recv", srv_embed_member_id(c, f), SRV_FP_DELAY, 100, 1, 15000), 0);
    /* Armed (1 ms) only so that its hits are counted while snap_recv is spent. */
    assert_int_equal(srv_fp_set("snap_manifest_sent", 0, SRV_FP_DELAY, 100, 0, 1), 0);
    uint64_t before = srv_fp_hits("snap_manifest_sent");
    char err[256];
    assert_int_equal(srv_embed_restart(c, f, err), 0);
    for (int i = 0; i < 600 && srv_fp_hits("snap_manifest_sent") == before; i++) {
        sf_sleep_ms(50);
    }
    assert_true(srv_fp_hits("snap_manifest_sent") > before);
    sf_sleep_ms(200);
    double t0 = now_ms();
    srv_embed_stop(c, (unsigned)leader);
    double took = now_ms() - t0;
    if (took > 5000.0) {
        fail_msg("stopping the leader took %.0f ms with a transfer in flight", took);
    }
    srv_fp_clear_all();
    srv_embed_destroy(c);
}

/* The newest snapshot directory name of member 0 under @dir ("" if none): names are fixed-width
 * hex "index-term", so the greatest name is the newest. */
static void newest_snapshot(const char *dir, char *out, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/m0/member/snap", dir);
    out[0] = '\0';
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strlen(e->d_name) == 33 && e->d_name[16] == '-' && strcmp(e->d_name, out) > 0) {
            snprintf(out, size, "%s", e->d_name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

/* Put keys @prefix0000, @prefix0001, ... until member 0 has a new snapshot, waiting after each
 * put, so that its store stops at the snapshot's index. */
static void put_until_snapshot(struct kvc *k, const char *dir, const char *prefix)
{
    char before[64], now[64], key[32];
    newest_snapshot(dir, before, sizeof before);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "%s%04d", prefix, i);
        sf_put(k, key, "v");
        for (int w = 0; w < 40; w++) {
            newest_snapshot(dir, now, sizeof now);
            if (strcmp(now, before) != 0) {
                return;
            }
            sf_sleep_ms(5);
        }
    }
    fail_msg("no new snapshot after 1000 puts");
}

static void run(const char *cmd)
{
    if (system(cmd) != 0) {
        fail_msg("%s failed", cmd);
    }
}

/* A crash right after installing a snapshot S, before the WAL recorded it, while a newer
 * snapshot R had already arrived (not installed): the restart must take S, the one the store
 * holds, not R (it refused to start: "store applied index ... is past the WAL's last index";
 * an ASan nemesis run, seed 1795372977123935597).  Built here on one member: its store copied
 * at snapshot S, a newer snapshot R taken, then the store put back at S and the WAL put back to
 * before S's entries. */
static void restart_with_the_store_at_an_older_snapshot(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-olds-XXXXXX", cmd[4 * PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct srv_embed_opts o = {.members = 1, .dir = dir, .snapshot_count = 20};
    struct srv_embed *c = sf_start(&o, NULL);
    sf_sleep_ms(200); /* the WAL is idle: copy it as it is before any put */
    snprintf(cmd, sizeof cmd, "cp -a %s/m0/member/wal %s/wal-early", dir, dir);
    run(cmd);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    put_until_snapshot(k, dir, "a"); /* snapshot S; the store at S */
    kvc_close(k);
    srv_embed_stop(c, 0);
    snprintf(cmd, sizeof cmd, "cp -a %s/m0/member/db %s/db-at-s", dir, dir);
    run(cmd);
    char err[256];
    assert_int_equal(srv_embed_restart(c, 0, err), 0);
    assert_true(srv_embed_wait_leader(c, 10000) == 0);
    k = sf_client(srv_embed_endpoints(c), 15000);
    put_until_snapshot(k, dir, "b"); /* snapshot R, newer */
    kvc_close(k);
    srv_embed_stop(c, 0);
    snprintf(cmd, sizeof cmd,
             "rm -rf %s/m0/member/db %s/m0/member/wal && mv %s/db-at-s %s/m0/member/db && "
             "mv %s/wal-early %s/m0/member/wal",
             dir, dir, dir, dir, dir, dir);
    run(cmd);
    if (srv_embed_restart(c, 0, err) != 0) {
        fail_msg("restart: %s", err);
    }
    assert_true(srv_embed_wait_leader(c, 10000) == 0);
    k = sf_client(srv_embed_endpoints(c), 15000);
    assert_value(k, "a0000", "v"); /* what S holds */
    sf_put(k, "after", "1");
    assert_value(k, "after", "1");
    kvc_close(k);
    srv_embed_destroy(c);
}

/* A connection to @endpoint ("127.0.0.1:port"), blocking, or a failed test. */
static int dial(const char *endpoint)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(strrchr(endpoint, ':') + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(0, connect(fd, (struct sockaddr *)&sa, sizeof sa));
    return fd;
}

/* accept(2) failing with EMFILE (the "accept" failpoint) makes the member stop watching the
 * listener for 100 ms at a time instead of retrying in a busy loop; existing clients are served
 * meanwhile, and the connection that waited in the backlog is taken once accept works again. */
static void accept_out_of_fds_rests_instead_of_spinning(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 1};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 5000);
    sf_put(k, "before", "1");

    uint64_t hits0 = srv_fp_hits("accept");
    uint64_t id = srv_embed_member_id(c, 0);
    assert_int_equal(0, srv_fp_set("accept", id, SRV_FP_ERROR, 100, 0, 0));
    int fd = dial(srv_embed_endpoint(c, 0)); /* the kernel completes it; the member cannot */
    static const char req[] = "GET /health HTTP/1.1\r\n\r\n";
    assert_int_equal((ssize_t)sizeof req - 1, send(fd, req, sizeof req - 1, MSG_NOSIGNAL));
    /* One second of writes from the existing client: each is served. */
    double t0 = now_ms();
    int puts = 0;
    for (; now_ms() - t0 < 1000; puts++) {
        sf_put(k, "during", "1");
    }
    uint64_t tries = srv_fp_hits("accept") - hits0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(0, poll(&p, 1, 0)); /* not accepted, so not answered */
    fprintf(stderr, "[embed] %d puts and %llu accept attempts in 1 s out of fds\n", puts,
            (unsigned long long)tries);
    assert_true(tries >= 2 && tries <= 30); /* one per 100 ms pause, not a spin */

    assert_int_equal(0, srv_fp_set("accept", id, SRV_FP_OFF, 0, 0, 0));
    assert_int_equal(1, poll(&p, 1, 2000));
    char reply[64] = "";
    assert_true(recv(fd, reply, sizeof reply - 1, 0) > 0);
    assert_memory_equal(reply, "HTTP/1.1 ", 9);
    close(fd);
    kvc_close(k);
    srv_embed_destroy(c);
}

/* Start-up failures come back as SRV_E* codes with a message naming the file (srv.h's
 * contract; no raw errno): an unreadable member file, then one of another member. */
static void start_errors_are_srv_codes_naming_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-mf-XXXXXX", cmd[4 * PATH_MAX], mdir[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct srv_embed_opts o = {.members = 1, .dir = dir};
    struct srv_embed *c = sf_start(&o, NULL);
    srv_embed_stop(c, 0);
    snprintf(cmd, sizeof cmd,
             "cp %s/m0/member/member %s/member.bak && echo garbage > %s/m0/member/member", dir, dir,
             dir);
    run(cmd);
    char err[256] = "";
    assert_int_equal(srv_embed_restart(c, 0, err), SRV_EIO);
    assert_non_null(strstr(err, "unreadable member file"));
    snprintf(mdir, sizeof mdir, "%s/m0/member", dir);
    uint64_t voters[1] = {7};
    assert_int_equal(srv_member_file_write(mdir, 1, 7, voters, 1, err), 0);
    assert_int_equal(srv_embed_restart(c, 0, err), SRV_EINVAL);
    assert_non_null(strstr(err, "belongs to member 7 of cluster 1"));
    snprintf(cmd, sizeof cmd, "mv %s/member.bak %s/m0/member/member", dir, dir);
    run(cmd);
    if (srv_embed_restart(c, 0, err) != 0) {
        fail_msg("restart: %s", err);
    }
    srv_embed_destroy(c);
    srv_remove_tree(dir);
}

/* How many snapshot directories member 0 under @dir holds (names as newest_snapshot's). */
static int count_snapshots(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/m0/member/snap", dir);
    int n = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        n += strlen(e->d_name) == 33 && e->d_name[16] == '-';
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* A snapshot whose file list cannot be built (one name's allocation fails: the "snap_list"
 * failpoint) is abandoned with no manifest written, not made from a partial list that would look
 * valid and miss tables; the next snapshot is whole. */
static void snapshot_abandoned_when_its_file_list_fails(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-snl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct srv_embed_opts o = {.members = 1, .dir = dir, .snapshot_count = 20};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    assert_int_equal(srv_fp_set("snap_list", srv_embed_member_id(c, 0), SRV_FP_ERROR, 100, 1, 0),
                     0);
    uint64_t before = srv_fp_hits("snap_list");
    char key[32];
    for (int i = 0; i < 200 && srv_fp_hits("snap_list") == before; i++) {
        snprintf(key, sizeof key, "a%04d", i);
        sf_put(k, key, "v");
    }
    assert_true(srv_fp_hits("snap_list") > before);
    put_until_snapshot(k, dir, "b");
    /* Only the second snapshot exists (SNAP_KEEP would have kept both), and it verifies. */
    assert_int_equal(count_snapshots(dir), 1);
    char name[64], path[PATH_MAX], err[256] = "";
    newest_snapshot(dir, name, sizeof name);
    snprintf(path, sizeof path, "%s/m0/member/snap/%s", dir, name);
    struct snap_manifest m;
    if (snap_verify(path, &m, err) != 0) {
        fail_msg("snapshot %s: %s", name, err);
    }
    assert_true(m.meta.index > 20);
    snap_manifest_fini(&m);
    kvc_close(k);
    srv_fp_clear_all();
    srv_embed_destroy(c);
    srv_remove_tree(dir);
}

/* A member whose store lost member/db/CURRENT refuses to start, with a message that names the
 * file and what to do, instead of "store layout version 0" (issue #14 point 7) or an empty store;
 * with CURRENT back it starts with its data. */
static void start_refused_naming_a_lost_current(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-cur-XXXXXX", cmd[4 * PATH_MAX];
    assert_non_null(mkdtemp(dir));
    struct srv_embed_opts o = {.members = 1, .dir = dir};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *k = sf_client(srv_embed_endpoints(c), 15000);
    sf_put(k, "kept", "1");
    kvc_close(k);
    srv_embed_stop(c, 0);
    snprintf(cmd, sizeof cmd, "mv %s/m0/member/db/CURRENT %s/CURRENT.bak", dir, dir);
    run(cmd);
    char err[256] = "";
    assert_int_equal(srv_embed_restart(c, 0, err), SRV_EIO);
    if (strstr(err, "CURRENT is missing") == NULL || strstr(err, "kvdb-snapshot restore") == NULL) {
        fail_msg("start error does not name CURRENT and the remedy: %s", err);
    }
    print_message("refused as expected: %s\n", err);
    snprintf(cmd, sizeof cmd, "mv %s/CURRENT.bak %s/m0/member/db/CURRENT", dir, dir);
    run(cmd);
    if (srv_embed_restart(c, 0, err) != 0) {
        fail_msg("restart: %s", err);
    }
    assert_true(srv_embed_wait_leader(c, 10000) == 0);
    k = sf_client(srv_embed_endpoints(c), 15000);
    assert_value(k, "kept", "1");
    kvc_close(k);
    srv_embed_destroy(c);
    srv_remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(example_kill_the_leader),
        cmocka_unit_test(partition_isolates_the_leader),
        cmocka_unit_test(slow_disk_slows_commits),
        cmocka_unit_test(failpoints_drop_messages_and_fail_fsync),
        cmocka_unit_test(members_join_and_leave),
        cmocka_unit_test(removed_learner_stops_promptly),
        cmocka_unit_test(removed_while_down_stops_on_restart),
        cmocka_unit_test(stop_during_a_stuck_snapshot_transfer),
        cmocka_unit_test(restart_with_the_store_at_an_older_snapshot),
        cmocka_unit_test(accept_out_of_fds_rests_instead_of_spinning),
        cmocka_unit_test(start_refused_naming_a_lost_current),
        cmocka_unit_test(start_errors_are_srv_codes_naming_the_file),
        cmocka_unit_test(snapshot_abandoned_when_its_file_list_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
