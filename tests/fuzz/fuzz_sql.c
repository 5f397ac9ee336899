/*
 * fuzz_sql.c: libFuzzer target for statement facts (src/sql/sql.c, sql_const.c, sql_guard.c)
 * and the audit's literal-free text (sql_scan.c).
 *
 * The input, copied into an exactly sized NUL-terminated block, goes through sql_analyze()
 * twice; both results must satisfy the invariants (one UNKNOWN statement with an error for a
 * parse failure, known classes and flags, lists sorted, without duplicates or NULLs) and be
 * equal, so that no state leaks from one call to the next. libpg_query itself is not built
 * with sanitizers; the walker over its JSON is.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_sql: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,       \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define ALL_FLAGS ((SQL_F_LOGIN_STATE << 1) - 1u) /* the last flag of enum sql_flag */

static void check_list(char **v, unsigned n)
{
    CHECK(n == 0 || v != NULL);
    for (unsigned i = 0; i < n; i++) {
        CHECK(v[i] != NULL);
        if (i) CHECK(strcmp(v[i - 1], v[i]) < 0); /* sorted, no duplicates */
    }
}

static void check_facts(const struct sql_facts *f)
{
    CHECK(f->n_stmts == 0 || f->stmts != NULL);
    if (f->error) {
        CHECK(f->n_stmts == 1);
        CHECK(f->stmts[0].flags & SQL_F_PARSE_ERROR);
        CHECK(f->stmts[0].flags & SQL_F_UNJUDGEABLE);
        CHECK(strcmp(f->stmts[0].command, "UNKNOWN") == 0);
        CHECK(f->fingerprint == 0 && f->normalized == NULL);
    }
    for (unsigned i = 0; i < f->n_stmts; i++) {
        const struct sql_stmt *s = &f->stmts[i];
        CHECK(s->command != NULL && s->command[0] != '\0');
        CHECK((unsigned)s->cls < SQL_CLASS_COUNT);
        CHECK((s->flags & ~ALL_FLAGS) == 0);
        CHECK(!(s->flags & SQL_F_PARSE_ERROR) || f->error != NULL);
        CHECK(!(s->flags & SQL_F_TAUTOLOGY) || (s->flags & SQL_F_NO_WHERE));
        check_list(s->tables_read, s->n_read);
        check_list(s->tables_written, s->n_written);
        check_list(s->functions, s->n_functions);
        CHECK(sql_class_from_name(sql_class_name(s->cls)) == (int)s->cls);
    }
}

static void check_same_list(char **a, unsigned na, char **b, unsigned nb)
{
    CHECK(na == nb);
    for (unsigned i = 0; i < na; i++)
        CHECK(strcmp(a[i], b[i]) == 0);
}

static void check_same(const struct sql_facts *a, const struct sql_facts *b)
{
    CHECK(a->n_stmts == b->n_stmts);
    CHECK(a->fingerprint == b->fingerprint);
    CHECK((a->normalized == NULL) == (b->normalized == NULL));
    if (a->normalized) CHECK(strcmp(a->normalized, b->normalized) == 0);
    CHECK((a->error == NULL) == (b->error == NULL));
    for (unsigned i = 0; i < a->n_stmts; i++) {
        const struct sql_stmt *x = &a->stmts[i], *y = &b->stmts[i];
        CHECK(strcmp(x->command, y->command) == 0);
        CHECK(x->cls == y->cls && x->flags == y->flags);
        check_same_list(x->tables_read, x->n_read, y->tables_read, y->n_read);
        check_same_list(x->tables_written, x->n_written, y->tables_written, y->n_written);
        check_same_list(x->functions, x->n_functions, y->functions, y->n_functions);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = malloc(size + 1);
    if (!sql) return 0;
    memcpy(sql, data, size);
    sql[size] = '\0';

    struct sql_facts a, b;
    CHECK(sql_analyze(sql, &a) == 0);
    check_facts(&a);
    CHECK(sql_analyze(sql, &b) == 0);
    check_facts(&b);
    check_same(&a, &b);
    sql_facts_free(&a);
    sql_facts_free(&b);
    /* the audit's text: never longer than the input and its "..." mark, and nothing of it
     * left unblanked from a literal (a second pass finds none to blank) */
    char *blank = sql_blank_literals(sql);
    CHECK(strlen(blank) <= strlen(sql) + 3);
    char *again = sql_blank_literals(blank);
    CHECK(strlen(again) <= strlen(blank) + 3);
    free(again);
    free(blank);
    free(sql);
    return 0;
}
