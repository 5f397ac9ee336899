/*
 * notify.c: tells approvers about requests, on a thread of its own.
 *
 * Jobs (an URL, a JSON body, for webhooks a secret to sign with) are queued by approve.c and
 * posted by one notifier thread with libcurl easy handles, so a slow Slack or webhook receiver
 * never holds up a worker. A job that fails (transport error or a non-2xx status) is retried
 * with exponential backoff, APPROVE_NOTIFY_TRIES times in all, then counted as failed.
 *
 * Slack gets a Block Kit message (incoming webhook) with the statement, who, why and
 * Approve/Deny buttons (action_id approve/deny, value = request id). Webhooks get a JSON event
 * signed with X-Sluice-Signature: sha256=HEX(HMAC-SHA-256(secret, timestamp + "." + body)) and
 * X-Sluice-Timestamp (unix seconds), a fresh timestamp on each try.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "approve/approve_int.h"
#include "core/buf.h"
#include "core/log.h"

#define SLACK_TEXT_MAX 2800 /* Slack caps a section's text at 3000 characters */
#define HTTP_TIMEOUT_S 10
#define QUEUE_MAX 10000

enum job_kind { JOB_SLACK, JOB_WEBHOOK, JOB_PLAIN };

struct job {
    struct job *next;
    enum job_kind kind;
    char *url;
    char *secret; /* webhook: HMAC key; never logged */
    char *body;
    char *request_id;
    unsigned tries;
    int64_t due_ms; /* monotonic */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct job *head;
    unsigned n;
    bool running, stop;
    pthread_t thread;
} Q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static atomic_uint backoff_base_ms = 1000;
static atomic_bool stop_flag;

void notify_set_backoff_ms(unsigned base_ms)
{
    atomic_store(&backoff_base_ms, base_ms ? base_ms : 1000);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_free(struct job *j)
{
    if (!j) return;
    free(j->url);
    if (j->secret) OPENSSL_cleanse(j->secret, strlen(j->secret));
    free(j->secret);
    free(j->body);
    free(j->request_id);
    free(j);
}

static void enqueue(enum job_kind kind, const char *url, const char *secret, char *body_take,
                    const char *request_id)
{
    if (!url || !*url || !body_take) {
        free(body_take);
        return;
    }
    struct job *j = xcalloc(1, sizeof *j);
    j->kind = kind;
    j->url = xstrdup(url);
    j->secret = xstrdup(secret);
    j->body = body_take;
    j->request_id = xstrdup(request_id);
    j->due_ms = mono_ms();
    pthread_mutex_lock(&Q.mu);
    if (!Q.running || Q.n >= QUEUE_MAX) {
        pthread_mutex_unlock(&Q.mu);
        if (Q.running) {
            log_warn("approvals: notification queue full; dropping one for %s",
                     request_id ? request_id : "-");
            approve_count_notify(0, 0, 1);
        }
        job_free(j);
        return;
    }
    /* Append: jobs are served by due time, FIFO among equals. */
    struct job **p = &Q.head;
    while (*p)
        p = &(*p)->next;
    *p = j;
    Q.n++;
    pthread_cond_signal(&Q.cond);
    pthread_mutex_unlock(&Q.mu);
}

/* ---- bodies */

/* Slack mrkdwn wants &, < and > escaped; everything else is literal. */
static char *slack_escape(const char *s, size_t max)
{
    if (!s) s = "";
    size_t n = strlen(s);
    bool cut = n > max;
    if (cut) n = max;
    char *out = xmalloc(n * 5 + 8);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '&'   ? "&amp;"
                          : s[i] == '<' ? "&lt;"
                          : s[i] == '>' ? "&gt;"
                                        : NULL;
        if (rep) {
            memcpy(out + o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            out[o++] = s[i] == '`' ? '\'' : s[i]; /* keep the code block closed */
        }
    }
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static cJSON *mrkdwn(const char *text)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "mrkdwn");
    cJSON_AddStringToObject(o, "text", text);
    return o;
}

static cJSON *plain(const char *text)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "plain_text");
    cJSON_AddStringToObject(o, "text", text);
    return o;
}

static void add_field(cJSON *fields, const char *label, const char *value)
{
    char *v = slack_escape(value && *value ? value : "-", 500);
    size_t n = strlen(label) + strlen(v) + 8;
    char *t = xmalloc(n);
    snprintf(t, n, "*%s*\n%s", label, v);
    cJSON_AddItemToArray(fields, mrkdwn(t));
    free(t);
    free(v);
}

static cJSON *button(const char *action, const char *text, const char *style, const char *id)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "button");
    cJSON_AddStringToObject(b, "action_id", action);
    cJSON_AddItemToObject(b, "text", plain(text));
    cJSON_AddStringToObject(b, "style", style);
    cJSON_AddStringToObject(b, "value", id);
    return b;
}

static void fmt_time(int64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *notify_slack_body(const struct sluice_config *cfg, const struct areq *r)
{
    cJSON *root = cJSON_CreateObject();
    char line[1024];
    snprintf(line, sizeof line, "sluice: approval needed for %.200s on %.200s (%s)",
             r->identity ? r->identity : "?", r->target ? r->target : "?", r->id);
    cJSON_AddStringToObject(root, "text", line); /* notification fallback */
    cJSON *blocks = cJSON_AddArrayToObject(root, "blocks");

    cJSON *header = cJSON_CreateObject();
    cJSON_AddStringToObject(header, "type", "header");
    cJSON_AddItemToObject(header, "text", plain("sluice: approval needed"));
    cJSON_AddItemToArray(blocks, header);

    cJSON *sec = cJSON_CreateObject();
    cJSON_AddStringToObject(sec, "type", "section");
    cJSON *fields = cJSON_AddArrayToObject(sec, "fields");
    char who[600];
    snprintf(who, sizeof who, "%.400s (%s)", r->identity ? r->identity : "?",
             r->kind ? r->kind : "?");
    add_field(fields, "Who", who);
    add_field(fields, "Target", r->target);
    char what[300];
    snprintf(what, sizeof what, "%.100s %.100s%s%.80s", r->command ? r->command : "",
             r->class_name ? r->class_name : "", r->tables && *r->tables ? " on " : "",
             r->tables ? r->tables : "");
    add_field(fields, "Statement", what);
    add_field(fields, "Request", r->id);
    cJSON_AddItemToArray(blocks, sec);

    cJSON *why = cJSON_CreateObject();
    cJSON_AddStringToObject(why, "type", "section");
    char *reason = slack_escape(r->reason && *r->reason ? r->reason : "-", 1000);
    char *rule = slack_escape(r->rule && *r->rule ? r->rule : "-", 200);
    size_t wn = strlen(reason) + strlen(rule) + 40;
    char *wt = xmalloc(wn);
    snprintf(wt, wn, "*Why*\n%s (rule `%s`)", reason, rule);
    cJSON_AddItemToObject(why, "text", mrkdwn(wt));
    cJSON_AddItemToArray(blocks, why);
    free(wt);
    free(reason);
    free(rule);

    cJSON *stmt = cJSON_CreateObject();
    cJSON_AddStringToObject(stmt, "type", "section");
    char *sq = slack_escape(r->statement, SLACK_TEXT_MAX);
    size_t sn = strlen(sq) + 16;
    char *st = xmalloc(sn);
    snprintf(st, sn, "```%s```", sq);
    cJSON_AddItemToObject(stmt, "text", mrkdwn(st));
    cJSON_AddItemToArray(blocks, stmt);
    free(st);
    free(sq);

    cJSON *ctx = cJSON_CreateObject();
    cJSON_AddStringToObject(ctx, "type", "context");
    cJSON *els = cJSON_AddArrayToObject(ctx, "elements");
    char exp[40], ctext[1200];
    fmt_time(r->expires_at, exp, sizeof exp);
    const char *pub = cfg ? cfg->approvals.public_url : NULL;
    if (pub && *pub)
        snprintf(ctext, sizeof ctext,
                 "expires %s · fingerprint %.64s · <%.900s/#/approvals|dashboard>", exp,
                 r->fingerprint ? r->fingerprint : "", pub);
    else
        snprintf(ctext, sizeof ctext,
                 "expires %s · fingerprint %.64s · `sluice approvals approve %s`", exp,
                 r->fingerprint ? r->fingerprint : "", r->id);
    cJSON_AddItemToArray(els, mrkdwn(ctext));
    cJSON_AddItemToArray(blocks, ctx);

    cJSON *actions = cJSON_CreateObject();
    cJSON_AddStringToObject(actions, "type", "actions");
    char block_id[64];
    snprintf(block_id, sizeof block_id, "sluice_%s", r->id);
    cJSON_AddStringToObject(actions, "block_id", block_id);
    cJSON *btns = cJSON_AddArrayToObject(actions, "elements");
    cJSON_AddItemToArray(btns, button("approve", "Approve", "primary", r->id));
    cJSON_AddItemToArray(btns, button("deny", "Deny", "danger", r->id));
    cJSON_AddItemToArray(blocks, actions);

    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *notify_webhook_body(const struct sluice_config *cfg, const char *type, const struct areq *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "type", type);
    char now[40];
    fmt_time(approve_now_ms(), now, sizeof now);
    cJSON_AddStringToObject(root, "time", now);
    cJSON_AddItemToObject(root, "request", areq_to_json(r));
    const char *pub = cfg ? cfg->approvals.public_url : NULL;
    if (pub && *pub) {
        size_t n = strlen(pub) + 64;
        char *u = xmalloc(n);
        snprintf(u, n, "%s/api/v1/approvals/%s", pub, r->id);
        cJSON_AddStringToObject(root, "url", u);
        free(u);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void approve_webhook_sign(const char *secret, const char *timestamp, const char *body,
                          size_t body_len, char hex_out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t tl = strlen(timestamp);
    size_t n = tl + 1 + body_len;
    unsigned char *msg = xmalloc(n + 1);
    memcpy(msg, timestamp, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, body_len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, n, mac, &maclen);
    free(msg);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex_out[2 * i] = hex[mac[i] >> 4];
        hex_out[2 * i + 1] = hex[mac[i] & 15];
    }
    hex_out[64] = '\0';
}

void notify_request(const struct sluice_config *cfg, const struct areq *r)
{
    for (unsigned i = 0; cfg && i < cfg->approvals.n_notify; i++) {
        const struct cfg_notify *n = &cfg->approvals.notify[i];
        if (n->kind == CFG_NOTIFY_SLACK)
            enqueue(JOB_SLACK, n->url, NULL, notify_slack_body(cfg, r), r->id);
        else
            enqueue(JOB_WEBHOOK, n->url, n->secret,
                    notify_webhook_body(cfg, "approval.requested", r), r->id);
    }
}

void notify_outcome(const struct sluice_config *cfg, const char *type, const struct areq *r)
{
    for (unsigned i = 0; cfg && i < cfg->approvals.n_notify; i++) {
        const struct cfg_notify *n = &cfg->approvals.notify[i];
        if (n->kind == CFG_NOTIFY_WEBHOOK)
            enqueue(JOB_WEBHOOK, n->url, n->secret, notify_webhook_body(cfg, type, r), r->id);
    }
}

void notify_post(const char *url, const char *body)
{
    enqueue(JOB_PLAIN, url, NULL, xstrdup(body), NULL);
}

/* ---- the thread */

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static int progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)arg;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    return atomic_load(&stop_flag) ? 1 : 0; /* non-zero aborts the transfer */
}

/* One try: 0 delivered (2xx), -1 not. */
static int post_once(CURL *h, const struct job *j, char *why, size_t whylen)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (j->kind == JOB_WEBHOOK) {
        char ts[32], hex[65], line[128];
        snprintf(ts, sizeof ts, "%lld", (long long)(approve_now_ms() / 1000));
        approve_webhook_sign(j->secret ? j->secret : "", ts, j->body, strlen(j->body), hex);
        snprintf(line, sizeof line, "X-Sluice-Timestamp: %s", ts);
        hdrs = curl_slist_append(hdrs, line);
        snprintf(line, sizeof line, "X-Sluice-Signature: sha256=%s", hex);
        hdrs = curl_slist_append(hdrs, line);
        OPENSSL_cleanse(hex, sizeof hex);
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, j->url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)HTTP_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice-approvals");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(rc));
        return -1;
    }
    if (code < 200 || code > 299) {
        snprintf(why, whylen, "HTTP %ld", code);
        return -1;
    }
    return 0;
}

static const char *kind_name(enum job_kind k)
{
    return k == JOB_SLACK ? "slack" : k == JOB_WEBHOOK ? "webhook" : "slack-response";
}

static void *notify_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-notify");
    CURL *h = curl_easy_init();
    pthread_mutex_lock(&Q.mu);
    while (!Q.stop) {
        /* The job due first. */
        struct job **best = NULL;
        for (struct job **p = &Q.head; *p; p = &(*p)->next)
            if (!best || (*p)->due_ms < (*best)->due_ms) best = p;
        int64_t now = mono_ms();
        if (!best || (*best)->due_ms > now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait = best ? (*best)->due_ms - now : 1000;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&Q.cond, &Q.mu, &ts);
            continue;
        }
        struct job *j = *best;
        *best = j->next;
        Q.n--;
        pthread_mutex_unlock(&Q.mu);

        char why[256] = "";
        int ok = h ? post_once(h, j, why, sizeof why) : -1;
        if (!h) snprintf(why, sizeof why, "curl_easy_init failed");
        j->tries++;
        bool requeue = false;
        struct approve_audit ev;
        memset(&ev, 0, sizeof ev);
        ev.request_id = j->request_id;
        ev.detail = kind_name(j->kind);
        ev.uses_left = -1;
        if (ok != 0 && atomic_load(&stop_flag)) {
            /* Shutting down: the transfer was aborted, not failed; the job is dropped. */
            log_debug("approvals: %s notification for %s dropped at shutdown", kind_name(j->kind),
                      j->request_id ? j->request_id : "-");
        } else if (ok == 0) {
            approve_count_notify(1, 0, 0);
            if (j->kind != JOB_PLAIN) {
                ev.event = APPROVE_EV_NOTIFIED;
                approve_emit(&ev);
            }
        } else if (j->tries < APPROVE_NOTIFY_TRIES) {
            approve_count_notify(0, 1, 0);
            unsigned base = atomic_load(&backoff_base_ms);
            j->due_ms = mono_ms() + (int64_t)base * (1LL << (j->tries - 1));
            log_debug("approvals: %s notification for %s failed (%s); try %u of %u soon",
                      kind_name(j->kind), j->request_id ? j->request_id : "-", why, j->tries + 1,
                      APPROVE_NOTIFY_TRIES);
            requeue = true;
        } else {
            approve_count_notify(0, 0, 1);
            log_warn("approvals: %s notification for %s failed after %u tries: %s",
                     kind_name(j->kind), j->request_id ? j->request_id : "-", j->tries, why);
            ev.event = APPROVE_EV_NOTIFY_FAILED;
            ev.reason = why;
            approve_emit(&ev);
        }
        pthread_mutex_lock(&Q.mu);
        if (requeue) {
            j->next = Q.head;
            Q.head = j;
            Q.n++;
        } else {
            job_free(j);
        }
    }
    pthread_mutex_unlock(&Q.mu);
    if (h) curl_easy_cleanup(h);
    return NULL;
}

int notify_start(char *err, size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "approvals: libcurl initialisation failed");
        return -1;
    }
    pthread_mutex_lock(&Q.mu);
    Q.stop = false;
    atomic_store(&stop_flag, false);
    Q.running = true;
    pthread_mutex_unlock(&Q.mu);
    if (pthread_create(&Q.thread, NULL, notify_main, NULL) != 0) {
        pthread_mutex_lock(&Q.mu);
        Q.running = false;
        pthread_mutex_unlock(&Q.mu);
        snprintf(err, errlen, "approvals: cannot start the notifier thread");
        curl_global_cleanup();
        return -1;
    }
    return 0;
}

void notify_stop(void)
{
    pthread_mutex_lock(&Q.mu);
    if (!Q.running) {
        pthread_mutex_unlock(&Q.mu);
        return;
    }
    Q.stop = true;
    atomic_store(&stop_flag, true);
    pthread_cond_signal(&Q.cond);
    pthread_mutex_unlock(&Q.mu);
    pthread_join(Q.thread, NULL);
    pthread_mutex_lock(&Q.mu);
    Q.running = false;
    struct job *j = Q.head;
    Q.head = NULL;
    Q.n = 0;
    pthread_mutex_unlock(&Q.mu);
    while (j) {
        struct job *next = j->next;
        job_free(j);
        j = next;
    }
    curl_global_cleanup();
}
