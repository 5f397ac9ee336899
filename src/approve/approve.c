/*
 * approve.c: approval requests, decisions, grants and their bounds, expiry and wakeups.
 *
 * One process-wide instance: a mutex around one SQLite connection (approve_db.c), the config
 * snapshot it was started with, the eventfds to wake, and a timer thread that every 100 ms
 * expires pending requests past their deadline and looks in the file for decisions another
 * process (the CLI) made on requests still pending here. Notifications are queued to the
 * notifier thread (notify.c); nothing here does network I/O or runs on a worker's loop for
 * longer than one indexed SQLite statement.
 *
 * What it leaves to others: the relay parks and resumes connections and decides wait vs defer
 * from the returned status; src/admin authenticates approvers before calling approve_decide().
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "approve/approve_int.h"
#include "core/buf.h"
#include "core/log.h"

#define DEFAULT_TIMEOUT 600
#define DEFAULT_GRANT_TTL 86400
#define DEFAULT_GRANT_USES 100
#define TICK_MS 100

static struct {
    pthread_mutex_t mu; /* db, cfg, tracked */
    sqlite3 *db;
    struct sluice_config *cfg;
    char (*tracked)[APPROVE_ID_LEN]; /* pending requests whose outcome we have not seen */
    unsigned n_tracked;

    bool threads;
    pthread_t timer;
    pthread_mutex_t tmu;
    pthread_cond_t tcond;
    bool stop;

    pthread_mutex_t smu;
    int subs[APPROVE_MAX_SUBSCRIBERS];
    unsigned n_subs;
} A = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .tmu = PTHREAD_MUTEX_INITIALIZER,
    .tcond = PTHREAD_COND_INITIALIZER,
    .smu = PTHREAD_MUTEX_INITIALIZER,
};

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

void approve_test_set_clock(int64_t (*now_ms)(void))
{
    atomic_store(&test_clock, now_ms);
}

void approve_test_set_backoff_ms(unsigned base_ms)
{
    notify_set_backoff_ms(base_ms);
}

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
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
    pthread_mutex_lock(&A.smu);
    bool have = false;
    for (unsigned i = 0; i < A.n_subs; i++)
        have |= A.subs[i] == efd;
    if (!have && A.n_subs < APPROVE_MAX_SUBSCRIBERS) A.subs[A.n_subs++] = efd;
    pthread_mutex_unlock(&A.smu);
}

void approve_unsubscribe(int efd)
{
    pthread_mutex_lock(&A.smu);
    for (unsigned i = 0; i < A.n_subs; i++)
        if (A.subs[i] == efd) {
            A.subs[i] = A.subs[--A.n_subs];
            break;
        }
    pthread_mutex_unlock(&A.smu);
}

static void wake_subscribers(void)
{
    pthread_mutex_lock(&A.smu);
    for (unsigned i = 0; i < A.n_subs; i++) {
        uint64_t one = 1;
        ssize_t n;
        do
            n = write(A.subs[i], &one, sizeof one);
        while (n < 0 && errno == EINTR);
        /* EAGAIN: the counter is already non-zero, the reader will wake anyway. */
    }
    pthread_mutex_unlock(&A.smu);
}

/* ---- tracked pending ids (A.mu held) */

static void track(const char *id)
{
    A.tracked = xrealloc(A.tracked, sizeof *A.tracked * (A.n_tracked + 1));
    snprintf(A.tracked[A.n_tracked++], APPROVE_ID_LEN, "%s", id);
}

static void untrack(const char *id)
{
    for (unsigned i = 0; i < A.n_tracked; i++)
        if (!strcmp(A.tracked[i], id)) {
            memcpy(A.tracked[i], A.tracked[--A.n_tracked], APPROVE_ID_LEN);
            return;
        }
}

static void refresh_pending(void)
{
    int64_t n = adb_count_pending(A.db);
    if (n >= 0) atomic_store(&C.pending, (unsigned long long)n);
}

/* ---- lifecycle */

static void *timer_main(void *arg);

static int open_common(const struct sluice_config *cfg, char *err, size_t errlen)
{
    if (A.db) {
        fail(err, errlen, "approvals already started");
        return -1;
    }
    const char *path = cfg->state.path && *cfg->state.path ? cfg->state.path : "sluice.db";
    if (cfg->state.driver != CFG_STATE_SQLITE) {
        fail(err, errlen, "approvals: state.driver postgres is not supported yet (use sqlite)");
        return -1;
    }
    A.db = adb_open(path, err, errlen);
    if (!A.db) return -1;
    A.cfg = config_ref((struct sluice_config *)cfg);
    refresh_pending();
    return 0;
}

int approve_open(const struct sluice_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&A.mu);
    int rc = open_common(cfg, err, errlen);
    pthread_mutex_unlock(&A.mu);
    return rc;
}

int approve_start(const struct sluice_config *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&A.mu);
    if (open_common(cfg, err, errlen) < 0) {
        pthread_mutex_unlock(&A.mu);
        return -1;
    }
    /* Everything pending in the file is ours to expire and to watch. */
    char(*ids)[APPROVE_ID_LEN] = NULL;
    unsigned n = 0;
    if (adb_pending_ids(A.db, &ids, &n) == 0)
        for (unsigned i = 0; i < n; i++)
            track(ids[i]);
    free(ids);
    pthread_mutex_unlock(&A.mu);

    if (notify_start(err, errlen) < 0) goto fail;
    A.stop = false;
    if (pthread_create(&A.timer, NULL, timer_main, NULL) != 0) {
        fail(err, errlen, "approvals: cannot start the timer thread");
        notify_stop();
        goto fail;
    }
    A.threads = true;
    return 0;
fail:
    approve_stop();
    return -1;
}

void approve_stop(void)
{
    if (A.threads) {
        pthread_mutex_lock(&A.tmu);
        A.stop = true;
        pthread_cond_signal(&A.tcond);
        pthread_mutex_unlock(&A.tmu);
        pthread_join(A.timer, NULL);
        notify_stop();
        A.threads = false;
    }
    pthread_mutex_lock(&A.mu);
    if (A.db) adb_close(A.db);
    A.db = NULL;
    if (A.cfg) config_unref(A.cfg);
    A.cfg = NULL;
    free(A.tracked);
    A.tracked = NULL;
    A.n_tracked = 0;
    pthread_mutex_unlock(&A.mu);
}

void approve_reload(const struct sluice_config *cfg)
{
    pthread_mutex_lock(&A.mu);
    if (A.cfg) {
        struct sluice_config *old = A.cfg;
        A.cfg = config_ref((struct sluice_config *)cfg);
        config_unref(old);
    }
    pthread_mutex_unlock(&A.mu);
}

/* The config snapshot in use, with a reference the caller drops (NULL when not started). */
static struct sluice_config *cfg_get(void)
{
    pthread_mutex_lock(&A.mu);
    struct sluice_config *c = A.cfg ? config_ref(A.cfg) : NULL;
    pthread_mutex_unlock(&A.mu);
    return c;
}

/* ---- timer thread */

static void on_expired(const struct areq *r, void *arg)
{
    bool *changed = arg;
    *changed = true;
    untrack(r->id);
    atomic_fetch_add(&C.expired, 1);
    struct approve_audit ev;
    event_from_req(&ev, APPROVE_EV_EXPIRED, r);
    approve_emit(&ev);
    if (A.threads) notify_outcome(A.cfg, "approval.expired", r);
}

static void tick(void)
{
    bool changed = false;
    pthread_mutex_lock(&A.mu);
    /* Every pending request of the file is tracked (approve_start, approve_request): with none
     * tracked there is nothing to expire or watch, and no statement (the expiry is a write
     * transaction) runs against the store every tick. */
    if (!A.db || A.n_tracked == 0) {
        pthread_mutex_unlock(&A.mu);
        return;
    }
    if (adb_expire(A.db, approve_now_ms(), on_expired, &changed) < 0)
        log_warn("approvals: expiring requests failed: %s", sqlite3_errmsg(A.db));
    /* Outcomes decided by another process (the CLI) on requests we still watch. */
    for (unsigned i = 0; i < A.n_tracked;) {
        struct areq r;
        int rc = adb_get_request(A.db, A.tracked[i], &r);
        if (rc == 1) {
            untrack(A.tracked[i]);
            continue;
        }
        if (rc < 0) break;
        if (r.state == APPROVE_PENDING) {
            areq_free(&r);
            i++;
            continue;
        }
        changed = true;
        enum approve_event type = r.state == APPROVE_APPROVED  ? APPROVE_EV_APPROVED
                                  : r.state == APPROVE_DENIED  ? APPROVE_EV_DENIED
                                  : r.state == APPROVE_EXPIRED ? APPROVE_EV_EXPIRED
                                                               : APPROVE_EV_CANCELLED;
        atomic_fetch_add(r.state == APPROVE_APPROVED  ? &C.approved
                         : r.state == APPROVE_DENIED  ? &C.denied
                         : r.state == APPROVE_EXPIRED ? &C.expired
                                                      : &C.cancelled,
                         1);
        if (r.state == APPROVE_APPROVED || r.state == APPROVE_DENIED)
            atomic_fetch_add(&C.decided, 1);
        struct approve_audit ev;
        event_from_req(&ev, type, &r);
        ev.detail = "decided by another process";
        approve_emit(&ev);
        if (A.threads) {
            char type_name[40];
            snprintf(type_name, sizeof type_name, "approval.%s", approve_state_name(r.state));
            notify_outcome(A.cfg, type_name, &r);
        }
        untrack(r.id);
        areq_free(&r);
    }
    refresh_pending();
    pthread_mutex_unlock(&A.mu);
    if (changed) wake_subscribers();
}

void approve_test_tick(void)
{
    tick();
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-expiry");
    pthread_mutex_lock(&A.tmu);
    while (!A.stop) {
        pthread_mutex_unlock(&A.tmu);
        tick();
        pthread_mutex_lock(&A.tmu);
        if (A.stop) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&A.tcond, &A.tmu, &ts);
    }
    pthread_mutex_unlock(&A.tmu);
    return NULL;
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
        fail(err, errlen, "approval request needs identity, target, statement and fingerprint");
        return -1;
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

    int ret = -1;
    pthread_mutex_lock(&A.mu);
    if (!A.db) {
        pthread_mutex_unlock(&A.mu);
        fail(err, errlen, "approvals are not started");
        goto out;
    }
    const struct cfg_approvals *ac = &A.cfg->approvals;
    r.mode = ask->mode != CFG_MODE_DEFAULT  ? ask->mode
             : ac->mode != CFG_MODE_DEFAULT ? ac->mode
             : ask->kind == IDENT_HUMAN     ? CFG_MODE_WAIT
                                            : CFG_MODE_DEFER;
    r.created_at = approve_now_ms();
    r.expires_at = r.created_at + (int64_t)(ac->timeout ? ac->timeout : DEFAULT_TIMEOUT) * 1000;
    if (adb_insert_request(A.db, &r) < 0) {
        fail(err, errlen, "approvals: cannot store the request: %s", sqlite3_errmsg(A.db));
        pthread_mutex_unlock(&A.mu);
        goto out;
    }
    track(r.id);
    atomic_fetch_add(&C.requested, 1);
    atomic_fetch_add(&C.pending, 1);
    if (A.threads) notify_request(A.cfg, &r);
    pthread_mutex_unlock(&A.mu);

    struct approve_audit ev;
    event_from_req(&ev, APPROVE_EV_REQUESTED, &r);
    ev.detail = r.mode == CFG_MODE_WAIT ? "wait" : "defer";
    approve_emit(&ev);
    snprintf(id_out, APPROVE_ID_LEN, "%s", r.id);
    ret = 0;
out:
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

int approve_decide_ex(const char *id, const struct approve_decision *d,
                      char grant_id_out[APPROVE_ID_LEN], char *err, size_t errlen)
{
    if (grant_id_out) grant_id_out[0] = '\0';
    if (!id || !d || !d->approver || !*d->approver) {
        fail(err, errlen, "a decision needs a request id and an approver");
        return -1;
    }
    struct areq r;
    memset(&r, 0, sizeof r);
    char grant_id[APPROVE_ID_LEN] = "";
    char *groups_pick = NULL;
    int ret = -1;
    bool locked = false, in_tx = false;

    pthread_mutex_lock(&A.mu);
    locked = true;
    if (!A.db) {
        fail(err, errlen, "approvals are not started");
        goto out;
    }
    int64_t now = approve_now_ms();
    int rc = adb_get_request(A.db, id, &r);
    if (rc != 0) {
        fail(err, errlen, rc > 0 ? "no approval request %s" : "approvals: cannot read request %s",
             id);
        ret = rc > 0 ? APPROVE_ERR_NOT_FOUND : APPROVE_ERR;
        goto out;
    }
    if (r.state != APPROVE_PENDING) {
        fail(err, errlen, "request %s is %s, not pending", id, approve_state_name(r.state));
        ret = APPROVE_ERR_CONFLICT;
        goto out;
    }
    if (r.expires_at <= now) {
        fail(err, errlen, "request %s has expired", id);
        ret = APPROVE_ERR_CONFLICT;
        goto out;
    }
    if (approve_same_person(d->approver, r.identity)) {
        fail(err, errlen, "%s cannot decide their own request %s", d->approver, id);
        ret = APPROVE_ERR_FORBIDDEN;
        goto out;
    }
    const struct cfg_approvals *ac = &A.cfg->approvals;
    if (!d->trusted) {
        bool ok = false;
        for (unsigned i = 0; i < d->n_approver_groups && !ok; i++)
            ok = d->approver_groups[i] &&
                 in_list(d->approver_groups[i], ac->approvers, ac->n_approvers);
        if (!ok) {
            fail(err, errlen, "%s is not an approver (approvals.approvers.groups)", d->approver);
            ret = APPROVE_ERR_FORBIDDEN;
            goto out;
        }
    }

    if (adb_begin(A.db) < 0) {
        fail(err, errlen, "approvals: %s", sqlite3_errmsg(A.db));
        goto out;
    }
    in_tx = true;
    if (d->approve) {
        struct agrant g;
        memset(&g, 0, sizeof g);
        g.scope = d->scope;
        if (d->scope == APPROVE_SCOPE_GROUP) {
            cJSON *groups = cJSON_Parse(r.groups_json ? r.groups_json : "[]");
            int n = cJSON_GetArraySize(groups);
            for (int i = 0; i < n && !groups_pick; i++) {
                const char *gname = cJSON_GetStringValue(cJSON_GetArrayItem(groups, i));
                if (gname && (!d->group || !strcmp(d->group, gname))) groups_pick = xstrdup(gname);
            }
            cJSON_Delete(groups);
            if (!groups_pick) {
                if (d->group)
                    fail(err, errlen, "%s is not in group %s", r.identity, d->group);
                else
                    fail(err, errlen, "%s is in no group: a group grant is not possible",
                         r.identity);
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
        g.identity = r.identity;
        g.target = r.target;
        g.fingerprint = r.fingerprint;
        g.approver = d->approver;
        g.request_id = r.id;
        g.created_at = now;
        g.expires_at = now + (int64_t)ttl * 1000;
        g.max_uses = uses;
        g.max_rows = rows;
        if (adb_insert_grant(A.db, &g) < 0) {
            fail(err, errlen, "approvals: cannot store the grant: %s", sqlite3_errmsg(A.db));
            goto out;
        }
    }
    rc = adb_set_decision(A.db, id, d->approve ? APPROVE_APPROVED : APPROVE_DENIED, d->approver,
                          d->reason, d->approve ? grant_id : NULL, now);
    if (rc <= 0) {
        fail(err, errlen, rc == 0 ? "request %s is no longer pending" : "approvals: %s",
             rc == 0 ? id : sqlite3_errmsg(A.db));
        ret = rc == 0 ? APPROVE_ERR_CONFLICT : APPROVE_ERR;
        goto out;
    }
    if (adb_commit(A.db) < 0) {
        fail(err, errlen, "approvals: %s", sqlite3_errmsg(A.db));
        goto out;
    }
    in_tx = false;
    untrack(id);
    refresh_pending();
    r.state = d->approve ? APPROVE_APPROVED : APPROVE_DENIED;
    free(r.approver);
    r.approver = xstrdup(d->approver);
    free(r.decision_reason);
    r.decision_reason = xstrdup(d->reason);
    free(r.grant_id);
    r.grant_id = d->approve ? xstrdup(grant_id) : NULL;
    if (A.threads) notify_outcome(A.cfg, d->approve ? "approval.approved" : "approval.denied", &r);
    pthread_mutex_unlock(&A.mu);
    locked = false;

    atomic_fetch_add(&C.decided, 1);
    atomic_fetch_add(d->approve ? &C.approved : &C.denied, 1);
    struct approve_audit ev;
    event_from_req(&ev, d->approve ? APPROVE_EV_APPROVED : APPROVE_EV_DENIED, &r);
    ev.detail = d->approve ? approve_scope_name(d->scope) : NULL;
    approve_emit(&ev);
    wake_subscribers();
    if (grant_id_out && d->approve) snprintf(grant_id_out, APPROVE_ID_LEN, "%s", grant_id);
    ret = 0;
out:
    if (in_tx) adb_rollback(A.db);
    if (locked) pthread_mutex_unlock(&A.mu);
    free(groups_pick);
    areq_free(&r);
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

int approve_state(const char *id, struct approve_status *out)
{
    memset(out, 0, sizeof *out);
    if (!id) return -1;
    struct areq r;
    pthread_mutex_lock(&A.mu);
    int rc = A.db ? adb_get_request(A.db, id, &r) : -1;
    pthread_mutex_unlock(&A.mu);
    if (rc != 0) return -1;
    out->state = r.state;
    /* Past its deadline it is expired, whether or not the timer has marked it yet. */
    if (r.state == APPROVE_PENDING && r.expires_at <= approve_now_ms())
        out->state = APPROVE_EXPIRED;
    snprintf(out->identity, sizeof out->identity, "%s", r.identity ? r.identity : "");
    snprintf(out->approver, sizeof out->approver, "%s", r.approver ? r.approver : "");
    snprintf(out->grant_id, sizeof out->grant_id, "%s", r.grant_id ? r.grant_id : "");
    snprintf(out->reason, sizeof out->reason, "%s", r.decision_reason ? r.decision_reason : "");
    out->created_at = r.created_at;
    out->expires_at = r.expires_at;
    out->decided_at = r.decided_at;
    out->mode = r.mode;
    areq_free(&r);
    return 0;
}

void approve_cancel(const char *id, const char *reason)
{
    if (!id) return;
    struct areq r;
    memset(&r, 0, sizeof r);
    pthread_mutex_lock(&A.mu);
    int changed =
        A.db ? adb_set_decision(A.db, id, APPROVE_CANCELLED, NULL, reason, NULL, approve_now_ms())
             : -1;
    if (changed == 1) {
        untrack(id);
        refresh_pending();
        if (adb_get_request(A.db, id, &r) != 0) memset(&r, 0, sizeof r);
        if (A.threads && r.id) notify_outcome(A.cfg, "approval.cancelled", &r);
    }
    pthread_mutex_unlock(&A.mu);
    if (changed != 1) return;
    atomic_fetch_add(&C.cancelled, 1);
    if (r.id) {
        struct approve_audit ev;
        event_from_req(&ev, APPROVE_EV_CANCELLED, &r);
        approve_emit(&ev);
    }
    areq_free(&r);
    wake_subscribers();
}

/* ---- grants */

bool approve_grant_find(const char *identity, const char **groups, unsigned n, const char *target,
                        const char *fingerprint, struct approve_grant *out)
{
    if (!identity || !target || !fingerprint) return false;
    pthread_mutex_lock(&A.mu);
    int rc =
        A.db ? adb_find_grant(A.db, identity, groups, n, target, fingerprint, approve_now_ms(), out)
             : -1;
    pthread_mutex_unlock(&A.mu);
    return rc == 0;
}

bool approve_grant_live(const char *grant_id, struct approve_grant *out)
{
    if (!grant_id) return false;
    pthread_mutex_lock(&A.mu);
    bool live = A.db && adb_get_live_grant(A.db, grant_id, approve_now_ms(), out) == 0;
    pthread_mutex_unlock(&A.mu);
    return live;
}

int approve_grant_use(const char *grant_id, uint64_t rows, struct approve_grant *out)
{
    if (!grant_id) return -1;
    struct approve_grant g;
    pthread_mutex_lock(&A.mu);
    int left = A.db ? adb_use_grant(A.db, grant_id, rows, approve_now_ms(), &g) : -1;
    pthread_mutex_unlock(&A.mu);
    if (left < 0) return -1;
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
    pthread_mutex_lock(&A.mu);
    int rc = A.db ? adb_revoke_grant(A.db, grant_id, by, approve_now_ms()) : -1;
    pthread_mutex_unlock(&A.mu);
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

/* ---- listings */

char *approve_list_json(const char *state_filter)
{
    int st = -1;
    if (state_filter && *state_filter && strcmp(state_filter, "all") != 0) {
        st = approve_state_from_name(state_filter);
        if (st < 0) return NULL;
    }
    pthread_mutex_lock(&A.mu);
    char *s = A.db ? adb_requests_json(A.db, st) : NULL;
    pthread_mutex_unlock(&A.mu);
    return s;
}

char *approve_grants_json_all(bool all)
{
    pthread_mutex_lock(&A.mu);
    char *s = A.db ? adb_grants_json(A.db, all, approve_now_ms()) : NULL;
    pthread_mutex_unlock(&A.mu);
    return s;
}

char *approve_grants_json(void)
{
    return approve_grants_json_all(false);
}

char *approve_request_json(const char *id)
{
    if (!id) return NULL;
    pthread_mutex_lock(&A.mu);
    char *s = A.db ? adb_request_json(A.db, id) : NULL;
    pthread_mutex_unlock(&A.mu);
    return s;
}

/* ---- the Slack callback */

int approve_slack_action(const char *timestamp, const char *signature, const char *body,
                         size_t body_len, char *msg, size_t msglen)
{
    struct sluice_config *cfg = cfg_get();
    int status = 401;
    if (!cfg) {
        fail(msg, msglen, "approvals are not started");
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
        fail(msg, msglen,
             have_secret ? "invalid or stale Slack signature"
                         : "no Slack signing secret is configured");
        return 401;
    }
    struct slack_action act;
    char err[256];
    if (slack_parse_action(body, body_len, &act, err, sizeof err) < 0) {
        config_unref(cfg);
        fail(msg, msglen, "bad Slack payload: %s", err);
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
            fail(msg, msglen,
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
        fail(msg, msglen, "%s", err);
        status = rc == APPROVE_ERR_NOT_FOUND   ? 404
                 : rc == APPROVE_ERR_FORBIDDEN ? 403
                 : rc == APPROVE_ERR_CONFLICT  ? 409
                                               : 500;
    } else {
        if (act.approve)
            fail(msg, msglen, "Request %s approved by %s (grant %s)", act.request_id, approver,
                 grant);
        else
            fail(msg, msglen, "Request %s denied by %s", act.request_id, approver);
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
        if (b && A.threads) notify_post(act.response_url, b);
        free(b);
    }
    return status;
}
