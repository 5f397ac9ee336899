"""test_auth.py: authentication on both sides. Upstream: SCRAM, md5 and trust roles reached
through their targets with vaulted credentials. Client side: SCRAM-SHA-256 for users,
cleartext for tokens; wrong secret and unknown identity both give 28P01 with the same
message; an unknown target gives 3D000; a target whose server is down gives 08xxx."""

import psycopg2
import pytest

import pgwire
from conftest import ALICE


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
    f = raw_error(sluice, "no_such_target", ALICE if not sluice.direct else "app_scram",
                  sluice.secrets[ALICE] if not sluice.direct else sluice.pg.passwords["app_scram"])
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
