/*
 * test_config.c: unit tests of the config loader (src/core/config.c).
 *
 * Every tests/config/valid/NAME.yaml must load; every tests/config/invalid/NAME.yaml must fail
 * with exactly the one line in NAME.err. examples/sluice.yaml must load too. A few files are
 * also checked value by value (defaults, units, identities order, resolved secrets).
 * Run from the repository root: paths are relative to it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "pg/scram.h"

#define VALID_DIR "tests/config/valid"
#define INVALID_DIR "tests/config/invalid"

static void set_test_env(void)
{
    setenv("SLUICE_TEST_SHOP_PASSWORD", "shop-env-secret", 1);
    setenv("SHOP_DB_PASSWORD", "example-shop-secret", 1);
    setenv("ANALYTICS_DB_PASSWORD", "example-analytics-secret", 1);
    setenv("SLUICE_TEST_MASK_KEY", "mask-key-for-tests", 1);
    setenv("SLUICE_TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/X", 1);
    setenv("SLUICE_TEST_SLACK_SECRET", "slack-signing-secret", 1);
    setenv("SLUICE_TEST_HOOK_SECRET", "hook-secret", 1);
    unsetenv("SLUICE_TEST_UNSET_VARIABLE");
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted list of the *.yaml files in dir; returns the count. */
static size_t list_yaml(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".yaml")) continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        assert_non_null(names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_names);
    *out = names;
    return n;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static struct sluice_config *load_ok(const char *path)
{
    struct sluice_config *cfg = NULL;
    char err[512] = "";
    int rc = config_load(path, &cfg, err, sizeof(err));
    if (rc != 0) fail_msg("%s should load, got: %s", path, err);
    assert_non_null(cfg);
    return cfg;
}

static void test_defaults(void **state)
{
    (void)state;
    struct sluice_config *cfg = NULL;
    char err[256] = "x";
    assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_null(cfg->path);
    assert_string_equal(cfg->listen.postgres, "127.0.0.1:7432");
    assert_string_equal(cfg->listen.admin, "127.0.0.1:7480");
    assert_null(cfg->tls.cert);
    assert_true(cfg->tls.require); /* closed by default */
    assert_int_equal(cfg->n_targets, 0);
    assert_int_equal(cfg->n_identities, 0);
    assert_int_equal(cfg->server.workers, 0);
    assert_int_equal(cfg->server.log_level, LOG_INFO);
    assert_int_equal(cfg->server.shutdown_timeout, 30);
    assert_int_equal(cfg->server.auth_timeout, 15);
    assert_int_equal(cfg->server.connect_timeout, 10);
    assert_int_equal(cfg->server.pool_max_lifetime, 600);
    assert_int_equal(cfg->server.max_connections, 10000);
    assert_int_equal(cfg->server.max_message_size, 1073741824u);
    assert_int_equal(cfg->approvals.max_pending_per_identity, 10);
    assert_int_equal(cfg->approvals.max_queued_writes, 10000);
    assert_null(config_find_target(cfg, "shop"));
    config_unref(cfg);
}

static void test_valid_files_load(void **state)
{
    (void)state;
    set_test_env();
    char **names;
    size_t n = list_yaml(VALID_DIR, &names);
    assert_true(n >= 4);
    for (size_t i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", VALID_DIR, names[i]);
        struct sluice_config *cfg = load_ok(path);
        assert_string_equal(cfg->path, path);
        config_unref(cfg);
    }
    free_list(names, n);
}

static void test_invalid_files_fail_exactly(void **state)
{
    (void)state;
    set_test_env();
    char **names;
    size_t n = list_yaml(INVALID_DIR, &names);
    assert_true(n >= 12);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char path[512], errpath[512], want[1024] = "", got[1024] = "";
        snprintf(path, sizeof(path), "%s/%s", INVALID_DIR, names[i]);
        snprintf(errpath, sizeof(errpath), "%s/%.*s.err", INVALID_DIR, (int)(strlen(names[i]) - 5),
                 names[i]);
        FILE *f = fopen(errpath, "r");
        if (!f) {
            print_error("%s: missing %s\n", path, errpath);
            failures++;
            continue;
        }
        if (!fgets(want, sizeof(want), f)) want[0] = '\0';
        fclose(f);
        want[strcspn(want, "\n")] = '\0';

        struct sluice_config *cfg = (struct sluice_config *)0x1;
        int rc = config_load(path, &cfg, got, sizeof(got));
        if (rc != -1 || cfg != NULL) {
            print_error("%s: loaded, expected: %s\n", path, want);
            if (rc == 0) config_unref(cfg);
            failures++;
        } else if (strchr(got, '\n') || strcmp(got, want) != 0) {
            print_error("%s:\n  want: %s\n  got:  %s\n", path, want, got);
            failures++;
        }
    }
    free_list(names, n);
    assert_int_equal(failures, 0);
}

static void test_full_values(void **state)
{
    (void)state;
    set_test_env();
    struct sluice_config *cfg = load_ok(VALID_DIR "/full.yaml");
    assert_string_equal(cfg->listen.postgres, "0.0.0.0:6432");
    assert_string_equal(cfg->listen.admin, "[::1]:9480");
    /* relative file names are relative to the config file's directory */
    assert_string_equal(cfg->tls.cert, VALID_DIR "/../secrets/server.crt");
    assert_string_equal(cfg->tls.key, VALID_DIR "/../secrets/server.key");
    assert_string_equal(cfg->tls.client_ca, VALID_DIR "/../secrets/ca.crt");
    assert_true(cfg->tls.require);

    assert_int_equal(cfg->n_targets, 2);
    const struct cfg_target *shop = config_find_target(cfg, "shop");
    assert_ptr_equal(shop, &cfg->targets[0]);
    assert_string_equal(shop->host, "db.internal");
    assert_int_equal(shop->port, 5433);
    assert_string_equal(shop->database, "shop_prod");
    assert_string_equal(shop->user, "app");
    assert_string_equal(shop->password_env, "SLUICE_TEST_SHOP_PASSWORD");
    assert_string_equal(shop->password, "shop-env-secret");
    assert_int_equal(shop->sslmode, SSLMODE_VERIFY_FULL);
    assert_string_equal(shop->sslrootcert, VALID_DIR "/../secrets/root.crt");

    const struct cfg_target *rep = config_find_target(cfg, "reports");
    assert_non_null(rep);
    assert_string_equal(rep->host, "/var/run/postgresql");
    assert_int_equal(rep->port, 5432);
    assert_string_equal(rep->database, "reports");
    assert_int_equal(rep->sslmode, SSLMODE_DISABLE);
    assert_null(rep->password_env);
    /* one trailing newline stripped */
    assert_string_equal(rep->password, "shop-file-secret");
    assert_null(config_find_target(cfg, "nope"));

    /* sections of issues 4 to 7 */
    assert_int_equal(cfg->state.driver, CFG_STATE_SQLITE);
    assert_string_equal(cfg->state.path, VALID_DIR "/sluice.db");
    assert_true(cfg->masking.enabled);
    assert_int_equal(cfg->masking.n_unmask, 1);
    assert_string_equal(cfg->masking.unmask[0], "dpo");
    assert_string_equal(cfg->masking.unmask_identities[0], "auditor-*");
    assert_int_equal(cfg->masking.n_detectors, 7);
    assert_int_equal(cfg->masking.n_custom, 2);
    assert_string_equal(cfg->masking.custom[0].pattern, "EMP-[0-9]{6}");
    assert_int_equal(cfg->masking.custom[0].form, CFG_FORM_FULL);
    assert_int_equal(cfg->masking.custom[1].validator, CFG_VALID_LUHN);
    assert_int_equal(cfg->masking.custom[1].form, CFG_FORM_DEFAULT);
    assert_int_equal(cfg->masking.n_columns, 2);
    assert_string_equal(cfg->masking.columns[0].detector, "notes");
    assert_string_equal(cfg->masking.columns[1].detector, "column");
    assert_int_equal(cfg->masking.n_exempt, 2);
    assert_int_equal(cfg->masking.form, CFG_FORM_PARTIAL);
    assert_int_equal(cfg->masking.hash_key_len, strlen("mask-key-for-tests"));
    assert_true(cfg->audit.fail_open);
    assert_string_equal(cfg->audit.jsonl, VALID_DIR "/audit.jsonl");
    assert_int_equal(cfg->audit.retention, 90 * 86400);
    assert_int_equal(cfg->audit.checkpoint, 500);
    assert_int_equal(cfg->audit.queue, 4096);
    assert_int_equal(cfg->approvals.n_approvers, 1);
    assert_int_equal(cfg->approvals.mode, CFG_MODE_WAIT);
    assert_int_equal(cfg->approvals.timeout, 600);
    assert_int_equal(cfg->approvals.grant_ttl, 86400);
    assert_int_equal(cfg->approvals.grant_max_rows, 1000);
    assert_int_equal(cfg->approvals.max_pending_per_identity, 25);
    assert_int_equal(cfg->approvals.max_queued_writes, 5000);
    assert_int_equal(cfg->approvals.n_notify, 2);
    assert_int_equal(cfg->approvals.notify[0].kind, CFG_NOTIFY_SLACK);
    assert_string_equal(cfg->approvals.notify[0].secret, "slack-signing-secret");
    assert_int_equal(cfg->approvals.notify[1].kind, CFG_NOTIFY_WEBHOOK);
    assert_string_equal(cfg->approvals.notify[1].url, "https://hooks.example.com/sluice");
    assert_true(cfg->oidc.enabled);
    assert_int_equal(cfg->oidc.n_algorithms, 2);
    assert_int_equal(cfg->oidc.leeway, 30);
    assert_false(cfg->oidc.end_sessions_at_expiry);
    assert_string_equal(cfg->oidc.name_claim, "email");
    assert_int_equal(cfg->oidc.n_require_groups, 2);
    assert_string_equal(cfg->oidc.require_groups[1], "dba");
    assert_int_equal(cfg->admin.n_groups, 1);

    assert_int_equal(cfg->n_identities, 7);
    assert_string_equal(cfg->identities[0].name, "alice@corp.com");
    assert_string_equal(cfg->identities[1].name, "bob@corp.com");
    assert_string_equal(cfg->identities[2].name, "etl");
    assert_string_equal(cfg->identities[3].name, "copilot");
    const struct cfg_identity *alice = config_find_identity(cfg, "alice@corp.com");
    assert_ptr_equal(alice, &cfg->identities[0]);
    assert_int_equal(alice->kind, IDENT_HUMAN);
    assert_false(alice->is_token);
    assert_int_equal(alice->n_groups, 2);
    assert_string_equal(alice->groups[0], "engineers");
    assert_string_equal(alice->groups[1], "dba");
    assert_memory_equal(alice->secret_hash, "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$", 44);
    const struct cfg_identity *bob = config_find_identity(cfg, "bob@corp.com");
    assert_int_equal(bob->kind, IDENT_HUMAN);
    assert_int_equal(bob->n_groups, 0);
    const struct cfg_identity *etl = config_find_identity(cfg, "etl");
    assert_true(etl->is_token);
    assert_int_equal(etl->kind, IDENT_SERVICE); /* tokens default to service */
    const struct cfg_identity *copilot = config_find_identity(cfg, "copilot");
    assert_true(copilot->is_token);
    assert_int_equal(copilot->kind, IDENT_AGENT);
    assert_int_equal(copilot->n_groups, 1);
    assert_string_equal(copilot->groups[0], "ai");
    const struct cfg_identity *billing = config_find_identity(cfg, "billing-svc");
    assert_non_null(billing);
    assert_true(billing->is_cert);
    assert_string_equal(billing->cert_cn, "billing.internal");
    assert_null(billing->cert_san);
    assert_null(billing->secret_hash);
    assert_int_equal(billing->kind, IDENT_SERVICE);
    /* with a subjectAltName and no cn, the CN is not checked */
    const struct cfg_identity *reports = config_find_identity(cfg, "reports-svc");
    assert_non_null(reports);
    assert_true(reports->is_cert);
    assert_null(reports->cert_cn);
    assert_int_equal(reports->san_type, CFG_SAN_URI);
    assert_string_equal(reports->cert_san, "spiffe://example.org/ns/prod/sa/reports");
    assert_null(reports->secret_hash);
    const struct cfg_identity *mesh = config_find_identity(cfg, "mesh-svc");
    assert_non_null(mesh);
    assert_string_equal(mesh->cert_cn, "mesh");
    assert_int_equal(mesh->san_type, CFG_SAN_DNS);
    assert_string_equal(mesh->cert_san, "Mesh.Example.org");
    assert_null(config_find_identity(cfg, "mallory"));

    assert_int_equal(cfg->server.workers, 4);
    assert_int_equal(cfg->server.log_level, LOG_DEBUG);
    assert_int_equal(cfg->server.shutdown_timeout, 120);
    assert_int_equal(cfg->server.auth_timeout, 20);
    assert_int_equal(cfg->server.connect_timeout, 5);
    assert_int_equal(cfg->server.max_connections, 500);
    assert_int_equal(cfg->server.max_message_size, 64u << 20);
    assert_int_equal(cfg->server.max_row_size, 32u << 20);
    assert_int_equal(cfg->server.pool_idle_timeout, 30);
    assert_int_equal(cfg->server.pool_max_lifetime, 900);
    assert_int_equal(cfg->server.pool_max_idle, 50);
    config_unref(cfg);
}

static void test_minimal_and_flow_values(void **state)
{
    (void)state;
    struct sluice_config *cfg = load_ok(VALID_DIR "/minimal.yaml");
    assert_int_equal(cfg->n_targets, 1);
    assert_string_equal(cfg->targets[0].name, "shop");
    assert_string_equal(cfg->targets[0].database, "shop");
    assert_int_equal(cfg->targets[0].port, 5432);
    assert_int_equal(cfg->targets[0].sslmode, SSLMODE_PREFER);
    assert_null(cfg->targets[0].password);
    assert_string_equal(cfg->listen.postgres, "127.0.0.1:7432");
    assert_int_equal(cfg->server.auth_timeout, 15);
    config_unref(cfg);

    cfg = load_ok(VALID_DIR "/flow.yaml");
    assert_int_equal(cfg->n_targets, 2);
    assert_int_equal(cfg->targets[1].port, 6000);
    assert_int_equal(cfg->targets[1].sslmode, SSLMODE_REQUIRE);
    assert_int_equal(cfg->n_identities, 1);
    assert_true(cfg->identities[0].is_token);
    assert_int_equal(cfg->server.shutdown_timeout, 3600);
    assert_int_equal(cfg->server.max_message_size, 1048576);
    assert_int_equal(cfg->server.log_level, LOG_WARN);
    config_unref(cfg);

    cfg = load_ok(VALID_DIR "/empty.yaml");
    assert_int_equal(cfg->n_targets, 0);
    assert_int_equal(cfg->server.max_connections, 10000);
    assert_int_equal(cfg->server.max_row_size, 16u << 20);
    config_unref(cfg);
}

static void test_example_loads(void **state)
{
    (void)state;
    set_test_env();
    struct sluice_config *cfg = load_ok("examples/sluice.yaml");
    assert_true(cfg->n_targets >= 1);
    assert_true(cfg->n_identities >= 1);
    assert_non_null(cfg->targets[0].password);
    config_unref(cfg);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct sluice_config *cfg = NULL;
    char err[256];
    assert_int_equal(config_load("tests/config/no-such-file.yaml", &cfg, err, sizeof(err)), -1);
    assert_null(cfg);
    assert_string_equal(
        err, "tests/config/no-such-file.yaml: error: cannot open: No such file or directory");
    /* a tiny buffer truncates, never overflows */
    char small[8];
    assert_int_equal(config_load("tests/config/no-such-file.yaml", &cfg, small, sizeof(small)), -1);
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void test_empty_env_is_error(void **state)
{
    (void)state;
    setenv("SLUICE_TEST_SHOP_PASSWORD", "", 1);
    struct sluice_config *cfg = NULL;
    char err[512];
    assert_int_equal(config_load(VALID_DIR "/full.yaml", &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "environment variable \"SLUICE_TEST_SHOP_PASSWORD\" named by "
                                "targets[0].password_env is empty"));
    set_test_env();
}

static void test_refcount(void **state)
{
    (void)state;
    struct sluice_config *cfg = load_ok(VALID_DIR "/minimal.yaml");
    assert_int_equal(cfg->refs, 1);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(cfg->refs, 3);
    config_unref(cfg);
    config_unref(cfg);
    assert_int_equal(cfg->refs, 1);
    config_unref(cfg); /* frees; ASan/valgrind catch a double free or leak */
    assert_null(config_ref(NULL));
    config_unref(NULL);
}

/* What the loader accepts, the SCRAM code (src/pg/scram.c) must parse; the sample verifiers
 * are real ones (full.yaml's alice was made from "alice-secret"). */
static void test_verifiers_parse_with_scram(void **state)
{
    (void)state;
    set_test_env();
    const char *files[] = {VALID_DIR "/full.yaml", VALID_DIR "/flow.yaml", "examples/sluice.yaml"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        struct sluice_config *cfg = load_ok(files[f]);
        for (unsigned i = 0; i < cfg->n_identities; i++) {
            struct scram_verifier v;
            if (cfg->identities[i].is_cert) continue; /* no secret */
            if (scram_verifier_parse(cfg->identities[i].secret_hash, &v) != 0)
                fail_msg("%s: verifier of %s rejected by scram_verifier_parse", files[f],
                         cfg->identities[i].name);
        }
        config_unref(cfg);
    }
    struct sluice_config *cfg = load_ok(VALID_DIR "/full.yaml");
    struct scram_verifier v;
    assert_int_equal(
        scram_verifier_parse(config_find_identity(cfg, "alice@corp.com")->secret_hash, &v), 0);
    assert_true(scram_check_secret(&v, "alice-secret", 12));
    assert_false(scram_check_secret(&v, "alice-secreT", 12));
    config_unref(cfg);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(ident_kind_name(IDENT_HUMAN), "human");
    assert_string_equal(ident_kind_name(IDENT_SERVICE), "service");
    assert_string_equal(ident_kind_name(IDENT_AGENT), "agent");
    assert_string_equal(sslmode_name(SSLMODE_DISABLE), "disable");
    assert_string_equal(sslmode_name(SSLMODE_ALLOW), "allow");
    assert_string_equal(sslmode_name(SSLMODE_PREFER), "prefer");
    assert_string_equal(sslmode_name(SSLMODE_REQUIRE), "require");
    assert_string_equal(sslmode_name(SSLMODE_VERIFY_CA), "verify-ca");
    assert_string_equal(sslmode_name(SSLMODE_VERIFY_FULL), "verify-full");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_valid_files_load),
        cmocka_unit_test(test_invalid_files_fail_exactly),
        cmocka_unit_test(test_full_values),
        cmocka_unit_test(test_minimal_and_flow_values),
        cmocka_unit_test(test_example_loads),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_empty_env_is_error),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_verifiers_parse_with_scram),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
