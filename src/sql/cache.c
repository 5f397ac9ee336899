/*
 * cache.c: a per-thread cache of statement facts, so the hot path does not parse the same
 * statement twice. Statements that differ only in literal values share an entry: pgbench
 * -S -M simple sends a new literal every time.
 *
 * The key is the statement's text with each numeric and plain string literal replaced by a
 * marker byte that cannot occur in SQL. The key is conservative: anything whose tokenizing
 * could depend on settings or on context (comments, backslashes, E'' U&'' B'' X'' prefixes,
 * dollar quotes, control bytes, numbers glued to names) gives no key, and the statement is
 * parsed every time. Facts are only cached when they cannot depend on literal values:
 * statements with any flag or any function call are never cached (set_config('role', ...)
 * and the like), and UPDATE/DELETE/MERGE only when every literal is compared with a column
 * (`col = 5`), since a comparison of two constants may be a tautology (WHERE 1=1).
 *
 * Entries live until evicted (direct-mapped, SQL_CACHE_SLOTS per thread); facts returned
 * by sql_facts_cached() stay valid until the next call on the same thread.
 */
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "sql/sql.h"

#define SQL_CACHE_SLOTS 1024
#define SQL_CACHE_MAX_KEY 8192
#define MARK_NUM "\x01n"
#define MARK_STR "\x01s"

struct cache_slot {
    char *key;
    size_t key_len;
    uint64_t hash;
    struct sql_facts facts;
};

static _Thread_local struct cache_slot *slots;
static _Thread_local struct sql_facts scratch; /* uncacheable facts of the last call */
static _Thread_local bool scratch_used;
static _Thread_local unsigned long hits, misses;

static bool is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Token classes the literal rule looks at. */
enum tok {
    TOK_NONE,
    TOK_IDENT, /* a name, keyword or $n parameter */
    TOK_OP,    /* an operator character */
    TOK_LITERAL,
    TOK_OTHER,
};

/*
 * Write the key of sql into out. Returns the key length, or -1 when the statement must be
 * parsed every time. *literals_compared is set when every literal follows an operator (with
 * at most one unary sign) that itself follows a name: `col = 5`, `col + -5`.
 */
static long cache_key(const char *sql, char *out, size_t cap, bool *literals_compared)
{
    size_t o = 0;
    enum tok prev = TOK_NONE, prev2 = TOK_NONE, prev3 = TOK_NONE;
    bool compared = true;
    const unsigned char *p = (const unsigned char *)sql;
#define EMIT(ptr, n)                                                                               \
    do {                                                                                           \
        if (o + (n) >= cap) return -1;                                                             \
        memcpy(out + o, (ptr), (n));                                                               \
        o += (n);                                                                                  \
    } while (0)
#define PUSH(t)                                                                                    \
    do {                                                                                           \
        prev3 = prev2;                                                                             \
        prev2 = prev;                                                                              \
        prev = (t);                                                                                \
    } while (0)
    while (*p) {
        unsigned char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
            EMIT(p, 1);
            p++;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\') return -1;
        if ((c == '-' && p[1] == '-') || (c == '/' && p[1] == '*')) return -1;
        if (c == '$') {
            if (!is_digit(p[1])) return -1; /* dollar quoting */
            const unsigned char *s = p++;
            while (is_digit(*p))
                p++;
            if (is_ident_char(*p)) return -1;
            EMIT(s, (size_t)(p - s));
            PUSH(TOK_IDENT); /* a parameter is as good as a column for the literal rule */
            continue;
        }
        if (c == '\'' || is_digit(c) || (c == '.' && is_digit(p[1]))) {
            /* A literal must not be glued to a name (E'..', U&'..', x1, 1e, 0x1F). */
            if (p != (const unsigned char *)sql &&
                (is_ident_char(p[-1]) || p[-1] == '&' || p[-1] == '\'' || p[-1] == '"'))
                return -1;
            if (c == '\'') {
                p++;
                for (;;) {
                    if (!*p) return -1;
                    if (*p == '\'' && p[1] == '\'') {
                        p += 2;
                        continue;
                    }
                    if (*p == '\'') break;
                    p++;
                }
                p++;
                EMIT(MARK_STR, 2);
            } else {
                while (is_digit(*p))
                    p++;
                if (*p == '.') {
                    p++;
                    while (is_digit(*p))
                        p++;
                }
                if (*p == 'e' || *p == 'E') {
                    p++;
                    if (*p == '+' || *p == '-') p++;
                    if (!is_digit(*p)) return -1;
                    while (is_digit(*p))
                        p++;
                }
                if (is_ident_char(*p) || *p == '.' || *p == '\'') return -1;
                EMIT(MARK_NUM, 2);
            }
            /* name OP literal, or name OP sign literal */
            bool ok = (prev == TOK_OP && prev2 == TOK_IDENT) ||
                      (prev == TOK_OP && prev2 == TOK_OP && prev3 == TOK_IDENT);
            if (!ok) compared = false;
            PUSH(TOK_LITERAL);
            continue;
        }
        if (c == '"') {
            const unsigned char *s = p++;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"' && p[1] == '"') {
                    p += 2;
                    continue;
                }
                if (*p == '"') break;
                p++;
            }
            p++;
            EMIT(s, (size_t)(p - s));
            PUSH(TOK_IDENT);
            continue;
        }
        if (is_ident_start(c)) {
            const unsigned char *s = p;
            while (is_ident_char(*p))
                p++;
            if (*p == '\'' || *p == '&') return -1; /* prefixed string: E'..', U&'..' */
            EMIT(s, (size_t)(p - s));
            PUSH(TOK_IDENT);
            continue;
        }
        EMIT(p, 1);
        p++;
        if (c == ')') {
            PUSH(TOK_OTHER);
        } else if (strchr("+-*/<>=~!@#%^&|`?", c)) {
            PUSH(TOK_OP);
        } else {
            PUSH(TOK_OTHER);
        }
    }
#undef EMIT
#undef PUSH
    out[o] = 0;
    *literals_compared = compared;
    return (long)o;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* May these facts be reused for another statement of the same key? */
static bool facts_cacheable(const struct sql_facts *f, bool literals_compared)
{
    if (f->n_stmts == 0) return false;
    for (unsigned i = 0; i < f->n_stmts; i++) {
        const struct sql_stmt *st = &f->stmts[i];
        if (st->flags || st->n_functions) return false;
        bool where_matters = strcmp(st->command, "UPDATE") == 0 ||
                             strcmp(st->command, "DELETE") == 0 ||
                             strcmp(st->command, "MERGE") == 0 || st->n_written > 0;
        if (where_matters && !literals_compared) return false;
    }
    return true;
}

const struct sql_facts *sql_facts_cached(const char *sql)
{
    if (scratch_used) {
        sql_facts_free(&scratch);
        scratch_used = false;
    }
    if (!slots) slots = xcalloc(SQL_CACHE_SLOTS, sizeof *slots);
    char key[SQL_CACHE_MAX_KEY];
    bool compared = false;
    long klen = cache_key(sql, key, sizeof key, &compared);
    uint64_t h = 0;
    struct cache_slot *slot = NULL;
    if (klen >= 0) {
        h = hash_bytes(key, (size_t)klen);
        slot = &slots[h % SQL_CACHE_SLOTS];
        if (slot->key && slot->hash == h && slot->key_len == (size_t)klen &&
            memcmp(slot->key, key, (size_t)klen) == 0) {
            hits++;
            return &slot->facts;
        }
    }
    misses++;
    struct sql_facts f;
    if (sql_analyze(sql, &f) != 0) return NULL;
    if (slot && facts_cacheable(&f, compared)) {
        if (slot->key) {
            free(slot->key);
            sql_facts_free(&slot->facts);
        }
        slot->key = xmalloc((size_t)klen + 1);
        memcpy(slot->key, key, (size_t)klen + 1);
        slot->key_len = (size_t)klen;
        slot->hash = h;
        slot->facts = f;
        return &slot->facts;
    }
    scratch = f;
    scratch_used = true;
    return &scratch;
}

void sql_cache_stats(unsigned long *hit, unsigned long *miss)
{
    *hit = hits;
    *miss = misses;
}

void sql_cache_clear(void)
{
    if (scratch_used) {
        sql_facts_free(&scratch);
        scratch_used = false;
    }
    if (!slots) return;
    for (unsigned i = 0; i < SQL_CACHE_SLOTS; i++) {
        if (!slots[i].key) continue;
        free(slots[i].key);
        sql_facts_free(&slots[i].facts);
    }
    free(slots);
    slots = NULL;
}

int sql_cache_key_for_test(const char *sql, char *out, size_t cap, bool *literals_compared)
{
    return (int)cache_key(sql, out, cap, literals_compared);
}
