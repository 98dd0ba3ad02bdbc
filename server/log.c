/* Structured logging. */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int min_level; /* 0 = not yet read from the environment; benign race */

static const char *level_name(enum srv_log_level l)
{
    switch (l) {
    case SRV_LOG_DEBUG:
        return "debug";
    case SRV_LOG_INFO:
        return "info";
    case SRV_LOG_WARN:
        return "warn";
    default:
        return "error";
    }
}

void srv_log_set_level(enum srv_log_level level)
{
    min_level = (int)level;
}

static int current_level(void)
{
    if (min_level == 0) {
        const char *e = getenv("KVDB_LOG_LEVEL");
        int l = SRV_LOG_INFO;
        for (int i = SRV_LOG_DEBUG; e != NULL && i <= SRV_LOG_ERROR; i++) {
            if (strcasecmp(e, level_name((enum srv_log_level)i)) == 0) {
                l = i;
            }
        }
        min_level = l;
    }
    return min_level;
}

void srv_log(enum srv_log_level level, const char *comp, const char *fmt, ...)
{
    if ((int)level < current_level()) {
        return;
    }
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s msg=\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_name(level), comp);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 2, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 3) {
        len = sizeof line - 3;
    }
    line[len++] = '"';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere to report a failed log write */
}

int srv_log_allow(struct srv_log_limit *l,
                  uint64_t now_ms,
                  uint64_t interval_ms,
                  uint64_t *suppressed)
{
    if (l->used && now_ms - l->last_ms < interval_ms) {
        l->suppressed++;
        return 0;
    }
    *suppressed = l->suppressed;
    l->suppressed = 0;
    l->last_ms = now_ms;
    l->used = 1;
    return 1;
}

uint64_t srv_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
