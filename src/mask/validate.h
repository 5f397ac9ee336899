/*
 * validate.h: internal to src/mask/. The validators that confirm a pattern match before it
 * is masked (validate.c) and the writers of masked forms (form.c). Nothing here knows about
 * vectorscan, the mask_db or the wire: every function looks at one candidate span of bytes.
 *
 * Validators take the exact candidate span and return true when it is a value of their kind.
 * Separators they accept are said per function. Form writers append to a caller-owned buf.
 */
#ifndef SLUICE_MASK_VALIDATE_H
#define SLUICE_MASK_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"

/* What a detector is, which decides its validators and masked forms. The first nine are the
 * built-in value detectors in mask_builtin_detectors[] order. */
enum mask_kind {
    MASK_K_EMAIL,
    MASK_K_CARD,
    MASK_K_SSN,
    MASK_K_PHONE,
    MASK_K_IBAN,
    MASK_K_IPV4,
    MASK_K_IPV6,
    MASK_K_SECRET,
    MASK_K_JWT,
    MASK_K_CUSTOM, /* masking.custom: the admin's pattern and validator */
    MASK_K_COLUMN, /* column-only names (dob, address, column, masking.columns[].detector) */
};

/* ---- validators (validate.c) ---- */

/* Luhn over the digits of s (other bytes skipped); false with fewer than 2 digits. */
bool mask_valid_luhn(const uint8_t *s, size_t n);
/* Card number: 13..19 digits, optionally grouped by single spaces or dashes, a known
 * issuer prefix (2221-2720 and 2200-2204, 30, 34-39, 4, 5, 6) and Luhn; 13 bare digits that
 * are also a valid EAN-13 barcode are not a card. */
bool mask_valid_card(const uint8_t *s, size_t n);
/* Expected IBAN length for a country code (two upper-case letters), 0 when unknown. */
unsigned mask_iban_length(const uint8_t *cc);
/* The known IBAN countries as "AD|AE|...|YE" into out (NUL-terminated); 0 when cap is too
 * small. */
size_t mask_iban_countries(char *out, size_t cap);
/* IBAN: country, two check digits, BBAN of the country's length (single spaces between
 * groups allowed), upper case, mod-97 == 1. */
bool mask_valid_iban(const uint8_t *s, size_t n);
/* Mod-97 over an IBAN-shaped string (letters and digits, spaces skipped), for custom
 * detectors: true when the rearranged number mod 97 is 1. */
bool mask_valid_mod97(const uint8_t *s, size_t n);
/* US SSN: exactly 9 digits (any non-digit bytes skipped); area not 000, 666 or 900-999,
 * group not 00, serial not 0000, and not the published specimen numbers. */
bool mask_valid_ssn(const uint8_t *s, size_t n);
/* NANP number: 10 digits, or 11 with a leading 1; area and exchange start with 2-9. */
bool mask_valid_nanp(const uint8_t *s, size_t n);
/* E.164: '+', then 8..15 digits (separators skipped), the first 1-9; +1 needs 10 more. */
bool mask_valid_e164(const uint8_t *s, size_t n);
/* Length of the E.164 country code that starts digits (1, 2 or 3). */
unsigned mask_e164_cc_len(const uint8_t *digits, size_t n);
/* Dotted quad, 0-255, no leading zeros. */
bool mask_valid_ipv4(const uint8_t *s, size_t n);
/* IPv6 text form (inet_pton), at most 45 bytes; either 8 groups or '::' with 2+ groups. */
bool mask_valid_ipv6(const uint8_t *s, size_t n);
/* Compact JWS/JWE: 3 (or 5) base64url parts; the header decodes to a JSON object with a
 * string "alg". */
bool mask_valid_jwt(const uint8_t *s, size_t n);
/* Email: local part 1..64 bytes of [A-Za-z0-9._%+-] or UTF-8 (no leading, trailing or double dot),
 * '@', 2+ domain labels of 1..63 [A-Za-z0-9-] (no leading/trailing '-'), at most 253, and an
 * alphabetic TLD of 2..24 (or xn--). */
bool mask_valid_email(const uint8_t *s, size_t n);
/* Value of a "password=..." style assignment: not a placeholder (null, ***, <x>, ${x},
 * [REDACTED..]); unquoted values need 6+ bytes and a digit, symbol or mixed case, quoted
 * ones 4+ bytes. */
bool mask_valid_assigned_secret(const uint8_t *s, size_t n, bool quoted);

/* ---- masked forms (form.c) ---- */

struct mask_form_key {
    const uint8_t *key; /* HMAC key for CFG_FORM_HASH */
    size_t len;
};

/*
 * Append the masked form of s (kind `kind`, detector name `name`) in form `form`, which must
 * not be CFG_FORM_DEFAULT (the caller resolves it). Partial forms are shape-tolerant: a value
 * that does not look like its kind gets the full form. Empty s appends nothing.
 *   FULL     "[REDACTED:<name>]"
 *   HASH     "h:" + 16 hex digits of HMAC-SHA-256(key, normalised s)
 *   PARTIAL  email a***@example.com, card ****-****-****-4242, ssn ***-**-6789,
 *            phone +1 ***-***-1234 (country code kept when known), iban DE89****3000,
 *            ipv4 10.*.*.*, ipv6 2001::*, secret and jwt the full form, others: every
 *            letter and digit but the last 4 starred when there are 8 or more, else full.
 */
void mask_form_write(const struct mask_form_key *key, enum mask_kind kind, const char *name,
                     enum cfg_mask_form form, const uint8_t *s, size_t n, struct buf *out);

/* The detector's own form when nothing overrides it. */
enum cfg_mask_form mask_kind_default_form(enum mask_kind kind);

#endif
