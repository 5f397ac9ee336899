/*
 * chain.c: the cryptography of the audit chain: SHA-256 of event bodies (each body carries
 * the previous event's hash, so a change anywhere breaks every later link) and Ed25519
 * signatures over periodic checkpoints (seq + hash), made with the configured private key and
 * checked with its public key, so that a copy of the store can be verified elsewhere. All
 * through OpenSSL 3 EVP; no I/O beyond reading key files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "audit/audit_int.h"

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int from_hex(const char *in, unsigned char *out, size_t n)
{
    if (strlen(in) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = in[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

void audit_checkpoint_message(uint64_t seq, const char *hash, struct sbuf *out)
{
    sbuf_addf(out, "sluice-audit-checkpoint\n%llu\n%s\n", (unsigned long long)seq, hash);
}

static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s%s%s", what, path, *buf ? ": " : "", buf);
}

int audit_key_load_private(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open audit signing key %s: %m", path);
        return -1;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k) {
        ssl_err(err, errlen, "cannot read audit signing key", path);
        return -1;
    }
    if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(k);
        snprintf(err, errlen, "audit signing key %s is not an Ed25519 key", path);
        return -1;
    }
    *out = k;
    return 0;
}

int audit_key_load_public(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open public key %s: %m", path);
        return -1;
    }
    EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!k) {
        ERR_clear_error();
        rewind(f);
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (!k) {
        ssl_err(err, errlen, "cannot read public key", path);
        return -1;
    }
    if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(k);
        snprintf(err, errlen, "public key %s is not an Ed25519 key", path);
        return -1;
    }
    *out = k;
    return 0;
}

int audit_key_id(EVP_PKEY *key, char out[17])
{
    unsigned char raw[64];
    size_t n = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(key, raw, &n) != 1) {
        ERR_clear_error();
        return -1;
    }
    char hex[AUDIT_HASH_HEX];
    audit_sha256_hex(raw, n, hex);
    memcpy(out, hex, 16);
    out[16] = 0;
    return 0;
}

int audit_checkpoint_sign(EVP_PKEY *key, uint64_t seq, const char *hash, char sig_hex[129])
{
    struct sbuf msg = {0};
    audit_checkpoint_message(seq, hash, &msg);
    unsigned char sig[64];
    size_t siglen = sizeof sig;
    int ret = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
        EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg.p, msg.len) == 1 &&
        siglen == 64) {
        to_hex(sig, 64, sig_hex);
        ret = 0;
    }
    if (ret) ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    sbuf_free(&msg);
    return ret;
}

int audit_checkpoint_verify(EVP_PKEY *pub, uint64_t seq, const char *hash, const char *sig_hex)
{
    unsigned char sig[64];
    if (!sig_hex || from_hex(sig_hex, sig, sizeof sig) != 0) return 0;
    struct sbuf msg = {0};
    audit_checkpoint_message(seq, hash, &msg);
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) == 1)
        ok = EVP_DigestVerify(ctx, sig, sizeof sig, (const unsigned char *)msg.p, msg.len) == 1;
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    sbuf_free(&msg);
    return ok;
}
