/* kvctl txn: etcdctl's text form, read from a stream:
 *   compares, one per line:   value("k") = "v" | version("k") > "1" | create(...) | mod(...)
 *   a blank line, then success ops:  put k v | get k [end] | del k [end]
 *   a blank line, then failure ops (same forms), up to a blank line or end of input. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/kvc.h"

#define MAX_OPS 128
#define MAX_TOK 8

/* Split @line into tokens: words, "quoted strings" (with \" and \\), and the punctuation of a
 * compare.  Returns the count, or -1 on an unterminated quote. */
static int tokenize(char *line, char **tok, int max)
{
    int n = 0;
    char *p = line;
    while (*p != '\0' && n < max) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '(' || *p == ')') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        if (*p == '"') {
            char *out = ++p;
            tok[n++] = out;
            while (*p != '"') {
                if (*p == '\0') {
                    return -1;
                }
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
                *out++ = *p++;
            }
            p++;
            *out = '\0';
            continue;
        }
        tok[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '(' && *p != ')') {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
    }
    return n;
}

static char *dup_bytes(const char *s)
{
    return strdup(s);
}

static int parse_compare(char *line, Kvdb__Compare *c)
{
    char *t[MAX_TOK];
    if (tokenize(line, t, MAX_TOK) != 4) {
        return -1;
    }
    kvdb__compare__init(c);
    const char *targets[] = {"version", "create", "mod", "value", "lease"};
    int target = -1;
    for (int i = 0; i < 5; i++) {
        if (strcmp(t[0], targets[i]) == 0) {
            target = i;
        }
    }
    const char *ops[] = {"=", ">", "<", "!="};
    int op = -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(t[2], ops[i]) == 0) {
            op = i;
        }
    }
    if (target < 0 || op < 0) {
        return -1;
    }
    c->target = (Kvdb__Compare__CompareTarget)target;
    c->result = (Kvdb__Compare__CompareResult)op;
    c->key.data = (uint8_t *)dup_bytes(t[1]);
    c->key.len = strlen(t[1]);
    int64_t num = strtoll(t[3], NULL, 10);
    switch (target) {
    case 0:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_VERSION;
        c->version = num;
        break;
    case 1:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = num;
        break;
    case 2:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = num;
        break;
    case 3:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_VALUE;
        c->value.data = (uint8_t *)dup_bytes(t[3]);
        c->value.len = strlen(t[3]);
        break;
    default:
        c->target_union_case = KVDB__COMPARE__TARGET_UNION_LEASE;
        c->lease = num;
        break;
    }
    return 0;
}

static int parse_op(char *line, Kvdb__RequestOp *op)
{
    char *t[MAX_TOK];
    int n = tokenize(line, t, MAX_TOK);
    kvdb__request_op__init(op);
    if (n == 3 && strcmp(t[0], "put") == 0) {
        Kvdb__PutRequest *r = calloc(1, sizeof *r);
        kvdb__put_request__init(r);
        r->key.data = (uint8_t *)dup_bytes(t[1]);
        r->key.len = strlen(t[1]);
        r->value.data = (uint8_t *)dup_bytes(t[2]);
        r->value.len = strlen(t[2]);
        op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op->request_put = r;
        return 0;
    }
    if ((n == 2 || n == 3) && (strcmp(t[0], "get") == 0 || strcmp(t[0], "del") == 0)) {
        ProtobufCBinaryData key = {strlen(t[1]), (uint8_t *)dup_bytes(t[1])};
        ProtobufCBinaryData end = {0, NULL};
        if (n == 3) {
            end.len = strlen(t[2]);
            end.data = (uint8_t *)dup_bytes(t[2]);
        }
        if (t[0][0] == 'g') {
            Kvdb__RangeRequest *r = calloc(1, sizeof *r);
            kvdb__range_request__init(r);
            r->key = key;
            r->range_end = end;
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE;
            op->request_range = r;
        } else {
            Kvdb__DeleteRangeRequest *r = calloc(1, sizeof *r);
            kvdb__delete_range_request__init(r);
            r->key = key;
            r->range_end = end;
            op->request_case = KVDB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            op->request_delete_range = r;
        }
        return 0;
    }
    return -1;
}

static void print_response(const Kvdb__ResponseOp *r)
{
    switch (r->response_case) {
    case KVDB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        printf("OK\n");
        break;
    case KVDB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
        for (size_t i = 0; i < r->response_range->n_kvs; i++) {
            const Kvdb__KeyValue *kv = r->response_range->kvs[i];
            printf("%.*s\n%.*s\n", (int)kv->key.len, kv->key.data, (int)kv->value.len,
                   kv->value.data);
        }
        break;
    case KVDB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
        printf("%" PRId64 "\n", r->response_delete_range->deleted);
        break;
    default:
        break;
    }
}

/* Free what parse_compare/parse_op allocated. */
static void free_parsed(Kvdb__Compare *cmps,
                        size_t n_cmp,
                        Kvdb__RequestOp (*ops)[MAX_OPS],
                        const size_t *n_op)
{
    for (size_t i = 0; i < n_cmp; i++) {
        free(cmps[i].key.data);
        if (cmps[i].target_union_case == KVDB__COMPARE__TARGET_UNION_VALUE) {
            free(cmps[i].value.data);
        }
    }
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < n_op[k]; i++) {
            Kvdb__RequestOp *o = &ops[k][i];
            if (o->request_case == KVDB__REQUEST_OP__REQUEST_REQUEST_PUT) {
                free(o->request_put->key.data);
                free(o->request_put->value.data);
                free(o->request_put);
            } else if (o->request_case == KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE) {
                free(o->request_range->key.data);
                free(o->request_range->range_end.data);
                free(o->request_range);
            } else if (o->request_case == KVDB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE) {
                free(o->request_delete_range->key.data);
                free(o->request_delete_range->range_end.data);
                free(o->request_delete_range);
            }
        }
    }
}

int kvctl_txn(struct kvc *c, FILE *in, bool interactive);

int kvctl_txn(struct kvc *c, FILE *in, bool interactive)
{
    static Kvdb__Compare cmps[MAX_OPS];
    static Kvdb__RequestOp ops[2][MAX_OPS];
    Kvdb__Compare *cp[MAX_OPS];
    Kvdb__RequestOp *op[2][MAX_OPS];
    size_t n_cmp = 0, n_op[2] = {0, 0};
    int section = 0; /* 0 compares, 1 success, 2 failure */
    char line[4096];
    const char *prompts[] = {"compares:\n", "\nsuccess requests (get, put, del):\n",
                             "\nfailure requests (get, put, del):\n"};
    if (interactive) {
        fputs(prompts[0], stdout);
    }
    while (section < 3 && fgets(line, sizeof line, in) != NULL) {
        if (line[0] == '\n' || line[0] == '\0') {
            section++;
            if (interactive && section < 3) {
                fputs(prompts[section], stdout);
            }
            continue;
        }
        int bad;
        if (section == 0) {
            bad = n_cmp == MAX_OPS || parse_compare(line, &cmps[n_cmp]) != 0;
            if (!bad) {
                cp[n_cmp] = &cmps[n_cmp];
                n_cmp++;
            }
        } else {
            size_t k = (size_t)section - 1;
            bad = n_op[k] == MAX_OPS || parse_op(line, &ops[k][n_op[k]]) != 0;
            if (!bad) {
                op[k][n_op[k]] = &ops[k][n_op[k]];
                n_op[k]++;
            }
        }
        if (bad) {
            fprintf(stderr, "Error: cannot parse txn line: %s", line);
            free_parsed(cmps, n_cmp, ops, n_op);
            return 2;
        }
    }
    Kvdb__TxnRequest r;
    kvdb__txn_request__init(&r);
    r.compare = cp;
    r.n_compare = n_cmp;
    r.success = op[0];
    r.n_success = n_op[0];
    r.failure = op[1];
    r.n_failure = n_op[1];
    Kvdb__TxnResponse *resp;
    int rv = kvc_call(c, KVDB__METHOD__METHOD_TXN, &r.base, &kvdb__txn_response__descriptor,
                      (ProtobufCMessage **)&resp);
    if (rv != 0) {
        fprintf(stderr, "Error: %s\n", rv == KVC_ESERVER ? kvc_errmsg(c) : kvc_strerror(rv));
        free_parsed(cmps, n_cmp, ops, n_op);
        return 1;
    }
    printf("%s\n\n", resp->succeeded ? "SUCCESS" : "FAILURE");
    for (size_t i = 0; i < resp->n_responses; i++) {
        print_response(resp->responses[i]);
    }
    kvdb__txn_response__free_unpacked(resp, NULL);
    free_parsed(cmps, n_cmp, ops, n_op);
    return 0;
}
