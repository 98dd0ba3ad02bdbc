/* kvdb-snapdump: print and check snapshots (snapshot/FORMAT.md) without a running member.
 *
 *   kvdb-snapdump DIR            manifest of the snapshot in DIR, with a full crc32c check
 *   kvdb-snapdump --list ROOT    every snapshot under ROOT, oldest first, with its status
 *
 * Exit status: 0 when everything shown is valid, 1 otherwise, 2 on bad usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/snapshot.h"

static const char *status_name(enum snap_status st)
{
    switch (st) {
    case SNAP_VALID:
        return "valid";
    case SNAP_INCOMPLETE:
        return "incomplete";
    default:
        return "bad";
    }
}

static int list(const char *root)
{
    struct snap_entry *v;
    size_t n;
    char err[SNAP_ERRMSG_SIZE], name[40];
    int rv = snap_list(root, &v, &n, err);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapdump: %s: %s\n", snap_strerror(rv), err);
        return 1;
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        snap_dir_name(v[i].index, v[i].term, name, sizeof name);
        printf("%s  index %" PRIu64 " term %" PRIu64 "  %s%s%s\n", name, v[i].index, v[i].term,
               status_name(v[i].status), v[i].status == SNAP_VALID ? "" : ": ",
               v[i].status == SNAP_VALID ? "" : v[i].why);
        bad |= v[i].status != SNAP_VALID;
    }
    free(v);
    return bad;
}

static void print_ids(const char *what, const uint64_t *ids, uint32_t n)
{
    printf("%s:", what);
    for (uint32_t i = 0; i < n; i++) {
        printf(" %" PRIx64, ids[i]);
    }
    printf("\n");
}

static int dump(const char *dir)
{
    struct snap_manifest m;
    char err[SNAP_ERRMSG_SIZE];
    int rv = snap_verify(dir, &m, err);
    if (rv != 0) {
        fprintf(stderr, "kvdb-snapdump: %s: %s\n", snap_strerror(rv), err);
        return 1;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < m.n_files; i++) {
        total += m.files[i].size;
    }
    printf("index: %" PRIu64 "\nterm: %" PRIu64 "\nrevision: %" PRIu64
           "\ncompacted revision: %" PRIu64 "\nmanifest crc32c: %08x\n",
           m.meta.index, m.meta.term, m.meta.revision, m.meta.compact_revision, m.crc);
    print_ids("voters", m.meta.voters, m.meta.n_voters);
    print_ids("learners", m.meta.learners, m.meta.n_learners);
    printf("files: %u, %" PRIu64 " bytes, every crc32c verified\n", m.n_files, total);
    for (uint32_t i = 0; i < m.n_files; i++) {
        printf("  %-24s %12" PRIu64 "  %08x\n", m.files[i].name, m.files[i].size, m.files[i].crc);
    }
    snap_manifest_fini(&m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--list") == 0) {
        return list(argv[2]);
    }
    if (argc == 2 && argv[1][0] != '-') {
        return dump(argv[1]);
    }
    fprintf(stderr, "usage: kvdb-snapdump DIR | kvdb-snapdump --list ROOT\n");
    return 2;
}
