/*
 * approve_sync.c: the approvals' own thread, between memory and the state file.
 *
 * It writes the queue of changes memory made (a new request, a request cancelled or expired,
 * a grant's use) to the file in order, as soon as it is woken (approve_kick) or as the file
 * allows, up to FLUSH_BATCH_MAX of them in one transaction: a batch the file refuses (another
 * connection holds its lock, the disk is full, an I/O error, the file is read-only) is rolled
 * back and kept, first, and tried again; only a change that can never succeed is dropped (that
 * one alone: the rest of its batch is written). Every 100 ms it also expires the requests past
 * their deadline and, when the file says another connection committed (PRAGMA data_version),
 * reads the requests still pending here that another process (the CLI) decided. It holds the
 * file lock (dbmu) while it works and the memory lock (mu) only for each step of memory work;
 * approve.c says why.
 *
 * What it leaves to others: approve.c makes the changes and reports the outcomes (those the
 * writes find, too: an expiry once written, a decision another process made first);
 * decisions are written by approve_decide.c, which writes the queue first too.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "approve/approve_int.h"
#include "core/buf.h"
#include "core/log.h"

#define TICK_MS 100
#define KEEP_DECIDED_MS 60000 /* a decided request stays in memory for its session to read */
/* Ops written in one transaction: one commit (one WAL append) for many changes, and the file's
 * write lock held for a few milliseconds at most, which the audit writer may be waiting for. */
#define FLUSH_BATCH_MAX 1000

static struct approve_module *const A = &approve_m;

/* ---- the file: queued writes (dbmu held) */

/* mu held: a request memory holds takes the decision another process wrote to the file. */
static void take_decision_locked(struct mreq *q, const struct areq *f, int64_t now)
{
    q->r.state = f->state;
    q->r.decided_at = f->decided_at ? f->decided_at : now;
    char **mine[] = {&q->r.approver, &q->r.decision_reason, &q->r.grant_id};
    const char *theirs[] = {f->approver, f->decision_reason, f->grant_id};
    for (int k = 0; k < 3; k++) {
        free(*mine[k]);
        *mine[k] = xstrdup(theirs[k]);
    }
}

/* An expiry is reported here, once the file has it: a cancel was reported when it was made
 * (approve_end_locked). */
static void report_end(const struct aop *op, struct approve_outcomes *out, const char *detail)
{
    if (op->r.state == APPROVE_EXPIRED)
        approve_outcome_add(out, APPROVE_EV_EXPIRED, &op->r, detail);
}

/* An end (a cancel, an expiry) reached the file. changed: the request was pending there and
 * now has ended. Not changed: it was no longer pending in the file; another process (the CLI)
 * decided it first, before its deadline or before its session ended here. That decision
 * stands: memory takes it, and it is reported; an expiry that did not happen is not (nor
 * counted), a cancel (already reported: the session did end) is superseded, as the decision's
 * detail says. -1 when the file could not be read (the end is tried again). */
static int end_written(const struct aop *op, bool changed, struct approve_outcomes *out)
{
    if (changed) {
        report_end(op, out, NULL);
        return 0;
    }
    struct areq f;
    int rc = adb_get_request(A->db, op->r.id, &f);
    if (rc < 0) return -1;
    if (rc > 0) { /* its insert was refused for good (logged then) */
        log_warn("approvals: request %s is not in the state file; it was %s here", op->r.id,
                 approve_state_name(op->r.state));
        report_end(op, out, "not in the state file");
        return 0;
    }
    if (f.state == APPROVE_PENDING || f.state == op->r.state) {
        report_end(op, out, NULL);
    } else {
        log_warn("approvals: request %s was %s by %s in the state file before it was %s here; "
                 "that decision stands",
                 f.id, approve_state_name(f.state), f.approver ? f.approver : "another process",
                 approve_state_name(op->r.state));
        pthread_mutex_lock(&A->mu);
        struct mreq *q = amem_req_get(&A->mem, f.id);
        if (q && q->r.state == op->r.state) take_decision_locked(q, &f, approve_now_ms());
        approve_count_pending_locked();
        pthread_mutex_unlock(&A->mu);
        approve_outcome_add(out, approve_event_of_state(f.state), &f,
                            op->r.state == APPROVE_CANCELLED
                                ? "decided by another process before its cancel here"
                                : "decided by another process");
    }
    areq_free(&f);
    return 0;
}

static const char *op_what(const struct aop *op)
{
    return op->kind == AOP_INSERT ? "a new request"
           : op->kind == AOP_END  ? "a request's end"
                                  : "a grant's use";
}

/* Inside the batch's transaction: 0 written (or dropped for good, logged as an error), -1 not
 * written: the batch is rolled back and it stays queued, to be tried again (the file locked,
 * full, read-only, an I/O error). */
static int apply_op(const struct aop *op, struct approve_outcomes *out)
{
    int rc = -1;
    switch (op->kind) {
    case AOP_INSERT:
        rc = adb_insert_request(A->db, &op->r);
        break;
    case AOP_END:
        rc = adb_set_decision(A->db, op->r.id, op->r.state, NULL, op->r.decision_reason, NULL,
                              op->r.decided_at);
        if (rc >= 0) rc = end_written(op, rc == 1, out);
        break;
    case AOP_USE:
        rc = adb_record_use(A->db, op->grant_id, op->rows);
        break;
    }
    if (rc >= 0) return 0;
    /* A statement that breaks a constraint is undone alone (the transaction goes on); should
     * SQLite have ended the transaction with it (no ON CONFLICT ROLLBACK in our schema, and
     * a trigger's RAISE is not taken as permanent), the batch is tried again instead. */
    if (!adb_permanent(A->db) || sqlite3_get_autocommit(A->db)) return -1;
    log_error("approvals: the state file refuses %s (%s) for good: %s; it is dropped, and the file "
              "will not have it",
              op_what(op), op->kind == AOP_USE ? op->grant_id : op->r.id, sqlite3_errmsg(A->db));
    if (op->kind == AOP_END) report_end(op, out, "not written to the state file");
    return 0;
}

#define WRITE_ERROR_LOG_MS 60000 /* a write the file keeps refusing is logged once a minute */

/* A write failed: its message is kept in flush_errmsg either way, for approve_flush's callers.
 * The file stayed locked (past the busy wait): it is tried again, nothing to say (the statement
 * path refuses uses once it waits too long). Anything else (a full disk, an I/O error, a
 * read-only file) is remembered until a write goes through: meanwhile the statement path uses
 * no grant and makes no request (approve.c). Logged as an error when it starts, then once a
 * minute. */
static void write_failed(const char *what)
{
    char msg[sizeof A->write_errmsg];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(A->db));
    snprintf(A->flush_errmsg, sizeof A->flush_errmsg, "%s", msg);
    if (adb_busy(A->db)) return;
    int code = sqlite3_errcode(A->db);
    pthread_mutex_lock(&A->mu);
    bool first = !A->write_error;
    A->write_error = code ? code : SQLITE_ERROR;
    memcpy(A->write_errmsg, msg, sizeof msg);
    pthread_mutex_unlock(&A->mu);
    int64_t now = approve_mono_ms();
    if (first || now - A->write_error_logged >= WRITE_ERROR_LOG_MS) {
        A->write_error_logged = now;
        log_error("approvals: cannot write %s to the state file: %s. It stays queued and is "
                  "tried again; until the file takes it, no grant is used and no approval "
                  "request is made",
                  what, msg);
    }
}

/* The outcomes a batch found move to out once it is committed; a batch rolled back drops them
 * (its ops are written again, and find them again). */
static void outcomes_move(struct approve_outcomes *to, struct approve_outcomes *from)
{
    if (from->n) {
        to->v = xrealloc(to->v, sizeof *to->v * (to->n + from->n));
        memcpy(to->v + to->n, from->v, sizeof *from->v * from->n);
        to->n += from->n;
    }
    to->wake |= from->wake;
    free(from->v);
    *from = (struct approve_outcomes){0};
}

static void outcomes_drop(struct approve_outcomes *o)
{
    for (unsigned i = 0; i < o->n; i++)
        areq_free(&o->v[i].r);
    free(o->v);
    *o = (struct approve_outcomes){0};
}

/* One batch: the oldest FLUSH_BATCH_MAX ops (or fewer) in one transaction. 1 committed (the
 * ops leave the queue, their outcomes go to out), 0 the queue is empty, -1 not written: the
 * transaction is rolled back whole, and every op of it stays queued, in order, the first one
 * still first, to be tried again whole. Not the part written before the refusal: SQLite ends
 * the transaction itself on a full disk or an I/O error, and trying the whole batch again
 * keeps one rule, none of its ops is in the file until all are. */
static int flush_batch(struct approve_outcomes *out)
{
    pthread_mutex_lock(&A->mu);
    struct aop *op = amem_op_first(&A->mem);
    pthread_mutex_unlock(&A->mu);
    if (!op) return 0;
    const char *what = op_what(op);
    if (adb_begin(A->db) < 0) { /* the lock (after the busy wait), or a read-only file */
        write_failed(what);
        return -1;
    }
    struct approve_outcomes found = {0};
    unsigned n = 0;
    while (op && n < FLUSH_BATCH_MAX) {
        if (apply_op(op, &found) < 0) {
            what = op_what(op);
            goto fail;
        }
        n++;
        pthread_mutex_lock(&A->mu); /* a push behind it sets its next */
        op = op->next;
        pthread_mutex_unlock(&A->mu);
    }
    if (adb_commit(A->db) < 0) goto fail;
    pthread_mutex_lock(&A->mu);
    struct aop *done = NULL;
    for (unsigned i = 0; i < n; i++) { /* only the writer pops: these are the n written */
        struct aop *d = amem_op_pop(&A->mem);
        d->next = done;
        done = d;
    }
    bool recovered = A->write_error != 0;
    A->write_error = 0;
    pthread_mutex_unlock(&A->mu);
    if (recovered) log_info("approvals: the state file takes writes again");
    while (done) {
        struct aop *next = done->next;
        aop_free(done);
        done = next;
    }
    outcomes_move(out, &found);
    return 1;
fail:
    write_failed(what); /* (reads the error before the rollback replaces it) */
    adb_rollback(A->db);
    outcomes_drop(&found);
    return -1;
}

/* Write the queue to the file, in order, a batch at a time (approve_int.h). Each op stays in
 * the queue until its batch is committed, so that the statement path sees how long the file
 * has been behind, and how much it holds. */
int approve_flush(struct approve_outcomes *out)
{
    if (!A->db) return -1;
    int rc;
    while ((rc = flush_batch(out)) > 0)
        ;
    return rc;
}

/* Something was queued: the timer thread writes it now (without it, the CLI: this thread). */
void approve_kick(void)
{
    if (A->threads) {
        pthread_mutex_lock(&A->tmu);
        A->kicked = true;
        pthread_cond_signal(&A->tcond);
        pthread_mutex_unlock(&A->tmu);
        return;
    }
    struct approve_outcomes out = {0};
    pthread_mutex_lock(&A->dbmu);
    (void)approve_flush(&out);
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(&out);
}

/* ---- the file: decisions another process made (dbmu held) */

struct ids {
    char (*v)[APPROVE_ID_LEN];
    unsigned n;
};

static bool collect_pending(struct mreq *q, void *arg)
{
    struct ids *ids = arg;
    if (q->r.state == APPROVE_PENDING && !q->deciding) {
        ids->v = xrealloc(ids->v, sizeof *ids->v * (ids->n + 1));
        snprintf(ids->v[ids->n++], APPROVE_ID_LEN, "%s", q->r.id);
    }
    return false;
}

/* Requests pending here that another process decided (or ended) in the file. false when one
 * could not be read (the next tick reads them again). */
static bool watch_requests(int64_t now, struct approve_outcomes *out)
{
    bool ok = true;
    struct ids ids = {NULL, 0};
    pthread_mutex_lock(&A->mu);
    amem_req_each(&A->mem, collect_pending, &ids);
    pthread_mutex_unlock(&A->mu);
    for (unsigned i = 0; i < ids.n; i++) {
        struct areq f;
        int rc = adb_get_request(A->db, ids.v[i], &f);
        ok = ok && rc >= 0;
        if (rc != 0) continue; /* (none: its insert is still queued) */
        pthread_mutex_lock(&A->mu);
        struct mreq *q = amem_req_get(&A->mem, ids.v[i]);
        if (f.state != APPROVE_PENDING && q && q->r.state == APPROVE_PENDING && !q->deciding) {
            take_decision_locked(q, &f, now);
            approve_outcome_add(out, approve_event_of_state(f.state), &f,
                                "decided by another process");
            approve_count_pending_locked();
        }
        pthread_mutex_unlock(&A->mu);
        areq_free(&f);
    }
    free(ids.v);
    return ok;
}

struct expire_ctx {
    int64_t now;
    struct approve_outcomes *out;
};

static bool expire_one(struct mreq *q, void *arg)
{
    struct expire_ctx *e = arg;
    if (q->deciding) return false;
    if (q->r.state == APPROVE_PENDING && q->r.expires_at <= e->now)
        approve_end_locked(q, APPROVE_EXPIRED, NULL, e->now, e->out);
    return q->r.state != APPROVE_PENDING && q->r.decided_at + KEEP_DECIDED_MS <= e->now;
}

/* Pending requests past their deadline expire; decided requests and expired grants go. */
static void expire_due(int64_t now, struct approve_outcomes *out)
{
    struct expire_ctx e = {now, out};
    pthread_mutex_lock(&A->mu);
    amem_req_each(&A->mem, expire_one, &e);
    amem_grant_prune(&A->mem, now);
    approve_count_pending_locked();
    pthread_mutex_unlock(&A->mu);
}

/* ---- the timer thread */

/* One cycle at a time (the timer's, a test's tick): a tick returns once what was queued
 * before it is written and reported, whichever cycle wrote it. */
static pthread_mutex_t cycle_mu = PTHREAD_MUTEX_INITIALIZER;

/* Write the queue; on a tick also watch the file, expire, and write what that queued. */
static void cycle(bool tick)
{
    struct approve_outcomes out = {0};
    pthread_mutex_lock(&cycle_mu);
    pthread_mutex_lock(&A->dbmu);
    if (A->db) {
        bool flushed = approve_flush(&out) == 0;
        if (tick) {
            int64_t now = approve_now_ms();
            int64_t v = adb_data_version(A->db);
            if (v < 0 || v != A->data_version) /* another connection committed */
                A->data_version = watch_requests(now, &out) ? v : -1;
            expire_due(now, &out);
            if (flushed) (void)approve_flush(&out);
        }
    }
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(&out);
    pthread_mutex_unlock(&cycle_mu);
}

void approve_test_tick(void)
{
    cycle(true);
}

void *approve_timer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-expiry");
    int64_t last = 0;
    pthread_mutex_lock(&A->tmu);
    while (!A->stop) {
        A->kicked = false;
        pthread_mutex_unlock(&A->tmu);
        int64_t now = approve_mono_ms();
        bool tick = now - last >= TICK_MS;
        if (tick) last = now;
        cycle(tick);
        pthread_mutex_lock(&A->tmu);
        if (A->stop || A->kicked) continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&A->tcond, &A->tmu, &ts);
    }
    pthread_mutex_unlock(&A->tmu);
    return NULL;
}
