/* kvdb-linz: check recorded histories for linearizability and print the verdict. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/lib/history.h"
#include "test/lib/linz.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvdb-linz [--max-states N] [--timeout SECONDS] FILE...\n"
            "Checks each history file (format: test/lib/history.h) against the model\n"
            "key -> optional value with put/get/del/cas, per key (serializable reads,\n"
            "`sget`, are counted but not checked).\n"
            "Exit status: 0 all linearizable, 1 a violation, 2 gave up (budget), 3 error.\n");
}

/* Parse a non-negative number argument; false if malformed. */
static bool parse_num(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return errno == 0 && end != s && *end == '\0' && *out >= 0;
}

/* Check one file; returns the exit status contribution (0..3). */
static int check_file(const char *path, const struct test_linz_opts *opts)
{
    struct test_hist h;
    test_hist_init(&h);
    int rv = test_hist_load(&h, path);
    if (rv != 0) {
        fprintf(stderr, "kvdb-linz: %s: %s\n", test_linz_strerror(rv), h.errmsg);
        test_hist_fini(&h);
        return 3;
    }
    struct test_linz_result r;
    char err[TEST_LINZ_ERRMSG_SIZE] = "";
    rv = test_linz_check(&h, opts, &r, err);
    test_hist_fini(&h);
    if (rv != 0) {
        fprintf(stderr, "kvdb-linz: %s: %s: %s\n", path, test_linz_strerror(rv), err);
        return 3;
    }
    printf("%s: ", path);
    fflush(stdout);
    test_linz_result_print(&r, stdout);
    int status = r.verdict == TEST_LINZ_OK ? 0 : r.verdict == TEST_LINZ_VIOLATION ? 1 : 2;
    test_linz_result_fini(&r);
    return status;
}

int main(int argc, char **argv)
{
    struct test_linz_opts opts = {0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        double v;
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || !parse_num(argv[i + 1], &v)) {
            usage(stderr);
            return 3;
        }
        if (strcmp(argv[i], "--max-states") == 0) {
            opts.max_states = (uint64_t)v;
        } else if (strcmp(argv[i], "--timeout") == 0) {
            opts.max_ns = (int64_t)(v * 1e9);
        } else {
            usage(stderr);
            return 3;
        }
    }
    if (i == argc) {
        usage(stderr);
        return 3;
    }
    int status = 0;
    for (; i < argc; i++) {
        int s = check_file(argv[i], &opts);
        /* Report the worst outcome: error > violation > gave up > ok. */
        int rank[] = {0, 2, 1, 3};
        status = rank[s] > rank[status] ? s : status;
    }
    return status;
}
