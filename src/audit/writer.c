/*
 * writer.c: the audit's queue and writer thread.
 *
 * Workers call audit_emit(): the event goes into a record (one allocation, usually a spare) put
 * in a bounded ring under a mutex that is held only for the push; its sequence number is taken
 * there too, so queue order is chain order. After the push, outside the lock, the emitter
 * writes the event's JSON body up to the value of prev_hash into the record and runs SHA-256
 * over it (audit_rec_body_begin): that work is spread over the workers. One writer thread
 * drains up to 2,000 events at a time, closes each body in its record with the previous
 * event's hash and finishes its hash in order (two SHA-256 blocks), adds a (signed) checkpoint
 * every audit.checkpoint events, and commits the batch in one store transaction (group
 * commit), then appends the JSON lines to audit.jsonl with one fsync. Only then does
 * audit_committed_seq() move and the live feed see the lines (built only when audit.jsonl is
 * written or a feed wants them: the dashboard's while someone streams).
 *
 * Durable events (writes, refusals: audit_event.durable) are also written to the journal
 * (journal.c) before audit_emit() returns, so the relay forwards them at once: their room is
 * reserved under the same mutex, the copy is made after it is released (the writer takes an
 * event only once its emitter is done with it); the writer empties the journal as the store
 * catches up, and audit_start() replays what a crash left in it before anything else is
 * written. Their bodies are left to the writer: a write's result is usually folded into its
 * queued event (audit_fold), whose emitter then writes the body of the folded event.
 *
 * A failed write is retried with the same batch (backoff 10 ms doubling to 1 s) while
 * audit_healthy() is false; new events wait in the ring until it is full, after which
 * audit_emit() returns 0 and counts the loss. When the queue drains, the writer records an
 * events_lost event with the count, so no loss is silent. At a stop it retries for 5 s more:
 * a batch the store still refuses is counted lost and nothing after it is committed (the
 * journal keeps the durable events for the next start); a batch in the store that audit.jsonl
 * refuses is copied there at the next start. Retention runs here every minute.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"
#include "core/buf.h"
#include "core/log.h"

/* A batch is what arrived within BATCH_DELAY_US of its first event, up to BATCH_MAX events.
 * Reads are committed within that delay and a batch's processing (docs/audit.md: 100 ms).
 * Each commit costs the writer about 150 µs besides its events (SQLite's transaction and
 * WAL frames of the pages every commit rewrites, the checkpoints they add, the wakeup): at
 * 20,000 events/s, 50 ms batches instead of 20 ms took its CPU per event from about 2.1 to
 * 1.8 µs. */
#define BATCH_MAX 2000
#define BATCH_DELAY_US 50000
/* While it keeps up, the writer gives its core back (sched_yield) every this many events it
 * serializes, and before it commits: see write_batch(). */
#define YIELD_EVERY 32

/* Event records go back from the writer to the emitters through a list of spares instead of
 * to free(): a block freed by another thread than the one that allocated it never returns to
 * that thread's malloc cache, so each emit took malloc's slow path and each free an arena
 * lock (about 5 µs of the workers' CPU per TPC-B transaction). The spares are stacks of
 * pointers, not a list linked through the records (taking one read its link from a record
 * the writer had last touched on the other core). Each emitting thread keeps a few spares of
 * its own, taken from the shared stack SPARE_CHUNK at a time, and keeps there the records it
 * is done with itself (a folded event's first record): the shared stack's lock is taken once
 * per chunk instead of once or twice per event. */
#define SPARE_MAX 2048       /* records kept in the shared stack (a batch's worth) */
#define SPARE_CHUNK 16       /* records a thread takes from it at a time */
#define SPARE_LOCAL_MAX 64   /* records a thread keeps */
#define SPARE_ROOM 1024      /* bytes a new record has room for, at least (a body) */
#define SPARE_KEEP_ROOM 8192 /* records with more room are freed */

#define MAX_FEEDS 16
#define RETENTION_EVERY_US (60LL * 1000000)
#define STOP_GIVE_UP_US (5LL * 1000000)

/* W's parts that different threads write are on cache lines of their own: the queue (every
 * emit and batch), the writer's own state, the flags the emitters read on every event, the
 * counters and the spare stack. A line one thread writes while others read it costs every
 * reader a cache miss (before this, the emitters' read of local_once shared W.mu's line). */
#define CACHE_LINE 64

static struct writer {
    /* mu guards the ring, next_seq and the flags below it */
    _Alignas(CACHE_LINE) pthread_mutex_t mu;
    pthread_cond_t cv;      /* writer waits for events (and for stop) */
    pthread_cond_t done_cv; /* prune_now waits for the writer */
    struct audit_rec **ring;
    unsigned cap, head, count, inflight;
    unsigned full; /* a full batch: BATCH_MAX, or half the ring when that is smaller */
    bool backlog;  /* events were left behind the last batch: commit them without delay */
    uint64_t next_seq;
    bool running, stopping, waiting, prune_req, prune_done;
    int prune_rc;
    uint64_t prune_count;
    pthread_t thread;

    /* writer-thread state (set before the thread starts) */
    _Alignas(CACHE_LINE) struct store *st;
    struct audit_jsonl *jsonl;
    struct audit_journal *journal;
    EVP_PKEY *key;
    char key_id[17];
    unsigned checkpoint;
    uint64_t retention_s;
    char instance[128];
    char prev_hash[AUDIT_HASH_HEX];
    int64_t last_prune_us;
    uint64_t lost_reported;
    int64_t give_up_at; /* while stopping with a failing store */
    bool gave_up;       /* a batch was given up: the journal must keep what it holds */

    _Alignas(CACHE_LINE) atomic_bool disabled;
    atomic_bool fail_open;
    atomic_bool healthy; /* stored only when it changes */
    _Alignas(CACHE_LINE) atomic_uint_least64_t committed, written, lost, errors, fake_seq;

    _Alignas(CACHE_LINE) pthread_mutex_t err_mu;
    char last_error[256];

    pthread_mutex_t sub_mu;

    _Alignas(CACHE_LINE) pthread_mutex_t spare_mu; /* guards spare and n_spare */
    struct audit_rec *spare[SPARE_MAX];            /* a stack */
    unsigned n_spare;

    _Alignas(CACHE_LINE) struct audit_feed feeds[MAX_FEEDS];
    unsigned n_feeds;
} W = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
    .err_mu = PTHREAD_MUTEX_INITIALIZER,
    .sub_mu = PTHREAD_MUTEX_INITIALIZER,
    .spare_mu = PTHREAD_MUTEX_INITIALIZER,
};

static void set_error(const char *msg)
{
    pthread_mutex_lock(&W.err_mu);
    snprintf(W.last_error, sizeof W.last_error, "%.255s", msg);
    pthread_mutex_unlock(&W.err_mu);
}

/* What an emitting thread keeps (thread-specific data): its buffer for a body's fields (and
 * head), and the hash states of the heads it repeats. A statement event's head (kind, the
 * session's fields, the statement's: audit_event_head) is the same for every run of that
 * statement in that session. An event that carries both parts serialized ahead has its head
 * written straight into its record from them, and the SHA-256 state after it is kept in a
 * slot named by the kind and the parts' ids (audit_json.id: never reused), so each such event
 * hashes only the rest of its body. Any other head is serialized into the buffer, copied and
 * hashed each time. */
#define HEAD_SLOTS 64

struct head_slot {
    uint64_t session_id, statement_id; /* the parts' ids; 0: empty */
    enum audit_kind kind;
    struct audit_digest hash;
};

#define JREC_KEEP 65536 /* a thread's journal record buffer larger than this is not kept */

struct emit_local {
    struct sbuf buf; /* the fields, after the head unless head_parts */
    size_t head_len;
    bool head_parts; /* the head is made from the event's parts, not in buf */
    struct head_slot slots[HEAD_SLOTS];
    struct sbuf jrec;                         /* a durable event's journal record */
    struct audit_rec *spare[SPARE_LOCAL_MAX]; /* this thread's spare records */
    unsigned n_spare;
};

/* The event's own fields in l's buffer. */
static const char *fields_of(const struct emit_local *l, size_t *len)
{
    size_t at = l->head_parts ? 0 : l->head_len;
    *len = l->buf.len - at;
    return l->buf.p + at;
}

/* ---- spare records */

/* A spare record for an emitter: from l's own, refilled from the shared stack a chunk at a
 * time; NULL when there is none (a new one is made). */
static struct audit_rec *spare_pop(struct emit_local *l)
{
    if (!l->n_spare) {
        pthread_mutex_lock(&W.spare_mu);
        unsigned n = W.n_spare < SPARE_CHUNK ? W.n_spare : SPARE_CHUNK;
        W.n_spare -= n;
        memcpy(l->spare, W.spare + W.n_spare, n * sizeof *l->spare);
        pthread_mutex_unlock(&W.spare_mu);
        l->n_spare = n;
    }
    return l->n_spare ? l->spare[--l->n_spare] : NULL;
}

/* A record for ev (a spare if any): with room for the body its emitter writes from l's fields
 * (audit_rec_reserve), or with with_body false a copy of ev whose body the writer serializes. */
static struct audit_rec *rec_take(const struct audit_event *ev, struct emit_local *l,
                                  bool with_body)
{
    struct audit_rec *r = spare_pop(l);
    if (!with_body) return audit_rec_reuse(r, ev, SPARE_ROOM);
    size_t fl;
    (void)fields_of(l, &fl);
    return audit_rec_reserve(r, ev, audit_rec_body_room(l->head_len, fl), SPARE_ROOM);
}

/* An emitter is done with r: kept among its own spares, or freed. */
static void rec_keep(struct emit_local *l, struct audit_rec *r)
{
    if (l->n_spare < SPARE_LOCAL_MAX && r->room <= SPARE_KEEP_ROOM)
        l->spare[l->n_spare++] = r;
    else
        free(r);
}

/* The writer is done with recs[0..n): kept as spares up to SPARE_MAX, the rest freed (recs is
 * the writer's own array: overwritten with those). */
static void rec_give(struct audit_rec **recs, unsigned n)
{
    unsigned n_drop = 0;
    pthread_mutex_lock(&W.spare_mu);
    for (unsigned i = 0; i < n; i++) {
        if (W.n_spare < SPARE_MAX && recs[i]->room <= SPARE_KEEP_ROOM)
            W.spare[W.n_spare++] = recs[i];
        else
            recs[n_drop++] = recs[i];
    }
    pthread_mutex_unlock(&W.spare_mu);
    for (unsigned i = 0; i < n_drop; i++)
        free(recs[i]);
}

static void spares_free(void)
{
    pthread_mutex_lock(&W.spare_mu);
    for (unsigned i = 0; i < W.n_spare; i++)
        free(W.spare[i]);
    W.n_spare = 0;
    pthread_mutex_unlock(&W.spare_mu);
}

/* ---- emit side */

static pthread_key_t local_key;
static pthread_once_t local_once = PTHREAD_ONCE_INIT;

/* this thread's, also held by local_key so that it is freed when the thread exits */
static _Thread_local struct emit_local *local_this;

static void local_free(void *p)
{
    struct emit_local *l = p;
    local_this = NULL; /* (the exiting thread's) */
    sbuf_free(&l->buf);
    sbuf_free(&l->jrec);
    for (unsigned i = 0; i < l->n_spare; i++)
        free(l->spare[i]);
    free(l);
}

static void local_key_create(void)
{
    if (pthread_key_create(&local_key, local_free) != 0) abort();
}

/* What this thread keeps. */
static struct emit_local *local_get(void)
{
    struct emit_local *l = local_this;
    if (__builtin_expect(l != NULL, 1)) return l;
    pthread_once(&local_once, local_key_create);
    l = xcalloc(1, sizeof *l);
    if (pthread_setspecific(local_key, l) != 0) abort();
    local_this = l;
    return l;
}

/* ev's head and fields, serialized into l's buffer. */
static void fields_write(struct emit_local *l, const struct audit_event *ev)
{
    l->buf.len = 0;
    l->head_parts = ev->session_json.p && ev->statement_json.p;
    if (l->head_parts) {
        l->head_len = audit_head_parts_len(ev);
    } else {
        audit_event_head(ev, W.instance, &l->buf);
        l->head_len = l->buf.len;
    }
    audit_event_fields(ev, &l->buf);
}

/* The hash state after rec's head (made from ev's parts, at the start of its body), kept per
 * kind and parts; NULL: hash it with the body (parts without ids). */
static const struct audit_digest *head_hash_of(struct emit_local *l, const struct audit_rec *rec,
                                               const struct audit_event *ev)
{
    uint64_t sid = ev->session_json.id, tid = ev->statement_json.id;
    if (!sid || !tid) return NULL;
    uint64_t k = (sid * 0x9e3779b97f4a7c15u ^ tid) * 0x9e3779b97f4a7c15u ^ (uint64_t)ev->kind;
    struct head_slot *h = &l->slots[(k >> 32) % HEAD_SLOTS];
    if (h->session_id != sid || h->statement_id != tid || h->kind != ev->kind) {
        audit_head_hash(rec->body, l->head_len, &h->hash);
        h->session_id = sid;
        h->statement_id = tid;
        h->kind = ev->kind;
    }
    return &h->hash;
}

/* Begin rec's body (its seq is set) from ev's parts or l's head, and l's fields. */
static void body_begin(struct audit_rec *rec, struct emit_local *l, const struct audit_event *ev)
{
    size_t fl;
    const char *fields = fields_of(l, &fl);
    if (l->head_parts) {
        audit_rec_head_parts(rec, ev);
        audit_rec_body_begin(rec, NULL, l->head_len, head_hash_of(l, rec, ev), fields, fl);
    } else {
        audit_rec_body_begin(rec, l->buf.p, l->head_len, NULL, fields, fl);
    }
}

/* A name for serialized parts (audit_json.id), never reused in this process. */
static uint64_t json_id_next(void)
{
    static atomic_uint_least64_t last;
    return atomic_fetch_add_explicit(&last, 1, memory_order_relaxed) + 1;
}

void audit_json_session(const struct audit_event *ev, struct audit_json *out)
{
    struct sbuf b = {0};
    audit_fields_session(ev, W.instance, &b);
    *out = (struct audit_json){b.p, b.len, json_id_next()};
}

void audit_json_statement(const struct audit_event *ev, struct audit_json *out)
{
    struct sbuf b = {0};
    audit_fields_statement(ev, &b);
    *out = (struct audit_json){b.p, b.len, json_id_next()};
}

void audit_json_free(struct audit_json *j)
{
    free(j->p);
    *j = (struct audit_json){0};
}

uint64_t audit_emit(const struct audit_event *ev)
{
    if (atomic_load_explicit(&W.disabled, memory_order_relaxed))
        return atomic_fetch_add(&W.fake_seq, 1) + 1;
    /* The emitter serializes the body and hashes all of it but prev_hash (which only the
     * writer knows): that work is spread over the workers instead of queued on one thread.
     * Not for a durable event: a write's result is usually folded into it (audit_fold), which
     * serializes the body again; the writer serializes what was not. */
    struct audit_event e = *ev;
    if (!e.time_us) e.time_us = audit_now_us();
    struct emit_local *l = local_get();
    bool fields = !e.durable;
    if (fields) fields_write(l, &e);
    struct audit_rec *rec = rec_take(&e, l, fields);
    struct sbuf *jrec = NULL;
    if (e.durable && W.journal) {
        struct audit_event named = e; /* a replayed event keeps this instance's name */
        if (!named.instance) named.instance = W.instance;
        jrec = &l->jrec;
        if (jrec->cap > JREC_KEEP) sbuf_free(jrec); /* a large statement's, left by the last */
        jrec->len = 0;
        audit_rec_encode(&named, jrec);
    }
    struct audit_journal_slot slot = {0};
    pthread_mutex_lock(&W.mu);
    if (!W.running || W.stopping || W.count >= W.cap) goto lost;
    uint64_t seq = W.next_seq;
    if (jrec && audit_journal_reserve(W.journal, seq, jrec->len, &slot) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "writing the audit journal: %s", strerror(errno));
        atomic_fetch_add(&W.errors, 1);
        set_error(msg);
        /* fail open: the event still goes to the store, just not ahead of the statement */
        if (!atomic_load_explicit(&W.fail_open, memory_order_relaxed)) goto lost;
    }
    W.next_seq++;
    rec->seq = seq;
    /* The writer takes events in order and stops at one still being written. */
    atomic_store_explicit(&rec->ready, !fields && !slot.at, memory_order_relaxed);
    W.ring[(W.head + W.count) % W.cap] = rec;
    W.count++;
    /* The writer sleeps while it gathers events (BATCH_DELAY_US): wake it for the first
     * event or a full batch (before a small queue fills). */
    if (W.waiting && (W.count == 1 || W.count >= W.full)) {
        W.waiting = false;
        pthread_cond_signal(&W.cv);
    }
    pthread_mutex_unlock(&W.mu);
    /* outside the lock: emitters do not wait for one another's bodies or copies */
    if (fields) body_begin(rec, l, &e);
    if (slot.at) audit_journal_fill(W.journal, &slot, jrec->p);
    if (fields || slot.at)
        atomic_store_explicit(&rec->ready, true, memory_order_release); /* the writer's now */
    return seq;
lost:
    pthread_mutex_unlock(&W.mu);
    rec_keep(l, rec);
    atomic_fetch_add(&W.lost, 1);
    return 0;
}

bool audit_fold(uint64_t seq, const struct audit_event *ev)
{
    if (atomic_load_explicit(&W.disabled, memory_order_relaxed)) return false;
    struct audit_event e = *ev;
    e.durable = false;
    struct emit_local *l = local_get();
    fields_write(l, &e);
    struct audit_rec *rec = rec_take(&e, l, true), *old = NULL;
    rec->seq = seq;
    body_begin(rec, l, &e);
    pthread_mutex_lock(&W.mu);
    if (W.running && W.count) {
        /* the ring holds the consecutive seqs below next_seq (not read from the head's
         * record: the other worker's, it would be a cache miss) */
        uint64_t head = W.next_seq - W.count;
        if (seq >= head && seq - head < W.count) {
            unsigned slot = (unsigned)((W.head + (seq - head)) % W.cap);
            struct audit_rec *q = W.ring[slot];
            /* the body carries the time: it must be the queued event's */
            if (q->seq == seq && atomic_load_explicit(&q->ready, memory_order_acquire) &&
                q->time_us == rec->time_us) {
                W.ring[slot] = rec;
                old = q;
            }
        }
    }
    pthread_mutex_unlock(&W.mu);
    rec_keep(l, old ? old : rec);
    return old != NULL;
}

uint64_t audit_committed_seq(void)
{
    if (atomic_load_explicit(&W.disabled, memory_order_relaxed)) return atomic_load(&W.fake_seq);
    return atomic_load_explicit(&W.committed, memory_order_acquire);
}

bool audit_healthy(void)
{
    return atomic_load_explicit(&W.healthy, memory_order_relaxed);
}

bool audit_fail_open(void)
{
    return atomic_load_explicit(&W.fail_open, memory_order_relaxed);
}

void audit_stats_get(struct audit_stats *out)
{
    memset(out, 0, sizeof *out);
    out->written = atomic_load(&W.written);
    out->lost = atomic_load(&W.lost);
    out->write_errors = atomic_load(&W.errors);
    out->committed_seq = audit_committed_seq();
    out->healthy = audit_healthy();
    pthread_mutex_lock(&W.mu);
    out->queued = W.count + W.inflight;
    pthread_mutex_unlock(&W.mu);
    pthread_mutex_lock(&W.err_mu);
    snprintf(out->last_error, sizeof out->last_error, "%s", W.last_error);
    pthread_mutex_unlock(&W.err_mu);
}

int audit_feed_subscribe(const struct audit_feed *f)
{
    int ret = -1;
    pthread_mutex_lock(&W.sub_mu);
    if (W.n_feeds < MAX_FEEDS) {
        W.feeds[W.n_feeds++] = *f;
        ret = 0;
    }
    pthread_mutex_unlock(&W.sub_mu);
    return ret;
}

void audit_feed_unsubscribe(const struct audit_feed *f)
{
    pthread_mutex_lock(&W.sub_mu);
    for (unsigned i = 0; i < W.n_feeds; i++) {
        if (W.feeds[i].event == f->event && W.feeds[i].ctx == f->ctx) {
            W.feeds[i] = W.feeds[--W.n_feeds];
            break;
        }
    }
    pthread_mutex_unlock(&W.sub_mu);
}

/* ---- writer thread */

static struct timespec deadline_in(int64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (us % 1000000) * 1000;
    ts.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

/* Sleep up to us, waking early when stop is requested. Returns true when stopping. */
static bool backoff_sleep(int64_t us)
{
    pthread_mutex_lock(&W.mu);
    if (!W.stopping) {
        struct timespec ts = deadline_in(us);
        pthread_cond_timedwait(&W.cv, &W.mu, &ts);
    }
    bool stopping = W.stopping;
    pthread_mutex_unlock(&W.mu);
    return stopping;
}

/* Run `op` until it succeeds; false when the writer gave up (stopping with a failing store). */
static bool retry(int (*op)(void *arg, char *err, size_t errlen), void *arg)
{
    int64_t backoff = 10000;
    char err[512];
    bool was_healthy = true;
    for (;;) {
        if (op(arg, err, sizeof err) == 0) {
            if (!was_healthy) log_info("audit: the store is writable again");
            return true;
        }
        atomic_fetch_add(&W.errors, 1);
        set_error(err);
        if (was_healthy) log_error("audit: %s (retrying; events are kept in memory)", err);
        was_healthy = false;
        atomic_store(&W.healthy, false);
        bool stopping = backoff_sleep(backoff);
        if (stopping) {
            int64_t now = audit_now_us();
            if (!W.give_up_at) W.give_up_at = now + STOP_GIVE_UP_US;
            if (now >= W.give_up_at) return false;
        }
        backoff = backoff * 2 > 1000000 ? 1000000 : backoff * 2;
    }
}

struct batch {
    struct audit_rec **recs;
    unsigned n;
    struct sbuf bodies;
    size_t *off, *len; /* a body in bodies (off SIZE_MAX: in its record), its length */
    char (*hash)[AUDIT_HASH_HEX];
    struct store_event *sev;
    struct store_checkpoint *cps;
    char (*sigs)[129];
    unsigned ncp;
    struct sbuf lines;
    size_t *line_off;
    bool polite; /* yield the core while serializing (the writer keeps up: no backlog) */
};

static int op_store(void *arg, char *err, size_t errlen)
{
    struct batch *b = arg;
    if (store_events_append(W.st, b->sev, b->n, b->cps, b->ncp) == 0) return 0;
    snprintf(err, errlen, "%s", store_errmsg(W.st));
    return -1;
}

static int op_jsonl(void *arg, char *err, size_t errlen)
{
    struct batch *b = arg;
    if (store_test_failing_writes()) {
        snprintf(err, errlen, "writing audit.jsonl: no space left (injected by a test)");
        return -1;
    }
    return audit_jsonl_append(W.jsonl, b->lines.p, b->lines.len, err, errlen);
}

/* Serialize, chain and commit the batch (and append it to the JSONL copy). once: a single
 * attempt (recovery at start) instead of retrying until it works or the writer gives up.
 * Returns false when it was not written.
 *
 * While it keeps up (no backlog), the writer yields its core every YIELD_EVERY events and
 * before the commit; behind, it runs flat out. It sleeps between batches, so the scheduler
 * (EEVDF) lets it run a whole batch, a millisecond or more under load, before a worker woken
 * by a client's or the server's packet gets that core back; meanwhile every session of that
 * worker stalls, and so do their clients and backends. In bursts of tens of microseconds they
 * wait far less (docs/audit.md, Throughput: audit on/off under pgbench -S -M simple from a
 * mean of 0.881 to 0.905). A yield with nothing else runnable returns at once. */
static bool write_batch(struct batch *b, bool once)
{
    unsigned n = b->n;
    b->bodies.len = 0;
    b->lines.len = 0;
    b->ncp = 0;
    char prev[AUDIT_HASH_HEX];
    memcpy(prev, W.prev_hash, sizeof prev);
    for (unsigned i = 0; i < n; i++) {
        struct audit_rec *r = b->recs[i];
        if (r->body_len) { /* its emitter wrote it: closed where it is */
            b->off[i] = SIZE_MAX;
            b->len[i] = audit_rec_body_close(r, prev, b->hash[i]);
        } else { /* durable (nothing folded into it), replayed, or events_lost */
            b->off[i] = b->bodies.len;
            audit_event_body(r->ev, r->seq, W.instance, prev, &b->bodies);
            b->len[i] = b->bodies.len - b->off[i];
            audit_sha256_hex(b->bodies.p + b->off[i], b->len[i], b->hash[i]);
        }
        memcpy(prev, b->hash[i], sizeof prev);
        if (b->polite && i % YIELD_EVERY == YIELD_EVERY - 1) sched_yield();
    }
    bool want_lines = W.jsonl != NULL;
    pthread_mutex_lock(&W.sub_mu);
    for (unsigned f = 0; f < W.n_feeds && !want_lines; f++)
        want_lines = !W.feeds[f].wanted || W.feeds[f].wanted(W.feeds[f].ctx);
    pthread_mutex_unlock(&W.sub_mu);
    for (unsigned i = 0; i < n; i++) {
        struct audit_rec *r = b->recs[i];
        const char *body = b->off[i] == SIZE_MAX ? r->body : b->bodies.p + b->off[i];
        b->sev[i] = (struct store_event){
            .seq = r->seq,
            .time_us = r->time_us,
            .kind = audit_kind_name(r->kind),
            .identity = r->identity,
            .decision = r->decision,
            .body = body,
            .body_len = b->len[i],
            .hash = b->hash[i],
        };
        b->line_off[i] = b->lines.len;
        if (want_lines) {
            audit_event_line(body, b->len[i], b->hash[i], &b->lines);
            sbuf_add(&b->lines, "\n", 1);
        }
        if (W.checkpoint && r->seq % W.checkpoint == 0) {
            struct store_checkpoint *cp = &b->cps[b->ncp];
            *cp =
                (struct store_checkpoint){.seq = r->seq, .time_us = r->time_us, .hash = b->hash[i]};
            if (W.key) {
                if (audit_checkpoint_sign(W.key, r->seq, b->hash[i], b->sigs[b->ncp]) == 0) {
                    cp->signature = b->sigs[b->ncp];
                    cp->key_id = W.key_id;
                } else {
                    log_error("audit: signing checkpoint %llu failed", (unsigned long long)r->seq);
                }
            }
            b->ncp++;
        }
    }
    b->line_off[n] = b->lines.len;

    char err[512];
    if (b->polite) sched_yield();
    /* After a batch was given up, committing this one would chain it to an event the store
     * lacks (a broken link, and a gap the journal's replay would never fill). */
    if (W.gave_up) {
        atomic_fetch_add(&W.lost, n);
        return false;
    }
    bool stored = once ? op_store(b, err, sizeof err) == 0 : retry(op_store, b);
    bool ok = stored;
    if (stored) memcpy(W.prev_hash, b->hash[n - 1], AUDIT_HASH_HEX); /* the chain goes on */
    if (stored && W.jsonl) ok = once ? op_jsonl(b, err, sizeof err) == 0 : retry(op_jsonl, b);
    if (!ok && once) {
        set_error(err);
        return false;
    }
    if (!stored) {
        atomic_fetch_add(&W.lost, n);
        log_error("audit: gave up writing %u events at shutdown: the store is failing", n);
        W.gave_up = true;
        return false;
    }
    if (!ok)
        log_error("audit: gave up appending %u events to the JSON Lines file at shutdown: the "
                  "next start copies them from the store",
                  n);
    atomic_store_explicit(&W.committed, b->recs[n - 1]->seq, memory_order_release);
    atomic_fetch_add(&W.written, n);
    if (!atomic_load_explicit(&W.healthy, memory_order_relaxed)) atomic_store(&W.healthy, true);
    /* Recovery (once) empties the journal itself, after its last batch; after a given-up
     * batch the journal keeps everything for the next start. */
    if (W.journal && !once && !W.gave_up) audit_journal_committed(W.journal, b->recs[n - 1]->seq);

    /* a feed that wanted none (or subscribed since the question) is told how many it missed */
    pthread_mutex_lock(&W.sub_mu);
    for (unsigned f = 0; f < W.n_feeds; f++) {
        const struct audit_feed *fd = &W.feeds[f];
        if (want_lines && (!fd->wanted || fd->wanted(fd->ctx))) {
            for (unsigned i = 0; i < n; i++)
                fd->event(fd->ctx, b->recs[i]->seq, b->lines.p + b->line_off[i],
                          b->line_off[i + 1] - b->line_off[i] - 1);
        } else if (fd->skipped) {
            fd->skipped(fd->ctx, n);
        }
    }
    pthread_mutex_unlock(&W.sub_mu);
    return true;
}

static void batch_init(struct batch *b, unsigned cap)
{
    memset(b, 0, sizeof *b);
    b->recs = xcalloc(cap + 1, sizeof *b->recs);
    b->off = xcalloc(cap + 1, sizeof *b->off);
    b->len = xcalloc(cap + 1, sizeof *b->len);
    b->hash = xcalloc(cap + 1, sizeof *b->hash);
    b->sev = xcalloc(cap + 1, sizeof *b->sev);
    b->cps = xcalloc(cap + 1, sizeof *b->cps);
    b->sigs = xcalloc(cap + 1, sizeof *b->sigs);
    b->line_off = xcalloc(cap + 2, sizeof *b->line_off);
}

static void batch_free(struct batch *b)
{
    sbuf_free(&b->bodies);
    sbuf_free(&b->lines);
    free(b->recs);
    free(b->off);
    free(b->len);
    free(b->hash);
    free(b->sev);
    free(b->cps);
    free(b->sigs);
    free(b->line_off);
}

static int run_prune(uint64_t *total)
{
    *total = 0;
    if (!W.retention_s) return 0;
    int64_t before = audit_now_us() - (int64_t)W.retention_s * 1000000;
    for (int round = 0; round < 100; round++) {
        uint64_t n = 0;
        if (store_prune(W.st, before, &n) != 0) {
            log_warn("audit: retention: %s", store_errmsg(W.st));
            return -1;
        }
        *total += n;
        if (!n) break;
    }
    if (*total) log_info("audit: retention pruned %llu events", (unsigned long long)*total);
    return 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-audit");
    struct batch b;
    batch_init(&b, BATCH_MAX);

    for (;;) {
        pthread_mutex_lock(&W.mu);
        if (W.count == 0 && !W.stopping && !W.prune_req) {
            W.waiting = true;
            struct timespec ts = deadline_in(100000);
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
            W.waiting = false;
        }
        /* Group commit: events are gathered for up to BATCH_DELAY_US so that one
         * transaction carries many (nobody waits for them: durable ones are in the journal);
         * a full batch or a backlog ends the wait at once. */
        if (W.count && !W.backlog && W.count < W.full && !W.stopping && !W.prune_req) {
            W.waiting = true;
            struct timespec ts = deadline_in(BATCH_DELAY_US);
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
            W.waiting = false;
        }
        if (W.prune_req) {
            W.prune_req = false;
            pthread_mutex_unlock(&W.mu);
            uint64_t pruned = 0;
            int rc = run_prune(&pruned);
            pthread_mutex_lock(&W.mu);
            W.prune_rc = rc;
            W.prune_count = pruned;
            W.prune_done = true;
            pthread_cond_broadcast(&W.done_cv);
        }
        unsigned n = 0;
        while (n < W.count && n < BATCH_MAX &&
               atomic_load_explicit(&W.ring[(W.head + n) % W.cap]->ready, memory_order_acquire))
            n++;
        /* stopped before an event whose emitter is still copying its journal record: the
         * rest waits for the next batch (within microseconds it is ready) */
        bool copying = n < W.count && n < BATCH_MAX;
        for (unsigned i = 0; i < n; i++) {
            b.recs[i] = W.ring[W.head];
            W.head = (W.head + 1) % W.cap;
        }
        W.count -= n;
        W.backlog = W.count > 0 && !copying;
        b.polite = !W.backlog && !W.stopping;
        /* Record losses once the ring is drained, so the marker keeps chain order (at a
         * stop too, unless the store failed: the marker could not be written either). */
        uint64_t lost = atomic_load(&W.lost);
        if (W.count == 0 && lost > W.lost_reported && !W.gave_up) {
            char detail[128];
            snprintf(detail, sizeof detail,
                     "%llu events could not be queued (queue full or store failing)",
                     (unsigned long long)(lost - W.lost_reported));
            struct audit_event ev = {.kind = AUDIT_EVENTS_LOST, .detail = detail};
            struct audit_rec *r = audit_rec_new(&ev);
            r->seq = W.next_seq++;
            b.recs[n++] = r;
            W.lost_reported = lost;
        }
        W.inflight = n;
        bool stop = W.stopping && n == 0 && !copying;
        pthread_mutex_unlock(&W.mu);
        if (stop) break;
        /* The head's emitter is still copying and no gathering wait came before (a full
         * queue, or stopping): let it finish instead of spinning on the mutex it needs. */
        if (n == 0 && copying) usleep(100);
        if (n) {
            b.n = n;
            (void)write_batch(&b, false);
            rec_give(b.recs, n);
            pthread_mutex_lock(&W.mu);
            W.inflight = 0;
            pthread_mutex_unlock(&W.mu);
        }
        int64_t now = audit_now_us();
        if (W.retention_s && now - W.last_prune_us >= RETENTION_EVERY_US) {
            uint64_t pruned;
            W.last_prune_us = now;
            (void)run_prune(&pruned);
        }
    }
    batch_free(&b);
    return NULL;
}

int audit_writer_prune_now(uint64_t *pruned)
{
    pthread_mutex_lock(&W.mu);
    if (!W.running) {
        pthread_mutex_unlock(&W.mu);
        return -1;
    }
    W.prune_done = false;
    W.prune_req = true;
    pthread_cond_signal(&W.cv);
    while (!W.prune_done)
        pthread_cond_wait(&W.done_cv, &W.mu);
    int rc = W.prune_rc;
    if (pruned) *pruned = W.prune_count;
    pthread_mutex_unlock(&W.mu);
    return rc;
}

/* ---- start / stop */

struct catchup {
    struct audit_jsonl *j;
    struct sbuf lines;
    unsigned n;
    char err[256];
    int failed;
};

static int catchup_flush(struct catchup *c)
{
    if (c->lines.len &&
        audit_jsonl_append(c->j, c->lines.p, c->lines.len, c->err, sizeof c->err) != 0)
        return -1;
    c->lines.len = 0;
    c->n = 0;
    return 0;
}

static int catchup_event(void *ctx, const struct store_event *ev)
{
    struct catchup *c = ctx;
    audit_event_line(ev->body, ev->body_len, ev->hash, &c->lines);
    sbuf_add(&c->lines, "\n", 1);
    if (++c->n >= BATCH_MAX && catchup_flush(c) != 0) {
        c->failed = 1;
        return 1;
    }
    return 0;
}

/* ---- recovery */

struct recovery {
    struct audit_rec **recs;
    size_t n, cap;
    uint64_t last_seq; /* the highest sequence number the crashed process had given */
    /* the store ends with an earlier recovery's marker: records up to through that are
     * older than the marker are in the store already (see last_recovered_cb) */
    uint64_t through;
    int64_t marker_us;
};

static void recovered_one(void *ctx, uint64_t seq, struct audit_rec *rec)
{
    struct recovery *r = ctx;
    if (seq <= r->through && rec->time_us < r->marker_us) {
        free(rec);
        return;
    }
    if (!rec->ev->detail) rec->ev->detail = "recovered from the audit journal";
    if (r->n + 1 >= r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->recs = xrealloc(r->recs, r->cap * sizeof *r->recs);
    }
    r->recs[r->n++] = rec;
    r->last_seq = seq;
}

/* A recovery's closing events_lost event carries, as `ref`, the last journal sequence number
 * it committed. When the store ends with one, either a crash came between that commit and
 * emptying the journal (the journal still holds those records: made before the marker, with
 * numbers up to ref), or the journal was emptied and the next run crashed before it could
 * commit anything (its records were made after the marker, and their numbers, which go on
 * from the marker's, may be below ref). The marker's time tells them apart. */
static int last_recovered_cb(void *ctx, const struct store_event *ev)
{
    struct recovery *r = ctx;
    r->through = 0;
    if (strcmp(ev->kind, "events_lost") != 0) return 0;
    cJSON *o = cJSON_ParseWithLength(ev->body, ev->body_len);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "ref");
    if (cJSON_IsNumber(ref) && ref->valuedouble > 0) {
        r->through = (uint64_t)ref->valuedouble;
        r->marker_us = ev->time_us;
    }
    cJSON_Delete(o);
    return 0;
}

/*
 * Commit what a crash left in the journal and the store lacks (everything after *last), in
 * one store transaction, then empty the journal. The events are numbered on from the store's
 * last one, since the events between them that were never durable (reads, results, session
 * events of the last moments) are gone; a closing events_lost event says how many at least,
 * and records the last journal sequence number committed (ref). *last moves to the new end.
 */
static int journal_recover(uint64_t *last, char *err, size_t errlen)
{
    struct recovery rc = {0};
    uint64_t after = *last;
    if (*last && store_events_scan(W.st, *last - 1, last_recovered_cb, &rc) != 0) rc.through = 0;
    unsigned rejected = 0;
    if (audit_journal_replay(W.journal, after, recovered_one, &rc, &rejected, err, errlen) < 0)
        return -1;
    long n = (long)rc.n;
    if (rejected)
        log_warn("audit: %u journal record(s) fail their check (not written by this sluice, or "
                 "with another audit.signing_key): they are not replayed",
                 rejected);
    int ret = 0;
    if (n > 0) {
        uint64_t missing = rc.last_seq - after - (uint64_t)n;
        char detail[240];
        int k = snprintf(detail, sizeof detail,
                         "unclean stop: %ld events recovered from the audit journal", n);
        if (missing)
            snprintf(detail + k, sizeof detail - (size_t)k,
                     "; at least %llu events not yet committed (reads, statement results, "
                     "session events) were lost",
                     (unsigned long long)missing);
        struct audit_event ev = {.kind = AUDIT_EVENTS_LOST, .detail = detail, .ref = rc.last_seq};
        rc.recs[rc.n++] = audit_rec_new(&ev);
        struct batch b;
        batch_init(&b, (unsigned)rc.n);
        for (size_t i = 0; i < rc.n; i++) {
            rc.recs[i]->seq = ++*last;
            b.recs[b.n++] = rc.recs[i];
        }
        if (!write_batch(&b, true)) {
            pthread_mutex_lock(&W.err_mu);
            snprintf(err, errlen, "audit: committing the events of the journal: %s", W.last_error);
            pthread_mutex_unlock(&W.err_mu);
            ret = -1;
        }
        batch_free(&b);
        if (ret == 0) log_warn("audit: %s", detail);
    }
    for (size_t i = 0; i < rc.n; i++)
        free(rc.recs[i]);
    free(rc.recs);
    if (ret == 0 && audit_journal_reset(W.journal) != 0) {
        snprintf(err, errlen, "audit: emptying the journal: %s", strerror(errno));
        ret = -1;
    }
    return ret;
}

static void cleanup_state(void)
{
    store_close(W.st);
    W.st = NULL;
    audit_jsonl_close(W.jsonl);
    W.jsonl = NULL;
    audit_journal_close(W.journal);
    W.journal = NULL;
    EVP_PKEY_free(W.key);
    W.key = NULL;
    free(W.ring);
    W.ring = NULL;
    spares_free();
}

int audit_start(const struct sluice_config *cfg, char *err, size_t errlen)
{
    const struct cfg_audit *ac = &cfg->audit;
    if (W.running) {
        snprintf(err, errlen, "the audit is already running");
        return -1;
    }
    atomic_store(&W.fail_open, ac->fail_open);
    atomic_store(&W.lost, 0);
    atomic_store(&W.errors, 0);
    atomic_store(&W.written, 0);
    W.last_error[0] = 0;
    if (!ac->enabled) {
        atomic_store(&W.disabled, true);
        atomic_store(&W.healthy, true);
        return 0;
    }
    atomic_store(&W.disabled, false);
    /* First: the journal's lock keeps a second sluice away from this store (before it is
     * opened: opening migrates its schema) and its JSONL. */
    if (audit_journal_open(cfg->state.path && *cfg->state.path ? cfg->state.path : "sluice.db",
                           &W.journal, err, errlen) != 0)
        goto fail;
    if (store_open(&cfg->state, 0, &W.st, err, errlen) != 0) goto fail;
    uint64_t last = 0;
    char hash[STORE_HASH_HEX];
    if (store_events_last(W.st, &last, hash) != 0) {
        snprintf(err, errlen, "audit: %s", store_errmsg(W.st));
        goto fail;
    }
    memcpy(W.prev_hash, last ? hash : AUDIT_GENESIS, AUDIT_HASH_HEX);
    W.next_seq = last + 1;
    atomic_store(&W.committed, last);

    if (ac->signing_key && *ac->signing_key) {
        if (audit_key_load_private(ac->signing_key, &W.key, err, errlen) != 0) goto fail;
        if (audit_key_id(W.key, W.key_id) != 0) {
            snprintf(err, errlen, "audit.signing_key %s: no public key", ac->signing_key);
            goto fail;
        }
        unsigned char raw[64];
        size_t rawlen = sizeof raw;
        if (EVP_PKEY_get_raw_private_key(W.key, raw, &rawlen) != 1) {
            snprintf(err, errlen, "audit.signing_key %s: cannot read the private key",
                     ac->signing_key);
            goto fail;
        }
        audit_journal_set_key(W.journal, raw, rawlen);
        OPENSSL_cleanse(raw, sizeof raw);
    }
    if (ac->jsonl && *ac->jsonl) {
        uint64_t jlast = 0;
        if (audit_jsonl_open(ac->jsonl, &W.jsonl, err, errlen) != 0 ||
            audit_jsonl_last_seq(ac->jsonl, &jlast, err, errlen) != 0)
            goto fail;
        if (jlast > last) {
            log_warn("audit: %s has events up to %llu but the store only up to %llu", ac->jsonl,
                     (unsigned long long)jlast, (unsigned long long)last);
        } else if (jlast && jlast < last) {
            /* a crash between the store commit and the JSONL append: copy what is missing */
            struct catchup c = {.j = W.jsonl};
            int rc = store_events_scan(W.st, jlast, catchup_event, &c);
            if (rc == 0) rc = catchup_flush(&c);
            sbuf_free(&c.lines);
            if (rc != 0) {
                snprintf(err, errlen, "audit: catching up %s: %s", ac->jsonl,
                         c.err[0] ? c.err : store_errmsg(W.st));
                goto fail;
            }
            log_info("audit: copied events %llu..%llu into %s", (unsigned long long)jlast + 1,
                     (unsigned long long)last, ac->jsonl);
        }
    }
    W.checkpoint = ac->checkpoint ? ac->checkpoint : 1000; /* anchors need checkpoints */
    W.retention_s = ac->retention;
    W.last_prune_us = 0;
    W.give_up_at = 0;
    W.gave_up = false;
    W.lost_reported = 0;
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(W.instance, sizeof W.instance, "%s:%d", host, (int)getpid());
    if (journal_recover(&last, err, errlen) != 0) goto fail;
    W.next_seq = last + 1;
    W.cap = ac->queue ? ac->queue : 65536;
    W.full = W.cap / 2 < BATCH_MAX ? (W.cap / 2 ? W.cap / 2 : 1) : BATCH_MAX;
    W.ring = xcalloc(W.cap, sizeof *W.ring);
    W.head = W.count = W.inflight = 0;
    W.backlog = false;
    W.stopping = false;
    atomic_store(&W.healthy, true);
    pthread_mutex_lock(&W.mu);
    W.running = true;
    pthread_mutex_unlock(&W.mu);
    int rc = pthread_create(&W.thread, NULL, writer_main, NULL);
    if (rc != 0) {
        W.running = false;
        snprintf(err, errlen, "audit: cannot start the writer thread: %s", strerror(rc));
        goto fail;
    }
    return 0;
fail:
    cleanup_state();
    return -1;
}

void audit_stop(void)
{
    if (atomic_load(&W.disabled)) {
        atomic_store(&W.disabled, false);
        return;
    }
    pthread_mutex_lock(&W.mu);
    if (!W.running) {
        pthread_mutex_unlock(&W.mu);
        return;
    }
    W.stopping = true;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
    pthread_join(W.thread, NULL);
    pthread_mutex_lock(&W.mu);
    W.running = false;
    W.stopping = false;
    bool all_written = !W.gave_up && atomic_load(&W.committed) + 1 == W.next_seq;
    for (; W.count; W.count--) { /* only when the writer gave up */
        free(W.ring[W.head]);
        W.head = (W.head + 1) % W.cap;
        atomic_fetch_add(&W.lost, 1);
    }
    /* The store holds everything: the journal is not needed (if it cannot be emptied, the
     * next start skips what the store already has). */
    if (all_written && W.journal) (void)audit_journal_reset(W.journal);
    pthread_mutex_unlock(&W.mu);
    cleanup_state();
}
