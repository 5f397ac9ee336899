/*
 * mask.h: detection and masking of sensitive values (issue 4). Pure code: bytes in, bytes
 * out, no sockets. src/proxy/ calls it from the relay; the audit and the logs use
 * mask_string() so that no raw detected value is ever written by sluice.
 *
 * A mask_db is compiled once per configuration snapshot from `masking:` (built-in detectors
 * plus custom ones, column rules, exemptions, masked forms, hash key) and is then read-only
 * and shared by every worker. Scanning needs per-thread scratch space, which this module
 * keeps itself (grown for each db a thread uses); mask_thread_release() frees it at thread
 * exit.
 *
 * Detection by value: one vectorscan database of bounded patterns, every match confirmed by
 * a validator (Luhn, mod-97, SSN rules, phone shapes, IP ranges, key prefixes, JWT shape)
 * before it is masked. Detection by column: RowDescription field names (and, when a resolver
 * is given, the catalog's schema.table.column) classified by name; type OIDs that cannot hold
 * text PII (integers, numeric, boolean, dates and times, uuid, ...) are skipped unless a column
 * rule names them or, for numbers and dates, one of those names says card number, SSN, phone
 * or birth date. Plans of RowDescriptions seen before come from a per-thread cache.
 *
 * Ownership: mask_db_build() and mask_plan_build() (and its _cached() and mask_plan_copy())
 * return objects the caller owns and frees with their _free().
 * Functions that write append to a caller-owned struct buf and never consume it.
 */
#ifndef SLUICE_MASK_MASK_H
#define SLUICE_MASK_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"

#define MASK_MAX_DETECTORS 64

struct mask_db;

/* Masked value counts, indexed by detector (mask_db_detector_name). */
struct mask_counts {
    uint32_t n[MASK_MAX_DETECTORS];
};

/* Compile cfg (cfg->enabled is not looked at: the caller decides whether to mask). NULL
 * with a message in err (naming the detector and, for a pattern, the compiler's complaint)
 * on failure. */
struct mask_db *mask_db_build(const struct cfg_masking *cfg, char *err, size_t errlen);
void mask_db_free(struct mask_db *db);
/* Free this thread's scratch space (worker and writer threads call it before exiting). */
void mask_thread_release(void);

unsigned mask_db_detector_count(const struct mask_db *db);
const char *mask_db_detector_name(const struct mask_db *db, unsigned i);
int mask_db_detector_index(const struct mask_db *db, const char *name); /* -1 when unknown */

/* Built-in detector names, for config validation and docs ("email", "credit_card", "ssn",
 * "phone", "iban", "ipv4", "ipv6", "secret", "jwt", ...); NULL-terminated. */
extern const char *const mask_builtin_detectors[];

/*
 * Detection by value over free text. When something is detected, the whole text with each
 * detected value replaced by its masked form is appended to out and the number of values
 * masked is returned (and counted in counts, which may be NULL). When nothing is detected,
 * nothing is appended and 0 is returned. -1 on a scanner failure (the caller fails closed).
 */
int mask_text(const struct mask_db *db, const uint8_t *s, size_t len, struct buf *out,
              struct mask_counts *counts);

/* Detection by value inside binary data whose framing must not move (binary arrays, binary
 * COPY tuples): every detected value is overwritten with '*' of the same length, in place.
 * Returns the number masked, -1 on a scanner failure. */
int mask_text_inplace(const struct mask_db *db, uint8_t *s, size_t len, struct mask_counts *counts);

/* The masked form of a whole value known to be sensitive (a column classified as detector
 * `detector` with form `form`; CFG_FORM_DEFAULT = the detector's own). Appends to out. */
void mask_value(const struct mask_db *db, int detector, enum cfg_mask_form form, const uint8_t *s,
                size_t len, struct buf *out);

/* A NUL-terminated copy of s with every detected value masked, for logs and the audit
 * (malloc'd; the caller frees it). db NULL: a copy of s. When the scan fails (out of memory)
 * mask_string() answers "[REDACTED:unscannable]" and mask_string_try() NULL. */
char *mask_string(const struct mask_db *db, const char *s);
char *mask_string_try(const struct mask_db *db, const char *s);

/* ---- shared inside src/mask/ (detect.c provides; rows.c and tests use) ---------------- */

/* Column-only detector names every db knows besides the built-ins, for values masked because
 * of their column: "dob", "address", "column"; NULL-terminated. Names from
 * masking.columns[].detector that are not detectors are added to a db the same way. Their
 * own form is full redaction. */
extern const char *const mask_column_detectors[];

/* The masking config as compiled into db: a deep copy of enabled, unmask, unmask_identities,
 * columns, exempt and form (detectors, custom and hash_key are not kept). Lives as long as
 * db. */
const struct cfg_masking *mask_db_config(const struct mask_db *db);
/* Index of the "column" detector (always present). */
int mask_db_column_detector(const struct mask_db *db);
/* True when detector i is looked for by value (an enabled built-in or a custom detector);
 * false for built-ins left out of masking.detectors and for column-only names. */
bool mask_db_detector_scans(const struct mask_db *db, unsigned i);
/* The form mask_value() uses for detector i given a column's form: the column's when not
 * DEFAULT, else masking.form when not DEFAULT, else the detector's own. */
enum cfg_mask_form mask_db_detector_form(const struct mask_db *db, unsigned i,
                                         enum cfg_mask_form form);

/* Batches: a scanner call has a fixed cost of a few hundred ns on short values (vectorscan's
 * start-up for a block), several times the cost of scanning an 80-byte value within a longer
 * text. rows.c therefore scans the values of many DataRows in one call: it adds them (copied,
 * joined by NUL bytes) to this thread's batch, scans the batch once, then takes each value's
 * result in order. A value is only answered from the batch when its bytes equal the bytes
 * scanned, so a stale batch (another session's rows, rows dropped by the relay) costs a
 * rescan, never a wrong answer. Only dbs without custom detectors are batched. */
#define MASK_BATCH_TEXT (32 * 1024) /* bytes of values (each + 1) per batch */
#define MASK_BATCH_VALUES 512
bool mask_db_batchable(const struct mask_db *db);
void mask_batch_reset(void);
/* Add a value (not empty) to the batch; false when it does not fit (nothing added). */
bool mask_batch_add(const uint8_t *s, size_t len);
/* Scan the batch; 0, or -1 on a scanner failure or a db that is not batchable (the batch is
 * then empty). */
int mask_batch_scan(const struct mask_db *db);
/* The batch of db has values not taken yet. */
bool mask_batch_pending(const struct mask_db *db);
/* The next value of the batch, which must be s[0, len): as mask_text() (0, or the count with
 * the masked text appended), or -2 when the batch has no next value for db or its bytes are
 * not s (the batch is then emptied; scan s with mask_text()). */
int mask_batch_take(const struct mask_db *db, const uint8_t *s, size_t len, struct buf *out,
                    struct mask_counts *counts);

/* ---- result rows (rows.c) --------------------------------------------------------- */

/* What the catalog says about a result column (any field may be NULL when unknown). */
struct mask_colref {
    const char *schema, *table, *column;
};

/* Resolve (table OID, attribute number) to names; false when unknown (not cached yet). */
typedef bool (*mask_resolve_fn)(void *ctx, uint32_t table_oid, int16_t attnum,
                                struct mask_colref *out);

struct mask_plan;

/*
 * Build the plan for one RowDescription (body: the bytes after type and length). resolve may
 * be NULL. Returns 0 with *out set (NULL when no column needs looking at: every DataRow of
 * this result can go through untouched), or -1 when the message is malformed.
 */
int mask_plan_build(const struct mask_db *db, const uint8_t *body, size_t len,
                    mask_resolve_fn resolve, void *ctx, struct mask_plan **out);
void mask_plan_free(struct mask_plan *p);
/* A copy of p (NULL for NULL). */
struct mask_plan *mask_plan_copy(const struct mask_plan *p);
/* The RowDescription (body after type and length) plan was built from, with every field name
 * that holds a detected value masked: 1 when a whole new 'T' message was appended to out, 0
 * when no name needs it (nothing appended), -1 when the message is malformed (nothing
 * appended). */
int mask_rowdesc_rewrite(const struct mask_db *db, const struct mask_plan *plan,
                         const uint8_t *body, size_t len, struct buf *out);

/*
 * mask_plan_build() through this thread's cache of recent plans (plan_cache.c): a
 * RowDescription this thread built a plan for before, with the same body bytes, db, resolve,
 * scope and epoch, costs a comparison and a copy of the plan. scope and epoch stand for all
 * that resolve's answers depend on besides (table OID, attribute number); read them before
 * the call (the relay: the target and its catalog_generation()). A plan built while resolve
 * answered false for a column is not kept (that column went by its field name only).
 * Bodies over MASK_PLAN_CACHE_BODY bytes are built every time. *out is the caller's, as from
 * mask_plan_build().
 */
#define MASK_PLAN_CACHE_SLOTS 32
#define MASK_PLAN_CACHE_BODY 2048
int mask_plan_build_cached(const struct mask_db *db, const uint8_t *body, size_t len,
                           mask_resolve_fn resolve, void *ctx, uint64_t scope, uint64_t epoch,
                           struct mask_plan **out);

/*
 * Rewrite one DataRow (body after type and length) under plan (NULL: no RowDescription was
 * seen for these rows, so every non-NULL value is scanned by value as text). Returns 0 when
 * nothing changes (nothing appended), 1 when a whole new 'D' message (type, length, columns)
 * was appended to out, -1 when the DataRow is malformed or does not match the plan.
 */
int mask_row_rewrite(const struct mask_db *db, const struct mask_plan *plan, const uint8_t *body,
                     size_t len, struct buf *out, struct mask_counts *counts);
/* The same, where the `ahead` bytes after body + len are in memory and hold the messages that
 * follow this DataRow (a complete or partial message at a time; 0: none known): the values
 * of the DataRows among them are scanned ahead in one batch with this row's (see the batch
 * functions above), and the calls for those rows use the results. */
int mask_row_rewrite_ahead(const struct mask_db *db, const struct mask_plan *plan,
                           const uint8_t *body, size_t len, size_t ahead, struct buf *out,
                           struct mask_counts *counts);

/* One CopyData message of COPY TO STDOUT (text or CSV line): 0 unchanged, 1 a whole new 'd'
 * message appended. */
int mask_copy_rewrite(const struct mask_db *db, const uint8_t *body, size_t len, struct buf *out,
                      struct mask_counts *counts);

/* ---- COPY TO STDOUT by column (copy.c) ------------------------------------------------ */

/* How a COPY's lines are written (its options). */
struct mask_copy_layout {
    bool csv;                      /* CSV, else text */
    bool header;                   /* the first line names the columns */
    char delimiter, quote, escape; /* (quote and escape: CSV) */
    const char *null_str;          /* how a NULL is written */
};

struct mask_copy_plan;

/* The plan for the lines of a COPY whose columns are, in order, named columns[0..n) and read
 * the columns sources[0..n) (entries may be NULL: no name, an expression) of table
 * ("schema.table" or "table"; NULL: not one table), judged by their names and
 * masking.columns as result columns are (exemptions do not apply). NULL when no column is
 * masked by name or rule: every line is then masked by value (mask_copy_rewrite). */
struct mask_copy_plan *mask_copy_plan_build(const struct mask_db *db, const char *table,
                                            const char *const *columns, const char *const *sources,
                                            unsigned n, const struct mask_copy_layout *layout);
void mask_copy_plan_free(struct mask_copy_plan *p);
unsigned mask_copy_plan_columns(const struct mask_copy_plan *p);
/* One CopyData line under plan: the fields of columns masked by name are replaced whole (a
 * NULL stays NULL), the others are scanned by value (a plan never exempts: the names come
 * from the client's text, or from the catalog by the relay's reading of it). 0 unchanged, 1 a whole
 * new 'd' message appended, -1 the line does not split into the plan's columns, is the header line,
 * or the scanner failed (nothing appended: the caller masks the line by value). */
int mask_copy_rewrite_plan(const struct mask_db *db, struct mask_copy_plan *plan,
                           const uint8_t *body, size_t len, struct buf *out,
                           struct mask_counts *counts);

/* ErrorResponse or NoticeResponse (type 'E' or 'N'): values in the message, detail, hint,
 * where and internal-query fields are masked by value. 0 unchanged, 1 a whole new message of
 * the same type appended, -1 malformed. */
int mask_notice_rewrite(const struct mask_db *db, uint8_t type, const uint8_t *body, size_t len,
                        struct buf *out, struct mask_counts *counts);

/* ---- internal, for rows.c (not for callers outside src/mask/) ------------------------ */

/* mask_plan_build(), also saying whether resolve answered false for a column it was asked
 * about (*unresolved: the plan judged that column by its field name only). */
int mask_plan_build_report(const struct mask_db *db, const uint8_t *body, size_t len,
                           mask_resolve_fn resolve, void *ctx, struct mask_plan **out,
                           bool *unresolved);
/* db's id: unique in the process, never reused (the plan cache's key for db). */
uint64_t mask_db_id(const struct mask_db *db);
/* Free this thread's plan cache (part of mask_thread_release()). */
void mask_plan_cache_release(void);

/* buf_append() and pg_get_u32() inlined: the row rewriter calls them several times per value,
 * where a function call each costs as much as the copy. */
static inline void mask_put(struct buf *out, const void *p, size_t n)
{
    if (out->cap - out->len < n) buf_reserve(out, n);
    memcpy(out->data + out->len, p, n);
    out->len += n;
}

static inline void mask_put_u32(struct buf *out, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mask_put(out, x, 4);
}

static inline uint32_t mask_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* How a text result column is masked (rows.c) when it is named `field` and reads `column` of
 * schema.table (any may be NULL, not both field and column): MASK_COLUMN_SKIP (exempt),
 * MASK_COLUMN_SCAN (by value), or a detector index >= 0 for the whole value, with *form. */
#define MASK_COLUMN_SKIP (-2)
#define MASK_COLUMN_SCAN (-1)
int mask_column_by_name(const struct mask_db *db, const char *schema, const char *table,
                        const char *field, const char *column, enum cfg_mask_form *form);

/* What a column name alone says about its values (classify.c). */
enum mask_name_class {
    MASK_NAME_NONE,
    MASK_NAME_EMAIL,
    MASK_NAME_SSN,
    MASK_NAME_PHONE,
    MASK_NAME_CARD,
    MASK_NAME_IBAN,
    MASK_NAME_SECRET,
    MASK_NAME_DOB,
    MASK_NAME_ADDRESS,
};
enum mask_name_class mask_classify_name(const char *name);
/* The detector name a class masks with ("email", "credit_card", ..., "dob", "address"). A
 * column classified under a value detector left out of masking.detectors is only scanned. */
const char *mask_name_class_detector(enum mask_name_class c);

#endif
