/*
 * msg.c: PostgreSQL v3 message parsing and building (see msg.h). Every parser checks
 * lengths before it reads; nothing here allocates except buffer growth in builders.
 */
#include "pg/msg.h"

#include <string.h>

uint32_t pg_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint16_t pg_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

int pg_hdr_parse(const uint8_t *p, size_t n, uint32_t max, struct pg_hdr *out)
{
    if (n < 5) return PG_NEED_MORE;
    out->type = p[0];
    out->len = pg_get_u32(p + 1);
    if (out->len < 4 || out->len > max) return PG_BAD;
    return PG_OK;
}

/* Next NUL-terminated string in [*p, end); advances *p past the NUL. */
static const char *next_cstring(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
    if (!nul) return NULL;
    const char *s = (const char *)*p;
    *p = nul + 1;
    return s;
}

int pg_startup_parse(const uint8_t *p, size_t n, struct pg_startup *out)
{
    static const char layout[] = "invalid startup packet layout: expected terminator as last byte";
    if (n < 4) return PG_NEED_MORE;
    memset(out, 0, sizeof *out);
    uint32_t len = pg_get_u32(p);
    if (len < 8 || len > PG_MAX_STARTUP) return PG_BAD;
    if (n < len) return PG_NEED_MORE;
    out->len = len;
    out->code = pg_get_u32(p + 4);
    if (out->code == PG_SSL_REQUEST || out->code == PG_GSSENC_REQUEST)
        return len == 8 ? PG_OK : PG_BAD;
    if (out->code == PG_CANCEL_REQUEST) {
        if (len != 16) return PG_BAD;
        out->cancel_pid = pg_get_u32(p + 8);
        out->cancel_key = pg_get_u32(p + 12);
        return PG_OK;
    }
    if (out->code >> 16 != 3) return PG_OK; /* the caller refuses the version */
    const uint8_t *q = p + 8, *end = p + len;
    out->bad = layout;
    for (;;) {
        if (q >= end) return PG_BAD; /* the closing empty name is missing */
        if (*q == 0) {
            q++;
            break;
        }
        const char *k = next_cstring(&q, end);
        const char *v = k ? next_cstring(&q, end) : NULL;
        if (!v) return PG_BAD;
        if (out->n_params == PG_MAX_PARAMS) {
            out->bad = "sluice: more than 64 startup parameters";
            return PG_BAD;
        }
        out->keys[out->n_params] = k;
        out->vals[out->n_params] = v;
        out->n_params++;
    }
    if (q != end) return PG_BAD;
    out->bad = NULL;
    return PG_OK;
}

const char *pg_startup_get(const struct pg_startup *st, const char *key)
{
    for (unsigned i = 0; i < st->n_params; i++)
        if (strcmp(st->keys[i], key) == 0) return st->vals[i];
    return NULL;
}

int pg_auth_parse(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **data,
                  size_t *dlen)
{
    if (len < 4) return PG_BAD;
    *code = pg_get_u32(body);
    *data = body + 4;
    *dlen = len - 4;
    return PG_OK;
}

int pg_error_parse(const uint8_t *body, size_t len, struct pg_error_view *out)
{
    out->severity = out->sqlstate = out->message = out->detail = "";
    const uint8_t *p = body, *end = body + len;
    while (p < end && *p) {
        uint8_t field = *p++;
        const char *v = next_cstring(&p, end);
        if (!v) return PG_BAD;
        switch (field) {
        case 'S':
            out->severity = v;
            break;
        case 'C':
            out->sqlstate = v;
            break;
        case 'M':
            out->message = v;
            break;
        case 'D':
            out->detail = v;
            break;
        default:
            break;
        }
    }
    return p < end ? PG_OK : PG_BAD;
}

int pg_backend_key_parse(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    if (len != 8) return PG_BAD;
    *pid = pg_get_u32(body);
    *key = pg_get_u32(body + 4);
    return PG_OK;
}

int pg_param_status_parse(const uint8_t *body, size_t len, const char **name, const char **value)
{
    const uint8_t *p = body, *end = body + len;
    *name = next_cstring(&p, end);
    *value = *name ? next_cstring(&p, end) : NULL;
    return *value && p == end ? PG_OK : PG_BAD;
}

int pg_sasl_initial_parse(const uint8_t *body, size_t len, const char **mech, const uint8_t **data,
                          int32_t *dlen)
{
    const uint8_t *p = body, *end = body + len;
    *mech = next_cstring(&p, end);
    if (!*mech || end - p < 4) return PG_BAD;
    *dlen = (int32_t)pg_get_u32(p);
    p += 4;
    if (*dlen < -1 || (*dlen >= 0 && (size_t)*dlen != (size_t)(end - p))) return PG_BAD;
    if (*dlen == -1 && p != end) return PG_BAD;
    *data = p;
    return PG_OK;
}

int pg_body_cstring(const uint8_t *body, size_t len, const char **s)
{
    if (len == 0 || body[len - 1] != 0 || memchr(body, 0, len) != body + len - 1) return PG_BAD;
    *s = (const char *)body;
    return PG_OK;
}

/* The start is kept relative to b->off: an append that needs room compacts the buffer
 * (moves [off, len) to the front), which would leave an absolute position stale. */
size_t pg_msg_begin(struct buf *b, uint8_t type)
{
    buf_append_u8(b, type);
    size_t start = b->len - 1 - b->off;
    buf_append_u32(b, 0);
    return start;
}

void pg_msg_end(struct buf *b, size_t start)
{
    size_t pos = b->off + start;
    buf_patch_u32(b, pos + 1, (uint32_t)(b->len - pos - 1));
}

/* ErrorResponse and NoticeResponse share their field layout. */
static void put_fields(struct buf *b, uint8_t type, const char *severity, const char *sqlstate,
                       const char *message, const char *detail, const char *hint)
{
    size_t m = pg_msg_begin(b, type);
    buf_append_u8(b, 'S');
    buf_append_str(b, severity);
    buf_append_u8(b, 'V');
    buf_append_str(b, severity);
    buf_append_u8(b, 'C');
    buf_append_str(b, sqlstate);
    buf_append_u8(b, 'M');
    buf_append_str(b, message);
    if (detail) {
        buf_append_u8(b, 'D');
        buf_append_str(b, detail);
    }
    if (hint) {
        buf_append_u8(b, 'H');
        buf_append_str(b, hint);
    }
    buf_append_u8(b, 0);
    pg_msg_end(b, m);
}

void pg_put_error(struct buf *b, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint)
{
    put_fields(b, 'E', severity, sqlstate, message, detail, hint);
}

void pg_put_notice(struct buf *b, const char *sqlstate, const char *message)
{
    put_fields(b, 'N', "NOTICE", sqlstate, message, NULL, NULL);
}

void pg_put_auth(struct buf *b, uint32_t code, const void *data, size_t dlen)
{
    size_t m = pg_msg_begin(b, 'R');
    buf_append_u32(b, code);
    if (dlen) buf_append(b, data, dlen);
    pg_msg_end(b, m);
}

void pg_put_backend_key(struct buf *b, uint32_t pid, uint32_t key)
{
    size_t m = pg_msg_begin(b, 'K');
    buf_append_u32(b, pid);
    buf_append_u32(b, key);
    pg_msg_end(b, m);
}

void pg_put_ready(struct buf *b, uint8_t status)
{
    size_t m = pg_msg_begin(b, 'Z');
    buf_append_u8(b, status);
    pg_msg_end(b, m);
}

void pg_put_negotiate_version(struct buf *b, uint32_t version, const char *const *opts,
                              unsigned n_opts)
{
    size_t m = pg_msg_begin(b, 'v');
    buf_append_u32(b, version);
    buf_append_u32(b, n_opts);
    for (unsigned i = 0; i < n_opts; i++)
        buf_append_str(b, opts[i]);
    pg_msg_end(b, m);
}

void pg_put_startup(struct buf *b, const char *const *keys, const char *const *vals, unsigned n)
{
    buf_append_u32(b, 0);
    size_t rel = b->len - 4 - b->off; /* relative to off: see pg_msg_begin */
    buf_append_u32(b, PG_PROTO_V3);
    for (unsigned i = 0; i < n; i++) {
        buf_append_str(b, keys[i]);
        buf_append_str(b, vals[i]);
    }
    buf_append_u8(b, 0);
    size_t start = b->off + rel;
    buf_patch_u32(b, start, (uint32_t)(b->len - start));
}

void pg_put_ssl_request(struct buf *b)
{
    buf_append_u32(b, 8);
    buf_append_u32(b, PG_SSL_REQUEST);
}

void pg_put_cancel(struct buf *b, uint32_t pid, uint32_t key)
{
    buf_append_u32(b, 16);
    buf_append_u32(b, PG_CANCEL_REQUEST);
    buf_append_u32(b, pid);
    buf_append_u32(b, key);
}

void pg_put_password(struct buf *b, const char *password)
{
    size_t m = pg_msg_begin(b, 'p');
    buf_append_str(b, password);
    pg_msg_end(b, m);
}

void pg_put_sasl_initial(struct buf *b, const char *mech, const void *data, size_t dlen)
{
    size_t m = pg_msg_begin(b, 'p');
    buf_append_str(b, mech);
    buf_append_u32(b, (uint32_t)dlen);
    if (dlen) buf_append(b, data, dlen); /* data may be NULL when dlen is 0 */
    pg_msg_end(b, m);
}

void pg_put_sasl_response(struct buf *b, const void *data, size_t dlen)
{
    size_t m = pg_msg_begin(b, 'p');
    if (dlen) buf_append(b, data, dlen);
    pg_msg_end(b, m);
}

void pg_put_terminate(struct buf *b)
{
    size_t m = pg_msg_begin(b, 'X');
    pg_msg_end(b, m);
}

uint64_t pg_tag_rows(const uint8_t *body, size_t len)
{
    const uint8_t *end = memchr(body, 0, len);
    if (!end) return 0;
    const uint8_t *sp = NULL;
    for (const uint8_t *p = body; p < end; p++)
        if (*p == ' ') sp = p;
    uint64_t n = 0;
    for (const uint8_t *p = sp ? sp + 1 : end; p < end && *p >= '0' && *p <= '9'; p++)
        n = n * 10 + (uint64_t)(*p - '0');
    return n;
}
