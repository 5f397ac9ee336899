/*
 * test_scram.c: unit tests of src/pg/scram.c.
 *
 * Known answers from RFC 7677 (both sides, with fixed nonces) and from a real PostgreSQL 15
 * (verifiers copied out of pg_authid), a full exchange between our own client and server,
 * wrong passwords, hostile and malformed messages on every parser, base64 edge cases and the
 * md5 response (expected values computed with Python's hashlib).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pg/scram.h"

/* RFC 7677 section 3 */
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_FIRST                                                                           \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                           \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfM"  \
    "Hgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
#define RFC_COMBINED_NONCE "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

/* From PostgreSQL 15: CREATE ROLE ... PASSWORD with password_encryption = scram-sha-256. */
#define PG_VERIFIER_1                                                                              \
    "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"    \
    "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM="
#define PG_PASSWORD_1 "correct horse"
#define PG_VERIFIER_2                                                                              \
    "SCRAM-SHA-256$4096:+S5b6tqeg95EwP2Zp8WcCQ==$ZOYcIK7ERzFn4+vNV9gqavkWoH49qqB2qro88LKYCWE=:"    \
    "L2+pk/3TUThVp/c4Zun+P1lFrQOWLg2F5853QMAnjdE="
#define PG_PASSWORD_2 "p\xc3\xa4ssw\xc3\xb6rd" /* "pässwörd" in UTF-8 */

/* The RFC's verifier: "pencil" with its salt, derived once (PBKDF2 is slow). */
static void rfc_verifier(struct scram_verifier *v)
{
    static struct scram_verifier cached;
    static bool have;
    if (!have) {
        unsigned char salt[64];
        const char *s = "W22ZaJ0SNY7soEsUEjb6gQ==";
        int n = scram_b64_decode(s, strlen(s), salt, sizeof salt);
        assert_int_equal(n, 16);
        assert_int_equal(scram_verifier_derive("pencil", 6, salt, (size_t)n, 4096, &cached), 0);
        have = true;
    }
    *v = cached;
}

/* Start a server with the RFC verifier and nonce, ready for a client-final. */
static void rfc_server_started(struct scram_server *st)
{
    struct scram_verifier v;
    char out[600];
    size_t outlen = 0;
    rfc_verifier(&v);
    scram_server_set_nonce(st, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert_int_equal(scram_server_start(st, &v, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
                                        sizeof out, &outlen),
                     0);
}

static void test_rfc7677_server(void **state)
{
    (void)state;
    struct scram_server st;
    struct scram_verifier v;
    char out[600];
    size_t outlen = 0;
    rfc_verifier(&v);
    scram_server_set_nonce(&st, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert_int_equal(scram_server_start(&st, &v, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
                                        sizeof out, &outlen),
                     0);
    assert_int_equal(outlen, strlen(RFC_SERVER_FIRST));
    assert_string_equal(out, RFC_SERVER_FIRST);
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof out, &outlen),
                     0);
    assert_int_equal(outlen, strlen(RFC_SERVER_FINAL));
    assert_string_equal(out, RFC_SERVER_FINAL);
    /* the exchange is over: a second finish is refused */
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof out, &outlen),
                     -1);
}

static void test_rfc7677_client(void **state)
{
    (void)state;
    struct scram_client c;
    char out[600];
    size_t outlen = 0;
    scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO", "user");
    assert_int_equal(scram_client_start(&c, out, sizeof out, &outlen), 0);
    assert_string_equal(out, RFC_CLIENT_FIRST);
    assert_int_equal(outlen, strlen(RFC_CLIENT_FIRST));
    assert_int_equal(scram_client_continue(&c, "pencil", RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST),
                                           out, sizeof out, &outlen),
                     0);
    assert_string_equal(out, RFC_CLIENT_FINAL);
    assert_int_equal(outlen, strlen(RFC_CLIENT_FINAL));
    assert_int_equal(scram_client_finish(&c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)), 0);

    /* a tampered server signature fails */
    char bad[] = RFC_SERVER_FINAL;
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO", "user");
    assert_int_equal(scram_client_start(&c, out, sizeof out, &outlen), 0);
    assert_int_equal(scram_client_continue(&c, "pencil", RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST),
                                           out, sizeof out, &outlen),
                     0);
    assert_int_equal(scram_client_finish(&c, bad, strlen(bad)), -1);

    /* a wrong password gives a different proof and the real server signature does not verify */
    scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO", "user");
    assert_int_equal(scram_client_start(&c, out, sizeof out, &outlen), 0);
    assert_int_equal(scram_client_continue(&c, "pencil2", RFC_SERVER_FIRST,
                                           strlen(RFC_SERVER_FIRST), out, sizeof out, &outlen),
                     0);
    assert_string_not_equal(out, RFC_CLIENT_FINAL);
    assert_int_equal(scram_client_finish(&c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)), -1);
}

/* Our client against our server. Returns the server_finish result. */
static int exchange(const struct scram_verifier *v, const char *password, bool *client_ok)
{
    struct scram_server s;
    struct scram_client c;
    char a[600], b[600];
    size_t alen = 0, blen = 0;
    memset(&s, 0, sizeof s);
    memset(&c, 0, sizeof c);
    assert_int_equal(scram_client_start(&c, a, sizeof a, &alen), 0);
    assert_int_equal(alen, strlen(a));
    assert_memory_equal(a, "n,,n=,r=", 8);
    assert_int_equal(alen, 8 + SCRAM_NONCE_LEN);
    assert_int_equal(scram_server_start(&s, v, a, alen, b, sizeof b, &blen), 0);
    assert_int_equal(scram_client_continue(&c, password, b, blen, a, sizeof a, &alen), 0);
    int rc = scram_server_finish(&s, a, alen, b, sizeof b, &blen);
    if (rc == 0) *client_ok = scram_client_finish(&c, b, blen) == 0;
    return rc;
}

static void test_full_exchange(void **state)
{
    (void)state;
    char text[200];
    struct scram_verifier v;
    bool client_ok = false;
    assert_int_equal(scram_verifier_make("s3cret!", SCRAM_DEFAULT_ITERATIONS, text, sizeof text),
                     0);
    assert_memory_equal(text, "SCRAM-SHA-256$4096:", 19);
    assert_int_equal(scram_verifier_parse(text, &v), 0);
    assert_int_equal(v.iterations, 4096);
    assert_int_equal(v.salt_len, 16);
    assert_int_equal(exchange(&v, "s3cret!", &client_ok), 0);
    assert_true(client_ok);

    /* two verifiers of the same secret differ (random salt) but both accept it */
    char text2[200];
    assert_int_equal(scram_verifier_make("s3cret!", 4096, text2, sizeof text2), 0);
    assert_string_not_equal(text, text2);
    /* outcap too small */
    assert_int_equal(scram_verifier_make("s3cret!", 4096, text2, 50), -1);
    assert_int_equal(scram_verifier_make("s3cret!", 0, text2, sizeof text2), -1);
}

static void test_wrong_password(void **state)
{
    (void)state;
    struct scram_verifier v;
    bool client_ok = false;
    assert_int_equal(scram_verifier_parse(PG_VERIFIER_1, &v), 0);
    assert_int_equal(exchange(&v, PG_PASSWORD_1, &client_ok), 0);
    assert_true(client_ok);
    assert_int_equal(exchange(&v, "correct horsE", &client_ok), -2);
    assert_int_equal(exchange(&v, "", &client_ok), -2);

    /* a mock verifier never accepts, and looks like a real one */
    struct scram_verifier m1, m2, m3;
    scram_verifier_mock("nobody@corp.com", &m1);
    scram_verifier_mock("nobody@corp.com", &m2);
    scram_verifier_mock("other@corp.com", &m3);
    assert_memory_equal(&m1, &m2, sizeof m1);
    assert_memory_not_equal(m1.salt, m3.salt, 16);
    assert_int_equal(m1.iterations, 4096);
    assert_int_equal(m1.salt_len, 16);
    assert_int_equal(exchange(&m1, "", &client_ok), -2);
    assert_int_equal(exchange(&m1, "anything", &client_ok), -2);
    assert_false(scram_check_secret(&m1, "anything", 8));
}

static void test_postgres_verifiers(void **state)
{
    (void)state;
    struct scram_verifier v;
    char text[200];
    assert_int_equal(scram_verifier_parse(PG_VERIFIER_1, &v), 0);
    assert_true(scram_check_secret(&v, PG_PASSWORD_1, strlen(PG_PASSWORD_1)));
    assert_false(scram_check_secret(&v, "correct hors", 12));
    assert_false(scram_check_secret(&v, "correct horse ", 14));
    /* embedded NUL: HMAC zero-pads keys, so this would derive the same keys; it is refused */
    assert_false(scram_check_secret(&v, "correct horse\0", 14));
    assert_int_equal(scram_verifier_format(&v, text, sizeof text), 0);
    assert_string_equal(text, PG_VERIFIER_1);

    assert_int_equal(scram_verifier_parse(PG_VERIFIER_2, &v), 0);
    assert_true(scram_check_secret(&v, PG_PASSWORD_2, strlen(PG_PASSWORD_2)));
    assert_false(scram_check_secret(&v, "passwort", 8));
    assert_int_equal(scram_verifier_format(&v, text, sizeof text), 0);
    assert_string_equal(text, PG_VERIFIER_2);
    assert_int_equal(scram_verifier_format(&v, text, 40), -1);

    /* our derive reproduces PostgreSQL's keys from the same salt */
    struct scram_verifier d;
    assert_int_equal(scram_verifier_parse(PG_VERIFIER_1, &v), 0);
    assert_int_equal(scram_verifier_derive(PG_PASSWORD_1, strlen(PG_PASSWORD_1), v.salt, v.salt_len,
                                           v.iterations, &d),
                     0);
    assert_memory_equal(d.stored_key, v.stored_key, SCRAM_KEY_LEN);
    assert_memory_equal(d.server_key, v.server_key, SCRAM_KEY_LEN);
}

static void test_verifier_parse_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "md5abcdef",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096",
        "SCRAM-SHA-256$4096:",
        "SCRAM-SHA-1$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        /* iterations: zero, negative, huge, not a number */
        "SCRAM-SHA-256$0:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$-1:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$99999999999:5fwBl+pWSuA/"
        "0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9"
        "TIA=:Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$2000000:5fwBl+pWSuA/"
        "0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$abc:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        /* bad base64 salt, empty salt */
        "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHuk!==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$4096:$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        /* short stored key, missing server key, trailing garbage */
        "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
        "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=",
        "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=x",
        "SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
        "Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM= ",
    };
    struct scram_verifier v;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (scram_verifier_parse(bad[i], &v) != -1) fail_msg("accepted bad verifier #%zu", i);
    }
    assert_int_equal(scram_verifier_parse(NULL, &v), -1);
    /* a very long string is refused without reading it all */
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "SCRAM-SHA-256$4096:", 19);
    memset(big + 19, 'A', n - 19);
    big[n] = '\0';
    assert_int_equal(scram_verifier_parse(big, &v), -1);
    free(big);
}

static void test_server_first_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "n",
        "n,",
        "n,,",
        "p=tls-server-end-point,,n=,r=abcdef",
        "n,a=bob,n=,r=abcdef",
        "x,,n=,r=abcdef",
        "n,,r=abcdef",          /* missing n= */
        "n,,n=",                /* missing r= */
        "n,,n=,",               /* missing r= */
        "n,,n=,r=",             /* empty nonce */
        "n,,n=,q=abcdef",       /* wrong attribute */
        "n,,m=ext,n=,r=abcdef", /* mandatory extension */
        "n,,n=,r=abc\001def",   /* control character in nonce */
        "n,,n=,r=abc def",      /* space in nonce */
        "n,,n=,r=abcdef,",      /* trailing comma */
        "nn,n=,r=abcdef",
    };
    struct scram_verifier v;
    char out[600];
    size_t outlen = 0;
    rfc_verifier(&v);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct scram_server st;
        memset(&st, 0, sizeof st);
        if (scram_server_start(&st, &v, bad[i], strlen(bad[i]), out, sizeof out, &outlen) != -1)
            fail_msg("accepted bad client-first #%zu: %s", i, bad[i]);
    }

    /* embedded NUL */
    struct scram_server st;
    memset(&st, 0, sizeof st);
    assert_int_equal(scram_server_start(&st, &v, "n,,n=\0,r=abcdef", 15, out, sizeof out, &outlen),
                     -1);
    /* truncated: the length says less than the string holds */
    memset(&st, 0, sizeof st);
    assert_int_equal(scram_server_start(&st, &v, RFC_CLIENT_FIRST, 8, out, sizeof out, &outlen),
                     -1);
    /* over-long nonce and over-long message */
    char big[2000];
    memcpy(big, "n,,n=,r=", 8);
    memset(big + 8, 'x', sizeof big - 8);
    memset(&st, 0, sizeof st);
    assert_int_equal(
        scram_server_start(&st, &v, big, 8 + SCRAM_MAX_NONCE + 1, out, sizeof out, &outlen), -1);
    memset(&st, 0, sizeof st);
    assert_int_equal(scram_server_start(&st, &v, big, sizeof big, out, sizeof out, &outlen), -1);
    /* the longest nonce is fine */
    memset(&st, 0, sizeof st);
    assert_int_equal(
        scram_server_start(&st, &v, big, 8 + SCRAM_MAX_NONCE, out, sizeof out, &outlen), 0);
    /* out too small */
    memset(&st, 0, sizeof st);
    assert_int_equal(
        scram_server_start(&st, &v, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, 20, &outlen),
        -1);
    /* "y,," is accepted, and then needs c=eSws */
    memset(&st, 0, sizeof st);
    scram_server_set_nonce(&st, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert_int_equal(scram_server_start(&st, &v, "y,,n=user,r=rOprNGfwEbeRWgbNEkqO", 32, out,
                                        sizeof out, &outlen),
                     0);
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof out, &outlen),
                     -1);
    /* started twice */
    rfc_server_started(&st);
    assert_int_equal(scram_server_start(&st, &v, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out,
                                        sizeof out, &outlen),
                     -1);
}

static void test_server_final_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "c=biws",
        "c=biws,r=" RFC_COMBINED_NONCE,                                            /* missing p= */
        "c=biws,r=" RFC_COMBINED_NONCE ",",                                        /* missing p= */
        "c=biws,r=" RFC_COMBINED_NONCE ",p=",                                      /* empty proof */
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",                   /* missing r= */
        "r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* missing c= */
        "c=eSws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" RFC_COMBINED_NONCE
        ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", /* nonce */
        "c=biws,r=" RFC_COMBINED_NONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  /* b64 */
        "c=biws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV!=", /* b64 */
        "c=biws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And===", /* b64 */
        "c=biws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7An",     /* 30 B */
        "c=biws,r=" RFC_COMBINED_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
    };
    char out[600];
    size_t outlen = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct scram_server st;
        rfc_server_started(&st);
        int rc = scram_server_finish(&st, bad[i], strlen(bad[i]), out, sizeof out, &outlen);
        if (rc != -1) fail_msg("client-final #%zu gave %d: %s", i, rc, bad[i]);
    }
    struct scram_server st;
    /* truncated right before the end of the proof */
    rfc_server_started(&st);
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL) - 1, out,
                                         sizeof out, &outlen),
                     -1);
    /* a well-formed but wrong proof is -2 */
    rfc_server_started(&st);
    const char *wrong =
        "c=biws,r=" RFC_COMBINED_NONCE ",p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_int_equal(scram_server_finish(&st, wrong, strlen(wrong), out, sizeof out, &outlen), -2);
    /* an extension before p= is allowed, but it is part of the AuthMessage: proof now wrong */
    rfc_server_started(&st);
    const char *ext =
        "c=biws,r=" RFC_COMBINED_NONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_int_equal(scram_server_finish(&st, ext, strlen(ext), out, sizeof out, &outlen), -2);
    /* finish without start */
    memset(&st, 0, sizeof st);
    assert_int_equal(scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out,
                                         sizeof out, &outlen),
                     -1);
    /* server-final does not fit */
    rfc_server_started(&st);
    assert_int_equal(
        scram_server_finish(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, 10, &outlen), -1);
}

static int client_continue_with(const char *server_first, size_t len)
{
    struct scram_client c;
    char out[600];
    size_t outlen = 0;
    scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO", "user");
    assert_int_equal(scram_client_start(&c, out, sizeof out, &outlen), 0);
    return scram_client_continue(&c, "pencil", server_first, len, out, sizeof out, &outlen);
}

static void test_client_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "r=rOprNGfwEbeRWgbNEkqO",
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* no server part */
        "r=XXprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEb,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                   /* missing r= */
        "r=" RFC_COMBINED_NONCE ",i=4096",                     /* missing s= */
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==", /* missing i= */
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,",
        "r=" RFC_COMBINED_NONCE ",s=,i=4096",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7so sUEjb6gQ==,i=4096",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=abc",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001",    /* above the cap */
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2147483648", /* huge */
        "r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
        "m=ext,r=" RFC_COMBINED_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "e=other-error",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (client_continue_with(bad[i], strlen(bad[i])) != -1)
            fail_msg("accepted bad server-first #%zu: %s", i, bad[i]);
    }
    /* truncated inside i= and before it */
    assert_int_equal(client_continue_with(RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST) - 4), -1);
    assert_int_equal(client_continue_with(RFC_SERVER_FIRST, 40), -1);
    /* the full message with an extension after i= is fine */
    const char *ext = RFC_SERVER_FIRST ",x=y";
    assert_int_equal(client_continue_with(ext, strlen(ext)), 0);
    /* embedded NUL */
    char nul[] = RFC_SERVER_FIRST;
    nul[30] = '\0';
    assert_int_equal(client_continue_with(nul, sizeof nul - 1), -1);

    /* server-final */
    static const char *bad_final[] = {"",
                                      "v=",
                                      "e=invalid-proof",
                                      "v=6rriTRBi23WpRR/wtup+mMhU",
                                      "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
                                      "x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="};
    for (size_t i = 0; i < sizeof bad_final / sizeof bad_final[0]; i++) {
        struct scram_client c;
        char out[600];
        size_t outlen = 0;
        scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO", "user");
        assert_int_equal(scram_client_start(&c, out, sizeof out, &outlen), 0);
        assert_int_equal(scram_client_continue(&c, "pencil", RFC_SERVER_FIRST,
                                               strlen(RFC_SERVER_FIRST), out, sizeof out, &outlen),
                         0);
        if (scram_client_finish(&c, bad_final[i], strlen(bad_final[i])) != -1)
            fail_msg("accepted bad server-final #%zu", i);
    }
    /* order of calls */
    struct scram_client c;
    char out[600];
    size_t outlen = 0;
    memset(&c, 0, sizeof c);
    assert_int_equal(scram_client_finish(&c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)), -1);
    assert_int_equal(scram_client_continue(&c, "pencil", RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST),
                                           out, sizeof out, &outlen),
                     -1);
    assert_int_equal(scram_client_start(&c, out, 10, &outlen), -1);
}

/* Random and mutated input into every parser: nothing may crash (run under ASan too). */
static void test_hostile_random(void **state)
{
    (void)state;
    struct scram_verifier v;
    rfc_verifier(&v);
    srand(12345);
    char buf[700], out[600];
    size_t outlen;
    static const char alphabet[] = "nyrpcsimv=,abcXYZ019+/$%\x01\xff";
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        if (iter % 2) {
            for (size_t i = 0; i < n; i++)
                buf[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        } else {
            /* mutate a valid message */
            const char *base = iter % 4 ? RFC_CLIENT_FINAL : RFC_SERVER_FIRST;
            n = strlen(base);
            memcpy(buf, base, n);
            buf[rand() % (int)n] = alphabet[rand() % (int)(sizeof alphabet - 1)];
            n = (size_t)(rand() % (int)(n + 1));
        }
        struct scram_server st;
        memset(&st, 0, sizeof st);
        (void)scram_server_start(&st, &v, buf, n, out, sizeof out, &outlen);
        rfc_server_started(&st);
        int rc = scram_server_finish(&st, buf, n, out, sizeof out, &outlen);
        assert_true(rc == -1 || rc == -2 || (rc == 0 && n == strlen(RFC_CLIENT_FINAL)));
        if (iter % 16 == 0) { /* PBKDF2 is the slow part: fewer client runs */
            rc = client_continue_with(buf, n);
            assert_true(rc == -1 || rc == 0);
        }
        unsigned char dec[600];
        (void)scram_b64_decode(buf, n, dec, sizeof dec);
    }
}

/* Channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point): the gs2 header must match the
 * mechanism and what was offered, and the client's c= must carry this connection's data. */
static void test_channel_binding(void **state)
{
    (void)state;
    static const unsigned char cb[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    static const char plus_first[] = "p=tls-server-end-point,,n=,r=abcdef";
    struct scram_verifier v;
    struct scram_server st;
    char out[600], msg[400], b64[200];
    size_t outlen = 0;
    rfc_verifier(&v);
    struct {
        bool offered, plus;
        const char *first;
        int want;
    } cases[] = {
        {true, true, plus_first, 0},
        {true, true, "n,,n=,r=abcdef", -1},            /* -PLUS chosen, no binding sent */
        {true, true, "p=tls-unique,,n=,r=abcdef", -1}, /* another binding type */
        {true, true, "p=tls-server-end-point,a=x,n=,r=abcdef", -1}, /* an authzid */
        {true, false, "n,,n=,r=abcdef", 0},                         /* plain SCRAM over TLS */
        {true, false, "y,,n=,r=abcdef", -1}, /* offered, yet "server cannot": downgrade */
        {true, false, plus_first, -1},       /* binding without choosing -PLUS */
        {false, false, "y,,n=,r=abcdef", 0}, /* not offered (no TLS) */
        {false, false, plus_first, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&st, 0, sizeof st);
        if (cases[i].offered)
            assert_int_equal(scram_server_set_binding(&st, cases[i].plus, cb, 32), 0);
        int rc = scram_server_start(&st, &v, cases[i].first, strlen(cases[i].first), out,
                                    sizeof out, &outlen);
        if (rc != cases[i].want)
            fail_msg("case %zu (%s): %d, want %d", i, cases[i].first, rc, cases[i].want);
    }
    assert_int_equal(scram_server_set_binding(&st, true, cb, 0), -1);
    assert_int_equal(scram_server_set_binding(&st, true, cb, SCRAM_MAX_CBIND + 1), -1);

    /* client-final: c= is base64("p=tls-server-end-point,," + cb); with it, a bogus proof is
     * a wrong proof (-2); with the header alone, or another connection's data, malformed */
    unsigned char raw[24 + 32];
    memcpy(raw, "p=tls-server-end-point,,", 24);
    memcpy(raw + 24, cb, 32);
    unsigned char other[24 + 32];
    memcpy(other, raw, sizeof other);
    other[30] ^= 1;
    const struct {
        const unsigned char *data;
        size_t len;
        int want;
    } finals[] = {{raw, sizeof raw, -2}, {raw, 24, -1}, {other, sizeof other, -1}};
    for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++) {
        memset(&st, 0, sizeof st);
        scram_server_set_nonce(&st, "srvnonce");
        assert_int_equal(scram_server_set_binding(&st, true, cb, 32), 0);
        assert_int_equal(
            scram_server_start(&st, &v, plus_first, strlen(plus_first), out, sizeof out, &outlen),
            0);
        assert_true(scram_b64_encode(finals[i].data, finals[i].len, b64, sizeof b64) > 0);
        snprintf(msg, sizeof msg, "c=%s,r=abcdefsrvnonce,p=%s", b64,
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        if (scram_server_finish(&st, msg, strlen(msg), out, sizeof out, &outlen) != finals[i].want)
            fail_msg("client-final #%zu: want %d", i, finals[i].want);
    }
}

/* sluice's client side of channel binding, against its server side: bound to the same
 * certificate hash the exchange succeeds; to another (a man in the middle relaying between two
 * TLS connections) the server refuses the client-final; "y,," (the client could bind, the
 * server offered no -PLUS) passes a server that did not offer binding and is refused by one
 * that did (a stripped offer). */
static void test_client_channel_binding(void **state)
{
    (void)state;
    static const unsigned char cb[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    unsigned char other[32];
    memcpy(other, cb, sizeof other);
    other[31] ^= 0x80;
    struct scram_verifier v;
    assert_int_equal(scram_verifier_parse(PG_VERIFIER_1, &v), 0);
    const struct {
        size_t client_len;           /* 0: "y,,"; SIZE_MAX: none ("n,,") */
        const unsigned char *srv;    /* the server's binding data; NULL: not offered */
        bool plus;                   /* the server saw SCRAM-SHA-256-PLUS chosen */
        int want_start, want_finish; /* server results */
        const char *header;
    } cases[] = {
        {32, cb, true, 0, 0, "p=tls-server-end-point,,"},
        {32, other, true, 0, -1, "p=tls-server-end-point,,"},
        {0, NULL, false, 0, 0, "y,,"},
        {0, cb, false, -1, 0, "y,,"},
        {SIZE_MAX, cb, false, 0, 0, "n,,"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct scram_server srv;
        struct scram_client cl;
        char a[600], b[600];
        size_t alen = 0, blen = 0;
        memset(&srv, 0, sizeof srv);
        memset(&cl, 0, sizeof cl);
        if (cases[i].client_len != SIZE_MAX)
            assert_int_equal(scram_client_set_binding(&cl, cb, cases[i].client_len), 0);
        if (cases[i].srv)
            assert_int_equal(scram_server_set_binding(&srv, cases[i].plus, cases[i].srv, 32), 0);
        assert_int_equal(scram_client_start(&cl, a, sizeof a, &alen), 0);
        assert_memory_equal(a, cases[i].header, strlen(cases[i].header));
        int rc = scram_server_start(&srv, &v, a, alen, b, sizeof b, &blen);
        if (rc != cases[i].want_start) fail_msg("case %zu: start %d", i, rc);
        if (rc != 0) continue;
        assert_int_equal(scram_client_continue(&cl, PG_PASSWORD_1, b, blen, a, sizeof a, &alen), 0);
        rc = scram_server_finish(&srv, a, alen, b, sizeof b, &blen);
        if (rc != cases[i].want_finish) fail_msg("case %zu: finish %d", i, rc);
        if (rc == 0) assert_int_equal(scram_client_finish(&cl, b, blen), 0);
    }
    struct scram_client cl;
    memset(&cl, 0, sizeof cl);
    assert_int_equal(scram_client_set_binding(&cl, cb, SCRAM_MAX_CBIND + 1), -1);
}

static void test_base64(void **state)
{
    (void)state;
    char enc[64];
    unsigned char dec[64];
    assert_int_equal(scram_b64_encode((const unsigned char *)"", 0, enc, sizeof enc), 0);
    assert_string_equal(enc, "");
    assert_int_equal(scram_b64_encode((const unsigned char *)"f", 1, enc, sizeof enc), 4);
    assert_string_equal(enc, "Zg==");
    assert_int_equal(scram_b64_encode((const unsigned char *)"fo", 2, enc, sizeof enc), 4);
    assert_string_equal(enc, "Zm8=");
    assert_int_equal(scram_b64_encode((const unsigned char *)"foobar", 6, enc, sizeof enc), 8);
    assert_string_equal(enc, "Zm9vYmFy");
    assert_int_equal(scram_b64_encode((const unsigned char *)"foobar", 6, enc, 8), -1);
    assert_int_equal(scram_b64_decode("Zm9vYmE=", 8, dec, sizeof dec), 5);
    assert_memory_equal(dec, "fooba", 5);
    assert_int_equal(scram_b64_decode("Zm9vYg==", 8, dec, sizeof dec), 4);
    assert_int_equal(scram_b64_decode("Zm9vYg==", 8, dec, 3), -1); /* outcap */
    assert_int_equal(scram_b64_decode("Zm9vYg=", 7, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm9=Yg==", 8, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm9vY===", 8, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm9vYg=A", 8, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm9v Yg=", 8, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm9v\nYg=", 8, dec, sizeof dec), -1);
    assert_int_equal(scram_b64_decode("Zm-_", 4, dec, sizeof dec), -1);
}

static void test_md5(void **state)
{
    (void)state;
    char out[36];
    const unsigned char s1[4] = {1, 2, 3, 4};
    const unsigned char s2[4] = {0xde, 0xad, 0xbe, 0xef};
    pg_md5_response("alice", "secret", s1, out);
    assert_string_equal(out, "md598a0412b9c31436fc53776e863350083");
    pg_md5_response("postgres", "pencil", s2, out);
    assert_string_equal(out, "md5ced99751bea390968e795eaedb0a4935");
    assert_int_equal(strlen(out), 35);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_server),
        cmocka_unit_test(test_rfc7677_client),
        cmocka_unit_test(test_full_exchange),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_postgres_verifiers),
        cmocka_unit_test(test_verifier_parse_malformed),
        cmocka_unit_test(test_server_first_malformed),
        cmocka_unit_test(test_server_final_malformed),
        cmocka_unit_test(test_client_malformed),
        cmocka_unit_test(test_hostile_random),
        cmocka_unit_test(test_channel_binding),
        cmocka_unit_test(test_client_channel_binding),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_md5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
