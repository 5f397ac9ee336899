/*
 * sock.c: non-blocking reads and writes, plain or through OpenSSL, with one result
 * convention for both (see net.h).
 */
#include "net/net.h"

#include <errno.h>
#include <openssl/err.h>
#include <unistd.h>

ssize_t sock_read(struct sock *s, void *p, size_t n)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t r = read(s->fd, p, n);
            if (r >= 0) return r;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return SOCK_AGAIN;
            return SOCK_ERR;
        }
    }
    s->want_write = false;
    ERR_clear_error();
    int r = SSL_read(s->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0) return r;
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return SOCK_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        s->want_write = true;
        return SOCK_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno == 0 ? 0 : SOCK_ERR; /* EOF without close_notify */
    default:
        return SOCK_ERR;
    }
}

ssize_t sock_write(struct sock *s, const void *p, size_t n)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t r = send(s->fd, p, n, MSG_NOSIGNAL);
            if (r >= 0) return r;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return SOCK_AGAIN;
            return SOCK_ERR;
        }
    }
    s->want_write = false;
    ERR_clear_error();
    int r = SSL_write(s->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0) return r;
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_WRITE:
        s->want_write = true;
        return SOCK_AGAIN;
    case SSL_ERROR_WANT_READ:
        return SOCK_AGAIN;
    default:
        return SOCK_ERR;
    }
}

size_t sock_pending(const struct sock *s)
{
    return s->ssl ? (size_t)SSL_pending(s->ssl) : 0;
}

void sock_close(struct sock *s)
{
    if (s->ssl) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}
