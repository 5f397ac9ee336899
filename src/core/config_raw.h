/*
 * config_raw.h: internal to the config loader. The "raw" structs mirror sluice.yaml one to
 * one as libcyaml loads it (strings kept as written, enums offset by one so that 0 means
 * "absent"), the libcyaml schema that fills them, and the key position index built by a
 * libyaml event pass so that every error can name FILE:LINE:COL.
 *
 * config.c turns a raw_config into a struct sluice_config (defaults, validation, secrets).
 * Nothing outside src/core/config*.c includes this header.
 */
#ifndef SLUICE_CORE_CONFIG_RAW_H
#define SLUICE_CORE_CONFIG_RAW_H

#include <cyaml/cyaml.h>
#include <stddef.h>

/* Raw enum values are the public enum value + 1; 0 means the key was absent. */
enum { RAW_UNSET = 0 };
enum raw_driver { RAW_DRIVER_SQLITE = 1, RAW_DRIVER_POSTGRES = 2 };

struct raw_listen {
    char *postgres;
    char *admin;
};

struct raw_tls {
    char *cert;
    char *key;
    char *client_ca;
    char *require; /* "true"/"false" and YAML 1.1 spellings; parsed in config.c */
};

struct raw_state {
    int driver;
    char *path;
    char *dsn;
};

struct raw_target {
    char *name;
    char *host;
    char *port;
    char *database;
    char *user;
    char *password_env;
    char *password_file;
    int sslmode;
    char *sslrootcert;
};

struct raw_ident {
    char *name;
    int kind;
    char **groups;
    unsigned groups_count;
    char *secret_hash; /* password_hash (users) or token_hash (tokens) */
};

struct raw_oidc {
    char *issuer;
    char *audience;
    char *jwks_file;
    char *jwks_url;
    char *groups_claim;
    char *kind_claim;
};

struct raw_identities {
    struct raw_ident *users;
    unsigned users_count;
    struct raw_ident *tokens;
    unsigned tokens_count;
    struct raw_oidc *oidc;
};

struct raw_server {
    char *workers;
    int log_level;
    char *shutdown_timeout;
    char *auth_timeout;
    char *connect_timeout;
    char *max_connections;
    char *max_message_size;
    char *pool_idle_timeout;
    char *pool_max_idle;
};

/* guardrails: one enum per built-in guardrail (raw action = enum cfg_action + 1). Indexed
 * by enum cfg_guardrail: the schema fills v[g]. */
struct raw_guardrails {
    int v[16];
};

/* policy.rules[]: `match` is read by config_match.c from the YAML document (its values may
 * be one scalar or a list, which libcyaml cannot express); libcyaml skips it here. */
struct raw_rule {
    char *name;
    int action;
    char *limit_rows;
    int mode; /* enum cfg_approval_mode: 1 wait, 2 defer */
    char *reason;
    char *hint;
    char **overrides;
    unsigned overrides_count;
};

struct raw_policy {
    struct raw_rule *rules;
    unsigned rules_count;
    int default_action;
};

struct raw_config {
    struct raw_listen *listen;
    struct raw_tls *tls;
    struct raw_state *state;
    struct raw_target *targets;
    unsigned targets_count;
    struct raw_identities *identities;
    struct raw_server *server;
    struct raw_guardrails *guardrails;
    struct raw_policy *policy;
};

/* The top-level schema (config_schema.c). */
extern const cyaml_schema_value_t config_raw_schema;

/* Allowed spellings of each enum, for error messages ("disable, allow, ... or verify-full"). */
const char *config_raw_enum_choices(const char *key);

/*
 * Position index: one entry per mapping value and sequence entry, by path
 * ("targets[0].host", "identities.users[1]"). Lines and columns are 1-based. For a sequence
 * entry the key position is the entry's own position.
 */
struct cfgpos_entry {
    char *path;
    unsigned key_line, key_col;
    unsigned val_line, val_col;
};

struct cfgpos {
    struct cfgpos_entry *v;
    size_t n, cap;
    int empty;         /* the document holds no node at all */
    char problem[200]; /* YAML syntax error, when cfgpos_scan() failed */
    unsigned line, col;
};

/* Scan data; -1 on a YAML syntax error (problem, line and col set). */
int cfgpos_scan(const char *data, size_t len, struct cfgpos *pos);
const struct cfgpos_entry *cfgpos_find(const struct cfgpos *pos, const char *path);
/* The last entry with that path (where a duplicate key sits). */
const struct cfgpos_entry *cfgpos_find_last(const struct cfgpos *pos, const char *path);
void cfgpos_free(struct cfgpos *pos);

/*
 * The `match` mappings of policy.rules[] (config_match.c), read from the YAML document with
 * libyaml: fills cfg->policy.rules[i].match for every rule (cfg->targets must be set: target
 * names are checked against them). On error returns -1 with the message in err and its
 * 1-based *line / *col; what was filled so far is freed with the config.
 */
struct cfg_match;
struct sluice_config;
int cfgmatch_load(const char *data, size_t len, struct sluice_config *cfg, char *err, size_t errlen,
                  unsigned *line, unsigned *col);
void cfgmatch_free(struct cfg_match *m);

#endif
