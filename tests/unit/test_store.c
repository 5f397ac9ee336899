/*
 * test_store.c: unit tests of the SQLite state store's audit tables: searches through the
 * block ranges (by identity, time, decision, kind, seq, newest first) against a brute-force
 * filter of the same events, retention of the block rows, and the migration of a store made
 * with schema version 1 (one index entry per event) and reading such a store unmigrated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/store_pack.h"

#define N_EVENTS 3000

static const char *const identities[] = {"alice", "bob", "carol", NULL};
static const char *const decisions[] = {"allow", "deny", NULL};
static const char *const kinds[] = {"statement", "session_start"};

struct ev {
    uint64_t seq;
    int64_t time_us;
    const char *identity, *decision, *kind;
};

static struct ev events[N_EVENTS];

/* Events with times that mostly rise but jump back now and then (long statements are
 * stamped when they started), in batches of 1 to 300 like the writer's. */
static void make_events(unsigned seed)
{
    srand(seed);
    int64_t t = 1700000000000000;
    for (unsigned i = 0; i < N_EVENTS; i++) {
        t += rand() % 2000;
        int64_t back = rand() % 10 == 0 ? rand() % 500000 : 0;
        events[i] = (struct ev){i + 1, t - back, identities[rand() % 4], decisions[rand() % 3],
                                kinds[rand() % 2]};
    }
}

static void append_all(struct store *st)
{
    unsigned i = 0;
    while (i < N_EVENTS) {
        unsigned n = 1 + (unsigned)(rand() % 300);
        if (i + n > N_EVENTS) n = N_EVENTS - i;
        struct store_event sev[300];
        for (unsigned k = 0; k < n; k++) {
            const struct ev *e = &events[i + k];
            sev[k] = (struct store_event){.seq = e->seq,
                                          .time_us = e->time_us,
                                          .kind = e->kind,
                                          .identity = e->identity,
                                          .decision = e->decision,
                                          .body = "{}",
                                          .body_len = 2,
                                          .hash = "00"};
        }
        /* a checkpoint at 1500 (the store ends a block there): retention can cut there */
        struct store_checkpoint cp = {.seq = 1500, .time_us = events[1499].time_us, .hash = "00"};
        bool has_cp = events[i].seq <= 1500 && events[i + n - 1].seq >= 1500;
        assert_int_equal(store_events_append(st, sev, n, &cp, has_cp ? 1 : 0), 0);
        i += n;
    }
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static bool matches(const struct ev *e, const struct store_query *q)
{
    return e->seq > q->after_seq && (!q->identity || same(e->identity, q->identity)) &&
           (!q->decision || same(e->decision, q->decision)) &&
           (!q->kind || same(e->kind, q->kind)) &&
           (q->since_us <= 0 || e->time_us >= q->since_us) &&
           (q->until_us <= 0 || e->time_us < q->until_us);
}

struct got {
    unsigned n;
    uint64_t seq[N_EVENTS];
};

static int collect(void *ctx, const struct store_event *ev)
{
    struct got *g = ctx;
    g->seq[g->n++] = ev->seq;
    return 0;
}

/* The store's answer equals the brute-force one: the matching events in seq order, the
 * first (or with newest_first the last) `limit` of them. */
static void check_query(struct store *st, const struct store_query *q)
{
    static struct got want, got;
    want.n = got.n = 0;
    for (unsigned i = 0; i < N_EVENTS; i++)
        if (matches(&events[i], q)) want.seq[want.n++] = events[i].seq;
    unsigned from = 0, count = want.n;
    if (q->limit && count > q->limit) {
        if (q->newest_first) from = count - q->limit;
        count = q->limit;
    }
    assert_int_equal(store_events_query(st, q, collect, &got), 0);
    if (got.n != count)
        fail_msg("identity %s decision %s kind %s since %lld until %lld after %llu limit %u "
                 "newest %d: %u events, want %u",
                 q->identity ? q->identity : "-", q->decision ? q->decision : "-",
                 q->kind ? q->kind : "-", (long long)q->since_us, (long long)q->until_us,
                 (unsigned long long)q->after_seq, q->limit, q->newest_first, got.n, count);
    for (unsigned i = 0; i < count; i++)
        assert_int_equal(got.seq[i], want.seq[from + i]);
}

static void check_queries(struct store *st)
{
    const int64_t t0 = events[0].time_us, t1 = events[N_EVENTS - 1].time_us;
    const int64_t times[] = {0, t0 + (t1 - t0) / 3, t0 + (t1 - t0) * 9 / 10, t1 + 1};
    const uint64_t afters[] = {0, 1234};
    const unsigned limits[] = {0, 7};
    for (unsigned a = 0; a < 4; a++)             /* identity: alice, bob, carol, none */
        for (unsigned d = 0; d < 3; d++)         /* decision: allow, deny, none */
            for (unsigned s = 0; s < 4; s++)     /* since */
                for (unsigned u = 0; u < 2; u++) /* until: none, two thirds */
                    for (unsigned f = 0; f < 2; f++)
                        for (unsigned l = 0; l < 2; l++)
                            for (int nf = 0; nf < 2; nf++) {
                                struct store_query q = {.identity = identities[a],
                                                        .decision = decisions[d],
                                                        .kind = (a + d + s) % 3 == 0 ? "statement"
                                                                                     : NULL,
                                                        .since_us = times[s],
                                                        .until_us = u ? t0 + (t1 - t0) * 2 / 3 : 0,
                                                        .after_seq = afters[f],
                                                        .limit = limits[l],
                                                        .newest_first = nf && limits[l]};
                                check_query(st, &q);
                            }
}

static void tmp_db(char *dir, size_t dn, char *db, size_t n)
{
    snprintf(dir, dn, "/tmp/sluice-test-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(db, n, "%s/s.db", dir);
}

static void rm_db(const char *dir, const char *db)
{
    char p[300];
    unlink(db);
    snprintf(p, sizeof p, "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db);
    unlink(p);
    rmdir(dir);
}

static struct store *open_store(const char *db, unsigned flags)
{
    struct cfg_state cs = {.driver = CFG_STATE_SQLITE, .path = (char *)db};
    struct store *st = NULL;
    char err[512];
    if (store_open(&cs, flags, &st, err, sizeof err) != 0) fail_msg("%s", err);
    return st;
}

static void test_search_by_blocks(void **state)
{
    (void)state;
    char dir[64], db[128];
    tmp_db(dir, sizeof dir, db, sizeof db);
    make_events(7);
    struct store *st = open_store(db, 0);
    append_all(st);
    check_queries(st);
    store_close(st);
    st = open_store(db, STORE_READONLY);
    check_queries(st);
    store_close(st);
    rm_db(dir, db);
}

static int count_rows(const char *db, const char *sql)
{
    sqlite3 *h;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return n;
}

/* Retention drops the block rows of the events it drops, and searches still agree. */
static void test_prune_blocks(void **state)
{
    (void)state;
    char dir[64], db[128];
    tmp_db(dir, sizeof dir, db, sizeof db);
    make_events(11);
    struct store *st = open_store(db, 0);
    append_all(st); /* with a checkpoint at 1500 */
    assert_int_equal(count_rows(db, "SELECT count(*) FROM audit_blocks WHERE last_seq = 1500"), 1);
    uint64_t pruned = 0;
    assert_int_equal(store_prune(st, events[N_EVENTS - 1].time_us + 1, &pruned), 0);
    assert_int_equal(pruned, 1500);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM audit_blocks WHERE last_seq <= 1500"), 0);
    assert_int_equal(
        count_rows(db, "SELECT count(*) FROM audit_block_identities WHERE last_seq <= 1500"), 0);
    assert_true(count_rows(db, "SELECT count(*) FROM audit_blocks") > 0);
    for (unsigned i = 0; i < 1500; i++) /* the oracle forgets them too */
        events[i].identity = events[i].decision = NULL, events[i].seq = 0;
    struct store_query q = {.identity = "bob"};
    check_query(st, &q);
    q = (struct store_query){.since_us = events[0].time_us};
    check_query(st, &q);
    store_close(st);
    rm_db(dir, db);
}

/* A store of schema version 1 (a row per event, before block ranges): read as it is, then
 * migrated, its event rows moved into blocks. */
static void test_migrate_from_v1(void **state)
{
    (void)state;
    char dir[64], db[128];
    tmp_db(dir, sizeof dir, db, sizeof db);
    make_events(3);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(h,
                     "CREATE TABLE schema_version (module TEXT PRIMARY KEY, version INTEGER "
                     "NOT NULL);"
                     "INSERT INTO schema_version VALUES ('audit', 1);"
                     "CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, time_us INTEGER NOT "
                     "NULL, kind TEXT NOT NULL, identity TEXT, decision TEXT, body TEXT NOT "
                     "NULL, hash TEXT NOT NULL);"
                     "CREATE INDEX audit_events_time ON audit_events(time_us);"
                     "CREATE INDEX audit_events_identity ON audit_events(identity, seq);"
                     "CREATE TABLE audit_checkpoints (seq INTEGER PRIMARY KEY, time_us INTEGER "
                     "NOT NULL, hash TEXT NOT NULL, signature TEXT, key_id TEXT);"
                     "CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq "
                     "INTEGER NOT NULL);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, '{}', "
                                        "'00')",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_exec(h, "BEGIN", NULL, NULL, NULL);
    for (unsigned i = 0; i < N_EVENTS; i++) {
        sqlite3_bind_int64(q, 1, (sqlite3_int64)events[i].seq);
        sqlite3_bind_int64(q, 2, events[i].time_us);
        sqlite3_bind_text(q, 3, events[i].kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, events[i].identity, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, events[i].decision, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(q), SQLITE_DONE);
        sqlite3_reset(q);
    }
    sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
    sqlite3_finalize(q);
    sqlite3_close(h);

    struct store *st = open_store(db, STORE_READONLY); /* the CLI of a newer sluice */
    check_queries(st);
    store_close(st);
    st = open_store(db, 0);
    check_queries(st);
    store_close(st);
    assert_int_equal(count_rows(db, "SELECT version FROM schema_version WHERE module = 'audit'"),
                     3);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM audit_events"), 0);
    assert_int_equal(count_rows(db, "SELECT sum(last_seq - first_seq + 1) FROM audit_blocks"),
                     N_EVENTS);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM sqlite_master WHERE name = "
                                    "'audit_events_identity'"),
                     0);
    rm_db(dir, db);
}

/* One batch larger than a block (a recovery commits the whole journal at once): blocks end at
 * 1,000 events and at the checkpoint, and searches still agree. */
static void test_large_batch(void **state)
{
    (void)state;
    char dir[64], db[128];
    tmp_db(dir, sizeof dir, db, sizeof db);
    make_events(5);
    struct store *st = open_store(db, 0);
    static struct store_event sev[N_EVENTS];
    for (unsigned k = 0; k < N_EVENTS; k++)
        sev[k] = (struct store_event){.seq = events[k].seq,
                                      .time_us = events[k].time_us,
                                      .kind = events[k].kind,
                                      .identity = events[k].identity,
                                      .decision = events[k].decision,
                                      .body = "{}",
                                      .body_len = 2,
                                      .hash = "00"};
    struct store_checkpoint cp = {.seq = 1500, .time_us = events[1499].time_us, .hash = "00"};
    assert_int_equal(store_events_append(st, sev, N_EVENTS, &cp, 1), 0);
    /* 1-1000, 1001-1500 (the checkpoint), 1501-2500, 2501-3000 */
    assert_int_equal(count_rows(db, "SELECT count(*) FROM audit_blocks"), 4);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM audit_blocks WHERE last_seq = 1500"), 1);
    check_queries(st);
    store_close(st);
    rm_db(dir, db);
}

/* A damaged frame whose header claims about 1 GiB but holds a few bytes (found by fuzz_pack)
 * is refused without allocating for its claim: the buffer grows only with real output. */
static void test_unpack_claimed_size(void **state)
{
    (void)state;
    static const unsigned char frame[] = {
        0x28, 0xb5, 0x2f, 0xfd, 0xa3, 0xfc, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x1e, 0x18,
        0x24, 0x0a, 0x06, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x40, 0x00, 0x09, 0x00, 0x05, 0x00, 0x05,
        0x00, 0x61, 0x62, 0x61, 0x62, 0x61, 0x62, 0x61, 0x62, 0x61, 0x62, 0x61, 0x62, 0x61, 0x62,
        0x61, 0x62, 0x61, 0xff, 0x3a, 0x00, 0xf9, 0xf1, 0xfe, 0x00, 0x28, 0xb5, 0x00, 0x2f};
    struct store_unpacked u = {0};
    assert_int_equal(store_unpack_events(&u, frame, sizeof frame), -1);
    assert_true(u.raw_cap <= (size_t)1 << 20);
    store_unpacked_free(&u);
}

/* Packed blocks: what goes in comes out; a damaged frame is refused. */
static void test_pack_roundtrip(void **state)
{
    (void)state;
    struct store_event in[3] = {
        {.seq = 7,
         .time_us = -5,
         .kind = "statement",
         .identity = "alice",
         .decision = "allow",
         .body = "{\"a\":1}",
         .body_len = 7,
         .hash = "ab"},
        {.seq = 8,
         .time_us = 1,
         .kind = "session_end",
         .body = "line\nbreak",
         .body_len = 10,
         .hash = "cd"},
        {.seq = 9, .time_us = INT64_MAX, .kind = "", .identity = "", .body = "", .hash = ""},
    };
    struct store_pack p = {0};
    struct store_unpacked u = {0};
    for (int round = 0; round < 2; round++) { /* buffers are reused */
        assert_int_equal(store_pack_events(&p, in, 3), 0);
        assert_int_equal(store_unpack_events(&u, p.out, p.len), 0);
        assert_int_equal(u.n, 3);
        for (unsigned i = 0; i < 3; i++) {
            assert_int_equal(u.ev[i].seq, in[i].seq);
            assert_true(u.ev[i].time_us == in[i].time_us);
            assert_string_equal(u.ev[i].kind, in[i].kind);
            assert_string_equal(u.ev[i].hash, in[i].hash);
            assert_int_equal(u.ev[i].body_len, in[i].body_len);
            assert_memory_equal(u.ev[i].body, in[i].body, in[i].body_len);
            assert_true(!in[i].identity == !u.ev[i].identity);
            if (in[i].identity) assert_string_equal(u.ev[i].identity, in[i].identity);
            assert_true(!in[i].decision == !u.ev[i].decision);
            if (in[i].decision) assert_string_equal(u.ev[i].decision, in[i].decision);
        }
    }
    unsigned char bad[4096];
    assert_true(p.len <= sizeof bad);
    for (size_t i = 0; i < p.len; i++) { /* every single-byte change is caught */
        memcpy(bad, p.out, p.len);
        bad[i] ^= 0x41;
        assert_int_equal(store_unpack_events(&u, bad, p.len), -1);
    }
    assert_int_equal(store_unpack_events(&u, p.out, p.len - 1), -1);
    assert_int_equal(store_unpack_events(&u, "", 0), -1);
    store_pack_free(&p);
    store_unpacked_free(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_roundtrip), cmocka_unit_test(test_unpack_claimed_size),
        cmocka_unit_test(test_large_batch),    cmocka_unit_test(test_search_by_blocks),
        cmocka_unit_test(test_prune_blocks),   cmocka_unit_test(test_migrate_from_v1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
