/*
 * fuzz_msg.c: libFuzzer target for the PostgreSQL wire codec (src/pg/msg.c).
 *
 * The input is read three ways: as a startup packet (pg_startup_parse on the raw bytes),
 * as a stream of typed messages from offset 0, and, when a startup packet parses, as the
 * typed stream that follows it (what a client sends). Every complete message body is
 * copied into an exactly sized heap block, so AddressSanitizer catches any read past the
 * body, and handed to the body parsers for its type (all of them for other types). Each
 * parse result is checked against invariants: views stay inside the body and end at a NUL
 * inside it, lengths add up, and what parses rebuilds byte for byte through the builders
 * (which write into a buffer that is made to compact mid-message).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg/msg.h"

#define STREAM_MAX (1u << 20)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_msg: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,       \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The builder buffer; `room` bytes left at its end so builders compact mid-message. */
static struct buf *out;

static void out_reset(size_t room)
{
    if (out) buf_put(out);
    out = buf_get();
    out->len = out->off = out->cap - room;
}

/* Forget what the last builder wrote (as if sent); the next one starts at the tail. */
static void out_consume(void)
{
    out->off = out->len;
}

/* The bytes of the message the last builder wrote equal hdr (type + length) + body. */
static void check_built(uint8_t type, const uint8_t *body, size_t len)
{
    CHECK(buf_avail(out) == 5 + len);
    const uint8_t *m = out->data + out->off;
    CHECK(m[0] == type);
    CHECK(pg_get_u32(m + 1) == len + 4);
    CHECK(len == 0 || memcmp(m + 5, body, len) == 0);
    out_consume();
}

/* s is a string inside [body, body + len) whose NUL is inside too. */
static void check_view(const char *s, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    CHECK(p >= body && p < body + len);
    CHECK(memchr(p, 0, (size_t)(body + len - p)) != NULL);
}

/* Like check_view, or the empty string the error parser uses for missing fields. */
static void check_view_or_empty(const char *s, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    if (p >= body && p < body + len)
        check_view(s, body, len);
    else
        CHECK(s[0] == 0);
}

static void fuzz_auth(const uint8_t *body, size_t len)
{
    uint32_t code;
    const uint8_t *data;
    size_t dlen;
    int rc = pg_auth_parse(body, len, &code, &data, &dlen);
    CHECK(rc == PG_OK || rc == PG_BAD);
    CHECK((rc == PG_OK) == (len >= 4));
    if (rc != PG_OK) return;
    CHECK(data == body + 4 && dlen == len - 4);
    pg_put_auth(out, code, data, dlen);
    check_built('R', body, len);
}

static void fuzz_error(const uint8_t *body, size_t len, uint8_t type)
{
    struct pg_error_view ev;
    int rc = pg_error_parse(body, len, &ev);
    CHECK(rc == PG_OK || rc == PG_BAD);
    if (rc != PG_OK) return;
    CHECK(len >= 1);
    check_view_or_empty(ev.severity, body, len);
    check_view_or_empty(ev.sqlstate, body, len);
    check_view_or_empty(ev.message, body, len);
    check_view_or_empty(ev.detail, body, len);

    /* Rebuild from the view and parse again: the same four fields come back. */
    pg_put_error(out, ev.severity, ev.sqlstate, ev.message, ev.detail[0] ? ev.detail : NULL, NULL);
    const uint8_t *m = out->data + out->off;
    struct pg_hdr h;
    CHECK(pg_hdr_parse(m, buf_avail(out), PG_MAX_MESSAGE, &h) == PG_OK);
    CHECK(h.type == 'E' && h.len + 1 == buf_avail(out));
    struct pg_error_view again;
    CHECK(pg_error_parse(m + 5, h.len - 4, &again) == PG_OK);
    CHECK(strcmp(again.severity, ev.severity) == 0);
    CHECK(strcmp(again.sqlstate, ev.sqlstate) == 0);
    CHECK(strcmp(again.message, ev.message) == 0);
    CHECK(strcmp(again.detail, ev.detail) == 0);
    out_consume();
    (void)type;
}

static void fuzz_backend_key(const uint8_t *body, size_t len)
{
    uint32_t pid, key;
    int rc = pg_backend_key_parse(body, len, &pid, &key);
    CHECK((rc == PG_OK) == (len == 8));
    if (rc != PG_OK) return;
    pg_put_backend_key(out, pid, key);
    check_built('K', body, len);
}

static void fuzz_param_status(const uint8_t *body, size_t len)
{
    const char *name, *value;
    int rc = pg_param_status_parse(body, len, &name, &value);
    CHECK(rc == PG_OK || rc == PG_BAD);
    if (rc != PG_OK) return;
    check_view(name, body, len);
    check_view(value, body, len);
    CHECK((const uint8_t *)name == body);
    CHECK(value == name + strlen(name) + 1);
    CHECK((const uint8_t *)value + strlen(value) + 1 == body + len);
}

static void fuzz_sasl_initial(const uint8_t *body, size_t len)
{
    const char *mech;
    const uint8_t *data;
    int32_t dlen;
    int rc = pg_sasl_initial_parse(body, len, &mech, &data, &dlen);
    CHECK(rc == PG_OK || rc == PG_BAD);
    if (rc != PG_OK) return;
    check_view(mech, body, len);
    CHECK((const uint8_t *)mech == body);
    size_t mlen = strlen(mech) + 1;
    CHECK(dlen >= -1);
    CHECK(data == body + mlen + 4);
    if (dlen == -1) {
        CHECK(len == mlen + 4);
        return;
    }
    CHECK((size_t)dlen == len - mlen - 4);
    pg_put_sasl_initial(out, mech, data, (size_t)dlen);
    check_built('p', body, len);
}

static void fuzz_cstring(const uint8_t *body, size_t len, uint8_t type)
{
    const char *s;
    int rc = pg_body_cstring(body, len, &s);
    CHECK(rc == PG_OK || rc == PG_BAD);
    if (rc != PG_OK) return;
    CHECK((const uint8_t *)s == body && strlen(s) + 1 == len);
    if (type == 'p') {
        pg_put_password(out, s);
        check_built('p', body, len);
    }
}

static void fuzz_body(uint8_t type, const uint8_t *body, size_t len)
{
    switch (type) {
    case 'R':
        fuzz_auth(body, len);
        break;
    case 'E':
    case 'N':
        fuzz_error(body, len, type);
        break;
    case 'K':
        fuzz_backend_key(body, len);
        break;
    case 'S':
        fuzz_param_status(body, len);
        break;
    case 'p': /* PasswordMessage, SASLInitialResponse or SASLResponse */
        fuzz_sasl_initial(body, len);
        fuzz_cstring(body, len, type);
        pg_put_sasl_response(out, body, len);
        check_built('p', body, len);
        break;
    case 'Q':
        fuzz_cstring(body, len, type);
        break;
    case 'Z':
        if (len == 1) {
            pg_put_ready(out, body[0]);
            check_built('Z', body, len);
        }
        break;
    case 'X':
        if (len == 0) {
            pg_put_terminate(out);
            check_built('X', body, len);
        }
        break;
    default: /* any other type: every body parser must still behave */
        fuzz_auth(body, len);
        fuzz_error(body, len, type);
        fuzz_backend_key(body, len);
        fuzz_param_status(body, len);
        fuzz_sasl_initial(body, len);
        fuzz_cstring(body, len, type);
        break;
    }
}

/* Walk typed messages in p[0, n) until the bytes run out or a header is malformed. */
static void fuzz_stream(const uint8_t *p, size_t n)
{
    size_t off = 0;
    for (;;) {
        struct pg_hdr h;
        int rc = pg_hdr_parse(p + off, n - off, STREAM_MAX, &h);
        if (n - off < 5) {
            CHECK(rc == PG_NEED_MORE);
            return;
        }
        if (rc == PG_BAD) {
            uint32_t l = pg_get_u32(p + off + 1);
            CHECK(l < 4 || l > STREAM_MAX);
            return;
        }
        CHECK(rc == PG_OK);
        CHECK(h.type == p[off] && h.len == pg_get_u32(p + off + 1));
        CHECK(h.len >= 4 && h.len <= STREAM_MAX);
        if (n - off - 1 < h.len) return; /* the body is not all there yet */
        size_t blen = h.len - 4;
        uint8_t *body = malloc(blen ? blen : 1);
        CHECK(body != NULL);
        if (blen) memcpy(body, p + off + 5, blen);
        fuzz_body(h.type, body, blen);
        free(body);
        off += 1 + (size_t)h.len;
    }
}

/* Returns the packet length when a startup packet parses, else 0. */
static size_t fuzz_startup(const uint8_t *p, size_t n)
{
    struct pg_startup st;
    int rc = pg_startup_parse(p, n, &st);
    CHECK(rc == PG_OK || rc == PG_BAD || rc == PG_NEED_MORE);
    if (rc == PG_NEED_MORE) {
        CHECK(n < 4 ||
              (pg_get_u32(p) >= 8 && pg_get_u32(p) <= PG_MAX_STARTUP && n < pg_get_u32(p)));
        return 0;
    }
    if (rc == PG_BAD) return 0;
    CHECK(n >= 8);
    CHECK(st.len == pg_get_u32(p) && st.len >= 8 && st.len <= PG_MAX_STARTUP && st.len <= n);
    CHECK(st.code == pg_get_u32(p + 4));
    CHECK(st.n_params <= PG_MAX_PARAMS);

    /* The same packet in an exactly sized block: no read past st.len, same result. */
    uint8_t *exact = malloc(st.len);
    CHECK(exact != NULL);
    memcpy(exact, p, st.len);
    struct pg_startup st2;
    CHECK(pg_startup_parse(exact, st.len, &st2) == PG_OK);
    CHECK(st2.n_params == st.n_params && st2.code == st.code);

    if (st.code == PG_SSL_REQUEST) {
        CHECK(st.len == 8);
        pg_put_ssl_request(out);
        CHECK(buf_avail(out) == 8 && memcmp(out->data + out->off, exact, 8) == 0);
        out_consume();
    } else if (st.code == PG_GSSENC_REQUEST) {
        CHECK(st.len == 8);
    } else if (st.code == PG_CANCEL_REQUEST) {
        CHECK(st.len == 16);
        pg_put_cancel(out, st.cancel_pid, st.cancel_key);
        CHECK(buf_avail(out) == 16 && memcmp(out->data + out->off, exact, 16) == 0);
        out_consume();
    } else if (st.code >> 16 == 3) {
        for (unsigned i = 0; i < st2.n_params; i++) {
            check_view(st2.keys[i], exact, st.len);
            check_view(st2.vals[i], exact, st.len);
            CHECK(st2.keys[i][0] != 0);
            CHECK((const uint8_t *)st2.keys[i] >= exact + 8);
            /* the first parameter of that name wins */
            const char *v = pg_startup_get(&st2, st2.keys[i]);
            CHECK(v != NULL);
            unsigned first = 0;
            while (strcmp(st2.keys[first], st2.keys[i]) != 0)
                first++;
            CHECK(v == st2.vals[first]);
        }
        /* Rebuild: identical but for the version, which the builder sets to 3.0. */
        pg_put_startup(out, st2.keys, st2.vals, st2.n_params);
        CHECK(buf_avail(out) == st.len);
        const uint8_t *m = out->data + out->off;
        CHECK(memcmp(m, exact, 4) == 0);
        CHECK(pg_get_u32(m + 4) == PG_PROTO_V3);
        CHECK(memcmp(m + 8, exact + 8, st.len - 8) == 0);
        out_consume();
    } else {
        CHECK(st.n_params == 0); /* another version: the caller refuses it */
    }
    free(exact);
    return st.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 0 to 31 bytes of room: most builds then compact the buffer mid-message. */
    out_reset(size ? data[size - 1] & 31u : 0);
    size_t used = fuzz_startup(data, size);
    if (used) fuzz_stream(data + used, size - used);
    fuzz_stream(data, size);
    buf_put(out);
    out = NULL;
    return 0;
}
