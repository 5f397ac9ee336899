/*
 * verify.c: recompute the audit chain and report the first broken link.
 *
 * In the store: events must run without gaps from the start (seq 1 after the genesis hash
 * of 64 zeros) or from the retention anchor (the checkpoint right before the oldest kept
 * event); each stored body must hash to the stored hash, carry the previous event's hash as
 * prev_hash, and agree with the columns copied from it; each checkpoint must match its event
 * and, given a public key, carry a valid Ed25519 signature. In a JSON Lines copy: each line
 * must hash to its own "hash" (body = the line without ,"hash":"..."), chain to the line
 * before, and agree with the store event for event; neither may end before the other.
 * Read-only: nothing here writes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"
#include "core/buf.h"

static int broken(struct audit_verify_result *r, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int broken(struct audit_verify_result *r, uint64_t seq, const char *fmt, ...)
{
    if (!r->intact) return 1; /* keep the first */
    r->intact = false;
    r->broken_seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof r->what, fmt, ap);
    va_end(ap);
    return 1;
}

static const char *jstr(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jnum(cJSON *o, const char *k, int64_t *out)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    /* a number out of int64_t's range (or NaN) is not one sluice wrote: the cast would be
     * undefined (found by fuzz_jsonl) */
    if (!cJSON_IsNumber(v) ||
        !(v->valuedouble >= -9223372036854775808.0 && v->valuedouble < 9223372036854775808.0))
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

static bool same(const char *a, const char *b)
{
    if (!a) a = "";
    if (!b) b = "";
    return strcmp(a, b) == 0;
}

/* ---- store */

struct cp {
    uint64_t seq;
    int64_t time_us;
    char hash[AUDIT_HASH_HEX];
    bool is_signed, sig_ok;
};

struct vstore {
    struct audit_verify_result *r;
    EVP_PKEY *pub;
    struct cp *cps;
    size_t ncp, cap, icp;
    uint64_t expect;
    char prev[AUDIT_HASH_HEX];
};

static int collect_cp(void *ctx, const struct store_checkpoint *c)
{
    struct vstore *v = ctx;
    if (v->ncp == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->cps = xrealloc(v->cps, v->cap * sizeof *v->cps);
    }
    struct cp *p = &v->cps[v->ncp++];
    p->seq = c->seq;
    p->time_us = c->time_us;
    snprintf(p->hash, sizeof p->hash, "%s", c->hash);
    p->is_signed = c->signature && *c->signature;
    p->sig_ok =
        v->pub && p->is_signed && audit_checkpoint_verify(v->pub, c->seq, c->hash, c->signature);
    return 0;
}

static int check_event(void *ctx, const struct store_event *ev)
{
    struct vstore *v = ctx;
    struct audit_verify_result *r = v->r;
    if (ev->seq != v->expect)
        return broken(r, v->expect,
                      "event %llu is missing (the next stored event is %llu): events were "
                      "deleted",
                      (unsigned long long)v->expect, (unsigned long long)ev->seq);
    if (ev->body_len == 0)
        return broken(r, ev->seq,
                      "event %llu: its body is missing (the block holding it in the store is "
                      "damaged)",
                      (unsigned long long)ev->seq);
    char h[AUDIT_HASH_HEX];
    audit_sha256_hex(ev->body, ev->body_len, h);
    if (strcmp(h, ev->hash) != 0)
        return broken(r, ev->seq,
                      "event %llu: its content does not match its hash (stored %.16s..., "
                      "recomputed %.16s...): the event was changed",
                      (unsigned long long)ev->seq, ev->hash, h);
    cJSON *o = cJSON_ParseWithLength(ev->body, ev->body_len);
    if (!o)
        return broken(r, ev->seq, "event %llu: the body is not JSON", (unsigned long long)ev->seq);
    int ret = 0;
    int64_t bseq = 0, btime = 0;
    const char *prev = jstr(o, "prev_hash");
    if (jnum(o, "seq", &bseq) != 0 || (uint64_t)bseq != ev->seq) {
        ret = broken(r, ev->seq, "event %llu: the column seq differs from the hashed body (%lld)",
                     (unsigned long long)ev->seq, (long long)bseq);
    } else if (!prev || strcmp(prev, v->prev) != 0) {
        ret = broken(r, ev->seq,
                     "event %llu: prev_hash %.16s... does not match the hash of the event before "
                     "(%.16s...): event %llu was changed, or this one",
                     (unsigned long long)ev->seq, prev ? prev : "(none)", v->prev,
                     (unsigned long long)ev->seq - 1);
    } else if (jnum(o, "time_us", &btime) != 0 || btime != ev->time_us) {
        ret = broken(r, ev->seq,
                     "event %llu: the column time_us %lld differs from the hashed body (%lld)",
                     (unsigned long long)ev->seq, (long long)ev->time_us, (long long)btime);
    } else {
        static const char *const cols[] = {"kind", "identity", "decision"};
        const char *vals[] = {ev->kind, ev->identity, ev->decision};
        for (int i = 0; i < 3 && !ret; i++) {
            const char *b = jstr(o, cols[i]);
            if (!same(b, vals[i]))
                ret = broken(r, ev->seq,
                             "event %llu: the column %s \"%s\" differs from the hashed body "
                             "(\"%s\")",
                             (unsigned long long)ev->seq, cols[i], vals[i] ? vals[i] : "",
                             b ? b : "");
        }
    }
    cJSON_Delete(o);
    if (ret) return ret;
    while (v->icp < v->ncp && v->cps[v->icp].seq < ev->seq) {
        struct cp *c = &v->cps[v->icp++];
        if (c->seq > r->anchor_seq)
            return broken(r, c->seq, "checkpoint %llu has no event: event %llu was deleted",
                          (unsigned long long)c->seq, (unsigned long long)c->seq);
    }
    if (v->icp < v->ncp && v->cps[v->icp].seq == ev->seq) {
        struct cp *c = &v->cps[v->icp++];
        if (strcmp(c->hash, ev->hash) != 0)
            return broken(r, ev->seq,
                          "event %llu: checkpoint hash %.16s... differs from the event's hash "
                          "%.16s...: the chain was rewritten",
                          (unsigned long long)ev->seq, c->hash, ev->hash);
    }
    memcpy(v->prev, ev->hash, AUDIT_HASH_HEX);
    if (!r->first_seq) r->first_seq = ev->seq;
    r->last_seq = ev->seq;
    r->events++;
    v->expect++;
    return 0;
}

int audit_verify_store(struct store *st, EVP_PKEY *pub, struct audit_verify_result *r)
{
    memset(r, 0, sizeof *r);
    r->intact = true;
    struct vstore v = {.r = r, .pub = pub};
    int ret = 0;
    if (store_anchor_get(st, &r->anchor_seq) != 0 ||
        store_checkpoints_scan(st, r->anchor_seq, collect_cp, &v) != 0) {
        snprintf(r->what, sizeof r->what, "%s", store_errmsg(st));
        r->intact = false;
        ret = -1;
        goto out;
    }
    memcpy(v.prev, AUDIT_GENESIS, AUDIT_HASH_HEX);
    v.expect = r->anchor_seq + 1;
    if (r->anchor_seq) {
        if (v.ncp == 0 || v.cps[0].seq != r->anchor_seq) {
            broken(r, r->anchor_seq, "the retention anchor (checkpoint %llu) is missing",
                   (unsigned long long)r->anchor_seq);
            goto out;
        }
        memcpy(v.prev, v.cps[0].hash, AUDIT_HASH_HEX);
        r->anchor_time_us = v.cps[0].time_us;
        v.icp = 1;
    }
    int rc = store_events_scan(st, r->anchor_seq ? r->anchor_seq : 0, check_event, &v);
    if (rc < 0) {
        snprintf(r->what, sizeof r->what, "%s", store_errmsg(st));
        r->intact = false;
        ret = -1;
        goto out;
    }
    if (r->intact && v.icp < v.ncp)
        broken(r, v.cps[v.icp].seq, "checkpoint %llu has no event: events after %llu were deleted",
               (unsigned long long)v.cps[v.icp].seq, (unsigned long long)(v.expect - 1));
    for (size_t i = 0; i < v.ncp; i++) {
        r->checkpoints++;
        if (!pub) continue;
        if (!v.cps[i].is_signed)
            broken(r, v.cps[i].seq, "checkpoint %llu is not signed",
                   (unsigned long long)v.cps[i].seq);
        else if (!v.cps[i].sig_ok)
            broken(r, v.cps[i].seq,
                   "checkpoint %llu: the signature does not verify with the public key",
                   (unsigned long long)v.cps[i].seq);
        else
            r->signed_checkpoints++;
    }
out:
    free(v.cps);
    return ret;
}

/* ---- JSON Lines */

struct jreader {
    FILE *f;
    const char *path;
    char *line;
    size_t cap;
    uint64_t lineno;
    struct sbuf body;
    /* the current line */
    bool have, eof;
    uint64_t seq, first_seq;
    char hash[AUDIT_HASH_HEX], prev[AUDIT_HASH_HEX];
    uint64_t last_seq; /* of the line before */
    char last_hash[AUDIT_HASH_HEX];
};

/* Read and check the next line. 0 ok (have or eof set), 1 broken (r filled). */
static int jnext(struct jreader *j, struct audit_verify_result *r)
{
    if (j->have) {
        j->last_seq = j->seq;
        memcpy(j->last_hash, j->hash, AUDIT_HASH_HEX);
    }
    j->have = false;
    errno = 0;
    ssize_t n = getline(&j->line, &j->cap, j->f);
    if (n < 0) {
        if (ferror(j->f)) {
            snprintf(r->what, sizeof r->what, "reading %s: %s", j->path, strerror(errno));
            r->intact = false;
            return -1;
        }
        j->eof = true;
        return 0;
    }
    j->lineno++;
    if (j->line[n - 1] != '\n')
        return broken(r, j->last_seq + 1,
                      "%s line %llu is incomplete (after event %llu): the file was truncated",
                      j->path, (unsigned long long)j->lineno, (unsigned long long)j->last_seq);
    if (audit_line_split(j->line, (size_t)n, &j->body, j->hash) != 0)
        return broken(r, j->last_seq + 1, "%s line %llu is not an audit event line", j->path,
                      (unsigned long long)j->lineno);
    cJSON *o = cJSON_ParseWithLength(j->body.p, j->body.len);
    int64_t seq = 0;
    const char *prev = o ? jstr(o, "prev_hash") : NULL;
    if (!o || jnum(o, "seq", &seq) != 0 || seq < 1 || !prev || strlen(prev) != 64) {
        cJSON_Delete(o);
        return broken(r, j->last_seq + 1, "%s line %llu is not an audit event", j->path,
                      (unsigned long long)j->lineno);
    }
    j->seq = (uint64_t)seq;
    memcpy(j->prev, prev, AUDIT_HASH_HEX);
    cJSON_Delete(o);
    char h[AUDIT_HASH_HEX];
    audit_sha256_hex(j->body.p, j->body.len, h);
    if (strcmp(h, j->hash) != 0)
        return broken(r, j->seq,
                      "event %llu (%s line %llu): its content does not match its hash: the "
                      "line was changed",
                      (unsigned long long)j->seq, j->path, (unsigned long long)j->lineno);
    if (j->lineno == 1) {
        j->first_seq = j->seq;
        if (j->seq == 1 && strcmp(j->prev, AUDIT_GENESIS) != 0)
            return broken(r, 1, "event 1 (%s line 1): prev_hash is not the genesis hash", j->path);
    } else {
        if (j->seq != j->last_seq + 1)
            return broken(r, j->last_seq + 1,
                          "event %llu is missing from %s (line %llu has event %llu)",
                          (unsigned long long)j->last_seq + 1, j->path,
                          (unsigned long long)j->lineno, (unsigned long long)j->seq);
        if (strcmp(j->prev, j->last_hash) != 0)
            return broken(r, j->seq,
                          "event %llu (%s line %llu): prev_hash does not match the line "
                          "before: event %llu was changed, or this one",
                          (unsigned long long)j->seq, j->path, (unsigned long long)j->lineno,
                          (unsigned long long)j->last_seq);
    }
    j->have = true;
    if (!r->first_seq) r->first_seq = j->seq;
    r->last_seq = j->seq;
    r->events++;
    return 0;
}

struct vjsonl {
    struct jreader *j;
    struct audit_verify_result *r;
    uint64_t store_last;
    bool started;
};

static int jsonl_vs_store(void *ctx, const struct store_event *ev)
{
    struct vjsonl *v = ctx;
    struct jreader *j = v->j;
    v->store_last = ev->seq;
    if (!v->started) {
        int rc = jnext(j, v->r);
        if (rc) return rc;
        v->started = true;
    }
    while (j->have && j->seq < ev->seq) {
        int rc = jnext(j, v->r);
        if (rc) return rc;
    }
    if (!j->have) {
        if (j->lineno == 0) return 0; /* empty file: checked after the scan */
        return broken(v->r, ev->seq,
                      "%s ends at event %llu but the store has event %llu: the file was "
                      "truncated",
                      j->path, (unsigned long long)j->last_seq, (unsigned long long)ev->seq);
    }
    if (j->seq == ev->seq + 1 && j->lineno == 1 && strcmp(j->prev, ev->hash) != 0)
        return broken(v->r, j->seq,
                      "event %llu (%s line 1): prev_hash differs from the store's event %llu",
                      (unsigned long long)j->seq, j->path, (unsigned long long)ev->seq);
    if (j->seq == ev->seq && strcmp(j->hash, ev->hash) != 0)
        return broken(v->r, ev->seq,
                      "event %llu differs between the store (hash %.16s...) and %s (line %llu, "
                      "hash %.16s...)",
                      (unsigned long long)ev->seq, ev->hash, j->path, (unsigned long long)j->lineno,
                      j->hash);
    return 0;
}

int audit_verify_jsonl(const char *path, struct store *st, struct audit_verify_result *r)
{
    memset(r, 0, sizeof *r);
    r->intact = true;
    struct jreader j = {.path = path};
    j.f = fopen(path, "r");
    if (!j.f) {
        snprintf(r->what, sizeof r->what, "cannot open %s: %s", path, strerror(errno));
        r->intact = false;
        return -1;
    }
    int ret = 0;
    struct vjsonl v = {.j = &j, .r = r};
    if (st) {
        uint64_t after = 0;
        /* Start one before the file's first event when the store has it (the link). */
        int rc = store_events_scan(st, after, jsonl_vs_store, &v);
        if (rc < 0) {
            snprintf(r->what, sizeof r->what, "%s", store_errmsg(st));
            r->intact = false;
            ret = -1;
            goto out;
        }
        if (rc > 0 || !r->intact) goto out;
        if (!v.store_last) store_events_last(st, &v.store_last, (char[STORE_HASH_HEX]){0});
    }
    if (!v.started && jnext(&j, r) != 0) goto out;
    while (j.have)
        if (jnext(&j, r) != 0) goto out;
    if (st && v.store_last) {
        uint64_t jl = j.last_seq;
        if (jl == 0 && j.lineno == 0)
            broken(r, v.store_last, "%s is empty but the store has events up to %llu", path,
                   (unsigned long long)v.store_last);
        else if (jl < v.store_last)
            broken(r, jl + 1,
                   "%s ends at event %llu but the store has events up to %llu: the file was "
                   "truncated",
                   path, (unsigned long long)jl, (unsigned long long)v.store_last);
        else if (jl > v.store_last)
            broken(r, v.store_last + 1,
                   "the store lacks events %llu..%llu that %s has: events were deleted from "
                   "the store",
                   (unsigned long long)v.store_last + 1, (unsigned long long)jl, path);
    }
out:
    free(j.line);
    sbuf_free(&j.body);
    fclose(j.f);
    return ret;
}
