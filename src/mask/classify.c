/*
 * classify.c: the column-name classifier of the row rewriter (rows.c). It answers one
 * question: does a column's name say that every value in it is sensitive, and of which kind
 * (email, ssn, phone, card, iban, secret, date of birth, postal address)? Pure code over a
 * string; type OIDs, column rules and exemptions are rows.c's business.
 *
 * A name is split into lower-case words (on '_', '-', '.', spaces, camelCase and letter/digit
 * boundaries). Category words ("email", "ssn", "phone", "password", "token", "address", ...)
 * and a few two-word combinations ("credit card", "card number", "api key", "social security",
 * "date of birth") mark a category; compound words that end in a category word count too
 * ("useremail", "accesstoken", "dbpassword"). Words that turn the name into metadata about the
 * value cancel it: after the last category word ("email_verified", "token_type",
 * "password_changed_at", "phone_country_code", "card_last4", "address_id") or as a prefix
 * before the first one ("is_email", "num_phones", "has_password"). Words that merely contain
 * a category word are not it: "tokenizer_name", "secretary", "telemetry", "dashboard_card".
 * Ambiguous short words need a companion: "card" alone or with number/credit/debit, "cc"
 * only with number, "mobile"/"tel"/"fax" alone or with number, "key" only after api, secret,
 * private, access and the like. When several categories appear the most specific wins
 * (secret > card > ssn > iban > email > phone > dob > address: "email_address" is an email,
 * "email_token" a secret). "ip_address" and "mac_address" are not postal addresses (the
 * by-value scan finds IP addresses).
 *
 * Being conservative costs little: a column that is not classified is still scanned by value.
 */
#include <ctype.h>
#include <string.h>

#include "mask/mask.h"

#define MAX_WORDS 24
#define MAX_WORD 40
#define MAX_NAME 256

struct words {
    unsigned n;
    char w[MAX_WORDS][MAX_WORD];
};

static bool is_sep(unsigned char c)
{
    return !isalnum(c) && c < 0x80;
}

/* Split name into lower-case words; bytes >= 0x80 stay inside words. */
static void words_split(const char *name, struct words *ws)
{
    ws->n = 0;
    size_t len = strnlen(name, MAX_NAME);
    size_t i = 0;
    while (i < len && ws->n < MAX_WORDS) {
        while (i < len && is_sep((unsigned char)name[i]))
            i++;
        if (i >= len) break;
        char *w = ws->w[ws->n];
        size_t k = 0;
        unsigned char prev = 0;
        while (i < len && !is_sep((unsigned char)name[i])) {
            unsigned char c = (unsigned char)name[i];
            if (k > 0) {
                bool lower_to_upper = islower(prev) && isupper(c);
                bool digit_edge = (isdigit(prev) != 0) != (isdigit(c) != 0);
                if (lower_to_upper || digit_edge) break;
            }
            if (k + 1 < MAX_WORD) w[k++] = (char)tolower(c);
            prev = c;
            i++;
        }
        w[k] = 0;
        ws->n++;
    }
}

static bool in_list(const char *w, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(w, *list) == 0) return true;
    return false;
}

static bool ends_with(const char *w, const char *suffix)
{
    size_t a = strlen(w), b = strlen(suffix);
    return a > b && memcmp(w + a - b, suffix, b) == 0;
}

static bool starts_with(const char *w, const char *prefix)
{
    size_t b = strlen(prefix);
    return strlen(w) > b && memcmp(w, prefix, b) == 0;
}

/* Words after the last category word that make the name describe the value, not hold it. */
static const char *const neg_after[] = {
    "at",       "on",         "id",       "ids",        "uuid",       "count",       "cnt",
    "counts",   "total",      "type",     "types",      "kind",       "status",      "state",
    "flag",     "flags",      "enabled",  "disabled",   "verified",   "confirmed",   "validated",
    "valid",    "sent",       "opened",   "clicked",    "bounced",    "bounce",      "opt",
    "optin",    "optout",     "consent",  "subscribed", "preference", "preferences", "pref",
    "prefs",    "frequency",  "template", "subject",    "body",       "format",      "domain",
    "provider", "server",     "host",     "port",       "country",    "prefix",      "suffix",
    "ext",      "extension",  "brand",    "network",    "issuer",     "last",        "exp",
    "expiry",   "expires",    "expired",  "expiration", "month",      "year",        "length",
    "len",      "size",       "limit",    "max",        "min",        "policy",      "strength",
    "changed",  "change",     "updated",  "created",    "modified",   "version",     "label",
    "visible",  "visibility", "required", "attempts",   "retries",    "source",      "scope",
    "scopes",   "used",       "usage",    "rotation",   "age",        "algorithm",   "algo",
    "place",    NULL,
};

/* Words before the first category word that make the name a question or a quantity. */
static const char *const neg_before[] = {
    "is",  "has",    "num",   "n",   "no",   "count", "cnt",  "total", "max",  "min",
    "can", "should", "needs", "use", "uses", "show",  "hide", "allow", "send", NULL,
};

static bool is_number_word(const char *w)
{
    static const char *const nums[] = {"number", "num", "no", "nr", "nbr", NULL};
    return in_list(w, nums);
}

/* The category starting at word i (its span's last word in *last), or MASK_NAME_NONE. */
static enum mask_name_class word_class(const struct words *ws, unsigned i, unsigned *last)
{
    const char *w = ws->w[i];
    const char *next = i + 1 < ws->n ? ws->w[i + 1] : "";
    const char *prev = i > 0 ? ws->w[i - 1] : "";
    bool alone = ws->n == 1;
    *last = i;

    static const char *const email[] = {"email",     "emails",      "mail", "emailaddress",
                                        "emailaddr", "mailaddress", NULL};
    static const char *const ssn[] = {"ssn", "ssns", "socialsecuritynumber", "socialsecurity",
                                      NULL};
    static const char *const phone[] = {"phone",     "phones",      "phonenumber", "phoneno",
                                        "telephone", "telefon",     "telno",       "cellphone",
                                        "msisdn",    "mobilephone", NULL};
    static const char *const dob[] = {"dob", "birthdate", "birthday", "dateofbirth", "birth", NULL};
    static const char *const card[] = {"creditcard", "cardnumber", "cardno",  "ccnumber",
                                       "ccnum",      "debitcard",  "cardnum", NULL};
    static const char *const secret[] = {
        "password",   "passwords",   "passwd",     "pwd",       "passphrase", "secret",
        "secrets",    "token",       "tokens",     "apikey",    "cvv",        "cvc",
        "credential", "credentials", "privatekey", "secretkey", "accesskey",  NULL};
    static const char *const key_owner[] = {"api",        "secret", "private", "access",  "signing",
                                            "encryption", "enc",    "ssh",     "license", "licence",
                                            "auth",       "client", "master",  "session", "hmac",
                                            "aes",        "sign",   "webhook", NULL};
    static const char *const address[] = {"address",       "addresses", "street",
                                          "streetaddress", "addr",      "homeaddress",
                                          "postaladdress", NULL};
    static const char *const not_postal[] = {"ip",     "mac",    "ipv4", "ipv6",   "remote",
                                             "client", "server", "host", "bind",   "listen",
                                             "wallet", "web",    "url",  "memory", NULL};
    static const char *const card_owner[] = {"credit", "debit", "payment", "bank", NULL};

    if (in_list(w, secret)) return MASK_NAME_SECRET;
    if (strcmp(w, "key") == 0 && in_list(prev, key_owner)) return MASK_NAME_SECRET;
    if (strcmp(w, "pass") == 0 && strcmp(next, "phrase") == 0) {
        *last = i + 1;
        return MASK_NAME_SECRET;
    }
    if (ends_with(w, "password") || ends_with(w, "token") || ends_with(w, "secret") ||
        ends_with(w, "apikey"))
        return MASK_NAME_SECRET;

    if (in_list(w, card)) return MASK_NAME_CARD;
    if (strcmp(w, "card") == 0) {
        if (is_number_word(next)) {
            *last = i + 1;
            return MASK_NAME_CARD;
        }
        if (alone || in_list(prev, card_owner)) return MASK_NAME_CARD;
    }
    if ((strcmp(w, "cc") == 0 || strcmp(w, "pan") == 0) && is_number_word(next)) {
        *last = i + 1;
        return MASK_NAME_CARD;
    }
    if (strcmp(w, "pan") == 0 && alone) return MASK_NAME_CARD;

    if (in_list(w, ssn)) return MASK_NAME_SSN;
    if (strcmp(w, "social") == 0 && strcmp(next, "security") == 0) {
        *last = i + 1;
        if (i + 2 < ws->n && is_number_word(ws->w[i + 2])) *last = i + 2;
        return MASK_NAME_SSN;
    }

    if (strcmp(w, "iban") == 0 || strcmp(w, "ibans") == 0) return MASK_NAME_IBAN;

    if (in_list(w, email) || starts_with(w, "email") || ends_with(w, "email"))
        return MASK_NAME_EMAIL;

    if (in_list(w, phone) || ends_with(w, "phone")) {
        if (is_number_word(next)) *last = i + 1;
        return MASK_NAME_PHONE;
    }
    if (strcmp(w, "mobile") == 0 || strcmp(w, "tel") == 0 || strcmp(w, "fax") == 0 ||
        strcmp(w, "cell") == 0) {
        if (is_number_word(next)) {
            *last = i + 1;
            return MASK_NAME_PHONE;
        }
        if (alone && strcmp(w, "cell") != 0) return MASK_NAME_PHONE;
    }

    if (in_list(w, dob)) return MASK_NAME_DOB;

    if (in_list(w, address) || ends_with(w, "address")) {
        if (in_list(prev, not_postal) || starts_with(w, "ip") || starts_with(w, "mac"))
            return MASK_NAME_NONE;
        return MASK_NAME_ADDRESS;
    }
    return MASK_NAME_NONE;
}

/* Higher wins when a name holds several categories. */
static int class_rank(enum mask_name_class c)
{
    switch (c) {
    case MASK_NAME_SECRET:
        return 8;
    case MASK_NAME_CARD:
        return 7;
    case MASK_NAME_SSN:
        return 6;
    case MASK_NAME_IBAN:
        return 5;
    case MASK_NAME_EMAIL:
        return 4;
    case MASK_NAME_PHONE:
        return 3;
    case MASK_NAME_DOB:
        return 2;
    case MASK_NAME_ADDRESS:
        return 1;
    case MASK_NAME_NONE:
        break;
    }
    return 0;
}

enum mask_name_class mask_classify_name(const char *name)
{
    if (!name) return MASK_NAME_NONE;
    struct words ws;
    words_split(name, &ws);
    enum mask_name_class best = MASK_NAME_NONE;
    int first = -1, last_end = -1;
    for (unsigned i = 0; i < ws.n; i++) {
        unsigned last;
        enum mask_name_class c = word_class(&ws, i, &last);
        if (c == MASK_NAME_NONE) continue;
        if (first < 0) first = (int)i;
        last_end = (int)last;
        if (class_rank(c) > class_rank(best)) best = c;
        i = last;
    }
    if (best == MASK_NAME_NONE) return best;
    for (int i = 0; i < first; i++)
        if (in_list(ws.w[i], neg_before)) return MASK_NAME_NONE;
    for (unsigned i = (unsigned)last_end + 1; i < ws.n; i++)
        if (in_list(ws.w[i], neg_after)) return MASK_NAME_NONE;
    return best;
}

const char *mask_name_class_detector(enum mask_name_class c)
{
    switch (c) {
    case MASK_NAME_EMAIL:
        return "email";
    case MASK_NAME_SSN:
        return "ssn";
    case MASK_NAME_PHONE:
        return "phone";
    case MASK_NAME_CARD:
        return "credit_card";
    case MASK_NAME_IBAN:
        return "iban";
    case MASK_NAME_SECRET:
        return "secret";
    case MASK_NAME_DOB:
        return "dob";
    case MASK_NAME_ADDRESS:
        return "address";
    case MASK_NAME_NONE:
        break;
    }
    return NULL;
}
