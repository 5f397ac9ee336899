"""test_tls.py: TLS on both legs. Client leg: sslmode=require and verify-full against the test
CA (certificate SAN holds 127.0.0.1). Upstream leg: a target with sslmode verify-full reaches
a hostssl-only role; a target whose sslrootcert is an unrelated CA must fail to connect."""

import os
import select
import signal
import socket
import subprocess
import threading
import ssl
import struct
import time

import psycopg2
import pytest

import pgwire
from test_audit import export_events


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


def test_client_certificate_required_with_client_ca(spawn_sluice, certs):
    """With tls.client_ca set (mTLS), a TLS client must present a certificate the CA signed:
    one without a certificate, or with one not made for clients (the server's), is refused in
    the handshake."""
    sp, ep = spawn_sluice("mtls", client_ca=True)
    c = ep.connect(sslmode="require", sslcert=f"{certs}/client.crt", sslkey=f"{certs}/client.key")
    assert c.info.ssl_in_use
    assert c.cursor().execute("SELECT 1") is None
    c.close()
    for kw in ({}, dict(sslcert=f"{certs}/sluice.crt", sslkey=f"{certs}/sluice.key")):
        with pytest.raises(psycopg2.OperationalError):
            ep.connect(sslmode="require", **kw).cursor().execute("SELECT 1")


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


def test_bulk_data_over_tls_both_legs(sluice):
    """Tens of MB each way with TLS on the client and the upstream leg (partial TLS writes,
    record boundaries splitting messages)."""
    import hashlib
    import io

    c = sluice.connect(target="shop_tls", sslmode="verify-full", sslrootcert=sluice.ca)
    cur = c.cursor()
    cur.execute("SELECT md5(string_agg(repeat(md5(i::text), 20), '' ORDER BY i)), "
                "sum(length(repeat(md5(i::text), 20))) FROM generate_series(1, 40000) i")
    server_md5, total = cur.fetchone()
    cur.execute("SELECT repeat(md5(i::text), 20) FROM generate_series(1, 40000) i ORDER BY i")
    h = hashlib.md5()
    n = 0
    for (v,) in cur:
        h.update(v.encode())
        n += len(v)
    assert (h.hexdigest(), n) == (server_md5, total)  # ~25 MB result
    cur.execute("CREATE TEMP TABLE tls_in (v text)")
    rows = "".join("%s-%s\n" % (i, "y" * 200) for i in range(100000))  # ~21 MB
    cur.copy_expert("COPY tls_in FROM STDIN", io.StringIO(rows))
    cur.execute("SELECT count(*), md5(string_agg(v || E'\\n', '' ORDER BY split_part(v, '-', 1)::int)) FROM tls_in")
    cnt, md5 = cur.fetchone()
    assert cnt == 100000 and md5 == hashlib.md5(rows.encode()).hexdigest()
    c.rollback()


def test_client_certificate_logs_in_as_its_identity(spawn_sluice, certs, pg):
    """identities.certs (mTLS): a client whose certificate tls.client_ca verified logs in as
    the identity whose cn is the certificate's subject CN, with no password (PostgreSQL's cert
    method); the upstream login uses the target's credentials as for anyone. The identity's
    kind and groups apply to policy, and the audit names it with auth_method cert."""
    extra = {"reporting-svc": dict(kind="service", groups=["reports"], token=False, cert=True,
                                   cn="client"),
             "other-svc": dict(kind="service", groups=[], token=False, cert=True, cn="other")}
    sp, ep = spawn_sluice("mtls-ident", client_ca=True, extra_identities=extra)
    tls = dict(sslmode="require", sslcert=f"{certs}/client.crt", sslkey=f"{certs}/client.key")
    c = psycopg2.connect(host="127.0.0.1", port=ep.port, dbname="shop", user="reporting-svc",
                         password="", **tls)
    cur = c.cursor()
    cur.execute("SELECT current_user, count(*) FROM customers")
    assert cur.fetchone()[0] == "app_scram"  # the target's role, not the certificate's
    c.close()
    # the certificate's CN is not this identity's; without TLS there is no certificate
    for user, kw in (("other-svc", tls), ("reporting-svc", dict(sslmode="disable"))):
        with pytest.raises(psycopg2.OperationalError) as ei:
            psycopg2.connect(host="127.0.0.1", port=ep.port, dbname="shop", user=user,
                             password="x", **kw)
        assert f'certificate authentication failed for user "{user}"' in str(ei.value)
    time.sleep(0.3)  # the session_start is committed within the writer's batch delay
    starts = [e for e in export_events(sp) if e["kind"] == "session_start"]
    assert any(e["identity"] == "reporting-svc" and e["auth_method"] == "cert" and
               e["identity_kind"] == "service" for e in starts), starts


def test_client_certificate_identity_by_subject_alt_name(spawn_sluice, certs):
    """identities.certs[].san: a certificate maps to an identity by a subjectAltName (a SPIFFE
    URI, a DNS name, an email address) instead of its CN, as workload identities (SPIFFE SVIDs)
    carry them. The URI is compared exactly, a DNS name and an email's domain without regard
    to case; with both cn and san set, both must match. A certificate lacking the name, or
    holding it with another type or case where case matters, is refused, and so is one with
    two URIs (SPIFFE: an SVID names one workload)."""
    uri = "spiffe://example.org/ns/prod/sa/reports"
    ids = {"spiffe-svc": dict(san="uri:" + uri),
           "dns-svc": dict(san="dns:reports.example.ORG"),
           "mail-svc": dict(san="email:reports@example.org"),
           "both-svc": dict(san="uri:" + uri, cn="client-san"),
           # refused: wrong CN with the right SAN, a prefix of the URI and a longer one, the URI's
           # case, the email's local part's case (the config's syntax rules keep values of one
           # type from being values of another); then certificates without SANs, with two URIs
           "wrongcn-svc": dict(san="uri:" + uri, cn="client"),
           "prefix-svc": dict(san="uri:spiffe://example.org/ns/prod/sa/report"),
           "longer-svc": dict(san="uri:" + uri + "/x"),
           "case-svc": dict(san="uri:" + uri.upper()),
           "local-svc": dict(san="email:Reports@example.org")}
    extra = {n: dict(kind="service", groups=[], token=False, cert=True, **kw)
             for n, kw in ids.items()}
    sp, ep = spawn_sluice("mtls-san", client_ca=True, extra_identities=extra)
    san_tls = dict(sslmode="require", sslcert=f"{certs}/client-san.crt",
                   sslkey=f"{certs}/client-san.key")
    plain_tls = dict(sslmode="require", sslcert=f"{certs}/client.crt",
                     sslkey=f"{certs}/client.key")

    def login(user, tls):
        return psycopg2.connect(host="127.0.0.1", port=ep.port, dbname="shop", user=user,
                                password="", **tls)

    for user in ("spiffe-svc", "dns-svc", "mail-svc", "both-svc"):
        c = login(user, san_tls)
        cur = c.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,), user
        c.close()
    refused = [(u, san_tls) for u in ("wrongcn-svc", "prefix-svc", "longer-svc", "case-svc",
                                      "local-svc")]
    refused.append(("spiffe-svc", plain_tls))  # no subjectAltName at all
    refused.append(("spiffe-svc", dict(sslmode="require", sslcert=f"{certs}/client-2uri.crt",
                                       sslkey=f"{certs}/client-2uri.key")))
    for user, tls in refused:
        with pytest.raises(psycopg2.OperationalError) as ei:
            login(user, tls)
        assert f'certificate authentication failed for user "{user}"' in str(ei.value), user
    time.sleep(0.3)  # the session_start is committed within the writer's batch delay
    starts = [e for e in export_events(sp) if e["kind"] == "session_start"]
    assert any(e["identity"] == "spiffe-svc" and e["auth_method"] == "cert" for e in starts)


def test_scram_channel_binding_over_tls(sluice):
    """Over TLS sluice offers SCRAM-SHA-256-PLUS with tls-server-end-point binding, as
    PostgreSQL does, so a client that requires channel binding (against a man in the middle
    holding another certificate) logs in; without TLS there is nothing to bind to."""
    c = sluice.connect(sslmode="require", channel_binding="require")
    assert c.info.ssl_in_use
    c.cursor().execute("SELECT 1")
    c.close()
    with pytest.raises(psycopg2.OperationalError) as ei:
        sluice.connect(sslmode="disable", channel_binding="require")
    assert "channel binding" in str(ei.value)
    sluice.assert_alive()


def test_tls_session_resumption_with_client_ca(spawn_sluice, certs):
    """A client offering a saved TLS session (Python's ssl, JDBC) to an mTLS sluice gets a
    full handshake, as from PostgreSQL (no resumption), not an internal-error alert."""
    sp, ep = spawn_sluice("mtls-resume", client_ca=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(f"{certs}/client.crt", f"{certs}/client.key")
    session = None
    for _ in range(2):
        raw = socket.create_connection(("127.0.0.1", ep.port))
        raw.sendall(struct.pack("!II", 8, pgwire.SSL_REQUEST))
        assert raw.recv(1) == b"S"
        tls = ctx.wrap_socket(raw, session=session)
        assert tls.version() == "TLSv1.2"
        session = tls.session
        tls.close()
    ep.assert_alive()


def _client_cert(certs, d, name):
    """A client certificate with subject CN name, signed by the test CA, in d."""
    key, csr, crt = (f"{d}/{name}.{ext}" for ext in ("key", "csr", "crt"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", f"{certs}/ca.crt", "-CAkey",
                    f"{certs}/ca.key", "-CAcreateserial", "-out", crt, "-days", "3", "-extfile",
                    f"{certs}/client.cnf"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return crt, key


def _revoke(certs, d, crts, out):
    """Write to out a CRL of the test CA that revokes the certificates crts."""
    with open(f"{d}/ca.cnf", "w") as f:
        f.write(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\n"
                "default_md = sha256\ndefault_crl_days = 3\n")
    open(f"{d}/index.txt", "w").close()
    with open(f"{d}/crlnumber", "w") as f:
        f.write("1000\n")
    ca = ["-config", f"{d}/ca.cnf", "-keyfile", f"{certs}/ca.key", "-cert", f"{certs}/ca.crt"]
    for crt in crts:
        subprocess.run(["openssl", "ca", *ca, "-revoke", crt], check=True, capture_output=True)
    subprocess.run(["openssl", "ca", *ca, "-gencrl", "-out", f"{out}.new"], check=True,
                   capture_output=True)
    os.replace(f"{out}.new", out)


def test_client_certificate_revoked(spawn_sluice, certs, workdir):
    """tls.client_crl: a client certificate the CA revoked is refused in the handshake, as
    with PostgreSQL's ssl_crl_file; one it did not revoke logs in. A new list takes effect
    at SIGHUP, for new connections."""
    d = os.path.join(workdir, "crl")
    os.makedirs(d, exist_ok=True)
    good = _client_cert(certs, d, "good")
    bad = _client_cert(certs, d, "bad")
    crl = f"{d}/crl.pem"
    _revoke(certs, d, [bad[0]], crl)
    extra = {"good-svc": dict(kind="service", groups=[], token=False, cert=True, cn="good"),
             "bad-svc": dict(kind="service", groups=[], token=False, cert=True, cn="bad")}
    sp, ep = spawn_sluice("mtls-crl", client_ca=True, client_crl=crl, extra_identities=extra)

    def login(user, pair):
        c = psycopg2.connect(host="127.0.0.1", port=ep.port, dbname="shop", user=user,
                             password="", sslmode="require", sslcert=pair[0], sslkey=pair[1])
        c.cursor().execute("SELECT 1")
        c.close()

    login("good-svc", good)
    with pytest.raises(psycopg2.OperationalError) as ei:
        login("bad-svc", bad)
    assert "certificate revoked" in str(ei.value)
    # the good one revoked too, and the list reloaded
    _revoke(certs, d, [bad[0], good[0]], crl)
    sp.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while True:
        try:
            login("good-svc", good)
        except psycopg2.OperationalError as e:
            assert "certificate revoked" in str(e)
            break
        assert time.time() < deadline, "the new revocation list was not applied after SIGHUP"
        time.sleep(0.2)
    ep.assert_alive()


def _tls_mitm(certs, pg_port, cert=None):
    """A man in the middle between sluice and PostgreSQL: it answers sluice's SSLRequest with
    a certificate of its own (by default sluice's, which the test CA signed for 127.0.0.1, so
    verify-full passes; or cert, a (certificate, key) pair), opens its own TLS connection to
    PostgreSQL and relays the bytes. Returns its port."""
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(8)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*(cert or (f"{certs}/sluice.crt", f"{certs}/sluice.key")))
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE

    def relay(a, b):
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 30)
                if not r:
                    return
                for s in r:
                    other = b if s is a else a
                    while True:
                        data = s.recv(65536)
                        if not data:
                            return
                        other.sendall(data)
                        if not s.pending():
                            break
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def serve():
        while True:
            try:
                c, _ = lsn.accept()
                assert c.recv(8) == struct.pack("!II", 8, pgwire.SSL_REQUEST)
                c.sendall(b"S")
                c = sctx.wrap_socket(c, server_side=True)
                u = socket.create_connection(("127.0.0.1", pg_port))
                u.sendall(struct.pack("!II", 8, pgwire.SSL_REQUEST))
                assert u.recv(1) == b"S"
                u = cctx.wrap_socket(u)
            except (OSError, AssertionError):
                continue
            threading.Thread(target=relay, args=(c, u), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return lsn.getsockname()[1]


def test_upstream_scram_channel_binding_defeats_mitm(spawn_sluice, certs, pg):
    """Over TLS to a target, sluice logs in with SCRAM-SHA-256-PLUS when PostgreSQL offers it,
    bound to the certificate it was shown (libpq's channel_binding=prefer). A man in the middle
    holding another certificate that the CA signed, so that verify-full passes, relays the
    exchange between his two TLS connections: the binding does not match PostgreSQL's own
    certificate and PostgreSQL refuses the login. The same relay passes an md5 login (no
    binding), so it is the binding that stops it. Directly, the SCRAM login works."""
    port = _tls_mitm(certs, pg.port)
    via = dict(port=port, sslmode="verify-full", sslrootcert=f"{certs}/ca.crt")
    extra = [dict(name="shop_mitm", user="app_ssl", env="SLUICE_T_SSL", **via),
             dict(name="shop_mitm_md5", user="app_md5", env="SLUICE_T_MD5", **via)]
    sp, ep = spawn_sluice("mitm", extra_targets=extra)
    c = ep.connect("shop_mitm_md5")
    c.cursor().execute("SELECT 1")
    c.close()
    c = ep.connect("shop_tls")
    cur = c.cursor()
    cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert cur.fetchone()[0] is True
    c.close()
    with pytest.raises(psycopg2.OperationalError) as ei:
        ep.connect("shop_mitm")
    assert 'cannot connect to target "shop_mitm"' in str(ei.value)
    with open(pg.log) as f:
        assert "SCRAM channel binding check failed" in f.read()
    ep.assert_alive()


def test_upstream_channel_binding_modes(spawn_sluice, certs, pg, workdir):
    """targets[].channel_binding, as libpq's: prefer (the default) refuses to fall back to
    plain SCRAM when the certificate it was shown has no digest to bind to (a man in the middle
    with an Ed25519 certificate and sslmode require would otherwise relay the login); require
    also refuses a server that authenticates without SCRAM-SHA-256-PLUS (md5 here); disable
    never binds (through the CA-signed man in the middle the SCRAM login then passes)."""
    d = os.path.join(workdir, "ed25519")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout",
                    f"{d}/mitm.key", "-out", f"{d}/mitm.crt", "-days", "3", "-subj",
                    "/CN=127.0.0.1"], check=True, capture_output=True)
    ed = _tls_mitm(certs, pg.port, cert=(f"{d}/mitm.crt", f"{d}/mitm.key"))
    ca_signed = _tls_mitm(certs, pg.port)
    verify = dict(sslmode="verify-full", sslrootcert=f"{certs}/ca.crt")
    extra = [dict(name="shop_ed_mitm", port=ed, user="app_ssl", env="SLUICE_T_SSL",
                  sslmode="require"),
             dict(name="shop_md5_require", port=pg.port, user="app_md5", env="SLUICE_T_MD5",
                  channel_binding="require", **verify),
             dict(name="shop_tls_require", port=pg.port, user="app_ssl", env="SLUICE_T_SSL",
                  channel_binding="require", **verify),
             dict(name="shop_mitm_disable", port=ca_signed, user="app_ssl", env="SLUICE_T_SSL",
                  channel_binding="disable", **verify)]
    sp, ep = spawn_sluice("cbind", extra_targets=extra)
    for target, why in (("shop_ed_mitm", "names no digest to bind to"),
                        ("shop_md5_require", "channel binding is required")):
        with pytest.raises(psycopg2.OperationalError) as ei:
            ep.connect(target)
        assert f'cannot connect to target "{target}"' in str(ei.value)
        with open(sp.log) as f:
            assert why in f.read()
    for target in ("shop_tls_require", "shop_mitm_disable"):
        c = ep.connect(target)
        c.cursor().execute("SELECT 1")
        c.close()
    ep.assert_alive()


def _fake_pg(certs, after_sasl):
    """A TLS server that speaks PostgreSQL's login up to the SCRAM start: it offers
    SCRAM-SHA-256-PLUS and SCRAM-SHA-256, takes the SASLInitialResponse, then sends the
    message after_sasl and records what comes back. Returns (port, what came back after it,
    the SASLInitialResponse messages), lists that fill as clients come."""
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(4)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{certs}/pgserver.crt", f"{certs}/pgserver.key")
    got, initial = [], []

    def recv_exact(c, n):
        out = b""
        while len(out) < n:
            part = c.recv(n - len(out))
            if not part:
                raise OSError("closed")
            out += part
        return out

    def read_msg(c, typed=True):
        head = recv_exact(c, 5 if typed else 4)
        n = struct.unpack("!I", head[-4:])[0]
        return head + recv_exact(c, n - 4)

    def serve():
        while True:
            try:
                c, _ = lsn.accept()
                c.settimeout(10)
                assert recv_exact(c, 8) == struct.pack("!II", 8, pgwire.SSL_REQUEST)
                c.sendall(b"S")
                c = ctx.wrap_socket(c, server_side=True)
                read_msg(c, typed=False)  # StartupMessage
                mechs = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
                c.sendall(b"R" + struct.pack("!II", 8 + len(mechs), 10) + mechs)
                initial.append(read_msg(c))  # SASLInitialResponse
                c.sendall(after_sasl)
                try:
                    got.append(c.recv(4096))
                except OSError:
                    got.append(b"")
                c.close()
            except (OSError, AssertionError):
                continue

    threading.Thread(target=serve, daemon=True).start()
    return lsn.getsockname()[1], got, initial


def test_upstream_scram_exchange_must_finish(spawn_sluice, certs):
    """Once sluice's SCRAM login to a target has started, the server must finish it (its
    signature checked) before anything else: one that answers the SASLInitialResponse with
    AuthenticationOk, or with a request for the cleartext password, is refused and gets no
    password and no query, whatever channel_binding says (stricter than libpq's prefer, which
    takes either)."""
    ok = b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I"
    cleartext = b"R" + struct.pack("!II", 8, 3)
    targets, logs, starts = [], [], []
    for name, msg in (("fake_ok", ok), ("fake_cleartext", cleartext)):
        port, got, initial = _fake_pg(certs, msg)
        logs.append(got)
        starts.append(initial)
        for mode in ("prefer", "require"):
            targets.append(dict(name=f"{name}_{mode}", port=port, user="app_ssl",
                                env="SLUICE_T_SSL", sslmode="verify-full",
                                sslrootcert=f"{certs}/ca.crt", channel_binding=mode))
    sp, ep = spawn_sluice("scramfinish", extra_targets=targets)
    for t in targets:
        with pytest.raises(psycopg2.OperationalError) as ei:
            ep.connect(t["name"])
        assert f'cannot connect to target "{t["name"]}"' in str(ei.value)
    with open(sp.log) as f:
        assert "the server left its SCRAM exchange unfinished" in f.read()
    password = sp.config.env()["SLUICE_T_SSL"].encode()
    deadline = time.time() + 10
    while any(len(got) < 2 for got in logs) and time.time() < deadline:
        time.sleep(0.05)  # the fake server's thread records what came back
    for got in logs:
        assert len(got) == 2 and not any(password in g for g in got), got
    # over TLS, offered -PLUS, sluice chose it and bound its first message to the channel
    for initial in starts:
        assert len(initial) == 2, initial
        for m in initial:
            assert m[5:].startswith(b"SCRAM-SHA-256-PLUS\0"), m
            assert b"p=tls-server-end-point,,n=" in m, m
    ep.assert_alive()
