/*
 * approve_int.h: what the files of src/approve/ share among themselves (not a public API).
 *
 * approve_db.c keeps requests and grants in SQLite; notify.c delivers notifications on its own
 * thread; approve.c holds the process-wide state and the lock around the database handle.
 *
 * Ownership: struct areq strings are heap copies owned by the struct (areq_free). adb_*
 * functions borrow the sqlite3 handle; the caller holds the module's mutex around them.
 */
#ifndef SLUICE_APPROVE_APPROVE_INT_H
#define SLUICE_APPROVE_APPROVE_INT_H

#include <sqlite3.h>

#include "approve/approve.h"

/* A request row. */
struct areq {
    char *id;
    enum approve_state state;
    char *identity;
    char *kind;        /* "human", "service", "agent" */
    char *groups_json; /* JSON array of the requester's groups */
    char *target;
    char *statement;
    char *fingerprint;
    char *command;
    char *class_name;
    char *tables;
    char *rule;
    char *reason;
    enum cfg_approval_mode mode;
    uint64_t session_id;
    char *client_addr;
    int64_t created_at, expires_at, decided_at;
    char *approver;
    char *decision_reason;
    char *grant_id;
};
void areq_free(struct areq *r);

/* A grant row to insert. */
struct agrant {
    const char *id, *identity, *group, *target, *fingerprint, *approver, *request_id;
    enum approve_scope scope;
    int64_t created_at, expires_at;
    unsigned max_uses;
    uint64_t max_rows;
};

/* ---- approve_db.c */
sqlite3 *adb_open(const char *path, char *err, size_t errlen);
void adb_close(sqlite3 *db);
int adb_begin(sqlite3 *db); /* BEGIN IMMEDIATE */
int adb_commit(sqlite3 *db);
void adb_rollback(sqlite3 *db);
int adb_insert_request(sqlite3 *db, const struct areq *r);
/* 0 found, 1 not found, -1 error. */
int adb_get_request(sqlite3 *db, const char *id, struct areq *out);
/* pending -> state; 1 when changed, 0 when not pending (or expired by now), -1 error. */
int adb_set_decision(sqlite3 *db, const char *id, enum approve_state state, const char *approver,
                     const char *reason, const char *grant_id, int64_t now);
int adb_insert_grant(sqlite3 *db, const struct agrant *g);
/* 0 found, 1 none, -1 error. */
/* Whether an approver names the identity: the same name, or the same local part of an email
 * (CLI users, Slack users); prefixes "cli:" and "slack:" are ignored. Nobody decides their own
 * request, nor runs under a grant they made. */
bool approve_same_person(const char *approver, const char *identity);

int adb_find_grant(sqlite3 *db, const char *identity, const char *const *groups, unsigned n,
                   const char *target, const char *fingerprint, int64_t now,
                   struct approve_grant *out);
/* Uses left after this one, or -1. identity/target/fingerprint/approver/request id of the
 * grant are copied into g when not NULL. */
int adb_use_grant(sqlite3 *db, const char *id, uint64_t rows, int64_t now, struct approve_grant *g);
/* The grant id when live at now (not revoked, not expired, uses left): 0 (into out), 1 when
 * not, -1 on an error. */
int adb_get_live_grant(sqlite3 *db, const char *id, int64_t now, struct approve_grant *out);
int adb_revoke_grant(sqlite3 *db, const char *id, const char *by, int64_t now);
/* Pending requests past expiry become expired; each is handed to fn (row owned by the
 * callee's caller: freed after fn returns). Returns the count or -1. */
int adb_expire(sqlite3 *db, int64_t now, void (*fn)(const struct areq *r, void *arg), void *arg);
/* Ids of all pending requests: a malloc'd array of APPROVE_ID_LEN strings, count in *n. */
int adb_pending_ids(sqlite3 *db, char (**ids)[APPROVE_ID_LEN], unsigned *n);
int64_t adb_count_pending(sqlite3 *db);
char *adb_requests_json(sqlite3 *db, int state_filter /* -1 = all */);
char *adb_request_json(sqlite3 *db, const char *id);
char *adb_grants_json(sqlite3 *db, bool all, int64_t now);
struct cJSON;
struct cJSON *areq_to_json(const struct areq *r); /* caller cJSON_Delete()s */

/* ---- approve.c */
int64_t approve_now_ms(void);
void approve_emit(const struct approve_audit *ev);
void approve_count_notify(int sent, int retries, int failures);
/* A fresh id: prefix + 10 base32 characters. */
void approve_make_id(const char *prefix, char out[APPROVE_ID_LEN]);

/* ---- notify.c */
int notify_start(char *err, size_t errlen);
void notify_stop(void);
/* Queue the "approval needed" messages for r to every notifier in cfg. */
void notify_request(const struct sluice_config *cfg, const struct areq *r);
/* Queue an outcome ("approval.approved", ...) to the webhook notifiers. */
void notify_outcome(const struct sluice_config *cfg, const char *type, const struct areq *r);
/* Queue a plain JSON POST (Slack response_url). */
void notify_post(const char *url, const char *body);
/* Bodies, exposed for tests. Caller frees. */
char *notify_slack_body(const struct sluice_config *cfg, const struct areq *r);
char *notify_webhook_body(const struct sluice_config *cfg, const char *type, const struct areq *r);
void notify_set_backoff_ms(unsigned base_ms);

#endif
