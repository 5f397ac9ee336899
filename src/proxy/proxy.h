/*
 * proxy.h: the proxy runtime shared by the files of src/proxy/: the runtime snapshot
 * (config plus the TLS contexts derived from it), workers (one thread and one epoll loop
 * each), sessions (a client connection and its upstream connection, pinned to one worker
 * for life) and the cancel-key registry.
 *
 * Threads: the main thread loads configuration and handles signals; workers own their
 * sessions outright, so the relay path takes no locks. The snapshot pointer and the cancel
 * registry are the only shared state and are used at connect time, not per message.
 */
#ifndef SLUICE_PROXY_PROXY_H
#define SLUICE_PROXY_PROXY_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

struct net_lookup;

/* One immutable configuration snapshot with its derived objects. */
struct runtime {
    struct sluice_config *cfg;
    SSL_CTX *server_tls;        /* NULL when no certificate is configured */
    SSL_CTX **target_tls;       /* per target; NULL where sslmode is disable */
    struct policy *policy;      /* guardrails and rules compiled for this snapshot */
    struct mask_db *mask;       /* detectors compiled from masking:; NULL when masking is off */
    struct oidc_verifier *oidc; /* identities.oidc; NULL when not configured */
    unsigned det_metric[64];    /* mask detector index -> its metrics label */
    uint64_t generation;        /* 1, 2, 3, ... per snapshot installed: never reused */
    atomic_int refs;
};

/* Build a runtime from cfg (taking its reference) and make it current. 0, or -1 with err. */
int runtime_install(struct sluice_config *cfg, char *err, size_t errlen);
/* The current runtime with a reference the caller drops with runtime_release(). */
struct runtime *runtime_acquire(void);
void runtime_release(struct runtime *rt);

/* What an epoll registration points to. */
enum ev_kind {
    EV_LISTENER,
    EV_WAKEUP,
    EV_CLIENT,
    EV_SERVER,
    EV_POOLED,
};

struct ev_handler {
    enum ev_kind kind;
    void *owner;
};

struct session;
struct pooled;
struct handoff;

struct worker {
    unsigned id;
    pthread_t thread;
    int epfd;
    struct ev_handler wake; /* eventfd: drain, hand-off, audit, approval, kill wake-ups */
    int wake_fd;
    struct ev_handler listen;
    int listen_fd;
    struct session *sessions; /* all sessions of this worker, doubly linked */
    unsigned n_sessions;
    /* Sessions it owns plus connections handed to it and not yet taken: what another worker
     * reads to pick the least loaded one (worker.c, balancing). */
    atomic_uint load;
    pthread_mutex_t handoff_mu; /* guards handoff, lookups and closed */
    struct handoff *handoff;    /* connections accepted by another worker for this one */
    struct net_lookup *lookups; /* target host names resolved for its sessions, not taken */
    bool closed;                /* it left its loop: it takes no more hand-offs */
    struct session *dead;       /* closed this round, freed by session_reap() */
    struct pooled *pool;        /* idle upstream connections (pool.c) */
    struct pooled *pool_dead;
    struct session *parked; /* sessions whose client message waits (audit, approval) */
    atomic_uint kills;      /* sessions the admin asked to end (registry_kill) */
    unsigned n_pooled;
    atomic_bool drain_requested;
    bool draining;
    uint64_t drain_deadline_ms;
};

int worker_start(struct worker *w, unsigned id, int listen_fd);
/* Once every worker runs: the set among which accepted connections are balanced. */
void worker_set_peers(struct worker *all, unsigned n);
void worker_request_drain(struct worker *w);
/* Resolve l (its host, port and waiter set) on a resolver thread; the worker's loop hands it
 * back through session_on_resolved() when l->waiter is still set, else frees it. False when
 * the resolver is not running: l stays the caller's. */
bool worker_lookup(struct worker *w, struct net_lookup *l);
/* Register, change or remove fd's interest on w's loop. */
int worker_watch(struct worker *w, int fd, struct ev_handler *h, uint32_t old_ev, uint32_t ev);

/* Sessions (session.c). */
void session_accept(struct worker *w, int fd, const struct sockaddr_storage *addr);
void session_on_event(struct ev_handler *h, uint32_t events);
void session_tick_all(struct worker *w, uint64_t now_ms);
void session_drain_all(struct worker *w);
void session_close_all(struct worker *w, const char *reason);
void session_reap(struct worker *w);
/* The lookup session s waited for is back (s owns l now). */
void session_on_resolved(struct session *s, struct net_lookup *l);
/* Resume parked sessions whose wait is over (after a wakeup from the audit or approvals). */
void session_unpark_ready(struct worker *w);

/* Cancel registry (cancel.c): sluice's key -> the backend's real key and server address.
 * upstream_fd: the session's connection to the backend, whose peer address cancels go to;
 * session_id: the session, told of a cancel too (a statement parked for approval is sluice's
 * to cancel: registry_cancel). 0, -1 when the pair is taken (draw another key), -2 when that
 * address is unknown. */
int cancel_register(uint32_t pid, uint32_t our_key, uint32_t real_key, int upstream_fd,
                    uint64_t session_id);
/* true when a cancel was forwarded for it: the backend may still get it (the sending thread
 * runs detached), so it must not serve another session from the pool. */
bool cancel_unregister(uint32_t pid, uint32_t our_key);
/* client_fd: the client's cancel connection, kept open (a duplicate) until the request was
 * delivered; -1 when there is none (sluice's own cancel). */
void cancel_forward(uint32_t pid, uint32_t our_key, int client_fd);

/* Instance-wide counters. */
extern atomic_uint proxy_n_clients;
extern atomic_bool proxy_draining;
extern atomic_bool proxy_approvals; /* the approvals module runs (review can ask humans) */

uint64_t clock_ms(void);

/* Live sessions for the admin API (registry.c). */
struct sess_info {
    struct sess_info *prev, *next;
    struct worker *w;
    uint64_t id;
    char identity[128];
    enum ident_kind kind;
    char groups[256];
    char target[64];
    char client[64];
    char app[64];
    int64_t started_ms;
    atomic_ullong statements, rows;
    atomic_bool busy;   /* a statement is running */
    atomic_bool kill;   /* ended by an administrator (killer) */
    atomic_bool cancel; /* a CancelRequest came for it */
    char killer[128];
};
struct sess_info *registry_add(struct worker *w, uint64_t id, const struct cfg_identity *ident,
                               const char *target, const char *client, const char *app);
void registry_remove(struct sess_info *r);
char *registry_json(void);                      /* {"sessions": [...]}; malloc'd */
int registry_kill(uint64_t id, const char *by); /* 0, or -1 when no such session */
/* A CancelRequest came for session id: its worker is woken to cancel a statement it holds
 * parked for approval (the backend, idle meanwhile, is sent the cancel too). */
void registry_cancel(uint64_t id);
/* End the sessions the admin asked to end, and cancel the parked statements of those a
 * CancelRequest came for (worker thread). */
void session_kill_requested(struct worker *w);

/* Approval events into the audit trail (relay_approve.c). */
struct approve_audit;
void relay_approve_audit(const struct approve_audit *a);

/* Column names from the targets' catalogs (catalog.c): a resolver thread with a side
 * connection per target. catalog_lookup() never blocks; catalog_resolve() waits briefly for
 * a table seen for the first time. */
int catalog_start(struct sluice_config *cfg);
void catalog_stop(void);
bool catalog_lookup(unsigned target, uint32_t table, int16_t attnum, char *schema, size_t sl,
                    char *rel, size_t rl, char *col, size_t cl);
void catalog_request(unsigned target, uint32_t table);
/* The cache, else ask the resolver and wait for it briefly (first sight of a table). */
bool catalog_resolve(unsigned target, uint32_t table, int16_t attnum, char *schema, size_t sl,
                     char *rel, size_t rl, char *col, size_t cl);
void catalog_invalidate(unsigned target);
/* Changes whenever target's cached names may have (its cache emptied: DDL through sluice, a
 * restart of the resolver, the cache's bound); read it before the lookups it vouches for.
 * Targets may share a value: key on (target, generation). */
uint64_t catalog_generation(unsigned target);
const struct sluice_config *catalog_config(void); /* the snapshot the indexes refer to */
/* The columns of one relation, by its name (catalog_resolve_relation). */
struct catalog_rel {
    char *schema, *relname; /* the relation's names in its catalog */
    unsigned n;
    char **columns;  /* its attributes (attnum > 0, not dropped), in attnum order */
    bool *generated; /* generated columns (COPY without a column list leaves them out) */
};
/* The columns of relation schema.name (schema NULL: unqualified, found only when it is the
 * one relation of that name in the database; "pg_temp" is never found) on target, from the
 * cache, else asked and, when wait, waited for briefly as catalog_resolve() does. 1 when
 * answered: *out the columns (the caller's, freed with catalog_rel_free()), or NULL when
 * unknown or ambiguous; 0 when not (*out NULL): not cached and not answered in time, not
 * waited for (asked in the background), or the catalog cannot be reached. */
int catalog_resolve_relation(unsigned target, const char *schema, const char *name, bool wait,
                             struct catalog_rel **out);
void catalog_rel_free(struct catalog_rel *r);
/* Tests only: start without the resolver thread (requests stay queued; catalog_stop() ends
 * it); cache "none" for a relation, as old as a refresh is asked for; count the queued
 * requests (by name, or by table); take the request the resolver would take next (its table,
 * 0 by name; UINT32_MAX none), as answered. */
void catalog_test_start_paused(void);
void catalog_test_cache_stale(unsigned target, const char *schema, const char *name);
unsigned catalog_test_queued(bool by_name);
uint32_t catalog_test_take(void);

/* The admin listener with its hooks into sluice (admin_glue.c). */
int admin_glue_start(const struct sluice_config *cfg, char *err, size_t errlen);
void admin_glue_stop(void);

/* The serve command: run until SIGTERM/SIGINT; returns the exit status. */
int server_run(const char *config_path);

#endif
