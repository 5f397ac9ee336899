/*
 * resolve.c: host names resolved on threads of their own, so that a slow or dead DNS server
 * stalls no event loop. getaddrinfo() blocks for as long as the resolver's timeouts allow
 * (resolv.conf: 5 s per try by default); on a worker thread that would stop every session of
 * the worker while one session's target name resolved.
 *
 * A fixed set of threads takes lookups from one FIFO queue and hands each, resolved, to the
 * callback its owner set (net_lookup.done), on the resolving thread: the owner then owns it
 * again and frees it with net_lookup_free(). A lookup its owner gave up on (cancelled) before
 * a thread took it is handed back unresolved, so that lookups abandoned while a DNS server
 * does not answer do not hold up the ones behind them. IP literals and unix socket
 * directories need no lookup (net_host_needs_lookup): their callers resolve them inline with
 * net_resolve().
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

#define RESOLVER_MAX_THREADS 8

static struct resolver {
    pthread_mutex_t mu; /* guards the queue and the flags */
    pthread_cond_t cv;
    struct net_lookup *head, *tail;
    bool running, stopping;
    unsigned n_threads;
    pthread_t threads[RESOLVER_MAX_THREADS];
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

bool net_host_needs_lookup(const char *host)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (host[0] == '/') return false;
    return inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1;
}

struct net_lookup *net_lookup_new(const char *host, unsigned port)
{
    struct net_lookup *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->host = strdup(host);
    if (!l->host) {
        free(l);
        return NULL;
    }
    l->port = port;
    return l;
}

void net_lookup_free(struct net_lookup *l)
{
    if (!l) return;
    free(l->host);
    free(l->addrs);
    free(l);
}

static void *resolver_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-resolve");
    pthread_mutex_lock(&R.mu);
    for (;;) {
        while (!R.head && !R.stopping)
            pthread_cond_wait(&R.cv, &R.mu);
        if (!R.head) break; /* stopping, and nothing is left */
        struct net_lookup *l = R.head;
        R.head = l->next;
        if (!R.head) R.tail = NULL;
        l->next = NULL;
        bool stopping = R.stopping;
        pthread_mutex_unlock(&R.mu);
        if (stopping || atomic_load(&l->cancelled)) { /* nobody waits for it */
            l->n = -1;
            snprintf(l->err, sizeof l->err, "not resolved: %s",
                     stopping ? "sluice is shutting down" : "cancelled");
        } else {
            l->n = net_resolve(l->host, l->port, &l->addrs, l->err, sizeof l->err);
        }
        l->done(l); /* the owner's now */
        pthread_mutex_lock(&R.mu);
    }
    pthread_mutex_unlock(&R.mu);
    return NULL;
}

int net_resolver_start(unsigned threads, char *err, size_t errlen)
{
    if (threads < 1) threads = 1;
    if (threads > RESOLVER_MAX_THREADS) threads = RESOLVER_MAX_THREADS;
    pthread_mutex_lock(&R.mu);
    R.stopping = false;
    R.running = true;
    pthread_mutex_unlock(&R.mu);
    for (R.n_threads = 0; R.n_threads < threads; R.n_threads++) {
        if (pthread_create(&R.threads[R.n_threads], NULL, resolver_main, NULL) != 0) {
            snprintf(err, errlen, "cannot start a resolver thread");
            net_resolver_stop();
            return -1;
        }
    }
    return 0;
}

bool net_lookup_submit(struct net_lookup *l)
{
    l->next = NULL;
    pthread_mutex_lock(&R.mu);
    bool ok = R.running && !R.stopping;
    if (ok) {
        if (R.tail)
            R.tail->next = l;
        else
            R.head = l;
        R.tail = l;
        pthread_cond_signal(&R.cv);
    }
    pthread_mutex_unlock(&R.mu);
    return ok;
}

void net_resolver_stop(void)
{
    pthread_mutex_lock(&R.mu);
    R.stopping = true;
    pthread_cond_broadcast(&R.cv);
    pthread_mutex_unlock(&R.mu);
    /* Each thread finishes the lookup it runs (bounded by the resolver's own timeouts) and
     * hands what is still queued back as failed. */
    for (unsigned i = 0; i < R.n_threads; i++)
        pthread_join(R.threads[i], NULL);
    R.n_threads = 0;
    pthread_mutex_lock(&R.mu);
    R.running = false;
    pthread_mutex_unlock(&R.mu);
}
