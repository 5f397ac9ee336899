/*
 * fuzz_jsonl.c: libFuzzer target for `sluice audit verify --jsonl` (audit_verify_jsonl in
 * src/audit/verify.c, audit_line_split in src/audit/event.c), which reads a JSON Lines copy of
 * the audit that left sluice's hands: a SIEM's spool, an archive, a file someone edited.
 *
 * The first input byte picks the mode, the rest is the file:
 *   even: the file as it is;
 *   odd:  each line of the data is taken as an event body and given the hash it deserves
 *         (audit_event_line), so that the fuzzer gets past the hash check to the chain's.
 * The file is checked alone (no store). Invariants: nothing crashes or leaks; a verdict of
 * intact counts one event per line, and a broken one names what broke.
 * Seeds (tests/fuzz/corpus/fuzz_jsonl/): lines exported from a `make bench` store, whole and
 * edited.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit_int.h"

static char path[64];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_jsonl: %s\n", what);
    abort();
}

static void cleanup(void)
{
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz-jsonl-XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) fail("mkstemp");
    close(fd);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    bool fix = data[0] & 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1, lines = 0;
    struct sbuf file = {0};
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t len = nl ? (size_t)(nl - p) + 1 : n;
        lines += nl != NULL;
        if (fix && nl && len > 1 && p[len - 2] == '}') {
            char hash[AUDIT_HASH_HEX];
            audit_sha256_hex(p, len - 1, hash);
            audit_event_line(p, len - 1, hash, &file);
            sbuf_add(&file, "\n", 1);
        } else {
            sbuf_add(&file, p, len);
        }
        p += len, n -= len;
    }
    FILE *f = fopen(path, "wb");
    if (!f || (file.len && fwrite(file.p, 1, file.len, f) != file.len) || fclose(f) != 0)
        fail("cannot write the file");
    sbuf_free(&file);

    struct audit_verify_result r;
    int rc = audit_verify_jsonl(path, NULL, &r);
    if (rc != 0) fail(r.what);
    if (r.intact && r.events != lines) fail("intact, but not one event per line");
    if (!r.intact && !r.what[0]) fail("broken, but nothing named");
    return 0;
}
