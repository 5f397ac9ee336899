/*
 * cli.c: `sluice audit {tail|search|export|verify}`, reading the state store (opened
 * read-only; the running proxy may keep writing) and the JSON Lines copy.
 *
 *   tail   [-c FILE] [--db FILE] [-n N] [--follow] [--json]
 *   search [-c FILE] [--db FILE] [--identity X] [--decision D] [--kind K] [--since T]
 *          [--until T] [--limit N] [--json]
 *   export [-c FILE] [--db FILE] --format jsonl|csv [--since T] [--until T] [filters]
 *   verify [-c FILE] [--db FILE] [--jsonl FILE] [--pubkey FILE]
 *
 * T is a duration back from now (30s, 15m, 1h, 7d, 2w) or an ISO date/time in UTC. Exit
 * status: 0 success (verify: intact), 1 failure (verify: broken), 2 usage or config error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit/audit_int.h"
#include "core/buf.h"
#include "core/cli.h"

struct cli {
    const char *config, *db, *identity, *decision, *kind, *since, *until, *format, *jsonl, *pubkey;
    unsigned n, limit;
    bool follow, json, limit_set;
    FILE *out;
};

static void usage_print(FILE *f)
{
    fprintf(f,
            "usage: sluice audit tail   [-c FILE] [--db FILE] [-n N] [--follow] [--json]\n"
            "       sluice audit search [-c FILE] [--db FILE] [--identity NAME] [--decision D]\n"
            "                           [--kind K] [--since T] [--until T] [--limit N] [--json]\n"
            "       sluice audit export [-c FILE] [--db FILE] --format jsonl|csv [--since T]\n"
            "                           [--until T] [--identity NAME] [--decision D] [--kind K]\n"
            "       sluice audit verify [-c FILE] [--db FILE] [--jsonl FILE] [--pubkey FILE]\n"
            "T: 30s, 15m, 1h, 7d, 2w back from now, or an ISO date/time (UTC)\n");
}

static int usage(void)
{
    usage_print(stderr);
    return 2;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > 100000000) return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct cli *c)
{
    enum {
        O_DB = 256,
        O_IDENT,
        O_DEC,
        O_KIND,
        O_SINCE,
        O_UNTIL,
        O_LIMIT,
        O_JSON,
        O_FORMAT,
        O_JSONL,
        O_PUBKEY,
        O_FOLLOW
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"db", required_argument, NULL, O_DB},
        {"identity", required_argument, NULL, O_IDENT},
        {"decision", required_argument, NULL, O_DEC},
        {"kind", required_argument, NULL, O_KIND},
        {"since", required_argument, NULL, O_SINCE},
        {"until", required_argument, NULL, O_UNTIL},
        {"limit", required_argument, NULL, O_LIMIT},
        {"json", no_argument, NULL, O_JSON},
        {"format", required_argument, NULL, O_FORMAT},
        {"jsonl", required_argument, NULL, O_JSONL},
        {"pubkey", required_argument, NULL, O_PUBKEY},
        {"follow", no_argument, NULL, O_FOLLOW},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:n:f", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            c->config = optarg;
            break;
        case O_DB:
            c->db = optarg;
            break;
        case O_IDENT:
            c->identity = optarg;
            break;
        case O_DEC:
            c->decision = optarg;
            break;
        case O_KIND:
            if (audit_kind_from_name(optarg) < 0) {
                fprintf(stderr, "sluice audit: unknown event kind \"%s\"\n", optarg);
                return -1;
            }
            c->kind = optarg;
            break;
        case O_SINCE:
            c->since = optarg;
            break;
        case O_UNTIL:
            c->until = optarg;
            break;
        case O_LIMIT:
            if (parse_uint(optarg, &c->limit) != 0) return -1;
            c->limit_set = true;
            break;
        case 'n':
            if (parse_uint(optarg, &c->n) != 0) return -1;
            break;
        case O_JSON:
            c->json = true;
            break;
        case O_FORMAT:
            c->format = optarg;
            break;
        case O_JSONL:
            c->jsonl = optarg;
            break;
        case O_PUBKEY:
            c->pubkey = optarg;
            break;
        case 'f':
        case O_FOLLOW:
            c->follow = true;
            break;
        default:
            fprintf(stderr, "sluice audit: bad option \"%s\"\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluice audit: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* ---- printing */

static const char *js(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? str_make_printable(v->valuestring) : ""; /* (the tree is ours) */
}

static void print_line(struct cli *c, const struct store_event *ev)
{
    struct sbuf line = {0};
    audit_event_line(ev->body, ev->body_len, ev->hash, &line);
    fprintf(c->out, "%s\n", line.p);
    sbuf_free(&line);
}

static void print_human(struct cli *c, const struct store_event *ev)
{
    cJSON *o = cJSON_ParseWithLength(ev->body, ev->body_len);
    if (!o) {
        fprintf(c->out, "#%llu (unreadable body)\n", (unsigned long long)ev->seq);
        return;
    }
    fprintf(c->out, "%s #%llu %s", js(o, "time"), (unsigned long long)ev->seq, js(o, "kind"));
    cJSON *sess = cJSON_GetObjectItemCaseSensitive(o, "session");
    if (cJSON_IsNumber(sess)) fprintf(c->out, " s%llu", (unsigned long long)sess->valuedouble);
    static const char *const keys[] = {"identity",   "client_addr", "target", "decision", "rule",
                                       "request_id", "grant_id",    "actor",  "sqlstate"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = js(o, keys[i]);
        if (*v) fprintf(c->out, " %s=%s", keys[i], v);
    }
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(o, "rows");
    cJSON *dur = cJSON_GetObjectItemCaseSensitive(o, "duration_us");
    if (cJSON_IsNumber(rows)) fprintf(c->out, " rows=%.0f", rows->valuedouble);
    if (cJSON_IsNumber(dur)) fprintf(c->out, " us=%.0f", dur->valuedouble);
    const char *st = js(o, "statement");
    if (*st) fprintf(c->out, " | %s", st);
    const char *d = js(o, "detail");
    if (*d) fprintf(c->out, " (%s)", d);
    fputc('\n', c->out);
    cJSON_Delete(o);
}

static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const char *const csv_cols[] = {
    "seq",
    "time",
    "kind",
    "instance",
    "session",
    "identity",
    "identity_kind",
    "groups",
    "auth_method",
    "client_addr",
    "application_name",
    "target",
    "command",
    "class",
    "tables",
    "statement",
    "fingerprint",
    "decision",
    "rule",
    "request_id",
    "grant_id",
    "actor",
    "ref",
    "duration_us",
    "rows",
    "bytes",
    "masked",
    "digest",
    "sqlstate",
    "detail",
    "prev_hash",
    "hash",
};
#define N_CSV (sizeof csv_cols / sizeof csv_cols[0])

static void print_csv(struct cli *c, const struct store_event *ev)
{
    cJSON *o = cJSON_ParseWithLength(ev->body, ev->body_len);
    for (size_t i = 0; i < N_CSV; i++) {
        if (i) fputc(',', c->out);
        if (strcmp(csv_cols[i], "hash") == 0) {
            fputs(ev->hash, c->out);
            continue;
        }
        cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, csv_cols[i]) : NULL;
        if (!v) continue;
        if (cJSON_IsString(v)) {
            csv_field(c->out, v->valuestring);
        } else if (cJSON_IsNumber(v)) {
            fprintf(c->out, "%.0f", v->valuedouble);
        } else if (cJSON_IsArray(v)) {
            struct sbuf s = {0};
            cJSON *it;
            cJSON_ArrayForEach(it, v)
            {
                if (!cJSON_IsString(it)) continue;
                if (s.len) sbuf_add(&s, ",", 1);
                sbuf_adds(&s, it->valuestring);
            }
            csv_field(c->out, s.p ? s.p : "");
            sbuf_free(&s);
        } else {
            char *t = cJSON_PrintUnformatted(v);
            if (t) csv_field(c->out, t);
            free(t);
        }
    }
    fputc('\n', c->out);
    cJSON_Delete(o);
}

/* ---- commands */

struct printer {
    struct cli *c;
    int mode; /* 0 human, 1 json lines, 2 csv */
    uint64_t last;
};

static int print_event(void *ctx, const struct store_event *ev)
{
    struct printer *p = ctx;
    if (p->mode == 1)
        print_line(p->c, ev);
    else if (p->mode == 2)
        print_csv(p->c, ev);
    else
        print_human(p->c, ev);
    p->last = ev->seq;
    return ferror(p->c->out) ? 1 : 0;
}

static int open_store(struct cli *c, struct sluice_config **cfg, struct store **st)
{
    char err[512];
    *st = NULL;
    if (config_load_ex(c->config, CONFIG_NO_SECRETS, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    struct cfg_state s = (*cfg)->state;
    if (c->db) {
        s.driver = CFG_STATE_SQLITE;
        s.path = (char *)c->db;
    }
    if (store_open(&s, STORE_READONLY, st, err, sizeof err) != 0) {
        fprintf(stderr, "sluice audit: %s\n", err);
        return 1;
    }
    return 0;
}

static int time_opt(const char *what, const char *v, int64_t *out)
{
    *out = 0;
    if (!v) return 0;
    if (audit_time_parse(v, audit_now_us(), out) != 0) {
        fprintf(stderr, "sluice audit: bad %s \"%s\" (use 30s, 15m, 1h, 7d, 2w or an ISO time)\n",
                what, v);
        return -1;
    }
    return 0;
}

static int cmd_query(struct cli *c, struct store *st, int mode, bool tail)
{
    struct store_query q = {
        .identity = c->identity,
        .decision = c->decision,
        .kind = c->kind,
    };
    if (time_opt("--since", c->since, &q.since_us) != 0 ||
        time_opt("--until", c->until, &q.until_us) != 0)
        return 2;
    if (tail) {
        q.limit = c->n ? c->n : 20;
        q.newest_first = true;
    } else if (mode != 2 && !(c->format)) {
        q.limit = c->limit_set ? c->limit : 100;
        q.newest_first = true;
    } else if (c->limit_set) {
        q.limit = c->limit;
    }
    struct printer p = {.c = c, .mode = mode};
    if (mode == 2) {
        for (size_t i = 0; i < N_CSV; i++)
            fprintf(c->out, "%s%s", i ? "," : "", csv_cols[i]);
        fputc('\n', c->out);
    }
    int rc = store_events_query(st, &q, print_event, &p);
    if (rc < 0) {
        fprintf(stderr, "sluice audit: %s\n", store_errmsg(st));
        return 1;
    }
    fflush(c->out);
    while (tail && c->follow) {
        usleep(250000);
        q.limit = 0;
        q.newest_first = false;
        q.after_seq = p.last;
        if (p.last == 0) q.since_us = 0;
        rc = store_events_query(st, &q, print_event, &p);
        if (rc < 0) {
            fprintf(stderr, "sluice audit: %s\n", store_errmsg(st));
            return 1;
        }
        if (fflush(c->out) != 0 || ferror(c->out)) return 0; /* reader went away */
    }
    return rc == 0 ? 0 : 1;
}

/* Events in the journal (journal.c) may not be in the store yet: say so, they are not checked. */
static void journal_note(const char *dbname)
{
    long n = audit_journal_pending(dbname);
    if (n > 0)
        printf("audit verify: note: the audit journal next to the store holds %ld events that "
               "may not be in the store yet (a running sluice commits them within 100 ms, a "
               "stopped one at its next start); they are not checked here\n",
               n);
}

/* A store whose oldest events are gone starts from a retention anchor. Retention prunes only
 * events older than audit.retention, so an anchor is broken when the configuration keeps
 * everything, or when its checkpoint is younger than the retention period (with 5 minutes
 * of slack for the clocks): someone deleted the head of the chain and moved the anchor. */
static void anchor_check(const struct sluice_config *cfg, struct audit_verify_result *r)
{
    if (!r->anchor_seq) return;
    if (!cfg->audit.retention) {
        r->intact = false;
        r->broken_seq = r->anchor_seq;
        snprintf(r->what, sizeof r->what,
                 "the events before checkpoint %llu were removed, but audit.retention is not "
                 "set: nothing prunes this store",
                 (unsigned long long)r->anchor_seq);
        return;
    }
    int64_t cutoff = audit_now_us() - (int64_t)cfg->audit.retention * 1000000 + 300000000LL;
    if (r->anchor_time_us > cutoff) {
        r->intact = false;
        r->broken_seq = r->anchor_seq;
        snprintf(r->what, sizeof r->what,
                 "the events up to checkpoint %llu were removed, but that checkpoint is younger "
                 "than audit.retention (%llus): retention did not prune them (if the setting "
                 "was raised since, verify with the configuration in force then)",
                 (unsigned long long)r->anchor_seq, (unsigned long long)cfg->audit.retention);
    }
}

static int cmd_verify(struct cli *c, struct sluice_config *cfg, struct store *st)
{
    EVP_PKEY *pub = NULL;
    char err[512];
    const char *pubkey = c->pubkey;
    if (!pubkey && cfg->audit.signing_key && *cfg->audit.signing_key)
        pubkey = cfg->audit.signing_key; /* the public half of the configured key */
    if (pubkey && audit_key_load_public(pubkey, &pub, err, sizeof err) != 0) {
        fprintf(stderr, "sluice audit: %s\n", err);
        return 2;
    }
    const char *dbname = c->db ? c->db : cfg->state.path ? cfg->state.path : "sluice.db";
    int status = 0;
    struct audit_verify_result r;
    int rc = audit_verify_store(st, pub, &r);
    if (rc == 0 && r.intact) anchor_check(cfg, &r);
    if (rc < 0) {
        fprintf(stderr, "sluice audit: verify: %s\n", r.what);
        status = 1;
    } else if (!r.intact) {
        printf("audit verify: BROKEN: store %s: first broken link at event %llu: %s\n", dbname,
               (unsigned long long)r.broken_seq, r.what);
        status = 1;
    } else {
        printf("audit verify: intact: store %s: %llu events", dbname, (unsigned long long)r.events);
        if (r.events)
            printf(" (%llu..%llu)", (unsigned long long)r.first_seq,
                   (unsigned long long)r.last_seq);
        if (r.anchor_seq) printf(", anchored at checkpoint %llu", (unsigned long long)r.anchor_seq);
        printf(", %llu checkpoints", (unsigned long long)r.checkpoints);
        if (pub) printf(" (%llu signatures verified)", (unsigned long long)r.signed_checkpoints);
        printf("\n");
    }
    journal_note(dbname);
    const char *jsonl = c->jsonl;
    if (!jsonl && cfg->audit.jsonl && *cfg->audit.jsonl) jsonl = cfg->audit.jsonl;
    if (jsonl) {
        rc = audit_verify_jsonl(jsonl, st, &r);
        if (rc < 0) {
            fprintf(stderr, "sluice audit: verify: %s\n", r.what);
            status = 1;
        } else if (!r.intact) {
            printf("audit verify: BROKEN: %s: first broken link at event %llu: %s\n", jsonl,
                   (unsigned long long)r.broken_seq, r.what);
            status = 1;
        } else {
            printf("audit verify: intact: %s: %llu events", jsonl, (unsigned long long)r.events);
            if (r.events)
                printf(" (%llu..%llu)", (unsigned long long)r.first_seq,
                       (unsigned long long)r.last_seq);
            printf(", consistent with the store\n");
        }
    }
    EVP_PKEY_free(pub);
    return status;
}

int audit_cli_main(int argc, char **argv)
{
    if (argc < 2) return usage();
    if (cli_asks_help(argc, argv, 1)) {
        usage_print(stdout);
        return 0;
    }
    const char *sub = argv[1];
    struct cli c = {.out = stdout};
    if (parse_args(argc - 1, argv + 1, &c) != 0) return usage();
    bool tail = strcmp(sub, "tail") == 0, search = strcmp(sub, "search") == 0,
         exp = strcmp(sub, "export") == 0, verify = strcmp(sub, "verify") == 0;
    if (!tail && !search && !exp && !verify) return usage();
    if ((c.follow || c.n) && !tail) return usage();
    if (c.format && !exp) return usage();
    if ((c.jsonl || c.pubkey) && !verify) return usage();
    int mode = c.json ? 1 : 0;
    if (exp) {
        if (!c.format) return usage();
        if (strcmp(c.format, "jsonl") == 0)
            mode = 1;
        else if (strcmp(c.format, "csv") == 0)
            mode = 2;
        else
            return usage();
    }
    struct sluice_config *cfg = NULL;
    struct store *st = NULL;
    int rc = open_store(&c, &cfg, &st);
    if (rc == 0) rc = verify ? cmd_verify(&c, cfg, st) : cmd_query(&c, st, mode, tail);
    store_close(st);
    if (cfg) config_unref(cfg);
    return rc;
}
