/*
 * store_pack.c: packing a run of audit events into one zstd frame and back (store_pack.h).
 *
 * Level 1 with a 1 KiB hash table (hashLog 10): packing runs on the audit writer for every
 * block. Events repeat the event before them, so a small table finds nearly every match and
 * stays in the L1 cache: on packed `pgbench -S` events it shrinks them about 12 times at
 * 1,470 MB/s, where level -1 with its default table shrank them 8 times at 1,710 MB/s. The
 * third fewer bytes cost SQLite less than the extra compression costs: the writer's CPU per
 * event was no higher (docs/performance.md, session 8). Unpacking runs at several GB/s.
 */
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "core/buf.h"
#include "store/store_pack.h"

#define HEAD 28         /* seq, time_us, body length, four string lengths */
#define NO_STR 0xffffu  /* a NULL identity or decision */
#define MAX_STR 0xfffeu /* longest kind, identity or decision */

/* p grown (moved) to hold need bytes. */
static void *reserve(void *p, size_t *cap, size_t need)
{
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    *cap = c;
    return xrealloc(p, c);
}

static void put_le(unsigned char *p, uint64_t v, unsigned bytes)
{
    for (unsigned i = 0; i < bytes; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_le(const unsigned char *p, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = bytes; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static size_t str_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Copy s and its NUL at *at (nothing for NULL). */
static void put_str(unsigned char *raw, size_t *at, const char *s, size_t len)
{
    if (!s) return;
    memcpy(raw + *at, s, len);
    raw[*at + len] = 0;
    *at += len + 1;
}

int store_pack_events(struct store_pack *p, const struct store_event *ev, unsigned n)
{
    if (!n) return -1;
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct store_event *e = &ev[i];
        const char *kind = e->kind ? e->kind : "", *hash = e->hash ? e->hash : "";
        size_t h = strlen(hash), k = strlen(kind), id = str_len(e->identity),
               d = str_len(e->decision);
        if (h > MAX_STR || k > MAX_STR || id > MAX_STR || d > MAX_STR || e->body_len > UINT32_MAX)
            return -1;
        size_t need = HEAD + h + 1 + k + 1 + (e->identity ? id + 1 : 0) +
                      (e->decision ? d + 1 : 0) + e->body_len + 1;
        if (at + need > STORE_PACK_MAX) return -1;
        p->raw = reserve(p->raw, &p->raw_cap, at + need);
        unsigned char *r = p->raw + at;
        put_le(r, e->seq, 8);
        put_le(r + 8, (uint64_t)e->time_us, 8);
        put_le(r + 16, e->body_len, 4);
        put_le(r + 20, h, 2);
        put_le(r + 22, k, 2);
        put_le(r + 24, e->identity ? id : NO_STR, 2);
        put_le(r + 26, e->decision ? d : NO_STR, 2);
        at += HEAD;
        put_str(p->raw, &at, hash, h);
        put_str(p->raw, &at, kind, k);
        put_str(p->raw, &at, e->identity, id);
        put_str(p->raw, &at, e->decision, d);
        put_str(p->raw, &at, e->body, e->body_len);
    }
    if (!p->zc) {
        p->zc = ZSTD_createCCtx();
        if (!p->zc || ZSTD_isError(ZSTD_CCtx_setParameter(p->zc, ZSTD_c_compressionLevel, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(p->zc, ZSTD_c_hashLog, 10)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(p->zc, ZSTD_c_checksumFlag, 1))) {
            ZSTD_freeCCtx(p->zc);
            p->zc = NULL;
            return -1;
        }
    }
    p->out = reserve(p->out, &p->out_cap, ZSTD_compressBound(at));
    size_t r = ZSTD_compress2(p->zc, p->out, p->out_cap, p->raw, at);
    if (ZSTD_isError(r)) return -1;
    p->len = r;
    return 0;
}

void store_pack_free(struct store_pack *p)
{
    ZSTD_freeCCtx(p->zc);
    free(p->raw);
    free(p->out);
    memset(p, 0, sizeof *p);
}

/* The len bytes and NUL at *at, or false when they do not fit in size bytes or the NUL is
 * missing. */
static bool take_bytes(const unsigned char *raw, size_t size, size_t *at, size_t len,
                       const char **out)
{
    if (len >= size - *at || raw[*at + len] != 0) return false;
    *out = (const char *)raw + *at;
    *at += len + 1;
    return true;
}

/* A string field: as take_bytes(), NULL for NO_STR. */
static bool take_str(const unsigned char *raw, size_t size, size_t *at, size_t len,
                     const char **out)
{
    *out = NULL;
    return len == NO_STR || take_bytes(raw, size, at, len, out);
}

/* Decompress frame into u->raw: exactly size bytes, or -1. The buffer grows with the data
 * that actually comes out, never ahead of it by more than double: a damaged or hostile frame
 * that claims a large size in its header costs no more memory than what it holds. */
static int unpack_raw(struct store_unpacked *u, const void *frame, size_t len, size_t size)
{
    if (!u->dctx && !(u->dctx = ZSTD_createDCtx())) return -1;
    if (ZSTD_isError(ZSTD_DCtx_reset(u->dctx, ZSTD_reset_session_only))) return -1;
    ZSTD_inBuffer in = {frame, len, 0};
    size_t pos = 0;
    for (;;) {
        if (pos == u->raw_cap) {
            size_t want = u->raw_cap ? u->raw_cap * 2 : 65536;
            if (want > size + 1) want = size + 1;
            u->raw = reserve(u->raw, &u->raw_cap, want);
        }
        ZSTD_outBuffer out = {u->raw, u->raw_cap < size + 1 ? u->raw_cap : size + 1, pos};
        size_t r = ZSTD_decompressStream(u->dctx, &out, &in);
        if (ZSTD_isError(r) || out.pos > size) return -1;
        pos = out.pos;
        if (r == 0) /* the frame is complete, and nothing may follow it */
            return pos == size && in.pos == in.size ? 0 : -1;
        if (in.pos == in.size && out.pos < out.size) /* truncated */
            return -1;
    }
}

int store_unpack_events(struct store_unpacked *u, const void *frame, size_t len)
{
    u->n = 0;
    unsigned long long size = ZSTD_getFrameContentSize(frame, len);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR || size > STORE_PACK_MAX)
        return -1;
    if (unpack_raw(u, frame, len, (size_t)size) != 0) return -1;
    size_t got = (size_t)size;
    size_t at = 0;
    unsigned n = 0;
    while (at < got) {
        if (got - at < HEAD) return -1;
        const unsigned char *r = u->raw + at;
        u->ev = reserve(u->ev, &u->ev_cap, ((size_t)n + 1) * sizeof *u->ev);
        struct store_event *e = &u->ev[n];
        memset(e, 0, sizeof *e);
        e->seq = get_le(r, 8);
        e->time_us = (int64_t)get_le(r + 8, 8);
        e->body_len = get_le(r + 16, 4);
        size_t h = get_le(r + 20, 2), k = get_le(r + 22, 2), id = get_le(r + 24, 2),
               d = get_le(r + 26, 2);
        at += HEAD;
        if (h == NO_STR || k == NO_STR || !take_bytes(u->raw, got, &at, h, &e->hash) ||
            !take_bytes(u->raw, got, &at, k, &e->kind) ||
            !take_str(u->raw, got, &at, id, &e->identity) ||
            !take_str(u->raw, got, &at, d, &e->decision) ||
            !take_bytes(u->raw, got, &at, e->body_len, &e->body))
            return -1;
        n++;
    }
    u->n = n;
    return 0;
}

void store_unpacked_free(struct store_unpacked *u)
{
    ZSTD_freeDCtx(u->dctx);
    free(u->raw);
    free(u->ev);
    memset(u, 0, sizeof *u);
}
