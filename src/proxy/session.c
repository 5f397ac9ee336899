/*
 * session.c: one client connection and its upstream connection, from the first byte to
 * the close. The state machine runs startup (SSLRequest/TLS, GSSENCRequest, CancelRequest,
 * protocol version), client authentication (cleartext for tokens, SCRAM-SHA-256 for users
 * with a verifier), the upstream login (TLS per sslmode, trust/cleartext/md5/SCRAM), then
 * the relay.
 *
 * The relay copies bytes in place: what is read from one side is written to the other from
 * the same buffer, and only message headers are looked at, so a message of any size streams
 * through a 32 KiB buffer. A few message types are held whole so that sluice can act on them
 * (client Query, Parse and FunctionCall, and Bind while a prepared statement has a row limit:
 * the policy seam; server ReadyForQuery, CommandComplete, ErrorResponse and ParameterStatus:
 * statement end, the audit emit seam, and what a reused upstream replays). A held message can
 * be replaced, and a streamed DataRow dropped, without breaking the framing (skip, drop_left,
 * rescan). Buffers go back to the worker's pool whenever a direction drains, so an idle
 * session holds no buffers.
 *
 * Parsing stays in src/pg/msg.c; this file decides and moves bytes. session_close() is the
 * one place a session ends, with a reason that goes to the log.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "approve/approve.h"
#include "core/buf.h"
#include "core/log.h"
#include "ident/ident.h"
#include "ident/oidc.h"
#include "net/net.h"
#include "pg/msg.h"
#include "pg/scram.h"
#include "sql/sql.h"
#include "policy/policy.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/session_int.h"
#include "admin/metrics.h"
#include "mask/mask.h"

atomic_uint proxy_n_clients;
static atomic_ullong next_session_id = 1;

static void session_close(struct session *s, const char *reason);
static void relay_update_interest(struct session *s);
static void relay_run(struct session *s, bool c2s, bool s2c);
static void login_continue(struct session *s);
static void session_put_backend_key(struct session *s);
static bool upstream_reuse(struct session *s);
static void upstream_release(struct session *s, bool reusable);
static void upstream_lookup_abandon(struct session *s);
static void upstream_put_startup(struct session *s, struct buf *b);
static void session_on_tick(struct session *s, uint64_t now_ms);
static void session_unpark_remove(struct session *s);
static void session_park_abandon(struct session *s, const char *reason);
static void session_ident_free(struct cfg_identity *ci);
static void limit_free(struct limit_entry *l);
static void auth_delay(struct session *s, unsigned delay);
static void auth_failed(struct session *s, const char *why);
static void auth_succeeded(struct session *s);

/* ---- small helpers ------------------------------------------------------------------ */

/* application_name as the audit, the logs and the dashboard show it: masked by value, as
 * statement text is (a client may put anything there). */
/* Does the server read statement text as sluice does? Its ParameterStatus messages (kept in
 * s->params) say: standard_conforming_strings on, and a client encoding whose characters
 * never hold the bytes of ASCII quotes or backslashes. Otherwise (a role's or database's
 * default, a startup option, a SET sluice let through) sluice may read a statement
 * differently from the server, and judges every statement unjudgeable (s->text_doubt). */
static void session_text_check(struct session *s)
{
    bool doubt = false;
    for (size_t at = 0; s->params && at + 5 <= s->params_len;) {
        uint32_t n = pg_get_u32(s->params + at + 1);
        if (n < 4 || at + 1 + n > s->params_len) break;
        const char *name = (const char *)s->params + at + 5;
        size_t left = n - 4;
        const char *nul = memchr(name, 0, left);
        const char *value = nul ? nul + 1 : NULL;
        if (value && memchr(value, 0, left - (size_t)(value - name))) {
            if (!strcmp(name, "standard_conforming_strings"))
                doubt = doubt || strcmp(value, "on") != 0;
            else if (!strcmp(name, "client_encoding"))
                doubt = doubt || sql_encoding_unsafe(value);
        }
        at += 1 + n;
    }
    if (doubt && !s->text_doubt)
        log_warn("session %llu: the server reads statement text otherwise than sluice does "
                 "(standard_conforming_strings or client_encoding): every statement is judged "
                 "unjudgeable",
                 (unsigned long long)s->id);
    s->text_doubt = doubt;
}

/* A ParameterStatus for a masked identity: its value is scanned like a result's (a query can
 * set application_name to any value it read: set_config('application_name', email, ...)).
 * true: the masked message went to the client in its place. */
static bool param_status_masked(struct session *s, const uint8_t *body, size_t len)
{
    if (!s->mask_base || !s->rt->mask) return false;
    const uint8_t *nul = memchr(body, 0, len);
    if (!nul || !memchr(nul + 1, 0, len - (size_t)(nul + 1 - body))) return false;
    const char *value = (const char *)nul + 1;
    char *masked = mask_string(s->rt->mask, value);
    bool same = strcmp(masked, value) == 0;
    if (!same) {
        struct buf *out = session_out_buf(&s->cl_out);
        size_t m = pg_msg_begin(out, 'S');
        buf_append_str(out, (const char *)body);
        buf_append_str(out, masked);
        pg_msg_end(out, m);
    }
    free(masked);
    return !same;
}

static void session_set_app_name(struct session *s, const char *app)
{
    char *masked = s->rt->mask ? mask_string(s->rt->mask, app) : NULL;
    snprintf(s->app_name, sizeof s->app_name, "%s", masked ? masked : app);
    free(masked);
}

static void side_watch(struct session *s, struct side *d, uint32_t ev)
{
    if (d->sk.fd < 0 || d->ev == ev) return;
    if (worker_watch(s->w, d->sk.fd, &d->h, d->ev, ev) == 0) d->ev = ev;
}

static void side_release_in(struct side *d)
{
    if (d->in && d->in->off == d->in->len && d->msg_left == 0) {
        buf_put(d->in);
        d->in = NULL;
        d->fwd = 0;
    }
}

/* Write as much of *slot as the socket takes, giving the buffer back once it is empty.
 * 0 all written, 1 some left, -1 broken. */
static int flush_buf(struct sock *sk, struct buf **slot)
{
    struct buf *b = *slot;
    if (!b) return 0;
    while (b->off < b->len) {
        ssize_t n = sock_write(sk, b->data + b->off, b->len - b->off);
        if (n == SOCK_AGAIN) return 1;
        if (n < 0) return -1;
        b->off += (size_t)n;
    }
    buf_put(b);
    *slot = NULL;
    return 0;
}

struct buf *session_out_buf(struct buf **slot)
{
    if (!*slot) *slot = buf_get();
    return *slot;
}

/* The final error is written: stop sending and drop whatever the client still sends until it
 * closes (or the S_CLOSING deadline passes). Closing a socket with unread input would reset
 * the connection, and the client could lose the error before reading it. */
static void closing_linger(struct session *s)
{
    if (s->cl.sk.ssl) SSL_shutdown(s->cl.sk.ssl);
    shutdown(s->cl.sk.fd, SHUT_WR);
    s->lingering = true;
    side_watch(s, &s->cl, EPOLLIN);
}

static void closing_drain(struct session *s)
{
    char sink[16384];
    for (int i = 0; i < 64; i++) {
        ssize_t n = read(s->cl.sk.fd, sink, sizeof sink);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        session_close(s, "closed after error");
        return;
    }
}

/* Queue a FATAL error for the client and close once it is written. */
static void session_fail(struct session *s, const char *sqlstate, const char *message,
                         const char *detail, const char *reason)
{
    log_info("session %llu: %s", (unsigned long long)s->id, reason);
    session_park_abandon(s, reason); /* the request's cancellation comes before session_end */
    if (s->audit_started) {          /* its reason, not the close's ("closed after error") */
        relay_audit_end(s);
        relay_audit_session(s, AUDIT_SESSION_END, reason);
        s->audit_started = false;
    }
    if (s->cl.sk.fd < 0) {
        session_close(s, reason);
        return;
    }
    pg_put_error(session_out_buf(&s->cl_out), "FATAL", sqlstate, message, detail, NULL);
    /* The upstream is of no further use. */
    if (s->sv.sk.fd >= 0) {
        side_watch(s, &s->sv, 0);
        sock_close(&s->sv.sk);
    }
    s->state = S_CLOSING;
    s->deadline_ms = clock_ms() + 5000;
    int r = flush_buf(&s->cl.sk, &s->cl_out);
    if (r < 0) {
        session_close(s, reason);
        return;
    }
    if (r == 0) {
        closing_linger(s);
        return;
    }
    side_watch(s, &s->cl, EPOLLOUT);
}

static bool client_out_flush(struct session *s)
{
    if (!s->cl_out || s->cl_out->len == s->cl_out->off) return true;
    int r = flush_buf(&s->cl.sk, &s->cl_out);
    if (r < 0) {
        session_close(s, "client write failed");
        return false;
    }
    return r == 0;
}

/* ---- accept and close -------------------------------------------------------------- */

void session_accept(struct worker *w, int fd, const struct sockaddr_storage *addr)
{
    struct runtime *rt = runtime_acquire();
    struct session *s = xcalloc(1, sizeof *s);
    s->w = w;
    s->id = atomic_fetch_add(&next_session_id, 1);
    s->rt = rt;
    s->addr = *addr;
    s->loopback = net_is_loopback(addr);
    net_addr_text(addr, s->addr_text, sizeof s->addr_text);
    s->cl = (struct side){.h = {EV_CLIENT, s}, .sk = {.fd = fd}};
    s->sv = (struct side){.h = {EV_SERVER, s}, .sk = {.fd = -1}};
    s->state = S_STARTUP;
    s->tx = 'I';
    s->deadline_ms = clock_ms() + (uint64_t)rt->cfg->server.auth_timeout * 1000;
    s->next = w->sessions;
    if (w->sessions) w->sessions->prev = s;
    w->sessions = s;
    w->n_sessions++;
    atomic_fetch_add_explicit(&w->load, 1, memory_order_relaxed);
    unsigned n = atomic_fetch_add(&proxy_n_clients, 1) + 1;
    log_debug("session %llu: accepted from %s", (unsigned long long)s->id, s->addr_text);
    if (n > rt->cfg->server.max_connections) {
        session_fail(s, "53300", "sorry, too many clients already", NULL,
                     "refused: server.max_connections reached");
        return;
    }
    side_watch(s, &s->cl, EPOLLIN);
}

static void session_close(struct session *s, const char *reason)
{
    if (s->state == S_DEAD) return;
    struct worker *w = s->w;
    log_info("session %llu: closed (%s) user=%s target=%s client=%s statements=%llu",
             (unsigned long long)s->id, reason, s->user ? s->user : "-",
             s->dbname ? s->dbname : "-", s->addr_text, (unsigned long long)s->statements);
    /* a backend a cancel was sent to may still get it: it does not go back to the pool */
    bool cancelled = s->cancel_registered && cancel_unregister(s->be_pid, s->our_key);
    upstream_lookup_abandon(s);
    session_park_abandon(s, reason);
    if (s->reg) {
        metrics_gauge_add(M_CONNECTIONS_CURRENT, s->ident->kind, 0, -1);
        registry_remove(s->reg);
        s->reg = NULL;
    }
    if (s->audit_started) {
        relay_audit_end(s);
        relay_audit_session(s, AUDIT_SESSION_END, reason);
        s->audit_started = false;
    }
    side_watch(s, &s->cl, 0);
    upstream_release(s, !cancelled);
    sock_close(&s->cl.sk);
    sock_close(&s->sv.sk);
    buf_put(s->cl.in);
    buf_put(s->sv.in);
    buf_put(s->cl_out);
    buf_put(s->sv_out);
    s->cl.in = s->sv.in = s->cl_out = s->sv_out = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    w->n_sessions--;
    atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
    atomic_fetch_sub(&proxy_n_clients, 1);
    /* Events for this session may still sit in the worker's current batch: the memory
     * stays until session_reap() runs after the batch. */
    s->state = S_DEAD;
    s->next = w->dead;
    w->dead = s;
}

/* What happens to the upstream connection when a session ends: reused if the client left
 * while it was idle outside a transaction, and no cancel was sent to it (reusable: one could
 * still land on the next session's query), else ended with a Terminate. */
static void upstream_release(struct session *s, bool reusable)
{
    if (s->sv.sk.fd < 0) return;
    bool idle = s->state == S_RELAY && s->pending_sync == 0 && s->tx == 'I' && !s->unsynced &&
                s->sv.msg_left == 0 && s->cl.msg_left == 0 && !s->sv.sk.want_write &&
                !(s->sv.in && s->sv.in->len > s->sv.in->off);
    if (idle && reusable && s->client_left && !s->drain && s->rt->cfg->server.pool_idle_timeout) {
        struct pooled *p = xcalloc(1, sizeof *p);
        p->sk = s->sv.sk;
        p->ev = s->sv.ev;
        p->rt = s->rt;
        atomic_fetch_add(&s->rt->refs, 1);
        p->target_idx = s->target_idx;
        struct buf *key = buf_get();
        upstream_put_startup(s, key);
        p->key = xmalloc(key->len);
        memcpy(p->key, key->data, key->len);
        p->key_len = key->len;
        buf_put(key);
        p->params = s->params;
        p->params_len = s->params_len;
        s->params = NULL;
        p->be_pid = s->be_pid;
        p->be_key = s->be_key;
        p->born_ms = s->sv_born_ms;
        p->epoch = s->sv_epoch;
        s->sv.sk.fd = -1;
        s->sv.sk.ssl = NULL;
        s->sv.ev = 0;
        pool_put(s->w, p);
        return;
    }
    if (idle) {
        struct buf *b = buf_get();
        pg_put_terminate(b);
        if (sock_write(&s->sv.sk, b->data, b->len) < 0) { /* closing anyway */
        }
        buf_put(b);
    }
    side_watch(s, &s->sv, 0);
}

void session_reap(struct worker *w)
{
    while (w->dead) {
        struct session *s = w->dead;
        w->dead = s->next;
        free(s->startup);
        free(s->params);
        while (s->blocked) {
            struct blocked *b = s->blocked;
            s->blocked = b->next;
            free(b);
        }
        while (s->limits) {
            struct limit_entry *l = s->limits;
            s->limits = l->next;
            limit_free(l);
        }
        prepared_free_all(s);
        free(s->scram_sv);
        free(s->scram_cl);
        free(s->up_addrs);
        relay_mask_end(s);
        relay_audit_end(s);
        session_ident_free(s->oidc_ident);
        free(s->gg_held);
        runtime_release(s->rt);
        free(s);
    }
}

void session_close_all(struct worker *w, const char *reason)
{
    while (w->sessions)
        session_close(w->sessions, reason);
}

/* ---- startup ----------------------------------------------------------------------- */

/* Read what the client has sent into cl.in. 1 got bytes, 0 nothing yet, -1 closed. */
static int client_read(struct session *s)
{
    if (!s->cl.in) s->cl.in = buf_get();
    buf_reserve(s->cl.in, 1024);
    ssize_t n = sock_read(&s->cl.sk, s->cl.in->data + s->cl.in->len, s->cl.in->cap - s->cl.in->len);
    if (n == SOCK_AGAIN) return 0;
    if (n <= 0) return -1;
    s->cl.in->len += (size_t)n;
    return 1;
}

/* Users log in with SCRAM-SHA-256; tokens (and later JWTs) as cleartext passwords. Unknown
 * names get SCRAM against a mock verifier, as PostgreSQL does, so that the method does not
 * tell which user names exist. */
static bool uses_scram(const struct session *s)
{
    if (!s->ident && s->rt->oidc) return false; /* the password carries an OIDC JWT */
    return !s->ident || !s->ident->is_token;
}

/* An identity from a verified OIDC token; the session owns it. The startup user must be the
 * token's name, so that logs and pg_stat_activity are not misleading. */
static bool session_login_oidc(struct session *s, const char *token)
{
    struct oidc_identity id;
    char why[256];
    if (!oidc_looks_like_jwt(token) ||
        oidc_verify(s->rt->oidc, token, (uint64_t)time(NULL), &id, why, sizeof why) < 0) {
        log_info("session %llu: OIDC token refused for user \"%s\": %s", (unsigned long long)s->id,
                 s->user, oidc_looks_like_jwt(token) ? why : "not a JWT");
        return false;
    }
    if (strcmp(id.name, s->user) != 0) {
        log_info("session %llu: OIDC token names \"%s\", not the user \"%s\"",
                 (unsigned long long)s->id, id.name, s->user);
        oidc_identity_free(&id);
        return false;
    }
    struct cfg_identity *ci = xcalloc(1, sizeof *ci);
    ci->name = xstrdup(id.name);
    ci->kind = id.kind;
    ci->groups = id.n_groups ? xcalloc(id.n_groups, sizeof(char *)) : NULL;
    for (unsigned g = 0; g < id.n_groups; g++)
        ci->groups[ci->n_groups++] = xstrdup(id.groups[g]);
    ci->is_token = true;
    const struct cfg_oidc *oc = &s->rt->cfg->oidc;
    if (oc->end_sessions_at_expiry) {
        uint64_t now_s = (uint64_t)time(NULL), end_s = id.exp + oc->leeway;
        s->expires_ms = clock_ms() + (end_s > now_s ? (end_s - now_s) * 1000 : 0);
    }
    oidc_identity_free(&id);
    s->oidc_ident = ci;
    s->ident = ci;
    return true;
}

static void session_ident_free(struct cfg_identity *ci)
{
    if (!ci) return;
    free(ci->name);
    for (unsigned g = 0; g < ci->n_groups; g++)
        free(ci->groups[g]);
    free(ci->groups);
    free(ci);
}

/* While the address's failed logins are delayed (ident.h), a login is refused without being
 * checked, nor counted as a failure: true when it was. */
static bool login_throttled(struct session *s)
{
    unsigned blocked = ident_blocked_ms(&s->addr);
    if (blocked == 0) return false;
    log_info("session %llu: login for user \"%s\" from %s refused unchecked: too many failed "
             "logins from this address",
             (unsigned long long)s->id, s->user, s->addr_text);
    relay_audit_session(s, AUDIT_AUTH_FAILURE, "too many failed logins from this address");
    auth_delay(s, blocked);
    return true;
}

/* identities.certs: the TLS handshake verified the client's certificate against
 * tls.client_ca, and its subject CN and subjectAltName must be the identity's (each when the
 * identity names one); no secret is asked for, as with PostgreSQL's cert method. Failures
 * count towards the address's login throttle. */
static void session_login_cert(struct session *s)
{
    if (login_throttled(s)) return;
    char cn[80];
    const struct cfg_identity *id = s->ident;
    if (!s->tls_client) {
        auth_failed(s, "no TLS client certificate");
        return;
    }
    if (id->cert_cn &&
        (tls_peer_cn(&s->cl.sk, cn, sizeof cn) != 0 || strcmp(cn, id->cert_cn) != 0)) {
        auth_failed(s, "the client certificate's CN is not the identity's");
        return;
    }
    if (id->cert_san && !tls_peer_has_san(&s->cl.sk, id->san_type, id->cert_san)) {
        auth_failed(s, "the client certificate lacks the identity's subjectAltName");
        return;
    }
    if (!id->cert_cn && !id->cert_san) { /* the config never makes one: never any certificate */
        auth_failed(s, "the identity names no CN or subjectAltName");
        return;
    }
    auth_succeeded(s);
}

/* Over TLS, SCRAM-SHA-256-PLUS is offered first (as PostgreSQL does) when sluice's certificate
 * gives binding data; cbind (SCRAM_MAX_CBIND bytes) receives it. Its length, or 0. */
static size_t channel_binding(struct session *s, unsigned char *cbind)
{
    int n = s->tls_client ? tls_server_end_point(&s->cl.sk, cbind, SCRAM_MAX_CBIND) : -1;
    return n > 0 ? (size_t)n : 0;
}

static void send_auth_request(struct session *s)
{
    bool scram = uses_scram(s);
    unsigned char cbind[SCRAM_MAX_CBIND];
    if (scram && channel_binding(s, cbind)) {
        static const char mechs[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
        pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_SASL, mechs, sizeof mechs);
    } else if (scram) {
        static const char mechs[] = "SCRAM-SHA-256\0";
        pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_SASL, mechs, sizeof mechs);
    } else {
        if (s->rt->cfg->tls.require && !s->tls_client && !s->loopback) {
            session_fail(s, "28000", "sluice: TLS is required to send a password from this address",
                         "Connect with sslmode=require or stronger.",
                         "refused: cleartext password without TLS");
            return;
        }
        pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_CLEARTEXT, NULL, 0);
    }
    s->state = S_AUTH;
    if (!client_out_flush(s)) return;
    relay_update_interest(s);
}

static void handle_startup_packet(struct session *s, const struct pg_startup *st)
{
    struct buf *in = s->cl.in;
    uint32_t major = st->code >> 16, minor = st->code & 0xffff;
    if (major != 3) {
        char msg[128];
        snprintf(msg, sizeof msg, "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                 major, minor);
        session_fail(s, "0A000", msg, NULL, "refused: unsupported protocol version");
        return;
    }
    /* Keep a copy: the parameters go upstream after authentication. */
    s->startup = xmalloc(st->len);
    memcpy(s->startup, in->data + in->off, st->len);
    in->off += st->len;
    struct pg_startup copy;
    if (pg_startup_parse(s->startup, st->len, &copy) != PG_OK) {
        session_close(s, "invalid startup packet");
        return;
    }
    const char *unsupported[PG_MAX_PARAMS];
    unsigned n_unsupported = 0;
    for (unsigned i = 0; i < copy.n_params; i++)
        if (strncmp(copy.keys[i], "_pq_.", 5) == 0) unsupported[n_unsupported++] = copy.keys[i];
    if (minor > 0 || n_unsupported)
        pg_put_negotiate_version(session_out_buf(&s->cl_out), PG_PROTO_V3, unsupported,
                                 n_unsupported);
    /* PostgreSQL takes the last of a repeated parameter, sluice's checks the first: a packet
     * naming one twice (replication=false, replication=database) is refused, as libpq never
     * sends one. */
    for (unsigned i = 0; i < copy.n_params; i++)
        for (unsigned j = 0; j < i; j++)
            if (strcmp(copy.keys[i], copy.keys[j]) == 0) {
                session_fail(s, "08P01", "sluice: a startup parameter is given twice", NULL,
                             "refused: repeated startup parameter");
                return;
            }
    s->user = pg_startup_get(&copy, "user");
    s->dbname = pg_startup_get(&copy, "database");
    if (!s->user || !*s->user) {
        s->user = NULL;
        session_fail(s, "28000", "no PostgreSQL user name specified in startup packet", NULL,
                     "refused: startup without user");
        return;
    }
    if (!s->dbname || !*s->dbname) s->dbname = s->user;
    const char *app = pg_startup_get(&copy, "application_name");
    if (app) session_set_app_name(s, app);
    const char *repl = pg_startup_get(&copy, "replication");
    if (repl && strcmp(repl, "false") != 0 && strcmp(repl, "0") != 0 && strcmp(repl, "off") != 0 &&
        strcmp(repl, "no") != 0) {
        session_fail(s, "0A000", "sluice: replication connections are not supported", NULL,
                     "refused: replication connection");
        return;
    }
    s->ident = config_find_identity(s->rt->cfg, s->user);
    if (s->ident && s->ident->is_cert) {
        session_login_cert(s);
        return;
    }
    send_auth_request(s);
}

static void on_startup(struct session *s)
{
    for (;;) {
        struct buf *in = s->cl.in;
        struct pg_startup st;
        int r = in ? pg_startup_parse(in->data + in->off, in->len - in->off, &st) : PG_NEED_MORE;
        if (r == PG_BAD && st.bad) {
            session_fail(s, "08P01", st.bad, NULL, "refused: invalid startup packet");
            return;
        }
        if (r == PG_BAD) {
            session_close(s, "invalid startup packet");
            return;
        }
        if (r == PG_NEED_MORE) {
            int rr = client_read(s);
            if (rr < 0) {
                session_close(s, "client closed during startup");
                return;
            }
            if (rr == 0) return;
            continue;
        }
        if (st.code == PG_CANCEL_REQUEST) {
            cancel_forward(st.cancel_pid, st.cancel_key, s->cl.sk.fd);
            session_close(s, "cancel request handled");
            return;
        }
        /* One SSLRequest and one GSSENCRequest at most, in either order, and neither inside
         * TLS: as in PostgreSQL, a request repeated is an unsupported protocol version
         * (1234.5679) and refused by handle_startup_packet. */
        bool ssl = st.code == PG_SSL_REQUEST, gss = st.code == PG_GSSENC_REQUEST;
        if ((ssl && !s->ssl_asked && !s->tls_client) || (gss && !s->gss_asked && !s->tls_client)) {
            s->ssl_asked |= ssl;
            s->gss_asked |= gss;
            in->off += st.len;
            if (in->off != in->len) {
                /* Bytes after the request before our answer: possible injection. */
                session_close(s, "unexpected data after SSLRequest");
                return;
            }
            bool tls = ssl && s->rt->server_tls;
            char answer = tls ? 'S' : 'N';
            if (sock_write(&s->cl.sk, &answer, 1) != 1) {
                session_close(s, "client write failed");
                return;
            }
            if (tls) {
                if (tls_attach(&s->cl.sk, s->rt->server_tls, true, NULL) < 0) {
                    session_close(s, "TLS setup failed");
                    return;
                }
                s->tls_client = true;
                s->state = S_TLS_ACCEPT;
                buf_put(s->cl.in);
                s->cl.in = NULL;
                return;
            }
            continue;
        }
        handle_startup_packet(s, &st);
        return;
    }
}

static void on_tls_accept(struct session *s)
{
    char err[256];
    int r = tls_handshake(&s->cl.sk, true, err, sizeof err);
    if (r < 0) {
        log_info("session %llu: client TLS handshake failed from %s: %s", (unsigned long long)s->id,
                 s->addr_text, err);
        session_close(s, "client TLS handshake failed");
        return;
    }
    if (r == 0) {
        side_watch(s, &s->cl, s->cl.sk.want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    s->state = S_STARTUP;
    side_watch(s, &s->cl, EPOLLIN);
    on_startup(s);
}

/* ---- client authentication --------------------------------------------------------- */

static void upstream_start(struct session *s);

static void auth_failed(struct session *s, const char *why)
{
    log_info("session %llu: authentication failed for user \"%s\" from %s: %s",
             (unsigned long long)s->id, s->user, s->addr_text, why);
    ident_record_failure(&s->addr, s->user);
    metrics_inc(M_AUTH_FAILURES, 0, 0);
    relay_audit_session(s, AUDIT_AUTH_FAILURE, why);
    auth_delay(s, ident_fail_delay_ms(&s->addr));
}

/* Answer the failed login after delay ms (S_AUTH_DELAY), reading nothing more meanwhile. */
static void auth_delay(struct session *s, unsigned delay)
{
    free(s->scram_sv);
    s->scram_sv = NULL;
    s->state = S_AUTH_DELAY;
    s->deadline_ms = clock_ms() + delay;
    side_watch(s, &s->cl, 0);
    if (delay == 0) session_on_tick(s, s->deadline_ms);
}

/* Is name (as in a startup parameter or a -c option) role or session_authorization? GUC
 * names compare in any case; in --name=value, dashes stand for underscores. */
static bool role_setting(const char *name, size_t len)
{
    static const char *const names[] = {"role", "session_authorization", NULL};
    for (const char *const *n = names; *n; n++) {
        size_t i = 0;
        for (; i < len && (*n)[i]; i++) {
            char c = (char)tolower((unsigned char)name[i]);
            if ((c == '-' ? '_' : c) != (*n)[i]) break;
        }
        if (i == len && !(*n)[i]) return true;
    }
    return false;
}

/* Does one backend command-line option set the role? PostgreSQL reads `options` with getopt
 * over "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:": flags group (`-ec role=x` is -e then
 * -c role=x), and a flag that takes a value takes the rest of its token, or the next token.
 * *pending: the flag whose value is the next token (0: none). */
static bool option_sets_role(const char *tok, char *pending)
{
    static const char with_value[] = "BcCDdfhkNprStvW-";
    if (*pending) {
        char f = *pending;
        *pending = 0;
        const char *eq = strchr(tok, '=');
        return (f == 'c' || f == '-') && eq && role_setting(tok, (size_t)(eq - tok));
    }
    if (tok[0] != '-') return false; /* (a stray word: the server refuses the login) */
    for (const char *p = tok + 1; *p; p++) {
        if (!strchr(with_value, *p)) continue; /* a flag alone */
        const char *value = p + 1;
        if (!*value) {
            *pending = *p;
            return false;
        }
        const char *eq = strchr(value, '=');
        return (*p == 'c' || *p == '-') && eq && role_setting(value, (size_t)(eq - value));
    }
    return false;
}

/* Do the client's startup parameters set the role: `role` or `session_authorization`
 * themselves, or through `options` (split on white space, with backslash escapes, as the
 * server does)? */
static bool startup_sets_role(const struct session *s)
{
    struct pg_startup st;
    uint32_t len = s->startup ? pg_get_u32(s->startup) : 0;
    if (!s->startup || pg_startup_parse(s->startup, len, &st) != PG_OK) return false;
    for (unsigned i = 0; i < st.n_params; i++) {
        if (role_setting(st.keys[i], strlen(st.keys[i]))) return true;
        if (strcmp(st.keys[i], "options") != 0) continue;
        char tok[4096], pending = 0; /* (a longer option is refused whole, below) */
        for (const char *p = st.vals[i]; *p;) {
            while (*p && isspace((unsigned char)*p))
                p++;
            size_t n = 0;
            for (; *p && !isspace((unsigned char)*p); p++) {
                if (*p == '\\' && p[1]) p++;
                if (n + 1 == sizeof tok) return true; /* too long to read: taken as one */
                tok[n++] = *p;
            }
            tok[n] = '\0';
            if (!n) break;
            if (option_sets_role(tok, &pending)) return true;
        }
    }
    return false;
}

static void auth_succeeded(struct session *s)
{
    ident_record_success(&s->addr, s->user);
    free(s->scram_sv);
    s->scram_sv = NULL;
    s->target = config_find_target(s->rt->cfg, s->dbname);
    /* the session starts here for the audit: what becomes of it (an unknown target, an
     * upstream that cannot be reached) is its session_end */
    if (!s->audit_started && relay_audit_on(s)) {
        relay_audit_session(s, AUDIT_SESSION_START, NULL);
        s->audit_started = true;
    }
    /* Authentication is over: AuthenticationOk comes first, as PostgreSQL sends it before
     * it looks at the database and the role (an unknown database is a FATAL after it). */
    pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_OK, NULL, 0);
    if (!s->target) {
        char msg[300];
        snprintf(msg, sizeof msg, "database \"%.200s\" does not exist", s->dbname);
        session_fail(s, "3D000", msg, "sluice: dbname names a target of the sluice configuration.",
                     "refused: unknown target");
        return;
    }
    s->target_idx = (unsigned)(s->target - s->rt->cfg->targets);
    if (startup_sets_role(s) &&
        s->rt->cfg->guardrails.action[CFG_GUARD_ROLE_ESCALATION][s->ident->kind] != CFG_ALLOW) {
        session_fail(s, "42501",
                     "sluice: blocked by rule \"role_escalation\": the startup parameters set "
                     "role or session_authorization",
                     NULL, "refused: startup parameters change the role");
        return;
    }
    log_info("session %llu: user \"%s\" (%s) authenticated from %s for target \"%s\"",
             (unsigned long long)s->id, s->user, ident_kind_name(s->ident->kind), s->addr_text,
             s->target->name);
    relay_mask_start(s);
    if (!upstream_reuse(s)) upstream_start(s);
}

static void on_auth_message(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    if (type != 'p') {
        session_fail(s, "08P01", "expected password response", NULL,
                     "protocol violation during authentication");
        return;
    }
    if (login_throttled(s)) return;
    bool scram = uses_scram(s);
    if (!scram) {
        const char *secret;
        if (pg_body_cstring(body, len, &secret) != PG_OK) {
            session_fail(s, "08P01", "invalid password packet", NULL, "malformed password");
            return;
        }
        if (!s->ident && s->rt->oidc) {
            if (session_login_oidc(s, secret))
                auth_succeeded(s);
            else
                auth_failed(s, "OIDC token refused");
        } else if (ident_check_secret(s->ident, s->user, secret, strlen(secret)))
            auth_succeeded(s);
        else
            auth_failed(s, s->ident ? "wrong secret" : "unknown identity");
        return;
    }
    char out[512];
    size_t outlen = 0;
    if (s->sasl_step == 0) {
        const char *mech;
        const uint8_t *data;
        int32_t dlen;
        if (pg_sasl_initial_parse(body, len, &mech, &data, &dlen) != PG_OK || dlen < 0) {
            session_fail(s, "08P01", "malformed SASL message", NULL, "malformed SASL initial");
            return;
        }
        unsigned char cbind[SCRAM_MAX_CBIND];
        size_t cblen = channel_binding(s, cbind);
        bool plus = cblen && strcmp(mech, "SCRAM-SHA-256-PLUS") == 0;
        if (!plus && strcmp(mech, "SCRAM-SHA-256") != 0) {
            session_fail(s, "28000", "client selected an invalid SASL authentication mechanism",
                         NULL, "unsupported SASL mechanism");
            return;
        }
        struct scram_verifier v;
        if (!s->ident) {
            scram_verifier_mock(s->user, &v); /* fails at the proof, like a wrong password */
        } else if (scram_verifier_parse(s->ident->secret_hash, &v) != 0) {
            auth_failed(s, "unusable verifier");
            return;
        }
        s->scram_sv = xcalloc(1, sizeof *s->scram_sv);
        if (cblen) scram_server_set_binding(s->scram_sv, plus, cbind, cblen);
        if (scram_server_start(s->scram_sv, &v, (const char *)data, (size_t)dlen, out, sizeof out,
                               &outlen) != 0) {
            session_fail(s, "08P01", "malformed SCRAM message", NULL, "malformed SCRAM first");
            return;
        }
        s->sasl_step = 1;
        pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_SASL_CONTINUE, out, outlen);
        client_out_flush(s);
        return;
    }
    int r = scram_server_finish(s->scram_sv, (const char *)body, len, out, sizeof out, &outlen);
    if (r == -1) {
        session_fail(s, "08P01", "malformed SCRAM message", NULL, "malformed SCRAM final");
        return;
    }
    if (r != 0) {
        auth_failed(s, s->ident ? "wrong secret" : "unknown identity");
        return;
    }
    pg_put_auth(session_out_buf(&s->cl_out), PG_AUTH_SASL_FINAL, out, outlen);
    auth_succeeded(s);
}

static void on_auth(struct session *s)
{
    for (;;) {
        struct buf *in = s->cl.in;
        struct pg_hdr h;
        int r = in ? pg_hdr_parse(in->data + in->off, in->len - in->off, 65536, &h) : PG_NEED_MORE;
        if (r == PG_BAD) {
            session_fail(s, "08P01", "invalid message length", NULL, "bad auth message length");
            return;
        }
        if (r == PG_OK && in->len - in->off >= 1 + (size_t)h.len) {
            const uint8_t *body = in->data + in->off + 5;
            in->off += 1 + h.len;
            enum sess_state before = s->state;
            on_auth_message(s, h.type, body, h.len - 4);
            if (s->state != before) return;
            continue;
        }
        int rr = client_read(s);
        if (rr < 0) {
            session_close(s, "client closed during authentication");
            return;
        }
        if (rr == 0) return;
    }
}

/* ---- upstream login ---------------------------------------------------------------- */

static void upstream_fail(struct session *s, const char *detail, const char *reason)
{
    char msg[300];
    snprintf(msg, sizeof msg, "sluice: cannot connect to target \"%s\"", s->target->name);
    log_warn("session %llu: target \"%s\": %s", (unsigned long long)s->id, s->target->name, detail);
    session_fail(s, "08006", msg, detail, reason);
}

/* The StartupMessage sluice sends upstream: the target's user and database, then every
 * parameter the client sent but its user, database and protocol options. It is also the key
 * under which an idle upstream connection is reused. */
static void upstream_put_startup(struct session *s, struct buf *b)
{
    struct pg_startup st;
    pg_startup_parse(s->startup, pg_get_u32(s->startup), &st);
    const char *keys[PG_MAX_PARAMS + 2], *vals[PG_MAX_PARAMS + 2];
    unsigned n = 0;
    keys[n] = "user";
    vals[n++] = s->target->user;
    keys[n] = "database";
    vals[n++] = s->target->database;
    for (unsigned i = 0; i < st.n_params; i++) {
        if (strcmp(st.keys[i], "user") == 0 || strcmp(st.keys[i], "database") == 0 ||
            strncmp(st.keys[i], "_pq_.", 5) == 0)
            continue;
        keys[n] = st.keys[i];
        vals[n++] = st.vals[i];
    }
    pg_put_startup(b, keys, vals, n);
}

static void upstream_send_startup(struct session *s)
{
    upstream_put_startup(s, session_out_buf(&s->sv_out));
    s->state = S_UP_LOGIN;
    login_continue(s);
}

/* Connect upstream to the target's address s->up_try or, failing that, the next ones (as
 * libpq tries each address of a host name, resolved once per connect in upstream_start);
 * last_err is the previous address's failure, reported when none is left. */
static void upstream_connect_from(struct session *s, const char *last_err)
{
    char err[256];
    snprintf(err, sizeof err, "%s", last_err);
    int fd = -1;
    while (fd < 0 && s->up_try < s->up_n) {
        const struct net_addr *a = &s->up_addrs[s->up_try];
        fd = net_connect_addr(&a->addr, a->len, err, sizeof err);
        if (fd < 0) s->up_try++;
    }
    if (fd < 0) {
        upstream_fail(s, err, "upstream connect failed");
        return;
    }
    s->sv.sk.fd = fd;
    s->state = S_UP_CONNECT;
    s->deadline_ms = clock_ms() + (uint64_t)s->rt->cfg->server.connect_timeout * 1000;
    side_watch(s, &s->cl, 0); /* nothing is read from the client until the relay starts */
    side_watch(s, &s->sv, EPOLLOUT);
}

/* Stop waiting for the target's host name: the lookup is freed when it comes back. */
static void upstream_lookup_abandon(struct session *s)
{
    if (!s->lookup) return;
    atomic_store(&s->lookup->cancelled, true);
    s->lookup->waiter = NULL;
    s->lookup = NULL;
}

/* Resolve the target (a host name on a resolver thread, S_UP_RESOLVE; an IP literal or a
 * unix socket here), then connect. */
static void upstream_start(struct session *s)
{
    char err[256] = "no address";
    s->sv_epoch = pool_epoch(); /* before the login reads the role's defaults */
    s->sv_born_ms = clock_ms();
    free(s->up_addrs);
    s->up_addrs = NULL;
    s->up_try = s->up_n = 0;
    const char *host = s->target->host;
    if (net_host_needs_lookup(host)) {
        struct net_lookup *l = net_lookup_new(host, s->target->port);
        if (!l) {
            upstream_fail(s, "out of memory", "upstream connect failed");
            return;
        }
        l->waiter = s;
        if (worker_lookup(s->w, l)) {
            s->lookup = l;
            s->state = S_UP_RESOLVE;
            s->deadline_ms = clock_ms() + (uint64_t)s->rt->cfg->server.connect_timeout * 1000;
            side_watch(s, &s->cl, 0); /* nothing is read from the client until the relay starts */
            return;
        }
        net_lookup_free(l); /* no resolver thread (it did not start): resolve here */
    }
    int n = net_resolve(host, s->target->port, &s->up_addrs, err, sizeof err);
    if (n < 0) {
        upstream_fail(s, err, "upstream connect failed");
        return;
    }
    s->up_n = (unsigned)n;
    upstream_connect_from(s, err);
}

void session_on_resolved(struct session *s, struct net_lookup *l)
{
    if (s->lookup == l) s->lookup = NULL;
    if (s->state != S_UP_RESOLVE) { /* it is failing (a drain, say) and no longer waits */
        net_lookup_free(l);
        return;
    }
    if (l->n < 0) {
        upstream_fail(s, l->err, "upstream connect failed");
    } else {
        s->up_addrs = l->addrs;
        s->up_n = (unsigned)l->n;
        l->addrs = NULL;
        upstream_connect_from(s, "no address");
    }
    net_lookup_free(l);
}

/* The connect to the current address failed (why): drop it and try the next one. */
static void upstream_connect_next(struct session *s, const char *why)
{
    side_watch(s, &s->sv, 0);
    sock_close(&s->sv.sk);
    s->up_try++;
    upstream_connect_from(s, why); /* which copies why before anything else runs */
}

static void on_up_connect(struct session *s)
{
    if (net_connect_result(s->sv.sk.fd) < 0) {
        upstream_connect_next(s, strerror(errno));
        return;
    }
    free(s->up_addrs); /* connected: the other addresses are not needed */
    s->up_addrs = NULL;
    s->up_n = 0;
    if (s->target->sslmode == SSLMODE_DISABLE || s->target->sslmode == SSLMODE_ALLOW ||
        s->target->host[0] == '/') {
        upstream_send_startup(s);
        return;
    }
    pg_put_ssl_request(session_out_buf(&s->sv_out));
    s->state = S_UP_SSLREQ;
    login_continue(s);
}

static void on_up_sslreq(struct session *s)
{
    char answer;
    ssize_t n = sock_read(&s->sv.sk, &answer, 1);
    if (n == SOCK_AGAIN) return;
    if (n != 1) {
        upstream_fail(s, "connection closed during TLS negotiation", "upstream closed");
        return;
    }
    if (answer == 'S') {
        if (tls_attach(&s->sv.sk, s->rt->target_tls[s->target_idx], false, s->target) < 0) {
            upstream_fail(s, "TLS setup failed", "upstream TLS setup failed");
            return;
        }
        s->state = S_UP_TLS;
        login_continue(s);
        return;
    }
    if (answer == 'N' && s->target->sslmode < SSLMODE_REQUIRE) {
        upstream_send_startup(s);
        return;
    }
    upstream_fail(s,
                  answer == 'N' ? "the server does not support TLS (sslmode requires it)"
                                : "unexpected answer to SSLRequest",
                  "upstream TLS refused");
}

static void on_up_tls(struct session *s)
{
    char err[256];
    int r = tls_handshake(&s->sv.sk, false, err, sizeof err);
    if (r < 0) {
        upstream_fail(s, err, "upstream TLS handshake failed");
        return;
    }
    if (r == 0) {
        side_watch(s, &s->sv, s->sv.sk.want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    upstream_send_startup(s);
}

static bool mech_offered(const uint8_t *data, size_t len, const char *mech)
{
    size_t i = 0;
    while (i < len && data[i]) {
        const char *m = (const char *)data + i;
        size_t l = strnlen(m, len - i);
        if (l == len - i) return false;
        if (strcmp(m, mech) == 0) return true;
        i += l + 1;
    }
    return false;
}

/* The SCRAM mechanism to log in upstream with, from the server's list, with s->scram_cl's
 * channel binding set per the target's channel_binding, as libpq does. prefer (the default):
 * over TLS, SCRAM-SHA-256-PLUS bound to the target's certificate when offered (a man in the
 * middle holding another certificate cannot relay the exchange), else SCRAM-SHA-256 saying
 * the client could bind; without TLS, plain SCRAM-SHA-256. require: -PLUS or nothing.
 * disable: plain SCRAM-SHA-256. NULL with *why: the login cannot go on. */
static const char *upstream_scram_mech(struct session *s, const uint8_t *data, size_t dlen,
                                       const char **why)
{
    enum channel_binding cb_mode = s->target->channel_binding;
    bool tls = s->sv.sk.ssl != NULL && cb_mode != CHANNEL_BINDING_DISABLE;
    *why = "the server offers no SCRAM-SHA-256 mechanism sluice knows";
    if (tls && mech_offered(data, dlen, "SCRAM-SHA-256-PLUS")) {
        unsigned char cb[SCRAM_MAX_CBIND];
        int n = tls_server_end_point(&s->sv.sk, cb, sizeof cb);
        if (n > 0 && scram_client_set_binding(s->scram_cl, cb, (size_t)n) == 0)
            return "SCRAM-SHA-256-PLUS";
        /* A certificate with no digest to bind to (Ed25519, RSA-PSS): not plain SCRAM, which
         * a man in the middle holding such a certificate would relay; libpq fails too. */
        *why = "channel binding: the server's certificate names no digest to bind to (set the "
               "target's channel_binding: disable to log in without it)";
        return NULL;
    }
    if (cb_mode == CHANNEL_BINDING_REQUIRE) {
        *why = "channel binding is required, but the server does not offer SCRAM-SHA-256-PLUS";
        return NULL;
    }
    if (!mech_offered(data, dlen, "SCRAM-SHA-256")) return NULL;
    if (tls) (void)scram_client_set_binding(s->scram_cl, NULL, 0);
    return "SCRAM-SHA-256";
}

/* One message from the upstream during login. Returns false when the session ended. */
static bool on_login_message(struct session *s, uint8_t type, const uint8_t *msg, size_t total)
{
    const uint8_t *body = msg + 5;
    size_t len = total - 5;
    const struct cfg_target *t = s->target;
    switch (type) {
    case 'R': {
        uint32_t code;
        const uint8_t *data;
        size_t dlen;
        if (pg_auth_parse(body, len, &code, &data, &dlen) != PG_OK) break;
        bool sasl =
            code == PG_AUTH_SASL || code == PG_AUTH_SASL_CONTINUE || code == PG_AUTH_SASL_FINAL;
        /* A SCRAM exchange, once started, is finished (its server signature checked) before
         * anything else: a man in the middle cannot skip to AuthenticationOk or ask for the
         * password instead. */
        if (s->scram_cl && !sasl) {
            upstream_fail(s, "the server left its SCRAM exchange unfinished",
                          "upstream SCRAM exchange unfinished");
            return false;
        }
        if (t->channel_binding == CHANNEL_BINDING_REQUIRE && !s->upstream_bound && !sasl) {
            upstream_fail(s,
                          "channel binding is required, but the server authenticates "
                          "without it",
                          "upstream channel binding not used");
            return false;
        }
        if (code == PG_AUTH_OK) return true;
        if (!t->password && code != PG_AUTH_SASL_FINAL) {
            upstream_fail(s, "the server asks for a password but the target has none configured",
                          "upstream needs a password");
            return false;
        }
        if (code == PG_AUTH_CLEARTEXT) {
            pg_put_password(session_out_buf(&s->sv_out), t->password);
            return true;
        }
        if (code == PG_AUTH_MD5 && dlen == 4) {
            char resp[36];
            pg_md5_response(t->user, t->password, data, resp);
            pg_put_password(session_out_buf(&s->sv_out), resp);
            return true;
        }
        char out[1024];
        size_t outlen;
        if (code == PG_AUTH_SASL) {
            if (s->scram_cl) break; /* a second start */
            s->scram_cl = xcalloc(1, sizeof *s->scram_cl);
            const char *why;
            const char *mech = upstream_scram_mech(s, data, dlen, &why);
            if (!mech) {
                upstream_fail(s, why, "upstream SCRAM mechanism refused");
                return false;
            }
            if (scram_client_start(s->scram_cl, out, sizeof out, &outlen) != 0) break;
            pg_put_sasl_initial(session_out_buf(&s->sv_out), mech, out, outlen);
            return true;
        }
        if (code == PG_AUTH_SASL_CONTINUE && s->scram_cl) {
            if (scram_client_continue(s->scram_cl, t->password, (const char *)data, dlen, out,
                                      sizeof out, &outlen) != 0)
                break;
            pg_put_sasl_response(session_out_buf(&s->sv_out), out, outlen);
            return true;
        }
        if (code == PG_AUTH_SASL_FINAL && s->scram_cl) {
            if (scram_client_finish(s->scram_cl, (const char *)data, dlen) != 0) {
                upstream_fail(s, "the server's SCRAM signature did not verify",
                              "upstream SCRAM signature mismatch");
                return false;
            }
            s->upstream_bound = s->scram_cl->cbind_flag == 'p'; /* bound, and finished */
            free(s->scram_cl);
            s->scram_cl = NULL;
            return true;
        }
        char detail[96];
        snprintf(detail, sizeof detail, "unsupported upstream authentication request %u", code);
        upstream_fail(s, detail, "upstream auth method unsupported");
        return false;
    }
    case 'K':
        if (pg_backend_key_parse(body, len, &s->be_pid, &s->be_key) != PG_OK) break;
        session_put_backend_key(s);
        return true;
    case 'S':
        pool_params_update(&s->params, &s->params_len, msg, total);
        session_text_check(s);
        if (!param_status_masked(s, body, len)) buf_append(session_out_buf(&s->cl_out), msg, total);
        return true;
    case 'N':
        buf_append(session_out_buf(&s->cl_out), msg, total);
        return true;
    case 'E': {
        struct pg_error_view e;
        if (pg_error_parse(body, len, &e) != PG_OK) break;
        log_warn("session %llu: target \"%s\" refused login: %s %s", (unsigned long long)s->id,
                 t->name, e.sqlstate, e.message);
        if (strncmp(e.sqlstate, "28", 2) == 0) {
            upstream_fail(s, "the target refused sluice's credentials", "upstream auth failed");
            return false;
        }
        /* Other login errors (no such database, too many connections, shutting down) are
         * the server's own words: pass them on. */
        buf_append(session_out_buf(&s->cl_out), msg, total);
        side_watch(s, &s->sv, 0);
        sock_close(&s->sv.sk);
        s->state = S_CLOSING;
        s->deadline_ms = clock_ms() + 5000;
        if (client_out_flush(s))
            session_close(s, "upstream refused login");
        else
            side_watch(s, &s->cl, EPOLLOUT);
        return false;
    }
    case 'Z':
        if (len != 1) break;
        buf_append(session_out_buf(&s->cl_out), msg, total);
        s->tx = body[0];
        s->state = S_RELAY;
        s->deadline_ms = 0;
        log_debug("session %llu: relaying to backend pid %u", (unsigned long long)s->id, s->be_pid);
        return true;
    case 'v':
        return true; /* we ask for 3.0 without options: nothing to negotiate */
    default:
        break;
    }
    upstream_fail(s, "protocol violation by the server during login", "upstream protocol error");
    return false;
}

static void relay_start(struct session *s);

/* Give the client the backend's real pid with a key of sluice's own, registered so that a
 * CancelRequest with it reaches the backend. */
static void session_put_backend_key(struct session *s)
{
    for (int i = 0; i < 8 && !s->cancel_registered; i++) {
        if (getrandom(&s->our_key, sizeof s->our_key, 0) != sizeof s->our_key) continue;
        s->cancel_registered =
            cancel_register(s->be_pid, s->our_key, s->be_key, s->sv.sk.fd, s->id) == 0;
    }
    pg_put_backend_key(session_out_buf(&s->cl_out), s->be_pid, s->our_key);
}

/* Reuse an idle upstream connection of the same target and startup parameters, if the
 * worker's pool has one: the client sees the same messages as after a fresh login. */
static bool upstream_reuse(struct session *s)
{
    if (!s->w->pool) return false;
    struct buf *key = buf_get();
    upstream_put_startup(s, key);
    struct pooled *p = pool_take(s->w, s->rt, s->target_idx, key->data, key->len);
    buf_put(key);
    if (!p) return false;
    s->sv.sk = p->sk;
    if (worker_watch(s->w, s->sv.sk.fd, &s->sv.h, p->ev, EPOLLIN) < 0) {
        sock_close(&s->sv.sk);
        pool_release(p);
        return false;
    }
    s->sv.ev = EPOLLIN;
    s->be_pid = p->be_pid;
    s->be_key = p->be_key;
    s->sv_born_ms = p->born_ms;
    s->sv_epoch = p->epoch;
    s->params = p->params;
    s->params_len = p->params_len;
    p->params = NULL;
    session_text_check(s);
    pool_release(p);
    log_debug("session %llu: reusing upstream backend pid %u", (unsigned long long)s->id,
              s->be_pid);
    /* the login's ParameterStatus run, masked for a masked identity as on a fresh login */
    for (size_t at = 0; s->params && at + 5 <= s->params_len;) {
        size_t total = 1 + pg_get_u32(s->params + at + 1);
        if (!param_status_masked(s, s->params + at + 5, total - 5))
            buf_append(session_out_buf(&s->cl_out), s->params + at, total);
        at += total;
    }
    session_put_backend_key(s);
    pg_put_ready(session_out_buf(&s->cl_out), 'I');
    s->tx = 'I';
    s->state = S_RELAY;
    s->deadline_ms = 0;
    side_watch(s, &s->cl, 0);
    relay_start(s);
    return true;
}

/* Drive the login: flush what we owe the server, then read and handle its messages. */
static void login_continue(struct session *s)
{
    for (;;) {
        if (s->sv_out && s->sv_out->off < s->sv_out->len) {
            int r = flush_buf(&s->sv.sk, &s->sv_out);
            if (r < 0) {
                upstream_fail(s, "connection lost", "upstream write failed");
                return;
            }
            if (r == 1) {
                side_watch(s, &s->sv, EPOLLOUT);
                return;
            }
        }
        if (s->state == S_UP_SSLREQ) {
            side_watch(s, &s->sv, EPOLLIN);
            on_up_sslreq(s);
            return;
        }
        if (s->state == S_UP_TLS) {
            on_up_tls(s);
            return;
        }
        struct buf *in = s->sv.in;
        struct pg_hdr h;
        int r =
            in ? pg_hdr_parse(in->data + in->off, in->len - in->off, 1 << 20, &h) : PG_NEED_MORE;
        if (r == PG_BAD) {
            upstream_fail(s, "invalid message from the server", "upstream protocol error");
            return;
        }
        if (r == PG_OK && in->len - in->off >= 1 + (size_t)h.len) {
            const uint8_t *msg = in->data + in->off;
            in->off += 1 + h.len;
            if (!on_login_message(s, h.type, msg, 1 + h.len)) return;
            if (s->state == S_RELAY) {
                relay_start(s);
                return;
            }
            continue;
        }
        if (!s->sv.in) s->sv.in = buf_get();
        buf_reserve(s->sv.in, 1024);
        if (r == PG_OK) buf_reserve(s->sv.in, 1 + h.len - (in->len - in->off));
        in = s->sv.in;
        ssize_t n = sock_read(&s->sv.sk, in->data + in->len, in->cap - in->len);
        if (n == SOCK_AGAIN) {
            side_watch(s, &s->sv, s->sv.sk.want_write ? EPOLLOUT : EPOLLIN);
            return;
        }
        if (n <= 0) {
            upstream_fail(s, "the server closed the connection during login", "upstream closed");
            return;
        }
        in->len += (size_t)n;
    }
}

/* ---- relay ------------------------------------------------------------------------- */

enum pump_result {
    PUMP_IDLE,    /* waiting for the source to send more */
    PUMP_BLOCKED, /* the destination cannot take more now */
    PUMP_CLOSE,   /* the session is over */
    PUMP_DRAINED, /* shutting down and nothing is running: end the session */
};

/* A refused statement is replaced upstream by this text: the server answers with a syntax
 * error at exactly the place the statement's own error would come, which puts an explicit
 * transaction into the failed state and makes the extended protocol skip to Sync, as
 * PostgreSQL does. sluice swaps that error for its own. The word also shows in the server's
 * log, naming who blocked the statement. */

static void blocked_push(struct session *s, const struct policy_decision *d)
{
    char msg[512];
    bool review = d->action == POLICY_REVIEW;
    snprintf(msg, sizeof msg, "sluice: blocked by rule \"%s\": %s%s", d->rule, d->reason,
             review ? " (approval required)" : "");
    const char *hint = d->hint[0] ? d->hint : NULL;
    if (review && !hint) hint = "ask for approval";
    blocked_push_group(s, s->c2s_group, "42501", msg, hint);
}

/* Refuse with a fixed reason (internal failures, malformed messages). */
static void blocked_push_deny(struct session *s, const char *rule, const char *reason)
{
    struct policy_decision d = {.action = POLICY_DENY, .rule = rule};
    snprintf(d.reason, sizeof d.reason, "%s", reason);
    blocked_push(s, &d);
}

/* Forget refusals whose placeholder can no longer answer (its group has ended). */
static void blocked_expire(struct session *s)
{
    while (s->blocked && s->blocked->group < s->s2c_group) {
        struct blocked *e = s->blocked;
        s->blocked = e->next;
        if (!s->blocked) s->blocked_tail = NULL;
        free(e);
    }
}

/* Results of group `group` may send at most `limit` rows (the smaller limit wins when several
 * statements of one group have one; 0 = no limit) and are masked (mask 1) or not (-1) as a
 * rule said (masking wins within a group). */
static void limit_push(struct session *s, uint64_t group, uint64_t limit, const char *rule,
                       int mask)
{
    if (!limit && !mask) return;
    if (s->limits_tail && s->limits_tail->group == group) {
        struct limit_entry *t = s->limits_tail;
        if (limit && (!t->limit || limit < t->limit)) {
            t->limit = limit;
            t->rule = rule;
        }
        if (mask > 0 || (t->mask < 0 && mask == 0)) t->mask = mask;
        return;
    }
    struct limit_entry *l = xcalloc(1, sizeof *l);
    *l = (struct limit_entry){.group = group, .limit = limit, .rule = rule, .mask = mask};
    if (s->limits_tail)
        s->limits_tail->next = l;
    else
        s->limits = l;
    s->limits_tail = l;
}

static void limit_free(struct limit_entry *l)
{
    while (l->execs) {
        struct cap_exec *e = l->execs;
        l->execs = e->next;
        free(e);
    }
    free(l);
}

/* The nth Execute of the current group runs portal, which has (or may get) a cap: its
 * limit and masking hold for this group too, and its rows count against the cap. */
static void limit_cap(struct session *s, uint32_t nth, const char *portal,
                      const struct limited_stmt *c)
{
    limit_push(s, s->c2s_group, c->limit, c->rule, c->mask);
    struct limit_entry *l = s->limits_tail;
    if (!l || l->group != s->c2s_group || !c->limit) return; /* (a mask only: nothing to count) */
    size_t n = strlen(portal) + 1;
    struct cap_exec *e = xmalloc(sizeof *e + n);
    e->next = NULL;
    e->index = nth;
    memcpy(e->portal, portal, n);
    if (l->execs_tail)
        l->execs_tail->next = e;
    else
        l->execs = e;
    l->execs_tail = e;
}

/* The cap that counts the rows of the result arriving now, if any. */
static struct row_cap *limit_result_cap(struct session *s, struct limit_entry *l)
{
    while (l->execs && l->execs->index < l->result) { /* (results already over) */
        struct cap_exec *e = l->execs;
        l->execs = e->next;
        if (!l->execs) l->execs_tail = NULL;
        free(e);
    }
    if (!l->execs || l->execs->index != l->result) return NULL;
    return prepared_cap_of(s, l->execs->portal);
}

/* The entry of the group whose results are arriving now, if any. */
static struct limit_entry *limit_current(struct session *s)
{
    while (s->limits && s->limits->group < s->s2c_group) {
        struct limit_entry *l = s->limits;
        s->limits = l->next;
        if (!s->limits) s->limits_tail = NULL;
        limit_free(l);
    }
    return s->limits && s->limits->group == s->s2c_group ? s->limits : NULL;
}

const struct limit_entry *relay_group_current(struct session *s)
{
    return limit_current(s);
}

/* A result of the group being answered is over: the next one belongs to its next Execute. */
static void limit_result_end(struct session *s)
{
    struct limit_entry *l = s->limits ? limit_current(s) : NULL;
    if (l) l->result++;
}

void blocked_push_raw(struct session *s, const char *sqlstate, const char *msg, const char *hint)
{
    blocked_push_group(s, s->c2s_group, sqlstate, msg, hint);
}

void blocked_push_text(struct session *s, const char *sqlstate, const char *rule,
                       const char *reason, const char *hint)
{
    char msg[512];
    snprintf(msg, sizeof msg, "sluice: blocked by rule \"%s\": %s", rule, reason);
    blocked_push_group(s, s->c2s_group, sqlstate, msg, hint);
}

/* Refuse (the statement of group `group`) with this error instead of the placeholder's. */
void blocked_push_group(struct session *s, uint64_t group, const char *sqlstate, const char *msg,
                        const char *hint)
{
    struct buf *b = buf_get();
    pg_put_error(b, "ERROR", sqlstate, msg, NULL, hint);
    struct blocked *e = xmalloc(sizeof *e + b->len);
    e->next = NULL;
    e->group = group;
    e->len = b->len;
    memcpy(e->msg, b->data, b->len);
    buf_put(b);
    if (s->blocked_tail)
        s->blocked_tail->next = e;
    else
        s->blocked = e;
    s->blocked_tail = e;
}

/* Refuse the statement of Query/Sync group `group`: the audit cannot record it. */
static void refuse_audit_down(struct session *s, uint64_t group)
{
    log_warn("session %llu: statement refused: the audit store cannot be written",
             (unsigned long long)s->id);
    blocked_push_group(s, group, "58030",
                       "sluice: the audit store cannot be written; statements are refused until "
                       "it recovers",
                       "audit.fail is closed; see sluice's log for the store's error");
}

/* audit.fail: closed while the store cannot be written: the statement of the current group
 * is refused (true). */
static bool audit_down_refused(struct session *s)
{
    if (!relay_audit_on(s) || audit_healthy() || audit_fail_open()) return false;
    refuse_audit_down(s, s->c2s_group);
    return true;
}

/* What judging a statement text decided. */
struct verdict {
    bool ok;          /* may go upstream */
    uint64_t limit;   /* rows, 0 = none */
    const char *rule; /* points into the policy snapshot */
    int mask;
    bool approval;            /* wait for the approval request in s->park_request */
    struct name_change names; /* what a PREPARE, DEALLOCATE or DISCARD ALL in it does */
};

/* Judge one statement text (and record it for the audit when `query`: a simple Query; a
 * Parse is recorded by name for its Executes). */
static void statement_judge_inner(struct session *s, const char *sql, bool query, const char *name,
                                  struct verdict *v);

/* Judge the statement of these facts (policy, approval, audit record). */
static void statement_judge_facts(struct session *s, const char *sql, bool query, const char *name,
                                  struct verdict *v, const struct sql_facts *facts);

/* sluice's own time per statement (parse, policy, audit record) goes to the overhead
 * histogram. */
static void statement_judge(struct session *s, const char *sql, bool query, const char *name,
                            struct verdict *v)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    statement_judge_inner(s, sql, query, name, v);
    if (!query && !v->ok) relay_audit_parse_refused(s, name);
    clock_gettime(CLOCK_MONOTONIC, &b);
    metrics_observe_latency(H_STATEMENT_OVERHEAD, (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u +
                                                      (uint64_t)b.tv_nsec - (uint64_t)a.tv_nsec);
    if (s->reg) atomic_store_explicit(&s->reg->busy, true, memory_order_relaxed);
}

static void statement_judge_inner(struct session *s, const char *sql, bool query, const char *name,
                                  struct verdict *v)
{
    memset(v, 0, sizeof *v);
    s->park_group = s->c2s_group;
    s->gg_pending_max = 0;
    s->audit_request[0] = s->audit_grant[0] = '\0';
    bool audit = relay_audit_on(s);
    if (audit_down_refused(s)) return;
    const struct sql_facts *facts = sql_facts_cached(sql);
    if (!facts) {
        blocked_push_deny(s, "internal", "the statement could not be analyzed");
        if (audit) (void)relay_audit_query(s, sql, NULL, "deny", "internal", true);
        return;
    }
    for (unsigned k = 0; k < facts->n_stmts; k++)
        prepared_sql_statement(s, &facts->stmts[k], &v->names);
    if (!s->text_doubt || !facts->n_stmts) {
        statement_judge_facts(s, sql, query, name, v, facts);
        return;
    }
    /* the server may read the text otherwise: each statement is unjudgeable as well */
    struct sql_facts doubted = *facts;
    struct sql_stmt *stmts = xmalloc(facts->n_stmts * sizeof *stmts);
    memcpy(stmts, facts->stmts, facts->n_stmts * sizeof *stmts);
    for (unsigned k = 0; k < facts->n_stmts; k++)
        stmts[k].flags |= SQL_F_TEXT_DOUBT;
    doubted.stmts = stmts;
    statement_judge_facts(s, sql, query, name, v, &doubted);
    free(stmts);
}

/* A simple Query that is one COPY ... TO STDOUT, masked (mask: its rule's say): its lines are
 * masked by the names of its columns (relay_mask.c); not while the server may read the text
 * otherwise than sluice does (a client_encoding such as SJIS, whose characters may hold a backslash
 * byte). */
static void copy_lines_expect(struct session *s, bool query, const struct sql_facts *facts,
                              int mask)
{
    if (query && facts->n_stmts == 1 && facts->stmts[0].copy_out &&
        !(facts->stmts[0].flags & SQL_F_TEXT_DOUBT)) /* (set while s->text_doubt) */
        relay_mask_copy_expect(s, s->c2s_group, facts->stmts[0].copy_out, mask);
}

static void statement_judge_facts(struct session *s, const char *sql, bool query, const char *name,
                                  struct verdict *v, const struct sql_facts *facts)
{
    bool audit = relay_audit_on(s);
    struct policy_subject who = {s->ident, s->target->name};
    struct policy_decision d;
    policy_eval(s->rt->policy, &who, facts, &d);
    metrics_inc(M_STATEMENTS,
                d.action == POLICY_ALLOW    ? METRICS_ALLOW
                : d.action == POLICY_REVIEW ? METRICS_REVIEW
                                            : METRICS_DENY,
                facts->n_stmts ? (unsigned)facts->stmts[0].cls : (unsigned)CFG_CLASS_UTILITY);
    for (unsigned k = 0; k < facts->n_stmts; k++) {
        if (facts->stmts[k].cls == SQL_DDL) { /* column names: again when it has committed */
            catalog_invalidate(s->target_idx);
            s->ddl_in_tx = true;
        }
        /* pool.c: backends logged in before it commits are not reused (bumped at the
         * ReadyForQuery that ends its transaction; a refused one bumps nothing) */
        if ((facts->stmts[k].flags & SQL_F_LOGIN_STATE) && d.action != POLICY_DENY)
            s->login_state_changed = true;
    }
    if (d.action == POLICY_ALLOW) {
        v->ok = true;
        v->limit = d.limit_rows;
        v->rule = d.rule;
        v->mask = d.mask;
        copy_lines_expect(s, query, facts, d.mask);
        if (audit && !query) relay_audit_parse(s, name, sql, facts, "allow", d.rule);
        if (audit && query && relay_audit_query(s, sql, facts, "allow", d.rule, false) < 0) {
            v->ok = false;
            refuse_audit_down(s, s->c2s_group);
        }
        return;
    }
    if (d.action == POLICY_REVIEW) {
        s->park_group = s->c2s_group;
        enum review_outcome r = relay_approve_review(s, sql, facts, &d, query);
        if (r == REVIEW_GRANTED || r == REVIEW_WAIT) {
            v->ok = true;
            v->limit = d.limit_rows;
            v->rule = d.rule;
            v->mask = d.mask;
            v->approval = r == REVIEW_WAIT;
            copy_lines_expect(s, query, facts, d.mask);
            if (audit && !query) relay_audit_parse(s, name, sql, facts, "review", d.rule);
            if (audit && query && relay_audit_query(s, sql, facts, "review", d.rule, false) < 0) {
                v->ok = v->approval = false;
                refuse_audit_down(s, s->c2s_group);
                relay_approve_abandon(s, "the audit store cannot be written");
            }
            return;
        }
        if (audit) relay_audit_query_refused(s, sql, facts, "review", d.rule, s->review_refusal);
        return;
    }
    log_info("session %llu: %s by \"%s\" for user \"%s\": %s", (unsigned long long)s->id,
             policy_action_name(d.action), d.rule, s->user, d.reason);
    blocked_push(s, &d);
    if (audit) /* refused either way */
        (void)relay_audit_query(s, sql, facts, policy_action_name(d.action), d.rule, true);
}

/* May this identity run what sluice did not judge (the unjudgeable guardrail)? When not,
 * the client's error is queued, saying what (reason) and what to do instead (hint). */
static bool unjudged_allowed(struct session *s, const char *reason, const char *hint)
{
    enum cfg_action a = s->rt->cfg->guardrails.action[CFG_GUARD_UNJUDGEABLE][s->ident->kind];
    if (a == CFG_ALLOW) return true;
    struct policy_decision d = {.action = POLICY_DENY, .rule = "unjudgeable"};
    snprintf(d.reason, sizeof d.reason, "%s", reason);
    snprintf(d.hint, sizeof d.hint, "%s", hint);
    log_info("session %llu: %s: refused for user \"%s\"", (unsigned long long)s->id, reason,
             s->user);
    blocked_push(s, &d);
    return false;
}

/* A Bind of a statement sluice did not judge: made by SQL PREPARE (its EXECUTE is
 * unjudgeable: it runs again with any parameters, past grants and limits), or a name that a
 * DEALLOCATE or DISCARD ALL may have freed for one. It runs only where the unjudgeable
 * guardrail allows, and is recorded as such. */
static bool bind_unknown_allowed(struct session *s, const uint8_t *portal, const uint8_t *name)
{
    char reason[200];
    snprintf(reason, sizeof reason,
             "the prepared statement \"%.64s\" was not prepared with a Parse sluice judged (SQL "
             "PREPARE, or a name DEALLOCATE or DISCARD may have freed)",
             (const char *)name);
    if (unjudged_allowed(s, reason, "prepare the statement with a Parse message")) return true;
    relay_audit_bind_refused(s, (const char *)portal, (const char *)name, "deny", "unjudgeable",
                             NULL, "refused: a statement sluice did not see prepared");
    return false;
}

/* An Execute of a portal no Bind made: a cursor of SQL DECLARE, whose query was judged once
 * but whose rows a protocol Execute would fetch past the rule's limit_rows (a FETCH is a
 * statement of its own, judged and limited). */
static bool execute_unknown_allowed(struct session *s, const uint8_t *body, size_t len)
{
    char reason[200];
    snprintf(reason, sizeof reason,
             "the portal \"%.64s\" was not made by a Bind (a cursor of SQL DECLARE)",
             (const char *)body);
    if (unjudged_allowed(s, reason, "fetch from a cursor with FETCH")) return true;
    relay_audit_refused_message(s, 'E', body, len, "unjudgeable",
                                "refused: an Execute of a portal sluice did not see bound");
    return false;
}

/* Bind of a statement with a row limit: results in this group are limited. Bind is held whole
 * while any prepared statement of the session has a limit or a grant (client_holds). A Bind of
 * a statement approved under a grant takes one of its uses, as a simple Query does: false when
 * none is left (or the grant expired or was revoked), with the client's error queued. */
static bool on_client_bind(struct session *s, const uint8_t *body, size_t avail, uint64_t *bound)
{
    *bound = 0;
    const uint8_t *portal_end = memchr(body, 0, avail);
    if (!portal_end) return true;
    const uint8_t *name = portal_end + 1;
    size_t left = avail - (size_t)(name - body);
    if (!memchr(name, 0, left)) return true;
    prepared_bind(s, (const char *)name); /* a PREPARE or DEALLOCATE runs now: names change */
    if (!prepared_name_known(s, (const char *)name)) return bind_unknown_allowed(s, body, name);
    struct limited_stmt tmp;
    const struct limited_stmt *l = prepared_lookup(s, (const char *)name, &tmp);
    {
        if (l) {
            if (l->grant_max_rows && !relay_grant_bind_ok(s, body, avail)) {
                relay_audit_bind_refused(s, (const char *)body, (const char *)name, NULL, NULL,
                                         l->grant, GRANT_PIPELINED);
                return false;
            }
            if (l->grant[0] && approve_grant_use(l->grant, 0, NULL) < 0) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "sluice: grant %s has no use left (used up, expired or revoked)",
                         l->grant);
                log_info("session %llu: Bind refused: grant %s has no use left",
                         (unsigned long long)s->id, l->grant);
                blocked_push_group(s, s->c2s_group, "42501", msg,
                                   "prepare the statement again to ask for approval");
                relay_audit_bind_refused(s, (const char *)body, (const char *)name, NULL, NULL,
                                         l->grant,
                                         "refused: its grant has no use left (used up, expired "
                                         "or revoked)");
                return false;
            }
            limit_push(s, s->c2s_group, l->limit, l->rule, l->mask);
            prepared_cap_bind(s, (const char *)body, l); /* for its Executes */
            prepared_portal_bound(s, (const char *)body);
            *bound = l->grant_max_rows;
            return true;
        }
    }
    if (prepared_any(s)) prepared_cap_bind(s, (const char *)body, NULL); /* (it replaces one) */
    prepared_portal_bound(s, (const char *)body);
    return true;
}

/* A FunctionCall names its function by OID, which sluice cannot judge without the catalog:
 * it may only run when none of the guardrails about functions and unjudgeable statements
 * applies to this identity's kind. *decision and *rule say what decided, for the audit. */
static bool function_call_allowed(struct session *s, const char **decision, const char **rule)
{
    *decision = "allow";
    *rule = "default";
    static const enum cfg_guardrail guards[] = {CFG_GUARD_FILE_ACCESS,
                                                CFG_GUARD_DANGEROUS_FUNCTIONS,
                                                CFG_GUARD_ROLE_ESCALATION, CFG_GUARD_UNJUDGEABLE};
    for (size_t i = 0; i < sizeof guards / sizeof guards[0]; i++) {
        enum cfg_action a = s->rt->cfg->guardrails.action[guards[i]][s->ident->kind];
        if (a == CFG_ALLOW) continue;
        struct policy_decision d = {.action = a == CFG_REVIEW ? POLICY_REVIEW : POLICY_DENY,
                                    .rule = cfg_guardrail_name(guards[i])};
        snprintf(d.reason, sizeof d.reason, "a fast-path function call (by OID) cannot be judged");
        snprintf(d.hint, sizeof d.hint, "call the function in a SELECT instead");
        log_info("session %llu: refused a fast-path function call for user \"%s\"",
                 (unsigned long long)s->id, s->user);
        *decision = policy_action_name(d.action);
        *rule = d.rule;
        blocked_push(s, &d);
        return false;
    }
    return true;
}

/* A Bind of a portal, or a Parse of a statement, named as sluice's own stand-ins and grant
 * guard name theirs: refused (true), since the client's would take their place. */
static bool name_reserved(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    if (!memchr(body, 0, len) || (strcmp((const char *)body, BLOCKED_PLACEHOLDER) != 0 &&
                                  strcmp((const char *)body, GRANT_GUARD) != 0))
        return false;
    char reason[128];
    snprintf(reason, sizeof reason, "the %s name \"%s\" is reserved by sluice",
             type == 'B' ? "portal" : "prepared statement", (const char *)body);
    blocked_push_deny(s, "protocol", reason);
    relay_audit_refused_message(s, type, body, len, "protocol",
                                "refused: a portal or statement name reserved by sluice");
    return true;
}

/* A Parse, Bind, Close, Describe or Execute naming a statement or portal of 64 bytes or more:
 * refused (42622, true). PostgreSQL keys both by their first 63 bytes (NAMEDATALEN), so two
 * such names are one to the server and two to sluice's bookkeeping: a Close of one, or an
 * Execute, reached a statement or portal whose limit, masking and audit record sluice keeps
 * under the other. */
static bool name_too_long(struct session *s, uint8_t type, const uint8_t *body, size_t len)
{
    enum { NAME_MAX_BYTES = 63 };
    const uint8_t *p = body, *end = body + len;
    if (type == 'C' || type == 'D') p++; /* 'S' or 'P' first */
    for (int i = 0; i < (type == 'B' ? 2 : 1) && p < end; i++) {
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul) return false; /* malformed: the server refuses it */
        if (nul - p > NAME_MAX_BYTES) {
            blocked_push_group(s, s->c2s_group, "42622",
                               "sluice: prepared statement and portal names are limited to 63 "
                               "bytes (PostgreSQL tells longer names apart by their first 63 "
                               "bytes only)",
                               "use a shorter name");
            relay_audit_refused_message(s, type, body, len, "protocol",
                                        "refused: a statement or portal name over 63 bytes");
            return true;
        }
        p = nul + 1;
    }
    return false;
}

/* The refused message's stand-in upstream: a placeholder Query (for Query and FunctionCall), a
 * Parse of the placeholder under the same statement name, or an Execute of a portal that
 * does not exist. Each fails where the original would have, as PostgreSQL would. */
static enum hold_action replace_with_placeholder(struct session *s, uint8_t type,
                                                 const uint8_t *body)
{
    struct buf *out = session_out_buf(&s->sv_out);
    size_t m = pg_msg_begin(out, type == 'P' || type == 'E' ? type : 'Q');
    if (type == 'P') {
        buf_append_str(out, (const char *)body);
        buf_append_str(out, BLOCKED_PLACEHOLDER);
        buf_append_u16(out, 0);
    } else if (type == 'E') {
        buf_append_str(out, BLOCKED_PLACEHOLDER);
        buf_append_u32(out, 0);
    } else {
        buf_append_str(out, BLOCKED_PLACEHOLDER);
    }
    pg_msg_end(out, m);
    return HOLD_REPLACE;
}

enum hold_action relay_placeholder_query(struct session *s)
{
    return replace_with_placeholder(s, 'Q', NULL);
}

enum hold_action relay_placeholder_execute(struct session *s)
{
    return replace_with_placeholder(s, 'E', NULL);
}

/* Put the session on its worker's parked list: the message stays in cl.in until
 * session_unpark_ready() finds its wait over. */
static enum hold_action park(struct session *s, bool ok)
{
    s->parked = true;
    s->park_act = ok ? HOLD_FORWARD : HOLD_REPLACE;
    s->park_next = s->w->parked;
    s->w->parked = s;
    return HOLD_PARK;
}

static enum hold_action statement_finish(struct session *s, uint8_t type, const uint8_t *body,
                                         bool ok, bool approval)
{
    if (approval) return park(s, ok);
    return ok ? HOLD_FORWARD : replace_with_placeholder(s, type, body);
}

/* Policy seam: a whole client Query, Parse, FunctionCall; Bind and Execute while the audit
 * follows prepared statements or one has a row limit. A refused statement is replaced by a
 * placeholder whose reply is swapped in on_server_message; a statement whose audit event
 * must be committed first is parked. */
static enum hold_action on_client_statement(struct session *s, uint8_t type, const uint8_t *body,
                                            size_t len)
{
    if (s->park_ready) { /* the parked message, once more: apply what was decided */
        s->park_ready = false;
        if (s->park_act == HOLD_FORWARD && type == 'Q' && s->gg_pending_max)
            return relay_grant_wrap(s, body, len);
        if (s->park_act == HOLD_FORWARD && type == 'P' && s->audit_grant[0]) {
            /* its Binds take the uses, and are bounded by the grant's max_rows */
            prepared_grant(s, (const char *)body, s->audit_grant, s->gg_pending_max);
            s->gg_pending_max = 0;
        }
        return s->park_act == HOLD_FORWARD ? HOLD_FORWARD : replace_with_placeholder(s, type, body);
    }
    enum hold_action inside;
    if (s->gg == GG_EXT_STMT && s->gg_open && relay_grant_inside(s, type, body, len, &inside))
        return inside;
    struct verdict v;
    if ((type == 'B' || type == 'P') && name_reserved(s, type, body, len))
        return replace_with_placeholder(s, type == 'B' ? 'E' : 'P', body);
    if (type && strchr("PBCDE", type) && name_too_long(s, type, body, len))
        return replace_with_placeholder(s, type == 'P' ? 'P' : 'E', body);
    switch (type) {
    case 'B': {
        uint64_t bound;
        if (!on_client_bind(s, body, len, &bound)) /* the server errors at it, skips to Sync */
            return replace_with_placeholder(s, 'E', body);
        const uint8_t *portal_end = memchr(body, 0, len);
        if (portal_end && memchr(portal_end + 1, 0, len - (size_t)(portal_end + 1 - body)))
            relay_audit_bind(s, (const char *)body, (const char *)portal_end + 1);
        return bound ? relay_grant_bind(s, body, len, bound) : HOLD_FORWARD;
    }
    case 'D': /* Describe: for the audit, and the plan of the rows to come */
        relay_audit_describe(s, body, len);
        relay_mask_describe(s, body, len);
        return HOLD_FORWARD;
    case 'C': /* Close: a statement's name means nothing once the server closed it */
        prepared_close(s, body, len);
        relay_audit_close(s, body, len);
        return HOLD_FORWARD;
    case 'E': {
        s->statements++;
        s->park_group = s->c2s_group;
        if (memchr(body, 0, len) && !prepared_portal_known(s, (const char *)body) &&
            !execute_unknown_allowed(s, body, len))
            return replace_with_placeholder(s, 'E', body);
        struct limited_stmt cap;
        if (prepared_any(s) && memchr(body, 0, len) &&
            prepared_cap_exec(s, (const char *)body, &cap))
            limit_cap(s, s->grp_execs, (const char *)body, &cap); /* (group_note counts it) */
        if (relay_audit_execute(s, memchr(body, 0, len) ? (const char *)body : "") < 0) {
            refuse_audit_down(s, s->c2s_group);
            return replace_with_placeholder(s, 'E', body);
        }
        if (!relay_mask_describe_first(s, body, len)) return HOLD_FORWARD;
        struct buf *out = session_out_buf(&s->sv_out); /* sluice's Describe, then the Execute */
        relay_mask_put_describe(out, (const char *)body);
        buf_append(out, body - 5, len + 5);
        return HOLD_REPLACE;
    }
    case 'F': {
        s->statements++;
        /* the message ends with the result format: 1 = binary (relay_mask.c) */
        s->fastpath_binary = len >= 2 && body[len - 2] == 0 && body[len - 1] == 1;
        const char *decision, *rule;
        bool ok;
        if (audit_down_refused(s)) {
            ok = false;
        } else {
            ok = function_call_allowed(s, &decision, &rule);
            if (relay_audit_fastpath(s, body, len, decision, rule, !ok) < 0 && ok) {
                ok = false;
                refuse_audit_down(s, s->c2s_group);
            }
        }
        s->pending_sync++;
        s->c2s_group++;
        return ok ? HOLD_FORWARD : replace_with_placeholder(s, 'Q', body);
    }
    case 'Q': {
        s->statements++;
        if (len > 0 && body[len - 1] == 0) {
            statement_judge(s, (const char *)body, true, NULL, &v);
            if (v.ok) limit_push(s, s->c2s_group, v.limit, v.rule, v.mask);
        } else {
            memset(&v, 0, sizeof v);
            /* PostgreSQL's own answer to a string without its NUL */
            blocked_push_group(s, s->c2s_group, "08P01", "invalid string in message", NULL);
            relay_audit_malformed(s, "(malformed Query message)");
        }
        s->pending_sync++;
        s->c2s_group++;
        enum hold_action act = statement_finish(s, 'Q', body, v.ok, v.ok && v.approval);
        if (act == HOLD_FORWARD && s->gg_pending_max) return relay_grant_wrap(s, body, len);
        return act;
    }
    default:
        break;
    }
    /* Parse: statement name, query text, parameter types. */
    const uint8_t *name_end = memchr(body, 0, len);
    const uint8_t *sql = name_end ? name_end + 1 : NULL;
    if (!sql || !memchr(sql, 0, len - (size_t)(sql - body))) {
        blocked_push_group(s, s->c2s_group, "08P01", "invalid string in message", NULL);
        relay_audit_malformed(s, "(malformed Parse message)");
        return replace_with_placeholder(s, 'E', body); /* no ReadyForQuery of its own */
    }
    statement_judge(s, (const char *)sql, false, (const char *)body, &v);
    struct limited_stmt *entry =
        prepared_entry_new((const char *)body, v.ok ? v.limit : 0, v.rule, v.ok ? v.mask : 0,
                           v.ok && !v.approval ? s->audit_grant : "", v.ok ? s->gg_pending_max : 0);
    /* (every Parse is an op, even one with nothing to keep: replies are matched to the ops
     * in order, so none may be missing) */
    prepared_parse(s, (const char *)body, entry, v.names.any ? &v.names : NULL);
    s->gg_pending_max = 0; /* the statement's Binds are bounded (relay_grant_bind) */
    return statement_finish(s, 'P', body, v.ok, v.ok && v.approval);
}

/* Is this ErrorResponse the server's answer to a placeholder? */
static bool is_placeholder_error(const uint8_t *body, size_t len)
{
    struct pg_error_view e;
    return pg_error_parse(body, len, &e) == PG_OK &&
           (strcmp(e.sqlstate, "42601") == 0 || strcmp(e.sqlstate, "34000") == 0) &&
           strstr(e.message, BLOCKED_PLACEHOLDER) != NULL;
}

/* The row limit in force drops this DataRow? */
static bool row_beyond_limit(struct session *s)
{
    struct limit_entry *lim;
    if (!s->limits || !(lim = limit_current(s)) || !lim->limit) return false;
    struct row_cap *cap = lim->execs ? limit_result_cap(s, lim) : NULL;
    if (cap && !cap->limit) cap = NULL; /* (masking only: the group's limit, per result) */
    if ((cap ? cap->sent++ : s->rows_sent++) < (cap ? cap->limit : lim->limit)) return false;
    s->rows_dropped++;
    return true;
}

/* A DataRow or CopyData through masking, then to the audit (note) as it is sent: the masked
 * message masking put in cl_out when it rewrote it, else the server's. */
static enum hold_action mask_and_audit(struct session *s, uint8_t type, const uint8_t *body,
                                       size_t len,
                                       void (*note)(struct session *, const uint8_t *, size_t))
{
    size_t mark = s->cl_out ? s->cl_out->len - s->cl_out->off : 0;
    enum hold_action act = relay_mask_server(s, type, body, len);
    if (!s->recs) return act;
    if (act == HOLD_REPLACE && s->cl_out && s->cl_out->len - s->cl_out->off > mark + 5)
        note(s, s->cl_out->data + s->cl_out->off + mark + 5,
             s->cl_out->len - s->cl_out->off - mark - 5);
    else if (act == HOLD_FORWARD)
        note(s, body, len);
    return act;
}

/* The seam for whole server messages: statement end (Z, C, E), parameters (S), and what
 * masking looks at (relay_mask_holds). */
static enum hold_action on_server_message(struct session *s, uint8_t type, const uint8_t *body,
                                          size_t len)
{
    enum hold_action gact;
    /* An error in the group the client is still sending: the server skips the rest of it,
     * answering nothing until its Sync (client_ahead) */
    if (type == 'E' && s->unsynced && s->s2c_group == s->c2s_group)
        s->failed_open = s->c2s_group + 1;
    if (s->gg && relay_grant_server(s, type, body, len, &gact)) return gact;
    switch (type) {
    case 'Z':
        if (s->recs || s->suspended)
            relay_audit_server(s, type, body, len);
        else if (s->masked) { /* no audit record takes the counts: metrics only */
            relay_mask_count(s);
            memset(s->masked, 0, sizeof *s->masked);
        }
        if (len == 1) {
            if (relay_audit_on(s)) relay_audit_tx_ready(s, body[0]);
            s->tx = body[0];
            prepared_server(s, 'Z');
            if (body[0] == 'I') { /* its portals are gone */
                if (s->caps.n) prepared_cap_drop(s);
                prepared_portals_drop(s);
                if (s->login_state_changed) pool_epoch_bump(); /* committed (or rolled back) */
                s->login_state_changed = false;
                /* names read from the catalog while the DDL ran or waited for its locks were
                 * the old ones */
                if (s->ddl_in_tx) catalog_invalidate(s->target_idx);
                s->ddl_in_tx = false;
            }
            if (s->audit_ops) relay_audit_ready(s);
            relay_mask_group_end(s);
            if (s->pending_sync) s->pending_sync--;
            s->s2c_group++;
            s->rows_sent = s->rows_dropped = 0;
            if (s->reg && s->pending_sync == 0)
                atomic_store_explicit(&s->reg->busy, false, memory_order_relaxed);
            if (s->blocked) blocked_expire(s);
        }
        relay_mask_result_end(s);
        if (s->gg_append_z) { /* after the grant guard's own reply */
            s->gg_append_z = false;
            buf_append(session_out_buf(&s->cl_out), body - 5, len + 5);
            return HOLD_REPLACE;
        }
        return HOLD_FORWARD;
    case 'S':
        pool_params_update(&s->params, &s->params_len, body - 5, len + 5);
        session_text_check(s);
        if (len > 17 && memcmp(body, "application_name", 17) == 0 &&
            memchr(body + 17, 0, len - 17)) {
            session_set_app_name(s, (const char *)body + 17); /* (the audit masks it) */
            audit_json_free(&s->audit_json);                  /* it names the application */
        }
        return param_status_masked(s, body, len) ? HOLD_REPLACE : HOLD_FORWARD;
    case 'C': {
        if (s->recs) relay_audit_server(s, type, body, len);
        relay_mask_result_end(s);
        if (len == 7 && !memcmp(body, "COMMIT", 7)) { /* (AND CHAIN stays in a block) */
            if (s->caps.n) prepared_cap_drop(s);
            prepared_portals_drop(s);
        }
        if (!s->limits) return HOLD_FORWARD;
        uint64_t dropped = s->rows_dropped;
        s->rows_sent = s->rows_dropped = 0;
        const struct limit_entry *lim = relay_group_current(s);
        limit_result_end(s);
        if (dropped && lim) {
            /* Tell the client, just before the CommandComplete, what it did not get. */
            char msg[300];
            snprintf(msg, sizeof msg,
                     "sluice: result limited to %llu rows by rule \"%s\"; %llu more rows were "
                     "not sent",
                     (unsigned long long)lim->limit, lim->rule, (unsigned long long)dropped);
            pg_put_notice(session_out_buf(&s->cl_out), "01000", msg);
            buf_append(s->cl_out, body - 5, len + 5);
            return HOLD_REPLACE;
        }
        return HOLD_FORWARD;
    }
    case 'E':
        if (s->recs || s->suspended || s->atx) relay_audit_server(s, type, body, len);
        relay_mask_result_end(s);
        limit_result_end(s);
        if (s->blocked) {
            blocked_expire(s);
            struct blocked *e = s->blocked;
            if (e && e->group == s->s2c_group && is_placeholder_error(body, len)) {
                buf_append(session_out_buf(&s->cl_out), e->msg, e->len);
                s->blocked = e->next;
                if (!s->blocked) s->blocked_tail = NULL;
                free(e);
                return HOLD_REPLACE;
            }
        }
        return relay_mask_server(s, type, body, len);
    case 'D':
        if (row_beyond_limit(s)) return HOLD_REPLACE; /* dropped: nothing goes instead */
        return mask_and_audit(s, type, body, len, relay_audit_row);
    case 'd': /* COPY TO STDOUT: counted and digested as sent, like rows */
        return mask_and_audit(s, type, body, len, relay_audit_data);
    case 'V': /* a FunctionCall's result: counted and digested as sent */
        return mask_and_audit(s, type, body, len, relay_audit_data);
    case 's':
    case 'I':
        if (s->recs) relay_audit_server(s, type, body, len);
        limit_result_end(s);
        return relay_mask_server(s, type, body, len);
    case '2':
        if (s->prep_ops) prepared_server(s, type);
        if (s->audit_ops) relay_audit_parse_done(s, type);
        return HOLD_FORWARD;
    case 'T': /* a Describe's last reply (or a simple Query's columns) */
    case 'n':
        if (relay_mask_describe_reply(s, type, body, len)) return HOLD_REPLACE; /* sluice's */
        if (s->audit_ops) relay_audit_parse_done(s, type);
        return relay_mask_server(s, type, body, len);
    case '1':
    case '3':
        prepared_server(s, type);
        if (s->audit_ops) relay_audit_parse_done(s, type);
        return HOLD_FORWARD;
    default:
        return relay_mask_server(s, type, body, len);
    }
}

/* The client ended COPY FROM STDIN (or the server did, with an error): the Syncs sent behind
 * the COPY's Execute were ignored by the server and get no ReadyForQuery. */
static void copy_in_end(struct session *s)
{
    if (!s->copy_in) return;
    uint32_t n = s->copy_ignored < s->pending_sync ? s->copy_ignored : s->pending_sync;
    s->pending_sync -= n;
    s->c2s_group -= n;
    /* the server ignored those Syncs: the group it runs is still open (an error now makes it
     * skip to the client's next Sync) */
    if (n) s->unsynced = true;
    s->copy_in = false;
    s->copy_ignored = 0;
}

/* A client message was sent on (or replaced): count the messages of its group (a Bind under a
 * grant guard must open its group, relay_grant_bind); its Sync closes a guarded group. */
static void group_note(struct session *s, uint8_t type)
{
    if (type != 'D') relay_mask_client_other(s);
    if (type == 'E') s->grp_execs++;
    if (type == 'S' || type == 'Q') {
        s->grp_msgs = s->grp_execs = 0;
        if (type == 'S') s->gg_open = false;
        return;
    }
    if (!s->grp_msgs++) s->grp_first = type;
}

static bool client_holds(const struct session *s, uint8_t type)
{
    /* inside a guarded group every statement message is looked at (relay_grant_inside) */
    if (s->gg == GG_EXT_STMT && s->gg_open && type != 'S' && type != 'H' && type != 'D' &&
        type != 'X')
        return true;
    return type == 'Q' || type == 'P' || type == 'F' ||
           ((type == 'B' || type == 'E') && (prepared_any(s) || relay_audit_on(s))) ||
           ((type == 'C' || type == 'D') && (prepared_any(s) || relay_audit_on(s))) ||
           ((type == 'D' || type == 'E') && s->rt->mask); /* row plans (relay_mask.c) */
}

static bool server_holds(const struct session *s, uint8_t type)
{
    return type == 'Z' || type == 'C' || type == 'E' || type == 'S' ||
           ((type == 'D' || type == 'd' || type == 's' || type == 'I' || type == 'V') && s->recs) ||
           ((type == 's' || type == 'I') && s->limits) || /* a result ends (limit_result_end) */
           relay_mask_holds(s, type) || relay_grant_holds(s, type) || prepared_holds(s, type) ||
           ((type == '1' || type == '2' || type == '3' || type == 'T' || type == 'n') &&
            s->audit_ops) ||
           ((type == 'T' || type == 'n') && relay_mask_describes_pending(s));
}

/* How far the client runs ahead of the server: the most entries one of the queues holds that
 * wait for the server's answers to its messages (prepared.c, relay_audit.c). Each message
 * looks through them, so they are kept short: beyond AHEAD_MAX the client is not read until
 * the server has answered half of them (a long pipeline would otherwise cost time quadratic
 * in its length, and memory without bound). */
#define AHEAD_MAX 256
/* A paused session whose server sent nothing for this long reads one more message (and
 * pauses again, with another Flush): should sluice's count of groups be off (a COPY that
 * swallowed a Sync, sync_doubt), the server may be skipping to a Sync the client has not sent
 * yet, and answer nothing until then. */
#define AHEAD_STALL_MS 1000

bool relay_group_trimmed(const struct session *s)
{
    return s->trimmed == s->c2s_group + 1; /* (0 never matches) */
}

static uint64_t client_behind(const struct session *s)
{
    uint64_t a = prepared_pending(s), b = relay_audit_pending(s);
    return a > b ? a : b;
}

/* Before the client message of type is looked at: true when it must wait (client_behind),
 * the session then paused (ahead_paused) and a Flush sent upstream, so that the server sends
 * the answers it holds back until a Sync. Not while the server reads COPY data (a Flush would
 * break it, and only the client's CopyDone ends it) or the grant guard runs. A group the
 * server failed gets no answers until its Sync: what the queues hold of it is dropped now,
 * as its ReadyForQuery would, and the client goes on. */
static bool client_ahead(struct session *s, uint8_t type)
{
    if (!strchr("PBDECQF", type) || s->copy_in || s->gg || client_behind(s) <= AHEAD_MAX)
        return false;
    if (s->failed_open == s->c2s_group + 1) {
        if (s->recs) relay_audit_skipped(s);
        prepared_skipped(s);
        if (s->audit_ops) relay_audit_ready(s);
        relay_mask_group_end(s);
        s->trimmed = s->c2s_group + 1;
        return false;
    }
    if (s->ahead_stalled) { /* AHEAD_STALL_MS: this one goes; the next waits again */
        s->ahead_stalled = false;
        return false;
    }
    if (!s->ahead_paused) {
        s->ahead_paused = true;
        s->ahead_since_ms = clock_ms();
        struct buf *out = session_out_buf(&s->sv_out);
        size_t m = pg_msg_begin(out, 'H');
        pg_msg_end(out, m);
    }
    return true;
}

/* The server answered (or, stalled, did not for AHEAD_STALL_MS): read the client again. */
static void ahead_resume(struct session *s, bool stalled)
{
    s->ahead_paused = false;
    s->ahead_stalled = stalled;
    s->cl.rescan = s->cl.in != NULL;
    relay_run(s, true, false);
}

/* The client broke the protocol with the message at pos of b: as PostgreSQL, which runs the
 * messages before such a message and answers them before it reads it, sluice forwards what
 * came before and drops the rest; client_bad_end() then ends the session with the error once
 * those are answered. */
static void client_fault_at(struct session *s, struct buf *b, size_t pos, const char *code,
                            const char *why)
{
    s->client_bad = why;
    s->client_bad_code = code;
    s->client_eof = true;
    b->len = pos;
}

/* Decide framing for the bytes of src->in not yet decided. Returns false on a framing error
 * (from the server: a client's ends the session later, client_fault_at). */
static bool relay_scan(struct session *s, struct side *src, bool from_client, const char **why)
{
    struct buf *b = src->in;
    if (src->drop_left && src->fwd == 0) {
        size_t take = b->len - b->off < src->drop_left ? b->len - b->off : src->drop_left;
        b->off += take;
        src->drop_left -= (uint32_t)take;
    }
    size_t pos = b->off + src->fwd;
    uint32_t max = s->rt->cfg->server.max_message_size;
    uint32_t max_row = s->rt->cfg->server.max_row_size;
    /* Set once a server message was replaced with nothing decided before it: the replacement
     * went to cl_out, so every message after it in this scan is copied there too (in order)
     * instead of being written in place. Rewritten rows then leave in one write, not one
     * write per row. */
    bool copying = false;
    while (pos < b->len) {
        /* the grant guard's group was sent whole: the client's next messages wait for it */
        if (from_client && s->gg && !s->gg_open) break;
        if (src->msg_left) {
            size_t take = b->len - pos < src->msg_left ? b->len - pos : src->msg_left;
            if (!from_client && s->row_part_left) relay_audit_row_part(s, b->data + pos, take);
            pos += take;
            src->msg_left -= (uint32_t)take;
            continue;
        }
        /* its token expired: what it sends now does not run (left unread; it ends) */
        if (from_client && s->expired) break;
        struct pg_hdr h;
        int r = pg_hdr_parse(b->data + pos, b->len - pos, PG_MAX_MESSAGE, &h);
        if (r == PG_NEED_MORE) break;
        if (r == PG_BAD && from_client) {
            client_fault_at(s, b, pos, "08P01", "invalid message length from client");
            break;
        }
        if (r == PG_BAD) {
            *why = "invalid message length from server";
            return false;
        }
        size_t total = 1 + (size_t)h.len;
        if (from_client && (h.type == 'Q' || h.type == 'E')) {
            s->copy_syncs = 0;
            s->copy_counting = true;
        } else if (from_client && h.type != 'S' && h.type != 'H' && h.type != 'd') {
            /* a server in COPY FROM STDIN leaves it at this message at the latest (CopyDone,
             * CopyFail, or an error): the Syncs after it are not ignored */
            s->copy_counting = false;
        }
        if (from_client) {
            switch (h.type) {
            case 'P':
            case 'B':
            case 'E':
            case 'D':
            case 'C':
            case 'H':
                s->unsynced = true;
                break;
            case 'S':
                s->unsynced = false;
                break;
            default:
                break;
            }
        }
        bool hold = from_client ? client_holds(s, h.type) : server_holds(s, h.type);
        bool streamed_row = false;
        if (hold && !from_client && (h.type == 'D' || h.type == 'd' || h.type == 'V') &&
            h.len > max_row) {
            /* Too large to hold whole: never sent unmasked, else streamed (a row or CopyData
             * digested as its parts pass). */
            if (relay_mask_rewrites(s, h.type)) {
                *why = h.type == 'V' ? "a function result larger than server.max_row_size "
                                       "cannot be masked"
                                     : "a row larger than server.max_row_size cannot be masked";
                s->server_fault = "54000";
                return false;
            }
            hold = false;
            streamed_row = true;
        }
        if (hold) {
            if (from_client && h.len > max) {
                client_fault_at(s, b, pos, "54000", "message larger than server.max_message_size");
                break;
            }
            if (b->len - pos < total) {
                size_t off_before = b->off;
                buf_reserve(b, total - (b->len - pos));
                pos -= off_before - b->off;
                break;
            }
            if (!from_client && (h.type == 'C' || h.type == 'E')) copy_in_end(s);
            if (from_client && s->unsynced && (h.type == 'Q' || h.type == 'F')) {
                /* whether the server runs it depends on errors sluice has not seen yet (it
                 * skips everything to the Sync after one): the groups could not be counted */
                client_fault_at(s, b, pos, "08P01",
                                "a simple Query or FunctionCall inside an unfinished "
                                "extended-protocol group (send Sync first)");
                break;
            }
            if (from_client && client_ahead(s, h.type)) break; /* it stays in the buffer */
            enum hold_action act =
                from_client ? on_client_statement(s, h.type, b->data + pos + 5, h.len - 4)
                            : on_server_message(s, h.type, b->data + pos + 5, h.len - 4);
            if (act == HOLD_PARK) break; /* fwd ends before it; it stays in the buffer */
            if (from_client) group_note(s, h.type);
            if (act == HOLD_REPLACE && !from_client && pos == b->off) {
                b->off += total;
                pos = b->off;
                copying = true;
                continue;
            }
            if (act == HOLD_REPLACE) {
                /* Write what came before, drop this message, send the replacement, then
                 * resume scanning after it (relay_pump). */
                src->skip = total;
                src->rescan = true;
                break;
            }
            if (copying) {
                buf_append(session_out_buf(&s->cl_out), b->data + pos, total);
                b->off += total;
                pos = b->off;
                continue;
            }
            pos += total;
            continue;
        }
        if (from_client) {
            group_note(s, h.type);
            /* A server in COPY FROM STDIN ignores Sync: it gets no ReadyForQuery. */
            if (h.type == 'S' && !s->copy_in) {
                s->pending_sync++;
                s->c2s_group++;
                if (s->copy_counting) s->copy_syncs++;
            } else if (h.type == 'S') {
                /* ignored, unless the COPY has just failed: from now on the count of groups
                 * may be one short, and no grant's max_rows can rely on it */
                s->sync_doubt = true;
            }
            if (h.type == 'c' || h.type == 'f') copy_in_end(s);
            if (h.type == 'X') {
                /* Not forwarded: sluice ends or reuses the upstream session itself. */
                s->client_terminated = true;
                break;
            }
        } else if (h.type == 'G') {
            s->copy_in = true; /* CopyInResponse */
            s->copy_ignored = s->copy_syncs;
            s->copy_syncs = 0;
        }
        size_t take = b->len - pos < total ? b->len - pos : total;
        if (copying && take < total) { /* flush what is copied, then stream this one in place */
            src->rescan = true;
            break;
        }
        if (!from_client && h.type == 'D' && row_beyond_limit(s)) {
            /* Beyond limit_rows: this DataRow is dropped, not sent. */
            src->skip = take;
            src->drop_left = (uint32_t)(total - take);
            src->rescan = true;
            break;
        }
        if (streamed_row) {
            relay_audit_row_stream(s, h.type, total);
            relay_audit_row_part(s, b->data + pos, take);
        }
        if (copying) {
            buf_append(session_out_buf(&s->cl_out), b->data + pos, total);
            b->off += total;
            pos = b->off;
            continue;
        }
        pos += take;
        src->msg_left = (uint32_t)(total - take);
    }
    src->fwd = pos - b->off;
    return true;
}

#define DRAIN_PARKED "sluice is shutting down; the statement waiting for approval did not run."

/* A draining session with nothing running ends: sluice shuts down, or its token expired. */
static void session_end_drained(struct session *s)
{
    if (s->expired)
        session_fail(s, "28000", "sluice: the session's OIDC token expired",
                     s->parked ? "The statement waiting for approval did not run. Log in again "
                                 "with a new token."
                               : "Log in again with a new token.",
                     "token expired");
    else
        session_fail(s, "57P01", "terminating connection due to administrator command",
                     s->parked ? DRAIN_PARKED : "sluice is shutting down.", "shutting down");
}

/* Does the session only wait for an approval? Its statement has not run; when every group
 * before it is answered and nothing of its own group went upstream, nothing runs. */
static bool park_idle(const struct session *s)
{
    return s->parked && s->s2c_group == s->park_group && !s->grp_msgs && !s->sv.msg_left &&
           (!s->sv.in || s->sv.in->len == s->sv.in->off);
}

/* Move bytes from src to dst until one of them would block. */
static enum pump_result relay_pump(struct session *s, struct side *src, struct side *dst,
                                   bool from_client, const char **why)
{
    bool drained = false;
    struct buf **inject = from_client ? &s->sv_out : &s->cl_out;
    for (int round = 0; round < 64; round++) {
        /* Output order: bytes decided for forwarding, then (for a replaced message) its
         * replacement, then whatever is scanned next. */
        struct buf *b = src->in;
        while (b && src->fwd) {
            ssize_t n = sock_write(&dst->sk, b->data + b->off, src->fwd);
            if (n == SOCK_AGAIN) return PUMP_BLOCKED;
            if (n < 0) {
                *why = from_client ? "server write failed" : "client write failed";
                return PUMP_CLOSE;
            }
            b->off += (size_t)n;
            src->fwd -= (size_t)n;
        }
        if (src->skip) {
            b->off += src->skip;
            src->skip = 0;
        }
        int r = flush_buf(&dst->sk, inject);
        if (r < 0) {
            *why = from_client ? "server write failed" : "client write failed";
            return PUMP_CLOSE;
        }
        if (r == 1) return PUMP_BLOCKED;
        if (from_client && (s->parked || s->ahead_paused || (s->gg && !s->gg_open) || s->expired))
            return PUMP_IDLE; /* resumed later (or never: expired) */
        if (from_client && s->client_terminated) {
            *why = "client terminated";
            s->client_left = true;
            return PUMP_CLOSE;
        }
        if (!from_client && s->drain && src->msg_left == 0 &&
            (s->pending_sync == 0 || park_idle(s)))
            return PUMP_DRAINED;
        if (src->rescan) {
            src->rescan = false;
            if (!relay_scan(s, src, from_client, why)) return PUMP_CLOSE;
            continue;
        }
        side_release_in(src);
        if (drained) return PUMP_IDLE;
        /* after a half-close nothing more can come: reading again would take the end for a
         * disconnect and drop answers not yet written (TLS sessions run both directions on
         * every event) */
        if (from_client && s->client_eof) return PUMP_IDLE;
        if (!src->in) src->in = buf_get();
        b = src->in;
        if (b->cap - b->len < 512) buf_compact(b);
        if (b->cap == b->len) buf_reserve(b, BUF_CHUNK);
        size_t room = b->cap - b->len;
        ssize_t n = sock_read(&src->sk, b->data + b->len, room);
        if (n == SOCK_AGAIN) {
            side_release_in(src);
            return PUMP_IDLE;
        }
        if (n == 0 && from_client && s->pending_sync > 0 && !s->copy_in) {
            /* A half-close (shutdown(SHUT_WR)) after a Query: PostgreSQL runs what it was
             * sent and answers before it sees the end, and so does sluice (relay_run). */
            s->client_eof = true;
            side_release_in(src);
            return PUMP_IDLE;
        }
        if (n <= 0) {
            s->client_left = from_client;
            *why = from_client ? (n == 0 ? "client disconnected" : "client read failed")
                               : (n == 0 ? "server closed the connection" : "server read failed");
            return PUMP_CLOSE;
        }
        b->len += (size_t)n;
        if (from_client) metrics_add(M_BYTES, METRICS_FROM_CLIENT, 0, (uint64_t)n);
        if (!relay_scan(s, src, from_client, why)) return PUMP_CLOSE;
        /* A short read drained the socket: write what we have, then wait for epoll. */
        drained = (size_t)n < room && !sock_pending(&src->sk);
    }
    /* Fairness: let other sessions run. Bytes already read but not yet written must not wait
     * for the source to send more: asking for the destination's writability resumes us. */
    if (src->fwd || src->skip || src->rescan || ((*inject) && (*inject)->off < (*inject)->len))
        return PUMP_BLOCKED; /* bytes copied or queued for dst (masking) must not wait either */
    return PUMP_IDLE;        /* level-triggered epoll returns for anything left in the socket */
}

static void relay_update_interest(struct session *s)
{
    if (s->state == S_RELAY) {
        side_watch(s, &s->cl,
                   (s->c2s_blocked || s->ahead_paused || s->client_eof || s->expired ? 0
                    : s->parked || (s->gg && !s->gg_open)                            ? EPOLLRDHUP
                                                                                     : EPOLLIN) |
                       (s->s2c_blocked || s->cl.sk.want_write ? EPOLLOUT : 0));
        side_watch(s, &s->sv,
                   (s->s2c_blocked ? 0 : EPOLLIN) |
                       (s->c2s_blocked || s->sv.sk.want_write ? EPOLLOUT : 0));
        return;
    }
    if (s->state == S_AUTH || s->state == S_STARTUP) {
        bool pending = s->cl_out && s->cl_out->off < s->cl_out->len;
        side_watch(s, &s->cl, EPOLLIN | (pending ? EPOLLOUT : 0));
    }
}

/* A framing error from the client (client_bad): once everything sent before it is answered
 * and relayed, say why and end the session. Returns true when it ended. */
static bool client_bad_end(struct session *s)
{
    if (!s->client_bad || s->c2s_blocked || (s->pending_sync > 0 && !s->copy_in) ||
        s->sv.msg_left || s->sv.fwd || (s->cl_out && s->cl_out->off < s->cl_out->len))
        return false;
    char msg[160];
    snprintf(msg, sizeof msg, "sluice: %s", s->client_bad);
    session_fail(s, s->client_bad_code, msg, NULL, s->client_bad);
    return true;
}

static void relay_run(struct session *s, bool c2s, bool s2c)
{
    const char *why = NULL;
    if (c2s) {
        enum pump_result r = relay_pump(s, &s->cl, &s->sv, true, &why);
        if (r == PUMP_CLOSE) {
            session_close(s, why);
            return;
        }
        s->c2s_blocked = r == PUMP_BLOCKED;
        if (client_bad_end(s)) return;
        /* A statement just parked may have left a NOTICE for the client: send it now. */
        if (s->parked && s->cl_out && s->cl_out->off < s->cl_out->len) s2c = true;
    }
    if (s2c) {
        enum pump_result r = relay_pump(s, &s->sv, &s->cl, false, &why);
        if (r == PUMP_CLOSE && s->server_fault && !s->cl.msg_left) {
            char msg[160];
            snprintf(msg, sizeof msg, "sluice: %s", why);
            session_fail(s, s->server_fault, msg, NULL, why);
            return;
        }
        if (r == PUMP_CLOSE) {
            session_close(s, why);
            return;
        }
        if (r == PUMP_DRAINED) {
            session_end_drained(s);
            return;
        }
        s->s2c_blocked = r == PUMP_BLOCKED;
        if (r == PUMP_IDLE && client_bad_end(s)) return;
        if (s->client_eof && r == PUMP_IDLE && (s->pending_sync == 0 || s->copy_in)) {
            /* All answered (a COPY FROM STDIN gets no data now). The backend is not pooled:
             * PostgreSQL's would exit at the end it reads next. */
            session_close(s, "client disconnected");
            return;
        }
        if (s->ahead_paused) s->ahead_since_ms = clock_ms();
        bool caught_up = s->ahead_paused &&
                         (client_behind(s) <= AHEAD_MAX / 2 || s->failed_open == s->c2s_group + 1);
        if (caught_up) s->ahead_paused = false;
        if (s->gg_kick || caught_up) { /* the grant guard queued a query, or is done, or the
                                        * server caught up: the client side runs */
            s->gg_kick = false;
            if (!s->gg) s->cl.rescan = s->cl.in != NULL;
            r = relay_pump(s, &s->cl, &s->sv, true, &why);
            if (r == PUMP_CLOSE) {
                session_close(s, why);
                return;
            }
            s->c2s_blocked = r == PUMP_BLOCKED;
        }
    }
    /* (a framing error found by the re-pump above, the grant guard's or a caught-up one) */
    if (client_bad_end(s)) return;
    relay_update_interest(s);
}

static void relay_start(struct session *s)
{
    if (!s->reg) {
        s->reg = registry_add(s->w, s->id, s->ident, s->target->name, s->addr_text, s->app_name);
        metrics_gauge_add(M_CONNECTIONS_CURRENT, s->ident->kind, 0, 1);
        metrics_inc(M_CONNECTIONS_TOTAL, s->ident->kind, 0);
    }
    if (!s->audit_started && relay_audit_on(s)) {
        relay_audit_session(s, AUDIT_SESSION_START, NULL);
        s->audit_started = true;
    }
    side_release_in(&s->sv);
    if (s->sv.in) {
        s->sv.fwd = 0; /* anything after ReadyForQuery is relayed from here */
        s->sv.rescan = true;
    }
    /* A client may pipeline its first messages behind the password: frame them too. */
    if (s->cl.in) s->cl.rescan = true;
    relay_run(s, true, true);
}

/* ---- events and timers ------------------------------------------------------------- */

void session_on_event(struct ev_handler *h, uint32_t events)
{
    struct session *s = h->owner;
    bool from_client = h->kind == EV_CLIENT;
    switch (s->state) {
    case S_STARTUP:
        if (!client_out_flush(s)) return;
        on_startup(s);
        return;
    case S_TLS_ACCEPT:
        on_tls_accept(s);
        return;
    case S_AUTH:
        if (!client_out_flush(s)) return;
        on_auth(s);
        return;
    case S_AUTH_DELAY:
    case S_DEAD:
        return;
    case S_UP_RESOLVE: /* nothing is watched */
        return;
    case S_UP_CONNECT:
        if (!from_client) on_up_connect(s);
        return;
    case S_UP_SSLREQ:
    case S_UP_TLS:
    case S_UP_LOGIN:
        if (!from_client) login_continue(s);
        return;
    case S_CLOSING:
        if (!from_client) return;
        if (s->lingering) {
            closing_drain(s);
            return;
        }
        if (client_out_flush(s)) closing_linger(s);
        return;
    case S_RELAY: {
        if (from_client && (s->parked || s->gg) && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
            s->client_left = true;
            session_close(s, "client disconnected while its statement waited");
            return;
        }
        if (from_client && s->client_eof && (events & (EPOLLHUP | EPOLLERR))) {
            session_close(s, "client disconnected"); /* gone both ways: nothing can be
                                                      * delivered */
            return;
        }
        bool in = events & (EPOLLIN | EPOLLHUP | EPOLLERR);
        bool out = events & EPOLLOUT;
        bool tls = s->cl.sk.ssl || s->sv.sk.ssl;
        if (tls) {
            relay_run(s, true, true);
        } else if (from_client) {
            relay_run(s, in, out);
        } else {
            relay_run(s, out, in);
        }
        return;
    }
    }
}

static void session_drain(struct session *s);

/* Its OIDC token expired (identities.oidc.end_sessions_at_expiry): the session drains as at a
 * shutdown, ending now when nothing runs, else at its next ReadyForQuery, or after
 * server.shutdown_timeout. */
static void session_expire(struct session *s)
{
    s->expires_ms = 0;
    s->expired = true;
    log_info("session %llu: the OIDC token of \"%s\" expired: ending the session",
             (unsigned long long)s->id, s->user);
    session_drain(s);
    if (s->state == S_RELAY && !s->deadline_ms)
        s->deadline_ms = clock_ms() + (uint64_t)s->rt->cfg->server.shutdown_timeout * 1000;
}

static void session_on_tick(struct session *s, uint64_t now_ms)
{
    if (s->expires_ms && now_ms >= s->expires_ms && s->state == S_RELAY) {
        session_expire(s);
        return;
    }
    if (s->ahead_paused && s->state == S_RELAY && now_ms - s->ahead_since_ms >= AHEAD_STALL_MS) {
        ahead_resume(s, true);
        return;
    }
    if (!s->deadline_ms || now_ms < s->deadline_ms) return;
    s->deadline_ms = 0;
    switch (s->state) {
    case S_AUTH_DELAY: {
        char msg[300];
        bool cert = s->ident && s->ident->is_cert; /* PostgreSQL's words for its cert method */
        snprintf(msg, sizeof msg, "%s authentication failed for user \"%.200s\"",
                 cert ? "certificate" : "password", s->user);
        session_fail(s, cert ? "28000" : "28P01", msg, NULL, "authentication failed");
        return;
    }
    case S_UP_RESOLVE: {
        char why[300];
        snprintf(why, sizeof why, "timeout resolving \"%.200s\" (server.connect_timeout)",
                 s->target->host);
        upstream_lookup_abandon(s);
        upstream_fail(s, why, "upstream connect failed");
        return;
    }
    case S_UP_CONNECT: /* this address did not answer: the next one, if any */
        upstream_connect_next(s, "timeout (server.connect_timeout)");
        return;
    case S_UP_SSLREQ:
    case S_UP_TLS:
    case S_UP_LOGIN:
        upstream_fail(s, "timeout (server.connect_timeout)", "upstream login timed out");
        return;
    case S_CLOSING:
        session_close(s, "client did not read the final error");
        return;
    case S_RELAY:
        session_close(s, s->expired ? "token expired (its statement outlasted "
                                      "server.shutdown_timeout)"
                                    : "shutdown timeout");
        return;
    case S_DEAD:
        return;
    default:
        session_close(s, "authentication timeout (server.auth_timeout)");
        return;
    }
}

/* SIGTERM: sessions with nothing running (or a statement waiting for approval, which has
 * not run), and those whose client closed its side (client_eof: it may be gone, and
 * PostgreSQL's backend would not notice before its statement ends, which may be never) close
 * now; the others at their next ReadyForQuery (relay_pump checks s->drain), or at the
 * worker's drain deadline. */
static void session_drain(struct session *s)
{
    s->drain = true;
    if (s->state == S_RELAY && s->client_eof) {
        session_close(s, "shutting down (the client had closed its side)");
        return;
    }
    if (s->state == S_RELAY && park_idle(s)) {
        session_end_drained(s);
        return;
    }
    if (s->state == S_RELAY) {
        bool busy = s->pending_sync || s->cl.msg_left || s->sv.msg_left ||
                    (s->cl.in && s->cl.in->len > s->cl.in->off && !s->expired) ||
                    (s->sv.in && s->sv.in->len > s->sv.in->off);
        if (!busy) {
            session_end_drained(s);
            return;
        }
        s->deadline_ms = s->w->drain_deadline_ms;
        return;
    }
    if (s->state != S_CLOSING)
        session_fail(s, "57P01", "terminating connection due to administrator command", NULL,
                     "shutting down");
}

void session_tick_all(struct worker *w, uint64_t now_ms)
{
    if (w->parked) session_unpark_ready(w); /* waits that end without a wakeup (audit down) */
    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next;
        session_on_tick(s, now_ms);
    }
}

void session_drain_all(struct worker *w)
{
    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next;
        session_drain(s);
    }
}

/* ---- parked statements ------------------------------------------------------------- */

static void session_unpark_remove(struct session *s)
{
    for (struct session **pp = &s->w->parked; *pp; pp = &(*pp)->park_next)
        if (*pp == s) {
            *pp = s->park_next;
            break;
        }
    s->park_next = NULL;
    s->parked = false;
}

/* The session ends while its statement waits for approval: the request is cancelled. */
static void session_park_abandon(struct session *s, const char *reason)
{
    if (!s->parked) return;
    session_unpark_remove(s);
    relay_approve_abandon(s, reason);
}

/* Is the wait of a parked session over? */
static bool park_done(struct session *s)
{
    if (s->park_request[0] && !relay_approve_done(s)) return false;
    return true;
}

void session_unpark_ready(struct worker *w)
{
    struct session **pp = &w->parked;
    while (*pp) {
        struct session *s = *pp;
        if (s->state != S_RELAY || !park_done(s)) {
            pp = &s->park_next;
            continue;
        }
        *pp = s->park_next;
        s->park_next = NULL;
        s->parked = false;
        s->park_ready = true;
        if (s->park_request[0]) relay_approve_resume(s);
        s->cl.rescan = true;
        relay_run(s, true, false);
    }
}

/* ---- ended by an administrator ----------------------------------------------------- */

/* A CancelRequest for a session whose statement waits for approval: that statement never
 * reached the backend (the cancel found it idle), so sluice cancels it, as the server would
 * have: its request is cancelled and the client gets 57014. */
static void session_cancel_parked(struct session *s)
{
    if (!s->parked || !s->park_request[0]) return;
    approve_cancel(s->park_request, "the client cancelled the statement (CancelRequest)");
    session_unpark_remove(s);
    s->park_cancelled = true;
    s->park_ready = true;
    relay_approve_resume(s);
    s->cl.rescan = true;
    relay_run(s, true, false);
}

void session_kill_requested(struct worker *w)
{
    atomic_store(&w->kills, 0);
    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next;
        if (s->state == S_RELAY && s->reg && atomic_exchange(&s->reg->cancel, false) &&
            !atomic_load(&s->reg->kill)) {
            session_cancel_parked(s); /* (it may end the session: next was taken before) */
            continue;
        }
        if (s->state != S_RELAY || !s->reg || !atomic_load(&s->reg->kill)) continue;
        char msg[200];
        snprintf(msg, sizeof msg, "sluice: session ended by an administrator (%s)", s->reg->killer);
        /* Stop what runs upstream too, as pg_terminate_backend would. */
        if (s->cancel_registered && s->pending_sync) cancel_forward(s->be_pid, s->our_key, -1);
        session_fail(s, "57P01", msg, NULL, "ended by an administrator");
    }
}
