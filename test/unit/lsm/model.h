/* A deliberately simple in-memory model of etcd v3 mvcc, for the randomized lsm test.  Keys come
 * from a small fixed table (sorted bytewise), so key sets are bitmasks; every version ever
 * written is kept per key and reads scan them. */
#ifndef KV_TEST_LSM_MODEL_H
#define KV_TEST_LSM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "lsm/lsm.h"

#define M_NKEYS 24

struct mkey
{
    uint8_t b[8];
    size_t len;
};
extern struct mkey m_keys[M_NKEYS];
void m_keys_init(void);

struct mver
{
    int64_t rev;
    bool tomb;
    int64_t create, version, lease;
    uint8_t *val;
    size_t vlen;
};

struct mlist
{
    struct mver *v;
    size_t n, cap;
};

struct mevent
{
    enum lsm_event_type type;
    int key;
    struct mver kv; /* for a delete: rev only */
    bool has_prev;
    struct mver prev;
};

struct model
{
    struct mlist keys[M_NKEYS];
    int64_t rev;
    int64_t compact;
    struct mevent *ev; /* every event ever, in order */
    size_t n_ev, cap_ev;
    uint64_t max_ops;
};

void m_init(struct model *m);
void m_fini(struct model *m);
/* Apply one request (NULL = no-op) the way lsm must; fills @res (release: lsm_result_fini). */
void m_apply(struct model *m, const struct lsm_op *op, struct lsm_result *res);
/* A read outside apply. */
void m_range(struct model *m, const struct lsm_range_req *req, struct lsm_result *res);
/* Index of a key in m_keys, or -1. */
int m_key_index(const void *k, size_t len);

#endif /* KV_TEST_LSM_MODEL_H */
