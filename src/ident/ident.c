/*
 * ident.c: secret verification for static users and tokens, its per-thread success cache, and
 * per-address failure throttling.
 *
 * Verification is SCRAM's StoredKey comparison (pg/scram.h). An unknown name is checked
 * against a mock verifier derived from the name, so it costs one PBKDF2 just like a known one.
 * The cache is a direct-mapped, thread-local table of 256 keyed digests: a slot holds
 * SHA-256(process key, name, verifier text, secret) of a secret that matched, never the secret.
 * The throttle table is a fixed 4096-slot open-addressing table under one mutex; a lookup
 * probes a window of 8 slots and evicts the least recently failing entry in that window.
 */
#include "ident/ident.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "pg/scram.h"

#define CACHE_SLOTS 256
#define THROTTLE_SLOTS 4096
#define THROTTLE_PROBE 8
#define THROTTLE_WINDOW_MS 60000u
#define THROTTLE_FREE_FAILURES 3u
#define THROTTLE_BASE_MS 250u
#define THROTTLE_MAX_MS 8000u

/* ---------------------------------------------------------------- process key */

static unsigned char process_key[32];
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_init(void)
{
    if (RAND_bytes(process_key, sizeof process_key) != 1) {
        fprintf(stderr, "sluice: RAND_bytes failed\n");
        abort();
    }
}

/* ---------------------------------------------------------------- success cache */

struct cache_slot {
    bool used;
    unsigned char key[32];
};

static _Thread_local struct cache_slot cache[CACHE_SLOTS];
static _Thread_local unsigned long cache_hit_count;

static int digest_part(EVP_MD_CTX *ctx, const void *data, size_t len)
{
    unsigned char n[8];
    for (int i = 0; i < 8; i++)
        n[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return EVP_DigestUpdate(ctx, n, sizeof n) && EVP_DigestUpdate(ctx, data, len) ? 0 : -1;
}

static int cache_key(const char *name, const char *verifier, const char *secret, size_t len,
                     unsigned char out[32])
{
    pthread_once(&process_key_once, process_key_init);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int outlen = 0;
    int rc = -1;
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
        EVP_DigestUpdate(ctx, process_key, sizeof process_key) &&
        digest_part(ctx, name, strlen(name)) == 0 &&
        digest_part(ctx, verifier, strlen(verifier)) == 0 && digest_part(ctx, secret, len) == 0 &&
        EVP_DigestFinal_ex(ctx, out, &outlen) && outlen == 32)
        rc = 0;
    EVP_MD_CTX_free(ctx);
    return rc;
}

void ident_cache_clear(void)
{
    memset(cache, 0, sizeof cache);
    cache_hit_count = 0;
}

unsigned long ident_cache_hits(void)
{
    return cache_hit_count;
}

bool ident_check_secret(const struct cfg_identity *id, const char *name, const char *secret,
                        size_t len)
{
    struct scram_verifier v;
    if (!name) name = id && id->name ? id->name : "";
    if (!secret) {
        secret = "";
        len = 0;
    }

    if (!id || !id->secret_hash || scram_verifier_parse(id->secret_hash, &v) < 0) {
        /* Unknown name (or an identity without a usable verifier): same work, never a match. */
        scram_verifier_mock(name, &v);
        (void)scram_check_secret(&v, secret, len);
        return false;
    }

    unsigned char key[32];
    bool have_key = cache_key(name, id->secret_hash, secret, len, key) == 0;
    if (have_key) {
        struct cache_slot *s = &cache[key[0] % CACHE_SLOTS];
        if (s->used && CRYPTO_memcmp(s->key, key, sizeof key) == 0) {
            cache_hit_count++;
            return true;
        }
    }
    bool ok = scram_check_secret(&v, secret, len);
    if (ok && have_key) {
        struct cache_slot *s = &cache[key[0] % CACHE_SLOTS];
        s->used = true;
        memcpy(s->key, key, sizeof key);
    }
    OPENSSL_cleanse(key, sizeof key);
    return ok;
}

int ident_hash_secret(const char *secret, char *out, size_t outcap)
{
    return scram_verifier_make(secret, SCRAM_DEFAULT_ITERATIONS, out, outcap);
}

/* ---------------------------------------------------------------- throttle */

struct addr_key {
    unsigned char family; /* 4, 6, or 1 for Unix sockets and anything else */
    unsigned char addr[16];
};

struct throttle_slot {
    bool used;
    bool mixed; /* the failures in the window were for more than one user name */
    struct addr_key key;
    unsigned failures;
    uint64_t last_fail_ms;
    uint64_t user; /* name_hash() of the user name of the failures (when not mixed) */
};

static pthread_mutex_t throttle_lock = PTHREAD_MUTEX_INITIALIZER;
static struct throttle_slot throttle[THROTTLE_SLOTS];
static uint64_t test_clock_ms;

void ident_test_set_clock(uint64_t now_ms)
{
    pthread_mutex_lock(&throttle_lock);
    test_clock_ms = now_ms;
    pthread_mutex_unlock(&throttle_lock);
}

void ident_throttle_reset(void)
{
    pthread_mutex_lock(&throttle_lock);
    memset(throttle, 0, sizeof throttle);
    pthread_mutex_unlock(&throttle_lock);
}

/* Caller holds throttle_lock. */
static uint64_t now_ms(void)
{
    if (test_clock_ms) return test_clock_ms;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void addr_key_make(const struct sockaddr_storage *ss, struct addr_key *k)
{
    memset(k, 0, sizeof *k);
    if (ss && ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        k->family = 4;
        memcpy(k->addr, &in->sin_addr, 4);
    } else if (ss && ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            k->family = 4;
            memcpy(k->addr, &in6->sin6_addr.s6_addr[12], 4);
        } else {
            k->family = 6;
            memcpy(k->addr, &in6->sin6_addr, 16);
        }
    } else {
        k->family = 1;
    }
}

static size_t addr_hash(const struct addr_key *k)
{
    pthread_once(&process_key_once, process_key_init);
    /* FNV-1a seeded with the process key, so clients cannot aim at one probe window */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < 8; i++)
        h = (h ^ process_key[i]) * 1099511628211ull;
    const unsigned char *b = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

/* A user name, keyed with the process key (names are not kept in the table). */
static uint64_t name_hash(const char *name)
{
    pthread_once(&process_key_once, process_key_init);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < 8; i++)
        h = (h ^ process_key[i]) * 1099511628211ull;
    for (const unsigned char *p = (const unsigned char *)(name ? name : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* Caller holds throttle_lock. The slot for k, or NULL. */
static struct throttle_slot *throttle_find(const struct addr_key *k, size_t h)
{
    for (size_t i = 0; i < THROTTLE_PROBE; i++) {
        struct throttle_slot *s = &throttle[(h + i) % THROTTLE_SLOTS];
        if (s->used && memcmp(&s->key, k, sizeof *k) == 0) return s;
    }
    return NULL;
}

static bool expired(const struct throttle_slot *s, uint64_t now)
{
    return now - s->last_fail_ms > THROTTLE_WINDOW_MS;
}

static unsigned delay_for(unsigned failures)
{
    if (failures < THROTTLE_FREE_FAILURES) return 0;
    unsigned shift = failures - THROTTLE_FREE_FAILURES;
    if (shift >= 6) return THROTTLE_MAX_MS;
    unsigned d = THROTTLE_BASE_MS << shift;
    return d > THROTTLE_MAX_MS ? THROTTLE_MAX_MS : d;
}

/* The delay the answer to this address's last failure got (its failures counted with it),
 * and how much of it is left; both 0 for an address with no failure in the window. */
static void throttle_state(const struct sockaddr_storage *addr, unsigned *delay, unsigned *left)
{
    struct addr_key k;
    addr_key_make(addr, &k);
    size_t h = addr_hash(&k);
    *delay = *left = 0;
    pthread_mutex_lock(&throttle_lock);
    uint64_t now = now_ms();
    struct throttle_slot *s = throttle_find(&k, h);
    if (s && !expired(s, now)) {
        *delay = delay_for(s->failures);
        uint64_t until = s->last_fail_ms + *delay;
        if (until > now) *left = (unsigned)(until - now);
    }
    pthread_mutex_unlock(&throttle_lock);
}

unsigned ident_fail_delay_ms(const struct sockaddr_storage *addr)
{
    unsigned delay, left;
    throttle_state(addr, &delay, &left);
    return delay;
}

unsigned ident_blocked_ms(const struct sockaddr_storage *addr)
{
    unsigned delay, left;
    throttle_state(addr, &delay, &left);
    return left;
}

void ident_record_failure(const struct sockaddr_storage *addr, const char *user)
{
    uint64_t u = name_hash(user);
    struct addr_key k;
    addr_key_make(addr, &k);
    size_t h = addr_hash(&k);
    pthread_mutex_lock(&throttle_lock);
    uint64_t now = now_ms();
    struct throttle_slot *s = throttle_find(&k, h);
    if (!s) {
        /* a free slot in the window, else the least recently failing one */
        for (size_t i = 0; i < THROTTLE_PROBE; i++) {
            struct throttle_slot *c = &throttle[(h + i) % THROTTLE_SLOTS];
            if (!c->used) {
                s = c;
                break;
            }
            if (!s || c->last_fail_ms < s->last_fail_ms) s = c;
        }
        memset(s, 0, sizeof *s);
        s->used = true;
        s->key = k;
    } else if (expired(s, now)) {
        s->failures = 0;
        s->mixed = false;
    }
    if (s->failures && s->user != u) s->mixed = true;
    s->user = u;
    if (s->failures < 1000) s->failures++;
    s->last_fail_ms = now;
    pthread_mutex_unlock(&throttle_lock);
}

void ident_record_success(const struct sockaddr_storage *addr, const char *user)
{
    struct addr_key k;
    addr_key_make(addr, &k);
    size_t h = addr_hash(&k);
    uint64_t u = name_hash(user);
    pthread_mutex_lock(&throttle_lock);
    struct throttle_slot *s = throttle_find(&k, h);
    /* Only the user whose every failure this was forgets them (a typo, then the right
     * password): a login of another name must not restart someone else's guessing count. */
    if (s && !s->mixed && s->user == u) memset(s, 0, sizeof *s);
    pthread_mutex_unlock(&throttle_lock);
}
