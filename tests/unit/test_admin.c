/*
 * test_admin.c: the admin HTTP server (src/admin/) driven over real sockets with libcurl.
 *
 * The server runs on 127.0.0.1 with an ephemeral port and FAKE hooks defined below (they
 * record what the server passed them), so these tests check the HTTP side only: auth and
 * roles, routes and JSON pass-through, the SSE stream (delivery within 1 s, filters, a stuck
 * client that must not slow publishing, drop notices), /metrics (counters move, promtool
 * accepts the exposition) and the embedded dashboard when it is linked in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/admin_int.h"
#include "admin/assets.h"
#include "admin/metrics.h"
#include "core/buf.h"

/* ---- fake hooks */

static struct {
    bool ready;
    int decide_calls;
    char decide_id[64];
    bool decide_approve;
    uint64_t decide_ttl, decide_rows;
    unsigned decide_uses;
    char decide_scope[32], decide_reason[64], decide_by[64];
    char killed[64];
    char audit_seen[512];
    char slack_body[128];
} fake;

static char *dupstr(const char *s)
{
    return xstrdup(s);
}

static int fake_authenticate(void *ctx, const char *token, struct admin_caller *c)
{
    assert_ptr_equal(ctx, &fake);
    if (strcmp(token, "admin-token") == 0) {
        c->name = dupstr("root@corp");
        c->admin = true;
    } else if (strcmp(token, "approver-token") == 0) {
        c->name = dupstr("dba@corp");
        c->approver = true;
        c->groups = xcalloc(1, sizeof(char *));
        c->groups[0] = dupstr("dba");
        c->n_groups = 1;
    } else if (strcmp(token, "nobody-token") == 0) {
        c->name = dupstr("bob@corp"); /* valid identity in no admin or approver group */
    } else {
        return -1;
    }
    return 0;
}

static bool fake_ready(void *ctx, char **why)
{
    (void)ctx;
    if (!fake.ready) *why = dupstr("store unreachable");
    return fake.ready;
}

static void fake_scrape(void *ctx)
{
    (void)ctx;
    metrics_set_gauge(M_AUDIT_QUEUE_DEPTH, 0, 0, 7);
    metrics_set_counter(M_AUDIT_EVENTS_WRITTEN, 0, 0, 1234);
}

static char *fake_metrics_extra(void *ctx)
{
    (void)ctx;
    return dupstr("# HELP sluice_test_extra An extra gauge from a hook.\n"
                  "# TYPE sluice_test_extra gauge\nsluice_test_extra 42");
}

static const char sessions_doc[] =
    "{\"sessions\":[{\"id\":\"s1\",\"identity\":{\"name\":\"alice\",\"kind\":\"human\"},"
    "\"target\":\"shop\",\"statements\":3}]}";

static int fake_sessions(void *ctx, char **out)
{
    (void)ctx;
    *out = dupstr(sessions_doc);
    return 200;
}

static int fake_kill(void *ctx, const char *id, const struct admin_caller *by, char **out)
{
    (void)ctx;
    assert_true(by->admin);
    if (strcmp(id, "s1") != 0) {
        *out = dupstr("no such session");
        return 404;
    }
    snprintf(fake.killed, sizeof fake.killed, "%s", id);
    *out = dupstr("{\"ended\":\"s1\"}");
    return 200;
}

static int fake_audit(void *ctx, const struct admin_audit_query *q, char **out)
{
    (void)ctx;
    snprintf(fake.audit_seen, sizeof fake.audit_seen,
             "identity=%s since=%s decision=%s kind=%s limit=%u", q->identity ? q->identity : "-",
             q->since ? q->since : "-", q->decision ? q->decision : "-", q->kind ? q->kind : "-",
             q->limit);
    *out = dupstr("{\"events\":[],\"chain\":{\"ok\":true}}");
    return 200;
}

static int fake_approvals(void *ctx, const char *state, char **out)
{
    (void)ctx;
    char buf[128];
    snprintf(buf, sizeof buf, "{\"state\":\"%s\",\"approvals\":[]}", state);
    *out = dupstr(buf);
    return 200;
}

static int fake_decide(void *ctx, const char *id, bool approve, const struct admin_decision *d,
                       const struct admin_caller *by, char **out)
{
    (void)ctx;
    fake.decide_calls++;
    snprintf(fake.decide_id, sizeof fake.decide_id, "%s", id);
    fake.decide_approve = approve;
    fake.decide_ttl = d->ttl;
    fake.decide_uses = d->uses;
    fake.decide_rows = d->rows;
    snprintf(fake.decide_scope, sizeof fake.decide_scope, "%s", d->scope ? d->scope : "");
    snprintf(fake.decide_reason, sizeof fake.decide_reason, "%s", d->reason ? d->reason : "");
    snprintf(fake.decide_by, sizeof fake.decide_by, "%s", by->name);
    if (strcmp(id, "req_gone") == 0) {
        *out = dupstr("request req_gone is not pending");
        return 409;
    }
    *out = dupstr(approve ? "{\"state\":\"approved\"}" : "{\"state\":\"denied\"}");
    return 200;
}

static int fake_grants(void *ctx, char **out)
{
    (void)ctx;
    *out = dupstr("{\"grants\":[{\"id\":\"grt_1\"}]}");
    return 200;
}

static int fake_revoke(void *ctx, const char *id, const struct admin_caller *by, char **out)
{
    (void)ctx;
    (void)by;
    (void)id;
    *out = dupstr("{\"revoked\":true}");
    return 200;
}

static int fake_slack(void *ctx, const char *body, size_t len, const char *sig, const char *ts,
                      char **out)
{
    (void)ctx;
    if (!sig || !ts || strcmp(sig, "v0=good") != 0) {
        *out = dupstr("bad signature");
        return 401;
    }
    snprintf(fake.slack_body, sizeof fake.slack_body, "%.*s", (int)len, body);
    *out = dupstr("{\"text\":\"ok\"}");
    return 200;
}

static const struct admin_hooks fake_hooks = {
    .ctx = &fake,
    .authenticate = fake_authenticate,
    .ready = fake_ready,
    .scrape = fake_scrape,
    .metrics_extra = fake_metrics_extra,
    .sessions_json = fake_sessions,
    .session_kill = fake_kill,
    .audit_query_json = fake_audit,
    .approvals_json = fake_approvals,
    .approval_decide = fake_decide,
    .grants_json = fake_grants,
    .grant_revoke = fake_revoke,
    .slack_action = fake_slack,
};

/* ---- HTTP client helpers */

struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
    size_t hlen;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    r->body = xrealloc(r->body, r->len + sz * n + 1);
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = '\0';
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, k);
        r->hlen += k;
        r->headers[r->hlen] = '\0';
    }
    return k;
}

static char base_url[64];

static void http(const char *method, const char *path, const char *token, const char *body,
                 const char *extra_header, struct resp *r)
{
    memset(r, 0, sizeof *r);
    r->body = xstrdup("");
    char url[512], auth[256];
    snprintf(url, sizeof url, "%s%s", base_url, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    /* extra_header: one or more "Name: value" lines separated by '\n' */
    for (const char *e = extra_header; e && *e;) {
        const char *nl = strchr(e, '\n');
        char line[512];
        snprintf(line, sizeof line, "%.*s", nl ? (int)(nl - e) : (int)strlen(e), e);
        h = curl_slist_append(h, line);
        e = nl ? nl + 1 : e + strlen(e);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    assert_int_equal(rc, CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- setup */

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static struct sluice_config cfg;
    cfg.listen.admin = "127.0.0.1:0";
    char err[256];
    admin_set_keepalive_ms(200);
    if (admin_start(&cfg, &fake_hooks, err, sizeof err) != 0) {
        fprintf(stderr, "admin_start: %s\n", err);
        return -1;
    }
    if (admin_port() <= 0) return -1;
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", admin_port());
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    admin_stop();
    curl_global_cleanup();
    return 0;
}

/* ---- tests: plain routes and auth */

static void test_healthz_and_readyz(void **state)
{
    (void)state;
    struct resp r;
    http("GET", "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    resp_free(&r);

    fake.ready = false;
    http("GET", "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "store unreachable"));
    resp_free(&r);
    fake.ready = true;
    http("GET", "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_auth_required(void **state)
{
    (void)state;
    struct resp r;
    http("GET", "/api/v1/sessions", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    assert_string_equal(r.body, "{\"error\":\"bearer token required\"}");
    resp_free(&r);

    http("GET", "/api/v1/sessions", "wrong-token", NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body, "{\"error\":\"invalid token\"}");
    resp_free(&r);

    /* a Basic header is not a bearer token */
    http("GET", "/api/v1/sessions", NULL, NULL, "Authorization: Basic YWRtaW4tdG9rZW4=", &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);

    /* the query-string token is only for the event stream */
    http("GET", "/api/v1/sessions?access_token=admin-token", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);

    /* authenticated, but in neither the admin nor the approver role */
    http("GET", "/api/v1/sessions", "nobody-token", NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);

    /* unknown API paths are not revealed before auth */
    http("GET", "/api/v1/nope", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    http("GET", "/api/v1/nope", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void test_json_pass_through(void **state)
{
    (void)state;
    struct resp r;
    http("GET", "/api/v1/sessions", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, sessions_doc);
    assert_non_null(strstr(r.headers, "Content-Type: application/json"));
    resp_free(&r);

    http("GET", "/api/v1/sessions", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    http("GET", "/api/v1/whoami", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(
        r.body, "{\"name\":\"dba@corp\",\"groups\":[\"dba\"],\"admin\":false,\"approver\":true}");
    resp_free(&r);

    http("GET",
         "/api/v1/audit?identity=alice%40corp&since=2024-01-01T00:00:00Z&kind=statement&limit=5",
         "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(
        fake.audit_seen,
        "identity=alice@corp since=2024-01-01T00:00:00Z decision=- kind=statement limit=5");
    resp_free(&r);
    http("GET", "/api/v1/audit?limit=0", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    http("GET", "/api/v1/audit?limit=abc", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    http("GET", "/api/v1/approvals", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"state\":\"pending\",\"approvals\":[]}");
    resp_free(&r);
    http("GET", "/api/v1/approvals?state=bogus", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    http("GET", "/api/v1/grants", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"grants\":[{\"id\":\"grt_1\"}]}");
    resp_free(&r);

    /* a hook that is not wired answers 501 */
    http("GET", "/api/v1/audit/verify", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 501);
    resp_free(&r);
}

static void test_approve_roles_and_body(void **state)
{
    (void)state;
    struct resp r;
    fake.decide_calls = 0;
    /* an admin who is not an approver may not approve */
    http("POST", "/api/v1/approvals/req_abc/approve", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.body, "{\"error\":\"approver role required\"}");
    resp_free(&r);
    http("POST", "/api/v1/approvals/req_abc/approve", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(fake.decide_calls, 0);

    http("POST", "/api/v1/approvals/req_abc/approve", "approver-token",
         "{\"scope\":\"group\",\"ttl\":\"2h\",\"uses\":5,\"rows\":10,\"reason\":\"ok \\\"go\\\"\"}",
         "Content-Type: application/json", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"state\":\"approved\"}");
    resp_free(&r);
    assert_int_equal(fake.decide_calls, 1);
    assert_string_equal(fake.decide_id, "req_abc");
    assert_true(fake.decide_approve);
    assert_int_equal(fake.decide_ttl, 7200);
    assert_int_equal(fake.decide_uses, 5);
    assert_int_equal(fake.decide_rows, 10);
    assert_string_equal(fake.decide_scope, "group");
    assert_string_equal(fake.decide_reason, "ok \"go\"");
    assert_string_equal(fake.decide_by, "dba@corp");

    /* no body: defaults */
    http("POST", "/api/v1/approvals/req_abc/deny", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_false(fake.decide_approve);
    assert_int_equal(fake.decide_ttl, 0);
    assert_string_equal(fake.decide_scope, "");
    resp_free(&r);

    /* bad bodies never reach the hook */
    const char *bad[] = {"[1]",
                         "{\"ttl\":-5}",
                         "{\"ttl\":\"soon\"}",
                         "{\"uses\":1.5}",
                         "{\"scope\":\"world\"}",
                         "{\"extra\":1}",
                         "{not json"};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http("POST", "/api/v1/approvals/req_abc/approve", "approver-token", bad[i], NULL, &r);
        assert_int_equal(r.status, 400);
        assert_non_null(strstr(r.body, "\"error\""));
        resp_free(&r);
    }
    assert_int_equal(fake.decide_calls, 2);

    /* malformed ids never reach the hook */
    http("POST", "/api/v1/approvals/a%20b/approve", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    assert_int_equal(fake.decide_calls, 2);

    /* hook errors become {"error": ...} with the hook's status, escaped */
    http("POST", "/api/v1/approvals/req_gone/approve", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, "{\"error\":\"request req_gone is not pending\"}");
    resp_free(&r);

    /* oversized body */
    size_t big = ADMIN_BODY_MAX + 10;
    char *b = xmalloc(big + 1);
    memset(b, ' ', big);
    b[big] = '\0';
    http("POST", "/api/v1/approvals/req_abc/approve", "approver-token", b, NULL, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    free(b);
}

static void test_session_kill_and_grants(void **state)
{
    (void)state;
    struct resp r;
    http("DELETE", "/api/v1/sessions/s1", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);
    assert_string_equal(fake.killed, "");
    http("DELETE", "/api/v1/sessions/s1", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(fake.killed, "s1");
    resp_free(&r);
    http("DELETE", "/api/v1/sessions/s9", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"error\":\"no such session\"}");
    resp_free(&r);

    http("DELETE", "/api/v1/grants/grt_1", "approver-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    http("DELETE", "/api/v1/grants/grt_1", "nobody-token", NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);
}

static void test_slack(void **state)
{
    (void)state;
    struct resp r;
    http("POST", "/api/v1/slack/actions", NULL, "payload=%7B%7D", "X-Slack-Signature: v0=bad", &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    http("POST", "/api/v1/slack/actions", NULL, "payload=%7B%7D",
         "X-Slack-Signature: v0=good\nX-Slack-Request-Timestamp: 1700000000", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"text\":\"ok\"}");
    assert_string_equal(fake.slack_body, "payload=%7B%7D");
    resp_free(&r);
}

/* ---- SSE */

struct stream {
    char path[256];
    const char *token; /* header token; NULL: none */
    char buf[1 << 16];
    size_t len;
    pthread_mutex_t lock;
    atomic_bool stop;
    long status;
};

static size_t stream_write(char *p, size_t sz, size_t n, void *ud)
{
    struct stream *s = ud;
    pthread_mutex_lock(&s->lock);
    size_t k = sz * n;
    if (s->len + k < sizeof s->buf) {
        memcpy(s->buf + s->len, p, k);
        s->len += k;
        s->buf[s->len] = '\0';
    }
    pthread_mutex_unlock(&s->lock);
    return atomic_load(&s->stop) ? 0 : k;
}

static int stream_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    struct stream *s = ud;
    return atomic_load(&s->stop) ? 1 : 0;
}

static void *stream_run(void *arg)
{
    struct stream *s = arg;
    char url[512], auth[128];
    snprintf(url, sizeof url, "%s%s", base_url, s->path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (s->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", s->token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static bool stream_wait_for(struct stream *s, const char *needle, double timeout)
{
    double end = now_s() + timeout;
    while (now_s() < end) {
        pthread_mutex_lock(&s->lock);
        bool found = strstr(s->buf, needle) != NULL;
        pthread_mutex_unlock(&s->lock);
        if (found) return true;
        usleep(2000);
    }
    return false;
}

static struct stream *stream_open(const char *path, const char *token, pthread_t *th)
{
    struct stream *s = xcalloc(1, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->token = token;
    pthread_mutex_init(&s->lock, NULL);
    assert_int_equal(pthread_create(th, NULL, stream_run, s), 0);
    /* connected once the hello comment arrived and the server counts the client */
    assert_true(stream_wait_for(s, ": sluice event stream", 3.0));
    assert_true(metrics_value(M_ADMIN_SSE_CLIENTS, 0, 0) >= 1);
    return s;
}

/* Wait (up to 3 s) until the server counts n stream clients; true when it does. */
static bool wait_clients(int64_t n)
{
    double until = now_s() + 3;
    while (metrics_value(M_ADMIN_SSE_CLIENTS, 0, 0) != n && now_s() < until)
        usleep(1000);
    return metrics_value(M_ADMIN_SSE_CLIENTS, 0, 0) == n;
}

static void stream_close(struct stream *s, pthread_t th)
{
    atomic_store(&s->stop, true);
    pthread_join(th, NULL);
    /* the server notices the hang-up at its next write (keepalive: 200 ms here) */
    assert_true(wait_clients(0));
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void test_sse_delivers_within_1s(void **state)
{
    (void)state;
    pthread_t th;
    struct stream *s = stream_open("/api/v1/events", "approver-token", &th);
    double t0 = now_s();
    admin_publish_event("{\"kind\":\"statement\",\"identity\":{\"name\":\"alice\",\"kind\":"
                        "\"human\"},\"statement\":\"SELECT 1 -- marker-7731\"}");
    assert_true(stream_wait_for(s, "marker-7731", 1.0));
    assert_true(now_s() - t0 < 1.0);
    /* SSE framing: id line, data line, blank line */
    assert_non_null(strstr(s->buf, "\ndata: {\"kind\":\"statement\""));
    assert_non_null(strstr(s->buf, "marker-7731\"}\n\n"));
    /* a raw newline or carriage return in an event would end the data line: spaces */
    admin_publish_event("{\"m\":\"\nnl-a\rnl-b\r\n\nnl-c\"}\n");
    assert_true(stream_wait_for(s, "nl-c", 1.0));
    assert_non_null(strstr(s->buf, "\ndata: {\"m\":\" nl-a nl-b   nl-c\"} \n\n"));
    /* keepalive comments flow while idle (200 ms in tests) */
    assert_true(stream_wait_for(s, ": keepalive\n\n", 2.0));
    stream_close(s, th);
}

static void test_sse_auth_and_filters(void **state)
{
    (void)state;
    struct resp r;
    http("GET", "/api/v1/events", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    http("GET", "/api/v1/events?access_token=nobody-token", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);

    /* token in the query string (EventSource), server-side filter on decision and kind */
    pthread_t th;
    struct stream *s = stream_open(
        "/api/v1/events?access_token=admin-token&decision=deny,review&kind=agent", NULL, &th);
    admin_publish_event("{\"identity\":{\"name\":\"bot\",\"kind\":\"agent\"},\"decision\":"
                        "\"allow\",\"statement\":\"f-allow\"}");
    admin_publish_event("{\"identity\":{\"name\":\"al\",\"kind\":\"human\"},\"decision\":"
                        "\"deny\",\"statement\":\"f-human\"}");
    admin_publish_event("{\"identity\":{\"name\":\"bot\",\"kind\":\"agent\"},\"decision\":"
                        "\"deny\",\"statement\":\"f-deny\"}");
    admin_publish_event("{\"identity\":{\"name\":\"bot\",\"kind\":\"agent\"},\"decision\":"
                        "\"review\",\"statement\":\"f-review\"}");
    assert_true(stream_wait_for(s, "f-review", 1.0));
    assert_non_null(strstr(s->buf, "f-deny"));
    assert_null(strstr(s->buf, "f-allow"));
    assert_null(strstr(s->buf, "f-human"));
    stream_close(s, th);
}

static void test_sse_filter_matching(void **state)
{
    (void)state;
    struct sse_filter f = {.identity = "alice"};
    assert_true(sse_event_matches("{\"identity\":\"alice\"}", &f));
    assert_true(sse_event_matches("{\"identity\":{\"name\":\"alice\"}}", &f));
    assert_false(sse_event_matches("{\"identity\":{\"name\":\"alicex\"}}", &f));
    assert_false(sse_event_matches("{}", &f));
    assert_false(sse_event_matches("not json", &f));
    struct sse_filter k = {.kind = "human,service"};
    assert_true(sse_event_matches("{\"identity\":{\"kind\":\"service\"}}", &k));
    assert_true(sse_event_matches("{\"identity_kind\":\"human\"}", &k));
    assert_false(sse_event_matches("{\"identity\":{\"kind\":\"agent\"}}", &k));
    struct sse_filter t = {.target = "shop", .decision = "allow"};
    assert_true(sse_event_matches("{\"target\":\"shop\",\"decision\":\"allow\"}", &t));
    assert_false(sse_event_matches("{\"target\":\"shop\",\"decision\":\"deny\"}", &t));
    struct sse_filter none = {0};
    assert_true(sse_event_matches("anything", &none));
}

/* A client that sends the request and never reads: publishing must stay fast, other requests
 * must still be answered, and once it reads again it is told what it missed. */
static void test_sse_stuck_client(void **state)
{
    (void)state;
    assert_true(wait_clients(0));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int small = 4096; /* a small receive buffer makes the stall come sooner */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char req[] = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer admin-token\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    assert_true(wait_clients(1));
    double until;

    char ev[1024];
    memset(ev, 'x', sizeof ev);
    memcpy(ev, "{\"n\":\"", 6);
    memcpy(ev + sizeof ev - 3, "\"}", 3);
    int64_t dropped0 = metrics_value(M_ADMIN_SSE_DROPPED, 0, 0);
    double t0 = now_s();
    for (int i = 0; i < 100000; i++)
        admin_publish_event(ev);
    double took = now_s() - t0;
    print_message("published 100000 events of 1 KiB in %.3f s with a stuck client\n", took);
    assert_true(took < 5.0);

    /* the server still answers others */
    struct resp r;
    http("GET", "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* read again: somewhere in the stream comes ": dropped N" */
    char buf[65536];
    char tail[64] = "";
    bool seen = false;
    until = now_s() + 10;
    while (!seen && now_s() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) break;
        buf[n] = '\0';
        /* look across the chunk boundary too */
        char joined[sizeof tail + 64];
        snprintf(joined, sizeof joined, "%s%.63s", tail, buf);
        if (strstr(buf, ": dropped ") || strstr(joined, ": dropped ")) seen = true;
        size_t keep = n > 32 ? 32 : (size_t)n;
        memcpy(tail, buf + n - keep, keep);
        tail[keep] = '\0';
    }
    close(fd);
    assert_true(seen);
    assert_true(metrics_value(M_ADMIN_SSE_DROPPED, 0, 0) > dropped0);
}

/* A raw stream connection (extra: more header lines, each ending in \r\n). */
static int raw_stream(const char *extra)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer admin-token\r\n%s\r\n",
                     extra);
    assert_int_equal(send(fd, req, (size_t)n, 0), n);
    return fd;
}

/* Read from fd until needle shows up (or 5 s pass); the text read so far goes to got. */
static bool raw_wait_for(int fd, const char *needle, char *got, size_t cap)
{
    size_t len = 0;
    got[0] = '\0';
    double until = now_s() + 5;
    while (!strstr(got, needle) && now_s() < until && len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t n = recv(fd, got + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
        got[len] = '\0';
    }
    return strstr(got, needle) != NULL;
}

/* Events skipped while nobody streamed keep their place in the numbering: a client resuming
 * from before them is told how many it missed. */
static void test_sse_resume_after_skipped(void **state)
{
    (void)state;
    assert_true(wait_clients(0));
    char got[8192];
    int fd = raw_stream("");
    assert_true(wait_clients(1));
    admin_publish_event("{\"n\":\"before-skip\"}");
    assert_true(raw_wait_for(fd, "before-skip", got, sizeof got));
    close(fd);
    char *id = strstr(got, "id: ");
    assert_non_null(id);
    unsigned long long last = strtoull(id + 4, NULL, 10);
    assert_true(wait_clients(0));
    admin_skip_events(2);
    admin_skip_events(0);
    admin_skip_events(1);
    admin_publish_event("{\"n\":\"after-skip\"}");
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %llu\r\n", last);
    fd = raw_stream(hdr);
    assert_true(raw_wait_for(fd, "after-skip", got, sizeof got));
    close(fd);
    assert_non_null(strstr(got, ": dropped 3"));
    assert_true(strstr(got, ": dropped 3") < strstr(got, "after-skip"));
}

/* Big events: the ring keeps to its byte budget, an event over ADMIN_EVENT_MAX is dropped and
 * counted, and the stream still works afterwards. */
static void test_sse_big_events(void **state)
{
    (void)state;
    pthread_t th;
    struct stream *s = stream_open("/api/v1/events?kind=marker", "admin-token", &th);
    size_t n = ADMIN_EVENT_MAX - 100;
    char *big = xmalloc(n + 1);
    memset(big, 'z', n);
    memcpy(big, "{\"kind\":\"big\",\"x\":\"", 20);
    memcpy(big + n - 2, "\"}", 3);
    for (int i = 0; i < (int)(ADMIN_RING_BYTES / n) + 20; i++)
        admin_publish_event(big);
    free(big);
    int64_t d0 = metrics_value(M_ADMIN_SSE_DROPPED, 0, 0);
    char *huge = xmalloc(ADMIN_EVENT_MAX + 2);
    memset(huge, 'h', ADMIN_EVENT_MAX + 1);
    huge[ADMIN_EVENT_MAX + 1] = '\0';
    admin_publish_event(huge);
    free(huge);
    assert_true(metrics_value(M_ADMIN_SSE_DROPPED, 0, 0) >= d0 + 1);
    admin_publish_event("{\"kind\":\"marker\",\"m\":\"after-big\"}");
    assert_true(stream_wait_for(s, "after-big", 5.0));
    stream_close(s, th);
}

/* ---- metrics */

static long long metric_in(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)); p += n) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return atoll(p + n + 1);
    }
    return -1;
}

static void test_metrics(void **state)
{
    (void)state;
    unsigned email = metrics_register_detector("email");
    assert_int_equal(metrics_register_detector("email"), email);
    unsigned weird = metrics_register_detector("we\"ird\\name");

    struct resp r;
    http("GET", "/metrics", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/plain; version=0.0.4"));
    const char *deny_write = "sluice_statements_total{decision=\"deny\",class=\"write\"}";
    long long before = metric_in(r.body, deny_write);
    assert_true(before >= 0);
    long long email_before = metric_in(r.body, "sluice_masked_values_total{detector=\"email\"}");
    assert_true(email_before >= 0);
    assert_int_equal(metric_in(r.body, "sluice_audit_queue_depth"), 7);
    assert_int_equal(metric_in(r.body, "sluice_audit_events_written_total"), 1234);
    assert_int_equal(metric_in(r.body, "sluice_test_extra"), 42);
    assert_non_null(strstr(r.body, "# TYPE sluice_statements_total counter\n"));
    assert_non_null(strstr(r.body, "# TYPE sluice_statement_overhead_seconds histogram\n"));
    assert_non_null(strstr(r.body, "detector=\"we\\\"ird\\\\name\""));
    resp_free(&r);

    metrics_inc(M_STATEMENTS, METRICS_DENY, CFG_CLASS_WRITE);
    metrics_add(M_STATEMENTS, METRICS_DENY, CFG_CLASS_WRITE, 2);
    metrics_add(M_MASKED_VALUES, email, 0, 5);
    metrics_add(M_MASKED_VALUES, weird, 0, 1);
    metrics_inc(M_STATEMENTS, 99, 0); /* out of range: ignored */
    metrics_gauge_add(M_CONNECTIONS_CURRENT, IDENT_AGENT, 0, 2);
    metrics_gauge_add(M_CONNECTIONS_CURRENT, IDENT_AGENT, 0, -1);
    uint64_t hc = metrics_hist_count(H_UPSTREAM_LATENCY);
    metrics_observe_latency(H_UPSTREAM_LATENCY, 3000000); /* 3 ms */

    http("GET", "/metrics", NULL, NULL, NULL, &r);
    assert_int_equal(metric_in(r.body, deny_write), before + 3);
    assert_int_equal(metric_in(r.body, "sluice_masked_values_total{detector=\"email\"}"),
                     email_before + 5);
    assert_int_equal(metric_in(r.body, "sluice_connections_current{kind=\"agent\"}"), 1);
    assert_int_equal(metrics_hist_count(H_UPSTREAM_LATENCY), hc + 1);
    long long le25 = metric_in(r.body, "sluice_upstream_latency_seconds_bucket{le=\"0.0025\"}");
    long long le5 = metric_in(r.body, "sluice_upstream_latency_seconds_bucket{le=\"0.005\"}");
    assert_int_equal(le5 - le25, 1);
    assert_int_equal(metric_in(r.body, "sluice_upstream_latency_seconds_count"), (long long)hc + 1);

    /* promtool, when installed (Debian package prometheus) */
    if (system("command -v promtool >/dev/null 2>&1") == 0) {
        char path[] = "/tmp/sluice-metrics-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, r.body, r.len), (ssize_t)r.len);
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
        int rc = system(cmd);
        unlink(path);
        assert_int_equal(rc, 0);
    } else {
        print_message("promtool not installed (apt-get install -y prometheus): lint skipped\n");
    }
    resp_free(&r);
}

/* Many threads counting at once: no update lost. */
static void *count_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        metrics_inc(M_ROWS, METRICS_TO_CLIENT, 0);
        metrics_observe_latency(H_STATEMENT_OVERHEAD, (uint64_t)i);
    }
    return NULL;
}

static void test_metrics_threads(void **state)
{
    (void)state;
    int64_t rows0 = metrics_value(M_ROWS, METRICS_TO_CLIENT, 0);
    uint64_t h0 = metrics_hist_count(H_STATEMENT_OVERHEAD);
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, count_thread, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(metrics_value(M_ROWS, METRICS_TO_CLIENT, 0) - rows0, 800000);
    assert_int_equal(metrics_hist_count(H_STATEMENT_OVERHEAD) - h0, 800000);
}

/* ---- dashboard */

static void test_dashboard(void **state)
{
    (void)state;
    struct resp r;
    if (!&admin_n_assets || admin_n_assets == 0) {
        print_message("dashboard assets not linked in (build/gen/web_assets.o): skipped\n");
        http("GET", "/", NULL, NULL, NULL, &r);
        assert_int_equal(r.status, 404);
        resp_free(&r);
        return;
    }
    http("GET", "/", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: text/html"));
    assert_non_null(strstr(r.headers, "Content-Security-Policy: default-src 'self'"));
    assert_non_null(strstr(r.body, "app.js"));
    resp_free(&r);
    http("GET", "/app.js", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: text/javascript"));
    /* no data ever goes through innerHTML */
    assert_null(strstr(r.body, "innerHTML"));
    resp_free(&r);
    http("GET", "/nope.js", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

/* Last: stopping with a stream client connected returns promptly. */
static void test_stop_with_stream_open(void **state)
{
    (void)state;
    pthread_t th;
    struct stream *s = stream_open("/api/v1/events", "admin-token", &th);
    /* and one that never reads, with its socket buffers full */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char req[] = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer admin-token\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
    assert_true(wait_clients(2));
    char ev[1024];
    memset(ev, 'y', sizeof ev);
    memcpy(ev, "{\"n\":\"", 6);
    memcpy(ev + sizeof ev - 3, "\"}", 3);
    for (int i = 0; i < 20000; i++)
        admin_publish_event(ev);
    usleep(100000);
    double t0 = now_s();
    admin_stop();
    close(fd);
    assert_true(now_s() - t0 < 5.0);
    assert_int_equal(admin_port(), 0);
    admin_publish_event("{\"after\":\"stop\"}"); /* a no-op, not a crash */
    stream_close(s, th);
}

/* ---- tests: failed tokens per address */

static void test_throttle_window(void **state)
{
    (void)state;
    admin_throttle_reset();
    struct sockaddr_in a = {.sin_family = AF_INET}, b = a;
    inet_pton(AF_INET, "192.0.2.7", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.8", &b.sin_addr);
    for (int i = 0; i < ADMIN_FAIL_MAX - 1; i++)
        admin_throttle_failed((struct sockaddr *)&a, 1000 + i / 10);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&a, 1003), 0);
    admin_throttle_failed((struct sockaddr *)&a, 1003);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&a, 1003), ADMIN_FAIL_WINDOW - 3);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&a, 1000 + ADMIN_FAIL_WINDOW - 1), 1);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&a, 1000 + ADMIN_FAIL_WINDOW), 0);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&b, 1003), 0); /* another address */
    assert_int_equal(admin_throttle_wait(NULL, 1003), 0);
    /* IPv6: one /64 counts as one address */
    struct sockaddr_in6 v6a = {.sin6_family = AF_INET6}, v6b = v6a, v6c = v6a, v6other = v6a;
    inet_pton(AF_INET6, "2001:db8:1:2::1", &v6a.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", &v6b.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2::77", &v6c.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:3::1", &v6other.sin6_addr);
    for (int i = 0; i < ADMIN_FAIL_MAX; i++)
        admin_throttle_failed((struct sockaddr *)(i % 2 ? &v6a : &v6b), 1010);
    assert_true(admin_throttle_wait((struct sockaddr *)&v6c, 1010) > 0);
    assert_int_equal(admin_throttle_wait((struct sockaddr *)&v6other, 1010), 0);
    /* many other addresses failing once cannot push a refused one out of the table */
    for (int i = 0; i < 1000; i++) {
        struct sockaddr_in o = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        admin_throttle_failed((struct sockaddr *)&o, 1011);
    }
    assert_true(admin_throttle_wait((struct sockaddr *)&a, 1011) > 0);
    assert_true(admin_throttle_wait((struct sockaddr *)&v6c, 1011) > 0);
    /* failures spread over more than a window never add up */
    for (int i = 0; i < 3 * ADMIN_FAIL_MAX; i++) {
        admin_throttle_failed((struct sockaddr *)&b, 2000 + i * (ADMIN_FAIL_WINDOW / 10));
        assert_int_equal(
            admin_throttle_wait((struct sockaddr *)&b, 2000 + i * (ADMIN_FAIL_WINDOW / 10)), 0);
    }
    admin_throttle_reset();
}

/* Over HTTP: the address is refused (429, Retry-After) once it reached the limit, even with a
 * good token, so that a right guess looks like a wrong one. */
static void test_throttle_http(void **state)
{
    (void)state;
    admin_throttle_reset();
    struct resp r;
    for (int i = 0; i < ADMIN_FAIL_MAX; i++) {
        http("GET", "/api/v1/sessions", "wrong-token", NULL, NULL, &r);
        assert_int_equal(r.status, 401);
        resp_free(&r);
    }
    http("GET", "/api/v1/sessions", "wrong-token", NULL, NULL, &r);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.headers, "Retry-After: "));
    assert_non_null(strstr(r.body, "too many invalid tokens"));
    resp_free(&r);
    http("GET", "/api/v1/sessions", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 429);
    resp_free(&r);
    http("GET", "/healthz", NULL, NULL, NULL, &r); /* no token needed: not throttled */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    admin_throttle_reset();
    http("GET", "/api/v1/sessions", "admin-token", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_and_readyz),
        cmocka_unit_test(test_auth_required),
        cmocka_unit_test(test_json_pass_through),
        cmocka_unit_test(test_approve_roles_and_body),
        cmocka_unit_test(test_session_kill_and_grants),
        cmocka_unit_test(test_slack),
        cmocka_unit_test(test_sse_delivers_within_1s),
        cmocka_unit_test(test_sse_auth_and_filters),
        cmocka_unit_test(test_sse_filter_matching),
        cmocka_unit_test(test_sse_stuck_client),
        cmocka_unit_test(test_sse_resume_after_skipped),
        cmocka_unit_test(test_sse_big_events),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_metrics_threads),
        cmocka_unit_test(test_dashboard),
        cmocka_unit_test(test_throttle_window),
        cmocka_unit_test(test_throttle_http),
        cmocka_unit_test(test_stop_with_stream_open),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
