"""test_tls_require.py: tls.require refuses cleartext secrets from non-loopback clients that
did not start TLS; TLS, SCRAM and loopback clients are unaffected.

A non-loopback address (outside 127.0.0.0/8) is added to the lo interface for the test (the
suite runs as root): a client connecting to it has that address as its source, so sluice sees
a client from outside loopback.
"""

import subprocess

import psycopg2
import pytest

ADDR = "10.213.47.1"


@pytest.fixture
def outside_addr():
    subprocess.run(["ip", "addr", "del", f"{ADDR}/32", "dev", "lo"], capture_output=True)
    r = subprocess.run(["ip", "addr", "add", f"{ADDR}/32", "dev", "lo"], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"ip addr add: {r.stderr}"
    yield ADDR
    subprocess.run(["ip", "addr", "del", f"{ADDR}/32", "dev", "lo"], capture_output=True)


def test_cleartext_needs_tls_from_outside(spawn_sluice, outside_addr):
    sp, ep = spawn_sluice("tlsreq", listen_host="0.0.0.0", tls_require=True)

    def connect(user, host, sslmode):
        p = ep.params(user=user, sslmode=sslmode)
        p["host"] = host
        return psycopg2.connect(**p)

    # A token (cleartext password) from a non-loopback address without TLS: refused.
    with pytest.raises(psycopg2.OperationalError) as e:
        connect("etl", outside_addr, "disable")
    assert "TLS is required" in str(e.value)
    # The same with TLS, the same without TLS from loopback, and SCRAM without TLS: fine.
    for user, host, mode in (("etl", outside_addr, "require"), ("etl", "127.0.0.1", "disable"),
                             ("alice@corp.com", outside_addr, "disable")):
        c = connect(user, host, mode)
        cur = c.cursor()
        cur.execute("SELECT inet_client_addr() IS NOT NULL OR true")
        assert cur.fetchone()[0] is True
        c.close()
