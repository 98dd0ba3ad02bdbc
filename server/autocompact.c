/* Auto-compaction on the leader (etcd's --auto-compaction-mode/--auto-compaction-retention):
 * it proposes a Compact through raft, so every member compacts at the same revision.
 *   periodic: keep at least `retention` of history.  The revision is sampled every tenth of
 *             the retention; the newest sample older than the retention is the compaction point.
 *   revision: every --auto-compaction-interval, compact to (current revision - retention). */
#include <assert.h>
#include <string.h>

#include "server/srv_int.h"

#define SAMPLES 11

static void propose_compact(struct srv *s, int64_t rev)
{
    /* InternalRequest{id: 0, member: self, compaction: {revision: rev}}: id 0 answers nobody. */
    Kvdb__CompactionRequest cr;
    kvdb__compaction_request__init(&cr);
    cr.revision = rev;
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.member = s->cfg.member_id;
    ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_COMPACTION;
    ir.compaction = &cr;
    uint8_t buf[64]; /* integers only: at most 37 bytes */
    assert(kvdb__internal_request__get_packed_size(&ir) <= sizeof buf);
    size_t n = kvdb__internal_request__pack(&ir, buf);
    if (srv_node_propose(s, buf, n, 0) == 0) {
        s->ac_last_rev = rev;
        srv_log(SRV_LOG_INFO, "compactor", "proposed compaction at revision %lld", (long long)rev);
    }
}

void srv_autocompact_tick(struct srv *s)
{
    uint64_t retention = s->cfg.compaction_retention;
    if (retention == 0 || s->leader != s->cfg.member_id) {
        s->ac_n = 0; /* a new leader starts sampling afresh, as etcd's does */
        return;
    }
    uint64_t now = srv_now_ms();
    int64_t rev = atomic_load(&s->revision);
    if (s->cfg.compaction_mode == SRV_COMPACT_REVISION) {
        if (now - s->ac_last_ms < s->cfg.compaction_interval_ms) {
            return;
        }
        s->ac_last_ms = now;
        int64_t target = rev - (int64_t)retention;
        if (target > s->ac_last_rev && target > 0) {
            propose_compact(s, target);
        }
        return;
    }
    uint64_t every = retention / 10 > 0 ? retention / 10 : 1;
    if (s->ac_n == 0 || now - s->ac_time[(s->ac_head + s->ac_n - 1) % SAMPLES] >= every) {
        size_t slot = (s->ac_head + s->ac_n) % SAMPLES;
        if (s->ac_n == SAMPLES) {
            s->ac_head = (s->ac_head + 1) % SAMPLES;
            s->ac_n--;
        }
        s->ac_time[slot] = now;
        s->ac_rev[slot] = rev;
        s->ac_n++;
    }
    /* The newest sample at least `retention` old. */
    int64_t target = 0;
    for (size_t i = 0; i < s->ac_n; i++) {
        size_t k = (s->ac_head + i) % SAMPLES;
        if (now - s->ac_time[k] >= retention) {
            target = s->ac_rev[k];
        }
    }
    if (target > s->ac_last_rev && target > 0) {
        propose_compact(s, target);
    }
}
