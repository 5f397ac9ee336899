/*
 * approve_mem.c: the approvals state that the statement path reads and changes, in memory.
 *
 * The requests this process watches (made here, or pending in the state file when it started)
 * and the grants it has used or checked, each in a hash table by id, and the queue of changes
 * the file has yet to get (a new request, a request's end, a grant's use), in the order memory
 * made them.
 * Nothing here touches the file, a clock or a lock: approve.c holds its memory lock around
 * every call, and that lock is only ever held for steps like these.
 *
 * Ownership: the tables own their entries, the queue its ops until amem_op_pop() hands the
 * oldest to the caller (who frees it with aop_free).
 */
#include <stdlib.h>
#include <string.h>

#include "approve/approve_int.h"
#include "core/buf.h"

void aop_free(struct aop *op)
{
    if (!op) return;
    areq_free(&op->r);
    free(op);
}

/* ---- requests */

static void mreq_free(struct mreq *q)
{
    areq_free(&q->r);
    free(q->cancel_reason);
    free(q);
}

struct mreq *amem_req_get(struct amem *m, const char *id)
{
    return id ? (struct mreq *)name_map_get(&m->reqs, id) : NULL;
}

struct mreq *amem_req_add_take(struct amem *m, struct areq *r)
{
    struct mreq *q = amem_req_get(m, r->id);
    if (q) {
        areq_free(r);
        return q;
    }
    q = xcalloc(1, sizeof *q);
    q->r = *r;
    memset(r, 0, sizeof *r);
    name_map_put(&m->reqs, &q->node, q->r.id);
    return q;
}

struct each_ctx {
    bool (*fn)(struct mreq *q, void *ctx);
    void *ctx;
};

static bool each_one(struct name_node *node, void *arg)
{
    struct each_ctx *e = arg;
    struct mreq *q = (struct mreq *)node;
    if (!e->fn(q, e->ctx)) return false;
    mreq_free(q);
    return true;
}

void amem_req_each(struct amem *m, bool (*fn)(struct mreq *q, void *ctx), void *ctx)
{
    struct each_ctx e = {fn, ctx};
    name_map_sweep(&m->reqs, each_one, &e);
}

struct count_ctx {
    const char *identity;
    int64_t now;
    unsigned n;
};

static bool count_one(struct mreq *q, void *arg)
{
    struct count_ctx *c = arg;
    if (q->r.state == APPROVE_PENDING && (!c->now || q->r.expires_at > c->now) &&
        (!c->identity || (q->r.identity && !strcmp(q->r.identity, c->identity))))
        c->n++;
    return false;
}

unsigned amem_pending_count(struct amem *m, const char *identity, int64_t now)
{
    struct count_ctx c = {identity, now, 0};
    amem_req_each(m, count_one, &c);
    return c.n;
}

/* ---- grants */

bool amem_grant_live(const struct mgrant *e, int64_t now)
{
    return !e->revoked && e->g.expires_at > now && e->g.uses_left > 0;
}

struct mgrant *amem_grant_get(struct amem *m, const char *id)
{
    return id ? (struct mgrant *)name_map_get(&m->grants, id) : NULL;
}

void amem_grant_put(struct amem *m, const struct approve_grant *g)
{
    if (!g->id[0] || amem_grant_get(m, g->id)) return;
    struct mgrant *e = xcalloc(1, sizeof *e);
    e->g = *g;
    name_map_put(&m->grants, &e->node, e->g.id);
}

void amem_grant_revoke(struct amem *m, const char *id)
{
    struct mgrant *e = amem_grant_get(m, id);
    if (e) e->revoked = true;
}

static bool grant_expired(struct name_node *node, void *arg)
{
    const int64_t *now = arg;
    struct mgrant *e = (struct mgrant *)node;
    if (e->g.expires_at > *now) return false;
    free(e);
    return true;
}

void amem_grant_prune(struct amem *m, int64_t now)
{
    name_map_sweep(&m->grants, grant_expired, &now);
}

struct find_ctx {
    const char *identity, *target, *fingerprint;
    const char *const *groups;
    unsigned n;
    int64_t now;
    const struct approve_grant *best;
};

static bool in_groups(const struct find_ctx *f, const char *group)
{
    for (unsigned i = 0; i < f->n; i++)
        if (f->groups && f->groups[i] && !strcmp(f->groups[i], group)) return true;
    return false;
}

static bool find_one(struct name_node *node, void *arg)
{
    struct find_ctx *f = arg;
    const struct mgrant *e = (struct mgrant *)node;
    const struct approve_grant *g = &e->g;
    if (!amem_grant_live(e, f->now) || strcmp(g->fingerprint, f->fingerprint) != 0 ||
        strcmp(g->target, f->target) != 0)
        return false;
    bool covers = g->scope == APPROVE_SCOPE_IDENTITY ? !strcmp(g->identity, f->identity)
                                                     : in_groups(f, g->group);
    /* a group grant covers the group's members, not its approver */
    if (!covers || approve_same_person(g->approver, f->identity)) return false;
    const struct approve_grant *b = f->best;
    if (!b || (g->scope == APPROVE_SCOPE_IDENTITY && b->scope != APPROVE_SCOPE_IDENTITY) ||
        (g->scope == b->scope && g->expires_at > b->expires_at))
        f->best = g;
    return false;
}

bool amem_grant_find(struct amem *m, const char *identity, const char *const *groups, unsigned n,
                     const char *target, const char *fingerprint, int64_t now,
                     struct approve_grant *out)
{
    struct find_ctx f = {identity, target, fingerprint, groups, n, now, NULL};
    name_map_sweep(&m->grants, find_one, &f);
    if (f.best) *out = *f.best;
    return f.best != NULL;
}

/* ---- the queue of writes */

void amem_op_push(struct amem *m, struct aop *op)
{
    op->next = NULL;
    if (m->ops_last)
        m->ops_last->next = op;
    else
        m->ops = op;
    m->ops_last = op;
    m->n_ops++;
}

struct aop *amem_op_first(struct amem *m)
{
    return m->ops;
}

unsigned amem_op_count(const struct amem *m)
{
    return m->n_ops;
}

struct aop *amem_op_pop(struct amem *m)
{
    struct aop *op = m->ops;
    if (!op) return NULL;
    m->ops = op->next;
    if (!m->ops) m->ops_last = NULL;
    op->next = NULL;
    m->n_ops--;
    return op;
}

static bool drop_req(struct mreq *q, void *ctx)
{
    (void)q;
    (void)ctx;
    return true;
}

static bool drop_grant(struct name_node *node, void *ctx)
{
    (void)ctx;
    free(node);
    return true;
}

void amem_clear(struct amem *m)
{
    amem_req_each(m, drop_req, NULL);
    name_map_sweep(&m->grants, drop_grant, NULL);
    struct aop *op;
    while ((op = amem_op_pop(m)))
        aop_free(op);
}
