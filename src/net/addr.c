/*
 * addr.c: address parsing, listeners and non-blocking connects.
 */
#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

int net_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
    char host[256];
    const char *colon;
    memset(out, 0, sizeof *out);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host) return -1;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host) return -1;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || colon[1] == 0) return -1;
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (strcmp(host, "*") == 0 || host[0] == 0) strcpy(host, "0.0.0.0");
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    return -1;
}

int net_listen(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)addr, len) < 0 || listen(fd, 1024) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void set_tcp_opts(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

int net_connect_addr(const struct sockaddr_storage *addr, socklen_t len, char *err, size_t errlen)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto fail_errno;
    if (addr->ss_family != AF_UNIX) set_tcp_opts(fd);
    if (connect(fd, (const struct sockaddr *)addr, len) < 0 && errno != EINPROGRESS &&
        errno != EAGAIN) {
        int e = errno;
        close(fd);
        errno = e;
        goto fail_errno;
    }
    return fd;
fail_errno:
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
}

int net_resolve(const char *host, unsigned port, struct net_addr **out, char *err, size_t errlen)
{
    *out = NULL;
    if (host[0] == '/') {
        struct net_addr *a = calloc(1, sizeof *a);
        if (!a) goto no_memory;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->addr;
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path, sizeof un->sun_path, "%s/.s.PGSQL.%u", host, port);
        if (n < 0 || (size_t)n >= sizeof un->sun_path) {
            free(a);
            snprintf(err, errlen, "unix socket path too long");
            return -1;
        }
        a->len = sizeof *un;
        *out = a;
        return 1;
    }
    /* Numeric addresses resolve without blocking; host names go through the resolver,
     * which may block the calling thread briefly. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    int n = 0;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        n++;
    struct net_addr *v = calloc((size_t)n, sizeof *v);
    if (!v) {
        freeaddrinfo(res);
        goto no_memory;
    }
    n = 0;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_addrlen > sizeof v[n].addr) continue;
        memcpy(&v[n].addr, a->ai_addr, a->ai_addrlen);
        v[n++].len = a->ai_addrlen;
    }
    freeaddrinfo(res);
    if (!n) {
        free(v);
        snprintf(err, errlen, "cannot resolve \"%s\": no usable address", host);
        return -1;
    }
    *out = v;
    return n;
no_memory:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int net_connect_result(int fd)
{
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0) return -1;
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

bool net_is_loopback(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_UNIX) return true;
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
        return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    }
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return true;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return v6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

void net_addr_text(const struct sockaddr_storage *addr, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        port = ntohs(v4->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
        port = ntohs(v6->sin6_port);
    } else if (addr->ss_family == AF_UNIX) {
        snprintf(out, outlen, "unix");
        return;
    }
    snprintf(out, outlen, addr->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}
