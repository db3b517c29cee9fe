"""Peak host memory and wall time of one metrics row at paper scale, on synthetic features.

    ulimit -v $((16 * 1024 * 1024))        # or: prlimit --as=17179869184 -- python ...
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/metrics_memory.py              # N = M = 50,000, d 2048
    OMP_NUM_THREADS=1 python benchmarks/metrics_memory.py --stages intervals           # the intervals alone
    OMP_NUM_THREADS=1 python benchmarks/metrics_memory.py --n 5000 --m 5000            # a quick run

Draws N sample and M reference features (float32, d = 2048 by default; non-negative like the
Inception pool features: a rectified low-rank Gaussian plus noise, the samples slightly shifted),
then runs the stages drr.metrics.score.score_phase runs on them, on the CPU:

- ``points``: FID (reference and sample statistics, torch-fidelity's FID), KID (drr.metrics.maths.kid:
  torch-fidelity's 100 subsets), precision/recall (torch-fidelity's blockwise prc, save_cpu_ram);
- ``intervals``: drr.metrics.intervals.row_intervals with the row's B (200 replicates, 100 halvings
  above N = d), timed per metric. Without ``points`` its row holds placeholder estimates (the
  intervals' memory and time do not depend on them).

After each stage it prints the wall and CPU (user + system) time and the process's peak resident memory so far
(resource.getrusage ru_maxrss; it only grows, so run ``--stages intervals`` alone for the intervals'
own peak) and the limit on its address space (RLIMIT_AS, what ``ulimit -v`` sets; ``--limit-gb``
sets it from inside). Nothing is written. docs/intervals.md has the figures.
"""

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drr.metrics import intervals as iv  # noqa: E402
from drr.metrics import maths  # noqa: E402

GB = 1024 ** 3


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB   # ru_maxrss: KiB on Linux


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def limit_text() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft / GB:.1f} GiB"


def features(rng, n: int, d: int, basis: np.ndarray, shift: float) -> np.ndarray:
    """Rectified low-rank Gaussian plus noise, in chunks (no float64 copy of the whole set)."""
    out = np.empty((n, d), np.float32)
    r = len(basis)
    for i in range(0, n, 4096):
        z = rng.standard_normal((min(4096, n - i), r)).astype(np.float32)
        f = 0.3 + shift + z @ basis + 0.3 * rng.standard_normal((len(z), d)).astype(np.float32)
        out[i:i + len(z)] = np.maximum(f, 0)
    return out


class Ref:
    pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50000, help="samples N")
    p.add_argument("--m", type=int, default=50000, help="reference features M")
    p.add_argument("--d", type=int, default=2048, help="feature dimension")
    p.add_argument("--k", type=int, default=3, help="k of precision/recall (metrics.pr_k)")
    p.add_argument("--kid-subset", type=int, default=1000, help="metrics.kid_subset_size")
    p.add_argument("--stages", default="points,intervals", help="comma-separated: points, intervals")
    p.add_argument("--limit-gb", type=float, help="set RLIMIT_AS (as ulimit -v) to this many GiB first")
    a = p.parse_args()
    if a.limit_gb:
        lim = int(a.limit_gb * GB)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    stages = a.stages.split(",")
    print(f"# metrics memory: N {a.n}, M {a.m}, d {a.d}, k {a.k}, stages {stages}; address-space limit "
          f"{limit_text()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')}")
    t_all = time.perf_counter()

    def report(stage, t0, extra=""):
        t, c = t0
        print(f"{stage:28s} wall {time.perf_counter() - t:7.1f} s  cpu {cpu_s() - c:7.1f} s   "
              f"peak RSS so far {peak_gb():6.2f} GiB{extra}", flush=True)

    def now():
        return time.perf_counter(), cpu_s()

    t0 = now()
    rng = np.random.default_rng(0)
    basis = (rng.standard_normal((64, a.d)) / 8).astype(np.float32)
    pool = features(rng, a.n, a.d, basis, 0.05)
    ref = Ref()
    ref.features = features(rng, a.m, a.d, basis, 0.0)
    report("features", t0, f" (2 x {pool.nbytes / GB:.2f} GiB float32)")

    t0 = now()
    rs = maths.RunningStats(a.d)               # the reference statistics, streamed as reference.py does
    for i in range(0, a.m, 4096):
        rs.update(ref.features[i:i + 4096])
    ref.mu, ref.sigma = rs.result()
    report("reference statistics", t0)

    row = {"fid": 0.0, "kid_mean": 0.0, "kid_std": 0.0, "precision": 0.5, "recall": 0.5}   # placeholders
    if "points" in stages:
        t0 = now()
        row["fid"] = maths.fid_from_stats(*maths.stats(pool), ref.mu, ref.sigma)
        report("points: FID", t0, f"   FID {row['fid']:.4f}")
        t0 = now()
        (row["kid_mean"], row["kid_std"], _), _ = maths.kid(pool, ref.features, a.kid_subset)
        report("points: KID", t0, f"   KID {row['kid_mean']:.6f}")
        t0 = now()
        (row["precision"], row["recall"]), _ = maths.precision_recall(pool, ref.features, a.k, device="cpu")
        report("points: precision/recall", t0, f"   P {row['precision']:.4f} R {row['recall']:.4f}")
    if "intervals" in stages:
        def timed(name, fn):
            def wrapper(*args, **kw):
                t = now()
                try:
                    return fn(*args, **kw)
                finally:
                    report(f"intervals: {name}", t)
            return wrapper

        for name in ("fid_halves", "kid_halves", "pr_halves"):
            setattr(iv, name, timed(name, getattr(iv, name)))
        t0 = now()
        out = iv.row_intervals(row, pool, None, None, ref, a.k, labels=np.arange(a.n) % 1000)
        report("intervals: row_intervals", t0, f"   B {out['boot_replicates']}")
        for m in ("fid", "kid", "precision", "recall"):
            print(f"  {m:10s} [{out[f'{m}_lo']:.6g}, {out[f'{m}_hi']:.6g}]")
    print(f"total wall {time.perf_counter() - t_all:.0f} s, cpu {cpu_s():.0f} s, peak RSS {peak_gb():.2f} GiB, "
          f"limit {limit_text()}")


if __name__ == "__main__":
    main()
