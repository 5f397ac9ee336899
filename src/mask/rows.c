/*
 * rows.c: the result-row rewriter. It turns one RowDescription into a plan (what to do with
 * each column), then rewrites each DataRow under that plan as it streams by, plus CopyData
 * lines of COPY TO STDOUT and the value-echoing fields of ErrorResponse/NoticeResponse.
 * Detection and the masked forms are detect.c's (mask_text, mask_value); the catalog lookup
 * behind a resolver is the caller's. Pure code: message bodies in, whole messages out.
 *
 * Per column the plan says one of:
 *   skip   the type cannot hold text PII (integers, numeric, bool, dates and times, uuid,
 *          bytea and their arrays), or an exemption glob names the column;
 *   value  the column is sensitive as a whole: a column rule (masking.columns) names it, or
 *          its name classifies (classify.c) and that detector is in use (a built-in left out
 *          of masking.detectors masks no column; dob and address always do): every
 *          non-empty value becomes mask_value(); column rules win over exemptions and over
 *          type skipping;
 *   scan   anything else (text types, json, xml, arrays of text, unknown types): detection by
 *          value with mask_text().
 * Binary format: text, varchar, bpchar, name, char, unknown, json and xml travel as their text
 * and are treated the same; jsonb's binary form is a version byte (1) and the text; a type
 * sluice does not know is treated as text when its bytes look like text (no control bytes
 * but tab, CR, LF). Other binary values are left alone, except in a column rule's column,
 * where a value that cannot be rewritten as text is replaced by zero bytes of the same
 * length (valid for fixed-size types: 0, false, 2000-01-01). Arrays and json named like
 * sensitive columns are scanned, not masked whole, so clients can still parse them.
 *
 * A DataRow that changes nothing costs one pass over its column headers plus the scans; no
 * byte is copied. The first change starts the output message: bytes before it are copied
 * once, runs of unchanged columns after it are copied with one memcpy each.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask.h"
#include "pg/msg.h"

/* What happens to one column's values. */
enum col_op {
    OP_SKIP,       /* forward as is */
    OP_SCAN,       /* mask_text over the value */
    OP_SCAN_JSONB, /* binary jsonb: keep the version byte 1, scan the rest */
    OP_SCAN_GUESS, /* binary of an unknown type: scan when the bytes look like text */
    OP_VALUE,      /* mask_value over the whole value */
    OP_VALUE_JSONB,
    OP_VALUE_GUESS, /* binary of an unknown type: mask_value if text-like, else zero bytes */
    OP_ZERO,        /* binary of a type that is not text: zero bytes of the same length */
    OP_SCAN_BINARY, /* binary array of text: detected values starred in place (same length) */
    OP_STAR_ARRAY,  /* binary array sensitive by its name: every element starred in place */
    OP_SCAN_HEX,    /* bytea in text format: hex runs decoded, scanned, re-encoded in place */
    OP_DIGITS,      /* a number sensitive by its name, text format: the number its last 4
                       digits make (still a valid number of its type) */
    OP_ONES,        /* a date or time sensitive by its name (a birth date), text format: every
                       digit made 1 (still valid in every DateStyle: 1111-11-11) */
};

struct mask_col {
    uint8_t op;
    uint8_t form; /* enum cfg_mask_form for OP_VALUE* */
    int16_t detector;
};

struct mask_plan {
    unsigned n;
    bool scans; /* some column is scanned by value as text (batched, see scan_slice) */
    bool names; /* a field name holds a detected value (mask_rowdesc_rewrite) */
    struct mask_col cols[];
};

/* ---- type OIDs ------------------------------------------------------------------------ */

enum type_kind {
    TY_SKIP,  /* cannot hold text PII */
    TY_TEXT,  /* text-like: binary form is the text */
    TY_JSON,  /* json, xml: text in both formats, but structured */
    TY_JSONB, /* binary: version byte + text */
    TY_ARRAY, /* arrays that can hold text: scan in text format, leave binary */
    TY_OTHER, /* not known here (extensions, composites, inet, ...) */
    TY_BYTEA, /* bytea and _bytea: bytes a cast makes of any text (email::bytea) */
};

static enum type_kind type_kind(uint32_t oid)
{
    switch (oid) {
    case 16:   /* bool */
    case 20:   /* int8 */
    case 21:   /* int2 */
    case 23:   /* int4 */
    case 26:   /* oid */
    case 28:   /* xid */
    case 29:   /* cid */
    case 700:  /* float4 */
    case 701:  /* float8 */
    case 790:  /* money */
    case 1082: /* date */
    case 1083: /* time */
    case 1114: /* timestamp */
    case 1184: /* timestamptz */
    case 1186: /* interval */
    case 1266: /* timetz */
    case 1700: /* numeric */
    case 2950: /* uuid */
    case 3220: /* pg_lsn */
    case 5069: /* xid8 */
    case 1000: /* _bool */
    case 1005: /* _int2 */
    case 1007: /* _int4 */
    case 1016: /* _int8 */
    case 1021: /* _float4 */
    case 1022: /* _float8 */
    case 1028: /* _oid */
    case 1115: /* _timestamp */
    case 1182: /* _date */
    case 1183: /* _time */
    case 1185: /* _timestamptz */
    case 1187: /* _interval */
    case 1231: /* _numeric */
    case 1270: /* _timetz */
    case 2951: /* _uuid */
        return TY_SKIP;
    case 17:   /* bytea */
    case 1001: /* _bytea */
        return TY_BYTEA;
    case 18:   /* char */
    case 19:   /* name */
    case 25:   /* text */
    case 705:  /* unknown */
    case 1042: /* bpchar */
    case 1043: /* varchar */
        return TY_TEXT;
    case 114: /* json */
    case 142: /* xml */
        return TY_JSON;
    case 3802: /* jsonb */
        return TY_JSONB;
    case 143:  /* _xml */
    case 199:  /* _json */
    case 1002: /* _char */
    case 1003: /* _name */
    case 1009: /* _text */
    case 1014: /* _bpchar */
    case 1015: /* _varchar */
    case 3807: /* _jsonb */
        return TY_ARRAY;
    default:
        return TY_OTHER;
    }
}

/* Numbers and dates: types that cannot hold text, but a card number, SSN, phone number or
 * birth date stored as one. */
static bool type_numeric(uint32_t oid)
{
    return oid == 20 || oid == 21 || oid == 23 || oid == 1700;
}

static bool type_datetime(uint32_t oid)
{
    return oid == 1082 || oid == 1114 || oid == 1184;
}

/* ---- names ---------------------------------------------------------------------------- */

/* The names a column goes by: its RowDescription field name and, when resolved, "column",
 * "table.column" and "schema.table.column". */
struct col_names {
    const char *field, *column; /* column: the catalog's name, NULL when not resolved */
    bool temporary;             /* of a temporary relation (schema pg_temp_N): the client's */
    const char *v[4];
    unsigned n;
    char table_col[2 * 128 + 2];
    char full[3 * 128 + 3];
};

static void col_names_fill(struct col_names *cn, const char *field, const struct mask_colref *ref)
{
    cn->n = 0;
    cn->field = field;
    cn->column = NULL;
    cn->temporary = ref && ref->schema && !strncmp(ref->schema, "pg_temp_", 8);
    cn->v[cn->n++] = field;
    if (!ref || !ref->column) return;
    cn->column = ref->column;
    if (strcmp(ref->column, field) != 0) cn->v[cn->n++] = ref->column;
    if (ref->table) {
        snprintf(cn->table_col, sizeof cn->table_col, "%.128s.%.128s", ref->table, ref->column);
        cn->v[cn->n++] = cn->table_col;
        if (ref->schema) {
            snprintf(cn->full, sizeof cn->full, "%.128s.%.128s.%.128s", ref->schema, ref->table,
                     ref->column);
            cn->v[cn->n++] = cn->full;
        }
    }
}

static bool glob_any(const char *glob, const struct col_names *cn)
{
    if (!glob) return false;
    for (unsigned i = 0; i < cn->n; i++)
        if (fnmatch(glob, cn->v[i], FNM_CASEFOLD) == 0) return true;
    return false;
}

/* An exemption goes by the catalog's names only: the field name is the client's to choose
 * (SELECT email AS "x.sku" must not pass as exempt `*.sku`), and so is every name of a
 * temporary table or view (CREATE TEMP VIEW v AS SELECT email AS sku ...). */
static bool glob_any_catalog(const char *glob, const struct col_names *cn)
{
    if (cn->temporary) return false;
    for (unsigned i = 1; i < cn->n; i++)
        if (fnmatch(glob, cn->v[i], FNM_CASEFOLD) == 0) return true;
    return cn->column && !strcmp(cn->column, cn->field) &&
           fnmatch(glob, cn->field, FNM_CASEFOLD) == 0;
}

/* The op for a whole-value column of this type and format. */
static enum col_op value_op(enum type_kind k, bool binary, bool by_rule)
{
    if (!binary) {
        if (!by_rule && (k == TY_JSON || k == TY_JSONB || k == TY_ARRAY)) return OP_SCAN;
        return OP_VALUE;
    }
    switch (k) {
    case TY_TEXT:
        return OP_VALUE;
    case TY_JSON:
        return by_rule ? OP_VALUE : OP_SCAN;
    case TY_JSONB:
        return by_rule ? OP_VALUE_JSONB : OP_SCAN_JSONB;
    case TY_OTHER:
        return OP_VALUE_GUESS;
    case TY_ARRAY: /* (its structure stays valid: the client can still decode it) */
        return OP_STAR_ARRAY;
    case TY_SKIP:
    case TY_BYTEA:
        break;
    }
    return OP_ZERO;
}

/* Binary arrays and records frame their elements alike: from pos on, each element is `gap`
 * bytes (a record field's type OID; none in an array), an int32 length (-1 for NULL) and
 * that many bytes. Do exactly `count` elements (UINT32_MAX: as many as there are) fill v up
 * to its end? */
static bool frames_valid(const uint8_t *v, size_t n, size_t pos, size_t gap, uint32_t count)
{
    uint32_t i = 0;
    for (; i < count && pos < n; i++) {
        if (n - pos < gap + 4) return false;
        int32_t l = (int32_t)mask_get_u32(v + pos + gap);
        pos += gap + 4;
        if (l < -1 || (l > 0 && (size_t)l > n - pos)) return false;
        if (l > 0) pos += (size_t)l;
    }
    return pos == n && (count == UINT32_MAX || i == count);
}

/* The next element of valid frames (frames_valid) at *pos: its bytes and length (<= 0: NULL
 * or empty); *pos moves past it. */
static uint8_t *frame_next(uint8_t *v, size_t *pos, size_t gap, int32_t *len)
{
    *len = (int32_t)mask_get_u32(v + *pos + gap);
    uint8_t *e = v + *pos + gap + 4;
    *pos += gap + 4 + (*len > 0 ? (size_t)*len : 0);
    return e;
}

/* Each element of valid frames scanned on its own, detected values starred in place, so that
 * the framing is never read as part of a value (a length of 48 to 57 bytes reads as an ASCII
 * digit). Returns what mask_text_inplace does (> 0: something was starred). */
static int frames_scan(const struct mask_db *db, uint8_t *v, size_t n, size_t pos, size_t gap,
                       struct mask_counts *counts)
{
    int any = 0;
    while (pos < n) {
        int32_t l;
        uint8_t *e = frame_next(v, &pos, gap, &l);
        if (l <= 0) continue;
        int r = mask_text_inplace(db, e, (size_t)l, counts);
        if (r < 0) return r;
        any |= r > 0;
    }
    return any;
}

/* Where a binary array's elements begin (ndim, flags, element type, ndim x (size, lower
 * bound)), or 0 when v is not a binary array. */
static size_t array_elements(const uint8_t *v, size_t n)
{
    if (n < 12) return 0;
    uint32_t ndim = mask_get_u32(v);
    size_t pos = 12 + 8 * (size_t)ndim;
    return ndim <= 6 && n >= pos && frames_valid(v, n, pos, 0, UINT32_MAX) ? pos : 0;
}

/* A binary array with every element's bytes replaced by '*', in place. false when v is not
 * such an array (then nothing is kept of it). */
static bool star_array(uint8_t *v, size_t n)
{
    size_t pos = array_elements(v, n);
    if (!pos) return false;
    /* json and jsonb elements must still decode: each becomes a JSON string of stars (jsonb
     * keeping its version byte), or 0 when too short for one */
    uint32_t elem = mask_get_u32(v + 8);
    bool json = elem == 114 || elem == 3802;
    size_t keep = elem == 3802 ? 1 : 0;
    while (pos < n) {
        int32_t l;
        uint8_t *e = frame_next(v, &pos, 0, &l);
        size_t m = l > 0 && (size_t)l > keep ? (size_t)l - keep : 0;
        if (!m) continue;
        memset(e + keep, json && m < 2 ? '0' : '*', m);
        if (json && m >= 2) e[keep] = e[keep + m - 1] = '"';
    }
    return true;
}

/* Detected values starred in place in a binary array of text: each element on its own;
 * scanned whole when it is not such an array. */
static int scan_array_inplace(const struct mask_db *db, uint8_t *v, size_t n,
                              struct mask_counts *counts)
{
    size_t pos = array_elements(v, n);
    return pos ? frames_scan(db, v, n, pos, 0, counts) : mask_text_inplace(db, v, n, counts);
}

/* Detected values starred in place in a binary value that is not text. A binary record
 * (int32 field count, then per field a type OID and a frame) has each field scanned on its
 * own; anything else is scanned whole. */
static int scan_binary_inplace(const struct mask_db *db, uint8_t *v, size_t n,
                               struct mask_counts *counts)
{
    uint32_t nf = n >= 4 ? mask_get_u32(v) : UINT32_MAX;
    if (nf <= 1665 && frames_valid(v, n, 4, 4, nf)) return frames_scan(db, v, n, 4, 4, counts);
    return mask_text_inplace(db, v, n, counts);
}

static enum col_op scan_op(enum type_kind k, bool binary)
{
    if (k == TY_SKIP) return OP_SKIP;
    if (k == TY_BYTEA) return binary ? OP_SCAN_GUESS : OP_SCAN_HEX;
    if (!binary) return OP_SCAN;
    switch (k) {
    case TY_TEXT:
    case TY_JSON:
        return OP_SCAN;
    case TY_JSONB:
        return OP_SCAN_JSONB;
    case TY_OTHER:
        return OP_SCAN_GUESS;
    case TY_ARRAY:
        return OP_SCAN_BINARY;
    default:
        return OP_SKIP;
    }
}

/* What a column's names say: its field name, else its catalog name (when it differs). */
static enum mask_name_class classify_names(const struct col_names *cn)
{
    enum mask_name_class c = mask_classify_name(cn->field);
    if (c == MASK_NAME_NONE && cn->column && strcmp(cn->column, cn->field) != 0)
        c = mask_classify_name(cn->column);
    return c;
}

static void classify_column(const struct mask_db *db, const struct cfg_masking *cfg,
                            const struct col_names *cn, uint32_t type_oid, bool binary,
                            struct mask_col *col)
{
    enum type_kind k = type_kind(type_oid);
    col->op = OP_SKIP;
    col->form = CFG_FORM_DEFAULT;
    col->detector = -1;

    if (cfg) {
        for (unsigned i = 0; i < cfg->n_columns; i++) {
            const struct cfg_mask_column *r = &cfg->columns[i];
            if (!glob_any(r->match, cn)) continue;
            int d = r->detector ? mask_db_detector_index(db, r->detector) : -1;
            if (d < 0) d = mask_db_column_detector(db);
            if (d < 0) d = 0; /* cannot happen ("column" is in every db); a rule always masks */
            col->op = (uint8_t)value_op(k, binary, true);
            col->form = (uint8_t)r->form;
            col->detector = (int16_t)d;
            return;
        }
        for (unsigned i = 0; i < cfg->n_exempt; i++)
            if (glob_any_catalog(cfg->exempt[i], cn)) return;
    }
    enum mask_name_class c = MASK_NAME_NONE;
    if (k == TY_SKIP) {
        /* a number or date sensitive by its name is replaced by one of its type */
        bool num = type_numeric(type_oid), date = type_datetime(type_oid);
        if (!num && !date) return;
        c = classify_names(cn);
        if (c == MASK_NAME_NONE || (date && c != MASK_NAME_DOB) || (num && c == MASK_NAME_DOB))
            return;
        int d = mask_db_detector_index(db, mask_name_class_detector(c));
        if (d < 0) d = mask_db_column_detector(db);
        col->op = (uint8_t)(binary ? OP_ZERO : num ? OP_DIGITS : OP_ONES);
        col->detector = (int16_t)d;
        return;
    }

    c = classify_names(cn);
    if (c != MASK_NAME_NONE) {
        const char *dname = mask_name_class_detector(c);
        int d = mask_db_detector_index(db, dname);
        bool column_only = c == MASK_NAME_DOB || c == MASK_NAME_ADDRESS;
        if (d < 0 && column_only) d = mask_db_column_detector(db);
        /* A value detector the admin left out of masking.detectors masks no column either. */
        if (d >= 0 && (column_only || mask_db_detector_scans(db, (unsigned)d))) {
            col->op = (uint8_t)value_op(k, binary, false);
            col->detector = (int16_t)d;
            return;
        }
    }
    col->op = (uint8_t)scan_op(k, binary);
}

int mask_column_by_name(const struct mask_db *db, const char *schema, const char *table,
                        const char *field, const char *column, enum cfg_mask_form *form)
{
    struct mask_colref ref = {schema, table, column};
    struct col_names cn;
    struct mask_col col;
    col_names_fill(&cn, field ? field : column, column ? &ref : NULL);
    classify_column(db, mask_db_config(db), &cn, 25 /* text */, false, &col);
    *form = (enum cfg_mask_form)col.form;
    if (col.op == OP_VALUE) return col.detector;
    return col.op == OP_SKIP ? MASK_COLUMN_SKIP : MASK_COLUMN_SCAN;
}

/* ---- RowDescription ------------------------------------------------------------------- */

int mask_plan_build(const struct mask_db *db, const uint8_t *body, size_t len,
                    mask_resolve_fn resolve, void *ctx, struct mask_plan **out)
{
    bool unresolved;
    return mask_plan_build_report(db, body, len, resolve, ctx, out, &unresolved);
}

int mask_plan_build_report(const struct mask_db *db, const uint8_t *body, size_t len,
                           mask_resolve_fn resolve, void *ctx, struct mask_plan **out,
                           bool *unresolved)
{
    *out = NULL;
    *unresolved = false;
    if (len < 2) return -1;
    int16_t nf = (int16_t)pg_get_u16(body);
    if (nf < 0) return -1;
    const struct cfg_masking *cfg = db ? mask_db_config(db) : NULL;
    struct mask_plan *p = xmalloc(sizeof *p + (size_t)nf * sizeof p->cols[0]);
    p->n = (unsigned)nf;
    p->scans = p->names = false;
    bool any = false;
    size_t pos = 2;
    for (unsigned i = 0; i < p->n; i++) {
        const uint8_t *nul = pos < len ? memchr(body + pos, 0, len - pos) : NULL;
        if (!nul) goto fail;
        const char *field = (const char *)body + pos;
        pos = (size_t)(nul - body) + 1;
        if (len - pos < 18) goto fail;
        uint32_t table_oid = pg_get_u32(body + pos);
        int16_t attnum = (int16_t)pg_get_u16(body + pos + 4);
        uint32_t type_oid = pg_get_u32(body + pos + 6);
        uint16_t format = pg_get_u16(body + pos + 16);
        pos += 18;
        if (format > 1) goto fail;
        /* The server may name a column after data (a view made with EXECUTE format('... AS
         * %I', email)): a name holding a detected value is masked too. A failed scan counts as
         * one (fail closed). */
        if (db && !p->names && field[0]) {
            char *m = mask_string_try(db, field);
            p->names = !m || strcmp(m, field) != 0;
            free(m);
        }

        /* A column that cannot hold text and that no column rule could name is skipped
         * without asking the catalog, unless it is a number or a date: a card number or a
         * birth date stored as one is masked by its field name or, for a table's column, by
         * its catalog name, whatever the query calls it (SELECT card_number AS n). pgbench
         * -S's `abalance` so costs a lookup per build: the relay builds through the plan
         * cache (plan_cache.c). */
        bool by_catalog = resolve && table_oid != 0 && attnum > 0;
        if (type_kind(type_oid) == TY_SKIP && (!cfg || cfg->n_columns == 0) &&
            (!cfg || !(type_numeric(type_oid) || type_datetime(type_oid)) ||
             (!by_catalog && mask_classify_name(field) == MASK_NAME_NONE))) {
            p->cols[i] = (struct mask_col){.op = OP_SKIP, .detector = -1};
            continue;
        }
        struct mask_colref ref = {0}, *refp = NULL;
        if (by_catalog) {
            if (resolve(ctx, table_oid, attnum, &ref))
                refp = &ref;
            else
                *unresolved = true;
        }
        struct col_names cn;
        col_names_fill(&cn, field, refp);
        if (db) {
            classify_column(db, cfg, &cn, type_oid, format == 1, &p->cols[i]);
        } else {
            p->cols[i] = (struct mask_col){.op = (uint8_t)scan_op(type_kind(type_oid), format == 1),
                                           .detector = -1};
        }
        if (p->cols[i].op != OP_SKIP) any = true;
        if (p->cols[i].op == OP_SCAN || p->cols[i].op == OP_SCAN_JSONB ||
            p->cols[i].op == OP_SCAN_GUESS || p->cols[i].op == OP_SCAN_HEX)
            p->scans = true;
    }
    if (pos != len) goto fail;
    if (!any && !p->names) {
        mask_plan_free(p);
        return 0;
    }
    *out = p;
    return 0;
fail:
    mask_plan_free(p);
    return -1;
}

void mask_plan_free(struct mask_plan *p)
{
    free(p);
}

int mask_rowdesc_rewrite(const struct mask_db *db, const struct mask_plan *plan,
                         const uint8_t *body, size_t len, struct buf *out)
{
    if (!plan || !plan->names || len < 2) return 0;
    size_t start = out->len;
    size_t m = pg_msg_begin(out, 'T');
    buf_append(out, body, 2);
    size_t pos = 2;
    for (unsigned i = 0; i < plan->n; i++) {
        const uint8_t *nul = pos < len ? memchr(body + pos, 0, len - pos) : NULL;
        if (!nul || (size_t)(len - (size_t)(nul + 1 - body)) < 18) {
            out->len = start;
            return -1;
        }
        char *name = mask_string(db, (const char *)body + pos);
        buf_append_str(out, name);
        free(name);
        pos = (size_t)(nul - body) + 1;
        buf_append(out, body + pos, 18);
        pos += 18;
    }
    pg_msg_end(out, m);
    return 1;
}

struct mask_plan *mask_plan_copy(const struct mask_plan *p)
{
    if (!p) return NULL;
    size_t size = sizeof *p + (size_t)p->n * sizeof p->cols[0];
    struct mask_plan *c = xmalloc(size);
    memcpy(c, p, size);
    return c;
}

/* ---- DataRow -------------------------------------------------------------------------- */

/* Position in b relative to b->off (stable across the compaction buf_reserve may do). */
static size_t rel(const struct buf *b)
{
    return b->len - b->off;
}

static void truncate_to(struct buf *b, size_t r)
{
    b->len = b->off + r;
}

/* The value length written as 0 at rel(out) == at becomes what was appended after it. */
static inline void patch_len(struct buf *out, size_t at)
{
    uint32_t v = (uint32_t)(rel(out) - at - 4);
    uint8_t *d = out->data + out->off + at;
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}

static bool looks_like_text(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return false;
    return true;
}

/* The output DataRow being built; nothing is in out until the first change. */
struct row_out {
    struct buf *out;
    const uint8_t *body;
    size_t len;     /* of body */
    size_t base;    /* rel(out) on entry */
    size_t msg;     /* pg_msg_begin()'s token for the message once started */
    bool started;   /* the message header and every body byte before `emitted` are in out */
    size_t emitted; /* body bytes [0, emitted) are represented in out */
};

static void row_flush(struct row_out *w, size_t upto)
{
    if (upto > w->emitted) mask_put(w->out, w->body + w->emitted, upto - w->emitted);
    w->emitted = upto;
}

static void row_start(struct row_out *w, size_t upto)
{
    buf_reserve(w->out, 5 + w->len + 128); /* the whole row, usually, in one go */
    w->msg = pg_msg_begin(w->out, 'D');
    w->started = true;
    w->emitted = 0;
    row_flush(w, upto);
}

/* Whether a bytea value in text format is in hex (bytea_output = hex, the default): "\x..."
 * for a bytea, "\\x..." inside the quotes of a _bytea's elements. */
static bool has_hex_bytea(const uint8_t *v, size_t n)
{
    return (n >= 2 && v[0] == '\\' && v[1] == 'x') || memmem(v, n, "\\\\x", 3) != NULL;
}

static int hex_nibble(uint8_t c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Every hex run after a "\x" in v (a bytea, or the elements of a _bytea) decoded, scanned as
 * text, and written back in hex where something was masked (same length: the value stays a
 * valid bytea). > 0 when something was masked. */
static int scan_hex_inplace(const struct mask_db *db, uint8_t *v, size_t n,
                            struct mask_counts *counts)
{
    int masked = 0;
    uint8_t *raw = xmalloc(n / 2 + 1);
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] != '\\' || v[i + 1] != 'x') continue;
        size_t start = i + 2, end = start;
        while (end + 1 < n && hex_nibble(v[end]) >= 0 && hex_nibble(v[end + 1]) >= 0)
            end += 2;
        size_t m = (end - start) / 2;
        for (size_t k = 0; k < m; k++)
            raw[k] =
                (uint8_t)(hex_nibble(v[start + 2 * k]) << 4 | hex_nibble(v[start + 2 * k + 1]));
        int r = m ? mask_text_inplace(db, raw, m, counts) : 0;
        if (r < 0) {
            free(raw);
            return -1;
        }
        if (r > 0) {
            static const char digits[] = "0123456789abcdef";
            for (size_t k = 0; k < m; k++) {
                v[start + 2 * k] = (uint8_t)digits[raw[k] >> 4];
                v[start + 2 * k + 1] = (uint8_t)digits[raw[k] & 15];
            }
            masked = 1;
        }
        i = end - 1;
    }
    free(raw);
    return masked;
}

/* The text that detection by value scans in a value of a column with op, at v + *pre; false
 * when the value is not scanned as text (other ops, empty text, binary that is not text).
 * mask_row_rewrite and batch_fill both choose values with it, so a batch holds exactly the
 * values the rows will ask for, in order. */
static bool scan_slice(enum col_op op, const uint8_t *v, size_t n, size_t *pre)
{
    *pre = 0;
    switch (op) {
    case OP_SCAN:
        return n > 0;
    case OP_SCAN_JSONB:
        *pre = 1;
        return n > 1 && v[0] == 1;
    case OP_SCAN_GUESS:
        return n > 0 && looks_like_text(v, n);
    case OP_SCAN_HEX: /* bytea_output = escape: printable bytes are themselves */
        return n > 0 && !has_hex_bytea(v, n);
    default:
        return false;
    }
}

static const struct mask_col scan_all = {.op = OP_SCAN, .detector = -1};

/* Add the scanned values of one DataRow (body) to the batch; false when the row is malformed,
 * does not match the plan or does not fit whole (its values may then be partly added). */
static bool batch_add_row(const struct mask_plan *plan, const uint8_t *body, size_t len)
{
    if (len < 2) return false;
    int16_t nc = (int16_t)pg_get_u16(body);
    if (nc < 0 || (plan && (unsigned)nc != plan->n)) return false;
    size_t pos = 2;
    for (int i = 0; i < nc; i++) {
        if (len - pos < 4) return false;
        int32_t l = (int32_t)mask_get_u32(body + pos);
        pos += 4;
        if (l < 0) continue;
        if ((size_t)l > len - pos) return false;
        const uint8_t *v = body + pos;
        pos += (size_t)l;
        size_t pre;
        const struct mask_col *c = plan ? &plan->cols[i] : &scan_all;
        if (scan_slice((enum col_op)c->op, v, (size_t)l, &pre) &&
            !mask_batch_add(v + pre, (size_t)l - pre))
            return false;
    }
    return pos == len;
}

/* Start a batch with this DataRow's values and those of the DataRows after it in the `ahead`
 * bytes, up to the batch's size; then scan it. On failure the batch is empty and values are
 * scanned one by one. */
static void batch_fill(const struct mask_db *db, const struct mask_plan *plan, const uint8_t *body,
                       size_t len, size_t ahead)
{
    mask_batch_reset();
    if (!mask_db_batchable(db)) return;
    if (batch_add_row(plan, body, len)) {
        const uint8_t *p = body + len;
        while (ahead >= 5 && p[0] == 'D') {
            uint32_t ml = mask_get_u32(p + 1);
            if (ml < 4 || ml - 4 > ahead - 5) break; /* not whole in memory */
            if (!batch_add_row(plan, p + 5, ml - 4)) break;
            p += 1 + (size_t)ml;
            ahead -= 1 + (size_t)ml;
        }
    }
    (void)mask_batch_scan(db);
}

/* mask_text for a value of the row being rewritten, from the batch when it holds it. */
static int scan_text(const struct mask_db *db, const uint8_t *s, size_t len, struct buf *out,
                     struct mask_counts *counts)
{
    int r = mask_batch_take(db, s, len, out, counts);
    return r == -2 ? mask_text(db, s, len, out, counts) : r;
}

/*
 * Scan one value by value. pre (0 or 1 byte, jsonb's version) is kept before the scanned
 * text. h: body offset of the column's length field; the value is [v, v + n). Returns -1 on
 * a scanner failure, else the number of values masked (0: nothing written).
 */
static int row_scan(struct row_out *w, const struct mask_db *db, size_t h, const uint8_t *pre,
                    size_t npre, const uint8_t *v, size_t n, struct mask_counts *counts)
{
    struct buf *out = w->out;
    if (n == 0) return 0;
    if (!w->started) {
        size_t mark = rel(out);
        int r = scan_text(db, v, n, out, counts);
        if (r <= 0) {
            truncate_to(out, mark);
            return r;
        }
        /* Slide the masked text right and put the header and earlier columns before it. */
        size_t m = rel(out) - mark;
        size_t p = 5 + h + 4 + npre;
        buf_reserve(out, p + (w->len - h) + 128); /* room for the rest of the row too */
        uint8_t *d = out->data + out->off + mark;
        memmove(d + p, d, m);
        d[0] = 'D';
        memset(d + 1, 0, 4);
        memcpy(d + 5, w->body, h);
        uint32_t vl = (uint32_t)(m + npre);
        d[5 + h] = (uint8_t)(vl >> 24);
        d[5 + h + 1] = (uint8_t)(vl >> 16);
        d[5 + h + 2] = (uint8_t)(vl >> 8);
        d[5 + h + 3] = (uint8_t)vl;
        if (npre) memcpy(d + 5 + h + 4, pre, npre);
        out->len += p;
        w->msg = mark; /* what pg_msg_begin() would have returned at mark */
        w->started = true;
        w->emitted = (size_t)(v - w->body) + n;
        return r;
    }
    row_flush(w, h);
    size_t at = rel(out);
    mask_put_u32(out, 0);
    if (npre) mask_put(out, pre, npre);
    int r = scan_text(db, v, n, out, counts);
    if (r <= 0) {
        truncate_to(out, at);
        return r;
    }
    patch_len(out, at);
    w->emitted = (size_t)(v - w->body) + n;
    return r;
}

/* Replace one value by what op says (mask_value or zero bytes). */
static void row_replace(struct row_out *w, const struct mask_db *db, const struct mask_col *c,
                        enum col_op op, size_t h, const uint8_t *v, size_t n,
                        struct mask_counts *counts)
{
    struct buf *out = w->out;
    if (!w->started)
        row_start(w, h);
    else
        row_flush(w, h);
    size_t at = rel(out);
    mask_put_u32(out, 0);
    if (op == OP_ZERO) {
        buf_reserve(out, n);
        memset(out->data + out->len, 0, n);
        out->len += n;
    } else {
        const uint8_t *s = v;
        size_t sn = n;
        if (op == OP_VALUE_JSONB) {
            mask_put(out, "\x01", 1);
            s++, sn--;
        }
        mask_value(db, c->detector, (enum cfg_mask_form)c->form, s, sn, out);
    }
    if (counts && c->detector >= 0 && c->detector < MASK_MAX_DETECTORS) counts->n[c->detector]++;
    patch_len(out, at);
    w->emitted = (size_t)(v - w->body) + n;
}

/* Replace a value (n bytes at v, header at h) with nn bytes. */
static void row_replace_sized(struct row_out *w, size_t h, const uint8_t *v, size_t n,
                              const uint8_t *nv, size_t nn)
{
    struct buf *out = w->out;
    if (!w->started)
        row_start(w, h);
    else
        row_flush(w, h);
    mask_put_u32(out, (uint32_t)nn);
    mask_put(out, nv, nn);
    w->emitted = (size_t)(v - w->body) + n;
}

/* Replace a value with bytes of the same length (the framing inside them is kept). */
static void row_replace_raw(struct row_out *w, size_t h, const uint8_t *v, const uint8_t *nv,
                            size_t n)
{
    row_replace_sized(w, h, v, n, nv, n);
}

/* The masked form of a number sensitive by its name, in text format: the last 4 digits of its
 * integer part, as the number they make (4111111111111111 -> 1111; 0 when none), so that every
 * client still parses it as its type (no leading zeros, no fraction). */
static size_t digits_masked(const uint8_t *v, size_t n, uint8_t out[5])
{
    size_t end = 0;
    while (end < n && v[end] != '.')
        end++;
    size_t start = end, kept = 0;
    while (start > 0 && kept < 4 && v[start - 1] >= '0' && v[start - 1] <= '9')
        start--, kept++;
    while (start < end && v[start] == '0' && end - start > 1)
        start++;
    if (start == end) {
        out[0] = '0';
        return 1;
    }
    memcpy(out, v + start, end - start);
    return end - start;
}

/* A binary value (header at h, bytes v; an array of text or another binary) with its
 * detected values starred in place, replaced in the row when something was. */
static int row_scan_inplace(struct row_out *w, const struct mask_db *db, size_t h, const uint8_t *v,
                            size_t n, bool array, struct mask_counts *counts)
{
    uint8_t *copy = xmalloc(n);
    memcpy(copy, v, n);
    int r =
        array ? scan_array_inplace(db, copy, n, counts) : scan_binary_inplace(db, copy, n, counts);
    if (r > 0) row_replace_raw(w, h, v, copy, n);
    free(copy);
    return r;
}

int mask_row_rewrite(const struct mask_db *db, const struct mask_plan *plan, const uint8_t *body,
                     size_t len, struct buf *out, struct mask_counts *counts)
{
    return mask_row_rewrite_ahead(db, plan, body, len, 0, out, counts);
}

int mask_row_rewrite_ahead(const struct mask_db *db, const struct mask_plan *plan,
                           const uint8_t *body, size_t len, size_t ahead, struct buf *out,
                           struct mask_counts *counts)
{
    if (len < 2) return -1;
    int16_t nc = (int16_t)pg_get_u16(body);
    if (nc < 0) return -1;
    if (plan && (unsigned)nc != plan->n) return -1;

    /* Validate the whole row first, so a malformed tail never leaves half a message. */
    size_t pos = 2;
    for (int i = 0; i < nc; i++) {
        if (len - pos < 4) return -1;
        int32_t l = (int32_t)mask_get_u32(body + pos);
        pos += 4;
        if (l < -1) return -1;
        if (l > 0) {
            if ((size_t)l > len - pos) return -1;
            pos += (size_t)l;
        }
    }
    if (pos != len) return -1;
    if ((!plan || plan->scans) && !mask_batch_pending(db)) batch_fill(db, plan, body, len, ahead);

    struct row_out w = {.out = out, .body = body, .len = len, .base = rel(out)};
    pos = 2;
    for (int i = 0; i < nc; i++) {
        size_t h = pos;
        int32_t l = (int32_t)mask_get_u32(body + pos);
        pos += 4;
        if (l < 0) continue; /* NULL stays NULL */
        const uint8_t *v = body + pos;
        size_t n = (size_t)l;
        pos += n;
        const struct mask_col *c = plan ? &plan->cols[i] : &scan_all;
        enum col_op op = (enum col_op)c->op;
        int r = 0;
        switch (op) {
        case OP_SKIP:
            break;
        case OP_SCAN:
        case OP_SCAN_JSONB:
        case OP_SCAN_GUESS: {
            size_t pre;
            if (scan_slice(op, v, n, &pre)) {
                r = row_scan(&w, db, h, v, pre, v + pre, n - pre, counts);
            } else if (op == OP_SCAN_GUESS && n > 0) {
                /* binary that is not text (a record, a composite: text between lengths and
                 * type OIDs): detected values starred in place, the structure kept */
                r = row_scan_inplace(&w, db, h, v, n, false, counts);
            }
            break;
        }
        case OP_STAR_ARRAY: {
            if (n == 0) break;
            uint8_t *copy = xmalloc(n);
            memcpy(copy, v, n);
            if (star_array(copy, n)) {
                row_replace_raw(&w, h, v, copy, n);
                if (counts && c->detector >= 0 && c->detector < MASK_MAX_DETECTORS)
                    counts->n[c->detector]++;
            } else {
                row_replace(&w, db, c, OP_ZERO, h, v, n, counts);
            }
            free(copy);
            break;
        }
        case OP_VALUE_GUESS:
            if (n == 0) break;
            row_replace(&w, db, c, looks_like_text(v, n) ? OP_VALUE : OP_ZERO, h, v, n, counts);
            break;
        case OP_VALUE_JSONB:
            if (n == 0) break;
            row_replace(&w, db, c, (v[0] == 1 && n > 1) ? OP_VALUE_JSONB : OP_ZERO, h, v, n,
                        counts);
            break;
        case OP_SCAN_BINARY:
            if (n > 0) r = row_scan_inplace(&w, db, h, v, n, true, counts);
            break;
        case OP_DIGITS: {
            if (n == 0) break;
            uint8_t num[5];
            row_replace_sized(&w, h, v, n, num, digits_masked(v, n, num));
            if (counts && c->detector >= 0 && c->detector < MASK_MAX_DETECTORS)
                counts->n[c->detector]++;
            break;
        }
        case OP_ONES: {
            if (n == 0) break;
            uint8_t *copy = xmalloc(n);
            for (size_t k = 0; k < n; k++)
                copy[k] = v[k] >= '0' && v[k] <= '9' ? '1' : v[k];
            row_replace_raw(&w, h, v, copy, n);
            if (counts && c->detector >= 0 && c->detector < MASK_MAX_DETECTORS)
                counts->n[c->detector]++;
            free(copy);
            break;
        }
        case OP_SCAN_HEX: {
            size_t pre;
            if (scan_slice(op, v, n, &pre)) {
                r = row_scan(&w, db, h, v, pre, v + pre, n - pre, counts);
            } else if (n > 0) {
                uint8_t *copy = xmalloc(n);
                memcpy(copy, v, n);
                r = scan_hex_inplace(db, copy, n, counts);
                if (r > 0) row_replace_raw(&w, h, v, copy, n);
                free(copy);
            }
            break;
        }
        case OP_VALUE:
        case OP_ZERO:
            if (n == 0) break; /* empty stays empty */
            row_replace(&w, db, c, op, h, v, n, counts);
            break;
        }
        if (r < 0) {
            truncate_to(out, w.base);
            return -1;
        }
    }
    if (!w.started) return 0;
    row_flush(&w, len);
    pg_msg_end(out, w.msg);
    return 1;
}

/* ---- CopyData, ErrorResponse, NoticeResponse ------------------------------------------ */

int mask_copy_rewrite(const struct mask_db *db, const uint8_t *body, size_t len, struct buf *out,
                      struct mask_counts *counts)
{
    if (len == 0) return 0;
    size_t base = rel(out);
    size_t m = pg_msg_begin(out, 'd');
    int r = mask_text(db, body, len, out, counts);
    if (r <= 0) {
        truncate_to(out, base);
        return r < 0 ? -1 : 0;
    }
    pg_msg_end(out, m);
    return 1;
}

/* The fields that can carry data: message, detail, hint, context, internal query, and the
 * names a function can set to any value (RAISE ... USING SCHEMA, TABLE, COLUMN, DATATYPE,
 * CONSTRAINT). Severity, code, positions and source location are the server's own. */
static bool notice_field_masked(uint8_t code)
{
    return strchr("MDHWqstcdn", code) != NULL && code != 0;
}

int mask_notice_rewrite(const struct mask_db *db, uint8_t type, const uint8_t *body, size_t len,
                        struct buf *out, struct mask_counts *counts)
{
    if (type != 'E' && type != 'N') return -1;
    /* Validate: (code, cstring)* then a single 0 that ends the body. */
    size_t pos = 0;
    for (;;) {
        if (pos >= len) return -1;
        if (body[pos] == 0) break;
        const uint8_t *nul = memchr(body + pos + 1, 0, len - pos - 1);
        if (!nul) return -1;
        pos = (size_t)(nul - body) + 1;
    }
    if (pos + 1 != len) return -1;

    size_t base = rel(out);
    size_t m = pg_msg_begin(out, type);
    bool changed = false;
    pos = 0;
    while (body[pos] != 0) {
        uint8_t code = body[pos];
        const uint8_t *s = body + pos + 1;
        size_t n = strlen((const char *)s);
        buf_append_u8(out, code);
        int r = 0;
        if (notice_field_masked(code) && n > 0) r = mask_text(db, s, n, out, counts);
        if (r < 0) {
            truncate_to(out, base);
            return -1;
        }
        if (r > 0)
            changed = true;
        else
            buf_append(out, s, n);
        buf_append_u8(out, 0);
        pos += 1 + n + 1;
    }
    if (!changed) {
        truncate_to(out, base);
        return 0;
    }
    buf_append_u8(out, 0);
    pg_msg_end(out, m);
    return 1;
}
