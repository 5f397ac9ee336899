/*
 * relay_grant.c: a write run under an approval grant with max_rows is bounded. The client's
 * simple Query goes upstream wrapped in a transaction sluice adds and ends itself:
 *
 *   outside a transaction:  "BEGIN; <statement>"            then COMMIT, or ROLLBACK
 *   inside one:             "SAVEPOINT sluice_grant; <st>"   then RELEASE, or ROLLBACK TO it
 *
 * The CommandComplete of the statement says how many rows it touched; within the bound the
 * work is kept and the client sees exactly what PostgreSQL would have sent. Beyond it the work
 * is undone and the client gets 42501 saying so (inside a transaction, the transaction is left
 * failed, as an error of the statement itself would leave it). The wrapper's own replies (the
 * BEGIN/SAVEPOINT CommandComplete, the first ReadyForQuery, the finishing query's replies) are
 * swallowed, so the client sees one statement and one ReadyForQuery.
 *
 * Only simple Query messages holding one write statement are wrapped; the extended protocol
 * runs under the grant without a row bound (logged; docs/approvals.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pg/msg.h"
#include "proxy/session_int.h"

#define SAVEPOINT "sluice_grant"

static void queue_query(struct session *s, const char *a, const uint8_t *b, size_t blen)
{
    struct buf *out = session_out_buf(&s->sv_out);
    size_t m = pg_msg_begin(out, 'Q');
    buf_append(out, a, strlen(a));
    if (b) buf_append(out, b, blen);
    buf_append_u8(out, 0);
    pg_msg_end(out, m);
}

enum hold_action relay_grant_wrap(struct session *s, const uint8_t *body, size_t len)
{
    if (s->pending_sync != 1) {
        /* Statements before it are still running: their transaction state is not known yet,
         * so the bound cannot be kept safely. */
        s->gg_pending_max = 0;
        blocked_push_group(s, s->c2s_group - 1, "42501",
                           "sluice: a write under a grant with max_rows must not be pipelined "
                           "behind other statements",
                           "send it after the previous statements' results");
        return relay_placeholder_query(s);
    }
    s->gg_outside = s->tx == 'I';
    s->gg = GG_STMT;
    s->gg_cmds = 0;
    s->gg_error = s->gg_exceeded = false;
    s->gg_max = s->gg_pending_max;
    s->gg_pending_max = 0;
    free(s->gg_held);
    s->gg_held = NULL;
    queue_query(s, s->gg_outside ? "BEGIN; " : "SAVEPOINT " SAVEPOINT "; ", body,
                len > 0 ? len - 1 : 0);
    return HOLD_REPLACE;
}

/* The client's error for a write beyond the bound; its audit record gets the SQLSTATE. */
static void put_refusal(struct session *s, const char *msg)
{
    struct buf *out = session_out_buf(&s->cl_out);
    size_t mark = out->len - out->off;
    pg_put_error(out, "ERROR", "42501", msg, NULL,
                 "ask for a grant with a larger max_rows, or narrow the statement");
    relay_audit_server(s, 'E', out->data + out->off + mark + 5, out->len - out->off - mark - 5);
}

bool relay_grant_server(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                        enum hold_action *act)
{
    *act = HOLD_REPLACE; /* swallowed unless said otherwise */
    if (s->gg == GG_STMT) {
        switch (type) {
        case 'C':
            if (++s->gg_cmds == 1) return true; /* BEGIN / SAVEPOINT */
            s->gg_rows = pg_tag_rows(body, len);
            relay_audit_server(s, 'C', body, len); /* the statement's record gets its rows */
            s->gg_exceeded = s->gg_rows > s->gg_max;
            free(s->gg_held);
            s->gg_held = xmalloc(len + 5);
            s->gg_held[0] = 'C';
            memcpy(s->gg_held + 1, body - 4, len + 4);
            s->gg_held_len = len + 5;
            return true;
        case 'E':
            s->gg_error = true;
            return false; /* the client gets the statement's own error */
        case 'Z':
            if (!s->gg_outside && s->gg_error) {
                s->gg = GG_NONE; /* the client's transaction is failed, as it would be */
                return false;
            }
            if (s->gg_outside)
                queue_query(s, s->gg_error || s->gg_exceeded ? "ROLLBACK" : "COMMIT", NULL, 0);
            else if (s->gg_exceeded)
                queue_query(s,
                            "ROLLBACK TO SAVEPOINT " SAVEPOINT "; RELEASE SAVEPOINT " SAVEPOINT
                            "; " BLOCKED_PLACEHOLDER,
                            NULL, 0);
            else
                queue_query(s, "RELEASE SAVEPOINT " SAVEPOINT, NULL, 0);
            if (s->gg_exceeded)
                log_info("session %llu: a write touched %llu rows, more than its grant's "
                         "max_rows %llu: rolled back",
                         (unsigned long long)s->id, (unsigned long long)s->gg_rows,
                         (unsigned long long)s->gg_max);
            s->gg = GG_FINISH;
            s->gg_kick = true;
            return true;
        default:
            return false;
        }
    }
    /* GG_FINISH: the replies to the finishing query. */
    char msg[256];
    snprintf(msg, sizeof msg,
             "sluice: the statement touched %llu rows, more than the %llu its grant allows; it "
             "was rolled back",
             (unsigned long long)s->gg_rows, (unsigned long long)s->gg_max);
    switch (type) {
    case 'C':
        return true;
    case 'E':
        if (!s->gg_exceeded) { /* COMMIT or RELEASE failed (deferred constraint, ...) */
            s->gg_error = true;
            return false; /* the client gets the server's own error */
        }
        /* the placeholder that leaves a client transaction failed */
        put_refusal(s, msg);
        return true;
    case 'Z':
        if (s->gg_exceeded && s->gg_outside)
            put_refusal(s, msg);
        else if (!s->gg_exceeded && !s->gg_error && s->gg_held)
            buf_append(session_out_buf(&s->cl_out), s->gg_held, s->gg_held_len);
        free(s->gg_held);
        s->gg_held = NULL;
        s->gg = GG_NONE;
        s->gg_kick = true;
        s->gg_append_z = true; /* the ReadyForQuery follows what was just queued */
        return false;
    default:
        return false;
    }
}
