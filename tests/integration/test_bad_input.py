"""test_bad_input.py: hostile and broken peers. Garbage bytes, truncated and oversized length
fields, wrong protocol versions, a startup without user, unknown message types, a broken TLS
handshake, clients vanishing mid-query / mid-result / mid-COPY, an upstream that refuses and
one killed mid-session. Each must get a clean error or close within seconds, and sluice
must keep serving normal queries afterwards."""

import os
import socket
import ssl
import struct
import time

import psycopg2
import pytest

import pgwire
from conftest import ALICE


def drain(conn, timeout=10.0):
    """Everything the server sends until it closes (raw bytes). Fails on a hang."""
    conn.sock.settimeout(timeout)
    data = conn.buf
    conn.buf = b""
    t0 = time.time()
    while True:
        try:
            chunk = conn.sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            pytest.fail(f"server neither answered nor closed within {timeout}s; got {data[:80]!r}")
        if not chunk:
            return data
        data += chunk
        if time.time() - t0 > timeout:
            pytest.fail(f"server kept sending for {timeout}s")


def assert_error_or_close(data, sqlstate_prefix=None):
    """Nothing at all, or an ErrorResponse (optionally with a SQLSTATE prefix)."""
    if not data:
        return
    assert data[:1] == b"E", f"expected ErrorResponse or close, got {data[:80]!r}"
    if sqlstate_prefix and len(data) >= 5:
        (ln,) = struct.unpack("!I", data[1:5])
        if 4 <= ln <= len(data) - 1:
            f = pgwire.parse_fields(data[5 : 1 + ln])
            assert f.get("C", "").startswith(sqlstate_prefix), f


RAW_CASES = {
    "garbage": b"\xde\xad\xbe\xef" + bytes(range(256)) * 4,
    "http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls_client_hello_without_sslrequest": bytes.fromhex("16030102000100") + b"0" * 40,
    "length_2_pow_31": struct.pack("!II", 2**31, pgwire.PROTO_V3) + b"user\0x\0\0",
    "length_0xffffffff": struct.pack("!II", 0xFFFFFFFF, pgwire.PROTO_V3) + b"user\0x\0\0",
    "length_less_than_4": struct.pack("!I", 3) + b"\0\0\0\0\0\0",
    "length_zero": struct.pack("!I", 0) + b"\0" * 8,
    "length_exactly_8_no_params": struct.pack("!II", 8, pgwire.PROTO_V3),
    "oversized_startup_20k": struct.pack("!II", 20000, pgwire.PROTO_V3) + b"a" * 19992,
    "params_not_terminated": struct.pack("!II", 22, pgwire.PROTO_V3) + b"user\0alice\0dat",
    "cancel_request_short": struct.pack("!II", 12, pgwire.CANCEL_REQUEST) + b"\0\0\0\0",
}


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_raw_bad_startup(sluice, name):
    with sluice.raw() as r:
        try:
            r.send(RAW_CASES[name])
            r.sock.shutdown(socket.SHUT_WR) if name == "params_not_terminated" else None
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = drain(r)
    assert_error_or_close(data, "08" if data[:1] == b"E" and name.startswith("length") else None)
    sluice.assert_alive()


def test_truncated_startup_then_close(sluice):
    for cut in (1, 3, 4, 7, 20):
        pkt = pgwire.startup_packet({"user": "etl", "database": "shop"})
        with sluice.raw() as r:
            r.send(pkt[:cut])
        time.sleep(0.05)
    sluice.assert_alive()


def test_connect_and_close_many(sluice):
    for _ in range(100):
        socket.create_connection((sluice.host, sluice.port), timeout=5).close()
    sluice.assert_alive()


def test_protocol_2_0_rejected(sluice):
    with sluice.raw() as r:
        r.send(pgwire.startup_packet({"user": "etl", "database": "shop"}, version=2 << 16))
        data = drain(r)
    assert data[:1] == b"E", data[:80]
    assert b"protocol" in data
    sluice.assert_alive()


def test_protocol_3_99_negotiated_or_rejected(sluice):
    user = "etl" if not sluice.direct else "app_scram"
    pw = sluice.secrets["etl"] if not sluice.direct else sluice.pg.passwords["app_scram"]
    with sluice.raw() as r:
        try:
            r.startup(user=user, database="shop", password=pw, version=(3 << 16) | 99,
                      extra={"_pq_.unknown_option": "1"})
        except pgwire.PgError as e:
            assert e.sqlstate.startswith(("08", "0A")), e.fields
            sluice.assert_alive()
            return
        assert r.seen[0] == b"v", f"3.99 accepted without NegotiateProtocolVersion: {r.seen}"
        # the newest version the server speaks, 3.0 as PostgreSQL sends it (libpq 18 refuses
        # a "downgrade to pre-3.0"), then the options it does not know
        version, n = struct.unpack("!II", r.negotiated[:8])
        assert (version, n) == (3 << 16, 1), r.negotiated
        assert r.negotiated[8:] == b"_pq_.unknown_option\0", r.negotiated
        assert r.query("SELECT 1") == [["1"]]
        r.terminate()
    sluice.assert_alive()


def read_to_eof(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return data
        if not chunk:
            return data
        data += chunk


def test_ssl_request_inside_tls_refused_as_postgresql_does(sluice):
    """A second SSLRequest, sent inside the TLS the first one started, is for PostgreSQL an
    unsupported protocol version (1234.5679): FATAL 0A000 at once."""
    with sluice.raw() as r:
        r.send(struct.pack("!II", 8, pgwire.SSL_REQUEST))
        assert r.read_byte() == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = ctx.wrap_socket(r.sock)
        tls.sendall(struct.pack("!II", 8, pgwire.SSL_REQUEST))
        data = read_to_eof(tls)
    assert data[:1] == b"E", data[:80]
    f = pgwire.parse_fields(data[5:])
    assert (f["S"], f["C"]) == ("FATAL", "0A000"), f
    assert f["M"] == "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0", f
    sluice.assert_alive()


def test_gssenc_request_twice_refused(sluice, sluice_only):
    """sluice answers GSSENCRequest with 'N' (this PostgreSQL may answer 'G'); a second one is
    refused as PostgreSQL refuses a repeated request, not answered again."""
    gss = struct.pack("!II", 8, 80877104)
    with sluice.raw() as r:
        r.send(gss)
        assert r.read_byte() == b"N"
        r.send(gss)
        data = drain(r)
    f = pgwire.parse_fields(data[5:])
    assert (f["S"], f["C"]) == ("FATAL", "0A000"), data[:80]
    assert "1234.5680" in f["M"], f
    sluice.assert_alive()


@pytest.mark.parametrize("body", [
    b"user\0etl\0database\0shop\0",        # no closing empty name
    b"user\0etl\0\0database\0shop\0\0",  # bytes after it
    b"user\0etl\0database\0",              # a name without its value
])
def test_bad_startup_layout_gets_postgresql_error(sluice, body):
    with sluice.raw() as r:
        r.send(struct.pack("!II", 8 + len(body), pgwire.PROTO_V3) + body)
        data = drain(r)
    assert data[:1] == b"E", data[:80]
    f = pgwire.parse_fields(data[5:])
    assert (f["S"], f["C"]) == ("FATAL", "08P01"), f
    assert f["M"] == "invalid startup packet layout: expected terminator as last byte", f
    sluice.assert_alive()


def test_protocol_4_0_rejected(sluice):
    with sluice.raw() as r:
        r.send(pgwire.startup_packet({"user": "etl", "database": "shop"}, version=4 << 16))
        data = drain(r)
    assert data[:1] == b"E", data[:80]
    sluice.assert_alive()


def test_startup_without_user_28000(sluice):
    with sluice.raw() as r:
        with pytest.raises(pgwire.PgError) as ei:
            r.startup(database="shop", password="x")
    assert ei.value.sqlstate == "28000", ei.value.fields
    sluice.assert_alive()


def test_repeated_startup_parameter_refused(sluice):
    """PostgreSQL takes the last of a repeated parameter: replication=false then
    replication=database was let through as a replication connection."""
    body = struct.pack("!I", pgwire.PROTO_V3)
    for k, v in (("user", ALICE), ("database", "shop"), ("replication", "false"),
                 ("replication", "database")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    with sluice.raw() as r:
        r.send(struct.pack("!I", len(body) + 4) + body)
        m = r.read_msg()
        assert m is not None and m[0] == b"E", m
        f = pgwire.parse_fields(m[1])
        assert f["C"] == "08P01" and "twice" in f["M"], f
    sluice.assert_alive()


def test_sslrequest_then_garbage(sluice):
    with sluice.raw() as r:
        r.send(struct.pack("!II", 8, pgwire.SSL_REQUEST))
        assert r.read_byte() == b"S"
        r.send(b"this is not a TLS record" * 10)
        drain(r)
    sluice.assert_alive()


def test_sslrequest_then_close(sluice):
    with sluice.raw() as r:
        r.send(struct.pack("!II", 8, pgwire.SSL_REQUEST))
        assert r.read_byte() == b"S"
    sluice.assert_alive()


def test_unknown_message_type_after_login(sluice):
    with sluice.raw_login(user="etl") as r:
        r.send(b"\x01" + struct.pack("!I", 8) + b"abcd")
        data = drain(r)
    assert_error_or_close(data)
    sluice.assert_alive()


def test_bad_message_length_after_login(sluice):
    with sluice.raw_login(user="etl") as r:
        r.send(b"Q" + struct.pack("!I", 2))
        data = drain(r)
    assert_error_or_close(data)
    with sluice.raw_login(user="etl") as r:
        r.send(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"SELECT 1")
        r.sock.shutdown(socket.SHUT_WR)
        data = drain(r)
    assert_error_or_close(data)
    sluice.assert_alive()


def _messages(data):
    """(type, payload) of each whole message in data; the rest is left out."""
    out = []
    while len(data) >= 5:
        (ln,) = struct.unpack("!I", data[1:5])
        if ln < 4 or len(data) < 1 + ln:
            break
        out.append((data[:1], data[5 : 1 + ln]))
        data = data[1 + ln :]
    return out


@pytest.mark.parametrize("bad", [struct.pack("!I", 2), struct.pack("!I", 0x7FFFFFFF) + b"x"])
def test_messages_before_a_bad_length_are_answered(sluice, bad):
    """PostgreSQL runs what came before a message it cannot frame and answers it, then ends
    the session (without an error: it cannot trust the stream to write one). sluice does the
    same, and says why in an 08P01 error."""
    with sluice.raw_login(user="etl") as r:
        r.send(pgwire.message(b"Q", b"SELECT 41 + 1\0") + pgwire.message(b"Q", b"SELECT 7\0") +
               b"Q" + bad)
        data = drain(r)
    msgs = _messages(data)
    types = [t for t, _ in msgs]
    assert types[:8] == [b"T", b"D", b"C", b"Z", b"T", b"D", b"C", b"Z"], types
    assert msgs[1][1].endswith(b"42") and msgs[5][1].endswith(b"7")
    assert len(msgs) <= 9 and sum(len(m) + 5 for _, m in msgs) == len(data)
    if len(msgs) == 9:
        assert msgs[8][0] == b"E" and pgwire.parse_fields(msgs[8][1])["C"] == "08P01"
    sluice.assert_alive()


def backends_with_app(sluice, app):
    c = sluice.pg.admin()
    try:
        cur = c.cursor()
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
        return cur.fetchone()[0]
    finally:
        c.close()


def wait_no_backend(sluice, app, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if backends_with_app(sluice, app) == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"upstream backend of vanished client {app} still there after {timeout}s")


def test_client_vanishes_mid_query(sluice):
    app = "vanish-" + os.urandom(4).hex()
    r = sluice.raw_login(user="etl", extra={"application_name": app})
    r.send(pgwire.message(b"Q", b"SELECT pg_sleep(2)\0"))
    time.sleep(0.3)
    assert backends_with_app(sluice, app) == 1
    r.sock.close()
    sluice.assert_alive()
    wait_no_backend(sluice, app)
    sluice.assert_alive()


def test_client_vanishes_mid_large_result(sluice):
    app = "vanish-big-" + os.urandom(4).hex()
    r = sluice.raw_login(user="etl", extra={"application_name": app})
    r.send(pgwire.message(b"Q", b"SELECT repeat('x', 1000) FROM generate_series(1, 200000)\0"))
    got = 0
    while got < 256 * 1024:
        chunk = r.sock.recv(65536)
        assert chunk
        got += len(chunk)
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    r.sock.close()
    wait_no_backend(sluice, app, 15)
    sluice.assert_alive()


def test_client_vanishes_mid_copy_in(sluice):
    app = "vanish-copy-" + os.urandom(4).hex()
    r = sluice.raw_login(user="etl", extra={"application_name": app})
    r.send(pgwire.message(b"Q", b"CREATE TEMP TABLE t (v text); COPY t FROM STDIN\0"))
    while True:
        m = r.read_msg()
        assert m is not None and m[0] != b"E", m
        if m[0] == b"G":
            break
    for i in range(100):
        r.send(pgwire.message(b"d", b"row %d\n" % i))
    r.sock.close()
    wait_no_backend(sluice, app)
    sluice.assert_alive()


def test_upstream_refuses(sluice, sluice_only):
    with sluice.raw() as r:
        with pytest.raises(pgwire.PgError) as ei:
            r.startup(user="etl", database="shop_down", password=sluice.secrets["etl"])
    assert ei.value.sqlstate.startswith("08"), ei.value.fields
    sluice.assert_alive()


def test_upstream_killed_mid_session(sluice):
    c = sluice.connect()
    cur = c.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    c.commit()
    admin = sluice.pg.admin()
    admin.autocommit = True
    acur = admin.cursor()
    acur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert acur.fetchone()[0] is True
    admin.close()
    time.sleep(0.3)
    with pytest.raises(psycopg2.OperationalError):
        cur.execute("SELECT 1")
        cur.fetchone()
    sluice.assert_alive()


def test_upstream_killed_during_query(sluice):
    c = sluice.connect(application_name="kill-during")
    cur = c.cursor()
    pid = c.get_backend_pid()
    import threading

    def kill():
        a = sluice.pg.admin()
        a.autocommit = True
        a.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        a.close()

    t = threading.Timer(0.5, kill)
    t.start()
    t0 = time.time()
    with pytest.raises(psycopg2.OperationalError):
        cur.execute("SELECT pg_sleep(10)")
    t.join()
    assert time.time() - t0 < 5
    sluice.assert_alive()
