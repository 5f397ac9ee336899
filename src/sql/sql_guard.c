/*
 * sql_guard.c: refuse to hand libpg_query a string whose parse tree could be deep enough to
 * overflow the stack. The grammar itself is safe (bison keeps its own stack and stops at
 * 10,000 levels of parentheses or nested calls with "memory exhausted"), but left-deep chains
 * need no parentheses: `1+1+1...`, `x::int::int...`, `a IS NULL IS NULL...`, long UNION or
 * JOIN chains. libpg_query's JSON output, fingerprint and normalize then recurse once per
 * level, about 100 to 200 bytes of stack each.
 *
 * The check runs libpg_query's scanner (flex, no recursion) and counts the tokens that can add
 * such a level; strings shorter than SQL_GUARD_MIN_LEN cannot hold enough of them to matter and
 * are not scanned. The scan result is protobuf (pg_query.ScanResult); it is decoded by hand
 * here: the message is tiny and the library's protobuf header is not installed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>

#include "sql/sql_int.h"

/* Token numbers of the PostgreSQL 15 grammar as reported by pg_query_scan. Single-character
 * tokens are their ASCII code. */
enum {
    TOK_OP = 265,             /* any other operator */
    TOK_TYPECAST = 268,       /* :: */
    TOK_NOT_EQUALS_LAST = 274 /* 269..274: .. := => <= >= <> */
};

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

/* Keywords that stand for values (VALUES lists of bulk inserts are full of them). */
static int keyword_is_value(const char *sql, size_t len, uint64_t start, uint64_t end)
{
    static const char *const values[] = {"null", "true", "false", "default"};
    if (end <= start || end > len) return 0;
    size_t n = (size_t)(end - start);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        if (strlen(values[i]) == n && strncasecmp(sql + start, values[i], n) == 0) return 1;
    return 0;
}

static int token_can_nest(const char *sql, size_t len, uint64_t start, uint64_t end, uint64_t token,
                          uint64_t kwkind)
{
    if (kwkind != 0) return !keyword_is_value(sql, len, start, end);
    if (token < 128) return strchr("+-*/%^<>=|&~!@#?", (int)token) != NULL && token != 0;
    return token == TOK_OP || (token >= TOK_TYPECAST && token <= TOK_NOT_EQUALS_LAST);
}

static int keyword_is(const char *sql, size_t len, uint64_t start, uint64_t end, const char *word)
{
    size_t n = strlen(word);
    return end > start && end <= len && (size_t)(end - start) == n &&
           strncasecmp(sql + start, word, n) == 0;
}

/* Depth estimate, one level per parenthesis or bracket. Within a level, `count` grows with
 * every token that can add a tree level and restarts at what separates siblings (a comma, AND,
 * OR: the parser flattens AND and OR chains); `chain` counts UNION, INTERSECT, EXCEPT and JOIN,
 * which nest left-deep across commas, and restarts only at a semicolon. */
struct level {
    unsigned base, count, chain;
};

#define GUARD_LEVELS 12000 /* beyond the grammar's own 10,000 */

static void estimate_token(const char *sql, size_t len, uint64_t start, uint64_t end,
                           uint64_t token, uint64_t kwkind, struct level *lv, unsigned *top,
                           unsigned *max)
{
    struct level *l = &lv[*top];
    if (kwkind == 0 && (token == '(' || token == '[')) {
        unsigned base = l->base + l->count + l->chain + 1;
        if (*top + 1 < GUARD_LEVELS) {
            (*top)++;
            lv[*top] = (struct level){.base = base};
        } else {
            *max = UINT32_MAX; /* deeper than the grammar allows: refuse */
        }
        if (base > *max) *max = base;
        return;
    }
    if (kwkind == 0 && (token == ')' || token == ']')) {
        if (*top > 0) (*top)--;
        return;
    }
    if (kwkind == 0 && token == ',') {
        l->count = 0;
        return;
    }
    if (kwkind == 0 && token == ';') {
        *top = 0;
        lv[0] = (struct level){0};
        return;
    }
    if (kwkind != 0 &&
        (keyword_is(sql, len, start, end, "and") || keyword_is(sql, len, start, end, "or"))) {
        l->count = 0;
        return;
    }
    if (kwkind != 0 &&
        (keyword_is(sql, len, start, end, "union") ||
         keyword_is(sql, len, start, end, "intersect") ||
         keyword_is(sql, len, start, end, "except") || keyword_is(sql, len, start, end, "join")))
        l->chain++;
    else if (token_can_nest(sql, len, start, end, token, kwkind))
        l->count++;
    else
        return;
    unsigned d = l->base + l->count + l->chain;
    if (d > *max) *max = d;
}

int sql_guard_too_deep(const char *sql, size_t len, unsigned *depth)
{
    *depth = 0;
    if (len < SQL_GUARD_MIN_LEN) return 0;
    PgQueryScanResult r = pg_query_scan(sql);
    if (r.error) {
        /* The parser will report the same error without building a tree. */
        pg_query_free_scan_result(r);
        return 0;
    }
    struct level *lv = malloc(GUARD_LEVELS * sizeof *lv);
    if (!lv) {
        pg_query_free_scan_result(r);
        return 1;
    }
    lv[0] = (struct level){0};
    unsigned top = 0, max = 0;
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
        if (!bad) estimate_token(sql, len, start, end, token, kwkind, lv, &top, &max);
    }
    free(lv);
    pg_query_free_scan_result(r);
    *depth = max;
    /* A result we cannot decode is treated as too deep: refuse rather than risk a crash. */
    return bad || max > SQL_GUARD_MAX_DEPTH;
}
