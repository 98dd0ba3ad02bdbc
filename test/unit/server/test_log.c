/* Log rate limiting and level filtering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/log.h"

static void rate_limit_counts_suppressed_lines(void **state)
{
    (void)state;
    struct srv_log_limit l = {0};
    uint64_t sup = 99;
    assert_true(srv_log_allow(&l, 1000, 5000, &sup));
    assert_int_equal(sup, 0);
    assert_false(srv_log_allow(&l, 1001, 5000, &sup));
    assert_false(srv_log_allow(&l, 5999, 5000, &sup));
    assert_true(srv_log_allow(&l, 6000, 5000, &sup));
    assert_int_equal(sup, 2);
    assert_false(srv_log_allow(&l, 6001, 5000, &sup));
}

/* Lines go to stderr as one structured line; lines below the level are dropped. */
static void lines_are_structured_and_filtered(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    srv_log_set_level(SRV_LOG_INFO);
    srv_log(SRV_LOG_DEBUG, "test", "hidden %d", 1);
    srv_log(SRV_LOG_WARN, "peer", "refused %s", "x");
    dup2(saved, STDERR_FILENO);
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    close(saved);
    assert_true(n > 0);
    assert_null(strstr(buf, "hidden"));
    assert_non_null(strstr(buf, "level=warn comp=peer msg=\"refused x\"\n"));
    assert_int_equal(strncmp(buf, "ts=", 3), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rate_limit_counts_suppressed_lines),
        cmocka_unit_test(lines_are_structured_and_filtered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
