"""Half-sampling intervals (drr.metrics.intervals): exact metrics of the halves, equal to the
previous implementation's computation; pairing; coverage on Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from drr.metrics import intervals as iv
from drr.metrics import maths

# --- the previous implementation's computation (N×N matrices), kept here as the reference ----------
# Copied from drr/metrics/intervals.py before half-sampling replaced the with-replacement bootstrap
# (commit 19b21e4); called with weights of all ones these give that code's values of a whole set.

def old_fid_replicates(pool, mu_ref, sigma_ref, weights):
    x = np.asarray(pool, np.float64)
    n, d = x.shape
    mu = x.mean(0)
    c = x - mu
    a = mu - np.asarray(mu_ref, np.float64)
    sigma_ref = np.asarray(sigma_ref, np.float64)
    tr_ref = float(np.trace(sigma_ref))
    ca = c @ a
    sq = np.einsum("ij,ij->i", c, c)
    g = c @ c.T if n <= d else None
    if n <= d:
        k = c @ sigma_ref @ c.T
    else:
        ev, vec = np.linalg.eigh(sigma_ref)
        root = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
        cr = c @ root
    out = np.empty(len(weights))
    for b, w in enumerate(np.asarray(weights, np.float64)):
        delta_sq = float(w @ g @ w) / n ** 2 if g is not None else None
        if n <= d:
            u = k @ w / n
            s = float(w @ u) / n
            act = np.flatnonzero(w > 0)
            sw = np.sqrt(w[act])
            m = k[np.ix_(act, act)] - u[act, None] - u[None, act] + s
            ev = np.linalg.eigvalsh(sw[:, None] * m * sw[None, :] / (n - 1))
        else:
            delta = c.T @ w / n
            delta_sq = float(delta @ delta)
            dr = cr.T @ w / n
            mstar = ((cr * w[:, None]).T @ cr - n * np.outer(dr, dr)) / (n - 1)
            ev = np.linalg.eigvalsh((mstar + mstar.T) / 2)
        mean_term = float(a @ a) + 2 * float(ca @ w) / n + delta_sq
        tr_s = (float(sq @ w) - n * delta_sq) / (n - 1)
        out[b] = mean_term + tr_s + tr_ref - 2 * float(np.sqrt(np.clip(ev, 0, None)).sum())
    return out


def old_kid_replicates(pool, ref_feats, weights):
    x = np.asarray(pool, np.float64)
    y = np.asarray(ref_feats, np.float64)
    n, d = x.shape
    m = len(y)
    kxx = (x @ x.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    diag = np.diag(kxx)
    rowxy = kxy.sum(1)

    def mmd(w):
        w = np.asarray(w, np.float64)
        xx = (((w @ kxx) * w).sum(1) - w @ diag) / (n * (n - 1))
        return xx + yy - 2 * (w @ rowxy) / (n * m)

    return mmd(weights), float(mmd(np.ones((1, n)))[0])


def old_precision_recall(pool, ref_feats, k):
    """The previous pr_replicates' precision and recall of the whole set."""
    import torch

    gen = torch.from_numpy(np.asarray(pool, np.float32))
    real = torch.from_numpy(np.asarray(ref_feats, np.float32))
    r_ref = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    d_gr = torch.cdist(gen, real)
    inside_ref = (d_gr <= r_ref[None, :]).any(1).numpy().astype(np.float64)
    r_gen = torch.cdist(gen, gen).kthvalue(k + 1, dim=1).values
    recall = float((d_gr <= r_gen[:, None]).any(0).float().mean())
    return float(inside_ref.mean()), recall


# --- the new functions against it -------------------------------------------------------------------

@pytest.mark.parametrize("n,m,d", [(300, 400, 16), (1000, 600, 64), (700, 500, 400)])
def test_halves_equal_the_previous_computation_on_each_half(n, m, d):
    """FID, KID, precision and recall of the whole set and of each half, blockwise, against the
    previous N×N computation (primal FID at d < N/2, the m×m route at N/2 ≤ d)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, d)) * 1.1 + 0.2).astype(np.float32)
    y = rng.standard_normal((m, d)).astype(np.float32)
    mu, sigma = maths.stats(y)
    masks, _ = iv.half_samples(n, 3, np.arange(n) % 7)
    fid = iv.fid_halves(x, mu, sigma, masks)
    kid, kid_full = iv.kid_halves(x, y, masks, full=True)
    prec, rec, p_full, r_full, covered = iv.pr_halves(x, y, 3, masks)
    # whole set: the previous code's values, and the row's own point estimates (maths, unchanged)
    assert kid_full == pytest.approx(old_kid_replicates(x, y, np.ones((1, n)))[1], rel=1e-6)
    assert (p_full, r_full) == pytest.approx(old_precision_recall(x, y, 3), abs=1e-7)
    (tp, tr), _ = maths.precision_recall(x, y, 3, device="cpu")
    assert (p_full, r_full) == pytest.approx((tp, tr), abs=1e-7)
    assert maths.fid_from_stats(*maths.stats(x), mu, sigma) == pytest.approx(
        old_fid_replicates(x, mu, sigma, np.ones((1, n)))[0], rel=1e-6)
    for b in range(3):
        for side, sel in ((0, masks[b]), (1, ~masks[b])):
            xs = x[sel]
            ones = np.ones((1, len(xs)))
            assert fid[b, side] == pytest.approx(old_fid_replicates(xs, mu, sigma, ones)[0], rel=1e-8)
            assert fid[b, side] == pytest.approx(maths.fid_from_stats(*maths.stats(xs), mu, sigma), rel=1e-6)
            assert kid[b, side] == pytest.approx(old_kid_replicates(xs, y, ones)[1], rel=1e-6)
            assert (prec[b, side], rec[b, side]) == pytest.approx(old_precision_recall(xs, y, 3), abs=1e-7)
    # without the reference-only term the halves' difference is the same
    kid_nofull, none = iv.kid_halves(x, y, masks)
    assert none is None
    assert iv.deviations(kid_nofull) == pytest.approx(iv.deviations(kid), rel=1e-9, abs=1e-12)


def test_kid_of_whole_sets_equals_torch_fidelitys():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    y = (rng.standard_normal((300, 32)) * 1.1).astype(np.float32)
    (kid, std, size), _ = maths.kid(x, y, 1000)      # subsets of the whole sets: the full estimator
    masks, _ = iv.half_samples(300, 2)
    assert size == 300 and std == pytest.approx(0, abs=1e-7)
    # torch-fidelity sums its float32 kernels in float32: agreement to that rounding (terms ~1)
    assert iv.kid_halves(x, y, masks, full=True)[1] == pytest.approx(kid, rel=0, abs=5e-7)


def test_short_neighbour_lists_fall_back_to_exact_radii():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = rng.standard_normal((150, 8)).astype(np.float32)
    masks, _ = iv.half_samples(200, 6)
    want = iv.pr_halves(x, y, 3, masks)
    short = iv.pr_halves(x, y, 3, masks, depth=5)         # most radii need the exact recomputation
    for a, b in zip(want, short):
        assert np.allclose(a, b, rtol=0, atol=1e-12)


def test_blocks_smaller_than_the_sets_give_the_same_values(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((257, 12)).astype(np.float32)
    y = rng.standard_normal((190, 12)).astype(np.float32)
    mu, sigma = maths.stats(y)
    masks, _ = iv.half_samples(257, 4)

    def run():
        return iv.fid_halves(x, mu, sigma, masks), iv.kid_halves(x, y, masks, full=True), iv.pr_halves(x, y, 3, masks)

    want = run()
    monkeypatch.setattr(iv, "BLOCK_ENTRIES", 1000)          # blocks of a few rows
    got = run()
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    # KID's kernel sums run in the features' float32, and blocks reorder them: equal to float32
    # rounding (the BLAS kernels differ between processors; 4e-7 relative seen on a Zen 3)
    assert got[1][0] == pytest.approx(want[1][0], rel=1e-5) and got[1][1] == pytest.approx(want[1][1], rel=1e-5)
    for a, b in zip(got[2], want[2]):
        assert np.allclose(a, b, rtol=0, atol=1e-12)


# --- splits, replicates, pairing ---------------------------------------------------------------------

def test_halvings_are_fixed_by_n_and_strata_and_halve_every_class():
    labels = np.arange(103) % 10                        # classes of 11 and 10 samples
    a, ka = iv.half_samples(103, 50, labels)
    b, kb = iv.half_samples(103, 50, labels)
    c, kc = iv.half_samples(103, 50)
    assert ka == kb and ka != kc and np.array_equal(a, b)
    for cls in range(10):
        size = (labels == cls).sum()
        in_h = a[:, labels == cls].sum(1)
        assert set(in_h) <= {size // 2, (size + 1) // 2}
    assert set(a.sum(1)) == {51, 52}                     # the three odd samples split 1-2 or 2-1
    odd = a[:, labels == 0].sum(1)                       # the odd sample goes either way
    assert len(set(odd)) == 2
    assert 0.3 < c.mean() < 0.7 and not np.array_equal(c[0], c[1])


def test_halves_stay_balanced_when_every_class_has_one_sample():
    """Eight samples of eight classes: every stratum is odd, and each half still holds four (a coin
    per stratum would leave halves of 0 to 8, too few for FID's covariance)."""
    masks, _ = iv.half_samples(8, 200, np.arange(8))
    assert set(masks.sum(1)) == {4}
    assert 0.35 < masks.mean(0).min() and masks.mean(0).max() < 0.65   # each sample goes either way
    masks, _ = iv.half_samples(9, 200, np.arange(9))
    assert set(masks.sum(1)) == {4, 5}


def test_replicates_are_symmetric_and_the_interval_contains_the_estimate():
    dev = np.random.default_rng(4).standard_normal(100) * 0.3 + 0.2   # not centred: still symmetric
    reps = iv.half_replicates(5.0, dev)
    assert len(reps) == 200 and reps[0] == 5.0 + dev[0] and reps[1] == 5.0 - dev[0]
    lo, hi = iv.basic_interval(5.0, reps)
    q = np.quantile(np.abs(dev), 0.95)
    assert lo == pytest.approx(5.0 - q, rel=1e-3) and hi == pytest.approx(5.0 + q, rel=1e-3)
    assert lo <= 5.0 <= hi
    assert iv.basic_interval(0.25, iv.half_replicates(0.25, np.zeros(10))) == (0.25, 0.25)


def test_basic_interval_reflects_the_replicates():
    lo, hi = iv.basic_interval(10.0, np.linspace(11, 13, 1001))   # replicates biased upwards
    assert lo == pytest.approx(7.05) and hi == pytest.approx(8.95)


def test_is_scores_matches_torch_fidelity_with_one_split():
    import torch
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(2).standard_normal((50, 7)) * 2
    want = isc_features_to_metric(torch.from_numpy(logits), 1, False)["inception_score_mean"]
    assert iv.is_scores(logits, splits=1) == pytest.approx(want)


class _Ref:
    def __init__(self, feats):
        self.features = feats
        self.mu, self.sigma = maths.stats(feats)


def _row(pool, ref, k=3, kid_subset=1000):
    """Point estimates as drr.metrics.score.score_phase computes them."""
    row = {"fid": maths.fid_from_stats(*maths.stats(pool), ref.mu, ref.sigma)}
    (row["kid_mean"], row["kid_std"], _), _ = maths.kid(pool, ref.features, kid_subset)
    (row["precision"], row["recall"]), _ = maths.precision_recall(pool, ref.features, k, device="cpu")
    return row


def test_row_intervals_of_a_scored_row():
    rng = np.random.default_rng(4)
    n, d = 80, 8
    pool = rng.standard_normal((n, d)).astype(np.float32)
    ref = _Ref(rng.standard_normal((120, d)).astype(np.float32))
    row = _row(pool, ref, kid_subset=50)
    logits = rng.standard_normal((n, 5))
    cos = rng.uniform(-0.2, 0.5, n)
    row["is_mean"], row["clip_score"] = iv.is_scores(logits), float(np.clip(cos, 0, None).mean())
    out = iv.row_intervals(row, pool, logits, cos, ref, 3, labels=np.arange(n) % 4)
    for m in iv.INTERVAL_METRICS:
        est = row[iv.POINT_FIELDS[m]]
        assert len(out[f"boot_{m}"]) == out["boot_replicates"] == iv.replicates_for(n, d)
        assert out[f"{m}_lo"] < est < out[f"{m}_hi"]
        reps = np.array(out[f"boot_{m}"])
        assert reps[0::2] - est == pytest.approx(est - reps[1::2], abs=1e-12)
    names = {f for f, _, _ in iv.row_fields()}
    assert set(out) <= names and "interval_note" not in out
    # no point estimate, no interval; halves too small for a metric: none, and a note saying why
    small = iv.row_intervals({"fid": 1.0, "precision": 0.5, "recall": 0.5, "is_mean": 2.0}, pool[:15], logits[:15],
                             None, ref, 3)
    assert "fid_lo" in small and "precision_lo" in small and "kid_lo" not in small and "clip_lo" not in small
    assert "is_lo" not in small and "IS: n/a" in small["interval_note"]
    assert "n/a" in iv.row_intervals(row, pool[:3], None, None, ref, 3)["interval_note"]


def test_paired_difference_of_rows_split_alike():
    """Two rows of the same samples (e.g. drafts and revised images) share the key; their
    replicate differences are the half-sampling of the difference, symmetric about it, and far
    narrower than the difference of independently split rows."""
    from drr.reports.claims import Estimate, difference

    rng = np.random.default_rng(5)
    n, d = 400, 8
    labels = np.arange(n) % 4
    ref = _Ref(rng.standard_normal((300, d)).astype(np.float32))
    a = rng.standard_normal((n, d)).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal((n, d)) + 0.05).astype(np.float32)
    rows, est = [], []
    for pool, lab in ((a, labels), (b, labels), (b, None)):
        r = _row(pool, ref)
        rows.append((r, iv.row_intervals(r, pool, None, None, ref, 3, labels=lab)))
    assert rows[0][1]["boot_key"] == rows[1][1]["boot_key"] != rows[2][1]["boot_key"]
    for m in ("fid", "kid", "precision", "recall"):
        ea, eb, ec = (Estimate(r[iv.POINT_FIELDS[m]], np.array(o[f"boot_{m}"]), o["boot_key"]) for r, o in rows)
        v, reps, how = difference(ea, eb)
        assert how == "paired"
        lo, hi = iv.basic_interval(v, reps)
        assert lo <= v <= hi
        v2, reps2, how2 = difference(ea, ec)
        assert how2.startswith("unpaired") and v2 == v
        lo2, hi2 = iv.basic_interval(v2, reps2)
        assert lo2 <= v2 <= hi2
        if m != "precision":       # precision moves little between a and b: both intervals tiny
            assert hi - lo < 0.8 * (hi2 - lo2)


def test_coverage_on_gaussians():
    """100 sample sets of N = 400 from a Gaussian generator (d = 64) against a fixed Gaussian
    reference: every interval contains its estimate, and at least 90 of 100 cover the metric's
    expected value at N (the mean over 300 further independent sets). The distributions are those
    of benchmarks/interval_coverage.py, which does the same at N = 1000 and 5000."""
    d, n, reps, truth_sets = 64, 400, 100, 300
    sd = np.sqrt(1.0 / (1 + np.arange(d) / 8.0))
    ref = _Ref((np.random.default_rng(6).standard_normal((n, d)) * sd).astype(np.float32))

    def draw(seed):
        return (0.15 + np.random.default_rng([7, seed]).standard_normal((n, d)) * sd * 0.97).astype(np.float32)

    def row_of(x):
        # maths.kid's subsets are the whole sets here (N = M < kid_subset_size): its value is the
        # full-set MMD² (test_kid_of_whole_sets_equals_torch_fidelitys), computed directly, 50x faster
        row = {"fid": maths.fid_from_stats(*maths.stats(x), ref.mu, ref.sigma), "kid_std": 0.0,
               "kid_mean": old_kid_replicates(x, ref.features, np.ones((1, n)))[1]}
        (row["precision"], row["recall"]), _ = maths.precision_recall(x, ref.features, 3, device="cpu")
        return row

    fields = [iv.POINT_FIELDS[m] for m in ("fid", "kid", "precision", "recall")]
    truth = np.mean([[row_of(draw(t))[f] for f in fields] for t in range(reps, reps + truth_sets)], axis=0)
    cover = np.zeros(4, int)
    for t in range(reps):
        x = draw(t)
        row = row_of(x)
        out = iv.row_intervals(row, x, None, None, ref, 3)
        for j, m in enumerate(("fid", "kid", "precision", "recall")):
            lo, hi = out[f"{m}_lo"], out[f"{m}_hi"]
            assert lo <= row[fields[j]] <= hi
            cover[j] += lo <= truth[j] <= hi
    assert (cover >= 90).all(), dict(zip(("fid", "kid", "precision", "recall"), cover))


# --- the with-replacement bootstrap kept for drr.tokenizer.report -----------------------------------

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


def test_index_matrix_is_fixed_by_n_and_strata_and_keeps_class_counts():
    labels = np.arange(100) % 10
    a, ka = iv.bootstrap_indices(100, 50, labels)
    b, kb = iv.bootstrap_indices(100, 50, labels)
    c, kc = iv.bootstrap_indices(100, 50)
    assert ka == kb and ka != kc and np.array_equal(a, b)
    assert (labels[a] == labels[None, :]).all()     # every position keeps its class


def test_no_finite_replicate_gives_no_interval():
    lo, hi = iv.basic_interval(float("nan"), [float("nan")] * 4)
    assert np.isnan(lo) and np.isnan(hi)
