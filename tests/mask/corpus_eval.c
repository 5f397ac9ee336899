/*
 * corpus_eval.c: scores the value detectors of src/mask/ on the labelled corpus written by
 * tests/mask/gen_corpus.js (LABEL <TAB> VALUE [<TAB> NEEDLE] per line).
 *
 * A positive counts as found when mask_text() masked at least one value with the labelled
 * detector AND the needle (the sensitive substring) no longer appears in the output. A
 * negative ("none") is a false positive for every detector that masked something in it.
 * Prints recall and false-positive rate per detector and exits 1 when any recall is below
 * 99% or any false-positive rate above 0.1% (2 on usage or input errors). -v prints misses.
 *
 * Build (from the repo root, after `make` has built the objects):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Isrc -pthread tests/mask/corpus_eval.c \
 *      build/src/mask/detect.o build/src/mask/validate.o build/src/mask/form.o \
 *      build/src/core/buf.o -o build/tests/mask/corpus_eval -lhs -lssl -lcrypto -lcjson
 * Run:
 *   (cd tests/mask && npm install --no-audit --no-fund)
 *   node tests/mask/gen_corpus.js build/tests/mask/corpus.tsv
 *   build/tests/mask/corpus_eval build/tests/mask/corpus.tsv
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask.h"

#define MAX_SHOW 8

int main(int argc, char **argv)
{
    int verbose = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else
            path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: corpus_eval [-v] CORPUS.tsv\n");
        return 2;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 2;
    }
    struct cfg_masking cfg = {0};
    cfg.enabled = true;
    char err[256];
    struct mask_db *db = mask_db_build(&cfg, err, sizeof err);
    if (!db) {
        fprintf(stderr, "mask_db_build: %s\n", err);
        return 2;
    }
    unsigned nd = mask_db_detector_count(db);
    unsigned long pos[MASK_MAX_DETECTORS] = {0}, hit[MASK_MAX_DETECTORS] = {0},
                  fp[MASK_MAX_DETECTORS] = {0}, cross[MASK_MAX_DETECTORS] = {0};
    unsigned shown[MASK_MAX_DETECTORS] = {0}, shown_fp[MASK_MAX_DETECTORS] = {0};
    unsigned long negs = 0, neg_lines_fp = 0, lineno = 0;
    struct buf *out = buf_get();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] == '\n') line[--n] = 0;
        char *label = line, *value = strchr(line, '\t');
        if (!value) {
            fprintf(stderr, "%s:%lu: no tab\n", path, lineno);
            return 2;
        }
        *value++ = 0;
        char *needle = strchr(value, '\t');
        if (needle) *needle++ = 0;
        int det = -1;
        if (strcmp(label, "none") != 0) {
            det = mask_db_detector_index(db, label);
            if (det < 0) {
                fprintf(stderr, "%s:%lu: unknown detector %s\n", path, lineno, label);
                return 2;
            }
        }
        struct mask_counts counts = {0};
        out->off = out->len = 0;
        int r = mask_text(db, (const uint8_t *)value, strlen(value), out, &counts);
        if (r < 0) {
            fprintf(stderr, "%s:%lu: scanner failure\n", path, lineno);
            return 2;
        }
        buf_append_u8(out, 0);
        const char *masked = r ? (const char *)out->data : value;
        if (det < 0) {
            negs++;
            if (r > 0) neg_lines_fp++;
            for (unsigned i = 0; i < nd; i++)
                if (counts.n[i]) {
                    fp[i]++;
                    if (verbose && shown_fp[i]++ < MAX_SHOW)
                        printf("FP %-11s %s\n   -> %s\n", mask_db_detector_name(db, i), value,
                               masked);
                }
            continue;
        }
        pos[det]++;
        bool gone = !needle || !*needle || strstr(masked, needle) == NULL;
        if (counts.n[det] && gone)
            hit[det]++;
        else if (verbose && shown[det]++ < MAX_SHOW)
            printf("MISS %-11s %s\n   -> %s\n", label, value, masked);
        for (unsigned i = 0; i < nd; i++)
            if ((int)i != det && counts.n[i]) cross[i]++;
    }
    free(line);
    fclose(f);

    int fail = 0;
    printf("%-12s %8s %8s %9s %8s %9s %8s\n", "detector", "values", "found", "recall", "FP",
           "FP rate", "cross");
    for (unsigned i = 0; i < nd; i++) {
        if (!pos[i] && !fp[i]) continue;
        double recall = pos[i] ? 100.0 * (double)hit[i] / (double)pos[i] : 100.0;
        double fpr = negs ? 100.0 * (double)fp[i] / (double)negs : 0.0;
        bool bad = (pos[i] && recall < 99.0) || fpr > 0.1;
        fail |= bad;
        printf("%-12s %8lu %8lu %8.2f%% %8lu %8.3f%% %8lu%s\n", mask_db_detector_name(db, i),
               pos[i], hit[i], recall, fp[i], fpr, cross[i], bad ? "  FAIL" : "");
    }
    printf("negatives: %lu, with any detection: %lu (%.3f%%)\n", negs, neg_lines_fp,
           negs ? 100.0 * (double)neg_lines_fp / (double)negs : 0.0);
    printf("targets: recall >= 99%%, FP rate <= 0.1%%: %s\n", fail ? "FAIL" : "ok");
    buf_put(out);
    mask_db_free(db);
    mask_thread_release();
    buf_pool_free();
    return fail ? 1 : 0;
}
