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

/* libpq's channel_binding, for sluice's SCRAM logins to a target. */
enum channel_binding {
    CHANNEL_BINDING_PREFER,
    CHANNEL_BINDING_DISABLE,
    CHANNEL_BINDING_REQUIRE,
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
    char *cert;       /* PEM certificate chain; TLS offered to clients when set */
    char *key;        /* PEM private key */
    char *client_ca;  /* optional CA for client certificates (mTLS) */
    char *client_crl; /* optional PEM revocation lists checked against client certificates */
    bool require;     /* refuse cleartext secrets from non-loopback clients without TLS */
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
    enum channel_binding channel_binding;
    char *sslrootcert; /* CA bundle for verify-ca / verify-full */
    char *password;    /* resolved secret (may be NULL for trust); never logged */
};

/* The subjectAltName types a certificate identity may be matched by. */
enum cfg_san_type { CFG_SAN_NONE, CFG_SAN_URI, CFG_SAN_DNS, CFG_SAN_EMAIL };

struct cfg_identity {
    char *name;
    enum ident_kind kind;
    char **groups;
    unsigned n_groups;
    /* SCRAM-SHA-256 verifier ("SCRAM-SHA-256$iter:salt$stored:server"), from password_hash
     * (users) or token_hash (tokens); `sluice hash-token` makes one. */
    char *secret_hash;
    bool is_token; /* from identities.tokens: always cleartext (API tokens, JWTs) */
    /* from identities.certs: logs in with a TLS client certificate (tls.client_ca verified it)
     * whose subject CN is cert_cn (NULL: not checked) and that holds the subjectAltName of type
     * san_type with the value cert_san (NULL, CFG_SAN_NONE: none asked for); at least one of the
     * two is set; no secret (secret_hash NULL) */
    bool is_cert;
    char *cert_cn, *cert_san;
    enum cfg_san_type san_type;
};

/* ---- guardrails and policy (issue 3). Pure data: src/policy/ compiles and evaluates it. */

/* What a guardrail or rule does with a statement. */
enum cfg_action {
    CFG_ALLOW,
    CFG_DENY,
    CFG_REVIEW, /* needs a human's approval */
    CFG_MASK,   /* rules only: allow, and mask even for masking.unmask groups */
    CFG_UNMASK, /* rules only: allow, and return raw values */
};

/* Built-in guardrails, in the fixed order src/policy/ checks them. */
enum cfg_guardrail {
    CFG_GUARD_DROP,                 /* DROP TABLE/SCHEMA/DATABASE/... */
    CFG_GUARD_TRUNCATE,             /* TRUNCATE */
    CFG_GUARD_DELETE_WITHOUT_WHERE, /* DELETE without WHERE or with a tautology */
    CFG_GUARD_UPDATE_WITHOUT_WHERE, /* UPDATE likewise */
    CFG_GUARD_COPY_PROGRAM,         /* COPY ... TO/FROM PROGRAM */
    CFG_GUARD_COPY_FILE,            /* COPY ... TO/FROM a server file */
    CFG_GUARD_ALTER_SYSTEM,         /* ALTER SYSTEM */
    CFG_GUARD_FILE_ACCESS,          /* pg_read_file, lo_import, lo_export, ... */
    CFG_GUARD_ROLE_ESCALATION,      /* SET ROLE, CREATE ROLE ... SUPERUSER, GRANT role, ... */
    CFG_GUARD_DANGEROUS_FUNCTIONS,  /* dblink*, pg_terminate_backend, pg_reload_conf, ... */
    CFG_GUARD_UNJUDGEABLE,          /* DO, CALL, function bodies, unparseable text */
    CFG_GUARD_COUNT,
};

#define CFG_KIND_COUNT 3 /* enum ident_kind values */

struct cfg_guardrails {
    /* action[g][kind]: what guardrail g does for an identity of that kind. Built-in defaults:
     * deny everywhere, except unjudgeable which allows humans. A value in sluice.yaml sets
     * all kinds at once. */
    enum cfg_action action[CFG_GUARD_COUNT][CFG_KIND_COUNT];
    bool configured[CFG_GUARD_COUNT]; /* set in sluice.yaml (else the built-in default) */
};

/* Statement classes as policy matches them; same order as enum sql_class (src/sql/sql.h). */
enum cfg_class {
    CFG_CLASS_READ,
    CFG_CLASS_WRITE,
    CFG_CLASS_DDL,
    CFG_CLASS_DCL,
    CFG_CLASS_ADMIN,
    CFG_CLASS_TRANSACTION,
    CFG_CLASS_UTILITY,
    CFG_CLASS_COUNT,
};

enum cfg_approval_mode {
    CFG_MODE_DEFAULT, /* approvals.mode decides (issue 6) */
    CFG_MODE_WAIT,
    CFG_MODE_DEFER,
};

/* What a rule matches. Every list given must match (AND between keys, OR inside a list);
 * an absent key (n == 0, mask == 0) matches anything. */
struct cfg_match {
    char **identities; /* globs on the identity name */
    unsigned n_identities;
    unsigned kinds; /* bit (1u << enum ident_kind); 0 = any */
    char **groups;  /* the identity is in any of these groups */
    unsigned n_groups;
    char **targets; /* target names (checked against targets:) */
    unsigned n_targets;
    unsigned classes; /* bit (1u << enum cfg_class); 0 = any */
    char **commands;  /* upper case command tags: "DELETE", "DROP", ... */
    unsigned n_commands;
    char **tables; /* globs: any table read or written matches one */
    unsigned n_tables;
    char **tables_written; /* globs: every table written matches one (at least one written) */
    unsigned n_tables_written;
    char **functions; /* globs: any function called matches one */
    unsigned n_functions;
};

struct cfg_rule {
    char *name; /* unique; not a guardrail name, not "default" */
    struct cfg_match match;
    enum cfg_action action;
    uint64_t limit_rows;         /* 0 = none; only with allow or review */
    enum cfg_approval_mode mode; /* stored for issue 6 */
    char *reason;                /* optional text for the client instead of the generated one */
    char *hint;                  /* optional hint for the client */
    unsigned overrides;          /* bit (1u << enum cfg_guardrail): guardrails this rule lifts */
};

struct cfg_policy {
    struct cfg_rule *rules; /* in file order: first match wins */
    unsigned n_rules;
    enum cfg_action default_action; /* policy.default; CFG_ALLOW when absent */
};

struct cfg_server {
    unsigned workers;          /* worker threads; 0 = number of CPUs */
    enum log_level log_level;  /* default info */
    unsigned shutdown_timeout; /* seconds SIGTERM waits for running statements; 30 */
    unsigned auth_timeout;     /* seconds a client has to finish startup and auth; 15 */
    unsigned connect_timeout;  /* seconds to reach and log into a target; 10 */
    unsigned max_connections;  /* client connections per instance; 10000 */
    uint32_t max_message_size; /* largest message sluice buffers whole (Query, Parse); 1 GiB */
    uint32_t max_row_size;     /* largest server row held whole to mask or digest it; 16 MiB */
    unsigned
        pool_idle_timeout; /* seconds an idle upstream connection is kept for reuse; 60, 0 off */
    unsigned pool_max_lifetime; /* seconds after its login an upstream connection is no longer
                                 * reused; 600, 0 none */
    unsigned pool_max_idle;     /* idle upstream connections kept per worker; 100 */
};

/* ---- masking (issue 4). Pure data: src/mask/ compiles it into a detector database. */

/* How a detected value is rewritten. */
enum cfg_mask_form {
    CFG_FORM_DEFAULT, /* the detector's own form (partial for most, full for secrets) */
    CFG_FORM_PARTIAL, /* keep shape: a***@example.com, ****-****-****-4242, ***-**-6789 */
    CFG_FORM_FULL,    /* every character replaced: [REDACTED] style, length not kept */
    CFG_FORM_HASH,    /* keyed HMAC-SHA-256, truncated: equal inputs mask equally */
};

/* Confirms a pattern match before it is masked (custom detectors). */
enum cfg_mask_validator {
    CFG_VALID_NONE,
    CFG_VALID_LUHN,  /* card numbers */
    CFG_VALID_MOD97, /* IBAN */
    CFG_VALID_SSN,   /* US SSN area/group/serial rules */
};

struct cfg_detector {
    char *name;    /* counts and audit name it; unique, not a built-in name */
    char *pattern; /* vectorscan (PCRE subset) expression; bounded repeats please */
    enum cfg_mask_validator validator;
    enum cfg_mask_form form; /* DEFAULT = partial */
};

/* A column named sensitive (or exempt) explicitly. */
struct cfg_mask_column {
    char *match;    /* glob on "schema.table.column", "table.column" or "column" */
    char *detector; /* the name counts use; default "column" */
    enum cfg_mask_form form;
};

struct cfg_masking {
    bool enabled;  /* default true */
    char **unmask; /* groups that see raw values (masking.unmask.groups) */
    unsigned n_unmask;
    char **unmask_identities; /* identity-name globs that see raw values */
    unsigned n_unmask_identities;
    char **detectors; /* built-in detectors in use; NULL (n 0) = all of them */
    unsigned n_detectors;
    struct cfg_detector *custom; /* masking.custom */
    unsigned n_custom;
    struct cfg_mask_column *columns; /* masking.columns: always masked */
    unsigned n_columns;
    char **exempt; /* masking.exempt: column globs never masked */
    unsigned n_exempt;
    enum cfg_mask_form form; /* masking.form: overrides every detector's form; DEFAULT = theirs */
    char *hash_key;          /* from hash_key_env / hash_key_file; NULL = random per process */
    size_t hash_key_len;
};

/* ---- state store and audit (issue 5). */

enum cfg_state_driver { CFG_STATE_SQLITE, CFG_STATE_POSTGRES };

struct cfg_state {
    enum cfg_state_driver driver; /* default sqlite */
    char *path;                   /* sqlite file; default "sluice.db" */
    char *dsn;                    /* postgres driver */
};

struct cfg_audit {
    bool enabled;        /* default true */
    bool fail_open;      /* audit.fail: open; default closed (refuse while the store fails) */
    bool row_digest;     /* SHA-256 over the rows sent; default true */
    char *jsonl;         /* optional JSON Lines copy of every event */
    uint64_t retention;  /* seconds; 0 = keep forever */
    char *signing_key;   /* optional Ed25519 private key (PEM file) signing checkpoints */
    unsigned checkpoint; /* events between checkpoints; default 1000 */
    unsigned queue;      /* events the writer's queue holds; default 65536 */
};

/* ---- approvals (issue 6). */

enum cfg_notify_kind { CFG_NOTIFY_SLACK, CFG_NOTIFY_WEBHOOK };

struct cfg_slack_user {
    char *slack_id; /* Slack's user id (U0123ABC), as the interaction payload carries it */
    char *identity; /* the sluice identity who decides when that user clicks */
};

struct cfg_notify {
    enum cfg_notify_kind kind;
    char *url;    /* resolved from webhook_url_env / url */
    char *secret; /* webhook HMAC secret, or Slack signing secret; never logged */
    /* Slack: users mapped to identities; when any is, only they decide, as those identities
     * (approver groups and the self-approval check apply); none: any user who can click */
    struct cfg_slack_user *users;
    unsigned n_users;
};

#define CFG_APPROVALS_MAX_QUEUED_WRITES 10000 /* approvals.max_queued_writes' default */

struct cfg_approvals {
    char **approvers; /* approvals.approvers.groups */
    unsigned n_approvers;
    enum cfg_approval_mode mode; /* DEFAULT: wait for humans, defer for services and agents */
    unsigned timeout;            /* seconds a request waits; default 600 */
    unsigned grant_ttl;          /* seconds; default 86400 */
    unsigned grant_max_uses;     /* default 100 */
    uint64_t grant_max_rows;     /* default 1000; 0 = none */
    /* requests one identity may have pending; default 10; 0 = no limit */
    unsigned max_pending_per_identity;
    /* changes (grant uses, new requests, ends) queued in memory for the state file; past it no
     * grant is used and no request made until the file takes them (src/approve/approve.c) */
    unsigned max_queued_writes;
    struct cfg_notify *notify;
    unsigned n_notify;
    char *public_url; /* where approvers reach the admin listener (links in messages) */
};

/* ---- OIDC identities (issue 6). */

struct cfg_oidc {
    bool enabled;       /* identities.oidc present */
    char *issuer;       /* iss must equal it */
    char *audience;     /* aud must equal it (or contain it) */
    char *jwks_file;    /* JWKS document on disk, or */
    char *jwks_url;     /* fetched with libcurl and cached */
    char *name_claim;   /* identity name; default "email", falling back to "sub" */
    char *groups_claim; /* default "groups" */
    char *kind_claim;   /* default "sluice_kind"; absent claim: human */
    char **algorithms;  /* pinned; default RS256 */
    unsigned n_algorithms;
    unsigned leeway;             /* seconds of clock skew allowed for exp/nbf; default 60 */
    bool end_sessions_at_expiry; /* end a token's sessions when it expires; default true */
    char **require_groups;       /* a token must name one of them (none: any token of the issuer) */
    unsigned n_require_groups;
};

/* ---- admin listener (issue 7). */

struct cfg_admin {
    char **groups; /* identity groups that may use the admin API (besides approvers) */
    unsigned n_groups;
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
    struct cfg_guardrails guardrails;
    struct cfg_policy policy;
    struct cfg_masking masking;
    struct cfg_state state;
    struct cfg_audit audit;
    struct cfg_approvals approvals;
    struct cfg_oidc oidc;
    struct cfg_admin admin;
    int refs; /* atomic reference count */
};

/*
 * Load and validate a config file. path NULL gives the built-in defaults (no targets, no
 * identities). On error returns -1 and writes one line "FILE:LINE:COL: error: MESSAGE"
 * (line and column when known) naming the key into err.
 */
int config_load(const char *path, struct sluice_config **out, char *err, size_t errlen);

/* Flags of config_load_ex(). CONFIG_NO_SECRETS: leave upstream passwords and notifier
 * secrets unread (and their variables unchecked), for commands that only read the state
 * store (`sluice audit`, `sluice approvals`). */
#define CONFIG_NO_SECRETS 1u
int config_load_ex(const char *path, unsigned flags, struct sluice_config **out, char *err,
                   size_t errlen);

struct sluice_config *config_ref(struct sluice_config *cfg);
void config_unref(struct sluice_config *cfg);

const struct cfg_target *config_find_target(const struct sluice_config *cfg, const char *name);
const struct cfg_identity *config_find_identity(const struct sluice_config *cfg, const char *name);

const char *ident_kind_name(enum ident_kind kind);
/* id's groups as "a,b,c" into out (truncated to fit); returns the length written. */
size_t config_groups_join(const struct cfg_identity *id, char *out, size_t len);
const char *cfg_action_name(enum cfg_action a);       /* "allow", "deny", "review" */
const char *cfg_guardrail_name(enum cfg_guardrail g); /* "drop", "delete_without_where", ... */
int cfg_guardrail_from_name(const char *name);        /* -1 when unknown */
const char *cfg_class_name(enum cfg_class c);         /* "read", "write", ... */
const char *sslmode_name(enum sslmode mode);

#endif
