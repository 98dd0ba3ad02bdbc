/* Shared fixtures of the snapshot unit tests: scratch directories, random files, comparisons,
 * and a fault hook that simulates a crash at the Nth file-system operation. */
#ifndef KV_TEST_SNAP_HELPERS_H
#define KV_TEST_SNAP_HELPERS_H

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "test/lib/seed.h"

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh scratch directory, into @buf (PATH_MAX): under $KV_TEST_TMPDIR if set, else /dev/shm
 * when it exists (the crash tests run hundreds of fsync-heavy transfers: on a loaded disk they
 * would take minutes, and fsync durability itself is not what they check), else /tmp. */
static inline void scratch_dir(char *buf, const char *tag)
{
    const char *base = getenv("KV_TEST_TMPDIR");
    struct stat st;
    if (base == NULL) {
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    }
    snprintf(buf, PATH_MAX, "%s/kvsnap-%s-XXXXXX", base, tag);
    if (mkdtemp(buf) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

/* <a>/<b> into @out (PATH_MAX); test paths are short, so truncation is a broken fixture. */
static inline void join(char *out, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 2 > PATH_MAX) {
        abort();
    }
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb + 1);
}

/* Write @size bytes to <dir>/<name>: half random, half repetitive so zstd has work. */
static inline void write_file(const char *dir, const char *name, size_t size, uint64_t *rng)
{
    char path[PATH_MAX];
    join(path, dir, name);
    unsigned char *buf = malloc(size > 0 ? size : 1);
    for (size_t i = 0; i < size; i++) {
        buf[i] = (i / 4096) % 2 ? (unsigned char)test_rand(rng) : (unsigned char)(i % 251);
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        abort();
    }
    free(buf);
}

/* Whole content of a file (malloc'd) or NULL. */
static inline unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static inline bool same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    unsigned char *x = slurp(a, &la), *y = slurp(b, &lb);
    bool same = x != NULL && y != NULL && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Crash simulation: operation number @crash_at (1-based) and every later one fail with EIO,
 * as if the process died just before it: nothing after that point reaches the disk. */
struct crash_hook
{
    int count;    /* operations seen */
    int crash_at; /* 0: never */
    bool once;    /* fail only operation crash_at, with ENOSPC (an I/O error, not a crash) */
    bool crashed;
};

static inline int crash_fault(void *arg, enum snap_fs_op op, const char *path)
{
    (void)op;
    (void)path;
    struct crash_hook *h = arg;
    h->count++;
    if (h->once && h->count == h->crash_at) {
        h->crashed = true;
        return 28; /* ENOSPC */
    }
    if (!h->once && h->crash_at > 0 && h->count >= h->crash_at) {
        h->crashed = true;
        return 5; /* EIO */
    }
    return 0;
}

#endif /* KV_TEST_SNAP_HELPERS_H */
