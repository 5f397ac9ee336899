/*
 * oidc.c: verifying OIDC JWTs and building identities from their claims.
 *
 * The order matters for safety: the header is decoded and its alg checked against the pinned
 * list before any key is looked at; a key is used only when its type (and curve) fits the alg
 * family, so an HS256 token "signed" with an RSA public key never reaches a MAC; only then does
 * cjose check the signature, and only a verified payload is parsed for claims. cjose checks no
 * claims, so exp, nbf, iss and aud are checked here. Key sets (parsing, fetching, refreshing)
 * live in jwks.c; this file only borrows a snapshot per verification.
 */
#include "ident/oidc.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "ident/jwks.h"

#define NAME_MAX_LEN 256
#define GROUPS_MAX 256

static const char *const kind_names[] = {"human", "service", "agent"};

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || !whylen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* A header value (alg, kid) quoted in a log reason: printable ASCII, short, else "?". */
static const char *loggable(const char *s)
{
    if (!s) return "(none)";
    size_t n = 0;
    for (const char *p = s; *p; p++, n++)
        if (*p < 0x21 || *p > 0x7e || *p == '"' || n >= 64) return "?";
    return s;
}

bool oidc_looks_like_jwt(const char *s)
{
    if (!s || strncmp(s, "eyJ", 3) != 0) return false;
    unsigned dots = 0;
    size_t seglen = 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (seglen == 0) return false; /* header and payload must not be empty */
            dots++;
            seglen = 0;
            if (dots > 2) return false;
            continue;
        }
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
        seglen++;
        if (p - s >= OIDC_TOKEN_MAX) return false;
    }
    return dots == 2; /* the signature may be empty (alg none): oidc_verify says why it fails */
}

void oidc_identity_free(struct oidc_identity *id)
{
    if (!id) return;
    free(id->name);
    for (unsigned i = 0; i < id->n_groups; i++)
        free(id->groups[i]);
    free(id->groups);
    memset(id, 0, sizeof(*id));
}

/* A claim string fit for a name or group: non-empty, bounded, no control characters (C0,
 * DEL, C1) and none of Unicode's direction controls (U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069), which would show a name in logs and listings as another. jansson has
 * checked that it is UTF-8. */
static bool claim_string_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN) return false;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)s + i;
        if (p[0] < 0x20 || p[0] == 0x7f) return false;
        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) return false; /* C1 */
        if (p[0] == 0xe2 && p[1] == 0x80 &&
            (p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xaa && p[2] <= 0xae)))
            return false;
        if (p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9) return false;
    }
    return true;
}

/* A NumericDate claim as whole seconds: 0 when present and valid, -1 when absent, -2 when not a
 * non-negative number of sensible size. */
static int claim_time(json_t *claims, const char *key, int64_t *out)
{
    json_t *j = json_object_get(claims, key);
    if (!j) return -1;
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < 0 || v > ((json_int_t)1 << 40)) return -2;
        *out = (int64_t)v;
        return 0;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (!(d >= 0 && d <= (double)((int64_t)1 << 40))) return -2;
        *out = (int64_t)d;
        return 0;
    }
    return -2;
}

static bool aud_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *e;
        json_array_foreach(aud, i, e)
        {
            if (json_is_string(e) && strcmp(json_string_value(e), want) == 0) return true;
        }
    }
    return false;
}

/* Fill out from verified claims. 0, or -1 with why set. */
static int claims_to_identity(const struct jwks_policy *pol, json_t *claims, uint64_t now,
                              struct oidc_identity *out, char *why, size_t whylen)
{
    int64_t exp = 0, nbf = 0;
    int r = claim_time(claims, "exp", &exp);
    if (r == -1) {
        set_why(why, whylen, "token has no exp claim");
        return -1;
    }
    if (r == -2) {
        set_why(why, whylen, "token exp claim is not a valid time");
        return -1;
    }
    if ((uint64_t)exp + pol->leeway < now) {
        set_why(why, whylen, "token expired %llu s ago", (unsigned long long)(now - (uint64_t)exp));
        return -1;
    }
    r = claim_time(claims, "nbf", &nbf);
    if (r == -2) {
        set_why(why, whylen, "token nbf claim is not a valid time");
        return -1;
    }
    if (r == 0 && (uint64_t)nbf > now + pol->leeway) {
        set_why(why, whylen, "token not valid for another %llu s",
                (unsigned long long)((uint64_t)nbf - now));
        return -1;
    }

    json_t *iss = json_object_get(claims, "iss");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), pol->issuer) != 0) {
        set_why(why, whylen, "token issuer is not the configured issuer");
        return -1;
    }
    json_t *aud = json_object_get(claims, "aud");
    if (!aud || !aud_matches(aud, pol->audience)) {
        set_why(why, whylen, "token audience does not include the configured audience");
        return -1;
    }

    /* name */
    json_t *name = NULL;
    const char *name_from = pol->name_claim;
    if (pol->name_claim) {
        name = json_object_get(claims, pol->name_claim);
    } else {
        name_from = "email";
        name = json_object_get(claims, "email");
        if (!name || json_is_null(name)) {
            name_from = "sub";
            name = json_object_get(claims, "sub");
        }
    }
    if (!name || json_is_null(name)) {
        set_why(why, whylen, "token has no %s claim for the identity name",
                pol->name_claim ? loggable(pol->name_claim) : "email or sub");
        return -1;
    }
    if (!json_is_string(name) || !claim_string_ok(json_string_value(name))) {
        set_why(why, whylen, "token %s claim is not a usable name", loggable(name_from));
        return -1;
    }

    /* kind */
    enum ident_kind kind = IDENT_HUMAN;
    json_t *jk = json_object_get(claims, pol->kind_claim);
    if (jk && !json_is_null(jk)) {
        bool found = false;
        if (json_is_string(jk)) {
            for (unsigned i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
                if (strcmp(json_string_value(jk), kind_names[i]) == 0) {
                    kind = (enum ident_kind)i;
                    found = true;
                }
            }
        }
        if (!found) {
            set_why(why, whylen, "token %s claim is not human, service or agent",
                    loggable(pol->kind_claim));
            return -1;
        }
    }

    /* groups: an array of strings, or one string; absent or null means none */
    json_t *jg = json_object_get(claims, pol->groups_claim);
    size_t ng = 0;
    if (jg && !json_is_null(jg)) {
        if (json_is_string(jg)) {
            ng = 1;
        } else if (json_is_array(jg)) {
            ng = json_array_size(jg);
        } else {
            set_why(why, whylen, "token %s claim is not a list of strings",
                    loggable(pol->groups_claim));
            return -1;
        }
        if (ng > GROUPS_MAX) {
            set_why(why, whylen, "token %s claim has more than %d groups",
                    loggable(pol->groups_claim), GROUPS_MAX);
            return -1;
        }
        for (size_t i = 0; i < ng; i++) {
            json_t *e = json_is_string(jg) ? jg : json_array_get(jg, i);
            if (!json_is_string(e) || !claim_string_ok(json_string_value(e))) {
                set_why(why, whylen, "token %s claim is not a list of strings",
                        loggable(pol->groups_claim));
                return -1;
            }
        }
    }

    /* admission: with require_groups, a token of the issuer is not enough */
    bool admitted = pol->n_require_groups == 0;
    for (size_t i = 0; i < ng && !admitted; i++) {
        const char *g = json_string_value(json_is_string(jg) ? jg : json_array_get(jg, i));
        for (unsigned r = 0; r < pol->n_require_groups && !admitted; r++)
            admitted = strcmp(g, pol->require_groups[r]) == 0;
    }
    if (!admitted) {
        set_why(why, whylen, "token %s claim names none of identities.oidc.require_groups",
                loggable(pol->groups_claim));
        return -1;
    }

    out->name = xstrdup(json_string_value(name));
    out->kind = kind;
    out->exp = (uint64_t)exp;
    out->n_groups = (unsigned)ng;
    out->groups = ng ? xcalloc(ng, sizeof(char *)) : NULL;
    for (size_t i = 0; i < ng; i++) {
        json_t *e = json_is_string(jg) ? jg : json_array_get(jg, i);
        out->groups[i] = xstrdup(json_string_value(e));
    }
    return 0;
}

/* Decode the protected header ourselves so alg is judged before cjose or any key sees it. */
static json_t *header_decode(const char *token, size_t hdrlen)
{
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    cjose_err cerr;
    if (!cjose_base64url_decode(token, hdrlen, &raw, &rawlen, &cerr)) return NULL;
    json_t *h = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    cjose_get_dealloc()(raw);
    if (h && !json_is_object(h)) {
        json_decref(h);
        return NULL;
    }
    return h;
}

int oidc_verify(struct oidc_verifier *v, const char *token, uint64_t now, struct oidc_identity *out,
                char *why, size_t whylen)
{
    json_t *hdr = NULL, *claims = NULL;
    cjose_jws_t *jws = NULL;
    struct jwks_keyset *ks = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    set_why(why, whylen, "token rejected");
    if (!v || !token) goto done;
    size_t len = strnlen(token, OIDC_TOKEN_MAX + 1);
    if (len > OIDC_TOKEN_MAX) {
        set_why(why, whylen, "token longer than %d bytes", OIDC_TOKEN_MAX);
        goto done;
    }
    if (!oidc_looks_like_jwt(token)) {
        set_why(why, whylen, "malformed token (not a compact JWS)");
        goto done;
    }
    const struct jwks_policy *pol = jwks_verifier_policy(v);

    /* 1. header: alg pinned, no crit, before any key is touched */
    size_t hdrlen = (size_t)(strchr(token, '.') - token);
    hdr = header_decode(token, hdrlen);
    if (!hdr) {
        set_why(why, whylen, "malformed token header");
        goto done;
    }
    json_t *jalg = json_object_get(hdr, "alg");
    if (!json_is_string(jalg)) {
        set_why(why, whylen, "token header has no alg");
        goto done;
    }
    const char *alg_name = json_string_value(jalg);
    if (strcasecmp(alg_name, "none") == 0) {
        set_why(why, whylen, "unsigned token (alg none) refused");
        goto done;
    }
    int alg = jwks_alg_from_name(alg_name);
    if (alg < 0 || !(pol->algs & (1u << alg))) {
        set_why(why, whylen, "token alg \"%s\" is not in the pinned algorithms",
                loggable(alg_name));
        goto done;
    }
    if (json_object_get(hdr, "crit")) {
        set_why(why, whylen, "token header has crit extensions, none are supported");
        goto done;
    }
    json_t *jkid = json_object_get(hdr, "kid");
    if (jkid && !json_is_string(jkid)) {
        set_why(why, whylen, "token header kid is not a string");
        goto done;
    }
    const char *kid = jkid ? json_string_value(jkid) : NULL;

    /* 2. cjose parses the compact form (it keeps the exact signing input) */
    cjose_err cerr;
    jws = cjose_jws_import(token, len, &cerr);
    if (!jws) {
        set_why(why, whylen, "malformed token (%s)", cerr.message ? cerr.message : "cjose");
        goto done;
    }

    /* 3. keys that fit: the kid if given, and always the alg's key type and curve */
    ks = jwks_verifier_keys(v);
    if (!ks) {
        set_why(why, whylen, "no JWKS keys loaded yet");
        goto done;
    }
    unsigned tried = 0, kid_seen = 0;
    bool ok = false;
    for (unsigned i = 0; i < ks->n && !ok; i++) {
        const struct jwks_key *k = &ks->keys[i];
        if (kid) {
            if (!k->kid || strcmp(k->kid, kid) != 0) continue;
            kid_seen++;
        }
        if (!jwks_key_fits_alg(k, alg)) continue;
        tried++;
        ok = cjose_jws_verify(jws, k->jwk, &cerr);
    }
    if (!ok) {
        if (kid && !kid_seen) {
            jwks_verifier_want_refresh(v);
            set_why(why, whylen, "unknown key id \"%s\"", loggable(kid));
        } else if (!tried && kid) {
            set_why(why, whylen, "key \"%s\" does not fit alg %s (key type, curve or alg)",
                    loggable(kid), jwks_alg_name(alg));
        } else if (!tried) {
            set_why(why, whylen, "no key in the JWKS fits alg %s", jwks_alg_name(alg));
        } else {
            set_why(why, whylen, "bad signature");
        }
        goto done;
    }

    /* 4. claims, from the verified payload only */
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    if (!cjose_jws_get_plaintext(jws, &pt, &ptlen, &cerr)) {
        set_why(why, whylen, "token payload unreadable");
        goto done;
    }
    claims = json_loadb((const char *)pt, ptlen, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(claims)) {
        set_why(why, whylen, "token payload is not a JSON object");
        goto done;
    }
    rc = claims_to_identity(pol, claims, now, out, why, whylen);

done:
    if (ks) jwks_keyset_unref(ks);
    if (jws) cjose_jws_release(jws);
    if (claims) json_decref(claims);
    if (hdr) json_decref(hdr);
    if (rc != 0) oidc_identity_free(out);
    return rc;
}
