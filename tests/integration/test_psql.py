"""test_psql.py: psql through sluice: -c, -f with a script, and \\copy in both directions."""

import os
import subprocess


def psql(sluice, *args, stdin=None, **kw):
    r = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t"] + list(args),
        env=sluice.env(**kw), capture_output=True, text=True, input=stdin, timeout=60,
    )
    assert r.returncode == 0, f"psql {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_psql_command(sluice):
    out = psql(sluice, "-c", "SELECT count(*) FROM customers", "-c", "SELECT 40 + 2")
    assert out.split() == ["50", "42"]


def test_psql_error_exit_status(sluice):
    r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT * FROM no_such_table"],
                       env=sluice.env(), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert 'relation "no_such_table" does not exist' in r.stderr


def test_psql_file_and_copy(sluice, tmp_path):
    tmp_path.chmod(0o755)
    src = tmp_path / "in.csv"
    rows = [f"{i},name {i},\"quoted, {i}\"" for i in range(1, 2001)]
    src.write_text("\n".join(rows) + "\n")
    out_file = tmp_path / "out.csv"
    script = tmp_path / "script.sql"
    script.write_text(
        f"""
DROP TABLE IF EXISTS psql_copy;
CREATE TABLE psql_copy (id int PRIMARY KEY, name text, note text);
\\copy psql_copy FROM '{src}' WITH (FORMAT csv)
BEGIN;
UPDATE psql_copy SET name = upper(name) WHERE id % 2 = 0;
COMMIT;
SELECT count(*), sum(id) FROM psql_copy;
\\copy (SELECT id, lower(name), note FROM psql_copy ORDER BY id) TO '{out_file}' WITH (FORMAT csv)
DROP TABLE psql_copy;
"""
    )
    out = psql(sluice, "-f", str(script))
    assert out.strip() == "2000|2001000"
    assert out_file.read_text().splitlines() == rows


def test_psql_stdin_multiple_statements(sluice):
    out = psql(sluice, stdin="SELECT 1; SELECT 'two';\nSELECT current_database() IS NOT NULL;\n")
    assert out.split() == ["1", "two", "t"]
