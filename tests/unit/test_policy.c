/*
 * test_policy.c: unit tests of src/policy (guardrails, rules, evaluation order, messages).
 *
 * The decision table tests/unit/policy_cases.tsv (sql, identity, action, rule, limit, target)
 * runs every statement through the real sql_analyze() and policy_eval() against
 * tests/config/valid/policy.yaml. Further tests build facts by hand to pin the engine itself:
 * guardrail order and strictness, override, defaults per identity kind, glob rules, limits.
 * Run from the repository root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "policy/policy.h"
#include "sql/sql.h"

#define POLICY_YAML "tests/config/valid/policy.yaml"
#define CASES_TSV "tests/unit/policy_cases.tsv"

static struct sluice_config *load(const char *path)
{
    struct sluice_config *cfg = NULL;
    char err[512] = "";
    if (config_load(path, &cfg, err, sizeof(err)) != 0) fail_msg("%s: %s", path ? path : "-", err);
    return cfg;
}

static struct policy *compile(const struct sluice_config *cfg)
{
    char err[256];
    struct policy *p = policy_compile(cfg, err, sizeof(err));
    if (!p) fail_msg("policy_compile: %s", err);
    return p;
}

/* Single-quoted literals of sql (5 characters or more, so that 'role' may meet the word
 * role) must not appear in what the client is told. */
static int leaks_literal(const char *sql, const struct policy_decision *d)
{
    for (const char *q = strchr(sql, '\''); q; q = strchr(q, '\'')) {
        const char *end = strchr(q + 1, '\'');
        if (!end) break;
        size_t n = (size_t)(end - q - 1);
        if (n >= 5) {
            char lit[256];
            snprintf(lit, sizeof(lit), "%.*s", (int)(n < 255 ? n : 255), q + 1);
            if (strstr(d->reason, lit) || strstr(d->hint, lit)) return 1;
        }
        q = end + 1;
    }
    return 0;
}

static void test_decision_table(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(POLICY_YAML);
    struct policy *pol = compile(cfg);
    FILE *f = fopen(CASES_TSV, "r");
    assert_non_null(f);
    char line[4096];
    unsigned lineno = 0, cases = 0, failures = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        char *col[6] = {0};
        unsigned n = 0;
        for (char *rest = line, *t; n < 6 && (t = strsep(&rest, "\t"));)
            col[n++] = t;
        if (n < 4) fail_msg("%s:%u: expected at least 4 tab-separated columns", CASES_TSV, lineno);
        const char *sql = col[0], *ident = col[1], *want_action = col[2], *want_rule = col[3];
        unsigned long long want_limit = n > 4 && col[4][0] ? strtoull(col[4], NULL, 10) : 0;
        const char *target = n > 5 ? col[5] : "shop";

        const struct cfg_identity *id = config_find_identity(cfg, ident);
        if (!id) fail_msg("%s:%u: unknown identity %s", CASES_TSV, lineno, ident);
        struct sql_facts facts;
        assert_int_equal(sql_analyze(sql, &facts), 0);
        struct policy_subject who = {.ident = id, .target = target};
        struct policy_decision d;
        policy_eval(pol, &who, &facts, &d);
        cases++;
        if (strcmp(policy_action_name(d.action), want_action) != 0 ||
            strcmp(d.rule, want_rule) != 0 || d.limit_rows != want_limit) {
            print_error("%s:%u: %s as %s: want %s by %s (limit %llu), got %s by %s (limit %llu): "
                        "%s\n",
                        CASES_TSV, lineno, sql, ident, want_action, want_rule, want_limit,
                        policy_action_name(d.action), d.rule, (unsigned long long)d.limit_rows,
                        d.reason);
            failures++;
        }
        if (d.action != POLICY_ALLOW && (!d.reason[0] || !d.hint[0])) {
            print_error("%s:%u: %s: a refusal needs a reason and a hint\n", CASES_TSV, lineno, sql);
            failures++;
        }
        if (leaks_literal(sql, &d)) {
            print_error("%s:%u: %s: message holds a literal: %s / %s\n", CASES_TSV, lineno, sql,
                        d.reason, d.hint);
            failures++;
        }
        sql_facts_free(&facts);
    }
    fclose(f);
    assert_true(cases >= 80);
    policy_free(pol);
    config_unref(cfg);
    if (failures) fail_msg("%u of %u cases failed", failures, cases);
}

/* ---------------------------------------------------------------- hand-built facts */

static struct sql_stmt stmt(const char *command, enum sql_class cls, unsigned flags)
{
    return (struct sql_stmt){.command = command, .cls = cls, .flags = flags};
}

static struct cfg_identity ident(const char *name, enum ident_kind kind, char **groups,
                                 unsigned n_groups)
{
    return (struct cfg_identity){
        .name = (char *)name, .kind = kind, .groups = groups, .n_groups = n_groups};
}

static void eval1(const struct policy *p, const struct cfg_identity *id, struct sql_stmt *s,
                  struct policy_decision *d)
{
    struct sql_facts f = {.stmts = s, .n_stmts = 1};
    struct policy_subject who = {.ident = id, .target = "shop"};
    policy_eval(p, &who, &f, d);
}

/* With no config at all, the guardrails of issue 3 are on, and unjudgeable depends on kind. */
static void test_builtin_defaults(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(NULL);
    for (unsigned g = 0; g < CFG_GUARD_COUNT; g++) {
        assert_false(cfg->guardrails.configured[g]);
        for (unsigned k = 0; k < CFG_KIND_COUNT; k++)
            assert_int_equal(cfg->guardrails.action[g][k],
                             g == CFG_GUARD_UNJUDGEABLE && k == IDENT_HUMAN ? CFG_ALLOW : CFG_DENY);
    }
    assert_int_equal(cfg->policy.default_action, CFG_ALLOW);
    struct policy *p = compile(cfg);
    struct cfg_identity human = ident("h", IDENT_HUMAN, NULL, 0);
    struct cfg_identity svc = ident("s", IDENT_SERVICE, NULL, 0);
    struct cfg_identity agent = ident("a", IDENT_AGENT, NULL, 0);
    struct policy_decision d;

    char *orders[] = {"orders"};
    struct sql_stmt del = stmt("DELETE", SQL_WRITE, SQL_F_NO_WHERE);
    del.tables_written = orders;
    del.n_written = 1;
    eval1(p, &human, &del, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_string_equal(d.rule, "delete_without_where");
    assert_string_equal(d.reason, "DELETE without WHERE on orders");
    assert_string_equal(d.hint, "add a WHERE clause");

    del.flags |= SQL_F_TAUTOLOGY;
    eval1(p, &agent, &del, &d);
    assert_string_equal(d.reason, "DELETE with an always-true WHERE on orders");

    struct sql_stmt upd = stmt("UPDATE", SQL_WRITE, SQL_F_NO_WHERE);
    eval1(p, &svc, &upd, &d);
    assert_string_equal(d.rule, "update_without_where");
    assert_string_equal(d.reason, "UPDATE without WHERE");

    struct sql_stmt drop = stmt("DROP", SQL_DDL, 0);
    eval1(p, &human, &drop, &d);
    assert_string_equal(d.rule, "drop");
    struct sql_stmt trunc = stmt("TRUNCATE", SQL_DDL, 0);
    eval1(p, &human, &trunc, &d);
    assert_string_equal(d.rule, "truncate");

    struct sql_stmt copy = stmt("COPY", SQL_READ, SQL_F_COPY_PROGRAM);
    eval1(p, &human, &copy, &d);
    assert_string_equal(d.rule, "copy_program");
    copy.flags = SQL_F_COPY_FILE;
    eval1(p, &human, &copy, &d);
    assert_string_equal(d.rule, "copy_file");
    struct sql_stmt alt = stmt("ALTER", SQL_ADMIN, SQL_F_ALTER_SYSTEM);
    eval1(p, &human, &alt, &d);
    assert_string_equal(d.rule, "alter_system");
    struct sql_stmt role = stmt("SET", SQL_UTILITY, SQL_F_ROLE_CHANGE);
    eval1(p, &human, &role, &d);
    assert_string_equal(d.rule, "role_escalation");

    char *fn[] = {"pg_catalog.pg_read_file"};
    struct sql_stmt rf = stmt("SELECT", SQL_READ, 0);
    rf.functions = fn;
    rf.n_functions = 1;
    eval1(p, &human, &rf, &d);
    assert_string_equal(d.rule, "file_access");
    assert_string_equal(d.reason, "server file access with pg_catalog.pg_read_file()");
    char *fn2[] = {"upper", "dblink_exec"};
    rf.functions = fn2;
    rf.n_functions = 2;
    eval1(p, &human, &rf, &d);
    assert_string_equal(d.rule, "dangerous_functions");
    assert_string_equal(d.reason, "dangerous function dblink_exec()");

    /* unjudgeable: humans pass (policy.default allow), services and agents do not */
    struct sql_stmt doblk = stmt("DO", SQL_UTILITY, SQL_F_UNJUDGEABLE);
    eval1(p, &human, &doblk, &d);
    assert_int_equal(d.action, POLICY_ALLOW);
    assert_string_equal(d.rule, "default");
    eval1(p, &svc, &doblk, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_string_equal(d.rule, "unjudgeable");
    struct sql_stmt bad = stmt("UNKNOWN", SQL_UTILITY, SQL_F_PARSE_ERROR);
    eval1(p, &agent, &bad, &d);
    assert_string_equal(d.rule, "unjudgeable");
    assert_string_equal(d.hint, "check the SQL syntax");

    struct sql_stmt sel = stmt("SELECT", SQL_READ, 0);
    eval1(p, &agent, &sel, &d);
    assert_int_equal(d.action, POLICY_ALLOW);
    assert_int_equal(d.limit_rows, 0);

    /* no identity at all is judged as the strictest kind */
    struct policy_subject nobody = {.ident = NULL, .target = NULL};
    struct sql_facts f = {.stmts = &doblk, .n_stmts = 1};
    policy_eval(p, &nobody, &f, &d);
    assert_int_equal(d.action, POLICY_DENY);
    policy_free(p);
    config_unref(cfg);
}

/* A rule that decides a statement lifts only the guardrails it names; strictness wins. */
static void test_override_and_strictness(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(POLICY_YAML);
    struct policy *p = compile(cfg);
    const struct cfg_identity *alice = config_find_identity(cfg, "alice@corp.com");
    const struct cfg_identity *bob = config_find_identity(cfg, "bob@corp.com");
    struct policy_decision d;

    struct sql_stmt drop = stmt("DROP", SQL_DDL, 0);
    eval1(p, alice, &drop, &d);
    assert_int_equal(d.action, POLICY_ALLOW);
    assert_string_equal(d.rule, "dba-ddl");
    eval1(p, bob, &drop, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_string_equal(d.rule, "drop");
    /* the hint says who may */
    assert_string_equal(d.hint, "dropping objects is reserved to administrators; allowed for "
                                "group dba");

    /* dba-ddl lifts drop and truncate, not alter_system */
    struct sql_stmt alt = stmt("ALTER", SQL_ADMIN, SQL_F_ALTER_SYSTEM);
    eval1(p, alice, &alt, &d);
    assert_string_equal(d.rule, "alter_system");

    /* several guardrails: deny beats review (copy_file is review in policy.yaml) */
    struct sql_stmt copy = stmt("COPY", SQL_READ, SQL_F_COPY_FILE | SQL_F_COPY_PROGRAM);
    eval1(p, bob, &copy, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_string_equal(d.rule, "copy_program");
    copy.flags = SQL_F_COPY_FILE;
    eval1(p, bob, &copy, &d);
    assert_int_equal(d.action, POLICY_REVIEW);
    assert_string_equal(d.rule, "copy_file");
    assert_string_equal(d.hint, "ask for approval");
    /* ... but a rule's deny beats a guardrail's review */
    const struct cfg_identity *copilot = config_find_identity(cfg, "copilot");
    struct sql_stmt copyin = stmt("COPY", SQL_DDL, SQL_F_COPY_FILE);
    eval1(p, copilot, &copyin, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_string_equal(d.rule, "agents-only-read");
    assert_string_equal(d.reason, "AI agents may only read");
    policy_free(p);
    config_unref(cfg);
}

/* Guardrails set to allow are skipped; a configured value applies to every kind. */
static void test_guardrail_config(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-policy-guardrails-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("guardrails:\n  truncate: allow\n  unjudgeable: deny\n  drop: review\n"
          "policy:\n  default: deny\n",
          f);
    fclose(f);
    struct sluice_config *cfg = load(path);
    assert_true(cfg->guardrails.configured[CFG_GUARD_TRUNCATE]);
    assert_int_equal(cfg->guardrails.action[CFG_GUARD_UNJUDGEABLE][IDENT_HUMAN], CFG_DENY);
    struct policy *p = compile(cfg);
    struct cfg_identity human = ident("h", IDENT_HUMAN, NULL, 0);
    struct policy_decision d;
    struct sql_stmt trunc = stmt("TRUNCATE", SQL_DDL, 0);
    eval1(p, &human, &trunc, &d);
    assert_int_equal(d.action, POLICY_DENY); /* guardrail off, but policy.default is deny */
    assert_string_equal(d.rule, "default");
    assert_string_equal(d.reason, "no rule allows TRUNCATE for h");
    struct sql_stmt doblk = stmt("DO", SQL_UTILITY, SQL_F_UNJUDGEABLE);
    eval1(p, &human, &doblk, &d);
    assert_string_equal(d.rule, "unjudgeable");
    struct sql_stmt drop = stmt("DROP", SQL_DDL, 0);
    eval1(p, &human, &drop, &d);
    assert_int_equal(d.action, POLICY_DENY); /* review guardrail, default deny is stricter */
    assert_string_equal(d.rule, "default");
    policy_free(p);
    config_unref(cfg);
    remove(path);
}

/* Table globs: bare names match any schema, dotted globs need a qualified name;
 * tables_written needs every written table to match. */
static void test_table_globs(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(POLICY_YAML);
    struct policy *p = compile(cfg);
    const struct cfg_identity *etl = config_find_identity(cfg, "etl");
    const struct cfg_identity *bob = config_find_identity(cfg, "bob@corp.com");
    struct policy_decision d;

    char *w1[] = {"staging.a", "staging.b"};
    struct sql_stmt ins = stmt("INSERT", SQL_WRITE, 0);
    ins.tables_written = w1;
    ins.n_written = 2;
    eval1(p, etl, &ins, &d);
    assert_string_equal(d.rule, "etl-staging-writes");
    char *w2[] = {"staging.a", "public.b"};
    ins.tables_written = w2;
    eval1(p, etl, &ins, &d);
    assert_string_equal(d.rule, "etl-other-writes");
    assert_string_equal(d.reason, "etl may write only to staging.*");
    assert_string_equal(d.hint, "write to a table of schema staging");
    char *w3[] = {"a"}; /* unqualified: not provably in staging */
    ins.tables_written = w3;
    ins.n_written = 1;
    eval1(p, etl, &ins, &d);
    assert_string_equal(d.rule, "etl-other-writes");

    char *r1[] = {"x.y.secrets"};
    struct sql_stmt sel = stmt("SELECT", SQL_READ, 0);
    sel.tables_read = r1;
    sel.n_read = 1;
    eval1(p, bob, &sel, &d);
    assert_string_equal(d.rule, "no-secrets");
    char *r2[] = {"secretsx"};
    sel.tables_read = r2;
    eval1(p, bob, &sel, &d);
    assert_string_equal(d.rule, "default");
    policy_free(p);
    config_unref(cfg);
}

/* Several statements: strictest action, first such statement, smallest limit. */
static void test_multi_statement(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(POLICY_YAML);
    struct policy *p = compile(cfg);
    const struct cfg_identity *copilot = config_find_identity(cfg, "copilot");
    struct policy_decision d;
    struct sql_stmt s[4] = {
        stmt("SELECT", SQL_READ, 0),
        stmt("INSERT", SQL_WRITE, 0),
        stmt("DELETE", SQL_WRITE, SQL_F_NO_WHERE),
        stmt("UPDATE", SQL_WRITE, SQL_F_NO_WHERE),
    };
    struct sql_facts f = {.stmts = s, .n_stmts = 2};
    struct policy_subject who = {.ident = copilot, .target = "shop"};
    policy_eval(p, &who, &f, &d);
    assert_int_equal(d.action, POLICY_REVIEW);
    assert_int_equal(d.stmt_index, 1);
    assert_int_equal(d.limit_rows, 1000);
    f.n_stmts = 4;
    policy_eval(p, &who, &f, &d);
    assert_int_equal(d.action, POLICY_DENY);
    assert_int_equal(d.stmt_index, 2);
    assert_string_equal(d.rule, "delete_without_where");
    f.n_stmts = 0;
    policy_eval(p, &who, &f, &d);
    assert_int_equal(d.action, POLICY_ALLOW);
    policy_free(p);
    config_unref(cfg);
}

/* The config model of policy.yaml, key by key. */
static void test_config_model(void **state)
{
    (void)state;
    struct sluice_config *cfg = load(POLICY_YAML);
    assert_int_equal(cfg->guardrails.action[CFG_GUARD_COPY_FILE][IDENT_AGENT], CFG_REVIEW);
    assert_true(cfg->guardrails.configured[CFG_GUARD_COPY_FILE]);
    assert_false(cfg->guardrails.configured[CFG_GUARD_DROP]);
    assert_int_equal(cfg->policy.default_action, CFG_ALLOW);
    assert_true(cfg->policy.n_rules >= 8);
    const struct cfg_rule *r = &cfg->policy.rules[0];
    assert_string_equal(r->name, "dba-ddl");
    assert_int_equal(r->action, CFG_ALLOW);
    assert_int_equal(r->overrides, (1u << CFG_GUARD_DROP) | (1u << CFG_GUARD_TRUNCATE));
    assert_int_equal(r->match.n_groups, 1);
    assert_string_equal(r->match.groups[0], "dba");
    assert_int_equal(r->match.classes,
                     (1u << CFG_CLASS_DDL) | (1u << CFG_CLASS_ADMIN) | (1u << CFG_CLASS_DCL));
    const struct cfg_rule *review = NULL, *reads = NULL;
    for (unsigned i = 0; i < cfg->policy.n_rules; i++) {
        if (strcmp(cfg->policy.rules[i].name, "agents-writes-need-review") == 0)
            review = &cfg->policy.rules[i];
        if (strcmp(cfg->policy.rules[i].name, "agents-read") == 0) reads = &cfg->policy.rules[i];
    }
    assert_non_null(review);
    assert_int_equal(review->action, CFG_REVIEW);
    assert_int_equal(review->mode, CFG_MODE_DEFER);
    assert_int_equal(review->match.kinds, 1u << IDENT_AGENT);
    assert_non_null(reads);
    assert_int_equal(reads->limit_rows, 1000);
    assert_int_equal(reads->mode, CFG_MODE_DEFAULT);
    assert_string_equal(cfg_guardrail_name(CFG_GUARD_DELETE_WITHOUT_WHERE), "delete_without_where");
    assert_int_equal(cfg_guardrail_from_name("unjudgeable"), CFG_GUARD_UNJUDGEABLE);
    assert_int_equal(cfg_guardrail_from_name("nope"), -1);
    assert_string_equal(cfg_action_name(CFG_REVIEW), "review");
    assert_string_equal(policy_action_name(POLICY_DENY), "deny");
    config_unref(cfg);
}

/* explain: exit status by decision; unknown identity or target is a usage error. */
static void test_explain_exit_status(void **state)
{
    (void)state;
    FILE *out = tmpfile(), *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    struct policy_explain_args a = {.config_path = POLICY_YAML,
                                    .as = "copilot",
                                    .target = "shop",
                                    .sql = "SELECT * FROM orders"};
    assert_int_equal(policy_explain(&a, out, err), 0);
    a.sql = "DELETE FROM orders";
    assert_int_equal(policy_explain(&a, out, err), 3);
    a.sql = "INSERT INTO orders VALUES (1)";
    assert_int_equal(policy_explain(&a, out, err), 4);
    a.as = "mallory";
    assert_int_equal(policy_explain(&a, out, err), 2);
    a.kind = "agent";
    assert_int_equal(policy_explain(&a, out, err), 4); /* described, not configured */
    a.kind = "robot";
    assert_int_equal(policy_explain(&a, out, err), 2);
    a.kind = NULL;
    a.as = "copilot";
    a.target = "nope";
    assert_int_equal(policy_explain(&a, out, err), 2);
    a.config_path = NULL; /* built-in defaults: no identities, so --kind is needed */
    a.target = NULL;
    a.sql = "DROP TABLE orders";
    assert_int_equal(policy_explain(&a, out, err), 2);
    a.kind = "human";
    assert_int_equal(policy_explain(&a, out, err), 3);
    fclose(out);
    fclose(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_defaults),    cmocka_unit_test(test_override_and_strictness),
        cmocka_unit_test(test_guardrail_config),    cmocka_unit_test(test_table_globs),
        cmocka_unit_test(test_multi_statement),     cmocka_unit_test(test_config_model),
        cmocka_unit_test(test_explain_exit_status), cmocka_unit_test(test_decision_table),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
