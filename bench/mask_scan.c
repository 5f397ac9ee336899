/*
 * mask_scan.c: scanner throughput of src/mask/ (mask_text with the default detectors) in
 * GB/s on one core, on generated text that holds no PII and on text where 5% of the values
 * are PII (emails, cards, SSNs, phones, IBANs, IPs, keys).
 *
 * The text (~64 MiB by default) is made in memory from a fixed seed, in values of 20 to 140
 * bytes: "prose" is mostly words with 12% numeric tokens, "numeric" has 58% (dates,
 * timestamps, prices, order numbers, UUIDs, version strings, plain numbers); "5% PII" puts
 * one PII token into 5% of the values.
 * Two ways of scanning are timed: the whole buffer in one mask_text call (the scanner alone)
 * and value by value, as the relay scans DataRow columns (per-call cost included). Output
 * goes into one reused buffer.
 *
 * Build (from the repo root, after `make`):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Isrc -pthread bench/mask_scan.c build/src/mask/detect.o \
 *      build/src/mask/validate.o build/src/mask/form.o build/src/core/buf.o \
 *      -o build/bench/mask_scan -lhs -lssl -lcrypto -lcjson
 * Run: build/bench/mask_scan [MiB]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mask/mask.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)((rng >> 16) % n);
}

static const char *const words[] = {
    "the",      "order",  "shipped",  "customer", "account", "invoice", "payment", "status",
    "pending",  "review", "delivery", "address",  "note",    "total",   "item",    "quantity",
    "returned", "refund", "ticket",   "support",  "and",     "for",     "with",    "from",
    "café",     "naïve",  "über",     "日本",     "données", "año",     "call",    "back"};

static void put_num(char *p, size_t *k, unsigned digits)
{
    for (unsigned i = 0; i < digits; i++)
        p[(*k)++] = (char)('0' + rnd(10));
}

/* Share of tokens that are numeric (dates, times, prices, order numbers, UUIDs, versions,
 * plain numbers), in percent: 12 for "prose", 58 for "numeric" text. */
static unsigned numeric_pct = 12;

/* One token of PII-free text. */
static size_t clean_token(char *p)
{
    size_t k = 0;
    switch (rnd(100) < numeric_pct ? rnd(7) : 7) {
    case 0:
        k = (size_t)sprintf(p, "%04u-%02u-%02u", 2000 + rnd(30), 1 + rnd(12), 1 + rnd(28));
        break;
    case 1:
        k = (size_t)sprintf(p, "%02u:%02u:%02u", rnd(24), rnd(60), rnd(60));
        break;
    case 2:
        k = (size_t)sprintf(p, "$%u.%02u", rnd(10000), rnd(100));
        break;
    case 3:
        k = (size_t)sprintf(p, "ORD-%u-%06u", 2015 + rnd(15), rnd(1000000));
        break;
    case 4:
        k = (size_t)sprintf(p, "%08x-%04x-%04x-%04x-%04x%08x", rnd(~0u), rnd(65536), rnd(65536),
                            rnd(65536), rnd(65536), rnd(~0u));
        break;
    case 5:
        k = (size_t)sprintf(p, "%u.%u.%u", rnd(20), rnd(20), rnd(100));
        break;
    case 6:
        put_num(p, &k, 1 + rnd(12));
        break;
    default: {
        const char *w = words[rnd(sizeof words / sizeof words[0])];
        k = strlen(w);
        memcpy(p, w, k);
    }
    }
    return k;
}

static void luhn_fix(char *d, size_t n)
{
    for (char c = '0'; c <= '9'; c++) {
        d[n - 1] = c;
        unsigned sum = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned v = (unsigned)(d[n - 1 - i] - '0');
            if (i & 1) v = v * 2 > 9 ? v * 2 - 9 : v * 2;
            sum += v;
        }
        if (sum % 10 == 0) return;
    }
}

static size_t pii_token(char *p)
{
    size_t k = 0;
    switch (rnd(7)) {
    case 0:
        k = (size_t)sprintf(p, "user%u.name@example%u.com", rnd(100000), rnd(100));
        break;
    case 1: {
        char d[17];
        d[0] = '4';
        for (int i = 1; i < 16; i++)
            d[i] = (char)('0' + rnd(10));
        luhn_fix(d, 16);
        d[16] = 0;
        k = (size_t)sprintf(p, "%.4s-%.4s-%.4s-%.4s", d, d + 4, d + 8, d + 12);
        break;
    }
    case 2:
        k = (size_t)sprintf(p, "%03u-%02u-%04u", 1 + rnd(600), 1 + rnd(98), 1 + rnd(9998));
        break;
    case 3:
        k = (size_t)sprintf(p, "(%u%02u) %u%02u-%04u", 2 + rnd(8), rnd(100), 2 + rnd(8), rnd(100),
                            rnd(10000));
        break;
    case 4:
        k = (size_t)sprintf(p, "DE89370400440532013000");
        break;
    case 5:
        k = (size_t)sprintf(p, "10.%u.%u.%u", rnd(256), rnd(256), rnd(256));
        break;
    default:
        k = (size_t)sprintf(p, "AKIA%08X%08X", rnd(~0u), rnd(~0u));
        break;
    }
    return k;
}

struct value {
    size_t off, len;
};

/* Fill buf with values of 20..140 bytes; a share pii_pct/100 of them holds one PII token. */
static size_t make_text(char *buf, size_t cap, unsigned pii_pct, struct value *vals, size_t *nvals)
{
    size_t k = 0, nv = 0;
    while (k + 256 < cap) {
        size_t start = k, want = 20 + rnd(121);
        bool pii = rnd(100) < pii_pct;
        size_t at = pii ? rnd((unsigned)want) : (size_t)-1;
        while (k - start < want) {
            if (k - start >= at) {
                k += pii_token(buf + k);
                at = (size_t)-1;
            } else {
                k += clean_token(buf + k);
            }
            buf[k++] = ' ';
        }
        vals[nv].off = start;
        vals[nv].len = k - start - 1;
        nv++;
        buf[k - 1] = '\n';
    }
    *nvals = nv;
    return k;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    size_t cap = mib << 20;
    char *text = malloc(cap);
    struct value *vals = malloc(sizeof *vals * (cap / 20 + 1));
    struct cfg_masking cfg = {0};
    char err[256];
    struct mask_db *db = mask_db_build(&cfg, err, sizeof err);
    if (!text || !vals || !db) {
        fprintf(stderr, "setup failed: %s\n", db ? "out of memory" : err);
        return 1;
    }
    struct buf *out = buf_get();
    const unsigned pcts[] = {0, 5, 0, 5}, nums[] = {12, 12, 58, 58};
    printf("%-18s %6s %11s %12s %s\n", "text", "MiB", "whole GB/s", "values GB/s",
           "masked whole/values");
    for (size_t t = 0; t < 4; t++) {
        size_t nv;
        numeric_pct = nums[t];
        rng = 0x9e3779b97f4a7c15ull + t;
        size_t len = make_text(text, cap, pcts[t], vals, &nv);
        /* whole buffer: best of 3 */
        double best = 1e9;
        long masked = 0;
        for (int r = 0; r < 3; r++) {
            out->off = out->len = 0;
            double t0 = now();
            int m = mask_text(db, (const uint8_t *)text, len, out, NULL);
            double dt = now() - t0;
            if (m < 0) return 1;
            masked = m;
            if (dt < best) best = dt;
        }
        /* value by value */
        double bestv = 1e9;
        long mv = 0;
        for (int r = 0; r < 3; r++) {
            long m = 0;
            double t0 = now();
            for (size_t i = 0; i < nv; i++) {
                out->off = out->len = 0;
                int x = mask_text(db, (const uint8_t *)text + vals[i].off, vals[i].len, out, NULL);
                if (x < 0) return 1;
                m += x;
            }
            double dt = now() - t0;
            mv = m;
            if (dt < bestv) bestv = dt;
        }
        char name[32];
        snprintf(name, sizeof name, "%s, %s", nums[t] > 20 ? "numeric" : "prose",
                 pcts[t] ? "5% PII" : "no PII");
        printf("%-18s %6.1f %11.2f %12.2f %ld/%ld (%zu values)\n", name, (double)len / (1 << 20),
               (double)len / best / 1e9, (double)len / bestv / 1e9, masked, mv, nv);
    }
    buf_put(out);
    mask_db_free(db);
    mask_thread_release();
    free(text);
    free(vals);
    return 0;
}
