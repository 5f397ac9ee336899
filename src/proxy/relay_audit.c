/*
 * relay_audit.c: what the relay tells the audit. Sessions (start, end, failed logins) and
 * statements: one record per simple Query message and per Execute (an Execute that continues
 * a suspended portal continues its record), matched in order with the server's answers
 * (DataRow, CopyData, CommandComplete, PortalSuspended, ErrorResponse, ReadyForQuery),
 * carrying rows, bytes, the digest of the rows as sent, masked counts and the SQLSTATE of a
 * failure. A prepared statement's name takes its new meaning at the server's ParseComplete.
 *
 * Durability (docs/audit.md): a statement that writes (class write, ddl, dcl, admin) or that
 * policy refuses gets its `statement` event before it goes upstream, durable (in the audit
 * journal) when audit_emit() returns, and its result follows as `statement_end`. Other
 * statements get one `statement` event, with their result, when they complete.
 *
 * Statement text is the parser's normalized form (literals replaced by $n) passed through the
 * masking function; unparseable text is masked by value. Nothing raw reaches the audit. The
 * description of a normalized text (masked text, facts, their JSON) is kept per worker thread
 * (info_new()), so a statement shape is scanned and serialized once per configuration
 * snapshot rather than once per execution; a session's own fields are serialized once too.
 */
#include <pthread.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/metrics.h"
#include "audit/audit.h"
#include "core/log.h"
#include "mask/mask.h"
#include "pg/msg.h"
#include "proxy/session_int.h"
#include "sql/sql.h"

/* What is known about a statement text (a Query, or a Parse kept for its Executes): shared,
 * through the worker's cache (info_new), by the statements of that text on this worker's
 * sessions, so never changed once made (but for json, made once). */
struct stmt_info {
    int refs;
    char fingerprint[17];
    const char *command;
    const char *cls;
    char *tables;
    bool durable;
    bool outlives_rollback; /* CHECKPOINT or LOAD among its statements: no rollback undoes it */
    bool parsed;        /* its statements are known (else a ROLLBACK of it may be a ROLLBACK TO) */
    bool mixed_tx;      /* several statements, transaction control among them (relay_audit_tx.c) */
    bool commits;       /* one of its statements is COMMIT (END) or PREPARE TRANSACTION */
    struct tx_part *tx; /* per statement, when one of them is a transaction statement */
    unsigned n_stmts;
    struct audit_json json; /* its fields' JSON (statement to tables), made at its first event */
    char text[];            /* normalized and masked */
};

/* One statement execution waiting for its result. */
struct stmt_rec {
    struct stmt_rec *next;
    struct stmt_info *info;
    uint64_t group;
    uint64_t start_us;
    uint64_t pre_seq;    /* the statement event emitted before forwarding, or 0 */
    int64_t pre_time_us; /* its time (a fold keeps it) */
    const char *decision, *rule;
    bool query;   /* a simple Query: complete at ReadyForQuery */
    bool refused; /* its event is written; the error that answers it is sluice's */
    bool late;    /* refused after it was recorded (detail says why): the error is sluice's */
    char request_id[32], grant_id[32]; /* approval request / grant it ran under */
    bool digesting;                    /* audit.row_digest: its context is made at the first row */
    const char *detail;                /* why its result is not what it seems (static) */
    char *portal;                      /* an Execute's portal (its later Executes continue it) */
    bool rebound;  /* its portal was bound again or closed after it: nothing continues it */
    bool replied;  /* its first reply came: what its portal runs is known */
    bool resumed;  /* taken back from s->suspended by an Execute not answered yet */
    uint64_t sent; /* its place among the messages sent (session.audit_sent) */
    /* sent while an earlier Execute of the same portal waited: if that one is suspended by the
     * time this one's first reply comes, this one takes over its statement (rec_merge) */
    const struct stmt_rec *cont_of;
    struct mask_counts *masked; /* values masked in its parts before it was suspended */
    uint64_t rows, tag_rows, bytes;
    unsigned tags;  /* CommandCompletes so far (a simple Query's statements end one by one) */
    bool noted;     /* its write is in the list of its block or group (note_write) */
    bool ran_other; /* journaled as a guess that was wrong (rec_head_reply) */
    char sqlstate[6];
    struct audit_digest digest;
};

/* The approval a statement's text was judged under: the request it made, the grant it runs
 * under (either may be empty). */
struct approval_ids {
    char request[32], grant[32];
};

/* Prepared statements (and portals) by name, with the decision of their Parse, and its
 * approval, which their Executes record. */
struct prep {
    struct name_node node; /* first: in its map, by name */
    struct stmt_info *info;
    const char *decision, *rule;
    struct approval_ids ids;
    char name[];
};

/* A Parse, Bind or Close the server has not answered yet, and what its name will mean once it
 * has. A Parse of a name in use fails (42P05), and any message after an error of its group is
 * skipped: either way the server keeps what the name meant. So a name changes at the
 * ParseComplete, BindComplete or CloseComplete (replies come in message order), and an op is
 * dropped, unapplied, at its group's ReadyForQuery when it got none (as src/proxy/prepared.c
 * does for limits). */
/* by their replies; a Describe's last reply is RowDescription or NoData ('n' stands for both) */
enum op_kind { OP_PARSE = '1', OP_BIND = '2', OP_CLOSE = '3', OP_DESCRIBE = 'n' };
struct audit_op {
    struct audit_op *next;
    uint64_t group;
    enum op_kind kind;
    bool portal;            /* OP_CLOSE: of a portal (else of a statement) */
    bool refused;           /* OP_PARSE, OP_BIND: of a Parse policy refused (never answered) */
    uint64_t sent;          /* its place among the messages sent (session.audit_sent) */
    char *stmt;             /* OP_BIND: the statement it binds (resolved when it is done) */
    bool guessed;           /* OP_BIND: info is that of a Parse of an earlier group, unanswered */
    struct stmt_info *info; /* OP_PARSE, OP_BIND: the statement (a reference), or NULL */
    const char *decision, *rule;
    struct approval_ids ids; /* OP_PARSE, OP_BIND */
    char name[];
};

static void rec_pop_emit(struct session *s, bool emit);
static struct stmt_rec *rec_head_reply(struct session *s, bool gone);
static void suspended_end(struct session *s, const char *portal, const char *detail);
static void portal_replaced(struct session *s, const char *portal);
#define PORTAL_CLOSED "portal closed before all its rows were fetched"
#define RAN_OTHER                                                                                  \
    "ran another statement than its event names: a Parse of its name pipelined before it "         \
    "changed what ran"

/* Monotonic microseconds: durations only (event times come from the audit itself). */
static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void info_put(struct stmt_info *i)
{
    if (i && --i->refs == 0) {
        free(i->tables);
        for (unsigned k = 0; i->tx && k < i->n_stmts; k++)
            free(i->tx[k].savepoint);
        free(i->tx);
        audit_json_free(&i->json);
        free(i);
    }
}

static void event_base(struct session *s, struct audit_event *ev, enum audit_kind kind,
                       char *groups, size_t glen)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->session_id = s->id;
    ev->identity = s->ident ? s->ident->name : s->user;
    ev->identity_kind = s->ident ? ident_kind_name(s->ident->kind) : NULL;
    if (s->ident) {
        config_groups_join(s->ident, groups, glen);
        ev->groups = groups;
    }
    ev->auth_method = !s->ident            ? NULL
                      : s->ident->is_cert  ? "cert"
                      : s->ident->is_token ? "token"
                                           : "password";
    ev->client_addr = s->addr_text;
    ev->application_name = s->app_name;
    ev->target = s->target ? s->target->name : s->dbname;
}

bool relay_audit_on(const struct session *s)
{
    return s->rt->cfg->audit.enabled;
}

void relay_audit_session(struct session *s, enum audit_kind kind, const char *detail)
{
    if (!relay_audit_on(s)) return;
    struct audit_event ev;
    char groups[512];
    event_base(s, &ev, kind, groups, sizeof groups);
    ev.detail = detail;
    if (!audit_emit(&ev)) log_warn("session %llu: audit event lost", (unsigned long long)s->id);
}

/*
 * Statement descriptions by normalized text, per worker thread: a direct-mapped table indexed
 * by fingerprint, each slot holding a reference to the stmt_info of its text. A slot
 * remembers the generation of the runtime snapshot whose masking database masked the text, so
 * it only matches sessions of that same snapshot (generations are never reused, unlike
 * addresses); its reference is dropped when the slot is reused or the thread exits (a pthread
 * key destructor). Only normalized texts are kept: they hold no literal, and the set of
 * statement shapes is small. So a statement shape is masked, described and serialized once
 * per worker and snapshot, not per execution. Sessions never move between workers, so the
 * references need no atomics.
 */
#define INFO_SLOTS 256
#define INFO_MAX_TEXT 8192

struct info_slot {
    uint64_t generation; /* of the runtime snapshot; 0: empty */
    uint64_t fingerprint;
    char *text;             /* the normalized text */
    struct stmt_info *info; /* a reference */
};

static pthread_key_t info_key;
static pthread_once_t info_once = PTHREAD_ONCE_INIT;
static _Thread_local struct info_slot *info_slots;

static void info_slot_clear(struct info_slot *sl)
{
    free(sl->text);
    info_put(sl->info);
    memset(sl, 0, sizeof *sl);
}

static void info_slots_free(void *p)
{
    struct info_slot *slots = p;
    for (unsigned k = 0; k < INFO_SLOTS; k++)
        info_slot_clear(&slots[k]);
    free(slots);
}

static void info_key_create(void)
{
    if (pthread_key_create(&info_key, info_slots_free) != 0) {
        fprintf(stderr, "sluice: pthread_key_create failed\n");
        abort();
    }
}

/* The slot for fingerprint fp on this thread. */
static struct info_slot *info_slot_of(uint64_t fp)
{
    if (!info_slots) {
        pthread_once(&info_once, info_key_create);
        info_slots = xcalloc(INFO_SLOTS, sizeof *info_slots);
        pthread_setspecific(info_key, info_slots);
    }
    return &info_slots[fp % INFO_SLOTS];
}

/* The strictest class of f's statements names the string (f->n_stmts > 0). */
static enum sql_class facts_class(const struct sql_facts *f)
{
    static const int rank[SQL_CLASS_COUNT] = {
        [SQL_READ] = 1,  [SQL_WRITE] = 4,       [SQL_DDL] = 5,    [SQL_DCL] = 6,
        [SQL_ADMIN] = 3, [SQL_TRANSACTION] = 0, [SQL_UTILITY] = 2};
    enum sql_class best = f->stmts[0].cls;
    for (unsigned k = 0; k < f->n_stmts; k++)
        if (rank[f->stmts[k].cls] > rank[best]) best = f->stmts[k].cls;
    return best;
}

/* Does the cached i describe f? The same normalized text and fingerprint should mean the
 * same facts; checked anyway (command and class), since a literal normalization replaced
 * could in principle decide them. */
static bool info_matches(const struct stmt_info *i, const struct sql_facts *f)
{
    if (!f->n_stmts) return strcmp(i->command, "UNKNOWN") == 0;
    const char *cmd = f->stmts[0].command;
    return (i->command == cmd || (i->command && cmd && strcmp(i->command, cmd) == 0)) &&
           strcmp(i->cls, sql_class_name(facts_class(f))) == 0;
}

/* Describe sql (with its facts, possibly NULL) for the audit: a reference the caller drops
 * with info_put(). A normalized text's comes from (or goes into) this worker's cache; any
 * other is new and the caller's alone (it may still set it up). */
static struct stmt_info *info_make(struct session *s, const char *sql, const struct sql_facts *f,
                                   bool client)
{
    static const char hex[] = "0123456789abcdef";
    const char *text = f && f->normalized ? f->normalized : sql;
    size_t tl = strlen(text) + 1;
    struct info_slot *sl = NULL;
    if (f && f->normalized && f->fingerprint && tl <= INFO_MAX_TEXT) {
        sl = info_slot_of(f->fingerprint);
        if (sl->generation == s->rt->generation && sl->fingerprint == f->fingerprint &&
            strcmp(sl->text, text) == 0 && info_matches(sl->info, f)) {
            sl->info->refs++;
            return sl->info;
        }
    }
    /* pg_query_normalize leaves the literals of utility statements (a PREPARE's body, a
     * password in ALTER ROLE) and of text that does not parse: none may reach the audit */
    char *blank = client ? sql_blank_literals(text) : xstrdup(text), *owned = NULL;
    if (s->rt->mask) {
        /* unparsed (raw) text is masked every time and never kept; nor is a failed scan */
        if (sl) owned = mask_string_try(s->rt->mask, blank);
        if (!owned) {
            owned = mask_string(s->rt->mask, blank);
            sl = NULL;
        }
    }
    const char *masked = owned ? owned : blank;
    size_t ml = strlen(masked) + 1;
    struct stmt_info *i = xcalloc(1, sizeof *i + ml);
    memcpy(i->text, masked, ml);
    free(owned);
    free(blank);
    i->refs = 1;
    if (f && f->fingerprint) {
        uint64_t fp = f->fingerprint;
        for (int k = 15; k >= 0; k--, fp >>= 4)
            i->fingerprint[k] = hex[fp & 15];
    }
    i->command = "UNKNOWN";
    i->cls = "utility";
    if (f && f->n_stmts) {
        /* The strictest class of the string names it; the first statement its command. */
        enum sql_class best = facts_class(f);
        i->command = f->stmts[0].command;
        i->tables = sql_facts_tables(f);
        i->cls = sql_class_name(best);
        i->durable = best == SQL_WRITE || best == SQL_DDL || best == SQL_DCL || best == SQL_ADMIN;
        /* DO, CALL and SQL EXECUTE run code sluice does not see, which may write: journaled
         * first too, as a fast-path call is */
        for (unsigned k = 0; k < f->n_stmts && !i->durable; k++)
            i->durable = !strcmp(f->stmts[k].command, "DO") ||
                         !strcmp(f->stmts[k].command, "CALL") ||
                         !strcmp(f->stmts[k].command, "EXECUTE");
        i->parsed = !(f->stmts[0].flags & SQL_F_PARSE_ERROR);
        bool any_tx = false;
        for (unsigned k = 0; k < f->n_stmts; k++) {
            const struct sql_stmt *st = &f->stmts[k];
            any_tx |= st->cls == SQL_TRANSACTION;
            i->commits |=
                !strcmp(st->command, "COMMIT") || !strcmp(st->command, "PREPARE TRANSACTION");
            i->outlives_rollback |=
                !strcmp(st->command, "CHECKPOINT") || !strcmp(st->command, "LOAD");
        }
        i->mixed_tx = any_tx && f->n_stmts > 1;
        if (any_tx) {
            i->tx = xcalloc(f->n_stmts, sizeof *i->tx);
            i->n_stmts = f->n_stmts;
            for (unsigned k = 0; k < f->n_stmts; k++) {
                const struct sql_stmt *st = &f->stmts[k];
                i->tx[k].savepoint = st->savepoint ? xstrdup(st->savepoint) : NULL;
                i->tx[k].chain = st->chain;
            }
        }
    }
    if (sl) {
        info_slot_clear(sl);
        sl->text = xmalloc(tl);
        memcpy(sl->text, text, tl);
        sl->info = i;
        i->refs++;
        sl->generation = s->rt->generation;
        sl->fingerprint = f->fingerprint;
    }
    return i;
}

/* A client's statement text (sql), literals blanked. */
static struct stmt_info *info_new(struct session *s, const char *sql, const struct sql_facts *f)
{
    return info_make(s, sql, f, true);
}

/* sluice's own description of what ran ("(prepared statement)"), kept as written. */
static struct stmt_info *info_note(struct session *s, const char *text)
{
    return info_make(s, text, NULL, false);
}

static void masked_json(const struct session *s, char *out, size_t len)
{
    out[0] = '\0';
    if (!s->masked || !s->rt->mask) return;
    size_t n = 0;
    unsigned nd = mask_db_detector_count(s->rt->mask);
    for (unsigned d = 0; d < nd && d < MASK_MAX_DETECTORS && n + 64 < len; d++)
        if (s->masked->n[d])
            n += (size_t)snprintf(out + n, len - n, "%s\"%s\":%u", n ? "," : "{",
                                  mask_db_detector_name(s->rt->mask, d), s->masked->n[d]);
    if (n) snprintf(out + n, len - n, "}");
}

/* The digest of zero rows: SHA-256 of nothing (audit.h). Most statements that write return no
 * rows, so a digest context is only made when a first row arrives. */
static const char digest_no_rows[65] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* Emit the statement event of r: before forwarding (pre) or with its result. The result of
 * a statement whose event went out before it (pre_seq) is folded into that event while the
 * event still waits in the queue; else it follows as a statement_end. */
static uint64_t emit_statement(struct session *s, struct stmt_rec *r, bool pre)
{
    struct audit_event ev;
    char groups[512], masked[512], digest[65];
    event_base(s, &ev, AUDIT_STATEMENT, groups, sizeof groups);
    ev.statement = r->info->text;
    ev.fingerprint = r->info->fingerprint[0] ? r->info->fingerprint : NULL;
    ev.command = r->info->command;
    ev.class_ = r->info->cls;
    ev.tables = r->info->tables;
    ev.decision = r->decision;
    ev.rule = r->rule;
    ev.request_id = r->request_id[0] ? r->request_id : NULL;
    /* a grant given while the statement waited is known only at its end */
    ev.grant_id = r->grant_id[0] ? r->grant_id : NULL;
    ev.durable = pre; /* journaled before the statement goes upstream */
    /* the parts every event of this session, or of this statement text, repeats */
    if (!s->audit_json.p) audit_json_session(&ev, &s->audit_json);
    if (!r->info->json.p) audit_json_statement(&ev, &r->info->json);
    ev.session_json = s->audit_json;
    ev.statement_json = r->info->json;
    if (pre) {
        ev.time_us = r->pre_time_us = audit_now_us();
        ev.detail = r->detail; /* a refusal's reason, if it has one */
        return audit_emit(&ev);
    }
    ev.duration_us = now_us() - r->start_us;
    ev.rows = r->rows ? r->rows : r->tag_rows;
    ev.bytes = r->bytes;
    masked_json(s, masked, sizeof masked);
    ev.masked = masked[0] ? masked : NULL;
    if (r->digesting) {
        if (r->digest.active)
            audit_digest_final(&r->digest, digest);
        else
            memcpy(digest, digest_no_rows, sizeof digest);
        ev.digest = digest;
    }
    ev.sqlstate = r->sqlstate[0] ? r->sqlstate : NULL;
    ev.detail = r->detail;
    if (!r->pre_seq) return audit_emit(&ev);
    ev.time_us = r->pre_time_us;
    if (audit_fold(r->pre_seq, &ev)) return r->pre_seq;
    char details[512];
    if (r->ran_other && ev.detail) { /* both notes: what happened to it, and what ran */
        snprintf(details, sizeof details, "%s; %s", ev.detail, RAN_OTHER);
        ev.detail = details;
    } else if (r->ran_other) {
        ev.detail = RAN_OTHER;
    }
    /* statement_end: the result only; who, what and the decision are on the statement event
     * it completes (ref) */
    struct audit_event end = {
        .kind = AUDIT_STATEMENT_END,
        .session_id = ev.session_id,
        .identity = ev.identity,
        .grant_id = ev.grant_id,
        .ref = r->pre_seq,
        .duration_us = ev.duration_us,
        .rows = ev.rows,
        .bytes = ev.bytes,
        .masked = ev.masked,
        .digest = ev.digest,
        .sqlstate = ev.sqlstate,
        .detail = ev.detail,
    };
    return audit_emit(&end);
}

static void rec_free(struct stmt_rec *r)
{
    free(r->portal);
    free(r->masked);
    if (r->digest.active) audit_digest_free(&r->digest);
    info_put(r->info);
    free(r);
}

/* A record for a statement (Query text, or the statement an Execute runs) just judged, at the
 * end of the FIFO; rec_start() then makes its event durable when it must be. */
static struct stmt_rec *rec_new(struct session *s, struct stmt_info *info, bool query, bool refused,
                                const char *decision, const char *rule,
                                const struct stmt_rec *cont_of)
{
    struct stmt_rec *r = xcalloc(1, sizeof *r);
    r->info = info;
    info->refs++;
    r->group = s->c2s_group;
    r->start_us = now_us();
    r->query = query;
    r->refused = refused;
    r->decision = decision;
    r->rule = rule;
    memcpy(r->request_id, s->audit_request, sizeof r->request_id);
    memcpy(r->grant_id, s->audit_grant, sizeof r->grant_id);
    r->digesting = s->rt->cfg->audit.row_digest && !refused;
    if (s->recs_tail)
        s->recs_tail->next = r;
    else
        s->recs = r;
    s->recs_tail = r;
    r->cont_of = cont_of;
    r->sent = ++s->audit_sent;
    return r;
}

/* Emit r's event now when it must be durable before it goes upstream, or is refused.
 * Returns 0, or -1 when the audit cannot take the event while audit.fail is closed (the
 * caller refuses the statement). */
static int rec_start(struct session *s, struct stmt_rec *r)
{
    /* (a continuation's event came with the statement it continues) */
    if (r->cont_of || (!r->refused && !r->info->durable)) return 0;
    uint64_t seq = emit_statement(s, r, true);
    if (!seq && !s->rt->cfg->audit.fail_open) {
        r->refused = true; /* the caller refuses it: no event can say so, the loss is counted */
        return -1;
    }
    r->pre_seq = seq;
    return 0;
}

/* r runs a statement judged under ids (NULL: none). */
/* (a copy of both arrays, not snprintf: this runs for every Execute) */
static void rec_ids_set(struct stmt_rec *r, const struct approval_ids *ids)
{
    static_assert(sizeof r->request_id == sizeof ids->request &&
                      sizeof r->grant_id == sizeof ids->grant,
                  "approval ids differ in size");
    if (!ids) {
        r->request_id[0] = r->grant_id[0] = '\0';
        return;
    }
    memcpy(r->request_id, ids->request, sizeof r->request_id);
    memcpy(r->grant_id, ids->grant, sizeof r->grant_id);
}

static int rec_push(struct session *s, struct stmt_info *info, bool query, bool refused,
                    const char *decision, const char *rule, const struct stmt_rec *cont_of)
{
    return rec_start(s, rec_new(s, info, query, refused, decision, rule, cont_of));
}

int relay_audit_query(struct session *s, const char *sql, const struct sql_facts *f,
                      const char *decision, const char *rule, bool refused)
{
    if (!relay_audit_on(s)) return 0;
    /* each statement of a Query runs in the unnamed portal, dropping the one there (a text
     * the server cannot parse runs nothing; nor does a refused one's stand-in) */
    if (!refused && f && f->n_stmts && !(f->stmts[0].flags & SQL_F_PARSE_ERROR)) {
        portal_replaced(s, "");
        suspended_end(s, "", PORTAL_CLOSED);
    }
    struct stmt_info *i = info_new(s, sql, f);
    int r = rec_push(s, i, true, refused, decision, rule, NULL);
    info_put(i);
    return r;
}

int relay_audit_query_refused(struct session *s, const char *sql, const struct sql_facts *f,
                              const char *decision, const char *rule, const char *detail)
{
    if (!relay_audit_on(s)) return 0;
    struct stmt_info *i = info_new(s, sql, f);
    struct stmt_rec *r = rec_new(s, i, true, true, decision, rule, NULL);
    r->detail = detail;
    int rc = rec_start(s, r);
    info_put(i);
    return rc;
}

/* name -> info (a reference it takes over), decision and approval (ids: NULL for none) in a
 * map of struct prep (prepared statements, portals); info NULL: the name is forgotten. */
static void prep_set(struct name_map *map, const char *name, struct stmt_info *info,
                     const char *decision, const char *rule, const struct approval_ids *ids)
{
    struct prep *p = (struct prep *)name_map_get(map, name);
    if (p) {
        info_put(p->info);
        if (!info) {
            name_map_take(map, name);
            free(p);
            return;
        }
    }
    if (!info) return;
    if (!p) {
        size_t n = strlen(name) + 1;
        p = xmalloc(sizeof *p + n);
        memcpy(p->name, name, n);
        name_map_put(map, &p->node, p->name);
    }
    p->info = info;
    p->decision = decision;
    p->rule = rule;
    if (ids)
        p->ids = *ids;
    else
        memset(&p->ids, 0, sizeof p->ids);
}

static struct prep *prep_get(const struct name_map *map, const char *name)
{
    return (struct prep *)name_map_get(map, name);
}

/* name_map_sweep: every entry but the one named ctx (NULL: every one) goes */
static bool prep_drop(struct name_node *node, void *ctx)
{
    struct prep *p = (struct prep *)node;
    if (ctx && strcmp(p->name, ctx) == 0) return false;
    info_put(p->info);
    free(p);
    return true;
}

static void prep_free_all(struct name_map *map)
{
    name_map_sweep(map, prep_drop, NULL);
}

static void op_push(struct session *s, enum op_kind kind, const char *name, struct stmt_info *info,
                    const char *decision, const char *rule, bool refused)
{
    size_t n = strlen(name) + 1;
    struct audit_op *op = xcalloc(1, sizeof *op + n);
    op->group = s->c2s_group;
    op->kind = kind;
    op->info = info;
    op->decision = decision;
    op->rule = rule;
    op->refused = refused;
    op->sent = ++s->audit_sent;
    memcpy(op->name, name, n);
    if (s->audit_ops_tail)
        s->audit_ops_tail->next = op;
    else
        s->audit_ops = op;
    s->audit_ops_tail = op;
}

/* Drop the oldest op; apply it first when asked: its name now means what it says. */
static void op_pop(struct session *s, bool apply)
{
    struct audit_op *op = s->audit_ops;
    s->audit_ops = op->next;
    if (!s->audit_ops) s->audit_ops_tail = NULL;
    apply = apply && !op->refused; /* (a refused message never reaches the server) */
    if (apply && op->kind == OP_PARSE) {
        prep_set(&s->preps, op->name, op->info, op->decision, op->rule, &op->ids);
        op->info = NULL; /* taken over */
    } else if (apply && op->kind == OP_BIND) {
        suspended_end(s, op->name, PORTAL_CLOSED); /* the portal it replaces */
        /* the statement the server bound: the name's meaning now (a Parse of it sent before
         * was answered by now, or failed), not the guess made when the Bind was sent */
        const struct prep *st = prep_get(&s->preps, op->stmt);
        if (st) st->info->refs++;
        prep_set(&s->portals, op->name, st ? st->info : NULL, st ? st->decision : NULL,
                 st ? st->rule : NULL, st ? &st->ids : NULL);
    } else if (apply && op->kind == OP_CLOSE) {
        if (op->portal) suspended_end(s, op->name, PORTAL_CLOSED);
        prep_set(op->portal ? &s->portals : &s->preps, op->name, NULL, NULL, NULL, NULL);
    }
    if (op->info) info_put(op->info);
    free(op->stmt);
    free(op);
}

void relay_audit_parse(struct session *s, const char *name, const char *sql,
                       const struct sql_facts *f, const char *decision, const char *rule)
{
    if (!relay_audit_on(s)) return;
    op_push(s, OP_PARSE, name, info_new(s, sql, f), decision, rule, false);
    struct approval_ids *ids = &s->audit_ops_tail->ids;
    memcpy(ids->request, s->audit_request, sizeof ids->request);
    memcpy(ids->grant, s->audit_grant, sizeof ids->grant);
}

void relay_audit_parse_refused(struct session *s, const char *name)
{
    if (relay_audit_on(s)) op_push(s, OP_PARSE, name, NULL, NULL, NULL, true);
}

void relay_audit_parse_done(struct session *s, uint8_t type)
{
    /* ops of groups already answered are stale (they got no reply): drop them first */
    while (s->audit_ops && s->audit_ops->group < s->s2c_group)
        op_pop(s, false);
    /* earlier ones of this group were answered: this reply is the head's (a RowDescription of
     * a simple Query has no op: no group of ops is being answered then) */
    if (type == 'T') type = 'n';
    if (s->audit_ops && s->audit_ops->group == s->s2c_group &&
        s->audit_ops->kind == (enum op_kind)type)
        op_pop(s, true);
}

void relay_audit_ready(struct session *s)
{
    while (s->audit_ops && s->audit_ops->group <= s->s2c_group)
        op_pop(s, false);
}

/* The pending op of `kind` on name that a message sent now depends on: one of this group, if
 * any (if it fails, the server skips this message too); else the latest of earlier groups'
 * that is not refused (a pipeline: most likely it succeeds); else NULL (what the server has). */
static const struct audit_op *op_pending(const struct session *s, enum op_kind kind,
                                         const char *name)
{
    const struct audit_op *same = NULL, *earlier = NULL;
    for (const struct audit_op *op = s->audit_ops; op; op = op->next) {
        /* what a portal means: its latest Bind, or a Close (then it means nothing) */
        bool match = op->kind == kind || (kind == OP_BIND && op->kind == OP_CLOSE && op->portal);
        if (!match || strcmp(op->name, name) != 0) continue;
        if (op->group == s->c2s_group)
            same = op;
        else if (!op->refused)
            earlier = op;
    }
    return same ? same : earlier;
}

/* A Bind or Close of portal was sent: no later Execute continues an earlier one's rows. */
static void portal_replaced(struct session *s, const char *portal)
{
    for (struct stmt_rec *r = s->recs; r; r = r->next)
        if (r->portal && strcmp(r->portal, portal) == 0) r->rebound = true;
}

void relay_audit_bind(struct session *s, const char *portal, const char *stmt_name)
{
    if (!relay_audit_on(s)) return;
    portal_replaced(s, portal);
    const struct audit_op *op = op_pending(s, OP_PARSE, stmt_name);
    /* (in a trimmed group a Parse of the name may have been dropped: the server's statement
     * is not the one named) */
    const struct prep *st = op || relay_group_trimmed(s) ? NULL : prep_get(&s->preps, stmt_name);
    if (!prepared_name_known(s, stmt_name)) op = NULL, st = NULL; /* SQL PREPARE may own it */
    struct stmt_info *info = op ? op->info : st ? st->info : NULL;
    if (info) info->refs++;
    op_push(s, OP_BIND, portal, info,
            op   ? op->decision
            : st ? st->decision
                 : NULL,
            op   ? op->rule
            : st ? st->rule
                 : NULL,
            op && op->refused);
    s->audit_ops_tail->stmt = xstrdup(stmt_name);
    if (op || st) s->audit_ops_tail->ids = op ? op->ids : st->ids;
    /* a Parse of this group that fails takes this Bind with it; one of an earlier group may
     * fail alone */
    s->audit_ops_tail->guessed = op && op->group != s->c2s_group;
}

void relay_audit_forget_others(struct session *s, const char *keep)
{
    name_map_sweep(&s->preps, prep_drop, (void *)keep);
}

void relay_audit_forget_statement(struct session *s, const char *name)
{
    if (!name)
        prep_free_all(&s->preps);
    else
        prep_set(&s->preps, name, NULL, NULL, NULL, NULL);
}

void relay_audit_describe(struct session *s, const uint8_t *body, size_t len)
{
    /* an op only so that its error is not taken for an Execute's (error_of_op) */
    if (relay_audit_on(s) && len >= 2 && memchr(body + 1, 0, len - 1))
        op_push(s, OP_DESCRIBE, (const char *)body + 1, NULL, NULL, NULL, false);
}

void relay_audit_close(struct session *s, const uint8_t *body, size_t len)
{
    if (!relay_audit_on(s) || len < 2 || !memchr(body + 1, 0, len - 1)) return;
    if (body[0] == 'P') portal_replaced(s, (const char *)body + 1);
    op_push(s, OP_CLOSE, (const char *)body + 1, NULL, NULL, NULL, false);
    s->audit_ops_tail->portal = body[0] == 'P';
}

/* The FIFO's newest record (rec_push made it). */
static void rec_append(struct session *s, struct stmt_rec *r)
{
    r->next = NULL;
    if (s->recs_tail)
        s->recs_tail->next = r;
    else
        s->recs = r;
    s->recs_tail = r;
}

/* Emit (and free) r, a record out of the FIFO (suspended): rec_pop_emit works on the FIFO's
 * head, so it goes there for the moment. */
static void rec_emit_now(struct session *s, struct stmt_rec *r)
{
    r->next = s->recs;
    s->recs = r;
    if (!s->recs_tail) s->recs_tail = r;
    rec_pop_emit(s, true);
}

/* Unlink the suspended statement of portal (NULL: the first one); NULL when none. */
static struct stmt_rec *suspended_take(struct session *s, const char *portal)
{
    for (struct stmt_rec **pp = &s->suspended; *pp; pp = &(*pp)->next)
        if (!portal || strcmp((*pp)->portal, portal) == 0) {
            struct stmt_rec *r = *pp;
            *pp = r->next;
            r->next = NULL;
            return r;
        }
    return NULL;
}

/* A suspended portal's statement is over without running to its end (the portal was closed,
 * bound again, or its transaction or session ended): its event, with what was fetched. */
static void suspended_end(struct session *s, const char *portal, const char *detail)
{
    struct stmt_rec *r;
    while ((r = suspended_take(s, portal))) {
        r->detail = detail;
        rec_emit_now(s, r);
    }
}

int relay_audit_execute(struct session *s, const char *portal)
{
    if (!relay_audit_on(s)) return 0;
    const struct audit_op *op = op_pending(s, OP_BIND, portal);
    if (op && op->kind == OP_BIND && op->refused) return 0; /* refused Parse: skipped */
    /* an Execute of the same portal still waiting for its rows: this one may continue it */
    const struct stmt_rec *cont = NULL;
    for (const struct stmt_rec *r = s->recs; r; r = r->next)
        if (!r->query && r->portal && !r->rebound && !strcmp(r->portal, portal)) cont = r;
    if (!op && !cont) {
        struct stmt_rec *more = suspended_take(s, portal);
        if (more) { /* the next rows of a suspended portal: the same statement */
            more->group = s->c2s_group;
            more->sent = ++s->audit_sent; /* this Execute's place among the messages */
            more->rebound = false;        /* no Bind or Close of its portal is pending */
            more->resumed = true;
            rec_append(s, more);
            return 0;
        }
    }
    /* what the portal runs: its pending Bind's statement, else the server's portal (after a
     * pending Close too: the Execute then fails, 34000, on its own) */
    const struct prep *p = (op && op->kind == OP_BIND) || (!op && relay_group_trimmed(s))
                               ? NULL
                               : prep_get(&s->portals, portal);
    const struct audit_op *bind = op && op->kind == OP_BIND ? op : NULL;
    struct stmt_info *info = p ? p->info : bind ? bind->info : NULL;
    const char *decision = p ? p->decision : bind ? bind->decision : NULL;
    const char *rule = p ? p->rule : bind ? bind->rule : NULL;
    const struct approval_ids *ids = p ? &p->ids : bind ? &bind->ids : NULL;
    /* a guess from a Parse still unanswered: if the statement the name means now writes,
     * that is the one journaled first (the Parse may fail: durability comes first) */
    if (info && !info->durable && op && op->kind == OP_BIND && op->guessed) {
        const struct prep *now = prep_get(&s->preps, op->stmt);
        if (now && now->info->durable) {
            info = now->info;
            decision = now->decision;
            rule = now->rule;
            ids = &now->ids;
        }
        for (const struct audit_op *o = s->audit_ops; o; o = o->next)
            if (o->kind == OP_PARSE && o->info && o->info->durable && !strcmp(o->name, op->stmt)) {
                info = o->info;
                decision = o->decision;
                rule = o->rule;
                ids = &o->ids;
            }
    }
    struct stmt_info *unknown = NULL;
    if (!info) {
        /* a statement sluice never saw (prepared on a reused upstream before this session):
         * its use is recorded, durably, since sluice cannot tell what it does */
        info = unknown = info_note(s, "(prepared statement)");
        unknown->durable = true;
    }
    struct stmt_rec *r = rec_new(s, info, false, false, decision ? decision : "allow", rule, cont);
    if (unknown) info_put(unknown);
    rec_ids_set(r, ids); /* its statement's approval, not that of the text judged last */
    r->portal = xstrdup(portal);
    return rec_start(s, r);
}

/* A statement refused as it was sent (its stand-in's error answers it; the server skips the
 * rest of its group): its event, now, with why (detail, static) and the approval it was
 * judged under (ids, NULL: none). info NULL: a statement sluice never saw prepared. */
static void refused_push(struct session *s, struct stmt_info *info, const char *decision,
                         const char *rule, const struct approval_ids *ids, const char *detail)
{
    struct stmt_info *unknown = NULL;
    if (!info) info = unknown = info_note(s, "(prepared statement)");
    struct stmt_rec *r = rec_new(s, info, true, true, decision, rule, NULL);
    r->detail = detail;
    rec_ids_set(r, ids);
    (void)rec_start(s, r); /* (refused either way; a lost event is counted) */
    if (unknown) info_put(unknown);
}

void relay_audit_refuse_late(struct session *s, uint64_t group, const char *detail)
{
    if (!relay_audit_on(s)) return;
    struct stmt_rec *r = s->recs_tail;
    if (r && r->group == group && r->query && !r->refused) { /* a Query: its event says so */
        r->late = true;
        r->detail = detail;
        r->digesting = false;
        return;
    }
    /* a Parse: recorded by name only so far; its Binds and Executes are skipped */
    struct audit_op *op = s->audit_ops_tail;
    if (op && op->group == group && op->kind == OP_PARSE && !op->refused && op->info) {
        op->refused = true;
        refused_push(s, op->info, op->decision, op->rule, &op->ids, detail);
        info_put(op->info);
        op->info = NULL;
    }
}

void relay_audit_bind_refused(struct session *s, const char *portal, const char *stmt_name,
                              const char *decision, const char *rule, const char *grant,
                              const char *detail)
{
    if (!relay_audit_on(s)) return;
    const struct audit_op *op = op_pending(s, OP_PARSE, stmt_name);
    const struct prep *st = op ? NULL : prep_get(&s->preps, stmt_name);
    struct approval_ids ids;
    memset(&ids, 0, sizeof ids);
    if (op || st) ids = op ? op->ids : st->ids;
    if (grant) snprintf(ids.grant, sizeof ids.grant, "%s", grant);
    if (!op || !op->refused) /* (a refused Parse has its event: that statement never ran) */
        refused_push(s,
                     op   ? op->info
                     : st ? st->info
                          : NULL,
                     decision ? decision
                     : op     ? op->decision
                     : st     ? st->decision
                              : "allow",
                     rule ? rule
                     : op ? op->rule
                     : st ? st->rule
                          : NULL,
                     &ids, detail);
    /* the server's portal stays as it was; an Execute of this one is skipped, and records
     * nothing more */
    op_push(s, OP_BIND, portal, NULL, NULL, NULL, true);
}

void relay_audit_refused_message(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                                 const char *rule, const char *detail)
{
    const uint8_t *end = memchr(body, 0, len);
    if (!relay_audit_on(s) || !end) return;
    const char *name = (const char *)body, *rest = (const char *)end + 1;
    size_t left = len - (size_t)(end + 1 - body);
    if ((type == 'P' || type == 'B') && !memchr(rest, 0, left)) return;
    if (type == 'P') { /* its text; its Bind and Execute record nothing more */
        struct stmt_info *i = info_new(s, rest, sql_facts_cached(rest));
        refused_push(s, i, "deny", rule, NULL, detail);
        info_put(i);
        op_push(s, OP_PARSE, name, NULL, NULL, NULL, true);
    } else if (type == 'B') {
        relay_audit_bind_refused(s, name, rest, "deny", rule, NULL, detail);
    } else if (type == 'E') { /* what the portal runs */
        const struct audit_op *op = op_pending(s, OP_BIND, name);
        if (op && op->refused) return; /* its Bind's refusal has the event */
        const struct prep *p = op ? NULL : prep_get(&s->portals, name);
        refused_push(s, op ? op->info : p ? p->info : NULL, "deny", rule, NULL, detail);
    }
}

void relay_audit_malformed(struct session *s, const char *what)
{
    if (!relay_audit_on(s)) return;
    struct stmt_info *i = info_note(s, what);
    refused_push(s, i, "deny", "protocol", NULL, NULL);
    info_put(i);
}

void relay_audit_note_grant(struct session *s, const char *grant_id)
{
    struct audit_op *op = s->audit_ops_tail;
    if (s->park_parse) { /* its Executes run under it */
        if (op && op->kind == OP_PARSE && op->group == s->park_group)
            snprintf(op->ids.grant, sizeof op->ids.grant, "%s", grant_id);
        return;
    }
    if (s->recs_tail)
        snprintf(s->recs_tail->grant_id, sizeof s->recs_tail->grant_id, "%s", grant_id);
}

/* The session's masked counts (of the result being relayed) go with r, suspended. */
static void counts_take(struct session *s, struct stmt_rec *r)
{
    if (!s->masked) return;
    if (!r->masked) r->masked = xcalloc(1, sizeof *r->masked);
    for (unsigned d = 0; d < MASK_MAX_DETECTORS; d++)
        r->masked->n[d] += s->masked->n[d];
    memset(s->masked, 0, sizeof *s->masked);
}

/* r's write completed (a portal fetched in parts: at its first Execute, where it ran whole):
 * it can still be undone, with its transaction block (relay_audit_tx.c), or outside one with
 * its extended-protocol group (error_after_done). A simple Query outside a block is a group of
 * its own; one that mixes writes with transaction control is not followed. */
static void note_write(struct session *s, struct stmt_rec *r)
{
    if (r->noted || !r->pre_seq || r->info->outlives_rollback || r->info->mixed_tx) return;
    r->noted = true;
    relay_audit_tx_note(s, r->pre_seq, r->group, r->query);
}

static void rec_pop_emit(struct session *s, bool emit)
{
    struct stmt_rec *r = s->recs;
    s->recs = r->next;
    if (!s->recs) s->recs_tail = NULL;
    if (r->masked) { /* counted before it was suspended: its own again */
        if (!s->masked) s->masked = xcalloc(1, sizeof *s->masked);
        for (unsigned d = 0; d < MASK_MAX_DETECTORS; d++)
            s->masked->n[d] += r->masked->n[d];
    }
    if (emit && !r->refused) {
        metrics_add(M_ROWS, METRICS_TO_CLIENT, 0, r->rows);
        metrics_add(M_BYTES, METRICS_TO_CLIENT, 0, r->bytes);
        metrics_observe_latency(H_UPSTREAM_LATENCY, (now_us() - r->start_us) * 1000);
        if (s->reg) {
            atomic_fetch_add_explicit(&s->reg->statements, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->reg->rows, r->rows ? r->rows : r->tag_rows,
                                      memory_order_relaxed);
        }
        relay_mask_count(s);
        uint64_t seq = emit_statement(s, r, false);
        if (!seq) log_warn("session %llu: audit event lost", (unsigned long long)s->id);
        /* (one fetched in parts was noted at its first Execute) */
        if (!r->sqlstate[0] && !r->detail) note_write(s, r);
    }
    if (s->masked) memset(s->masked, 0, sizeof *s->masked);
    rec_free(r);
}

void relay_audit_row_stream(struct session *s, uint8_t type, size_t total)
{
    s->row_part_left = (uint32_t)total;
    /* type, length (and a DataRow's column count) are not digested (audit.h) */
    s->row_part_skip = type == 'D' ? 7 : 5;
    struct stmt_rec *r = rec_head_reply(s, false);
    if (!r) return;
    r->rows += type == 'D';
    r->bytes += total;
    if (!r->digesting) return;
    if (!r->digest.active) audit_digest_init(&r->digest);
    r->digest.rows++;
}

void relay_audit_row_part(struct session *s, const uint8_t *p, size_t n)
{
    if (n > s->row_part_left) n = s->row_part_left;
    s->row_part_left -= (uint32_t)n;
    size_t skip = n < s->row_part_skip ? n : s->row_part_skip;
    s->row_part_skip -= (uint8_t)skip;
    struct stmt_rec *r = s->recs;
    if (r && r->digesting && n > skip) audit_digest_update(&r->digest, p + skip, n - skip);
}

void relay_audit_data(struct session *s, const uint8_t *body, size_t len)
{
    struct stmt_rec *r = rec_head_reply(s, false);
    if (!r) return;
    r->bytes += len + 5;
    if (!r->digesting) return;
    if (!r->digest.active) audit_digest_init(&r->digest);
    audit_digest_update(&r->digest, body, len);
}

void relay_audit_row(struct session *s, const uint8_t *body, size_t len)
{
    struct stmt_rec *r = rec_head_reply(s, false);
    if (!r) return;
    r->rows++;
    r->bytes += len + 5;
    if (!r->digesting) return;
    if (!r->digest.active) audit_digest_init(&r->digest);
    audit_digest_datarow(&r->digest, body, len);
}

/* An error in a group after some of its writes completed: a later statement failed, or the
 * commit at Sync did (a deferred constraint), or sluice refused a later statement; either way
 * the group's implicit transaction rolled back. Each completed write's event gets a
 * statement_end saying so, with the server's error (none for a refusal: docs/audit.md); a
 * write fetched in parts among them gets its result when its portal is gone. */
static void error_after_done(struct session *s, const char *sqlstate)
{
    relay_audit_tx_group_failed(s, sqlstate);
}

void relay_audit_emit_undone(struct session *s, const uint64_t *seqs, unsigned n,
                             const char *sqlstate, const char *detail)
{
    struct audit_event ev = {
        .kind = AUDIT_STATEMENT_END,
        .session_id = s->id,
        .identity = s->ident ? s->ident->name : s->user,
        .sqlstate = sqlstate,
        .detail = detail,
    };
    for (unsigned i = 0; i < n; i++) {
        ev.ref = seqs[i];
        if (!audit_emit(&ev)) log_warn("session %llu: audit event lost", (unsigned long long)s->id);
    }
}

/* n continues the statement of r, which the server suspended: n takes r's start, its event
 * (when it was journaled first) and what it counted and digested so far. */
static void rec_merge(struct stmt_rec *n, struct stmt_rec *r)
{
    n->masked = r->masked;
    r->masked = NULL;
    n->start_us = r->start_us;
    n->pre_seq = r->pre_seq;
    n->pre_time_us = r->pre_time_us;
    n->noted = r->noted;
    n->rows += r->rows;
    n->tag_rows += r->tag_rows;
    n->bytes += r->bytes;
    n->digesting = r->digesting;
    if (r->digest.active) {
        n->digest = r->digest;
        r->digest.active = false;
    }
}

/* The oldest record, at its Execute's first reply. One sent to continue a suspended portal
 * takes over that statement now, unless the portal was gone by then (the reply is 34000: a
 * Sync or COMMIT between them ended its transaction). cont_of is compared only with records
 * still suspended, which were all made before this one: never with a reused address. */
static struct stmt_rec *rec_head_reply(struct session *s, bool gone)
{
    struct stmt_rec *r = s->recs;
    /* (a reply of an earlier group, an error at its Sync, is not this one's) */
    if (!r || r->group != s->s2c_group) return r;
    r->resumed = false;
    if (!r->replied && r->portal) {
        /* its Bind is done: what the portal runs is known, where the Execute's record took a
         * guess (a Parse pipelined in an earlier group may have failed). The event of one
         * journaled before it was sent named the guess: its result says so (RAN_OTHER), unless
         * it is folded into that event, which then names what ran. */
        const struct prep *p = prep_get(&s->portals, r->portal);
        if (p && p->info != r->info) {
            r->ran_other = r->pre_seq != 0;
            info_put(r->info);
            r->info = p->info;
            r->info->refs++;
            r->decision = p->decision ? p->decision : "allow";
            r->rule = p->rule;
            rec_ids_set(r, &p->ids);
        }
    }
    r->replied = true;
    if (!r->cont_of) return r;
    struct stmt_rec **pp = &s->suspended;
    while (*pp && *pp != r->cont_of)
        pp = &(*pp)->next;
    if (*pp && !gone) {
        struct stmt_rec *sr = *pp;
        *pp = sr->next;
        rec_merge(r, sr);
        rec_free(sr);
    }
    r->cont_of = NULL;
    return r;
}

/* Is an ErrorResponse now the answer to a Parse, Bind or Close (not an Execute)? When the
 * oldest message of this group still unanswered is one of those, it is: replies come in the
 * order of the messages, and the Executes behind it are then skipped (ReadyForQuery records
 * them as not executed). */
static bool error_of_op(const struct session *s)
{
    const struct audit_op *op = s->audit_ops;
    /* stale: dropped at the next reply; refused: never sent (its record takes the error) */
    while (op && (op->group < s->s2c_group || op->refused))
        op = op->next;
    if (!op || op->group != s->s2c_group) return false;
    const struct stmt_rec *r = s->recs;
    return !r || r->group != s->s2c_group || op->sent < r->sent;
}

void relay_audit_server(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    struct pg_error_view e;
    bool failed = type == 'E' && pg_error_parse(body, len, &e) == PG_OK;
    bool op_failed = type == 'E' && error_of_op(s); /* a Parse, Bind or Close: no Execute's */
    /* a statement sluice refused gets its stand-in's error here, not the refusal the client
     * sees: not the server's error, nor the block's */
    const struct stmt_rec *h = s->recs && s->recs->group == s->s2c_group ? s->recs : NULL;
    const char *state = failed && !(!op_failed && h && (h->refused || h->late)) ? e.sqlstate : NULL;
    if (state) relay_audit_tx_error(s, state);
    if (op_failed) {
        error_after_done(s, state);
        return;
    }
    struct stmt_rec *r =
        type == 'Z' ? NULL : rec_head_reply(s, failed && !strcmp(e.sqlstate, "34000"));
    switch (type) {
    case 's': /* PortalSuspended: its next Execute continues the same statement */
        if (!r || r->group != s->s2c_group || r->query) return;
        s->recs = r->next;
        if (!s->recs) s->recs_tail = NULL;
        counts_take(s, r); /* what was masked so far is this statement's */
        note_write(s, r);  /* a write fetched in parts ran whole here, at its first Execute */
        r->next = s->suspended;
        s->suspended = r;
        return;
    case 'C':
    case 'I': {
        bool mine = r && r->group == s->s2c_group;
        /* the tags of BEGIN, COMMIT, SAVEPOINT ..., or of a statement sluice could not read;
         * not of one known to hold no transaction statement (most of them) */
        bool no_tx = mine && r->info->parsed && !r->info->tx;
        if (type == 'C' && len && !body[len - 1] && !no_tx) {
            static const struct tx_part plain; /* a statement known to name no savepoint */
            const struct tx_part *part = NULL; /* not known */
            if (mine && r->info->parsed)
                part = r->tags < r->info->n_stmts ? &r->info->tx[r->tags] : &plain;
            if (mine) r->tags++;
            relay_audit_tx_tag(s, (const char *)body, part);
        }
        if (!mine) return;
        if (type == 'C') r->tag_rows += pg_tag_rows(body, len);
        if (!r->query) rec_pop_emit(s, true);
        return;
    }
    case 'E': {
        if (!r || r->group != s->s2c_group) {
            error_after_done(s, state);
            return;
        }
        if (state) snprintf(r->sqlstate, sizeof r->sqlstate, "%s", state);
        /* what completed before it (a refused statement fails its group too) */
        if (!r->query || r->refused || r->late) error_after_done(s, state);
        if (!r->query) rec_pop_emit(s, true);
        return;
    }
    case 'Z':
        /* The group is over: Queries complete; Executes skipped after an error never ran. */
        relay_audit_skipped(s);
        /* out of any transaction: every portal is gone */
        if (s->suspended && len == 1 && body[0] == 'I') suspended_end(s, NULL, PORTAL_CLOSED);
        return;
    default:
        return;
    }
}

void relay_audit_skipped(struct session *s)
{
    while (s->recs && s->recs->group <= s->s2c_group) {
        struct stmt_rec *sk = s->recs;
        if (sk->resumed) { /* the skipped Execute continued nothing: still suspended */
            s->recs = sk->next;
            if (!s->recs) s->recs_tail = NULL;
            sk->resumed = false;
            sk->next = s->suspended;
            s->suspended = sk;
            continue;
        }
        if (!sk->query) sk->detail = "not executed: skipped after an error earlier in its group";
        rec_pop_emit(s, true);
    }
}

uint64_t relay_audit_pending(const struct session *s)
{
    uint64_t oldest = s->audit_sent + 1;
    if (s->audit_ops && s->audit_ops->sent < oldest) oldest = s->audit_ops->sent;
    if (s->recs && s->recs->sent < oldest) oldest = s->recs->sent;
    return s->audit_sent + 1 - oldest;
}

void relay_audit_end(struct session *s)
{
    bool commit_pending = false; /* sent, not answered: it may have run */
    for (const struct stmt_rec *r = s->recs; r; r = r->next)
        if (!r->refused && !r->late)                                /* (refused ones never ran) */
            commit_pending |= r->info->commits || !r->info->parsed; /* (unread: may be one) */
    while (s->recs) {
        /* an Execute continuing one still waiting (or suspended) got no reply: that one's
         * event is the statement's */
        bool cont = s->recs->cont_of != NULL;
        if (!s->recs->late) /* (a refused one's detail says why it did not run) */
            s->recs->detail = "interrupted: the session ended before its result was complete";
        rec_pop_emit(s, !cont);
    }
    suspended_end(s, NULL, "interrupted: the session ended before its result was complete");
    relay_audit_tx_end(s, commit_pending);
    while (s->audit_ops)
        op_pop(s, false);
    prep_free_all(&s->preps);
    prep_free_all(&s->portals);
    audit_json_free(&s->audit_json);
}

/* A fast-path FunctionCall names its function by OID only: it is recorded by that OID, and
 * durably, since sluice cannot tell what it does. Its result (FunctionCallResponse) completes
 * it at ReadyForQuery, as a simple Query. */
int relay_audit_fastpath(struct session *s, const uint8_t *body, size_t len, const char *decision,
                         const char *rule, bool refused)
{
    if (!relay_audit_on(s)) return 0;
    char text[64];
    snprintf(text, sizeof text, "(fast-path call of function %u)", len >= 4 ? pg_get_u32(body) : 0);
    struct stmt_info *i = info_note(s, text);
    i->command = "FUNCTION CALL";
    i->durable = true;
    int r = rec_push(s, i, true, refused, decision, rule, NULL);
    info_put(i);
    return r;
}
