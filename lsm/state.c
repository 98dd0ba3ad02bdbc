/* Replicated state records ('s' + name, lsm/FORMAT.md): the server's state beside the keyspace,
 * written in the apply batch of the entry that changes it (lsm/apply.c put_state). */
#include <stdlib.h>
#include <string.h>

#include "lsm/internal.h"

int lsm_state_key(struct lsm_buf *k, struct lsm_bytes name)
{
    uint8_t p = LSM_P_STATE;
    k->len = 0;
    return lsm_buf_add(k, &p, 1) != 0 || lsm_buf_add(k, name.data, name.len) != 0 ? LSM_ENOMEM : 0;
}

int lsm_state_scan(struct lsm_store *s,
                   struct lsm_bytes prefix,
                   int (*fn)(void *arg, struct lsm_bytes name, struct lsm_bytes value),
                   void *arg,
                   char *errmsg)
{
    struct lsm_buf k = {0};
    if (lsm_state_key(&k, prefix) != 0) {
        lsm_buf_fini(&k);
        lsm_set_err(errmsg, "state scan: out of memory");
        return LSM_ENOMEM;
    }
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
    int rv = 0;
    for (leveldb_iter_seek(it, (const char *)k.p, k.len); rv == 0 && leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = leveldb_iter_key(it, &klen);
        if (klen < k.len || memcmp(key, k.p, k.len) != 0) {
            break;
        }
        const char *val = leveldb_iter_value(it, &vlen);
        struct lsm_bytes name = {key + 1, klen - 1}, value = {val, vlen};
        rv = fn(arg, name, value);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    lsm_buf_fini(&k);
    if (err != NULL) {
        return lsm_ldb_err(errmsg, "state scan", err);
    }
    return rv;
}

int lsm_state_write(struct lsm_store *s, const struct lsm_state_rec *recs, size_t n, char *errmsg)
{
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    struct lsm_buf k = {0};
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        if (recs[i].name.len == 0) {
            lsm_set_err(errmsg, "state write: empty name");
            rv = LSM_EINVAL;
        } else if (lsm_state_key(&k, recs[i].name) != 0) {
            lsm_set_err(errmsg, "state write: out of memory");
            rv = LSM_ENOMEM;
        } else if (recs[i].del) {
            leveldb_writebatch_delete(wb, (const char *)k.p, k.len);
        } else {
            leveldb_writebatch_put(wb, (const char *)k.p, k.len, recs[i].value.data,
                                   recs[i].value.len);
        }
    }
    if (rv == 0) {
        leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
        leveldb_writeoptions_set_sync(wo, 1);
        char *err = NULL;
        leveldb_write(s->db, wo, wb, &err);
        leveldb_writeoptions_destroy(wo);
        if (err != NULL) {
            rv = lsm_ldb_err(errmsg, "state write", err);
        }
    }
    leveldb_writebatch_destroy(wb);
    lsm_buf_fini(&k);
    return rv;
}
