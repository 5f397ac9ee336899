"""test_pgdump.py: pg_dump of `shop` through sluice equals one taken directly from
PostgreSQL (same role), plain and custom formats (after dropping the random \\restrict key
lines newer pg_dump releases write)."""

import subprocess


def dump(env, *args):
    r = subprocess.run(["pg_dump", "--no-sync"] + list(args), env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


def normalize(text):
    return [l for l in text.decode().splitlines()
            if not l.startswith(("\\restrict", "\\unrestrict"))]


def direct_env(sluice):
    import os

    e = dict(os.environ)
    e.update(PGHOST="127.0.0.1", PGPORT=str(sluice.pg.port), PGDATABASE="shop", PGUSER="app_scram",
             PGPASSWORD=sluice.pg.passwords["app_scram"], PGSSLMODE="disable")
    return e


def test_pg_dump_plain_equal(sluice):
    through = normalize(dump(sluice.env(), "-d", sluice.params()["dbname"]))
    direct = normalize(dump(direct_env(sluice), "-d", "shop"))
    assert any("CREATE TABLE public.customers" in l for l in direct)
    assert any(l.startswith("COPY public.orders") for l in direct)
    assert through == direct


def test_pg_dump_custom_format_restores_same(sluice, tmp_path):
    """Custom format (binary TOC, COPY data) through sluice, listed with pg_restore."""
    tmp_path.chmod(0o755)
    out = tmp_path / "shop.dump"
    r = subprocess.run(["pg_dump", "--no-sync", "-Fc", "-f", str(out)], env=sluice.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["pg_restore", "-f", "-", str(out)], capture_output=True, timeout=60)
    assert r.returncode == 0
    restored = normalize(r.stdout)
    direct = normalize(dump(direct_env(sluice), "-d", "shop"))
    assert restored == direct
