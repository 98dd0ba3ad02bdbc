#include "test/integration/fixture.h"

#include <stdlib.h>
#include <string.h>

void ih_fix_close_clients(struct ih_fix *f)
{
    for (size_t i = 0; i < IH_MAX_MEMBERS; i++) {
        kvc_close(f->k[i]);
        f->k[i] = NULL;
    }
}

int ih_fix_teardown(void **state)
{
    struct ih_fix *f = *state;
    if (f == NULL) {
        return 0;
    }
    ih_writer_stop(&f->w);
    ih_writer_fini(&f->w);
    ih_fix_close_clients(f);
    int rv = ih_cluster_stop(&f->c);
    ih_cluster_destroy(&f->c);
    free(f);
    *state = NULL;
    return rv;
}

int ih_fix_setup(void **state, size_t n, const char *const *extra, unsigned start_ms, bool clients)
{
    struct ih_fix *f = calloc(1, sizeof *f);
    *state = f;
    bool ok = f != NULL && ih_cluster_init(&f->c, n, extra) == 0 &&
              ih_cluster_start(&f->c, start_ms) == 0;
    for (size_t i = 0; ok && clients && i < n; i++) {
        ok = (f->k[i] = ih_client(&f->c, i, 10000)) != NULL;
    }
    if (!ok) {
        ih_fix_teardown(state);
        return -1;
    }
    return 0;
}

struct ih_fix *ih_fix_start(size_t n, const char *const *extra, unsigned start_ms, size_t member)
{
    void *state = NULL;
    if (ih_fix_setup(&state, n, extra, start_ms, false) != 0) {
        return NULL;
    }
    struct ih_fix *f = state;
    if ((f->k[0] = ih_client(&f->c, member, 10000)) == NULL) {
        ih_fix_teardown(&state);
        return NULL;
    }
    return f;
}

bool ih_fix_eventually_local(struct ih_fix *f, size_t i, const char *key, const char *want)
{
    uint64_t deadline = ih_now_ms() + 30000;
    while (ih_now_ms() < deadline) {
        char v[64];
        if (ih_get(f->k[i], key, true, v, sizeof v) == 1 && strcmp(v, want) == 0) {
            return true;
        }
        ih_sleep_ms(50);
    }
    return false;
}
