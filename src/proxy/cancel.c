/*
 * cancel.c: the cancel-key registry and CancelRequest forwarding.
 *
 * sluice gives each client the backend's real process id (clients compare it with
 * pg_backend_pid() and NOTIFY pids) and a secret key of its own. A CancelRequest carrying
 * that pair is looked up here and sent upstream with the backend's real key, from a short
 * detached thread so no worker ever blocks on it, to the very address the session's upstream
 * connection reached (a host name may resolve to several). As PostgreSQL's postmaster does,
 * the client's cancel connection is closed only once the request was delivered (the server
 * closed its side, or gave up): clients such as lib/pq read to EOF to know the backend was
 * signalled before they go on. Registration happens once per session, so a mutex is fine.
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/net.h"
#include "pg/msg.h"

struct cancel_entry {
    uint32_t pid, our_key, real_key;
    bool forwarded;               /* a cancel went (or is going) to the backend */
    uint64_t session_id;          /* registry_cancel() tells it */
    struct sockaddr_storage addr; /* the backend's server */
    socklen_t addr_len;
    struct cancel_entry *next;
};

#define CANCEL_BUCKETS 4096

static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cancel_entry *buckets[CANCEL_BUCKETS];

static unsigned bucket_of(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) % CANCEL_BUCKETS;
}

int cancel_register(uint32_t pid, uint32_t our_key, uint32_t real_key, int upstream_fd,
                    uint64_t session_id)
{
    struct sockaddr_storage addr;
    socklen_t addr_len = sizeof addr;
    if (getpeername(upstream_fd, (struct sockaddr *)&addr, &addr_len) < 0) return -2;
    unsigned b = bucket_of(pid, our_key);
    pthread_mutex_lock(&cancel_lock);
    for (struct cancel_entry *e = buckets[b]; e; e = e->next) {
        if (e->pid == pid && e->our_key == our_key) {
            pthread_mutex_unlock(&cancel_lock);
            return -1; /* taken: the caller draws another key */
        }
    }
    struct cancel_entry *e = xmalloc(sizeof *e);
    *e = (struct cancel_entry){pid,        our_key, real_key, false,
                               session_id, addr,    addr_len, buckets[b]};
    buckets[b] = e;
    pthread_mutex_unlock(&cancel_lock);
    return 0;
}

bool cancel_unregister(uint32_t pid, uint32_t our_key)
{
    bool forwarded = false;
    unsigned b = bucket_of(pid, our_key);
    pthread_mutex_lock(&cancel_lock);
    for (struct cancel_entry **pp = &buckets[b]; *pp; pp = &(*pp)->next) {
        struct cancel_entry *e = *pp;
        if (e->pid == pid && e->our_key == our_key) {
            forwarded = e->forwarded;
            *pp = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&cancel_lock);
    return forwarded;
}

struct cancel_job {
    uint32_t pid, real_key;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int client_fd; /* a duplicate of the client's cancel connection, closed when done (-1) */
};

static void *cancel_send(void *arg)
{
    struct cancel_job *job = arg;
    pthread_setname_np(pthread_self(), "sluice-cancel");
    char err[256];
    int fd = net_connect_addr(&job->addr, job->addr_len, err, sizeof err);
    if (fd >= 0) {
        /* Wait for the connect (SO_ERROR stays 0 while it is in progress, so wait for the
         * socket to become writable), then send the 16-byte request; the server closes. */
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int pr;
        do
            pr = poll(&pfd, 1, 10000);
        while (pr < 0 && errno == EINTR);
        if (pr == 1 && net_connect_result(fd) == 0) {
            struct buf *b = buf_get();
            pg_put_cancel(b, job->pid, job->real_key);
            ssize_t w = send(fd, b->data, b->len, MSG_NOSIGNAL);
            if (w != (ssize_t)b->len)
                log_warn("cancel: could not send request to backend %u", job->pid);
            buf_put(b);
        } else {
            log_warn("cancel: cannot reach target for backend %u: %s", job->pid,
                     pr == 0 ? "connect timed out" : strerror(errno));
        }
        /* The server closes once the backend was signalled: wait for that EOF (at most half
         * a second; the socket does not block, so poll wakes at the close itself). */
        char tmp[16];
        pfd.events = POLLIN;
        for (int i = 0; i < 50; i++) {
            if (poll(&pfd, 1, 10) < 0 && errno != EINTR) break;
            ssize_t n = read(fd, tmp, sizeof tmp);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                break;
        }
        close(fd);
    } else {
        log_warn("cancel: cannot reach target for backend %u: %s", job->pid, err);
    }
    if (job->client_fd >= 0) close(job->client_fd); /* the client's EOF: delivered */
    free(job);
    buf_pool_free(); /* this thread's pool dies with it */
    return NULL;
}

void cancel_forward(uint32_t pid, uint32_t our_key, int client_fd)
{
    struct cancel_job *job = NULL;
    uint64_t session_id = 0;
    unsigned b = bucket_of(pid, our_key);
    pthread_mutex_lock(&cancel_lock);
    for (struct cancel_entry *e = buckets[b]; e; e = e->next) {
        if (e->pid == pid && e->our_key == our_key) {
            e->forwarded = true; /* (under the lock: the session's unregister sees it) */
            job = xmalloc(sizeof *job);
            *job = (struct cancel_job){e->pid, e->real_key, e->addr, e->addr_len, -1};
            session_id = e->session_id;
            break;
        }
    }
    pthread_mutex_unlock(&cancel_lock);
    if (!job) {
        log_info("cancel: no session for backend %u with that key", pid);
        return;
    }
    /* a client's cancel: a statement parked for approval never reached the backend */
    if (client_fd >= 0 && session_id) registry_cancel(session_id);
    if (client_fd >= 0) job->client_fd = fcntl(client_fd, F_DUPFD_CLOEXEC, 0);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, cancel_send, job) != 0) {
        if (job->client_fd >= 0) close(job->client_fd);
        free(job);
    }
    pthread_attr_destroy(&attr);
}
