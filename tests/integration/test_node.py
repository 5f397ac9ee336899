"""test_node.py: node-postgres (`pg` from npm) through sluice: node/client.js does a
parameterized query, named prepared statements, transactions (commit, rollback, failed) and
LISTEN/NOTIFY with processId checks. Installs node/node_modules on first use."""

import os
import subprocess

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def ensure_node_modules():
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pg")):
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm install failed:\n{r.stdout}\n{r.stderr}"


def test_node_postgres(sluice):
    ensure_node_modules()
    for user in ("alice@corp.com", "etl"):  # SCRAM and cleartext client auth
        r = subprocess.run(["node", "client.js"], cwd=NODE_DIR, env=sluice.env(user=user),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "OK", \
            f"node client as {user} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
