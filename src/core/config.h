/*
 * config.h: the configuration model of sluice and its loader.
 *
 * A `struct sluice_config` is one immutable snapshot of sluice.yaml: listeners, TLS, targets
 * (with their upstream secrets already read from password_env/password_file), identities
 * and server tunables. It is built by config_load() (YAML through libcyaml, then validation
 * and defaults), shared between worker threads by reference count, and swapped whole on
 * SIGHUP. Nothing in it changes after config_load() returns.
 *
 * Ownership: config_load() hands the caller one reference; config_ref() adds one and
 * config_unref() drops one, freeing the snapshot with the last.
 */
#ifndef SLUICE_CORE_CONFIG_H
#define SLUICE_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sslmode {
    SSLMODE_DISABLE,
    SSLMODE_ALLOW,
    SSLMODE_PREFER,
    SSLMODE_REQUIRE,
    SSLMODE_VERIFY_CA,
    SSLMODE_VERIFY_FULL,
};

enum ident_kind {
    IDENT_HUMAN,
    IDENT_SERVICE,
    IDENT_AGENT,
};

enum log_level {
    LOG_DEBUG,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
};

struct cfg_listen {
    char *postgres; /* "host:port", default 127.0.0.1:7432 */
    char *admin;    /* "host:port", default 127.0.0.1:7480 */
};

struct cfg_tls {
    char *cert;      /* PEM certificate chain; TLS offered to clients when set */
    char *key;       /* PEM private key */
    char *client_ca; /* optional CA for client certificates (mTLS) */
    bool require;    /* refuse cleartext secrets from non-loopback clients without TLS */
};

struct cfg_target {
    char *name;          /* what clients put in dbname */
    char *host;          /* IP, host name, or a directory holding .s.PGSQL.<port> */
    uint16_t port;       /* default 5432 */
    char *database;      /* upstream database; default: name */
    char *user;          /* upstream role */
    char *password_env;  /* environment variable holding the upstream password */
    char *password_file; /* file holding the upstream password (first line) */
    enum sslmode sslmode;
    char *sslrootcert; /* CA bundle for verify-ca / verify-full */
    char *password;    /* resolved secret (may be NULL for trust); never logged */
};

struct cfg_identity {
    char *name;
    enum ident_kind kind;
    char **groups;
    unsigned n_groups;
    /* SCRAM-SHA-256 verifier ("SCRAM-SHA-256$iter:salt$stored:server"), from password_hash
     * (users) or token_hash (tokens); `sluice hash-token` makes one. */
    char *secret_hash;
    bool is_token; /* from identities.tokens: always cleartext (API tokens, JWTs) */
};

struct cfg_server {
    unsigned workers;          /* worker threads; 0 = number of CPUs */
    enum log_level log_level;  /* default info */
    unsigned shutdown_timeout; /* seconds SIGTERM waits for running statements; 30 */
    unsigned auth_timeout;     /* seconds a client has to finish startup and auth; 15 */
    unsigned connect_timeout;  /* seconds to reach and log into a target; 10 */
    unsigned max_connections;  /* client connections per instance; 10000 */
    uint32_t max_message_size; /* largest message sluice buffers whole (Query, Parse); 1 GiB */
    unsigned
        pool_idle_timeout;  /* seconds an idle upstream connection is kept for reuse; 60, 0 off */
    unsigned pool_max_idle; /* idle upstream connections kept per worker; 100 */
};

struct sluice_config {
    char *path; /* file it was loaded from, or NULL for built-in defaults */
    struct cfg_listen listen;
    struct cfg_tls tls;
    struct cfg_target *targets;
    unsigned n_targets;
    struct cfg_identity *identities; /* users first, then tokens */
    unsigned n_identities;
    struct cfg_server server;
    int refs; /* atomic reference count */
};

/*
 * Load and validate a config file. path NULL gives the built-in defaults (no targets, no
 * identities). On error returns -1 and writes one line "FILE:LINE:COL: error: MESSAGE"
 * (line and column when known) naming the key into err.
 */
int config_load(const char *path, struct sluice_config **out, char *err, size_t errlen);

struct sluice_config *config_ref(struct sluice_config *cfg);
void config_unref(struct sluice_config *cfg);

const struct cfg_target *config_find_target(const struct sluice_config *cfg, const char *name);
const struct cfg_identity *config_find_identity(const struct sluice_config *cfg, const char *name);

const char *ident_kind_name(enum ident_kind kind);
const char *sslmode_name(enum sslmode mode);

#endif
