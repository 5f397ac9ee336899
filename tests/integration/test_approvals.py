"""test_approvals.py: human approval of statements over the wire (issue 6).

A sluice instance of this module's own (policy: agents' writes need review, bob's UPDATEs wait
for a human, carol's writes need review; approvers are the group `dba`; Slack and a webhook
notifier point at a local HTTP receiver run by the test) is driven by psycopg2, psql and
node-postgres:

- defer (agents): 42501 at once with the request id and the HINT; approval through the CLI,
  the admin API or a signed Slack callback leaves a grant: the same fingerprint with other
  literals runs, another fingerprint asks again, uses run out, a grant expires;
- wait (bob): the client gets a NOTICE and blocks; approval runs the statement (the row changes
  upstream), denial gives 42501 naming the approver, a client that disconnects cancels its
  request; a second instance with `approvals.timeout: 2s` shows expiry;
- the admin API refuses unauthenticated callers (401), non-approvers and self-approval (403);
- Slack: the webhook message carries Approve/Deny buttons with the request id; forged or stale
  signatures get 401; the generic webhook's X-Sluice-Signature is verified here.
"""

import hashlib
import hmac
import io
import http.server
import json
import os
import queue
import re
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2

import pgwire
import pytest

import conftest
from conftest import Endpoint, SluiceConfig, SluiceProcess, make_identities, _state
from test_audit import end_of, export_events

BOB = "bob@corp.com"
DBA = "dba@corp.com"
CAROL = "carol@corp.com"
EXTRA_IDS = {
    DBA: dict(kind="human", groups=["dba"], token=False),
    CAROL: dict(kind="human", groups=["dba", "writers"], token=False),
    "copilot2": dict(kind="agent", groups=["ai"], token=True),
}
RULES = [
    "    - { name: agents-writes-need-review, match: { kind: agent, class: [write] }, action: review,",
    "        reason: writes by agents need review }",
    "    - { name: bob-updates-wait, match: { identity: bob@corp.com, command: [UPDATE] },",
    "        action: review, mode: wait }",
    "    - { name: carol-writes-review, match: { identity: carol@corp.com, class: [write] },",
    "        action: review, mode: defer }",
]
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
REQ_RE = re.compile(r"request (req_[A-Za-z0-9]+)")
SLACK_SECRET = "slack-signing-" + os.urandom(8).hex()
HOOK_SECRET = "hook-secret-" + os.urandom(8).hex()

pytestmark = pytest.mark.skipif(conftest.DIRECT, reason="approvals are sluice behaviour")


class RulesConfig(SluiceConfig):
    """The harness config with this module's rules first in policy.rules."""

    extra_rules = []

    def text(self):
        lines = super().text().split("\n")
        i = lines.index("  rules:")
        return "\n".join(lines[:i + 1] + self.extra_rules + lines[i + 1:])


class Receiver:
    """A local HTTP server standing in for Slack and for a webhook receiver: it records every
    POST (path, headers, body) and answers 200."""

    def __init__(self):
        self.posts = []
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with outer.cond:
                    outer.posts.append((self.path, dict(self.headers), body))
                    outer.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, pred, timeout=10.0):
        """The first recorded POST for which pred(path, headers, body) holds."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for p in self.posts:
                    if pred(*p):
                        return p
                left = deadline - time.time()
                if left <= 0:
                    paths = [p[0] for p in self.posts]
                    raise AssertionError(f"no matching POST within {timeout}s; got {paths}")
                self.cond.wait(left)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class Inst:
    def __init__(self, sp, ep, pg):
        self.sp, self.ep, self.pg = sp, ep, pg
        self.secrets = sp.secrets
        self.admin_port = sp.config.admin_port

    def bearer(self, who):
        return f"{who}:{self.secrets[who]}"

    def api(self, method, path, token=None, body=None, raw=None, headers=None):
        """(status, parsed JSON or None, text) of one admin API call."""
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method == "POST":
            raw = b""
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=raw,
                                     method=method)
        if token is not None:
            req.add_header("Authorization", "Bearer " + token)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            js = json.loads(text)
        except ValueError:
            js = None
        return status, js, text

    def approvals(self, state="all"):
        st, js, text = self.api("GET", f"/api/v1/approvals?state={state}", self.bearer(DBA))
        assert st == 200, text
        return js["approvals"]

    def request(self, rid):
        for r in self.approvals("all"):
            if r["id"] == rid:
                return r
        raise AssertionError(f"request {rid} not listed")

    def wait_pending(self, identity, table, timeout=10.0):
        """The id of the pending request of identity on table (a waiting client's)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for r in self.approvals("pending"):
                if r["identity"] == identity and table in r["statement"]:
                    return r["id"]
            time.sleep(0.05)
        raise AssertionError(f"no pending request by {identity} on {table}")

    def decide(self, rid, approve=True, who=DBA, body=None):
        st, js, text = self.api("POST", f"/api/v1/approvals/{rid}/{'approve' if approve else 'deny'}",
                                self.bearer(who), body=body)
        assert st == 200, f"{who} deciding {rid}: {st} {text}"
        return js

    def cli(self, *args, timeout=30):
        env = dict(os.environ)
        env.update(self.sp.config.env())
        return subprocess.run([conftest.SLUICE_BIN, "approvals"] + list(args)
                              + ["-c", self.sp.path],
                              capture_output=True, text=True, timeout=timeout, env=env)


def start_instance(workdir, certs, pg, name, rules, extra_yaml):
    ids, secrets = make_identities(EXTRA_IDS)
    cls = type("Rules_" + name, (RulesConfig,), {"extra_rules": rules})
    cfg = cls(pg, certs, ids, extra_yaml=extra_yaml)
    sp = SluiceProcess(workdir, name, cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    return Inst(sp, Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp), pg)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def appr(workdir, certs, pg, sluice_bin, receiver):
    os.environ["SLUICE_IT_SLACK_URL"] = receiver.url("/slack")
    os.environ["SLUICE_IT_SLACK_SECRET"] = SLACK_SECRET
    os.environ["SLUICE_IT_HOOK_SECRET"] = HOOK_SECRET
    yaml = f"""approvals:
  approvers: {{ groups: [dba] }}
  timeout: 30s
  grant: {{ ttl: 1h, max_uses: 100, max_rows: 1000 }}
  notify:
    - slack: {{ webhook_url_env: SLUICE_IT_SLACK_URL, signing_secret_env: SLUICE_IT_SLACK_SECRET }}
    - webhook: {{ url: "{receiver.url('/hook')}", secret_env: SLUICE_IT_HOOK_SECRET }}
admin: {{ groups: [admins] }}
"""
    inst = start_instance(workdir, certs, pg, "approvals", RULES, yaml)
    yield inst
    inst.ep.close_all()
    inst.sp.assert_clean_exit()


def make_table(pg, name, n=10):
    c = pg.admin(dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SET ROLE app_scram")
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL, note text)")
    cur.execute(f"INSERT INTO {name} SELECT i, i, 'n' || i FROM generate_series(1, %s) i", (n,))
    c.close()


def upstream(pg, sql, args=()):
    c = pg.admin(dbname="shop")
    try:
        cur = c.cursor()
        cur.execute(sql, args)
        return cur.fetchall()
    finally:
        c.close()


def value_of(pg, table, rid):
    return upstream(pg, f"SELECT v, note FROM {table} WHERE id = %s", (rid,))[0]


def refused_for_approval(conn, sql):
    """Run sql expecting the defer refusal; return the request id."""
    with pytest.raises(psycopg2.Error) as ei:
        conn.cursor().execute(sql)
    e = ei.value
    assert e.pgcode == "42501", f"{sql}: {e.pgcode} {e}"
    m = re.fullmatch(r"sluice: approval required \(request (req_[A-Za-z0-9]+)\)", e.diag.message_primary)
    assert m, e.diag.message_primary
    assert e.diag.message_hint == "re-run the same statement after approval"
    return m.group(1)


def runs(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.rowcount


def results(appr, marker, n=1, timeout=10.0):
    """The statement events whose text holds marker (once n are there), each with its result
    (end_of: folded, or its statement_end)."""
    deadline = time.time() + timeout
    while True:
        evs = export_events(appr.sp)
        st = [e for e in evs if e["kind"] == "statement" and marker in (e.get("statement") or "")]
        if len(st) >= n or time.time() > deadline:
            break
        time.sleep(0.2)
    time.sleep(0.3)  # a result that follows its event as statement_end: the next batch's
    evs = export_events(appr.sp)
    st = [e for e in evs if e["kind"] == "statement" and marker in (e.get("statement") or "")]
    return [(e, end_of(evs, e)) for e in st]


# ---------------------------------------------------------------- defer mode and grants


def test_defer_agent_cli_approval_and_grant(appr):
    t = "appr_defer"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 101 WHERE id = 1")
    assert value_of(appr.pg, t, 1)[0] == 1, "the refused statement must not run"
    r = appr.request(rid)
    assert r["state"] == "pending" and r["identity"] == "copilot"
    assert r["rule"] == "agents-writes-need-review" and r["mode"] == "defer"
    assert "101" not in r["statement"] and t in r["statement"], r["statement"]
    # another statement while the first is pending asks again, with a new id
    rid_b = refused_for_approval(c, f"UPDATE {t} SET v = 102 WHERE id = 2")
    assert rid_b != rid

    # the CLI (root owns the state file: a trusted approver)
    p = appr.cli("approve", rid, "--as", "dba1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert rid in p.stdout and "grt_" in p.stdout, p.stdout
    r = appr.request(rid)
    assert r["state"] == "approved" and r["approver"] == "dba1", r

    # same fingerprint, other literals: runs under the grant without asking
    assert runs(c, f"UPDATE {t} SET v = 103 WHERE id = 3") == 1
    assert value_of(appr.pg, t, 3)[0] == 103
    assert runs(c, f"UPDATE {t} SET v = 101 WHERE id = 1") == 1
    assert value_of(appr.pg, t, 1)[0] == 101
    st, js, text = appr.api("GET", "/api/v1/grants", appr.bearer(DBA))
    assert st == 200, text
    g = [g for g in js["grants"] if g["request_id"] == rid]
    assert len(g) == 1 and g[0]["identity"] == "copilot" and g[0]["uses_left"] == 98, g

    # another fingerprint asks again
    rid2 = refused_for_approval(c, f"DELETE FROM {t} WHERE id = 4")
    assert rid2 not in (rid, rid_b)
    assert upstream(appr.pg, f"SELECT count(*) FROM {t} WHERE id = 4")[0][0] == 1
    # deny through the CLI: the request stays refused and a re-run asks again
    p = appr.cli("deny", rid2, "--as", "dba1", "--reason", "no deletes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert appr.request(rid2)["state"] == "denied"
    refused_for_approval(c, f"DELETE FROM {t} WHERE id = 5")
    # the CLI refuses to decide a request twice and refuses self-approval
    p = appr.cli("approve", rid2, "--as", "dba1")
    assert p.returncode == 1, p.stdout + p.stderr
    p = appr.cli("approve", rid_b, "--as", "copilot")
    assert p.returncode == 1, p.stdout + p.stderr
    assert appr.request(rid_b)["state"] == "pending"
    # reads are not affected
    assert runs(c, f"SELECT * FROM {t} WHERE id < 3") == 2


def test_grant_is_for_the_statement_approved(appr):
    """A grant covers the same statement with other literals, and nothing else: not a table
    whose name differs only in its digits (PostgreSQL's fingerprint drops them), nor a WHERE
    clause that differs deeper than the fingerprint looks (100 levels)."""
    for t in ("appr_key42", "appr_key", "appr_key77"):
        make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, "UPDATE appr_key42 SET v = 5 WHERE id = 1")
    appr.decide(rid)
    assert runs(c, "UPDATE appr_key42 SET v = 6 WHERE id = 2") == 1
    for t in ("appr_key", "appr_key77"):
        refused_for_approval(c, f"UPDATE {t} SET v = 5 WHERE id = 1")
        assert value_of(appr.pg, t, 1)[0] == 1
    deep = "NOT " * 60
    rid = refused_for_approval(c, f"UPDATE appr_key SET v = 700 WHERE {deep}(id = 1)")
    appr.decide(rid)
    assert runs(c, f"UPDATE appr_key SET v = 700 WHERE {deep}(id = 3)") == 1
    refused_for_approval(c, f"UPDATE appr_key SET v = 700 WHERE {deep}(id > 0 OR note IS NULL)")
    assert upstream(appr.pg, "SELECT count(*) FROM appr_key WHERE v = 700")[0][0] == 1


def test_grant_uses_run_out(appr):
    t = "appr_uses"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET note = 'a' WHERE id = 1")
    js = appr.decide(rid, body={"uses": 1})
    assert js["state"] == "approved" and js["grant_id"].startswith("grt_"), js
    assert runs(c, f"UPDATE {t} SET note = 'b' WHERE id = 2") == 1
    assert value_of(appr.pg, t, 2)[1] == "b"
    rid2 = refused_for_approval(c, f"UPDATE {t} SET note = 'c' WHERE id = 3")
    assert rid2 != rid
    assert value_of(appr.pg, t, 3)[1] == "n3"
    # an approver cannot widen a grant beyond the configured ceiling (max_uses 100)
    js = appr.decide(rid2, body={"uses": 100000})
    st, gj, text = appr.api("GET", "/api/v1/grants", appr.bearer(DBA))
    g = [g for g in gj["grants"] if g["request_id"] == rid2]
    assert len(g) == 1 and g[0]["uses_left"] <= 100, g


def test_grant_uses_counted_per_execution_of_a_prepared_statement(appr):
    """A statement prepared under a grant (the extended protocol: Parse once, then Bind and
    Execute each time) takes one use per execution, as a simple Query does: once the uses run
    out, its next execution is refused with 42501 and nothing runs; preparing it again asks
    for a new approval."""
    import psycopg
    t = "appr_prep_uses"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    sql = f"UPDATE {t} SET v = v + 100 WHERE id = $1"
    rid = refused_for_approval(c, sql.replace("$1", "1"))
    appr.decide(rid, body={"uses": 3})
    with _psycopg3(appr) as pc:
        cur = pc.cursor()
        for i in (2, 3, 4):  # one Parse of a named statement, three Bind/Execute
            cur.execute(f"UPDATE {t} SET v = v + 100 WHERE id = %s", (i,), prepare=True)
            assert cur.rowcount == 1
        with pytest.raises(psycopg.Error) as ei:
            cur.execute(f"UPDATE {t} SET v = v + 100 WHERE id = %s", (5,), prepare=True)
        assert ei.value.sqlstate == "42501", ei.value
        assert "has no use left" in str(ei.value), ei.value
        cur.execute("SELECT 1")  # the session goes on
        assert cur.fetchone() == (1,)
    assert [value_of(appr.pg, t, i)[0] for i in (1, 2, 3, 4, 5)] == [1, 102, 103, 104, 5]
    # the audit: three executions ran; the fourth is a refusal naming its grant, not a
    # statement that ran and failed
    got = results(appr, f"UPDATE {t} SET", n=5)
    ran = [(e, r) for e, r in got if e.get("grant_id") and r.get("rows") == 1]
    assert len(ran) == 3, got
    refused = [e for e, r in got if e.get("detail", "").startswith("refused: its grant")]
    assert len(refused) == 1 and refused[0]["grant_id"] == ran[0][0]["grant_id"], got
    assert refused[0]["detail"] == ("refused: its grant has no use left (used up, expired or "
                                    "revoked)"), refused
    assert not [r for e, r in got if r.get("sqlstate") in ("34000", "42601")], got
    st, gj, text = appr.api("GET", "/api/v1/grants", appr.bearer(DBA))
    assert not [g for g in gj["grants"] if g["request_id"] == rid and g["uses_left"] > 0], gj
    # a new Parse of it asks again
    rid2 = refused_for_approval(c, sql.replace("$1", "6"))
    assert rid2 != rid


def test_grant_expiry(appr):
    t = "appr_ttl"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = v + 1 WHERE id = 1")
    appr.decide(rid, body={"ttl": 2})
    assert runs(c, f"UPDATE {t} SET v = v + 1 WHERE id = 2") == 1
    time.sleep(2.5)
    rid2 = refused_for_approval(c, f"UPDATE {t} SET v = v + 1 WHERE id = 3")
    assert rid2 != rid
    assert value_of(appr.pg, t, 3)[0] == 3


def test_grant_revoked(appr):
    """A revoked grant stops matching (API), and the CLI lists and revokes grants too."""
    t = "appr_revoke"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 1 WHERE id = 1")
    gid = appr.decide(rid)["grant_id"]
    assert runs(c, f"UPDATE {t} SET v = 2 WHERE id = 2") == 1
    st, js, text = appr.api("DELETE", f"/api/v1/grants/{gid}", appr.bearer(BOB))
    assert st == 403, text
    st, js, text = appr.api("DELETE", f"/api/v1/grants/{gid}", appr.bearer(DBA))
    assert st == 200 and js == {"revoked": gid}, text
    refused_for_approval(c, f"UPDATE {t} SET v = 3 WHERE id = 3")
    assert value_of(appr.pg, t, 3)[0] == 3

    rid = refused_for_approval(c, f"UPDATE {t} SET note = 'q' WHERE id = 4")
    gid = appr.decide(rid)["grant_id"]
    p = appr.cli("grants", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert gid in [g["id"] for g in json.loads(p.stdout)], p.stdout
    p = appr.cli("revoke", gid, "--as", "dba1")
    assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.time() + 5
    while time.time() < deadline:  # the server sees the file's change within about 0.2 s
        try:
            refused_for_approval(c, f"UPDATE {t} SET note = 'r' WHERE id = 5")
            break
        except AssertionError:
            time.sleep(0.2)
    else:
        raise AssertionError("a grant revoked by the CLI still matches")
    assert value_of(appr.pg, t, 5)[1] in ("n5", "r")


def test_grant_max_rows_rolls_back(appr):
    """A write under a grant with max_rows that touches more rows is rolled back and refused,
    outside and inside a client transaction; within the bound it runs."""
    t = "appr_rows"
    c, _ = _bounded_grant(appr, t)
    assert runs(c, f"UPDATE {t} SET v = v + 100 WHERE id <= 2") == 2
    before = upstream(appr.pg, f"SELECT id, v FROM {t} ORDER BY id")
    with pytest.raises(psycopg2.Error) as ei:
        runs(c, f"UPDATE {t} SET v = v + 100 WHERE id <= 6")
    assert "rows" in str(ei.value), ei.value
    assert upstream(appr.pg, f"SELECT id, v FROM {t} ORDER BY id") == before
    assert runs(c, "SELECT 1") == 1
    # inside the client's transaction: the earlier statement of the transaction is kept
    c.autocommit = False
    cur = c.cursor()
    cur.execute(f"SELECT v FROM {t} WHERE id = 10")
    with pytest.raises(psycopg2.Error):
        cur.execute(f"UPDATE {t} SET v = v + 100 WHERE id <= 7")
    c.rollback()
    assert upstream(appr.pg, f"SELECT id, v FROM {t} ORDER BY id") == before


def test_grant_max_rows_extended_protocol(appr):
    """The same bound for the extended protocol (psycopg 3: Parse/Bind/Execute/Sync, with
    unnamed and with prepared statements): within it the write runs and is kept; beyond it
    the client gets 42501, the write is rolled back and the session goes on; inside the
    client's transaction the earlier work stays and the transaction is failed, as the
    statement's own error would leave it. A Bind pipelined behind another statement of its
    group is refused."""
    import psycopg
    t = "appr_rows_ext"
    _bounded_grant(appr, t)
    sql = f"UPDATE {t} SET v = v + 100 WHERE id <= %s"
    before = upstream(appr.pg, f"SELECT id, v FROM {t} ORDER BY id")
    with _psycopg3(appr) as pc:
        cur = pc.cursor()
        for prepare in (False, True):
            with pytest.raises(psycopg.Error) as ei:
                cur.execute(sql, (6,), prepare=prepare)
            assert ei.value.sqlstate == "42501", ei.value
            assert "more than the 2 its grant allows" in str(ei.value), ei.value
            assert upstream(appr.pg, f"SELECT id, v FROM {t} ORDER BY id") == before
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        cur.execute(sql, (2,), prepare=False)  # within the bound: kept
        assert cur.rowcount == 2
        cur.execute(sql, (1,), prepare=True)
        assert cur.rowcount == 1
        assert [value_of(appr.pg, t, i)[0] for i in (1, 2, 3)] == [201, 102, 3]
        assert pc.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # the server's own errors at the Bind (after sluice's BEGIN) reach the client as they are
        for bad in ("x", psycopg.types.numeric.Int8(2**40)):
            with pytest.raises(psycopg.Error) as ei:
                cur.execute(f"UPDATE {t} SET v = v + 100 WHERE id <= %s::int4", (bad,))
            assert ei.value.sqlstate in ("22P02", "22003"), ei.value
            assert pc.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # inside the client's transaction: the work before stays, the transaction is failed
        pc.autocommit = False
        cur.execute(sql, (1,))
        assert cur.rowcount == 1
        assert pc.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        cur.execute("SAVEPOINT mine")
        with pytest.raises(psycopg.Error) as ei:
            cur.execute(sql, (7,))
        assert ei.value.sqlstate == "42501", ei.value
        assert pc.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.Error) as ei:
            cur.execute("SELECT 1")
        assert ei.value.sqlstate == "25P02", ei.value
        cur.execute("ROLLBACK TO SAVEPOINT mine")
        pc.commit()
        pc.autocommit = True
        assert [value_of(appr.pg, t, i)[0] for i in (1, 2, 3)] == [301, 102, 3]
        # pipelined behind another statement of its group: refused, nothing runs
        with pytest.raises(psycopg.Error) as ei:
            with pc.pipeline():
                cur.execute("SELECT 1")
                cur.execute(sql, (1,))
        assert ei.value.sqlstate == "42501" and "pipelined" in str(ei.value), ei.value
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    assert [value_of(appr.pg, t, i)[0] for i in (1, 2, 3)] == [301, 102, 3]


SYNC = pgwire.message(b"S")


def _psycopg3(appr):
    """A psycopg 3 connection (the extended protocol for every statement) as copilot."""
    import psycopg
    p = appr.ep.params(user="copilot")
    return psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                           password=p["password"], sslmode="disable", autocommit=True)


def _parse(name, sql):
    return pgwire.message(b"P", name.encode() + b"\0" + sql.encode() + b"\0\0\0")


def _bounded_grant(appr, t, rows=2):
    """Table t, and copilot holding a grant with max_rows `rows` for
    `UPDATE t SET v = v + 100 WHERE id <= $1`: its autocommit psycopg2 connection and that
    statement's text."""
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = v + 100 WHERE id <= 1")
    appr.decide(rid, body={"rows": rows})
    return c, f"UPDATE {t} SET v = v + 100 WHERE id <= $1"


def _ext(name, sql, portal, params):
    """Parse (when sql), Bind and Execute messages of one statement, parameters as text."""
    m = b""
    if sql is not None:
        m += pgwire.message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + b"\0\0")
    b = portal.encode() + b"\0" + name.encode() + b"\0" + struct.pack("!HH", 0, len(params))
    for v in params:
        b += struct.pack("!I", len(v)) + v.encode()
    m += pgwire.message(b"B", b + struct.pack("!H", 0))
    return m + pgwire.message(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


def _replies(r):
    """Messages up to ReadyForQuery: [(type, text)]."""
    out = []
    while True:
        t, body = r.read_msg()
        text = pgwire.parse_fields(body).get("M", "") if t == b"E" else body[:40]
        out.append((t.decode(), text))
        if t == b"Z":
            return out


def test_grant_max_rows_extended_group_rules(appr):
    """Raw extended-protocol groups around a write bounded by its grant: a statement after
    the guarded Bind in its group (here a COMMIT that would end sluice's transaction early) is
    refused and the whole group rolled back; a simple Query there ends the session (08P01); a
    Flush, then a Sync sent later, still gets the ReadyForQuery."""
    t = "appr_rows_raw"
    c, sql = _bounded_grant(appr, t)
    with appr.ep.raw_login(user="copilot") as r:
        r.send(_ext("", sql, "", ["1"]) + _ext("", "COMMIT", "", []) + SYNC)
        got = _replies(r)
        assert [k for k, _ in got] == ["1", "2", "C", "E", "Z"], got
        assert "must be alone in its group" in got[3][1], got
        assert value_of(appr.pg, t, 1)[0] == 1  # rolled back with the group
        # a Flush: the CommandComplete comes; the Sync, sent later, gets its ReadyForQuery
        r.send(_ext("w", sql, "", ["1"]) + pgwire.message(b"H"))
        got = [r.read_msg()[0] for _ in range(3)]
        assert got == [b"1", b"2", b"C"], got
        time.sleep(0.3)
        r.send(SYNC)
        assert [k for k, _ in _replies(r)] == ["Z"]
        assert value_of(appr.pg, t, 1)[0] == 101
        # a simple Query inside the guarded group: a protocol violation
        r.send(_ext("w", None, "", ["1"]) + pgwire.message(b"Q", b"SELECT 1\0"))
        kinds = []
        while True:
            m = r.read_msg()
            if m is None:
                break
            kinds.append(m[0])
            if m[0] == b"E":
                assert pgwire.parse_fields(m[1]).get("C") == "08P01", m
        assert b"E" in kinds, kinds
    assert value_of(appr.pg, t, 1)[0] == 101
    assert runs(c, "SELECT 1") == 1


def test_grant_kept_when_a_parse_of_its_name_fails(appr):
    """What a statement name means changes only when the server confirms the Parse: a failed
    Parse of a granted statement's name (42P05), or one the server skipped after an earlier
    error of its group, leaves the granted statement in place, and its Binds keep their bound."""
    t = "appr_rows_reparse"
    c, sql = _bounded_grant(appr, t)
    with appr.ep.raw_login(user="copilot") as r:
        for name in ("w", ""):
            r.send(_parse(name, sql) + SYNC)
            assert [k for k, _ in _replies(r)] == ["1", "Z"]
            if name:  # a Parse of a name in use fails
                r.send(_parse(name, "SELECT 1") + SYNC)
            else:  # a Parse skipped after an error of its group
                r.send(pgwire.message(b"E", b"nope\0" + struct.pack("!I", 0)) +
                       _parse(name, "SELECT 1") + SYNC)
            got = _replies(r)
            assert [k for k, _ in got] == ["E", "Z"], got
            r.send(_ext(name, None, "", ["10"]) + SYNC)
            got = _replies(r)
            assert ("E", "sluice: the statement touched 10 rows, more than the 2 its grant "
                    "allows; it was rolled back") in got, got
            assert value_of(appr.pg, t, 5)[0] == 5


def test_grant_bound_holds_for_pipelined_and_malformed_groups(appr):
    """Groups a client pipelines around a granted statement's name keep its bound: a failed
    re-Parse pipelined ahead of the Binds, and a malformed Parse ahead of the granted one. A
    bounded simple Query behind an unsynced extended message that fails does not hang."""
    t = "appr_rows_pipe"
    c, sql = _bounded_grant(appr, t)
    with appr.ep.raw_login(user="copilot") as r:
        r.send(_parse("w", sql) + SYNC + _parse("w", "SELECT 1") + SYNC +
               _ext("w", None, "", ["10"]) + _ext("w", None, "", ["10"]) + SYNC)
        got = _replies(r) + _replies(r) + _replies(r)
        assert ("C", b"UPDATE 10\0") not in got, got
        assert value_of(appr.pg, t, 5)[0] == 5
        # a malformed Parse (no end to its text) ahead of the granted one in its group
        r.send(pgwire.message(b"P", b"m\0SELECT") + _parse("v", sql) + SYNC)
        got = _replies(r)
        assert [k for k, _ in got] == ["E", "Z"], got
        r.send(_parse("v", sql) + SYNC)
        _replies(r)
        r.send(_ext("v", None, "", ["10"]) + SYNC)
        got = _replies(r)
        assert any(k == "E" and "its grant allows" in m for k, m in got), got
        assert value_of(appr.pg, t, 5)[0] == 5
    with appr.ep.raw_login(user="copilot") as r:
        # a Query behind an unsynced Bind: whether the server runs it depends on that Bind
        bind_missing = pgwire.message(b"B", b"\0nope\0" + struct.pack("!HHH", 0, 0, 0))
        q = f"UPDATE {t} SET v = v + 100 WHERE id <= 1"
        r.send(bind_missing + pgwire.message(b"Q", q.encode() + b"\0") + SYNC)
        codes = []
        while (m := r.read_msg()) is not None:  # within the read timeout: no hang
            if m[0] == b"E":
                codes.append(pgwire.parse_fields(m[1]).get("C"))
        assert codes == ["08P01"], codes
    assert value_of(appr.pg, t, 1)[0] == 1
    # what sluice cannot bound or count is refused before any request is made
    for sql in (f"PREPARE p AS UPDATE {t} SET v = 7 WHERE id = 1",
                f"UPDATE {t} SET v = 7 WHERE id = 1; UPDATE {t} SET v = 7 WHERE id = 2"):
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute(sql)
        assert ei.value.pgcode == "42501", ei.value
        assert "SQL PREPARE" in str(ei.value) or "one statement" in str(ei.value), ei.value
    with pytest.raises(psycopg2.Error) as ei:
        c.cursor().copy_expert(f"COPY {t} (id, v) FROM STDIN", io.StringIO("99\t99\n"))
    assert ei.value.pgcode == "42501" and "not COPY" in str(ei.value), ei.value
    assert value_of(appr.pg, t, 1)[0] == 1


def test_bad_length_after_a_bounded_write_ends_the_session(appr):
    """A framing error behind a write the grant guard runs: the write is answered, then the
    session ends with 08P01 (it used to wait forever, holding its upstream connection)."""
    t = "appr_rows_badlen"
    _bounded_grant(appr, t)
    with appr.ep.raw_login(user="copilot") as r:
        r.send(pgwire.message(b"Q", f"UPDATE {t} SET v = v + 100 WHERE id <= 1\0".encode()) +
               b"Q" + struct.pack("!I", 2))
        got = []
        while (m := r.read_msg()) is not None:  # within the read timeout: no hang
            got.append((m[0], pgwire.parse_fields(m[1]).get("C") if m[0] == b"E" else m[1][:20]))
    assert (b"C", b"UPDATE 1\0") in got and got[-1] == (b"E", "08P01"), got
    assert value_of(appr.pg, t, 1)[0] == 101


def test_refusals_under_a_bounded_grant_are_audited(appr):
    """Each statement refused for the sake of a grant's max_rows gets an event saying so: a
    bounded simple Query pipelined behind another one, a bounded Bind behind other messages of
    its group, and another statement inside a guarded group (a deny by grant_max_rows, once,
    for its Parse, Bind and Execute)."""
    tq, tb, ti = "appr_rows_audq", "appr_rows_audb", "appr_rows_audi"
    _bounded_grant(appr, tq)
    _bounded_grant(appr, tb)
    _, sql = _bounded_grant(appr, ti)
    with appr.ep.raw_login(user="copilot") as r:
        q = f"UPDATE {tq} SET v = v + 100 WHERE id <= 1"
        r.send(pgwire.message(b"Q", b"SELECT 1 AS appr_first\0") +
               pgwire.message(b"Q", q.encode() + b"\0"))
        got = _replies(r) + _replies(r)
        assert [k for k, _ in got if k == "E"] == ["E"] and "pipelined" in got[-2][1], got
        r.send(_parse("wb", f"UPDATE {tb} SET v = v + 100 WHERE id <= $1") + SYNC)
        assert [k for k, _ in _replies(r)] == ["1", "Z"]
        r.send(_ext("", "SELECT 2 AS appr_before", "", []) + _ext("wb", None, "", ["1"]) + SYNC)
        got = _replies(r)
        assert "pipelined" in got[-2][1], got
        r.send(_ext("", sql, "", ["1"]) + _ext("x", "SELECT 3 AS appr_inside", "x", []) + SYNC)
        got = _replies(r)
        assert any("must be alone in its group" in m for k, m in got if k == "E"), got
    assert [value_of(appr.pg, t, 1)[0] for t in (tq, tb, ti)] == [1, 1, 1]
    pipelined = "refused: a write under a grant with max_rows must not be pipelined"
    for t in (tq, tb):
        got = [(e, r) for e, r in results(appr, f"UPDATE {t} SET", n=2) if e.get("grant_id")]
        assert len(got) == 1, got
        ev, res = got[0]
        assert ev["decision"] == "review", ev
        assert res.get("detail", "").startswith(pipelined), (ev, res)
        assert not res.get("sqlstate") and not res.get("rows"), res
    got = results(appr, "appr_inside")
    assert len(got) == 1, got
    ev, res = got[0]
    assert (ev["decision"], ev.get("rule")) == ("deny", "grant_max_rows"), ev
    assert ev.get("detail", "").startswith("refused: a write under a grant with max_rows must be "
                                           "alone"), ev


def test_executes_name_their_own_statements_grant(appr):
    """An Execute's event names the grant its own statement was prepared under, whatever text
    was judged last: a granted write executed after a Parse of a read names its grant, and a
    read executed after a Parse of a granted write names none."""
    t = "appr_ids"
    _, sql = _bounded_grant(appr, t, rows=5)
    read = f"SELECT v AS appr_ids_read FROM {t} WHERE id = 1"
    with appr.ep.raw_login(user="copilot") as r:
        r.send(_parse("w", sql) + _parse("rd", read) + SYNC)
        assert [k for k, _ in _replies(r)] == ["1", "1", "Z"]
        r.send(_parse("", "SELECT 1 AS appr_ids_other") + _ext("w", None, "", ["1"]) + SYNC)
        assert ("C", b"UPDATE 1\0") in _replies(r)
        r.send(_parse("w2", sql) + _ext("rd", None, "p", []) + SYNC)
        assert [k for k, _ in _replies(r)] == ["1", "2", "D", "C", "Z"]
    assert value_of(appr.pg, t, 1)[0] == 101
    ran = [(e, res) for e, res in results(appr, f"UPDATE {t} SET", n=2) if res.get("rows") == 1]
    assert len(ran) == 1 and ran[0][0].get("grant_id", "").startswith("grt_"), ran
    got = results(appr, "appr_ids_read")
    assert len(got) == 1 and not got[0][0].get("grant_id"), got


def test_bounded_write_returning_is_masked(appr):
    """A write under a grant with max_rows, executed without a Describe inside sluice's
    guard: the rows it returns get the portal's plan too (a column known as sensitive by its
    name only is masked)."""
    c = appr.pg.admin(dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SET ROLE app_scram")
    cur.execute("DROP TABLE IF EXISTS appr_tok; CREATE TABLE appr_tok (id int PRIMARY KEY, "
                "api_token text)")
    cur.execute("INSERT INTO appr_tok SELECT g, 'plainsecretvalue' || g "
                "FROM generate_series(1, 5) g")
    c.close()
    a = appr.ep.connect(user="copilot")
    a.autocommit = True
    sql = "UPDATE appr_tok SET id = id WHERE id <= {} RETURNING api_token"
    rid = refused_for_approval(a, sql.format(1))
    appr.decide(rid, body={"rows": 3})
    with appr.ep.raw_login(user="copilot") as r:
        r.send(_ext("", sql.format("$1"), "", ["2"]) + SYNC)
        got = _replies(r)
    assert [k for k, _ in got] == ["1", "2", "D", "D", "C", "Z"], got
    assert all(b"plainsecret" not in m and b"REDACTED" in m for k, m in got if k == "D"), got


def test_grant_max_rows_extended_notices_and_notifications(appr):
    """A NOTICE and a NOTIFY raised by the bounded write (a trigger) reach the client: they
    answer no message, so the guard neither counts nor swallows them."""
    import psycopg
    t = "appr_rows_notify"
    _bounded_grant(appr, t)
    a = appr.pg.admin(dbname="shop")
    a.autocommit = True
    a.cursor().execute(f"""
        CREATE OR REPLACE FUNCTION {t}_tell() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE NOTICE 'row % changed', NEW.id; PERFORM pg_notify('{t}', NEW.id::text);
        RETURN NEW; END $$;
        CREATE TRIGGER {t}_tell AFTER UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_tell();""")
    a.close()
    with _psycopg3(appr) as pc:
        notices, got = [], []
        pc.add_notice_handler(lambda d: notices.append(d.message_primary))
        pc.add_notify_handler(lambda n: got.append(n.payload))
        pc.execute(f"LISTEN {t}")
        cur = pc.execute(f"UPDATE {t} SET v = v + 100 WHERE id <= %s", (2,))
        assert cur.rowcount == 2
        assert sorted(notices) == ["row 1 changed", "row 2 changed"], notices
        pc.execute("SELECT 1")  # the notifications came with the COMMIT, before its answer
        assert sorted(got) == ["1", "2"], got
    assert [value_of(appr.pg, t, i)[0] for i in (1, 2, 3)] == [101, 102, 3]


def test_grant_max_rows_extended_failed_commit(appr):
    """A bounded write whose COMMIT fails (a deferred unique constraint) reports the server's
    error, as the server does at Sync; the next bounded writes of the session still run."""
    import psycopg
    t = "appr_rows_defer"
    make_table(appr.pg, t)
    a = appr.pg.admin(dbname="shop")
    a.autocommit = True
    a.cursor().execute(f"ALTER TABLE {t} ADD CONSTRAINT {t}_v UNIQUE (v) "
                       "DEFERRABLE INITIALLY DEFERRED")
    a.close()
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 1 WHERE id = 1")
    appr.decide(rid, body={"rows": 2})
    with _psycopg3(appr) as pc:
        with pytest.raises(psycopg.Error) as ei:
            pc.execute(f"UPDATE {t} SET v = %s WHERE id = 2", (3,))  # v 3 is taken by id 3
        assert ei.value.sqlstate == "23505", ei.value
        assert pc.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        for i in (4, 5):
            assert pc.execute(f"UPDATE {t} SET v = %s WHERE id = {i}", (i + 100,)).rowcount == 1
    assert [value_of(appr.pg, t, i)[0] for i in (2, 4, 5)] == [2, 104, 105]


def test_group_grant_covers_other_members(appr):
    """scope identity (the default) covers the requester only; scope group covers every
    member of the requester's group (copilot and copilot2 are both in `ai`)."""
    t = "appr_group"
    make_table(appr.pg, t)
    c1 = appr.ep.connect(user="copilot")
    c2 = appr.ep.connect(user="copilot2")
    c1.autocommit = c2.autocommit = True
    rid = refused_for_approval(c1, f"UPDATE {t} SET v = 7 WHERE id = 1")
    appr.decide(rid)
    assert runs(c1, f"UPDATE {t} SET v = 8 WHERE id = 2") == 1
    refused_for_approval(c2, f"UPDATE {t} SET v = 9 WHERE id = 3")  # identity scope
    assert value_of(appr.pg, t, 3)[0] == 3

    rid = refused_for_approval(c1, f"UPDATE {t} SET note = 'g' WHERE id = 4")
    st, js, text = appr.api("POST", f"/api/v1/approvals/{rid}/approve", appr.bearer(DBA),
                            body={"scope": "group"})
    assert st == 200, text
    st, gj, text = appr.api("GET", "/api/v1/grants", appr.bearer(DBA))
    g = [g for g in gj["grants"] if g["request_id"] == rid]
    assert len(g) == 1 and g[0]["scope"] == "group" and g[0]["group"] == "ai", g
    assert runs(c2, f"UPDATE {t} SET note = 'h' WHERE id = 5") == 1
    assert value_of(appr.pg, t, 5)[1] == "h"
    # carol is in no group of copilot's: the group grant does not cover her
    c3 = appr.ep.connect(user=CAROL)
    c3.autocommit = True
    refused_for_approval(c3, f"UPDATE {t} SET note = 'i' WHERE id = 6")


def test_audit_names_requests_and_grants(appr):
    t = "appr_audit"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 11 WHERE id = 1")
    gid = appr.decide(rid)["grant_id"]
    assert runs(c, f"UPDATE {t} SET v = 12 WHERE id = 2") == 1

    def events():
        st, js, text = appr.api("GET", "/api/v1/audit?identity=copilot&limit=1000",
                                appr.bearer(DBA))
        assert st == 200, text
        return js["events"]

    want = {"approval_requested", "approval_approved", "grant_used"}
    deadline = time.time() + 10
    while True:
        evs = events()
        mine = [e for e in evs if e.get("request_id") == rid or e.get("grant_id") == gid]
        kinds = {e["kind"] for e in mine}
        if want <= kinds:
            break
        assert time.time() < deadline, f"audit events for {rid}/{gid}: {mine}"
        time.sleep(0.2)
    approved = [e for e in mine if e["kind"] == "approval_approved"]
    assert approved[0].get("actor") == DBA, approved
    req = [e for e in mine if e["kind"] == "approval_requested"][0]
    assert "11" not in (req.get("statement") or ""), req
    used = [e for e in mine if e["kind"] == "grant_used"]
    assert used[0].get("actor") == DBA and used[0].get("request_id") == rid, used
    # the notifications to Slack and the webhook are audited too
    deadline = time.time() + 10
    while True:
        st, js, text = appr.api("GET", "/api/v1/audit?kind=approval_notified&limit=1000",
                                appr.bearer(DBA))
        assert st == 200, text
        notified = [e for e in js["events"] if e.get("request_id") == rid]
        if notified:
            break
        assert time.time() < deadline, f"no approval_notified event for {rid}"
        time.sleep(0.2)


def test_statement_events_name_request_and_grant(appr):
    """The statement events themselves carry the approval request (the refused statement)
    and the grant (the statement run under it), as design.md's audit fields say."""
    t = "appr_audit_stmt"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 11 WHERE id = 1")
    gid = appr.decide(rid)["grant_id"]
    assert runs(c, f"UPDATE {t} SET v = 12 WHERE id = 2") == 1
    assert runs(c, f"SELECT v FROM {t} WHERE id = 3") == 1
    deadline = time.time() + 10
    while True:
        st, js, text = appr.api("GET", "/api/v1/audit?identity=copilot&kind=statement&limit=1000",
                                appr.bearer(DBA))
        assert st == 200, text
        stmts = [e for e in js["events"] if t in (e.get("statement") or "")]
        if len(stmts) >= 3 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(stmts) == 3, stmts
    assert stmts[0].get("request_id") == rid, stmts[0]
    assert stmts[1].get("grant_id") == gid, stmts[1]
    assert not stmts[2].get("grant_id") and not stmts[2].get("request_id"), stmts[2]


# ---------------------------------------------------------------- the admin API's checks


def test_api_auth_roles_and_self_approval(appr):
    t = "appr_auth"
    make_table(appr.pg, t)
    c = appr.ep.connect(user=CAROL)
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 50 WHERE id = 1")
    path = f"/api/v1/approvals/{rid}/approve"
    st, _, text = appr.api("POST", path)
    assert st == 401, text
    st, _, text = appr.api("POST", path, token="not-a-token")
    assert st == 401, text
    st, _, text = appr.api("POST", path, token=f"{DBA}:wrong-secret")
    assert st == 401, text
    st, _, text = appr.api("GET", "/api/v1/approvals")
    assert st == 401, text
    # bob is no approver; copilot's bare token neither
    st, _, text = appr.api("POST", path, token=appr.bearer(BOB))
    assert st == 403, text
    st, _, text = appr.api("POST", path, token=appr.secrets["copilot"])
    assert st == 403, text
    st, _, text = appr.api("GET", "/api/v1/approvals", token=appr.bearer(BOB))
    assert st == 403, text
    # carol is an approver but this is her own request
    st, _, text = appr.api("POST", path, token=appr.bearer(CAROL))
    assert st == 403, text
    st, _, text = appr.api("POST", f"/api/v1/approvals/{rid}/deny", token=appr.bearer(CAROL))
    assert st == 403, text
    assert appr.request(rid)["state"] == "pending"
    # unknown id 404, bad body 400
    st, _, text = appr.api("POST", "/api/v1/approvals/req_nosuchthing/approve", appr.bearer(DBA))
    assert st == 404, text
    st, _, text = appr.api("POST", path, appr.bearer(DBA), body={"bogus": 1})
    assert st == 400, text
    # dba approves; a second decision conflicts
    js = appr.decide(rid)
    assert js["state"] == "approved" and js["approver"] == DBA, js
    st, _, text = appr.api("POST", path, appr.bearer(DBA))
    assert st == 409, text
    st, js, text = appr.api("GET", "/api/v1/whoami", appr.bearer(DBA))
    assert st == 200 and js["approver"] is True, text
    assert runs(c, f"UPDATE {t} SET v = 51 WHERE id = 2") == 1


# ---------------------------------------------------------------- wait mode


def test_wait_psycopg2_approve_then_grant_then_deny(appr):
    t = "appr_wait_pg"
    make_table(appr.pg, t)
    c = appr.ep.connect(user=BOB)
    c.autocommit = True
    out = {}

    def client(sql):
        try:
            out["rows"] = runs(c, sql)
        except Exception as e:  # noqa: BLE001 - reported below
            out["err"] = e

    th = threading.Thread(target=client, args=(f"UPDATE {t} SET v = 500 WHERE id = 1",))
    th.start()
    rid = appr.wait_pending(BOB, t)
    time.sleep(0.3)
    assert th.is_alive(), f"the client did not wait: {out}"
    assert value_of(appr.pg, t, 1)[0] == 1
    assert appr.request(rid)["mode"] == "wait"
    appr.decide(rid)
    th.join(15)
    assert not th.is_alive(), "the client still waits after approval"
    assert out.get("rows") == 1, out
    assert value_of(appr.pg, t, 1)[0] == 500
    notes = [n for n in c.notices if rid in n]
    assert notes and "sluice: approval required (request %s); waiting up to" % rid in notes[0], \
        c.notices

    # same fingerprint again: the grant lets it run without waiting
    n_notices = len(c.notices)
    assert runs(c, f"UPDATE {t} SET v = 501 WHERE id = 2") == 1
    assert len(c.notices) == n_notices

    # another fingerprint waits again; denial gives 42501 naming the approver
    out.clear()
    th = threading.Thread(target=client, args=(f"UPDATE {t} SET note = 'x' WHERE id = 3",))
    th.start()
    rid2 = appr.wait_pending(BOB, t)
    assert rid2 != rid
    appr.decide(rid2, approve=False, body={"reason": "not today"})
    th.join(15)
    assert not th.is_alive()
    e = out.get("err")
    assert isinstance(e, psycopg2.Error) and e.pgcode == "42501", out
    assert e.diag.message_primary.startswith(f"sluice: request {rid2} denied by {DBA}"), \
        e.diag.message_primary
    assert "not today" in e.diag.message_primary
    assert value_of(appr.pg, t, 3)[1] == "n3"
    assert runs(c, "SELECT 1") == 1  # the session goes on
    # its event says it was refused, not that it failed on its own
    got = [(e, r) for e, r in results(appr, f"UPDATE {t} SET note") if e.get("request_id") == rid2]
    assert len(got) == 1, got
    ev, res = got[0]
    assert ev["decision"] == "review", ev
    assert res.get("detail") == "refused: its approval request was denied", res
    assert not res.get("sqlstate") and not res.get("rows"), res


def test_denied_parse_fails_the_writes_before_it(appr):
    """A Parse parked for approval and denied: its event says so, and a write completed before
    it in its group is rolled back with the group (no SQLSTATE: the refusal is sluice's)."""
    t = "appr_wait_parse"
    make_table(appr.pg, t)
    with appr.ep.raw_login(user=BOB) as r:
        r.send(_ext("", f"INSERT INTO {t} SELECT 11, 11, 'x' AS appr_wp_ins", "", []) +
               _parse("u", f"UPDATE {t} SET v = 0 WHERE id = 1") + SYNC)
        rid = appr.wait_pending(BOB, t)
        appr.decide(rid, approve=False)
        got = _replies(r)
        assert any(k == "E" and f"request {rid} denied" in m for k, m in got), got
    assert upstream(appr.pg, f"SELECT count(*) FROM {t} WHERE id = 11")[0][0] == 0
    (ins, res), = results(appr, "appr_wp_ins")
    deadline = time.time() + 10
    while True:  # (its statement_end may come in a later batch than its event)
        evs = export_events(appr.sp)
        ends = [e for e in evs if e["kind"] == "statement_end" and e.get("ref") == ins["seq"]]
        failed = [e for e in ends if e.get("detail", "").startswith("failed after completing")]
        if failed or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(failed) == 1 and not failed[0].get("sqlstate"), (ins, ends)
    got = [(e, r) for e, r in results(appr, f"UPDATE {t} SET") if e.get("request_id") == rid]
    assert len(got) == 1, got
    assert got[0][0]["detail"] == "refused: its approval request was denied", got


def test_wait_single_use_grant_keeps_its_bound(appr):
    """A waiting write approved with one use and a max_rows bound: the use it takes is the
    grant's last, and the bound still holds (the write touching more rows is rolled back)."""
    t = "appr_wait_once"
    make_table(appr.pg, t)
    c = appr.ep.connect(user=BOB)
    c.autocommit = True
    out = {}

    def client():
        try:
            out["rows"] = runs(c, f"UPDATE {t} SET v = v + 100 WHERE id > 0")
        except Exception as e:  # noqa: BLE001 - reported below
            out["err"] = e

    th = threading.Thread(target=client)
    th.start()
    rid = appr.wait_pending(BOB, t)
    appr.decide(rid, body={"uses": 1, "rows": 2})
    th.join(15)
    assert not th.is_alive()
    e = out.get("err")
    assert isinstance(e, psycopg2.Error) and e.pgcode == "42501", out
    assert "more than the 2 its grant allows" in str(e), e
    assert value_of(appr.pg, t, 1)[0] == 1  # rolled back


def test_nested_write_cannot_be_bounded(appr):
    """A data-modifying WITH reports the outer statement's rows in its CommandComplete, not
    the rows it changed, and EXPLAIN ANALYZE reports none: under approvals.grant.max_rows
    they are refused before any request."""
    t = "appr_cte"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    for sql in (f"WITH d AS (DELETE FROM {t} WHERE id > 5 RETURNING 1) SELECT count(*) FROM d",
                f"WITH d AS (DELETE FROM {t} WHERE id > 5 RETURNING id) "
                f"UPDATE {t} SET v = 0 WHERE id = 1",
                f"EXPLAIN ANALYZE DELETE FROM {t} WHERE id > 5"):  # (its tag is EXPLAIN)
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute(sql)
        assert ei.value.pgcode == "42501" and "data-modifying WITH" in str(ei.value), ei.value
    assert upstream(appr.pg, f"SELECT count(*) FROM {t}")[0][0] == 10


def test_wait_inside_transaction_keeps_it(appr):
    """A parked statement inside an explicit transaction: the transaction survives the wait
    and commits with the statement's effect."""
    t = "appr_wait_tx"
    make_table(appr.pg, t)
    c = appr.ep.connect(user=BOB)
    out = {}

    def client():
        try:
            cur = c.cursor()
            cur.execute(f"INSERT INTO {t} VALUES (100, 100, 'tx')")
            cur.execute(f"UPDATE {t} SET v = 600 WHERE id = 100")
            c.commit()
            out["ok"] = True
        except Exception as e:  # noqa: BLE001
            out["err"] = e

    th = threading.Thread(target=client)
    th.start()
    rid = appr.wait_pending(BOB, t)
    assert upstream(appr.pg, f"SELECT count(*) FROM {t} WHERE id = 100")[0][0] == 0
    appr.decide(rid)
    th.join(15)
    assert out.get("ok"), out
    assert value_of(appr.pg, t, 100)[0] == 600


_children = []


@pytest.fixture(autouse=True)
def _kill_children():
    """Client processes a failed test leaves behind are killed."""
    yield
    while _children:
        p = _children.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


class Psql:
    """psql -c SQL in the background; stderr lines arrive on a queue as they are printed."""

    def __init__(self, ep, user, sql):
        self.p = subprocess.Popen(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                  env=ep.env(user=user), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        _children.append(self.p)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.put(line)

    def notice(self, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                raise AssertionError("psql printed no NOTICE")
            if "NOTICE" in line:
                return line


def test_wait_psql_approve(appr):
    t = "appr_wait_psql"
    make_table(appr.pg, t)
    p = Psql(appr.ep, BOB, f"UPDATE {t} SET v = 700 WHERE id = 1")
    line = p.notice()
    m = REQ_RE.search(line)
    assert m and "approval required" in line and "waiting up to" in line, line
    rid = m.group(1)
    time.sleep(0.2)
    assert p.p.poll() is None, "psql did not wait"
    appr.decide(rid)
    p.p.wait(15)
    out = p.p.stdout.read()
    assert p.p.returncode == 0 and "UPDATE 1" in out, out
    assert value_of(appr.pg, t, 1)[0] == 700


def test_wait_psql_disconnect_cancels(appr):
    t = "appr_wait_gone"
    make_table(appr.pg, t)
    p = Psql(appr.ep, BOB, f"UPDATE {t} SET v = 800 WHERE id = 1")
    rid = REQ_RE.search(p.notice()).group(1)
    assert appr.request(rid)["state"] == "pending"
    p.p.kill()
    p.p.wait(5)
    deadline = time.time() + 10
    while appr.request(rid)["state"] == "pending" and time.time() < deadline:
        time.sleep(0.1)
    assert appr.request(rid)["state"] == "cancelled"
    st, _, text = appr.api("POST", f"/api/v1/approvals/{rid}/approve", appr.bearer(DBA))
    assert st == 409, text
    assert value_of(appr.pg, t, 1)[0] == 1
    appr.ep.assert_alive()


class Node:
    """node approval_wait.js SQL in the background; stdout lines arrive on a queue."""

    def __init__(self, ep, user, sql, params=None):
        args = [json.dumps(params)] if params is not None else []
        self.p = subprocess.Popen(["node", "approval_wait.js", sql] + args, cwd=NODE_DIR,
                                  env=ep.env(user=user), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        _children.append(self.p)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def first_line(self, timeout=10.0):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node printed nothing within {timeout}s (no NOTICE yet)")
        assert line, "node printed nothing:\n" + self.p.stderr.read()
        return line

    def rest(self, timeout=20.0):
        self.p.wait(timeout)
        out = []
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                return "".join(out), self.p.stderr.read()
            out.append(line)


def test_wait_node_postgres(appr):
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pg")), \
        "node-postgres is not installed: run `make npm-test-deps`"
    t = "appr_wait_node"
    make_table(appr.pg, t)
    n = Node(appr.ep, BOB, f"UPDATE {t} SET v = 900 WHERE id = 1")
    line = n.first_line()
    assert line.startswith("NOTICE sluice: approval required"), line
    rid = REQ_RE.search(line).group(1)
    appr.decide(rid)
    out, err = n.rest()
    assert n.p.returncode == 0 and out.strip() == "OK 1", out + err
    assert value_of(appr.pg, t, 1)[0] == 900

    n = Node(appr.ep, BOB, f"UPDATE {t} SET note = 'z' WHERE id = 2")
    rid = REQ_RE.search(n.first_line()).group(1)
    appr.decide(rid, approve=False)
    out, err = n.rest()
    assert n.p.returncode == 0, out + err
    assert f"ERR 42501 sluice: request {rid} denied by {DBA}" in out and "ALIVE" in out, out
    assert value_of(appr.pg, t, 2)[1] == "n2"

    # the extended protocol (Parse/Bind/Execute with parameters) parks the same way
    n = Node(appr.ep, BOB, f"UPDATE {t} SET v = $1 + v WHERE id = $2", [1000, 3])
    line = n.first_line()
    assert line.startswith("NOTICE sluice: approval required"), line
    rid = REQ_RE.search(line).group(1)
    assert appr.request(rid)["state"] == "pending"
    assert value_of(appr.pg, t, 3)[0] == 3
    appr.decide(rid)
    out, err = n.rest()
    assert n.p.returncode == 0 and out.strip() == "OK 1", out + err
    assert value_of(appr.pg, t, 3)[0] == 1003


# ---------------------------------------------------------------- Slack and webhooks


def slack_sign(body, ts, secret=SLACK_SECRET):
    base = b"v0:" + str(ts).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_body(rid, action="approve", user="dana", response_url=None):
    payload = {"type": "block_actions", "user": {"id": "U0" + user.upper(), "username": user},
               "actions": [{"action_id": action, "value": rid, "type": "button"}]}
    if response_url:
        payload["response_url"] = response_url
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def slack_post(appr, body, ts=None, sig=None):
    ts = int(time.time()) if ts is None else ts
    sig = slack_sign(body, ts) if sig is None else sig
    return appr.api("POST", "/api/v1/slack/actions", raw=body, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig})


def hook_event(receiver, rid, kind):
    def pred(path, headers, body):
        if path != "/hook":
            return False
        js = json.loads(body)
        return js.get("type") == kind and js.get("request", {}).get("id") == rid
    return receiver.wait(pred)


def verify_hook_signature(headers, body):
    h = {k.lower(): v for k, v in headers.items()}
    ts = h["x-sluice-timestamp"]
    assert abs(time.time() - int(ts)) < 60, ts
    want = "sha256=" + hmac.new(HOOK_SECRET.encode(), ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
    assert hmac.compare_digest(want, h["x-sluice-signature"]), (h["x-sluice-signature"], want)
    assert h.get("content-type", "").startswith("application/json")


def test_slack_message_and_signed_callback(appr, receiver):
    t = "appr_slack"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"UPDATE {t} SET v = 42 WHERE id = 1")

    # the Slack incoming webhook got a Block Kit message with the two buttons
    def slack_pred(path, headers, body):
        return path == "/slack" and rid.encode() in body
    _, headers, body = receiver.wait(slack_pred)
    msg = json.loads(body)
    assert isinstance(msg.get("blocks"), list) and msg["blocks"], msg
    buttons = [e for b in msg["blocks"] if b.get("type") == "actions" for e in b.get("elements", [])]
    by_action = {b["action_id"]: b for b in buttons}
    assert set(by_action) >= {"approve", "deny"}, buttons
    assert by_action["approve"]["value"] == rid and by_action["deny"]["value"] == rid
    assert "copilot" in body.decode() and t in body.decode()

    # the webhook got approval.requested, signed
    _, headers, body = hook_event(receiver, rid, "approval.requested")
    verify_hook_signature(headers, body)
    ev = json.loads(body)
    assert ev["request"]["identity"] == "copilot" and ev["request"]["state"] == "pending"
    assert ev["request"]["rule"] == "agents-writes-need-review"
    assert "42" not in ev["request"]["statement"].replace(rid, ""), ev["request"]["statement"]

    good = slack_body(rid, response_url=receiver.url("/slack-response"))
    # forged signature, wrong secret, stale timestamp, missing headers: 401
    st, _, text = slack_post(appr, good, sig="v0=" + "0" * 64)
    assert st == 401, text
    st, _, text = slack_post(appr, good, sig=slack_sign(good, int(time.time()), "other-secret"))
    assert st == 401, text
    old = int(time.time()) - 400
    st, _, text = slack_post(appr, good, ts=old, sig=slack_sign(good, old))
    assert st == 401, text
    st, _, text = appr.api("POST", "/api/v1/slack/actions", raw=good,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 401, text
    # a body changed after signing
    tampered = slack_body(rid, user="mallory")
    ts = int(time.time())
    st, _, text = slack_post(appr, tampered, ts=ts, sig=slack_sign(good, ts))
    assert st == 401, text
    assert appr.request(rid)["state"] == "pending"
    # a Slack user named like the requester may not approve its own request
    st, _, text = slack_post(appr, slack_body(rid, user="copilot"))
    assert st == 403, text
    assert appr.request(rid)["state"] == "pending"

    # the real click
    st, js, text = slack_post(appr, good)
    assert st == 200, text
    r = appr.request(rid)
    assert r["state"] == "approved" and r["approver"] == "slack:dana", r
    _, _, body = receiver.wait(lambda p, h, b: p == "/slack-response")
    assert b"approved by slack:dana" in body, body
    st, _, text = slack_post(appr, good)
    assert st == 409, text

    _, headers, body = hook_event(receiver, rid, "approval.approved")
    verify_hook_signature(headers, body)
    assert json.loads(body)["request"]["approver"] == "slack:dana"

    assert runs(c, f"UPDATE {t} SET v = 43 WHERE id = 2") == 1
    assert value_of(appr.pg, t, 2)[0] == 43


def test_slack_users_mapped_to_identities(workdir, certs, pg, sluice_bin, receiver):
    """With approvals.notify[].slack.users, a click decides as the identity its Slack user
    maps to, under the approver groups and the self-approval check; a user not mapped, or
    mapped to an identity outside the approver groups, is refused (403). Before, anyone who
    could click decided as slack:USERNAME, and a name unlike the requester's passed the
    self-approval check."""
    yaml = f"""approvals:
  approvers: {{ groups: [dba] }}
  timeout: 30s
  notify:
    - slack:
        webhook_url_env: SLUICE_IT_SLACK_URL
        signing_secret_env: SLUICE_IT_SLACK_SECRET
        users:
          - {{ slack_id: U0DANA, identity: "{DBA}" }}
          - {{ slack_id: U0BOBBY, identity: bob@corp.com }}
admin: {{ groups: [admins] }}
"""
    os.environ["SLUICE_IT_SLACK_URL"] = receiver.url("/slack")
    os.environ["SLUICE_IT_SLACK_SECRET"] = SLACK_SECRET
    inst = start_instance(workdir, certs, pg, "approvals-slackmap", RULES, yaml)
    try:
        t = "appr_slack_map"
        make_table(inst.pg, t)
        c = inst.ep.connect(user="copilot")
        c.autocommit = True
        rid = refused_for_approval(c, f"UPDATE {t} SET v = 42 WHERE id = 1")
        for user in ("randomguest", "bobby"):  # not mapped; mapped to a non-approver
            st, _, text = slack_post(inst, slack_body(rid, user=user))
            assert st == 403, (user, st, text)
            assert inst.request(rid)["state"] == "pending"
        st, _, text = slack_post(inst, slack_body(rid, user="dana"))
        assert st == 200, text
        r = inst.request(rid)
        assert r["state"] == "approved" and r["approver"] == DBA, r
        c.close()
    finally:
        inst.ep.close_all()
        inst.sp.assert_clean_exit()


def test_slack_deny(appr, receiver):
    t = "appr_slack_deny"
    make_table(appr.pg, t)
    c = appr.ep.connect(user="copilot")
    c.autocommit = True
    rid = refused_for_approval(c, f"DELETE FROM {t} WHERE id = 1")
    st, _, text = slack_post(appr, slack_body(rid, action="deny", user="erin"))
    assert st == 200, text
    r = appr.request(rid)
    assert r["state"] == "denied" and r["approver"] == "slack:erin", r
    _, headers, body = hook_event(receiver, rid, "approval.denied")
    verify_hook_signature(headers, body)
    refused_for_approval(c, f"DELETE FROM {t} WHERE id = 2")


# ---------------------------------------------------------------- request expiry


def wait_state(inst, rid, state, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        got = inst.request(rid)["state"]
        if got == state:
            return
        assert time.time() < deadline, f"request {rid} is {got}, not {state}, after {timeout}s"
        time.sleep(0.05)


def test_request_expiry(workdir, certs, pg, sluice_bin):
    yaml = "approvals:\n  approvers: { groups: [dba] }\n  timeout: 2s\n"
    inst = start_instance(workdir, certs, pg, "approvals_expiry", RULES, yaml)
    try:
        t = "appr_expiry"
        make_table(pg, t)
        # wait mode: the client gets 42501 "expired" after the timeout
        c = inst.ep.connect(user=BOB)
        c.autocommit = True
        t0 = time.time()
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute(f"UPDATE {t} SET v = 1000 WHERE id = 1")
        took = time.time() - t0
        e = ei.value
        assert e.pgcode == "42501", e
        m = re.fullmatch(r"sluice: request (req_[A-Za-z0-9]+) expired", e.diag.message_primary)
        assert m, e.diag.message_primary
        assert 1.5 <= took <= 10, took
        assert any("waiting up to" in n for n in c.notices), c.notices
        assert value_of(pg, t, 1)[0] == 1
        wait_state(inst, m.group(1), "expired")  # the timer marks it within about 0.2 s
        assert runs(c, "SELECT 1") == 1

        # defer mode: a request nobody decides expires and can no longer be approved
        a = inst.ep.connect(user="copilot")
        a.autocommit = True
        rid = refused_for_approval(a, f"UPDATE {t} SET v = 1001 WHERE id = 2")
        time.sleep(2)
        wait_state(inst, rid, "expired")
        st, _, text = inst.api("POST", f"/api/v1/approvals/{rid}/approve", inst.bearer(DBA))
        assert st == 409, text
        refused_for_approval(a, f"UPDATE {t} SET v = 1002 WHERE id = 3")
    finally:
        inst.ep.close_all()
    inst.sp.assert_clean_exit()


def test_shutdown_cancels_a_wait_before_the_session_ends(workdir, certs, pg, sluice_bin):
    """SIGTERM while a statement waits for approval: the session ends at once (the statement
    has not run, so there is nothing to wait for) with FATAL 57P01 on the wire, the request is
    cancelled, and in the audit trail its cancellation comes before the session's end."""
    yaml = "approvals:\n  approvers: { groups: [dba] }\n  timeout: 60s\n"
    inst = start_instance(workdir, certs, pg, "approvals_drain", RULES, yaml)
    t = "appr_drain"
    make_table(pg, t)
    c = inst.ep.raw_login("shop", BOB)
    c.send(pgwire.message(b"Q", f"UPDATE {t} SET v = 900 WHERE id = 1".encode() + b"\0"))
    rid = inst.wait_pending(BOB, t)
    t0 = time.time()
    inst.sp.signal(signal.SIGTERM)
    msgs = pgwire.expect_error_or_close(c, timeout=25)
    elapsed = time.time() - t0
    errs = [pgwire.parse_fields(p) for t_, p in msgs if t_ == b"E"]
    assert errs and errs[-1].get("C") == "57P01", msgs
    assert "did not run" in errs[-1].get("D", ""), errs
    assert elapsed < 5, f"the waiting session closed only after {elapsed:.1f}s"
    inst.sp.assert_clean_exit()
    assert value_of(pg, t, 1)[0] == 1
    evs = export_events(inst.sp)
    req = [e for e in evs if e.get("request_id") == rid and e["kind"] == "approval_requested"]
    assert req, [e["kind"] for e in evs]
    sid = req[0]["session"]
    mine = [e for e in evs if e.get("session") == sid or e.get("request_id") == rid]
    kinds = [e["kind"] if not e.get("detail", "").startswith("cancelled") else "cancelled"
             for e in mine]
    assert "cancelled" in kinds and "session_end" in kinds, mine
    assert kinds.index("cancelled") < kinds.index("session_end"), mine
    assert mine[kinds.index("cancelled")]["detail"] == "cancelled: shutting down", mine


def test_shutdown_lets_statements_before_a_wait_finish(workdir, certs, pg, sluice_bin):
    """A statement pipelined before the one waiting for approval is still running at SIGTERM:
    it gets its result (server.shutdown_timeout applies), then the session ends with 57P01."""
    yaml = "approvals:\n  approvers: { groups: [dba] }\n  timeout: 60s\n"
    inst = start_instance(workdir, certs, pg, "approvals_drain2", RULES, yaml)
    t = "appr_drain2"
    make_table(pg, t)
    c = inst.ep.raw_login("shop", BOB)
    c.send(pgwire.message(b"Q", b"SELECT pg_sleep(1.5) IS NULL AS slow\0") +
           pgwire.message(b"Q", f"UPDATE {t} SET v = 901 WHERE id = 1".encode() + b"\0"))
    inst.wait_pending(BOB, t)
    inst.sp.signal(signal.SIGTERM)
    msgs = pgwire.expect_error_or_close(c, timeout=25)
    kinds = [t_ for t_, _ in msgs]
    assert (b"C", b"SELECT 1\0") in msgs, msgs
    errs = [pgwire.parse_fields(p) for t_, p in msgs if t_ == b"E"]
    assert errs and errs[-1].get("C") == "57P01", msgs
    assert kinds.index(b"C") < kinds.index(b"E"), kinds
    inst.sp.assert_clean_exit()
    assert value_of(pg, t, 1)[0] == 1


# ---------------------------------------------------------------- values, revokes, own grants


def _in_thread(c, sql, out):
    """Run sql on c in a thread (it parks); out gets "rows" or "err"."""
    def run():
        try:
            out["rows"] = runs(c, sql)
        except Exception as e:  # noqa: BLE001
            out["err"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.fixture(scope="module")
def guarded(workdir, certs, pg, sluice_bin):
    """Role changes and unjudgeable text go to review (wait), as do the dba group's writes
    (defer)."""
    yaml = ("approvals:\n  approvers: { groups: [dba] }\n  timeout: 30s\n"
            "guardrails: { role_escalation: review, unjudgeable: review }\n"
            "admin: { groups: [admins] }\n")
    rules = ["    - { name: dba-writes-review, match: { group: dba, class: [write] }, "
             "action: review, mode: defer }"]
    i = start_instance(workdir, certs, pg, "guarded", rules, yaml)
    yield i
    i.ep.close_all()


def test_review_of_values_shows_them_and_grants_only_that_text(guarded):
    """A statement whose danger is in its values (SET ROLE, text sluice cannot read safely) is
    shown to approvers as sent, and its grant covers only that text: approving SET ROLE
    rv_low does not let SET ROLE rv_high through, and a hidden statement in text under
    standard_conforming_strings off is shown, not blanked to SELECT $1, $2."""
    c = guarded.pg.admin(dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    for r in ("rv_low", "rv_high"):
        cur.execute(f"DROP ROLE IF EXISTS {r}")
        cur.execute(f"CREATE ROLE {r}")
        cur.execute(f"GRANT {r} TO app_scram")
    c.close()
    b = guarded.ep.connect(user=BOB)
    b.autocommit = True
    out = {}
    th = _in_thread(b, "SET ROLE rv_low", out)
    rid = guarded.wait_pending(BOB, "")
    assert guarded.request(rid)["statement"] == "SET ROLE rv_low"
    guarded.decide(rid)
    th.join(15)
    assert "err" not in out, out
    b.cursor().execute("RESET ROLE")
    out = {}
    th = _in_thread(b, "SET ROLE rv_high", out)  # a new request, not the grant
    rid2 = guarded.wait_pending(BOB, "")
    assert rid2 != rid and guarded.request(rid2)["statement"] == "SET ROLE rv_high"
    guarded.decide(rid2, approve=False)
    th.join(15)
    assert "err" in out, out
    b.close()

    t = "rv_doubt"
    make_table(guarded.pg, t)
    d = guarded.ep.connect(user=BOB, options="-c standard_conforming_strings=off")
    d.autocommit = True
    out = {}
    th = _in_thread(d, f"SELECT '\\' , ' ; DELETE FROM {t} WHERE id > 5; -- '", out)
    rid = guarded.wait_pending(BOB, "")
    assert f"DELETE FROM {t}" in guarded.request(rid)["statement"]
    guarded.decide(rid, approve=False)
    th.join(15)
    d.close()


def test_grant_revoked_before_the_parked_statement_resumes(appr):
    """An approval whose grant is revoked before the parked statement resumes (the worker
    learns of a CLI decision up to 100 ms later) refuses it; a resume after the revoke never
    runs it without its grant's row bound."""
    for attempt in range(4):
        t = f"ap_revoked{attempt}"
        make_table(appr.pg, t)
        c = appr.ep.connect(user=BOB)
        c.autocommit = True
        out = {}
        th = _in_thread(c, f"UPDATE {t} SET v = v + 100 WHERE id > 0", out)
        rid = appr.wait_pending(BOB, t)
        r = appr.cli("approve", rid, "--rows", "2", "--uses", "1")
        m = re.search(r"grant (grt_[a-z0-9]+)", r.stdout)
        assert m, (r.stdout, r.stderr)
        appr.api("DELETE", f"/api/v1/grants/{m.group(1)}", appr.bearer(DBA))
        th.join(15)
        changed = upstream(appr.pg, f"SELECT count(*) FROM {t} WHERE v > 100")[0][0]
        assert changed < 10, (attempt, out, changed)  # refused, or bounded to its grant's rows
        c.close()


def test_group_grant_does_not_cover_its_approver(guarded):
    """A group grant covers the group's members, not the approver who made it, even when the
    approver is a member: the two-person rule holds for the approver's own statements."""
    t = "ap_own_group"
    make_table(guarded.pg, t)
    carol = guarded.ep.connect(user=CAROL)
    carol.autocommit = True
    rid = refused_for_approval(carol, f"UPDATE {t} SET v = 1 WHERE id = 1")
    guarded.decide(rid, who=DBA, body={"scope": "group"})
    dba = guarded.ep.connect(user=DBA)
    dba.autocommit = True
    refused_for_approval(dba, f"UPDATE {t} SET v = 1 WHERE id = 1")  # not under the grant
    assert value_of(guarded.pg, t, 1)[0] != 777
    carol.close()
    dba.close()


def test_cancel_request_cancels_a_parked_statement(appr):
    """A CancelRequest (psql's Ctrl-C, a driver's statement timeout) for a statement waiting
    for approval cancels it, as the server would a running one: the client gets 57014 at once,
    the request is cancelled (a later approval cannot run it), and the session goes on."""
    t = "ap_cancel_parked"
    make_table(appr.pg, t)
    c = appr.ep.connect(user=BOB)
    c.autocommit = True
    out = {}
    th = _in_thread(c, f"UPDATE {t} SET v = 900 WHERE id = 1", out)
    rid = appr.wait_pending(BOB, t)
    c.cancel()
    th.join(10)
    assert not th.is_alive() and "err" in out, out
    assert out["err"].pgcode == "57014", out["err"]
    assert appr.request(rid)["state"] == "cancelled"
    st, _, text = appr.api("POST", f"/api/v1/approvals/{rid}/approve", appr.bearer(DBA))
    assert st == 409, text
    assert value_of(appr.pg, t, 1)[0] != 900
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    c.close()


# ---------------------------------------------------------------- a busy state file, a limit


def _timed_together(fns):
    """Run the functions at once, each in a thread; their durations in seconds."""
    secs = [None] * len(fns)

    def run(i):
        t0 = time.monotonic()
        fns[i]()
        secs[i] = time.monotonic() - t0

    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(15)
    return secs


def test_locked_state_file_stalls_no_other_session(appr):
    """While another process holds the state file's write lock (the audit writer does so for
    each of its commits; here the test holds it for 2 s), a statement that needs a new
    approval request does not stall the other sessions: a plain SELECT and a statement an
    existing grant covers (it takes a use) still answer at once on every session, and the
    statement under review gets its refusal with the request id at once too. Its request and
    the grant's use reach the file once the lock is released."""
    import sqlite3
    t = "ap_locked"
    make_table(appr.pg, t)
    g = appr.ep.connect(user="copilot2")
    g.autocommit = True
    rid = refused_for_approval(g, f"UPDATE {t} SET v = 500 WHERE id = 1")
    gid = appr.decide(rid)["grant_id"]
    readers = [appr.ep.connect(user=BOB) for _ in range(4)]  # on both workers
    for r in readers:
        r.autocommit = True
        assert runs(r, "SELECT 1") == 1
    a = appr.ep.connect(user="copilot")
    a.autocommit = True
    lock = sqlite3.connect(os.path.join(appr.sp.config.state_dir, "sluice.db"), timeout=10,
                           isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.0, lambda: (lock.execute("ROLLBACK"), lock.close()))
    release.start()
    out = {}

    def review():
        t0 = time.monotonic()
        try:
            out["rid"] = refused_for_approval(a, f"UPDATE {t} SET v = 600 WHERE id = 2")
        except BaseException as e:  # noqa: BLE001
            out["err"] = e
        out["secs"] = time.monotonic() - t0

    th = threading.Thread(target=review, daemon=True)
    try:
        th.start()
        time.sleep(0.3)  # its request is being made while the file is locked
        secs = _timed_together([lambda r=r: runs(r, "SELECT 1") for r in readers]
                               + [lambda: runs(g, f"UPDATE {t} SET v = 501 WHERE id = 3")])
        selects, granted = secs[:-1], secs[-1]
    finally:
        release.join()
    th.join(10)
    waited = {"plain SELECTs": selects, "under a grant": granted, "under review": out}
    assert None not in secs and max(secs) < 0.5, f"sessions waited for the state file: {waited}"
    assert "err" not in out and out["secs"] < 0.8, f"a review waited for the state file: {waited}"
    assert value_of(appr.pg, t, 3)[0] == 501 and value_of(appr.pg, t, 2)[0] == 2
    # once the lock is gone, the request and the use are in the file (the API lists them)
    assert appr.request(out["rid"])["state"] == "pending"
    st, js, text = appr.api("GET", "/api/v1/grants", appr.bearer(DBA))
    assert [x["uses_left"] for x in js["grants"] if x["id"] == gid] == [99], js
    appr.decide(out["rid"], approve=False)
    for c in readers + [a, g]:
        c.close()


def test_pending_requests_per_identity_are_limited(workdir, certs, pg, sluice_bin):
    """approvals.max_pending_per_identity: an identity with that many requests pending gets
    53400 naming the limit instead of a new request (no request, no notification), audited as
    a refusal; another identity is not affected, nor is a statement a grant covers; once one
    of its requests is decided, the identity may ask again."""
    yaml = ("approvals:\n  approvers: { groups: [dba] }\n  timeout: 30s\n"
            "  max_pending_per_identity: 3\nadmin: { groups: [admins] }\n")
    inst = start_instance(workdir, certs, pg, "limited", RULES, yaml)
    t = "ap_limited"
    make_table(pg, t)
    c = inst.ep.connect(user="copilot")
    c.autocommit = True
    rids = [refused_for_approval(c, f"UPDATE {t} SET v = 10{k} WHERE id = {k}")
            for k in (1, 2, 3)]

    def refused_by_limit(sql):
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute(sql)
        e = ei.value
        assert e.pgcode == "53400", f"{sql}: {e.pgcode} {e}"
        msg = e.diag.message_primary
        assert "approvals.max_pending_per_identity" in msg and "3" in msg, msg
        assert "copilot" in msg, msg
        assert e.diag.message_hint, e
        return msg

    refused_by_limit(f"DELETE FROM {t} WHERE id = 4")
    pending = [r for r in inst.approvals("pending") if r["identity"] == "copilot"]
    assert sorted(r["id"] for r in pending) == sorted(rids), pending
    assert upstream(pg, f"SELECT count(*) FROM {t}")[0][0] == 10
    # another identity asks as usual
    o = inst.ep.connect(user="copilot2")
    o.autocommit = True
    refused_for_approval(o, f"DELETE FROM {t} WHERE id = 4")
    # one decided: a slot is free; its grant covers its statement even at the limit
    inst.decide(rids[0])
    assert runs(c, f"UPDATE {t} SET v = 107 WHERE id = 7") == 1
    rid4 = refused_for_approval(c, f"DELETE FROM {t} WHERE id = 4")
    assert rid4 not in rids
    refused_by_limit(f"DELETE FROM {t} WHERE id = 5")
    assert runs(c, f"UPDATE {t} SET v = 108 WHERE id = 8") == 1
    assert [value_of(pg, t, i)[0] for i in (4, 5, 7, 8)] == [4, 5, 107, 108]
    # a denial frees a slot too
    inst.decide(rids[1], approve=False)
    refused_for_approval(c, f"DELETE FROM {t} WHERE id = 6")
    # the refusals are audited, with why
    evs = []
    deadline = time.time() + 10
    while time.time() < deadline:
        evs = [e for e in export_events(inst.sp) if e["kind"] == "statement"
               and f"DELETE FROM {t}" in (e.get("statement") or "")
               and "max_pending_per_identity" in (e.get("detail") or "")]
        if len(evs) == 2:
            break
        time.sleep(0.2)
    assert len(evs) == 2, evs
    assert all(e["decision"] == "review" and not e.get("request_id") for e in evs), evs
    inst.ep.close_all()
    inst.sp.assert_clean_exit()


def test_state_file_locked_too_long_fails_closed(workdir, certs, pg, sluice_bin):
    """Another connection holds the state file's write lock for longer than SQLite's busy wait
    (5 s). At first the changes wait in memory (a statement under a grant runs at once and its
    use is queued); then sluice uses no grant and makes no request, as when each statement
    wrote the file itself: the statement the grant covers asks for approval, and that is
    refused (`an approval request could not be made`). Once the lock is gone the queue reaches
    the file and the grant serves again; the file counts exactly the uses spent. (The audit is
    off here: its writer would wait for the same lock.)"""
    import sqlite3
    yaml = "approvals:\n  approvers: { groups: [dba] }\n  timeout: 30s\naudit: { enabled: false }\n"
    inst = start_instance(workdir, certs, pg, "approvals_locked_long", RULES, yaml)
    t = "ap_locked_long"
    make_table(pg, t)
    g = inst.ep.connect(user="copilot2")
    g.autocommit = True
    rid = refused_for_approval(g, f"UPDATE {t} SET v = 500 WHERE id = 1")
    gid = inst.decide(rid)["grant_id"]
    lock = sqlite3.connect(os.path.join(inst.sp.config.state_dir, "sluice.db"), timeout=10,
                           isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        assert runs(g, f"UPDATE {t} SET v = 501 WHERE id = 2") == 1
        assert time.monotonic() - t0 < 1
        time.sleep(5.5)
        with pytest.raises(psycopg2.Error) as ei:
            g.cursor().execute(f"UPDATE {t} SET v = 502 WHERE id = 3")
        e = ei.value
        assert e.pgcode == "42501", e
        assert "an approval request could not be made" in e.diag.message_primary, e
        assert e.diag.message_hint == "try again later", e
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert value_of(pg, t, 3)[0] == 3
    deadline = time.time() + 10
    while True:
        try:
            assert runs(g, f"UPDATE {t} SET v = 503 WHERE id = 3") == 1
            break
        except psycopg2.Error:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    assert value_of(pg, t, 3)[0] == 503
    st, js, text = inst.api("GET", "/api/v1/grants", inst.bearer(DBA))
    assert st == 200, text
    assert [(x["uses"], x["uses_left"]) for x in js["grants"] if x["id"] == gid] == [(2, 98)], js
    with open(inst.sp.log, errors="replace") as f:
        log = f.read()
    assert "has not taken the changes queued" in log, log[-2000:]
    g.close()
    inst.ep.close_all()
    inst.sp.assert_clean_exit()


def test_queue_bound_refuses_grant_uses_while_locked(workdir, certs, pg, sluice_bin):
    """While another connection holds the state file's write lock, the changes waiting for it
    are bounded by approvals.max_queued_writes (5 here), long before the 5 s of the busy wait:
    five statements under a grant run (their uses queued), the next ones are refused as when
    the file is behind (42501 `an approval request could not be made`, HINT `try again later`)
    and audited as refused reviews, without a request or a grant. Once the lock is gone the
    queue reaches the file and the grant serves again; after a stop the file counts exactly the
    uses spent. (The lock is held for less than the audit writer's busy wait: the audit is on.)"""
    import sqlite3
    yaml = ("approvals:\n  approvers: { groups: [dba] }\n  timeout: 30s\n"
            "  max_queued_writes: 5\nadmin: { groups: [admins] }\n")
    inst = start_instance(workdir, certs, pg, "approvals_queue_bound", RULES, yaml)
    t = "ap_queue_bound"
    make_table(pg, t, n=20)
    g = inst.ep.connect(user="copilot2")
    g.autocommit = True
    rid = refused_for_approval(g, f"UPDATE {t} SET v = 500 WHERE id = 1")
    gid = inst.decide(rid)["grant_id"]
    db = os.path.join(inst.sp.config.state_dir, "sluice.db")
    lock = sqlite3.connect(db, timeout=10, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        for k in range(2, 7):
            assert runs(g, f"UPDATE {t} SET v = 600 WHERE id = {k}") == 1
        for k in (7, 8):
            with pytest.raises(psycopg2.Error) as ei:
                g.cursor().execute(f"UPDATE {t} SET v = 600 WHERE id = {k}")
            e = ei.value
            assert e.pgcode == "42501", e
            assert "an approval request could not be made" in e.diag.message_primary, e
            assert e.diag.message_hint == "try again later", e
        assert time.monotonic() - t0 < 3, "refused by the 5 s bound, not by the queue's"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert [value_of(pg, t, k)[0] for k in range(2, 9)] == [600] * 5 + [7, 8]
    deadline = time.time() + 10
    while True:
        try:
            assert runs(g, f"UPDATE {t} SET v = 600 WHERE id = 9") == 1
            break
        except psycopg2.Error:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    with open(inst.sp.log, errors="replace") as f:
        log = f.read()
    assert "approvals.max_queued_writes" in log, log[-2000:]
    # audited, in order (ids 1 to 9): the request, the uses with the grant, the refusals as
    # reviews without request or grant
    deadline = time.time() + 10
    while True:
        evs = export_events(inst.sp)
        stmts = sorted((e for e in evs if e["kind"] == "statement"
                        and f"UPDATE {t}" in (e.get("statement") or "")), key=lambda e: e["seq"])
        used = [e for e in evs if e["kind"] == "grant_used" and e.get("grant_id") == gid]
        if len(stmts) == 9 and len(used) == 6 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(stmts) == 9 and len(used) == 6, (stmts, used)
    assert stmts[0].get("request_id") == rid, stmts[0]
    for e in stmts[1:6] + stmts[8:]:
        assert e.get("grant_id") == gid and e["decision"] == "review", e
    for e in stmts[6:8]:
        assert e["decision"] == "review" and not e.get("grant_id") and not e.get("request_id"), e
    g.close()
    inst.ep.close_all()
    inst.sp.assert_clean_exit()
    # the file has every use spent (the server wrote its queue before it exited)
    c = sqlite3.connect(db)
    try:
        assert c.execute("SELECT uses, uses_left FROM grants WHERE id = ?", (gid,)).fetchall() \
            == [(6, 94)]
    finally:
        c.close()


def test_one_server_per_state_file(workdir, certs, pg, sluice_bin):
    """Two servers on one state file would each count a grant's uses and the pending requests
    in their own memory. With the audit off (no audit journal to lock either), the second
    server finds the first one's lock on STATE_PATH.approvals-lock: it starts with approvals
    off, says why, and refuses statements sent to review; the first one goes on, and the CLI
    runs next to it."""
    yaml = "approvals:\n  approvers: { groups: [dba] }\n  timeout: 30s\naudit: { enabled: false }\n"
    first = start_instance(workdir, certs, pg, "approvals_state_a", RULES, yaml)
    ids, secrets = make_identities(EXTRA_IDS)
    cls = type("Rules_approvals_state_b", (RulesConfig,), {"extra_rules": RULES})
    cfg = cls(pg, certs, ids, extra_yaml=yaml, state_dir=first.sp.config.state_dir)
    sp = SluiceProcess(workdir, "approvals_state_b", cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    second = Inst(sp, Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp), pg)
    t = "ap_one_state"
    make_table(pg, t)
    lock = os.path.join(first.sp.config.state_dir, "sluice.db.approvals-lock")
    with open(second.sp.log, errors="replace") as f:
        log = f.read()
    assert "another sluice server uses the state file" in log and lock in log, log
    b = second.ep.connect(user="copilot")
    b.autocommit = True
    with pytest.raises(psycopg2.Error) as ei:
        b.cursor().execute(f"UPDATE {t} SET v = 100 WHERE id = 1")
    assert ei.value.pgcode == "42501", ei.value
    assert "approvals are not configured" in ei.value.diag.message_primary, ei.value
    a = first.ep.connect(user="copilot")
    a.autocommit = True
    rid = refused_for_approval(a, f"UPDATE {t} SET v = 200 WHERE id = 2")
    r = first.cli("list", "--json")
    assert r.returncode == 0 and rid in r.stdout, (r.stdout, r.stderr)
    assert value_of(pg, t, 1)[0] == 1 and value_of(pg, t, 2)[0] == 2
    second.ep.close_all()
    second.sp.assert_clean_exit()
    first.ep.close_all()
    first.sp.assert_clean_exit()
