/* kvdb-waldump: print the segments and records of a WAL directory (or single segment files) and
 * report damage with file and offset.  Read-only: it takes no lock and changes nothing.
 * Exit status: 0 clean, 1 usage or I/O error, 2 corruption or a torn tail found. */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "wal/wal.h"

struct opts
{
    bool verbose; /* One line per entry. */
    bool quiet;   /* Segment summaries only. */
};

struct seg
{
    char path[1024];
    struct wal_seg_header h;
    bool header_ok;
};

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    *len = buf != NULL ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    return buf;
}

static void print_entries(const struct wal_rec *r, const struct opts *o)
{
    struct wal_entries_iter it;
    if (wal_entries_iter_init(&it, r->payload, r->len) != 0) {
        printf(" malformed");
        return;
    }
    uint64_t first = it.next_index, n = it.remaining;
    printf(" entries [%" PRIu64 ", %" PRIu64 "] n=%" PRIu64, first, first + n - 1, n);
    struct wal_entry e;
    int got;
    while ((got = wal_entries_iter_next(&it, &e)) == 1) {
        if (o->verbose) {
            printf("\n    index=%" PRIu64 " term=%" PRIu64 " type=%u len=%zu", e.index, e.term,
                   e.type, e.len);
        }
    }
    if (got < 0) {
        printf(" (malformed payload)");
    }
}

static void print_record(size_t off, const struct wal_rec *r, const struct opts *o)
{
    if (o->quiet) {
        return;
    }
    printf("  @%-10zu len=%-8zu", off, r->len);
    switch (r->type) {
    case WAL_REC_ENTRIES:
        print_entries(r, o);
        break;
    case WAL_REC_HARD_STATE:
        printf(" hardstate term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64,
               wal_get_u64(r->payload), wal_get_u64(r->payload + 8), wal_get_u64(r->payload + 16));
        break;
    case WAL_REC_SNAPSHOT:
        printf(" snapshot index=%" PRIu64 " term=%" PRIu64, wal_get_u64(r->payload),
               wal_get_u64(r->payload + 8));
        break;
    }
    printf("\n");
}

/* Dump one segment; returns 0 clean, 2 damaged, 1 unreadable.  *@chain is checked against the
 * header (when @check_chain) and left at the segment's final chain value. */
static int dump_segment(const struct seg *s,
                        const struct opts *o,
                        bool check_chain,
                        uint32_t *chain)
{
    size_t len = 0;
    unsigned char *buf = slurp(s->path, &len);
    if (buf == NULL) {
        fprintf(stderr, "kvdb-waldump: cannot read %s\n", s->path);
        return 1;
    }
    printf("segment %s: %zu bytes", s->path, len);
    if (!s->header_ok) {
        printf("\nCORRUPT %s: bad segment header at offset 0\n", s->path);
        free(buf);
        return 2;
    }
    printf(", seq=%" PRIu64 " first_index=%" PRIu64 " chain=%08x\n", s->h.seq, s->h.first_index,
           s->h.chain);
    int status = 0;
    if (check_chain && s->h.chain != *chain) {
        printf("CORRUPT %s: crc chain mismatch at offset 0 (expected %08x)\n", s->path, *chain);
        status = 2;
    }
    *chain = s->h.chain;
    size_t off = WAL_SEG_HEADER_SIZE, records = 0;
    for (;;) {
        struct wal_rec r;
        const char *why = "";
        enum wal_scan sc = wal_rec_decode(buf + off, len - off, &r, &why);
        if (sc == WAL_SCAN_END) {
            break;
        }
        if (sc != WAL_SCAN_RECORD) {
            printf("%s %s: %s at offset %zu (%zu bytes follow)\n",
                   sc == WAL_SCAN_TORN ? "TORN" : "CORRUPT", s->path, why, off, len - off);
            status = 2;
            break;
        }
        print_record(off, &r, o);
        *chain = wal_crc32c_extend(*chain, buf + off, 4);
        off += r.size;
        records++;
    }
    printf("  %zu records, %zu bytes of records\n", records, off - WAL_SEG_HEADER_SIZE);
    free(buf);
    return status;
}

static void load_header(struct seg *s)
{
    unsigned char h[WAL_SEG_HEADER_SIZE];
    FILE *f = fopen(s->path, "rb");
    size_t n = f != NULL ? fread(h, 1, sizeof h, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    const char *why;
    s->header_ok = wal_seg_header_decode(h, n, &s->h, &why) == 0;
}

static int cmp_seg(const void *a, const void *b)
{
    const struct seg *x = a, *y = b;
    if (x->header_ok != y->header_ok) {
        return x->header_ok ? -1 : 1;
    }
    return x->h.seq < y->h.seq ? -1 : x->h.seq > y->h.seq;
}

static bool is_segment(const char *name)
{
    return strncmp(name, "open-", 5) == 0 || (strlen(name) == 33 && name[16] == '-');
}

static int list_dir(const char *dir, struct seg **out, size_t *n)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_segment(de->d_name)) {
            if (strncmp(de->d_name, "corrupt-", 8) == 0 || strncmp(de->d_name, "tmp-", 4) == 0) {
                printf("note: %s/%s (not part of the log)\n", dir, de->d_name);
            }
            continue;
        }
        *out = realloc(*out, (*n + 1) * sizeof **out);
        snprintf((*out)[*n].path, sizeof(*out)[*n].path, "%s/%s", dir, de->d_name);
        load_header(&(*out)[*n]);
        (*n)++;
    }
    closedir(d);
    qsort(*out, *n, sizeof **out, cmp_seg);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {false, false};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0) {
            o.verbose = true;
        } else if (strcmp(argv[i], "-q") == 0) {
            o.quiet = true;
        } else {
            break;
        }
    }
    if (i >= argc) {
        fprintf(stderr,
                "usage: kvdb-waldump [-v|-q] <wal-dir|segment-file>...\n"
                "  -v  one line per entry   -q  segment summaries only\n"
                "exit: 0 clean, 1 error, 2 corruption or torn tail found\n");
        return 1;
    }
    int worst = 0;
    for (; i < argc; i++) {
        struct stat st;
        struct seg *segs = NULL;
        size_t n = 0;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "kvdb-waldump: %s: not found\n", argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            if (list_dir(argv[i], &segs, &n) != 0) {
                fprintf(stderr, "kvdb-waldump: cannot list %s\n", argv[i]);
                return 1;
            }
        } else {
            segs = calloc(1, sizeof *segs);
            snprintf(segs[0].path, sizeof segs[0].path, "%s", argv[i]);
            load_header(&segs[0]);
            n = 1;
        }
        uint32_t chain = 0;
        for (size_t k = 0; k < n; k++) {
            bool follows = k > 0 && segs[k].h.seq == segs[k - 1].h.seq + 1;
            if (k > 0 && segs[k].header_ok && !follows) {
                printf("CORRUPT %s: seq %" PRIu64 " does not follow %" PRIu64 "\n", segs[k].path,
                       segs[k].h.seq, segs[k - 1].h.seq);
                worst = 2;
            }
            int rv = dump_segment(&segs[k], &o, follows, &chain);
            worst = rv > worst ? rv : worst;
        }
        free(segs);
    }
    printf(worst == 0 ? "clean\n" : "damage found\n");
    return worst;
}
