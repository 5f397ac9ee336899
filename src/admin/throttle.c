/*
 * throttle.c: failed bearer tokens per client address, so that the admin API cannot be used
 * to guess tokens. An address with ADMIN_FAIL_MAX failures inside one ADMIN_FAIL_WINDOW
 * (seconds, counted from its first failure) is refused with 429 before any token is checked,
 * until that window ends: a right guess then looks the same as a wrong one. A successful
 * sign-in does not reset the count. IPv6 clients are counted by their /64 (one host usually
 * has a whole /64). The table holds ADMIN_FAIL_SLOTS addresses; when it is full, the oldest
 * address that is not refused makes room, so that many addresses cannot free a refused one.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "admin/admin_int.h"

#define ADMIN_FAIL_SLOTS 256

struct fail_slot {
    unsigned char addr[16]; /* IPv6 /64, or IPv4 mapped into IPv6 */
    bool used;
    int64_t since; /* start of the window (seconds) */
    unsigned fails;
};

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fail_slot slots[ADMIN_FAIL_SLOTS];

/* The 16-byte key of an address; false for families without one (Unix sockets). */
static bool addr_key(const struct sockaddr *sa, unsigned char out[16])
{
    if (!sa) return false;
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out, v4mapped, 12) != 0) memset(out + 8, 0, 8); /* the /64 */
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    return false;
}

/* The slot of key (its window still open), or NULL. Caller holds fail_lock. */
static struct fail_slot *slot_find(const unsigned char key[16], int64_t now)
{
    for (unsigned i = 0; i < ADMIN_FAIL_SLOTS; i++)
        if (slots[i].used && now - slots[i].since < ADMIN_FAIL_WINDOW &&
            memcmp(slots[i].addr, key, 16) == 0)
            return &slots[i];
    return NULL;
}

unsigned admin_throttle_wait(const struct sockaddr *sa, int64_t now)
{
    unsigned char key[16];
    if (!addr_key(sa, key)) return 0;
    pthread_mutex_lock(&fail_lock);
    struct fail_slot *s = slot_find(key, now);
    unsigned wait =
        s && s->fails >= ADMIN_FAIL_MAX ? (unsigned)(s->since + ADMIN_FAIL_WINDOW - now) : 0;
    pthread_mutex_unlock(&fail_lock);
    return wait;
}

void admin_throttle_failed(const struct sockaddr *sa, int64_t now)
{
    unsigned char key[16];
    if (!addr_key(sa, key)) return;
    pthread_mutex_lock(&fail_lock);
    struct fail_slot *s = slot_find(key, now);
    if (!s) {
        /* a free or expired slot, else the oldest not refused, else the oldest */
        struct fail_slot *open = NULL, *oldest = &slots[0];
        for (unsigned i = 0; i < ADMIN_FAIL_SLOTS; i++) {
            struct fail_slot *c = &slots[i];
            if (!c->used || now - c->since >= ADMIN_FAIL_WINDOW) {
                s = c;
                break;
            }
            if (c->fails < ADMIN_FAIL_MAX && (!open || c->since < open->since)) open = c;
            if (c->since < oldest->since) oldest = c;
        }
        if (!s) s = open ? open : oldest;
        memcpy(s->addr, key, 16);
        s->used = true;
        s->since = now;
        s->fails = 0;
    }
    s->fails++;
    pthread_mutex_unlock(&fail_lock);
}

int64_t admin_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

void admin_throttle_reset(void)
{
    pthread_mutex_lock(&fail_lock);
    memset(slots, 0, sizeof slots);
    pthread_mutex_unlock(&fail_lock);
}
