/*
 * relay_approve.c: statements that policy sends to review. A live grant for the same
 * fingerprint lets the statement run at once (and counts a use); otherwise an approval
 * request is made (src/approve/) and, by mode, the client is told to re-run after approval
 * (defer: 42501 now) or the statement is parked until a human decides (wait: a NOTICE now,
 * then the statement runs, or 42501 naming the approver or the expiry). An identity that
 * already has approvals.max_pending_per_identity requests pending gets 53400 instead of a new
 * request (its approvers are not asked again). None of these calls waits for the state file
 * (src/approve/approve.c keeps what they need in memory).
 *
 * A parked session reads nothing from its client; its upstream session and transaction stay
 * as they are. The approvals thread wakes the worker (eventfd); the worker asks for the
 * request's state here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approve/approve.h"
#include "core/log.h"
#include "mask/mask.h"
#include "pg/msg.h"
#include "policy/guardrails.h"
#include "policy/policy.h"
#include "proxy/session_int.h"
#include "sql/sql.h"

/* Guardrails whose danger is in the statement's values (which role, which file, which
 * command, which setting), or that cannot judge the text at all. */
#define VALUE_GUARDS                                                                               \
    (1u << CFG_GUARD_COPY_PROGRAM | 1u << CFG_GUARD_COPY_FILE | 1u << CFG_GUARD_ALTER_SYSTEM |     \
     1u << CFG_GUARD_FILE_ACCESS | 1u << CFG_GUARD_ROLE_ESCALATION |                               \
     1u << CFG_GUARD_DANGEROUS_FUNCTIONS | 1u << CFG_GUARD_UNJUDGEABLE)

/* Whether approving f means approving its values: SET ROLE admin is not SET ROLE reader, and
 * a text sluice cannot read safely may run as something else. Such a statement is shown to
 * approvers as sent (masked) and its grants cover only that exact text. */
static bool review_of_values(const struct sql_facts *f)
{
    if (!f->n_stmts) return true;
    for (unsigned k = 0; k < f->n_stmts; k++)
        if (guard_detect(&f->stmts[k]) & VALUE_GUARDS) return true;
    return false;
}

enum review_outcome relay_approve_review(struct session *s, const char *sql,
                                         const struct sql_facts *f, const struct policy_decision *d,
                                         bool query)
{
    s->review_refusal = NULL;
    /* grants match on the approval key: the fingerprint alone takes orders_2024 for
     * orders_1999 (sql_approval_key); on the exact text when the values are what is judged */
    bool exact = review_of_values(f);
    char fp[SQL_KEY_LEN];
    if (exact ? sql_exact_key(sql, fp) < 0 : sql_approval_key(sql, f->fingerprint, fp) < 0)
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)f->fingerprint);
    if (exact && !query && sql_has_params(sql)) { /* its values would come unreviewed */
        blocked_push_text(s, "42501", d->rule,
                          "sluice: a statement approved for its values (a role, a file, a "
                          "command, a setting) cannot take parameters: they would run unreviewed",
                          "send it with its values in the text");
        return REVIEW_REFUSED;
    }
    snprintf(s->park_fp, sizeof s->park_fp, "%s", fp);
    /* the bound reads the rows of its CommandComplete: one INSERT, UPDATE, DELETE or MERGE
     * with no write nested in it (a data-modifying WITH's rows are not in the tag); a COPY
     * streams, and is not wrapped */
    const char *cmd = f->n_stmts ? f->stmts[0].command : "";
    s->park_guardable = f->n_stmts == 1 && f->stmts[0].cls == SQL_WRITE &&
                        !(f->stmts[0].flags & (SQL_F_NESTED_WRITE | SQL_F_EXPLAIN_ANALYZE)) &&
                        (!strcmp(cmd, "INSERT") || !strcmp(cmd, "UPDATE") ||
                         !strcmp(cmd, "DELETE") || !strcmp(cmd, "MERGE"));
    s->park_parse = !query;
    s->audit_request[0] = s->audit_grant[0] = '\0';
    bool writes = false, prepare = false;
    for (unsigned k = 0; k < f->n_stmts; k++) {
        writes = writes || f->stmts[k].cls == SQL_WRITE;
        prepare = prepare || (f->stmts[k].flags & SQL_F_PREPARE);
    }
    if (prepare) { /* each EXECUTE would run it again: no use taken, no bound */
        blocked_push_text(s, "42501", d->rule,
                          "sluice: a statement that needs approval cannot be made with SQL "
                          "PREPARE (each EXECUTE would run it again, unreviewed)",
                          "run it directly, or prepare it with the protocol (Parse)");
        return REVIEW_REFUSED;
    }
    if (writes && !s->park_guardable && s->rt->cfg->approvals.grant_max_rows) {
        blocked_push_text(s, "42501", d->rule,
                          "sluice: a write that needs approval must be one statement sluice can "
                          "bound to approvals.grant.max_rows (one INSERT, UPDATE, DELETE or "
                          "MERGE, with no data-modifying WITH, not under EXPLAIN ANALYZE; not "
                          "COPY, not several statements)",
                          "send the statements one at a time; a COPY needs "
                          "approvals.grant.max_rows: 0");
        return REVIEW_REFUSED;
    }
    if (!atomic_load(&proxy_approvals)) {
        blocked_push_text(s, "42501", d->rule, "approvals are not configured on this sluice",
                          "ask an administrator");
        return REVIEW_REFUSED;
    }
    struct approve_grant g;
    if (f->fingerprint && approve_grant_find(s->ident->name, (const char **)s->ident->groups,
                                             s->ident->n_groups, s->target->name, fp, &g)) {
        /* a Parse is checked only: each of its Binds takes a use (it may run many times) */
        int left = query ? approve_grant_use(g.id, 0, NULL) : (int)g.uses_left;
        if (left >= 0) {
            snprintf(s->audit_grant, sizeof s->audit_grant, "%s", g.id);
            if (g.max_rows && s->park_guardable) s->gg_pending_max = g.max_rows;
            log_info("session %llu: statement runs under grant %s (approved by %s)",
                     (unsigned long long)s->id, g.id, g.approver);
            return REVIEW_GRANTED;
        }
    }
    char *blank = exact ? xstrdup(sql) : sql_blank_literals(f->normalized ? f->normalized : sql);
    char *text = s->rt->mask ? mask_string(s->rt->mask, blank) : xstrdup(blank);
    free(blank);
    char *tables = sql_facts_tables(f);
    struct approve_ask ask = {
        .identity = s->ident->name,
        .kind = s->ident->kind,
        .groups = (const char *const *)s->ident->groups,
        .n_groups = s->ident->n_groups,
        .target = s->target->name,
        .statement = text,
        .fingerprint = fp,
        .command = f->n_stmts ? f->stmts[0].command : NULL,
        .class_name = f->n_stmts ? sql_class_name(f->stmts[0].cls) : NULL,
        .tables = tables,
        .rule = d->rule,
        .reason = d->reason,
        .mode = d->mode,
        .session_id = s->id,
        .client_addr = s->addr_text,
    };
    char id[APPROVE_ID_LEN], err[256];
    int rc = approve_request(&ask, id, err, sizeof err);
    free(text);
    free(tables);
    if (rc == APPROVE_ERR_LIMIT) { /* the approvers are not asked again: no request */
        char msg[512];
        snprintf(msg, sizeof msg, "sluice: no approval request was made: %s", err);
        log_info("session %llu: %s", (unsigned long long)s->id, msg);
        blocked_push_raw(s, "53400", msg,
                         "wait until an approver decides one of the pending requests, or it "
                         "expires (approvals.timeout), then re-run the statement");
        s->review_refusal = "refused: its identity has approvals.max_pending_per_identity "
                            "approval requests pending";
        return REVIEW_REFUSED;
    }
    if (rc < 0) {
        log_warn("session %llu: approval request failed: %s", (unsigned long long)s->id, err);
        blocked_push_text(s, "42501", d->rule, "an approval request could not be made",
                          "try again later");
        return REVIEW_REFUSED;
    }
    snprintf(s->audit_request, sizeof s->audit_request, "%s", id);
    struct approve_status st;
    enum cfg_approval_mode mode = approve_state(id, &st) == 0 ? st.mode : CFG_MODE_DEFER;
    char msg[256];
    if (mode != CFG_MODE_WAIT) {
        snprintf(msg, sizeof msg, "sluice: approval required (request %s)", id);
        blocked_push_raw(s, "42501", msg, "re-run the same statement after approval");
        return REVIEW_REFUSED;
    }
    snprintf(s->park_request, sizeof s->park_request, "%s", id);
    /* Tell the client it waits (only when nothing of an earlier statement is still coming
     * from the server, so that the notice cannot land inside a result). */
    if (s->pending_sync == 0 && !s->sv.msg_left) {
        unsigned secs = s->rt->cfg->approvals.timeout;
        snprintf(msg, sizeof msg, "sluice: approval required (request %s); waiting up to %um%02us",
                 id, secs / 60, secs % 60);
        pg_put_notice(session_out_buf(&s->cl_out), "01000", msg);
    }
    log_info("session %llu: waiting for approval %s", (unsigned long long)s->id, id);
    return REVIEW_WAIT;
}

bool relay_approve_done(struct session *s)
{
    struct approve_status st;
    if (approve_state(s->park_request, &st) < 0) return true;
    return st.state != APPROVE_PENDING;
}

void relay_approve_resume(struct session *s)
{
    struct approve_status st;
    char msg[1200];
    int rc = approve_state(s->park_request, &st);
    /* The approval's own grant bounds the run and gives it its use: one revoked, expired or
     * used up since the approval (the worker learns of a decision up to 100 ms late) refuses
     * it, as a Bind under such a grant is refused. A Parse only checks: its Binds take uses. */
    struct approve_grant g;
    bool granted =
        rc == 0 && st.state == APPROVE_APPROVED &&
        (!st.grant_id[0] || (s->park_parse ? approve_grant_live(st.grant_id, &g)
                                           : approve_grant_use(st.grant_id, 0, &g) >= 0));
    if (granted) {
        s->park_act = HOLD_FORWARD;
        snprintf(s->audit_grant, sizeof s->audit_grant, "%s", st.grant_id);
        if (st.grant_id[0]) {
            if (s->park_guardable && g.max_rows) s->gg_pending_max = g.max_rows;
            relay_audit_note_grant(s, st.grant_id);
        }
        log_info("session %llu: request %s approved by %s", (unsigned long long)s->id,
                 s->park_request, st.approver);
    } else {
        s->park_act = HOLD_REPLACE;
        const char *why = "refused: its approval request was cancelled", *code = "42501";
        if (s->park_cancelled) {
            snprintf(msg, sizeof msg,
                     "canceling statement due to user request (it waited for approval %s)",
                     s->park_request);
            why = "refused: the client cancelled it while it waited for approval";
            code = "57014";
        } else if (rc == 0 && st.state == APPROVE_APPROVED) {
            snprintf(msg, sizeof msg,
                     "sluice: request %s was approved by %s, but its grant %s was revoked, "
                     "expired or used up before the statement ran",
                     s->park_request, st.approver, st.grant_id);
            why = "refused: its grant was revoked, expired or used up before it ran";
        } else if (rc == 0 && st.state == APPROVE_DENIED) {
            snprintf(msg, sizeof msg, "sluice: request %s denied by %s%s%s", s->park_request,
                     st.approver, st.reason[0] ? ": " : "", st.reason);
            why = "refused: its approval request was denied";
        } else if (rc == 0 && st.state == APPROVE_EXPIRED) {
            snprintf(msg, sizeof msg, "sluice: request %s expired", s->park_request);
            why = "refused: its approval request expired";
        } else {
            snprintf(msg, sizeof msg, "sluice: request %s was cancelled", s->park_request);
        }
        blocked_push_group(s, s->park_group, code, msg,
                           s->park_cancelled ? NULL : "ask again, or ask an approver for a grant");
        relay_audit_refuse_late(s, s->park_group, why);
    }
    s->park_request[0] = '\0';
    s->park_cancelled = false;
}

void relay_approve_abandon(struct session *s, const char *reason)
{
    if (s->park_request[0]) approve_cancel(s->park_request, reason);
    s->park_request[0] = '\0';
}

/* The approvals module's events, into the audit trail (called on its threads). */
void relay_approve_audit(const struct approve_audit *a)
{
    enum audit_kind kind;
    const char *detail = a->detail;
    char detail_buf[96];
    switch (a->event) {
    case APPROVE_EV_REQUESTED:
        kind = AUDIT_APPROVAL_REQUESTED;
        break;
    case APPROVE_EV_NOTIFIED:
        kind = AUDIT_APPROVAL_NOTIFIED;
        break;
    case APPROVE_EV_NOTIFY_FAILED:
        kind = AUDIT_APPROVAL_NOTIFIED;
        snprintf(detail_buf, sizeof detail_buf, "failed: %s", a->detail ? a->detail : "notifier");
        detail = detail_buf;
        break;
    case APPROVE_EV_APPROVED:
        kind = AUDIT_APPROVAL_APPROVED;
        break;
    case APPROVE_EV_DENIED:
        kind = AUDIT_APPROVAL_DENIED;
        break;
    case APPROVE_EV_CANCELLED:
        kind = AUDIT_APPROVAL_DENIED;
        snprintf(detail_buf, sizeof detail_buf, "cancelled: %s",
                 a->reason ? a->reason : "the session ended");
        detail = detail_buf;
        break;
    case APPROVE_EV_EXPIRED:
        kind = AUDIT_APPROVAL_EXPIRED;
        break;
    case APPROVE_EV_GRANT_USED:
        kind = AUDIT_GRANT_USED;
        break;
    case APPROVE_EV_GRANT_EXHAUSTED:
        kind = AUDIT_GRANT_EXHAUSTED;
        break;
    case APPROVE_EV_GRANT_REVOKED:
        kind = AUDIT_GRANT_EXHAUSTED;
        detail = "revoked";
        break;
    default:
        return;
    }
    struct audit_event ev = {
        .kind = kind,
        .session_id = a->session_id,
        .identity = a->identity,
        .target = a->target,
        .statement = a->statement,
        .fingerprint = a->fingerprint,
        .request_id = a->request_id,
        .grant_id = a->grant_id,
        .actor = a->approver,
        .rows = a->rows,
        .detail = detail ? detail : a->reason,
    };
    if (!audit_emit(&ev))
        log_warn("approvals: audit event lost (%s)", approve_event_name(a->event));
}
