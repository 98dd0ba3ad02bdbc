/* The client's backlog: frames read by one call and kept, in arrival order, for another. */
#ifndef KV_CLIENT_BACKLOG_H
#define KV_CLIENT_BACKLOG_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/kvdb.pb-c.h"

struct kvc_kept; /* one kept frame */

/* A FIFO of frames (kvc.h, "backlog").  Owns the frames it holds.  One thread, like its kvc. */
struct kvc_backlog
{
    struct kvc_kept *head;  /* oldest first */
    struct kvc_kept **tail; /* where the next frame links in */
    size_t n;               /* frames held */
    size_t bytes;           /* their bodies' bytes */
};

/* Start empty. */
void kvc_backlog_init(struct kvc_backlog *b);

/* Free every frame held.  A no-op on a zeroed struct. */
void kvc_backlog_fini(struct kvc_backlog *b);

/* Append @f.  Takes ownership of @f when it returns 0; on error the caller still owns it.
 * Errors: KVC_ENOMEM. */
int kvc_backlog_push(struct kvc_backlog *b, Kvdb__Frame *f);

/* Remove and return the oldest frame, or with @only_watch the oldest watch response; NULL when
 * there is none.  The caller owns it (kvdb__frame__free_unpacked). */
Kvdb__Frame *kvc_backlog_take(struct kvc_backlog *b, bool only_watch);

#endif /* KV_CLIENT_BACKLOG_H */
