/* Auth: users, roles with key-range permissions, simple tokens (etcd's Auth service).
 *
 * The auth state (users with salted PBKDF2 password hashes, roles, the enabled flag) is
 * replicated: every change is an AuthChange entry in the log, applied by the apply thread,
 * kept as the store's state record "auth" (a packed AuthState, written in the batch of the
 * change, so tables and snapshots carry it).  The loop
 * keeps a decoded copy to check requests.  Passwords are hashed by the member that receives
 * the request, so plaintext never enters the log.  Tokens are random and local to the member
 * that issued them (etcd's "simple" tokens); a client that fails over authenticates again.
 * The user "root", and any user with the role "root", may do everything. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/pb.h"
#include "server/srv_int.h"

#define TOKEN_TTL_MS (300ull * 1000) /* etcd's --auth-token-ttl default */
#define PBKDF2_ROUNDS 4096

/* ---- the state ---- */

static const Kvdb__AuthUser *find_user(const Kvdb__AuthState *a, const char *name)
{
    for (size_t i = 0; a != NULL && i < a->n_users; i++) {
        if (strcmp(a->users[i]->name, name) == 0) {
            return a->users[i];
        }
    }
    return NULL;
}

static const Kvdb__AuthRole *find_role(const Kvdb__AuthState *a, const char *name)
{
    for (size_t i = 0; a != NULL && i < a->n_roles; i++) {
        if (strcmp(a->roles[i]->name, name) == 0) {
            return a->roles[i];
        }
    }
    return NULL;
}

static uint8_t *pack_state(const Kvdb__AuthState *a, size_t *len)
{
    *len = kvdb__auth_state__get_packed_size(a);
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    if (buf != NULL) {
        kvdb__auth_state__pack(a, buf);
    }
    return buf;
}

/* The state after @c, packed, built from @a without changing it (apply thread).  NULL when the
 * change does not apply (e.g. a user that already exists): every member skips it alike. */
static uint8_t *apply_change(const Kvdb__AuthState *a, const Kvdb__AuthChange *c, size_t *len)
{
    Kvdb__AuthState n;
    kvdb__auth_state__init(&n);
    n.enabled = a->enabled;
    n.revision = a->revision + 1;
    size_t nu = a->n_users, nr = a->n_roles;
    Kvdb__AuthUser **users = calloc(nu + 1, sizeof *users);
    Kvdb__AuthRole **roles = calloc(nr + 1, sizeof *roles);
    Kvdb__AuthUser nuser, uedit;
    Kvdb__AuthRole nrole, redit;
    char **uroles = NULL;
    Kvdb__Permission **perms = NULL;
    uint8_t *out = NULL;
    if (users == NULL || roles == NULL) {
        goto done;
    }
    if (nu > 0) { /* empty repeated fields are NULL */
        memcpy(users, a->users, nu * sizeof *users);
    }
    if (nr > 0) {
        memcpy(roles, a->roles, nr * sizeof *roles);
    }
    const Kvdb__AuthUser *u = find_user(a, c->name);
    const Kvdb__AuthRole *r = find_role(a, c->op == KVDB__AUTH_CHANGE__OP__ROLE_ADD ||
                                                   c->op == KVDB__AUTH_CHANGE__OP__ROLE_DELETE ||
                                                   c->op == KVDB__AUTH_CHANGE__OP__ROLE_GRANT
                                               ? c->name
                                               : c->role);
    size_t ui = 0, ri = 0;
    while (u != NULL && users[ui] != u) {
        ui++;
    }
    while (r != NULL && roles[ri] != r) {
        ri++;
    }
    switch (c->op) {
    case KVDB__AUTH_CHANGE__OP__ENABLE:
        if (find_user(a, "root") == NULL) {
            goto done; /* etcd: root must exist first */
        }
        n.enabled = true;
        break;
    case KVDB__AUTH_CHANGE__OP__DISABLE:
        n.enabled = false;
        break;
    case KVDB__AUTH_CHANGE__OP__USER_ADD:
        if (u != NULL || c->name[0] == '\0') {
            goto done;
        }
        kvdb__auth_user__init(&nuser);
        nuser.name = c->name;
        nuser.salt = c->salt;
        nuser.hash = c->hash;
        users[nu++] = &nuser;
        break;
    case KVDB__AUTH_CHANGE__OP__USER_DELETE:
        if (u == NULL) {
            goto done;
        }
        users[ui] = users[--nu];
        break;
    case KVDB__AUTH_CHANGE__OP__USER_PASSWORD:
    case KVDB__AUTH_CHANGE__OP__USER_GRANT:
    case KVDB__AUTH_CHANGE__OP__USER_REVOKE: {
        if (u == NULL) {
            goto done;
        }
        uedit = *u;
        if (c->op == KVDB__AUTH_CHANGE__OP__USER_PASSWORD) {
            uedit.salt = c->salt;
            uedit.hash = c->hash;
        } else {
            uroles = calloc(u->n_roles + 1, sizeof *uroles);
            if (uroles == NULL || (c->op == KVDB__AUTH_CHANGE__OP__USER_GRANT && r == NULL)) {
                goto done;
            }
            size_t k = 0;
            bool had = false;
            for (size_t i = 0; i < u->n_roles; i++) {
                if (strcmp(u->roles[i], c->role) == 0) {
                    had = true;
                    if (c->op == KVDB__AUTH_CHANGE__OP__USER_REVOKE) {
                        continue;
                    }
                }
                uroles[k++] = u->roles[i];
            }
            if (c->op == KVDB__AUTH_CHANGE__OP__USER_GRANT && !had) {
                uroles[k++] = c->role;
            }
            uedit.roles = uroles;
            uedit.n_roles = k;
        }
        users[ui] = &uedit;
        break;
    }
    case KVDB__AUTH_CHANGE__OP__ROLE_ADD:
        if (r != NULL || c->name[0] == '\0') {
            goto done;
        }
        kvdb__auth_role__init(&nrole);
        nrole.name = c->name;
        roles[nr++] = &nrole;
        break;
    case KVDB__AUTH_CHANGE__OP__ROLE_DELETE:
        if (r == NULL) {
            goto done;
        }
        roles[ri] = roles[--nr];
        break;
    case KVDB__AUTH_CHANGE__OP__ROLE_GRANT:
        if (r == NULL || c->perm == NULL) {
            goto done;
        }
        redit = *r;
        perms = calloc(r->n_perms + 1, sizeof *perms);
        if (perms == NULL) {
            goto done;
        }
        if (r->n_perms > 0) {
            memcpy(perms, r->perms, r->n_perms * sizeof *perms);
        }
        perms[r->n_perms] = c->perm;
        redit.perms = perms;
        redit.n_perms = r->n_perms + 1;
        roles[ri] = &redit;
        break;
    default:
        goto done;
    }
    n.users = users;
    n.n_users = nu;
    n.roles = roles;
    n.n_roles = nr;
    out = pack_state(&n, len);
done:
    free(users);
    free(roles);
    free(uroles);
    free(perms);
    return out;
}

/* An empty state, packed and unpacked (a new member, or a store without the record). */
static Kvdb__AuthState *empty_state(void)
{
    Kvdb__AuthState empty;
    kvdb__auth_state__init(&empty);
    size_t len;
    uint8_t *buf = pack_state(&empty, &len);
    Kvdb__AuthState *a = buf != NULL ? kvdb__auth_state__unpack(NULL, len, buf) : NULL;
    free(buf);
    return a;
}

int srv_auth_init(struct srv *s, const uint8_t *buf, size_t len)
{
    srv_auth_fini(s);
    if (buf != NULL) {
        s->auth = kvdb__auth_state__unpack(NULL, len, buf);
        s->apply_auth = kvdb__auth_state__unpack(NULL, len, buf);
        if (s->auth == NULL || s->apply_auth == NULL) {
            srv_auth_fini(s);
            return SRV_EIO; /* a record this build cannot read */
        }
        return 0;
    }
    s->auth = empty_state();
    s->apply_auth = empty_state();
    return s->auth != NULL && s->apply_auth != NULL ? 0 : SRV_ENOMEM;
}

void srv_auth_fini(struct srv *s)
{
    if (s->auth != NULL) {
        kvdb__auth_state__free_unpacked(s->auth, NULL);
    }
    if (s->apply_auth != NULL) {
        kvdb__auth_state__free_unpacked(s->apply_auth, NULL);
    }
    free(s->tokens);
    s->tokens = NULL;
    s->n_tokens = s->cap_tokens = 0;
    s->auth = s->apply_auth = NULL;
}

uint8_t *srv_auth_next(struct srv *s, const Kvdb__AuthChange *c, size_t *len)
{
    return apply_change(s->apply_auth, c, len);
}

void srv_auth_install(struct srv *s, uint8_t *buf, size_t len)
{
    Kvdb__AuthState *next = kvdb__auth_state__unpack(NULL, len, buf);
    if (next == NULL) {
        free(buf);
        return;
    }
    kvdb__auth_state__free_unpacked(s->apply_auth, NULL);
    s->apply_auth = next;
    struct srv_done *d = calloc(1, sizeof *d);
    if (d == NULL) {
        free(buf);
        return;
    }
    d->kind = SRV_DONE_AUTH;
    d->body = buf; /* the loop decodes its own copy */
    d->len = len;
    srv_post_done(s, d);
}

int srv_auth_read_file(const char *path, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return errno == ENOENT ? 0 : SRV_EIO;
    }
    size_t cap = 0;
    int rv = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap == 0 ? 4096 : cap * 2;
            uint8_t *b = realloc(*buf, cap);
            if (b == NULL) {
                rv = SRV_ENOMEM;
                break;
            }
            *buf = b;
        }
        size_t n = fread(*buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0) {
            rv = ferror(f) ? SRV_EIO : 0;
            break;
        }
    }
    fclose(f);
    if (rv != 0) {
        free(*buf);
        *buf = NULL;
        *len = 0;
    }
    return rv;
}

void srv_auth_on_state(struct srv *s, const uint8_t *buf, size_t len)
{
    Kvdb__AuthState *next = kvdb__auth_state__unpack(NULL, len, buf);
    if (next != NULL) {
        kvdb__auth_state__free_unpacked(s->auth, NULL);
        s->auth = next;
        if (!next->enabled) {
            s->n_tokens = 0;
        }
    }
}

/* ---- tokens ---- */

/* @n (<= 32) random bytes from the kernel. */
static bool random_bytes(uint8_t *out, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, out, n) : -1;
    if (fd >= 0) {
        close(fd);
    }
    return got == (ssize_t)n;
}

static void random_hex(char *out, size_t bytes)
{
    uint8_t r[32];
    if (!random_bytes(r, bytes)) {
        for (size_t i = 0; i < bytes; i++) { /* no /dev/urandom: weaker, still unique */
            r[i] = (uint8_t)(srv_now_us() >> (8 * (i % 8))) ^ (uint8_t)(i * 131);
        }
    }
    for (size_t i = 0; i < bytes; i++) {
        sprintf(out + 2 * i, "%02x", r[i]);
    }
}

static const char *token_user(struct srv *s, const char *token)
{
    uint64_t now = srv_now_ms();
    for (size_t i = 0; i < s->n_tokens; i++) {
        struct srv_token *t = &s->tokens[i];
        if (t->expiry_ms <= now) {
            s->tokens[i--] = s->tokens[--s->n_tokens]; /* expired */
            continue;
        }
        if (strcmp(t->token, token) == 0) {
            t->expiry_ms = now + TOKEN_TTL_MS;
            return find_user(s->auth, t->user) != NULL ? t->user : NULL;
        }
    }
    return NULL;
}

static const char *issue_token(struct srv *s, const char *user)
{
    if (s->n_tokens == s->cap_tokens) {
        size_t cap = s->cap_tokens == 0 ? 64 : s->cap_tokens * 2;
        struct srv_token *t = realloc(s->tokens, cap * sizeof *t);
        if (t == NULL) {
            return NULL;
        }
        s->tokens = t;
        s->cap_tokens = cap;
    }
    struct srv_token *t = &s->tokens[s->n_tokens++];
    random_hex(t->token, 16);
    snprintf(t->user, sizeof t->user, "%s", user);
    t->expiry_ms = srv_now_ms() + TOKEN_TTL_MS;
    return t->token;
}

/* ---- permissions ---- */

static int cmp_keys(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (an < bn ? -1 : an > bn);
}

/* Does @p allow @want (READ/WRITE) on [key, end) (etcd range conventions)? */
static bool perm_covers(const Kvdb__Permission *p,
                        bool write,
                        const uint8_t *key,
                        size_t klen,
                        const uint8_t *end,
                        size_t elen)
{
    bool type_ok = p->permtype == KVDB__PERMISSION__TYPE__READWRITE ||
                   (write ? p->permtype == KVDB__PERMISSION__TYPE__WRITE
                          : p->permtype == KVDB__PERMISSION__TYPE__READ);
    if (!type_ok || cmp_keys(key, klen, p->key.data, p->key.len) < 0) {
        return false;
    }
    bool p_all = p->range_end.len == 1 && p->range_end.data[0] == 0;
    if (p->range_end.len == 0) { /* the permission is one key */
        return elen == 0 && cmp_keys(key, klen, p->key.data, p->key.len) == 0;
    }
    if (p_all) {
        return true;
    }
    if (elen == 0) { /* one key inside [p.key, p.end) */
        return cmp_keys(key, klen, p->range_end.data, p->range_end.len) < 0;
    }
    if (elen == 1 && end[0] == 0) {
        return false; /* to the end of the keyspace, but the permission stops */
    }
    return cmp_keys(end, elen, p->range_end.data, p->range_end.len) <= 0;
}

static bool is_root(const Kvdb__AuthState *a, const char *user)
{
    if (strcmp(user, "root") == 0) {
        return true;
    }
    const Kvdb__AuthUser *u = find_user(a, user);
    for (size_t i = 0; u != NULL && i < u->n_roles; i++) {
        if (strcmp(u->roles[i], "root") == 0) {
            return true;
        }
    }
    return false;
}

static bool allowed(const Kvdb__AuthState *a,
                    const char *user,
                    bool write,
                    ProtobufCBinaryData key,
                    ProtobufCBinaryData end)
{
    if (is_root(a, user)) {
        return true;
    }
    const Kvdb__AuthUser *u = find_user(a, user);
    for (size_t i = 0; u != NULL && i < u->n_roles; i++) {
        const Kvdb__AuthRole *r = find_role(a, u->roles[i]);
        for (size_t k = 0; r != NULL && k < r->n_perms; k++) {
            if (perm_covers(r->perms[k], write, key.data, key.len, end.data, end.len)) {
                return true;
            }
        }
    }
    return false;
}

static bool txn_allowed(const Kvdb__AuthState *a,
                        const char *user,
                        const Kvdb__TxnRequest *t,
                        int depth)
{
    if (depth > SRV_MAX_TXN_DEPTH) {
        return false;
    }
    for (size_t i = 0; i < t->n_compare; i++) {
        if (!allowed(a, user, false, t->compare[i]->key, t->compare[i]->range_end)) {
            return false;
        }
    }
    for (int side = 0; side < 2; side++) {
        Kvdb__RequestOp **ops = side == 0 ? t->success : t->failure;
        size_t n = side == 0 ? t->n_success : t->n_failure;
        for (size_t i = 0; i < n; i++) {
            const Kvdb__RequestOp *o = ops[i];
            bool ok = true;
            ProtobufCBinaryData none = {0, NULL};
            switch (o->request_case) {
            case KVDB__REQUEST_OP__REQUEST_REQUEST_RANGE:
                ok = allowed(a, user, false, o->request_range->key, o->request_range->range_end);
                break;
            case KVDB__REQUEST_OP__REQUEST_REQUEST_PUT:
                ok = allowed(a, user, true, o->request_put->key, none);
                break;
            case KVDB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                ok = allowed(a, user, true, o->request_delete_range->key,
                             o->request_delete_range->range_end);
                break;
            case KVDB__REQUEST_OP__REQUEST_REQUEST_TXN:
                ok = txn_allowed(a, user, o->request_txn, depth + 1);
                break;
            default:
                break;
            }
            if (!ok) {
                return false;
            }
        }
    }
    return true;
}

/* May @user call @f?  Key methods check the keys against the user's roles; administration
 * needs root.  Bodies that do not decode pass here and fail later with their own error. */
static bool may(struct srv *s, const char *user, const Kvdb__Frame *f)
{
    const Kvdb__AuthState *a = s->auth;
    ProtobufCBinaryData none = {0, NULL};
    bool ok = true;
    switch (f->method) {
    case KVDB__METHOD__METHOD_RANGE: {
        Kvdb__RangeRequest *r = kvdb__range_request__unpack(NULL, f->body.len, f->body.data);
        if (r != NULL) {
            ok = allowed(a, user, false, r->key, r->range_end);
            kvdb__range_request__free_unpacked(r, NULL);
        }
        return ok;
    }
    case KVDB__METHOD__METHOD_PUT: {
        Kvdb__PutRequest *r = kvdb__put_request__unpack(NULL, f->body.len, f->body.data);
        if (r != NULL) {
            ok = allowed(a, user, true, r->key, none);
            kvdb__put_request__free_unpacked(r, NULL);
        }
        return ok;
    }
    case KVDB__METHOD__METHOD_DELETE_RANGE: {
        Kvdb__DeleteRangeRequest *r =
            kvdb__delete_range_request__unpack(NULL, f->body.len, f->body.data);
        if (r != NULL) {
            ok = allowed(a, user, true, r->key, r->range_end);
            kvdb__delete_range_request__free_unpacked(r, NULL);
        }
        return ok;
    }
    case KVDB__METHOD__METHOD_TXN: {
        if (pb_txn_depth(f->body.data, f->body.len, SRV_MAX_TXN_DEPTH) < 0) {
            return true; /* refused by the front door's own check */
        }
        Kvdb__TxnRequest *r = kvdb__txn_request__unpack(NULL, f->body.len, f->body.data);
        if (r != NULL) {
            ok = txn_allowed(a, user, r, 0);
            kvdb__txn_request__free_unpacked(r, NULL);
        }
        return ok;
    }
    case KVDB__METHOD__METHOD_WATCH: {
        Kvdb__WatchRequest *r = kvdb__watch_request__unpack(NULL, f->body.len, f->body.data);
        if (r != NULL &&
            r->request_union_case == KVDB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST) {
            ok = allowed(a, user, false, r->create_request->key, r->create_request->range_end);
        }
        if (r != NULL) {
            kvdb__watch_request__free_unpacked(r, NULL);
        }
        return ok;
    }
    case KVDB__METHOD__METHOD_STATUS:
    case KVDB__METHOD__METHOD_MEMBER_LIST:
    case KVDB__METHOD__METHOD_HASH_KV:
    case KVDB__METHOD__METHOD_AUTH_STATUS:
        return true;
    default:
        return is_root(a, user); /* compaction, membership, alarms, auth administration */
    }
}

/* Returns true when the request may go on; otherwise it was answered. */
bool srv_auth_check(struct srv_conn *c, const Kvdb__Frame *f)
{
    struct srv *s = c->s;
    if (s->auth == NULL || !s->auth->enabled || f->method == KVDB__METHOD__METHOD_AUTHENTICATE ||
        f->method == KVDB__METHOD__METHOD_STATUS || f->method == KVDB__METHOD__METHOD_AUTH_STATUS) {
        return true;
    }
    const char *user = f->token != NULL && f->token[0] != '\0' ? token_user(s, f->token) : NULL;
    if (user == NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__UNAUTHENTICATED,
                       f->token != NULL && f->token[0] != '\0'
                           ? "invalid auth token"
                           : "user name is empty: authenticate first",
                       NULL, 0);
        return false;
    }
    if (!may(s, user, f)) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__PERMISSION_DENIED,
                       "permission denied", NULL, 0);
        return false;
    }
    return true;
}

/* ---- the auth methods ---- */

static void reply(struct srv_conn *c, const Kvdb__Frame *f, const Kvdb__AuthResponse *r)
{
    size_t len = kvdb__auth_response__get_packed_size(r);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__RESOURCE_EXHAUSTED, "out of memory",
                       NULL, 0);
        return;
    }
    kvdb__auth_response__pack(r, buf);
    srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__OK, NULL, buf, len);
    free(buf);
}

static void authenticate(struct srv_conn *c, const Kvdb__Frame *f, const Kvdb__AuthRequest *r)
{
    struct srv *s = c->s;
    const Kvdb__AuthUser *u = find_user(s->auth, r->name);
    uint8_t hash[20];
    if (u != NULL) {
        srv_pbkdf2_sha1(r->password, u->salt.data, u->salt.len, PBKDF2_ROUNDS, hash);
    }
    if (s->auth == NULL || !s->auth->enabled) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__FAILED_PRECONDITION,
                       "authentication is not enabled", NULL, 0);
        return;
    }
    if (u == NULL || u->hash.len != 20 || memcmp(hash, u->hash.data, 20) != 0) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "authentication failed, invalid user ID or password", NULL, 0);
        return;
    }
    Kvdb__ResponseHeader h;
    srv_header(s, &h, atomic_load(&s->term_pub));
    Kvdb__AuthResponse resp;
    kvdb__auth_response__init(&resp);
    resp.header = &h;
    resp.enabled = true;
    resp.token = (char *)issue_token(s, u->name);
    if (resp.token == NULL) {
        resp.token = "";
    }
    reply(c, f, &resp);
}

static void list(struct srv_conn *c, const Kvdb__Frame *f, bool users)
{
    struct srv *s = c->s;
    Kvdb__ResponseHeader h;
    srv_header(s, &h, atomic_load(&s->term_pub));
    Kvdb__AuthResponse resp;
    kvdb__auth_response__init(&resp);
    resp.header = &h;
    resp.enabled = s->auth != NULL && s->auth->enabled;
    size_t n = s->auth == NULL ? 0 : users ? s->auth->n_users : s->auth->n_roles;
    char **names = calloc(n + 1, sizeof *names);
    for (size_t i = 0; names != NULL && i < n; i++) {
        names[i] = users ? s->auth->users[i]->name : s->auth->roles[i]->name;
    }
    if (f->method != KVDB__METHOD__METHOD_AUTH_STATUS && names != NULL) {
        if (users) {
            resp.users = names;
            resp.n_users = n;
        } else {
            resp.roles = names;
            resp.n_roles = n;
        }
    }
    reply(c, f, &resp);
    free(names);
}

/* Validate a change against the loop's copy (clear errors), then propose it. */
static void change(struct srv_conn *c, const Kvdb__Frame *f, const Kvdb__AuthRequest *r)
{
    struct srv *s = c->s;
    const Kvdb__AuthState *a = s->auth;
    Kvdb__AuthChange ch;
    kvdb__auth_change__init(&ch);
    ch.name = r->name;
    ch.role = r->role;
    uint8_t salt[16], hash[20];
    const char *err = NULL;
    switch (f->method) {
    case KVDB__METHOD__METHOD_AUTH_ENABLE:
        ch.op = KVDB__AUTH_CHANGE__OP__ENABLE;
        err = find_user(a, "root") == NULL ? "root user does not exist" : NULL;
        break;
    case KVDB__METHOD__METHOD_AUTH_DISABLE:
        ch.op = KVDB__AUTH_CHANGE__OP__DISABLE;
        break;
    case KVDB__METHOD__METHOD_USER_ADD:
    case KVDB__METHOD__METHOD_USER_CHANGE_PASSWORD:
        ch.op = f->method == KVDB__METHOD__METHOD_USER_ADD ? KVDB__AUTH_CHANGE__OP__USER_ADD
                                                           : KVDB__AUTH_CHANGE__OP__USER_PASSWORD;
        if (r->name[0] == '\0') {
            err = "user name is empty";
        } else if ((find_user(a, r->name) != NULL) == (ch.op == KVDB__AUTH_CHANGE__OP__USER_ADD)) {
            err = ch.op == KVDB__AUTH_CHANGE__OP__USER_ADD ? "user name already exists"
                                                           : "user name not found";
        } else if (r->password[0] == '\0') {
            err = "password is empty";
        }
        if (!random_bytes(salt, sizeof salt)) {
            err = "no randomness for a password salt";
        }
        srv_pbkdf2_sha1(r->password, salt, sizeof salt, PBKDF2_ROUNDS, hash);
        ch.salt.data = salt;
        ch.salt.len = sizeof salt;
        ch.hash.data = hash;
        ch.hash.len = sizeof hash;
        break;
    case KVDB__METHOD__METHOD_USER_DELETE:
        ch.op = KVDB__AUTH_CHANGE__OP__USER_DELETE;
        err = find_user(a, r->name) == NULL ? "user name not found" : NULL;
        break;
    case KVDB__METHOD__METHOD_USER_GRANT_ROLE:
    case KVDB__METHOD__METHOD_USER_REVOKE_ROLE:
        ch.op = f->method == KVDB__METHOD__METHOD_USER_GRANT_ROLE
                    ? KVDB__AUTH_CHANGE__OP__USER_GRANT
                    : KVDB__AUTH_CHANGE__OP__USER_REVOKE;
        err = find_user(a, r->name) == NULL   ? "user name not found"
              : find_role(a, r->role) == NULL ? "role name not found"
                                              : NULL;
        break;
    case KVDB__METHOD__METHOD_ROLE_ADD:
        ch.op = KVDB__AUTH_CHANGE__OP__ROLE_ADD;
        err = r->name[0] == '\0'              ? "role name is empty"
              : find_role(a, r->name) != NULL ? "role name already exists"
                                              : NULL;
        break;
    case KVDB__METHOD__METHOD_ROLE_DELETE:
        ch.op = KVDB__AUTH_CHANGE__OP__ROLE_DELETE;
        err = find_role(a, r->name) == NULL ? "role name not found" : NULL;
        break;
    case KVDB__METHOD__METHOD_ROLE_GRANT_PERMISSION:
        ch.op = KVDB__AUTH_CHANGE__OP__ROLE_GRANT;
        ch.perm = r->perm;
        err = find_role(a, r->name) == NULL ? "role name not found"
              : r->perm == NULL             ? "permission is not given"
                                            : NULL;
        break;
    default:
        err = "unknown auth method";
        break;
    }
    if (err != NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__FAILED_PRECONDITION, err, NULL, 0);
        return;
    }
    srv_kv_propose_auth(c, f, &ch);
}

void srv_auth_request(struct srv_conn *c, const Kvdb__Frame *f)
{
    Kvdb__AuthRequest *r = kvdb__auth_request__unpack(NULL, f->body.len, f->body.data);
    if (r == NULL) {
        srv_conn_reply(c, f->id, f->method, KVDB__ERROR_CODE__INVALID_ARGUMENT,
                       "malformed AuthRequest", NULL, 0);
        return;
    }
    switch (f->method) {
    case KVDB__METHOD__METHOD_AUTHENTICATE:
        authenticate(c, f, r);
        break;
    case KVDB__METHOD__METHOD_AUTH_STATUS:
    case KVDB__METHOD__METHOD_USER_LIST:
        list(c, f, true);
        break;
    case KVDB__METHOD__METHOD_ROLE_LIST:
        list(c, f, false);
        break;
    default:
        change(c, f, r);
        break;
    }
    kvdb__auth_request__free_unpacked(r, NULL);
}

/* The apply thread's reply to a change proposed here: an AuthResponse with the header. */
uint8_t *srv_auth_change_reply(struct srv *s, uint64_t term, size_t *len)
{
    Kvdb__ResponseHeader h;
    kvdb__response_header__init(&h);
    h.cluster_id = s->cfg.cluster_id;
    h.member_id = s->cfg.member_id;
    h.raft_term = term;
    h.revision = atomic_load(&s->revision);
    Kvdb__AuthResponse resp;
    kvdb__auth_response__init(&resp);
    resp.header = &h;
    resp.enabled = s->apply_auth != NULL && s->apply_auth->enabled;
    *len = kvdb__auth_response__get_packed_size(&resp);
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    if (buf != NULL) {
        kvdb__auth_response__pack(&resp, buf);
    }
    return buf;
}
