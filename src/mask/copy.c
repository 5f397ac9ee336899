/*
 * copy.c: masking the lines of COPY ... TO STDOUT by column. CopyData carries no column
 * names; the statement does (sql_copy.c reads them from its column list or its query's
 * output names), or for a whole table the catalog (src/proxy/catalog.c), so the relay
 * builds a plan from them when it forwards the COPY, and each
 * line is cut into its fields (text format: delimiter, backslash escapes; CSV: delimiter,
 * quote, escape) to mask the fields of columns sensitive by name whole, as DataRow values
 * are. Other fields are scanned by value. No I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "mask/mask.h"
#include "pg/msg.h"

struct copy_col {
    int16_t how; /* MASK_COLUMN_SKIP, MASK_COLUMN_SCAN, or a detector */
    uint8_t form;
};

struct mask_copy_plan {
    struct mask_copy_layout lay;
    char *null_str; /* lay.null_str points here */
    size_t null_len;
    bool null_default; /* "\\N" (text) or "" (CSV): no value can be mistaken for it */
    bool header_left;  /* the header line is still to come */
    unsigned n;
    struct copy_col cols[];
};

struct mask_copy_plan *mask_copy_plan_build(const struct mask_db *db, const char *table,
                                            const char *const *columns, const char *const *sources,
                                            unsigned n, const struct mask_copy_layout *layout)
{
    if (!db || !n || !layout->null_str) return NULL;
    char schema[128] = "", rel[128] = "";
    const char *dot = table ? strrchr(table, '.') : NULL;
    if (table) {
        snprintf(rel, sizeof rel, "%s", dot ? dot + 1 : table);
        if (dot) snprintf(schema, sizeof schema, "%.*s", (int)(dot - table), table);
    }
    struct mask_copy_plan *p = xcalloc(1, sizeof *p + n * sizeof p->cols[0]);
    p->n = n;
    bool by_name = false;
    for (unsigned i = 0; i < n; i++) {
        enum cfg_mask_form form = CFG_FORM_DEFAULT;
        int how = columns[i] || sources[i]
                      ? mask_column_by_name(db, schema[0] ? schema : NULL, rel[0] ? rel : NULL,
                                            columns[i], sources[i], &form)
                      : MASK_COLUMN_SCAN;
        /* Names from the statement's text (aliases, CTE names) are the client's to choose,
         * and which table a name meant is the relay's reading: they may add masking, never
         * take it away (no exemption). */
        if (how == MASK_COLUMN_SKIP) how = MASK_COLUMN_SCAN;
        p->cols[i] = (struct copy_col){.how = (int16_t)how, .form = (uint8_t)form};
        if (how != MASK_COLUMN_SCAN) by_name = true;
    }
    if (!by_name) {
        free(p);
        return NULL;
    }
    p->lay = *layout;
    p->null_str = xstrdup(layout->null_str);
    p->null_len = strlen(p->null_str);
    p->null_default = !strcmp(p->null_str, layout->csv ? "" : "\\N");
    p->lay.null_str = p->null_str;
    p->header_left = layout->header;
    return p;
}

void mask_copy_plan_free(struct mask_copy_plan *p)
{
    if (!p) return;
    free(p->null_str);
    free(p);
}

unsigned mask_copy_plan_columns(const struct mask_copy_plan *p)
{
    return p ? p->n : 0;
}

/* The end of the field starting at pos (before end), and whether it was quoted (CSV); SIZE_MAX
 * when a quoted field does not close. */
static size_t field_end(const struct mask_copy_layout *l, const uint8_t *s, size_t pos, size_t end,
                        bool *quoted)
{
    *quoted = false;
    size_t i = pos;
    if (!l->csv) {
        while (i < end && s[i] != (uint8_t)l->delimiter)
            i += s[i] == '\\' && i + 1 < end ? 2 : 1;
        return i;
    }
    if (i < end && s[i] == (uint8_t)l->quote) {
        *quoted = true;
        bool closed = false;
        for (i++; i < end && !closed; i++) {
            bool pair = i + 1 < end && (s[i + 1] == (uint8_t)l->quote ||
                                        (l->escape != l->quote && s[i + 1] == (uint8_t)l->escape));
            if (s[i] == (uint8_t)l->escape && l->escape != l->quote && pair)
                i++; /* an escaped quote or escape */
            else if (s[i] == (uint8_t)l->quote && l->escape == l->quote && i + 1 < end &&
                     s[i + 1] == (uint8_t)l->quote)
                i++; /* a doubled quote */
            else if (s[i] == (uint8_t)l->quote)
                closed = true;
        }
        if (!closed || (i < end && s[i] != (uint8_t)l->delimiter)) return SIZE_MAX;
        return i;
    }
    while (i < end && s[i] != (uint8_t)l->delimiter)
        i++;
    return i;
}

/* The value a field holds (quotes and escapes undone), appended to v. */
static void field_value(const struct mask_copy_layout *l, const uint8_t *s, size_t n, bool quoted,
                        struct buf *v)
{
    if (l->csv && quoted) {
        for (size_t i = 1; i + 1 < n; i++) {
            if ((s[i] == (uint8_t)l->escape || s[i] == (uint8_t)l->quote) && i + 2 < n &&
                (s[i + 1] == (uint8_t)l->quote || s[i + 1] == (uint8_t)l->escape))
                i++;
            buf_append_u8(v, s[i]);
        }
        return;
    }
    if (l->csv) {
        buf_append(v, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '\\' && i + 1 < n) {
            c = s[++i];
            c = c == 'n'   ? '\n'
                : c == 'r' ? '\r'
                : c == 't' ? '\t'
                : c == 'b' ? '\b'
                : c == 'f' ? '\f'
                : c == 'v' ? '\v'
                           : c;
        }
        buf_append_u8(v, c);
    }
}

/* value written as a field of this layout. */
static void field_put(const struct mask_copy_layout *l, const uint8_t *v, size_t n, struct buf *out)
{
    if (!l->csv) {
        for (size_t i = 0; i < n; i++) {
            uint8_t c = v[i];
            if (c == '\\' || c == (uint8_t)l->delimiter || c == '\n' || c == '\r') {
                buf_append_u8(out, '\\');
                c = c == '\n' ? 'n' : c == '\r' ? 'r' : c;
            }
            buf_append_u8(out, c);
        }
        return;
    }
    bool quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = v[i] == (uint8_t)l->delimiter || v[i] == (uint8_t)l->quote ||
                v[i] == (uint8_t)l->escape || v[i] == '\n' || v[i] == '\r';
    if (!quote) {
        buf_append(out, v, n);
        return;
    }
    buf_append_u8(out, (uint8_t)l->quote);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == (uint8_t)l->quote || v[i] == (uint8_t)l->escape)
            buf_append_u8(out, (uint8_t)l->escape);
        buf_append_u8(out, v[i]);
    }
    buf_append_u8(out, (uint8_t)l->quote);
}

int mask_copy_rewrite_plan(const struct mask_db *db, struct mask_copy_plan *plan,
                           const uint8_t *body, size_t len, struct buf *out,
                           struct mask_counts *counts)
{
    if (plan->header_left) { /* column names: the caller scans the line by value */
        plan->header_left = false;
        return -1;
    }
    const struct mask_copy_layout *l = &plan->lay;
    size_t end = len && body[len - 1] == '\n' ? len - 1 : len;
    size_t base = out->len - out->off, m = pg_msg_begin(out, 'd');
    struct buf *v = buf_get(), *t = buf_get();
    bool changed = false;
    int rc = -1;
    size_t pos = 0;
    unsigned i = 0;
    for (;; i++) {
        bool quoted;
        size_t fe = field_end(l, body, pos, end, &quoted);
        if (fe == SIZE_MAX || i >= plan->n) goto done;
        const uint8_t *f = body + pos;
        size_t fn = fe - pos;
        const struct copy_col *c = &plan->cols[i];
        /* A NULL is left as it is by name when written the default way; a custom NULL string
         * may equal a real value, so then it is masked by name, or scanned like any field. */
        bool is_null = !quoted && fn == plan->null_len && !memcmp(f, plan->null_str, fn) &&
                       plan->null_default; /* a custom NULL string may be a real value */
        if (i) buf_append_u8(out, (uint8_t)l->delimiter);
        if (c->how >= 0 && !is_null) {
            v->len = v->off = 0;
            t->len = t->off = 0;
            field_value(l, f, fn, quoted, v);
            if (v->len == 0) { /* an empty string shows nothing */
                buf_append(out, f, fn);
                goto next;
            }
            mask_value(db, c->how, (enum cfg_mask_form)c->form, v->data, v->len, t);
            field_put(l, t->data, t->len, out);
            if (counts && c->how < MASK_MAX_DETECTORS) counts->n[c->how]++;
            changed = true;
        } else if (c->how == MASK_COLUMN_SCAN && fn) {
            /* the value is scanned, and written back escaped or quoted when masked */
            v->len = v->off = 0;
            t->len = t->off = 0;
            field_value(l, f, fn, quoted, v);
            int r = mask_text(db, v->data, v->len, t, counts);
            if (r < 0) goto done;
            if (r > 0) {
                changed = true;
                field_put(l, t->data, t->len, out);
            } else {
                buf_append(out, f, fn);
            }
        } else {
            buf_append(out, f, fn);
        }
    next:
        if (fe >= end) break;
        pos = fe + 1;
    }
    if (i + 1 != plan->n) goto done;
    if (end < len) buf_append_u8(out, '\n');
    rc = changed ? 1 : 0;
done:
    buf_put(v);
    buf_put(t);
    if (rc == 1)
        pg_msg_end(out, m);
    else
        out->len = out->off + base;
    return rc;
}
