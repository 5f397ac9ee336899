/*
 * event.c: the audit event model: kind names, the copy audit_emit() queues, and the
 * canonical JSON body that is stored, hashed and shipped.
 *
 * The body is one JSON object with keys in a fixed order, strings escaped as JSON requires
 * (bytes that are not UTF-8 become U+FFFD), empty fields left out, and "prev_hash" last. It
 * is written once and stored verbatim: verification hashes the stored bytes, so nothing ever
 * has to re-serialize an event identically. The JSON line adds ,"hash":"..." before the
 * closing brace. No I/O here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"
#include "core/buf.h"

/* ---- sbuf */

void sbuf_grow(struct sbuf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sbuf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sbuf_add(b, big, (size_t)n);
    free(big);
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- kinds */

static const char *const kind_names[AUDIT_KIND_COUNT] = {
    [AUDIT_SESSION_START] = "session_start",
    [AUDIT_SESSION_END] = "session_end",
    [AUDIT_AUTH_FAILURE] = "auth_failure",
    [AUDIT_STATEMENT] = "statement",
    [AUDIT_STATEMENT_END] = "statement_end",
    [AUDIT_CONFIG_RELOAD] = "config_reload",
    [AUDIT_APPROVAL_REQUESTED] = "approval_requested",
    [AUDIT_APPROVAL_APPROVED] = "approval_approved",
    [AUDIT_APPROVAL_DENIED] = "approval_denied",
    [AUDIT_APPROVAL_EXPIRED] = "approval_expired",
    [AUDIT_GRANT_USED] = "grant_used",
    [AUDIT_GRANT_EXHAUSTED] = "grant_exhausted",
    [AUDIT_EVENTS_LOST] = "events_lost",
    [AUDIT_APPROVAL_NOTIFIED] = "approval_notified",
};

const char *audit_kind_name(enum audit_kind kind)
{
    return (unsigned)kind < AUDIT_KIND_COUNT ? kind_names[kind] : "unknown";
}

int audit_kind_from_name(const char *name)
{
    for (int i = 0; i < AUDIT_KIND_COUNT; i++)
        if (strcmp(kind_names[i], name) == 0) return i;
    return -1;
}

/* ---- time */

int64_t audit_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void audit_time_format(int64_t time_us, char out[32])
{
    time_t sec = (time_t)(time_us / 1000000);
    long us = (long)(time_us % 1000000);
    if (us < 0) {
        us += 1000000;
        sec--;
    }
    static __thread time_t cached_sec = -1;
    static __thread char cached[24];
    static __thread size_t cached_len;
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        cached_len = strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    memcpy(out, cached, cached_len);
    char *p = out + cached_len;
    *p++ = '.';
    for (int i = 5; i >= 0; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    p[6] = 'Z';
    p[7] = 0;
}

int audit_time_parse(const char *s, int64_t now_us, int64_t *out_us)
{
    char *end;
    if (!s || !*s) return -1;
    unsigned long long n = strtoull(s, &end, 10);
    if (end != s && end[0] && !end[1] && strchr("smhdw", end[0])) {
        static const int64_t mult[] = {1, 60, 3600, 86400, 604800};
        int64_t m = mult[strchr("smhdw", end[0]) - "smhdw"];
        *out_us = now_us - (int64_t)n * m * 1000000;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%d", &tm);
    if (!p) return -1;
    long us = 0;
    if (*p == 'T' || *p == ' ') {
        p = strptime(p + 1, "%H:%M", &tm);
        if (!p) return -1;
        if (*p == ':') {
            p = strptime(p + 1, "%S", &tm);
            if (!p) return -1;
            if (*p == '.') {
                p++;
                long scale = 100000;
                while (*p >= '0' && *p <= '9') {
                    us += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                }
            }
        }
    }
    if (*p == 'Z') p++;
    if (*p) return -1;
    *out_us = (int64_t)timegm(&tm) * 1000000 + us;
    return 0;
}

/* ---- the queued copy */

/* Every string field of struct audit_event, for copying. */
static const size_t str_fields[] = {
    offsetof(struct audit_event, instance),
    offsetof(struct audit_event, identity),
    offsetof(struct audit_event, identity_kind),
    offsetof(struct audit_event, groups),
    offsetof(struct audit_event, auth_method),
    offsetof(struct audit_event, client_addr),
    offsetof(struct audit_event, application_name),
    offsetof(struct audit_event, target),
    offsetof(struct audit_event, statement),
    offsetof(struct audit_event, fingerprint),
    offsetof(struct audit_event, command),
    offsetof(struct audit_event, class_),
    offsetof(struct audit_event, tables),
    offsetof(struct audit_event, decision),
    offsetof(struct audit_event, rule),
    offsetof(struct audit_event, request_id),
    offsetof(struct audit_event, grant_id),
    offsetof(struct audit_event, actor),
    offsetof(struct audit_event, masked),
    offsetof(struct audit_event, digest),
    offsetof(struct audit_event, sqlstate),
    offsetof(struct audit_event, detail),
};
#define N_STR_FIELDS (sizeof str_fields / sizeof str_fields[0])

static const char **field_at(struct audit_event *ev, size_t off)
{
    return (const char **)((char *)ev + off);
}

struct audit_rec *audit_rec_new(const struct audit_event *ev)
{
    return audit_rec_reuse(NULL, ev, 0);
}

/* spare when it has room for total bytes, else a new record with room for at least min_room
 * (spare is freed); emptied either way. */
static struct audit_rec *rec_with_room(struct audit_rec *spare, size_t total, size_t min_room)
{
    struct audit_rec *r = spare;
    if (!r || r->room < total) {
        free(spare);
        size_t room = total > min_room ? total : min_room;
        r = xmalloc(sizeof *r + room);
        r->room = room;
    }
    r->seq = 0;
    atomic_init(&r->ready, true);
    r->body = NULL;
    r->body_len = 0;
    r->ev = NULL;
    return r;
}

/* The event's time, now when it has none. */
static int64_t time_of(const struct audit_event *ev)
{
    return ev->time_us ? ev->time_us : audit_now_us();
}

_Static_assert(sizeof(struct audit_rec) % _Alignof(struct audit_event) == 0,
               "the copy of an event follows its record");

struct audit_rec *audit_rec_reuse(struct audit_rec *spare, const struct audit_event *ev,
                                  size_t min_room)
{
    size_t lens[N_STR_FIELDS], total = sizeof *ev;
    for (size_t i = 0; i < N_STR_FIELDS; i++) {
        const char *s = *field_at((struct audit_event *)ev, str_fields[i]);
        lens[i] = s && *s ? strlen(s) + 1 : 0;
        total += lens[i];
    }
    struct audit_rec *r = rec_with_room(spare, total, min_room);
    struct audit_event *c = r->ev = (struct audit_event *)(r + 1);
    *c = *ev;
    c->time_us = time_of(ev);
    c->session_json = c->statement_json = (struct audit_json){0}; /* the caller's memory */
    char *p = (char *)(c + 1);
    for (size_t i = 0; i < N_STR_FIELDS; i++) {
        const char **dst = field_at(c, str_fields[i]);
        if (!lens[i]) {
            *dst = NULL;
            continue;
        }
        memcpy(p, *dst, lens[i]);
        *dst = p;
        p += lens[i];
    }
    r->kind = c->kind;
    r->time_us = c->time_us;
    r->identity = c->identity;
    r->decision = c->decision;
    return r;
}

struct audit_rec *audit_rec_reserve(struct audit_rec *spare, const struct audit_event *ev,
                                    size_t body_room, size_t min_room)
{
    size_t il = ev->identity && *ev->identity ? strlen(ev->identity) + 1 : 0;
    size_t dl = ev->decision && *ev->decision ? strlen(ev->decision) + 1 : 0;
    size_t total = il + dl + body_room;
    struct audit_rec *r = rec_with_room(spare, total, min_room);
    /* only what the writer reads besides the body: kind, time, identity, decision */
    r->kind = ev->kind;
    r->time_us = time_of(ev);
    char *p = (char *)(r + 1);
    r->identity = il ? memcpy(p, ev->identity, il) : NULL;
    p += il;
    r->decision = dl ? memcpy(p, ev->decision, dl) : NULL;
    p += dl;
    r->body = p;
    return r;
}

/* ---- the journal record (journal.c): numbers in host byte order, each string as a 32-bit
 * length (0 = none) and its bytes; the caller frames and checks it. */

struct rec_numbers {
    uint32_t kind;
    int64_t time_us;
    uint64_t session_id, ref, duration_us, rows, bytes;
};

void audit_rec_encode(const struct audit_event *ev, struct sbuf *out)
{
    struct rec_numbers n = {(uint32_t)ev->kind, ev->time_us, ev->session_id, ev->ref,
                            ev->duration_us,    ev->rows,    ev->bytes};
    size_t total = sizeof n + N_STR_FIELDS * sizeof(uint32_t);
    for (size_t i = 0; i < N_STR_FIELDS; i++) {
        const char *s = *field_at((struct audit_event *)ev, str_fields[i]);
        total += s ? strlen(s) : 0;
    }
    if (out->len + total + 1 > out->cap) sbuf_grow(out, total); /* one allocation */
    sbuf_add(out, (const char *)&n, sizeof n);
    for (size_t i = 0; i < N_STR_FIELDS; i++) {
        const char *s = *field_at((struct audit_event *)ev, str_fields[i]);
        uint32_t len = s ? (uint32_t)strlen(s) : 0;
        sbuf_add(out, (const char *)&len, sizeof len);
        if (len) sbuf_add(out, s, len);
    }
}

struct audit_rec *audit_rec_decode(const char *p, size_t len)
{
    struct rec_numbers n;
    if (len < sizeof n) return NULL;
    memcpy(&n, p, sizeof n);
    if (n.kind >= AUDIT_KIND_COUNT) return NULL;
    struct audit_event ev = {.kind = (enum audit_kind)n.kind,
                             .time_us = n.time_us,
                             .session_id = n.session_id,
                             .ref = n.ref,
                             .duration_us = n.duration_us,
                             .rows = n.rows,
                             .bytes = n.bytes};
    /* The strings are NUL-terminated in a scratch copy, then copied once more by
     * audit_rec_new() into the record's own allocation. */
    char *scratch = xmalloc(len + N_STR_FIELDS);
    char *w = scratch;
    size_t off = sizeof n;
    for (size_t i = 0; i < N_STR_FIELDS; i++) {
        uint32_t slen;
        if (len - off < sizeof slen) goto bad;
        memcpy(&slen, p + off, sizeof slen);
        off += sizeof slen;
        if (slen > len - off) goto bad;
        if (slen) {
            memcpy(w, p + off, slen);
            w[slen] = 0;
            *field_at(&ev, str_fields[i]) = w;
            w += slen + 1;
            off += slen;
        }
    }
    if (off != len) goto bad;
    struct audit_rec *r = audit_rec_new(&ev);
    free(scratch);
    return r;
bad:
    free(scratch);
    return NULL;
}

/* ---- JSON */

/* Length of a valid UTF-8 sequence at s (n bytes available), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
        c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
        c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return len;
}

/* Bytes written as they are inside a JSON string: printable ASCII but '"' and '\'. */
static const unsigned char json_plain[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7e] = 1,
};

/* Whether the 8 bytes at p are all plain (json_plain), tested a word at a time: no byte
 * below 0x20, none with the high bit, none equal to '"', '\\' or 0x7f. */
static bool json_plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t x, q, bs, del;
    memcpy(&x, p, sizeof x);
    q = x ^ (ones * '"');
    bs = x ^ (ones * '\\');
    del = x ^ (ones * 0x7f);
    /* (v - ones) & ~v has a high bit set where a byte of v is zero (exact as a whole when no
     * byte of x has its high bit, which x & high rules out) */
    uint64_t bad = (x - ones * 0x20) & ~x;
    bad |= (q - ones) & ~q;
    bad |= (bs - ones) & ~bs;
    bad |= (del - ones) & ~del;
    return ((bad | x) & high) == 0;
}

/* s[0..n) as a JSON string. */
static void json_strn(struct sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, start = 0;
    sbuf_add(b, "\"", 1);
    while (i < n) {
        if (n - i >= 8 && json_plain8(p + i)) {
            i += 8;
            continue;
        }
        unsigned c = p[i];
        if (json_plain[c]) {
            i++;
            continue;
        }
        size_t u = c >= 0x80 ? utf8_len(p + i, n - i) : 0;
        if (u) {
            i += u;
            continue;
        }
        sbuf_add(b, s + start, i - start);
        switch (c) {
        case '"':
            sbuf_add(b, "\\\"", 2);
            break;
        case '\\':
            sbuf_add(b, "\\\\", 2);
            break;
        case '\n':
            sbuf_add(b, "\\n", 2);
            break;
        case '\r':
            sbuf_add(b, "\\r", 2);
            break;
        case '\t':
            sbuf_add(b, "\\t", 2);
            break;
        default:
            if (c >= 0x80) {
                sbuf_add(b, "\\ufffd", 6);
            } else {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                sbuf_add(b, e, 6);
            }
        }
        start = ++i;
    }
    sbuf_add(b, s + start, i - start);
    sbuf_add(b, "\"", 1);
}

static void json_str(struct sbuf *b, const char *s)
{
    json_strn(b, s, strlen(s));
}

/* v in decimal at the end of tmp: returns where it starts. */
static size_t u64_decimal(uint64_t v, char tmp[24])
{
    size_t i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return i;
}

static void add_u64(struct sbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = u64_decimal(v, tmp);
    sbuf_add(b, tmp + i, sizeof tmp - i);
}

/* The fields below take their key as `,"key":` with its length: KEY("name") makes both. */
#define KEY(k) ",\"" k "\":", sizeof(",\"" k "\":") - 1

static void field_str(struct sbuf *b, const char *k, size_t klen, const char *v)
{
    if (!v || !*v) return;
    sbuf_add(b, k, klen);
    json_str(b, v);
}

static void field_u64(struct sbuf *b, const char *k, size_t klen, uint64_t v, bool always)
{
    if (!v && !always) return;
    sbuf_add(b, k, klen);
    add_u64(b, v);
}

/* A list given as a comma list or a JSON array of strings, written as a JSON array. */
static void field_list(struct sbuf *b, const char *k, size_t klen, const char *v)
{
    if (!v || !*v) return;
    sbuf_add(b, k, klen);
    sbuf_add(b, "[", 1);
    const char *p = v;
    while (*p == ' ')
        p++;
    if (*p == '[') {
        cJSON *arr = cJSON_Parse(p);
        if (arr && cJSON_IsArray(arr)) {
            int first = 1;
            cJSON *it;
            cJSON_ArrayForEach(it, arr)
            {
                if (!cJSON_IsString(it)) continue;
                if (!first) sbuf_add(b, ",", 1);
                json_str(b, it->valuestring);
                first = 0;
            }
            cJSON_Delete(arr);
            sbuf_add(b, "]", 1);
            return;
        }
        cJSON_Delete(arr);
    }
    int first = 1;
    while (*v) {
        const char *e = strchr(v, ',');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        while (n && *v == ' ') {
            v++;
            n--;
        }
        while (n && v[n - 1] == ' ')
            n--;
        if (n) {
            if (!first) sbuf_add(b, ",", 1);
            json_strn(b, v, n);
            first = 0;
        }
        if (!e) break;
        v = e + 1;
    }
    sbuf_add(b, "]", 1);
}

/* Masked counts: a JSON object of numbers, rewritten canonically; anything else as a string. */
static void field_masked(struct sbuf *b, const char *v)
{
    if (!v || !*v) return;
    cJSON *o = cJSON_Parse(v);
    if (o && cJSON_IsObject(o)) {
        sbuf_add(b, KEY("masked"));
        sbuf_add(b, "{", 1);
        int first = 1;
        cJSON *it;
        cJSON_ArrayForEach(it, o)
        {
            if (!cJSON_IsNumber(it) || !it->string) continue;
            if (!first) sbuf_add(b, ",", 1);
            json_str(b, it->string);
            sbuf_add(b, ":", 1);
            add_u64(b, it->valuedouble > 0 ? (uint64_t)it->valuedouble : 0);
            first = 0;
        }
        sbuf_add(b, "}", 1);
    } else {
        field_str(b, KEY("masked"), v);
    }
    cJSON_Delete(o);
}

/* A body: its head (kind, then the session's and the statement's fields, which many events
 * repeat, so that their hash state can be kept: audit_head_hash), seq, the event's own fields,
 * prev_hash. */
#define BODY_OPEN "{\"kind\":\""
#define BODY_SEQ ",\"seq\":"
#define BODY_PREV ",\"prev_hash\":\""
#define BODY_CLOSE "\"}"

void audit_fields_session(const struct audit_event *ev, const char *default_instance,
                          struct sbuf *out)
{
    field_str(out, KEY("instance"), ev->instance ? ev->instance : default_instance);
    field_u64(out, KEY("session"), ev->session_id, false);
    field_str(out, KEY("identity"), ev->identity);
    field_str(out, KEY("identity_kind"), ev->identity_kind);
    field_list(out, KEY("groups"), ev->groups);
    field_str(out, KEY("auth_method"), ev->auth_method);
    field_str(out, KEY("client_addr"), ev->client_addr);
    field_str(out, KEY("application_name"), ev->application_name);
    field_str(out, KEY("target"), ev->target);
}

void audit_fields_statement(const struct audit_event *ev, struct sbuf *out)
{
    field_str(out, KEY("statement"), ev->statement);
    field_str(out, KEY("fingerprint"), ev->fingerprint);
    field_str(out, KEY("command"), ev->command);
    field_str(out, KEY("class"), ev->class_);
    field_list(out, KEY("tables"), ev->tables);
}

void audit_event_head(const struct audit_event *ev, const char *default_instance, struct sbuf *out)
{
    sbuf_add(out, BODY_OPEN, sizeof BODY_OPEN - 1);
    sbuf_adds(out, audit_kind_name(ev->kind));
    sbuf_add(out, "\"", 1);
    if (ev->session_json.p)
        sbuf_add(out, ev->session_json.p, ev->session_json.len);
    else
        audit_fields_session(ev, default_instance, out);
    if (ev->statement_json.p)
        sbuf_add(out, ev->statement_json.p, ev->statement_json.len);
    else
        audit_fields_statement(ev, out);
}

void audit_event_fields(const struct audit_event *ev, struct sbuf *out)
{
    char t[32];
    audit_time_format(ev->time_us, t);
    bool stmt = ev->kind == AUDIT_STATEMENT || ev->kind == AUDIT_STATEMENT_END;
    sbuf_add(out, ",\"time\":\"", 9);
    sbuf_adds(out, t);
    sbuf_add(out, "\",\"time_us\":", 12);
    if (ev->time_us < 0) sbuf_add(out, "-", 1);
    add_u64(out, ev->time_us < 0 ? (uint64_t)-ev->time_us : (uint64_t)ev->time_us);
    field_str(out, KEY("decision"), ev->decision);
    field_str(out, KEY("rule"), ev->rule);
    field_str(out, KEY("request_id"), ev->request_id);
    field_str(out, KEY("grant_id"), ev->grant_id);
    field_str(out, KEY("actor"), ev->actor);
    field_u64(out, KEY("ref"), ev->ref, false);
    field_u64(out, KEY("duration_us"), ev->duration_us, stmt);
    field_u64(out, KEY("rows"), ev->rows, stmt);
    field_u64(out, KEY("bytes"), ev->bytes, stmt);
    field_masked(out, ev->masked);
    field_str(out, KEY("digest"), ev->digest);
    field_str(out, KEY("sqlstate"), ev->sqlstate);
    field_str(out, KEY("detail"), ev->detail);
}

void audit_event_body(const struct audit_event *ev, uint64_t seq, const char *default_instance,
                      const char *prev_hash, struct sbuf *out)
{
    audit_event_head(ev, default_instance, out);
    sbuf_add(out, BODY_SEQ, sizeof BODY_SEQ - 1);
    add_u64(out, seq);
    audit_event_fields(ev, out);
    sbuf_add(out, BODY_PREV, sizeof BODY_PREV - 1);
    sbuf_adds(out, prev_hash);
    sbuf_add(out, BODY_CLOSE, sizeof BODY_CLOSE - 1);
}

size_t audit_rec_body_room(size_t head_len, size_t fields_len)
{
    return head_len + sizeof BODY_SEQ - 1 + 20 + fields_len + sizeof BODY_PREV - 1 +
           AUDIT_HASH_HEX - 1 + sizeof BODY_CLOSE - 1;
}

void audit_head_hash(const char *head, size_t head_len, struct audit_digest *out)
{
    audit_digest_init(out);
    audit_digest_update(out, head, head_len);
}

size_t audit_head_parts_len(const struct audit_event *ev)
{
    return sizeof BODY_OPEN - 1 + strlen(audit_kind_name(ev->kind)) + 1 + ev->session_json.len +
           ev->statement_json.len;
}

void audit_rec_head_parts(struct audit_rec *r, const struct audit_event *ev)
{
    const char *kind = audit_kind_name(ev->kind);
    size_t kl = strlen(kind);
    char *p = r->body;
    memcpy(p, BODY_OPEN, sizeof BODY_OPEN - 1);
    p += sizeof BODY_OPEN - 1;
    memcpy(p, kind, kl);
    p += kl;
    *p++ = '"';
    memcpy(p, ev->session_json.p, ev->session_json.len);
    p += ev->session_json.len;
    memcpy(p, ev->statement_json.p, ev->statement_json.len);
}

void audit_rec_body_begin(struct audit_rec *r, const char *head, size_t head_len,
                          const struct audit_digest *head_hash, const char *fields,
                          size_t fields_len)
{
    char digits[24];
    size_t d = u64_decimal(r->seq, digits);
    char *p = r->body;
    if (head) memcpy(p, head, head_len);
    p += head_len;
    char *tail = p;
    memcpy(p, BODY_SEQ, sizeof BODY_SEQ - 1);
    p += sizeof BODY_SEQ - 1;
    memcpy(p, digits + d, sizeof digits - d);
    p += sizeof digits - d;
    memcpy(p, fields, fields_len);
    p += fields_len;
    memcpy(p, BODY_PREV, sizeof BODY_PREV - 1);
    p += sizeof BODY_PREV - 1;
    r->body_len = (size_t)(p - r->body);
    if (head_hash)
        r->body_hash = *head_hash;
    else
        audit_head_hash(r->body, head_len, &r->body_hash);
    audit_digest_update(&r->body_hash, tail, (size_t)(p - tail));
}

size_t audit_rec_body_close(struct audit_rec *r, const char *prev_hash, char hash[AUDIT_HASH_HEX])
{
    /* not strnlen: libpg_query exports a byte-at-a-time one that the process then uses */
    const char *nul = memchr(prev_hash, '\0', AUDIT_HASH_HEX - 1);
    size_t pl = nul ? (size_t)(nul - prev_hash) : AUDIT_HASH_HEX - 1;
    char *p = r->body + r->body_len;
    memcpy(p, prev_hash, pl);
    memcpy(p + pl, BODY_CLOSE, sizeof BODY_CLOSE - 1);
    struct audit_digest d = r->body_hash; /* the record keeps its own (a retried batch) */
    audit_digest_update(&d, p, pl + sizeof BODY_CLOSE - 1);
    audit_digest_final(&d, hash);
    return r->body_len + pl + sizeof BODY_CLOSE - 1;
}

void audit_event_line(const char *body, size_t body_len, const char *hash, struct sbuf *out)
{
    sbuf_add(out, body, body_len - 1); /* without the closing brace */
    sbuf_adds(out, ",\"hash\":\"");
    sbuf_adds(out, hash);
    sbuf_adds(out, "\"}");
}

int audit_line_split(const char *line, size_t len, struct sbuf *body, char hash[AUDIT_HASH_HEX])
{
    static const char tag[] = ",\"hash\":\"";
    const size_t tl = sizeof tag - 1, hl = AUDIT_HASH_HEX - 1;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len < tl + hl + 2 + 2 || line[0] != '{') return -1;
    const char *h = line + len - 2 - hl - tl;
    if (memcmp(h, tag, tl) != 0 || memcmp(line + len - 2, "\"}", 2) != 0) return -1;
    memcpy(hash, h + tl, hl);
    hash[hl] = 0;
    for (size_t i = 0; i < hl; i++)
        if (!strchr("0123456789abcdef", hash[i])) return -1;
    body->len = 0;
    sbuf_add(body, line, (size_t)(h - line));
    sbuf_add(body, "}", 1);
    return 0;
}
