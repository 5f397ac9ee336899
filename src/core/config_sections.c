/*
 * config_sections.c: the sections of sluice.yaml that came after the foundation: state,
 * masking, audit, approvals, identities.oidc and admin. Each raw section from libcyaml is
 * checked and turned into its struct in config.h; secrets named by *_env / *_file keys are
 * read here so that nothing else touches the environment. Errors name FILE:LINE:COL and the
 * key, like the rest of the loader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/config_raw.h"

#define DEFAULT_STATE_PATH "sluice.db"

void cfgld_set_section_defaults(struct sluice_config *cfg)
{
    cfg->state.driver = CFG_STATE_SQLITE;
    cfg->state.path = xstrdup(DEFAULT_STATE_PATH);
    cfg->masking.enabled = true;
    cfg->audit.enabled = true;
    cfg->audit.row_digest = true;
    cfg->audit.checkpoint = 1000;
    cfg->audit.queue = 65536;
    cfg->approvals.timeout = 600;
    cfg->approvals.grant_ttl = 86400;
    cfg->approvals.grant_max_uses = 100;
    cfg->approvals.grant_max_rows = 1000;
    cfg->approvals.max_pending_per_identity = 10;
    cfg->approvals.max_queued_writes = CFG_APPROVALS_MAX_QUEUED_WRITES;
}

static void free_list(char **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void cfgld_free_sections(struct sluice_config *cfg)
{
    free(cfg->state.path);
    cfgld_free_secret(cfg->state.dsn);
    struct cfg_masking *m = &cfg->masking;
    free_list(m->unmask, m->n_unmask);
    free_list(m->unmask_identities, m->n_unmask_identities);
    free_list(m->detectors, m->n_detectors);
    for (unsigned i = 0; i < m->n_custom; i++) {
        free(m->custom[i].name);
        free(m->custom[i].pattern);
    }
    free(m->custom);
    for (unsigned i = 0; i < m->n_columns; i++) {
        free(m->columns[i].match);
        free(m->columns[i].detector);
    }
    free(m->columns);
    free_list(m->exempt, m->n_exempt);
    if (m->hash_key) {
        explicit_bzero(m->hash_key, m->hash_key_len);
        free(m->hash_key);
    }
    free(cfg->audit.jsonl);
    free(cfg->audit.signing_key);
    struct cfg_approvals *a = &cfg->approvals;
    free_list(a->approvers, a->n_approvers);
    for (unsigned i = 0; i < a->n_notify; i++) {
        cfgld_free_secret(a->notify[i].url);
        cfgld_free_secret(a->notify[i].secret);
        for (unsigned u = 0; u < a->notify[i].n_users; u++) {
            free(a->notify[i].users[u].slack_id);
            free(a->notify[i].users[u].identity);
        }
        free(a->notify[i].users);
    }
    free(a->notify);
    free(a->public_url);
    struct cfg_oidc *o = &cfg->oidc;
    free(o->issuer);
    free(o->audience);
    free(o->jwks_file);
    free(o->jwks_url);
    free(o->name_claim);
    free(o->groups_claim);
    free(o->kind_claim);
    free_list(o->algorithms, o->n_algorithms);
    free_list(o->require_groups, o->n_require_groups);
    free_list(cfg->admin.groups, cfg->admin.n_groups);
}

/* Copy a list of non-empty strings; "path" names it in errors. */
static int copy_list(struct loader *ld, const char *path, char **src, unsigned n, char ***dst,
                     unsigned *dn)
{
    if (!n) return 0;
    *dst = xcalloc(n, sizeof(char *));
    for (unsigned i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof(key), "%s[%u]", path, i);
        if (!src[i] || !*src[i]) return cfgld_fail(ld, key, AT_VALUE, "empty value in %s", key);
        (*dst)[(*dn)++] = xstrdup(src[i]);
    }
    return 0;
}

static int bool_key(struct loader *ld, const char *key, const char *v, bool *out)
{
    if (v && cfgld_parse_bool(v, out) < 0)
        return cfgld_fail(ld, key, AT_VALUE, "invalid value \"%s\" for %s (expected true or false)",
                          v, key);
    return 0;
}

static int duration_key(struct loader *ld, const char *key, const char *v, unsigned *out)
{
    if (v && cfgld_parse_duration(v, out) < 0)
        return cfgld_fail(ld, key, AT_VALUE,
                          "invalid duration \"%s\" for %s (expected seconds, or a number followed "
                          "by s, m, h or d)",
                          v, key);
    return 0;
}

static int count_key(struct loader *ld, const char *key, const char *v, unsigned long long max,
                     unsigned long long *out)
{
    if (v && (cfgld_parse_uint(v, max, out) < 0 || *out == 0))
        return cfgld_fail(ld, key, AT_VALUE, "invalid value \"%s\" for %s (expected 1 to %llu)", v,
                          key, max);
    return 0;
}

/* A secret from an environment variable (trailing newline kept out). NULL and an error when
 * the variable is not set or empty. */
static int secret_env(struct loader *ld, const char *key, const char *var, char **out)
{
    if (ld->no_secrets) return 0;
    const char *v = getenv(var);
    if (!v || !*v)
        return cfgld_fail(ld, key, AT_VALUE, "environment variable %s named by %s is not set", var,
                          key);
    *out = xstrdup(v);
    return 0;
}

static int secret_file(struct loader *ld, const char *key, const char *file, char **out,
                       size_t *outlen)
{
    if (ld->no_secrets) return 0;
    char *path = cfgld_path(ld, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        free(path);
        return cfgld_fail(ld, key, AT_VALUE, "cannot open %s named by %s: %s", file, key,
                          strerror(e));
    }
    free(path);
    char buf[4097];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        explicit_bzero(buf, sizeof(buf));
        return cfgld_fail(ld, key, AT_VALUE, "the file named by %s is empty", key);
    }
    *out = xmalloc(n + 1);
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *outlen = n;
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

static int convert_state(struct loader *ld, const struct raw_state *rs, struct sluice_config *cfg)
{
    if (!rs) return 0;
    if (rs->driver == RAW_DRIVER_POSTGRES) {
        cfg->state.driver = CFG_STATE_POSTGRES;
        cfg->state.dsn = xstrdup(rs->dsn);
        free(cfg->state.path);
        cfg->state.path = NULL;
    } else if (rs->path) {
        if (!*rs->path) return cfgld_fail(ld, "state.path", AT_VALUE, "state.path is empty");
        free(cfg->state.path);
        cfg->state.path = cfgld_path(ld, rs->path);
    }
    return 0;
}

static bool detector_name_ok(const char *s)
{
    if (!*s || strlen(s) > 48) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

static int convert_masking(struct loader *ld, const struct raw_masking *rm,
                           struct sluice_config *cfg)
{
    if (!rm) return 0;
    struct cfg_masking *m = &cfg->masking;
    if (bool_key(ld, "masking.enabled", rm->enabled, &m->enabled) < 0) return -1;
    if (rm->unmask) {
        if (copy_list(ld, "masking.unmask.groups", rm->unmask->groups, rm->unmask->groups_count,
                      &m->unmask, &m->n_unmask) < 0 ||
            copy_list(ld, "masking.unmask.identities", rm->unmask->identities,
                      rm->unmask->identities_count, &m->unmask_identities,
                      &m->n_unmask_identities) < 0)
            return -1;
    }
    if (copy_list(ld, "masking.detectors", rm->detectors, rm->detectors_count, &m->detectors,
                  &m->n_detectors) < 0)
        return -1;
    if (rm->custom_count) m->custom = xcalloc(rm->custom_count, sizeof(*m->custom));
    for (unsigned i = 0; i < rm->custom_count; i++) {
        const struct raw_detector *rd = &rm->custom[i];
        char path[64], key[96];
        snprintf(path, sizeof(path), "masking.custom[%u]", i);
        if (!rd->name)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"name\" in %s", path);
        snprintf(key, sizeof(key), "%s.name", path);
        if (!detector_name_ok(rd->name))
            return cfgld_fail(ld, key, AT_VALUE,
                              "invalid detector name \"%s\" in %s (1 to 48 of a-z, 0-9 and _)",
                              rd->name, key);
        for (unsigned j = 0; j < m->n_custom; j++)
            if (strcmp(m->custom[j].name, rd->name) == 0)
                return cfgld_fail(ld, key, AT_VALUE, "duplicate detector name \"%s\" in %s",
                                  rd->name, key);
        if (!rd->pattern || !*rd->pattern)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"pattern\" in %s (\"%s\")",
                              path, rd->name);
        struct cfg_detector *d = &m->custom[m->n_custom++];
        d->name = xstrdup(rd->name);
        d->pattern = xstrdup(rd->pattern);
        d->validator =
            rd->validator ? (enum cfg_mask_validator)(rd->validator - 1) : CFG_VALID_NONE;
        d->form = (enum cfg_mask_form)rd->form;
    }
    if (rm->columns_count) m->columns = xcalloc(rm->columns_count, sizeof(*m->columns));
    for (unsigned i = 0; i < rm->columns_count; i++) {
        const struct raw_mask_column *rc = &rm->columns[i];
        char path[64];
        snprintf(path, sizeof(path), "masking.columns[%u]", i);
        if (!rc->match || !*rc->match)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"match\" in %s", path);
        struct cfg_mask_column *c = &m->columns[m->n_columns++];
        c->match = xstrdup(rc->match);
        c->detector = xstrdup(rc->detector ? rc->detector : "column");
        c->form = (enum cfg_mask_form)rc->form;
    }
    if (copy_list(ld, "masking.exempt", rm->exempt, rm->exempt_count, &m->exempt, &m->n_exempt) < 0)
        return -1;
    m->form = (enum cfg_mask_form)rm->form;
    if (rm->hash_key_env && rm->hash_key_file)
        return cfgld_fail(ld, "masking.hash_key_file", AT_KEY,
                          "masking sets both hash_key_env and hash_key_file (choose one)");
    if (rm->hash_key_env) {
        if (secret_env(ld, "masking.hash_key_env", rm->hash_key_env, &m->hash_key) < 0) return -1;
        m->hash_key_len = strlen(m->hash_key);
    } else if (rm->hash_key_file) {
        if (secret_file(ld, "masking.hash_key_file", rm->hash_key_file, &m->hash_key,
                        &m->hash_key_len) < 0)
            return -1;
    }
    return 0;
}

static int convert_audit(struct loader *ld, const struct raw_audit *ra, struct sluice_config *cfg)
{
    if (!ra) return 0;
    struct cfg_audit *a = &cfg->audit;
    if (bool_key(ld, "audit.enabled", ra->enabled, &a->enabled) < 0) return -1;
    if (bool_key(ld, "audit.row_digest", ra->row_digest, &a->row_digest) < 0) return -1;
    a->fail_open = ra->fail == 2;
    if (ra->jsonl) {
        if (!*ra->jsonl) return cfgld_fail(ld, "audit.jsonl", AT_VALUE, "audit.jsonl is empty");
        a->jsonl = cfgld_path(ld, ra->jsonl);
    }
    unsigned secs = 0;
    if (duration_key(ld, "audit.retention", ra->retention, &secs) < 0) return -1;
    a->retention = secs;
    if (ra->signing_key) a->signing_key = cfgld_path(ld, ra->signing_key);
    unsigned long long v;
    if (ra->checkpoint) {
        if (count_key(ld, "audit.checkpoint", ra->checkpoint, 1000000, &v) < 0) return -1;
        a->checkpoint = (unsigned)v;
    }
    if (ra->queue) {
        if (count_key(ld, "audit.queue", ra->queue, 16u << 20, &v) < 0) return -1;
        if (v < 64)
            return cfgld_fail(ld, "audit.queue", AT_VALUE, "audit.queue must be at least 64");
        a->queue = (unsigned)v;
    }
    return 0;
}

static int convert_notify(struct loader *ld, unsigned i, const struct raw_notify *rn,
                          const struct sluice_config *cfg, struct cfg_notify *n)
{
    char path[64], key[128];
    snprintf(path, sizeof(path), "approvals.notify[%u]", i);
    if (!!rn->slack == !!rn->webhook)
        return cfgld_fail(ld, path, AT_KEY, "%s must hold exactly one of slack or webhook", path);
    if (rn->slack) {
        n->kind = CFG_NOTIFY_SLACK;
        snprintf(key, sizeof(key), "%s.slack", path);
        if (!rn->slack->webhook_url_env)
            return cfgld_fail(ld, key, AT_KEY, "missing required key \"webhook_url_env\" in %s",
                              key);
        snprintf(key, sizeof(key), "%s.slack.webhook_url_env", path);
        if (secret_env(ld, key, rn->slack->webhook_url_env, &n->url) < 0) return -1;
        if (rn->slack->signing_secret_env) {
            snprintf(key, sizeof(key), "%s.slack.signing_secret_env", path);
            if (secret_env(ld, key, rn->slack->signing_secret_env, &n->secret) < 0) return -1;
        }
        if (rn->slack->users_count) {
            n->users = xcalloc(rn->slack->users_count, sizeof *n->users);
            for (unsigned u = 0; u < rn->slack->users_count; u++) {
                const struct raw_slack_user *ru = &rn->slack->users[u];
                snprintf(key, sizeof(key), "%s.slack.users[%u].slack_id", path, u);
                if (!*ru->slack_id) return cfgld_fail(ld, key, AT_VALUE, "%s is empty", key);
                for (unsigned v = 0; v < u; v++)
                    if (!strcmp(n->users[v].slack_id, ru->slack_id))
                        return cfgld_fail(ld, key, AT_VALUE,
                                          "%s maps Slack user \"%s\" a second time", key,
                                          ru->slack_id);
                snprintf(key, sizeof(key), "%s.slack.users[%u].identity", path, u);
                if (!config_find_identity(cfg, ru->identity))
                    return cfgld_fail(ld, key, AT_VALUE,
                                      "%s names \"%s\", which is not a user or token identity", key,
                                      ru->identity);
                n->users[u].slack_id = xstrdup(ru->slack_id);
                n->users[u].identity = xstrdup(ru->identity);
                n->n_users = u + 1;
            }
        }
        return 0;
    }
    n->kind = CFG_NOTIFY_WEBHOOK;
    snprintf(key, sizeof(key), "%s.webhook", path);
    if (!!rn->webhook->url == !!rn->webhook->url_env)
        return cfgld_fail(ld, key, AT_KEY, "%s needs exactly one of url or url_env", key);
    if (rn->webhook->url) {
        if (strncmp(rn->webhook->url, "http://", 7) != 0 &&
            strncmp(rn->webhook->url, "https://", 8) != 0) {
            snprintf(key, sizeof(key), "%s.webhook.url", path);
            return cfgld_fail(ld, key, AT_VALUE, "%s must be an http:// or https:// URL", key);
        }
        n->url = xstrdup(rn->webhook->url);
    } else {
        snprintf(key, sizeof(key), "%s.webhook.url_env", path);
        if (secret_env(ld, key, rn->webhook->url_env, &n->url) < 0) return -1;
    }
    if (!rn->webhook->secret_env)
        return cfgld_fail(ld, key, AT_KEY,
                          "missing required key \"secret_env\" in %s.webhook (payloads are "
                          "signed)",
                          path);
    snprintf(key, sizeof(key), "%s.webhook.secret_env", path);
    return secret_env(ld, key, rn->webhook->secret_env, &n->secret);
}

static int convert_approvals(struct loader *ld, const struct raw_approvals *ra,
                             struct sluice_config *cfg)
{
    if (!ra) return 0;
    struct cfg_approvals *a = &cfg->approvals;
    if (ra->approvers && copy_list(ld, "approvals.approvers.groups", ra->approvers->groups,
                                   ra->approvers->groups_count, &a->approvers, &a->n_approvers) < 0)
        return -1;
    a->mode = (enum cfg_approval_mode)ra->mode;
    if (duration_key(ld, "approvals.timeout", ra->timeout, &a->timeout) < 0) return -1;
    if (ra->timeout && a->timeout == 0)
        return cfgld_fail(ld, "approvals.timeout", AT_VALUE, "approvals.timeout must be positive");
    if (ra->max_pending_per_identity) {
        unsigned long long v;
        if (cfgld_parse_uint(ra->max_pending_per_identity, 1000000, &v) < 0)
            return cfgld_fail(ld, "approvals.max_pending_per_identity", AT_VALUE,
                              "invalid value \"%s\" for approvals.max_pending_per_identity "
                              "(expected 0 to 1000000; 0 for no limit)",
                              ra->max_pending_per_identity);
        a->max_pending_per_identity = (unsigned)v;
    }
    if (ra->max_queued_writes) {
        unsigned long long v;
        if (count_key(ld, "approvals.max_queued_writes", ra->max_queued_writes, 1000000, &v) < 0)
            return -1;
        a->max_queued_writes = (unsigned)v;
    }
    if (ra->grant) {
        unsigned long long v;
        if (duration_key(ld, "approvals.grant.ttl", ra->grant->ttl, &a->grant_ttl) < 0) return -1;
        if (ra->grant->max_uses) {
            if (count_key(ld, "approvals.grant.max_uses", ra->grant->max_uses, 1000000000, &v) < 0)
                return -1;
            a->grant_max_uses = (unsigned)v;
        }
        if (ra->grant->max_rows) {
            if (cfgld_parse_uint(ra->grant->max_rows, UINT64_MAX, &v) < 0)
                return cfgld_fail(ld, "approvals.grant.max_rows", AT_VALUE,
                                  "invalid value \"%s\" for approvals.grant.max_rows (expected a "
                                  "number of rows, 0 for no bound)",
                                  ra->grant->max_rows);
            a->grant_max_rows = v;
        }
    }
    if (ra->notify_count) a->notify = xcalloc(ra->notify_count, sizeof(*a->notify));
    for (unsigned i = 0; i < ra->notify_count; i++) {
        if (convert_notify(ld, i, &ra->notify[i], cfg, &a->notify[i]) < 0) {
            a->n_notify = i + 1;
            return -1;
        }
        a->n_notify = i + 1;
    }
    if (ra->public_url) a->public_url = xstrdup(ra->public_url);
    return 0;
}

static int convert_oidc(struct loader *ld, const struct raw_oidc *ro, struct sluice_config *cfg)
{
    if (!ro) return 0;
    struct cfg_oidc *o = &cfg->oidc;
    o->enabled = true;
    if (!ro->issuer)
        return cfgld_fail(ld, "identities.oidc", AT_KEY,
                          "missing required key \"issuer\" in identities.oidc");
    if (!ro->audience)
        return cfgld_fail(ld, "identities.oidc", AT_KEY,
                          "missing required key \"audience\" in identities.oidc");
    if (!!ro->jwks_file == !!ro->jwks_url)
        return cfgld_fail(ld, "identities.oidc", AT_KEY,
                          "identities.oidc needs exactly one of jwks_file or jwks_url");
    o->issuer = xstrdup(ro->issuer);
    o->audience = xstrdup(ro->audience);
    o->jwks_file = cfgld_path(ld, ro->jwks_file);
    o->jwks_url = xstrdup(ro->jwks_url);
    o->name_claim = ro->name_claim ? xstrdup(ro->name_claim) : NULL; /* email, else sub */
    o->groups_claim = xstrdup(ro->groups_claim ? ro->groups_claim : "groups");
    o->kind_claim = xstrdup(ro->kind_claim ? ro->kind_claim : "sluice_kind");
    static const char *const algs[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                       "PS512", "ES256", "ES384", "ES512"};
    for (unsigned i = 0; i < ro->algorithms_count; i++) {
        bool ok = false;
        for (size_t j = 0; j < sizeof(algs) / sizeof(algs[0]); j++)
            ok |= ro->algorithms[i] && strcmp(ro->algorithms[i], algs[j]) == 0;
        if (!ok) {
            char key[96];
            snprintf(key, sizeof(key), "identities.oidc.algorithms[%u]", i);
            return cfgld_fail(ld, key, AT_VALUE,
                              "unsupported algorithm \"%s\" in %s (expected RS256, RS384, RS512, "
                              "PS256, PS384, PS512, ES256, ES384 or ES512)",
                              ro->algorithms[i] ? ro->algorithms[i] : "", key);
        }
    }
    if (copy_list(ld, "identities.oidc.require_groups", ro->require_groups,
                  ro->require_groups_count, &o->require_groups, &o->n_require_groups) < 0)
        return -1;
    if (ro->algorithms_count) {
        if (copy_list(ld, "identities.oidc.algorithms", ro->algorithms, ro->algorithms_count,
                      &o->algorithms, &o->n_algorithms) < 0)
            return -1;
    } else {
        o->algorithms = xcalloc(1, sizeof(char *));
        o->algorithms[o->n_algorithms++] = xstrdup("RS256");
    }
    o->end_sessions_at_expiry = true;
    if (bool_key(ld, "identities.oidc.end_sessions_at_expiry", ro->end_sessions_at_expiry,
                 &o->end_sessions_at_expiry) < 0)
        return -1;
    o->leeway = 60;
    return duration_key(ld, "identities.oidc.leeway", ro->leeway, &o->leeway);
}

int cfgld_convert_sections(struct loader *ld, const struct raw_config *raw,
                           struct sluice_config *cfg)
{
    if (convert_state(ld, raw->state, cfg) < 0) return -1;
    if (convert_masking(ld, raw->masking, cfg) < 0) return -1;
    if (convert_audit(ld, raw->audit, cfg) < 0) return -1;
    if (convert_approvals(ld, raw->approvals, cfg) < 0) return -1;
    if (raw->identities && convert_oidc(ld, raw->identities->oidc, cfg) < 0) return -1;
    if (raw->admin && copy_list(ld, "admin.groups", raw->admin->groups, raw->admin->groups_count,
                                &cfg->admin.groups, &cfg->admin.n_groups) < 0)
        return -1;
    return 0;
}
