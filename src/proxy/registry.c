/*
 * registry.c: the instance-wide list of live sessions, for the admin API (GET and DELETE
 * /api/v1/sessions). Workers own their sessions outright; each relaying session also has a
 * small registry entry, written by its worker with relaxed atomics (statements, rows) and
 * read under the registry lock by the admin thread. Ending a session from the admin thread
 * only sets a flag and wakes the owning worker, which closes it on its own loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/buf.h"
#include "proxy/proxy.h"

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sess_info *reg_head;

struct sess_info *registry_add(struct worker *w, uint64_t id, const struct cfg_identity *ident,
                               const char *target, const char *client, const char *app)
{
    struct sess_info *r = xcalloc(1, sizeof *r);
    r->w = w;
    r->id = id;
    snprintf(r->identity, sizeof r->identity, "%s", ident->name);
    r->kind = ident->kind;
    config_groups_join(ident, r->groups, sizeof r->groups);
    snprintf(r->target, sizeof r->target, "%s", target);
    snprintf(r->client, sizeof r->client, "%s", client);
    snprintf(r->app, sizeof r->app, "%s", app ? app : "");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->started_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_lock(&reg_lock);
    r->next = reg_head;
    if (reg_head) reg_head->prev = r;
    reg_head = r;
    pthread_mutex_unlock(&reg_lock);
    return r;
}

void registry_remove(struct sess_info *r)
{
    if (!r) return;
    pthread_mutex_lock(&reg_lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        reg_head = r->next;
    if (r->next) r->next->prev = r->prev;
    pthread_mutex_unlock(&reg_lock);
    free(r);
}

char *registry_json(void)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "sessions");
    pthread_mutex_lock(&reg_lock);
    for (struct sess_info *r = reg_head; r; r = r->next) {
        cJSON *o = cJSON_CreateObject();
        char id[24], when[40];
        snprintf(id, sizeof id, "%llu", (unsigned long long)r->id);
        time_t secs = (time_t)(r->started_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + k, sizeof when - k, ".%03dZ", (int)(r->started_ms % 1000));
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "identity", r->identity);
        cJSON_AddStringToObject(o, "identity_kind", ident_kind_name(r->kind));
        cJSON *groups = cJSON_AddArrayToObject(o, "groups");
        char tmp[sizeof r->groups];
        memcpy(tmp, r->groups, sizeof tmp);
        char *save = NULL;
        for (char *g = strtok_r(tmp, ",", &save); g; g = strtok_r(NULL, ",", &save))
            cJSON_AddItemToArray(groups, cJSON_CreateString(g));
        cJSON_AddStringToObject(o, "target", r->target);
        cJSON_AddStringToObject(o, "client_addr", r->client);
        cJSON_AddStringToObject(o, "application_name", r->app);
        cJSON_AddStringToObject(o, "started_at", when);
        cJSON_AddNumberToObject(o, "statements", (double)atomic_load(&r->statements));
        cJSON_AddNumberToObject(o, "rows", (double)atomic_load(&r->rows));
        cJSON_AddStringToObject(o, "state", atomic_load(&r->busy) ? "active" : "idle");
        cJSON_AddNumberToObject(o, "worker", (double)r->w->id);
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&reg_lock);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void registry_cancel(uint64_t id)
{
    pthread_mutex_lock(&reg_lock);
    for (struct sess_info *r = reg_head; r; r = r->next) {
        if (r->id != id) continue;
        atomic_store(&r->cancel, true);
        atomic_fetch_add(&r->w->kills, 1);
        uint64_t one = 1;
        if (write(r->w->wake_fd, &one, sizeof one) < 0) { /* the tick notices it too */
        }
        break;
    }
    pthread_mutex_unlock(&reg_lock);
}

int registry_kill(uint64_t id, const char *by)
{
    int rc = -1;
    pthread_mutex_lock(&reg_lock);
    for (struct sess_info *r = reg_head; r; r = r->next) {
        if (r->id != id) continue;
        snprintf(r->killer, sizeof r->killer, "%s", by);
        atomic_store(&r->kill, true);
        atomic_fetch_add(&r->w->kills, 1);
        uint64_t one = 1;
        if (write(r->w->wake_fd, &one, sizeof one) < 0) { /* the tick notices it too */
        }
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}
