/*
 * fuzz_rows.c: libFuzzer target for the result-row rewriter (src/mask/rows.c) over the real
 * detector database.
 *
 * The input is a sequence of records: one selector byte, a 16-bit big-endian length, then
 * that many bytes (cut short at the end of the input). The selector's low 3 bits say what
 * the bytes become:
 *   0 RowDescription built from the bytes (field names, types, formats, table OIDs drawn
 *     from small tables so plans hit every path)      1 RowDescription, bytes as the body
 *   2 DataRow built from the bytes for the current result's column count, with values drawn
 *     from PII samples or raw bytes, NULLs and empty strings   3 DataRow, bytes as the body
 *   4 CopyData (by value, and by column under a plan)  5 ErrorResponse/NoticeResponse built
 *   6 ErrorResponse/NoticeResponse, bytes as body     7 forget the plan (rows scanned whole)
 * The upper bits set how much room is left at the end of the output buffer, so output that
 * grows it makes the buffer compact mid-message. Bodies are copied into exactly sized heap
 * blocks so AddressSanitizer sees any read past them.
 *
 * Plans are built through the plan cache (mask_plan_build_cached), so a RowDescription seen
 * again gets a copy of the cached plan.
 *
 * Invariants: nothing crashes; a plan is built (0) or refused (-1, no plan); a rewrite that
 * returns 0 or -1 appends nothing; one that returns 1 appends exactly one well-formed message
 * of the same type: a DataRow with the same column count, NULLs in the same places and empty
 * values still empty, and the same row scanned in a batch with the rows after it
 * (mask_row_rewrite_ahead) gives the same bytes; a notice with the same field codes in the same
 * order and the same S, V and C values; a RowDescription whose names are rewritten keeps its
 * field count.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask.h"
#include "pg/msg.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_rows: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const names[] = {
    "email",    "ssn",
    "card",     "note",
    "id",       "phone",
    "password", "salary",
    "c1",       "nickname",
    "payload",  "comment",
    "doc",      "tags",
    "iban",     "dob",
    "address",  "email_verified",
    "api_key",  "tokenizer_name",
    "",         "userEmail",
};
#define N_NAMES (sizeof names / sizeof names[0])

static const uint32_t types[] = {25,   1043, 23, 20,   16,    3802, 114,  1009,
                                 2950, 705,  19, 1042, 99999, 869,  1700, 142};
#define N_TYPES (sizeof types / sizeof types[0])

static const char *const samples[] = {
    "alice@example.com",
    "4111 1111 1111 1111",
    "4111111111111111",
    "078-05-1120",
    "+1 415 555 2671",
    "DE89370400440532013000",
    "AKIAIOSFODNN7EXAMPLE",
    "192.168.1.10",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "Gr\xc3\xbc\xc3\x9f"
    "e j\xc3\xb6rg@example.de \xf0\x9f\x98\x80",
    "\x01{\"mail\": \"bob@example.org\"}",
    "Key (email)=(carol@example.net) already exists.",
    "1\tdave@example.com\t\\N\n",
    "2,\"erin@example.com\",\"a, b\"\n",
};
#define N_SAMPLES (sizeof samples / sizeof samples[0])

static struct cfg_masking cfg;
static struct mask_db *db;
static char *exempt[] = {"payload", "public.audit_log.*"};
static struct cfg_mask_column columns[] = {
    {.match = "nickname", .detector = NULL, .form = CFG_FORM_FULL},
    {.match = "salary", .detector = NULL, .form = CFG_FORM_DEFAULT},
    {.match = "*.customers.doc", .detector = NULL, .form = CFG_FORM_HASH},
};

static bool resolve(void *ctx, uint32_t table_oid, int16_t attnum, struct mask_colref *out)
{
    (void)ctx;
    static const char *const cols[] = {"email", "nickname", "notes", "doc"};
    if (table_oid == 1000) {
        *out = (struct mask_colref){"public", "customers", cols[attnum & 3]};
        return true;
    }
    if (table_oid == 2000) {
        *out = (struct mask_colref){"public", "audit_log", NULL};
        return true;
    }
    return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cfg.enabled = true;
    cfg.exempt = exempt;
    cfg.n_exempt = 2;
    cfg.columns = columns;
    cfg.n_columns = 3;
    static char key[] = "fuzz-hash-key-0123456789";
    cfg.hash_key = key;
    cfg.hash_key_len = sizeof key - 1;
    char err[256];
    db = mask_db_build(&cfg, err, sizeof err);
    if (!db) {
        fprintf(stderr, "fuzz_rows: mask_db_build: %s\n", err);
        abort();
    }
    return 0;
}

/* A reader over one record's bytes; reads past the end give 0. */
struct rd {
    const uint8_t *p;
    size_t n, i;
};

static uint8_t rd_u8(struct rd *r)
{
    return r->i < r->n ? r->p[r->i++] : 0;
}

static struct mask_plan *plan;
static int plan_cols = -1; /* column count of the current result; -1 none */

static void do_rowdesc(const uint8_t *body, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, body, len);
    mask_plan_free(plan);
    plan = (struct mask_plan *)&plan_cols; /* must be overwritten */
    /* through the plan cache (resolve always answers alike), as the relay builds plans */
    int rc = mask_plan_build_cached(db, copy, len, resolve, NULL, 0, 0, &plan);
    CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        CHECK(plan == NULL);
        plan_cols = -1;
    } else {
        plan_cols = (int)pg_get_u16(body);
        /* names holding a value: one well-formed 'T' with as many fields, or nothing */
        struct buf *out = buf_get();
        int r = mask_rowdesc_rewrite(db, plan, copy, len, out);
        CHECK(r == 0 || r == 1);
        CHECK(r == 1 || out->len == out->off);
        if (r == 1) {
            const uint8_t *m = out->data + out->off;
            CHECK(out->len - out->off >= 7 && m[0] == 'T');
            CHECK(pg_get_u32(m + 1) == out->len - out->off - 1);
            CHECK(pg_get_u16(m + 5) == pg_get_u16(copy));
        }
        buf_put(out);
    }
    free(copy);
}

static void build_rowdesc(struct rd *r, struct buf *b)
{
    unsigned nf = rd_u8(r) % 9;
    buf_append_u16(b, (uint16_t)nf);
    for (unsigned i = 0; i < nf; i++) {
        uint8_t a = rd_u8(r), t = rd_u8(r), o = rd_u8(r);
        buf_append_str(b, names[a % N_NAMES]);
        buf_append_u32(b, (uint32_t)(o % 4) * 1000u);
        buf_append_u16(b, (uint16_t)((o >> 2) % 5));
        buf_append_u32(b, types[t % N_TYPES]);
        buf_append_u16(b, 0xffff);
        buf_append_u32(b, 0xffffffffu);
        buf_append_u16(b, (uint16_t)((t >> 4) & 1));
    }
}

static void build_datarow(struct rd *r, struct buf *b)
{
    unsigned nc = plan_cols >= 0 ? (unsigned)plan_cols : rd_u8(r) % 6;
    if (nc > 64) nc = 64;
    buf_append_u16(b, (uint16_t)nc);
    for (unsigned i = 0; i < nc; i++) {
        uint8_t c = rd_u8(r);
        if (c == 0xff) {
            buf_append_u32(b, 0xffffffffu);
        } else if (c & 0x80) {
            const char *s = samples[c % N_SAMPLES];
            buf_append_u32(b, (uint32_t)strlen(s));
            buf_append(b, s, strlen(s));
        } else {
            size_t l = c % 64;
            if (l > r->n - r->i) l = r->n - r->i;
            buf_append_u32(b, (uint32_t)l);
            buf_append(b, r->p + r->i, l);
            r->i += l;
        }
    }
}

static void build_notice(struct rd *r, struct buf *b)
{
    static const char codes[] = "SVCMDHWqstnPp";
    unsigned nf = rd_u8(r) % 8;
    for (unsigned i = 0; i < nf; i++) {
        uint8_t c = rd_u8(r);
        buf_append_u8(b, (uint8_t)codes[c % (sizeof codes - 1)]);
        if (c & 0x80) {
            buf_append_str(b, samples[(c >> 3) % N_SAMPLES]);
        } else {
            size_t l = rd_u8(r) % 48;
            for (size_t k = 0; k < l && r->i < r->n; k++) {
                uint8_t x = r->p[r->i++];
                buf_append_u8(b, x ? x : '0');
            }
            buf_append_u8(b, 0);
        }
    }
    buf_append_u8(b, 0);
}

/* The output buffer for one call: `room` bytes left at its end, a 3-byte sentinel pending. */
static struct buf *out_make(size_t room)
{
    struct buf *o = buf_get();
    if (room > o->cap - 3) room = o->cap - 3;
    o->off = o->cap - room - 3;
    o->len = o->cap - room;
    memcpy(o->data + o->off, "zyx", 3);
    return o;
}

/* The sentinel is intact; returns the bytes appended after it. */
static size_t out_check(struct buf *o, const uint8_t **m)
{
    CHECK(buf_avail(o) >= 3);
    CHECK(memcmp(o->data + o->off, "zyx", 3) == 0);
    *m = o->data + o->off + 3;
    return buf_avail(o) - 3;
}

/* The row twice in a row (with a partial third message after them) through
 * mask_row_rewrite_ahead: both calls give what mask_row_rewrite gave for the row alone (the
 * first scans both in one batch, the second is answered from it). */
static void do_datarow_ahead(const uint8_t *body, size_t len, int rc_alone)
{
    struct buf *alone = buf_get();
    mask_batch_reset();
    CHECK(mask_row_rewrite(db, plan, body, len, alone, NULL) == rc_alone);
    size_t n = 2 * (5 + len) + 3;
    uint8_t *st = malloc(n);
    for (int k = 0; k < 2; k++) {
        uint8_t *m = st + k * (5 + len);
        m[0] = 'D';
        m[1] = (uint8_t)((len + 4) >> 24), m[2] = (uint8_t)((len + 4) >> 16);
        m[3] = (uint8_t)((len + 4) >> 8), m[4] = (uint8_t)(len + 4);
        memcpy(m + 5, body, len);
    }
    memcpy(st + n - 3, "D\0\0", 3);
    for (int k = 0; k < 2; k++) {
        struct buf *o = buf_get();
        size_t at = (size_t)k * (5 + len) + 5;
        int rc = mask_row_rewrite_ahead(db, plan, st + at, len, n - at - len, o, NULL);
        CHECK(rc == rc_alone);
        CHECK(buf_avail(o) == buf_avail(alone));
        CHECK(buf_avail(o) == 0 ||
              memcmp(o->data + o->off, alone->data + alone->off, buf_avail(o)) == 0);
        buf_put(o);
    }
    free(st);
    buf_put(alone);
}

static void do_datarow(const uint8_t *body, size_t len, size_t room)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, body, len);
    struct buf *o = out_make(room);
    struct mask_counts counts = {0};
    int rc = mask_row_rewrite(db, plan, copy, len, o, &counts);
    const uint8_t *m;
    size_t n = out_check(o, &m);
    CHECK(rc >= -1 && rc <= 1);
    if (rc <= 0) {
        CHECK(n == 0);
    } else {
        CHECK(n >= 7);
        CHECK(m[0] == 'D');
        CHECK(pg_get_u32(m + 1) == n - 1);
        const uint8_t *ob = m + 5;
        size_t olen = n - 5;
        CHECK(len >= 2 && pg_get_u16(ob) == pg_get_u16(copy));
        unsigned nc = pg_get_u16(copy);
        size_t ip = 2, op = 2;
        for (unsigned i = 0; i < nc; i++) {
            CHECK(op + 4 <= olen && ip + 4 <= len);
            int32_t il = (int32_t)pg_get_u32(copy + ip), ol = (int32_t)pg_get_u32(ob + op);
            ip += 4, op += 4;
            CHECK((il == -1) == (ol == -1));
            CHECK(il != 0 || ol == 0);
            CHECK(ol >= -1);
            if (il > 0) ip += (size_t)il;
            if (ol > 0) op += (size_t)ol;
            CHECK(op <= olen);
        }
        CHECK(op == olen);
        CHECK(ip == len);
    }
    buf_put(o);
    free(copy);
    if (rc >= 0) do_datarow_ahead(body, len, rc);
}

static void do_copy(const uint8_t *body, size_t len, size_t room)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, body, len);
    struct buf *o = out_make(room);
    int rc = mask_copy_rewrite(db, copy, len, o, NULL);
    const uint8_t *m;
    size_t n = out_check(o, &m);
    CHECK(rc >= -1 && rc <= 1);
    if (rc <= 0) {
        CHECK(n == 0);
    } else {
        CHECK(n >= 5 && m[0] == 'd' && pg_get_u32(m + 1) == n - 1);
    }
    buf_put(o);

    /* by column (copy.c), text or CSV by the line's length: a line masked under a plan still
     * splits into the plan's columns (the masked values are escaped or quoted as needed) */
    static const char *const cols[] = {"id", "api_token", "note"};
    static const char *const srcs[] = {"id", "ssn", NULL};
    struct mask_copy_layout lay = {.csv = len % 2,
                                   .delimiter = len % 2 ? ',' : '\t',
                                   .quote = '"',
                                   .escape = len % 4 == 1 ? '\\' : '"',
                                   .null_str = len % 2 ? "" : "\\N"};
    struct mask_copy_plan *p = mask_copy_plan_build(db, "public.t", cols, srcs, 3, &lay);
    CHECK(p != NULL);
    o = out_make(room);
    rc = mask_copy_rewrite_plan(db, p, copy, len, o, NULL);
    n = out_check(o, &m);
    CHECK(rc >= -1 && rc <= 1);
    if (rc <= 0) {
        CHECK(n == 0);
    } else {
        CHECK(n >= 5 && m[0] == 'd' && pg_get_u32(m + 1) == n - 1);
        struct buf *again = buf_get();
        CHECK(mask_copy_rewrite_plan(db, p, m + 5, n - 5, again, NULL) >= 0);
        buf_put(again);
    }
    mask_copy_plan_free(p);
    buf_put(o);
    free(copy);
}

/* Walk a notice body: field codes into codes (up to 64), S/V/C values compared by caller. */
static bool notice_walk(const uint8_t *b, size_t len, char *codes, const uint8_t **svc_v,
                        size_t *nfields)
{
    size_t pos = 0, k = 0;
    for (;;) {
        if (pos >= len) return false;
        if (b[pos] == 0) break;
        const uint8_t *nul = memchr(b + pos + 1, 0, len - pos - 1);
        if (!nul) return false;
        if (k < 64) {
            codes[k] = (char)b[pos];
            svc_v[k] = b + pos + 1;
        }
        k++;
        pos = (size_t)(nul - b) + 1;
    }
    *nfields = k;
    return pos + 1 == len;
}

static void do_notice(uint8_t type, const uint8_t *body, size_t len, size_t room)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, body, len);
    struct buf *o = out_make(room);
    int rc = mask_notice_rewrite(db, type, copy, len, o, NULL);
    const uint8_t *m;
    size_t n = out_check(o, &m);
    CHECK(rc >= -1 && rc <= 1);
    char ic[64], oc[64];
    const uint8_t *iv[64], *ov[64];
    size_t inf = 0, onf = 0;
    bool ok = notice_walk(copy, len, ic, iv, &inf);
    CHECK(ok == (rc != -1));
    if (rc <= 0) {
        CHECK(n == 0);
    } else {
        CHECK(n >= 6 && m[0] == type && pg_get_u32(m + 1) == n - 1);
        CHECK(notice_walk(m + 5, n - 5, oc, ov, &onf));
        CHECK(onf == inf);
        for (size_t i = 0; i < inf && i < 64; i++) {
            CHECK(ic[i] == oc[i]);
            if (ic[i] == 'S' || ic[i] == 'V' || ic[i] == 'C')
                CHECK(strcmp((const char *)iv[i], (const char *)ov[i]) == 0);
        }
    }
    buf_put(o);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t i = 0;
    plan = NULL;
    plan_cols = -1;
    while (i < size) {
        uint8_t sel = data[i++];
        size_t len = 0;
        if (i < size) len = (size_t)data[i++] << 8;
        if (i < size) len |= data[i++];
        if (len > size - i) len = size - i;
        const uint8_t *p = data + i;
        i += len;
        size_t room = (size_t)(sel >> 3) * 5;
        struct rd r = {p, len, 0};
        struct buf *b = buf_get();
        switch (sel & 7) {
        case 0:
            build_rowdesc(&r, b);
            do_rowdesc(b->data + b->off, buf_avail(b));
            break;
        case 1:
            do_rowdesc(p, len);
            break;
        case 2:
            build_datarow(&r, b);
            do_datarow(b->data + b->off, buf_avail(b), room);
            break;
        case 3:
            do_datarow(p, len, room);
            break;
        case 4:
            do_copy(p, len, room);
            break;
        case 5:
            build_notice(&r, b);
            do_notice((sel & 8) ? 'N' : 'E', b->data + b->off, buf_avail(b), room);
            break;
        case 6:
            do_notice((sel & 8) ? 'N' : 'E', p, len, room);
            break;
        case 7:
            mask_plan_free(plan);
            plan = NULL;
            plan_cols = -1;
            break;
        }
        buf_put(b);
    }
    mask_plan_free(plan);
    plan = NULL;
    return 0;
}
