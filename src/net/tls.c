/*
 * tls.c: OpenSSL contexts for both legs and the non-blocking handshake.
 *
 * Client leg: TLS 1.2+, the configured certificate, optional client CA (mTLS: a presented
 * certificate is verified, against revocation lists too when tls.client_crl is set; the
 * identity it maps to is session.c's). Upstream leg: sslmode
 * semantics of libpq: require encrypts without checking the server, verify-ca checks the
 * chain against sslrootcert, verify-full also checks the host name or IP address.
 */
#include "net/net.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void tls_error_text(char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, err, errlen);
    else
        snprintf(err, errlen, "TLS failure");
    ERR_clear_error();
}

/* The revocation lists in path (PEM, one or more) for verifying client certificates: as
 * with PostgreSQL's ssl_crl_file, every certificate of the chain is checked, so the file must
 * hold a current list of each CA in it (a missing or expired one fails the handshake). */
static int load_crls(SSL_CTX *ctx, const char *path)
{
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    X509_LOOKUP *lu = st ? X509_STORE_add_lookup(st, X509_LOOKUP_file()) : NULL;
    if (!lu || X509_load_crl_file(lu, path, X509_FILETYPE_PEM) <= 0) return -1;
    return X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL) == 1 ? 0
                                                                                            : -1;
}

SSL_CTX *tls_server_ctx(const struct cfg_tls *tls, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* No session resumption, as in PostgreSQL: with tls.client_ca a resumed session needs a
     * session id context (OpenSSL refused it with an internal error alert), and a client's
     * certificate, its identity (identities.certs), is checked on every connection. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert) != 1) goto fail;
    if (SSL_CTX_use_PrivateKey_file(ctx, tls->key, SSL_FILETYPE_PEM) != 1) goto fail;
    if (SSL_CTX_check_private_key(ctx) != 1) goto fail;
    if (tls->client_ca) { /* mTLS: a TLS client without a certificate is refused too */
        if (SSL_CTX_load_verify_locations(ctx, tls->client_ca, NULL) != 1) goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (tls->client_crl && load_crls(ctx, tls->client_crl) != 0) {
        char why[256] = "no PEM revocation list in it";
        if (ERR_peek_error()) tls_error_text(why, sizeof why);
        snprintf(err, errlen, "tls.client_crl \"%s\": %s", tls->client_crl, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
fail:
    tls_error_text(err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_client_ctx(const struct cfg_target *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (t->sslmode >= SSLMODE_VERIFY_CA) {
        int ok = t->sslrootcert ? SSL_CTX_load_verify_locations(ctx, t->sslrootcert, NULL)
                                : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
fail:
    tls_error_text(err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_attach(struct sock *s, SSL_CTX *ctx, bool server, const struct cfg_target *t)
{
    s->ssl = SSL_new(ctx);
    if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1) return -1;
    if (server) {
        SSL_set_accept_state(s->ssl);
        return 0;
    }
    SSL_set_connect_state(s->ssl);
    if (t && t->host[0] != '/') {
        unsigned char ip[16];
        bool is_ip = inet_pton(AF_INET, t->host, ip) == 1 || inet_pton(AF_INET6, t->host, ip) == 1;
        if (!is_ip) SSL_set_tlsext_host_name(s->ssl, t->host);
        if (t->sslmode == SSLMODE_VERIFY_FULL) {
            X509_VERIFY_PARAM *param = SSL_get0_param(s->ssl);
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, t->host)
                           : X509_VERIFY_PARAM_set1_host(param, t->host, 0);
            if (ok != 1) return -1;
        }
    }
    return 0;
}

int tls_peer_cn(const struct sock *s, char *out, size_t outcap)
{
    if (!s->ssl) return -1;
    X509 *cert = SSL_get0_peer_certificate(s->ssl);
    if (!cert || SSL_get_verify_result(s->ssl) != X509_V_OK) return -1;
    const X509_NAME *subj = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(subj, NID_commonName, i) >= 0) return -1;
    const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, d);
    if (n < 0) return -1;
    int rc = -1;
    if ((size_t)n < outcap && !memchr(utf8, 0, (size_t)n)) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
        rc = 0;
    }
    OPENSSL_free(utf8);
    return rc;
}

/* One subjectAltName entry's value against want (want_len bytes; an email holds one "@"), as
 * tls_peer_has_san says. */
static bool san_equal(int gen, const ASN1_IA5STRING *have, const char *want, size_t want_len)
{
    const char *p = (const char *)ASN1_STRING_get0_data(have);
    size_t n = (size_t)ASN1_STRING_length(have);
    if (n != want_len || memchr(p, 0, n)) return false;
    if (gen == GEN_DNS) return strncasecmp(p, want, n) == 0;
    if (gen == GEN_EMAIL) {
        size_t local = (size_t)((const char *)memchr(want, '@', n) - want);
        return memcmp(p, want, local + 1) == 0 &&
               strncasecmp(p + local + 1, want + local + 1, n - local - 1) == 0;
    }
    return memcmp(p, want, n) == 0;
}

bool tls_peer_has_san(const struct sock *s, enum cfg_san_type type, const char *value)
{
    if (!s->ssl) return false;
    X509 *cert = SSL_get0_peer_certificate(s->ssl);
    if (!cert || SSL_get_verify_result(s->ssl) != X509_V_OK) return false;
    int gen = type == CFG_SAN_URI ? GEN_URI : type == CFG_SAN_DNS ? GEN_DNS : GEN_EMAIL;
    if (type == CFG_SAN_NONE || (type == CFG_SAN_EMAIL && !strchr(value, '@'))) return false;
    size_t want_len = strlen(value);
    /* NULL as well when the certificate has two subjectAltName extensions (it then never
     * passed verification either) */
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    unsigned found = 0, of_type = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != gen) continue;
        of_type++;
        found += san_equal(gen, g->d.ia5, value, want_len);
    }
    GENERAL_NAMES_free(names);
    return found && (gen != GEN_URI || of_type == 1);
}

int tls_server_end_point(const struct sock *s, unsigned char *out, size_t outcap)
{
    if (!s->ssl) return -1;
    /* the server's certificate: sluice's own towards a client, the target's upstream */
    X509 *cert =
        SSL_is_server(s->ssl) ? SSL_get_certificate(s->ssl) : SSL_get0_peer_certificate(s->ssl);
    int algo;
    if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &algo, NULL)) return -1;
    const EVP_MD *md =
        algo == NID_md5 || algo == NID_sha1 ? EVP_sha256() : EVP_get_digestbynid(algo);
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!md || X509_digest(cert, md, hash, &n) != 1 || n > outcap) return -1;
    memcpy(out, hash, n);
    return (int)n;
}

int tls_handshake(struct sock *s, bool server, char *err, size_t errlen)
{
    ERR_clear_error();
    s->want_write = false;
    int r = server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        s->want_write = true;
        return 0;
    }
    long vr = SSL_get_verify_result(s->ssl);
    if (vr != X509_V_OK)
        snprintf(err, errlen, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else
        tls_error_text(err, errlen);
    return -1;
}
