/*
 * digest.c: the result digest of a statement (audit.h): SHA-256 over the rows as sent; and
 * the SHA-256 of an event body for the hash chain (audit_sha256_hex).
 *
 * It uses OpenSSL's SHA256_Init/Update/Final on a context kept inside struct audit_digest,
 * deprecated in OpenSSL 3 but still part of it: through EVP, OpenSSL 3.0 frees and allocates
 * the algorithm context and looks up engines at every EVP_DigestInit_ex2(), which cost more
 * than hashing the few rows of a typical statement (1.7% of sluice's CPU under
 * pgbench -S -M prepared). Same hash, same (SHA-NI) block code.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <assert.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "audit/audit.h"
#include "audit/audit_int.h"

static_assert(sizeof(SHA256_CTX) <= sizeof(((struct audit_digest *)0)->state),
              "struct audit_digest cannot hold a SHA256_CTX");

static SHA256_CTX *ctx_of(struct audit_digest *d)
{
    return (SHA256_CTX *)(void *)d->state;
}

void audit_digest_init(struct audit_digest *d)
{
    SHA256_Init(ctx_of(d));
    d->active = true;
    d->rows = 0;
}

void audit_digest_datarow(struct audit_digest *d, const uint8_t *body, size_t len)
{
    if (len < 2) return;
    SHA256_Update(ctx_of(d), body + 2, len - 2);
    d->rows++;
}

void audit_digest_column(struct audit_digest *d, const void *val, int32_t len)
{
    uint32_t ul = (uint32_t)len;
    unsigned char be[4] = {(unsigned char)(ul >> 24), (unsigned char)(ul >> 16),
                           (unsigned char)(ul >> 8), (unsigned char)ul};
    SHA256_Update(ctx_of(d), be, 4);
    if (len > 0) SHA256_Update(ctx_of(d), val, (size_t)len);
}

void audit_digest_update(struct audit_digest *d, const void *data, size_t len)
{
    SHA256_Update(ctx_of(d), data, len);
}

void audit_digest_final(struct audit_digest *d, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_Final(md, ctx_of(d));
    for (size_t i = 0; i < sizeof md; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = 0;
    /* SHA256_Final wipes the block buffer itself: what is left is the chaining state, which
     * the digest just published. */
    d->active = false;
}

/* An abandoned digest still holds row bytes in its buffer: wiped, not just dropped. */
void audit_digest_free(struct audit_digest *d)
{
    OPENSSL_cleanse(d->state, sizeof d->state);
    d->active = false;
}

/* The chain's hash of an event body, and key ids: a context on the stack, without EVP's
 * allocation and initialization of one per call. */
void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX])
{
    struct audit_digest d;
    audit_digest_init(&d);
    audit_digest_update(&d, data, len);
    audit_digest_final(&d, out);
}
