/*
 * test_cache.c: unit tests of the parse cache (src/sql/cache.c). A cache hit must never yield
 * facts different from a full parse of the same text. Three parts:
 *  - the key: literals blanked; no key at all for anything whose tokenizing may depend on
 *    settings or context (comments, backslashes, prefixed strings, dollar quotes, numbers glued
 *    to names, unterminated quotes, control bytes); which literals count as compared with a
 *    column;
 *  - a property test: every statement of tests/unit/sql_facts.tsv (plus literal-sensitive
 *    extras) and many literal variants of it (numbers swapped for others and made equal to
 *    build tautologies, strings swapped for 'role', 'none', 'on', ...), in both orders: the
 *    cached facts of the second must equal a fresh sql_analyze() of it;
 *  - timing of a hit and a miss on pgbench's SELECT (printed), and the hit/miss counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sql/sql.h"

/* ---- helpers ---- */

static void append(char *out, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(out);
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + n, cap - n, fmt, ap);
    va_end(ap);
}

static int diff_list(const char *what, char **a, unsigned na, char **b, unsigned nb, char *out,
                     size_t cap)
{
    int bad = na != nb;
    for (unsigned i = 0; !bad && i < na; i++)
        bad = strcmp(a[i], b[i]) != 0;
    if (bad) {
        append(out, cap, "  %s:", what);
        for (unsigned i = 0; i < na; i++)
            append(out, cap, " %s", a[i]);
        append(out, cap, " | fresh:");
        for (unsigned i = 0; i < nb; i++)
            append(out, cap, " %s", b[i]);
        append(out, cap, "\n");
    }
    return bad;
}

/*
 * Compare cached facts c with fresh facts f; describe every difference in out. Returns the
 * number of differences. Fingerprint and normalized text count too: grants are keyed by the
 * fingerprint and the audit stores the normalized text.
 */
static int facts_diff(const struct sql_facts *c, const struct sql_facts *f, char *out, size_t cap)
{
    int bad = 0;
    out[0] = '\0';
    if (c->n_stmts != f->n_stmts) {
        append(out, cap, "  statements: %u | fresh: %u\n", c->n_stmts, f->n_stmts);
        return 1;
    }
    if (c->fingerprint != f->fingerprint) {
        append(out, cap, "  fingerprint: %016llx | fresh: %016llx\n",
               (unsigned long long)c->fingerprint, (unsigned long long)f->fingerprint);
        bad++;
    }
    if ((c->normalized == NULL) != (f->normalized == NULL) ||
        (c->normalized && strcmp(c->normalized, f->normalized))) {
        append(out, cap, "  normalized: %s | fresh: %s\n", c->normalized ? c->normalized : "-",
               f->normalized ? f->normalized : "-");
        bad++;
    }
    if ((c->error == NULL) != (f->error == NULL)) {
        append(out, cap, "  parse error: %s | fresh: %s\n", c->error ? "yes" : "no",
               f->error ? "yes" : "no");
        bad++;
    }
    for (unsigned i = 0; i < c->n_stmts; i++) {
        const struct sql_stmt *x = &c->stmts[i], *y = &f->stmts[i];
        if (strcmp(x->command, y->command)) {
            append(out, cap, "  [%u] command: %s | fresh: %s\n", i, x->command, y->command);
            bad++;
        }
        if (x->cls != y->cls) {
            append(out, cap, "  [%u] class: %s | fresh: %s\n", i, sql_class_name(x->cls),
                   sql_class_name(y->cls));
            bad++;
        }
        if (x->flags != y->flags) {
            append(out, cap, "  [%u] flags: 0x%x | fresh: 0x%x\n", i, x->flags, y->flags);
            bad++;
        }
        bad += diff_list("read", x->tables_read, x->n_read, y->tables_read, y->n_read, out, cap);
        bad += diff_list("written", x->tables_written, x->n_written, y->tables_written,
                         y->n_written, out, cap);
        bad += diff_list("functions", x->functions, x->n_functions, y->functions, y->n_functions,
                         out, cap);
    }
    return bad;
}

static unsigned long cache_hits(void)
{
    unsigned long h, m;
    sql_cache_stats(&h, &m);
    return h;
}

/* ---- the key ---- */

static int key_of(const char *sql, char *out, size_t cap, bool *compared)
{
    *compared = false;
    return sql_cache_key_for_test(sql, out, cap, compared);
}

static void test_key_blanks_literals(void **state)
{
    (void)state;
    char a[512], b[512];
    bool ca, cb;
    int na = key_of("SELECT abalance FROM pgbench_accounts WHERE aid = 5;", a, sizeof a, &ca);
    int nb = key_of("SELECT abalance FROM pgbench_accounts WHERE aid = 77;", b, sizeof b, &cb);
    assert_true(na > 0);
    assert_int_equal(na, nb);
    assert_string_equal(a, b);
    assert_true(ca && cb);

    na = key_of("select * from t where name = 'bob' and n = 1.5e3", a, sizeof a, &ca);
    nb = key_of("select * from t where name = 'it''s' and n = 2.25", b, sizeof b, &cb);
    assert_true(na > 0);
    assert_string_equal(a, b);
    /* A small integer may be a column position (ORDER BY 1), a decimal never is. */
    key_of("select * from t order by 1", a, sizeof a, &ca);
    key_of("select * from t order by 1.5", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    key_of("select * from t order by 1", a, sizeof a, &ca);
    key_of("select * from t order by 10000000000", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    key_of("select * from t order by 1", a, sizeof a, &ca);
    key_of("select * from t order by 123456789", b, sizeof b, &cb);
    assert_string_equal(a, b);
    /* Names, parameters and quoted identifiers are part of the key. */
    key_of("select * from t where aid = $1", a, sizeof a, &ca);
    key_of("select * from t where aid = $2", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    key_of("select * from \"T\" where aid = 1", a, sizeof a, &ca);
    key_of("select * from \"U\" where aid = 1", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    key_of("select * from t1 where aid = 1", a, sizeof a, &ca);
    key_of("select * from t2 where aid = 1", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    /* A number and a string are different literals. */
    key_of("select * from t where aid = 1", a, sizeof a, &ca);
    key_of("select * from t where aid = '1'", b, sizeof b, &cb);
    assert_string_not_equal(a, b);
    /* Too small a buffer gives no key rather than a truncated one. */
    assert_int_equal(key_of("select * from pgbench_accounts where aid = 1", a, 10, &ca), -1);
}

static void test_key_refuses_doubtful_text(void **state)
{
    (void)state;
    static const char *const none[] = {
        "select 1 -- comment",
        "select 1 /* comment */",
        "select /* c */ * from t where id = 1",
        "select '\\' from t",
        "select * from t where a = 'x\\'",
        "select E'a\\nb'",
        "select e'x'",
        "select U&'d\\0061t'",
        "select U&\"d\\0061t\" from t",
        "select B'101'",
        "select b'1'",
        "select X'1F'",
        "select x'1f'",
        "select N'abc'",
        "select $$x$$",
        "select $tag$x$tag$",
        "do $$begin end$$",
        "select 0x1F",
        "select 1e",
        "select 1e+",
        "select 5abc",
        "select 1.2.3",
        "select 'a",
        "select 'it''s",
        "select \"unterminated",
        "select 1'a'",
        "select\x01 1",
        "select 1\x7f",
        "select 1 where a = 1\x02",
        "select $1abc",
        "select t.1",
        "select x1.5",
    };
    char k[512];
    bool c;
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        int n = key_of(none[i], k, sizeof k, &c);
        if (n != -1) fprintf(stderr, "expected no key for: %s\n", none[i]);
        assert_int_equal(n, -1);
    }
    /* ... while ordinary text has one. */
    static const char *const some[] = {
        "select 1",
        "select 'a''b', \"x\"\"y\" from t where a = 1.5 and b = .5 and c = 1e10 and d = 2.",
        "select $1, $2 from t",
        "select a$b from t",
        "select 'x'::text",
        "select '-' || '--' || '/*'",
        "select \"--\" from t",
        "select 'é' from café",
    };
    for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) {
        int n = key_of(some[i], k, sizeof k, &c);
        if (n < 0) fprintf(stderr, "expected a key for: %s\n", some[i]);
        assert_true(n >= 0);
    }
}

static void test_key_literals_compared(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        bool compared;
    } cases[] = {
        {"delete from t where col = 5", true},
        {"update t set a = a + -5 where col = 5", true},
        {"update t set a = col + -5", true},
        {"select * from t where t.col <> 'x'", true},
        {"select * from t where aid = $1", true},
        {"select * from t", true}, /* no literal at all */
        {"delete from t where 1 = 1", false},
        {"delete from t where x in (1,2)", false},
        {"delete from t where 5 = col", false},
        {"delete from t where col = 5 or 1", false},
        {"delete from t where col = 1 + 1", false},
        {"delete from t where col between 1 and 2", false},
        {"select 1", false},
        {"delete from t where (1) = col", false},
        /* Reserved words are not columns: TRUE, NULL, WHERE, NOT, AND before an operator. */
        {"delete from t where true = 't'", false},
        {"delete from t where TRUE = 't'", false},
        {"delete from t where null = 5", false},
        {"delete from t where -1 is null", false},
        {"delete from t where col = 1 and -1 is null", false},
        {"delete from t where not -1 = col", false},
        {"delete from t where current_user = 'x'", false},
        {"explain (analyze 0) delete from t", false},
        {"set role 'none'", false},
    };
    char k[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool c = !cases[i].compared;
        int n = sql_cache_key_for_test(cases[i].sql, k, sizeof k, &c);
        if (n < 0 || c != cases[i].compared)
            fprintf(stderr, "literals_compared: want %d for: %s\n", cases[i].compared,
                    cases[i].sql);
        assert_true(n >= 0);
        assert_int_equal(c, cases[i].compared);
    }
}

/* ---- regression cases: the first statement must not lend its facts to the second ---- */

static const char *const pairs[][2] = {
    {"SET ROLE 'none'", "SET ROLE 'admin'"},
    {"set role = 'none'", "set role = 'postgres'"},
    {"set local role to 'none'", "set local role to 'postgres'"},
    {"EXPLAIN (ANALYZE 0) DELETE FROM orders", "EXPLAIN (ANALYZE 1) DELETE FROM orders"},
    {"explain (analyze 'off') delete from orders where id = 1",
     "explain (analyze 'on') delete from orders where id = 1"},
    {"explain (analyze 0) select * from orders", "explain (analyze 1) select * from orders"},
    {"DELETE FROM t WHERE true = 'f'", "DELETE FROM t WHERE true = 't'"},
    {"update t set a = 1 where null is distinct from 5 and 1 = 2",
     "update t set a = 1 where null is distinct from 5 and 1 = 1"},
    {"delete from t where id = 1 and 1 = 2", "delete from t where id = 1 or 1 = 1"},
    {"delete from t where 1 = 2", "delete from t where 1 = 1"},
    {"delete from t where 'a' = 'b'", "delete from t where 'a' = 'a'"},
    {"select set_config('search_path', 'x', false)", "select set_config('role', 'x', false)"},
    {"with d as (delete from t where 1 = 2 returning *) select * from d",
     "with d as (delete from t where 1 = 1 returning *) select * from d"},
};

static void test_regressions(void **state)
{
    (void)state;
    char err[4096];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        for (int order = 0; order < 2; order++) {
            const char *first = pairs[i][order], *second = pairs[i][!order];
            sql_cache_clear();
            assert_non_null(sql_facts_cached(first));
            const struct sql_facts *c = sql_facts_cached(second);
            assert_non_null(c);
            struct sql_facts f;
            assert_int_equal(sql_analyze(second, &f), 0);
            int bad = facts_diff(c, &f, err, sizeof err);
            if (bad) fprintf(stderr, "cache: after\n  %s\nfacts of\n  %s\n%s", first, second, err);
            sql_facts_free(&f);
            assert_int_equal(bad, 0);
        }
    }
    /* The guardrail-relevant facts, spelled out. */
    sql_cache_clear();
    sql_facts_cached("SET ROLE 'none'");
    const struct sql_facts *c = sql_facts_cached("SET ROLE 'admin'");
    assert_true(c->stmts[0].flags & SQL_F_ROLE_CHANGE);
    sql_facts_cached("EXPLAIN (ANALYZE 0) DELETE FROM orders");
    c = sql_facts_cached("EXPLAIN (ANALYZE 1) DELETE FROM orders");
    assert_string_equal(c->stmts[0].command, "DELETE");
    assert_true(c->stmts[0].flags & SQL_F_NO_WHERE);
    sql_facts_cached("DELETE FROM t WHERE true = 'f'");
    c = sql_facts_cached("DELETE FROM t WHERE true = 't'");
    assert_true(c->stmts[0].flags & SQL_F_TAUTOLOGY);
    sql_cache_clear();
}

/* ---- property test over sql_facts.tsv ---- */

static FILE *open_data(const char *name)
{
    char path[1024];
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    snprintf(path, sizeof path, "%.*s/%s", slash ? (int)(slash - file) : 1, slash ? file : ".",
             name);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(path, sizeof path, "tests/unit/%s", name);
        f = fopen(path, "r");
    }
    return f;
}

/* The sql field of sql_facts.tsv: \n, \t and \\ stand for a newline, a tab and a backslash. */
static void unescape(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *p = in; *p && k + 1 < cap; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            out[k++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        } else {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
}

#define MAX_LITS 16

struct lit {
    size_t start, len; /* the number, or the contents between the quotes of a string */
    bool str;
};

static bool word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

/* Find number and plain string literals (a rough tokenizer: it only has to find most). */
static unsigned find_literals(const char *s, struct lit *out)
{
    unsigned n = 0;
    size_t i = 0, len = strlen(s);
    while (i < len && n < MAX_LITS) {
        unsigned char c = (unsigned char)s[i];
        bool glued = i > 0 && (word_char((unsigned char)s[i - 1]) || s[i - 1] == '&');
        if (c == '-' && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
        } else if (c == '/' && s[i + 1] == '*') {
            const char *e = strstr(s + i + 2, "*/");
            i = e ? (size_t)(e - s) + 2 : len;
        } else if (c == '"') {
            i++;
            while (i < len && s[i] != '"')
                i++;
            i++;
        } else if (c == '\'') {
            size_t b = ++i;
            while (i < len && !(s[i] == '\'' && s[i + 1] != '\'')) {
                if (s[i] == '\'' || s[i] == '\\') i++;
                i++;
            }
            if (!glued && i < len) out[n++] = (struct lit){b, i - b, true};
            i++;
        } else if (c >= '0' && c <= '9' && !glued) {
            size_t b = i;
            while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'))
                i++;
            if (i < len && !word_char((unsigned char)s[i]))
                out[n++] = (struct lit){b, i - b, false};
            else if (i == len)
                out[n++] = (struct lit){b, i - b, false};
        } else if (word_char(c)) {
            while (i < len && word_char((unsigned char)s[i]))
                i++;
        } else {
            i++;
        }
    }
    return n;
}

/* Rebuild s with literal k replaced by repl[k] (NULL: unchanged). */
static void build_variant(const char *s, const struct lit *lits, unsigned n,
                          const char *const *repl, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    out[0] = '\0';
    for (unsigned k = 0; k <= n; k++) {
        size_t end = k < n ? lits[k].start : strlen(s);
        size_t m = end - i;
        if (o + m + 1 >= cap) return;
        memcpy(out + o, s + i, m);
        o += m;
        if (k == n) break;
        const char *r = repl[k] ? repl[k] : "";
        size_t rl = repl[k] ? strlen(r) : lits[k].len;
        if (!repl[k]) r = s + lits[k].start;
        if (o + rl + 1 >= cap) return;
        memcpy(out + o, r, rl);
        o += rl;
        i = lits[k].start + lits[k].len;
    }
    out[o] = '\0';
}

static const char *const num_pool[] = {"0", "1", "2", "5", "42", "1.5", "10000000000"};
static const char *const str_pool[] = {"role",        "session_authorization",
                                       "search_path", "none",
                                       "NONE",        "x",
                                       "t",           "f",
                                       "true",        "false",
                                       "on",          "off",
                                       "0",           "1",
                                       "yes",         "",
                                       "a",           "b",
                                       "1.5",         "null"};
#define NPOOL(a) (sizeof(a) / sizeof((a)[0]))

struct prop {
    unsigned statements, variants, pairs, failures;
    unsigned long hits_before;
};

/* Cache a then b; b's cached facts must equal a fresh analysis of b. */
static void check_pair(struct prop *p, const char *a, const char *b)
{
    char err[4096];
    sql_cache_clear();
    assert_non_null(sql_facts_cached(a));
    const struct sql_facts *c = sql_facts_cached(b);
    assert_non_null(c);
    struct sql_facts f;
    assert_int_equal(sql_analyze(b, &f), 0);
    p->pairs++;
    if (facts_diff(c, &f, err, sizeof err)) {
        if (p->failures < 20) fprintf(stderr, "cache: after\n  %s\nfacts of\n  %s\n%s", a, b, err);
        p->failures++;
    }
    sql_facts_free(&f);
}

static void check_variant(struct prop *p, const char *sql, const char *variant)
{
    if (!strcmp(sql, variant)) return;
    p->variants++;
    check_pair(p, sql, variant);
    check_pair(p, variant, sql);
}

static void check_statement(struct prop *p, const char *sql)
{
    struct lit lits[MAX_LITS];
    unsigned n = find_literals(sql, lits);
    const char *repl[MAX_LITS];
    char var[8192], nbuf[MAX_LITS][8];
    p->statements++;
    if (!n) return;
    /* Every number (or every string) becomes one value from the pool: all equal. */
    for (size_t v = 0; v < NPOOL(num_pool) + NPOOL(str_pool); v++) {
        for (unsigned k = 0; k < n; k++) {
            repl[k] = NULL;
            if (v < NPOOL(num_pool) && !lits[k].str) repl[k] = num_pool[v];
            if (v >= NPOOL(num_pool) && lits[k].str) repl[k] = str_pool[v - NPOOL(num_pool)];
        }
        build_variant(sql, lits, n, repl, var, sizeof var);
        check_variant(p, sql, var);
    }
    /* All different: 1 = 1 becomes 1 = 2, 'a' = 'a' becomes 'a' = 'b'. */
    for (unsigned k = 0; k < n; k++) {
        snprintf(nbuf[k], sizeof nbuf[k], lits[k].str ? "s%u" : "%u", k + 3);
        repl[k] = nbuf[k];
    }
    build_variant(sql, lits, n, repl, var, sizeof var);
    check_variant(p, sql, var);
    /* One literal at a time takes each value of its pool ... */
    for (unsigned k = 0; k < n && k < 8; k++) {
        size_t np = lits[k].str ? NPOOL(str_pool) : NPOOL(num_pool);
        for (size_t v = 0; v < np; v++) {
            for (unsigned j = 0; j < n; j++)
                repl[j] = NULL;
            repl[k] = lits[k].str ? str_pool[v] : num_pool[v];
            build_variant(sql, lits, n, repl, var, sizeof var);
            check_variant(p, sql, var);
        }
    }
    /* ... or the value of another literal of its kind (equal pairs: 1 = 2 becomes 2 = 2). */
    char copy[MAX_LITS][256];
    for (unsigned k = 0; k < n && k < 8; k++) {
        for (unsigned j = 0; j < n && j < 8; j++) {
            if (j == k || lits[j].str != lits[k].str || lits[j].len >= sizeof copy[0]) continue;
            for (unsigned m = 0; m < n; m++)
                repl[m] = NULL;
            snprintf(copy[k], sizeof copy[k], "%.*s", (int)lits[j].len, sql + lits[j].start);
            repl[k] = copy[k];
            build_variant(sql, lits, n, repl, var, sizeof var);
            check_variant(p, sql, var);
        }
    }
}

/* Literal-sensitive statements beyond the table. */
static const char *const extras[] = {
    "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
    "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;",
    "UPDATE pgbench_accounts SET abalance = abalance + 1234 WHERE aid = 5;",
    ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, "
     "CURRENT_TIMESTAMP);"),
    "delete from t where id = 5",
    "delete from t where id = 5 and 1 = 2",
    "delete from t where id = 5 or 2 = 3",
    "delete from t where x = x and y = 5",
    "delete from t where x = x or y = 5",
    "delete from t where 'a' = 'b'",
    "delete from t where true = 'f'",
    "delete from t where false = 'f'",
    "delete from t where null = 5",
    "delete from t where -1 = -2",
    "delete from t where - 1 is null",
    "delete from t where not - 1 = - 1",
    "delete from t where x = 5 and - 1 = 1",
    "delete from t where (select 1) = 2",
    "delete from t where exists (select 1 where 1 = 2)",
    "delete from t where 1 between 2 and 3",
    "delete from t where 1 in (2, 3)",
    "delete from t where '1'::int = 2",
    "delete from t where 'f'::bool",
    "delete from t where cast('f' as boolean)",
    "update t set a = 1 where 1 = 2",
    "update t set a = 5 where id = 5",
    "merge into t using s on t.id = 1 when matched and 1 = 2 then delete",
    "set role 'none'",
    "set role = 'none'",
    "set role to 'none'",
    "set session authorization 'x'",
    "set search_path = 'x'",
    "set work_mem = '64MB'",
    "set statement_timeout = 5",
    "explain (analyze 0) delete from orders",
    "explain (analyze 'off') delete from orders where id = 1",
    "explain (analyze 0, costs 1) update t set a = 1",
    "explain (analyze 1) select * from t where id = 5",
    "select set_config('search_path', 'x', false)",
    "select set_config('role', 'x', false)",
    "select * from t where id = 5 limit 10",
    "select * from t order by 1 limit 5 offset 10",
    "with d as (delete from t where 1 = 2 returning *) select * from d",
    "with d as (delete from t where id = 5 returning *) select * from d",
    "copy (select * from t where id = 5) to stdout",
    "create table x (a varchar(10), b numeric(5, 2))",
    "alter table t alter column a type varchar(20)",
    "create role x with connection limit 5",
    "alter role x with password 'secret'",
    "prepare p as delete from t where 1 = 2",
    "prepare p as delete from t where id = 5",
    "execute p(5)",
    "fetch 5 from c",
    "select * from t where a = 5; delete from t where b = 6",
    "select * from t where a = 5; set role = 'none'",
    "values (1, 'a'), (2, 'b')",
    "select 1 = 1",
};

static void test_property(void **state)
{
    (void)state;
    FILE *in = open_data("sql_facts.tsv");
    assert_non_null(in);
    struct prop p = {0};
    p.hits_before = cache_hits();
    char line[8192], sql[8192];
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        char *tab = strchr(line, '\t');
        if (tab) *tab = '\0';
        unescape(line, sql, sizeof sql);
        check_statement(&p, sql);
    }
    fclose(in);
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++)
        check_statement(&p, extras[i]);
    unsigned long hits = cache_hits() - p.hits_before;
    fprintf(stderr,
            "cache property: %u statements, %u variants, %u ordered pairs, %lu cache hits, "
            "%u mismatches\n",
            p.statements, p.variants, p.pairs, hits, p.failures);
    sql_cache_clear();
    assert_true(p.statements >= 300);
    assert_true(p.variants >= 1000);
    assert_true(hits >= 1000); /* the property was exercised on hits, not only misses */
    assert_int_equal(p.failures, 0);
}

/* ---- timing and counters ---- */

static double clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void test_timing_and_stats(void **state)
{
    (void)state;
    const int n = 20000, nmiss = 2000;
    char sql[256];
    unsigned long h0, m0, h1, m1;
    sql_cache_clear();
    sql_facts_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 1;");

    sql_cache_stats(&h0, &m0);
    double t0 = clock_us();
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, "SELECT abalance FROM pgbench_accounts WHERE aid = %d;",
                 (i * 7919) % 100000 + 1);
        const struct sql_facts *f = sql_facts_cached(sql);
        assert_non_null(f);
        assert_int_equal(f->n_stmts, 1);
    }
    double hit = (clock_us() - t0) / n;
    sql_cache_stats(&h1, &m1);
    assert_int_equal(h1 - h0, (unsigned long)n);
    assert_int_equal(m1 - m0, 0);

    /* Misses: a new name each time, so every key is new (and stored, evicting others). */
    h0 = h1;
    m0 = m1;
    t0 = clock_us();
    for (int i = 0; i < nmiss; i++) {
        snprintf(sql, sizeof sql, "SELECT abalance FROM pgbench_accounts a%d WHERE aid = %d;", i,
                 i + 1);
        const struct sql_facts *f = sql_facts_cached(sql);
        assert_non_null(f);
        assert_string_equal(f->stmts[0].command, "SELECT");
    }
    double miss = (clock_us() - t0) / nmiss;
    sql_cache_stats(&h1, &m1);
    assert_int_equal(h1 - h0, 0);
    assert_int_equal(m1 - m0, (unsigned long)nmiss);

    /* Uncacheable statements (no key) are misses every time. */
    h0 = h1;
    m0 = m1;
    for (int i = 0; i < 3; i++)
        sql_facts_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 1; -- c");
    sql_cache_stats(&h1, &m1);
    assert_int_equal(h1 - h0, 0);
    assert_int_equal(m1 - m0, 3);

    fprintf(stderr,
            "sql_facts_cached on pgbench -S SELECT: hit %.2f us, miss %.2f us CPU per call "
            "(%d hits, %d misses)\n",
            hit, miss, n, nmiss);
    sql_cache_clear();
    assert_true(hit * 2 < miss);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_blanks_literals),
        cmocka_unit_test(test_key_refuses_doubtful_text),
        cmocka_unit_test(test_key_literals_compared),
        cmocka_unit_test(test_regressions),
        cmocka_unit_test(test_property),
        cmocka_unit_test(test_timing_and_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
