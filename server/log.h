/* Structured log lines with levels: "ts=... level=... comp=... msg=..." on stderr. */
#ifndef KV_SERVER_LOG_H
#define KV_SERVER_LOG_H

#include <stdint.h>

enum srv_log_level { SRV_LOG_DEBUG = 1, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

/* Lines below @level are dropped.  Default SRV_LOG_INFO; KVDB_LOG_LEVEL=debug|info|warn|error
 * in the environment overrides it at the first log call.  Any thread. */
void srv_log_set_level(enum srv_log_level level);

/* Write one line: a timestamp, the level, the component @comp and the printf-formatted
 * message.  The line is written with a single write(2), so lines from threads never interleave.
 * Any thread. */
void srv_log(enum srv_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A rate limiter for one kind of line (e.g. refused peers): true at most once per @interval_ms
 * for @state (caller-owned, zero-initialised), counting the suppressed ones in *@suppressed
 * (reset when a line is allowed).  @now_ms is a monotonic clock.  One thread per @state. */
struct srv_log_limit
{
    uint64_t last_ms;
    uint64_t suppressed;
    int used;
};
int srv_log_allow(struct srv_log_limit *l,
                  uint64_t now_ms,
                  uint64_t interval_ms,
                  uint64_t *suppressed);

/* Monotonic microseconds (CLOCK_MONOTONIC). */
uint64_t srv_now_us(void);

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t srv_now_ms(void);

#endif /* KV_SERVER_LOG_H */
