/*
 * relay_mask.c: masking in the relay. Decides whether the results of a session (and of each
 * Query/Sync group, when a rule says mask or unmask) are masked, keeps the plan of the
 * current RowDescription, and rewrites the server messages that can carry values: DataRow,
 * CopyData of COPY TO STDOUT, and the fields of ErrorResponse/NoticeResponse. The detection
 * itself is src/mask/ (pure); this file only routes messages to it.
 *
 * Rows with nothing to mask are not touched (the relay forwards them in place); a result
 * whose columns cannot hold text (pgbench -S) is not even held.
 */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "admin/metrics.h"
#include "core/log.h"
#include "mask/mask.h"
#include "pg/msg.h"
#include "proxy/session_int.h"

void relay_mask_start(struct session *s)
{
    const struct cfg_masking *m = &s->rt->cfg->masking;
    s->mask_base = false;
    if (!s->rt->mask || !s->ident) return;
    for (unsigned i = 0; i < m->n_unmask; i++)
        for (unsigned g = 0; g < s->ident->n_groups; g++)
            if (strcmp(m->unmask[i], s->ident->groups[g]) == 0) return;
    for (unsigned i = 0; i < m->n_unmask_identities; i++)
        if (fnmatch(m->unmask_identities[i], s->ident->name, 0) == 0) return;
    s->mask_base = true;
}

void relay_mask_count(struct session *s)
{
    if (!s->masked || !s->rt->mask) return;
    unsigned n = mask_db_detector_count(s->rt->mask);
    for (unsigned d = 0; d < n && d < MASK_MAX_DETECTORS; d++)
        if (s->masked->n[d]) metrics_add(M_MASKED_VALUES, s->rt->det_metric[d], 0, s->masked->n[d]);
}

/* Describes sent upstream whose RowDescription or NoData has not come back, oldest first
 * (a ring of group << 1 | own), and the portal the client's last message described. */
struct mask_desc {
    uint64_t *q;
    unsigned head, n, cap;
    bool fresh; /* the client's last message was a Describe of portal `portal` */
    char *portal;
    size_t portal_cap;
};

struct copy_expect {
    struct copy_expect *next;
    uint64_t group;
    struct mask_copy_plan *plan;
};

/* The plan of a COPY of a whole table (`COPY t`, `COPY (SELECT * FROM t)`): its columns
 * named by the catalog, as a column list would name them. NULL (lines masked by value) when
 * the catalog cannot say which relation the name is, or does not answer in time, and while
 * this transaction has run DDL the side connection cannot see yet. A target whose catalog
 * did not answer a wait of this thread is not waited for again for a second (this thread's
 * other sessions wait meanwhile; a pipeline of COPYs of many names would stall them each
 * time): its names are asked in the background, and those COPYs masked by value. */
static struct mask_copy_plan *copy_plan_whole(struct session *s, const struct sql_copy_out *c,
                                              const struct mask_copy_layout *lay)
{
    if (c->whole == SQL_COPY_NAMED || !c->rel_name || s->ddl_in_tx ||
        s->rt->cfg != catalog_config()) /* reloaded: indexes may differ */
        return NULL;
    static __thread unsigned miss_target;
    static __thread uint64_t miss_until;
    bool wait = !(miss_target == s->target_idx && clock_ms() < miss_until);
    struct catalog_rel *rel = NULL;
    if (!catalog_resolve_relation(s->target_idx, c->rel_schema, c->rel_name, wait, &rel)) {
        if (wait) {
            miss_target = s->target_idx;
            miss_until = clock_ms() + 1000;
        }
        return NULL;
    }
    if (!rel) return NULL;
    const char **names = xcalloc(rel->n ? rel->n : 1, sizeof *names);
    unsigned n = 0;
    for (unsigned i = 0; i < rel->n; i++)
        if (c->whole == SQL_COPY_STAR || !rel->generated[i]) /* COPY t leaves them out */
            names[n++] = rel->columns[i];
    size_t tl = strlen(rel->schema) + strlen(rel->relname) + 2;
    char *table = xmalloc(tl);
    snprintf(table, tl, "%s.%s", rel->schema, rel->relname);
    /* (names from the catalog, but which relation the statement's name meant is sluice's
     * reading of it: they add masking as a column list's names do, never exempt) */
    struct mask_copy_plan *p = mask_copy_plan_build(s->rt->mask, table, names, names, n, lay);
    free(table);
    free(names);
    catalog_rel_free(rel);
    return p;
}

/* Are the results of a group masked, when its rules said mask (1 masked, -1 raw, 0 nothing:
 * the session's own)? */
static bool mask_group_on(const struct session *s, int mask)
{
    return s->rt->mask && (mask ? mask > 0 : s->mask_base);
}

void relay_mask_copy_expect(struct session *s, uint64_t group, const struct sql_copy_out *c,
                            int mask)
{
    /* (never masked: no plan, and no catalog round trip) */
    if (!mask_group_on(s, mask) || (!c->known && c->whole == SQL_COPY_NAMED)) return;
    struct mask_copy_layout lay = {.csv = c->format == 'c',
                                   .header = c->header,
                                   .delimiter = c->delimiter,
                                   .quote = c->quote,
                                   .escape = c->escape,
                                   .null_str = c->null_str};
    struct mask_copy_plan *p =
        c->known ? mask_copy_plan_build(s->rt->mask, c->table, (const char *const *)c->columns,
                                        (const char *const *)c->sources, c->n_columns, &lay)
                 : copy_plan_whole(s, c, &lay);
    if (!p) return;
    struct copy_expect *e = xcalloc(1, sizeof *e);
    e->group = group;
    e->plan = p;
    if (s->copy_expects_tail)
        s->copy_expects_tail->next = e;
    else
        s->copy_expects = e;
    s->copy_expects_tail = e;
}

/* Drop the expected COPY plans of groups up to `group` (answered, or skipped). */
static void copy_expects_drop(struct session *s, uint64_t group)
{
    while (s->copy_expects && s->copy_expects->group <= group) {
        struct copy_expect *e = s->copy_expects;
        s->copy_expects = e->next;
        mask_copy_plan_free(e->plan);
        free(e);
    }
    if (!s->copy_expects) s->copy_expects_tail = NULL;
}

/* A CopyOutResponse (body) in group s2c_group: the plan its Query's COPY expects, when the
 * response's column count and text format agree with it. */
static void copy_plan_take(struct session *s, const uint8_t *body, size_t len)
{
    mask_copy_plan_free(s->copy_plan);
    s->copy_plan = NULL;
    if (s->s2c_group) copy_expects_drop(s, s->s2c_group - 1);
    struct copy_expect *e = s->copy_expects;
    if (!e || e->group != s->s2c_group) return;
    s->copy_expects = e->next;
    if (!s->copy_expects) s->copy_expects_tail = NULL;
    if (len >= 3 && body[0] == 0 && pg_get_u16(body + 1) == mask_copy_plan_columns(e->plan))
        s->copy_plan = e->plan;
    else
        mask_copy_plan_free(e->plan);
    free(e);
}

void relay_mask_end(struct session *s)
{
    copy_expects_drop(s, UINT64_MAX);
    mask_copy_plan_free(s->copy_plan);
    s->copy_plan = NULL;
    mask_plan_free(s->plan);
    s->plan = NULL;
    free(s->masked);
    s->masked = NULL;
    if (s->mdesc) {
        free(s->mdesc->q);
        free(s->mdesc->portal);
        free(s->mdesc);
        s->mdesc = NULL;
    }
}

/* ---- Describes: which RowDescription describes the rows of an Execute
 *
 * Rows carry no column names: their plan comes from the RowDescription of the portal that
 * returns them, which the server sends only when asked (Describe). A client that describes
 * its portal right before executing it (libpq, pgJDBC's first fetch) gets no extra message.
 * Any other Execute whose rows may be masked is preceded upstream by sluice's own Describe
 * of the portal, whose reply makes the plan and is dropped: a portal fetched in parts across
 * groups (pgJDBC's fetchSize: Execute and Sync per fetch), or executed without a Describe,
 * would otherwise have its rows scanned by value only, and columns known by their names
 * (a password, a token, an SSN without dashes) would go out raw. */

static bool mask_may_apply(struct session *s)
{
    return s->rt->mask && (s->mask_base || s->limits || prepared_any(s));
}

static void desc_push(struct session *s, bool own)
{
    if (!s->mdesc) s->mdesc = xcalloc(1, sizeof *s->mdesc);
    struct mask_desc *d = s->mdesc;
    if (d->n == d->cap) {
        unsigned cap = d->cap ? d->cap * 2 : 8;
        uint64_t *q = xmalloc(cap * sizeof *q);
        for (unsigned i = 0; i < d->n; i++)
            q[i] = d->q[(d->head + i) % d->cap];
        free(d->q);
        d->q = q;
        d->head = 0;
        d->cap = cap;
    }
    d->q[(d->head + d->n) % d->cap] = s->c2s_group << 1 | own;
    d->n++;
}

void relay_mask_describe(struct session *s, const uint8_t *body, size_t len)
{
    if (!s->rt->mask || len < 2 || !memchr(body + 1, 0, len - 1)) return; /* refused upstream */
    desc_push(s, false);
    struct mask_desc *d = s->mdesc;
    d->fresh = body[0] == 'P';
    if (!d->fresh) return;
    size_t n = strlen((const char *)body + 1) + 1;
    if (d->portal_cap < n) {
        d->portal = xrealloc(d->portal, n);
        d->portal_cap = n;
    }
    memcpy(d->portal, body + 1, n);
}

bool relay_mask_describe_first(struct session *s, const uint8_t *body, size_t len)
{
    /* (an Execute that is not portal name and row count: the server refuses it, 08P01, and
     * a Describe in front would answer in its place) */
    if (!mask_may_apply(s) || !memchr(body, 0, len) || strlen((const char *)body) + 5 != len)
        return false;
    const struct mask_desc *d = s->mdesc;
    if (d && d->fresh && strcmp(d->portal, (const char *)body) == 0) return false;
    desc_push(s, true);
    return true;
}

void relay_mask_put_describe(struct buf *out, const char *portal)
{
    size_t m = pg_msg_begin(out, 'D');
    buf_append_u8(out, 'P');
    buf_append_str(out, portal);
    pg_msg_end(out, m);
}

void relay_mask_client_other(struct session *s)
{
    if (s->mdesc) s->mdesc->fresh = false;
}

bool relay_mask_describes_pending(const struct session *s)
{
    return s->mdesc && s->mdesc->n;
}

static void result_plan(struct session *s, const uint8_t *body, size_t len);

int relay_mask_describe_reply(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    struct mask_desc *d = s->mdesc;
    /* a simple Query's RowDescription comes in a group of its own */
    if (!d || !d->n || d->q[d->head] >> 1 != s->s2c_group) return 0;
    bool own = d->q[d->head] & 1;
    d->head = (d->head + 1) % d->cap;
    d->n--;
    if (!own) return 0;
    if (type == 'T')
        result_plan(s, body, len); /* the plan of the rows to come (the client sees none) */
    else
        relay_mask_result_end(s); /* NoData */
    return 1;
}

void relay_mask_group_end(struct session *s)
{
    copy_expects_drop(s, s->s2c_group);
    mask_copy_plan_free(s->copy_plan);
    s->copy_plan = NULL;
    struct mask_desc *d = s->mdesc;
    while (d && d->n && d->q[d->head] >> 1 <= s->s2c_group) { /* skipped after an error */
        d->head = (d->head + 1) % d->cap;
        d->n--;
    }
}

/* mask_resolve_fn over the catalog cache; a miss asks for the table in the background. */
static bool resolve_column(void *ctx, uint32_t table, int16_t attnum, struct mask_colref *out)
{
    static __thread char schema[64], rel[64], col[64];
    const struct session *s = ctx;
    if (s->rt->cfg != catalog_config()) return false; /* reloaded: indexes may differ */
    /* A table the resolver could not answer for is not waited for again for a second (a
     * RowDescription has many columns of one table). */
    static __thread uint32_t miss_table;
    static __thread unsigned miss_target;
    static __thread uint64_t miss_until;
    bool waited_recently =
        miss_table == table && miss_target == s->target_idx && clock_ms() < miss_until;
    bool ok = waited_recently ? catalog_lookup(s->target_idx, table, attnum, schema, sizeof schema,
                                               rel, sizeof rel, col, sizeof col)
                              : catalog_resolve(s->target_idx, table, attnum, schema, sizeof schema,
                                                rel, sizeof rel, col, sizeof col);
    if (!ok) {
        if (!waited_recently) {
            miss_table = table;
            miss_target = s->target_idx;
            miss_until = clock_ms() + 1000;
        }
        return false;
    }
    out->schema = schema;
    out->table = rel;
    out->column = col;
    return true;
}

/* Are the results arriving now masked? */
static bool mask_on(struct session *s)
{
    if (!s->rt->mask) return false;
    const struct limit_entry *e = s->limits ? relay_group_current(s) : NULL;
    return mask_group_on(s, e ? e->mask : 0);
}

bool relay_mask_holds(const struct session *s, uint8_t type)
{
    if (!s->rt->mask || (!s->mask_base && !s->limits)) return false;
    switch (type) {
    case 'T': /* RowDescription: the plan */
    case 'N': /* NoticeResponse */
    case 'H': /* CopyOutResponse */
    case 'c': /* CopyDone */
    case 'I': /* EmptyQueryResponse */
    case 'A': /* NotificationResponse */
    case 'V': /* FunctionCallResponse */
        return true;
    case 'D':
        return !s->plan_known || s->plan;
    case 'd':
        return s->copy_out;
    default:
        return false;
    }
}

bool relay_mask_rewrites(struct session *s, uint8_t type)
{
    return relay_mask_holds(s, type) && mask_on(s);
}

static struct mask_counts *counts(struct session *s)
{
    if (!s->masked) s->masked = xcalloc(1, sizeof *s->masked);
    return s->masked;
}

void relay_mask_result_end(struct session *s)
{
    mask_plan_free(s->plan);
    s->plan = NULL;
    s->plan_known = false;
    s->copy_out = false;
}

/* The plan of the rows a RowDescription announces (s->plan, s->plan_known). */
static void result_plan(struct session *s, const uint8_t *body, size_t len)
{
    relay_mask_result_end(s);
    if (!mask_on(s)) return;
    /* (the catalog's generation read before the lookups the plan is built from) */
    if (mask_plan_build_cached(s->rt->mask, body, len, resolve_column, s, s->target_idx,
                               catalog_generation(s->target_idx), &s->plan) < 0) {
        log_warn("session %llu: malformed RowDescription from the server; values are "
                 "scanned by value",
                 (unsigned long long)s->id);
        s->plan = NULL;
        return; /* plan_known stays false: every value is scanned */
    }
    s->plan_known = true;
}

enum hold_action relay_mask_server(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    const struct mask_db *db = s->rt->mask;
    switch (type) {
    case 'T':
        result_plan(s, body, len);
        /* a column named after a sensitive value gets its name masked */
        if (s->plan_known &&
            mask_rowdesc_rewrite(db, s->plan, body, len, session_out_buf(&s->cl_out)) == 1)
            return HOLD_REPLACE;
        return HOLD_FORWARD;
    case 'D': {
        if (!db || !mask_on(s)) return HOLD_FORWARD;
        if (s->plan_known && !s->plan) return HOLD_FORWARD; /* no column needs looking at */
        struct buf *out = session_out_buf(&s->cl_out);
        /* The messages after this one already read from the server: their rows are scanned
         * in one batch with this one (mask_row_rewrite_ahead). */
        const struct buf *in = s->sv.in;
        size_t ahead = 0;
        if (in && body >= in->data + in->off && body + len <= in->data + in->len)
            ahead = (size_t)(in->data + in->len - (body + len));
        int r = mask_row_rewrite_ahead(db, s->plan_known ? s->plan : NULL, body, len, ahead, out,
                                       counts(s));
        if (r < 0 && s->plan_known && s->plan) /* rows of another portal: scan every value */
            r = mask_row_rewrite(db, NULL, body, len, out, counts(s));
        if (r < 0) {
            /* A DataRow the codec cannot read never leaves unmasked. */
            log_warn("session %llu: malformed DataRow from the server withheld",
                     (unsigned long long)s->id);
            pg_put_notice(out, "01000", "sluice: a malformed row from the server was withheld");
            return HOLD_REPLACE;
        }
        return r == 1 ? HOLD_REPLACE : HOLD_FORWARD;
    }
    case 'H':
        /* CopyOutResponse: int8 overall format (0 text, 1 binary). Binary COPY rows are
         * tuples with binary fields: not rewritten by value (documented). */
        s->copy_out = true;
        s->copy_binary = len >= 1 && body[0] != 0;
        copy_plan_take(s, body, len);
        return HOLD_FORWARD;
    case 'c':
        s->copy_out = false;
        mask_copy_plan_free(s->copy_plan);
        s->copy_plan = NULL;
        return HOLD_FORWARD;
    case 'd': {
        if (!s->copy_out || !mask_on(s)) return HOLD_FORWARD;
        struct buf *out = session_out_buf(&s->cl_out);
        if (s->copy_binary) {
            /* Binary tuples: detected values are starred in place, lengths unchanged. */
            size_t mark = out->len - out->off;
            buf_append_u8(out, 'd');
            buf_append_u32(out, (uint32_t)(len + 4));
            buf_append(out, body, len);
            int r = mask_text_inplace(db, out->data + out->off + mark + 5, len, counts(s));
            if (r <= 0) out->len = out->off + mark; /* unchanged: forward the original */
            if (r < 0) {
                log_warn("session %llu: a COPY line could not be scanned and was withheld",
                         (unsigned long long)s->id);
                return HOLD_REPLACE;
            }
            return r > 0 ? HOLD_REPLACE : HOLD_FORWARD;
        }
        int r =
            s->copy_plan ? mask_copy_rewrite_plan(db, s->copy_plan, body, len, out, counts(s)) : -1;
        if (r < 0) r = mask_copy_rewrite(db, body, len, out, counts(s)); /* by value */
        if (r < 0) { /* the scanner failed: the line does not leave unmasked */
            log_warn("session %llu: a COPY line could not be scanned and was withheld",
                     (unsigned long long)s->id);
            return HOLD_REPLACE;
        }
        return r == 1 ? HOLD_REPLACE : HOLD_FORWARD;
    }
    case 'I':
        relay_mask_result_end(s);
        return HOLD_FORWARD;
    case 'A': { /* NotificationResponse: int32 pid, channel, payload */
        if (!db || !mask_on(s) || len < 6) return HOLD_FORWARD;
        const uint8_t *chan_end = memchr(body + 4, 0, len - 4);
        if (!chan_end) return HOLD_FORWARD;
        const uint8_t *payload = chan_end + 1;
        size_t plen = len - (size_t)(payload - body);
        if (!plen || payload[plen - 1] != 0) return HOLD_FORWARD;
        struct buf *out = session_out_buf(&s->cl_out);
        size_t m = pg_msg_begin(out, 'A');
        buf_append(out, body, (size_t)(payload - body));
        int r = mask_text(db, payload, plen - 1, out, counts(s));
        if (r <= 0) {
            out->len = out->off + m;        /* drop the half-built message */
            if (r < 0) return HOLD_REPLACE; /* unscannable: withheld */
            return HOLD_FORWARD;
        }
        buf_append_u8(out, 0);
        pg_msg_end(out, m);
        return HOLD_REPLACE;
    }
    case 'V': { /* FunctionCallResponse: int32 length (-1 = NULL), the value; scanned by value */
        if (!db || !mask_on(s)) return HOLD_FORWARD;
        if (len == 4 && pg_get_u32(body) == UINT32_MAX) return HOLD_FORWARD; /* NULL */
        struct buf *out = session_out_buf(&s->cl_out);
        if (len < 4 || pg_get_u32(body) != len - 4) {
            /* A result the codec cannot read never leaves unmasked. */
            log_warn("session %llu: malformed FunctionCallResponse from the server withheld",
                     (unsigned long long)s->id);
            pg_put_error(out, "ERROR", "XX000",
                         "sluice: a malformed function result from the server was withheld", NULL,
                         NULL);
            return HOLD_REPLACE;
        }
        if (s->fastpath_binary) { /* binary: detected values starred in place, same length */
            size_t mark = out->len - out->off;
            buf_append_u8(out, 'V');
            buf_append_u32(out, (uint32_t)(len + 4));
            buf_append(out, body, len);
            int r = mask_text_inplace(db, out->data + out->off + mark + 9, len - 4, counts(s));
            if (r <= 0) out->len = out->off + mark; /* unchanged: forward the original */
            if (r < 0) goto unscannable;
            return r > 0 ? HOLD_REPLACE : HOLD_FORWARD;
        }
        size_t m = pg_msg_begin(out, 'V');
        size_t at = out->len - out->off; /* relative: appending may compact the buffer */
        buf_append_u32(out, 0);
        int r = mask_text(db, body + 4, len - 4, out, counts(s));
        if (r <= 0) {
            out->len = out->off + m; /* drop the half-built message */
            if (r < 0) goto unscannable;
            return HOLD_FORWARD;
        }
        buf_patch_u32(out, out->off + at, (uint32_t)(out->len - out->off - at - 4));
        pg_msg_end(out, m);
        return HOLD_REPLACE;
    unscannable:
        pg_put_error(out, "ERROR", "XX000",
                     "sluice: the function result could not be masked and was withheld", NULL,
                     NULL);
        return HOLD_REPLACE;
    }
    case 'E':
    case 'N':
        if (!db || !mask_on(s)) return HOLD_FORWARD;
        int r = mask_notice_rewrite(db, type, body, len, session_out_buf(&s->cl_out), counts(s));
        if (r < 0 && type == 'E') {
            /* Unreadable or unscannable: the client still gets an error, without its text. */
            pg_put_error(s->cl_out, "ERROR", "XX000",
                         "sluice: the server's error could not be masked and was withheld", NULL,
                         NULL);
            return HOLD_REPLACE;
        }
        if (r < 0) return HOLD_REPLACE; /* a notice that cannot be masked is dropped */
        return r == 1 ? HOLD_REPLACE : HOLD_FORWARD;
    default:
        return HOLD_FORWARD;
    }
}
