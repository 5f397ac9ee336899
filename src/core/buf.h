/*
 * buf.h: byte buffers for I/O and message building.
 *
 * A buffer holds bytes [off, len) of data[0, cap). Connections take buffers from a
 * per-thread pool while data flows and give them back when they go idle, so an idle
 * session holds none. Buffers grow on demand (a whole Query message, say) and are freed
 * instead of pooled when they have grown past the pool size.
 *
 * Ownership: buf_get() hands out a buffer the caller owns until buf_put().
 */
#ifndef SLUICE_CORE_BUF_H
#define SLUICE_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

#define BUF_CHUNK (128 * 1024)

struct buf {
    uint8_t *data;
    size_t off; /* first byte not yet consumed */
    size_t len; /* end of valid bytes */
    size_t cap;
};

struct buf *buf_get(void);
void buf_put(struct buf *b);
/* Free this thread's pooled buffers (at thread exit). */
void buf_pool_free(void);

/* Make room for at least `need` more bytes after len (compacting first). Aborts on OOM. */
void buf_reserve(struct buf *b, size_t need);
/* Move [off, len) to the start of data. */
void buf_compact(struct buf *b);

static inline size_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_u8(struct buf *b, uint8_t v);
void buf_append_u16(struct buf *b, uint16_t v);
void buf_append_u32(struct buf *b, uint32_t v);
void buf_append_str(struct buf *b, const char *s); /* with its NUL */
/* Patch a big-endian uint32 at absolute position pos. */
void buf_patch_u32(struct buf *b, size_t pos, uint32_t v);

/* Allocation helpers that abort with a message when memory runs out. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s); /* NULL in, NULL out */

/* s, made safe to print for a person in place: control characters (C0, DEL, C1) and the
 * Unicode bidirectional overrides and isolates (which reorder what a terminal shows) become
 * '?', byte for byte. Text from clients (a statement, a name) then cannot hide what it is
 * behind terminal escapes. */
char *str_make_printable(char *s);

#endif
