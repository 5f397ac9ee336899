/*
 * cli.c: `sluice approvals ...`, deciding requests from a shell on the sluice host.
 *
 *   sluice approvals list [--state pending|approved|denied|expired|cancelled|all] [--json]
 *   sluice approvals approve ID [--as NAME] [--scope identity|group[:NAME]] [--ttl 1h]
 *                               [--uses N] [--rows N] [--reason TEXT]
 *   sluice approvals deny ID [--as NAME] [--reason TEXT]
 *   sluice approvals grants [--all] [--json]
 *   sluice approvals revoke GRANT_ID [--as NAME]
 * with [-c sluice.yaml] [--db FILE] anywhere. The CLI opens the state file directly (no
 * threads, no notifications); the running server sees its decisions within a fraction of a
 * second. Whoever can write the state file is trusted as an approver; the approver's name is
 * "cli:$USER" unless --as names one. Self-approval is still refused.
 *
 * Exit status: 0 done, 1 refused or failed, 2 usage or config error.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "approve/approve.h"
#include "core/buf.h"
#include "core/cli.h"

/* The usage on stderr after msg (a usage error: 2), or on stdout when msg is NULL (--help). */
static int usage(const char *msg)
{
    if (msg) fprintf(stderr, "sluice approvals: %s\n", msg);
    fprintf(msg ? stderr : stdout,
            "usage: sluice approvals [-c FILE] [--db FILE] COMMAND\n"
            "  list [--state pending|approved|denied|expired|cancelled|all] [--json]\n"
            "  approve ID [--as NAME] [--scope identity|group[:NAME]] [--ttl 1h] [--uses N]"
            " [--rows N] [--reason TEXT]\n"
            "  deny ID [--as NAME] [--reason TEXT]\n"
            "  grants [--all] [--json]\n"
            "  revoke GRANT_ID [--as NAME]\n");
    return 2;
}

/* "90", "90s", "30m", "1h", "2d": seconds; -1 when malformed. */
static long long parse_duration(const char *s)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return -1;
    long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end) return -1;
    return v * mul;
}

static long long parse_count(const char *s)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    return end == s || *end || v <= 0 ? -1 : v;
}

static const char *jstr(const cJSON *o, const char *key)
{
    char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    return s ? str_make_printable(s) : "-"; /* (the tree is ours) */
}

static void print_requests(const char *json)
{
    cJSON *arr = cJSON_Parse(json);
    int n = cJSON_GetArraySize(arr);
    if (n == 0)
        printf("no approval requests\n");
    else
        printf("%-16s %-9s %-24s %-12s %-20s %s\n", "ID", "STATE", "IDENTITY", "TARGET", "EXPIRES",
               "STATEMENT");
    for (int i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        const char *stmt = jstr(o, "statement");
        printf("%-16s %-9s %-24s %-12s %-20s %.60s%s\n", jstr(o, "id"), jstr(o, "state"),
               jstr(o, "identity"), jstr(o, "target"), jstr(o, "expires_at"), stmt,
               strlen(stmt) > 60 ? "..." : "");
        const char *approver = jstr(o, "approver");
        if (strcmp(approver, "-") != 0)
            printf("%-16s by %s%s%s\n", "", approver,
                   strcmp(jstr(o, "grant_id"), "-") ? ", grant " : "",
                   strcmp(jstr(o, "grant_id"), "-") ? jstr(o, "grant_id") : "");
    }
    cJSON_Delete(arr);
}

static void print_grants(const char *json)
{
    cJSON *arr = cJSON_Parse(json);
    int n = cJSON_GetArraySize(arr);
    if (n == 0)
        printf("no grants\n");
    else
        printf("%-16s %-9s %-28s %-12s %-16s %-20s %5s %8s %s\n", "ID", "STATUS", "FOR", "TARGET",
               "FINGERPRINT", "EXPIRES", "USES", "MAX_ROWS", "APPROVER");
    for (int i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        char who[300];
        bool group = !strcmp(jstr(o, "scope"), "group");
        snprintf(who, sizeof who, "%s%s", group ? "group:" : "",
                 group ? jstr(o, "group") : jstr(o, "identity"));
        printf("%-16s %-9s %-28s %-12s %-16.16s %-20s %5.0f %8.0f %s\n", jstr(o, "id"),
               jstr(o, "status"), who, jstr(o, "target"), jstr(o, "fingerprint"),
               jstr(o, "expires_at"),
               cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "uses_left")),
               cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "max_rows")),
               jstr(o, "approver"));
    }
    cJSON_Delete(arr);
}

int approvals_cli_main(int argc, char **argv)
{
    const char *config = NULL, *db = NULL, *cmd = NULL, *id = NULL, *as = NULL, *state = "pending";
    const char *scope_s = NULL, *reason = NULL;
    long long ttl = 0, uses = 0, rows = 0;
    bool json = false, all = false;
    if (cli_asks_help(argc, argv, 1)) {
        usage(NULL);
        return 0;
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE                                                                                 \
    do {                                                                                           \
        if (!v) return usage("missing value after an option");                                     \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            NEED_VALUE;
            config = v;
        } else if (!strcmp(a, "--db")) {
            NEED_VALUE;
            db = v;
        } else if (!strcmp(a, "--state")) {
            NEED_VALUE;
            state = v;
        } else if (!strcmp(a, "--as")) {
            NEED_VALUE;
            as = v;
        } else if (!strcmp(a, "--scope")) {
            NEED_VALUE;
            scope_s = v;
        } else if (!strcmp(a, "--reason")) {
            NEED_VALUE;
            reason = v;
        } else if (!strcmp(a, "--ttl")) {
            NEED_VALUE;
            if ((ttl = parse_duration(v)) < 0) return usage("--ttl takes a duration like 1h");
        } else if (!strcmp(a, "--uses")) {
            NEED_VALUE;
            if ((uses = parse_count(v)) < 0 || uses > 1000000)
                return usage("--uses takes a positive number");
        } else if (!strcmp(a, "--rows")) {
            NEED_VALUE;
            if ((rows = parse_count(v)) < 0) return usage("--rows takes a positive number");
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else if (a[0] == '-') {
            return usage("unknown option");
        } else if (!cmd) {
            cmd = a;
        } else if (!id) {
            id = a;
        } else {
            return usage("too many arguments");
        }
#undef NEED_VALUE
    }
    if (!cmd) return usage("no command");
    bool needs_id = !strcmp(cmd, "approve") || !strcmp(cmd, "deny") || !strcmp(cmd, "revoke");
    bool known = needs_id || !strcmp(cmd, "list") || !strcmp(cmd, "grants");
    if (!known) return usage("unknown command");
    if (needs_id && !id) return usage("missing the request or grant id");
    if (!needs_id && id) return usage("too many arguments");
    if (!strcmp(cmd, "list") && strcmp(state, "all") != 0 && approve_state_from_name(state) < 0)
        return usage("--state takes pending, approved, denied, expired, cancelled or all");
    enum approve_scope scope = APPROVE_SCOPE_IDENTITY;
    const char *group = NULL;
    if (scope_s) {
        if (!strcmp(scope_s, "identity"))
            scope = APPROVE_SCOPE_IDENTITY;
        else if (!strcmp(scope_s, "group"))
            scope = APPROVE_SCOPE_GROUP;
        else if (!strncmp(scope_s, "group:", 6) && scope_s[6])
            scope = APPROVE_SCOPE_GROUP, group = scope_s + 6;
        else
            return usage("--scope takes identity, group or group:NAME");
    }

    struct sluice_config *cfg = NULL;
    char err[512];
    if (config_load_ex(config, CONFIG_NO_SECRETS, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (db) {
        free(cfg->state.path);
        cfg->state.path = xstrdup(db);
        cfg->state.driver = CFG_STATE_SQLITE;
    }
    if (approve_open(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "sluice approvals: %s\n", err);
        config_unref(cfg);
        return 1;
    }

    char approver[300];
    if (as) {
        snprintf(approver, sizeof approver, "%s", as);
    } else {
        const char *user = getenv("SUDO_USER");
        if (!user || !*user) {
            struct passwd *pw = getpwuid(getuid());
            user = pw ? pw->pw_name : getenv("USER");
        }
        snprintf(approver, sizeof approver, "cli:%s", user && *user ? user : "unknown");
    }

    int rc = 0;
    if (!strcmp(cmd, "list") || !strcmp(cmd, "grants")) {
        char *s = !strcmp(cmd, "list") ? approve_list_json(state) : approve_grants_json_all(all);
        if (!s) {
            fprintf(stderr, "sluice approvals: cannot read the state file\n");
            rc = 1;
        } else {
            if (json)
                printf("%s\n", s);
            else if (!strcmp(cmd, "list"))
                print_requests(s);
            else
                print_grants(s);
            free(s);
        }
    } else if (!strcmp(cmd, "approve") || !strcmp(cmd, "deny")) {
        struct approve_bounds b = {
            .ttl = (uint64_t)ttl, .max_uses = (unsigned)uses, .max_rows = (uint64_t)rows};
        struct approve_decision d = {
            .approve = !strcmp(cmd, "approve"),
            .approver = approver,
            .trusted = true,
            .bounds = &b,
            .scope = scope,
            .group = group,
            .reason = reason,
        };
        char grant[APPROVE_ID_LEN];
        if (approve_decide_ex(id, &d, grant, err, sizeof err) < 0) {
            fprintf(stderr, "sluice approvals: %s\n", err);
            rc = 1;
        } else if (d.approve) {
            printf("approved %s by %s: grant %s\n", id, approver, grant);
        } else {
            printf("denied %s by %s\n", id, approver);
        }
    } else { /* revoke */
        if (approve_grant_revoke(id, approver) < 0) {
            fprintf(stderr, "sluice approvals: no grant %s (or already revoked)\n", id);
            rc = 1;
        } else {
            printf("revoked %s\n", id);
        }
    }
    approve_stop();
    config_unref(cfg);
    return rc;
}
