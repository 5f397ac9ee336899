"""test_oidc.py: OIDC identities over the wire (issue 6).

The test is its own identity provider: it makes RSA keys, writes a JWKS file, and signs RS256
JWTs with python3-cryptography. A sluice instance with `identities.oidc` (issuer
https://idp.test/, audience sluice, jwks_file) takes such a token as the password of a
database client whose user is the token's email claim, and as the admin API's bearer token:

- valid tokens log in; the kind claim makes an agent subject to the agents' rules (row limit,
  read-only), the groups claim gives approver rights on the admin API;
- expired, not yet valid, wrong audience, wrong issuer, `alg: none`, HS256 signed with the
  public key PEM, unknown kid, a key not in the JWKS, a tampered payload, a user that is not
  the token's name, a bad kind, no exp: all refused with SQLSTATE 28P01.

Failed logins are throttled per client address, so each refused token connects from its own
127.0.0.N source address.
"""

import base64
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

import conftest
import pgwire
from conftest import Endpoint, SluiceConfig, SluiceProcess, make_identities, _state

cryptography = pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402

ISSUER = "https://idp.test/"
AUDIENCE = "sluice"
KID = "test-key-1"

pytestmark = pytest.mark.skipif(conftest.DIRECT, reason="OIDC identities are sluice behaviour")


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Idp:
    """Keys, a JWKS file and a token signer."""

    def __init__(self, d):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = self.key.public_key().public_numbers()
        self.jwks = {"keys": [{"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig",
                               "n": int_b64u(pub.n), "e": int_b64u(pub.e)}]}
        self.path = os.path.join(d, "jwks.json")
        with open(self.path, "w") as f:
            json.dump(self.jwks, f)
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def claims(self, email, **over):
        now = int(time.time())
        c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "00u" + email.split("@")[0], "email": email,
             "iat": now, "exp": now + 600}
        for k, v in over.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def token(self, claims, alg="RS256", kid=KID, key=None, header_extra=None):
        h = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            h["kid"] = kid
        h.update(header_extra or {})
        signing_input = (b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode()))
        if alg == "RS256":
            sig = (key or self.key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        elif alg == "HS256":
            sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
        elif alg == "none":
            sig = b""
        else:
            raise ValueError(alg)
        return signing_input + "." + b64u(sig)


class OidcConfig(SluiceConfig):
    """The harness config plus identities.oidc and rules of this module's own first."""

    oidc_line = ""
    extra_rules = []

    def text(self):
        lines = super().text().split("\n")
        i = lines.index("policy:")
        lines[i:i] = [self.oidc_line]
        i = lines.index("  rules:")
        return "\n".join(lines[:i + 1] + self.extra_rules + lines[i + 1:])


class Inst:
    def __init__(self, sp, ep, idp):
        self.sp, self.ep, self.idp = sp, ep, idp

    def api(self, method, path, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.sp.config.admin_port}{path}",
                                     data=b"" if method == "POST" else None, method=method)
        if token is not None:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text), text
        except ValueError:
            return status, None, text

    def connect(self, user, token, **kw):
        c = psycopg2.connect(**self.ep.params("shop", user, token, **kw))
        self.ep._conns.append(c)
        return c


@pytest.fixture(scope="module")
def oidc(workdir, certs, pg, sluice_bin):
    d = os.path.join(workdir, "oidc")
    os.makedirs(d, exist_ok=True)
    idp = Idp(d)
    ids, secrets = make_identities()
    cls = type("OidcConfigInst", (OidcConfig,), {
        "oidc_line": (f"  oidc: {{ issuer: \"{ISSUER}\", audience: {AUDIENCE}, jwks_file: {idp.path}, "
                      "groups_claim: groups, kind_claim: sluice_kind }"),
        "extra_rules": [
            "    - { name: agents-writes-need-review, match: { kind: agent, class: [write] },",
            "        action: review, mode: defer }",
        ],
    })
    cfg = cls(pg, certs, ids, extra_yaml="approvals: { approvers: { groups: [dba] } }\n")
    sp = SluiceProcess(workdir, "oidc", cfg)
    sp.secrets = secrets
    _state["extra"].append(sp)
    sp.start()
    inst = Inst(sp, Endpoint(pg, secrets, cfg.port, certs, config=cfg, process=sp), idp)
    yield inst
    inst.ep.close_all()
    sp.assert_clean_exit()


_src = [10]


def raw_login(inst, user, token):
    """Log in with a token from a fresh 127.0.0.N address (failures are throttled per
    address). Returns the SQLSTATE of the refusal, or None when the login succeeded."""
    _src[0] += 1
    src = f"127.0.0.{_src[0]}"
    sock = socket.create_connection(("127.0.0.1", inst.sp.config.port), timeout=15,
                                    source_address=(src, 0))
    c = pgwire.RawConn.__new__(pgwire.RawConn)
    c.sock, c.buf, c.auth_requests, c.params, c.backend_key, c.notices = sock, b"", [], {}, None, []
    sock.settimeout(15)
    try:
        c.startup(user=user, database="shop", password=token)
        return None
    except pgwire.PgError as e:
        return e.sqlstate
    finally:
        c.close()


# ---------------------------------------------------------------- database clients


def test_valid_human_token(oidc):
    tok = oidc.idp.token(oidc.idp.claims("olivia@corp.com", groups=["engineers"]))
    c = oidc.connect("olivia@corp.com", tok)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    cur.execute("SELECT count(*) FROM orders")
    assert cur.fetchone()[0] >= 200  # a person: no agent row limit
    # and no agent rule: a write runs at once
    cur.execute("UPDATE orders SET note = note WHERE id = 1")
    assert cur.rowcount == 1


def test_valid_agent_token_gets_agent_rules(oidc):
    tok = oidc.idp.token(oidc.idp.claims("agent7@corp.com", sluice_kind="agent", groups=["ai"]))
    c = oidc.connect("agent7@corp.com", tok)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT id FROM customers ORDER BY id")
    assert len(cur.fetchall()) == 5  # agents-row-limit
    with pytest.raises(psycopg2.Error) as ei:
        cur.execute("UPDATE orders SET note = 'x' WHERE id = 1")
    assert ei.value.pgcode == "42501"
    assert "approval required" in ei.value.diag.message_primary  # this module's review rule
    with pytest.raises(psycopg2.Error) as ei:
        cur.execute("CREATE TABLE agent_made (x int)")
    assert ei.value.pgcode == "42501"
    assert 'blocked by rule "agents-read-only"' in ei.value.diag.message_primary


def test_token_variants_accepted(oidc):
    idp = oidc.idp
    # aud as an array that contains the audience; no kid in the header (every key tried)
    tok = idp.token(idp.claims("pat@corp.com", aud=["other", AUDIENCE]))
    assert raw_login(oidc, "pat@corp.com", tok) is None
    tok = idp.token(idp.claims("pat@corp.com"), kid=None)
    assert raw_login(oidc, "pat@corp.com", tok) is None
    # expired 30 s ago: within the default 60 s leeway
    tok = idp.token(idp.claims("pat@corp.com", exp=int(time.time()) - 30))
    assert raw_login(oidc, "pat@corp.com", tok) is None


# Each refusal's reason, as sluice logs it (the token never is): a token refused for another
# reason than the one the case is about would hide a missing check.
REASONS = {
    "expired": "expired", "not yet valid": "not valid", "no exp": "exp",
    "wrong audience": "audience", "wrong audience list": "audience", "wrong issuer": "issuer",
    "issuer without slash": "issuer", "alg none": "none", "alg none no kid": "none",
    "HS256 with public key": "HS256", "unknown kid": "no-such-key", "key not in JWKS": "signature",
    "key not in JWKS, no kid": "signature", "bad kind": "sluice_kind", "crit header": "crit",
    "tampered payload": "signature", "not a JWT": "not a JWT",
}

BAD = {
    "expired": lambda idp: idp.token(idp.claims("eve@corp.com", exp=int(time.time()) - 3600)),
    "not yet valid": lambda idp: idp.token(idp.claims("eve@corp.com", nbf=int(time.time()) + 3600)),
    "no exp": lambda idp: idp.token(idp.claims("eve@corp.com", exp=None)),
    "wrong audience": lambda idp: idp.token(idp.claims("eve@corp.com", aud="other")),
    "wrong audience list": lambda idp: idp.token(idp.claims("eve@corp.com", aud=["a", "b"])),
    "wrong issuer": lambda idp: idp.token(idp.claims("eve@corp.com", iss="https://evil.test/")),
    "issuer without slash": lambda idp: idp.token(idp.claims("eve@corp.com", iss="https://idp.test")),
    "alg none": lambda idp: idp.token(idp.claims("eve@corp.com"), alg="none"),
    "alg none no kid": lambda idp: idp.token(idp.claims("eve@corp.com"), alg="none", kid=None),
    "HS256 with public key": lambda idp: idp.token(idp.claims("eve@corp.com"), alg="HS256",
                                                   key=idp.public_pem),
    "unknown kid": lambda idp: idp.token(idp.claims("eve@corp.com"), kid="no-such-key"),
    "key not in JWKS": lambda idp: idp.token(idp.claims("eve@corp.com"), key=idp.other),
    "key not in JWKS, no kid": lambda idp: idp.token(idp.claims("eve@corp.com"), kid=None,
                                                     key=idp.other),
    "bad kind": lambda idp: idp.token(idp.claims("eve@corp.com", sluice_kind="root")),
    "crit header": lambda idp: idp.token(idp.claims("eve@corp.com"),
                                         header_extra={"crit": ["exp"]}),
    "tampered payload": lambda idp: tamper(idp.token(idp.claims("mallory@corp.com")),
                                           idp.claims("eve@corp.com")),
    "not a JWT": lambda idp: "definitely-not-a-jwt",
}


def tamper(token, claims):
    h, _, s = token.split(".")
    return h + "." + b64u(json.dumps(claims).encode()) + "." + s


def log_size(inst):
    return os.path.getsize(inst.sp.log)


def log_since(inst, offset, needle, timeout=3.0):
    """The first line of the sluice log after offset that holds needle, or all of them."""
    deadline = time.time() + timeout
    while True:
        with open(inst.sp.log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        hit = [l for l in lines if "OIDC token" in l and needle in l]
        if hit or time.time() > deadline:
            return hit[0] if hit else "\n".join(lines)
        time.sleep(0.05)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_token_refused(oidc, case):
    token = BAD[case](oidc.idp)
    off = log_size(oidc)
    assert raw_login(oidc, "eve@corp.com", token) == "28P01", case
    line = log_since(oidc, off, REASONS[case])
    assert "OIDC token" in line and REASONS[case] in line, f"{case}: {line}"
    assert token not in line


def test_user_must_be_the_token_name(oidc):
    tok = oidc.idp.token(oidc.idp.claims("olivia@corp.com"))
    assert raw_login(oidc, "someone@corp.com", tok) == "28P01"
    # a static identity's name with a valid JWT of another person
    assert raw_login(oidc, "copilot", tok) == "28P01"
    # and psycopg2 sees an ordinary authentication failure
    with pytest.raises(psycopg2.OperationalError):
        oidc.connect("someone@corp.com", tok)
    # static identities still work next to OIDC
    c = oidc.ep.connect(user="etl")
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_name_from_sub_when_no_email(oidc):
    """name_claim unset: the name is the token's email, or its sub when it has none (a
    client-credentials token of a service)."""
    claims = oidc.idp.claims("svc9@corp.com", sub="svc-nine")
    del claims["email"]
    tok = oidc.idp.token(claims)
    assert raw_login(oidc, "svc-nine", tok) is None
    assert raw_login(oidc, "svc9@corp.com", tok) == "28P01"


# ---------------------------------------------------------------- admin API


def test_admin_jwt_with_a_configured_identity_name_refused(oidc):
    """A JWT whose name is a configured identity's (copilot) is refused on the admin API as
    on the database: it would act, and be audited, as that identity."""
    idp = oidc.idp
    tok = idp.token(idp.claims("copilot", groups=["dba"]))
    assert raw_login(oidc, "copilot", tok) == "28P01"
    st, _, text = oidc.api("GET", "/api/v1/whoami", tok)
    assert st == 401, text


def test_jwt_bearer_on_admin_api(oidc):
    idp = oidc.idp
    dba = idp.token(idp.claims("dana@corp.com", groups=["dba", "engineers"]))
    st, js, text = oidc.api("GET", "/api/v1/approvals?state=all", dba)
    assert st == 200 and isinstance(js.get("approvals"), list), text
    st, js, text = oidc.api("GET", "/api/v1/whoami", dba)
    assert st == 200 and js["name"] == "dana@corp.com" and js["approver"] is True, text
    assert "dba" in js["groups"]

    plain = idp.token(idp.claims("olivia@corp.com", groups=["engineers"]))
    st, _, text = oidc.api("GET", "/api/v1/approvals", plain)
    assert st == 403, text
    for bad in (idp.token(idp.claims("dana@corp.com", groups=["dba"], exp=int(time.time()) - 3600)),
                idp.token(idp.claims("dana@corp.com", groups=["dba"], aud="other")),
                idp.token(idp.claims("dana@corp.com", groups=["dba"]), alg="none"),
                idp.token(idp.claims("dana@corp.com", groups=["dba"]), alg="HS256",
                          key=idp.public_pem)):
        st, _, text = oidc.api("GET", "/api/v1/approvals", bad)
        assert st == 401, text

    # an OIDC agent asks; an OIDC approver decides; the agent's re-run passes
    agent = idp.token(idp.claims("agent9@corp.com", sluice_kind="agent"))
    c = oidc.connect("agent9@corp.com", agent)
    c.autocommit = True
    with pytest.raises(psycopg2.Error) as ei:
        c.cursor().execute("UPDATE orders SET note = note WHERE id = 2")
    rid = re.search(r"(req_[A-Za-z0-9]+)", ei.value.diag.message_primary).group(1)
    # the agent's own JWT (no approver group) cannot approve
    st, _, text = oidc.api("POST", f"/api/v1/approvals/{rid}/approve", agent)
    assert st == 403, text
    st, js, text = oidc.api("POST", f"/api/v1/approvals/{rid}/approve", dba)
    assert st == 200 and js["approver"] == "dana@corp.com", text
    cur = c.cursor()
    cur.execute("UPDATE orders SET note = note WHERE id = 3")
    assert cur.rowcount == 1


# ---------------------------------------------------------------- token lifetime


def _ending_in(idp, name, seconds, **claims):
    """A token whose exp plus the default 60 s leeway passes `seconds` from now."""
    return idp.token(idp.claims(name, exp=int(time.time()) - 60 + seconds, **claims))


def test_session_ends_when_its_token_expires(oidc):
    c = oidc.connect("tess@corp.com", _ending_in(oidc.idp, "tess@corp.com", 3))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT 1")
    # a statement running at the expiry is answered; the session ends after it
    cur.execute("SELECT pg_sleep(4), 2")
    assert cur.fetchone()[1] == 2
    with pytest.raises(psycopg2.OperationalError) as ei:
        cur.execute("SELECT 3")
        cur.fetchone()
    # libpq takes an error that comes while it waits for nothing for a notice, or misses it
    # when it sees the end first, as with PostgreSQL's own FATAL to an idle session
    # (pg_terminate_backend); the raw client below reads it
    said = str(ei.value) + "".join(c.notices)
    assert "token expired" in said or "closed the connection" in said, said

    # an idle session ends at the expiry, with the error waiting for the client
    r = pgwire.RawConn("127.0.0.1", oidc.sp.config.port, 15)
    r.startup(user="tess@corp.com", database="shop",
              password=_ending_in(oidc.idp, "tess@corp.com", 2))
    time.sleep(4)
    mtype, payload = r.read_msg()
    f = pgwire.parse_fields(payload)
    assert mtype == b"E" and f["S"] == "FATAL" and f["C"] == "28000" and "expired" in f["M"], f
    assert r.read_msg() is None  # then the end
    r.close()

    # what the client sends after the expiry, while a statement runs, does not run
    r = pgwire.RawConn("127.0.0.1", oidc.sp.config.port, 15)
    r.startup(user="tess@corp.com", database="shop",
              password=_ending_in(oidc.idp, "tess@corp.com", 1))
    r.send(pgwire.message(b"Q", b"SELECT pg_sleep(3)\0"))
    time.sleep(2)
    r.send(pgwire.message(b"Q", b"SELECT 'sent after expiry'\0"))
    got = []
    while (m := r.read_msg()) is not None:
        got.append(m)
    r.close()
    types = [t for t, _ in got]
    assert types == [b"T", b"D", b"C", b"Z", b"E"], types
    assert not any(b"sent after expiry" in body for _, body in got)


def test_event_stream_ends_when_its_token_expires(oidc):
    tok = _ending_in(oidc.idp, "dana@corp.com", 3, groups=["dba"])
    req = urllib.request.Request(f"http://127.0.0.1:{oidc.sp.config.admin_port}/api/v1/events")
    req.add_header("Authorization", "Bearer " + tok)
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read().decode()  # returns when sluice ends the stream
    assert ": token expired" in body and time.time() - t0 < 20, body
