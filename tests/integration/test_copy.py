"""test_copy.py: COPY IN and COPY OUT of about 100 MB each way through sluice, checked by
row count and checksums in both directions (computed independently by the server and by
the client)."""

import hashlib
import io
import time

from test_masking import as_alice

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


# ---------------------------------------------------------------- COPY of a whole table, masked
# COPY t TO STDOUT (no column list) and COPY (SELECT * FROM t) TO STDOUT name no column: sluice
# asks the target's catalog for the table's columns, and masks the fields of columns sensitive
# only by their names (an SSN without dashes, a token of no known shape) as for a column list.

BOB = "bob@corp.com"
ALICE_ID = "alice@corp.com"
CAT_RAW = ["078051120", "plainsecretvalue42", "123-45-6789", "alice.smith@example.org"]


def _copy(ep, user, sql):
    c = ep.connect(user=user)
    try:
        sink = io.BytesIO()
        c.cursor().copy_expert(sql, sink)
        return sink.getvalue()
    finally:
        c.close()


def _lines(data, csv_format=False):
    import csv as csvmod
    text = data.decode()
    if csv_format:
        return list(csvmod.reader(io.StringIO(text)))
    return [line.split("\t") for line in text.rstrip("\n").split("\n")]


def _leaked(blob, raw):
    return [v for v in raw if v.encode() in blob]


def _masking_only(ep):
    import conftest
    import pytest
    if conftest.DIRECT:
        pytest.skip("masking is sluice behaviour (SLUICE_DIRECT=1)")


def test_copy_whole_table_masked_by_catalog_names(sluice):
    """COPY t TO STDOUT in text and CSV, and COPY (SELECT * FROM t): ssn (no dashes) and
    api_token are masked by their catalog names; the note's email and SSN by value. A stored
    generated column sits between them: COPY t leaves it out, SELECT * does not."""
    _masking_only(sluice)
    as_alice(sluice, "DROP TABLE IF EXISTS copy_cat",
           "CREATE TABLE copy_cat (id int, ssn text, n int GENERATED ALWAYS AS (id * 2) STORED, "
           "api_token text, note text)",
           "INSERT INTO copy_cat (id, ssn, api_token, note) VALUES "
           "(1, '078051120', 'plainsecretvalue42', 'mail alice.smith@example.org 123-45-6789'), "
           "(2, NULL, 'x', 'plain')")
    try:
        text = _copy(sluice, BOB, "COPY copy_cat TO STDOUT")
        assert not _leaked(text, CAT_RAW), text
        assert sorted(_lines(text)) == [
            ["1", "***-**-1120", "[REDACTED:secret]", "mail a***@example.org ***-**-6789"],
            ["2", "\\N", "[REDACTED:secret]", "plain"]]
        data = _copy(sluice, BOB, "COPY copy_cat TO STDOUT WITH (FORMAT csv, HEADER)")
        assert not _leaked(data, CAT_RAW), data
        rows = _lines(data, csv_format=True)
        assert rows[0] == ["id", "ssn", "api_token", "note"]
        assert sorted(rows[1:]) == [
            ["1", "***-**-1120", "[REDACTED:secret]", "mail a***@example.org ***-**-6789"],
            ["2", "", "[REDACTED:secret]", "plain"]]
        star = _copy(sluice, BOB, "COPY (SELECT * FROM copy_cat ORDER BY id) TO STDOUT")
        assert not _leaked(star, CAT_RAW), star
        assert _lines(star) == [
            ["1", "***-**-1120", "2", "[REDACTED:secret]", "mail a***@example.org ***-**-6789"],
            ["2", "\\N", "4", "[REDACTED:secret]", "plain"]]
        raw = _copy(sluice, ALICE_ID, "COPY copy_cat TO STDOUT")
        assert sorted(_lines(raw))[0] == ["1", "078051120", "plainsecretvalue42",
                                          "mail alice.smith@example.org 123-45-6789"]
    finally:
        as_alice(sluice, "DROP TABLE IF EXISTS copy_cat")


def test_copy_whole_table_schema_qualified(sluice):
    """COPY s.t resolves exactly, even where the unqualified name is ambiguous; a quoted
    mixed-case name too."""
    _masking_only(sluice)
    as_alice(sluice, "DROP SCHEMA IF EXISTS copy_s1 CASCADE", "CREATE SCHEMA copy_s1",
           "DROP TABLE IF EXISTS public.copy_q",
           "CREATE TABLE public.copy_q (id int, word text)",
           "INSERT INTO public.copy_q VALUES (1, 'hello')",
           'CREATE TABLE copy_s1."Copy_Q" (id int, "SSN" text, api_token text)',
           "CREATE TABLE copy_s1.copy_q (id int, ssn text, api_token text)",
           'INSERT INTO copy_s1."Copy_Q" VALUES (1, \'078051120\', \'plainsecretvalue42\')',
           "INSERT INTO copy_s1.copy_q VALUES (1, '078051120', 'plainsecretvalue42')")
    try:
        for sql in ("COPY copy_s1.copy_q TO STDOUT", 'COPY copy_s1."Copy_Q" TO STDOUT',
                    "COPY (SELECT * FROM copy_s1.copy_q) TO STDOUT"):
            data = _copy(sluice, BOB, sql)
            assert _lines(data) == [["1", "***-**-1120", "[REDACTED:secret]"]], (sql, data)
        data = _copy(sluice, BOB, "COPY copy_s1.copy_q TO STDOUT (FORMAT csv)")
        assert _lines(data, csv_format=True) == [["1", "***-**-1120", "[REDACTED:secret]"]]
    finally:
        as_alice(sluice, "DROP SCHEMA IF EXISTS copy_s1 CASCADE", "DROP TABLE IF EXISTS copy_q")


def test_copy_whole_table_ambiguous_name_by_value(sluice):
    """An unqualified name of two tables (the session's search_path, not sluice, picks one)
    falls back to masking by value: what the detectors see is still masked, the rest is as
    before this feature (raw), and the COPY works."""
    _masking_only(sluice)
    as_alice(sluice, "DROP SCHEMA IF EXISTS copy_s2 CASCADE", "CREATE SCHEMA copy_s2",
           "DROP TABLE IF EXISTS public.copy_amb",
           "CREATE TABLE public.copy_amb (id int, ssn text, note text)",
           "CREATE TABLE copy_s2.copy_amb (id int, ssn text, note text)",
           "INSERT INTO public.copy_amb VALUES (1, '078051120', 'ssn 123-45-6789')")
    try:
        data = _copy(sluice, BOB, "COPY copy_amb TO STDOUT")
        assert _lines(data) == [["1", "078051120", "ssn ***-**-6789"]], data
        data = _copy(sluice, BOB, "COPY (SELECT * FROM copy_amb) TO STDOUT (FORMAT csv)")
        assert _lines(data, csv_format=True) == [["1", "078051120", "ssn ***-**-6789"]], data
        # qualified, the same table is masked by name
        data = _copy(sluice, BOB, "COPY public.copy_amb TO STDOUT")
        assert _lines(data) == [["1", "***-**-1120", "ssn ***-**-6789"]], data
    finally:
        as_alice(sluice, "DROP SCHEMA IF EXISTS copy_s2 CASCADE", "DROP TABLE IF EXISTS copy_amb")


def test_copy_whole_table_after_ddl_in_session(sluice):
    """The catalog's answer for a name is kept, none included: DDL through sluice empties it.
    A COPY of a table that does not exist yet (the error reaches the client), then the table
    created in the same session, then given one more column: each COPY is masked by the
    columns the table has now."""
    _masking_only(sluice)
    import psycopg2
    import pytest

    as_alice(sluice, "DROP TABLE IF EXISTS copy_late")
    c = sluice.connect(user=BOB)
    c.autocommit = True
    try:
        cur = c.cursor()
        with pytest.raises(psycopg2.errors.UndefinedTable):
            cur.copy_expert("COPY copy_late TO STDOUT", io.BytesIO())
        cur.execute("CREATE TABLE copy_late (id int, note text, api_token text)")
        cur.execute("INSERT INTO copy_late VALUES (1, 'hello', 'plainsecretvalue42')")
        sink = io.BytesIO()
        cur.copy_expert("COPY copy_late TO STDOUT", sink)
        assert _lines(sink.getvalue()) == [["1", "hello", "[REDACTED:secret]"]]
        cur.execute("ALTER TABLE copy_late ADD COLUMN ssn text")
        cur.execute("UPDATE copy_late SET ssn = '078051120' WHERE id = 1")
        for sql in ("COPY copy_late TO STDOUT", "COPY (SELECT * FROM copy_late) TO STDOUT"):
            sink = io.BytesIO()
            cur.copy_expert(sql, sink)
            assert _lines(sink.getvalue()) == [["1", "hello", "[REDACTED:secret]",
                                                "***-**-1120"]], sql
    finally:
        c.close()
        as_alice(sluice, "DROP TABLE IF EXISTS copy_late")


def _catalog_queries(ep):
    """(pid, query_start) of the catalog resolver's side connections: changes with each lookup."""
    c = ep.connect()
    c.autocommit = True
    try:
        cur = c.cursor()
        cur.execute("SELECT pid, query_start FROM pg_stat_activity "
                    "WHERE application_name = 'sluice catalog' ORDER BY pid")
        return cur.fetchall()
    finally:
        c.close()


def test_copy_whole_table_unmasked_identity_asks_no_catalog(sluice):
    """A session whose results are never masked (alice: masking.unmask.identities) makes no
    catalog round trip for COPY t TO STDOUT, and gets its lines raw; bob's, masked, does."""
    _masking_only(sluice)
    as_alice(sluice, "DROP TABLE IF EXISTS copy_unm", "DROP TABLE IF EXISTS copy_unm_bob",
           "CREATE TABLE copy_unm (id int, ssn text)",
           "CREATE TABLE copy_unm_bob (id int, ssn text)",
           "INSERT INTO copy_unm VALUES (1, '078051120')",
           "INSERT INTO copy_unm_bob VALUES (1, '078051120')")
    try:
        before = _catalog_queries(sluice)
        data = _copy(sluice, BOB, "COPY copy_unm_bob TO STDOUT")  # asked: the probe works
        assert _lines(data) == [["1", "***-**-1120"]], data
        asked = _catalog_queries(sluice)
        assert asked and asked != before, (before, asked)
        data = _copy(sluice, ALICE_ID, "COPY copy_unm TO STDOUT")
        assert _lines(data) == [["1", "078051120"]], data
        assert _catalog_queries(sluice) == asked
    finally:
        as_alice(sluice, "DROP TABLE IF EXISTS copy_unm", "DROP TABLE IF EXISTS copy_unm_bob")
