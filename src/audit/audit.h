/*
 * audit.h: the audit trail of sluice: events from the relay, a hash chain over them, one
 * writer thread that commits them in batches to the state store (and a JSON Lines copy),
 * verification, and the `sluice audit` CLI.
 *
 * Flow: a worker fills a struct audit_event and calls audit_emit(), which copies it into a
 * bounded queue and returns its sequence number at once (0 when the queue is full). The writer
 * thread takes up to 1,000 events at a time, serializes each to its canonical JSON body
 * (including the previous event's hash), hashes it, signs a checkpoint every
 * audit.checkpoint events when a key is configured, and commits the batch in one transaction.
 * After the commit it advances audit_committed_seq() and hands each event's JSON line to the
 * live-feed subscribers. A failing store keeps the
 * batch in memory and retries with backoff while audit_healthy() is false.
 *
 * What is left to others: the relay decides what to emit and which events must be durable
 * before their statement is forwarded (docs/audit.md: durability contract); it masks statement text
 * before emitting (the audit copies strings, it does not inspect them).
 *
 * Threads: audit_emit, audit_committed_seq, audit_healthy, audit_stats_get and the digest
 * helpers may be called from any thread. audit_start/audit_stop from the main thread only.
 * Ownership: every pointer passed in is borrowed for the call (audit_emit copies strings).
 */
#ifndef SLUICE_AUDIT_AUDIT_H
#define SLUICE_AUDIT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

enum audit_kind {
    AUDIT_SESSION_START,
    AUDIT_SESSION_END,
    AUDIT_AUTH_FAILURE,
    AUDIT_STATEMENT,     /* a statement and its decision (and its result when known) */
    AUDIT_STATEMENT_END, /* the result of a statement logged earlier (field ref = its seq) */
    AUDIT_CONFIG_RELOAD,
    AUDIT_APPROVAL_REQUESTED,
    AUDIT_APPROVAL_APPROVED,
    AUDIT_APPROVAL_DENIED,
    AUDIT_APPROVAL_EXPIRED,
    AUDIT_GRANT_USED,
    AUDIT_GRANT_EXHAUSTED,
    AUDIT_EVENTS_LOST,       /* written by the audit itself: events that could not be queued */
    AUDIT_APPROVAL_NOTIFIED, /* approvers were notified (Slack, webhook), or it failed */
    AUDIT_KIND_COUNT,
};

const char *audit_kind_name(enum audit_kind kind); /* "session_start", "statement", ... */
int audit_kind_from_name(const char *name);        /* -1 when unknown */

/*
 * One event as the relay fills it. NULL or empty strings and zero numbers are left out of the
 * record (statement and statement_end always carry duration_us, rows and bytes). Every string
 * is copied by audit_emit().
 */
/* A part of an event's JSON serialized ahead (audit_json_session, audit_json_statement). */
struct audit_json {
    char *p; /* NULL: none */
    size_t len;
    uint64_t id; /* names these bytes in this process (never reused); 0: unnamed */
};

struct audit_event {
    enum audit_kind kind;
    int64_t time_us;           /* microseconds since the epoch; 0 = now */
    const char *instance;      /* NULL = this instance (hostname:pid) */
    uint64_t session_id;       /* 0 = none */
    const char *identity;      /* identity name (for auth_failure: the user name given) */
    const char *identity_kind; /* "human", "service", "agent" */
    const char *groups;        /* comma list, or a JSON array */
    const char *auth_method;   /* "password", "token", "oidc", "cert", ... */
    const char *client_addr;   /* "ip:port" */
    const char *application_name;
    const char *target;
    const char *statement;   /* normalized and ALREADY masked by the caller */
    const char *fingerprint; /* hex */
    const char *command;     /* "SELECT", "UPDATE", ... */
    const char *class_;      /* "read", "write", "ddl", ... */
    const char *tables;      /* comma list, or a JSON array */
    const char *decision;    /* "allow", "deny", "review" */
    const char *rule;        /* rule or guardrail that decided */
    const char *request_id;  /* approval request */
    const char *grant_id;    /* approval grant */
    const char *actor;       /* who approved/denied/reloaded */
    uint64_t ref;            /* statement_end: seq of the statement event it completes */
    uint64_t duration_us;
    uint64_t rows; /* returned or affected */
    uint64_t bytes;
    const char *masked;   /* JSON object of counts per detector: {"email":3} */
    const char *digest;   /* hex SHA-256 of the rows sent (struct audit_digest) */
    const char *sqlstate; /* of a failure */
    const char *detail;   /* free text */
    bool durable; /* not recorded: in the journal before audit_emit() returns (writes, refusals) */
    /* Optional, for callers that emit many events with the same fields: the JSON of the fields
     * from instance to target, and from statement to tables, made by audit_json_session() and
     * audit_json_statement() from this event's own values of them (which stay set: a durable
     * event is serialized from its fields). Used instead of serializing those fields again;
     * never kept beyond the call. */
    struct audit_json session_json, statement_json;
};

/* The parts an event may carry serialized ahead (audit_event.session_json, statement_json),
 * from ev's fields. The caller owns out (audit_json_free) and must make it again when one of
 * those fields changes. */
void audit_json_session(const struct audit_event *ev, struct audit_json *out);
void audit_json_statement(const struct audit_event *ev, struct audit_json *out);
void audit_json_free(struct audit_json *j);

/*
 * Start the audit: open the store (cfg->state), resume the chain from its head, open the
 * JSONL copy and the signing key, start the writer thread. With audit.enabled false nothing is
 * written and audit_emit() returns increasing numbers that count as committed at once.
 * Returns 0, or -1 with a message in err.
 */
int audit_start(const struct sluice_config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Commit everything queued, stop and join the writer, close the store. If the store keeps
 * failing, gives up after 5 seconds and counts what was not written as lost. */
void audit_stop(void);

/*
 * Queue one event; a durable one is also appended to the journal first (docs/audit.md,
 * Durability), so that when this returns it survives a crash of sluice. Returns its sequence
 * number (> 0), or 0 when it could not be queued (the queue is full, the journal cannot be
 * written, or the audit is not running): the caller then refuses the statement
 * (audit.fail: closed) or lets it through (open); either way the loss is counted and recorded
 * later as an events_lost event. Never blocks beyond a short mutex.
 */
uint64_t audit_emit(const struct audit_event *ev);

/*
 * Replace the queued event seq, not yet taken by the writer, with ev (same seq; ev is not
 * journaled): a write's result folded into its `statement` event while that event still
 * waits for its batch, which saves a `statement_end`. ev->time_us must be that event's time
 * (the caller emitted it with a time of its own, audit_now_us()). Returns false when the
 * writer took it already, the times differ, or the audit is off: the caller emits the result
 * as its own event.
 */
bool audit_fold(uint64_t seq, const struct audit_event *ev);
/* Microseconds since the epoch (the clock of event times). */
int64_t audit_now_us(void);

/* Highest sequence number committed to the store (every lower one is committed too). */
uint64_t audit_committed_seq(void);
/* false while the store cannot be written (the writer keeps retrying). */
bool audit_healthy(void);
/* audit.fail: open (from the running config). */
bool audit_fail_open(void);

/* Live feed of committed events, called on the writer thread after each commit. The callbacks
 * must be quick, copy what they keep, and not call audit_feed_subscribe or
 * audit_feed_unsubscribe (they share their lock). */
struct audit_feed {
    /* one event's JSON line (no newline, not NUL-terminated) */
    void (*event)(void *ctx, uint64_t seq, const char *line, size_t len);
    /* asked per batch, before its lines are built and again before they are offered (NULL:
     * always yes); the writer builds no lines that nobody wants */
    bool (*wanted)(void *ctx);
    /* instead of event: n events of a batch that wanted declined (may be NULL) */
    void (*skipped)(void *ctx, unsigned n);
    void *ctx;
};
/* Subscribe f (copied); 0, or -1 when too many feeds are subscribed. */
int audit_feed_subscribe(const struct audit_feed *f);
/* Unsubscribe the feed with f's event callback and ctx. */
void audit_feed_unsubscribe(const struct audit_feed *f);

struct audit_stats {
    uint64_t written;      /* events committed since start */
    uint64_t queued;       /* events waiting (queue depth, including the batch in flight) */
    uint64_t lost;         /* events audit_emit() could not queue */
    uint64_t write_errors; /* failed store or JSONL writes (each retry counts) */
    uint64_t committed_seq;
    bool healthy;
    char last_error[256]; /* "" when none */
};
void audit_stats_get(struct audit_stats *out);

/*
 * Result digest: SHA-256 over the rows as sent to the client. For each DataRow, for each
 * column in order: the column's length as a big-endian int32 (-1 for NULL) followed by its
 * bytes (none for NULL) - exactly a DataRow message body without its leading int16 column
 * count. Rows are fed in the order sent; masked values are digested as masked.
 * Zero rows give the SHA-256 of the empty string.
 */
struct audit_digest {
    _Alignas(8) unsigned char state[128]; /* OpenSSL's SHA256_CTX (digest.c) */
    bool active;                          /* between init and final/free */
    uint64_t rows;
};
void audit_digest_init(struct audit_digest *d);
/* body/len: a DataRow message body after the type byte and length (starts with int16). */
void audit_digest_datarow(struct audit_digest *d, const uint8_t *body, size_t len);
/* One column value (len -1 = NULL); call for each column of each row instead of _datarow. */
void audit_digest_column(struct audit_digest *d, const void *val, int32_t len);
/* Hash len bytes as they are (not a row: rows is unchanged). */
void audit_digest_update(struct audit_digest *d, const void *data, size_t len);
/* Write 64 hex digits and a NUL to hex, and end the digest. */
void audit_digest_final(struct audit_digest *d, char hex[65]);
/* End without a result (statement abandoned): the state is wiped. */
void audit_digest_free(struct audit_digest *d);

/* The admin API's views (query.c): events matching q as {"events": [...]}, newest `limit`
 * (default 100) oldest first; and {"ok", "events", "first_broken_seq", "message"} from a
 * verification of the chain. Return an HTTP status: 200 with *out malloc'd, else a message
 * in err. */
struct audit_query {
    const char *identity, *decision, *kind, *target;
    const char *since, *until; /* "1h", ISO time, ... (as the CLI takes them) */
    uint64_t after_seq;
    unsigned limit;
};
int audit_query_json(const struct sluice_config *cfg, const struct audit_query *q, char **out,
                     char *err, size_t errlen);
int audit_verify_json(const struct sluice_config *cfg, char **out, char *err, size_t errlen);

/* `sluice audit ...`: argv[0] is "audit". Returns the exit status (0, 1 broken/failed,
 * 2 usage). */
int audit_cli_main(int argc, char **argv);

#endif
