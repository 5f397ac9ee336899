/*
 * jwks.c: the OIDC verifier's key sets: parsing JWKS documents, loading them from a file, and
 * fetching them from a URL on a thread of their own.
 *
 * The fetch thread is the only code here that touches the network (libcurl's easy API, which
 * blocks, so it never runs on a worker's loop). It fetches at start, then every refresh
 * interval (10 min), and sooner when a verification met an unknown kid, but never twice within
 * the minimum gap (30 s); a failed fetch keeps the previous keys and is retried after the gap.
 * New key sets are swapped in under the verifier's mutex; verifiers in flight keep the set they
 * took a reference on. Claims and signatures are oidc.c's business.
 */
#include "ident/jwks.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"

#define JWKS_MAX_BYTES (1024 * 1024)
#define JWKS_REFRESH_MS (10u * 60 * 1000)
#define JWKS_MIN_GAP_MS (30u * 1000)
#define RSA_MIN_BITS 2048

struct oidc_verifier {
    struct jwks_policy pol;
    char *jwks_url; /* NULL: keys came from a file, no thread */

    pthread_mutex_t lock;
    pthread_cond_t wake;    /* wakes the fetch thread (refresh wanted, stop) */
    pthread_cond_t changed; /* a new key set was installed */
    struct jwks_keyset *keys;
    unsigned long loads;
    bool refresh_wanted;
    bool attempted;
    bool last_ok;
    uint64_t last_attempt_ms;
    unsigned refresh_ms, min_gap_ms;
    atomic_bool stop;
    bool have_thread;
    pthread_t thread;
};

static const struct {
    const char *name;
    cjose_jwk_kty_t kty;
    int crv; /* EC curve NID, 0 for RSA */
} algs[JWKS_ALG_COUNT] = {
    [JWKS_RS256] = {"RS256", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_RS384] = {"RS384", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_RS512] = {"RS512", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_PS256] = {"PS256", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_PS384] = {"PS384", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_PS512] = {"PS512", CJOSE_JWK_KTY_RSA, 0},
    [JWKS_ES256] = {"ES256", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_256},
    [JWKS_ES384] = {"ES384", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_384},
    [JWKS_ES512] = {"ES512", CJOSE_JWK_KTY_EC, CJOSE_JWK_EC_P_521},
};

int jwks_alg_from_name(const char *name)
{
    for (int i = 0; i < JWKS_ALG_COUNT; i++)
        if (name && strcmp(name, algs[i].name) == 0) return i;
    return -1;
}

const char *jwks_alg_name(int alg)
{
    return alg >= 0 && alg < JWKS_ALG_COUNT ? algs[alg].name : "?";
}

bool jwks_key_fits_alg(const struct jwks_key *k, int alg)
{
    if (alg < 0 || alg >= JWKS_ALG_COUNT) return false;
    if (k->kty != algs[alg].kty) return false;
    if (algs[alg].kty == CJOSE_JWK_KTY_EC && k->crv != algs[alg].crv) return false;
    if (k->alg && strcmp(k->alg, algs[alg].name) != 0) return false;
    return true;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- key sets */

static void keyset_free(struct jwks_keyset *ks)
{
    for (unsigned i = 0; i < ks->n; i++) {
        cjose_jwk_release(ks->keys[i].jwk);
        free(ks->keys[i].kid);
        free(ks->keys[i].alg);
    }
    free(ks->keys);
    free(ks);
}

void jwks_keyset_unref(struct jwks_keyset *ks)
{
    if (ks && atomic_fetch_sub(&ks->refs, 1) == 1) keyset_free(ks);
}

struct jwks_keyset *jwks_keyset_parse(const char *json, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    struct jwks_keyset *ks = NULL;
    if (!root || !json_is_object(root)) {
        set_err(err, errlen, "JWKS is not a JSON object");
        goto fail;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        set_err(err, errlen, "JWKS has no \"keys\" array");
        goto fail;
    }
    ks = xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    size_t n = json_array_size(keys);
    ks->keys = xcalloc(n ? n : 1, sizeof(*ks->keys));
    unsigned skipped = 0, bad = 0;
    size_t i;
    json_t *e;
    json_array_foreach(keys, i, e)
    {
        if (!json_is_object(e)) {
            bad++;
            continue;
        }
        const char *kty = json_string_value(json_object_get(e, "kty"));
        json_t *use = json_object_get(e, "use");
        if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) {
            skipped++; /* encryption keys */
            continue;
        }
        if (!kty || (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)) {
            skipped++; /* oct (symmetric) never; OKP (EdDSA) unsupported by cjose 0.6 */
            continue;
        }
        json_t *jkid = json_object_get(e, "kid"), *jalg = json_object_get(e, "alg");
        if ((jkid && !json_is_string(jkid)) || (jalg && !json_is_string(jalg))) {
            bad++;
            continue;
        }
        cjose_err cerr;
        cjose_jwk_t *jwk = cjose_jwk_import_json((cjose_header_t *)e, &cerr);
        if (!jwk) {
            bad++;
            continue;
        }
        struct jwks_key *k = &ks->keys[ks->n];
        k->kty = cjose_jwk_get_kty(jwk, &cerr);
        if (k->kty == CJOSE_JWK_KTY_RSA && cjose_jwk_get_keysize(jwk, &cerr) < RSA_MIN_BITS) {
            cjose_jwk_release(jwk);
            skipped++;
            continue;
        }
        if (k->kty != CJOSE_JWK_KTY_RSA && k->kty != CJOSE_JWK_KTY_EC) {
            cjose_jwk_release(jwk);
            skipped++;
            continue;
        }
        k->crv = k->kty == CJOSE_JWK_KTY_EC ? (int)cjose_jwk_EC_get_curve(jwk, &cerr) : 0;
        k->jwk = jwk;
        k->kid = jkid ? xstrdup(json_string_value(jkid)) : NULL;
        k->alg = jalg ? xstrdup(json_string_value(jalg)) : NULL;
        ks->n++;
    }
    if (ks->n == 0) {
        set_err(err, errlen, "JWKS has no usable signing key (%u skipped, %u malformed)", skipped,
                bad);
        goto fail;
    }
    json_decref(root);
    return ks;
fail:
    if (ks) keyset_free(ks);
    if (root) json_decref(root);
    return NULL;
}

/* ---- the verifier */

const struct jwks_policy *jwks_verifier_policy(struct oidc_verifier *v)
{
    return &v->pol;
}

struct jwks_keyset *jwks_verifier_keys(struct oidc_verifier *v)
{
    pthread_mutex_lock(&v->lock);
    struct jwks_keyset *ks = v->keys;
    if (ks) atomic_fetch_add(&ks->refs, 1);
    pthread_mutex_unlock(&v->lock);
    return ks;
}

void jwks_verifier_want_refresh(struct oidc_verifier *v)
{
    if (!v->jwks_url) return;
    pthread_mutex_lock(&v->lock);
    if (!v->refresh_wanted) {
        v->refresh_wanted = true;
        pthread_cond_signal(&v->wake);
    }
    pthread_mutex_unlock(&v->lock);
}

void jwks_verifier_set_intervals(struct oidc_verifier *v, unsigned refresh_ms, unsigned min_gap_ms)
{
    pthread_mutex_lock(&v->lock);
    v->refresh_ms = refresh_ms;
    v->min_gap_ms = min_gap_ms;
    pthread_cond_signal(&v->wake);
    pthread_mutex_unlock(&v->lock);
}

static void install_keys(struct oidc_verifier *v, struct jwks_keyset *ks)
{
    pthread_mutex_lock(&v->lock);
    struct jwks_keyset *old = v->keys;
    v->keys = ks;
    v->loads++;
    pthread_cond_broadcast(&v->changed);
    pthread_mutex_unlock(&v->lock);
    jwks_keyset_unref(old);
}

void oidc_verifier_adopt_keys(struct oidc_verifier *v, struct oidc_verifier *from)
{
    if (!v || !from || v == from || !v->jwks_url || !from->jwks_url ||
        strcmp(v->jwks_url, from->jwks_url) != 0)
        return;
    struct jwks_keyset *ks = jwks_verifier_keys(from);
    if (!ks) return;
    pthread_mutex_lock(&v->lock);
    if (!v->keys) { /* (the new verifier's own first fetch may have landed already) */
        v->keys = ks;
        ks = NULL;
        pthread_cond_broadcast(&v->changed);
    }
    pthread_mutex_unlock(&v->lock);
    if (ks) jwks_keyset_unref(ks);
}

bool oidc_verifier_wait_keys(struct oidc_verifier *v, unsigned timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&v->lock);
    while (!v->keys)
        if (pthread_cond_timedwait(&v->changed, &v->lock, &ts) == ETIMEDOUT) break;
    bool have = v->keys != NULL;
    pthread_mutex_unlock(&v->lock);
    return have;
}

unsigned long oidc_verifier_loads(struct oidc_verifier *v)
{
    pthread_mutex_lock(&v->lock);
    unsigned long n = v->loads;
    pthread_mutex_unlock(&v->lock);
    return n;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "jwks_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *data = xmalloc(JWKS_MAX_BYTES + 1);
    size_t n = fread(data, 1, JWKS_MAX_BYTES + 1, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed || n > JWKS_MAX_BYTES) {
        set_err(err, errlen, "jwks_file %s: %s", path, failed ? "read error" : "larger than 1 MiB");
        free(data);
        return NULL;
    }
    data[n] = 0;
    *len = n;
    return data;
}

/* ---- fetching */

struct fetch_buf {
    char *data;
    size_t len;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct fetch_buf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > JWKS_MAX_BYTES) {
        b->too_big = true;
        return 0;
    }
    b->data = xrealloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct oidc_verifier *v = ud;
    return atomic_load(&v->stop) ? 1 : 0; /* non-zero aborts the transfer */
}

static struct jwks_keyset *fetch_keys(struct oidc_verifier *v, char *err, size_t errlen)
{
    struct fetch_buf b = {0};
    struct jwks_keyset *ks = NULL;
    CURL *c = curl_easy_init();
    if (!c) {
        set_err(err, errlen, "curl_easy_init failed");
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_URL, v->jwks_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 15L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice-jwks/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, v);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        set_err(err, errlen, "%s",
                b.too_big ? "response larger than 1 MiB" : curl_easy_strerror(rc));
        goto done;
    }
    if (status != 200) {
        set_err(err, errlen, "HTTP status %ld", status);
        goto done;
    }
    ks = jwks_keyset_parse(b.data ? b.data : "", b.len, err, errlen);
done:
    free(b.data);
    return ks;
}

static void *fetch_main(void *arg)
{
    struct oidc_verifier *v = arg;
    pthread_setname_np(pthread_self(), "sluice-jwks");
    /* the URL up to any query string, for logs */
    int urllen = (int)strcspn(v->jwks_url, "?#");
    pthread_mutex_lock(&v->lock);
    while (!atomic_load(&v->stop)) {
        uint64_t now = mono_ms(), due;
        if (!v->attempted)
            due = now;
        else if (v->refresh_wanted || !v->last_ok)
            due = v->last_attempt_ms + v->min_gap_ms;
        else
            due = v->last_attempt_ms + v->refresh_ms;
        if (now < due) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait = due - now;
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&v->wake, &v->lock, &ts);
            continue;
        }
        v->attempted = true;
        v->last_attempt_ms = now;
        v->refresh_wanted = false;
        pthread_mutex_unlock(&v->lock);

        char err[256] = "";
        struct jwks_keyset *ks = fetch_keys(v, err, sizeof(err));
        if (ks) {
            log_debug("oidc: JWKS from %.*s: %u keys", urllen, v->jwks_url, ks->n);
            install_keys(v, ks);
        } else if (!atomic_load(&v->stop)) {
            log_warn("oidc: JWKS fetch from %.*s failed: %s (keeping the previous keys)", urllen,
                     v->jwks_url, err);
        }
        pthread_mutex_lock(&v->lock);
        v->last_ok = ks != NULL;
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

/* http is allowed only to loopback: a JWKS swapped in transit would let anyone sign tokens.
 * The host is the one libcurl will connect to (its own URL parser: "http://localhost:1@host/"
 * goes to host); a URL with a user or password is refused (it would be logged). */
static bool url_ok(const char *url)
{
    bool https = strncasecmp(url, "https://", 8) == 0;
    if (!https && strncasecmp(url, "http://", 7) != 0) return false;
    CURLU *u = curl_url();
    char *host = NULL, *user = NULL, *password = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host &&
              curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_NO_USER &&
              curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_NO_PASSWORD;
    if (ok && !https) {
        static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]"};
        bool local = false;
        for (unsigned i = 0; i < sizeof(loopback) / sizeof(loopback[0]) && !local; i++)
            local = strcasecmp(host, loopback[i]) == 0;
        ok = local;
    }
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_url_cleanup(u);
    return ok;
}

void oidc_verifier_free(struct oidc_verifier *v)
{
    if (!v) return;
    if (v->have_thread) {
        pthread_mutex_lock(&v->lock);
        atomic_store(&v->stop, true);
        pthread_cond_signal(&v->wake);
        pthread_mutex_unlock(&v->lock);
        pthread_join(v->thread, NULL);
    }
    if (v->jwks_url) curl_global_cleanup();
    jwks_keyset_unref(v->keys);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->wake);
    pthread_cond_destroy(&v->changed);
    free(v->pol.issuer);
    free(v->pol.audience);
    free(v->pol.name_claim);
    free(v->pol.groups_claim);
    free(v->pol.kind_claim);
    for (unsigned i = 0; i < v->pol.n_require_groups; i++)
        free(v->pol.require_groups[i]);
    free(v->pol.require_groups);
    free(v->jwks_url);
    free(v);
}

static bool blank(const char *s)
{
    return !s || !*s;
}

struct oidc_verifier *oidc_verifier_new(const struct cfg_oidc *cfg, char *err, size_t errlen)
{
    if (blank(cfg->issuer) || blank(cfg->audience)) {
        set_err(err, errlen, "oidc: issuer and audience are required");
        return NULL;
    }
    if (blank(cfg->jwks_file) == blank(cfg->jwks_url)) {
        set_err(err, errlen, "oidc: set exactly one of jwks_file and jwks_url");
        return NULL;
    }
    if (!blank(cfg->jwks_url) && !url_ok(cfg->jwks_url)) {
        set_err(err, errlen, "oidc: jwks_url must be https:// (http:// only to loopback)");
        return NULL;
    }
    unsigned mask = 0;
    for (unsigned i = 0; i < cfg->n_algorithms; i++) {
        const char *a = cfg->algorithms[i];
        int alg = jwks_alg_from_name(a);
        if (alg < 0) {
            if (a && strncasecmp(a, "HS", 2) == 0)
                set_err(err, errlen,
                        "oidc: algorithm %s refused: HMAC algorithms need a shared secret, OIDC "
                        "issuers sign with RSA or EC keys",
                        a);
            else if (a && strcasecmp(a, "none") == 0)
                set_err(err, errlen, "oidc: algorithm none refused: tokens must be signed");
            else if (a && strcasecmp(a, "EdDSA") == 0)
                set_err(err, errlen,
                        "oidc: algorithm EdDSA is not supported (cjose 0.6 has no OKP keys)");
            else
                set_err(err, errlen,
                        "oidc: unknown algorithm \"%s\" (RS256, RS384, RS512, PS256, PS384, "
                        "PS512, ES256, ES384, ES512)",
                        a ? a : "");
            return NULL;
        }
        mask |= 1u << alg;
    }
    if (!mask) mask = 1u << JWKS_RS256;

    /* jansson seeds its hash function on first use; do it here, on one thread */
    json_object_seed(0);

    struct oidc_verifier *v = xcalloc(1, sizeof(*v));
    v->pol.issuer = xstrdup(cfg->issuer);
    v->pol.audience = xstrdup(cfg->audience);
    v->pol.name_claim = blank(cfg->name_claim) ? NULL : xstrdup(cfg->name_claim);
    v->pol.groups_claim = xstrdup(blank(cfg->groups_claim) ? "groups" : cfg->groups_claim);
    v->pol.kind_claim = xstrdup(blank(cfg->kind_claim) ? "sluice_kind" : cfg->kind_claim);
    v->pol.algs = mask;
    v->pol.leeway = cfg->leeway;
    if (cfg->n_require_groups) {
        v->pol.require_groups = xcalloc(cfg->n_require_groups, sizeof(char *));
        for (unsigned i = 0; i < cfg->n_require_groups; i++)
            v->pol.require_groups[i] = xstrdup(cfg->require_groups[i]);
        v->pol.n_require_groups = cfg->n_require_groups;
    }
    v->refresh_ms = JWKS_REFRESH_MS;
    v->min_gap_ms = JWKS_MIN_GAP_MS;
    atomic_init(&v->stop, false);
    pthread_mutex_init(&v->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v->wake, &ca);
    pthread_cond_init(&v->changed, &ca);
    pthread_condattr_destroy(&ca);

    if (!blank(cfg->jwks_file)) {
        char perr[200];
        size_t len = 0;
        char *data = read_file(cfg->jwks_file, &len, perr, sizeof(perr));
        struct jwks_keyset *ks = data ? jwks_keyset_parse(data, len, perr, sizeof(perr)) : NULL;
        free(data);
        if (!ks) {
            set_err(err, errlen, "oidc: %s%s%s", perr,
                    strncmp(perr, "jwks_file", 9) == 0 ? "" : " in ",
                    strncmp(perr, "jwks_file", 9) == 0 ? "" : cfg->jwks_file);
            goto fail;
        }
        install_keys(v, ks);
        return v;
    }

    v->jwks_url = xstrdup(cfg->jwks_url);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = pthread_create(&v->thread, NULL, fetch_main, v);
    if (rc != 0) {
        set_err(err, errlen, "oidc: cannot start the JWKS thread: %s", strerror(rc));
        goto fail;
    }
    v->have_thread = true;
    return v;
fail:
    oidc_verifier_free(v);
    return NULL;
}
