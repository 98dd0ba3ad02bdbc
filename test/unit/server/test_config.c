/* Configuration: flags, config file, SHA-1 vectors, derived IDs and the member registry file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/config.h"
#include "server/srv_int.h"

static void hex(const unsigned char *h, char *out)
{
    for (int i = 0; i < 20; i++) {
        sprintf(out + 2 * i, "%02x", h[i]);
    }
}

/* FIPS 180 example vectors. */
static void sha1_vectors(void **state)
{
    (void)state;
    unsigned char h[20];
    char s[41];
    srv_sha1("abc", 3, h);
    hex(h, s);
    assert_string_equal(s, "a9993e364706816aba3e25717850c26c9cd0d89d");
    srv_sha1("", 0, h);
    hex(h, s);
    assert_string_equal(s, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    srv_sha1(m, strlen(m), h);
    hex(h, s);
    assert_string_equal(s, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    srv_sha1(a, 1000000, h);
    hex(h, s);
    assert_string_equal(s, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(a);
}

/* RFC 6070 PBKDF2-HMAC-SHA1 vectors. */
static void pbkdf2_vectors(void **state)
{
    (void)state;
    unsigned char h[20];
    char s[41];
    srv_pbkdf2_sha1("password", (const uint8_t *)"salt", 4, 1, h);
    hex(h, s);
    assert_string_equal(s, "0c60c80f961f0e71f3a9b524af6012062fe037a6");
    srv_pbkdf2_sha1("password", (const uint8_t *)"salt", 4, 4096, h);
    hex(h, s);
    assert_string_equal(s, "4b007901b765489abead49d926f721d065a429c1");
}

static int parse(struct srv_config *c, char *errmsg, const char *const *args, int n)
{
    char *argv[32];
    argv[0] = "kvdb";
    for (int i = 0; i < n; i++) {
        argv[i + 1] = (char *)args[i];
    }
    srv_config_defaults(c);
    return srv_config_parse(c, n + 1, argv, errmsg, 256);
}

static void defaults_make_a_single_member(void **state)
{
    (void)state;
    struct srv_config c;
    char err[256] = "";
    assert_int_equal(parse(&c, err, NULL, 0), 0);
    assert_string_equal(c.name, "default");
    assert_int_equal(c.n_members, 1);
    assert_int_equal(c.listen_client.port, 2379);
    assert_string_equal(c.advertise_peer.text, "http://127.0.0.1:2380");
    assert_true(c.member_id == srv_member_id("http://127.0.0.1:2380", "kvdb-cluster"));
    assert_true(c.cluster_id == srv_cluster_id(&c.member_id, 1));
    assert_true(c.member_id != 0);
    assert_false(c.backend_uncompressed);
    const char *none[] = {"--backend-compression", "none"};
    assert_int_equal(parse(&c, err, none, 2), 0);
    assert_true(c.backend_uncompressed);
}

static void three_members_share_ids(void **state)
{
    (void)state;
    const char *cluster =
        "--initial-cluster=a=http://127.0.0.1:12380,b=127.0.0.1:22380,"
        "c=http://localhost:32380";
    const char *argsa[] = {"--name",
                           "a",
                           "--listen-peer-urls",
                           "http://127.0.0.1:12380",
                           cluster,
                           "--initial-cluster-token",
                           "tok"};
    const char *argsc[] = {"--name=c",
                           "--listen-peer-urls=127.0.0.1:32380",
                           cluster,
                           "--initial-cluster-token=tok",
                           "--initial-cluster-state",
                           "existing"};
    struct srv_config a, c;
    char err[256] = "";
    assert_int_equal(parse(&a, err, argsa, 7), 0);
    assert_int_equal(parse(&c, err, argsc, 6), 0);
    assert_int_equal(a.n_members, 3);
    assert_true(a.cluster_id == c.cluster_id);
    assert_true(a.member_id != c.member_id);
    assert_true(a.members[2].id == c.member_id);
    assert_string_equal(c.members[2].peer.host, "127.0.0.1");
    assert_int_equal(c.cluster_state, SRV_CLUSTER_EXISTING);
    /* Another token is another cluster. */
    const char *argsb[] = {"--name",
                           "a",
                           "--listen-peer-urls",
                           "http://127.0.0.1:12380",
                           cluster,
                           "--initial-cluster-token",
                           "other"};
    struct srv_config b;
    assert_int_equal(parse(&b, err, argsb, 7), 0);
    assert_true(b.cluster_id != a.cluster_id);
}

static void bad_flags_name_the_problem(void **state)
{
    (void)state;
    struct srv_config c;
    char err[256];
    const char *unknown[] = {"--no-such-flag", "1"};
    assert_int_equal(parse(&c, err, unknown, 2), SRV_EINVAL);
    assert_non_null(strstr(err, "--no-such-flag"));
    const char *port[] = {"--listen-client-urls", "http://127.0.0.1:99999"};
    assert_int_equal(parse(&c, err, port, 2), SRV_EINVAL);
    assert_non_null(strstr(err, "listen-client-urls"));
    const char *missing[] = {"--name"};
    assert_int_equal(parse(&c, err, missing, 1), SRV_EINVAL);
    assert_non_null(strstr(err, "needs a value"));
    const char *notlisted[] = {"--name", "x", "--initial-cluster", "a=127.0.0.1:1"};
    assert_int_equal(parse(&c, err, notlisted, 4), SRV_EINVAL);
    assert_non_null(strstr(err, "does not list"));
    const char *timeouts[] = {"--heartbeat-interval", "500", "--election-timeout", "1000"};
    assert_int_equal(parse(&c, err, timeouts, 4), SRV_EINVAL);
    assert_non_null(strstr(err, "election-timeout"));
    const char *neg[] = {"--snapshot-count", "-5"};
    assert_int_equal(parse(&c, err, neg, 2), SRV_EINVAL);
    const char *codec[] = {"--backend-compression", "lz4"};
    assert_int_equal(parse(&c, err, codec, 2), SRV_EINVAL);
    assert_non_null(strstr(err, "backend-compression"));
}

static void config_file_is_read_in_place(void **state)
{
    (void)state;
    char path[] = "/tmp/kvdb-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text =
        "# a member\nname: m1\nsnapshot-count: 500   # small\n"
        "listen-client-urls: \"http://127.0.0.1:5555\"\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct srv_config c;
    char err[256];
    const char *args[] = {"--config-file", path, "--snapshot-count", "700"};
    assert_int_equal(parse(&c, err, args, 4), 0);
    assert_string_equal(c.name, "m1");
    assert_int_equal(c.snapshot_count, 700); /* the later flag wins */
    assert_int_equal(c.listen_client.port, 5555);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("name m1\n", f);
    fclose(f);
    assert_int_equal(parse(&c, err, args, 2), SRV_EINVAL);
    assert_non_null(strstr(err, ":1:"));
    unlink(path);
}

/* The registry file (member/members, and MEMBERS in snapshots) reads every format it has had:
 * "id name peer", then "id name peer removed", now "id name peer client|- [removed]". */
static void member_registry_formats(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvdb-members-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/members", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(
        "000000000000000a old http://127.0.0.1:1001\n"
        "000000000000000b gone http://127.0.0.1:1002 removed\n"
        "000000000000000c new http://127.0.0.1:1003 http://127.0.0.1:2003\n"
        "000000000000000d - http://127.0.0.1:1004 - removed\n"
        "garbage\n",
        f);
    fclose(f);
    struct srv_member v[SRV_MAX_MEMBERS];
    size_t n = 0;
    assert_int_equal(srv_members_load(path, v, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].name, "old");
    assert_false(v[0].removed);
    assert_int_equal(v[0].client.port, 0);
    assert_true(v[1].removed);
    assert_int_equal(v[1].client.port, 0);
    assert_false(v[2].removed);
    assert_string_equal(v[2].client.text, "http://127.0.0.1:2003");
    assert_string_equal(v[3].name, "");
    assert_true(v[3].removed);
    assert_int_equal(v[3].client.port, 0);
    /* A save reads back the same. */
    assert_int_equal(srv_members_save(path, v, n), 0);
    struct srv_member w[SRV_MAX_MEMBERS];
    size_t m = 0;
    assert_int_equal(srv_members_load(path, w, &m), 0);
    assert_int_equal(m, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(w[i].id == v[i].id);
        assert_string_equal(w[i].name, v[i].name);
        assert_string_equal(w[i].peer.text, v[i].peer.text);
        assert_int_equal(w[i].client.port, v[i].client.port);
        assert_true(w[i].removed == v[i].removed);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sha1_vectors),
        cmocka_unit_test(pbkdf2_vectors),
        cmocka_unit_test(defaults_make_a_single_member),
        cmocka_unit_test(three_members_share_ids),
        cmocka_unit_test(bad_flags_name_the_problem),
        cmocka_unit_test(config_file_is_read_in_place),
        cmocka_unit_test(member_registry_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
