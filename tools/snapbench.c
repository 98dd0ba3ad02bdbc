/* snapbench: snapshot create, and stream + install over loopback TCP, on a real LevelDB table
 * set (N keys of 256-byte values), for several zstd levels.  Prints figures for
 * docs/bench-snap.md; it is a benchmark program, not a test.
 *
 * usage: snapbench DIR [KEYS] [LEVELS]    e.g. snapbench /tmp/sb 1000000 off,-3,1,3 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <leveldb/c.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "snapshot/snapshot.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "snapbench: %s: %s\n", what, detail != NULL ? detail : "");
    exit(1);
}

/* Average write(4 KiB) + fdatasync latency in @dir, in ms. */
static double fdatasync_ms(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        die("open", path);
    }
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    double t = now_s();
    for (int i = 0; i < 50; i++) {
        if (pwrite(fd, buf, sizeof buf, (off_t)i * 4096) != (ssize_t)sizeof buf ||
            fdatasync(fd) != 0) {
            die("fdatasync", strerror(errno));
        }
    }
    t = now_s() - t;
    close(fd);
    unlink(path);
    return t * 1000 / 50;
}

/* Put keys @first .. @first+@keys into the LevelDB at @path (created if missing): 12-byte keys,
 * 256-byte values of random lowercase text (about 4.7 bits of entropy per byte, so
 * compressible the way JSON-ish payloads are). */
static void build_db(const char *path, long first, long keys, bool full_compact)
{
    char *err = NULL;
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    leveldb_options_set_write_buffer_size(o, 64u << 20);
    leveldb_t *db = leveldb_open(o, path, &err);
    if (err != NULL) {
        die("leveldb_open", err);
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    uint64_t rng = 88172645463325252ull;
    char key[32], val[256];
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    for (long i = first; i < first + keys; i++) {
        for (size_t j = 0; j < sizeof val; j++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            val[j] = (char)('a' + rng % 26);
        }
        int n = snprintf(key, sizeof key, "key%012ld", i);
        leveldb_writebatch_put(b, key, (size_t)n, val, sizeof val);
        if (i % 1000 == 999) {
            leveldb_write(db, wo, b, &err);
            leveldb_writebatch_clear(b);
        }
    }
    leveldb_write(db, wo, b, &err);
    if (err != NULL) {
        die("leveldb_write", err);
    }
    /* Flush the memtable (DESIGN.md: compact_range over an empty range), as create does. */
    leveldb_compact_range(db, "", 0, "", 0);
    if (full_compact) {
        leveldb_compact_range(db, NULL, 0, NULL, 0);
    }
    leveldb_writebatch_destroy(b);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    leveldb_options_destroy(o);
}

/* The *.ldb names of @dir (malloc'd array of malloc'd strings). */
static char **table_names(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        die("opendir", dir);
    }
    char **v = NULL;
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".ldb") == 0) {
            v = realloc(v, (*n + 1) * sizeof *v);
            v[(*n)++] = strdup(de->d_name);
        }
    }
    closedir(d);
    return v;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            die("socket write", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
}

static void read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n <= 0) {
            die("socket read", n == 0 ? "eof" : strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Frames on the socket: u32 length (host order: both ends are this process) + bytes. */
static void send_frame(int fd, const void *buf, size_t len)
{
    uint32_t n = (uint32_t)len;
    write_all(fd, &n, sizeof n);
    write_all(fd, buf, len);
}

static size_t recv_frame(int fd, unsigned char **buf, size_t *cap)
{
    uint32_t n;
    read_all(fd, &n, sizeof n);
    if (n > *cap) {
        *buf = realloc(*buf, n);
        *cap = n;
    }
    read_all(fd, *buf, n);
    return n;
}

struct recv_job
{
    int fd;
    const char *root;
};

static void *receiver_main(void *arg)
{
    struct recv_job *j = arg;
    unsigned char *buf = NULL, ack[SNAP_ACK_SIZE];
    size_t cap = 0;
    char err[SNAP_ERRMSG_SIZE];
    struct snap_receiver *r;
    size_t len = recv_frame(j->fd, &buf, &cap);
    int rv = snap_receiver_open(j->root, buf, len, NULL, &r, ack, err);
    if (rv != 0) {
        die("receiver open", err);
    }
    write_all(j->fd, ack, sizeof ack);
    while (!snap_receiver_is_complete(r)) {
        len = recv_frame(j->fd, &buf, &cap);
        rv = snap_receiver_put(r, buf, len, ack);
        if (rv != 0) {
            die("receiver put", snap_receiver_errmsg(r));
        }
        write_all(j->fd, ack, sizeof ack);
    }
    if (snap_receiver_finish(r, NULL, NULL) != 0) {
        die("receiver finish", snap_receiver_errmsg(r));
    }
    snap_receiver_close(r);
    free(buf);
    return NULL;
}

/* Connected loopback TCP pair. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0) {
        die("listen", strerror(errno));
    }
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fds[0], (struct sockaddr *)&a, sizeof a) != 0) {
        die("connect", strerror(errno));
    }
    fds[1] = accept(l, NULL, NULL);
    close(l);
    int one = 1;
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Stream @snapdir into @root over loopback and install it; returns seconds. */
static double stream(const char *snapdir,
                     const char *root,
                     const struct snap_sender_opts *o,
                     uint64_t *raw,
                     uint64_t *wire)
{
    char err[SNAP_ERRMSG_SIZE];
    struct snap_sender *s;
    if (snap_sender_open(snapdir, o, &s, err) != 0) {
        die("sender open", err);
    }
    int fds[2];
    tcp_pair(fds);
    struct recv_job job = {fds[1], root};
    pthread_t t;
    double start = now_s();
    pthread_create(&t, NULL, receiver_main, &job);
    const void *buf;
    size_t len;
    unsigned char ack[SNAP_ACK_SIZE];
    snap_sender_manifest(s, &buf, &len);
    send_frame(fds[0], buf, len);
    read_all(fds[0], ack, sizeof ack);
    if (snap_sender_ack(s, ack, sizeof ack) != 0) {
        die("sender ack", snap_sender_errmsg(s));
    }
    while (!snap_sender_is_done(s)) {
        if (snap_sender_next(s, 0, &buf, &len) != 0) {
            die("sender next", snap_sender_errmsg(s));
        }
        if (buf != NULL) {
            send_frame(fds[0], buf, len);
            continue;
        }
        read_all(fds[0], ack, sizeof ack); /* window full: wait for one ack */
        if (snap_sender_ack(s, ack, sizeof ack) != 0) {
            die("sender ack", snap_sender_errmsg(s));
        }
    }
    pthread_join(t, NULL);
    double secs = now_s() - start;
    uint64_t total;
    snap_sender_stats(s, raw, wire, &total);
    snap_sender_close(s);
    close(fds[0]);
    close(fds[1]);
    return secs;
}

static void run_levels(const char *snapdir, const char *dir, char *levels)
{
    char root[PATH_MAX];
    for (char *tok = strtok(levels, ","); tok != NULL; tok = strtok(NULL, ",")) {
        struct snap_sender_opts o = {.window = 8};
        if (strcmp(tok, "off") == 0) {
            o.no_zstd = true;
        } else {
            o.zstd_level = atoi(tok);
            if (o.zstd_level == 0) {
                o.no_zstd = true;
            }
        }
        snprintf(root, sizeof root, "%s/recv-%s", dir, tok);
        uint64_t raw, wire;
        double secs = stream(snapdir, root, &o, &raw, &wire);
        printf("stream+install zstd=%-4s  %.3f s  %.1f MB/s of snapshot data  wire %.1f%% of raw\n",
               tok, secs, (double)raw / 1e6 / secs, 100.0 * (double)wire / (double)raw);
        fflush(stdout);
    }
}

/* Snapshot the live tables of @db as @index under @root and print the time; @followup: a
 * previous snapshot exists under @root. */
static void create_timed(const char *root, uint64_t index, const char *db, bool followup)
{
    size_t n;
    char **names = table_names(db, &n), err[SNAP_ERRMSG_SIZE];
    uint64_t voters[] = {1};
    struct snap_meta m = {
        .index = index, .term = 1, .revision = index, .voters = voters, .n_voters = 1};
    struct snap_manifest man;
    double t = now_s();
    if (snap_create(root, &m, db, (const char *const *)names, n, &man, err) != 0) {
        die("snap_create", err);
    }
    t = (now_s() - t) * 1000;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < man.n_files; i++) {
        bytes += man.files[i].size;
    }
    if (!followup) {
        printf("snap_create: %zu table files, %.1f MB, %.1f ms (links + crc32c of every byte)\n", n,
               (double)bytes / 1e6, t);
    } else {
        printf(
            "snap_create after 1%% more keys: %zu table files, %.1f MB, %.1f ms "
            "(unchanged tables keep their crc32c)\n",
            n, (double)bytes / 1e6, t);
    }
    snap_manifest_fini(&man);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: snapbench DIR [KEYS] [LEVELS]\n");
        return 2;
    }
    const char *dir = argv[1];
    long keys = argc > 2 ? atol(argv[2]) : 1000000;
    char levels[256];
    snprintf(levels, sizeof levels, "%s", argc > 3 ? argv[3] : "off,-5,-1,1,3");
    char db[PATH_MAX], root[PATH_MAX], snapdir[PATH_MAX + 48], name[40];
    mkdir(dir, 0755);
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(root, sizeof root, "%s/snap", dir);
    printf("fdatasync (4 KiB write + fdatasync, avg of 50): %.3f ms\n", fdatasync_ms(dir));
    double t = now_s();
    build_db(db, 0, keys, true);
    printf("load %ld keys x 256 B into LevelDB: %.2f s\n", keys, now_s() - t);
    create_timed(root, 1000, db, false);
    /* Then 1% more keys, flushed (no full compaction), and a second snapshot: the tables that
     * did not change keep their checksums. */
    build_db(db, keys, keys / 100, false);
    create_timed(root, 2000, db, true);
    snap_dir_name(1000, 1, name, sizeof name);
    snprintf(snapdir, sizeof snapdir, "%s/%s", root, name);
    run_levels(snapdir, dir, levels);
    return 0;
}
