/*
 * test_names.c: unit tests of the name map (src/core/names.c): what is put is found by its
 * name and only by it, through growth; taking and sweeping unlink exactly what they say; an
 * emptied map holds no table.
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

#include "core/names.h"

struct item {
    struct name_node node;
    int value;
    char name[24];
};

static struct item *item_new(struct name_map *m, int value)
{
    struct item *it = calloc(1, sizeof *it);
    it->value = value;
    snprintf(it->name, sizeof it->name, "s%d", value);
    name_map_put(m, &it->node, it->name);
    return it;
}

static struct item *find(const struct name_map *m, int value)
{
    char name[24];
    snprintf(name, sizeof name, "s%d", value);
    return (struct item *)name_map_get(m, name);
}

static bool drop_odd(struct name_node *node, void *ctx)
{
    struct item *it = (struct item *)node;
    (*(int *)ctx)++;
    if (it->value % 2 == 0) return false;
    free(it);
    return true;
}

static bool drop_all(struct name_node *node, void *ctx)
{
    (void)ctx;
    free(node);
    return true;
}

static void test_put_get_take_sweep(void **state)
{
    (void)state;
    struct name_map m = {0};
    assert_null(name_map_get(&m, "s1"));
    assert_null(name_map_take(&m, "s1"));
    const int n = 5000;
    for (int i = 0; i < n; i++)
        item_new(&m, i);
    assert_int_equal(m.n, n);
    assert_true(m.cap >= (uint32_t)n); /* grew */
    for (int i = 0; i < n; i++) {
        struct item *it = find(&m, i);
        assert_non_null(it);
        assert_int_equal(it->value, i);
    }
    assert_null(find(&m, n));
    assert_null(name_map_get(&m, "")); /* a prefix or the empty name is no match */
    assert_null(name_map_get(&m, "s"));

    struct item *t = (struct item *)name_map_take(&m, "s42");
    assert_non_null(t);
    assert_int_equal(t->value, 42);
    free(t);
    assert_null(find(&m, 42));
    assert_null(name_map_take(&m, "s42"));
    assert_int_equal(m.n, n - 1);

    int seen = 0;
    name_map_sweep(&m, drop_odd, &seen);
    assert_int_equal(seen, n - 1);
    assert_int_equal(m.n, n / 2 - 1); /* the evens but 42 */
    for (int i = 0; i < n; i++)
        if (i % 2 == 0 && i != 42)
            assert_non_null(find(&m, i));
        else
            assert_null(find(&m, i));

    name_map_sweep(&m, drop_all, NULL);
    assert_int_equal(m.n, 0);
    assert_null(m.bucket); /* an empty map holds nothing */
    assert_int_equal(m.cap, 0);

    item_new(&m, 7); /* usable again */
    assert_non_null(find(&m, 7));
    free(name_map_take(&m, "s7"));
    assert_null(m.bucket);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_take_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
