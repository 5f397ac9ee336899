/*
 * weak_stubs.c: TEMPORARY weak definitions so the tree links while src/sql and src/policy
 * are being written; the real (strong) definitions replace them. To be deleted.
 */
#include <string.h>

#include "policy/policy.h"
#include "sql/sql.h"

static int dummy_policy;

__attribute__((weak)) struct policy *policy_compile(const struct sluice_config *cfg, char *err,
                                                    size_t errlen)
{
    (void)cfg;
    (void)err;
    (void)errlen;
    return (struct policy *)&dummy_policy;
}

__attribute__((weak)) void policy_free(struct policy *p)
{
    (void)p;
}

__attribute__((weak)) void policy_eval(const struct policy *p, const struct policy_subject *who,
                                       const struct sql_facts *f, struct policy_decision *out)
{
    (void)p;
    (void)who;
    (void)f;
    memset(out, 0, sizeof *out);
    out->action = POLICY_ALLOW;
    out->rule = "default";
}

__attribute__((weak)) const char *policy_action_name(enum policy_action a)
{
    return a == POLICY_ALLOW ? "allow" : a == POLICY_DENY ? "deny" : "review";
}

__attribute__((weak)) int sql_analyze(const char *sql, struct sql_facts *out)
{
    (void)sql;
    memset(out, 0, sizeof *out);
    return 0;
}

__attribute__((weak)) void sql_facts_free(struct sql_facts *f)
{
    (void)f;
}
