"""test_driver_suites_pgx.py: pgconn's and pgx's own test suites, each run directly and through
sluice in the same test (driver_suites.py says how and why)."""
from conftest import ALICE
from driver_suites import PGCONN, PGX, ROLE, need_go, run_both_ways, run_pgconn, run_pgx


def test_pgconn_suite_passes_through_sluice_as_directly(spawn_sluice, pg, certs):
    need_go(PGCONN)
    run_both_ways(spawn_sluice, pg, certs, "pgconn", run_pgconn, ALICE, 80)


def test_pgx_suite_passes_through_sluice_as_directly(spawn_sluice, pg, certs):
    need_go(PGX)
    c = pg.admin(dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    # pgx's TestDomainType and TestUnregisteredTypeUsableAsStringArgumentAndBaseResult use the
    # domain its own CI creates; its TestLargeObjectsMultipleTransactions leaves a large
    # object behind (its CI's database is thrown away): both go again after the suite, so
    # that the tests after this one (pg_dump's) see the shop database as it was
    cur.execute("SELECT oid FROM pg_largeobject_metadata")
    objects_before = {r[0] for r in cur.fetchall()}
    cur.execute("SELECT 1 FROM pg_type WHERE typname = 'uint64'")
    made_domain = not cur.fetchall()
    if made_domain:
        cur.execute("SET ROLE app_scram; CREATE DOMAIN uint64 AS numeric(20,0); RESET ROLE")
    try:
        run_both_ways(spawn_sluice, pg, certs, "pgx", run_pgx, ROLE, 190)
    finally:
        cur.execute("SELECT oid FROM pg_largeobject_metadata")
        for (oid,) in cur.fetchall():
            if oid not in objects_before:
                cur.execute("SELECT lo_unlink(%s)", (oid,))
        if made_domain:
            cur.execute("DROP DOMAIN IF EXISTS uint64")
        c.close()
