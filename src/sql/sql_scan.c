/*
 * sql_scan.c: the tokens of a SQL string from libpg_query's own scanner (flex, no recursion,
 * so safe on any input), and what sluice builds on them: the audit's text with no literal
 * value left in it (sql_blank_literals).
 *
 * The scan result is protobuf (pg_query.ScanResult); it is decoded by hand here: the message
 * is tiny and holds a few varint fields per token.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>

#include "core/buf.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

struct pb {
    const uint8_t *p, *end;
};

static int pb_varint(struct pb *b, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* Skip a field of wire type wt. */
static int pb_skip(struct pb *b, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0:
        return pb_varint(b, &v);
    case 1:
        if (b->end - b->p < 8) return -1;
        b->p += 8;
        return 0;
    case 2:
        if (pb_varint(b, &v) || v > (uint64_t)(b->end - b->p)) return -1;
        b->p += v;
        return 0;
    case 5:
        if (b->end - b->p < 4) return -1;
        b->p += 4;
        return 0;
    default:
        return -1;
    }
}

int sql_scan(const char *sql, sql_token_fn fn, void *ctx)
{
    PgQueryScanResult r = pg_query_scan(sql);
    if (r.error) {
        pg_query_free_scan_result(r);
        return SQL_SCAN_ERROR;
    }
    int bad = 0;
    struct pb b = {(const uint8_t *)r.pbuf.data, (const uint8_t *)r.pbuf.data + r.pbuf.len};
    while (b.p < b.end && !bad) {
        uint64_t key;
        if (pb_varint(&b, &key)) {
            bad = 1;
            break;
        }
        if ((key >> 3) != 2 || (key & 7) != 2) { /* not `repeated ScanToken tokens = 2` */
            if (pb_skip(&b, (unsigned)(key & 7))) bad = 1;
            continue;
        }
        uint64_t mlen;
        if (pb_varint(&b, &mlen) || mlen > (uint64_t)(b.end - b.p)) {
            bad = 1;
            break;
        }
        struct pb m = {b.p, b.p + mlen};
        b.p += mlen;
        uint64_t start = 0, end = 0, token = 0, kwkind = 0;
        while (m.p < m.end) {
            uint64_t k, v;
            if (pb_varint(&m, &k)) {
                bad = 1;
                break;
            }
            if ((k & 7) != 0) {
                if (pb_skip(&m, (unsigned)(k & 7))) {
                    bad = 1;
                    break;
                }
                continue;
            }
            if (pb_varint(&m, &v)) {
                bad = 1;
                break;
            }
            switch (k >> 3) {
            case 1:
                start = v;
                break;
            case 2:
                end = v;
                break;
            case 4:
                token = v;
                break;
            case 5:
                kwkind = v;
                break;
            default:
                break;
            }
        }
        if (!bad) fn(ctx, start, end, token, kwkind);
    }
    pg_query_free_scan_result(r);
    return bad ? SQL_SCAN_UNDECODED : 0;
}

/* Token number of a parameter ($1) in the PostgreSQL 15 grammar. */
#define TOKEN_PARAM 267

static void note_param(void *ctx, uint64_t start, uint64_t end, uint64_t token, uint64_t kwkind)
{
    (void)start;
    (void)end;
    (void)kwkind;
    if (token == TOKEN_PARAM) *(bool *)ctx = true;
}

bool sql_has_params(const char *sql)
{
    bool found = false;
    return sql_scan(sql, note_param, &found) != 0 || found;
}

/* Token numbers of the literals (PostgreSQL 15 grammar): FCONST, SCONST, USCONST, BCONST,
 * XCONST, ICONST. */
static bool is_literal(uint64_t token)
{
    return (token >= 260 && token <= 264) || token == 266;
}

struct blank {
    const char *sql;
    size_t len, done; /* bytes of sql copied to out so far */
    char *out;        /* room for len + 4 bytes: every literal is at least as long as '?' */
    size_t n;
    bool open; /* a literal whose end the scanner did not give (U&'...': end == start) */
};

/* Blank sql[start, end) as one '?'. */
static void blank_range(struct blank *b, size_t start, size_t end)
{
    memcpy(b->out + b->n, b->sql + b->done, start - b->done);
    b->n += start - b->done;
    b->out[b->n++] = '?';
    b->done = end;
}

/* An open literal ends where the next token starts (or the text ends), white space aside. */
static void blank_close(struct blank *b, size_t next)
{
    if (!b->open) return;
    b->open = false;
    size_t end = next;
    while (end > b->done && strchr(" \t\r\n\f", b->sql[end - 1]))
        end--;
    blank_range(b, b->done, end > b->done ? end : next);
}

static void blank_token(void *ctx, uint64_t start, uint64_t end, uint64_t token, uint64_t kwkind)
{
    struct blank *b = ctx;
    if (start > b->len || end > b->len) return;
    blank_close(b, (size_t)start);
    if (kwkind || !is_literal(token) || start < b->done) return;
    if (end <= start) { /* its end comes with the next token */
        memcpy(b->out + b->n, b->sql + b->done, (size_t)start - b->done);
        b->n += (size_t)start - b->done;
        b->done = (size_t)start;
        b->open = true;
        return;
    }
    blank_range(b, (size_t)start, (size_t)end);
}

char *sql_blank_literals(const char *sql)
{
    size_t len = strlen(sql);
    struct blank b = {sql, len, 0, xmalloc(len + 4), 0, false};
    if (sql_scan(sql, blank_token, &b) == 0) {
        blank_close(&b, len);
        memcpy(b.out + b.n, sql + b.done, len - b.done);
        b.out[b.n + len - b.done] = '\0';
        return b.out;
    }
    /* The scanner stopped (an unterminated quote or comment, a bad escape): what follows the
     * first quote or comment may be a value; only the text before it is kept, and numbers in
     * it (not parts of names) are blanked. */
    size_t keep = strcspn(sql, "'\"$");
    const char *comment = strstr(sql, "/*");
    if (comment && (size_t)(comment - sql) < keep) keep = (size_t)(comment - sql);
    size_t n = 0;
    for (size_t i = 0; i < keep;) {
        bool in_name = i > 0 && (isalnum((unsigned char)sql[i - 1]) || sql[i - 1] == '_');
        if (isdigit((unsigned char)sql[i]) && !in_name) {
            while (i < keep && (isalnum((unsigned char)sql[i]) || sql[i] == '.' || sql[i] == '_'))
                i++;
            b.out[n++] = '?';
        } else {
            b.out[n++] = sql[i++];
        }
    }
    strcpy(b.out + n, keep < len ? "..." : "");
    return b.out;
}
