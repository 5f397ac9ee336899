/*
 * scram.c: SCRAM-SHA-256 verifiers, the server and client state machines, and the md5 response.
 *
 * The primitives are OpenSSL's (PBKDF2, HMAC, SHA-256, MD5, RAND_bytes); base64 is our own
 * strict codec because EVP_DecodeBlock accepts whitespace and hides padding. Parsers walk
 * (pointer, length) spans with explicit bounds and never depend on a terminating NUL; anything
 * unexpected is "malformed" (-1). Secrets are wiped from the stack after use.
 * What this file leaves to others: framing (SASL messages come from the pg codec), choosing
 * which verifier to use (ident), and what to tell the client on failure (session).
 */
#include "pg/scram.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* The gs2 header of a client that binds to the channel (the only binding type used). */
#define GS2_PLUS "p=tls-server-end-point,,"

#define SCRAM_PREFIX "SCRAM-SHA-256$"
#define SCRAM_MAX_CLIENT_FINAL 1024
#define SCRAM_MAX_SERVER_FINAL 256
#define SCRAM_RANDOM_NONCE_BYTES 18 /* base64: SCRAM_NONCE_LEN characters */

/* ---------------------------------------------------------------- base64 */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int scram_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap)
{
    size_t need = (len + 2) / 3 * 4;
    if (len > SIZE_MAX / 2 || outcap < need + 1) return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return (int)o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int scram_b64_decode(const char *in, size_t len, unsigned char *out, size_t outcap)
{
    if (len == 0) return 0;
    if (len % 4 != 0 || len > (size_t)INT_MAX) return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int pad = 0;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            int d;
            if (c == '=') {
                /* padding: only in the last quantum, only in positions 2 and 3, only trailing */
                if (!last || k < 2) return -1;
                pad++;
                d = 0;
            } else {
                if (pad) return -1;
                d = b64_value(c);
                if (d < 0) return -1;
            }
            v = (v << 6) | (uint32_t)d;
        }
        size_t n = 3 - (size_t)pad;
        if (o + n > outcap) return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (n > 1) out[o++] = (unsigned char)(v >> 8);
        if (n > 2) out[o++] = (unsigned char)v;
    }
    return (int)o;
}

/* ---------------------------------------------------------------- primitives */

static int hmac256(const unsigned char *key, size_t keylen, const void *data, size_t len,
                   unsigned char out[SCRAM_KEY_LEN])
{
    unsigned int outlen = 0;
    if (keylen > INT_MAX) return -1;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) || outlen != SCRAM_KEY_LEN)
        return -1;
    return 0;
}

static int sha256(const void *data, size_t len, unsigned char out[SCRAM_KEY_LEN])
{
    unsigned int outlen = 0;
    if (!EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) || outlen != SCRAM_KEY_LEN)
        return -1;
    return 0;
}

static int salted_password(const char *secret, size_t len, const unsigned char *salt,
                           size_t salt_len, unsigned iterations, unsigned char out[SCRAM_KEY_LEN])
{
    if (len > INT_MAX || salt_len > INT_MAX || iterations < 1 || iterations > SCRAM_MAX_ITERATIONS)
        return -1;
    static const char empty[1] = "";
    if (!PKCS5_PBKDF2_HMAC(len ? secret : empty, (int)len, salt, (int)salt_len, (int)iterations,
                           EVP_sha256(), SCRAM_KEY_LEN, out))
        return -1;
    return 0;
}

/* ClientKey, StoredKey and ServerKey from a SaltedPassword. */
static int scram_keys(const unsigned char salted[SCRAM_KEY_LEN],
                      unsigned char client_key[SCRAM_KEY_LEN],
                      unsigned char stored_key[SCRAM_KEY_LEN],
                      unsigned char server_key[SCRAM_KEY_LEN])
{
    if (hmac256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) < 0) return -1;
    if (sha256(client_key, SCRAM_KEY_LEN, stored_key) < 0) return -1;
    if (server_key && hmac256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key) < 0) return -1;
    return 0;
}

static void random_nonce(char out[SCRAM_NONCE_LEN + 1])
{
    unsigned char raw[SCRAM_RANDOM_NONCE_BYTES];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        /* No entropy is not something to continue from: a predictable nonce breaks SCRAM. */
        fprintf(stderr, "sluice: RAND_bytes failed\n");
        abort();
    }
    (void)scram_b64_encode(raw, sizeof raw, out, SCRAM_NONCE_LEN + 1);
}

/* Nonce characters: printable ASCII except ','. */
static bool nonce_valid(const char *s, size_t n)
{
    if (n == 0 || n > SCRAM_MAX_NONCE * 2) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == ',') return false;
    }
    return true;
}

/* Decimal unsigned in [1, SCRAM_MAX_ITERATIONS]; digits only. */
static int parse_iterations(const char *s, size_t n, unsigned *out)
{
    if (n == 0 || n > 10) return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > SCRAM_MAX_ITERATIONS) return -1;
    *out = (unsigned)v;
    return 0;
}

/* Span [p, end) up to the next ',' (or end). */
static size_t span_to_comma(const char *p, const char *end)
{
    const char *c = memchr(p, ',', (size_t)(end - p));
    return c ? (size_t)(c - p) : (size_t)(end - p);
}

/* Take "<k>=" at *p, set *val and *vlen to the value up to ',' or end, and move *p past the ','.
 * Returns -1 when the attribute is not there. *more says whether a ',' followed. */
static int take_attr(const char **p, const char *end, char k, const char **val, size_t *vlen,
                     bool *more)
{
    if (end - *p < 2 || (*p)[0] != k || (*p)[1] != '=') return -1;
    const char *v = *p + 2;
    size_t n = span_to_comma(v, end);
    *val = v;
    *vlen = n;
    *more = v + n < end;
    *p = v + n + (*more ? 1 : 0);
    return 0;
}

static int put(char *out, size_t outcap, size_t *outlen, const char *s, size_t n)
{
    if (n + 1 > outcap) return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    if (outlen) *outlen = n;
    return 0;
}

/* ---------------------------------------------------------------- verifiers */

int scram_verifier_derive(const char *secret, size_t len, const unsigned char *salt,
                          size_t salt_len, unsigned iterations, struct scram_verifier *out)
{
    unsigned char salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    int rc = -1;
    if (salt_len == 0 || salt_len > sizeof out->salt) return -1;
    memset(out, 0, sizeof *out);
    if (salted_password(secret, len, salt, salt_len, iterations, salted) < 0) goto done;
    if (scram_keys(salted, client_key, out->stored_key, out->server_key) < 0) goto done;
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    rc = 0;
done:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

int scram_verifier_format(const struct scram_verifier *v, char *out, size_t outcap)
{
    char salt[96], stored[48], server[48];
    if (v->salt_len == 0 || v->salt_len > sizeof v->salt) return -1;
    if (scram_b64_encode(v->salt, v->salt_len, salt, sizeof salt) < 0 ||
        scram_b64_encode(v->stored_key, SCRAM_KEY_LEN, stored, sizeof stored) < 0 ||
        scram_b64_encode(v->server_key, SCRAM_KEY_LEN, server, sizeof server) < 0)
        return -1;
    int n = snprintf(out, outcap, SCRAM_PREFIX "%u:%s$%s:%s", v->iterations, salt, stored, server);
    if (n < 0 || (size_t)n >= outcap) return -1;
    return 0;
}

int scram_verifier_make(const char *secret, unsigned iterations, char *out, size_t outcap)
{
    unsigned char salt[16];
    struct scram_verifier v;
    if (RAND_bytes(salt, sizeof salt) != 1) return -1;
    if (scram_verifier_derive(secret, strlen(secret), salt, sizeof salt, iterations, &v) < 0)
        return -1;
    int rc = scram_verifier_format(&v, out, outcap);
    OPENSSL_cleanse(&v, sizeof v);
    return rc;
}

int scram_verifier_parse(const char *text, struct scram_verifier *out)
{
    struct scram_verifier v;
    memset(&v, 0, sizeof v);
    if (!text) return -1;
    size_t len = strnlen(text, 1024);
    if (len >= 1024) return -1;
    const char *p = text, *end = text + len;
    size_t plen = strlen(SCRAM_PREFIX);
    if (len < plen || memcmp(p, SCRAM_PREFIX, plen) != 0) return -1;
    p += plen;

    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (!colon || parse_iterations(p, (size_t)(colon - p), &v.iterations) < 0) return -1;
    p = colon + 1;

    const char *dollar = memchr(p, '$', (size_t)(end - p));
    if (!dollar) return -1;
    int n = scram_b64_decode(p, (size_t)(dollar - p), v.salt, sizeof v.salt);
    if (n < 1) return -1;
    v.salt_len = (size_t)n;
    p = dollar + 1;

    colon = memchr(p, ':', (size_t)(end - p));
    if (!colon) return -1;
    if (scram_b64_decode(p, (size_t)(colon - p), v.stored_key, sizeof v.stored_key) !=
        SCRAM_KEY_LEN)
        return -1;
    p = colon + 1;
    if (scram_b64_decode(p, (size_t)(end - p), v.server_key, sizeof v.server_key) != SCRAM_KEY_LEN)
        return -1;
    *out = v;
    return 0;
}

bool scram_check_secret(const struct scram_verifier *v, const char *secret, size_t len)
{
    unsigned char salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    bool ok = false;
    if (salted_password(secret, len, v->salt, v->salt_len, v->iterations, salted) == 0 &&
        scram_keys(salted, client_key, stored, NULL) == 0)
        ok = CRYPTO_memcmp(stored, v->stored_key, SCRAM_KEY_LEN) == 0;
    /* HMAC pads short keys with zeros, so "pw" and "pw\0" derive the same keys: a secret with a
     * NUL never matches (PostgreSQL passwords cannot hold one). The work above is still done. */
    if (len && memchr(secret, '\0', len)) ok = false;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}

static unsigned char mock_key[32];
static pthread_once_t mock_once = PTHREAD_ONCE_INIT;

static void mock_key_init(void)
{
    if (RAND_bytes(mock_key, sizeof mock_key) != 1) {
        fprintf(stderr, "sluice: RAND_bytes failed\n");
        abort();
    }
}

static void mock_part(const char *label, const char *name, unsigned char out[SCRAM_KEY_LEN])
{
    unsigned char buf[300];
    size_t ll = strlen(label), nl = name ? strnlen(name, sizeof buf - ll - 1) : 0;
    memcpy(buf, label, ll);
    buf[ll] = 0;
    if (nl) memcpy(buf + ll + 1, name, nl);
    if (hmac256(mock_key, sizeof mock_key, buf, ll + 1 + nl, out) < 0)
        memset(out, 0xA5, SCRAM_KEY_LEN);
}

void scram_verifier_mock(const char *name, struct scram_verifier *out)
{
    unsigned char salt[SCRAM_KEY_LEN];
    pthread_once(&mock_once, mock_key_init);
    memset(out, 0, sizeof *out);
    out->iterations = SCRAM_DEFAULT_ITERATIONS;
    mock_part("salt", name, salt);
    memcpy(out->salt, salt, 16);
    out->salt_len = 16;
    mock_part("stored", name, out->stored_key);
    mock_part("server", name, out->server_key);
}

/* ---------------------------------------------------------------- server side */

void scram_server_set_nonce(struct scram_server *st, const char *nonce)
{
    memset(st, 0, sizeof *st);
    size_t n = strnlen(nonce, SCRAM_MAX_NONCE);
    memcpy(st->test_nonce, nonce, n);
    st->test_nonce[n] = '\0';
}

int scram_server_set_binding(struct scram_server *st, bool plus, const unsigned char *cbind,
                             size_t len)
{
    if (len == 0 || len > sizeof st->cbind) return -1;
    memcpy(st->cbind, cbind, len);
    st->cbind_len = len;
    st->plus = plus;
    return 0;
}

int scram_server_start(struct scram_server *st, const struct scram_verifier *v,
                       const char *client_first, size_t len, char *out, size_t outcap,
                       size_t *outlen)
{
    const char *p = client_first, *end = client_first + len;
    const char *val;
    size_t vlen;
    bool more;

    if (st->state != 0) goto fail;
    st->state = -1;
    if (!client_first || len < 3 || len > SCRAM_MAX_FIRST_BARE + 32) goto fail;
    if (memchr(client_first, '\0', len)) goto fail;
    if (v->salt_len == 0 || v->salt_len > sizeof v->salt) goto fail;

    /* gs2-header: "n,," | "y,," | "p=tls-server-end-point,," -- no authzid */
    static const char pfx[] = GS2_PLUS;
    size_t hl = 3;
    if (st->plus) {
        hl = sizeof pfx - 1;
        if (!st->cbind_len || len < hl || memcmp(p, pfx, hl) != 0) goto fail;
        unsigned char raw[sizeof pfx - 1 + SCRAM_MAX_CBIND];
        memcpy(raw, p, hl);
        memcpy(raw + hl, st->cbind, st->cbind_len);
        if (scram_b64_encode(raw, hl + st->cbind_len, st->cb_b64, sizeof st->cb_b64) < 0) goto fail;
    } else {
        if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',' || p[2] != ',') goto fail;
        if (p[0] == 'y' && st->cbind_len) goto fail; /* binding was offered: a downgrade */
    }
    st->gs2_flag = p[0];
    p += hl;

    /* client-first-message-bare */
    size_t bare_len = (size_t)(end - p);
    if (bare_len == 0 || bare_len > SCRAM_MAX_FIRST_BARE) goto fail;
    const char *bare = p;
    if (take_attr(&p, end, 'n', &val, &vlen, &more) < 0 || !more) goto fail; /* m= rejected */
    if (take_attr(&p, end, 'r', &val, &vlen, &more) < 0) goto fail;
    if (vlen > SCRAM_MAX_NONCE || !nonce_valid(val, vlen)) goto fail;
    const char *cnonce = val;
    size_t cnonce_len = vlen;
    if (more && p == end) goto fail; /* trailing ',' */
    /* extensions after the nonce are allowed and ignored (they stay in the AuthMessage) */

    memcpy(st->first_bare, bare, bare_len);
    st->first_bare_len = bare_len;
    st->v = *v;

    char snonce_buf[SCRAM_MAX_NONCE + 1];
    const char *snonce = st->test_nonce;
    if (!snonce[0]) {
        random_nonce(snonce_buf);
        snonce = snonce_buf;
    }
    char salt_b64[96];
    if (scram_b64_encode(v->salt, v->salt_len, salt_b64, sizeof salt_b64) < 0) goto fail;
    int n = snprintf(st->server_first, sizeof st->server_first, "r=%.*s%s,s=%s,i=%u",
                     (int)cnonce_len, cnonce, snonce, salt_b64, v->iterations);
    if (n < 0 || (size_t)n >= sizeof st->server_first) goto fail;
    st->server_first_len = (size_t)n;
    st->nonce_len = cnonce_len + strlen(snonce);
    if (put(out, outcap, outlen, st->server_first, st->server_first_len) < 0) goto fail;
    st->state = 1;
    return 0;
fail:
    st->state = -1;
    return -1;
}

int scram_server_finish(struct scram_server *st, const char *client_final, size_t len, char *out,
                        size_t outcap, size_t *outlen)
{
    const char *p = client_final, *end = client_final + len;
    const char *val;
    size_t vlen;
    bool more;
    int rc = -1;
    unsigned char proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    unsigned char stored[SCRAM_KEY_LEN];
    char auth[SCRAM_MAX_FIRST_BARE + SCRAM_MAX_SERVER_FIRST + SCRAM_MAX_CLIENT_FINAL + 2];

    if (st->state != 1) goto done;
    st->state = -1;
    if (!client_final || len == 0 || len > SCRAM_MAX_CLIENT_FINAL) goto done;
    if (memchr(client_final, '\0', len)) goto done;

    /* channel-binding: base64 of the gs2 header the client sent first, and with -PLUS the
     * binding data of this TLS connection after it */
    if (take_attr(&p, end, 'c', &val, &vlen, &more) < 0 || !more) goto done;
    const char *cb = st->gs2_flag == 'p' ? st->cb_b64 : st->gs2_flag == 'y' ? "eSws" : "biws";
    if (vlen != strlen(cb) || memcmp(val, cb, vlen) != 0) goto done;
    if (take_attr(&p, end, 'r', &val, &vlen, &more) < 0 || !more) goto done;
    if (vlen != st->nonce_len || memcmp(val, st->server_first + 2, vlen) != 0) goto done;
    /* optional extensions, then "p=" last */
    while (p < end && !(end - p >= 2 && p[0] == 'p' && p[1] == '=')) {
        size_t n = span_to_comma(p, end);
        if (p + n >= end) goto done; /* no proof */
        p += n + 1;
    }
    if (p >= end) goto done;
    size_t without_proof = (size_t)(p - 1 - client_final);
    if (take_attr(&p, end, 'p', &val, &vlen, &more) < 0 || more) goto done;
    if (scram_b64_decode(val, vlen, proof, sizeof proof) != SCRAM_KEY_LEN) goto done;

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t al = 0;
    memcpy(auth + al, st->first_bare, st->first_bare_len);
    al += st->first_bare_len;
    auth[al++] = ',';
    memcpy(auth + al, st->server_first, st->server_first_len);
    al += st->server_first_len;
    auth[al++] = ',';
    memcpy(auth + al, client_final, without_proof);
    al += without_proof;

    if (hmac256(st->v.stored_key, SCRAM_KEY_LEN, auth, al, sig) < 0) goto done;
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    if (sha256(client_key, SCRAM_KEY_LEN, stored) < 0) goto done;
    if (CRYPTO_memcmp(stored, st->v.stored_key, SCRAM_KEY_LEN) != 0) {
        rc = -2;
        goto done;
    }
    if (hmac256(st->v.server_key, SCRAM_KEY_LEN, auth, al, sig) < 0) goto done;
    char msg[64];
    memcpy(msg, "v=", 2);
    int n = scram_b64_encode(sig, SCRAM_KEY_LEN, msg + 2, sizeof msg - 2);
    if (n < 0 || put(out, outcap, outlen, msg, (size_t)n + 2) < 0) goto done;
    st->state = 2;
    rc = 0;
done:
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(&st->v, sizeof st->v);
    return rc;
}

/* ---------------------------------------------------------------- client side */

void scram_client_set_nonce(struct scram_client *st, const char *nonce, const char *user)
{
    memset(st, 0, sizeof *st);
    size_t n = strnlen(nonce, SCRAM_MAX_NONCE);
    memcpy(st->nonce, nonce, n);
    st->nonce[n] = '\0';
    if (user) {
        n = strnlen(user, sizeof st->user - 1);
        memcpy(st->user, user, n);
        st->user[n] = '\0';
    }
}

int scram_client_set_binding(struct scram_client *st, const unsigned char *cbind, size_t len)
{
    if (st->state != 0 || len > SCRAM_MAX_CBIND) return -1;
    st->cbind_flag = len ? 'p' : 'y';
    st->cbind_len = len;
    if (len) memcpy(st->cbind, cbind, len);
    return 0;
}

/* The gs2 header of st's binding (scram_client_set_binding). */
static const char *client_gs2(const struct scram_client *st)
{
    return st->cbind_flag == 'p' ? GS2_PLUS : st->cbind_flag == 'y' ? "y,," : "n,,";
}

int scram_client_start(struct scram_client *st, char *out, size_t outcap, size_t *outlen)
{
    if (st->state != 0) return -1;
    st->user[sizeof st->user - 1] = '\0';
    st->nonce[sizeof st->nonce - 1] = '\0';
    if (!st->nonce[0]) random_nonce(st->nonce);
    int n = snprintf(out, outcap, "%sn=%s,r=%s", client_gs2(st), st->user, st->nonce);
    if (n < 0 || (size_t)n >= outcap) return -1;
    if (outlen) *outlen = (size_t)n;
    st->state = 1;
    return 0;
}

int scram_client_continue(struct scram_client *st, const char *password, const char *server_first,
                          size_t len, char *out, size_t outcap, size_t *outlen)
{
    const char *p = server_first, *end = server_first + len;
    const char *val;
    size_t vlen;
    bool more;
    int rc = -1;
    unsigned char salt[64], salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    unsigned char stored[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
    char auth[SCRAM_MAX_FIRST_BARE + SCRAM_MAX_SERVER_FIRST + SCRAM_MAX_CLIENT_FINAL + 2];
    char final[SCRAM_MAX_CLIENT_FINAL];

    if (st->state != 1) goto done;
    st->state = -1;
    if (!server_first || !password || len == 0 || len > SCRAM_MAX_SERVER_FIRST) goto done;
    if (memchr(server_first, '\0', len)) goto done;

    /* r=<client nonce + server nonce>,s=<salt>,i=<iterations>[,extensions]; m= rejected */
    if (take_attr(&p, end, 'r', &val, &vlen, &more) < 0 || !more) goto done;
    size_t cn = strlen(st->nonce);
    if (vlen <= cn || memcmp(val, st->nonce, cn) != 0 || !nonce_valid(val, vlen)) goto done;
    const char *nonce = val;
    size_t nonce_len = vlen;
    if (take_attr(&p, end, 's', &val, &vlen, &more) < 0 || !more) goto done;
    int salt_len = scram_b64_decode(val, vlen, salt, sizeof salt);
    if (salt_len < 1) goto done;
    unsigned iterations;
    if (take_attr(&p, end, 'i', &val, &vlen, &more) < 0) goto done;
    if (parse_iterations(val, vlen, &iterations) < 0) goto done;

    /* c= is the gs2 header and the binding data, base64 ("biws" for "n,,") */
    unsigned char cb[sizeof GS2_PLUS + SCRAM_MAX_CBIND];
    const char *gs2 = client_gs2(st);
    size_t gl = strlen(gs2);
    memcpy(cb, gs2, gl);
    if (st->cbind_flag == 'p') memcpy(cb + gl, st->cbind, st->cbind_len);
    char cb64[(sizeof cb + 2) / 3 * 4 + 1];
    if (scram_b64_encode(cb, gl + (st->cbind_flag == 'p' ? st->cbind_len : 0), cb64, sizeof cb64) <
        0)
        goto done;
    int fl = snprintf(final, sizeof final, "c=%s,r=%.*s", cb64, (int)nonce_len, nonce);
    if (fl < 0 || (size_t)fl >= sizeof final) goto done;
    int al = snprintf(auth, sizeof auth, "n=%s,r=%s,%.*s,%s", st->user, st->nonce, (int)len,
                      server_first, final);
    if (al < 0 || (size_t)al >= sizeof auth) goto done;

    if (salted_password(password, strlen(password), salt, (size_t)salt_len, iterations, salted) < 0)
        goto done;
    if (scram_keys(salted, client_key, stored, server_key) < 0) goto done;
    if (hmac256(stored, SCRAM_KEY_LEN, auth, (size_t)al, sig) < 0) goto done;
    for (int i = 0; i < SCRAM_KEY_LEN; i++)
        sig[i] ^= client_key[i]; /* ClientProof */
    char proof_b64[48];
    if (scram_b64_encode(sig, SCRAM_KEY_LEN, proof_b64, sizeof proof_b64) < 0) goto done;
    if (hmac256(server_key, SCRAM_KEY_LEN, auth, (size_t)al, st->server_sig) < 0) goto done;

    int n = snprintf(out, outcap, "%s,p=%s", final, proof_b64);
    if (n < 0 || (size_t)n >= outcap) goto done;
    if (outlen) *outlen = (size_t)n;
    st->state = 2;
    rc = 0;
done:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(server_key, sizeof server_key);
    OPENSSL_cleanse(stored, sizeof stored);
    return rc;
}

int scram_client_finish(struct scram_client *st, const char *server_final, size_t len)
{
    const char *p = server_final, *end = server_final + len;
    const char *val;
    size_t vlen;
    bool more;
    unsigned char sig[SCRAM_KEY_LEN];
    int rc = -1;

    if (st->state != 2) goto done;
    if (!server_final || len == 0 || len > SCRAM_MAX_SERVER_FINAL) goto done;
    if (memchr(server_final, '\0', len)) goto done;
    if (take_attr(&p, end, 'v', &val, &vlen, &more) < 0) goto done; /* "e=" is a failure */
    if (scram_b64_decode(val, vlen, sig, sizeof sig) != SCRAM_KEY_LEN) goto done;
    if (CRYPTO_memcmp(sig, st->server_sig, SCRAM_KEY_LEN) != 0) goto done;
    rc = 0;
done:
    st->state = rc == 0 ? 3 : -1;
    OPENSSL_cleanse(st->server_sig, sizeof st->server_sig);
    return rc;
}

/* ---------------------------------------------------------------- md5 */

static void md5_hex(const void *data, size_t len, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL) || mdlen != 16) {
        memset(out, '0', 32); /* cannot happen with a working libcrypto; never matches */
        out[32] = '\0';
        return;
    }
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

void pg_md5_response(const char *user, const char *password, const unsigned char salt[4],
                     char out[36])
{
    size_t ul = strlen(user), pl = strlen(password);
    char inner[33];
    unsigned char buf2[36];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    /* md5(password || user), streamed so neither length is bounded by a buffer */
    if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) && EVP_DigestUpdate(ctx, password, pl) &&
        EVP_DigestUpdate(ctx, user, ul) && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 16) {
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
            inner[2 * i] = hex[md[i] >> 4];
            inner[2 * i + 1] = hex[md[i] & 15];
        }
        inner[32] = '\0';
    } else {
        memset(inner, '0', 32);
        inner[32] = '\0';
    }
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(md, sizeof md);
    memcpy(buf2, inner, 32);
    memcpy(buf2 + 32, salt, 4);
    memcpy(out, "md5", 3);
    md5_hex(buf2, sizeof buf2, out + 3);
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(buf2, sizeof buf2);
}
