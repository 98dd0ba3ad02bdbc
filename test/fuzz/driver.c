/* Stand-alone driver for fuzz targets when libFuzzer is not in the build (gcc builds): replays
 * every file of the corpus directories given as arguments, then feeds a bounded number of seeded
 * random mutations of them.  KV_FUZZ_RUNS sets the count (default 20000); the seed is printed. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/seed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 65536

struct corpus
{
    uint8_t **bufs;
    size_t *lens;
    size_t n;
};

static void corpus_add(struct corpus *c, uint8_t *buf, size_t len)
{
    c->bufs = realloc(c->bufs, (c->n + 1) * sizeof *c->bufs);
    c->lens = realloc(c->lens, (c->n + 1) * sizeof *c->lens);
    if (c->bufs == NULL || c->lens == NULL) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        exit(1);
    }
    c->bufs[c->n] = buf;
    c->lens[c->n] = len;
    c->n++;
}

static void corpus_load(struct corpus *c, const char *dir)
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
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            continue;
        }
        uint8_t *buf = malloc(FUZZ_MAX_INPUT);
        size_t len = buf != NULL ? fread(buf, 1, FUZZ_MAX_INPUT, f) : 0;
        fclose(f);
        if (buf != NULL) {
            corpus_add(c, buf, len);
        }
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    struct corpus c = {0};
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-') {
            corpus_load(&c, argv[i]);
        }
    }
    for (size_t i = 0; i < c.n; i++) {
        LLVMFuzzerTestOneInput(c.bufs[i], c.lens[i]);
    }
    const char *runs_env = getenv("KV_FUZZ_RUNS");
    long runs = runs_env != NULL ? atol(runs_env) : 20000;
    uint64_t seed = test_seed("fuzz-driver");
    uint8_t *buf = malloc(FUZZ_MAX_INPUT);
    if (buf == NULL) {
        return 1;
    }
    for (long r = 0; r < runs; r++) {
        size_t len;
        if (c.n > 0 && test_rand(&seed) % 4 != 0) {
            size_t k = test_rand(&seed) % c.n;
            len = c.lens[k];
            memcpy(buf, c.bufs[k], len);
            /* A few byte flips, a truncation, or an extension with noise. */
            int flips = (int)(test_rand(&seed) % 4);
            for (int f = 0; f < flips && len > 0; f++) {
                buf[test_rand(&seed) % len] ^= (uint8_t)(1u << (test_rand(&seed) % 8));
            }
            if (len > 0 && test_rand(&seed) % 3 == 0) {
                len = test_rand(&seed) % len;
            }
        } else {
            len = test_rand(&seed) % 512;
            for (size_t i = 0; i < len; i++) {
                buf[i] = (uint8_t)test_rand(&seed);
            }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("fuzz driver: %zu corpus inputs, %ld random runs, no crash\n", c.n, runs);
    free(buf);
    for (size_t i = 0; i < c.n; i++) {
        free(c.bufs[i]);
    }
    free(c.bufs);
    free(c.lens);
    return 0;
}
