/* kvctl: the kvdb command line, in the spirit of etcdctl. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client/kvc.h"

struct opts
{
    const char *endpoints;
    bool prefix, from_key, prev_kv, keys_only, count_only, value_only, serializable;
    int64_t limit, rev;
    int sort_target, sort_order;
    unsigned timeout_ms;
    enum { OUT_SIMPLE, OUT_JSON, OUT_TABLE } out;
    bool progress_notify;
    const char *peer_url; /* member add/update --peer-urls */
    const char *user;     /* --user NAME:PASSWORD */
    int64_t lease;        /* put --lease ID (hex) */
    bool keys;            /* lease timetolive --keys */
    bool once;            /* lease keep-alive --once */
    const char *password; /* user add/passwd --password */
    bool learner;         /* member add --learner */
    long max_events;      /* watch: stop after this many events (0: run until interrupted) */
};

void kvctl_print_json(const ProtobufCMessage *m);

/* -w json: print the whole reply; returns true when it did. */
static bool json(const struct opts *o, const void *msg)
{
    if (o->out != OUT_JSON) {
        return false;
    }
    kvctl_print_json(msg);
    putchar('\n');
    return true;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kvctl [--endpoints host:port,...] [--command-timeout MS]\n"
            "             [-w|--write-out simple|json|table] COMMAND ...\n"
            "  put KEY VALUE [--prev-kv] [--lease ID]\n"
            "  get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--rev N] [--keys-only]\n"
            "      [--count-only] [--print-value-only] [--consistency l|s]\n"
            "      [--sort-by KEY|VERSION|CREATE|MODIFY|VALUE] [--order ASCEND|DESCEND]\n"
            "  del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]\n"
            "  watch KEY [RANGE_END] [--prefix] [--rev N] [--prev-kv] [--progress-notify]\n"
            "      [--max-events N]\n"
            "  txn            (reads compares, success ops, failure ops from stdin, as etcdctl)\n"
            "  compact REV\n"
            "  endpoint status|health|hashkv [--rev N]   (each endpoint)\n"
            "  alarm list|disarm\n"
            "  member list | add NAME --peer-urls URL [--learner] | remove ID | promote ID\n"
            "      | update ID --peer-urls URL\n"
            "  move-leader ID\n"
            "  snapshot save FILE     (a fresh snapshot; kvdb-snapshot status/restore read it)\n"
            "  lease grant TTL | revoke ID | timetolive ID | list | keep-alive ID [--once]\n"
            "  auth enable|disable|status\n"
            "  user add NAME --password P | delete NAME | passwd NAME --password P\n"
            "      | grant-role USER ROLE | revoke-role USER ROLE | list\n"
            "  role add NAME | delete NAME | list\n"
            "      | grant-permission ROLE read|write|readwrite KEY [END] [--prefix|--from-key]\n"
            "  global: --user NAME:PASSWORD when auth is enabled\n");
}

static void print_kv(const Kvdb__KeyValue *kv, const struct opts *o)
{
    if (!o->value_only) {
        fwrite(kv->key.data, 1, kv->key.len, stdout);
        putchar('\n');
    }
    if (!o->keys_only) {
        fwrite(kv->value.data, 1, kv->value.len, stdout);
        putchar('\n');
    }
}

static int fail(struct kvc *c, int rv)
{
    if (rv == KVC_ESERVER) {
        fprintf(stderr, "Error: %s\n", kvc_errmsg(c));
    } else {
        fprintf(stderr, "Error: %s: %s\n", kvc_strerror(rv), kvc_errmsg(c));
    }
    return 1;
}

/* Key range from KEY [RANGE_END] and --prefix/--from-key into @key/@end (end in @endbuf). */
static void key_range(int argc,
                      char **argv,
                      const struct opts *o,
                      ProtobufCBinaryData *key,
                      ProtobufCBinaryData *end,
                      uint8_t *endbuf)
{
    key->data = (uint8_t *)argv[0];
    key->len = strlen(argv[0]);
    end->data = NULL;
    end->len = 0;
    if (o->prefix) {
        end->data = endbuf;
        end->len = kvc_prefix_end(key->data, key->len, endbuf);
    } else if (o->from_key) {
        endbuf[0] = 0;
        end->data = endbuf;
        end->len = 1;
    } else if (argc > 1) {
        end->data = (uint8_t *)argv[1];
        end->len = strlen(argv[1]);
    }
}

static int cmd_put(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc != 2) {
        usage();
        return 2;
    }
    Kvdb__PutRequest r;
    kvdb__put_request__init(&r);
    r.key.data = (uint8_t *)argv[0];
    r.key.len = strlen(argv[0]);
    r.value.data = (uint8_t *)argv[1];
    r.value.len = strlen(argv[1]);
    r.prev_kv = o->prev_kv;
    r.lease = o->lease;
    Kvdb__PutResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_PUT, &r.base, &kvdb__put_response__descriptor,
                      (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        printf("OK\n");
        if (resp->prev_kv != NULL) {
            print_kv(resp->prev_kv, o);
        }
    }
    kvdb__put_response__free_unpacked(resp, NULL);
    return 0;
}

static int cmd_get(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc < 1 || argc > 2) {
        usage();
        return 2;
    }
    uint8_t endbuf[4096];
    Kvdb__RangeRequest r;
    kvdb__range_request__init(&r);
    key_range(argc, argv, o, &r.key, &r.range_end, endbuf);
    r.limit = o->limit;
    r.revision = o->rev;
    r.keys_only = o->keys_only;
    r.count_only = o->count_only;
    r.serializable = o->serializable;
    r.sort_target = (Kvdb__RangeRequest__SortTarget)o->sort_target;
    r.sort_order = (Kvdb__RangeRequest__SortOrder)o->sort_order;
    Kvdb__RangeResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_RANGE, &r.base, &kvdb__range_response__descriptor,
                      (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        if (o->count_only) {
            printf("%" PRId64 "\n", resp->count);
        }
        for (size_t i = 0; i < resp->n_kvs; i++) {
            print_kv(resp->kvs[i], o);
        }
    }
    kvdb__range_response__free_unpacked(resp, NULL);
    return 0;
}

static int cmd_del(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc < 1 || argc > 2) {
        usage();
        return 2;
    }
    uint8_t endbuf[4096];
    Kvdb__DeleteRangeRequest r;
    kvdb__delete_range_request__init(&r);
    key_range(argc, argv, o, &r.key, &r.range_end, endbuf);
    r.prev_kv = o->prev_kv;
    Kvdb__DeleteRangeResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_DELETE_RANGE, &r.base,
                      &kvdb__delete_range_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        printf("%" PRId64 "\n", resp->deleted);
        for (size_t i = 0; i < resp->n_prev_kvs; i++) {
            print_kv(resp->prev_kvs[i], o);
        }
    }
    kvdb__delete_range_response__free_unpacked(resp, NULL);
    return 0;
}

static int cmd_watch(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc < 1 || argc > 2) {
        usage();
        return 2;
    }
    uint8_t endbuf[4096];
    Kvdb__WatchCreateRequest r;
    kvdb__watch_create_request__init(&r);
    key_range(argc, argv, o, &r.key, &r.range_end, endbuf);
    r.start_revision = o->rev;
    r.prev_kv = o->prev_kv;
    r.progress_notify = o->progress_notify;
    uint64_t stream;
    int rv = kvc_watch(c, &r, &stream);
    if (rv != 0) {
        return fail(c, rv);
    }
    long seen = 0;
    while (o->max_events == 0 || seen < o->max_events) {
        Kvdb__WatchResponse *w;
        rv = kvc_watch_next(c, 3600 * 1000, &stream, &w);
        if (rv == KVC_ETIMEOUT) {
            continue;
        }
        if (rv != 0) {
            return fail(c, rv);
        }
        bool canceled = w->canceled;
        if (json(o, w)) {
            seen += (long)w->n_events;
        } else {
            for (size_t i = 0; i < w->n_events; i++, seen++) {
                const Kvdb__Event *e = w->events[i];
                printf("%s\n", e->type == KVDB__EVENT__EVENT_TYPE__PUT ? "PUT" : "DELETE");
                if (e->prev_kv != NULL) {
                    print_kv(e->prev_kv, o);
                }
                print_kv(e->kv, o);
            }
            if (canceled) {
                fprintf(stderr, "watch canceled: %s (compact revision %" PRId64 ")\n",
                        w->cancel_reason, w->compact_revision);
            }
        }
        fflush(stdout);
        kvdb__watch_response__free_unpacked(w, NULL);
        if (canceled) {
            return 1;
        }
    }
    return 0;
}

static int cmd_compact(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc != 1) {
        usage();
        return 2;
    }
    Kvdb__CompactionRequest r;
    kvdb__compaction_request__init(&r);
    r.revision = strtoll(argv[0], NULL, 10);
    Kvdb__CompactionResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_COMPACT, &r.base,
                      &kvdb__compaction_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        printf("compacted revision %" PRId64 "\n", r.revision);
    }
    kvdb__compaction_response__free_unpacked(resp, NULL);
    return 0;
}

static int status_one(const char *ep, const struct opts *o, bool health)
{
    struct kvc_options ko = {.request_timeout_ms = o->timeout_ms != 0 ? o->timeout_ms : 5000};
    struct kvc *c;
    char err[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rv = kvc_open(ep, &ko, &c, err);
    if (rv != 0) {
        fprintf(stderr, "%s is unhealthy: %s: %s\n", ep, kvc_strerror(rv), err);
        return 1;
    }
    if (health) {
        /* etcd's check: a linearizable read needs a leader and a quorum. */
        Kvdb__RangeResponse *r;
        rv = kvc_get(c, "health", 6, false, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (rv == 0) {
            printf("%s is healthy: successfully committed proposal: took = %.3fms\n", ep, ms);
            kvdb__range_response__free_unpacked(r, NULL);
        } else {
            fprintf(stderr, "%s is unhealthy: failed to commit proposal: %s\n", ep,
                    rv == KVC_ESERVER ? kvc_errmsg(c) : kvc_strerror(rv));
        }
        kvc_close(c);
        return rv == 0 ? 0 : 1;
    }
    Kvdb__StatusRequest req;
    kvdb__status_request__init(&req);
    Kvdb__StatusResponse *s;
    rv = kvc_call(c, KVDB__METHOD__METHOD_STATUS, &req.base, &kvdb__status_response__descriptor,
                  (ProtobufCMessage **)&s);
    if (rv != 0) {
        int r = fail(c, rv);
        kvc_close(c);
        return r;
    }
    uint64_t id = s->header != NULL ? s->header->member_id : 0;
    int64_t rev = s->header != NULL ? s->header->revision : 0;
    if (json(o, s)) {
        /* printed */
    } else if (o->out == OUT_TABLE) {
        printf("| %-22s | %16" PRIx64 " | %7s | %9" PRId64 " | %9s | %10" PRIu64 " | %10" PRIu64
               " | %10" PRIu64 " | %9" PRId64 " |\n",
               ep, id, s->version, s->db_size, s->leader == id ? "true" : "false", s->raft_term,
               s->raft_index, s->raft_applied_index, rev);
    } else {
        printf("%s, %" PRIx64 ", %s, %" PRId64 " bytes, leader %" PRIx64
               ", is_leader %s, raft term "
               "%" PRIu64 ", raft index %" PRIu64 ", applied %" PRIu64 ", revision %" PRId64 "\n",
               ep, id, s->version, s->db_size, s->leader, s->leader == id ? "true" : "false",
               s->raft_term, s->raft_index, s->raft_applied_index, rev);
    }
    kvdb__status_response__free_unpacked(s, NULL);
    kvc_close(c);
    return 0;
}

static int hashkv_one(const char *ep, const struct opts *o)
{
    struct kvc_options ko = {.request_timeout_ms = o->timeout_ms != 0 ? o->timeout_ms : 5000};
    struct kvc *c;
    char err[256];
    int rv = kvc_open(ep, &ko, &c, err);
    if (rv != 0) {
        fprintf(stderr, "%s: %s: %s\n", ep, kvc_strerror(rv), err);
        return 1;
    }
    Kvdb__HashKVRequest req;
    kvdb__hash_kvrequest__init(&req);
    req.revision = o->rev;
    Kvdb__HashKVResponse *h;
    rv = kvc_call(c, KVDB__METHOD__METHOD_HASH_KV, &req.base, &kvdb__hash_kvresponse__descriptor,
                  (ProtobufCMessage **)&h);
    if (rv != 0) {
        int r = fail(c, rv);
        kvc_close(c);
        return r;
    }
    if (!json(o, h)) {
        printf("%s, %u, %" PRId64 "\n", ep, h->hash, h->hash_revision);
    }
    kvdb__hash_kvresponse__free_unpacked(h, NULL);
    kvc_close(c);
    return 0;
}

static const char *alarm_name(Kvdb__AlarmType t)
{
    return t == KVDB__ALARM_TYPE__NOSPACE   ? "NOSPACE"
           : t == KVDB__ALARM_TYPE__CORRUPT ? "CORRUPT"
                                            : "NONE";
}

static int alarm_call(struct kvc *c,
                      Kvdb__AlarmRequest__AlarmAction action,
                      uint64_t member,
                      Kvdb__AlarmType type,
                      Kvdb__AlarmResponse **out)
{
    Kvdb__AlarmRequest req;
    kvdb__alarm_request__init(&req);
    req.action = action;
    req.memberid = member;
    req.alarm = type;
    return kvc_call(c, KVDB__METHOD__METHOD_ALARM, &req.base, &kvdb__alarm_response__descriptor,
                    (ProtobufCMessage **)out);
}

/* alarm list: every member's alarms.  alarm disarm: as etcdctl, deactivate each listed alarm
 * (through the log: on every member) and print those deactivated. */
static int cmd_alarm(struct kvc *c, bool disarm, const struct opts *o)
{
    Kvdb__AlarmResponse *a;
    int rv = alarm_call(c, KVDB__ALARM_REQUEST__ALARM_ACTION__GET, 0, KVDB__ALARM_TYPE__NONE, &a);
    if (rv != 0) {
        return fail(c, rv);
    }
    for (size_t i = 0; disarm && i < a->n_alarms; i++) {
        Kvdb__AlarmResponse *d;
        rv = alarm_call(c, KVDB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, a->alarms[i]->memberid,
                        a->alarms[i]->alarm, &d);
        if (rv != 0) {
            kvdb__alarm_response__free_unpacked(a, NULL);
            return fail(c, rv);
        }
        kvdb__alarm_response__free_unpacked(d, NULL);
    }
    if (!json(o, a)) {
        for (size_t i = 0; i < a->n_alarms; i++) {
            printf("memberID:%" PRIu64 " alarm:%s\n", a->alarms[i]->memberid,
                   alarm_name(a->alarms[i]->alarm));
        }
    }
    kvdb__alarm_response__free_unpacked(a, NULL);
    return 0;
}

/* endpoint status|health|hashkv: each endpoint on its own, like etcdctl. */
static int cmd_endpoint(const struct opts *o, bool health, bool hashkv)
{
    char list[1024];
    snprintf(list, sizeof list, "%s", o->endpoints);
    if (!health && !hashkv && o->out == OUT_TABLE) {
        printf("| %-22s | %16s | %7s | %9s | %9s | %10s | %10s | %10s | %9s |\n", "ENDPOINT", "ID",
               "VERSION", "DB SIZE", "IS LEADER", "RAFT TERM", "RAFT INDEX", "APPLIED", "REVISION");
    }
    int bad = 0;
    char *save = NULL;
    for (char *ep = strtok_r(list, ",", &save); ep != NULL; ep = strtok_r(NULL, ",", &save)) {
        bad |= hashkv ? hashkv_one(ep, o) : status_one(ep, o, health);
    }
    return bad;
}

static int cmd_members(struct kvc *c, const struct opts *o)
{
    Kvdb__MemberListRequest r;
    kvdb__member_list_request__init(&r);
    Kvdb__MemberListResponse *m;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_MEMBER_LIST, &r.base,
                      &kvdb__member_list_response__descriptor, (ProtobufCMessage **)&m);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (json(o, m)) {
        kvdb__member_list_response__free_unpacked(m, NULL);
        return 0;
    }
    if (o->out == OUT_TABLE) {
        printf("| %16s | %7s | %8s | %-24s | %-24s | %10s |\n", "ID", "STATUS", "NAME",
               "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER");
    }
    for (size_t i = 0; i < m->n_members; i++) {
        const Kvdb__Member *x = m->members[i];
        printf(o->out == OUT_TABLE ? "| %16" PRIx64 " | started | %8s | %-24s | %-24s | %10s |\n"
                                   : "%" PRIx64 ", started, %s, %s, %s, %s\n",
               x->id, x->name, x->n_peer_urls > 0 ? x->peer_urls[0] : "",
               x->n_client_urls > 0 ? x->client_urls[0] : "", x->is_learner ? "true" : "false");
    }
    kvdb__member_list_response__free_unpacked(m, NULL);
    return 0;
}

int kvctl_txn(struct kvc *c, FILE *in, bool interactive);

static void print_members(Kvdb__Member **ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Kvdb__Member *x = ms[i];
        printf("%" PRIx64 ", started, %s, %s, %s, %s\n", x->id, x->name != NULL ? x->name : "",
               x->n_peer_urls > 0 ? x->peer_urls[0] : "",
               x->n_client_urls > 0 ? x->client_urls[0] : "", x->is_learner ? "true" : "false");
    }
}

/* member add NAME --peer-urls URL [--learner] | remove ID | promote ID | update ID --peer-urls URL,
 * and move-leader ID. */
static int cmd_member(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    const char *sub = argv[0];
    int rv;
    if (strcmp(sub, "add") == 0 && argc == 2 && o->peer_url != NULL) {
        Kvdb__MemberAddRequest r;
        kvdb__member_add_request__init(&r);
        char *urls[1] = {(char *)o->peer_url};
        r.peer_urls = urls;
        r.n_peer_urls = 1;
        r.name = argv[1];
        r.is_learner = o->learner;
        Kvdb__MemberAddResponse *resp;
        rv = kvc_call(c, KVDB__METHOD__METHOD_MEMBER_ADD, &r.base,
                      &kvdb__member_add_response__descriptor, (ProtobufCMessage **)&resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        if (!json(o, resp)) {
            uint64_t id = resp->member != NULL ? resp->member->id : 0;
            printf("Member %" PRIx64 " added to cluster %" PRIx64 "\n", id,
                   resp->header != NULL ? resp->header->cluster_id : 0);
            printf(
                "start it with --name %s --initial-cluster-state existing and an\n"
                "--initial-cluster listing it with the members below:\n",
                argv[1]);
            print_members(resp->members, resp->n_members);
        }
        kvdb__member_add_response__free_unpacked(resp, NULL);
        return 0;
    }
    if ((strcmp(sub, "remove") == 0 || strcmp(sub, "promote") == 0 ||
         (strcmp(sub, "update") == 0 && o->peer_url != NULL)) &&
        argc == 2) {
        uint64_t id = strtoull(argv[1], NULL, 16);
        Kvdb__MemberRemoveRequest rr;
        Kvdb__MemberPromoteRequest pr;
        Kvdb__MemberUpdateRequest ur;
        char *urls[1] = {(char *)o->peer_url};
        ProtobufCMessage *req;
        Kvdb__Method m;
        if (sub[0] == 'r') {
            kvdb__member_remove_request__init(&rr);
            rr.id = id;
            req = &rr.base;
            m = KVDB__METHOD__METHOD_MEMBER_REMOVE;
        } else if (sub[0] == 'p') {
            kvdb__member_promote_request__init(&pr);
            pr.id = id;
            req = &pr.base;
            m = KVDB__METHOD__METHOD_MEMBER_PROMOTE;
        } else {
            kvdb__member_update_request__init(&ur);
            ur.id = id;
            ur.peer_urls = urls;
            ur.n_peer_urls = 1;
            req = &ur.base;
            m = KVDB__METHOD__METHOD_MEMBER_UPDATE;
        }
        Kvdb__MemberListResponse *resp; /* the same wire shape for the three */
        rv = kvc_call(c, m, req, &kvdb__member_list_response__descriptor,
                      (ProtobufCMessage **)&resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        if (!json(o, resp)) {
            printf("Member %" PRIx64 " %s in cluster %" PRIx64 "\n", id,
                   sub[0] == 'r'   ? "removed"
                   : sub[0] == 'p' ? "promoted"
                                   : "updated",
                   resp->header != NULL ? resp->header->cluster_id : 0);
        }
        kvdb__member_list_response__free_unpacked(resp, NULL);
        return 0;
    }
    usage();
    return 2;
}

/* auth enable|disable|status, user ..., role ...: one AuthRequest each. */
static int cmd_auth(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    const char *group = argv[0], *sub = argc > 1 ? argv[1] : "";
    Kvdb__AuthRequest r;
    kvdb__auth_request__init(&r);
    Kvdb__Permission perm;
    uint8_t endbuf[4096];
    Kvdb__Method m = KVDB__METHOD__METHOD_UNKNOWN;
    bool listing = false;
    if (strcmp(group, "auth") == 0 && argc == 2) {
        m = strcmp(sub, "enable") == 0    ? KVDB__METHOD__METHOD_AUTH_ENABLE
            : strcmp(sub, "disable") == 0 ? KVDB__METHOD__METHOD_AUTH_DISABLE
            : strcmp(sub, "status") == 0  ? KVDB__METHOD__METHOD_AUTH_STATUS
                                          : m;
    } else if (strcmp(group, "user") == 0) {
        if (strcmp(sub, "add") == 0 && argc == 3 && o->password != NULL) {
            m = KVDB__METHOD__METHOD_USER_ADD;
        } else if (strcmp(sub, "passwd") == 0 && argc == 3 && o->password != NULL) {
            m = KVDB__METHOD__METHOD_USER_CHANGE_PASSWORD;
        } else if (strcmp(sub, "delete") == 0 && argc == 3) {
            m = KVDB__METHOD__METHOD_USER_DELETE;
        } else if (strcmp(sub, "grant-role") == 0 && argc == 4) {
            m = KVDB__METHOD__METHOD_USER_GRANT_ROLE;
        } else if (strcmp(sub, "revoke-role") == 0 && argc == 4) {
            m = KVDB__METHOD__METHOD_USER_REVOKE_ROLE;
        } else if (strcmp(sub, "list") == 0) {
            m = KVDB__METHOD__METHOD_USER_LIST;
            listing = true;
        }
        r.name = argc > 2 ? argv[2] : "";
        r.role = argc > 3 ? argv[3] : "";
        r.password = (char *)(o->password != NULL ? o->password : "");
    } else if (strcmp(group, "role") == 0) {
        if (strcmp(sub, "add") == 0 && argc == 3) {
            m = KVDB__METHOD__METHOD_ROLE_ADD;
        } else if (strcmp(sub, "delete") == 0 && argc == 3) {
            m = KVDB__METHOD__METHOD_ROLE_DELETE;
        } else if (strcmp(sub, "list") == 0) {
            m = KVDB__METHOD__METHOD_ROLE_LIST;
            listing = true;
        } else if (strcmp(sub, "grant-permission") == 0 && (argc == 5 || argc == 6)) {
            kvdb__permission__init(&perm);
            const char *t = argv[3];
            perm.permtype = strcmp(t, "read") == 0    ? KVDB__PERMISSION__TYPE__READ
                            : strcmp(t, "write") == 0 ? KVDB__PERMISSION__TYPE__WRITE
                                                      : KVDB__PERMISSION__TYPE__READWRITE;
            key_range(argc - 4, argv + 4, o, &perm.key, &perm.range_end, endbuf);
            r.perm = &perm;
            m = KVDB__METHOD__METHOD_ROLE_GRANT_PERMISSION;
        }
        r.name = argc > 2 ? argv[2] : "";
    }
    if (m == KVDB__METHOD__METHOD_UNKNOWN) {
        usage();
        return 2;
    }
    Kvdb__AuthResponse *resp;
    int rv = kvc_call(c, m, &r.base, &kvdb__auth_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        if (m == KVDB__METHOD__METHOD_AUTH_STATUS) {
            printf("Authentication Status: %s\n", resp->enabled ? "true" : "false");
        } else if (listing) {
            for (size_t i = 0; i < resp->n_users; i++) {
                printf("%s\n", resp->users[i]);
            }
            for (size_t i = 0; i < resp->n_roles; i++) {
                printf("%s\n", resp->roles[i]);
            }
        } else {
            printf("%s %s%s%s done\n", group, sub, argc > 2 ? " " : "", argc > 2 ? argv[2] : "");
        }
    }
    kvdb__auth_response__free_unpacked(resp, NULL);
    return 0;
}

/* lease grant TTL | revoke ID | timetolive ID | list | keep-alive ID [--once] (IDs in hex, as
 * etcdctl prints them). */
static int cmd_lease(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    const char *sub = argv[0];
    int64_t id = argc > 1 ? (int64_t)strtoull(argv[1], NULL, 16) : 0;
    int rv;
    if (strcmp(sub, "grant") == 0 && argc == 2) {
        Kvdb__LeaseGrantRequest r;
        kvdb__lease_grant_request__init(&r);
        r.ttl = strtoll(argv[1], NULL, 10);
        Kvdb__LeaseGrantResponse *resp;
        rv = kvc_call(c, KVDB__METHOD__METHOD_LEASE_GRANT, &r.base,
                      &kvdb__lease_grant_response__descriptor, (ProtobufCMessage **)&resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        if (!json(o, resp)) {
            printf("lease %" PRIx64 " granted with TTL(%" PRId64 "s)\n", (uint64_t)resp->id,
                   resp->ttl);
        }
        kvdb__lease_grant_response__free_unpacked(resp, NULL);
        return 0;
    }
    if (strcmp(sub, "revoke") == 0 && argc == 2) {
        Kvdb__LeaseRevokeRequest r;
        kvdb__lease_revoke_request__init(&r);
        r.id = id;
        ProtobufCMessage *resp;
        rv = kvc_call(c, KVDB__METHOD__METHOD_LEASE_REVOKE, &r.base,
                      &kvdb__lease_revoke_response__descriptor, &resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        printf("lease %" PRIx64 " revoked\n", (uint64_t)id);
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
    }
    if (strcmp(sub, "timetolive") == 0 && argc == 2) {
        Kvdb__LeaseTimeToLiveRequest r;
        kvdb__lease_time_to_live_request__init(&r);
        r.id = id;
        r.keys = o->keys;
        Kvdb__LeaseTimeToLiveResponse *resp;
        rv = kvc_call(c, KVDB__METHOD__METHOD_LEASE_TIME_TO_LIVE, &r.base,
                      &kvdb__lease_time_to_live_response__descriptor, (ProtobufCMessage **)&resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        if (json(o, resp)) {
            /* printed */
        } else if (resp->ttl < 0) {
            printf("lease %" PRIx64 " already expired\n", (uint64_t)id);
        } else {
            printf("lease %" PRIx64 " granted with TTL(%" PRId64 "s), remaining(%" PRId64 "s)\n",
                   (uint64_t)id, resp->grantedttl, resp->ttl);
        }
        kvdb__lease_time_to_live_response__free_unpacked(resp, NULL);
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        Kvdb__LeaseLeasesRequest r;
        kvdb__lease_leases_request__init(&r);
        Kvdb__LeaseLeasesResponse *resp;
        rv = kvc_call(c, KVDB__METHOD__METHOD_LEASE_LEASES, &r.base,
                      &kvdb__lease_leases_response__descriptor, (ProtobufCMessage **)&resp);
        if (rv != 0) {
            return fail(c, rv);
        }
        if (!json(o, resp)) {
            printf("found %zu leases\n", resp->n_leases);
            for (size_t i = 0; i < resp->n_leases; i++) {
                printf("%" PRIx64 "\n", (uint64_t)resp->leases[i]->id);
            }
        }
        kvdb__lease_leases_response__free_unpacked(resp, NULL);
        return 0;
    }
    if (strcmp(sub, "keep-alive") == 0 && argc == 2) {
        for (;;) {
            Kvdb__LeaseKeepAliveRequest r;
            kvdb__lease_keep_alive_request__init(&r);
            r.id = id;
            Kvdb__LeaseKeepAliveResponse *resp;
            rv = kvc_call(c, KVDB__METHOD__METHOD_LEASE_KEEP_ALIVE, &r.base,
                          &kvdb__lease_keep_alive_response__descriptor, (ProtobufCMessage **)&resp);
            if (rv != 0) {
                return fail(c, rv);
            }
            int64_t ttl = resp->ttl;
            printf("lease %" PRIx64 " keepalived with TTL(%" PRId64 ")\n", (uint64_t)id, ttl);
            fflush(stdout);
            kvdb__lease_keep_alive_response__free_unpacked(resp, NULL);
            if (o->once) {
                return 0;
            }
            struct timespec ts = {(time_t)(ttl > 3 ? ttl / 3 : 1), 0};
            nanosleep(&ts, NULL);
        }
    }
    usage();
    return 2;
}

/* snapshot save FILE: a fresh snapshot streamed from the member into FILE (written to FILE.part
 * and renamed when complete). */
static int cmd_snapshot(struct kvc *c, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[0], "save") != 0) {
        usage();
        return 2;
    }
    char part[4096];
    snprintf(part, sizeof part, "%s.part", argv[1]);
    FILE *f = fopen(part, "wb");
    if (f == NULL) {
        fprintf(stderr, "Error: cannot create %s\n", part);
        return 1;
    }
    uint64_t bytes = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rv = kvc_snapshot(c, f, &bytes);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (rv != 0 || !ok || rename(part, argv[1]) != 0) {
        remove(part);
        return rv != 0 ? fail(c, rv) : 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("Snapshot saved at %s: %" PRIu64 " bytes in %.3f s\n", argv[1], bytes,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

static int cmd_move_leader(struct kvc *c, int argc, char **argv, const struct opts *o)
{
    if (argc != 1) {
        usage();
        return 2;
    }
    Kvdb__MoveLeaderRequest r;
    kvdb__move_leader_request__init(&r);
    r.targetid = strtoull(argv[0], NULL, 16);
    Kvdb__MoveLeaderResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_MOVE_LEADER, &r.base,
                      &kvdb__move_leader_response__descriptor, (ProtobufCMessage **)&resp);
    if (rv != 0) {
        return fail(c, rv);
    }
    if (!json(o, resp)) {
        printf("Leadership transferred to %" PRIx64 "\n", r.targetid);
    }
    kvdb__move_leader_response__free_unpacked(resp, NULL);
    return 0;
}

static int parse_sort(const char *v, bool order)
{
    const char *targets[] = {"KEY", "VERSION", "CREATE", "MODIFY", "VALUE"};
    const char *orders[] = {"NONE", "ASCEND", "DESCEND"};
    const char **names = order ? orders : targets;
    int n = order ? 3 : 5;
    for (int i = 0; i < n; i++) {
        if (strcasecmp(v, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof o);
    o.endpoints = "127.0.0.1:2379";
    char *args[64];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--endpoints") == 0 && v != NULL) {
            o.endpoints = v;
            i++;
        } else if (strncmp(a, "--endpoints=", 12) == 0) {
            o.endpoints = a + 12;
        } else if (strcmp(a, "--command-timeout") == 0 && v != NULL) {
            o.timeout_ms = (unsigned)atoi(v);
            i++;
        } else if ((strcmp(a, "-w") == 0 || strcmp(a, "--write-out") == 0) && v != NULL) {
            o.out = strcmp(v, "json") == 0    ? OUT_JSON
                    : strcmp(v, "table") == 0 ? OUT_TABLE
                                              : OUT_SIMPLE;
            i++;
        } else if (strncmp(a, "--write-out=", 12) == 0) {
            o.out = strcmp(a + 12, "json") == 0    ? OUT_JSON
                    : strcmp(a + 12, "table") == 0 ? OUT_TABLE
                                                   : OUT_SIMPLE;
        } else if (strcmp(a, "--peer-urls") == 0 && v != NULL) {
            o.peer_url = v;
            i++;
        } else if (strncmp(a, "--peer-urls=", 12) == 0) {
            o.peer_url = a + 12;
        } else if (strcmp(a, "--user") == 0 && v != NULL) {
            o.user = v;
            i++;
        } else if (strcmp(a, "--password") == 0 && v != NULL) {
            o.password = v;
            i++;
        } else if (strcmp(a, "--lease") == 0 && v != NULL) {
            o.lease = (int64_t)strtoull(v, NULL, 16);
            i++;
        } else if (strcmp(a, "--keys") == 0) {
            o.keys = true;
        } else if (strcmp(a, "--once") == 0) {
            o.once = true;
        } else if (strcmp(a, "--learner") == 0) {
            o.learner = true;
        } else if (strcmp(a, "--progress-notify") == 0) {
            o.progress_notify = true;
        } else if (strcmp(a, "--max-events") == 0 && v != NULL) {
            o.max_events = atol(v);
            i++;
        } else if (strcmp(a, "--prefix") == 0) {
            o.prefix = true;
        } else if (strcmp(a, "--from-key") == 0) {
            o.from_key = true;
        } else if (strcmp(a, "--prev-kv") == 0) {
            o.prev_kv = true;
        } else if (strcmp(a, "--keys-only") == 0) {
            o.keys_only = true;
        } else if (strcmp(a, "--count-only") == 0) {
            o.count_only = true;
        } else if (strcmp(a, "--print-value-only") == 0) {
            o.value_only = true;
        } else if (strcmp(a, "--limit") == 0 && v != NULL) {
            o.limit = strtoll(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--rev") == 0 && v != NULL) {
            o.rev = strtoll(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--consistency") == 0 && v != NULL) {
            o.serializable = strcmp(v, "s") == 0;
            i++;
        } else if (strcmp(a, "--sort-by") == 0 && v != NULL && parse_sort(v, false) >= 0) {
            o.sort_target = parse_sort(v, false);
            i++;
        } else if (strcmp(a, "--order") == 0 && v != NULL && parse_sort(v, true) >= 0) {
            o.sort_order = parse_sort(v, true);
            i++;
        } else if (strncmp(a, "--", 2) == 0 || n == 64) {
            fprintf(stderr, "kvctl: unknown or incomplete flag %s\n", a);
            usage();
            return 2;
        } else {
            args[n++] = argv[i];
        }
    }
    if (n == 0) {
        usage();
        return 2;
    }
    if (strcmp(args[0], "endpoint") == 0 && n == 2 &&
        (strcmp(args[1], "status") == 0 || strcmp(args[1], "health") == 0 ||
         strcmp(args[1], "hashkv") == 0)) {
        return cmd_endpoint(&o, strcmp(args[1], "health") == 0, strcmp(args[1], "hashkv") == 0);
    }
    struct kvc_options ko = {.request_timeout_ms = o.timeout_ms};
    struct kvc *c;
    char err[256];
    int rv = kvc_open(o.endpoints, &ko, &c, err);
    if (rv != 0) {
        fprintf(stderr, "Error: %s: %s\n", kvc_strerror(rv), err);
        return 1;
    }
    if (o.user != NULL) {
        char user[256];
        snprintf(user, sizeof user, "%s", o.user);
        char *colon = strchr(user, ':');
        if (colon == NULL) {
            fprintf(stderr, "kvctl: --user takes NAME:PASSWORD\n");
            kvc_close(c);
            return 2;
        }
        *colon = '\0';
        rv = kvc_authenticate(c, user, colon + 1);
        if (rv != 0) {
            int r = fail(c, rv);
            kvc_close(c);
            return r;
        }
    }
    const char *cmd = args[0];
    if (strcmp(cmd, "put") == 0) {
        rv = cmd_put(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "get") == 0) {
        rv = cmd_get(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "del") == 0) {
        rv = cmd_del(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "watch") == 0) {
        rv = cmd_watch(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "txn") == 0) {
        rv = kvctl_txn(c, stdin, false);
    } else if (strcmp(cmd, "compact") == 0) {
        rv = cmd_compact(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "alarm") == 0 && n == 2 &&
               (strcmp(args[1], "list") == 0 || strcmp(args[1], "disarm") == 0)) {
        rv = cmd_alarm(c, strcmp(args[1], "disarm") == 0, &o);
    } else if (strcmp(cmd, "member") == 0 && n == 2 && strcmp(args[1], "list") == 0) {
        rv = cmd_members(c, &o);
    } else if (strcmp(cmd, "member") == 0 && n >= 2) {
        rv = cmd_member(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "auth") == 0 || strcmp(cmd, "user") == 0 || strcmp(cmd, "role") == 0) {
        rv = n >= 2 ? cmd_auth(c, n, args, &o) : (usage(), 2);
    } else if (strcmp(cmd, "snapshot") == 0) {
        rv = cmd_snapshot(c, n - 1, args + 1);
    } else if (strcmp(cmd, "lease") == 0 && n >= 2) {
        rv = cmd_lease(c, n - 1, args + 1, &o);
    } else if (strcmp(cmd, "move-leader") == 0) {
        rv = cmd_move_leader(c, n - 1, args + 1, &o);
    } else {
        usage();
        rv = 2;
    }
    kvc_close(c);
    return rv;
}
