"""test_psycopg2.py: psycopg2 through sluice: parameters and types, transactions, an error
inside a transaction leaving it failed until ROLLBACK, server-side (named) cursors,
LISTEN/NOTIFY with real backend pids, startup parameters (options, application_name)
reaching the server, and CancelRequest of a long pg_sleep."""

import datetime
import decimal
import select
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext
import pytest


def test_parameters_and_types(sluice):
    c = sluice.connect()
    cur = c.cursor()
    cur.execute(
        "SELECT %s::int, %s::text, %s::numeric, %s::date, %s::bool, %s::text IS NULL, %s::int[]",
        (42, "it's \"quoted\" \\ é 漢字", decimal.Decimal("12.50"), datetime.date(2024, 2, 29),
         True, None, [1, 2, 3]),
    )
    assert cur.fetchone() == (42, "it's \"quoted\" \\ é 漢字", decimal.Decimal("12.50"),
                              datetime.date(2024, 2, 29), True, True, [1, 2, 3])
    cur.execute("SELECT name, email FROM customers WHERE id = %(id)s", {"id": 7})
    assert cur.fetchone() == ("customer 7", "user7@example.com")
    cur.execute("SELECT id FROM customers WHERE id = ANY(%s) ORDER BY id", ([3, 1, 2],))
    assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
    assert cur.rowcount == 3


def test_transactions_commit_and_rollback(sluice):
    c = sluice.connect()
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS p2_tx; CREATE TABLE p2_tx (v int)")
    c.commit()
    cur.execute("INSERT INTO p2_tx VALUES (1)")
    assert c.info.transaction_status == ext.TRANSACTION_STATUS_INTRANS
    c.rollback()
    cur.execute("INSERT INTO p2_tx VALUES (2)")
    c.commit()
    cur.execute("SELECT array_agg(v) FROM p2_tx")
    assert cur.fetchone()[0] == [2]
    c.commit()
    # a second connection sees only committed data
    c2 = sluice.connect()
    cur2 = c2.cursor()
    cur.execute("INSERT INTO p2_tx VALUES (3)")
    cur2.execute("SELECT count(*) FROM p2_tx")
    assert cur2.fetchone()[0] == 1
    c.commit()
    c2.commit()
    cur2.execute("SELECT count(*) FROM p2_tx")
    assert cur2.fetchone()[0] == 2
    c2.commit()
    cur.execute("DROP TABLE p2_tx")
    c.commit()


def test_error_in_transaction_fails_it_until_rollback(sluice):
    c = sluice.connect()
    cur = c.cursor()
    cur.execute("SELECT 1")
    with pytest.raises(psycopg2.errors.DivisionByZero) as ei:
        cur.execute("SELECT 1/0")
    assert ei.value.pgcode == "22012"
    assert c.info.transaction_status == ext.TRANSACTION_STATUS_INERROR
    with pytest.raises(psycopg2.errors.InFailedSqlTransaction) as ei:
        cur.execute("SELECT 2")
    assert ei.value.pgcode == "25P02"
    c.rollback()
    assert c.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
    cur.execute("SELECT 3")
    assert cur.fetchone() == (3,)
    # error outside a transaction block (autocommit) leaves the session usable
    c.rollback()
    c.autocommit = True
    with pytest.raises(psycopg2.errors.UndefinedTable):
        cur.execute("SELECT * FROM nope_nope")
    cur.execute("SELECT 4")
    assert cur.fetchone() == (4,)


def test_error_fields(sluice):
    c = sluice.connect()
    cur = c.cursor()
    with pytest.raises(psycopg2.errors.UniqueViolation) as ei:
        cur.execute("INSERT INTO customers (id, name) VALUES (1, 'dup')")
    d = ei.value.diag
    assert d.sqlstate == "23505"
    assert d.table_name == "customers"
    assert d.constraint_name == "customers_pkey"
    assert "Key (id)=(1) already exists" in d.message_detail
    c.rollback()


def test_notices_arrive(sluice):
    c = sluice.connect()
    c.autocommit = True
    cur = c.cursor()
    cur.execute("DO $$BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END$$")
    assert any("hello from plpgsql" in n for n in c.notices)


def test_server_side_cursor(sluice):
    c = sluice.connect()
    cur = c.cursor(name="big_cursor")
    cur.itersize = 500
    cur.execute("SELECT i, md5(i::text) FROM generate_series(1, 20000) i")
    n, s = 0, 0
    for i, h in cur:
        n += 1
        s += i
        assert len(h) == 32
    assert (n, s) == (20000, 20000 * 20001 // 2)
    cur.close()
    # scrollable cursor, fetchmany, move
    cur = c.cursor(name="scroller", scrollable=True)
    cur.execute("SELECT id FROM customers ORDER BY id")
    assert [r[0] for r in cur.fetchmany(3)] == [1, 2, 3]
    cur.scroll(10, mode="absolute")
    assert cur.fetchone()[0] == 11
    cur.scroll(-5)
    assert cur.fetchone()[0] == 7
    cur.close()
    c.commit()


def wait_notifies(conn, n=1, timeout=5.0):
    deadline = time.time() + timeout
    while len(conn.notifies) < n and time.time() < deadline:
        if select.select([conn], [], [], 0.2)[0]:
            conn.poll()
    return conn.notifies


def test_listen_notify_pids(sluice):
    listener = sluice.connect()
    listener.autocommit = True
    lcur = listener.cursor()
    lcur.execute("SELECT pg_backend_pid()")
    lpid = lcur.fetchone()[0]
    assert lpid == listener.info.backend_pid == listener.get_backend_pid()
    lcur.execute("LISTEN sluice_chan")

    # a notification from the listener's own session carries its own pid
    lcur.execute("NOTIFY sluice_chan, 'self'")
    notes = wait_notifies(listener, 1)
    assert len(notes) == 1
    assert (notes[0].channel, notes[0].payload, notes[0].pid) == ("sluice_chan", "self", lpid)

    # and one from another session carries that session's real pid
    sender = sluice.connect()
    sender.autocommit = True
    scur = sender.cursor()
    scur.execute("SELECT pg_backend_pid()")
    spid = scur.fetchone()[0]
    assert spid == sender.get_backend_pid() != lpid
    scur.execute("SELECT pg_notify('sluice_chan', 'from sender')")
    notes = wait_notifies(listener, 2)
    assert len(notes) == 2, notes
    assert (notes[1].payload, notes[1].pid) == ("from sender", spid)
    # the pids are PostgreSQL's own: visible in pg_stat_activity
    scur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid IN (%s, %s)", (lpid, spid))
    assert scur.fetchone()[0] == 2


def test_startup_options_and_application_name(sluice):
    c = sluice.connect(options="-c search_path=foo,public -c statement_timeout=12345",
                       application_name="sluice-it-app")
    cur = c.cursor()
    cur.execute("SHOW search_path")
    assert cur.fetchone()[0] == "foo,public"
    cur.execute("SHOW statement_timeout")
    assert cur.fetchone()[0] == "12345ms"
    cur.execute("SHOW application_name")
    assert cur.fetchone()[0] == "sluice-it-app"
    cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    assert cur.fetchone()[0] == "sluice-it-app"
    # ParameterStatus for application_name reached the client as well
    assert c.get_parameter_status("application_name") == "sluice-it-app"
    c.commit()


def test_parameter_status_reported(sluice):
    c = sluice.connect()
    assert c.get_parameter_status("server_version").startswith("15")
    assert c.get_parameter_status("client_encoding") == "UTF8"
    assert c.get_parameter_status("integer_datetimes") == "on"
    c.autocommit = True
    c.cursor().execute("SET application_name = 'changed-later'")
    assert c.get_parameter_status("application_name") == "changed-later"


def test_cancel_pg_sleep(sluice):
    c = sluice.connect()
    cur = c.cursor()
    timer = threading.Timer(1.0, c.cancel)
    t0 = time.time()
    timer.start()
    with pytest.raises(psycopg2.errors.QueryCanceled) as ei:
        cur.execute("SELECT pg_sleep(30)")
    elapsed = time.time() - t0
    timer.join()
    assert ei.value.pgcode == "57014"
    assert elapsed < 6, f"cancel took {elapsed:.1f}s"
    c.rollback()
    cur.execute("SELECT 'still usable'")
    assert cur.fetchone()[0] == "still usable"


def test_cancel_with_wrong_key_is_ignored(sluice):
    """A CancelRequest carrying a made-up key must not cancel anything."""
    import socket
    import struct

    c = sluice.connect()
    cur = c.cursor()
    pid = c.get_backend_pid()

    def bogus_cancel():
        with socket.create_connection((sluice.host, sluice.port), timeout=5) as s:
            s.sendall(struct.pack("!III", 16, 80877102, pid) + struct.pack("!I", 12345678))
            try:
                s.recv(1)
            except OSError:
                pass

    t = threading.Timer(0.3, bogus_cancel)
    t.start()
    cur.execute("SELECT pg_sleep(1.5), 'done'")
    t.join()
    assert cur.fetchone()[1] == "done"
    c.rollback()


def test_client_encoding_startup_parameter(sluice):
    c = sluice.connect(client_encoding="LATIN1")
    cur = c.cursor()
    cur.execute("SHOW client_encoding")
    assert cur.fetchone()[0] == "LATIN1"
    cur.execute("SELECT %s || 'x'", ("caf\u00e9",))
    assert cur.fetchone()[0] == "caf\u00e9x"
    c.rollback()
