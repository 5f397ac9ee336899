/*
 * approve_db.c: approval requests and grants in the SQLite state file.
 *
 * Our own connection and our own tables (approval_requests, grants, approve_schema_version) in
 * the file the audit store also uses; WAL mode so the server and the `sluice approvals` CLI can
 * read and write it at the same time. Every change of a request's state is a single conditional
 * UPDATE (state = 'pending'), so two processes deciding at once cannot both win. A grant's uses
 * are counted in the server's memory (approve.c), which alone spends them; the file records
 * each use after the fact. Times are unix milliseconds. The caller serializes use of a handle
 * (approve.c's locks): the writer's, and a reader's that never waits (adb_open_reader).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "approve/approve_int.h"
#include "core/buf.h"
#include "store/store.h"

#define ADB_SCHEMA_VERSION 1

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS approve_schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS approval_requests ("
    " id TEXT PRIMARY KEY, state TEXT NOT NULL, identity TEXT NOT NULL, kind TEXT,"
    " groups TEXT NOT NULL DEFAULT '[]', target TEXT NOT NULL, statement TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, command TEXT, class TEXT, tables TEXT, rule TEXT, reason TEXT,"
    " mode TEXT, session_id INTEGER, client_addr TEXT, created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL, decided_at INTEGER, approver TEXT, decision_reason TEXT,"
    " grant_id TEXT);"
    "CREATE INDEX IF NOT EXISTS approval_requests_state ON approval_requests (state, expires_at);"
    "CREATE TABLE IF NOT EXISTS grants ("
    " id TEXT PRIMARY KEY, scope TEXT NOT NULL, identity TEXT, grp TEXT, target TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,"
    " max_uses INTEGER NOT NULL, uses_left INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0,"
    " max_rows INTEGER NOT NULL DEFAULT 0, rows_total INTEGER NOT NULL DEFAULT 0,"
    " approver TEXT NOT NULL, request_id TEXT, revoked_at INTEGER, revoked_by TEXT);"
    "CREATE INDEX IF NOT EXISTS grants_fingerprint ON grants (fingerprint, target);";

static void set_err(char *err, size_t errlen, const char *what, sqlite3 *db)
{
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "");
}

sqlite3 *adb_open(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    if (store_file_precreate(path) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "cannot create state file %s: %s", path, strerror(errno));
        return NULL;
    }
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "cannot open state file %s: %s", path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(db, ADB_BUSY_TIMEOUT_MS);
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "state file %s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        goto fail;
    }
    /* The version row: insert once; refuse a file written by a newer sluice. */
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(db, "SELECT max(version) FROM approve_schema_version", -1, &st, NULL) !=
        SQLITE_OK) {
        set_err(err, errlen, "state file", db);
        goto fail;
    }
    if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > ADB_SCHEMA_VERSION) {
        if (err && errlen)
            snprintf(err, errlen,
                     "state file %s: approvals schema version %d is newer than this sluice (%d)",
                     path, version, ADB_SCHEMA_VERSION);
        goto fail;
    }
    if (version == 0 && sqlite3_exec(db, "INSERT INTO approve_schema_version (version) VALUES (1)",
                                     NULL, NULL, NULL) != SQLITE_OK) {
        set_err(err, errlen, "state file", db);
        goto fail;
    }
    return db;
fail:
    sqlite3_close(db);
    return NULL;
}

sqlite3 *adb_open_reader(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    /* no busy timeout: a WAL reader does not wait for a writer, and whatever else would make
     * it wait (a recovery after a crash) is answered at once with SQLITE_BUSY */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "cannot open state file %s: %s", path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

void adb_close(sqlite3 *db)
{
    sqlite3_close(db);
}

int adb_begin(sqlite3 *db)
{
    return sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

int adb_commit(sqlite3 *db)
{
    return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

void adb_rollback(sqlite3 *db)
{
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

bool adb_busy(sqlite3 *db)
{
    int rc = sqlite3_errcode(db);
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

bool adb_permanent(sqlite3 *db)
{
    int ext = sqlite3_extended_errcode(db), rc = ext & 0xff;
    return (rc == SQLITE_CONSTRAINT && ext != SQLITE_CONSTRAINT_TRIGGER) || rc == SQLITE_TOOBIG ||
           rc == SQLITE_MISMATCH || rc == SQLITE_RANGE;
}

int64_t adb_data_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

#define AREQ_STRINGS(r)                                                                            \
    &(r)->id, &(r)->identity, &(r)->kind, &(r)->groups_json, &(r)->target, &(r)->statement,        \
        &(r)->fingerprint, &(r)->command, &(r)->class_name, &(r)->tables, &(r)->rule,              \
        &(r)->reason, &(r)->client_addr, &(r)->approver, &(r)->decision_reason, &(r)->grant_id

void areq_copy(struct areq *dst, const struct areq *src)
{
    *dst = *src;
    char **to[] = {AREQ_STRINGS(dst)};
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++)
        *to[i] = xstrdup(*to[i]);
}

void areq_free(struct areq *r)
{
    if (!r) return;
    char **fields[] = {AREQ_STRINGS(r)};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

static const char *mode_name(enum cfg_approval_mode m)
{
    return m == CFG_MODE_WAIT ? "wait" : m == CFG_MODE_DEFER ? "defer" : "default";
}

static enum cfg_approval_mode mode_from(const char *s)
{
    if (s && !strcmp(s, "wait")) return CFG_MODE_WAIT;
    if (s && !strcmp(s, "defer")) return CFG_MODE_DEFER;
    return CFG_MODE_DEFAULT;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? xstrdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

int adb_insert_request(sqlite3 *db, const struct areq *r)
{
    sqlite3_stmt *st = NULL;
    const char *sql =
        "INSERT INTO approval_requests (id, state, identity, kind, groups, target, statement,"
        " fingerprint, command, class, tables, rule, reason, mode, session_id, client_addr,"
        " created_at, expires_at) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
        " ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->identity);
    bind_text(st, 3, r->kind);
    bind_text(st, 4, r->groups_json ? r->groups_json : "[]");
    bind_text(st, 5, r->target);
    bind_text(st, 6, r->statement);
    bind_text(st, 7, r->fingerprint);
    bind_text(st, 8, r->command);
    bind_text(st, 9, r->class_name);
    bind_text(st, 10, r->tables);
    bind_text(st, 11, r->rule);
    bind_text(st, 12, r->reason);
    bind_text(st, 13, mode_name(r->mode));
    sqlite3_bind_int64(st, 14, (sqlite3_int64)r->session_id);
    bind_text(st, 15, r->client_addr);
    sqlite3_bind_int64(st, 16, r->created_at);
    sqlite3_bind_int64(st, 17, r->expires_at);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

#define REQ_COLUMNS                                                                                \
    "id, state, identity, kind, groups, target, statement, fingerprint, command, class, tables,"   \
    " rule, reason, mode, session_id, client_addr, created_at, expires_at, decided_at,"            \
    " approver, decision_reason, grant_id"

static void req_from_row(sqlite3_stmt *st, struct areq *r)
{
    memset(r, 0, sizeof *r);
    r->id = col_dup(st, 0);
    const unsigned char *s = sqlite3_column_text(st, 1);
    int state = approve_state_from_name(s ? (const char *)s : "");
    r->state = state < 0 ? APPROVE_PENDING : (enum approve_state)state;
    r->identity = col_dup(st, 2);
    r->kind = col_dup(st, 3);
    r->groups_json = col_dup(st, 4);
    r->target = col_dup(st, 5);
    r->statement = col_dup(st, 6);
    r->fingerprint = col_dup(st, 7);
    r->command = col_dup(st, 8);
    r->class_name = col_dup(st, 9);
    r->tables = col_dup(st, 10);
    r->rule = col_dup(st, 11);
    r->reason = col_dup(st, 12);
    r->mode = mode_from((const char *)sqlite3_column_text(st, 13));
    r->session_id = (uint64_t)sqlite3_column_int64(st, 14);
    r->client_addr = col_dup(st, 15);
    r->created_at = sqlite3_column_int64(st, 16);
    r->expires_at = sqlite3_column_int64(st, 17);
    r->decided_at = sqlite3_column_int64(st, 18);
    r->approver = col_dup(st, 19);
    r->decision_reason = col_dup(st, 20);
    r->grant_id = col_dup(st, 21);
}

int adb_get_request(sqlite3 *db, const char *id, struct areq *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT " REQ_COLUMNS " FROM approval_requests WHERE id = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st), ret;
    if (rc == SQLITE_ROW) {
        req_from_row(st, out);
        ret = 0;
    } else {
        ret = rc == SQLITE_DONE ? 1 : -1;
    }
    sqlite3_finalize(st);
    return ret;
}

int adb_set_decision(sqlite3 *db, const char *id, enum approve_state state, const char *approver,
                     const char *reason, const char *grant_id, int64_t now)
{
    sqlite3_stmt *st = NULL;
    /* Ends (a cancel, an expiry) are taken at or past the deadline; decisions only before it. */
    const char *sql = "UPDATE approval_requests SET state = ?2, approver = ?3,"
                      " decision_reason = ?4, grant_id = ?5, decided_at = ?6"
                      " WHERE id = ?1 AND state = 'pending' AND (?7 OR expires_at > ?6)";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    bind_text(st, 1, id);
    bind_text(st, 2, approve_state_name(state));
    bind_text(st, 3, approver);
    bind_text(st, 4, reason);
    bind_text(st, 5, grant_id);
    sqlite3_bind_int64(st, 6, now);
    sqlite3_bind_int(st, 7, state == APPROVE_CANCELLED || state == APPROVE_EXPIRED);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return -1;
    return sqlite3_changes(db) > 0 ? 1 : 0;
}

int adb_insert_grant(sqlite3 *db, const struct agrant *g)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "INSERT INTO grants (id, scope, identity, grp, target, fingerprint,"
                      " created_at, expires_at, max_uses, uses_left, max_rows, approver,"
                      " request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12)";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    bind_text(st, 1, g->id);
    bind_text(st, 2, approve_scope_name(g->scope));
    bind_text(st, 3, g->scope == APPROVE_SCOPE_IDENTITY ? g->identity : NULL);
    bind_text(st, 4, g->scope == APPROVE_SCOPE_GROUP ? g->group : NULL);
    bind_text(st, 5, g->target);
    bind_text(st, 6, g->fingerprint);
    sqlite3_bind_int64(st, 7, g->created_at);
    sqlite3_bind_int64(st, 8, g->expires_at);
    sqlite3_bind_int64(st, 9, g->max_uses);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)g->max_rows);
    bind_text(st, 11, g->approver);
    bind_text(st, 12, g->request_id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

#define GRANT_COLUMNS                                                                              \
    "id, scope, identity, grp, target, fingerprint, expires_at, uses_left, max_rows, approver,"    \
    " request_id"

static void grant_from_row(sqlite3_stmt *st, int base, struct approve_grant *g)
{
    memset(g, 0, sizeof *g);
    col_copy(st, base + 0, g->id, sizeof g->id);
    const unsigned char *scope = sqlite3_column_text(st, base + 1);
    g->scope = scope && !strcmp((const char *)scope, "group") ? APPROVE_SCOPE_GROUP
                                                              : APPROVE_SCOPE_IDENTITY;
    col_copy(st, base + 2, g->identity, sizeof g->identity);
    col_copy(st, base + 3, g->group, sizeof g->group);
    col_copy(st, base + 4, g->target, sizeof g->target);
    col_copy(st, base + 5, g->fingerprint, sizeof g->fingerprint);
    g->expires_at = sqlite3_column_int64(st, base + 6);
    sqlite3_int64 left = sqlite3_column_int64(st, base + 7);
    g->uses_left = left > 0 ? (unsigned)left : 0;
    g->max_rows = (uint64_t)sqlite3_column_int64(st, base + 8);
    col_copy(st, base + 9, g->approver, sizeof g->approver);
    col_copy(st, base + 10, g->request_id, sizeof g->request_id);
}

int adb_live_grants(sqlite3 *db, const char *id, const char *target, const char *fingerprint,
                    int64_t now, struct approve_grant **out, unsigned *n)
{
    const char *sql = "SELECT " GRANT_COLUMNS " FROM grants WHERE"
                      " (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR target = ?2)"
                      " AND (?3 IS NULL OR fingerprint = ?3) AND revoked_at IS NULL"
                      " AND expires_at > ?4 AND uses_left > 0";
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    bind_text(st, 1, id);
    bind_text(st, 2, target);
    bind_text(st, 3, fingerprint);
    sqlite3_bind_int64(st, 4, now);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *out = xrealloc(*out, sizeof **out * (*n + 1));
        grant_from_row(st, 0, &(*out)[(*n)++]);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int adb_grant_revoked(sqlite3 *db, const char *id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT revoked_at IS NOT NULL FROM grants WHERE id = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st), ret = rc == SQLITE_DONE ? 0 : -1;
    if (rc == SQLITE_ROW) ret = sqlite3_column_int(st, 0) ? 1 : 0;
    sqlite3_finalize(st);
    return ret;
}

int adb_record_use(sqlite3 *db, const char *id, uint64_t rows)
{
    const char *sql = "UPDATE grants SET uses_left = max(uses_left - 1, 0), uses = uses + 1,"
                      " rows_total = rows_total + ?2 WHERE id = ?1";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, rows > INT64_MAX ? INT64_MAX : (sqlite3_int64)rows);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int adb_revoke_grant(sqlite3 *db, const char *id, const char *by, int64_t now)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "UPDATE grants SET revoked_at = ?2, revoked_by = ?3"
                           " WHERE id = ?1 AND revoked_at IS NULL",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, now);
    bind_text(st, 3, by);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return -1;
    return sqlite3_changes(db) > 0 ? 0 : -1;
}

int adb_pending_requests(sqlite3 *db, struct areq **out, unsigned *n)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT " REQ_COLUMNS " FROM approval_requests WHERE state = 'pending'",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *out = xrealloc(*out, sizeof **out * (*n + 1));
        req_from_row(st, &(*out)[(*n)++]);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- JSON */

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char s[40];
    gmtime_r(&t, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(o, key, s);
}

static void add_str(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

cJSON *areq_to_json(const struct areq *r)
{
    cJSON *o = cJSON_CreateObject();
    add_str(o, "id", r->id);
    add_str(o, "state", approve_state_name(r->state));
    add_str(o, "identity", r->identity);
    add_str(o, "kind", r->kind);
    cJSON *groups = r->groups_json ? cJSON_Parse(r->groups_json) : NULL;
    cJSON_AddItemToObject(o, "groups", groups ? groups : cJSON_CreateArray());
    add_str(o, "target", r->target);
    add_str(o, "statement", r->statement);
    add_str(o, "fingerprint", r->fingerprint);
    add_str(o, "command", r->command);
    add_str(o, "class", r->class_name);
    add_str(o, "tables", r->tables);
    add_str(o, "rule", r->rule);
    add_str(o, "reason", r->reason);
    add_str(o, "mode", mode_name(r->mode));
    cJSON_AddNumberToObject(o, "session_id", (double)r->session_id);
    add_str(o, "client_addr", r->client_addr);
    add_time(o, "created_at", r->created_at);
    add_time(o, "expires_at", r->expires_at);
    add_time(o, "decided_at", r->decided_at);
    add_str(o, "approver", r->approver);
    add_str(o, "decision_reason", r->decision_reason);
    add_str(o, "grant_id", r->grant_id);
    return o;
}

char *adb_requests_json(sqlite3 *db, int state_filter)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT " REQ_COLUMNS " FROM approval_requests WHERE (?1 IS NULL OR"
                      " state = ?1) ORDER BY created_at DESC, id LIMIT 1000";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    bind_text(st, 1,
              state_filter < 0 ? NULL : approve_state_name((enum approve_state)state_filter));
    cJSON *arr = cJSON_CreateArray();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct areq r;
        req_from_row(st, &r);
        cJSON_AddItemToArray(arr, areq_to_json(&r));
        areq_free(&r);
    }
    sqlite3_finalize(st);
    char *s = rc == SQLITE_DONE ? cJSON_Print(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}

char *adb_request_json(sqlite3 *db, const char *id)
{
    struct areq r;
    if (adb_get_request(db, id, &r) != 0) return NULL;
    cJSON *o = areq_to_json(&r);
    areq_free(&r);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

char *adb_grants_json(sqlite3 *db, bool all, int64_t now)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT id, scope, identity, grp, target, fingerprint, created_at,"
                      " expires_at, max_uses, uses_left, uses, max_rows, rows_total, approver,"
                      " request_id, revoked_at, revoked_by FROM grants WHERE ?1 OR"
                      " (revoked_at IS NULL AND expires_at > ?2 AND uses_left > 0)"
                      " ORDER BY created_at DESC, id LIMIT 1000";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_int(st, 1, all);
    sqlite3_bind_int64(st, 2, now);
    cJSON *arr = cJSON_CreateArray();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        const char *names[] = {"id", "scope", "identity", "group", "target", "fingerprint"};
        for (int i = 0; i < 6; i++)
            add_str(o, names[i], (const char *)sqlite3_column_text(st, i));
        add_time(o, "created_at", sqlite3_column_int64(st, 6));
        add_time(o, "expires_at", sqlite3_column_int64(st, 7));
        cJSON_AddNumberToObject(o, "max_uses", (double)sqlite3_column_int64(st, 8));
        cJSON_AddNumberToObject(o, "uses_left", (double)sqlite3_column_int64(st, 9));
        cJSON_AddNumberToObject(o, "uses", (double)sqlite3_column_int64(st, 10));
        cJSON_AddNumberToObject(o, "max_rows", (double)sqlite3_column_int64(st, 11));
        cJSON_AddNumberToObject(o, "rows_total", (double)sqlite3_column_int64(st, 12));
        add_str(o, "approver", (const char *)sqlite3_column_text(st, 13));
        add_str(o, "request_id", (const char *)sqlite3_column_text(st, 14));
        add_time(o, "revoked_at", sqlite3_column_int64(st, 15));
        add_str(o, "revoked_by", (const char *)sqlite3_column_text(st, 16));
        const char *status = sqlite3_column_type(st, 15) != SQLITE_NULL ? "revoked"
                             : sqlite3_column_int64(st, 7) <= now       ? "expired"
                             : sqlite3_column_int64(st, 9) <= 0         ? "exhausted"
                                                                        : "live";
        cJSON_AddStringToObject(o, "status", status);
        cJSON_AddItemToArray(arr, o);
    }
    sqlite3_finalize(st);
    char *s = rc == SQLITE_DONE ? cJSON_Print(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}
