/*
 * fuzz_pack.c: libFuzzer target for the store's packed blocks (src/store/store_pack.c), which
 * are read back from a file anyone with write access could have edited.
 *
 * The input is tried twice: as a frame as it is (damaged frames must be refused cleanly), and
 * as the records inside a valid frame (compressed here, so that the fuzzer reaches the record
 * parser). Whatever unpacks must pack again and unpack to the same events: seq, time, every
 * string and the body. Abort on any difference.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "store/store_pack.h"

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_pack: a repacked block differs (%s)\n", what);
    abort();
}

static void same_str(const char *a, const char *b, const char *what)
{
    if (!a != !b || (a && strcmp(a, b) != 0)) fail(what);
}

static void check_roundtrip(const struct store_unpacked *u)
{
    if (u->n == 0) return;
    struct store_pack p = {0};
    struct store_unpacked again = {0};
    if (store_pack_events(&p, u->ev, u->n) != 0) fail("does not pack");
    if (store_unpack_events(&again, p.out, p.len) != 0) fail("does not unpack");
    if (again.n != u->n) fail("event count");
    for (unsigned i = 0; i < u->n; i++) {
        const struct store_event *a = &u->ev[i], *b = &again.ev[i];
        if (a->seq != b->seq || a->time_us != b->time_us) fail("seq or time");
        same_str(a->kind, b->kind, "kind");
        same_str(a->identity, b->identity, "identity");
        same_str(a->decision, b->decision, "decision");
        same_str(a->hash, b->hash, "hash");
        if (a->body_len != b->body_len || memcmp(a->body, b->body, a->body_len) != 0) fail("body");
    }
    store_pack_free(&p);
    store_unpacked_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_unpacked u = {0};
    if (store_unpack_events(&u, data, size) == 0) check_roundtrip(&u);

    size_t cap = ZSTD_compressBound(size);
    void *frame = malloc(cap ? cap : 1);
    size_t n = ZSTD_compress(frame, cap, data, size, 1);
    if (!ZSTD_isError(n) && store_unpack_events(&u, frame, n) == 0) check_roundtrip(&u);
    free(frame);
    store_unpacked_free(&u);
    return 0;
}
