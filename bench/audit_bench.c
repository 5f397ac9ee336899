/*
 * audit_bench.c: sustained throughput of the audit path: worker threads call audit_emit()
 * with statement events shaped like the relay's (about 450 bytes of JSON each, carrying their
 * session's and statement shape's JSON made ahead, as the relay's do), one writer
 * thread commits them to a fresh SQLite store in batches. Reports events/s from the first
 * emit to the last commit, and how often a full queue made a producer retry.
 *
 *   Build: compile this file with -Isrc and link it with every object of build/src and the
 *   Makefile's LDLIBS (see the report in docs/audit.md, Throughput).
 *   build/audit_bench [events] [threads] [dir]       (defaults 1000000 2 /tmp)
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/log.h"

struct prod {
    long n;
    unsigned long long retries;
    uint64_t last;
};

#define SESSIONS 64
#define SHAPES 1000

/* The JSON of each session's and each statement shape's fields, made once as the relay does
 * (audit_json_session, audit_json_statement) and carried by every event. */
static struct audit_json sess_json[SESSIONS], stmt_json[SHAPES];

static struct audit_event event_of(long i, char stmt[160])
{
    snprintf(stmt, 160, "SELECT abalance FROM pgbench_accounts WHERE aid = $1 /* %ld */",
             i % SHAPES);
    return (struct audit_event){
            .kind = AUDIT_STATEMENT,
            .session_id = 1000 + (uint64_t)(i % SESSIONS),
            .identity = "alice@corp.com",
            .identity_kind = "human",
            .groups = "engineers,dba",
            .client_addr = "127.0.0.1:54321",
            .application_name = "pgbench",
            .target = "shop",
            .statement = stmt,
            .fingerprint = "a1b2c3d4e5f60718",
            .command = "SELECT",
            .class_ = "read",
            .tables = "public.pgbench_accounts",
            .decision = "allow",
            .rule = "default",
            .duration_us = 120,
            .rows = 1,
            .bytes = 64,
            .digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    };
}

static void json_make(void)
{
    char stmt[160];
    for (long i = 0; i < SESSIONS; i++) {
        struct audit_event ev = event_of(i, stmt);
        audit_json_session(&ev, &sess_json[i]);
    }
    for (long i = 0; i < SHAPES; i++) {
        struct audit_event ev = event_of(i, stmt);
        audit_json_statement(&ev, &stmt_json[i]);
    }
}

static void *producer(void *p)
{
    struct prod *a = p;
    char stmt[160];
    for (long i = 0; i < a->n; i++) {
        struct audit_event ev = event_of(i, stmt);
        ev.session_json = sess_json[i % SESSIONS];
        ev.statement_json = stmt_json[i % SHAPES];
        uint64_t s;
        while ((s = audit_emit(&ev)) == 0) {
            a->retries++;
            usleep(100);
        }
        a->last = s;
    }
    return NULL;
}

/* CPU seconds of the busiest thread other than the caller and the producers: the writer. */
static double writer_cpu_seconds(void)
{
    DIR *d = opendir("/proc/self/task");
    double best = 0;
    struct dirent *de;
    long tick = sysconf(_SC_CLK_TCK);
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) {
            double s = (double)(ut + st) / (double)tick;
            if (atoi(de->d_name) != getpid() && s > best) best = s;
        }
    }
    if (d) closedir(d);
    return best;
}

int main(int argc, char **argv)
{
    long total = argc > 1 ? atol(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *dir = argc > 3 ? argv[3] : "/tmp";
    if (total <= 0 || threads <= 0 || threads > 64) {
        fprintf(stderr, "usage: audit_bench [events] [threads] [dir]\n");
        return 2;
    }
    log_set_level(LOG_ERROR);
    char path[512];
    snprintf(path, sizeof path, "%s/audit-bench-%d.db", dir, (int)getpid());
    struct sluice_config cfg = {0};
    cfg.state.driver = CFG_STATE_SQLITE;
    cfg.state.path = path;
    cfg.audit.enabled = true;
    cfg.audit.checkpoint = 1000;
    cfg.audit.queue = 65536;
    char err[512];
    if (audit_start(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "audit_bench: %s\n", err);
        return 1;
    }
    json_make();
    pthread_t th[64];
    struct prod p[64] = {{0}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++) {
        p[i].n = total / threads;
        pthread_create(&th[i], NULL, producer, &p[i]);
    }
    uint64_t last = 0;
    unsigned long long retries = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (p[i].last > last) last = p[i].last;
        retries += p[i].retries;
    }
    while (audit_committed_seq() < last)
        usleep(500);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wcpu = writer_cpu_seconds();
    audit_stop();
    for (int i = 0; i < SESSIONS; i++)
        audit_json_free(&sess_json[i]);
    for (int i = 0; i < SHAPES; i++)
        audit_json_free(&stmt_json[i]);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    long n = total / threads * threads;
    printf("audit_bench: %ld events, %d producer threads, %.3f s: %.0f events/s sustained "
           "(queue-full retries %llu); writer thread CPU %.2f s = %.1f us/event, "
           "%.0f events/s per writer core\n",
           n, threads, secs, n / secs, retries, wcpu, wcpu * 1e6 / (double)n,
           wcpu > 0 ? (double)n / wcpu : 0.0);
    unlink(path);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    return 0;
}
