/*
 * scram.h: SCRAM-SHA-256 (RFC 5802 / RFC 7677) on both sides, and PostgreSQL's md5 response.
 *
 * sluice is a SCRAM server towards its clients (scram_server_*: it checks a client's proof
 * against a stored verifier) and a SCRAM client towards upstream PostgreSQL (scram_client_*:
 * it logs in with a target's password). Verifiers use PostgreSQL's text format, so a
 * rolpassword copied out of pg_authid works as a password_hash and the reverse.
 *
 * Pure code: bytes in, bytes out, no sockets, no logging, no heap. Every parser here is fed by
 * the network (clients or upstream servers) and treats its input as hostile: it takes an explicit
 * length, never reads past it, rejects embedded NULs, and bounds every field it keeps.
 * Over TLS, both sides use channel binding (SCRAM-SHA-256-PLUS, type tls-server-end-point,
 * RFC 5929: a hash of the server's certificate), as PostgreSQL and libpq do.
 *
 * SASLprep is not applied: passwords are used as their raw bytes (UTF-8 as typed). ASCII
 * passwords, and non-ASCII ones already in NFKC form without mapped characters (the usual case),
 * give the same keys as PostgreSQL.
 */
#ifndef SLUICE_PG_SCRAM_H
#define SLUICE_PG_SCRAM_H

#include <stdbool.h>
#include <stddef.h>

#define SCRAM_KEY_LEN 32
/* Largest iteration count accepted from a verifier or an upstream server (hostile-input cap). */
#define SCRAM_MAX_ITERATIONS 1000000u
/* Iterations for verifiers made by sluice (`sluice hash-token`); PostgreSQL's default. */
#define SCRAM_DEFAULT_ITERATIONS 4096u
/* Bounds of the message parts the state machines keep. Longer input is malformed. */
#define SCRAM_MAX_NONCE 128        /* characters of a client nonce */
#define SCRAM_MAX_FIRST_BARE 512   /* client-first-message-bare */
#define SCRAM_MAX_SERVER_FIRST 512 /* server-first-message */
#define SCRAM_NONCE_LEN 24         /* characters of the nonces sluice makes (18 random bytes) */
#define SCRAM_MAX_CBIND 64         /* channel-binding data: a certificate hash, SHA-512 at most */

struct scram_verifier {
    unsigned iterations;
    unsigned char salt[64];
    size_t salt_len;
    unsigned char stored_key[SCRAM_KEY_LEN];
    unsigned char server_key[SCRAM_KEY_LEN];
};

/* "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>" (PostgreSQL's format).
 * 0 or -1 (malformed, salt longer than 64 bytes, iterations 0 or above SCRAM_MAX_ITERATIONS). */
int scram_verifier_parse(const char *text, struct scram_verifier *out);
/* New verifier for secret with a random 16-byte salt; 0, or -1 if outcap too small (160 bytes
 * are always enough) or iterations out of range. This is `sluice hash-token` with 4096. */
int scram_verifier_make(const char *secret, unsigned iterations, char *out, size_t outcap);
/* Verifier for secret (len bytes) with the given salt (at most 64 bytes); 0 or -1. */
int scram_verifier_derive(const char *secret, size_t len, const unsigned char *salt,
                          size_t salt_len, unsigned iterations, struct scram_verifier *out);
/* Text form of v into out (NUL-terminated); 0, or -1 if outcap is too small. */
int scram_verifier_format(const struct scram_verifier *v, char *out, size_t outcap);
/* Does secret (cleartext, len bytes) match v? Constant-time compare of the derived StoredKey.
 * A secret containing a NUL byte never matches (HMAC would treat "pw" and "pw\0" alike). */
bool scram_check_secret(const struct scram_verifier *v, const char *secret, size_t len);
/* A deterministic fake verifier for an unknown user name (so unknown and known users look alike).
 * Same name gives the same salt for the life of the process (keyed by a per-process random key);
 * it never matches any secret in practice. */
void scram_verifier_mock(const char *name, struct scram_verifier *out);

/* Server side: sluice authenticates a client. State lives in the struct (no heap). */
struct scram_server {
    int state;        /* internal: 0 fresh, 1 started, 2 done, -1 failed */
    char gs2_flag;    /* 'n', 'y' or 'p' */
    bool plus;        /* the client chose SCRAM-SHA-256-PLUS (scram_server_set_binding) */
    size_t cbind_len; /* channel binding offered: its data, else 0 */
    unsigned char cbind[SCRAM_MAX_CBIND];
    char cb_b64[128]; /* the c= a 'p' client must send: base64(gs2 header, cbind) */
    struct scram_verifier v;
    char test_nonce[SCRAM_MAX_NONCE + 1]; /* set by scram_server_set_nonce (tests only) */
    size_t first_bare_len;
    char first_bare[SCRAM_MAX_FIRST_BARE];
    size_t server_first_len;
    char server_first[SCRAM_MAX_SERVER_FIRST];
    size_t nonce_len; /* combined nonce: starts at server_first + 2 */
};
/* Before scram_server_start, for a TLS client: channel binding was offered (SCRAM-SHA-256-PLUS
 * listed), its data is cbind (len bytes, at most SCRAM_MAX_CBIND), and plus says whether the
 * client chose the -PLUS mechanism. 0, or -1 when len is out of bounds. */
int scram_server_set_binding(struct scram_server *st, bool plus, const unsigned char *cbind,
                             size_t len);
/* client_first = SASLInitialResponse data. gs2 headers: "n,,"; "y,," only while channel binding
 * was not offered (else the client was misled into thinking it was not: a downgrade); and
 * "p=tls-server-end-point,," exactly when the client chose SCRAM-SHA-256-PLUS. No authzid.
 * Writes server-first-message to out (len in *outlen). 0 ok, -1 malformed. st needs no
 * initialisation beyond zeroing (or scram_server_set_nonce, then scram_server_set_binding). */
int scram_server_start(struct scram_server *st, const struct scram_verifier *v,
                       const char *client_first, size_t len, char *out, size_t outcap,
                       size_t *outlen);
/* client_final = SASLResponse data. 0: proof ok, server-final ("v=...") in out; -1 malformed; -2
 * wrong proof. After any return the exchange is over. */
int scram_server_finish(struct scram_server *st, const char *client_final, size_t len, char *out,
                        size_t outcap, size_t *outlen);
/* Tests only: zero st and make its next server_start use this server nonce suffix instead of a
 * random one (printable ASCII, no ',', at most SCRAM_MAX_NONCE characters). */
void scram_server_set_nonce(struct scram_server *st, const char *nonce);

/* Client side: sluice logs into an upstream PostgreSQL. */
struct scram_client {
    int state;                               /* internal: 0 fresh, 1 started, 2 continued, 3 done */
    char nonce[SCRAM_MAX_NONCE + 1];         /* client nonce (NUL-terminated) */
    char user[64];                           /* n= value; empty unless set by tests */
    unsigned char server_sig[SCRAM_KEY_LEN]; /* expected ServerSignature */
    char cbind_flag;                         /* gs2 header: 'n' (default), 'y' or 'p' */
    size_t cbind_len;                        /* 'p': the binding data */
    unsigned char cbind[SCRAM_MAX_CBIND];
};
/* Before scram_client_start, on a TLS connection: tls-server-end-point data (cbind, len > 0)
 * when the server offered SCRAM-SHA-256-PLUS and the caller chose it ("p=" header); len 0:
 * the server offered no -PLUS ("y,,": the client could bind, so a server that did offer it
 * knows the offer was stripped). Without a call: "n,," (no TLS). 0, or -1 when len is out of
 * bounds. */
int scram_client_set_binding(struct scram_client *st, const unsigned char *cbind, size_t len);
/* Writes client-first-message ("n,,n=,r=<nonce>", or the header set above) for
 * SASLInitialResponse. 0 or -1. st needs no initialisation beyond zeroing (or the setters). */
int scram_client_start(struct scram_client *st, char *out, size_t outcap, size_t *outlen);
/* Consumes server-first (AuthenticationSASLContinue data), writes client-final. 0 ok, -1 malformed
 * (including a server nonce that does not start with ours, or iterations < 1 or above
 * SCRAM_MAX_ITERATIONS). */
int scram_client_continue(struct scram_client *st, const char *password, const char *server_first,
                          size_t len, char *out, size_t outcap, size_t *outlen);
/* Checks server-final (AuthenticationSASLFinal data). 0 if the server signature verifies, else -1.
 */
int scram_client_finish(struct scram_client *st, const char *server_final, size_t len);
/* Tests only: zero st and fix the client nonce (and optionally the n= user name, escaped as SCRAM
 * requires by the caller) for known-answer tests. */
void scram_client_set_nonce(struct scram_client *st, const char *nonce, const char *user);

/* PostgreSQL md5 password response: "md5" + md5hex(md5hex(password + user) + salt), NUL-terminated.
 */
void pg_md5_response(const char *user, const char *password, const unsigned char salt[4],
                     char out[36]);

/* Base64 (standard alphabet, padded). encode returns the length written (NUL-terminated) or -1 if
 * outcap is too small; decode is strict (length a multiple of 4, padding only at the end, no
 * whitespace) and returns the decoded length or -1. Exposed for tests and other modules. */
int scram_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap);
int scram_b64_decode(const char *in, size_t len, unsigned char *out, size_t outcap);

#endif
