/*
 * explain.c: `sluice explain`. Loads a configuration (or the built-in defaults), analyzes one
 * SQL string with src/sql, judges it with the compiled policy as a given identity and
 * target, and prints what it saw and decided, without any database: the facts of each
 * statement (command, class, tables, functions, flags, guardrails triggered), the
 * fingerprint and normalized text, each statement's decision, then the decision for the
 * whole string. The exit status says the decision, so CI can test policy files:
 * 0 allow, 3 deny, 4 review, 2 usage or config error, 1 internal failure.
 */
#include "mask/mask.h"
#include "policy/policy.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_ALLOW 0
#define EXIT_FAILURE_ 1
#define EXIT_USAGE 2
#define EXIT_DENY 3
#define EXIT_REVIEW 4

static void print_list(FILE *out, const char *label, char *const *v, unsigned n)
{
    fprintf(out, "  %-11s", label);
    if (!n) fputs(" -", out);
    for (unsigned i = 0; i < n; i++)
        fprintf(out, "%s%s", i ? ", " : " ", v[i]);
    fputc('\n', out);
}

static void print_flags(FILE *out, unsigned flags)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {SQL_F_NO_WHERE, "no_where"},
        {SQL_F_TAUTOLOGY, "tautology"},
        {SQL_F_COPY_PROGRAM, "copy_program"},
        {SQL_F_COPY_FILE, "copy_file"},
        {SQL_F_ALTER_SYSTEM, "alter_system"},
        {SQL_F_ROLE_CHANGE, "role_change"},
        {SQL_F_ROLE_PRIVILEGE, "role_privilege"},
        {SQL_F_UNJUDGEABLE, "unjudgeable"},
        {SQL_F_PARSE_ERROR, "parse_error"},
        {SQL_F_EXPLAIN_ANALYZE, "explain_analyze"},
        {SQL_F_PREPARE, "prepare"},
        {SQL_F_TEXT_SETTING, "text_setting"},
        {SQL_F_TEXT_DOUBT, "text_doubt"},
        {SQL_F_NESTED_WRITE, "nested_write"},
        {SQL_F_DROP_PART, "drop_part"},
    };
    fprintf(out, "  %-11s", "flags:");
    int any = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & names[i].bit) fprintf(out, "%s%s", any++ ? ", " : " ", names[i].name);
    if (!any) fputs(" -", out);
    fputc('\n', out);
}

static void print_decision(FILE *out, const char *indent, const struct policy_decision *d)
{
    fprintf(out, "%s%-12s%s\n", indent, "decision:", policy_action_name(d->action));
    fprintf(out, "%s%-12s%s\n", indent, "rule:", d->rule ? d->rule : "-");
    fprintf(out, "%s%-12s%s\n", indent, "reason:", d->reason[0] ? d->reason : "-");
    fprintf(out, "%s%-12s%s\n", indent, "hint:", d->hint[0] ? d->hint : "-");
    if (d->limit_rows)
        fprintf(out, "%s%-12s%llu rows\n", indent, "limit:", (unsigned long long)d->limit_rows);
    else
        fprintf(out, "%s%-12snone\n", indent, "limit:");
}

static int parse_kind(const char *s, enum ident_kind *out)
{
    if (strcmp(s, "human") == 0)
        *out = IDENT_HUMAN;
    else if (strcmp(s, "service") == 0)
        *out = IDENT_SERVICE;
    else if (strcmp(s, "agent") == 0)
        *out = IDENT_AGENT;
    else
        return -1;
    return 0;
}

/* Would results be masked for this identity, and which columns named in the statement are
 * masked whole by their name? Other text values are scanned by value. */
static void print_masking(FILE *out, const struct sluice_config *cfg, const struct cfg_identity *id,
                          const struct policy_decision *d, const char *sql)
{
    const struct cfg_masking *m = &cfg->masking;
    const char *why = NULL;
    bool on = m->enabled;
    if (!m->enabled) why = "masking.enabled is false";
    for (unsigned i = 0; on && i < m->n_unmask; i++)
        for (unsigned g = 0; g < id->n_groups; g++)
            if (strcmp(m->unmask[i], id->groups[g]) == 0) {
                on = false;
                why = "the identity is in masking.unmask";
            }
    for (unsigned i = 0; on && i < m->n_unmask_identities; i++)
        if (fnmatch(m->unmask_identities[i], id->name, 0) == 0) {
            on = false;
            why = "masking.unmask.identities names the identity";
        }
    if (m->enabled && d->mask > 0) on = true, why = "rule action mask";
    if (m->enabled && d->mask < 0) on = false, why = "rule action unmask";
    fprintf(out, "%-12s%s%s%s%s\n", "masking:", on ? "on" : "off", why ? " (" : "", why ? why : "",
            why ? ")" : "");
    if (!on) return;
    char err[512];
    struct mask_db *db = mask_db_build(m, err, sizeof err);
    if (!db) {
        fprintf(out, "  (masking.* does not compile: %s)\n", err);
        return;
    }
    fputs("  by value:  ", out);
    for (unsigned i = 0; i < mask_db_detector_count(db); i++)
        if (mask_db_detector_scans(db, i))
            fprintf(out, "%s%s", i ? ", " : "", mask_db_detector_name(db, i));
    fputc('\n', out);
    /* Identifiers of the statement that name a sensitive column (as written). */
    char word[64];
    size_t n = 0;
    unsigned shown = 0;
    for (const char *p = sql;; p++) {
        char c = *p;
        bool in =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (in && n + 1 < sizeof word) {
            word[n++] = c;
            continue;
        }
        if (n) {
            word[n] = '\0';
            enum mask_name_class k = mask_classify_name(word);
            bool exempt = false;
            for (unsigned e = 0; e < m->n_exempt; e++)
                exempt |= fnmatch(m->exempt[e], word, FNM_CASEFOLD) == 0;
            if (k != MASK_NAME_NONE && !exempt)
                fprintf(out, "  column %s: masked whole as %s (by its name)\n", word,
                        mask_name_class_detector(k)),
                    shown++;
            n = 0;
        }
        if (!c) break;
    }
    if (!shown) fputs("  columns:   none named in the statement is sensitive by its name\n", out);
    mask_db_free(db);
    mask_thread_release();
}

int policy_explain(const struct policy_explain_args *a, FILE *out, FILE *err)
{
    char msg[1024];
    struct sluice_config *cfg = NULL;
    struct policy *pol = NULL;
    struct sql_facts facts;
    bool have_facts = false;
    int rc = EXIT_USAGE;

    if (!a->as || !a->sql) {
        fputs("sluice explain: give --as IDENTITY and the SQL\n", err);
        return EXIT_USAGE;
    }
    if (config_load(a->config_path, &cfg, msg, sizeof(msg)) < 0) {
        fprintf(err, "%s\n", msg);
        return EXIT_USAGE;
    }

    /* Who asks: a configured identity, or one described with --kind/--group. */
    struct cfg_identity adhoc = {0};
    const struct cfg_identity *id = config_find_identity(cfg, a->as);
    if (id && (a->kind || a->n_groups)) {
        fprintf(err,
                "sluice explain: identity \"%s\" is configured; --kind and --group are only for "
                "identities that are not\n",
                a->as);
        goto done;
    }
    if (!id) {
        if (!a->kind) {
            fprintf(err,
                    "sluice explain: unknown identity \"%s\" (not in %s); give --kind "
                    "human|service|agent to describe an identity that is not configured\n",
                    a->as, a->config_path ? a->config_path : "the built-in defaults");
            goto done;
        }
        if (parse_kind(a->kind, &adhoc.kind) < 0) {
            fprintf(err,
                    "sluice explain: invalid --kind \"%s\" (expected human, service or agent)\n",
                    a->kind);
            goto done;
        }
        adhoc.name = (char *)a->as;
        adhoc.groups = (char **)a->groups;
        adhoc.n_groups = a->n_groups;
        id = &adhoc;
    }
    if (a->target && !config_find_target(cfg, a->target)) {
        fprintf(err, "sluice explain: unknown target \"%s\" (not in %s)\n", a->target,
                a->config_path ? a->config_path : "the built-in defaults");
        goto done;
    }

    rc = EXIT_FAILURE_;
    pol = policy_compile(cfg, msg, sizeof(msg));
    if (!pol) {
        fprintf(err, "sluice explain: cannot compile the policy: %s\n", msg);
        goto done;
    }
    if (sql_analyze(a->sql, &facts) < 0) {
        fputs("sluice explain: cannot analyze the SQL (internal error)\n", err);
        goto done;
    }
    have_facts = true;

    struct policy_subject who = {.ident = id, .target = a->target};
    fprintf(out, "identity:    %s (%s", id->name, ident_kind_name(id->kind));
    for (unsigned g = 0; g < id->n_groups; g++)
        fprintf(out, "%s%s", g ? ", " : "; groups ", id->groups[g]);
    fprintf(out, ")%s\n", id == &adhoc ? ", not configured" : "");
    fprintf(out, "target:      %s\n",
            a->target ? a->target : "(none: rules naming a target do not match)");
    if (facts.fingerprint)
        fprintf(out, "fingerprint: %016llx\n", (unsigned long long)facts.fingerprint);
    else
        fprintf(out, "fingerprint: -\n");
    fprintf(out, "normalized:  %s\n", facts.normalized ? facts.normalized : "-");
    if (facts.error) fprintf(out, "parse error: %s\n", facts.error);

    for (unsigned i = 0; i < facts.n_stmts; i++) {
        const struct sql_stmt *s = &facts.stmts[i];
        fprintf(out, "\nstatement %u: %s\n", i + 1, s->command ? s->command : "UNKNOWN");
        fprintf(out, "  %-11s %s\n", "class:", cfg_class_name((enum cfg_class)s->cls));
        print_list(out, "reads:", s->tables_read, s->n_read);
        print_list(out, "writes:", s->tables_written, s->n_written);
        print_list(out, "functions:", s->functions, s->n_functions);
        print_flags(out, s->flags);
        unsigned hit = policy_guardrails_hit(s);
        fprintf(out, "  %-11s", "guardrails:");
        int any = 0;
        for (unsigned g = 0; g < CFG_GUARD_COUNT; g++)
            if (hit & (1u << g))
                fprintf(out, "%s%s (%s)", any++ ? ", " : " ", cfg_guardrail_name(g),
                        cfg_action_name(cfg->guardrails.action[g][id->kind]));
        if (!any) fputs(" -", out);
        fputc('\n', out);
        struct policy_decision d;
        policy_eval_stmt(pol, &who, s, i, &d);
        print_decision(out, "  ", &d);
    }

    struct policy_decision d;
    policy_eval(pol, &who, &facts, &d);
    fprintf(out, "\nresult%s:\n", facts.n_stmts > 1 ? " (the strictest statement decides)" : "");
    print_decision(out, "", &d);
    if (facts.n_stmts > 1) fprintf(out, "%-12s%u\n", "statement:", d.stmt_index + 1);
    if (d.action != POLICY_DENY) print_masking(out, cfg, id, &d, a->sql);
    rc = d.action == POLICY_ALLOW ? EXIT_ALLOW : d.action == POLICY_DENY ? EXIT_DENY : EXIT_REVIEW;

done:
    if (have_facts) sql_facts_free(&facts);
    policy_free(pol);
    config_unref(cfg);
    return rc;
}
