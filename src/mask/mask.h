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
 * rule names them.
 *
 * Ownership: mask_db_build() and mask_plan_build() return objects freed with their _free().
 * Functions that write append to a caller-owned struct buf and never consume it.
 */
#ifndef SLUICE_MASK_MASK_H
#define SLUICE_MASK_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * (malloc'd; the caller frees it). db NULL: a copy of s. */
char *mask_string(const struct mask_db *db, const char *s);

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

/*
 * Rewrite one DataRow (body after type and length) under plan (NULL: no RowDescription was
 * seen for these rows, so every non-NULL value is scanned by value as text). Returns 0 when
 * nothing changes (nothing appended), 1 when a whole new 'D' message (type, length, columns)
 * was appended to out, -1 when the DataRow is malformed or does not match the plan.
 */
int mask_row_rewrite(const struct mask_db *db, const struct mask_plan *plan, const uint8_t *body,
                     size_t len, struct buf *out, struct mask_counts *counts);

/* One CopyData message of COPY TO STDOUT (text or CSV line): 0 unchanged, 1 a whole new 'd'
 * message appended. */
int mask_copy_rewrite(const struct mask_db *db, const uint8_t *body, size_t len, struct buf *out,
                      struct mask_counts *counts);

/* ErrorResponse or NoticeResponse (type 'E' or 'N'): values in the message, detail, hint,
 * where and internal-query fields are masked by value. 0 unchanged, 1 a whole new message of
 * the same type appended, -1 malformed. */
int mask_notice_rewrite(const struct mask_db *db, uint8_t type, const uint8_t *body, size_t len,
                        struct buf *out, struct mask_counts *counts);

/* ---- internal, for rows.c (not for callers outside src/mask/) ------------------------ */

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
