/* Member configuration: flags and config file in etcd's spirit, and the derived member and
 * cluster IDs. */
#ifndef KV_SERVER_CONFIG_H
#define KV_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes of the srv_ module (STYLE.md §3: 500-599). */
#define SRV_ERRORS(X)                               \
    X(SRV_ENOMEM, 500, "out of memory")             \
    X(SRV_EINVAL, 501, "invalid configuration")     \
    X(SRV_EIO, 502, "I/O error")                    \
    X(SRV_ECLUSTER, 503, "cluster mismatch")        \
    X(SRV_ESTOPPED, 504, "server stopped")          \
    X(SRV_ENOSPACE, 505, "database space exceeded") \
    X(SRV_ECORRUPT, 506, "corrupt cluster")

enum srv_err {
#define X(code, num, msg) code = num,
    SRV_ERRORS(X)
#undef X
};

/* The message for @code, or "unknown error". */
const char *srv_strerror(int code);

#define SRV_MAX_MEMBERS 64
#define SRV_NAME_MAX 64
#define SRV_URL_MAX 128

/* A host:port endpoint parsed from "http://host:port" or "host:port". */
struct srv_url
{
    char text[SRV_URL_MAX];      /* normalised "http://host:port" */
    char host[SRV_URL_MAX - 16]; /* room for "http://" and ":port" in text */
    uint16_t port;
};

/* One member of --initial-cluster. */
struct srv_member
{
    char name[SRV_NAME_MAX];
    struct srv_url peer; /* first peer URL: the one the ID is derived from */
    uint64_t id;
    bool removed; /* registry: a configuration change removed it (told so if it calls) */
    struct srv_url
        client; /* registry: its advertised client URL once published (port 0: not yet) */
};

enum srv_cluster_state { SRV_CLUSTER_NEW = 1, SRV_CLUSTER_EXISTING };

enum srv_compaction_mode { SRV_COMPACT_PERIODIC = 1, SRV_COMPACT_REVISION };

struct srv_config
{
    char name[SRV_NAME_MAX];                    /* --name */
    char data_dir[512];                         /* --data-dir */
    struct srv_url listen_peer;                 /* --listen-peer-urls */
    struct srv_url listen_client;               /* --listen-client-urls */
    struct srv_url advertise_peer;              /* --initial-advertise-peer-urls */
    struct srv_url advertise_client;            /* --advertise-client-urls */
    struct srv_member members[SRV_MAX_MEMBERS]; /* --initial-cluster */
    size_t n_members;
    char cluster_token[SRV_NAME_MAX];         /* --initial-cluster-token */
    enum srv_cluster_state cluster_state;     /* --initial-cluster-state */
    uint64_t snapshot_count;                  /* --snapshot-count */
    uint64_t snapshot_catchup;                /* --snapshot-catchup-entries */
    unsigned heartbeat_ms;                    /* --heartbeat-interval */
    unsigned election_ms;                     /* --election-timeout */
    size_t max_request_bytes;                 /* --max-request-bytes */
    size_t max_txn_ops;                       /* --max-txn-ops */
    size_t max_key_bytes;                     /* --max-key-bytes */
    enum srv_compaction_mode compaction_mode; /* --auto-compaction-mode */
    uint64_t compaction_retention;   /* --auto-compaction-retention: ms (periodic) or revs */
    uint64_t compaction_interval_ms; /* --auto-compaction-interval (revision mode checks) */
    bool retention_plain;            /* parsing: retention given without a unit */
    uint64_t quota_backend_bytes;    /* --quota-backend-bytes */
    uint64_t corrupt_check_ms;       /* --corrupt-check-interval (0: off) */
    bool initial_corrupt_check;      /* --initial-corrupt-check: report our hash once at start */
    bool backend_uncompressed;       /* --backend-compression none (default snappy) */
    uint64_t member_id;              /* derived: this member's ID */
    uint64_t cluster_id;             /* derived: from the member IDs */
};

/* Fill @c with the defaults of a single local member: name "default", data dir
 * "default.kvdb", peers on 127.0.0.1:2380, clients on 127.0.0.1:2379. */
void srv_config_defaults(struct srv_config *c);

/* Parse command-line flags (argv[1..argc-1], "--flag value" or "--flag=value") into @c, which
 * holds defaults.  "--config-file PATH" reads "flag: value" lines (YAML-like, '#' comments) at
 * that point; later flags override.  Then derives the IDs (srv_config_finish).
 * Errors: SRV_EINVAL with @errmsg naming the flag and the problem.  Any thread. */
int srv_config_parse(struct srv_config *c, int argc, char **argv, char *errmsg, size_t errlen);

/* Validate @c and derive member_id and cluster_id: fills members from --initial-cluster (or this
 * member alone), checks this member is listed under its name with its advertised peer URL.
 * Errors: SRV_EINVAL with @errmsg. */
int srv_config_finish(struct srv_config *c, char *errmsg, size_t errlen);

/* Parse "http://host:port" or "host:port" into @u.  Errors: SRV_EINVAL. */
int srv_url_parse(const char *s, struct srv_url *u);

/* etcd's member ID: the first 8 bytes (big-endian) of SHA-1(peer URL || cluster token).  Stable
 * across restarts and replacements at the same URL. */
uint64_t srv_member_id(const char *peer_url, const char *token);

/* The cluster ID: the first 8 bytes of SHA-1 over the sorted member IDs (8 bytes each, BE). */
uint64_t srv_cluster_id(const uint64_t *ids, size_t n);

/* SHA-1 of @n bytes at @data into @out (20 bytes).  Used for IDs only, not for security. */
void srv_sha1(const void *data, size_t n, unsigned char out[20]);

/* PBKDF2-HMAC-SHA1 (RFC 8018) of @password with @salt (at most 64 bytes used) over @rounds,
 * one 20-byte block into @out.  For stored auth passwords.  Any thread. */
void srv_pbkdf2_sha1(const char *password,
                     const uint8_t *salt,
                     size_t salt_len,
                     unsigned rounds,
                     uint8_t out[20]);

/* Print the flag list with defaults to @out (for --help). */
void srv_config_usage(void *out);

#endif /* KV_SERVER_CONFIG_H */
