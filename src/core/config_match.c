/*
 * config_match.c: reads the `match` mapping of every policy rule (policy.rules[].match) into
 * struct cfg_match. Each of its keys takes one name or a list of names (`kind: agent` or
 * `kind: [agent, service]`), a shape libcyaml cannot express, so this file walks the YAML
 * document with libyaml instead; libcyaml skips `match` (config_schema.c). It checks key
 * names, shapes and values (kinds, classes, known targets, command spelling) and reports the
 * first problem with its line and column. Globs are stored as written; src/policy/ compiles
 * and matches them.
 */
#include "core/buf.h"
#include "core/config.h"
#include "core/config_raw.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct mctx {
    yaml_document_t *doc;
    struct sluice_config *cfg;
    char *err;
    size_t errlen;
    unsigned *line, *col;
};

static int fail_node(struct mctx *m, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_node(struct mctx *m, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, m->errlen, fmt, ap);
    va_end(ap);
    for (char *c = m->err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    *m->line = (unsigned)node->start_mark.line + 1;
    *m->col = (unsigned)node->start_mark.column + 1;
    return -1;
}

/* The value of key in a mapping node (the last one, as libcyaml would complain about a
 * duplicate before we get here), or NULL. */
static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    yaml_node_t *found = NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp((char *)k->data.scalar.value, key) == 0)
            found = yaml_document_get_node(doc, p->value);
    }
    return found;
}

enum mkey {
    MK_IDENTITY,
    MK_KIND,
    MK_GROUP,
    MK_TARGET,
    MK_CLASS,
    MK_COMMAND,
    MK_TABLES,
    MK_TABLES_WRITTEN,
    MK_FUNCTIONS,
    MK_COUNT
};
static const char *const mkey_names[MK_COUNT] = {
    "identity", "kind",   "group",          "target",    "class",
    "command",  "tables", "tables_written", "functions",
};

static int parse_kind(const char *s)
{
    if (strcmp(s, "human") == 0) return IDENT_HUMAN;
    if (strcmp(s, "service") == 0) return IDENT_SERVICE;
    if (strcmp(s, "agent") == 0) return IDENT_AGENT;
    return -1;
}

static int parse_class(const char *s)
{
    for (int c = 0; c < CFG_CLASS_COUNT; c++)
        if (strcmp(s, cfg_class_name((enum cfg_class)c)) == 0) return c;
    return -1;
}

/* Command tags: letters and single spaces ("DELETE", "CREATE TABLE AS" style), upper-cased. */
static int normalize_command(char *s)
{
    if (!*s) return -1;
    for (char *c = s; *c; c++) {
        if (isalpha((unsigned char)*c))
            *c = (char)toupper((unsigned char)*c);
        else if (!(*c == ' ' && c != s && c[1] && c[1] != ' ') && *c != '_')
            return -1;
    }
    return 0;
}

/* One key of a match mapping: a scalar or a list of scalars. */
static int load_key(struct mctx *m, const char *path, enum mkey key, yaml_node_t *val,
                    struct cfg_match *out)
{
    yaml_node_t *items[256];
    unsigned n = 0;
    char full[160];
    snprintf(full, sizeof(full), "%s.%s", path, mkey_names[key]);
    if (val->type == YAML_SCALAR_NODE) {
        items[n++] = val;
    } else if (val->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = val->data.sequence.items.start;
             it < val->data.sequence.items.top; it++) {
            if (n == sizeof(items) / sizeof(items[0]))
                return fail_node(m, val, "%s holds more than 256 entries", full);
            items[n++] = yaml_document_get_node(m->doc, *it);
        }
        if (n == 0)
            return fail_node(m, val, "%s is an empty list (leave the key out to match anything)",
                             full);
    } else {
        return fail_node(m, val, "%s must be a name or a list of names, not a mapping", full);
    }
    for (unsigned i = 0; i < n; i++)
        if (!items[i] || items[i]->type != YAML_SCALAR_NODE)
            return fail_node(m, items[i] ? items[i] : val,
                             "%s must be a name or a list of names, not a nested list or mapping",
                             full);
        else if (items[i]->data.scalar.length == 0)
            return fail_node(m, items[i], "empty value in %s", full);
        else if (strlen((char *)items[i]->data.scalar.value) != items[i]->data.scalar.length)
            return fail_node(m, items[i], "a NUL byte in %s", full);

    char ***list = NULL;
    unsigned *count = NULL;
    switch (key) {
    case MK_IDENTITY:
        list = &out->identities, count = &out->n_identities;
        break;
    case MK_GROUP:
        list = &out->groups, count = &out->n_groups;
        break;
    case MK_TARGET:
        list = &out->targets, count = &out->n_targets;
        break;
    case MK_COMMAND:
        list = &out->commands, count = &out->n_commands;
        break;
    case MK_TABLES:
        list = &out->tables, count = &out->n_tables;
        break;
    case MK_TABLES_WRITTEN:
        list = &out->tables_written, count = &out->n_tables_written;
        break;
    case MK_FUNCTIONS:
        list = &out->functions, count = &out->n_functions;
        break;
    case MK_KIND:
    case MK_CLASS:
    case MK_COUNT:
        break;
    }

    if (list) *list = xcalloc(n, sizeof(char *));
    for (unsigned i = 0; i < n; i++) {
        const char *s = (const char *)items[i]->data.scalar.value;
        if (key == MK_KIND) {
            int k = parse_kind(s);
            if (k < 0)
                return fail_node(m, items[i],
                                 "invalid value \"%s\" for %s (expected human, service or agent)",
                                 s, full);
            out->kinds |= 1u << k;
            continue;
        }
        if (key == MK_CLASS) {
            int c = parse_class(s);
            if (c < 0)
                return fail_node(m, items[i],
                                 "invalid value \"%s\" for %s (expected read, write, ddl, dcl, "
                                 "admin, transaction or utility)",
                                 s, full);
            out->classes |= 1u << c;
            continue;
        }
        char *v = strdup(s);
        if (!v) {
            fputs("sluice: out of memory\n", stderr);
            abort();
        }
        (*list)[(*count)++] = v;
        if (key == MK_TARGET && !config_find_target(m->cfg, v))
            return fail_node(m, items[i], "unknown target \"%s\" in %s (not in targets)", v, full);
        if (key == MK_COMMAND && normalize_command(v) < 0)
            return fail_node(m, items[i],
                             "invalid command \"%s\" in %s (expected a command tag such as "
                             "DELETE or DROP)",
                             s, full);
    }
    return 0;
}

static int load_match(struct mctx *m, const char *path, yaml_node_t *node, struct cfg_match *out)
{
    if (node->type != YAML_MAPPING_NODE) return fail_node(m, node, "%s must be a mapping", path);
    yaml_node_t *seen[MK_COUNT] = {0};
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(m->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(m->doc, p->value);
        if (!k || !v) continue;
        if (k->type != YAML_SCALAR_NODE) return fail_node(m, k, "%s: keys must be names", path);
        const char *name = (const char *)k->data.scalar.value;
        int key = -1;
        for (int i = 0; i < MK_COUNT; i++)
            if (strcmp(name, mkey_names[i]) == 0) key = i;
        if (key < 0)
            return fail_node(m, k,
                             "unknown key \"%s\" in %s (expected identity, kind, group, target, "
                             "class, command, tables, tables_written or functions)",
                             name, path);
        if (seen[key]) return fail_node(m, k, "duplicate key \"%s.%s\"", path, name);
        seen[key] = v;
        if (load_key(m, path, (enum mkey)key, v, out) < 0) return -1;
    }
    return 0;
}

int cfgmatch_load(const char *data, size_t len, struct sluice_config *cfg, char *err, size_t errlen,
                  unsigned *line, unsigned *col)
{
    if (cfg->policy.n_rules == 0) return 0;
    yaml_parser_t parser;
    yaml_document_t doc;
    struct mctx m = {
        .doc = &doc, .cfg = cfg, .err = err, .errlen = errlen, .line = line, .col = col};
    *line = *col = 0;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "cannot initialise the YAML parser");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        /* config_pos.c already accepted this text; only memory can fail here */
        snprintf(err, errlen, "cannot load the YAML document");
        yaml_parser_delete(&parser);
        return -1;
    }
    int rc = 0;
    yaml_node_t *rules =
        map_get(&doc, map_get(&doc, yaml_document_get_root_node(&doc), "policy"), "rules");
    if (rules && rules->type == YAML_SEQUENCE_NODE) {
        unsigned i = 0;
        for (yaml_node_item_t *it = rules->data.sequence.items.start;
             it < rules->data.sequence.items.top && i < cfg->policy.n_rules && rc == 0; it++, i++) {
            yaml_node_t *rule = yaml_document_get_node(&doc, *it);
            yaml_node_t *match = map_get(&doc, rule, "match");
            if (!match) continue;
            char path[64];
            snprintf(path, sizeof(path), "policy.rules[%u].match", i);
            rc = load_match(&m, path, match, &cfg->policy.rules[i].match);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

void cfgmatch_free(struct cfg_match *mt)
{
    char **lists[] = {mt->identities, mt->groups,         mt->targets,  mt->commands,
                      mt->tables,     mt->tables_written, mt->functions};
    unsigned counts[] = {mt->n_identities, mt->n_groups,         mt->n_targets,  mt->n_commands,
                         mt->n_tables,     mt->n_tables_written, mt->n_functions};
    for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
        for (unsigned i = 0; i < counts[l]; i++)
            free(lists[l][i]);
        free(lists[l]);
    }
    memset(mt, 0, sizeof(*mt));
}
