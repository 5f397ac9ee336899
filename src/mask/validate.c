/*
 * validate.c: validators that confirm a candidate span found by the scanner (detect.c)
 * before it is masked: Luhn and issuer prefixes for cards, mod-97 with per-country lengths
 * for IBANs, SSN area/group/serial rules, NANP and E.164 phone shapes, IPv4 and IPv6, JWT
 * structure, email syntax and the "password=..." value heuristics.
 *
 * Pure functions over bytes; they neither allocate (but the JWT header check) nor look
 * outside the span they are given. Finding the span is detect.c's job.
 */
#include "mask/validate.h"

#include <arpa/inet.h>
#include <string.h>

#include <cjson/cJSON.h>

static inline bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_upper(uint8_t c)
{
    return c >= 'A' && c <= 'Z';
}

static inline bool is_lower(uint8_t c)
{
    return c >= 'a' && c <= 'z';
}

static inline bool is_alpha(uint8_t c)
{
    return is_upper(c) || is_lower(c);
}

static inline bool is_alnum(uint8_t c)
{
    return is_alpha(c) || is_digit(c);
}

/* Copy up to max digits of s into d; returns the count (max+1 when there were more). */
static size_t digits_of(const uint8_t *s, size_t n, uint8_t *d, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i])) continue;
        if (k == max) return max + 1;
        d[k++] = s[i];
    }
    return k;
}

bool mask_valid_luhn(const uint8_t *s, size_t n)
{
    unsigned sum = 0, k = 0;
    for (size_t i = n; i-- > 0;) {
        if (!is_digit(s[i])) continue;
        unsigned d = s[i] - '0';
        if (k++ & 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    return k >= 2 && sum % 10 == 0;
}

static unsigned num_prefix(const uint8_t *d, unsigned k)
{
    unsigned v = 0;
    for (unsigned i = 0; i < k; i++)
        v = v * 10 + (d[i] - '0');
    return v;
}

bool mask_valid_card(const uint8_t *s, size_t n)
{
    uint8_t d[19];
    for (size_t i = 0; i < n; i++) {
        if (is_digit(s[i])) continue;
        /* single separators between digits only */
        if ((s[i] != ' ' && s[i] != '-') || i == 0 || i + 1 == n || !is_digit(s[i - 1]) ||
            !is_digit(s[i + 1]))
            return false;
    }
    size_t k = digits_of(s, n, d, sizeof d);
    if (k < 13 || k > 19) return false;
    bool brand;
    switch (d[0]) {
    case '2': {
        unsigned p = num_prefix(d, 4);
        brand = (p >= 2221 && p <= 2720) || (p >= 2200 && p <= 2204);
        break;
    }
    case '3': {
        unsigned p = num_prefix(d, 2);
        brand = p == 30 || (p >= 34 && p <= 39);
        break;
    }
    case '4':
    case '5':
    case '6':
        brand = true;
        break;
    default:
        brand = false;
    }
    if (!brand || !mask_valid_luhn(d, k)) return false;
    /* 13 bare digits that carry a valid EAN-13 check digit are a product barcode far more
     * often than a legacy 13-digit Visa */
    if (k == 13 && n == 13) {
        unsigned sum = 0;
        for (int i = 0; i < 12; i++)
            sum += (unsigned)(d[i] - '0') * (i & 1 ? 3 : 1);
        if ((10 - sum % 10) % 10 == (unsigned)(d[12] - '0')) return false;
    }
    return true;
}

/* ISO 13616 registry lengths (and the few partial-registry countries seen in the wild). */
static const struct {
    char cc[3];
    uint8_t len;
} iban_lengths[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AO", 25}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
    {"BF", 28}, {"BG", 22}, {"BH", 22}, {"BI", 27}, {"BJ", 28}, {"BR", 29}, {"BY", 28}, {"CF", 27},
    {"CG", 27}, {"CH", 21}, {"CI", 28}, {"CM", 27}, {"CR", 22}, {"CV", 25}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"DZ", 26}, {"EE", 20}, {"EG", 29}, {"ES", 24},
    {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GA", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23},
    {"GL", 18}, {"GQ", 27}, {"GR", 27}, {"GT", 28}, {"GW", 25}, {"HN", 28}, {"HR", 21}, {"HU", 28},
    {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IR", 26}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KM", 27},
    {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21},
    {"LY", 25}, {"MA", 28}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MG", 27}, {"MK", 19}, {"ML", 28},
    {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"MZ", 25}, {"NE", 28}, {"NI", 28}, {"NL", 18},
    {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24},
    {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24},
    {"SM", 27}, {"SN", 28}, {"SO", 23}, {"ST", 25}, {"SV", 28}, {"TD", 27}, {"TG", 28}, {"TL", 23},
    {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

unsigned mask_iban_length(const uint8_t *cc)
{
    size_t lo = 0, hi = sizeof iban_lengths / sizeof iban_lengths[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = memcmp(cc, iban_lengths[mid].cc, 2);
        if (c == 0) return iban_lengths[mid].len;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

size_t mask_iban_countries(char *out, size_t cap)
{
    size_t k = 0, n = sizeof iban_lengths / sizeof iban_lengths[0];
    for (size_t i = 0; i < n; i++) {
        if (k + 4 > cap) return 0;
        if (i) out[k++] = '|';
        out[k++] = iban_lengths[i].cc[0];
        out[k++] = iban_lengths[i].cc[1];
    }
    out[k] = 0;
    return k;
}

static unsigned mod97_add(unsigned r, uint8_t c)
{
    if (is_digit(c)) return (r * 10 + (c - '0')) % 97;
    unsigned v = (unsigned)(c - 'A') + 10; /* upper case only */
    return (r * 100 + v) % 97;
}

bool mask_valid_mod97(const uint8_t *s, size_t n)
{
    uint8_t a[40];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == ' ') continue;
        if (is_lower(c)) c = (uint8_t)(c - 'a' + 'A');
        if (!is_alnum(c) || k == sizeof a) return false;
        a[k++] = c;
    }
    if (k < 5) return false;
    unsigned r = 0;
    for (size_t i = 4; i < k; i++)
        r = mod97_add(r, a[i]);
    for (size_t i = 0; i < 4; i++)
        r = mod97_add(r, a[i]);
    return r == 1;
}

bool mask_valid_iban(const uint8_t *s, size_t n)
{
    if (n < 15 || !is_upper(s[0]) || !is_upper(s[1]) || !is_digit(s[2]) || !is_digit(s[3]))
        return false;
    unsigned want = mask_iban_length(s);
    if (!want) return false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            if (i == 0 || i + 1 == n || s[i + 1] == ' ') return false;
            continue;
        }
        if (!is_upper(s[i]) && !is_digit(s[i])) return false;
        k++;
    }
    return k == want && mask_valid_mod97(s, n);
}

bool mask_valid_ssn(const uint8_t *s, size_t n)
{
    uint8_t d[9];
    if (digits_of(s, n, d, 9) != 9) return false;
    unsigned area = num_prefix(d, 3), group = num_prefix(d + 3, 2), serial = num_prefix(d + 5, 4);
    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return false;
    /* specimen numbers printed on sample cards and in advertising */
    if ((area == 78 && group == 5 && serial == 1120) ||
        (area == 219 && group == 9 && serial == 9999))
        return false;
    return true;
}

bool mask_valid_nanp(const uint8_t *s, size_t n)
{
    uint8_t d[11];
    size_t k = digits_of(s, n, d, sizeof d);
    const uint8_t *p = d;
    if (k == 11 && d[0] == '1')
        p = d + 1;
    else if (k != 10)
        return false;
    return p[0] >= '2' && p[3] >= '2';
}

unsigned mask_e164_cc_len(const uint8_t *d, size_t n)
{
    if (n < 3) return 1;
    if (d[0] == '1' || d[0] == '7') return 1;
    unsigned two = num_prefix(d, 2);
    /* zone 2-9 two-digit codes */
    static const unsigned char cc2[] = {20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46,
                                        47, 48, 49, 51, 52, 53, 54, 55, 56, 57, 58, 60, 61, 62, 63,
                                        64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98};
    for (size_t i = 0; i < sizeof cc2; i++)
        if (cc2[i] == two) return 2;
    return 3;
}

bool mask_valid_e164(const uint8_t *s, size_t n)
{
    if (n < 2 || s[0] != '+') return false;
    uint8_t d[16];
    size_t k = digits_of(s + 1, n - 1, d, 15);
    if (k < 8 || k > 15 || d[0] == '0') return false;
    if (d[0] == '1') return k == 11 && d[1] >= '2' && d[4] >= '2';
    return true;
}

bool mask_valid_ipv4(const uint8_t *s, size_t n)
{
    unsigned parts = 0, v = 0, nd = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (nd == 0 || v > 255) return false;
            parts++;
            v = nd = 0;
            continue;
        }
        if (!is_digit(s[i])) return false;
        if (nd == 1 && v == 0) return false; /* leading zero */
        if (++nd > 3) return false;
        v = v * 10 + (s[i] - '0');
    }
    return parts == 4;
}

bool mask_valid_ipv6(const uint8_t *s, size_t n)
{
    char tmp[46];
    if (n < 3 || n > 45) return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    unsigned char addr[16];
    if (inet_pton(AF_INET6, tmp, addr) != 1) return false;
    bool compressed = strstr(tmp, "::") != NULL;
    unsigned groups = 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || s[i - 1] == ':') && s[i] != ':') groups++;
    return compressed ? groups >= 2 : true;
}

static int b64url_val(uint8_t c)
{
    if (is_upper(c)) return c - 'A';
    if (is_lower(c)) return c - 'a' + 26;
    if (is_digit(c)) return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decode base64url without padding into out (cap bytes); returns length or -1. */
static long b64url_decode(const uint8_t *s, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 == 1) return -1;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val(s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (k == cap) return -1;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)k;
}

bool mask_valid_jwt(const uint8_t *s, size_t n)
{
    size_t dots[5], nd = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (nd == 5) return false;
            dots[nd++] = i;
        } else if (b64url_val(s[i]) < 0) {
            return false;
        }
    }
    if (nd != 2 && nd != 4) return false;
    if (dots[0] < 8 || dots[1] == dots[0] + 1) return false; /* header and payload non-empty */
    uint8_t hdr[1024];
    long hl = b64url_decode(s, dots[0], hdr, sizeof hdr);
    if (hl < 2 || hdr[0] != '{') return false;
    cJSON *j = cJSON_ParseWithLength((const char *)hdr, (size_t)hl);
    bool ok = j && cJSON_IsObject(j) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "alg"));
    cJSON_Delete(j);
    return ok;
}

bool mask_valid_email(const uint8_t *s, size_t n)
{
    const uint8_t *at = memchr(s, '@', n);
    if (!at) return false;
    size_t ll = (size_t)(at - s), dl = n - ll - 1;
    if (ll < 1 || ll > 64 || dl < 4 || dl > 253) return false;
    if (s[0] == '.' || s[ll - 1] == '.') return false;
    for (size_t i = 0; i < ll; i++) {
        uint8_t c = s[i];
        if (!(is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-' || c >= 0x80))
            return false;
        if (c == '.' && s[i + 1] == '.') return false;
    }
    const uint8_t *d = at + 1;
    size_t labels = 0, lab_start = 0;
    for (size_t i = 0; i <= dl; i++) {
        if (i == dl || d[i] == '.') {
            size_t l = i - lab_start;
            if (l < 1 || l > 63 || d[lab_start] == '-' || d[i - 1] == '-') return false;
            labels++;
            if (i == dl) {
                /* the TLD */
                if (l >= 4 && memcmp(d + lab_start, "xn--", 4) == 0) break;
                if (l < 2 || l > 24) return false;
                for (size_t j = lab_start; j < i; j++)
                    if (!is_alpha(d[j])) return false;
            }
            lab_start = i + 1;
            continue;
        }
        if (!is_alnum(d[i]) && d[i] != '-') return false;
    }
    return labels >= 2;
}

static bool ieq(const uint8_t *s, size_t n, const char *w)
{
    size_t l = strlen(w);
    if (n != l) return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (is_upper(c)) c = (uint8_t)(c - 'A' + 'a');
        if (c != (uint8_t)w[i]) return false;
    }
    return true;
}

bool mask_valid_assigned_secret(const uint8_t *s, size_t n, bool quoted)
{
    if (n < (quoted ? 4u : 6u)) return false;
    static const char *const placeholders[] = {
        "null",     "none",     "nil",      "true",   "false",     "empty",
        "redacted", "required", "optional", "hidden", "undefined", "changeme_placeholder"};
    for (size_t i = 0; i < sizeof placeholders / sizeof placeholders[0]; i++)
        if (ieq(s, n, placeholders[i])) return false;
    if (s[0] == '<' || s[0] == '[' || s[0] == '{' || s[0] == '%' || s[0] == '?' ||
        (s[0] == '$' && n > 1 && (s[1] == '{' || is_digit(s[1]) || s[1] == '('))) {
        return false; /* <placeholder>, [REDACTED], ${VAR}, %s, ?, $1 */
    }
    bool all_stars = true, digit = false, sym = false, up = false, low = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c != '*' && c != 'x' && c != 'X' && c != '.') all_stars = false;
        if (is_digit(c))
            digit = true;
        else if (is_upper(c))
            up = up || i > 0; /* a capitalised word ("Required") is not mixed case */
        else if (is_lower(c))
            low = true;
        else
            sym = true;
    }
    if (all_stars) return false;
    return quoted || digit || sym || (up && low);
}
