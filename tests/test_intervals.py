"""Bootstrap intervals (drr.metrics.intervals): exact replicates, pairing, coverage on Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from drr.metrics import intervals as iv
from drr.metrics import maths


def gaussian_fid(m1, s1, m2, s2) -> float:
    """Closed-form FID of two Gaussians."""
    r = scipy.linalg.sqrtm(scipy.linalg.sqrtm(s1) @ s2 @ scipy.linalg.sqrtm(s1)).real
    return float((m1 - m2) @ (m1 - m2) + np.trace(s1 + s2 - 2 * r))


@pytest.mark.parametrize("n,d", [(40, 12), (30, 64)])  # primal (N > d) and dual (N <= d) paths
def test_fid_replicates_equal_fid_of_the_resampled_set(n, d):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) + 0.3
    ref = rng.standard_normal((200, d)) * 1.2
    mu2, s2 = maths.stats(ref)
    idx, _ = iv.bootstrap_indices(n, 4)
    reps = iv.fid_replicates(x, mu2, s2, iv.counts(idx, n))
    for b in range(4):
        mu1, s1 = maths.stats(x[idx[b]])
        assert reps[b] == pytest.approx(maths.fid_scipy(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)
    ones = iv.fid_replicates(x, mu2, s2, np.ones((1, n)))
    assert ones[0] == pytest.approx(maths.fid_from_stats(*maths.stats(x), mu2, s2), rel=1e-6)


def test_kid_and_pr_replicates_match_direct_computation():
    rng = np.random.default_rng(1)
    n, m, d, k = 60, 60, 16, 3   # m = n: torch-fidelity's subsets are then the whole sets
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.standard_normal((m, d)) * 1.1).astype(np.float32)
    idx, _ = iv.bootstrap_indices(n, 3)
    w = iv.counts(idx, n)
    kid_reps, kid_full = iv.kid_replicates(x, y, w)
    (kid_sub, _, _), _ = maths.kid(x, y, n)        # subsets of the whole set: the full estimator
    assert kid_full == pytest.approx(kid_sub, rel=1e-4)
    prec, rec, p0, r0 = iv.pr_replicates(x, y, k, w)
    (tp, tr), _ = maths.precision_recall(x, y, k, device="cpu")
    assert (p0, r0) == (pytest.approx(tp), pytest.approx(tr))
    for b in range(3):   # recall of a resample: radii from the other resampled points, copies included
        xs = x[idx[b]]
        dxx = np.linalg.norm(xs[:, None] - xs[None], axis=2)
        radii = np.sort(dxx, axis=1)[:, k]           # k-th other point (index 0: oneself)
        dxy = np.linalg.norm(xs[:, None] - y[None], axis=2)
        assert rec[b] == pytest.approx((dxy <= radii[:, None] + 1e-5).any(0).mean(), abs=1.5 / m)
        yy = np.linalg.norm(y[:, None] - y[None], axis=2)
        ry = np.sort(yy, axis=1)[:, k]
        assert prec[b] == pytest.approx((dxy <= ry[None] + 1e-5).any(1).mean(), abs=1.5 / n)
        xx = (xs @ xs.T / d + 1) ** 3
        kxy = (xs @ y.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        want = ((xx.sum() - np.trace(xx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
        assert kid_reps[b] == pytest.approx(want, rel=1e-4)


def test_is_scores_matches_torch_fidelity_with_one_split():
    import torch
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(2).standard_normal((50, 7)) * 2
    want = isc_features_to_metric(torch.from_numpy(logits), 1, False)["inception_score_mean"]
    assert iv.is_scores(logits, splits=1) == pytest.approx(want)


def test_index_matrix_is_fixed_by_n_and_strata_and_keeps_class_counts():
    labels = np.arange(100) % 10
    a, ka = iv.bootstrap_indices(100, 50, labels)
    b, kb = iv.bootstrap_indices(100, 50, labels)
    c, kc = iv.bootstrap_indices(100, 50)
    assert ka == kb and ka != kc and np.array_equal(a, b)
    assert (labels[a] == labels[None, :]).all()     # every position keeps its class


def test_basic_interval_reflects_the_replicates():
    lo, hi = iv.basic_interval(10.0, np.linspace(11, 13, 1001))   # replicates biased upwards
    assert lo == pytest.approx(7.05) and hi == pytest.approx(8.95)


def test_coverage_of_the_fid_interval_on_gaussians():
    """95% basic intervals cover the closed-form FID about 95% of the time (d 6, N 300), where
    percentile intervals, shifted by the bias, cover it less often."""
    rng = np.random.default_rng(3)
    d, n, trials, b = 6, 300, 120, 300
    m1, m2 = np.full(d, 0.3), np.zeros(d)
    a = rng.standard_normal((d, d)) * 0.3
    s1 = np.eye(d) + a @ a.T
    s2 = np.eye(d) * 1.3
    truth = gaussian_fid(m1, s1, m2, s2)
    basic = perc = 0
    chol = np.linalg.cholesky(s1)
    for t in range(trials):
        x = m1 + rng.standard_normal((n, d)) @ chol.T
        est = maths.fid_scipy(*maths.stats(x), m2, s2)
        idx, _ = iv.bootstrap_indices(n, b, seed=100 + t)
        reps = iv.fid_replicates(x, m2, s2, iv.counts(idx, n))
        lo, hi = iv.basic_interval(est, reps)
        basic += lo <= truth <= hi
        plo, phi = np.quantile(reps, [0.025, 0.975])
        perc += plo <= truth <= phi
    assert 0.88 <= basic / trials <= 1.0
    assert perc < basic


def test_row_intervals_of_a_scored_row():
    rng = np.random.default_rng(4)
    n, d = 80, 8
    pool = rng.standard_normal((n, d)).astype(np.float32)
    feats = rng.standard_normal((120, d)).astype(np.float32)

    class Ref:
        mu, sigma = maths.stats(feats)
        features = feats

    row = {"fid": maths.fid_from_stats(*maths.stats(pool), Ref.mu, Ref.sigma)}
    (row["kid_mean"], _, _), _ = maths.kid(pool, feats, 50)
    (row["precision"], row["recall"]), _ = maths.precision_recall(pool, feats, 3, device="cpu")
    out = iv.row_intervals(row, pool, None, None, Ref, 3, labels=np.arange(n) % 4)
    for m in ("fid", "kid", "precision", "recall"):
        assert len(out[f"boot_{m}"]) == out["boot_replicates"] == iv.replicates_for(n, d)
        assert out[f"{m}_lo"] < out[f"{m}_hi"]
    assert "is_lo" not in out and "clip_lo" not in out          # no point estimate, no interval
    names = {f for f, _, _ in iv.row_fields()}
    assert set(out) <= names
