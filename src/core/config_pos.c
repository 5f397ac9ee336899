/*
 * config_pos.c: a libyaml event pass over sluice.yaml that records where every key and
 * sequence entry sits (path -> line, column), and turns YAML syntax errors into a position
 * and a message. libcyaml's own errors carry a path but not always a usable position; the
 * loader looks the path up here. A second YAML document in the file is an error.
 */
#include "core/config_raw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum { FRAME_MAP, FRAME_SEQ };

struct frame {
    int type;
    char *path;     /* path of this collection ("" for the root) */
    int is_key;     /* this collection is itself a mapping key (rare; ignored) */
    int want_value; /* FRAME_MAP: next node is a value */
    char *key;      /* FRAME_MAP: current key */
    yaml_mark_t key_mark;
    unsigned index; /* FRAME_SEQ: next entry index */
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fputs("sluice: out of memory\n", stderr);
        abort();
    }
    return q;
}

static char *path_join(const char *parent, const char *key, long index)
{
    size_t n = strlen(parent) + (key ? strlen(key) : 0) + 32;
    char *s = xrealloc(NULL, n);
    if (key)
        snprintf(s, n, "%s%s%s", parent, parent[0] ? "." : "", key);
    else
        snprintf(s, n, "%s[%ld]", parent, index);
    return s;
}

static void pos_add(struct cfgpos *pos, char *path, yaml_mark_t key, yaml_mark_t val)
{
    if (pos->n == pos->cap) {
        pos->cap = pos->cap ? pos->cap * 2 : 32;
        pos->v = xrealloc(pos->v, pos->cap * sizeof(*pos->v));
    }
    pos->v[pos->n++] = (struct cfgpos_entry){
        .path = path,
        .key_line = (unsigned)key.line + 1,
        .key_col = (unsigned)key.column + 1,
        .val_line = (unsigned)val.line + 1,
        .val_col = (unsigned)val.column + 1,
    };
}

/*
 * A node starts (scalar, alias, or collection). Returns the path the node gets (owned by
 * the caller, NULL when it is a key or has no parent) and records it in pos.
 */
static char *node_begin(struct cfgpos *pos, struct frame *top, const yaml_event_t *ev, int *is_key)
{
    *is_key = 0;
    if (!top) {
        pos_add(pos, strdup(""), ev->start_mark, ev->start_mark);
        return strdup("");
    }
    if (top->type == FRAME_MAP && !top->want_value) {
        *is_key = 1;
        free(top->key);
        if (ev->type == YAML_SCALAR_EVENT)
            top->key = strdup((const char *)ev->data.scalar.value);
        else
            top->key = strdup("?");
        top->key_mark = ev->start_mark;
        return NULL;
    }
    char *path;
    if (top->type == FRAME_MAP) {
        path = path_join(top->path, top->key, 0);
        pos_add(pos, strdup(path), top->key_mark, ev->start_mark);
    } else {
        path = path_join(top->path, NULL, top->index);
        pos_add(pos, strdup(path), ev->start_mark, ev->start_mark);
    }
    return path;
}

/* A node ended (a scalar, or a collection was popped): advance the parent. */
static void node_end(struct frame *top, int was_key)
{
    if (!top) return;
    if (top->type == FRAME_MAP)
        top->want_value = was_key;
    else
        top->index++;
}

int cfgpos_scan(const char *data, size_t len, struct cfgpos *pos)
{
    memset(pos, 0, sizeof(*pos));
    pos->empty = 1;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(pos->problem, sizeof(pos->problem), "cannot initialise the YAML parser");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);

    struct frame *stack = NULL;
    size_t depth = 0, cap = 0;
    int rc = 0, done = 0, docs = 0;
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.context)
                snprintf(pos->problem, sizeof(pos->problem),
                         "invalid YAML: %s %s (started at line %u, column %u)",
                         parser.problem ? parser.problem : "syntax error", parser.context,
                         (unsigned)parser.context_mark.line + 1,
                         (unsigned)parser.context_mark.column + 1);
            else
                snprintf(pos->problem, sizeof(pos->problem), "invalid YAML: %s",
                         parser.problem ? parser.problem : "syntax error");
            pos->line = (unsigned)parser.problem_mark.line + 1;
            pos->col = (unsigned)parser.problem_mark.column + 1;
            rc = -1;
            break;
        }
        struct frame *top = depth ? &stack[depth - 1] : NULL;
        int is_key;
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
        case YAML_ALIAS_EVENT:
            pos->empty = 0;
            free(node_begin(pos, top, &ev, &is_key));
            node_end(top, is_key);
            break;
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT: {
            pos->empty = 0;
            char *path = node_begin(pos, top, &ev, &is_key);
            if (depth == cap) {
                cap = cap ? cap * 2 : 16;
                stack = xrealloc(stack, cap * sizeof(*stack));
            }
            stack[depth++] = (struct frame){
                .type = ev.type == YAML_MAPPING_START_EVENT ? FRAME_MAP : FRAME_SEQ,
                .path = path ? path : strdup("?"),
                .is_key = is_key,
            };
            break;
        }
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            if (depth) {
                struct frame f = stack[--depth];
                free(f.path);
                free(f.key);
                node_end(depth ? &stack[depth - 1] : NULL, f.is_key);
            }
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                snprintf(pos->problem, sizeof(pos->problem),
                         "a config file holds one YAML document; found a second one");
                pos->line = (unsigned)ev.start_mark.line + 1;
                pos->col = (unsigned)ev.start_mark.column + 1;
                rc = -1;
                done = 1;
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    while (depth) {
        free(stack[depth - 1].path);
        free(stack[depth - 1].key);
        depth--;
    }
    free(stack);
    yaml_parser_delete(&parser);
    return rc;
}

const struct cfgpos_entry *cfgpos_find(const struct cfgpos *pos, const char *path)
{
    for (size_t i = 0; i < pos->n; i++)
        if (strcmp(pos->v[i].path, path) == 0) return &pos->v[i];
    return NULL;
}

const struct cfgpos_entry *cfgpos_find_last(const struct cfgpos *pos, const char *path)
{
    for (size_t i = pos->n; i > 0; i--)
        if (strcmp(pos->v[i - 1].path, path) == 0) return &pos->v[i - 1];
    return NULL;
}

void cfgpos_free(struct cfgpos *pos)
{
    for (size_t i = 0; i < pos->n; i++)
        free(pos->v[i].path);
    free(pos->v);
    memset(pos, 0, sizeof(*pos));
}
