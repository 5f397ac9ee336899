/*
 * policy.c: compiles the guardrails and rules of one configuration snapshot, and judges
 * statements against them. Pure code over struct sql_facts: no sockets, no logging.
 *
 * Per statement:
 *   1. find the first rule whose match fits (identity, kind, group, target, class, command,
 *      tables, tables_written, functions) - "the deciding rule", or none;
 *   2. built-in guardrails, in their fixed order: every guardrail the statement triggers
 *      whose action for this identity's kind is not `allow`, and that the deciding rule does
 *      not lift with `override: [name]`, refuses or sends to review; the strictest wins
 *      (deny over review), the first in order on a tie;
 *   3. otherwise the deciding rule's action, else policy.default.
 * A rule or default that is stricter than a guardrail's `review` (a deny) still wins.
 * A string of several statements gets the strictest decision of its statements (deny >
 * review > allow, the first such statement), with the smallest non-zero limit_rows of its
 * statements (kept for review, since it still applies once approved; 0 for deny).
 *
 * The compiled policy copies what it needs from the config, so it does not keep the config
 * alive; decisions point into it (rule names).
 */
#include "core/buf.h"
#include "policy/policy.h"

#include "policy/guardrails.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)SQL_READ == (int)CFG_CLASS_READ && (int)SQL_WRITE == (int)CFG_CLASS_WRITE &&
                   (int)SQL_DDL == (int)CFG_CLASS_DDL && (int)SQL_DCL == (int)CFG_CLASS_DCL &&
                   (int)SQL_ADMIN == (int)CFG_CLASS_ADMIN &&
                   (int)SQL_TRANSACTION == (int)CFG_CLASS_TRANSACTION &&
                   (int)SQL_UTILITY == (int)CFG_CLASS_UTILITY &&
                   (int)SQL_CLASS_COUNT == (int)CFG_CLASS_COUNT,
               "enum cfg_class follows enum sql_class");
_Static_assert((int)POLICY_ALLOW == (int)CFG_ALLOW && (int)POLICY_DENY == (int)CFG_DENY &&
                   (int)POLICY_REVIEW == (int)CFG_REVIEW,
               "enum policy_action follows enum cfg_action");

/* A name glob: without a '.', it is compared with the bare name (what follows the last '.'
 * of a schema-qualified name); with one, with the name as written. */
struct pglob {
    char *pat;
    bool qualified;
    bool literal; /* no glob characters: strcmp */
};

struct pglobs {
    struct pglob *v;
    unsigned n;
};

struct pstrings {
    char **v;
    unsigned n;
};

struct prule {
    char *name;
    enum policy_action action;
    uint64_t limit_rows;
    unsigned overrides;
    int mask; /* 1 mask, -1 unmask, 0 as configured */
    enum cfg_approval_mode mode;
    char *reason; /* may be NULL */
    char *hint;   /* may be NULL */
    struct pglobs identities;
    unsigned kinds;
    struct pstrings groups;
    struct pstrings targets;
    unsigned classes;
    struct pstrings commands;
    struct pglobs tables;
    struct pglobs tables_written;
    struct pglobs functions;
};

struct policy {
    struct prule *rules;
    unsigned n_rules;
    enum policy_action dflt;
    enum policy_action guard[CFG_GUARD_COUNT][CFG_KIND_COUNT];
    /* "allowed for group dba": who a rule lets past each guardrail, for hints */
    char guard_allowed[CFG_GUARD_COUNT][128];
};

static void copy_strings(struct pstrings *out, char *const *v, unsigned n)
{
    out->n = n;
    out->v = n ? xcalloc(n, sizeof(char *)) : NULL;
    for (unsigned i = 0; i < n; i++)
        out->v[i] = xstrdup(v[i]);
}

static void compile_globs(struct pglobs *out, char *const *v, unsigned n)
{
    out->n = n;
    out->v = n ? xcalloc(n, sizeof(*out->v)) : NULL;
    for (unsigned i = 0; i < n; i++) {
        out->v[i].pat = xstrdup(v[i]);
        out->v[i].qualified = strchr(v[i], '.') != NULL;
        out->v[i].literal = strpbrk(v[i], "*?[\\") == NULL;
    }
}

static void free_strings(struct pstrings *s)
{
    for (unsigned i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static void free_globs(struct pglobs *g)
{
    for (unsigned i = 0; i < g->n; i++)
        free(g->v[i].pat);
    free(g->v);
}

static bool glob_match(const struct pglob *g, const char *name, bool bare)
{
    if (bare && !g->qualified) {
        const char *dot = strrchr(name, '.');
        if (dot) name = dot + 1;
    }
    if (g->literal) return strcmp(g->pat, name) == 0;
    return fnmatch(g->pat, name, 0) == 0;
}

static bool any_glob(const struct pglobs *g, const char *name, bool bare)
{
    for (unsigned i = 0; i < g->n; i++)
        if (glob_match(&g->v[i], name, bare)) return true;
    return false;
}

static bool any_name(const struct pglobs *g, char *const *names, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (any_glob(g, names[i], true)) return true;
    return false;
}

static bool in_strings(const struct pstrings *s, const char *v)
{
    if (!v) return false;
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->v[i], v) == 0) return true;
    return false;
}

/* Describe who a rule lets through, for hints: "group dba", "identity etl", ... */
static void describe_subject(const struct prule *r, char *buf, size_t len)
{
    char names[100];
    if (r->groups.n) {
        guard_join_names(r->groups.v, r->groups.n, names, sizeof(names));
        snprintf(buf, len, "allowed for group %s", names);
    } else if (r->identities.n) {
        char *v[3];
        unsigned n = r->identities.n < 3 ? r->identities.n : 3;
        for (unsigned i = 0; i < n; i++)
            v[i] = r->identities.v[i].pat;
        guard_join_names(v, r->identities.n, names, sizeof(names));
        snprintf(buf, len, "allowed for %s", names);
    } else if (r->kinds) {
        snprintf(buf, len, "allowed for %s%s%s%s%s", r->kinds & (1u << IDENT_HUMAN) ? "humans" : "",
                 (r->kinds & (1u << IDENT_HUMAN)) && (r->kinds & ~(1u << IDENT_HUMAN)) ? ", " : "",
                 r->kinds & (1u << IDENT_SERVICE) ? "services" : "",
                 (r->kinds & (1u << IDENT_SERVICE)) && (r->kinds & (1u << IDENT_AGENT)) ? ", " : "",
                 r->kinds & (1u << IDENT_AGENT) ? "agents" : "");
    } else {
        snprintf(buf, len, "allowed by rule \"%s\"", r->name);
    }
}

struct policy *policy_compile(const struct sluice_config *cfg, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    struct policy *p = xcalloc(1, sizeof(*p));
    for (unsigned g = 0; g < CFG_GUARD_COUNT; g++)
        for (unsigned k = 0; k < CFG_KIND_COUNT; k++)
            p->guard[g][k] = (enum policy_action)cfg->guardrails.action[g][k];
    p->dflt = (enum policy_action)cfg->policy.default_action;
    p->n_rules = cfg->policy.n_rules;
    p->rules = p->n_rules ? xcalloc(p->n_rules, sizeof(*p->rules)) : NULL;
    for (unsigned i = 0; i < p->n_rules; i++) {
        const struct cfg_rule *cr = &cfg->policy.rules[i];
        const struct cfg_match *m = &cr->match;
        struct prule *r = &p->rules[i];
        r->name = xstrdup(cr->name);
        r->action = cr->action == CFG_MASK || cr->action == CFG_UNMASK
                        ? POLICY_ALLOW
                        : (enum policy_action)cr->action;
        r->mask = cr->action == CFG_MASK ? 1 : cr->action == CFG_UNMASK ? -1 : 0;
        r->mode = cr->mode;
        r->limit_rows = cr->limit_rows;
        r->overrides = cr->overrides;
        r->reason = xstrdup(cr->reason);
        r->hint = xstrdup(cr->hint);
        compile_globs(&r->identities, m->identities, m->n_identities);
        r->kinds = m->kinds;
        copy_strings(&r->groups, m->groups, m->n_groups);
        copy_strings(&r->targets, m->targets, m->n_targets);
        r->classes = m->classes;
        copy_strings(&r->commands, m->commands, m->n_commands);
        compile_globs(&r->tables, m->tables, m->n_tables);
        compile_globs(&r->tables_written, m->tables_written, m->n_tables_written);
        compile_globs(&r->functions, m->functions, m->n_functions);
        if (r->action == POLICY_ALLOW)
            for (unsigned g = 0; g < CFG_GUARD_COUNT; g++)
                if ((r->overrides & (1u << g)) && !p->guard_allowed[g][0])
                    describe_subject(r, p->guard_allowed[g], sizeof(p->guard_allowed[g]));
    }
    return p;
}

void policy_free(struct policy *p)
{
    if (!p) return;
    for (unsigned i = 0; i < p->n_rules; i++) {
        struct prule *r = &p->rules[i];
        free(r->name);
        free(r->reason);
        free(r->hint);
        free_globs(&r->identities);
        free_strings(&r->groups);
        free_strings(&r->targets);
        free_strings(&r->commands);
        free_globs(&r->tables);
        free_globs(&r->tables_written);
        free_globs(&r->functions);
    }
    free(p->rules);
    free(p);
}

const char *policy_action_name(enum policy_action a)
{
    switch (a) {
    case POLICY_ALLOW:
        return "allow";
    case POLICY_DENY:
        return "deny";
    case POLICY_REVIEW:
        return "review";
    }
    return "unknown";
}

unsigned policy_guardrails_hit(const struct sql_stmt *s)
{
    return guard_detect(s);
}

/* ---------------------------------------------------------------- matching */

static bool subject_matches(const struct prule *r, const struct policy_subject *who)
{
    const struct cfg_identity *id = who->ident;
    if (r->identities.n && !(id && any_glob(&r->identities, id->name, false))) return false;
    if (r->kinds && !(id && (r->kinds & (1u << id->kind)))) return false;
    if (r->groups.n) {
        bool in = false;
        for (unsigned g = 0; id && g < id->n_groups && !in; g++)
            in = in_strings(&r->groups, id->groups[g]);
        if (!in) return false;
    }
    if (r->targets.n && !in_strings(&r->targets, who->target)) return false;
    return true;
}

static bool stmt_matches(const struct prule *r, const struct sql_stmt *s)
{
    if (r->classes && !((unsigned)s->cls < SQL_CLASS_COUNT && (r->classes & (1u << s->cls))))
        return false;
    if (r->commands.n && !in_strings(&r->commands, s->command)) return false;
    if (r->tables.n && !any_name(&r->tables, s->tables_read, s->n_read) &&
        !any_name(&r->tables, s->tables_written, s->n_written))
        return false;
    if (r->tables_written.n) {
        if (!s->n_written) return false;
        for (unsigned i = 0; i < s->n_written; i++)
            if (!any_glob(&r->tables_written, s->tables_written[i], true)) return false;
    }
    if (r->functions.n && !any_name(&r->functions, s->functions, s->n_functions)) return false;
    return true;
}

/* "DELETE on public.orders" / "SELECT" for generated reasons. */
static void describe_stmt(const struct sql_stmt *s, char *buf, size_t len)
{
    char names[160];
    const char *cmd = s->command ? s->command : "UNKNOWN";
    if (s->n_written) {
        guard_join_names(s->tables_written, s->n_written, names, sizeof(names));
        snprintf(buf, len, "%s on %s", cmd, names);
    } else if (s->n_read) {
        guard_join_names(s->tables_read, s->n_read, names, sizeof(names));
        snprintf(buf, len, "%s on %s", cmd, names);
    } else {
        snprintf(buf, len, "%s", cmd);
    }
}

static int strictness(enum policy_action a)
{
    return a == POLICY_DENY ? 2 : a == POLICY_REVIEW ? 1 : 0;
}

static void set_text(char *dst, size_t len, const char *src)
{
    size_t n = strlen(src);
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Decision of the deciding rule r (or the default when r is NULL). */
static void rule_decision(const struct policy *p, const struct prule *r,
                          const struct policy_subject *who, const struct sql_stmt *s,
                          struct policy_decision *out)
{
    /* Only a refusal or a review names the statement: an allowed one (nearly every statement)
     * skips describing it. */
    char what[200] = "";
    if ((r ? r->action : p->dflt) != POLICY_ALLOW) describe_stmt(s, what, sizeof(what));
    const char *name = who->ident ? who->ident->name : "unknown";
    if (!r) {
        out->action = p->dflt;
        out->rule = "default";
        switch (p->dflt) {
        case POLICY_ALLOW:
            set_text(out->reason, sizeof(out->reason), "no rule matched; policy.default is allow");
            out->hint[0] = '\0';
            break;
        case POLICY_DENY:
            snprintf(out->reason, sizeof(out->reason), "no rule allows %s for %s", what, name);
            set_text(out->hint, sizeof(out->hint),
                     "ask an administrator for a rule that allows it, or for approval");
            break;
        case POLICY_REVIEW:
            snprintf(out->reason, sizeof(out->reason), "%s needs approval (no rule matched)", what);
            set_text(out->hint, sizeof(out->hint), "ask for approval");
            break;
        }
        return;
    }
    out->action = r->action;
    out->rule = r->name;
    out->limit_rows = r->limit_rows;
    out->mask = r->mask;
    out->mode = r->mode;
    switch (r->action) {
    case POLICY_ALLOW:
        snprintf(out->reason, sizeof(out->reason), "allowed by rule \"%s\"", r->name);
        if (r->limit_rows)
            snprintf(out->hint, sizeof(out->hint), "at most %llu rows are returned",
                     (unsigned long long)r->limit_rows);
        else
            out->hint[0] = '\0';
        break;
    case POLICY_DENY:
        snprintf(out->reason, sizeof(out->reason), "%s is not allowed for %s", what, name);
        snprintf(out->hint, sizeof(out->hint),
                 "rule \"%s\" refuses this; ask an administrator if you need it", r->name);
        break;
    case POLICY_REVIEW:
        snprintf(out->reason, sizeof(out->reason), "%s needs approval", what);
        set_text(out->hint, sizeof(out->hint), "ask for approval");
        break;
    }
    if (r->reason) set_text(out->reason, sizeof(out->reason), r->reason);
    if (r->hint) set_text(out->hint, sizeof(out->hint), r->hint);
}

void policy_eval_stmt(const struct policy *p, const struct policy_subject *who,
                      const struct sql_stmt *s, unsigned index, struct policy_decision *out)
{
    memset(out, 0, sizeof(*out));
    out->stmt_index = index;

    /* the deciding rule: first match wins */
    const struct prule *r = NULL;
    for (unsigned i = 0; i < p->n_rules && !r; i++)
        if (subject_matches(&p->rules[i], who) && stmt_matches(&p->rules[i], s)) r = &p->rules[i];

    /* guardrails */
    unsigned kind = who->ident && (unsigned)who->ident->kind < CFG_KIND_COUNT
                        ? (unsigned)who->ident->kind
                        : (unsigned)IDENT_AGENT; /* no identity: the strictest kind */
    unsigned hit = guard_detect(s);
    int guard = -1;
    for (unsigned g = 0; hit && g < CFG_GUARD_COUNT; g++) {
        if (!(hit & (1u << g))) continue;
        enum policy_action a = p->guard[g][kind];
        if (a == POLICY_ALLOW) continue;
        if (r && (r->overrides & (1u << g))) continue;
        if (guard < 0 || strictness(a) > strictness(p->guard[guard][kind])) guard = (int)g;
    }

    rule_decision(p, r, who, s, out);
    if (guard < 0) return;
    enum policy_action ga = p->guard[guard][kind];
    if (strictness(out->action) > strictness(ga)) return; /* a rule's deny beats a review */

    uint64_t limit = out->limit_rows;
    memset(out, 0, sizeof(*out));
    out->stmt_index = index;
    out->action = ga;
    out->rule = cfg_guardrail_name((enum cfg_guardrail)guard);
    out->limit_rows = ga == POLICY_DENY ? 0 : limit;
    guard_reason((enum cfg_guardrail)guard, s, out->reason, sizeof(out->reason));
    if (ga == POLICY_REVIEW)
        set_text(out->hint, sizeof(out->hint), "ask for approval");
    else if (p->guard_allowed[guard][0])
        snprintf(out->hint, sizeof(out->hint), "%s; %s", guard_hint((enum cfg_guardrail)guard, s),
                 p->guard_allowed[guard]);
    else
        set_text(out->hint, sizeof(out->hint), guard_hint((enum cfg_guardrail)guard, s));
}

void policy_eval(const struct policy *p, const struct policy_subject *who,
                 const struct sql_facts *f, struct policy_decision *out)
{
    if (!f->n_stmts) {
        memset(out, 0, sizeof(*out));
        out->action = POLICY_ALLOW;
        out->rule = "default";
        set_text(out->reason, sizeof(out->reason), "empty query");
        return;
    }
    uint64_t limit = 0;
    int mask = 0;
    struct policy_decision d;
    for (unsigned i = 0; i < f->n_stmts; i++) {
        policy_eval_stmt(p, who, &f->stmts[i], i, i == 0 ? out : &d);
        const struct policy_decision *cur = i == 0 ? out : &d;
        if (cur->limit_rows && (!limit || cur->limit_rows < limit)) limit = cur->limit_rows;
        /* masking wins: unmask only when every statement's rule says unmask */
        if (i == 0 || cur->mask > 0 || (mask < 0 && cur->mask == 0)) mask = cur->mask;
        if (i > 0 && strictness(d.action) > strictness(out->action)) *out = d;
        if (out->action == POLICY_DENY) break; /* nothing is stricter */
    }
    out->limit_rows = out->action == POLICY_DENY ? 0 : limit;
    out->mask = mask;
}
