/*
 * test_mask_detect.c: unit tests of detection by value and masked forms (src/mask/detect.c,
 * validate.c, form.c): every built-in detector with positives and hard negatives (UUIDs,
 * ISBNs, order numbers, timestamps, prices, 16-digit numbers failing Luhn, version strings,
 * invalid SSNs), the validators on their own, partial/full/hash forms, whole-value masking of
 * values that do not have their detector's shape, custom detectors and their errors, UTF-8
 * around matches, overlapping detections, counts, mask_string, and scanning from threads.
 * Cases are data tables: input and the exact expected output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask.h"
#include "mask/validate.h"

static struct mask_db *build(const struct cfg_masking *cfg)
{
    char err[256] = "";
    struct mask_db *db = mask_db_build(cfg, err, sizeof err);
    if (!db) fail_msg("mask_db_build: %s", err);
    return db;
}

static struct mask_db *build_default(void)
{
    struct cfg_masking cfg = {0};
    cfg.enabled = true;
    return build(&cfg);
}

/* mask_string, compared with the expected text. */
static void expect_masked(const struct mask_db *db, const char *in, const char *want)
{
    char *got = mask_string(db, in);
    if (strcmp(got, want) != 0)
        fail_msg("mask(\"%s\")\n   got  \"%s\"\n   want \"%s\"", in, got, want);
    free(got);
}

struct tcase {
    const char *in, *want;
};

static const struct tcase positives[] = {
    /* email */
    {"a.b@example.com", "a***@example.com"},
    {"mail Kaitlyn.Smith@yahoo.com now", "mail K***@yahoo.com now"},
    {"<Dereck_Bode-Moen20@mail.example.co.uk>.", "<D***@mail.example.co.uk>."},
    {"x+tag@sub.domain.io, y@z.org", "x***@sub.domain.io, y***@z.org"},
    /* cards: dashes, spaces, contiguous, Amex and Diners layouts */
    {"4242-4242-4242-4242", "****-****-****-4242"},
    {"card 4242 4242 4242 4242 exp", "card ****-****-****-4242 exp"},
    {"4111111111111111", "****-****-****-1111"},
    {"amex 3782-822463-10005.", "amex ****-****-****-0005."},
    {"5555555555554444;", "****-****-****-4444;"},
    {"diners 3056 930902 5904", "diners ****-****-****-5904"},
    {"4111 1111 1111 1111 123", "****-****-****-1111 123"}, /* a CVV after the number */
    {"6011111111111117", "****-****-****-1117"},
    /* SSN */
    {"123-45-6789", "***-**-6789"},
    {"ssn: 078-05-1121.", "ssn: ***-**-1121."},
    /* phones */
    {"(408) 319-6558 x962", "+1 ***-***-6558 x962"},
    {"call 415-555-1234", "call +1 ***-***-1234"},
    {"1-684-465-2482", "+1 ***-***-2482"},
    {"+1 415 555 1234", "+1 ***-***-1234"},
    {"+14155551234", "+1 ***-***-1234"},
    {"+44 20 7946 0958", "+44 ***-***-0958"},
    {"tel:+33 1 23 45 67 89.", "tel:+33 ***-***-6789."},
    {"415.555.1234", "+1 ***-***-1234"},
    /* IBAN */
    {"DE89370400440532013000", "DE89****3000"},
    {"iban DE89 3704 0044 0532 0130 00 ok", "iban DE89****3000 ok"},
    {"GB29NWBK60161331926819", "GB29****6819"},
    /* IPv4 / IPv6 */
    {"from 192.168.1.10.", "from 192.*.*.*."},
    {"[10.0.0.255]:5432", "[10.*.*.*]:5432"},
    {"2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001::*"},
    {"peer fe80::1ff:fe23:4567:890a%eth0", "peer fe80::*%eth0"},
    {"[2001:db8::1]:443", "[2001::*]:443"},
    /* secrets */
    {"AKIAIOSFODNN7EXAMPLE", "[REDACTED:secret]"},
    {"key=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "key=[REDACTED:secret]"},
    {"sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:secret]"},
    {"xoxb-123456789012-123456789012-abcdefABCDEF123456", "[REDACTED:secret]"},
    {"host=db password=hunter2! user=x", "host=db password=[REDACTED:secret] user=x"},
    {"{\"client_secret\": \"abc def\"}", "{\"client_secret\": \"[REDACTED:secret]\"}"},
    {"API_KEY: Zm9vYmFyYmF6MTIz", "API_KEY: [REDACTED:secret]"},
    {"a -----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- b",
     "a [REDACTED:secret] b"},
    {"-----BEGIN OPENSSH PRIVATE KEY----- abc (cut off)", "[REDACTED:secret]"},
    /* JWT */
    {"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
     "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U.",
     "Bearer [REDACTED:jwt]."},
};

static const char *const negatives[] = {
    /* UUIDs, ISBNs, order numbers */
    "550e8400-e29b-41d4-a716-446655440000",
    "978-1-4359-1513-8",
    "9781435915138",
    "0-306-40615-2",
    "ORD-2024-000123",
    "order #100234 and INV4242424242",
    /* timestamps and dates */
    "2024-01-15T10:23:45.123+05:30",
    "2024-01-15 10:23:45",
    "20240115102345",
    "1705312345123",
    "at 10:23:45 on 01/15/2024",
    /* prices and amounts */
    "$1,234.56",
    "€ 4 242.42",
    "total 12345.67 EUR",
    /* 16-digit numbers failing Luhn, and too-long runs */
    "4242424242424241",
    "4242-4242-4242-4241",
    "6489-6201-3912-0313-3636",
    "12345678901234567890123",
    "ID4242424242424242",
    /* IMEI (2-6-6-1, Luhn-valid) and an EAN-13 barcode (Luhn-valid too) */
    "35-209900-176148-1",
    "4006381333931",
    /* version strings */
    "1.2.3",
    "v1.2.3.4",
    "1.2.3.4.5",
    "version 10.0.19045.2965",
    "release 2.0.0.1",
    "256.1.1.1",
    /* invalid SSNs */
    "000-12-3456",
    "666-12-3456",
    "912-12-3456",
    "123-00-4567",
    "123-45-0000",
    "123456789",
    /* not phones */
    "123-456-7890",
    "call 555-123-4567",
    "+5.00",
    "2+3=5",
    "+2024-01-15",
    /* not IBANs */
    "DE89370400440532013001",
    "XX89370400440532013000",
    /* not IPv6 */
    "10:23:45",
    "std::vector<int>",
    "00:1A:2B:3C:4D:5E",
    "::",
    /* not secrets */
    "AKIAIOSFODNN7EXAMPLEX",
    "password: required",
    "password=${DB_PASSWORD}",
    "token: 1500",
    "secret: <redacted>",
    "Reset your password: click the link",
    /* not email */
    "user@localhost",
    "a@b.c",
    "@example.com",
    "x@-bad.com",
    /* not JWT */
    "eyJhbGciOiJub25lIn0",
    "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.abc",
    /* plain text */
    "",
    "hello world",
    "naïve café 日本語 テキスト",
};

static void test_positives(void **state)
{
    (void)state;
    struct mask_db *db = build_default();
    for (size_t i = 0; i < sizeof positives / sizeof positives[0]; i++)
        expect_masked(db, positives[i].in, positives[i].want);
    mask_db_free(db);
}

static void test_negatives_untouched(void **state)
{
    (void)state;
    struct mask_db *db = build_default();
    struct buf *out = buf_get();
    for (size_t i = 0; i < sizeof negatives / sizeof negatives[0]; i++) {
        const char *s = negatives[i];
        out->off = out->len = 0;
        struct mask_counts counts = {0};
        int r = mask_text(db, (const uint8_t *)s, strlen(s), out, &counts);
        if (r != 0 || out->len != 0) {
            buf_append_u8(out, 0);
            fail_msg("negative \"%s\" was masked (%d): \"%s\"", s, r, (char *)out->data);
        }
        for (unsigned k = 0; k < MASK_MAX_DETECTORS; k++)
            assert_int_equal(counts.n[k], 0);
    }
    buf_put(out);
    mask_db_free(db);
}

static void test_validators(void **state)
{
    (void)state;
#define V(fn, s) fn((const uint8_t *)(s), strlen(s))
    assert_true(V(mask_valid_luhn, "79927398713"));
    assert_false(V(mask_valid_luhn, "79927398710"));
    assert_true(V(mask_valid_card, "4242-4242-4242-4242"));
    assert_false(V(mask_valid_card, "4242--4242-4242-4242"));
    assert_false(V(mask_valid_card, "1234567812345670"));     /* Luhn-valid, no issuer 1 */
    assert_false(V(mask_valid_card, "42424242424242424242")); /* 20 digits */
    assert_true(V(mask_valid_card, "2221000000000009"));      /* Mastercard 2-series */
    assert_false(V(mask_valid_card, "2000000000000008"));
    assert_true(V(mask_valid_iban, "DE89370400440532013000"));
    assert_true(V(mask_valid_iban, "NO9386011117947"));
    assert_false(V(mask_valid_iban, "DE8937040044053201300")); /* one short */
    assert_false(V(mask_valid_iban, "de89370400440532013000"));
    assert_int_equal(mask_iban_length((const uint8_t *)"FR"), 27);
    assert_int_equal(mask_iban_length((const uint8_t *)"ZZ"), 0);
    assert_true(V(mask_valid_mod97, "GB82 WEST 1234 5698 7654 32"));
    assert_true(V(mask_valid_ssn, "001-01-0001"));
    assert_true(V(mask_valid_ssn, "899-99-9999"));
    assert_false(V(mask_valid_ssn, "900-12-3456"));
    assert_false(V(mask_valid_ssn, "078-05-1120"));
    assert_false(V(mask_valid_ssn, "12-345-678"));
    assert_true(V(mask_valid_nanp, "(212) 555-0100"));
    assert_false(V(mask_valid_nanp, "(112) 555-0100"));
    assert_false(V(mask_valid_nanp, "212-155-0100"));
    assert_true(V(mask_valid_e164, "+49 30 12345678"));
    assert_false(V(mask_valid_e164, "+0 123 4567 890"));
    assert_false(V(mask_valid_e164, "+1 212 555"));
    assert_false(V(mask_valid_e164, "+1234567890123456"));
    assert_int_equal(mask_e164_cc_len((const uint8_t *)"447946", 6), 2);
    assert_int_equal(mask_e164_cc_len((const uint8_t *)"3531234", 7), 3);
    assert_int_equal(mask_e164_cc_len((const uint8_t *)"14155551234", 11), 1);
    assert_true(V(mask_valid_ipv4, "255.255.255.255"));
    assert_true(V(mask_valid_ipv4, "0.0.0.0"));
    assert_false(V(mask_valid_ipv4, "256.1.1.1"));
    assert_false(V(mask_valid_ipv4, "01.2.3.4"));
    assert_false(V(mask_valid_ipv4, "1.2.3"));
    assert_false(V(mask_valid_ipv4, "1.2.3.4.5"));
    assert_true(V(mask_valid_ipv6, "::ffff:192.0.2.1"));
    assert_true(V(mask_valid_ipv6, "fe80::1"));
    assert_false(V(mask_valid_ipv6, "::1"));
    assert_false(V(mask_valid_ipv6, "1:2:3:4:5:6:7"));
    assert_false(V(mask_valid_ipv6, "g::1"));
    assert_true(V(mask_valid_jwt, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"));
    assert_true(V(mask_valid_jwt, "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."));     /* alg none */
    assert_false(V(mask_valid_jwt, "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2ln")); /* no alg */
    assert_false(V(mask_valid_jwt, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"));    /* 2 parts */
    assert_false(V(mask_valid_jwt, "eyJhbGciOiJIUzI1NiJ9..c2ln"));
    assert_true(V(mask_valid_email, "first.last+x@mail.example.museum"));
    assert_false(V(mask_valid_email, "first..last@example.com"));
    assert_false(V(mask_valid_email, ".x@example.com"));
    assert_false(V(mask_valid_email, "x@example.c0m"));
    assert_false(V(mask_valid_email, "x@exa_mple.com"));
    assert_true(mask_valid_assigned_secret((const uint8_t *)"hunter2", 7, false));
    assert_true(mask_valid_assigned_secret((const uint8_t *)"camelCase", 9, false));
    assert_false(mask_valid_assigned_secret((const uint8_t *)"Required", 8, false));
    assert_false(mask_valid_assigned_secret((const uint8_t *)"abc", 3, true));
    assert_true(mask_valid_assigned_secret((const uint8_t *)"abcd", 4, true));
    assert_false(mask_valid_assigned_secret((const uint8_t *)"********", 8, true));
    assert_false(mask_valid_assigned_secret((const uint8_t *)"NULL", 4, true));
#undef V
}

/* mask_value of a whole column value, as a string. */
static char *value_of(const struct mask_db *db, const char *det, enum cfg_mask_form form,
                      const char *s)
{
    struct buf *out = buf_get();
    mask_value(db, mask_db_detector_index(db, det), form, (const uint8_t *)s, strlen(s), out);
    buf_append_u8(out, 0);
    char *r = strdup((char *)out->data);
    buf_put(out);
    return r;
}

static void expect_vmask(const struct mask_db *db, const char *det, enum cfg_mask_form form,
                         const char *in, const char *want)
{
    char *got = value_of(db, det, form, in);
    if (strcmp(got, want) != 0)
        fail_msg("mask_value(%s, \"%s\") = \"%s\", want \"%s\"", det, in, got, want);
    free(got);
}

static void test_forms_whole_values(void **state)
{
    (void)state;
    struct mask_db *db = build_default();
    const enum cfg_mask_form D = CFG_FORM_DEFAULT;
    expect_vmask(db, "email", D, "jane.doe@example.com", "j***@example.com");
    expect_vmask(db, "email", D, "josé@example.com", "j***@example.com");
    expect_vmask(db, "email", D, "élodie@example.fr", "é***@example.fr");
    expect_vmask(db, "email", D, "not an address", "[REDACTED:email]");
    expect_vmask(db, "credit_card", D, "4242 4242 4242 4242", "****-****-****-4242");
    expect_vmask(db, "credit_card", D, "n/a", "[REDACTED:credit_card]");
    expect_vmask(db, "ssn", D, "123456789", "***-**-6789");
    expect_vmask(db, "ssn", D, "123-45-6789", "***-**-6789");
    expect_vmask(db, "ssn", D, "12345", "[REDACTED:ssn]");
    expect_vmask(db, "phone", D, "+44 20 7946 0958", "+44 ***-***-0958");
    expect_vmask(db, "phone", D, "4155551234", "+1 ***-***-1234");
    expect_vmask(db, "phone", D, "0171 2345678", "***-***-5678");
    expect_vmask(db, "phone", D, "ask reception", "[REDACTED:phone]");
    expect_vmask(db, "iban", D, "GB29 NWBK 6016 1331 9268 19", "GB29****6819");
    expect_vmask(db, "iban", D, "12", "[REDACTED:iban]");
    expect_vmask(db, "ipv4", D, "172.16.254.1", "172.*.*.*");
    expect_vmask(db, "ipv4", D, "localhost", "[REDACTED:ipv4]");
    expect_vmask(db, "ipv6", D, "2001:db8::ff00:42:8329", "2001::*");
    expect_vmask(db, "secret", D, "hunter2", "[REDACTED:secret]");
    expect_vmask(db, "jwt", D, "eyJ.x.y", "[REDACTED:jwt]");
    expect_vmask(db, "dob", D, "1990-05-17", "[REDACTED:dob]");
    expect_vmask(db, "column", D, "anything at all", "[REDACTED:column]");
    expect_vmask(db, "column", CFG_FORM_PARTIAL, "EMP-00123456", "***-****3456");
    expect_vmask(db, "column", CFG_FORM_PARTIAL, "short", "[REDACTED:column]");
    expect_vmask(db, "column", CFG_FORM_PARTIAL, "ñandú-12345678", "*****-****5678");
    expect_vmask(db, "email", CFG_FORM_FULL, "jane.doe@example.com", "[REDACTED:email]");
    expect_vmask(db, "email", D, "", "");
    /* unknown detector index: the "column" detector */
    struct buf *out = buf_get();
    mask_value(db, -1, D, (const uint8_t *)"x", 1, out);
    assert_int_equal(out->len, strlen("[REDACTED:column]"));
    assert_memory_equal(out->data, "[REDACTED:column]", out->len);
    buf_put(out);
    mask_db_free(db);
}

static bool is_hash_form(const char *s)
{
    if (strlen(s) != 18 || s[0] != 'h' || s[1] != ':') return false;
    for (int i = 2; i < 18; i++)
        if (!strchr("0123456789abcdef", s[i])) return false;
    return true;
}

static void test_hash_form(void **state)
{
    (void)state;
    struct cfg_masking cfg = {0};
    cfg.form = CFG_FORM_HASH;
    cfg.hash_key = "k1-secret-key";
    struct mask_db *a = build(&cfg), *a2 = build(&cfg);
    cfg.hash_key = "k2-other-key";
    struct mask_db *b = build(&cfg);
    cfg.hash_key = NULL; /* random per process */
    struct mask_db *r1 = build(&cfg), *r2 = build(&cfg);

    const char *txt = "pay 4242-4242-4242-4242 from bob@example.com";
    char *ma = mask_string(a, txt), *ma2 = mask_string(a2, txt), *mb = mask_string(b, txt);
    assert_string_equal(ma, ma2);    /* same key, same output */
    assert_string_not_equal(ma, mb); /* different key, different output */
    assert_null(strstr(ma, "4242"));
    assert_null(strstr(ma, "bob"));
    char h[19];
    assert_int_equal(sscanf(ma, "pay %18s from", h), 1);
    assert_true(is_hash_form(h));

    /* one value written two ways hashes the same (cards: digits only; emails: case) */
    char *v1 = value_of(a, "credit_card", CFG_FORM_DEFAULT, "4242 4242 4242 4242");
    char *v2 = value_of(a, "credit_card", CFG_FORM_DEFAULT, "4242424242424242");
    char *v3 = value_of(a, "email", CFG_FORM_DEFAULT, "Bob@Example.com");
    char *v4 = value_of(a, "email", CFG_FORM_DEFAULT, "bob@example.com");
    char *v5 = value_of(a, "email", CFG_FORM_DEFAULT, "alice@example.com");
    assert_true(is_hash_form(v1));
    assert_string_equal(v1, v2);
    assert_string_equal(v3, v4);
    assert_string_not_equal(v4, v5);
    /* a column's own form beats masking.form */
    char *v6 = value_of(a, "email", CFG_FORM_PARTIAL, "bob@example.com");
    assert_string_equal(v6, "b***@example.com");
    /* the random key is one per process: two dbs agree */
    char *r1s = mask_string(r1, txt), *r2s = mask_string(r2, txt);
    assert_string_equal(r1s, r2s);
    assert_string_not_equal(r1s, ma);
    free(ma), free(ma2), free(mb), free(v1), free(v2), free(v3), free(v4), free(v5), free(v6);
    free(r1s), free(r2s);
    mask_db_free(a), mask_db_free(a2), mask_db_free(b), mask_db_free(r1), mask_db_free(r2);
}

/* mask_string gives what mask_text gives, text after text, under two databases, for short
 * and long texts. */
static void test_mask_string_like_mask_text(void **state)
{
    (void)state;
    struct cfg_masking cfg = {0};
    struct mask_db *db = build(&cfg);
    cfg.form = CFG_FORM_FULL;
    struct mask_db *full = build(&cfg);
    char txt[2200];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 200; i++) {
            int n = snprintf(txt, sizeof txt, "SELECT %d FROM t WHERE mail = '%s%d@example.com'", i,
                             i % 3 ? "user" : "", i);
            if (i % 50 == 0) { /* longer than what is remembered */
                memset(txt + n, ' ', 1500);
                snprintf(txt + n + 1500, sizeof txt - (size_t)n - 1500, "bob@example.org");
            }
            struct mask_db *d = i % 7 ? db : full;
            char *got = mask_string(d, txt);
            struct buf b = {0};
            b.cap = strlen(txt) + 256;
            b.data = malloc(b.cap);
            assert_true(mask_text(d, (const uint8_t *)txt, strlen(txt), &b, NULL) > 0);
            buf_append_u8(&b, 0);
            assert_string_equal(got, (char *)b.data);
            char raw[64];
            snprintf(raw, sizeof raw, "%s%d@example.com", i % 3 ? "user" : "", i);
            assert_null(strstr(got, raw));
            free(b.data);
            free(got);
        }
    }
    mask_db_free(db);
    mask_db_free(full);
}

static void test_form_full_override(void **state)
{
    (void)state;
    struct cfg_masking cfg = {0};
    cfg.form = CFG_FORM_FULL;
    struct mask_db *db = build(&cfg);
    expect_masked(db, "to a@b.com, ssn 123-45-6789", "to [REDACTED:email], ssn [REDACTED:ssn]");
    mask_db_free(db);
}

static void test_custom_detectors(void **state)
{
    (void)state;
    struct cfg_detector custom[] = {
        {.name = "employee_id", .pattern = "\\bEMP-[0-9]{6}\\b", .form = CFG_FORM_FULL},
        {.name = "account", .pattern = "\\bACCT[0-9]{8,12}\\b", .validator = CFG_VALID_LUHN},
        {.name = "badge",
         .pattern = "\\bB-[0-9]{3}-[0-9]{2}-[0-9]{4}\\b",
         .validator = CFG_VALID_SSN},
    };
    struct cfg_mask_column cols[] = {{.match = "hr.*.salary", .detector = "salary"}};
    struct cfg_masking cfg = {0};
    cfg.custom = custom;
    cfg.n_custom = 3;
    cfg.columns = cols;
    cfg.n_columns = 1;
    struct mask_db *db = build(&cfg);
    assert_true(mask_db_detector_index(db, "employee_id") >= 0);
    assert_true(mask_db_detector_scans(db, (unsigned)mask_db_detector_index(db, "account")));
    int sal = mask_db_detector_index(db, "salary");
    assert_true(sal >= 0);
    assert_false(mask_db_detector_scans(db, (unsigned)sal));
    assert_string_equal(mask_db_config(db)->columns[0].match, "hr.*.salary");

    expect_masked(db, "emp EMP-001234 here", "emp [REDACTED:employee_id] here");
    /* Luhn-valid account number masked with the generic partial form; invalid left alone;
     * the longest match from one start is the one masked */
    expect_masked(db, "ACCT79927398713 ACCT79927398710", "***********8713 ACCT79927398710");
    expect_masked(db, "B-123-45-6789 B-000-45-6789", "*-***-**-6789 B-000-45-6789");
    struct mask_counts counts = {0};
    struct buf *out = buf_get();
    const char *t = "EMP-000001 EMP-000002 a@b.com";
    assert_int_equal(mask_text(db, (const uint8_t *)t, strlen(t), out, &counts), 3);
    assert_int_equal(counts.n[mask_db_detector_index(db, "employee_id")], 2);
    assert_int_equal(counts.n[mask_db_detector_index(db, "email")], 1);
    buf_put(out);
    mask_db_free(db);
}

static void test_build_errors(void **state)
{
    (void)state;
    char err[256];
    struct cfg_detector bad[] = {{.name = "order_ref", .pattern = "ORD-(\\d{4"}};
    struct cfg_masking cfg = {0};
    cfg.custom = bad;
    cfg.n_custom = 1;
    err[0] = 0;
    assert_null(mask_db_build(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "\"order_ref\""));
    assert_non_null(strstr(err, "bad pattern"));

    struct cfg_detector empty[] = {{.name = "empty", .pattern = "x*"}};
    cfg.custom = empty;
    assert_null(mask_db_build(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "\"empty\""));

    struct cfg_detector dup[] = {{.name = "email", .pattern = "x+"}};
    cfg.custom = dup;
    assert_null(mask_db_build(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "\"email\""));

    char *names[] = {"email", "creditcard"};
    struct cfg_masking c2 = {0};
    c2.detectors = names;
    c2.n_detectors = 2;
    assert_null(mask_db_build(&c2, err, sizeof err));
    assert_non_null(strstr(err, "creditcard"));
}

static void test_detector_subset_and_names(void **state)
{
    (void)state;
    char *names[] = {"email"};
    struct cfg_masking cfg = {0};
    cfg.detectors = names;
    cfg.n_detectors = 1;
    struct mask_db *db = build(&cfg);
    expect_masked(db, "a@b.com 4242424242424242", "a***@b.com 4242424242424242");
    assert_true(mask_db_detector_scans(db, (unsigned)mask_db_detector_index(db, "email")));
    assert_false(mask_db_detector_scans(db, (unsigned)mask_db_detector_index(db, "credit_card")));
    /* every built-in is still known by name, for columns */
    for (const char *const *n = mask_builtin_detectors; *n; n++)
        assert_true(mask_db_detector_index(db, *n) >= 0);
    for (const char *const *n = mask_column_detectors; *n; n++)
        assert_true(mask_db_detector_index(db, *n) >= 0);
    assert_int_equal(mask_db_column_detector(db), mask_db_detector_index(db, "column"));
    assert_int_equal(mask_db_detector_index(db, "nope"), -1);
    assert_string_equal(mask_db_detector_name(db, 0), "email");
    assert_null(mask_db_detector_name(db, mask_db_detector_count(db)));
    mask_db_free(db);
}

static bool valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n) return false;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += l;
    }
    return true;
}

static void test_utf8_and_overlaps(void **state)
{
    (void)state;
    struct mask_db *db = build_default();
    expect_masked(db, "名前: a@b.com — café ✓ 4242424242424242日本",
                  "名前: a***@b.com — café ✓ ****-****-****-4242日本");
    expect_masked(db, "メールはuser@example.com です", "メールはu***@example.com です");
    expect_masked(db, "Ünïcödé 名前 123-45-6789 — ✓", "Ünïcödé 名前 ***-**-6789 — ✓");
    /* the card number is the local part of an address: the longest span (the email) wins */
    expect_masked(db, "4242424242424242@example.com", "4***@example.com");
    /* a JWT given as token=...: one redaction, no broken output */
    expect_masked(db, "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz&x=1",
                  "token=[REDACTED:secret]&x=1");
    /* a phone with +1 found by two patterns: masked once */
    expect_masked(db, "+1-415-555-1234", "+1 ***-***-1234");
    const char *mixed = "日本 jane@example.jp, 4242 4242 4242 4242; ünïcode 10.1.2.3 ✓";
    char *m = mask_string(db, mixed);
    assert_true(valid_utf8((const uint8_t *)m, strlen(m)));
    assert_non_null(strstr(m, "ünïcode"));
    free(m);
    mask_db_free(db);
}

static void test_mask_text_contract(void **state)
{
    (void)state;
    struct mask_db *db = build_default();
    struct buf *out = buf_get();
    buf_append(out, "prefix", 6);
    const char *clean = "nothing to see here 2024-01-15";
    assert_int_equal(mask_text(db, (const uint8_t *)clean, strlen(clean), out, NULL), 0);
    assert_int_equal(out->len, 6); /* nothing appended */
    const char *dirty = "x a@b.com y 123-45-6789";
    struct mask_counts counts = {0};
    assert_int_equal(mask_text(db, (const uint8_t *)dirty, strlen(dirty), out, &counts), 2);
    const char *want = "prefixx a***@b.com y ***-**-6789";
    assert_int_equal(out->len, strlen(want));
    assert_memory_equal(out->data, want, out->len); /* appended after what was there */
    assert_int_equal(counts.n[mask_db_detector_index(db, "email")], 1);
    assert_int_equal(counts.n[mask_db_detector_index(db, "ssn")], 1);
    /* NUL bytes and binary around a value */
    const uint8_t bin[] = {0, 0xff, 'a', '@', 'b', '.', 'c', 'o', 'm', 0, 0xfe};
    out->off = out->len = 0;
    assert_int_equal(mask_text(db, bin, sizeof bin, out, NULL), 1);
    const uint8_t wantb[] = {0, 0xff, 'a', '*', '*', '*', '@', 'b', '.', 'c', 'o', 'm', 0, 0xfe};
    assert_int_equal(out->len, sizeof wantb);
    assert_memory_equal(out->data, wantb, sizeof wantb);
    buf_put(out);

    /* mask_string: NULL db copies, no detection copies */
    char *c1 = mask_string(NULL, "a@b.com");
    assert_string_equal(c1, "a@b.com");
    char *c2 = mask_string(db, clean);
    assert_string_equal(c2, clean);
    assert_null(mask_string(db, NULL));
    free(c1), free(c2);
    mask_db_free(db);
}

struct thread_arg {
    const struct mask_db *db;
    int ok;
};

static void *scan_thread(void *p)
{
    struct thread_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 2000; i++) {
        char in[96], want[96];
        snprintf(in, sizeof in, "user%d@example.com paid with 4242-4242-4242-4242 #%d", i, i);
        snprintf(want, sizeof want, "u***@example.com paid with ****-****-****-4242 #%d", i);
        char *m = mask_string(a->db, in);
        if (strcmp(m, want) != 0) a->ok = 0;
        free(m);
    }
    mask_thread_release();
    buf_pool_free();
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct mask_db *db = build_default(), *db2 = build_default();
    struct thread_arg args[4] = {{db, 0}, {db, 0}, {db2, 0}, {db2, 0}};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, scan_thread, &args[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(args[i].ok);
    }
    /* this thread alternates between two dbs with one scratch */
    for (int i = 0; i < 10; i++)
        expect_masked(i & 1 ? db : db2, "a@b.com", "a***@b.com");
    mask_db_free(db);
    mask_db_free(db2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positives),
        cmocka_unit_test(test_negatives_untouched),
        cmocka_unit_test(test_validators),
        cmocka_unit_test(test_forms_whole_values),
        cmocka_unit_test(test_hash_form),
        cmocka_unit_test(test_form_full_override),
        cmocka_unit_test(test_mask_string_like_mask_text),
        cmocka_unit_test(test_custom_detectors),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_detector_subset_and_names),
        cmocka_unit_test(test_utf8_and_overlaps),
        cmocka_unit_test(test_mask_text_contract),
        cmocka_unit_test(test_threads),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    mask_thread_release();
    buf_pool_free();
    return r;
}
