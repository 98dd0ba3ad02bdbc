/* Shared fixture for the lsm unit tests: a store in a fresh temp directory, request builders. */
#ifndef KV_TEST_LSM_HELPERS_H
#define KV_TEST_LSM_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lsm/lsm.h"

struct fx
{
    char dir[64];
    char db[128];
    struct lsm_store *s;
    uint64_t index;
};

static inline void rm_rf(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static inline void fx_open(struct fx *f)
{
    char err[256];
    assert_int_equal(lsm_open(f->db, NULL, &f->s, err), 0);
    struct lsm_status st;
    lsm_status_get(f->s, &st);
    f->index = st.applied_index;
}

static inline struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/kv-lsm-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/db", f->dir);
    fx_open(f);
    return f;
}

static inline void fx_free(struct fx *f)
{
    lsm_close(f->s);
    rm_rf(f->dir);
    free(f);
}

static inline struct lsm_bytes B(const char *s)
{
    struct lsm_bytes b = {s, s ? strlen(s) : 0};
    return b;
}

static inline struct lsm_op
op_put(const char *k, const char *v)
{
    struct lsm_op op = {.type = LSM_OP_PUT};
    op.u.put.key = B(k);
    op.u.put.value = B(v);
    return op;
}

static inline struct lsm_op op_del(const char *k, const char *end)
{
    struct lsm_op op = {.type = LSM_OP_DELETE_RANGE};
    op.u.del.key = B(k);
    op.u.del.range_end = B(end);
    return op;
}

static inline struct lsm_op op_range(const char *k, const char *end)
{
    struct lsm_op op = {.type = LSM_OP_RANGE};
    op.u.range.key = B(k);
    op.u.range.range_end = B(end);
    return op;
}

/* Apply one request as the next entry; the result is moved to *@res. */
static inline void fx_apply(struct fx *f, const struct lsm_op *op, struct lsm_result *res)
{
    struct lsm_entry e = {.index = ++f->index, .term = 1, .req = op};
    struct lsm_apply_out out;
    assert_int_equal(lsm_apply(f->s, &e, 1, &out), 0);
    assert_int_equal(out.n_results, 1);
    *res = out.results[0];
    memset(&out.results[0], 0, sizeof out.results[0]);
    lsm_apply_out_fini(&out);
}

static inline int fx_put(struct fx *f, const char *k, const char *v)
{
    struct lsm_op op = op_put(k, v);
    struct lsm_result r;
    fx_apply(f, &op, &r);
    int err = r.err;
    lsm_result_fini(&r);
    return err;
}

static inline void fx_range(struct fx *f,
                            const struct lsm_range_req *req,
                            int want_err,
                            struct lsm_result *res)
{
    char err[256];
    assert_int_equal(lsm_range(f->s, req, res, err), want_err);
}

static inline void assert_kv(const struct lsm_kv *kv,
                             const char *k,
                             const char *v,
                             int64_t create,
                             int64_t mod,
                             int64_t version)
{
    assert_int_equal(kv->key_len, strlen(k));
    assert_memory_equal(kv->key, k, kv->key_len);
    if (v != NULL) {
        assert_int_equal(kv->value_len, strlen(v));
        if (kv->value_len) {
            assert_memory_equal(kv->value, v, kv->value_len);
        }
    }
    assert_int_equal(kv->create_revision, create);
    assert_int_equal(kv->mod_revision, mod);
    assert_int_equal(kv->version, version);
}

#endif /* KV_TEST_LSM_HELPERS_H */
