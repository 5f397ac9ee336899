"""test_driver_suites_pq.py: lib/pq's, sqlx's and GORM's own test suites, each run directly and
through sluice in the same test (driver_suites.py says how and why)."""
from conftest import ALICE
from driver_suites import (GORM, LIBPQ, SQLX, in_own_schema, need_go, run_both_ways, run_gorm,
                           run_libpq, run_sqlx)


def test_lib_pq_suite_passes_through_sluice_as_directly(spawn_sluice, pg, certs):
    need_go(LIBPQ)
    run_both_ways(spawn_sluice, pg, certs, "libpq", run_libpq, ALICE, 150)


def test_sqlx_suite_passes_through_sluice_as_directly(spawn_sluice, pg, certs):
    need_go(SQLX)
    in_own_schema(pg, "sqlx_suite", lambda: run_both_ways(
        spawn_sluice, pg, certs, "sqlx", run_sqlx, ALICE, 30))


def test_gorm_suite_passes_through_sluice_as_directly(spawn_sluice, pg, certs):
    need_go(GORM)
    in_own_schema(pg, "gorm_suite", lambda: run_both_ways(
        spawn_sluice, pg, certs, "gorm", run_gorm, ALICE, 180))
