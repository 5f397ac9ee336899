"""test_relay_edges.py: edge cases of the relay core (session.c, pool.c, cancel.c) found in
review, each driven with raw protocol bytes where a driver would hide the framing.

- Bytes a client pipelines right behind its password (or SASL final) are relayed once the
  upstream login finishes, on a fresh and on a reused upstream connection.
- COPY FROM STDIN through the extended protocol: the server ignores the Sync that follows
  the Execute, so two Syncs get one ReadyForQuery. The session must still count as idle
  afterwards (its backend is reused; SIGTERM ends it at once instead of waiting for
  server.shutdown_timeout) and policy refusals still get sluice's own error.
- An extended-protocol write that was never synced is not committed when the client leaves.
- A client that half-closes its socket after a Query still gets the answers, and the
  statements run.
- CancelRequest reaches a target whose TCP connect does not complete at once.
"""

import signal
import socket
import struct
import threading
import time

import pytest

import pgwire
from conftest import ALICE, SluiceConfig, SluiceProcess, Endpoint, make_identities, _state
from pgwire import message, startup_packet


def read_until(conn, stop=b"Z", timeout=8.0):
    """Messages up to and including the first of type `stop`. Raises socket.timeout."""
    conn.sock.settimeout(timeout)
    msgs = []
    while True:
        m = conn.read_msg()
        if m is None:
            raise EOFError("closed after %r" % [t for t, _ in msgs])
        msgs.append(m)
        if m[0] == stop:
            return msgs


def rows_of(msgs):
    out = []
    for t, p in msgs:
        if t == b"D":
            (n,) = struct.unpack("!H", p[:2])
            off, row = 2, []
            for _ in range(n):
                (ln,) = struct.unpack("!i", p[off : off + 4])
                off += 4
                row.append(None if ln < 0 else p[off : off + ln].decode())
                off += max(ln, 0)
            out.append(row)
    return out


def cstr(s):
    return s.encode() + b"\0"


def parse_msg(sql, name=""):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!H", 0))


def bind_msg(portal="", stmt=""):
    return message(b"B", cstr(portal) + cstr(stmt) + struct.pack("!HHH", 0, 0, 0))


def execute_msg(portal=""):
    return message(b"E", cstr(portal) + struct.pack("!I", 0))


SYNC = message(b"S")
FLUSH = message(b"H")


def login_pipelined(ep, extra_bytes, user="etl"):
    """Cleartext login whose password message carries extra_bytes right behind it."""
    c = ep.raw()
    c.send(startup_packet({"user": user, "database": "shop"}))
    t, p = c.read_msg()
    assert t == b"R" and struct.unpack("!I", p[:4])[0] == pgwire.AUTH_CLEARTEXT
    c.send(message(b"p", cstr(ep.secrets[user])) + extra_bytes)
    msgs = read_until(c)  # AuthenticationOk .. ReadyForQuery of the login
    assert msgs[0][0] == b"R"
    return c


def backend_pid(c):
    return int(c.query("SELECT pg_backend_pid()")[0][0])


# ---------------------------------------------------------------- pipelined after password


def test_query_pipelined_behind_password(sluice, sluice_only):
    c = login_pipelined(sluice, message(b"Q", cstr("SELECT 40 + 2")))
    try:
        msgs = read_until(c, timeout=5)
    except socket.timeout:
        pytest.fail("the Query sent with the password was never answered")
    assert rows_of(msgs) == [["42"]]
    assert c.query("SELECT 1") == [["1"]]
    c.terminate()


def test_query_pipelined_behind_password_on_reused_backend(spawn_sluice):
    _, ep = spawn_sluice("pipelined", server_extra={"workers": 1})
    a = ep.raw_login("shop", "etl")
    pid = backend_pid(a)
    a.terminate()
    time.sleep(0.5)  # DISCARD ALL runs
    b = login_pipelined(ep, message(b"Q", cstr("SELECT pg_backend_pid()")))
    try:
        msgs = read_until(b, timeout=5)
    except socket.timeout:
        pytest.fail("the Query sent with the password was never answered (reused backend)")
    assert rows_of(msgs) == [[str(pid)]], "the idle backend was reused"
    b.terminate()


# ---------------------------------------------------------------- extended-protocol COPY


def copy_in_extended(c, table, values):
    """libpq's way of running COPY FROM STDIN with PQexecParams: Parse/Bind/Execute/Sync,
    the data, CopyDone and another Sync."""
    c.send(parse_msg(f"COPY {table} FROM STDIN") + bind_msg() + execute_msg() + SYNC)
    msgs = read_until(c, stop=b"G")
    assert [t for t, _ in msgs] == [b"1", b"2", b"G"]
    c.send(b"".join(message(b"d", f"{v}\n".encode()) for v in values) + message(b"c") + SYNC)
    msgs = read_until(c)
    types = [t for t, _ in msgs]
    assert types == [b"C", b"Z"], types
    assert msgs[0][1] == cstr(f"COPY {len(values)}")
    assert msgs[-1][1] == b"I"


BOB = "bob@corp.com"


def test_extended_copy_in_leaves_session_idle(spawn_sluice):
    sp, ep = spawn_sluice("xcopy", server_extra={"workers": 1, "shutdown_timeout": "20s"})
    # bob stays under the default guardrails: DELETE without WHERE is refused.
    a = ep.raw_login("shop", BOB)
    pid = backend_pid(a)
    a.query("CREATE TEMP TABLE xc (v int)")
    copy_in_extended(a, "xc", [1, 2, 3])
    # The policy seam matches refusals to replies by counting Syncs: still in step.
    with pytest.raises(pgwire.PgError) as ei:
        a.query("DELETE FROM xc")
    assert ei.value.sqlstate == "42501" and "blocked by rule" in ei.value.fields.get("M", "")
    assert a.query("SELECT sum(v) FROM xc") == [["6"]]
    a.terminate()
    time.sleep(0.5)

    b = ep.raw_login("shop", BOB)
    assert backend_pid(b) == pid, "an idle session after an extended COPY is reusable"
    b.query("CREATE TEMP TABLE xc2 (v int)")
    copy_in_extended(b, "xc2", [4, 5])

    # Idle at SIGTERM: the session ends now, not at server.shutdown_timeout.
    t0 = time.time()
    sp.signal(signal.SIGTERM)
    msgs = pgwire.expect_error_or_close(b, timeout=25)
    elapsed = time.time() - t0
    errs = [pgwire.parse_fields(p) for t, p in msgs if t == b"E"]
    assert errs and errs[0].get("C") == "57P01", msgs
    assert elapsed < 5, f"idle session closed only after {elapsed:.1f}s"
    sp.assert_clean_exit()


# ---------------------------------------------------------------- unsynced extended write


def test_unsynced_extended_write_is_not_committed(spawn_sluice, pg):
    _, ep = spawn_sluice("unsynced", server_extra={"workers": 1})
    adm = pg.admin(dbname="shop")
    adm.autocommit = True
    cur = adm.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS relay_unsynced (v text)")
    cur.execute("GRANT ALL ON relay_unsynced TO app_scram")
    cur.execute("TRUNCATE relay_unsynced")
    a = ep.raw_login("shop", "etl")
    a.send(parse_msg("INSERT INTO relay_unsynced VALUES ('ghost')") + bind_msg() + execute_msg()
           + FLUSH)
    msgs = read_until(a, stop=b"C")
    assert [t for t, _ in msgs] == [b"1", b"2", b"C"]
    a.terminate()  # no Sync: PostgreSQL would roll the implicit transaction back
    time.sleep(0.5)
    b = ep.raw_login("shop", "etl")
    assert b.query("SELECT count(*) FROM relay_unsynced") == [["0"]]
    b.terminate()
    cur.execute("SELECT count(*) FROM relay_unsynced")
    assert cur.fetchone()[0] == 0
    cur.execute("DROP TABLE relay_unsynced")
    adm.close()


@pytest.mark.parametrize("rows,target,pause", [(1, "shop", 0), (5, "shop", 0),
                                               (20, "shop_tls", 1.0)])
def test_half_closed_client_gets_its_answers(sluice, pg, rows, target, pause):
    """A client that sends a Query and shuts down its sending side (shutdown(SHUT_WR), as
    scripts and some proxies do) still reads every answer, and the statements run, as
    PostgreSQL does: it answers before it notices the end. Five 200 kB rows fill the socket
    buffers, so the session must also keep writing to a client that sends nothing more; 20
    of them to a client that starts reading a second late, over an upstream TLS connection."""
    adm = pg.admin(dbname="shop")
    adm.autocommit = True
    cur = adm.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS relay_halfclose (v int)")
    cur.execute("GRANT ALL ON relay_halfclose TO app_scram")
    cur.execute("TRUNCATE relay_halfclose")
    a = sluice.raw_login(target, ALICE)
    a.send(message(b"Q", cstr(f"SELECT repeat('x', 200000) FROM generate_series(1, {rows}); "
                              "INSERT INTO relay_halfclose VALUES (1)")))
    a.sock.shutdown(socket.SHUT_WR)
    # with the upstream on TLS, sluice runs both directions at every event: the answer must
    # wait whole for a client that reads late, not be taken for a disconnect
    time.sleep(pause)
    msgs = read_until(a, stop=b"Z")
    assert [t for t, _ in msgs] == [b"T"] + [b"D"] * rows + [b"C", b"C", b"Z"], \
        [t for t, _ in msgs]
    assert a.read_msg() is None  # then the end
    a.close()
    cur.execute("SELECT count(*) FROM relay_halfclose")
    assert cur.fetchone()[0] == 1
    cur.execute("DROP TABLE relay_halfclose")
    adm.close()
    sluice.assert_alive()


# ---------------------------------------------------------------- cancel over a slow connect


class _Forwarder:
    """A TCP forwarder to PostgreSQL whose accepting can be paused. With accepting paused
    and its accept queue full, new SYNs are dropped, so a connect to it completes only after
    the SYN is retransmitted (about a second later): a target across a slow network."""

    def __init__(self, pg_port):
        self.pg_port = pg_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(0.05)
        self.port = self.lsock.getsockname()[1]
        self.accepting = threading.Event()
        self.accepting.set()
        self.stopped = False
        self.socks = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _loop(self):
        while not self.stopped:
            if not self.accepting.wait(0.05):
                continue
            try:
                c, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            c.settimeout(None)
            u = socket.create_connection(("127.0.0.1", self.pg_port))
            self.socks += [c, u]
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def stall(self):
        """Stop accepting and fill the accept queue: later connects hang in SYN_SENT."""
        self.accepting.clear()
        time.sleep(0.1)
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)
        return fillers

    def close(self):
        self.stopped = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def test_cancel_reaches_target_with_slow_connect(workdir, certs, pg, sluice_only, sluice_bin):
    fwd = _Forwarder(pg.port)

    class FwdConfig(SluiceConfig):
        def targets(self):
            return super().targets() + [
                dict(name="shop_fwd", port=fwd.port, user="app_trust", env=None,
                     sslmode="disable")]

    ids, secrets = make_identities()
    cfg = FwdConfig(pg, certs, ids, server_extra={"workers": 1})
    sp = SluiceProcess(workdir, "slowcancel", cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    ep = Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp)
    try:
        c = ep.raw_login("shop_fwd", "etl")
        pid, key = c.backend_key
        c.send(message(b"Q", cstr("SELECT pg_sleep(8)")))
        time.sleep(0.3)
        fillers = fwd.stall()
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", cfg.port)) as k:
            k.sendall(struct.pack("!IIII", 16, pgwire.CANCEL_REQUEST, pid, key))
        time.sleep(0.3)
        fwd.accepting.set()  # the retransmitted SYN (after ~1s) gets through
        msgs = read_until(c, timeout=15)
        elapsed = time.time() - t0
        errs = [pgwire.parse_fields(p) for t, p in msgs if t == b"E"]
        assert errs and errs[0].get("C") == "57014", \
            f"the query was not cancelled (ran {elapsed:.1f}s): {msgs}"
        assert elapsed < 6
        c.terminate()
        for f in fillers:
            f.close()
    finally:
        fwd.close()
        sp.assert_clean_exit()



def test_oversized_client_message_gets_clear_error(spawn_sluice):
    """server.max_message_size bounds what sluice buffers whole (Query, Parse): a larger one
    gets FATAL 54000 naming the setting, whether it arrives in one read or many."""
    sp, ep = spawn_sluice("maxmsg", server_extra={"max_message_size": "8kB"})
    for size in (9000, 200000):
        c = ep.raw_login("shop", "etl")
        sql = "SELECT '" + "x" * size + "'"
        c.send(pgwire.message(b"Q", sql.encode() + b"\0"))
        t, payload = c.read_msg()
        assert t == b"E", t
        f = pgwire.parse_fields(payload)
        assert f["C"] == "54000" and "max_message_size" in f["M"], f
        assert c.read_msg() is None  # then the connection closes
        c.close()
    ok = ep.raw_login("shop", "etl")
    assert ok.query("SELECT 'small'")[0][0] == "small"
    ok.close()


# ---------------------------------------------------------------- long pipelines


def ext_select(n):
    """Parse, Bind and Execute of the unnamed statement and portal: SELECT n."""
    return (message(b"P", b"\0SELECT " + str(n).encode() + b"\0\0\0")
            + message(b"B", b"\0\0" + b"\0\0" * 3) + message(b"E", b"\0\0\0\0\0"))


def pipeline(conn, parts, stop_after=1):
    """Send parts from a thread of its own while reading (as pgx's batches do); the messages
    up to and including the stop_after-th ReadyForQuery."""
    errors = []

    def write():
        try:
            for p in parts:
                conn.send(p)
        except OSError as e:  # the reader reports what went wrong
            errors.append(e)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    msgs, zs = [], 0
    conn.sock.settimeout(60)
    while zs < stop_after:
        m = conn.read_msg()
        assert m is not None, f"connection closed after {len(msgs)} messages {errors}"
        msgs.append(m)
        zs += m[0] == b"Z"
    t.join(10)
    assert not errors, errors
    return msgs


def test_long_pipeline_behind_one_sync_is_answered_whole(spawn_sluice):
    """60,000 messages behind one Sync: sluice reads the client only so far ahead of the
    server's answers (session.c, client_ahead) and asks the server to flush; every row comes
    back, in order, and the session and its worker go on serving."""
    _, ep = spawn_sluice("pipeline", server_extra={"workers": 1})
    a = ep.raw_login("shop", ALICE)
    n = 20000
    parts = [b"".join(ext_select(i) for i in range(k, min(k + 500, n))) for k in range(0, n, 500)]
    msgs = pipeline(a, parts + [message(b"S")])
    rows = [int(p[6:].decode()) for t, p in msgs if t == b"D"]
    assert rows == list(range(n))
    assert [t for t, _ in msgs].count(b"E") == 0 and msgs[-1] == (b"Z", b"I")
    assert a.query("SELECT 'after'") == [["after"]]
    b = ep.raw_login("shop", ALICE)
    assert b.query("SELECT 1") == [["1"]]
    a.terminate()
    b.terminate()
    ep.assert_alive()


def test_long_pipeline_after_an_error_gets_one_error(spawn_sluice):
    """The server skips a group after its error, answering nothing until the Sync: sluice
    stops waiting for those answers (the queues of the group are dropped as its
    ReadyForQuery would) instead of holding the client, which would never send the Sync."""
    _, ep = spawn_sluice("pipeline-error", server_extra={"workers": 1})
    a = ep.raw_login("shop", ALICE)
    n = 20000
    bad = message(b"P", b"\0SELEC 1\0\0\0")
    parts = [bad] + [b"".join(ext_select(i) for i in range(k, min(k + 500, n)))
                     for k in range(0, n, 500)]
    msgs = pipeline(a, parts + [message(b"S")])
    types = [t for t, _ in msgs]
    assert types == [b"E", b"Z"], types[:10]
    assert pgwire.parse_fields(msgs[0][1]).get("C") == "42601"
    assert a.query("SELECT 'after'") == [["after"]]
    a.terminate()
    ep.assert_alive()


def test_many_named_statements_and_portals(spawn_sluice):
    """Thousands of named statements and portals (kept by name in hash maps: core/names.c),
    each closed again: every one runs what it was prepared with."""
    _, ep = spawn_sluice("named", server_extra={"workers": 1})
    a = ep.raw_login("shop", ALICE)
    n = 5000

    def one(i):
        name = b"st%d" % i
        portal = b"pt%d" % i
        return (message(b"P", name + b"\0SELECT " + str(i).encode() + b"\0\0\0")
                + message(b"B", portal + b"\0" + name + b"\0" + b"\0\0" * 3)
                + message(b"E", portal + b"\0\0\0\0\0")
                + message(b"C", b"P" + portal + b"\0"))

    parts = [b"".join(one(i) for i in range(k, k + 500)) + message(b"S") for k in range(0, n, 500)]
    msgs = pipeline(a, parts, stop_after=len(parts))
    rows = [int(p[6:].decode()) for t, p in msgs if t == b"D"]
    assert rows == list(range(n))
    assert [t for t, _ in msgs].count(b"E") == 0
    # the statements are still there, each under its own name; closing one drops only it
    a.send(message(b"C", b"Sst17\0") + message(b"S"))
    read_until(a)
    bind_exec = lambda name: (message(b"B", b"\0" + name + b"\0" + b"\0\0" * 3)
                              + message(b"E", b"\0\0\0\0\0") + message(b"S"))
    a.send(bind_exec(b"st4242"))
    got = read_until(a)
    assert [int(p[6:].decode()) for t, p in got if t == b"D"] == [4242]
    a.send(bind_exec(b"st17"))
    got = read_until(a)
    assert pgwire.parse_fields([p for t, p in got if t == b"E"][0]).get("C") == "26000"
    a.terminate()
    ep.assert_alive()


def test_long_pipeline_after_an_error_is_audited_without_misnaming(spawn_sluice):
    """1,500 Parse/Bind/Execute behind one Sync, the 701st failing: each Execute gets exactly
    one event; those before the error ran, those after it say they were skipped, and an
    Execute whose Parse or Bind sluice dropped with the failed group's queues is named
    `(prepared statement)`, never as another statement."""
    import collections
    import re

    from test_audit import export_events

    sp, ep = spawn_sluice("pipeline-audit", server_extra={"workers": 1})
    a = ep.raw_login("shop", ALICE)
    n, bad = 1500, 700
    parts = [message(b"P", b"\0" + ("SELECT 1/0 AS pl_fail" if i == bad else
                                    "SELECT 1 AS pl_ok_%d" % i).encode() + b"\0\0\0")
             + message(b"B", b"\0\0" + b"\0\0" * 3) + message(b"E", b"\0\0\0\0\0")
             for i in range(n)]
    msgs = pipeline(a, [b"".join(parts[k:k + 100]) for k in range(0, n, 100)] + [message(b"S")])
    assert [pgwire.parse_fields(p).get("C") for t, p in msgs if t == b"E"] == ["22012"]
    assert [t for t, _ in msgs].count(b"C") == bad
    assert a.query("SELECT 'after'") == [["after"]]
    a.terminate()
    time.sleep(1.5)  # (reads are committed within 100 ms)
    all_events = export_events(sp)
    events = [e for e in all_events if e["kind"] == "statement"
              and ("pl_ok_" in e.get("statement", "") or "pl_fail" in e.get("statement", "")
                   or e.get("statement") == "(prepared statement)")]
    # a statement sluice cannot name is journaled before it is sent; its result (skipped)
    # is folded into that event or follows as the statement_end that refers to it
    ends = {e.get("ref"): e for e in all_events if e["kind"] == "statement_end"}
    named = collections.Counter()
    unnamed = 0
    for e in events:
        m = re.search(r"pl_ok_(\d+)", e["statement"])
        skipped = "skipped" in (e.get("detail") or "")
        if m:
            i = int(m.group(1))
            named[i] += 1
            assert skipped == (i > bad), e
        elif e["statement"] == "(prepared statement)":
            unnamed += 1
            assert skipped or "skipped" in (ends.get(e["seq"], {}).get("detail") or ""), e
    assert all(k == 1 for k in named.values()), [i for i, k in named.items() if k > 1]
    assert all(named[i] == 1 for i in range(bad)), "an Execute that ran has no event"
    assert len(named) + unnamed == n - 1, (len(named), unnamed)


def test_pipeline_after_a_failed_extended_copy_is_answered(spawn_sluice, pg):
    """COPY FROM STDIN by Execute swallows the Sync sent behind it; bad data then fails it and
    the server skips to the client's next Sync. 300 statements pipelined before that Sync must
    not wait for answers that never come."""
    _, ep = spawn_sluice("pipeline-copy", server_extra={"workers": 1})
    a = ep.raw_login("shop", ALICE)
    a.query("CREATE TEMP TABLE pc (id int)")
    a.send(message(b"P", b"\0COPY pc FROM STDIN\0\0\0") + message(b"B", b"\0\0" + b"\0\0" * 3)
           + message(b"E", b"\0\0\0\0\0") + message(b"S"))
    read_until(a, stop=b"G")
    a.send(message(b"d", b"notanint\n"))
    t, p = a.read_msg()
    assert t == b"E" and pgwire.parse_fields(p).get("C") == "22P02", (t, p)
    a.send(message(b"c") + b"".join(ext_select(i) for i in range(300)) + message(b"S"))
    got = read_until(a, timeout=20)
    assert [t for t, _ in got] == [b"Z"], got[:5]
    assert a.query("SELECT count(*) FROM pc") == [["0"]]
    a.terminate()
    ep.assert_alive()
