"""test_pgbench.py: pgbench -i through sluice, then short TPC-B runs in the simple, extended
and prepared query modes, each with zero failed transactions."""

import re
import subprocess

import pytest


@pytest.fixture(scope="module")
def initialized(_endpoint):
    r = subprocess.run(["pgbench", "-i", "-s", "1", "-q"], env=_endpoint.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"pgbench -i failed:\n{r.stdout}\n{r.stderr}"
    yield
    c = _endpoint.pg.admin("shop")
    c.autocommit = True
    c.cursor().execute("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, "
                       "pgbench_tellers, pgbench_history")
    c.close()


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_mode(sluice, initialized, mode):
    r = subprocess.run(["pgbench", "-n", "-M", mode, "-t", "200", "-c", "4", "-j", "2"],
                       env=sluice.env(), capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"pgbench -M {mode} failed ({r.returncode}):\n{out}"
    assert "number of transactions actually processed: 800/800" in out, out
    m = re.search(r"number of failed transactions: (\d+)", out)
    assert m and m.group(1) == "0", out
    # the writes really happened upstream
    c = sluice.connect()
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM pgbench_history")
    assert cur.fetchone()[0] >= 800
