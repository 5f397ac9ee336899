/*
 * main.c: the sluice command line. Dispatches subcommands and nothing else; exit status 0
 * on success, 1 on a runtime failure, 2 on a usage or configuration error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approve/approve.h"
#include "audit/audit.h"
#include "core/cli.h"
#include "core/config.h"
#include "ident/ident.h"
#include "ident/oidc.h"
#include "mask/mask.h"
#include "net/net.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

#define SLUICE_VERSION "0.1.0"

static void usage_print(FILE *f)
{
    fputs("usage:\n"
          "  sluice serve [-c sluice.yaml]   run the proxy in the foreground\n"
          "  sluice check -c sluice.yaml     validate a configuration\n"
          "  sluice explain [-c sluice.yaml] --as IDENTITY [--target NAME] [--kind KIND]\n"
          "                 [--group GROUP]... \"SQL\"|-\n"
          "                                  judge SQL without a database (exit 0 allow,\n"
          "                                  3 deny, 4 review)\n"
          "  sluice audit {tail|search|export|verify} [-c sluice.yaml] ...\n"
          "                                  read and verify the audit trail\n"
          "  sluice approvals {list|approve ID|deny ID|grants|revoke ID} [-c sluice.yaml]\n"
          "                                  act on approval requests and grants\n"
          "  sluice hash-token               read a secret on stdin, print its verifier\n"
          "  sluice version\n",
          f);
}

static int usage(void)
{
    usage_print(stderr);
    return 2;
}

/* -c FILE from argv[2..]; NULL when absent. Sets *bad on anything else. */
static const char *config_arg(int argc, char **argv, int *bad)
{
    const char *path = NULL;
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else
            *bad = 1;
    }
    return path;
}

static int cmd_check(const char *path)
{
    char err[1024];
    struct sluice_config *cfg;
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int rc = 0;
    if (cfg->tls.cert) {
        SSL_CTX *ctx = tls_server_ctx(&cfg->tls, err, sizeof err);
        if (!ctx) {
            fprintf(stderr, "%s: error: tls: %s\n", path, err);
            rc = 2;
        }
        SSL_CTX_free(ctx);
    }
    if (rc == 0 && cfg->masking.enabled) {
        struct mask_db *db = mask_db_build(&cfg->masking, err, sizeof err);
        if (!db) {
            fprintf(stderr, "%s: error: masking: %s\n", path, err);
            rc = 2;
        }
        mask_db_free(db);
        mask_thread_release();
    }
    if (rc == 0 && cfg->oidc.enabled) {
        struct oidc_verifier *v = oidc_verifier_new(&cfg->oidc, err, sizeof err);
        if (!v) {
            fprintf(stderr, "%s: error: identities.oidc: %s\n", path, err);
            rc = 2;
        }
        if (v) oidc_verifier_free(v);
    }
    for (unsigned i = 0; i < cfg->n_targets && rc == 0; i++) {
        if (cfg->targets[i].sslmode == SSLMODE_DISABLE) continue;
        SSL_CTX *ctx = tls_client_ctx(&cfg->targets[i], err, sizeof err);
        if (!ctx) {
            fprintf(stderr, "%s: error: targets[%u] (%s): %s\n", path, i, cfg->targets[i].name,
                    err);
            rc = 2;
        }
        SSL_CTX_free(ctx);
    }
    if (rc == 0) {
        struct policy *pol = policy_compile(cfg, err, sizeof err);
        if (!pol) {
            fprintf(stderr, "%s: error: policy: %s\n", path, err);
            rc = 2;
        }
        policy_free(pol);
    }
    if (rc == 0)
        printf("%s: ok (%u targets, %u identities, %u rules)\n", path, cfg->n_targets,
               cfg->n_identities, cfg->policy.n_rules);
    config_unref(cfg);
    return rc;
}

/* sluice explain: arguments only; src/policy/explain.c does the work. "-" reads the SQL from
 * stdin. */
static int cmd_explain(int argc, char **argv)
{
    static char sql_buf[1 << 20];
    const char *groups[64];
    struct policy_explain_args a = {.groups = groups};
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        bool has_arg = i + 1 < argc;
        if ((strcmp(o, "-c") == 0 || strcmp(o, "--config") == 0) && has_arg)
            a.config_path = argv[++i];
        else if (strcmp(o, "--as") == 0 && has_arg)
            a.as = argv[++i];
        else if (strcmp(o, "--target") == 0 && has_arg)
            a.target = argv[++i];
        else if (strcmp(o, "--kind") == 0 && has_arg)
            a.kind = argv[++i];
        else if (strcmp(o, "--group") == 0 && has_arg && a.n_groups < 64)
            groups[a.n_groups++] = argv[++i];
        else if ((o[0] != '-' || strcmp(o, "-") == 0) && !a.sql)
            a.sql = o;
        else
            return usage();
    }
    if (!a.as || !a.sql) return usage();
    if (strcmp(a.sql, "-") == 0) {
        size_t n = fread(sql_buf, 1, sizeof sql_buf - 1, stdin);
        if (n == sizeof sql_buf - 1) {
            fputs("sluice explain: SQL on stdin is larger than 1 MiB\n", stderr);
            return 2;
        }
        sql_buf[n] = 0;
        a.sql = sql_buf;
    }
    return policy_explain(&a, stdout, stderr);
}

static int cmd_hash_token(void)
{
    char secret[4096];
    size_t n = fread(secret, 1, sizeof secret - 1, stdin);
    if (n == sizeof secret - 1) {
        fputs("sluice: secret too long (at most 4095 bytes)\n", stderr);
        return 2;
    }
    while (n && (secret[n - 1] == '\n' || secret[n - 1] == '\r'))
        n--;
    secret[n] = 0;
    if (n == 0 || strlen(secret) != n) {
        fputs("sluice: give a non-empty secret on stdin\n", stderr);
        return 2;
    }
    char out[512];
    int rc = ident_hash_secret(secret, out, sizeof out);
    explicit_bzero(secret, sizeof secret);
    if (rc != 0) {
        fputs("sluice: hashing failed\n", stderr);
        return 1;
    }
    printf("%s\n", out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    /* audit and approvals print usages of their own */
    if (strcmp(cmd, "audit") && strcmp(cmd, "approvals") &&
        (!strcmp(cmd, "help") || cli_asks_help(argc, argv, 1))) {
        usage_print(stdout);
        return 0;
    }
    int bad = 0;
    if (strcmp(cmd, "serve") == 0) {
        const char *path = config_arg(argc, argv, &bad);
        return bad ? usage() : server_run(path);
    }
    if (strcmp(cmd, "check") == 0) {
        const char *path = config_arg(argc, argv, &bad);
        if (bad || !path) return usage();
        return cmd_check(path);
    }
    if (strcmp(cmd, "hash-token") == 0) return argc == 2 ? cmd_hash_token() : usage();
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "explain") == 0) return cmd_explain(argc, argv);
    if (strcmp(cmd, "audit") == 0) return audit_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "approvals") == 0) return approvals_cli_main(argc - 1, argv + 1);
    return usage();
}
