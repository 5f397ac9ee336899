"""driver_suites.py: drivers' own test suites, run through sluice and directly against
PostgreSQL in the same test; a client must not be able to tell sluice from the server. The
tests are in test_driver_suites_pq.py (lib/pq, sqlx, GORM) and test_driver_suites_pgx.py
(pgconn, pgx): two files, so that pytest-xdist can run them on two workers at once.

Debian ships the sources and tests of three Go drivers and two libraries on top of them, and
each suite runs both ways:
- lib/pq (golang-github-lib-pq-dev): the simple and extended protocol, COPY FROM STDIN,
  LISTEN/NOTIFY with the backend's pid, CancelRequest, errors and their fields, types, startup
  parameters and reconnects;
- pgconn (golang-github-jackc-pgconn-dev), pgx's wire layer: pipelined batches (one of 100,000
  queries behind a single Sync), context cancellation that sends a CancelRequest and waits for
  the server to close it, COPY both ways, notifications, the extended protocol's corners;
- pgx v4 (golang-github-jackc-pgx-v4-dev): types, batches, transactions, large objects, the
  statement cache, the simple protocol mode;
- sqlx (golang-github-jmoiron-sqlx-dev) and GORM v1 (golang-github-jinzhu-gorm-dev), both
  over lib/pq: named queries, struct scanning, prepared statements, migrations (CREATE, ALTER
  and DROP TABLE, indexes), associations, transactions, RETURNING. Each runs in a schema of
  its own (search_path in the startup packet), which the test creates and drops, so that
  their tables never meet the shop's.
The comparison is of the wire, not of policy: lib/pq, pgconn, sqlx and GORM run as alice (human, every
guardrail overridden by the harness policy, results unmasked), pgx as an identity named like
the target's role (app_scram, with the same rights), because its TestConnect checks that
current_user is the user it logged in as. Each suite has a sluice instance of its own: they
log in wrongly on purpose, and the shared instance's login throttle counts every test's
failures from 127.0.0.1. The set of failing tests must be the
same both ways (as root, lib/pq's TestHasCorrectRootGroupPermissions fails either way: it
checks file modes), and nearly all tests must pass.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

import conftest

GOPATH = "/usr/share/gocode"
LIBPQ = f"{GOPATH}/src/github.com/lib/pq"
PGCONN = f"{GOPATH}/src/github.com/jackc/pgconn"
PGX = f"{GOPATH}/src/github.com/jackc/pgx/v4"
SQLX = f"{GOPATH}/src/github.com/jmoiron/sqlx"
GORM = f"{GOPATH}/src/github.com/jinzhu/gorm"
DEPS = ("golang-go, golang-github-lib-pq-dev, golang-github-jackc-pgconn-dev, "
        "golang-github-jackc-pgx-v4-dev, golang-github-jackc-pgmock-dev, "
        "golang-github-stretchr-testify-dev, golang-github-jmoiron-sqlx-dev, "
        "golang-github-jinzhu-gorm-dev, golang-github-jinzhu-now-dev, "
        "golang-github-erikstmartin-go-testdb-dev")


def need_go(*dirs):
    if not shutil.which("go") or not all(os.path.isdir(d) for d in dirs):
        pytest.fail(f"go or a driver's sources are missing: run `make deps` ({DEPS})",
                    pytrace=False)


def stable_name(name):
    """A test's name without a subtest part that differs from run to run: GORM names subtests
    after their arguments, a pointer (0xc0001d56c0) or the current time."""
    return re.sub(r"/(0x[0-9a-f]+|\d{4}-\d\d-\d\d_\S*)$", "/*", name)


def go_test(pkg, env_extra, cache, only=None):
    """`go test -v pkg` against the server env_extra names: (passed, failed, output). only: a
    -run pattern (the tests to run again, see run_both_ways)."""
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=cache, GOFLAGS="",
               **env_extra)
    for k in ("PGAPPNAME", "PGOPTIONS", "PGSERVICE", "PGSSLROOTCERT"):
        env.pop(k, None)
    r = subprocess.run(["go", "test", "-count=1", "-timeout=300s", "-v"] +
                       (["-run", only] if only else []) + [pkg], env=env,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    passed = {stable_name(n) for n in re.findall(r"^\s*--- PASS: (\S+)", out, re.M)}
    failed = {stable_name(n) for n in re.findall(r"^\s*--- FAIL: (\S+)", out, re.M)}
    if "panic:" in out:
        failed.add("(panic)")
    return passed, failed, out


def run_libpq(params, cache, only=None):
    return go_test("github.com/lib/pq",
                   dict(PGHOST=params["host"], PGPORT=str(params["port"]),
                        PGUSER=params["user"], PGPASSWORD=params["password"],
                        PGDATABASE=params["dbname"], PGSSLMODE="disable",
                        PGCONNECT_TIMEOUT="15"), cache, only)


def conn_string(params, sslmode="disable"):
    """pgconn's key=value form (the harness's secrets are hex: nothing to quote)."""
    return (f"host={params['host']} port={params['port']} user={params['user']} "
            f"password={params['password']} dbname={params['dbname']} sslmode={sslmode} "
            "connect_timeout=15")


def run_pgconn(params, cache, only=None):
    return go_test("github.com/jackc/pgconn",
                   dict(PGX_TEST_CONN_STRING=conn_string(params),
                        PGX_TEST_TCP_CONN_STRING=conn_string(params),
                        PGX_TEST_TLS_CONN_STRING=conn_string(params, "require")), cache,
                   only)


def run_pgx(params, cache, only=None):
    return go_test("github.com/jackc/pgx/v4", dict(PGX_TEST_DATABASE=conn_string(params)), cache,
                   only)


def lib_pq_dsn(params, schema):
    """lib/pq sends keys it does not know (search_path) as startup parameters."""
    return conn_string(params) + f" search_path={schema}"


def run_sqlx(params, cache, only=None):
    return go_test("github.com/jmoiron/sqlx",
                   dict(SQLX_POSTGRES_DSN=lib_pq_dsn(params, "sqlx_suite"),
                        SQLX_MYSQL_DSN="skip", SQLX_SQLITE_DSN="skip"), cache, only)


def run_gorm(params, cache, only=None):
    return go_test("github.com/jinzhu/gorm",
                   dict(GORM_DIALECT="postgres", GORM_DSN=lib_pq_dsn(params, "gorm_suite")),
                   cache, only)


def assert_same(direct, through, least):
    d_pass, d_fail, d_out = direct
    s_pass, s_fail, s_out = through
    assert len(d_pass) > least, f"the suite did not run directly:\n{d_out[-3000:]}"
    assert s_fail == d_fail, (
        f"through sluice failed {sorted(s_fail - d_fail)}, passed {sorted(d_fail - s_fail)} "
        f"that fail directly:\n{failure_text(s_out, s_fail - d_fail)}\n"
        f"directly:\n{failure_text(d_out, d_fail - s_fail)}")
    assert s_pass == d_pass, sorted(s_pass ^ d_pass)


def failure_text(out, names):
    """What go test -v printed for the failing tests: each test's lines (its t.Errorf output,
    printed under its === RUN or === CONT header) and its --- FAIL line."""
    current, lines, kept = None, {}, []
    for line in out.splitlines():
        m = re.match(r"^=== (?:RUN|CONT|PAUSE)\s+(\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^\s*--- (FAIL|PASS|SKIP): (\S+)", line)
        if m:
            if m.group(1) == "FAIL" and m.group(2) in names:
                kept.extend(lines.get(m.group(2), []) + [line])
            continue
        if current:
            lines.setdefault(current, []).append(line)
    return "\n".join(kept[:200])


ROLE = "app_scram"  # the target's role: pgx checks current_user against the user it sent


def suite_sluice(spawn_sluice, pg, name):
    """A sluice of the suite's own (the suites log in wrongly on purpose: the login throttle of
    the shared instance, counting every test's failures from 127.0.0.1, must not refuse their
    next logins) with identity app_scram beside the harness's, unmasked and past every
    guardrail as alice is. The direct parameters of an identity come from its Endpoint."""
    rule = ("    - { name: driver-suite, match: { identity: [app_scram] }, action: allow, "
            "override: [drop, truncate, delete_without_where, update_without_where, "
            "copy_program, copy_file, alter_system, file_access, role_escalation, "
            "dangerous_functions, unjudgeable] }")
    sp, ep = spawn_sluice(name, extra_identities={ROLE: dict(kind="human", groups=[],
                                                               token=False)},
                          extra_rules=[rule],
                          extra_yaml="masking: { unmask: { identities: [alice@corp.com, "
                                     "app_scram] } }")
    return sp, ep


def direct_params(pg, certs, sp, user):
    p = conftest.Endpoint(pg, sp.secrets, pg.port, certs).params("shop", user)
    assert p["port"] == pg.port and p["password"] != sp.secrets[user]
    assert p["user"] == ROLE  # the shop target's role, whoever logs in to sluice
    return p


# Go's build cache, kept between runs (make check runs the suites twice: normally and under
# ASan): the suites and their dependencies compile once, about 90 s of a run's two CPUs.
# The cache is content-addressed and safe to share between processes; -count=1 keeps test
# results out of it.
GOCACHE = os.environ.get("SLUICE_GOCACHE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build",
    "gocache")


# A test whose result differs between the two runs is run again, both ways, at most this many
# times; its result in the last rerun is the one compared (a rerun must report every such
# test both ways, or the first results are compared). Some of the suites' tests depend on
# timing (lib/pq's TestContextCancelQuery cancels after 10 ms: on a loaded machine the cancel
# can come before the query reaches the server, and the test fails directly too). A difference
# sluice makes comes back in every rerun; a panic is never run again.
RERUNS = 2


def top_name(name):
    return name.split("/")[0]


def differing(direct, through):
    """The top-level tests whose results differ between the two runs."""
    d_pass, d_fail, _ = direct
    s_pass, s_fail, _ = through
    return {top_name(n) for n in (d_fail ^ s_fail) | (d_pass ^ s_pass)}


def ran(results):
    """The top-level tests a run reports."""
    return {top_name(n) for n in results[0] | results[1]}


def with_rerun(first, again, tops):
    """first's results, those of the tests in tops replaced by again's."""
    def keep(names):
        return {n for n in names if top_name(n) not in tops}
    return (keep(first[0]) | again[0], keep(first[1]) | again[1],
            first[2] + "\n--- rerun of " + " ".join(sorted(tops)) + " ---\n" + again[2])


# A suite's direct results depend on PostgreSQL and the suite, not on sluice: `make check` runs
# the integration suite twice (the second time under ASan+UBSan), and the second run takes them
# from the first instead of running each suite directly again. SLUICE_DRIVER_DIRECT names a
# directory where the final direct results (reruns included) are written; with
# SLUICE_DRIVER_DIRECT_REUSE=1, results found there are used instead of a direct run. A rerun of
# differing tests still runs both ways.
def direct_path(name, user):
    d = os.environ.get("SLUICE_DRIVER_DIRECT")
    return os.path.join(d, f"{name}-{user}.json") if d else None


def direct_saved(name, user):
    path = direct_path(name, user)
    if not path or os.environ.get("SLUICE_DRIVER_DIRECT_REUSE") != "1" or not os.path.exists(path):
        return None
    with open(path) as f:
        j = json.load(f)
    return (set(j["pass"]), set(j["fail"]), j["out"] + f"\n(direct results of an earlier run: {path})")


def direct_save(name, user, results):
    path = direct_path(name, user)
    if not path:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"pass": sorted(results[0]), "fail": sorted(results[1]),
                   "out": results[2][-200000:]}, f)
    os.replace(path + ".tmp", path)


def run_both_ways(spawn_sluice, pg, certs, name, run, user, least):
    """The suite run(params, cache) directly and through a sluice of its own, as user."""
    cache = GOCACHE
    sp, ep = suite_sluice(spawn_sluice, pg, name)
    direct_p, through_p = direct_params(pg, certs, sp, user), ep.params("shop", user)
    saved = direct_saved(name, user)
    direct = saved or run(direct_p, cache)
    through = run(through_p, cache)
    for _ in range(RERUNS):
        tops = differing(direct, through)
        if not tops or "(panic)" in tops or len(direct[0]) <= least:
            break
        only = "^(" + "|".join(re.escape(t) for t in sorted(tops)) + ")$"
        direct_again, through_again = run(direct_p, cache, only), run(through_p, cache, only)
        if not (tops <= ran(direct_again) and tops <= ran(through_again)):
            break  # a test the pattern did not find: the first results are compared
        direct = with_rerun(direct, direct_again, tops)
        through = with_rerun(through, through_again, tops)
    if not saved and len(direct[0]) > least:
        direct_save(name, user, direct)
    assert_same(direct, through, least)
    ep.assert_alive()


def in_own_schema(pg, schema, run):
    """run() with schema created for app_scram (the shop target's role) and dropped after."""
    c = pg.admin(dbname="shop")
    c.autocommit = True
    cur = c.cursor()
    cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; "
                f"CREATE SCHEMA {schema} AUTHORIZATION app_scram")
    try:
        run()
    finally:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        c.close()
