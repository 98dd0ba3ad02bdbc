/* History recorder: thread-safe appends, text save/load. */
#include "test/lib/history.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *test_linz_strerror(int code)
{
    switch (code) {
#define X(c, num, msg) \
    case c:            \
        return msg;
        TEST_LINZ_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

static void set_err(struct test_hist *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->errmsg, sizeof h->errmsg, fmt, ap);
    va_end(ap);
}

int test_hist_init(struct test_hist *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    h->inited = true;
    return 0;
}

static void op_free(struct test_op *op)
{
    free(op->key);
    free(op->value);
    free(op->expected);
    free(op->result);
}

void test_hist_fini(struct test_hist *h)
{
    if (!h->inited) {
        return;
    }
    for (size_t i = 0; i < h->n_ops; i++) {
        op_free(&h->ops[i]);
    }
    free(h->ops);
    pthread_mutex_destroy(&h->lock);
    memset(h, 0, sizeof *h);
}

int64_t test_hist_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* strdup that keeps NULL as NULL; *ok turns false on allocation failure. */
static char *dup_opt(const char *s, bool *ok)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *ok = false;
    }
    return d;
}

static int check_shape(struct test_hist *h, const struct test_op *op)
{
    if (op->key == NULL) {
        set_err(h, "op without key");
        return TEST_LINZ_EINVAL;
    }
    if (op->kind < TEST_OP_PUT || op->kind > TEST_OP_CAS) {
        set_err(h, "bad op kind %d", (int)op->kind);
        return TEST_LINZ_EINVAL;
    }
    if ((op->kind == TEST_OP_PUT || op->kind == TEST_OP_CAS) && op->value == NULL) {
        set_err(h, "put/cas on key %s without a value", op->key);
        return TEST_LINZ_EINVAL;
    }
    if (op->outcome < TEST_OUT_OK || op->outcome > TEST_OUT_UNKNOWN) {
        set_err(h, "bad outcome %d", (int)op->outcome);
        return TEST_LINZ_EINVAL;
    }
    if (op->outcome != TEST_OUT_UNKNOWN && op->ret_ns < op->call_ns) {
        set_err(h, "op on key %s returns (%" PRId64 ") before its call (%" PRId64 ")", op->key,
                op->ret_ns, op->call_ns);
        return TEST_LINZ_EINVAL;
    }
    return 0;
}

/* Append a deep copy of @src; caller holds the lock. */
static int append_locked(struct test_hist *h, const struct test_op *src, size_t *id)
{
    if (h->n_ops == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct test_op *ops = realloc(h->ops, cap * sizeof *ops);
        if (ops == NULL) {
            set_err(h, "grow history to %zu ops", cap);
            return TEST_LINZ_ENOMEM;
        }
        h->ops = ops;
        h->cap = cap;
    }
    struct test_op op = *src;
    bool ok = true;
    op.key = dup_opt(src->key, &ok);
    op.value =
        dup_opt(src->kind == TEST_OP_PUT || src->kind == TEST_OP_CAS ? src->value : NULL, &ok);
    op.expected = dup_opt(src->kind == TEST_OP_CAS ? src->expected : NULL, &ok);
    op.result =
        dup_opt(src->kind == TEST_OP_GET && src->outcome == TEST_OUT_OK ? src->result : NULL, &ok);
    if (src->kind != TEST_OP_CAS || src->outcome != TEST_OUT_OK) {
        op.succeeded = false;
    }
    op.serializable = src->kind == TEST_OP_GET && src->serializable;
    if (op.outcome == TEST_OUT_UNKNOWN) {
        op.ret_ns = TEST_HIST_NEVER;
    }
    if (!ok) {
        op_free(&op);
        set_err(h, "copy op strings");
        return TEST_LINZ_ENOMEM;
    }
    h->ops[h->n_ops] = op;
    if (id != NULL) {
        *id = h->n_ops;
    }
    h->n_ops++;
    return 0;
}

int test_hist_add(struct test_hist *h, const struct test_op *op)
{
    pthread_mutex_lock(&h->lock);
    int rv = check_shape(h, op);
    if (rv == 0) {
        rv = append_locked(h, op, NULL);
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

int test_hist_invoke(struct test_hist *h,
                     uint32_t client,
                     enum test_op_kind kind,
                     const char *key,
                     const char *value,
                     const char *expected,
                     size_t *id)
{
    struct test_op op = {
        .client = client,
        .kind = kind,
        .outcome = TEST_OUT_UNKNOWN,
        .key = (char *)key,
        .value = (char *)value,
        .expected = (char *)expected,
        .ret_ns = TEST_HIST_NEVER,
    };
    pthread_mutex_lock(&h->lock);
    /* The call time is taken under the lock so that invocation order equals time order. */
    op.call_ns = test_hist_now();
    int rv = check_shape(h, &op);
    if (rv == 0) {
        rv = append_locked(h, &op, id);
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

/* Look up a pending op; caller holds the lock. */
static struct test_op *pending_locked(struct test_hist *h, size_t id)
{
    if (id >= h->n_ops) {
        set_err(h, "no op with id %zu (history has %zu)", id, h->n_ops);
        return NULL;
    }
    struct test_op *op = &h->ops[id];
    if (op->outcome != TEST_OUT_UNKNOWN || op->ret_ns != TEST_HIST_NEVER) {
        set_err(h, "op %zu already completed", id);
        return NULL;
    }
    return op;
}

int test_hist_mark_serializable(struct test_hist *h, size_t id)
{
    int rv = 0;
    pthread_mutex_lock(&h->lock);
    if (id >= h->n_ops || h->ops[id].kind != TEST_OP_GET) {
        set_err(h, "op %zu is not a get", id);
        rv = TEST_LINZ_EINVAL;
    } else {
        h->ops[id].serializable = true;
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

int test_hist_ok(struct test_hist *h, size_t id, const char *result, bool succeeded)
{
    int64_t now = test_hist_now();
    int rv = 0;
    pthread_mutex_lock(&h->lock);
    struct test_op *op = pending_locked(h, id);
    if (op == NULL) {
        rv = TEST_LINZ_EINVAL;
        goto out;
    }
    if (op->kind == TEST_OP_GET && result != NULL) {
        op->result = strdup(result);
        if (op->result == NULL) {
            set_err(h, "copy result of op %zu", id);
            rv = TEST_LINZ_ENOMEM;
            goto out;
        }
    }
    op->succeeded = op->kind == TEST_OP_CAS && succeeded;
    op->outcome = TEST_OUT_OK;
    op->ret_ns = now < op->call_ns ? op->call_ns : now;
out:
    pthread_mutex_unlock(&h->lock);
    return rv;
}

int test_hist_fail(struct test_hist *h, size_t id)
{
    int64_t now = test_hist_now();
    int rv = 0;
    pthread_mutex_lock(&h->lock);
    struct test_op *op = pending_locked(h, id);
    if (op == NULL) {
        rv = TEST_LINZ_EINVAL;
    } else {
        op->outcome = TEST_OUT_FAILED;
        op->ret_ns = now < op->call_ns ? op->call_ns : now;
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

/* ---- Text encoding ---- */

static bool must_escape(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || c == '%' || c == '"';
}

/* Write the token for @s into @buf (truncated, NUL-terminated); returns bytes needed. */
static size_t encode(const char *s, char *buf, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *tok = s == NULL ? "-" : *s == '\0' ? "\"\"" : strcmp(s, "-") == 0 ? "%2D" : NULL;
    if (tok != NULL) {
        return (size_t)snprintf(buf, size, "%s", tok);
    }
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[3] = {(char)*p, 0, 0};
        size_t len = 1;
        if (must_escape(*p)) {
            esc[0] = '%';
            esc[1] = hex[*p >> 4];
            esc[2] = hex[*p & 15];
            len = 3;
        }
        for (size_t i = 0; i < len; i++, n++) {
            if (n + 1 < size) {
                buf[n] = esc[i];
            }
        }
    }
    if (size > 0) {
        buf[n < size ? n : size - 1] = '\0';
    }
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decode token @t in place.  *absent is set for `-`.  Returns false on a bad escape. */
static bool decode(char *t, bool *absent)
{
    *absent = strcmp(t, "-") == 0;
    if (*absent) {
        return true;
    }
    if (strcmp(t, "\"\"") == 0) {
        t[0] = '\0';
        return true;
    }
    char *w = t;
    for (const char *r = t; *r != '\0'; r++) {
        if (*r == '%') {
            int hi = hexval(r[1]);
            int lo = hi < 0 ? -1 : hexval(r[2]);
            if (lo < 0 || (hi == 0 && lo == 0)) {
                return false;
            }
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else if (*r == '"') {
            return false;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return true;
}

static const char *kind_name(enum test_op_kind k)
{
    switch (k) {
    case TEST_OP_PUT:
        return "put";
    case TEST_OP_GET:
        return "get";
    case TEST_OP_DEL:
        return "del";
    case TEST_OP_CAS:
        return "cas";
    }
    return "?";
}

static const char *outcome_name(enum test_outcome o)
{
    switch (o) {
    case TEST_OUT_OK:
        return "ok";
    case TEST_OUT_FAILED:
        return "failed";
    case TEST_OUT_UNKNOWN:
        return "unknown";
    }
    return "?";
}

/* "<op> <key> [args] [= result]" into buf.  Long strings are truncated in the readable form
 * only; test_hist_write sizes its buffer to the op. */
static void format_body(const struct test_op *op, char *buf, size_t size)
{
    const char *name = op->serializable ? "sget" : kind_name(op->kind);
    size_t n = (size_t)snprintf(buf, size, "%s ", name);
    const char *args[3] = {op->key, NULL, NULL};
    size_t n_args = 1;
    if (op->kind == TEST_OP_PUT) {
        args[n_args++] = op->value;
    } else if (op->kind == TEST_OP_CAS) {
        args[n_args++] = op->expected;
        args[n_args++] = op->value;
    }
    for (size_t i = 0; i < n_args && n < size; i++) {
        n += encode(args[i], buf + n, size - n);
        if (i + 1 < n_args && n < size) {
            n += (size_t)snprintf(buf + n, size - n, " ");
        }
    }
    if (op->outcome != TEST_OUT_OK || n >= size) {
        return;
    }
    if (op->kind == TEST_OP_GET) {
        n += (size_t)snprintf(buf + n, size - n, " = ");
        if (n < size) {
            encode(op->result, buf + n, size - n);
        }
    } else if (op->kind == TEST_OP_CAS) {
        snprintf(buf + n, size - n, " = %s", op->succeeded ? "true" : "false");
    }
}

char *test_op_format(const struct test_op *op, int64_t t0_ns, char *buf, size_t size)
{
    char body[160];
    format_body(op, body, sizeof body);
    double call = (double)(op->call_ns - t0_ns) / 1e6;
    if (op->outcome == TEST_OUT_UNKNOWN) {
        snprintf(buf, size, "c%" PRIu32 " %s (unknown) [%.6f, -] ms", op->client, body, call);
    } else {
        snprintf(buf, size, "c%" PRIu32 " %s (%s) [%.6f, %.6f] ms", op->client, body,
                 outcome_name(op->outcome), call, (double)(op->ret_ns - t0_ns) / 1e6);
    }
    return buf;
}

static size_t strlen_opt(const char *s)
{
    return s == NULL ? 0 : strlen(s);
}

static int write_op(FILE *f, const struct test_op *op)
{
    /* Every byte can grow to 3 when escaped; plus fixed words. */
    size_t need = 3 * (strlen_opt(op->key) + strlen_opt(op->value) + strlen_opt(op->expected) +
                       strlen_opt(op->result)) +
                  64;
    char *body = malloc(need);
    if (body == NULL) {
        return TEST_LINZ_ENOMEM;
    }
    format_body(op, body, need);
    char ret[24] = "-";
    if (op->outcome != TEST_OUT_UNKNOWN) {
        snprintf(ret, sizeof ret, "%" PRId64, op->ret_ns);
    }
    int n = fprintf(f, "%" PRIu32 " %" PRId64 " %s %s %s\n", op->client, op->call_ns, ret,
                    outcome_name(op->outcome), body);
    free(body);
    return n < 0 ? TEST_LINZ_EIO : 0;
}

int test_hist_write(struct test_hist *h, FILE *f)
{
    pthread_mutex_lock(&h->lock);
    int rv = fprintf(f, "# kvdb history v1\n") < 0 ? TEST_LINZ_EIO : 0;
    for (size_t i = 0; i < h->n_ops && rv == 0; i++) {
        rv = write_op(f, &h->ops[i]);
    }
    if (rv == 0 && fflush(f) != 0) {
        rv = TEST_LINZ_EIO;
    }
    if (rv != 0) {
        set_err(h, "write history: %s", rv == TEST_LINZ_EIO ? strerror(errno) : "no memory");
    }
    pthread_mutex_unlock(&h->lock);
    return rv;
}

int test_hist_save(struct test_hist *h, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        set_err(h, "open %s: %s", path, strerror(errno));
        return TEST_LINZ_EIO;
    }
    int rv = test_hist_write(h, f);
    if (fclose(f) != 0 && rv == 0) {
        set_err(h, "close %s: %s", path, strerror(errno));
        rv = TEST_LINZ_EIO;
    }
    return rv;
}

/* ---- Parsing ---- */

static bool parse_i64(const char *t, int64_t *out)
{
    if (t == NULL || *t == '\0') {
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool parse_enum(const char *t, const char *const *names, int n, int *out)
{
    for (int i = 0; t != NULL && i < n; i++) {
        if (strcmp(t, names[i]) == 0) {
            *out = i + 1;
            return true;
        }
    }
    return false;
}

/* Decode string token @t into *out (NULL for absent, else points into the line). */
static bool parse_str(char *t, char **out)
{
    bool absent;
    if (t == NULL || !decode(t, &absent)) {
        return false;
    }
    *out = absent ? NULL : t;
    return true;
}

/* The arguments and result after "<op>": key, value/expected/new, "= result". */
static const char *parse_args(char **tok, size_t n, struct test_op *op)
{
    size_t want = op->kind == TEST_OP_PUT ? 2 : op->kind == TEST_OP_CAS ? 3 : 1;
    bool has_result =
        op->outcome == TEST_OUT_OK && (op->kind == TEST_OP_GET || op->kind == TEST_OP_CAS);
    if (n != want + (has_result ? 2 : 0)) {
        return has_result ? "wrong number of arguments (ok get/cas need `= <result>`)"
                          : "wrong number of arguments";
    }
    if (!parse_str(tok[0], &op->key) || op->key == NULL) {
        return "bad key";
    }
    if (op->kind == TEST_OP_PUT && (!parse_str(tok[1], &op->value) || op->value == NULL)) {
        return "bad put value";
    }
    if (op->kind == TEST_OP_CAS && (!parse_str(tok[1], &op->expected) ||
                                    !parse_str(tok[2], &op->value) || op->value == NULL)) {
        return "bad cas expected/new value";
    }
    if (!has_result) {
        return NULL;
    }
    if (strcmp(tok[want], "=") != 0) {
        return "expected `=` before the result";
    }
    char *r = tok[want + 1];
    if (op->kind == TEST_OP_GET) {
        return parse_str(r, &op->result) ? NULL : "bad get result";
    }
    if (strcmp(r, "true") != 0 && strcmp(r, "false") != 0) {
        return "cas result must be true or false";
    }
    op->succeeded = r[0] == 't';
    return NULL;
}

/* Parse one non-comment line (modified in place); returns an error text or NULL. */
static const char *parse_line(char *line, struct test_op *op)
{
    static const char *const outcomes[] = {"ok", "failed", "unknown"};
    static const char *const kinds[] = {"put", "get", "del", "cas", "sget"};
    char *tok[16];
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL;
         t = strtok_r(NULL, " \t\r\n", &save)) {
        if (n == 16) {
            return "too many fields";
        }
        tok[n++] = t;
    }
    if (n < 6) {
        return "too few fields (want <client> <call> <ret> <outcome> <op> <key> ...)";
    }
    int64_t client;
    int outcome, kind;
    memset(op, 0, sizeof *op);
    if (!parse_i64(tok[0], &client) || client < 0 || client > UINT32_MAX) {
        return "bad client id";
    }
    op->client = (uint32_t)client;
    if (!parse_i64(tok[1], &op->call_ns)) {
        return "bad call time";
    }
    if (!parse_enum(tok[3], outcomes, 3, &outcome)) {
        return "bad outcome (want ok, failed or unknown)";
    }
    op->outcome = (enum test_outcome)outcome;
    if (op->outcome == TEST_OUT_UNKNOWN ? strcmp(tok[2], "-") != 0
                                        : !parse_i64(tok[2], &op->ret_ns)) {
        return "bad return time (`-` exactly for unknown ops)";
    }
    if (!parse_enum(tok[4], kinds, 5, &kind)) {
        return "bad op (want put, get, sget, del or cas)";
    }
    op->serializable = kind == 5;
    op->kind = kind == 5 ? TEST_OP_GET : (enum test_op_kind)kind;
    return parse_args(tok + 5, n - 5, op);
}

int test_hist_read(struct test_hist *h, FILE *f, const char *name)
{
    char *line = NULL;
    size_t cap = 0;
    int rv = 0;
    errno = 0;
    for (size_t lineno = 1; rv == 0; lineno++) {
        ssize_t len = getline(&line, &cap, f);
        if (len < 0) {
            if (ferror(f)) {
                set_err(h, "%s:%zu: read: %s", name, lineno, strerror(errno));
                rv = TEST_LINZ_EIO;
            }
            break;
        }
        const char *p = line + strspn(line, " \t\r\n");
        if (*p == '\0' || *p == '#') {
            continue;
        }
        struct test_op op;
        const char *err = parse_line(line, &op);
        if (err != NULL) {
            set_err(h, "%s:%zu: %s", name, lineno, err);
            rv = TEST_LINZ_EPARSE;
        } else if ((rv = test_hist_add(h, &op)) != 0) {
            char ctx[TEST_LINZ_ERRMSG_SIZE];
            memcpy(ctx, h->errmsg, sizeof ctx);
            set_err(h, "%s:%zu: %.200s", name, lineno, ctx);
            rv = rv == TEST_LINZ_EINVAL ? TEST_LINZ_EPARSE : rv;
        }
    }
    free(line);
    return rv;
}

int test_hist_load(struct test_hist *h, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        set_err(h, "open %s: %s", path, strerror(errno));
        return TEST_LINZ_EIO;
    }
    int rv = test_hist_read(h, f, path);
    fclose(f);
    return rv;
}
