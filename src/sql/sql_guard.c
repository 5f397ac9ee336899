/*
 * sql_guard.c: refuse to hand libpg_query a string whose parse tree could be deep enough to
 * overflow the stack. The grammar itself is safe (bison keeps its own stack and stops at
 * 10,000 levels of parentheses or nested calls with "memory exhausted"), but left-deep chains
 * need no parentheses: `1+1+1...`, `x::int::int...`, `a IS NULL IS NULL...`, long UNION or
 * JOIN chains. libpg_query's JSON output, fingerprint and normalize then recurse once per
 * level, about 100 to 200 bytes of stack each.
 *
 * The check runs libpg_query's scanner (flex, no recursion) and counts the tokens that can add
 * such a level (sql_scan, sql_scan.c); strings shorter than SQL_GUARD_MIN_LEN cannot hold
 * enough of them to matter and are not scanned.
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

struct guard_scan {
    const char *sql;
    size_t len;
    struct level *lv;
    unsigned top, max;
};

static void guard_token(void *ctx, uint64_t start, uint64_t end, uint64_t token, uint64_t kwkind)
{
    struct guard_scan *g = ctx;
    estimate_token(g->sql, g->len, start, end, token, kwkind, g->lv, &g->top, &g->max);
}

int sql_guard_too_deep(const char *sql, size_t len, unsigned *depth)
{
    *depth = 0;
    if (len < SQL_GUARD_MIN_LEN) return 0;
    struct guard_scan g = {sql, len, malloc(GUARD_LEVELS * sizeof *g.lv), 0, 0};
    if (!g.lv) return 1;
    g.lv[0] = (struct level){0};
    int r = sql_scan(sql, guard_token, &g);
    free(g.lv);
    *depth = g.max;
    /* A scan error: the parser will report the same error without building a tree. A result
     * we cannot decode is treated as too deep: refuse rather than risk a crash. */
    if (r == SQL_SCAN_ERROR) return 0;
    return r == SQL_SCAN_UNDECODED || g.max > SQL_GUARD_MAX_DEPTH;
}
