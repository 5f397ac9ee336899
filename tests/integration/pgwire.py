"""pgwire.py: a minimal PostgreSQL v3 wire client for the integration tests.

The regular drivers (psycopg2, libpq tools) hide what the server actually sent: which
authentication method was asked for, the exact SQLSTATE of a connection failure, what
arrives after a malformed packet. This module speaks the protocol by hand over a plain
socket so tests can see those bytes. It also holds the SCRAM-SHA-256 math (client proof,
verifier generation and verification) used to build sluice's config without relying on
`sluice hash-token`. It knows nothing about sluice or the fixtures.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct

PROTO_V3 = 3 << 16
SSL_REQUEST = 80877103
CANCEL_REQUEST = 80877102

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


# ---------------------------------------------------------------- SCRAM-SHA-256 helpers


def _hmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def scram_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = _hmac(salted, b"Server Key")
    return client_key, stored_key, server_key


def scram_verifier(password, iterations=4096, salt=None):
    """A PostgreSQL-style verifier: SCRAM-SHA-256$ITER:SALT$STOREDKEY:SERVERKEY."""
    salt = salt if salt is not None else os.urandom(16)
    _, stored, server = scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored), b64(server))


def scram_verifier_matches(verifier, password):
    """True when `verifier` (as printed by `sluice hash-token`) was made from `password`."""
    try:
        mech, rest = verifier.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iters, salt = iter_salt.split(":", 1)
        stored, server = keys.split(":", 1)
    except ValueError:
        return False
    if mech != "SCRAM-SHA-256":
        return False
    _, s2, sv2 = scram_keys(password, base64.b64decode(salt), int(iters))
    return hmac.compare_digest(s2, base64.b64decode(stored)) and hmac.compare_digest(
        sv2, base64.b64decode(server)
    )


# ---------------------------------------------------------------- messages


def startup_packet(params, version=PROTO_V3):
    body = struct.pack("!I", version)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(mtype, payload=b""):
    return mtype + struct.pack("!I", len(payload) + 4) + payload


def parse_fields(payload):
    """ErrorResponse/NoticeResponse body -> {'S':..., 'C':..., 'M':...}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__("%s %s" % (fields.get("C"), fields.get("M")))

    @property
    def sqlstate(self):
        return self.fields.get("C")


class RawConn:
    """One socket to a PostgreSQL-speaking server. Every read has a timeout."""

    def __init__(self, host, port, timeout=15.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.auth_requests = []  # auth codes the server asked for, in order
        self.params = {}
        self.backend_key = None
        self.notices = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_byte(self):
        """One raw byte (SSLRequest answers), or None on EOF."""
        if not self._fill(1):
            return None
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_msg(self):
        """(type byte, payload) or None on EOF."""
        if not self._fill(5):
            return None
        mtype = self.buf[:1]
        (length,) = struct.unpack("!I", self.buf[1:5])
        if length < 4 or length > (1 << 30):
            raise ValueError("bad length %d from server for type %r" % (length, mtype))
        if not self._fill(1 + length):
            return None
        payload = self.buf[5 : 1 + length]
        self.buf = self.buf[1 + length :]
        return mtype, payload

    def read_all_until_eof(self):
        """Drain whatever the server sends until it closes; returns the raw bytes."""
        data = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    # -------------------------------------------------------- startup and authentication

    def startup(self, user=None, database=None, password=None, extra=None, version=PROTO_V3):
        """Send a StartupMessage and authenticate. Raises PgError on an ErrorResponse;
        returns when ReadyForQuery arrives. self.seen lists the message types received."""
        params = {}
        if user is not None:
            params["user"] = user
        if database is not None:
            params["database"] = database
        params.update(extra or {})
        self.send(startup_packet(params, version))
        self.seen = []
        scram = None
        while True:
            m = self.read_msg()
            if m is None:
                raise EOFError("server closed the connection during startup")
            mtype, payload = m
            self.seen.append(mtype)
            if mtype == b"E":
                raise PgError(parse_fields(payload))
            if mtype == b"N":
                self.notices.append(parse_fields(payload))
            elif mtype == b"v":
                self.negotiated = payload
            elif mtype == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                self.auth_requests.append(code)
                if code == AUTH_OK:
                    pass
                elif code == AUTH_CLEARTEXT:
                    self.send(message(b"p", (password or "").encode() + b"\0"))
                elif code == AUTH_MD5:
                    salt = payload[4:8]
                    inner = hashlib.md5(((password or "") + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == AUTH_SASL:
                    mechs = [x for x in payload[4:].split(b"\0") if x]
                    if b"SCRAM-SHA-256" not in mechs:
                        raise ValueError("no SCRAM-SHA-256 in %r" % mechs)
                    scram = _ScramClient(password or "")
                    first = scram.client_first()
                    self.send(
                        message(
                            b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first
                        )
                    )
                elif code == AUTH_SASL_CONTINUE:
                    self.send(message(b"p", scram.client_final(payload[4:])))
                elif code == AUTH_SASL_FINAL:
                    scram.verify_server(payload[4:])
                else:
                    raise ValueError("unsupported auth request %d" % code)
            elif mtype == b"S":
                k, v = payload[:-1].split(b"\0", 1)
                self.params[k.decode()] = v.decode()
            elif mtype == b"K":
                self.backend_key = struct.unpack("!II", payload)
            elif mtype == b"Z":
                return
            elif mtype == b"v":
                pass  # NegotiateProtocolVersion: fine, keep going
            else:
                raise ValueError("unexpected message %r during startup" % mtype)

    def query(self, sql):
        """Simple query; returns rows (lists of str/None) of the last result. Raises PgError."""
        self.send(message(b"Q", sql.encode() + b"\0"))
        rows, err = [], None
        while True:
            m = self.read_msg()
            if m is None:
                raise EOFError("server closed the connection during a query")
            mtype, payload = m
            if mtype == b"T":
                rows = []
            elif mtype == b"D":
                (n,) = struct.unpack("!H", payload[:2])
                off, row = 2, []
                for _ in range(n):
                    (ln,) = struct.unpack("!i", payload[off : off + 4])
                    off += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[off : off + ln].decode())
                        off += ln
                rows.append(row)
            elif mtype == b"E":
                err = parse_fields(payload)
            elif mtype == b"Z":
                if err:
                    raise PgError(err)
                return rows

    def terminate(self):
        try:
            self.send(message(b"X"))
        except OSError:
            pass
        self.close()


class _ScramClient:
    def __init__(self, password):
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=,r=" + self.nonce

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ValueError("server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iters = int(attrs["i"])
        client_key, stored, server_key = scram_keys(self.password, salt, iters)
        without_proof = "c=biws,r=" + attrs["r"]
        self.auth_message = ",".join([self.first_bare, sf, without_proof]).encode()
        sig = _hmac(stored, self.auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = server_key
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify_server(self, server_final):
        sf = server_final.decode()
        if not sf.startswith("v="):
            raise ValueError("bad SCRAM server-final %r" % sf)
        expected = _hmac(self.server_key, self.auth_message)
        if not hmac.compare_digest(base64.b64decode(sf[2:]), expected):
            raise ValueError("server signature does not verify")


def expect_error_or_close(conn, timeout=10.0):
    """Read until the peer closes. Returns the list of (type, payload) messages seen before
    EOF; raises socket.timeout when the server neither answers nor closes."""
    conn.sock.settimeout(timeout)
    msgs = []
    while True:
        try:
            m = conn.read_msg()
        except ConnectionResetError:
            return msgs
        if m is None:
            return msgs
        msgs.append(m)
