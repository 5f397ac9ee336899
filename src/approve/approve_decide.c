/*
 * approve_decide.c: approving and denying requests (the admin API, Slack, the CLI), and the
 * Slack callback.
 *
 * A decision is made in the state file first, in one transaction that reads the request and
 * checks it there (pending, before its deadline, not decided by its own requester, by an
 * approver), writes the grant and the request's new state: another process deciding at the
 * same time cannot also win. Memory (approve_mem.c) takes the decision and the grant only
 * once they are written, with the file lock still held; meanwhile it marks the request
 * `deciding`, so that it is neither cancelled nor expired in between. The caller (the admin
 * thread, the CLI) may wait for the file; the statement path never does (approve.c).
 *
 * What it leaves to others: src/admin authenticates approvers (bearer token, OIDC) before it
 * calls approve_decide_ex(); Slack requests are authenticated here, by their signature.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "approve/approve_int.h"
#include "core/buf.h"

#define DEFAULT_GRANT_TTL 86400
#define DEFAULT_GRANT_USES 100

static struct approve_module *const A = &approve_m;

static bool in_list(const char *s, char *const *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (list[i] && !strcmp(list[i], s)) return true;
    return false;
}

/* Bounds from the approver, within the config's ceilings. */
static void effective_bounds(const struct cfg_approvals *ac, const struct approve_bounds *b,
                             uint64_t *ttl, unsigned *uses, uint64_t *rows)
{
    uint64_t cttl = ac->grant_ttl ? ac->grant_ttl : DEFAULT_GRANT_TTL;
    unsigned cuses = ac->grant_max_uses ? ac->grant_max_uses : DEFAULT_GRANT_USES;
    uint64_t crows = ac->grant_max_rows; /* 0 = none */
    *ttl = b && b->ttl && b->ttl < cttl ? b->ttl : cttl;
    *uses = b && b->max_uses && b->max_uses < cuses ? b->max_uses : cuses;
    *rows = crows;
    if (b && b->max_rows && b->max_rows != APPROVE_ROWS_ANY && (crows == 0 || b->max_rows < crows))
        *rows = b->max_rows;
}

/* The decision, in one transaction of the file (dbmu held): the request as stored, the checks,
 * the grant and the request's new state. The request is read, and its deadline judged, with
 * the write lock held, so no other process decides in between. 0 with r (the request as
 * decided) and made (the grant, when approving), or an APPROVE_ERR_* code with err set. */
static int decide_in_file(const char *id, const struct approve_decision *d,
                          const struct cfg_approvals *ac, struct areq *r,
                          struct approve_grant *made, char *err, size_t errlen)
{
    char grant_id[APPROVE_ID_LEN] = "";
    char *groups_pick = NULL;
    int ret = APPROVE_ERR;
    memset(made, 0, sizeof *made);
    if (adb_begin(A->db) < 0) {
        approve_fail(err, errlen, "approvals: %s", sqlite3_errmsg(A->db));
        return APPROVE_ERR;
    }
    int64_t now = approve_now_ms();
    int rc = adb_get_request(A->db, id, r);
    if (rc != 0) {
        approve_fail(err, errlen,
                     rc > 0 ? "no approval request %s" : "approvals: cannot read request %s", id);
        ret = rc > 0 ? APPROVE_ERR_NOT_FOUND : APPROVE_ERR;
        goto out;
    }
    if (r->state != APPROVE_PENDING) {
        approve_fail(err, errlen, "request %s is %s, not pending", id,
                     approve_state_name(r->state));
        ret = APPROVE_ERR_CONFLICT;
        goto out;
    }
    if (r->expires_at <= now) {
        approve_fail(err, errlen, "request %s has expired", id);
        ret = APPROVE_ERR_CONFLICT;
        goto out;
    }
    if (approve_same_person(d->approver, r->identity)) {
        approve_fail(err, errlen, "%s cannot decide their own request %s", d->approver, id);
        ret = APPROVE_ERR_FORBIDDEN;
        goto out;
    }
    if (!d->trusted) {
        bool ok = false;
        for (unsigned i = 0; i < d->n_approver_groups && !ok; i++)
            ok = d->approver_groups[i] &&
                 in_list(d->approver_groups[i], ac->approvers, ac->n_approvers);
        if (!ok) {
            approve_fail(err, errlen, "%s is not an approver (approvals.approvers.groups)",
                         d->approver);
            ret = APPROVE_ERR_FORBIDDEN;
            goto out;
        }
    }
    if (d->approve) {
        struct agrant g;
        memset(&g, 0, sizeof g);
        g.scope = d->scope;
        if (d->scope == APPROVE_SCOPE_GROUP) {
            cJSON *groups = cJSON_Parse(r->groups_json ? r->groups_json : "[]");
            int n = cJSON_GetArraySize(groups);
            for (int i = 0; i < n && !groups_pick; i++) {
                const char *gname = cJSON_GetStringValue(cJSON_GetArrayItem(groups, i));
                if (gname && (!d->group || !strcmp(d->group, gname))) groups_pick = xstrdup(gname);
            }
            cJSON_Delete(groups);
            if (!groups_pick) {
                if (d->group)
                    approve_fail(err, errlen, "%s is not in group %s", r->identity, d->group);
                else
                    approve_fail(err, errlen, "%s is in no group: a group grant is not possible",
                                 r->identity);
                ret = APPROVE_ERR_FORBIDDEN;
                goto out;
            }
            g.group = groups_pick;
        }
        uint64_t ttl, rows;
        unsigned uses;
        effective_bounds(ac, d->bounds, &ttl, &uses, &rows);
        approve_make_id("grt_", grant_id);
        g.id = grant_id;
        g.identity = r->identity;
        g.target = r->target;
        g.fingerprint = r->fingerprint;
        g.approver = d->approver;
        g.request_id = r->id;
        g.created_at = now;
        g.expires_at = now + (int64_t)ttl * 1000;
        g.max_uses = uses;
        g.max_rows = rows;
        if (adb_insert_grant(A->db, &g) < 0) {
            approve_fail(err, errlen, "approvals: cannot store the grant: %s",
                         sqlite3_errmsg(A->db));
            goto out;
        }
        /* the grant as memory keeps it (as adb's rows read back) */
        snprintf(made->id, sizeof made->id, "%s", grant_id);
        made->scope = g.scope;
        if (g.scope == APPROVE_SCOPE_IDENTITY)
            snprintf(made->identity, sizeof made->identity, "%s", g.identity);
        else
            snprintf(made->group, sizeof made->group, "%s", g.group);
        snprintf(made->target, sizeof made->target, "%s", g.target);
        snprintf(made->fingerprint, sizeof made->fingerprint, "%s", g.fingerprint);
        made->expires_at = g.expires_at;
        made->uses_left = uses;
        made->max_rows = rows;
        snprintf(made->approver, sizeof made->approver, "%s", g.approver);
        snprintf(made->request_id, sizeof made->request_id, "%s", g.request_id);
    }
    rc = adb_set_decision(A->db, id, d->approve ? APPROVE_APPROVED : APPROVE_DENIED, d->approver,
                          d->reason, d->approve ? grant_id : NULL, now);
    if (rc <= 0) {
        approve_fail(err, errlen, rc == 0 ? "request %s is no longer pending" : "approvals: %s",
                     rc == 0 ? id : sqlite3_errmsg(A->db));
        ret = rc == 0 ? APPROVE_ERR_CONFLICT : APPROVE_ERR;
        goto out;
    }
    if (adb_commit(A->db) < 0) {
        approve_fail(err, errlen, "approvals: %s", sqlite3_errmsg(A->db));
        goto out;
    }
    r->state = d->approve ? APPROVE_APPROVED : APPROVE_DENIED;
    r->decided_at = now;
    char **mine[] = {&r->approver, &r->decision_reason, &r->grant_id};
    const char *now_set[] = {d->approver, d->reason, d->approve ? grant_id : NULL};
    for (int k = 0; k < 3; k++) {
        free(*mine[k]);
        *mine[k] = xstrdup(now_set[k]);
    }
    ret = 0;
out:
    if (ret != 0) adb_rollback(A->db);
    free(groups_pick);
    return ret;
}

int approve_decide_ex(const char *id, const struct approve_decision *d,
                      char grant_id_out[APPROVE_ID_LEN], char *err, size_t errlen)
{
    if (grant_id_out) grant_id_out[0] = '\0';
    if (!id || !d || !d->approver || !*d->approver) {
        approve_fail(err, errlen, "a decision needs a request id and an approver");
        return APPROVE_ERR;
    }
    struct areq r;
    memset(&r, 0, sizeof r);
    struct approve_grant made;
    struct approve_outcomes out = {0};
    int ret = APPROVE_ERR;
    bool marked = false, cancelled = false;

    /* A request memory holds: its state there is the one that counts (a cancel or an expiry
     * may still be queued for the file); marked `deciding`, it is neither cancelled nor
     * expired until the decision is written or refused. */
    pthread_mutex_lock(&A->mu);
    if (!A->started) {
        pthread_mutex_unlock(&A->mu);
        approve_fail(err, errlen, "approvals are not started");
        return APPROVE_ERR;
    }
    struct sluice_config *cfg = config_ref(A->cfg);
    struct mreq *q = amem_req_get(&A->mem, id);
    if (q) {
        if (q->r.state != APPROVE_PENDING) {
            approve_fail(err, errlen, "request %s is %s, not pending", id,
                         approve_state_name(q->r.state));
            ret = APPROVE_ERR_CONFLICT;
        } else if (q->r.expires_at <= approve_now_ms()) {
            approve_fail(err, errlen, "request %s has expired", id);
            ret = APPROVE_ERR_CONFLICT;
        } else if (q->deciding) {
            approve_fail(err, errlen, "request %s is being decided by someone else", id);
            ret = APPROVE_ERR_CONFLICT;
        } else {
            q->deciding = marked = true;
        }
    }
    pthread_mutex_unlock(&A->mu);
    if (q && !marked) {
        config_unref(cfg);
        return ret;
    }

    pthread_mutex_lock(&A->dbmu);
    if (!A->db) {
        approve_fail(err, errlen, "approvals are not started");
    } else if (approve_flush(&out) < 0) { /* the request itself may still be queued */
        approve_fail(err, errlen, "approvals: the state file does not take writes (%s); try again",
                     A->flush_errmsg);
    } else {
        ret = decide_in_file(id, d, &cfg->approvals, &r, &made, err, errlen);
    }
    pthread_mutex_lock(&A->mu);
    q = marked ? amem_req_get(&A->mem, id) : NULL;
    if (q) {
        q->deciding = false;
        if (ret == 0) {
            q->r.state = r.state;
            q->r.decided_at = r.decided_at;
            char **mine[] = {&q->r.approver, &q->r.decision_reason, &q->r.grant_id};
            const char *theirs[] = {r.approver, r.decision_reason, r.grant_id};
            for (int k = 0; k < 3; k++) {
                free(*mine[k]);
                *mine[k] = xstrdup(theirs[k]);
            }
        } else if (q->cancel_reason && q->r.state == APPROVE_PENDING) {
            approve_end_locked(q, APPROVE_CANCELLED, q->cancel_reason, approve_now_ms(), &out);
            cancelled = true;
        }
        free(q->cancel_reason);
        q->cancel_reason = NULL;
    }
    if (ret == 0 && d->approve) amem_grant_put(&A->mem, &made);
    approve_count_pending_locked();
    pthread_mutex_unlock(&A->mu);
    pthread_mutex_unlock(&A->dbmu);

    if (ret == 0) {
        approve_outcome_add(&out, d->approve ? APPROVE_EV_APPROVED : APPROVE_EV_DENIED, &r,
                            d->approve ? approve_scope_name(d->scope) : NULL);
        if (grant_id_out && d->approve) snprintf(grant_id_out, APPROVE_ID_LEN, "%s", made.id);
    }
    approve_outcomes_report(&out);
    if (cancelled) approve_kick();
    areq_free(&r);
    config_unref(cfg);
    return ret;
}

int approve_decide(const char *id, bool approve, const char *approver, const char **approver_groups,
                   unsigned n_groups, const struct approve_bounds *bounds, enum approve_scope scope,
                   char *err, size_t errlen)
{
    struct approve_decision d = {
        .approve = approve,
        .approver = approver,
        .approver_groups = approver_groups,
        .n_approver_groups = n_groups,
        .bounds = bounds,
        .scope = scope,
    };
    return approve_decide_ex(id, &d, NULL, err, errlen);
}

/* ---- the Slack callback */

int approve_slack_action(const char *timestamp, const char *signature, const char *body,
                         size_t body_len, char *msg, size_t msglen)
{
    struct sluice_config *cfg = approve_cfg_ref();
    int status = 401;
    if (!cfg) {
        approve_fail(msg, msglen, "approvals are not started");
        return 503;
    }
    bool have_secret = false;
    const struct cfg_notify *verified = NULL; /* the Slack app whose secret signed it */
    int64_t now = approve_now_ms() / 1000;
    for (unsigned i = 0; i < cfg->approvals.n_notify && !verified; i++) {
        const struct cfg_notify *n = &cfg->approvals.notify[i];
        if (n->kind != CFG_NOTIFY_SLACK || !n->secret || !*n->secret) continue;
        have_secret = true;
        if (slack_verify_signature(n->secret, timestamp, signature, body, body_len, now) == 0)
            verified = n;
    }
    if (!have_secret || !verified) {
        config_unref(cfg);
        approve_fail(msg, msglen,
                     have_secret ? "invalid or stale Slack signature"
                                 : "no Slack signing secret is configured");
        return 401;
    }
    struct slack_action act;
    char err[256];
    if (slack_parse_action(body, body_len, &act, err, sizeof err) < 0) {
        config_unref(cfg);
        approve_fail(msg, msglen, "bad Slack payload: %s", err);
        return 400;
    }
    char approver[APPROVE_NAME_LEN + 8];
    snprintf(approver, sizeof approver, "slack:%.*s", APPROVE_NAME_LEN - 1,
             act.user_name[0] ? act.user_name : act.user_id);
    struct approve_decision d = {
        .approve = act.approve,
        .approver = approver,
        .trusted = true, /* Slack vouches for the user; the channel is the approvers' */
        .scope = APPROVE_SCOPE_IDENTITY,
    };
    if (verified->n_users) {
        /* Slack users mapped to identities: only they decide, each as its identity, under
         * the approver groups and the self-approval check */
        const struct cfg_identity *who = NULL;
        for (unsigned u = 0; u < verified->n_users && !who; u++)
            if (!strcmp(verified->users[u].slack_id, act.user_id))
                who = config_find_identity(cfg, verified->users[u].identity);
        if (!who) {
            config_unref(cfg);
            approve_fail(
                msg, msglen,
                "Slack user %s is not mapped to an approver (approvals.notify[].slack.users)",
                act.user_id);
            status = 403;
            goto answer;
        }
        snprintf(approver, sizeof approver, "%.*s", APPROVE_NAME_LEN - 1, who->name);
        d.approver_groups = (const char *const *)who->groups;
        d.n_approver_groups = who->n_groups;
        d.trusted = false;
    }
    char grant[APPROVE_ID_LEN];
    int rc = approve_decide_ex(act.request_id, &d, grant, err, sizeof err);
    config_unref(cfg);
    if (rc < 0) {
        approve_fail(msg, msglen, "%s", err);
        status = rc == APPROVE_ERR_NOT_FOUND   ? 404
                 : rc == APPROVE_ERR_FORBIDDEN ? 403
                 : rc == APPROVE_ERR_CONFLICT  ? 409
                                               : 500;
    } else {
        if (act.approve)
            approve_fail(msg, msglen, "Request %s approved by %s (grant %s)", act.request_id,
                         approver, grant);
        else
            approve_fail(msg, msglen, "Request %s denied by %s", act.request_id, approver);
        status = 200;
    }
answer:
    if (act.response_url[0]) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "response_type", "in_channel");
        cJSON_AddBoolToObject(o, "replace_original", false);
        cJSON_AddStringToObject(o, "text", msg);
        char *b = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (b && A->threads) notify_post(act.response_url, b);
        free(b);
    }
    return status;
}
