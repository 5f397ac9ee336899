"""test_admin.py: the admin listener over the wire (issue 7).

One sluice instance of its own, with `admin.groups: [sre]` and approvers in `dba`, serves
the JSON API, the live event stream, /metrics and the dashboard. Checked here, with real
clients (psycopg2 for PostgreSQL, urllib and curl for HTTP, headless Chromium for the page):

- /healthz and /readyz answer without a token; /readyz says 503 when no target is reachable;
  it resolves a target's host name and tries each address, and checks a Unix socket itself;
- every /api/v1 call needs a bearer token (401 with `WWW-Authenticate: Bearer`); a bad token,
  a cookie or HTTP Basic is refused; an identity without the role gets 403; ending a session
  needs admin, approving needs approver;
- sessions are spread evenly over the 2 workers (the kernel's SO_REUSEPORT hash alone often
  leaves them 6/2), and new ones go to the worker that lost sessions; each shows its worker;
- GET /api/v1/sessions lists a live psycopg2 session (identity, kind, target, the client's
  own address, statement count moving, state active while a query runs); DELETE ends it: an
  idle client gets FATAL 57P01 naming the administrator (checked on the wire; psycopg2 hides
  such a message, as it does PostgreSQL's own), a busy psycopg 3 client sees the message at
  once, the upstream query stops, and the audit records a session_end;
- audit search returns the identity's statements in the documented JSON shape, verify says ok;
- the SSE stream delivers a statement's event within 1 s, honours the identity filter and
  keeps hostile statement text intact inside valid JSON;
- /metrics passes `promtool check metrics`, and statements, connections, rows and masked
  values move as statements run;
- the dashboard in Chromium (tests/integration/browser/dashboard.test.js): sign in, see a
  statement live, approve a waiting UPDATE with the button; the waiting client proceeds.
"""

import base64
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg
import psycopg2
import pytest

import conftest
import pgwire
from conftest import ALICE, SluiceConfig, SluiceProcess, Endpoint, make_identities, _state

BOB = "bob@corp.com"
DBA = "dba@corp.com"
HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "browser")

# Identities added to the harness ones: an admin (token), an approver (password identity)
# and a token identity with neither role.
EXTRA_IDS = {
    "ops": dict(kind="service", groups=["sre"], token=True),
    DBA: dict(kind="human", groups=["dba"], token=False),
    "viewer": dict(kind="service", groups=["viewers"], token=True),
}

# Placed before the harness rules: bob's UPDATEs wait for an approver.
REVIEW_RULES = [
    "    - { name: bob-updates-need-review, match: { identity: [bob@corp.com], command: [UPDATE] },",
    "        action: review, mode: wait, reason: updates by bob need a second pair of eyes }",
]

EXTRA_YAML = """admin: { groups: [sre] }
approvals: { approvers: { groups: [dba] }, mode: wait, timeout: 2m }
"""


class AdminConfig(SluiceConfig):
    """The harness config with optional rules in front of the harness rules and, optionally,
    only the targets named in `only_targets`."""

    def __init__(self, *a, rules=(), only_targets=None, **kw):
        super().__init__(*a, **kw)
        self.rules = list(rules)
        self.only_targets = only_targets

    def targets(self):
        ts = super().targets()  # (with the harness's extra_targets)
        if self.only_targets is not None:
            ts = [t for t in ts if t["name"] in self.only_targets]
        return ts

    def text(self):
        lines = super().text().split("\n")
        i = lines.index("  rules:")
        return "\n".join(lines[: i + 1] + self.rules + lines[i + 1 :])


def start_instance(workdir, certs, pg, name, **cfg_kw):
    ids, secrets = make_identities(EXTRA_IDS)
    cfg = AdminConfig(pg, certs, ids, extra_yaml=EXTRA_YAML, **cfg_kw)
    sp = SluiceProcess(workdir, name, cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    return sp, Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp)


class Admin:
    """The admin listener of one instance, with the secrets of its identities."""

    def __init__(self, sp, ep):
        self.sp = sp
        self.ep = ep
        self.base = f"http://127.0.0.1:{sp.config.admin_port}"
        s = sp.secrets
        self.admin_token = s["ops"]  # bare API token of a token identity
        self.approver_token = f"{DBA}:{s[DBA]}"  # NAME:SECRET of a password identity
        self.norole_token = s["viewer"]
        self.bob_token = f"{BOB}:{s[BOB]}"

    def request(self, method, path, token=None, headers=None, body=None, timeout=10):
        """(status, headers, body text); never raises for an HTTP status."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def json(self, method, path, token=None, expect=200, **kw):
        st, hd, body = self.request(method, path, token=token if token is not None else self.admin_token, **kw)
        assert st == expect, f"{method} {path}: HTTP {st}, expected {expect}: {body[:500]}"
        assert hd.get("Content-Type", "").startswith("application/json"), hd.get("Content-Type")
        return json.loads(body)

    def metrics_text(self):
        st, hd, body = self.request("GET", "/metrics")
        assert st == 200, body[:300]
        return hd, body

    def metrics(self):
        return parse_metrics(self.metrics_text()[1])


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$', line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items() if n == name and want <= set(ls))


def local_addr(conn):
    """The client side address of a psycopg2 connection, as "IP:PORT"."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        ip, port = s.getsockname()[:2]
    finally:
        s.close()
    return f"{ip}:{port}"


def bob_conn(ep, app="admin-test"):
    c = psycopg2.connect(**ep.params(user=BOB, application_name=app))
    c.autocommit = True
    return c


def wait_for(pred, timeout=3.0, step=0.05, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class EventStream:
    """`curl -N` on /api/v1/events; lines with their arrival time go into a queue."""

    def __init__(self, url, headers=()):
        cmd = ["curl", "-sS", "-N", "--max-time", "30"]
        for h in headers:
            cmd += ["-H", h]
        self.proc = subprocess.Popen(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put((time.monotonic(), raw.decode(errors="replace").rstrip("\r\n")))
        self.lines.put((time.monotonic(), None))

    def next_line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None, None

    def wait_line(self, pred, timeout):
        """First line satisfying pred within timeout, as (arrival time, line); lines read on
        the way are returned in `seen`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, seen
            t, line = self.next_line(left)
            if line is None:
                if t is not None:
                    err = self.proc.stderr.read().decode(errors="replace")
                    raise AssertionError(f"event stream ended: {err}; lines: {seen}")
                return None, None, seen
            seen.append(line)
            if pred(line):
                return t, line, seen

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def adm(request, workdir, certs, pg):
    if conftest.DIRECT:
        pytest.skip("tests sluice-specific behaviour (SLUICE_DIRECT=1)")
    request.getfixturevalue("sluice_bin")
    sp, ep = start_instance(workdir, certs, pg, "admin", rules=REVIEW_RULES)
    wait_port_http(sp.config.admin_port)
    yield Admin(sp, ep)
    ep.close_all()
    if not sp.exit_checked:
        sp.assert_clean_exit()


def wait_port_http(port, timeout=10.0):
    """The admin listener accepts connections (it starts next to the PostgreSQL one)."""
    conftest.wait_port(port, timeout=timeout)


# ---------------------------------------------------------------- health


def test_healthz_and_readyz_without_auth(adm):
    st, hd, body = adm.request("GET", "/healthz")
    assert st == 200, body
    assert "ok" in body
    st, hd, body = adm.request("GET", "/readyz")
    assert st == 200, f"/readyz with PostgreSQL up: {st} {body}"


def test_one_address_cannot_hold_every_admin_connection(adm):
    """A client trickling header lines from one address (slowloris) held all 256 slots, and
    /healthz, /readyz and the approvals API refused everyone else. An address now holds 32."""
    socks = []
    try:
        for _ in range(300):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", adm.sp.config.admin_port))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            except OSError:
                pass
            socks.append(s)
        time.sleep(0.5)
        st, hd, body = adm.request("GET", "/healthz")
        assert st == 200, body
    finally:
        for s in socks:
            s.close()


def test_readyz_not_ready_when_no_target_reachable(workdir, certs, pg, sluice_only, sluice_bin):
    sp, ep = start_instance(workdir, certs, pg, "admin-down", only_targets={"shop_down"})
    try:
        a = Admin(sp, ep)
        wait_port_http(sp.config.admin_port)
        st, _, body = a.request("GET", "/readyz")
        assert st == 503, f"/readyz with the only target down: {st} {body}"
        assert "not ready" in body and "target" in body, body
        st, _, body = a.request("GET", "/healthz")
        assert st == 200, body
    finally:
        sp.assert_clean_exit()


def test_readyz_probes_host_names_and_unix_sockets(workdir, certs, pg, sluice_only, sluice_bin):
    """A target named by host name is probed at each of its addresses ("localhost", which
    /etc/hosts may also give as ::1, where PostgreSQL does not listen); a Unix socket
    directory counts as reachable only when its .s.PGSQL.<port> socket accepts, not because
    the directory exists."""
    def target(name, host):
        return dict(name=name, host=host, port=pg.port, user="app_scram", env="SLUICE_T_SCRAM",
                    sslmode="disable")
    empty_dir = os.path.join(workdir, "no-socket-here")
    os.makedirs(empty_dir, exist_ok=True)
    cases = ((target("shop_by_name", "localhost"), 200),
             (target("shop_socket", pg.sockdir), 200),
             (target("shop_no_socket", empty_dir), 503))
    for t, want in cases:
        sp, ep = start_instance(workdir, certs, pg, f"admin-{t['name']}", only_targets={t["name"]},
                                extra_targets=[t])
        try:
            a = Admin(sp, ep)
            wait_port_http(sp.config.admin_port)
            st, _, body = a.request("GET", "/readyz")
            assert st == want, f"/readyz with only {t['name']} ({t['host']}): {st} {body}"
        finally:
            sp.assert_clean_exit()


# ---------------------------------------------------------------- authentication and roles

READ_PATHS = ["/api/v1/sessions", "/api/v1/audit", "/api/v1/audit/verify", "/api/v1/approvals",
              "/api/v1/events", "/api/v1/grants", "/api/v1/whoami"]


def assert_401(adm, st, hd, body, what):
    assert st == 401, f"{what}: HTTP {st}, expected 401: {body[:300]}"
    www = hd.get("WWW-Authenticate", "")
    assert www.startswith("Bearer"), f"{what}: WWW-Authenticate {www!r}"
    assert "error" in json.loads(body), body


def test_api_needs_a_bearer_token(adm):
    for path in READ_PATHS + ["/api/v1/no-such-endpoint"]:
        st, hd, body = adm.request("GET", path, timeout=5)
        assert_401(adm, st, hd, body, f"GET {path} without a token")
        for bad in ["not-a-token", "ops:wrong-secret", adm.admin_token + "x",
                    f"{BOB}:{adm.sp.secrets[ALICE]}"]:
            st, hd, body = adm.request("GET", path, token=bad, timeout=5)
            assert_401(adm, st, hd, body, f"GET {path} with a bad token")
    # the right secret sent any other way than a bearer header is refused
    tok = adm.admin_token
    for h in [{"Cookie": f"token={tok}; session={tok}; sluice_token={tok}"},
              {"Authorization": "Basic " + base64.b64encode(f"ops:{tok}".encode()).decode()},
              {"Authorization": tok},
              {"Authorization": "Bearer"}]:
        st, hd, body = adm.request("GET", "/api/v1/sessions", headers=h)
        assert_401(adm, st, hd, body, f"GET /api/v1/sessions with {list(h)[0]} {h[list(h)[0]][:12]}...")
    # the query-string token is only for the event stream
    st, hd, body = adm.request("GET", f"/api/v1/sessions?access_token={tok}")
    assert_401(adm, st, hd, body, "access_token outside /api/v1/events")
    st, hd, body = adm.request("DELETE", "/api/v1/sessions/1")
    assert_401(adm, st, hd, body, "DELETE without a token")
    st, hd, body = adm.request("POST", "/api/v1/approvals/req_x/approve", body={})
    assert_401(adm, st, hd, body, "approve without a token")


def test_roles(adm):
    me = adm.json("GET", "/api/v1/whoami")
    assert me["name"] == "ops" and me["admin"] is True and me["approver"] is False, me
    assert me["groups"] == ["sre"], me
    me = adm.json("GET", "/api/v1/whoami", token=adm.approver_token)
    assert me["name"] == DBA and me["admin"] is False and me["approver"] is True, me
    # a valid identity without a role: 403 wherever a role is needed
    for tok, who in [(adm.norole_token, "viewer"), (adm.bob_token, BOB)]:
        for path in [p for p in READ_PATHS if p not in ("/api/v1/whoami", "/api/v1/events")]:
            st, _, body = adm.request("GET", path, token=tok)
            assert st == 403, f"GET {path} as {who} (no role): HTTP {st}: {body[:300]}"
            assert "error" in json.loads(body)
        st, _, body = adm.request("DELETE", "/api/v1/sessions/1", token=tok)
        assert st == 403, f"DELETE session as {who}: HTTP {st}: {body[:300]}"
    # an approver reads but may not end sessions; an admin may not approve
    adm.json("GET", "/api/v1/sessions", token=adm.approver_token)
    st, _, body = adm.request("DELETE", "/api/v1/sessions/1", token=adm.approver_token)
    assert st == 403, f"DELETE session as an approver: HTTP {st}: {body[:300]}"
    st, _, body = adm.request("POST", "/api/v1/approvals/req_nothing/approve", token=adm.admin_token,
                              body={})
    assert st == 403, f"approve as an admin without the approver role: HTTP {st}: {body[:300]}"


def test_no_cookies_no_cors_and_static_headers(adm):
    st, hd, body = adm.request("GET", "/api/v1/sessions", token=adm.admin_token,
                               headers={"Origin": "https://evil.example"})
    assert st == 200
    assert hd.get("Set-Cookie") is None
    assert hd.get("Access-Control-Allow-Origin") is None
    st, hd, body = adm.request("GET", "/")
    assert st == 200 and "<html" in body.lower()
    assert hd.get("Set-Cookie") is None
    assert "default-src 'self'" in hd.get("Content-Security-Policy", ""), dict(hd)
    assert hd.get("X-Frame-Options") == "DENY"
    assert hd.get("X-Content-Type-Options") == "nosniff"


# ---------------------------------------------------------------- sessions


def find_session(adm, addr):
    for s in adm.json("GET", "/api/v1/sessions")["sessions"]:
        if s["client_addr"] == addr:
            return s
    return None


def test_sessions_list_and_kill(adm):
    c = bob_conn(adm.ep, app="admin-sessions")
    try:
        cur = c.cursor()
        cur.execute("SELECT 1")
        addr = local_addr(c)
        s = wait_for(lambda: find_session(adm, addr), what=f"session from {addr} in the list")
        assert s["identity"] == BOB, s
        assert s["identity_kind"] == "human", s
        assert s["groups"] == ["analysts"], s
        assert s["target"] == "shop", s
        assert s["application_name"] == "admin-sessions", s
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", s["started_at"]), s
        assert re.match(r"^[A-Za-z0-9_.:-]{1,128}$", s["id"]), s
        assert s["state"] in ("idle", "active"), s
        before = s["statements"]
        assert before >= 1, s
        for i in range(4):
            cur.execute("SELECT id FROM orders WHERE id <= %s", (3,))
            assert len(cur.fetchall()) == 3
        s2 = wait_for(lambda: (lambda x: x if x and x["statements"] >= before + 4 else None)(
            find_session(adm, addr)), what="statement count to move by 4")
        assert s2["id"] == s["id"]
        assert s2["rows"] >= s["rows"] + 12, (s, s2)

        # an approver may not end it; an unknown or malformed id is refused
        st, _, body = adm.request("DELETE", f"/api/v1/sessions/{s['id']}", token=adm.approver_token)
        assert st == 403, body
        st, _, body = adm.request("DELETE", "/api/v1/sessions/987654321", token=adm.admin_token)
        assert st == 404, body
        st, _, body = adm.request("DELETE", "/api/v1/sessions/bad%20id%3Cx%3E", token=adm.admin_token)
        assert st in (400, 404), body
        cur.execute("SELECT 1")  # still alive after all that

        res = adm.json("DELETE", f"/api/v1/sessions/{s['id']}")
        assert res == {"ended": s["id"]}, res
        # libpq does not read while idle: the FATAL sent then is lost to the next query, as
        # with PostgreSQL's own pg_terminate_backend; the query fails and the link is closed.
        err = None
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                cur.execute("SELECT 1")
                time.sleep(0.05)
            except psycopg2.Error as e:
                err = e
                break
        assert err is not None, "the session still runs queries after DELETE"
        assert isinstance(err, psycopg2.OperationalError), repr(err)
        assert c.closed, "connection not closed after the administrator ended it"
        wait_for(lambda: find_session(adm, addr) is None, what="the ended session to leave the list")

        # the audit has the session's end
        def ends():
            evs = adm.json("GET", f"/api/v1/audit?identity={BOB}&kind=session_end&limit=50")["events"]
            return [e for e in evs if str(e.get("session")) == s["id"]]
        ev = wait_for(ends, what="a session_end audit event")
        assert ev[0]["kind"] == "session_end" and ev[0]["identity"] == BOB, ev
    finally:
        c.close()
    adm.ep.assert_alive()


def test_sessions_spread_over_workers(adm):
    """16 connections opened one after the other land 8 and 8 on the 2 workers (by the
    kernel's hash alone, one time in five); after the 8 of worker 0 close, the next 8 all go
    to worker 0. Every session answers queries wherever it lives."""

    def by_worker():
        """{client address: worker} of every listed session, once the list holds ours."""
        return {s["client_addr"]: s["worker"] for s in adm.json("GET", "/api/v1/sessions")["sessions"]}

    def open_some(n):
        out = []
        for _ in range(n):
            c = bob_conn(adm.ep, app="admin-spread")
            c.cursor().execute("SELECT 1")
            out.append(c)
        return out

    conns = open_some(16)
    try:
        addrs = [local_addr(c) for c in conns]
        seen = wait_for(lambda: (lambda m: m if all(a in m for a in addrs) else None)(by_worker()),
                        what="the 16 sessions in the list")
        counts = [list(seen.values()).count(w) for w in (0, 1)]
        assert sum(counts) == len(seen), seen  # every session names worker 0 or 1
        assert abs(counts[0] - counts[1]) <= 1, f"sessions per worker {counts}: {seen}"
        on0 = [c for c, a in zip(conns, addrs) if seen[a] == 0]
        assert len(on0) >= 7, (counts, seen)
        for c in on0:
            c.close()
        conns = [c for c in conns if not c.closed]
        wait_for(lambda: list(by_worker().values()).count(0) == counts[0] - len(on0),
                 what="the closed sessions to leave the list")
        fresh = open_some(len(on0))
        conns += fresh
        now = wait_for(lambda: (lambda m: m if all(local_addr(c) in m for c in fresh) else None)(
            by_worker()), what="the new sessions in the list")
        # all to worker 0 (the last one may tie, when another test left a session there)
        went = [now[local_addr(c)] for c in fresh]
        assert went.count(0) >= len(fresh) - 1, (went, now)
        assert abs(list(now.values()).count(0) - list(now.values()).count(1)) <= 1, now
        for c in conns:
            cur = c.cursor()
            cur.execute("SELECT count(*) FROM orders")
            assert cur.fetchone()[0] > 0
    finally:
        for c in conns:
            c.close()
    adm.ep.assert_alive()


def test_kill_sends_fatal_57P01_on_the_wire(adm):
    """An idle client gets exactly one ErrorResponse FATAL 57P01 naming the administrator,
    then the connection closes."""
    c = adm.ep.raw_login(user=BOB)
    try:
        addr = "%s:%d" % c.sock.getsockname()[:2]
        s = wait_for(lambda: find_session(adm, addr), what=f"raw session {addr} in the list")
        assert s["identity"] == BOB and s["statements"] == 0, s
        adm.json("DELETE", f"/api/v1/sessions/{s['id']}")
        msgs = pgwire.expect_error_or_close(c, 5)
    finally:
        c.close()
    assert len(msgs) == 1 and msgs[0][0] == b"E", msgs
    e = pgwire.parse_fields(msgs[0][1])
    assert e.get("S") == "FATAL" and e.get("C") == "57P01", e
    assert e.get("M") == "sluice: session ended by an administrator (ops)", e


def test_session_state_active_while_a_query_runs(adm):
    c = bob_conn(adm.ep, app="admin-active")
    addr = local_addr(c)
    th = threading.Thread(target=lambda: c.cursor().execute("SELECT pg_sleep(1.5)"), daemon=True)
    try:
        s = wait_for(lambda: find_session(adm, addr), what="the session in the list")
        assert s["state"] == "idle", s
        th.start()
        wait_for(lambda: (lambda x: x and x["state"] == "active")(find_session(adm, addr)),
                 timeout=1.2, what='state "active" while pg_sleep(1.5) runs')
    finally:
        th.join(5)
        c.close()


def test_kill_a_busy_session(adm):
    run_and_kill_busy(adm, "SELECT pg_sleep(8)")


def test_kill_stops_the_upstream_query(adm):
    """Ending a session also stops what it runs upstream (as pg_terminate_backend would),
    instead of leaving the query running until PostgreSQL next writes to the closed link."""
    query = "SELECT pg_sleep(6) AS kill_upstream_marker"
    run_and_kill_busy(adm, query)

    def upstream_gone():
        a = adm.ep.pg.admin()
        try:
            cur = a.cursor()
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active' "
                        "AND pid <> pg_backend_pid()", ("%kill_upstream_marker%",))
            return cur.fetchone()[0] == 0
        finally:
            a.close()
    wait_for(upstream_gone, timeout=2, what="the upstream query of the ended session to stop")


def run_and_kill_busy(adm, query):
    """A client waiting for its query's answer sees the administrator's message at once.
    psycopg 3: psycopg2 hides a FATAL that precedes EOF (even PostgreSQL's own
    pg_terminate_backend message) behind "server closed the connection unexpectedly"."""
    p = adm.ep.params(user=BOB, application_name="admin-busy")
    c = psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                        password=p["password"], sslmode="disable", autocommit=True,
                        application_name="admin-busy")
    s = socket.socket(fileno=os.dup(c.fileno()))
    addr = "%s:%d" % s.getsockname()[:2]
    s.close()
    out = {}

    def sleeper():
        t0 = time.monotonic()
        try:
            c.execute(query)
            out["result"] = "completed"
        except psycopg.Error as e:
            out["error"] = e
        out["took"] = time.monotonic() - t0

    th = threading.Thread(target=sleeper, daemon=True)
    th.start()
    try:
        s = wait_for(lambda: find_session(adm, addr), what="the session in the list")
        time.sleep(0.5)  # the query is on its way to PostgreSQL
        adm.json("DELETE", f"/api/v1/sessions/{s['id']}")
        th.join(4)
        assert not th.is_alive(), "a busy session still runs 4 s after DELETE"
        assert "error" in out, out
        assert "session ended by an administrator (ops)" in str(out["error"]), str(out["error"])
        assert out["took"] < 5, out
    finally:
        c.close()


# ---------------------------------------------------------------- audit search


def test_audit_search_and_verify(adm):
    c = bob_conn(adm.ep, app="admin-audit")
    markers = [f"audit_search_marker_{i}" for i in range(3)]
    try:
        cur = c.cursor()
        for m in markers:
            cur.execute(f"SELECT id AS {m} FROM customers WHERE id = 7")
            assert cur.fetchall() == [(7,)]
    finally:
        c.close()

    def found():
        evs = adm.json("GET", f"/api/v1/audit?identity={BOB}&limit=5")["events"]
        text = json.dumps(evs)
        return evs if all(m in text for m in markers) else None
    evs = wait_for(found, what="bob's statements in the audit search")
    assert 1 <= len(evs) <= 5, len(evs)
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    for e in evs:
        assert e["identity"] == BOB, e
        for k in ("seq", "time", "kind", "identity", "hash"):
            assert k in e, (k, e)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", e["time"]), e
    stmts = [e for e in evs if e["kind"] == "statement" and
             any(m in e.get("statement", "") for m in markers)]
    assert len(stmts) == 3, evs
    for e in stmts:
        assert e["identity_kind"] == "human" and e["target"] == "shop", e
        assert e["decision"] == "allow", e
        # statement text is stored normalized: the literal is a parameter
        assert "= $1" in e["statement"] and "= 7" not in e["statement"], e["statement"]
        assert "prev_hash" in e and re.match(r"^[0-9a-f]{16,}$", e["hash"]), e

    # filters: decision and a paging cursor
    after = stmts[0]["seq"]
    later = adm.json("GET", f"/api/v1/audit?identity={BOB}&after={after}&limit=1000")["events"]
    assert later and all(e["seq"] > after for e in later)
    assert all(e["identity"] == BOB for e in later)
    none = adm.json("GET", "/api/v1/audit?identity=nobody-at-all&limit=5")["events"]
    assert none == []
    for bad in ["limit=0", "limit=1001", "limit=abc", "since=yesterday"]:
        st, _, body = adm.request("GET", f"/api/v1/audit?{bad}", token=adm.admin_token)
        assert st == 400, f"/api/v1/audit?{bad}: HTTP {st}: {body[:200]}"

    v = adm.json("GET", "/api/v1/audit/verify", token=adm.approver_token)
    assert v["ok"] is True, v
    assert v["first_broken_seq"] is None, v
    assert v["events"] >= max(seqs), v
    assert isinstance(v.get("message"), str), v


# ---------------------------------------------------------------- live events


def test_events_stream_delivers_within_a_second(adm):
    url = f"{adm.base}/api/v1/events?identity={BOB}"
    es = EventStream(url, [f"Authorization: Bearer {adm.admin_token}"])
    try:
        # the preamble says the stream is open (and subscribed)
        t, line, seen = es.wait_line(lambda l: l.startswith(":"), 5)
        assert line is not None, f"no stream preamble; lines: {seen}"
        # alice's statement is filtered out, bob's two arrive each within a second
        a = psycopg2.connect(**adm.ep.params(user=ALICE))
        a.autocommit = True
        a.cursor().execute("SELECT 1 AS sse_alice_marker")
        a.close()
        c = bob_conn(adm.ep, app="admin-sse")
        try:
            cur = c.cursor()
            for marker in ("sse_bob_marker_one", "sse_bob_marker_two"):
                cur.execute(f"SELECT 42 AS {marker}")
                done = time.monotonic()
                t, line, seen = es.wait_line(lambda l: l.startswith("data:") and marker in l, 3)
                assert line is not None, f"no event for {marker} within 3 s; lines: {seen}"
                assert t - done < 1.0, f"event for {marker} arrived {t - done:.3f}s after the statement"
                assert not any("sse_alice_marker" in l for l in seen), seen
                ids = [l for l in seen if l.startswith("id:")]
                assert ids and re.match(r"^id: ?\d+$", ids[-1]), seen
                ev = json.loads(line[5:].strip())
                assert ev["kind"] == "statement" and ev["identity"] == BOB, ev
                assert ev["identity_kind"] == "human" and ev["target"] == "shop", ev
                assert ev["decision"] == "allow", ev
                assert marker in ev["statement"] and "$1" in ev["statement"], ev

            # statement text is user input: quotes, backslashes, HTML and control characters
            # come back intact inside valid JSON
            hostile = 'x"</script><img src=y onerror=alert(1)>\\\t\u00e9'
            ident = '"' + hostile.replace('"', '""') + '"'
            cur.execute(f"SELECT 7 AS {ident}")
            t, line, seen = es.wait_line(lambda l: l.startswith("data:") and "onerror" in l, 3)
            assert line is not None, f"no event for the hostile statement; lines: {seen}"
            assert "\n" not in line
            ev = json.loads(line[5:].strip())
            assert ident in ev["statement"], ev["statement"]
        finally:
            c.close()
    finally:
        es.close()


def test_events_stream_auth(adm):
    # the query-string token works for the stream only (EventSource cannot set headers)
    es = EventStream(f"{adm.base}/api/v1/events?access_token={adm.approver_token}")
    try:
        t, line, seen = es.wait_line(lambda l: l.startswith(":"), 5)
        assert line is not None, f"stream with ?access_token= did not open: {seen}"
    finally:
        es.close()
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                        f"{adm.base}/api/v1/events?access_token=wrong"], capture_output=True, text=True)
    assert r.stdout == "401", r.stdout + r.stderr
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                        "-H", f"Authorization: Bearer {adm.norole_token}", f"{adm.base}/api/v1/events"],
                       capture_output=True, text=True)
    assert r.stdout == "403", r.stdout + r.stderr


# ---------------------------------------------------------------- metrics


def test_metrics_exposition_parses(adm):
    hd, text = adm.metrics_text()
    assert hd.get("Content-Type", "").startswith("text/plain"), hd.get("Content-Type")
    assert "version=0.0.4" in hd.get("Content-Type", ""), hd.get("Content-Type")
    promtool_check(text)
    for name in ["sluice_connections_current", "sluice_connections_total", "sluice_statements_total",
                 "sluice_statement_overhead_seconds_bucket", "sluice_upstream_latency_seconds_count",
                 "sluice_rows_total", "sluice_bytes_total", "sluice_audit_queue_depth",
                 "sluice_audit_events_written_total", "sluice_admin_http_requests_total"]:
        assert re.search(rf"^{name}[{{ ]", text, re.M), f"{name} missing from /metrics"
    parse_metrics(text)  # every sample line in the shape this file reads


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)", pytrace=False)
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, f"promtool check metrics: exit {r.returncode}\n{r.stdout}{r.stderr}"


def test_metrics_counters_move(adm):
    """Every expected movement is checked; all that did not move are reported together."""
    problems = []

    def check(ok, msg):
        if not ok:
            problems.append(msg)

    def delta(m_after, m_before, name, **labels):
        return metric(m_after, name, **labels) - metric(m_before, name, **labels)

    READ = {"decision": "allow", "class": "read"}
    m0 = adm.metrics()
    c = bob_conn(adm.ep, app="admin-metrics")
    n = 6
    try:
        m1 = adm.metrics()
        check(delta(m1, m0, "sluice_connections_current", kind="human") == 1,
              "sluice_connections_current{kind=human} moved by %g on a new session, expected 1"
              % delta(m1, m0, "sluice_connections_current", kind="human"))
        check(delta(m1, m0, "sluice_connections_total", kind="human") == 1,
              "sluice_connections_total{kind=human} moved by %g, expected 1"
              % delta(m1, m0, "sluice_connections_total", kind="human"))
        cur = c.cursor()
        for i in range(n):
            cur.execute("SELECT id FROM orders WHERE id = %s", (i + 1,))
            assert cur.fetchall() == [(i + 1,)]
        cur.execute("SELECT email FROM customers WHERE id <= 3 ORDER BY id")
        emails = [r[0] for r in cur.fetchall()]
        assert len(emails) == 3
        assert not set(emails) & {"user1@example.com", "user2@example.com", "user3@example.com"}, \
            f"bob sees raw emails: {emails}"
        try:
            m2 = wait_for(lambda: (lambda m: m if delta(m, m0, "sluice_statements_total", **READ) >= n + 1
                                   else None)(adm.metrics()), what="sluice_statements_total")
        except AssertionError:
            m2 = adm.metrics()
        d = delta(m2, m0, "sluice_statements_total", **READ)
        check(d == n + 1, f"sluice_statements_total{{decision=allow,class=read}} moved by {d:g} "
              f"after {n + 1} SELECTs, expected {n + 1}")
        d = delta(m2, m0, "sluice_masked_values_total", detector="email")
        check(d >= 3, f"sluice_masked_values_total{{detector=email}} moved by {d:g} after 3 emails masked")
        d = delta(m2, m0, "sluice_rows_total", direction="to_client")
        check(d >= n + 3, f"sluice_rows_total{{direction=to_client}} moved by {d:g}, expected >= {n + 3}")
        for h in ("sluice_statement_overhead_seconds_count", "sluice_upstream_latency_seconds_count"):
            d = delta(m2, m0, h)
            check(d >= n + 1, f"{h} moved by {d:g} after {n + 1} statements, expected >= {n + 1}")
        for dirn in ("from_client", "to_client"):
            check(delta(m2, m0, "sluice_bytes_total", direction=dirn) > 0,
                  f"sluice_bytes_total{{direction={dirn}}} did not move")
        # reads are committed by the audit writer's group commit, within 100 ms
        try:
            m3 = wait_for(lambda: (lambda m: m if delta(m, m0, "sluice_audit_events_written_total")
                                   >= n + 1 else None)(adm.metrics()), what="audit events written")
        except AssertionError:
            m3 = adm.metrics()
        check(delta(m3, m0, "sluice_audit_events_written_total") >= n + 1,
              "sluice_audit_events_written_total moved by %g" % delta(m3, m0, "sluice_audit_events_written_total"))
    finally:
        c.close()
    try:
        wait_for(lambda: delta(adm.metrics(), m0, "sluice_connections_current", kind="human") == 0,
                 what="close")
    except AssertionError:
        problems.append("sluice_connections_current{kind=human} did not drop back after close")
    # a failed login counts
    f0 = adm.metrics()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(**adm.ep.params(user=BOB, password="wrong"))
    try:
        wait_for(lambda: delta(adm.metrics(), f0, "sluice_auth_failures_total") >= 1, what="auth")
    except AssertionError:
        problems.append("sluice_auth_failures_total did not move on a failed login")
    # the admin listener counts its own requests, failures apart
    h = adm.metrics()
    adm.request("GET", "/api/v1/sessions")  # 401
    d = delta(adm.metrics(), h, "sluice_admin_http_requests_total", result="failed")
    check(d >= 1, f"sluice_admin_http_requests_total{{result=failed}} moved by {d:g} after a 401")
    # an SSE client shows in the gauge
    es = EventStream(f"{adm.base}/api/v1/events", [f"Authorization: Bearer {adm.admin_token}"])
    try:
        es.wait_line(lambda l: l.startswith(":"), 5)
        check(metric(adm.metrics(), "sluice_admin_sse_clients") >= 1,
              "sluice_admin_sse_clients is 0 with a stream open")
    finally:
        es.close()
    assert not problems, "metrics that did not move as expected:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------- the dashboard in Chromium


def test_dashboard_in_chromium(adm, tmp_path):
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    node = shutil.which("node")
    if not (os.access(chromium, os.X_OK) and node):
        pytest.skip("needs /usr/bin/chromium and node")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("playwright-core not installed and no npm")
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=BROWSER_DIR,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm install failed:\n{r.stdout}\n{r.stderr}"

    # bob's UPDATE waits for an approver
    result = {}

    def waiting_update():
        c = bob_conn(adm.ep, app="admin-browser")
        try:
            cur = c.cursor()
            cur.execute("UPDATE orders SET note = 'approved in the browser' WHERE id = 11")
            result["rowcount"] = cur.rowcount
            result["notices"] = list(c.notices)
        except Exception as e:  # reported by the main thread
            result["error"] = e
        finally:
            c.close()

    th = threading.Thread(target=waiting_update, daemon=True)
    th.start()

    def pending():
        evs = adm.json("GET", "/api/v1/approvals?state=pending", token=adm.approver_token)["approvals"]
        return [a for a in evs if a["identity"] == BOB and a["command"] == "UPDATE"]
    reqs = wait_for(pending, timeout=10, what="bob's UPDATE pending approval")
    assert len(reqs) == 1, reqs
    req = reqs[0]
    assert req["state"] == "pending" and req["rule"] == "bob-updates-need-review", req
    assert req["mode"] == "wait" and req["target"] == "shop", req
    assert th.is_alive() and not result, f"the UPDATE did not wait: {result}"

    # while the page runs, bob keeps running a statement it must see in the live stream
    marker = "browser_live_marker"
    stop = threading.Event()

    def live_statements():
        c = bob_conn(adm.ep, app="admin-browser-live")
        try:
            while not stop.is_set():
                c.cursor().execute(f"SELECT 1 AS {marker}")
                stop.wait(0.5)
        finally:
            c.close()

    live = threading.Thread(target=live_statements, daemon=True)
    live.start()

    shot = str(tmp_path / "dashboard.png")
    env = dict(os.environ, SLUICE_ADMIN_URL=adm.base + "/", SLUICE_ADMIN_TOKEN=adm.approver_token,
               SLUICE_EXPECT_SQL=marker, SLUICE_APPROVAL_ID=req["id"], SLUICE_SCREENSHOT=shot,
               CHROMIUM=chromium)
    try:
        r = subprocess.run([node, "--test", "dashboard.test.js"], cwd=BROWSER_DIR, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        live.join(5)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"node --test dashboard.test.js failed ({r.returncode}):\n{out[-4000:]}"
    # a skipped test would also exit 0: insist it ran and passed
    assert re.search(r"^# pass 1$", out, re.M) and re.search(r"^# skipped 0$", out, re.M), out[-2000:]

    th.join(10)
    assert not th.is_alive(), "the waiting UPDATE did not proceed after the approval"
    assert "error" not in result, f"the approved UPDATE failed: {result.get('error')}"
    assert result["rowcount"] == 1, result
    assert any("approval required" in n for n in result["notices"]), result["notices"]
    done = adm.json("GET", "/api/v1/approvals?state=approved", token=adm.approver_token)["approvals"]
    assert any(a["id"] == req["id"] and a.get("approver", DBA) == DBA for a in done), done
    # the decision shows in /metrics, which still passes promtool with approval series in it
    _, text = adm.metrics_text()
    promtool_check(text)
    ms = parse_metrics(text)
    assert metric(ms, "sluice_approvals_decided_total", outcome="approved") >= 1, \
        [k for k in ms if k[0].startswith("sluice_approvals")]
    assert metric(ms, "sluice_approvals_pending") == 0
    assert os.path.getsize(shot) > 10000, "screenshot missing or empty"
    print(f"dashboard screenshot: {shot}")


def test_dashboard_test_fails_with_a_wrong_token(adm, tmp_path):
    """The browser test must be able to fail: with a wrong token, sign-in must not work."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    node = shutil.which("node")
    if not (os.access(chromium, os.X_OK) and node and
            os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core"))):
        pytest.skip("needs /usr/bin/chromium, node and playwright-core")
    env = dict(os.environ, SLUICE_ADMIN_URL=adm.base + "/", SLUICE_ADMIN_TOKEN="wrong-token",
               SLUICE_EXPECT_SQL="nothing", SLUICE_SCREENSHOT=str(tmp_path / "wrong.png"),
               CHROMIUM=chromium)
    env.pop("SLUICE_APPROVAL_ID", None)
    r = subprocess.run([node, "--test", "dashboard.test.js"], cwd=BROWSER_DIR, env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"dashboard.test.js passed with a wrong token:\n{out[-2000:]}"
    assert re.search(r"^# fail 1$", out, re.M), out[-2000:]
