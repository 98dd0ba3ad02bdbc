/* Conversions between the client protocol (protobuf-c) and the LSM store's C structs, run on
 * the apply and read threads. */
#include "server/kvconv.h"

#include <stdlib.h>
#include <string.h>

/* ---- a bump arena for the converted request (freed in one go) ---- */

struct srv_arena_blk
{
    struct srv_arena_blk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

void *srv_arena_alloc(struct srv_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct srv_arena_blk *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        b = malloc(sizeof *b + cap);
        if (b == NULL) {
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void srv_arena_free(struct srv_arena *a)
{
    while (a->head != NULL) {
        struct srv_arena_blk *b = a->head;
        a->head = b->next;
        free(b);
    }
}

/* ---- requests ---- */

static struct lsm_bytes bytes(ProtobufCBinaryData d)
{
    struct lsm_bytes b = {d.data, d.len};
    return b;
}

void srv_conv_range(const Kvdb__RangeRequest *r, struct lsm_range_req *out)
{
    memset(out, 0, sizeof *out);
    out->key = bytes(r->key);
    out->range_end = bytes(r->range_end);
    out->limit = r->limit;
    out->revision = r->revision;
    out->sort_order = (enum lsm_sort_order)(r->sort_order + LSM_SORT_NONE);
    out->sort_target = (enum lsm_sort_target)(r->sort_target + LSM_SORT_KEY);
    out->keys_only = r->keys_only;
    out->count_only = r->count_only;
}

static void conv_put(const Kvdb__PutRequest *r, struct lsm_put_req *out)
{
    out->key = bytes(r->key);
    out->value = bytes(r->value);
    out->lease = r->lease;
    out->prev_kv = r->prev_kv;
    out->ignore_value = r->ignore_value;
    out->ignore_lease = r->ignore_lease;
}

static void conv_delete(const Kvdb__DeleteRangeRequest *r, struct lsm_delete_req *out)
{
    out->key = bytes(r->key);
    out->range_end = bytes(r->range_end);
    out->prev_kv = r->prev_kv;
}

static int conv_txn(const Kvdb__TxnRequest *t,
                    struct srv_arena *a,
                    struct lsm_txn_req *out,
                    int depth);

static int conv_ops(Kvdb__RequestOp *const *ops,
                    size_t n,
                    struct srv_arena *a,
                    const struct lsm_op **out,
                    int depth)
{
    struct lsm_op *o = srv_arena_alloc(a, (n > 0 ? n : 1) * sizeof *o);
    if (o == NULL) {
        return LSM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const Kvdb__RequestOp *r = ops[i];
        switch (r->request_case) {
        case KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            o[i].type = LSM_OP_RANGE;
            srv_conv_range(r->request_range, &o[i].u.range);
            break;
        case KVDB__REQUEST_OP__REQUEST_REQUEST_PUT:
            o[i].type = LSM_OP_PUT;
            conv_put(r->request_put, &o[i].u.put);
            break;
        case KVDB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            o[i].type = LSM_OP_DELETE_RANGE;
            conv_delete(r->request_delete_range, &o[i].u.del);
            break;
        case KVDB__REQUEST_OP__REQUEST_REQUEST_TXN: {
            o[i].type = LSM_OP_TXN;
            int rv = conv_txn(r->request_txn, a, &o[i].u.txn, depth + 1);
            if (rv != 0) {
                return rv;
            }
            break;
        }
        default:
            return LSM_EINVAL;
        }
    }
    *out = o;
    return 0;
}

static int conv_txn(const Kvdb__TxnRequest *t,
                    struct srv_arena *a,
                    struct lsm_txn_req *out,
                    int depth)
{
    if (depth > 16) {      /* SRV_MAX_TXN_DEPTH, checked on the wire by the front door */
        return LSM_EINVAL; /* bounded recursion on untrusted input */
    }
    struct lsm_compare *c = srv_arena_alloc(a, (t->n_compare > 0 ? t->n_compare : 1) * sizeof *c);
    if (c == NULL) {
        return LSM_ENOMEM;
    }
    for (size_t i = 0; i < t->n_compare; i++) {
        const Kvdb__Compare *p = t->compare[i];
        c[i].result = (enum lsm_cmp_result)(p->result + LSM_CMP_EQUAL);
        c[i].target = (enum lsm_cmp_target)(p->target + LSM_CMP_VERSION);
        c[i].key = bytes(p->key);
        c[i].range_end = bytes(p->range_end);
        switch (p->target_union_case) {
        case KVDB__COMPARE__TARGET_UNION_VERSION:
            c[i].number = p->version;
            break;
        case KVDB__COMPARE__TARGET_UNION_CREATE_REVISION:
            c[i].number = p->create_revision;
            break;
        case KVDB__COMPARE__TARGET_UNION_MOD_REVISION:
            c[i].number = p->mod_revision;
            break;
        case KVDB__COMPARE__TARGET_UNION_LEASE:
            c[i].number = p->lease;
            break;
        case KVDB__COMPARE__TARGET_UNION_VALUE:
            c[i].value = bytes(p->value);
            break;
        default:
            break;
        }
    }
    out->compares = c;
    out->n_compares = t->n_compare;
    out->n_success = t->n_success;
    out->n_failure = t->n_failure;
    int rv = conv_ops(t->success, t->n_success, a, &out->success, depth);
    if (rv == 0) {
        rv = conv_ops(t->failure, t->n_failure, a, &out->failure, depth);
    }
    return rv;
}

int srv_conv_internal(const Kvdb__InternalRequest *ir, struct srv_arena *a, struct lsm_op *op)
{
    memset(op, 0, sizeof *op);
    switch (ir->request_case) {
    case KVDB__INTERNAL_REQUEST__REQUEST_PUT:
        op->type = LSM_OP_PUT;
        conv_put(ir->put, &op->u.put);
        return 0;
    case KVDB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE:
        op->type = LSM_OP_DELETE_RANGE;
        conv_delete(ir->delete_range, &op->u.del);
        return 0;
    case KVDB__INTERNAL_REQUEST__REQUEST_TXN:
        op->type = LSM_OP_TXN;
        return conv_txn(ir->txn, a, &op->u.txn, 0);
    case KVDB__INTERNAL_REQUEST__REQUEST_COMPACTION:
        op->type = LSM_OP_COMPACT;
        op->u.compact.revision = ir->compaction->revision;
        return 0;
    default:
        return LSM_EINVAL;
    }
}

/* ---- results ---- */

Kvdb__ErrorCode srv_conv_error(int lsm_err, const char **msg)
{
    *msg = lsm_strerror(lsm_err);
    switch (lsm_err) {
    case 0:
        return KVDB__ERROR_CODE__OK;
    case LSM_ECOMPACTED:
    case LSM_EFUTUREREV:
        return KVDB__ERROR_CODE__OUT_OF_RANGE;
    case LSM_EEMPTYKEY:
    case LSM_EDUPKEY:
    case LSM_ETOOMANYOPS:
    case LSM_EVALUEPROVIDED:
    case LSM_ELEASEPROVIDED:
    case LSM_EINVAL:
    case LSM_EKEYNOTFOUND:
        return KVDB__ERROR_CODE__INVALID_ARGUMENT;
    case LSM_ENOMEM:
        return KVDB__ERROR_CODE__RESOURCE_EXHAUSTED;
    case LSM_ECLOSED:
        return KVDB__ERROR_CODE__UNAVAILABLE;
    default:
        return KVDB__ERROR_CODE__INTERNAL;
    }
}

static Kvdb__KeyValue *conv_kv(const struct lsm_kv *kv, struct srv_arena *a)
{
    Kvdb__KeyValue *p = srv_arena_alloc(a, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    kvdb__key_value__init(p);
    p->key.data = kv->key;
    p->key.len = kv->key_len;
    p->value.data = kv->value;
    p->value.len = kv->value_len;
    p->create_revision = kv->create_revision;
    p->mod_revision = kv->mod_revision;
    p->version = kv->version;
    p->lease = kv->lease;
    return p;
}

static Kvdb__KeyValue **conv_kvs(const struct lsm_kv *kvs, size_t n, struct srv_arena *a)
{
    Kvdb__KeyValue **p = srv_arena_alloc(a, (n > 0 ? n : 1) * sizeof *p);
    for (size_t i = 0; p != NULL && i < n; i++) {
        if ((p[i] = conv_kv(&kvs[i], a)) == NULL) {
            return NULL;
        }
    }
    return p;
}

static ProtobufCMessage *conv_result(const struct lsm_result *r,
                                     const Kvdb__ResponseHeader *h,
                                     struct srv_arena *a);

static Kvdb__ResponseOp **conv_responses(const struct lsm_txn_result *t,
                                         const Kvdb__ResponseHeader *h,
                                         struct srv_arena *a)
{
    Kvdb__ResponseOp **ops = srv_arena_alloc(a, (t->n_responses + 1) * sizeof *ops);
    for (size_t i = 0; ops != NULL && i < t->n_responses; i++) {
        const struct lsm_result *r = &t->responses[i];
        Kvdb__ResponseOp *o = srv_arena_alloc(a, sizeof *o);
        ProtobufCMessage *m = conv_result(r, h, a);
        if (o == NULL || m == NULL) {
            return NULL;
        }
        kvdb__response_op__init(o);
        switch (r->type) {
        case LSM_OP_RANGE:
            o->response_case = KVDB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            o->response_range = (Kvdb__RangeResponse *)m;
            break;
        case LSM_OP_PUT:
            o->response_case = KVDB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            o->response_put = (Kvdb__PutResponse *)m;
            break;
        case LSM_OP_DELETE_RANGE:
            o->response_case = KVDB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            o->response_delete_range = (Kvdb__DeleteRangeResponse *)m;
            break;
        default:
            o->response_case = KVDB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            o->response_txn = (Kvdb__TxnResponse *)m;
            break;
        }
        ops[i] = o;
    }
    return ops;
}

static ProtobufCMessage *conv_result(const struct lsm_result *r,
                                     const Kvdb__ResponseHeader *h,
                                     struct srv_arena *a)
{
    Kvdb__ResponseHeader *hh = srv_arena_alloc(a, sizeof *hh);
    if (hh == NULL) {
        return NULL;
    }
    *hh = *h;
    hh->revision = r->revision;
    switch (r->type) {
    case LSM_OP_RANGE: {
        Kvdb__RangeResponse *p = srv_arena_alloc(a, sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        kvdb__range_response__init(p);
        p->header = hh;
        p->kvs = conv_kvs(r->u.range.kvs, r->u.range.n_kvs, a);
        p->n_kvs = r->u.range.n_kvs;
        p->more = r->u.range.more;
        p->count = r->u.range.count;
        return p->kvs != NULL ? &p->base : NULL;
    }
    case LSM_OP_PUT: {
        Kvdb__PutResponse *p = srv_arena_alloc(a, sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        kvdb__put_response__init(p);
        p->header = hh;
        if (r->u.put.has_prev && (p->prev_kv = conv_kv(&r->u.put.prev_kv, a)) == NULL) {
            return NULL;
        }
        return &p->base;
    }
    case LSM_OP_DELETE_RANGE: {
        Kvdb__DeleteRangeResponse *p = srv_arena_alloc(a, sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        kvdb__delete_range_response__init(p);
        p->header = hh;
        p->deleted = r->u.del.deleted;
        p->prev_kvs = conv_kvs(r->u.del.prev_kvs, r->u.del.n_prev_kvs, a);
        p->n_prev_kvs = r->u.del.n_prev_kvs;
        return p->prev_kvs != NULL ? &p->base : NULL;
    }
    case LSM_OP_TXN: {
        Kvdb__TxnResponse *p = srv_arena_alloc(a, sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        kvdb__txn_response__init(p);
        p->header = hh;
        p->succeeded = r->u.txn.succeeded;
        p->responses = conv_responses(&r->u.txn, h, a);
        p->n_responses = r->u.txn.n_responses;
        return p->responses != NULL ? &p->base : NULL;
    }
    default: {
        Kvdb__CompactionResponse *p = srv_arena_alloc(a, sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        kvdb__compaction_response__init(p);
        p->header = hh;
        return &p->base;
    }
    }
}

int srv_conv_pack(const struct lsm_result *r,
                  const Kvdb__ResponseHeader *h,
                  uint8_t **out,
                  size_t *len)
{
    struct srv_arena a = {0};
    ProtobufCMessage *m = conv_result(r, h, &a);
    if (m == NULL) {
        srv_arena_free(&a);
        return LSM_ENOMEM;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        srv_arena_free(&a);
        return LSM_ENOMEM;
    }
    protobuf_c_message_pack(m, buf);
    srv_arena_free(&a);
    *out = buf;
    *len = n;
    return 0;
}
