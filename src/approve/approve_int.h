/*
 * approve_int.h: what the files of src/approve/ share among themselves (not a public API).
 *
 * approve_db.c keeps requests and grants in SQLite; approve_mem.c holds what the statement path
 * reads and changes in memory, with the queue of writes the file still has to get; notify.c
 * delivers notifications on its own thread; approve.c holds the process-wide state, its two
 * locks (memory, file) and the thread that writes the queue and watches the file.
 *
 * Ownership: struct areq strings are heap copies owned by the struct (areq_free). adb_*
 * functions borrow the sqlite3 handle; the caller holds the file lock around them. amem_*
 * functions work on memory only; the caller holds the memory lock around them.
 */
#ifndef SLUICE_APPROVE_APPROVE_INT_H
#define SLUICE_APPROVE_APPROVE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "approve/approve.h"
#include "core/names.h"

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
/* A deep copy of src into dst (dst's old strings are not freed). */
void areq_copy(struct areq *dst, const struct areq *src);

/* A grant row to insert. */
struct agrant {
    const char *id, *identity, *group, *target, *fingerprint, *approver, *request_id;
    enum approve_scope scope;
    int64_t created_at, expires_at;
    unsigned max_uses;
    uint64_t max_rows;
};

/* ---- approve_db.c */
#define ADB_BUSY_TIMEOUT_MS 5000 /* how long the writer's connection waits for the file's lock */
sqlite3 *adb_open(const char *path, char *err, size_t errlen);
/* A second connection to a file adb_open() prepared, for reads that must not wait: no busy
 * timeout (SQLITE_BUSY at once in the rare case a WAL read would have to wait). */
sqlite3 *adb_open_reader(const char *path, char *err, size_t errlen);
void adb_close(sqlite3 *db);
int adb_begin(sqlite3 *db); /* BEGIN IMMEDIATE */
int adb_commit(sqlite3 *db);
void adb_rollback(sqlite3 *db);
/* Whether the last failure on db was the file being locked by another connection (after the
 * busy timeout): worth trying again later. */
bool adb_busy(sqlite3 *db);
/* Whether the last failure on db can never succeed however often it is tried: the row breaks
 * a constraint (a trigger's RAISE excepted: it may be dropped), is too big, or a value has the
 * wrong type. A full disk, an I/O error, a read-only file: worth trying again. */
bool adb_permanent(sqlite3 *db);
/* PRAGMA data_version: changes when another connection (any process) commits. -1 on error. */
int64_t adb_data_version(sqlite3 *db);
int adb_insert_request(sqlite3 *db, const struct areq *r);
/* 0 found, 1 not found, -1 error. */
int adb_get_request(sqlite3 *db, const char *id, struct areq *out);
/* pending -> state; 1 when changed, 0 when not pending (or, for approved and denied, past its
 * deadline at now), -1 error. */
int adb_set_decision(sqlite3 *db, const char *id, enum approve_state state, const char *approver,
                     const char *reason, const char *grant_id, int64_t now);
int adb_insert_grant(sqlite3 *db, const struct agrant *g);
/* Whether an approver names the identity: the same name, or the same local part of an email
 * (CLI users, Slack users); prefixes "cli:" and "slack:" are ignored. Nobody decides their own
 * request, nor runs under a grant they made. */
bool approve_same_person(const char *approver, const char *identity);

/* The live grants (at now) with this id, or for this target and fingerprint (NULL: any), into
 * a malloc'd array, count in n. 0, or -1. */
int adb_live_grants(sqlite3 *db, const char *id, const char *target, const char *fingerprint,
                    int64_t now, struct approve_grant **out, unsigned *n);
/* 1 when grant id is revoked, 0 when not (or unknown), -1 on an error. */
int adb_grant_revoked(sqlite3 *db, const char *id);
/* Record one use of a grant that memory already took (uses_left - 1, uses + 1, rows). */
int adb_record_use(sqlite3 *db, const char *id, uint64_t rows);
int adb_revoke_grant(sqlite3 *db, const char *id, const char *by, int64_t now);
/* Every pending request: a malloc'd array of rows (each freed with areq_free), count in n. */
int adb_pending_requests(sqlite3 *db, struct areq **out, unsigned *n);
char *adb_requests_json(sqlite3 *db, int state_filter /* -1 = all */);
char *adb_request_json(sqlite3 *db, const char *id);
char *adb_grants_json(sqlite3 *db, bool all, int64_t now);
struct cJSON;
struct cJSON *areq_to_json(const struct areq *r); /* caller cJSON_Delete()s */

/* ---- approve_mem.c */

/* A request this process watches: made here, or pending in the file when it started. */
struct mreq {
    struct name_node node; /* keyed by r.id */
    struct areq r;
    bool deciding;       /* an approver's decision is being written to the file */
    char *cancel_reason; /* its session ended meanwhile: cancelled if that decision fails */
};

/* A grant this process has used or checked: uses_left here is the authoritative count. It
 * stays, used up or revoked, until it expires, so that the file's older count (a use not yet
 * written) never brings it back. */
struct mgrant {
    struct name_node node; /* keyed by g.id */
    struct approve_grant g;
    bool revoked;
};

/* A change memory made that the file has yet to get, in the order memory made them. */
enum aop_kind {
    AOP_INSERT, /* a new request: r */
    AOP_END,    /* a request cancelled or expired here: r, as memory ended it (an expiry is
                 * reported once the file has it, approve_sync.c) */
    AOP_USE,    /* a use of grant_id, with rows */
};
struct aop {
    struct aop *next;
    enum aop_kind kind;
    int64_t queued_ms; /* when it was queued (approve_mono_ms) */
    struct areq r;
    char grant_id[APPROVE_ID_LEN];
    uint64_t rows;
};
void aop_free(struct aop *op);

struct amem {
    struct name_map reqs;   /* struct mreq */
    struct name_map grants; /* struct mgrant */
    struct aop *ops, *ops_last;
    unsigned n_ops; /* how many are queued */
};

struct mreq *amem_req_get(struct amem *m, const char *id);
/* Add r (taken over: its strings belong to the entry now, r is cleared). An id already held
 * keeps its entry; r is freed. */
struct mreq *amem_req_add_take(struct amem *m, struct areq *r);
/* Pending requests of identity (NULL: of anyone) whose deadline is after now (0: any). */
unsigned amem_pending_count(struct amem *m, const char *identity, int64_t now);
/* Call fn for every request; fn returns true to drop it (freed after fn). */
void amem_req_each(struct amem *m, bool (*fn)(struct mreq *q, void *ctx), void *ctx);

/* Not revoked, not expired at now, uses left. */
bool amem_grant_live(const struct mgrant *e, int64_t now);
struct mgrant *amem_grant_get(struct amem *m, const char *id);
/* Add a grant unless its id is held already (memory's use count wins over the file's). */
void amem_grant_put(struct amem *m, const struct approve_grant *g);
void amem_grant_revoke(struct amem *m, const char *id);
/* Grants expired at now go. */
void amem_grant_prune(struct amem *m, int64_t now);
/* The best live grant for this statement, as adb used to pick it: identity scope before group
 * scope, then the one expiring last; never one the identity approved itself. */
bool amem_grant_find(struct amem *m, const char *identity, const char *const *groups, unsigned n,
                     const char *target, const char *fingerprint, int64_t now,
                     struct approve_grant *out);

void amem_op_push(struct amem *m, struct aop *op);
/* The oldest op, left queued (NULL: none). It stays the oldest until amem_op_pop(): only the
 * writer (holding the file lock) pops, others only push behind it; so the writer may walk
 * from it along next (reading each next under the memory lock: a push sets the last one's). */
struct aop *amem_op_first(struct amem *m);
unsigned amem_op_count(const struct amem *m);
/* Take the oldest op off the queue: the caller frees it (aop_free). */
struct aop *amem_op_pop(struct amem *m);
void amem_clear(struct amem *m);

/* ---- approve.c: the module's one instance, shared by approve.c, approve_sync.c and
 * approve_decide.c. What each lock guards, and why the statement path never waits for the
 * file: approve.c's header. Lock order: dbmu, then mu; rdmu, tmu and smu are taken alone. */
struct approve_module {
    pthread_mutex_t mu; /* memory: mem, cfg, started, write_error */
    struct amem mem;
    struct sluice_config *cfg;
    bool started;
    /* The last write of the queue failed, and not because the file was locked (the disk is
     * full, an I/O error, the file is read-only): its SQLite error code (0: the last write
     * went through), and its message. */
    int write_error;
    char write_errmsg[160];

    pthread_mutex_t dbmu; /* the file: the writer's connection, the server's lock */
    sqlite3 *db;
    int64_t data_version;       /* PRAGMA data_version at the last watch */
    int lock_fd;                /* STATE_PATH.approvals-lock, flock'ed by the server (-1: none) */
    int64_t write_error_logged; /* approve_mono_ms() when a failed write was last logged */
    /* Why the last approve_flush() failed (the file locked included): the failing statement's
     * message, kept before the rollback replaces the connection's (dbmu). */
    char flush_errmsg[160];

    pthread_mutex_t rdmu; /* the reader's connection: held for one read, which never waits */
    sqlite3 *rd;

    bool threads; /* the timer and notifier threads run (not in the CLI) */
    pthread_t timer;
    pthread_mutex_t tmu;
    pthread_cond_t tcond;
    bool stop, kicked;

    pthread_mutex_t smu;
    int subs[APPROVE_MAX_SUBSCRIBERS];
    unsigned n_subs;
};
extern struct approve_module approve_m;

void approve_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The config snapshot in use, with a reference the caller drops (NULL when not started). */
struct sluice_config *approve_cfg_ref(void);

/* What a change of a request's state reports once no lock is held: the counters, the audit
 * hook, the webhooks, the subscribers. */
struct approve_outcome {
    enum approve_event ev;
    struct areq r; /* a copy, as it was decided */
    const char *detail;
};
struct approve_outcomes {
    struct approve_outcome *v;
    unsigned n;
    bool wake; /* memory changed a request's state: wake the subscribers even with no v */
};
enum approve_event approve_event_of_state(enum approve_state s);
void approve_outcome_add(struct approve_outcomes *o, enum approve_event ev, const struct areq *r,
                         const char *detail);
/* Report them (and free them), then wake the subscribers when there were any. */
void approve_outcomes_report(struct approve_outcomes *o);
/* Report one now (cfg: where the webhooks are; NULL: none). */
void approve_report_one(enum approve_event type, const struct areq *r, const char *detail,
                        const struct sluice_config *cfg);
/* mu held: the pending count for the metrics; a pending request ends here (cancelled,
 * expired): in memory now (out->wake set), queued for the file; a cancel's outcome goes to
 * out, an expiry's is reported once the file has it (approve_sync.c). */
void approve_count_pending_locked(void);
void approve_end_locked(struct mreq *q, enum approve_state st, const char *reason, int64_t now,
                        struct approve_outcomes *out);

int64_t approve_now_ms(void);
int64_t approve_mono_ms(void); /* CLOCK_MONOTONIC, milliseconds */
void approve_emit(const struct approve_audit *ev);
void approve_count_notify(int sent, int retries, int failures);
/* A fresh id: prefix + 10 base32 characters. */
void approve_make_id(const char *prefix, char out[APPROVE_ID_LEN]);

/* ---- approve_sync.c */
/* dbmu held: write the queue to the file, in order, in batches of up to 1000 changes, each in
 * one transaction. 0 when it is empty, -1 when a batch failed (the file stayed locked, or
 * refused it: disk full, I/O error, read-only): it is rolled back, and it and what follows stay
 * queued, first, to be tried again (why: flush_errmsg, not the connection's message, which the
 * rollback replaced). Only a change that can never succeed (a constraint the row
 * breaks) is dropped, alone, and logged as an error. The outcomes of the ends written (or of the
 * decisions another process made first) go to out, for the caller to report once it has let
 * go of dbmu. */
int approve_flush(struct approve_outcomes *out);
/* Something was queued: the timer thread writes it now (without threads, the CLI: this one). */
void approve_kick(void);
void *approve_timer_main(void *arg);

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
