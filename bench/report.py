#!/usr/bin/python3
"""report.py: turn bench/run.sh's raw measurements into the results table.

Input: a TSV file, one line per pgbench run: workload, mode (direct|pgbouncer|sluice), round,
TPS, average latency in ms ("nan" when the run failed). Output on stdout: per workload the
median TPS and median latency of each mode, and the ratios sluice/direct and
sluice/pgbouncer of the median TPS.
"""
import math
import statistics
import sys

MODES = ("direct", "pgbouncer", "sluice", "relay")


def median(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, spec):
    width = int(spec.split(".")[0])
    return format("-", f">{width}") if math.isnan(x) else format(x, spec)


def main(path):
    order, runs = [], {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            w, mode, _rnd, tps, lat = line.rstrip("\n").split("\t")
            if w not in order:
                order.append(w)
            runs.setdefault((w, mode), []).append((float(tps), float(lat)))
    head = (
        f"{'workload':<18} {'TPS direct':>11} {'pgbouncer':>10} {'sluice':>10}  "
        f"{'lat ms direct':>13} {'pgbouncer':>9} {'sluice':>8}  {'sluice/direct':>13} {'sluice/pgb':>10}"
    )
    print(head)
    print("-" * len(head))
    relay_rows = []
    for w in order:
        tps = {m: median([r[0] for r in runs.get((w, m), [])]) for m in MODES}
        lat = {m: median([r[1] for r in runs.get((w, m), [])]) for m in MODES}
        r_d = tps["sluice"] / tps["direct"] if tps["direct"] else float("nan")
        r_p = tps["sluice"] / tps["pgbouncer"] if tps["pgbouncer"] else float("nan")
        print(
            f"{w:<18} {fmt(tps['direct'], '11.0f')} {fmt(tps['pgbouncer'], '10.0f')} "
            f"{fmt(tps['sluice'], '10.0f')}  {fmt(lat['direct'], '13.3f')} "
            f"{fmt(lat['pgbouncer'], '9.3f')} {fmt(lat['sluice'], '8.3f')}  "
            f"{fmt(r_d, '13.2f')} {fmt(r_p, '10.2f')}"
        )
        if tps["relay"] == tps["relay"] and tps["relay"]:  # a relay build was measured too
            relay_rows.append((w, tps["relay"], tps["sluice"] / tps["relay"],
                               tps["relay"] / tps["pgbouncer"] if tps["pgbouncer"] else float("nan")))
    if relay_rows:
        print()
        print("relay = SLUICE_RELAY_BIN (the same proxy without statement inspection), same run:")
        print(f"{'workload':<18} {'TPS relay':>10} {'sluice/relay':>13} {'relay/pgb':>10}")
        for w, t, r, rp in relay_rows:
            print(f"{w:<18} {fmt(t, '10.0f')} {fmt(r, '13.2f')} {fmt(rp, '10.2f')}")


if __name__ == "__main__":
    main(sys.argv[1])
