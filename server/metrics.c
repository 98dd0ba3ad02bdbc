/* /metrics and /health. */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/srv_int.h"

void srv_hist_observe(struct srv_hist *h, uint64_t us)
{
    uint64_t bound = 100; /* 0.1 ms */
    size_t i = 0;
    while (i < SRV_HIST_BUCKETS && us > bound) {
        bound *= 2;
        i++;
    }
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

struct out
{
    char *buf;
    size_t len;
    size_t cap;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);
        if (b == NULL) {
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void metric(struct out *o, const char *name, const char *type, const char *help, double v)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void hist(struct out *o, const char *name, const char *help, const struct srv_hist *h)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    double bound = 0.0001;
    for (size_t i = 0; i < SRV_HIST_BUCKETS; i++, bound *= 2) {
        cum += atomic_load(&h->counts[i]);
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, bound, (unsigned long long)cum);
    }
    cum += atomic_load(&h->counts[SRV_HIST_BUCKETS]);
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name, (unsigned long long)cum,
        name, (double)atomic_load(&h->sum_us) / 1e6, name, (unsigned long long)cum);
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static void render(struct srv *s, struct out *o)
{
    struct srv_metrics *m = &s->metrics;
    metric(o, "kvdb_server_has_leader", "gauge", "Whether a leader exists (1) or not (0).",
           s->leader != 0);
    metric(o, "kvdb_server_is_leader", "gauge", "Whether this member is the leader.",
           s->leader == s->cfg.member_id);
    metric(o, "kvdb_server_leader_changes_seen_total", "counter",
           "Leader changes seen by this member.", (double)atomic_load(&m->leader_changes));
    metric(o, "kvdb_server_term", "gauge", "The raft term.", (double)raft_term_of(s->raft));
    metric(o, "kvdb_server_proposals_committed_total", "gauge",
           "The raft commit index (entries committed).", (double)raft_commit_index(s->raft));
    metric(o, "kvdb_server_proposals_applied_total", "gauge",
           "The applied index (entries applied to the store).",
           (double)atomic_load(&s->applied_pub));
    metric(o, "kvdb_server_proposals_pending", "gauge",
           "Client writes waiting for their entry to apply.", (double)s->n_pending);
    metric(o, "kvdb_server_proposals_failed_total", "counter",
           "Client writes that timed out or were refused.",
           (double)atomic_load(&m->proposals_failed));
    metric(o, "kvdb_server_client_requests_total", "counter", "Client requests received.",
           (double)atomic_load(&m->client_requests));
    hist(o, "kvdb_disk_wal_fsync_duration_seconds",
         "From handing a Ready's entries to the WAL until they are durable.", &m->wal_fsync);
    hist(o, "kvdb_disk_backend_commit_duration_seconds",
         "One LevelDB write batch of a group of applied entries.", &m->apply);
    hist(o, "kvdb_snap_create_duration_seconds", "Creating a snapshot.", &m->snap_create);
    metric(o, "kvdb_network_snapshot_send_success_total", "counter", "Snapshots sent.",
           (double)atomic_load(&m->snap_sent_ok));
    metric(o, "kvdb_network_snapshot_send_failures_total", "counter",
           "Snapshot transfers that failed.", (double)atomic_load(&m->snap_sent_failed));
    metric(o, "kvdb_server_snapshot_installed_total", "counter",
           "Snapshots received and installed.", (double)atomic_load(&m->snap_installed));
    metric(o, "kvdb_network_peer_messages_dropped_total", "counter",
           "Raft messages dropped (peer down or backlogged).",
           (double)atomic_load(&m->peer_batches_dropped));
    metric(o, "kvdb_mvcc_db_total_size_in_bytes", "gauge", "Size of the store's files.",
           (double)s->db_size);
    metric(o, "kvdb_mvcc_current_revision", "gauge", "The current MVCC revision.",
           (double)atomic_load(&s->revision));
    metric(o, "kvdb_debugging_mvcc_watcher_total", "gauge", "Watchers.",
           (double)atomic_load(&s->n_watchers));
    metric(o, "kvdb_disk_wal_memtable_bytes", "gauge", "Memory of the in-memory raft log.",
           (double)wal_memtable_bytes(wal_memtable(s->wal)));
    metric(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           (double)rss_bytes());
}

/* Answer one HTTP request on a client connection and close it. */
void srv_http_handle(struct srv_conn *c, const char *req, size_t len)
{
    struct srv *s = c->s;
    struct out body = {malloc(16384), 0, 16384};
    const char *status = "200 OK", *type = "text/plain; version=0.0.4";
    if (body.buf == NULL) {
        srv_conn_close(c);
        return;
    }
    if (len >= 13 && strncmp(req, "GET /metrics", 12) == 0 && (req[12] == ' ' || req[12] == '?')) {
        render(s, &body);
    } else if (len >= 12 && strncmp(req, "GET /health", 11) == 0 &&
               (req[11] == ' ' || req[11] == '?')) {
        /* etcd's /health: healthy when this member knows a leader and no alarm is active
         * (any member's: the alarms are the cluster's). */
        char alarms[256];
        size_t n_alarms = srv_alarm_describe(s, alarms, sizeof alarms);
        bool ok = s->leader != 0 && n_alarms == 0;
        type = "application/json";
        status = ok ? "200 OK" : "503 Service Unavailable";
        put(&body, "{\"health\":\"%s\",\"reason\":\"%s\"}\n", ok ? "true" : "false",
            n_alarms > 0     ? alarms
            : s->leader == 0 ? "no leader"
                             : "");
    } else {
        status = "404 Not Found";
        put(&body, "not found: try /metrics or /health\n");
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, type, body.len);
    pb_frame_writer_append_bytes(&c->wr, head, (size_t)n);
    pb_frame_writer_append_bytes(&c->wr, body.buf, body.len);
    free(body.buf);
    srv_conn_close_after_reply(c);
}
