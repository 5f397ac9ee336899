"""test_masking.py: masking of results over the wire (issue 4), with real clients.

A table of sensitive values (emails, Luhn-valid cards, SSNs, phones, an email inside free
text) next to non-sensitive ones (integer id, uuid, plain words, multi-byte UTF-8, a 16-digit
reference that fails Luhn), NULLs and empty strings is created by alice (unmasked). bob
(human, outside every unmask list) must get the masked forms through psycopg2 (text),
psycopg 3 (binary results), psql, node-postgres, JDBC and COPY TO STDOUT (text and CSV), with
no raw value anywhere in what he receives, while alice gets every value byte for byte.
Then: a 20,000-row result with values longer than a network read, an error whose DETAIL
echoes a value, a NOTICE echoing one, a rule `action: unmask`, `masking.unmask.groups` and
`masking.enabled: false` (own sluice instances).
"""

import csv
import io
import json
import os
import subprocess
import time

import psycopg
import psycopg2
import pytest

import conftest
import pgwire
from conftest import ALICE, SluiceConfig

BOB = "bob@corp.com"
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
JAR = "/usr/share/java/postgresql.jar"
JAVA_SRC = os.path.join(HERE, "java", "SluiceDump.java")

COLS = ["id", "uid", "email", "card", "ssn", "phone", "note", "word", "utf", "ref"]
SELECT = "SELECT " + ", ".join(COLS) + " FROM mask_pii ORDER BY id"
UTF = "Grüße aus 東京 🎉 naïve"

# (raw row, masked row as bob must see it)
ROWS = [
    ((1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "alice.smith@example.org", "4242424242424242",
      "123-45-6789", "+1 415-555-0132", "please mail john.doe@acme.io about the refund",
      "plain words", UTF, "4242424242424241"),
     (1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a***@example.org", "****-****-****-4242",
      "***-**-6789", "+1 ***-***-0132", "please mail j***@acme.io about the refund",
      "plain words", UTF, "4242424242424241")),
    ((2, "b1ffcd00-1d1c-4ff9-8c7e-7cc0ce491b22", None, None, None, None, None, "hello", None,
      None),
     (2, "b1ffcd00-1d1c-4ff9-8c7e-7cc0ce491b22", None, None, None, None, None, "hello", None,
      None)),
    ((3, "c2aade11-2e2d-4aa0-9d8f-8dd1df5a2c33", "", "", "", "", "", "", "", ""),
     (3, "c2aade11-2e2d-4aa0-9d8f-8dd1df5a2c33", "", "", "", "", "", "", "", "")),
    ((4, "d3bbef22-3f3e-4bb1-ae90-9ee2e06b3d44", "zoe.martin@beispiel.de", "5555 5555 5555 4444",
      "536-90-4399", "(212) 555-0199",
      "card 4111 1111 1111 1111 and ssn 219-52-7780 in text — 日本",
      "order 12345", "Ωμέγα", "version 1.2.3.4"),
     (4, "d3bbef22-3f3e-4bb1-ae90-9ee2e06b3d44", "z***@beispiel.de", "****-****-****-4444",
      "***-**-4399", "+1 ***-***-0199",
      "card ****-****-****-1111 and ssn ***-**-7780 in text — 日本",
      "order 12345", "Ωμέγα", "version 1.2.3.4")),
]
RAW = [r for r, _ in ROWS]
MASKED = [m for _, m in ROWS]
# Sensitive raw values (and their bare digit forms) that must never reach bob.
SECRETS = ["alice.smith@example.org", "john.doe@acme.io", "zoe.martin@beispiel.de",
           "4242424242424242", "5555 5555 5555 4444", "5555555555554444",
           "4111 1111 1111 1111", "4111111111111111", "123-45-6789", "536-90-4399",
           "219-52-7780", "415-555-0132", "555-0199", "alice.smith", "john.doe", "zoe.martin"]


def as_text(rows):
    """Rows as all-text tuples (what text-format clients give when parsers are off)."""
    return [tuple(None if v is None else str(v) for v in r) for r in rows]


def assert_no_secret(blob, who):
    if isinstance(blob, str):
        blob = blob.encode()
    leaked = [s for s in SECRETS if s.encode() in blob]
    assert not leaked, f"{who}: raw values reached the client: {leaked}\n{blob[:2000]!r}"


@pytest.fixture(scope="module")
def pii(_endpoint):
    if conftest.DIRECT:
        pytest.skip("masking is sluice behaviour (SLUICE_DIRECT=1)")
    c = psycopg2.connect(**_endpoint.params(user=ALICE))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS mask_pii")
    cur.execute("CREATE TABLE mask_pii (id int PRIMARY KEY, uid uuid, email text, card text, "
                "ssn text, phone text, note text, word text, utf text, ref text)")
    for r in RAW:
        cur.execute("INSERT INTO mask_pii VALUES (" + ", ".join(["%s"] * len(r)) + ")", r)
    c.close()
    return _endpoint


def psycopg3_connect(ep, user):
    p = ep.params(user=user)
    return psycopg.connect(host=p["host"], port=p["port"], dbname=p["dbname"], user=p["user"],
                           password=p["password"], sslmode=p["sslmode"], connect_timeout=15,
                           autocommit=True)


def fetch_psycopg2(ep, user, sql=SELECT):
    c = psycopg2.connect(**ep.params(user=user))
    try:
        cur = c.cursor()
        cur.execute(sql)
        return [tuple(None if v is None else str(v) for v in r) for r in cur.fetchall()]
    finally:
        c.close()


# ---------------------------------------------------------------- the clients, bob and alice


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_psycopg2_text(pii, user, expected):
    rows = fetch_psycopg2(pii, user)
    assert rows == as_text(expected)
    if user == BOB:
        assert_no_secret(repr(rows), "psycopg2")


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_psycopg3_binary_results(pii, user, expected):
    """Binary results: text columns are masked in binary format too; uuid and int4 in binary
    come back unchanged. Both a plain query and one with a real Bind parameter."""
    with psycopg3_connect(pii, user) as c:
        cur = c.cursor(binary=True)
        cur.execute(SELECT)
        rows = [tuple(None if v is None else str(v) for v in r) for r in cur.fetchall()]
        assert rows == as_text(expected)
        cur.execute(SELECT.replace("ORDER BY", "WHERE id >= %s ORDER BY"), (1,), binary=True)
        rows2 = [tuple(None if v is None else str(v) for v in r) for r in cur.fetchall()]
        assert rows2 == as_text(expected)
        if user == BOB:
            assert_no_secret(repr(rows) + repr(rows2), "psycopg3 binary")


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_psql(pii, user, expected):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-P", "null=<NULL>",
                        "-v", "ON_ERROR_STOP=1", "-c", SELECT],
                       env=pii.env(user=user), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode()
    rows = [tuple(None if v == "<NULL>" else v for v in line.split("\x1f"))
            for line in out.rstrip("\n").split("\n")]
    assert rows == as_text(expected)
    if user == BOB:
        assert_no_secret(r.stdout + r.stderr, "psql")


def ensure_node_modules():
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pg")):
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm install failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_node_postgres(pii, user, expected):
    ensure_node_modules()
    for args in ([SELECT], [SELECT.replace("ORDER BY", "WHERE id >= $1 ORDER BY"), "1"]):
        r = subprocess.run(["node", "dump.js"] + args, cwd=NODE_DIR, env=pii.env(user=user),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        rows = [tuple(x) for x in json.loads(r.stdout)["rows"]]
        assert rows == as_text(expected), f"node {args[1:] and 'extended' or 'simple'}"
        if user == BOB:
            assert_no_secret(r.stdout + r.stderr, "node-postgres")


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory):
    d = tmp_path_factory.mktemp("javamask")
    r = subprocess.run(["javac", "-cp", JAR, "-d", str(d), JAVA_SRC], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_jdbc(pii, java_classes, user, expected):
    p = pii.params(user=user)
    url = f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?sslmode=disable"
    for extra in ([], [SELECT.replace("ORDER BY", "WHERE id >= ? ORDER BY"), "1"]):
        sql = extra[:1] or [SELECT]
        r = subprocess.run(["java", "-cp", f"{java_classes}:{JAR}", "SluiceDump", url, p["user"],
                            p["password"]] + sql + extra[1:], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        rows = [tuple(None if v == "\\N" else bytes.fromhex(v).decode() for v in
                      line.split("\t")) for line in r.stdout.decode().rstrip("\n").split("\n")]
        assert rows == as_text(expected), "jdbc " + ("prepared" if extra else "plain")
        if user == BOB:
            assert_no_secret(b"\n".join(bytes.fromhex(v) for line in r.stdout.decode().split()
                                        for v in line.split("\t") if v != "\\N"), "jdbc")


def copy_out(ep, user, sql):
    c = psycopg2.connect(**ep.params(user=user))
    try:
        sink = io.BytesIO()
        c.cursor().copy_expert(sql, sink)
        return sink.getvalue()
    finally:
        c.close()


def copy_text_rows(data):
    out = []
    for line in data.decode().rstrip("\n").split("\n"):
        out.append(tuple(None if v == "\\N" else v for v in line.split("\t")))
    return out


@pytest.mark.parametrize("user,expected", [(BOB, MASKED), (ALICE, RAW)], ids=["bob", "alice"])
def test_copy_to_stdout_text_and_csv(pii, user, expected):
    """A COPY of a query naming its columns is masked by column as a SELECT is (and by value
    for the rest): the lines must come out exactly as the SELECT's rows."""
    data = copy_out(pii, user, f"COPY ({SELECT}) TO STDOUT")
    assert copy_text_rows(data) == as_text(expected)
    data_csv = copy_out(pii, user, f"COPY ({SELECT}) TO STDOUT WITH (FORMAT csv, NULL '<NULL>')")
    rows = [tuple(None if v == "<NULL>" else v for v in r)
            for r in csv.reader(io.StringIO(data_csv.decode()))]
    want = as_text(expected)
    if user == BOB:
        # a custom NULL string may be a real value: in a column masked by name it is masked
        # (row 2's NULLs in email, card, ssn and phone)
        want[1] = want[1][:2] + ("[REDACTED:email]", "[REDACTED:credit_card]",
                                 "[REDACTED:ssn]", "[REDACTED:phone]") + want[1][6:]
    assert rows == want
    if user == BOB:
        assert_no_secret(data + data_csv, "COPY TO STDOUT")


def test_bytea_casts_masked(pii):
    """A value cast to bytea (email::bytea, convert_to(card, 'UTF8')) is masked in its bytes,
    in hex and escape output, as a bytea[] and in binary results; the client still decodes
    valid bytea."""
    sql = ("SELECT email::bytea, convert_to(card, 'UTF8'), ARRAY[ssn::bytea, phone::bytea] "
           "FROM mask_pii ORDER BY id")
    for setting in ("hex", "escape"):
        c = psycopg2.connect(**pii.params(user=BOB))
        cur = c.cursor()
        cur.execute(f"SET bytea_output = {setting}")
        cur.execute(sql)
        rows = cur.fetchall()
        c.close()
        text = repr([(bytes(a), bytes(b), [bytes(x) for x in arr]) for a, b, arr in rows
                     if a is not None])
        assert_no_secret(text, f"bytea {setting}")
    with psycopg3_connect(pii, BOB) as c:
        rows = c.cursor(binary=True).execute(sql).fetchall()
        assert_no_secret(repr(rows), "bytea binary")


def test_numbers_and_dates_masked_by_name(pii):
    """A card number, SSN or phone stored as a number, a birth date as a date: masked by the
    column's name with values of their types (the client still parses them), text and binary;
    other numbers and dates as they are."""
    import datetime
    import decimal
    a = psycopg2.connect(**pii.params(user=ALICE))
    a.autocommit = True
    a.cursor().execute(
        "DROP TABLE IF EXISTS mask_num; CREATE TABLE mask_num (id int, card_number numeric(19), "
        "ssn integer, phone_number bigint, date_of_birth date, amount numeric, created date); "
        "INSERT INTO mask_num VALUES (1, 4111111111111111, 123456789, 4155551234, "
        "'1980-04-12', 12.5, '2024-01-02')")
    a.close()
    sql = ("SELECT id, card_number, ssn, phone_number, date_of_birth, amount, created "
           "FROM mask_num")
    c = psycopg2.connect(**pii.params(user=BOB))
    cur = c.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    c.close()
    assert row == (1, decimal.Decimal("1111"), 6789, 1234, datetime.date(1111, 11, 11),
                   decimal.Decimal("12.5"), datetime.date(2024, 1, 2)), row
    with psycopg3_connect(pii, BOB) as c3:
        row = c3.cursor(binary=True).execute(sql).fetchone()
    assert row[1] == 0 and row[2] == 0 and row[3] == 0 and row[4] == datetime.date(2000, 1, 1)
    assert row[5] == decimal.Decimal("12.5") and row[6] == datetime.date(2024, 1, 2), row


def test_aliased_numbers_and_dates_masked_by_catalog_name(pii):
    """SELECT card_number AS n: a number or date column renamed to an innocuous name is masked
    by the catalog's name of its column (in a subquery too), text and binary; innocuous number
    columns (the id) stay as they are. The plan of a result seen before is reused only until
    DDL through sluice changes the catalog: renaming a column to ssn masks it from the next
    result of the same RowDescription on."""
    import datetime
    import decimal
    as_alice(pii, "DROP TABLE IF EXISTS mask_alias",
             "CREATE TABLE mask_alias (id int, card_number numeric(19), date_of_birth date, "
             "amount numeric, acct integer)",
             "INSERT INTO mask_alias VALUES (1, 4111111111111111, '1980-04-12', 12.5, 123456789)")
    sql = ("SELECT id AS k, card_number AS n, date_of_birth AS d, amount AS a, acct AS b "
           "FROM mask_alias")
    masked = (1, decimal.Decimal("1111"), datetime.date(1111, 11, 11), decimal.Decimal("12.5"),
              123456789)
    c = psycopg2.connect(**pii.params(user=BOB))
    c.autocommit = True
    try:
        cur = c.cursor()
        for _ in range(2):  # the second time from the plan cache
            cur.execute(sql)
            assert cur.fetchall() == [masked]
        cur.execute("SELECT n FROM (SELECT card_number AS n FROM mask_alias) s")
        assert cur.fetchall() == [(decimal.Decimal("1111"),)]
        # The same RowDescription (the field is still "b", attribute 5), another catalog name.
        as_alice(pii, "ALTER TABLE mask_alias RENAME COLUMN acct TO ssn")
        sql = sql.replace("acct AS b", "ssn AS b")
        cur.execute(sql)
        assert cur.fetchall() == [masked[:4] + (6789,)]
    finally:
        c.close()
    with psycopg3_connect(pii, BOB) as c3:
        row = c3.cursor(binary=True).execute(sql).fetchone()
    assert row == (1, 0, datetime.date(2000, 1, 1), decimal.Decimal("12.5"), 0), row
    a = psycopg2.connect(**pii.params(user=ALICE))
    try:
        cur = a.cursor()
        cur.execute(sql)
        assert cur.fetchall() == [(1, decimal.Decimal("4111111111111111"),
                                   datetime.date(1980, 4, 12), decimal.Decimal("12.5"),
                                   123456789)]
    finally:
        a.close()


def test_rename_that_waited_for_a_lock_is_seen(pii):
    """A rename waits for bob's transaction; meanwhile bob's query reads the old names from the
    catalog. Once the rename has committed, the new name masks the column."""
    import threading
    as_alice(pii, "DROP TABLE IF EXISTS mask_wait",
             "CREATE TABLE mask_wait (id int, acct integer)",
             "INSERT INTO mask_wait VALUES (1, 123456789)")
    c = psycopg2.connect(**pii.params(user=BOB))
    try:
        cur = c.cursor()  # a transaction: its lock holds the rename back
        cur.execute("SELECT 1 FROM mask_wait")
        t = threading.Thread(target=as_alice,
                             args=(pii, "ALTER TABLE mask_wait RENAME COLUMN acct TO ssn"))
        t.start()
        time.sleep(1.0)  # the rename was judged and waits for bob's lock
        cur.execute("SELECT acct AS b FROM mask_wait")
        assert cur.fetchall() == [(123456789,)]
        c.commit()
        t.join(15)
        assert not t.is_alive()
        cur.execute("SELECT ssn AS b FROM mask_wait")
        assert cur.fetchall() == [(6789,)]
        c.commit()
    finally:
        c.close()


def test_copilot_masked_too(pii):
    """An agent (kind agent, row limit 5) gets the same masked values."""
    assert fetch_psycopg2(pii, "copilot") == as_text(MASKED)


# ---------------------------------------------------------------- large results


def luhn_complete(partial):
    digits = [int(d) for d in partial]
    s = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        s += d
    return partial + str((10 - s % 10) % 10)


N_BIG = 20000


def big_row(i):
    email = f"user{i}.x@host{i % 7}.example.com"
    card = luhn_complete(f"4{i:014d}")
    ssn = f"{101 + i % 500:03d}-{1 + i % 98:02d}-{1 + i % 9998:04d}"
    if i % 1000 == 7:  # a few values far longer than one network read
        note = ("x" * 40000) + f" mail big{i}@example.net " + ("y" * 40000) + " card " + card
    else:
        note = f"row {i}: write to {email} about card {card} " + "z" * (i % 200)
    return (i, email, card, ssn, note)


def big_masked(i):
    _, email, card, ssn, note = big_row(i)
    m_email = "u***@" + email.split("@")[1]
    m_card = "****-****-****-" + card[-4:]
    m_ssn = "***-**-" + ssn[-4:]
    if i % 1000 == 7:
        m_note = note.replace(f"big{i}@example.net", "b***@example.net").replace(card, m_card)
    else:
        m_note = note.replace(email, m_email).replace(card, m_card)
    return (str(i), m_email, m_card, m_ssn, m_note)


def as_alice(ep, *sql):
    """Run each statement as alice (unmasked), in autocommit: the tables the tests read."""
    c = psycopg2.connect(**ep.params(user=ALICE))
    c.autocommit = True
    try:
        cur = c.cursor()
        for q in sql:
            cur.execute(q)
    finally:
        c.close()


@pytest.fixture(scope="module")
def big(pii):
    c = psycopg2.connect(**pii.params(user=ALICE))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS mask_big")
    cur.execute("CREATE TABLE mask_big (id int PRIMARY KEY, email text, card text, ssn text, "
                "note text)")
    buf = io.StringIO()
    for i in range(1, N_BIG + 1):
        buf.write("\t".join(str(v) for v in big_row(i)) + "\n")
    buf.seek(0)
    cur.copy_expert("COPY mask_big FROM STDIN", buf)
    c.close()
    return pii


def test_large_result_masked_row_by_row(big):
    rows = fetch_psycopg2(big, BOB, "SELECT id, email, card, ssn, note FROM mask_big ORDER BY id")
    assert len(rows) == N_BIG
    bad = [(i + 1, r) for i, r in enumerate(rows) if r != big_masked(i + 1)]
    assert not bad, f"{len(bad)} rows differ; first: {bad[0][1][:4]} vs {big_masked(bad[0][0])[:4]}"


def test_large_result_raw_for_alice_and_copy_masked(big):
    rows = fetch_psycopg2(big, ALICE, "SELECT id, email, card, ssn, note FROM mask_big ORDER BY id")
    assert rows == [tuple(str(v) for v in big_row(i)) for i in range(1, N_BIG + 1)]
    data = copy_out(big, BOB, "COPY (SELECT id, email, card, ssn, note FROM mask_big ORDER BY id) "
                              "TO STDOUT")
    got = copy_text_rows(data)
    assert len(got) == N_BIG
    bad = [i + 1 for i, r in enumerate(got) if r != big_masked(i + 1)]
    assert not bad, f"{len(bad)} COPY rows differ; first id {bad[0]}: {got[bad[0] - 1][:4]}"


# ---------------------------------------------------------------- errors and notices


@pytest.fixture(scope="module")
def uniq(pii):
    as_alice(pii, "DROP TABLE IF EXISTS mask_uniq",
             "CREATE TABLE mask_uniq (id serial, email text UNIQUE)",
             "INSERT INTO mask_uniq (email) VALUES ('dup.user@example.com')",
             """CREATE OR REPLACE FUNCTION mask_notice() RETURNS int LANGUAGE plpgsql AS $$
                BEGIN RAISE NOTICE 'write to % now', 'notice.person@example.com'; RETURN 1;
                END $$""")
    return pii


@pytest.mark.parametrize("user", [BOB, ALICE], ids=["bob", "alice"])
def test_unique_violation_detail_masked(uniq, user):
    c = psycopg2.connect(**uniq.params(user=user))
    c.autocommit = True
    try:
        with pytest.raises(psycopg2.errors.UniqueViolation) as e:
            c.cursor().execute("INSERT INTO mask_uniq (email) VALUES ('dup.user@example.com')")
        detail = e.value.diag.message_detail
        if user == BOB:
            assert detail == "Key (email)=(d***@example.com) already exists.", detail
            assert "dup.user" not in e.value.pgerror
        else:
            assert detail == "Key (email)=(dup.user@example.com) already exists."
        # the session goes on
        cur = c.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        c.close()


@pytest.mark.parametrize("user", [BOB, ALICE], ids=["bob", "alice"])
def test_notice_masked(uniq, user):
    c = psycopg2.connect(**uniq.params(user=user))
    try:
        cur = c.cursor()
        cur.execute("SELECT mask_notice()")
        assert cur.fetchone() == (1,)
        notices = "".join(c.notices)
        if user == BOB:
            assert "write to n***@example.com now" in notices, notices
            assert "notice.person" not in notices
        else:
            assert "write to notice.person@example.com now" in notices, notices
    finally:
        c.close()


# ---------------------------------------------------------------- who sees raw values


class RulesConfig(SluiceConfig):
    """The harness config with rules of the test's own first in policy.rules."""

    extra_rules = []

    def text(self):
        lines = super().text().split("\n")
        i = lines.index("  rules:")
        return "\n".join(lines[:i + 1] + self.extra_rules + lines[i + 1:])


def spawn_with_rules(monkeypatch, spawn_sluice, name, rules, **kw):
    cls = type("Rules_" + name, (RulesConfig,), {"extra_rules": rules})
    monkeypatch.setattr(conftest, "SluiceConfig", cls)
    try:
        return spawn_sluice(name, **kw)
    finally:
        monkeypatch.undo()


def test_rule_unmask_for_bob_on_one_table(pii, spawn_sluice, monkeypatch):
    sp, ep = spawn_with_rules(monkeypatch, spawn_sluice, "unmaskrule", [
        "    - { name: bob-sees-pii, match: { identity: bob@corp.com, tables: mask_pii },",
        "        action: unmask }",
    ])
    assert fetch_psycopg2(ep, BOB) == as_text(RAW)
    # another table stays masked for bob
    rows = fetch_psycopg2(ep, BOB, "SELECT email FROM customers WHERE id = 3")
    assert rows == [("u***@example.com",)]
    # and so does mask_pii for copilot
    assert fetch_psycopg2(ep, "copilot") == as_text(MASKED)
    sp.assert_clean_exit()


def test_rule_mask_overrides_unmask_list(pii, spawn_sluice, monkeypatch):
    """action: mask masks even for an identity in masking.unmask."""
    sp, ep = spawn_with_rules(monkeypatch, spawn_sluice, "maskrule", [
        "    - { name: alice-masked-pii, match: { identity: alice@corp.com, tables: mask_pii },",
        "        action: mask }",
    ])
    assert fetch_psycopg2(ep, ALICE) == as_text(MASKED)
    assert fetch_psycopg2(ep, ALICE, "SELECT email FROM customers WHERE id = 3") == \
        [("user3@example.com",)]
    sp.assert_clean_exit()


def test_unmask_groups(pii, spawn_sluice):
    sp, ep = spawn_sluice("unmaskgroups", extra_yaml="masking: { unmask: { groups: [analysts] } }")
    assert fetch_psycopg2(ep, BOB) == as_text(RAW)  # bob is in analysts
    assert fetch_psycopg2(ep, ALICE) == as_text(MASKED)  # alice (engineers) is not
    assert fetch_psycopg2(ep, "copilot") == as_text(MASKED)
    sp.assert_clean_exit()


def test_masking_disabled(pii, spawn_sluice):
    sp, ep = spawn_sluice("nomasking", extra_yaml="masking: { enabled: false }")
    for user in (BOB, "copilot"):
        assert fetch_psycopg2(ep, user) == as_text(RAW), user
    assert copy_text_rows(copy_out(ep, BOB, f"COPY ({SELECT}) TO STDOUT")) == as_text(RAW)
    sp.assert_clean_exit()


def test_exempt_goes_by_catalog_names(pii, spawn_sluice):
    """masking.exempt matches a column's own names, not the name a query gives it: bob cannot
    alias email to an exempt name, in a SELECT or in a COPY (whose column names come from the
    statement's text and never exempt anything)."""
    sp, ep = spawn_sluice("exempt", extra_yaml="masking: { unmask: { groups: [engineers] }, "
                                               "exempt: ['*.sku', 'sku'] }")
    assert fetch_psycopg2(ep, BOB, "SELECT email AS sku FROM mask_pii WHERE id = 1") == \
        [("a***@example.org",)]
    data = copy_out(ep, BOB, "COPY (WITH products AS (SELECT email AS sku FROM mask_pii "
                             "WHERE id = 1) SELECT sku, 1 AS ssn FROM products) TO STDOUT")
    assert_no_secret(data, "COPY with an exempt alias")
    assert copy_text_rows(data)[0][0] == "a***@example.org"
    # a temporary view or table is the client's too: none of its names exempts (committed,
    # so that the catalog resolver's own connection sees them)
    c = psycopg2.connect(**ep.params(user=BOB))
    c.autocommit = True
    try:
        cur = c.cursor()
        cur.execute("CREATE TEMP VIEW sku AS SELECT email AS sku FROM mask_pii WHERE id = 1")
        cur.execute("CREATE TEMP TABLE skus AS SELECT email AS sku FROM mask_pii WHERE id = 1")
        for rel in ("sku", "skus"):
            cur.execute(f"SELECT sku FROM {rel}")
            assert cur.fetchall() == [("a***@example.org",)], rel
    finally:
        c.close()
    sp.assert_clean_exit()


# ---------------------------------------------------------------- paths around the plain text row


@pytest.fixture(scope="module")
def renamed(pii):
    """A table whose sensitive values are recognisable by their column names only (an SSN
    without dashes, a token of no known shape)."""
    as_alice(pii, "DROP TABLE IF EXISTS mask_renamed",
             "CREATE TABLE mask_renamed (id int, ssn text, api_token text)",
             "INSERT INTO mask_renamed VALUES (1, '078051120', 'plainsecretvalue42')")
    return pii


RENAMED_RAW = ["078051120", "plainsecretvalue42"]


def test_columns_by_name(renamed):
    rows = fetch_psycopg2(renamed, BOB, "SELECT ssn, api_token FROM mask_renamed")
    assert rows == [("***-**-1120", "[REDACTED:secret]")]


def test_copy_columns_by_name(renamed):
    """COPY ... TO STDOUT naming its columns (a column list, as pg_dump writes, or a query's
    output names): columns sensitive by name are masked whole, as in a SELECT, in text and CSV
    (quoted, with a header line, which stays), and a NULL stays NULL. Alice sees raw values."""
    as_alice(renamed, "INSERT INTO mask_renamed VALUES (2, NULL, 'x,\"y\"')")
    sql = "COPY mask_renamed (id, ssn, api_token) TO STDOUT"
    masked = [("1", "***-**-1120", "[REDACTED:secret]"), ("2", None, "[REDACTED:secret]")]
    data = copy_out(renamed, BOB,
                    "COPY (SELECT id, ssn, api_token FROM mask_renamed ORDER BY id) TO STDOUT")
    assert copy_text_rows(data) == masked
    assert sorted(copy_text_rows(copy_out(renamed, BOB, sql))) == masked
    data = copy_out(renamed, BOB, "COPY (SELECT id, api_token AS t, ssn AS s FROM mask_renamed "
                                  "ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)")
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [["id", "t", "s"], ["1", "[REDACTED:secret]", "***-**-1120"],
                    ["2", "[REDACTED:secret]", ""]]
    for blob in (data, copy_out(renamed, BOB, sql)):
        assert not [v for v in RENAMED_RAW + ['x,"y"'] if v.encode() in blob], blob
    raw = copy_out(renamed, ALICE, sql + " (FORMAT csv)")
    assert sorted(csv.reader(io.StringIO(raw.decode()))) == [["1", "078051120",
                                                               "plainsecretvalue42"],
                                                              ["2", "", 'x,"y"']]
    as_alice(renamed, "DELETE FROM mask_renamed WHERE id = 2")


def test_renamed_columns_masked_from_the_first_query(renamed):
    """SELECT ssn AS a: the column is known by its table OID and attribute number only. The
    catalog resolver learns it in the background after a cache miss, so the very first
    result (and every first result after DDL empties the cache) must not go out raw."""
    c = psycopg2.connect(**renamed.params(user=BOB))
    c.autocommit = True
    try:
        cur = c.cursor()
        got = []
        # DDL seen through sluice empties the catalog cache: bob can do that himself.
        cur.execute("CREATE TEMP TABLE mask_flush (x int)")
        for _ in range(3):
            cur.execute("SELECT ssn AS a, api_token AS b FROM mask_renamed")
            got.append(cur.fetchall())
            time.sleep(0.2)
        leaked = [i for i, r in enumerate(got) if set(RENAMED_RAW) & set(r[0])]
        assert not leaked, f"renamed sensitive columns went out raw in results {leaked}: {got}"
        assert got[-1] == [("***-**-1120", "[REDACTED:secret]")]
    finally:
        c.close()


@pytest.fixture(scope="module")
def parted(pii):
    """Seven rows whose sensitive values are known by their column names only."""
    as_alice(pii, "DROP TABLE IF EXISTS mask_parted",
             "CREATE TABLE mask_parted (id int, api_token text)",
             "INSERT INTO mask_parted SELECT g, 'plainsecretvalue' || g FROM generate_series(1, 7) g")
    return pii


PARTED = "SELECT id, api_token FROM mask_parted ORDER BY id"


def test_jdbc_fetch_size_masks_every_part(parted, java_classes):
    """pgJDBC with a fetch size describes its portal once, then fetches it in parts, each an
    Execute and a Sync: every part needs the portal's plan, not only the first (the rows of
    the later parts used to be scanned by value only, and went out raw)."""
    p = parted.params(user=BOB)
    url = f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?sslmode=disable"
    r = subprocess.run(["java", "-cp", f"{java_classes}:{JAR}", "SluiceDump", url, p["user"],
                        p["password"], PARTED], capture_output=True, timeout=120,
                       env=dict(os.environ, SLUICE_FETCH_SIZE="2"))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    rows = [tuple(bytes.fromhex(v).decode() for v in line.split("\t"))
            for line in r.stdout.decode().rstrip("\n").split("\n")]
    assert rows == [(str(i), "[REDACTED:secret]") for i in range(1, 8)], rows


def datarow(body):
    """The values of a DataRow (None for NULL)."""
    n, off, out = int.from_bytes(body[:2], "big"), 2, []
    for _ in range(n):
        size = int.from_bytes(body[off:off + 4], "big", signed=True)
        off += 4
        out.append(None if size < 0 else body[off:off + size])
        off += max(size, 0)
    return out


def test_execute_without_describe_masked(parted):
    """A client need not Describe what it executes (then it gets no column names, but it still
    gets the values): sluice describes the portal itself, and its own reply never reaches the
    client. Also a portal fetched in parts across groups, and an Execute of another portal
    between a Describe and the Execute of the described one."""
    import pgwire
    from test_audit_protocol import B, E, P, SYNC, replies, simple

    c = parted.raw_login("shop", BOB)
    try:
        simple(c, PARTED)  # the catalog knows the table from here on
        simple(c, "BEGIN")
        c.send(P(PARTED) + B("cur") + E("cur", max_rows=3) + SYNC)
        got = replies(c)
        c.send(E("cur", max_rows=3) + SYNC)
        got += replies(c)
        c.send(P("SELECT 1 AS one") + B("other") + pgwire.message(b"D", b"Pother\0") +
               E("cur", max_rows=3) + E("other") + SYNC)
        got += replies(c)
        simple(c, "COMMIT")
    finally:
        c.close()
    types = [t for t, _ in got]
    assert types.count(b"T") == 1 and b"n" not in types, types  # only the client's Describe
    values = [datarow(b) for t, b in got if t == b"D"]
    tokens = [v[1] for v in values if len(v) == 2]
    assert tokens == [b"[REDACTED:secret]"] * 7, values


def test_binary_text_array_masked(pii):
    """text[] in binary format carries its elements' bytes inside the array structure."""
    with psycopg3_connect(pii, BOB) as c:
        rows = c.cursor(binary=True).execute(
            "SELECT ARRAY[email, note] FROM mask_pii WHERE id = 1").fetchall()
    assert_no_secret(repr(rows), "binary text[]")
    # Inside binary arrays the element framing must not move: detected values are starred
    # in place, keeping their length (docs/masking.md).
    email = rows[0][0][0]
    assert email == "*" * len("alice.smith@example.org"), email


def test_binary_arrays_and_records_masked(pii):
    """Binary results sluice cannot read as text: an array whose column is sensitive by its
    name (every element starred in place, the array still decodes), and records (a ROW, a
    whole table row), whose values are found by value between the lengths and type OIDs and
    starred in place."""
    with psycopg3_connect(pii, BOB) as c:
        cur = c.cursor(binary=True)
        (arr,) = cur.execute("SELECT ARRAY['pat.named@corp.com'] AS email").fetchone()
        assert arr == ["*" * len("pat.named@corp.com")], arr
        (arr,) = cur.execute("SELECT array_agg(note) AS api_token FROM mask_pii").fetchone()
        assert arr and all(set(v) <= {"*"} for v in arr if v), arr
        # a 2-D array of text, scanned element by element (its framing is not a record's)
        (arr,) = cur.execute("SELECT ARRAY[['bob@ex.co'], ['x']] AS x").fetchone()
        assert "bob@ex.co" not in repr(arr) and arr[1] == ["x"], arr
        # json and jsonb elements still decode: strings of stars
        for cast in ("json", "jsonb"):
            (arr,) = cur.execute(f"SELECT ARRAY['{{\"k\": \"pat@corp.com\"}}'::{cast}, '7'::{cast}]"
                                 f" AS email").fetchone()
            assert isinstance(arr[0], str) and set(arr[0]) == {"*"} and arr[1] == 0, (cast, arr)
    with psycopg3_connect(pii, BOB) as c:  # records: raw bytes, so read them as bytes
        c.adapters.register_loader("record", psycopg.types.string.ByteaBinaryLoader)
        cur = c.cursor(binary=True)
        for sql in ("SELECT ROW(email, ssn) AS r FROM mask_pii WHERE id = 1",
                    "SELECT mask_pii FROM mask_pii WHERE id = 1"):
            (rec,) = cur.execute(sql).fetchone()
            assert_no_secret(repr(rec), sql)
            assert b"*****" in rec, (sql, rec)


def test_binary_copy_not_raw(pii):
    """COPY ... TO STDOUT (FORMAT binary): either masked (lengths rewritten) or refused; never
    raw."""
    with psycopg3_connect(pii, BOB) as c:
        try:
            with c.cursor().copy(f"COPY ({SELECT}) TO STDOUT (FORMAT binary)") as cp:
                data = b"".join(bytes(x) for x in cp)
        except psycopg.Error:
            return  # refused: acceptable
    assert_no_secret(data, "COPY binary")


def test_notification_payload_masked(pii):
    """NOTIFY payloads come from the database like rows do: bob alone can LISTEN and then
    SELECT pg_notify(channel, email) FROM ..., so an unmasked payload hands him raw values."""
    b = psycopg2.connect(**pii.params(user=BOB))
    b.autocommit = True
    try:
        cur = b.cursor()
        cur.execute("LISTEN mask_ch")
        cur.execute("SELECT pg_notify('mask_ch', 'mail ' || email) FROM mask_pii WHERE id = 1")
        deadline = time.time() + 5
        while not b.notifies and time.time() < deadline:
            time.sleep(0.05)
            b.poll()
        assert b.notifies, "no notification arrived"
        payload = b.notifies[0].payload
        assert payload == "mail a***@example.org", payload
    finally:
        b.close()


def test_error_message_field_masked(pii):
    c = psycopg2.connect(**pii.params(user=BOB))
    try:
        with pytest.raises(psycopg2.Error) as e:
            c.cursor().execute("SELECT email::int FROM mask_pii WHERE id = 1")
        assert e.value.diag.message_primary == \
            'invalid input syntax for type integer: "a***@example.org"'
    finally:
        c.close()


def test_column_named_after_a_value_masked(pii):
    """A view whose column names were made from data (DO ... EXECUTE format('... AS %I', email))
    names a raw value in every RowDescription: bob gets the name masked, alice as it is."""
    a = psycopg2.connect(**pii.params(user=ALICE))
    a.autocommit = True
    a.cursor().execute(
        "DO $$ BEGIN EXECUTE format('CREATE OR REPLACE VIEW mask_named AS SELECT 1 AS id, "
        "2 AS %I', (SELECT email FROM mask_pii WHERE id = 1)); END $$")
    try:
        for user, name in ((BOB, "a***@example.org"), (ALICE, "alice.smith@example.org")):
            c = psycopg2.connect(**pii.params(user=user))
            try:
                cur = c.cursor()
                cur.execute("SELECT * FROM mask_named")
                assert [d.name for d in cur.description] == ["id", name]
                assert cur.fetchall() == [(1, 2)]
            finally:
                c.close()
        with psycopg3_connect(pii, BOB) as c:  # the extended protocol's Describe too
            cur = c.execute("SELECT * FROM mask_named WHERE id = %s", (1,))
            assert [d.name for d in cur.description] == ["id", "a***@example.org"]
        # an Execute with no Describe: sluice describes it for itself, and the client gets
        # no RowDescription it did not ask for
        with pii.raw_login(user=BOB) as r:
            r.send(pgwire.message(b"P", b"\0SELECT * FROM mask_named\0\0\0") +
                   pgwire.message(b"B", b"\0\0\0\0\0\0\0\0") +
                   pgwire.message(b"E", b"\0\0\0\0\0") + pgwire.message(b"S"))
            types = []
            while True:
                t, _ = r.read_msg()
                types.append(t)
                if t == b"Z":
                    break
            assert types == [b"1", b"2", b"D", b"C", b"Z"], types
    finally:
        a.cursor().execute("DROP VIEW IF EXISTS mask_named")
        a.close()


def test_returning_and_cursor_fetch_masked(pii):
    c = psycopg2.connect(**pii.params(user=BOB))
    try:
        cur = c.cursor()
        cur.execute("CREATE TEMP TABLE mask_ret (email text)")
        cur.execute("INSERT INTO mask_ret VALUES ('ret.person@example.com') RETURNING email")
        assert cur.fetchall() == [("r***@example.com",)]
        cur.execute("DECLARE mc CURSOR FOR SELECT email, card FROM mask_pii ORDER BY id")
        cur.execute("FETCH 1 FROM mc")
        assert cur.fetchall() == [("a***@example.org", "****-****-****-4242")]
        c.rollback()
    finally:
        c.close()
