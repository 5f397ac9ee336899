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
/* Fill err with the last OpenSSL error (and clear the queue). */
void tls_error_text(char *err, size_t errlen);

#endif
