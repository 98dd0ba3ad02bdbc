/* kvdb-snapshot: export, import and inspect snapshots (etcdutl snapshot save/restore/status).
 *
 * A snapshot is a directory: the LevelDB table files of the store at one applied index plus a
 * MANIFEST (snapshot/FORMAT.md) with index, term, membership, revision and a checksum per file:
 * the same directories the member keeps in <data-dir>/member/snap/ and streams to followers. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/kvc.h"
#include "lsm/lsm.h"
#include "server/config.h"
#include "server/srv.h"
#include "snapshot/snapshot.h"
#include "wal/wal.h"

static bool tty;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One step of work: a progress bar on a terminal, a plain line otherwise. */
static void progress(const char *what, size_t done, size_t total)
{
    if (tty) {
        int width = 30, filled = total > 0 ? (int)(done * (size_t)width / total) : width;
        fprintf(stderr, "\r%-28s [%.*s%*s] %zu/%zu", what, filled,
                "==============================", width - filled, "", done, total);
        if (done == total) {
            fputc('\n', stderr);
        }
    } else if (done == total) {
        fprintf(stderr, "%s: %zu/%zu done\n", what, done, total);
    }
}

/* The file names of @dir except MANIFEST and LevelDB's bookkeeping of a checkpoint. */
static int list_tables(const char *dir, char ***out, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    char **v = NULL;
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        /* MEMBERS: the old cluster's addresses; a restore describes a new membership. */
        if (de->d_name[0] == '.' || strcmp(de->d_name, SNAP_MANIFEST_NAME) == 0 ||
            strcmp(de->d_name, "MEMBERS") == 0) {
            continue;
        }
        char **nv = realloc(v, (*n + 1) * sizeof *v);
        if (nv == NULL) {
            break;
        }
        v = nv;
        v[(*n)++] = strdup(de->d_name);
    }
    closedir(d);
    *out = v;
    return 0;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Verify every file's size and crc32c against the manifest, with progress. */
static int verify_files(const char *dir, struct snap_manifest *m, char *err)
{
    int rv = snap_verify(dir, m, err);
    progress("verifying checksums", rv == 0 ? m->n_files : 0, rv == 0 ? m->n_files : 1);
    return rv;
}

static int read_voters(const char *member_dir, uint64_t *voters, uint32_t *n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/member", member_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    int version;
    uint64_t cid, mid, id;
    *n = 0;
    if (fscanf(f, "kvdb-member %d\n%" SCNx64 " %" SCNx64, &version, &cid, &mid) == 3) {
        while (*n < 64 && fscanf(f, "%" SCNx64, &id) == 1) {
            voters[(*n)++] = id;
        }
    }
    fclose(f);
    return *n > 0 ? 0 : -1;
}

/* save: a stopped member's data dir -> a snapshot directory @out. */
static int cmd_save(const char *data_dir, const char *out)
{
    char member[PATH_MAX], db[PATH_MAX], tmp[PATH_MAX], root[PATH_MAX], err[256] = "";
    snprintf(member, sizeof member, "%s/member", data_dir);
    snprintf(db, sizeof db, "%s/db", member);
    snprintf(root, sizeof root, "%s.tmp-root", out);
    snprintf(tmp, sizeof tmp, "%s.tmp-checkpoint", out);
    struct stat sb;
    if (stat(out, &sb) == 0) {
        fprintf(stderr, "kvdb-snapshot: %s already exists\n", out);
        return 1;
    }
    uint64_t voters[64];
    uint32_t n_voters = 0;
    if (read_voters(member, voters, &n_voters) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s is not a kvdb data dir (no member file)\n", data_dir);
        return 1;
    }
    double t0 = now_s();
    struct lsm_store *s = NULL;
    struct lsm_options lo;
    lsm_options_default(&lo);
    int rv = lsm_open(db, &lo, &s, err);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapshot: open %s: %s: %s (is the member still running?)\n", db,
                lsm_strerror(rv), err);
        return 1;
    }
    struct lsm_status st;
    srv_remove_tree(tmp);
    rv = lsm_checkpoint(s, tmp, &st);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapshot: checkpoint: %s: %s\n", lsm_strerror(rv), lsm_errmsg(s));
        lsm_close(s);
        return 1;
    }
    lsm_close(s);
    char **names = NULL;
    size_t n = 0;
    list_tables(tmp, &names, &n);
    struct snap_meta meta = {.index = st.applied_index,
                             .term = st.applied_term,
                             .revision = (uint64_t)st.revision,
                             .compact_revision = (uint64_t)st.compact_revision,
                             .voters = voters,
                             .n_voters = n_voters};
    struct snap_manifest m;
    srv_remove_tree(root);
    mkdir(root, 0700);
    char serr[SNAP_ERRMSG_SIZE] = "";
    rv = snap_create(root, &meta, tmp, (const char *const *)names, n, &m, serr);
    free_names(names, n);
    srv_remove_tree(tmp);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapshot: %s\n", serr);
        srv_remove_tree(root);
        return 1;
    }
    char made[PATH_MAX], name[64];
    snap_dir_name(meta.index, meta.term, name, sizeof name);
    snprintf(made, sizeof made, "%s/%s", root, name);
    if (rename(made, out) != 0) {
        fprintf(stderr, "kvdb-snapshot: rename to %s: %s\n", out, strerror(errno));
        snap_manifest_fini(&m);
        srv_remove_tree(root);
        return 1;
    }
    srv_remove_tree(root);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < m.n_files; i++) {
        bytes += m.files[i].size;
    }
    printf("saved snapshot at index %" PRIu64 " term %" PRIu64 " revision %" PRId64
           " to %s: %u files, %" PRIu64 " bytes, %.3f s\n",
           meta.index, meta.term, st.revision, out, m.n_files, bytes, now_s() - t0);
    snap_manifest_fini(&m);
    return 0;
}

/* save --endpoints: a running member takes a fresh snapshot and streams it here as an archive
 * (the same as `kvctl snapshot save`). */
static int cmd_save_online(const char *endpoints, const char *out)
{
    struct kvc *c;
    char err[256];
    struct kvc_options o = {.request_timeout_ms = 600000};
    if (kvc_open(endpoints, &o, &c, err) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s\n", err);
        return 1;
    }
    char part[PATH_MAX];
    snprintf(part, sizeof part, "%s.part", out);
    FILE *f = fopen(part, "wb");
    if (f == NULL) {
        fprintf(stderr, "kvdb-snapshot: create %s: %s\n", part, strerror(errno));
        kvc_close(c);
        return 1;
    }
    double t0 = now_s();
    uint64_t bytes = 0;
    int rv = kvc_snapshot(c, f, &bytes);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (rv != 0 || !ok || rename(part, out) != 0) {
        fprintf(stderr, "kvdb-snapshot: save from %s: %s\n", endpoints,
                rv != 0 ? kvc_errmsg(c) : strerror(errno));
        remove(part);
        kvc_close(c);
        return 1;
    }
    kvc_close(c);
    printf("saved a snapshot of the member at %s to %s: %" PRIu64 " bytes, %.3f s\n", endpoints,
           out, bytes, now_s() - t0);
    return 0;
}

/* Build a store from the snapshot's tables in a scratch dir and read its key count and hash. */
static int open_scratch(const char *dir, char *scratch, size_t len, struct lsm_store **s)
{
    snprintf(scratch, len, "%s.scratch-%d", dir, (int)getpid());
    srv_remove_tree(scratch);
    struct lsm_options lo;
    lsm_options_default(&lo);
    char err[256] = "";
    int rv = lsm_open_from_tables(dir, scratch, &lo, s, err);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapshot: the tables of %s do not open: %s: %s\n", dir,
                lsm_strerror(rv), err);
        srv_remove_tree(scratch);
    }
    return rv;
}

static int cmd_status(const char *dir, bool json, bool verify_only)
{
    struct snap_manifest m;
    char err[SNAP_ERRMSG_SIZE] = "";
    if (verify_files(dir, &m, err) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s: %s\n", dir, err);
        return 1;
    }
    char scratch[PATH_MAX];
    struct lsm_store *s = NULL;
    if (open_scratch(dir, scratch, sizeof scratch, &s) != 0) {
        snap_manifest_fini(&m);
        return 1;
    }
    struct lsm_status st;
    lsm_status_get(s, &st);
    struct lsm_range_req all = {.key = {"\0", 1}, .range_end = {"\0", 1}, .count_only = true};
    struct lsm_result res;
    memset(&res, 0, sizeof res);
    char lerr[256] = "";
    int rv = lsm_range(s, &all, &res, lerr);
    int64_t keys = rv == 0 ? res.u.range.count : -1;
    lsm_result_fini(&res);
    uint32_t hash = 0;
    int64_t hrev = 0, crev = 0;
    lsm_hash_kv(s, 0, &hash, &hrev, &crev, lerr);
    lsm_close(s);
    srv_remove_tree(scratch);
    int ok = st.applied_index == m.meta.index && rv == 0;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < m.n_files; i++) {
        bytes += m.files[i].size;
    }
    if (verify_only) {
        printf("%s: %s (%u files, %" PRIu64 " bytes, index %" PRIu64 ")\n", dir,
               ok ? "OK" : "store index does not match the manifest", m.n_files, bytes,
               m.meta.index);
    } else if (json) {
        printf("{\"index\":%" PRIu64 ",\"term\":%" PRIu64 ",\"revision\":%" PRIu64
               ",\"compact_revision\":%" PRIu64 ",\"keys\":%" PRId64 ",\"hash\":%" PRIu32
               ",\"files\":%u,\"size\":%" PRIu64 ",\"manifest_crc\":%" PRIu32
               ",\"checksums\":\"ok\"}\n",
               m.meta.index, m.meta.term, m.meta.revision, m.meta.compact_revision, keys, hash,
               m.n_files, bytes, m.crc);
    } else {
        printf("index %" PRIu64 "\nterm %" PRIu64 "\nrevision %" PRIu64
               "\ncompact revision %" PRIu64 "\nkeys %" PRId64 "\nhash %08" PRIx32
               "\nfiles %u\nsize %" PRIu64 " bytes\nvoters",
               m.meta.index, m.meta.term, m.meta.revision, m.meta.compact_revision, keys, hash,
               m.n_files, bytes);
        for (uint32_t i = 0; i < m.meta.n_voters; i++) {
            printf(" %016" PRIx64, m.meta.voters[i]);
        }
        printf("\nchecksums ok (manifest crc %08" PRIx32 ")\n", m.crc);
    }
    snap_manifest_fini(&m);
    return ok ? 0 : 1;
}

/* restore: a snapshot -> a new data dir for one member of a (possibly new) membership. */
static int cmd_restore(const char *dir, struct srv_config *cfg)
{
    char member[PATH_MAX], db[PATH_MAX], walp[PATH_MAX], snaproot[PATH_MAX], err[256] = "";
    snprintf(member, sizeof member, "%s/member", cfg->data_dir);
    struct stat sb;
    if (stat(member, &sb) == 0) {
        fprintf(stderr, "kvdb-snapshot: %s already holds a member: refusing to overwrite it\n",
                cfg->data_dir);
        return 1;
    }
    double t0 = now_s();
    struct snap_manifest m;
    char serr[SNAP_ERRMSG_SIZE] = "";
    if (verify_files(dir, &m, serr) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s: %s\n", dir, serr);
        return 1;
    }
    mkdir(cfg->data_dir, 0700);
    if (mkdir(member, 0700) != 0) {
        fprintf(stderr, "kvdb-snapshot: mkdir %s: %s\n", member, strerror(errno));
        snap_manifest_fini(&m);
        return 1;
    }
    snprintf(db, sizeof db, "%s/db", member);
    snprintf(walp, sizeof walp, "%s/wal", member);
    snprintf(snaproot, sizeof snaproot, "%s/snap", member);
    uint64_t voters[SRV_MAX_MEMBERS];
    for (size_t i = 0; i < cfg->n_members; i++) {
        voters[i] = cfg->members[i].id;
    }
    int rv = 1;
    struct lsm_store *s = NULL;
    struct lsm_options lo;
    lsm_options_default(&lo);
    if (lsm_open_from_tables(dir, db, &lo, &s, err) != 0) {
        fprintf(stderr, "kvdb-snapshot: build the store: %s\n", err);
        goto out;
    }
    /* The old cluster's registry stays behind: the flags describe the new membership. */
    struct lsm_state_rec drop = {.name = {"members", 7}, .del = true};
    if (lsm_state_write(s, &drop, 1, err) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s\n", err);
        lsm_close(s);
        goto out;
    }
    lsm_close(s);
    progress("building the store", 1, 1);
    /* The member's own snapshot, with the new membership: raft starts from it. */
    mkdir(snaproot, 0700);
    char **names = NULL;
    size_t n = 0;
    list_tables(dir, &names, &n);
    struct snap_meta meta = m.meta;
    meta.voters = voters;
    meta.n_voters = (uint32_t)cfg->n_members;
    meta.learners = NULL;
    meta.n_learners = 0;
    struct snap_manifest made;
    int crv = snap_create(snaproot, &meta, dir, (const char *const *)names, n, &made, serr);
    free_names(names, n);
    if (crv != 0) {
        fprintf(stderr, "kvdb-snapshot: %s\n", serr);
        goto out;
    }
    snap_manifest_fini(&made);
    /* The log starts after the snapshot: a marker and the hard state (term, commit). */
    struct wal *w = NULL;
    char werr[WAL_ERRMSG_SIZE] = "";
    uint64_t ticket = 0;
    struct wal_hard_state hs = {.term = m.meta.term, .vote = 0, .commit = m.meta.index};
    if (wal_open(walp, NULL, &w, NULL, werr) != 0 ||
        wal_mark_snapshot(w, m.meta.index, m.meta.term, &ticket) != 0 ||
        wal_set_hard_state(w, &hs, &ticket) != 0 || wal_sync_wait(w, ticket) != 0) {
        fprintf(stderr, "kvdb-snapshot: write the WAL: %s\n", werr);
        wal_close(w);
        goto out;
    }
    wal_close(w);
    /* Auth and leases are part of the keyspace's state: the new member starts with them. */
    const char *carried[][2] = {{"AUTH", "auth"}, {"LEASES", "leases"}};
    for (size_t k = 0; k < 2; k++) {
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s", dir, carried[k][0]);
        snprintf(to, sizeof to, "%s/%s", member, carried[k][1]);
        FILE *in = fopen(from, "rb");
        if (in == NULL) {
            continue;
        }
        FILE *outf = fopen(to, "wb");
        char buf[65536];
        size_t got;
        while (outf != NULL && (got = fread(buf, 1, sizeof buf, in)) > 0) {
            fwrite(buf, 1, got, outf);
        }
        if (outf != NULL) {
            fclose(outf);
        }
        fclose(in);
    }
    if (srv_member_file_write(member, cfg->cluster_id, cfg->member_id, voters, cfg->n_members,
                              err) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s\n", err);
        goto out;
    }
    printf("restored snapshot at index %" PRIu64 " (revision %" PRIu64
           ") into %s as member %s "
           "(%016" PRIx64 ") of cluster %016" PRIx64 " with %zu voters, %.3f s\n",
           m.meta.index, m.meta.revision, cfg->data_dir, cfg->name, cfg->member_id, cfg->cluster_id,
           cfg->n_members, now_s() - t0);
    rv = 0;
out:
    if (rv != 0) {
        srv_remove_tree(member);
    }
    snap_manifest_fini(&m);
    return rv;
}

/* An archive from `kvctl snapshot save` ("KVSNAP1\0", u32 manifest length, the manifest, the
 * files' bytes in manifest order) unpacked into the snapshot directory @out.  The checksums are
 * checked afterwards by the caller's snap_verify. */
static int extract_archive(const char *path, const char *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "kvdb-snapshot: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    unsigned char head[12];
    uint8_t *man = NULL;
    struct snap_manifest m;
    memset(&m, 0, sizeof m);
    int rv = 1;
    char err[SNAP_ERRMSG_SIZE] = "";
    if (fread(head, 1, 12, f) != 12 || memcmp(head, "KVSNAP1", 8) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s is neither a snapshot directory nor an archive\n", path);
        goto out;
    }
    uint32_t mlen = wal_get_u32(head + 8);
    man = mlen <= (64u << 20) ? malloc(mlen > 0 ? mlen : 1) : NULL;
    if (man == NULL || fread(man, 1, mlen, f) != mlen ||
        snap_manifest_decode(man, mlen, &m, err) != 0) {
        fprintf(stderr, "kvdb-snapshot: %s: bad manifest: %s\n", path, err);
        goto out;
    }
    srv_remove_tree(out);
    if (mkdir(out, 0700) != 0) {
        fprintf(stderr, "kvdb-snapshot: mkdir %s: %s\n", out, strerror(errno));
        goto out;
    }
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", out, SNAP_MANIFEST_NAME);
    FILE *o = fopen(p, "wb");
    if (o == NULL || fwrite(man, 1, mlen, o) != mlen) {
        if (o != NULL) {
            fclose(o);
        }
        goto out;
    }
    fclose(o);
    char buf[65536];
    for (uint32_t i = 0; i < m.n_files; i++) {
        snprintf(p, sizeof p, "%s/%s", out, m.files[i].name);
        o = fopen(p, "wb");
        uint64_t left = m.files[i].size;
        while (o != NULL && left > 0) {
            size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
            size_t got = fread(buf, 1, want, f);
            if (got == 0 || fwrite(buf, 1, got, o) != got) {
                break;
            }
            left -= got;
        }
        if (o != NULL) {
            fclose(o);
        }
        if (o == NULL || left > 0) {
            fprintf(stderr, "kvdb-snapshot: %s is truncated (in %s)\n", path, m.files[i].name);
            goto out;
        }
        progress("unpacking the archive", i + 1, m.n_files);
    }
    rv = 0;
out:
    snap_manifest_fini(&m);
    free(man);
    fclose(f);
    return rv;
}

/* The snapshot directory behind @arg: @arg itself, or an archive unpacked into @scratch. */
static const char *snapshot_dir(const char *arg, char *scratch, size_t size)
{
    struct stat sb;
    if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        return arg;
    }
    snprintf(scratch, size, "%s.unpacked-%d", arg, (int)getpid());
    return extract_archive(arg, scratch) == 0 ? scratch : NULL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  kvdb-snapshot save --data-dir DIR OUT_DIR    export a stopped member's state\n"
            "  kvdb-snapshot save --endpoints EP OUT        a running member's, as an archive\n"
            "  (SNAP is a snapshot directory, or an archive from `kvctl snapshot save`)\n"
            "  kvdb-snapshot restore SNAP --data-dir NEW [member flags: --name,\n"
            "      --initial-cluster, --initial-cluster-token, --initial-advertise-peer-urls]\n"
            "  kvdb-snapshot status SNAP_DIR [-w json]      index, term, revision, keys, size\n"
            "  kvdb-snapshot verify SNAP_DIR                checksums and a test open\n");
}

int main(int argc, char **argv)
{
    tty = isatty(STDERR_FILENO);
    if (argc < 3) {
        usage();
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "save") == 0) {
        const char *data_dir = NULL, *out = NULL, *endpoints = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
                data_dir = argv[++i];
            } else if (strcmp(argv[i], "--endpoints") == 0 && i + 1 < argc) {
                endpoints = argv[++i];
            } else {
                out = argv[i];
            }
        }
        if ((data_dir == NULL) == (endpoints == NULL) || out == NULL) {
            usage();
            return 2;
        }
        return data_dir != NULL ? cmd_save(data_dir, out) : cmd_save_online(endpoints, out);
    }
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "verify") == 0) {
        bool json = argc >= 5 &&
                    (strcmp(argv[3], "-w") == 0 || strcmp(argv[3], "--write-out") == 0) &&
                    strcmp(argv[4], "json") == 0;
        char scratch[PATH_MAX];
        const char *dir = snapshot_dir(argv[2], scratch, sizeof scratch);
        int rv = dir != NULL ? cmd_status(dir, json, strcmp(cmd, "verify") == 0) : 1;
        if (dir == scratch) {
            srv_remove_tree(scratch);
        }
        return rv;
    }
    if (strcmp(cmd, "restore") == 0) {
        struct srv_config cfg;
        char err[256] = "";
        srv_config_defaults(&cfg);
        /* argv[2] is the snapshot; the rest are member flags, parsed as kvdb parses them. */
        if (srv_config_parse(&cfg, argc - 2, argv + 2, err, sizeof err) != 0) {
            fprintf(stderr, "kvdb-snapshot: %s\n", err);
            return 2;
        }
        char scratch[PATH_MAX];
        const char *dir = snapshot_dir(argv[2], scratch, sizeof scratch);
        int rv = dir != NULL ? cmd_restore(dir, &cfg) : 1;
        if (dir == scratch) {
            srv_remove_tree(scratch);
        }
        return rv;
    }
    usage();
    return 2;
}
