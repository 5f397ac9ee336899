/*
 * pool.c: idle upstream connections kept for reuse, per worker.
 *
 * When a client leaves while its upstream session is idle and outside a transaction, the
 * session hands the connection here; pool_put() sends DISCARD ALL, then a setseed() with a
 * fresh random seed (DISCARD ALL keeps the backend's random() state, so the last client could
 * have chosen or observed the next one's random() values), and waits for both ReadyForQuery
 * messages, collecting the ParameterStatus values the reset reports. A reset connection
 * waits in the worker's list until a client of the same runtime snapshot, target and startup
 * parameters logs in (pool_take) or pool_idle_timeout passes.
 *
 * A backend keeps what it read at its login: its role's and database's defaults (ALTER ROLE
 * ... SET), and the right to log in at all. So a connection is not reused once
 * server.pool_max_lifetime has passed since its login began, nor after a statement through
 * sluice changed those (pool_epoch_bump when its transaction ends: ALTER ROLE, ALTER
 * DATABASE, their RENAME, DROP ROLE, REVOKE).
 * Anything unexpected from an idle server (an error, a close, data) drops the connection.
 * Connections never leave their worker, so no locks but the epoch's atomic.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <openssl/rand.h>

#include "core/buf.h"
#include "core/log.h"
#include "pg/msg.h"
#include "proxy/pool.h"

static const char reset_query[] = "DISCARD ALL";
static const char seed_tag[] = "SELECT 1";

static atomic_uint_least64_t epoch;

uint64_t pool_epoch(void)
{
    return atomic_load_explicit(&epoch, memory_order_acquire);
}

void pool_epoch_bump(void)
{
    atomic_fetch_add_explicit(&epoch, 1, memory_order_acq_rel);
}

/* May p still be reused at now_ms? */
static bool pool_fresh(const struct pooled *p, uint64_t now_ms)
{
    unsigned life = p->rt->cfg->server.pool_max_lifetime;
    return p->epoch == pool_epoch() && (!life || now_ms < p->born_ms + (uint64_t)life * 1000);
}

/* DISCARD ALL, then setseed() of a random value in [-1, 1]: two Query messages, as DISCARD
 * ALL cannot run in the implicit transaction of a multi-statement Query. */
static bool reset_put(struct buf *b)
{
    uint64_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) return false;
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT pg_catalog.setseed(%.17g)",
             (double)(r >> 11) / 4503599627370496.0 - 1.0);
    size_t m = pg_msg_begin(b, 'Q');
    buf_append_str(b, reset_query);
    pg_msg_end(b, m);
    m = pg_msg_begin(b, 'Q');
    buf_append_str(b, sql);
    pg_msg_end(b, m);
    return true;
}

/* Events for p may still sit in the worker's current batch: it is marked dead and freed by
 * pool_reap() after the batch. */
static void pool_free(struct pooled *p)
{
    if (p->sk.fd >= 0 && p->ev) worker_watch(p->w, p->sk.fd, &p->h, p->ev, 0);
    sock_close(&p->sk);
    buf_put(p->in);
    p->in = NULL;
    p->dead = true;
    p->next = p->w->pool_dead;
    p->w->pool_dead = p;
}

void pool_reap(struct worker *w)
{
    while (w->pool_dead) {
        struct pooled *p = w->pool_dead;
        w->pool_dead = p->next;
        free(p->params);
        free(p->key);
        runtime_release(p->rt);
        free(p);
    }
}

static void pool_unlink(struct pooled *p)
{
    struct worker *w = p->w;
    for (struct pooled **pp = &w->pool; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            w->n_pooled--;
            return;
        }
    }
}

static void pool_drop(struct pooled *p, const char *why)
{
    log_debug("pool: dropping upstream connection to backend %u: %s", p->be_pid, why);
    pool_unlink(p);
    pool_free(p);
}

void pool_put(struct worker *w, struct pooled *p)
{
    struct cfg_server *srv = &p->rt->cfg->server;
    p->w = w;
    p->h = (struct ev_handler){EV_POOLED, p};
    uint64_t now = clock_ms();
    if (srv->pool_idle_timeout == 0 || w->n_pooled >= srv->pool_max_idle || w->draining ||
        !pool_fresh(p, now)) {
        pool_free(p);
        return;
    }
    p->resetting = true;
    p->deadline_ms = now + 5000;
    struct buf *b = buf_get();
    bool sent = reset_put(b);
    ssize_t n = sent ? sock_write(&p->sk, b->data, b->len) : -1;
    sent = n == (ssize_t)b->len;
    buf_put(b);
    if (!sent || worker_watch(w, p->sk.fd, &p->h, p->ev, EPOLLIN) < 0) {
        pool_free(p);
        return;
    }
    p->ev = EPOLLIN;
    p->next = w->pool;
    w->pool = p;
    w->n_pooled++;
}

void pool_params_update(uint8_t **params, size_t *params_len, const uint8_t *msg, size_t total)
{
    const char *name, *value;
    if (pg_param_status_parse(msg + 5, total - 5, &name, &value) != PG_OK) return;
    struct buf *b = buf_get();
    size_t pos = 0;
    while (pos + 5 <= *params_len) {
        size_t mlen = 1 + pg_get_u32(*params + pos + 1);
        const char *n2, *v2;
        if (pg_param_status_parse(*params + pos + 5, mlen - 5, &n2, &v2) != PG_OK ||
            strcmp(n2, name) != 0)
            buf_append(b, *params + pos, mlen);
        pos += mlen;
    }
    buf_append(b, msg, total);
    free(*params);
    *params = xmalloc(b->len);
    memcpy(*params, b->data, b->len);
    *params_len = b->len;
    buf_put(b);
}

void pool_on_event(struct ev_handler *h, uint32_t events)
{
    struct pooled *p = h->owner;
    (void)events;
    if (p->dead) return;
    if (!p->resetting) {
        pool_drop(p, "server sent data or closed while idle");
        return;
    }
    for (;;) {
        if (!p->in) p->in = buf_get();
        struct buf *in = p->in;
        struct pg_hdr hd;
        int r = pg_hdr_parse(in->data + in->off, in->len - in->off, 1 << 20, &hd);
        if (r == PG_BAD) {
            pool_drop(p, "invalid message during reset");
            return;
        }
        if (r == PG_OK && in->len - in->off >= 1 + (size_t)hd.len) {
            const uint8_t *msg = in->data + in->off;
            in->off += 1 + hd.len;
            if (hd.type == 'S') {
                pool_params_update(&p->params, &p->params_len, msg, 1 + hd.len);
            } else if (hd.type == 'Z') {
                /* Only the ReadyForQuery that follows DISCARD ALL's own CommandComplete
                 * proves the reset ran: any other means replies of the last client were
                 * still on their way. The second one follows setseed's. */
                bool ok = hd.len == 5 && msg[5] == 'I' &&
                          (p->ready == 0 ? p->reset_done : p->seed_done && in->off == in->len);
                if (!ok) {
                    pool_drop(p, "not idle after reset");
                    return;
                }
                if (p->ready++ == 0) continue;
                p->resetting = false;
                p->deadline_ms = clock_ms() + (uint64_t)p->rt->cfg->server.pool_idle_timeout * 1000;
                buf_put(p->in);
                p->in = NULL;
                return;
            } else if (hd.type == 'C' && !p->reset_done) {
                p->reset_done = hd.len == 4 + sizeof reset_query &&
                                memcmp(msg + 5, reset_query, sizeof reset_query) == 0;
                if (!p->reset_done) {
                    pool_drop(p, "unexpected reply to DISCARD ALL");
                    return;
                }
            } else if (hd.type == 'C' && p->ready == 1 && !p->seed_done) {
                p->seed_done = hd.len == 4 + sizeof seed_tag &&
                               memcmp(msg + 5, seed_tag, sizeof seed_tag) == 0;
                if (!p->seed_done) {
                    pool_drop(p, "unexpected reply to setseed");
                    return;
                }
            } else if (!(hd.type == 'N' ||
                         ((hd.type == 'T' || hd.type == 'D') && p->ready == 1 && !p->seed_done))) {
                pool_drop(p, "unexpected reply to the reset");
                return;
            }
            continue;
        }
        if (r == PG_OK) buf_reserve(in, 1 + hd.len - (in->len - in->off));
        buf_reserve(in, 1024);
        ssize_t n = sock_read(&p->sk, in->data + in->len, in->cap - in->len);
        if (n == SOCK_AGAIN) return;
        if (n <= 0) {
            pool_drop(p, "server closed during reset");
            return;
        }
        in->len += (size_t)n;
    }
}

struct pooled *pool_take(struct worker *w, const struct runtime *rt, unsigned target_idx,
                         const uint8_t *key, size_t key_len)
{
    uint64_t now = clock_ms();
    for (struct pooled *p = w->pool, *next; p; p = next) {
        next = p->next;
        if (p->resetting || p->rt != rt || p->target_idx != target_idx || p->key_len != key_len ||
            memcmp(p->key, key, key_len) != 0)
            continue;
        if (!pool_fresh(p, now)) {
            pool_drop(p, "past its lifetime, or logins changed since");
            continue;
        }
        pool_unlink(p);
        return p;
    }
    return NULL;
}

void pool_release(struct pooled *p)
{
    p->sk.fd = -1;
    p->sk.ssl = NULL;
    p->ev = 0;
    pool_free(p);
}

void pool_tick(struct worker *w, uint64_t now_ms)
{
    for (struct pooled *p = w->pool, *next; p; p = next) {
        next = p->next;
        if (now_ms >= p->deadline_ms)
            pool_drop(p, p->resetting ? "reset timed out" : "idle timeout");
        else if (!p->resetting && !pool_fresh(p, now_ms))
            pool_drop(p, "past its lifetime, or logins changed since");
    }
}

void pool_close_all(struct worker *w)
{
    while (w->pool)
        pool_drop(w->pool, "shutting down");
}
