/*
 * sql.h: what sluice understands of a SQL string, from the real PostgreSQL parser
 * (libpg_query, PostgreSQL 15 grammar). Pure code: a string in, facts out; no sockets, no
 * policy, no configuration.
 *
 * sql_analyze() parses every statement of a query string (a simple Query may hold several;
 * a Parse message holds one) and fills one struct sql_stmt per statement: command, class,
 * tables read and written (through CTEs, subqueries, EXPLAIN, PREPARE, CREATE TABLE AS,
 * SELECT INTO, MERGE), functions called, WHERE presence for UPDATE/DELETE (a tautology such as
 * WHERE true or WHERE 1=1 counts as no WHERE), and flags for what guardrails look at. It also
 * gives the fingerprint (pg_query_fingerprint: equal for statements differing only in
 * literals) and the normalized text (pg_query_normalize: literals replaced by $n).
 *
 * Ownership: sql_analyze() fills *out; the caller releases it with sql_facts_free(). Strings
 * in the facts are owned by the facts. Thread-safe (libpg_query keeps per-thread state); never
 * call pg_query_exit() from a worker thread.
 */
#ifndef SLUICE_SQL_SQL_H
#define SLUICE_SQL_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sql_class {
    SQL_READ,        /* SELECT, SHOW, EXPLAIN without ANALYZE of anything, VALUES, FETCH ... */
    SQL_WRITE,       /* INSERT, UPDATE, DELETE, MERGE, COPY FROM, SELECT INTO/CTAS counts as ddl */
    SQL_DDL,         /* CREATE, ALTER, DROP, TRUNCATE, COMMENT, CREATE TABLE AS, SELECT INTO ... */
    SQL_DCL,         /* GRANT, REVOKE, CREATE/ALTER/DROP ROLE, ALTER DEFAULT PRIVILEGES */
    SQL_ADMIN,       /* ALTER SYSTEM, VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, LOAD ... */
    SQL_TRANSACTION, /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION ... */
    SQL_UTILITY,     /* SET, RESET, SHOW? (no: read), LISTEN, NOTIFY, DISCARD, PREPARE, EXECUTE,
                        DEALLOCATE, DECLARE/CLOSE cursor, LOCK, DO, CALL, ... */
    SQL_CLASS_COUNT,
};

/* Flags: what the guardrails and the "cannot judge" rule look at. */
enum sql_flag {
    SQL_F_NO_WHERE = 1u << 0,        /* UPDATE or DELETE without WHERE, or WHERE a tautology */
    SQL_F_TAUTOLOGY = 1u << 1,       /* ... and it was a tautology (WHERE true, 1=1, 'a'='a') */
    SQL_F_COPY_PROGRAM = 1u << 2,    /* COPY ... TO/FROM PROGRAM */
    SQL_F_COPY_FILE = 1u << 3,       /* COPY ... TO/FROM 'file' on the server */
    SQL_F_ALTER_SYSTEM = 1u << 4,    /* ALTER SYSTEM */
    SQL_F_ROLE_CHANGE = 1u << 5,     /* SET ROLE, SET SESSION AUTHORIZATION (not RESET/NONE) */
    SQL_F_ROLE_PRIVILEGE = 1u << 6,  /* CREATE/ALTER ROLE with SUPERUSER, BYPASSRLS, REPLICATION,
                                        CREATEROLE; GRANT of a role (membership) */
    SQL_F_UNJUDGEABLE = 1u << 7,     /* DO, CALL, EXECUTE of dynamic SQL inside functions we
                                        cannot see, CREATE FUNCTION/PROCEDURE bodies */
    SQL_F_PARSE_ERROR = 1u << 8,     /* the parser refused the text */
    SQL_F_EXPLAIN_ANALYZE = 1u << 9, /* the statement runs under EXPLAIN ANALYZE */
    SQL_F_PREPARE = 1u << 10,        /* SQL PREPARE: made now, run by each EXECUTE */
    /* it sets how the server reads statement text (standard_conforming_strings not on, a
     * client_encoding whose characters may hold the bytes of ' or \, or a value sluice cannot
     * read), which sluice reads only as PostgreSQL's defaults do */
    SQL_F_TEXT_SETTING = 1u << 11,
    /* set by the relay, never by sql_analyze: the session's text settings are such, so
     * sluice may read this statement differently from the server */
    SQL_F_TEXT_DOUBT = 1u << 12,
    /* an INSERT, UPDATE, DELETE or MERGE inside another statement (a data-modifying WITH):
     * its rows are not in the statement's CommandComplete tag */
    SQL_F_NESTED_WRITE = 1u << 13,
    /* an ALTER that destroys part of a table's data: DROP COLUMN (of a table or a composite
     * type's attribute), ALTER COLUMN ... TYPE (rewrites every value; USING may set any) */
    SQL_F_DROP_PART = 1u << 14,
    /* changes what a new session starts with or whether it may log in, which a backend
     * already logged in never learns: ALTER ROLE and ALTER DATABASE (their SET, RESET and
     * RENAME too), DROP ROLE, REVOKE. Pooled upstream connections made before it are not
     * reused.
     * (the last flag: tests/fuzz/fuzz_sql.c checks none is above it) */
    SQL_F_LOGIN_STATE = 1u << 15
};

/* The key approvals match a statement by (SQL_KEY_LEN bytes with its NUL): its fingerprint,
 * then the first 16 hex digits of a SHA-256 over its parse tree without literal values or
 * positions. PostgreSQL's fingerprint alone leaves out digits in names (orders_2024 is
 * orders_1999) and what is nested deeper than 100 levels; the tree hash keeps every name as
 * written and the whole tree, but not the literals (the same statement with other values has
 * the same key, so has one with $n parameters in their place), nor white space or keyword
 * case. -1 when sql does not parse. */
#define SQL_KEY_LEN 34
int sql_approval_key(const char *sql, uint64_t fingerprint, char out[SQL_KEY_LEN]);
/* The key of a statement approved for its exact text (its values matter: SET ROLE, ALTER
 * SYSTEM, pg_read_file, ...): "t" and 32 hex digits of a SHA-256 over the text as sent. -1 on
 * an internal failure. */
int sql_exact_key(const char *sql, char out[SQL_KEY_LEN]);
/* Whether sql holds a parameter ($1), or cannot be scanned (taken as holding one). */
bool sql_has_params(const char *sql);

/* sql with every literal value (string, number, bit string) replaced by `?`, for the audit
 * and approvers where pg_query_normalize leaves literals in place (utility statements, text
 * that does not parse). Text the scanner stops in (an unterminated quote) is cut before its
 * first quote and ends in "...". The caller frees the result. */
char *sql_blank_literals(const char *sql);

/* Is this client_encoding one whose multibyte characters may hold ASCII bytes (SJIS, BIG5,
 * GBK, UHC, GB18030, JOHAB: PostgreSQL allows them for clients only)? Names compare as
 * PostgreSQL's do: in any case, ignoring what is not a letter or digit. */
bool sql_encoding_unsafe(const char *name);

/* COPY ... TO STDOUT: what its lines hold (sql_copy.c). */
struct sql_copy_out {
    bool known;     /* columns[] names every column of a line, in order (text or CSV) */
    char **columns; /* names as written, lower-cased unless quoted; NULL: an expression */
    char **sources; /* the column each one reads when it is a plain column reference */
    unsigned n_columns;
    char *table; /* "schema.table" or "table" as written; NULL when not one table */
    /* Not known, but the lines hold every column of one table (rel_schema, rel_name), which
     * only its catalog can name, in attribute order: SQL_COPY_TABLE for `COPY t TO STDOUT`
     * (generated columns left out, as COPY leaves them), SQL_COPY_STAR for `COPY (SELECT *
     * FROM t) TO STDOUT` (with them). Set only when the layout is understood (text or CSV). */
    enum sql_copy_whole { SQL_COPY_NAMED, SQL_COPY_TABLE, SQL_COPY_STAR } whole;
    char *rel_schema; /* as the server reads it; NULL when unqualified */
    char *rel_name;
    char format;                   /* 't' text, 'c' csv, 'b' binary */
    char delimiter, quote, escape; /* (quote and escape: CSV) */
    bool header;                   /* the first line holds the column names */
    char *null_str;                /* how a NULL is written */
};

struct sql_stmt {
    const char *command; /* upper case tag: "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE",
                            "TRUNCATE", "DROP", "ALTER", "CREATE", "GRANT", "REVOKE", "COPY",
                            "DO", "CALL", "SET", "SHOW", "BEGIN", "COMMIT", "ROLLBACK", "EXPLAIN",
                            "PREPARE", "EXECUTE", "VACUUM", ... ("UNKNOWN" when unparseable) */
    enum sql_class cls;
    unsigned flags; /* enum sql_flag */
    /* Relations as written, lower-cased unless quoted: "schema.table" when qualified, else
     * "table". Deduplicated. CTE names are not tables. */
    char **tables_read;
    unsigned n_read;
    char **tables_written;
    unsigned n_written;
    /* Functions called, "schema.name" when qualified else "name", lower-cased. */
    char **functions;
    unsigned n_functions;
    /* SAVEPOINT, RELEASE and ROLLBACK TO: the savepoint's name as the server keeps it; NULL
     * for any other statement (so a ROLLBACK with a name is a ROLLBACK TO) */
    char *savepoint;
    bool chain; /* COMMIT AND CHAIN, ROLLBACK AND CHAIN: a new block starts at once */
    /* PREPARE and DEALLOCATE: the name of the prepared statement it makes or drops; NULL
     * for any other statement */
    char *prepared_name;
    bool prepared_all; /* DEALLOCATE ALL, DISCARD ALL: every prepared statement is dropped */
    /* DECLARE and CLOSE: the cursor (portal) it makes or closes; NULL for any other */
    char *cursor_name;
    bool cursor_all;               /* CLOSE ALL, DISCARD ALL: every portal is closed */
    struct sql_copy_out *copy_out; /* COPY ... TO STDOUT; NULL for any other statement */
};

struct sql_facts {
    struct sql_stmt *stmts;
    unsigned n_stmts;
    uint64_t fingerprint; /* of the whole string; 0 when it does not parse */
    char *normalized;     /* literals replaced by $n; NULL when it does not parse */
    char *error;          /* parser message when SQL_F_PARSE_ERROR; NULL otherwise */
};

/* Analyze sql (NUL-terminated). Returns 0 (facts filled, possibly with one UNKNOWN statement
 * flagged SQL_F_PARSE_ERROR) or -1 on an internal failure. */
int sql_analyze(const char *sql, struct sql_facts *out);
void sql_facts_free(struct sql_facts *f);

/* Facts from this thread's cache (src/sql/cache.c): statements differing only in literal
 * values share an entry when that cannot change their facts. The result belongs to the cache
 * and stays valid until the next call on this thread. NULL on an internal failure. */
const struct sql_facts *sql_facts_cached(const char *sql);
void sql_cache_stats(unsigned long *hits, unsigned long *misses);
void sql_cache_clear(void); /* frees this thread's cache (at thread exit) */
/* For tests: the cache key of sql (length, or -1 when it is parsed every time). */
int sql_cache_key_for_test(const char *sql, char *out, size_t cap, bool *literals_compared);

/* Every table the statements of f read, then write, as "a,b,c" (malloc'd; "" when none). */
char *sql_facts_tables(const struct sql_facts *f);

const char *sql_class_name(enum sql_class cls);
/* Parse "read", "write", ... ; -1 when unknown. */
int sql_class_from_name(const char *name);

#endif
