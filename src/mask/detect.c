/*
 * detect.c: detection by value. Compiles the detectors of one `masking:` config into one
 * vectorscan database (mask_db_build), scans text with it (mask_text), and masks whole
 * values and log strings (mask_value, mask_string).
 *
 * How a value is found: the built-in patterns are short, bounded and report END offsets
 * only (no start-of-match tracking, which costs vectorscan a factor of 50 on some patterns).
 * Each pattern names an extractor, a few lines of C that walk back and forward from the end
 * offset to the exact token (a whole run of digits and separators, a whole email, a whole
 * dotted quad, ...), reject tokens that continue into a longer one (a card inside a longer
 * digit run, 1.2.3.4.5, an SSN inside a dashed number), and hand the span to a validator
 * (validate.c). Custom patterns from the config are the admin's: they are compiled with
 * start-of-match tracking and the longest match per start is kept. Overlapping detections
 * are resolved by earliest start, then longest; spans always begin and end on ASCII bytes,
 * so multi-byte UTF-8 outside them comes through untouched.
 *
 * Threads: a mask_db is read-only after mask_db_build and shared. Each thread keeps one
 * vectorscan scratch, grown with hs_alloc_scratch() for every db it scans with, and a span
 * array; mask_thread_release() frees them and the plan cache (plan_cache.c). Masked forms are
 * form.c's.
 */
#include "mask/mask.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hs/hs.h>
#include <openssl/rand.h>

#include "mask/validate.h"

const char *const mask_builtin_detectors[] = {"email", "credit_card", "ssn",    "phone", "iban",
                                              "ipv4",  "ipv6",        "secret", "jwt",   NULL};
const char *const mask_column_detectors[] = {"dob", "address", "column", NULL};
#define N_BUILTIN 9

/* How a pattern's end offset becomes a span. */
enum ext {
    EXT_EMAIL,
    EXT_CARD,
    EXT_SSN,
    EXT_NANP,       /* 415-555-1234, 415.555.1234 (and a 1- / +1 prefix) */
    EXT_NANP_PAREN, /* (415) 555-1234 */
    EXT_E164,       /* +44 20 7946 0958 */
    EXT_IBAN,
    EXT_IPV4,
    EXT_IPV6,
    EXT_KEY,     /* a fixed-length anchor at the start of a token of one character class */
    EXT_PRIVKEY, /* -----BEGIN ... PRIVATE KEY----- through its END line */
    EXT_ASSIGN,  /* the value of password=..., "secret": "..." */
    EXT_JWT,
    EXT_CUSTOM, /* start of match from vectorscan */
};

/* Character classes a key token may continue with. */
enum cls { CLS_UPPERNUM, CLS_ALNUM, CLS_WORD, CLS_ALNUMDASH, CLS_B64URL };

struct builtin_pat {
    enum mask_kind kind;
    enum ext ext;
    const char *re;
    unsigned flags;
    uint8_t anchor; /* EXT_KEY: length of the fixed-length pattern (token start = end - anchor) */
    uint8_t cls;
    uint16_t min, max; /* EXT_KEY: token length bounds */
};

static const struct builtin_pat builtin_pats[] = {
    {MASK_K_EMAIL, EXT_EMAIL, "[A-Za-z0-9._%+\\-]@[A-Za-z0-9]", 0, 0, 0, 0, 0},
    /* 13+ digits, separators only where printed cards have them; the extractor takes the
     * whole run around the end */
    {MASK_K_CARD, EXT_CARD, "\\d{4}[ \\-]?\\d{4}[ \\-]?\\d{4}[ \\-]?\\d", 0, 0, 0, 0, 0},
    {MASK_K_CARD, EXT_CARD, "\\d{4}[ \\-]?\\d{6}[ \\-]?\\d{4}", 0, 0, 0, 0, 0},
    {MASK_K_SSN, EXT_SSN, "\\d{3}-\\d{2}-\\d{4}", 0, 0, 0, 0, 0},
    {MASK_K_PHONE, EXT_NANP, "\\d{3}[\\-.]\\d{3}[\\-.]\\d{4}", 0, 0, 0, 0, 0},
    {MASK_K_PHONE, EXT_NANP_PAREN, "\\(\\d{3}\\) ?\\d{3}[\\-. ]\\d{4}\\b", 0, 0, 0, 0, 0},
    {MASK_K_PHONE, EXT_E164, "\\+[1-9]", 0, 0, 0, 0, 0},
    /* pattern NULL: built from the IBAN country table, (?:AD|AE|...)\\d{2} */
    {MASK_K_IBAN, EXT_IBAN, NULL, 0, 0, 0, 0, 0},
    {MASK_K_IPV4, EXT_IPV4, "\\d\\.\\d{1,3}\\.\\d{1,3}\\.\\d", 0, 0, 0, 0, 0},
    {MASK_K_IPV6, EXT_IPV6, "::", 0, 0, 0, 0, 0},
    {MASK_K_IPV6, EXT_IPV6, ":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:", 0, 0, 0, 0, 0},
    /* AWS access key ids */
    {MASK_K_SECRET, EXT_KEY, "\\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\\b", 0, 20, CLS_UPPERNUM, 20,
     20},
    /* GitHub tokens */
    {MASK_K_SECRET, EXT_KEY, "\\bgh[pousr]_[A-Za-z0-9]{36}\\b", 0, 40, CLS_ALNUM, 40, 40},
    {MASK_K_SECRET, EXT_KEY, "\\bgithub_pat_[A-Za-z0-9_]{22}", 0, 33, CLS_WORD, 40, 255},
    /* Slack tokens */
    {MASK_K_SECRET, EXT_KEY, "\\bxox[abposr]-[A-Za-z0-9\\-]{10}", 0, 15, CLS_ALNUMDASH, 15, 255},
    /* Stripe keys */
    {MASK_K_SECRET, EXT_KEY, "\\b[rs]k_(?:live|test)_[A-Za-z0-9]{16}", 0, 24, CLS_ALNUM, 24, 255},
    /* Google API keys */
    {MASK_K_SECRET, EXT_KEY, "\\bAIza[0-9A-Za-z_\\-]{35}", 0, 39, CLS_B64URL, 39, 39},
    {MASK_K_SECRET, EXT_PRIVKEY, "-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY", 0, 0, 0, 0, 0},
    /* key words of "password=..." style assignments, literals only (cheap); the extractor
     * checks for the rest of the key, an optional quote, and ':' or '=' */
    {MASK_K_SECRET, EXT_ASSIGN,
     "(?:passw(?:or)?d|pwd|secret|api[_\\-]?key|access[_\\-]?key|private[_\\-]?key|token)",
     HS_FLAG_CASELESS, 0, 0, 0, 0},
    {MASK_K_JWT, EXT_JWT, "\\beyJ[A-Za-z0-9_\\-]{8}", 0, 0, 0, 0, 0},
};
#define N_BUILTIN_PATS (sizeof builtin_pats / sizeof builtin_pats[0])
#define MAX_PATS (N_BUILTIN_PATS + MASK_MAX_DETECTORS)

struct mask_det {
    char *name;
    enum mask_kind kind;
    enum cfg_mask_form form; /* own form, never DEFAULT */
    enum cfg_mask_validator validator;
    bool scans;
};

struct mask_pat {
    uint16_t det;
    uint8_t ext;
    const struct builtin_pat *bp; /* NULL for custom patterns */
};

struct mask_db {
    uint64_t id;
    hs_database_t *hs; /* NULL when nothing is scanned for */
    unsigned n_det;
    struct mask_det det[MASK_MAX_DETECTORS];
    unsigned n_pat;
    struct mask_pat pat[MAX_PATS];
    enum cfg_mask_form form; /* masking.form */
    int column_det;
    uint8_t *key;
    size_t key_len;
    struct cfg_masking cfg; /* deep copy of unmask, columns and exempt */
    bool batchable;         /* no custom pattern: values may be scanned many per call */
};

static atomic_uint_fast64_t next_db_id = 1;

/* ---- the per-process random hash key ---- */

static pthread_once_t proc_key_once = PTHREAD_ONCE_INIT;
static uint8_t proc_key[32];
static bool proc_key_ok;

static void proc_key_make(void)
{
    proc_key_ok = RAND_bytes(proc_key, sizeof proc_key) == 1;
}

/* ---- per-thread state ---- */

struct span {
    uint32_t start, end;
    uint16_t det;
};

static __thread hs_scratch_t *tl_scratch;
static __thread uint64_t tl_ids[8]; /* dbs this thread's scratch has been grown for */
static __thread unsigned tl_next_id;
static __thread struct span *tl_sp;
static __thread size_t tl_sp_cap;

static void batch_free(void);

void mask_thread_release(void)
{
    if (tl_scratch) hs_free_scratch(tl_scratch);
    tl_scratch = NULL;
    memset(tl_ids, 0, sizeof tl_ids);
    tl_next_id = 0;
    free(tl_sp);
    tl_sp = NULL;
    tl_sp_cap = 0;
    batch_free();
    mask_plan_cache_release();
}

uint64_t mask_db_id(const struct mask_db *db)
{
    return db->id;
}

static int scratch_for(const struct mask_db *db)
{
    for (unsigned i = 0; i < 8; i++)
        if (tl_ids[i] == db->id) return 0;
    if (hs_alloc_scratch(db->hs, &tl_scratch) != HS_SUCCESS) return -1;
    tl_ids[tl_next_id++ % 8] = db->id;
    return 0;
}

/* ---- building ---- */

static int add_det(struct mask_db *db, const char *name, enum mask_kind kind,
                   enum cfg_mask_form form, char *err, size_t errlen)
{
    if (db->n_det == MASK_MAX_DETECTORS) {
        snprintf(err, errlen, "masking: more than %d detectors", MASK_MAX_DETECTORS);
        return -1;
    }
    struct mask_det *d = &db->det[db->n_det];
    d->name = xstrdup(name);
    d->kind = kind;
    d->form = form == CFG_FORM_DEFAULT ? mask_kind_default_form(kind) : form;
    d->validator = CFG_VALID_NONE;
    d->scans = false;
    return (int)db->n_det++;
}

static char **copy_strv(char **v, unsigned n)
{
    if (!n) return NULL;
    char **c = xcalloc(n, sizeof *c);
    for (unsigned i = 0; i < n; i++)
        c[i] = xstrdup(v[i]);
    return c;
}

static void free_strv(char **v, unsigned n)
{
    for (unsigned i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

struct mask_db *mask_db_build(const struct cfg_masking *cfg, char *err, size_t errlen)
{
    struct mask_db *db = xcalloc(1, sizeof *db);
    const char *exprs[MAX_PATS];
    char iban_re[600];
    unsigned flags[MAX_PATS], ids[MAX_PATS];
    hs_compile_error_t *cerr = NULL;
    db->id = atomic_fetch_add(&next_db_id, 1);
    db->form = cfg->form;

    /* built-ins: all are known by name (columns may use them); only the enabled scan */
    for (unsigned i = 0; i < N_BUILTIN; i++)
        if (add_det(db, mask_builtin_detectors[i], (enum mask_kind)i, CFG_FORM_DEFAULT, err,
                    errlen) < 0)
            goto fail;
    for (unsigned i = 0; i < cfg->n_detectors; i++) {
        int k = mask_db_detector_index(db, cfg->detectors[i]);
        if (k < 0) {
            snprintf(err, errlen, "masking.detectors: unknown detector \"%s\"",
                     cfg->detectors[i] ? cfg->detectors[i] : "");
            goto fail;
        }
        db->det[k].scans = true;
    }
    if (cfg->n_detectors == 0 && cfg->detectors == NULL)
        for (unsigned i = 0; i < N_BUILTIN; i++)
            db->det[i].scans = true;
    for (const char *const *c = mask_column_detectors; *c; c++)
        if (add_det(db, *c, MASK_K_COLUMN, CFG_FORM_DEFAULT, err, errlen) < 0) goto fail;
    db->column_det = mask_db_detector_index(db, "column");

    for (unsigned i = 0; i < cfg->n_custom; i++) {
        const struct cfg_detector *c = &cfg->custom[i];
        if (!c->name || !*c->name) {
            snprintf(err, errlen, "masking.custom[%u]: a detector needs a name", i);
            goto fail;
        }
        if (mask_db_detector_index(db, c->name) >= 0) {
            snprintf(err, errlen, "masking.custom \"%s\": name already used by %s", c->name,
                     (unsigned)mask_db_detector_index(db, c->name) < db->column_det + 1u
                         ? "a built-in detector"
                         : "another custom detector");
            goto fail;
        }
        if (!c->pattern || !*c->pattern) {
            snprintf(err, errlen, "masking.custom \"%s\": a pattern is required", c->name);
            goto fail;
        }
        int k = add_det(db, c->name, MASK_K_CUSTOM, c->form, err, errlen);
        if (k < 0) goto fail;
        db->det[k].validator = c->validator;
        db->det[k].scans = true;
    }
    for (unsigned i = 0; i < cfg->n_columns; i++) {
        const char *name = cfg->columns[i].detector;
        if (name && *name && mask_db_detector_index(db, name) < 0 &&
            add_det(db, name, MASK_K_COLUMN, CFG_FORM_DEFAULT, err, errlen) < 0)
            goto fail;
    }

    /* patterns */
    for (unsigned i = 0; i < N_BUILTIN_PATS; i++) {
        const struct builtin_pat *bp = &builtin_pats[i];
        if (!db->det[bp->kind].scans) continue;
        db->pat[db->n_pat] = (struct mask_pat){(uint16_t)bp->kind, (uint8_t)bp->ext, bp};
        exprs[db->n_pat] = bp->re;
        if (!bp->re) {
            char cc[400];
            if (!mask_iban_countries(cc, sizeof cc)) abort(); /* the table outgrew cc */
            snprintf(iban_re, sizeof iban_re, "(?:%s)\\d{2}", cc);
            exprs[db->n_pat] = iban_re;
        }
        flags[db->n_pat] = bp->flags;
        ids[db->n_pat] = db->n_pat;
        db->n_pat++;
    }
    for (unsigned k = 0; k < db->n_det; k++) {
        if (db->det[k].kind != MASK_K_CUSTOM) continue;
        const struct cfg_detector *c = NULL;
        for (unsigned i = 0; i < cfg->n_custom; i++)
            if (strcmp(cfg->custom[i].name, db->det[k].name) == 0) c = &cfg->custom[i];
        db->pat[db->n_pat] = (struct mask_pat){(uint16_t)k, EXT_CUSTOM, NULL};
        exprs[db->n_pat] = c->pattern;
        flags[db->n_pat] = HS_FLAG_SOM_LEFTMOST;
        ids[db->n_pat] = db->n_pat;
        db->n_pat++;
    }
    db->batchable = true;
    for (unsigned i = 0; i < db->n_pat; i++)
        if (db->pat[i].ext == EXT_CUSTOM) db->batchable = false;
    if (db->n_pat && hs_compile_multi(exprs, flags, ids, db->n_pat, HS_MODE_BLOCK, NULL, &db->hs,
                                      &cerr) != HS_SUCCESS) {
        int e = cerr ? cerr->expression : -1;
        const char *msg = cerr && cerr->message ? cerr->message : "compile failed";
        if (e >= 0 && (unsigned)e < db->n_pat && db->pat[e].ext == EXT_CUSTOM)
            snprintf(err, errlen, "masking.custom \"%s\": bad pattern: %s",
                     db->det[db->pat[e].det].name, msg);
        else if (e >= 0 && (unsigned)e < db->n_pat)
            snprintf(err, errlen, "masking: built-in detector \"%s\": %s",
                     db->det[db->pat[e].det].name, msg);
        else
            snprintf(err, errlen, "masking: pattern database: %s", msg);
        hs_free_compile_error(cerr);
        db->hs = NULL;
        goto fail;
    }

    /* hash key */
    if (cfg->hash_key) {
        db->key_len = cfg->hash_key_len ? cfg->hash_key_len : strlen(cfg->hash_key);
        db->key = xmalloc(db->key_len + 1);
        memcpy(db->key, cfg->hash_key, db->key_len);
    } else {
        pthread_once(&proc_key_once, proc_key_make);
        if (!proc_key_ok) {
            snprintf(err, errlen, "masking: cannot generate a random hash key");
            goto fail;
        }
        db->key_len = sizeof proc_key;
        db->key = xmalloc(db->key_len);
        memcpy(db->key, proc_key, db->key_len);
    }

    /* what rows.c needs from the config */
    db->cfg.enabled = cfg->enabled;
    db->cfg.unmask = copy_strv(cfg->unmask, cfg->n_unmask);
    db->cfg.n_unmask = cfg->n_unmask;
    db->cfg.unmask_identities = copy_strv(cfg->unmask_identities, cfg->n_unmask_identities);
    db->cfg.n_unmask_identities = cfg->n_unmask_identities;
    db->cfg.exempt = copy_strv(cfg->exempt, cfg->n_exempt);
    db->cfg.n_exempt = cfg->n_exempt;
    db->cfg.form = cfg->form;
    if (cfg->n_columns) {
        db->cfg.columns = xcalloc(cfg->n_columns, sizeof *db->cfg.columns);
        for (unsigned i = 0; i < cfg->n_columns; i++) {
            db->cfg.columns[i].match = xstrdup(cfg->columns[i].match);
            db->cfg.columns[i].detector = xstrdup(cfg->columns[i].detector);
            db->cfg.columns[i].form = cfg->columns[i].form;
        }
        db->cfg.n_columns = cfg->n_columns;
    }
    return db;
fail:
    mask_db_free(db);
    return NULL;
}

void mask_db_free(struct mask_db *db)
{
    if (!db) return;
    if (db->hs) hs_free_database(db->hs);
    for (unsigned i = 0; i < db->n_det; i++)
        free(db->det[i].name);
    if (db->key) {
        memset(db->key, 0, db->key_len);
        free(db->key);
    }
    free_strv(db->cfg.unmask, db->cfg.n_unmask);
    free_strv(db->cfg.unmask_identities, db->cfg.n_unmask_identities);
    free_strv(db->cfg.exempt, db->cfg.n_exempt);
    for (unsigned i = 0; i < db->cfg.n_columns; i++) {
        free(db->cfg.columns[i].match);
        free(db->cfg.columns[i].detector);
    }
    free(db->cfg.columns);
    free(db);
}

unsigned mask_db_detector_count(const struct mask_db *db)
{
    return db->n_det;
}

const char *mask_db_detector_name(const struct mask_db *db, unsigned i)
{
    return i < db->n_det ? db->det[i].name : NULL;
}

int mask_db_detector_index(const struct mask_db *db, const char *name)
{
    if (!name) return -1;
    for (unsigned i = 0; i < db->n_det; i++)
        if (strcmp(db->det[i].name, name) == 0) return (int)i;
    return -1;
}

const struct cfg_masking *mask_db_config(const struct mask_db *db)
{
    return &db->cfg;
}

int mask_db_column_detector(const struct mask_db *db)
{
    return db->column_det;
}

bool mask_db_detector_scans(const struct mask_db *db, unsigned i)
{
    return i < db->n_det && db->det[i].scans;
}

enum cfg_mask_form mask_db_detector_form(const struct mask_db *db, unsigned i,
                                         enum cfg_mask_form form)
{
    if (form != CFG_FORM_DEFAULT) return form;
    if (db->form != CFG_FORM_DEFAULT) return db->form;
    return i < db->n_det ? db->det[i].form : CFG_FORM_FULL;
}

/* ---- extractors ---- */

static inline bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_alpha(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline bool is_alnum(uint8_t c)
{
    return is_digit(c) || is_alpha(c);
}

static inline bool is_word(uint8_t c)
{
    return is_alnum(c) || c == '_';
}

static inline bool is_hex(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline bool in_cls(uint8_t c, unsigned cls)
{
    switch (cls) {
    case CLS_UPPERNUM:
        return is_digit(c) || (c >= 'A' && c <= 'Z');
    case CLS_ALNUM:
        return is_alnum(c);
    case CLS_WORD:
        return is_word(c);
    case CLS_ALNUMDASH:
        return is_alnum(c) || c == '-';
    default:
        return is_word(c) || c == '-';
    }
}

/* One scan. s[0, len) is what the scanner sees: one value, or (batch) values joined by NUL
 * bytes, value k at [voff[k], voff[k] + vlen[k]). No built-in pattern matches a NUL and NUL is
 * not a word character, so in a batch every built-in match lies inside one value and is the
 * match the value alone would give; extractors then see only that value. Custom patterns
 * (any regex) could cross a NUL: dbs with custom detectors are never scanned in batches. */
struct scan_ctx {
    const struct mask_db *db;
    const uint8_t *s;
    size_t len;
    const uint32_t *voff, *vlen; /* batch: the values; NULL for one value */
    size_t nv;
    size_t n;                     /* spans in tl_sp */
    size_t skip[MAX_PATS];        /* per pattern: reports ending at or before this are seen */
    int last[MASK_MAX_DETECTORS]; /* custom: index of the detector's last span, -1 none */
};

static void push_span(struct scan_ctx *c, size_t a, size_t b, unsigned det)
{
    if (c->n == tl_sp_cap) {
        tl_sp_cap = tl_sp_cap ? tl_sp_cap * 2 : 64;
        tl_sp = xrealloc(tl_sp, tl_sp_cap * sizeof *tl_sp);
    }
    tl_sp[c->n++] = (struct span){(uint32_t)a, (uint32_t)b, (uint16_t)det};
}

/* A numeric token continues across a separator: "1-" before a or "-1" after b. */
static bool cont_before(const uint8_t *s, size_t a)
{
    return a >= 2 && (s[a - 1] == '-' || s[a - 1] == '.' || s[a - 1] == '/') && is_digit(s[a - 2]);
}

static bool cont_after(const uint8_t *s, size_t len, size_t b)
{
    return b + 1 < len && (s[b] == '-' || s[b] == '.' || s[b] == '/') && is_digit(s[b + 1]);
}

static bool ext_email(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb)
{
    size_t at = to - 2, i = at;
    while (i > 0 && at - i < 65) {
        uint8_t c = s[i - 1];
        if (!(is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-')) break;
        i--;
    }
    size_t j = at + 1;
    while (j < len && j - at <= 254 && (is_alnum(s[j]) || s[j] == '-' || s[j] == '.'))
        j++;
    *pb = j;
    if (at - i > 64) return false; /* local part longer than 64: not an address */
    while (i < at && s[i] == '.')
        i++;
    while (j > at + 1 && (s[j - 1] == '.' || s[j - 1] == '-'))
        j--;
    if (i == at && at > 0 && s[at - 1] >= 0x80) {
        /* an internationalised local part (josé@example.com): only when there is no ASCII
         * one, so that "メールはuser@example.com" keeps its text before the address */
        while (i > 0 && at - i < 64 && (s[i - 1] >= 0x80 || is_alnum(s[i - 1])))
            i--;
        while (i < at && (s[i] & 0xC0) == 0x80)
            i++;
    }
    if (i == at) return false;
    *pa = i;
    *pb = j;
    return mask_valid_email(s + i, j - i);
}

/* The run of digits joined by single spaces or dashes around position p (a digit). */
static void digit_run(const uint8_t *s, size_t len, size_t p, size_t *pa, size_t *pb)
{
    size_t a = p, b = p + 1;
    for (;;) {
        if (a > 0 && is_digit(s[a - 1]))
            a--;
        else if (a > 1 && (s[a - 1] == ' ' || s[a - 1] == '-') && is_digit(s[a - 2]))
            a -= 2;
        else
            break;
    }
    for (;;) {
        if (b < len && is_digit(s[b]))
            b++;
        else if (b + 1 < len && (s[b] == ' ' || s[b] == '-') && is_digit(s[b + 1]))
            b += 2;
        else
            break;
    }
    *pa = a;
    *pb = b;
}

/* Printed card layouts (digits per group) when a number is written with separators. */
static const uint8_t card_layouts[][6] = {{4, 4, 4, 4, 0},    {4, 6, 5, 0},       {4, 6, 4, 0},
                                          {4, 4, 4, 4, 3, 0}, {4, 4, 4, 4, 2, 0}, {4, 4, 5, 0},
                                          {4, 4, 4, 1, 0}};

static bool ext_card(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                     size_t *scan_to)
{
    size_t a, b;
    digit_run(s, len, to - 1, &a, &b);
    *scan_to = b;
    if (b - a > 256 || cont_before(s, a) || cont_after(s, len, b)) return false;
    if ((a > 0 && is_word(s[a - 1])) || (b < len && is_word(s[b]))) return false;
    /* groups of the run */
    size_t gs[40], gl[40], ng = 0;
    uint8_t sep_before[40];
    for (size_t i = a; i < b && ng < 40;) {
        sep_before[ng] = i > a ? s[i - 1] : 0;
        gs[ng] = i;
        while (i < b && is_digit(s[i]))
            i++;
        gl[ng] = i - gs[ng];
        ng++;
        i++; /* separator */
    }
    if (ng == 1) {
        if (!mask_valid_card(s + a, b - a)) return false;
        *pa = a;
        *pb = b;
        return true;
    }
    /* With separators, the groups must be a printed card layout (an IMEI's 2-6-6-1 is not),
     * the whole run or, with spaces around, a part of it ("4111 1111 1111 1111 123"). */
    for (size_t g = 0; g < ng; g++) {
        if (g > 0 && sep_before[g] != ' ') continue;
        for (size_t l = 0; l < sizeof card_layouts / sizeof card_layouts[0]; l++) {
            size_t k = 0;
            while (card_layouts[l][k] && g + k < ng && gl[g + k] == card_layouts[l][k])
                k++;
            if (card_layouts[l][k] != 0) continue;
            size_t last = g + k - 1;
            if (last + 1 < ng && sep_before[last + 1] != ' ') continue;
            size_t sa = gs[g], sb = gs[last] + gl[last];
            if (mask_valid_card(s + sa, sb - sa)) {
                *pa = sa;
                *pb = sb;
                return true;
            }
        }
    }
    return false;
}

static bool ext_ssn(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb)
{
    size_t a = to - 11;
    if (cont_before(s, a) || cont_after(s, len, to)) return false;
    if ((a > 0 && is_word(s[a - 1])) || (to < len && is_word(s[to]))) return false;
    *pa = a;
    *pb = to;
    return mask_valid_ssn(s + a, 11);
}

/* Extend a NANP span over a leading "1-", "1.", "+1-", "+1 " or "+1." */
static size_t nanp_prefix(const uint8_t *s, size_t a, uint8_t sep)
{
    if (a >= 2 && s[a - 2] == '1' && (s[a - 1] == sep || s[a - 1] == ' ')) {
        bool plus = a >= 3 && s[a - 3] == '+';
        if (plus && (a == 3 || !is_word(s[a - 4]))) return a - 3;
        if (!plus && s[a - 1] != ' ' && (a == 2 || !is_word(s[a - 3]))) return a - 2;
    }
    return a;
}

static bool ext_nanp(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb)
{
    size_t a = to - 12;
    uint8_t sep = s[a + 3];
    if (s[a + 7] != sep) return false;
    size_t a2 = nanp_prefix(s, a, sep);
    if ((a2 == a && cont_before(s, a)) || cont_after(s, len, to)) return false;
    if ((a > 0 && is_word(s[a - 1])) || (to < len && is_word(s[to]))) return false;
    *pa = a2;
    *pb = to;
    return mask_valid_nanp(s + a, 12);
}

static bool ext_nanp_paren(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb)
{
    size_t a = s[to - 9] == ' ' ? to - 14 : to - 13;
    if (s[a] != '(' || cont_after(s, len, to)) return false;
    if (a >= 2 && s[a - 1] == ' ' && s[a - 2] == '1' && (a == 2 || !is_word(s[a - 3]))) {
        a -= 2;
        if (a >= 1 && s[a - 1] == '+') a--;
    }
    *pa = a;
    *pb = to;
    return mask_valid_nanp(s + a, to - a) || mask_valid_e164(s + a, to - a);
}

static bool ext_e164(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                     size_t *scan_to)
{
    size_t p = to - 2;
    if (p > 0 && (is_word(s[p - 1]) || s[p - 1] == '+' || s[p - 1] == '.')) return false;
    /* group ends (position after the group) and digits so far */
    size_t ends[24], digs[24], ng = 0, nd = 0, i = p + 1;
    while (i < len && ng < 24) {
        if (is_digit(s[i])) {
            while (i < len && is_digit(s[i]) && nd <= 15) {
                i++;
                nd++;
            }
        } else if (s[i] == '(') {
            size_t j = i + 1;
            while (j < len && j - i <= 5 && is_digit(s[j]))
                j++;
            if (j == i + 1 || j >= len || s[j] != ')') break;
            nd += j - i - 1;
            i = j + 1;
        } else {
            break;
        }
        ends[ng] = i;
        digs[ng] = nd;
        ng++;
        if (nd > 15) break;
        if (i + 1 < len && (s[i] == ' ' || s[i] == '-' || s[i] == '.') &&
            (is_digit(s[i + 1]) || s[i + 1] == '('))
            i++;
        else if (!(i < len && s[i] == '('))
            break;
    }
    *scan_to = ng ? ends[ng - 1] : to;
    /* a date is not a phone: +2024-01-15 */
    if (ng >= 3 && ends[0] - p == 5 && ends[1] - ends[0] == 3 && s[ends[0]] == '-') return false;
    /* the longest prefix of groups that is a phone number; a trailing number after a space
     * ("+1 415 555 1234 5 times") is not part of it */
    for (size_t g = ng; g-- > 0;) {
        if (digs[g] < 8) break;
        if (digs[g] > 15) continue;
        size_t b = ends[g];
        if (b < len && is_word(s[b])) continue;
        if (g + 1 < ng && s[b] != ' ') continue;
        if (mask_valid_e164(s + p, b - p)) {
            *pa = p;
            *pb = b;
            return true;
        }
    }
    return false;
}

static bool is_iban_char(uint8_t c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z');
}

static bool ext_iban(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                     size_t *scan_to)
{
    size_t a = to - 4;
    unsigned want = mask_iban_length(s + a);
    *scan_to = to;
    if (!want || (a > 0 && is_alnum(s[a - 1]))) return false;
    bool formatted = a + 4 < len && s[a + 4] == ' ';
    size_t i = a + 4, count = 0;
    while (i < len && count < want - 4) {
        if (is_iban_char(s[i])) {
            count++;
            i++;
        } else if (s[i] == ' ' && formatted && count % 4 == 0 && i + 1 < len &&
                   is_iban_char(s[i + 1])) {
            i++;
        } else {
            break;
        }
    }
    *scan_to = i;
    if (count != want - 4 || (i < len && is_alnum(s[i]))) return false;
    *pa = a;
    *pb = i;
    return mask_valid_iban(s + a, i - a);
}

static bool version_word_before(const uint8_t *s, size_t a)
{
    size_t e = a;
    while (e > 0 && a - e < 2 && s[e - 1] == ' ')
        e--;
    size_t b = e;
    while (b > 0 && e - b < 8 && is_alpha(s[b - 1]))
        b--;
    static const char *const words[] = {"version", "ver", "v", "release", "build", "rev"};
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t l = strlen(words[w]);
        if (e - b != l) continue;
        size_t k = 0;
        while (k < l && (s[b + k] | 0x20) == words[w][k])
            k++;
        if (k == l) return true;
    }
    return false;
}

static bool ext_ipv4(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                     size_t *scan_to)
{
    size_t a = to, b = to;
    while (a > 0 && to - a < 64 && (is_digit(s[a - 1]) || s[a - 1] == '.'))
        a--;
    while (b < len && b - to < 64 && (is_digit(s[b]) || s[b] == '.'))
        b++;
    *scan_to = b;
    while (b > to && s[b - 1] == '.')
        b--;
    while (a < to && s[a] == '.')
        a++;
    if ((a > 0 && is_word(s[a - 1])) || (b < len && is_word(s[b]))) return false;
    if (!mask_valid_ipv4(s + a, b - a) || version_word_before(s, a)) return false;
    *pa = a;
    *pb = b;
    return true;
}

static bool ext_ipv6(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                     size_t *scan_to)
{
    size_t a = to - 1, b = to;
    while (a > 0 && to - a < 64 && (is_hex(s[a - 1]) || s[a - 1] == ':' || s[a - 1] == '.'))
        a--;
    while (b < len && b - to < 64 && (is_hex(s[b]) || s[b] == ':' || s[b] == '.'))
        b++;
    *scan_to = b;
    while (b > to && s[b - 1] == '.')
        b--;
    if (b - a >= 2 && s[b - 1] == ':' && s[b - 2] != ':') b--;
    if ((a > 0 && is_word(s[a - 1])) || (b < len && is_word(s[b]))) return false;
    if (!mask_valid_ipv6(s + a, b - a)) return false;
    *pa = a;
    *pb = b;
    return true;
}

static bool ext_key(const struct builtin_pat *bp, const uint8_t *s, size_t len, size_t to,
                    size_t *pa, size_t *pb, size_t *scan_to)
{
    size_t a = to - bp->anchor, b = to;
    while (b < len && b - a < bp->max && in_cls(s[b], bp->cls))
        b++;
    *scan_to = b;
    if (b - a < bp->min || (b < len && (is_word(s[b]) || in_cls(s[b], bp->cls)))) return false;
    *pa = a;
    *pb = b;
    return true;
}

static bool ext_privkey(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                        size_t *scan_to)
{
    size_t lo = to > 64 ? to - 64 : 0, a = to;
    for (size_t i = to; i-- > lo;)
        if (i + 11 <= len && memcmp(s + i, "-----BEGIN ", 11) == 0) {
            a = i;
            break;
        }
    if (a == to) return false;
    size_t b = len; /* no END line: redact to the end, never leak half a key */
    const uint8_t *e = memmem(s + to, len - to, "-----END ", 9);
    if (e) {
        size_t ep = (size_t)(e - s) + 9;
        const uint8_t *f = memmem(s + ep, len - ep < 64 ? len - ep : 64, "-----", 5);
        b = f ? (size_t)(f - s) + 5 : len;
    }
    *pa = a;
    *pb = b;
    *scan_to = b;
    return true;
}

static bool ext_assign(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb)
{
    size_t i = to;
    /* the rest of the key (secret_key, client_secret, token_v2), a closing quote, blanks */
    while (i < len && i - to < 16 && (is_word(s[i]) || s[i] == '-'))
        i++;
    if (i < len && (s[i] == '"' || s[i] == '\'')) i++;
    for (unsigned k = 0; k < 3 && i < len && (s[i] == ' ' || s[i] == '\t'); k++)
        i++;
    if (i >= len || (s[i] != ':' && s[i] != '=')) return false;
    i++;
    if (i < len && (s[i] == '>' || s[i] == '=')) i++;
    for (unsigned k = 0; k < 3 && i < len && (s[i] == ' ' || s[i] == '\t'); k++)
        i++;
    if (i >= len) return false;
    bool quoted = s[i] == '"' || s[i] == '\'';
    size_t v0, v1;
    if (quoted) {
        uint8_t q = s[i];
        v0 = v1 = i + 1;
        while (v1 < len && v1 - v0 < 512 && s[v1] != q && s[v1] != '\n')
            v1++;
        if (v1 >= len || s[v1] != q) return false;
    } else {
        v0 = v1 = i;
        while (v1 < len && v1 - v0 < 512 && s[v1] > ' ' && !strchr(",;&)}]\"'<>", s[v1]))
            v1++;
    }
    if (!mask_valid_assigned_secret(s + v0, v1 - v0, quoted)) return false;
    *pa = v0;
    *pb = v1;
    return true;
}

static bool ext_jwt(const uint8_t *s, size_t len, size_t to, size_t *pa, size_t *pb,
                    size_t *scan_to)
{
    size_t a = to - 11, b = to, dots[5], nd = 0;
    while (b < len && b - a < 16384) {
        if (s[b] == '.') {
            if (nd == 5) break;
            dots[nd++] = b;
        } else if (!(is_word(s[b]) || s[b] == '-')) {
            break;
        }
        b++;
    }
    *scan_to = b;
    while (nd && dots[nd - 1] == b - 1) { /* a trailing dot ends a sentence */
        b--;
        nd--;
    }
    if (nd < 2) return false;
    if (nd == 3) b = dots[2]; /* three parts and more after: keep the JWS */
    if (nd == 5) b = dots[4];
    if (b < len && s[b] != '.' && is_word(s[b])) return false;
    *pa = a;
    *pb = b;
    return mask_valid_jwt(s + a, b - a);
}

static bool custom_valid(enum cfg_mask_validator v, const uint8_t *s, size_t n)
{
    switch (v) {
    case CFG_VALID_LUHN:
        return mask_valid_luhn(s, n);
    case CFG_VALID_MOD97:
        return mask_valid_mod97(s, n);
    case CFG_VALID_SSN:
        return mask_valid_ssn(s, n);
    default:
        return true;
    }
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *arg)
{
    (void)flags;
    struct scan_ctx *c = arg;
    const struct mask_pat *p = &c->db->pat[id];
    const uint8_t *s = c->s;
    size_t len = c->len, a = 0, b = 0, base = 0;
    bool ok = false;
    if (to <= c->skip[id]) return 0;
    if (c->voff) {
        /* the value holding the match's last byte (to - 1) */
        size_t lo = 0, hi = c->nv;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (c->voff[mid] <= to - 1)
                lo = mid;
            else
                hi = mid;
        }
        base = c->voff[lo];
        s += base;
        len = c->vlen[lo];
        to -= base;
    }
    size_t scan_to = (size_t)to;
    if (p->ext == EXT_CUSTOM) {
        unsigned det = p->det;
        if (to <= from || !custom_valid(c->db->det[det].validator, s + from, to - from)) return 0;
        int l = c->last[det];
        if (l >= 0 && tl_sp[l].start == from) {
            if (tl_sp[l].end < to) tl_sp[l].end = (uint32_t)to;
            return 0;
        }
        c->last[det] = (int)c->n;
        push_span(c, from, to, det);
        return 0;
    }
    switch ((enum ext)p->ext) {
    case EXT_EMAIL:
        ok = ext_email(s, len, to, &a, &b);
        scan_to = b;
        break;
    case EXT_CARD:
        ok = ext_card(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_SSN:
        ok = ext_ssn(s, len, to, &a, &b);
        break;
    case EXT_NANP:
        ok = ext_nanp(s, len, to, &a, &b);
        break;
    case EXT_NANP_PAREN:
        ok = ext_nanp_paren(s, len, to, &a, &b);
        break;
    case EXT_E164:
        ok = ext_e164(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_IBAN:
        ok = ext_iban(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_IPV4:
        ok = ext_ipv4(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_IPV6:
        ok = ext_ipv6(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_KEY:
        ok = ext_key(p->bp, s, len, to, &a, &b, &scan_to);
        break;
    case EXT_PRIVKEY:
        ok = ext_privkey(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_ASSIGN:
        ok = ext_assign(s, len, to, &a, &b);
        break;
    case EXT_JWT:
        ok = ext_jwt(s, len, to, &a, &b, &scan_to);
        break;
    case EXT_CUSTOM:
        break;
    }
    if (base + scan_to > c->skip[id]) c->skip[id] = base + scan_to;
    if (ok && b > a) push_span(c, base + a, base + b, p->det);
    return 0;
}

static int span_cmp(const void *x, const void *y)
{
    const struct span *a = x, *b = y;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    if (a->end != b->end) return a->end > b->end ? -1 : 1;
    return (int)a->det - (int)b->det;
}

/* Scan s (one value, or a batch when voff is set); leaves the accepted, sorted,
 * non-overlapping spans in tl_sp and returns how many, or -1 on a scanner failure. */
static long scan_spans(const struct mask_db *db, const uint8_t *s, size_t len, const uint32_t *voff,
                       const uint32_t *vlen, size_t nv)
{
    if (!db->hs || len == 0) return 0;
    if (len > UINT32_MAX || scratch_for(db) < 0) return -1;
    struct scan_ctx c;
    c.db = db;
    c.s = s;
    c.len = len;
    c.voff = voff;
    c.vlen = vlen;
    c.nv = nv;
    c.n = 0;
    memset(c.skip, 0, db->n_pat * sizeof c.skip[0]);
    for (unsigned i = 0; i < db->n_det; i++)
        c.last[i] = -1;
    if (hs_scan(db->hs, (const char *)s, (unsigned)len, 0, tl_scratch, on_match, &c) != HS_SUCCESS)
        return -1;
    if (c.n > 1) qsort(tl_sp, c.n, sizeof *tl_sp, span_cmp);
    size_t k = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (k && tl_sp[i].start < tl_sp[k - 1].end) continue;
        tl_sp[k++] = tl_sp[i];
    }
    return (long)k;
}

/* Append s with the n spans sp (offsets into s) masked; counts them. */
static int write_masked(const struct mask_db *db, const uint8_t *s, size_t len,
                        const struct span *sp, long n, struct buf *out, struct mask_counts *counts)
{
    struct mask_form_key key = {db->key, db->key_len};
    size_t pos = 0;
    for (long i = 0; i < n; i++) {
        const struct mask_det *d = &db->det[sp[i].det];
        if (sp[i].start > pos) mask_put(out, s + pos, sp[i].start - pos);
        enum cfg_mask_form form = db->form != CFG_FORM_DEFAULT ? db->form : d->form;
        mask_form_write(&key, d->kind, d->name, form, s + sp[i].start, sp[i].end - sp[i].start,
                        out);
        pos = sp[i].end;
        if (counts) counts->n[sp[i].det]++;
    }
    if (pos < len) mask_put(out, s + pos, len - pos);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

int mask_text(const struct mask_db *db, const uint8_t *s, size_t len, struct buf *out,
              struct mask_counts *counts)
{
    long n = scan_spans(db, s, len, NULL, NULL, 0);
    if (n <= 0) return (int)n;
    return write_masked(db, s, len, tl_sp, n, out, counts);
}

/* ---- batches: many values, one scanner call ---- */

/* This thread's batch: the values added since the last reset, joined by NUL bytes in text,
 * and after mask_batch_scan() their spans (offsets into each value), sp[first[k], +nsp[k]).
 * next: the value mask_batch_take() expects. */
struct batch {
    uint64_t db_id; /* of the scan; 0 before it */
    uint8_t *text;
    size_t text_len;
    uint32_t *voff, *vlen, *first, *nsp;
    size_t n, cap, next;
    struct span *sp;
    size_t sp_cap;
};
static __thread struct batch tl_batch;

static void batch_free(void)
{
    struct batch *b = &tl_batch;
    free(b->text);
    free(b->voff);
    free(b->vlen);
    free(b->first);
    free(b->nsp);
    free(b->sp);
    memset(b, 0, sizeof *b);
}

bool mask_db_batchable(const struct mask_db *db)
{
    return db->batchable && db->hs;
}

void mask_batch_reset(void)
{
    tl_batch.n = tl_batch.next = tl_batch.text_len = 0;
    tl_batch.db_id = 0;
}

bool mask_batch_add(const uint8_t *s, size_t len)
{
    struct batch *b = &tl_batch;
    if (len == 0 || len + 1 > MASK_BATCH_TEXT - b->text_len || b->n == MASK_BATCH_VALUES)
        return false;
    if (!b->text) {
        b->text = xmalloc(MASK_BATCH_TEXT);
        b->voff = xmalloc(MASK_BATCH_VALUES * sizeof *b->voff);
        b->vlen = xmalloc(MASK_BATCH_VALUES * sizeof *b->vlen);
        b->first = xmalloc(MASK_BATCH_VALUES * sizeof *b->first);
        b->nsp = xmalloc(MASK_BATCH_VALUES * sizeof *b->nsp);
    }
    b->voff[b->n] = (uint32_t)b->text_len;
    b->vlen[b->n] = (uint32_t)len;
    b->n++;
    memcpy(b->text + b->text_len, s, len);
    b->text[b->text_len + len] = 0;
    b->text_len += len + 1;
    return true;
}

int mask_batch_scan(const struct mask_db *db)
{
    struct batch *b = &tl_batch;
    b->next = 0;
    if (!mask_db_batchable(db)) {
        mask_batch_reset();
        return -1;
    }
    long n = b->n ? scan_spans(db, b->text, b->text_len, b->voff, b->vlen, b->n) : 0;
    if (n < 0) {
        mask_batch_reset();
        return -1;
    }
    if ((size_t)n > b->sp_cap) {
        b->sp_cap = (size_t)n;
        b->sp = xrealloc(b->sp, b->sp_cap * sizeof *b->sp);
    }
    /* spans are sorted by batch offset, so each value's are one run */
    size_t i = 0;
    for (size_t k = 0; k < b->n; k++) {
        b->first[k] = (uint32_t)i;
        uint32_t end = b->voff[k] + b->vlen[k];
        while (i < (size_t)n && tl_sp[i].start < end) {
            b->sp[i] =
                (struct span){tl_sp[i].start - b->voff[k], tl_sp[i].end - b->voff[k], tl_sp[i].det};
            i++;
        }
        b->nsp[k] = (uint32_t)(i - b->first[k]);
    }
    b->db_id = db->id;
    return 0;
}

bool mask_batch_pending(const struct mask_db *db)
{
    return tl_batch.db_id == db->id && tl_batch.next < tl_batch.n;
}

int mask_batch_take(const struct mask_db *db, const uint8_t *s, size_t len, struct buf *out,
                    struct mask_counts *counts)
{
    struct batch *b = &tl_batch;
    if (b->db_id != db->id || b->next >= b->n) return -2;
    size_t k = b->next;
    if (b->vlen[k] != len || memcmp(b->text + b->voff[k], s, len) != 0) {
        mask_batch_reset(); /* not the value scanned: the rest of the batch is stale too */
        return -2;
    }
    b->next++;
    if (b->nsp[k] == 0) return 0;
    return write_masked(db, s, len, b->sp + b->first[k], b->nsp[k], out, counts);
}

int mask_text_inplace(const struct mask_db *db, uint8_t *s, size_t len, struct mask_counts *counts)
{
    long n = scan_spans(db, s, len, NULL, NULL, 0);
    for (long i = 0; i < n; i++) {
        const struct span *sp = &tl_sp[i];
        memset(s + sp->start, '*', sp->end - sp->start);
        if (counts) counts->n[sp->det]++;
    }
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

void mask_value(const struct mask_db *db, int detector, enum cfg_mask_form form, const uint8_t *s,
                size_t len, struct buf *out)
{
    unsigned i = detector >= 0 && (unsigned)detector < db->n_det ? (unsigned)detector
                                                                 : (unsigned)db->column_det;
    struct mask_form_key key = {db->key, db->key_len};
    mask_form_write(&key, db->det[i].kind, db->det[i].name, mask_db_detector_form(db, i, form), s,
                    len, out);
}

char *mask_string_try(const struct mask_db *db, const char *s)
{
    if (!s) return NULL;
    if (!db) return xstrdup(s);
    size_t len = strlen(s);
    struct buf b = {0};
    b.cap = len + 64;
    b.data = xmalloc(b.cap);
    int r = mask_text(db, (const uint8_t *)s, len, &b, NULL);
    if (r < 0) {
        free(b.data);
        return NULL;
    }
    if (r == 0) buf_append(&b, s, len);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

char *mask_string(const struct mask_db *db, const char *s)
{
    if (!s) return NULL;
    char *r = mask_string_try(db, s);
    return r ? r : xstrdup("[REDACTED:unscannable]"); /* fail closed */
}
