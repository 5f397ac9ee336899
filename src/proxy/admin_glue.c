/*
 * admin_glue.c: what the admin listener (src/admin/) asks of the rest of sluice, answered
 * here: who a bearer token is (static token or password identities, or an OIDC JWT), whether
 * the instance is ready, live sessions, the audit trail, approvals and grants, and the gauges
 * read at scrape time. The admin module knows none of these modules; this file is the seam.
 */
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "admin/admin.h"
#include "admin/metrics.h"
#include "approve/approve.h"
#include "audit/audit.h"
#include "core/buf.h"
#include "core/log.h"
#include "ident/ident.h"
#include "ident/oidc.h"
#include "net/net.h"
#include "proxy/proxy.h"

static bool in_groups(char **want, unsigned n_want, char *const *have, unsigned n_have)
{
    for (unsigned i = 0; i < n_want; i++)
        for (unsigned j = 0; j < n_have; j++)
            if (strcmp(want[i], have[j]) == 0) return true;
    return false;
}

static void caller_fill(struct admin_caller *c, const struct sluice_config *cfg, const char *name,
                        char *const *groups, unsigned n)
{
    c->name = xstrdup(name);
    c->groups = n ? xcalloc(n, sizeof(char *)) : NULL;
    for (unsigned i = 0; i < n; i++)
        c->groups[c->n_groups++] = xstrdup(groups[i]);
    c->admin = in_groups(cfg->admin.groups, cfg->admin.n_groups, groups, n);
    c->approver = in_groups(cfg->approvals.approvers, cfg->approvals.n_approvers, groups, n);
}

/* A bearer token: "NAME:SECRET" for any identity, a bare API token (tried against the token
 * identities), or an OIDC JWT when identities.oidc is set. */
static int glue_authenticate(void *ctx, const char *token, struct admin_caller *caller)
{
    (void)ctx;
    struct runtime *rt = runtime_acquire();
    const struct sluice_config *cfg = rt->cfg;
    int rc = -1;
    if (rt->oidc && oidc_looks_like_jwt(token)) {
        struct oidc_identity id;
        char why[256];
        if (oidc_verify(rt->oidc, token, (uint64_t)time(NULL), &id, why, sizeof why) != 0) {
            log_info("admin: bearer JWT refused: %s", why);
        } else if (config_find_identity(cfg, id.name)) {
            /* a configured identity's name is its own, as on the database side: a JWT naming
             * it would act (approve, kill, revoke) and be audited as that identity */
            log_info("admin: bearer JWT refused: its name \"%s\" is a configured identity's",
                     id.name);
            oidc_identity_free(&id);
        } else {
            caller_fill(caller, cfg, id.name, id.groups, id.n_groups);
            if (cfg->oidc.end_sessions_at_expiry) caller->expires = id.exp + cfg->oidc.leeway;
            oidc_identity_free(&id);
            rc = 0;
        }
        runtime_release(rt);
        return rc;
    }
    const char *colon = strchr(token, ':');
    if (colon) {
        char name[256];
        size_t n = (size_t)(colon - token);
        if (n < sizeof name) {
            memcpy(name, token, n);
            name[n] = '\0';
            const struct cfg_identity *id = config_find_identity(cfg, name);
            if (ident_check_secret(id, name, colon + 1, strlen(colon + 1))) {
                caller_fill(caller, cfg, id->name, id->groups, id->n_groups);
                rc = 0;
            }
        }
    }
    for (unsigned i = 0; rc < 0 && i < cfg->n_identities; i++) {
        const struct cfg_identity *id = &cfg->identities[i];
        if (!id->is_token) continue;
        if (ident_check_secret(id, NULL, token, strlen(token))) {
            caller_fill(caller, cfg, id->name, id->groups, id->n_groups);
            rc = 0;
        }
    }
    runtime_release(rt);
    return rc;
}

/* Can a connection to the target be made, within 500 ms per address? Every address of its
 * host name is tried in turn, as a session does. */
static bool target_reachable(const struct cfg_target *t)
{
    char err[256];
    struct net_addr *addrs;
    int n = net_resolve(t->host, t->port, &addrs, err, sizeof err);
    bool ok = false;
    for (int i = 0; i < n && !ok; i++) {
        int fd = net_connect_addr(&addrs[i].addr, addrs[i].len, err, sizeof err);
        if (fd < 0) continue;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        ok = poll(&p, 1, 500) == 1 && net_connect_result(fd) == 0;
        close(fd);
    }
    free(addrs);
    return ok;
}

static bool glue_ready(void *ctx, char **why)
{
    (void)ctx;
    if (!audit_healthy()) {
        *why = xstrdup("the audit store cannot be written");
        return false;
    }
    struct runtime *rt = runtime_acquire();
    bool ok = rt->cfg->n_targets == 0;
    for (unsigned i = 0; !ok && i < rt->cfg->n_targets; i++)
        ok = target_reachable(&rt->cfg->targets[i]);
    runtime_release(rt);
    if (!ok) *why = xstrdup("no target is reachable");
    return ok;
}

static void glue_scrape(void *ctx)
{
    (void)ctx;
    struct audit_stats st;
    audit_stats_get(&st);
    metrics_set_gauge(M_AUDIT_QUEUE_DEPTH, 0, 0, (int64_t)st.queued);
    metrics_set_counter(M_AUDIT_EVENTS_WRITTEN, 0, 0, st.written);
    metrics_set_counter(M_AUDIT_WRITE_ERRORS, 0, 0, st.write_errors);
    metrics_set_counter(M_AUDIT_EVENTS_LOST, 0, 0, st.lost);
    if (atomic_load(&proxy_approvals)) {
        struct approve_counters c;
        approve_get_counters(&c);
        metrics_set_gauge(M_APPROVALS_PENDING, 0, 0, (int64_t)c.pending);
        metrics_set_counter(M_APPROVALS_DECIDED, METRICS_APPROVED, 0, c.approved);
        metrics_set_counter(M_APPROVALS_DECIDED, METRICS_DENIED, 0, c.denied);
        metrics_set_counter(M_APPROVALS_DECIDED, METRICS_EXPIRED, 0, c.expired);
    }
}

static int glue_sessions(void *ctx, char **out)
{
    (void)ctx;
    *out = registry_json();
    return 200;
}

static int glue_session_kill(void *ctx, const char *id, const struct admin_caller *by, char **out)
{
    (void)ctx;
    char *end;
    unsigned long long n = strtoull(id, &end, 10);
    if (!*id || *end || registry_kill(n, by->name) < 0) {
        *out = xstrdup("no such session");
        return 404;
    }
    log_info("admin: %s ended session %llu", by->name, n);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "ended", id);
    *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 200;
}

static int glue_audit(void *ctx, const struct admin_audit_query *q, char **out)
{
    (void)ctx;
    struct audit_query aq = {q->identity, q->decision, q->kind,      q->target,
                             q->since,    q->until,    q->after_seq, q->limit};
    char err[512];
    struct runtime *rt = runtime_acquire();
    int rc = audit_query_json(rt->cfg, &aq, out, err, sizeof err);
    runtime_release(rt);
    if (rc != 200) *out = xstrdup(err);
    return rc;
}

static int glue_audit_verify(void *ctx, char **out)
{
    (void)ctx;
    char err[512];
    struct runtime *rt = runtime_acquire();
    int rc = audit_verify_json(rt->cfg, out, err, sizeof err);
    runtime_release(rt);
    if (rc != 200) *out = xstrdup(err);
    return rc;
}

/* {"KEY": ARRAY} around a JSON array from the approvals module. */
static int wrap_array(const char *key, char *arr, char **out)
{
    if (!arr) {
        *out = xstrdup("the approvals store could not be read");
        return 503;
    }
    size_t n = strlen(key) + strlen(arr) + 8;
    *out = xmalloc(n);
    snprintf(*out, n, "{\"%s\":%s}", key, arr);
    free(arr);
    return 200;
}

static bool approvals_on(char **out)
{
    if (atomic_load(&proxy_approvals)) return true;
    *out = xstrdup("approvals are not running on this instance");
    return false;
}

static int glue_approvals(void *ctx, const char *state, char **out)
{
    (void)ctx;
    if (!approvals_on(out)) return 503;
    return wrap_array("approvals", approve_list_json(state ? state : "pending"), out);
}

static int decide_status(int rc)
{
    switch (rc) {
    case APPROVE_ERR_NOT_FOUND:
        return 404;
    case APPROVE_ERR_CONFLICT:
        return 409;
    case APPROVE_ERR_FORBIDDEN:
        return 403;
    default:
        return 500;
    }
}

static int glue_decide(void *ctx, const char *id, bool approve, const struct admin_decision *d,
                       const struct admin_caller *by, char **out)
{
    (void)ctx;
    if (!approvals_on(out)) return 503;
    struct approve_bounds b = {d->ttl, d->uses, d->rows};
    struct approve_decision dec = {
        .approve = approve,
        .approver = by->name,
        .approver_groups = (const char *const *)by->groups,
        .n_approver_groups = by->n_groups,
        .bounds = &b,
        .scope = d->scope && strcmp(d->scope, "group") == 0 ? APPROVE_SCOPE_GROUP
                                                            : APPROVE_SCOPE_IDENTITY,
        .reason = d->reason,
    };
    char grant[APPROVE_ID_LEN] = "", err[256];
    int rc = approve_decide_ex(id, &dec, grant, err, sizeof err);
    if (rc < 0) {
        *out = xstrdup(err);
        return decide_status(rc);
    }
    log_info("admin: %s %s request %s", by->name, approve ? "approved" : "denied", id);
    char *one = approve_request_json(id);
    if (one) {
        *out = one;
        return 200;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "state", approve ? "approved" : "denied");
    if (grant[0]) cJSON_AddStringToObject(o, "grant_id", grant);
    *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 200;
}

static int glue_grants(void *ctx, char **out)
{
    (void)ctx;
    if (!approvals_on(out)) return 503;
    return wrap_array("grants", approve_grants_json(), out);
}

static int glue_revoke(void *ctx, const char *id, const struct admin_caller *by, char **out)
{
    (void)ctx;
    if (!approvals_on(out)) return 503;
    int rc = approve_grant_revoke(id, by->name);
    if (rc < 0) {
        *out = xstrdup("no such live grant");
        return rc == APPROVE_ERR_NOT_FOUND || rc == -1 ? 404 : decide_status(rc);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "revoked", id);
    *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 200;
}

static int glue_slack(void *ctx, const char *body, size_t len, const char *signature,
                      const char *timestamp, char **out)
{
    (void)ctx;
    if (!approvals_on(out)) return 503;
    char msg[512];
    int status = approve_slack_action(timestamp ? timestamp : "", signature ? signature : "", body,
                                      len, msg, sizeof msg);
    if (status == 200) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", msg);
        *out = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
    } else {
        *out = xstrdup(msg);
    }
    return status;
}

/* The audit's live feed to the dashboard's stream: lines only while someone streams (the
 * writer then builds none); the writer's lines are not NUL-terminated. */
static void feed_to_admin(void *ctx, uint64_t seq, const char *line, size_t len)
{
    (void)ctx;
    (void)seq;
    char small[2048];
    char *copy = len < sizeof small ? small : xmalloc(len + 1);
    memcpy(copy, line, len);
    copy[len] = '\0';
    admin_publish_event(copy);
    if (copy != small) free(copy);
}

static bool feed_wanted(void *ctx)
{
    (void)ctx;
    return admin_events_wanted();
}

static void feed_skipped(void *ctx, unsigned n)
{
    (void)ctx;
    admin_skip_events(n);
}

static const struct audit_feed admin_feed = {
    .event = feed_to_admin, .wanted = feed_wanted, .skipped = feed_skipped};

static const struct admin_hooks glue_hooks = {
    .authenticate = glue_authenticate,
    .ready = glue_ready,
    .scrape = glue_scrape,
    .sessions_json = glue_sessions,
    .session_kill = glue_session_kill,
    .audit_query_json = glue_audit,
    .audit_verify_json = glue_audit_verify,
    .approvals_json = glue_approvals,
    .approval_decide = glue_decide,
    .grants_json = glue_grants,
    .grant_revoke = glue_revoke,
    .slack_action = glue_slack,
};

int admin_glue_start(const struct sluice_config *cfg, char *err, size_t errlen)
{
    if (admin_start(cfg, &glue_hooks, err, errlen) < 0) return -1;
    audit_feed_subscribe(&admin_feed);
    return 0;
}

void admin_glue_stop(void)
{
    audit_feed_unsubscribe(&admin_feed);
    admin_stop();
}
