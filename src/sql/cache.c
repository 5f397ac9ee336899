/*
 * cache.c: a per-thread cache of statement facts, so the hot path does not parse the same
 * statement twice. Statements that differ only in literal values share an entry: pgbench
 * -S -M simple sends a new literal every time.
 *
 * The key is the statement's text with each numeric and plain string literal replaced by a
 * marker that cannot occur in SQL (small integers, which may be a column position as in ORDER
 * BY 1, get a marker of their own). The key is conservative: anything whose tokenizing could
 * depend on settings or on context (comments, backslashes anywhere, E'' U&'' B'' X'' N''
 * prefixes, dollar quotes, control bytes, numbers glued to names) gives no key, and the
 * statement is parsed every time. Facts are only shared when they cannot depend on literal
 * values:
 *  - statements with any flag or any function call are never cached (set_config('role', ...));
 *  - a key with literals is shared only by SELECT/INSERT/UPDATE/DELETE/MERGE: the literals of
 *    utility statements decide facts (SET ROLE 'none' vs 'admin', EXPLAIN (ANALYZE 0) vs 1);
 *  - statements that write only when every literal is compared with a column (`col = 5`,
 *    `col + -5`; reserved words such as TRUE, NULL, WHERE, AND are not columns), since a
 *    comparison of two constants may be a tautology (WHERE 1=1, WHERE true = 't'), except a
 *    single INSERT whose text has no WHERE/WITH/SELECT/ON/USING/FROM/HAVING/JOIN/RETURNING,
 *    whose literals can only be values to insert;
 *  - only when pg_query_normalize() replaced exactly the blanked literals by $n, so that the
 *    shared normalized text (and fingerprint) holds no literal of any one statement.
 * tests/unit/test_cache.c (property test over tests/unit/sql_facts.tsv) and
 * tests/fuzz/fuzz_cache.c check that a hit never yields facts different from a full parse.
 *
 * Entries live until evicted (direct-mapped, SQL_CACHE_SLOTS per thread); facts returned
 * by sql_facts_cached() stay valid until the next call on the same thread.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "sql/sql.h"

#define SQL_CACHE_SLOTS 1024
#define SQL_CACHE_MAX_KEY 8192
#define MARK_NUM "\x01n"
#define MARK_INT "\x01i" /* at most 9 digits: always an Integer node, never a Float */
#define MARK_STR "\x01s"
#define MARK_BYTE '\x01' /* first byte of every marker */

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

/*
 * PostgreSQL 15's reserved and type/function-name keywords (sorted): they can never be a bare
 * column name, and some are constants (TRUE, FALSE, NULL, CURRENT_USER), so for the literal
 * rule they are not names: `WHERE true = 't'`, `WHERE -1 ...` and `AND -1` compare no column.
 */
/* clang-format off */
static const char *const reserved_words[] = {
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign",
    "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
    "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit",
    "localtime", "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only",
    "or", "order", "outer", "overlaps", "placing", "primary", "references", "returning", "right",
    "select", "session_user", "similar", "some", "symmetric", "table", "tablesample", "then", "to",
    "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when", "where",
    "window", "with",
};
/* clang-format on */

/* Words after which a literal could sit in a predicate or a query rather than in a plain
 * VALUES list (all of them reserved words). */
static const char *const clause_words[] = {"where", "with",   "select", "on",       "using",
                                           "from",  "having", "join",   "returning"};

#define KW_RESERVED 1u
#define KW_CLAUSE 2u
#define KW_MAX 24    /* longer words are no keyword */
#define KW_SLOTS 256 /* open addressing, a power of two above twice the words */

/* The reserved words by hash of their text, built once: each word of every statement is
 * looked up, and a binary search of strcmp calls was about 1 µs per statement. */
static struct {
    const char *word; /* NULL: empty slot */
    unsigned char len, flags;
} kw_table[KW_SLOTS];
static pthread_once_t kw_once = PTHREAD_ONCE_INIT;
_Static_assert(sizeof reserved_words / sizeof reserved_words[0] * 2 <= KW_SLOTS,
               "kw_table must stay at most half full (and never full: kw_build would not end)");

static uint32_t kw_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void kw_build(void)
{
    for (size_t i = 0; i < sizeof reserved_words / sizeof reserved_words[0]; i++) {
        const char *w = reserved_words[i];
        size_t n = strlen(w);
        unsigned flags = KW_RESERVED;
        for (size_t c = 0; c < sizeof clause_words / sizeof clause_words[0]; c++)
            if (strcmp(w, clause_words[c]) == 0) flags |= KW_CLAUSE;
        uint32_t h = kw_hash(w, n) & (KW_SLOTS - 1);
        while (kw_table[h].word)
            h = (h + 1) & (KW_SLOTS - 1);
        kw_table[h].word = w;
        kw_table[h].len = (unsigned char)n;
        kw_table[h].flags = (unsigned char)flags;
    }
}

/* KW_RESERVED (and KW_CLAUSE) when the word s of n bytes is one, in any case; else 0. The
 * caller has built the table (cache_key, once per statement). */
static unsigned keyword_flags(const unsigned char *s, size_t n)
{
    if (n >= KW_MAX) return 0;
    char low[KW_MAX];
    for (size_t i = 0; i < n; i++)
        low[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    for (uint32_t h = kw_hash(low, n) & (KW_SLOTS - 1); kw_table[h].word;
         h = (h + 1) & (KW_SLOTS - 1))
        if (kw_table[h].len == n && memcmp(kw_table[h].word, low, n) == 0) return kw_table[h].flags;
    return 0;
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
 * at most one unary sign) that itself follows a name: `col = 5`, `col + -5`. *plain_values is
 * set when no clause word (KW_CLAUSE) occurs, so literals can only be VALUES items.
 */
static long cache_key(const char *sql, char *out, size_t cap, bool *literals_compared,
                      bool *plain_values)
{
    size_t o = 0;
    bool clause_word = false;
    enum tok prev = TOK_NONE, prev2 = TOK_NONE, prev3 = TOK_NONE;
    bool compared = true;
    const unsigned char *p = (const unsigned char *)sql;
    static _Thread_local bool kw_seen; /* pthread_once is a call, and this runs per statement */
    if (!kw_seen) {
        pthread_once(&kw_once, kw_build);
        kw_seen = true;
    }
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
                    if (*p == '\\') return -1; /* standard_conforming_strings decides */
                    p++;
                }
                p++;
                EMIT(MARK_STR, 2);
            } else {
                const unsigned char *s = p;
                while (is_digit(*p))
                    p++;
                bool small_int = p - s <= 9 && *p != '.' && *p != 'e' && *p != 'E';
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
                /* ORDER BY 1 is a column position, ORDER BY 1.5 a constant: not one key. */
                EMIT(small_int ? MARK_INT : MARK_NUM, 2);
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
            unsigned kw = keyword_flags(s, (size_t)(p - s));
            if (kw & KW_CLAUSE) clause_word = true;
            PUSH(kw & KW_RESERVED ? TOK_OTHER : TOK_IDENT);
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
    *plain_values = !clause_word;
    return (long)o;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/*
 * Did pg_query_normalize() replace exactly the literals the key blanked, and nothing else? It
 * keeps some literals (ORDER BY 1, varchar(10), EXPLAIN options) and replaces some words (true,
 * null), and takes a sign into the literal (`+ -5` becomes `+ $1`). The normalized text is
 * shared with every statement of the key, so it must hold none of their literal values.
 */
static bool normalized_matches_key(const char *key, size_t klen, const char *norm)
{
    const char *k = key, *end = key + klen, *n = norm;
    if (!norm) return false;
    while (k < end) {
        const char *lit = k;
        if (*k == '-' || *k == '+') { /* a sign normalize may have taken in */
            lit = k + 1;
            while (lit < end &&
                   (*lit == ' ' || *lit == '\t' || *lit == '\n' || *lit == '\r' || *lit == '\f'))
                lit++;
            if (lit >= end || *lit != MARK_BYTE) lit = k;
        }
        if (*lit == MARK_BYTE && *n == '$' && is_digit((unsigned char)n[1])) {
            k = lit + 2;
            n++;
            while (is_digit((unsigned char)*n))
                n++;
            continue;
        }
        if (*k == MARK_BYTE || *k != *n) return false;
        k++;
        n++;
    }
    return *n == '\0';
}

/*
 * May these facts be reused for another statement of the same key? A key with literals in it
 * is shared only by plain DML: the literals of utility statements decide facts (SET ROLE
 * 'none' is no role change, EXPLAIN (ANALYZE 0) runs nothing while EXPLAIN (ANALYZE 1) DELETE
 * deletes).
 */
static bool facts_cacheable(const struct sql_facts *f, const char *key, size_t klen,
                            bool literals_compared, bool plain_values)
{
    static const char *const dml[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", NULL};
    bool has_literals = memchr(key, MARK_BYTE, klen) != NULL;
    if (f->n_stmts == 0) return false;
    if (has_literals && !normalized_matches_key(key, klen, f->normalized)) return false;
    for (unsigned i = 0; i < f->n_stmts; i++) {
        const struct sql_stmt *st = &f->stmts[i];
        if (st->flags || st->n_functions) return false;
        if (has_literals) {
            const char *const *d = dml;
            while (*d && strcmp(*d, st->command))
                d++;
            if (!*d) return false;
        }
        bool where_matters = strcmp(st->command, "UPDATE") == 0 ||
                             strcmp(st->command, "DELETE") == 0 ||
                             strcmp(st->command, "MERGE") == 0 || st->n_written > 0;
        /* INSERT ... VALUES (...) with no WHERE, WITH, SELECT, ON, ... anywhere: its literals
         * can only be values to insert, which no fact depends on. */
        bool plain_insert = f->n_stmts == 1 && strcmp(st->command, "INSERT") == 0 && plain_values;
        if (where_matters && !literals_compared && !plain_insert) return false;
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
    bool compared = false, plain_values = false;
    long klen = cache_key(sql, key, sizeof key, &compared, &plain_values);
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
    if (slot && facts_cacheable(&f, key, (size_t)klen, compared, plain_values)) {
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
    bool plain_values;
    return (int)cache_key(sql, out, cap, literals_compared, &plain_values);
}
