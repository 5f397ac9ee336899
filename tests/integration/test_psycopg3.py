"""test_psycopg3.py: psycopg 3 through sluice: true server-side parameters (extended
protocol, Parse/Bind/Execute), binary results, prepared statements and pipeline mode."""

import psycopg
import pytest


def connect(sluice, **kw):
    p = sluice.params(**kw)
    c = psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                        password=p["password"], sslmode=p["sslmode"], connect_timeout=15)
    return c


def test_server_side_parameters(sluice):
    with connect(sluice) as c:
        cur = c.execute("SELECT %s::int + %s, %s || '!', %s::bytea",
                        (40, 2, "hé", b"\x00\x01\xff"))
        assert cur.fetchone() == (42, "hé!", b"\x00\x01\xff")
        cur = c.execute("SELECT name FROM customers WHERE id = %s", (5,), binary=True)
        assert cur.fetchone() == ("customer 5",)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute("SELECT %s::int", ("not a number",))
        c.rollback()


def test_prepared_statements_reused(sluice):
    with connect(sluice) as c:
        c.prepare_threshold = 1
        for i in range(1, 11):
            cur = c.execute("SELECT id, email FROM customers WHERE id = %s", (i,))
            assert cur.fetchone() == (i, f"user{i}@example.com")
        cur = c.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cur.fetchone()[0] >= 1


def test_pipeline_mode(sluice):
    with connect(sluice) as c:
        c.autocommit = True
        c.execute("DROP TABLE IF EXISTS p3_pipe")
        c.execute("CREATE TABLE p3_pipe (id int, v text)")
        with c.pipeline():
            curs = []
            for i in range(200):
                c.execute("INSERT INTO p3_pipe VALUES (%s, %s)", (i, f"v{i}"))
            curs.append(c.execute("SELECT count(*), sum(id) FROM p3_pipe"))
        assert curs[0].fetchone() == (200, sum(range(200)))
        # an error in the middle of a pipeline, then recovery
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.pipeline():
                c.execute("INSERT INTO p3_pipe VALUES (%s, 'x')", (1000,))
                c.execute("SELECT 1/0")
                c.execute("INSERT INTO p3_pipe VALUES (%s, 'y')", (1001,))
        assert c.execute("SELECT 'ok'").fetchone() == ("ok",)
        c.execute("DROP TABLE p3_pipe")
