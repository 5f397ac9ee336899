/*
 * net.h: sockets for sluice: address parsing, SO_REUSEPORT listeners, non-blocking
 * outbound connects, and non-blocking reads and writes that go through OpenSSL when a
 * connection has been upgraded to TLS.
 *
 * Nothing here knows the PostgreSQL protocol: callers pass bytes. Results of sock_read and
 * sock_write: > 0 bytes moved, 0 end of stream (read only), SOCK_AGAIN (try again when the
 * socket is ready), SOCK_ERR (the connection is broken; errno or the TLS error queue says why).
 */
#ifndef SLUICE_NET_NET_H
#define SLUICE_NET_NET_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/config.h"

#define SOCK_AGAIN (-1)
#define SOCK_ERR (-2)

struct sock {
    int fd;
    SSL *ssl;        /* non-NULL once TLS is established or handshaking */
    bool want_write; /* the last TLS call needs the socket writable */
};

/* "host:port" or "[v6]:port" to a socket address. 0 or -1. */
int net_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len);
/* A non-blocking listening socket with SO_REUSEPORT. fd or -1 (errno set). */
int net_listen(const struct sockaddr_storage *addr, socklen_t len);
/* One address of a target. */
struct net_addr {
    struct sockaddr_storage addr;
    socklen_t len;
};
/* The addresses host:port resolves to, in the resolver's order, in *out (the caller frees
 * it); host may be a directory holding a unix socket (one address). Returns how many (at least
 * one), or -1 with err filled. */
int net_resolve(const char *host, unsigned port, struct net_addr **out, char *err, size_t errlen);
/* A host name resolved off the event loops (resolve.c). The owner fills host and port
 * (net_lookup_new), done, owner and waiter, and submits it; done runs on a resolver thread
 * with n (addresses in addrs, or -1 with err filled) and gives the lookup back to its owner,
 * who frees it with net_lookup_free(). */
struct net_lookup {
    struct net_lookup *next; /* in the resolver's queue, then in the owner's */
    char *host;
    unsigned port;
    void (*done)(struct net_lookup *l);
    void *owner;           /* the owner's: e.g. the worker whose loop takes it back */
    void *waiter;          /* the owner's: e.g. the session waiting for it, NULL once it gave up */
    atomic_bool cancelled; /* set by the owner that gave up: not resolved if not yet begun */
    struct net_addr *addrs;
    int n;
    char err[256];
};
/* Does connecting to host need a lookup? Not for an IP literal or a unix socket directory,
 * which net_resolve() answers without blocking. */
bool net_host_needs_lookup(const char *host);
/* NULL when out of memory. */
struct net_lookup *net_lookup_new(const char *host, unsigned port);
void net_lookup_free(struct net_lookup *l);
/* Start the resolver's threads (at most 8). 0, or -1 with err filled. */
int net_resolver_start(unsigned threads, char *err, size_t errlen);
/* Queue l for a resolver thread; false when the resolver is not running (l stays the
 * caller's). */
bool net_lookup_submit(struct net_lookup *l);
/* Stop the threads after the lookups they run; queued ones are handed back failed. */
void net_resolver_stop(void);
/* Start a non-blocking connect to addr. The fd, or -1 with err filled. */
int net_connect_addr(const struct sockaddr_storage *addr, socklen_t len, char *err, size_t errlen);
/* After the socket became writable: 0 when connected, else -1 and errno. */
int net_connect_result(int fd);
bool net_is_loopback(const struct sockaddr_storage *addr);
/* "ip:port" text for logs. */
void net_addr_text(const struct sockaddr_storage *addr, char *out, size_t outlen);

ssize_t sock_read(struct sock *s, void *p, size_t n);
ssize_t sock_write(struct sock *s, const void *p, size_t n);
/* Bytes OpenSSL holds decrypted and unread (0 without TLS). */
size_t sock_pending(const struct sock *s);
void sock_close(struct sock *s);

/* TLS contexts. */
SSL_CTX *tls_server_ctx(const struct cfg_tls *tls, char *err, size_t errlen);
SSL_CTX *tls_client_ctx(const struct cfg_target *t, char *err, size_t errlen);
/* Attach TLS to s (server or client side); host is checked for verify-full. */
int tls_attach(struct sock *s, SSL_CTX *ctx, bool server, const struct cfg_target *t);
/* Drive the handshake: 1 done, 0 in progress (wait per s->want_write), -1 failed. */
int tls_handshake(struct sock *s, bool server, char *err, size_t errlen);
/* The subject CN of the certificate the TLS peer presented and the handshake verified, into
 * out (NUL-terminated, UTF-8). 0, or -1: no TLS, no certificate, not verified, no CN or more
 * than one, a CN holding a NUL byte or longer than outcap - 1. */
int tls_peer_cn(const struct sock *s, char *out, size_t outcap);
/* Whether the certificate the TLS peer presented and the handshake verified holds the
 * subjectAltName value of type: a URI compared byte for byte, and then only when it is the
 * certificate's one URI (as SPIFFE requires of an SVID: a certificate naming several
 * workloads names none); a DNS name with ASCII case ignored; an email address with its
 * domain's case ignored (value holds one "@"). An entry holding a NUL byte never matches. */
bool tls_peer_has_san(const struct sock *s, enum cfg_san_type type, const char *value);
/* SCRAM channel binding of type tls-server-end-point (RFC 5929) for a TLS connection: the
 * hash of the server's certificate (sluice's own on a connection it accepted, the target's on
 * one it made), by the certificate's signature digest (SHA-256 for MD5 and SHA-1), into out.
 * Its length, or -1 (no TLS, or a certificate whose signature names no digest, such as
 * Ed25519: sluice then offers its clients no -PLUS, and does not log in to a target that
 * offers it, as libpq does not). */
int tls_server_end_point(const struct sock *s, unsigned char *out, size_t outcap);
/* Fill err with the last OpenSSL error (and clear the queue). */
void tls_error_text(char *err, size_t errlen);

#endif
