/*
 * catalog.c: table OID + attribute number -> schema, table and column names, for masking by
 * column name when a query renames its columns (SELECT email AS x). Names come from each
 * target's catalog over a side connection (libpq, the target's own credentials) kept by one
 * resolver thread; workers read the cache. A miss queues the table and waits for the resolver
 * at most CAT_WAIT_MS (one indexed catalog query, well under a millisecond on a live
 * connection): only the first result of a table in this process pays it. While a target's
 * catalog cannot be reached, lookups do not wait and columns are judged by their field names
 * and values (and none is exempt: exemptions go by the catalog's names). DDL seen through
 * sluice empties the target's cache. Each emptying moves the target's generation on, so that
 * what was built from the names before (the plan cache, src/mask/plan_cache.c) is not used
 * after.
 *
 * It also names the columns of a relation by its name, for a COPY that names no column
 * (`COPY t TO STDOUT`, `COPY (SELECT * FROM t) TO STDOUT`): a schema-qualified name exactly;
 * an unqualified one only when one relation of that name exists in the whole database (the
 * session's search_path is the server's, not the side connection's). Those answers (none
 * included) are kept per target like the others, emptied with them, and asked again in the
 * background once older than CAT_REL_TTL_MS (DDL that did not go through sluice).
 *
 * Lookups by name wait in a queue of their own, small, and are answered only when no lookup
 * by table waits: a client cannot crowd out the lookups masking waits for by naming many
 * relations in COPYs. At most CAT_REL_REFRESH of them are refreshes (past that, a stale
 * answer is used as it is); a first lookup that finds the queue full is not answered (its
 * COPY is masked by value).
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "mask/mask.h"
#include "proxy/proxy.h"

#define CAT_BUCKETS 4096
#define CAT_QUEUE 256     /* lookups by table OID */
#define CAT_REL_QUEUE 16  /* lookups by relation name */
#define CAT_REL_REFRESH 4 /* a refresh is queued while fewer by name are */
#define CAT_MAX_ENTRIES 200000
#define CAT_WAIT_MS 200
#define CAT_DOWN_MS 10000
#define CAT_GEN_SLOTS 64
#define CAT_REL_BUCKETS 256
#define CAT_REL_MAX 4096
#define CAT_REL_TTL_MS 30000
#define CAT_NAME_MAX 64 /* NAMEDATALEN: longer names are not looked up */

struct cat_entry {
    struct cat_entry *next;
    unsigned target;
    uint32_t table;
    int16_t attnum;
    char *schema, *relname, *column;
};

/* A relation looked up by name: its columns, or none (not found, ambiguous, failed). */
struct cat_rel_entry {
    struct cat_rel_entry *next;
    unsigned target;
    char schema[CAT_NAME_MAX], name[CAT_NAME_MAX]; /* as asked; schema "": unqualified */
    uint64_t fetched_ms;
    struct catalog_rel *rel; /* NULL: none */
};

struct cat_req {
    unsigned target;
    uint32_t table;                                /* 0: a lookup by name */
    char schema[CAT_NAME_MAX], name[CAT_NAME_MAX]; /* (by name) */
};

static pthread_rwlock_t cat_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct cat_entry *cat_map[CAT_BUCKETS];
static unsigned cat_entries;
static struct cat_rel_entry *rel_map[CAT_REL_BUCKETS];
static unsigned rel_entries;

/* A queue of requests, answered in order (q_lock). */
struct cat_queue {
    struct cat_req *v;
    unsigned cap, head, len;
    uint64_t asked, done; /* requests queued, answered: a request's ticket is its number */
};

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER; /* a request was answered */
static uint64_t down_until_ms;                              /* catalog unreachable until */
static struct cat_req oid_v[CAT_QUEUE], rel_v[CAT_REL_QUEUE];
static struct cat_queue oid_q = {oid_v, CAT_QUEUE, 0, 0, 0, 0};     /* by table: first */
static struct cat_queue rel_q = {rel_v, CAT_REL_QUEUE, 0, 0, 0, 0}; /* by name */
static bool q_stop, started;
static bool threaded; /* cat_thread runs (not in catalog_test_start_paused()) */
static pthread_t cat_thread;
static struct sluice_config *cat_cfg; /* the snapshot whose targets the side connections use */

/* Times the cache was emptied: of every target, and of the targets of each slot (target %
 * CAT_GEN_SLOTS). Changed under cat_lock; never reset (not even by catalog_stop), so that a
 * generation is never seen twice for different names. */
static uint64_t gen_all;
static uint64_t gen_slot[CAT_GEN_SLOTS];

static unsigned cat_hash(unsigned target, uint32_t table, int16_t attnum)
{
    uint64_t h =
        ((uint64_t)target * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)table << 16) ^ (uint16_t)attnum;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return (unsigned)(h >> 40) % CAT_BUCKETS;
}

void catalog_rel_free(struct catalog_rel *r)
{
    if (!r) return;
    for (unsigned i = 0; i < r->n; i++)
        free(r->columns[i]);
    free(r->columns);
    free(r->generated);
    free(r->schema);
    free(r->relname);
    free(r);
}

static struct catalog_rel *rel_copy(const struct catalog_rel *r)
{
    struct catalog_rel *c = xcalloc(1, sizeof *c);
    c->schema = xstrdup(r->schema);
    c->relname = xstrdup(r->relname);
    c->n = r->n;
    c->columns = xcalloc(r->n ? r->n : 1, sizeof *c->columns);
    c->generated = xcalloc(r->n ? r->n : 1, sizeof *c->generated);
    for (unsigned i = 0; i < r->n; i++) {
        c->columns[i] = xstrdup(r->columns[i]);
        c->generated[i] = r->generated[i];
    }
    return c;
}

static unsigned rel_hash(unsigned target, const char *schema, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ target;
    for (const char *p = schema; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ '.') * 1099511628211ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (unsigned)(h >> 32) % CAT_REL_BUCKETS;
}

static struct cat_rel_entry **rel_find_locked(unsigned target, const char *schema, const char *name)
{
    struct cat_rel_entry **pp = &rel_map[rel_hash(target, schema, name)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->target == target && !strcmp((*pp)->schema, schema) && !strcmp((*pp)->name, name))
            break;
    return pp;
}

static void rel_clear_locked(int target) /* -1: every target */
{
    for (unsigned b = 0; b < CAT_REL_BUCKETS; b++) {
        struct cat_rel_entry **pp = &rel_map[b];
        while (*pp) {
            struct cat_rel_entry *e = *pp;
            if (target >= 0 && e->target != (unsigned)target) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            catalog_rel_free(e->rel);
            free(e);
            rel_entries--;
        }
    }
}

static void cat_clear_locked(int target) /* -1: every target */
{
    rel_clear_locked(target);
    if (target < 0)
        __atomic_add_fetch(&gen_all, 1, __ATOMIC_RELEASE);
    else
        __atomic_add_fetch(&gen_slot[(unsigned)target % CAT_GEN_SLOTS], 1, __ATOMIC_RELEASE);
    for (unsigned b = 0; b < CAT_BUCKETS; b++) {
        struct cat_entry **pp = &cat_map[b];
        while (*pp) {
            struct cat_entry *e = *pp;
            if (target >= 0 && e->target != (unsigned)target) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            free(e->schema);
            free(e->relname);
            free(e->column);
            free(e);
            cat_entries--;
        }
    }
}

uint64_t catalog_generation(unsigned target)
{
    /* a sum of counters that only grow: it grows whenever either does */
    return __atomic_load_n(&gen_all, __ATOMIC_ACQUIRE) +
           __atomic_load_n(&gen_slot[target % CAT_GEN_SLOTS], __ATOMIC_ACQUIRE);
}

bool catalog_lookup(unsigned target, uint32_t table, int16_t attnum, char *schema, size_t sl,
                    char *rel, size_t rl, char *col, size_t cl)
{
    bool found = false;
    pthread_rwlock_rdlock(&cat_lock);
    for (struct cat_entry *e = cat_map[cat_hash(target, table, attnum)]; e; e = e->next)
        if (e->target == target && e->table == table && e->attnum == attnum) {
            snprintf(schema, sl, "%s", e->schema);
            snprintf(rel, rl, "%s", e->relname);
            snprintf(col, cl, "%s", e->column);
            found = true;
            break;
        }
    pthread_rwlock_unlock(&cat_lock);
    return found;
}

static struct cat_queue *queue_of(const struct cat_req *req)
{
    return req->table ? &oid_q : &rel_q;
}

/* Queue a lookup, unless the same one is queued already, or its queue holds max (at most its
 * capacity); returns the ticket it will be answered by (0: none). */
static uint64_t request_locked(const struct cat_req *req, unsigned max)
{
    struct cat_queue *qu = queue_of(req);
    for (unsigned i = 0; i < qu->len; i++) {
        const struct cat_req *r = &qu->v[(qu->head + i) % qu->cap];
        if (r->target == req->target && r->table == req->table &&
            (req->table || (!strcmp(r->schema, req->schema) && !strcmp(r->name, req->name))))
            return qu->asked - qu->len + i + 1;
    }
    if (qu->len >= max || qu->len >= qu->cap) return 0;
    qu->v[(qu->head + qu->len++) % qu->cap] = *req;
    pthread_cond_signal(&q_cond);
    return ++qu->asked;
}

/* Wait (q_lock held) until ticket of req's queue is answered, at most CAT_WAIT_MS. */
static void wait_locked(const struct cat_req *req, uint64_t ticket)
{
    const struct cat_queue *qu = queue_of(req);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += CAT_WAIT_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (ticket && qu->done < ticket && !q_stop)
        if (pthread_cond_timedwait(&done_cond, &q_lock, &until) != 0) break;
}

/* The request to answer next (q_lock held): by table first. NULL: none. Its queue's `done`
 * moves on once it is answered. */
static struct cat_queue *take_locked(struct cat_req *out)
{
    struct cat_queue *qu = oid_q.len ? &oid_q : rel_q.len ? &rel_q : NULL;
    if (!qu) return NULL;
    *out = qu->v[qu->head];
    qu->head = (qu->head + 1) % qu->cap;
    qu->len--;
    return qu;
}

void catalog_request(unsigned target, uint32_t table)
{
    if (!started || !table) return;
    struct cat_req req = {.target = target, .table = table};
    pthread_mutex_lock(&q_lock);
    request_locked(&req, CAT_QUEUE);
    pthread_mutex_unlock(&q_lock);
}

bool catalog_resolve(unsigned target, uint32_t table, int16_t attnum, char *schema, size_t sl,
                     char *rel, size_t rl, char *col, size_t cl)
{
    if (catalog_lookup(target, table, attnum, schema, sl, rel, rl, col, cl)) return true;
    if (!started || !table || clock_ms() < __atomic_load_n(&down_until_ms, __ATOMIC_RELAXED))
        return false;
    struct cat_req req = {.target = target, .table = table};
    pthread_mutex_lock(&q_lock);
    wait_locked(&req, request_locked(&req, CAT_QUEUE));
    pthread_mutex_unlock(&q_lock);
    return catalog_lookup(target, table, attnum, schema, sl, rel, rl, col, cl);
}

/* The cached answer for (target, schema, name): 1 with *out (a copy, or NULL for none), 0 when
 * none is cached; *stale when it is older than CAT_REL_TTL_MS. */
static int rel_cached(unsigned target, const char *schema, const char *name,
                      struct catalog_rel **out, bool *stale)
{
    int found = 0;
    pthread_rwlock_rdlock(&cat_lock);
    struct cat_rel_entry *e = *rel_find_locked(target, schema, name);
    if (e) {
        *out = e->rel ? rel_copy(e->rel) : NULL;
        *stale = clock_ms() >= e->fetched_ms + CAT_REL_TTL_MS;
        found = 1;
    }
    pthread_rwlock_unlock(&cat_lock);
    return found;
}

int catalog_resolve_relation(unsigned target, const char *schema, const char *name, bool wait,
                             struct catalog_rel **out)
{
    *out = NULL;
    if (!started) return 0;
    if (!name || !name[0] || strlen(name) >= CAT_NAME_MAX ||
        (schema && (!schema[0] || strlen(schema) >= CAT_NAME_MAX)))
        return 1; /* never looked up */
    /* pg_temp is the session's own temporary schema: the side connection has another one */
    if (schema && !strcmp(schema, "pg_temp")) return 1;
    struct cat_req req = {.target = target};
    snprintf(req.schema, sizeof req.schema, "%s", schema ? schema : "");
    snprintf(req.name, sizeof req.name, "%s", name);
    bool stale = false;
    bool down = clock_ms() < __atomic_load_n(&down_until_ms, __ATOMIC_RELAXED);
    if (rel_cached(target, req.schema, req.name, out, &stale)) {
        if (stale && !down) { /* this answer now, a fresh one for the next COPY (if room) */
            pthread_mutex_lock(&q_lock);
            request_locked(&req, CAT_REL_REFRESH);
            pthread_mutex_unlock(&q_lock);
        }
        return 1;
    }
    if (down) return 0;
    pthread_mutex_lock(&q_lock);
    uint64_t ticket = request_locked(&req, CAT_REL_QUEUE); /* (full: not answered) */
    if (wait) wait_locked(&req, ticket);
    pthread_mutex_unlock(&q_lock);
    return wait ? rel_cached(target, req.schema, req.name, out, &stale) : 0;
}

void catalog_invalidate(unsigned target)
{
    pthread_rwlock_wrlock(&cat_lock);
    cat_clear_locked((int)target);
    pthread_rwlock_unlock(&cat_lock);
}

/* A libpq connection to target t with its stored credentials (never logged). */
static PGconn *cat_connect(const struct cfg_target *t)
{
    char port[8];
    snprintf(port, sizeof port, "%u", t->port);
    static const char *const binding[] = {[CHANNEL_BINDING_PREFER] = "prefer",
                                          [CHANNEL_BINDING_DISABLE] = "disable",
                                          [CHANNEL_BINDING_REQUIRE] = "require"};
    const char *keys[] = {"host",
                          "port",
                          "dbname",
                          "user",
                          "sslmode",
                          "sslrootcert",
                          "application_name",
                          "connect_timeout",
                          "channel_binding",
                          "password",
                          NULL};
    const char *vals[] = {t->host,
                          port,
                          t->database,
                          t->user,
                          sslmode_name(t->sslmode),
                          t->sslrootcert,
                          "sluice catalog",
                          "5",
                          binding[t->channel_binding],
                          t->password,
                          NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (PQstatus(c) != CONNECTION_OK) {
        log_warn("catalog: cannot connect to target \"%s\": %s", t->name, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void cat_fetch(PGconn *c, unsigned target, uint32_t table)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", table);
    const char *params[] = {oid};
    PGresult *r = PQexecParams(c,
                               "SELECT a.attnum, n.nspname, c.relname, a.attname "
                               "FROM pg_catalog.pg_attribute a "
                               "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                               "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_warn("catalog: lookup of table %u failed: %s", table, PQresultErrorMessage(r));
        PQclear(r);
        return;
    }
    pthread_rwlock_wrlock(&cat_lock);
    if (cat_entries + (unsigned)PQntuples(r) > CAT_MAX_ENTRIES) cat_clear_locked(-1);
    for (int i = 0; i < PQntuples(r); i++) {
        int16_t attnum = (int16_t)atoi(PQgetvalue(r, i, 0));
        unsigned h = cat_hash(target, table, attnum);
        bool have = false;
        for (struct cat_entry *e = cat_map[h]; e && !have; e = e->next)
            have = e->target == target && e->table == table && e->attnum == attnum;
        if (have) continue;
        struct cat_entry *e = xcalloc(1, sizeof *e);
        *e = (struct cat_entry){cat_map[h],
                                target,
                                table,
                                attnum,
                                xstrdup(PQgetvalue(r, i, 1)),
                                xstrdup(PQgetvalue(r, i, 2)),
                                xstrdup(PQgetvalue(r, i, 3))};
        cat_map[h] = e;
        cat_entries++;
    }
    pthread_rwlock_unlock(&cat_lock);
    PQclear(r);
}

/* The columns of relation (schema or "", name): exactly that one when qualified, else the
 * only relation of that name in any schema (several: none, whichever the session's
 * search_path would find). Kept, none included, unless the cache was emptied meanwhile. */
static void cat_fetch_rel(PGconn *c, const struct cat_req *q)
{
    uint64_t gen = catalog_generation(q->target);
    const char *params[] = {q->schema[0] ? q->schema : NULL, q->name};
    /* (relkinds a FROM or a COPY can name: tables, views, materialized views, partitioned and
     * foreign tables, sequences) */
    PGresult *r =
        PQexecParams(c,
                     "WITH r AS (SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c "
                     "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE c.relname = $2::name AND ($1::name IS NULL OR n.nspname = $1::name) "
                     "AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')) "
                     "SELECT r.nspname, r.relname, a.attname, a.attgenerated <> '' "
                     "FROM r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid "
                     "WHERE (SELECT count(*) FROM r) = 1 AND a.attnum > 0 AND NOT a.attisdropped "
                     "ORDER BY a.attnum",
                     2, NULL, params, NULL, NULL, 0);
    struct catalog_rel *rel = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_warn("catalog: lookup of the columns of relation \"%s\" failed: %s", q->name,
                 PQresultErrorMessage(r));
    } else if (PQntuples(r) > 0) {
        unsigned n = (unsigned)PQntuples(r);
        rel = xcalloc(1, sizeof *rel);
        rel->schema = xstrdup(PQgetvalue(r, 0, 0));
        rel->relname = xstrdup(PQgetvalue(r, 0, 1));
        rel->n = n;
        rel->columns = xcalloc(n, sizeof *rel->columns);
        rel->generated = xcalloc(n, sizeof *rel->generated);
        for (unsigned i = 0; i < n; i++) {
            rel->columns[i] = xstrdup(PQgetvalue(r, (int)i, 2));
            rel->generated[i] = PQgetvalue(r, (int)i, 3)[0] == 't';
        }
    }
    PQclear(r);
    pthread_rwlock_wrlock(&cat_lock);
    if (catalog_generation(q->target) != gen) { /* emptied meanwhile: the answer may be old */
        pthread_rwlock_unlock(&cat_lock);
        catalog_rel_free(rel);
        return;
    }
    struct cat_rel_entry **pp = rel_find_locked(q->target, q->schema, q->name);
    if (!*pp) {
        if (rel_entries >= CAT_REL_MAX) {
            rel_clear_locked(-1);
            pp = rel_find_locked(q->target, q->schema, q->name);
        }
        struct cat_rel_entry *e = xcalloc(1, sizeof *e);
        e->target = q->target;
        snprintf(e->schema, sizeof e->schema, "%s", q->schema);
        snprintf(e->name, sizeof e->name, "%s", q->name);
        e->next = *pp;
        *pp = e;
        rel_entries++;
    }
    catalog_rel_free((*pp)->rel);
    (*pp)->rel = rel;
    (*pp)->fetched_ms = clock_ms();
    pthread_rwlock_unlock(&cat_lock);
}

static void *cat_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-catalog");
    unsigned n = cat_cfg->n_targets;
    PGconn **conns = xcalloc(n ? n : 1, sizeof *conns);
    pthread_mutex_lock(&q_lock);
    for (;;) {
        struct cat_req r;
        struct cat_queue *qu;
        while (!(qu = take_locked(&r)) && !q_stop)
            pthread_cond_wait(&q_cond, &q_lock);
        if (q_stop) break;
        pthread_mutex_unlock(&q_lock);
        if (r.target < n) {
            if (conns[r.target] && PQstatus(conns[r.target]) != CONNECTION_OK) {
                PQfinish(conns[r.target]);
                conns[r.target] = NULL;
            }
            if (!conns[r.target]) conns[r.target] = cat_connect(&cat_cfg->targets[r.target]);
            if (conns[r.target] && r.table)
                cat_fetch(conns[r.target], r.target, r.table);
            else if (conns[r.target])
                cat_fetch_rel(conns[r.target], &r);
            else
                __atomic_store_n(&down_until_ms, clock_ms() + CAT_DOWN_MS, __ATOMIC_RELAXED);
        }
        pthread_mutex_lock(&q_lock);
        qu->done++;
        pthread_cond_broadcast(&done_cond);
    }
    pthread_mutex_unlock(&q_lock);
    for (unsigned i = 0; i < n; i++)
        PQfinish(conns[i]);
    free(conns);
    return NULL;
}

const struct sluice_config *catalog_config(void)
{
    return cat_cfg;
}

int catalog_start(struct sluice_config *cfg)
{
    cat_cfg = config_ref(cfg);
    q_stop = false;
    if (pthread_create(&cat_thread, NULL, cat_main, NULL) != 0) {
        config_unref(cat_cfg);
        return -1;
    }
    started = threaded = true;
    return 0;
}

void catalog_stop(void)
{
    if (!started) return;
    pthread_mutex_lock(&q_lock);
    q_stop = true;
    pthread_cond_signal(&q_cond);
    pthread_cond_broadcast(&done_cond);
    pthread_mutex_unlock(&q_lock);
    if (threaded) pthread_join(cat_thread, NULL);
    started = threaded = false;
    oid_q.head = oid_q.len = rel_q.head = rel_q.len = 0;
    oid_q.asked = oid_q.done = rel_q.asked = rel_q.done = 0;
    pthread_rwlock_wrlock(&cat_lock);
    cat_clear_locked(-1);
    pthread_rwlock_unlock(&cat_lock);
    config_unref(cat_cfg);
    cat_cfg = NULL;
}

/* ---- tests (tests/unit/test_catalog.c) */

void catalog_test_start_paused(void)
{
    q_stop = false;
    started = true; /* no resolver thread: requests stay queued, waits time out */
}

void catalog_test_cache_stale(unsigned target, const char *schema, const char *name)
{
    pthread_rwlock_wrlock(&cat_lock);
    struct cat_rel_entry **pp = rel_find_locked(target, schema ? schema : "", name);
    if (!*pp) {
        struct cat_rel_entry *e = xcalloc(1, sizeof *e);
        e->target = target;
        snprintf(e->schema, sizeof e->schema, "%s", schema ? schema : "");
        snprintf(e->name, sizeof e->name, "%s", name);
        *pp = e;
        rel_entries++;
    }
    uint64_t now = clock_ms();
    (*pp)->fetched_ms = now > CAT_REL_TTL_MS ? now - CAT_REL_TTL_MS : 0;
    pthread_rwlock_unlock(&cat_lock);
}

unsigned catalog_test_queued(bool by_name)
{
    pthread_mutex_lock(&q_lock);
    unsigned n = by_name ? rel_q.len : oid_q.len;
    pthread_mutex_unlock(&q_lock);
    return n;
}

uint32_t catalog_test_take(void)
{
    struct cat_req r;
    pthread_mutex_lock(&q_lock);
    struct cat_queue *qu = take_locked(&r);
    if (qu) qu->done++;
    pthread_mutex_unlock(&q_lock);
    return qu ? r.table : UINT32_MAX;
}
