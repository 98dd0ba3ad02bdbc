/* Reads on a published view: Range, watch catch-up from the revision log, and HashKV. */
#include <stdlib.h>
#include <string.h>

#include "lsm/src.h"

size_t lsm_collect_bound(const struct lsm_range_req *req)
{
    enum lsm_sort_order o = req->sort_order ? req->sort_order : LSM_SORT_NONE;
    enum lsm_sort_target t = req->sort_target ? req->sort_target : LSM_SORT_KEY;
    bool sorted = o == LSM_SORT_DESCEND || t != LSM_SORT_KEY; /* see lsm_collect_finish */
    if (sorted || req->limit <= 0) {
        return 0;
    }
    return (size_t)req->limit + 1;
}

int lsm_collect_visit(void *arg,
                      const uint8_t *key,
                      size_t klen,
                      const uint8_t *val,
                      size_t vlen,
                      const struct lsm_meta *m)
{
    struct lsm_collect *c = arg;
    struct lsm_range_result *res = c->res;
    res->count++;
    if (c->req->count_only || (c->stop_after && res->n_kvs >= c->stop_after)) {
        return 0;
    }
    if (res->n_kvs == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        struct lsm_kv *kvs = realloc(res->kvs, cap * sizeof *kvs);
        if (kvs == NULL) {
            return c->err = LSM_ENOMEM;
        }
        res->kvs = kvs;
        c->cap = cap;
    }
    /* keys_only still needs values to sort by them; lsm_collect_finish drops them after. */
    bool with_value = !c->req->keys_only || c->req->sort_target == LSM_SORT_VALUE;
    int rv = lsm_kv_fill(&res->kvs[res->n_kvs], key, klen, val, vlen, with_value, m);
    if (rv != 0) {
        return c->err = rv;
    }
    res->n_kvs++;
    return 0;
}

static _Thread_local enum lsm_sort_target sort_target;
static _Thread_local int sort_sign;

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

/* Ties keep key order in both directions, as etcd's sort.Stable over key-ordered input does. */
static int kv_cmp(const void *pa, const void *pb)
{
    const struct lsm_kv *a = pa, *b = pb;
    int c = 0;
    switch (sort_target) {
    case LSM_SORT_VERSION:
        c = cmp_i64(a->version, b->version);
        break;
    case LSM_SORT_CREATE:
        c = cmp_i64(a->create_revision, b->create_revision);
        break;
    case LSM_SORT_MOD:
        c = cmp_i64(a->mod_revision, b->mod_revision);
        break;
    case LSM_SORT_VALUE:
        c = lsm_keycmp(a->value, a->value_len, b->value, b->value_len);
        break;
    default:
        c = lsm_keycmp(a->key, a->key_len, b->key, b->key_len);
        break;
    }
    if (c != 0) {
        return sort_sign * c;
    }
    return lsm_keycmp(a->key, a->key_len, b->key, b->key_len);
}

void lsm_collect_finish(struct lsm_collect *c)
{
    const struct lsm_range_req *req = c->req;
    struct lsm_range_result *res = c->res;
    enum lsm_sort_order o = req->sort_order ? req->sort_order : LSM_SORT_NONE;
    enum lsm_sort_target t = req->sort_target ? req->sort_target : LSM_SORT_KEY;
    if (t != LSM_SORT_KEY && o == LSM_SORT_NONE) {
        o = LSM_SORT_ASCEND; /* etcd: non-key targets sort ascending by default */
    } else if (t == LSM_SORT_KEY && o == LSM_SORT_ASCEND) {
        o = LSM_SORT_NONE; /* already in key order */
    }
    if (o != LSM_SORT_NONE && res->n_kvs > 1) {
        sort_target = t;
        sort_sign = o == LSM_SORT_DESCEND ? -1 : 1;
        qsort(res->kvs, res->n_kvs, sizeof *res->kvs, kv_cmp);
    }
    for (size_t i = 0; req->keys_only && i < res->n_kvs; i++) {
        res->kvs[i].value = NULL;
        res->kvs[i].value_len = 0;
    }
    if (req->limit > 0 && res->n_kvs > (size_t)req->limit) {
        for (size_t i = (size_t)req->limit; i < res->n_kvs; i++) {
            lsm_kv_fini(&res->kvs[i]);
        }
        res->n_kvs = (size_t)req->limit;
        res->more = true;
    }
}

/* Run a range over LevelDB alone (no pending apply state). */
static int range_on(leveldb_t *db,
                    const leveldb_readoptions_t *ro,
                    const struct lsm_range_req *req,
                    int64_t rev,
                    struct lsm_range_result *res,
                    char *errmsg)
{
    struct lsm_span sp;
    lsm_span_make(&sp, req->key, req->range_end);
    struct lsm_collect c = {.req = req, .res = res, .stop_after = lsm_collect_bound(req)};
    struct lsm_src src;
    int rv = lsm_src_open(&src, db, ro, &sp, rev, errmsg);
    while (rv == 0 && (rv = lsm_src_next(&src)) == 0 && src.valid) {
        rv = lsm_collect_visit(&c, src.key.p, src.key.len, src.val.p, src.val.len, &src.meta);
    }
    lsm_src_close(&src);
    if (rv == 0) {
        lsm_collect_finish(&c);
    }
    return rv;
}

/* The common case, a current single-key read: one LevelDB get, no iterator. */
static int get_current(leveldb_t *db,
                       const leveldb_readoptions_t *ro,
                       const struct lsm_range_req *req,
                       struct lsm_range_result *res,
                       char *errmsg)
{
    uint8_t stack[256];
    uint8_t *k = req->key.len < sizeof stack ? stack : malloc(req->key.len + 1);
    if (k == NULL) {
        return LSM_ENOMEM;
    }
    k[0] = LSM_P_CUR;
    memcpy(k + 1, req->key.data, req->key.len);
    char *err = NULL;
    size_t vlen = 0;
    char *v = leveldb_get(db, ro, (const char *)k, req->key.len + 1, &vlen, &err);
    if (k != stack) {
        free(k);
    }
    if (err != NULL) {
        return lsm_ldb_err(errmsg, "get", err);
    }
    if (v == NULL) {
        return 0;
    }
    int rv = 0;
    if (vlen < LSM_CUR_HDR) {
        lsm_set_err(errmsg, "current record of %zu bytes", vlen);
        rv = LSM_ECORRUPT;
    } else {
        struct lsm_meta m;
        lsm_cur_decode((const uint8_t *)v, &m);
        struct lsm_collect c = {.req = req, .res = res};
        rv = lsm_collect_visit(&c, req->key.data, req->key.len, (const uint8_t *)v + LSM_CUR_HDR,
                               vlen - LSM_CUR_HDR, &m);
        if (rv == 0) {
            lsm_collect_finish(&c);
        }
    }
    leveldb_free(v);
    return rv;
}

int lsm_range(struct lsm_store *s,
              const struct lsm_range_req *req,
              struct lsm_result *out,
              char *errmsg)
{
    memset(out, 0, sizeof *out);
    out->type = LSM_OP_RANGE;
    struct lsm_view *v = lsm_view_acquire(s);
    out->revision = v->rev;
    int rv = 0;
    if (req->key.len == 0) {
        lsm_set_err(errmsg, "range: empty key");
        rv = LSM_EEMPTYKEY;
    } else if (req->revision > v->rev) {
        lsm_set_err(errmsg, "range at %lld: current revision is %lld", (long long)req->revision,
                    (long long)v->rev);
        rv = LSM_EFUTUREREV;
    } else if (req->revision > 0 && req->revision < v->compact_rev) {
        lsm_set_err(errmsg, "range at %lld: compacted through %lld", (long long)req->revision,
                    (long long)v->compact_rev);
        rv = LSM_ECOMPACTED;
    } else {
        const leveldb_readoptions_t *ro = v->ro;
        /* etcd: a revision <= 0 means the current one. */
        int64_t rev = req->revision <= 0 || req->revision == v->rev ? 0 : req->revision;
        if (rev == 0 && req->range_end.len == 0) {
            rv = get_current(s->db, ro, req, &out->u.range, errmsg);
        } else {
            rv = range_on(s->db, ro, req, rev, &out->u.range, errmsg);
        }
    }
    lsm_view_release(s, v);
    if (rv != 0) {
        int64_t rev = out->revision;
        lsm_result_fini(out);
        out->type = LSM_OP_RANGE;
        out->err = rv;
        out->revision = rev;
    }
    return rv;
}

struct ev_list
{
    struct lsm_event *ev;
    size_t n;
    size_t cap;
};

static struct lsm_event *ev_push(struct ev_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct lsm_event *ev = realloc(l->ev, cap * sizeof *ev);
        if (ev == NULL) {
            return NULL;
        }
        l->ev = ev;
        l->cap = cap;
    }
    memset(&l->ev[l->n], 0, sizeof l->ev[0]);
    return &l->ev[l->n++];
}

/* Rebuild the event at (@rev, @sub) on @key from history. */
static int event_build(leveldb_t *db,
                       const leveldb_readoptions_t *ro,
                       int type,
                       const uint8_t *key,
                       size_t klen,
                       int64_t rev,
                       uint32_t sub,
                       struct lsm_event *e,
                       char *errmsg)
{
    struct lsm_buf val = {0};
    struct lsm_meta m = {0};
    bool found = false, tomb = false;
    int rv = 0;
    e->type = type == 'P' ? LSM_EVENT_PUT : LSM_EVENT_DELETE;
    if (e->type == LSM_EVENT_PUT) {
        rv = lsm_hist_read(db, ro, key, klen, rev, sub, true, &found, &val, &m, &tomb, errmsg);
        if (rv == 0 && (!found || tomb)) {
            lsm_set_err(errmsg, "revision log %lld names a missing version", (long long)rev);
            rv = LSM_ECORRUPT;
        }
        if (rv == 0) {
            rv = lsm_kv_fill(&e->kv, key, klen, val.p, val.len, true, &m);
        }
    } else {
        struct lsm_meta dm = {.mod_rev = rev};
        rv = lsm_kv_fill(&e->kv, key, klen, NULL, 0, false, &dm);
    }
    if (rv == 0) {
        /* The previous version, unless compacted away or ended by a tombstone. */
        rv = lsm_hist_read(db, ro, key, klen, rev, sub, false, &found, &val, &m, &tomb, errmsg);
        if (rv == 0 && found && !tomb) {
            e->has_prev = true;
            rv = lsm_kv_fill(&e->prev_kv, key, klen, val.p, val.len, true, &m);
        }
    }
    lsm_buf_fini(&val);
    return rv;
}

static int events_scan(leveldb_t *db,
                       const leveldb_readoptions_t *ro,
                       const struct lsm_span *sp,
                       int64_t start,
                       int64_t last,
                       size_t max,
                       struct ev_list *l,
                       int64_t *next,
                       char *errmsg)
{
    uint8_t k0[13];
    lsm_key_rev(k0, start, 0);
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    leveldb_iter_seek(it, (const char *)k0, sizeof k0);
    int rv = 0;
    *next = start > last + 1 ? start : last + 1; /* never behind the asked revision */
    for (; leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen, vlen;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &klen);
        if (klen != 13 || k[0] != LSM_P_REV) {
            break;
        }
        int64_t rev = (int64_t)lsm_get64be(k + 1);
        if (rev > last) {
            break;
        }
        if (max && l->n >= max && rev != l->ev[l->n - 1].kv.mod_revision) {
            *next = rev;
            break;
        }
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
        if (vlen < 1 || !lsm_span_has(sp, v + 1, vlen - 1)) {
            continue;
        }
        struct lsm_event *e = ev_push(l);
        if (e == NULL) {
            rv = LSM_ENOMEM;
            break;
        }
        uint32_t sub = (uint32_t)k[9] << 24 | (uint32_t)k[10] << 16 | (uint32_t)k[11] << 8 | k[12];
        if ((rv = event_build(db, ro, v[0], v + 1, vlen - 1, rev, sub, e, errmsg)) != 0) {
            break;
        }
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (rv == 0 && err != NULL) {
        rv = lsm_ldb_err(errmsg, "scan revision log", err);
    } else {
        leveldb_free(err);
    }
    leveldb_iter_destroy(it);
    return rv;
}

int lsm_events_read(struct lsm_store *s,
                    struct lsm_bytes key,
                    struct lsm_bytes range_end,
                    int64_t start_rev,
                    size_t max_events,
                    struct lsm_event **events,
                    size_t *n_events,
                    int64_t *next_rev,
                    char *errmsg)
{
    *events = NULL;
    *n_events = 0;
    struct lsm_view *v = lsm_view_acquire(s);
    int rv = 0;
    struct ev_list l = {0};
    if (start_rev < v->compact_rev) {
        lsm_set_err(errmsg, "events from %lld: compacted through %lld", (long long)start_rev,
                    (long long)v->compact_rev);
        rv = LSM_ECOMPACTED;
        *next_rev = start_rev;
    } else {
        struct lsm_span sp;
        lsm_span_make(&sp, key, range_end);
        const leveldb_readoptions_t *ro = v->ro;
        rv = events_scan(s->db, ro, &sp, start_rev < 1 ? 1 : start_rev, v->rev, max_events, &l,
                         next_rev, errmsg);
    }
    lsm_view_release(s, v);
    if (rv != 0) {
        lsm_events_free(l.ev, l.n);
        return rv;
    }
    *events = l.ev;
    *n_events = l.n;
    return 0;
}

/* CRC-32C (Castagnoli), bitwise table built once: HashKV needs no speed records. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        crc_table[i] = c;
    }
}

static uint32_t crc_extend(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* Hash one key's versions (ascending revisions) that a full compaction at @crev keeps. */
struct hash_state
{
    uint32_t crc;
    struct lsm_buf cur_key;
    struct lsm_buf held_k; /* newest version at or below crev, not yet hashed */
    struct lsm_buf held_v;
    bool held;
};

static void hash_flush(struct hash_state *h)
{
    if (h->held) {
        h->crc = crc_extend(h->crc, h->held_k.p, h->held_k.len);
        h->crc = crc_extend(h->crc, h->held_v.p, h->held_v.len);
        h->held = false;
    }
}

/* The version under @v in its history encoding (key, then flags + meta + value), whichever
 * record holds it, so the hash does not depend on where a version is stored. */
static int hash_encode(const struct lsm_vit *v, struct lsm_buf *k, struct lsm_buf *val)
{
    uint8_t hdr[LSM_HIST_HDR];
    hdr[0] = v->tomb ? LSM_HIST_TOMB : 0;
    lsm_meta_encode(hdr + 1, &v->meta);
    val->len = 0;
    if (lsm_key_hist(k, v->key.p, v->key.len, v->meta.mod_rev, v->meta.sub) != 0 ||
        lsm_buf_add(val, hdr, sizeof hdr) != 0 || lsm_buf_add(val, v->val, v->vlen) != 0) {
        return LSM_ENOMEM;
    }
    return 0;
}

static int hash_scan(leveldb_t *db,
                     const leveldb_readoptions_t *ro,
                     int64_t crev,
                     int64_t hrev,
                     uint32_t *out,
                     char *errmsg)
{
    struct hash_state h = {0};
    struct lsm_buf k = {0}, val = {0};
    struct lsm_vit v;
    int rv = lsm_vit_open(&v, db, ro, NULL, 0, errmsg);
    while (rv == 0 && (rv = lsm_vit_next(&v)) == 0 && v.valid) {
        if (lsm_keycmp(v.key.p, v.key.len, h.cur_key.p, h.cur_key.len) != 0) {
            hash_flush(&h);
            h.cur_key.len = 0;
            rv = lsm_buf_add(&h.cur_key, v.key.p, v.key.len);
        }
        if (rv != 0 || v.meta.mod_rev > hrev) {
            continue;
        }
        if (v.meta.mod_rev <= crev) {
            /* Only the newest version at or below crev survives compaction, not a tombstone. */
            h.held = !v.tomb;
            if (h.held) {
                rv = hash_encode(&v, &h.held_k, &h.held_v);
            }
            continue;
        }
        hash_flush(&h);
        if ((rv = hash_encode(&v, &k, &val)) == 0) {
            h.crc = crc_extend(h.crc, k.p, k.len);
            h.crc = crc_extend(h.crc, val.p, val.len);
        }
    }
    hash_flush(&h);
    lsm_vit_close(&v);
    lsm_buf_fini(&k);
    lsm_buf_fini(&val);
    lsm_buf_fini(&h.cur_key);
    lsm_buf_fini(&h.held_k);
    lsm_buf_fini(&h.held_v);
    *out = h.crc;
    return rv;
}

int lsm_hash_kv(struct lsm_store *s,
                int64_t rev,
                uint32_t *hash,
                int64_t *hash_rev,
                int64_t *compact_rev,
                char *errmsg)
{
    pthread_once(&crc_once, crc_init);
    struct lsm_view *v = lsm_view_acquire(s);
    int rv = 0;
    *hash = 0;
    *compact_rev = v->compact_rev;
    *hash_rev = rev == 0 ? v->rev : rev;
    if (rev > v->rev) {
        lsm_set_err(errmsg, "hash at %lld: future revision", (long long)rev);
        rv = LSM_EFUTUREREV;
    } else if (rev != 0 && rev < v->compact_rev) {
        lsm_set_err(errmsg, "hash at %lld: compacted", (long long)rev);
        rv = LSM_ECOMPACTED;
    } else {
        const leveldb_readoptions_t *ro = v->ro;
        rv = hash_scan(s->db, ro, v->compact_rev, *hash_rev, hash, errmsg);
    }
    lsm_view_release(s, v);
    return rv;
}
