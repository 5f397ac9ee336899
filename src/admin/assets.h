/*
 * assets.h: the dashboard files (everything in web/), embedded into the binary at build time.
 *
 * scripts/embed-web.sh turns web/ into build/gen/web_assets.c, which defines the table below;
 * src/admin/admin.c serves it at / and /FILE. The symbols are declared weak so that a build
 * without the generated file still links (the dashboard then answers 404 and a warning is
 * logged at start).
 *
 * Ownership: everything here is static, read-only data.
 */
#ifndef SLUICE_ADMIN_ASSETS_H
#define SLUICE_ADMIN_ASSETS_H

#include <stddef.h>

struct admin_asset {
    const char *path;         /* "/index.html", "/app.js", ... */
    const char *content_type; /* "text/html; charset=utf-8", ... */
    const unsigned char *data;
    size_t len;
};

extern const struct admin_asset admin_assets[] __attribute__((weak));
extern const size_t admin_n_assets __attribute__((weak));

#endif
