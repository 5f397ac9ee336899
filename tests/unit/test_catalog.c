/*
 * test_catalog.c: unit tests of the catalog resolver's queue (src/proxy/catalog.c), without
 * a resolver thread or a target: refreshes of stale relation answers and first lookups of
 * relation names are bounded, so that the lookups by table OID that masking of result
 * columns waits for always find room, and are answered first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy.h"

#define NAMES 1000 /* far more than the queue holds (256) */

static int setup(void **state)
{
    (void)state;
    catalog_test_start_paused();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    catalog_stop();
    return 0;
}

/* One client pipelining COPYs of many names whose answers are stale: each COPY gets the
 * stale answer at once, a few refreshes are queued, and a result's column lookup (its table
 * OID) is still queued, and taken before them. (Before: every refresh was queued, the queue
 * filled, and the column lookup got no place: `SELECT ssn AS x FROM t` went by its alias.) */
static void test_stale_refreshes_leave_room_for_column_lookups(void **state)
{
    (void)state;
    char name[32];
    for (unsigned i = 0; i < NAMES; i++) {
        snprintf(name, sizeof name, "stale_%u", i);
        catalog_test_cache_stale(0, NULL, name);
    }
    for (unsigned i = 0; i < NAMES; i++) {
        snprintf(name, sizeof name, "stale_%u", i);
        struct catalog_rel *r = (struct catalog_rel *)1;
        assert_int_equal(catalog_resolve_relation(0, NULL, name, true, &r), 1);
        assert_null(r); /* the stale answer ("none"), without waiting */
    }
    unsigned refreshes = catalog_test_queued(true);
    assert_in_range(refreshes, 1, 16);
    /* a first lookup of a name still finds room */
    struct catalog_rel *r = NULL;
    assert_int_equal(catalog_resolve_relation(0, NULL, "fresh", false, &r), 0);
    assert_int_equal(catalog_test_queued(true), refreshes + 1);
    catalog_request(0, 4242);
    catalog_request(1, 4243);
    assert_int_equal(catalog_test_queued(false), 2);
    assert_int_equal(catalog_test_take(), 4242);
    assert_int_equal(catalog_test_take(), 4243);
    assert_int_equal(catalog_test_take(), 0);
}

/* First lookups of many names (not waited for, as after a wait in vain; or many threads) are
 * bounded as well: the column lookups keep their room. */
static void test_first_lookups_bounded(void **state)
{
    (void)state;
    char name[32];
    for (unsigned i = 0; i < NAMES; i++) {
        snprintf(name, sizeof name, "new_%u", i);
        struct catalog_rel *r = NULL;
        assert_int_equal(catalog_resolve_relation(0, "s", name, false, &r), 0);
        assert_null(r);
    }
    assert_in_range(catalog_test_queued(true), 1, 32);
    for (uint32_t t = 1; t <= 200; t++)
        catalog_request(0, 5000 + t);
    assert_int_equal(catalog_test_queued(false), 200);
    for (uint32_t t = 1; t <= 200; t++)
        assert_int_equal(catalog_test_take(), 5000 + t);
    assert_int_equal(catalog_test_take(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stale_refreshes_leave_room_for_column_lookups, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_first_lookups_bounded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
