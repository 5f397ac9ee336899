/*
 * sql_int.h: internals shared by the files of src/sql/ (not a public interface: other modules
 * include sql/sql.h only).
 *
 * sql_const.c evaluates WHERE expressions that are built from constants only (WHERE true,
 * 1=1, 'a'='a', NOT false, 2 BETWEEN 1 AND 3, ...) with SQL's three-valued logic, so that a
 * tautology can be told from a real filter. It never guesses: whatever it cannot evaluate
 * exactly is SQL_TV_UNKNOWN.
 *
 * sql_guard.c decides, before the parser runs, whether a very long string could build a tree
 * deep enough to exhaust the stack inside libpg_query (its JSON output and fingerprint recurse
 * once per tree level; `SELECT 1+1+...+1` with 100,000 terms crashes it on an 8 MiB stack).
 */
#ifndef SLUICE_SQL_SQL_INT_H
#define SLUICE_SQL_SQL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sql/sql.h"

enum sql_tv {
    SQL_TV_UNKNOWN, /* not a constant expression we can evaluate */
    SQL_TV_FALSE,
    SQL_TV_TRUE,
    SQL_TV_NULL,
};

/* Truth value of a parse-tree expression (a cJSON node such as {"A_Const": ...}) when used
 * as a WHERE clause. src is the whole query text (A_Const locations index into it). Two
 * references to the same column compared with =, <=, >= or IS NOT DISTINCT FROM count as
 * true ("tautology-like": WHERE id = id drops only rows where id is NULL). */
enum sql_tv sql_const_truth(const cJSON *expr, const char *src);

/* The tokens of sql from libpg_query's scanner, in order: fn gets each one's byte range,
 * token number (the grammar's; a single-character token is its ASCII code) and keyword kind
 * (0: not a keyword). 0, or SQL_SCAN_ERROR when the scanner refused the text (before any
 * token was given), or SQL_SCAN_UNDECODED when its result could not be read (some tokens may
 * have been given). */
#define SQL_SCAN_ERROR (-1)
#define SQL_SCAN_UNDECODED (-2)
typedef void (*sql_token_fn)(void *ctx, uint64_t start, uint64_t end, uint64_t token,
                             uint64_t kwkind);
int sql_scan(const char *sql, sql_token_fn fn, void *ctx);

/* Strings of at least this many bytes are checked by sql_guard_too_deep() before parsing
 * (shorter ones cannot nest deep enough to matter). */
#define SQL_GUARD_MIN_LEN 2048u
/* Largest depth estimate let through. Trees this deep would be refused anyway (cJSON stops at
 * 1000 levels of JSON, about 500 levels of SQL), so the limit costs no judgeable statement;
 * it keeps libpg_query's recursion within about 1 MiB of stack. */
#define SQL_GUARD_MAX_DEPTH 2000u

/* True when sql (len bytes) might parse into a tree deeper than SQL_GUARD_MAX_DEPTH; *depth
 * gets the estimate (an upper bound: parentheses, operators, casts and keywords such as UNION,
 * JOIN, IS each count a level; commas, AND and OR separate siblings). Uses libpg_query's own
 * scanner, which does not recurse. */
int sql_guard_too_deep(const char *sql, size_t len, unsigned *depth);

/* Reading libpg_query's JSON tree (shared by sql.c, sql_const.c and sql_copy.c). */
static inline const char *sql_str_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The single {"Type": body} pair of a wrapped node; NULL when n is not such an object. */
static inline const cJSON *sql_node_body(const cJSON *n, const char **type)
{
    if (!cJSON_IsObject(n) || !n->child || !n->child->string) return NULL;
    if (type) *type = n->child->string;
    return n->child;
}

/* The sval of a {"String": {"sval": ...}} node ("" for an empty one); NULL for another node. */
static inline const char *sql_string_node(const cJSON *n)
{
    const char *t;
    const cJSON *b = sql_node_body(n, &t);
    if (!b || strcmp(t, "String")) return NULL;
    const char *s = sql_str_field(b, "sval");
    return s ? s : "";
}

/* The description of a COPY TO STDOUT from its CopyStmt body (sql_copy.c); never NULL. */
struct sql_copy_out *sql_copy_out_make(const cJSON *copy);
void sql_copy_out_free(struct sql_copy_out *c);

#endif
