/* kvdb-compactor: the Kubernetes apiserver's compaction pattern against kvdb, as an example of
 * the client API.  Every interval, each running copy races a compare-and-swap on a shared key:
 *
 *     Txn(If Version("compact_rev_key") == t
 *         Then Put("compact_rev_key", <current revision>)
 *         Else Get("compact_rev_key"))
 *
 * where t is the version it saw last time.  The one whose Put wins compacts at the revision
 * the key held before (the previous interval's), so however many copies run, exactly one
 * compaction happens per interval.
 *
 *     kvdb-compactor [--endpoints LIST] [--interval-ms N] [--rounds N]
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/kvc.h"
#include "tools/compactor.h"

#define KEY "compact_rev_key"

/* One round.  *@version is the version of KEY seen last (0: none yet), updated.  Returns 1 when
 * this caller won and compacted, 0 when another one did, -1 on an error. */
int compactor_round(struct kvc *c, int64_t *version, int64_t *compacted)
{
    /* The current revision, from any read's header. */
    Kvdb__RangeResponse *cur;
    if (kvc_get(c, KEY, strlen(KEY), false, &cur) != 0) {
        return -1;
    }
    int64_t rev = cur->header != NULL ? cur->header->revision : 0;
    kvdb__range_response__free_unpacked(cur, NULL);

    char revbuf[32];
    snprintf(revbuf, sizeof revbuf, "%" PRId64, rev);
    Kvdb__Compare cmp;
    kvdb__compare__init(&cmp);
    cmp.key.data = (uint8_t *)KEY;
    cmp.key.len = strlen(KEY);
    cmp.result = KVDB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = KVDB__COMPARE__COMPARE_TARGET__VERSION;
    cmp.target_union_case = KVDB__COMPARE__TARGET_UNION_VERSION;
    cmp.version = *version;
    Kvdb__PutRequest put;
    kvdb__put_request__init(&put);
    put.key = cmp.key;
    put.value.data = (uint8_t *)revbuf;
    put.value.len = strlen(revbuf);
    put.prev_kv = true;
    Kvdb__RangeRequest get;
    kvdb__range_request__init(&get);
    get.key = cmp.key;
    Kvdb__RequestOp then_op, else_op;
    kvdb__request_op__init(&then_op);
    then_op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
    then_op.request_put = &put;
    kvdb__request_op__init(&else_op);
    else_op.request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    else_op.request_range = &get;
    Kvdb__Compare *cmps[1] = {&cmp};
    Kvdb__RequestOp *thens[1] = {&then_op}, *elses[1] = {&else_op};
    Kvdb__TxnRequest t;
    kvdb__txn_request__init(&t);
    t.compare = cmps;
    t.n_compare = 1;
    t.success = thens;
    t.n_success = 1;
    t.failure = elses;
    t.n_failure = 1;
    Kvdb__TxnResponse *resp;
    if (kvc_call(c, KVDB__METHOD__METHOD_TXN, &t.base, &kvdb__txn_response__descriptor,
                 (ProtobufCMessage **)&resp) != 0) {
        return -1;
    }
    int won = 0;
    int64_t target = 0;
    if (resp->succeeded) {
        *version += 1;
        const Kvdb__PutResponse *pr =
            resp->n_responses == 1 ? resp->responses[0]->response_put : NULL;
        if (pr != NULL && pr->prev_kv != NULL && pr->prev_kv->value.len < 32) {
            char prev[32]; /* protobuf bytes are not NUL-terminated */
            memcpy(prev, pr->prev_kv->value.data, pr->prev_kv->value.len);
            prev[pr->prev_kv->value.len] = '\0';
            target = strtoll(prev, NULL, 10);
        }
        won = 1;
    } else {
        const Kvdb__RangeResponse *rr =
            resp->n_responses == 1 ? resp->responses[0]->response_range : NULL;
        if (rr != NULL && rr->n_kvs == 1) {
            *version = rr->kvs[0]->version; /* catch up for the next round */
        }
    }
    kvdb__txn_response__free_unpacked(resp, NULL);
    if (won && target > 0) {
        Kvdb__CompactionRequest cr;
        kvdb__compaction_request__init(&cr);
        cr.revision = target;
        ProtobufCMessage *cresp;
        if (kvc_call(c, KVDB__METHOD__METHOD_COMPACT, &cr.base,
                     &kvdb__compaction_response__descriptor, &cresp) == 0) {
            protobuf_c_message_free_unpacked(cresp, NULL);
            *compacted = target;
        } else if (kvc_server_code(c) != KVDB__ERROR_CODE__OUT_OF_RANGE) {
            return -1; /* already compacted further is fine; anything else is not */
        }
    }
    return won;
}

#ifndef KV_COMPACTOR_NO_MAIN
int main(int argc, char **argv)
{
    const char *eps = "127.0.0.1:2379";
    long interval = 5000, rounds = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--endpoints") == 0) {
            eps = argv[i + 1];
        } else if (strcmp(argv[i], "--interval-ms") == 0) {
            interval = atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--rounds") == 0) {
            rounds = atol(argv[i + 1]);
        }
    }
    struct kvc *c;
    char err[256];
    if (kvc_open(eps, NULL, &c, err) != 0) {
        fprintf(stderr, "kvdb-compactor: %s\n", err);
        return 1;
    }
    int64_t version = 0, compacted = 0;
    for (long r = 0; rounds == 0 || r < rounds; r++) {
        int won = compactor_round(c, &version, &compacted);
        if (won == 1) {
            printf("round %ld: compacted at revision %" PRId64 "\n", r, compacted);
        } else if (won < 0) {
            fprintf(stderr, "round %ld: %s\n", r, kvc_errmsg(c));
        }
        fflush(stdout);
        struct timespec ts = {(time_t)(interval / 1000), (long)(interval % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    kvc_close(c);
    return 0;
}
#endif
