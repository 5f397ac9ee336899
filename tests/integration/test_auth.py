"""test_auth.py: authentication on both sides. Upstream: SCRAM, md5 and trust roles reached
through their targets with vaulted credentials. Client side: SCRAM-SHA-256 for users,
cleartext for tokens; wrong secret and unknown identity both give 28P01 with the same
message; an unknown target gives 3D000; a target whose server is down gives 08xxx. A target
named by a host name whose first address refuses is reached at the next one (as libpq does),
and a cancel goes to the address the session reached; a host name that resolves slowly
keeps only its own session waiting."""

import os
import socket
import subprocess
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

import conftest
import pgwire
from conftest import ALICE, SluiceConfig, SluiceProcess, Endpoint, make_identities, _state


@pytest.mark.parametrize("target,role", [("shop", "app_scram"), ("shop_md5", "app_md5"),
                                         ("shop_trust", "app_trust"), ("shop_tls", "app_ssl")])
def test_upstream_auth_methods(sluice, target, role):
    c = sluice.connect(target=target)
    cur = c.cursor()
    cur.execute("SELECT current_user, current_database(), count(*) FROM customers")
    assert cur.fetchone() == (role, "shop", 50)


@pytest.mark.parametrize("user", [ALICE, "bob@corp.com", "etl", "copilot"])
def test_every_identity_connects(sluice, user):
    c = sluice.connect(user=user)
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_users_get_scram_tokens_get_cleartext(sluice, sluice_only):
    for user, method in [(ALICE, pgwire.AUTH_SASL), ("bob@corp.com", pgwire.AUTH_SASL),
                         ("etl", pgwire.AUTH_CLEARTEXT), ("copilot", pgwire.AUTH_CLEARTEXT)]:
        with sluice.raw_login(user=user) as r:
            assert r.auth_requests[0] == method, (user, r.auth_requests)
            assert r.auth_requests[-1] == pgwire.AUTH_OK
            if method == pgwire.AUTH_SASL:
                assert r.auth_requests[:3] == [10, 11, 12]
            # BackendKeyData carries the real backend pid
            assert r.backend_key is not None
            assert r.query("SELECT pg_backend_pid()") == [[str(r.backend_key[0])]]
            assert "server_version" in r.params
            r.terminate()


def test_upstream_credentials_not_exposed(sluice, sluice_only):
    """The client never sees the upstream password, neither in parameters nor in errors."""
    with sluice.raw_login(user="etl") as r:
        for v in r.params.values():
            for pw in sluice.pg.passwords.values():
                assert pw not in v
        r.terminate()


def connect_error(sluice, **kw):
    with pytest.raises(psycopg2.OperationalError) as ei:
        sluice.connect(**kw)
    return str(ei.value)


def raw_error(sluice, target, user, password):
    with sluice.raw() as r:
        with pytest.raises(pgwire.PgError) as ei:
            r.startup(user=user, database=target, password=password)
        return ei.value.fields


def test_wrong_password_and_unknown_user_same_28P01(sluice, sluice_only):
    wrong = raw_error(sluice, "shop", ALICE, "not-the-password")
    unknown = raw_error(sluice, "shop", "mallory@corp.com", "whatever")
    bad_token = raw_error(sluice, "shop", "etl", "tok-wrong")
    for f in (wrong, unknown, bad_token):
        assert f["C"] == "28P01", f
        assert f["S"] == "FATAL", f
    # Identical apart from echoing the user name the client itself sent (as PostgreSQL's
    # "password authentication failed for user ..." does): every field, not only M.
    def anon(f, user):
        return {k: v.replace(user, "<user>") for k, v in f.items() if k not in ("F", "L", "R")}

    assert anon(wrong, ALICE) == anon(unknown, "mallory@corp.com") == anon(bad_token, "etl")
    for word in ("unknown", "not exist", "no such", "not found"):
        assert word not in unknown["M"].lower(), unknown
    # psycopg2 shows the same message
    m1 = connect_error(sluice, user=ALICE, password="nope")
    m2 = connect_error(sluice, user="nobody@corp.com", password="nope")
    assert anon(wrong, ALICE)["M"] in m1.replace(ALICE, "<user>")
    assert anon(wrong, ALICE)["M"] in m2.replace("nobody@corp.com", "<user>")
    sluice.assert_alive()


def test_wrong_password_direct_mode_sanity(sluice):
    """Valid in both modes: a wrong secret is refused with 28P01."""
    f = raw_error(sluice, "shop", "etl" if not sluice.direct else "app_scram", "wrong-secret")
    assert f["C"] == "28P01", f


def test_unknown_target_3D000(sluice):
    """As from PostgreSQL: the login succeeds (AuthenticationOk), then FATAL 3D000."""
    with sluice.raw() as r:
        with pytest.raises(pgwire.PgError) as ei:
            r.startup(user=ALICE if not sluice.direct else "app_scram", database="no_such_target",
                      password=sluice.secrets[ALICE] if not sluice.direct
                      else sluice.pg.passwords["app_scram"])
        assert r.auth_requests == [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE,
                                   pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK], r.auth_requests
    f = ei.value.fields
    assert f["C"] == "3D000", f
    assert "no_such_target" in f["M"]
    sluice.assert_alive()


def test_upstream_down_gives_08(sluice, sluice_only):
    f = raw_error(sluice, "shop_down", "etl", sluice.secrets["etl"])
    assert f["C"].startswith("08"), f
    for pw in sluice.pg.passwords.values():
        assert pw not in str(f)
    m = connect_error(sluice, target="shop_down")
    assert m
    sluice.assert_alive()


def test_empty_password_refused(sluice, sluice_only):
    f = raw_error(sluice, "shop", "etl", "")
    assert f["C"] == "28P01", f


class MultiAddressConfig(SluiceConfig):
    """The harness config plus targets shop_<h> on host pg-<h> for each name h (for a name
    "<host>-<h>", shop_<h> on host <host>-<h>), resolved by nss_wrapper from a hosts file of
    the test's own; `preload` goes before nss_wrapper in LD_PRELOAD."""

    def __init__(self, *a, hosts_file, names=("multi", "slow"), preload=None, **kw):
        super().__init__(*a, **kw)
        self.hosts_file = hosts_file
        self.names = names
        self.preload = preload

    def targets(self):
        return super().targets() + [
            dict(name=f"shop_{h.split('-')[-1]}", host=h if "-" in h else f"pg-{h}",
                 port=self.pg.port, user="app_scram", env="SLUICE_T_SCRAM", sslmode="disable")
            for h in self.names]

    def env(self):
        e = super().env()
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        preload = (self.preload + " " if self.preload else "") + "libnss_wrapper.so"
        e.update(LD_PRELOAD=preload, NSS_WRAPPER_HOSTS=self.hosts_file,
                 NSS_WRAPPER_DISABLE_DEEPBIND="1",  # RTLD_DEEPBIND and ASan do not mix
                 ASAN_OPTIONS=asan + ":verify_asan_link_order=0")
        return e


def start_with_hosts(workdir, certs, pg, name, hosts_lines, **config):
    """A sluice of its own whose host names resolve from a hosts file (MultiAddressConfig);
    returns it and its endpoint."""
    hosts = os.path.join(workdir, f"hosts-{name}")
    with open(hosts, "w") as f:
        f.write(hosts_lines)
    ids, secrets = make_identities()
    sp = SluiceProcess(workdir, name, MultiAddressConfig(pg, certs, ids, hosts_file=hosts,
                                                         **config))
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    return sp, Endpoint(pg, secrets, sp.config.port, certs, config=sp.config, process=sp)


def test_host_name_whose_first_address_refuses(workdir, certs, pg, sluice_only, sluice_bin):
    sp, ep = start_with_hosts(
        workdir, certs, pg, "multiaddr",
        "127.0.0.2 pg-multi\n127.0.0.1 pg-multi\n127.0.0.3 pg-slow\n127.0.0.1 pg-slow\n",
        server_extra={"connect_timeout": "1s"})
    try:
        c = ep.connect(target="shop_multi")
        cur = c.cursor()
        cur.execute("SELECT current_user, inet_server_addr()::text, count(*) FROM customers")
        assert cur.fetchone() == ("app_scram", "127.0.0.1/32", 50)
        # the cancel reaches the backend at the address the session used, not the first one
        timer = threading.Timer(0.3, c.cancel)
        timer.start()
        t0 = time.time()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("SELECT pg_sleep(20)")
        assert time.time() - t0 < 5
        c.close()
        # an address that does not answer costs server.connect_timeout, then the next is tried
        hole = socket.socket()
        hole.bind(("127.0.0.3", pg.port))
        hole.listen(0)
        fillers = []
        for _ in range(4):  # a full accept queue: later SYNs are dropped
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.3", pg.port))
            fillers.append(f)
        time.sleep(0.2)
        t0 = time.time()
        c = ep.connect(target="shop_slow")
        c.cursor().execute("SELECT 1")
        took = time.time() - t0
        assert 0.9 < took < 5, took
        c.close()
        for f in fillers + [hole]:
            f.close()
    finally:
        ep.close_all()
        sp.assert_clean_exit()


def test_slow_host_name_lookup_stalls_no_other_session(workdir, certs, pg, sluice_only, sluice_bin):
    """A target whose host name resolves slowly (a DNS server that answers late: a preloaded
    shim delays getaddrinfo) keeps only its own session waiting: with one worker, a session
    already running answers at once meanwhile. A lookup longer than server.connect_timeout
    fails that session with 08006, naming the timeout; sluice still stops cleanly with a
    lookup running."""
    shim = os.path.join(workdir, "slow_getaddrinfo.so")
    src = os.path.join(os.path.dirname(__file__), "shim", "slow_getaddrinfo.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", shim, src, "-ldl"], check=True)
    sp, ep = start_with_hosts(
        workdir, certs, pg, "slowdns",
        "127.0.0.1 pg-fast\n127.0.0.1 slow12-lazy\n127.0.0.1 slow40-dead\n",
        names=("fast", "slow12-lazy", "slow40-dead"), preload=shim,
        server_extra={"connect_timeout": "2s", "workers": 1})
    try:
        a = ep.connect(target="shop_fast")
        a.autocommit = True
        cur = a.cursor()
        cur.execute("SELECT 1")
        for target, ok in (("shop_lazy", True), ("shop_dead", False)):
            result = {}

            def other():
                t0 = time.time()
                try:
                    c = ep.connect(target=target)
                    c.cursor().execute("SELECT 1")
                    c.close()
                    result["ok"] = True
                except psycopg2.OperationalError as e:
                    result["error"] = str(e)
                result["took"] = time.time() - t0

            th = threading.Thread(target=other)
            th.start()
            time.sleep(0.3)  # its lookup runs now
            worst = 0
            while th.is_alive():
                t0 = time.time()
                cur.execute("SELECT count(*) FROM customers")
                assert cur.fetchone() == (50,)
                worst = max(worst, time.time() - t0)
                time.sleep(0.05)
            th.join()
            assert worst < 0.5, (target, worst)
            if ok:
                assert result.get("ok") and 1.1 < result["took"] < 4, result
            else:
                assert "timeout resolving" in result.get("error", ""), result
                assert "slow40-dead" in result["error"], result
                assert 1.9 < result["took"] < 3.9, result
        a.close()
        # a lookup still running when sluice stops: it ends cleanly (no leak, no hang)
        th = threading.Thread(target=lambda: pytest.raises(psycopg2.OperationalError,
                                                           ep.connect, target="shop_dead"))
        th.start()
        time.sleep(0.5)
    finally:
        ep.close_all()
        sp.assert_clean_exit()
    th.join()
