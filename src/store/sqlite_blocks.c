/*
 * sqlite_blocks.c: audit events in blocks (audit schema 3 of the SQLite driver).
 *
 * Each appended batch becomes one audit_blocks row or a few: its seq and time ranges and its
 * events packed into one compressed frame (store_pack.h), plus one audit_block_identities row
 * per identity in it. A row per event cost the writer more than all its other work; a row
 * per block costs a few microseconds per batch. A block ends at every checkpoint, so that
 * retention can delete whole blocks up to one. Queries find candidate blocks by seq, time
 * and identity ranges (SQL), unpack them and filter their events (C), in seq order.
 *
 * Stores of schemas 1 and 2 kept a row per event in audit_events: a writer converts those
 * rows into blocks when it opens the store (sq_blocks_convert); a read-only opener reads them
 * as they are (store_sqlite.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "store/sqlite_int.h"

#define CONVERT_RUN 1000 /* events read at a time when converting event rows */
/* A block ends after this many events or bytes of bodies, whatever the batch: a recovery
 * commits everything the journal held in one batch. */
#define BLOCK_MAX_EVENTS 1000
#define BLOCK_MAX_BYTES ((size_t)64 << 20)

int sq_blocks_prepare(struct store *st)
{
    struct sqlite_store *s = sq_priv(st);
    if (sqlite3_prepare_v3(s->db,
                           "INSERT INTO audit_blocks (first_seq, last_seq, min_time_us, "
                           "max_time_us, events) VALUES (?, ?, ?, ?, ?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_block, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(s->db,
                           "INSERT INTO audit_block_identities (identity, first_seq, "
                           "last_seq) VALUES (?, ?, ?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_block_identity,
                           NULL) != SQLITE_OK)
        return sq_fail(st, "preparing inserts");
    return 0;
}

/* One block: ev[0..n) packed, with its ranges and identities. */
static int block_insert(struct store *st, const struct store_event *ev, unsigned n)
{
    struct sqlite_store *s = sq_priv(st);
    if (store_pack_events(&s->pack, ev, n) != 0) {
        store_set_err(st, "audit events %" PRIu64 "..%" PRIu64 " cannot be packed", ev[0].seq,
                      ev[n - 1].seq);
        return -1;
    }
    int64_t tmin = ev[0].time_us, tmax = ev[0].time_us;
    for (unsigned i = 1; i < n; i++) {
        if (ev[i].time_us < tmin) tmin = ev[i].time_us;
        if (ev[i].time_us > tmax) tmax = ev[i].time_us;
    }
    sqlite3_stmt *q = s->ins_block;
    sqlite3_bind_int64(q, 1, (sqlite3_int64)ev[0].seq);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)ev[n - 1].seq);
    sqlite3_bind_int64(q, 3, tmin);
    sqlite3_bind_int64(q, 4, tmax);
    sqlite3_bind_blob(q, 5, s->pack.out, (int)s->pack.len, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) return sq_fail(st, "writing audit blocks");
    /* Each identity once, at its first event of the block: its range ends at its last one.
     * Blocks hold a few identities, so the inner loops are short. */
    for (unsigned i = 0; i < n; i++) {
        const char *id = ev[i].identity;
        if (!id) continue;
        unsigned k = 0;
        while (k < i && !(ev[k].identity && strcmp(ev[k].identity, id) == 0))
            k++;
        if (k < i) continue; /* seen */
        uint64_t last = ev[i].seq;
        for (unsigned m = i + 1; m < n; m++)
            if (ev[m].identity && strcmp(ev[m].identity, id) == 0) last = ev[m].seq;
        q = s->ins_block_identity;
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)ev[i].seq);
        sqlite3_bind_int64(q, 3, (sqlite3_int64)last);
        rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE) return sq_fail(st, "writing audit blocks");
    }
    return 0;
}

/* ev[0..n) as blocks, a block ending after each event whose seq is in cut[0..ncut) (sorted),
 * at the size limits and at the end. Inside the caller's transaction. */
static int blocks_write_cut(struct store *st, const struct store_event *ev, unsigned n,
                            const uint64_t *cut, unsigned ncut)
{
    unsigned start = 0, c = 0;
    size_t bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        while (c < ncut && cut[c] < ev[i].seq)
            c++;
        bytes += ev[i].body_len;
        bool end = i + 1 == n || (c < ncut && cut[c] == ev[i].seq) ||
                   i + 1 - start >= BLOCK_MAX_EVENTS || bytes >= BLOCK_MAX_BYTES;
        if (!end) continue;
        if (block_insert(st, ev + start, i + 1 - start) != 0) return -1;
        start = i + 1;
        bytes = 0;
    }
    return 0;
}

int sq_blocks_append(struct store *st, const struct store_event *ev, unsigned n,
                     const struct store_checkpoint *cp, unsigned ncp)
{
    uint64_t cuts[64], *cut = ncp <= 64 ? cuts : xcalloc(ncp, sizeof *cut);
    for (unsigned i = 0; i < ncp; i++)
        cut[i] = cp[i].seq;
    int rc = n ? blocks_write_cut(st, ev, n, cut, ncp) : 0;
    if (cut != cuts) free(cut);
    return rc;
}

/* ---- converting the event rows of schemas 1 and 2 */

struct convert {
    struct store_event ev[CONVERT_RUN];
    unsigned n;
    uint64_t *cut;
    unsigned ncut;
};

static void convert_clear(struct convert *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        free((char *)c->ev[i].kind);
        free((char *)c->ev[i].identity);
        free((char *)c->ev[i].decision);
        free((char *)c->ev[i].body);
        free((char *)c->ev[i].hash);
    }
    c->n = 0;
}

static char *dup_col(sqlite3_stmt *q, int i)
{
    const char *t = (const char *)sqlite3_column_text(q, i);
    return t ? xstrdup(t) : NULL;
}

/* Load the checkpoint seqs (the cuts) into c. */
static int convert_cuts(struct store *st, struct convert *c)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db, "SELECT seq FROM audit_checkpoints ORDER BY seq", -1,
                           &q, NULL) != SQLITE_OK)
        return sq_fail(st, "reading audit checkpoints");
    unsigned cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (c->ncut == cap) {
            cap = cap ? cap * 2 : 256;
            c->cut = xrealloc(c->cut, cap * sizeof *c->cut);
        }
        c->cut[c->ncut++] = (uint64_t)sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : sq_fail(st, "reading audit checkpoints");
}

int sq_blocks_convert(struct store *st)
{
    struct sqlite_store *s = sq_priv(st);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT EXISTS (SELECT 1 FROM audit_events)", -1, &q, NULL) !=
        SQLITE_OK)
        return sq_fail(st, "reading audit events");
    int rc = sqlite3_step(q);
    bool any = rc == SQLITE_ROW && sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW) return sq_fail(st, "reading audit events");
    if (!any) return 0;

    struct convert *c = xcalloc(1, sizeof *c);
    if (sq_exec(st, "BEGIN IMMEDIATE") != 0) {
        free(c);
        return -1;
    }
    int ret = -1;
    if (sq_exec(st, "DELETE FROM audit_blocks; DELETE FROM audit_block_identities") != 0 ||
        convert_cuts(st, c) != 0)
        goto out;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT seq, time_us, kind, identity, decision, body, hash "
                           "FROM audit_events ORDER BY seq",
                           -1, &q, NULL) != SQLITE_OK) {
        sq_fail(st, "reading audit events");
        goto out;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct store_event *e = &c->ev[c->n++];
        e->seq = (uint64_t)sqlite3_column_int64(q, 0);
        e->time_us = sqlite3_column_int64(q, 1);
        e->kind = dup_col(q, 2);
        e->identity = dup_col(q, 3);
        e->decision = dup_col(q, 4);
        e->body = dup_col(q, 5);
        e->body_len = e->body ? strlen(e->body) : 0;
        e->hash = dup_col(q, 6);
        if (c->n == CONVERT_RUN) {
            int wr = blocks_write_cut(st, c->ev, c->n, c->cut, c->ncut);
            convert_clear(c);
            if (wr != 0) break;
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        sq_fail(st, "reading audit events");
        goto out;
    }
    if (rc == SQLITE_ROW) goto out; /* a block failed */
    if (c->n && blocks_write_cut(st, c->ev, c->n, c->cut, c->ncut) != 0) goto out;
    if (sq_exec(st, "DELETE FROM audit_events") != 0 || sq_exec(st, "COMMIT") != 0) goto out;
    ret = 0;
out:
    if (ret != 0) sq_rollback(st);
    convert_clear(c);
    free(c->cut);
    free(c);
    return ret;
}

/* ---- reading */

/* Does event e pass the column filters of qr? */
static bool event_matches(const struct store_query *qr, const struct store_event *e)
{
    if (e->seq <= qr->after_seq) return false;
    if (qr->identity && !(e->identity && strcmp(e->identity, qr->identity) == 0)) return false;
    if (qr->decision && !(e->decision && strcmp(e->decision, qr->decision) == 0)) return false;
    if (qr->kind && strcmp(e->kind, qr->kind) != 0) return false;
    if (qr->since_us > 0 && e->time_us < qr->since_us) return false;
    if (qr->until_us > 0 && e->time_us >= qr->until_us) return false;
    return true;
}

static bool has_filters(const struct store_query *qr)
{
    return qr->identity || qr->decision || qr->kind || qr->since_us > 0 || qr->until_us > 0;
}

/* An owned copy of an event (one allocation), for newest-first queries. */
static struct store_event *event_copy(const struct store_event *e)
{
    size_t k = strlen(e->kind) + 1, h = strlen(e->hash) + 1;
    size_t id = e->identity ? strlen(e->identity) + 1 : 0;
    size_t d = e->decision ? strlen(e->decision) + 1 : 0;
    struct store_event *c = xmalloc(sizeof *c + k + h + id + d + e->body_len + 1);
    char *p = (char *)(c + 1);
    *c = *e;
    c->kind = memcpy(p, e->kind, k);
    p += k;
    c->hash = memcpy(p, e->hash, h);
    p += h;
    c->identity = e->identity ? memcpy(p, e->identity, id) : NULL;
    p += id;
    c->decision = e->decision ? memcpy(p, e->decision, d) : NULL;
    p += d;
    memcpy(p, e->body, e->body_len);
    p[e->body_len] = 0;
    c->body = p;
    return c;
}

struct reader {
    const struct store_query *qr;
    store_event_fn fn;
    void *ctx;
    unsigned delivered;
    struct store_event **kept; /* newest first: the newest `limit` matches, newest first */
    unsigned nkept;
    bool done; /* the limit is reached */
};

/* One event of a block, in the query's order. Returns 0 to go on (r->done is set when the
 * limit is reached), or the callback's non-zero value. */
static int reader_take(struct reader *r, const struct store_event *e)
{
    const struct store_query *qr = r->qr;
    if (!event_matches(qr, e)) return 0;
    if (qr->limit && qr->newest_first) {
        r->kept[r->nkept++] = event_copy(e);
        r->done = r->nkept == qr->limit;
        return 0;
    }
    int rc = r->fn(r->ctx, e);
    r->done = qr->limit && ++r->delivered == qr->limit;
    return rc;
}

/* A block that cannot be unpacked: an unfiltered scan (verify, export) gets each of its
 * events with an empty body, which verify reports; a filtered query fails. */
static int reader_damaged(struct store *st, struct reader *r, uint64_t first, uint64_t last)
{
    if (has_filters(r->qr)) {
        store_set_err(st,
                      "audit events %" PRIu64 "..%" PRIu64
                      ": their block in the store is damaged (see sluice audit verify)",
                      first, last);
        return -1;
    }
    bool desc = r->qr->limit && r->qr->newest_first;
    for (uint64_t k = 0; k <= last - first && !r->done; k++) {
        struct store_event e = {
            .seq = desc ? last - k : first + k, .kind = "", .body = "", .hash = ""};
        int rc = reader_take(r, &e);
        if (rc != 0) return rc;
    }
    return 0;
}

/* The SQL that lists candidate blocks: from the one holding seq ?1 + 1 on. */
static void blocks_sql(const struct store_query *qr, bool desc, char *sql, size_t len)
{
    snprintf(sql, len,
             "SELECT first_seq, last_seq, events FROM audit_blocks b WHERE first_seq >= "
             "COALESCE((SELECT max(first_seq) FROM audit_blocks WHERE first_seq <= ?1 + 1), 0)"
             "%s%s%s ORDER BY first_seq%s",
             qr->since_us > 0 ? " AND max_time_us >= ?3" : "",
             qr->until_us > 0 ? " AND min_time_us < ?4" : "",
             qr->identity ? " AND EXISTS (SELECT 1 FROM audit_block_identities i WHERE "
                            "i.identity = ?2 AND i.first_seq BETWEEN b.first_seq AND b.last_seq)"
                          : "",
             desc ? " DESC" : "");
}

int sq_blocks_query(struct store *st, const struct store_query *qr, store_event_fn fn, void *ctx)
{
    struct sqlite_store *s = sq_priv(st);
    uint64_t lo = qr->after_seq;
    if (qr->since_us > 0) { /* start at the first block that can hold a match */
        bool none;
        if (sq_since_bound(st, qr->since_us, &lo, &none) != 0) return -1;
        if (none) return 0;
    }
    bool desc = qr->limit && qr->newest_first;
    struct reader r = {.qr = qr, .fn = fn, .ctx = ctx};
    if (desc) r.kept = xcalloc(qr->limit, sizeof *r.kept);
    char sql[700];
    blocks_sql(qr, desc, sql, sizeof sql);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
        free(r.kept);
        return sq_fail(st, "querying audit blocks");
    }
    sqlite3_bind_int64(q, 1, (sqlite3_int64)lo);
    if (qr->identity) sqlite3_bind_text(q, 2, qr->identity, -1, SQLITE_STATIC);
    if (qr->since_us > 0) sqlite3_bind_int64(q, 3, qr->since_us);
    if (qr->until_us > 0) sqlite3_bind_int64(q, 4, qr->until_us);
    struct store_unpacked u = {0};
    int rc = SQLITE_DONE, ret = 0;
    while (ret == 0 && !r.done && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        uint64_t first = (uint64_t)sqlite3_column_int64(q, 0);
        uint64_t last = (uint64_t)sqlite3_column_int64(q, 1);
        const void *blob = sqlite3_column_blob(q, 2);
        size_t blen = (size_t)sqlite3_column_bytes(q, 2);
        if (last < first) continue;
        if (!blob || store_unpack_events(&u, blob, blen) != 0 || u.n == 0) {
            ret = reader_damaged(st, &r, first, last);
            continue;
        }
        for (unsigned k = 0; k < u.n && ret == 0 && !r.done; k++)
            ret = reader_take(&r, &u.ev[desc ? u.n - 1 - k : k]);
    }
    if (ret == 0 && !r.done && rc != SQLITE_DONE) ret = sq_fail(st, "reading audit blocks");
    sqlite3_finalize(q);
    store_unpacked_free(&u);
    /* newest first: delivered oldest first */
    for (unsigned k = r.nkept; k-- > 0;) {
        if (ret == 0) ret = fn(ctx, r.kept[k]);
        free(r.kept[k]);
    }
    free(r.kept);
    return ret;
}

int sq_blocks_last(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX])
{
    *seq = 0;
    hash[0] = 0;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db,
                           "SELECT first_seq, last_seq, events FROM audit_blocks "
                           "ORDER BY first_seq DESC LIMIT 1",
                           -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "reading the chain head");
    int rc = sqlite3_step(q), ret = 0;
    if (rc == SQLITE_ROW) {
        struct store_unpacked u = {0};
        uint64_t first = (uint64_t)sqlite3_column_int64(q, 0);
        uint64_t last = (uint64_t)sqlite3_column_int64(q, 1);
        const void *blob = sqlite3_column_blob(q, 2);
        if (!blob || store_unpack_events(&u, blob, (size_t)sqlite3_column_bytes(q, 2)) != 0 ||
            u.n == 0 || u.ev[u.n - 1].seq != last) {
            store_set_err(st,
                          "the chain head: the newest audit block (events %" PRIu64 "..%" PRIu64
                          ") is damaged (see sluice audit verify)",
                          first, last);
            ret = -1;
        } else {
            *seq = last;
            snprintf(hash, STORE_HASH_HEX, "%s", u.ev[u.n - 1].hash);
        }
        store_unpacked_free(&u);
    } else if (rc != SQLITE_DONE) {
        ret = sq_fail(st, "reading the chain head");
    }
    sqlite3_finalize(q);
    return ret;
}

/* ---- retention */

#define PRUNE_CHUNK 100000 /* events deleted per call at most (when checkpoints allow) */

int sq_blocks_prune(struct store *st, int64_t before_us, uint64_t anchor, uint64_t *pruned)
{
    *pruned = 0;
    /* The newest checkpoint (not too far) older than before_us that ends a block; else the
     * oldest such, so that progress is made even with sparse checkpoints. */
    static const char *const pick =
        "SELECT COALESCE("
        " (SELECT max(c.seq) FROM audit_checkpoints c WHERE c.time_us < ?1 AND c.seq > ?2 "
        "  AND c.seq <= ?3 AND (SELECT last_seq FROM audit_blocks WHERE first_seq <= c.seq "
        "   ORDER BY first_seq DESC LIMIT 1) = c.seq),"
        " (SELECT min(c.seq) FROM audit_checkpoints c WHERE c.time_us < ?1 AND c.seq > ?2 "
        "  AND (SELECT last_seq FROM audit_blocks WHERE first_seq <= c.seq "
        "   ORDER BY first_seq DESC LIMIT 1) = c.seq), 0)";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(sq_priv(st)->db, pick, -1, &q, NULL) != SQLITE_OK)
        return sq_fail(st, "choosing what to prune");
    sqlite3_bind_int64(q, 1, before_us);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)anchor);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)(anchor + PRUNE_CHUNK));
    uint64_t upto = 0;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) upto = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW) return sq_fail(st, "choosing what to prune");
    if (upto == 0) return 0;

    if (sq_exec(st, "BEGIN IMMEDIATE") != 0) return -1;
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT COALESCE(sum(last_seq - first_seq + 1), 0) FROM audit_blocks "
             "WHERE first_seq <= %" PRIu64,
             upto);
    if (sqlite3_prepare_v2(sq_priv(st)->db, sql, -1, &q, NULL) != SQLITE_OK) {
        sq_fail(st, "pruning audit blocks");
        goto fail;
    }
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *pruned = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW) {
        sq_fail(st, "pruning audit blocks");
        goto fail;
    }
    snprintf(sql, sizeof sql,
             "DELETE FROM audit_blocks WHERE first_seq <= %" PRIu64
             "; DELETE FROM audit_block_identities WHERE last_seq <= %" PRIu64
             "; DELETE FROM audit_checkpoints WHERE seq < %" PRIu64
             "; INSERT INTO audit_anchor (id, seq) VALUES (1, %" PRIu64
             ") ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
             upto, upto, upto, upto);
    if (sq_exec(st, sql) != 0 || sq_exec(st, "COMMIT") != 0) goto fail;
    return 0;
fail:
    *pruned = 0;
    sq_rollback(st);
    return -1;
}
