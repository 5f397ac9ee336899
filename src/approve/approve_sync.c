/*
 * approve_sync.c: the approvals' own thread, between memory and the state file.
 *
 * It writes the queue of changes memory made (a new request, a request cancelled or expired,
 * a grant's use) to the file in order, as soon as it is woken (approve_kick) or as the file
 * allows: a write the file refuses because another connection holds its lock is kept, first,
 * and tried again. Every 100 ms it also expires the requests past their deadline and, when
 * the file says another connection committed (PRAGMA data_version), reads the requests still
 * pending here that another process (the CLI) decided. It holds the file lock (dbmu) while it
 * works and the memory lock (mu) only for each step of memory work; approve.c says why.
 *
 * What it leaves to others: approve.c makes the changes and reports the outcomes; decisions
 * are written by approve_decide.c, which writes the queue first too.
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

static struct approve_module *const A = &approve_m;

/* ---- the file: queued writes (dbmu held) */

/* The END of a request found it not pending in the file: another process decided it first
 * (the CLI, just before it expired or its session ended here). Its decision stands. */
static void end_lost(const struct aop *op)
{
    struct areq f;
    if (adb_get_request(A->db, op->r.id, &f) != 0) {
        log_warn("approvals: request %s is not in the state file; it was %s here", op->r.id,
                 approve_state_name(op->r.state));
        return;
    }
    if (f.state != APPROVE_PENDING && f.state != op->r.state) {
        log_warn("approvals: request %s was %s by %s in the state file before it was %s here", f.id,
                 approve_state_name(f.state), f.approver ? f.approver : "another process",
                 approve_state_name(op->r.state));
        struct sluice_config *cfg = A->threads ? approve_cfg_ref() : NULL;
        approve_report_one(approve_event_of_state(f.state), &f, "decided by another process", cfg);
        if (cfg) config_unref(cfg);
    }
    areq_free(&f);
}

/* 0 done (or failed for good: logged), -1 the file stayed locked: try again later. */
static int apply_op(const struct aop *op)
{
    int rc = -1;
    const char *what = "a new request";
    switch (op->kind) {
    case AOP_INSERT:
        rc = adb_insert_request(A->db, &op->r);
        break;
    case AOP_END:
        what = "a request's end";
        rc = adb_set_decision(A->db, op->r.id, op->r.state, NULL, op->r.decision_reason, NULL,
                              op->r.decided_at);
        if (rc == 0) end_lost(op);
        break;
    case AOP_USE:
        what = "a grant's use";
        rc = adb_record_use(A->db, op->grant_id, op->rows);
        break;
    }
    if (rc >= 0) return 0;
    if (adb_busy(A->db)) return -1;
    log_warn("approvals: cannot write %s to the state file: %s", what, sqlite3_errmsg(A->db));
    return 0;
}

/* Write the queue to the file, in order: 0 when it is empty, -1 when the file stayed locked
 * (the rest stays queued, first). */
int approve_flush(void)
{
    if (!A->db) return -1;
    pthread_mutex_lock(&A->mu);
    struct aop *list = amem_ops_take(&A->mem);
    pthread_mutex_unlock(&A->mu);
    while (list) {
        if (apply_op(list) < 0) {
            pthread_mutex_lock(&A->mu);
            amem_ops_putback(&A->mem, list);
            pthread_mutex_unlock(&A->mu);
            return -1;
        }
        struct aop *next = list->next;
        aop_free(list);
        list = next;
    }
    return 0;
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
    pthread_mutex_lock(&A->dbmu);
    (void)approve_flush();
    pthread_mutex_unlock(&A->dbmu);
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
            q->r.state = f.state;
            q->r.decided_at = f.decided_at ? f.decided_at : now;
            char **mine[] = {&q->r.approver, &q->r.decision_reason, &q->r.grant_id};
            const char *theirs[] = {f.approver, f.decision_reason, f.grant_id};
            for (int k = 0; k < 3; k++) {
                free(*mine[k]);
                *mine[k] = xstrdup(theirs[k]);
            }
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

/* Write the queue; on a tick also watch the file, expire, and write what that queued. */
static void cycle(bool tick)
{
    struct approve_outcomes out = {NULL, 0};
    pthread_mutex_lock(&A->dbmu);
    if (A->db) {
        bool flushed = approve_flush() == 0;
        if (tick) {
            int64_t now = approve_now_ms();
            int64_t v = adb_data_version(A->db);
            if (v < 0 || v != A->data_version) /* another connection committed */
                A->data_version = watch_requests(now, &out) ? v : -1;
            expire_due(now, &out);
            if (flushed) (void)approve_flush();
        }
    }
    pthread_mutex_unlock(&A->dbmu);
    approve_outcomes_report(&out);
}

void approve_test_tick(void)
{
    cycle(true);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
        int64_t now = mono_ms();
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
