/* Auth through embedded members: enabling needs root, requests need a token, roles limit keys,
 * tokens are per member (the client logs in again after failing over), the state is replicated
 * to every member and survives a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test/unit/server/fixture.h"

static int auth_call(struct kvc *k,
                     Kvdb__Method m,
                     const char *name,
                     const char *pw,
                     const char *role,
                     Kvdb__Permission *perm)
{
    Kvdb__AuthRequest r;
    kvdb__auth_request__init(&r);
    r.name = (char *)(name != NULL ? name : "");
    r.password = (char *)(pw != NULL ? pw : "");
    r.role = (char *)(role != NULL ? role : "");
    r.perm = perm;
    return sf_call(k, m, &r.base, &kvdb__auth_response__descriptor);
}

static int put(struct kvc *k, const char *key)
{
    Kvdb__PutResponse *r = NULL;
    int rv = kvc_put(k, key, strlen(key), "v", 1, &r);
    if (r != NULL) {
        kvdb__put_response__free_unpacked(r, NULL);
    }
    return rv;
}

static int get(struct kvc *k, const char *key)
{
    Kvdb__RangeResponse *r = NULL;
    int rv = kvc_get(k, key, strlen(key), false, &r);
    if (r != NULL) {
        kvdb__range_response__free_unpacked(r, NULL);
    }
    return rv;
}

static void users_roles_and_tokens(void **state)
{
    (void)state;
    struct srv_embed_opts o = {.members = 3};
    struct srv_embed *c = sf_start(&o, NULL);
    struct kvc *admin = sf_client(srv_embed_endpoints(c), 15000);

    /* Enabling needs the root user first. */
    assert_int_equal(auth_call(admin, KVDB__METHOD__METHOD_AUTH_ENABLE, NULL, NULL, NULL, NULL),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(admin), KVDB__ERROR_CODE__FAILED_PRECONDITION);
    assert_int_equal(auth_call(admin, KVDB__METHOD__METHOD_USER_ADD, "root", "rootpw", NULL, NULL),
                     0);
    assert_int_equal(auth_call(admin, KVDB__METHOD__METHOD_ROLE_ADD, "app", NULL, NULL, NULL), 0);
    Kvdb__Permission perm;
    kvdb__permission__init(&perm);
    perm.permtype = KVDB__PERMISSION__TYPE__READWRITE;
    perm.key.data = (uint8_t *)"app/";
    perm.key.len = 4;
    perm.range_end.data = (uint8_t *)"app0"; /* the prefix app/ */
    perm.range_end.len = 4;
    assert_int_equal(
        auth_call(admin, KVDB__METHOD__METHOD_ROLE_GRANT_PERMISSION, "app", NULL, NULL, &perm), 0);
    assert_int_equal(auth_call(admin, KVDB__METHOD__METHOD_USER_ADD, "alice", "pw", NULL, NULL), 0);
    assert_int_equal(
        auth_call(admin, KVDB__METHOD__METHOD_USER_GRANT_ROLE, "alice", NULL, "app", NULL), 0);
    assert_int_equal(auth_call(admin, KVDB__METHOD__METHOD_AUTH_ENABLE, NULL, NULL, NULL, NULL), 0);

    /* Without a token: refused. */
    assert_int_equal(put(admin, "app/x"), KVC_ESERVER);
    assert_int_equal(kvc_server_code(admin), KVDB__ERROR_CODE__UNAUTHENTICATED);
    kvc_close(admin);

    /* A wrong password is refused. */
    struct kvc *bad = sf_client(srv_embed_endpoints(c), 15000);
    assert_int_equal(kvc_authenticate(bad, "alice", "nope"), KVC_ESERVER);
    kvc_close(bad);

    /* alice: her prefix only. */
    struct kvc *alice = sf_client(srv_embed_endpoints(c), 15000);
    assert_int_equal(kvc_authenticate(alice, "alice", "pw"), 0);
    assert_int_equal(put(alice, "app/x"), 0);
    assert_int_equal(get(alice, "app/x"), 0);
    assert_int_equal(put(alice, "other"), KVC_ESERVER);
    assert_int_equal(kvc_server_code(alice), KVDB__ERROR_CODE__PERMISSION_DENIED);
    assert_int_equal(get(alice, "other"), KVC_ESERVER);
    /* Administration needs root. */
    assert_int_equal(auth_call(alice, KVDB__METHOD__METHOD_ROLE_ADD, "x", NULL, NULL, NULL),
                     KVC_ESERVER);
    assert_int_equal(kvc_server_code(alice), KVDB__ERROR_CODE__PERMISSION_DENIED);

    /* Tokens are per member: after the member she talks to stops, the client fails over and
     * logs in again by itself. */
    srv_embed_stop(c, 0);
    assert_true(srv_embed_wait_leader(c, 10000) >= 0);
    assert_int_equal(put(alice, "app/after-failover"), 0);
    kvc_close(alice);

    /* The state is replicated and survives a restart. */
    char err[256];
    assert_int_equal(srv_embed_restart(c, 0, err), 0);
    struct kvc *m0 = sf_client(srv_embed_endpoint(c, 0), 15000);
    assert_int_equal(get(m0, "app/x"), KVC_ESERVER); /* still enabled there */
    assert_int_equal(kvc_server_code(m0), KVDB__ERROR_CODE__UNAUTHENTICATED);
    assert_int_equal(kvc_authenticate(m0, "root", "rootpw"), 0);
    assert_int_equal(get(m0, "app/after-failover"), 0);
    assert_int_equal(auth_call(m0, KVDB__METHOD__METHOD_AUTH_DISABLE, NULL, NULL, NULL, NULL), 0);
    kvc_close(m0);
    struct kvc *anyone = sf_client(srv_embed_endpoints(c), 15000);
    assert_int_equal(put(anyone, "open-again"), 0);
    kvc_close(anyone);
    srv_embed_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(users_roles_and_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
