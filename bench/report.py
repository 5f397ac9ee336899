#!/usr/bin/python3
"""report.py: turn bench/run.sh's raw measurements into the results tables.

  report.py RAW.tsv [--result-bytes N]

Input: a TSV file, one line per pgbench run: workload, mode, round, TPS, average latency in ms
("nan" when the run failed), and (optional, since 2026-11-26) the CPU per transaction in µs
of the proxy process (all its threads) and of the whole machine (busy time: pgbench,
PostgreSQL, the proxy and the kernel's network work), "nan" when unknown. Modes: direct, pgbouncer, sluice (masking and audit on, identity
`bench`, masked), sluice-raw (the same process, identity `bench-raw` in masking.unmask),
nomask (a sluice with `masking: { enabled: false }`), noaudit (a sluice with
`audit: { enabled: false }`), relay (SLUICE_RELAY_BIN). --result-bytes: the text size of one
large-pii result (the sum of its values), to turn its TPS into MB/s.

Output on stdout:
  1. per workload the median TPS and latency of direct, PgBouncer and sluice, and the ratios
     sluice/direct and sluice/pgbouncer of the median TPS;
  2. masking: the large-pii result (100,000 rows of email, SSN, card, note) through each mode
     with the target masked/PgBouncer >= 0.80, and -S with masking on against off (target:
     within 3%);
  3. audit: audit on against off on -S simple, -S prepared and TPC-B (target: at most 10%),
     and the CPU each spent per transaction: sluice's own, and the machine's;
  4. write latency (workload write-latency: one single-row UPDATE, one client): average
     latency direct, PgBouncer, sluice without audit and with audit (each write parked until
     its audit event is committed), and what that wait adds per write;
  5. the relay comparison when a relay build was measured.
Ratios are of the medians; "rounds" gives the lowest and highest ratio of the same round's
two runs (the modes alternate inside a round), a view of the noise; "pairs" (audit) is the
median of those per-round ratios. The verdicts use the ratio of the medians, but for the
audit's: a round's two runs are back to back (in alternating order; bench/run.sh runs
sluice between nomask and noaudit), so their ratio cancels
what moves the whole machine between rounds (on the 2-core test machine a round's TPS can
differ from the next one's by 40%), which the ratio of the medians mixes into its interval.
The audit's verdict is on the pairs: an interval that holds their median with probability at
least 90% whatever the ratios' distribution (two of the sorted ratios, picked by the binomial
distribution: with 12 rounds the 3rd smallest and 3rd largest, 96%; none below 5 rounds),
"met" only when the whole interval is at or above the target, "NOT met" when it is all
below, and "undecided" when it straddles the target (more rounds narrow it). The table also
gives the ratio of the medians with a 90% bootstrap interval (each resample drawing whole
rounds, both modes of a round together), the verdict before 2026-11-28 (a percentile
bootstrap of a median covers less than it says with few rounds).
"""
import math
import random
import statistics
import sys

MB = 1e6


def median(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, spec):
    width = int(spec.split(".")[0])
    return format("-", f">{width}") if math.isnan(x) else format(x, spec)


def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


class Runs:
    def __init__(self, path):
        self.order, self.by = [], {}
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                f = line.rstrip("\n").split("\t")
                w, mode, rnd = f[:3]
                nums = [float(x) for x in f[3:]] + [float("nan")] * (7 - len(f))
                if w not in self.order:
                    self.order.append(w)
                self.by.setdefault((w, mode), {})[rnd] = tuple(nums[:4])

    def has(self, w, mode):
        return (w, mode) in self.by

    def tps(self, w, mode):
        return median([r[0] for r in self.by.get((w, mode), {}).values()])

    def lat(self, w, mode):
        return median([r[1] for r in self.by.get((w, mode), {}).values()])

    def proxy_cpu(self, w, mode):
        """Median µs of the proxy's CPU per transaction."""
        return median([r[2] for r in self.by.get((w, mode), {}).values()])

    def machine_cpu(self, w, mode):
        """Median µs of the machine's busy CPU per transaction."""
        return median([r[3] for r in self.by.get((w, mode), {}).values()])

    def round_ratios(self, w, a, b):
        """The per-round ratios a/b (the two runs of a round are back to back)."""
        ra, rb = self.by.get((w, a), {}), self.by.get((w, b), {})
        rs = [ratio(ra[k][0], rb[k][0]) for k in ra if k in rb]
        return [r for r in rs if not math.isnan(r)]

    def ratio_ci(self, w, a, b, level=0.90, resamples=2000):
        """A bootstrap interval for the ratio of the median TPS of modes a and b: rounds
        drawn with replacement, each with both its runs. (nan, nan) with fewer than 3 rounds."""
        ra, rb = self.by.get((w, a), {}), self.by.get((w, b), {})
        rounds = [k for k in ra if k in rb and not math.isnan(ra[k][0]) and not math.isnan(rb[k][0])]
        if len(rounds) < 3:
            return (float("nan"), float("nan"))
        rnd = random.Random(1)  # the same raw data gives the same interval
        rs = []
        for _ in range(resamples):
            pick = [rnd.choice(rounds) for _ in rounds]
            rs.append(statistics.median(ra[k][0] for k in pick) / statistics.median(rb[k][0] for k in pick))
        rs.sort()
        tail = (1 - level) / 2
        return (rs[int(tail * (resamples - 1))], rs[int((1 - tail) * (resamples - 1))])

    def pair_ci(self, w, a, b, level=0.90):
        """An interval for the median of the per-round ratios a/b (each round's two runs are
        back to back) that holds it with probability at least `level` whatever their
        distribution: the k-th smallest and k-th largest ratio, k the largest with
        P(Binomial(n, 1/2) < k) <= (1 - level) / 2 (12 rounds: the 3rd of each end, 96%).
        (nan, nan) when no such k exists (fewer than 5 rounds at 90%)."""
        rs = sorted(self.round_ratios(w, a, b))
        n, tail, below, k = len(rs), (1 - level) / 2, 0.0, 0
        while k < n and below + math.comb(n, k) / 2 ** n <= tail:
            below += math.comb(n, k) / 2 ** n
            k += 1
        if k == 0:
            return (float("nan"), float("nan"))
        return (rs[k - 1], rs[n - k])

    def round_range(self, w, a, b):
        """Lowest and highest per-round ratio a/b."""
        rs = self.round_ratios(w, a, b)
        return (min(rs), max(rs)) if rs else (float("nan"), float("nan"))


def verdict(r, target):
    if math.isnan(r):
        return "n/a"
    return "met" if r >= target else "NOT met"


def verdict_ci(lo_hi, target):
    """met when the interval is at or above target, NOT met when below, else undecided."""
    lo, hi = lo_hi
    if math.isnan(lo):
        return "n/a"
    return "met" if lo >= target else "NOT met" if hi < target else "undecided"


def rng(lo_hi, digits=2):
    lo, hi = lo_hi
    return "-" if math.isnan(lo) else f"{lo:.{digits}f}..{hi:.{digits}f}"


def main(argv):
    path = argv[0]
    result_bytes = 0
    if "--result-bytes" in argv:
        result_bytes = int(argv[argv.index("--result-bytes") + 1])
    R = Runs(path)

    head = (
        f"{'workload':<18} {'TPS direct':>11} {'pgbouncer':>10} {'sluice':>10}  "
        f"{'lat ms direct':>13} {'pgbouncer':>9} {'sluice':>8}  {'sluice/direct':>13} {'sluice/pgb':>10}"
    )
    print(head)
    print("-" * len(head))
    for w in R.order:
        if not R.has(w, "sluice"):
            continue
        t = {m: R.tps(w, m) for m in ("direct", "pgbouncer", "sluice")}
        lt = {m: R.lat(w, m) for m in ("direct", "pgbouncer", "sluice")}
        print(
            f"{w:<18} {fmt(t['direct'], '11.0f')} {fmt(t['pgbouncer'], '10.0f')} "
            f"{fmt(t['sluice'], '10.0f')}  {fmt(lt['direct'], '13.3f')} "
            f"{fmt(lt['pgbouncer'], '9.3f')} {fmt(lt['sluice'], '8.3f')}  "
            f"{fmt(ratio(t['sluice'], t['direct']), '13.2f')} "
            f"{fmt(ratio(t['sluice'], t['pgbouncer']), '10.2f')}"
        )
    print("(sluice = masking and audit on, identity masked; on large-pii every sensitive value "
          "is masked)")
    cpu_ws = [w for w in R.order if not math.isnan(R.proxy_cpu(w, "pgbouncer"))
              and not math.isnan(R.proxy_cpu(w, "sluice"))]
    if cpu_ws:
        print()
        print("Proxy CPU per transaction, µs (medians; the proxy process, all its threads, user and "
              "system):")
        print(f"  {'workload':<18} {'pgbouncer':>9} {'sluice':>8} {'noaudit':>8} {'sluice/pgb':>10}")
        for w in cpu_ws:
            pgb, sl = R.proxy_cpu(w, "pgbouncer"), R.proxy_cpu(w, "sluice")
            print(f"  {w:<18} {fmt(pgb, '9.1f')} {fmt(sl, '8.1f')} "
                  f"{fmt(R.proxy_cpu(w, 'noaudit'), '8.1f')} {fmt(ratio(sl, pgb), '10.2f')}")

    # ---- masking
    if "large-pii" in R.order or any(R.has(w, "nomask") for w in R.order):
        print()
        print("Masking")
    if "large-pii" in R.order:
        w = "large-pii"
        print(f"  large-pii: SELECT * FROM pii, 100,000 rows"
              + (f" ({result_bytes / MB:.1f} MB of values)" if result_bytes else "")
              + ", pgbench -c 2 -j 2")
        print(f"  {'mode':<34} {'results/s':>9} {'rows/s':>10} {'MB/s':>7} {'lat ms':>8} "
              f"{'x pgbouncer':>11} {'rounds':>11}")
        names = [("direct", "direct"), ("pgbouncer", "PgBouncer (pass-through)"),
                 ("sluice-raw", "sluice, unmasked identity"),
                 ("sluice", "sluice, masked identity")]
        pgb = R.tps(w, "pgbouncer")
        for m, label in names:
            if not R.has(w, m):
                continue
            t = R.tps(w, m)
            mbs = t * result_bytes / MB if result_bytes else float("nan")
            print(f"  {label:<34} {fmt(t, '9.2f')} {fmt(t * 100000, '10.0f')} {fmt(mbs, '7.1f')} "
                  f"{fmt(R.lat(w, m), '8.1f')} {fmt(ratio(t, pgb), '11.2f')} "
                  f"{rng(R.round_range(w, m, 'pgbouncer')) if m != 'pgbouncer' else '':>11}")
        r = ratio(R.tps(w, "sluice"), pgb)
        print(f"  target masked sluice >= 0.80 x PgBouncer: {fmt(r, '4.2f')} -> {verdict(r, 0.80)}")
        if R.has(w, "sluice-raw"):
            print(f"  masked/unmasked sluice: "
                  f"{fmt(ratio(R.tps(w, 'sluice'), R.tps(w, 'sluice-raw')), '4.2f')} "
                  f"(rounds {rng(R.round_range(w, 'sluice', 'sluice-raw'))})")
    ws = [w for w in R.order if R.has(w, "nomask") and R.has(w, "sluice")]
    if ws:
        print("  pgbench -S, no sensitive columns: masking on (sluice) vs masking.enabled false "
              "(nomask), both with audit on")
        print(f"  {'workload':<18} {'TPS on':>9} {'TPS off':>9} {'on/off':>7} {'rounds':>11}  "
              f"target >= 0.97")
        for w in ws:
            on, off = R.tps(w, "sluice"), R.tps(w, "nomask")
            r = ratio(on, off)
            print(f"  {w:<18} {fmt(on, '9.0f')} {fmt(off, '9.0f')} {fmt(r, '7.3f')} "
                  f"{rng(R.round_range(w, 'sluice', 'nomask')):>11}  {verdict(r, 0.97)}")

    # ---- audit
    ws = [w for w in R.order if R.has(w, "noaudit") and R.has(w, "sluice") and w != "write-latency"]
    if ws:
        print()
        print("Audit: audit on (sluice) vs audit.enabled false (noaudit), both with masking on")
        print("  (on/off: ratio of the median TPS, with its 90% interval; pairs: median of the")
        print("  per-round ratios, with its 90% interval, which the verdict uses)")
        print(f"  {'workload':<18} {'TPS on':>9} {'TPS off':>9} {'PgBouncer':>9} {'on/off':>7} "
              f"{'90% CI':>12} {'pairs':>6} {'90% CI':>12} {'rounds':>11} {'on/pgb':>7} "
              f"{'off/pgb':>7}  target pairs >= 0.90")
        for w in ws:
            on, off, pgb = R.tps(w, "sluice"), R.tps(w, "noaudit"), R.tps(w, "pgbouncer")
            r = ratio(on, off)
            pairs = median(R.round_ratios(w, "sluice", "noaudit"))
            ci = R.ratio_ci(w, "sluice", "noaudit")
            pci = R.pair_ci(w, "sluice", "noaudit")
            print(f"  {w:<18} {fmt(on, '9.0f')} {fmt(off, '9.0f')} {fmt(pgb, '9.0f')} "
                  f"{fmt(r, '7.3f')} {rng(ci, 3):>12} {fmt(pairs, '6.3f')} {rng(pci, 3):>12} "
                  f"{rng(R.round_range(w, 'sluice', 'noaudit')):>11} "
                  f"{fmt(ratio(on, pgb), '7.2f')} {fmt(ratio(off, pgb), '7.2f')}  "
                  f"{verdict_ci(pci, 0.90)}")
        if any(not math.isnan(R.proxy_cpu(w, "sluice")) for w in ws):
            print("  CPU per transaction, µs (medians): sluice's process with audit on and off, the")
            print("  difference (the audit's own CPU) and its share of the machine's busy CPU per")
            print("  transaction with audit on; then the machine's busy CPU on and off")
            print(f"  {'workload':<18} {'sluice on':>9} {'off':>7} {'audit':>7} {'share':>6} "
                  f"{'machine on':>10} {'off':>7} {'on/off':>7}")
            for w in ws:
                pon, poff = R.proxy_cpu(w, "sluice"), R.proxy_cpu(w, "noaudit")
                mon, moff = R.machine_cpu(w, "sluice"), R.machine_cpu(w, "noaudit")
                print(f"  {w:<18} {fmt(pon, '9.1f')} {fmt(poff, '7.1f')} {fmt(pon - poff, '7.1f')} "
                      f"{fmt(ratio(pon - poff, mon), '6.3f')} {fmt(mon, '10.1f')} {fmt(moff, '7.1f')} "
                      f"{fmt(ratio(mon, moff), '7.3f')}")

    # ---- write latency
    w = "write-latency"
    if w in R.order:
        print()
        print("Write latency: one single-row UPDATE per transaction, pgbench -c 1 -M simple "
              "(bench/update.sql)")
        print(f"  {'mode':<42} {'lat ms':>8} {'TPS':>8} {'rounds lat ms':>15}")
        names = [("direct", "direct"), ("pgbouncer", "PgBouncer"),
                 ("noaudit", "sluice, audit off"),
                 ("sluice", "sluice, audit on (event journaled first)")]
        for m, label in names:
            if not R.has(w, m):
                continue
            lats = [r[1] for r in R.by[(w, m)].values() if not math.isnan(r[1])]
            lr = f"{min(lats):.3f}..{max(lats):.3f}" if lats else "-"
            print(f"  {label:<42} {fmt(R.lat(w, m), '8.3f')} {fmt(R.tps(w, m), '8.0f')} {lr:>15}")
        on, off = R.lat(w, "sluice"), R.lat(w, "noaudit")
        if not math.isnan(on) and not math.isnan(off):
            print(f"  durable audit cost: +{on - off:.3f} ms per write "
                  f"(audit on/off latency {fmt(ratio(on, off), '4.2f')})")

    # ---- relay
    rows = [w for w in R.order if R.has(w, "relay") and R.has(w, "sluice")]
    if rows:
        print()
        print("relay = SLUICE_RELAY_BIN (another sluice build), same run:")
        print(f"{'workload':<18} {'TPS relay':>10} {'sluice/relay':>13} {'relay/pgb':>10}")
        for w in rows:
            t = R.tps(w, "relay")
            print(f"{w:<18} {fmt(t, '10.0f')} {fmt(ratio(R.tps(w, 'sluice'), t), '13.2f')} "
                  f"{fmt(ratio(t, R.tps(w, 'pgbouncer')), '10.2f')}")


if __name__ == "__main__":
    main(sys.argv[1:])
