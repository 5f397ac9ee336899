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
 * The extended protocol gets the same bound around the Bind of a statement prepared under the
 * grant (one write statement), which must open its group (after that statement's own Parse at
 * most: then the replies owed before sluice's are known) with nothing of earlier groups still
 * running. sluice's BEGIN / SAVEPOINT goes just before the Bind, and its COMMIT / ROLLBACK /
 * RELEASE after the group's ReadyForQuery, each as Parse, Bind, Execute and Close of a
 * statement and portal of its own (`sluice_grant`): a simple Query would drop the client's
 * unnamed statement. The group's other messages flow as usual; the client's next ones wait
 * until the guard is done. The CommandComplete goes on at once within the bound (a COMMIT
 * that fails then reports its error before ReadyForQuery, as the server would at Sync);
 * beyond it the client gets 42501 in its place and every later reply of the group is dropped
 * (the server did not see an error and runs them: they are rolled back with it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pg/msg.h"
#include "proxy/session_int.h"

#define SAVEPOINT "sluice_grant"
#define GUARD GRANT_GUARD /* the extended guard's own statement and portal */

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
    if (s->pending_sync != 1 || s->unsynced || s->sync_doubt) {
        /* Statements before it are still running: their transaction state is not known yet,
         * so the bound cannot be kept safely. */
        s->gg_pending_max = 0;
        blocked_push_group(s, s->c2s_group - 1, "42501",
                           "sluice: a write under a grant with max_rows must not be pipelined "
                           "behind other statements",
                           "send it after the previous statements' results");
        relay_audit_refuse_late(s, s->c2s_group - 1, GRANT_PIPELINED);
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

static bool ext_server(struct session *s, uint8_t type, const uint8_t *body, size_t len);

bool relay_grant_server(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                        enum hold_action *act)
{
    *act = HOLD_REPLACE; /* swallowed unless said otherwise */
    if (s->gg >= GG_EXT_STMT) return ext_server(s, type, body, len);
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

/* ---- the extended protocol */

/* Queue Close of the guard's own portal and statement. */
static void queue_ext_close(struct buf *out)
{
    for (const char *k = "PS"; *k; k++) {
        size_t m = pg_msg_begin(out, 'C');
        buf_append_u8(out, (uint8_t)*k);
        buf_append_str(out, GUARD);
        pg_msg_end(out, m);
    }
}

/* Queue Parse, Bind and Execute of sql on the guard's own statement and portal, between
 * Closes of both (those before it clear what an earlier error left prepared): seven replies
 * (3, 3, 1, 2, C, 3, 3) for the guard to swallow. */
static void queue_ext(struct session *s, const char *sql)
{
    struct buf *out = session_out_buf(&s->sv_out);
    queue_ext_close(out);
    size_t m = pg_msg_begin(out, 'P');
    buf_append_str(out, GUARD);
    buf_append_str(out, sql);
    buf_append_u16(out, 0);
    pg_msg_end(out, m);
    m = pg_msg_begin(out, 'B');
    buf_append_str(out, GUARD); /* portal */
    buf_append_str(out, GUARD); /* statement */
    buf_append_u16(out, 0);     /* parameter formats */
    buf_append_u16(out, 0);     /* parameters */
    buf_append_u16(out, 0);     /* result formats */
    pg_msg_end(out, m);
    m = pg_msg_begin(out, 'E');
    buf_append_str(out, GUARD);
    buf_append_u32(out, 0);
    pg_msg_end(out, m);
    queue_ext_close(out);
    s->gg_quiet += 7;
}

bool relay_grant_bind_ok(struct session *s, const uint8_t *body, size_t len)
{
    /* before it in its group: nothing, or one Parse (one reply owed); nothing of earlier
     * groups still running (the transaction state is known); a portal name that fits */
    uint32_t before = s->grp_msgs;
    const uint8_t *portal_end = memchr(body, 0, len);
    if (s->pending_sync == 0 && !s->sync_doubt &&
        (before == 0 || (before == 1 && s->grp_first == 'P')) && portal_end &&
        (size_t)(portal_end - body) < sizeof s->gg_portal)
        return true;
    blocked_push_group(s, s->c2s_group, "42501",
                       "sluice: a write under a grant with max_rows must not be pipelined "
                       "behind other statements",
                       "send it after the previous statements' results");
    return false;
}

/* A client message between the guarded Bind and its Sync: only Describe, Flush, Close and
 * the Execute of the guarded portal may come (relay_scan ends the session at a Query or a
 * FunctionCall); anything else is refused, so that no other statement runs inside the
 * guard's transaction. */
bool relay_grant_inside(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                        enum hold_action *act)
{
    if (type == 'C' || type == 'D' ||
        (type == 'E' && memchr(body, 0, len) && strcmp((const char *)body, s->gg_portal) == 0))
        return false;
    blocked_push_group(
        s, s->c2s_group, "42501",
        "sluice: a write under a grant with max_rows must be alone in its group "
        "of messages (only its Parse, Bind, Describe, Execute, Flush and Close before "
        "Sync)",
        "send the other statements after its Sync");
    relay_audit_refused_message(s, type, body, len, "grant_max_rows",
                                "refused: a write under a grant with max_rows must be alone in "
                                "its group of messages");
    *act = relay_placeholder_execute(s);
    return true;
}

enum hold_action relay_grant_bind(struct session *s, const uint8_t *body, size_t len,
                                  uint64_t max_rows)
{
    uint32_t before = s->grp_msgs;
    snprintf(s->gg_portal, sizeof s->gg_portal, "%s", (const char *)body);
    s->gg = GG_EXT_STMT;
    s->gg_open = true;
    s->gg_outside = s->tx == 'I';
    s->gg_owed = (uint8_t)before;
    s->gg_quiet = 0;
    s->gg_cmds = 0;
    s->gg_error = s->gg_exceeded = s->gg_noop = false;
    s->gg_max = max_rows;
    s->gg_rows = 0;
    queue_ext(s, s->gg_outside ? "BEGIN" : "SAVEPOINT " SAVEPOINT);
    buf_append(session_out_buf(&s->sv_out), body - 5, len + 5); /* then the Bind itself */
    return HOLD_REPLACE;
}

bool relay_grant_holds(const struct session *s, uint8_t type)
{
    return s->gg >= GG_EXT_STMT && type != 'N' && type != 'A';
}

/* After the group's ReadyForQuery: end what sluice began, with a Sync of its own. */
static void ext_finish(struct session *s)
{
    if (s->gg_outside) {
        queue_ext(s, s->gg_error || s->gg_exceeded ? "ROLLBACK" : "COMMIT");
    } else if (s->gg_exceeded) {
        queue_ext(s, "ROLLBACK TO SAVEPOINT " SAVEPOINT);
        queue_ext(s, "RELEASE SAVEPOINT " SAVEPOINT);
        /* a statement that fails: the client's transaction is left failed, as the
         * statement's own error would leave it (its error is swallowed) */
        struct buf *out = session_out_buf(&s->sv_out);
        size_t m = pg_msg_begin(out, 'P');
        buf_append_str(out, GUARD);
        buf_append_str(out, BLOCKED_PLACEHOLDER);
        buf_append_u16(out, 0);
        pg_msg_end(out, m);
    } else {
        queue_ext(s, "RELEASE SAVEPOINT " SAVEPOINT);
    }
    struct buf *out = session_out_buf(&s->sv_out);
    size_t m = pg_msg_begin(out, 'S');
    pg_msg_end(out, m);
    if (s->gg_exceeded)
        log_info("session %llu: a write touched %llu rows, more than its grant's max_rows %llu: "
                 "rolled back",
                 (unsigned long long)s->id, (unsigned long long)s->gg_rows,
                 (unsigned long long)s->gg_max);
}

static bool ext_stmt(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    if (s->gg_owed) { /* the reply to the client's own Parse before the Bind */
        s->gg_owed--;
        if (type == 'E') s->gg_noop = true; /* the server skips the rest, sluice's included */
        return false;
    }
    if (s->gg_quiet && !s->gg_noop) {
        if (type != 'E') { /* 3, 3, 1, 2, C (BEGIN / SAVEPOINT), 3, 3 */
            s->gg_quiet--;
            return true;
        }
        /* BEGIN / SAVEPOINT failed (a failed transaction: 25P02): the client's messages are
         * skipped too, and the client gets this error, as its statement would have */
        s->gg_quiet = 0;
        s->gg_noop = true;
        return false;
    }
    if (type == 'Z') {
        /* the transaction failed: by the statement's error or one after it (the error went
         * to the client as it came) */
        if (len >= 1 && body[0] == 'E') s->gg_error = true;
        if (s->gg_noop || (!s->gg_outside && s->gg_error && !s->gg_exceeded)) {
            s->gg = GG_NONE; /* nothing to end, or the client's transaction is failed */
            s->gg_kick = true;
            return false;
        }
        ext_finish(s);
        s->gg = GG_EXT_FINISH;
        s->gg_kick = true;
        return true;
    }
    if (s->gg_exceeded || s->gg_noop) return s->gg_exceeded; /* refused: the rest is dropped */
    char msg[256];
    switch (type) {
    case 'C':
        if (++s->gg_cmds > 1) return false; /* another statement of the group */
        s->gg_rows = pg_tag_rows(body, len);
        if (s->gg_rows <= s->gg_max) return false;
        s->gg_exceeded = true;
        snprintf(msg, sizeof msg,
                 "sluice: the statement touched %llu rows, more than the %llu its grant allows; "
                 "it was rolled back",
                 (unsigned long long)s->gg_rows, (unsigned long long)s->gg_max);
        put_refusal(s, msg);
        return true;
    case 's':
        if (s->gg_cmds) return false;
        s->gg_exceeded = true;
        put_refusal(s, "sluice: a write under a grant with max_rows must run to completion in "
                       "one Execute; it was rolled back");
        return true;
    default: /* an ErrorResponse too: the client's; the ReadyForQuery says what it failed */
        return false;
    }
}

static bool ext_finish_reply(struct session *s, uint8_t type)
{
    switch (type) {
    case 'Z':
        s->gg = GG_NONE;
        s->gg_kick = true;
        s->gg_append_z = true; /* after anything sluice queued for the client */
        return false;
    case 'E':
        if (s->gg_exceeded && !s->gg_outside) return true; /* the placeholder: refused already */
        return false; /* COMMIT or RELEASE failed (a deferred constraint, ...): its error */
    default:          /* the replies to sluice's own messages */
        return true;
    }
}

static bool ext_server(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    /* notices, notifications and ParameterStatus answer no message: always the client's
     * (masking holds them too) */
    if (type == 'N' || type == 'A' || type == 'S') return false;
    return s->gg == GG_EXT_STMT ? ext_stmt(s, type, body, len) : ext_finish_reply(s, type);
}
