/*
 * sql_const.c: evaluate constant WHERE expressions of a libpg_query JSON parse tree, to tell
 * `DELETE FROM t WHERE 1=1` from a real filter. It knows literals (integers, numerics,
 * strings, booleans, NULL), casts to boolean, numeric and text types, AND/OR/NOT with SQL's
 * three-valued logic, comparisons, + - *, IN, BETWEEN, IS [NOT] NULL, IS [NOT] TRUE/FALSE/
 * UNKNOWN, IS [NOT] DISTINCT FROM, (SELECT const) and EXISTS (SELECT const). Anything else is
 * unknown: the caller then treats the WHERE as a real one. Column references are unknown, except
 * that `x = x` (and <=, >=, IS NOT DISTINCT FROM) on the same column counts as true.
 *
 * Quirk of libpg_query 15-4.0's JSON: a negative or zero integer literal prints as "ival": {};
 * its value is read back from the query text at the literal's location.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sql/sql_int.h"

enum vkind { V_UNK, V_NULL, V_BOOL, V_INT, V_NUM, V_STR };

struct val {
    enum vkind k;
    bool b;
    long long i;
    double d;
    const char *s;
};

static const struct val UNK = {.k = V_UNK};

/* Parse an integer literal as PostgreSQL 15 writes them (decimal, optional sign). */
static bool parse_int(const char *s, long long *out)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (!*s) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return false;
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
        end++;
    if (*end) return false;
    *out = v;
    return true;
}

static bool parse_num(const char *s, double *out)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (!*s) return false;
    /* Only plain decimal notation: no hex floats, inf or nan spellings of strtod. */
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789+-.eE \t\r\n", *p)) return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v)) return false;
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
        end++;
    if (*end) return false;
    *out = v;
    return true;
}

/* PostgreSQL's parse_bool: true/false/yes/no/on/off/1/0 and unique prefixes. */
static bool parse_bool(const char *s, bool *out)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n == 0) return false;
    static const struct {
        const char *word;
        size_t min;
        bool v;
    } words[] = {{"true", 1, true}, {"false", 1, false}, {"yes", 1, true},
                 {"no", 1, false},  {"on", 2, true},     {"off", 2, false}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (n >= words[i].min && n <= strlen(words[i].word) &&
            strncasecmp(s, words[i].word, n) == 0) {
            *out = words[i].v;
            return true;
        }
    }
    if (n == 1 && (s[0] == '1' || s[0] == '0')) {
        *out = s[0] == '1';
        return true;
    }
    return false;
}

static struct val eval(const cJSON *expr, const char *src, int depth);

static struct val eval_const(const cJSON *c, const char *src)
{
    struct val v = UNK;
    const cJSON *x;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "isnull"))) {
        v.k = V_NULL;
    } else if ((x = cJSON_GetObjectItemCaseSensitive(c, "boolval"))) {
        v.k = V_BOOL;
        v.b = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "boolval"));
    } else if ((x = cJSON_GetObjectItemCaseSensitive(c, "ival"))) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(x, "ival");
        if (cJSON_IsNumber(n)) {
            v.k = V_INT;
            v.i = (long long)n->valuedouble;
        } else {
            /* 0 or negative: read the literal back from the text. */
            const cJSON *loc = cJSON_GetObjectItemCaseSensitive(c, "location");
            long long pos = cJSON_IsNumber(loc) ? (long long)loc->valuedouble : 0;
            if (pos < 0 || !src || (size_t)pos >= strlen(src)) return UNK;
            const char *p = src + pos;
            char buf[32];
            size_t n2 = 0;
            if (*p == '-' || *p == '+') buf[n2++] = *p++;
            while (*p >= '0' && *p <= '9' && n2 < sizeof buf - 1)
                buf[n2++] = *p++;
            buf[n2] = '\0';
            if ((*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || (*p | 0x20) == 'e' ||
                (*p | 0x20) == 'x')
                return UNK;
            if (!parse_int(buf, &v.i)) return UNK;
            v.k = V_INT;
        }
    } else if ((x = cJSON_GetObjectItemCaseSensitive(c, "fval"))) {
        const char *s = sql_str_field(x, "fval");
        if (!s || !parse_num(s, &v.d)) return UNK;
        v.k = V_NUM;
    } else if ((x = cJSON_GetObjectItemCaseSensitive(c, "sval"))) {
        const char *s = sql_str_field(x, "sval");
        v.k = V_STR;
        v.s = s ? s : "";
    }
    return v;
}

static struct val vbool(bool b)
{
    struct val v = {.k = V_BOOL, .b = b};
    return v;
}

static struct val vnull(void)
{
    struct val v = {.k = V_NULL};
    return v;
}

static enum sql_tv to_tv(struct val v)
{
    bool b;
    switch (v.k) {
    case V_NULL:
        return SQL_TV_NULL;
    case V_BOOL:
        return v.b ? SQL_TV_TRUE : SQL_TV_FALSE;
    case V_STR:
        if (parse_bool(v.s, &b)) return b ? SQL_TV_TRUE : SQL_TV_FALSE;
        return SQL_TV_UNKNOWN;
    default:
        return SQL_TV_UNKNOWN;
    }
}

static struct val from_tv(enum sql_tv t)
{
    switch (t) {
    case SQL_TV_TRUE:
        return vbool(true);
    case SQL_TV_FALSE:
        return vbool(false);
    case SQL_TV_NULL:
        return vnull();
    default:
        return UNK;
    }
}

/* Coerce an unknown-type string literal to a number (as PostgreSQL would against a number). */
static bool as_number(struct val *v)
{
    if (v->k == V_INT || v->k == V_NUM) return true;
    if (v->k != V_STR) return false;
    if (parse_int(v->s, &v->i)) {
        v->k = V_INT;
        return true;
    }
    if (parse_num(v->s, &v->d)) {
        v->k = V_NUM;
        return true;
    }
    return false;
}

static double num_of(struct val v)
{
    return v.k == V_INT ? (double)v.i : v.d;
}

/* -1, 0, 1; or 2 when not comparable. Only = and <> make sense for strings. */
static int compare(struct val a, struct val b, bool ordered)
{
    if (a.k == V_STR && b.k == V_STR) {
        if (ordered) return 2;
        return strcmp(a.s, b.s) == 0 ? 0 : 1;
    }
    if (a.k == V_BOOL || b.k == V_BOOL) {
        if (a.k == V_STR) {
            bool x;
            if (!parse_bool(a.s, &x)) return 2;
            a = vbool(x);
        }
        if (b.k == V_STR) {
            bool x;
            if (!parse_bool(b.s, &x)) return 2;
            b = vbool(x);
        }
        if (a.k != V_BOOL || b.k != V_BOOL) return 2;
        return (int)a.b - (int)b.b;
    }
    if ((a.k == V_INT || a.k == V_NUM || b.k == V_INT || b.k == V_NUM) && as_number(&a) &&
        as_number(&b)) {
        if (a.k == V_INT && b.k == V_INT) return a.i < b.i ? -1 : a.i > b.i;
        double x = num_of(a), y = num_of(b);
        return x < y ? -1 : x > y;
    }
    return 2;
}

static const char *op_name(const cJSON *name)
{
    int n = cJSON_GetArraySize(name);
    if (n < 1 || n > 2) return NULL;
    if (n == 2) {
        const char *schema = sql_str_field(cJSON_GetArrayItem(name, 0)->child, "sval");
        if (!schema || strcmp(schema, "pg_catalog") != 0) return NULL;
    }
    const cJSON *last = cJSON_GetArrayItem(name, n - 1);
    if (!last || !last->child || !last->child->string || strcmp(last->child->string, "String"))
        return NULL;
    return sql_str_field(last->child, "sval");
}

static struct val cmp_op(const char *op, struct val a, struct val b)
{
    if (a.k == V_UNK || b.k == V_UNK) return UNK;
    if (a.k == V_NULL || b.k == V_NULL) return vnull();
    bool ordered = strcmp(op, "=") != 0 && strcmp(op, "<>") != 0 && strcmp(op, "!=") != 0;
    int c = compare(a, b, ordered);
    if (c == 2) return UNK;
    if (!strcmp(op, "=")) return vbool(c == 0);
    if (!strcmp(op, "<>") || !strcmp(op, "!=")) return vbool(c != 0);
    if (!strcmp(op, "<")) return vbool(c < 0);
    if (!strcmp(op, ">")) return vbool(c > 0);
    if (!strcmp(op, "<=")) return vbool(c <= 0);
    if (!strcmp(op, ">=")) return vbool(c >= 0);
    return UNK;
}

static struct val arith_op(const char *op, struct val a, struct val b)
{
    if (a.k == V_UNK || b.k == V_UNK) return UNK;
    if (a.k == V_NULL || b.k == V_NULL) return vnull();
    if (!as_number(&a) || !as_number(&b)) return UNK;
    struct val r = UNK;
    if (a.k == V_INT && b.k == V_INT) {
        r.k = V_INT;
        bool ovf;
        if (!strcmp(op, "+"))
            ovf = __builtin_add_overflow(a.i, b.i, &r.i);
        else if (!strcmp(op, "-"))
            ovf = __builtin_sub_overflow(a.i, b.i, &r.i);
        else if (!strcmp(op, "*"))
            ovf = __builtin_mul_overflow(a.i, b.i, &r.i);
        else
            return UNK;
        return ovf ? UNK : r;
    }
    double x = num_of(a), y = num_of(b);
    r.k = V_NUM;
    if (!strcmp(op, "+"))
        r.d = x + y;
    else if (!strcmp(op, "-"))
        r.d = x - y;
    else if (!strcmp(op, "*"))
        r.d = x * y;
    else
        return UNK;
    return isfinite(r.d) ? r : UNK;
}

static bool same_column(const cJSON *l, const cJSON *r)
{
    const char *tl, *tr;
    const cJSON *bl = sql_node_body(l, &tl), *br = sql_node_body(r, &tr);
    if (!bl || !br || strcmp(tl, "ColumnRef") || strcmp(tr, "ColumnRef")) return false;
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(bl, "fields");
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(br, "fields");
    return fl && fr && cJSON_Compare(fl, fr, true);
}

static struct val and_or(bool is_and, struct val a, struct val b)
{
    enum sql_tv x = to_tv(a), y = to_tv(b);
    enum sql_tv dominant = is_and ? SQL_TV_FALSE : SQL_TV_TRUE;
    enum sql_tv neutral = is_and ? SQL_TV_TRUE : SQL_TV_FALSE;
    if (x == dominant || y == dominant) return from_tv(dominant);
    if (x == SQL_TV_UNKNOWN || y == SQL_TV_UNKNOWN) return UNK;
    if (x == neutral && y == neutral) return from_tv(neutral);
    return vnull();
}

static struct val not_val(struct val a)
{
    switch (to_tv(a)) {
    case SQL_TV_TRUE:
        return vbool(false);
    case SQL_TV_FALSE:
        return vbool(true);
    case SQL_TV_NULL:
        return vnull();
    default:
        return UNK;
    }
}

static const cJSON *list_items(const cJSON *expr)
{
    const char *t;
    const cJSON *b = sql_node_body(expr, &t);
    if (!b || strcmp(t, "List")) return NULL;
    return cJSON_GetObjectItemCaseSensitive(b, "items");
}

static struct val between(struct val x, struct val lo, struct val hi)
{
    return and_or(true, cmp_op(">=", x, lo), cmp_op("<=", x, hi));
}

static struct val eval_aexpr(const cJSON *a, const char *src, int depth)
{
    const char *kind = sql_str_field(a, "kind");
    const char *op = op_name(cJSON_GetObjectItemCaseSensitive(a, "name"));
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(a, "lexpr");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(a, "rexpr");
    if (!kind || !op || !r) return UNK;

    if (!strcmp(kind, "AEXPR_OP")) {
        if (l && same_column(l, r) && (!strcmp(op, "=") || !strcmp(op, "<=") || !strcmp(op, ">=")))
            return vbool(true);
        struct val rv = eval(r, src, depth + 1);
        if (!l) { /* prefix operator */
            if (!strcmp(op, "+") || !strcmp(op, "-")) {
                struct val zero = {.k = V_INT, .i = 0};
                if (rv.k == V_NULL) return rv;
                if (!as_number(&rv)) return UNK;
                return !strcmp(op, "+") ? rv : arith_op("-", zero, rv);
            }
            return UNK;
        }
        struct val lv = eval(l, src, depth + 1);
        if (!strcmp(op, "+") || !strcmp(op, "-") || !strcmp(op, "*")) return arith_op(op, lv, rv);
        return cmp_op(op, lv, rv);
    }
    if (!l) return UNK;
    if (!strcmp(kind, "AEXPR_DISTINCT") || !strcmp(kind, "AEXPR_NOT_DISTINCT")) {
        bool distinct = !strcmp(kind, "AEXPR_DISTINCT");
        if (same_column(l, r)) return vbool(!distinct);
        struct val lv = eval(l, src, depth + 1), rv = eval(r, src, depth + 1);
        if (lv.k == V_UNK || rv.k == V_UNK) return UNK;
        bool differ;
        if (lv.k == V_NULL || rv.k == V_NULL) {
            differ = lv.k != rv.k;
        } else {
            int c = compare(lv, rv, false);
            if (c == 2) return UNK;
            differ = c != 0;
        }
        return vbool(distinct ? differ : !differ);
    }
    if (!strcmp(kind, "AEXPR_IN")) {
        const cJSON *items = list_items(r);
        if (!items) return UNK;
        bool in = !strcmp(op, "=");
        if (!in && strcmp(op, "<>")) return UNK;
        struct val lv = eval(l, src, depth + 1);
        if (lv.k == V_UNK) return UNK;
        struct val acc = vbool(!in); /* IN: OR from false; NOT IN: AND from true */
        const cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            struct val c = cmp_op(in ? "=" : "<>", lv, eval(it, src, depth + 1));
            acc = and_or(!in, acc, c);
            if (acc.k == V_UNK) return UNK;
        }
        return acc;
    }
    if (!strncmp(kind, "AEXPR_BETWEEN", 13) || !strncmp(kind, "AEXPR_NOT_BETWEEN", 17)) {
        const cJSON *items = list_items(r);
        if (!items || cJSON_GetArraySize(items) != 2) return UNK;
        struct val x = eval(l, src, depth + 1);
        struct val lo = eval(cJSON_GetArrayItem(items, 0), src, depth + 1);
        struct val hi = eval(cJSON_GetArrayItem(items, 1), src, depth + 1);
        struct val res = between(x, lo, hi);
        if (strstr(kind, "_SYM")) res = and_or(false, res, between(x, hi, lo));
        if (strstr(kind, "NOT_")) res = not_val(res);
        return res;
    }
    return UNK;
}

/* A SELECT with nothing but a target list (no FROM, WHERE, GROUP BY, LIMIT, set operation). */
static const cJSON *bare_select_targets(const cJSON *subselect)
{
    const char *t;
    const cJSON *s = sql_node_body(subselect, &t);
    if (!s || strcmp(t, "SelectStmt")) return NULL;
    const cJSON *targets = NULL, *f;
    cJSON_ArrayForEach(f, s)
    {
        if (!strcmp(f->string, "targetList"))
            targets = f;
        else if (!strcmp(f->string, "limitOption")) {
            if (!cJSON_IsString(f) || strcmp(f->valuestring, "LIMIT_OPTION_DEFAULT")) return NULL;
        } else if (!strcmp(f->string, "op")) {
            if (!cJSON_IsString(f) || strcmp(f->valuestring, "SETOP_NONE")) return NULL;
        } else
            return NULL;
    }
    return targets;
}

static struct val target_val(const cJSON *target, const char *src, int depth)
{
    const char *t;
    const cJSON *rt = sql_node_body(target, &t);
    if (!rt || strcmp(t, "ResTarget")) return UNK;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rt, "val");
    return v ? eval(v, src, depth + 1) : UNK;
}

static struct val eval_sublink(const cJSON *s, const char *src, int depth)
{
    const char *type = sql_str_field(s, "subLinkType");
    const cJSON *targets = bare_select_targets(cJSON_GetObjectItemCaseSensitive(s, "subselect"));
    if (!type || !targets) return UNK;
    if (!strcmp(type, "EXPR_SUBLINK")) {
        if (cJSON_GetArraySize(targets) != 1) return UNK;
        return target_val(cJSON_GetArrayItem(targets, 0), src, depth);
    }
    if (!strcmp(type, "EXISTS_SUBLINK")) {
        /* One row comes back as long as every target is a plain constant. */
        const cJSON *it;
        cJSON_ArrayForEach(it, targets)
        {
            if (target_val(it, src, depth).k == V_UNK) return UNK;
        }
        return vbool(true);
    }
    return UNK;
}

static struct val eval_cast(const cJSON *tc, const char *src, int depth)
{
    const cJSON *arg = cJSON_GetObjectItemCaseSensitive(tc, "arg");
    const cJSON *tn = cJSON_GetObjectItemCaseSensitive(tc, "typeName");
    const cJSON *names = tn ? cJSON_GetObjectItemCaseSensitive(tn, "names") : NULL;
    int n = cJSON_GetArraySize(names);
    if (!arg || n < 1 || n > 2 || cJSON_GetObjectItemCaseSensitive(tn, "arrayBounds")) return UNK;
    if (n == 2) {
        const cJSON *s0 = cJSON_GetArrayItem(names, 0);
        const char *schema = s0 && s0->child ? sql_str_field(s0->child, "sval") : NULL;
        if (!schema || strcmp(schema, "pg_catalog")) return UNK;
    }
    const cJSON *last = cJSON_GetArrayItem(names, n - 1);
    const char *type = last && last->child ? sql_str_field(last->child, "sval") : NULL;
    if (!type) return UNK;
    struct val v = eval(arg, src, depth + 1);
    if (v.k == V_UNK || v.k == V_NULL) return v;
    if (!strcmp(type, "bool")) {
        bool b;
        if (v.k == V_BOOL) return v;
        if (v.k == V_STR) return parse_bool(v.s, &b) ? vbool(b) : UNK;
        if (v.k == V_INT) return vbool(v.i != 0);
        return UNK;
    }
    if (!strcmp(type, "int2") || !strcmp(type, "int4") || !strcmp(type, "int8")) {
        if (v.k == V_NUM) return UNK; /* rounding rules: not ours to guess */
        return as_number(&v) && v.k == V_INT ? v : UNK;
    }
    if (!strcmp(type, "numeric") || !strcmp(type, "float4") || !strcmp(type, "float8"))
        return as_number(&v) ? v : UNK;
    if (!strcmp(type, "text") || !strcmp(type, "varchar")) return v.k == V_STR ? v : UNK;
    return UNK;
}

static struct val eval(const cJSON *expr, const char *src, int depth)
{
    const char *type;
    const cJSON *b = sql_node_body(expr, &type);
    if (!b || depth > 256) return UNK;
    if (!strcmp(type, "A_Const")) return eval_const(b, src);
    if (!strcmp(type, "TypeCast")) return eval_cast(b, src, depth);
    if (!strcmp(type, "A_Expr")) return eval_aexpr(b, src, depth);
    if (!strcmp(type, "SubLink")) return eval_sublink(b, src, depth);
    if (!strcmp(type, "BoolExpr")) {
        const char *op = sql_str_field(b, "boolop");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(b, "args");
        if (!op || !cJSON_IsArray(args) || cJSON_GetArraySize(args) < 1) return UNK;
        if (!strcmp(op, "NOT_EXPR")) return not_val(eval(args->child, src, depth + 1));
        bool is_and = !strcmp(op, "AND_EXPR");
        if (!is_and && strcmp(op, "OR_EXPR")) return UNK;
        struct val acc = from_tv(is_and ? SQL_TV_TRUE : SQL_TV_FALSE);
        bool unknown = false;
        const cJSON *it;
        cJSON_ArrayForEach(it, args)
        {
            struct val v = eval(it, src, depth + 1);
            enum sql_tv tv = to_tv(v);
            if (tv == (is_and ? SQL_TV_FALSE : SQL_TV_TRUE)) return v.k == V_BOOL ? v : from_tv(tv);
            if (tv == SQL_TV_UNKNOWN)
                unknown = true;
            else
                acc = and_or(is_and, acc, from_tv(tv));
        }
        return unknown ? UNK : acc;
    }
    if (!strcmp(type, "NullTest")) {
        const char *t = sql_str_field(b, "nulltesttype");
        struct val v = eval(cJSON_GetObjectItemCaseSensitive(b, "arg"), src, depth + 1);
        if (!t || v.k == V_UNK) return UNK;
        bool isnull = v.k == V_NULL;
        return vbool(!strcmp(t, "IS_NULL") ? isnull : !isnull);
    }
    if (!strcmp(type, "BooleanTest")) {
        const char *t = sql_str_field(b, "booltesttype");
        enum sql_tv tv = to_tv(eval(cJSON_GetObjectItemCaseSensitive(b, "arg"), src, depth + 1));
        if (!t || tv == SQL_TV_UNKNOWN) return UNK;
        if (!strcmp(t, "IS_TRUE")) return vbool(tv == SQL_TV_TRUE);
        if (!strcmp(t, "IS_NOT_TRUE")) return vbool(tv != SQL_TV_TRUE);
        if (!strcmp(t, "IS_FALSE")) return vbool(tv == SQL_TV_FALSE);
        if (!strcmp(t, "IS_NOT_FALSE")) return vbool(tv != SQL_TV_FALSE);
        if (!strcmp(t, "IS_UNKNOWN")) return vbool(tv == SQL_TV_NULL);
        if (!strcmp(t, "IS_NOT_UNKNOWN")) return vbool(tv != SQL_TV_NULL);
        return UNK;
    }
    return UNK;
}

enum sql_tv sql_const_truth(const cJSON *expr, const char *src)
{
    return to_tv(eval(expr, src, 0));
}
