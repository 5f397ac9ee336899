"""test_signals.py: SIGHUP reload and SIGTERM drain, each on a sluice instance of its own.
Reload: a changed secret and a new identity take effect for new connections while an open
session (mid-transaction) keeps working; a broken config on reload keeps the old one.
Drain: a running pg_sleep(1) finishes after SIGTERM, new connections are refused, and sluice
exits 0. Also the names of sluice's threads, as the kernel shows them."""

import os
import signal
import threading
import time

import psycopg2
import pytest

import pgwire
from conftest import ALICE, tail


def try_connect(ep, **kw):
    try:
        c = psycopg2.connect(**ep.params(**kw))
        c.close()
        return None
    except psycopg2.OperationalError as e:
        return str(e)


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_sighup_reload(spawn_sluice):
    sp, ep = spawn_sluice("reload")
    old_secret = ep.secrets[ALICE]
    held = ep.connect(user=ALICE)
    hcur = held.cursor()
    hcur.execute("CREATE TEMP TABLE held (v int); INSERT INTO held VALUES (1)")  # open tx

    new_secret = "pw-rotated-" + str(time.time())
    sp.config.identities[ALICE] = dict(sp.config.identities[ALICE],
                                       secret_hash=pgwire.scram_verifier(new_secret))
    carol_secret = "tok-carol-" + str(time.time())
    sp.config.identities["carol"] = dict(kind="service", groups=[], token=True,
                                         secret_hash=pgwire.scram_verifier(carol_secret))
    sp.write_config()
    sp.signal(signal.SIGHUP)

    assert wait_for(lambda: try_connect(ep, user=ALICE, password=new_secret) is None), \
        "new secret not accepted after SIGHUP:\n" + tail(sp.log, 30)
    err = try_connect(ep, user=ALICE, password=old_secret)
    assert err is not None and "authentication failed" in err, f"old secret after reload: {err}"
    assert try_connect(ep, user="carol", password=carol_secret) is None
    assert sp.alive()

    # the session opened before the reload goes on, inside its transaction
    hcur.execute("INSERT INTO held VALUES (2); SELECT sum(v) FROM held")
    assert hcur.fetchone()[0] == 3
    held.commit()
    hcur.execute("SELECT 'after commit'")
    assert hcur.fetchone()[0] == "after commit"

    # a broken config on SIGHUP keeps the running one
    with open(sp.path, "a") as f:
        f.write("this_key_does_not_exist: [\n")
    sp.signal(signal.SIGHUP)
    time.sleep(1.0)
    assert sp.alive(), "sluice died on a broken config reload:\n" + tail(sp.log, 30)
    assert try_connect(ep, user=ALICE, password=new_secret) is None
    sp.write_config()
    held.close()
    sp.assert_clean_exit()


def test_sigterm_drain(spawn_sluice):
    sp, ep = spawn_sluice("drain")
    c = ep.connect()
    cur = c.cursor()
    result = {}

    def run():
        try:
            cur.execute("SELECT pg_sleep(1), 'finished'")
            result["row"] = cur.fetchone()
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    t0 = time.time()
    sp.signal(signal.SIGTERM)
    time.sleep(0.3)
    # no new sessions once draining
    assert try_connect(ep) is not None, "sluice accepted a new session while draining"
    t.join(15)
    assert not t.is_alive()
    assert "error" not in result, f"running statement broken by SIGTERM: {result.get('error')}"
    assert result["row"][1] == "finished"
    assert time.time() - t0 >= 0.5
    c.close()
    try:
        rc = sp.proc.wait(20)
    except Exception:
        pytest.fail("sluice still running 20s after SIGTERM with no sessions left:\n" + tail(sp.log))
    assert rc == 0, f"exit status {rc}\n" + tail(sp.log)
    sp.assert_clean_exit()


def test_sigterm_idle_sessions_exit_promptly(spawn_sluice):
    """Idle client sessions do not hold shutdown up to the timeout."""
    sp, ep = spawn_sluice("drain-idle")
    conns = [ep.connect(user=u) for u in (ALICE, "etl")]
    for c in conns:
        c.autocommit = True
        c.cursor().execute("SELECT 1")
    t0 = time.time()
    sp.signal(signal.SIGTERM)
    try:
        rc = sp.proc.wait(15)
    except Exception:
        pytest.fail("sluice kept running 15s after SIGTERM with only idle sessions:\n" + tail(sp.log))
    assert rc == 0
    assert time.time() - t0 < 15
    sp.assert_clean_exit()


def test_thread_names(sluice_only, sluice_proc, sluice):
    """The workers, the audit writer and the resolvers carry names, so that `top -H` and perf
    tell them apart."""
    sluice.connect(user=ALICE).close()  # a session: the workers and the audit writer have run
    names = set()
    for tid in os.listdir(f"/proc/{sluice_proc.proc.pid}/task"):
        with open(f"/proc/{sluice_proc.proc.pid}/task/{tid}/comm") as f:
            names.add(f.read().strip())
    assert {"sluice-worker0", "sluice-worker1", "sluice-audit", "sluice-resolve"} <= names, names
