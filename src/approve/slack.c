/*
 * slack.c: Slack interactivity requests, checked and read. Pure: no sockets, no state.
 *
 * Slack signs each request to the interactivity URL with the app's signing secret:
 * X-Slack-Signature = "v0=" + hex(HMAC-SHA-256(secret, "v0:" + X-Slack-Request-Timestamp +
 * ":" + raw body)). We recompute it, compare in constant time, and refuse timestamps more than
 * five minutes away from now (replays). The body is form-encoded with one field, payload=JSON;
 * for a button click (type block_actions) we read the action (approve or deny), the button's
 * value (the request id), the Slack user and the response_url.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "approve/approve.h"
#include "core/buf.h"

#define SLACK_MAX_SKEW 300

int slack_verify_signature(const char *signing_secret, const char *timestamp, const char *signature,
                           const char *body, size_t body_len, int64_t now)
{
    if (!signing_secret || !*signing_secret || !timestamp || !signature || (!body && body_len))
        return -1;
    /* The timestamp: digits only, within five minutes of now. */
    size_t tl = strlen(timestamp);
    if (tl == 0 || tl > 18) return -1;
    for (size_t i = 0; i < tl; i++)
        if (!isdigit((unsigned char)timestamp[i])) return -1;
    long long ts = strtoll(timestamp, NULL, 10);
    if (ts < now - SLACK_MAX_SKEW || ts > now + SLACK_MAX_SKEW) return -1;
    if (strlen(signature) != 3 + 64 || strncmp(signature, "v0=", 3) != 0) return -1;

    size_t n = 3 + tl + 1 + body_len;
    unsigned char *msg = xmalloc(n + 1);
    memcpy(msg, "v0:", 3);
    memcpy(msg + 3, timestamp, tl);
    msg[3 + tl] = ':';
    if (body_len) memcpy(msg + 4 + tl, body, body_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), signing_secret, (int)strlen(signing_secret), msg, n, mac, &maclen);
    free(msg);
    char hex[65];
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
    /* Slack sends lower-case hex; compare the whole length in constant time. */
    char given[65];
    for (unsigned i = 0; i < 64; i++)
        given[i] = (char)tolower((unsigned char)signature[3 + i]);
    given[64] = '\0';
    int ok = CRYPTO_memcmp(hex, given, 64) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok ? 0 : -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The value of field `name` in a form-encoded body, decoded (caller frees); NULL if absent
 * or malformed. */
static char *form_value(const char *body, size_t len, const char *name)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > nl && !memcmp(body + i, name, nl) && body[i + nl] == '=') {
            char *out = xmalloc(end - i + 1);
            size_t o = 0;
            for (size_t k = i + nl + 1; k < end; k++) {
                char c = body[k];
                if (c == '+') {
                    out[o++] = ' ';
                } else if (c == '%') {
                    if (k + 2 >= end) {
                        free(out);
                        return NULL;
                    }
                    int hi = hexval(body[k + 1]), lo = hexval(body[k + 2]);
                    if (hi < 0 || lo < 0) {
                        free(out);
                        return NULL;
                    }
                    out[o++] = (char)(hi << 4 | lo);
                    k += 2;
                } else {
                    out[o++] = c;
                }
            }
            out[o] = '\0';
            if (strlen(out) != o) { /* an embedded NUL */
                free(out);
                return NULL;
            }
            return out;
        }
        i = end + 1;
    }
    return NULL;
}

static void seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) snprintf(err, errlen, "%s", msg);
}

int slack_parse_action(const char *body, size_t body_len, struct slack_action *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!body) {
        seterr(err, errlen, "empty body");
        return -1;
    }
    char *payload = form_value(body, body_len, "payload");
    if (!payload) {
        seterr(err, errlen, "no payload field");
        return -1;
    }
    int ret = -1;
    cJSON *root = cJSON_Parse(payload);
    free(payload);
    if (!cJSON_IsObject(root)) {
        seterr(err, errlen, "payload is not a JSON object");
        goto out;
    }
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "type"));
    if (!type || strcmp(type, "block_actions") != 0) {
        seterr(err, errlen, "payload type is not block_actions");
        goto out;
    }
    cJSON *actions = cJSON_GetObjectItemCaseSensitive(root, "actions");
    cJSON *action = cJSON_IsArray(actions) ? cJSON_GetArrayItem(actions, 0) : NULL;
    const char *aid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(action, "action_id"));
    const char *value = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(action, "value"));
    if (!aid || (strcmp(aid, "approve") != 0 && strcmp(aid, "deny") != 0)) {
        seterr(err, errlen, "no approve or deny action");
        goto out;
    }
    if (!value || !*value || strlen(value) >= sizeof out->request_id) {
        seterr(err, errlen, "no request id in the action");
        goto out;
    }
    out->approve = !strcmp(aid, "approve");
    snprintf(out->request_id, sizeof out->request_id, "%s", value);
    cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
    const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(user, "id"));
    const char *uname = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(user, "username"));
    if (!uname) uname = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(user, "name"));
    if (!uid || !*uid) {
        seterr(err, errlen, "no user in the payload");
        goto out;
    }
    snprintf(out->user_id, sizeof out->user_id, "%s", uid);
    snprintf(out->user_name, sizeof out->user_name, "%s", uname ? uname : "");
    const char *rurl = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "response_url"));
    if (rurl && strlen(rurl) < sizeof out->response_url)
        snprintf(out->response_url, sizeof out->response_url, "%s", rurl);
    ret = 0;
out:
    cJSON_Delete(root);
    return ret;
}
