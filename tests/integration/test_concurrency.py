"""test_concurrency.py: many clients at once across sluice's worker threads: distinct real
backend pids, CancelRequest routed to the right session whichever worker receives it, and
a silent client dropped after server.auth_timeout (on an instance of its own)."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.errors
import pytest

from conftest import ALICE


def test_many_concurrent_sessions(sluice):
    users = [ALICE, "bob@corp.com", "etl", "copilot"]

    def work(i):
        c = psycopg2.connect(**sluice.params(user=users[i % 4], application_name=f"conc-{i}"))
        try:
            cur = c.cursor()
            cur.execute("SELECT pg_backend_pid(), current_setting('application_name'), "
                        "sum(g) FROM generate_series(1, %s) g", (1000 + i,))
            pid, app, s = cur.fetchone()
            assert app == f"conc-{i}"
            assert s == (1000 + i) * (1001 + i) // 2
            assert pid == c.get_backend_pid()
            time.sleep(0.2)  # keep them overlapping
            return pid
        finally:
            c.close()

    with ThreadPoolExecutor(60) as ex:
        pids = list(ex.map(work, range(60)))
    assert len(set(pids)) == 60
    sluice.assert_alive()


def test_cancel_hits_only_its_session(sluice):
    """Several rounds so the CancelRequest lands on either worker."""
    for _ in range(4):
        a = sluice.connect()
        b = sluice.connect()
        res = {}

        def run_b():
            try:
                cb = b.cursor()
                cb.execute("SELECT pg_sleep(1.2), 'b done'")
                res["b"] = cb.fetchone()[1]
            except Exception as e:  # noqa: BLE001
                res["b"] = e

        tb = threading.Thread(target=run_b)
        tb.start()
        timer = threading.Timer(0.3, a.cancel)
        timer.start()
        t0 = time.time()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            a.cursor().execute("SELECT pg_sleep(20)")
        assert time.time() - t0 < 5
        tb.join(10)
        assert res.get("b") == "b done", res
        a.close()
        b.close()


def test_auth_timeout_drops_silent_clients(spawn_sluice):
    sp, ep = spawn_sluice("authtimeout", server_extra={"auth_timeout": 2})
    silent = socket.create_connection((ep.host, ep.port), timeout=15)
    half = socket.create_connection((ep.host, ep.port), timeout=15)
    half.sendall(b"\x00\x00\x00\x50\x00\x03\x00\x00user\x00")  # then nothing
    t0 = time.time()
    for s in (silent, half):
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data[:1] == b"E", data
        s.close()
    elapsed = time.time() - t0
    assert 1.0 <= elapsed < 8, f"silent clients dropped after {elapsed:.1f}s (auth_timeout 2)"
    ep.assert_alive()
    sp.assert_clean_exit()
