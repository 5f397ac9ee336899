"""test_bench_report.py: bench/report.py's verdict on the audit target (audit on against off,
at least 0.90 of the TPS) from a raw.tsv written here: "met" only when the whole 90% interval
of the per-round ratios' median is at or above the target, "NOT met" when it is all below,
"undecided" when it straddles it."""

import os
import subprocess
import sys

REPORT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "report.py")


def audit_verdicts(tmp_path, rounds):
    """rounds: per round, (TPS with audit on, TPS off) of each workload. Returns
    {workload: (its audit line's fields)}."""
    raw = tmp_path / "raw.tsv"
    with open(raw, "w") as f:
        for w, pairs in rounds.items():
            for i, (on, off) in enumerate(pairs, 1):
                f.write(f"{w}\tsluice\t{i}\t{on}\t1.0\n{w}\tnoaudit\t{i}\t{off}\t1.0\n")
    out = subprocess.run([sys.executable, REPORT, str(raw)], capture_output=True, text=True,
                         check=True).stdout
    lines = out[out.index("Audit: audit on"):].splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["workload"])
    lines = lines[head + 1:head + 1 + len(rounds)]
    return {ln.split()[0]: ln.split() for ln in lines}


def test_audit_verdict_follows_the_interval(tmp_path):
    got = audit_verdicts(tmp_path, {
        "steady-met": [(95, 100), (96, 100), (94, 100), (95, 100), (95, 100), (96, 100)],
        "steady-missed": [(85, 100), (84, 100), (86, 100), (85, 100), (85, 100), (84, 100)],
        "noisy": [(80, 100), (99, 100), (85, 100), (97, 100), (88, 100), (93, 100)],
        "two-rounds": [(95, 100), (96, 100)],
        # make bench's select-simple rounds at ed85194 (2026-11-28): rounds differ by up to
        # 35% in TPS; their pairs keep 0.83..0.97
        "drifting": [(11096, 11889), (13581, 14699), (14433, 15661), (14611, 16710),
                     (15084, 15546), (14982, 15929), (12572, 13263), (12472, 13047),
                     (13536, 16389), (14574, 16080), (15155, 15852), (15080, 16050)],
    })
    assert got["steady-met"][-1] == "met", got
    assert got["steady-missed"][-2:] == ["NOT", "met"], got
    assert got["noisy"][-1] == "undecided", got
    assert got["two-rounds"][-1] == "n/a", got  # too few rounds for an interval
    lo, hi = (float(x) for x in got["steady-met"][7].split(".."))
    assert 0.90 <= lo <= 0.95 <= hi <= 0.97, got
    # the verdict is on the per-round pairs (0.906..0.956 here), not on the ratio of the
    # medians, whose interval (0.867..0.948) the drift between rounds widens
    assert got["drifting"][-1] == "met", got
    assert got["drifting"][7] == "0.906..0.956", got
    assert got["drifting"][5] == "0.867..0.948", got
