/* The Kubernetes-style compactor round (tools/compactor.c), shared with its test. */
#ifndef KV_TOOLS_COMPACTOR_H
#define KV_TOOLS_COMPACTOR_H

#include <stdint.h>

#include "client/kvc.h"

/* Race one round of the compare-and-swap on compact_rev_key.  @version: the key's version this
 * caller saw last (start at 0), updated.  On a win the previous round's revision is compacted
 * and stored in *@compacted.  Returns 1 (won), 0 (another caller won), -1 (error: see
 * kvc_errmsg). */
int compactor_round(struct kvc *c, int64_t *version, int64_t *compacted);

#endif /* KV_TOOLS_COMPACTOR_H */
