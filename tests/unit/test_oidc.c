/*
 * test_oidc.c: unit tests of src/ident/oidc.c and src/ident/jwks.c.
 *
 * Keys are made here with OpenSSL (RSA 2048, EC P-256), written as a JWKS to a temp dir, and
 * tokens are signed here with OpenSSL directly (not with cjose, the library under test): valid
 * tokens, every refusal the verifier owes (expired, early, wrong iss/aud, alg none, HS256 keyed
 * with the RSA public key, unknown kid, tampering, alg not pinned, key type not fitting the
 * alg), claims to identity (name, kind, groups), config errors, and the URL path against a
 * one-thread HTTP server on 127.0.0.1 (first fetch, refresh on an unknown kid, rate limit),
 * with workers verifying while key sets are swapped.
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
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cmocka.h>

#include "ident/jwks.h"
#include "ident/oidc.h"

#define NOW 1700000000ull
#define ISS "https://corp.okta.com/oauth2/default"
#define AUD "api://sluice"

/* ---- keys, JWKS and signing, all with OpenSSL */

static EVP_PKEY *rsa1, *rsa2, *rsa3, *ec1;
static char tmpdir[64];
static char jwks_path[128];

static char *b64url(const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n * 4 / 3 + 4), *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18 & 63], *o++ = tab[v >> 12 & 63], *o++ = tab[v >> 6 & 63],
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = tab[v >> 18 & 63], *o++ = tab[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = tab[v >> 18 & 63], *o++ = tab[v >> 12 & 63], *o++ = tab[v >> 6 & 63];
    }
    *o = 0;
    return out;
}

static char *b64url_str(const char *s)
{
    return b64url((const unsigned char *)s, strlen(s));
}

static char *bn_param_b64(EVP_PKEY *k, const char *param, int pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    int n = pad ? pad : BN_num_bytes(bn);
    unsigned char *buf = malloc((size_t)n);
    assert_int_equal(BN_bn2binpad(bn, buf, n), n);
    char *s = b64url(buf, (size_t)n);
    free(buf);
    BN_free(bn);
    return s;
}

/* One JWK (public part) as JSON; extra is spliced in (e.g. "\"alg\":\"RS256\","). */
static char *jwk_json(EVP_PKEY *k, const char *kid, const char *extra)
{
    char *out = malloc(2048);
    if (EVP_PKEY_is_a(k, "RSA")) {
        char *n = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0);
        char *e = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
        snprintf(out, 2048,
                 "{%s\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}",
                 extra ? extra : "", kid, n, e);
        free(n);
        free(e);
    } else {
        char *x = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        char *y = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
        snprintf(out, 2048,
                 "{%s\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
                 extra ? extra : "", kid, x, y);
        free(x);
        free(y);
    }
    return out;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The standard JWKS: rsa1 as "r1", ec1 as "e1", rsa3 as "r3" (rsa2 is never published), plus an
 * encryption key and a symmetric key that must both be skipped. */
static char *standard_jwks(void)
{
    char *a = jwk_json(rsa1, "r1", NULL), *b = jwk_json(ec1, "e1", NULL),
         *c = jwk_json(rsa3, "r3", NULL), *d = jwk_json(rsa2, "enc1", NULL);
    /* rsa2 published only with use "enc": a token it signs must still fail */
    char *dd = strstr(d, "\"use\":\"sig\"");
    memcpy(dd, "\"use\":\"enc\"", 11);
    char *out = malloc(8192);
    snprintf(out, 8192,
             "{\"keys\":[%s,%s,%s,%s,{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"c2VjcmV0c2VjcmV0\"}]}",
             a, b, c, d);
    free(a), free(b), free(c), free(d);
    return out;
}

static unsigned char *sign_pkey(EVP_PKEY *k, const char *alg, const char *input, size_t *siglen)
{
    const EVP_MD *md = EVP_sha256();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md, NULL, k), 1);
    if (strncmp(alg, "PS", 2) == 0) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    size_t n = 0;
    assert_int_equal(EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)input, strlen(input)), 1);
    unsigned char *sig = malloc(n);
    assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    if (strncmp(alg, "ES", 2) == 0) { /* DER -> r || s, 32 bytes each (RFC 7518 3.4) */
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        assert_non_null(es);
        unsigned char *raw = malloc(64);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
        ECDSA_SIG_free(es);
        free(sig);
        sig = raw;
        n = 64;
    }
    *siglen = n;
    return sig;
}

enum signer { SIGN_KEY, SIGN_NONE, SIGN_HMAC_PEM, SIGN_HMAC_DER };

/* header.payload.signature; kid NULL leaves it out of the header. */
static char *make_token_as(EVP_PKEY *k, enum signer how, const char *alg, const char *kid,
                           const char *claims)
{
    char hdr[256];
    if (kid)
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    char *h = b64url_str(hdr), *p = b64url_str(claims);
    size_t inlen = strlen(h) + strlen(p) + 2;
    char *input = malloc(inlen);
    snprintf(input, inlen, "%s.%s", h, p);
    free(h), free(p);

    unsigned char *sig = NULL;
    size_t siglen = 0;
    if (how == SIGN_KEY) {
        sig = sign_pkey(k, alg, input, &siglen);
    } else if (how == SIGN_HMAC_PEM || how == SIGN_HMAC_DER) {
        /* the classic confusion: the RSA public key (as the verifier holds it) as HMAC key */
        unsigned char *keybytes = NULL;
        long keylen = 0;
        BIO *bio = BIO_new(BIO_s_mem());
        if (how == SIGN_HMAC_PEM)
            assert_int_equal(PEM_write_bio_PUBKEY(bio, k), 1);
        else
            assert_true(i2d_PUBKEY_bio(bio, k) == 1);
        char *mem = NULL;
        keylen = BIO_get_mem_data(bio, &mem);
        keybytes = (unsigned char *)mem;
        sig = malloc(EVP_MAX_MD_SIZE);
        unsigned int ml = 0;
        assert_non_null(HMAC(EVP_sha256(), keybytes, (int)keylen, (const unsigned char *)input,
                             strlen(input), sig, &ml));
        siglen = ml;
        BIO_free(bio);
    }
    char *s = sig ? b64url(sig, siglen) : strdup("");
    free(sig);
    size_t tlen = strlen(input) + strlen(s) + 2;
    char *tok = malloc(tlen);
    snprintf(tok, tlen, "%s.%s", input, s);
    free(input), free(s);
    return tok;
}

static char *make_token(EVP_PKEY *k, const char *alg, const char *kid, const char *claims)
{
    return make_token_as(k, SIGN_KEY, alg, kid, claims);
}

/* Claims with the usual iss/aud/exp around NOW, plus extra members. */
static char *claims_std(const char *extra)
{
    char *c = malloc(1024);
    snprintf(c, 1024, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"iat\":%llu%s%s}", ISS, AUD,
             NOW + 3600, NOW - 10, extra && *extra ? "," : "", extra ? extra : "");
    return c;
}

static struct cfg_oidc base_cfg(void)
{
    struct cfg_oidc c;
    memset(&c, 0, sizeof c);
    c.enabled = true;
    c.issuer = ISS;
    c.audience = AUD;
    c.jwks_file = jwks_path;
    c.leeway = 60;
    return c;
}

static struct oidc_verifier *verifier(struct cfg_oidc c)
{
    char err[256] = "";
    struct oidc_verifier *v = oidc_verifier_new(&c, err, sizeof err);
    if (!v) fail_msg("oidc_verifier_new: %s", err);
    return v;
}

/* Verify and return the rc; on failure, check why contains want (when want is set). */
static int verify_expect(struct oidc_verifier *v, const char *tok, uint64_t now,
                         struct oidc_identity *id, const char *want)
{
    char why[256] = "";
    int rc = oidc_verify(v, tok, now, id, why, sizeof why);
    if (rc != 0 && want && !strstr(why, want)) fail_msg("reason \"%s\" lacks \"%s\"", why, want);
    if (rc != 0) {
        assert_null(id->name);
        /* the reason never quotes the token */
        assert_null(strstr(why, tok + (strlen(tok) > 20 ? strlen(tok) - 20 : 0)));
    }
    return rc;
}

static int setup(void **state)
{
    (void)state;
    rsa1 = EVP_RSA_gen(2048);
    rsa2 = EVP_RSA_gen(2048);
    rsa3 = EVP_RSA_gen(2048);
    ec1 = EVP_EC_gen("P-256");
    if (!rsa1 || !rsa2 || !rsa3 || !ec1) return -1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-oidc-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", tmpdir);
    char *j = standard_jwks();
    write_file(jwks_path, j);
    free(j);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa1), EVP_PKEY_free(rsa2), EVP_PKEY_free(rsa3), EVP_PKEY_free(ec1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests */

static void test_looks_like_jwt(void **state)
{
    (void)state;
    assert_true(oidc_looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
    assert_true(oidc_looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")); /* alg none */
    assert_false(oidc_looks_like_jwt("hunter2"));
    assert_false(oidc_looks_like_jwt(""));
    assert_false(oidc_looks_like_jwt(NULL));
    assert_false(oidc_looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"));
    assert_false(oidc_looks_like_jwt("eyJa.b.c.d"));
    assert_false(oidc_looks_like_jwt("eyJa..c"));
    assert_false(oidc_looks_like_jwt("eyJa.b c.d"));
    assert_false(oidc_looks_like_jwt("eyJa.b+/.d"));
    assert_false(oidc_looks_like_jwt("abcd.efgh.ijkl")); /* header not {" */
    char *tok = make_token(rsa1, "RS256", "r1", "{}");
    assert_true(oidc_looks_like_jwt(tok));
    free(tok);
}

static void test_valid_rs256(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    assert_true(oidc_verifier_wait_keys(v, 0));
    assert_int_equal(oidc_verifier_loads(v), 1);
    char *c =
        claims_std("\"email\":\"alice@corp.com\",\"sub\":\"00u1\",\"groups\":[\"eng\",\"dba\"]");
    char *tok = make_token(rsa1, "RS256", "r1", c);
    struct oidc_identity id;
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "alice@corp.com");
    assert_int_equal(id.kind, IDENT_HUMAN);
    assert_int_equal(id.n_groups, 2);
    assert_string_equal(id.groups[0], "eng");
    assert_string_equal(id.groups[1], "dba");
    assert_int_equal(id.exp, NOW + 3600);
    oidc_identity_free(&id);
    assert_null(id.name);
    free(tok);

    /* no kid: the keys of the alg's type are tried (r1, then r3) */
    tok = make_token(rsa3, "RS256", NULL, c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "alice@corp.com");
    oidc_identity_free(&id);
    free(tok);

    /* a key published only for encryption never verifies */
    tok = make_token(rsa2, "RS256", "enc1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "unknown key id"), -1);
    free(tok);
    tok = make_token(rsa2, "RS256", NULL, c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "bad signature"), -1);
    free(tok);

    /* kid r1 but signed by r3's key */
    tok = make_token(rsa3, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "bad signature"), -1);
    free(tok);
    free(c);
    oidc_verifier_free(v);
}

static void test_times(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    struct oidc_identity id;
    char c[512];
    char *tok;

    /* expired two minutes ago: refused; 30 s ago: inside the 60 s leeway */
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"sub\":\"u\"}", ISS, AUD,
             NOW - 120);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "expired"), -1);
    free(tok);
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"sub\":\"u\"}", ISS, AUD,
             NOW - 30);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);
    /* the same token a minute later is refused */
    assert_int_equal(verify_expect(v, tok, NOW + 60, &id, "expired"), -1);
    free(tok);

    /* nbf in the future: refused beyond the leeway, accepted within it */
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"nbf\":%llu,\"sub\":\"u\"}",
             ISS, AUD, NOW + 3600, NOW + 120);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "not valid"), -1);
    assert_int_equal(verify_expect(v, tok, NOW + 70, &id, NULL), 0);
    oidc_identity_free(&id);
    free(tok);

    /* missing exp, and exp that is not a number */
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"u\"}", ISS, AUD);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "no exp"), -1);
    free(tok);
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":\"%llu\",\"sub\":\"u\"}", ISS,
             AUD, NOW + 3600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "exp claim is not"), -1);
    free(tok);

    /* leeway 0 from the config is honoured */
    struct cfg_oidc cfg = base_cfg();
    cfg.leeway = 0;
    struct oidc_verifier *strict = verifier(cfg);
    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"sub\":\"u\"}", ISS, AUD,
             NOW - 1);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(strict, tok, NOW, &id, "expired"), -1);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);
    free(tok);
    oidc_verifier_free(strict);
    oidc_verifier_free(v);
}

static void test_iss_aud(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    struct oidc_identity id;
    char c[512];
    char *tok;
    const char *fmt = "{\"iss\":%s,\"aud\":%s,\"exp\":%llu,\"sub\":\"u\"}";

    snprintf(c, sizeof c, fmt, "\"" ISS "\"", "\"api://other\"", NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "audience"), -1);
    free(tok);

    snprintf(c, sizeof c, fmt, "\"" ISS "\"", "[\"api://other\",\"" AUD "\"]", NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);
    free(tok);

    snprintf(c, sizeof c, fmt, "\"" ISS "\"", "[\"api://other\",\"api://sluic\"]", NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "audience"), -1);
    free(tok);

    snprintf(c, sizeof c, "{\"iss\":\"%s\",\"exp\":%llu,\"sub\":\"u\"}", ISS, NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "audience"), -1);
    free(tok);

    snprintf(c, sizeof c, fmt, "\"https://evil.okta.com/oauth2/default\"", "\"" AUD "\"",
             NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "issuer"), -1);
    free(tok);

    snprintf(c, sizeof c, fmt, "\"" ISS "/\"", "\"" AUD "\"", NOW + 600); /* exact match only */
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "issuer"), -1);
    free(tok);

    snprintf(c, sizeof c, "{\"aud\":\"%s\",\"exp\":%llu,\"sub\":\"u\"}", AUD, NOW + 600);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "issuer"), -1);
    free(tok);
    oidc_verifier_free(v);
}

static void test_alg_none_and_confusion(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    struct oidc_identity id;
    char *c = claims_std("\"sub\":\"mallory\"");

    char *tok = make_token_as(NULL, SIGN_NONE, "none", NULL, c);
    assert_true(oidc_looks_like_jwt(tok));
    assert_int_equal(verify_expect(v, tok, NOW, &id, "alg none"), -1);
    free(tok);
    tok = make_token_as(NULL, SIGN_NONE, "none", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "alg none"), -1);
    free(tok);
    tok = make_token_as(NULL, SIGN_NONE, "None", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "alg none"), -1);
    free(tok);
    /* an RS256 header with the signature stripped */
    tok = make_token_as(NULL, SIGN_NONE, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), -1);
    free(tok);

    /* HS256 keyed with the RSA public key (PEM and DER), with and without the kid */
    enum signer hs[] = {SIGN_HMAC_PEM, SIGN_HMAC_DER};
    for (unsigned i = 0; i < 2; i++) {
        tok = make_token_as(rsa1, hs[i], "HS256", "r1", c);
        assert_int_equal(verify_expect(v, tok, NOW, &id, "pinned"), -1);
        free(tok);
        tok = make_token_as(rsa1, hs[i], "HS256", NULL, c);
        assert_int_equal(verify_expect(v, tok, NOW, &id, "pinned"), -1);
        free(tok);
    }

    /* HS* cannot even be pinned */
    struct cfg_oidc cfg = base_cfg();
    char *hs256[] = {"RS256", "HS256"};
    cfg.algorithms = hs256;
    cfg.n_algorithms = 2;
    char err[256] = "";
    assert_null(oidc_verifier_new(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "HS256"));

    /* both families pinned: an ES256 token naming the RSA key is refused on key type, and an
     * RS256 token naming the EC key too */
    char *both[] = {"RS256", "ES256"};
    cfg.algorithms = both;
    cfg.n_algorithms = 2;
    struct oidc_verifier *v2 = verifier(cfg);
    tok = make_token(ec1, "ES256", "r1", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, "does not fit"), -1);
    free(tok);
    tok = make_token(rsa1, "RS256", "e1", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, "does not fit"), -1);
    free(tok);
    /* ... while the right pairs pass */
    tok = make_token(ec1, "ES256", "e1", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "mallory");
    oidc_identity_free(&id);
    free(tok);
    tok = make_token(ec1, "ES256", NULL, c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);
    free(tok);
    oidc_verifier_free(v2);

    /* a JWK that states its alg is used for that alg only */
    char *k = jwk_json(rsa1, "r1", "\"alg\":\"RS384\","), path[160], doc[4096];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", k);
    free(k);
    snprintf(path, sizeof path, "%s/alg.json", tmpdir);
    write_file(path, doc);
    char *rs[] = {"RS256", "RS384"};
    cfg = base_cfg();
    cfg.jwks_file = path;
    cfg.algorithms = rs;
    cfg.n_algorithms = 2;
    v2 = verifier(cfg);
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, "does not fit"), -1);
    free(tok);
    oidc_verifier_free(v2);

    free(c);
    oidc_verifier_free(v);
}

static void test_kid_tamper_pinning(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    struct oidc_identity id;
    char *c = claims_std("\"email\":\"bob@corp.com\",\"groups\":[\"eng\"]");

    char *tok = make_token(rsa1, "RS256", "nope", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "unknown key id"), -1);
    free(tok);

    /* tampered payload: the signature of one token over another payload */
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);
    char *c2 = claims_std("\"email\":\"bob@corp.com\",\"groups\":[\"dba\"]");
    char *evil = b64url_str(c2);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    size_t n = (size_t)(d1 - tok) + 1 + strlen(evil) + strlen(d2) + 1;
    char *forged = malloc(n);
    snprintf(forged, n, "%.*s.%s%s", (int)(d1 - tok), tok, evil, d2);
    assert_int_equal(verify_expect(v, forged, NOW, &id, "bad signature"), -1);
    /* one flipped signature character */
    char *last = tok + strlen(tok) - 3;
    *last = *last == 'A' ? 'B' : 'A';
    assert_int_equal(verify_expect(v, tok, NOW, &id, "bad signature"), -1);
    free(forged), free(evil), free(c2), free(tok);

    /* garbage in every segment */
    assert_int_equal(verify_expect(v, "eyJ.eyJ.abc", NOW, &id, "malformed"), -1);
    assert_int_equal(verify_expect(v, "not a token", NOW, &id, "malformed"), -1);
    char *hdr = b64url_str("[\"alg\",\"RS256\"]"), bad[2048];
    snprintf(bad, sizeof bad, "eyJ%s.eyJ.abc", hdr + 3);
    assert_int_equal(verify_expect(v, bad, NOW, &id, NULL), -1);
    free(hdr);
    /* crit extension */
    hdr = b64url_str("{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"exp\"],\"exp\":1}");
    char *pl = b64url_str(c);
    snprintf(bad, sizeof bad, "%s.%s.abcd", hdr, pl);
    assert_int_equal(verify_expect(v, bad, NOW, &id, "crit"), -1);
    free(hdr), free(pl);
    /* oversize */
    char *huge = malloc(OIDC_TOKEN_MAX + 100);
    memset(huge, 'A', OIDC_TOKEN_MAX + 99);
    memcpy(huge, "eyJ", 3);
    huge[100] = '.', huge[200] = '.';
    huge[OIDC_TOKEN_MAX + 99] = 0;
    assert_int_equal(verify_expect(v, huge, NOW, &id, NULL), -1);
    free(huge);

    /* ES256 token with only RS256 pinned (the default) */
    tok = make_token(ec1, "ES256", "e1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "pinned"), -1);
    free(tok);
    /* RS512 token with RS256 pinned */
    tok = make_token(rsa1, "RS256", "r1", c);
    char *h512 = b64url_str("{\"alg\":\"RS512\",\"kid\":\"r1\"}");
    snprintf(bad, sizeof bad, "%s%s", h512, strchr(tok, '.'));
    assert_int_equal(verify_expect(v, bad, NOW, &id, "pinned"), -1);
    free(h512), free(tok);

    /* PS256 when pinned */
    struct cfg_oidc cfg = base_cfg();
    char *ps[] = {"PS256"};
    cfg.algorithms = ps;
    cfg.n_algorithms = 1;
    struct oidc_verifier *v2 = verifier(cfg);
    tok = make_token(rsa3, "PS256", "r3", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "bob@corp.com");
    oidc_identity_free(&id);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "pinned"), -1);
    free(tok);
    tok = make_token(rsa3, "RS256", "r3", c);
    assert_int_equal(verify_expect(v2, tok, NOW, &id, "pinned"), -1);
    free(tok);
    oidc_verifier_free(v2);

    free(c);
    oidc_verifier_free(v);
}

static void test_claims(void **state)
{
    (void)state;
    struct oidc_verifier *v = verifier(base_cfg());
    struct oidc_identity id;
    char *c, *tok;

    /* kind and groups from the default claims */
    c = claims_std("\"email\":\"bot@corp.com\",\"sluice_kind\":\"agent\",\"groups\":[\"ai\"]");
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    assert_int_equal(id.kind, IDENT_AGENT);
    assert_int_equal(id.n_groups, 1);
    assert_string_equal(id.groups[0], "ai");
    oidc_identity_free(&id);
    free(c), free(tok);

    /* no groups; name from sub when there is no email */
    c = claims_std("\"sub\":\"00u1abc\",\"sluice_kind\":\"service\"");
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "00u1abc");
    assert_int_equal(id.kind, IDENT_SERVICE);
    assert_int_equal(id.n_groups, 0);
    assert_null(id.groups);
    oidc_identity_free(&id);
    free(c), free(tok);

    /* refused: unknown kind, kind not a string, groups not strings, no name at all */
    const char *bad[][2] = {
        {"\"sub\":\"u\",\"sluice_kind\":\"root\"", "human, service or agent"},
        {"\"sub\":\"u\",\"sluice_kind\":1", "human, service or agent"},
        {"\"sub\":\"u\",\"groups\":[\"a\",3]", "list of strings"},
        {"\"sub\":\"u\",\"groups\":{\"a\":1}", "list of strings"},
        {"\"sub\":\"u\",\"groups\":[\"\"]", "list of strings"},
        {"\"name\":\"Alice\"", "no email or sub"},
        {"\"email\":\"\"", "not a usable name"},
        {"\"email\":\"a\\nb@corp.com\"", "not a usable name"},
        {"\"email\":\"a\\u202e@corp.com\"", "not a usable name"}, /* right-to-left override */
        {"\"email\":\"a\\u0085@corp.com\"", "not a usable name"}, /* C1 (NEL) */
        {"\"sub\":\"u\",\"groups\":[\"a\\u2066b\"]", "list of strings"},
        {"\"email\":42", "not a usable name"},
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = claims_std(bad[i][0]);
        tok = make_token(rsa1, "RS256", "r1", c);
        assert_int_equal(verify_expect(v, tok, NOW, &id, bad[i][1]), -1);
        free(c), free(tok);
    }
    oidc_verifier_free(v);

    /* configured claim names: name from preferred_username only, groups from roles (a single
     * string is one group), kind from kind */
    struct cfg_oidc cfg = base_cfg();
    cfg.name_claim = "preferred_username";
    cfg.groups_claim = "roles";
    cfg.kind_claim = "kind";
    v = verifier(cfg);
    c = claims_std("\"preferred_username\":\"carol\",\"email\":\"x@corp.com\",\"roles\":\"dpo\","
                   "\"kind\":\"human\",\"groups\":[\"ignored\"],\"sluice_kind\":\"agent\"");
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    assert_string_equal(id.name, "carol");
    assert_int_equal(id.kind, IDENT_HUMAN);
    assert_int_equal(id.n_groups, 1);
    assert_string_equal(id.groups[0], "dpo");
    oidc_identity_free(&id);
    free(c), free(tok);
    c = claims_std("\"email\":\"x@corp.com\",\"sub\":\"00u\"");
    tok = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, tok, NOW, &id, "no preferred_username claim"), -1);
    free(c), free(tok);
    oidc_verifier_free(v);

    /* require_groups: a token naming one of them is admitted; none, or no groups, refused */
    cfg = base_cfg();
    char *required[] = {"db-users", "dba"};
    cfg.require_groups = required;
    cfg.n_require_groups = 2;
    v = verifier(cfg);
    const char *admit[][2] = {
        {"\"sub\":\"u\",\"groups\":[\"eng\",\"dba\"]", NULL},
        {"\"sub\":\"u\",\"groups\":\"db-users\"", NULL},
        {"\"sub\":\"u\",\"groups\":[\"eng\",\"DBA\"]", "require_groups"},
        {"\"sub\":\"u\",\"groups\":[]", "require_groups"},
        {"\"sub\":\"u\"", "require_groups"},
    };
    for (unsigned i = 0; i < sizeof admit / sizeof admit[0]; i++) {
        c = claims_std(admit[i][0]);
        tok = make_token(rsa1, "RS256", "r1", c);
        assert_int_equal(verify_expect(v, tok, NOW, &id, admit[i][1]), admit[i][1] ? -1 : 0);
        if (!admit[i][1]) oidc_identity_free(&id);
        free(c), free(tok);
    }
    oidc_verifier_free(v);
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[256], path[160];
    struct cfg_oidc c;

#define EXPECT_ERR(want)                                                                           \
    do {                                                                                           \
        err[0] = 0;                                                                                \
        assert_null(oidc_verifier_new(&c, err, sizeof err));                                       \
        if (!strstr(err, want)) fail_msg("error \"%s\" lacks \"%s\"", err, want);                  \
    } while (0)

    c = base_cfg();
    c.issuer = NULL;
    EXPECT_ERR("issuer and audience");
    c = base_cfg();
    c.audience = "";
    EXPECT_ERR("issuer and audience");
    c = base_cfg();
    c.jwks_url = "https://corp.okta.com/oauth2/default/v1/keys";
    EXPECT_ERR("exactly one");
    c = base_cfg();
    c.jwks_file = NULL;
    EXPECT_ERR("exactly one");
    c = base_cfg();
    c.jwks_file = NULL;
    c.jwks_url = "http://corp.okta.com/keys";
    EXPECT_ERR("https");
    c.jwks_url = "file:///etc/passwd";
    EXPECT_ERR("https");
    c.jwks_url = "http://127.0.0.1.evil.com/keys";
    EXPECT_ERR("https");
    c.jwks_url = "http://localhost:1@192.0.2.1/keys"; /* libcurl connects to 192.0.2.1 */
    EXPECT_ERR("https");
    c.jwks_url = "https://user:secret@idp.example.com/keys"; /* a password would be logged */
    EXPECT_ERR("https");
    c = base_cfg();
    char *none[] = {"none"}, *ed[] = {"EdDSA"}, *odd[] = {"RS257"};
    c.algorithms = none, c.n_algorithms = 1;
    EXPECT_ERR("none");
    c.algorithms = ed;
    EXPECT_ERR("EdDSA");
    c.algorithms = odd;
    EXPECT_ERR("unknown algorithm");
    c = base_cfg();
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    c.jwks_file = path;
    EXPECT_ERR("missing.json");
    snprintf(path, sizeof path, "%s/oct.json", tmpdir);
    write_file(path, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\"}]}");
    EXPECT_ERR("no usable signing key");
    write_file(path, "{\"keys\":{}}");
    EXPECT_ERR("keys");
    write_file(path, "[1,2");
    EXPECT_ERR("not a JSON object");
    /* an RSA key under 2048 bits is not used */
    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *k = jwk_json(small, "s1", NULL), doc[2048];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", k);
    write_file(path, doc);
    EXPECT_ERR("no usable signing key");
    free(k);
    EVP_PKEY_free(small);
#undef EXPECT_ERR
}

/* ---- the URL path: a one-thread HTTP server on 127.0.0.1 */

struct jwks_server {
    int fd;
    int port;
    pthread_t th;
    atomic_bool stop;
    atomic_int requests;
    pthread_mutex_t lock;
    char *body; /* what GET returns; NULL answers 500 */
};

static void *server_main(void *arg)
{
    struct jwks_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) continue;
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t n = recv(c, req + got, sizeof req - 1 - got, 0);
            if (n <= 0) break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        atomic_fetch_add(&s->requests, 1);
        pthread_mutex_lock(&s->lock);
        char *resp = malloc(16384);
        int n;
        if (s->body)
            n = snprintf(resp, 16384,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         "%zu\r\nConnection: close\r\n\r\n%s",
                         strlen(s->body), s->body);
        else
            n = snprintf(resp, 16384,
                         "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        pthread_mutex_unlock(&s->lock);
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = send(c, resp + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
        }
        free(resp);
        close(c);
    }
    return NULL;
}

static void server_set(struct jwks_server *s, char *body_take)
{
    pthread_mutex_lock(&s->lock);
    free(s->body);
    s->body = body_take;
    pthread_mutex_unlock(&s->lock);
}

static void server_start(struct jwks_server *s, char *body_take)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->body = body_take;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_stop(struct jwks_server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->fd);
    free(s->body);
    pthread_mutex_destroy(&s->lock);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool wait_loads(struct oidc_verifier *v, unsigned long want, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms; t += 10) {
        if (oidc_verifier_loads(v) >= want) return true;
        sleep_ms(10);
    }
    return oidc_verifier_loads(v) >= want;
}

static char *jwks_of(EVP_PKEY *a, const char *akid, EVP_PKEY *b, const char *bkid)
{
    char *ja = jwk_json(a, akid, NULL), *jb = b ? jwk_json(b, bkid, NULL) : NULL;
    char *out = malloc(8192);
    snprintf(out, 8192, "{\"keys\":[%s%s%s]}", ja, jb ? "," : "", jb ? jb : "");
    free(ja), free(jb);
    return out;
}

struct worker_arg {
    struct oidc_verifier *v;
    const char *tok;
    atomic_bool *stop;
    int runs, ok;
};

/* Verify until told to stop (at least 50 times); count the runs and the successes. */
static void *verify_worker(void *p)
{
    struct worker_arg *w = p;
    while (w->runs < 50 || !atomic_load(w->stop)) {
        struct oidc_identity id;
        char why[128];
        w->runs++;
        if (oidc_verify(w->v, w->tok, (uint64_t)time(NULL), &id, why, sizeof why) == 0) {
            if (strcmp(id.name, "dave@corp.com") == 0) w->ok++;
            oidc_identity_free(&id);
        }
    }
    return NULL;
}

static void test_jwks_url(void **state)
{
    (void)state;
    struct jwks_server s;
    server_start(&s, jwks_of(rsa1, "r1", NULL, NULL));
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/oauth2/default/v1/keys", s.port);
    struct cfg_oidc cfg = base_cfg();
    cfg.jwks_file = NULL;
    cfg.jwks_url = url;
    struct oidc_verifier *v = verifier(cfg);
    jwks_verifier_set_intervals(v, 10 * 60 * 1000, 300);
    assert_true(oidc_verifier_wait_keys(v, 5000));
    assert_int_equal(oidc_verifier_loads(v), 1);
    assert_int_equal(atomic_load(&s.requests), 1);

    struct oidc_identity id;
    uint64_t now = (uint64_t)time(NULL);
    char c[512];
    snprintf(c, sizeof c,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"exp\":%llu,\"email\":\"dave@corp.com\"}", ISS, AUD,
             (unsigned long long)now + 600);
    char *t1 = make_token(rsa1, "RS256", "r1", c);
    assert_int_equal(verify_expect(v, t1, now, &id, NULL), 0);
    oidc_identity_free(&id);

    /* the issuer rotates in a new key: the first token with its kid fails and wakes a fetch;
     * once it lands the same token passes */
    server_set(&s, jwks_of(rsa1, "r1", rsa2, "r2"));
    char *t2 = make_token(rsa2, "RS256", "r2", c);
    assert_int_equal(verify_expect(v, t2, now, &id, "unknown key id"), -1);
    assert_true(wait_loads(v, 2, 5000));
    assert_int_equal(verify_expect(v, t2, now, &id, NULL), 0);
    oidc_identity_free(&id);
    int after = atomic_load(&s.requests);
    assert_int_equal(after, 2);

    /* rate limit: a burst of unknown kids right after a fetch causes no fetch within the gap
     * (2 s here), and exactly one after it */
    jwks_verifier_set_intervals(v, 10 * 60 * 1000, 2000);
    char *t3 = make_token(rsa3, "RS256", "r9", c);
    for (int i = 0; i < 20; i++)
        assert_int_equal(verify_expect(v, t3, now, &id, "unknown"), -1);
    sleep_ms(300);
    assert_int_equal(atomic_load(&s.requests), after);
    assert_true(wait_loads(v, 3, 5000));
    sleep_ms(100);
    assert_int_equal(atomic_load(&s.requests), after + 1);

    /* a failing endpoint keeps the keys it had */
    server_set(&s, NULL);
    jwks_verifier_set_intervals(v, 50, 50);
    for (int i = 0; i < 200 && atomic_load(&s.requests) < after + 3; i++)
        sleep_ms(10);
    assert_true(atomic_load(&s.requests) >= after + 3);
    assert_int_equal(oidc_verifier_loads(v), 3);
    assert_int_equal(verify_expect(v, t1, now, &id, NULL), 0);
    oidc_identity_free(&id);

    /* workers verify while new key sets keep landing every 20 ms */
    server_set(&s, jwks_of(rsa1, "r1", rsa2, "r2"));
    jwks_verifier_set_intervals(v, 20, 20);
    pthread_t th[4];
    struct worker_arg wa[4];
    atomic_bool stop = false;
    unsigned long loads0 = oidc_verifier_loads(v);
    for (int i = 0; i < 4; i++) {
        wa[i] = (struct worker_arg){v, i % 2 ? t1 : t2, &stop, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_worker, &wa[i]), 0);
    }
    bool swapped = wait_loads(v, loads0 + 5, 5000); /* five swaps under the workers' feet */
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wa[i].ok, wa[i].runs);
    }
    assert_true(swapped);

    free(t1), free(t2), free(t3);
    oidc_verifier_free(v);
    server_stop(&s);
}

/* A reload while the issuer cannot be reached: the new verifier starts with the keys the old
 * one fetched from the same URL, and logins go on; another URL gets none of them. */
static void test_jwks_adopted_on_reload(void **state)
{
    (void)state;
    struct jwks_server s;
    server_start(&s, jwks_of(rsa1, "r1", NULL, NULL));
    char url[128], other[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/keys", s.port);
    snprintf(other, sizeof other, "http://127.0.0.1:%d/other-keys", s.port);
    struct cfg_oidc cfg = base_cfg();
    cfg.jwks_file = NULL;
    cfg.jwks_url = url;
    struct oidc_verifier *old = verifier(cfg);
    assert_true(oidc_verifier_wait_keys(old, 5000));
    server_set(&s, NULL); /* the issuer is down from now on */

    char *c = claims_std("\"sub\":\"u\"");
    char *tok = make_token(rsa1, "RS256", "r1", c);
    struct oidc_identity id;
    struct oidc_verifier *v = verifier(cfg);
    oidc_verifier_adopt_keys(v, old);
    oidc_verifier_free(old); /* the adopted set outlives its first verifier */
    assert_true(oidc_verifier_wait_keys(v, 0));
    assert_int_equal(verify_expect(v, tok, NOW, &id, NULL), 0);
    oidc_identity_free(&id);

    cfg.jwks_url = other;
    struct oidc_verifier *w = verifier(cfg);
    oidc_verifier_adopt_keys(w, v);
    assert_int_equal(verify_expect(w, tok, NOW, &id, "no JWKS keys"), -1);
    oidc_verifier_free(w);
    oidc_verifier_free(v);
    free(c), free(tok);
    server_stop(&s);
}

static void test_jwks_url_unreachable(void **state)
{
    (void)state;
    /* a port nobody listens on: no keys, verification says so, free returns promptly */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/keys", ntohs(a.sin_port));
    close(fd);
    struct cfg_oidc cfg = base_cfg();
    cfg.jwks_file = NULL;
    cfg.jwks_url = url;
    struct oidc_verifier *v = verifier(cfg);
    assert_false(oidc_verifier_wait_keys(v, 200));
    char *c = claims_std("\"sub\":\"u\"");
    char *tok = make_token(rsa1, "RS256", "r1", c);
    struct oidc_identity id;
    assert_int_equal(verify_expect(v, tok, NOW, &id, "no JWKS keys"), -1);
    free(c), free(tok);
    oidc_verifier_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_looks_like_jwt),
        cmocka_unit_test(test_valid_rs256),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_iss_aud),
        cmocka_unit_test(test_alg_none_and_confusion),
        cmocka_unit_test(test_kid_tamper_pinning),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_jwks_url),
        cmocka_unit_test(test_jwks_url_unreachable),
        cmocka_unit_test(test_jwks_adopted_on_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
