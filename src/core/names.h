/*
 * names.h: entries kept by name in a hash table (a session's prepared statements and portals,
 * whose names clients choose and may make by the thousands).
 *
 * Intrusive: an entry embeds a struct name_node first and keeps its own copy of the name; the
 * map only links nodes. The hash is keyed per process, so clients cannot aim names at one
 * bucket. An empty map holds no memory.
 */
#ifndef SLUICE_CORE_NAMES_H
#define SLUICE_CORE_NAMES_H

#include <stdbool.h>
#include <stdint.h>

struct name_node {
    struct name_node *next; /* in its bucket */
    uint64_t hash;
    const char *name; /* the entry's own copy */
};

struct name_map {
    struct name_node **bucket; /* NULL while empty */
    uint32_t cap, n;
};

struct name_node *name_map_get(const struct name_map *m, const char *name);
/* Link node under name (which must not be in the map yet); name stays owned by the entry. */
void name_map_put(struct name_map *m, struct name_node *node, const char *name);
/* Unlink the node of name and return it; NULL when there is none. */
struct name_node *name_map_take(struct name_map *m, const char *name);
/* Unlink every node for which drop(node, ctx) returns true; drop may free it. The table goes
 * when the map is left empty. */
void name_map_sweep(struct name_map *m, bool (*drop)(struct name_node *node, void *ctx), void *ctx);

#endif
