/*
 * sqlite_int.h: what the SQLite driver's files share (store_sqlite.c: opening, schema,
 * checkpoints, the row layout of audit schemas 1 and 2; sqlite_blocks.c: events in packed
 * blocks, audit schema 3).
 */
#ifndef SLUICE_STORE_SQLITE_INT_H
#define SLUICE_STORE_SQLITE_INT_H

#include <stdbool.h>

#include <sqlite3.h>

#include "store/store.h"
#include "store/store_pack.h"

struct sqlite_store {
    sqlite3 *db;
    sqlite3_stmt *ins_checkpoint;
    sqlite3_stmt *ins_block;
    sqlite3_stmt *ins_block_identity;
    unsigned audit_version; /* the audit schema of the file (older ones when read only) */
    struct store_pack pack; /* the writer's, reused from block to block */
};

static inline struct sqlite_store *sq_priv(struct store *st)
{
    return st->priv;
}

int sq_fail(struct store *st, const char *what); /* "what: sqlite's message"; returns -1 */
int sq_exec(struct store *st, const char *sql);
void sq_rollback(struct store *st);
/* Events after seq *lo whose time can be >= since_us: *lo moves up to just before the first
 * block that ends at or after since_us (index audit_blocks_time); *none when no block does. */
int sq_since_bound(struct store *st, int64_t since_us, uint64_t *lo, bool *none);

/* Schema 3 (sqlite_blocks.c). */
int sq_blocks_prepare(struct store *st);
int sq_blocks_convert(struct store *st); /* event rows of older schemas into blocks */
int sq_blocks_append(struct store *st, const struct store_event *ev, unsigned n,
                     const struct store_checkpoint *cp, unsigned ncp);
int sq_blocks_query(struct store *st, const struct store_query *qr, store_event_fn fn, void *ctx);
int sq_blocks_last(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX]);
int sq_blocks_prune(struct store *st, int64_t before_us, uint64_t anchor, uint64_t *pruned);

#endif
