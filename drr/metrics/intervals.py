"""95% confidence intervals of FID, KID, precision, recall, IS and CLIP score by half-sampling the
generated samples, with the reference held fixed. Why this method and what it was measured to do:
docs/intervals.md.

Method:

- **What is resampled.** The N generated samples of a row are split at random into two halves H
  and H' (no sample in both, none left out), h times; *stratified by class* when the sample set has
  labels (each class is split in two; a class of odd count gives its extra sample to H or H' by a
  coin), so the class counts of each half are those of the set, halved. The reference (its
  mean/covariance and its features) is held fixed: every claim compares conditions scored against
  the same reference, so the interval is conditional on it.
- **What an interval covers.** E θ_N, the metric's expected value over independent sample sets of
  the row's size N against this reference. That is what a row can be compared with: FID, recall
  and IS have a finite-sample bias that depends on N (FID_N − FID_∞ ≈ c/N), so two rows of the
  same N compare like with like, and nothing here tries to remove it.
- **Replicates.** For each split the metric is computed exactly on each half, θ_H and θ_H', and the
  row stores θ̂ + D and θ̂ − D, D = (θ_H − θ_H')/2, as the split's two replicates (``boot_<metric>``,
  B = 2h, in that order), θ̂ the row's estimate. H and H' are two *independent* sample sets of
  size N/2 from the generator, so D is an exact draw of half the difference of two independent
  N/2-sample estimates: symmetric about 0, whatever the metric's bias (the same at both halves),
  with Var D = Var θ_{N/2} / 2. For a metric with Var θ_n = A/n + C/n² (every one here: A the
  first-order part, C ≥ 0 the part that is quadratic in the sample noise, e.g. the |μ̂ − μ|² and
  tr(√·) terms of FID, the degenerate part of KID's U-statistic) that is A/N + 2C/N² ≥ Var θ_N:
  exact when the first-order part dominates (a metric that differs between generator and
  reference) and at most √2 too wide where the quadratic part dominates (a generator equal to the
  reference). Recall's variance is not of that form (below). No point is duplicated, so k-NN
  radii and covariances are those of real sample sets (the with-replacement bootstrap this
  replaced shrank recall's radii at copies and shifted FID's bias: its intervals could exclude
  their own estimate).
- **Recall.** Recall is a mean over the M fixed reference points of "covered by a k-NN ball of
  the samples", and whether point j is covered depends on the few samples nearest it, whose number
  does not grow with N: the per-point part of recall's variance, (1/M²) Σ_j p_j(1 − p_j), is about
  the same at N/2 as at N, while half-sampling assumes it halves (measured on Gaussians: D alone is
  up to 1/√2 too narrow). Recall's D_b therefore gets a second term,
  E_b = Σ_j s_bj (c_j(H_b) − c_j(H'_b))/(2M), c_j(·) = 1 when that half's balls cover reference
  point j and s_bj = ±1 signs drawn from the halvings' key (`recall_deviations`): E_b has mean 0
  and variance (1/(2M²)) Σ_j p_j(1 − p_j), the missing half of that part. Rows split alike share
  the signs, so in a paired difference E adds the missing part of the difference's own per-point
  term.
- **Interval.** ``basic_interval`` of the replicates, ``[2θ̂ − q(1 − α/2), 2θ̂ − q(α/2)]``: since
  the replicates are symmetric about θ̂ this is θ̂ ± the (1 − α) quantile of |D|, which always
  contains θ̂.
- **KID.** The row's KID is torch-fidelity's mean over 100 subsets of ``kid_subset_size``
  (drr.metrics.maths.kid): the full-set unbiased MMD² plus the noise of which subsets were drawn,
  whose variance is Var(one subset | sets)/(100 − 1) ≈ kid_std²/99. D is the half-sample deviation
  of the full-set MMD² (cubic kernel (x·y/d + 1)³), scaled by √(1 + kid_std²/(99·mean D²)) so that
  its variance is Var(full-set MMD²) + that subset noise (zero when the subsets are the whole
  sets; conservative where the reference subsets differ, whose noise is fixed by the seed).
- **Pairing.** The splits come from a fixed seed and the row's N, h and strata (`half_samples`); the
  row stores the key of its splits (``boot_key``). Two rows with the same key were split at the
  same sample indices. Sample i of every set is a pure function of (seed, i) with class
  i % num_classes, so (sample i of A, sample i of B) are independent pairs over i — the drafts and
  the revised images of one variant, two variants of one experiment, two experiments with the same seed —
  and the difference of their replicates, θ̂_A − θ̂_B ± (D_A − D_B), is the same half-sampling of
  the difference (`drr.reports.claims.difference`: "paired"), which keeps what the two sets share out of
  the interval. Rows with different keys were split independently, and differences of their
  replicates combine two independent deviations (valid for independent sets, conservative when the
  sets are positively correlated).

Per split the metrics are computed exactly on each half, in memory O(N·d + block·N) (never an
N×N or N×M matrix; BLOCK_ENTRIES):

- FID: with C the centred features, R = Σ_ref^½ and CR = C R, a half's covariance is
  ``(Cᵀ_H C_H − m μ̃_H μ̃_Hᵀ)/(m − 1)`` (μ̃_H its mean of C), and tr √(Σ_H Σ_ref) comes from the
  eigenvalues of the d×d ``((CR)ᵀ_H (CR)_H − m ν_H ν_Hᵀ)/(m − 1)``, accumulated over row chunks;
  the other half's from the whole set's minus this one's. When a half has m ≤ d points, from the
  m×m matrix ``P K_HH P/(m − 1)`` instead (K = C Σ_ref Cᵀ, P the centring), whose non-zero
  eigenvalues are the same.
- KID: the unbiased MMD² of each half from kernel blocks (upper triangle of K_xx in square blocks,
  K_xy in row blocks); the reference-only term cancels in D and is computed only on request.
- precision: mean over the half of "inside a reference k-NN ball" (radii of the fixed reference,
  as torch-fidelity); recall: fraction of reference features inside the k-NN balls of the half,
  radius of x the (k+1)-th smallest distance to the half's points including x itself
  (torch-fidelity's radius computed on the half). Each sample keeps its 4k + 33 nearest samples
  (row blocks); a half's radius is read off that list (an exact recomputation in the rare case the
  list holds too few of the half). One pass over reference blocks finds the pairs (reference
  point, sample) within the largest radius any half gives the sample and decides every half's
  coverage from those pairs.
- IS: 10 splits of each half's logits in sample order (torch-fidelity's estimator).
- CLIP score: mean of max(cos, 0) over each half.

`bootstrap_indices`, `counts` and `fid_replicates` (the with-replacement bootstrap) remain for
drr.tokenizer.report's rFID intervals only; the metrics rows do not use them.
"""

from __future__ import annotations

import hashlib

import numpy as np

BOOT_SEED = 13           # seed of every split (fixed by the protocol, docs/small-suite.md)
LEVEL = 0.95             # two-sided confidence level of every interval
METHOD = ("half-sampling: estimate ± (metric of half − metric of other half)/2 over random halvings of the "
          "generated samples (recall: plus a per-reference-point term), stratified by class, reference fixed")
IS_SPLITS = 10
KID_SUBSETS = 100        # drr.metrics.maths.KID_SUBSETS (the point estimate's subsets)
BLOCK_ENTRIES = 1 << 25  # entries of one distance or kernel block (128 MB float32, 256 MB float64)
PRC_BATCH = 10000        # torch-fidelity's prc_batch_size (its cdist column batches; maths.precision_recall)
# metric key -> (row field of the point estimate)
POINT_FIELDS = {"fid": "fid", "kid": "kid_mean", "precision": "precision", "recall": "recall",
                "is": "is_mean", "clip": "clip_score"}


def replicates_for(n: int, d: int = 2048) -> int:
    """B: 500 replicates (250 splits) while N ≤ d (each half's FID an m×m eigenproblem, m = N/2);
    200 (100 splits) above, where each split costs two d×d eigenproblems (~0.7 s each at d = 2048
    on one core) and a (N/2)×d² product."""
    return 500 if n <= d else 200


# --- resampling ------------------------------------------------------------------------------------

def half_samples(n: int, splits: int, strata=None, seed: int = BOOT_SEED) -> tuple[np.ndarray, str]:
    """(splits, N) bool membership of H in each random halving, and the key naming them (same key,
    same splits). H' is the complement. With `strata` (e.g. the class labels) every stratum is split
    in two; the odd samples of the strata of odd size go half to H and half to H' (which ones at
    random; an odd one out by a coin), so that each half holds N/2 samples, rounded either way, and
    at least 2 of any N >= 4 however small the strata."""
    h = hashlib.sha256(f"half|{seed}|{n}|{splits}|".encode())
    if strata is not None:
        strata = np.asarray(strata)
        if len(strata) != n:
            raise ValueError(f"strata has {len(strata)} entries for {n} samples")
        h.update(np.ascontiguousarray(strata.astype(np.int64)).tobytes())
        code = np.unique(strata, return_inverse=True)[1].ravel()
    else:
        code = np.zeros(n, np.int64)
    sizes = np.bincount(code)
    odd = sizes % 2 == 1
    if odd.any():  # split as below since the odd samples are balanced: not paired with rows split before
        h.update(b"balanced odd samples")
    key = h.hexdigest()[:16]
    rng = np.random.default_rng([seed, n, splits, int(key, 16) % (2 ** 32)])
    starts = np.cumsum(sizes) - sizes
    order = np.argsort(code[None, :] + rng.random((splits, n)), axis=1)   # by stratum, random within
    rank = np.empty((splits, n), np.int64)
    rank[np.arange(splits)[:, None], order] = np.arange(n)[None, :] - starts[code[order]]
    extra = np.zeros((splits, len(sizes)), np.int64)
    if odd.any():
        # a random order of the odd strata in each split; the first half of them (and the middle one
        # by a coin when their count is odd) give their odd sample to H
        n_odd = int(odd.sum())
        position = np.argsort(np.argsort(rng.random((splits, n_odd)), axis=1), axis=1)
        first = n_odd // 2 + (n_odd % 2) * rng.integers(0, 2, size=(splits, 1))
        extra[:, odd] = position < first
    take = sizes // 2 + extra
    return rank < take[:, code], key


def deviations(values: np.ndarray) -> np.ndarray:
    """D = (θ_H − θ_H')/2 of each split from the (splits, 2) metric values of its halves."""
    v = np.asarray(values, np.float64)
    return (v[:, 0] - v[:, 1]) / 2


def half_replicates(estimate: float, dev) -> np.ndarray:
    """The 2h stored replicates θ̂ + D_1, θ̂ − D_1, θ̂ + D_2, ...: symmetric about the estimate."""
    dev = np.asarray(dev, np.float64)
    out = np.empty(2 * len(dev))
    out[0::2] = estimate + dev
    out[1::2] = estimate - dev
    return out


def basic_interval(estimate: float, reps, level: float = LEVEL) -> tuple[float, float]:
    """``[2θ̂ − q(1 − α/2), 2θ̂ − q(α/2)]`` of the replicates (non-finite replicates dropped); for
    replicates symmetric about θ̂ (`half_replicates`) θ̂ ± the (1 − α) quantile of |D|."""
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo_q, hi_q = np.quantile(reps, [a, 1 - a])
    return float(2 * estimate - hi_q), float(2 * estimate - lo_q)


# --- s/sample --------------------------------------------------------------------------------------
# One method for every s/sample interval (tables, figures, claims): the speed file's per-batch
# s/sample (every phase of a timed batch summed, over the batch size) resampled with replacement,
# B = SPEED_REPLICATES means, seeded per file from BOOT_SEED and the file's name, and the basic
# interval of those means. It shows the batch-to-batch spread of one measurement only.

SPEED_REPLICATES = 2000  # cheap: means of a few numbers


def per_batch_seconds(rec: dict) -> np.ndarray:
    """s/sample of each timed batch of a drr.sampling.speed record; ValueError(reason) when the
    record has no usable per-batch times."""
    times = rec.get("batch_seconds")
    if not isinstance(times, dict) or not times or not rec.get("batch_size"):
        raise ValueError("no per-batch times in the speed file (batch_seconds, batch_size)")
    lists = [np.asarray(v, np.float64) for v in times.values() if v is not None]
    if not lists or len({len(v) for v in lists}) != 1 or len(lists[0]) == 0:
        raise ValueError("batch_seconds has no timed batches of equal count per phase")
    return np.sum(lists, axis=0) / rec["batch_size"]


def speed_seed(name) -> list[int]:
    return [BOOT_SEED, int(hashlib.sha256(str(name).encode()).hexdigest()[:8], 16)]


def batch_replicates(per_batch, b: int, seed) -> np.ndarray:
    """B bootstrap means of per-batch s/sample (batches resampled with replacement)."""
    t = np.asarray(per_batch, np.float64)
    rng = np.random.default_rng(seed)
    return t[rng.integers(0, len(t), size=(b, len(t)))].mean(1)


def speed_interval(per_batch, name) -> tuple[float, float, np.ndarray]:
    """(lo, hi, replicates) of the mean s/sample of one speed file (`name`: its path)."""
    reps = batch_replicates(per_batch, SPEED_REPLICATES, speed_seed(name))
    lo, hi = basic_interval(float(np.mean(per_batch)), reps)
    return lo, hi, reps


# --- per-metric values of the halves ---------------------------------------------------------------

def _rows(n_cols: int, cap: int | None = None) -> int:
    """Rows of a block of `n_cols` columns within BLOCK_ENTRIES."""
    r = max(1, BLOCK_ENTRIES // max(n_cols, 1))
    return r if cap is None else min(r, cap)


def _sides(masks: np.ndarray) -> np.ndarray:
    """(splits, 2) sizes of H and H'."""
    m = np.asarray(masks).sum(1)
    return np.stack([m, masks.shape[1] - m], axis=1)


def _sqrt_trace(eigs: np.ndarray) -> float:
    return float(np.sqrt(np.clip(eigs, 0, None)).sum())


def _sym_sqrt(sigma: np.ndarray) -> np.ndarray:
    ev, vec = np.linalg.eigh(sigma)
    return (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T


def fid_halves(pool, mu_ref, sigma_ref, masks: np.ndarray, progress=None) -> np.ndarray:
    """(splits, 2) FID of H and H' of each split against fixed reference statistics (module
    docstring for the algebra). Memory: the N×d float64 centred (and rotated) features, d×d
    matrices, and row chunks; an N×N matrix only when a half has at most d points (N ≤ 2d + 1)."""
    from scipy.linalg.blas import dsyrk

    x = np.asarray(pool)
    masks = np.asarray(masks, bool)
    n, d = x.shape
    splits = len(masks)
    sizes = _sides(masks)
    if sizes.min() < 2:
        raise ValueError(f"FID of a half needs at least 2 samples (N = {n})")
    mu = x.mean(0, dtype=np.float64)
    sigma_ref = np.asarray(sigma_ref, np.float64)
    a = mu - np.asarray(mu_ref, np.float64)
    tr_ref = float(np.trace(sigma_ref))
    dual = sizes.max() <= d
    w = masks.astype(np.float64)
    sq, ca = np.empty(n), np.empty(n)
    sum_c = np.zeros((splits, d))
    tot_c = np.zeros(d)
    chunk = _rows(d, 4096)
    if dual:
        c_all = np.empty((n, d))
    else:
        root = _sym_sqrt(sigma_ref)
        cr_all = np.empty((n, d))
        sum_cr = np.zeros((splits, d))
        tot_cr = np.zeros(d)
        s_tot = np.zeros((d, d), order="F")
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        c = x[i0:i1].astype(np.float64) - mu
        sq[i0:i1] = np.einsum("ij,ij->i", c, c)
        ca[i0:i1] = c @ a
        sum_c += w[:, i0:i1] @ c
        tot_c += c.sum(0)
        if dual:
            c_all[i0:i1] = c
        else:
            cr = c @ root
            cr_all[i0:i1] = cr
            sum_cr += w[:, i0:i1] @ cr
            tot_cr += cr.sum(0)
            s_tot = dsyrk(1.0, cr.T, beta=1.0, c=s_tot, overwrite_c=1)
    if dual:
        k = (c_all @ sigma_ref) @ c_all.T
        del c_all
    else:
        s_tot = np.triu(s_tot) + np.triu(s_tot, 1).T
    sq_tot, ca_tot = float(sq.sum()), float(ca.sum())
    aa = float(a @ a)
    out = np.empty((splits, 2))
    for b in range(splits):
        mem = masks[b]
        if not dual:
            s_h = np.zeros((d, d), order="F")
            for i0 in range(0, n, chunk):
                part = cr_all[i0:i0 + chunk][mem[i0:i0 + chunk]]
                if len(part):
                    s_h = dsyrk(1.0, part.T, beta=1.0, c=s_h, overwrite_c=1)
            s_h = np.triu(s_h) + np.triu(s_h, 1).T
        for side in (0, 1):
            m = int(sizes[b, side])
            sel = mem if side == 0 else ~mem            # the other half's sums: the whole set's minus H's
            mu_t = (sum_c[b] if side == 0 else tot_c - sum_c[b]) / m
            ca_s = float(ca[mem].sum()) if side == 0 else ca_tot - float(ca[mem].sum())
            sq_s = float(sq[mem].sum()) if side == 0 else sq_tot - float(sq[mem].sum())
            mt = float(mu_t @ mu_t)
            mean_term = aa + 2 * ca_s / m + mt
            tr_s = (sq_s - m * mt) / (m - 1)
            if dual:
                idx = np.flatnonzero(sel)
                kh = k[np.ix_(idx, idx)]
                u = kh.mean(1)
                g = (kh - u[:, None] - u[None, :] + u.mean()) / (m - 1)
                trace_sqrt = _sqrt_trace(np.linalg.eigvalsh((g + g.T) / 2))
            else:
                nu = (sum_cr[b] if side == 0 else tot_cr - sum_cr[b]) / m
                s_side = s_h if side == 0 else s_tot - s_h
                mstar = (s_side - m * np.outer(nu, nu)) / (m - 1)
                trace_sqrt = _sqrt_trace(np.linalg.eigvalsh((mstar + mstar.T) / 2))
            out[b, side] = mean_term + tr_s + tr_ref - 2 * trace_sqrt
        if progress is not None:
            progress.update(1)
    return out


def _poly(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    """torch-fidelity's cubic kernel (x·y/d + 1)³: the dot products in the features' float32, as
    torch-fidelity, the cube and everything summed after it in float64."""
    return (np.matmul(x, y.T).astype(np.float64) / d + 1) ** 3


def kid_halves(pool, ref_feats, masks: np.ndarray, full: bool = False):
    """((splits, 2) unbiased MMD² of H and H', full-set MMD² or None). Without `full` the
    reference-only term (mean of K_yy off the diagonal) is left out of the halves' values — it is
    the same for both and cancels in D — and the full-set value is None; with it both are exact
    (one more M×M kernel pass)."""
    x = np.asarray(pool, np.float32)
    y = np.asarray(ref_feats, np.float32)
    masks = np.asarray(masks, bool)
    n, d = x.shape
    mref = len(y)
    sizes = _sides(masks).astype(np.float64)
    if sizes.min() < 2:
        raise ValueError(f"KID of a half needs at least 2 samples (N = {n})")
    w = masks.astype(np.float64)
    bs = min(n, int(np.sqrt(BLOCK_ENTRIES)) // 2)          # square blocks of K_xx
    rowsum = np.zeros(n)
    diag = np.empty(n)
    q = np.zeros(len(w))                                     # w_Hᵀ K_xx w_H
    for i0 in range(0, n, bs):
        i1 = min(n, i0 + bs)
        for j0 in range(i0, n, bs):
            j1 = min(n, j0 + bs)
            k = _poly(x[i0:i1], x[j0:j1], d)
            rowsum[i0:i1] += k.sum(1)
            wk = w[:, i0:i1] @ k
            if j0 == i0:
                diag[i0:i1] = np.diagonal(k)
                q += (wk * w[:, j0:j1]).sum(1)
            else:
                rowsum[j0:j1] += k.sum(0)
                q += 2 * (wk * w[:, j0:j1]).sum(1)
    xy = np.empty(n)                                        # Σ_j k(x_i, y_j)
    rb = _rows(mref)
    for i0 in range(0, n, rb):
        xy[i0:i0 + rb] = _poly(x[i0:i0 + rb], y, d).sum(1)
    total, diag_tot, xy_tot = float(rowsum.sum()), float(diag.sum()), float(xy.sum())
    q_c = total - 2 * (w @ rowsum) + q                       # w_H'ᵀ K_xx w_H'
    off = np.stack([q - w @ diag, q_c - (diag_tot - w @ diag)], axis=1)
    cross = np.stack([w @ xy, xy_tot - w @ xy], axis=1)
    values = off / (sizes * (sizes - 1)) - 2 * cross / (sizes * mref)
    if not full:
        return values, None
    yy = 0.0
    rb = min(mref, int(np.sqrt(BLOCK_ENTRIES)) // 2)
    for i0 in range(0, mref, rb):
        for j0 in range(i0, mref, rb):
            k = _poly(y[i0:i0 + rb], y[j0:j0 + rb], d)
            yy += k.sum() - np.trace(k) if j0 == i0 else 2 * k.sum()
    yy /= mref * (mref - 1)
    whole = (total - diag_tot) / (n * (n - 1)) + yy - 2 * xy_tot / (n * mref)
    return values + yy, float(whole)


def _cdist(a, b):
    """torch-fidelity's distances (torch.cdist in float32, columns in batches of PRC_BATCH)."""
    from torch_fidelity.metric_prc import calc_cdist_part

    return calc_cdist_part(a, b, PRC_BATCH)


def pr_halves(pool, ref_feats, k: int, masks: np.ndarray, depth: int | None = None):
    """(precision (splits, 2), recall (splits, 2), precision, recall of the whole set, covered),
    with torch-fidelity's definitions on each half (module docstring), in blocks of rows; covered
    (2·splits, M) bool says which reference points the balls of each half cover (rows H_1, H'_1,
    H_2, ...; recall_deviations uses it). `depth`: the
    length of each sample's neighbour list (default 4k + 33: a random half holds fewer than k of
    its first 4k + 32 other samples with probability below 1e-10 at k = 3)."""
    import torch  # here, not at the top: drr.reports.claims (parsed by every Snakemake job) imports this module

    masks = np.asarray(masks, bool)
    gen = torch.from_numpy(np.ascontiguousarray(pool, np.float32))
    real = torch.from_numpy(np.ascontiguousarray(ref_feats, np.float32))
    n, mref = len(gen), len(real)
    splits = len(masks)
    sizes = _sides(masks)
    if sizes.min() <= k:
        raise ValueError(f"precision/recall of a half need more than k = {k} samples (N = {n})")
    # reference radii: (k+1)-th smallest distance, oneself included (torch-fidelity)
    r_ref = torch.empty(mref)
    rb = _rows(mref)
    for j0 in range(0, mref, rb):
        r_ref[j0:j0 + rb] = _cdist(real[j0:j0 + rb], real).kthvalue(k + 1, dim=1).values
    # each sample's nearest samples (itself among them), enough for any half's radius
    depth = min(n, depth or 4 * k + 33)
    nn_d = np.empty((n, depth), np.float32)
    nn_i = np.empty((n, depth), np.int64)
    rb = _rows(n)
    for i0 in range(0, n, rb):
        v, i = torch.topk(_cdist(gen[i0:i0 + rb], gen), depth, dim=1, largest=False, sorted=True)
        nn_d[i0:i0 + rb], nn_i[i0:i0 + rb] = v.numpy(), i.numpy()
    r_full = nn_d[:, k].copy()
    # radius of every sample in every half it belongs to (-inf elsewhere): side 2b is H, 2b+1 is H'
    radii = np.full((2 * splits, n), -np.inf, np.float32)
    rows = np.arange(n)
    for b in range(splits):
        for side, mem in ((0, masks[b]), (1, ~masks[b])):
            cum = np.cumsum(mem[nn_i], axis=1, dtype=np.int32)
            enough = cum[:, -1] >= k + 1
            pos = np.argmax(cum >= k + 1, axis=1)
            r = nn_d[rows, pos]
            ok = mem & enough
            radii[2 * b + side, ok] = r[ok]
            members = np.flatnonzero(mem)
            for i in np.flatnonzero(mem & ~enough):          # the list held too few of this half
                radii[2 * b + side, i] = float(_cdist(gen[i:i + 1], gen[members]).kthvalue(k + 1, dim=1).values[0])
    r_max = torch.from_numpy(np.maximum(radii.max(0), r_full))
    r_full_t = torch.from_numpy(r_full)
    # one pass over reference blocks: precision of every sample, coverage of every reference point
    inside = torch.zeros(n, dtype=torch.bool)
    covered_full = np.zeros(mref, bool)
    covered = np.zeros((2 * splits, mref), bool)
    pair_chunk = max(1, BLOCK_ENTRIES // (8 * len(radii)))
    for j0 in range(0, mref, rb):
        dist = _cdist(real[j0:j0 + rb], gen)                   # (block, N), torch-fidelity's recall orientation
        j1 = j0 + len(dist)
        covered_full[j0:j1] = (dist <= r_full_t[None, :]).any(1).numpy()
        inside |= (dist <= r_ref[j0:j1, None]).any(0)
        ys, xs = torch.nonzero(dist <= r_max[None, :], as_tuple=True)   # sorted by reference point
        ds = dist[ys, xs].numpy()
        ys, xs = ys.numpy(), xs.numpy()
        del dist
        for c0 in range(0, len(ds), pair_chunk):
            yc, xc, dc = ys[c0:c0 + pair_chunk], xs[c0:c0 + pair_chunk], ds[c0:c0 + pair_chunk]
            hit = radii[:, xc] >= dc[None, :]                  # (sides, pairs)
            first = np.flatnonzero(np.r_[True, yc[1:] != yc[:-1]])
            yu = yc[first] + j0
            covered[:, yu] |= np.logical_or.reduceat(hit, first, axis=1)
    inside = inside.numpy().astype(np.float64)
    prec = np.stack([masks @ inside, (~masks) @ inside], axis=1) / sizes
    rec = covered.mean(1).reshape(splits, 2)
    return prec, rec, float(inside.mean()), float(covered_full.mean()), covered


def recall_deviations(rec: np.ndarray, covered: np.ndarray, key: str, seed: int = BOOT_SEED) -> np.ndarray:
    """Recall's D_b + E_b, E_b = Σ_j s_bj (c_j(H_b) − c_j(H'_b)) / (2M) with signs s = ±1 drawn from
    the halvings' key (so rows split alike share them; module docstring: recall)."""
    rec = np.asarray(rec, np.float64)
    splits, mref = len(rec), covered.shape[1]
    rng = np.random.default_rng([seed, int(key, 16) % (2 ** 32), mref, 1])
    signs = rng.integers(0, 2, size=(splits, mref), dtype=np.int8) * 2 - 1
    diff = covered[0::2].astype(np.int8) - covered[1::2].astype(np.int8)
    return deviations(rec) + (signs * diff).sum(1, dtype=np.int64) / (2 * mref)


def is_scores(logits: np.ndarray, splits: int = IS_SPLITS) -> float:
    """Inception Score of logits in their given order (torch-fidelity's splits, no shuffle)."""
    import torch

    t = torch.from_numpy(np.asarray(logits, np.float64))
    p, logp = t.softmax(1), t.log_softmax(1)
    n, scores = len(t), []
    for i in range(splits):
        sl = slice(i * n // splits, (i + 1) * n // splits)
        q = p[sl].mean(0, keepdim=True)
        scores.append(float((p[sl] * (logp[sl] - q.log())).sum(1).mean().exp()))
    return float(np.mean(scores))


def is_halves(logits, masks: np.ndarray) -> np.ndarray:
    """(splits, 2) IS of H and H' (each in sample order, IS_SPLITS splits)."""
    logits = np.asarray(logits)
    if _sides(masks).min() < IS_SPLITS:
        raise ValueError(f"IS of a half needs at least {IS_SPLITS} samples (N = {len(logits)})")
    return np.array([[is_scores(logits[m]), is_scores(logits[~m])] for m in np.asarray(masks, bool)])


def mean_halves(values, masks: np.ndarray) -> np.ndarray:
    """(splits, 2) means of per-sample values over H and H'."""
    v = np.asarray(values, np.float64)
    masks = np.asarray(masks, bool)
    return np.stack([masks @ v, (~masks) @ v], axis=1) / _sides(masks)


# --- a row's interval columns ----------------------------------------------------------------------

INTERVAL_METRICS = ("fid", "kid", "precision", "recall", "is", "clip")


def row_fields() -> list[tuple[str, str, str]]:
    """The columns this module adds to a metrics row (drr.metrics.score.ROW_FIELDS)."""
    out = [("interval_method", "string", "how the *_lo/*_hi intervals were computed (drr.metrics.intervals)"),
           ("interval_level", "float64", "confidence level of every interval (0.95)"),
           ("boot_replicates", "int64", "B, replicates behind the intervals (2 per random halving)"),
           ("boot_key", "string", "key of the halvings: rows with the same key were split alike (paired)"),
           ("interval_note", "string", "n/a reason where intervals could not be computed")]
    for m in INTERVAL_METRICS:
        out += [(f"{m}_lo", "float64", f"lower end of the {m} interval"),
                (f"{m}_hi", "float64", f"upper end of the {m} interval"),
                (f"boot_{m}", "float64[]", f"the B half-sampling replicates of {m}, estimate ± (half − other "
                                           f"half)/2 (for paired differences)")]
    return out


def kid_scale(dev: np.ndarray, kid_std) -> float:
    """√(1 + kid_std²/((KID_SUBSETS − 1)·mean D²)): adds the subset noise of torch-fidelity's KID."""
    var = float(np.mean(np.square(dev)))
    if not kid_std or var <= 0:
        return 1.0
    return float(np.sqrt(1 + kid_std ** 2 / ((KID_SUBSETS - 1) * var)))


def row_intervals(row: dict, pool, logits, cos, ref, pr_k: int, labels=None, progress_desc=None) -> dict:
    """Interval columns for a scored row (`row` holds its point estimates), from the features that
    scored it. Metrics whose point estimate is null get no interval; a metric whose halves are too
    small for it gets none either, with the reason in ``interval_note``."""
    from drr.core.progress import Progress

    n = len(pool)
    out = {"interval_method": METHOD, "interval_level": LEVEL}
    if n < 4:
        out["interval_note"] = f"n/a (intervals need at least 4 samples, 2 in each half, got {n})"
        return out
    b = replicates_for(n, np.asarray(pool).shape[1])
    masks, key = half_samples(n, b // 2, labels)
    out.update(boot_replicates=b, boot_key=key)
    smallest = int(_sides(masks).min())
    dev, notes = {}, []
    if row.get("fid") is not None:
        prog = Progress(len(masks), progress_desc or "halvings FID", unit="split") if progress_desc else None
        dev["fid"] = deviations(fid_halves(pool, ref.mu, ref.sigma, masks, prog))
    if row.get("kid_mean") is not None:
        d = deviations(kid_halves(pool, ref.features, masks)[0])
        dev["kid"] = d * kid_scale(d, row.get("kid_std"))
    if row.get("precision") is not None:
        if smallest > pr_k:
            p, r, _, _, covered = pr_halves(pool, ref.features, pr_k, masks)
            dev["precision"], dev["recall"] = deviations(p), recall_deviations(r, covered, key)
        else:
            notes.append(f"precision/recall: n/a (a half of {smallest} samples has no k = {pr_k} neighbours)")
    if row.get("is_mean") is not None and logits is not None:
        if smallest >= IS_SPLITS:
            dev["is"] = deviations(is_halves(logits, masks))
        else:
            notes.append(f"IS: n/a (a half of {smallest} samples has fewer than {IS_SPLITS} for its splits)")
    if row.get("clip_score") is not None and cos is not None:
        dev["clip"] = deviations(mean_halves(np.clip(np.asarray(cos, np.float64), 0, None), masks))
    for m, d in dev.items():
        est = float(row[POINT_FIELDS[m]])
        if not np.isfinite(est):  # no interval around a non-finite estimate: the row's range check refuses it
            continue
        reps = half_replicates(est, d)
        out[f"{m}_lo"], out[f"{m}_hi"] = basic_interval(est, reps)
        out[f"boot_{m}"] = [float(v) for v in reps]
    if notes:
        out["interval_note"] = "; ".join(notes)
    return out


# --- the with-replacement bootstrap (drr.tokenizer.report's rFID only) ------------------------------
# Not used for metrics rows (module docstring). Kept because drr.tokenizer.report calls it.

def bootstrap_indices(n: int, b: int, strata=None, seed: int = BOOT_SEED) -> tuple[np.ndarray, str]:
    """(B, N) int64 indices of B resamples with replacement and the key naming them.

    With `strata` (e.g. the class labels), position j of every resample draws from the samples of
    stratum strata[j]; positions keep their stratum, so the class counts are those of the set."""
    h = hashlib.sha256(f"{seed}|{n}|{b}|".encode())
    if strata is not None:
        strata = np.asarray(strata)
        if len(strata) != n:
            raise ValueError(f"strata has {len(strata)} entries for {n} samples")
        h.update(np.ascontiguousarray(strata.astype(np.int64)).tobytes())
    key = h.hexdigest()[:16]
    rng = np.random.default_rng([seed, n, b, int(key, 16) % (2 ** 32)])
    if strata is None:
        return rng.integers(0, n, size=(b, n)), key
    idx = np.empty((b, n), np.int64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        idx[:, members] = members[rng.integers(0, len(members), size=(b, len(members)))]
    return idx, key


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, N) multiplicities of each sample in each resample."""
    b = len(idx)
    w = np.zeros((b, n), np.int64)
    np.add.at(w, (np.repeat(np.arange(b), idx.shape[1]), idx.ravel()), 1)
    return w


def fid_replicates(pool, mu_ref, sigma_ref, weights: np.ndarray, progress=None) -> np.ndarray:
    """FID of each resample (rows of `weights`: multiplicities summing to N) against fixed
    reference statistics; with weights of all ones this is the FID of the set itself. Memory: N×N
    matrices when N ≤ d, else N×d."""
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
        cr = c @ _sym_sqrt(sigma_ref)
    out = np.empty(len(weights))
    for b, w in enumerate(np.asarray(weights, np.float64)):
        delta_sq = float(w @ g @ w) / n ** 2 if g is not None else None
        if n <= d:
            u = k @ w / n
            s = float(w @ u) / n
            act = np.flatnonzero(w > 0)
            sw = np.sqrt(w[act])
            m = k[np.ix_(act, act)] - u[act, None] - u[None, act] + s
            trace_sqrt = _sqrt_trace(np.linalg.eigvalsh(sw[:, None] * m * sw[None, :] / (n - 1)))
        else:
            delta = c.T @ w / n
            delta_sq = float(delta @ delta)
            dr = cr.T @ w / n
            mstar = ((cr * w[:, None]).T @ cr - n * np.outer(dr, dr)) / (n - 1)
            trace_sqrt = _sqrt_trace(np.linalg.eigvalsh((mstar + mstar.T) / 2))
        mean_term = float(a @ a) + 2 * float(ca @ w) / n + delta_sq
        tr_s = (float(sq @ w) - n * delta_sq) / (n - 1)
        out[b] = mean_term + tr_s + tr_ref - 2 * trace_sqrt
        if progress is not None:
            progress.update(1)
    return out
