/* Resource limits on the client port of a real member: running out of file descriptors under a
 * flood of connections, and HTTP requests that never finish their headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/integration/fixture.h"

#define NOFILE 1024 /* the member's RLIMIT_NOFILE in the flood test */
#define FLOOD 2000  /* idle connections opened against it */

/* One member, started with RLIMIT_NOFILE @nofile (0: this process's), and a client on it. */
static struct ih_fix *start_member(unsigned nofile)
{
    void *state = calloc(1, sizeof(struct ih_fix));
    struct ih_fix *f = state;
    bool ok = f != NULL && ih_cluster_init(&f->c, 1, NULL) == 0;
    if (ok) {
        f->c.nofile = nofile;
        ok = ih_cluster_start(&f->c, 20000) == 0 && (f->k[0] = ih_client(&f->c, 0, 5000)) != NULL;
    }
    if (!ok) {
        ih_fix_teardown(&state);
        fail_msg("cannot start the member");
    }
    return f;
}

static void stop_member(struct ih_fix *f)
{
    void *state = f;
    assert_int_equal(0, ih_fix_teardown(&state)); /* the member exits cleanly on SIGTERM */
}

/* A nonblocking connect to 127.0.0.1:@port under way (or done), or -1. */
static int dial_nonblocking(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Wait up to @timeout_ms for @events on each of the @n fds, dropping each from the wait once it
 * has any: how many had them (a connect finished, or the member closed). */
static size_t poll_all(const int *fds, size_t n, short events, unsigned timeout_ms)
{
    struct pollfd *p = calloc(n, sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        p[i] = (struct pollfd){.fd = fds[i], .events = events};
    }
    size_t done = 0;
    uint64_t deadline = ih_now_ms() + timeout_ms;
    for (uint64_t now = ih_now_ms(); done < n && now < deadline; now = ih_now_ms()) {
        if (poll(p, n, (int)(deadline - now)) <= 0) {
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i].fd >= 0 && p[i].revents != 0) {
                char b;
                if (events == POLLOUT || recv(p[i].fd, &b, 1, 0) <= 0) {
                    p[i].fd = -1; /* POLLIN: counted only once the member closed it */
                    done++;
                }
            }
        }
    }
    free(p);
    return done;
}

/* Lines of the member's log about failed or refused accepts (each names accept or refused). */
static size_t accept_log_lines(const struct ih_fix *f)
{
    FILE *fp = fopen(f->c.m[0].log, "r");
    assert_non_null(fp);
    size_t n = 0;
    char line[4096];
    while (fgets(line, sizeof line, fp) != NULL) {
        n += strstr(line, "comp=net") != NULL &&
             (strstr(line, "accept") != NULL || strstr(line, "refused") != NULL);
    }
    fclose(fp);
    return n;
}

static void put_and_get(struct kvc *k, const char *key)
{
    char v[32];
    assert_true(ih_put(k, key, key) > 0);
    assert_int_equal(1, ih_get(k, key, false, v, sizeof v));
    assert_string_equal(v, key);
}

/* 2,000 idle connections to a member limited to 1,024 fds: an existing client is still served
 * within 1 s, the member neither spins nor floods its log, the peer port still takes a
 * connection, the client connections it cannot keep are closed at once instead of hanging, and
 * once the flood closes new connections are served. */
static void fd_exhaustion_keeps_serving_existing_clients(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(0, getrlimit(RLIMIT_NOFILE, &rl));
    if (rl.rlim_max < FLOOD + 100) {
        skip(); /* this process cannot hold the flood's sockets */
    }
    rl.rlim_cur = rl.rlim_max;
    assert_int_equal(0, setrlimit(RLIMIT_NOFILE, &rl));
    struct ih_fix *f = start_member(NOFILE);
    put_and_get(f->k[0], "before"); /* the client's connection exists before the flood */

    static int fds[FLOOD];
    for (size_t i = 0; i < FLOOD; i++) {
        fds[i] = dial_nonblocking(f->c.m[0].client_port);
        assert_true(fds[i] >= 0);
    }
    /* Every connect completes: the member accepts or the kernel queues it. */
    assert_int_equal(FLOOD, poll_all(fds, FLOOD, POLLOUT, 10000));

    uint64_t t0 = ih_now_ms();
    put_and_get(f->k[0], "during");
    uint64_t took = ih_now_ms() - t0;
    fprintf(stderr, "[limits] put and get during the flood: %llu ms\n", (unsigned long long)took);
    assert_true(took < 1000);
    size_t lines = accept_log_lines(f);
    assert_true(lines <= 5); /* the member does not retry accept in a loop */
    /* The peer port keeps headroom of its own: a flood of clients cannot cut members apart. */
    int peer = ih_raw_dial(f->c.m[0].peer_port);
    assert_true(peer >= 0);
    assert_false(ih_raw_closed(peer, 1000));
    close(peer);

    /* Past the fds the member keeps for itself, connections are closed, not left waiting. */
    size_t closed = poll_all(fds, FLOOD, POLLIN, 5000);
    fprintf(stderr, "[limits] %zu of %d connections closed by the member\n", closed, FLOOD);
    assert_true(closed >= FLOOD - NOFILE);
    lines = accept_log_lines(f);
    fprintf(stderr, "[limits] %zu log lines about accept\n", lines);
    assert_true(lines <= 5);
    assert_true(ih_member_is_alive(&f->c, 0));

    for (size_t i = 0; i < FLOOD; i++) {
        close(fds[i]);
    }
    /* New connections are taken again (the member sees the closes within its loop). */
    uint64_t deadline = ih_now_ms() + 5000;
    Kvdb__StatusResponse *st = NULL;
    while (ih_status(f->c.m[0].client_port, 500, &st) != 0) {
        assert_true(ih_now_ms() < deadline);
        ih_sleep_ms(20);
    }
    kvdb__status_response__free_unpacked(st, NULL);
    for (int i = 0; i < 50; i++) {
        struct kvc *k = ih_client(&f->c, 0, 2000);
        assert_non_null(k);
        put_and_get(k, "after");
        kvc_close(k);
    }
    stop_member(f);
}

/* Read what the member sends on @fd until it closes, keeping the first @cap - 1 bytes
 * (NUL-ended), within @timeout_ms; false on timeout. */
static bool read_to_close(int fd, char *buf, size_t cap, unsigned timeout_ms)
{
    size_t len = 0;
    uint64_t deadline = ih_now_ms() + timeout_ms;
    for (uint64_t now = ih_now_ms(); now < deadline; now = ih_now_ms()) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0) {
            continue;
        }
        char chunk[4096];
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r <= 0) {
            buf[len] = '\0';
            return r == 0 || errno == ECONNRESET;
        }
        size_t keep = (size_t)r < cap - 1 - len ? (size_t)r : cap - 1 - len;
        memcpy(buf + len, chunk, keep);
        len += keep;
    }
    return false;
}

/* An HTTP request whose headers never end (and one that stops inside "GET ") is closed within
 * the header timeout (5 s), while a complete GET /health on another connection is answered and
 * an idle native-protocol connection stays open past the timeout. */
static void http_request_with_unfinished_headers_is_closed_in_time(void **state)
{
    (void)state;
    struct ih_fix *f = start_member(0);
    uint16_t port = f->c.m[0].client_port;
    int native = ih_raw_dial(port);
    int slow = ih_raw_dial(port);
    int stub = ih_raw_dial(port);
    assert_true(native >= 0 && slow >= 0 && stub >= 0);
    uint64_t t0 = ih_now_ms();
    static const char partial[] = "GET /health HTTP/1.1\r\nHost: kvdb\r\n";
    assert_int_equal(0, ih_raw_write(slow, partial, sizeof partial - 1));
    assert_int_equal(0, ih_raw_write(stub, "GE", 2));

    int h = ih_raw_dial(port);
    static const char full[] = "GET /health HTTP/1.1\r\nHost: kvdb\r\n\r\n";
    assert_int_equal(0, ih_raw_write(h, full, sizeof full - 1));
    char reply[1024];
    assert_true(read_to_close(h, reply, sizeof reply, 2000));
    close(h);
    assert_non_null(strstr(reply, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(reply, "\"health\":\"true\""));

    assert_true(ih_raw_closed(slow, 10000));
    uint64_t took = ih_now_ms() - t0;
    assert_true(ih_raw_closed(stub, 1000));
    fprintf(stderr, "[limits] unfinished headers closed after %llu ms\n", (unsigned long long)took);
    assert_true(took >= 4000 && took <= 7000); /* the header timeout closed it, not an error */
    close(slow);
    close(stub);

    /* The idle native connection, older than the HTTP connections, is still served. */
    Kvdb__Frame *fr = NULL;
    assert_int_equal(0, ih_raw_send(native, 1, KVDB__METHOD__METHOD_STATUS, NULL, 0));
    assert_int_equal(0, ih_raw_recv(native, 2000, &fr));
    assert_int_equal(KVDB__ERROR_CODE__OK, fr->error);
    kvdb__frame__free_unpacked(fr, NULL);
    close(native);
    stop_member(f);
}

int main(void)
{
    alarm(170); /* a hung member must not hang the suite: SIGALRM kills the children too */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fd_exhaustion_keeps_serving_existing_clients),
        cmocka_unit_test(http_request_with_unfinished_headers_is_closed_in_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
