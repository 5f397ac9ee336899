"""test_driver_suites.py: a driver's own test suite, run through sluice and directly against
PostgreSQL in the same test; a client must not be able to tell sluice from the server.

lib/pq (Go; Debian golang-github-lib-pq-dev ships its sources and tests) tests the simple and
extended protocol, COPY FROM STDIN, LISTEN/NOTIFY with the backend's pid, CancelRequest,
errors and their fields, types, startup parameters and reconnects. Through sluice it runs as
alice (human, every guardrail overridden by the harness policy, results unmasked): the
comparison is of the wire, not of policy. The set of failing tests must be the same both ways
(as root, lib/pq's TestHasCorrectRootGroupPermissions fails either way: it checks file modes),
and nearly all tests must pass.
"""
import os
import re
import shutil
import subprocess

import pytest

import conftest
from conftest import ALICE

LIBPQ = "/usr/share/gocode/src/github.com/lib/pq"


def run_libpq(params, cache):
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=cache,
               GOFLAGS="", PGHOST=params["host"], PGPORT=str(params["port"]),
               PGUSER=params["user"], PGPASSWORD=params["password"],
               PGDATABASE=params["dbname"], PGSSLMODE="disable", PGCONNECT_TIMEOUT="15")
    for k in ("PGAPPNAME", "PGOPTIONS", "PGSERVICE", "PGSSLROOTCERT"):
        env.pop(k, None)
    r = subprocess.run(["go", "test", "-count=1", "-v", "github.com/lib/pq"], env=env,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    passed = set(re.findall(r"^\s*--- PASS: (\S+)", out, re.M))
    failed = set(re.findall(r"^\s*--- FAIL: (\S+)", out, re.M))
    if "panic:" in out:
        failed.add("(panic)")
    return passed, failed, out


def failure_text(out, names):
    """The lines of go test -v output that report the failing tests (their t.Errorf lines)."""
    keep, lines = False, []
    for line in out.splitlines():
        m = re.match(r"^\s*--- (FAIL|PASS|SKIP): (\S+)", line)
        if m:
            keep = m.group(1) == "FAIL" and m.group(2) in names
        elif re.match(r"^=== RUN", line):
            keep = False
        if keep:
            lines.append(line)
    return "\n".join(lines[:200])


def test_lib_pq_suite_passes_through_sluice_as_directly(sluice, sluice_only, pg, certs,
                                                        tmp_path):
    if not shutil.which("go") or not os.path.isdir(LIBPQ):
        pytest.fail("go or lib/pq's sources are missing: run `make deps` "
                    "(golang-go, golang-github-lib-pq-dev)", pytrace=False)
    cache = str(tmp_path / "gocache")
    ids, secrets = conftest.make_identities()
    direct = conftest.Endpoint(pg, secrets, pg.port, certs).params("shop", ALICE)
    d_pass, d_fail, d_out = run_libpq(direct, cache)
    s_pass, s_fail, s_out = run_libpq(sluice.params("shop", ALICE), cache)
    assert len(d_pass) > 150, f"the suite did not run directly:\n{d_out[-3000:]}"
    assert s_fail == d_fail, (
        f"through sluice failed {sorted(s_fail - d_fail)}, passed {sorted(d_fail - s_fail)} "
        f"that fail directly:\n{failure_text(s_out, s_fail - d_fail)}\n"
        f"directly:\n{failure_text(d_out, d_fail - s_fail)}")
    assert s_pass == d_pass, sorted(s_pass ^ d_pass)
    sluice.assert_alive()
