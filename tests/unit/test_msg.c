/*
 * test_msg.c: unit tests of the PostgreSQL wire codec (src/pg/msg.c). Parsers are fed
 * byte-exact packets as PostgreSQL and libpq send them (and broken variants of each);
 * builders are checked byte for byte against what PostgreSQL puts on the wire and
 * round-tripped through the parsers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pg/msg.h"

/* ---- helpers ---- */

/* Append a big-endian u32 to raw[*n]. */
static void raw_u32(uint8_t *raw, size_t *n, uint32_t v)
{
    raw[(*n)++] = (uint8_t)(v >> 24);
    raw[(*n)++] = (uint8_t)(v >> 16);
    raw[(*n)++] = (uint8_t)(v >> 8);
    raw[(*n)++] = (uint8_t)v;
}

static void raw_bytes(uint8_t *raw, size_t *n, const void *p, size_t len)
{
    memcpy(raw + *n, p, len);
    *n += len;
}

/* Write the packet length (the first 4 bytes) of a startup packet of n bytes. */
static void raw_fix_len(uint8_t *raw, size_t n)
{
    raw[0] = (uint8_t)(n >> 24);
    raw[1] = (uint8_t)(n >> 16);
    raw[2] = (uint8_t)(n >> 8);
    raw[3] = (uint8_t)n;
}

/* Copy into an exactly sized heap block so ASan sees any read past the end. */
static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n) memcpy(q, p, n);
    return q;
}

static int startup_parse_exact(const uint8_t *p, size_t n, struct pg_startup *st)
{
    uint8_t *q = dup_exact(p, n);
    int rc = pg_startup_parse(q, n, st);
    /* Views point into q; tests only compare rc and scalar fields after this. */
    free(q);
    return rc;
}

static void assert_buf_bytes(const struct buf *b, const void *want, size_t n)
{
    assert_int_equal(buf_avail(b), n);
    assert_memory_equal(b->data + b->off, want, n);
}

/* A StartupMessage as psql 15 sends it (user, database, options, application_name,
 * client_encoding), protocol 3.0. */
static const uint8_t psql_startup[] = {
    0x00, 0x00, 0x00, 0x00, /* length, patched by the tests */
    0x00, 0x03, 0x00, 0x00, /* protocol 3.0 */
    'u',  's',  'e',  'r',  0,   'a', 'l', 'i', 'c', 'e', '@', 'c', 'o', 'r', 'p', '.', 'c', 'o',
    'm',  0,    'd',  'a',  't', 'a', 'b', 'a', 's', 'e', 0,   's', 'h', 'o', 'p', 0,   'o', 'p',
    't',  'i',  'o',  'n',  's', 0,   '-', 'c', ' ', 's', 'e', 'a', 'r', 'c', 'h', '_', 'p', 'a',
    't',  'h',  '=',  'a',  'p', 'p', 0,   'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n',
    '_',  'n',  'a',  'm',  'e', 0,   'p', 's', 'q', 'l', 0,   'c', 'l', 'i', 'e', 'n', 't', '_',
    'e',  'n',  'c',  'o',  'd', 'i', 'n', 'g', 0,   'U', 'T', 'F', '8', 0,   0,
};

static size_t psql_startup_copy(uint8_t *raw)
{
    memcpy(raw, psql_startup, sizeof psql_startup);
    raw_fix_len(raw, sizeof psql_startup);
    return sizeof psql_startup;
}

/* ---- pg_hdr_parse ---- */

static void test_hdr_need_more(void **state)
{
    (void)state;
    const uint8_t p[5] = {'Z', 0, 0, 0, 5};
    struct pg_hdr h;
    for (size_t n = 0; n < 5; n++)
        assert_int_equal(pg_hdr_parse(p, n, 1 << 20, &h), PG_NEED_MORE);
    assert_int_equal(pg_hdr_parse(p, 5, 1 << 20, &h), PG_OK);
    assert_int_equal(h.type, 'Z');
    assert_int_equal(h.len, 5);
}

static void test_hdr_bounds(void **state)
{
    (void)state;
    struct pg_hdr h;
    uint8_t p[5] = {'Q', 0, 0, 0, 3};
    assert_int_equal(pg_hdr_parse(p, 5, 1 << 20, &h), PG_BAD); /* len < 4 */
    p[4] = 0;
    assert_int_equal(pg_hdr_parse(p, 5, 1 << 20, &h), PG_BAD); /* len 0 */
    p[4] = 4;
    assert_int_equal(pg_hdr_parse(p, 5, 1 << 20, &h), PG_OK); /* empty body */
    assert_int_equal(h.len, 4);

    /* len == max is accepted, max + 1 is not */
    const uint8_t at_max[5] = {'D', 0x00, 0x10, 0x00, 0x00};
    assert_int_equal(pg_hdr_parse(at_max, 5, 1 << 20, &h), PG_OK);
    assert_int_equal(h.type, 'D');
    assert_int_equal(h.len, 1u << 20);
    const uint8_t over[5] = {'D', 0x00, 0x10, 0x00, 0x01};
    assert_int_equal(pg_hdr_parse(over, 5, 1 << 20, &h), PG_BAD);

    /* all four length bytes count, big-endian */
    const uint8_t big[5] = {'d', 0x01, 0x02, 0x03, 0x04};
    assert_int_equal(pg_hdr_parse(big, 5, PG_MAX_MESSAGE, &h), PG_OK);
    assert_int_equal(h.len, 0x01020304u);
    const uint8_t huge[5] = {'d', 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(pg_hdr_parse(huge, 5, PG_MAX_MESSAGE, &h), PG_BAD);
}

/* ---- pg_startup_parse ---- */

static void test_startup_psql(void **state)
{
    (void)state;
    uint8_t raw[256];
    size_t n = psql_startup_copy(raw);
    struct pg_startup st;
    assert_int_equal(pg_startup_parse(raw, n, &st), PG_OK);
    assert_int_equal(st.len, n);
    assert_int_equal(st.code, PG_PROTO_V3);
    assert_int_equal(st.n_params, 5);
    assert_string_equal(st.keys[0], "user");
    assert_string_equal(st.vals[0], "alice@corp.com");
    assert_string_equal(pg_startup_get(&st, "database"), "shop");
    assert_string_equal(pg_startup_get(&st, "options"), "-c search_path=app");
    assert_string_equal(pg_startup_get(&st, "application_name"), "psql");
    assert_string_equal(pg_startup_get(&st, "client_encoding"), "UTF8");
    assert_null(pg_startup_get(&st, "replication"));
    assert_null(pg_startup_get(&st, "use")); /* no prefix match */
    /* views point into the packet */
    assert_ptr_equal(st.keys[0], (const char *)raw + 8);

    /* Bytes after the packet (pipelined data) are not part of it. */
    uint8_t more[300];
    memcpy(more, raw, n);
    memset(more + n, 'x', 20);
    assert_int_equal(pg_startup_parse(more, n + 20, &st), PG_OK);
    assert_int_equal(st.len, n);

    /* The same packet in an exact-size block (ASan checks every read). */
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_OK);
}

static void test_startup_truncated(void **state)
{
    (void)state;
    uint8_t raw[256];
    size_t n = psql_startup_copy(raw);
    struct pg_startup st;
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(startup_parse_exact(raw, i, &st), PG_NEED_MORE);
    for (size_t i = 4; i < n; i++)
        assert_int_equal(startup_parse_exact(raw, i, &st), PG_NEED_MORE);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_OK);
}

static void test_startup_ssl_gss_cancel(void **state)
{
    (void)state;
    struct pg_startup st;
    const uint8_t ssl[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    assert_int_equal(startup_parse_exact(ssl, sizeof ssl, &st), PG_OK);
    assert_int_equal(st.code, PG_SSL_REQUEST);
    assert_int_equal(st.len, 8);
    assert_int_equal(st.n_params, 0);

    const uint8_t gss[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};
    assert_int_equal(startup_parse_exact(gss, sizeof gss, &st), PG_OK);
    assert_int_equal(st.code, PG_GSSENC_REQUEST);

    const uint8_t cancel[] = {0,    0,    0,    16,   0x04, 0xd2, 0x16, 0x2e,
                              0x00, 0x00, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef};
    assert_int_equal(startup_parse_exact(cancel, sizeof cancel, &st), PG_OK);
    assert_int_equal(st.code, PG_CANCEL_REQUEST);
    assert_int_equal(st.len, 16);
    assert_int_equal(st.cancel_pid, 12345);
    assert_int_equal(st.cancel_key, 0xdeadbeefu);
    for (size_t i = 0; i < sizeof cancel; i++)
        assert_int_equal(startup_parse_exact(cancel, i, &st), PG_NEED_MORE);

    /* request codes with the wrong length are malformed */
    const uint8_t ssl12[] = {0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0};
    assert_int_equal(startup_parse_exact(ssl12, sizeof ssl12, &st), PG_BAD);
    const uint8_t cancel12[] = {0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1};
    assert_int_equal(startup_parse_exact(cancel12, sizeof cancel12, &st), PG_BAD);
    uint8_t cancel20[20] = {0, 0, 0, 20, 0x04, 0xd2, 0x16, 0x2e};
    assert_int_equal(startup_parse_exact(cancel20, sizeof cancel20, &st), PG_BAD);
}

static void test_startup_length_bounds(void **state)
{
    (void)state;
    struct pg_startup st;
    uint8_t raw[16] = {0};
    for (uint32_t len = 0; len < 8; len++) {
        raw_fix_len(raw, len);
        assert_int_equal(startup_parse_exact(raw, sizeof raw, &st), PG_BAD);
        /* the length alone decides: no need to wait for more bytes */
        assert_int_equal(startup_parse_exact(raw, 4, &st), PG_BAD);
    }
    raw_fix_len(raw, PG_MAX_STARTUP + 1);
    assert_int_equal(startup_parse_exact(raw, 4, &st), PG_BAD);
    raw_fix_len(raw, 0xffffffffu);
    assert_int_equal(startup_parse_exact(raw, 4, &st), PG_BAD);
    /* exactly the maximum is allowed: waits for the rest */
    raw_fix_len(raw, PG_MAX_STARTUP);
    assert_int_equal(startup_parse_exact(raw, sizeof raw, &st), PG_NEED_MORE);

    /* a full 10000-byte packet with one long option parses */
    uint8_t *big = calloc(1, PG_MAX_STARTUP);
    assert_non_null(big);
    size_t n = 0;
    raw_u32(big, &n, PG_MAX_STARTUP);
    raw_u32(big, &n, PG_PROTO_V3);
    raw_bytes(big, &n, "options", 8);
    size_t vlen = PG_MAX_STARTUP - n - 2; /* value, its NUL, the closing NUL */
    memset(big + n, 'a', vlen);
    n += vlen;
    big[n++] = 0;
    big[n++] = 0;
    assert_int_equal(n, PG_MAX_STARTUP);
    assert_int_equal(startup_parse_exact(big, n, &st), PG_OK);
    free(big);
}

static void test_startup_malformed_params(void **state)
{
    (void)state;
    struct pg_startup st;
    uint8_t raw[256];
    size_t n;

    /* the closing empty name is missing */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user\0bob\0", 9);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* no parameters and no terminator at all (len == 8) */
    n = 0;
    raw_u32(raw, &n, 8);
    raw_u32(raw, &n, PG_PROTO_V3);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* a key without a value */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user\0bob\0database\0", 18);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* a key whose NUL is missing */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user", 4);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* a value whose NUL is missing (the packet ends inside it) */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user\0bob", 8);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* trailing bytes after the closing empty name */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user\0bob\0\0x", 11);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);

    /* an empty value is fine */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw_bytes(raw, &n, "user\0bob\0options\0\0", 19);
    raw_fix_len(raw, n);
    assert_int_equal(pg_startup_parse(raw, n, &st), PG_OK);
    assert_int_equal(st.n_params, 2);
    assert_string_equal(pg_startup_get(&st, "options"), "");

    /* only the terminator: OK with no parameters */
    n = 0;
    raw_u32(raw, &n, 9);
    raw_u32(raw, &n, PG_PROTO_V3);
    raw[n++] = 0;
    assert_int_equal(pg_startup_parse(raw, n, &st), PG_OK);
    assert_int_equal(st.n_params, 0);
}

static size_t build_many_params(uint8_t *raw, unsigned count)
{
    size_t n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, PG_PROTO_V3);
    for (unsigned i = 0; i < count; i++) {
        n += (size_t)sprintf((char *)raw + n, "k%u", i) + 1; /* key and its NUL */
        raw[n++] = 0;                                        /* empty value */
    }
    raw[n++] = 0;
    raw_fix_len(raw, n);
    return n;
}

static void test_startup_max_params(void **state)
{
    (void)state;
    struct pg_startup st;
    uint8_t raw[1024];
    size_t n = build_many_params(raw, PG_MAX_PARAMS);
    assert_int_equal(pg_startup_parse(raw, n, &st), PG_OK);
    assert_int_equal(st.n_params, PG_MAX_PARAMS);
    assert_string_equal(st.keys[PG_MAX_PARAMS - 1], "k63");
    assert_string_equal(st.vals[PG_MAX_PARAMS - 1], "");
    n = build_many_params(raw, PG_MAX_PARAMS + 1);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);
}

static void test_startup_other_versions(void **state)
{
    (void)state;
    struct pg_startup st;
    uint8_t raw[64];
    size_t n;

    /* protocol 2.0: parses so the caller can refuse it with a proper error */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, 0x00020000u);
    raw_bytes(raw, &n, "whatever, v2 has a fixed layout", 31);
    raw_fix_len(raw, n);
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_OK);
    assert_int_equal(st.code, 0x00020000u);
    assert_int_equal(st.n_params, 0);

    /* protocol 3.2 (a newer minor): parameters are parsed as for 3.0 */
    n = 0;
    raw_u32(raw, &n, 0);
    raw_u32(raw, &n, 0x00030002u);
    raw_bytes(raw, &n, "user\0bob\0_pq_.x\0y\0\0", 19);
    raw_fix_len(raw, n);
    assert_int_equal(pg_startup_parse(raw, n, &st), PG_OK);
    assert_int_equal(st.code, 0x00030002u);
    assert_int_equal(st.n_params, 2);
    assert_string_equal(pg_startup_get(&st, "_pq_.x"), "y");
    /* ... and are equally strict */
    raw[n - 1] = 'z';
    assert_int_equal(startup_parse_exact(raw, n, &st), PG_BAD);
}

/* ---- body parsers ---- */

static void test_auth_parse(void **state)
{
    (void)state;
    uint32_t code;
    const uint8_t *data;
    size_t dlen;

    const uint8_t ok[] = {0, 0, 0, 0};
    assert_int_equal(pg_auth_parse(ok, sizeof ok, &code, &data, &dlen), PG_OK);
    assert_int_equal(code, PG_AUTH_OK);
    assert_int_equal(dlen, 0);

    const uint8_t md5[] = {0, 0, 0, 5, 0x01, 0x02, 0x03, 0x04};
    assert_int_equal(pg_auth_parse(md5, sizeof md5, &code, &data, &dlen), PG_OK);
    assert_int_equal(code, PG_AUTH_MD5);
    assert_int_equal(dlen, 4);
    assert_ptr_equal(data, md5 + 4);

    const uint8_t sasl[] = "\0\0\0\x0aSCRAM-SHA-256\0"; /* + the closing NUL of the literal */
    assert_int_equal(pg_auth_parse(sasl, sizeof sasl, &code, &data, &dlen), PG_OK);
    assert_int_equal(code, PG_AUTH_SASL);
    assert_int_equal(dlen, 15);
    assert_memory_equal(data, "SCRAM-SHA-256\0\0", 15);

    for (size_t n = 0; n < 4; n++)
        assert_int_equal(pg_auth_parse(ok, n, &code, &data, &dlen), PG_BAD);
}

/* An ErrorResponse body as PostgreSQL 15 sends it for a missing table. */
static const char pg15_error_body[] = "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0"
                                      "P15\0Fparse_relation.c\0L1392\0RparserOpenTable\0";
/* sizeof includes the literal's closing NUL: that is the body's terminator. */

static void test_error_parse(void **state)
{
    (void)state;
    struct pg_error_view ev;
    size_t n = sizeof pg15_error_body;
    uint8_t *body = dup_exact(pg15_error_body, n);
    assert_int_equal(pg_error_parse(body, n, &ev), PG_OK);
    assert_string_equal(ev.severity, "ERROR");
    assert_string_equal(ev.sqlstate, "42P01");
    assert_string_equal(ev.message, "relation \"nope\" does not exist");
    assert_string_equal(ev.detail, "");
    assert_true((const uint8_t *)ev.message > body && (const uint8_t *)ev.message < body + n);

    /* the closing NUL missing */
    assert_int_equal(pg_error_parse(body, n - 1, &ev), PG_BAD);
    /* every truncation is malformed */
    for (size_t i = 0; i < n; i++) {
        uint8_t *t = dup_exact(pg15_error_body, i);
        assert_int_equal(pg_error_parse(t, i, &ev), PG_BAD);
        free(t);
    }
    free(body);

    /* a field value without its NUL */
    const uint8_t nonul[] = {'S', 'E', 'R', 'R', 'O', 'R'};
    assert_int_equal(pg_error_parse(nonul, sizeof nonul, &ev), PG_BAD);
    /* a field code alone at the end */
    const uint8_t lone[] = {'S', 'E', 0, 'C'};
    assert_int_equal(pg_error_parse(lone, sizeof lone, &ev), PG_BAD);

    /* only the terminator: OK, every field "" */
    const uint8_t empty[] = {0};
    assert_int_equal(pg_error_parse(empty, 1, &ev), PG_OK);
    assert_string_equal(ev.severity, "");
    assert_string_equal(ev.sqlstate, "");
    assert_string_equal(ev.message, "");
    /* an empty body */
    assert_int_equal(pg_error_parse(empty, 0, &ev), PG_BAD);

    /* a NoticeResponse with detail; unknown field codes are skipped */
    const char notice[] = "SNOTICE\0C00000\0Mhello\0Dsome detail\0xunknown\0";
    assert_int_equal(pg_error_parse((const uint8_t *)notice, sizeof notice, &ev), PG_OK);
    assert_string_equal(ev.severity, "NOTICE");
    assert_string_equal(ev.detail, "some detail");
}

static void test_backend_key_parse(void **state)
{
    (void)state;
    uint32_t pid = 0, key = 0;
    const uint8_t k[] = {0x00, 0x01, 0xe2, 0x40, 0x12, 0x34, 0x56, 0x78, 0xff};
    assert_int_equal(pg_backend_key_parse(k, 8, &pid, &key), PG_OK);
    assert_int_equal(pid, 123456);
    assert_int_equal(key, 0x12345678u);
    assert_int_equal(pg_backend_key_parse(k, 7, &pid, &key), PG_BAD);
    assert_int_equal(pg_backend_key_parse(k, 9, &pid, &key), PG_BAD);
    assert_int_equal(pg_backend_key_parse(k, 0, &pid, &key), PG_BAD);
}

static void test_param_status_parse(void **state)
{
    (void)state;
    const char *name, *value;
    const char ps[] = "server_version\0"
                      "15.4 (Debian 15.4-1)";
    assert_int_equal(pg_param_status_parse((const uint8_t *)ps, sizeof ps, &name, &value), PG_OK);
    assert_string_equal(name, "server_version");
    assert_string_equal(value, "15.4 (Debian 15.4-1)");
    /* value NUL missing */
    assert_int_equal(pg_param_status_parse((const uint8_t *)ps, sizeof ps - 1, &name, &value),
                     PG_BAD);
    /* name only */
    assert_int_equal(pg_param_status_parse((const uint8_t *)ps, 15, &name, &value), PG_BAD);
    /* trailing bytes */
    const char extra[] = "a\0b\0c";
    assert_int_equal(pg_param_status_parse((const uint8_t *)extra, sizeof extra, &name, &value),
                     PG_BAD);
    /* empty name and value are well-formed */
    const uint8_t two[] = {0, 0};
    assert_int_equal(pg_param_status_parse(two, 2, &name, &value), PG_OK);
    assert_int_equal(pg_param_status_parse(two, 0, &name, &value), PG_BAD);
}

static void test_sasl_initial_parse(void **state)
{
    (void)state;
    const char *mech;
    const uint8_t *data;
    int32_t dlen;
    uint8_t raw[128];
    size_t n;

    /* with client-first data, as libpq sends it */
    const char first[] = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
    n = 0;
    raw_bytes(raw, &n, "SCRAM-SHA-256", 14);
    raw_u32(raw, &n, (uint32_t)strlen(first));
    raw_bytes(raw, &n, first, strlen(first));
    uint8_t *b = dup_exact(raw, n);
    assert_int_equal(pg_sasl_initial_parse(b, n, &mech, &data, &dlen), PG_OK);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dlen, (int32_t)strlen(first));
    assert_memory_equal(data, first, strlen(first));
    assert_ptr_equal(data + dlen, b + n);
    /* shorter than the stated length */
    assert_int_equal(pg_sasl_initial_parse(b, n - 1, &mech, &data, &dlen), PG_BAD);
    free(b);
    /* longer than the stated length */
    raw[n++] = 'x';
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_BAD);

    /* -1: no initial response */
    n = 0;
    raw_bytes(raw, &n, "SCRAM-SHA-256", 14);
    raw_u32(raw, &n, 0xffffffffu);
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_OK);
    assert_int_equal(dlen, -1);
    /* -1 followed by bytes */
    raw[n++] = 'x';
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_BAD);

    /* -2 and other negatives */
    n = 0;
    raw_bytes(raw, &n, "SCRAM-SHA-256", 14);
    raw_u32(raw, &n, 0xfffffffeu);
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_BAD);
    n -= 4;
    raw_u32(raw, &n, 0x80000000u);
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_BAD);

    /* zero-length data */
    n = 0;
    raw_bytes(raw, &n, "SCRAM-SHA-256", 14);
    raw_u32(raw, &n, 0);
    assert_int_equal(pg_sasl_initial_parse(raw, n, &mech, &data, &dlen), PG_OK);
    assert_int_equal(dlen, 0);

    /* the length field cut short, the mechanism without NUL */
    for (size_t i = 0; i < n; i++) {
        uint8_t *t = dup_exact(raw, i);
        assert_int_equal(pg_sasl_initial_parse(t, i, &mech, &data, &dlen), PG_BAD);
        free(t);
    }
}

static void test_body_cstring(void **state)
{
    (void)state;
    const char *s;
    const char q[] = "SELECT 1";
    assert_int_equal(pg_body_cstring((const uint8_t *)q, sizeof q, &s), PG_OK);
    assert_string_equal(s, "SELECT 1");
    assert_int_equal(pg_body_cstring((const uint8_t *)q, sizeof q - 1, &s), PG_BAD);
    assert_int_equal(pg_body_cstring((const uint8_t *)q, 0, &s), PG_BAD);
    const char twice[] = "a\0b";
    assert_int_equal(pg_body_cstring((const uint8_t *)twice, sizeof twice, &s), PG_BAD);
    const uint8_t nul[] = {0};
    assert_int_equal(pg_body_cstring(nul, 1, &s), PG_OK);
    assert_string_equal(s, "");
}

static void test_get_ints(void **state)
{
    (void)state;
    const uint8_t p[] = {0xfe, 0xdc, 0xba, 0x98};
    assert_int_equal(pg_get_u32(p), 0xfedcba98u);
    assert_int_equal(pg_get_u16(p), 0xfedc);
}

/* ---- builders ---- */

static void test_put_ready_exact(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_ready(b, 'I');
    const uint8_t want[] = {'Z', 0, 0, 0, 5, 'I'};
    assert_buf_bytes(b, want, sizeof want);
    pg_put_ready(b, 'T');
    pg_put_ready(b, 'E');
    const uint8_t want3[] = {'Z', 0, 0, 0, 5, 'I', 'Z', 0, 0, 0, 5, 'T', 'Z', 0, 0, 0, 5, 'E'};
    assert_buf_bytes(b, want3, sizeof want3);
    buf_put(b);
}

static void test_put_notice_exact(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_notice(b, "01000", "hello");
    static const char body[] = "SNOTICE\0VNOTICE\0C01000\0Mhello\0";
    uint8_t want[64];
    size_t n = 0;
    want[n++] = 'N';
    raw_u32(want, &n, (uint32_t)(4 + sizeof body));
    raw_bytes(want, &n, body, sizeof body);
    assert_buf_bytes(b, want, n);
    buf_put(b);
}

static void test_put_error_exact(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_error(b, "FATAL", "28P01", "password authentication failed for user \"bob\"", NULL,
                 NULL);
    /* PostgreSQL: S, V (non-localized severity), C, M, then the closing NUL. */
    static const char body[] = "SFATAL\0VFATAL\0C28P01\0"
                               "Mpassword authentication failed for user \"bob\"\0";
    uint8_t want[128];
    size_t n = 0;
    want[n++] = 'E';
    raw_u32(want, &n, (uint32_t)(4 + sizeof body));
    raw_bytes(want, &n, body, sizeof body); /* sizeof body includes the terminator */
    assert_int_equal(n, 1 + 4 + 69);
    assert_buf_bytes(b, want, n);

    /* round trip */
    struct pg_hdr h;
    assert_int_equal(pg_hdr_parse(b->data, buf_avail(b), 1 << 20, &h), PG_OK);
    assert_int_equal(h.type, 'E');
    assert_int_equal(h.len + 1, buf_avail(b));
    struct pg_error_view ev;
    assert_int_equal(pg_error_parse(b->data + 5, h.len - 4, &ev), PG_OK);
    assert_string_equal(ev.severity, "FATAL");
    assert_string_equal(ev.sqlstate, "28P01");
    assert_string_equal(ev.message, "password authentication failed for user \"bob\"");
    assert_string_equal(ev.detail, "");
    buf_put(b);
}

static void test_put_error_detail_hint(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_error(b, "ERROR", "42501", "sluice: blocked by rule \"r\": no", "the detail",
                 "ask for approval");
    static const char body[] = "SERROR\0VERROR\0C42501\0Msluice: blocked by rule \"r\": no\0"
                               "Dthe detail\0Hask for approval\0";
    uint8_t want[160];
    size_t n = 0;
    want[n++] = 'E';
    raw_u32(want, &n, (uint32_t)(4 + sizeof body));
    raw_bytes(want, &n, body, sizeof body);
    assert_buf_bytes(b, want, n);
    struct pg_error_view ev;
    assert_int_equal(pg_error_parse(b->data + 5, buf_avail(b) - 5, &ev), PG_OK);
    assert_string_equal(ev.detail, "the detail");
    assert_string_equal(ev.message, "sluice: blocked by rule \"r\": no");
    buf_put(b);
}

static void test_put_auth(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_auth(b, PG_AUTH_OK, NULL, 0);
    const uint8_t ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    assert_buf_bytes(b, ok, sizeof ok);
    b->off = b->len;

    const uint8_t salt[4] = {0xaa, 0xbb, 0xcc, 0xdd};
    pg_put_auth(b, PG_AUTH_MD5, salt, 4);
    const uint8_t md5[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 0xaa, 0xbb, 0xcc, 0xdd};
    assert_buf_bytes(b, md5, sizeof md5);
    b->off = b->len;

    pg_put_auth(b, PG_AUTH_SASL, "SCRAM-SHA-256\0", 15);
    struct pg_hdr h;
    const uint8_t *m = b->data + b->off;
    assert_int_equal(pg_hdr_parse(m, buf_avail(b), 1 << 20, &h), PG_OK);
    assert_int_equal(h.type, 'R');
    assert_int_equal(h.len, 4 + 4 + 15);
    uint32_t code;
    const uint8_t *data;
    size_t dlen;
    assert_int_equal(pg_auth_parse(m + 5, h.len - 4, &code, &data, &dlen), PG_OK);
    assert_int_equal(code, PG_AUTH_SASL);
    assert_int_equal(dlen, 15);
    assert_memory_equal(data, "SCRAM-SHA-256\0", 15);
    buf_put(b);
}

static void test_put_backend_key(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_backend_key(b, 4242, 0xcafebabeu);
    const uint8_t want[] = {'K', 0, 0, 0, 12, 0, 0, 0x10, 0x92, 0xca, 0xfe, 0xba, 0xbe};
    assert_buf_bytes(b, want, sizeof want);
    uint32_t pid, key;
    assert_int_equal(pg_backend_key_parse(b->data + 5, 8, &pid, &key), PG_OK);
    assert_int_equal(pid, 4242);
    assert_int_equal(key, 0xcafebabeu);
    buf_put(b);
}

static void test_put_startup(void **state)
{
    (void)state;
    const char *const keys[] = {"user", "database", "options", "application_name",
                                "client_encoding"};
    const char *const vals[] = {"alice@corp.com", "shop", "-c search_path=app", "psql", "UTF8"};
    struct buf *b = buf_get();
    pg_put_startup(b, keys, vals, 5);
    uint8_t want[256];
    size_t n = psql_startup_copy(want);
    assert_buf_bytes(b, want, n);
    struct pg_startup st;
    assert_int_equal(pg_startup_parse(b->data, buf_avail(b), &st), PG_OK);
    assert_int_equal(st.n_params, 5);
    for (unsigned i = 0; i < 5; i++) {
        assert_string_equal(st.keys[i], keys[i]);
        assert_string_equal(st.vals[i], vals[i]);
    }
    buf_put(b);
}

static void test_put_ssl_cancel(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_ssl_request(b);
    const uint8_t ssl[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    assert_buf_bytes(b, ssl, sizeof ssl);
    b->off = b->len;
    pg_put_cancel(b, 12345, 0xdeadbeefu);
    const uint8_t cancel[] = {0,    0,    0,    16,   0x04, 0xd2, 0x16, 0x2e,
                              0x00, 0x00, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef};
    assert_buf_bytes(b, cancel, sizeof cancel);
    struct pg_startup st;
    assert_int_equal(pg_startup_parse(b->data + b->off, buf_avail(b), &st), PG_OK);
    assert_int_equal(st.code, PG_CANCEL_REQUEST);
    assert_int_equal(st.cancel_pid, 12345);
    assert_int_equal(st.cancel_key, 0xdeadbeefu);
    buf_put(b);
}

static void test_put_password(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_password(b, "md5abc");
    const uint8_t want[] = {'p', 0, 0, 0, 11, 'm', 'd', '5', 'a', 'b', 'c', 0};
    assert_buf_bytes(b, want, sizeof want);
    const char *s;
    assert_int_equal(pg_body_cstring(b->data + 5, 7, &s), PG_OK);
    assert_string_equal(s, "md5abc");
    buf_put(b);
}

static void test_put_sasl(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    const char first[] = "n,,n=,r=abc";
    pg_put_sasl_initial(b, "SCRAM-SHA-256", first, strlen(first));
    struct pg_hdr h;
    assert_int_equal(pg_hdr_parse(b->data, buf_avail(b), 1 << 20, &h), PG_OK);
    assert_int_equal(h.type, 'p');
    assert_int_equal(h.len, 4 + 14 + 4 + strlen(first));
    const char *mech;
    const uint8_t *data;
    int32_t dlen;
    assert_int_equal(pg_sasl_initial_parse(b->data + 5, h.len - 4, &mech, &data, &dlen), PG_OK);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dlen, (int32_t)strlen(first));
    assert_memory_equal(data, first, strlen(first));
    b->off = b->len;

    const char final[] = "c=biws,r=abcdef,p=xyz";
    pg_put_sasl_response(b, final, strlen(final));
    uint8_t want[64];
    size_t n = 0;
    want[n++] = 'p';
    raw_u32(want, &n, (uint32_t)(4 + strlen(final)));
    raw_bytes(want, &n, final, strlen(final)); /* no NUL: raw SASL data */
    assert_buf_bytes(b, want, n);
    b->off = b->len;

    /* empty response with no data pointer */
    pg_put_sasl_response(b, NULL, 0);
    const uint8_t empty[] = {'p', 0, 0, 0, 4};
    assert_buf_bytes(b, empty, sizeof empty);
    buf_put(b);
}

static void test_put_negotiate_version(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    const char *const opts[] = {"_pq_.foo", "_pq_.b"};
    pg_put_negotiate_version(b, PG_PROTO_V3, opts, 2);
    static const uint8_t want[] = {'v', 0, 0,   0,   28,  0,   3,   0,   0,   0,
                                   0,   0, 2,   '_', 'p', 'q', '_', '.', 'f', 'o',
                                   'o', 0, '_', 'p', 'q', '_', '.', 'b', 0};
    assert_buf_bytes(b, want, sizeof want);
    b->off = b->len;
    pg_put_negotiate_version(b, (3u << 16) | 2, NULL, 0);
    const uint8_t none[] = {'v', 0, 0, 0, 12, 0, 3, 0, 2, 0, 0, 0, 0};
    assert_buf_bytes(b, none, sizeof none);
    buf_put(b);
}

static void test_put_terminate(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_terminate(b);
    const uint8_t want[] = {'X', 0, 0, 0, 4};
    assert_buf_bytes(b, want, sizeof want);
    buf_put(b);
}

/* A stream of built messages walks cleanly with pg_hdr_parse. */
static void test_stream_walk(void **state)
{
    (void)state;
    struct buf *b = buf_get();
    pg_put_auth(b, PG_AUTH_OK, NULL, 0);
    pg_put_backend_key(b, 1, 2);
    pg_put_error(b, "ERROR", "42501", "no", NULL, NULL);
    pg_put_ready(b, 'I');
    const uint8_t types[] = {'R', 'K', 'E', 'Z'};
    size_t off = 0, i = 0;
    struct pg_hdr h;
    while (off < b->len) {
        assert_int_equal(pg_hdr_parse(b->data + off, b->len - off, 1 << 20, &h), PG_OK);
        assert_true(i < sizeof types);
        assert_int_equal(h.type, types[i++]);
        off += 1 + h.len;
    }
    assert_int_equal(off, b->len);
    assert_int_equal(i, 4);
    buf_put(b);
}

/* A builder on a buffer that compacts while the message is being written (unsent bytes
 * consumed from the front, the tail almost full) must still patch the right length. */
static void test_put_across_compaction(void **state)
{
    (void)state;
    for (size_t room = 0; room < 16; room++) {
        struct buf *b = buf_get();
        b->len = b->cap - room;
        b->off = b->len - 2; /* two unsent bytes, the rest consumed */
        b->data[b->off] = 'a';
        b->data[b->off + 1] = 'b';
        pg_put_ready(b, 'I');
        const uint8_t want[] = {'a', 'b', 'Z', 0, 0, 0, 5, 'I'};
        assert_buf_bytes(b, want, sizeof want);
        buf_put(b);

        b = buf_get();
        b->len = b->cap - room;
        b->off = b->len;
        pg_put_error(b, "ERROR", "42501", "no", NULL, NULL);
        struct pg_hdr h;
        struct pg_error_view ev;
        assert_int_equal(pg_hdr_parse(b->data + b->off, buf_avail(b), 1 << 20, &h), PG_OK);
        assert_int_equal(h.len + 1, buf_avail(b));
        assert_int_equal(pg_error_parse(b->data + b->off + 5, h.len - 4, &ev), PG_OK);
        assert_string_equal(ev.sqlstate, "42501");
        buf_put(b);

        const char *const k[] = {"user"}, *const v[] = {"bob"};
        b = buf_get();
        b->len = b->cap - room;
        b->off = b->len;
        pg_put_startup(b, k, v, 1);
        struct pg_startup st;
        assert_int_equal(pg_startup_parse(b->data + b->off, buf_avail(b), &st), PG_OK);
        assert_int_equal(st.len, buf_avail(b));
        assert_string_equal(pg_startup_get(&st, "user"), "bob");
        buf_put(b);
    }
}

/* A message bigger than the buffer chunk grows the buffer. */
static void test_put_large(void **state)
{
    (void)state;
    size_t big = 3 * BUF_CHUNK;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    memset(msg, 'm', big);
    msg[big] = 0;
    struct buf *b = buf_get();
    b->off = b->len = 100;
    pg_put_error(b, "ERROR", "XX000", msg, NULL, NULL);
    struct pg_hdr h;
    struct pg_error_view ev;
    assert_int_equal(pg_hdr_parse(b->data + b->off, buf_avail(b), PG_MAX_MESSAGE, &h), PG_OK);
    assert_int_equal(h.len + 1, buf_avail(b));
    assert_int_equal(pg_error_parse(b->data + b->off + 5, h.len - 4, &ev), PG_OK);
    assert_int_equal(strlen(ev.message), big);
    buf_put(b);
    free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_need_more),
        cmocka_unit_test(test_hdr_bounds),
        cmocka_unit_test(test_startup_psql),
        cmocka_unit_test(test_startup_truncated),
        cmocka_unit_test(test_startup_ssl_gss_cancel),
        cmocka_unit_test(test_startup_length_bounds),
        cmocka_unit_test(test_startup_malformed_params),
        cmocka_unit_test(test_startup_max_params),
        cmocka_unit_test(test_startup_other_versions),
        cmocka_unit_test(test_auth_parse),
        cmocka_unit_test(test_error_parse),
        cmocka_unit_test(test_backend_key_parse),
        cmocka_unit_test(test_param_status_parse),
        cmocka_unit_test(test_sasl_initial_parse),
        cmocka_unit_test(test_body_cstring),
        cmocka_unit_test(test_get_ints),
        cmocka_unit_test(test_put_ready_exact),
        cmocka_unit_test(test_put_error_exact),
        cmocka_unit_test(test_put_notice_exact),
        cmocka_unit_test(test_put_error_detail_hint),
        cmocka_unit_test(test_put_auth),
        cmocka_unit_test(test_put_backend_key),
        cmocka_unit_test(test_put_startup),
        cmocka_unit_test(test_put_ssl_cancel),
        cmocka_unit_test(test_put_password),
        cmocka_unit_test(test_put_sasl),
        cmocka_unit_test(test_put_negotiate_version),
        cmocka_unit_test(test_put_terminate),
        cmocka_unit_test(test_stream_walk),
        cmocka_unit_test(test_put_across_compaction),
        cmocka_unit_test(test_put_large),
    };
    return cmocka_run_group_tests_name("pg/msg", tests, NULL, NULL);
}
