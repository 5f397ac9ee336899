"""test_pool.py: reuse of idle upstream connections must be invisible to clients.

A client that leaves an idle session hands its backend to the next client of the same target
with the same startup parameters, after DISCARD ALL. The next client must see a fresh session:
no settings, prepared statements, temporary tables, LISTENs or advisory locks of the previous
one. Sessions left inside a transaction, or with other startup parameters, are not reused.
One worker, so that consecutive clients meet the same pool.
"""

import time

import psycopg2
import pytest


def _pid(conn):
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    return cur.fetchone()[0]


def _one(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0]


def test_reused_backend_is_reset(spawn_sluice):
    _, ep = spawn_sluice("pool", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    pid = _pid(a)
    cur = a.cursor()
    cur.execute("SET work_mem = '7MB'")
    cur.execute("PREPARE p AS SELECT 1")
    cur.execute("CREATE TEMP TABLE scratch (x int)")
    cur.execute("LISTEN chan")
    cur.execute("SELECT pg_advisory_lock(4242)")
    a.close()
    time.sleep(0.5)  # DISCARD ALL runs between the two clients

    b = ep.connect("shop", user="etl")
    b.autocommit = True
    assert _pid(b) == pid, "an idle backend of the same target and parameters is reused"
    assert b.get_backend_pid() == pid, "BackendKeyData carries the reused backend's real pid"
    assert _one(b, "SHOW work_mem") == "4MB"
    assert _one(b, "SELECT count(*) FROM pg_prepared_statements") == 0
    assert _one(b, "SELECT count(*) FROM pg_class WHERE relname = 'scratch' "
                   "AND relpersistence = 't'") == 0
    assert _one(b, "SELECT count(*) FROM pg_listening_channels()") == 0
    c = ep.connect("shop", user="etl")
    c.autocommit = True
    assert _one(c, "SELECT pg_try_advisory_lock(4242)") is True


def test_not_reused_inside_transaction_or_with_other_parameters(spawn_sluice):
    _, ep = spawn_sluice("pool2", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    pid_a = _pid(a)  # psycopg2 opened a transaction: the session is not idle
    a.close()
    time.sleep(0.3)
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    pid_b = _pid(b)
    assert pid_b != pid_a
    b.close()
    time.sleep(0.3)
    c = ep.connect("shop", user="etl", application_name="other")
    c.autocommit = True
    assert _pid(c) != pid_b, "different startup parameters never share a backend"
    assert _one(c, "SHOW application_name") == "other"


def test_not_reused_after_a_cancel(spawn_sluice):
    """A cancel is sent upstream from a thread of its own: a client that cancels and leaves
    at once could have it land on the query of the next client its backend served (another
    identity's). A backend a cancel was forwarded to is closed, not pooled."""
    _, ep = spawn_sluice("pool3", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    pid = _pid(a)
    a.cancel()  # nothing runs: the cancel is harmless here, but may still be on its way
    a.close()
    time.sleep(0.5)
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    assert _pid(b) != pid, "the cancelled backend was not reused"
    b.close()
    # without a cancel, the same sequence reuses it (the pool works in this instance)
    c = ep.connect("shop", user="etl")
    c.autocommit = True
    pid_c = _pid(c)
    c.close()
    time.sleep(0.5)
    d = ep.connect("shop", user="etl")
    d.autocommit = True
    assert _pid(d) == pid_c
    d.close()


def test_reused_backend_gets_a_fresh_random_seed(spawn_sluice, pg):
    """DISCARD ALL keeps random()'s state: without a new seed, one client (an agent, say)
    could choose the next client's random() values with setseed(), or predict them."""
    _, ep = spawn_sluice("pool-seed", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    pid = _pid(a)
    _one(a, "SELECT setseed(0.42)")
    a.close()
    time.sleep(0.5)
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    assert _pid(b) == pid
    got = [_one(b, "SELECT random()") for _ in range(3)]
    d = pg.admin(dbname="shop")
    _one(d, "SELECT setseed(0.42)")
    seeded = [_one(d, "SELECT random()") for _ in range(3)]
    d.close()
    assert got != seeded, "the next client's random() follows the previous client's seed"


def test_not_reused_after_role_defaults_change(spawn_sluice, pg):
    """A backend keeps the role's defaults it read at login (DISCARD ALL resets to them):
    after ALTER ROLE ... SET through sluice, no backend logged in before it is reused."""
    _, ep = spawn_sluice("pool-role", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    _pid(a)
    a.close()
    time.sleep(0.5)
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    pid_b = _pid(b)
    try:
        b.cursor().execute("ALTER ROLE CURRENT_USER SET work_mem = '7MB'")
        b.close()
        time.sleep(0.5)
        c = ep.connect("shop", user="etl")
        c.autocommit = True
        assert _pid(c) != pid_b, "a backend from before the ALTER ROLE was reused"
        assert _one(c, "SHOW work_mem") == "7MB"
        c.close()
    finally:
        d = pg.admin(dbname="shop")
        d.autocommit = True
        d.cursor().execute("ALTER ROLE app_scram RESET work_mem")
        d.close()


def test_not_reused_past_its_lifetime(spawn_sluice):
    """server.pool_max_lifetime bounds how long a backend's login-time state (role and
    database defaults, the right to log in) outlives changes made around sluice."""
    _, ep = spawn_sluice("pool-life", server_extra={"workers": 1, "pool_max_lifetime": 2})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    pid = _pid(a)
    a.close()
    time.sleep(0.3)
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    assert _pid(b) == pid, "a young backend is reused"
    b.close()
    time.sleep(2.2)
    c = ep.connect("shop", user="etl")
    c.autocommit = True
    assert _pid(c) != pid, "a backend past server.pool_max_lifetime was reused"
    c.close()


def test_reused_backend_parameters_are_masked_as_at_login(spawn_sluice):
    """A masked identity gets its ParameterStatus values masked on a reused backend as on a
    fresh login (they are replayed from the pool, not sent by the server again)."""
    _, ep = spawn_sluice("pool-mask", server_extra={"workers": 1})
    app = "carol.%d@example.com" % int(time.time())
    r = ep.raw_login("shop", "copilot", extra={"application_name": app})
    pid = r.query("SELECT pg_backend_pid()")[0][0]
    fresh = r.params["application_name"]
    assert fresh != app and fresh.endswith("@example.com"), fresh
    r.terminate()
    time.sleep(0.5)
    r = ep.raw_login("shop", "copilot", extra={"application_name": app})
    assert r.query("SELECT pg_backend_pid()")[0][0] == pid
    assert r.params["application_name"] == fresh
    r.terminate()


def test_role_change_in_a_transaction_ends_reuse_when_it_commits(spawn_sluice, pg):
    """A backend that logs in while ALTER ROLE ... SET is still uncommitted reads the old
    defaults: the pool's epoch moves when that transaction ends, not when the statement was
    judged."""
    _, ep = spawn_sluice("pool-role-tx", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    try:
        a.cursor().execute("BEGIN; ALTER ROLE CURRENT_USER SET work_mem = '7MB'")
        b = ep.connect("shop", user="etl")  # logs in before the commit: work_mem 4MB
        b.autocommit = True
        pid_b = _pid(b)
        assert _one(b, "SHOW work_mem") == "4MB"
        b.close()
        time.sleep(0.5)
        a.cursor().execute("COMMIT")
        c = ep.connect("shop", user="etl")
        c.autocommit = True
        assert _pid(c) != pid_b, "a backend from before the commit was reused"
        assert _one(c, "SHOW work_mem") == "7MB"
        c.close()
    finally:
        a.close()
        d = pg.admin(dbname="shop")
        d.autocommit = True
        d.cursor().execute("ALTER ROLE app_scram RESET work_mem")
        d.close()


def test_refused_role_change_keeps_the_pool(spawn_sluice):
    """A statement policy refuses changes nothing: it must not let any client empty every
    pool (an agent's refused DROP ROLE, say)."""
    _, ep = spawn_sluice("pool-refused", server_extra={"workers": 1})
    a = ep.connect("shop", user="etl")
    a.autocommit = True
    pid = _pid(a)
    a.close()
    time.sleep(0.5)
    agent = ep.connect("shop", user="copilot", application_name="agent")  # its own backend
    agent.autocommit = True
    with pytest.raises(psycopg2.Error) as ei:
        agent.cursor().execute("DROP ROLE IF EXISTS nobody_at_all")
    assert ei.value.pgcode == "42501"
    agent.close()
    b = ep.connect("shop", user="etl")
    b.autocommit = True
    assert _pid(b) == pid, "a refused statement emptied the pool"
    b.close()
