/* Client protocol <-> LSM store conversions (apply and read threads). */
#ifndef KV_SERVER_KVCONV_H
#define KV_SERVER_KVCONV_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/lsm.h"
#include "proto/kvdb.pb-c.h"

/* A bump allocator: everything a converted request or response needs, freed at once. */
struct srv_arena
{
    struct srv_arena_blk *head;
};

/* Zeroed memory from @a, or NULL when out of memory.  Freed by srv_arena_free(). */
void *srv_arena_alloc(struct srv_arena *a, size_t n);

/* Free everything allocated from @a.  A no-op on a zeroed arena. */
void srv_arena_free(struct srv_arena *a);

/* Fill @out from @r; bytes borrow from @r. */
void srv_conv_range(const Kvdb__RangeRequest *r, struct lsm_range_req *out);

/* Convert the write in @ir into @op; nested arrays come from @a, bytes borrow from @ir.
 * Errors: LSM_EINVAL (no request, an empty op, txn nesting deeper than 16), LSM_ENOMEM. */
int srv_conv_internal(const Kvdb__InternalRequest *ir, struct srv_arena *a, struct lsm_op *op);

/* The client error code and message for an LSM_E* code (0 gives OK). */
Kvdb__ErrorCode srv_conv_error(int lsm_err, const char **msg);

/* Pack @r as the response message of its op type, with header @h (revision taken from @r), into
 * a new buffer *@out of *@len bytes (the caller frees it).  Errors: LSM_ENOMEM. */
int srv_conv_pack(const struct lsm_result *r,
                  const Kvdb__ResponseHeader *h,
                  uint8_t **out,
                  size_t *len);

#endif /* KV_SERVER_KVCONV_H */
