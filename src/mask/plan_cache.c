/*
 * plan_cache.c: each thread's recent RowDescription plans, so that a result seen before costs
 * a comparison and a copy instead of a catalog lookup and a name classification per column
 * (every simple Query of pgbench -S brings the same RowDescription). Building plans is
 * rows.c's; what the resolver's answers depend on is the caller's to say (scope, epoch).
 *
 * A slot holds the exact body bytes of a RowDescription, the key of everything else its plan
 * depends on (the db's id, which is never reused; the resolve function; the caller's scope
 * and epoch) and the plan (NULL: nothing to look at). A plan built while the resolver did
 * not know a column, or from a malformed message, is not kept. Callers get a copy: a slot can
 * be reused while they hold it. At most MASK_PLAN_CACHE_SLOTS slots per thread, bodies up to
 * MASK_PLAN_CACHE_BODY bytes, the least recently used slot replaced; entries of a db that is
 * gone are never matched again and age out.
 */
#include <stdlib.h>
#include <string.h>

#include "mask/mask.h"

struct plan_slot {
    uint64_t used; /* this thread's tick of the last use; 0: empty */
    uint64_t db_id, scope, epoch;
    mask_resolve_fn resolve;
    size_t len;
    uint8_t *body; /* len bytes */
    struct mask_plan *plan;
};

static __thread struct plan_slot tl_slots[MASK_PLAN_CACHE_SLOTS];
static __thread uint64_t tl_tick;

void mask_plan_cache_release(void)
{
    for (unsigned i = 0; i < MASK_PLAN_CACHE_SLOTS; i++) {
        free(tl_slots[i].body);
        mask_plan_free(tl_slots[i].plan);
    }
    memset(tl_slots, 0, sizeof tl_slots);
    tl_tick = 0;
}

int mask_plan_build_cached(const struct mask_db *db, const uint8_t *body, size_t len,
                           mask_resolve_fn resolve, void *ctx, uint64_t scope, uint64_t epoch,
                           struct mask_plan **out)
{
    uint64_t db_id = db ? mask_db_id(db) : 0;
    bool fits = len <= MASK_PLAN_CACHE_BODY;
    struct plan_slot *victim = &tl_slots[0];
    for (unsigned i = 0; fits && i < MASK_PLAN_CACHE_SLOTS; i++) {
        struct plan_slot *s = &tl_slots[i];
        if (s->used && s->len == len && s->db_id == db_id && s->epoch == epoch &&
            s->scope == scope && s->resolve == resolve && memcmp(s->body, body, len) == 0) {
            s->used = ++tl_tick;
            *out = mask_plan_copy(s->plan);
            return 0;
        }
        if (s->used < victim->used) victim = s;
    }
    bool unresolved;
    int r = mask_plan_build_report(db, body, len, resolve, ctx, out, &unresolved);
    if (r < 0 || unresolved || !fits) return r;
    mask_plan_free(victim->plan);
    victim->plan = mask_plan_copy(*out);
    victim->body = xrealloc(victim->body, len);
    memcpy(victim->body, body, len);
    victim->len = len;
    victim->db_id = db_id;
    victim->scope = scope;
    victim->epoch = epoch;
    victim->resolve = resolve;
    victim->used = ++tl_tick;
    return 0;
}
