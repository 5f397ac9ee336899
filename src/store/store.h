/*
 * store.h: the state store, the one place sluice keeps durable state (the audit chain now,
 * approvals and grants later).
 *
 * A store is an opaque handle over a driver (struct store_driver): SQLite today, PostgreSQL
 * later for several instances sharing one store. The audit module hands it finished events
 * (canonical JSON body + hash, with a few columns copied out for queries) and never sees SQL;
 * the store never interprets a body beyond what it is given. Schemas are versioned per module
 * in a `schema_version` table and brought up to date by migration lists: the store runs the
 * audit module's list itself, other modules (approvals) pass theirs to store_migrate().
 *
 * Threads: one handle is used by one thread at a time (the audit writer owns its own; the CLI
 * and the admin API open their own). SQLite readers in other processes may run concurrently
 * with the writer (WAL).
 *
 * Errors: functions return 0 on success and -1 on failure; store_errmsg() then describes the
 * failure until the next call. Ownership: every pointer passed in is borrowed for the call;
 * pointers handed to callbacks are valid only during the callback.
 */
#ifndef SLUICE_STORE_STORE_H
#define SLUICE_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define STORE_HASH_HEX 65 /* 64 hex digits of SHA-256 and a NUL */

/* One audit event as stored. body is the canonical JSON the hash covers (see docs/audit.md);
 * kind/identity/decision/time_us/seq are copies of body fields kept as columns for queries
 * (verify checks that they agree with the body). */
struct store_event {
    uint64_t seq; /* 1, 2, 3, ... without gaps: the chain order */
    int64_t time_us;
    const char *kind;
    const char *identity; /* NULL when the event has none */
    const char *decision; /* NULL when the event has none */
    const char *body;     /* body_len bytes; NUL-terminated in what the store returns */
    size_t body_len;
    const char *hash; /* 64 hex digits */
};

/* A checkpoint: the hash of event seq, optionally signed (Ed25519, hex) by the signing key
 * whose id is key_id. The newest checkpoint at or below the pruned range is the anchor from
 * which verification starts after retention pruned older events. */
struct store_checkpoint {
    uint64_t seq;
    int64_t time_us;
    const char *hash;
    const char *signature; /* NULL when unsigned */
    const char *key_id;    /* NULL when unsigned */
};

/* Query filters; zero/NULL fields do not filter. */
struct store_query {
    const char *identity;
    const char *decision;
    const char *kind;
    int64_t since_us; /* time_us >= since_us when > 0 */
    int64_t until_us; /* time_us < until_us when > 0 */
    uint64_t after_seq;
    unsigned limit;    /* 0 = no limit */
    bool newest_first; /* with limit: the newest `limit` events, still delivered oldest first */
};

/* Callbacks return 0 to go on, anything else to stop (the scan then returns that value). */
typedef int (*store_event_fn)(void *ctx, const struct store_event *ev);
typedef int (*store_checkpoint_fn)(void *ctx, const struct store_checkpoint *cp);

/* A schema migration: version numbers start at 1 and increase by one. sql is a script in the
 * driver's dialect (the driver picks the field named after it; NULL = nothing to do). */
struct store_migration {
    unsigned version;
    const char *sqlite;
    const char *postgres;
};

struct store;

/* What a driver implements (store.c dispatches; drivers live in store_<name>.c). */
struct store_driver {
    const char *name;
    int (*open)(struct store *st, const struct cfg_state *cfg, unsigned flags);
    void (*close)(struct store *st);
    int (*migrate)(struct store *st, const char *module, const struct store_migration *m,
                   unsigned n);
    int (*events_append)(struct store *st, const struct store_event *ev, unsigned n,
                         const struct store_checkpoint *cp, unsigned ncp);
    int (*events_query)(struct store *st, const struct store_query *q, store_event_fn fn,
                        void *ctx);
    int (*events_last)(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX]);
    int (*checkpoints_scan)(struct store *st, uint64_t from_seq, store_checkpoint_fn fn, void *ctx);
    int (*anchor_get)(struct store *st, uint64_t *seq);
    int (*prune)(struct store *st, int64_t before_us, uint64_t *pruned);
};

/* The handle. Drivers keep their state behind `priv`; everyone else treats it as opaque. */
struct store {
    const struct store_driver *drv;
    void *priv;
    unsigned flags;
    char err[512];
};

/* Flag for readers (the CLI): no migrations, no writes; fails when the store is absent. */
#define STORE_READONLY 1u

/* Open (and for writers create and migrate) the store cfg describes. On failure returns -1
 * with a message in err. *out is owned by the caller: store_close() it. */
int store_open(const struct cfg_state *cfg, unsigned flags, struct store **out, char *err,
               size_t errlen) __attribute__((warn_unused_result));
void store_close(struct store *st);
/* Create the file at path, empty and readable by its owner only (0600), when it does not exist
 * yet: the audit trail and approvals are not for other local users, and SQLite gives its WAL
 * and shared-memory files the database file's mode. An existing file keeps its mode. 0, or -1
 * with errno set. */
int store_file_precreate(const char *path);
const char *store_errmsg(const struct store *st);
const char *store_driver_name(const struct store *st);

/* Bring `module`'s tables to the newest version of m[0..n) (each step in one transaction).
 * Approvals (issue 6) calls this with its own list at start. */
int store_migrate(struct store *st, const char *module, const struct store_migration *m, unsigned n)
    __attribute__((warn_unused_result));

/* Append n events and ncp checkpoints in one transaction: all or nothing. */
int store_events_append(struct store *st, const struct store_event *ev, unsigned n,
                        const struct store_checkpoint *cp, unsigned ncp)
    __attribute__((warn_unused_result));

/* Events matching q in seq order. */
int store_events_query(struct store *st, const struct store_query *q, store_event_fn fn, void *ctx);
/* Every stored event with seq > after_seq, in seq order (verify, export). */
int store_events_scan(struct store *st, uint64_t after_seq, store_event_fn fn, void *ctx);
/* The newest event: *seq 0 (and hash "") when there is none. */
int store_events_last(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX]);
/* Checkpoints with seq >= from_seq in seq order. */
int store_checkpoints_scan(struct store *st, uint64_t from_seq, store_checkpoint_fn fn, void *ctx);
/* The anchor: seq of the checkpoint the oldest kept event follows (0 = nothing pruned). */
int store_anchor_get(struct store *st, uint64_t *seq);

/* Retention: delete events older than before_us, but only whole ranges ending at a
 * checkpoint (which becomes the anchor), so the rest of the chain still verifies.
 * *pruned (may be NULL) gets the number of events deleted. */
int store_prune(struct store *st, int64_t before_us, uint64_t *pruned);

/* For drivers: set the message store_errmsg() returns. */
void store_set_err(struct store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- TEST ONLY: fault injection. When set, every write fails as a full disk would (the
 * transaction is rolled back). Used by tests/unit/test_audit.c; never called elsewhere. */
void store_test_fail_writes(bool fail);
bool store_test_failing_writes(void);

extern const struct store_driver store_driver_sqlite;

#endif
