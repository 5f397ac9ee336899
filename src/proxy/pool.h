/*
 * pool.h: idle upstream connections kept per worker for the next client (see pool.c).
 *
 * Ownership: pool_put() takes the connection; pool_take() hands one back to a session,
 * which takes its socket (and ParameterStatus run) and then frees the rest with pool_release().
 */
#ifndef SLUICE_PROXY_POOL_H
#define SLUICE_PROXY_POOL_H

#include "net/net.h"
#include "proxy/proxy.h"

struct pooled {
    struct ev_handler h;
    struct pooled *next;
    struct worker *w;
    struct sock sk;
    uint32_t ev;
    struct runtime *rt; /* reference held */
    unsigned target_idx;
    uint8_t *key; /* the upstream startup parameters, serialized */
    size_t key_len;
    uint8_t *params; /* ParameterStatus messages to replay to the next client */
    size_t params_len;
    uint32_t be_pid, be_key;
    uint64_t born_ms; /* when its login began (server.pool_max_lifetime) */
    uint64_t epoch;   /* pool_epoch() then */
    struct buf *in;
    bool resetting;  /* the reset sent, its second ReadyForQuery not yet seen */
    bool reset_done; /* DISCARD ALL's CommandComplete seen */
    bool seed_done;  /* setseed's CommandComplete seen */
    uint8_t ready;   /* ReadyForQuery messages of the reset seen */
    bool dead;       /* freed by pool_reap() after the current batch of events */
    uint64_t deadline_ms;
};

/* Statements that change what a new backend starts with (SQL_F_LOGIN_STATE) bump the epoch:
 * connections whose login began before it are not reused. */
uint64_t pool_epoch(void);
void pool_epoch_bump(void);

void pool_put(struct worker *w, struct pooled *p);
struct pooled *pool_take(struct worker *w, const struct runtime *rt, unsigned target_idx,
                         const uint8_t *key, size_t key_len);
/* The session took p's socket: free the rest (after the current batch of events). */
void pool_release(struct pooled *p);
void pool_reap(struct worker *w);
/* Replace or add one ParameterStatus message in a run of complete 'S' messages. */
void pool_params_update(uint8_t **params, size_t *params_len, const uint8_t *msg, size_t total);
void pool_on_event(struct ev_handler *h, uint32_t events);
void pool_tick(struct worker *w, uint64_t now_ms);
void pool_close_all(struct worker *w);

#endif
