"""test_audit.py: the audit trail over the wire (issue 5).

One sluice instance of its own (own SQLite store, a JSONL copy) takes a workload through
psycopg2, psql and pgbench: reads, writes, DDL, DCL, transaction control, a failing
statement, statements refused by policy, a failed login. It is then stopped (SIGTERM) and the
events are read back with `sluice audit export --format jsonl`. Checked: exactly one
`statement` event per statement run, rows returned or affected (writes through their
`statement_end`, linked by `ref`), decision and rule, session and auth-failure events, and the
result digest against a SHA-256 computed here over the rows received (docs/audit.md).
`sluice audit verify` passes on the intact store and fails after an UPDATE or DELETE of one
event row in SQLite and after truncating the JSONL file. Sensitive literals and Bind
parameters leave no raw value in the store, the JSONL file or sluice's log. Finally, with the
store on a full tmpfs (mounted here; the tests run as root), a write is refused with 58030
(on a new session and on one opened before the disk filled) and statements work again once
space is freed.
"""

import glob
import hashlib
import json
import os
import re
import sqlite3
import struct
import subprocess
import threading
import time

import psycopg
import psycopg2
import zstandard
import pytest

import conftest
import pgwire
from conftest import ALICE, SluiceConfig, SluiceProcess, Endpoint, make_identities, _state

BOB = "bob@corp.com"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()

# Sensitive values used as literals and as Bind parameters; none may reach the audit or logs.
PII = {
    "email": "secret.person@private-mail.org",
    "card": "4929512345678909",  # Luhn-valid
    "ssn": "287-65-4321",
    "email_bind": "bound.person@hidden-mail.net",
    "card_bind": "5105105105105100",
    "ssn_bind": "372-84-1956",
}


def digest(rows):
    """docs/audit.md: per row, per column: int32 BE length (-1 NULL) + the text bytes."""
    h = hashlib.sha256()
    for row in rows:
        for v in row:
            if v is None:
                h.update(struct.pack(">i", -1))
            else:
                b = v.encode() if isinstance(v, str) else v
                h.update(struct.pack(">i", len(b)) + b)
    return h.hexdigest()


def start_instance(workdir, certs, pg, name, extra_yaml="", state_dir=None):
    ids, secrets = make_identities()
    cfg = SluiceConfig(pg, certs, ids, extra_yaml=extra_yaml, state_dir=state_dir)
    sp = SluiceProcess(workdir, name, cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    return sp, Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp)


def sluice_cli(sp, *args, timeout=30):
    # The CLI loads the whole config, which names the targets' password variables.
    # TODO(lead): `sluice audit` should not need target secrets to read the audit.
    env = dict(os.environ)
    env.update(sp.config.env())
    return subprocess.run([conftest.SLUICE_BIN] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


def export_events(sp, db=None):
    args = ["audit", "export", "--format", "jsonl", "-c", sp.path]
    if db:
        args += ["--db", db]
    r = sluice_cli(sp, *args)
    assert r.returncode == 0, f"sluice audit export failed ({r.returncode}):\n{r.stderr}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def run_ok(cmd, env, timeout=120):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


class Workload:
    """What the test ran and what the clients received, to compare with the events."""

    def __init__(self):
        self.digests = {}  # marker -> (rows received, digest computed here)


def run_workload(ep):
    w = Workload()

    def conn(user, app, **kw):
        c = psycopg2.connect(**ep.params(user=user, application_name=app, **kw))
        c.autocommit = True
        return c

    # ---- alice through psycopg2: every kind of statement
    a = conn(ALICE, "audit-alice")
    cur = a.cursor()
    cur.execute("DROP TABLE IF EXISTS audit_t")
    cur.execute("CREATE TABLE audit_t (id int, email text, note text)")
    cur.execute("INSERT INTO audit_t AS ins_five VALUES (1, 'a1@x.org', 'n'), (2, NULL, 'n'), "
                "(3, 'a3@x.org', ''), (4, 'a4@x.org', 'n'), (5, 'a5@x.org', 'n')")
    cur.execute("UPDATE audit_t AS upd_three SET note = 'updated' WHERE id <= 3")
    assert cur.rowcount == 3
    # longer than the writer's 20 ms batches: its event is committed before it ends, so its
    # result cannot be folded in and comes as a statement_end
    cur.execute("UPDATE audit_t AS upd_slow SET note = note WHERE id = 1 "
                "AND pg_sleep(0.3) IS NOT NULL")
    assert cur.rowcount == 1
    cur.execute("SELECT id::text AS sel_five, email, note FROM audit_t ORDER BY id")
    rows = cur.fetchall()
    assert len(rows) == 5
    w.digests["sel_five"] = (5, digest(rows))
    cur.execute("SELECT id::text AS sel_none FROM audit_t WHERE id > 100")
    assert cur.fetchall() == []
    w.digests["sel_none"] = (0, EMPTY_SHA)
    cur.execute("DELETE FROM audit_t AS del_one WHERE id = 5")
    assert cur.rowcount == 1
    with pytest.raises(psycopg2.errors.DivisionByZero):
        cur.execute("SELECT 1 / 0 AS div_zero")
    cur.execute("BEGIN")
    cur.execute("INSERT INTO audit_t AS ins_tx VALUES (6, NULL, 'tx')")
    cur.execute("COMMIT")
    cur.execute("GRANT SELECT ON audit_t TO app_md5")
    cur.execute("SET work_mem = '8MB'")
    # sensitive literals (simple Query) ...
    cur.execute("INSERT INTO audit_t AS ins_pii VALUES (7, '%s', 'card %s ssn %s')"
                % (PII["email"], PII["card"], PII["ssn"]))
    cur.execute("SELECT count(*)::text AS sel_pii FROM audit_t WHERE email = '%s' OR note LIKE "
                "'%%%s%%' OR note LIKE '%%%s%%'" % (PII["email"], PII["card"], PII["ssn"]))
    assert cur.fetchone() == ("1",)
    a.close()

    # ... and as real Bind parameters (psycopg 3 binds server-side)
    p = ep.params(user=ALICE)
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True,
                         application_name="audit-bind") as c3:
        c3.execute("INSERT INTO audit_t AS ins_bind VALUES (8, %s, %s)",
                   (PII["email_bind"], f"card {PII['card_bind']} ssn {PII['ssn_bind']}"))
        got = c3.execute("SELECT id::text AS sel_bind FROM audit_t WHERE email = %s OR note = %s",
                         (PII["email_bind"], PII["ssn_bind"])).fetchall()
        assert got == [("8",)]

    # ---- alice renames her application mid-session: later events carry the new name
    r = conn(ALICE, "audit-rename")
    rc = r.cursor()
    rc.execute("SELECT 1 AS app_before")
    rc.execute("SET application_name = 'audit-renamed'")
    rc.execute("SELECT 1 AS app_after")
    r.close()

    # ---- bob: a masked read (digest over the masked values) and a refused DELETE
    b = conn(BOB, "audit-bob")
    cur = b.cursor()
    cur.execute("SELECT id::text AS sel_bob, email FROM customers WHERE id <= 3 ORDER BY id")
    rows = cur.fetchall()
    assert rows[0] == ("1", "u***@example.com")
    w.digests["sel_bob"] = (3, digest(rows))
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("DELETE FROM audit_t")
    assert e.value.pgcode == "42501"
    b.close()

    # ---- copilot: a write refused by rule, a read cut to 5 rows
    c = conn("copilot", "audit-copilot")
    cur = c.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("INSERT INTO audit_t AS ins_agent VALUES (9, NULL, 'agent')")
    assert e.value.pgcode == "42501"
    cur.execute("SELECT id::text AS sel_agent, name FROM customers ORDER BY id")
    rows = cur.fetchall()
    assert len(rows) == 5
    w.digests["sel_agent"] = (5, digest(rows))
    c.close()

    # ---- copilot through the extended protocol (psycopg 3 binds server-side)
    p = ep.params(user="copilot")
    with psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                         password=p["password"], sslmode="disable", autocommit=True,
                         application_name="audit-copilot-bind") as c3:
        rows = c3.execute("SELECT id::text AS sel_agent_bind, name FROM customers WHERE id > %s "
                          "ORDER BY id", (10,)).fetchall()
        assert len(rows) == 5
        w.digests["sel_agent_bind"] = (5, digest(rows))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c3.execute("INSERT INTO audit_t AS ins_agent_bind VALUES (%s, NULL, 'agent')", (10,))

    # ---- a failed login
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(**ep.params(user=BOB, password="wrong-password"))

    # ---- psql: two statements of one session, then a read
    run_ok(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-c", "UPDATE audit_t AS psql_upd SET note = 'psql' WHERE id <= 3",
            "-c", "SELECT id::text AS psql_sel, note FROM audit_t WHERE id <= 3 ORDER BY id"],
           ep.env(user=ALICE))

    # ---- pgbench: init as alice, -S as bob, TPC-B as etl
    run_ok(["pgbench", "-i", "-s", "1", "-q"], ep.env(user=ALICE))
    run_ok(["pgbench", "-n", "-t", "20", "-S"], ep.env(user=BOB))
    run_ok(["pgbench", "-n", "-t", "10"], ep.env(user="etl"))
    return w


@pytest.fixture(scope="module")
def audited(workdir, certs, pg):
    if conftest.DIRECT:
        pytest.skip("the audit is sluice behaviour (SLUICE_DIRECT=1)")
    jsonl = os.path.join(workdir, "audit1.jsonl")
    sp, ep = start_instance(workdir, certs, pg, "audit1", extra_yaml=f"audit: {{ jsonl: {jsonl} }}")
    try:
        w = run_workload(ep)
    finally:
        sp.assert_clean_exit()
    events = export_events(sp)
    yield sp, events, w, jsonl
    c = pg.admin(dbname="shop")
    c.autocommit = True
    c.cursor().execute("DROP TABLE IF EXISTS audit_t, pgbench_accounts, pgbench_branches, "
                       "pgbench_tellers, pgbench_history")
    c.close()


def stmts(events, marker, kind="statement"):
    """Events of this kind whose statement holds marker as a whole word (or phrase)."""
    pat = re.compile(r"(?<![\w])" + re.escape(marker) + r"(?![\w])")
    return [e for e in events if e["kind"] == kind and pat.search(e.get("statement", ""))]


def one(events, marker, kind="statement"):
    found = stmts(events, marker, kind)
    assert len(found) == 1, f"{len(found)} {kind} events for {marker}: {found}"
    return found[0]


def end_of(events, ev):
    """The result of a write whose statement event went out before it ran: folded into that
    event when it ended before the event was committed, else a statement_end (never both).
    A write undone later (its group failed after it completed, its transaction rolled back)
    gets one more statement_end saying so: not its result (docs/audit.md)."""
    ends = [e for e in events if e["kind"] == "statement_end" and e.get("ref") == ev["seq"] and
            not e.get("detail", "").startswith(("failed after completing", "rolled back"))]
    assert len(ends) <= 1, f"{len(ends)} statement_end events for #{ev['seq']}: {ev}"
    return ends[0] if ends else ev


# ---------------------------------------------------------------- the events


def journal_records(path):
    """Whole records in an audit journal file (docs/audit.md, Durability contract): headers
    {magic "SLJ2" ("SLJ1" from an older sluice), payload length, seq, check} chained from offset
    0 up to a zeroed header."""
    with open(path, "rb") as f:
        data = f.read()
    n, off = 0, 0
    while len(data) - off >= 24:
        magic, length, _seq, check = struct.unpack_from("<IIQQ", data, off)
        if magic not in (0x324a4c53, 0x314a4c53) or length > len(data) - off - 24:
            break
        n += check != 0
        off += 24 + length
    return n


def test_chain_is_gapless_and_linked(audited):
    _, events, _, _ = audited
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for prev, cur in zip(events, events[1:]):
        assert cur["prev_hash"] == prev["hash"]


@pytest.mark.parametrize("marker,rows", [("sel_five", 5), ("sel_none", 0), ("sel_bob", 3),
                                         ("sel_agent", 5), ("sel_agent_bind", 5)])
def test_read_rows_and_digest(audited, marker, rows):
    _, events, w, _ = audited
    ev = one(events, marker)
    assert ev["decision"] == "allow"
    assert ev["command"] == "SELECT" and ev["class"] == "read"
    assert ev["rows"] == rows
    assert not stmts(events, marker, "statement_end")  # reads: one event, with their result
    n, dig = w.digests[marker]
    assert n == rows
    assert ev.get("digest") == dig, f"digest of {marker}: event {ev.get('digest')} != {dig}"


@pytest.mark.parametrize("marker,command,cls,rows", [
    ("ins_five", "INSERT", "write", 5),
    ("upd_three", "UPDATE", "write", 3),
    ("del_one", "DELETE", "write", 1),
    ("ins_tx", "INSERT", "write", 1),
    ("psql_upd", "UPDATE", "write", 3),
    ("CREATE TABLE audit_t", "CREATE", "ddl", 0),
    ("upd_slow", "UPDATE", "write", 1),
])
def test_write_rows_and_result(audited, marker, command, cls, rows):
    _, events, _, _ = audited
    ev = one(events, marker)
    assert (ev["command"], ev["class"], ev["decision"]) == (command, cls, "allow")
    end = end_of(events, ev)
    assert end["rows"] == rows
    assert end.get("sqlstate") is None
    if end is not ev:
        assert end["seq"] > ev["seq"]
        # the result only: who and what are on the statement event it completes
        assert (end["identity"], end["session"]) == (ev["identity"], ev["session"])
        assert not {"statement", "decision", "client_addr", "command"} & end.keys(), end


def test_write_results_folded_or_following(audited):
    """A write's result is folded into its statement event while that event waits for the
    writer's batch (the quick ones here); a write that outlasts the batch gets a statement_end."""
    _, events, _, _ = audited
    assert end_of(events, one(events, "ins_five")) is not None
    slow = one(events, "upd_slow")
    assert end_of(events, slow) is not slow, slow
    assert any(end_of(events, one(events, m)) is one(events, m)
               for m in ("ins_five", "upd_three", "del_one", "ins_tx")), \
        "no quick write had its result folded in"


def test_masked_counts(audited):
    _, events, _, _ = audited
    assert one(events, "sel_bob").get("masked") == {"email": 3}
    assert "masked" not in one(events, "sel_five")  # alice is unmasked


def test_extended_protocol_decisions_name_their_rule(audited):
    """Statements run through Parse/Bind/Execute carry the rule that decided them, like
    simple Queries do; a refused one is a deny event naming the rule."""
    _, events, _, _ = audited
    ev = one(events, "sel_agent_bind")
    assert (ev["decision"], ev.get("rule")) == ("allow", "agents-row-limit"), ev
    ev = one(events, "ins_bind")
    assert (ev["decision"], ev.get("rule")) == ("allow", "harness-admins"), ev
    ev = one(events, "ins_agent_bind")
    assert (ev["decision"], ev.get("rule")) == ("deny", "agents-read-only"), ev


def test_identity_fields(audited):
    _, events, _, _ = audited
    ev = one(events, "sel_five")
    assert ev["identity"] == ALICE and ev["identity_kind"] == "human"
    assert ev["groups"] == ["engineers"] and ev["application_name"] == "audit-alice"
    assert ev["target"] == "shop" and ev["client_addr"].startswith("127.0.0.1:")
    assert "audit_t" in ev["tables"]
    ev = one(events, "sel_agent")
    assert ev["identity"] == "copilot" and ev["identity_kind"] == "agent"
    assert ev["rule"] == "agents-row-limit"


def test_application_renamed(audited):
    _, events, _, _ = audited
    before, after = one(events, "app_before"), one(events, "app_after")
    assert before["session"] == after["session"]
    assert before["application_name"] == "audit-rename"
    assert after["application_name"] == "audit-renamed"


def test_other_statement_kinds(audited):
    _, events, _, _ = audited
    ev = one(events, "GRANT SELECT ON audit_t")
    assert ev["class"] == "dcl"
    assert end_of(events, ev).get("sqlstate") is None
    ev = one(events, "SET work_mem")
    assert ev["class"] == "utility"
    alice = [e for e in events if e.get("application_name") == "audit-alice"
             and e["kind"] == "statement"]
    tx = [e["command"] for e in alice if e["class"] == "transaction"]
    assert tx == ["BEGIN", "COMMIT"], tx
    ev = one(events, "div_zero")
    assert ev["sqlstate"] == "22012" and ev["rows"] == 0


def test_refused_statements(audited):
    _, events, _, _ = audited
    bob = [e for e in events if e["kind"] == "statement" and e["identity"] == BOB
           and e.get("command") == "DELETE"]
    assert len(bob) == 1, bob
    assert bob[0]["decision"] == "deny" and bob[0]["rule"] == "delete_without_where"
    ev = one(events, "ins_agent")
    assert ev["decision"] == "deny" and ev["rule"] == "agents-read-only"
    # a refused statement never ran: no result event
    assert not [e for e in events if e.get("ref") in (bob[0]["seq"], ev["seq"])]


def test_sessions_and_auth_failure(audited):
    _, events, _, _ = audited
    for app in ("audit-alice", "audit-bob", "audit-copilot", "audit-bind", "audit-copilot-bind"):
        sess = {e["session"] for e in events if e.get("application_name") == app}
        assert len(sess) == 1, (app, sess)
        s = sess.pop()
        kinds = [e["kind"] for e in events if e.get("session") == s]
        assert kinds[0] == "session_start" and kinds[-1] == "session_end", (app, kinds)
        assert kinds.count("session_start") == 1 and kinds.count("session_end") == 1
    fails = [e for e in events if e["kind"] == "auth_failure"]
    assert len(fails) == 1 and fails[0]["identity"] == BOB, fails
    assert "wrong-password" not in json.dumps(events)


def test_psql_session(audited):
    _, events, _, _ = audited
    upd, sel = one(events, "psql_upd"), one(events, "psql_sel")
    assert upd["session"] == sel["session"] and upd["application_name"] == "psql"
    assert sel["rows"] == 3


def test_pgbench_statements(audited):
    _, events, _, _ = audited
    sel = [e for e in events if e["kind"] == "statement" and e["identity"] == BOB
           and e.get("application_name") == "pgbench"
           and "pgbench_accounts" in e.get("statement", "")]
    assert len(sel) == 20, [e["statement"] for e in sel]
    assert all(e["rows"] == 1 and e["command"] == "SELECT" and "digest" in e for e in sel)
    assert all("$1" in e["statement"] for e in sel)  # the aid literal is normalized away
    etl = [e for e in events if e["kind"] == "statement" and e["identity"] == "etl"
           and e.get("application_name") == "pgbench"]
    by_cmd = {}
    for e in etl:
        by_cmd.setdefault((e["command"], tuple(e.get("tables", []))), []).append(e)
    upd_acc = [e for e in etl if e["command"] == "UPDATE" and "pgbench_accounts" in e["tables"]]
    ins_hist = [e for e in etl if e["command"] == "INSERT"]
    begins = [e for e in etl if e["command"] == "BEGIN"]
    assert len(upd_acc) == 10 and len(ins_hist) == 10 and len(begins) == 10, \
        {k: len(v) for k, v in by_cmd.items()}
    for e in upd_acc + ins_hist:
        assert end_of(events, e)["rows"] == 1
    upd = [e for e in etl if e["command"] == "UPDATE"]
    assert len(upd) == 30  # accounts, tellers, branches


def test_cli_search_filters(audited):
    sp, events, _, _ = audited
    r = sluice_cli(sp, "audit", "search", "-c", sp.path, "--identity", "copilot", "--decision",
                   "deny", "--json")
    assert r.returncode == 0, r.stderr
    found = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    expected = [e for e in events if e.get("identity") == "copilot" and e.get("decision") == "deny"]
    assert len(expected) == 2
    assert [e["seq"] for e in found] == [e["seq"] for e in expected]
    r = sluice_cli(sp, "audit", "search", "-c", sp.path, "--kind", "auth_failure", "--json")
    assert [json.loads(l)["identity"] for l in r.stdout.splitlines()] == [BOB]


# ---------------------------------------------------------------- no raw values anywhere


def test_no_raw_sensitive_values_anywhere(audited):
    sp, events, _, jsonl = audited
    # the statements are in the audit, normalized
    ins = one(events, "ins_pii")
    bind = one(events, "ins_bind")
    assert "$1" in ins["statement"] and "$1" in bind["statement"]
    files = glob.glob(os.path.join(sp.config.state_dir, "*")) + [jsonl, sp.log]
    assert len(files) >= 3
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        for name, v in PII.items():
            variants = {v, v.replace("-", ""), v.split("@")[0]}
            for x in variants:
                assert x.encode() not in data, f"raw {name} ({x}) found in {f}"


# ---------------------------------------------------------------- verify


def verify(sp, *args):
    return sluice_cli(sp, "audit", "verify", "-c", sp.path, *args)


def test_verify_intact(audited):
    sp, events, _, jsonl = audited
    r = verify(sp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout and "BROKEN" not in r.stdout
    assert f"{len(events)} events" in r.stdout, r.stdout


def copy_db(sp, tmp_path):
    dst = str(tmp_path / "copy.db")
    src = sqlite3.connect(os.path.join(sp.config.state_dir, "sluice.db"))
    out = sqlite3.connect(dst)
    src.backup(out)
    src.close()
    out.close()
    return dst


# The store packs events in blocks (src/store/store_pack.h): a record is u64 seq, i64 time_us,
# u32 body length, u16 lengths of hash, kind, identity, decision (0xffff: NULL), then those
# fields and the body, each followed by a NUL; a block is a zstd frame of records.
REC = struct.Struct("<QqIHHHH")


def unpack_block(frame):
    raw = zstandard.ZstdDecompressor().decompress(frame)
    out, at = [], 0
    while at < len(raw):
        seq, t, blen, *lens = REC.unpack_from(raw, at)
        at += REC.size
        fields = []
        for n in lens + [blen]:
            if n == 0xFFFF and len(fields) in (2, 3):
                fields.append(None)
                continue
            fields.append(raw[at:at + n])
            at += n + 1
        out.append([seq, t] + fields)  # seq, time, hash, kind, identity, decision, body
    return out


def pack_block(records):
    raw = b""
    for seq, t, h, kind, ident, dec, body in records:
        lens = [len(h), len(kind), 0xFFFF if ident is None else len(ident),
                0xFFFF if dec is None else len(dec)]
        raw += REC.pack(seq, t, len(body), *lens)
        for f in (h, kind, ident, dec, body):
            if f is not None:
                raw += f + b"\0"
    return zstandard.ZstdCompressor(level=1, write_checksum=True,
                                    write_content_size=True).compress(raw)


def rewrite_event(db, seq, edit):
    """Change (edit returns the record) or drop (edit returns None) event seq in its block,
    as someone with write access to the SQLite file could."""
    c = sqlite3.connect(db)
    first, frame = c.execute("SELECT first_seq, events FROM audit_blocks WHERE first_seq <= ? "
                             "ORDER BY first_seq DESC LIMIT 1", (seq,)).fetchone()
    records = []
    for rec in unpack_block(frame):
        if rec[0] == seq:
            rec = edit(rec)
        if rec is not None:
            records.append(rec)
    c.execute("UPDATE audit_blocks SET events = ? WHERE first_seq = ?",
              (pack_block(records), first))
    assert c.total_changes == 1
    c.commit()
    c.close()


def test_block_format_roundtrip(audited, tmp_path):
    """The test's own reader agrees with the store: unpacking and repacking a block unchanged
    keeps the store intact (so the tampering below changes only what it means to)."""
    sp, events, _, _ = audited
    db = copy_db(sp, tmp_path)
    rewrite_event(db, one(events, "sel_five")["seq"], lambda rec: rec)
    r = verify(sp, "--db", db)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("tamper", ["update_body", "update_rows", "delete"])
def test_verify_detects_tampered_store(audited, tmp_path, tamper):
    sp, events, _, _ = audited
    db = copy_db(sp, tmp_path)
    target = one(events, "sel_five")["seq"]

    def edit(rec):
        if tamper == "delete":
            return None
        old, new = ((b'"identity":"alice@corp.com"', b'"identity":"mallory@corp.com"')
                    if tamper == "update_body" else (b'"rows":5', b'"rows":0'))
        assert old in rec[6]
        rec[6] = rec[6].replace(old, new)
        return rec

    rewrite_event(db, target, edit)
    r = verify(sp, "--db", db)
    assert r.returncode == 1, f"verify passed a tampered store ({tamper}):\n{r.stdout}{r.stderr}"
    assert "BROKEN" in r.stdout and f"event {target}" in r.stdout, r.stdout


@pytest.mark.parametrize("cut", ["last_line", "mid_line", "half"])
def test_verify_detects_truncated_jsonl(audited, tmp_path, cut):
    sp, _, _, jsonl = audited
    with open(jsonl, "rb") as f:
        data = f.read()
    lines = data.splitlines(keepends=True)
    if cut == "last_line":
        data = b"".join(lines[:-1])
    elif cut == "mid_line":
        data = data[:-40]
    else:
        data = b"".join(lines[:len(lines) // 2])
    bad = tmp_path / "cut.jsonl"
    bad.write_bytes(data)
    r = verify(sp, "--jsonl", str(bad))
    assert r.returncode == 1, f"verify passed a truncated JSONL ({cut}):\n{r.stdout}{r.stderr}"
    assert "BROKEN" in r.stdout or r.stderr, r.stdout


# ---------------------------------------------------------------- fast path


def test_fast_path_call_is_audited_and_masked(workdir, certs, pg, sluice_only, sluice_bin):
    """With the function guardrails allowed, a FunctionCall runs: it gets a durable statement
    event naming the function's OID, and its result is masked for a masked identity. One that
    wrote inside a block that rolls back gets a statement_end saying so."""
    sp, ep = start_instance(workdir, certs, pg, "fastpath", extra_yaml=(
        "guardrails: { file_access: allow, dangerous_functions: allow, role_escalation: allow,"
        " unjudgeable: allow }"))
    try:
        c = ep.raw_login("shop", BOB)
        oid = int(c.query("SELECT 'textcat(text,text)'::regprocedure::oid")[0][0])
        a, b = (x.encode() for x in PII["email"].split("@"))
        a += b"@"  # the email exists only in the result
        # function OID; 1 argument format (text); 2 arguments; text result
        c.send(pgwire.message(b"F", struct.pack("!IhhhI", oid, 1, 0, 2, len(a)) + a +
                              struct.pack("!I", len(b)) + b + struct.pack("!h", 0)))
        t, payload = c.read_msg()
        assert t == b"V", (t, payload)
        first = payload  # as sent: its bytes and digest are the call's
        (n,) = struct.unpack("!i", payload[:4])
        value = payload[4:4 + n].decode()
        assert PII["email"] not in value and "@" in value, value
        t, _ = c.read_msg()
        assert t == b"Z"
        # a binary result (libpq's large objects ask for those): starred in place, same length
        c.send(pgwire.message(b"F", struct.pack("!IhhhI", oid, 1, 0, 2, len(a)) + a +
                              struct.pack("!I", len(b)) + b + struct.pack("!h", 1)))
        t, payload = c.read_msg()
        assert t == b"V", (t, payload)
        (n,) = struct.unpack("!i", payload[:4])
        assert n == len(PII["email"]) and PII["email"].encode() not in payload, payload
        t, _ = c.read_msg()
        assert t == b"Z"
        # in a block that rolls back, a call that wrote (a large object made) is undone
        c.query("BEGIN")
        lo_creat = int(c.query("SELECT 'lo_creat(integer)'::regprocedure::oid")[0][0])
        c.send(pgwire.message(b"F", struct.pack("!IhhhIih", lo_creat, 1, 1, 1, 4, -1, 1)))
        t, payload = c.read_msg()
        assert t == b"V", (t, payload)
        (lo,) = struct.unpack("!I", payload[4:8])
        t, _ = c.read_msg()
        assert t == b"Z"
        c.query("ROLLBACK")
        assert c.query(f"SELECT count(*) FROM pg_largeobject_metadata WHERE oid = {lo}") == [["0"]]
        c.close()
        time.sleep(0.3)
        evs = export_events(sp)
        calls = [e for e in evs if e["kind"] == "statement" and e.get("command") == "FUNCTION CALL"]
        assert len(calls) == 3, calls
        assert calls[0]["statement"] == f"(fast-path call of function {oid})", calls[0]
        assert calls[0]["decision"] == "allow" and calls[0]["identity"] == BOB, calls[0]
        res = end_of(evs, calls[0])
        assert res.get("sqlstate") is None, res
        assert res["bytes"] == 5 + len(first), res
        assert res["digest"] == hashlib.sha256(first).hexdigest(), res
        undone = [e for e in evs if e["kind"] == "statement_end"
                  and e.get("ref") == calls[2]["seq"]
                  and e.get("detail", "").startswith("rolled back")]
        assert [e["detail"] for e in undone] == [
            "rolled back: its transaction ended with ROLLBACK"], undone
    finally:
        sp.assert_clean_exit()


# ---------------------------------------------------------------- kill -9


def test_kill9_keeps_every_completed_write(workdir, certs, pg, sluice_only, sluice_bin, tmp_path):
    """kill -9 of sluice under a mixed pgbench load while a client writes: once sluice is
    back (it commits what its journal holds before it listens), every write the client saw
    complete has its statement event, and the store verifies."""
    sp, ep = start_instance(workdir, certs, pg, "kill9")
    c = psycopg2.connect(**ep.params(user=ALICE))
    c.autocommit = True
    c.cursor().execute("CREATE TABLE IF NOT EXISTS kill9 (id int)")
    c.cursor().execute("CREATE TABLE IF NOT EXISTS kill9_load (id int)")
    c.close()
    script = tmp_path / "mixed.sql"
    script.write_text("\\set id random(1, 1000000)\n"
                      "INSERT INTO kill9_load VALUES (:id);\n"
                      "SELECT count(*) FROM kill9_load WHERE id = :id;\n")
    load = subprocess.Popen(["pgbench", "-n", "-c", "4", "-T", "20", "-f", str(script)],
                            env=ep.env(user=ALICE), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done = []
    stop = threading.Event()

    def writer():
        try:
            w = psycopg2.connect(**ep.params(user=ALICE, application_name="kill9-writer"))
            w.autocommit = True
            cur = w.cursor()
            k = 0
            while not stop.is_set():
                k += 1
                cur.execute("INSERT INTO kill9 VALUES (%s)", (k,))
                done.append(k)
        except psycopg2.Error:
            pass  # sluice went away

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(2.0)
    sp.proc.kill()  # SIGKILL
    sp.proc.wait()
    stop.set()
    t.join(10)
    load.kill()
    load.wait()
    assert len(done) > 20, f"the writer completed only {len(done)} writes before the kill"
    journal = sum(journal_records(p) for p in
                  glob.glob(os.path.join(sp.config.state_dir, "sluice.db.audit-journal.*")))
    r = sluice_cli(sp, "audit", "verify", "-c", sp.path)
    assert r.returncode == 0, r.stdout + r.stderr  # what the store holds is intact
    assert ("audit journal next to the store holds" in r.stdout) == (journal > 0), r.stdout


    sp.start()  # same config and store: replays the journal
    try:
        with open(sp.log, errors="replace") as f:
            recovered = [l.strip() for l in f if "recovered" in l]
        events = export_events(sp)
        mine = [e for e in events if e["kind"] == "statement"
                and e.get("application_name") == "kill9-writer" and e.get("command") == "INSERT"]
        assert len(mine) >= len(done), (
            f"{len(done)} writes completed for the client, {len(mine)} have an event; "
            f"log: {recovered}")
        r = sluice_cli(sp, "audit", "verify", "-c", sp.path)
        assert r.returncode == 0, r.stdout + r.stderr
        c = psycopg2.connect(**ep.params(user=ALICE))
        c.autocommit = True
        c.cursor().execute("DROP TABLE kill9, kill9_load")
        c.close()
    finally:
        sp.assert_clean_exit()


# ---------------------------------------------------------------- fail closed


@pytest.fixture
def tiny_fs(workdir):
    d = os.path.join(workdir, "tinyfs")
    os.makedirs(d, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", d], capture_output=True)


def fill(d):
    """Fill the file system at d; returns the filler's path."""
    path = os.path.join(d, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(fd)
    return path


def test_fail_closed_when_store_is_full(workdir, certs, pg, tiny_fs, sluice_only, sluice_bin):
    state = os.path.join(tiny_fs, "state")
    os.makedirs(state)
    sp, ep = start_instance(workdir, certs, pg, "auditfull", state_dir=state)
    try:
        c = psycopg2.connect(**ep.params(user=ALICE))
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS audit_full (id int, pad text)")
        filler = fill(tiny_fs)
        # Writes now: each needs its event committed first. The first may wait for the store
        # (parked) or fail; statements after it must be refused with 58030.
        errors = []

        def attempt():
            try:
                cc = psycopg2.connect(**ep.params(user=ALICE, connect_timeout=5))
                cc.autocommit = True
                cc.cursor().execute("INSERT INTO audit_full SELECT g, repeat('x', 200) "
                                    "FROM generate_series(1, 50) g")
                cc.close()
                errors.append(None)
            except psycopg2.Error as e:
                errors.append((e.pgcode, e.pgerror))

        refused = None
        deadline = time.time() + 10
        while time.time() < deadline and refused is None:
            t = threading.Thread(target=attempt, daemon=True)
            t.start()
            t.join(3)
            if errors and errors[-1] and errors[-1][0] == "58030":
                refused = errors[-1]
            time.sleep(0.2)
        assert refused, f"no write was refused with 58030 while the store was full: {errors}"
        assert "audit store" in refused[1], refused
        os.unlink(filler)
        ok = False
        deadline = time.time() + 10
        while time.time() < deadline and not ok:
            try:
                cur.execute("INSERT INTO audit_full VALUES (0, 'after')")
                ok = True
            except psycopg2.Error as e:
                assert e.pgcode == "58030", e.pgerror
                time.sleep(0.3)
        assert ok, "statements still refused after space was freed"
        cur.execute("SELECT count(*) FROM audit_full WHERE pad = 'after'")
        assert cur.fetchone() == (1,)
        cur.execute("DROP TABLE audit_full")
        c.close()
    finally:
        sp.assert_clean_exit()


def test_fail_closed_write_on_open_session(workdir, certs, pg, tiny_fs, sluice_only, sluice_bin):
    """A session opened while the store was healthy keeps writing after the disk filled. A
    write forwarded before the writer's first failed commit has its event in the journal (it
    is never run unrecorded); from that failure on, writes get a clear error (58030) rather
    than waiting with no answer. Once space is freed the session works again and every write
    that ran has its event in the store."""
    state = os.path.join(tiny_fs, "state")
    os.makedirs(state)
    sp, ep = start_instance(workdir, certs, pg, "auditfull2", state_dir=state)
    try:
        c = psycopg2.connect(**ep.params(user=ALICE))
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS audit_full2 (id int)")
        time.sleep(0.3)  # its event committed
        filler = fill(tiny_fs)
        ran, refused = [], None
        deadline = time.time() + 10
        k = 100
        while refused is None and time.time() < deadline:
            k += 1
            result = []

            def write():
                try:
                    cur.execute(f"INSERT INTO audit_full2 VALUES ({k})")
                    result.append("ran")
                except psycopg2.Error as e:
                    result.append((e.pgcode, e.pgerror))

            t = threading.Thread(target=write, daemon=True)
            t.start()
            t.join(5)
            assert result, f"write {k} on an open session while the store is full: no answer in 5s"
            if result[0] == "ran":
                ran.append(k)
            else:
                assert result[0][0] == "58030", result[0]
                refused = result[0]
            time.sleep(0.05)
        assert refused, f"no write was refused while the store was full (ran: {ran})"
        assert "audit store" in refused[1], refused
        os.unlink(filler)
        deadline = time.time() + 10
        while True:
            try:
                cur.execute("INSERT INTO audit_full2 VALUES (2)")
                break
            except psycopg2.Error as e:
                assert e.pgcode == "58030" and time.time() < deadline, e.pgerror
                time.sleep(0.3)
        cur.execute("SELECT array_agg(id ORDER BY id) FROM audit_full2")
        assert cur.fetchone()[0] == [2] + ran
        cur.execute("DROP TABLE audit_full2")
        c.close()
        time.sleep(0.5)
        inserts = [e for e in export_events(sp) if e["kind"] == "statement"
                   and e.get("command") == "INSERT" and "audit_full2" in str(e.get("tables"))
                   and e.get("decision") == "allow"]
        assert len(inserts) >= len(ran) + 1, (ran, inserts)
        # a write refused because its event could not be written is not recorded later as
        # allowed (with the error of the placeholder that stood in for it)
        assert not [e for e in inserts if e.get("sqlstate")], inserts
    finally:
        sp.assert_clean_exit()


def test_rows_beyond_max_row_size(spawn_sluice):
    """server.max_row_size bounds the rows sluice holds whole to mask them. A larger row
    streams through an unmasked session intact, counted and digested as its parts pass (the
    harness's socket reads split it); in a masked session it is never sent: the session ends
    with 54000 naming the setting."""
    sp, ep = spawn_sluice("maxrow", server_extra={"max_row_size": "64kB"}, extra_yaml=(
        "guardrails: { file_access: allow, dangerous_functions: allow, role_escalation: allow,"
        " unjudgeable: allow }"))  # (fast-path calls, below)
    big = 300000  # more than a relay buffer (128 KiB): it streams in several parts
    email = "pat.big@example.com"

    raw = psycopg2.connect(**ep.params(user="etl", application_name="maxrow"))
    raw.autocommit = True
    cur = raw.cursor()
    cur.execute("SELECT repeat('x', %s) || %s AS maxrow_raw", (big, " " + email))
    (v,) = cur.fetchone()
    assert len(v) == big + 1 + len(email) and v.endswith(email)
    cur.execute("SELECT 1 AS maxrow_two, repeat('z', %s), NULL, 'end'", (big,))
    two = cur.fetchall()
    raw.close()

    masked = psycopg2.connect(**ep.params(user=BOB, application_name="maxrow"))
    masked.autocommit = True
    cur = masked.cursor()
    cur.execute("SELECT repeat('y', 60000) || %s AS maxrow_small", (" " + email,))
    (small,) = cur.fetchone()
    assert len(small) > 60000 and email not in small  # under the limit: held and masked
    masked.close()
    c = ep.raw_login("shop", BOB)  # (psycopg2 reports a FATAL mid-query as a lost connection)
    c.send(pgwire.message(b"Q", f"SELECT repeat('x', {big}) || ' {email}' AS maxrow_big\0".encode()))
    t, payload = c.read_msg()
    assert t == b"E", t  # nothing of the row (nor its RowDescription) went out
    f = pgwire.parse_fields(payload)
    assert f["S"] == "FATAL" and f["C"] == "54000" and "server.max_row_size" in f["M"], f
    assert c.read_msg() is None
    c.close()

    def find(marker):
        for _ in range(50):
            got = [e for e in export_events(sp)
                   if e["kind"] == "statement" and marker in e.get("statement", "")]
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"no event for {marker}")

    (ev,) = find("maxrow_raw")
    assert ev["rows"] == 1 and ev["digest"] == digest([(v,)]), ev
    assert ev["bytes"] == 5 + 2 + 4 + len(v), ev
    (ev,) = find("maxrow_two")
    assert ev["rows"] == 1 and ev["digest"] == digest([tuple(str(x) if isinstance(x, int) else x
                                                             for x in two[0])]), ev
    (ev,) = find("maxrow_small")
    assert ev["rows"] == 1 and len(ev["digest"]) == 64, ev
    with open(sp.log, errors="replace") as f:
        assert "server.max_row_size" in f.read()
    # a fast-path function result that large streams too, counted and digested as it passes
    c = ep.raw_login("shop", "etl")
    oid = int(c.query("SELECT 'repeat(text,integer)'::regprocedure::oid")[0][0])
    n = str(big).encode()
    c.send(pgwire.message(b"F", struct.pack("!IhhhI", oid, 1, 0, 2, 1) + b"q" +
                          struct.pack("!I", len(n)) + n + struct.pack("!h", 0)))
    t, payload = c.read_msg()
    assert t == b"V" and len(payload) == 4 + big, (t, len(payload))
    assert c.read_msg()[0] == b"Z"
    c.close()
    (ev,) = find(f"(fast-path call of function {oid})")
    res = end_of(export_events(sp), ev)
    assert res["bytes"] == 5 + len(payload), res
    assert res["digest"] == hashlib.sha256(payload).hexdigest(), res


def test_rows_beyond_max_row_size_and_limit_rows(spawn_sluice):
    """A row too large to hold and beyond a rule's limit_rows is dropped, not counted."""
    sp, ep = spawn_sluice("maxrowlim", server_extra={"max_row_size": "16kB"},
                          extra_yaml="masking: { enabled: false }")
    c = psycopg2.connect(**ep.params(user="copilot", application_name="maxrowlim"))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT g AS maxrow_lim, repeat('q', 20000) FROM generate_series(1, 8) g")
    got = cur.fetchall()
    assert [r[0] for r in got] == [1, 2, 3, 4, 5] and all(len(r[1]) == 20000 for r in got)
    c.close()
    for _ in range(50):
        evs = [e for e in export_events(sp)
               if e["kind"] == "statement" and "maxrow_lim" in e.get("statement", "")]
        if evs:
            break
        time.sleep(0.1)
    (ev,) = evs
    assert ev["rows"] == 5 and ev["digest"] == digest([(str(a), b) for a, b in got]), ev


def test_client_text_cannot_forge_log_lines_or_hide_behind_terminal_escapes(spawn_sluice):
    """A user name with a newline wrote a whole fake line into sluice's log; a statement with
    terminal escapes (ESC [35D moves the cursor back) could show an approver or an auditor
    `select 1` where the text said `delete ...`. The log escapes control characters; the
    human output of `sluice audit tail` shows them as '?'."""
    sp, ep = spawn_sluice("au-escapes")
    fake = '2026-01-01T00:00:00.000Z INFO  [1] user "alice" (human) authenticated'
    with ep.raw() as r:
        with pytest.raises(pgwire.PgError):
            r.startup(user="mallory\n" + fake, database="shop", password="x")
    c = psycopg2.connect(**ep.params(user=BOB))
    c.autocommit = True
    c.cursor().execute("SELECT 1 AS au_esc --\x1b[35Dhidden\x1b[K")
    c.close()
    deadline = time.time() + 5
    while True:
        log = open(sp.log, encoding="utf-8", errors="replace").read()
        if "mallory" in log or time.time() > deadline:
            break
        time.sleep(0.1)
    assert "mallory\\n2026-01-01" in log, log[-2000:]
    assert not any(line.startswith("2026-01-01T00:00:00.000Z") for line in log.splitlines())
    deadline = time.time() + 5
    while True:
        r = sluice_cli(sp, "audit", "tail", "-n", "50", "-c", sp.path)
        if "au_esc" in r.stdout or time.time() > deadline:
            break
        time.sleep(0.1)
    line = next(x for x in r.stdout.splitlines() if "au_esc" in x)
    assert "\x1b" not in line and "?[35Dhidden?[K" in line, line


def test_literals_of_utility_and_unparseable_statements_never_reach_the_audit(spawn_sluice):
    """pg_query_normalize leaves the literals of utility statements (a PREPARE's body, a
    COMMENT, a role's password) and of text that does not parse: they were stored as sent.
    Now every literal is blanked; and a new state file is readable by its owner only."""
    sp, ep = spawn_sluice("au-literals")
    secrets = ["Jane Doe", "19790412", "Winter2024pw", "Hunter2Secret"]
    c = psycopg2.connect(**ep.params(user=BOB))
    c.autocommit = True
    cur = c.cursor()
    for sql in ["PREPARE au_lit AS SELECT * FROM customers WHERE name = 'Jane Doe' "
                "OR id = 19790412",
                "ALTER ROLE au_nobody WITH PASSWORD 'Winter2024pw' xx",
                "alter role au_nobody password 'Hunter2Secret"]:
        try:
            cur.execute(sql)
        except psycopg2.Error:
            pass
    c.close()
    deadline = time.time() + 5
    while True:
        evs = [e for e in export_events(sp) if e["kind"] == "statement"]
        texts = [e.get("statement", "") for e in evs]
        if sum(("au_lit" in t or "au_nobody" in t) for t in texts) >= 3 or time.time() > deadline:
            break
        time.sleep(0.1)
    mine = [t for t in texts if "au_lit" in t or "au_nobody" in t]
    assert len(mine) == 3, texts
    for t in mine:
        for v in secrets:
            assert v not in t, t
    assert "WHERE name = ? OR id = ?" in mine[0], mine
    dbs = glob.glob(os.path.join(os.path.dirname(sp.path), "**", "*.db"), recursive=True)
    modes = {p: oct(os.stat(p).st_mode & 0o777) for p in dbs}
    assert modes and set(modes.values()) == {"0o600"}, modes
