/*
 * jwks.h: internal to src/ident (oidc.c and jwks.c): key sets and the verifier's state.
 *
 * A key set is parsed from a JWKS document into cjose keys, immutable once built and
 * reference-counted: a verification takes a reference under the verifier's mutex and drops it
 * when done, so the fetch thread can swap in a new set while workers still use the old one.
 * Everything else includes ident/oidc.h only.
 */
#ifndef SLUICE_IDENT_JWKS_H
#define SLUICE_IDENT_JWKS_H

#include <cjose/cjose.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "ident/oidc.h"

/* Signature algorithms sluice accepts (bit positions in jwks_policy.algs). */
enum jwks_alg {
    JWKS_RS256,
    JWKS_RS384,
    JWKS_RS512,
    JWKS_PS256,
    JWKS_PS384,
    JWKS_PS512,
    JWKS_ES256,
    JWKS_ES384,
    JWKS_ES512,
    JWKS_ALG_COUNT
};

int jwks_alg_from_name(const char *name); /* -1 when not one of the above (HS*, none, EdDSA) */
const char *jwks_alg_name(int alg);

struct jwks_key {
    cjose_jwk_t *jwk; /* owned by the set */
    char *kid;        /* NULL when the JWK has none */
    char *alg;        /* the JWK's own "alg" member, or NULL */
    cjose_jwk_kty_t kty;
    int crv; /* EC curve NID, 0 for RSA */
};

struct jwks_keyset {
    atomic_int refs;
    unsigned n;
    struct jwks_key *keys;
};

/* True when key k may verify a token of alg: RSA for RS and PS, EC with the alg's curve for ES,
 * and the JWK's own alg (when it has one) equal to alg. */
bool jwks_key_fits_alg(const struct jwks_key *k, int alg);

/* Parse a JWKS document ({"keys": [...]}); keys with use other than "sig", kty other than RSA
 * or EC, or RSA under 2048 bits are skipped. NULL with a reason when no usable key is left. */
struct jwks_keyset *jwks_keyset_parse(const char *json, size_t len, char *err, size_t errlen);
void jwks_keyset_unref(struct jwks_keyset *ks);

/* What claims checking needs, fixed at oidc_verifier_new. */
struct jwks_policy {
    char *issuer;
    char *audience;
    char *name_claim; /* NULL: "email", then "sub" */
    char *groups_claim;
    char *kind_claim;
    unsigned algs; /* bit (1u << enum jwks_alg) */
    unsigned leeway;
    char **require_groups; /* the token must name one of them (n 0: no requirement) */
    unsigned n_require_groups;
};

const struct jwks_policy *jwks_verifier_policy(struct oidc_verifier *v);
/* The current key set with a reference taken (drop it with jwks_keyset_unref), or NULL. */
struct jwks_keyset *jwks_verifier_keys(struct oidc_verifier *v);
/* Ask the fetch thread for a new JWKS (an unknown kid); rate limited there. No-op for files. */
void jwks_verifier_want_refresh(struct oidc_verifier *v);
/* Tests only: shorten the refresh interval (10 min) and the minimum gap between fetches (30 s). */
void jwks_verifier_set_intervals(struct oidc_verifier *v, unsigned refresh_ms, unsigned min_gap_ms);

#endif
