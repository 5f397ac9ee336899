/*
 * server.c: `sluice serve`: load the configuration, open one SO_REUSEPORT listener per
 * worker, start the workers, then wait for signals on the main thread. SIGHUP reloads the
 * configuration (new connections get the new snapshot; running ones keep theirs). SIGTERM
 * and SIGINT drain: listeners close, idle sessions end, running statements get up to
 * server.shutdown_timeout to finish.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "approve/approve.h"
#include "audit/audit.h"
#include "core/buf.h"
#include "core/log.h"
#include "net/net.h"
#include "proxy/proxy.h"

#define SLUICE_MAX_WORKERS 256
/* Threads that resolve target host names (net/resolve.c): two, so that one name whose DNS
 * server does not answer leaves another to the rest. */
#define RESOLVER_THREADS 2

atomic_bool proxy_draining;
atomic_bool proxy_approvals;

/* A reload that failed is an event too: who changed what is the config's business, that the
 * running configuration stayed is the audit's. */
static void reload_failed(const char *err)
{
    log_error("reload failed, keeping the running configuration: %s", err);
    char detail[1100];
    snprintf(detail, sizeof detail, "failed, the running configuration is kept: %s", err);
    struct audit_event ev = {.kind = AUDIT_CONFIG_RELOAD, .detail = detail};
    if (!audit_emit(&ev)) log_warn("reload: audit event lost");
}

static void reload(const char *path, const char *listen_before)
{
    char err[1024];
    struct sluice_config *cfg;
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        reload_failed(err);
        return;
    }
    bool listen_changed = strcmp(cfg->listen.postgres, listen_before) != 0;
    enum log_level level = cfg->server.log_level;
    if (runtime_install(cfg, err, sizeof err) < 0) {
        reload_failed(err);
        return;
    }
    log_set_level(level);
    struct runtime *rt = runtime_acquire();
    if (atomic_load(&proxy_approvals)) approve_reload(rt->cfg);
    catalog_stop();
    if (catalog_start(rt->cfg) < 0) log_warn("reload: the catalog resolver did not restart");
    runtime_release(rt);
    struct audit_event ev = {.kind = AUDIT_CONFIG_RELOAD, .detail = path};
    if (!audit_emit(&ev)) log_warn("reload: audit event lost");
    if (listen_changed)
        log_warn("reload: listen.postgres changed; it takes effect at the next restart");
    log_info("configuration reloaded from %s", path ? path : "(built-in defaults)");
}

int server_run(const char *path)
{
    char err[1024];
    struct sluice_config *cfg;
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_set_level(cfg->server.log_level);
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (net_parse_addr(cfg->listen.postgres, &addr, &addrlen) < 0) {
        fprintf(stderr, "%s: error: listen.postgres \"%s\" is not host:port\n",
                path ? path : "config", cfg->listen.postgres);
        config_unref(cfg);
        return 2;
    }
    char *listen_text = xstrdup(cfg->listen.postgres);
    unsigned n_workers = cfg->server.workers;
    if (n_workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_workers = n > 0 ? (unsigned)n : 1;
    }
    if (n_workers > SLUICE_MAX_WORKERS) n_workers = SLUICE_MAX_WORKERS;
    /* Signals go to the main thread only: block them before any thread starts (the audit
     * writer, notifiers, the admin listener, workers) so that those inherit the mask. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (runtime_install(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s: error: %s\n", path ? path : "config", err);
        free(listen_text);
        return 2;
    }
    if (audit_start(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s: error: audit: %s\n", path ? path : "config", err);
        free(listen_text);
        return 1;
    }
    if (admin_glue_start(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s: error: admin listener: %s\n", path ? path : "config", err);
        audit_stop();
        free(listen_text);
        return 1;
    }
    if (catalog_start(cfg) < 0) log_warn("the catalog resolver did not start");
    if (net_resolver_start(RESOLVER_THREADS, err, sizeof err) < 0)
        log_warn("%s: target host names resolve on the workers", err);
    approve_set_audit_hook(relay_approve_audit);
    if (approve_start(cfg, err, sizeof err) < 0)
        log_warn("approvals are off (statements sent to review are refused): %s", err);
    else
        atomic_store(&proxy_approvals, true);

    struct worker *workers = xcalloc(n_workers, sizeof *workers);
    for (unsigned i = 0; i < n_workers; i++) {
        int lfd = net_listen(&addr, addrlen);
        if (lfd < 0) {
            log_error("cannot listen on %s: %s", listen_text, strerror(errno));
            exit(1);
        }
        if (worker_start(&workers[i], i, lfd) < 0) {
            log_error("cannot start worker %u: %s", i, strerror(errno));
            exit(1);
        }
        approve_subscribe(workers[i].wake_fd);
    }
    worker_set_peers(workers, n_workers);
    log_info("sluice listening on %s with %u workers (config %s)", listen_text, n_workers,
             path ? path : "built-in defaults");

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof si);
        if (n != sizeof si) {
            if (errno == EINTR) continue;
            log_error("signalfd: %s", strerror(errno));
            break;
        }
        if (si.ssi_signo == SIGHUP) {
            reload(path, listen_text);
            continue;
        }
        log_info("received %s: draining", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    atomic_store(&proxy_draining, true);
    for (unsigned i = 0; i < n_workers; i++)
        worker_request_drain(&workers[i]);
    for (unsigned i = 0; i < n_workers; i++)
        pthread_join(workers[i].thread, NULL);
    worker_set_peers(NULL, 0);
    net_resolver_stop(); /* its last hand-backs go to workers that left their loops */
    for (unsigned i = 0; i < n_workers; i++) {
        approve_unsubscribe(workers[i].wake_fd);
    }
    admin_glue_stop();
    catalog_stop();
    if (atomic_load(&proxy_approvals)) approve_stop();
    audit_stop();
    for (unsigned i = 0; i < n_workers; i++) {
        close(workers[i].epfd);
        close(workers[i].wake_fd);
        pthread_mutex_destroy(&workers[i].handoff_mu);
    }
    free(workers);
    free(listen_text);
    close(sfd);
    struct runtime *rt = runtime_acquire();
    runtime_release(rt);
    runtime_release(rt); /* the current snapshot's own reference */
    log_info("sluice stopped");
    return 0;
}
