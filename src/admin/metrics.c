/*
 * metrics.c: the metrics registry behind metrics.h and its Prometheus text rendering.
 *
 * Storage is a fixed array of shards; a thread picks a shard the first time it counts
 * something and keeps it, so workers (one per core) each write their own cache lines with
 * relaxed atomic adds and never wait. A value is the sum over the shards plus, for gauges and
 * counters set from their source of truth, one global slot. Rendering walks a static table of
 * metric descriptions, so the exposition, docs/api.md and the enum stay in one order.
 */
#include "admin/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

enum lbl {
    L_NONE,
    L_KIND,
    L_DECISION,
    L_CLASS,
    L_DIRECTION,
    L_DETECTOR,
    L_OUTCOME,
    L_RESULT,
};

static const char *const lbl_key[] = {
    [L_NONE] = "",           [L_KIND] = "kind",           [L_DECISION] = "decision",
    [L_CLASS] = "class",     [L_DIRECTION] = "direction", [L_DETECTOR] = "detector",
    [L_OUTCOME] = "outcome", [L_RESULT] = "result",
};

static const unsigned lbl_card[] = {
    [L_NONE] = 1,
    [L_KIND] = CFG_KIND_COUNT,
    [L_DECISION] = METRICS_DECISION_COUNT,
    [L_CLASS] = CFG_CLASS_COUNT,
    [L_DIRECTION] = METRICS_DIRECTION_COUNT,
    [L_DETECTOR] = METRICS_MAX_DETECTORS + 1,
    [L_OUTCOME] = METRICS_OUTCOME_COUNT,
    [L_RESULT] = METRICS_RESULT_COUNT,
};

enum mtype { T_COUNTER, T_GAUGE };

struct mdef {
    const char *name;
    enum mtype type;
    enum lbl a, b;
    const char *help;
};

static const struct mdef defs[METRIC_COUNT] = {
    [M_CONNECTIONS_CURRENT] = {"sluice_connections_current", T_GAUGE, L_KIND, L_NONE,
                               "Client connections open now, by identity kind."},
    [M_CONNECTIONS_TOTAL] = {"sluice_connections_total", T_COUNTER, L_KIND, L_NONE,
                             "Client connections authenticated since start, by identity kind."},
    [M_AUTH_FAILURES] = {"sluice_auth_failures_total", T_COUNTER, L_NONE, L_NONE,
                         "Client authentication failures."},
    [M_STATEMENTS] = {"sluice_statements_total", T_COUNTER, L_DECISION, L_CLASS,
                      "Statements judged, by policy decision and statement class."},
    [M_ROWS] = {"sluice_rows_total", T_COUNTER, L_DIRECTION, L_NONE, "Rows relayed, by direction."},
    [M_BYTES] = {"sluice_bytes_total", T_COUNTER, L_DIRECTION, L_NONE,
                 "Protocol bytes relayed, by direction."},
    [M_MASKED_VALUES] = {"sluice_masked_values_total", T_COUNTER, L_DETECTOR, L_NONE,
                         "Values masked in results, by detector."},
    [M_APPROVALS_PENDING] = {"sluice_approvals_pending", T_GAUGE, L_NONE, L_NONE,
                             "Approval requests waiting for a decision."},
    [M_APPROVALS_DECIDED] = {"sluice_approvals_decided_total", T_COUNTER, L_OUTCOME, L_NONE,
                             "Approval requests decided, by outcome."},
    [M_AUDIT_QUEUE_DEPTH] = {"sluice_audit_queue_depth", T_GAUGE, L_NONE, L_NONE,
                             "Audit events queued for the writer."},
    [M_AUDIT_EVENTS_WRITTEN] = {"sluice_audit_events_written_total", T_COUNTER, L_NONE, L_NONE,
                                "Audit events committed to the store."},
    [M_AUDIT_WRITE_ERRORS] = {"sluice_audit_write_errors_total", T_COUNTER, L_NONE, L_NONE,
                              "Audit store write failures."},
    [M_AUDIT_EVENTS_LOST] = {"sluice_audit_events_lost_total", T_COUNTER, L_NONE, L_NONE,
                             "Audit events that could not be recorded (audit.fail: open)."},
    [M_UPSTREAM_CONNECT_ERRORS] = {"sluice_upstream_connect_errors_total", T_COUNTER, L_NONE,
                                   L_NONE, "Failed connections or logins to upstream targets."},
    [M_TLS_HANDSHAKES] = {"sluice_tls_handshakes_total", T_COUNTER, L_RESULT, L_NONE,
                          "Client-facing TLS handshakes, by result."},
    [M_ADMIN_SSE_CLIENTS] = {"sluice_admin_sse_clients", T_GAUGE, L_NONE, L_NONE,
                             "Clients connected to the live event stream."},
    [M_ADMIN_EVENTS_PUBLISHED] = {"sluice_admin_events_published_total", T_COUNTER, L_NONE, L_NONE,
                                  "Audit events published to the live event stream."},
    [M_ADMIN_SSE_DROPPED] = {"sluice_admin_sse_events_dropped_total", T_COUNTER, L_NONE, L_NONE,
                             "Live events a slow stream client missed."},
    [M_ADMIN_HTTP_REQUESTS] = {"sluice_admin_http_requests_total", T_COUNTER, L_RESULT, L_NONE,
                               "Admin HTTP requests, by result (failed: status 400 or more)."},
};

static const struct {
    const char *name;
    const char *help;
} hdefs[METRIC_HIST_COUNT] = {
    [H_STATEMENT_OVERHEAD] = {"sluice_statement_overhead_seconds",
                              "Time sluice itself spent on a statement (parse, policy, "
                              "masking, audit), excluding the upstream."},
    [H_UPSTREAM_LATENCY] = {"sluice_upstream_latency_seconds",
                            "Time from forwarding a statement to the upstream's completion."},
};

/* Upper bounds in nanoseconds; a last, implicit bucket is +Inf. */
static const uint64_t bucket_ns[] = {
    5000,      10000,     25000,      50000,      100000,     250000,      500000,
    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,    100000000,
    250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
#define NBUCKETS (sizeof bucket_ns / sizeof bucket_ns[0])
#define HIST_SLOTS (NBUCKETS + 3) /* buckets, +Inf, sum (ns), count */

#define NSHARDS 32

/* Offsets of each metric's slots, computed once at load time. */
static unsigned slot_off[METRIC_COUNT];
static unsigned n_metric_slots;
static unsigned hist_off;    /* first histogram slot */
static unsigned shard_slots; /* slots per shard, rounded up to a cache line */

/* Sized for the worst case; checked in metrics_layout(). */
#define MAX_SLOTS 512
struct shard {
    _Alignas(64) _Atomic uint64_t v[MAX_SLOTS];
};
static struct shard shards[NSHARDS];
static _Atomic uint64_t set_slots[MAX_SLOTS];

static atomic_uint next_shard;
static _Thread_local int my_shard = -1;

static pthread_mutex_t det_lock = PTHREAD_MUTEX_INITIALIZER;
static char *det_names[METRICS_MAX_DETECTORS];
static atomic_uint n_det;

__attribute__((constructor)) static void metrics_layout(void)
{
    unsigned off = 0;
    for (unsigned i = 0; i < METRIC_COUNT; i++) {
        slot_off[i] = off;
        off += lbl_card[defs[i].a] * lbl_card[defs[i].b];
    }
    n_metric_slots = off;
    hist_off = off;
    off += METRIC_HIST_COUNT * HIST_SLOTS;
    shard_slots = (off + 7) & ~7u;
    if (shard_slots > MAX_SLOTS) abort(); /* a new metric outgrew MAX_SLOTS: raise it */
}

static inline _Atomic uint64_t *shard_base(void)
{
    if (my_shard < 0)
        my_shard = (int)(atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) % NSHARDS);
    return shards[my_shard].v;
}

static inline int slot_of(enum metric_id id, unsigned a, unsigned b)
{
    if ((unsigned)id >= METRIC_COUNT) return -1;
    unsigned ca = lbl_card[defs[id].a], cb = lbl_card[defs[id].b];
    if (a >= ca || b >= cb) return -1;
    return (int)(slot_off[id] + a * cb + b);
}

void metrics_add(enum metric_id id, unsigned a, unsigned b, uint64_t n)
{
    int s = slot_of(id, a, b);
    if (s < 0) return;
    atomic_fetch_add_explicit(&shard_base()[s], n, memory_order_relaxed);
}

void metrics_gauge_add(enum metric_id id, unsigned a, unsigned b, int64_t delta)
{
    metrics_add(id, a, b, (uint64_t)delta); /* two's complement: sums come out right */
}

void metrics_set_gauge(enum metric_id id, unsigned a, unsigned b, int64_t value)
{
    int s = slot_of(id, a, b);
    if (s < 0) return;
    atomic_store_explicit(&set_slots[s], (uint64_t)value, memory_order_relaxed);
}

void metrics_set_counter(enum metric_id id, unsigned a, unsigned b, uint64_t value)
{
    metrics_set_gauge(id, a, b, (int64_t)value);
}

void metrics_observe_latency(enum metric_hist h, uint64_t ns)
{
    if ((unsigned)h >= METRIC_HIST_COUNT) return;
    unsigned i = 0;
    while (i < NBUCKETS && ns > bucket_ns[i])
        i++;
    _Atomic uint64_t *v = shard_base() + hist_off + h * HIST_SLOTS;
    atomic_fetch_add_explicit(&v[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&v[NBUCKETS + 1], ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&v[NBUCKETS + 2], 1, memory_order_relaxed);
}

unsigned metrics_register_detector(const char *name)
{
    if (!name) return METRICS_DETECTOR_OTHER;
    pthread_mutex_lock(&det_lock);
    unsigned n = atomic_load_explicit(&n_det, memory_order_relaxed);
    unsigned idx = METRICS_DETECTOR_OTHER;
    for (unsigned i = 0; i < n; i++)
        if (strcmp(det_names[i], name) == 0) idx = i;
    if (idx == METRICS_DETECTOR_OTHER && n < METRICS_MAX_DETECTORS) {
        det_names[n] = xstrdup(name);
        idx = n;
        atomic_store_explicit(&n_det, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&det_lock);
    return idx;
}

static uint64_t sum_slot(unsigned s)
{
    uint64_t v = atomic_load_explicit(&set_slots[s], memory_order_relaxed);
    for (unsigned i = 0; i < NSHARDS; i++)
        v += atomic_load_explicit(&shards[i].v[s], memory_order_relaxed);
    return v;
}

int64_t metrics_value(enum metric_id id, unsigned a, unsigned b)
{
    int s = slot_of(id, a, b);
    return s < 0 ? 0 : (int64_t)sum_slot((unsigned)s);
}

uint64_t metrics_hist_count(enum metric_hist h)
{
    if ((unsigned)h >= METRIC_HIST_COUNT) return 0;
    return sum_slot(hist_off + h * HIST_SLOTS + NBUCKETS + 2);
}

void metrics_reset(void)
{
    for (unsigned i = 0; i < NSHARDS; i++)
        for (unsigned s = 0; s < MAX_SLOTS; s++)
            atomic_store_explicit(&shards[i].v[s], 0, memory_order_relaxed);
    for (unsigned s = 0; s < MAX_SLOTS; s++)
        atomic_store_explicit(&set_slots[s], 0, memory_order_relaxed);
    pthread_mutex_lock(&det_lock);
    unsigned n = atomic_load(&n_det);
    atomic_store(&n_det, 0);
    for (unsigned i = 0; i < n; i++) {
        free(det_names[i]);
        det_names[i] = NULL;
    }
    pthread_mutex_unlock(&det_lock);
}

const char *metrics_decision_name(enum metrics_decision d)
{
    static const char *const n[] = {"allow", "deny", "review"};
    return (unsigned)d < METRICS_DECISION_COUNT ? n[d] : "unknown";
}

static const char *lbl_value(enum lbl l, unsigned i)
{
    static const char *const dir[] = {"to_client", "from_client"};
    static const char *const outcome[] = {"approved", "denied", "expired"};
    static const char *const result[] = {"ok", "failed"};
    switch (l) {
    case L_NONE:
        return "";
    case L_KIND:
        return ident_kind_name((enum ident_kind)i);
    case L_DECISION:
        return metrics_decision_name((enum metrics_decision)i);
    case L_CLASS:
        return cfg_class_name((enum cfg_class)i);
    case L_DIRECTION:
        return dir[i];
    case L_DETECTOR:
        return i < atomic_load_explicit(&n_det, memory_order_acquire) ? det_names[i] : "other";
    case L_OUTCOME:
        return outcome[i];
    case L_RESULT:
        return result[i];
    }
    return "";
}

/* ---- rendering */

struct sb {
    char *p;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sb *s, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        s->cap = s->cap * 2 + (size_t)n + 64;
        s->p = xrealloc(s->p, s->cap);
    }
}

/* A label value, escaped as the exposition format wants (backslash, quote, newline). */
static void sb_label(struct sb *s, const char *key, const char *val)
{
    sb_printf(s, "%s=\"", key);
    for (const char *c = val; *c; c++) {
        if (*c == '\\')
            sb_printf(s, "\\\\");
        else if (*c == '"')
            sb_printf(s, "\\\"");
        else if (*c == '\n')
            sb_printf(s, "\\n");
        else
            sb_printf(s, "%c", *c);
    }
    sb_printf(s, "\"");
}

static void render_metric(struct sb *s, enum metric_id id)
{
    const struct mdef *d = &defs[id];
    sb_printf(s, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
              d->type == T_COUNTER ? "counter" : "gauge");
    unsigned ca = lbl_card[d->a], cb = lbl_card[d->b];
    unsigned ndet = atomic_load_explicit(&n_det, memory_order_acquire);
    for (unsigned a = 0; a < ca; a++) {
        uint64_t first = 0;
        if (d->a == L_DETECTOR && a >= ndet) {
            /* unregistered slots: only "other", and only when something landed there */
            if (a != METRICS_DETECTOR_OTHER) continue;
            first = sum_slot(slot_off[id] + a * cb);
            if (first == 0) continue;
        }
        for (unsigned b = 0; b < cb; b++) {
            uint64_t v = sum_slot(slot_off[id] + a * cb + b);
            sb_printf(s, "%s", d->name);
            if (d->a != L_NONE) {
                sb_printf(s, "{");
                sb_label(s, lbl_key[d->a], lbl_value(d->a, a));
                if (d->b != L_NONE) {
                    sb_printf(s, ",");
                    sb_label(s, lbl_key[d->b], lbl_value(d->b, b));
                }
                sb_printf(s, "}");
            }
            if (d->type == T_GAUGE)
                sb_printf(s, " %lld\n", (long long)(int64_t)v);
            else
                sb_printf(s, " %llu\n", (unsigned long long)v);
        }
    }
}

static void render_hist(struct sb *s, enum metric_hist h)
{
    const char *name = hdefs[h].name;
    unsigned base = hist_off + h * HIST_SLOTS;
    sb_printf(s, "# HELP %s %s\n# TYPE %s histogram\n", name, hdefs[h].help, name);
    uint64_t cum = 0;
    for (unsigned i = 0; i <= NBUCKETS; i++) {
        cum += sum_slot(base + i);
        if (i < NBUCKETS)
            sb_printf(s, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bucket_ns[i] / 1e9,
                      (unsigned long long)cum);
        else
            sb_printf(s, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    /* count is read after the buckets; the +Inf bucket is the count the scrape saw */
    sb_printf(s, "%s_sum %.9f\n", name, (double)sum_slot(base + NBUCKETS + 1) / 1e9);
    sb_printf(s, "%s_count %llu\n", name, (unsigned long long)cum);
}

char *metrics_render(void)
{
    struct sb s = {.p = xmalloc(8192), .len = 0, .cap = 8192};
    s.p[0] = '\0';
    for (unsigned i = 0; i < METRIC_COUNT; i++)
        render_metric(&s, (enum metric_id)i);
    for (unsigned h = 0; h < METRIC_HIST_COUNT; h++)
        render_hist(&s, (enum metric_hist)h);
    return s.p;
}
