/*
 * admin.c: the admin HTTP server: listener, routing, bearer auth and roles, JSON replies,
 * /metrics and the embedded dashboard files.
 *
 * libmicrohttpd runs it with one thread per connection (the event stream's threads block in
 * their content callbacks, see sse.c). Every answer is built here from what the hooks return;
 * the hooks do the real work (sessions, audit, approvals, identity). Requests are small: a
 * body over ADMIN_BODY_MAX is refused with 413, and ids in paths are checked before any hook
 * sees them. Nothing here sets a cookie or answers CORS: the API takes bearer tokens only, so
 * another site's page cannot act with a signed-in admin's credentials.
 */
#include "admin/admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_int.h"
#include "admin/assets.h"
#include "admin/metrics.h"
#include "core/buf.h"
#include "core/log.h"

#define ADMIN_MAX_CONNECTIONS 256
#define ADMIN_CONN_TIMEOUT 60 /* seconds without progress before a connection is closed */
/* One address may hold this many of the connections: a client trickling header lines (each
 * resets the timeout) cannot take every slot from the probes and the approvers. */
#define ADMIN_MAX_PER_ADDRESS 32
#define ADMIN_ID_MAX 128
#define ADMIN_TOKEN_MAX 16384

static struct MHD_Daemon *daemon_;
static struct admin_hooks hooks;
static int bound_port;
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;

/* Per-request state libmicrohttpd keeps for us between calls (the uploaded body). */
struct req {
    char *body;
    size_t len;
    bool too_big;
};

void admin_caller_clear(struct admin_caller *c)
{
    if (!c) return;
    free(c->name);
    for (unsigned i = 0; i < c->n_groups; i++)
        free(c->groups[i]);
    free(c->groups);
    memset(c, 0, sizeof *c);
}

/* ---- replies */

static const char *const csp = "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/* admin_reply_take with one more header (retry_after: Retry-After seconds, 0 = none). */
static enum MHD_Result reply_take_retry(struct MHD_Connection *c, unsigned status,
                                        const char *ctype, char *body, size_t len,
                                        unsigned retry_after)
{
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"sluice\"");
    if (retry_after) {
        char v[24];
        snprintf(v, sizeof v, "%u", retry_after);
        MHD_add_response_header(r, "Retry-After", v);
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    metrics_inc(M_ADMIN_HTTP_REQUESTS, status < 400 ? METRICS_OK : METRICS_FAILED, 0);
    return ret;
}

enum MHD_Result admin_reply_take(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 char *body, size_t len)
{
    return reply_take_retry(c, status, ctype, body, len, 0);
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    return admin_reply_take(c, status, "text/plain; charset=utf-8", xstrdup(text), strlen(text));
}

static enum MHD_Result reply_json_take(struct MHD_Connection *c, unsigned status, char *json)
{
    return admin_reply_take(c, status, "application/json", json, strlen(json));
}

/* {"error": msg} with the status, and Retry-After when retry_after is not 0. */
static enum MHD_Result reply_error_retry(struct MHD_Connection *c, unsigned status, const char *msg,
                                         unsigned retry_after)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg ? msg : "error");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return MHD_NO;
    /* cJSON allocates with malloc (the default hooks): MHD_RESPMEM_MUST_FREE frees it */
    return reply_take_retry(c, status, "application/json", s, strlen(s), retry_after);
}

enum MHD_Result admin_reply_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return reply_error_retry(c, status, msg, 0);
}

static const char *status_text(int status)
{
    switch (status) {
    case 400:
        return "bad request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not found";
    case 409:
        return "conflict";
    case 501:
        return "not available in this build";
    case 503:
        return "unavailable";
    default:
        return "internal error";
    }
}

/* Turn a hook's (status, out) into a reply; takes out. */
static enum MHD_Result reply_hook(struct MHD_Connection *c, int status, char *out)
{
    if (status >= 200 && status < 300) {
        if (!out) return admin_reply_error(c, 500, "empty answer");
        return reply_json_take(c, (unsigned)status, out);
    }
    if (status < 400 || status > 599) status = 500;
    enum MHD_Result r = admin_reply_error(c, (unsigned)status, out ? out : status_text(status));
    free(out);
    return r;
}

/* ---- auth */

enum role { ROLE_READ, ROLE_ADMIN, ROLE_APPROVER, ROLE_ADMIN_OR_APPROVER };

static const char *bearer_token(struct MHD_Connection *c, bool allow_query)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h) {
        if (strncasecmp(h, "Bearer ", 7) != 0) return NULL;
        h += 7;
        while (*h == ' ')
            h++;
        return *h ? h : NULL;
    }
    if (allow_query) {
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "access_token");
        if (q && *q) return q;
    }
    return NULL;
}

static const struct sockaddr *client_addr(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return ci ? ci->client_addr : NULL;
}

/* 0 when the caller is authenticated and has the role; else the reply was queued in *ret.
 * An address that sent too many invalid tokens is refused before its token is looked at. */
static int authorize(struct MHD_Connection *c, enum role role, bool allow_query,
                     struct admin_caller *caller, enum MHD_Result *ret)
{
    memset(caller, 0, sizeof *caller);
    const struct sockaddr *from = client_addr(c);
    unsigned wait = admin_throttle_wait(from, admin_mono_seconds());
    if (wait) {
        *ret = reply_error_retry(c, 429, "too many invalid tokens from this address; retry later",
                                 wait);
        return -1;
    }
    const char *tok = bearer_token(c, allow_query);
    if (!tok) {
        *ret = admin_reply_error(c, 401, "bearer token required");
        return -1;
    }
    if (strlen(tok) > ADMIN_TOKEN_MAX || !hooks.authenticate ||
        hooks.authenticate(hooks.ctx, tok, caller) != 0 || !caller->name) {
        admin_caller_clear(caller);
        admin_throttle_failed(from, admin_mono_seconds());
        if (admin_throttle_wait(from, admin_mono_seconds())) { /* this failure reached the limit */
            char host[NI_MAXHOST] = "?";
            if (from)
                getnameinfo(from,
                            from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                        : sizeof(struct sockaddr_in),
                            host, sizeof host, NULL, 0, NI_NUMERICHOST);
            log_warn("admin: %d invalid bearer tokens from %s within %d s: refusing it (429) "
                     "until the window ends",
                     ADMIN_FAIL_MAX, host, ADMIN_FAIL_WINDOW);
        }
        *ret = admin_reply_error(c, 401, "invalid token");
        return -1;
    }
    bool ok;
    switch (role) {
    case ROLE_ADMIN:
        ok = caller->admin;
        break;
    case ROLE_APPROVER:
        ok = caller->approver;
        break;
    default:
        ok = caller->admin || caller->approver;
        break;
    }
    if (!ok) {
        log_info("admin: %s refused: needs the %s role", caller->name,
                 role == ROLE_ADMIN      ? "admin"
                 : role == ROLE_APPROVER ? "approver"
                                         : "admin or approver");
        *ret = admin_reply_error(c, 403,
                                 role == ROLE_ADMIN      ? "admin role required"
                                 : role == ROLE_APPROVER ? "approver role required"
                                                         : "admin or approver role required");
        admin_caller_clear(caller);
        return -1;
    }
    return 0;
}

/* ---- small parsers */

static bool id_ok(const char *s, size_t n)
{
    if (n == 0 || n > ADMIN_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.' || ch == ':'))
            return false;
    }
    return true;
}

/* "90", "90s", "30m", "24h", "7d" -> seconds; -1 when malformed. */
static int64_t parse_duration(const char *s)
{
    char *end;
    errno = 0;
    if (!s || *s < '0' || *s > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || v > (1ull << 40)) return -1;
    unsigned long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    else if (*end == 'd')
        mul = 86400, end++;
    if (*end) return -1;
    return (int64_t)(v * mul);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static bool json_uint(const cJSON *v, uint64_t max, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

/* Parse the optional approve/deny body into d (strings point into *doc, freed by caller). */
static const char *parse_decision(const struct req *r, cJSON **doc, struct admin_decision *d)
{
    memset(d, 0, sizeof *d);
    *doc = NULL;
    size_t i = 0;
    while (r->body && i < r->len &&
           (r->body[i] == ' ' || r->body[i] == '\n' || r->body[i] == '\r' || r->body[i] == '\t'))
        i++;
    if (!r->body || i == r->len) return NULL;
    cJSON *o = cJSON_ParseWithLength(r->body, r->len);
    *doc = o;
    if (!cJSON_IsObject(o)) return "body must be a JSON object";
    const cJSON *v;
    cJSON_ArrayForEach(v, o)
    {
        const char *k = v->string;
        uint64_t n = 0;
        if (strcmp(k, "scope") == 0) {
            if (!cJSON_IsString(v) ||
                (strcmp(v->valuestring, "identity") && strcmp(v->valuestring, "group")))
                return "scope must be \"identity\" or \"group\"";
            d->scope = v->valuestring;
        } else if (strcmp(k, "ttl") == 0) {
            int64_t t = cJSON_IsString(v) ? parse_duration(v->valuestring) : -1;
            if (cJSON_IsString(v) ? t <= 0 : (!json_uint(v, 1ull << 40, &n) || n == 0))
                return "ttl must be a positive number of seconds or a duration like \"24h\"";
            d->ttl = cJSON_IsString(v) ? (uint64_t)t : n;
        } else if (strcmp(k, "uses") == 0) {
            if (!json_uint(v, 1u << 30, &n) || n == 0) return "uses must be a positive integer";
            d->uses = (unsigned)n;
        } else if (strcmp(k, "rows") == 0) {
            if (!json_uint(v, 1ull << 52, &n) || n == 0) return "rows must be a positive integer";
            d->rows = n;
        } else if (strcmp(k, "reason") == 0) {
            if (!cJSON_IsString(v) || strlen(v->valuestring) > 1024)
                return "reason must be a string of at most 1024 bytes";
            d->reason = v->valuestring;
        } else {
            return "unknown field (expected scope, ttl, uses, rows, reason)";
        }
    }
    return NULL;
}

/* ---- routes */

static const char *arg(struct MHD_Connection *c, const char *key)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? v : NULL;
}

static enum MHD_Result route_metrics(struct MHD_Connection *c)
{
    if (hooks.scrape) hooks.scrape(hooks.ctx);
    char *text = metrics_render();
    if (hooks.metrics_extra) {
        char *extra = hooks.metrics_extra(hooks.ctx);
        if (extra) {
            size_t a = strlen(text), b = strlen(extra);
            text = xrealloc(text, a + b + 2);
            memcpy(text + a, extra, b + 1);
            if (b && extra[b - 1] != '\n') memcpy(text + a + b, "\n", 2);
            free(extra);
        }
    }
    return admin_reply_take(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
}

static enum MHD_Result route_ready(struct MHD_Connection *c)
{
    char *why = NULL;
    bool ok = hooks.ready && hooks.ready(hooks.ctx, &why);
    enum MHD_Result r;
    if (ok) {
        r = reply_text(c, 200, "ready\n");
    } else {
        char msg[512];
        snprintf(msg, sizeof msg, "not ready: %s\n",
                 why ? why : (hooks.ready ? "unknown" : "no readiness check"));
        r = reply_text(c, 503, msg);
    }
    free(why);
    return r;
}

static enum MHD_Result route_static(struct MHD_Connection *c, const char *url)
{
    if (strcmp(url, "/") == 0) url = "/index.html";
    size_t n = &admin_n_assets ? admin_n_assets : 0;
    for (size_t i = 0; i < n; i++) {
        const struct admin_asset *a = &admin_assets[i];
        if (strcmp(a->path, url) != 0) continue;
        struct MHD_Response *r =
            MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", a->content_type);
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
        MHD_add_response_header(r, "Content-Security-Policy", csp);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        metrics_inc(M_ADMIN_HTTP_REQUESTS, METRICS_OK, 0);
        return ret;
    }
    return reply_text(c, 404, n ? "not found\n" : "not found (dashboard not built in)\n");
}

static enum MHD_Result route_whoami(struct MHD_Connection *c, const struct admin_caller *who)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", who->name);
    cJSON *g = cJSON_AddArrayToObject(o, "groups");
    for (unsigned i = 0; i < who->n_groups; i++)
        cJSON_AddItemToArray(g, cJSON_CreateString(who->groups[i] ? who->groups[i] : ""));
    cJSON_AddBoolToObject(o, "admin", who->admin);
    cJSON_AddBoolToObject(o, "approver", who->approver);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s ? reply_json_take(c, 200, s) : MHD_NO;
}

static enum MHD_Result route_audit(struct MHD_Connection *c)
{
    struct admin_audit_query q = {
        .identity = arg(c, "identity"),
        .since = arg(c, "since"),
        .until = arg(c, "until"),
        .decision = arg(c, "decision"),
        .kind = arg(c, "kind"),
        .target = arg(c, "target"),
        .limit = 100,
    };
    uint64_t v;
    const char *s = arg(c, "limit");
    if (s) {
        if (parse_u64(s, &v) || v < 1 || v > 1000)
            return admin_reply_error(c, 400, "limit must be between 1 and 1000");
        q.limit = (unsigned)v;
    }
    s = arg(c, "after");
    if (s) {
        if (parse_u64(s, &v)) return admin_reply_error(c, 400, "after must be a sequence number");
        q.after_seq = v;
    }
    if (!hooks.audit_query_json) return reply_hook(c, 501, NULL);
    char *out = NULL;
    int st = hooks.audit_query_json(hooks.ctx, &q, &out);
    return reply_hook(c, st, out);
}

/* Does `url` start with `prefix` followed by an id (and optionally `suffix`)? */
static bool match_id(const char *url, const char *prefix, const char *suffix, char *id)
{
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl) != 0) return false;
    const char *p = url + pl;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (suffix ? (!slash || strcmp(slash, suffix) != 0) : slash != NULL) return false;
    if (n == 0 || n > ADMIN_ID_MAX) {
        id[0] = '\0';
        return true; /* the route matched; the caller rejects the empty/long id */
    }
    memcpy(id, p, n);
    id[n] = '\0';
    return true;
}

static enum MHD_Result route_api(struct MHD_Connection *c, const char *url, const char *method,
                                 struct req *r)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    bool del = strcmp(method, "DELETE") == 0;
    char id[ADMIN_ID_MAX + 1];
    struct admin_caller who;
    enum MHD_Result ret;
    char *out = NULL;
    int st;

    if (strcmp(url, "/api/v1/slack/actions") == 0) {
        if (!post) return admin_reply_error(c, 405, "use POST");
        if (r->too_big) return admin_reply_error(c, 413, "body too large");
        if (!hooks.slack_action) return reply_hook(c, 501, NULL);
        st = hooks.slack_action(
            hooks.ctx, r->body ? r->body : "", r->len,
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Slack-Signature"),
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Slack-Request-Timestamp"), &out);
        return reply_hook(c, st, out);
    }

    if (strcmp(url, "/api/v1/events") == 0) {
        if (!get) return admin_reply_error(c, 405, "use GET");
        if (authorize(c, ROLE_READ, true, &who, &ret)) return ret;
        uint64_t expires = who.expires;
        admin_caller_clear(&who);
        return sse_serve(c, expires);
    }

    /* everything else: the read role at least, checked before the route is even looked at so
     * unauthenticated callers learn nothing about which paths exist */
    bool is_approve = post && match_id(url, "/api/v1/approvals/", "/approve", id);
    bool is_deny = post && !is_approve && match_id(url, "/api/v1/approvals/", "/deny", id);
    bool is_kill = del && match_id(url, "/api/v1/sessions/", NULL, id);
    bool is_revoke = del && match_id(url, "/api/v1/grants/", NULL, id);
    enum role role = (is_approve || is_deny) ? ROLE_APPROVER
                     : is_kill               ? ROLE_ADMIN
                     : is_revoke             ? ROLE_ADMIN_OR_APPROVER
                                             : ROLE_READ;
    if (authorize(c, role, false, &who, &ret)) return ret;

    if ((is_approve || is_deny || is_kill || is_revoke) && !id_ok(id, strlen(id))) {
        ret = admin_reply_error(c, 400, "malformed id");
    } else if (is_approve || is_deny) {
        cJSON *doc = NULL;
        struct admin_decision d;
        const char *bad = r->too_big ? "body too large" : parse_decision(r, &doc, &d);
        if (bad) {
            ret = admin_reply_error(c, r->too_big ? 413 : 400, bad);
        } else if (!hooks.approval_decide) {
            ret = reply_hook(c, 501, NULL);
        } else {
            st = hooks.approval_decide(hooks.ctx, id, is_approve, &d, &who, &out);
            log_info("admin: %s %s request %s: %d", who.name, is_approve ? "approved" : "denied",
                     id, st);
            ret = reply_hook(c, st, out);
        }
        cJSON_Delete(doc);
    } else if (is_kill) {
        if (!hooks.session_kill) {
            ret = reply_hook(c, 501, NULL);
        } else {
            st = hooks.session_kill(hooks.ctx, id, &who, &out);
            log_info("admin: %s ended session %s: %d", who.name, id, st);
            ret = reply_hook(c, st, out);
        }
    } else if (is_revoke) {
        if (!hooks.grant_revoke) {
            ret = reply_hook(c, 501, NULL);
        } else {
            st = hooks.grant_revoke(hooks.ctx, id, &who, &out);
            log_info("admin: %s revoked grant %s: %d", who.name, id, st);
            ret = reply_hook(c, st, out);
        }
    } else if (!get) {
        ret = admin_reply_error(c, 405, "method not allowed");
    } else if (strcmp(url, "/api/v1/whoami") == 0) {
        ret = route_whoami(c, &who);
    } else if (strcmp(url, "/api/v1/sessions") == 0) {
        st = hooks.sessions_json ? hooks.sessions_json(hooks.ctx, &out) : 501;
        ret = reply_hook(c, st, out);
    } else if (strcmp(url, "/api/v1/audit") == 0) {
        ret = route_audit(c);
    } else if (strcmp(url, "/api/v1/audit/verify") == 0) {
        st = hooks.audit_verify_json ? hooks.audit_verify_json(hooks.ctx, &out) : 501;
        ret = reply_hook(c, st, out);
    } else if (strcmp(url, "/api/v1/approvals") == 0) {
        const char *state = arg(c, "state");
        if (state && strcmp(state, "pending") && strcmp(state, "approved") &&
            strcmp(state, "denied") && strcmp(state, "expired") && strcmp(state, "all")) {
            ret = admin_reply_error(c, 400,
                                    "state must be pending, approved, denied, expired or all");
        } else {
            st = hooks.approvals_json
                     ? hooks.approvals_json(hooks.ctx, state ? state : "pending", &out)
                     : 501;
            ret = reply_hook(c, st, out);
        }
    } else if (strcmp(url, "/api/v1/grants") == 0) {
        st = hooks.grants_json ? hooks.grants_json(hooks.ctx, &out) : 501;
        ret = reply_hook(c, st, out);
    } else {
        ret = admin_reply_error(c, 404, "no such endpoint");
    }
    admin_caller_clear(&who);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        *con_cls = xcalloc(1, sizeof *r);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_big && r->len + *upload_size <= ADMIN_BODY_MAX) {
            r->body = xrealloc(r->body, r->len + *upload_size + 1);
            memcpy(r->body + r->len, upload_data, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = '\0';
        } else {
            r->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strncmp(url, "/api/", 5) == 0) return route_api(c, url, method, r);
    if (!get) return admin_reply_error(c, 405, "method not allowed");
    if (strcmp(url, "/healthz") == 0) return reply_text(c, 200, "ok\n");
    if (strcmp(url, "/readyz") == 0) return route_ready(c);
    if (strcmp(url, "/metrics") == 0) return route_metrics(c);
    return route_static(c, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct req *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_debug("admin: libmicrohttpd: %s", line);
}

/* ---- lifecycle */

/* Bind "host:port" / "[v6]:port" and listen; returns the fd or -1 with err set. */
static int admin_bind(const char *addr, char *err, size_t errlen)
{
    char host[256], port[16];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port ||
        (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "admin: listen address \"%s\" is not host:port", addr);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    const char *h = addr;
    if (h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, sizeof port, "%s", colon + 1);

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    int rc = getaddrinfo(strcmp(host, "*") == 0 || !*host ? NULL : host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "admin: cannot resolve %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) snprintf(err, errlen, "admin: cannot listen on %s: %s", addr, strerror(e));
    return fd;
}

static int sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl)) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

int admin_start(const struct sluice_config *cfg, const struct admin_hooks *h, char *err,
                size_t errlen)
{
    pthread_mutex_lock(&life_lock);
    if (daemon_) {
        pthread_mutex_unlock(&life_lock);
        snprintf(err, errlen, "admin: already running");
        return -1;
    }
    admin_throttle_reset();
    const char *addr = cfg && cfg->listen.admin ? cfg->listen.admin : "127.0.0.1:7480";
    int fd = admin_bind(addr, err, errlen);
    if (fd < 0) {
        pthread_mutex_unlock(&life_lock);
        return -1;
    }
    hooks = h ? *h : (struct admin_hooks){0};
    bound_port = sock_port(fd);
    sse_open();
    daemon_ = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                   MHD_USE_AUTO | MHD_USE_ERROR_LOG,
                               0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_CONNECTIONS,
                               MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ADMIN_MAX_PER_ADDRESS,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_CONN_TIMEOUT,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                               MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_END);
    if (!daemon_) {
        sse_close();
        close(fd);
        bound_port = 0;
        pthread_mutex_unlock(&life_lock);
        snprintf(err, errlen, "admin: cannot start the HTTP server on %s", addr);
        return -1;
    }
    if (!&admin_n_assets || admin_n_assets == 0)
        log_warn("admin: dashboard assets not built in; / answers 404");
    log_info("admin: listening on %s (port %d)", addr, bound_port);
    pthread_mutex_unlock(&life_lock);
    return 0;
}

void admin_stop(void)
{
    pthread_mutex_lock(&life_lock);
    if (daemon_) {
        sse_close();
        MHD_stop_daemon(daemon_); /* joins connection threads; closes the listen socket */
        daemon_ = NULL;
        sse_reset();
        bound_port = 0;
        memset(&hooks, 0, sizeof hooks);
    }
    pthread_mutex_unlock(&life_lock);
}

int admin_port(void)
{
    return bound_port;
}
