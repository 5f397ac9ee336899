/*
 * sql.c: statement facts from the real PostgreSQL parser (libpg_query, PostgreSQL 15).
 *
 * pg_query_parse() gives the raw parse tree as JSON; cJSON reads it and a walker collects, for
 * each RawStmt, the command tag, the class, the tables read and written, the functions called
 * and the flags the guardrails look at. The walk is generic (every object of the tree is
 * visited, so a table or a function call cannot hide in a corner the walker does not know) and
 * specific only where meaning depends on position: DML targets are written, CTE names are not
 * tables inside their scope, UPDATE/DELETE need a WHERE that is not a tautology (sql_const.c).
 *
 * Wrappers take the facts of what they wrap: EXPLAIN ANALYZE x and PREPARE p AS x report x's
 * command and class (EXPLAIN ANALYZE also sets SQL_F_EXPLAIN_ANALYZE); plain EXPLAIN is a read
 * of the tables x would touch. SELECT ... INTO and CREATE TABLE AS are CREATE / ddl, writing the
 * new table and reading the query's. A read statement that writes a table anyway (a DML CTE,
 * COPY (DELETE ... RETURNING) TO) becomes a write.
 *
 * Functions are FuncCall names, plus field names that PostgreSQL may read as a call in
 * functional notation (`('/etc/passwd'::text).pg_read_file` calls pg_read_file).
 *
 * Anything the walker cannot see through is flagged SQL_F_UNJUDGEABLE: DO, CALL, CREATE
 * FUNCTION/PROCEDURE, set_config() with a computed name, statement kinds it does not know,
 * trees too deep for cJSON (over 1000 levels) and strings that could nest deep enough to
 * overflow the stack inside libpg_query (sql_guard.c; these come back as parse errors).
 *
 * What is left to others: the parse cache, policy, and what EXECUTE of a prepared statement
 * runs (the session judged it at PREPARE/Parse time).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <pg_query.h>

#include "core/buf.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

/* Deeper than cJSON can ever deliver (1000): a safety net for the walker's own recursion. */
#define WALK_MAX_DEPTH 1200

/* ---- string sets ---- */

struct strlist {
    char **v;
    unsigned n, cap;
};

static void strlist_add_take(struct strlist *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static void strlist_clear(struct strlist *l)
{
    for (unsigned i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort, drop duplicates, and hand the array over (NULL when empty). */
static char **strlist_finish(struct strlist *l, unsigned *n)
{
    if (l->n == 0) {
        strlist_clear(l);
        *n = 0;
        return NULL;
    }
    qsort(l->v, l->n, sizeof *l->v, cmp_str);
    unsigned k = 0;
    for (unsigned i = 0; i < l->n; i++) {
        if (k && strcmp(l->v[k - 1], l->v[i]) == 0)
            free(l->v[i]);
        else
            l->v[k++] = l->v[i];
    }
    char **out = l->v;
    *n = k;
    memset(l, 0, sizeof *l);
    return out;
}

/* ---- the walker ---- */

struct walk {
    const char *src;
    struct strlist read, written, funcs;
    unsigned flags;
    const char *savepoint; /* of the statement being walked (a pointer into the cJSON tree) */
    const char *prepared;  /* PREPARE, DEALLOCATE: the statement name (into the tree) */
    bool prepared_all;     /* DEALLOCATE ALL, DISCARD ALL */
    const char *cursor;    /* DECLARE, CLOSE: the cursor's name (into the tree) */
    bool cursor_all;       /* CLOSE ALL, DISCARD ALL */
    const cJSON *copy_out; /* COPY ... TO STDOUT: its CopyStmt body */
    bool chain;            /* ... and its AND CHAIN */
    /* CTE names in scope (pointers into the cJSON tree). */
    const char **scope;
    unsigned nscope, capscope;
    unsigned dml; /* INSERT, UPDATE, DELETE, MERGE nodes met in the statement */
    /* CREATE VIEW, MATERIALIZED VIEW, RULE, DOMAIN (its CHECK), POLICY: an expression that
     * runs later, in other statements */
    bool stored_query;
};

static bool bool_field(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static void scope_push(struct walk *w, const char *name)
{
    if (w->nscope == w->capscope) {
        w->capscope = w->capscope ? w->capscope * 2 : 8;
        w->scope = xrealloc(w->scope, w->capscope * sizeof *w->scope);
    }
    w->scope[w->nscope++] = name;
}

static bool scope_has(const struct walk *w, const char *name)
{
    for (unsigned i = w->nscope; i-- > 0;)
        if (strcmp(w->scope[i], name) == 0) return true;
    return false;
}

/* "a.b.c" from parts; NULL parts are skipped. */
static char *join3(const char *a, const char *b, const char *c)
{
    size_t n = (a ? strlen(a) + 1 : 0) + (b ? strlen(b) + 1 : 0) + strlen(c) + 1;
    char *s = xmalloc(n);
    snprintf(s, n, "%s%s%s%s%s", a ? a : "", a ? "." : "", b ? b : "", b ? "." : "", c);
    return s;
}

/* Record a RangeVar body (an object with "relname"). */
static void record_rangevar(struct walk *w, const cJSON *rv, bool written)
{
    const char *rel = sql_str_field(rv, "relname");
    if (!rel) return;
    const char *schema = sql_str_field(rv, "schemaname");
    const char *catalog = sql_str_field(rv, "catalogname");
    if (!written && !schema && !catalog && scope_has(w, rel)) return; /* a CTE */
    strlist_add_take(written ? &w->written : &w->read, join3(catalog, schema, rel));
}

/* Dotted name from a list of String nodes ("schema.fn"); NULL when it is not one. */
static char *dotted_name(const cJSON *list)
{
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1) return NULL;
    size_t n = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        const char *s = sql_string_node(it);
        if (!s) return NULL;
        n += strlen(s) + 1;
    }
    char *out = xmalloc(n);
    out[0] = '\0';
    cJSON_ArrayForEach(it, list)
    {
        if (out[0]) strcat(out, ".");
        strcat(out, sql_string_node(it));
    }
    return out;
}

/* A foreign table, server or user mapping whose options run a program or read a server file
 * (file_fdw's "program" and "filename": every later SELECT of the table runs or reads it) is
 * flagged as the COPY it amounts to. Options are DefElems anywhere in the statement. */
static void flag_foreign_options(struct walk *w, const cJSON *node, int depth)
{
    if (!node || depth > 64) return;
    const cJSON *c;
    cJSON_ArrayForEach(c, node)
    {
        if (c->string && !strcmp(c->string, "DefElem") && cJSON_IsObject(c)) {
            const char *name = sql_str_field(c, "defname");
            if (name && !strcmp(name, "program")) w->flags |= SQL_F_COPY_PROGRAM;
            if (name && !strcmp(name, "filename")) w->flags |= SQL_F_COPY_FILE;
        }
        if (cJSON_IsObject(c) || cJSON_IsArray(c)) flag_foreign_options(w, c, depth + 1);
    }
}

/* LOCK TABLE in a mode above ACCESS SHARE (1; the default, ACCESS EXCLUSIVE, is 8). */
static bool lock_writes(const cJSON *lock)
{
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(lock, "mode");
    return !cJSON_IsNumber(mode) || mode->valueint > 1;
}

static void walk_any(struct walk *w, const cJSON *item, int depth);
static void walk_node(struct walk *w, const char *type, const cJSON *body, int depth);

static bool key_in(const char *key, const char *const *skip)
{
    for (; skip && *skip; skip++)
        if (key && strcmp(key, *skip) == 0) return true;
    return false;
}

/* Visit every field of a node body but those named in skip (NULL-terminated). */
static void walk_fields(struct walk *w, const cJSON *obj, const char *const *skip, int depth)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, obj)
    {
        const char *key = c->string;
        if (key_in(key, skip)) continue;
        if (key && isupper((unsigned char)key[0]) && cJSON_IsObject(c))
            walk_node(w, key, c, depth + 1);
        else if (key && (!strcmp(key, "larg") || !strcmp(key, "rarg")) && cJSON_IsObject(c))
            walk_node(w, "SelectStmt", c, depth + 1); /* typed SelectStmt* fields */
        else if (key && !strcmp(key, "funccall") && cJSON_IsObject(c))
            walk_node(w, "FuncCall", c, depth + 1); /* CallStmt's typed FuncCall* */
        else
            walk_any(w, c, depth + 1);
    }
}

static void walk_any(struct walk *w, const cJSON *item, int depth)
{
    if (depth > WALK_MAX_DEPTH) {
        w->flags |= SQL_F_UNJUDGEABLE;
        return;
    }
    if (cJSON_IsArray(item)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, item) walk_any(w, c, depth + 1);
    } else if (cJSON_IsObject(item)) {
        /* Typed RangeVar fields are not wrapped: recognise them by shape. */
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(item, "relname"))) {
            record_rangevar(w, item, false);
            return;
        }
        walk_fields(w, item, NULL, depth);
    }
}

/* Does a FROM item (of a subquery) define name, by an alias or an unaliased table's name?
 * Then name means that item inside the subquery, not the statement's target. */
static bool from_item_defines(const cJSON *item, const char *name, int depth)
{
    const char *t;
    const cJSON *b = sql_node_body(item, &t);
    if (!b || depth > WALK_MAX_DEPTH) return false;
    const cJSON *alias = cJSON_GetObjectItemCaseSensitive(b, "alias");
    const char *a = alias ? sql_str_field(alias, "aliasname") : NULL;
    if (a) return !strcmp(a, name);
    if (!strcmp(t, "RangeVar")) {
        const char *rel = sql_str_field(b, "relname");
        return rel && !strcmp(rel, name);
    }
    if (!strcmp(t, "RangeTableSample"))
        return from_item_defines(cJSON_GetObjectItemCaseSensitive(b, "relation"), name, depth + 1);
    if (!strcmp(t, "JoinExpr"))
        return from_item_defines(cJSON_GetObjectItemCaseSensitive(b, "larg"), name, depth + 1) ||
               from_item_defines(cJSON_GetObjectItemCaseSensitive(b, "rarg"), name, depth + 1);
    return false;
}

/* The table of a FROM item, looking through TABLESAMPLE (a RangeVar body), or NULL. */
static const cJSON *item_table(const cJSON *item)
{
    const char *t;
    const cJSON *b = sql_node_body(item, &t);
    if (b && !strcmp(t, "RangeTableSample"))
        b = sql_node_body(cJSON_GetObjectItemCaseSensitive(b, "relation"), &t);
    return b && !strcmp(t, "RangeVar") ? b : NULL;
}

/* Do two RangeVars name the same table: the same name, and the same schema or neither names
 * one? (An unqualified name may be any schema's: it is not taken for a qualified one.) */
static bool same_table(const cJSON *a, const cJSON *b)
{
    const char *ra = sql_str_field(a, "relname"), *rb = sql_str_field(b, "relname");
    const char *sa = sql_str_field(a, "schemaname"), *sb = sql_str_field(b, "schemaname");
    return ra && rb && !strcmp(ra, rb) && (sa ? sb && !strcmp(sa, sb) : !sb);
}

/* Does a FROM item read the target's table, joins included? */
static bool from_item_has_table(const cJSON *item, const cJSON *rv, int depth)
{
    const char *t;
    const cJSON *b = sql_node_body(item, &t);
    if (!b || depth > WALK_MAX_DEPTH) return false;
    const cJSON *tb = item_table(item);
    if (tb) return same_table(tb, rv);
    if (!strcmp(t, "JoinExpr"))
        return from_item_has_table(cJSON_GetObjectItemCaseSensitive(b, "larg"), rv, depth + 1) ||
               from_item_has_table(cJSON_GetObjectItemCaseSensitive(b, "rarg"), rv, depth + 1);
    return false;
}

/* The row a predicate is judged against: the target's name in the statement (its alias, or
 * its table's name), its RangeVar, and whether unqualified columns here are a subquery's own
 * (its FROM reads the target's table, so every column name of the target resolves there). */
struct row_ref {
    const char *name;
    const cJSON *rv;
    bool inner;
};

/* Does node mention a column of the row being changed? A column qualified with a table
 * counts when that table is the target (by its alias, or its name when it has none:
 * `s.flag` of UPDATE ... FROM s does not); an unqualified one counts, in a subquery too,
 * where it may be the target's (a correlated subquery: `c.id = customer_id`). So
 * `WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = 'x')` does not depend on the
 * row, while `WHERE EXISTS (SELECT relname FROM pg_class)` is taken as if it might. Inside a
 * subquery whose FROM reuses the target's name (`EXISTS (SELECT 1 FROM t o WHERE o.id > 0)`
 * under `DELETE FROM t AS o`), that name is the subquery's own; inside one that reads the
 * target's table, so are unqualified columns (`EXISTS (SELECT 1 FROM t WHERE id > 0)`). An
 * unqualified `*` is never an outer row's. */
static bool row_dependent(const cJSON *node, struct row_ref r, int depth)
{
    if (!node || depth > WALK_MAX_DEPTH) return false;
    if (node->string && !strcmp(node->string, "CurrentOfExpr")) return true;
    if (node->string && !strcmp(node->string, "ColumnRef")) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(node, "fields");
        int n = cJSON_GetArraySize(f);
        if (n < 2) {
            const cJSON *one = cJSON_GetArrayItem(f, 0);
            return !r.inner && !(one && cJSON_GetObjectItemCaseSensitive(one, "A_Star"));
        }
        const char *table = sql_string_node(cJSON_GetArrayItem(f, n - 2));
        return table && r.name && !strcmp(table, r.name);
    }
    if (cJSON_IsObject(node)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "fromClause"))
        {
            if (r.name && from_item_defines(it, r.name, depth)) r.name = NULL;
            if (r.rv && from_item_has_table(it, r.rv, depth)) r.inner = true;
        }
    }
    for (const cJSON *c = node->child; c; c = c->next)
        if (row_dependent(c, r, depth + 1)) return true;
    return false;
}

/* Does the predicate narrow the rows? AND: when any part does; OR: only when every branch
 * does (`id = $1 OR $2` is every row when $2 is true); NOT: when its argument does; anything
 * else when it depends on the row. */
static bool restricts_rows(const cJSON *expr, struct row_ref r, int depth)
{
    const char *t;
    const cJSON *b = sql_node_body(expr, &t);
    if (!b || depth > WALK_MAX_DEPTH) return false;
    if (strcmp(t, "BoolExpr") != 0) return row_dependent(expr, r, depth);
    const char *op = sql_str_field(b, "boolop");
    bool and = op && !strcmp(op, "AND_EXPR"), or = op && !strcmp(op, "OR_EXPR");
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(b, "args"))
    {
        bool x = restricts_rows(a, r, depth + 1);
        if (and&&x) return true;
        if (or &&!x) return false;
        if (!and&&! or) return x; /* NOT: its one argument */
    }
    return or ;
}

/* The row of a statement's target (INSERT, UPDATE, DELETE, MERGE: its "relation"). */
static struct row_ref target_row(const cJSON *body)
{
    const cJSON *rel = cJSON_GetObjectItemCaseSensitive(body, "relation");
    const cJSON *alias = rel ? cJSON_GetObjectItemCaseSensitive(rel, "alias") : NULL;
    return (struct row_ref){
        .name = alias ? sql_str_field(alias, "aliasname")
                : rel ? sql_str_field(rel, "relname")
                      : NULL,
        .rv = rel,
    };
}

/* UPDATE/DELETE: no WHERE, a WHERE that is always true, or one that does not narrow the rows
 * (WHERE $1, WHERE $1 = $2, WHERE EXISTS (SELECT 1 FROM t), WHERE id = $1 OR $2): such a
 * predicate selects every row or none, decided by values sluice does not see (Bind
 * parameters) or by other tables. */
static void check_where(struct walk *w, const cJSON *body)
{
    const cJSON *where = cJSON_GetObjectItemCaseSensitive(body, "whereClause");
    if (!where) {
        w->flags |= SQL_F_NO_WHERE;
        return;
    }
    enum sql_tv tv = sql_const_truth(where, w->src);
    if (tv == SQL_TV_TRUE || (tv == SQL_TV_UNKNOWN && !restricts_rows(where, target_row(body), 0)))
        w->flags |= SQL_F_NO_WHERE | SQL_F_TAUTOLOGY;
}

/* Does the condition (NULL: none) narrow the rows of r? Always false narrows them to none;
 * always true, or anything that does not depend on the row, does not. */
static bool narrows(const cJSON *cond, struct row_ref r, const char *src)
{
    if (!cond) return false;
    enum sql_tv tv = sql_const_truth(cond, src);
    if (tv != SQL_TV_UNKNOWN) return tv == SQL_TV_FALSE;
    return restricts_rows(cond, r, 0);
}

/* MERGE ... WHEN MATCHED THEN UPDATE/DELETE where neither the ON condition nor the clause's
 * own AND narrows the target's rows: `ON true`, `ON s.x = 1` (every target row matches every
 * source row with x = 1), `ON 1=1 WHEN MATCHED AND s.flag`. */
static void check_merge(struct walk *w, const cJSON *body)
{
    struct row_ref r = target_row(body);
    if (narrows(cJSON_GetObjectItemCaseSensitive(body, "joinCondition"), r, w->src)) return;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "mergeWhenClauses"))
    {
        const cJSON *mw = sql_node_body(c, NULL);
        if (!mw || !bool_field(mw, "matched")) continue;
        const char *cmd = sql_str_field(mw, "commandType");
        if (!cmd || (strcmp(cmd, "CMD_UPDATE") && strcmp(cmd, "CMD_DELETE"))) continue;
        if (!narrows(cJSON_GetObjectItemCaseSensitive(mw, "condition"), r, w->src))
            w->flags |= SQL_F_NO_WHERE | SQL_F_TAUTOLOGY;
    }
}

/* INSERT INTO t SELECT ... FROM t ... ON CONFLICT DO UPDATE: the source reads the target
 * itself (an item of its FROM list, not through a join, a subquery or a CTE), so every row it
 * yields conflicts and is rewritten. Flagged as an UPDATE without WHERE unless the source's
 * WHERE narrows its rows of t, it has a LIMIT (but ALL or NULL), or DO UPDATE's WHERE narrows
 * the target's rows. */
static void check_upsert(struct walk *w, const cJSON *body)
{
    const cJSON *oc = cJSON_GetObjectItemCaseSensitive(body, "onConflictClause");
    const char *action = oc ? sql_str_field(oc, "action") : NULL;
    if (!action || strcmp(action, "ONCONFLICT_UPDATE") != 0) return;
    struct row_ref target = target_row(body);
    const cJSON *sel = sql_node_body(cJSON_GetObjectItemCaseSensitive(body, "selectStmt"), NULL);
    if (!target.rv || !sel) return;
    struct row_ref source = {.rv = target.rv};
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(sel, "fromClause"))
    {
        const cJSON *tb = item_table(it);
        if (source.name || !tb || !same_table(tb, target.rv)) continue;
        const cJSON *alias = cJSON_GetObjectItemCaseSensitive(tb, "alias");
        source.name = alias ? sql_str_field(alias, "aliasname") : sql_str_field(tb, "relname");
    }
    if (!source.name) return;
    const char *lt;
    const cJSON *lim = sql_node_body(cJSON_GetObjectItemCaseSensitive(sel, "limitCount"), &lt);
    if (lim && !(!strcmp(lt, "A_Const") && bool_field(lim, "isnull"))) return;
    if (narrows(cJSON_GetObjectItemCaseSensitive(sel, "whereClause"), source, w->src)) return;
    if (narrows(cJSON_GetObjectItemCaseSensitive(oc, "whereClause"), target, w->src)) return;
    w->flags |= SQL_F_NO_WHERE | SQL_F_TAUTOLOGY;
}

/* WITH: each CTE body is walked with the names visible to it (earlier siblings; all of them
 * under RECURSIVE); afterwards every name stays in scope for the rest of the statement. The
 * caller pops back to the count it saved. */
static void walk_with(struct walk *w, const cJSON *body, int depth)
{
    const cJSON *with = cJSON_GetObjectItemCaseSensitive(body, "withClause");
    if (!with) return;
    const cJSON *ctes = cJSON_GetObjectItemCaseSensitive(with, "ctes");
    bool recursive = bool_field(with, "recursive");
    const cJSON *c;
    if (recursive) {
        cJSON_ArrayForEach(c, ctes)
        {
            const cJSON *cte = sql_node_body(c, NULL);
            const char *name = cte ? sql_str_field(cte, "ctename") : NULL;
            if (name) scope_push(w, name);
        }
    }
    cJSON_ArrayForEach(c, ctes)
    {
        const cJSON *cte = sql_node_body(c, NULL);
        if (!cte) {
            walk_any(w, c, depth + 1);
            continue;
        }
        static const char *const skip[] = {"ctename", NULL};
        walk_fields(w, cte, skip, depth + 1);
        const char *name = sql_str_field(cte, "ctename");
        if (!recursive && name) scope_push(w, name);
    }
}

static bool streq_ci(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}

/* Skip the JSON value that starts at j (an object, an array, a string, a scalar). */
static const char *json_skip(const char *j)
{
    int depth = 0;
    bool str = false;
    for (; *j; j++) {
        if (str) {
            if (*j == '\\' && j[1])
                j++;
            else if (*j == '"')
                str = false;
            if (!str && depth == 0) return j + 1;
            continue;
        }
        if (*j == '"') {
            str = true;
        } else if (*j == '{' || *j == '[') {
            depth++;
        } else if (*j == '}' || *j == ']') {
            if (--depth <= 0) return j + 1;
        } else if (depth == 0 && (*j == ',' || *j == ' ')) {
            return j;
        }
    }
    return j;
}

/* The JSON text of a typmods list from p to end into md, without its "location" numbers. */
static int hash_typmods(EVP_MD_CTX *md, const char *p, const char *end)
{
    static const char loc[] = "\"location\":";
    const char *run = p; /* the bytes not yet hashed */
    while (p < end) {
        if ((size_t)(end - p) <= sizeof loc - 1 || memcmp(p, loc, sizeof loc - 1)) {
            p++;
            continue;
        }
        if (EVP_DigestUpdate(md, run, (size_t)(p - run)) != 1) return -1;
        p += sizeof loc - 1;
        while (p < end && (*p == '-' || isdigit((unsigned char)*p)))
            p++;
        run = p;
    }
    return EVP_DigestUpdate(md, run, (size_t)(end - run)) == 1 ? 0 : -1;
}

/* Is the TypeCast object at j (its text up to end) a cast to a type that only reads a value
 * (pg_catalog's numbers, strings, times, bool, uuid, json, bytea, and arrays of them)? Such a
 * cast of a constant or parameter is left out of the approval key with it: `id <= 1` and
 * `id <= $1::int4` are one statement. A cast to anything else (regclass, regproc, a type of
 * the database's own) is part of what the statement does, and its type is part of the key. */
static bool cast_is_plain(const char *j, const char *end)
{
    static const char *const plain[] = {
        "bool",        "int2",     "int4",   "int8", "float4", "float8", "numeric",
        "text",        "varchar",  "bpchar", "date", "time",   "timetz", "timestamp",
        "timestamptz", "interval", "uuid",   "json", "jsonb",  "bytea",  NULL};
    cJSON *o = cJSON_ParseWithLength(j, (size_t)(end - j));
    const cJSON *tc = o ? cJSON_GetObjectItemCaseSensitive(o, "TypeCast") : NULL;
    const cJSON *tn = tc ? cJSON_GetObjectItemCaseSensitive(tc, "typeName") : NULL;
    const cJSON *names = tn ? cJSON_GetObjectItemCaseSensitive(tn, "names") : NULL;
    int n = cJSON_GetArraySize(names);
    const char *type = n >= 1 ? sql_string_node(cJSON_GetArrayItem(names, n - 1)) : NULL;
    const char *schema = n == 2 ? sql_string_node(cJSON_GetArrayItem(names, 0)) : NULL;
    bool ok = type && (n == 1 || (n == 2 && schema && !strcmp(schema, "pg_catalog")));
    bool found = false;
    for (const char *const *p = plain; ok && *p && !found; p++)
        found = !strcmp(type, *p);
    cJSON_Delete(o);
    return found;
}

int sql_approval_key(const char *sql, uint64_t fingerprint, char out[SQL_KEY_LEN])
{
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error || !r.parse_tree) {
        pg_query_free_parse_result(r);
        return -1;
    }
    /* What the fingerprint leaves out is in the tree's words: every string value (names,
     * operators, kinds) and boolean, in order, but those of constants and parameters (an
     * A_Const, a ParamRef, or one cast to a plain type: $1::int4), whose subtrees are
     * skipped (of a cast to another type, `'t'::regclass`, only the constant is). Numbers
     * (positions, lengths) and keys are not hashed, nor is the punctuation, so lists of
     * constants of any length have the same words, as they have the same fingerprint. A quote
     * inside a JSON string is escaped, so a pattern never starts inside one. */
    static const char *const constant[] = {
        "{\"A_Const\":", "{\"ParamRef\":", "{\"TypeCast\":{\"arg\":{\"A_Const\":",
        "{\"TypeCast\":{\"arg\":{\"ParamRef\":", NULL};
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    const char *j = r.parse_tree;
    while (rc == 0 && *j) {
        bool skipped = false;
        for (const char *const *p = constant; *p && !skipped; p++)
            if (*j == '{' && !strncmp(j, *p, strlen(*p))) {
                const char *end = json_skip(j);
                if (p - constant >= 2 && !cast_is_plain(j, end))
                    j += strlen("{\"TypeCast\":{\"arg\":"); /* to the constant */
                else
                    j = end;
                skipped = true;
            }
        if (skipped) continue;
        if (*j == '"') {
            const char *start = ++j;
            while (*j && *j != '"')
                j += *j == '\\' && j[1] ? 2 : 1;
            size_t n = (size_t)(j - start);
            if (*j) j++;
            const char *after = j;
            while (*after == ' ')
                after++;
            if (*after == ':' && n == 7 && !memcmp(start, "typmods", 7)) {
                /* varchar(1) is not varchar(1000), nor numeric(10,2) numeric(3): a type's
                 * modifiers are hashed whole, numbers too, but their positions */
                j = after + 1;
                rc = hash_typmods(md, j, json_skip(j));
                j = json_skip(j);
            } else if (*after != ':' && /* (a value, not a key) */
                       (EVP_DigestUpdate(md, start, n) != 1 || EVP_DigestUpdate(md, "", 1) != 1))
                rc = -1;
            continue;
        }
        if (!strncmp(j, "true", 4) || !strncmp(j, "false", 5)) {
            if (EVP_DigestUpdate(md, j, 1) != 1) rc = -1;
            j += *j == 't' ? 4 : 5;
            continue;
        }
        j++;
    }
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    if (rc == 0 && EVP_DigestFinal_ex(md, h, &hl) != 1) rc = -1;
    EVP_MD_CTX_free(md);
    pg_query_free_parse_result(r);
    if (rc < 0) return -1;
    int n = snprintf(out, SQL_KEY_LEN, "%016llx-", (unsigned long long)fingerprint);
    for (unsigned i = 0; i < 8 && n + 2 < SQL_KEY_LEN; i++)
        n += snprintf(out + n, SQL_KEY_LEN - (size_t)n, "%02x", h[i]);
    return 0;
}

int sql_exact_key(const char *sql, char out[SQL_KEY_LEN])
{
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    if (EVP_Digest(sql, strlen(sql), h, &hl, EVP_sha256(), NULL) != 1) return -1;
    out[0] = 't';
    for (unsigned i = 0; i < 16; i++)
        snprintf(out + 1 + 2 * i, SQL_KEY_LEN - 1 - 2 * i, "%02x", h[i]);
    return 0;
}

bool sql_encoding_unsafe(const char *name)
{
    static const char *const unsafe[] = {
        "sjis",   "shiftjis",   "mskanji", "win932", "windows932", "shiftjis2004", "big5",
        "win950", "windows950", "gbk",     "cp936",  "win936",     "windows936",   "uhc",
        "win949", "windows949", "gb18030", "johab",  NULL,
    };
    char key[32];
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < sizeof key; p++)
        if (isalnum((unsigned char)*p)) key[n++] = (char)tolower((unsigned char)*p);
    key[n] = '\0';
    for (const char *const *u = unsafe; *u; u++)
        if (!strcmp(key, *u)) return true;
    return false;
}

/* The text of a constant (through casts): a string, a number, a boolean; NULL for anything
 * else. buf holds a number's digits. */
static const char *const_text(const cJSON *node, char *buf, size_t len)
{
    const char *t;
    const cJSON *b = sql_node_body(node, &t);
    while (b && !strcmp(t, "TypeCast"))
        b = sql_node_body(cJSON_GetObjectItemCaseSensitive(b, "arg"), &t);
    if (!b || strcmp(t, "A_Const") || cJSON_GetObjectItemCaseSensitive(b, "isnull")) return NULL;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(b, "sval"))) return sql_str_field(v, "sval");
    if ((v = cJSON_GetObjectItemCaseSensitive(b, "boolval")))
        return bool_field(v, "boolval") ? "true" : "false";
    if ((v = cJSON_GetObjectItemCaseSensitive(b, "ival"))) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(v, "ival"); /* (0 is left out) */
        snprintf(buf, len, "%.0f", cJSON_IsNumber(i) ? i->valuedouble : 0.0);
        return buf;
    }
    return NULL;
}

/* Setting name to value (NULL: not a constant) changes how the server reads statement text
 * in a way sluice does not follow: standard_conforming_strings off, an unsafe client
 * encoding. */
static void check_text_setting(struct walk *w, const char *name, const char *value)
{
    if (streq_ci(name, "standard_conforming_strings")) {
        static const char *const on[] = {"on", "true", "yes", "1", "t", "y", NULL};
        bool ok = false;
        for (const char *const *p = on; value && *p; p++)
            ok = ok || !strcasecmp(value, *p);
        if (!ok) w->flags |= SQL_F_TEXT_SETTING;
    } else if (streq_ci(name, "client_encoding")) {
        if (!value || sql_encoding_unsafe(value)) w->flags |= SQL_F_TEXT_SETTING;
    }
}

/* set_config('role' | 'session_authorization', ...), or a name we cannot read. */
static void check_set_config(struct walk *w, const char *fname, const cJSON *body)
{
    if (strcmp(fname, "set_config") && strcmp(fname, "pg_catalog.set_config")) return;
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(body, "args");
    const cJSON *a0 = cJSON_GetArrayItem(args, 0);
    const char *t;
    const cJSON *b = sql_node_body(a0, &t);
    while (b && !strcmp(t, "TypeCast"))
        b = sql_node_body(cJSON_GetObjectItemCaseSensitive(b, "arg"), &t);
    const char *name = NULL;
    if (b && !strcmp(t, "A_Const")) {
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(b, "sval");
        if (sv) name = sql_str_field(sv, "sval");
    }
    if (!name)
        w->flags |= SQL_F_UNJUDGEABLE; /* which setting it changes is known only at run time */
    else if (streq_ci(name, "role") || streq_ci(name, "session_authorization"))
        w->flags |= SQL_F_ROLE_CHANGE;
    char num[32];
    if (name) check_text_setting(w, name, const_text(cJSON_GetArrayItem(args, 1), num, sizeof num));
}

static void walk_funccall(struct walk *w, const cJSON *body, int depth)
{
    char *name = dotted_name(cJSON_GetObjectItemCaseSensitive(body, "funcname"));
    if (name) {
        check_set_config(w, name, body);
        strlist_add_take(&w->funcs, name);
    } else {
        w->flags |= SQL_F_UNJUDGEABLE;
    }
    static const char *const skip[] = {"funcname", NULL};
    walk_fields(w, body, skip, depth);
}

/* CREATE/ALTER ROLE options that grant power. */
static void check_role_options(struct walk *w, const cJSON *body, bool alter)
{
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(body, "action");
    bool dropping = alter && cJSON_IsNumber(action) && action->valuedouble < 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "options"))
    {
        const cJSON *d = sql_node_body(c, NULL);
        const char *name = d ? sql_str_field(d, "defname") : NULL;
        if (!name) continue;
        if (!strcmp(name, "superuser") || !strcmp(name, "bypassrls") ||
            !strcmp(name, "isreplication") || !strcmp(name, "createrole")) {
            const cJSON *arg = cJSON_GetObjectItemCaseSensitive(d, "arg");
            const char *t;
            const cJSON *ab = sql_node_body(arg, &t);
            bool on = true; /* no argument means on */
            if (ab && !strcmp(t, "Boolean")) on = bool_field(ab, "boolval");
            if (on) w->flags |= SQL_F_ROLE_PRIVILEGE;
        } else if (!strcmp(name, "addroleto") || !strcmp(name, "adminmembers") ||
                   (!strcmp(name, "rolemembers") && !dropping)) {
            w->flags |= SQL_F_ROLE_PRIVILEGE; /* role membership */
        }
    }
}

static void check_variable_set(struct walk *w, const cJSON *body)
{
    const char *name = sql_str_field(body, "name");
    const char *kind = sql_str_field(body, "kind");
    if (!name || !kind || strcmp(kind, "VAR_SET_VALUE")) return;
    char num[32];
    check_text_setting(
        w, name,
        const_text(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "args"), 0), num,
                   sizeof num));
    bool role = !strcasecmp(name, "role");
    if (!role && strcasecmp(name, "session_authorization")) return;
    if (role) { /* SET ROLE NONE is RESET ROLE */
        const cJSON *a0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "args"), 0);
        const char *t;
        const cJSON *b = sql_node_body(a0, &t);
        const cJSON *sv =
            b && !strcmp(t, "A_Const") ? cJSON_GetObjectItemCaseSensitive(b, "sval") : NULL;
        const char *v = sv ? sql_str_field(sv, "sval") : NULL;
        if (v && !strcasecmp(v, "none") &&
            cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(body, "args")) == 1)
            return;
    }
    w->flags |= SQL_F_ROLE_CHANGE;
}

/* Relation-valued fields directly in a DDL/admin statement name what it changes. */
static void walk_ddl(struct walk *w, const cJSON *body, int depth)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, body)
    {
        if (cJSON_IsObject(c) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "relname"))) {
            record_rangevar(w, c, true);
        } else if (c->string && !strcmp(c->string, "base") && cJSON_IsObject(c)) {
            walk_ddl(w, c, depth + 1); /* CreateForeignTableStmt embeds a CreateStmt */
        } else if (c->string && !strcmp(c->string, "into") && cJSON_IsObject(c)) {
            walk_ddl(w, c, depth + 1); /* CREATE TABLE AS: into.rel */
        } else {
            if (c->string && isupper((unsigned char)c->string[0]) && cJSON_IsObject(c))
                walk_node(w, c->string, c, depth + 1);
            else if (c->string && !strcmp(c->string, "funccall") && cJSON_IsObject(c))
                walk_node(w, "FuncCall", c, depth + 1);
            else
                walk_any(w, c, depth + 1);
        }
    }
}

static bool drop_names_tables(const char *remove_type)
{
    static const char *const kinds[] = {
        "OBJECT_TABLE",    "OBJECT_VIEW",  "OBJECT_MATVIEW",           "OBJECT_FOREIGN_TABLE",
        "OBJECT_SEQUENCE", "OBJECT_INDEX", "OBJECT_PARTITIONED_TABLE", NULL};
    for (const char *const *k = kinds; *k; k++)
        if (remove_type && !strcmp(remove_type, *k)) return true;
    return false;
}

/* Statements that bind an existing function to something PostgreSQL calls later without its
 * name in the statement's text: an operator, an aggregate, a type's I/O, a cast, a
 * conversion, a trigger, a text search parser, a range type's subtype_diff, a function's
 * SUPPORT, a handler. `SELECT a #~# b` runs whatever function the
 * operator names, dblink_exec or pg_terminate_backend included. The functions are recorded as
 * called (so `dangerous_functions` sees them) and the statement is unjudgeable: every later
 * use escapes the judgement of its own text. */
static bool binds_function(const char *type)
{
    static const char *const kinds[] = {"DefineStmt",
                                        "CreateCastStmt",
                                        "CreateConversionStmt",
                                        "AlterOperatorStmt",
                                        "CreateTrigStmt",
                                        "CreateEventTrigStmt",
                                        "CreateTransformStmt",
                                        "CreateOpClassStmt",
                                        "AlterOpFamilyStmt",
                                        "AlterTypeStmt",
                                        "CreateRangeStmt",
                                        "AlterFunctionStmt",
                                        "CreateFdwStmt",
                                        "AlterFdwStmt",
                                        "CreateAmStmt",
                                        "CreatePLangStmt",
                                        NULL};
    for (const char *const *k = kinds; *k; k++)
        if (!strcmp(type, *k)) return true;
    return false;
}

/* CREATE COLLATION and text search dictionaries and configurations are DefineStmts that name
 * no function. */
static bool defines_no_function(const cJSON *body)
{
    const char *kind = sql_str_field(body, "kind");
    return kind && (!strcmp(kind, "OBJECT_COLLATION") || !strcmp(kind, "OBJECT_TSDICTIONARY") ||
                    !strcmp(kind, "OBJECT_TSCONFIGURATION"));
}

/* The names of the functions a function-binding statement names, into w->funcs: every
 * dotted name under a key that holds a function (funcname, func_name, the ObjectWithArgs of
 * a cast or transform), and
 * every DefElem whose value is a function (FUNCTION = f, SFUNC = f, INPUT = f, RESTRICT = f).
 * Types (LEFTARG, STYPE, ...) are not functions; a name of either kind that is unknown here
 * is recorded, which can only over-report. */
static void record_bound_functions(struct walk *w, const cJSON *item, int depth)
{
    static const char *const not_functions[] = {"leftarg",
                                                "rightarg",
                                                "stype",
                                                "mstype",
                                                "basetype",
                                                "element",
                                                "like",
                                                "category",
                                                "alignment",
                                                "storage",
                                                "internallength",
                                                "default",
                                                "delimiter",
                                                "collatable",
                                                "passedbyvalue",
                                                "preferred",
                                                "initcond",
                                                "minitcond",
                                                "sspace",
                                                "msspace",
                                                "parallel",
                                                "finalfunc_extra",
                                                "mfinalfunc_extra",
                                                "finalfunc_modify",
                                                "mfinalfunc_modify",
                                                "hypothetical",
                                                "commutator",
                                                "negator",
                                                "hashes",
                                                "merges",
                                                "sortop",
                                                NULL};
    if (depth > WALK_MAX_DEPTH || !item) return;
    const cJSON *c;
    cJSON_ArrayForEach(c, item)
    {
        const char *k = c->string;
        if (k && (!strcmp(k, "funcname") || !strcmp(k, "func_name"))) {
            char *name = dotted_name(c);
            if (name) strlist_add_take(&w->funcs, name);
            continue;
        }
        if (k && (!strcmp(k, "func") || !strcmp(k, "fromsql") || !strcmp(k, "tosql"))) {
            /* an ObjectWithArgs: CREATE CAST ... WITH FUNCTION, CREATE TRANSFORM */
            char *name = dotted_name(cJSON_GetObjectItemCaseSensitive(c, "objname"));
            if (name) strlist_add_take(&w->funcs, name);
            continue;
        }
        if (k && !strcmp(k, "DefElem") && cJSON_IsObject(c)) {
            const char *def = sql_str_field(c, "defname");
            bool fn = def != NULL;
            for (const char *const *n = not_functions; fn && *n; n++)
                fn = strcmp(def, *n) != 0;
            const char *t;
            const cJSON *arg = sql_node_body(cJSON_GetObjectItemCaseSensitive(c, "arg"), &t);
            if (fn && arg && !strcmp(t, "TypeName")) {
                char *name = dotted_name(cJSON_GetObjectItemCaseSensitive(arg, "names"));
                if (name) strlist_add_take(&w->funcs, name);
            } else if (fn && arg && !strcmp(t, "List")) {
                char *name = dotted_name(cJSON_GetObjectItemCaseSensitive(arg, "items"));
                if (name) strlist_add_take(&w->funcs, name);
            }
            continue;
        }
        if (cJSON_IsObject(c) || cJSON_IsArray(c)) record_bound_functions(w, c, depth + 1);
    }
}

/* Side effects (tables, functions, flags) of one node; statements nest (CTEs, EXPLAIN,
 * PREPARE, COPY (query), CREATE SCHEMA elements, rule actions), so this serves them all. */
static void walk_node(struct walk *w, const char *type, const cJSON *body, int depth)
{
    if (depth > WALK_MAX_DEPTH) {
        w->flags |= SQL_F_UNJUDGEABLE;
        return;
    }
    if (!strcmp(type, "FuncCall")) {
        walk_funccall(w, body, depth);
        return;
    }
    /* Functional notation: PostgreSQL reads `(expr).fn` and `a.b.fn` as fn(expr) when no such
     * field exists, so `SELECT ('/etc/passwd'::text).pg_read_file` calls pg_read_file. Field
     * names in those positions are reported as functions too (a column named like a function
     * shows up there; nothing is missed). Two-part names (t.x) are left alone: they can only
     * call functions taking t's row type. */
    if (!strcmp(type, "A_Indirection") || !strcmp(type, "ColumnRef")) {
        const cJSON *list =
            cJSON_GetObjectItemCaseSensitive(body, type[0] == 'A' ? "indirection" : "fields");
        int n = cJSON_GetArraySize(list), i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, list)
        {
            const char *s = sql_string_node(it);
            if (s && *s && (type[0] == 'A' || (n >= 3 && i >= 2)))
                strlist_add_take(&w->funcs, xstrdup(s));
            i++;
        }
        walk_any(w, body, depth);
        return;
    }
    /* Fast path: expressions and the like; every special case below is a statement. */
    size_t tlen = strlen(type);
    if (tlen < 4 || memcmp(type + tlen - 4, "Stmt", 4) != 0) {
        walk_any(w, body, depth);
        return;
    }
    if (!strcmp(type, "SelectStmt") || !strcmp(type, "InsertStmt") || !strcmp(type, "UpdateStmt") ||
        !strcmp(type, "DeleteStmt") || !strcmp(type, "MergeStmt")) {
        unsigned saved = w->nscope;
        if (type[0] != 'S') w->dml++;
        walk_with(w, body, depth);
        if (type[0] == 'S') {
            const cJSON *into = cJSON_GetObjectItemCaseSensitive(body, "intoClause");
            const cJSON *rel = into ? cJSON_GetObjectItemCaseSensitive(into, "rel") : NULL;
            if (rel) record_rangevar(w, rel, true);
            static const char *const skip[] = {"withClause", "intoClause", NULL};
            walk_fields(w, body, skip, depth);
        } else {
            const cJSON *rel = cJSON_GetObjectItemCaseSensitive(body, "relation");
            if (rel) record_rangevar(w, rel, true);
            if (type[0] == 'U' || type[0] == 'D') check_where(w, body);
            if (type[0] == 'M') check_merge(w, body);
            if (type[0] == 'I') check_upsert(w, body);
            static const char *const skip[] = {"withClause", "relation", NULL};
            walk_fields(w, body, skip, depth);
        }
        w->nscope = saved;
        return;
    }
    if (!strcmp(type, "CreateForeignTableStmt") || !strcmp(type, "AlterTableStmt") ||
        !strcmp(type, "CreateForeignServerStmt") || !strcmp(type, "AlterForeignServerStmt") ||
        !strcmp(type, "CreateUserMappingStmt") || !strcmp(type, "AlterUserMappingStmt") ||
        !strcmp(type, "ImportForeignSchemaStmt") || !strcmp(type, "CreateFdwStmt") ||
        !strcmp(type, "AlterFdwStmt"))
        flag_foreign_options(w, body, 0);
    if (!strcmp(type, "CopyStmt")) {
        const cJSON *rel = cJSON_GetObjectItemCaseSensitive(body, "relation");
        if (rel) record_rangevar(w, rel, bool_field(body, "is_from"));
        if (bool_field(body, "is_program"))
            w->flags |= SQL_F_COPY_PROGRAM;
        else if (sql_str_field(body, "filename"))
            w->flags |= SQL_F_COPY_FILE;
        else if (!bool_field(body, "is_from"))
            w->copy_out = body;
        static const char *const skip[] = {"relation", NULL};
        walk_fields(w, body, skip, depth);
        return;
    }
    if (!strcmp(type, "LockStmt")) {
        /* every mode above ACCESS SHARE needs a write privilege on the table, and blocks its
         * writers (EXCLUSIVE, ACCESS EXCLUSIVE: its readers too): a write */
        bool writes = lock_writes(body);
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "relations"))
        {
            const cJSON *rv = sql_node_body(c, NULL);
            if (rv) record_rangevar(w, rv, writes);
        }
        return;
    }
    if (!strcmp(type, "TruncateStmt")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "relations"))
        {
            const cJSON *rv = sql_node_body(c, NULL);
            if (rv) record_rangevar(w, rv, true);
        }
        return;
    }
    if (!strcmp(type, "DropStmt")) {
        if (drop_names_tables(sql_str_field(body, "removeType"))) {
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "objects"))
            {
                const char *t;
                const cJSON *l = sql_node_body(c, &t);
                char *name = l && !strcmp(t, "List")
                                 ? dotted_name(cJSON_GetObjectItemCaseSensitive(l, "items"))
                                 : NULL;
                if (name) strlist_add_take(&w->written, name);
            }
        }
        return;
    }
    const char *renamed = !strcmp(type, "RenameStmt") ? sql_str_field(body, "renameType") : NULL;
    if (!strcmp(type, "AlterRoleStmt") || !strcmp(type, "AlterRoleSetStmt") ||
        !strcmp(type, "AlterDatabaseStmt") || !strcmp(type, "AlterDatabaseSetStmt") ||
        !strcmp(type, "DropRoleStmt") ||
        (renamed && (!strcmp(renamed, "OBJECT_ROLE") || !strcmp(renamed, "OBJECT_DATABASE"))) ||
        ((!strcmp(type, "GrantStmt") || !strcmp(type, "GrantRoleStmt")) &&
         !bool_field(body, "is_grant")))
        w->flags |= SQL_F_LOGIN_STATE; /* and on: the cases below look at some of them */
    if (!strcmp(type, "GrantStmt")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "objects"))
        {
            const char *t;
            const cJSON *rv = sql_node_body(c, &t);
            if (rv && !strcmp(t, "RangeVar")) record_rangevar(w, rv, true);
        }
        return;
    }
    if (!strcmp(type, "GrantRoleStmt")) {
        if (bool_field(body, "is_grant")) w->flags |= SQL_F_ROLE_PRIVILEGE;
        return;
    }
    if (!strcmp(type, "CreateRoleStmt") || !strcmp(type, "AlterRoleStmt")) {
        check_role_options(w, body, type[0] == 'A');
        return;
    }
    if (!strcmp(type, "VariableSetStmt")) {
        check_variable_set(w, body);
        walk_fields(w, body, NULL, depth);
        return;
    }
    if (!strcmp(type, "AlterRoleSetStmt") || !strcmp(type, "AlterDatabaseSetStmt")) {
        /* the setting every later session of that role or database starts with */
        const cJSON *set = cJSON_GetObjectItemCaseSensitive(body, "setstmt");
        if (cJSON_IsObject(set)) check_variable_set(w, set);
        walk_fields(w, body, NULL, depth);
        return;
    }
    if (!strcmp(type, "AlterSystemStmt")) {
        w->flags |= SQL_F_ALTER_SYSTEM;
        return;
    }
    /* EXECUTE runs a statement of SQL PREPARE: what it runs is not in its text (its PREPARE
     * was judged once, but each EXECUTE may run it again, with any parameters) */
    if (!strcmp(type, "DoStmt") || !strcmp(type, "CallStmt") ||
        !strcmp(type, "CreateFunctionStmt") || !strcmp(type, "ExecuteStmt")) {
        w->flags |= SQL_F_UNJUDGEABLE;
        walk_fields(w, body, NULL, depth);
        return;
    }
    if (!strcmp(type, "AlterTableStmt")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "cmds"))
        {
            const cJSON *cmd = sql_node_body(c, NULL);
            const char *sub = cmd ? sql_str_field(cmd, "subtype") : NULL;
            if (sub && (!strcmp(sub, "AT_DropColumn") || !strcmp(sub, "AT_AlterColumnType")))
                w->flags |= SQL_F_DROP_PART;
        }
        walk_ddl(w, body, depth);
        return;
    }
    if (binds_function(type) && !(!strcmp(type, "DefineStmt") && defines_no_function(body))) {
        w->flags |= SQL_F_UNJUDGEABLE;
        record_bound_functions(w, body, depth);
        if (!strcmp(type, "CreateTrigStmt")) walk_ddl(w, body, depth); /* its table */
        return;
    }
    if (!strcmp(type, "ExplainStmt") || !strcmp(type, "PrepareStmt")) {
        walk_fields(w, body, NULL, depth);
        return;
    }
    if (!strcmp(type, "ViewStmt") || !strcmp(type, "RuleStmt") ||
        !strcmp(type, "CreateDomainStmt") || !strcmp(type, "AlterDomainStmt") ||
        !strcmp(type, "CreatePolicyStmt") || !strcmp(type, "AlterPolicyStmt") ||
        (!strcmp(type, "CreateTableAsStmt") && sql_str_field(body, "objtype") &&
         !strcmp(sql_str_field(body, "objtype"), "OBJECT_MATVIEW")))
        w->stored_query = true;
    if (!strcmp(type, "CreateTableAsStmt") || !strcmp(type, "CreateStmt") ||
        !strcmp(type, "CreateForeignTableStmt") || !strcmp(type, "IndexStmt") ||
        !strcmp(type, "ViewStmt") || !strcmp(type, "AlterTableStmt") ||
        !strcmp(type, "RenameStmt") || !strcmp(type, "AlterObjectSchemaStmt") ||
        !strcmp(type, "AlterOwnerStmt") || !strcmp(type, "RuleStmt") ||
        !strcmp(type, "CreatePolicyStmt") || !strcmp(type, "AlterPolicyStmt") ||
        !strcmp(type, "RefreshMatViewStmt") || !strcmp(type, "ClusterStmt") ||
        !strcmp(type, "ReindexStmt") || !strcmp(type, "CreateSeqStmt") ||
        !strcmp(type, "AlterSeqStmt") || !strcmp(type, "CreateStatsStmt") ||
        !strcmp(type, "CommentStmt") || !strcmp(type, "SecLabelStmt")) {
        walk_ddl(w, body, depth);
        return;
    }
    walk_any(w, body, depth);
}

/* ---- commands and classes ---- */

struct kind {
    const char *type;
    const char *command;
    enum sql_class cls;
};

static const struct kind kinds[] = {
    {"SelectStmt", "SELECT", SQL_READ},
    {"InsertStmt", "INSERT", SQL_WRITE},
    {"UpdateStmt", "UPDATE", SQL_WRITE},
    {"DeleteStmt", "DELETE", SQL_WRITE},
    {"MergeStmt", "MERGE", SQL_WRITE},
    {"CopyStmt", "COPY", SQL_READ},
    {"RefreshMatViewStmt", "REFRESH", SQL_WRITE},
    {"VariableShowStmt", "SHOW", SQL_READ},
    {"DeclareCursorStmt", "DECLARE", SQL_READ},
    {"FetchStmt", "FETCH", SQL_READ},
    {"TruncateStmt", "TRUNCATE", SQL_DDL},
    {"DropStmt", "DROP", SQL_DDL},
    {"DropdbStmt", "DROP", SQL_DDL},
    {"DropTableSpaceStmt", "DROP", SQL_DDL},
    {"DropSubscriptionStmt", "DROP", SQL_DDL},
    {"DropUserMappingStmt", "DROP", SQL_DDL},
    {"CreateStmt", "CREATE", SQL_DDL},
    {"CreateForeignTableStmt", "CREATE", SQL_DDL},
    {"CreateTableAsStmt", "CREATE", SQL_DDL},
    {"CreateSchemaStmt", "CREATE", SQL_DDL},
    {"CreateSeqStmt", "CREATE", SQL_DDL},
    {"CreateExtensionStmt", "CREATE", SQL_DDL},
    {"CreateFunctionStmt", "CREATE", SQL_DDL},
    {"CreateTrigStmt", "CREATE", SQL_DDL},
    {"CreateEventTrigStmt", "CREATE", SQL_DDL},
    {"CreatePLangStmt", "CREATE", SQL_DDL},
    {"CreateDomainStmt", "CREATE", SQL_DDL},
    {"CompositeTypeStmt", "CREATE", SQL_DDL},
    {"CreateEnumStmt", "CREATE", SQL_DDL},
    {"CreateRangeStmt", "CREATE", SQL_DDL},
    {"DefineStmt", "CREATE", SQL_DDL},
    {"CreateCastStmt", "CREATE", SQL_DDL},
    {"CreateConversionStmt", "CREATE", SQL_DDL},
    {"CreateOpClassStmt", "CREATE", SQL_DDL},
    {"CreateOpFamilyStmt", "CREATE", SQL_DDL},
    {"CreateFdwStmt", "CREATE", SQL_DDL},
    {"CreateForeignServerStmt", "CREATE", SQL_DDL},
    {"CreateUserMappingStmt", "CREATE", SQL_DDL},
    {"CreatePolicyStmt", "CREATE", SQL_DDL},
    {"CreatePublicationStmt", "CREATE", SQL_DDL},
    {"CreateSubscriptionStmt", "CREATE", SQL_DDL},
    {"CreateStatsStmt", "CREATE", SQL_DDL},
    {"CreateTableSpaceStmt", "CREATE", SQL_DDL},
    {"CreateTransformStmt", "CREATE", SQL_DDL},
    {"CreateAmStmt", "CREATE", SQL_DDL},
    {"CreatedbStmt", "CREATE", SQL_DDL},
    {"IndexStmt", "CREATE", SQL_DDL},
    {"ViewStmt", "CREATE", SQL_DDL},
    {"RuleStmt", "CREATE", SQL_DDL},
    {"ImportForeignSchemaStmt", "IMPORT", SQL_DDL},
    {"CommentStmt", "COMMENT", SQL_DDL},
    {"SecLabelStmt", "SECURITY LABEL", SQL_DDL},
    {"AlterTableStmt", "ALTER", SQL_DDL},
    {"AlterTableMoveAllStmt", "ALTER", SQL_DDL},
    {"AlterDomainStmt", "ALTER", SQL_DDL},
    {"AlterEnumStmt", "ALTER", SQL_DDL},
    {"AlterExtensionStmt", "ALTER", SQL_DDL},
    {"AlterExtensionContentsStmt", "ALTER", SQL_DDL},
    {"AlterFdwStmt", "ALTER", SQL_DDL},
    {"AlterForeignServerStmt", "ALTER", SQL_DDL},
    {"AlterUserMappingStmt", "ALTER", SQL_DDL},
    {"AlterFunctionStmt", "ALTER", SQL_DDL},
    {"AlterObjectDependsStmt", "ALTER", SQL_DDL},
    {"AlterObjectSchemaStmt", "ALTER", SQL_DDL},
    {"AlterOwnerStmt", "ALTER", SQL_DDL},
    {"AlterOperatorStmt", "ALTER", SQL_DDL},
    {"AlterTypeStmt", "ALTER", SQL_DDL},
    {"AlterPolicyStmt", "ALTER", SQL_DDL},
    {"AlterPublicationStmt", "ALTER", SQL_DDL},
    {"AlterSubscriptionStmt", "ALTER", SQL_DDL},
    {"AlterSeqStmt", "ALTER", SQL_DDL},
    {"AlterStatsStmt", "ALTER", SQL_DDL},
    {"AlterTSConfigurationStmt", "ALTER", SQL_DDL},
    {"AlterTSDictionaryStmt", "ALTER", SQL_DDL},
    {"AlterTableSpaceOptionsStmt", "ALTER", SQL_DDL},
    {"AlterCollationStmt", "ALTER", SQL_DDL},
    {"AlterEventTrigStmt", "ALTER", SQL_DDL},
    {"AlterDatabaseStmt", "ALTER", SQL_DDL},
    {"AlterDatabaseSetStmt", "ALTER", SQL_DDL},
    {"AlterDatabaseRefreshCollStmt", "ALTER", SQL_DDL},
    {"AlterOpFamilyStmt", "ALTER", SQL_DDL},
    {"RenameStmt", "ALTER", SQL_DDL},
    {"CreateRoleStmt", "CREATE", SQL_DCL},
    {"AlterRoleStmt", "ALTER", SQL_DCL},
    {"AlterRoleSetStmt", "ALTER", SQL_DCL},
    {"DropRoleStmt", "DROP", SQL_DCL},
    {"DropOwnedStmt", "DROP", SQL_DCL},
    {"ReassignOwnedStmt", "REASSIGN", SQL_DCL},
    {"AlterDefaultPrivilegesStmt", "ALTER", SQL_DCL},
    {"GrantStmt", "GRANT", SQL_DCL},
    {"GrantRoleStmt", "GRANT", SQL_DCL},
    {"AlterSystemStmt", "ALTER", SQL_ADMIN},
    {"VacuumStmt", "VACUUM", SQL_ADMIN},
    {"ClusterStmt", "CLUSTER", SQL_ADMIN},
    {"ReindexStmt", "REINDEX", SQL_ADMIN},
    {"CheckPointStmt", "CHECKPOINT", SQL_ADMIN},
    {"LoadStmt", "LOAD", SQL_ADMIN},
    {"TransactionStmt", "BEGIN", SQL_TRANSACTION},
    {"VariableSetStmt", "SET", SQL_UTILITY},
    {"ConstraintsSetStmt", "SET", SQL_UTILITY},
    {"ExecuteStmt", "EXECUTE", SQL_UTILITY},
    {"DeallocateStmt", "DEALLOCATE", SQL_UTILITY},
    {"ClosePortalStmt", "CLOSE", SQL_UTILITY},
    {"ListenStmt", "LISTEN", SQL_UTILITY},
    {"UnlistenStmt", "UNLISTEN", SQL_UTILITY},
    {"NotifyStmt", "NOTIFY", SQL_UTILITY},
    {"DiscardStmt", "DISCARD", SQL_UTILITY},
    {"LockStmt", "LOCK", SQL_UTILITY},
    {"DoStmt", "DO", SQL_UTILITY},
    {"CallStmt", "CALL", SQL_UTILITY},
};

static const char *transaction_command(const char *kind)
{
    static const struct {
        const char *kind, *command;
    } map[] = {{"TRANS_STMT_BEGIN", "BEGIN"},
               {"TRANS_STMT_START", "BEGIN"},
               {"TRANS_STMT_COMMIT", "COMMIT"},
               {"TRANS_STMT_ROLLBACK", "ROLLBACK"},
               {"TRANS_STMT_SAVEPOINT", "SAVEPOINT"},
               {"TRANS_STMT_RELEASE", "RELEASE"},
               {"TRANS_STMT_ROLLBACK_TO", "ROLLBACK"},
               {"TRANS_STMT_PREPARE", "PREPARE TRANSACTION"},
               {"TRANS_STMT_COMMIT_PREPARED", "COMMIT PREPARED"},
               {"TRANS_STMT_ROLLBACK_PREPARED", "ROLLBACK PREPARED"}};
    for (size_t i = 0; kind && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(kind, map[i].kind)) return map[i].command;
    return "BEGIN";
}

/* Is an EXPLAIN option's value on? No argument, or one that is not false. */
static bool option_on(const cJSON *d)
{
    const cJSON *arg = cJSON_GetObjectItemCaseSensitive(d, "arg");
    if (!arg) return true;
    const char *t;
    const cJSON *ab = sql_node_body(arg, &t);
    if (!ab) return true;
    if (!strcmp(t, "Boolean")) return bool_field(ab, "boolval");
    if (!strcmp(t, "Integer")) {
        const cJSON *iv = cJSON_GetObjectItemCaseSensitive(ab, "ival");
        return cJSON_IsNumber(iv) && iv->valuedouble != 0; /* (0 is left out of the tree) */
    }
    if (!strcmp(t, "String")) {
        const char *s = sql_str_field(ab, "sval");
        static const char *const no[] = {"false", "off",  "no", "0",  "f", "fa",
                                         "fal",   "fals", "n",  "of", NULL};
        for (const char *const *p = no; s && *p; p++)
            if (!strcasecmp(s, *p)) return false;
    }
    return true; /* anything else: assume it runs */
}

/* EXPLAIN runs the statement only with ANALYZE on; PostgreSQL takes the last ANALYZE option
 * given (`EXPLAIN (ANALYZE off, ANALYZE) DELETE ...` runs the DELETE). */
static bool explain_analyze(const cJSON *body)
{
    bool on = false;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(body, "options"))
    {
        const cJSON *d = sql_node_body(c, NULL);
        const char *name = d ? sql_str_field(d, "defname") : NULL;
        if (name && !strcasecmp(name, "analyze")) on = option_on(d);
    }
    return on;
}

/* Command and class of one (possibly wrapped) statement; side effects go to w. */
static void classify(struct walk *w, const char *type, const cJSON *body, const char **command,
                     enum sql_class *cls, int depth)
{
    if (depth > 8) { /* EXPLAIN/PREPARE do not nest deeper than this in valid SQL */
        *command = "UNKNOWN";
        *cls = SQL_UTILITY;
        w->flags |= SQL_F_UNJUDGEABLE;
        return;
    }
    if (!strcmp(type, "ExplainStmt") || !strcmp(type, "PrepareStmt")) {
        const char *itype = NULL;
        const cJSON *inner = sql_node_body(cJSON_GetObjectItemCaseSensitive(body, "query"), &itype);
        bool explain = type[0] == 'E';
        bool analyze = explain && explain_analyze(body);
        if (!inner) {
            *command = explain ? "EXPLAIN" : "PREPARE";
            *cls = SQL_UTILITY;
            w->flags |= SQL_F_UNJUDGEABLE;
            return;
        }
        if (!explain) {
            w->flags |= SQL_F_PREPARE;
            w->prepared = sql_str_field(body, "name");
        }
        /* Other fields: PREPARE's argument types, EXPLAIN's options. */
        static const char *const skip[] = {"query", NULL};
        walk_fields(w, body, skip, depth);
        classify(w, itype, inner, command, cls, depth + 1);
        if (analyze) {
            w->flags |= SQL_F_EXPLAIN_ANALYZE;
        } else if (explain) {
            /* Plans only: whatever it would write, it reads. */
            for (unsigned i = 0; i < w->written.n; i++)
                strlist_add_take(&w->read, w->written.v[i]);
            w->written.n = 0;
            w->flags &= ~(unsigned)(SQL_F_NO_WHERE | SQL_F_TAUTOLOGY);
            *command = "EXPLAIN";
            *cls = SQL_READ;
        }
        return;
    }

    const struct kind *k = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!strcmp(kinds[i].type, type)) {
            k = &kinds[i];
            break;
        }
    }
    walk_node(w, type, body, depth);
    if (!k) {
        *command = !strncmp(type, "Create", 6)  ? "CREATE"
                   : !strncmp(type, "Alter", 5) ? "ALTER"
                   : !strncmp(type, "Drop", 4)  ? "DROP"
                                                : "UNKNOWN";
        *cls = strcmp(*command, "UNKNOWN") ? SQL_DDL : SQL_UTILITY;
        w->flags |= SQL_F_UNJUDGEABLE;
        return;
    }
    *command = k->command;
    *cls = k->cls;
    if (!strcmp(type, "SelectStmt") && cJSON_GetObjectItemCaseSensitive(body, "intoClause")) {
        *command = "CREATE"; /* SELECT ... INTO creates a table */
        *cls = SQL_DDL;
    } else if (!strcmp(type, "CopyStmt")) {
        *cls = bool_field(body, "is_from") ? SQL_WRITE : SQL_READ;
    } else if (!strcmp(type, "LockStmt")) {
        if (lock_writes(body)) *cls = SQL_WRITE;
    } else if (!strcmp(type, "GrantStmt") || !strcmp(type, "GrantRoleStmt")) {
        *command = bool_field(body, "is_grant") ? "GRANT" : "REVOKE";
    } else if (!strcmp(type, "TransactionStmt")) {
        *command = transaction_command(sql_str_field(body, "kind"));
        w->savepoint = sql_str_field(body, "savepoint_name");
        w->chain = bool_field(body, "chain");
    } else if (!strcmp(type, "DeallocateStmt")) {
        w->prepared = sql_str_field(body, "name");
        w->prepared_all = !w->prepared; /* DEALLOCATE ALL has no name */
    } else if (!strcmp(type, "DiscardStmt")) {
        const char *target = sql_str_field(body, "target");
        w->prepared_all = w->cursor_all = target && !strcmp(target, "DISCARD_ALL");
    } else if (!strcmp(type, "DeclareCursorStmt") || !strcmp(type, "ClosePortalStmt")) {
        w->cursor = sql_str_field(body, "portalname");
        w->cursor_all = !w->cursor; /* CLOSE ALL has no name */
    } else if (!strcmp(type, "VariableSetStmt")) {
        const char *kind = sql_str_field(body, "kind");
        if (kind && !strncmp(kind, "VAR_RESET", 9)) *command = "RESET";
    } else if (!strcmp(type, "VacuumStmt")) {
        *command = bool_field(body, "is_vacuumcmd") ? "VACUUM" : "ANALYZE";
    } else if (!strcmp(type, "FetchStmt")) {
        *command = bool_field(body, "ismove") ? "MOVE" : "FETCH";
    } else if (!strcmp(type, "RenameStmt")) {
        const char *rt = sql_str_field(body, "renameType");
        if (rt && !strcmp(rt, "OBJECT_ROLE")) *cls = SQL_DCL;
    }
}

/* ---- facts ---- */

/* Built-in functions that change the database, which PostgreSQL refuses in a read-only
 * transaction: sequences (outside any transaction: no rollback undoes them) and large
 * objects. A statement that runs one writes, whatever its command. */
static const char *const writing_functions[] = {
    "nextval",
    "setval",
    "lo_creat",
    "lo_create",
    "lo_unlink",
    "lowrite",
    "lo_put",
    "lo_truncate",
    "lo_truncate64",
    "lo_from_bytea",
    "lo_import",
    "pg_import_system_collations",
    NULL,
};

static bool calls_writing_function(const struct sql_stmt *st)
{
    for (unsigned i = 0; i < st->n_functions; i++) {
        const char *dot = strrchr(st->functions[i], '.');
        const char *name = dot ? dot + 1 : st->functions[i];
        for (const char *const *f = writing_functions; *f; f++)
            if (strcmp(name, *f) == 0) return true;
    }
    return false;
}

static void stmt_fill(struct walk *w, struct sql_stmt *st, const char *command, enum sql_class cls)
{
    st->command = command;
    st->cls = cls;
    if (st->cls == SQL_READ && w->written.n > 0) st->cls = SQL_WRITE;
    st->flags = w->flags;
    st->tables_read = strlist_finish(&w->read, &st->n_read);
    st->tables_written = strlist_finish(&w->written, &st->n_written);
    st->functions = strlist_finish(&w->funcs, &st->n_functions);
    /* pg_settings' rules call set_config: a write to it can set the role, or the settings of
     * how the server reads text, to anything */
    for (unsigned i = 0; i < st->n_written; i++) {
        const char *dot = strrchr(st->tables_written[i], '.');
        if (!strcmp(dot ? dot + 1 : st->tables_written[i], "pg_settings"))
            st->flags |= SQL_F_ROLE_CHANGE | SQL_F_TEXT_SETTING;
    }
    bool dml_cmd = !strcmp(command, "INSERT") || !strcmp(command, "UPDATE") ||
                   !strcmp(command, "DELETE") || !strcmp(command, "MERGE");
    if (w->dml > (dml_cmd ? 1u : 0u) && strcmp(command, "EXPLAIN") != 0)
        st->flags |= SQL_F_NESTED_WRITE;
    w->dml = 0;
    /* (plain EXPLAIN runs nothing) */
    if (st->cls == SQL_READ && calls_writing_function(st) &&
        (strcmp(command, "EXPLAIN") != 0 || (st->flags & SQL_F_EXPLAIN_ANALYZE)))
        st->cls = SQL_WRITE;
    /* a view or rule whose query writes (setval, lo_unlink, ...) makes every later SELECT of
     * it a write that its own text does not show */
    if (w->stored_query && calls_writing_function(st)) st->flags |= SQL_F_UNJUDGEABLE;
    w->stored_query = false;
    st->savepoint = w->savepoint ? xstrdup(w->savepoint) : NULL;
    w->savepoint = NULL;
    st->chain = w->chain;
    w->chain = false;
    st->prepared_name = w->prepared ? xstrdup(w->prepared) : NULL;
    st->prepared_all = w->prepared_all;
    w->prepared = NULL;
    w->prepared_all = false;
    st->cursor_name = w->cursor ? xstrdup(w->cursor) : NULL;
    st->cursor_all = w->cursor_all;
    w->cursor = NULL;
    w->cursor_all = false;
    st->copy_out = w->copy_out ? sql_copy_out_make(w->copy_out) : NULL;
    w->copy_out = NULL;
    w->flags = 0;
    w->nscope = 0;
}

/* The facts of a string sluice cannot parse (or dares not). */
static void facts_unparsed(struct sql_facts *out, const char *msg, int cursorpos)
{
    out->stmts = xcalloc(1, sizeof *out->stmts);
    out->n_stmts = 1;
    out->stmts[0].command = "UNKNOWN";
    out->stmts[0].cls = SQL_UTILITY;
    out->stmts[0].flags = SQL_F_PARSE_ERROR | SQL_F_UNJUDGEABLE;
    char buf[512];
    if (cursorpos > 0)
        snprintf(buf, sizeof buf, "%s (at character %d)", msg, cursorpos);
    else
        snprintf(buf, sizeof buf, "%s", msg);
    out->error = xstrdup(buf);
}

int sql_analyze(const char *sql, struct sql_facts *out)
{
    memset(out, 0, sizeof *out);
    if (!sql) return -1;

    size_t len = strlen(sql);
    unsigned ops;
    if (sql_guard_too_deep(sql, len, &ops)) {
        char msg[128];
        snprintf(msg, sizeof msg, "statement nested too deeply to analyze (depth estimate %u)",
                 ops);
        facts_unparsed(out, msg, 0);
        return 0;
    }

    PgQueryParseResult pr = pg_query_parse(sql);
    if (pr.error) {
        facts_unparsed(out, pr.error->message ? pr.error->message : "syntax error",
                       pr.error->cursorpos);
        pg_query_free_parse_result(pr);
        return 0;
    }
    if (!pr.parse_tree) {
        pg_query_free_parse_result(pr);
        return -1;
    }
    cJSON *root = cJSON_Parse(pr.parse_tree);
    pg_query_free_parse_result(pr);
    if (!root) {
        /* cJSON stops at 1000 levels of nesting: too deep to judge. */
        facts_unparsed(out, "statement nested too deeply to analyze", 0);
        return 0;
    }

    const cJSON *stmts = cJSON_GetObjectItemCaseSensitive(root, "stmts");
    int n = cJSON_GetArraySize(stmts);
    struct walk w = {.src = sql};
    if (n > 0) out->stmts = xcalloc((size_t)n, sizeof *out->stmts);
    const cJSON *raw;
    cJSON_ArrayForEach(raw, stmts)
    {
        const char *type;
        const cJSON *body = sql_node_body(cJSON_GetObjectItemCaseSensitive(raw, "stmt"), &type);
        const char *command = "UNKNOWN";
        enum sql_class cls = SQL_UTILITY;
        if (body)
            classify(&w, type, body, &command, &cls, 0);
        else
            w.flags |= SQL_F_UNJUDGEABLE;
        stmt_fill(&w, &out->stmts[out->n_stmts++], command, cls);
    }
    free(w.scope);
    cJSON_Delete(root);

    PgQueryFingerprintResult fr = pg_query_fingerprint(sql);
    if (!fr.error) out->fingerprint = fr.fingerprint;
    pg_query_free_fingerprint_result(fr);
    PgQueryNormalizeResult nr = pg_query_normalize(sql);
    if (!nr.error && nr.normalized_query) out->normalized = xstrdup(nr.normalized_query);
    pg_query_free_normalize_result(nr);
    return 0;
}

static void free_list(char **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void sql_facts_free(struct sql_facts *f)
{
    if (!f) return;
    for (unsigned i = 0; i < f->n_stmts; i++) {
        struct sql_stmt *s = &f->stmts[i];
        free_list(s->tables_read, s->n_read);
        free_list(s->tables_written, s->n_written);
        free_list(s->functions, s->n_functions);
        free(s->savepoint);
        free(s->prepared_name);
        free(s->cursor_name);
        sql_copy_out_free(s->copy_out);
    }
    free(f->stmts);
    free(f->normalized);
    free(f->error);
    memset(f, 0, sizeof *f);
}

static const char *const class_names[SQL_CLASS_COUNT] = {
    [SQL_READ] = "read",       [SQL_WRITE] = "write", [SQL_DDL] = "ddl",
    [SQL_DCL] = "dcl",         [SQL_ADMIN] = "admin", [SQL_TRANSACTION] = "transaction",
    [SQL_UTILITY] = "utility",
};

const char *sql_class_name(enum sql_class cls)
{
    if ((unsigned)cls >= SQL_CLASS_COUNT) return "unknown";
    return class_names[cls];
}

int sql_class_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < SQL_CLASS_COUNT; i++)
        if (strcasecmp(name, class_names[i]) == 0) return i;
    return -1;
}

char *sql_facts_tables(const struct sql_facts *f)
{
    size_t n = 0, cap = 64;
    char *out = xcalloc(1, cap);
    for (unsigned k = 0; k < f->n_stmts; k++) {
        const struct sql_stmt *st = &f->stmts[k];
        for (unsigned t = 0; t < st->n_read + st->n_written; t++) {
            const char *name =
                t < st->n_read ? st->tables_read[t] : st->tables_written[t - st->n_read];
            size_t need = strlen(name) + 2;
            if (n + need >= cap) {
                cap = (n + need) * 2;
                out = xrealloc(out, cap);
            }
            n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "," : "", name);
        }
    }
    return out;
}
