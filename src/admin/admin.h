/*
 * admin.h: the admin HTTP listener: JSON API, live event stream (SSE), /metrics, dashboard.
 *
 * One process-wide server on cfg->listen.admin, run by libmicrohttpd with a thread per
 * connection, so a slow request or a browser holding the event stream open only ever blocks
 * its own thread. It never calls the audit, approval or identity modules itself: everything
 * it shows or does goes through struct admin_hooks, which the lead fills in src/main.c.
 *
 * Live events: admin_publish_event() copies one committed audit event (a JSON object on one
 * line) into a bounded ring and returns; it never waits for a client. Each stream client
 * reads the ring with its own cursor; a client that falls more than the ring behind loses
 * the oldest events, receives a `: dropped N` comment and the loss is counted
 * (sluice_admin_sse_events_dropped_total).
 *
 * Auth: every /api/v1 path but /api/v1/slack/actions (signed by Slack, checked by the hook)
 * needs `Authorization: Bearer TOKEN`; /api/v1/events also takes `?access_token=` because
 * EventSource cannot set headers. /healthz, /readyz, /metrics and the dashboard's static
 * files are open. Roles: any authenticated caller with `admin` or `approver` may read;
 * ending a session needs `admin`; approving or denying needs `approver`; revoking a grant
 * needs either. See docs/api.md.
 *
 * Ownership: the hooks struct is copied by admin_start(); ctx must outlive admin_stop().
 * Strings passed to hooks are borrowed for the call. Strings hooks return through `char **out`
 * are malloc'd and freed by the admin module.
 */
#ifndef SLUICE_ADMIN_ADMIN_H
#define SLUICE_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define ADMIN_WARN_UNUSED __attribute__((warn_unused_result))

/* Events kept for stream clients; a client further behind than this loses events. */
#define ADMIN_RING_EVENTS 4096
/* Bytes of events kept at most; past it the oldest go first. */
#define ADMIN_RING_BYTES (64u * 1024 * 1024)
/* Longest event published; longer ones are not streamed (counted as dropped). */
#define ADMIN_EVENT_MAX (1024 * 1024)
/* Largest request body accepted (approve/deny, Slack actions). */
#define ADMIN_BODY_MAX (64 * 1024)

/* Who is calling, as hooks->authenticate found out. Filled by the hook with malloc'd strings;
 * the admin module frees them (admin_caller_clear). */
struct admin_caller {
    char *name;    /* identity name, shown in logs and passed to approval_decide */
    char **groups; /* malloc'd array of malloc'd strings */
    unsigned n_groups;
    bool admin;       /* may end sessions, revoke grants, read everything */
    bool approver;    /* may approve and deny requests, revoke grants, read everything */
    uint64_t expires; /* seconds since the epoch when its credential ends a live event stream
                       * (an OIDC token's exp and leeway); 0: never */
};
void admin_caller_clear(struct admin_caller *c);

/* Optional body of POST /api/v1/approvals/{id}/approve|deny. Zero/NULL = not given (the
 * approval module then applies its defaults). */
struct admin_decision {
    const char *scope;  /* "identity" or "group" (approve); NULL = module default */
    uint64_t ttl;       /* seconds (JSON number, or a duration string "30m", "24h", "7d") */
    unsigned uses;      /* max uses of the grant */
    uint64_t rows;      /* max rows a write may touch */
    const char *reason; /* note or denial reason */
};

/* Filters of GET /api/v1/audit, passed as given (NULL = absent; limit 1..1000, default 100). */
struct admin_audit_query {
    const char *identity;
    const char *since; /* RFC 3339 time or unix seconds, as the caller wrote it */
    const char *until;
    const char *decision;
    const char *kind;
    const char *target;
    uint64_t after_seq; /* 0 = absent */
    unsigned limit;
};

/*
 * Hooks. Every function pointer may be NULL: the route then answers 501 (ready: 503; scrape
 * and metrics_extra are skipped). The JSON hooks return an HTTP status: 2xx with *out a
 * malloc'd JSON document (the response body, required), or an error status (400, 403, 404,
 * 409, 503, ...) with *out NULL or a malloc'd plain-text message that the admin module wraps
 * as {"error": "..."}. They run on the admin connection's own thread and may block briefly.
 */
struct admin_hooks {
    void *ctx;
    /* 0 and *caller filled when token is valid; -1 otherwise (caller left empty). */
    int (*authenticate)(void *ctx, const char *token, struct admin_caller *caller);
    /* true when ready; *why may get a malloc'd reason either way. */
    bool (*ready)(void *ctx, char **why);
    /* Called before each /metrics render: set gauges read at scrape time (audit queue depth,
     * events written, write errors, lost, approvals pending) with metrics_set_*(). */
    void (*scrape)(void *ctx);
    /* Optional extra exposition text appended to /metrics (malloc'd; with HELP and TYPE). */
    char *(*metrics_extra)(void *ctx);

    int (*sessions_json)(void *ctx, char **out);
    int (*session_kill)(void *ctx, const char *id, const struct admin_caller *by, char **out);
    int (*audit_query_json)(void *ctx, const struct admin_audit_query *q, char **out);
    int (*audit_verify_json)(void *ctx, char **out);
    /* state: "pending", "approved", "denied", "expired", "all"; NULL = pending */
    int (*approvals_json)(void *ctx, const char *state, char **out);
    int (*approval_decide)(void *ctx, const char *id, bool approve, const struct admin_decision *d,
                           const struct admin_caller *by, char **out);
    int (*grants_json)(void *ctx, char **out);
    int (*grant_revoke)(void *ctx, const char *id, const struct admin_caller *by, char **out);
    /* Slack interactivity: raw form body and headers (signature may be NULL); the hook
     * verifies the signature (401 when bad) and returns the body Slack should get. */
    int (*slack_action)(void *ctx, const char *body, size_t len, const char *signature,
                        const char *timestamp, char **out);
};

/* Bind cfg->listen.admin ("host:port", "[v6]:port"; port 0 picks a free one, see
 * admin_port()) and start serving. 0, or -1 with err set. One server per process. */
int admin_start(const struct sluice_config *cfg, const struct admin_hooks *hooks, char *err,
                size_t errlen) ADMIN_WARN_UNUSED;
/* Stop serving: stream clients are ended, in-flight requests finish. Idempotent. */
void admin_stop(void);
/* The bound port (after admin_start), 0 when not running. */
int admin_port(void);

/* Publish one committed audit event (one JSON object, no newline inside) to stream clients.
 * Copies it; never blocks on clients; a no-op while the server is not running. Thread-safe. */
void admin_publish_event(const char *json_line);
/* Is anyone interested in live events: a stream client connected, or one that left less than
 * ADMIN_RESUME_SECONDS ago (an EventSource reconnecting resumes from its Last-Event-ID)? The
 * audit's feed skips publishing otherwise. Thread-safe. */
#define ADMIN_RESUME_SECONDS 60
bool admin_events_wanted(void);
/* n events not published because nobody wanted them: they take their places in the stream's
 * numbering (and empty the ring), so a client resuming from before them is told what it
 * missed (`: dropped N`). */
void admin_skip_events(unsigned n);

/* Tests: send keepalive comments every ms milliseconds instead of 15 s. */
void admin_set_keepalive_ms(unsigned ms);

#endif
