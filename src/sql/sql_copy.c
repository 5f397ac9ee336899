/*
 * sql_copy.c: what the lines of a COPY ... TO STDOUT hold, from its parse tree: the columns in
 * order (its column list, or the output names of its query), the table they come from, and
 * the text layout its options ask for (format, delimiter, quote, escape, NULL marker,
 * header). A COPY of a whole table (`COPY t`, `COPY (SELECT * FROM t)`) names no column:
 * then it says which table, whose columns the relay asks the catalog for. Masking uses it to
 * mask COPY lines by column name (src/mask/copy.c). No I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "sql/sql_int.h"

static const cJSON *child(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* The body of a one-key {"Type": body} node, when Type is type. */
static const cJSON *node_of(const cJSON *n, const char *type)
{
    const char *t;
    const cJSON *b = sql_node_body(n, &t);
    return b && !strcmp(t, type) ? b : NULL;
}

/* "schema.table" (or "table") of a RangeVar body; NULL when it has no name. */
static char *rangevar_name(const cJSON *rv)
{
    const cJSON *rel = child(rv, "relname"), *sch = child(rv, "schemaname");
    if (!cJSON_IsString(rel)) return NULL;
    if (!cJSON_IsString(sch)) return xstrdup(rel->valuestring);
    size_t n = strlen(sch->valuestring) + strlen(rel->valuestring) + 2;
    char *out = xmalloc(n);
    snprintf(out, n, "%s.%s", sch->valuestring, rel->valuestring);
    return out;
}

/* The RangeVar's schema and name, as the server reads them, into c (false when unnamed). */
static bool rangevar_parts(const cJSON *rv, struct sql_copy_out *c)
{
    const cJSON *rel = child(rv, "relname"), *sch = child(rv, "schemaname");
    if (!cJSON_IsString(rel)) return false;
    free(c->rel_schema);
    free(c->rel_name);
    c->rel_schema = cJSON_IsString(sch) ? xstrdup(sch->valuestring) : NULL;
    c->rel_name = xstrdup(rel->valuestring);
    return true;
}

/* Is the target list one bare `*` (SELECT * FROM ..., not t.* nor *, x)? */
static bool target_list_star(const cJSON *tl)
{
    if (cJSON_GetArraySize(tl) != 1) return false;
    const cJSON *rt = node_of(cJSON_GetArrayItem(tl, 0), "ResTarget");
    const cJSON *ref = node_of(child(rt, "val"), "ColumnRef");
    const cJSON *fields = child(ref, "fields");
    return !child(rt, "name") && cJSON_GetArraySize(fields) == 1 &&
           node_of(cJSON_GetArrayItem(fields, 0), "A_Star");
}

/* A SELECT output column: the column it reads when it is a plain column reference (the last
 * field of it; NULL for an expression; *star for `*`, whose columns are unknown), and the
 * name it gets: its alias, else that column's name. */
static const char *target_source(const cJSON *restarget, bool *star, const char **name)
{
    const cJSON *alias = child(restarget, "name");
    const cJSON *ref = node_of(child(restarget, "val"), "ColumnRef");
    const cJSON *fields = child(ref, "fields"), *last = NULL, *f;
    cJSON_ArrayForEach(f, fields) last = f;
    if (last && node_of(last, "A_Star")) *star = true;
    const char *source = last ? sql_string_node(last) : NULL;
    *name = cJSON_IsString(alias) ? alias->valuestring : source;
    return source;
}

/* A query's output columns (SELECT only, not UNION or VALUES), and its table when it reads
 * one RangeVar. false when a `*` leaves their number unknown (for SELECT * FROM one table,
 * not a CTE's name, c->whole says the catalog can name them). */
static bool query_columns(const cJSON *query, struct sql_copy_out *c)
{
    const cJSON *sel = node_of(query, "SelectStmt");
    const cJSON *tl = child(sel, "targetList");
    const char *op = cJSON_GetStringValue(child(sel, "op"));
    if (!sel || !cJSON_IsArray(tl) || (op && strcmp(op, "SETOP_NONE") != 0)) return false;
    const cJSON *from = child(sel, "fromClause");
    const cJSON *rv =
        cJSON_GetArraySize(from) == 1 ? node_of(cJSON_GetArrayItem(from, 0), "RangeVar") : NULL;
    if (target_list_star(tl)) {
        /* SELECT * FROM t: every column of t, when t cannot be a CTE's name */
        if (rv && !child(sel, "withClause") && rangevar_parts(rv, c)) {
            c->table = rangevar_name(rv);
            c->whole = SQL_COPY_STAR;
        }
        return false;
    }
    unsigned n = (unsigned)cJSON_GetArraySize(tl);
    c->columns = xcalloc(n ? n : 1, sizeof *c->columns);
    c->sources = xcalloc(n ? n : 1, sizeof *c->sources);
    const cJSON *t;
    cJSON_ArrayForEach(t, tl)
    {
        bool star = false;
        const char *name = NULL;
        const char *source = target_source(node_of(t, "ResTarget"), &star, &name);
        if (star) return false;
        c->columns[c->n_columns] = name ? xstrdup(name) : NULL;
        c->sources[c->n_columns++] = source ? xstrdup(source) : NULL;
    }
    if (rv) c->table = rangevar_name(rv);
    return true;
}

/* One-character option values; false when the value is not one character. */
static bool char_option(const cJSON *arg, char *out)
{
    const char *v = sql_string_node(arg);
    if (!v || strlen(v) != 1) return false;
    *out = v[0];
    return true;
}

/* HEADER's value: none (true), a Boolean, or a string / integer PostgreSQL reads as one. */
static bool header_option(const cJSON *arg)
{
    if (!arg) return true;
    const cJSON *b = node_of(arg, "Boolean");
    if (b) return cJSON_IsTrue(child(b, "boolval"));
    const cJSON *i = node_of(arg, "Integer");
    if (i) return cJSON_IsNumber(child(i, "ival")) && child(i, "ival")->valuedouble != 0;
    const char *v = sql_string_node(arg);
    return v && (!strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcasecmp(v, "match"));
}

/* The layout options; false when one is not understood (the caller then knows nothing). */
static bool read_options(const cJSON *opts, struct sql_copy_out *c)
{
    bool delim = false, null_set = false;
    const cJSON *o;
    cJSON_ArrayForEach(o, opts)
    {
        const cJSON *d = node_of(o, "DefElem");
        const char *name = cJSON_GetStringValue(child(d, "defname"));
        const cJSON *arg = child(d, "arg");
        if (!name) return false;
        if (!strcmp(name, "format")) {
            const char *f = sql_string_node(arg);
            if (!f) return false;
            if (!strcasecmp(f, "csv"))
                c->format = 'c';
            else if (!strcasecmp(f, "binary"))
                c->format = 'b';
            else if (!strcasecmp(f, "text"))
                c->format = 't';
            else
                return false;
        } else if (!strcmp(name, "delimiter")) {
            if (!char_option(arg, &c->delimiter)) return false;
            delim = true;
        } else if (!strcmp(name, "quote")) {
            if (!char_option(arg, &c->quote)) return false;
        } else if (!strcmp(name, "escape")) {
            if (!char_option(arg, &c->escape)) return false;
        } else if (!strcmp(name, "null")) {
            const char *v = sql_string_node(arg);
            if (!v) return false;
            free(c->null_str);
            c->null_str = xstrdup(v);
            null_set = true;
        } else if (!strcmp(name, "header")) {
            c->header = header_option(arg);
        } else if (strcmp(name, "force_quote") != 0) {
            /* (force_quote only adds quotes; ENCODING is not understood: in SJIS, BIG5 or GBK
             * a character's second byte may be a backslash or the delimiter, unescaped) */
            return false;
        }
    }
    if (!delim) c->delimiter = c->format == 'c' ? ',' : '\t';
    if (!null_set) {
        free(c->null_str);
        c->null_str = xstrdup(c->format == 'c' ? "" : "\\N");
    }
    return true;
}

struct sql_copy_out *sql_copy_out_make(const cJSON *copy)
{
    struct sql_copy_out *c = xcalloc(1, sizeof *c);
    c->format = 't';
    c->quote = '"';
    c->escape = 0;
    const cJSON *attlist = child(copy, "attlist"), *query = child(copy, "query");
    const cJSON *rel = child(copy, "relation");
    bool known = false;
    if (rel && cJSON_IsArray(attlist) && cJSON_GetArraySize(attlist) > 0) {
        c->table = rangevar_name(rel);
        unsigned n = (unsigned)cJSON_GetArraySize(attlist);
        c->columns = xcalloc(n, sizeof *c->columns);
        c->sources = xcalloc(n, sizeof *c->sources);
        const cJSON *a;
        known = true;
        cJSON_ArrayForEach(a, attlist)
        {
            const char *name = sql_string_node(a);
            if (!name) known = false;
            c->columns[c->n_columns] = name ? xstrdup(name) : NULL;
            c->sources[c->n_columns++] = name ? xstrdup(name) : NULL;
        }
    } else if (rel) {
        c->table = rangevar_name(rel); /* every column, in an order only the catalog knows */
        if (rangevar_parts(rel, c)) c->whole = SQL_COPY_TABLE;
    } else if (query) {
        known = query_columns(query, c);
    }
    bool layout = read_options(child(copy, "options"), c);
    if (!c->escape) c->escape = c->quote;
    c->known = known && layout && c->format != 'b';
    if (known || !layout || c->format == 'b') c->whole = SQL_COPY_NAMED;
    return c;
}

void sql_copy_out_free(struct sql_copy_out *c)
{
    if (!c) return;
    for (unsigned i = 0; i < c->n_columns; i++) {
        free(c->columns[i]);
        free(c->sources[i]);
    }
    free(c->columns);
    free(c->sources);
    free(c->table);
    free(c->rel_schema);
    free(c->rel_name);
    free(c->null_str);
    free(c);
}
