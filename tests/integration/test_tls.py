"""test_tls.py: TLS on both legs. Client leg: sslmode=require and verify-full against the test
CA (certificate SAN holds 127.0.0.1). Upstream leg: a target with sslmode verify-full reaches
a hostssl-only role; a target whose sslrootcert is an unrelated CA must fail to connect."""

import psycopg2
import pytest

import pgwire


def test_client_tls_require(sluice):
    c = sluice.connect(sslmode="require")
    assert c.info.ssl_in_use
    assert c.info.ssl_attribute("protocol") in ("TLSv1.2", "TLSv1.3")
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM customers")
    assert cur.fetchone()[0] == 50


def test_client_tls_verify_full(sluice):
    c = sluice.connect(sslmode="verify-full", sslrootcert=sluice.ca)
    assert c.info.ssl_in_use
    cur = c.cursor()
    cur.execute("SELECT repeat('x', 1000000)")
    assert len(cur.fetchone()[0]) == 1000000


def test_client_tls_verify_full_rejects_wrong_ca(sluice):
    with pytest.raises(psycopg2.OperationalError) as ei:
        sluice.connect(sslmode="verify-full", sslrootcert=sluice.ca.replace("ca.crt", "otherca.crt"))
    assert "certificate verify failed" in str(ei.value)


def test_client_tls_token_cleartext(sluice):
    """A token (cleartext password) over TLS."""
    c = sluice.connect(user="etl", sslmode="verify-full", sslrootcert=sluice.ca)
    assert c.info.ssl_in_use
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_gssenc_request_refused(sluice, sluice_only):
    """GSSENCRequest gets 'N'; the client may then go on in cleartext (libpq gssencmode=prefer)."""
    import struct

    with sluice.raw() as r:
        r.send(struct.pack("!II", 8, 80877104))
        assert r.read_byte() == b"N"
        r.startup(user="etl" if not sluice.direct else "app_trust", database="shop",
                  password=sluice.secrets["etl"])
        assert r.query("SELECT 7") == [["7"]]


def test_upstream_tls_verify_full(sluice):
    c = sluice.connect(target="shop_tls")
    cur = c.cursor()
    cur.execute("SELECT current_user, ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    user, ssl, version = cur.fetchone()
    assert user == "app_ssl"
    assert ssl is True
    assert version in ("TLSv1.2", "TLSv1.3")
    cur.execute("SELECT count(*) FROM orders")
    assert cur.fetchone()[0] == 200


def test_upstream_tls_both_legs(sluice):
    c = sluice.connect(target="shop_tls", sslmode="verify-full", sslrootcert=sluice.ca)
    assert c.info.ssl_in_use
    cur = c.cursor()
    cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert cur.fetchone()[0] is True


def test_upstream_tls_wrong_ca_fails(sluice, sluice_only):
    with sluice.raw() as r:
        with pytest.raises(pgwire.PgError) as ei:
            r.startup(user=sluice.config and "alice@corp.com", database="shop_tls_wrongca",
                      password=sluice.secrets["alice@corp.com"])
    assert ei.value.sqlstate.startswith("08"), ei.value.fields
    sluice.assert_alive()
