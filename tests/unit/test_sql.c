/*
 * test_sql.c: unit tests of statement facts (src/sql/). The bulk is data: every line of
 * tests/unit/sql_facts.tsv is a statement with the command, class, flags, tables read and
 * written and functions it must yield (evasions included: comments, quoting, CTEs with DML,
 * EXPLAIN ANALYZE, PREPARE, COPY ... PROGRAM, SELECT INTO, multi-statement strings). Then the
 * edges: fingerprints and normalized text, parse errors, huge and deeply nested input (must not
 * crash), threads, and a timing of a typical 200-byte SELECT (printed, not asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "sql/sql.h"

/* ---- helpers ---- */

static const struct {
    const char *name;
    unsigned flag;
} flag_names[] = {
    {"NO_WHERE", SQL_F_NO_WHERE},
    {"TAUTOLOGY", SQL_F_TAUTOLOGY},
    {"COPY_PROGRAM", SQL_F_COPY_PROGRAM},
    {"COPY_FILE", SQL_F_COPY_FILE},
    {"ALTER_SYSTEM", SQL_F_ALTER_SYSTEM},
    {"ROLE_CHANGE", SQL_F_ROLE_CHANGE},
    {"ROLE_PRIVILEGE", SQL_F_ROLE_PRIVILEGE},
    {"UNJUDGEABLE", SQL_F_UNJUDGEABLE},
    {"PARSE_ERROR", SQL_F_PARSE_ERROR},
    {"EXPLAIN_ANALYZE", SQL_F_EXPLAIN_ANALYZE},
    {"PREPARE", SQL_F_PREPARE},
    {"TEXT_SETTING", SQL_F_TEXT_SETTING},
    {"NESTED_WRITE", SQL_F_NESTED_WRITE},
    {"DROP_PART", SQL_F_DROP_PART},
    {"LOGIN_STATE", SQL_F_LOGIN_STATE},
};

static void flags_to_str(unsigned flags, char *out, size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++) {
        if (!(flags & flag_names[i].flag)) continue;
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, flag_names[i].name, n - strlen(out) - 1);
    }
    if (!out[0]) snprintf(out, n, "-");
}

/* Parse "A,B" into flags; -1 on an unknown name. */
static long flags_from_str(const char *s)
{
    if (!strcmp(s, "-")) return 0;
    long flags = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
            if (!strcmp(tok, flag_names[i].name)) break;
        if (i == sizeof flag_names / sizeof flag_names[0]) return -1;
        flags |= flag_names[i].flag;
    }
    return flags;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A list as "a,b,c" (sorted) or "-". */
static void list_to_str(char **v, unsigned n, char *out, size_t cap)
{
    const char **s = malloc((n ? n : 1) * sizeof *s);
    for (unsigned i = 0; i < n; i++)
        s[i] = v[i];
    qsort(s, n, sizeof *s, cmp_cstr);
    out[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        if (i) strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, s[i], cap - strlen(out) - 1);
    }
    if (!n) snprintf(out, cap, "-");
    free(s);
}

/* Sort a comma-separated expectation so it compares with list_to_str. */
static void sort_list_str(const char *in, char *out, size_t cap)
{
    if (!strcmp(in, "-")) {
        snprintf(out, cap, "-");
        return;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", in);
    char *items[64];
    unsigned n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok && n < 64;
         tok = strtok_r(NULL, ",", &save))
        items[n++] = tok;
    list_to_str(items, n, out, cap);
}

/* Field i (0-based) of a '|'-separated expectation. */
static void part(const char *field, unsigned i, char *out, size_t cap)
{
    const char *p = field;
    for (unsigned k = 0; k < i && p; k++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) {
        snprintf(out, cap, "?");
        return;
    }
    const char *end = strchr(p, '|');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

static unsigned count_parts(const char *field)
{
    unsigned n = 1;
    for (const char *p = field; *p; p++)
        n += *p == '|';
    return n;
}

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

/* ---- the table ---- */

/* Compare one case; append a description of every mismatch to err. Returns mismatches. */
static int check_case(const char *sql, char **col, char *err, size_t errcap)
{
    struct sql_facts f;
    int bad = 0;
    if (sql_analyze(sql, &f) != 0) {
        snprintf(err + strlen(err), errcap - strlen(err), "  sql_analyze failed\n");
        return 1;
    }
    unsigned want_n = !strcmp(col[0], "(none)") ? 0 : count_parts(col[0]);
    if (f.n_stmts != want_n) {
        snprintf(err + strlen(err), errcap - strlen(err), "  statements: got %u want %u\n",
                 f.n_stmts, want_n);
        sql_facts_free(&f);
        return 1;
    }
    for (unsigned i = 0; i < f.n_stmts; i++) {
        const struct sql_stmt *s = &f.stmts[i];
        char want[1024], got[1024], tmp[1024];
        part(col[0], i, want, sizeof want);
        if (strcmp(want, s->command)) {
            snprintf(err + strlen(err), errcap - strlen(err), "  [%u] command: got %s want %s\n", i,
                     s->command, want);
            bad++;
        }
        part(col[1], i, want, sizeof want);
        if (strcmp(want, sql_class_name(s->cls))) {
            snprintf(err + strlen(err), errcap - strlen(err), "  [%u] class: got %s want %s\n", i,
                     sql_class_name(s->cls), want);
            bad++;
        }
        part(col[2], i, want, sizeof want);
        long wf = flags_from_str(want);
        if (wf < 0 || (unsigned)wf != s->flags) {
            flags_to_str(s->flags, got, sizeof got);
            snprintf(err + strlen(err), errcap - strlen(err), "  [%u] flags: got %s want %s\n", i,
                     got, want);
            bad++;
        }
        char **lists[3] = {s->tables_read, s->tables_written, s->functions};
        unsigned counts[3] = {s->n_read, s->n_written, s->n_functions};
        static const char *const names[3] = {"read", "written", "functions"};
        for (int l = 0; l < 3; l++) {
            part(col[3 + l], i, tmp, sizeof tmp);
            sort_list_str(tmp, want, sizeof want);
            list_to_str(lists[l], counts[l], got, sizeof got);
            if (strcmp(want, got)) {
                snprintf(err + strlen(err), errcap - strlen(err), "  [%u] %s: got %s want %s\n", i,
                         names[l], got, want);
                bad++;
            }
        }
    }
    if (want_n == 1 && (f.stmts[0].flags & SQL_F_PARSE_ERROR)) {
        if (!f.error || f.fingerprint != 0 || f.normalized) {
            snprintf(err + strlen(err), errcap - strlen(err),
                     "  parse error: want error text, no fingerprint, no normalized text\n");
            bad++;
        }
    } else if (f.error) {
        snprintf(err + strlen(err), errcap - strlen(err), "  unexpected error: %s\n", f.error);
        bad++;
    }
    sql_facts_free(&f);
    return bad;
}

static void test_facts_table(void **state)
{
    (void)state;
    FILE *in = open_data("sql_facts.tsv");
    assert_non_null(in);
    char line[8192], sql[8192];
    unsigned lineno = 0, cases = 0, failed = 0;
    while (fgets(line, sizeof line, in)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        char *cols[7];
        int n = 0;
        char *p = line;
        while (n < 7) {
            cols[n++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = '\0';
            p = tab + 1;
        }
        if (n != 7) {
            fprintf(stderr, "sql_facts.tsv:%u: want 7 fields, got %d\n", lineno, n);
            failed++;
            continue;
        }
        unescape(cols[0], sql, sizeof sql);
        char err[4096] = "";
        cases++;
        if (check_case(sql, cols + 1, err, sizeof err)) {
            fprintf(stderr, "sql_facts.tsv:%u: %s\n%s", lineno, cols[0], err);
            failed++;
        }
    }
    fclose(in);
    fprintf(stderr, "sql facts: %u cases, %u failed\n", cases, failed);
    assert_true(cases >= 200);
    assert_int_equal(failed, 0);
}

/* ---- fingerprint, normalize, errors ---- */

static void test_fingerprint_normalize(void **state)
{
    (void)state;
    struct sql_facts a, b, c;
    assert_int_equal(sql_analyze("SELECT * FROM orders WHERE id = 1", &a), 0);
    assert_int_equal(sql_analyze("select * from orders where id = 42", &b), 0);
    assert_int_equal(sql_analyze("select * from orders where cid = 42", &c), 0);
    assert_true(a.fingerprint != 0);
    assert_true(a.fingerprint == b.fingerprint); /* literals do not count */
    assert_true(a.fingerprint != c.fingerprint); /* columns do */
    assert_non_null(a.normalized);
    assert_string_equal(a.normalized, "SELECT * FROM orders WHERE id = $1");
    assert_null(a.error);
    sql_facts_free(&a);
    sql_facts_free(&b);
    sql_facts_free(&c);

    struct sql_facts e;
    assert_int_equal(sql_analyze("SELEC 1", &e), 0);
    assert_int_equal(e.n_stmts, 1);
    assert_string_equal(e.stmts[0].command, "UNKNOWN");
    assert_int_equal(e.stmts[0].cls, SQL_UTILITY);
    assert_int_equal(e.stmts[0].flags, SQL_F_PARSE_ERROR | SQL_F_UNJUDGEABLE);
    assert_non_null(e.error);
    assert_non_null(strstr(e.error, "syntax error"));
    assert_true(e.fingerprint == 0);
    assert_null(e.normalized);
    sql_facts_free(&e);
    sql_facts_free(&e); /* freeing twice is harmless: the struct is zeroed */

    assert_int_equal(sql_analyze(NULL, &e), -1);
}

static void test_class_names(void **state)
{
    (void)state;
    static const char *const names[] = {"read",  "write",       "ddl",    "dcl",
                                        "admin", "transaction", "utility"};
    for (int i = 0; i < SQL_CLASS_COUNT; i++) {
        assert_string_equal(sql_class_name((enum sql_class)i), names[i]);
        assert_int_equal(sql_class_from_name(names[i]), i);
    }
    assert_int_equal(sql_class_from_name("WRITE"), SQL_WRITE);
    assert_int_equal(sql_class_from_name("bogus"), -1);
    assert_int_equal(sql_class_from_name(""), -1);
    assert_int_equal(sql_class_from_name(NULL), -1);
    assert_string_equal(sql_class_name(SQL_CLASS_COUNT), "unknown");
}

/* The savepoint a transaction statement names, as the server keeps it (folded unless
 * quoted), and AND CHAIN; none for any other statement. */
static void test_savepoint_names(void **state)
{
    (void)state;
    struct sql_facts f;
    assert_int_equal(sql_analyze("SAVEPOINT Sp; RELEASE sp; ROLLBACK TO SAVEPOINT \"A b\"; "
                                 "rollback to x; ROLLBACK; COMMIT AND CHAIN; BEGIN; SELECT 1",
                                 &f),
                     0);
    assert_int_equal(f.n_stmts, 8);
    static const char *const want[] = {"sp", "sp", "A b", "x", NULL, NULL, NULL, NULL};
    static const char *const cmd[] = {"SAVEPOINT", "RELEASE", "ROLLBACK", "ROLLBACK",
                                      "ROLLBACK",  "COMMIT",  "BEGIN",    "SELECT"};
    for (unsigned i = 0; i < 8; i++) {
        assert_string_equal(f.stmts[i].command, cmd[i]);
        assert_true(f.stmts[i].chain == (i == 5));
        if (want[i])
            assert_string_equal(f.stmts[i].savepoint, want[i]);
        else
            assert_null(f.stmts[i].savepoint);
    }
    sql_facts_free(&f);
}

/* ---- big and deep input ---- */

static char *repeat_build(const char *head, const char *unit, unsigned n, const char *mid,
                          const char *unit2, unsigned n2, const char *tail)
{
    size_t len =
        strlen(head) + strlen(unit) * n + strlen(mid) + strlen(unit2) * n2 + strlen(tail) + 32;
    char *s = malloc(len);
    assert_non_null(s);
    char *p = s;
    p += sprintf(p, "%s", head);
    for (unsigned i = 0; i < n; i++)
        p += sprintf(p, "%s", unit);
    p += sprintf(p, "%s", mid);
    for (unsigned i = 0; i < n2; i++)
        p += sprintf(p, "%s", unit2);
    sprintf(p, "%s", tail);
    return s;
}

static void expect_unjudgeable(const char *sql)
{
    struct sql_facts f;
    assert_int_equal(sql_analyze(sql, &f), 0);
    assert_int_equal(f.n_stmts, 1);
    assert_string_equal(f.stmts[0].command, "UNKNOWN");
    assert_true(f.stmts[0].flags & SQL_F_UNJUDGEABLE);
    assert_true(f.stmts[0].flags & SQL_F_PARSE_ERROR);
    assert_non_null(f.error);
    sql_facts_free(&f);
}

static void test_huge_in_list(void **state)
{
    (void)state;
    /* 20,000 literals: long, but a flat list. */
    char *sql =
        repeat_build("DELETE FROM orders WHERE id IN (0", ", 123456", 20000, "", "", 0, ")");
    struct sql_facts f;
    assert_int_equal(sql_analyze(sql, &f), 0);
    assert_int_equal(f.n_stmts, 1);
    assert_string_equal(f.stmts[0].command, "DELETE");
    assert_int_equal(f.stmts[0].flags, 0);
    assert_int_equal(f.stmts[0].n_written, 1);
    assert_string_equal(f.stmts[0].tables_written[0], "orders");
    sql_facts_free(&f);
    free(sql);

    /* A bulk insert well past the guard's length threshold is still judged. */
    sql = repeat_build("INSERT INTO t VALUES (1, 'a', true, null)", ", (2, 'b-c', false, default)",
                       20000, "", "", 0, "");
    assert_int_equal(sql_analyze(sql, &f), 0);
    assert_int_equal(f.n_stmts, 1);
    assert_string_equal(f.stmts[0].command, "INSERT");
    assert_int_equal(f.stmts[0].flags, 0);
    sql_facts_free(&f);
    free(sql);

    /* Long but shallow statements pass the depth guard: negative numbers in rows, many
     * computed columns, long OR chains (flattened by the parser), a 300-way UNION ALL. */
    static const struct {
        const char *head, *unit, *tail, *command;
        unsigned n;
    } wide[] = {
        {"INSERT INTO t VALUES (-1, -2.5, 'x')", ", (-1, -2.5, now()::text || 'x')", "", "INSERT",
         5000},
        {"SELECT a + b * 2 - c AS c0", ", a + b * 2 - c::int", " FROM t", "SELECT", 3000},
        {"DELETE FROM t WHERE id = 0", " OR id = 1 AND x <> 2", "", "DELETE", 3000},
        {"SELECT 1", " UNION ALL SELECT 1", "", "SELECT", 300},
    };
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        sql = repeat_build(wide[i].head, wide[i].unit, wide[i].n, "", "", 0, wide[i].tail);
        assert_int_equal(sql_analyze(sql, &f), 0);
        assert_int_equal(f.n_stmts, 1);
        if (strcmp(f.stmts[0].command, wide[i].command))
            fprintf(stderr, "wide case %zu: %s\n", i, f.error ? f.error : f.stmts[0].command);
        assert_string_equal(f.stmts[0].command, wide[i].command);
        assert_null(f.error);
        sql_facts_free(&f);
        free(sql);
    }

    /* A constant IN list that makes the WHERE a tautology. */
    sql = repeat_build("UPDATE t SET a = 1 WHERE 7 IN (1", ", 7", 5000, "", "", 0, ")");
    assert_int_equal(sql_analyze(sql, &f), 0);
    assert_int_equal(f.stmts[0].flags, SQL_F_NO_WHERE | SQL_F_TAUTOLOGY);
    sql_facts_free(&f);
    free(sql);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    struct sql_facts f;
    /* Parentheses around a constant vanish from the tree: fine at any depth the grammar takes. */
    char *sql = repeat_build("SELECT ", "(", 5000, "1", ")", 5000, "");
    assert_int_equal(sql_analyze(sql, &f), 0);
    assert_int_equal(f.n_stmts, 1);
    sql_facts_free(&f);
    free(sql);

    /* Nested subqueries: the grammar's own stack gives up ("memory exhausted"). */
    sql = repeat_build("SELECT ", "(SELECT ", 5000, "1", ")", 5000, "");
    expect_unjudgeable(sql);
    free(sql);

    /* 400 nested subqueries parse but the tree is too deep for cJSON. */
    sql = repeat_build("DELETE FROM t WHERE id IN ", "(SELECT ", 400, "1", ")", 400, "");
    expect_unjudgeable(sql);
    free(sql);

    /* A left-deep chain without parentheses: tree deeper than cJSON takes. */
    sql = repeat_build("SELECT 1", "+1", 2000, "", "", 0, "");
    expect_unjudgeable(sql);
    free(sql);

    /* ... and one long enough to overflow libpg_query's stack if it were parsed. */
    sql = repeat_build("SELECT 1", "+1", 200000, "", "", 0, "");
    expect_unjudgeable(sql);
    free(sql);
    sql = repeat_build("SELECT x", "::int", 100000, "", "", 0, "");
    expect_unjudgeable(sql);
    free(sql);
    sql = repeat_build("SELECT 1", " UNION SELECT 1", 50000, "", "", 0, "");
    expect_unjudgeable(sql);
    free(sql);

    /* NOT NOT NOT ... and nested calls hit the grammar's limit. */
    sql = repeat_build("SELECT ", "NOT ", 100000, "true", "", 0, "");
    expect_unjudgeable(sql);
    free(sql);
    sql = repeat_build("SELECT ", "f(", 20000, "1", ")", 20000, "");
    expect_unjudgeable(sql);
    free(sql);
}

/* ---- approval keys ---- */

static void key_of(const char *sql, char out[SQL_KEY_LEN])
{
    assert_int_equal(sql_approval_key(sql, 0x1234, out), 0);
    assert_int_equal(strlen(out), SQL_KEY_LEN - 1);
}

static void test_approval_key(void **state)
{
    (void)state;
    char a[SQL_KEY_LEN], b[SQL_KEY_LEN];
    /* the same statement with other values, parameters, white space or keyword case */
    key_of("UPDATE t SET v = v + 100 WHERE id <= 1", a);
    const char *same[] = {"UPDATE t SET v = v + 100 WHERE id <= $1",
                          "update t  set v=v+7\nwhere id<=99",
                          "UPDATE t SET v = v + $2 WHERE id <= $1",
                          "UPDATE t SET v = v + 100 WHERE id <= $1::int4",
                          "UPDATE t SET v = v + 100 WHERE id <= 12345;",
                          "  UPDATE t SET v = v + 100 WHERE id <= 1 ;  ",
                          NULL};
    for (const char **s = same; *s; s++) {
        key_of(*s, b);
        assert_string_equal(a, b);
    }
    /* names, digits in them, and the shape deeper than PostgreSQL's fingerprint looks */
    const char *other[] = {"UPDATE t42 SET v = v + 100 WHERE id <= 1",
                           "UPDATE t SET w = v + 100 WHERE id <= 1",
                           "UPDATE t SET v = v + 100 WHERE id < 1", NULL};
    for (const char **s = other; *s; s++) {
        key_of(*s, b);
        assert_string_not_equal(a, b);
    }
    /* lists of constants of any length, as the fingerprint has them */
    key_of("SELECT * FROM t WHERE id IN (1, 2)", a);
    key_of("SELECT * FROM t WHERE id IN (1, 2, 3, 4)", b);
    assert_string_equal(a, b);
    key_of("INSERT INTO t VALUES (1, 'a'), (2, 'b')", a);
    key_of("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')", b);
    assert_string_equal(a, b);
    char *deep1 = repeat_build("UPDATE t SET v = 1 WHERE ", "NOT ", 120, "(id = 1)", "", 0, "");
    char *deep2 =
        repeat_build("UPDATE t SET v = 1 WHERE ", "NOT ", 120, "(id = 1 OR true)", "", 0, "");
    key_of(deep1, a);
    key_of(deep2, b);
    assert_string_not_equal(a, b);
    free(deep1);
    free(deep2);
    /* a type's modifiers are part of the statement, wherever they sit in the text */
    key_of("ALTER TABLE t ALTER c TYPE numeric(10,2)", a);
    key_of("ALTER TABLE t ALTER c TYPE numeric(10,0)", b);
    assert_string_not_equal(a, b);
    key_of("ALTER  TABLE t ALTER c TYPE numeric( 10 , 2 )", b);
    assert_string_equal(a, b);
    key_of("ALTER TABLE t ALTER c TYPE varchar(1000)", a);
    key_of("ALTER TABLE t ALTER c TYPE varchar(1)", b);
    assert_string_not_equal(a, b);
    /* a cast to a plain type goes with its constant; a cast to another type is part of what
     * the statement does */
    key_of("SELECT pg_relation_size('orders'::regclass)", a);
    key_of("SELECT pg_relation_size('orders'::text)", b);
    assert_string_not_equal(a, b);
    key_of("SELECT pg_relation_size($1::regclass)", b);
    assert_string_equal(a, b);
    key_of("SELECT f('a'::text)", a);
    key_of("SELECT f('a'::pg_catalog.text)", b);
    assert_string_equal(a, b);
    key_of("SELECT f('a')", b);
    assert_string_equal(a, b);
    key_of("SELECT f('a'::myschema.text)", b);
    assert_string_not_equal(a, b);
    key_of("SELECT f('a'::text::regtype)", b);
    assert_string_not_equal(a, b);
    assert_int_equal(sql_approval_key("SELECT FROM WHERE", 1, a), -1);
}

static void test_blank_literals(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"PREPARE q AS SELECT * FROM t WHERE name = 'Jane Doe' OR id = 19790412",
         "PREPARE q AS SELECT * FROM t WHERE name = ? OR id = ?"},
        {"ALTER ROLE r WITH PASSWORD 'Winter2024pw' xx", "ALTER ROLE r WITH PASSWORD ? xx"},
        {"select E'a\\x40b', B'101', X'ff', 1.5e3, $1, U&'d\\0061t' from \"Jane\"",
         "select ?, ?, ?, ?, $1, ? from \"Jane\""},
        {"alter role r password 'Hunter2Secret", "alter role r password ..."},
        {"UPDATE cards SET pan = 4111111111111111 WHERE id = 1abc /* 'x",
         "UPDATE cards SET pan = ? WHERE id = ? ..."},
        {"SELECT 1 -- 'not a literal'", "SELECT ? -- 'not a literal'"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = sql_blank_literals(cases[i][0]);
        assert_string_equal(got, cases[i][1]);
        free(got);
    }
}

/* ---- threads ---- */

static void *thread_run(void *arg)
{
    long ok = 0;
    (void)arg;
    for (int i = 0; i < 300; i++) {
        struct sql_facts f;
        if (sql_analyze("with d as (delete from orders where 1=1 returning *) select * from d", &f))
            return (void *)0;
        if (f.n_stmts == 1 &&
            f.stmts[0].flags == (SQL_F_NO_WHERE | SQL_F_TAUTOLOGY | SQL_F_NESTED_WRITE) &&
            f.stmts[0].n_written == 1)
            ok++;
        sql_facts_free(&f);
    }
    return (void *)ok;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_run, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_int_equal((long)r, 300);
    }
}

/* ---- COPY ... TO STDOUT: which columns its lines hold ---- */

/* One COPY per line: its SQL, whether columns[] are known, what c->whole says (N named, T
 * table, S star, - no copy_out at all), and the relation's schema and name when whole. */
static const struct {
    const char *sql;
    bool known;
    char whole;
    const char *schema, *name;
} copy_cases[] = {
    {"COPY t TO STDOUT", false, 'T', NULL, "t"},
    {"COPY Public.T TO STDOUT (FORMAT csv, HEADER)", false, 'T', "public", "t"},
    {"COPY s.\"Mixed\" TO STDOUT", false, 'T', "s", "Mixed"},
    {"COPY t TO STDOUT (FORMAT binary)", false, 'N', NULL, NULL},
    {"COPY t TO STDOUT (ENCODING 'SJIS')", false, 'N', NULL, NULL},
    {"COPY t (a, b) TO STDOUT", true, 'N', NULL, NULL},
    {"COPY (SELECT * FROM s.t WHERE x > 1 ORDER BY 1) TO STDOUT", false, 'S', "s", "t"},
    {"COPY (SELECT * FROM ONLY t) TO STDOUT (FORMAT csv)", false, 'S', NULL, "t"},
    {"COPY (SELECT a, b FROM t) TO STDOUT", true, 'N', NULL, NULL},
    {"COPY (WITH t AS (SELECT 1 AS ssn) SELECT * FROM t) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT *, 1 FROM t) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT t.* FROM t) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT * FROM t, u) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT * FROM t UNION ALL SELECT * FROM u) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY (SELECT * FROM f()) TO STDOUT", false, 'N', NULL, NULL},
    {"COPY t FROM STDIN", false, '-', NULL, NULL},
};

static void test_copy_out(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof copy_cases / sizeof copy_cases[0]; i++) {
        struct sql_facts f;
        const char *sql = copy_cases[i].sql;
        assert_int_equal(sql_analyze(sql, &f), 0);
        assert_int_equal(f.n_stmts, 1);
        const struct sql_copy_out *c = f.stmts[0].copy_out;
        char whole = !c                           ? '-'
                     : c->whole == SQL_COPY_TABLE ? 'T'
                     : c->whole == SQL_COPY_STAR  ? 'S'
                                                  : 'N';
        if (whole != copy_cases[i].whole || (c && c->known != copy_cases[i].known))
            fail_msg("%s: whole %c known %d", sql, whole, c ? c->known : 0);
        if (whole == 'T' || whole == 'S') {
            const char *want = copy_cases[i].schema;
            if (want ? !c->rel_schema || strcmp(c->rel_schema, want) : c->rel_schema != NULL)
                fail_msg("%s: schema %s", sql, c->rel_schema ? c->rel_schema : "(none)");
            assert_string_equal(c->rel_name, copy_cases[i].name);
        }
        sql_facts_free(&f);
    }
}

/* ---- timing (printed) ---- */

static double clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void test_timing(void **state)
{
    (void)state;
    const char *sql = "SELECT o.id, o.status, o.total, c.name, c.email FROM orders o "
                      "JOIN customers c ON c.id = o.customer_id WHERE o.created_at > "
                      "'2024-01-01' AND o.status IN ('paid', 'shipped') AND c.country = 'FR' "
                      "ORDER BY o.created_at DESC LIMIT 50";
    const int n = 2000;
    struct sql_facts f;
    for (int i = 0; i < 100; i++) { /* warm up */
        assert_int_equal(sql_analyze(sql, &f), 0);
        sql_facts_free(&f);
    }
    double w0 = clock_us(CLOCK_MONOTONIC), c0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < n; i++) {
        assert_int_equal(sql_analyze(sql, &f), 0);
        sql_facts_free(&f);
    }
    double wall = (clock_us(CLOCK_MONOTONIC) - w0) / n;
    double cpu = (clock_us(CLOCK_THREAD_CPUTIME_ID) - c0) / n;
    /* CPU time is the figure to quote: wall time includes whatever else the machine runs. */
    fprintf(stderr,
            "sql_analyze: %.1f us CPU (%.1f us wall) per call for a %zu-byte SELECT "
            "(%d calls; parse + facts + fingerprint + normalize)\n",
            cpu, wall, strlen(sql), n);
    assert_true(cpu > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_facts_table),  cmocka_unit_test(test_fingerprint_normalize),
        cmocka_unit_test(test_class_names),  cmocka_unit_test(test_huge_in_list),
        cmocka_unit_test(test_deep_nesting), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_timing),       cmocka_unit_test(test_savepoint_names),
        cmocka_unit_test(test_approval_key), cmocka_unit_test(test_blank_literals),
        cmocka_unit_test(test_copy_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
