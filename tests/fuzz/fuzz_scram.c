/*
 * fuzz_scram.c: libFuzzer target for SCRAM-SHA-256 and the md5 response (src/pg/scram.c).
 *
 * Input layout: the first byte is a delimiter chosen by the input; the rest is cut at its
 * first occurrence into pieces A and B, and B ends at the second occurrence (or the end). Seeds
 * use '\n' or NUL as the delimiter, so with '\n' the pieces may hold NULs. Each piece is copied
 * into an exactly sized heap block, so AddressSanitizer catches any read past its length. Every
 * input is fed to:
 *   - the server side: scram_server_start(A) then scram_server_finish(B), with a fixed verifier
 *     (RFC 7677's "pencil", derived once) and a fixed server nonce, so a real exchange verifies;
 *     when the proof is accepted, our own client (with the same channel binding) replays the
 *     exchange and must produce the same client-final and accept the server-final;
 *   - the client side: scram_client_start, scram_client_continue(A) with "pencil", then
 *     scram_client_finish(B), with RFC 7677's client nonce and user;
 *   - scram_verifier_parse and scram_b64_decode on the whole raw input (format and encode must
 *     round-trip what they accept), and pg_md5_response on A and B as strings.
 * What this target leaves out: PBKDF2 with large iteration counts (server-first messages with
 * i= above FUZZ_MAX_ITER are not handed to the client, as the iteration count only selects work).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg/scram.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_scram: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FUZZ_MAX_ITER 4096u
#define RFC_SALT_B64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_PASSWORD "pencil"
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_USER "user"

static struct scram_verifier rfc_verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsigned char salt[64];
    int n = scram_b64_decode(RFC_SALT_B64, strlen(RFC_SALT_B64), salt, sizeof salt);
    CHECK(n == 16);
    CHECK(scram_verifier_derive(RFC_PASSWORD, strlen(RFC_PASSWORD), salt, (size_t)n, 4096,
                                &rfc_verifier) == 0);
    return 0;
}

/* An exactly sized copy of [p, p + n) (at least one byte allocated; never NUL-terminated). */
static char *dup_exact(const uint8_t *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

/* A NUL-terminated copy. */
static char *dup_str(const uint8_t *p, size_t n)
{
    char *d = malloc(n + 1);
    CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* Is s (n bytes, followed by a NUL) "v=" + base64 of 32 bytes? */
static void check_server_final(const char *s, size_t n)
{
    unsigned char sig[SCRAM_KEY_LEN];
    CHECK(n == 2 + 44 && strlen(s) == n && memcmp(s, "v=", 2) == 0);
    CHECK(scram_b64_decode(s + 2, n - 2, sig, sizeof sig) == SCRAM_KEY_LEN);
}

/* Does the server-first message (len bytes) carry an i= attribute above FUZZ_MAX_ITER? */
static int too_many_iterations(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        if (j - i >= 3 && s[i] == 'i' && s[i + 1] == '=') {
            unsigned long long v = 0;
            for (size_t k = i + 2; k < j && v <= FUZZ_MAX_ITER; k++)
                v = v * 10 + (unsigned)((unsigned char)s[k] - '0');
            if (v > FUZZ_MAX_ITER) return 1;
        }
        i = j + 1;
    }
    return 0;
}

/* After the server accepted a proof: when the client-first was plain "H,n=USER,r=NONCE" (H a
 * gs2 header sluice's client writes: "n,,", "y,," or "p=tls-server-end-point,," with the
 * server's binding data cb), our client with that nonce and binding must compute the very
 * client-final the server accepted, and accept the server-final the server sent. */
static void replay_with_client(const char *first, size_t first_len, const char *server_first,
                               size_t sf_len, const char *final, size_t final_len,
                               const char *server_final, size_t sfin_len, const unsigned char *cb,
                               size_t cb_len)
{
    static const char *const headers[] = {"n,,", "y,,", "p=tls-server-end-point,,"};
    size_t h = 0, hl = 0;
    for (; h < 3; h++) {
        hl = strlen(headers[h]);
        if (first_len >= hl + 2 && memcmp(first, headers[h], hl) == 0 &&
            memcmp(first + hl, "n=", 2) == 0)
            break;
    }
    if (h == 3) return;
    const char *user = first + hl + 2, *end = first + first_len;
    const char *comma = memchr(user, ',', (size_t)(end - user));
    if (!comma || end - comma < 4 || memcmp(comma, ",r=", 3) != 0) return;
    const char *nonce = comma + 3;
    size_t user_len = (size_t)(comma - user), nonce_len = (size_t)(end - nonce);
    if (memchr(nonce, ',', nonce_len) || user_len >= 64 || nonce_len > SCRAM_MAX_NONCE) return;
    const char *p1 = final_len > 2 ? memchr(final, ',', final_len) : NULL;
    if (!p1 || memcmp(final, "c=", 2) != 0) return;
    /* no extensions in the client-final: exactly "c=...,r=...,p=..." */
    size_t rest = final_len - (size_t)(p1 + 1 - final);
    const char *p2 = memchr(p1 + 1, ',', rest);
    if (!p2 || memchr(p2 + 1, ',', final_len - (size_t)(p2 + 1 - final))) return;

    char nonce_z[SCRAM_MAX_NONCE + 1], user_z[64];
    memcpy(nonce_z, nonce, nonce_len);
    nonce_z[nonce_len] = '\0';
    memcpy(user_z, user, user_len);
    user_z[user_len] = '\0';

    struct scram_client c;
    char out[2048];
    size_t outlen = 0;
    scram_client_set_nonce(&c, nonce_z, user_z);
    if (h == 1) CHECK(scram_client_set_binding(&c, NULL, 0) == 0);
    if (h == 2) CHECK(scram_client_set_binding(&c, cb, cb_len) == 0);
    CHECK(scram_client_start(&c, out, sizeof out, &outlen) == 0);
    CHECK(outlen == first_len && memcmp(out, first, first_len) == 0);
    CHECK(scram_client_continue(&c, RFC_PASSWORD, server_first, sf_len, out, sizeof out, &outlen) ==
          0);
    /* the same client-final without proof, and the same proof bytes (the server's base64 decoder,
     * like PostgreSQL's, ignores the unused low bits of the last character, so the text may
     * differ there) */
    size_t head = (size_t)(p2 - final);
    unsigned char mine[SCRAM_KEY_LEN], theirs[SCRAM_KEY_LEN];
    CHECK(outlen > head + 3 && final_len > head + 3 && memcmp(out, final, head + 3) == 0);
    CHECK(memcmp(out + head, ",p=", 3) == 0);
    CHECK(scram_b64_decode(out + head + 3, outlen - head - 3, mine, sizeof mine) == SCRAM_KEY_LEN);
    CHECK(scram_b64_decode(final + head + 3, final_len - head - 3, theirs, sizeof theirs) ==
          SCRAM_KEY_LEN);
    CHECK(memcmp(mine, theirs, SCRAM_KEY_LEN) == 0);
    CHECK(scram_client_finish(&c, server_final, sfin_len) == 0);
}

static void fuzz_server(const char *a, size_t alen, const char *b, size_t blen)
{
    struct scram_server st;
    char first_out[SCRAM_MAX_SERVER_FIRST + 1], final_out[128];
    size_t first_len = 0, final_len = 0;

    scram_server_set_nonce(&st, RFC_SERVER_NONCE);
    /* by the first message's length: no channel binding offered (no TLS); offered and
     * SCRAM-SHA-256-PLUS chosen; offered and plain SCRAM chosen */
    static const unsigned char cb[32] = {0x5c, 0x11, 0xce};
    if (alen % 3) CHECK(scram_server_set_binding(&st, alen % 3 == 1, cb, sizeof cb) == 0);
    int rc =
        scram_server_start(&st, &rfc_verifier, a, alen, first_out, sizeof first_out, &first_len);
    if (rc != 0) {
        CHECK(rc == -1);
        /* a failed exchange stays failed */
        CHECK(scram_server_finish(&st, b, blen, final_out, sizeof final_out, &final_len) == -1);
        return;
    }
    CHECK(first_len > 0 && first_len < sizeof first_out && strlen(first_out) == first_len);
    CHECK(memcmp(first_out, "r=", 2) == 0);
    CHECK(memchr(a, '\0', alen) == NULL);
    /* starting twice is refused */
    char again[SCRAM_MAX_SERVER_FIRST + 1];
    struct scram_server copy = st;
    CHECK(scram_server_start(&copy, &rfc_verifier, a, alen, again, sizeof again, NULL) == -1);

    rc = scram_server_finish(&st, b, blen, final_out, sizeof final_out, &final_len);
    CHECK(rc == 0 || rc == -1 || rc == -2);
    /* the exchange is over after any finish */
    CHECK(scram_server_finish(&st, b, blen, again, sizeof again, NULL) == -1);
    if (rc != 0) return;
    check_server_final(final_out, final_len);
    replay_with_client(a, alen, first_out, first_len, b, blen, final_out, final_len, cb, sizeof cb);
}

static void fuzz_client(const char *a, size_t alen, const char *b, size_t blen)
{
    struct scram_client c;
    char out[2048];
    size_t outlen = 0;

    scram_client_set_nonce(&c, RFC_CLIENT_NONCE, RFC_USER);
    CHECK(scram_client_start(&c, out, sizeof out, &outlen) == 0);
    CHECK(outlen == strlen("n,,n=" RFC_USER ",r=" RFC_CLIENT_NONCE) &&
          strcmp(out, "n,,n=" RFC_USER ",r=" RFC_CLIENT_NONCE) == 0);
    if (too_many_iterations(a, alen)) return;
    int rc = scram_client_continue(&c, RFC_PASSWORD, a, alen, out, sizeof out, &outlen);
    if (rc != 0) {
        CHECK(rc == -1);
        CHECK(scram_client_finish(&c, b, blen) == -1);
        return;
    }
    /* "c=biws,r=<nonce>,p=<44 base64 characters>" */
    CHECK(outlen == strlen(out) && outlen > 9 + strlen(RFC_CLIENT_NONCE) + 3 + 44);
    CHECK(memcmp(out, "c=biws,r=" RFC_CLIENT_NONCE, 9 + strlen(RFC_CLIENT_NONCE)) == 0);
    CHECK(memcmp(out + outlen - 47, ",p=", 3) == 0);
    unsigned char proof[SCRAM_KEY_LEN];
    CHECK(scram_b64_decode(out + outlen - 44, 44, proof, sizeof proof) == SCRAM_KEY_LEN);
    rc = scram_client_finish(&c, b, blen);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) CHECK(blen >= 2 + 44 && memcmp(b, "v=", 2) == 0);
    CHECK(scram_client_finish(&c, b, blen) == -1); /* once only */
}

static void fuzz_verifier(const uint8_t *data, size_t size)
{
    char *text = dup_str(data, size);
    struct scram_verifier v, v2;
    memset(&v, 0, sizeof v);
    if (scram_verifier_parse(text, &v) == 0) {
        CHECK(v.iterations >= 1 && v.iterations <= SCRAM_MAX_ITERATIONS);
        CHECK(v.salt_len >= 1 && v.salt_len <= sizeof v.salt);
        char fmt[256];
        CHECK(scram_verifier_format(&v, fmt, sizeof fmt) == 0);
        memset(&v2, 0, sizeof v2);
        CHECK(scram_verifier_parse(fmt, &v2) == 0);
        CHECK(v2.iterations == v.iterations && v2.salt_len == v.salt_len);
        CHECK(memcmp(v2.salt, v.salt, v.salt_len) == 0);
        CHECK(memcmp(v2.stored_key, v.stored_key, SCRAM_KEY_LEN) == 0);
        CHECK(memcmp(v2.server_key, v.server_key, SCRAM_KEY_LEN) == 0);
    }
    free(text);
}

static void fuzz_b64(const uint8_t *data, size_t size)
{
    char *in = dup_exact(data, size);
    size_t cap = size / 4 * 3;
    unsigned char *out = malloc(cap ? cap : 1);
    CHECK(out != NULL);
    int n = scram_b64_decode(in, size, out, cap);
    if (n >= 0) {
        CHECK(size % 4 == 0 && (size_t)n <= cap && (size_t)n + 2 >= cap);
        char *enc = malloc(size + 1);
        CHECK(enc != NULL);
        CHECK(scram_b64_encode(out, (size_t)n, enc, size + 1) == (int)size);
        /* decoding the canonical form gives the same bytes */
        unsigned char *again = malloc(cap ? cap : 1);
        CHECK(again != NULL);
        CHECK(scram_b64_decode(enc, size, again, cap) == n);
        CHECK(n == 0 || memcmp(again, out, (size_t)n) == 0);
        free(again);
        free(enc);
        /* one byte too little room is refused */
        if (n > 0) CHECK(scram_b64_decode(in, size, out, (size_t)n - 1) == -1);
    }
    free(out);
    free(in);
}

static void fuzz_md5(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    char *user = dup_str(a, alen), *password = dup_str(b, blen);
    const unsigned char salt[4] = {1, 2, 3, 4};
    char out[36];
    pg_md5_response(user, password, salt, out);
    CHECK(memcmp(out, "md5", 3) == 0 && strlen(out) == 35);
    for (int i = 3; i < 35; i++)
        CHECK((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f'));
    free(password);
    free(user);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_verifier(data, size);
    fuzz_b64(data, size);
    if (size < 1) return 0;

    uint8_t delim = data[0];
    const uint8_t *rest = data + 1, *end = data + size;
    const uint8_t *d1 = memchr(rest, delim, (size_t)(end - rest));
    const uint8_t *a = rest, *b = d1 ? d1 + 1 : end;
    size_t alen = (size_t)((d1 ? d1 : end) - rest);
    const uint8_t *d2 = memchr(b, delim, (size_t)(end - b));
    size_t blen = (size_t)((d2 ? d2 : end) - b);

    char *pa = dup_exact(a, alen), *pb = dup_exact(b, blen);
    fuzz_server(pa, alen, pb, blen);
    fuzz_client(pa, alen, pb, blen);
    fuzz_md5(a, alen, b, blen);
    free(pb);
    free(pa);
    return 0;
}
