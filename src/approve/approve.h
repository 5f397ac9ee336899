/*
 * approve.h: human approval of statements, and the grants approvals leave behind.
 *
 * A statement the policy sends to `review` becomes an approval request: who asked, for which
 * target, the normalized statement, its fingerprint, facts, rule and reason. Requests live in
 * the state file (SQLite, our own tables next to the audit's), so that they outlive a restart
 * (approve.c says what a crash can lose) and the `sluice approvals` CLI, a separate process,
 * sees and decides the same requests. One server uses a state file (approve_start locks it). An
 * approval creates a grant (identity or group, target, fingerprint, expiry, uses left, row
 * limit): the same fingerprint within those bounds runs without asking again.
 *
 * The module is one process-wide instance started by approve_start(). It runs two threads of
 * its own, never a worker's: a timer thread that writes to the file what the calls below
 * changed in memory, expires pending requests and polls the file for decisions other
 * processes made (seen within about 0.2 s), and a notifier thread that posts to Slack and
 * webhooks with retries (src/approve/notify.c). Decisions, expiries and cancels wake every
 * subscribed eventfd; the relay then asks approve_state() for its parked requests. The calls below
 * are thread-safe. Those the statement path makes (requests, states, cancels, grants found, used
 * and checked) never wait for the state file, whoever holds it locked: they work in memory,
 * and read the file only where another process may have changed it (a grant made or revoked
 * by the CLI), with reads that never wait. Decisions, revocations and listings may wait for
 * the file (approve.c says how).
 *
 * What it leaves to others: deciding that a statement needs review (src/policy), parking and
 * resuming connections (src/proxy/session.c), authenticating approvers (src/admin, the CLI
 * runs as the state file's owner), turning audit hooks into audit events (the lead's hook).
 *
 * Ownership: every `const char *` argument is borrowed for the call. Structs filled by the
 * module hold fixed-size copies. The `char *` JSON strings returned are the caller's to free().
 */
#ifndef SLUICE_APPROVE_APPROVE_H
#define SLUICE_APPROVE_APPROVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define APPROVE_WARN_UNUSED __attribute__((warn_unused_result))

/* Request ids are "req_" + 10 base32 characters (50 random bits from RAND_bytes), grant ids
 * "grt_" + 10; this is the buffer size for either, with room to spare. */
#define APPROVE_ID_LEN 24
#define APPROVE_NAME_LEN 256   /* identity, approver, group, target names (longer are cut) */
#define APPROVE_REASON_LEN 512 /* reasons */
#define APPROVE_FP_LEN 64      /* fingerprint hex */

/* A slack or webhook notification is tried this many times before it counts as failed. */
#define APPROVE_NOTIFY_TRIES 5

enum approve_state {
    APPROVE_PENDING,
    APPROVE_APPROVED,
    APPROVE_DENIED,
    APPROVE_EXPIRED,
    APPROVE_CANCELLED,
};
const char *approve_state_name(enum approve_state s); /* "pending", "approved", ... */
int approve_state_from_name(const char *name);        /* -1 when unknown */

enum approve_scope {
    APPROVE_SCOPE_IDENTITY, /* the grant covers the identity that asked */
    APPROVE_SCOPE_GROUP,    /* ... every member of one of its groups */
};
const char *approve_scope_name(enum approve_scope s); /* "identity", "group" */

/* What the relay asks approval for. statement must already be normalized and masked. */
struct approve_ask {
    const char *identity; /* identity name (required) */
    enum ident_kind kind;
    const char *const *groups; /* the identity's groups */
    unsigned n_groups;
    const char *target;          /* target name (required) */
    const char *statement;       /* normalized statement text (required) */
    const char *fingerprint;     /* hex fingerprint of the statement (required) */
    const char *command;         /* facts summary: "UPDATE"; may be NULL */
    const char *class_name;      /* "write"; may be NULL */
    const char *tables;          /* "public.orders, public.items"; may be NULL */
    const char *rule;            /* rule or guardrail that asked for review */
    const char *reason;          /* why, as the client would read it */
    enum cfg_approval_mode mode; /* WAIT or DEFER as decided by the relay; DEFAULT: from kind */
    uint64_t session_id;
    const char *client_addr; /* may be NULL */
};

/* Bounds of a grant. 0 in a field means the config default (approvals.grant.*). The config
 * values are also ceilings: an approver may narrow a grant, never widen it. */
struct approve_bounds {
    uint64_t ttl;      /* seconds */
    unsigned max_uses; /* uses */
    uint64_t max_rows; /* rows a write may touch; APPROVE_ROWS_ANY: no limit (if config has none) */
};
#define APPROVE_ROWS_ANY UINT64_MAX

struct approve_status {
    enum approve_state state;
    char identity[APPROVE_NAME_LEN]; /* who asked */
    char approver[APPROVE_NAME_LEN]; /* who decided (approved/denied); empty otherwise */
    char grant_id[APPROVE_ID_LEN];   /* approved: the grant made */
    char reason[APPROVE_REASON_LEN]; /* denied: the approver's reason, if any */
    int64_t created_at;              /* unix milliseconds */
    int64_t expires_at;              /* unix milliseconds: the request's deadline */
    int64_t decided_at;              /* unix milliseconds; 0 while pending */
    enum cfg_approval_mode mode;     /* WAIT or DEFER */
};

struct approve_grant {
    char id[APPROVE_ID_LEN];
    enum approve_scope scope;
    char identity[APPROVE_NAME_LEN]; /* scope identity */
    char group[APPROVE_NAME_LEN];    /* scope group */
    char target[APPROVE_NAME_LEN];
    char fingerprint[APPROVE_FP_LEN + 1];
    int64_t expires_at; /* unix milliseconds */
    unsigned uses_left;
    uint64_t max_rows; /* 0 = no limit */
    char approver[APPROVE_NAME_LEN];
    char request_id[APPROVE_ID_LEN];
};

/* ---- lifecycle */

/* Lock the state file cfg->state.path ("sluice.db" when unset) for this server (an exclusive
 * flock on STATE_PATH.approvals-lock: refused, naming it, while another server holds it), open
 * it (creating it), create our tables, load pending requests and start the timer and notifier
 * threads. 0, or -1 with err set. */
int approve_start(const struct sluice_config *cfg, char *err, size_t errlen) APPROVE_WARN_UNUSED;
/* Open the state file without threads or notifications, and without the server's lock (the
 * CLI). */
int approve_open(const struct sluice_config *cfg, char *err, size_t errlen) APPROVE_WARN_UNUSED;
/* Stop the threads (pending notifications are dropped), write what is still queued for the
 * file (trying again for up to server.shutdown_timeout while the file is locked or refuses it),
 * close the file and let go of its lock. Idempotent. */
void approve_stop(void);
/* Take approvers, timeout, grant defaults and notifiers from a new snapshot. The module keeps
 * its own reference to cfg (config_ref) until the next reload or stop. */
void approve_reload(const struct sluice_config *cfg);

/* ---- requests */

/* Make a pending request (expires now + approvals.timeout; written to the file by the timer
 * thread), queue its notifications, emit APPROVE_EV_REQUESTED. id_out gets the new id. 0, or
 * APPROVE_ERR_LIMIT (err names the limit) when the identity already has
 * approvals.max_pending_per_identity requests pending (0: no limit), or -1 with err set (also
 * while the state file is behind: a change queued for longer than 5 s, or a write it
 * refused). */
int approve_request(const struct approve_ask *ask, char id_out[APPROVE_ID_LEN], char *err,
                    size_t errlen) APPROVE_WARN_UNUSED;

/* Errors of approve_decide(): map them to HTTP 404, 409, 403 (else 500). */
#define APPROVE_ERR -1           /* bad arguments, not started, storage failure */
#define APPROVE_ERR_NOT_FOUND -2 /* no such request */
#define APPROVE_ERR_CONFLICT -3  /* not pending any more, or past its deadline */
#define APPROVE_ERR_FORBIDDEN -4 /* own request, not an approver, group not the requester's */
#define APPROVE_ERR_LIMIT -5     /* approve_request: approvals.max_pending_per_identity reached */

/* Decide a pending request. Refused (an APPROVE_ERR_* code, err set) when: the request is unknown,
 * not pending or past its expiry; the approver is the requester; the approver is in none of the
 * approvals.approvers groups. On approval a grant is created with bounds (NULL = config
 * defaults) and scope (group: the requester's first group). Subscribers are woken. */
int approve_decide(const char *id, bool approve, const char *approver, const char **approver_groups,
                   unsigned n_groups, const struct approve_bounds *bounds, enum approve_scope scope,
                   char *err, size_t errlen) APPROVE_WARN_UNUSED;

/* The full form: also a reason (denial reason or approval note), the group for a group grant,
 * the new grant's id, and `trusted` for the local CLI (the file's owner is an approver: the
 * group check is skipped; self-approval is still refused). */
struct approve_decision {
    bool approve;
    const char *approver; /* "alice@corp.com", "cli:root", "slack:bob" */
    const char *const *approver_groups;
    unsigned n_approver_groups;
    bool trusted;
    const struct approve_bounds *bounds; /* NULL = config defaults */
    enum approve_scope scope;
    const char *group;  /* scope group: one of the requester's groups; NULL = its first */
    const char *reason; /* may be NULL */
};
int approve_decide_ex(const char *id, const struct approve_decision *d,
                      char grant_id_out[APPROVE_ID_LEN], char *err,
                      size_t errlen) APPROVE_WARN_UNUSED;

/* State of a request this process made or found pending at its start (decisions by the CLI
 * are seen within about 0.2 s; a decided request is forgotten a minute after its decision).
 * 0, or -1 unknown id. */
int approve_state(const char *id, struct approve_status *out);

/* The session that waits for it ended (the client left, sluice shuts down, ...; reason says
 * which, for the request's record and its audit event): pending -> cancelled. */
void approve_cancel(const char *id, const char *reason);

/* ---- grants */

/* A live grant (not expired, not revoked, uses left) for this fingerprint on this target,
 * made for this identity or for one of its groups. Fills out and returns true when found. */
bool approve_grant_find(const char *identity, const char **groups, unsigned n, const char *target,
                        const char *fingerprint, struct approve_grant *out);
/* Take one use of a grant; rows = rows the statement touched or returned (kept as a total).
 * Returns the uses left after this one (0: that was the last; APPROVE_EV_GRANT_EXHAUSTED), or
 * -1 when the grant could not be used (unknown, revoked, expired or already exhausted; or, to
 * fail closed, whether it was revoked could not be read, or the state file is behind as for
 * approve_request: logged). The grant as it is after the use goes to out when not NULL. */
int approve_grant_use(const char *grant_id, uint64_t rows, struct approve_grant *out);
/* The grant grant_id when it is live (not expired, not revoked, uses left): true, into out. */
bool approve_grant_live(const char *grant_id, struct approve_grant *out);
/* Revoke a grant: 0, or -1 when unknown or already revoked. */
int approve_grant_revoke(const char *grant_id, const char *by);

/* ---- listings (JSON arrays for the admin API and the CLI; caller frees; NULL on failure) */

/* state_filter: "pending", "approved", "denied", "expired", "cancelled", or NULL/"all". */
char *approve_list_json(const char *state_filter);
/* Grants, newest first; live ones only unless all. */
char *approve_grants_json(void);
char *approve_grants_json_all(bool all);
/* One request as a JSON object; NULL when unknown. */
char *approve_request_json(const char *id);

/* ---- wakeups, audit, metrics */

/* After any decision, expiry or cancel, an 8-byte 1 is written to every subscribed eventfd
 * (at most APPROVE_MAX_SUBSCRIBERS). The fd stays the caller's. */
#define APPROVE_MAX_SUBSCRIBERS 64
void approve_subscribe(int eventfd);
void approve_unsubscribe(int eventfd);

enum approve_event {
    APPROVE_EV_REQUESTED,
    APPROVE_EV_NOTIFIED,      /* a notifier delivered (detail = "slack" or "webhook") */
    APPROVE_EV_NOTIFY_FAILED, /* a notifier gave up after APPROVE_NOTIFY_TRIES */
    APPROVE_EV_APPROVED,
    APPROVE_EV_DENIED,
    APPROVE_EV_EXPIRED,
    APPROVE_EV_CANCELLED,
    APPROVE_EV_GRANT_USED,
    APPROVE_EV_GRANT_EXHAUSTED,
    APPROVE_EV_GRANT_REVOKED,
};
const char *approve_event_name(enum approve_event ev); /* "approval.requested", ... */

/* What a hook sees. Strings are borrowed for the call; any may be NULL when not known
 * (an event seen by polling the file carries what the file holds). */
struct approve_audit {
    enum approve_event event;
    const char *request_id;
    const char *grant_id;
    const char *identity;
    const char *target;
    const char *statement;
    const char *fingerprint;
    const char *approver; /* approved/denied/revoked */
    const char *reason;   /* request reason, or the denial reason */
    const char *detail;   /* notifier kind, scope, ... */
    uint64_t session_id;
    uint64_t rows; /* grant used */
    int uses_left; /* grant events */
};
/* Called on the thread where the event happened (a worker, the admin thread, the timer or
 * the notifier): it must be thread-safe and must not call back into approve_*. */
typedef void (*approve_audit_fn)(const struct approve_audit *ev);
void approve_set_audit_hook(approve_audit_fn fn);

struct approve_counters {
    uint64_t pending; /* requests pending now (in the file) */
    uint64_t requested;
    uint64_t decided; /* approved + denied, seen by this process */
    uint64_t approved;
    uint64_t denied;
    uint64_t expired;
    uint64_t cancelled;
    uint64_t notify_sent;
    uint64_t notify_retries;
    uint64_t notify_failures;
    uint64_t grant_uses;
};
void approve_get_counters(struct approve_counters *out);

/* ---- Slack (src/approve/slack.c; pure) */

/* Verify X-Slack-Signature ("v0=HEX") over "v0:" + timestamp + ":" + body with the app's
 * signing secret, in constant time; timestamps more than 300 s from now (unix seconds) are
 * refused. 0 valid, -1 not. */
int slack_verify_signature(const char *signing_secret, const char *timestamp, const char *signature,
                           const char *body, size_t body_len, int64_t now);

struct slack_action {
    bool approve;                     /* action_id "approve" (else "deny") */
    char request_id[APPROVE_ID_LEN];  /* the button's value */
    char user_id[64];                 /* Slack user id (U...) */
    char user_name[APPROVE_NAME_LEN]; /* Slack username */
    char response_url[1024];          /* where to post the outcome; may be empty */
};
/* Parse an interactivity body (application/x-www-form-urlencoded, payload=JSON of type
 * block_actions). 0, or -1 with err set. */
int slack_parse_action(const char *body, size_t body_len, struct slack_action *out, char *err,
                       size_t errlen);

/* The whole Slack callback for the admin API: verify the signature with every configured slack
 * notifier's signing secret, parse, decide as "slack:USERNAME" (trusted: restrict the channel
 * to approvers), post the outcome to response_url. Returns the HTTP status to answer (200,
 * 400 bad payload, 401 bad signature, 403 own request, 404 unknown request, 409 already
 * decided or expired) and a short text in msg. */
int approve_slack_action(const char *timestamp, const char *signature, const char *body,
                         size_t body_len, char *msg, size_t msglen);

/* ---- notifications (src/approve/notify.c) */

/* HMAC-SHA-256 of timestamp + "." + body with secret, as lowercase hex (65 bytes with NUL):
 * the X-Sluice-Signature value is "sha256=" + this. */
void approve_webhook_sign(const char *secret, const char *timestamp, const char *body,
                          size_t body_len, char hex_out[65]);

/* ---- CLI (src/approve/cli.c): argv[0] = "approvals" */
int approvals_cli_main(int argc, char **argv);

/* ---- tests only: a clock (unix milliseconds) and the retry backoff base. NULL restores. */
void approve_test_set_clock(int64_t (*now_ms)(void));
void approve_test_set_backoff_ms(unsigned base_ms);
/* How long a change may wait in the queue before grant uses and requests are refused (0: the
 * default, 5 s). */
void approve_test_set_write_lag_ms(unsigned ms);
/* Run one timer-thread cycle now (expiry + poll for foreign decisions). */
void approve_test_tick(void);

#endif
