"""conftest.py: fixtures of the sluice integration suite.

Starts, once per test session, a real PostgreSQL 15 cluster (initdb as the `postgres` system
user, TLS with a throw-away CA, one role per upstream authentication method: app_scram,
app_md5, app_trust and the hostssl-only app_ssl) holding a small `shop` database, and a
sluice process in front of it with one target per upstream auth kind. Tests reach sluice
through the `sluice` fixture (an Endpoint): `sluice.connect(target, user)` for psycopg2,
`sluice.env(...)` for libpq command-line tools, `sluice.raw()` for hand-made packets.

SLUICE_DIRECT=1 makes the `sluice` fixture point at PostgreSQL itself (targets mapped to
roles, identities to the target's role) so the tests can be proven without sluice; tests
of sluice-only behaviour are skipped in that mode only.

SLUICE_BIN names the binary (default build/sluice). At the end the sluice process must exit
0 on SIGTERM and its stderr must hold no AddressSanitizer/UBSan report. A failing test gets
the tail of both logs attached. A per-test watchdog kills sluice when a test hangs.
"""

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PGBIN = "/usr/lib/postgresql/15/bin"
DIRECT = os.environ.get("SLUICE_DIRECT") == "1"
SLUICE_BIN = os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "build", "sluice")
LOG_LEVEL = os.environ.get("SLUICE_LOG_LEVEL", "info")
TEST_TIMEOUT = float(os.environ.get("SLUICE_TEST_TIMEOUT", "150"))
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Upstream roles, one per authentication method in pg_hba.conf.
ROLES = ["app_scram", "app_md5", "app_trust", "app_ssl"]

# Identities sluice knows (name -> kind/groups/is_token); secrets generated per session.
IDENTITIES = {
    "alice@corp.com": dict(kind="human", groups=["engineers"], token=False),
    "bob@corp.com": dict(kind="human", groups=["analysts"], token=False),
    "etl": dict(kind="service", groups=[], token=True),
    "copilot": dict(kind="agent", groups=["ai"], token=True),
}
ALICE = "alice@corp.com"


_ports_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port nothing listens on, and not one this run handed out before. It is taken below
    the kernel's ephemeral range: a port from bind(0) can meanwhile become the local port of
    an outgoing connection (a client's, a driver suite's), and the sluice started on it then
    fails with "Address already in use" (seen once in CI's ASan run)."""
    low = _ephemeral_low()
    top = low - 1 if low > 20000 else 65535
    base = 15000 if low > 20000 else low
    # Under pytest-xdist each worker process takes ports from a slice of its own, so that two
    # workers never pick the same free port before either has bound it.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    span = (top - base + 1) // max(workers, 1)
    base, top = base + worker * span, base + (worker + 1) * span - 1
    rng = random.Random()
    for _ in range(10000):
        port = rng.randint(base, top)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port")


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (cmd, r.returncode, r.stdout, r.stderr))
    return r


def as_postgres(cmd, **kw):
    return run(["runuser", "-u", "postgres", "--"] + cmd, **kw)


def tail(path, n=60):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def wait_port(port, proc=None, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %.0fs" % (port, timeout))


# ---------------------------------------------------------------- TLS material


def make_certs(d):
    """A CA, a server certificate for PostgreSQL and one for sluice (SAN 127.0.0.1 and
    localhost), and an unrelated second CA (for a verify-full that must fail)."""

    def ca(name):
        run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.crt", "-days", "3",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )

    ca("ca")
    ca("otherca")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
    for name in ("pgserver", "sluice"):
        run(
            ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr",
             "-subj", "/CN=127.0.0.1"]
        )
        run(
            ["openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt",
             "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{name}.crt",
             "-days", "3", "-extfile", f"{d}/ext.cnf"]
        )
        os.chmod(f"{d}/{name}.key", 0o600)
    # a client certificate (mTLS) signed by the CA
    with open(f"{d}/client.cnf", "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=clientAuth\n")
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{d}/client.key", "-out", f"{d}/client.csr", "-subj", "/CN=client"])
    run(["openssl", "x509", "-req", "-in", f"{d}/client.csr", "-CA", f"{d}/ca.crt", "-CAkey",
         f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/client.crt", "-days", "3", "-extfile",
         f"{d}/client.cnf"])
    os.chmod(f"{d}/client.key", 0o600)
    # client certificates with subjectAltNames: a SPIFFE ID, a DNS name and an email address;
    # and one with two SPIFFE IDs (which SPIFFE forbids: it names no workload)
    sans = {"client-san": "URI:spiffe://example.org/ns/prod/sa/reports,DNS:Reports.Example.org,"
                          "email:reports@Example.ORG",
            "client-2uri": "URI:spiffe://example.org/ns/prod/sa/other,"
                           "URI:spiffe://example.org/ns/prod/sa/reports"}
    for name, san in sans.items():
        with open(f"{d}/{name}.cnf", "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    f"extendedKeyUsage=clientAuth\nsubjectAltName={san}\n")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj",
             f"/CN={name}"])
        run(["openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt", "-CAkey",
             f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{name}.crt", "-days", "3",
             "-extfile", f"{d}/{name}.cnf"])
        os.chmod(f"{d}/{name}.key", 0o600)


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(self, base):
        self.base = base
        self.data = os.path.join(base, "pgdata")
        self.sockdir = os.path.join(base, "pgsock")
        self.log = os.path.join(base, "postgres.log")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.passwords = {r: "pw-" + os.urandom(12).hex() for r in ROLES}
        self.started = False

    def start(self):
        os.makedirs(self.sockdir)
        shutil.chown(self.sockdir, "postgres", "postgres")
        os.makedirs(self.data)
        shutil.chown(self.data, "postgres", "postgres")
        os.chmod(self.data, 0o700)
        as_postgres(
            [f"{PGBIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"]
        )
        for f in ("pgserver.crt", "pgserver.key", "ca.crt"):
            shutil.copy(os.path.join(self.base, "certs", f), os.path.join(self.data, f))
            shutil.chown(os.path.join(self.data, f), "postgres", "postgres")
        os.chmod(os.path.join(self.data, "pgserver.key"), 0o600)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.sockdir}'
ssl = on
ssl_cert_file = 'pgserver.crt'
ssl_key_file = 'pgserver.key'
ssl_ca_file = 'ca.crt'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = '2GB'
shared_buffers = '128MB'
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %q%u@%d '
"""
            )
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write(
                """# written by tests/integration/conftest.py
local   all  all                    trust
host    all  postgres  127.0.0.1/32 trust
hostssl all  app_ssl   127.0.0.1/32 scram-sha-256
host    all  app_ssl   127.0.0.1/32 reject
host    all  app_scram 127.0.0.1/32 scram-sha-256
host    all  app_md5   127.0.0.1/32 md5
host    all  app_trust 127.0.0.1/32 trust
"""
            )
        open(self.log, "a").close()
        shutil.chown(self.log, "postgres", "postgres")
        as_postgres([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"])
        self.started = True
        atexit.register(self.stop)
        self._setup_roles_and_data()

    def _setup_roles_and_data(self):
        pw = self.passwords
        c = self.admin()
        c.autocommit = True
        cur = c.cursor()
        cur.execute("SET password_encryption = 'scram-sha-256'")
        for r in ("app_scram", "app_trust", "app_ssl"):
            cur.execute(f"CREATE ROLE {r} LOGIN PASSWORD %s", (pw[r],))
        cur.execute("SET password_encryption = 'md5'")
        cur.execute("CREATE ROLE app_md5 LOGIN PASSWORD %s", (pw["app_md5"],))
        cur.execute("GRANT app_scram TO app_md5, app_trust, app_ssl")
        cur.execute("CREATE DATABASE shop OWNER app_scram")
        c.close()
        c = self.admin(dbname="shop")
        c.autocommit = True
        cur = c.cursor()
        cur.execute("ALTER SCHEMA public OWNER TO app_scram")
        cur.execute("SET ROLE app_scram")
        cur.execute(
            """
            CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text,
                                    phone text, card text, created timestamptz DEFAULT now());
            CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,
                                 amount numeric(10,2), note text);
            CREATE VIEW big_spenders AS
              SELECT c.name, sum(o.amount) AS total FROM customers c JOIN orders o
              ON o.customer_id = c.id GROUP BY c.name HAVING sum(o.amount) > 100;
            INSERT INTO customers (name, email, phone, card)
              SELECT 'customer ' || i, 'user' || i || '@example.com', '+1-555-01' || lpad(i::text, 2, '0'),
                     '4242 4242 4242 ' || lpad(i::text, 4, '0')
              FROM generate_series(1, 50) i;
            INSERT INTO orders (customer_id, amount, note)
              SELECT 1 + i % 50, (i * 7.25)::numeric(10,2), 'order ' || i FROM generate_series(1, 200) i;
            """
        )
        c.close()

    def admin(self, dbname="postgres"):
        """A superuser connection straight to PostgreSQL (trust over TCP)."""
        return psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname)

    def stop(self):
        if self.started:
            self.started = False
            as_postgres([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], check=False)


# ---------------------------------------------------------------- sluice


def yaml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SluiceConfig:
    """Builds sluice.yaml text. identities: {name: dict(kind, groups, token, secret_hash)}."""

    def __init__(self, pg, certs, identities, port=None, admin_port=None, server_extra=None,
                 listen_host="127.0.0.1", tls_require=False, extra_yaml="", state_dir=None,
                 extra_rules=(), client_ca=False, client_crl=None, extra_targets=()):
        self.client_ca = client_ca  # mTLS: client certificates signed by the test CA
        self.client_crl = client_crl  # a PEM revocation list for them (tls.client_crl)
        self.extra_targets = list(extra_targets)  # more dicts as targets() returns
        self.server_extra = dict(server_extra or {})
        self.first_rules = list(extra_rules)  # YAML lines put first in policy.rules
        self.extra_yaml = extra_yaml  # more top-level sections (masking:, audit:, ...)
        self.state_dir = state_dir
        self.listen_host = listen_host
        self.tls_require = tls_require
        self.pg = pg
        self.certs = certs
        self.identities = identities
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.closed_port = free_port()  # nothing listens there

    def targets(self):
        pg = self.pg
        return [
            dict(name="shop", port=pg.port, user="app_scram", env="SLUICE_T_SCRAM", sslmode="disable"),
            dict(name="shop_md5", port=pg.port, user="app_md5", env="SLUICE_T_MD5", sslmode="disable"),
            dict(name="shop_trust", port=pg.port, user="app_trust", env=None, sslmode="disable"),
            dict(name="shop_tls", port=pg.port, user="app_ssl", env="SLUICE_T_SSL",
                 sslmode="verify-full", sslrootcert=f"{self.certs}/ca.crt"),
            dict(name="shop_tls_wrongca", port=pg.port, user="app_ssl", env="SLUICE_T_SSL",
                 sslmode="verify-full", sslrootcert=f"{self.certs}/otherca.crt"),
            dict(name="shop_down", port=self.closed_port, user="app_scram", env="SLUICE_T_SCRAM",
                 sslmode="disable"),
        ] + self.extra_targets

    def env(self):
        pw = self.pg.passwords
        return {"SLUICE_T_SCRAM": pw["app_scram"], "SLUICE_T_MD5": pw["app_md5"],
                "SLUICE_T_SSL": pw["app_ssl"]}

    def text(self):
        out = [
            "# sluice config written by tests/integration/conftest.py",
            f"listen: {{ postgres: {self.listen_host}:{self.port}, admin: 127.0.0.1:{self.admin_port} }}",
            f"tls: {{ cert: {self.certs}/sluice.crt, key: {self.certs}/sluice.key, "
            + (f"client_ca: {self.certs}/ca.crt, " if self.client_ca else "")
            + (f"client_crl: {self.client_crl}, " if self.client_crl else "")
            + f"require: {'true' if self.tls_require else 'false'} }}",
            "targets:",
        ]
        for t in self.targets():
            line = (f"  - {{ name: {t['name']}, host: {t.get('host', '127.0.0.1')}, port: {t['port']}, database: shop, "
                    f"user: {t['user']}, sslmode: {t['sslmode']}")
            if t["env"]:
                line += f", password_env: {t['env']}"
            if t.get("sslrootcert"):
                line += f", sslrootcert: {t['sslrootcert']}"
            if t.get("channel_binding"):
                line += f", channel_binding: {t['channel_binding']}"
            out.append(line + " }")
        users = [(n, i) for n, i in self.identities.items()
                 if not i["token"] and not i.get("cert")]
        tokens = [(n, i) for n, i in self.identities.items() if i["token"]]
        certs = [(n, i) for n, i in self.identities.items() if i.get("cert")]
        out.append("identities:")
        out.append("  users:")
        for n, i in users:
            out.append(f"    - {{ name: {yaml_str(n)}, kind: {i['kind']}, groups: [{', '.join(i['groups'])}], "
                       f"password_hash: {yaml_str(i['secret_hash'])} }}")
        out.append("  tokens:")
        for n, i in tokens:
            out.append(f"    - {{ name: {yaml_str(n)}, kind: {i['kind']}, groups: [{', '.join(i['groups'])}], "
                       f"token_hash: {yaml_str(i['secret_hash'])} }}")
        if certs:  # identities that log in with a client certificate (cert=True, cn=..., san=...)
            out.append("  certs:")
        for n, i in certs:
            cn = f", cn: {yaml_str(i['cn'])}" if i.get("cn") else ""
            cn += f", san: {yaml_str(i['san'])}" if i.get("san") else ""
            out.append(f"    - {{ name: {yaml_str(n)}, kind: {i['kind']}, groups: [{', '.join(i['groups'])}]"
                       f"{cn} }}")
        # The transparency tests run tools that drop and truncate (pgbench -i, psql -f,
        # pg_dump's set_config): alice and etl may pass every guardrail; bob and copilot stay
        # under the defaults for the policy tests.
        out.append("policy:")
        out.append("  rules:")
        out.extend(self.first_rules)
        out.append("    - { name: harness-admins, match: { identity: [alice@corp.com, etl] }, action: allow,")
        out.append("        override: [drop, truncate, delete_without_where, update_without_where, copy_program,")
        out.append("                   copy_file, alter_system, file_access, role_escalation, dangerous_functions,")
        out.append("                   unjudgeable] }")
        out.append("    - { name: agents-read-only, match: { kind: agent, class: [write, ddl, dcl, admin] },")
        out.append("        action: deny, reason: agents may only read }")
        out.append("    - { name: agents-row-limit, match: { kind: agent, class: [read] }, action: allow,")
        out.append("        limit_rows: 5 }")
        server = {"workers": 2, "log_level": LOG_LEVEL}
        server.update(self.server_extra)
        out.append("server: { " + ", ".join(f"{k}: {v}" for k, v in server.items()) + " }")
        if self.state_dir:
            out.append(f"state: {{ path: {self.state_dir}/sluice.db }}")
        if "masking:" not in self.extra_yaml:
            # alice and etl run the driver suites and tools: they see raw values; bob and
            # copilot get the default masking.
            out.append("masking: { unmask: { identities: [alice@corp.com, etl] } }")
        out.append(self.extra_yaml)
        return "\n".join(out) + "\n"


class SluiceProcess:
    """One running `sluice serve -c FILE`, stderr into a log file."""

    def __init__(self, base, name, config):
        self.base = base
        self.name = name
        self.config = config
        if config.state_dir is None:
            config.state_dir = os.path.join(base, f"{name}-state")
            os.makedirs(config.state_dir, exist_ok=True)
        self.path = os.path.join(base, f"{name}.yaml")
        self.log = os.path.join(base, f"{name}.log")
        self.proc = None
        self.exit_checked = False

    def write_config(self):
        with open(self.path, "w") as f:
            f.write(self.config.text())

    def start(self):
        self.write_config()
        env = dict(os.environ)
        env.update(self.config.env())
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [SLUICE_BIN, "serve", "-c", self.path], stdout=self.logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )
        atexit.register(self.kill)
        try:
            wait_port(self.config.port, self.proc, timeout=20)
        except RuntimeError as e:
            raise RuntimeError(f"sluice ({self.name}) did not start: {e}\n{tail(self.log)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        """SIGTERM, wait, and return (returncode, sanitizer lines)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout: still running %ds after SIGTERM (killed)" % timeout
        self.logf.close()
        return rc, self.sanitizer_reports()

    def sanitizer_reports(self):
        try:
            with open(self.log, errors="replace") as f:
                return [l.rstrip() for l in f if any(m in l for m in SAN_MARKERS)]
        except OSError:
            return []

    def assert_clean_exit(self, timeout=30):
        rc, san = self.stop(timeout)
        self.exit_checked = True
        problems = []
        if rc != 0:
            problems.append(f"sluice ({self.name}) exit status {rc}, expected 0")
        if san:
            problems.append("sanitizer reports in sluice stderr:\n" + "\n".join(san[:20]))
        if problems:
            pytest.fail("\n".join(problems) + "\n--- sluice log tail ---\n" + tail(self.log, 80),
                        pytrace=False)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the endpoint tests use


class Endpoint:
    """Where tests connect: sluice, or PostgreSQL itself when SLUICE_DIRECT=1."""

    def __init__(self, pg, secrets, port, certs, config=None, process=None):
        self.pg = pg
        self.secrets = secrets  # identity -> secret
        self.host = "127.0.0.1"
        self.port = port
        self.certs = certs
        self.ca = f"{certs}/ca.crt"
        self.config = config
        self.process = process
        self.direct = process is None
        self._conns = []

    # map (target, user, password) to what to send
    def _resolve(self, target, user, password):
        if password is None:
            password = self.secrets.get(user, "")
        if not self.direct:
            return target, user, password, {}
        extra = {}
        tmap = {t["name"]: t for t in SluiceConfig(self.pg, self.certs, {}).targets()}
        t = tmap.get(target)
        if t is None:
            return target, user, password, extra
        role = t["user"]
        if user in self.secrets:
            if password == self.secrets[user]:
                password = self.pg.passwords[role]
            user = role
        if t["sslmode"] != "disable":
            extra["sslmode"] = "require"
        if t["name"] == "shop_down":
            extra["port"] = t["port"]
        return "shop", user, password, extra

    def params(self, target="shop", user=ALICE, password=None, **kw):
        dbname, u, pw, extra = self._resolve(target, user, password)
        p = dict(host=self.host, port=self.port, dbname=dbname, user=u, password=pw,
                 sslmode="disable", connect_timeout=15)
        p.update(extra)
        p.update(kw)
        return p

    def dsn(self, target="shop", user=ALICE, password=None, **kw):
        p = self.params(target, user, password, **kw)
        esc = lambda v: "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"
        return " ".join(f"{k}={esc(v)}" for k, v in p.items())

    def connect(self, target="shop", user=ALICE, password=None, **kw):
        """A psycopg2 connection, closed at the end of the test."""
        c = psycopg2.connect(**self.params(target, user, password, **kw))
        self._conns.append(c)
        return c

    def env(self, target="shop", user=ALICE, password=None, **kw):
        """Environment for libpq tools (psql, pgbench, pg_dump)."""
        p = self.params(target, user, password, **kw)
        e = dict(os.environ)
        e.update(PGHOST=p["host"], PGPORT=str(p["port"]), PGDATABASE=p["dbname"], PGUSER=p["user"],
                 PGPASSWORD=p["password"], PGSSLMODE=p["sslmode"], PGCONNECT_TIMEOUT="15")
        e.pop("PGSERVICE", None)
        return e

    def raw(self, timeout=15.0):
        return pgwire.RawConn(self.host, self.port, timeout)

    def raw_login(self, target="shop", user="etl", password=None, extra=None, timeout=15.0):
        dbname, u, pw, ex = self._resolve(target, user, password)
        c = pgwire.RawConn(self.host, ex.get("port", self.port), timeout)
        c.startup(user=u, database=dbname, password=pw, extra=extra)
        return c

    def assert_alive(self):
        """sluice (or PG) still serves a normal query on a new connection."""
        if self.process is not None:
            assert self.process.alive(), "sluice exited:\n" + tail(self.process.log)
        c = psycopg2.connect(**self.params("shop", ALICE))
        try:
            cur = c.cursor()
            cur.execute("SELECT count(*) FROM customers WHERE id <= %s", (10,))
            assert cur.fetchone()[0] == 10
        finally:
            c.close()

    def close_all(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:
                pass
        self._conns = []


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="sluice-it-")
    os.chmod(d, 0o755)
    yield d
    if os.environ.get("SLUICE_KEEP_TMP") != "1" and not _state["failed"]:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workdir):
    d = os.path.join(workdir, "certs")
    os.makedirs(d)
    make_certs(d)
    return d


@pytest.fixture(scope="session")
def pg(workdir, certs):
    p = Postgres(workdir)
    _state["pg"] = p
    p.start()
    yield p
    p.stop()


def make_identities(extra=None):
    """Secrets and SCRAM verifiers for IDENTITIES (+extra)."""
    ids, secrets = {}, {}
    for name, info in {**IDENTITIES, **(extra or {})}.items():
        secret = ("tok-" if info["token"] else "pw-") + os.urandom(16).hex()
        secrets[name] = secret
        ids[name] = dict(info, secret_hash=pgwire.scram_verifier(secret))
    return ids, secrets


@pytest.fixture(scope="session")
def sluice_bin():
    if not (os.path.isfile(SLUICE_BIN) and os.access(SLUICE_BIN, os.X_OK)):
        pytest.fail(f"sluice binary not found at {SLUICE_BIN} (build it, or set SLUICE_BIN)",
                    pytrace=False)
    return SLUICE_BIN


@pytest.fixture(scope="session")
def sluice_proc(request, workdir, certs, pg):
    if DIRECT:
        yield None
        return
    request.getfixturevalue("sluice_bin")
    ids, secrets = make_identities()
    cfg = SluiceConfig(pg, certs, ids)
    sp = SluiceProcess(workdir, "sluice", cfg)
    sp.secrets = secrets
    _state["sluice"] = sp
    sp.start()
    yield sp
    if not sp.exit_checked:
        sp.assert_clean_exit()


@pytest.fixture(scope="session")
def _endpoint(pg, certs, sluice_proc):
    if sluice_proc is None:
        ids, secrets = make_identities()
        return Endpoint(pg, secrets, pg.port, certs)
    return Endpoint(pg, sluice_proc.secrets, sluice_proc.config.port, certs,
                    config=sluice_proc.config, process=sluice_proc)


@pytest.fixture
def sluice(_endpoint):
    """The endpoint under test; connections it opened are closed after each test."""
    yield _endpoint
    _endpoint.close_all()


@pytest.fixture
def sluice_only():
    if DIRECT:
        pytest.skip("tests sluice-specific behaviour (SLUICE_DIRECT=1)")


@pytest.fixture
def spawn_sluice(request, workdir, certs, pg, sluice_only, sluice_bin):
    """Start an extra sluice instance of its own (for signal tests). Returns a function
    (name, extra_identities=None, server_extra=None) -> (SluiceProcess, Endpoint)."""
    started = []

    def spawn(name, extra_identities=None, server_extra=None, **config_kw):
        ids, secrets = make_identities(extra_identities)
        sp = SluiceProcess(workdir, name,
                           SluiceConfig(pg, certs, ids, server_extra=server_extra, **config_kw))
        sp.secrets = secrets
        _state["extra"].append(sp)
        sp.start()
        started.append(sp)
        return sp, Endpoint(pg, secrets, sp.config.port, certs, config=sp.config, process=sp)

    yield spawn
    for sp in started:
        if not sp.exit_checked and sp.proc.poll() is None:
            sp.assert_clean_exit()


# ---------------------------------------------------------------- hooks: logs on failure, watchdog

_state = {"pg": None, "sluice": None, "extra": [], "failed": False}


def _watchdog_fire(item_name):
    msg = f"\n*** watchdog: test {item_name} ran over {TEST_TIMEOUT:.0f}s; killing sluice ***\n"
    sys.stderr.write(msg)
    for sp in [_state["sluice"]] + _state["extra"]:
        if sp is not None and sp.alive():
            try:
                with open(sp.log, "a") as f:
                    f.write(msg)
            except OSError:
                pass
            sp.proc.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t = threading.Timer(TEST_TIMEOUT, _watchdog_fire, args=(item.nodeid,))
    t.daemon = True
    t.start()
    try:
        yield
    finally:
        t.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _state["failed"] = True
        procs = [p for p in [_state["sluice"]] + _state["extra"] if p is not None]
        for sp in procs:
            rep.sections.append((f"sluice log tail ({sp.name}: {sp.log})", tail(sp.log, 60)))
        if _state["pg"] is not None:
            rep.sections.append((f"postgres log tail ({_state['pg'].log})", tail(_state["pg"].log, 40)))
