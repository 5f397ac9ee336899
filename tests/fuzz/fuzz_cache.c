/*
 * fuzz_cache.c: libFuzzer target for the parse cache (src/sql/cache.c): a cache hit must never
 * yield facts different from a full parse.
 *
 * The input (at most 4 KiB, copied into a NUL-terminated block) is put in a fresh cache with
 * sql_facts_cached(); then literal variants of it are built (every digit d -> (d+1)%10; every
 * digit -> '1'; the contents of every '...' string -> "role", "none", "t"; numbers and strings
 * made equal, so 1=2 becomes 1=1), and for each variant, in both orders, the cached facts of
 * the second text must equal a fresh sql_analyze() of it: command, class, flags, tables read
 * and written, functions, fingerprint, normalized text and the parse error. Abort on any
 * difference.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql.h"

#define MAX_INPUT 4096

static void fail(const char *first, const char *second, const char *what)
{
    fprintf(stderr,
            "fuzz_cache: cached facts differ from a fresh parse (%s)\nafter:\n%s\nfacts of:\n%s\n",
            what, first, second);
    abort();
}

static void check_list(const char *a_sql, const char *b_sql, char **a, unsigned na, char **b,
                       unsigned nb, const char *what)
{
    if (na != nb) fail(a_sql, b_sql, what);
    for (unsigned i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) fail(a_sql, b_sql, what);
}

/* Put first in a fresh cache, then second: its cached facts must be its real facts. */
static void check_pair(const char *first, const char *second)
{
    sql_cache_clear();
    if (!sql_facts_cached(first)) fail(first, first, "internal failure");
    const struct sql_facts *c = sql_facts_cached(second);
    if (!c) fail(first, second, "internal failure");
    struct sql_facts f;
    if (sql_analyze(second, &f) != 0) fail(first, second, "sql_analyze failed");
    if (c->n_stmts != f.n_stmts) fail(first, second, "statement count");
    if (c->fingerprint != f.fingerprint) fail(first, second, "fingerprint");
    if ((c->normalized == NULL) != (f.normalized == NULL) ||
        (c->normalized && strcmp(c->normalized, f.normalized)))
        fail(first, second, "normalized text");
    if ((c->error == NULL) != (f.error == NULL)) fail(first, second, "parse error");
    for (unsigned i = 0; i < f.n_stmts; i++) {
        const struct sql_stmt *x = &c->stmts[i], *y = &f.stmts[i];
        if (strcmp(x->command, y->command)) fail(first, second, "command");
        if (x->cls != y->cls) fail(first, second, "class");
        if (x->flags != y->flags) fail(first, second, "flags");
        check_list(first, second, x->tables_read, x->n_read, y->tables_read, y->n_read,
                   "tables read");
        check_list(first, second, x->tables_written, x->n_written, y->tables_written, y->n_written,
                   "tables written");
        check_list(first, second, x->functions, x->n_functions, y->functions, y->n_functions,
                   "functions");
    }
    sql_facts_free(&f);
}

static void check_variant(const char *sql, const char *variant)
{
    if (!strcmp(sql, variant)) return;
    check_pair(sql, variant);
    check_pair(variant, sql);
}

/* Digits: mode 0 rotates each digit, mode 1 makes every digit '1'. Strings untouched. */
static void vary_digits(const char *in, char *out, int mode)
{
    size_t i = 0;
    for (; in[i]; i++) {
        char ch = in[i];
        if (ch >= '0' && ch <= '9') ch = mode == 0 ? (char)('0' + (ch - '0' + 1) % 10) : '1';
        out[i] = ch;
    }
    out[i] = '\0';
}

/* The contents of every '...' (with '' inside) become repl. out holds at least cap bytes. */
static void vary_strings(const char *in, char *out, size_t cap, const char *repl)
{
    size_t o = 0, rl = strlen(repl);
    const char *p = in;
    while (*p && o + 1 < cap) {
        if (*p != '\'') {
            out[o++] = *p++;
            continue;
        }
        out[o++] = *p++; /* opening quote */
        while (*p && !(p[0] == '\'' && p[1] != '\''))
            p += p[0] == '\'' ? 2 : 1;
        if (o + rl + 2 >= cap) break;
        memcpy(out + o, repl, rl);
        o += rl;
        if (*p) out[o++] = *p++; /* closing quote */
    }
    out[o] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) size = MAX_INPUT;
    char *sql = malloc(size + 1);
    size_t cap = size * 8 + 64; /* room for string contents growing to "role" */
    char *var = malloc(cap);
    if (!sql || !var) {
        free(sql);
        free(var);
        return 0;
    }
    memcpy(sql, data, size);
    sql[size] = '\0';

    /* The input against itself: a hit on its own entry. */
    check_pair(sql, sql);
    vary_digits(sql, var, 0);
    check_variant(sql, var);
    vary_digits(sql, var, 1);
    check_variant(sql, var);
    static const char *const strs[] = {"role", "none", "t"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        vary_strings(sql, var, cap, strs[i]);
        check_variant(sql, var);
    }
    /* Both at once: every digit '1' and every string 't' (1=2 -> 1=1, 'a'='b' -> 't'='t'). */
    char *tmp = malloc(cap);
    if (tmp) {
        vary_digits(sql, tmp, 1);
        vary_strings(tmp, var, cap, "t");
        check_variant(sql, var);
        free(tmp);
    }
    sql_cache_clear();
    free(var);
    free(sql);
    return 0;
}
