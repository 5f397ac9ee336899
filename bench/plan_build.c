/*
 * plan_build.c: the cost of a RowDescription's masking plan, in ns per call, on one core.
 *
 * Two RowDescriptions: pgbench -S's (one int4 column `abalance` of pgbench_accounts, with its
 * table OID and attribute number), and a 10-column result of text and other columns (the
 * mask_pii table of the integration tests), whose plan is not empty. Three ways:
 *   build    mask_plan_build() with no resolver (column names from the message only);
 *   resolve  mask_plan_build() with a resolver that costs what the relay's does on a catalog
 *            cache hit (a read lock, a hash probe, three names copied into thread-local
 *            buffers: catalog_lookup());
 *   cached   mask_plan_build_cached() with that resolver, after a first call (the relay's
 *            path from then on); only when built with -DPLAN_CACHE.
 * Each call includes mask_plan_free() of its plan. The best of 5 rounds is shown.
 *
 * Build (from the repo root, after `make`; drop -DPLAN_CACHE for a tree without the cache):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Isrc -pthread -DPLAN_CACHE bench/plan_build.c \
 *      build/src/mask/[a-z]*.o build/src/core/buf.o build/src/pg/msg.o \
 *      -o build/bench/plan_build -lhs -lssl -lcrypto -lcjson
 * Run: build/bench/plan_build [calls per round]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mask/mask.h"

struct col {
    const char *name;
    uint32_t table;
    int16_t attnum;
    uint32_t type;
};

static size_t rowdesc(const struct col *c, unsigned n, uint8_t *out)
{
    size_t p = 0;
    out[p++] = (uint8_t)(n >> 8), out[p++] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        size_t l = strlen(c[i].name) + 1;
        memcpy(out + p, c[i].name, l);
        p += l;
        uint32_t v[] = {c[i].table, (uint32_t)(uint16_t)c[i].attnum << 16 | c[i].type >> 16,
                        (c[i].type & 0xffff) << 16 | 0xffff, 0xffffffff};
        for (unsigned k = 0; k < 4; k++)
            for (int s = 24; s >= 0; s -= 8)
                out[p++] = (uint8_t)(v[k] >> s);
        out[p++] = 0, out[p++] = 0; /* format: text */
    }
    return p;
}

/* What catalog_lookup() does on a hit (a table of open addressing here). */
#define BUCKETS 64
struct entry {
    uint32_t table;
    int16_t attnum;
    const char *schema, *rel, *col;
};
static struct entry table[BUCKETS];
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;

static bool resolve(void *ctx, uint32_t t, int16_t attnum, struct mask_colref *out)
{
    (void)ctx;
    static __thread char schema[64], rel[64], col[64];
    bool found = false;
    pthread_rwlock_rdlock(&lock);
    unsigned b = (t * 31u + (uint16_t)attnum) % BUCKETS;
    while (table[b].table && (table[b].table != t || table[b].attnum != attnum))
        b = (b + 1) % BUCKETS;
    const struct entry *e = &table[b];
    if (e->table == t && e->attnum == attnum) {
        snprintf(schema, sizeof schema, "%s", e->schema);
        snprintf(rel, sizeof rel, "%s", e->rel);
        snprintf(col, sizeof col, "%s", e->col);
        found = true;
    }
    pthread_rwlock_unlock(&lock);
    if (!found) return false;
    *out = (struct mask_colref){schema, rel, col};
    return true;
}

static void put(uint32_t t, int16_t attnum, const char *schema, const char *rel, const char *col)
{
    unsigned b = (t * 31u + (uint16_t)attnum) % BUCKETS;
    while (table[b].table)
        b = (b + 1) % BUCKETS;
    table[b] = (struct entry){t, attnum, schema, rel, col};
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

enum way { BUILD, RESOLVE, CACHED };

static double run(const struct mask_db *db, const uint8_t *body, size_t len, enum way way,
                  long calls)
{
    double best = 1e18;
    for (int round = 0; round < 5; round++) {
        double t0 = now_ns();
        for (long i = 0; i < calls; i++) {
            struct mask_plan *p = NULL;
            int r = -1;
            if (way == BUILD) r = mask_plan_build(db, body, len, NULL, NULL, &p);
            if (way == RESOLVE) r = mask_plan_build(db, body, len, resolve, NULL, &p);
#ifdef PLAN_CACHE
            if (way == CACHED) r = mask_plan_build_cached(db, body, len, resolve, NULL, 0, 1, &p);
#endif
            if (r < 0) {
                fprintf(stderr, "malformed\n");
                exit(1);
            }
            mask_plan_free(p);
        }
        double ns = (now_ns() - t0) / (double)calls;
        if (ns < best) best = ns;
    }
    return best;
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 2000000;
    struct cfg_masking cfg = {.enabled = true};
    char err[256];
    struct mask_db *db = mask_db_build(&cfg, err, sizeof err);
    if (!db) {
        fprintf(stderr, "mask_db_build: %s\n", err);
        return 1;
    }
    static const struct col pgbench[] = {{"abalance", 16397, 3, 23}};
    static const struct col pii[] = {
        {"id", 16500, 1, 23},   {"uid", 16500, 2, 2950}, {"email", 16500, 3, 25},
        {"card", 16500, 4, 25}, {"ssn", 16500, 5, 25},   {"phone", 16500, 6, 25},
        {"note", 16500, 7, 25}, {"word", 16500, 8, 25},  {"utf", 16500, 9, 25},
        {"ref", 16500, 10, 25},
    };
    put(16397, 3, "public", "pgbench_accounts", "abalance");
    for (unsigned i = 0; i < 10; i++)
        put(16500, pii[i].attnum, "public", "mask_pii", pii[i].name);

    struct {
        const char *name;
        const struct col *c;
        unsigned n;
    } cases[] = {{"pgbench -S (abalance int4)", pgbench, 1}, {"mask_pii (10 columns)", pii, 10}};
    printf("%-28s %10s %10s %10s  (ns per call)\n", "RowDescription", "build", "resolve", "cached");
    for (unsigned k = 0; k < 2; k++) {
        uint8_t body[1024];
        size_t len = rowdesc(cases[k].c, cases[k].n, body);
        printf("%-28s %10.1f %10.1f", cases[k].name, run(db, body, len, BUILD, calls),
               run(db, body, len, RESOLVE, calls));
#ifdef PLAN_CACHE
        printf(" %10.1f\n", run(db, body, len, CACHED, calls));
#else
        printf(" %10s\n", "-");
#endif
    }
    mask_db_free(db);
    mask_thread_release();
    return 0;
}
