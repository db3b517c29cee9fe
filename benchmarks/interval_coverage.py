"""Coverage of the 95% intervals of FID, KID, precision and recall (drr.metrics.intervals) on
features drawn from known distributions.

    OMP_NUM_THREADS=1 python benchmarks/interval_coverage.py                      # N 1000 and 5000, 100 reps
    OMP_NUM_THREADS=1 python benchmarks/interval_coverage.py --n 1000 --scenario equal --d 2048

One reference set of M features is drawn once from Q = N(0, Λ) (Λ_jj = 1/(1 + j/8), a decaying
spectrum) and held fixed, as in the pipeline. Sample sets of N features come from the generator
P = N(0.15, 0.97² Λ) (``--scenario shifted``: every metric away from its bounds) or P = Q
(``--scenario equal``: FID and KID at their degenerate point, where half-sampling is widest).
For each N:

- the target E θ_N of each metric: the mean of its point estimate over ``--truth-sets``
  independent sample sets of N against this reference (its standard error is printed);
- ``--reps`` further independent sample sets, each scored as drr.metrics.score scores a row
  (torch-fidelity's FID, KID with 100 subsets of ``--kid-subset``, precision/recall with k = 3) and
  given its intervals by drr.metrics.intervals.row_intervals;
- printed per metric: how many intervals cover E θ_N, how many contain their own estimate, the mean
  half-width, and that over 1.96 × the standard deviation of the estimate over the truth sets
  (1: the width of an exact normal interval; above 1: conservative).

d is 64 by default (d = 2048 works, at about 10x the time at N = 5000). One core: about 15 minutes
for N = 1000 and 40 for N = 5000 with the defaults (docs/intervals.md has the figures).
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drr.metrics import intervals as iv  # noqa: E402
from drr.metrics import maths  # noqa: E402

METRICS = ("fid", "kid", "precision", "recall")


class Ref:
    def __init__(self, feats):
        self.features = feats
        self.mu, self.sigma = maths.stats(feats)


def spectrum(d: int) -> np.ndarray:
    return 1.0 / (1 + np.arange(d) / 8.0)


def draw(rng, n: int, d: int, scenario: str, generator: bool) -> np.ndarray:
    sd = np.sqrt(spectrum(d))
    if generator and scenario == "shifted":
        return (0.15 + rng.standard_normal((n, d)) * sd * 0.97).astype(np.float32)
    return (rng.standard_normal((n, d)) * sd).astype(np.float32)


def point_row(x, ref: Ref, k: int, kid_subset: int) -> dict:
    """A row's point estimates, as drr.metrics.score.score_phase computes them."""
    row = {"fid": maths.fid_from_stats(*maths.stats(x), ref.mu, ref.sigma)}
    (row["kid_mean"], row["kid_std"], _), _ = maths.kid(x, ref.features, kid_subset)
    (row["precision"], row["recall"]), _ = maths.precision_recall(x, ref.features, k, device="cpu")
    return row


def run(n: int, m: int, d: int, reps: int, truth_sets: int, k: int, kid_subset: int, scenario: str,
        seed: int) -> dict:
    ref = Ref(draw(np.random.default_rng([seed, 0]), m, d, scenario, False))
    t0 = time.perf_counter()
    truth = {mt: [] for mt in METRICS}
    for t in range(truth_sets):
        row = point_row(draw(np.random.default_rng([seed, 1, n, t]), n, d, scenario, True), ref, k, kid_subset)
        for mt in METRICS:
            truth[mt].append(row[iv.POINT_FIELDS[mt]])
    truth_s = time.perf_counter() - t0
    cover = {mt: 0 for mt in METRICS}
    own = {mt: 0 for mt in METRICS}
    half = {mt: [] for mt in METRICS}
    t0 = time.perf_counter()
    for r in range(reps):
        x = draw(np.random.default_rng([seed, 2, n, r]), n, d, scenario, True)
        row = point_row(x, ref, k, kid_subset)
        out = iv.row_intervals(row, x, None, None, ref, k)
        for mt in METRICS:
            lo, hi, est = out[f"{mt}_lo"], out[f"{mt}_hi"], row[iv.POINT_FIELDS[mt]]
            cover[mt] += lo <= np.mean(truth[mt]) <= hi
            own[mt] += lo <= est <= hi
            half[mt].append((hi - lo) / 2)
    reps_s = time.perf_counter() - t0
    res = {}
    for mt in METRICS:
        v = np.asarray(truth[mt])
        res[mt] = dict(target=v.mean(), target_se=v.std(ddof=1) / np.sqrt(len(v)), sd=v.std(ddof=1),
                       cover=cover[mt], own=own[mt], half=float(np.mean(half[mt])))
    return dict(metrics=res, truth_s=truth_s, reps_s=reps_s, reps=reps, truth_sets=truth_sets,
                b=iv.replicates_for(n, d))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 5000], help="sample counts N")
    p.add_argument("--m", type=int, help="reference features M (default: N)")
    p.add_argument("--d", type=int, default=64, help="feature dimension")
    p.add_argument("--reps", type=int, default=100, help="sample sets whose intervals are checked")
    p.add_argument("--truth-sets", type=int, default=400, help="independent sets behind E θ_N")
    p.add_argument("--k", type=int, default=3, help="k of precision/recall")
    p.add_argument("--kid-subset", type=int, default=1000, help="KID subset size (metrics.kid_subset_size)")
    p.add_argument("--scenario", choices=["shifted", "equal"], default="shifted")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"# interval coverage, {iv.METHOD}")
    print(f"# scenario {a.scenario}, d {a.d}, k {a.k}, KID subsets of {a.kid_subset}, seed {a.seed}; "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    for n in a.n:
        m = a.m or n
        r = run(n, m, a.d, a.reps, a.truth_sets, a.k, a.kid_subset, a.scenario, a.seed)
        print(f"\nN {n}, M {m}: B {r['b']} replicates; {r['truth_sets']} truth sets {r['truth_s']:.0f} s, "
              f"{r['reps']} reps {r['reps_s']:.0f} s")
        print(f"{'metric':10s} {'E θ_N':>12s} {'(s.e.)':>10s} {'covered':>8s} {'own est.':>8s} "
              f"{'half-width':>11s} {'/ 1.96 sd':>9s}")
        for mt, v in r["metrics"].items():
            print(f"{mt:10s} {v['target']:12.6g} {v['target_se']:10.2g} {v['cover']:>4d}/{r['reps']:<3d} "
                  f"{v['own']:>4d}/{r['reps']:<3d} {v['half']:11.4g} {v['half'] / (1.96 * v['sd']):9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
