/* The member's replicated state beside the keyspace: the member registry, the auth state, the
 * leases, the alarms (and every later kind of replicated state).  Each lives in the store as
 * state records (lsm_state_rec: "members", "auth", "lease/<ID>", "alarms"), written by the apply
 * thread in the batch of the entry that changes it, so it is atomic with that entry's effects and
 * applied index, and every checkpoint and snapshot carries it in its tables.  This file loads it:
 * at start, and after a snapshot install replaced the store.  Older builds kept it in files beside
 * the store (member/auth, member/leases, member/members; AUTH, LEASES, MEMBERS in snapshots): a
 * store without the "state" record takes them in once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/srv_int.h"

#define REC_MARK "state" /* present once the store holds the state records */

struct state_bytes
{
    const char *name;
    uint8_t *buf;
    size_t len;
    bool found;
};

static int take_rec(void *arg, struct lsm_bytes name, struct lsm_bytes value)
{
    struct state_bytes *b = arg;
    if (name.len != strlen(b->name) || memcmp(name.data, b->name, name.len) != 0) {
        return 0;
    }
    b->buf = malloc(value.len > 0 ? value.len : 1);
    if (b->buf == NULL) {
        return SRV_ENOMEM;
    }
    memcpy(b->buf, value.data, value.len);
    b->len = value.len;
    b->found = true;
    return 1; /* stop */
}

/* The record @b->name of the store into @b (found false when absent). */
static int read_rec(struct srv *s, struct state_bytes *b, char *errmsg)
{
    struct lsm_bytes prefix = {b->name, strlen(b->name)};
    char err[256] = "";
    int rv = lsm_state_scan(s->lsm, prefix, take_rec, b, err);
    if (rv == 1) {
        return 0;
    }
    if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "read state record %s: %s", b->name,
                 rv == SRV_ENOMEM ? "out of memory" : err);
        return rv == SRV_ENOMEM ? SRV_ENOMEM : SRV_EIO;
    }
    return 0;
}

/* An older build's state files (@dir/@auth, @leases, @members) into the store, once. */
static int import_files(struct srv *s, const char *dir, const char *const names[3], char *errmsg)
{
    char path[3][PATH_MAX];
    for (int i = 0; i < 3; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
    }
    uint8_t *auth = NULL, *members = NULL;
    size_t auth_len = 0, members_len = 0, n_leases = 0;
    struct srv_lease_rec *leases = NULL;
    int rv = srv_auth_read_file(path[0], &auth, &auth_len);
    if (rv == 0) {
        rv = srv_lease_read_file(path[1], &leases, &n_leases);
    }
    if (rv == 0) {
        rv = srv_auth_read_file(path[2], &members, &members_len); /* bytes as they are */
    }
    struct lsm_state_rec *recs = rv == 0 ? calloc(n_leases + 3, sizeof *recs) : NULL;
    if (rv == 0 && recs == NULL) {
        rv = SRV_ENOMEM;
    }
    if (rv == 0) {
        size_t n = 0;
        for (size_t i = 0; i < n_leases; i++) {
            recs[n++] = leases[i].rec;
        }
        if (auth != NULL) {
            recs[n++] = (struct lsm_state_rec){{"auth", 4}, {auth, auth_len}, false};
        }
        if (members != NULL) {
            recs[n++] = (struct lsm_state_rec){{"members", 7}, {members, members_len}, false};
        }
        recs[n++] = (struct lsm_state_rec){{REC_MARK, strlen(REC_MARK)}, {"1", 1}, false};
        char err[256] = "";
        if (lsm_state_write(s->lsm, recs, n, err) != 0) {
            snprintf(errmsg, SRV_ERRMSG, "move the state files of %s into the store: %s", dir, err);
            rv = SRV_EIO;
        } else if (n > 1) {
            srv_log(SRV_LOG_INFO, "state", "moved %zu leases%s%s from %s into the store", n_leases,
                    auth != NULL ? ", the auth state" : "",
                    members != NULL ? ", the member registry" : "", dir);
        }
    } else if (rv != 0) {
        snprintf(errmsg, SRV_ERRMSG, "read the state files of %s: %s", dir, strerror(errno));
    }
    free(recs);
    free(leases);
    free(auth);
    free(members);
    return rv;
}

/* Members of the store's registry: added to @v/@n (start: over --initial-cluster). */
static int load_members(struct srv *s, struct srv_member *v, size_t *n, char *errmsg)
{
    struct state_bytes b = {.name = "members"};
    int rv = read_rec(s, &b, errmsg);
    if (rv == 0 && b.found) {
        rv = srv_members_decode(b.buf, b.len, v, n);
    }
    free(b.buf);
    return rv;
}

int srv_state_load(struct srv *s,
                   const char *dir,
                   const char *const files[3],
                   bool at_start,
                   char *errmsg)
{
    struct state_bytes mark = {.name = REC_MARK};
    int rv = read_rec(s, &mark, errmsg);
    free(mark.buf);
    if (rv == 0 && !mark.found) {
        rv = import_files(s, dir, files, errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    struct state_bytes auth = {.name = "auth"};
    if ((rv = read_rec(s, &auth, errmsg)) != 0) {
        return rv;
    }
    if (at_start) {
        rv = load_members(s, s->members, &s->n_members, errmsg);
        memcpy(s->apply_members, s->members, sizeof s->members);
        s->n_apply_members = s->n_members;
        if (rv == 0 && (rv = srv_auth_init(s, auth.found ? auth.buf : NULL, auth.len)) != 0) {
            snprintf(errmsg, SRV_ERRMSG, "cannot load the auth state from the store");
        }
        free(auth.buf);
    } else {
        size_t n = 0;
        struct srv_member v[SRV_MAX_MEMBERS];
        rv = load_members(s, v, &n, errmsg);
        if (rv == 0 && n > 0) {
            /* The snapshot's registry becomes ours; the loop learns each entry. */
            srv_members_commit_conf(s, v, n);
            for (size_t i = 0; i < n; i++) {
                srv_members_commit_attr(s, v, n, &v[i], 0);
            }
        }
        if (auth.found) {
            srv_auth_install(s, auth.buf, auth.len);
        } else {
            free(auth.buf);
        }
    }
    struct state_bytes alarms = {.name = "alarms"};
    if (rv == 0 && (rv = read_rec(s, &alarms, errmsg)) == 0) {
        srv_alarm_install(s, alarms.buf, alarms.len, at_start); /* takes the buffer */
    }
    return rv != 0 ? rv : srv_lease_load(s, at_start, errmsg);
}
