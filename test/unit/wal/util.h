/* Helpers shared by the WAL unit and fault tests: temporary directories and entry builders. */
#ifndef KV_TEST_WAL_UTIL_H
#define KV_TEST_WAL_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wal/wal.h"

/* A fresh directory under $TMPDIR (or /tmp); @buf gets its path. */
static inline int64_t tw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void tw_mkdtemp(char *buf, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/kvwal-XXXXXX", t != NULL && *t != '\0' ? t : "/tmp");
    if (mkdtemp(buf) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

/* Remove a flat directory and its files. */
static inline void tw_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Count files in @dir whose name starts with @prefix ("" = all). */
static inline int tw_count(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.' && strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            n++;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* Deterministic payload of entry (@index, @term): @len bytes derived from both. */
static inline void tw_fill(unsigned char *buf, size_t len, uint64_t index, uint64_t term)
{
    uint64_t x = index * 0x9e3779b97f4a7c15ull ^ term;
    for (size_t i = 0; i < len; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (unsigned char)(x >> 56);
    }
}

/* Payload length used for entry @index by the tests (varied, sometimes 0). */
static inline size_t tw_len(uint64_t index)
{
    return (size_t)((index * 37) % 300);
}

/* True if the memtable entry at @index holds tw_fill(tw_len(index), index, @term). */
static inline int tw_check(const struct wal_memtable *m, uint64_t index, uint64_t term)
{
    struct wal_entry e;
    size_t n = 0;
    if (wal_memtable_entries(m, index, index + 1, SIZE_MAX, &e, 1, &n) != 0 || n != 1) {
        return 0;
    }
    unsigned char buf[300];
    size_t len = tw_len(index);
    tw_fill(buf, len, index, term);
    return e.index == index && e.term == term && e.len == len &&
           (len == 0 || memcmp(e.data, buf, len) == 0);
}

/* Append entries [lo, hi] with @term through the wal, one call. */
static inline int tw_append(struct wal *w,
                            uint64_t lo,
                            uint64_t hi,
                            uint64_t term,
                            uint64_t *ticket)
{
    size_t n = (size_t)(hi - lo + 1);
    struct wal_entry *e = calloc(n, sizeof *e);
    unsigned char *data = malloc(n * 300 + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t idx = lo + i;
        e[i].index = idx;
        e[i].term = term;
        e[i].type = (uint8_t)(idx % 3);
        e[i].len = tw_len(idx);
        e[i].data = data + i * 300;
        tw_fill(data + i * 300, e[i].len, idx, term);
    }
    int rv = wal_append(w, e, n, ticket);
    free(e);
    free(data);
    return rv;
}

#endif /* KV_TEST_WAL_UTIL_H */
