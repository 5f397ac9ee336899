/*
 * metrics.h: sluice's Prometheus metrics registry, written from worker threads without locks.
 *
 * Every metric is a fixed entry of enum metric_id with at most two labels, each from a fixed
 * label set (identity kind, decision, statement class, direction, approval outcome, handshake
 * result) or from the detector names the masking database registers at startup. Values live
 * in per-thread shards of relaxed atomics: a worker only ever touches its own cache lines, and
 * metrics_render() (the /metrics scrape, on the admin thread) sums the shards. Histograms have
 * fixed latency buckets from 5 microseconds to 10 seconds.
 *
 * Gauges come in two flavours: additive ones (connections current: +1 on open, -1 on close,
 * from any thread) through metrics_gauge_add(), and ones set from their source of truth
 * (audit queue depth, approvals pending) through metrics_set_gauge(), typically from the admin
 * hook `scrape` right before rendering. Use one flavour per gauge. Counters kept elsewhere
 * (the audit writer's event count) are mirrored with metrics_set_counter() the same way.
 *
 * What it leaves to others: deciding what to count (the relay, the audit writer, approvals)
 * and serving the text (src/admin/admin.c).
 *
 * Ownership: metrics_render() returns a malloc'd string the caller frees. Names passed to
 * metrics_register_detector() are copied.
 */
#ifndef SLUICE_ADMIN_METRICS_H
#define SLUICE_ADMIN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* Label sets. Kind uses enum ident_kind (human, service, agent) and class uses enum
 * cfg_class (read ... utility) from core/config.h; the others are below. */
enum metrics_decision {
    METRICS_ALLOW, /* includes policy mask/unmask: the statement ran */
    METRICS_DENY,
    METRICS_REVIEW, /* sent for approval */
    METRICS_DECISION_COUNT,
};

enum metrics_direction {
    METRICS_TO_CLIENT,   /* upstream -> client (rows returned, COPY OUT) */
    METRICS_FROM_CLIENT, /* client -> upstream (COPY IN, query bytes) */
    METRICS_DIRECTION_COUNT,
};

enum metrics_outcome {
    METRICS_APPROVED,
    METRICS_DENIED,
    METRICS_EXPIRED,
    METRICS_OUTCOME_COUNT,
};

enum metrics_result {
    METRICS_OK,
    METRICS_FAILED,
    METRICS_RESULT_COUNT,
};

/* Detector labels: up to METRICS_MAX_DETECTORS names, plus "other" for any beyond. */
#define METRICS_MAX_DETECTORS 64
#define METRICS_DETECTOR_OTHER METRICS_MAX_DETECTORS

/* The metrics. The comment gives the Prometheus name, type and the labels (a, b) that the
 * calls below take in that order; unlabelled metrics ignore a and b (pass 0). */
enum metric_id {
    M_CONNECTIONS_CURRENT,     /* sluice_connections_current gauge(add) {kind} */
    M_CONNECTIONS_TOTAL,       /* sluice_connections_total counter {kind} */
    M_AUTH_FAILURES,           /* sluice_auth_failures_total counter */
    M_STATEMENTS,              /* sluice_statements_total counter {decision, class} */
    M_ROWS,                    /* sluice_rows_total counter {direction} */
    M_BYTES,                   /* sluice_bytes_total counter {direction} */
    M_MASKED_VALUES,           /* sluice_masked_values_total counter {detector} */
    M_APPROVALS_PENDING,       /* sluice_approvals_pending gauge(set) */
    M_APPROVALS_DECIDED,       /* sluice_approvals_decided_total counter {outcome} */
    M_AUDIT_QUEUE_DEPTH,       /* sluice_audit_queue_depth gauge(set) */
    M_AUDIT_EVENTS_WRITTEN,    /* sluice_audit_events_written_total counter(set) */
    M_AUDIT_WRITE_ERRORS,      /* sluice_audit_write_errors_total counter(set) */
    M_AUDIT_EVENTS_LOST,       /* sluice_audit_events_lost_total counter(set) */
    M_UPSTREAM_CONNECT_ERRORS, /* sluice_upstream_connect_errors_total counter */
    M_TLS_HANDSHAKES,          /* sluice_tls_handshakes_total counter {result} (client side) */
    M_ADMIN_SSE_CLIENTS,       /* sluice_admin_sse_clients gauge(add) */
    M_ADMIN_EVENTS_PUBLISHED,  /* sluice_admin_events_published_total counter */
    M_ADMIN_SSE_DROPPED,       /* sluice_admin_sse_events_dropped_total counter */
    M_ADMIN_HTTP_REQUESTS,     /* sluice_admin_http_requests_total counter {result: ok=<400} */
    METRIC_COUNT,
};

enum metric_hist {
    H_STATEMENT_OVERHEAD, /* sluice_statement_overhead_seconds: sluice's own time */
    H_UPSTREAM_LATENCY,   /* sluice_upstream_latency_seconds: time spent in the upstream */
    METRIC_HIST_COUNT,
};

/* Counters: add n. Out-of-range labels are ignored (never a crash on the hot path). */
void metrics_add(enum metric_id id, unsigned a, unsigned b, uint64_t n);
static inline void metrics_inc(enum metric_id id, unsigned a, unsigned b)
{
    metrics_add(id, a, b, 1);
}
/* Additive gauges: add delta (negative to decrease). */
void metrics_gauge_add(enum metric_id id, unsigned a, unsigned b, int64_t delta);
/* Gauges set from their source of truth; counters mirrored from elsewhere. */
void metrics_set_gauge(enum metric_id id, unsigned a, unsigned b, int64_t value);
void metrics_set_counter(enum metric_id id, unsigned a, unsigned b, uint64_t value);

/* Histograms: one observation of `ns` nanoseconds. */
void metrics_observe_latency(enum metric_hist h, uint64_t ns);

/* Register a detector name (at startup or reload; thread-safe, not for the hot path). Returns
 * its label index for M_MASKED_VALUES; the same name gives the same index; past
 * METRICS_MAX_DETECTORS names, METRICS_DETECTOR_OTHER. */
unsigned metrics_register_detector(const char *name);

/* Prometheus text exposition format 0.0.4, with HELP and TYPE lines. Caller frees. */
char *metrics_render(void);

/* Read one value as render would sum it (tests, the dashboard's own figures). For histograms
 * see metrics_hist_count(). */
int64_t metrics_value(enum metric_id id, unsigned a, unsigned b);
uint64_t metrics_hist_count(enum metric_hist h);

/* Zero every value and forget detector names (tests only; not safe while others write). */
void metrics_reset(void);

const char *metrics_decision_name(enum metrics_decision d); /* "allow", "deny", "review" */

#endif
