/*
 * policy.h: decisions on statements. Built-in guardrails first, then the ordered rules of
 * sluice.yaml, then `policy.default`. Pure code over the facts of src/sql/: no sockets.
 *
 * A compiled policy belongs to one configuration snapshot (built once per load/reload,
 * read-only afterwards, shared by all workers without locks).
 *
 * Ownership: policy_compile() returns a policy the caller frees with policy_free().
 * Decisions point into the policy (rule names) and stay valid as long as it does.
 */
#ifndef SLUICE_POLICY_POLICY_H
#define SLUICE_POLICY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "sql/sql.h"

enum policy_action {
    POLICY_ALLOW,
    POLICY_DENY,
    POLICY_REVIEW, /* needs a human's approval (issue 6); refused until that flow exists */
};

/* Who asks, and where. */
struct policy_subject {
    const struct cfg_identity *ident; /* never NULL for an authenticated session */
    const char *target;
};

struct policy_decision {
    enum policy_action action;
    const char *rule;    /* guardrail or rule name, "default" when nothing matched */
    char reason[256];    /* why, for the error message: e.g. "DELETE without WHERE on orders" */
    char hint[256];      /* what would be allowed or how to ask for approval */
    uint64_t limit_rows; /* 0 = no limit; else rows beyond it are not sent */
    unsigned stmt_index; /* the statement of a multi-statement string that decided */
    int mask;            /* rule action mask: 1 (mask even for unmask groups); unmask: -1; 0 */
    enum cfg_approval_mode mode; /* review: the rule's mode (DEFAULT: approvals.mode) */
};

struct policy;

struct policy *policy_compile(const struct sluice_config *cfg, char *err, size_t errlen);
void policy_free(struct policy *p);

/* Judge every statement of f; the whole string gets the strictest decision (deny > review >
 * allow; the smallest non-zero limit_rows). */
void policy_eval(const struct policy *p, const struct policy_subject *who,
                 const struct sql_facts *f, struct policy_decision *out);

const char *policy_action_name(enum policy_action a);

/* Judge one statement (index = its position in the string, copied to stmt_index). */
void policy_eval_stmt(const struct policy *p, const struct policy_subject *who,
                      const struct sql_stmt *s, unsigned index, struct policy_decision *out);

/* Bits (1u << enum cfg_guardrail) of the guardrails that s triggers, whatever they are set
 * to (so explain can show them). */
unsigned policy_guardrails_hit(const struct sql_stmt *s);

/*
 * `sluice explain` (explain.c): load config_path (NULL: built-in defaults), judge sql as
 * identity `as` on target (may be NULL) without a database, print the facts and the decision
 * to out and problems to err. An identity not in the config needs kind (human, service or
 * agent; groups optional) to describe it. Returns the exit status: 0 allow, 3 deny, 4 review,
 * 2 usage or config error (unknown identity or target), 1 internal failure.
 */
struct policy_explain_args {
    const char *config_path;
    const char *as;
    const char *target;
    const char *kind;    /* for an identity that is not in the config */
    const char **groups; /* likewise */
    unsigned n_groups;
    const char *sql;
};
int policy_explain(const struct policy_explain_args *a, FILE *out, FILE *err);

#endif
