/*
 * msg.h: the PostgreSQL v3 wire codec. Pure code: bytes in, typed views out, and builders
 * that append messages to a buffer. It never touches a socket, a log or a policy; the
 * session layer decides what to do with each message.
 *
 * Parsers return PG_NEED_MORE (not enough bytes yet), PG_OK (parsed) or PG_BAD (malformed).
 * Views point into the caller's bytes and live as long as they do.
 */
#ifndef SLUICE_PG_MSG_H
#define SLUICE_PG_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define PG_PROTO_V3 196608u /* 3.0 */
#define PG_SSL_REQUEST 80877103u
#define PG_GSSENC_REQUEST 80877104u
#define PG_CANCEL_REQUEST 80877102u
#define PG_MAX_STARTUP 10000u      /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PG_MAX_MESSAGE 0x40000000u /* 1 GiB, PostgreSQL's largest message */
#define PG_MAX_PARAMS 64

enum pg_parse {
    PG_BAD = -1,
    PG_NEED_MORE = 0,
    PG_OK = 1,
};

/* Authentication request codes ('R' messages). */
enum pg_auth {
    PG_AUTH_OK = 0,
    PG_AUTH_CLEARTEXT = 3,
    PG_AUTH_MD5 = 5,
    PG_AUTH_SASL = 10,
    PG_AUTH_SASL_CONTINUE = 11,
    PG_AUTH_SASL_FINAL = 12,
};

/* A typed message header: type byte and the length field (which counts itself). */
struct pg_hdr {
    uint8_t type;
    uint32_t len;
};

/* Header of a typed message at p (n bytes available). PG_BAD when len < 4 or > max. */
int pg_hdr_parse(const uint8_t *p, size_t n, uint32_t max, struct pg_hdr *out);

/* A startup-phase packet: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest. */
struct pg_startup {
    uint32_t len;  /* whole packet, including the length field */
    uint32_t code; /* protocol version or request code */
    unsigned n_params;
    const char *keys[PG_MAX_PARAMS];
    const char *vals[PG_MAX_PARAMS];
    uint32_t cancel_pid, cancel_key; /* CancelRequest only */
    /* PG_BAD of a whole StartupMessage: what to tell the client (PostgreSQL's words where it
     * has them); NULL for a bad length, where PostgreSQL closes without a word */
    const char *bad;
};

/* Parse the packet at p (n bytes available). Parameters of a StartupMessage must be
 * NUL-terminated pairs closed by an empty name. */
int pg_startup_parse(const uint8_t *p, size_t n, struct pg_startup *out);
const char *pg_startup_get(const struct pg_startup *st, const char *key);

/* 'R' body: auth code and the data that follows it. */
int pg_auth_parse(const uint8_t *body, size_t len, uint32_t *code, const uint8_t **data,
                  size_t *dlen);

/* 'E' and 'N' bodies: the fields sluice looks at. Missing fields are "". */
struct pg_error_view {
    const char *severity;
    const char *sqlstate;
    const char *message;
    const char *detail;
};
int pg_error_parse(const uint8_t *body, size_t len, struct pg_error_view *out);

/* 'K' body. */
int pg_backend_key_parse(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key);

/* 'S' body: name and value. */
int pg_param_status_parse(const uint8_t *body, size_t len, const char **name, const char **value);

/* 'p' body of a SASLInitialResponse: mechanism and client data (dlen -1 means none). */
int pg_sasl_initial_parse(const uint8_t *body, size_t len, const char **mech, const uint8_t **data,
                          int32_t *dlen);

/* A NUL-terminated string filling the whole body (PasswordMessage, Query). */
int pg_body_cstring(const uint8_t *body, size_t len, const char **s);
/* CommandComplete body: the row count at the end of its tag ("UPDATE 3", "INSERT 0 1"), 0
 * when the tag has none or is malformed. */
uint64_t pg_tag_rows(const uint8_t *body, size_t len);

uint32_t pg_get_u32(const uint8_t *p);
uint16_t pg_get_u16(const uint8_t *p);

/* Builders: each appends one complete message to b. */
/* Begin a typed message; pass the returned token to pg_msg_end() only (it is not a position
 * in b->data, and b->off must not move in between). */
size_t pg_msg_begin(struct buf *b, uint8_t type);
void pg_msg_end(struct buf *b, size_t start);
void pg_put_error(struct buf *b, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint);
void pg_put_notice(struct buf *b, const char *sqlstate, const char *message);
void pg_put_auth(struct buf *b, uint32_t code, const void *data, size_t dlen);
void pg_put_backend_key(struct buf *b, uint32_t pid, uint32_t key);
void pg_put_ready(struct buf *b, uint8_t status);
/* NegotiateProtocolVersion: version is the newest protocol the server speaks, major and minor
 * (PG_PROTO_V3 for 3.0), as PostgreSQL sends it; libpq 18 refuses anything below 3.0. */
void pg_put_negotiate_version(struct buf *b, uint32_t version, const char *const *opts,
                              unsigned n_opts);
void pg_put_startup(struct buf *b, const char *const *keys, const char *const *vals, unsigned n);
void pg_put_ssl_request(struct buf *b);
void pg_put_cancel(struct buf *b, uint32_t pid, uint32_t key);
void pg_put_password(struct buf *b, const char *password);
void pg_put_sasl_initial(struct buf *b, const char *mech, const void *data, size_t dlen);
void pg_put_sasl_response(struct buf *b, const void *data, size_t dlen);
void pg_put_terminate(struct buf *b);

#endif
