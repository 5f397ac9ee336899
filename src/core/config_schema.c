/*
 * config_schema.c: the libcyaml schema of sluice.yaml, filling the raw structs of
 * config_raw.h. It only says which keys exist, their shape, and the spellings of enums;
 * defaults, ranges and cross-key rules live in config.c and config_sections.c.
 * policy.rules[].match is skipped here and read by config_match.c.
 */
#include "core/config_raw.h"

#include "core/config.h"

#include <string.h>

#define OPT CYAML_FLAG_OPTIONAL
#define STR_OPT(key, st, member)                                                                   \
    CYAML_FIELD_STRING_PTR(key, OPT | CYAML_FLAG_POINTER_NULL, st, member, 0, CYAML_UNLIMITED)
#define STR_REQ(key, st, member)                                                                   \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER, st, member, 0, CYAML_UNLIMITED)
#define ENUM_OPT(key, st, member, strings)                                                         \
    CYAML_FIELD_ENUM(key, OPT | CYAML_FLAG_STRICT, st, member, strings, CYAML_ARRAY_LEN(strings))
#define MAP_OPT(key, st, member, fields)                                                           \
    CYAML_FIELD_MAPPING_PTR(key, OPT | CYAML_FLAG_POINTER_NULL, st, member, fields)

/* Enum strings: values are the public enum + 1 (0 = absent). */
static const cyaml_strval_t sslmode_strings[] = {
    {"disable", 1}, {"allow", 2},     {"prefer", 3},
    {"require", 4}, {"verify-ca", 5}, {"verify-full", 6},
};
static const cyaml_strval_t channel_binding_strings[] = {
    {"prefer", 1},
    {"disable", 2},
    {"require", 3},
};
static const cyaml_strval_t kind_strings[] = {
    {"human", 1},
    {"service", 2},
    {"agent", 3},
};
static const cyaml_strval_t log_level_strings[] = {
    {"debug", 1},
    {"info", 2},
    {"warn", 3},
    {"error", 4},
};
static const cyaml_strval_t driver_strings[] = {
    {"sqlite", RAW_DRIVER_SQLITE},
    {"postgres", RAW_DRIVER_POSTGRES},
};

static const cyaml_strval_t action_strings[] = {
    {"allow", CFG_ALLOW + 1},
    {"deny", CFG_DENY + 1},
    {"review", CFG_REVIEW + 1},
};
static const cyaml_strval_t rule_action_strings[] = {
    {"allow", CFG_ALLOW + 1}, {"deny", CFG_DENY + 1},     {"review", CFG_REVIEW + 1},
    {"mask", CFG_MASK + 1},   {"unmask", CFG_UNMASK + 1},
};
static const cyaml_strval_t form_strings[] = {
    {"partial", CFG_FORM_PARTIAL},
    {"full", CFG_FORM_FULL},
    {"hash", CFG_FORM_HASH},
};
static const cyaml_strval_t validator_strings[] = {
    {"none", CFG_VALID_NONE + 1},
    {"luhn", CFG_VALID_LUHN + 1},
    {"mod97", CFG_VALID_MOD97 + 1},
    {"ssn", CFG_VALID_SSN + 1},
};
static const cyaml_strval_t fail_strings[] = {
    {"closed", 1},
    {"open", 2},
};
static const cyaml_strval_t mode_strings[] = {
    {"wait", CFG_MODE_WAIT},
    {"defer", CFG_MODE_DEFER},
};

const char *config_raw_enum_choices(const char *key)
{
    if (strcmp(key, "action") == 0) return "allow, deny, review, mask or unmask";
    if (strcmp(key, "form") == 0) return "partial, full or hash";
    if (strcmp(key, "validator") == 0) return "none, luhn, mod97 or ssn";
    if (strcmp(key, "fail") == 0) return "closed or open";
    if (strcmp(key, "default") == 0 || cfg_guardrail_from_name(key) >= 0)
        return "allow, deny or review";
    if (strcmp(key, "mode") == 0) return "wait or defer";
    if (strcmp(key, "sslmode") == 0)
        return "disable, allow, prefer, require, verify-ca or verify-full";
    if (strcmp(key, "channel_binding") == 0) return "disable, prefer or require";
    if (strcmp(key, "kind") == 0) return "human, service or agent";
    if (strcmp(key, "log_level") == 0) return "debug, info, warn or error";
    if (strcmp(key, "driver") == 0) return "sqlite or postgres";
    return NULL;
}

static const cyaml_schema_field_t listen_fields[] = {
    STR_OPT("postgres", struct raw_listen, postgres),
    STR_OPT("admin", struct raw_listen, admin),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t tls_fields[] = {
    STR_OPT("cert", struct raw_tls, cert),
    STR_OPT("key", struct raw_tls, key),
    STR_OPT("client_ca", struct raw_tls, client_ca),
    STR_OPT("client_crl", struct raw_tls, client_crl),
    STR_OPT("require", struct raw_tls, require),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t state_fields[] = {
    ENUM_OPT("driver", struct raw_state, driver, driver_strings),
    STR_OPT("path", struct raw_state, path),
    STR_OPT("dsn", struct raw_state, dsn),
    CYAML_FIELD_END,
};

/* name and host/user are checked in config.c, so that the error can name the entry. */
static const cyaml_schema_field_t target_fields[] = {
    STR_OPT("name", struct raw_target, name),
    STR_OPT("host", struct raw_target, host),
    STR_OPT("port", struct raw_target, port),
    STR_OPT("database", struct raw_target, database),
    STR_OPT("user", struct raw_target, user),
    STR_OPT("password_env", struct raw_target, password_env),
    STR_OPT("password_file", struct raw_target, password_file),
    ENUM_OPT("sslmode", struct raw_target, sslmode, sslmode_strings),
    ENUM_OPT("channel_binding", struct raw_target, channel_binding, channel_binding_strings),
    STR_OPT("sslrootcert", struct raw_target, sslrootcert),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t target_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_target, target_fields),
};

static const cyaml_schema_value_t group_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t user_fields[] = {
    STR_OPT("name", struct raw_ident, name),
    ENUM_OPT("kind", struct raw_ident, kind, kind_strings),
    CYAML_FIELD_SEQUENCE("groups", OPT | CYAML_FLAG_POINTER_NULL, struct raw_ident, groups,
                         &group_schema, 0, CYAML_UNLIMITED),
    STR_OPT("password_hash", struct raw_ident, secret_hash),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t token_fields[] = {
    STR_OPT("name", struct raw_ident, name),
    ENUM_OPT("kind", struct raw_ident, kind, kind_strings),
    CYAML_FIELD_SEQUENCE("groups", OPT | CYAML_FLAG_POINTER_NULL, struct raw_ident, groups,
                         &group_schema, 0, CYAML_UNLIMITED),
    STR_OPT("token_hash", struct raw_ident, secret_hash),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t cert_fields[] = {
    STR_OPT("name", struct raw_ident, name),
    ENUM_OPT("kind", struct raw_ident, kind, kind_strings),
    CYAML_FIELD_SEQUENCE("groups", OPT | CYAML_FLAG_POINTER_NULL, struct raw_ident, groups,
                         &group_schema, 0, CYAML_UNLIMITED),
    STR_OPT("cn", struct raw_ident, cn),
    STR_OPT("san", struct raw_ident, san),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t user_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_ident, user_fields),
};
static const cyaml_schema_value_t cert_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_ident, cert_fields),
};
static const cyaml_schema_value_t token_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_ident, token_fields),
};

static const cyaml_schema_field_t oidc_fields[] = {
    STR_OPT("issuer", struct raw_oidc, issuer),
    STR_OPT("audience", struct raw_oidc, audience),
    STR_OPT("jwks_file", struct raw_oidc, jwks_file),
    STR_OPT("jwks_url", struct raw_oidc, jwks_url),
    STR_OPT("name_claim", struct raw_oidc, name_claim),
    STR_OPT("groups_claim", struct raw_oidc, groups_claim),
    STR_OPT("kind_claim", struct raw_oidc, kind_claim),
    CYAML_FIELD_SEQUENCE("algorithms", OPT | CYAML_FLAG_POINTER_NULL, struct raw_oidc, algorithms,
                         &group_schema, 0, CYAML_UNLIMITED),
    STR_OPT("leeway", struct raw_oidc, leeway),
    STR_OPT("end_sessions_at_expiry", struct raw_oidc, end_sessions_at_expiry),
    CYAML_FIELD_SEQUENCE("require_groups", OPT | CYAML_FLAG_POINTER_NULL, struct raw_oidc,
                         require_groups, &group_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t identities_fields[] = {
    CYAML_FIELD_SEQUENCE("users", OPT | CYAML_FLAG_POINTER_NULL, struct raw_identities, users,
                         &user_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("tokens", OPT | CYAML_FLAG_POINTER_NULL, struct raw_identities, tokens,
                         &token_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("certs", OPT | CYAML_FLAG_POINTER_NULL, struct raw_identities, certs,
                         &cert_schema, 0, CYAML_UNLIMITED),
    MAP_OPT("oidc", struct raw_identities, oidc, oidc_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t server_fields[] = {
    STR_OPT("workers", struct raw_server, workers),
    ENUM_OPT("log_level", struct raw_server, log_level, log_level_strings),
    STR_OPT("shutdown_timeout", struct raw_server, shutdown_timeout),
    STR_OPT("auth_timeout", struct raw_server, auth_timeout),
    STR_OPT("connect_timeout", struct raw_server, connect_timeout),
    STR_OPT("max_connections", struct raw_server, max_connections),
    STR_OPT("max_message_size", struct raw_server, max_message_size),
    STR_OPT("max_row_size", struct raw_server, max_row_size),
    STR_OPT("pool_idle_timeout", struct raw_server, pool_idle_timeout),
    STR_OPT("pool_max_lifetime", struct raw_server, pool_max_lifetime),
    STR_OPT("pool_max_idle", struct raw_server, pool_max_idle),
    CYAML_FIELD_END,
};

#define GUARD(name, g) ENUM_OPT(name, struct raw_guardrails, v[g], action_strings)
static const cyaml_schema_field_t guardrails_fields[] = {
    GUARD("drop", CFG_GUARD_DROP),
    GUARD("truncate", CFG_GUARD_TRUNCATE),
    GUARD("delete_without_where", CFG_GUARD_DELETE_WITHOUT_WHERE),
    GUARD("update_without_where", CFG_GUARD_UPDATE_WITHOUT_WHERE),
    GUARD("copy_program", CFG_GUARD_COPY_PROGRAM),
    GUARD("copy_file", CFG_GUARD_COPY_FILE),
    GUARD("alter_system", CFG_GUARD_ALTER_SYSTEM),
    GUARD("file_access", CFG_GUARD_FILE_ACCESS),
    GUARD("role_escalation", CFG_GUARD_ROLE_ESCALATION),
    GUARD("dangerous_functions", CFG_GUARD_DANGEROUS_FUNCTIONS),
    GUARD("unjudgeable", CFG_GUARD_UNJUDGEABLE),
    CYAML_FIELD_END,
};
_Static_assert(CFG_GUARD_COUNT <= 16, "struct raw_guardrails holds 16 guardrails");

static const cyaml_schema_field_t rule_fields[] = {
    STR_OPT("name", struct raw_rule, name),
    CYAML_FIELD_IGNORE("match", OPT),
    ENUM_OPT("action", struct raw_rule, action, rule_action_strings),
    STR_OPT("limit_rows", struct raw_rule, limit_rows),
    ENUM_OPT("mode", struct raw_rule, mode, mode_strings),
    STR_OPT("reason", struct raw_rule, reason),
    STR_OPT("hint", struct raw_rule, hint),
    CYAML_FIELD_SEQUENCE("override", OPT | CYAML_FLAG_POINTER_NULL, struct raw_rule, overrides,
                         &group_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t rule_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_rule, rule_fields),
};

static const cyaml_schema_field_t policy_fields[] = {
    CYAML_FIELD_SEQUENCE("rules", OPT | CYAML_FLAG_POINTER_NULL, struct raw_policy, rules,
                         &rule_schema, 0, CYAML_UNLIMITED),
    ENUM_OPT("default", struct raw_policy, default_action, action_strings),
    CYAML_FIELD_END,
};

#define STR_LIST(key, st, member)                                                                  \
    CYAML_FIELD_SEQUENCE(key, OPT | CYAML_FLAG_POINTER_NULL, st, member, &group_schema, 0,         \
                         CYAML_UNLIMITED)

static const cyaml_schema_field_t unmask_fields[] = {
    STR_LIST("groups", struct raw_unmask, groups),
    STR_LIST("identities", struct raw_unmask, identities),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t detector_fields[] = {
    STR_OPT("name", struct raw_detector, name),
    STR_OPT("pattern", struct raw_detector, pattern),
    ENUM_OPT("validator", struct raw_detector, validator, validator_strings),
    ENUM_OPT("form", struct raw_detector, form, form_strings),
    CYAML_FIELD_END,
};
static const cyaml_schema_value_t detector_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_detector, detector_fields),
};

static const cyaml_schema_field_t mask_column_fields[] = {
    STR_OPT("match", struct raw_mask_column, match),
    STR_OPT("detector", struct raw_mask_column, detector),
    ENUM_OPT("form", struct raw_mask_column, form, form_strings),
    CYAML_FIELD_END,
};
static const cyaml_schema_value_t mask_column_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_mask_column, mask_column_fields),
};

static const cyaml_schema_field_t masking_fields[] = {
    STR_OPT("enabled", struct raw_masking, enabled),
    MAP_OPT("unmask", struct raw_masking, unmask, unmask_fields),
    STR_LIST("detectors", struct raw_masking, detectors),
    CYAML_FIELD_SEQUENCE("custom", OPT | CYAML_FLAG_POINTER_NULL, struct raw_masking, custom,
                         &detector_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("columns", OPT | CYAML_FLAG_POINTER_NULL, struct raw_masking, columns,
                         &mask_column_schema, 0, CYAML_UNLIMITED),
    STR_LIST("exempt", struct raw_masking, exempt),
    ENUM_OPT("form", struct raw_masking, form, form_strings),
    STR_OPT("hash_key_env", struct raw_masking, hash_key_env),
    STR_OPT("hash_key_file", struct raw_masking, hash_key_file),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t audit_fields[] = {
    STR_OPT("enabled", struct raw_audit, enabled),
    ENUM_OPT("fail", struct raw_audit, fail, fail_strings),
    STR_OPT("row_digest", struct raw_audit, row_digest),
    STR_OPT("jsonl", struct raw_audit, jsonl),
    STR_OPT("retention", struct raw_audit, retention),
    STR_OPT("signing_key", struct raw_audit, signing_key),
    STR_OPT("checkpoint", struct raw_audit, checkpoint),
    STR_OPT("queue", struct raw_audit, queue),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t groups_fields[] = {
    STR_LIST("groups", struct raw_groups, groups),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t grant_fields[] = {
    STR_OPT("ttl", struct raw_grant, ttl),
    STR_OPT("max_uses", struct raw_grant, max_uses),
    STR_OPT("max_rows", struct raw_grant, max_rows),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t slack_user_fields[] = {
    STR_REQ("slack_id", struct raw_slack_user, slack_id),
    STR_REQ("identity", struct raw_slack_user, identity),
    CYAML_FIELD_END,
};
static const cyaml_schema_value_t slack_user_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_slack_user, slack_user_fields),
};

static const cyaml_schema_field_t slack_fields[] = {
    STR_OPT("webhook_url_env", struct raw_slack, webhook_url_env),
    STR_OPT("signing_secret_env", struct raw_slack, signing_secret_env),
    CYAML_FIELD_SEQUENCE("users", OPT | CYAML_FLAG_POINTER_NULL, struct raw_slack, users,
                         &slack_user_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t webhook_fields[] = {
    STR_OPT("url", struct raw_webhook, url),
    STR_OPT("url_env", struct raw_webhook, url_env),
    STR_OPT("secret_env", struct raw_webhook, secret_env),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t notify_fields[] = {
    MAP_OPT("slack", struct raw_notify, slack, slack_fields),
    MAP_OPT("webhook", struct raw_notify, webhook, webhook_fields),
    CYAML_FIELD_END,
};
static const cyaml_schema_value_t notify_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_notify, notify_fields),
};

static const cyaml_schema_field_t approvals_fields[] = {
    MAP_OPT("approvers", struct raw_approvals, approvers, groups_fields),
    ENUM_OPT("mode", struct raw_approvals, mode, mode_strings),
    STR_OPT("timeout", struct raw_approvals, timeout),
    STR_OPT("max_pending_per_identity", struct raw_approvals, max_pending_per_identity),
    STR_OPT("max_queued_writes", struct raw_approvals, max_queued_writes),
    MAP_OPT("grant", struct raw_approvals, grant, grant_fields),
    CYAML_FIELD_SEQUENCE("notify", OPT | CYAML_FLAG_POINTER_NULL, struct raw_approvals, notify,
                         &notify_schema, 0, CYAML_UNLIMITED),
    STR_OPT("public_url", struct raw_approvals, public_url),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t top_fields[] = {
    MAP_OPT("listen", struct raw_config, listen, listen_fields),
    MAP_OPT("tls", struct raw_config, tls, tls_fields),
    MAP_OPT("state", struct raw_config, state, state_fields),
    CYAML_FIELD_SEQUENCE("targets", OPT | CYAML_FLAG_POINTER_NULL, struct raw_config, targets,
                         &target_schema, 0, CYAML_UNLIMITED),
    MAP_OPT("identities", struct raw_config, identities, identities_fields),
    MAP_OPT("server", struct raw_config, server, server_fields),
    MAP_OPT("guardrails", struct raw_config, guardrails, guardrails_fields),
    MAP_OPT("policy", struct raw_config, policy, policy_fields),
    MAP_OPT("masking", struct raw_config, masking, masking_fields),
    MAP_OPT("audit", struct raw_config, audit, audit_fields),
    MAP_OPT("approvals", struct raw_config, approvals, approvals_fields),
    MAP_OPT("admin", struct raw_config, admin, groups_fields),
    CYAML_FIELD_END,
};

const cyaml_schema_value_t config_raw_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_config, top_fields),
};
