/*
 * relay_audit_tx.c: what the end of a transaction block does to the audit of the writes
 * inside it.
 *
 * A write's event is journaled before the write runs, and its result (rows) follows when it
 * completes. Inside a transaction block that result is not final: a ROLLBACK undoes it, and
 * so does a block that ends without COMMIT (a COMMIT of a failed block answers ROLLBACK, a
 * deferred constraint fails the COMMIT itself, the session ends). ROLLBACK TO SAVEPOINT undoes
 * what completed after the savepoint. Each write undone gets a statement_end referring to its
 * event, with the detail "rolled back: ..." (docs/audit.md).
 *
 * The block is followed from the server's replies, in order: ReadyForQuery's transaction
 * status, and between two of them the CommandComplete tags of BEGIN, START TRANSACTION,
 * COMMIT, ROLLBACK, SAVEPOINT, RELEASE and PREPARE TRANSACTION (one group of a pipeline, or
 * one simple Query, may hold several). Writes completed earlier in the group of a BEGIN join
 * its block, as PostgreSQL makes the implicit transaction explicit. Outside a block, the
 * writes of an extended-protocol group are kept too: its implicit transaction ends at its Sync
 * (a failed commit there, or an error later in the group, undoes them: "failed after
 * completing"), or at a COMMIT or ROLLBACK inside it, or with the session when its Sync never
 * came. A PREPARE TRANSACTION ends the block here: the prepared transaction's outcome is
 * decided by a later COMMIT PREPARED or ROLLBACK PREPARED, possibly in another session, and is
 * not followed.
 */
#include "proxy/session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct savepoint {
    char *name;
    unsigned mark; /* the writes completed before it */
};

struct audit_tx {
    bool in_block;
    /* a SAVEPOINT, RELEASE or ROLLBACK of a statement sluice does not know ran: the savepoints
     * are not known any more, so no ROLLBACK TO is followed until the block ends */
    bool lost;
    char sqlstate[6]; /* the error that failed the block */
    uint64_t *writes; /* events of the writes completed inside the block, oldest first */
    unsigned n, cap;
    /* outside a block: events of the writes completed in extended-protocol group `group` */
    uint64_t *grp, group;
    unsigned n_grp, cap_grp;
    struct savepoint *sp; /* oldest first */
    unsigned n_sp, cap_sp;
};

static struct audit_tx *tx_get(struct session *s)
{
    if (!s->atx) s->atx = xcalloc(1, sizeof *s->atx);
    return s->atx;
}

static void sp_pop_to(struct audit_tx *t, unsigned n_sp)
{
    while (t->n_sp > n_sp)
        free(t->sp[--t->n_sp].name);
}

/* The latest savepoint of that name (PostgreSQL's choice when names repeat), or -1. */
static int sp_find(const struct audit_tx *t, const char *name)
{
    for (unsigned i = t->n_sp; i-- > 0;)
        if (strcmp(t->sp[i].name, name) == 0) return (int)i;
    return -1;
}

/* The writes from index `from` on are undone. */
static void undo_from(struct session *s, unsigned from, const char *detail)
{
    struct audit_tx *t = s->atx;
    if (from < t->n)
        relay_audit_emit_undone(s, t->writes + from, t->n - from,
                                t->sqlstate[0] ? t->sqlstate : NULL, detail);
    t->n = from;
}

/* The block is over: committed (nothing to say) or not (its writes are undone). AND CHAIN
 * starts the next one at once. */
static void block_end(struct session *s, bool committed, const char *detail, bool chain)
{
    struct audit_tx *t = s->atx;
    if (!committed) undo_from(s, 0, detail);
    t->n = 0;
    sp_pop_to(t, 0);
    t->sqlstate[0] = '\0';
    t->lost = false;
    t->in_block = chain;
}

static void seq_push(uint64_t **v, unsigned *n, unsigned *cap, uint64_t seq)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = seq;
}

/* The writes the group being answered (or, at the session's end, `group`) completed outside
 * a block: how many; 0 when they are of another group. */
static unsigned group_writes(const struct audit_tx *t, uint64_t group)
{
    return t && t->n_grp && t->group == group ? t->n_grp : 0;
}

/* The implicit transaction of the group being answered ended: committed (nothing to say) or
 * not (its writes are undone, with detail and sqlstate). */
static void group_end(struct session *s, bool committed, const char *sqlstate, const char *detail)
{
    struct audit_tx *t = s->atx;
    unsigned n = group_writes(t, s->s2c_group);
    if (n && !committed) relay_audit_emit_undone(s, t->grp, n, sqlstate, detail);
    if (t) t->n_grp = 0;
}

void relay_audit_tx_note(struct session *s, uint64_t seq, uint64_t group, bool query)
{
    struct audit_tx *t = tx_get(s);
    if (t->in_block) {
        seq_push(&t->writes, &t->n, &t->cap, seq);
    } else if (!query) { /* (a simple Query outside a block is a transaction of its own) */
        if (t->group != group) t->n_grp = 0;
        t->group = group;
        seq_push(&t->grp, &t->n_grp, &t->cap_grp, seq);
    }
}

void relay_audit_tx_group_failed(struct session *s, const char *sqlstate)
{
    group_end(s, false, sqlstate,
              "failed after completing: an error later in its group (such as the commit at Sync) "
              "ended its transaction");
}

void relay_audit_tx_tag(struct session *s, const char *tag, const struct tx_part *part)
{
    if (!strcmp(tag, "BEGIN") || !strcmp(tag, "START TRANSACTION")) {
        struct audit_tx *t = tx_get(s);
        if (t->in_block) return; /* a warning only: already in a block */
        t->in_block = true;
        /* what this group completed before it is in the block now */
        unsigned n = group_writes(t, s->s2c_group);
        for (unsigned i = 0; i < n; i++)
            seq_push(&t->writes, &t->n, &t->cap, t->grp[i]);
        t->n_grp = 0;
        return;
    }
    struct audit_tx *t = s->atx;
    bool chain = part && part->chain;
    if (!t || !t->in_block) {
        /* (ROLLBACK TO, SAVEPOINT and RELEASE fail outside a block, so a ROLLBACK here is a
         * plain one) */
        if (!strcmp(tag, "COMMIT") || !strcmp(tag, "ROLLBACK"))
            group_end(s, tag[0] == 'C', NULL, "rolled back: its transaction ended with ROLLBACK");
        return;
    }
    const char *name = part ? part->savepoint : NULL;
    if (!strcmp(tag, "COMMIT") || !strcmp(tag, "PREPARE TRANSACTION")) {
        block_end(s, true, NULL, chain);
    } else if (!strcmp(tag, "ROLLBACK") && !part) {
        t->lost = true; /* a ROLLBACK TO, or the end: ReadyForQuery's status will say */
    } else if (!strcmp(tag, "ROLLBACK") && !name) {
        block_end(s, false, "rolled back: its transaction ended with ROLLBACK", chain);
    } else if (!strcmp(tag, "ROLLBACK")) { /* ROLLBACK TO SAVEPOINT: the savepoint stays */
        int i = t->lost ? -1 : sp_find(t, name);
        if (i >= 0) {
            sp_pop_to(t, (unsigned)i + 1);
            undo_from(s, t->sp[i].mark, "rolled back: ROLLBACK TO SAVEPOINT");
        }
        t->sqlstate[0] = '\0'; /* the block is usable again */
    } else if (!strcmp(tag, "RELEASE")) {
        int i = name ? sp_find(t, name) : -1;
        if (!name) t->lost = true;
        if (i >= 0) sp_pop_to(t, (unsigned)i); /* its writes stay, the block's now */
    } else if (!strcmp(tag, "SAVEPOINT")) {
        if (!name) {
            t->lost = true;
            return;
        }
        if (t->n_sp == t->cap_sp) {
            t->cap_sp = t->cap_sp ? 2 * t->cap_sp : 4;
            t->sp = xrealloc(t->sp, t->cap_sp * sizeof *t->sp);
        }
        t->sp[t->n_sp++] = (struct savepoint){xstrdup(name), t->n};
    }
}

void relay_audit_tx_error(struct session *s, const char *sqlstate)
{
    struct audit_tx *t = s->atx;
    /* the first: what failed the block (later ones are 25P02, "commands ignored") */
    if (t && t->in_block && !t->sqlstate[0])
        snprintf(t->sqlstate, sizeof t->sqlstate, "%s", sqlstate);
}

void relay_audit_tx_ready(struct session *s, uint8_t status)
{
    if (status == 'I') {
        /* left the block without a COMMIT the relay saw: a COMMIT that failed, or a ROLLBACK
         * of a statement sluice could not read */
        if (s->atx && s->atx->in_block)
            block_end(s, false, "rolled back: its transaction ended without committing", false);
        return;
    }
    struct audit_tx *t = tx_get(s);
    t->in_block = true;
    if (status == 'T') t->sqlstate[0] = '\0'; /* not failed (now) */
}

void relay_audit_tx_end(struct session *s, bool commit_pending)
{
    struct audit_tx *t = s->atx;
    if (!t) return;
    /* PostgreSQL rolls back what a closed connection left open: a block, or the implicit
     * transaction of a group whose Sync never came. Unless a COMMIT sent before the end (or a
     * group's Sync) already ran: then the outcome is not known, and nothing is said. */
    const char *ended = "rolled back: the session ended inside its transaction";
    unsigned n = group_writes(t, s->c2s_group);
    if (!commit_pending) {
        block_end(s, false, ended, false);
        if (n) relay_audit_emit_undone(s, t->grp, n, NULL, ended);
    }
    sp_pop_to(t, 0);
    free(t->sp);
    free(t->writes);
    free(t->grp);
    free(t);
    s->atx = NULL;
}
