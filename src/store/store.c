/*
 * store.c: the driver-independent half of the state store: picks the driver named by
 * state.driver, owns the handle, and forwards every call to the driver. It holds no SQL;
 * that lives in store_<driver>.c. Also home of the test-only write fault switch.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "store/store.h"

static atomic_bool test_fail_writes;

void store_test_fail_writes(bool fail)
{
    atomic_store(&test_fail_writes, fail);
}

bool store_test_failing_writes(void)
{
    return atomic_load_explicit(&test_fail_writes, memory_order_relaxed);
}

void store_set_err(struct store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
}

int store_open(const struct cfg_state *cfg, unsigned flags, struct store **out, char *err,
               size_t errlen)
{
    const struct store_driver *drv = NULL;
    *out = NULL;
    switch (cfg->driver) {
    case CFG_STATE_SQLITE:
        drv = &store_driver_sqlite;
        break;
    case CFG_STATE_POSTGRES:
        snprintf(err, errlen, "state.driver postgres is not available in this build yet");
        return -1;
    }
    if (!drv) {
        snprintf(err, errlen, "unknown state.driver");
        return -1;
    }
    struct store *st = xcalloc(1, sizeof *st);
    st->drv = drv;
    st->flags = flags;
    if (drv->open(st, cfg, flags) != 0) {
        snprintf(err, errlen, "%s", st->err);
        drv->close(st);
        free(st);
        return -1;
    }
    *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (!st) return;
    st->drv->close(st);
    free(st);
}

const char *store_errmsg(const struct store *st)
{
    return st->err;
}

const char *store_driver_name(const struct store *st)
{
    return st->drv->name;
}

int store_migrate(struct store *st, const char *module, const struct store_migration *m, unsigned n)
{
    if (st->flags & STORE_READONLY) {
        store_set_err(st, "store opened read-only");
        return -1;
    }
    return st->drv->migrate(st, module, m, n);
}

int store_events_append(struct store *st, const struct store_event *ev, unsigned n,
                        const struct store_checkpoint *cp, unsigned ncp)
{
    if (st->flags & STORE_READONLY) {
        store_set_err(st, "store opened read-only");
        return -1;
    }
    return st->drv->events_append(st, ev, n, cp, ncp);
}

int store_events_query(struct store *st, const struct store_query *q, store_event_fn fn, void *ctx)
{
    return st->drv->events_query(st, q, fn, ctx);
}

int store_file_precreate(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) return close(fd);
    return errno == EEXIST ? 0 : -1;
}

int store_events_scan(struct store *st, uint64_t after_seq, store_event_fn fn, void *ctx)
{
    struct store_query q = {.after_seq = after_seq};
    return st->drv->events_query(st, &q, fn, ctx);
}

int store_events_last(struct store *st, uint64_t *seq, char hash[STORE_HASH_HEX])
{
    return st->drv->events_last(st, seq, hash);
}

int store_checkpoints_scan(struct store *st, uint64_t from_seq, store_checkpoint_fn fn, void *ctx)
{
    return st->drv->checkpoints_scan(st, from_seq, fn, ctx);
}

int store_anchor_get(struct store *st, uint64_t *seq)
{
    return st->drv->anchor_get(st, seq);
}

int store_prune(struct store *st, int64_t before_us, uint64_t *pruned)
{
    if (st->flags & STORE_READONLY) {
        store_set_err(st, "store opened read-only");
        return -1;
    }
    uint64_t dummy;
    return st->drv->prune(st, before_us, pruned ? pruned : &dummy);
}
