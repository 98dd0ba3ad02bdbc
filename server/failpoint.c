/* Failpoints. */
#include "server/failpoint.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_POINTS 64

struct point
{
    char name[32];
    uint64_t member;
    enum srv_fp_action action;
    unsigned percent;
    unsigned left; /* remaining firings; 0 = unlimited */
    bool limited;
    unsigned delay_ms;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct point points[MAX_POINTS];
static size_t n_points;
static atomic_int armed;      /* number of armed points: the fast path reads only this */
static atomic_int env_loaded; /* KVDB_FAILPOINTS read (Debug builds) */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static struct
{
    char name[32];
    uint64_t hits;
} counters[MAX_POINTS];
static size_t n_counters;

int srv_fp_set(const char *name,
               uint64_t member,
               enum srv_fp_action action,
               unsigned percent,
               unsigned count,
               unsigned delay_ms)
{
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < n_points && !(strcmp(points[i].name, name) == 0 && points[i].member == member)) {
        i++;
    }
    if (action == SRV_FP_OFF) {
        if (i < n_points) {
            points[i] = points[--n_points];
        }
    } else {
        if (i == n_points) {
            if (n_points == MAX_POINTS) {
                pthread_mutex_unlock(&mu);
                return -1;
            }
            n_points++;
        }
        struct point *p = &points[i];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->member = member;
        p->action = action;
        p->percent = percent == 0 || percent > 100 ? 100 : percent;
        p->left = count;
        p->limited = count > 0;
        p->delay_ms = delay_ms;
    }
    atomic_store(&armed, (int)n_points);
    pthread_mutex_unlock(&mu);
    return 0;
}

void srv_fp_clear_all(void)
{
    pthread_mutex_lock(&mu);
    n_points = 0;
    atomic_store(&armed, 0);
    pthread_mutex_unlock(&mu);
}

int srv_fp_parse(const char *spec)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *t = strtok_r(buf, ";", &save); t != NULL; t = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(t, '=');
        if (eq == NULL) {
            return -1;
        }
        *eq = '\0';
        const char *a = eq + 1;
        enum srv_fp_action action;
        unsigned arg = 0, percent = 100, count = 0;
        if (strncmp(a, "error", 5) == 0) {
            action = SRV_FP_ERROR;
        } else if (strncmp(a, "drop", 4) == 0) {
            action = SRV_FP_DROP;
        } else if (strncmp(a, "delay", 5) == 0) {
            action = SRV_FP_DELAY;
        } else if (strncmp(a, "off", 3) == 0) {
            action = SRV_FP_OFF;
        } else {
            return -1;
        }
        const char *p = strchr(a, '(');
        if (p != NULL) {
            arg = (unsigned)strtoul(p + 1, NULL, 10);
        }
        const char *pc = strchr(a, '%');
        if (pc != NULL) {
            const char *q = pc;
            while (q > a && q[-1] >= '0' && q[-1] <= '9') {
                q--;
            }
            percent = (unsigned)strtoul(q, NULL, 10);
        }
        const char *st = strchr(a, '*');
        if (st != NULL) {
            count = (unsigned)strtoul(st + 1, NULL, 10);
        }
        /* drop(20) and error(20) read as a percentage, delay(50) as milliseconds. */
        if (action != SRV_FP_DELAY && p != NULL && pc == NULL) {
            percent = arg;
        }
        if (srv_fp_set(t, 0, action, percent, count, action == SRV_FP_DELAY ? arg : 0) != 0) {
            return -1;
        }
    }
    return 0;
}

static void count_hit(const char *name)
{
    for (size_t i = 0; i < n_counters; i++) {
        if (strcmp(counters[i].name, name) == 0) {
            counters[i].hits++;
            return;
        }
    }
    if (n_counters < MAX_POINTS) {
        snprintf(counters[n_counters].name, sizeof counters[0].name, "%s", name);
        counters[n_counters++].hits = 1;
    }
}

uint64_t srv_fp_hits(const char *name)
{
    pthread_mutex_lock(&mu);
    uint64_t h = 0;
    for (size_t i = 0; i < n_counters; i++) {
        if (strcmp(counters[i].name, name) == 0) {
            h = counters[i].hits;
        }
    }
    pthread_mutex_unlock(&mu);
    return h;
}

static void load_env(void)
{
#ifdef KV_FAILPOINTS_ENV
    const char *e = getenv("KVDB_FAILPOINTS");
    if (e != NULL && *e != '\0' && srv_fp_parse(e) != 0) {
        fprintf(stderr, "kvdb: ignoring malformed KVDB_FAILPOINTS term in '%s'\n", e);
    }
#endif
}

enum srv_fp_action srv_fp_check(uint64_t member, const char *name)
{
    if (atomic_load_explicit(&env_loaded, memory_order_acquire) == 0) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&env_loaded, &expected, 1)) {
            load_env();
        }
    }
    if (atomic_load_explicit(&armed, memory_order_relaxed) == 0) {
        return SRV_FP_OFF;
    }
    enum srv_fp_action act = SRV_FP_OFF;
    unsigned delay = 0;
    pthread_mutex_lock(&mu);
    count_hit(name);
    for (size_t i = 0; i < n_points; i++) {
        struct point *p = &points[i];
        if (strcmp(p->name, name) != 0 || (p->member != 0 && p->member != member)) {
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if (rng % 100 >= p->percent) {
            break;
        }
        act = p->action;
        delay = p->delay_ms;
        if (p->limited && --p->left == 0) {
            points[i] = points[--n_points];
            atomic_store(&armed, (int)n_points);
        }
        break;
    }
    pthread_mutex_unlock(&mu);
    if (act == SRV_FP_DELAY) {
        struct timespec ts = {(time_t)(delay / 1000), (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return SRV_FP_OFF;
    }
    return act;
}
