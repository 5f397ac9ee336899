/*
 * test_ident.c: unit tests of src/ident/ident.c.
 *
 * Secret checks against verifiers (made here and copied from PostgreSQL), unknown and broken
 * identities, the per-thread success cache (hits counted, wrong secrets never cached, keyed by
 * name and verifier, private to each thread), and the failure throttle on a fixed test clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/un.h>

#include <cmocka.h>

#include "ident/ident.h"
#include "pg/scram.h"

#define PG_VERIFIER                                                                                \
    "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"    \
    "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM="

static struct cfg_identity make_identity(char *name, char *hash, bool is_token)
{
    struct cfg_identity id;
    memset(&id, 0, sizeof id);
    id.name = name;
    id.kind = is_token ? IDENT_AGENT : IDENT_HUMAN;
    id.secret_hash = hash;
    id.is_token = is_token;
    return id;
}

static void test_check_secret(void **state)
{
    (void)state;
    char hash[200];
    assert_int_equal(ident_hash_secret("tok-123-secret", hash, sizeof hash), 0);
    assert_memory_equal(hash, "SCRAM-SHA-256$4096:", 19);
    assert_int_equal(ident_hash_secret("tok-123-secret", hash, 20), -1);
    assert_int_equal(ident_hash_secret("tok-123-secret", hash, sizeof hash), 0);

    struct cfg_identity tok = make_identity("copilot", hash, true);
    ident_cache_clear();
    assert_true(ident_check_secret(&tok, "copilot", "tok-123-secret", 14));
    assert_true(ident_check_secret(&tok, NULL, "tok-123-secret", 14)); /* name from id */
    assert_false(ident_check_secret(&tok, "copilot", "tok-123-secreT", 14));
    assert_false(ident_check_secret(&tok, "copilot", "tok-123-secret", 13)); /* length counts */
    assert_false(ident_check_secret(&tok, "copilot", "", 0));
    assert_false(ident_check_secret(&tok, "copilot", NULL, 0));

    struct cfg_identity alice = make_identity("alice@corp.com", PG_VERIFIER, false);
    assert_true(ident_check_secret(&alice, "alice@corp.com", "correct horse", 13));
    assert_false(ident_check_secret(&alice, "alice@corp.com", "correct horse\0", 14));
    assert_false(ident_check_secret(&alice, "alice@corp.com", "wrong", 5));
}

static void test_unknown_identity(void **state)
{
    (void)state;
    ident_cache_clear();
    assert_false(ident_check_secret(NULL, "nobody@corp.com", "correct horse", 13));
    assert_false(ident_check_secret(NULL, "nobody@corp.com", "", 0));
    assert_false(ident_check_secret(NULL, NULL, "x", 1));
    /* identities with no verifier or a broken one never match */
    struct cfg_identity none = make_identity("svc", NULL, true);
    assert_false(ident_check_secret(&none, "svc", "anything", 8));
    struct cfg_identity broken = make_identity("svc", "SCRAM-SHA-256$4096:zz", true);
    assert_false(ident_check_secret(&broken, "svc", "anything", 8));
    struct cfg_identity md5 = make_identity("svc", "md5d6a35858d61d85e4a82ab1fb044aba9d", true);
    assert_false(ident_check_secret(&md5, "svc", "anything", 8));
    assert_int_equal(ident_cache_hits(), 0);
}

static void test_cache(void **state)
{
    (void)state;
    struct cfg_identity alice = make_identity("alice@corp.com", PG_VERIFIER, false);
    ident_cache_clear();
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 0);
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 1);
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 2);

    /* failures are never cached and never hit */
    assert_false(ident_check_secret(&alice, NULL, "wrong", 5));
    assert_false(ident_check_secret(&alice, NULL, "wrong", 5));
    assert_false(ident_check_secret(&alice, NULL, "correct horsE", 13));
    assert_int_equal(ident_cache_hits(), 2);

    /* the key covers the name: same verifier under another name misses (then is cached) */
    struct cfg_identity bob = make_identity("bob@corp.com", PG_VERIFIER, false);
    assert_true(ident_check_secret(&bob, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 2);

    /* the key covers the verifier: a changed hash for the same name misses */
    char hash[200];
    assert_int_equal(ident_hash_secret("correct horse", hash, sizeof hash), 0);
    struct cfg_identity alice2 = make_identity("alice@corp.com", hash, false);
    assert_true(ident_check_secret(&alice2, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 2);
    /* and a rotated secret is not accepted from the old cache entry */
    char hash2[200];
    assert_int_equal(ident_hash_secret("new secret", hash2, sizeof hash2), 0);
    struct cfg_identity alice3 = make_identity("alice@corp.com", hash2, false);
    assert_false(ident_check_secret(&alice3, NULL, "correct horse", 13));
    assert_true(ident_check_secret(&alice3, NULL, "new secret", 10));
    assert_int_equal(ident_cache_hits(), 2);

    /* clear drops every entry */
    ident_cache_clear();
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 0);
}

struct thread_result {
    unsigned long hits_before, hits_after;
    bool ok;
};

static void *cache_thread(void *arg)
{
    struct thread_result *r = arg;
    struct cfg_identity alice = make_identity("alice@corp.com", PG_VERIFIER, false);
    r->hits_before = ident_cache_hits();
    r->ok = ident_check_secret(&alice, NULL, "correct horse", 13);
    r->hits_after = ident_cache_hits();
    return NULL;
}

static void test_cache_per_thread(void **state)
{
    (void)state;
    struct cfg_identity alice = make_identity("alice@corp.com", PG_VERIFIER, false);
    ident_cache_clear();
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_true(ident_check_secret(&alice, NULL, "correct horse", 13));
    assert_int_equal(ident_cache_hits(), 1);
    /* another thread starts with an empty cache: its first check is a miss */
    pthread_t t;
    struct thread_result r = {0};
    assert_int_equal(pthread_create(&t, NULL, cache_thread, &r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(r.ok);
    assert_int_equal(r.hits_before, 0);
    assert_int_equal(r.hits_after, 0);
}

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    return ss;
}

static void test_throttle_delays(void **state)
{
    (void)state;
    ident_throttle_reset();
    ident_test_set_clock(1000000);
    struct sockaddr_storage a = v4("10.0.0.1", 5000), a2 = v4("10.0.0.1", 6000);
    struct sockaddr_storage b = v4("10.0.0.2", 5000);
    static const unsigned expect[] = {0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000, 8000};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        if (ident_fail_delay_ms(&a) != expect[i])
            fail_msg("after %zu failures: %u ms, want %u", i, ident_fail_delay_ms(&a), expect[i]);
        ident_record_failure(&a, "alice");
        ident_test_set_clock(1000000 + 1000 * (i + 1));
    }
    /* port does not matter, other addresses are untouched */
    assert_int_equal(ident_fail_delay_ms(&a2), 8000);
    assert_int_equal(ident_fail_delay_ms(&b), 0);

    /* another name's success leaves the count; the failing name's own forgets it */
    ident_record_success(&a2, "etl");
    assert_int_equal(ident_fail_delay_ms(&a), 8000);
    ident_record_success(&a2, "alice");
    assert_int_equal(ident_fail_delay_ms(&a), 0);
    /* failures for two names: no success forgets them (a guess at alice, a failure and
     * then a success of one's own etl must not reset the guessing) */
    struct sockaddr_storage d = v4("10.0.0.4", 1);
    for (int i = 0; i < 3; i++)
        ident_record_failure(&d, "alice");
    ident_record_failure(&d, "etl");
    ident_record_success(&d, "etl");
    assert_int_equal(ident_fail_delay_ms(&d), 500);
    ident_record_success(&d, "alice");
    assert_int_equal(ident_fail_delay_ms(&d), 500);

    /* the 60 s window: three failures, then quiet for more than a minute */
    ident_test_set_clock(2000000);
    for (int i = 0; i < 4; i++)
        ident_record_failure(&b, "alice");
    assert_int_equal(ident_fail_delay_ms(&b), 500);
    ident_test_set_clock(2000000 + 60000);
    assert_int_equal(ident_fail_delay_ms(&b), 500);
    ident_test_set_clock(2000000 + 60001);
    assert_int_equal(ident_fail_delay_ms(&b), 0);
    ident_record_failure(&b, "alice"); /* count restarts at 1 */
    assert_int_equal(ident_fail_delay_ms(&b), 0);
    ident_record_failure(&b, "alice");
    ident_record_failure(&b, "alice");
    assert_int_equal(ident_fail_delay_ms(&b), 250);

    /* a secret sent before the last failure's delay ran out is not checked */
    ident_test_set_clock(3000000);
    struct sockaddr_storage c = v4("10.0.0.3", 5000);
    for (int i = 0; i < 2; i++)
        ident_record_failure(&c, "alice");
    assert_int_equal(ident_blocked_ms(&c), 0); /* answered at once */
    ident_record_failure(&c, "alice");
    ident_record_failure(&c, "alice"); /* (auth_failed answers the fourth after 500 ms) */
    ident_test_set_clock(3000000 + 100);
    assert_int_equal(ident_blocked_ms(&c), 400);
    ident_test_set_clock(3000000 + 500);
    assert_int_equal(ident_blocked_ms(&c), 0);
    assert_int_equal(ident_blocked_ms(&a2), 0); /* (forgotten after its success) */
    ident_test_set_clock(0);
}

static void test_throttle_addresses(void **state)
{
    (void)state;
    ident_throttle_reset();
    ident_test_set_clock(5000000);
    /* IPv4-mapped IPv6 is the same client as IPv4 */
    struct sockaddr_storage a = v4("192.0.2.7", 1), m = v6("::ffff:192.0.2.7", 2);
    struct sockaddr_storage x = v6("2001:db8::7", 3), y = v6("2001:db8::8", 3);
    for (int i = 0; i < 3; i++)
        ident_record_failure(&m, "alice");
    assert_int_equal(ident_fail_delay_ms(&a), 250);
    for (int i = 0; i < 4; i++)
        ident_record_failure(&x, "alice");
    assert_int_equal(ident_fail_delay_ms(&x), 500);
    assert_int_equal(ident_fail_delay_ms(&y), 0);
    /* Unix-socket clients share one entry; a NULL address counts as one too */
    struct sockaddr_storage u;
    memset(&u, 0, sizeof u);
    u.ss_family = AF_UNIX;
    for (int i = 0; i < 3; i++)
        ident_record_failure(&u, "alice");
    assert_int_equal(ident_fail_delay_ms(&u), 250);
    assert_int_equal(ident_fail_delay_ms(NULL), 250);
    ident_test_set_clock(0);
}

static void test_throttle_bounded(void **state)
{
    (void)state;
    ident_throttle_reset();
    uint64_t now = 9000000;
    ident_test_set_clock(now);
    /* many addresses: the table stays bounded and recent offenders keep their count */
    struct sockaddr_storage hot = v4("203.0.113.9", 1);
    for (int i = 0; i < 5; i++)
        ident_record_failure(&hot, "alice");
    for (unsigned i = 0; i < 20000; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        struct sockaddr_storage s = v4(ip, 1);
        ident_test_set_clock(++now);
        ident_record_failure(&s, "alice");
        if (i % 64 == 0) ident_record_failure(&hot, "alice"); /* keeps it recent */
    }
    assert_true(ident_fail_delay_ms(&hot) >= 8000);
    /* the last address added is there with one failure; an early one was evicted */
    struct sockaddr_storage last = v4("10.0.78.31", 1); /* i = 19999 */
    ident_record_failure(&last, "alice");
    ident_record_failure(&last, "alice");
    assert_int_equal(ident_fail_delay_ms(&last), 250);
    struct sockaddr_storage first = v4("10.0.0.0", 1);
    ident_record_failure(&first, "alice");
    assert_int_equal(ident_fail_delay_ms(&first), 0);
    ident_test_set_clock(0);
}

struct hammer_arg {
    unsigned base;
};

static void *throttle_hammer(void *arg)
{
    struct hammer_arg *h = arg;
    for (unsigned i = 0; i < 20000; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "172.16.%u.%u", h->base, i & 255);
        struct sockaddr_storage s = v4(ip, 1);
        ident_record_failure(&s, "alice");
        (void)ident_fail_delay_ms(&s);
        if (i % 7 == 0) ident_record_success(&s, "alice");
    }
    return NULL;
}

static void test_throttle_threads(void **state)
{
    (void)state;
    ident_throttle_reset();
    pthread_t t[4];
    struct hammer_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i].base = i;
        assert_int_equal(pthread_create(&t[i], NULL, throttle_hammer, &args[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    ident_throttle_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_secret),
        cmocka_unit_test(test_unknown_identity),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_cache_per_thread),
        cmocka_unit_test(test_throttle_delays),
        cmocka_unit_test(test_throttle_addresses),
        cmocka_unit_test(test_throttle_bounded),
        cmocka_unit_test(test_throttle_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
