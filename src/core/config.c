/*
 * config.c: loads sluice.yaml into an immutable, reference-counted struct sluice_config.
 *
 * Three passes over one in-memory copy of the file: a libyaml event pass indexes where every
 * key sits (config_pos.c) and catches YAML syntax errors; libcyaml maps the document onto
 * the raw structs of config_raw.h, rejecting unknown keys, bad enum values and wrong shapes
 * (its log_fn output is captured and turned into one error line); then this file applies
 * defaults, checks values and cross-key rules, and reads upstream secrets. Every error is
 * one line "FILE:LINE:COL: error: MESSAGE" naming the key. Secrets are never put in an
 * error message.
 */
#include "core/buf.h"
#include "core/config.h"

#include "core/config_raw.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_FILE (1u << 20)    /* sluice.yaml larger than 1 MiB is a mistake */
#define CONFIG_MAX_SECRET (64u << 10) /* password_file larger than 64 KiB likewise */
#define CONFIG_MAX_WORKERS 1024u
#define CONFIG_MIN_MESSAGE_SIZE 8192u

#define DEFAULT_LISTEN_POSTGRES "127.0.0.1:7432"
#define DEFAULT_LISTEN_ADMIN "127.0.0.1:7480"

/* ---------------------------------------------------------------- memory helpers */

void cfgld_free_secret(char *s)
{
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void config_free(struct sluice_config *cfg)
{
    if (!cfg) return;
    free(cfg->path);
    free(cfg->listen.postgres);
    free(cfg->listen.admin);
    free(cfg->tls.cert);
    free(cfg->tls.key);
    free(cfg->tls.client_ca);
    free(cfg->tls.client_crl);
    for (unsigned i = 0; i < cfg->n_targets; i++) {
        struct cfg_target *t = &cfg->targets[i];
        free(t->name);
        free(t->host);
        free(t->database);
        free(t->user);
        free(t->password_env);
        free(t->password_file);
        free(t->sslrootcert);
        cfgld_free_secret(t->password);
    }
    free(cfg->targets);
    for (unsigned i = 0; i < cfg->n_identities; i++) {
        struct cfg_identity *id = &cfg->identities[i];
        free(id->name);
        for (unsigned g = 0; g < id->n_groups; g++)
            free(id->groups[g]);
        free(id->groups);
        free(id->secret_hash);
        free(id->cert_cn);
        free(id->cert_san);
    }
    free(cfg->identities);
    for (unsigned i = 0; i < cfg->policy.n_rules; i++) {
        struct cfg_rule *r = &cfg->policy.rules[i];
        free(r->name);
        free(r->reason);
        free(r->hint);
        cfgmatch_free(&r->match);
    }
    free(cfg->policy.rules);
    cfgld_free_sections(cfg);
    free(cfg);
}

/* ---------------------------------------------------------------- errors */

/* Write "FILE:LINE:COL: error: MESSAGE" for the key at path (or its nearest parent). */
int cfgld_fail(struct loader *ld, const char *path, enum at at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++) /* one line, whatever a value holds */
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';

    const struct cfgpos_entry *e = NULL;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path ? path : "");
    while (buf[0] && !(e = cfgpos_find(&ld->pos, buf))) {
        /* Fall back to the parent: "a.b[2].c" -> "a.b[2]" -> "a.b" -> "a". */
        char *cut = strrchr(buf, '.');
        char *br = strrchr(buf, '[');
        if (br && (!cut || br > cut)) cut = br;
        if (!cut) break;
        *cut = '\0';
        at = AT_KEY;
    }
    if (!e && path && !path[0]) e = cfgpos_find(&ld->pos, ""); /* the document itself */
    if (ld->err && ld->errlen) {
        if (e)
            snprintf(ld->err, ld->errlen, "%s:%u:%u: error: %s", ld->file,
                     at == AT_KEY ? e->key_line : e->val_line,
                     at == AT_KEY ? e->key_col : e->val_col, msg);
        else
            snprintf(ld->err, ld->errlen, "%s: error: %s", ld->file, msg);
    }
    return -1;
}

static void cyaml_log_collect(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct loader *ld = ctx;
    if (level < CYAML_LOG_ERROR || ld->loglen + 1 >= sizeof(ld->log)) return;
    int n = vsnprintf(ld->log + ld->loglen, sizeof(ld->log) - ld->loglen, fmt, args);
    if (n > 0) ld->loglen += (size_t)n;
    if (ld->loglen >= sizeof(ld->log)) ld->loglen = sizeof(ld->log) - 1;
}

static const char *event_noun(const char *ev)
{
    if (strncmp(ev, "MAPPING", 7) == 0) return "a mapping";
    if (strncmp(ev, "SEQUENCE", 8) == 0) return "a list";
    if (strncmp(ev, "SCALAR", 6) == 0) return "a scalar";
    if (strncmp(ev, "ALIAS", 5) == 0) return "an alias";
    return "something else";
}

static const char *type_noun(const char *type)
{
    if (strcmp(type, "MAPPING") == 0) return "a mapping";
    if (strncmp(type, "SEQUENCE", 8) == 0) return "a list";
    return "a single value";
}

/*
 * Turn libcyaml's captured output into one error line. It looks like:
 *   Load: Unexpected key: hots
 *   Load: Backtrace:
 *     in mapping (line: 6, column: 11)
 *     in sequence entry '1' (line: 6, column: 5)      <- 1-based
 *     in mapping field 'targets' (line: 4, column: 3)
 * The backtrace (innermost first) gives the path; the position index gives line and column.
 */
static int fail_cyaml(struct loader *ld, cyaml_err_t rc)
{
    char what[256] = "";
    char path[256] = "";
    const char *frames[32];
    size_t nframes = 0;

    char *save = NULL;
    for (char *line = strtok_r(ld->log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "Load: ", 6) == 0) {
            if (!what[0] && strcmp(line + 6, "Backtrace:") != 0)
                snprintf(what, sizeof(what), "%s", line + 6);
        } else if (strncmp(line, "  in ", 5) == 0 && nframes < 32) {
            frames[nframes++] = line + 5;
        }
    }
    for (size_t i = nframes; i > 0; i--) {
        const char *f = frames[i - 1];
        char name[128];
        unsigned idx;
        size_t len = strlen(path);
        if (sscanf(f, "mapping field '%127[^']'", name) == 1)
            snprintf(path + len, sizeof(path) - len, "%s%s", len ? "." : "", name);
        else if (sscanf(f, "sequence entry '%u'", &idx) == 1 && idx > 0)
            snprintf(path + len, sizeof(path) - len, "[%u]", idx - 1);
    }

    char arg[128], arg2[64], full[256];
    const char *leaf = strrchr(path, '.');
    leaf = leaf ? leaf + 1 : path;
    if (sscanf(what, "Unexpected key: %127[^\n]", arg) == 1) {
        snprintf(full, sizeof(full), "%s%s%s", path, path[0] ? "." : "", arg);
        if (!path[0]) return cfgld_fail(ld, full, AT_KEY, "unknown top-level key \"%s\"", arg);
        if (strcmp(path, "guardrails") == 0)
            return cfgld_fail(
                ld, full, AT_KEY,
                "unknown guardrail \"%s\" (expected drop, truncate, "
                "delete_without_where, update_without_where, copy_program, copy_file, "
                "alter_system, file_access, role_escalation, dangerous_functions or "
                "unjudgeable)",
                arg);
        return cfgld_fail(ld, full, AT_KEY, "unknown key \"%s\" in %s", arg, path);
    }
    if (sscanf(what, "Invalid ENUM value: %127[^\n]", arg) == 1) {
        const char *choices = config_raw_enum_choices(leaf);
        return cfgld_fail(ld, path, AT_VALUE, "invalid value \"%s\" for %s (expected %s)", arg,
                          path, choices ? choices : "one of the documented values");
    }
    if (sscanf(what, "Mapping field already seen: %127[^\n]", arg) == 1) {
        if (strcmp(leaf, arg) != 0) {
            size_t len = strlen(path);
            snprintf(path + len, sizeof(path) - len, "%s%s", len ? "." : "", arg);
        }
        const struct cfgpos_entry *e = cfgpos_find_last(&ld->pos, path);
        if (e && ld->err && ld->errlen) {
            snprintf(ld->err, ld->errlen, "%s:%u:%u: error: duplicate key \"%s\"", ld->file,
                     e->key_line, e->key_col, path);
            return -1;
        }
        return cfgld_fail(ld, path, AT_KEY, "duplicate key \"%s\"", path);
    }
    if (sscanf(what, "Expecting %63s got event: %63s", arg, arg2) == 2) {
        char *comma = strchr(arg, ',');
        if (comma) *comma = '\0';
        if (!path[0]) return cfgld_fail(ld, "", AT_VALUE, "the top level must be a mapping");
        return cfgld_fail(ld, path, AT_VALUE, "%s must be %s, not %s", path, type_noun(arg),
                          event_noun(arg2));
    }
    if (sscanf(what, "Missing required mapping field: %127[^\n]", arg) == 1)
        return cfgld_fail(ld, path, AT_KEY, "missing required key \"%s\" in %s", arg,
                          path[0] ? path : "the top level");
    if (what[0]) return cfgld_fail(ld, path, AT_VALUE, "%s%s%s", what, path[0] ? " in " : "", path);
    return cfgld_fail(ld, path, AT_VALUE, "%s", cyaml_strerror(rc));
}

/* ---------------------------------------------------------------- value parsers */

/* Decimal digits only, no sign, no overflow past max. */
int cfgld_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s) return -1;
    unsigned long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (d > max || v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_port(const char *s, uint16_t *out)
{
    unsigned long long v;
    if (cfgld_parse_uint(s, 65535, &v) < 0 || v == 0) return -1;
    *out = (uint16_t)v;
    return 0;
}

/* "30" (seconds), "30s", "5m", "1h". */
int cfgld_parse_duration(const char *s, unsigned *out)
{
    char num[32];
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= sizeof(num)) return -1;
    unsigned long long mult = 1;
    memcpy(num, s, len + 1);
    switch (num[len - 1]) {
    case 's':
        mult = 1;
        num[--len] = '\0';
        break;
    case 'm':
        mult = 60;
        num[--len] = '\0';
        break;
    case 'h':
        mult = 3600;
        num[--len] = '\0';
        break;
    case 'd':
        mult = 86400;
        num[--len] = '\0';
        break;
    default:
        break;
    }
    unsigned long long v;
    if (cfgld_parse_uint(num, UINT_MAX / mult, &v) < 0) return -1;
    *out = (unsigned)(v * mult);
    return 0;
}

/* "1073741824", "512kB", "64MB", "1GB" (binary multiples; "B", "KiB", "MiB" also accepted). */
static int parse_size(const char *s, unsigned long long max, unsigned long long *out)
{
    static const struct {
        const char *suffix;
        unsigned long long mult;
    } units[] = {
        /* longest suffix first: "B" must not match before "MB" */
        {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"kB", 1ull << 10},
        {"KB", 1ull << 10},  {"MB", 1ull << 20},  {"GB", 1ull << 30},  {"B", 1},
    };
    char num[32];
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= sizeof(num)) return -1;
    memcpy(num, s, len + 1);
    unsigned long long mult = 1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t sl = strlen(units[i].suffix);
        if (len > sl && strcmp(num + len - sl, units[i].suffix) == 0) {
            mult = units[i].mult;
            num[len - sl] = '\0';
            break;
        }
    }
    unsigned long long v;
    if (cfgld_parse_uint(num, max / mult, &v) < 0) return -1;
    *out = v * mult;
    return 0;
}

/* YAML 1.1 booleans as libyaml leaves them (plain scalars). */
int cfgld_parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(s, yes[i]) == 0) return *out = true, 0;
        if (strcmp(s, no[i]) == 0) return *out = false, 0;
    }
    return -1;
}

/* "host:port" or "[v6]:port"; host must not be empty. */
static int parse_hostport(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end == s + 1 || end[1] != ':') return -1;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s || memchr(s, ':', (size_t)(colon - s))) return -1;
    }
    uint16_t port;
    return parse_port(colon + 1, &port);
}

/* Standard base64 with padding; returns the decoded length or -1. */
static int base64_decoded_len(const char *s, size_t len)
{
    if (len == 0 || len % 4) return -1;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '=') {
            if (i < len - 2) return -1;
            pad++;
        } else if (pad || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '+' || c == '/')) {
            return -1;
        }
    }
    return (int)(len / 4 * 3 - pad);
}

#define SCRAM_PREFIX "SCRAM-SHA-256$"
/* The bounds src/pg/scram.c accepts (core does not include pg/: kept in step by test_config). */
#define SCRAM_MAX_ITER 1000000u
#define SCRAM_MAX_SALT 64

/* "SCRAM-SHA-256$ITER:SALT$STOREDKEY:SERVERKEY" as PostgreSQL stores it: NULL when well
 * formed, else what is wrong. */
static const char *check_scram_verifier(const char *v)
{
    const char *p = v + strlen(SCRAM_PREFIX);
    const char *colon = strchr(p, ':');
    const char *dollar = colon ? strchr(colon, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar, ':') : NULL;
    if (!colon || !dollar || !colon2)
        return "expected SCRAM-SHA-256$ITERATIONS:SALT$STOREDKEY:SERVERKEY";
    char iter[16];
    size_t n = (size_t)(colon - p);
    unsigned long long it = 0;
    /* at most 10 characters, leading zeros included, as src/pg/scram.c parses them */
    if (n == 0 || n > 10) return "iterations must be 1 to 1000000";
    memcpy(iter, p, n);
    iter[n] = '\0';
    if (cfgld_parse_uint(iter, SCRAM_MAX_ITER, &it) < 0 || it == 0)
        return "iterations must be 1 to 1000000";
    int salt_len = base64_decoded_len(colon + 1, (size_t)(dollar - colon - 1));
    if (salt_len <= 0 || salt_len > SCRAM_MAX_SALT)
        return "the salt must be base64 of 1 to 64 bytes";
    if (base64_decoded_len(dollar + 1, (size_t)(colon2 - dollar - 1)) != 32)
        return "the stored key must be base64 of 32 bytes";
    if (base64_decoded_len(colon2 + 1, strlen(colon2 + 1)) != 32)
        return "the server key must be base64 of 32 bytes";
    return NULL;
}

/* ---------------------------------------------------------------- conversion */

/* A file named in the config: relative paths are relative to the config file's directory. */
char *cfgld_path(const struct loader *ld, const char *p)
{
    if (!p) return NULL;
    if (p[0] == '/' || ld->dirlen == 0) return xstrdup(p);
    size_t n = ld->dirlen + strlen(p) + 1;
    char *s = xcalloc(1, n);
    memcpy(s, ld->file, ld->dirlen);
    memcpy(s + ld->dirlen, p, strlen(p) + 1);
    return s;
}

static void config_set_defaults(struct sluice_config *cfg)
{
    cfg->listen.postgres = xstrdup(DEFAULT_LISTEN_POSTGRES);
    cfg->listen.admin = xstrdup(DEFAULT_LISTEN_ADMIN);
    cfg->tls.require = true; /* closed by default: loopback and SCRAM clients are exempt */
    cfg->server.workers = 0;
    cfg->server.log_level = LOG_INFO;
    cfg->server.shutdown_timeout = 30;
    cfg->server.auth_timeout = 15;
    cfg->server.connect_timeout = 10;
    cfg->server.pool_idle_timeout = 60;
    cfg->server.pool_max_lifetime = 600;
    cfg->server.pool_max_idle = 100;
    cfg->server.max_connections = 10000;
    cfg->server.max_message_size = 1u << 30;
    cfg->server.max_row_size = 16u << 20;
    /* Guardrails are on with no config at all. Statements sluice cannot judge (DO, CALL,
     * function bodies, unparseable text) are refused for services and agents, whose SQL is
     * generated and should never need them, and allowed for humans, who run maintenance
     * scripts and are accountable in the audit log. */
    for (unsigned g = 0; g < CFG_GUARD_COUNT; g++)
        for (unsigned k = 0; k < CFG_KIND_COUNT; k++)
            cfg->guardrails.action[g][k] = CFG_DENY;
    cfg->guardrails.action[CFG_GUARD_UNJUDGEABLE][IDENT_HUMAN] = CFG_ALLOW;
    cfg->policy.default_action = CFG_ALLOW;
    cfgld_set_section_defaults(cfg);
    cfg->refs = 1;
}

static int convert_listen(struct loader *ld, const struct raw_listen *rl, struct sluice_config *cfg)
{
    if (!rl) return 0;
    if (rl->postgres) {
        if (parse_hostport(rl->postgres) < 0)
            return cfgld_fail(ld, "listen.postgres", AT_VALUE,
                              "invalid address \"%s\" for listen.postgres (expected HOST:PORT)",
                              rl->postgres);
        free(cfg->listen.postgres);
        cfg->listen.postgres = xstrdup(rl->postgres);
    }
    if (rl->admin) {
        if (parse_hostport(rl->admin) < 0)
            return cfgld_fail(ld, "listen.admin", AT_VALUE,
                              "invalid address \"%s\" for listen.admin (expected HOST:PORT)",
                              rl->admin);
        free(cfg->listen.admin);
        cfg->listen.admin = xstrdup(rl->admin);
    }
    return 0;
}

static int convert_tls(struct loader *ld, const struct raw_tls *rt, struct sluice_config *cfg)
{
    if (!rt) return 0;
    if (rt->require && cfgld_parse_bool(rt->require, &cfg->tls.require) < 0)
        return cfgld_fail(ld, "tls.require", AT_VALUE,
                          "invalid value \"%s\" for tls.require (expected true or false)",
                          rt->require);
    if (rt->cert && !rt->key)
        return cfgld_fail(ld, "tls.cert", AT_KEY, "tls.cert is set but tls.key is not");
    if (rt->key && !rt->cert)
        return cfgld_fail(ld, "tls.key", AT_KEY, "tls.key is set but tls.cert is not");
    if (rt->client_ca && !rt->cert)
        return cfgld_fail(
            ld, "tls.client_ca", AT_KEY,
            "tls.client_ca is set but tls.cert is not (client certificates need TLS)");
    if (rt->client_crl && !rt->client_ca)
        return cfgld_fail(ld, "tls.client_crl", AT_KEY,
                          "tls.client_crl is set but tls.client_ca is not (revocation lists apply "
                          "to client certificates)");
    cfg->tls.cert = cfgld_path(ld, rt->cert);
    cfg->tls.key = cfgld_path(ld, rt->key);
    cfg->tls.client_ca = cfgld_path(ld, rt->client_ca);
    cfg->tls.client_crl = cfgld_path(ld, rt->client_crl);
    return 0;
}

static int check_state(struct loader *ld, const struct raw_state *rs)
{
    if (!rs) return 0;
    int driver = rs->driver ? rs->driver : RAW_DRIVER_SQLITE;
    if (driver == RAW_DRIVER_POSTGRES && !rs->dsn)
        return cfgld_fail(ld, "state", AT_KEY, "state.driver is postgres but state.dsn is not set");
    if (driver == RAW_DRIVER_SQLITE && rs->dsn)
        return cfgld_fail(ld, "state.dsn", AT_KEY,
                          "state.dsn is only for state.driver: postgres (sqlite uses state.path)");
    if (driver == RAW_DRIVER_POSTGRES && rs->path)
        return cfgld_fail(ld, "state.path", AT_KEY,
                          "state.path is only for state.driver: sqlite (postgres uses state.dsn)");
    return 0;
}

/* Read the upstream password of target i from the environment or a file. */
static int resolve_password(struct loader *ld, unsigned i, const struct raw_target *rt,
                            struct cfg_target *t)
{
    char path[64];
    if (rt->password_env) {
        snprintf(path, sizeof(path), "targets[%u].password_env", i);
        const char *v = getenv(rt->password_env);
        if (!v)
            return cfgld_fail(ld, path, AT_VALUE,
                              "environment variable \"%s\" named by %s is not set",
                              rt->password_env, path);
        if (!*v)
            return cfgld_fail(ld, path, AT_VALUE,
                              "environment variable \"%s\" named by %s is empty", rt->password_env,
                              path);
        t->password = xstrdup(v);
        return 0;
    }
    if (!t->password_file) return 0;

    snprintf(path, sizeof(path), "targets[%u].password_file", i);
    FILE *f = fopen(t->password_file, "r");
    if (!f)
        return cfgld_fail(ld, path, AT_VALUE, "cannot read %s \"%s\": %s", path, t->password_file,
                          strerror(errno));
    char *buf = xcalloc(1, CONFIG_MAX_SECRET + 2);
    size_t n = fread(buf, 1, CONFIG_MAX_SECRET + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    int rc = 0;
    if (rerr)
        rc = cfgld_fail(ld, path, AT_VALUE, "cannot read %s \"%s\": %s", path, t->password_file,
                        strerror(rerr));
    else if (n > CONFIG_MAX_SECRET)
        rc = cfgld_fail(ld, path, AT_VALUE, "%s \"%s\" is larger than 64 KiB", path,
                        t->password_file);
    if (rc == 0) {
        buf[n] = '\0';
        if (n && buf[n - 1] == '\n') buf[--n] = '\0';
        if (n && buf[n - 1] == '\r') buf[--n] = '\0';
        if (n == 0)
            rc = cfgld_fail(ld, path, AT_VALUE, "%s \"%s\" is empty", path, t->password_file);
        else if (memchr(buf, '\0', n))
            rc = cfgld_fail(ld, path, AT_VALUE, "%s \"%s\" holds a NUL byte", path,
                            t->password_file);
        else if (memchr(buf, '\n', n))
            rc = cfgld_fail(ld, path, AT_VALUE, "%s \"%s\" holds more than one line", path,
                            t->password_file);
    }
    if (rc == 0) t->password = xstrdup(buf);
    explicit_bzero(buf, CONFIG_MAX_SECRET + 2);
    free(buf);
    return rc;
}

static int convert_targets(struct loader *ld, const struct raw_config *raw,
                           struct sluice_config *cfg)
{
    if (!raw->targets_count) return 0;
    cfg->targets = xcalloc(raw->targets_count, sizeof(*cfg->targets));
    for (unsigned i = 0; i < raw->targets_count; i++) {
        const struct raw_target *rt = &raw->targets[i];
        struct cfg_target *t = &cfg->targets[i];
        char path[64], key[96];
        snprintf(path, sizeof(path), "targets[%u]", i);

        cfg->n_targets = i + 1; /* what is set so far gets freed on error */
        if (!rt->name || !*rt->name)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"name\" in %s", path);
        for (unsigned j = 0; j < i; j++)
            if (strcmp(cfg->targets[j].name, rt->name) == 0) {
                snprintf(key, sizeof(key), "%s.name", path);
                return cfgld_fail(ld, key, AT_VALUE,
                                  "duplicate target name \"%s\" in %s (first in targets[%u])",
                                  rt->name, path, j);
            }
        t->name = xstrdup(rt->name);
        if (!rt->host || !*rt->host)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"host\" in %s (\"%s\")",
                              path, rt->name);
        if (!rt->user || !*rt->user)
            return cfgld_fail(ld, path, AT_KEY, "missing required key \"user\" in %s (\"%s\")",
                              path, rt->name);
        t->host = xstrdup(rt->host);
        t->user = xstrdup(rt->user);
        t->port = 5432;
        if (rt->port && parse_port(rt->port, &t->port) < 0) {
            snprintf(key, sizeof(key), "%s.port", path);
            return cfgld_fail(ld, key, AT_VALUE, "invalid port \"%s\" for %s (expected 1 to 65535)",
                              rt->port, key);
        }
        t->database = xstrdup(rt->database && *rt->database ? rt->database : rt->name);
        t->sslmode = rt->sslmode ? (enum sslmode)(rt->sslmode - 1) : SSLMODE_PREFER;
        t->channel_binding = rt->channel_binding ? (enum channel_binding)(rt->channel_binding - 1)
                                                 : CHANNEL_BINDING_PREFER;
        if (t->channel_binding == CHANNEL_BINDING_REQUIRE && t->sslmode <= SSLMODE_PREFER) {
            snprintf(key, sizeof(key), "%s.channel_binding", path);
            return cfgld_fail(ld, key, AT_VALUE,
                              "%s is require but %s.sslmode is %s (channel binding needs TLS: "
                              "use require, verify-ca or verify-full)",
                              key, path, sslmode_name(t->sslmode));
        }
        t->sslrootcert = cfgld_path(ld, rt->sslrootcert);
        if (rt->password_env && rt->password_file) {
            snprintf(key, sizeof(key), "%s.password_file", path);
            return cfgld_fail(ld, key, AT_KEY,
                              "%s sets both password_env and password_file (choose one)", path);
        }
        t->password_env = xstrdup(rt->password_env);
        t->password_file = cfgld_path(ld, rt->password_file);
        if (!ld->no_secrets && resolve_password(ld, i, rt, t) < 0) return -1;
    }
    return 0;
}

static int convert_groups(struct loader *ld, const char *path, const struct raw_ident *ri,
                          struct cfg_identity *id)
{
    char key[96];
    if (!ri->groups_count) return 0;
    id->groups = xcalloc(ri->groups_count, sizeof(*id->groups));
    for (unsigned g = 0; g < ri->groups_count; g++) {
        if (!ri->groups[g] || !*ri->groups[g]) {
            snprintf(key, sizeof(key), "%s.groups[%u]", path, g);
            return cfgld_fail(ld, key, AT_VALUE, "empty group name in %s", key);
        }
        id->groups[id->n_groups++] = xstrdup(ri->groups[g]);
    }
    return 0;
}

static int check_secret(struct loader *ld, const char *path, const struct raw_ident *ri,
                        const char *hash_key);

/* Whether each byte of v is in the set: letters, digits and the characters of extra. */
static bool chars_in(const char *v, const char *extra)
{
    for (; *v; v++)
        if (!isalnum((unsigned char)*v) && !strchr(extra, *v)) return false;
    return true;
}

/* A DNS name (or an email's domain): letters, digits, "-" and non-empty labels; no wildcard,
 * no trailing dot (a certificate holds the name without one). */
static bool dns_name_ok(const char *v)
{
    return *v && chars_in(v, "-.") && v[0] != '.' && v[strlen(v) - 1] != '.' && !strstr(v, "..");
}

/* A SPIFFE ID as the SPIFFE standard writes it: spiffe://, a lowercase trust domain, then
 * path segments of letters, digits, ".", "-" and "_", none empty, "." or "..", no trailing "/"
 * (no port, user, query or fragment). A certificate's ID is compared byte for byte, so any
 * other spelling would never match. */
static bool spiffe_id_ok(const char *v)
{
    const char *td = v + strlen("spiffe://"), *path = strchr(td, '/');
    size_t tdlen = path ? (size_t)(path - td) : strlen(td);
    if (!tdlen) return false;
    for (size_t i = 0; i < tdlen; i++)
        if (!islower((unsigned char)td[i]) && !isdigit((unsigned char)td[i]) &&
            !strchr(".-_", td[i]))
            return false;
    if (!path) return true;
    for (const char *seg = path + 1;; seg++) {
        size_t n = strcspn(seg, "/");
        if (!n || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!isalnum((unsigned char)seg[i]) && !strchr(".-_", seg[i])) return false;
        seg += n;
        if (!*seg) return true;
    }
}

/* identities.certs[].san: "uri:", "dns:" or "email:" and a value a certificate can hold (an
 * IA5String: printable ASCII, no spaces), up to 1024 bytes, into *type and *value (which points
 * into san). A URI with a scheme (a SPIFFE ID as the standard writes it); a DNS name without
 * wildcards (matched exactly, so "*" would only ever match a wildcard certificate); an email
 * with one "@", a local part and a domain. */
static int parse_cert_san(struct loader *ld, const char *key, const char *san,
                          enum cfg_san_type *type, const char **value)
{
    static const struct {
        const char *prefix;
        enum cfg_san_type type;
    } types[] = {{"uri:", CFG_SAN_URI}, {"dns:", CFG_SAN_DNS}, {"email:", CFG_SAN_EMAIL}};
    const char *v = NULL;
    for (unsigned i = 0; i < sizeof types / sizeof *types && !v; i++)
        if (strncmp(san, types[i].prefix, strlen(types[i].prefix)) == 0) {
            v = san + strlen(types[i].prefix);
            *type = types[i].type;
        }
    if (!v)
        return cfgld_fail(ld, key, AT_VALUE,
                          "%s must start with uri:, dns: or email: (the subjectAltName's type), "
                          "as in uri:spiffe://example.org/reports",
                          key);
    *value = v;
    size_t n = strlen(v);
    if (!n || n > 1024)
        return cfgld_fail(ld, key, AT_VALUE, "%s: the value after the type must be 1 to 1024 bytes",
                          key);
    for (const char *p = v; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return cfgld_fail(ld, key, AT_VALUE,
                              "%s: a subjectAltName holds printable ASCII without spaces", key);
    if (*type == CFG_SAN_DNS && !dns_name_ok(v))
        return cfgld_fail(ld, key, AT_VALUE,
                          "%s: a DNS name of letters, digits, \"-\" and dots, without wildcards "
                          "or a trailing dot (it is matched exactly)",
                          key);
    const char *at = strchr(v, '@');
    if (*type == CFG_SAN_EMAIL && (!at || at == v || strchr(at + 1, '@') || !dns_name_ok(at + 1)))
        return cfgld_fail(ld, key, AT_VALUE,
                          "%s: an email address with a local part, one @ and a domain", key);
    if (*type == CFG_SAN_URI && strncmp(v, "spiffe:", 7) == 0 &&
        (strncmp(v, "spiffe://", 9) != 0 || !spiffe_id_ok(v)))
        return cfgld_fail(ld, key, AT_VALUE,
                          "%s: a SPIFFE ID is spiffe://, a lowercase trust domain and a path of "
                          "non-empty segments without a trailing /",
                          key);
    if (*type == CFG_SAN_URI && (!isalpha((unsigned char)v[0]) || v[strcspn(v, ":/")] != ':'))
        return cfgld_fail(ld, key, AT_VALUE, "%s: a URI starts with a scheme, as in spiffe://",
                          key);
    return 0;
}

/* kind: 'u' users, 't' tokens, 'c' certs */
static int convert_identity(struct loader *ld, const char *path, const struct raw_ident *ri,
                            char kind, struct sluice_config *cfg)
{
    bool is_token = kind == 't';
    const char *hash_key = is_token ? "token_hash" : "password_hash";
    char key[96];
    if (!ri->name || !*ri->name)
        return cfgld_fail(ld, path, AT_KEY, "missing required key \"name\" in %s", path);
    for (unsigned j = 0; j < cfg->n_identities; j++)
        if (strcmp(cfg->identities[j].name, ri->name) == 0) {
            snprintf(key, sizeof(key), "%s.name", path);
            return cfgld_fail(ld, key, AT_VALUE, "duplicate identity name \"%s\" in %s", ri->name,
                              path);
        }
    /* a cert identity with a subjectAltName checks its CN only when one is given */
    const char *cn = ri->cn ? ri->cn : ri->name;
    if (!ri->cn && ri->san) cn = NULL;
    enum cfg_san_type san_type = CFG_SAN_NONE;
    const char *san_value = NULL;
    if (kind == 'c') {
        snprintf(key, sizeof(key), "%s.cn", path);
        if (cn && (!*cn || strlen(cn) > 64))
            return cfgld_fail(ld, key, AT_VALUE, "%s must be 1 to 64 bytes (a subject CN)", key);
        snprintf(key, sizeof(key), "%s.san", path);
        if (ri->san && parse_cert_san(ld, key, ri->san, &san_type, &san_value) < 0) return -1;
        if (!cfg->tls.client_ca)
            return cfgld_fail(ld, path, AT_KEY,
                              "%s (\"%s\") logs in with a client certificate, but tls.client_ca "
                              "is not set: no certificate could be verified",
                              path, ri->name);
    } else if (check_secret(ld, path, ri, hash_key) < 0) {
        return -1;
    }
    struct cfg_identity *id = &cfg->identities[cfg->n_identities++];
    id->name = xstrdup(ri->name);
    id->kind = ri->kind      ? (enum ident_kind)(ri->kind - 1)
               : kind == 'u' ? IDENT_HUMAN
                             : IDENT_SERVICE;
    id->is_token = is_token;
    if (kind == 'c') {
        id->is_cert = true;
        id->cert_cn = cn ? xstrdup(cn) : NULL;
        id->cert_san = san_value ? xstrdup(san_value) : NULL;
        id->san_type = san_type;
    } else {
        id->secret_hash = xstrdup(ri->secret_hash);
    }
    return convert_groups(ld, path, ri, id);
}

/* password_hash or token_hash (hash_key): present and a well-formed SCRAM-SHA-256 verifier */
static int check_secret(struct loader *ld, const char *path, const struct raw_ident *ri,
                        const char *hash_key)
{
    char key[96];
    if (!ri->secret_hash)
        return cfgld_fail(ld, path, AT_KEY, "missing required key \"%s\" in %s (\"%s\")", hash_key,
                          path, ri->name);
    snprintf(key, sizeof(key), "%s.%s", path, hash_key);
    if (strncmp(ri->secret_hash, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) != 0)
        return cfgld_fail(ld, key, AT_VALUE,
                          "%s is not a SCRAM-SHA-256 verifier (it must start with "
                          "\"SCRAM-SHA-256$\"; make one with `sluice hash-token`)",
                          key);
    const char *why = check_scram_verifier(ri->secret_hash);
    if (why)
        return cfgld_fail(ld, key, AT_VALUE, "malformed SCRAM-SHA-256 verifier in %s: %s", key,
                          why);
    return 0;
}

static int convert_identities(struct loader *ld, const struct raw_identities *ri,
                              struct sluice_config *cfg)
{
    if (!ri || !(ri->users_count + ri->tokens_count + ri->certs_count)) return 0;
    cfg->identities =
        xcalloc(ri->users_count + ri->tokens_count + ri->certs_count, sizeof(*cfg->identities));
    char path[64];
    for (unsigned i = 0; i < ri->users_count; i++) {
        snprintf(path, sizeof(path), "identities.users[%u]", i);
        if (convert_identity(ld, path, &ri->users[i], 'u', cfg) < 0) return -1;
    }
    for (unsigned i = 0; i < ri->tokens_count; i++) {
        snprintf(path, sizeof(path), "identities.tokens[%u]", i);
        if (convert_identity(ld, path, &ri->tokens[i], 't', cfg) < 0) return -1;
    }
    for (unsigned i = 0; i < ri->certs_count; i++) {
        snprintf(path, sizeof(path), "identities.certs[%u]", i);
        if (convert_identity(ld, path, &ri->certs[i], 'c', cfg) < 0) return -1;
    }
    return 0;
}

static int server_duration(struct loader *ld, const char *key, const char *val, unsigned *out)
{
    if (val && cfgld_parse_duration(val, out) < 0)
        return cfgld_fail(ld, key, AT_VALUE,
                          "invalid duration \"%s\" for %s (expected seconds, or a number followed "
                          "by s, m or h)",
                          val, key);
    return 0;
}

static int convert_server(struct loader *ld, const struct raw_server *rs, struct sluice_config *cfg)
{
    if (!rs) return 0;
    struct cfg_server *s = &cfg->server;
    unsigned long long v;
    if (rs->workers) {
        if (cfgld_parse_uint(rs->workers, CONFIG_MAX_WORKERS, &v) < 0)
            return cfgld_fail(ld, "server.workers", AT_VALUE,
                              "invalid value \"%s\" for server.workers (expected 0 to %u; 0 = one "
                              "per CPU)",
                              rs->workers, CONFIG_MAX_WORKERS);
        s->workers = (unsigned)v;
    }
    if (rs->log_level) s->log_level = (enum log_level)(rs->log_level - 1);
    if (server_duration(ld, "server.shutdown_timeout", rs->shutdown_timeout, &s->shutdown_timeout) <
            0 ||
        server_duration(ld, "server.auth_timeout", rs->auth_timeout, &s->auth_timeout) < 0 ||
        server_duration(ld, "server.connect_timeout", rs->connect_timeout, &s->connect_timeout) <
            0 ||
        server_duration(ld, "server.pool_idle_timeout", rs->pool_idle_timeout,
                        &s->pool_idle_timeout) < 0 ||
        server_duration(ld, "server.pool_max_lifetime", rs->pool_max_lifetime,
                        &s->pool_max_lifetime) < 0)
        return -1;
    if (rs->pool_max_idle) {
        if (cfgld_parse_uint(rs->pool_max_idle, 100000, &v) < 0)
            return cfgld_fail(
                ld, "server.pool_max_idle", AT_VALUE,
                "invalid value \"%s\" for server.pool_max_idle (expected 0 to 100000)",
                rs->pool_max_idle);
        s->pool_max_idle = (unsigned)v;
    }
    if (rs->max_connections) {
        if (cfgld_parse_uint(rs->max_connections, UINT_MAX, &v) < 0 || v == 0)
            return cfgld_fail(
                ld, "server.max_connections", AT_VALUE,
                "invalid value \"%s\" for server.max_connections (expected a positive "
                "integer)",
                rs->max_connections);
        s->max_connections = (unsigned)v;
    }
    if (rs->max_message_size) {
        if (parse_size(rs->max_message_size, UINT32_MAX, &v) < 0 || v < CONFIG_MIN_MESSAGE_SIZE)
            return cfgld_fail(ld, "server.max_message_size", AT_VALUE,
                              "invalid size \"%s\" for server.max_message_size (expected bytes or "
                              "a number followed by kB, MB or GB, from 8kB to 4GB - 1)",
                              rs->max_message_size);
        s->max_message_size = (uint32_t)v;
    }
    if (rs->max_row_size) {
        if (parse_size(rs->max_row_size, 1u << 30, &v) < 0 || v < CONFIG_MIN_MESSAGE_SIZE)
            return cfgld_fail(ld, "server.max_row_size", AT_VALUE,
                              "invalid size \"%s\" for server.max_row_size (expected bytes or a "
                              "number followed by kB, MB or GB, from 8kB to 1GB)",
                              rs->max_row_size);
        s->max_row_size = (uint32_t)v;
    }
    return 0;
}

static void convert_guardrails(const struct raw_guardrails *rg, struct sluice_config *cfg)
{
    if (!rg) return;
    for (unsigned g = 0; g < CFG_GUARD_COUNT; g++) {
        if (!rg->v[g]) continue;
        for (unsigned k = 0; k < CFG_KIND_COUNT; k++)
            cfg->guardrails.action[g][k] = (enum cfg_action)(rg->v[g] - 1);
        cfg->guardrails.configured[g] = true;
    }
}

/* Rule names end up in client error messages and the audit: keep them plain. */
static bool rule_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("-_.:@/", *s)))
            return false;
    return true;
}

/* reason and hint go into a 256-byte decision field and an ErrorResponse. */
static int rule_text(struct loader *ld, const char *key, const char *v, char **out)
{
    if (!v) return 0;
    if (!*v) return cfgld_fail(ld, key, AT_VALUE, "%s is empty", key);
    if (strlen(v) > 200) return cfgld_fail(ld, key, AT_VALUE, "%s is longer than 200 bytes", key);
    for (const char *c = v; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return cfgld_fail(ld, key, AT_VALUE, "%s holds a control character (one line only)",
                              key);
    *out = xstrdup(v);
    return 0;
}

static int convert_rule(struct loader *ld, unsigned i, const struct raw_rule *rr,
                        struct sluice_config *cfg)
{
    struct cfg_rule *r = &cfg->policy.rules[i];
    char path[64], key[96];
    snprintf(path, sizeof(path), "policy.rules[%u]", i);
    if (!rr->name) return cfgld_fail(ld, path, AT_KEY, "missing required key \"name\" in %s", path);
    snprintf(key, sizeof(key), "%s.name", path);
    if (!rule_name_ok(rr->name))
        return cfgld_fail(
            ld, key, AT_VALUE,
            "invalid rule name \"%s\" in %s (1 to 64 letters, digits and - _ . : @ /)", rr->name,
            key);
    if (cfg_guardrail_from_name(rr->name) >= 0 || strcmp(rr->name, "default") == 0)
        return cfgld_fail(ld, key, AT_VALUE,
                          "rule name \"%s\" in %s is reserved (a guardrail or \"default\")",
                          rr->name, key);
    for (unsigned j = 0; j < i; j++)
        if (strcmp(cfg->policy.rules[j].name, rr->name) == 0)
            return cfgld_fail(ld, key, AT_VALUE,
                              "duplicate rule name \"%s\" in %s (first in policy.rules[%u])",
                              rr->name, path, j);
    r->name = xstrdup(rr->name);
    if (!rr->action)
        return cfgld_fail(ld, path, AT_KEY, "missing required key \"action\" in %s (\"%s\")", path,
                          rr->name);
    r->action = (enum cfg_action)(rr->action - 1);
    if (rr->limit_rows) {
        unsigned long long v;
        snprintf(key, sizeof(key), "%s.limit_rows", path);
        if (cfgld_parse_uint(rr->limit_rows, UINT64_MAX, &v) < 0 || v == 0)
            return cfgld_fail(ld, key, AT_VALUE,
                              "invalid value \"%s\" for %s (expected a positive number of rows)",
                              rr->limit_rows, key);
        if (r->action == CFG_DENY)
            return cfgld_fail(ld, key, AT_KEY, "%s has no effect with action deny", key);
        r->limit_rows = v;
    }
    if (rr->mode) {
        snprintf(key, sizeof(key), "%s.mode", path);
        if (r->action != CFG_REVIEW)
            return cfgld_fail(ld, key, AT_KEY, "%s is only for action review", key);
        r->mode = (enum cfg_approval_mode)rr->mode;
    }
    snprintf(key, sizeof(key), "%s.reason", path);
    if (rule_text(ld, key, rr->reason, &r->reason) < 0) return -1;
    snprintf(key, sizeof(key), "%s.hint", path);
    if (rule_text(ld, key, rr->hint, &r->hint) < 0) return -1;
    for (unsigned o = 0; o < rr->overrides_count; o++) {
        snprintf(key, sizeof(key), "%s.override[%u]", path, o);
        int g = rr->overrides[o] ? cfg_guardrail_from_name(rr->overrides[o]) : -1;
        if (g < 0)
            return cfgld_fail(ld, key, AT_VALUE, "unknown guardrail \"%s\" in %s",
                              rr->overrides[o] ? rr->overrides[o] : "", key);
        r->overrides |= 1u << g;
    }
    if (r->overrides && r->action == CFG_DENY) {
        snprintf(key, sizeof(key), "%s.override", path);
        return cfgld_fail(ld, key, AT_KEY,
                          "%s has no effect with action deny (it lifts guardrails for allow or "
                          "review)",
                          key);
    }
    return 0;
}

static int convert_policy(struct loader *ld, const struct raw_policy *rp, struct sluice_config *cfg)
{
    if (!rp) return 0;
    if (rp->default_action) cfg->policy.default_action = (enum cfg_action)(rp->default_action - 1);
    if (!rp->rules_count) return 0;
    cfg->policy.rules = xcalloc(rp->rules_count, sizeof(*cfg->policy.rules));
    cfg->policy.n_rules = rp->rules_count;
    for (unsigned i = 0; i < rp->rules_count; i++)
        if (convert_rule(ld, i, &rp->rules[i], cfg) < 0) return -1;
    char msg[512];
    unsigned line, col;
    if (cfgmatch_load(ld->data, ld->datalen, cfg, msg, sizeof(msg), &line, &col) < 0) {
        if (ld->err && ld->errlen) {
            if (line)
                snprintf(ld->err, ld->errlen, "%s:%u:%u: error: %s", ld->file, line, col, msg);
            else
                snprintf(ld->err, ld->errlen, "%s: error: %s", ld->file, msg);
        }
        return -1;
    }
    return 0;
}

static int config_convert(struct loader *ld, const struct raw_config *raw,
                          struct sluice_config *cfg)
{
    if (!raw) return 0;
    if (convert_listen(ld, raw->listen, cfg) < 0) return -1;
    if (convert_tls(ld, raw->tls, cfg) < 0) return -1;
    if (check_state(ld, raw->state) < 0) return -1;
    if (convert_targets(ld, raw, cfg) < 0) return -1;
    if (convert_identities(ld, raw->identities, cfg) < 0) return -1;
    if (convert_server(ld, raw->server, cfg) < 0) return -1;
    convert_guardrails(raw->guardrails, cfg);
    if (convert_policy(ld, raw->policy, cfg) < 0) return -1;
    return cfgld_convert_sections(ld, raw, cfg);
}

/* ---------------------------------------------------------------- public API */

static int read_file(struct loader *ld, const char *path, char **out, size_t *outlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return cfgld_fail(ld, NULL, AT_KEY, "cannot open: %s", strerror(errno));
    char *buf = xcalloc(1, CONFIG_MAX_FILE + 1);
    size_t n = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr || n > CONFIG_MAX_FILE) {
        free(buf);
        if (rerr) return cfgld_fail(ld, NULL, AT_KEY, "cannot read: %s", strerror(rerr));
        return cfgld_fail(ld, NULL, AT_KEY, "file is larger than 1 MiB");
    }
    *out = buf;
    *outlen = n;
    return 0;
}

int config_load(const char *path, struct sluice_config **out, char *err, size_t errlen)
{
    return config_load_ex(path, 0, out, err, errlen);
}

int config_load_ex(const char *path, unsigned flags, struct sluice_config **out, char *err,
                   size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    *out = NULL;
    struct sluice_config *cfg = xcalloc(1, sizeof(*cfg));
    config_set_defaults(cfg);
    if (!path) {
        *out = cfg;
        return 0;
    }
    cfg->path = xstrdup(path);

    struct loader *ld = xcalloc(1, sizeof(*ld));
    ld->file = path;
    ld->no_secrets = (flags & CONFIG_NO_SECRETS) != 0;
    const char *slash = strrchr(path, '/');
    ld->dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    ld->err = err;
    ld->errlen = errlen;
    char *data = NULL;
    size_t len = 0;
    struct raw_config *raw = NULL;
    const cyaml_config_t cyaml_cfg = {
        .log_fn = cyaml_log_collect,
        .log_ctx = ld,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };
    int rc = -1;

    if (read_file(ld, path, &data, &len) < 0) goto done;
    ld->data = data;
    ld->datalen = len;
    if (cfgpos_scan(data, len, &ld->pos) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s:%u:%u: error: %s", path, ld->pos.line, ld->pos.col,
                     ld->pos.problem);
        goto done;
    }
    if (!ld->pos.empty) {
        cyaml_err_t cerr = cyaml_load_data((const uint8_t *)data, len, &cyaml_cfg,
                                           &config_raw_schema, (cyaml_data_t **)&raw, NULL);
        if (cerr != CYAML_OK) {
            fail_cyaml(ld, cerr);
            raw = NULL;
            goto done;
        }
    }
    if (config_convert(ld, raw, cfg) < 0) goto done;
    rc = 0;

done:
    if (raw) cyaml_free(&cyaml_cfg, &config_raw_schema, raw, 0);
    free(data);
    cfgpos_free(&ld->pos);
    free(ld);
    if (rc < 0) {
        config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

struct sluice_config *config_ref(struct sluice_config *cfg)
{
    if (cfg) __atomic_add_fetch(&cfg->refs, 1, __ATOMIC_RELAXED);
    return cfg;
}

void config_unref(struct sluice_config *cfg)
{
    if (cfg && __atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) == 0) config_free(cfg);
}

const struct cfg_target *config_find_target(const struct sluice_config *cfg, const char *name)
{
    if (!cfg || !name) return NULL;
    for (unsigned i = 0; i < cfg->n_targets; i++)
        if (strcmp(cfg->targets[i].name, name) == 0) return &cfg->targets[i];
    return NULL;
}

const struct cfg_identity *config_find_identity(const struct sluice_config *cfg, const char *name)
{
    if (!cfg || !name) return NULL;
    for (unsigned i = 0; i < cfg->n_identities; i++)
        if (strcmp(cfg->identities[i].name, name) == 0) return &cfg->identities[i];
    return NULL;
}

size_t config_groups_join(const struct cfg_identity *id, char *out, size_t len)
{
    size_t n = 0;
    if (len) out[0] = '\0';
    for (unsigned g = 0; g < id->n_groups && n + 1 < len; g++) {
        int w = snprintf(out + n, len - n, "%s%s", g ? "," : "", id->groups[g]);
        if (w < 0) break;
        n = n + (size_t)w < len ? n + (size_t)w : len - 1;
    }
    return n;
}

const char *ident_kind_name(enum ident_kind kind)
{
    switch (kind) {
    case IDENT_HUMAN:
        return "human";
    case IDENT_SERVICE:
        return "service";
    case IDENT_AGENT:
        return "agent";
    }
    return "unknown";
}

const char *cfg_action_name(enum cfg_action a)
{
    switch (a) {
    case CFG_ALLOW:
        return "allow";
    case CFG_DENY:
        return "deny";
    case CFG_REVIEW:
        return "review";
    case CFG_MASK:
        return "mask";
    case CFG_UNMASK:
        return "unmask";
    }
    return "unknown";
}

static const char *const guardrail_names[CFG_GUARD_COUNT] = {
    [CFG_GUARD_DROP] = "drop",
    [CFG_GUARD_TRUNCATE] = "truncate",
    [CFG_GUARD_DELETE_WITHOUT_WHERE] = "delete_without_where",
    [CFG_GUARD_UPDATE_WITHOUT_WHERE] = "update_without_where",
    [CFG_GUARD_COPY_PROGRAM] = "copy_program",
    [CFG_GUARD_COPY_FILE] = "copy_file",
    [CFG_GUARD_ALTER_SYSTEM] = "alter_system",
    [CFG_GUARD_FILE_ACCESS] = "file_access",
    [CFG_GUARD_ROLE_ESCALATION] = "role_escalation",
    [CFG_GUARD_DANGEROUS_FUNCTIONS] = "dangerous_functions",
    [CFG_GUARD_UNJUDGEABLE] = "unjudgeable",
};

const char *cfg_guardrail_name(enum cfg_guardrail g)
{
    return (unsigned)g < CFG_GUARD_COUNT ? guardrail_names[g] : "unknown";
}

int cfg_guardrail_from_name(const char *name)
{
    for (int g = 0; g < CFG_GUARD_COUNT; g++)
        if (strcmp(guardrail_names[g], name) == 0) return g;
    return -1;
}

const char *cfg_class_name(enum cfg_class c)
{
    static const char *const names[CFG_CLASS_COUNT] = {
        "read", "write", "ddl", "dcl", "admin", "transaction", "utility",
    };
    return (unsigned)c < CFG_CLASS_COUNT ? names[c] : "unknown";
}

const char *sslmode_name(enum sslmode mode)
{
    switch (mode) {
    case SSLMODE_DISABLE:
        return "disable";
    case SSLMODE_ALLOW:
        return "allow";
    case SSLMODE_PREFER:
        return "prefer";
    case SSLMODE_REQUIRE:
        return "require";
    case SSLMODE_VERIFY_CA:
        return "verify-ca";
    case SSLMODE_VERIFY_FULL:
        return "verify-full";
    }
    return "unknown";
}
