/*
 * test_audit.c: unit tests of the audit trail (src/audit/) and the SQLite state store
 * (src/store/): the canonical event JSON, the writer (commit, committed_seq,
 * queue full, a failing store and its recovery, events_lost), the hash chain and its
 * verification against tampering in the SQLite file (UPDATE, DELETE, rewritten hash) and in
 * the JSON Lines copy (truncation, edits), Ed25519 checkpoint signatures, retention with
 * anchors, the result digest recipe, the CLI's exit codes, the journal of durable events
 * (append, torn records, replay, recovery at start, emptied once committed), and a throughput
 * figure.
 * Each test works in its own temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "core/log.h"
#include "store/store.h"
#include "store/store_pack.h"

/* ---- helpers */

struct env {
    char dir[128];
    char db[192];
    char jsonl[192];
    char key[192];
    char pub[192];
    struct sluice_config cfg;
};

static struct env *env_new(void)
{
    struct env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/sluice-test-audit-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->db, sizeof e->db, "%s/sluice.db", e->dir);
    snprintf(e->jsonl, sizeof e->jsonl, "%s/audit.jsonl", e->dir);
    snprintf(e->key, sizeof e->key, "%s/audit.key", e->dir);
    snprintf(e->pub, sizeof e->pub, "%s/audit.pub", e->dir);
    e->cfg.state.driver = CFG_STATE_SQLITE;
    e->cfg.state.path = e->db;
    e->cfg.audit.enabled = true;
    e->cfg.audit.row_digest = true;
    e->cfg.audit.checkpoint = 10;
    e->cfg.audit.queue = 4096;
    return e;
}

static void env_free(struct env *e)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", e->dir);
    free(e);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* Wait until the writer committed seq (up to 5 s). */
static void wait_committed(uint64_t seq)
{
    for (int i = 0; i < 5000 && audit_committed_seq() < seq; i++)
        usleep(1000);
    assert_true(audit_committed_seq() >= seq);
}

/* Until the writer has met a failure (it retries its batch): within 3 s. */
static void wait_unhealthy(void)
{
    for (int i = 0; i < 3000 && audit_healthy(); i++)
        usleep(1000);
    assert_false(audit_healthy());
}

static uint64_t emit_statement(const char *identity, const char *decision, int64_t time_us, int i)
{
    char stmt[128];
    snprintf(stmt, sizeof stmt, "SELECT * FROM orders WHERE id = $1 /* %d */", i);
    struct audit_event ev = {
        .kind = AUDIT_STATEMENT,
        .time_us = time_us,
        .session_id = 7,
        .identity = identity,
        .identity_kind = "human",
        .groups = "engineers, dba",
        .client_addr = "127.0.0.1:5555",
        .application_name = "psql",
        .target = "shop",
        .statement = stmt,
        .fingerprint = "a1b2c3d4e5f60718",
        .command = "SELECT",
        .class_ = "read",
        .tables = "public.orders",
        .decision = decision,
        .rule = "default",
        .rows = (uint64_t)i,
        .bytes = 100,
        .duration_us = 42,
        .masked = "{\"email\":3}",
    };
    return audit_emit(&ev);
}

/* Start the audit, emit n statements (alice/allow except every 7th bob/deny), stop. */
static uint64_t run_events(struct env *e, int n)
{
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    uint64_t last = 0;
    for (int i = 1; i <= n; i++) {
        bool bob = i % 7 == 0;
        last = emit_statement(bob ? "bob" : "alice", bob ? "deny" : "allow", 0, i);
        assert_true(last > 0);
    }
    wait_committed(last);
    audit_stop();
    return last;
}

static struct store *open_ro(const char *path)
{
    struct cfg_state cs = {.driver = CFG_STATE_SQLITE, .path = (char *)path};
    struct store *st = NULL;
    char err[512];
    if (store_open(&cs, STORE_READONLY, &st, err, sizeof err) != 0) fail_msg("%s", err);
    return st;
}

static void verify_store_path(const char *path, EVP_PKEY *pub, struct audit_verify_result *r)
{
    struct store *st = open_ro(path);
    assert_int_equal(audit_verify_store(st, pub, r), 0);
    store_close(st);
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/*
 * Tampering with packed events as someone with write access to the file could: the blocks
 * holding events lo..hi are unpacked, each of those events is handed to edit (which may change
 * it, or return false to drop it) and the blocks are packed and written back.
 */
typedef bool (*edit_fn)(struct store_event *ev, char *body);

static void rewrite_events(const char *path, uint64_t lo, uint64_t hi, edit_fn edit)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q, *up;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT first_seq, events FROM audit_blocks "
                                        "WHERE last_seq >= ? AND first_seq <= ?",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE audit_blocks SET events = ? WHERE first_seq = ?",
                                        -1, &up, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(q, 1, (sqlite3_int64)lo);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)hi);
    struct store_unpacked u = {0};
    struct store_pack p = {0};
    while (sqlite3_step(q) == SQLITE_ROW) {
        assert_int_equal(
            store_unpack_events(&u, sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1)),
            0);
        struct store_event out[64];
        char *bodies[64];
        unsigned n = 0;
        assert_true(u.n <= 64);
        for (unsigned i = 0; i < u.n; i++) {
            struct store_event ev = u.ev[i];
            bodies[n] = strndup(ev.body, ev.body_len);
            ev.body = bodies[n];
            if (ev.seq >= lo && ev.seq <= hi && !edit(&ev, bodies[n])) {
                free(bodies[n]);
                continue;
            }
            out[n++] = ev;
        }
        if (n) {
            assert_int_equal(store_pack_events(&p, out, n), 0);
            sqlite3_bind_blob(up, 1, p.out, (int)p.len, SQLITE_STATIC);
        } else {
            sqlite3_bind_null(up, 1);
        }
        sqlite3_bind_int64(up, 2, sqlite3_column_int64(q, 0));
        assert_int_equal(sqlite3_step(up), SQLITE_DONE);
        sqlite3_reset(up);
        for (unsigned i = 0; i < n; i++)
            free(bodies[i]);
    }
    sqlite3_finalize(q);
    sqlite3_finalize(up);
    sqlite3_close(db);
    store_unpacked_free(&u);
    store_pack_free(&p);
}

/* Rewrite events lo..hi of a copy of the store named name with edit, and verify it. */
static struct audit_verify_result tampered_events(struct env *e, const char *name, uint64_t lo,
                                                  uint64_t hi, edit_fn edit)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.db", e->dir, name);
    copy_file(e->db, path);
    rewrite_events(path, lo, hi, edit);
    struct audit_verify_result r;
    verify_store_path(path, NULL, &r);
    return r;
}

static bool edit_alice(struct store_event *ev, char *body)
{
    char *p = strstr(body, "alice");
    assert_non_null(p);
    memcpy(p, "bobby", 5);
    (void)ev;
    return true;
}

static bool edit_identity(struct store_event *ev, char *body)
{
    (void)body;
    ev->identity = "mallory";
    return true;
}

static bool edit_drop(struct store_event *ev, char *body)
{
    (void)ev;
    (void)body;
    return false;
}

/* "rows":23 becomes "rows":20, and the hash is recomputed to match. */
static char rehashed[AUDIT_HASH_HEX];
static bool edit_rows_rehash(struct store_event *ev, char *body)
{
    char *p = strstr(body, "\"rows\":23");
    assert_non_null(p);
    p[8] = '0';
    audit_sha256_hex(body, ev->body_len, rehashed);
    ev->hash = rehashed;
    return true;
}

/* Tamper a copy of the store with sql and verify it: returns the result. */
static struct audit_verify_result tampered(struct env *e, const char *name, const char *sql,
                                           EVP_PKEY *pub)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.db", e->dir, name);
    copy_file(e->db, path);
    sql_exec(path, sql);
    struct audit_verify_result r;
    verify_store_path(path, pub, &r);
    return r;
}

/* ---- tests */

/* Bodies must stay byte-identical across versions of event.c (the chain hashes them): a
 * table of events covering every field, list and masked form, escapes and invalid UTF-8,
 * with the SHA-256 of the body the canonical writer produced for each. */
static const char long_stmt[] =
    "SELECT \"a\\b\" FROM t WHERE x = $1 AND y = $2 -- \t\r\n"
    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82"
    " 0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
    " 0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
    " 0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
    " \x7f\x1f\x01 end \xe2";

static const struct audit_event golden_events[] = {
    {.kind = AUDIT_STATEMENT,
     .time_us = 1700000000123456LL,
     .session_id = 42,
     .identity = "alice@corp.com",
     .identity_kind = "human",
     .groups = ",engineers,, dba ,  ,x",
     .auth_method = "password",
     .client_addr = "127.0.0.1:5432",
     .application_name = "psql \"quoted\"",
     .target = "shop",
     .statement = long_stmt,
     .fingerprint = "a1b2c3d4e5f60718",
     .command = "SELECT",
     .class_ = "read",
     .tables = "[\"public.orders\",1,\"a,b\",null,\"\\u00e9\"]",
     .decision = "allow",
     .rule = "default",
     .request_id = "req-1",
     .grant_id = "g-2",
     .actor = "bob",
     .ref = 7,
     .duration_us = 120,
     .rows = 3,
     .bytes = 64,
     .masked = "{\"email\":3,\"card\":1,\"neg\":-2,\"f\":2.7,\"s\":\"x\"}",
     .digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     .sqlstate = "42501",
     .detail = "no digest: a row was larger than 16 MiB"},
    {.kind = AUDIT_STATEMENT_END, .time_us = -1500001, .instance = "other:9", .ref = 99},
    {.kind = AUDIT_SESSION_START,
     .time_us = 1,
     .groups = "  [\"a\",\"b\\\"c\",2]",
     .tables = "[oops",
     .masked = "3 values",
     .identity = ""},
    {.kind = AUDIT_CONFIG_RELOAD, .time_us = 1700000000000000LL, .actor = "ops", .detail = "ok"},
    {.kind = AUDIT_KIND_COUNT, .time_us = 5, .groups = "solo", .tables = "public.a, public.b"},
    {.kind = AUDIT_EVENTS_LOST,
     .time_us = 86400000000LL,
     .masked = "{}",
     .groups = "[]",
     .tables = " , "},
    {.kind = AUDIT_STATEMENT, .time_us = 1700000001999999LL, .groups = "[1,2]", .masked = "[1]"},
};

static const char *const golden_sha[] = {
    "74a26d46d10850cd312b46b78045ea5ad0524e5b9626cefdc9cdc52b582fc94b", /* 0 */
    "2197007d5adfd125fec9f699dd344f07044db8237546288d68e0fe214bed6739", /* 1 */
    "ada4e1387d487f83bcc39ce682c7db7f06223191d411f453f98d181ee824502f", /* 2 */
    "93442e755d84b630eb7792c2464feb0103a4140cecb2f8664bd35361e13b583b", /* 3 */
    "4a4a7b198c099828cfbe45456d0a08b7a13b2dece2eb51104fd2baf002623469", /* 4 */
    "08b400ba2fd6bcba3c7e283efb62d2c8ffbbd301e857aa727365018e5d53c16f", /* 5 */
    "03899a0edd3da3eebf4ef61592fcdddc2e7c056fbf247a438a4372aa2b2aa9b4", /* 6 */
};

/* The JSON string escaping as first written (byte by byte), to check the faster one against. */
static size_t ref_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], min;
    size_t len;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2, min = 0x80, c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, c &= 0x07;
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

static void ref_json_str(struct sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    sbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t u = c >= 0x80 ? ref_utf8_len(p + i, n - i) : 0;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            sbuf_add(b, s + i, 1);
        } else if (u) {
            sbuf_add(b, s + i, u);
            i += u;
            continue;
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sbuf_add(b, e, 2);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            sbuf_add(b, c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t", 2);
        } else if (c >= 0x80) {
            sbuf_add(b, "\\ufffd", 6);
        } else {
            char e[7];
            snprintf(e, sizeof e, "\\u%04x", c);
            sbuf_add(b, e, 6);
        }
        i++;
    }
    sbuf_add(b, "\"", 1);
}

/* Random statements (mostly plain ASCII with escapes, UTF-8 and broken UTF-8 at every offset)
 * are escaped in the body exactly as the reference does. */
static void test_event_json_escaping_random(void **state)
{
    (void)state;
    static const char *const pieces[] = {"a",
                                         "SELECT ",
                                         "\"",
                                         "\\",
                                         "\n",
                                         "\t",
                                         "\x01",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "\xc0\xaf",
                                         "\xed\xa0\x80",
                                         "\xe2\x82",
                                         "\xff",
                                         " $1",
                                         "0123456789abcdef"};
    const size_t np = sizeof pieces / sizeof pieces[0];
    unsigned seed = 12345;
    struct audit_event ev = {.kind = AUDIT_STATEMENT, .time_us = 1700000000000000LL};
    struct sbuf plain = {0};
    ev.statement = "@";
    audit_event_body(&ev, 1, "h", AUDIT_GENESIS, &plain);
    const char *at = strstr(plain.p, "\"statement\":\"@\"");
    assert_non_null(at);
    size_t pre = (size_t)(at - plain.p) + strlen("\"statement\":");
    const char *post = at + strlen("\"statement\":\"@\"");
    for (int round = 0; round < 2000; round++) {
        char text[600];
        size_t len = 0;
        unsigned k = (seed = seed * 1103515245u + 12345u) >> 16 & 63;
        for (unsigned j = 0; j <= k; j++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) & 0xff;
            const char *piece = r < 160 ? pieces[r % 2] : pieces[r % np];
            size_t pl = strlen(piece);
            if (len + pl >= sizeof text) break;
            memcpy(text + len, piece, pl);
            len += pl;
        }
        text[len] = 0;
        ev.statement = text;
        struct sbuf got = {0}, want = {0};
        audit_event_body(&ev, 1, "h", AUDIT_GENESIS, &got);
        sbuf_add(&want, plain.p, pre);
        ref_json_str(&want, text);
        sbuf_adds(&want, post);
        if (got.len != want.len || memcmp(got.p, want.p, got.len) != 0)
            fail_msg("round %d: %s\n  want %s", round, got.p, want.p);
        sbuf_free(&got);
        sbuf_free(&want);
    }
    sbuf_free(&plain);
}

static void test_event_body_golden(void **state)
{
    (void)state;
    bool print = getenv("SLUICE_GOLDEN_PRINT") != NULL;
    for (size_t i = 0; i < sizeof golden_events / sizeof golden_events[0]; i++) {
        struct sbuf b = {0};
        audit_event_body(&golden_events[i], 1000 + i, "host:1", AUDIT_GENESIS, &b);
        /* appending to a non-empty buffer gives the same bytes after what was there */
        struct sbuf b2 = {0};
        sbuf_add(&b2, "prefix", 6);
        audit_event_body(&golden_events[i], 1000 + i, "host:1", AUDIT_GENESIS, &b2);
        assert_int_equal(b2.len, b.len + 6);
        assert_memory_equal(b2.p + 6, b.p, b.len);
        char h[AUDIT_HASH_HEX];
        audit_sha256_hex(b.p, b.len, h);
        if (print) {
            printf("    \"%s\", /* %zu */\n", h, i);
            printf("%s\n", b.p);
        } else {
            if (i >= sizeof golden_sha / sizeof golden_sha[0] || !golden_sha[i] ||
                strcmp(h, golden_sha[i]) != 0)
                fail_msg("event %zu: body changed: %s", i, b.p);
        }
        sbuf_free(&b);
        sbuf_free(&b2);
    }
}

static void test_event_json(void **state)
{
    (void)state;
    struct audit_event ev = {
        .kind = AUDIT_STATEMENT,
        .time_us = 1700000000123456LL,
        .identity = "alice@corp.com",
        .groups = " engineers ,dba",
        .tables = "[\"public.orders\",\"a,b\"]",
        .statement = "SELECT '\"q\"\\'\n\x01 caf\xc3\xa9 \xff",
        .masked = "{\"email\":3,\"card\":1}",
    };
    struct audit_rec *rec = audit_rec_new(&ev);
    assert_ptr_not_equal(rec->ev->statement, ev.statement); /* copied */
    struct sbuf b = {0};
    audit_event_body(rec->ev, 5, "host:1", AUDIT_GENESIS, &b);
    free(rec);
    cJSON *o = cJSON_Parse(b.p);
    assert_non_null(o);
    assert_int_equal(cJSON_GetObjectItem(o, "seq")->valueint, 5);
    assert_string_equal(cJSON_GetObjectItem(o, "time")->valuestring, "2023-11-14T22:13:20.123456Z");
    assert_string_equal(cJSON_GetObjectItem(o, "kind")->valuestring, "statement");
    assert_string_equal(cJSON_GetObjectItem(o, "instance")->valuestring, "host:1");
    assert_string_equal(cJSON_GetObjectItem(o, "statement")->valuestring,
                        "SELECT '\"q\"\\'\n\x01 caf\xc3\xa9 \xef\xbf\xbd");
    cJSON *g = cJSON_GetObjectItem(o, "groups");
    assert_int_equal(cJSON_GetArraySize(g), 2);
    assert_string_equal(cJSON_GetArrayItem(g, 0)->valuestring, "engineers");
    assert_string_equal(cJSON_GetArrayItem(g, 1)->valuestring, "dba");
    cJSON *t = cJSON_GetObjectItem(o, "tables");
    assert_int_equal(cJSON_GetArraySize(t), 2);
    assert_string_equal(cJSON_GetArrayItem(t, 1)->valuestring, "a,b");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "masked"), "email")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(o, "rows")->valueint, 0); /* statements: always */
    assert_null(cJSON_GetObjectItem(o, "identity_kind"));          /* empty: left out */
    assert_string_equal(cJSON_GetObjectItem(o, "prev_hash")->valuestring, AUDIT_GENESIS);
    cJSON_Delete(o);

    /* line = body + hash; split gives the body back */
    char h[AUDIT_HASH_HEX], h2[AUDIT_HASH_HEX];
    audit_sha256_hex(b.p, b.len, h);
    struct sbuf line = {0}, body = {0};
    audit_event_line(b.p, b.len, h, &line);
    assert_int_equal(audit_line_split(line.p, line.len, &body, h2), 0);
    assert_string_equal(h, h2);
    assert_int_equal(body.len, b.len);
    assert_memory_equal(body.p, b.p, b.len);
    assert_int_equal(audit_line_split("{\"seq\":1}", 9, &body, h2), -1);
    sbuf_free(&b);
    sbuf_free(&line);
    sbuf_free(&body);

    /* times */
    int64_t us;
    assert_int_equal(audit_time_parse("1h", 10000000000LL, &us), 0);
    assert_int_equal(us, 10000000000LL - 3600000000LL);
    assert_int_equal(audit_time_parse("2023-11-14T22:13:20.123456Z", 0, &us), 0);
    assert_int_equal(us, 1700000000123456LL);
    assert_int_equal(audit_time_parse("2023-11-14", 0, &us), 0);
    assert_int_equal(us, 1699920000000000LL);
    assert_int_equal(audit_time_parse("yesterday", 0, &us), -1);
    assert_int_equal(audit_kind_from_name("grant_used"), AUDIT_GRANT_USED);
    assert_int_equal(audit_kind_from_name("nope"), -1);
}

static void test_chain_and_tampering(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.jsonl = e->jsonl;
    uint64_t last = run_events(e, 50);
    assert_int_equal(last, 50);

    struct audit_verify_result r;
    verify_store_path(e->db, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.events, 50);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.last_seq, 50);
    assert_int_equal(r.checkpoints, 5);

    /* the JSONL copy agrees */
    struct store *st = open_ro(e->db);
    assert_int_equal(audit_verify_jsonl(e->jsonl, st, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.events, 50);
    store_close(st);

    /* a field changed in the body */
    r = tampered_events(e, "t1", 17, 17, edit_alice);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 17);
    assert_non_null(strstr(r.what, "event 17"));
    assert_non_null(strstr(r.what, "does not match its hash"));

    /* a query column changed (body intact) */
    r = tampered_events(e, "t2", 20, 20, edit_identity);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 20);
    assert_non_null(strstr(r.what, "identity"));

    /* a deleted event */
    r = tampered_events(e, "t3", 30, 30, edit_drop);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 30);
    assert_non_null(strstr(r.what, "event 30 is missing"));

    /* the first event deleted */
    r = tampered_events(e, "t4", 1, 1, edit_drop);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 1);

    /* body changed and its hash recomputed: the next link breaks */
    r = tampered_events(e, "t5", 23, 23, edit_rows_rehash);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 24);
    assert_non_null(strstr(r.what, "event 23 was changed"));

    /* a damaged block: its first event is named */
    r = tampered(
        e, "t9",
        "UPDATE audit_blocks SET events = substr(events, 1, length(events) - 9) "
        "WHERE first_seq = (SELECT max(first_seq) FROM audit_blocks WHERE first_seq <= 33)",
        NULL);
    assert_false(r.intact);
    assert_true(r.broken_seq >= 1 && r.broken_seq <= 33);
    assert_non_null(strstr(r.what, "body is missing"));
    /* a deleted block */
    r = tampered(e, "t10",
                 "DELETE FROM audit_blocks WHERE first_seq = (SELECT max(first_seq) FROM "
                 "audit_blocks WHERE first_seq <= 33)",
                 NULL);
    assert_false(r.intact);
    assert_non_null(strstr(r.what, "is missing"));

    /* the newest events deleted: the checkpoint at 50 names it */
    r = tampered_events(e, "t6", 45, 50, edit_drop);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 50);
    /* ... and the JSONL copy shows what the store lacks */
    char path[256];
    snprintf(path, sizeof path, "%s/t7.db", e->dir);
    copy_file(e->db, path);
    rewrite_events(path, 48, 49, edit_drop);
    st = open_ro(path);
    assert_int_equal(audit_verify_store(st, NULL, &r), 0);
    assert_false(r.intact); /* 50 no longer links to 47 */
    store_close(st);
    snprintf(path, sizeof path, "%s/t8.db", e->dir);
    copy_file(e->db, path);
    rewrite_events(path, 50, 50, edit_drop);
    sql_exec(path, "DELETE FROM audit_checkpoints WHERE seq = 50");
    verify_store_path(path, NULL, &r);
    assert_true(r.intact); /* the store alone cannot see its newest event gone */
    st = open_ro(path);
    assert_int_equal(audit_verify_jsonl(e->jsonl, st, &r), 0);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 50);
    assert_non_null(strstr(r.what, "store lacks"));
    store_close(st);

    /* the CLI: exit 0 intact, 1 broken, 2 usage */
    char *argv_ok[] = {"audit", "verify", "--db", e->db, "--jsonl", e->jsonl, NULL};
    assert_int_equal(audit_cli_main(6, argv_ok), 0);
    snprintf(path, sizeof path, "%s/t1.db", e->dir);
    char *argv_bad[] = {"audit", "verify", "--db", path, NULL};
    assert_int_equal(audit_cli_main(4, argv_bad), 1);
    char *argv_usage[] = {"audit", "verify", "--bogus", NULL};
    assert_int_equal(audit_cli_main(3, argv_usage), 2);
    char *argv_search[] = {"audit",      "search", "--db",    e->db, "--identity", "bob",
                           "--decision", "deny",   "--since", "1h",  "--json",     NULL};
    assert_int_equal(audit_cli_main(11, argv_search), 0);
    char *argv_export[] = {"audit", "export", "--db", e->db, "--format", "csv", NULL};
    assert_int_equal(audit_cli_main(6, argv_export), 0);
    char *argv_tail[] = {"audit", "tail", "--db", e->db, "-n", "3", NULL};
    assert_int_equal(audit_cli_main(6, argv_tail), 0);
    char *argv_nodb[] = {"audit", "tail", "--db", "/nonexistent/x.db", NULL};
    assert_int_equal(audit_cli_main(4, argv_nodb), 1);
    env_free(e);
}

/* Collects events of a query. */
struct seen {
    unsigned n;
    uint64_t seqs[64];
    char kinds[64][32];
};

static int collect(void *ctx, const struct store_event *ev)
{
    struct seen *s = ctx;
    if (s->n < 64) {
        s->seqs[s->n] = ev->seq;
        snprintf(s->kinds[s->n], sizeof s->kinds[0], "%s", ev->kind);
    }
    s->n++;
    return 0;
}

static void test_store_query(void **state)
{
    (void)state;
    struct env *e = env_new();
    run_events(e, 30);
    struct store *st = open_ro(e->db);
    struct seen s = {0};
    struct store_query q = {.identity = "bob", .decision = "deny"};
    assert_int_equal(store_events_query(st, &q, collect, &s), 0);
    assert_int_equal(s.n, 4); /* 7, 14, 21, 28 */
    assert_int_equal(s.seqs[0], 7);
    assert_int_equal(s.seqs[3], 28);
    memset(&s, 0, sizeof s);
    q = (struct store_query){.limit = 3, .newest_first = true};
    assert_int_equal(store_events_query(st, &q, collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.seqs[0], 28);
    assert_int_equal(s.seqs[2], 30);
    memset(&s, 0, sizeof s);
    q = (struct store_query){.after_seq = 25, .kind = "statement"};
    assert_int_equal(store_events_query(st, &q, collect, &s), 0);
    assert_int_equal(s.n, 5);
    memset(&s, 0, sizeof s);
    q = (struct store_query){.until_us = 1000};
    assert_int_equal(store_events_query(st, &q, collect, &s), 0);
    assert_int_equal(s.n, 0);
    uint64_t seq;
    char h[STORE_HASH_HEX];
    assert_int_equal(store_events_last(st, &seq, h), 0);
    assert_int_equal(seq, 30);
    assert_int_equal(strlen(h), 64);
    store_close(st);

    /* a second module's migrations, applied once */
    struct cfg_state cs = {.driver = CFG_STATE_SQLITE, .path = e->db};
    char err[512];
    assert_int_equal(store_open(&cs, 0, &st, err, sizeof err), 0);
    static const struct store_migration m[] = {
        {1, "CREATE TABLE approvals_test (id INTEGER PRIMARY KEY)", NULL},
        {2, "ALTER TABLE approvals_test ADD COLUMN state TEXT", NULL},
    };
    assert_int_equal(store_migrate(st, "approvals_test", m, 2), 0);
    assert_int_equal(store_migrate(st, "approvals_test", m, 2), 0);  /* idempotent */
    assert_int_equal(store_migrate(st, "approvals_test", m, 1), -1); /* store is newer */
    assert_non_null(strstr(store_errmsg(st), "newer"));
    store_close(st);
    sql_exec(e->db, "INSERT INTO approvals_test (id, state) VALUES (1, 'pending')");
    env_free(e);
}

static void test_signed_checkpoints(void **state)
{
    (void)state;
    struct env *e = env_new();
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(key);
    assert_non_null(other);
    FILE *f = fopen(e->key, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    f = fopen(e->pub, "w");
    assert_int_equal(PEM_write_PUBKEY(f, key), 1);
    fclose(f);
    e->cfg.audit.signing_key = e->key;
    e->cfg.audit.checkpoint = 5;
    run_events(e, 25);

    EVP_PKEY *pub = NULL;
    char err[256];
    assert_int_equal(audit_key_load_public(e->pub, &pub, err, sizeof err), 0);
    struct audit_verify_result r;
    verify_store_path(e->db, pub, &r);
    assert_true(r.intact);
    assert_int_equal(r.checkpoints, 5);
    assert_int_equal(r.signed_checkpoints, 5);

    /* the wrong public key */
    verify_store_path(e->db, other, &r);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 5);
    assert_non_null(strstr(r.what, "signature does not verify"));

    /* a signature stripped, a checkpoint hash forged */
    r = tampered(e, "s1", "UPDATE audit_checkpoints SET signature = NULL WHERE seq = 15", pub);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 15);
    assert_non_null(strstr(r.what, "not signed"));
    r = tampered(e, "s2",
                 "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_checkpoints WHERE "
                 "seq = 5) WHERE seq = 10",
                 NULL);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 10);
    assert_non_null(strstr(r.what, "checkpoint hash"));

    /* the CLI with --pubkey */
    char *argv_ok[] = {"audit", "verify", "--db", e->db, "--pubkey", e->pub, NULL};
    assert_int_equal(audit_cli_main(6, argv_ok), 0);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    env_free(e);
}

static void test_jsonl_truncation(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.jsonl = e->jsonl;
    run_events(e, 20);
    struct stat sb;
    assert_int_equal(stat(e->jsonl, &sb), 0);
    struct store *st = open_ro(e->db);
    struct audit_verify_result r;
    char path[256];

    /* half a line cut off */
    snprintf(path, sizeof path, "%s/cut.jsonl", e->dir);
    copy_file(e->jsonl, path);
    assert_int_equal(truncate(path, sb.st_size - 10), 0);
    assert_int_equal(audit_verify_jsonl(path, st, &r), 0);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 20);
    assert_non_null(strstr(r.what, "truncated"));
    /* ... and at a line boundary: only the store shows it */
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    long keep = 0;
    for (int i = 0; i < 15; i++) {
        assert_true(getline(&line, &cap, f) > 0);
        keep = ftell(f);
    }
    free(line);
    fclose(f);
    assert_int_equal(truncate(path, keep), 0);
    assert_int_equal(audit_verify_jsonl(path, NULL, &r), 0);
    assert_true(r.intact); /* a prefix is a valid chain */
    assert_int_equal(audit_verify_jsonl(path, st, &r), 0);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 16);
    assert_non_null(strstr(r.what, "ends at event 15"));

    /* an edited line */
    snprintf(path, sizeof path, "%s/edit.jsonl", e->dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sed '12s/alice/mallory/' '%s' > '%s'", e->jsonl, path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(audit_verify_jsonl(path, st, &r), 0);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 12);
    /* a line removed in the middle */
    snprintf(cmd, sizeof cmd, "sed '7d' '%s' > '%s'", e->jsonl, path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(audit_verify_jsonl(path, NULL, &r), 0);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 7);
    store_close(st);

    /* restart after a crash left the JSONL behind the store: the writer copies the rest */
    snprintf(cmd, sizeof cmd, "head -n 18 '%s' > '%s.tmp' && mv '%s.tmp' '%s'", e->jsonl, e->jsonl,
             e->jsonl, e->jsonl);
    assert_int_equal(system(cmd), 0);
    run_events(e, 5);
    st = open_ro(e->db);
    assert_int_equal(audit_verify_jsonl(e->jsonl, st, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.last_seq, 25);
    assert_int_equal(audit_verify_store(st, NULL, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.events, 25);
    store_close(st);
    env_free(e);
}

struct feed_seen {
    atomic_uint n; /* counted last: line and last are written when n moves */
    uint64_t last;
    char line[2048];
};

static void feed_cb(void *ctx, uint64_t seq, const char *line, size_t len)
{
    struct feed_seen *f = ctx;
    f->last = seq;
    snprintf(f->line, sizeof f->line, "%.*s", (int)len, line);
    atomic_fetch_add(&f->n, 1);
}

/* Until *n reaches want (within 5 s): the writer moves audit_committed_seq() before it calls
 * the feeds, so a feed's count can trail the committed seq for a moment (a batch split under
 * load made test_feed_wanted fail in CI). */
static void wait_count(atomic_uint *n, unsigned want)
{
    for (int i = 0; i < 5000 && atomic_load(n) < want; i++)
        usleep(1000);
}

struct feed_gate {
    struct feed_seen seen;
    atomic_bool open;
    atomic_uint skipped;
};

static void gate_event(void *ctx, uint64_t seq, const char *line, size_t len)
{
    feed_cb(&((struct feed_gate *)ctx)->seen, seq, line, len);
}

static bool gate_wanted(void *ctx)
{
    return atomic_load(&((struct feed_gate *)ctx)->open);
}

static void gate_skipped(void *ctx, unsigned n)
{
    atomic_fetch_add(&((struct feed_gate *)ctx)->skipped, n);
}

/* A feed that wants no lines is told how many events it missed instead, while a feed beside
 * it that always wants them gets every line; the first gets lines again once it wants them. */
static void test_feed_wanted(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256];
    struct feed_gate g = {0};
    const struct audit_feed sub = {
        .event = gate_event, .wanted = gate_wanted, .skipped = gate_skipped, .ctx = &g};
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    struct feed_seen all = {0};
    const struct audit_feed every = {.event = feed_cb, .ctx = &all};
    assert_int_equal(audit_feed_subscribe(&sub), 0);
    assert_int_equal(audit_feed_subscribe(&every), 0);
    uint64_t last = 0;
    for (int i = 0; i < 5; i++)
        last = emit_statement("alice", "allow", 0, i);
    wait_committed(last);
    wait_count(&all.n, 5);
    wait_count(&g.skipped, 5);
    assert_int_equal(atomic_load(&g.seen.n), 0);
    assert_int_equal(atomic_load(&g.skipped), 5);
    assert_int_equal(atomic_load(&all.n), 5);
    assert_int_equal(all.last, last);
    audit_feed_unsubscribe(&every);

    atomic_store(&g.open, true);
    last = emit_statement("alice", "allow", 0, 9);
    wait_committed(last);
    wait_count(&g.seen.n, 1);
    assert_int_equal(atomic_load(&g.seen.n), 1);
    assert_int_equal(g.seen.last, last);
    assert_non_null(strstr(g.seen.line, "\"hash\":\""));
    assert_int_equal(atomic_load(&g.skipped), 5);
    audit_feed_unsubscribe(&sub);
    audit_stop();
    env_free(e);
}

/* The store at db ends with one events_lost event, at seq, and its chain is intact. */
static void assert_lost_marker_at(const char *db, uint64_t seq)
{
    struct store *sto = open_ro(db);
    struct seen s = {0};
    struct store_query q = {.kind = "events_lost"};
    assert_int_equal(store_events_query(sto, &q, collect, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seqs[0], seq);
    struct audit_verify_result r;
    assert_int_equal(audit_verify_store(sto, NULL, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.events, seq);
    store_close(sto);
}

static void test_failing_store_and_queue_full(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.queue = 8;
    char err[256];
    struct feed_seen feed = {0};
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    const struct audit_feed sub = {.event = feed_cb, .ctx = &feed};
    assert_int_equal(audit_feed_subscribe(&sub), 0);
    uint64_t s1 = emit_statement("alice", "allow", 0, 1);
    wait_committed(s1);
    wait_count(&feed.n, 1);
    assert_int_equal(atomic_load(&feed.n), 1);
    assert_non_null(strstr(feed.line, "\"hash\":\""));

    store_test_fail_writes(true);
    uint64_t s2 = emit_statement("alice", "allow", 0, 2);
    wait_unhealthy();
    struct audit_stats st;
    audit_stats_get(&st);
    assert_true(st.write_errors >= 1);
    assert_non_null(strstr(st.last_error, "disk is full"));
    /* the queue (8) fills while the writer retries the batch in flight; then emit says 0 */
    uint64_t last = s2, got;
    unsigned queued = 0;
    while ((got = emit_statement("alice", "allow", 0, 3)) != 0) {
        last = got;
        assert_true(++queued <= 8);
    }
    assert_int_equal(queued, 8);
    assert_int_equal(emit_statement("alice", "allow", 0, 4), 0);
    audit_stats_get(&st);
    assert_int_equal(st.lost, 2);
    assert_int_equal(st.queued, 9);
    assert_int_equal(audit_committed_seq(), s1);

    /* writable again: everything kept is committed, and the loss is recorded */
    store_test_fail_writes(false);
    wait_committed(last + 1);
    assert_true(audit_healthy());
    audit_feed_unsubscribe(&sub);
    audit_stop();
    assert_lost_marker_at(e->db, last + 1);
    env_free(e);
}

/* ---- the journal */

struct bodies {
    unsigned n;
    char body[16][1024];
    uint64_t seq[16];
};

static int collect_body(void *ctx, const struct store_event *ev)
{
    struct bodies *b = ctx;
    if (b->n < 16) {
        snprintf(b->body[b->n], sizeof b->body[0], "%.*s", (int)ev->body_len, ev->body);
        b->seq[b->n] = ev->seq;
    }
    b->n++;
    return 0;
}

/* The journal record of a write stmt by a process that crashed. */
static void journal_payload(const char *stmt, int64_t time_us, struct sbuf *out)
{
    struct audit_event ev = {.kind = AUDIT_STATEMENT,
                             .time_us = time_us,
                             .session_id = 9,
                             .identity = "alice",
                             .instance = "crashed:1",
                             .statement = stmt,
                             .command = "UPDATE",
                             .class_ = "write",
                             .decision = "allow"};
    audit_rec_encode(&ev, out);
}

static void journal_put_at(struct audit_journal *j, uint64_t seq, const char *stmt, int64_t time_us)
{
    struct sbuf b = {0};
    journal_payload(stmt, time_us, &b);
    struct audit_journal_slot slot;
    assert_int_equal(audit_journal_reserve(j, seq, b.len, &slot), 0);
    audit_journal_fill(j, &slot, b.p);
    sbuf_free(&b);
}

/* A record made by a process that crashed long ago. */
static void journal_put(struct audit_journal *j, uint64_t seq, const char *stmt)
{
    journal_put_at(j, seq, stmt, 1700000000000000 + (int64_t)seq);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

struct replay_seen {
    unsigned n;
    uint64_t seq[8];
    char stmt[8][64];
};

static void replay_cb(void *ctx, uint64_t seq, struct audit_rec *rec)
{
    struct replay_seen *r = ctx;
    if (r->n < 8) {
        r->seq[r->n] = seq;
        snprintf(r->stmt[r->n], sizeof r->stmt[0], "%s", rec->ev->statement);
    }
    r->n++;
    free(rec);
}

/* Append to path a record as sluice wrote it before the journal's check64 (magic "SLJ1",
 * FNV-1a 64 of seq and payload), its check flipped when bad. */
static void journal_append_v1(const char *path, uint64_t seq, const char *stmt, bool bad)
{
    struct sbuf b = {0};
    journal_payload(stmt, 1700000000000000, &b);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof seq + b.len; i++) {
        h ^= i < sizeof seq ? ((const unsigned char *)&seq)[i] : (unsigned char)b.p[i - sizeof seq];
        h *= 0x100000001b3ull;
    }
    if (bad) h ^= 1;
    uint32_t head[2] = {0x314a4c53u, (uint32_t)b.len};
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(head, sizeof head, 1, f), 1);
    assert_int_equal(fwrite(&seq, sizeof seq, 1, f), 1);
    assert_int_equal(fwrite(&h, sizeof h, 1, f), 1);
    assert_int_equal(fwrite(b.p, b.len, 1, f), 1);
    fclose(f);
    sbuf_free(&b);
}

/* Records an older sluice left ("SLJ1", FNV-1a checks) are replayed after an upgrade; one
 * whose check does not match is rejected. */
static void test_journal_replays_v1_records(void **state)
{
    (void)state;
    struct env *e = env_new();
    uint64_t last = run_events(e, 3);
    char err[256], j0[256];
    snprintf(j0, sizeof j0, "%s.audit-journal.0", e->db);
    assert_int_equal(file_size(j0), 0);
    journal_append_v1(j0, last + 1, "UPDATE t SET a = $1 /* from v1 */", false);
    journal_append_v1(j0, last + 2, "UPDATE t SET a = $1 /* bad check */", true);
    struct audit_journal *j = NULL;
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    struct replay_seen seen = {0};
    unsigned rejected = 0;
    assert_int_equal(audit_journal_replay(j, last, replay_cb, &seen, &rejected, err, sizeof err),
                     1);
    assert_int_equal(rejected, 1);
    assert_int_equal(seen.seq[0], last + 1);
    assert_non_null(strstr(seen.stmt[0], "from v1"));
    audit_journal_close(j);
    env_free(e);
}

/* What a crash leaves: records in both files (one already in the store), a torn record at
 * the end of a file. Replay skips what the store has and stops at the torn bytes; the next
 * start commits the rest after the store's last event, records the gap, empties the files. */
static void test_journal_recovery(void **state)
{
    (void)state;
    struct env *e = env_new();
    uint64_t last = run_events(e, 5);
    char err[256], j0[256], j1[256];
    snprintf(j0, sizeof j0, "%s.audit-journal.0", e->db);
    snprintf(j1, sizeof j1, "%s.audit-journal.1", e->db);
    assert_int_equal(file_size(j0), 0); /* a clean stop leaves the journal empty */

    struct audit_journal *j = NULL;
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    journal_put(j, last, "UPDATE t SET a = $1 /* in the store already */");
    journal_put(j, last + 2, "UPDATE t SET a = $1 /* second */");
    journal_put(j, last + 4, "UPDATE t SET a = $1 /* fourth */");
    audit_journal_close(j);
    FILE *f = fopen(j0, "ab"); /* half a record: a crash in the middle of an append */
    assert_non_null(f);
    fwrite("SLJ2\x40\0\0\0\x09", 1, 9, f);
    fclose(f);

    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    struct audit_journal *j2 = NULL; /* one process at a time */
    assert_int_equal(audit_journal_open(e->db, &j2, err, sizeof err), -1);
    assert_non_null(strstr(err, "another sluice process"));
    struct replay_seen seen = {0};
    unsigned rejected = 9;
    assert_int_equal(audit_journal_replay(j, last, replay_cb, &seen, &rejected, err, sizeof err),
                     2);
    assert_int_equal(rejected, 0); /* a torn tail is not a rejected record */
    assert_int_equal(seen.seq[0], last + 2);
    assert_int_equal(seen.seq[1], last + 4);
    assert_non_null(strstr(seen.stmt[1], "fourth"));
    audit_journal_close(j);

    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    assert_int_equal(file_size(j0), 0);
    assert_int_equal(file_size(j1), 0);
    struct store *st = open_ro(e->db);
    struct bodies b = {0};
    assert_int_equal(store_events_scan(st, last, collect_body, &b), 0);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.seq[0], last + 1);
    assert_non_null(strstr(b.body[0], "second"));
    assert_non_null(strstr(b.body[0], "\"instance\":\"crashed:1\""));
    assert_non_null(strstr(b.body[1], "fourth"));
    assert_non_null(strstr(b.body[2], "\"kind\":\"events_lost\""));
    assert_non_null(strstr(b.body[2], "2 events recovered"));
    assert_non_null(strstr(b.body[2], "at least 2 events"));
    struct audit_verify_result r;
    assert_int_equal(audit_verify_store(st, NULL, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.last_seq, last + 3);
    store_close(st);

    /* A crash after that commit but before the journal was emptied: the next start finds the
     * same records again, and must not commit them twice. */
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    journal_put(j, last + 2, "UPDATE t SET a = $1 /* second */");
    journal_put(j, last + 4, "UPDATE t SET a = $1 /* fourth */");
    audit_journal_close(j);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    st = open_ro(e->db);
    memset(&b, 0, sizeof b);
    assert_int_equal(store_events_scan(st, last, collect_body, &b), 0);
    assert_int_equal(b.n, 3);
    store_close(st);
    assert_int_equal(file_size(j0), 0);

    /* The journal was emptied after that recovery and the next run crashed before it could
     * commit anything: its write, numbered on from the marker (last + 3) and so at most the
     * marker's ref (last + 4), was made after the marker and must be recovered. */
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    journal_put_at(j, last + 4, "UPDATE t SET a = $1 /* after the marker */", audit_now_us());
    audit_journal_close(j);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    st = open_ro(e->db);
    memset(&b, 0, sizeof b);
    assert_int_equal(store_events_scan(st, last + 3, collect_body, &b), 0);
    assert_int_equal(b.n, 2); /* the write and a new marker */
    assert_non_null(strstr(b.body[0], "after the marker"));
    store_close(st);
    env_free(e);
}

/* Emitters copy their records outside the lock: a crash can leave a record whose copy was
 * not finished (check still 0) before a whole one. Replay skips the first, keeps the second,
 * and never reads past the end marker into what an emptied file held before. */
static void test_journal_half_copied_and_reused(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256];
    struct audit_journal *j = NULL;
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    /* records of one size, so that a reused file's new record ends where an old one starts */
    journal_put(j, 1, "UPDATE t SET a = $1 /* one */");
    journal_put(j, 2, "UPDATE t SET a = $1 /* two */");
    audit_journal_committed(j, 2); /* file 0 emptied, appends move to file 1 */
    journal_put(j, 3, "UPDATE t SET a = $1 /* thr */");
    audit_journal_committed(j, 3);                      /* file 1 emptied, back to file 0 */
    journal_put(j, 4, "UPDATE t SET a = $1 /* fou */"); /* over record 1; record 2 follows */
    struct replay_seen seen = {0};
    unsigned rejected = 9;
    assert_int_equal(audit_journal_replay(j, 0, replay_cb, &seen, &rejected, err, sizeof err), 1);
    assert_int_equal(seen.seq[0], 4);
    struct audit_journal_slot slot;
    assert_int_equal(audit_journal_reserve(j, 5, 40, &slot), 0); /* never filled */
    journal_put(j, 6, "UPDATE t SET a = $1 /* six */");
    assert_int_equal(audit_journal_pending(e->db), 2);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(audit_journal_replay(j, 0, replay_cb, &seen, &rejected, err, sizeof err), 2);
    assert_int_equal(rejected, 0);
    assert_int_equal(seen.seq[0], 4);
    assert_int_equal(seen.seq[1], 6);
    assert_non_null(strstr(seen.stmt[1], "six"));
    audit_journal_close(j);
    env_free(e);
}

/* A durable event is in the journal when audit_emit() returns, even while the store cannot
 * be written; once the store has it, the writer empties the journal. */
static void test_journal_durable_emit(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256], j0[256];
    snprintf(j0, sizeof j0, "%s.audit-journal.0", e->db);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    store_test_fail_writes(true);
    struct audit_event ev = {.kind = AUDIT_STATEMENT,
                             .identity = "alice",
                             .statement = "DELETE FROM t WHERE id = $1",
                             .class_ = "write",
                             .decision = "allow",
                             .durable = true};
    uint64_t seq = audit_emit(&ev);
    assert_true(seq > 0);
    assert_int_equal(audit_journal_pending(e->db), 1);
    ev.durable = false; /* a read: not journaled */
    assert_true(audit_emit(&ev) > seq);
    assert_int_equal(audit_journal_pending(e->db), 1);
    store_test_fail_writes(false);
    wait_committed(seq + 1);
    for (int i = 0; i < 2000 && audit_journal_pending(e->db) != 0; i++)
        usleep(1000);
    assert_int_equal(audit_journal_pending(e->db), 0);
    assert_true(file_size(j0) > 0); /* emptied, its space kept for the next records */
    audit_stop();
    assert_int_equal(file_size(j0), 0); /* a clean stop leaves nothing */
    env_free(e);
}

/* A stop while the store keeps failing gives up on what is queued, but the journal keeps the
 * durable events for the next start. */
static void test_journal_kept_when_stop_gives_up(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256], j0[256];
    snprintf(j0, sizeof j0, "%s.audit-journal.0", e->db);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    store_test_fail_writes(true);
    struct audit_event ev = {.kind = AUDIT_STATEMENT,
                             .identity = "alice",
                             .statement = "UPDATE t SET a = $1 /* kept */",
                             .class_ = "write",
                             .decision = "allow",
                             .durable = true};
    assert_true(audit_emit(&ev) > 0);
    audit_stop(); /* gives up after 5 s */
    assert_true(file_size(j0) > 0);
    store_test_fail_writes(false);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    assert_int_equal(file_size(j0), 0);
    struct store *st = open_ro(e->db);
    struct bodies b = {0};
    assert_int_equal(store_events_scan(st, 0, collect_body, &b), 0);
    assert_int_equal(b.n, 2);
    assert_non_null(strstr(b.body[0], "kept"));
    assert_non_null(strstr(b.body[0], "recovered from the audit journal"));
    store_close(st);
    env_free(e);
}

/* Events lost while the store failed are recorded (events_lost) even when the store
 * recovers only as sluice stops: the marker used to be skipped once the stop had begun. */
static void test_lost_recorded_at_stop(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.queue = 8;
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    store_test_fail_writes(true);
    uint64_t last = emit_statement("alice", "allow", 0, 1), got;
    wait_unhealthy(); /* the writer retries the batch of event 1 */
    while ((got = emit_statement("alice", "allow", 0, 2)) != 0) /* the queue fills up */
        last = got;
    usleep(1500000); /* the writer's retries are now a second apart: the stop comes first */
    store_test_fail_writes(false);
    audit_stop();
    assert_lost_marker_at(e->db, last + 1);
    env_free(e);
}

/* A JSON Lines file that cannot be written (/dev/full) beside a store that can: at a stop the
 * writer gives up on the file after 5 s, yet the store keeps one unbroken chain (the chain
 * used to restart from before the given-up batch) and nothing it holds is counted lost. */
static void test_jsonl_given_up_at_stop_keeps_chain(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.jsonl = "/dev/full";
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    uint64_t s1 = emit_statement("alice", "allow", 0, 1);
    wait_unhealthy(); /* s1 is in the store; the file refuses it */
    uint64_t s2 = emit_statement("alice", "allow", 0, 2);
    assert_int_equal(s2, s1 + 1);
    audit_stop(); /* gives up on the file after 5 s */
    struct audit_stats st;
    audit_stats_get(&st);
    assert_int_equal(st.lost, 0);
    struct store *sto = open_ro(e->db);
    struct audit_verify_result r;
    assert_int_equal(audit_verify_store(sto, NULL, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.events, s2);
    store_close(sto);
    env_free(e);
}

/* With a signing key, journal records carry an HMAC keyed from it: a record planted by
 * someone without the key is not replayed; one made with the key is. */
static void test_journal_records_keyed(void **state)
{
    (void)state;
    struct env *e = env_new();
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(key);
    FILE *f = fopen(e->key, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    e->cfg.audit.signing_key = e->key;
    uint64_t last = run_events(e, 3);
    unsigned char raw[64];
    size_t rawlen = sizeof raw;
    assert_int_equal(EVP_PKEY_get_raw_private_key(key, raw, &rawlen), 1);

    char err[256];
    struct audit_journal *j = NULL;
    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    journal_put(j, last + 1, "UPDATE t SET a = $1 /* planted, no key */");
    audit_journal_close(j);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    struct store *st = open_ro(e->db);
    struct bodies b = {0};
    assert_int_equal(store_events_scan(st, last, collect_body, &b), 0);
    store_close(st);
    assert_int_equal(b.n, 0);

    assert_int_equal(audit_journal_open(e->db, &j, err, sizeof err), 0);
    audit_journal_set_key(j, raw, rawlen);
    journal_put(j, last + 1, "UPDATE t SET a = $1 /* keyed */");
    audit_journal_close(j);
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    audit_stop();
    st = open_ro(e->db);
    memset(&b, 0, sizeof b);
    assert_int_equal(store_events_scan(st, last, collect_body, &b), 0);
    store_close(st);
    assert_true(b.n >= 1);
    assert_non_null(strstr(b.body[0], "keyed"));
    EVP_PKEY_free(key);
    env_free(e);
}

/* A real full disk: a small tmpfs under the store (root only; skipped elsewhere). */
static void test_disk_full_tmpfs(void **state)
{
    (void)state;
    struct env *e = env_new();
    char mnt[160], cmd[600];
    snprintf(mnt, sizeof mnt, "%s/mnt", e->dir);
    assert_int_equal(mkdir(mnt, 0700), 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=256k tmpfs '%s' 2>/dev/null", mnt);
    if (geteuid() != 0 || system(cmd) != 0) {
        env_free(e);
        skip();
    }
    snprintf(e->db, sizeof e->db, "%.150s/sluice.db", mnt);
    e->cfg.audit.queue = 100000;
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    static char detail[4000];
    memset(detail, 'x', sizeof detail - 1);
    uint64_t last = 0;
    for (int i = 0; i < 400 && audit_healthy(); i++) {
        struct audit_event ev = {.kind = AUDIT_CONFIG_RELOAD, .detail = detail};
        last = audit_emit(&ev);
        assert_true(last > 0);
        if (i % 20 == 19) usleep(20000);
    }
    wait_unhealthy();
    struct audit_stats st;
    audit_stats_get(&st);
    assert_true(audit_committed_seq() < last);
    assert_true(st.write_errors > 0);
    snprintf(cmd, sizeof cmd, "mount -o remount,size=16m '%s'", mnt);
    assert_int_equal(system(cmd), 0);
    wait_committed(last);
    assert_true(audit_healthy());
    audit_stop();
    struct audit_verify_result r;
    verify_store_path(e->db, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.last_seq, last);
    snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
    assert_int_equal(system(cmd), 0);
    env_free(e);
}

static void test_retention(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.retention = 3600;
    e->cfg.audit.jsonl = e->jsonl;
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    int64_t old = audit_now_us() - 7200LL * 1000000;
    uint64_t last = 0;
    for (int i = 1; i <= 35; i++)
        last = emit_statement("alice", "allow", old + i, i);
    for (int i = 36; i <= 50; i++)
        last = emit_statement("alice", "allow", 0, i);
    wait_committed(last);
    uint64_t pruned = 0;
    /* (the writer's own minute timer may have pruned already, right after the commit) */
    assert_int_equal(audit_writer_prune_now(&pruned), 0);
    assert_true(pruned == 30 || pruned == 0);
    assert_int_equal(audit_writer_prune_now(&pruned), 0);
    assert_int_equal(pruned, 0); /* up to the checkpoint at 30; 31..35 wait for the next */
    audit_stop();

    struct store *st = open_ro(e->db);
    struct audit_verify_result r;
    assert_int_equal(audit_verify_store(st, NULL, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.anchor_seq, 30);
    assert_int_equal(r.first_seq, 31);
    assert_int_equal(r.events, 20);
    /* the JSONL keeps everything and still agrees */
    assert_int_equal(audit_verify_jsonl(e->jsonl, st, &r), 0);
    assert_true(r.intact);
    assert_int_equal(r.events, 50);
    store_close(st);

    /* the CLI holds the anchor to the configuration: with the retention in force it is
     * intact; with none configured (nothing prunes), or a retention longer than the anchor's
     * age, the head of the chain was deleted by someone else */
    char cfgpath[256];
    const char *const retentions[] = {"1h", NULL, "30d"};
    const int want[] = {0, 1, 1};
    for (int i = 0; i < 3; i++) {
        snprintf(cfgpath, sizeof cfgpath, "%s/ret%d.yaml", e->dir, i);
        FILE *f = fopen(cfgpath, "w");
        assert_non_null(f);
        fprintf(f, "targets:\n  - { name: shop, host: 127.0.0.1, user: app }\n");
        if (retentions[i]) fprintf(f, "audit: { retention: %s }\n", retentions[i]);
        fclose(f);
        char *argv_anchor[] = {"audit", "verify", "-c", cfgpath, "--db", e->db, NULL};
        assert_int_equal(audit_cli_main(6, argv_anchor), want[i]);
    }

    /* deleting the anchor is noticed */
    struct audit_verify_result t =
        tampered(e, "a1", "DELETE FROM audit_checkpoints WHERE seq = 30", NULL);
    assert_false(t.intact);
    assert_int_equal(t.broken_seq, 30);

    /* the chain continues after a restart */
    run_events(e, 5);
    verify_store_path(e->db, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.last_seq, 55);
    env_free(e);
}

static int rows_of(void *ctx, const struct store_event *ev)
{
    const char *p = strstr(ev->body, "\"rows\":");
    *(long *)ctx = p ? atol(p + 7) : -1;
    return 1;
}

/* audit_fold(): a write's result replaces its queued statement event while the writer has not
 * taken it (here: the writer is stuck retrying an earlier batch), and not once it has. */
static void test_fold(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    uint64_t s1 = emit_statement("alice", "allow", 0, 1);
    wait_committed(s1);
    assert_false(audit_fold(s1, &(struct audit_event){.kind = AUDIT_STATEMENT, .rows = 9}));

    store_test_fail_writes(true);
    uint64_t s2 = emit_statement("alice", "allow", 0, 2); /* the batch the writer retries */
    wait_unhealthy();
    struct audit_event pre = {.kind = AUDIT_STATEMENT,
                              .identity = "alice",
                              .statement = "UPDATE t SET a = $1",
                              .decision = "allow",
                              .time_us = audit_now_us(),
                              .durable = true};
    uint64_t s3 = audit_emit(&pre);
    assert_true(s3 > s2);
    struct audit_event full = pre;
    full.durable = false;
    full.rows = 7;
    full.time_us = pre.time_us + 1; /* not the queued event's time */
    assert_false(audit_fold(s3, &full));
    full.time_us = pre.time_us;
    assert_true(audit_fold(s3, &full));
    assert_false(audit_fold(s3 + 1, &full)); /* not queued */
    store_test_fail_writes(false);
    wait_committed(s3);
    audit_stop();

    struct store *st = open_ro(e->db);
    long rows = 0;
    struct store_query q = {.after_seq = s3 - 1, .limit = 1};
    assert_int_equal(store_events_query(st, &q, rows_of, &rows), 1);
    assert_int_equal(rows, 7);
    uint64_t last;
    char hash[STORE_HASH_HEX];
    assert_int_equal(store_events_last(st, &last, hash), 0);
    assert_int_equal(last, s3); /* no event for the result beside it */
    store_close(st);
    struct audit_verify_result r;
    verify_store_path(e->db, NULL, &r);
    assert_true(r.intact);
    env_free(e);
}

/* The emitter keeps the hash state of a repeated head by its kind and the ids of the session's
 * and the statement's JSON (the same memory holds other JSON under another id, as a freed
 * part's would); parts without ids are hashed every time. Every body stays in the chain that
 * verify recomputes. */
static void test_head_hash_kept(void **state)
{
    (void)state;
    struct env *e = env_new();
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    char sess[128], stmt[128];
    static const char *const sessions[] = {
        ",\"session\":1,\"identity\":\"alice\",\"application_name\":\"psql\"",
        ",\"session\":1,\"identity\":\"alice\",\"application_name\":\"pgbench\"",
        ",\"session\":1,\"identity\":\"alice\",\"application_name\":\"psqL\""};
    static const char *const stmts[] = {",\"statement\":\"SELECT $1\"",
                                        ",\"statement\":\"DELETE $1\""};
    uint64_t last = 0;
    for (int i = 0; i < 12; i++) {
        snprintf(sess, sizeof sess, "%s", sessions[i % 3]);
        snprintf(stmt, sizeof stmt, "%s", stmts[i / 3 % 2]);
        /* ids name the bytes; the last three statements' have none */
        uint64_t sid = (uint64_t)(i % 3) + 1, tid = i < 9 ? (uint64_t)(i / 3 % 2) + 1 : 0;
        struct audit_event ev = {.kind = i % 4 == 3 ? AUDIT_STATEMENT_END : AUDIT_STATEMENT,
                                 .identity = "alice",
                                 .decision = "allow",
                                 .rows = (uint64_t)i,
                                 .session_json = {sess, strlen(sess), sid},
                                 .statement_json = {stmt, strlen(stmt), tid}};
        last = audit_emit(&ev);
        assert_true(last > 0);
    }
    wait_committed(last);
    audit_stop();
    struct audit_verify_result r;
    verify_store_path(e->db, NULL, &r);
    if (!r.intact) fail_msg("event %llu: %s", (unsigned long long)r.broken_seq, r.what);
    assert_int_equal(r.events, 12);
    env_free(e);
}

static void test_disabled(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.enabled = false;
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    uint64_t a = emit_statement("alice", "allow", 0, 1);
    uint64_t b = emit_statement("alice", "allow", 0, 2);
    assert_true(a > 0 && b > a);
    assert_true(audit_committed_seq() >= b);
    audit_stop();
    struct stat sb;
    assert_int_equal(stat(e->db, &sb), -1); /* nothing written */
    env_free(e);
}

static void test_digest(void **state)
{
    (void)state;
    /* two rows: ('a@x.io', NULL) and ('', '42'), as DataRow bodies */
    static const uint8_t row1[] = {0,   2,   0,   0,   0,    6,    'a',  '@',
                                   'x', '.', 'i', 'o', 0xff, 0xff, 0xff, 0xff};
    static const uint8_t row2[] = {0, 2, 0, 0, 0, 0, 0, 0, 0, 2, '4', '2'};
    struct audit_digest d;
    char h1[65], h2[65], h3[65];
    audit_digest_init(&d);
    audit_digest_datarow(&d, row1, sizeof row1);
    audit_digest_datarow(&d, row2, sizeof row2);
    assert_int_equal(d.rows, 2);
    audit_digest_final(&d, h1);
    audit_digest_init(&d);
    audit_digest_column(&d, "a@x.io", 6);
    audit_digest_column(&d, NULL, -1);
    audit_digest_column(&d, "", 0);
    audit_digest_column(&d, "42", 2);
    audit_digest_final(&d, h2);
    assert_string_equal(h1, h2);
    /* the recipe, by hand */
    uint8_t all[sizeof row1 + sizeof row2 - 4];
    memcpy(all, row1 + 2, sizeof row1 - 2);
    memcpy(all + sizeof row1 - 2, row2 + 2, sizeof row2 - 2);
    audit_sha256_hex(all, sizeof all, h3);
    assert_string_equal(h1, h3);
    audit_digest_init(&d);
    audit_digest_final(&d, h1);
    assert_string_equal(h1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* no row byte stays in the context after the final (digest.c relies on SHA256_Final's
     * own wipe): a value shorter than a block waits in its buffer until then */
    static const char secret[] = "4111111111111111";
    audit_digest_init(&d);
    audit_digest_column(&d, secret, (int32_t)strlen(secret));
    assert_non_null(memmem(d.state, sizeof d.state, secret, strlen(secret)));
    audit_digest_final(&d, h1);
    assert_null(memmem(d.state, sizeof d.state, secret, strlen(secret)));
    assert_false(d.active);
}

static void test_rec_reuse(void **state)
{
    (void)state;
    struct audit_event ev = {.kind = AUDIT_STATEMENT, .identity = "alice", .statement = "SELECT 1"};
    struct audit_rec *r = audit_rec_reuse(NULL, &ev, 64);
    assert_true(r->room >= 64);
    assert_string_equal(r->ev->identity, "alice");
    assert_ptr_equal(r->identity, r->ev->identity); /* what the writer reads of every record */
    assert_int_equal(r->kind, AUDIT_STATEMENT);
    assert_true(r->time_us > 0); /* now, the event having no time */
    /* room enough: the same record, its strings replaced */
    ev.identity = "bob";
    struct audit_rec *same = audit_rec_reuse(r, &ev, 64);
    assert_ptr_equal(same, r);
    assert_string_equal(r->ev->identity, "bob");
    assert_string_equal(r->ev->statement, "SELECT 1");
    assert_ptr_not_equal(r->ev->statement, ev.statement); /* a copy */
    /* too little room: a new record (the spare is freed; ASan checks) */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ev.statement = big;
    struct audit_rec *grown = audit_rec_reuse(r, &ev, 64);
    assert_true(grown->room >= sizeof big);
    assert_string_equal(grown->ev->statement, big);
    assert_string_equal(grown->ev->identity, "bob");
    assert_null(grown->ev->detail);
    free(grown);
}

/* A statement event with every field a statement's event can carry, strings that need
 * escaping among them. */
static struct audit_event sample_statement(void)
{
    return (struct audit_event){
        .kind = AUDIT_STATEMENT,
        .time_us = 1764100000123456,
        .session_id = 42,
        .identity = "alice@corp.com",
        .identity_kind = "human",
        .groups = "eng,ops",
        .auth_method = "password",
        .client_addr = "10.0.0.1:5000",
        .application_name = "app \"quoted\"\n\x01",
        .target = "main",
        .statement = "SELECT * FROM t WHERE a = $1",
        .fingerprint = "0123456789abcdef",
        .command = "SELECT",
        .class_ = "read",
        .tables = "public.t,public.u",
        .decision = "allow",
        .rule = "default",
        .rows = 3,
        .masked = "{\"email\":2}",
        .digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"};
}

/* A body its emitter began (audit_rec_reserve, audit_rec_body_begin, its head copied or made
 * from the event's serialized parts) and the writer closed in place (audit_rec_body_close) is
 * byte for byte the body the writer serializes itself, with the same chain hash, for the
 * shortest and the longest seq; closing it twice (a retried batch) gives the same again. */
static void test_rec_body(void **state)
{
    (void)state;
    struct audit_event ev = sample_statement();
    const char *prev = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const uint64_t seqs[] = {1, UINT64_MAX};
    for (size_t k = 0; k < sizeof seqs / sizeof seqs[0]; k++) {
        struct sbuf want = {0}, head = {0}, fields = {0};
        audit_event_body(&ev, seqs[k], "host:1", prev, &want);
        char want_hash[AUDIT_HASH_HEX], hash[AUDIT_HASH_HEX];
        audit_sha256_hex(want.p, want.len, want_hash);

        audit_event_head(&ev, "host:1", &head);
        audit_event_fields(&ev, &fields);
        size_t room = audit_rec_body_room(head.len, fields.len);
        struct audit_rec *r = audit_rec_reserve(NULL, &ev, room, 0);
        assert_string_equal(r->identity, "alice@corp.com");
        assert_string_equal(r->decision, "allow");
        assert_null(r->ev); /* the rest is in the body only */
        assert_int_equal(r->time_us, ev.time_us);
        r->seq = seqs[k];
        /* the head hashed with the body, or its hash state kept from before (the emitter's
         * cache of repeated heads): the same body and hash */
        struct audit_digest kept;
        audit_head_hash(head.p, head.len, &kept);
        for (int from_kept = 0; from_kept < 2; from_kept++) {
            audit_rec_body_begin(r, head.p, head.len, from_kept ? &kept : NULL, fields.p,
                                 fields.len);
            for (int round = 0; round < 2; round++) {
                size_t len = audit_rec_body_close(r, prev, hash);
                assert_int_equal(len, want.len);
                assert_true(len <= room);
                assert_memory_equal(r->body, want.p, want.len);
                assert_string_equal(hash, want_hash);
            }
        }
        /* the head written straight from the event's serialized parts (audit_rec_head_parts,
         * body_begin with head NULL), hashed with the body or from a kept state: the same */
        struct sbuf sess = {0}, stmt = {0};
        audit_fields_session(&ev, "host:1", &sess);
        audit_fields_statement(&ev, &stmt);
        struct audit_event with = ev;
        with.session_json = (struct audit_json){sess.p, sess.len, 1};
        with.statement_json = (struct audit_json){stmt.p, stmt.len, 2};
        assert_int_equal(audit_head_parts_len(&with), head.len);
        struct audit_rec *pr = audit_rec_reserve(NULL, &with, room, 0);
        pr->seq = seqs[k];
        for (int from_kept = 0; from_kept < 2; from_kept++) {
            audit_rec_head_parts(pr, &with);
            audit_rec_body_begin(pr, NULL, head.len, from_kept ? &kept : NULL, fields.p,
                                 fields.len);
            size_t len = audit_rec_body_close(pr, prev, hash);
            assert_int_equal(len, want.len);
            assert_memory_equal(pr->body, want.p, want.len);
            assert_string_equal(hash, want_hash);
        }
        free(pr);
        sbuf_free(&sess);
        sbuf_free(&stmt);
        /* reused with room enough: the same record */
        struct audit_rec *same = audit_rec_reserve(r, &ev, room, 0);
        assert_ptr_equal(same, r);
        assert_int_equal(same->body_len, 0);
        free(same);
        sbuf_free(&want);
        sbuf_free(&head);
        sbuf_free(&fields);
    }
}

/* Parts serialized ahead (audit_event.session_json, statement_json) give the same head as
 * serializing the event's own values; a queued copy does not keep them (the caller's memory). */
static void test_json_parts(void **state)
{
    (void)state;
    struct audit_event ev = sample_statement();
    struct sbuf want = {0}, got = {0}, sess = {0}, stmt = {0};
    audit_event_head(&ev, "host:1", &want);
    audit_fields_session(&ev, "host:1", &sess);
    audit_fields_statement(&ev, &stmt);
    assert_non_null(strstr(sess.p, "\"target\":\"main\""));
    assert_null(strstr(sess.p, "statement"));
    assert_non_null(strstr(stmt.p, "\"tables\":[\"public.t\",\"public.u\"]"));
    struct audit_event with = ev;
    with.session_json = (struct audit_json){sess.p, sess.len, 1};
    with.statement_json = (struct audit_json){stmt.p, stmt.len, 2};
    audit_event_head(&with, "host:1", &got);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.p, want.p, want.len);

    /* the head an emitter writes straight into a record from the parts */
    assert_int_equal(audit_head_parts_len(&with), want.len);
    struct audit_rec *direct = audit_rec_reserve(NULL, &with, want.len, 0);
    audit_rec_head_parts(direct, &with);
    assert_memory_equal(direct->body, want.p, want.len);
    free(direct);

    struct audit_rec *r = audit_rec_new(&with);
    assert_null(r->ev->session_json.p);
    assert_null(r->ev->statement_json.p);
    got.len = 0;
    audit_event_head(r->ev, "host:1", &got);
    assert_memory_equal(got.p, want.p, want.len);
    free(r);
    sbuf_free(&want);
    sbuf_free(&got);
    sbuf_free(&sess);
    sbuf_free(&stmt);
}

/* ---- throughput */

struct bench_arg {
    int n;
    uint64_t last, retries;
};

static void *bench_thread(void *p)
{
    struct bench_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        uint64_t s;
        while ((s = emit_statement("alice", "allow", 0, i)) == 0) {
            a->retries++;
            usleep(50);
        }
        a->last = s;
    }
    return NULL;
}

/* Two producers against the writer: every event lands (or is counted lost), none twice. */
static void test_throughput(void **state)
{
    (void)state;
    struct env *e = env_new();
    e->cfg.audit.queue = 65536;
    e->cfg.audit.checkpoint = 1000;
    char err[256];
    assert_int_equal(audit_start(&e->cfg, err, sizeof err), 0);
    enum { THREADS = 2, PER = 20000 };
    pthread_t th[THREADS];
    struct bench_arg args[THREADS] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++) {
        args[i].n = PER;
        pthread_create(&th[i], NULL, bench_thread, &args[i]);
    }
    uint64_t last = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (args[i].last > last) last = args[i].last;
    }
    wait_committed(last);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    struct audit_stats s;
    audit_stats_get(&s);
    audit_stop();
    printf("audit throughput: %d events in %.3f s = %.0f events/s (queue-full retries %llu)\n",
           THREADS * PER, secs, THREADS * PER / secs,
           (unsigned long long)(args[0].retries + args[1].retries));
    /* every event queued is written, plus events_lost records of the refused attempts */
    assert_true(s.written >= THREADS * PER);
    assert_true(s.written <= THREADS * PER + 1 + s.lost);
    assert_int_equal(s.lost, args[0].retries + args[1].retries);
    /* Speed is measured by `make bench` (bench/audit_bench.c), not asserted here. */
    env_free(e);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_json),
        cmocka_unit_test(test_event_body_golden),
        cmocka_unit_test(test_event_json_escaping_random),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_rec_reuse),
        cmocka_unit_test(test_rec_body),
        cmocka_unit_test(test_chain_and_tampering),
        cmocka_unit_test(test_store_query),
        cmocka_unit_test(test_signed_checkpoints),
        cmocka_unit_test(test_jsonl_truncation),
        cmocka_unit_test(test_feed_wanted),
        cmocka_unit_test(test_json_parts),
        cmocka_unit_test(test_failing_store_and_queue_full),
        cmocka_unit_test(test_journal_recovery),
        cmocka_unit_test(test_journal_replays_v1_records),
        cmocka_unit_test(test_journal_durable_emit),
        cmocka_unit_test(test_journal_half_copied_and_reused),
        cmocka_unit_test(test_journal_kept_when_stop_gives_up),
        cmocka_unit_test(test_journal_records_keyed),
        cmocka_unit_test(test_disk_full_tmpfs),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_jsonl_given_up_at_stop_keeps_chain),
        cmocka_unit_test(test_lost_recorded_at_stop),
        cmocka_unit_test(test_head_hash_kept),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
