"""test_bytea.py: a 50 MB bytea value through sluice, inserted as a parameter and read back,
with psycopg2 (hex text inside a ~100 MB Query message) and psycopg 3 (binary Bind and
binary DataRow)."""

import hashlib
import os

import psycopg2

SIZE = 50 * 1024 * 1024


def test_bytea_50mb_psycopg2(sluice):
    blob = os.urandom(SIZE)
    c = sluice.connect()
    cur = c.cursor()
    cur.execute("CREATE TEMP TABLE blobs (id int, b bytea)")
    cur.execute("INSERT INTO blobs VALUES (1, %s)", (psycopg2.Binary(blob),))
    cur.execute("SELECT length(b), md5(b) FROM blobs WHERE id = 1")
    assert cur.fetchone() == (SIZE, hashlib.md5(blob).hexdigest())
    cur.execute("SELECT b FROM blobs WHERE id = 1")
    back = cur.fetchone()[0]
    assert len(back) == SIZE and bytes(back) == blob
    c.rollback()


def test_bytea_50mb_binary_psycopg3(sluice):
    import psycopg

    blob = os.urandom(SIZE)
    p = sluice.params()
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode=p["sslmode"]) as c:
        c.execute("CREATE TEMP TABLE blobs3 (id int, b bytea)")
        c.execute("INSERT INTO blobs3 VALUES (%b, %b)", (1, blob))
        row = c.execute("SELECT length(b), md5(b) FROM blobs3").fetchone()
        assert row == (SIZE, hashlib.md5(blob).hexdigest())
        back = c.execute("SELECT b FROM blobs3", binary=True).fetchone()[0]
        assert len(back) == SIZE and bytes(back) == blob
