/*
 * fuzz_config.c: libFuzzer target for the config loader (src/core/config*.c: libyaml position
 * pass, libcyaml mapping, validation, secret resolution).
 *
 * config_load() reads a file, so each input is written to one fixed file per process,
 * /tmp/sluice-fuzz-config-<pid>/conf/sluice.yaml (overwritten per run, removed at exit), and
 * loaded from there. Beside it, ../secrets/shop.password exists and SLUICE_TEST_SHOP_PASSWORD is
 * set, so tests/config/valid/full.yaml loads completely and the success paths are reached.
 * LeakSanitizer (on in run.sh) catches anything an error path forgets to free.
 *
 * Invariants: exactly one of success (a config with one reference, an empty error, every
 * required field set, every identity's verifier accepted by src/pg/scram.c too) or failure
 * (no config, one error line "FILE...: error: ..." naming the file).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "pg/scram.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,    \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char dir[64], confdir[80], secretdir[80], secret[128], path[128];

static void cleanup(void)
{
    unlink(path);
    unlink(secret);
    rmdir(confdir);
    rmdir(secretdir);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/sluice-fuzz-config-%ld", (long)getpid());
    snprintf(confdir, sizeof confdir, "%s/conf", dir);
    snprintf(secretdir, sizeof secretdir, "%s/secrets", dir);
    snprintf(secret, sizeof secret, "%s/shop.password", secretdir);
    snprintf(path, sizeof path, "%s/sluice.yaml", confdir);
    CHECK(mkdir(dir, 0700) == 0 || access(dir, W_OK) == 0);
    CHECK(mkdir(confdir, 0700) == 0 || access(confdir, W_OK) == 0);
    CHECK(mkdir(secretdir, 0700) == 0 || access(secretdir, W_OK) == 0);
    FILE *f = fopen(secret, "w");
    CHECK(f != NULL);
    fputs("fuzz-upstream-password\n", f);
    CHECK(fclose(f) == 0);
    setenv("SLUICE_TEST_SHOP_PASSWORD", "fuzz-env-password", 1);
    atexit(cleanup);
    return 0;
}

static void check_ok(const struct sluice_config *cfg, const char *err)
{
    CHECK(cfg != NULL && err[0] == '\0');
    CHECK(cfg->refs == 1);
    CHECK(cfg->path && strcmp(cfg->path, path) == 0);
    CHECK(cfg->listen.postgres && cfg->listen.admin);
    CHECK((cfg->tls.cert == NULL) == (cfg->tls.key == NULL));
    CHECK(!cfg->tls.client_ca || cfg->tls.cert);
    CHECK(cfg->n_targets == 0 || cfg->targets);
    for (unsigned i = 0; i < cfg->n_targets; i++) {
        const struct cfg_target *t = &cfg->targets[i];
        CHECK(t->name && t->name[0] && t->host && t->host[0] && t->user && t->user[0]);
        CHECK(t->database && t->database[0] && t->port != 0);
        CHECK(!(t->password_env && t->password_file));
        CHECK(!t->password_env || (t->password && t->password[0]));
        CHECK(!t->password_file || (t->password && t->password[0]));
        CHECK(t->sslmode <= SSLMODE_VERIFY_FULL);
        CHECK(config_find_target(cfg, t->name) == &cfg->targets[i]); /* names are unique */
    }
    CHECK(cfg->n_identities == 0 || cfg->identities);
    for (unsigned i = 0; i < cfg->n_identities; i++) {
        const struct cfg_identity *id = &cfg->identities[i];
        CHECK(id->name && id->name[0] && id->secret_hash);
        CHECK(id->kind <= IDENT_AGENT);
        CHECK(id->n_groups == 0 || id->groups);
        for (unsigned g = 0; g < id->n_groups; g++)
            CHECK(id->groups[g] && id->groups[g][0]);
        CHECK(config_find_identity(cfg, id->name) == id);
        /* what the loader accepts, the SCRAM server must be able to use */
        struct scram_verifier v;
        CHECK(scram_verifier_parse(id->secret_hash, &v) == 0);
    }
    CHECK(cfg->server.workers <= 1024);
    CHECK(cfg->server.max_connections > 0 && cfg->server.max_message_size >= 8192);
}

static void check_err(const char *err)
{
    size_t n = strlen(path);
    CHECK(strncmp(err, path, n) == 0 && err[n] == ':');
    CHECK(strstr(err, ": error: ") != NULL);
    for (const char *c = err; *c; c++)
        CHECK((unsigned char)*c >= 0x20 && *c != 0x7f); /* one line */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);

    struct sluice_config *cfg = (struct sluice_config *)1;
    char err[1024];
    memset(err, 'x', sizeof err);
    int rc = config_load(path, &cfg, err, sizeof err);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (rc == 0) {
        check_ok(cfg, err);
        CHECK(config_ref(cfg) == cfg && cfg->refs == 2);
        config_unref(cfg);
        config_unref(cfg);
    } else {
        CHECK(rc == -1 && cfg == NULL);
        check_err(err);
    }
    return 0;
}
