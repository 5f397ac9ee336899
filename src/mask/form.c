/*
 * form.c: masked forms. Given a value and what it is (email, card, ...), append what a
 * client sees instead: a partial form that keeps the useful shape (a***@example.com,
 * ****-****-****-4242, ***-**-6789, +1 ***-***-1234), a full redaction
 * ("[REDACTED:<detector>]"), or a keyed hash ("h:" + 16 hex digits of HMAC-SHA-256) that
 * maps equal inputs to equal outputs so joins and GROUP BY still work on masked data.
 *
 * Partial forms never trust the value to have its kind's shape (a column named "ssn" may
 * hold anything): what cannot be shaped gets the full form. Deciding which form applies and
 * finding values is detect.c's job.
 */
#include "mask/validate.h"

#include "mask/mask.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

static inline bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_alnum(uint8_t c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline void put_u8(struct buf *out, uint8_t c)
{
    mask_put(out, &c, 1);
}

static inline void put(struct buf *out, const char *s)
{
    mask_put(out, s, strlen(s));
}

enum cfg_mask_form mask_kind_default_form(enum mask_kind kind)
{
    switch (kind) {
    case MASK_K_SECRET:
    case MASK_K_JWT:
    case MASK_K_COLUMN:
        return CFG_FORM_FULL;
    default:
        return CFG_FORM_PARTIAL;
    }
}

static void form_full(const char *name, struct buf *out)
{
    put(out, "[REDACTED:");
    put(out, name);
    put(out, "]");
}

/* The digits of s, at most cap; returns how many there were in total. */
static size_t collect_digits(const uint8_t *s, size_t n, uint8_t *d, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (is_digit(s[i])) {
            if (k < cap) d[k] = s[i];
            k++;
        }
    return k;
}

static void form_hash(const struct mask_form_key *key, enum mask_kind kind, const uint8_t *s,
                      size_t n, struct buf *out)
{
    /* Normalise so that one value written two ways masks the same: digits only for cards,
     * SSNs and phones (keeping a leading '+'), upper-case alnum for IBANs, lower case for
     * emails. */
    uint8_t tmp[256];
    const uint8_t *p = s;
    size_t m = n;
    if (n <= sizeof tmp && (kind == MASK_K_CARD || kind == MASK_K_SSN || kind == MASK_K_PHONE ||
                            kind == MASK_K_IBAN || kind == MASK_K_EMAIL)) {
        m = 0;
        for (size_t i = 0; i < n; i++) {
            uint8_t c = s[i];
            if (kind == MASK_K_EMAIL) {
                tmp[m++] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
            } else if (kind == MASK_K_IBAN) {
                if (is_alnum(c)) tmp[m++] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 32) : c;
            } else if (is_digit(c) || (kind == MASK_K_PHONE && c == '+' && m == 0)) {
                tmp[m++] = c;
            }
        }
        p = tmp;
        if (m == 0) { /* nothing left to normalise: hash what was given */
            p = s;
            m = n;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key->key, (int)key->len, p, m, md, &mdlen) || mdlen < 8) {
        put(out, "h:????????????????"); /* cannot happen with SHA-256; never leak the value */
        return;
    }
    static const char hex[] = "0123456789abcdef";
    char h[2 + 16];
    h[0] = 'h';
    h[1] = ':';
    for (int i = 0; i < 8; i++) {
        h[2 + 2 * i] = hex[md[i] >> 4];
        h[3 + 2 * i] = hex[md[i] & 15];
    }
    mask_put(out, h, sizeof h);
}

static bool form_email(const uint8_t *s, size_t n, struct buf *out)
{
    const uint8_t *at = NULL;
    for (size_t i = n; i-- > 0;)
        if (s[i] == '@') {
            at = s + i;
            break;
        }
    if (!at || at == s || (size_t)(at - s) + 1 >= n || (s[0] & 0xC0) == 0x80) return false;
    size_t first = 1; /* the first character, whole when it is multi-byte UTF-8 */
    while (first < (size_t)(at - s) && (s[first] & 0xC0) == 0x80)
        first++;
    mask_put(out, s, first);
    put(out, "***");
    mask_put(out, at, n - (size_t)(at - s));
    return true;
}

static void put_last4(struct buf *out, const uint8_t *d, size_t k)
{
    mask_put(out, d + k - 4, 4);
}

static bool form_card(const uint8_t *s, size_t n, struct buf *out)
{
    uint8_t d[64];
    size_t k = collect_digits(s, n, d, sizeof d);
    if (k < 12 || k > sizeof d) return false;
    put(out, "****-****-****-");
    put_last4(out, d, k);
    return true;
}

static bool form_ssn(const uint8_t *s, size_t n, struct buf *out)
{
    uint8_t d[9];
    if (collect_digits(s, n, d, sizeof d) != 9) return false;
    put(out, "***-**-");
    put_last4(out, d, 9);
    return true;
}

static bool form_phone(const uint8_t *s, size_t n, struct buf *out)
{
    uint8_t d[16];
    size_t k = collect_digits(s, n, d, sizeof d);
    if (k < 7 || k > 15) return false;
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    unsigned cc = 0;
    if (i < n && s[i] == '+') {
        /* the country code: the first group when the number is written with separators,
         * else the E.164 zone table */
        size_t g = 0;
        for (size_t j = i + 1; j < n && is_digit(s[j]); j++)
            g++;
        cc = (g >= 1 && g <= 3 && g < k) ? (unsigned)g : mask_e164_cc_len(d, k);
    } else if (k == 11 && d[0] == '1') {
        cc = 1; /* 1-415-555-1234 */
    } else if (k == 10) {
        cc = 1; /* NANP shape: (415) 555-1234 */
        put(out, "+1 ***-***-");
        put_last4(out, d, k);
        return true;
    }
    if (cc && cc + 4 <= k) {
        put(out, "+");
        mask_put(out, d, cc);
        put(out, " ");
    }
    put(out, "***-***-");
    put_last4(out, d, k);
    return true;
}

static bool form_iban(const uint8_t *s, size_t n, struct buf *out)
{
    uint8_t a[40];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' || s[i] == '-') continue;
        if (!is_alnum(s[i]) || k == sizeof a) return false;
        a[k++] = (s[i] >= 'a' && s[i] <= 'z') ? (uint8_t)(s[i] - 32) : s[i];
    }
    if (k < 12 || !(a[0] >= 'A' && a[0] <= 'Z') || !(a[1] >= 'A' && a[1] <= 'Z') ||
        !is_digit(a[2]) || !is_digit(a[3]))
        return false;
    mask_put(out, a, 4);
    put(out, "****");
    mask_put(out, a + k - 4, 4);
    return true;
}

static bool form_ipv4(const uint8_t *s, size_t n, struct buf *out)
{
    if (!mask_valid_ipv4(s, n)) return false;
    const uint8_t *dot = memchr(s, '.', n);
    mask_put(out, s, (size_t)(dot - s));
    put(out, ".*.*.*");
    return true;
}

static bool form_ipv6(const uint8_t *s, size_t n, struct buf *out)
{
    if (!mask_valid_ipv6(s, n)) return false;
    const uint8_t *c = memchr(s, ':', n);
    mask_put(out, s, (size_t)(c - s));
    put(out, "::*");
    return true;
}

/* Every letter and digit but the last 4 starred; other ASCII kept; a multi-byte UTF-8
 * character becomes one '*'. Needs 8+ letters and digits. */
static bool form_generic(const uint8_t *s, size_t n, struct buf *out)
{
    size_t alnum = 0;
    for (size_t i = 0; i < n; i++)
        if (is_alnum(s[i])) alnum++;
    if (alnum < 8) return false;
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (is_alnum(c)) {
            seen++;
            put_u8(out, seen > alnum - 4 ? c : '*');
        } else if (c >= 0x80) {
            if ((c & 0xC0) != 0x80) put_u8(out, '*');
        } else {
            put_u8(out, c < 0x20 ? '*' : c);
        }
    }
    return true;
}

void mask_form_write(const struct mask_form_key *key, enum mask_kind kind, const char *name,
                     enum cfg_mask_form form, const uint8_t *s, size_t n, struct buf *out)
{
    if (n == 0) return;
    if (form == CFG_FORM_HASH) {
        form_hash(key, kind, s, n, out);
        return;
    }
    if (form == CFG_FORM_PARTIAL) {
        bool done = false;
        switch (kind) {
        case MASK_K_EMAIL:
            done = form_email(s, n, out);
            break;
        case MASK_K_CARD:
            done = form_card(s, n, out);
            break;
        case MASK_K_SSN:
            done = form_ssn(s, n, out);
            break;
        case MASK_K_PHONE:
            done = form_phone(s, n, out);
            break;
        case MASK_K_IBAN:
            done = form_iban(s, n, out);
            break;
        case MASK_K_IPV4:
            done = form_ipv4(s, n, out);
            break;
        case MASK_K_IPV6:
            done = form_ipv6(s, n, out);
            break;
        case MASK_K_SECRET:
        case MASK_K_JWT:
            break;
        case MASK_K_CUSTOM:
        case MASK_K_COLUMN:
            done = form_generic(s, n, out);
            break;
        }
        if (done) return;
    }
    form_full(name, out);
}
