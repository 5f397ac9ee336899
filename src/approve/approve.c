/*
 * approve.c: approval requests, grants and their uses, the module's state and its locks.
 *
 * One process-wide instance (struct approve_module, approve_int.h). The calls a worker makes
 * (approve_grant_find, approve_grant_use, approve_grant_live, approve_request, approve_state,
 * approve_cancel) never wait for the state file, which the audit writer (src/store) and the CLI
 * also write, and for whose write lock SQLite waits up to its busy timeout (5 s). Before, one mutex
 * covered the one connection and its waits: a session making a request while the audit writer
 * committed stalled every reviewed statement and grant check of the process, and every session of
 * its own worker (the worker's loop waited with it).
 *
 * The locks:
 * - `mu`, memory (approve_mem.c): the requests this process watches (made here, or pending in
 *   the file when it started) and the grants it has used or checked, with their uses left. It
 *   is held only for steps of memory work, never across SQLite, a notification or a hook.
 * - `dbmu`, the writer's connection. A change the statement path makes (a new request, a
 *   request cancelled or expired, a grant's use) is made in memory and queued in memory's
 *   order; whoever holds `dbmu` writes the queue to the file before anything else: the
 *   timer thread (approve_sync.c), woken by each change, or an admin or CLI call that needs
 *   the file up to date (decisions, revocations, listings), in one transaction per batch.
 *   While the file stays locked, or refuses a write otherwise (a full disk, an I/O error, a
 *   read-only file), the batch is rolled back, the queue kept and tried again; memory is right
 *   meanwhile. Only a write that can never succeed (a
 *   constraint the row breaks) is dropped, as an error in the log. Workers never take `dbmu`.
 * - `rdmu`, a second connection with no busy timeout, for what another process may change
 *   under a grant: it is held for one indexed read, which never waits (WAL readers do not
 *   wait for writers); a grant whose revocation could not be read at once is not used.
 * Lock order: (the timer's cycle, approve_sync.c) dbmu, then mu; rdmu, tmu (the timer's sleep)
 * and smu (subscribers) alone.
 *
 * One server per state file: approve_start() takes an exclusive flock on
 * STATE_PATH.approvals-lock (whatever the audit's settings), held until approve_stop() has
 * written the queue, since each server would count grant uses and pending requests in its own
 * memory. The CLI (approve_open) takes none: it decides and revokes, and never uses grants.
 *
 * What holds without the file on the statement path:
 * - A grant's uses are spent under `mu`: two sessions racing for its last use cannot both
 *   have it; the file records each use after the fact. A grant memory holds stays there, used
 *   up or revoked, until it expires, so the file's older count (a use not yet written) never
 *   brings it back while the process runs.
 * - Fail closed: no grant is used and no request made while the file is behind, that is while
 *   a change has waited in the queue longer than SQLite's busy wait (5 s), while the queue
 *   holds approvals.max_queued_writes changes, or while the last write failed otherwise than
 *   on the lock; as before, when the statement path wrote the file itself and a use or a
 *   request the file did not take was refused (file_behind_locked).
 * - Revocation: each check or use of a grant first reads whether the file says it is revoked
 *   (by the admin API here or by the CLI), and a grant memory does not hold is read from the
 *   file (one the CLI made): both take effect at once, as when the file was read directly.
 * - A decision (the admin API, Slack, the CLI) is made in the file first, in one transaction
 *   that reads and checks the stored request (pending, before its deadline, the approver not
 *   the requester and an approver: the two-person rule) and writes the grant, so another
 *   process deciding at the same time cannot also win (approve_decide.c).
 * - A cancel or an expiry is written conditionally (state = 'pending'): a decision another
 *   process wrote first stays; memory takes it and it is reported when the write finds it (an
 *   expiry is audited only once written, so an expiry that lost is never audited; a cancel is
 *   audited when made, before its session's end, and the decision says it came first).
 *   Decisions by another process on requests pending here are read every 100 ms when PRAGMA
 *   data_version says another connection committed, and wake the parked sessions
 *   (approve_sync.c).
 * What the file can miss: the changes still queued when the process dies (kill -9, a crash),
 * normally written within a millisecond (the queue goes to the file in one transaction per
 * batch of up to 1000, approve_sync.c), and at most those of the last 5 s while another
 * connection held the file locked, no more than approvals.max_queued_writes uses and requests
 * (and the ends of those seconds): a grant's use (the grant has it again after a restart; its
 * grant.used event was emitted), a new request (notified and audited, then unknown to the
 * file), a cancel (audited; the request is pending again after a restart and expires). A stop
 * (approve_stop) waits up to server.shutdown_timeout for the file to take the queue, and says
 * what it lost if it did not.
 *
 * Each identity may have approvals.max_pending_per_identity requests pending (0: no limit);
 * approve_request() refuses another with APPROVE_ERR_LIMIT, counted under `mu` with the others.
 *
 * Notifications are queued to the notifier thread (notify.c); nothing here does network I/O.
 *
 * What it leaves to others: the relay parks and resumes connections and decides wait vs defer
 * from the returned status; src/admin authenticates approvers before calling approve_decide().
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "approve/approve_int.h"
#include "core/buf.h"
#include "core/log.h"

#define DEFAULT_TIMEOUT 600

struct approve_module approve_m = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .dbmu = PTHREAD_MUTEX_INITIALIZER,
    .rdmu = PTHREAD_MUTEX_INITIALIZER,
    .tmu = PTHREAD_MUTEX_INITIALIZER,
    .tcond = PTHREAD_COND_INITIALIZER,
    .smu = PTHREAD_MUTEX_INITIALIZER,
    .lock_fd = -1,
};
static struct approve_module *const A = &approve_m;

static _Atomic(approve_audit_fn) audit_hook;
static int64_t (*_Atomic test_clock)(void);

static struct {
    atomic_ullong pending, requested, decided, approved, denied, expired, cancelled, notify_sent,
        notify_retries, notify_failures, grant_uses;
} C;

/* ---- names */

static const char *const state_names[] = {"pending", "approved", "denied", "expired", "cancelled"};

const char *approve_state_name(enum approve_state s)
{
    return (unsigned)s < 5 ? state_names[s] : "unknown";
}

int approve_state_from_name(const char *name)
{
    for (int i = 0; i < 5; i++)
        if (name && !strcmp(name, state_names[i])) return i;
    return -1;
}

const char *approve_scope_name(enum approve_scope s)
{
    return s == APPROVE_SCOPE_GROUP ? "group" : "identity";
}

const char *approve_event_name(enum approve_event ev)
{
    static const char *const names[] = {
        "approval.requested", "approval.notified", "approval.notify_failed", "approval.approved",
        "approval.denied",    "approval.expired",  "approval.cancelled",     "grant.used",
        "grant.exhausted",    "grant.revoked",
    };
    return (unsigned)ev < sizeof names / sizeof names[0] ? names[ev] : "unknown";
}

/* ---- small helpers */

int64_t approve_now_ms(void)
{
    int64_t (*fn)(void) = atomic_load(&test_clock);
    if (fn) return fn();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t approve_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void approve_test_set_clock(int64_t (*now_ms)(void))
{
    atomic_store(&test_clock, now_ms);
}

void approve_test_set_backoff_ms(unsigned base_ms)
{
    notify_set_backoff_ms(base_ms);
}

void approve_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void approve_make_id(const char *prefix, char out[APPROVE_ID_LEN])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        /* RAND_bytes failing means no entropy source: refuse to make guessable ids. */
        log_error("approvals: RAND_bytes failed");
        abort();
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | rnd[i];
    size_t p = (size_t)snprintf(out, APPROVE_ID_LEN, "%s", prefix);
    for (int i = 0; i < 10 && p + 1 < APPROVE_ID_LEN; i++, v >>= 5)
        out[p++] = alphabet[v & 31];
    out[p] = '\0';
}

void approve_set_audit_hook(approve_audit_fn fn)
{
    atomic_store(&audit_hook, fn);
}

void approve_emit(const struct approve_audit *ev)
{
    approve_audit_fn fn = atomic_load(&audit_hook);
    if (fn) fn(ev);
}

void approve_count_notify(int sent, int retries, int failures)
{
    atomic_fetch_add(&C.notify_sent, (unsigned long long)sent);
    atomic_fetch_add(&C.notify_retries, (unsigned long long)retries);
    atomic_fetch_add(&C.notify_failures, (unsigned long long)failures);
}

void approve_get_counters(struct approve_counters *out)
{
    out->pending = atomic_load(&C.pending);
    out->requested = atomic_load(&C.requested);
    out->decided = atomic_load(&C.decided);
    out->approved = atomic_load(&C.approved);
    out->denied = atomic_load(&C.denied);
    out->expired = atomic_load(&C.expired);
    out->cancelled = atomic_load(&C.cancelled);
    out->notify_sent = atomic_load(&C.notify_sent);
    out->notify_retries = atomic_load(&C.notify_retries);
    out->notify_failures = atomic_load(&C.notify_failures);
    out->grant_uses = atomic_load(&C.grant_uses);
}

static void event_from_req(struct approve_audit *ev, enum approve_event type, const struct areq *r)
{
    memset(ev, 0, sizeof *ev);
    ev->event = type;
    ev->request_id = r->id;
    ev->grant_id = r->grant_id;
    ev->identity = r->identity;
    ev->target = r->target;
    ev->statement = r->statement;
    ev->fingerprint = r->fingerprint;
    ev->approver = r->approver;
    ev->reason =
        type == APPROVE_EV_DENIED || type == APPROVE_EV_CANCELLED ? r->decision_reason : r->reason;
    ev->session_id = r->session_id;
    ev->uses_left = -1;
}

/* ---- subscribers */

void approve_subscribe(int efd)
{
    pthread_mutex_lock(&A->smu);
    bool have = false;
    for (unsigned i = 0; i < A->n_subs; i++)
        have |= A->subs[i] == efd;
    if (!have && A->n_subs < APPROVE_MAX_SUBSCRIBERS) A->subs[A->n_subs++] = efd;
    pthread_mutex_unlock(&A->smu);
}

void approve_unsubscribe(int efd)
{
    pthread_mutex_lock(&A->smu);
    for (unsigned i = 0; i < A->n_subs; i++)
        if (A->subs[i] == efd) {
            A->subs[i] = A->subs[--A->n_subs];
            break;
        }
    pthread_mutex_unlock(&A->smu);
}

static void wake_subscribers(void)
{
    pthread_mutex_lock(&A->smu);
    for (unsigned i = 0; i < A->n_subs; i++) {
        uint64_t one = 1;
        ssize_t n;
        do
            n = write(A->subs[i], &one, sizeof one);
        while (n < 0 && errno == EINTR);
        /* EAGAIN: the counter is already non-zero, the reader will wake anyway. */
    }
    pthread_mutex_unlock(&A->smu);
}

struct sluice_config *approve_cfg_ref(void)
{
    pthread_mutex_lock(&A->mu);
    struct sluice_config *c = A->cfg ? config_ref(A->cfg) : NULL;
    pthread_mutex_unlock(&A->mu);
    return c;
}

/* ---- outcomes: what a change of a request's state reports, once no lock is held */

enum approve_event approve_event_of_state(enum approve_state s)
{
    return s == APPROVE_APPROVED  ? APPROVE_EV_APPROVED
           : s == APPROVE_DENIED  ? APPROVE_EV_DENIED
           : s == APPROVE_EXPIRED ? APPROVE_EV_EXPIRED
                                  : APPROVE_EV_CANCELLED;
}

void approve_outcome_add(struct approve_outcomes *o, enum approve_event ev, const struct areq *r,
                         const char *detail)
{
    o->v = xrealloc(o->v, sizeof *o->v * (o->n + 1));
    struct approve_outcome *x = &o->v[o->n++];
    x->ev = ev;
    areq_copy(&x->r, r);
    x->detail = detail;
}

/* Count it, audit it, tell the webhooks (cfg: NULL without the notifier thread). */
void approve_report_one(enum approve_event type, const struct areq *r, const char *detail,
                        const struct sluice_config *cfg)
{
    atomic_fetch_add(type == APPROVE_EV_APPROVED  ? &C.approved
                     : type == APPROVE_EV_DENIED  ? &C.denied
                     : type == APPROVE_EV_EXPIRED ? &C.expired
                                                  : &C.cancelled,
                     1);
    if (type == APPROVE_EV_APPROVED || type == APPROVE_EV_DENIED) atomic_fetch_add(&C.decided, 1);
    struct approve_audit ev;
    event_from_req(&ev, type, r);
    ev.detail = detail;
    approve_emit(&ev);
    if (cfg) {
        char type_name[40];
        snprintf(type_name, sizeof type_name, "approval.%s", approve_state_name(r->state));
        notify_outcome(cfg, type_name, r);
    }
}

/* Report and free them, and wake the subscribers when there were any. */
void approve_outcomes_report(struct approve_outcomes *o)
{
    if (!o->n && !o->wake) return;
    struct sluice_config *cfg = A->threads ? approve_cfg_ref() : NULL;
    for (unsigned i = 0; i < o->n; i++) {
        approve_report_one(o->v[i].ev, &o->v[i].r, o->v[i].detail, cfg);
        areq_free(&o->v[i].r);
    }
    if (cfg) config_unref(cfg);
    free(o->v);
    o->v = NULL;
    o->n = 0;
    o->wake = false;
    wake_subscribers();
}

/* ---- memory steps (mu held) */

void approve_count_pending_locked(void)
{
    atomic_store(&C.pending, amem_pending_count(&A->mem, NULL, 0));
}

/* mu held: a change for the file, behind the others. */
static void queue_locked(struct aop *op)
{
    op->queued_ms = approve_mono_ms();
    amem_op_push(&A->mem, op);
}

/* A pending request ends here (cancelled, expired): in memory now, and the sessions are woken
 * to read it; queued for the file. A cancel is reported at once: its session ended, and its
 * audit event comes before the session's end. An expiry is reported once the file has it:
 * another process may have decided the request there just before its deadline, and then that
 * decision is the request's outcome (approve_sync.c). */
void approve_end_locked(struct mreq *q, enum approve_state st, const char *reason, int64_t now,
                        struct approve_outcomes *out)
{
    q->r.state = st;
    q->r.decided_at = now;
    free(q->r.decision_reason);
    q->r.decision_reason = xstrdup(reason);
    struct aop *op = xcalloc(1, sizeof *op);
    op->kind = AOP_END;
    areq_copy(&op->r, &q->r);
    queue_locked(op);
    out->wake = true;
    if (st == APPROVE_CANCELLED) approve_outcome_add(out, APPROVE_EV_CANCELLED, &q->r, NULL);
}

/* ---- how far behind the file may fall
 *
 * Memory spends a grant's use at once and the file records it after; should the process die
 * before, the file still has that use, and a restart would give it again. So the statement path
 * lets the file fall behind only so far: while a change has waited in the queue for longer than
 * the bound (the file locked by another connection all that time), while the last write failed
 * otherwise (a full disk, an I/O error, a read-only file), or while the queue holds
 * approvals.max_queued_writes changes (heavy grant traffic while the file is locked: memory
 * and what a crash loses stay bounded), it uses no grant and makes no request. That is what the
 * statement path did when it wrote the file itself: SQLite's busy wait (5 s) ran out, or the
 * write failed, and the use or the request was refused. A request's end (a cancel, an expiry)
 * is queued past the bound: it cannot be refused, and there are no more of them than pending
 * requests, which the bound limits too. */
static _Atomic unsigned write_lag_ms = ADB_BUSY_TIMEOUT_MS;

void approve_test_set_write_lag_ms(unsigned ms)
{
    atomic_store(&write_lag_ms, ms ? ms : ADB_BUSY_TIMEOUT_MS);
}

/* mu held: whether the file is too far behind (why says how), or false. */
static bool file_behind_locked(char *why, size_t whylen)
{
    if (A->write_error) {
        snprintf(why, whylen, "the state file refuses writes (%s)", A->write_errmsg);
        return true;
    }
    const struct aop *first = amem_op_first(&A->mem);
    int64_t age = first ? approve_mono_ms() - first->queued_ms : 0;
    if (age > (int64_t)atomic_load(&write_lag_ms)) {
        snprintf(why, whylen,
                 "the state file has not taken the changes queued %lld ms ago (another "
                 "connection holds its write lock)",
                 (long long)age);
        return true;
    }
    unsigned max = A->cfg && A->cfg->approvals.max_queued_writes
                       ? A->cfg->approvals.max_queued_writes
                       : CFG_APPROVALS_MAX_QUEUED_WRITES;
    unsigned n = amem_op_count(&A->mem);
    if (n < max) return false;
    snprintf(why, whylen,
             "the state file has not yet taken the %u changes queued, as many as "
             "approvals.max_queued_writes allows",
             n);
    return true;
}

/* Refusals are logged at most every 10 s: each refused statement is logged by the relay. */
static void log_refusal(const char *what, const char *id, const char *why)
{
    static _Atomic int64_t last;
    int64_t now = approve_mono_ms(), then = atomic_load(&last);
    if (then && now - then < 10000) return;
    if (!atomic_compare_exchange_strong(&last, &then, now)) return;
    log_warn("approvals: %s%s not made: %s", what, id, why);
}

/* ---- lifecycle */

static const char *state_path(const struct sluice_config *cfg)
{
    return cfg->state.path && *cfg->state.path ? cfg->state.path : "sluice.db";
}

/* The server's lock on its state file, STATE_PATH.approvals-lock (dbmu held): one server per
 * file, since each counts grant uses and pending requests in its own memory. Held until
 * approve_stop() has written the queue; the CLI takes none. */
static int lock_state(const char *path, char *err, size_t errlen)
{
    char lock_path[4200];
    if ((size_t)snprintf(lock_path, sizeof lock_path, "%s.approvals-lock", path) >=
        sizeof lock_path) {
        approve_fail(err, errlen, "approvals: the state path %s is too long", path);
        return -1;
    }
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        approve_fail(err, errlen, "approvals: cannot open the lock file %s: %s", lock_path,
                     strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            approve_fail(err, errlen,
                         "approvals: another sluice server uses the state file %s (it holds %s); "
                         "give each server a state.path of its own",
                         path, lock_path);
        else
            approve_fail(err, errlen, "approvals: cannot lock %s: %s", lock_path, strerror(errno));
        close(fd);
        return -1;
    }
    A->lock_fd = fd;
    return 0;
}

/* dbmu held. server: take the server's lock on the file first. */
static int open_common(const struct sluice_config *cfg, bool server, char *err, size_t errlen)
{
    if (A->db) {
        approve_fail(err, errlen, "approvals already started");
        return -1;
    }
    const char *path = state_path(cfg);
    if (cfg->state.driver != CFG_STATE_SQLITE) {
        approve_fail(err, errlen,
                     "approvals: state.driver postgres is not supported yet (use sqlite)");
        return -1;
    }
    if (server && lock_state(path, err, errlen) < 0) return -1;
    A->db = adb_open(path, err, errlen);
    if (!A->db) return -1;
    A->data_version = adb_data_version(A->db);
    pthread_mutex_lock(&A->mu);
    A->cfg = config_ref((struct sluice_config *)cfg);
    A->started = true;
    pthread_mutex_unlock(&A->mu);
    return 0;
}

int approve_open(const struct sluice_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&A->dbmu);
    int rc = open_common(cfg, false, err, errlen);
    pthread_mutex_unlock(&A->dbmu);
    return rc;
}

/* Every pending request of the file, ours to expire and watch, into memory (dbmu held). */
static int load_requests(char *err, size_t errlen)
{
    struct areq *rs = NULL;
    unsigned n = 0;
    if (adb_pending_requests(A->db, &rs, &n) < 0) {
        approve_fail(err, errlen, "approvals: cannot read the state file: %s",
                     sqlite3_errmsg(A->db));
        return -1;
    }
    pthread_mutex_lock(&A->mu);
    for (unsigned i = 0; i < n; i++)
        amem_req_add_take(&A->mem, &rs[i]);
    approve_count_pending_locked();
    pthread_mutex_unlock(&A->mu);
    free(rs);
    return 0;
}

int approve_start(const struct sluice_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&A->dbmu);
    int rc = open_common(cfg, true, err, errlen);
    if (rc == 0) rc = load_requests(err, errlen);
    pthread_mutex_unlock(&A->dbmu);
    if (rc < 0) goto fail;
    pthread_mutex_lock(&A->rdmu);
    A->rd = adb_open_reader(state_path(cfg), err, errlen);
    pthread_mutex_unlock(&A->rdmu);
    if (!A->rd) goto fail;
    if (notify_start(err, errlen) < 0) goto fail;
    A->stop = false;
    if (pthread_create(&A->timer, NULL, approve_timer_main, NULL) != 0) {
        approve_fail(err, errlen, "approvals: cannot start the timer thread");
        notify_stop();
        goto fail;
    }
    A->threads = true;
    return 0;
fail:
    approve_stop();
    return -1;
}

/* The queue is written before the file is closed, tried again while the file stays locked or
 * refuses it, for up to server.shutdown_timeout (at least one busy wait, 5 s, as before). What
 * is still queued then is lost: said, with what it holds. */
static void flush_at_stop(struct approve_outcomes *out)
{
    pthread_mutex_lock(&A->mu);
    int64_t budget = A->cfg ? (int64_t)A->cfg->server.shutdown_timeout * 1000 : 0;
    pthread_mutex_unlock(&A->mu);
    if (budget < ADB_BUSY_TIMEOUT_MS) budget = ADB_BUSY_TIMEOUT_MS;
    int64_t t0 = approve_mono_ms(), deadline = t0 + budget;
    char msg[200] = "";
    for (;;) {
        pthread_mutex_lock(&A->dbmu);
        int rc = 0;
        if (A->db) {
            int64_t left = deadline - approve_mono_ms();
            sqlite3_busy_timeout(A->db, (int)(left < 1                     ? 1
                                              : left > ADB_BUSY_TIMEOUT_MS ? ADB_BUSY_TIMEOUT_MS
                                                                           : left));
            rc = approve_flush(out);
            if (rc < 0) snprintf(msg, sizeof msg, "%s", A->flush_errmsg);
        }
        pthread_mutex_unlock(&A->dbmu);
        if (rc == 0) return;
        if (approve_mono_ms() >= deadline) break;
        usleep(100 * 1000);
    }
    unsigned n[3] = {0, 0, 0};
    pthread_mutex_lock(&A->mu);
    for (const struct aop *op = amem_op_first(&A->mem); op; op = op->next)
        n[op->kind]++;
    pthread_mutex_unlock(&A->mu);
    log_error("approvals: the state file did not take the last changes in %lld s (%s); lost: %u "
              "grant uses (after a restart these grants have them again), %u new requests, %u "
              "ends of requests (pending again after a restart)",
              (long long)(approve_mono_ms() - t0) / 1000, msg, n[AOP_USE], n[AOP_INSERT],
              n[AOP_END]);
}

void approve_stop(void)
{
    if (A->threads) {
        pthread_mutex_lock(&A->tmu);
        A->stop = true;
        pthread_cond_signal(&A->tcond);
        pthread_mutex_unlock(&A->tmu);
        pthread_join(A->timer, NULL);
        notify_stop();
        A->threads = false;
    }
    pthread_mutex_lock(&A->mu);
    A->started = false; /* the statement path is refused from here on */
    pthread_mutex_unlock(&A->mu);
    pthread_mutex_lock(&A->rdmu);
    if (A->rd) adb_close(A->rd);
    A->rd = NULL;
    pthread_mutex_unlock(&A->rdmu);
    struct approve_outcomes out = {0};
    flush_at_stop(&out);
    pthread_mutex_lock(&A->dbmu);
    if (A->db) adb_close(A->db);
    A->db = NULL;
    if (A->lock_fd >= 0) close(A->lock_fd); /* once the file has what it will get */
    A->lock_fd = -1;
    pthread_mutex_lock(&A->mu);
    amem_clear(&A->mem);
    if (A->cfg) config_unref(A->cfg);
    A->cfg = NULL;
    A->write_error = 0;
    pthread_mutex_unlock(&A->mu);
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(&out);
}

void approve_reload(const struct sluice_config *cfg)
{
    pthread_mutex_lock(&A->mu);
    if (A->cfg) {
        struct sluice_config *old = A->cfg;
        A->cfg = config_ref((struct sluice_config *)cfg);
        config_unref(old);
    }
    pthread_mutex_unlock(&A->mu);
}

/* ---- requests */

static char *groups_to_json(const char *const *groups, unsigned n)
{
    cJSON *arr = cJSON_CreateArray();
    for (unsigned i = 0; i < n; i++)
        if (groups && groups[i]) cJSON_AddItemToArray(arr, cJSON_CreateString(groups[i]));
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!s) abort();
    return s;
}

int approve_request(const struct approve_ask *ask, char id_out[APPROVE_ID_LEN], char *err,
                    size_t errlen)
{
    if (!ask || !ask->identity || !ask->target || !ask->statement || !ask->fingerprint) {
        approve_fail(err, errlen,
                     "approval request needs identity, target, statement and fingerprint");
        return APPROVE_ERR;
    }
    struct areq r;
    memset(&r, 0, sizeof r);
    char id[APPROVE_ID_LEN];
    approve_make_id("req_", id);
    r.id = xstrdup(id);
    r.state = APPROVE_PENDING;
    r.identity = xstrdup(ask->identity);
    r.kind = xstrdup(ident_kind_name(ask->kind));
    r.groups_json = groups_to_json(ask->groups, ask->n_groups);
    r.target = xstrdup(ask->target);
    r.statement = xstrdup(ask->statement);
    r.fingerprint = xstrdup(ask->fingerprint);
    r.command = xstrdup(ask->command);
    r.class_name = xstrdup(ask->class_name);
    r.tables = xstrdup(ask->tables);
    r.rule = xstrdup(ask->rule);
    r.reason = xstrdup(ask->reason);
    r.session_id = ask->session_id;
    r.client_addr = xstrdup(ask->client_addr);

    int ret = APPROVE_ERR;
    struct sluice_config *cfg = NULL;
    pthread_mutex_lock(&A->mu);
    if (!A->started) {
        pthread_mutex_unlock(&A->mu);
        approve_fail(err, errlen, "approvals are not started");
        goto out;
    }
    char why[256];
    if (file_behind_locked(why, sizeof why)) {
        pthread_mutex_unlock(&A->mu);
        approve_fail(err, errlen, "approvals: no request is made while %s", why);
        goto out;
    }
    const struct cfg_approvals *ac = &A->cfg->approvals;
    r.mode = ask->mode != CFG_MODE_DEFAULT  ? ask->mode
             : ac->mode != CFG_MODE_DEFAULT ? ac->mode
             : ask->kind == IDENT_HUMAN     ? CFG_MODE_WAIT
                                            : CFG_MODE_DEFER;
    r.created_at = approve_now_ms();
    r.expires_at = r.created_at + (int64_t)(ac->timeout ? ac->timeout : DEFAULT_TIMEOUT) * 1000;
    /* one identity (an agent in a loop) cannot flood the approvers */
    unsigned limit = ac->max_pending_per_identity;
    unsigned have = limit ? amem_pending_count(&A->mem, r.identity, r.created_at) : 0;
    if (limit && have >= limit) {
        pthread_mutex_unlock(&A->mu);
        approve_fail(
            err, errlen,
            "%s has %u approval requests pending; approvals.max_pending_per_identity allows %u",
            r.identity, have, limit);
        ret = APPROVE_ERR_LIMIT;
        goto out;
    }
    struct aop *op = xcalloc(1, sizeof *op);
    op->kind = AOP_INSERT;
    areq_copy(&op->r, &r);
    queue_locked(op);
    struct areq mine;
    areq_copy(&mine, &r);
    amem_req_add_take(&A->mem, &mine);
    approve_count_pending_locked();
    if (A->threads) cfg = config_ref(A->cfg);
    pthread_mutex_unlock(&A->mu);
    approve_kick();
    atomic_fetch_add(&C.requested, 1);
    if (cfg) notify_request(cfg, &r);

    struct approve_audit ev;
    event_from_req(&ev, APPROVE_EV_REQUESTED, &r);
    ev.detail = r.mode == CFG_MODE_WAIT ? "wait" : "defer";
    approve_emit(&ev);
    snprintf(id_out, APPROVE_ID_LEN, "%s", r.id);
    ret = 0;
out:
    if (cfg) config_unref(cfg);
    areq_free(&r);
    return ret;
}

bool approve_same_person(const char *approver, const char *identity)
{
    if (!strncmp(approver, "cli:", 4))
        approver += 4;
    else if (!strncmp(approver, "slack:", 6))
        approver += 6;
    if (!strcasecmp(approver, identity)) return true;
    const char *at_a = strchr(approver, '@'), *at_i = strchr(identity, '@');
    size_t la = at_a ? (size_t)(at_a - approver) : strlen(approver);
    size_t li = at_i ? (size_t)(at_i - identity) : strlen(identity);
    /* "bob" approving "bob@corp.com" (or the reverse): same person as far as we can tell. */
    return (at_a == NULL || at_i == NULL) && la == li && la > 0 &&
           !strncasecmp(approver, identity, la);
}

int approve_state(const char *id, struct approve_status *out)
{
    memset(out, 0, sizeof *out);
    if (!id) return -1;
    bool found = false;
    pthread_mutex_lock(&A->mu);
    const struct mreq *q = A->started ? amem_req_get(&A->mem, id) : NULL;
    if (q) {
        const struct areq *r = &q->r;
        found = true;
        out->state = r->state;
        snprintf(out->identity, sizeof out->identity, "%s", r->identity ? r->identity : "");
        snprintf(out->approver, sizeof out->approver, "%s", r->approver ? r->approver : "");
        snprintf(out->grant_id, sizeof out->grant_id, "%s", r->grant_id ? r->grant_id : "");
        snprintf(out->reason, sizeof out->reason, "%s",
                 r->decision_reason ? r->decision_reason : "");
        out->created_at = r->created_at;
        out->expires_at = r->expires_at;
        out->decided_at = r->decided_at;
        out->mode = r->mode;
    }
    pthread_mutex_unlock(&A->mu);
    if (!found) return -1;
    /* Past its deadline it is expired, whether or not the timer has marked it yet. */
    if (out->state == APPROVE_PENDING && out->expires_at <= approve_now_ms())
        out->state = APPROVE_EXPIRED;
    return 0;
}

void approve_cancel(const char *id, const char *reason)
{
    if (!id) return;
    struct approve_outcomes out = {0};
    pthread_mutex_lock(&A->mu);
    struct mreq *q = A->started ? amem_req_get(&A->mem, id) : NULL;
    if (q && q->r.state == APPROVE_PENDING) {
        if (q->deciding) { /* the decision being written wins if it is written */
            free(q->cancel_reason);
            q->cancel_reason = xstrdup(reason ? reason : "its session ended");
        } else {
            approve_end_locked(q, APPROVE_CANCELLED, reason, approve_now_ms(), &out);
            approve_count_pending_locked();
        }
    }
    pthread_mutex_unlock(&A->mu);
    if (!out.wake) return;
    approve_kick();
    approve_outcomes_report(&out);
}

/* ---- grants: memory counts their uses; the file says which exist and which are revoked
 *
 * Another process (the CLI) adds grants and revokes them in the file: the statement path reads
 * that through the reader's connection, one indexed read under rdmu that never waits (WAL
 * readers do not wait for writers; its busy timeout is 0). A grant whose revocation cannot be
 * read at once (an error, or the rare wait: a recovery after a crash) is not used: a
 * revocation is never missed. A grant another process made that cannot be read is not found
 * (the statement asks for approval again). */

/* The file's live grants for this id, or this target and fingerprint, into memory. */
static void file_load_grants(const char *id, const char *target, const char *fingerprint)
{
    struct approve_grant *gs = NULL;
    unsigned n = 0;
    pthread_mutex_lock(&A->rdmu);
    int rc =
        A->rd ? adb_live_grants(A->rd, id, target, fingerprint, approve_now_ms(), &gs, &n) : -1;
    pthread_mutex_unlock(&A->rdmu);
    if (rc == 0 && n) {
        pthread_mutex_lock(&A->mu);
        for (unsigned i = 0; A->started && i < n; i++)
            amem_grant_put(&A->mem, &gs[i]);
        pthread_mutex_unlock(&A->mu);
    }
    free(gs);
}

/* Whether the file says grant id is revoked: 1 (then memory knows it too from now on), 0 not,
 * -1 the file could not be read (logged): the caller does not use the grant. */
static int file_revoked(const char *id)
{
    char msg[160] = "";
    pthread_mutex_lock(&A->rdmu);
    int rc = A->rd ? adb_grant_revoked(A->rd, id) : -1;
    if (rc < 0) snprintf(msg, sizeof msg, "%s", A->rd ? sqlite3_errmsg(A->rd) : "not open");
    pthread_mutex_unlock(&A->rdmu);
    if (rc < 0) {
        log_warn("approvals: grant %s is not used: cannot read whether it was revoked: %s", id,
                 msg);
        return -1;
    }
    if (rc == 1) {
        pthread_mutex_lock(&A->mu);
        amem_grant_revoke(&A->mem, id);
        pthread_mutex_unlock(&A->mu);
    }
    return rc;
}

/* Before a grant is used or checked: memory holds it as the file has it (loaded when memory
 * does not hold it; marked revoked when the file says so). -1 when the file could not say
 * whether a grant memory holds was revoked: not to be used. */
static int grant_refresh(const char *id)
{
    pthread_mutex_lock(&A->mu);
    bool held = A->started && amem_grant_get(&A->mem, id);
    pthread_mutex_unlock(&A->mu);
    if (held) return file_revoked(id) < 0 ? -1 : 0;
    file_load_grants(id, NULL, NULL);
    return 0;
}

bool approve_grant_find(const char *identity, const char **groups, unsigned n, const char *target,
                        const char *fingerprint, struct approve_grant *out)
{
    if (!identity || !target || !fingerprint) return false;
    bool loaded = false;
    for (;;) {
        pthread_mutex_lock(&A->mu);
        bool found = A->started && amem_grant_find(&A->mem, identity, (const char *const *)groups,
                                                   n, target, fingerprint, approve_now_ms(), out);
        pthread_mutex_unlock(&A->mu);
        if (!found && !loaded) { /* one another process made? */
            file_load_grants(NULL, target, fingerprint);
            loaded = true;
            continue;
        }
        if (!found) return false;
        int revoked = file_revoked(out->id);
        if (revoked < 0) return false; /* unknown: not used */
        if (!revoked) return true;
        /* revoked by another process: look again (each grant is marked once) */
    }
}

bool approve_grant_live(const char *grant_id, struct approve_grant *out)
{
    if (!grant_id || grant_refresh(grant_id) < 0) return false;
    pthread_mutex_lock(&A->mu);
    const struct mgrant *e = A->started ? amem_grant_get(&A->mem, grant_id) : NULL;
    bool live = e && amem_grant_live(e, approve_now_ms());
    if (live && out) *out = e->g;
    pthread_mutex_unlock(&A->mu);
    return live;
}

int approve_grant_use(const char *grant_id, uint64_t rows, struct approve_grant *out)
{
    if (!grant_id || grant_refresh(grant_id) < 0) return -1;
    struct approve_grant g;
    int left = -1;
    char why[256] = "";
    pthread_mutex_lock(&A->mu);
    struct mgrant *e = A->started ? amem_grant_get(&A->mem, grant_id) : NULL;
    if (e && amem_grant_live(e, approve_now_ms()) && !file_behind_locked(why, sizeof why)) {
        left = (int)--e->g.uses_left; /* spent here, recorded after */
        g = e->g;
        struct aop *op = xcalloc(1, sizeof *op);
        op->kind = AOP_USE;
        snprintf(op->grant_id, sizeof op->grant_id, "%s", grant_id);
        op->rows = rows;
        queue_locked(op);
    }
    pthread_mutex_unlock(&A->mu);
    if (why[0]) log_refusal("a use of grant ", grant_id, why);
    if (left < 0) return -1;
    approve_kick();
    atomic_fetch_add(&C.grant_uses, 1);
    struct approve_audit ev;
    memset(&ev, 0, sizeof ev);
    ev.event = APPROVE_EV_GRANT_USED;
    ev.grant_id = g.id;
    ev.request_id = g.request_id;
    ev.identity = g.scope == APPROVE_SCOPE_IDENTITY ? g.identity : NULL;
    ev.target = g.target;
    ev.fingerprint = g.fingerprint;
    ev.approver = g.approver;
    ev.detail = g.scope == APPROVE_SCOPE_GROUP ? g.group : NULL;
    ev.rows = rows;
    ev.uses_left = left;
    approve_emit(&ev);
    if (left == 0) {
        ev.event = APPROVE_EV_GRANT_EXHAUSTED;
        approve_emit(&ev);
    }
    if (out) *out = g;
    return left;
}

int approve_grant_revoke(const char *grant_id, const char *by)
{
    if (!grant_id) return -1;
    int rc = -1;
    struct approve_outcomes out = {0};
    pthread_mutex_lock(&A->dbmu);
    if (A->db) {
        (void)approve_flush(&out);
        rc = adb_revoke_grant(A->db, grant_id, by, approve_now_ms());
        if (rc == 0) {
            pthread_mutex_lock(&A->mu);
            amem_grant_revoke(&A->mem, grant_id);
            pthread_mutex_unlock(&A->mu);
        }
    }
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(&out);
    if (rc < 0) return -1;
    struct approve_audit ev;
    memset(&ev, 0, sizeof ev);
    ev.event = APPROVE_EV_GRANT_REVOKED;
    ev.grant_id = grant_id;
    ev.approver = by;
    ev.uses_left = -1;
    approve_emit(&ev);
    return 0;
}

/* ---- listings: from the file, once the queue is written to it */

/* Take the file with the queue written to it (a listing's read follows); true when it is open.
 * listing_end() releases it and reports what the flush ended. */
static bool listing_begin(struct approve_outcomes *out)
{
    pthread_mutex_lock(&A->dbmu);
    if (A->db) (void)approve_flush(out);
    return A->db != NULL;
}

static void listing_end(struct approve_outcomes *out)
{
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(out);
}

char *approve_list_json(const char *state_filter)
{
    int st = -1;
    if (state_filter && *state_filter && strcmp(state_filter, "all") != 0) {
        st = approve_state_from_name(state_filter);
        if (st < 0) return NULL;
    }
    struct approve_outcomes out = {0};
    char *s = listing_begin(&out) ? adb_requests_json(A->db, st) : NULL;
    listing_end(&out);
    return s;
}

char *approve_grants_json_all(bool all)
{
    struct approve_outcomes out = {0};
    char *s = listing_begin(&out) ? adb_grants_json(A->db, all, approve_now_ms()) : NULL;
    listing_end(&out);
    return s;
}

char *approve_grants_json(void)
{
    return approve_grants_json_all(false);
}

char *approve_request_json(const char *id)
{
    if (!id) return NULL;
    struct approve_outcomes out = {0};
    char *s = listing_begin(&out) ? adb_request_json(A->db, id) : NULL;
    listing_end(&out);
    return s;
}
