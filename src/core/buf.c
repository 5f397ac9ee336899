/*
 * buf.c: byte buffers with a small per-thread free list, and the allocation wrappers.
 * Out of memory is the one error sluice does not handle: it aborts with a message.
 */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX 64

static _Thread_local struct buf *pool[POOL_MAX];
static _Thread_local unsigned pool_len;

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("sluice: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *xcalloc(size_t n, size_t m)
{
    /* glibc's calloc (2.36, Debian 12) bypasses the thread's cache and takes an arena lock
     * every time; small blocks, the hot path's statement records among them, come from malloc
     * (whose cache holds blocks up to 1032 bytes) and are zeroed here. */
    if (n && m && n <= 1024 / m) {
        void *p = xmalloc(n * m);
        return memset(p, 0, n * m);
    }
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) {
        fputs("sluice: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("sluice: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *str_make_printable(char *s)
{
    for (unsigned char *p = (unsigned char *)s; p && *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *p = '?';
        } else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) { /* U+0080..U+009F */
            p[0] = p[1] = '?';
            p++;
        } else if (p[0] == 0xe2 && p[1] && p[2] &&
                   ((p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) ||  /* U+202A..U+202E */
                    (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9))) { /* U+2066..U+2069 */
            p[0] = p[1] = p[2] = '?';
            p += 2;
        }
    }
    return s;
}

char *xstrdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

struct buf *buf_get(void)
{
    if (pool_len) return pool[--pool_len];
    struct buf *b = xmalloc(sizeof *b);
    b->data = xmalloc(BUF_CHUNK);
    b->cap = BUF_CHUNK;
    b->off = b->len = 0;
    return b;
}

void buf_put(struct buf *b)
{
    if (!b) return;
    if (b->cap == BUF_CHUNK && pool_len < POOL_MAX) {
        b->off = b->len = 0;
        pool[pool_len++] = b;
        return;
    }
    free(b->data);
    free(b);
}

void buf_pool_free(void)
{
    while (pool_len) {
        struct buf *b = pool[--pool_len];
        free(b->data);
        free(b);
    }
}

void buf_compact(struct buf *b)
{
    if (b->off == 0) return;
    size_t n = b->len - b->off;
    if (n) memmove(b->data, b->data + b->off, n);
    b->off = 0;
    b->len = n;
}

void buf_reserve(struct buf *b, size_t need)
{
    if (b->cap - b->len >= need) return;
    buf_compact(b);
    if (b->cap - b->len >= need) return;
    size_t cap = b->cap;
    while (cap - b->len < need)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void buf_append_u8(struct buf *b, uint8_t v)
{
    buf_append(b, &v, 1);
}

void buf_append_u16(struct buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    buf_append(b, x, 2);
}

void buf_append_u32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_append(b, x, 4);
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s) + 1);
}

void buf_patch_u32(struct buf *b, size_t pos, uint32_t v)
{
    b->data[pos] = (uint8_t)(v >> 24);
    b->data[pos + 1] = (uint8_t)(v >> 16);
    b->data[pos + 2] = (uint8_t)(v >> 8);
    b->data[pos + 3] = (uint8_t)v;
}
