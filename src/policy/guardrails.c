/*
 * guardrails.c: the built-in guardrails. For one statement's facts it says which guardrails
 * fire (DROP, TRUNCATE, DELETE/UPDATE without WHERE, COPY PROGRAM/file, ALTER SYSTEM, server
 * file access, role escalation, dangerous functions, statements sluice cannot judge) and
 * words the reason and a hint. What a guardrail then does (deny, review, allow; per identity
 * kind; lifted by a rule's `override`) is policy.c's business.
 *
 * Function lists match the bare function name (what follows the last '.'), so
 * pg_catalog.pg_read_file and pg_read_file are the same.
 */
#include "policy/guardrails.h"

#include <stdio.h>
#include <string.h>

/* Server file access: read, list, write or stat files on the database server. */
static const char *const file_functions[] = {
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    NULL,
};

/* Functions that act on other sessions, the server process or replication, or reach other
 * servers (dblink*). */
static const char *const dangerous_functions[] = {
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    NULL,
};
static const char *const dangerous_prefixes[] = {"dblink", NULL};

/* Functions that run SQL given as a string, or read a table named by a value: sluice cannot
 * see what that SQL does or which table is read. */
static const char *const exec_functions[] = {
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "cursor_to_xml",
    "ts_stat",
    "ts_rewrite",
    "crosstab",
    "crosstab2",
    "crosstab3",
    "crosstab4",
    "connectby",
    NULL,
};

static const char *bare_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

static bool in_list(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0) return true;
    return false;
}

static bool has_prefix(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strncmp(name, *list, strlen(*list)) == 0) return true;
    return false;
}

/* The first function of s in list (or with a prefix in prefixes), or NULL. */
static const char *find_function(const struct sql_stmt *s, const char *const *list,
                                 const char *const *prefixes)
{
    for (unsigned i = 0; i < s->n_functions; i++) {
        const char *b = bare_name(s->functions[i]);
        if ((list && in_list(b, list)) || (prefixes && has_prefix(b, prefixes)))
            return s->functions[i];
    }
    return NULL;
}

static bool is_command(const struct sql_stmt *s, const char *cmd)
{
    return s->command && strcmp(s->command, cmd) == 0;
}

static bool is_drop(const struct sql_stmt *s)
{
    return (s->flags & SQL_F_DROP_PART) || (s->command && (strcmp(s->command, "DROP") == 0 ||
                                                           strncmp(s->command, "DROP ", 5) == 0));
}

unsigned guard_detect(const struct sql_stmt *s)
{
    unsigned hit = 0;
    if (is_drop(s)) hit |= 1u << CFG_GUARD_DROP;
    if (is_command(s, "TRUNCATE")) hit |= 1u << CFG_GUARD_TRUNCATE;
    if (s->flags & SQL_F_NO_WHERE) {
        /* The flag covers the statement and what it holds (a CTE, EXPLAIN ANALYZE, PREPARE):
         * when the outer command is neither, both guardrails apply. */
        if (!is_command(s, "UPDATE")) hit |= 1u << CFG_GUARD_DELETE_WITHOUT_WHERE;
        if (!is_command(s, "DELETE")) hit |= 1u << CFG_GUARD_UPDATE_WITHOUT_WHERE;
    }
    if (s->flags & SQL_F_COPY_PROGRAM) hit |= 1u << CFG_GUARD_COPY_PROGRAM;
    if (s->flags & SQL_F_COPY_FILE) hit |= 1u << CFG_GUARD_COPY_FILE;
    if (s->flags & SQL_F_ALTER_SYSTEM) hit |= 1u << CFG_GUARD_ALTER_SYSTEM;
    if (find_function(s, file_functions, NULL)) hit |= 1u << CFG_GUARD_FILE_ACCESS;
    if (s->flags & (SQL_F_ROLE_CHANGE | SQL_F_ROLE_PRIVILEGE))
        hit |= 1u << CFG_GUARD_ROLE_ESCALATION;
    if (find_function(s, dangerous_functions, dangerous_prefixes))
        hit |= 1u << CFG_GUARD_DANGEROUS_FUNCTIONS;
    if ((s->flags &
         (SQL_F_UNJUDGEABLE | SQL_F_PARSE_ERROR | SQL_F_TEXT_SETTING | SQL_F_TEXT_DOUBT)) ||
        find_function(s, exec_functions, NULL))
        hit |= 1u << CFG_GUARD_UNJUDGEABLE;
    return hit;
}

/* Append src to buf (NUL-terminated, size len), replacing control characters. */
static void append(char *buf, size_t len, const char *src)
{
    size_t n = strlen(buf);
    for (; *src && n + 1 < len; src++)
        buf[n++] = ((unsigned char)*src < 0x20 || *src == 0x7f) ? '?' : *src;
    buf[n] = '\0';
}

void guard_join_names(char *const *names, unsigned n, char *buf, size_t len)
{
    if (!len) return;
    buf[0] = '\0';
    for (unsigned i = 0; i < n && i < 3; i++) {
        if (i) append(buf, len, ", ");
        append(buf, len, names[i]);
    }
    if (n > 3) append(buf, len, ", ...");
}

/* " on a, b" for the tables written (else read), or "". */
static void on_tables(const struct sql_stmt *s, char *buf, size_t len)
{
    char names[160];
    buf[0] = '\0';
    if (s->n_written)
        guard_join_names(s->tables_written, s->n_written, names, sizeof(names));
    else if (s->n_read)
        guard_join_names(s->tables_read, s->n_read, names, sizeof(names));
    else
        return;
    snprintf(buf, len, " on %s", names);
}

void guard_reason(enum cfg_guardrail g, const struct sql_stmt *s, char *buf, size_t len)
{
    char on[180], fn[96] = "";
    const char *cmd = s->command ? s->command : "UNKNOWN";
    on_tables(s, on, sizeof(on));
    const char *what = s->flags & SQL_F_TAUTOLOGY ? "with an always-true WHERE" : "without WHERE";
    switch (g) {
    case CFG_GUARD_DROP:
        if (s->flags & SQL_F_DROP_PART && on[0])
            snprintf(buf, len, "%s dropping a column or rewriting its values%s", cmd, on);
        else if (on[0])
            snprintf(buf, len, "%s of%s", cmd, on + 3); /* " on x" -> " x" */
        else
            snprintf(buf, len, "%s statement", cmd);
        break;
    case CFG_GUARD_TRUNCATE:
        snprintf(buf, len, "TRUNCATE%s", on);
        break;
    case CFG_GUARD_DELETE_WITHOUT_WHERE:
    case CFG_GUARD_UPDATE_WITHOUT_WHERE:
        if (is_command(s, "DELETE") || is_command(s, "UPDATE"))
            snprintf(buf, len, "%s %s%s", cmd, what, on);
        else
            snprintf(buf, len, "UPDATE or DELETE %s inside %s%s", what, cmd, on);
        break;
    case CFG_GUARD_COPY_PROGRAM:
        snprintf(buf, len, "COPY to or from a program on the database server");
        break;
    case CFG_GUARD_COPY_FILE:
        snprintf(buf, len, "COPY to or from a file on the database server");
        break;
    case CFG_GUARD_ALTER_SYSTEM:
        snprintf(buf, len, "ALTER SYSTEM changes the server configuration");
        break;
    case CFG_GUARD_FILE_ACCESS:
        append(fn, sizeof(fn), find_function(s, file_functions, NULL));
        snprintf(buf, len, "server file access with %s()", fn);
        break;
    case CFG_GUARD_ROLE_ESCALATION:
        if (s->flags & SQL_F_ROLE_CHANGE)
            snprintf(buf, len, "%s changes the session's role", cmd);
        else
            snprintf(buf, len,
                     "%s grants role privileges (SUPERUSER, BYPASSRLS, REPLICATION, CREATEROLE "
                     "or role membership)",
                     cmd);
        break;
    case CFG_GUARD_DANGEROUS_FUNCTIONS:
        append(fn, sizeof(fn), find_function(s, dangerous_functions, dangerous_prefixes));
        snprintf(buf, len, "dangerous function %s()", fn);
        break;
    case CFG_GUARD_UNJUDGEABLE:
        if (s->flags & SQL_F_PARSE_ERROR) {
            snprintf(buf, len, "the statement does not parse, so sluice cannot judge it");
        } else if (s->flags & SQL_F_TEXT_DOUBT) {
            snprintf(buf, len,
                     "the session reads statement text differently from PostgreSQL's defaults "
                     "(standard_conforming_strings off, or a client encoding such as SJIS), so "
                     "sluice cannot judge it");
        } else if (s->flags & SQL_F_TEXT_SETTING) {
            snprintf(buf, len,
                     "%s changes how the server reads statement text "
                     "(standard_conforming_strings, client_encoding), which sluice reads only "
                     "as PostgreSQL's defaults do",
                     cmd);
        } else if (find_function(s, exec_functions, NULL)) {
            append(fn, sizeof(fn), find_function(s, exec_functions, NULL));
            snprintf(buf, len, "%s() runs SQL that sluice cannot see", fn);
        } else {
            snprintf(buf, len, "%s runs code that sluice cannot judge", cmd);
        }
        break;
    case CFG_GUARD_COUNT:
        snprintf(buf, len, "%s", cmd);
        break;
    }
}

const char *guard_hint(enum cfg_guardrail g, const struct sql_stmt *s)
{
    switch (g) {
    case CFG_GUARD_DROP:
        return "dropping objects is reserved to administrators";
    case CFG_GUARD_TRUNCATE:
        return "use DELETE with a WHERE clause, or ask an administrator";
    case CFG_GUARD_DELETE_WITHOUT_WHERE:
    case CFG_GUARD_UPDATE_WITHOUT_WHERE:
        return s->flags & SQL_F_TAUTOLOGY ? "add a WHERE clause that selects rows"
                                          : "add a WHERE clause";
    case CFG_GUARD_COPY_PROGRAM:
    case CFG_GUARD_COPY_FILE:
        return "use COPY ... TO STDOUT or FROM STDIN (psql \\copy) instead";
    case CFG_GUARD_ALTER_SYSTEM:
        return "server settings are changed by administrators";
    case CFG_GUARD_FILE_ACCESS:
        return "server files are not reachable through sluice";
    case CFG_GUARD_ROLE_ESCALATION:
        return "connect as an identity that has the privileges you need";
    case CFG_GUARD_DANGEROUS_FUNCTIONS:
        return "this function is reserved to administrators";
    case CFG_GUARD_UNJUDGEABLE:
        if (s->flags & (SQL_F_TEXT_SETTING | SQL_F_TEXT_DOUBT))
            return "keep standard_conforming_strings on and use a client encoding such as UTF8";
        return s->flags & SQL_F_PARSE_ERROR ? "check the SQL syntax"
                                            : "send the statements themselves as plain SQL";
    case CFG_GUARD_COUNT:
        break;
    }
    return "";
}
