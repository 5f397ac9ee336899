#!/usr/bin/python3
"""idle_conns.py: memory per idle connection of a proxy, for bench/run.sh.

Reads the proxy's VmRSS from /proc/PID/status, opens N connections through it with psycopg2
and holds them idle, reads VmRSS again, then runs one small query on every connection (so that
buffers have been used) and reads it a third time. Optionally counts the server backends the
proxy opened for them (--pg-dsn, a direct connection to PostgreSQL). Prints one line of key=value pairs.
The first reading is taken after --warmup connections have been opened and used, so the figure
is the marginal cost of one more idle connection.
Secrets come in the DSNs' environment (PGPASSWORD), never on the command line.
"""
import argparse
import os
import sys
import time

import psycopg2


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def count_backends(args):
    """Client backends on the server, not counting the one asking; -1 without --pg-dsn."""
    if not args.pg_dsn:
        return -1
    d = psycopg2.connect(args.pg_dsn, password=os.environ.get(args.pg_password_env, ""))
    try:
        with d.cursor() as cur:
            cur.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
            return cur.fetchone()[0]
    finally:
        d.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True, help="proxy process to measure")
    ap.add_argument("--dsn", required=True, help="libpq DSN through the proxy (no password)")
    ap.add_argument("--password-env", default="PGPASSWORD", help="env var holding the secret")
    ap.add_argument("--pg-dsn", help="direct DSN used to count upstream backends")
    ap.add_argument("--pg-password-env", default="PGAPP_PASSWORD")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before measuring")
    ap.add_argument("--warmup", type=int, default=50,
                    help="connections opened (and used once) before the first reading, so that "
                         "one-time start-up costs (per-thread caches, library state) are not "
                         "charged to each connection")
    args = ap.parse_args()

    pw = os.environ.get(args.password_env, "")
    warm = []
    for _ in range(args.warmup):
        c = psycopg2.connect(args.dsn, password=pw)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        warm.append(c)
    time.sleep(args.settle)
    backends_before = count_backends(args)
    before = rss_kib(args.pid)
    conns = []
    t0 = time.monotonic()
    try:
        for i in range(args.n):
            c = psycopg2.connect(args.dsn, password=pw)
            c.autocommit = True
            conns.append(c)
        connect_s = time.monotonic() - t0
        time.sleep(args.settle)
        idle = rss_kib(args.pid)
        for c in conns:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        time.sleep(args.settle)
        used = rss_kib(args.pid)
        backends = count_backends(args) - backends_before
    except Exception as e:  # report how far it got
        print(f"error after {len(conns)} connections: {e}".strip(), file=sys.stderr)
        sys.exit(1)
    finally:
        for c in conns + warm:
            c.close()
    n = args.n
    print(
        f"connections={n} connect_seconds={connect_s:.1f} rss_before_kib={before} "
        f"rss_idle_kib={idle} rss_after_query_kib={used} "
        f"per_conn_idle_bytes={(idle - before) * 1024 // n} "
        f"per_conn_after_query_bytes={(used - before) * 1024 // n} new_upstream_backends={backends}"
    )


if __name__ == "__main__":
    main()
