"""test_policy.py: guardrails and rules enforced over the wire.

bob@corp.com (human) and copilot (agent) run under the built-in guardrails; copilot also
under the harness rule agents-read-only. Refused statements get 42501 naming the rule, the
server never runs them, and the session stays usable, with PostgreSQL's own transaction and
extended-protocol semantics (failed transaction until ROLLBACK, skip to Sync).
"""

import struct
import subprocess

import psycopg
import psycopg2
import pytest

import pgwire

BOB = "bob@corp.com"


@pytest.fixture
def scratch(sluice, sluice_only):
    """A table bob may write to, created through sluice by alice (who may DDL)."""
    admin = sluice.connect()
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS policy_scratch (id int, note text)")
    cur.execute("TRUNCATE policy_scratch")
    return admin  # not dropped here: the test's own connections close after this fixture


def _count(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0]


@pytest.mark.parametrize("sql,rule", [
    ("DROP TABLE orders", "drop"),
    ("TRUNCATE orders", "truncate"),
    ("DELETE FROM orders", "delete_without_where"),
    ("delete /* hidden */ from ORDERS where 1 = 1", "delete_without_where"),
    ("UPDATE customers SET email = 'x'", "update_without_where"),
    ("UPDATE customers SET email = 'x' WHERE true", "update_without_where"),
    ("WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d", "delete_without_where"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "delete_without_where"),
    ("PREPARE p AS DELETE FROM orders", "delete_without_where"),
    ("COPY (SELECT 1) TO PROGRAM 'id'", "copy_program"),
    ("ALTER SYSTEM SET work_mem = '1GB'", "alter_system"),
    ("SELECT pg_read_file('/etc/passwd')", "file_access"),
    ("SET ROLE postgres", "role_escalation"),
    ("UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'", "role_escalation"),
    ("ALTER ROLE CURRENT_USER SET role = 'postgres'", "role_escalation"),
    ("SELECT 1; DROP TABLE orders", "drop"),
    # every target row matches each customer with id 1: no row of orders is narrowed
    ("MERGE INTO orders o USING customers c ON c.id = 1 WHEN MATCHED THEN DELETE",
     "delete_without_where"),
    # the subquery's own o, not the target
    ("DELETE FROM orders AS o WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id > 0)",
     "delete_without_where"),
    # every row conflicts with itself and is rewritten
    ("INSERT INTO orders SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET status = 'x'",
     "delete_without_where"),
])
def test_guardrails_refuse_and_session_survives(sluice, sluice_only, sql, rule):
    conn = sluice.connect(user=BOB)
    conn.autocommit = True
    cur = conn.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(sql)
    assert e.value.pgcode == "42501"
    assert e.value.pgerror.startswith(f'ERROR:  sluice: blocked by rule "{rule}"'), e.value.pgerror
    # The session is usable and nothing happened.
    assert _count(conn, "SELECT count(*) FROM orders") > 0
    assert _count(conn, "SELECT count(*) FROM customers WHERE email = 'x'") == 0


def test_multi_statement_string_refused_whole(sluice, scratch):
    conn = sluice.connect(user=BOB)
    conn.autocommit = True
    with pytest.raises(psycopg2.Error) as e:
        conn.cursor().execute("INSERT INTO policy_scratch VALUES (1, 'a'); DELETE FROM orders")
    assert e.value.pgcode == "42501"
    assert _count(conn, "SELECT count(*) FROM policy_scratch") == 0


def test_refusal_inside_transaction_fails_it(sluice, scratch):
    conn = sluice.connect(user=BOB)  # psycopg2 opens a transaction
    cur = conn.cursor()
    cur.execute("INSERT INTO policy_scratch VALUES (1, 'kept only if committed')")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("DELETE FROM orders")
    assert e.value.pgcode == "42501"
    with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
        cur.execute("SELECT 1")
    conn.commit()  # as in PostgreSQL, COMMIT of a failed transaction rolls back
    assert _count(conn, "SELECT count(*) FROM policy_scratch") == 0
    cur.execute("INSERT INTO policy_scratch VALUES (2, 'after')")
    conn.commit()
    assert _count(conn, "SELECT count(*) FROM policy_scratch") == 1


def test_extended_protocol_prepared_and_pipeline(sluice, scratch):
    p = sluice.params(user=BOB)
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            conn.execute("DELETE FROM orders WHERE %s", (True,), prepare=True)
        assert 'blocked by rule "delete_without_where"' in str(e.value)
        # Same statement shape with a harmless parameter is fine, prepared server-side.
        for i in range(7):
            conn.execute("INSERT INTO policy_scratch VALUES (%s, %s)", (i, "x"), prepare=True)
        assert conn.execute("SELECT count(*) FROM policy_scratch").fetchone()[0] == 7
        # Pipeline: the refused statement errors, what follows in its sync group is skipped,
        # the next group runs.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.pipeline():
                conn.execute("INSERT INTO policy_scratch VALUES (100, 'a')")
                conn.execute("TRUNCATE orders")
                conn.execute("INSERT INTO policy_scratch VALUES (101, 'b')")
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
        assert conn.execute("SELECT 42").fetchone()[0] == 42


def test_raw_extended_skip_until_sync(sluice, sluice_only):
    """Parse of a refused statement: ErrorResponse, Bind/Execute skipped, ReadyForQuery."""
    c = sluice.raw_login("shop", BOB)
    msg = pgwire.message
    c.send(msg(b"P", b"\0DROP TABLE orders\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0") +
           msg(b"E", b"\0\0\0\0\0") + msg(b"S", b""))
    seen = []
    while True:
        t, payload = c.read_msg()
        seen.append(t)
        if t == b"E":
            f = pgwire.parse_fields(payload)
            assert f["C"] == "42501" and 'rule "drop"' in f["M"]
        if t == b"Z":
            assert payload == b"I"
            break
    assert seen == [b"E", b"Z"]
    assert c.query("SELECT count(*) FROM orders")[0][0] != "0"
    c.close()


def test_agent_rules_and_unjudgeable(sluice, scratch):
    agent = sluice.connect(user="copilot")
    agent.autocommit = True
    assert _count(agent, "SELECT count(*) FROM orders") > 0
    with pytest.raises(psycopg2.Error) as e:
        agent.cursor().execute("INSERT INTO policy_scratch VALUES (1, 'agent')")
    assert e.value.pgcode == "42501" and 'rule "agents-read-only"' in e.value.pgerror
    assert "agents may only read" in e.value.pgerror
    # an exclusive lock stops every other session's reads and writes: a write, as PostgreSQL's
    # privileges have it; ACCESS SHARE (what a SELECT takes) is not
    agent.autocommit = False
    with pytest.raises(psycopg2.Error) as e:
        agent.cursor().execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    assert e.value.pgcode == "42501" and 'rule "agents-read-only"' in e.value.pgerror
    agent.rollback()
    agent.cursor().execute("LOCK TABLE orders IN ACCESS SHARE MODE")
    agent.rollback()
    agent.autocommit = True
    with pytest.raises(psycopg2.Error) as e:
        agent.cursor().execute("DO $$ BEGIN PERFORM 1; END $$")
    assert 'rule "unjudgeable"' in e.value.pgerror
    human = sluice.connect(user=BOB)
    human.autocommit = True
    human.cursor().execute("DO $$ BEGIN PERFORM 1; END $$")  # humans may, by default


def test_psql_reports_rule_and_continues(sluice, sluice_only):
    r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=0", "-c", "DROP TABLE customers",
                        "-c", "SELECT 'still here'"],
                       env=sluice.env(user=BOB), capture_output=True, text=True, timeout=30)
    assert 'sluice: blocked by rule "drop": DROP of customers' in r.stderr
    assert "HINT:" in r.stderr
    assert "still here" in r.stdout


def test_limit_rows_truncates_with_notice(sluice, sluice_only):
    agent = sluice.connect(user="copilot")
    agent.autocommit = True
    cur = agent.cursor()
    cur.execute("SELECT i, repeat('x', 100000) FROM generate_series(1, 50) i")
    rows = cur.fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert any('limited to 5 rows by rule "agents-row-limit"; 45 more rows' in n
               for n in agent.notices), agent.notices
    # Under the limit nothing changes, and the session goes on normally.
    cur.execute("SELECT generate_series(1, 3)")
    assert len(cur.fetchall()) == 3
    # Extended protocol too.
    p = sluice.params(user="copilot")
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True) as conn:
        got = conn.execute("SELECT generate_series(1, %s)", (40,), prepare=True).fetchall()
        assert len(got) == 5
        assert conn.execute("SELECT 7").fetchone()[0] == 7


def test_node_postgres_sees_refusals(sluice, sluice_only):
    from test_node import NODE_DIR, ensure_node_modules
    ensure_node_modules()
    r = subprocess.run(["node", "policy.js"], cwd=NODE_DIR, env=sluice.env(user=BOB),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_jdbc_sees_refusals(sluice, sluice_only, tmp_path):
    import os
    jar = "/usr/share/java/postgresql.jar"
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java", "SluicePolicy.java")
    r = subprocess.run(["javac", "-cp", jar, "-d", str(tmp_path), src], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    p = sluice.params(user=BOB)
    url = f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?sslmode=disable"
    r = subprocess.run(["java", "-cp", f"{tmp_path}:{jar}", "SluicePolicy", url, p["user"],
                        p["password"]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_sees_refusals(sluice, sluice_only, tmp_path, mode):
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1;\nDELETE FROM orders;\n")
    r = subprocess.run(["pgbench", "-n", "-t", "3", "-M", mode, "-f", str(bad)],
                       env=sluice.env(user=BOB), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert 'blocked by rule "delete_without_where"' in r.stderr, r.stderr
    good = tmp_path / "good.sql"
    good.write_text("\\set id random(1, 10)\nSELECT count(*) FROM orders WHERE customer_id = :id;\n")
    r = subprocess.run(["pgbench", "-n", "-t", "50", "-c", "2", "-M", mode, "-f", str(good)],
                       env=sluice.env(user=BOB), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "number of failed transactions: 0" in r.stdout


def test_fast_path_function_call_is_refused(sluice, sluice_only):
    """FunctionCall names a function by OID, which sluice cannot judge: refused while the
    function guardrails apply (they do for everyone by default), with PostgreSQL's reply shape."""
    c = sluice.raw_login("shop", BOB)
    oid_pg_backend_pid = 2026
    # function OID, no argument formats, no arguments, text result
    c.send(pgwire.message(b"F", struct.pack("!Ihhh", oid_pg_backend_pid, 0, 0, 0)))
    t, payload = c.read_msg()
    assert t == b"E", t
    f = pgwire.parse_fields(payload)
    assert f["C"] == "42501" and "fast-path function call" in f["M"], f
    t, payload = c.read_msg()
    assert t == b"Z"
    assert c.query("SELECT 'still here'")[0][0] == "still here"
    c.close()


def _fetch_in_parts(c, first, n):
    """first (ending in a Bind of portal cur), then Executes of cur for n rows, each with its
    own Sync, until cur completes: every reply."""
    from test_audit_protocol import E, SYNC, replies
    c.send(first + E("cur", n) + SYNC)
    got = replies(c)
    for _ in range(20):
        if any(t == b"C" for t, _ in got):
            break
        c.send(E("cur", n) + SYNC)
        got += replies(c)
    return got


def test_limit_rows_holds_across_a_portal_fetched_in_parts(sluice, sluice_only):
    """A portal fetched in parts across Syncs (pgJDBC's fetchSize inside a transaction) is one
    result: the rule's limit counts its rows over every part, not per part, and the notice
    comes with its end. A portal bound again starts a new count."""
    from test_audit_protocol import B, P, simple
    c = sluice.raw_login("shop", "copilot")
    try:
        simple(c, "BEGIN")
        close = pgwire.message(b"C", b"Pcur\0")
        for first in (True, False):  # the second time, the portal is closed and bound again
            got = _fetch_in_parts(c, (b"" if first else close) +
                                  P("SELECT g FROM generate_series(1, 20) g") + B("cur"), 3)
            assert [t for t, _ in got].count(b"D") == 5, got
            notices = [pgwire.parse_fields(b).get("M", "") for t, b in got if t == b"N"]
            assert any("limited to 5 rows" in n for n in notices), got
        simple(c, "COMMIT")
    finally:
        c.close()


def test_bind_of_a_statement_sluice_did_not_judge(sluice, sluice_only):
    """A protocol Bind of a statement made by SQL PREPARE runs it again with any parameters
    (what an EXECUTE does, which is unjudgeable): an agent got all 20 rows past its limit of
    5. A name Parsed, then freed by DEALLOCATE and PREPAREd again by SQL, ran the new statement
    under the old one's judgement. Both are refused for an agent; names sluice saw Parsed
    still bind, and bob (human) may bind either, as he may EXECUTE."""
    from test_audit_protocol import B, E, P, SYNC, replies, simple

    def run(c, msgs):
        c.send(msgs + SYNC)
        got = replies(c)
        return ([t for t, _ in got].count(b"D"),
                [pgwire.parse_fields(b) for t, b in got if t == b"E"])

    c = sluice.raw_login("shop", "copilot")
    try:
        assert not codes_of(simple(c, "PREPARE pol_sqlprep AS "
                                      "SELECT g FROM generate_series(1, 20) g"))
        rows, errs = run(c, B("", "pol_sqlprep") + E())
        assert rows == 0 and errs and "unjudgeable" in errs[0]["M"], (rows, errs)
        assert not run(c, P("SELECT g FROM generate_series(1, 2) g", "pol_reused"))[1]
        assert run(c, B("", "pol_reused") + E()) == (2, [])
        assert not codes_of(simple(c, "DEALLOCATE pol_reused; PREPARE pol_reused AS "
                                      "SELECT g FROM generate_series(1, 20) g"))
        rows, errs = run(c, B("", "pol_reused") + E())
        assert rows == 0 and errs and "unjudgeable" in errs[0]["M"], (rows, errs)
        # Parsed again by the protocol (after a Close): its own again
        assert not run(c, pgwire.message(b"C", b"Spol_reused\0") +
                       P("SELECT g FROM generate_series(1, 3) g", "pol_reused"))[1]
        assert run(c, B("", "pol_reused") + E()) == (3, [])
        # after a SQL PREPARE, a Bind may not count on a Parse of an earlier group still
        # unanswered (if it fails, 42P05, the name keeps the SQL statement)
        c.send(P("SELECT 4", "pol_pipe") + SYNC + B("", "pol_pipe") + E() + SYNC)
        got = replies(c, 2)
        assert [t for t, _ in got].count(b"D") == 0 and b"E" in [t for t, _ in got], got
    finally:
        c.close()
    c = sluice.raw_login("shop", "copilot")
    try:  # in a session without SQL PREPARE it may
        c.send(P("SELECT 4", "pol_pipe") + SYNC + B("", "pol_pipe") + E() + SYNC)
        got = replies(c, 2)
        assert [t for t, _ in got].count(b"D") == 1 and b"E" not in [t for t, _ in got], got
    finally:
        c.close()
    b = sluice.raw_login("shop", BOB)
    try:
        simple(b, "PREPARE pol_sqlprep_h AS SELECT 7")
        assert run(b, B("", "pol_sqlprep_h") + E()) == (1, [])
    finally:
        b.close()


def test_prepare_or_deallocate_sent_in_a_parse_changes_names_when_it_runs(sluice, sluice_only):
    """A Parse of `DEALLOCATE s1` or `PREPARE s1 AS ...` runs at its Execute, any time later:
    names forgotten when it was Parsed came back with a later Parse of s1, and the PREPARE run
    afterwards put its statement under the name sluice had judged (an agent read 20 rows past
    its limit of 5). Its Bind makes every name unknown again."""
    from test_audit_protocol import B, E, P, SYNC, replies
    c = sluice.raw_login("shop", "copilot")
    try:
        c.send(P("DEALLOCATE pol_s1", "pol_d") +
               P("PREPARE pol_s1 AS SELECT g FROM generate_series(1, 20) g", "pol_p") + SYNC)
        assert not codes_of(replies(c))
        c.send(P("SELECT 1", "pol_s1") + SYNC)
        assert not codes_of(replies(c))
        c.send(B("", "pol_d") + E() + B("", "pol_p") + E() + SYNC)
        assert not codes_of(replies(c))
        c.send(B("", "pol_s1") + E() + SYNC)
        got = replies(c)
        rows = [t for t, _ in got].count(b"D")
        errs = [pgwire.parse_fields(b) for t, b in got if t == b"E"]
        assert rows == 0 and errs and "unjudgeable" in errs[0]["M"], (rows, errs)
    finally:
        c.close()


def test_names_over_63_bytes_are_refused(sluice, sluice_only):
    """PostgreSQL tells statement and portal names apart by their first 63 bytes only: two
    longer names were one statement to the server and two to sluice (a Close of one, then a
    Parse of the other, ran the second statement under the first one's judgement)."""
    from test_audit_protocol import B, E, P, SYNC, replies
    long = "n" * 63
    c = sluice.raw_login("shop", "copilot")
    try:
        for msgs in (P("SELECT 1", long + "1"), B(long + "x", ""),
                     pgwire.message(b"C", b"S" + (long + "2").encode() + b"\0"),
                     E(long + "p")):
            c.send(msgs + SYNC)
            got = codes_of(replies(c))
            assert got == ["42622"], (msgs[:1], got)
        c.send(P("SELECT 2", long) + SYNC)  # 63 bytes: as PostgreSQL takes it
        assert not codes_of(replies(c))
    finally:
        c.close()


def test_execute_of_a_sql_cursor_is_unjudged(sluice, sluice_only):
    """A cursor of SQL DECLARE is a portal the protocol can Execute: its query was judged once
    (limit_rows applies to each FETCH, a statement of its own), but an Execute of it fetched
    every row past the agent's limit of 5. It is refused for an agent; FETCH still works."""
    from test_audit_protocol import E, SYNC, replies, simple
    c = sluice.raw_login("shop", "copilot")
    try:
        assert not codes_of(simple(c, "BEGIN"))
        assert not codes_of(simple(c, "DECLARE pol_cur CURSOR FOR "
                                      "SELECT g FROM generate_series(1, 20) g"))
        c.send(E("pol_cur") + SYNC)
        got = replies(c)
        errs = [pgwire.parse_fields(b) for t, b in got if t == b"E"]
        assert [t for t, _ in got].count(b"D") == 0 and errs, got
        assert "unjudgeable" in errs[0]["M"], errs
        simple(c, "ROLLBACK")
        assert not codes_of(simple(c, "BEGIN"))
        simple(c, "DECLARE pol_cur CURSOR FOR SELECT g FROM generate_series(1, 20) g")
        got = simple(c, "FETCH 100 FROM pol_cur")
        assert [t for t, _ in got].count(b"D") == 5, got
        simple(c, "ROLLBACK")
    finally:
        c.close()


def codes_of(msgs):
    return [pgwire.parse_fields(b)["C"] for t, b in msgs if t == b"E"]


def test_mask_rule_holds_across_a_portal_fetched_in_parts(spawn_sluice):
    """A rule's `mask` action (here for etl, whose results are otherwise raw) masks every part
    of a portal fetched across Syncs, not only the part in its Bind's group."""
    from test_audit_protocol import B, P, simple
    sp, ep = spawn_sluice("mask-parts", extra_rules=[
        "    - { name: etl-mask-cap, match: { identity: etl, tables: [pol_mask_cap] },"
        " action: mask }"])
    a = psycopg2.connect(**ep.params(user="alice@corp.com"))
    a.autocommit = True
    a.cursor().execute("DROP TABLE IF EXISTS pol_mask_cap; CREATE TABLE pol_mask_cap AS "
                       "SELECT g AS id, 'pat' || g || '@example.com' AS contact "
                       "FROM generate_series(1, 7) g")
    a.close()
    c = ep.raw_login("shop", "etl")
    try:
        simple(c, "BEGIN")
        got = _fetch_in_parts(c, P("SELECT id, contact FROM pol_mask_cap ORDER BY id") +
                              B("cur"), 2)
        rows = [b for t, b in got if t == b"D"]
        assert len(rows) == 7, got
        assert not [r for r in rows if b"pat" in r] and all(b"***@" in r for r in rows), rows
        simple(c, "COMMIT")
    finally:
        c.close()


def test_limit_rows_holds_for_each_pipelined_statement(sluice, sluice_only):
    p = sluice.params(user="copilot")
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True) as conn:
        with conn.pipeline():
            c1 = conn.execute("SELECT generate_series(1, 50)")
            c2 = conn.execute("SELECT generate_series(1, 30)")
            c3 = conn.execute("SELECT 1")
        assert len(c1.fetchall()) == 5
        assert len(c2.fetchall()) == 5
        assert c3.fetchall() == [(1,)]


# ---------------------------------------------------------------- how the server reads text


def test_text_settings_sluice_cannot_follow_are_unjudgeable(sluice, sluice_only, scratch):
    """sluice reads statement text as PostgreSQL's defaults do. With standard_conforming_strings
    off, `SELECT '\\' ; DELETE ...; -- '` is one string literal to sluice and two statements to
    the server; a client encoding such as SJIS hides a backslash inside a character. So a
    statement that sets either is unjudgeable (refused for agents), and a session that has one
    (a startup option, a role's default) gets every statement judged unjudgeable."""
    cur = scratch.cursor()
    cur.execute("INSERT INTO policy_scratch VALUES (1, 'keep')")
    agent = sluice.connect(user="copilot")
    agent.autocommit = True
    for sql in ("SET standard_conforming_strings = off",
                "SELECT set_config('standard_conforming_strings', 'off', false)",
                "SET client_encoding = 'SJIS'", "SET NAMES 'big5'"):
        with pytest.raises(psycopg2.Error) as ei:
            agent.cursor().execute(sql)
        assert ei.value.pgcode == "42501" and "unjudgeable" in str(ei.value), (sql, ei.value)
    assert _count(agent, "SHOW standard_conforming_strings") == "on"
    for opts in ("-c standard_conforming_strings=off", "-c client_encoding=SJIS"):
        c = sluice.connect(user="copilot", options=opts)
        c.autocommit = True
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute("SELECT '\\' , ' ; DELETE FROM policy_scratch; -- '")
        assert ei.value.pgcode == "42501" and "reads statement text" in str(ei.value), ei.value
        with pytest.raises(psycopg2.Error):
            c.cursor().execute("SELECT 1")
        c.close()
    assert _count(scratch, "SELECT count(*) FROM policy_scratch") == 1
    # a human may (DO blocks are allowed to humans too): judged unjudgeable, allowed
    bob = sluice.connect(user="bob@corp.com", options="-c standard_conforming_strings=off")
    bob.autocommit = True
    assert _count(bob, "SELECT 1") == 1


def test_startup_role_is_role_escalation(sluice, sluice_only):
    """`role` or `session_authorization` in the startup parameters (or as -c in options) is
    SET ROLE for the whole session: refused by the role_escalation guardrail."""
    for kw in (dict(options="-c role=app_md5"), dict(options="--role=app_md5"),
               dict(options="-c session_authorization=app_md5"),
               dict(options="-ec role=app_md5"), dict(options="-e-role=app_md5"),
               dict(options="-e -c ROLE=app_md5")):
        with pytest.raises(psycopg2.OperationalError) as ei:
            sluice.connect(user="copilot", **kw)
        assert "role_escalation" in str(ei.value), (kw, ei.value)
    c = sluice.connect(user="copilot", options="-c search_path=public")
    assert _count(c, "SELECT 1") == 1


def test_parameter_status_is_masked(sluice, sluice_only):
    """A masked identity can make the server echo any value it reads in a ParameterStatus
    (set_config('application_name', ...)): the value is masked there too."""
    bob = sluice.connect(user="bob@corp.com")
    bob.autocommit = True
    cur = bob.cursor()
    cur.execute("SELECT set_config('application_name', 'pat.param@example.com', false) IS NULL")
    assert bob.get_parameter_status("application_name") != "pat.param@example.com"
    assert "@example.com" in bob.get_parameter_status("application_name")


def _rows(c, msgs):
    """Send msgs (one group, ending in Sync); the DataRows and error codes of its replies."""
    from test_audit_protocol import codes, replies
    c.send(msgs)
    got = replies(c)
    return [t for t, _ in got].count(b"D"), codes(got)


def test_portal_limit_follows_the_server_not_the_messages(sluice, sluice_only):
    """A portal's count changes only when the server binds or closes it: a Close the server
    skipped (an error earlier in its group), or a Bind it refused (the name is in use), leaves
    the portal and its count as they were, also after ROLLBACK TO SAVEPOINT."""
    from test_audit_protocol import B, E, P, SYNC, simple
    c = sluice.raw_login("shop", "copilot")
    close = pgwire.message(b"C", b"Pcur\0")
    try:
        simple(c, "BEGIN")
        assert _rows(c, P("SELECT generate_series(1, 50)", "s1") + B("cur", "s1") +
                     E("cur", 3) + SYNC) == (3, [])
        simple(c, "SAVEPOINT sp")
        assert _rows(c, E("") + close + SYNC) == (0, ["34000"])  # the Close is skipped
        simple(c, "ROLLBACK TO SAVEPOINT sp")
        assert _rows(c, E("cur", 1) + SYNC) == (1, [])
        simple(c, "SAVEPOINT sp")
        assert _rows(c, B("cur", "s1") + SYNC) == (0, ["42P03"])  # the portal exists
        simple(c, "ROLLBACK TO SAVEPOINT sp")
        assert _rows(c, E("cur", 0) + SYNC)[0] == 1  # 5 in all
        simple(c, "ROLLBACK")
    finally:
        c.close()


def test_limit_kept_when_a_reparse_fails_behind_another_parse(sluice, sluice_only):
    """Replies are matched to the Parses in order: a Parse with nothing to keep, then the Parse
    of a limited statement, then a Parse of the same name that the server refuses (42P05):
    the name keeps its limit."""
    from test_audit_protocol import B, E, P, SYNC
    c = sluice.raw_login("shop", "copilot")
    try:
        n, errs = _rows(c, P("SET search_path = public", "a") +
                        P("SELECT generate_series(1, 50)", "L") +
                        P("SET search_path = public", "L") + SYNC)
        assert errs == ["42P05"], errs
        assert _rows(c, B("", "L") + E("") + SYNC) == (5, [])
    finally:
        c.close()


def test_portal_limit_without_audit_or_masking(spawn_sluice):
    """With the audit and masking off, results still end where they should (PortalSuspended,
    EmptyQueryResponse) and every Execute counts, so each portal's rows count against its own
    limit."""
    from test_audit_protocol import B, E, P, SYNC, simple
    sp, ep = spawn_sluice("limit-plain", extra_yaml="audit: { enabled: false }\n"
                                                    "masking: { enabled: false }")
    c = ep.raw_login("shop", "copilot")
    try:
        simple(c, "BEGIN")
        _rows(c, P("SELECT generate_series(1, 50)", "s1") + P("", "e") + SYNC)
        assert _rows(c, B("b", "s1") + SYNC) == (0, [])
        total = 0
        for _ in range(5):  # the unnamed portal: 1 row each time; b: 5 rows in all
            n, errs = _rows(c, B("", "s1") + E("", 1) + E("b", 3) + SYNC)
            assert not errs, errs
            total += n
        assert total == 5 + 5, total
        total = 0
        for _ in range(3):  # an empty query's result ends too
            n, errs = _rows(c, B("", "e") + E("") + E("b", 3) + SYNC)
            total += n
        assert total == 0, total
        simple(c, "ROLLBACK")
    finally:
        c.close()
