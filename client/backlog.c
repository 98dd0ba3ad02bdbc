/* The client's backlog of kept frames. */
#include "client/backlog.h"

#include <stdbool.h>
#include <stdlib.h>

#include "client/kvc.h"

struct kvc_kept
{
    Kvdb__Frame *f;
    struct kvc_kept *next;
};

void kvc_backlog_init(struct kvc_backlog *b)
{
    b->head = NULL;
    b->tail = &b->head;
    b->n = 0;
    b->bytes = 0;
}

void kvc_backlog_fini(struct kvc_backlog *b)
{
    Kvdb__Frame *f;
    while (b->head != NULL && (f = kvc_backlog_take(b, false)) != NULL) {
        kvdb__frame__free_unpacked(f, NULL);
    }
}

int kvc_backlog_push(struct kvc_backlog *b, Kvdb__Frame *f)
{
    struct kvc_kept *k = malloc(sizeof *k);
    if (k == NULL) {
        return KVC_ENOMEM;
    }
    k->f = f;
    k->next = NULL;
    *b->tail = k;
    b->tail = &k->next;
    b->n++;
    b->bytes += f->body.len;
    return 0;
}

Kvdb__Frame *kvc_backlog_take(struct kvc_backlog *b, bool only_watch)
{
    struct kvc_kept **at = &b->head;
    while (*at != NULL && only_watch && (*at)->f->method != KVDB__METHOD__METHOD_WATCH) {
        at = &(*at)->next;
    }
    struct kvc_kept *k = *at;
    if (k == NULL) {
        return NULL;
    }
    Kvdb__Frame *f = k->f;
    *at = k->next;
    if (b->tail == &k->next) {
        b->tail = at;
    }
    b->n--;
    b->bytes -= f->body.len;
    free(k);
    return f;
}
