/*
 * query.c: the audit trail as JSON for the admin API: a filtered search
 * (GET /api/v1/audit) and a verification of the chain (GET /api/v1/audit/verify). Each call
 * opens the store read-only for its own duration, so the admin thread never shares the
 * writer's connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "store/store.h"

static int add_event(void *ctx, const struct store_event *ev)
{
    cJSON *arr = ctx;
    cJSON *o = cJSON_ParseWithLength(ev->body, ev->body_len);
    if (!o) return 0;
    if (!cJSON_HasObjectItem(o, "seq")) /* (every body holds it) */
        cJSON_AddNumberToObject(o, "seq", (double)ev->seq);
    cJSON_AddStringToObject(o, "hash", ev->hash);
    cJSON_AddItemToArray(arr, o);
    return 0;
}

int audit_query_json(const struct sluice_config *cfg, const struct audit_query *q, char **out,
                     char *err, size_t errlen)
{
    struct store_query sq = {.identity = q->identity,
                             .decision = q->decision,
                             .kind = q->kind,
                             .after_seq = q->after_seq,
                             .limit = q->limit ? q->limit : 100,
                             .newest_first = true};
    unsigned want = sq.limit;
    /* target is not a store column: read more, filter here, keep the newest `want` */
    if (q->target) sq.limit = want * 20 < 20000 ? want * 20 : 20000;
    int64_t now = audit_now_us();
    if (q->since && audit_time_parse(q->since, now, &sq.since_us) < 0) {
        snprintf(err, errlen, "invalid since \"%s\"", q->since);
        return 400;
    }
    if (q->until && audit_time_parse(q->until, now, &sq.until_us) < 0) {
        snprintf(err, errlen, "invalid until \"%s\"", q->until);
        return 400;
    }
    struct store *st;
    if (store_open(&cfg->state, STORE_READONLY, &st, err, errlen) < 0) return 503;
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "events");
    int rc = store_events_query(st, &sq, add_event, arr);
    store_close(st);
    if (rc < 0) {
        cJSON_Delete(root);
        snprintf(err, errlen, "the audit store could not be read");
        return 503;
    }
    if (q->target) { /* not a store column: filter here */
        for (int i = cJSON_GetArraySize(arr) - 1; i >= 0; i--) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, i), "target");
            if (!cJSON_IsString(t) || strcmp(t->valuestring, q->target) != 0)
                cJSON_DeleteItemFromArray(arr, i);
        }
        while ((unsigned)cJSON_GetArraySize(arr) > want) /* oldest first: drop from the front */
            cJSON_DeleteItemFromArray(arr, 0);
    }
    *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return 200;
}

int audit_verify_json(const struct sluice_config *cfg, char **out, char *err, size_t errlen)
{
    struct store *st;
    if (store_open(&cfg->state, STORE_READONLY, &st, err, errlen) < 0) return 503;
    struct audit_verify_result r;
    memset(&r, 0, sizeof r);
    int rc = audit_verify_store(st, NULL, &r);
    store_close(st);
    if (rc < 0) {
        snprintf(err, errlen, "%s", r.what);
        return 503;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", r.intact);
    cJSON_AddNumberToObject(o, "events", (double)r.events);
    if (r.intact)
        cJSON_AddNullToObject(o, "first_broken_seq");
    else
        cJSON_AddNumberToObject(o, "first_broken_seq", (double)r.broken_seq);
    cJSON_AddStringToObject(o, "message", r.intact ? "chain intact" : r.what);
    *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 200;
}
