/* Streaming a snapshot through sender and receiver over a simulated lossy network: loss,
 * duplication, reordering, corruption, restarts of either side; the result is byte-identical and
 * resends stay bounded (transfers resume, they do not restart).  Also the rate limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "snapshot/wire.h"
#include "test/unit/snapshot/helpers.h"

#define CHUNK (16u << 10)
#define WINDOW 4u
#define SYNC_BYTES (128u << 10)

static const char *names[] = {"000021.ldb", "000022.ldb", "000023.ldb", "000024.ldb", "000025.ldb"};
static const size_t sizes[] = {1000000, 0, 200001, 5, 700000};
static uint64_t voters[] = {1, 2, 3};

struct fixture
{
    char src[PATH_MAX];
    char root_a[PATH_MAX]; /* sender's snap dir */
    char root_b[PATH_MAX]; /* receiver's snap dir */
    char snapdir[PATH_MAX];
    uint64_t rng;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[SNAP_ERRMSG_SIZE], name[40];
    scratch_dir(f->src, "src");
    scratch_dir(f->root_a, "a");
    scratch_dir(f->root_b, "b");
    f->rng = test_seed("snap_stream");
    for (int i = 0; i < 5; i++) {
        write_file(f->src, names[i], sizes[i], &f->rng);
    }
    struct snap_meta m = {
        .index = 5000, .term = 4, .revision = 9000, .voters = voters, .n_voters = 3};
    if (snap_create(f->root_a, &m, f->src, names, 5, NULL, err) != 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    snap_dir_name(5000, 4, name, sizeof name);
    join(f->snapdir, f->root_a, name);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    snap_fs_fault_set(NULL, NULL);
    rm_tree(f->src);
    rm_tree(f->root_a);
    rm_tree(f->root_b);
    free(f);
    return 0;
}

static void assert_installed_identical(const struct fixture *f, const char *dir)
{
    char a[PATH_MAX], b[PATH_MAX], err[SNAP_ERRMSG_SIZE];
    for (int i = 0; i < 5; i++) {
        join(a, f->src, names[i]);
        join(b, dir, names[i]);
        assert_true(same_file(a, b));
    }
    assert_int_equal(snap_verify(dir, NULL, err), 0);
    bool found;
    size_t skipped;
    struct snap_manifest m;
    assert_int_equal(snap_latest(f->root_b, true, &found, &m, &skipped, err), 0);
    assert_true(found && m.meta.index == 5000 && m.meta.term == 4);
    assert_int_equal(skipped, 0);
    snap_manifest_fini(&m);
}

static struct snap_sender *open_sender(const struct fixture *f, uint64_t rate)
{
    struct snap_sender_opts o = {.chunk_size = CHUNK, .window = WINDOW, .rate = rate};
    struct snap_sender *s;
    char err[SNAP_ERRMSG_SIZE];
    assert_int_equal(snap_sender_open(f->snapdir, &o, &s, err), 0);
    return s;
}

static struct snap_receiver *open_receiver(const struct fixture *f,
                                           struct snap_sender *s,
                                           unsigned char *ack)
{
    const void *man;
    size_t len;
    char err[SNAP_ERRMSG_SIZE];
    struct snap_receiver_opts o = {.sync_bytes = SYNC_BYTES};
    struct snap_receiver *r;
    snap_sender_manifest(s, &man, &len);
    int rv = snap_receiver_open(f->root_b, man, len, &o, &r, ack, err);
    if (rv != 0) {
        fprintf(stderr, "receiver open: %s\n", err);
    }
    assert_int_equal(rv, 0);
    return r;
}

/* A clean network: every byte is sent exactly once and the result is identical. */
static void stream_clean(void **state)
{
    struct fixture *f = *state;
    unsigned char ack[SNAP_ACK_SIZE];
    char out[PATH_MAX];
    struct snap_sender *s = open_sender(f, 0);
    struct snap_receiver *r = open_receiver(f, s, ack);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    const void *c;
    size_t len;
    int chunks = 0;
    while (!snap_sender_is_done(s)) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_non_null(c);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
        chunks++;
    }
    assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
    assert_null(c);
    uint64_t raw, wire, total;
    snap_sender_stats(s, &raw, &wire, &total);
    assert_true(raw == total && total == 1000000 + 200001 + 5 + 700000);
    assert_true(wire < raw); /* half of each file is repetitive: zstd wins */
    assert_int_equal(chunks, 62 + 13 + 1 + 43);
    assert_true(snap_receiver_is_complete(r));
    assert_int_equal(snap_receiver_finish(r, out, NULL), 0);
    snap_receiver_close(r);
    snap_sender_close(s);
    assert_installed_identical(f, out);
}

/* The window caps chunks in flight; a corrupt chunk is refused with RESEND from the acked
 * offset, a chunk from the future with EGAP, one of another snapshot with ESTALE. */
static void stream_window_and_rejections(void **state)
{
    struct fixture *f = *state;
    unsigned char ack[SNAP_ACK_SIZE];
    struct snap_sender *s = open_sender(f, 0);
    struct snap_receiver *r = open_receiver(f, s, ack);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    unsigned char *held[WINDOW + 1];
    size_t lens[WINDOW + 1];
    for (unsigned i = 0; i <= WINDOW; i++) {
        const void *c;
        assert_int_equal(snap_sender_next(s, 0, &c, &lens[i]), 0);
        if (i == WINDOW) {
            assert_null(c); /* window full */
            break;
        }
        held[i] = malloc(lens[i]);
        memcpy(held[i], c, lens[i]);
    }
    char err[SNAP_ERRMSG_SIZE];
    struct snap_ack a;
    assert_int_equal(snap_receiver_put(r, held[1], lens[1], ack), SNAP_EGAP);
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_RESEND && a.file == 0 && a.offset == 0);
    held[0][SNAP_CHUNK_HEADER_SIZE + 100] ^= 1;
    assert_int_equal(snap_receiver_put(r, held[0], lens[0], ack), SNAP_ECHUNK);
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_RESEND && a.offset == 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    /* The sender rewinds to offset 0 once; the same RESEND again does not rewind again. */
    const void *c;
    size_t len;
    assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
    assert_non_null(c);
    assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_OK && a.offset == CHUNK);
    /* Duplicates of what is already there are acknowledged, not written again. */
    held[0][SNAP_CHUNK_HEADER_SIZE + 100] ^= 1;
    assert_int_equal(snap_receiver_put(r, held[0], lens[0], ack), 0);
    /* A chunk of another snapshot (other manifest crc). */
    struct snap_chunk d;
    assert_int_equal(snap_chunk_decode(held[1], lens[1], &d, err), 0);
    d.manifest_crc ^= 1;
    snap_chunk_encode_header(&d, held[1]);
    assert_int_equal(snap_receiver_put(r, held[1], lens[1], ack), SNAP_ESTALE);
    uint32_t file;
    uint64_t off;
    snap_receiver_position(r, &file, &off);
    assert_true(file == 0 && off == CHUNK);
    for (unsigned i = 0; i < WINDOW; i++) {
        free(held[i]);
    }
    /* Finish before the end is refused. */
    assert_int_equal(snap_receiver_finish(r, NULL, NULL), SNAP_EINCOMPLETE);
    snap_receiver_close(r);
    snap_sender_close(s);
}

/* A receiver restart resumes from its last checkpoint, not from zero. */
static void stream_receiver_restart_resumes(void **state)
{
    struct fixture *f = *state;
    unsigned char ack[SNAP_ACK_SIZE];
    char err[SNAP_ERRMSG_SIZE];
    struct snap_sender *s = open_sender(f, 0);
    struct snap_receiver *r = open_receiver(f, s, ack);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    const void *c;
    size_t len;
    for (int i = 0; i < 20; i++) { /* 320 KiB: two checkpoints (128 KiB each) and a bit */
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    snap_receiver_close(r); /* like a crash: no final checkpoint */
    r = open_receiver(f, s, ack);
    struct snap_ack a;
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.status == SNAP_ACK_RESUME && a.file == 0 && a.offset == 2 * SYNC_BYTES);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    assert_int_equal(snap_receiver_sync(r), 0);
    snap_receiver_close(r);
    /* After a clean sync the resume point is exact; a different snapshot starts over. */
    r = open_receiver(f, s, ack);
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    assert_true(a.offset == 2 * SYNC_BYTES);
    /* sync_bytes = 1: every ack is durable, a restart resumes exactly at the last one. */
    const void *man;
    struct snap_receiver_opts exact = {.sync_bytes = 1};
    snap_receiver_close(r);
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &exact, &r, ack, err), 0);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &a, err), 0);
    snap_receiver_close(r);
    snap_sender_manifest(s, &man, &len);
    assert_int_equal(snap_receiver_open(f->root_b, man, len, &exact, &r, ack, err), 0);
    struct snap_ack b;
    assert_int_equal(snap_ack_decode(ack, sizeof ack, &b, err), 0);
    assert_true(b.status == SNAP_ACK_RESUME && b.file == a.file && b.offset == a.offset);
    assert_true(b.offset == 2 * SYNC_BYTES + 3 * CHUNK);
    snap_receiver_close(r);
    snap_sender_close(s);
}

/* A restarted sender seeks to the position the receiver acknowledged and sends only the rest;
 * seeking outside the snapshot is refused. */
static void stream_sender_restart_seeks(void **state)
{
    struct fixture *f = *state;
    unsigned char ack[SNAP_ACK_SIZE];
    char out[PATH_MAX];
    struct snap_sender *s = open_sender(f, 0);
    struct snap_receiver *r = open_receiver(f, s, ack);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    const void *c;
    size_t len;
    for (int i = 0; i < 70; i++) { /* into the third file */
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    snap_sender_close(s);
    uint32_t file;
    uint64_t off;
    snap_receiver_position(r, &file, &off);
    /* A sender pins its files: retention removing the snapshot mid-send changes nothing. */
    struct snap_sender *pinned = open_sender(f, 0);
    char err[SNAP_ERRMSG_SIZE];
    rm_tree(f->snapdir);
    assert_true(file == 2 && off == 8 * CHUNK);
    s = pinned;
    assert_int_equal(snap_sender_open(f->snapdir, NULL, &pinned, err), SNAP_EIO);
    assert_int_equal(snap_sender_seek(s, 5, 1), SNAP_EINVAL);
    assert_int_equal(snap_sender_seek(s, 2, 200002), SNAP_EINVAL);
    assert_int_equal(snap_sender_seek(s, file, off), 0);
    while (!snap_sender_is_done(s)) {
        assert_int_equal(snap_sender_next(s, 0, &c, &len), 0);
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    uint64_t raw, wire, total;
    snap_sender_stats(s, &raw, &wire, &total);
    assert_true(raw == total - 1000000 - 8 * CHUNK);
    assert_int_equal(snap_receiver_finish(r, out, NULL), 0);
    snap_receiver_close(r);
    snap_sender_close(s);
    assert_installed_identical(f, out);
}

struct msg
{
    unsigned char *buf;
    size_t len;
};

struct queue
{
    struct msg *m;
    size_t n, cap;
};

static void q_push(struct queue *q, const void *buf, size_t len)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 16;
        q->m = realloc(q->m, q->cap * sizeof *q->m);
    }
    q->m[q->n].buf = malloc(len);
    memcpy(q->m[q->n].buf, buf, len);
    q->m[q->n].len = len;
    q->n++;
}

/* Take the head, or with reordering a random element. */
static struct msg q_take(struct queue *q, uint64_t *rng, bool reorder)
{
    size_t k = reorder ? test_rand(rng) % q->n : 0;
    struct msg m = q->m[k];
    memmove(&q->m[k], &q->m[k + 1], (q->n - k - 1) * sizeof *q->m);
    q->n--;
    return m;
}

static void q_clear(struct queue *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->m[i].buf);
    }
    q->n = 0;
}

struct net
{
    struct queue fwd, back;
    uint64_t rng;
    unsigned drop, dup, reorder, corrupt; /* per mille */
    unsigned disruptions;                 /* faults injected */
};

static bool chance(struct net *n, unsigned per_mille)
{
    return test_rand(&n->rng) % 1000 < per_mille;
}

/* Send @buf over @q with the network's faults. */
static void net_send(struct net *n, struct queue *q, const void *buf, size_t len)
{
    if (chance(n, n->drop)) {
        n->disruptions++;
        return;
    }
    q_push(q, buf, len);
    if (chance(n, n->corrupt)) {
        struct msg *m = &q->m[q->n - 1];
        m->buf[test_rand(&n->rng) % m->len] ^= (unsigned char)(1u << (test_rand(&n->rng) % 8));
        n->disruptions++;
    }
    if (chance(n, n->dup)) {
        q_push(q, buf, len);
    }
}

struct run
{
    struct fixture *f;
    struct net net;
    struct snap_sender *s;
    struct snap_receiver *r;
    uint64_t sent_raw; /* over every sender instance */
    unsigned restarts; /* receiver restarts */
    unsigned timeouts;
    unsigned stale_acks; /* acks refused as of an earlier receiver session */
};

static void restart_sender(struct run *x)
{
    uint64_t raw, wire, total;
    unsigned char ack[SNAP_ACK_SIZE];
    snap_sender_stats(x->s, &raw, &wire, &total);
    x->sent_raw += raw;
    snap_sender_close(x->s);
    x->s = open_sender(x->f, 0);
    q_clear(&x->net.fwd); /* a new connection: what was in flight is gone */
    q_clear(&x->net.back);
    snap_receiver_resume_ack(x->r, ack);
    assert_int_equal(snap_sender_ack(x->s, ack, sizeof ack), 0);
}

/* The receiver restarts but the network keeps what was in flight: old chunks still arrive (and
 * are duplicates or gaps), and the old instance's acks still arrive (stale: refused by
 * session) after the new RESUME. */
static void restart_receiver(struct run *x)
{
    unsigned char ack[SNAP_ACK_SIZE];
    snap_receiver_close(x->r);
    x->r = open_receiver(x->f, x->s, ack);
    assert_int_equal(snap_sender_ack(x->s, ack, sizeof ack), 0);
    x->restarts++;
}

/* One round: the sender fills its window, then a few messages are delivered each way. */
static void step(struct run *x)
{
    const void *c;
    size_t len;
    unsigned char ack[SNAP_ACK_SIZE];
    for (;;) {
        assert_int_equal(snap_sender_next(x->s, 0, &c, &len), 0);
        if (c == NULL) {
            break;
        }
        net_send(&x->net, &x->net.fwd, c, len);
    }
    if (x->net.fwd.n == 0 && x->net.back.n == 0) {
        snap_sender_timeout(x->s); /* go-back-N timer: the tail was lost */
        x->timeouts++;
        return;
    }
    for (int k = 0; k < 3 && x->net.fwd.n > 0; k++) {
        bool reorder = chance(&x->net, x->net.reorder);
        struct msg m = q_take(&x->net.fwd, &x->net.rng, reorder);
        int rv = snap_receiver_put(x->r, m.buf, m.len, ack);
        assert_true(rv == 0 || rv == SNAP_ECHUNK || rv == SNAP_EGAP);
        x->net.disruptions += reorder;
        free(m.buf);
        net_send(&x->net, &x->net.back, ack, sizeof ack);
    }
    /* Acks trickle back (up to 3 a round), so some are still in flight at a restart. */
    for (int k = 0; k < 3 && x->net.back.n > 0; k++) {
        struct msg m = q_take(&x->net.back, &x->net.rng, chance(&x->net, x->net.reorder));
        int rv = snap_sender_ack(x->s, m.buf, m.len);
        /* A corrupted ack is refused, one of an earlier receiver session is stale. */
        assert_true(rv == 0 || rv == SNAP_EMALFORMED || rv == SNAP_ESTALE);
        x->stale_acks += rv == SNAP_ESTALE;
        free(m.buf);
    }
}

/* Rounds of the fault matrix: 4 in the default suite, more in the slow soak (argv[1]). */
static int fault_rounds = 4;

/* The whole matrix: 2% loss, 1% duplication, 3% reordering, 1% corruption, three receiver and
 * three sender restarts at random points. */
static void stream_faults_and_restarts(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = test_seed("stream_faults_and_restarts");
    for (int round = 0; round < fault_rounds; round++) {
        struct run x = {.f = f,
                        .net = {.rng = seed + (uint64_t)round,
                                .drop = 20,
                                .dup = 10,
                                .reorder = 30,
                                .corrupt = 10}};
        unsigned char ack[SNAP_ACK_SIZE];
        char out[PATH_MAX];
        x.s = open_sender(f, 0);
        x.r = open_receiver(f, x.s, ack);
        assert_int_equal(snap_sender_ack(x.s, ack, sizeof ack), 0);
        unsigned sender_restarts = 0, steps = 0;
        while (!snap_sender_is_done(x.s) || !snap_receiver_is_complete(x.r)) {
            assert_true(++steps < 100000);
            uint64_t roll = test_rand(&x.net.rng) % 1000;
            if (roll < 30 && x.restarts < 3) {
                restart_receiver(&x);
            } else if (roll < 60 && sender_restarts < 3) {
                restart_sender(&x);
                sender_restarts++;
            }
            step(&x);
        }
        assert_int_equal(snap_receiver_finish(x.r, out, NULL), 0);
        uint64_t raw, wire, total;
        snap_sender_stats(x.s, &raw, &wire, &total);
        x.sent_raw += raw;
        /* Go-back-N costs at most a window per fault or timer, a receiver restart at most the
         * bytes since its last checkpoint plus a window: resumes, never restarts. */
        uint64_t bound =
            (uint64_t)(x.net.disruptions + x.timeouts + sender_restarts) * WINDOW * CHUNK +
            (uint64_t)x.restarts * (SYNC_BYTES + WINDOW * CHUNK);
        fprintf(stderr,
                "round %d: total %llu sent %llu resent %llu bound %llu (faults %u, timeouts %u, "
                "receiver restarts %u, sender restarts %u, stale acks %u)\n",
                round, (unsigned long long)total, (unsigned long long)x.sent_raw,
                (unsigned long long)(x.sent_raw - total), (unsigned long long)bound,
                x.net.disruptions, x.timeouts, x.restarts, sender_restarts, x.stale_acks);
        assert_true(x.sent_raw >= total);
        assert_true(x.sent_raw - total <= bound);
        assert_true(x.sent_raw < 2 * total);
        snap_receiver_close(x.r);
        snap_sender_close(x.s);
        q_clear(&x.net.fwd);
        q_clear(&x.net.back);
        free(x.net.fwd.m);
        free(x.net.back.m);
        assert_installed_identical(f, out);
        rm_tree(out); /* next round installs it again */
    }
}

/* Token bucket fed by the caller's clock: 1 MB/s for 1.9 MB takes about 1.9 s of fake time. */
static void stream_rate_limited(void **state)
{
    struct fixture *f = *state;
    unsigned char ack[SNAP_ACK_SIZE];
    struct snap_sender *s = open_sender(f, 1000000);
    struct snap_receiver *r = open_receiver(f, s, ack);
    assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    uint64_t now = 1000000000ull; /* any start */
    const uint64_t start = now;
    while (!snap_sender_is_done(s)) {
        const void *c;
        size_t len;
        assert_int_equal(snap_sender_next(s, now, &c, &len), 0);
        if (c == NULL) {
            uint64_t wait = snap_sender_wait_ns(s, now);
            assert_true(wait > 0 && wait <= 20000000ull); /* < one chunk at 1 MB/s */
            now += wait;
            assert_int_equal(snap_sender_wait_ns(s, now), 0);
            continue;
        }
        assert_int_equal(snap_receiver_put(r, c, len, ack), 0);
        assert_int_equal(snap_sender_ack(s, ack, sizeof ack), 0);
    }
    double secs = (double)(now - start) / 1e9;
    fprintf(stderr, "rate limited: 1900006 bytes in %.3f s of fake time\n", secs);
    assert_true(secs > 1.85 && secs < 1.95); /* the first chunk goes out of the initial burst */
    snap_receiver_close(r);
    snap_sender_close(s);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        fault_rounds = atoi(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(stream_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_window_and_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_receiver_restart_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_sender_restart_seeks, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_faults_and_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_rate_limited, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
