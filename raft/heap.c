/* Allocation through the injected hooks (STYLE.md §4), so tests can fail the Nth allocation. */
#include <stdlib.h>

#include "raft/core.h"

void *raft_malloc(const struct raft_heap *h, size_t size)
{
    if (h != NULL && h->malloc != NULL) {
        return h->malloc(h->ctx, size);
    }
    return malloc(size);
}

void *raft_realloc(const struct raft_heap *h, void *p, size_t size)
{
    if (h != NULL && h->realloc != NULL) {
        return h->realloc(h->ctx, p, size);
    }
    return realloc(p, size);
}

void raft_free(const struct raft_heap *h, void *p)
{
    if (p == NULL) {
        return;
    }
    if (h != NULL && h->free != NULL) {
        h->free(h->ctx, p);
        return;
    }
    free(p);
}

const char *raft_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case num:          \
        return msg;
        RAFT_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}
