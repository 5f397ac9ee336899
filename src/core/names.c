/*
 * names.c: the hash table of named entries (names.h). Chained buckets, doubled when the
 * entries outnumber them; FNV-1a keyed with a random per-process key.
 */
#include "core/names.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/buf.h"

#define FIRST_CAP 16u

static uint64_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void key_init(void)
{
    if (RAND_bytes((unsigned char *)&key, sizeof key) != 1) {
        fprintf(stderr, "sluice: RAND_bytes failed\n");
        abort();
    }
}

static uint64_t name_hash(const char *name)
{
    static _Thread_local bool key_seen; /* pthread_once is a call, and this runs per lookup */
    if (!key_seen) {
        pthread_once(&key_once, key_init);
        key_seen = true;
    }
    uint64_t h = 1469598103934665603ull ^ key;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h ^ (h >> 31);
}

static void grow(struct name_map *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : FIRST_CAP;
    struct name_node **b = xcalloc(cap, sizeof *b);
    for (uint32_t i = 0; i < m->cap; i++)
        for (struct name_node *nd = m->bucket[i], *next; nd; nd = next) {
            next = nd->next;
            nd->next = b[nd->hash & (cap - 1)];
            b[nd->hash & (cap - 1)] = nd;
        }
    free(m->bucket);
    m->bucket = b;
    m->cap = cap;
}

struct name_node *name_map_get(const struct name_map *m, const char *name)
{
    if (!m->n) return NULL;
    uint64_t h = name_hash(name);
    for (struct name_node *nd = m->bucket[h & (m->cap - 1)]; nd; nd = nd->next)
        if (nd->hash == h && strcmp(nd->name, name) == 0) return nd;
    return NULL;
}

void name_map_put(struct name_map *m, struct name_node *node, const char *name)
{
    if (m->n >= m->cap) grow(m);
    node->hash = name_hash(name);
    node->name = name;
    struct name_node **b = &m->bucket[node->hash & (m->cap - 1)];
    node->next = *b;
    *b = node;
    m->n++;
}

static void drop_table_if_empty(struct name_map *m)
{
    if (m->n) return;
    free(m->bucket);
    m->bucket = NULL;
    m->cap = 0;
}

struct name_node *name_map_take(struct name_map *m, const char *name)
{
    if (!m->n) return NULL;
    uint64_t h = name_hash(name);
    for (struct name_node **pp = &m->bucket[h & (m->cap - 1)]; *pp; pp = &(*pp)->next) {
        struct name_node *nd = *pp;
        if (nd->hash != h || strcmp(nd->name, name) != 0) continue;
        *pp = nd->next;
        m->n--;
        drop_table_if_empty(m);
        return nd;
    }
    return NULL;
}

void name_map_sweep(struct name_map *m, bool (*drop)(struct name_node *node, void *ctx), void *ctx)
{
    for (uint32_t i = 0; i < m->cap; i++)
        for (struct name_node **pp = &m->bucket[i]; *pp;) {
            struct name_node *nd = *pp, *next = nd->next;
            if (drop(nd, ctx)) {
                *pp = next;
                m->n--;
            } else {
                pp = &nd->next;
            }
        }
    drop_table_if_empty(m);
}
