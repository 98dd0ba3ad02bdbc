/* kvdb-raftbench: committed entries per second through a 3-member in-process raft cluster with
 * no I/O (pure CPU): proposals batched at the leader, messages handed over directly, every
 * Ready persisted to a raft_memstore.  Prints figures; it is not a test.
 *
 *   kvdb-raftbench [--entries N] [--size BYTES] [--batch N] [--members N]
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft/memstore.h"
#include "raft/raft.h"

#define MAX_MEMBERS 7

struct member
{
    struct raft *raft;
    struct raft_memstore store;
    raft_index applied;
    struct raft_conf conf;
};

struct bench
{
    struct member m[MAX_MEMBERS];
    unsigned n;
    uint64_t msgs;
    uint64_t readies;
};

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rv)
{
    fprintf(stderr, "raftbench: %s: %s\n", what, raft_strerror(rv));
    exit(1);
}

/* Deliver @m straight from the sender's Ready (borrowed until the sender advances). */
static void deliver(struct bench *b, const struct raft_msg *m)
{
    if (m->to < 1 || m->to > b->n) {
        return;
    }
    struct raft_event ev = {.type = RAFT_EV_RECV, .u.msg = m};
    int rv = raft_step(b->m[m->to - 1].raft, &ev);
    if (rv != 0) {
        die("step", rv);
    }
    b->msgs++;
}

static void drain(struct bench *b, unsigned i)
{
    struct member *mb = &b->m[i];
    while (raft_has_ready(mb->raft)) {
        struct raft_ready rd;
        int rv = raft_ready(mb->raft, &rd);
        if (rv != 0) {
            die("ready", rv);
        }
        rv = raft_memstore_persist(&mb->store, &rd);
        if (rv != 0) {
            die("persist", rv);
        }
        for (size_t k = 0; k < rd.n_msgs; k++) {
            deliver(b, &rd.msgs[k]);
        }
        if (rd.n_committed > 0) {
            mb->applied = rd.committed[rd.n_committed - 1].index;
        }
        raft_advance(mb->raft, &rd);
        b->readies++;
        /* Keep memory bounded: compact well behind the applied index (after advance). */
        if (mb->applied > mb->store.snap.index + 20000) {
            raft_memstore_compact(&mb->store, mb->applied - 10000, &mb->conf);
        }
    }
}

/* Until quiet.  Only one member is between raft_ready() and raft_advance() at a time, and
 * messages are stepped into the others, as the contract requires. */
static void run(struct bench *b)
{
    bool any = true;
    while (any) {
        any = false;
        for (unsigned i = 0; i < b->n; i++) {
            if (raft_has_ready(b->m[i].raft)) {
                any = true;
                drain(b, i);
            }
        }
    }
}

static void setup(struct bench *b, unsigned n)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    struct raft_conf conf = {.n_voters = n};
    for (unsigned i = 0; i < n; i++) {
        conf.voters[i] = i + 1;
    }
    for (unsigned i = 0; i < n; i++) {
        struct member *mb = &b->m[i];
        mb->conf = conf;
        raft_memstore_init(&mb->store, NULL, &conf);
        struct raft_config cfg = {.id = i + 1, .storage = &mb->store.storage};
        cfg.max_inflight_msgs = 1024;
        char err[256];
        int rv = raft_create(&cfg, &mb->raft, err);
        if (rv != 0) {
            fprintf(stderr, "raftbench: %s\n", err);
            exit(1);
        }
    }
    struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
    raft_step(b->m[0].raft, &camp);
    run(b);
    if (raft_role(b->m[0].raft) != RAFT_LEADER) {
        fprintf(stderr, "raftbench: no leader\n");
        exit(1);
    }
}

static void teardown(struct bench *b)
{
    for (unsigned i = 0; i < b->n; i++) {
        raft_destroy(b->m[i].raft);
        raft_memstore_fini(&b->m[i].store);
    }
}

static uint64_t arg_u64(int argc, char **argv, const char *name, uint64_t def)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return strtoull(argv[i + 1], NULL, 10);
        }
    }
    return def;
}

int main(int argc, char **argv)
{
    uint64_t entries = arg_u64(argc, argv, "--entries", 2000000);
    size_t size = (size_t)arg_u64(argc, argv, "--size", 256);
    unsigned batch = (unsigned)arg_u64(argc, argv, "--batch", 256);
    unsigned members = (unsigned)arg_u64(argc, argv, "--members", 3);
    if (members < 1 || members > MAX_MEMBERS || batch == 0) {
        fprintf(stderr, "usage: %s [--entries N] [--size B] [--batch N] [--members 1..7]\n",
                argv[0]);
        return 2;
    }
    char *payload = malloc(size + 1);
    memset(payload, 'v', size);
    struct bench b;
    setup(&b, members);
    struct raft *leader = b.m[0].raft;
    raft_index start = b.m[0].applied;
    /* Wall time, and this process's CPU time: on a shared machine the latter is the honest
     * per-core figure. */
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t proposed = 0;
    while (proposed < entries) {
        for (unsigned k = 0; k < batch && proposed < entries; k++, proposed++) {
            struct raft_event ev = {.type = RAFT_EV_PROPOSE};
            ev.u.propose.data.base = payload;
            ev.u.propose.data.len = size;
            int rv = raft_step(leader, &ev);
            if (rv != 0) {
                die("propose", rv);
            }
        }
        run(&b);
    }
    run(&b);
    double dt = clock_s(CLOCK_MONOTONIC) - t0;
    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    uint64_t committed = b.m[0].applied - start;
    for (unsigned i = 0; i < members; i++) {
        if (b.m[i].applied != b.m[0].applied) {
            fprintf(stderr, "raftbench: member %u applied %" PRIu64 " != %" PRIu64 "\n", i + 1,
                    b.m[i].applied, b.m[0].applied);
            return 1;
        }
    }
    printf("members=%u entry_bytes=%zu batch=%u\n", members, size, batch);
    printf("committed=%" PRIu64 " wall_seconds=%.3f cpu_seconds=%.3f\n", committed, dt, cpu);
    printf("entries_per_sec=%.0f MB_per_sec=%.1f (wall)\n", (double)committed / dt,
           (double)committed * (double)size / dt / 1e6);
    printf("entries_per_cpu_sec=%.0f MB_per_cpu_sec=%.1f (one core)\n", (double)committed / cpu,
           (double)committed * (double)size / cpu / 1e6);
    printf("messages=%" PRIu64 " readies=%" PRIu64 " entries_per_msg=%.1f\n", b.msgs, b.readies,
           b.msgs > 0 ? (double)committed * 2 * (members - 1) / (double)b.msgs : 0.0);
    teardown(&b);
    free(payload);
    return 0;
}
