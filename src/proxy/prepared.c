/*
 * prepared.c: what sluice keeps about the client's prepared statements, by name: the row
 * limit and masking a rule gave a statement, and the approval grant (with its max_rows) it
 * was allowed under, which apply to each of its Binds (session.c, on_client_bind).
 *
 * A Parse or a Close changes what a name means only once the server has done it: a Parse of
 * a name already in use fails (42P05) and leaves the old statement, and so does a Parse
 * skipped after an earlier error of its group. So each Parse and Close is an op in a queue,
 * applied at its ParseComplete or CloseComplete (replies come in message order) and dropped,
 * unapplied, at the ReadyForQuery of its group when it never got one. A Bind in the same group
 * as a pending op on its name sees that op (if the op fails, the server skips the Bind too); a
 * Bind behind pending ops of earlier groups sees the stricter of them all and of what is known
 * now (the smaller row limit, the stronger masking, a grant over none).
 *
 * A portal bound from a statement with a limit or masking keeps them (struct row_cap) for its
 * Executes in later groups, until it is bound again, closed, or its transaction ends. Binds
 * are ops too while any statement has a limit, masking or grant, or a Parse or Close is
 * pending (a BindComplete of a Bind that is not an op then meets only a Parse or Close op at
 * the head, which it does not complete): a portal's cap changes at
 * the server's BindComplete or CloseComplete, never for a Bind or Close the server skipped
 * or refused (a portal name already in use, an error earlier in the group).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/names.h"
#include "proxy/session_int.h"

/* A name in one of the session's maps:
 * - s->known: a named statement the server holds from a Parse sluice judged (ParseComplete),
 *   until a Close of it, or a SQL PREPARE, DEALLOCATE or DISCARD ALL that may replace or
 *   drop it;
 * - s->changers: a statement (confirmed by its ParseComplete) whose text changes names when
 *   it runs (change);
 * - s->bound: a named portal a Bind made in group `group` (c2s_group), until its Close
 *   completes or its transaction ends. */
struct name_entry {
    struct name_node node; /* first: in its map, by name */
    uint64_t group;
    unsigned closing;           /* a portal's Closes sent and not answered */
    struct name_change *change; /* a changer's (owned) */
    char name[];
};

static struct name_entry *names_find(const struct name_map *map, const char *name)
{
    return (struct name_entry *)name_map_get(map, name);
}

static void entry_free(struct name_entry *e)
{
    free(e->change);
    free(e);
}

static bool drop_upto(struct name_node *node, void *ctx)
{
    struct name_entry *e = (struct name_entry *)node;
    if (e->group > *(const uint64_t *)ctx) return false;
    entry_free(e);
    return true;
}

/* Remove name from the map, or (name NULL) every entry of a group up to upto_group. */
static void names_forget(struct name_map *map, const char *name, uint64_t upto_group)
{
    if (!name) {
        name_map_sweep(map, drop_upto, &upto_group);
        return;
    }
    struct name_entry *e = (struct name_entry *)name_map_take(map, name);
    if (e) entry_free(e);
}

/* A new entry for name (any older one is removed first), in group. */
static struct name_entry *names_add(struct name_map *map, const char *name, uint64_t group)
{
    names_forget(map, name, 0);
    size_t n = strlen(name) + 1;
    struct name_entry *e = xcalloc(1, sizeof *e + n);
    e->group = group;
    memcpy(e->name, name, n);
    name_map_put(map, &e->node, e->name);
    return e;
}

/* A Parse, Bind or Close the server has not answered yet. */
struct prep_op {
    struct prep_op *next;
    uint64_t group;             /* c2s_group when it was sent */
    uint64_t n;                 /* its place among the ops queued (s->prep_pushed) */
    bool parse;                 /* a Parse (else a Bind or a Close) */
    bool bind;                  /* a Bind: name is its portal, cap what the portal gets */
    bool noop;                  /* a Close of a portal: no statement name changes */
    struct name_change *change; /* a Parse of PREPARE, DEALLOCATE or DISCARD ALL: what it does */
    struct limited_stmt *entry; /* what the name means once it is done (NULL: nothing) */
    struct row_cap *cap;        /* a Bind's (NULL: none) */
    char name[];
};

struct limited_stmt *prepared_entry_new(const char *name, uint64_t limit, const char *rule,
                                        int mask, const char *grant, uint64_t grant_max_rows)
{
    if (!limit && !mask && !grant[0]) return NULL;
    size_t n = strlen(name) + 1;
    struct limited_stmt *l = xcalloc(1, sizeof *l + n);
    l->limit = limit;
    l->mask = mask;
    l->rule = rule;
    snprintf(l->grant, sizeof l->grant, "%s", grant);
    l->grant_max_rows = grant[0] ? grant_max_rows : 0;
    memcpy(l->name, name, n);
    return l;
}

static void op_push(struct session *s, const char *name, bool parse, bool noop,
                    struct limited_stmt *entry)
{
    size_t n = strlen(name) + 1;
    struct prep_op *op = xcalloc(1, sizeof *op + n);
    op->group = s->c2s_group;
    op->n = ++s->prep_pushed;
    op->parse = parse;
    op->noop = noop;
    op->entry = entry;
    memcpy(op->name, name, n);
    if (s->prep_tail)
        s->prep_tail->next = op;
    else
        s->prep_ops = op;
    s->prep_tail = op;
}

void prepared_parse(struct session *s, const char *name, struct limited_stmt *entry,
                    const struct name_change *nc)
{
    op_push(s, name, true, false, entry);
    if (nc) {
        s->prep_tail->change = xmalloc(sizeof *nc);
        *s->prep_tail->change = *nc;
    }
}

void prepared_portal_bound(struct session *s, const char *portal)
{
    if (portal[0]) names_add(&s->bound, portal, s->c2s_group);
}

bool prepared_portal_known(const struct session *s, const char *portal)
{
    return !portal[0] || names_find(&s->bound, portal) || relay_group_trimmed(s);
}

void prepared_portals_drop(struct session *s)
{
    names_forget(&s->bound, NULL, s->s2c_group); /* (a Bind sent since stays) */
}

/* A Close of portal name was answered (done) or dropped unanswered: the portal it was sent
 * for ends, or stays. A Bind of the name sent after the Close made a new entry, untouched. */
static void portal_close_done(struct session *s, const char *name, bool done)
{
    struct name_entry *p = names_find(&s->bound, name);
    if (!p || !p->closing) return;
    if (done)
        names_forget(&s->bound, name, 0);
    else
        p->closing--;
}

void prepared_close(struct session *s, const uint8_t *body, size_t len)
{
    if (len < 2 || !memchr(body + 1, 0, len - 1)) return; /* the server refuses it */
    struct name_entry *p = body[0] == 'P' ? names_find(&s->bound, (const char *)body + 1) : NULL;
    if (p) p->closing++;
    op_push(s, (const char *)body + 1, false, body[0] != 'S', NULL);
}

void prepared_grant(struct session *s, const char *name, const char *grant, uint64_t max_rows)
{
    struct prep_op *last = NULL;
    for (struct prep_op *op = s->prep_ops; op; op = op->next)
        if (op->parse && strcmp(op->name, name) == 0) last = op;
    if (!last) return; /* cannot happen: the parked Parse pushed its op */
    if (!last->entry) last->entry = prepared_entry_new(name, 0, NULL, 0, grant, max_rows);
    snprintf(last->entry->grant, sizeof last->entry->grant, "%s", grant);
    last->entry->grant_max_rows = max_rows;
}

static void cap_unlink(struct session *s, const char *portal)
{
    free(name_map_take(&s->caps, portal));
}

bool prepared_name_known(const struct session *s, const char *name)
{
    /* (in a failed group whose queues were dropped the server skips the Bind anyway: no
     * refusal is recorded for a statement that cannot run) */
    if (!name[0] || names_find(&s->known, name) || relay_group_trimmed(s)) return true;
    for (const struct prep_op *op = s->prep_ops; op; op = op->next)
        if (op->parse && strcmp(op->name, name) == 0 &&
            (op->group == s->c2s_group || !s->sql_prepared))
            return true;
    return false;
}

/* Apply a name change now; keep: the statement that makes it, which stays what it is. */
static void change_apply(struct session *s, const struct name_change *nc, const char *keep)
{
    if (nc->cursors) /* a DECLAREd cursor is no portal of a Bind: its Execute is unjudged */
        names_forget(&s->bound, nc->cursor_all ? NULL : nc->cursor, UINT64_MAX);
    if (!nc->all && !nc->name[0]) return; /* (cursors only) */
    if (nc->all) {
        bool kept = keep && names_find(&s->known, keep);
        names_forget(&s->known, NULL, UINT64_MAX);
        if (kept) names_add(&s->known, keep, 0);
        if (keep)
            relay_audit_forget_others(s, keep);
        else
            relay_audit_forget_statement(s, NULL);
    } else if (!keep || strcmp(nc->name, keep) != 0) {
        names_forget(&s->known, nc->name, 0);
        relay_audit_forget_statement(s, nc->name);
    }
    if (nc->prepare) s->sql_prepared = true;
}

void prepared_sql_statement(struct session *s, const struct sql_stmt *st, struct name_change *nc)
{
    if (!st->prepared_all && !st->prepared_name && !st->cursor_all && !st->cursor_name) return;
    struct name_change c = {.any = true,
                            .all = st->prepared_all,
                            .prepare = (st->flags & SQL_F_PREPARE) != 0,
                            .cursors = st->cursor_all || st->cursor_name,
                            .cursor_all = st->cursor_all};
    if (st->prepared_name) snprintf(c.name, sizeof c.name, "%s", st->prepared_name);
    if (st->cursor_name) snprintf(c.cursor, sizeof c.cursor, "%s", st->cursor_name);
    change_apply(s, &c, NULL);
    if (!nc->any) {
        *nc = c;
    } else { /* (several in one text: take each kind as all) */
        nc->all = nc->all || c.all || c.name[0];
        nc->prepare = nc->prepare || c.prepare;
        nc->cursor_all = nc->cursor_all || c.cursors;
        nc->cursors = nc->cursors || c.cursors;
    }
}

void prepared_bind(struct session *s, const char *name)
{
    /* what the bound statement does: a pending Parse of the name may fail and leave the
     * confirmed statement, so either may run */
    const struct prep_op *last = NULL;
    for (const struct prep_op *op = s->prep_ops; op; op = op->next)
        if (op->parse && strcmp(op->name, name) == 0) last = op;
    if (last && last->change) change_apply(s, last->change, name);
    const struct name_entry *c = names_find(&s->changers, name);
    if (c) change_apply(s, c->change, name);
}

/* The op at the head is done: the name now means its entry; a portal, its cap. */
static void op_apply(struct session *s, struct prep_op *op)
{
    if (op->bind || op->noop) {
        cap_unlink(s, op->name); /* (the portal it replaces, or closes) */
        if (op->noop) portal_close_done(s, op->name, true); /* its name is free for a cursor */
        if (op->cap) {
            name_map_put(&s->caps, &op->cap->node, op->cap->portal);
            op->cap = NULL;
        }
        return;
    }
    if (op->parse && op->name[0]) /* (SQL cannot make the unnamed statement) */
        names_add(&s->known, op->name, 0);
    else if (!op->parse)
        names_forget(&s->known, op->name, 0); /* a Close of the statement */
    names_forget(&s->changers, op->name, 0);
    if (op->parse && op->change) {
        names_add(&s->changers, op->name, 0)->change = op->change;
        op->change = NULL; /* taken over */
    }
    free(name_map_take(&s->limited, op->name));
    if (op->entry) {
        name_map_put(&s->limited, &op->entry->node, op->entry->name);
        op->entry = NULL;
    }
}

static void op_pop(struct session *s, bool apply)
{
    struct prep_op *op = s->prep_ops;
    s->prep_ops = op->next;
    if (!s->prep_ops) s->prep_tail = NULL;
    if (apply)
        op_apply(s, op);
    else if (op->noop) /* a Close of a portal the server skipped: the portal stays */
        portal_close_done(s, op->name, false);
    free(op->entry);
    free(op->change);
    free(op->cap);
    free(op);
}

/* The reply that completes op. */
static uint8_t op_reply(const struct prep_op *op)
{
    return op->parse ? '1' : op->bind ? '2' : '3';
}

void prepared_server(struct session *s, uint8_t type)
{
    if (type == '1' || type == '2' || type == '3') {
        /* ops of groups already answered are stale (they got no reply): drop them first */
        while (s->prep_ops && s->prep_ops->group < s->s2c_group)
            op_pop(s, false);
        /* its op is at the head: earlier ones were answered, or dropped with their group */
        if (s->prep_ops && op_reply(s->prep_ops) == type) op_pop(s, true);
        return;
    }
    /* 'Z' of group s2c_group (not yet counted): what it left unanswered failed or was skipped */
    prepared_skipped(s);
}

void prepared_skipped(struct session *s)
{
    while (s->prep_ops && s->prep_ops->group <= s->s2c_group)
        op_pop(s, false);
}

uint64_t prepared_pending(const struct session *s)
{
    return s->prep_ops ? s->prep_pushed - s->prep_ops->n + 1 : 0;
}

bool prepared_holds(const struct session *s, uint8_t type)
{
    return (type == '1' || type == '2' || type == '3') && s->prep_ops;
}

/* Make out the stricter of out and b: the smaller row limit, the stronger masking, a grant
 * over none (and the smaller max_rows). */
static void stricter(struct limited_stmt *out, const struct limited_stmt *b)
{
    if (b->limit && (!out->limit || b->limit < out->limit)) {
        out->limit = b->limit;
        out->rule = b->rule;
    }
    if (b->mask > out->mask) out->mask = b->mask; /* 1 masks, 0 scans, -1 raw */
    if (b->grant[0] &&
        (!out->grant[0] || (b->grant_max_rows &&
                            (!out->grant_max_rows || b->grant_max_rows < out->grant_max_rows)))) {
        memcpy(out->grant, b->grant, sizeof out->grant);
        out->grant_max_rows = b->grant_max_rows;
    }
}

const struct limited_stmt *prepared_lookup(struct session *s, const char *name,
                                           struct limited_stmt *tmp)
{
    const struct limited_stmt *known = (struct limited_stmt *)name_map_get(&s->limited, name);
    const struct prep_op *last = NULL;
    for (const struct prep_op *op = s->prep_ops; op; op = op->next)
        if (!op->noop && !op->bind && strcmp(op->name, name) == 0) last = op;
    if (!last) return known;
    if (last->group == s->c2s_group) return last->entry; /* this group: it holds if the Bind runs */
    /* any of the earlier groups' ops may or may not take: the stricter of them all (an op
     * with no entry means no limit, no grant and masking by detection) */
    static const struct limited_stmt none;
    bool any = known != NULL;
    memcpy(tmp, known ? known : &none, sizeof *tmp);
    for (const struct prep_op *op = s->prep_ops; op; op = op->next) {
        if (op->noop || op->bind || strcmp(op->name, name) != 0) continue;
        stricter(tmp, op->entry ? op->entry : &none);
        any = any || op->entry;
    }
    return any ? tmp : NULL;
}

bool prepared_any(const struct session *s)
{
    return s->limited.n || s->prep_ops || s->caps.n;
}

static bool cap_done(struct name_node *node, void *ctx)
{
    struct row_cap *c = (struct row_cap *)node;
    if (c->group > *(const uint64_t *)ctx) return false;
    free(c);
    return true;
}

void prepared_cap_drop(struct session *s)
{
    name_map_sweep(&s->caps, cap_done, &s->s2c_group);
}

void prepared_cap_bind(struct session *s, const char *portal, const struct limited_stmt *l)
{
    struct row_cap *c = NULL;
    if (l && (l->limit || l->mask)) {
        size_t n = strlen(portal) + 1;
        c = xcalloc(1, sizeof *c + n);
        c->group = s->c2s_group;
        c->limit = l->limit;
        c->rule = l->rule;
        c->mask = l->mask;
        memcpy(c->portal, portal, n);
    }
    op_push(s, portal, false, false, NULL);
    s->prep_tail->bind = true;
    s->prep_tail->cap = c;
}

struct row_cap *prepared_cap_of(struct session *s, const char *portal)
{
    return (struct row_cap *)name_map_get(&s->caps, portal);
}

bool prepared_cap_exec(struct session *s, const char *portal, struct limited_stmt *out)
{
    memset(out, 0, sizeof *out);
    const struct row_cap *now = prepared_cap_of(s, portal), *pending = NULL;
    bool any = now != NULL;
    for (const struct prep_op *op = s->prep_ops; op; op = op->next)
        if ((op->bind || op->noop) && strcmp(op->name, portal) == 0) {
            pending = op->cap;
            any = true;
        }
    /* what it runs once the pending Bind or Close is done, or if that fails: the stricter */
    const struct row_cap *both[2] = {now, pending};
    bool first = true;
    for (int i = 0; i < 2; i++) {
        const struct row_cap *c = both[i];
        if (!c) continue;
        struct limited_stmt b = {.limit = c->limit, .rule = c->rule, .mask = c->mask};
        if (first)
            *out = b;
        else
            stricter(out, &b);
        first = false;
    }
    return any && (out->limit || out->mask);
}

static bool drop_any(struct name_node *node, void *ctx)
{
    (void)ctx;
    free(node);
    return true;
}

void prepared_free_all(struct session *s)
{
    name_map_sweep(&s->caps, drop_any, NULL);
    while (s->prep_ops)
        op_pop(s, false);
    name_map_sweep(&s->limited, drop_any, NULL);
    names_forget(&s->known, NULL, UINT64_MAX);
    names_forget(&s->changers, NULL, UINT64_MAX);
    names_forget(&s->bound, NULL, UINT64_MAX);
}
