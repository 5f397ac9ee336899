"""The audit of writes whose transaction block does not commit (docs/audit.md, "rolled
back"): a ROLLBACK, a ROLLBACK TO SAVEPOINT, a COMMIT of a failed block, a COMMIT that fails, a
BEGIN that takes in the writes of its pipeline group, and a session that ends inside its block.
Each undone write gets a statement_end referring to its event; committed writes get none. Every
test also reads the table back, so that what the audit says is what the database holds."""
import time

import psycopg2

import pgwire

from conftest import ALICE
from test_audit_protocol import (BOB, SYNC, B, E, P, Q, admin, codes, replies, simple,
                                 statements)

ROLLED_BACK = "rolled back: "


def undone(sp, marker, n=1):
    """The statement events whose text holds marker, and the statement_ends that say they were
    rolled back."""
    st, ends = statements(sp, marker, n)
    assert len(st) == n, st
    return st, [e for e in ends if e.get("detail", "").startswith(ROLLED_BACK)]


def table(ep, name, cols="id int"):
    a = admin(ep)
    a.cursor().execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({cols})")
    return a


def ids(a, name):
    cur = a.cursor()
    cur.execute(f"SELECT id FROM {name} ORDER BY id")
    return [r[0] for r in cur.fetchall()]


def test_rollback_and_commit(spawn_sluice):
    """psycopg2 outside autocommit: a rolled-back INSERT gets a statement_end saying so, with
    its event's rows kept; a committed one gets none."""
    sp, ep = spawn_sluice("tx-rollback")
    a = table(ep, "tx_rb")
    c = psycopg2.connect(**ep.params(user=ALICE))
    cur = c.cursor()
    cur.execute("INSERT INTO tx_rb SELECT g FROM generate_series(1, 3) g")
    c.rollback()
    cur.execute("INSERT INTO tx_rb SELECT g AS kept FROM generate_series(7, 8) g")
    c.commit()
    c.close()
    assert ids(a, "tx_rb") == [7, 8]
    st, ends = undone(sp, "generate_series($1, $2) g", 2)
    gone = [e for e in st if "kept" not in e["statement"]][0]
    kept = [e for e in st if "kept" in e["statement"]][0]
    assert [e["ref"] for e in ends] == [gone["seq"]], (st, ends)
    assert ends[0]["detail"] == "rolled back: its transaction ended with ROLLBACK", ends
    assert not [e for e in ends if e["ref"] == kept["seq"]]


def test_savepoints(spawn_sluice):
    """ROLLBACK TO SAVEPOINT undoes what completed after the savepoint (which stays, so a second
    ROLLBACK TO it works too); RELEASE hands a savepoint's writes to the block."""
    sp, ep = spawn_sluice("tx-savepoint")
    a = table(ep, "tx_sp")
    c = psycopg2.connect(**ep.params(user=ALICE))
    cur = c.cursor()
    for sql in ["INSERT INTO tx_sp VALUES (1)", "SAVEPOINT s1",
                "INSERT INTO tx_sp SELECT 2 AS undone_a", "SAVEPOINT s2",
                "INSERT INTO tx_sp SELECT 3 AS undone_b", "ROLLBACK TO SAVEPOINT s1",
                "INSERT INTO tx_sp SELECT 4 AS undone_c", "ROLLBACK TO s1",
                "SAVEPOINT s3", "INSERT INTO tx_sp SELECT 5 AS released", "RELEASE s3"]:
        cur.execute(sql)
    c.commit()
    assert ids(a, "tx_sp") == [1, 5]
    for marker in ["undone_a", "undone_b", "undone_c"]:
        st, ends = undone(sp, marker)
        assert [e["detail"] for e in ends] == ["rolled back: ROLLBACK TO SAVEPOINT"], (st, ends)
    for marker in ["released", "tx_sp VALUES"]:
        st, ends = undone(sp, marker)
        assert ends == [], (st, ends)
    # A released savepoint's writes go with the block's ROLLBACK.
    cur.execute("SAVEPOINT s4")
    cur.execute("INSERT INTO tx_sp SELECT 6 AS released_then_rolled")
    cur.execute("RELEASE SAVEPOINT s4")
    c.rollback()
    c.close()
    assert ids(a, "tx_sp") == [1, 5]
    st, ends = undone(sp, "released_then_rolled")
    assert [e["detail"] for e in ends] == ["rolled back: its transaction ended with ROLLBACK"]


def test_commit_of_a_failed_block(spawn_sluice):
    """A statement fails in the block: its COMMIT answers ROLLBACK, and the writes before the
    error say so, with the error's SQLSTATE."""
    sp, ep = spawn_sluice("tx-failed")
    a = table(ep, "tx_fb")
    c = ep.raw_login("shop", ALICE)
    assert codes(simple(c, "BEGIN")) == []
    assert codes(simple(c, "INSERT INTO tx_fb VALUES (1)")) == []
    assert codes(simple(c, "SELECT 1 / (0 * id) FROM tx_fb")) == ["22012"]
    assert codes(simple(c, "SELECT 1")) == ["25P02"]
    got = simple(c, "COMMIT")
    assert (b"C", b"ROLLBACK\0") in got, got
    c.close()
    assert ids(a, "tx_fb") == []
    st, ends = undone(sp, "INSERT INTO tx_fb")
    assert len(ends) == 1 and ends[0]["sqlstate"] == "22012", (st, ends)


def test_commit_that_fails(spawn_sluice):
    """A deferred constraint fails the COMMIT itself: the block ends without committing."""
    sp, ep = spawn_sluice("tx-deferred")
    a = table(ep, "tx_dc", "id int UNIQUE DEFERRABLE INITIALLY DEFERRED")
    c = psycopg2.connect(**ep.params(user=ALICE))
    cur = c.cursor()
    cur.execute("INSERT INTO tx_dc VALUES (1)")
    cur.execute("INSERT INTO tx_dc SELECT 1 AS dup")
    try:
        c.commit()
        raise AssertionError("the COMMIT did not fail")
    except psycopg2.errors.UniqueViolation:
        pass
    c.close()
    assert ids(a, "tx_dc") == []
    for marker in ["tx_dc VALUES", "AS dup"]:
        st, ends = undone(sp, marker)
        assert [(e["detail"], e["sqlstate"]) for e in ends] == [
            ("rolled back: its transaction ended without committing", "23505")], (st, ends)


def test_begin_takes_in_its_group(spawn_sluice):
    """In one pipeline group, a write before BEGIN joins the block (PostgreSQL makes the
    implicit transaction explicit), so the ROLLBACK of a later group undoes it too."""
    sp, ep = spawn_sluice("tx-pipeline")
    a = table(ep, "tx_pl")
    c = ep.raw_login("shop", ALICE)
    c.send(P("INSERT INTO tx_pl SELECT 1 AS before_begin") + B() + E() + P("BEGIN") + B() + E() +
           P("INSERT INTO tx_pl SELECT 2 AS after_begin") + B() + E() + SYNC)
    assert codes(replies(c)) == []
    c.send(P("ROLLBACK") + B() + E() + SYNC)
    assert codes(replies(c)) == []
    c.close()
    assert ids(a, "tx_pl") == []
    for marker in ["before_begin", "after_begin"]:
        st, ends = undone(sp, marker)
        assert len(ends) == 1, (marker, st, ends)


def test_session_ends_inside_its_block(spawn_sluice):
    """The client goes away inside its block: PostgreSQL rolls it back, and the audit says so;
    a write committed before it in the same session stays as it was."""
    sp, ep = spawn_sluice("tx-gone")
    a = table(ep, "tx_gone")
    c = ep.raw_login("shop", ALICE)
    assert codes(simple(c, "INSERT INTO tx_gone SELECT 1 AS committed_first")) == []
    assert codes(simple(c, "BEGIN")) == []
    assert codes(simple(c, "INSERT INTO tx_gone SELECT 2 AS left_open")) == []
    c.close()
    st, ends = undone(sp, "left_open")
    for _ in range(50):
        if ends:
            break
        st, ends = undone(sp, "left_open")
    assert [e["detail"] for e in ends] == [
        "rolled back: the session ended inside its transaction"], (st, ends)
    assert ids(a, "tx_gone") == [1]
    st, ends = undone(sp, "committed_first")
    assert ends == [], (st, ends)


def test_session_ends_with_its_commit_in_flight(spawn_sluice):
    """The client sends a Query that ends with COMMIT and leaves before the reply: PostgreSQL
    still runs it and commits, so the writes of the block are not said to be rolled back."""
    sp, ep = spawn_sluice("tx-inflight")
    a = table(ep, "tx_fl")
    c = ep.raw_login("shop", ALICE)
    assert codes(simple(c, "BEGIN")) == []
    assert codes(simple(c, "INSERT INTO tx_fl SELECT 1 AS in_block_first")) == []
    c.send(Q("INSERT INTO tx_fl SELECT 2 AS in_flight; SELECT pg_sleep(0.3); COMMIT"))
    time.sleep(0.1)
    c.close()
    for _ in range(50):
        if ids(a, "tx_fl") == [1, 2]:
            break
        time.sleep(0.1)
    assert ids(a, "tx_fl") == [1, 2]
    for marker in ["in_block_first", "in_flight"]:
        st, ends = undone(sp, marker)
        assert ends == [], (marker, st, ends)


def test_only_what_ran_and_stayed_in_its_block_is_claimed(spawn_sluice):
    """No claim for a statement that never ran (skipped after an error in its group), nor for
    a write the block kept although a simple Query mixed it with transaction control (INSERT;
    SAVEPOINT a then ROLLBACK TO a; INSERT; COMMIT; BEGIN then ROLLBACK), nor for what a COMMIT
    of an implicit transaction made final."""
    sp, ep = spawn_sluice("tx-kept")
    a = table(ep, "tx_kept")
    c = ep.raw_login("shop", ALICE)
    simple(c, "BEGIN")
    c.send(P("SELECT 1 / (0 * g) FROM generate_series(1, 1) g") + B() + E() +
           P("INSERT INTO tx_kept SELECT 1 AS never_ran") + B() + E() + SYNC)
    assert codes(replies(c)) == ["22012"]
    simple(c, "ROLLBACK")
    st, ends = statements(sp, "never_ran")
    details = [e.get("detail", "") for e in st + ends if e.get("detail")]
    assert [d[:12] for d in details] == ["not executed"], (st, ends)

    simple(c, "BEGIN")
    assert codes(simple(c, "INSERT INTO tx_kept SELECT 2 AS before_sp; SAVEPOINT a")) == []
    assert codes(simple(c, "ROLLBACK TO a")) == []
    assert codes(simple(c, "COMMIT")) == []
    simple(c, "BEGIN")
    assert codes(simple(c, "INSERT INTO tx_kept SELECT 3 AS committed_inside; COMMIT; BEGIN")) == []
    assert codes(simple(c, "ROLLBACK")) == []
    c.send(P("INSERT INTO tx_kept SELECT 4 AS implicit_committed") + B() + E() +
           P("COMMIT") + B() + E() + P("BEGIN") + B() + E() + SYNC)
    assert codes(replies(c)) == []
    simple(c, "ROLLBACK")
    c.send(P("INSERT INTO tx_kept SELECT 5 AS committed_then_error") + B() + E() +
           P("COMMIT") + B() + E() + P("SELECT 1 / (0 * g) FROM generate_series(1, 1) g") + B() +
           E() + SYNC)
    assert codes(replies(c)) == ["22012"]
    c.close()
    assert ids(a, "tx_kept") == [2, 3, 4, 5]
    for marker in ["before_sp", "committed_inside", "implicit_committed", "committed_then_error"]:
        st, ends = statements(sp, marker)
        assert len(st) == 1 and not [e for e in ends if e.get("detail")], (marker, st, ends)


def test_implicit_rollback_chain_and_portals(spawn_sluice):
    """A ROLLBACK in a pipeline group outside a block rolls back the group's implicit
    transaction; COMMIT AND CHAIN starts a block at once; a write fetched in parts ran whole at
    its first Execute: a savepoint set after it does not undo it, a ROLLBACK does."""
    sp, ep = spawn_sluice("tx-chain")
    a = table(ep, "tx_ch")
    c = ep.raw_login("shop", ALICE)
    c.send(P("INSERT INTO tx_ch SELECT 1 AS implicit_rb") + B() + E() + P("ROLLBACK") + B() + E() +
           SYNC)
    assert codes(replies(c)) == []
    simple(c, "BEGIN")
    simple(c, "INSERT INTO tx_ch SELECT 2 AS before_chain")
    c.send(P("COMMIT AND CHAIN") + B() + E() +
           P("INSERT INTO tx_ch SELECT 3 AS after_chain") + B() + E() + SYNC)
    assert codes(replies(c)) == []
    simple(c, "ROLLBACK")
    simple(c, "BEGIN")
    ret = "INSERT INTO tx_ch SELECT g FROM generate_series(10, 12) g RETURNING id AS {}"
    c.send(P(ret.format("parts_kept")) + B("p1") + E("p1", max_rows=1) + SYNC)
    assert (b"s", b"") in replies(c)
    simple(c, "SAVEPOINT a")
    c.send(E("p1") + SYNC)
    replies(c)
    simple(c, "ROLLBACK TO a")
    simple(c, "COMMIT")
    simple(c, "BEGIN")
    c.send(P(ret.format("parts_undone").replace("10, 12", "20, 22")) + B("p2") +
           E("p2", max_rows=1) + SYNC)
    replies(c)
    simple(c, "ROLLBACK")
    c.close()
    assert ids(a, "tx_ch") == [2, 10, 11, 12]
    want = {"implicit_rb": ["rolled back: its transaction ended with ROLLBACK"],
            "before_chain": [], "after_chain": ["rolled back: its transaction ended with ROLLBACK"],
            "parts_kept": [], "parts_undone": ["rolled back: its transaction ended with ROLLBACK"]}
    for marker, details in want.items():
        st, ends = undone(sp, marker)
        assert [e["detail"] for e in ends] == details, (marker, st, ends)


def test_writes_fetched_in_parts_outside_a_block(spawn_sluice):
    """A write fetched in parts outside a block ran whole at its first Execute: a COMMIT later
    in its group makes it final (no claim, even when an error follows), a ROLLBACK there undoes
    it, and a BEGIN there takes it into the block that a later ROLLBACK undoes."""
    sp, ep = spawn_sluice("tx-parts")
    a = table(ep, "tx_pt")
    c = ep.raw_login("shop", ALICE)
    ret = "INSERT INTO tx_pt SELECT g FROM generate_series({0}, {0} + 2) g RETURNING id AS {1}"
    err = P("SELECT 1 / (0 * g) FROM generate_series(1, 1) g") + B() + E()
    c.send(P(ret.format(10, "commit_then_error")) + B("p1") + E("p1", max_rows=1) +
           P("COMMIT") + B("c") + E("c") + err + SYNC)
    assert codes(replies(c)) == ["22012"]
    c.send(P(ret.format(20, "commit_then_begin")) + B() + E("", max_rows=1) +
           P("COMMIT") + B("c") + E("c") + P("BEGIN") + B() + E() + SYNC)
    assert codes(replies(c)) == []
    simple(c, "ROLLBACK")
    c.send(P(ret.format(30, "group_rollback")) + B("p2") + E("p2", max_rows=1) +
           P("ROLLBACK") + B("r") + E("r") + SYNC)
    assert codes(replies(c)) == []
    c.send(P(ret.format(40, "then_begin")) + B("p3") + E("p3", max_rows=1) +
           P("BEGIN") + B("b") + E("b") + SYNC)
    assert codes(replies(c)) == []
    simple(c, "ROLLBACK")
    c.close()
    assert ids(a, "tx_pt") == [10, 11, 12, 20, 21, 22]
    for marker, n in [("commit_then_error", 0), ("commit_then_begin", 0), ("group_rollback", 1),
                      ("then_begin", 1)]:
        st, ends = statements(sp, marker)
        claims = [e for e in st + ends if e.get("detail", "").startswith((ROLLED_BACK, "failed"))]
        assert len(claims) == n, (marker, st, ends)


def test_refusal_in_a_block_and_a_group_never_synced(spawn_sluice):
    """A statement sluice refuses inside a block fails it, but its placeholder's error is not
    the block's: the claims at ROLLBACK carry none. Writes of an extended-protocol group whose
    Sync never came are rolled back when the session ends, and say so."""
    sp, ep = spawn_sluice("tx-refused")
    a = table(ep, "tx_rf")
    c = ep.raw_login("shop", BOB)
    simple(c, "BEGIN")
    assert codes(simple(c, "INSERT INTO tx_rf SELECT 1 AS before_refusal")) == []
    assert codes(simple(c, "DELETE FROM tx_rf")) == ["42501"]  # no WHERE: refused
    assert codes(simple(c, "ROLLBACK")) == []
    st, ends = undone(sp, "before_refusal")
    assert [(e["detail"], e.get("sqlstate")) for e in ends] == [
        ("rolled back: its transaction ended with ROLLBACK", None)], (st, ends)
    c.send(P("INSERT INTO tx_rf SELECT 2 AS never_synced") + B() + E() + pgwire.message(b"H"))
    t, body = c.read_msg()
    while t != b"C":
        t, body = c.read_msg()
    c.close()
    st, ends = undone(sp, "never_synced")
    for _ in range(50):
        if ends:
            break
        time.sleep(0.1)
        st, ends = undone(sp, "never_synced")
    assert [e["detail"] for e in ends] == [
        "rolled back: the session ended inside its transaction"], (st, ends)
    assert ids(a, "tx_rf") == []
