/* kvdb-waldump against a real WAL: a clean directory prints its records and exits 0; a flipped
 * bit in a closed segment is reported with file and offset and exit status 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/wait.h>

#include "test/unit/wal/util.h"
#include "wal/wal.h"

static const char *waldump;

/* Run waldump on @dir; its output into @out, exit status returned. */
static int run(const char *dir, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -q %s 2>&1", waldump, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void dump_clean_then_corrupt(void **state)
{
    (void)state;
    char dir[256];
    tw_mkdtemp(dir, sizeof dir);
    struct wal_options o = {.segment_size = 2048};
    struct wal *w = NULL;
    assert_int_equal(wal_open(dir, &o, &w, NULL, NULL), 0);
    for (uint64_t i = 1; i <= 100; i += 5) {
        assert_int_equal(tw_append(w, i, i + 4, 1, NULL), 0);
        assert_int_equal(wal_sync_wait(w, 0), 0);
    }
    wal_close(w);
    static char out[1 << 16];
    assert_int_equal(run(dir, out, sizeof out), 0);
    assert_non_null(strstr(out, "clean"));
    assert_non_null(strstr(out, "open-"));

    /* Flip a bit in the oldest closed segment, past its header. */
    DIR *d = opendir(dir);
    struct dirent *de;
    char oldest[256] = "";
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) == 33 && (oldest[0] == '\0' || strcmp(de->d_name, oldest) < 0)) {
            snprintf(oldest, sizeof oldest, "%s", de->d_name);
        }
    }
    closedir(d);
    assert_true(oldest[0] != '\0');
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, oldest);
    int fd = open(path, O_RDWR);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, 300), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, 300), 1);
    close(fd);
    assert_int_equal(run(dir, out, sizeof out), 2);
    assert_non_null(strstr(out, "CORRUPT"));
    assert_non_null(strstr(out, oldest));
    assert_non_null(strstr(out, "offset"));
    tw_rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <path to kvdb-waldump>\n", argv[0]);
        return 1;
    }
    waldump = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dump_clean_then_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
