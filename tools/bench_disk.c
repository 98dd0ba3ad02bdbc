/* kvdb-bench disk: fdatasync latency the way the WAL pays it.  The WAL overwrites preallocated,
 * already-written segment space and syncs after each group commit, so the probe writes a 1 MiB
 * file in full first and then times pwrite(4 KiB) + fdatasync into it; appending to a fresh
 * file (dd oflag=dsync) also pays block allocation and journal commits and is reported apart
 * by scripts/bench.sh. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/bench.h"

#define PROBE_FILE (1u << 20)
#define PROBE_BLOCK 4096u

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "kvdb-bench disk: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

/* Fill the probe file once and make it durable, so the timed syncs flush data only. */
static int prepare(int fd, const char *path, const uint8_t *block)
{
    for (unsigned off = 0; off < PROBE_FILE; off += PROBE_BLOCK) {
        if (pwrite(fd, block, PROBE_BLOCK, off) != (ssize_t)PROBE_BLOCK) {
            return fail("write", path);
        }
    }
    return fsync(fd) == 0 ? 0 : fail("fsync", path);
}

int bench_disk(const char *dir, unsigned count, bool json)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/kvdb-bench-fsync-probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        return fail("open", path);
    }
    static uint8_t block[PROBE_BLOCK];
    memset(block, 'w', sizeof block);
    struct hist *h = malloc(sizeof *h);
    int rv = h == NULL ? fail("malloc", path) : prepare(fd, path, block);
    if (rv == 0) {
        bench_hist_init(h);
        for (unsigned i = 0; i < count && rv == 0; i++) {
            uint64_t t = bench_now_ns();
            off_t off = (off_t)(i % (PROBE_FILE / PROBE_BLOCK)) * PROBE_BLOCK;
            if (pwrite(fd, block, PROBE_BLOCK, off) != (ssize_t)PROBE_BLOCK) {
                rv = fail("write", path);
            } else if (fdatasync(fd) != 0) {
                rv = fail("fdatasync", path);
            }
            bench_hist_add(h, bench_now_ns() - t);
        }
    }
    close(fd);
    unlink(path);
    if (rv == 0) {
        double avg = h->sum_ns / (double)h->count / 1e6;
        printf(
            "fdatasync after a 4 KiB overwrite in %s, %u times: p50 %.3f ms, p90 %.3f ms, "
            "p99 %.3f ms, max %.3f ms, mean %.3f ms\n",
            dir, count, bench_hist_quantile_ms(h, 0.5), bench_hist_quantile_ms(h, 0.9),
            bench_hist_quantile_ms(h, 0.99), bench_hist_quantile_ms(h, 1), avg);
        if (json) {
            printf(
                "{\"op\":\"disk\",\"count\":%u,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"avg_ms\":%.4f,"
                "\"max_ms\":%.4f}\n",
                count, bench_hist_quantile_ms(h, 0.5), bench_hist_quantile_ms(h, 0.99), avg,
                bench_hist_quantile_ms(h, 1));
        }
    }
    free(h);
    return rv;
}
