/*
 * worker.c: one worker thread: an epoll loop over its own SO_REUSEPORT listener, its
 * sessions' sockets and an eventfd through which the main thread asks for a drain (and other
 * threads post work). Timers (authentication, login and drain deadlines, failed-login delays)
 * are checked on a 100 ms tick while any session has one.
 *
 * Balancing: the kernel picks the listener of a new connection by a hash of its addresses, so
 * a few long-lived connections often land unevenly (8 on 2 workers: 4/4 only about one time in
 * four, 6/2 or worse one in four), and one worker then serves most of the load while the other
 * idles. A worker that accepts a connection keeps it unless another worker that is not
 * draining has a strictly lower `load` (sessions in any state plus hand-offs not yet taken);
 * then it hands the socket to that one, which owns it for life from then on. A worker that
 * has left its loop refuses hand-offs (`closed`), and the accepting worker keeps the socket.
 *
 * Target host names resolve on resolver threads (net/resolve.c), never here: a session waits
 * in S_UP_RESOLVE while the others run, and the lookup comes back through the same eventfd.
 */
#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "proxy/pool.h"
#include "sql/sql.h"
#include "mask/mask.h"
#include "net/net.h"
#include "proxy/proxy.h"

#define MAX_EVENTS 128
#define TICK_MS 100

int worker_watch(struct worker *w, int fd, struct ev_handler *h, uint32_t old_ev, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = h};
    int op = old_ev == 0 ? EPOLL_CTL_ADD : ev == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (old_ev == 0 && ev == 0) return 0;
    if (epoll_ctl(w->epfd, op, fd, &e) < 0) {
        log_error("worker %u: epoll_ctl(%d) on fd %d: %s", w->id, op, fd, strerror(errno));
        return -1;
    }
    return 0;
}

/* A connection accepted by one worker for another. */
struct handoff {
    struct handoff *next;
    int fd;
    struct sockaddr_storage addr;
};

static struct worker *peers; /* every worker, once all run (worker_set_peers) */
static atomic_uint n_peers;

/* (n = 0, all = NULL: after every worker was joined, so nothing reads peers any more.) */
void worker_set_peers(struct worker *all, unsigned n)
{
    if (!n) atomic_store_explicit(&n_peers, 0, memory_order_release);
    peers = all;
    if (n) atomic_store_explicit(&n_peers, n, memory_order_release);
}

/* The worker that takes a new connection: the least loaded one, w itself on a tie. */
static struct worker *worker_pick(struct worker *w)
{
    unsigned n = atomic_load_explicit(&n_peers, memory_order_acquire);
    struct worker *best = w;
    unsigned best_load = atomic_load_explicit(&w->load, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        struct worker *p = &peers[i];
        if (p == w || atomic_load_explicit(&p->drain_requested, memory_order_relaxed)) continue;
        unsigned l = atomic_load_explicit(&p->load, memory_order_relaxed);
        if (l < best_load) {
            best = p;
            best_load = l;
        }
    }
    return best;
}

/* Give fd to worker to: queued, counted in its load, and its loop woken. False when to has
 * left its loop: the caller keeps fd. */
static bool worker_hand(struct worker *to, int fd, const struct sockaddr_storage *addr)
{
    struct handoff *h = xmalloc(sizeof *h);
    h->fd = fd;
    h->addr = *addr;
    pthread_mutex_lock(&to->handoff_mu);
    if (to->closed) {
        pthread_mutex_unlock(&to->handoff_mu);
        free(h);
        return false;
    }
    atomic_fetch_add_explicit(&to->load, 1, memory_order_relaxed);
    h->next = to->handoff;
    to->handoff = h;
    pthread_mutex_unlock(&to->handoff_mu);
    uint64_t one = 1;
    if (write(to->wake_fd, &one, sizeof one) < 0) log_warn("worker %u: wakeup failed", to->id);
    return true;
}

/* Take the connections other workers handed to w: sessions of w from now on. A worker that
 * is draining ends them as it ended its own (57P01, sluice is shutting down). */
static void worker_take_handoffs(struct worker *w)
{
    pthread_mutex_lock(&w->handoff_mu);
    struct handoff *h = w->handoff;
    w->handoff = NULL;
    pthread_mutex_unlock(&w->handoff_mu);
    bool any = h != NULL;
    while (h) {
        struct handoff *next = h->next;
        atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
        session_accept(w, h->fd, &h->addr);
        free(h);
        h = next;
    }
    if (any && w->draining) session_drain_all(w);
}

/* On a resolver thread: l goes back to its worker's loop. A worker that left its loop has no
 * session left to wait for it. */
static void worker_lookup_done(struct net_lookup *l)
{
    struct worker *w = l->owner;
    pthread_mutex_lock(&w->handoff_mu);
    bool closed = w->closed;
    if (!closed) {
        l->next = w->lookups;
        w->lookups = l;
    }
    pthread_mutex_unlock(&w->handoff_mu);
    if (closed) {
        net_lookup_free(l);
        return;
    }
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof one) < 0) log_warn("worker %u: wakeup failed", w->id);
}

bool worker_lookup(struct worker *w, struct net_lookup *l)
{
    l->owner = w;
    l->done = worker_lookup_done;
    return net_lookup_submit(l);
}

/* The lookups resolved for w's sessions: each to its session, or freed when the session gave
 * up on it (closed, or timed out). */
static void worker_take_lookups(struct worker *w)
{
    pthread_mutex_lock(&w->handoff_mu);
    struct net_lookup *l = w->lookups;
    w->lookups = NULL;
    pthread_mutex_unlock(&w->handoff_mu);
    for (struct net_lookup *next; l; l = next) {
        next = l->next;
        if (l->waiter)
            session_on_resolved(l->waiter, l);
        else
            net_lookup_free(l);
    }
}

/* May w leave its loop? Only with no hand-off waiting; from then on it refuses them. */
static bool worker_close_handoffs(struct worker *w)
{
    pthread_mutex_lock(&w->handoff_mu);
    bool empty = w->handoff == NULL;
    if (empty) w->closed = true;
    pthread_mutex_unlock(&w->handoff_mu);
    return empty;
}

static void worker_accept(struct worker *w)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int fd =
            accept4(w->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("worker %u: accept: %s", w->id, strerror(errno));
            return;
        }
        if (addr.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct worker *to = worker_pick(w);
        if (to == w || !worker_hand(to, fd, &addr)) session_accept(w, fd, &addr);
    }
}

static void worker_begin_drain(struct worker *w)
{
    if (w->draining) return;
    w->draining = true;
    struct runtime *rt = runtime_acquire();
    w->drain_deadline_ms = clock_ms() + (uint64_t)rt->cfg->server.shutdown_timeout * 1000;
    runtime_release(rt);
    if (w->listen_fd >= 0) {
        worker_watch(w, w->listen_fd, &w->listen, EPOLLIN, 0);
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    pool_close_all(w);
    session_drain_all(w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event events[MAX_EVENTS];
    uint64_t last_tick = clock_ms();
    char name[16]; /* top -H, perf, gdb: at most 15 characters */
    snprintf(name, sizeof name, w->id < 100 ? "sluice-worker%u" : "sluice-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        if (w->draining && w->n_sessions == 0 && worker_close_handoffs(w)) break;
        int timeout = w->sessions || w->pool || w->draining ? TICK_MS : -1;
        int n = epoll_wait(w->epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("worker %u: epoll_wait: %s", w->id, strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct ev_handler *h = events[i].data.ptr;
            switch (h->kind) {
            case EV_LISTENER:
                if (w->listen_fd >= 0) worker_accept(w);
                break;
            case EV_WAKEUP: {
                uint64_t v;
                if (read(w->wake_fd, &v, sizeof v) < 0) { /* nothing to do */
                }
                if (atomic_load(&w->drain_requested)) worker_begin_drain(w);
                worker_take_handoffs(w);
                worker_take_lookups(w);
                if (w->parked) session_unpark_ready(w);
                if (atomic_load(&w->kills)) session_kill_requested(w);
                break;
            }
            case EV_POOLED:
                pool_on_event(h, events[i].events);
                break;
            default:
                session_on_event(h, events[i].events);
                break;
            }
        }
        uint64_t now = clock_ms();
        if (now - last_tick >= TICK_MS) {
            last_tick = now;
            session_tick_all(w, now);
            pool_tick(w, now);
            if (w->draining && now >= w->drain_deadline_ms)
                session_close_all(w, "shutdown timeout (server.shutdown_timeout)");
        }
        session_reap(w);
        pool_reap(w);
    }
    /* After an epoll failure: no more hand-offs; those already here end with the loop. */
    atomic_store(&w->drain_requested, true);
    pthread_mutex_lock(&w->handoff_mu);
    w->closed = true;
    struct handoff *left = w->handoff;
    w->handoff = NULL;
    struct net_lookup *lookups = w->lookups; /* their sessions are gone */
    w->lookups = NULL;
    pthread_mutex_unlock(&w->handoff_mu);
    for (struct handoff *next; left; left = next) {
        next = left->next;
        close(left->fd);
        free(left);
    }
    for (struct net_lookup *next; lookups; lookups = next) {
        next = lookups->next;
        net_lookup_free(lookups);
    }
    session_reap(w);
    pool_reap(w);
    sql_cache_clear();
    mask_thread_release();
    buf_pool_free();
    return NULL;
}

int worker_start(struct worker *w, unsigned id, int listen_fd)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->listen_fd = listen_fd;
    pthread_mutex_init(&w->handoff_mu, NULL);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->epfd < 0 || w->wake_fd < 0) return -1;
    w->wake = (struct ev_handler){EV_WAKEUP, w};
    w->listen = (struct ev_handler){EV_LISTENER, w};
    if (worker_watch(w, w->wake_fd, &w->wake, 0, EPOLLIN) < 0) return -1;
    if (worker_watch(w, listen_fd, &w->listen, 0, EPOLLIN) < 0) return -1;
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_request_drain(struct worker *w)
{
    atomic_store(&w->drain_requested, true);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof one) < 0) log_warn("worker %u: wakeup failed", w->id);
}
