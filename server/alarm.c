/* Replicated alarms, as etcd's: the set of (member, alarm type) pairs is replicated state.  An
 * AlarmRequest (ACTIVATE, DEACTIVATE) goes through the log as a state entry (apply.c), the apply
 * thread keeps the set as the store's "alarms" state record and checks every later entry
 * against it (so every member refuses the same writes), and the loop gets a copy to refuse
 * writes at the front door, answer AlarmList and /health.  NOSPACE refuses what makes the store
 * grow (puts, txns with a put, lease grants); CORRUPT refuses every write. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

#define ALARM_REC_BYTES 12 /* member u64, type u32 (little-endian) per alarm */
#define RAISE_RETRY_MS 2000

static const char *const msg_nospace = "etcdserver: mvcc: database space exceeded";
static const char *const msg_corrupt = "etcdserver: corrupt cluster";

const char *srv_alarm_name(int type)
{
    switch (type) {
    case KVDB__ALARM_TYPE__NOSPACE:
        return "NOSPACE";
    case KVDB__ALARM_TYPE__CORRUPT:
        return "CORRUPT";
    default:
        return "NONE";
    }
}

static bool type_valid(int type)
{
    return type == KVDB__ALARM_TYPE__NOSPACE || type == KVDB__ALARM_TYPE__CORRUPT;
}

int srv_alarm_decode(const void *buf, size_t len, struct srv_alarm *v, size_t *n)
{
    *n = 0;
    if (len % ALARM_REC_BYTES != 0 || len / ALARM_REC_BYTES > SRV_MAX_ALARMS) {
        return SRV_EIO;
    }
    const uint8_t *p = buf;
    for (size_t off = 0; off < len; off += ALARM_REC_BYTES) {
        v[*n].member = wal_get_u64(p + off);
        v[*n].type = (int)wal_get_u32(p + off + 8);
        (*n)++;
    }
    return 0;
}

/* The set's bytes (sorted by member, then type, as srv_alarm_next keeps it). */
static uint8_t *encode(const struct srv_alarm *v, size_t n, size_t *len)
{
    *len = n * ALARM_REC_BYTES;
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    for (size_t i = 0; buf != NULL && i < n; i++) {
        wal_put_u64(buf + i * ALARM_REC_BYTES, v[i].member);
        wal_put_u32(buf + i * ALARM_REC_BYTES + 8, (uint32_t)v[i].type);
    }
    return buf;
}

static bool matches(const struct srv_alarm *a, uint64_t member, int type)
{
    return (member == 0 || a->member == member) &&
           (type == KVDB__ALARM_TYPE__NONE || a->type == type);
}

bool srv_alarm_has(const struct srv_alarm *v, size_t n, uint64_t member, int type)
{
    for (size_t i = 0; i < n; i++) {
        if (matches(&v[i], member, type)) {
            return true;
        }
    }
    return false;
}

/* ACTIVATE adds (member, type); DEACTIVATE removes every alarm matching it (member 0: every
 * member's, type NONE: every type, so one entry can disarm them all).  Returns whether @v/@n
 * changed.  An ACTIVATE of an unknown type, of member 0, or past SRV_MAX_ALARMS changes
 * nothing (every member skips it alike). */
static bool set_next(const Kvdb__AlarmRequest *r, struct srv_alarm *v, size_t *n)
{
    if (r->action == KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        if (!type_valid(r->alarm) || r->memberid == 0 || *n >= SRV_MAX_ALARMS ||
            srv_alarm_has(v, *n, r->memberid, r->alarm)) {
            return false;
        }
        size_t i = 0;
        while (i < *n && (v[i].member < r->memberid ||
                          (v[i].member == r->memberid && v[i].type < (int)r->alarm))) {
            i++;
        }
        memmove(&v[i + 1], &v[i], (*n - i) * sizeof *v);
        v[i] = (struct srv_alarm){r->memberid, (int)r->alarm};
        (*n)++;
        return true;
    }
    if (r->action != KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE) {
        return false;
    }
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (!matches(&v[i], r->memberid, (int)r->alarm)) {
            v[k++] = v[i];
        }
    }
    bool changed = k != *n;
    *n = k;
    return changed;
}

int srv_alarm_next(struct srv *s, const Kvdb__AlarmRequest *r, uint8_t **buf, size_t *len)
{
    struct srv_alarm v[SRV_MAX_ALARMS];
    size_t n = s->n_apply_alarms;
    memcpy(v, s->apply_alarms, n * sizeof *v);
    *buf = NULL;
    *len = 0;
    if (!set_next(r, v, &n)) {
        return 0;
    }
    *buf = encode(v, n, len);
    return *buf != NULL ? 0 : LSM_ENOMEM;
}

/* Hand the loop a copy of the apply thread's set. */
static void post_set(struct srv *s)
{
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return; /* the loop's copy lags until the next change; apply still refuses alike */
    }
    d->kind = SRV_DONE_ALARMS;
    d->body = encode(s->apply_alarms, s->n_apply_alarms, &d->len);
    if (d->body == NULL) {
        free(d);
        return;
    }
    srv_post_done(s, d);
}

void srv_alarm_install(struct srv *s, uint8_t *buf, size_t len, bool at_start)
{
    size_t n = 0;
    struct srv_alarm v[SRV_MAX_ALARMS];
    if (srv_alarm_decode(buf, len, v, &n) != 0) {
        srv_log(SRV_LOG_WARN, "alarm", "undecodable alarms record (%zu bytes): ignored", len);
        n = 0;
    }
    free(buf);
    memcpy(s->apply_alarms, v, n * sizeof *v);
    s->n_apply_alarms = n;
    if (at_start) {
        memcpy(s->alarms, v, n * sizeof *v);
        s->n_alarms = n;
    } else {
        post_set(s);
    }
}

void srv_alarm_on_set(struct srv *s, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    struct srv_alarm v[SRV_MAX_ALARMS];
    if (srv_alarm_decode(buf, len, v, &n) != 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!srv_alarm_has(s->alarms, s->n_alarms, v[i].member, v[i].type)) {
            srv_log(SRV_LOG_WARN, "alarm", "alarm %s raised for member %llx",
                    srv_alarm_name(v[i].type), (unsigned long long)v[i].member);
        }
    }
    for (size_t i = 0; i < s->n_alarms; i++) {
        if (!srv_alarm_has(v, n, s->alarms[i].member, s->alarms[i].type)) {
            srv_log(SRV_LOG_INFO, "alarm", "alarm %s cleared for member %llx",
                    srv_alarm_name(s->alarms[i].type), (unsigned long long)s->alarms[i].member);
        }
    }
    memcpy(s->alarms, v, n * sizeof *v);
    s->n_alarms = n;
}

/* ---- refusing writes ---- */

static bool txn_has_put(const Kvdb__TxnRequest *t)
{
    for (int branch = 0; branch < 2; branch++) {
        size_t n = branch == 0 ? t->n_success : t->n_failure;
        Kvdb__RequestOp **ops = branch == 0 ? t->success : t->failure;
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->request_case == KVDB__REQUEST_OP__REQUEST_REQUEST_PUT ||
                (ops[i]->request_case == KVDB__REQUEST_OP__REQUEST_REQUEST_TXN &&
                 txn_has_put(ops[i]->request_txn))) {
                return true;
            }
        }
    }
    return false;
}

/* The refusal of a write under alarms @v/@n (plus @nospace: this member's disk is full), or
 * NULL.  @grows: the write makes the store grow (put, txn with a put, lease grant). */
static const char *refusal(const struct srv_alarm *v,
                           size_t n,
                           bool nospace,
                           bool grows,
                           Kvdb__ErrorCode *code)
{
    if (srv_alarm_has(v, n, 0, KVDB__ALARM_TYPE__CORRUPT)) {
        *code = KVDB__ERROR_CODE__DATA_LOSS;
        return msg_corrupt;
    }
    if (grows && (nospace || srv_alarm_has(v, n, 0, KVDB__ALARM_TYPE__NOSPACE))) {
        *code = KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
        return msg_nospace;
    }
    return NULL;
}

int srv_alarm_apply_check(const struct srv *s, const Kvdb__InternalRequest *ir)
{
    if (s->n_apply_alarms == 0) {
        return 0;
    }
    bool grows;
    switch (ir->request_case) {
    case KVDB__INTERNAL_REQUEST__REQUEST_PUT:
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
        grows = true;
        break;
    case KVDB__INTERNAL_REQUEST__REQUEST_TXN:
        grows = txn_has_put(ir->txn);
        break;
    case KVDB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE:
    case KVDB__INTERNAL_REQUEST__REQUEST_COMPACTION:
    case KVDB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
        grows = false;
        break;
    default:
        return 0; /* alarms, auth and membership changes are never refused */
    }
    Kvdb__ErrorCode code;
    if (refusal(s->apply_alarms, s->n_apply_alarms, false, grows, &code) == NULL) {
        return 0;
    }
    return code == KVDB__ERROR_CODE__DATA_LOSS ? SRV_ECORRUPT : SRV_ENOSPACE;
}

void srv_alarm_error(int err, Kvdb__ErrorCode *code, const char **msg)
{
    *code =
        err == SRV_ECORRUPT ? KVDB__ERROR_CODE__DATA_LOSS : KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
    *msg = err == SRV_ECORRUPT ? msg_corrupt : msg_nospace;
}

bool srv_alarm_admit(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    bool nospace = atomic_load(&s->nospace_local);
    if (s->n_alarms == 0 && !nospace) {
        return true;
    }
    bool grows =
        f->method == KVDB__METHOD__METHOD_PUT || f->method == KVDB__METHOD__METHOD_LEASE_GRANT;
    if (f->method == KVDB__METHOD__METHOD_TXN) {
        Kvdb__TxnRequest *t = kvdb__txn_request__unpack(NULL, f->body.len, f->body.data);
        grows = t == NULL || txn_has_put(t); /* undecodable: refused later anyway */
        if (t != NULL) {
            kvdb__txn_request__free_unpacked(t, NULL);
        }
    }
    Kvdb__ErrorCode code;
    const char *msg = refusal(s->alarms, s->n_alarms, nospace, grows, &code);
    if (msg == NULL) {
        return true;
    }
    srv_conn_reply(c, f->id, f->method, code, msg, NULL, 0);
    return false;
}

/* ---- raising and the Alarm method ---- */

/* Propose AlarmRequest @r through raft with request id @id (0: nobody waits for the reply). */
static int propose(struct srv *s, uint64_t id, const Kvdb__AlarmRequest *r)
{
    Kvdb__InternalRequest ir;
    kvdb__internal_request__init(&ir);
    ir.id = id;
    ir.member = s->cfg.member_id;
    ir.request_case = KVDB__INTERNAL_REQUEST__REQUEST_ALARM;
    ir.alarm = (Kvdb__AlarmRequest *)r;
    uint8_t buf[64];
    size_t n = kvdb__internal_request__pack(&ir, buf);
    if (s->inflight && s->leader != 0 && s->leader != s->cfg.member_id) {
        /* Our own Ready may be stuck (the WAL cannot persist it: disk full): the leader need
         * not wait for it. */
        srv_peer_forward(s, buf, n);
        return 0;
    }
    return srv_node_propose(s, buf, n, id);
}

int srv_alarm_raise(struct srv *s, uint64_t member, int type)
{
    if (!type_valid(type) || member == 0) {
        return SRV_EINVAL;
    }
    if (srv_alarm_has(s->alarms, s->n_alarms, member, type)) {
        return 0;
    }
    /* One proposal per type at a time; a lost one (leader change) is proposed again. */
    uint64_t now = srv_now_ms();
    if (member == s->cfg.member_id && now < s->alarm_retry_ms[type]) {
        return 0;
    }
    if (s->leader == 0) {
        return RAFT_ENOTLEADER;
    }
    Kvdb__AlarmRequest r;
    kvdb__alarm_request__init(&r);
    r.action = KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    r.memberid = member;
    r.alarm = (Kvdb__AlarmType)type;
    int rv = propose(s, s->next_req_id++, &r);
    if (rv == 0 && member == s->cfg.member_id) {
        s->alarm_retry_ms[type] = now + RAISE_RETRY_MS;
        srv_log(SRV_LOG_WARN, "alarm", "raising alarm %s for this member (%llx)",
                srv_alarm_name(type), (unsigned long long)member);
    }
    return rv;
}

/* The AlarmResponse of @v/@n, packed (malloc'd, *@len), or NULL when memory ran out. */
static uint8_t *pack_response(const Kvdb__ResponseHeader *h,
                              const struct srv_alarm *v,
                              size_t n,
                              size_t *len)
{
    Kvdb__AlarmMember am[SRV_MAX_ALARMS], *amp[SRV_MAX_ALARMS];
    for (size_t i = 0; i < n; i++) {
        kvdb__alarm_member__init(&am[i]);
        am[i].memberid = v[i].member;
        am[i].alarm = (Kvdb__AlarmType)v[i].type;
        amp[i] = &am[i];
    }
    Kvdb__AlarmResponse resp;
    kvdb__alarm_response__init(&resp);
    resp.header = (Kvdb__ResponseHeader *)h;
    resp.alarms = amp;
    resp.n_alarms = n;
    *len = kvdb__alarm_response__get_packed_size(&resp);
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    if (buf != NULL) {
        kvdb__alarm_response__pack(&resp, buf);
    }
    return buf;
}

uint8_t *srv_alarm_reply(struct srv *s, const Kvdb__AlarmRequest *r, uint64_t term, size_t *len)
{
    /* etcd answers with the alarms the request activated or deactivated. */
    struct srv_alarm v[SRV_MAX_ALARMS];
    size_t n = 0;
    if (r->action == KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        if (type_valid(r->alarm) && r->memberid != 0) {
            v[n++] = (struct srv_alarm){r->memberid, (int)r->alarm};
        }
    } else {
        for (size_t i = 0; i < s->n_apply_alarms; i++) {
            if (matches(&s->apply_alarms[i], r->memberid, (int)r->alarm)) {
                v[n++] = s->apply_alarms[i];
            }
        }
    }
    Kvdb__ResponseHeader h;
    srv_header(s, &h, term);
    return pack_response(&h, v, n, len);
}

void srv_alarm_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    Kvdb__AlarmRequest *r = kvdb__alarm_request__unpack(NULL, f->body.len, f->body.data);
    if (r == NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "malformed AlarmRequest", NULL, 0);
        return;
    }
    if (r->action == KVDB__ALARM_REQUEST__ALARM_ACTION__GET) {
        /* etcd's AlarmList: every member's alarms, from this member's copy of the set. */
        kvdb__alarm_request__free_unpacked(r, NULL);
        Kvdb__ResponseHeader h;
        srv_header(s, &h, raft_term_of(s->raft));
        size_t len = 0;
        uint8_t *buf = pack_response(&h, s->alarms, s->n_alarms, &len);
        srv_conn_reply(c, f->id, f->method,
                       buf != NULL ? KVDB__ERROR_CODE__OK : KVDB__ERROR_CODE__RESOURCE_EXHAUSTED,
                       buf != NULL ? NULL : "out of memory", buf, len);
        free(buf);
        return;
    }
    Kvdb__ErrorCode code = KVDB__ERROR_CODE__INVALID_ARGUMENT;
    const char *bad = NULL;
    if (r->action == KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
        (!type_valid(r->alarm) || r->memberid == 0)) {
        bad = "ACTIVATE needs a member ID and an alarm type";
    } else if (r->action != KVDB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
               r->action != KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE) {
        bad = "unknown alarm action";
    } else if (s->leader == 0) {
        code = KVDB__ERROR_CODE__UNAVAILABLE;
        bad = "no leader";
    }
    struct srv_pending *p = bad == NULL ? srv_pending_for(c, f) : NULL;
    if (bad == NULL && p == NULL) {
        code = KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
        bad = "out of memory";
    }
    int rv = bad == NULL ? propose(s, p->req_id, r) : 0;
    kvdb__alarm_request__free_unpacked(r, NULL);
    if (bad == NULL && rv != 0) {
        srv_pending_release(s, srv_pending_take(s, p->req_id));
        code = KVDB__ERROR_CODE__UNAVAILABLE;
        bad = rv == RAFT_ENOTLEADER ? "no leader" : raft_strerror(rv);
    }
    if (bad != NULL) {
        srv_conn_reply(c, f->id, f->method, code, bad, NULL, 0);
    }
}

size_t srv_alarm_describe(const struct srv *s, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    bool local =
        atomic_load(&((struct srv *)s)->nospace_local) &&
        !srv_alarm_has(s->alarms, s->n_alarms, s->cfg.member_id, KVDB__ALARM_TYPE__NOSPACE);
    size_t n = s->n_alarms + (local ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const char *name = i < s->n_alarms ? srv_alarm_name(s->alarms[i].type) : "NOSPACE";
        int k = snprintf(out + len, cap - len, "%sALARM %s", len > 0 ? ", " : "", name);
        if (k < 0 || (size_t)k >= cap - len) {
            break; /* cut short: the count still tells */
        }
        len += (size_t)k;
    }
    return n;
}
