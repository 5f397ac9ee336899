/*
 * test_mask_rows.c: unit tests of the result-row rewriter (src/mask/rows.c) and the column
 * name classifier (src/mask/classify.c), over the real detector database (detect.c).
 *
 * Messages are built byte by byte as PostgreSQL sends them; every rewritten message is
 * re-parsed (type, length field, column count, each column's length) and each rewritten
 * value is compared with what mask_value()/mask_text() give for that value alone, so the
 * tests hold whatever masked forms detect.c chooses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mask/mask.h"
#include "pg/msg.h"

/* ---- message builders ---- */

struct field {
    const char *name;
    uint32_t table_oid;
    int16_t attnum;
    uint32_t type_oid;
    int16_t format;
};

#define T_TEXT 25u
#define T_INT4 23u
#define T_INT8 20u
#define T_BOOL 16u
#define T_NUMERIC 1700u
#define T_TSTZ 1184u
#define T_UUID 2950u
#define T_VARCHAR 1043u
#define T_JSONB 3802u
#define T_TEXTARR 1009u

static void put_u16(struct buf *b, uint16_t v)
{
    buf_append_u16(b, v);
}

/* RowDescription body into a fresh buffer (data at b->data + b->off). */
static struct buf *rowdesc(const struct field *f, unsigned n)
{
    struct buf *b = buf_get();
    put_u16(b, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
        buf_append_str(b, f[i].name);
        buf_append_u32(b, f[i].table_oid);
        put_u16(b, (uint16_t)f[i].attnum);
        buf_append_u32(b, f[i].type_oid);
        put_u16(b, (uint16_t)-1); /* typlen */
        buf_append_u32(b, (uint32_t)-1);
        put_u16(b, (uint16_t)f[i].format);
    }
    return b;
}

/* A DataRow value: NULL when s == NULL; n = strlen(s) unless len is given (>= 0). */
struct val {
    const char *s;
    int len;
};

static struct buf *datarow(const struct val *v, unsigned n)
{
    struct buf *b = buf_get();
    put_u16(b, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
        if (!v[i].s) {
            buf_append_u32(b, (uint32_t)-1);
            continue;
        }
        size_t l = v[i].len >= 0 ? (size_t)v[i].len : strlen(v[i].s);
        buf_append_u32(b, (uint32_t)l);
        buf_append(b, v[i].s, l);
    }
    return b;
}

#define V(str)                                                                                     \
    {                                                                                              \
        (str), -1                                                                                  \
    }
#define VNULL                                                                                      \
    {                                                                                              \
        NULL, -1                                                                                   \
    }

static const uint8_t *bdata(const struct buf *b)
{
    return b->data + b->off;
}

/* Copy into an exactly sized heap block so ASan sees any read past the end. */
static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n) memcpy(q, p, n);
    return q;
}

/* A parsed DataRow message (from the rewriter's output). */
struct row {
    unsigned n;
    int32_t len[16];
    const uint8_t *val[16];
};

/* Parse one whole 'D' message at m (avail bytes): checks type, length field and columns;
 * returns the message size. */
static size_t parse_row_msg(const uint8_t *m, size_t avail, struct row *r)
{
    assert_true(avail >= 7);
    assert_int_equal(m[0], 'D');
    uint32_t ml = pg_get_u32(m + 1);
    assert_true(ml + 1 <= avail);
    const uint8_t *body = m + 5;
    size_t len = ml - 4, pos = 2;
    r->n = pg_get_u16(body);
    assert_true(r->n <= 16);
    for (unsigned i = 0; i < r->n; i++) {
        assert_true(pos + 4 <= len);
        r->len[i] = (int32_t)pg_get_u32(body + pos);
        pos += 4;
        r->val[i] = body + pos;
        if (r->len[i] > 0) pos += (size_t)r->len[i];
        assert_true(pos <= len);
    }
    assert_int_equal(pos, len);
    return ml + 1;
}

static bool col_is(const struct row *r, unsigned i, const void *s, size_t n)
{
    return r->len[i] == (int32_t)n && (n == 0 || memcmp(r->val[i], s, n) == 0);
}

/* ---- fixtures ---- */

struct fx {
    struct cfg_masking cfg;
    struct mask_db *db;
    struct buf *out;
};

static char *exempt_globs[] = {"notes_exempt", "public.audit_log.*"};
static struct cfg_mask_column column_rules[] = {
    {.match = "salary", .detector = NULL, .form = CFG_FORM_DEFAULT},
    {.match = "*.customers.nickname", .detector = NULL, .form = CFG_FORM_FULL},
    {.match = "notes_exempt", .detector = "email", .form = CFG_FORM_DEFAULT},
    {.match = "blob_secret", .detector = NULL, .form = CFG_FORM_DEFAULT},
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->cfg.enabled = true;
    f->cfg.exempt = exempt_globs;
    f->cfg.n_exempt = 2;
    f->cfg.columns = column_rules;
    f->cfg.n_columns = 4;
    char err[256] = "";
    f->db = mask_db_build(&f->cfg, err, sizeof err);
    if (!f->db) fprintf(stderr, "mask_db_build: %s\n", err);
    assert_non_null(f->db);
    f->out = buf_get();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    buf_put(f->out);
    mask_db_free(f->db);
    free(f);
    mask_thread_release();
    buf_pool_free();
    return 0;
}

static int det(const struct fx *f, const char *name)
{
    int d = mask_db_detector_index(f->db, name);
    assert_true(d >= 0);
    return d;
}

/* mask_value of s for detector d (the expected whole-value form) into a new buffer. */
static struct buf *want_value(const struct fx *f, int d, enum cfg_mask_form form, const char *s,
                              size_t n)
{
    struct buf *b = buf_get();
    mask_value(f->db, d, form, (const uint8_t *)s, n, b);
    return b;
}

/* mask_text of s (expected scan result); NULL when nothing is detected. */
static struct buf *want_text(const struct fx *f, const char *s)
{
    struct buf *b = buf_get();
    int r = mask_text(f->db, (const uint8_t *)s, strlen(s), b, NULL);
    assert_true(r >= 0);
    if (r == 0) {
        assert_int_equal(buf_avail(b), 0);
        buf_put(b);
        return NULL;
    }
    return b;
}

static int plan_of(const struct fx *f, const struct field *fl, unsigned n, mask_resolve_fn res,
                   void *ctx, struct mask_plan **p)
{
    struct buf *rd = rowdesc(fl, n);
    uint8_t *body = dup_exact(bdata(rd), buf_avail(rd));
    int rc = mask_plan_build(f->db, body, buf_avail(rd), res, ctx, p);
    free(body);
    buf_put(rd);
    return rc;
}

/* Rewrite one DataRow; out is emptied first. */
static int rewrite(struct fx *f, const struct mask_plan *p, const struct val *v, unsigned n,
                   struct mask_counts *counts)
{
    struct buf *dr = datarow(v, n);
    uint8_t *body = dup_exact(bdata(dr), buf_avail(dr));
    f->out->off = f->out->len = 0;
    int rc = mask_row_rewrite(f->db, p, body, buf_avail(dr), f->out, counts);
    free(body);
    buf_put(dr);
    return rc;
}

/* ---- RowDescription parsing and plans ---- */

static void test_plan_good_and_int_only(void **state)
{
    struct fx *f = *state;
    struct mask_plan *p = (struct mask_plan *)1;
    struct field ints[] = {
        {"id", 0, 0, T_INT4, 0},
        {"n", 0, 0, T_INT8, 1},
        {"ok", 0, 0, T_BOOL, 0},
        {"price", 0, 0, T_NUMERIC, 0},
        {"at", 0, 0, T_TSTZ, 0},
        {"u", 0, 0, T_UUID, 0},
        {"email_verified", 0, 0, T_BOOL, 0},
        {"phone_count", 0, 0, T_INT4, 0},
    };
    assert_int_equal(plan_of(f, ints, 8, NULL, NULL, &p), 0);
    assert_null(p); /* nothing to look at: DataRows pass untouched */

    assert_int_equal(plan_of(f, ints, 0, NULL, NULL, &p), 0);
    assert_null(p);

    struct field mixed[] = {{"id", 0, 0, T_INT4, 0}, {"note", 0, 0, T_TEXT, 0}};
    assert_int_equal(plan_of(f, mixed, 2, NULL, NULL, &p), 0);
    assert_non_null(p);
    mask_plan_free(p);
}

static void test_plan_malformed(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {{"email", 16384, 2, T_TEXT, 0}, {"id", 16384, 1, T_INT4, 1}};
    struct buf *rd = rowdesc(fl, 2);
    size_t len = buf_avail(rd);
    struct mask_plan *p;
    /* Every truncation is malformed. */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *body = dup_exact(bdata(rd), cut);
        p = (struct mask_plan *)1;
        assert_int_equal(mask_plan_build(f->db, body, cut, NULL, NULL, &p), -1);
        assert_null(p);
        free(body);
    }
    /* A trailing byte. */
    uint8_t *body = malloc(len + 1);
    memcpy(body, bdata(rd), len);
    body[len] = 0;
    assert_int_equal(mask_plan_build(f->db, body, len + 1, NULL, NULL, &p), -1);
    /* Count larger than the fields present, smaller, negative. */
    body[0] = 0, body[1] = 3;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), -1);
    body[0] = 0, body[1] = 1;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), -1);
    body[0] = 0xff, body[1] = 0xff;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), -1);
    /* A format code that is neither text nor binary. */
    body[0] = 0, body[1] = 2;
    body[len - 1] = 2;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), -1);
    body[len - 1] = 1;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), 0);
    assert_non_null(p);
    mask_plan_free(p);
    free(body);
    buf_put(rd);
}

/* ---- the name classifier ---- */

static void test_classify_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum mask_name_class c;
    } cases[] = {
        {"email", MASK_NAME_EMAIL},
        {"e_mail", MASK_NAME_EMAIL},
        {"mail", MASK_NAME_EMAIL},
        {"userEmail", MASK_NAME_EMAIL},
        {"contact_email", MASK_NAME_EMAIL},
        {"EmailAddress", MASK_NAME_EMAIL},
        {"email_address", MASK_NAME_EMAIL},
        {"ssn", MASK_NAME_SSN},
        {"social_security_number", MASK_NAME_SSN},
        {"phone", MASK_NAME_PHONE},
        {"phone_number", MASK_NAME_PHONE},
        {"mobile", MASK_NAME_PHONE},
        {"mobile_no", MASK_NAME_PHONE},
        {"telephone", MASK_NAME_PHONE},
        {"homePhone", MASK_NAME_PHONE},
        {"dob", MASK_NAME_DOB},
        {"date_of_birth", MASK_NAME_DOB},
        {"birth_date", MASK_NAME_DOB},
        {"birthday", MASK_NAME_DOB},
        {"card", MASK_NAME_CARD},
        {"card_number", MASK_NAME_CARD},
        {"cc_number", MASK_NAME_CARD},
        {"credit_card", MASK_NAME_CARD},
        {"pan", MASK_NAME_CARD},
        {"iban", MASK_NAME_IBAN},
        {"password", MASK_NAME_SECRET},
        {"passwd", MASK_NAME_SECRET},
        {"pwd", MASK_NAME_SECRET},
        {"password_hash", MASK_NAME_SECRET},
        {"token", MASK_NAME_SECRET},
        {"access_token", MASK_NAME_SECRET},
        {"refreshToken", MASK_NAME_SECRET},
        {"api_key", MASK_NAME_SECRET},
        {"apiKey", MASK_NAME_SECRET},
        {"secret_key", MASK_NAME_SECRET},
        {"client_secret", MASK_NAME_SECRET},
        {"email_verification_token", MASK_NAME_SECRET},
        {"cvv", MASK_NAME_SECRET},
        {"address", MASK_NAME_ADDRESS},
        {"street", MASK_NAME_ADDRESS},
        {"billing_address", MASK_NAME_ADDRESS},
        {"address_line_1", MASK_NAME_ADDRESS},
        /* metadata about a value, not the value */
        {"email_verified", MASK_NAME_NONE},
        {"is_email", MASK_NAME_NONE},
        {"email_domain", MASK_NAME_NONE},
        {"email_template_id", MASK_NAME_NONE},
        {"phone_count", MASK_NAME_NONE},
        {"num_phones", MASK_NAME_NONE},
        {"phone_country_code", MASK_NAME_NONE},
        {"token_type", MASK_NAME_NONE},
        {"token_expires_at", MASK_NAME_NONE},
        {"password_changed_at", MASK_NAME_NONE},
        {"password_policy", MASK_NAME_NONE},
        {"card_last4", MASK_NAME_NONE},
        {"card_brand", MASK_NAME_NONE},
        {"api_key_id", MASK_NAME_NONE},
        {"address_id", MASK_NAME_NONE},
        /* words that merely contain a category word */
        {"tokenizer_name", MASK_NAME_NONE},
        {"secretary", MASK_NAME_NONE},
        {"telemetry", MASK_NAME_NONE},
        {"dashboard_card", MASK_NAME_NONE},
        {"scorecard", MASK_NAME_NONE},
        {"mobile_os", MASK_NAME_NONE},
        {"ip_address", MASK_NAME_NONE},
        {"mac_address", MASK_NAME_NONE},
        {"sort_key", MASK_NAME_NONE},
        {"cc", MASK_NAME_NONE},
        {"cell", MASK_NAME_NONE},
        {"note", MASK_NAME_NONE},
        {"id", MASK_NAME_NONE},
        {"", MASK_NAME_NONE},
        {"___", MASK_NAME_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum mask_name_class c = mask_classify_name(cases[i].name);
        if (c != cases[i].c)
            fail_msg("classify \"%s\": got %d, want %d", cases[i].name, c, cases[i].c);
    }
    assert_int_equal(mask_classify_name(NULL), MASK_NAME_NONE);
    /* A very long name does not overflow anything. */
    char longname[1000];
    memset(longname, 'a', sizeof longname - 7);
    memcpy(longname + sizeof longname - 7, "_email", 7);
    (void)mask_classify_name(longname);
    assert_string_equal(mask_name_class_detector(MASK_NAME_CARD), "credit_card");
    assert_null(mask_name_class_detector(MASK_NAME_NONE));
}

/* ---- DataRow rewriting ---- */

static void test_row_by_field_name(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {
        {"id", 0, 0, T_INT4, 0},   {"email", 0, 0, T_TEXT, 0}, {"ssn", 0, 0, T_VARCHAR, 0},
        {"card", 0, 0, T_TEXT, 0}, {"note", 0, 0, T_TEXT, 0},
    };
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 5, NULL, NULL, &p), 0);
    assert_non_null(p);

    const char *email = "0cc175b9c0f1b6a831c399e269772661@example.com";
    const char *note = "note xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    struct val v[] = {V("42"), V(email), V("000000001"), V("4242 4242 4242 0001"), V(note)};
    struct mask_counts counts = {0};
    assert_int_equal(rewrite(f, p, v, 5, &counts), 1);
    struct row r;
    assert_int_equal(parse_row_msg(bdata(f->out), buf_avail(f->out), &r), buf_avail(f->out));
    assert_int_equal(r.n, 5);
    assert_true(col_is(&r, 0, "42", 2));
    assert_true(col_is(&r, 4, note, strlen(note)));

    struct buf *e = want_value(f, det(f, "email"), CFG_FORM_DEFAULT, email, strlen(email));
    assert_true(col_is(&r, 1, bdata(e), buf_avail(e)));
    assert_false(col_is(&r, 1, email, strlen(email)));
    buf_put(e);
    e = want_value(f, det(f, "ssn"), CFG_FORM_DEFAULT, "000000001", 9);
    assert_true(col_is(&r, 2, bdata(e), buf_avail(e)));
    buf_put(e);
    e = want_value(f, det(f, "credit_card"), CFG_FORM_DEFAULT, "4242 4242 4242 0001", 19);
    assert_true(col_is(&r, 3, bdata(e), buf_avail(e)));
    buf_put(e);
    assert_int_equal(counts.n[det(f, "email")], 1);
    assert_int_equal(counts.n[det(f, "ssn")], 1);
    assert_int_equal(counts.n[det(f, "credit_card")], 1);

    /* NULLs stay NULL, empty strings stay empty; a row with nothing to mask is left alone. */
    struct val v2[] = {VNULL, VNULL, V(""), VNULL, V("")};
    assert_int_equal(rewrite(f, p, v2, 5, NULL), 0);
    assert_int_equal(buf_avail(f->out), 0);
    struct val v3[] = {VNULL, V(email), VNULL, V(""), VNULL};
    assert_int_equal(rewrite(f, p, v3, 5, NULL), 1);
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_int_equal(r.len[0], -1);
    assert_int_equal(r.len[2], -1);
    assert_int_equal(r.len[3], 0);
    assert_int_equal(r.len[4], -1);
    assert_true(r.len[1] > 0);

    /* Column count differing from the plan. */
    assert_int_equal(rewrite(f, p, v, 4, NULL), -1);
    assert_int_equal(buf_avail(f->out), 0);
    mask_plan_free(p);
}

static void test_row_scan_by_value(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {
        {"id", 0, 0, T_INT4, 0}, {"comment", 0, 0, T_TEXT, 0}, {"other", 0, 0, T_TEXT, 0}};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 3, NULL, NULL, &p), 0);

    /* Multi-byte UTF-8 around an email inside a sentence. */
    const char *c = "Grüße von Jörg — schreib an joerg.mueller@example.de, danke 😀";
    struct buf *want = want_text(f, c);
    assert_non_null(want);
    struct val v[] = {V("7"), V(c), V("plain ümlaut text")};
    struct mask_counts counts = {0};
    assert_int_equal(rewrite(f, p, v, 3, &counts), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "7", 1));
    assert_true(col_is(&r, 1, bdata(want), buf_avail(want)));
    assert_true(col_is(&r, 2, "plain ümlaut text", strlen("plain ümlaut text")));
    assert_null(memmem(r.val[1], (size_t)r.len[1], "joerg.mueller", 13));
    assert_non_null(memmem(r.val[1], (size_t)r.len[1], "Grüße von Jörg", strlen("Grüße von Jörg")));
    assert_int_equal(counts.n[det(f, "email")], 1);

    /* Changes in the last column only, and in the first and last with one between. */
    struct val v2[] = {V("8"), V("nothing here"), V(c)};
    assert_int_equal(rewrite(f, p, v2, 3, NULL), 1);
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 1, "nothing here", 12));
    assert_true(col_is(&r, 2, bdata(want), buf_avail(want)));
    struct val v3[] = {V("9"), V(c), V(c)};
    assert_int_equal(rewrite(f, p, v3, 3, NULL), 1);
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 1, bdata(want), buf_avail(want)));
    assert_true(col_is(&r, 2, bdata(want), buf_avail(want)));

    /* Nothing detected: 0 and nothing appended. */
    struct val v4[] = {V("10"), V("order 12345 shipped 2024-01-02"), V("v1.2.3")};
    f->out->off = f->out->len = 0;
    assert_int_equal(rewrite(f, p, v4, 3, NULL), 0);
    assert_int_equal(f->out->len, 0);
    buf_put(want);
    mask_plan_free(p);
}

/* bytea made of a sensitive text (SELECT email::bytea, convert_to(card, 'UTF8'), lo_get):
 * hex output is decoded, scanned and re-encoded, same length, still valid hex; escape output
 * is scanned as text; binary as bytes; a _bytea's elements too. */
static void test_row_bytea(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {{"b", 0, 0, 17u, 0},
                         {"e", 0, 0, 17u, 0},
                         {"a", 0, 0, 1001u, 0},
                         {"x", 0, 0, 17u, 0},
                         {"bin", 0, 0, 17u, 1}};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 5, NULL, NULL, &p), 0);
    const char *email = "user1@example.com";
    char hex[64] = "\\x", arr[96];
    for (size_t i = 0; i < strlen(email); i++)
        snprintf(hex + 2 + 2 * i, sizeof hex - 2 - 2 * i, "%02x", (unsigned char)email[i]);
    snprintf(arr, sizeof arr, "{\"\\%s\",\"\\\\x00ff\"}", hex);
    struct val v[] = {V(hex), V(email), V(arr), V("\\x00ff10"), V(email)};
    struct mask_counts counts = {0};
    assert_int_equal(rewrite(f, p, v, 5, &counts), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    /* hex: same length, still \x and hex digits, and the email is gone from the bytes */
    assert_int_equal(r.len[0], (int32_t)strlen(hex));
    assert_memory_equal(r.val[0], "\\x", 2);
    char raw[32] = {0};
    for (int i = 0; 2 + 2 * i + 1 < r.len[0]; i++) {
        unsigned x;
        char two[3] = {(char)r.val[0][2 + 2 * i], (char)r.val[0][3 + 2 * i], 0};
        assert_int_equal(sscanf(two, "%2x", &x), 1);
        raw[i] = (char)x;
    }
    assert_null(strstr(raw, "user1@"));
    assert_non_null(strchr(raw, '*'));                            /* starred in place */
    assert_null(memmem(r.val[1], (size_t)r.len[1], "user1@", 6)); /* escape output */
    assert_null(memmem(r.val[2], (size_t)r.len[2], hex + 2, strlen(hex) - 2)); /* _bytea */
    assert_non_null(memmem(r.val[2], (size_t)r.len[2], "00ff", 4));
    assert_true(col_is(&r, 3, "\\x00ff10", 8));                   /* nothing detected: as sent */
    assert_null(memmem(r.val[4], (size_t)r.len[4], "user1@", 6)); /* binary */
    assert_int_equal(counts.n[det(f, "email")], 4);
    mask_plan_free(p);
}

/* Numbers and dates sensitive by their names (card_number numeric, ssn int4, date_of_birth
 * date): replaced by values of their types (a number by what its last 4 digits make, a date by
 * 1111-11-11); binary ones
 * zeroed; other numbers and dates untouched. */
static void test_row_numbers_by_name(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {{"card_number", 0, 0, T_NUMERIC, 0}, {"ssn", 0, 0, T_INT4, 0},
                         {"date_of_birth", 0, 0, 1082u, 0},   {"amount", 0, 0, T_NUMERIC, 0},
                         {"created", 0, 0, 1082u, 0},         {"phone", 0, 0, T_INT8, 1}};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 6, NULL, NULL, &p), 0);
    struct val v[] = {V("4111111111111111"), V("123456789"),
                      V("1980-04-12"),       V("12.50"),
                      V("2024-01-02"),       V("\x00\x00\x00\x00\xf7\xaa\x35\x42")};
    v[5].len = 8;
    assert_int_equal(rewrite(f, p, v, 6, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "1111", 4));
    assert_true(col_is(&r, 1, "6789", 4));
    assert_true(col_is(&r, 2, "1111-11-11", 10));
    assert_true(col_is(&r, 3, "12.50", 5));
    assert_true(col_is(&r, 4, "2024-01-02", 10));
    assert_true(col_is(&r, 5, "\0\0\0\0\0\0\0\0", 8));
    mask_plan_free(p);
}

/* Rows rewritten with the rows after them in memory (mask_row_rewrite_ahead: their values
 * scanned in one batch) give, value for value, what mask_text() gives for that value alone,
 * also when rows are skipped, another result's rows come between, or values do not fit one
 * batch. */
static const char *const ahead_pool[] = {
    "alice@example.com",
    "alice@",
    "example.com",
    "4111 1111 1111 1111",
    "4111 1111",
    "1111 1111",
    "078-05-1120",
    "call +1 415 555 2671 now",
    "(415) 555-2671",
    "DE89370400440532013000",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc",
    "xyz\n-----END RSA PRIVATE KEY----- after",
    "password=hunter2xyz",
    "token",
    "=s3cr3tvalue",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "192.168.1.10",
    "AKIAIOSFODNN7EXAMPLE",
    "customer asked about order delivery refund pending review",
    "order 12345 shipped 2024-01-02",
    "",
};
#define AHEAD_POOL (sizeof ahead_pool / sizeof ahead_pool[0])

/* A stream of n whole DataRow messages of 4 columns (int4, 3 text), values drawn by seed.
 * shadow: every value replaced by as many 'x' (same lengths, nothing to detect). */
static void put_value(struct buf *b, const char *s, size_t n, bool shadow)
{
    buf_append_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        buf_append_u8(b, shadow ? 'x' : (uint8_t)s[i]);
}

static struct buf *ahead_stream(unsigned n, uint32_t seed, size_t *offs, bool shadow)
{
    static char big[3000];
    memset(big, 'x', sizeof big);
    memcpy(big + 1000, " bob@example.org ", 17);
    struct buf *b = buf_get();
    for (unsigned i = 0; i < n; i++) {
        offs[i] = buf_avail(b);
        size_t m = pg_msg_begin(b, 'D');
        put_u16(b, 4);
        buf_append_u32(b, 1);
        buf_append_u8(b, '7');
        for (unsigned c = 0; c < 3; c++) {
            seed = seed * 1103515245u + 12345u;
            unsigned k = (seed >> 16) % (AHEAD_POOL + 3);
            if (k == AHEAD_POOL) { /* NULL */
                buf_append_u32(b, (uint32_t)-1);
            } else if (k == AHEAD_POOL + 1) { /* a NUL inside */
                put_value(b, "a\0bob@example.com", 18, shadow);
            } else if (k == AHEAD_POOL + 2) { /* large: batches fill up */
                put_value(b, big, sizeof big, shadow);
            } else {
                put_value(b, ahead_pool[k], strlen(ahead_pool[k]), shadow);
            }
        }
        pg_msg_end(b, m);
    }
    offs[n] = buf_avail(b);
    return b;
}

/* Rewrite row i of stream st (with what follows it in memory) and check every column. */
static void ahead_check_row(struct fx *f, const struct mask_plan *p, const struct buf *st,
                            const size_t *offs, unsigned i, bool ahead)
{
    const uint8_t *m = bdata(st) + offs[i];
    size_t len = offs[i + 1] - offs[i] - 5, after = buf_avail(st) - offs[i + 1];
    f->out->off = f->out->len = 0;
    int rc = ahead ? mask_row_rewrite_ahead(f->db, p, m + 5, len, after, f->out, NULL)
                   : mask_row_rewrite(f->db, p, m + 5, len, f->out, NULL);
    assert_true(rc == 0 || rc == 1);
    struct row in, out;
    parse_row_msg(m, offs[i + 1] - offs[i], &in);
    if (rc == 0) {
        assert_int_equal(f->out->len, 0);
        out = in;
    } else {
        parse_row_msg(bdata(f->out), buf_avail(f->out), &out);
    }
    assert_int_equal(out.n, 4);
    for (unsigned c = 0; c < 4; c++) {
        if (in.len[c] < 0) {
            assert_int_equal(out.len[c], -1);
            continue;
        }
        if (in.len[c] == 0 || c == 0) {
            assert_true(col_is(&out, c, in.val[c], (size_t)in.len[c]));
            continue;
        }
        struct buf *want = buf_get();
        int r = mask_text(f->db, in.val[c], (size_t)in.len[c], want, NULL);
        assert_true(r >= 0);
        if (r == 0)
            assert_true(col_is(&out, c, in.val[c], (size_t)in.len[c]));
        else
            assert_true(col_is(&out, c, bdata(want), buf_avail(want)));
        buf_put(want);
    }
}

static void test_row_ahead_batch(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {{"id", 0, 0, T_INT4, 0},
                         {"c1", 0, 0, T_TEXT, 0},
                         {"c2", 0, 0, T_TEXT, 0},
                         {"c3", 0, 0, T_VARCHAR, 0}};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 4, NULL, NULL, &p), 0);
    enum { N = 400 };
    static size_t oa[N + 1], ob[N + 1], os[N + 1];
    struct buf *a = ahead_stream(N, 1, oa, false), *b = ahead_stream(N, 2, ob, false);
    struct buf *sh = ahead_stream(N, 1, os, true); /* a's lengths, other bytes */
    unsigned j = 0;
    for (unsigned i = 0; i < N; i++) {
        if (i % 53 == 5) continue;                                /* a row the relay dropped */
        if (i % 7 == 3) ahead_check_row(f, p, sh, os, i, true);   /* same lengths as a's next */
        if (i % 37 == 3) ahead_check_row(f, p, b, ob, j++, true); /* another session's row */
        if (i % 41 == 7) ahead_check_row(f, p, b, ob, j++, false);
        ahead_check_row(f, p, a, oa, i, true);
        if (i % 97 == 0) ahead_check_row(f, NULL, a, oa, i, true); /* no plan: every value */
    }
    /* The same rows again, nothing skipped, and with no plan. */
    for (unsigned i = 0; i < N; i++)
        ahead_check_row(f, p, a, oa, i, true);
    for (unsigned i = 0; i < N; i++)
        ahead_check_row(f, NULL, b, ob, i, true);
    buf_put(a);
    buf_put(b);
    buf_put(sh);
    mask_plan_free(p);
}

/* A row rewritten into a buffer with bytes already pending near its end (compaction). */
static void test_row_output_compaction(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {{"a", 0, 0, T_TEXT, 0}, {"b", 0, 0, T_TEXT, 0}};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 2, NULL, NULL, &p), 0);
    const char *c = "mail me: someone.long.name@example.com please";
    struct buf *want = want_text(f, c);
    struct val v[] = {V("x"), V(c)};
    struct buf *dr = datarow(v, 2);
    for (size_t room = 0; room < 80; room += 7) {
        struct buf *out = buf_get();
        out->off = out->cap - room - 3;
        out->len = out->cap - room;
        memcpy(out->data + out->off, "abc", 3);
        assert_int_equal(mask_row_rewrite(f->db, p, bdata(dr), buf_avail(dr), out, NULL), 1);
        assert_memory_equal(out->data + out->off, "abc", 3);
        struct row r;
        parse_row_msg(out->data + out->off + 3, buf_avail(out) - 3, &r);
        assert_true(col_is(&r, 0, "x", 1));
        assert_true(col_is(&r, 1, bdata(want), buf_avail(want)));
        buf_put(out);
    }
    buf_put(dr);
    buf_put(want);
    mask_plan_free(p);
}

static void test_row_malformed(void **state)
{
    struct fx *f = *state;
    struct val v[] = {V("a@example.com"), VNULL, V("hello")};
    struct buf *dr = datarow(v, 3);
    size_t len = buf_avail(dr);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *body = dup_exact(bdata(dr), cut);
        f->out->off = f->out->len = 0;
        assert_int_equal(mask_row_rewrite(f->db, NULL, body, cut, f->out, NULL), -1);
        assert_int_equal(f->out->len, 0);
        free(body);
    }
    uint8_t *body = malloc(len + 1);
    memcpy(body, bdata(dr), len);
    body[len] = 'x'; /* trailing byte */
    assert_int_equal(mask_row_rewrite(f->db, NULL, body, len + 1, f->out, NULL), -1);
    /* A length of -2, and a length past the end. */
    memcpy(body, bdata(dr), len);
    body[2] = 0xff, body[3] = 0xff, body[4] = 0xff, body[5] = 0xfe;
    assert_int_equal(mask_row_rewrite(f->db, NULL, body, len, f->out, NULL), -1);
    body[2] = 0x7f;
    assert_int_equal(mask_row_rewrite(f->db, NULL, body, len, f->out, NULL), -1);
    body[0] = 0xff; /* negative count */
    assert_int_equal(mask_row_rewrite(f->db, NULL, body, len, f->out, NULL), -1);
    assert_int_equal(f->out->len, 0);
    free(body);
    buf_put(dr);
}

/* No RowDescription: every non-NULL value is scanned as text. */
static void test_row_no_plan(void **state)
{
    struct fx *f = *state;
    const char *c = "reach me at bob.smith@example.org";
    struct buf *want = want_text(f, c);
    struct val v[] = {V("1"), VNULL, V(c), V("")};
    assert_int_equal(rewrite(f, NULL, v, 4, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_int_equal(r.n, 4);
    assert_true(col_is(&r, 0, "1", 1));
    assert_int_equal(r.len[1], -1);
    assert_true(col_is(&r, 2, bdata(want), buf_avail(want)));
    assert_int_equal(r.len[3], 0);
    struct val v2[] = {V("1"), VNULL};
    assert_int_equal(rewrite(f, NULL, v2, 2, NULL), 0);
    assert_int_equal(rewrite(f, NULL, v2, 0, NULL), 0);
    buf_put(want);
}

static void test_row_binary(void **state)
{
    struct fx *f = *state;
    struct field fl[] = {
        {"id", 0, 0, T_INT4, 1},   {"email", 0, 0, T_TEXT, 1},   {"comment", 0, 0, T_VARCHAR, 1},
        {"doc", 0, 0, T_JSONB, 1}, {"tags", 0, 0, T_TEXTARR, 1},
    };
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 5, NULL, NULL, &p), 0);
    const char *email = "carol@example.net";
    const char *c = "contact: dave.jones@example.com";
    const char *js = "\x01{\"to\": \"erin@example.com\"}";
    /* A binary text[] holding an email: left alone (binary arrays are not parsed). */
    static const uint8_t arr[] = {0,  0, 0,   1,   0,   0,   0,   0,   0,   0,   0,
                                  25, 0, 0,   0,   1,   0,   0,   0,   1,   0,   0,
                                  0,  9, 'a', '@', 'b', '.', 'c', 'o', 'm', '.', 'x'};
    struct val v[] = {{"\0\0\0\x2a", 4}, V(email), V(c), V(js), {(const char *)arr, sizeof arr}};
    assert_int_equal(rewrite(f, p, v, 5, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "\0\0\0\x2a", 4));
    struct buf *e = want_value(f, det(f, "email"), CFG_FORM_DEFAULT, email, strlen(email));
    assert_true(col_is(&r, 1, bdata(e), buf_avail(e)));
    buf_put(e);
    e = want_text(f, c);
    assert_true(col_is(&r, 2, bdata(e), buf_avail(e)));
    buf_put(e);
    e = want_text(f, js + 1);
    assert_true(r.len[3] == (int32_t)buf_avail(e) + 1);
    assert_int_equal(r.val[3][0], 1);
    assert_memory_equal(r.val[3] + 1, bdata(e), buf_avail(e));
    buf_put(e);
    assert_true(col_is(&r, 4, arr, sizeof arr));
    mask_plan_free(p);
}

/* ---- resolver, exemptions, column rules ---- */

struct resolver_ctx {
    unsigned calls;
};

static bool resolve_cb(void *ctx, uint32_t table_oid, int16_t attnum, struct mask_colref *out)
{
    struct resolver_ctx *rc = ctx;
    rc->calls++;
    if (table_oid == 5000 && attnum == 2) {
        *out = (struct mask_colref){"public", "customers", "email"};
        return true;
    }
    if (table_oid == 5000 && attnum == 3) {
        *out = (struct mask_colref){"public", "customers", "nickname"};
        return true;
    }
    if (table_oid == 6000) {
        *out = (struct mask_colref){"public", "audit_log", "payload"};
        return true;
    }
    return false;
}

static void test_resolver(void **state)
{
    struct fx *f = *state;
    struct resolver_ctx rc = {0};
    /* "c1" says nothing; the catalog says public.customers.email. */
    struct field fl[] = {{"c1", 5000, 2, T_TEXT, 0},
                         {"c2", 5000, 9, T_TEXT, 0}, /* unknown to the resolver: scanned */
                         {"c3", 0, 0, T_TEXT, 0}};   /* no table: resolver not asked */
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 3, resolve_cb, &rc, &p), 0);
    assert_int_equal(rc.calls, 2);
    const char *email = "frank@example.com";
    struct val v[] = {V(email), V("hello"), V("hi")};
    assert_int_equal(rewrite(f, p, v, 3, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    struct buf *e = want_value(f, det(f, "email"), CFG_FORM_DEFAULT, email, strlen(email));
    assert_true(col_is(&r, 0, bdata(e), buf_avail(e)));
    buf_put(e);
    assert_true(col_is(&r, 1, "hello", 5));
    mask_plan_free(p);

    /* Without the resolver the same result has nothing to mask but by value. */
    assert_int_equal(plan_of(f, fl, 3, NULL, NULL, &p), 0);
    struct val v2[] = {V("not an email"), V("hello"), V("hi")};
    assert_int_equal(rewrite(f, p, v2, 3, NULL), 0);
    mask_plan_free(p);
}

static void test_exempt_and_rules(void **state)
{
    struct fx *f = *state;
    struct resolver_ctx rc = {0};
    struct field fl[] = {
        {"payload", 6000, 1, T_TEXT, 0},   /* exempt through public.audit_log.* */
        {"nickname", 5000, 3, T_TEXT, 0},  /* rule *.customers.nickname, form full */
        {"salary", 0, 0, T_INT4, 0},       /* rule: masks an int column */
        {"salary", 0, 0, T_INT4, 1},       /* ... in binary: zero bytes */
        {"notes_exempt", 0, 0, T_TEXT, 0}, /* both a rule and exempt: the rule wins */
        {"plain", 0, 0, T_TEXT, 0},
    };
    struct mask_plan *p;
    assert_int_equal(plan_of(f, fl, 6, resolve_cb, &rc, &p), 0);
    assert_non_null(p);
    const char *pay = "sent to grace@example.com";
    struct val v[] = {V(pay), V("Gracie"), V("120000"), {"\0\x01\xd4\xc0", 4},
                      V("x"), V("nothing")};
    struct mask_counts counts = {0};
    assert_int_equal(rewrite(f, p, v, 6, &counts), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, pay, strlen(pay)));
    int col = mask_db_detector_index(f->db, "column");
    if (col < 0) col = 0;
    struct buf *e = want_value(f, col, CFG_FORM_FULL, "Gracie", 6);
    assert_true(col_is(&r, 1, bdata(e), buf_avail(e)));
    buf_put(e);
    e = want_value(f, col, CFG_FORM_DEFAULT, "120000", 6);
    assert_true(col_is(&r, 2, bdata(e), buf_avail(e)));
    buf_put(e);
    assert_true(col_is(&r, 3, "\0\0\0\0", 4));
    e = want_value(f, det(f, "email"), CFG_FORM_DEFAULT, "x", 1);
    assert_true(col_is(&r, 4, bdata(e), buf_avail(e)));
    buf_put(e);
    assert_true(col_is(&r, 5, "nothing", 7));
    assert_int_equal(counts.n[col], 3);
    assert_int_equal(counts.n[det(f, "email")], 1);
    mask_plan_free(p);

    /* An exempt column alone: nothing to look at. */
    struct field only[] = {{"payload", 6000, 1, T_TEXT, 0}, {"id", 0, 0, T_INT8, 0}};
    assert_int_equal(plan_of(f, only, 2, resolve_cb, &rc, &p), 0);
    assert_null(p);
}

/* A built-in left out of masking.detectors masks no column; dob and address always do. */
static void test_detectors_in_use(void **state)
{
    (void)state;
    static char *only[] = {"email"};
    struct cfg_masking cfg = {.enabled = true, .detectors = only, .n_detectors = 1};
    char err[256] = "";
    struct mask_db *db = mask_db_build(&cfg, err, sizeof err);
    assert_non_null(db);
    struct fx f = {.db = db, .out = buf_get()};
    struct field fl[] = {{"phone", 0, 0, T_TEXT, 0},
                         {"email", 0, 0, T_TEXT, 0},
                         {"date_of_birth", 0, 0, T_TEXT, 0},
                         {"home_address", 0, 0, T_TEXT, 0}};
    struct mask_plan *p;
    assert_int_equal(plan_of(&f, fl, 4, NULL, NULL, &p), 0);
    struct val v[] = {V("+1 415 555 2671"), V("liz@example.com"), V("1990-04-01"),
                      V("1 Main St, Springfield")};
    struct mask_counts counts = {0};
    assert_int_equal(rewrite(&f, p, v, 4, &counts), 1);
    struct row r;
    parse_row_msg(bdata(f.out), buf_avail(f.out), &r);
    assert_true(col_is(&r, 0, "+1 415 555 2671", 15)); /* phone is not in use */
    assert_false(col_is(&r, 1, "liz@example.com", 15));
    struct buf *e = want_value(&f, det(&f, "dob"), CFG_FORM_DEFAULT, "1990-04-01", 10);
    assert_true(col_is(&r, 2, bdata(e), buf_avail(e)));
    buf_put(e);
    e = want_value(&f, det(&f, "address"), CFG_FORM_DEFAULT, "1 Main St, Springfield", 22);
    assert_true(col_is(&r, 3, bdata(e), buf_avail(e)));
    buf_put(e);
    assert_int_equal(counts.n[det(&f, "dob")], 1);
    assert_int_equal(counts.n[det(&f, "address")], 1);
    mask_plan_free(p);
    buf_put(f.out);
    mask_db_free(db);
}

/* ---- numbers and dates by their catalog names; the plan cache ---- */

/* A table "cards" (OID 7000): card_number numeric, id int4, date_of_birth date, amount
 * numeric. `renamed` makes the catalog say column 1 is "amount" (as after DDL). Table 7100 is
 * unknown (a catalog miss). */
struct cards_ctx {
    unsigned calls;
    bool renamed;
};

static bool resolve_cards(void *ctx, uint32_t table_oid, int16_t attnum, struct mask_colref *out)
{
    struct cards_ctx *cc = ctx;
    cc->calls++;
    static const char *const cols[] = {NULL, "card_number", "id", "date_of_birth", "amount"};
    if (table_oid != 7000 || attnum < 1 || attnum > 4) return false;
    const char *col = attnum == 1 && cc->renamed ? "amount" : cols[attnum];
    *out = (struct mask_colref){"public", "cards", col};
    return true;
}

/* A db as the default config makes it: no column rules, so a column of a type that cannot
 * hold text is judged without a rule's help. */
static struct fx *plain_fx(void)
{
    struct fx *f = calloc(1, sizeof *f);
    f->cfg.enabled = true;
    char err[256] = "";
    f->db = mask_db_build(&f->cfg, err, sizeof err);
    assert_non_null(f->db);
    f->out = buf_get();
    return f;
}

static void plain_fx_free(struct fx *f)
{
    buf_put(f->out);
    mask_db_free(f->db);
    free(f);
}

/* SELECT card_number AS n, id AS i, date_of_birth AS d, card_number + 0 AS x FROM cards: the
 * catalog's names of n and d mask them whatever their aliases; i stays; x is computed (no
 * table OID): the catalog is not asked and its field name says nothing. */
static const struct field cards_aliased[] = {{"n", 7000, 1, T_NUMERIC, 0},
                                             {"i", 7000, 2, T_INT4, 0},
                                             {"d", 7000, 3, 1082u, 0},
                                             {"x", 0, 0, T_NUMERIC, 0}};
static const struct val cards_row[] = {V("4111111111111111"), V("42"), V("1980-04-12"),
                                       V("4111111111111111")};

static void check_cards_masked(struct fx *f, const struct mask_plan *p)
{
    assert_int_equal(rewrite(f, p, cards_row, 4, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "1111", 4));
    assert_true(col_is(&r, 1, "42", 2));
    assert_true(col_is(&r, 2, "1111-11-11", 10));
    assert_true(col_is(&r, 3, "4111111111111111", 16));
}

static void test_numbers_by_catalog_name(void **state)
{
    (void)state;
    struct fx *f = plain_fx();
    struct cards_ctx cc = {0};
    struct mask_plan *p;
    assert_int_equal(plan_of(f, cards_aliased, 4, resolve_cards, &cc, &p), 0);
    assert_int_equal(cc.calls, 3); /* not for the computed column */
    assert_non_null(p);
    check_cards_masked(f, p);
    mask_plan_free(p);

    /* Binary: zeros of the type. */
    struct field bin[] = {{"n", 7000, 1, T_INT8, 1}, {"i", 7000, 2, T_INT4, 1}};
    assert_int_equal(plan_of(f, bin, 2, resolve_cards, &cc, &p), 0);
    struct val bv[] = {{"\x00\x0e\x96\x0c\x2a\x8f\x6b\xc7", 8}, {"\x00\x00\x00\x2a", 4}};
    assert_int_equal(rewrite(f, p, bv, 2, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "\0\0\0\0\0\0\0\0", 8));
    assert_true(col_is(&r, 1, "\0\0\0\x2a", 4));
    mask_plan_free(p);

    /* An innocuous catalog name (pgbench's abalance, here id and amount): nothing to look at. */
    struct field plain[] = {{"i", 7000, 2, T_INT4, 0}, {"amount", 7000, 4, T_NUMERIC, 0}};
    assert_int_equal(plan_of(f, plain, 2, resolve_cards, &cc, &p), 0);
    assert_null(p);

    /* Without a resolver (or when it does not know the column) only field names count. */
    assert_int_equal(plan_of(f, cards_aliased, 4, NULL, NULL, &p), 0);
    assert_null(p);
    struct field unknown[] = {{"n", 7100, 1, T_NUMERIC, 0}, {"ssn", 7100, 2, T_INT4, 0}};
    assert_int_equal(plan_of(f, unknown, 2, resolve_cards, &cc, &p), 0);
    assert_non_null(p); /* ssn by its field name */
    struct val uv[] = {V("4111111111111111"), V("123456789")};
    assert_int_equal(rewrite(f, p, uv, 2, NULL), 1);
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "4111111111111111", 16));
    assert_true(col_is(&r, 1, "6789", 4));
    mask_plan_free(p);
    plain_fx_free(f);
    mask_thread_release();
}

/* mask_plan_build_cached of a RowDescription body (copied to an exact heap block). */
static int cached_of(const struct mask_db *db, const struct field *fl, unsigned n,
                     struct cards_ctx *cc, uint64_t scope, uint64_t epoch, struct mask_plan **p)
{
    struct buf *rd = rowdesc(fl, n);
    uint8_t *body = dup_exact(bdata(rd), buf_avail(rd));
    int rc = mask_plan_build_cached(db, body, buf_avail(rd), resolve_cards, cc, scope, epoch, p);
    free(body);
    buf_put(rd);
    return rc;
}

static void test_plan_cache(void **state)
{
    (void)state;
    struct fx *f = plain_fx();
    struct cards_ctx cc = {0};
    struct mask_plan *p1, *p2;

    /* A hit does not ask the resolver and gives the same decisions, in a plan of its own. */
    assert_int_equal(cached_of(f->db, cards_aliased, 4, &cc, 1, 10, &p1), 0);
    assert_int_equal(cc.calls, 3);
    assert_int_equal(cached_of(f->db, cards_aliased, 4, &cc, 1, 10, &p2), 0);
    assert_int_equal(cc.calls, 3);
    assert_non_null(p2);
    assert_ptr_not_equal(p1, p2);
    mask_plan_free(p1);
    check_cards_masked(f, p2);
    mask_plan_free(p2);

    /* "Nothing to look at" is kept too (pgbench -S: one int column of a table). */
    struct field abal[] = {{"abalance", 7000, 4, T_INT4, 0}};
    p1 = (struct mask_plan *)1;
    assert_int_equal(cached_of(f->db, abal, 1, &cc, 1, 10, &p1), 0);
    assert_null(p1);
    unsigned calls = cc.calls;
    p1 = (struct mask_plan *)1;
    assert_int_equal(cached_of(f->db, abal, 1, &cc, 1, 10, &p1), 0);
    assert_null(p1);
    assert_int_equal(cc.calls, calls);

    /* A new catalog generation rebuilds, with what the catalog says now; the old
     * generation's plan is no longer asked for by the relay. */
    cc.renamed = true;
    calls = cc.calls;
    assert_int_equal(cached_of(f->db, cards_aliased, 4, &cc, 1, 11, &p1), 0);
    assert_int_equal(cc.calls, calls + 3);
    assert_int_equal(rewrite(f, p1, cards_row, 4, NULL), 1);
    struct row r;
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_true(col_is(&r, 0, "4111111111111111", 16)); /* now "amount" */
    assert_true(col_is(&r, 2, "1111-11-11", 10));
    mask_plan_free(p1);
    cc.renamed = false;

    /* Another scope (target) rebuilds. */
    calls = cc.calls;
    assert_int_equal(cached_of(f->db, cards_aliased, 4, &cc, 2, 10, &p1), 0);
    assert_int_equal(cc.calls, calls + 3);
    mask_plan_free(p1);

    /* Another db (a reloaded config; here one with a rule naming the id column) rebuilds. */
    struct cfg_mask_column rule = {.match = "cards.id", .form = CFG_FORM_DEFAULT};
    struct cfg_masking cfg2 = {.enabled = true, .columns = &rule, .n_columns = 1};
    char err[256] = "";
    struct mask_db *db2 = mask_db_build(&cfg2, err, sizeof err);
    assert_non_null(db2);
    calls = cc.calls;
    assert_int_equal(cached_of(db2, cards_aliased, 4, &cc, 1, 10, &p1), 0);
    assert_int_equal(cc.calls, calls + 3);
    struct buf *dr = datarow(cards_row, 4);
    f->out->off = f->out->len = 0;
    assert_int_equal(mask_row_rewrite(db2, p1, bdata(dr), buf_avail(dr), f->out, NULL), 1);
    buf_put(dr);
    parse_row_msg(bdata(f->out), buf_avail(f->out), &r);
    assert_false(col_is(&r, 1, "42", 2)); /* the rule masks id */
    mask_plan_free(p1);
    mask_db_free(db2);

    /* A plan built while the resolver did not know a column is not kept. */
    struct field miss[] = {{"n", 7100, 1, T_NUMERIC, 0}};
    calls = cc.calls;
    assert_int_equal(cached_of(f->db, miss, 1, &cc, 1, 10, &p1), 0);
    assert_int_equal(cached_of(f->db, miss, 1, &cc, 1, 10, &p1), 0);
    assert_int_equal(cc.calls, calls + 2);
    assert_null(p1);

    /* A malformed message is never answered from the cache. */
    uint8_t bad[] = {0, 1, 'n', 0};
    assert_int_equal(mask_plan_build_cached(f->db, bad, sizeof bad, resolve_cards, &cc, 1, 10, &p1),
                     -1);
    assert_int_equal(mask_plan_build_cached(f->db, bad, sizeof bad, resolve_cards, &cc, 1, 10, &p1),
                     -1);

    /* Bounded: after MASK_PLAN_CACHE_SLOTS other RowDescriptions, the first is built again;
     * the most recent one is still there. */
    char names[MASK_PLAN_CACHE_SLOTS][16];
    for (unsigned i = 0; i < MASK_PLAN_CACHE_SLOTS; i++) {
        snprintf(names[i], sizeof names[i], "c%u", i);
        struct field one[] = {{names[i], 7000, 1, T_NUMERIC, 0}};
        assert_int_equal(cached_of(f->db, one, 1, &cc, 1, 10, &p1), 0);
        mask_plan_free(p1);
    }
    calls = cc.calls;
    struct field last[] = {{names[MASK_PLAN_CACHE_SLOTS - 1], 7000, 1, T_NUMERIC, 0}};
    assert_int_equal(cached_of(f->db, last, 1, &cc, 1, 10, &p1), 0);
    mask_plan_free(p1);
    assert_int_equal(cc.calls, calls);
    assert_int_equal(cached_of(f->db, cards_aliased, 4, &cc, 1, 10, &p1), 0);
    assert_int_equal(cc.calls, calls + 3);
    mask_plan_free(p1);

    /* A RowDescription larger than MASK_PLAN_CACHE_BODY is built every time. */
    enum { WIDE = MASK_PLAN_CACHE_BODY / 19 + 1 };
    struct field *wide = calloc(WIDE, sizeof *wide);
    for (unsigned i = 0; i < WIDE; i++)
        wide[i] = (struct field){"n", 7000, 1, T_NUMERIC, 0};
    calls = cc.calls;
    assert_int_equal(cached_of(f->db, wide, WIDE, &cc, 1, 10, &p1), 0);
    mask_plan_free(p1);
    assert_int_equal(cached_of(f->db, wide, WIDE, &cc, 1, 10, &p1), 0);
    mask_plan_free(p1);
    assert_int_equal(cc.calls, calls + 2 * WIDE);
    free(wide);

    plain_fx_free(f);
    mask_thread_release(); /* frees the cache */
}

/* ---- CopyData ---- */

static void test_copy(void **state)
{
    struct fx *f = *state;
    const char *lines[] = {
        "1\thenry@example.com\t\\N\tplain\n",
        "2,\"ivy@example.com\",\"a, b\",\n",
        "3\tno pii here\t2024-01-01\n",
    };
    for (int i = 0; i < 3; i++) {
        struct buf *want = want_text(f, lines[i]);
        uint8_t *body = dup_exact((const uint8_t *)lines[i], strlen(lines[i]));
        f->out->off = f->out->len = 0;
        int rc = mask_copy_rewrite(f->db, body, strlen(lines[i]), f->out, NULL);
        free(body);
        if (!want) {
            assert_int_equal(rc, 0);
            assert_int_equal(f->out->len, 0);
            continue;
        }
        assert_int_equal(rc, 1);
        const uint8_t *m = bdata(f->out);
        assert_int_equal(m[0], 'd');
        assert_int_equal(pg_get_u32(m + 1), buf_avail(want) + 4);
        assert_int_equal(buf_avail(f->out), buf_avail(want) + 5);
        assert_memory_equal(m + 5, bdata(want), buf_avail(want));
        /* The field separators survive. */
        assert_int_equal(memchr(m + 5, i == 1 ? ',' : '\t', buf_avail(want)) != NULL, 1);
        buf_put(want);
    }
    assert_int_equal(mask_copy_rewrite(f->db, (const uint8_t *)"", 0, f->out, NULL), 0);
}

/* COPY lines by column (mask_copy_rewrite_plan): columns sensitive by name are replaced
 * whole, in text and CSV (quotes, escaped quotes, delimiters inside quotes), NULL markers stay,
 * others are scanned by value (an exempt name too: the names are the client's); the header
 * line and a line that does not split into the plan's columns are left to the caller (-1). */
static void copy_case(struct fx *f, struct mask_copy_plan *p, const char *line, int want_rc,
                      const char *want)
{
    uint8_t *body = dup_exact((const uint8_t *)line, strlen(line));
    f->out->off = f->out->len = 0;
    int rc = mask_copy_rewrite_plan(f->db, p, body, strlen(line), f->out, NULL);
    free(body);
    if (rc != want_rc) fail_msg("%s: rc %d, want %d", line, rc, want_rc);
    if (rc != 1) {
        assert_int_equal(f->out->len, 0);
        return;
    }
    const uint8_t *m = bdata(f->out);
    assert_int_equal(m[0], 'd');
    assert_int_equal(pg_get_u32(m + 1), strlen(want) + 4);
    if (buf_avail(f->out) != strlen(want) + 5 || memcmp(m + 5, want, strlen(want)) != 0)
        fail_msg("%s: got %.*s, want %s", line, (int)buf_avail(f->out) - 5, m + 5, want);
}

static void test_copy_by_name(void **state)
{
    struct fx *f = *state;
    const char *cols[] = {"id", "api_token", "note", NULL};
    const char *srcs[] = {"id", "api_token", "note", NULL};
    struct mask_copy_layout text = {.delimiter = '\t', .null_str = "\\N"};
    struct mask_copy_plan *p = mask_copy_plan_build(f->db, "public.t", cols, srcs, 4, &text);
    assert_non_null(p);
    assert_int_equal(mask_copy_plan_columns(p), 4);
    copy_case(f, p, "1\tplain-token\tnothing\tx\n", 1, "1\t[REDACTED:secret]\tnothing\tx\n");
    copy_case(f, p, "2\t\\N\tmail henry@example.com\t\\N\n", 1,
              "2\t\\N\tmail h***@example.com\t\\N\n");
    copy_case(f, p, "3\ttab\\there\tno\t\n", 1, "3\t[REDACTED:secret]\tno\t\n");
    copy_case(f, p, "4\t\tno\tx\n", 0, NULL);        /* empty string: nothing to hide */
    copy_case(f, p, "5\ttok\tno\n", -1, NULL);       /* three fields */
    copy_case(f, p, "6\ttok\tno\tx\ty\n", -1, NULL); /* five */
    mask_copy_plan_free(p);

    /* CSV with a header, a quoted token holding the delimiter and a doubled quote; the
     * column is known by its source (an alias that says nothing) */
    const char *cols2[] = {"a", "b"};
    const char *srcs2[] = {"ssn", NULL};
    struct mask_copy_layout csv = {
        .csv = true, .header = true, .delimiter = ',', .quote = '"', .escape = '"', .null_str = ""};
    p = mask_copy_plan_build(f->db, NULL, cols2, srcs2, 2, &csv);
    assert_non_null(p);
    copy_case(f, p, "a,b\n", -1, NULL); /* the header: left to the scan by value */
    copy_case(f, p, "\"078,05\"\"1120\",\"x, y\"\n", 1, "***-**-1120,\"x, y\"\n");
    copy_case(f, p, ",plain\n", 0, NULL); /* NULL ssn */
    copy_case(f, p, "\"unclosed,plain\n", -1, NULL);
    mask_copy_plan_free(p);

    /* a custom NULL string may be a real value: masked by name like one */
    struct mask_copy_layout custom = {.delimiter = '\t', .null_str = "x"};
    p = mask_copy_plan_build(f->db, "public.t", cols, srcs, 4, &custom);
    copy_case(f, p, "7\tx\tx\tx\n", 1, "7\t[REDACTED:secret]\tx\tx\n");
    mask_copy_plan_free(p);

    /* no column sensitive by name or rule: no plan (by value only); an exempt name does not
     * make one */
    const char *plain[] = {"id", "note"};
    assert_null(mask_copy_plan_build(f->db, "t", plain, plain, 2, &text));
    const char *ex[] = {"id", "payload"};
    assert_null(mask_copy_plan_build(f->db, "public.audit_log", ex, ex, 2, &text));
}

/* ---- ErrorResponse / NoticeResponse ---- */

static struct buf *notice_body(const char *const *kv)
{
    struct buf *b = buf_get();
    for (; *kv; kv += 2) {
        buf_append_u8(b, (uint8_t)kv[0][0]);
        buf_append_str(b, kv[1]);
    }
    buf_append_u8(b, 0);
    return b;
}

/* A column named after a sensitive value: the name is masked in the RowDescription, the rest
 * of each field kept; innocuous names leave the message alone. */
static void test_rowdesc_names(void **state)
{
    struct fx *f = *state;
    const struct field named[] = {{"id", 0, 0, T_INT4, 0},
                                  {"jane.doe@example.com", 0, 0, T_INT4, 0}};
    struct buf *rd = rowdesc(named, 2);
    uint8_t *body = dup_exact(bdata(rd), buf_avail(rd));
    size_t len = buf_avail(rd);
    struct mask_plan *p = NULL;
    assert_int_equal(mask_plan_build(f->db, body, len, NULL, NULL, &p), 0);
    assert_non_null(p); /* kept for its names, though no value needs looking at */
    f->out->off = f->out->len = 0;
    assert_int_equal(mask_rowdesc_rewrite(f->db, p, body, len, f->out), 1);
    const uint8_t *m = bdata(f->out);
    assert_int_equal(m[0], 'T');
    assert_int_equal(pg_get_u32(m + 1), buf_avail(f->out) - 1);
    assert_null(memmem(m, buf_avail(f->out), "jane.doe@example.com", 20));
    struct buf *masked = want_text(f, "jane.doe@example.com");
    assert_non_null(masked);
    /* count, "id" and its 18 bytes as they were, the masked name, the last 18 bytes */
    size_t first = 2 + 3 + 18;
    assert_memory_equal(m + 5, body, first);
    assert_memory_equal(m + 5 + first, bdata(masked), buf_avail(masked));
    assert_int_equal(m[5 + first + buf_avail(masked)], 0);
    assert_memory_equal(m + 5 + first + buf_avail(masked) + 1, body + len - 18, 18);
    assert_int_equal(buf_avail(f->out), 5 + first + buf_avail(masked) + 1 + 18);
    buf_put(masked);
    /* rows still go through untouched */
    const struct val v[] = {{"1", 1}, {"2", 1}};
    assert_int_equal(rewrite(f, p, v, 2, NULL), 0);
    mask_plan_free(p);
    free(body);
    buf_put(rd);

    const struct field plain[] = {{"id", 0, 0, T_INT4, 0}, {"amount", 0, 0, T_INT4, 0}};
    rd = rowdesc(plain, 2);
    body = dup_exact(bdata(rd), buf_avail(rd));
    assert_int_equal(mask_plan_build(f->db, body, buf_avail(rd), NULL, NULL, &p), 0);
    assert_null(p);
    assert_int_equal(mask_rowdesc_rewrite(f->db, p, body, buf_avail(rd), f->out), 0);
    free(body);
    buf_put(rd);
}

static void test_notice(void **state)
{
    struct fx *f = *state;
    const char *detail = "Key (email)=(judy@example.com) already exists.";
    const char *kv[] = {
        "S", "ERROR",     "V", "ERROR",
        "C", "23505",     "M", "duplicate key value violates unique constraint \"u_email\"",
        "D", detail,      "s", "public",
        "t", "customers", "n", "u_email",
        NULL};
    struct buf *nb = notice_body(kv);
    uint8_t *body = dup_exact(bdata(nb), buf_avail(nb));
    f->out->off = f->out->len = 0;
    struct mask_counts counts = {0};
    assert_int_equal(mask_notice_rewrite(f->db, 'E', body, buf_avail(nb), f->out, &counts), 1);
    const uint8_t *m = bdata(f->out);
    assert_int_equal(m[0], 'E');
    assert_int_equal(pg_get_u32(m + 1) + 1, buf_avail(f->out));
    struct pg_error_view ev;
    assert_int_equal(pg_error_parse(m + 5, buf_avail(f->out) - 5, &ev), PG_OK);
    assert_string_equal(ev.sqlstate, "23505");
    assert_string_equal(ev.severity, "ERROR");
    assert_string_equal(ev.message, kv[7]);
    struct buf *want = want_text(f, detail);
    assert_non_null(want);
    assert_int_equal(strlen(ev.detail), buf_avail(want));
    assert_memory_equal(ev.detail, bdata(want), buf_avail(want));
    assert_null(strstr(ev.detail, "judy@"));
    assert_int_equal(counts.n[det(f, "email")], 1);
    /* The fields sluice keeps are still there, in order. */
    assert_non_null(memmem(m, buf_avail(f->out), "tcustomers\0nu_email\0\0", 21));
    buf_put(want);
    free(body);
    buf_put(nb);

    /* Nothing to mask in a notice: 0, nothing appended. */
    const char *kv2[] = {"S", "NOTICE", "C", "00000", "M", "table \"t\" does not exist, skipping",
                         NULL};
    nb = notice_body(kv2);
    body = dup_exact(bdata(nb), buf_avail(nb));
    f->out->off = f->out->len = 0;
    assert_int_equal(mask_notice_rewrite(f->db, 'N', body, buf_avail(nb), f->out, NULL), 0);
    assert_int_equal(f->out->len, 0);
    /* Malformed: every truncation, trailing bytes, a wrong type. */
    for (size_t cut = 0; cut < buf_avail(nb); cut++) {
        uint8_t *b2 = dup_exact(bdata(nb), cut);
        assert_int_equal(mask_notice_rewrite(f->db, 'N', b2, cut, f->out, NULL), -1);
        free(b2);
    }
    free(body);
    body = malloc(buf_avail(nb) + 2);
    memcpy(body, bdata(nb), buf_avail(nb));
    body[buf_avail(nb)] = 'M';
    body[buf_avail(nb) + 1] = 0;
    assert_int_equal(mask_notice_rewrite(f->db, 'N', body, buf_avail(nb) + 2, f->out, NULL), -1);
    assert_int_equal(mask_notice_rewrite(f->db, 'D', body, buf_avail(nb), f->out, NULL), -1);
    assert_int_equal(f->out->len, 0);
    free(body);
    buf_put(nb);

    /* RAISE ... USING COLUMN, CONSTRAINT, TABLE, SCHEMA, DATATYPE set to values: masked too */
    const char *kv_names[] = {"S", "ERROR",
                              "C", "P0001",
                              "M", "lookup failed",
                              "c", "user3@example.com",
                              "n", "4242 4242 4242 4242",
                              "t", "user3@example.com",
                              "s", "user3@example.com",
                              "d", "user3@example.com",
                              NULL};
    nb = notice_body(kv_names);
    body = dup_exact(bdata(nb), buf_avail(nb));
    f->out->off = f->out->len = 0;
    assert_int_equal(mask_notice_rewrite(f->db, 'E', body, buf_avail(nb), f->out, NULL), 1);
    assert_null(memmem(bdata(f->out), buf_avail(f->out), "user3@", 6));
    assert_null(memmem(bdata(f->out), buf_avail(f->out), "4242 4242 4242 4242", 19));
    free(body);
    buf_put(nb);

    /* A masked hint and internal query in a NoticeResponse; severity and code kept. */
    const char *kv3[] = {"S", "WARNING",
                         "C", "01000",
                         "M", "check",
                         "H", "write to kim@example.com",
                         "q", "select 'kim@example.com'",
                         NULL};
    nb = notice_body(kv3);
    body = dup_exact(bdata(nb), buf_avail(nb));
    f->out->off = f->out->len = 0;
    assert_int_equal(mask_notice_rewrite(f->db, 'N', body, buf_avail(nb), f->out, NULL), 1);
    m = bdata(f->out);
    assert_int_equal(m[0], 'N');
    assert_int_equal(pg_get_u32(m + 1) + 1, buf_avail(f->out));
    assert_null(memmem(m, buf_avail(f->out), "kim@", 4));
    assert_non_null(memmem(m, buf_avail(f->out), "C01000\0Mcheck\0", 14));
    free(body);
    buf_put(nb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_names),
        cmocka_unit_test_setup_teardown(test_plan_good_and_int_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_by_field_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_scan_by_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_bytea, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_numbers_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_ahead_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_output_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_no_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_row_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exempt_and_rules, setup, teardown),
        cmocka_unit_test(test_detectors_in_use),
        cmocka_unit_test(test_numbers_by_catalog_name),
        cmocka_unit_test(test_plan_cache),
        cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rowdesc_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
