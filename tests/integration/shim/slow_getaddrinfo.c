/*
 * slow_getaddrinfo.c: an LD_PRELOAD shim for the integration tests (test_auth.py): a lookup
 * of a host name that starts with "slow<N>-" sleeps N tenths of a second before it goes on to
 * the next getaddrinfo() (nss_wrapper's, with the test's hosts file): a DNS server that
 * answers late, for the process that preloads it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    getaddrinfo_fn next = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (!next) return EAI_SYSTEM;
    if (node && strncmp(node, "slow", 4) == 0) {
        long tenths = strtol(node + 4, NULL, 10);
        struct timespec ts = {tenths / 10, (tenths % 10) * 100000000L};
        nanosleep(&ts, NULL);
    }
    return next(node, service, hints, res);
}
