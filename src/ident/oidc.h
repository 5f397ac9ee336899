/*
 * oidc.h: OIDC identities from JWTs (Okta or any issuer), verified against the issuer's JWKS.
 *
 * A client puts a JWT where the password goes (or in `Authorization: Bearer` for the admin API).
 * oidc_verify checks the compact JWS with cjose (signature only: cjose checks no claims), after
 * checking the header's alg against the pinned list and the key's type against the alg family
 * itself, then checks exp, nbf, iss and aud here, and builds an identity from the configured
 * claims. Keys come from a JWKS file (loaded in oidc_verifier_new) or a URL, fetched with
 * libcurl on a thread of the verifier's own (never on a worker's event loop), refreshed every
 * 10 minutes and on an unknown kid (at most once per 30 s). The key set is an immutable,
 * reference-counted snapshot swapped under a mutex, so any number of worker threads can verify
 * at once.
 *
 * What this leaves to others: deciding that a password is a JWT (oidc_looks_like_jwt is the
 * cheap test), comparing the startup `user` with the identity name (the session refuses a
 * mismatch), and telling the client the outcome (28P01).
 *
 * Ownership: the verifier copies what it needs from cfg (cfg may be freed after _new). An
 * oidc_identity filled by oidc_verify owns its strings; free them with oidc_identity_free.
 * Reasons (err/why) never contain the token or any part of it.
 */
#ifndef SLUICE_IDENT_OIDC_H
#define SLUICE_IDENT_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

struct oidc_verifier;

struct oidc_identity {
    char *name;           /* name_claim (default: "email", else "sub"); never empty */
    enum ident_kind kind; /* kind_claim: "human" | "service" | "agent"; absent: human */
    char **groups;        /* groups_claim: array of strings (or one string); may be empty */
    unsigned n_groups;
    uint64_t exp; /* the token's exp (seconds since the epoch) */
};

/* Longest token accepted (bytes); longer ones are refused as malformed. */
#define OIDC_TOKEN_MAX (16 * 1024)

/*
 * Build a verifier from the config. issuer and audience are required. Exactly one of jwks_file
 * (read and parsed now: an error when missing, unreadable or holding no usable key) and jwks_url
 * (fetched by a background thread started here; verification fails ("no JWKS keys loaded yet")
 * until the first fetch succeeds). NULL claims take the defaults; n_algorithms 0 means RS256.
 * Accepted algorithms: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512. HS* (symmetric) and
 * "none" are refused; EdDSA is refused too (cjose 0.6.2 has no OKP keys). cfg->leeway is used as
 * given (the loader defaults it to 60). Returns NULL with a one-line reason in err on error.
 */
struct oidc_verifier *oidc_verifier_new(const struct cfg_oidc *cfg, char *err, size_t errlen);

/* Stop the fetch thread (if any; it is woken, a transfer in flight ends within a second) and
 * free everything. Verifications still running on other threads must have returned. NULL ok. */
void oidc_verifier_free(struct oidc_verifier *v);

/*
 * Verify token at time now (seconds since the epoch). Thread-safe; never blocks on the network
 * (an unknown kid only wakes the fetch thread and fails this attempt). 0 with *out filled (the
 * caller owns it), or -1 with a short reason for the log in why (never the token) and *out
 * zeroed. Refused: malformed or oversize token, alg none or not pinned, crit header, no key
 * (unknown kid, no key of the alg's type, key type or curve not matching alg), bad signature,
 * missing or non-numeric exp, exp + leeway < now, nbf - leeway > now, iss not equal to issuer,
 * aud (string or array) without audience, missing name claim, bad kind or groups claim.
 */
int oidc_verify(struct oidc_verifier *v, const char *token, uint64_t now, struct oidc_identity *out,
                char *why, size_t whylen) __attribute__((warn_unused_result));

/* True when s looks like a compact JWS: three base64url segments separated by dots, the first
 * starting with "eyJ" (base64url of `{"`), the last possibly empty. Cheap: no decoding. */
bool oidc_looks_like_jwt(const char *s);

/* Free what oidc_verify put in id and zero it. NULL ok. */
void oidc_identity_free(struct oidc_identity *id);

/* A reload: v (new, with jwks_url) starts with from's keys when from fetched from the same
 * URL, so that logins do not wait for v's first fetch (nor fail while the issuer cannot be
 * reached); v's fetch replaces them as usual. No-op when v has keys already, or the URLs
 * differ, or either uses jwks_file (read at load). */
void oidc_verifier_adopt_keys(struct oidc_verifier *v, struct oidc_verifier *from);

/* Wait up to timeout_ms for a usable key set (immediate with jwks_file). True when one is
 * loaded. For startup logs and tests; never call it on a worker's loop. */
bool oidc_verifier_wait_keys(struct oidc_verifier *v, unsigned timeout_ms);

/* Number of successful JWKS loads so far (file load counts as one). Tests and metrics. */
unsigned long oidc_verifier_loads(struct oidc_verifier *v);

#endif
