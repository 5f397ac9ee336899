/*
 * store_pack.h: a run of audit events packed into one compressed frame (a store block).
 *
 * The SQLite store keeps events in blocks, one row per appended run, instead of one row per
 * event: a row per event cost the audit writer more than everything else it does. A block's
 * events are serialized one after the other (below) and compressed as one zstd frame with a
 * checksum. Consecutive events share most of their text (identity, client, statement
 * shapes), so a block packs to a tenth of its size or less. Pure functions over memory: no
 * SQL, no I/O.
 *
 * Record (integers little-endian): u64 seq, i64 time_us, u32 body length, u16 lengths of
 * hash, kind, identity and decision (0xffff: NULL, and absent below), then hash, kind,
 * identity, decision and body, each followed by a NUL (so that unpacked events point into
 * the frame's bytes).
 *
 * Ownership: a struct store_pack or struct store_unpacked owns its buffers and is reused from
 * block to block; *_free() releases them. Events handed out by store_unpacked_event() point
 * into the struct store_unpacked and stay valid until its next unpack.
 */
#ifndef SLUICE_STORE_STORE_PACK_H
#define SLUICE_STORE_STORE_PACK_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

struct store_pack {
    void *zc; /* ZSTD_CCtx */
    unsigned char *raw;
    size_t raw_cap;
    unsigned char *out; /* the packed frame: len bytes */
    size_t len, out_cap;
};

/* Pack ev[0..n) (n > 0; a NULL kind or hash is packed as "") into p->out. Returns 0, or -1
 * when an event cannot be packed (a field longer than the format allows, or zstd failed). */
int store_pack_events(struct store_pack *p, const struct store_event *ev, unsigned n);
void store_pack_free(struct store_pack *p);

struct store_unpacked {
    struct ZSTD_DCtx_s *dctx; /* made on first use */
    unsigned char *raw;
    size_t raw_cap;
    struct store_event *ev;
    size_t ev_cap;
    unsigned n;
};

/* Unpack a frame into u->ev[0..u->n). Returns 0, or -1 when it is damaged (bad frame or
 * checksum, truncated or malformed record, more than STORE_PACK_MAX bytes). */
int store_unpack_events(struct store_unpacked *u, const void *frame, size_t len);
void store_unpacked_free(struct store_unpacked *u);

#define STORE_PACK_MAX ((size_t)1 << 30) /* unpacked bytes of one frame, at most */

#endif
