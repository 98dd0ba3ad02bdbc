/* Real-process test harness: kvdb members as child processes on loopback. */
#include "test/integration/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef KVDB_BIN
#error "KVDB_BIN (path of the kvdb binary) must be defined by the build"
#endif

/* ---- registry of children and directories, for cleanup on any exit ---- */

#define MAX_CHILDREN 64
#define MAX_ROOTS 16

static volatile pid_t children[MAX_CHILDREN];
static char roots[MAX_ROOTS][256];
static bool hooks_installed;

static void kill_children(void)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        pid_t p = children[i];
        if (p > 0) {
            kill(p, SIGKILL);
        }
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *root)
{
    if (getenv("KV_INTEG_KEEP") != NULL) {
        fprintf(stderr, "[integ] keeping %s (KV_INTEG_KEEP)\n", root);
        return;
    }
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void at_exit(void)
{
    kill_children();
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] > 0) {
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    for (size_t i = 0; i < MAX_ROOTS; i++) {
        if (roots[i][0] != '\0') {
            remove_tree(roots[i]);
            roots[i][0] = '\0';
        }
    }
}

/* A fatal signal (ctest's timeout sends SIGTERM, our alarm SIGALRM): kill the members first. */
static void on_fatal_signal(int sig)
{
    kill_children();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_hooks(void)
{
    if (hooks_installed) {
        return;
    }
    hooks_installed = true;
    atexit(at_exit);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void child_add(pid_t p)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == 0) {
            children[i] = p;
            return;
        }
    }
}

static void child_remove(pid_t p)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == p) {
            children[i] = 0;
        }
    }
}

static void root_add(const char *r)
{
    for (size_t i = 0; i < MAX_ROOTS; i++) {
        if (roots[i][0] == '\0') {
            snprintf(roots[i], sizeof roots[i], "%s", r);
            return;
        }
    }
}

static void root_remove(const char *r)
{
    for (size_t i = 0; i < MAX_ROOTS; i++) {
        if (strcmp(roots[i], r) == 0) {
            roots[i][0] = '\0';
        }
    }
}

/* ---- time ---- */

uint64_t ih_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ih_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- ports ---- */

/* Whether 127.0.0.1:@port can be bound now (the member binds with SO_REUSEADDR too). */
static bool port_is_free(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Ports below the ephemeral range (32768+), 100 per test binary, chosen by pid so that binaries
 * run in parallel by ctest -j stay apart; each candidate is probed as well. */
static int pick_port(uint16_t *out)
{
    static unsigned next;
    unsigned base = 10000u + ((unsigned)getpid() % 220u) * 100u;
    for (unsigned k = 0; k < 100; k++) {
        uint16_t p = (uint16_t)(base + (next++ % 100u));
        if (port_is_free(p)) {
            *out = p;
            return 0;
        }
    }
    fprintf(stderr, "[integ] no free port in %u..%u\n", base, base + 99);
    return -1;
}

/* ---- members ---- */

int ih_cluster_init(struct ih_cluster *c, size_t n, const char *const *extra)
{
    install_hooks();
    memset(c, 0, sizeof *c);
    if (n == 0 || n > IH_MAX_MEMBERS) {
        return -1;
    }
    snprintf(c->root, sizeof c->root, "/tmp/kvdb-integ-%d-XXXXXX", (int)getpid());
    if (mkdtemp(c->root) == NULL) {
        fprintf(stderr, "[integ] mkdtemp %s: %s\n", c->root, strerror(errno));
        c->root[0] = '\0';
        return -1;
    }
    root_add(c->root);
    c->n = n;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        struct ih_member *m = &c->m[i];
        /* Through locals: gcc's -Wrestrict cannot tell c->root from m->dir apart. */
        char root[sizeof c->root];
        snprintf(root, sizeof root, "%s", c->root);
        snprintf(m->name, sizeof m->name, "m%zu", i);
        snprintf(m->dir, sizeof m->dir, "%s/m%zu", root, i);
        snprintf(m->log, sizeof m->log, "%s/m%zu.log", root, i);
        if (pick_port(&m->client_port) != 0 || pick_port(&m->peer_port) != 0) {
            return -1;
        }
        snprintf(m->endpoint, sizeof m->endpoint, "127.0.0.1:%u", (unsigned)m->client_port);
        off += (size_t)snprintf(c->initial_cluster + off, sizeof c->initial_cluster - off,
                                "%s%s=http://127.0.0.1:%u", i > 0 ? "," : "", m->name,
                                (unsigned)m->peer_port);
    }
    for (; extra != NULL && extra[c->n_extra] != NULL && c->n_extra < IH_MAX_ARGS; c->n_extra++) {
        c->extra[c->n_extra] = extra[c->n_extra];
    }
    return 0;
}

/* Print member @m's log for failure diagnosis: from its first sanitizer report if there is one
 * (that is where the cause is), else its last few KiB. */
static void print_log_tail(const struct ih_member *m)
{
    FILE *f = fopen(m->log, "r");
    if (f == NULL) {
        return;
    }
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    const char *from = strstr(buf, "ERROR: AddressSanitizer");
    if (from == NULL) {
        from = strstr(buf, "ERROR: LeakSanitizer");
    }
    if (from == NULL) {
        from = strstr(buf, "runtime error:");
    }
    if (from == NULL) {
        from = n > 4096 ? buf + n - 4096 : buf;
    }
    while (from > buf && from[-1] != '\n') {
        from--; /* UBSan puts file:line before "runtime error:" */
    }
    fprintf(stderr, "[integ] ---- log of %s ----\n%.6000s\n[integ] ---- end ----\n", m->log, from);
}

static void exec_member(const struct ih_cluster *c, const struct ih_member *m, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    /* The test's raw sockets are not CLOEXEC: close everything but stdio. */
    for (int i = 3; i < 1024; i++) {
        close(i);
    }
    if (c->nofile != 0) {
        struct rlimit rl = {.rlim_cur = c->nofile, .rlim_max = c->nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "setrlimit RLIMIT_NOFILE %u: %s\n", c->nofile, strerror(errno));
            _exit(127);
        }
    }
    execv(KVDB_BIN, argv);
    fprintf(stderr, "exec %s: %s\n", KVDB_BIN, strerror(errno));
    _exit(127);
}

int ih_member_start_with(struct ih_cluster *c, size_t i, const char *const *more)
{
    struct ih_member *m = &c->m[i];
    if (m->pid != 0) {
        return 0;
    }
    char peer[64], client[64];
    snprintf(peer, sizeof peer, "http://127.0.0.1:%u", (unsigned)m->peer_port);
    snprintf(client, sizeof client, "http://127.0.0.1:%u", (unsigned)m->client_port);
    char token[64];
    snprintf(token, sizeof token, "integ-%s", strrchr(c->root, '-') + 1);
    const char *argv[64] = {KVDB_BIN,
                            "--name",
                            m->name,
                            "--data-dir",
                            m->dir,
                            "--listen-peer-urls",
                            peer,
                            "--listen-client-urls",
                            client,
                            "--initial-advertise-peer-urls",
                            peer,
                            "--advertise-client-urls",
                            client,
                            "--initial-cluster",
                            c->initial_cluster,
                            "--initial-cluster-token",
                            token};
    size_t n = 17;
    for (size_t k = 0; k < c->n_extra; k++) {
        argv[n++] = c->extra[k];
    }
    for (size_t k = 0; more != NULL && more[k] != NULL && n < 63; k++) {
        argv[n++] = more[k];
    }
    argv[n] = NULL;
    fflush(NULL);
    pid_t p = fork();
    if (p < 0) {
        fprintf(stderr, "[integ] fork: %s\n", strerror(errno));
        return -1;
    }
    if (p == 0) {
        exec_member(c, m, (char **)argv);
    }
    m->pid = p;
    m->signalled = false;
    child_add(p);
    return 0;
}

int ih_member_start(struct ih_cluster *c, size_t i)
{
    return ih_member_start_with(c, i, NULL);
}

void ih_member_signal(struct ih_cluster *c, size_t i, int sig)
{
    if (c->m[i].pid != 0) {
        c->m[i].signalled = true;
        kill(c->m[i].pid, sig);
    }
}

/* Whether exit status @st of a member this test never signalled can only come from a signal
 * sent by someone else: death by SIGTERM/SIGINT/SIGKILL, or exit 0 (the SIGTERM handler's clean
 * shutdown). */
static bool stopped_from_outside(const struct ih_member *m, int st)
{
    if (m->signalled) {
        return false;
    }
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        return sig == SIGTERM || sig == SIGINT || sig == SIGKILL;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

bool ih_member_is_alive(struct ih_cluster *c, size_t i)
{
    struct ih_member *m = &c->m[i];
    if (m->pid == 0) {
        return false;
    }
    int st = 0;
    if (waitpid(m->pid, &st, WNOHANG) == 0) {
        return true;
    }
    if (stopped_from_outside(m, st)) {
        fprintf(stderr,
                "[integ] member %s (pid %d) was stopped by a signal this test did not send "
                "(status 0x%x): another process on this machine signalled its pid\n",
                m->name, (int)m->pid, st);
    } else {
        fprintf(stderr, "[integ] member %s (pid %d) died: status 0x%x\n", m->name, (int)m->pid, st);
        print_log_tail(m);
    }
    child_remove(m->pid);
    m->pid = 0;
    m->last_status = st;
    return false;
}

int ih_member_wait_up(struct ih_cluster *c, size_t i, unsigned timeout_ms)
{
    uint64_t deadline = ih_now_ms() + timeout_ms;
    while (ih_now_ms() < deadline) {
        if (!ih_member_is_alive(c, i)) {
            if (!stopped_from_outside(&c->m[i], c->m[i].last_status) || c->m[i].restarts >= 2 ||
                ih_member_start(c, i) != 0) {
                return -1;
            }
            c->m[i].restarts++;
            fprintf(stderr, "[integ] restarted member %s after the outside signal\n", c->m[i].name);
            continue;
        }
        Kvdb__StatusResponse *st = NULL;
        if (ih_status(c->m[i].client_port, 500, &st) == 0) {
            kvdb__status_response__free_unpacked(st, NULL);
            return 0;
        }
        ih_sleep_ms(20);
    }
    fprintf(stderr, "[integ] member %s not up within %u ms\n", c->m[i].name, timeout_ms);
    print_log_tail(&c->m[i]);
    return -1;
}

/* A member that does not stop: print every thread's stack (gdb, when installed) so the report
 * says where it hangs. */
static void dump_stacks(const struct ih_member *m)
{
    if (access("/usr/bin/gdb", X_OK) != 0) {
        return;
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/gdb -p %d -batch -ex 'thread apply all bt' 2>/dev/null | "
             "grep -E '^(#|Thread)' 1>&2",
             (int)m->pid);
    fprintf(stderr, "[integ] stacks of stuck member %s (pid %d):\n", m->name, (int)m->pid);
    if (system(cmd) != 0) {
        fprintf(stderr, "[integ] (gdb could not attach)\n");
    }
}

/* Wait for member @m, which was sent @sig, to exit (see ih_member_stop). */
static int reap(struct ih_member *m, int sig)
{
    uint64_t deadline = ih_now_ms() + 20000;
    int st = 0;
    pid_t r;
    while ((r = waitpid(m->pid, &st, WNOHANG)) == 0 && ih_now_ms() < deadline) {
        ih_sleep_ms(5);
    }
    bool timed_out = r == 0;
    if (timed_out) {
        dump_stacks(m);
        kill(m->pid, SIGKILL);
        waitpid(m->pid, &st, 0);
    }
    child_remove(m->pid);
    m->pid = 0;
    m->last_status = st;
    bool ok = !timed_out && ((sig == SIGKILL && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) ||
                             (WIFEXITED(st) && WEXITSTATUS(st) == 0));
    if (!ok) {
        fprintf(stderr, "[integ] member %s did not stop cleanly on signal %d: %s, status 0x%x\n",
                m->name, sig, timed_out ? "timed out" : "bad exit", st);
        print_log_tail(m);
        return -1;
    }
    return 0;
}

int ih_member_stop(struct ih_cluster *c, size_t i, int sig)
{
    struct ih_member *m = &c->m[i];
    if (m->pid == 0) {
        return 0;
    }
    m->signalled = true;
    kill(m->pid, sig);
    return reap(m, sig);
}

int ih_cluster_start(struct ih_cluster *c, unsigned timeout_ms)
{
    for (size_t i = 0; i < c->n; i++) {
        if (ih_member_start(c, i) != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        if (ih_member_wait_up(c, i, timeout_ms) != 0) {
            return -1;
        }
    }
    return ih_cluster_leader(c, timeout_ms) >= 0 ? 0 : -1;
}

/* One round of Status over the running members: the agreed leader's index, or -1. */
static int leader_once(struct ih_cluster *c)
{
    uint64_t ids[IH_MAX_MEMBERS] = {0};
    uint64_t leader = 0;
    bool agree = true;
    for (size_t i = 0; i < c->n; i++) {
        if (c->m[i].pid == 0) {
            continue;
        }
        Kvdb__StatusResponse *st = NULL;
        if (ih_status(c->m[i].client_port, 500, &st) != 0) {
            return -1;
        }
        ids[i] = st->header != NULL ? st->header->member_id : 0;
        if (leader == 0) {
            leader = st->leader;
        }
        agree = agree && st->leader != 0 && st->leader == leader;
        kvdb__status_response__free_unpacked(st, NULL);
    }
    for (size_t i = 0; agree && i < c->n; i++) {
        if (ids[i] == leader && c->m[i].pid != 0) {
            return (int)i;
        }
    }
    return -1;
}

int ih_cluster_leader(struct ih_cluster *c, unsigned timeout_ms)
{
    uint64_t deadline = ih_now_ms() + timeout_ms;
    do {
        int l = leader_once(c);
        if (l >= 0) {
            return l;
        }
        ih_sleep_ms(50);
    } while (ih_now_ms() < deadline);
    fprintf(stderr, "[integ] no agreed leader within %u ms:\n", timeout_ms);
    for (size_t i = 0; i < c->n; i++) {
        Kvdb__StatusResponse *st = NULL;
        if (!ih_member_is_alive(c, i)) {
            fprintf(stderr, "[integ]   %s: not running\n", c->m[i].name);
        } else if (ih_status(c->m[i].client_port, 500, &st) != 0) {
            fprintf(stderr, "[integ]   %s: no Status reply\n", c->m[i].name);
            print_log_tail(&c->m[i]);
        } else {
            fprintf(stderr, "[integ]   %s: id %016llx leader %016llx term %llu\n", c->m[i].name,
                    (unsigned long long)st->header->member_id, (unsigned long long)st->leader,
                    (unsigned long long)st->raft_term);
            kvdb__status_response__free_unpacked(st, NULL);
        }
    }
    return -1;
}

int ih_cluster_stop(struct ih_cluster *c)
{
    int rv = 0;
    for (size_t i = 0; i < c->n; i++) {
        ih_member_signal(c, i, SIGCONT); /* in case a test left it paused */
        ih_member_signal(c, i, SIGTERM); /* all at once, then reap each */
    }
    /* One signal each: a second SIGTERM during shutdown is a separate case (known bug). */
    for (size_t i = 0; i < c->n; i++) {
        if (c->m[i].pid != 0 && reap(&c->m[i], SIGTERM) != 0) {
            rv = -1;
        }
    }
    return rv;
}

void ih_cluster_destroy(struct ih_cluster *c)
{
    for (size_t i = 0; i < c->n && i < IH_MAX_MEMBERS; i++) {
        if (c->m[i].pid != 0) {
            ih_member_stop(c, i, SIGKILL);
        }
    }
    if (c->root[0] != '\0') {
        remove_tree(c->root);
        root_remove(c->root);
        c->root[0] = '\0';
    }
    c->n = 0;
}

struct kvc *ih_client(struct ih_cluster *c, size_t i, unsigned timeout_ms)
{
    char eps[IH_MAX_MEMBERS * 64] = "";
    size_t off = 0;
    for (size_t k = 0; k < c->n; k++) {
        if (i == (size_t)-1 || k == i) {
            off += (size_t)snprintf(eps + off, sizeof eps - off, "%s%s", off > 0 ? "," : "",
                                    c->m[k].endpoint);
        }
    }
    struct kvc_options o = {.dial_timeout_ms = 1000, .request_timeout_ms = timeout_ms};
    struct kvc *k = NULL;
    char err[256] = "";
    int rv = kvc_open(eps, &o, &k, err);
    if (rv != 0) {
        fprintf(stderr, "[integ] kvc_open %s: %s: %s\n", eps, kvc_strerror(rv), err);
        return NULL;
    }
    return k;
}

/* ---- raw sockets ---- */

int ih_raw_dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int ih_raw_write(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ih_raw_write_frame(int fd, const void *payload, size_t n)
{
    unsigned char hdr[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 24)};
    if (ih_raw_write(fd, hdr, sizeof hdr) != 0) {
        return -1;
    }
    return n > 0 ? ih_raw_write(fd, payload, n) : 0;
}

int ih_raw_send(int fd, uint64_t id, int method, const void *body, size_t n)
{
    Kvdb__Frame f;
    kvdb__frame__init(&f);
    f.id = id;
    f.method = (Kvdb__Method)method;
    f.body.data = (uint8_t *)body;
    f.body.len = n;
    size_t len = kvdb__frame__get_packed_size(&f);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return -1;
    }
    kvdb__frame__pack(&f, buf);
    int rv = ih_raw_write_frame(fd, buf, len);
    free(buf);
    return rv;
}

/* Read exactly @n bytes by @deadline: 0, 1 (closed), -1 (timeout or error). */
static int read_full(int fd, void *buf, size_t n, uint64_t deadline)
{
    unsigned char *p = buf;
    while (n > 0) {
        uint64_t now = ih_now_ms();
        if (now >= deadline) {
            return -1;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0) {
            continue;
        }
        ssize_t r = recv(fd, p, n, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return 1;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int ih_raw_recv(int fd, unsigned timeout_ms, Kvdb__Frame **out)
{
    uint64_t deadline = ih_now_ms() + timeout_ms;
    unsigned char hdr[4];
    int rv = read_full(fd, hdr, sizeof hdr, deadline);
    if (rv != 0) {
        return rv;
    }
    size_t n = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
    if (n > (64u << 20)) {
        return -1;
    }
    unsigned char *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        return -1;
    }
    rv = read_full(fd, buf, n, deadline);
    if (rv == 0) {
        *out = kvdb__frame__unpack(NULL, n, buf);
        rv = *out != NULL ? 0 : -1;
    }
    free(buf);
    return rv;
}

bool ih_raw_closed(int fd, unsigned timeout_ms)
{
    uint64_t deadline = ih_now_ms() + timeout_ms;
    unsigned char buf[4096];
    for (;;) {
        uint64_t now = ih_now_ms();
        if (now >= deadline) {
            return false;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0) {
            continue;
        }
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return true;
        }
    }
}

int ih_status(uint16_t port, unsigned timeout_ms, Kvdb__StatusResponse **out)
{
    int fd = ih_raw_dial(port);
    if (fd < 0) {
        return -1;
    }
    Kvdb__Frame *f = NULL;
    int rv = -1;
    if (ih_raw_send(fd, 1, KVDB__METHOD__METHOD_STATUS, NULL, 0) == 0 &&
        ih_raw_recv(fd, timeout_ms, &f) == 0) {
        if (f->error == KVDB__ERROR_CODE__OK) {
            *out = kvdb__status_response__unpack(NULL, f->body.len, f->body.data);
            rv = *out != NULL ? 0 : -1;
        }
        kvdb__frame__free_unpacked(f, NULL);
    }
    close(fd);
    return rv;
}

/* ---- key-value shortcuts ---- */

int64_t ih_put(struct kvc *k, const char *key, const char *val)
{
    Kvdb__PutResponse *r = NULL;
    int rv = kvc_put(k, key, strlen(key), val, strlen(val), &r);
    if (rv != 0) {
        fprintf(stderr, "[integ] put %s: %s: %s\n", key, kvc_strerror(rv), kvc_errmsg(k));
        return -1;
    }
    int64_t rev = r->header != NULL ? r->header->revision : -1;
    kvdb__put_response__free_unpacked(r, NULL);
    return rev;
}

int ih_get(struct kvc *k, const char *key, bool serializable, char *val, size_t cap)
{
    Kvdb__RangeResponse *r = NULL;
    int rv = kvc_get(k, key, strlen(key), serializable, &r);
    if (rv != 0) {
        fprintf(stderr, "[integ] get %s: %s: %s\n", key, kvc_strerror(rv), kvc_errmsg(k));
        return -1;
    }
    int found = r->n_kvs > 0;
    if (found && val != NULL) {
        size_t n = r->kvs[0]->value.len < cap - 1 ? r->kvs[0]->value.len : cap - 1;
        memcpy(val, r->kvs[0]->value.data, n);
        val[n] = '\0';
    }
    kvdb__range_response__free_unpacked(r, NULL);
    return found;
}

bool ih_member_log_has(const struct ih_member *m, const char *needle)
{
    FILE *fp = fopen(m->log, "r");
    char line[4096];
    bool found = false;
    while (fp != NULL && !found && fgets(line, sizeof line, fp) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    if (fp != NULL) {
        fclose(fp);
    }
    return found;
}

/* Replace @path by a copy of itself: a new inode under the same name. */
static int unshare_file(const char *path)
{
    char tmp[1100], buf[65536];
    snprintf(tmp, sizeof tmp, "%s.copy", path);
    int in = open(path, O_RDONLY), out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n = 0;
    int rv = in < 0 || out < 0 ? -1 : 0;
    while (rv == 0 && (n = read(in, buf, sizeof buf)) > 0) {
        rv = write(out, buf, (size_t)n) == n ? 0 : -1;
    }
    rv = rv == 0 && n == 0 ? 0 : -1;
    if (in >= 0) {
        close(in);
    }
    if (out >= 0 && close(out) != 0) {
        rv = -1;
    }
    return rv == 0 ? rename(tmp, path) : -1;
}

int ih_file_flip(const char *path, long off, bool unshare)
{
    if (unshare && unshare_file(path) != 0) {
        fprintf(stderr, "[integ] copy %s: %s\n", path, strerror(errno));
        return -1;
    }
    int fd = open(path, O_RDWR);
    unsigned char c = 0;
    int rv = fd >= 0 && pread(fd, &c, 1, off) == 1 ? 0 : -1;
    c ^= 0x01;
    rv = rv == 0 && pwrite(fd, &c, 1, off) == 1 ? 0 : -1;
    if (fd >= 0) {
        close(fd);
    }
    if (rv != 0) {
        fprintf(stderr, "[integ] flip %s at %ld: %s\n", path, off, strerror(errno));
    }
    return rv;
}
