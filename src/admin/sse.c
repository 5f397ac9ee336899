/*
 * sse.c: the live event stream: a bounded ring of published audit events and the
 * Server-Sent Events responses that read it.
 *
 * admin_publish_event() copies an event into the ring under a mutex held for a pointer swap,
 * and wakes the readers; it never waits for any of them. Every stream connection has its own
 * thread (libmicrohttpd thread-per-connection) and its own cursor into the ring: it copies the
 * events it has not sent yet, filters them, formats `id: SEQ\ndata: JSON\n\n` and blocks in
 * its content callback until more arrive or the keepalive is due. A stream that falls further
 * behind than the ring holds skips ahead, writes `: dropped N` and counts the loss; a browser
 * that stops reading stalls only its own thread until libmicrohttpd's timeout closes it.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/admin_int.h"
#include "admin/metrics.h"
#include "core/buf.h"

#define SSE_MAX_CLIENTS 64
#define SSE_BATCH 256         /* events copied out of the ring at once */
#define SSE_BLOCK (64 * 1024) /* reader block size libmicrohttpd asks for */

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ring_cond;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static char *ring[ADMIN_RING_EVENTS];
static size_t ring_len[ADMIN_RING_EVENTS];
static size_t ring_bytes;      /* sum of ring_len: held under ADMIN_RING_BYTES */
static uint64_t next_seq = 1;  /* the seq the next event gets; ring[seq % N] */
static uint64_t floor_seq = 1; /* events below were evicted early for the byte budget */
static bool stopping;
static atomic_bool ring_open;
static atomic_uint n_clients;
static atomic_llong last_left_s; /* monotonic seconds when a stream client last left; 0 never */
static atomic_uint keepalive_ms = 15000;

static void ring_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&ring_cond, &a);
    pthread_condattr_destroy(&a);
}

void admin_set_keepalive_ms(unsigned ms)
{
    atomic_store(&keepalive_ms, ms ? ms : 1);
}

void sse_open(void)
{
    pthread_once(&ring_once, ring_init);
    pthread_mutex_lock(&ring_lock);
    stopping = false;
    pthread_mutex_unlock(&ring_lock);
    atomic_store(&ring_open, true);
}

void sse_close(void)
{
    pthread_once(&ring_once, ring_init);
    atomic_store(&ring_open, false);
    pthread_mutex_lock(&ring_lock);
    stopping = true;
    pthread_cond_broadcast(&ring_cond);
    pthread_mutex_unlock(&ring_lock);
}

void sse_reset(void)
{
    pthread_mutex_lock(&ring_lock);
    for (unsigned i = 0; i < ADMIN_RING_EVENTS; i++) {
        free(ring[i]);
        ring[i] = NULL;
        ring_len[i] = 0;
    }
    ring_bytes = 0;
    floor_seq = next_seq;
    pthread_mutex_unlock(&ring_lock);
}

static uint64_t oldest_seq(void)
{
    uint64_t o = next_seq > ADMIN_RING_EVENTS ? next_seq - ADMIN_RING_EVENTS : 1;
    return o > floor_seq ? o : floor_seq;
}

/* Free the oldest buffered event (ring_lock held). */
static void evict_oldest(void)
{
    uint64_t o = oldest_seq();
    if (o >= next_seq) return;
    unsigned i = (unsigned)(o % ADMIN_RING_EVENTS);
    free(ring[i]);
    ring[i] = NULL;
    ring_bytes -= ring_len[i];
    ring_len[i] = 0;
    floor_seq = o + 1;
}

void admin_skip_events(unsigned n)
{
    if (!n) return;
    pthread_mutex_lock(&ring_lock);
    while (oldest_seq() < next_seq) /* after the first skip: already empty */
        evict_oldest();
    next_seq += n;
    floor_seq = next_seq;
    pthread_mutex_unlock(&ring_lock);
}

void admin_publish_event(const char *json_line)
{
    if (!json_line || !atomic_load_explicit(&ring_open, memory_order_acquire)) return;
    size_t len = strlen(json_line);
    if (len > ADMIN_EVENT_MAX) {
        metrics_inc(M_ADMIN_SSE_DROPPED, 0, 0);
        return;
    }
    char *copy = xmalloc(len + 1);
    memcpy(copy, json_line, len + 1);
    /* SSE data lines end at a newline: keep it one line (audit lines never have one) */
    for (char *p = copy + strcspn(copy, "\r\n"); *p; p += 1 + strcspn(p + 1, "\r\n"))
        *p = ' ';

    pthread_mutex_lock(&ring_lock);
    /* make room: the slot this event takes, then the byte budget */
    if (next_seq - oldest_seq() >= ADMIN_RING_EVENTS) evict_oldest();
    while (ring_bytes + len > ADMIN_RING_BYTES && oldest_seq() < next_seq)
        evict_oldest();
    unsigned slot = (unsigned)(next_seq % ADMIN_RING_EVENTS);
    char *old = ring[slot]; /* NULL: evicted above */
    ring[slot] = copy;
    ring_len[slot] = len;
    ring_bytes += len;
    next_seq++;
    pthread_cond_broadcast(&ring_cond);
    pthread_mutex_unlock(&ring_lock);
    free(old);
    metrics_inc(M_ADMIN_EVENTS_PUBLISHED, 0, 0);
}

/* ---- filters */

static bool list_has(const char *list, const char *v)
{
    if (!v) return false;
    size_t n = strlen(v);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, v, n) == 0) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static const char *str_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool sse_event_matches(const char *json, const struct sse_filter *f)
{
    if (!f->identity && !f->kind && !f->target && !f->decision) return true;
    cJSON *ev = cJSON_Parse(json);
    if (!cJSON_IsObject(ev)) {
        cJSON_Delete(ev);
        return false;
    }
    /* identity: "name" or {"name", "kind", "groups"} */
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "identity");
    const char *name = cJSON_IsString(id) ? id->valuestring : str_field(id, "name");
    const char *ikind = cJSON_IsObject(id) ? str_field(id, "kind") : NULL;
    if (!ikind) ikind = str_field(ev, "identity_kind");
    bool ok = true;
    if (f->identity && !list_has(f->identity, name)) ok = false;
    /* kind: the identity's kind (human/service/agent) or the event's kind (statement, ...) */
    if (f->kind && !list_has(f->kind, ikind) && !list_has(f->kind, str_field(ev, "kind")))
        ok = false;
    if (f->target && !list_has(f->target, str_field(ev, "target"))) ok = false;
    if (f->decision && !list_has(f->decision, str_field(ev, "decision"))) ok = false;
    cJSON_Delete(ev);
    return ok;
}

/* ---- one stream */

struct sse_client {
    uint64_t cursor; /* next seq to send */
    char *identity, *kind, *target, *decision;
    char *out; /* formatted bytes not yet handed to libmicrohttpd */
    size_t len, off, cap;
    struct timespec last_write;
    uint64_t expires; /* the caller's token ends the stream then (epoch seconds; 0: never) */
    bool ended;       /* the expiry was written: end the stream */
};

static void out_append(struct sse_client *s, const char *p, size_t n)
{
    if (s->off == s->len) s->off = s->len = 0;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->out = xrealloc(s->out, s->cap);
    }
    memcpy(s->out + s->len, p, n);
    s->len += n;
}

static void out_printf(struct sse_client *s, const char *fmt, unsigned long long v)
{
    char tmp[96];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    if (n > 0) out_append(s, tmp, (size_t)n);
}

static ssize_t out_take(struct sse_client *s, char *buf, size_t max)
{
    size_t n = s->len - s->off;
    if (n > max) n = max;
    memcpy(buf, s->out + s->off, n);
    s->off += n;
    clock_gettime(CLOCK_MONOTONIC, &s->last_write);
    return (ssize_t)n;
}

static struct timespec deadline_after(const struct timespec *t, unsigned ms)
{
    struct timespec d = *t;
    d.tv_sec += ms / 1000;
    d.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (d.tv_nsec >= 1000000000L) {
        d.tv_sec++;
        d.tv_nsec -= 1000000000L;
    }
    return d;
}

static bool past(const struct timespec *d)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct sse_client *s = cls;
    if (s->off < s->len) return out_take(s, buf, max);
    if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;

    char *batch[SSE_BATCH];
    uint64_t seqs[SSE_BATCH];
    for (;;) {
        unsigned n = 0;
        uint64_t dropped = 0;
        struct timespec due = deadline_after(&s->last_write, atomic_load(&keepalive_ms));
        if (s->expires) { /* wake at the token's end too */
            uint64_t now = (uint64_t)time(NULL);
            if (now >= s->expires) {
                out_append(s, ": token expired\n\n", 17);
                s->ended = true;
                return out_take(s, buf, max);
            }
            struct timespec mono;
            clock_gettime(CLOCK_MONOTONIC, &mono);
            struct timespec end = mono;
            end.tv_sec += (time_t)(s->expires - now);
            if (end.tv_sec < due.tv_sec || (end.tv_sec == due.tv_sec && end.tv_nsec < due.tv_nsec))
                due = end;
        }
        pthread_mutex_lock(&ring_lock);
        while (!stopping && s->cursor >= next_seq && !past(&due))
            if (pthread_cond_timedwait(&ring_cond, &ring_lock, &due) == ETIMEDOUT) break;
        if (stopping) {
            pthread_mutex_unlock(&ring_lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (s->cursor < oldest_seq()) {
            dropped = oldest_seq() - s->cursor;
            s->cursor = oldest_seq();
        }
        size_t bytes = 0; /* copy at most about SSE_BLOCK bytes (at least one event) */
        while (n < SSE_BATCH && s->cursor < next_seq && bytes < SSE_BLOCK) {
            unsigned i = (unsigned)(s->cursor % ADMIN_RING_EVENTS);
            seqs[n] = s->cursor;
            batch[n++] = xstrdup(ring[i]);
            bytes += ring_len[i];
            s->cursor++;
        }
        pthread_mutex_unlock(&ring_lock);

        if (dropped) {
            out_printf(s, ": dropped %llu\n\n", (unsigned long long)dropped);
            metrics_add(M_ADMIN_SSE_DROPPED, 0, 0, dropped);
        }
        struct sse_filter f = {s->identity, s->kind, s->target, s->decision};
        for (unsigned i = 0; i < n; i++) {
            if (sse_event_matches(batch[i], &f)) {
                out_printf(s, "id: %llu\ndata: ", (unsigned long long)seqs[i]);
                out_append(s, batch[i], strlen(batch[i]));
                out_append(s, "\n\n", 2);
            }
            free(batch[i]);
        }
        if (s->off < s->len) return out_take(s, buf, max);
        if (n == 0 && past(&due)) {
            out_append(s, ": keepalive\n\n", 13);
            return out_take(s, buf, max);
        }
        /* everything was filtered out: wait again */
    }
}

bool admin_events_wanted(void)
{
    if (atomic_load_explicit(&n_clients, memory_order_relaxed)) return true;
    long long left = atomic_load_explicit(&last_left_s, memory_order_relaxed);
    return left && admin_mono_seconds() - left < ADMIN_RESUME_SECONDS;
}

static void sse_free(void *cls)
{
    struct sse_client *s = cls;
    free(s->identity);
    free(s->kind);
    free(s->target);
    free(s->decision);
    free(s->out);
    free(s);
    atomic_store(&last_left_s, (long long)admin_mono_seconds());
    atomic_fetch_sub(&n_clients, 1);
    metrics_gauge_add(M_ADMIN_SSE_CLIENTS, 0, 0, -1);
}

static char *arg_dup(struct MHD_Connection *c, const char *key)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    return v && *v ? xstrdup(v) : NULL;
}

enum MHD_Result sse_serve(struct MHD_Connection *c, uint64_t expires)
{
    if (atomic_fetch_add(&n_clients, 1) >= SSE_MAX_CLIENTS) {
        atomic_fetch_sub(&n_clients, 1);
        return admin_reply_error(c, 503, "too many event stream clients");
    }
    metrics_gauge_add(M_ADMIN_SSE_CLIENTS, 0, 0, 1);
    struct sse_client *s = xcalloc(1, sizeof *s);
    s->identity = arg_dup(c, "identity");
    s->kind = arg_dup(c, "kind");
    s->target = arg_dup(c, "target");
    s->decision = arg_dup(c, "decision");
    clock_gettime(CLOCK_MONOTONIC, &s->last_write);
    s->expires = expires;

    pthread_mutex_lock(&ring_lock);
    s->cursor = next_seq;
    /* a reconnecting EventSource resumes after the last event it saw, if still meaningful */
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (last && *last) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(last, &end, 10);
        if (!errno && !*end && id < next_seq) s->cursor = id + 1;
    }
    pthread_mutex_unlock(&ring_lock);

    static const char hello[] = ": sluice event stream\nretry: 3000\n\n";
    out_append(s, hello, sizeof hello - 1);

    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, s, sse_free);
    if (!r) {
        sse_free(s);
        return admin_reply_error(c, 500, "cannot create response");
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    metrics_inc(M_ADMIN_HTTP_REQUESTS, METRICS_OK, 0);
    return ret;
}
