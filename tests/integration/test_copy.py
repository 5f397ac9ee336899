"""test_copy.py: COPY IN and COPY OUT of about 100 MB each way through sluice, checked by
row count and checksums in both directions (computed independently by the server and by
the client)."""

import hashlib
import io
import time

TARGET_BYTES = 100 * 1024 * 1024
BASE = "".join(chr(ord("a") + (i * 7) % 26) for i in range(89)) + "\\\\tab\\tnl"  # escapes


def row(i):
    k = (i * 31) % 80
    return f"{i}\t{BASE[k:]}{BASE[:k]}\t{i * 3 % 1000}\n"


class Generated(io.RawIOBase):
    """A readable stream of COPY text rows, hashing what it hands out."""

    def __init__(self, target):
        self.target = target
        self.sent = 0
        self.rows = 0
        self.sha = hashlib.sha256()
        self.pending = b""

    def readable(self):
        return True

    def readinto(self, b):
        while len(self.pending) < len(b) and self.sent < self.target:
            chunk = "".join(row(self.rows + j) for j in range(2000)).encode()
            self.rows += 2000
            self.sent += len(chunk)
            self.sha.update(chunk)
            self.pending += chunk
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


class Sink(io.RawIOBase):
    def __init__(self):
        self.sha = hashlib.sha256()
        self.n = 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.n += len(b)
        return len(b)


def test_copy_100mb_both_ways(sluice):
    c = sluice.connect()
    c.autocommit = True
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS copy_big")
    cur.execute("CREATE UNLOGGED TABLE copy_big (id bigint, payload text, n int)")
    try:
        src = Generated(TARGET_BYTES)
        t0 = time.time()
        cur.copy_expert("COPY copy_big FROM STDIN", io.BufferedReader(src, 1 << 20), size=1 << 20)
        t_in = time.time() - t0
        assert src.sent >= TARGET_BYTES
        assert cur.rowcount == src.rows

        # the server's own view of what arrived: count and a digest over the text rows
        cur.execute("SELECT count(*), max(id), sum(length(payload)) FROM copy_big")
        count, max_id, total_len = cur.fetchone()
        assert (count, max_id) == (src.rows, src.rows - 1)
        # each payload holds one escaped backslash and one escaped tab: 2 bytes shorter
        expect_len = sum(len(row(i).split("\t")[1]) - 2 for i in range(1000))
        cur.execute("SELECT sum(length(payload)) FROM copy_big WHERE id < 1000")
        assert cur.fetchone()[0] == expect_len

        # COPY OUT: byte-identical to what we sent (text format round-trips exactly)
        sink = Sink()
        t0 = time.time()
        cur.copy_expert("COPY (SELECT * FROM copy_big ORDER BY id) TO STDOUT", sink, size=1 << 20)
        t_out = time.time() - t0
        assert sink.n == src.sent
        assert sink.sha.hexdigest() == src.sha.hexdigest()

        # and the server-side digest (computed without any proxy in the path) agrees too
        admin = sluice.pg.admin("shop")
        acur = admin.cursor()
        acur.execute(
            "SELECT md5(string_agg(id || E'\\t' || replace(replace(replace(payload, '\\', '\\\\'),"
            " E'\\t', '\\t'), E'\\n', '\\n') || E'\\t' || n || E'\\n', '' ORDER BY id)) FROM copy_big"
        )
        server_md5 = acur.fetchone()[0]
        admin.close()
        client_md5 = hashlib.md5()
        for i in range(src.rows):
            client_md5.update(row(i).encode())
        assert server_md5 == client_md5.hexdigest()
        print(f"COPY IN {src.sent/1e6:.0f} MB in {t_in:.1f}s, OUT in {t_out:.1f}s")
    finally:
        cur.execute("DROP TABLE IF EXISTS copy_big")


def test_copy_in_error_midstream(sluice):
    """A bad row aborts the COPY with the server's error; the session stays usable."""
    import psycopg2.errors
    import pytest

    c = sluice.connect()
    cur = c.cursor()
    cur.execute("CREATE TEMP TABLE copy_bad (id int)")
    data = io.StringIO("".join(f"{i}\n" for i in range(50000)) + "oops\n" + "1\n" * 1000)
    with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
        cur.copy_expert("COPY copy_bad FROM STDIN", data)
    c.rollback()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_copy_out_csv_header(sluice):
    c = sluice.connect()
    cur = c.cursor()
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT id, name FROM customers WHERE id <= 3 ORDER BY id) TO STDOUT "
                    "WITH (FORMAT csv, HEADER)", out)
    assert out.getvalue() == "id,name\n1,customer 1\n2,customer 2\n3,customer 3\n"
