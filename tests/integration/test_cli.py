"""test_cli.py: the sluice command line: version, hash-token (a real SCRAM-SHA-256 verifier of
the secret read from stdin, salted randomly, never echoing the secret), and check (0 for a
good config, 2 with FILE:LINE:COL: error: for a bad one)."""

import re
import subprocess

import pytest

import pgwire


@pytest.fixture
def cli(sluice_bin, sluice_only):
    def run(*args, input=None, env=None):
        return subprocess.run([sluice_bin] + list(args), input=input, capture_output=True,
                              text=True, timeout=30, env=env)
    return run


def test_version(cli):
    r = cli("version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_help_of_each_command(cli):
    """--help prints the command's usage on stdout and succeeds; an unknown option is a usage
    error (exit 2) on stderr."""
    for args, word in [(["--help"], "sluice serve"), (["audit", "--help"], "sluice audit verify"),
                       (["audit", "search", "-h"], "sluice audit search"),
                       (["approvals", "--help"], "sluice approvals")]:
        r = cli(*args)
        assert r.returncode == 0 and word in r.stdout, (args, r.returncode, r.stdout, r.stderr)
    r = cli("audit", "search", "--bogus")
    assert r.returncode == 2 and "usage:" in r.stderr, (r.returncode, r.stderr)


def test_hash_token(cli):
    secret = "s3cret-token-\u00e9-value"
    a = cli("hash-token", input=secret + "\n")
    b = cli("hash-token", input=secret + "\n")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    va, vb = a.stdout.strip(), b.stdout.strip()
    assert va.startswith("SCRAM-SHA-256$") and len(va.splitlines()) == 1, va
    assert va != vb, "hash-token must use a random salt"
    assert secret not in a.stdout + a.stderr
    assert pgwire.scram_verifier_matches(va, secret), va
    assert not pgwire.scram_verifier_matches(va, secret + "x")


def test_check_good_config(cli, sluice_proc):
    import os

    env = dict(os.environ)
    env.update(sluice_proc.config.env())
    r = cli("check", "-c", sluice_proc.path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_bad_config(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: { postgres: 127.0.0.1:7999 }\ntargets: []\nno_such_key: 1\n")
    r = cli("check", "-c", str(bad))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert re.search(re.escape(str(bad)) + r":3:\d+: error: .*no_such_key", out), out
