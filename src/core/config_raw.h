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
#include <stdbool.h>
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
    char *client_crl;
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
    int channel_binding;
    char *sslrootcert;
};

struct raw_ident {
    char *name;
    int kind;
    char **groups;
    unsigned groups_count;
    char *secret_hash; /* password_hash (users) or token_hash (tokens) */
    char *cn;          /* certs: the certificate's subject CN (default: name, unless san) */
    char *san;         /* certs: a subjectAltName the certificate must hold ("uri:...") */
};

struct raw_oidc {
    char *issuer;
    char *audience;
    char *jwks_file;
    char *jwks_url;
    char *name_claim;
    char *groups_claim;
    char *kind_claim;
    char **algorithms;
    unsigned algorithms_count;
    char *leeway;
    char *end_sessions_at_expiry;
    char **require_groups;
    unsigned require_groups_count;
};

struct raw_identities {
    struct raw_ident *users;
    unsigned users_count;
    struct raw_ident *tokens;
    unsigned tokens_count;
    struct raw_ident *certs;
    unsigned certs_count;
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
    char *max_row_size;
    char *pool_idle_timeout;
    char *pool_max_lifetime;
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

/* masking: (issue 4). Raw enum values: form 1 partial, 2 full, 3 hash; validator 1 none, 2
 * luhn, 3 mod97, 4 ssn. */
struct raw_unmask {
    char **groups;
    unsigned groups_count;
    char **identities;
    unsigned identities_count;
};

struct raw_detector {
    char *name;
    char *pattern;
    int validator;
    int form;
};

struct raw_mask_column {
    char *match;
    char *detector;
    int form;
};

struct raw_masking {
    char *enabled;
    struct raw_unmask *unmask;
    char **detectors;
    unsigned detectors_count;
    struct raw_detector *custom;
    unsigned custom_count;
    struct raw_mask_column *columns;
    unsigned columns_count;
    char **exempt;
    unsigned exempt_count;
    int form;
    char *hash_key_env;
    char *hash_key_file;
};

/* audit: (issue 5). fail: 1 closed, 2 open. */
struct raw_audit {
    char *enabled;
    int fail;
    char *row_digest;
    char *jsonl;
    char *retention;
    char *signing_key;
    char *checkpoint;
    char *queue;
};

/* approvals: (issue 6). */
struct raw_groups {
    char **groups;
    unsigned groups_count;
};

struct raw_grant {
    char *ttl;
    char *max_uses;
    char *max_rows;
};

struct raw_slack_user {
    char *slack_id;
    char *identity;
};

struct raw_slack {
    char *webhook_url_env;
    char *signing_secret_env;
    struct raw_slack_user *users;
    unsigned users_count;
};

struct raw_webhook {
    char *url;
    char *url_env;
    char *secret_env;
};

struct raw_notify {
    struct raw_slack *slack;
    struct raw_webhook *webhook;
};

struct raw_approvals {
    struct raw_groups *approvers;
    int mode;
    char *timeout;
    char *max_pending_per_identity;
    char *max_queued_writes;
    struct raw_grant *grant;
    struct raw_notify *notify;
    unsigned notify_count;
    char *public_url;
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
    struct raw_masking *masking;
    struct raw_audit *audit;
    struct raw_approvals *approvals;
    struct raw_groups *admin;
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

/* ---- the loader's state and helpers, shared by config.c and config_sections.c */

struct loader {
    const char *file; /* as given by the caller, used in messages */
    const char *data; /* the file's text (for config_match.c) */
    size_t datalen;
    size_t dirlen; /* length of the directory part of file, with its '/'; 0 if none */
    struct cfgpos pos;
    char *err;
    size_t errlen;
    char log[4096];  /* libcyaml error output */
    bool no_secrets; /* CONFIG_NO_SECRETS: do not read password/secret environment or files */
    size_t loglen;
};

enum at { AT_KEY, AT_VALUE };

/* Write "FILE:LINE:COL: error: MESSAGE" for the key at path (or its nearest parent); -1. */
int cfgld_fail(struct loader *ld, const char *path, enum at at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cfgld_parse_uint(const char *s, unsigned long long max, unsigned long long *out);
/* "30" (seconds), "30s", "5m", "1h", "90d". */
int cfgld_parse_duration(const char *s, unsigned *out);
int cfgld_parse_bool(const char *s, bool *out);
/* A file named in the config: relative to the config file's directory (malloc'd). */
char *cfgld_path(const struct loader *ld, const char *p);
void cfgld_free_secret(char *s);

struct sluice_config;

/* The sections of config_sections.c: state, masking, audit, approvals, oidc, admin. */
int cfgld_convert_sections(struct loader *ld, const struct raw_config *raw,
                           struct sluice_config *cfg);
void cfgld_set_section_defaults(struct sluice_config *cfg);
void cfgld_free_sections(struct sluice_config *cfg);

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
