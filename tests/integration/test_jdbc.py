"""test_jdbc.py: the PostgreSQL JDBC driver (Debian libpostgresql-jdbc-java) through sluice.
java/SluiceJdbc.java is compiled at test time into a temporary directory and run as a SCRAM
user and as a cleartext token."""

import os
import subprocess

JAR = "/usr/share/java/postgresql.jar"
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java", "SluiceJdbc.java")


def test_jdbc(sluice, tmp_path):
    r = subprocess.run(["javac", "-cp", JAR, "-d", str(tmp_path), SRC], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for user in ("alice@corp.com", "etl"):
        p = sluice.params(user=user)
        url = f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}?sslmode=disable"
        r = subprocess.run(["java", "-cp", f"{tmp_path}:{JAR}", "SluiceJdbc", url, p["user"],
                            p["password"]], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == "OK", \
            f"JDBC as {user} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
