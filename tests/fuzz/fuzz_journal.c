/*
 * fuzz_journal.c: libFuzzer target for the audit journal's recovery (src/audit/journal.c and
 * the record codec in src/audit/event.c). The journal files sit in the state directory, where
 * a crash, a full disk or anyone with write access may have left any bytes; the next start
 * replays them before anything else.
 *
 * The first input byte picks the mode (its value modulo 3), the rest is the data:
 *   0: the data is journal file 0 as found on disk (file 1 empty): framing, checks and
 *      payloads as they come, so damaged and foreign records must be skipped cleanly;
 *   1: the data is one record payload, appended through the journal's own write path
 *      (reserve, fill) so that its check is right and the fuzzer reaches the decoder;
 *   2: the data is an event (kind, numbers, then its strings separated by NUL bytes, any
 *      bytes in them), encoded and appended as audit_emit() does for a durable event.
 * With bit 7 of the mode byte set, records are checked by HMAC (as with a signing key).
 * Invariants: nothing crashes or leaks; every record replayed decodes to an event whose
 * canonical body is valid JSON, and which encodes and decodes again to the same body; an
 * appended record is replayed exactly when it decodes; an appended event comes back with the
 * body it went in with.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"

static char store_path[64];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_journal: %s\n", what);
    abort();
}

static void write_file(int i, const uint8_t *data, size_t size)
{
    char path[128];
    if (!audit_journal_path(store_path, i, path, sizeof path)) fail("journal path too long");
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        fail("cannot write a journal file");
}

struct replayed {
    long count;
    struct sbuf body; /* of the last event replayed */
};

/* Every replayed event: its body is JSON, and a second trip through the codec changes
 * nothing in it. */
static void check_replayed(void *ctx, uint64_t seq, struct audit_rec *rec)
{
    struct replayed *got = ctx;
    got->count++;
    struct sbuf a = {0}, b = {0}, enc = {0};
    audit_event_body(rec->ev, seq, "fuzz", AUDIT_GENESIS, &a);
    cJSON *o = cJSON_ParseWithLength(a.p, a.len);
    if (!o) fail("a replayed event's body is not JSON");
    cJSON_Delete(o);
    audit_rec_encode(rec->ev, &enc);
    struct audit_rec *again = audit_rec_decode(enc.p, enc.len);
    if (!again) fail("a replayed event does not decode after encoding it again");
    audit_event_body(again->ev, seq, "fuzz", AUDIT_GENESIS, &b);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0) fail("a second trip changed the body");
    free(again);
    free(rec);
    sbuf_free(&got->body);
    got->body = a;
    sbuf_free(&b);
    sbuf_free(&enc);
}

static uint64_t take_u64(const uint8_t **p, size_t *n)
{
    uint64_t v = 0;
    size_t k = *n < 8 ? *n : 8;
    memcpy(&v, *p, k);
    *p += k, *n -= k;
    return v;
}

/* An event made of the data; its strings point into copy (NUL-separated pieces of it). */
static struct audit_event event_of(const uint8_t *p, size_t n, char *copy)
{
    struct audit_event ev = {.kind = (enum audit_kind)((n ? p[0] : 0) % AUDIT_KIND_COUNT)};
    if (n) p++, n--;
    ev.time_us = (int64_t)take_u64(&p, &n) | 1; /* 0 would mean "now" */
    ev.session_id = take_u64(&p, &n);
    ev.ref = take_u64(&p, &n);
    ev.rows = take_u64(&p, &n);
    memcpy(copy, p, n);
    copy[n] = 0;
    const char **fields[] = {
        &ev.instance,    &ev.identity,         &ev.identity_kind, &ev.groups,    &ev.auth_method,
        &ev.client_addr, &ev.application_name, &ev.target,        &ev.statement, &ev.fingerprint,
        &ev.command,     &ev.class_,           &ev.tables,        &ev.decision,  &ev.rule,
        &ev.request_id,  &ev.grant_id,         &ev.actor,         &ev.masked,    &ev.digest,
        &ev.sqlstate,    &ev.detail,
    };
    size_t at = 0;
    /* an empty piece is no value: the codec keeps no difference between them */
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && at <= n; i++) {
        *fields[i] = copy[at] ? copy + at : NULL;
        at += strlen(copy + at) + 1;
    }
    return ev;
}

static void cleanup(void)
{
    char path[128];
    for (int i = 0; i < 2; i++)
        if (audit_journal_path(store_path, i, path, sizeof path)) unlink(path);
    *strrchr(store_path, '/') = 0;
    rmdir(store_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    char dir[64];
    snprintf(dir, sizeof dir, "%s/fuzz-journal-XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!mkdtemp(dir)) fail("mkdtemp");
    snprintf(store_path, sizeof store_path, "%s/s.db", dir);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0] % 3;
    bool keyed = data[0] & 0x80;
    data++, size--;
    write_file(0, mode == 0 ? data : NULL, mode == 0 ? size : 0);
    write_file(1, NULL, 0);

    struct audit_journal *j = NULL;
    char err[256];
    if (audit_journal_open(store_path, &j, err, sizeof err) != 0) fail(err);
    if (keyed) audit_journal_set_key(j, (const unsigned char *)"fuzz-key", 8);
    struct sbuf rec = {0}, want = {0};
    char *copy = NULL;
    if (mode == 1) sbuf_add(&rec, (const char *)data, size);
    if (mode == 2) {
        copy = malloc(size + 1);
        struct audit_event ev = event_of(data, size, copy);
        audit_rec_encode(&ev, &rec);
        audit_event_body(&ev, 7, "fuzz", AUDIT_GENESIS, &want);
    }
    if (mode != 0) {
        struct audit_journal_slot slot;
        if (audit_journal_reserve(j, 7, rec.len, &slot) != 0) fail("reserve");
        audit_journal_fill(j, &slot, rec.p ? rec.p : "");
    }
    struct replayed got = {0};
    unsigned rejected = 0;
    long n = audit_journal_replay(j, 0, check_replayed, &got, &rejected, err, sizeof err);
    if (n < 0) fail(err);
    if (n != got.count) fail("replay's count differs from the records it gave");
    if (mode != 0) {
        struct audit_rec *r = audit_rec_decode(rec.p ? rec.p : "", rec.len);
        if ((r != NULL) != (n == 1) || (n == 0) != (rejected == 1)) fail("appended record lost");
        free(r);
    }
    if (mode == 2 && (n != 1 || got.body.len != want.len || memcmp(got.body.p, want.p, want.len)))
        fail("an appended event came back with another body");
    sbuf_free(&got.body);
    sbuf_free(&rec);
    sbuf_free(&want);
    free(copy);
    audit_journal_close(j);
    return 0;
}
