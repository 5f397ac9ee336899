"""The audit's record of statements in the extended protocol's harder cases (docs/audit.md):
a Parse the server rejects, a Parse policy refuses, Executes skipped after an error in their
group, a failure at the implicit commit of Sync, a portal fetched in parts, COPY TO STDOUT, and
a session that ends mid-statement. Each test starts its own sluice and reads the events back
with `sluice audit export`."""
import hashlib
import re
import urllib.request
import json
import socket
import struct
import time

import psycopg
import psycopg2

import pgwire
from conftest import ALICE
from test_audit import export_events

BOB = "bob@corp.com"
SYNC = pgwire.message(b"S")


def P(sql, name=""):
    return pgwire.message(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def B(portal="", stmt=""):
    return pgwire.message(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" +
                          struct.pack("!HHH", 0, 0, 0))


def E(portal="", max_rows=0):
    return pgwire.message(b"E", portal.encode() + b"\0" + struct.pack("!I", max_rows))


def replies(c, groups=1):
    """Messages up to the groups-th ReadyForQuery, as (type, body)."""
    out = []
    while groups:
        t, body = c.read_msg()
        out.append((t, body))
        if t == b"Z":
            groups -= 1
    return out


def codes(msgs):
    return [pgwire.parse_fields(b)["C"] for t, b in msgs if t == b"E"]


def audit_drained(sp):
    """Whether every event sluice queued so far is committed (its audit queue is empty)."""
    url = f"http://127.0.0.1:{sp.config.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^sluice_audit_queue_depth (\d+)", text, re.M)
    return m is not None and m.group(1) == "0"


def statements(sp, marker, n=1, timeout=5.0):
    """The statement (and statement_end) events whose text contains marker, once n of the
    statement events are there and the audit queue is empty: everything queued before (a
    statement_end of a result that came after its statement was written, in a later batch)
    is then committed."""
    deadline = time.time() + timeout
    while True:
        drained = audit_drained(sp)
        evs = export_events(sp)
        st = [e for e in evs if e["kind"] == "statement" and marker in e.get("statement", "")]
        if (len(st) >= n and drained) or time.time() > deadline:
            ends = [e for e in evs if e["kind"] == "statement_end" and
                    e.get("ref") in {x["seq"] for x in st}]
            return st, ends


def result_rows(st, ends):
    """The rows of a write's result: in its statement event when the result was folded into
    it, else (the event was written before the result came, on a slow machine) in the
    statement_end without a detail that carries it."""
    res = [e for e in ends if not e.get("detail")]
    return res[0]["rows"] if res else st["rows"]


def admin(ep):
    c = psycopg2.connect(**ep.params(user=ALICE))
    c.autocommit = True
    return c


def numbered_table(ep, table, n):
    """table (dropped first) holding ids 1..n; the admin connection that made it."""
    a = admin(ep)
    a.cursor().execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS "
                       f"SELECT g AS id FROM generate_series(1, {n}) g")
    return a


def test_failed_reparse_records_the_statement_that_ran(spawn_sluice):
    """A Parse of a name in use fails (42P05) and the server keeps the old statement: the
    Execute that follows is recorded as the old statement, not the rejected one."""
    sp, ep = spawn_sluice("ap-reparse")
    a = numbered_table(ep, "ap_victim", 5)
    c = ep.raw_login("shop", ALICE)
    c.send(P("DELETE FROM ap_victim WHERE id > 0", "s1") + SYNC)
    assert codes(replies(c)) == []
    c.send(P("SELECT 1 AS ap_reparse_select", "s1") + SYNC)
    assert codes(replies(c)) == ["42P05"]
    c.send(B("", "s1") + E() + SYNC)
    got = replies(c)
    assert (b"C", b"DELETE 5\0") in got, got
    c.close()
    dele, ends = statements(sp, "DELETE FROM ap_victim")
    assert len(dele) == 1, dele
    rows = dele[0].get("rows") or sum(e.get("rows", 0) for e in ends)
    assert rows == 5, (dele, ends)
    sel, _ = statements(sp, "ap_reparse_select", timeout=0.5)
    assert sel == [], sel  # never ran: nothing records it


def test_refused_parse_gets_one_event(spawn_sluice):
    """A Parse that policy refuses gets its deny event and nothing else: its Bind and Execute,
    which the server skips, record no "allow" event."""
    sp, ep = spawn_sluice("ap-refused")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_rt; CREATE TABLE ap_rt (id int, who text)")
    p = ep.params(user="copilot")
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True) as c:
        try:
            c.execute("INSERT INTO ap_rt VALUES (%s, 'agent')", (9,))
            raise AssertionError("the INSERT was not refused")
        except psycopg.errors.InsufficientPrivilege:
            pass
        assert c.execute("SELECT 1 AS ap_after").fetchone() == (1,)
    statements(sp, "ap_after")  # committed after the refused INSERT's events
    evs = export_events(sp)
    mine = [e for e in evs if e["kind"] == "statement" and e.get("identity") == "copilot"]
    ins = [e for e in mine if "ap_rt" in e.get("statement", "")]
    assert [e["decision"] for e in ins] == ["deny"], ins
    assert not [e for e in mine if e.get("statement") == "(prepared statement)"], mine


def test_executes_skipped_after_an_error_say_so(spawn_sluice):
    """In one group, a statement fails as it runs: the writes after it never run, and their
    events say so, with no rows; the write before it completed but was rolled back with the
    group's implicit transaction, which its statement_end says."""
    sp, ep = spawn_sluice("ap-skipped")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_sk; CREATE TABLE ap_sk (id int)")
    c = ep.raw_login("shop", ALICE)
    c.send(P("INSERT INTO ap_sk VALUES (1)") + B() + E() +
           P("SELECT 1 / (0 * g) AS ap_div FROM generate_series(1, 1) g") + B() + E() +
           P("INSERT INTO ap_sk SELECT 101 AS ap_skipped") + B() + E() + SYNC)
    assert codes(replies(c)) == ["22012"]
    c.close()
    cur = a.cursor()
    cur.execute("SELECT count(*) FROM ap_sk")
    assert cur.fetchone() == (0,)
    st, ends = statements(sp, "ap_skipped")
    assert len(st) == 1, st
    res = ends[0] if ends else st[0]
    assert res.get("rows", 0) == 0 and res.get("detail", "").startswith("not executed"), (st, ends)
    div, _ = statements(sp, "ap_div")
    assert len(div) == 1 and div[0]["sqlstate"] == "22012" and "detail" not in div[0], div
    first, ends1 = statements(sp, "INSERT INTO ap_sk VALUES")
    assert len(first) == 1 and result_rows(first[0], ends1) == 1, (first, ends1)
    failed = [e for e in ends1 if e.get("sqlstate") == "22012"]
    assert len(failed) == 1 and failed[0]["detail"].startswith("failed after completing"), ends1


def test_session_ended_mid_statement_says_interrupted(spawn_sluice):
    """A client whose connection is reset while its statement runs: the event says it was
    interrupted. One that only closes (a FIN, which may be a half-close) is answered as
    PostgreSQL answers it, and its event has the statement's outcome."""
    sp, ep = spawn_sluice("ap-interrupt")
    c = ep.raw_login("shop", ALICE)
    c.send(pgwire.message(b"Q", b"SELECT pg_sleep(0.5) AS ap_interrupted\0"))
    time.sleep(0.1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    c.close()
    st, _ = statements(sp, "ap_interrupted")
    assert len(st) == 1 and st[0].get("detail", "").startswith("interrupted"), st
    c = ep.raw_login("shop", ALICE)
    c.send(pgwire.message(b"Q", b"SELECT pg_sleep(0.5) AS ap_closed\0"))
    time.sleep(0.1)
    c.close()
    st, _ = statements(sp, "ap_closed")
    assert len(st) == 1 and st[0].get("rows") == 1 and "detail" not in st[0], st


def test_failed_commit_at_sync_is_recorded(spawn_sluice):
    """A deferred constraint fails at the implicit commit of Sync, after the INSERT's
    CommandComplete: the INSERT's record gets that error."""
    sp, ep = spawn_sluice("ap-commit")
    a = admin(ep)
    a.cursor().execute(
        "DROP TABLE IF EXISTS ap_child; DROP TABLE IF EXISTS ap_parent; "
        "CREATE TABLE ap_parent (id int PRIMARY KEY); "
        "CREATE TABLE ap_child (pid int REFERENCES ap_parent DEFERRABLE INITIALLY DEFERRED)")
    c = ep.raw_login("shop", ALICE)
    c.send(P("INSERT INTO ap_child SELECT 42 AS ap_deferred") + B() + E() + SYNC)
    got = replies(c)
    assert (b"C", b"INSERT 0 1\0") in got and codes(got) == ["23503"], got
    c.close()
    st, ends = statements(sp, "ap_deferred")
    assert len(st) == 1, st
    failed = [e for e in ends if e.get("sqlstate") == "23503"]
    assert len(failed) == 1 and failed[0]["detail"].startswith("failed after completing"), ends


def test_do_and_execute_are_journaled_before_they_run(spawn_sluice):
    """DO and SQL EXECUTE may write: their events are committed before they finish, as a
    write's are. Each runs longer than the writer's batches, so its result cannot be folded
    into its event and follows as statement_end (a read's single event would carry it)."""
    sp, ep = spawn_sluice("ap-do")
    a = admin(ep)
    cur = a.cursor()
    cur.execute("DO $$ BEGIN PERFORM pg_sleep(0.4); END $$")
    cur.execute("PREPARE ap_p AS SELECT pg_sleep(0.4) AS ap_exec")
    cur.execute("EXECUTE ap_p")
    cur.execute("SELECT pg_sleep(0.4) AS ap_read")
    time.sleep(0.3)
    evs = export_events(sp)
    for command in ("DO", "EXECUTE", "SELECT"):
        st = [e for e in evs if e["kind"] == "statement" and e.get("command") == command and
              ("ap_read" in e["statement"] or command != "SELECT")]
        assert len(st) == 1, (command, st)
        ends = [e for e in evs if e["kind"] == "statement_end" and e.get("ref") == st[0]["seq"]]
        assert len(ends) == (0 if command == "SELECT" else 1), (command, st, ends)


def test_application_name_is_masked_in_the_audit(spawn_sluice):
    """application_name is the client's free text: an email in it (at startup or SET later)
    never reaches the audit raw."""
    sp, ep = spawn_sluice("ap-app")
    email = "zed.quux@secretmail.org"
    c = psycopg2.connect(**ep.params(user=ALICE, application_name="start " + email))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT 1 AS ap_app_one")
    cur.execute("SET application_name = %s", (email,))
    cur.execute("SELECT 2 AS ap_app_two")
    c.close()
    for marker in ("ap_app_one", "ap_app_two"):
        st, _ = statements(sp, marker)
        assert len(st) == 1 and email not in st[0]["application_name"], st
    assert st[0]["application_name"] != "start " + email


def test_portal_fetched_in_parts_is_one_statement(spawn_sluice):
    """Executes with a row limit (PortalSuspended between them) fetch one statement's result
    in parts: one event, with every row and one digest. A portal closed (or dropped at the end
    of its transaction) before its last row gets its event then, saying so."""
    sp, ep = spawn_sluice("ap-suspend")
    c = ep.raw_login("shop", ALICE)
    c.send(P("SELECT g::text AS ap_parts FROM generate_series(1, 10) g") + B() +
           E(max_rows=3) + E(max_rows=3) + E() + SYNC)
    got = replies(c)
    assert [t for t, _ in got].count(b"s") == 2 and [t for t, _ in got].count(b"D") == 10, got
    want = hashlib.sha256(b"".join(body[2:] for t, body in got if t == b"D")).hexdigest()
    c.send(pgwire.message(b"Q", b"BEGIN\0"))
    replies(c)
    c.send(P("SELECT g::text AS ap_closed FROM generate_series(1, 10) g") + B("cur") +
           E("cur", max_rows=4) + SYNC)
    got2 = replies(c)
    c.send(pgwire.message(b"C", b"Pcur\0") + SYNC)
    replies(c)
    c.send(P("SELECT g::text AS ap_dropped FROM generate_series(1, 10) g") + B("cur2") +
           E("cur2", max_rows=2) + SYNC)
    replies(c)
    c.send(pgwire.message(b"Q", b"COMMIT\0"))
    replies(c)
    c.close()
    st, _ = statements(sp, "ap_parts")
    assert len(st) == 1 and st[0]["rows"] == 10 and st[0]["digest"] == want, st
    assert "detail" not in st[0], st
    st, _ = statements(sp, "ap_closed")
    assert len(st) == 1 and st[0]["rows"] == 4, st
    assert st[0]["detail"] == "portal closed before all its rows were fetched", st
    want2 = hashlib.sha256(b"".join(body[2:] for t, body in got2 if t == b"D")).hexdigest()
    assert st[0]["digest"] == want2, st
    st, _ = statements(sp, "ap_dropped")
    assert len(st) == 1 and st[0]["rows"] == 2, st
    assert st[0]["detail"] == "portal closed before all its rows were fetched", st


def test_copy_to_stdout_counts_and_digests_its_data(spawn_sluice):
    """COPY TO STDOUT sends CopyData, not DataRows: its event counts those bytes and digests
    their payloads as sent (docs/audit.md, Result digest)."""
    import io
    sp, ep = spawn_sluice("ap-copy")
    a = admin(ep)
    buf = io.StringIO()
    a.cursor().copy_expert("COPY (SELECT g AS ap_copy_out, md5(g::text) FROM "
                           "generate_series(1, 50) g) TO STDOUT", buf)
    data = buf.getvalue().encode()
    st, _ = statements(sp, "ap_copy_out")
    assert len(st) == 1, st
    assert st[0]["rows"] == 50 and st[0]["bytes"] == len(data) + 5 * 50, st
    assert st[0]["digest"] == hashlib.sha256(data).hexdigest(), st


def test_copy_data_beyond_max_row_size_streams_digested(spawn_sluice):
    """A CopyData larger than server.max_row_size streams through an unmasked session in
    parts, counted and digested as they pass."""
    import io
    sp, ep = spawn_sluice("ap-copybig", server_extra={"max_row_size": "16kB"})
    a = admin(ep)
    buf = io.StringIO()
    a.cursor().copy_expert("COPY (SELECT repeat('x', 300000) || g AS ap_copy_big FROM "
                           "generate_series(1, 2) g) TO STDOUT", buf)
    data = buf.getvalue().encode()
    assert len(data) == 2 * 300002
    st, _ = statements(sp, "ap_copy_big")
    assert len(st) == 1, st
    assert st[0]["rows"] == 2 and st[0]["bytes"] == len(data) + 10, st
    assert st[0]["digest"] == hashlib.sha256(data).hexdigest(), st


def test_session_refused_after_login_and_failed_reload_are_events(spawn_sluice):
    """An authenticated session that cannot start (an unknown target) has session_start and a
    session_end naming why; a SIGHUP whose configuration fails to load is a config_reload
    event saying the running configuration was kept."""
    import signal
    sp, ep = spawn_sluice("ap-sessions")
    c = ep.raw_login("shop", ALICE)  # a session that works, for comparison
    c.close()
    try:
        psycopg2.connect(**ep.params(user=ALICE, dbname="ap_no_such_target"))
        raise AssertionError("connected to an unknown target")
    except psycopg2.OperationalError as e:
        assert "does not exist" in str(e)
    with open(sp.path) as f:
        good = f.read()
    with open(sp.path, "w") as f:
        f.write(good + "\nserver: { workers: [not, a, number] }\n")
    sp.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5
    while "reload failed" not in open(sp.log, errors="replace").read():
        assert time.time() < deadline, "the reload did not fail"
        time.sleep(0.05)
    with open(sp.path, "w") as f:  # the CLI below reads it too
        f.write(good)
    while True:
        evs = export_events(sp)
        starts = [e for e in evs if e["kind"] == "session_start" and
                  e.get("target") == "ap_no_such_target"]
        reloads = [e for e in evs if e["kind"] == "config_reload"]
        if (starts and reloads) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(starts) == 1, starts
    ends = [e for e in evs if e["kind"] == "session_end" and e["session"] == starts[0]["session"]]
    assert len(ends) == 1 and ends[0]["detail"] == "refused: unknown target", ends
    assert len(reloads) == 1 and reloads[0]["detail"].startswith(
        "failed, the running configuration is kept: "), reloads


def Q(sql):
    return pgwire.message(b"Q", sql.encode() + b"\0")


def simple(c, sql):
    """Run sql as a simple Query; its replies up to ReadyForQuery."""
    c.send(Q(sql))
    return replies(c)


def test_portal_names_change_when_the_server_binds(spawn_sluice):
    """A portal's statement changes at BindComplete: a Bind the server skips (its group failed)
    leaves the portal as it was, and later fetches from it are recorded with it; a portal bound
    again ends its suspended statement, whichever Executes were in flight."""
    sp, ep = spawn_sluice("ap-rebind")
    a = numbered_table(ep, "ap_rb", 10)
    c = ep.raw_login("shop", BOB)
    simple(c, "BEGIN")
    c.send(P("SELECT id AS ap_rb_sel FROM ap_rb ORDER BY id") + B("c") + E("c", max_rows=2) + SYNC)
    replies(c)
    simple(c, "SAVEPOINT x")
    c.send(P("DELETE FROM ap_rb", "bad") + B("c", "bad") + E("c") + SYNC)  # refused
    assert codes(replies(c)) == ["42501"]
    simple(c, "ROLLBACK TO SAVEPOINT x")
    c.send(E("c", max_rows=5) + P("SELECT 42 AS ap_rb_other") + B("v") + E("v") + SYNC)
    got = replies(c)
    assert [t for t, _ in got].count(b"D") == 6, got
    # two statements suspended in turn on the unnamed portal, pipelined, then a third
    c.send(P("SELECT g AS ap_rb_one FROM generate_series(1, 10) g") + B() + E(max_rows=2) + SYNC +
           P("SELECT g AS ap_rb_two FROM generate_series(1, 10) g") + B() + E(max_rows=2) + SYNC)
    replies(c, 2)
    c.send(P("SELECT g AS ap_rb_three FROM generate_series(1, 10) g") + B() + E(max_rows=3) + SYNC)
    replies(c)
    simple(c, "COMMIT")
    c.close()
    st, _ = statements(sp, "ap_rb_sel")
    assert len(st) == 1 and st[0]["rows"] == 7, st  # 2, then 5 after the skipped Bind
    other, _ = statements(sp, "ap_rb_other")
    assert len(other) == 1 and other[0]["rows"] == 1 and "detail" not in other[0], other
    for marker, rows in (("ap_rb_one", 2), ("ap_rb_two", 2), ("ap_rb_three", 3)):
        st, _ = statements(sp, marker)
        assert len(st) == 1 and st[0]["rows"] == rows, (marker, st)
        assert st[0]["detail"] == "portal closed before all its rows were fetched", st


def test_suspended_portal_keeps_its_masked_counts(spawn_sluice):
    """Values masked in a suspended portal's rows count for that statement, not for the one
    that completes next."""
    sp, ep = spawn_sluice("ap-maskcount")
    c = ep.raw_login("shop", BOB)
    simple(c, "BEGIN")
    c.send(P("SELECT email AS ap_mc_a FROM customers ORDER BY id") + B("cur") +
           E("cur", max_rows=3) + SYNC)
    replies(c)
    c.send(P("SELECT 1 AS ap_mc_b") + B() + E() + SYNC)
    replies(c)
    c.send(E("cur", max_rows=2) + SYNC)
    replies(c)
    simple(c, "COMMIT")
    c.close()
    a_ev, _ = statements(sp, "ap_mc_a")
    b_ev, _ = statements(sp, "ap_mc_b")
    assert "masked" not in b_ev[0], b_ev
    assert a_ev[0]["rows"] == 5 and a_ev[0]["masked"] == {"email": 5}, a_ev


def test_continuation_after_an_implicit_commit_is_its_own_statement(spawn_sluice):
    """Out of a transaction the portal is gone at Sync: an Execute pipelined after it fails
    (34000) on its own, and the suspended statement keeps its rows and no error."""
    sp, ep = spawn_sluice("ap-pipe")
    c = ep.raw_login("shop", ALICE)
    c.send(P("SELECT g AS ap_pp FROM generate_series(1, 10) g") + B() + E(max_rows=2) + SYNC +
           E(max_rows=2) + SYNC)
    got = replies(c, 2)
    assert codes(got) == ["34000"], got
    c.close()
    st, _ = statements(sp, "ap_pp", n=2)
    done = [e for e in st if not e.get("sqlstate")]
    failed = [e for e in st if e.get("sqlstate")]
    assert len(done) == 1 and done[0]["rows"] == 2, st
    assert done[0]["detail"] == "portal closed before all its rows were fetched", st
    assert len(failed) == 1 and failed[0]["sqlstate"] == "34000", st


def test_large_copy_data_streams_for_an_unmasked_limited_identity(spawn_sluice):
    """An identity that is not masked but has a row limit: a CopyData over max_row_size
    streams through (masking would not look at it), the session goes on."""
    import io
    sp, ep = spawn_sluice("ap-copylim", server_extra={"max_row_size": "16kB"},
                          extra_yaml="masking: { unmask: { identities: [alice@corp.com, etl, "
                                     "copilot] } }")
    conn = psycopg2.connect(**ep.params(user="copilot"))
    conn.autocommit = True
    buf = io.StringIO()
    conn.cursor().copy_expert("COPY (SELECT repeat('x', 30000) || g AS ap_cl FROM "
                              "generate_series(1, 2) g) TO STDOUT", buf)
    assert len(buf.getvalue()) == 2 * 30002
    conn.close()


def test_portal_continuation_across_closes_and_commits(spawn_sluice):
    """Closing the statement a portal was bound from leaves the portal: its next Execute still
    continues it (one event). Closing the portal, or ending the transaction, before an Execute
    pipelined behind ends the statement there; that Execute fails on its own (34000)."""
    sp, ep = spawn_sluice("ap-closes")
    a = numbered_table(ep, "ap_cl", 10)
    c = ep.raw_login("shop", ALICE)
    simple(c, "BEGIN")
    c.send(P("DELETE FROM ap_cl WHERE id > 0 RETURNING id AS ap_cl_del", "s") + B("p", "s") +
           E("p", max_rows=2) + pgwire.message(b"C", b"Ss\0") + E("p", max_rows=2) + SYNC)
    got = replies(c)
    assert [t for t, _ in got].count(b"D") == 4, got
    simple(c, "ROLLBACK")
    simple(c, "BEGIN")
    c.send(P("SELECT g AS ap_cl_closed FROM generate_series(1, 10) g") + B("q") +
           E("q", max_rows=2) + SYNC)
    replies(c)
    c.send(pgwire.message(b"C", b"Pq\0") + E("q", max_rows=2) + SYNC)
    assert codes(replies(c)) == ["34000"]
    simple(c, "ROLLBACK")
    simple(c, "BEGIN")
    c.send(P("SELECT g AS ap_cl_commit FROM generate_series(1, 10) g") + B("r") +
           E("r", max_rows=2) + SYNC + Q("COMMIT") + E("r", max_rows=2) + SYNC)
    got = replies(c, 3)
    assert codes(got) == ["34000"], got
    c.close()
    st, ends = statements(sp, "ap_cl_del")
    assert len(st) == 1, st
    undone = [e for e in ends if e.get("detail", "").startswith("rolled back")]
    ends = [e for e in ends if e not in undone]
    res = ends[0] if ends else st[0]
    assert res["rows"] == 4, (st, ends)
    assert len(undone) == 1, undone  # its block ended with ROLLBACK
    for marker in ("ap_cl_closed", "ap_cl_commit"):
        st, _ = statements(sp, marker, n=2)
        done = [e for e in st if not e.get("sqlstate")]
        failed = [e for e in st if e.get("sqlstate") == "34000"]
        assert len(done) == 1 and done[0]["rows"] == 2, (marker, st)
        assert done[0]["detail"] == "portal closed before all its rows were fetched", st
        assert len(failed) == 1 and failed[0].get("rows", 0) == 0, (marker, st)


def test_portal_continuations_in_flight_stay_one_statement(spawn_sluice):
    """Executes of one portal kept in flight (a slow row between them) stay one statement; an
    error ending an earlier group does not make a pipelined Execute take over a portal that
    Sync then drops; a failed Bind of the portal, rolled back, does not split it."""
    sp, ep = spawn_sluice("ap-inflight")
    c = ep.raw_login("shop", ALICE)
    H = pgwire.message(b"H")
    simple(c, "BEGIN")
    c.send(P("SELECT g, CASE WHEN g = 2 THEN pg_sleep(1)::text END AS ap_if_slow "
             "FROM generate_series(1, 5) g") + B("p") + E("p", 1) + H + E("p", 1) + H)
    while c.read_msg()[0] != b"s":
        pass
    c.send(E("p", 1) + SYNC)
    got = replies(c)
    assert [t for t, _ in got].count(b"D") == 2, got
    simple(c, "COMMIT")
    # outside a transaction: the first group fails at its end, its portal is dropped
    c.send(P("SELECT g AS ap_if_err FROM generate_series(1, 10) g") + B() + E(max_rows=2) +
           P("SELEC oops") + SYNC + E(max_rows=2) + SYNC)
    assert codes(replies(c, 2)) == ["42601", "34000"]
    # a Bind of the portal that fails inside a savepoint leaves the portal as it was
    simple(c, "BEGIN")
    c.send(P("SELECT g AS ap_if_sp FROM generate_series(1, 10) g") + B("q") + E("q", 2) + SYNC)
    replies(c)
    simple(c, "SAVEPOINT a")
    c.send(B("q", "nosuch") + SYNC)
    assert codes(replies(c)) == ["26000"]
    simple(c, "ROLLBACK TO SAVEPOINT a")
    c.send(E("q", 2) + E("q", 2) + SYNC)
    replies(c)
    simple(c, "COMMIT")
    c.close()
    st, _ = statements(sp, "ap_if_slow")
    assert len(st) == 1 and st[0]["rows"] == 3, st
    assert st[0]["detail"] == "portal closed before all its rows were fetched", st
    st, _ = statements(sp, "ap_if_err", n=2)
    done = [e for e in st if e.get("sqlstate") != "34000"]
    assert len(done) == 1 and done[0]["rows"] == 2, st
    assert len([e for e in st if e.get("sqlstate") == "34000"]) == 1, st
    st, _ = statements(sp, "ap_if_sp")
    assert len(st) == 1 and st[0]["rows"] == 6, st


def test_errors_of_parse_and_bind_and_pipelined_reparse(spawn_sluice):
    """An error of a Parse or Bind is not the next Execute's: that Execute is skipped and says
    so. A re-Parse pipelined in an earlier group that fails (42P05) leaves the old statement,
    and the Execute behind it is recorded as the old statement."""
    sp, ep = spawn_sluice("ap-operr")
    c = ep.raw_login("shop", ALICE)
    c.send(P("SELECT g AS ap_oe_one FROM generate_series(1, 3) g", "s1") + SYNC)
    replies(c)
    c.send(B("", "s1") + P("SELEC bad AS ap_oe_bad", "s2") + E("") + SYNC)
    assert codes(replies(c)) == ["42601"]
    c.send(B("", "s1") + B("px", "nosuch") + E("") + SYNC)
    assert codes(replies(c)) == ["26000"]
    c.send(P("SELECT g AS ap_oe_old FROM generate_series(1, 3) g", "s3") + SYNC +
           P("SELECT g AS ap_oe_new FROM generate_series(1, 5) g", "s3") + SYNC +
           B("", "s3") + E("") + SYNC)
    got = replies(c, 3)
    assert codes(got) == ["42P05"] and [t for t, _ in got].count(b"D") == 3, got
    c.close()
    st, _ = statements(sp, "ap_oe_one", n=2)
    assert len(st) == 2, st
    for e in st:
        assert e.get("rows", 0) == 0 and "sqlstate" not in e, st
        assert e["detail"].startswith("not executed"), st
    old, _ = statements(sp, "ap_oe_old")
    assert len(old) == 1 and old[0]["rows"] == 3, old
    new, _ = statements(sp, "ap_oe_new", timeout=0.5)
    assert new == [], new


def test_describe_errors_suspended_writes_and_reparsed_writes(spawn_sluice):
    """An error answering a Describe is not the next Execute's (it is skipped). A write fetched
    in parts whose group then fails is recorded as rolled back. A write behind a pipelined
    re-Parse that fails is journaled before it runs, as any write."""
    sp, ep = spawn_sluice("ap-describe")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_ds; CREATE TABLE ap_ds (v int)")
    c = ep.raw_login("shop", ALICE)
    c.send(P("SELECT 1 AS ap_ds_one", "s1") + SYNC)
    replies(c)
    c.send(B("", "s1") + pgwire.message(b"D", b"Snosuch\0") + E("") + SYNC)
    assert codes(replies(c)) == ["26000"]
    c.send(P("INSERT INTO ap_ds SELECT g FROM generate_series(1, 5) g RETURNING v AS ap_ds_ret") +
           B("p") + E("p", 2) + P("SELEC") + SYNC)
    assert codes(replies(c)) == ["42601"]
    c.send(P("INSERT INTO ap_ds SELECT 7 WHERE pg_sleep(0.6) IS NOT NULL RETURNING v AS ap_ds_w",
             "s3") + SYNC)
    replies(c)
    c.send(P("SELECT 1 AS ap_ds_other", "s3") + SYNC + B("q", "s3") + E("q") + SYNC)
    time.sleep(0.3)  # the INSERT runs: its event must already be in the store
    during, _ = statements(sp, "ap_ds_w", timeout=0.2)
    got = replies(c, 2)
    assert codes(got) == ["42P05"], got
    c.close()
    one, _ = statements(sp, "ap_ds_one")
    assert len(one) == 1 and one[0]["detail"].startswith("not executed"), one
    assert "sqlstate" not in one[0], one
    ret, ends = statements(sp, "ap_ds_ret")
    assert len(ret) == 1, ret
    failed = [e for e in ends + ret if e.get("sqlstate") == "42601"]
    assert len(failed) == 1 and failed[0]["detail"].startswith("failed after completing"), \
        (ret, ends)
    # its result, with the rows fetched, when the portal went with the group's transaction
    fetched = [e for e in ends + ret if e.get("detail") == "portal closed before all its rows "
               "were fetched"]
    assert len(fetched) == 1 and fetched[0]["rows"] == 2, (ret, ends)
    assert len(during) == 1 and during[0]["class"] == "write", during


def test_skipped_continuation_and_pipelined_write_behind_failed_reparse(spawn_sluice):
    """An Execute of a suspended portal that the server skips (an error earlier in its group)
    leaves the portal's statement suspended, rows and all. A write bound in a pipelined group
    behind a Parse of its name that then fails is still journaled first, and its rollback by a
    later error of its group is recorded."""
    sp, ep = spawn_sluice("ap-skipcont")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_sc; CREATE TABLE ap_sc (v int)")
    c = ep.raw_login("shop", ALICE)
    simple(c, "BEGIN")
    c.send(P("SELECT g AS ap_sc_sel FROM generate_series(1, 3) g") + B("p1") + E("p1", 1) + SYNC)
    replies(c)
    simple(c, "SAVEPOINT x")
    c.send(P("SELECT 1 / (g - 1) FROM generate_series(1, 2) g", "s3") + B("p2", "s3") + E("p2") +
           E("p1", 1) + SYNC)
    assert codes(replies(c)) == ["22012"]
    simple(c, "ROLLBACK TO SAVEPOINT x")
    c.send(E("p1", 1) + SYNC)
    replies(c)
    simple(c, "COMMIT")
    c.send(P("INSERT INTO ap_sc SELECT g FROM generate_series(1, 5) g RETURNING v AS ap_sc_ins",
             "s2") + B("", "s2") + E("") + P("SELECT 1", "s2") + SYNC +
           B("p2", "s2") + E("p2") + P("SELEC") + SYNC)
    got = replies(c, 2)
    assert codes(got) == ["42P05", "42601"], got
    c.close()
    cur = a.cursor()
    cur.execute("SELECT count(*) FROM ap_sc")
    assert cur.fetchone() == (0,)  # both INSERTs rolled back with their groups
    st, _ = statements(sp, "ap_sc_sel")
    assert len(st) == 1 and st[0]["rows"] == 2, st
    assert st[0]["detail"] == "portal closed before all its rows were fetched", st
    ins, ends = statements(sp, "ap_sc_ins", n=2)
    assert len(ins) == 2, ins
    rolled = sorted(e["sqlstate"] for e in ins + ends if e.get("sqlstate") and
                    e["detail"].startswith("failed after completing"))
    assert rolled == ["42601", "42P05"], (ins, ends)


def failed_reparse_behind(ep, table, n, then):
    """A session (raw) where statement s1 reads table (ids 1..n, made here), which then sends
    a re-Parse of s1 as `DELETE ... RETURNING id AS <table>_new` in a group of its own (it
    fails, 42P05: s1 stays the read) and, pipelined behind it, `then`. Returns the admin
    connection and the session."""
    a = numbered_table(ep, table, n)
    c = ep.raw_login("shop", ALICE)
    c.send(P(f"SELECT id AS {table}_old FROM {table} ORDER BY id", "s1") + SYNC)
    replies(c)
    c.send(P(f"DELETE FROM {table} WHERE id > 0 RETURNING id AS {table}_new", "s1") + SYNC + then)
    return a, c


def test_journaled_guess_closed_portal_keeps_both_notes(spawn_sluice):
    """The Execute journaled first as a pipelined re-Parse's write runs the name's earlier read
    instead (the re-Parse fails, 42P05), fetching one row of three, and its portal ends with
    its transaction after its event was written: its statement_end says both that the portal
    was closed early and that another statement than its event names ran."""
    sp, ep = spawn_sluice("ap-guess-both")
    a, c = failed_reparse_behind(ep, "ap_gb", 3, B("p1", "s1") + E("p1", 1) + pgwire.message(b"H"))
    assert codes(replies(c)) == ["42P05"]
    got = [c.read_msg()[0] for _ in range(3)]
    assert got == [b"2", b"D", b"s"], got  # BindComplete, one row, PortalSuspended
    new, ends = statements(sp, "ap_gb_new")
    assert len(new) == 1 and new[0]["rows"] == 0, new  # written before its result came
    c.send(SYNC)  # ends the portal's transaction, and the portal
    replies(c)
    c.close()
    deadline = time.time() + 5
    while not ends and time.time() < deadline:  # results are committed asynchronously
        time.sleep(0.1)
        new, ends = statements(sp, "ap_gb_new")
    assert len(ends) == 1, (new, ends)
    assert ends[0]["detail"] == (
        "portal closed before all its rows were fetched; ran another statement than its "
        "event names: a Parse of its name pipelined before it changed what ran"), ends
    assert ends[0]["rows"] == 1, ends
    cur = a.cursor()
    cur.execute("SELECT count(*) FROM ap_gb")
    assert cur.fetchone() == (3,)


def test_journaled_guess_corrected_by_what_ran(spawn_sluice):
    """A write's text pipelined as a re-Parse of a name in use fails (42P05), and the Execute
    behind it, journaled first as that write, runs the earlier statement of the name (a read):
    its event ends up naming what ran, or its result says that the event's text did not run."""
    sp, ep = spawn_sluice("ap-guess")
    a, c = failed_reparse_behind(ep, "ap_gs", 4, B("", "s1") + E("") + SYNC)
    got = replies(c, 2)
    assert codes(got) == ["42P05"] and [t for t, _ in got].count(b"D") == 4, got
    c.close()
    cur = a.cursor()
    cur.execute("SELECT count(*) FROM ap_gs")
    assert cur.fetchone() == (4,)
    old, _ = statements(sp, "ap_gs_old", timeout=1.0)
    new, ends = statements(sp, "ap_gs_new", timeout=1.0)
    if old:  # folded: the event names what ran
        assert len(old) == 1 and old[0]["rows"] == 4 and new == [], (old, new)
    else:
        assert len(new) == 1 and [e["detail"][:26] for e in ends] == [
            "ran another statement than"], (new, ends)


def test_refused_parse_fails_the_writes_before_it(spawn_sluice):
    """A Parse refused by policy after a write completed in its group ends the group's
    implicit transaction, as the server's own error would: the write is rolled back, and its
    event gets a statement_end saying so (no SQLSTATE: the refusal is sluice's)."""
    sp, ep = spawn_sluice("ap-refused-after")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_rf; CREATE TABLE ap_rf (id int)")
    c = ep.raw_login("shop", BOB)
    c.send(P("INSERT INTO ap_rf SELECT 7 AS ap_rf_first") + B() + E() +
           P("DELETE FROM ap_rf") + B() + E() + SYNC)
    assert codes(replies(c)) == ["42501"]
    c.close()
    cur = a.cursor()
    cur.execute("SELECT count(*) FROM ap_rf")
    assert cur.fetchone() == (0,)
    first, ends = statements(sp, "ap_rf_first")
    assert len(first) == 1 and result_rows(first[0], ends) == 1, (first, ends)
    failed = [e for e in ends if e.get("detail", "").startswith("failed after completing")]
    assert len(failed) == 1 and not failed[0].get("sqlstate"), ends
    dele, _ = statements(sp, "DELETE FROM ap_rf")
    assert [(e["decision"], e.get("rule")) for e in dele] == [
        ("deny", "delete_without_where")], dele


def test_pipelined_continuations_at_the_end_are_one_event(spawn_sluice):
    """Two Executes of one portal, pipelined, and the session ends before any reply: one
    statement, one event, saying it was interrupted."""
    sp, ep = spawn_sluice("ap-cont-end")
    numbered_table(ep, "ap_ce", 10)
    c = ep.raw_login("shop", ALICE)
    c.send(P("SELECT id AS ap_twice FROM ap_ce") + B() + E("", 2) + E("", 2))
    time.sleep(0.3)
    c.close()
    time.sleep(0.3)
    st, _ = statements(sp, "ap_twice", n=2, timeout=1.0)
    assert len(st) == 1 and st[0].get("detail", "").startswith("interrupted"), st


def test_malformed_statements_are_refused_events(spawn_sluice):
    """A Query or Parse message whose text has no end names no statement: each is refused
    with PostgreSQL's own 08P01 and recorded as a deny event (rule protocol) naming the kind of
    message, never its bytes. An Execute without its row count is the server's to refuse,
    with no Describe of sluice's in front of it (that answered 34000 in its place)."""
    sp, ep = spawn_sluice("ap-malformed")
    c = ep.raw_login("shop", ALICE)
    c.send(pgwire.message(b"Q", b"SELECT 1 AS ap_malformed_q"))
    assert codes(replies(c)) == ["08P01"]
    c.send(pgwire.message(b"P", b"m\0SELECT 1 AS ap_malformed_p") + SYNC)
    assert codes(replies(c)) == ["08P01"]
    c.send(P("SELECT 1", "ap_m1") + pgwire.message(b"E", b"p\0") + SYNC)
    assert codes(replies(c)) == ["08P01"]
    assert c.query("SELECT 1 AS ap_after_bad") == [["1"]]
    c.close()
    statements(sp, "ap_after_bad")
    evs = export_events(sp)
    bad = [e for e in evs if e["kind"] == "statement" and "malformed" in e.get("statement", "")]
    assert [(e["statement"], e["decision"], e.get("rule")) for e in bad] == [
        ("(malformed Query message)", "deny", "protocol"),
        ("(malformed Parse message)", "deny", "protocol")], bad
    assert not [e for e in evs if "ap_malformed_q" in json.dumps(e)
                or "ap_malformed_p" in json.dumps(e)]


def test_simple_query_ends_a_suspended_unnamed_portal(spawn_sluice):
    """A simple Query drops the unnamed portal, inside a transaction block too: a statement
    suspended there ends with what was fetched (portal closed), and an Execute of it after
    the Query fails on its own (34000), as after a Close."""
    sp, ep = spawn_sluice("ap-query-drops")
    numbered_table(ep, "ap_qd", 10)
    c = ep.raw_login("shop", ALICE)
    simple(c, "BEGIN")
    c.send(P("SELECT id AS ap_qd_col FROM ap_qd") + B() + E("", max_rows=2) + SYNC)
    assert [t for t, _ in replies(c)].count(b"D") == 2
    simple(c, "SELECT 1 AS ap_qd_other")
    c.send(E("", max_rows=2) + SYNC)
    assert codes(replies(c)) == ["34000"]
    simple(c, "ROLLBACK")
    c.close()
    st, _ = statements(sp, "ap_qd_col", n=2)
    done = [e for e in st if not e.get("sqlstate")]
    failed = [e for e in st if e.get("sqlstate") == "34000"]
    assert len(done) == 1 and done[0]["rows"] == 2, st
    assert done[0]["detail"] == "portal closed before all its rows were fetched", st
    assert len(failed) == 1 and failed[0].get("rows", 0) == 0, st


def test_names_of_sluices_stand_ins_are_reserved(spawn_sluice):
    """A client may not bind a portal or prepare a statement under the names sluice's own
    stand-ins and grant guard use upstream: refused (42501, rule protocol), and recorded."""
    sp, ep = spawn_sluice("ap-reserved")
    c = ep.raw_login("shop", ALICE)
    for msgs in (P("SELECT 1 AS ap_rsv_a") + B("sluice_blocked_by_policy") + SYNC,
                 P("SELECT 2 AS ap_rsv_b", "sluice_grant") + SYNC,
                 P("SELECT 3 AS ap_rsv_c", "sluice_blocked_by_policy") + SYNC):
        c.send(msgs)
        got = replies(c)
        assert codes(got) == ["42501"], got
        assert "reserved by sluice" in pgwire.parse_fields(
            [b for t, b in got if t == b"E"][0])["M"], got
    assert c.query("SELECT 4 AS ap_rsv_after") == [["4"]]
    c.close()
    statements(sp, "ap_rsv_after")
    for marker in ("ap_rsv_a", "ap_rsv_b", "ap_rsv_c"):
        st, _ = statements(sp, marker)
        refused = [e for e in st if e["decision"] == "deny"]
        assert len(refused) == 1 and refused[0]["rule"] == "protocol", (marker, st)


def test_malformed_query_in_a_block_still_rolls_its_writes_back(spawn_sluice):
    """A refused statement never ran: one sent just before the session ends does not hide that
    the open block's writes were rolled back."""
    sp, ep = spawn_sluice("ap-malformed-end")
    a = admin(ep)
    a.cursor().execute("DROP TABLE IF EXISTS ap_me; CREATE TABLE ap_me (id int)")
    c = ep.raw_login("shop", ALICE)
    simple(c, "BEGIN")
    simple(c, "INSERT INTO ap_me SELECT 1 AS ap_me_ins")
    c.send(pgwire.message(b"Q", b"SELECT 1"))  # no end to its text
    c.close()
    st, ends = statements(sp, "ap_me_ins")
    deadline = time.time() + 5
    while not any(e.get("detail", "").startswith("rolled back") for e in ends):
        assert time.time() < deadline, (st, ends)
        time.sleep(0.2)
        st, ends = statements(sp, "ap_me_ins")
    assert [e["detail"] for e in ends if e.get("detail", "").startswith("rolled back")] == [
        "rolled back: the session ended inside its transaction"], ends


def test_bind_of_a_name_sql_prepared_again_is_not_recorded_as_the_old_statement(spawn_sluice):
    """A name Parsed, then freed by DEALLOCATE and made again by SQL PREPARE: a Bind of it
    runs the new statement, so its event must not carry the old one's text (it did: a write
    was recorded as the read Parsed before). bob (human) may run it; it is recorded as a
    statement sluice did not see prepared."""
    sp, ep = spawn_sluice("ap-sqlprep")
    c = ep.raw_login("shop", BOB)
    try:
        c.send(P("SELECT 'ap_old_text' AS t", "ap_sp") + SYNC)
        replies(c)
        simple(c, "DEALLOCATE ap_sp; PREPARE ap_sp AS SELECT 'ap_new_text' AS t")
        c.send(B("", "ap_sp") + E() + SYNC)
        got = replies(c)
        assert b"ap_new_text" in b"".join(b for t, b in got if t == b"D"), got
    finally:
        c.close()
    deadline = time.time() + 5
    while True:
        evs = [e for e in export_events(sp) if e["kind"] == "statement"]
        ran = [e for e in evs if e.get("rows") == 1 and e.get("statement") in
               ("(prepared statement)", "SELECT $1 AS t")]
        if ran or time.time() > deadline:
            break
        time.sleep(0.1)
    assert [e["statement"] for e in ran] == ["(prepared statement)"], [(e["statement"], e.get("rows")) for e in evs]
