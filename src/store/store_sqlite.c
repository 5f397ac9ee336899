/*
 * store_sqlite.c: the SQLite driver of the state store (the default, one instance).
 *
 * One database file in WAL mode with synchronous=NORMAL: a commit is durable against a
 * process crash at once and against a power loss at the next checkpoint of the WAL.
 * busy_timeout lets the CLI read while the writer writes. Audit events are kept in packed
 * blocks (sqlite_blocks.c, schema 3); this file opens and migrates the store, appends
 * checkpoints, keeps the anchor and reads the event rows of schemas 1 and 2 for a read-only
 * opener. The hot statements are prepared once and reused. Schema versions live in
 * `schema_version` (one row per module); the audit module's tables are migrated here, other
 * modules bring their own lists.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/buf.h"
#include "store/sqlite_int.h"

/* The audit module's schema. Append new versions; never edit a released one. */
static const struct store_migration audit_migrations[] = {
    {1,
     "CREATE TABLE audit_events (\n"
     "  seq      INTEGER PRIMARY KEY,\n"
     "  time_us  INTEGER NOT NULL,\n"
     "  kind     TEXT NOT NULL,\n"
     "  identity TEXT,\n"
     "  decision TEXT,\n"
     "  body     TEXT NOT NULL,\n"
     "  hash     TEXT NOT NULL);\n"
     "CREATE INDEX audit_events_time ON audit_events(time_us);\n"
     "CREATE INDEX audit_events_identity ON audit_events(identity, seq);\n"
     "CREATE TABLE audit_checkpoints (\n"
     "  seq       INTEGER PRIMARY KEY,\n"
     "  time_us   INTEGER NOT NULL,\n"
     "  hash      TEXT NOT NULL,\n"
     "  signature TEXT,\n"
     "  key_id    TEXT);\n"
     "CREATE TABLE audit_anchor (\n"
     "  id  INTEGER PRIMARY KEY CHECK (id = 1),\n"
     "  seq INTEGER NOT NULL);\n",
     NULL},
    /* Block ranges instead of an index entry per event: one audit_blocks row per appended
     * batch (its seq range and time range) and one audit_block_identities row per identity
     * in it. Searches by time or identity read these to find the seq ranges to scan. */
    {2,
     "DROP INDEX audit_events_time;\n"
     "DROP INDEX audit_events_identity;\n"
     "CREATE TABLE audit_blocks (\n"
     "  first_seq   INTEGER PRIMARY KEY,\n"
     "  last_seq    INTEGER NOT NULL,\n"
     "  min_time_us INTEGER NOT NULL,\n"
     "  max_time_us INTEGER NOT NULL);\n"
     "CREATE INDEX audit_blocks_time ON audit_blocks(max_time_us, first_seq);\n"
     "CREATE TABLE audit_block_identities (\n"
     "  identity  TEXT NOT NULL,\n"
     "  first_seq INTEGER NOT NULL,\n"
     "  last_seq  INTEGER NOT NULL,\n"
     "  PRIMARY KEY (identity, first_seq)) WITHOUT ROWID;\n"
     "INSERT INTO audit_blocks SELECT min(seq), max(seq), min(time_us), max(time_us)\n"
     "  FROM audit_events GROUP BY (seq - 1) / 1000;\n"
     "INSERT INTO audit_block_identities SELECT identity, min(seq), max(seq)\n"
     "  FROM audit_events WHERE identity IS NOT NULL GROUP BY (seq - 1) / 1000, identity;\n",
     NULL},
    /* Events packed in their blocks (sqlite_blocks.c); a writer moves the rows of
     * audit_events there when it opens the store. */
    {3, "ALTER TABLE audit_blocks ADD COLUMN events BLOB;\n", NULL},
};

#define AUDIT_SCHEMA_VERSION (sizeof audit_migrations / sizeof audit_migrations[0])

int sq_fail(struct store *st, const char *what)
{
    struct sqlite_store *s = sq_priv(st);
    store_set_err(st, "%s: %s", what, s && s->db ? sqlite3_errmsg(s->db) : "no database");
    return -1;
}

/* Put prefix in front of the current error message. */
static void prefix_err(struct store *st, const char *prefix)
{
    size_t pl = strlen(prefix), cap = sizeof st->err;
    if (pl >= cap - 1) return;
    size_t ml = strnlen(st->err, cap - 1);
    if (pl + ml > cap - 1) ml = cap - 1 - pl;
    memmove(st->err + pl, st->err, ml);
    memcpy(st->err, prefix, pl);
    st->err[pl + ml] = 0;
}

int sq_exec(struct store *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(sq_priv(st)->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        store_set_err(st, "%s", msg ? msg : sqlite3_errmsg(sq_priv(st)->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

void sq_rollback(struct store *st)
{
    sqlite3_exec(sq_priv(st)->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Version of module in schema_version; 0 when absent. -1 on error. */
static int module_version(struct store *st, const char *module, unsigned *version)
{
    sqlite3_stmt *q = NULL;
    *version = 0;
    if (sqlite3_prepare_v2(sq_priv(st)->db, "SELECT version FROM schema_version WHERE module = ?",
                           -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "reading schema_version");
    sqlite3_bind_text(q, 1, module, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *version = (unsigned)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sq_fail(st, "reading schema_version");
    return 0;
}

static int sq_migrate(struct store *st, const char *module, const struct store_migration *m,
                      unsigned n)
{
    if (sq_exec(st, "CREATE TABLE IF NOT EXISTS schema_version (\n"
                    "  module  TEXT PRIMARY KEY,\n"
                    "  version INTEGER NOT NULL)") != 0)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        if (m[i].version != i + 1) {
            store_set_err(st, "%s migration %u: versions must count 1, 2, 3, ...", module, i);
            return -1;
        }
    }
    if (sq_exec(st, "BEGIN IMMEDIATE") != 0) return -1;
    unsigned have;
    if (module_version(st, module, &have) != 0) goto fail;
    if (have > n) {
        store_set_err(st, "the store's %s schema is version %u, newer than this sluice knows (%u)",
                      module, have, n);
        goto fail;
    }
    for (unsigned i = have; i < n; i++) {
        if (m[i].sqlite && sq_exec(st, m[i].sqlite) != 0) {
            char pre[128];
            snprintf(pre, sizeof pre, "%.60s migration %u: ", module, m[i].version);
            prefix_err(st, pre);
            goto fail;
        }
    }
    if (have < n) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(sq_priv(st)->db,
                               "INSERT INTO schema_version (module, version) VALUES (?, ?) "
                               "ON CONFLICT (module) DO UPDATE SET version = excluded.version",
                               -1, &q, NULL) != SQLITE_OK) {
            sq_fail(st, "updating schema_version");
            goto fail;
        }
        sqlite3_bind_text(q, 1, module, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, n);
        int rc = sqlite3_step(q);
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) {
            sq_fail(st, "updating schema_version");
            goto fail;
        }
    }
    if (sq_exec(st, "COMMIT") != 0) goto fail;
    return 0;
fail:
    sq_rollback(st);
    return -1;
}

static void sq_close(struct store *st)
{
    struct sqlite_store *s = sq_priv(st);
    if (!s) return;
    sqlite3_finalize(s->ins_checkpoint);
    sqlite3_finalize(s->ins_block);
    sqlite3_finalize(s->ins_block_identity);
    sqlite3_close(s->db);
    store_pack_free(&s->pack);
    free(s);
    st->priv = NULL;
}

static int sq_open(struct store *st, const struct cfg_state *cfg, unsigned flags)
{
    const char *path = cfg->path && *cfg->path ? cfg->path : "sluice.db";
    struct sqlite_store *s = xcalloc(1, sizeof *s);
    st->priv = s;
    bool ro = flags & STORE_READONLY;
    if (ro) {
        struct stat sb;
        if (stat(path, &sb) != 0) {
            store_set_err(st, "no state store at %s: %s", path, strerror(errno));
            return -1;
        }
    }
    int oflags = (ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                 SQLITE_OPEN_NOMUTEX;
    if (!ro && store_file_precreate(path) != 0) {
        store_set_err(st, "creating state store %s: %s", path, strerror(errno));
        return -1;
    }
    if (sqlite3_open_v2(path, &s->db, oflags, NULL) != SQLITE_OK) {
        store_set_err(st, "opening state store %s: %s", path,
                      s->db ? sqlite3_errmsg(s->db) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (!ro) {
        /* Larger pages: fewer WAL frames per batch of ~500-byte events (new files only). */
        if (sq_exec(st, "PRAGMA page_size=16384") != 0 ||
            sq_exec(st, "PRAGMA journal_mode=WAL") != 0 ||
            sq_exec(st, "PRAGMA synchronous=NORMAL") != 0)
            goto fail_path;
        if (sq_migrate(st, "audit", audit_migrations, AUDIT_SCHEMA_VERSION) != 0 ||
            sq_blocks_prepare(st) != 0 || sq_blocks_convert(st) != 0)
            goto fail_path;
        if (sqlite3_prepare_v3(s->db,
                               "INSERT INTO audit_checkpoints (seq, time_us, hash, signature, "
                               "key_id) VALUES (?, ?, ?, ?, ?)",
                               -1, SQLITE_PREPARE_PERSISTENT, &s->ins_checkpoint,
                               NULL) != SQLITE_OK) {
            sq_fail(st, "preparing inserts");
            goto fail_path;
        }
        s->audit_version = AUDIT_SCHEMA_VERSION;
    } else {
        unsigned have = 0;
        if (module_version(st, "audit", &have) != 0) goto fail_path;
        if (have == 0) {
            store_set_err(st, "not a sluice state store (no audit schema)");
            goto fail_path;
        }
        if (have > AUDIT_SCHEMA_VERSION) {
            store_set_err(st,
                          "the store's audit schema is version %u, newer than this sluice "
                          "knows (%zu)",
                          have, AUDIT_SCHEMA_VERSION);
            goto fail_path;
        }
        s->audit_version = have;
    }
    return 0;
fail_path : {
    char pre[300];
    snprintf(pre, sizeof pre, "state store %.250s: ", path);
    prefix_err(st, pre);
    return -1;
}
}

static void bind_opt_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, i);
}

static int sq_events_append(struct store *st, const struct store_event *ev, unsigned n,
                            const struct store_checkpoint *cp, unsigned ncp)
{
    struct sqlite_store *s = sq_priv(st);
    if (store_test_failing_writes()) {
        store_set_err(st, "database or disk is full (injected by a test)");
        return -1;
    }
    if (sq_exec(st, "BEGIN IMMEDIATE") != 0) return -1;
    if (sq_blocks_append(st, ev, n, cp, ncp) != 0) goto fail;
    for (unsigned i = 0; i < ncp; i++) {
        sqlite3_stmt *q = s->ins_checkpoint;
        sqlite3_bind_int64(q, 1, (sqlite3_int64)cp[i].seq);
        sqlite3_bind_int64(q, 2, cp[i].time_us);
        sqlite3_bind_text(q, 3, cp[i].hash, -1, SQLITE_STATIC);
        bind_opt_text(q, 4, cp[i].signature);
        bind_opt_text(q, 5, cp[i].key_id);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        if (rc != SQLITE_DONE) {
            sq_fail(st, "writing audit checkpoints");
            goto fail;
        }
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sq_fail(st, "committing audit events");
        goto fail;
    }
    return 0;
fail:
    sq_rollback(st);
    return -1;
}

static const char *col_text(sqlite3_stmt *q, int i)
{
    return (const char *)sqlite3_column_text(q, i);
}

/* Events after seq lo whose time can be >= since_us: lo moves up to just before the first
 * block that ends at or after since_us; *none when no block does (no event matches). */
int sq_since_bound(struct store *st, int64_t since_us, uint64_t *lo, bool *none)
{
    sqlite3_stmt *q = NULL;
    *none = false;
    if (sqlite3_prepare_v2(sq_priv(st)->db,
                           "SELECT min(first_seq) FROM audit_blocks WHERE max_time_us >= ?", -1, &q,
                           NULL) != SQLITE_OK)
        return sq_fail(st, "querying audit blocks");
    sqlite3_bind_int64(q, 1, since_us);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_NULL)
        *none = true;
    else if (rc == SQLITE_ROW) {
        uint64_t first = (uint64_t)sqlite3_column_int64(q, 0);
        if (first > 0 && first - 1 > *lo) *lo = first - 1;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW) return sq_fail(st, "querying audit blocks");
    return 0;
}

static int sq_events_query(struct store *st, const struct store_query *qr, store_event_fn fn,
                           void *ctx)
{
    struct sqlite_store *s = sq_priv(st);
    if (s->audit_version >= 3) return sq_blocks_query(st, qr, fn, ctx);
    /* the event rows of schema 1 or 2 (an old store opened read only) */
    bool blocks = s->audit_version >= 2; /* else plain scans */
    uint64_t lo = qr->after_seq;
    if (blocks && qr->since_us > 0) {
        bool none;
        if (sq_since_bound(st, qr->since_us, &lo, &none) != 0) return -1;
        if (none) return 0;
    }
    char where[512], sql[1400];
    size_t n = 0;
    where[0] = 0;
    if (qr->identity) n += (size_t)snprintf(where + n, sizeof where - n, " AND e.identity = ?2");
    if (qr->decision) n += (size_t)snprintf(where + n, sizeof where - n, " AND e.decision = ?3");
    if (qr->kind) n += (size_t)snprintf(where + n, sizeof where - n, " AND e.kind = ?4");
    if (qr->since_us > 0)
        n += (size_t)snprintf(where + n, sizeof where - n, " AND e.time_us >= ?5");
    if (qr->until_us > 0) snprintf(where + n, sizeof where - n, " AND e.time_us < ?6");
    /* By identity: the identity's block ranges from the one holding lo on, in seq order, and
     * the events inside each (SQLite walks both in order: no sort). */
    const char *from = "audit_events e", *by_block = "", *order = "e.seq",
               *order_desc = "e.seq DESC";
    if (blocks && qr->identity) {
        from = "audit_block_identities b JOIN audit_events e "
               "ON e.seq BETWEEN b.first_seq AND b.last_seq";
        by_block = " AND b.identity = ?2 AND b.first_seq >= COALESCE((SELECT max(first_seq) "
                   "FROM audit_block_identities WHERE identity = ?2 AND first_seq <= ?1), 0)";
        order = "b.first_seq, e.seq";
        order_desc = "b.first_seq DESC, e.seq DESC";
    }
    const char *cols = "e.seq, e.time_us, e.kind, e.identity, e.decision, e.body, e.hash";
    if (qr->limit && qr->newest_first)
        snprintf(sql, sizeof sql,
                 "SELECT * FROM (SELECT %s FROM %s WHERE e.seq > ?1%s%s ORDER BY %s LIMIT ?7) "
                 "ORDER BY seq",
                 cols, from, by_block, where, order_desc);
    else
        snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE e.seq > ?1%s%s ORDER BY %s%s", cols,
                 from, by_block, where, order, qr->limit ? " LIMIT ?7" : "");
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db, sql, -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "querying audit events");
    sqlite3_bind_int64(q, 1, (sqlite3_int64)lo);
    if (qr->identity) sqlite3_bind_text(q, 2, qr->identity, -1, SQLITE_STATIC);
    if (qr->decision) sqlite3_bind_text(q, 3, qr->decision, -1, SQLITE_STATIC);
    if (qr->kind) sqlite3_bind_text(q, 4, qr->kind, -1, SQLITE_STATIC);
    if (qr->since_us > 0) sqlite3_bind_int64(q, 5, qr->since_us);
    if (qr->until_us > 0) sqlite3_bind_int64(q, 6, qr->until_us);
    if (qr->limit) sqlite3_bind_int64(q, 7, qr->limit);
    int rc, ret = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct store_event ev = {
            .seq = (uint64_t)sqlite3_column_int64(q, 0),
            .time_us = sqlite3_column_int64(q, 1),
            .kind = col_text(q, 2),
            .identity = col_text(q, 3),
            .decision = col_text(q, 4),
            .body = col_text(q, 5),
            .body_len = (size_t)sqlite3_column_bytes(q, 5),
            .hash = col_text(q, 6),
        };
        if (!ev.kind) ev.kind = "";
        if (!ev.body) ev.body = "";
        if (!ev.hash) ev.hash = "";
        ret = fn(ctx, &ev);
        if (ret != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = sq_fail(st, "reading audit events");
    sqlite3_finalize(q);
    return ret;
}

static int sq_anchor_get(struct store *st, uint64_t *seq)
{
    sqlite3_stmt *q = NULL;
    *seq = 0;
    if (sqlite3_prepare_v2(sq_priv(st)->db, "SELECT seq FROM audit_anchor WHERE id = 1", -1, &q,
                           NULL) != SQLITE_OK)
        return sq_fail(st, "reading audit anchor");
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *seq = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sq_fail(st, "reading audit anchor");
    return 0;
}

/* seq and hash of a single row query result, if any. */
static int one_seq_hash(struct store *st, const char *sql, uint64_t arg, uint64_t *seq,
                        char hash[STORE_HASH_HEX])
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db, sql, -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "reading the chain head");
    if (sqlite3_bind_parameter_count(q) > 0) sqlite3_bind_int64(q, 1, (sqlite3_int64)arg);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *seq = (uint64_t)sqlite3_column_int64(q, 0);
        const char *h = col_text(q, 1);
        snprintf(hash, STORE_HASH_HEX, "%s", h ? h : "");
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sq_fail(st, "reading the chain head");
    return 0;
}

/* The chain head: the newest event, or when every event was pruned, the anchor checkpoint. */
static int sq_events_last(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX])
{
    *seq = 0;
    hash[0] = 0;
    if (sq_priv(st)->audit_version >= 3 ? sq_blocks_last(st, seq, hash) != 0
                                        : one_seq_hash(st,
                                                       "SELECT seq, hash FROM audit_events "
                                                       "ORDER BY seq DESC LIMIT 1",
                                                       0, seq, hash) != 0)
        return -1;
    if (*seq) return 0;
    uint64_t anchor;
    if (sq_anchor_get(st, &anchor) != 0) return -1;
    if (!anchor) return 0;
    return one_seq_hash(st, "SELECT seq, hash FROM audit_checkpoints WHERE seq = ?", anchor, seq,
                        hash);
}

static int sq_checkpoints_scan(struct store *st, uint64_t from_seq, store_checkpoint_fn fn,
                               void *ctx)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db,
                           "SELECT seq, time_us, hash, signature, key_id FROM audit_checkpoints "
                           "WHERE seq >= ? ORDER BY seq",
                           -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "reading audit checkpoints");
    sqlite3_bind_int64(q, 1, (sqlite3_int64)from_seq);
    int rc, ret = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct store_checkpoint cp = {
            .seq = (uint64_t)sqlite3_column_int64(q, 0),
            .time_us = sqlite3_column_int64(q, 1),
            .hash = col_text(q, 2),
            .signature = col_text(q, 3),
            .key_id = col_text(q, 4),
        };
        if (!cp.hash) cp.hash = "";
        ret = fn(ctx, &cp);
        if (ret != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE) ret = sq_fail(st, "reading audit checkpoints");
    sqlite3_finalize(q);
    return ret;
}

/* Writers only, so always on schema 3 (sqlite_blocks.c). */
static int sq_prune(struct store *st, int64_t before_us, uint64_t *pruned)
{
    *pruned = 0;
    if (store_test_failing_writes()) {
        store_set_err(st, "database or disk is full (injected by a test)");
        return -1;
    }
    uint64_t anchor;
    if (sq_anchor_get(st, &anchor) != 0) return -1;
    return sq_blocks_prune(st, before_us, anchor, pruned);
}

const struct store_driver store_driver_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .migrate = sq_migrate,
    .events_append = sq_events_append,
    .events_query = sq_events_query,
    .events_last = sq_events_last,
    .checkpoints_scan = sq_checkpoints_scan,
    .anchor_get = sq_anchor_get,
    .prune = sq_prune,
};
