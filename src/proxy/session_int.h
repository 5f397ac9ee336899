/*
 * session_int.h: the session as the files of the relay share it (session.c: state machine
 * and byte moving; relay_mask.c: masking of results; relay_audit.c: statement records and
 * audit events; relay_approve.c: approvals and parked statements). Not for use outside
 * src/proxy/.
 */
#ifndef SLUICE_PROXY_SESSION_INT_H
#define SLUICE_PROXY_SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "audit/audit.h"
#include "core/buf.h"
#include "core/names.h"
#include "net/net.h"
#include "proxy/proxy.h"
#include "sql/sql.h"

struct mask_plan;
struct mask_counts;
struct policy_decision;
struct sql_facts;

/* What a hook decided about a held message. */
enum hold_action {
    HOLD_FORWARD, /* send it on unchanged */
    HOLD_REPLACE, /* drop it; the bytes queued in the destination's output go instead */
    HOLD_PARK,    /* client messages only: stop here until the session is unparked */
};

/* A write under a grant with max_rows (relay_grant.c). */
enum grant_guard {
    GG_NONE,
    GG_STMT,       /* the wrapped statement runs */
    GG_FINISH,     /* COMMIT / ROLLBACK / RELEASE sent by sluice runs */
    GG_EXT_STMT,   /* extended protocol: the guarded Bind's group runs, up to its Sync */
    GG_EXT_FINISH, /* extended protocol: sluice's COMMIT / ROLLBACK / RELEASE runs */
};

enum sess_state {
    S_STARTUP,    /* reading the startup packet */
    S_TLS_ACCEPT, /* client TLS handshake */
    S_AUTH,       /* waiting for the client's password or SASL messages */
    S_AUTH_DELAY, /* a failed login waits before its error is sent */
    S_UP_RESOLVE, /* the target's host name is being resolved (net/resolve.c) */
    S_UP_CONNECT, /* TCP connect to the target */
    S_UP_SSLREQ,  /* SSLRequest sent upstream, waiting for S or N */
    S_UP_TLS,     /* upstream TLS handshake */
    S_UP_LOGIN,   /* StartupMessage sent: authentication and parameters */
    S_RELAY,      /* messages flow both ways */
    S_CLOSING,    /* flushing a final error to the client */
    S_DEAD,       /* closed; freed by the worker after this round of events */
};

/* One direction's source: the socket and what has been read from it. */
struct side {
    struct ev_handler h;
    struct sock sk;
    struct buf *in;     /* NULL while nothing is buffered */
    size_t fwd;         /* bytes from in->off decided and waiting to be written to the peer */
    uint32_t msg_left;  /* bytes of a streamed message still to come from the socket */
    uint32_t ev;        /* current epoll interest */
    size_t skip;        /* after fwd: bytes of a replaced or dropped message to drop */
    uint32_t drop_left; /* bytes of a dropped streamed message still to come */
    bool rescan;        /* scanning stopped at a replaced message: resume before reading */
};

/* A portal bound from a statement with a row limit or a masking rule: its rows are counted
 * over all its Executes, which may be in later Query/Sync groups (a portal fetched in parts
 * across Syncs, as pgJDBC's fetchSize does inside a transaction), and each of them gets the
 * same limit and masking. Kept by portal name in s->caps (prepared.c) from the server's
 * BindComplete until the portal is bound again, closed, or its transaction ends. */
struct row_cap {
    struct name_node node; /* first: in s->caps, by portal */
    uint64_t group;        /* of its Bind */
    uint64_t limit, sent;
    const char *rule;
    int mask;
    char portal[];
};

/* An Execute of a portal that has (or may get) a cap: the index of its result among its
 * group's Executes. Its rows count against the portal's cap as it stands when they come. */
struct cap_exec {
    struct cap_exec *next;
    uint32_t index;
    char portal[];
};

/* What policy said about the results of one Query/Sync group: a row limit, and whether a
 * rule asked for masking (1) or raw values (-1). Each result counts its own rows, but for an
 * Execute in `execs`, whose rows count against its portal's cap; `result` is the index of
 * the result arriving (one per Execute, in order: CommandComplete, PortalSuspended,
 * EmptyQueryResponse, or an error, after which the server skips the rest of the group). */
struct limit_entry {
    struct limit_entry *next;
    uint64_t group, limit;
    const char *rule; /* points into the session's policy snapshot */
    int mask;
    struct cap_exec *execs, *execs_tail;
    uint32_t result;
};

/* A prepared statement allowed with limit_rows, masking asked by a rule, or under an approval
 * grant: its Bind/Execute results are limited too, and each Bind takes one of the grant's
 * uses. */
struct limited_stmt {
    struct name_node node; /* first: in s->limited, by name */
    uint64_t limit;
    int mask;
    const char *rule;
    char grant[32];          /* the grant it was approved under (APPROVE_ID_LEN), or "" */
    uint64_t grant_max_rows; /* its max_rows (each Bind's write is bounded), or 0 */
    char name[];
};

/* A statement refused by policy: its placeholder's error from the server is replaced by
 * this ErrorResponse. `group` counts Query/Sync messages sent before it. */
struct blocked {
    struct blocked *next;
    uint64_t group;
    size_t len;
    uint8_t msg[];
};

struct session {
    struct worker *w;
    struct session *prev, *next;
    uint64_t id;
    enum sess_state state;
    struct side cl, sv;
    struct buf *cl_out; /* sluice's own bytes for the client, sent before relayed ones */
    struct buf *sv_out; /* sluice's own bytes for the upstream during login */
    struct runtime *rt;
    const struct cfg_identity *ident;
    const struct cfg_target *target;
    unsigned target_idx;
    struct sockaddr_storage addr;
    char addr_text[64];
    uint8_t *startup; /* copy of the client's StartupMessage */
    const char *user;
    const char *dbname;
    struct scram_server *scram_sv;
    struct scram_client *scram_cl;
    bool upstream_bound; /* its SCRAM login to the target used channel binding */
    uint8_t sasl_step;
    bool tls_client;
    bool ssl_asked, gss_asked; /* the client sent SSLRequest, GSSENCRequest (answered 'N') */
    bool loopback;
    bool cancel_registered;
    bool c2s_blocked, s2c_blocked;
    bool client_terminated; /* client sent Terminate: close once it is forwarded */
    bool drain;             /* close at the next ReadyForQuery with nothing pending */
    bool expired;           /* ... because its OIDC token expired (else: shutting down) */
    uint64_t expires_ms;    /* clock_ms() when its OIDC token expires and it drains (0: never) */
    uint8_t tx;             /* transaction status of the last ReadyForQuery */
    uint32_t pending_sync;  /* Query/Sync/FunctionCall forwarded, ReadyForQuery not yet back */
    bool copy_in;           /* the server is in COPY FROM STDIN (CopyInResponse seen) */
    uint32_t copy_syncs;    /* Syncs counted since the client's last Query or Execute */
    bool copy_counting;     /* ... and only Syncs, Flushes and CopyData came since */
    bool sync_doubt;        /* a Sync came during COPY FROM STDIN: the group count may be off */
    uint32_t copy_ignored;  /* of those, the ones a COPY FROM STDIN swallows */
    uint32_t be_pid, be_key, our_key;
    uint64_t sv_born_ms, sv_epoch; /* the upstream connection's login start, pool_epoch() then */
    struct net_addr *up_addrs;     /* while connecting upstream: the target's addresses */
    struct net_lookup *lookup;     /* in S_UP_RESOLVE: the lookup it waits for (not its own) */
    unsigned up_n, up_try;         /* how many, and which one is being tried */
    uint64_t deadline_ms;
    uint64_t statements;
    uint8_t *params; /* the server's ParameterStatus messages, replayed if the upstream is reused */
    size_t params_len;
    bool client_left; /* the client ended the session (Terminate or close) */
    bool client_eof;  /* the client shut down its sending side with statements unanswered: they
                       * are answered (the client may still read), then the session ends */
    /* with client_eof: the client broke the protocol (why, and the SQLSTATE to say it with);
     * what it sent before is answered, then this error ends the session (client_fault_at) */
    const char *client_bad, *client_bad_code;
    bool login_state_changed; /* an SQL_F_LOGIN_STATE statement went upstream in this
                               * transaction: pool_epoch_bump() when it ends */
    bool ddl_in_tx; /* DDL went upstream in this transaction: catalog_invalidate() when it ends */
    uint64_t c2s_group, s2c_group; /* Query/Sync/FunctionCall sent; ReadyForQuery received */
    /* limit_rows per Query/Sync group, oldest first: DataRows beyond it are not sent. */
    struct limit_entry *limits, *limits_tail;
    uint64_t rows_sent, rows_dropped; /* of the result being relayed */
    /* A DataRow larger than server.max_row_size streams through in parts: its bytes still to
     * come, and how many of them are header and column count (not digested). */
    uint32_t row_part_left;
    uint8_t row_part_skip;
    bool unsynced;                        /* extended-protocol messages sent since the last Sync */
    struct name_map limited;              /* prepared statements with a limit, masking or grant */
    struct prep_op *prep_ops, *prep_tail; /* Parses and Closes not yet answered (prepared.c) */
    uint64_t prep_pushed;                 /* ops queued so far (each op's `n`) */
    /* The client ran more than AHEAD_MAX messages ahead of the server's answers: nothing more
     * is read from it until they come (session.c, client_ahead). */
    bool ahead_paused;
    bool ahead_stalled;       /* the server was silent: the next message goes (AHEAD_STALL_MS) */
    uint64_t ahead_since_ms;  /* when the server last answered while paused (AHEAD_STALL_MS) */
    uint64_t failed_open;     /* c2s_group + 1 of a group the server failed before its Sync */
    uint64_t trimmed;         /* c2s_group + 1 of a failed group whose queues were dropped */
    struct name_map caps;     /* portals bound with a limit or masking (prepared.c) */
    struct name_map known;    /* named statements the server has from a Parse (prepared.c) */
    struct name_map changers; /* statements whose text changes names when they run */
    struct name_map bound;    /* named portals made by a Bind, until they end */
    bool sql_prepared;        /* a SQL PREPARE was sent in this session */
    const char *server_fault; /* SQLSTATE of a server message sluice cannot relay safely */
    bool lingering;           /* S_CLOSING: error sent, reading until the client closes */
    struct blocked *blocked, *blocked_tail;
    /* masking (relay_mask.c) */
    bool mask_base;         /* this identity's results are masked unless a rule says unmask */
    bool plan_known;        /* a RowDescription (or NoData) describes the rows arriving now */
    bool copy_out;          /* the server is in COPY TO STDOUT */
    bool copy_binary;       /* ... in binary format */
    struct mask_plan *plan; /* of the RowDescription; NULL: nothing to look at */
    /* COPY TO STDOUT by column: plans of the Queries sent (by group) whose one statement is
     * such a COPY naming its columns, and the plan of the COPY being relayed */
    struct copy_expect *copy_expects, *copy_expects_tail;
    struct mask_copy_plan *copy_plan;
    struct mask_desc *mdesc;    /* Describes awaiting their reply; NULL until one is sent */
    struct mask_counts *masked; /* of the statement being relayed; NULL until needed */
    /* audit (relay_audit.c) */
    char app_name[64];
    /* the JSON of its events' session fields, made at its first statement's event; dropped
     * when one of them (application_name) changes */
    struct audit_json audit_json;
    struct stmt_rec *recs, *recs_tail; /* statements waiting for their results, oldest first */
    struct stmt_rec *suspended;        /* portals suspended (PortalSuspended) mid-result */
    struct audit_tx *atx;    /* the open transaction block's writes (relay_audit_tx.c); or NULL */
    struct name_map preps;   /* prepared statements by name (the server's) */
    struct name_map portals; /* portals by name -> their statement */
    struct audit_op *audit_ops, *audit_ops_tail; /* Parse, Bind, Close not yet answered */
    uint64_t audit_sent; /* Parses, Binds, Closes and Executes sent, in order (their `sent`) */
    bool audit_started;  /* session_start emitted: session_end is due */
    /* A parked client message (at cl.in->off + cl.fwd) waits for an approval
     * (relay_approve.c); nothing more is read from the client meanwhile. */
    bool parked;
    bool fastpath_binary;      /* the last FunctionCall asked for a binary result */
    bool park_ready;           /* woken: the next hook call for it applies park_act */
    enum hold_action park_act; /* FORWARD, or REPLACE with a placeholder */
    char park_request[32];     /* approval request id to wait for; "" = none */
    uint64_t park_group;       /* the Query/Sync group of the parked statement */
    bool park_cancelled;       /* a CancelRequest ended its wait (57014) */
    char audit_request[32];    /* approval request / grant of the statement being judged */
    char audit_grant[32];
    struct session *park_next;       /* the worker's list of parked sessions */
    struct sess_info *reg;           /* the admin API's view of this session while it relays */
    struct cfg_identity *oidc_ident; /* owned: the identity of a verified OIDC token */
    /* grant max_rows guard (relay_grant.c) */
    uint8_t gg;      /* enum grant_guard */
    bool gg_outside; /* BEGIN was added: the client was not in a transaction */
    bool gg_error, gg_exceeded;
    bool gg_kick;     /* run the client direction (flush sv_out, resume reading) */
    bool gg_append_z; /* the final ReadyForQuery follows sluice's queued reply */
    uint8_t gg_cmds;  /* CommandCompletes seen while the statement ran */
    uint64_t gg_max, gg_rows;
    uint64_t gg_pending_max; /* the next Query forwarded runs under a grant with this bound */
    uint8_t *gg_held;        /* the statement's CommandComplete, sent once the work is kept */
    size_t gg_held_len;
    bool gg_open;       /* extended: the guarded group's Sync is still to be forwarded */
    char gg_portal[64]; /* extended: the guarded Bind's portal */
    bool gg_noop;       /* extended: sluice's BEGIN / SAVEPOINT did not run: nothing to end */
    uint8_t gg_owed;    /* extended: replies to the client's messages before sluice's */
    uint8_t gg_quiet;   /* extended: replies to sluice's own messages still to swallow */
    uint32_t grp_msgs;  /* client messages since the last Sync or Query */
    uint32_t grp_execs; /* Executes among them (those looked at: client_holds) */
    /* the server reads statement text otherwise than sluice does (standard_conforming_strings
     * off, an unsafe client_encoding: session_text_check): every statement is unjudgeable */
    bool text_doubt;
    uint8_t grp_first;         /* ... the type of the first of them */
    char park_fp[SQL_KEY_LEN]; /* the reviewed statement's approval key (sql_approval_key) */
    bool park_guardable;       /* ... is one write statement (max_rows can be enforced) */
    bool park_parse;           /* ... is a Parse: its grant's uses are taken by its Binds */
    /* why review refused it, for its event (static text); NULL: its error says it all */
    const char *review_refusal;
};

/* The buffer in *slot, taken from the pool when there is none. */
struct buf *session_out_buf(struct buf **slot);

/* The row limit and masking entry of the group whose results are arriving (session.c). */
const struct limit_entry *relay_group_current(struct session *s);

/* Masking (relay_mask.c). */
void relay_mask_start(struct session *s); /* after authentication: does this identity see masks */
void relay_mask_end(struct session *s);   /* at close */
bool relay_mask_holds(const struct session *s, uint8_t type);
/* Will masking look into this message's values (so it must have all of it)? */
bool relay_mask_rewrites(struct session *s, uint8_t type);
/* T, D, d, H, c, I, N and (not swapped) E: rewrite or note; C, E, Z end the result. */
enum hold_action relay_mask_server(struct session *s, uint8_t type, const uint8_t *body,
                                   size_t len);
void relay_mask_result_end(struct session *s);
/* The Query of group `group` is one COPY ... TO STDOUT (c): its lines are masked by the names
 * of its columns when it runs (its CopyOutResponse in that group), if the group's results are
 * masked (mask: what its rule said, 1 mask, -1 raw, 0 the session's default); else nothing is
 * planned or asked of the catalog. */
void relay_mask_copy_expect(struct session *s, uint64_t group, const struct sql_copy_out *c,
                            int mask);
/* Row plans for Executes: every Describe the client sends is noted (relay_mask_describe); an
 * Execute whose rows masking would look at, unless the client's message just before it
 * described that portal, gets sluice's own Describe of the portal in front of it
 * (relay_mask_describe_first: true when the caller must send it, relay_mask_put_describe);
 * the reply to that one builds the plan and is not forwarded (relay_mask_describe_reply: 1).
 * relay_mask_client_other() after any other client message; relay_mask_group_end() at each
 * ReadyForQuery (Describes the server skipped after an error get no reply). */
void relay_mask_describe(struct session *s, const uint8_t *body, size_t len);
bool relay_mask_describe_first(struct session *s, const uint8_t *body, size_t len);
void relay_mask_put_describe(struct buf *out, const char *portal);
int relay_mask_describe_reply(struct session *s, uint8_t type, const uint8_t *body, size_t len);
void relay_mask_client_other(struct session *s);
void relay_mask_group_end(struct session *s);
bool relay_mask_describes_pending(const struct session *s);
/* Add the session's masked counts to the metrics (the caller then resets them). */
void relay_mask_count(struct session *s);

/* A refused statement is replaced upstream by this text: the server answers with a syntax
 * error at exactly the place the statement's own error would come (session.c). */
#define BLOCKED_PLACEHOLDER "sluice_blocked_by_policy"
/* The grant guard's own statement and portal (relay_grant.c). Clients may name neither a
 * statement nor a portal after these two. */
#define GRANT_GUARD "sluice_grant"
/* Why the audit says a write under a grant with max_rows was refused when pipelined. */
#define GRANT_PIPELINED                                                                            \
    "refused: a write under a grant with max_rows must not be pipelined behind other statements"
/* Queue the placeholder Query upstream; HOLD_REPLACE. */
enum hold_action relay_placeholder_query(struct session *s);
/* The same inside the extended protocol: an Execute of a portal that does not exist. */
enum hold_action relay_placeholder_execute(struct session *s);

/* Refusals (session.c): the placeholder's error is replaced by this one. */
void blocked_push_raw(struct session *s, const char *sqlstate, const char *msg, const char *hint);
void blocked_push_text(struct session *s, const char *sqlstate, const char *rule,
                       const char *reason, const char *hint);
void blocked_push_group(struct session *s, uint64_t group, const char *sqlstate, const char *msg,
                        const char *hint);

/* Approvals (relay_approve.c). */
enum review_outcome {
    REVIEW_REFUSED, /* refused now (defer mode, or no approvals): an error is queued */
    REVIEW_GRANTED, /* a live grant covers it: run it */
    REVIEW_WAIT,    /* park until s->park_request is decided */
};
/* query: a simple Query (a use of a grant is taken now); else a Parse, whose Binds take the
 * uses (session.c, on_client_bind). */
enum review_outcome relay_approve_review(struct session *s, const char *sql,
                                         const struct sql_facts *f, const struct policy_decision *d,
                                         bool query);
bool relay_approve_done(struct session *s);
void relay_approve_resume(struct session *s); /* sets park_act from the decision */
/* The session's statement waiting for approval will not run (reason): cancel the request. */
void relay_approve_abandon(struct session *s, const char *reason);

/* Prepared statements (prepared.c): what their names mean, applied when the server confirms
 * each Parse and Close. prep_entry_new: NULL when there is nothing to keep. */
struct prep_op;
struct limited_stmt *prepared_entry_new(const char *name, uint64_t limit, const char *rule,
                                        int mask, const char *grant, uint64_t grant_max_rows);
/* What a PREPARE, DEALLOCATE, DISCARD ALL, DECLARE or CLOSE does to statement and portal
 * names. */
struct name_change {
    bool any;        /* the text holds one */
    bool all;        /* DEALLOCATE ALL, DISCARD ALL: every name */
    bool prepare;    /* a PREPARE: SQL makes a statement */
    char name[64];   /* else the one name (an identifier: at most 63 bytes) */
    bool cursors;    /* DECLARE, CLOSE, CLOSE ALL, DISCARD ALL: portal names change */
    bool cursor_all; /* CLOSE ALL, DISCARD ALL: every portal */
    char cursor[64]; /* else the one cursor */
};
/* nc: what its text does to names, which happens at each of its Executes, not now
 * (prepared_bind); NULL: nothing. */
void prepared_parse(struct session *s, const char *name, struct limited_stmt *entry,
                    const struct name_change *nc); /* owns entry */
void prepared_close(struct session *s, const uint8_t *body, size_t len);
/* A parked Parse was approved under grant: its Binds take the grant's uses and bound. */
void prepared_grant(struct session *s, const char *name, const char *grant, uint64_t max_rows);
/* The server's ParseComplete ('1'), CloseComplete ('3') or ReadyForQuery ('Z', before
 * s2c_group counts it). */
void prepared_server(struct session *s, uint8_t type);
/* The ops of group s2c_group still unanswered: the server skipped them after an error. */
void prepared_skipped(struct session *s);
/* How many ops the queue holds at most. */
uint64_t prepared_pending(const struct session *s);
/* The group the client is sending failed and its queues were dropped (client_ahead): nothing
 * of it runs, and what its messages name is no longer known. */
bool relay_group_trimmed(const struct session *s);
bool prepared_holds(const struct session *s, uint8_t type);
/* What a Bind of name gets (tmp: room for a merged entry); NULL: nothing. */
const struct limited_stmt *prepared_lookup(struct session *s, const char *name,
                                           struct limited_stmt *tmp);
bool prepared_any(const struct session *s);
void prepared_free_all(struct session *s);
/* A statement name a Bind may use as sluice judged it: the unnamed statement, a name whose
 * Parse the server confirmed, or one with a Parse still pending (in an earlier group only
 * while no SQL PREPARE was sent: its failure would leave that statement under the name). A
 * name made by SQL PREPARE, or dropped by DEALLOCATE or DISCARD ALL, is not. */
bool prepared_name_known(const struct session *s, const char *name);
/* A statement of a Query or Parse sent now: PREPARE, DEALLOCATE and DISCARD ALL make their
 * names unknown (at once: whether they succeed is not waited for), and say so in *nc. */
void prepared_sql_statement(struct session *s, const struct sql_stmt *st, struct name_change *nc);
/* Named portals made by a Bind (a Bind of portal sent now; the unnamed portal is always
 * known): gone at a Close of it, and at the end of the transaction of their group (COMMIT, or
 * ReadyForQuery 'I': prepared_portals_drop). Any other portal is a SQL cursor. */
void prepared_portal_bound(struct session *s, const char *portal);
bool prepared_portal_known(const struct session *s, const char *portal);
void prepared_portals_drop(struct session *s);
/* A Bind of statement name: when its text holds PREPARE, DEALLOCATE or DISCARD ALL (a Parse
 * of it said so), they run with it, and every name becomes unknown. */
void prepared_bind(struct session *s, const char *name);
/* Portals (struct row_cap). A Bind of portal from statement l (NULL: none): at its
 * BindComplete the portal gets a cap when l has a limit or masking, else none. */
void prepared_cap_bind(struct session *s, const char *portal, const struct limited_stmt *l);
/* The portal's cap now (NULL: none). */
struct row_cap *prepared_cap_of(struct session *s, const char *portal);
/* What an Execute of portal sent now gets (the stricter of its cap now and the one a pending
 * Bind would give it): limit, rule, mask in *out; false: nothing. */
bool prepared_cap_exec(struct session *s, const char *portal, struct limited_stmt *out);
/* The transaction of the group being answered ended: the portals bound up to it are gone. */
void prepared_cap_drop(struct session *s);

/* Grants with max_rows (relay_grant.c). */
enum hold_action relay_grant_wrap(struct session *s, const uint8_t *body, size_t len);
/* May this Bind of a statement prepared under a grant with max_rows be guarded? If not (it is
 * pipelined behind other messages), the client's error is queued: refuse it. */
bool relay_grant_bind_ok(struct session *s, const uint8_t *body, size_t len);
/* The Bind (body, len) of such a statement, once relay_grant_bind_ok said yes. */
enum hold_action relay_grant_bind(struct session *s, const uint8_t *body, size_t len,
                                  uint64_t max_rows);
/* A client message while the guarded group is open: true when refused (*act says how). */
bool relay_grant_inside(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                        enum hold_action *act);
/* Does the guard look at server messages of this type (all, while an extended guard runs)? */
bool relay_grant_holds(const struct session *s, uint8_t type);
bool relay_grant_server(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                        enum hold_action *act);

/* Audit (relay_audit.c). Statement calls return 0, or -1 when the audit cannot take the
 * statement's event (a durable one: in the journal before this returns) and audit.fail is
 * closed: the caller refuses the statement. */

bool relay_audit_on(const struct session *s);
void relay_audit_session(struct session *s, enum audit_kind kind, const char *detail);
int relay_audit_query(struct session *s, const char *sql, const struct sql_facts *f,
                      const char *decision, const char *rule, bool refused);
/* The same for a statement refused as it was judged, with why (static text; NULL: none). */
int relay_audit_query_refused(struct session *s, const char *sql, const struct sql_facts *f,
                              const char *decision, const char *rule, const char *detail);
/* A Parse policy refused: its name keeps its meaning, and its group's Executes (which the
 * server skips) record nothing. */
void relay_audit_parse_refused(struct session *s, const char *name);
/* ParseComplete, BindComplete or CloseComplete (type), and the ReadyForQuery of group
 * s2c_group (before it is counted). */
void relay_audit_parse_done(struct session *s, uint8_t type);
void relay_audit_ready(struct session *s);
/* The Executes of group s2c_group still waiting: the server skipped them after an error. */
void relay_audit_skipped(struct session *s);
/* How many Parses, Binds, Describes, Closes and Executes the audit's queues hold at most. */
uint64_t relay_audit_pending(const struct session *s);
void relay_audit_parse(struct session *s, const char *name, const char *sql,
                       const struct sql_facts *f, const char *decision, const char *rule);
void relay_audit_bind(struct session *s, const char *portal, const char *stmt_name);
/* SQL PREPARE, DEALLOCATE or DISCARD ALL may change what name means (NULL: every name):
 * a later Bind of it is recorded as a statement sluice did not see prepared. */
void relay_audit_forget_statement(struct session *s, const char *name);
/* The same for every name but keep. */
void relay_audit_forget_others(struct session *s, const char *keep);
/* A Describe message (body as sent). */
void relay_audit_describe(struct session *s, const uint8_t *body, size_t len);
/* A Close message (body as sent): a closed portal's suspended statement is over. */
void relay_audit_close(struct session *s, const uint8_t *body, size_t len);
int relay_audit_execute(struct session *s, const char *portal);
/* Refusals, each answered by a stand-in whose error the client gets as sluice's (detail:
 * static text saying why, for the event). The statement just recorded for Query/Sync group
 * `group` (a Query, or a Parse) is refused after all: an approval denied, expired or
 * cancelled, a grant's bound that cannot be kept. */
void relay_audit_refuse_late(struct session *s, uint64_t group, const char *detail);
/* A Bind refused: the statement it binds gets an event (decision and rule: NULL for the
 * statement's own), naming the grant it would have used; the portal keeps its meaning. */
void relay_audit_bind_refused(struct session *s, const char *portal, const char *stmt_name,
                              const char *decision, const char *rule, const char *grant,
                              const char *detail);
/* A Parse, Bind or Execute message (body as sent) refused before it was judged: a deny event
 * by `rule` for the statement it names. */
void relay_audit_refused_message(struct session *s, uint8_t type, const uint8_t *body, size_t len,
                                 const char *rule, const char *detail);
/* A message too malformed to name a statement (what: "(malformed Query message)"): a deny
 * event by rule "protocol". */
void relay_audit_malformed(struct session *s, const char *what);
/* A FunctionCall message (body: function OID first), allowed or refused. */
int relay_audit_fastpath(struct session *s, const uint8_t *body, size_t len, const char *decision,
                         const char *rule, bool refused);
void relay_audit_row(struct session *s, const uint8_t *body, size_t len);
/* A DataRow or CopyData streamed without being held (larger than server.max_row_size):
 * counted at its start (total bytes, header included), then digested part by part. */
void relay_audit_row_stream(struct session *s, uint8_t type, size_t total);
/* A CopyData message of COPY TO STDOUT or a FunctionCallResponse (body as sent): its bytes
 * are counted and digested (a COPY's rows come from its CommandComplete tag). */
void relay_audit_data(struct session *s, const uint8_t *body, size_t len);
void relay_audit_row_part(struct session *s, const uint8_t *p, size_t n);
void relay_audit_server(struct session *s, uint8_t type, const uint8_t *body, size_t len);
void relay_audit_end(struct session *s);
/* statement_end events saying that the writes whose events are seqs were undone. */
void relay_audit_emit_undone(struct session *s, const uint64_t *seqs, unsigned n,
                             const char *sqlstate, const char *detail);
/* Transaction blocks (relay_audit_tx.c). What the relay knows of one statement of a text. */
struct tx_part {
    char *savepoint; /* SAVEPOINT, RELEASE, ROLLBACK TO: the savepoint's name; else NULL */
    bool chain;      /* COMMIT or ROLLBACK AND CHAIN */
};
/* A write completed (its event seq; the Query/Sync group it was sent in; query: a simple
 * Query): kept with its block or, outside one, its extended-protocol group. */
void relay_audit_tx_note(struct session *s, uint64_t seq, uint64_t group, bool query);
/* An error ended the implicit transaction of the group being answered. */
void relay_audit_tx_group_failed(struct session *s, const char *sqlstate);
/* A CommandComplete with tag, of a statement that part describes (NULL: not known). */
void relay_audit_tx_tag(struct session *s, const char *tag, const struct tx_part *part);
/* An error from the server (a statement's own, not a refusal by sluice). */
void relay_audit_tx_error(struct session *s, const char *sqlstate);
void relay_audit_tx_ready(struct session *s, uint8_t status); /* ReadyForQuery's status */
/* The session is over; commit_pending: a COMMIT (or a statement sluice could not read) was
 * sent and not answered. */
void relay_audit_tx_end(struct session *s, bool commit_pending);
/* The statement just recorded runs under this grant (approved while it waited). */
void relay_audit_note_grant(struct session *s, const char *grant_id);

#endif
