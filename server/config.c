/* Member configuration: flags, config file, derived IDs. */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *srv_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case c:            \
        return msg;
        SRV_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

int srv_url_parse(const char *s, struct srv_url *u)
{
    memset(u, 0, sizeof *u);
    if (strncmp(s, "http://", 7) == 0) {
        s += 7;
    }
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof u->host) {
        return SRV_EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port == 0 || port > 65535) {
        return SRV_EINVAL;
    }
    memcpy(u->host, s, (size_t)(colon - s));
    if (strcmp(u->host, "localhost") == 0) {
        strcpy(u->host, "127.0.0.1");
    }
    u->port = (uint16_t)port;
    snprintf(u->text, sizeof u->text, "http://%s:%u", u->host, (unsigned)u->port);
    return 0;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

uint64_t srv_member_id(const char *peer_url, const char *token)
{
    char buf[SRV_URL_MAX + SRV_NAME_MAX];
    int n = snprintf(buf, sizeof buf, "%s%s", peer_url, token);
    unsigned char h[20];
    srv_sha1(buf, (size_t)n, h);
    uint64_t id = be64(h);
    return id != 0 ? id : 1; /* 0 means "none" to raft */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t srv_cluster_id(const uint64_t *ids, size_t n)
{
    uint64_t sorted[SRV_MAX_MEMBERS];
    unsigned char buf[SRV_MAX_MEMBERS * 8];
    if (n > SRV_MAX_MEMBERS) {
        n = SRV_MAX_MEMBERS;
    }
    memcpy(sorted, ids, n * sizeof *ids);
    qsort(sorted, n, sizeof *sorted, cmp_u64);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 8; k++) {
            buf[i * 8 + (size_t)k] = (unsigned char)(sorted[i] >> (56 - 8 * k));
        }
    }
    unsigned char h[20];
    srv_sha1(buf, n * 8, h);
    return be64(h);
}

void srv_config_defaults(struct srv_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->name, "default");
    strcpy(c->data_dir, "default.kvdb");
    srv_url_parse("127.0.0.1:2380", &c->listen_peer);
    srv_url_parse("127.0.0.1:2379", &c->listen_client);
    strcpy(c->cluster_token, "kvdb-cluster");
    c->cluster_state = SRV_CLUSTER_NEW;
    /* Each snapshot flushes LevelDB's memtable and waits for LevelDB's background thread
     * (lsm_checkpoint): every 10,000 entries that was a stall every 0.15 s under 256 clients
     * (p99 66-91 ms); 50,000 gives p99 12 ms with the raft log memtable (the entries since the
     * last snapshot) at ~100 MiB peak RSS.  etcd 3.4 uses 100,000, etcd 3.6 10,000. */
    c->snapshot_count = 50000;
    c->snapshot_catchup = 5000;
    c->heartbeat_ms = 100;
    c->election_ms = 1000;
    c->max_request_bytes = 1536 * 1024;
    c->max_txn_ops = 128;
    c->max_key_bytes = 64 * 1024;
    c->compaction_mode = SRV_COMPACT_PERIODIC;
    c->compaction_retention = 0; /* off, as in etcd */
    c->compaction_interval_ms = 5 * 60 * 1000;
    c->corrupt_check_ms = 5 * 60 * 1000;
    c->initial_corrupt_check = false; /* as etcd: a false alarm at start was seen once (note) */
    c->quota_backend_bytes = 2ull << 30;
}

static int parse_u64(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*v == '-' || *v == '\0') {
        return SRV_EINVAL;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0') {
        return SRV_EINVAL;
    }
    *out = x;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *v)
{
    if (strlen(v) >= cap || *v == '\0') {
        return SRV_EINVAL;
    }
    strcpy(dst, v);
    return 0;
}

/* "name1=url1,name2=url2" */
static int parse_cluster(struct srv_config *c, const char *v)
{
    char buf[SRV_MAX_MEMBERS * (SRV_NAME_MAX + SRV_URL_MAX)];
    if (copy_str(buf, sizeof buf, v) != 0) {
        return SRV_EINVAL;
    }
    c->n_members = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL || c->n_members == SRV_MAX_MEMBERS) {
            return SRV_EINVAL;
        }
        *eq = '\0';
        struct srv_member *m = &c->members[c->n_members];
        if (copy_str(m->name, sizeof m->name, tok) != 0 || srv_url_parse(eq + 1, &m->peer) != 0) {
            return SRV_EINVAL;
        }
        c->n_members++;
    }
    return c->n_members > 0 ? 0 : SRV_EINVAL;
}

/* A duration: a number with a unit ("1h", "30m", "10s", "500ms") into *@ms, or a plain number
 * (*@plain set, *@ms the number as given: the caller knows its unit).  Errors: SRV_EINVAL. */
static int parse_duration(const char *v, uint64_t *ms, bool *plain)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno != 0 || end == v || x < 0) {
        return SRV_EINVAL;
    }
    *plain = *end == '\0';
    double scale = *plain                   ? 1
                   : strcmp(end, "h") == 0  ? 3600e3
                   : strcmp(end, "m") == 0  ? 60e3
                   : strcmp(end, "s") == 0  ? 1e3
                   : strcmp(end, "ms") == 0 ? 1
                                            : 0;
    if (scale == 0) {
        return SRV_EINVAL;
    }
    *ms = (uint64_t)(x * scale);
    return 0;
}

/* "0" (off), a plain number, or a duration with a unit.  A plain number means hours in periodic
 * mode (etcd) and revisions in revision mode; units are only for periodic mode.  Kept as given
 * and resolved in srv_config_finish (the mode may come later). */
static int parse_retention(struct srv_config *c, const char *v)
{
    return parse_duration(v, &c->compaction_retention, &c->retention_plain);
}

static int set_flag(struct srv_config *c, const char *k, const char *v)
{
    uint64_t x = 0;
    if (strcmp(k, "name") == 0) {
        return copy_str(c->name, sizeof c->name, v);
    } else if (strcmp(k, "data-dir") == 0) {
        return copy_str(c->data_dir, sizeof c->data_dir, v);
    } else if (strcmp(k, "listen-peer-urls") == 0) {
        return srv_url_parse(v, &c->listen_peer);
    } else if (strcmp(k, "listen-client-urls") == 0) {
        return srv_url_parse(v, &c->listen_client);
    } else if (strcmp(k, "initial-advertise-peer-urls") == 0) {
        return srv_url_parse(v, &c->advertise_peer);
    } else if (strcmp(k, "advertise-client-urls") == 0) {
        return srv_url_parse(v, &c->advertise_client);
    } else if (strcmp(k, "initial-cluster") == 0) {
        return parse_cluster(c, v);
    } else if (strcmp(k, "initial-cluster-token") == 0) {
        return copy_str(c->cluster_token, sizeof c->cluster_token, v);
    } else if (strcmp(k, "auto-compaction-mode") == 0) {
        if (strcmp(v, "periodic") == 0) {
            c->compaction_mode = SRV_COMPACT_PERIODIC;
        } else if (strcmp(v, "revision") == 0) {
            c->compaction_mode = SRV_COMPACT_REVISION;
        } else {
            return SRV_EINVAL;
        }
        return 0;
    } else if (strcmp(k, "auto-compaction-retention") == 0) {
        return parse_retention(c, v);
    } else if (strcmp(k, "corrupt-check-interval") == 0 ||
               strcmp(k, "experimental-corrupt-check-time") == 0) {
        bool plain;
        int rv = parse_duration(v, &c->corrupt_check_ms, &plain);
        if (rv == 0 && plain && c->corrupt_check_ms != 0) {
            c->corrupt_check_ms *= 1000; /* a plain number: seconds */
        }
        return rv;
    } else if (strcmp(k, "initial-corrupt-check") == 0 ||
               strcmp(k, "experimental-initial-corrupt-check") == 0) {
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
            return SRV_EINVAL;
        }
        c->initial_corrupt_check = strcmp(v, "true") == 0;
        return 0;
    } else if (strcmp(k, "initial-cluster-state") == 0) {
        if (strcmp(v, "new") == 0) {
            c->cluster_state = SRV_CLUSTER_NEW;
        } else if (strcmp(v, "existing") == 0) {
            c->cluster_state = SRV_CLUSTER_EXISTING;
        } else {
            return SRV_EINVAL;
        }
        return 0;
    }
    if (strcmp(k, "backend-compression") == 0) {
        if (strcmp(v, "none") == 0 || strcmp(v, "snappy") == 0) {
            c->backend_uncompressed = strcmp(v, "none") == 0;
            return 0;
        }
        return SRV_EINVAL;
    }
    if (parse_u64(v, &x) != 0) {
        return SRV_EINVAL;
    }
    if (strcmp(k, "snapshot-count") == 0 && x > 0) {
        c->snapshot_count = x;
    } else if (strcmp(k, "snapshot-catchup-entries") == 0) {
        c->snapshot_catchup = x;
    } else if (strcmp(k, "heartbeat-interval") == 0 && x > 0 && x < 60000) {
        c->heartbeat_ms = (unsigned)x;
    } else if (strcmp(k, "election-timeout") == 0 && x > 0 && x < 600000) {
        c->election_ms = (unsigned)x;
    } else if (strcmp(k, "max-request-bytes") == 0 && x > 0 && x <= (64u << 20)) {
        c->max_request_bytes = (size_t)x;
    } else if (strcmp(k, "max-txn-ops") == 0 && x > 0) {
        c->max_txn_ops = (size_t)x;
    } else if (strcmp(k, "max-key-bytes") == 0 && x > 0 && x <= (1u << 20)) {
        c->max_key_bytes = (size_t)x;
    } else if (strcmp(k, "auto-compaction-interval") == 0 && x > 0) {
        c->compaction_interval_ms = x;
    } else if (strcmp(k, "quota-backend-bytes") == 0) {
        c->quota_backend_bytes = x;
    } else {
        return SRV_EINVAL;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
        s[n - 1] = '\0';
        s++;
    }
    return s;
}

static int read_file(struct srv_config *c, const char *path, char *errmsg, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(errmsg, errlen, "config file %s: %s", path, strerror(errno));
        return SRV_EINVAL;
    }
    char line[8192];
    int lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *s = trim(line);
        if (*s == '\0') {
            continue;
        }
        char *colon = strchr(s, ':');
        if (colon == NULL) {
            snprintf(errmsg, errlen, "config file %s:%d: expected 'flag: value'", path, lineno);
            fclose(f);
            return SRV_EINVAL;
        }
        *colon = '\0';
        char *k = trim(s), *v = trim(colon + 1);
        if (set_flag(c, k, v) != 0) {
            snprintf(errmsg, errlen, "config file %s:%d: bad value for %s: '%s'", path, lineno, k,
                     v);
            fclose(f);
            return SRV_EINVAL;
        }
    }
    fclose(f);
    return 0;
}

int srv_config_parse(struct srv_config *c, int argc, char **argv, char *errmsg, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(errmsg, errlen, "unexpected argument '%s'", a);
            return SRV_EINVAL;
        }
        char key[64];
        const char *val;
        const char *eq = strchr(a + 2, '=');
        size_t klen = eq != NULL ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen >= sizeof key) {
            snprintf(errmsg, errlen, "unknown flag '%s'", a);
            return SRV_EINVAL;
        }
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        if (eq != NULL) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(errmsg, errlen, "flag --%s needs a value", key);
            return SRV_EINVAL;
        }
        int rv = strcmp(key, "config-file") == 0 ? read_file(c, val, errmsg, errlen)
                                                 : set_flag(c, key, val);
        if (rv != 0) {
            if (strcmp(key, "config-file") != 0) {
                snprintf(errmsg, errlen, "bad or unknown flag --%s '%s' (see --help)", key, val);
            }
            return rv;
        }
    }
    return srv_config_finish(c, errmsg, errlen);
}

int srv_config_finish(struct srv_config *c, char *errmsg, size_t errlen)
{
    if (c->retention_plain && c->compaction_mode == SRV_COMPACT_PERIODIC) {
        c->compaction_retention *= 3600000; /* hours, as etcd reads a plain number */
        c->retention_plain = false;
    } else if (!c->retention_plain && c->compaction_mode == SRV_COMPACT_REVISION &&
               c->compaction_retention != 0) {
        snprintf(errmsg, errlen, "--auto-compaction-retention in revision mode is a count");
        return SRV_EINVAL;
    }
    if (c->advertise_peer.port == 0) {
        c->advertise_peer = c->listen_peer;
    }
    if (c->advertise_client.port == 0) {
        c->advertise_client = c->listen_client;
    }
    if (c->n_members == 0) {
        snprintf(c->members[0].name, sizeof c->members[0].name, "%s", c->name);
        c->members[0].peer = c->advertise_peer;
        c->n_members = 1;
    }
    if (c->heartbeat_ms * 5 > c->election_ms) {
        snprintf(errmsg, errlen,
                 "--election-timeout (%u ms) must be at least 5x --heartbeat-interval (%u ms)",
                 c->election_ms, c->heartbeat_ms);
        return SRV_EINVAL;
    }
    uint64_t ids[SRV_MAX_MEMBERS];
    bool found = false;
    for (size_t i = 0; i < c->n_members; i++) {
        struct srv_member *m = &c->members[i];
        m->id = srv_member_id(m->peer.text, c->cluster_token);
        ids[i] = m->id;
        for (size_t k = 0; k < i; k++) {
            if (ids[k] == m->id || strcmp(c->members[k].name, m->name) == 0) {
                snprintf(errmsg, errlen, "--initial-cluster lists %s twice", m->name);
                return SRV_EINVAL;
            }
        }
        if (strcmp(m->name, c->name) == 0) {
            if (strcmp(m->peer.text, c->advertise_peer.text) != 0) {
                snprintf(errmsg, errlen,
                         "--initial-cluster has %s=%s but this member advertises %s", m->name,
                         m->peer.text, c->advertise_peer.text);
                return SRV_EINVAL;
            }
            c->member_id = m->id;
            found = true;
        }
    }
    if (!found) {
        snprintf(errmsg, errlen, "--initial-cluster does not list this member (--name %s)",
                 c->name);
        return SRV_EINVAL;
    }
    c->cluster_id = srv_cluster_id(ids, c->n_members);
    return 0;
}

void srv_config_usage(void *out)
{
    fprintf(
        (FILE *)out,
        "flags (--flag value or --flag=value):\n"
        "  --name NAME                        member name (default)\n"
        "  --data-dir DIR                     data directory (default.kvdb)\n"
        "  --listen-peer-urls URL             peer listener (http://127.0.0.1:2380)\n"
        "  --listen-client-urls URL           client listener (http://127.0.0.1:2379)\n"
        "  --initial-advertise-peer-urls URL  peer URL others use (listen-peer-urls)\n"
        "  --advertise-client-urls URL        client URL others use (listen-client-urls)\n"
        "  --initial-cluster N=URL,...        initial members (this member alone)\n"
        "  --initial-cluster-token TOKEN      cluster token (kvdb-cluster)\n"
        "  --initial-cluster-state new|existing (new)\n"
        "  --snapshot-count N                 applied entries per snapshot (50000)\n"
        "  --snapshot-catchup-entries N       log kept behind a snapshot (5000)\n"
        "  --heartbeat-interval MS            (100)\n"
        "  --election-timeout MS              (1000)\n"
        "  --max-request-bytes N              (1572864)\n"
        "  --max-txn-ops N                    (128)\n"
        "  --max-key-bytes N                  (65536)\n"
        "  --quota-backend-bytes N            (2147483648)\n"
        "  --corrupt-check-interval D         members compare HashKV through the log every D\n"
        "                                     (5m; 0 = off; also "
        "--experimental-corrupt-check-time)\n"
        "  --initial-corrupt-check true|false report this member's HashKV once at start (false)\n"
        "  --backend-compression none|snappy  new store tables (snappy)\n"
        "  --auto-compaction-mode periodic|revision (periodic)\n"
        "  --auto-compaction-retention R      0 = off; periodic: 1h, 30m, 10s (a plain\n"
        "                                     number is hours); revision: a count\n"
        "  --auto-compaction-interval MS      how often revision mode checks (300000)\n"
        "  --config-file PATH                 'flag: value' lines, read in place\n");
}
