"""95% confidence intervals of FID, KID, precision, recall, IS and CLIP score: a bootstrap over
the generated samples, with the reference held fixed.

Method (fixed before any result of the small suite; docs/small-suite.md):

- **What is resampled.** The N generated samples of a row, with replacement, B times, *stratified
  by class* when the sample set has labels (generation puts class i % num_classes on sample i, so
  the class counts are fixed by design and a plain bootstrap would add class-count noise that the
  real sampling does not have). The reference (its mean/covariance and its features) is held
  fixed: every claim compares conditions scored against the same reference, so the interval is
  conditional on it. Independent sampling seeds would need B whole sample sets; the bootstrap
  reuses the Inception features the metrics stage already computed.
- **One index matrix per (N, B, strata).** The resampled indices come from a fixed seed and the
  row's N and strata (`bootstrap_indices`), and the row stores the B replicates of each metric and
  the key of its index matrix (``boot_key``). Two rows with the same key were resampled at the same
  sample indices. Sample i of every set is a pure function of (seed, i) with class i % num_classes,
  so (sample i of A, sample i of B) are independent pairs over i — the drafts and the revised images
  of one cell (the same samples), two cells of one experiment, two experiments with the same seed —
  and differences of their replicates are a *paired* bootstrap of the difference (`paired`), which
  keeps what the two sets share (classes, seeds, and for drafts vs revised the images' contents) out
  of the interval. Rows with different keys were resampled independently, and differences of their
  replicates are the two-sample bootstrap of independent sets (valid, and conservative when the sets
  are positively correlated).
- **Basic (pivotal) interval.** ``[2θ̂ − q(1 − α/2), 2θ̂ − q(α/2)]`` of the replicates θ*, not their
  percentiles. FID is biased in N (E FID_N − FID_∞ ≈ c/N > 0: a finite set's covariance misses
  directions, and the mean-difference term carries tr Σ/N of noise). A resample is N draws from the
  N observed points, about 63% of them distinct, so it has *the same kind* of finite-sample bias
  once more: the replicates sit near θ̂ + bias, and percentile intervals would be centred near
  θ_∞ + 2·bias. The basic interval reflects the replicates around θ̂, which removes the first-order
  bias (θ̂* − θ̂ ≈ θ̂ − θ in distribution): it targets the population FID of the generator against
  this reference's statistics. For paired differences the shared part of the bias cancels as well.
  KID (an unbiased U-statistic, but not under duplicated points), recall (k-NN radii of a
  resample shrink at duplicates) and IS (a non-linear function of split means) are treated the same
  way; precision and CLIP score are means of per-sample values, for which basic and percentile
  intervals agree. tests/test_intervals.py checks the coverage on Gaussians where FID has a closed
  form. In Inception's 2048 dimensions with N ≈ 1,000-5,000 samples the asymptotics are only
  approximate; docs/small-suite.md says what that means for the verdicts.

Per replicate the metrics are computed exactly, not linearised:

- FID: with C the centred features and w the multiplicities, the resample's covariance is
  ``(Cᵀ diag(w) C − N δδᵀ)/(N − 1)``, δ = Cᵀw/N. When N ≤ d the trace of the square root is taken
  from the eigenvalues of the n'×n' matrix ``√w_i √w_j (K − u1ᵀ − 1uᵀ + s11ᵀ)_ij/(N − 1)`` over the
  n' distinct resampled points, K = C Σ_ref Cᵀ, u = Kw/N, s = wᵀKw/N² (the non-zero eigenvalues of
  S* Σ_ref are those of this matrix), else from the d×d ``Σ_ref^½ S* Σ_ref^½``.
- KID: the full-set unbiased MMD² with torch-fidelity's cubic kernel (x·y/d + 1)³, from kernel
  matrices computed once; the interval is that estimator's spread, centred on the row's KID (the
  mean over torch-fidelity's 100 subsets; its subset noise is in ``kid_std``).
- precision: mean over resampled samples of "inside a reference k-NN ball" (radii of the fixed
  reference, as torch-fidelity); recall: fraction of reference features inside the k-NN balls of
  the resample, radii the k-th nearest *other* resampled point (copies of a point count).
- IS: 10 splits of the resampled logits in resampled order (torch-fidelity's estimator).
- CLIP score: mean of max(cos, 0) over the resample.
"""

from __future__ import annotations

import hashlib

import numpy as np

BOOT_SEED = 13           # seed of every index matrix (fixed by the protocol, docs/small-suite.md)
LEVEL = 0.95             # two-sided confidence level of every interval
METHOD = "basic bootstrap over generated samples, stratified by class, reference fixed"
IS_SPLITS = 10
# metric key -> (row field of the point estimate)
POINT_FIELDS = {"fid": "fid", "kid": "kid_mean", "precision": "precision", "recall": "recall",
                "is": "is_mean", "clip": "clip_score"}


def replicates_for(n: int, d: int = 2048) -> int:
    """B: 500 replicates while N ≤ d (each FID replicate an n'×n' eigenproblem, ~20 ms at N = 1,000
    on one core); 200 above (a d×d one, ~0.8 s), which keeps a 5,000-sample row near 3 minutes."""
    return 500 if n <= d else 200


# --- resampling ------------------------------------------------------------------------------------

def bootstrap_indices(n: int, b: int, strata=None, seed: int = BOOT_SEED) -> tuple[np.ndarray, str]:
    """(B, N) int64 indices of B resamples and the key naming them (same key, same matrix).

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


def basic_interval(estimate: float, reps, level: float = LEVEL) -> tuple[float, float]:
    """``[2θ̂ − q(1 − α/2), 2θ̂ − q(α/2)]`` of the replicates (non-finite replicates dropped)."""
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
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


# --- per-metric replicates -------------------------------------------------------------------------

def _sqrt_trace(eigs: np.ndarray) -> float:
    return float(np.sqrt(np.clip(eigs, 0, None)).sum())


def fid_replicates(pool, mu_ref, sigma_ref, weights: np.ndarray, progress=None) -> np.ndarray:
    """FID of each resample (rows of `weights`: multiplicities summing to N) against fixed
    reference statistics; with weights of all ones this is the FID of the set itself."""
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


def kid_replicates(pool, ref_feats, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """(replicates, full-set estimate) of the unbiased MMD² with the cubic polynomial kernel."""
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


def _kth_other(dist_sorted: np.ndarray, order: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """k-NN radius of each resampled point among the *other* resampled points (copies count):
    `order[i]` lists the other points by distance, `dist_sorted[i]` their distances."""
    own = w - 1                                      # copies of a point at distance 0
    cum = own[:, None] + np.cumsum(w[order], axis=1)
    reached = cum >= k
    pos = np.where(reached.any(1), np.argmax(reached, axis=1), cum.shape[1] - 1)  # else: the farthest kept
    r = dist_sorted[np.arange(len(w)), pos]
    r[own >= k] = 0.0
    return r


def pr_replicates(pool, ref_feats, k: int, weights: np.ndarray):
    """(precision replicates, recall replicates, precision, recall) with torch-fidelity's
    definitions (torch.cdist distances in float32; radius = (k+1)-th value including oneself)."""
    import torch  # here, not at the top: drr.reports.claims (parsed by every Snakemake job) imports this module

    gen = torch.from_numpy(np.asarray(pool, np.float32))
    real = torch.from_numpy(np.asarray(ref_feats, np.float32))
    d_rr = torch.cdist(real, real)
    r_ref = d_rr.kthvalue(k + 1, dim=1).values                 # (M,) reference radii
    d_gr = torch.cdist(gen, real)                             # (N, M)
    inside_ref = (d_gr <= r_ref[None, :]).any(1).numpy().astype(np.float64)   # per-sample
    d_gg = torch.cdist(gen, gen)
    r_gen = d_gg.kthvalue(k + 1, dim=1).values
    recall = float((d_gr <= r_gen[:, None]).any(0).float().mean())
    n = len(gen)
    depth = min(n - 1, 4 * k + 32)                              # enough neighbours for any resample
    d_sorted, order = torch.sort(d_gg, dim=1)
    # drop oneself from each neighbour list (first unless ties at distance 0 reorder it)
    keep = order != torch.arange(n)[:, None]
    order = order[keep].view(n, n - 1)[:, :depth].numpy()
    d_sorted = d_sorted[keep].view(n, n - 1)[:, :depth].numpy()
    d_gr = d_gr.numpy()
    w_all = np.asarray(weights)
    prec = w_all @ inside_ref / n
    rec = np.empty(len(w_all))
    for b, w in enumerate(w_all):
        act = np.flatnonzero(w > 0)
        r = _kth_other(d_sorted, order, w, k)[act]
        rec[b] = float((d_gr[act] <= r[:, None]).any(0).mean())
    return prec, rec, float(inside_ref.mean()), recall


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


def is_replicates(logits, idx: np.ndarray) -> np.ndarray:
    return np.array([is_scores(np.asarray(logits)[i]) for i in idx])


# --- a row's interval columns ----------------------------------------------------------------------

INTERVAL_METRICS = ("fid", "kid", "precision", "recall", "is", "clip")


def row_fields() -> list[tuple[str, str, str]]:
    """The columns this module adds to a metrics row (drr.metrics.score.ROW_FIELDS)."""
    out = [("interval_method", "string", "how the *_lo/*_hi intervals were computed (drr.metrics.intervals)"),
           ("interval_level", "float64", "confidence level of every interval (0.95)"),
           ("boot_replicates", "int64", "B, bootstrap replicates behind the intervals"),
           ("boot_key", "string", "key of the resampled index matrix: rows with the same key are paired"),
           ("interval_note", "string", "n/a reason where intervals could not be computed")]
    for m in INTERVAL_METRICS:
        out += [(f"{m}_lo", "float64", f"lower end of the {m} interval"),
                (f"{m}_hi", "float64", f"upper end of the {m} interval"),
                (f"boot_{m}", "float64[]", f"the B bootstrap replicates of {m} (for paired differences)")]
    return out


def row_intervals(row: dict, pool, logits, cos, ref, pr_k: int, labels=None, progress_desc=None) -> dict:
    """Interval columns for a scored row (`row` holds its point estimates), from the features that
    scored it. Metrics whose point estimate is null get no interval."""
    from drr.core.progress import Progress

    n = len(pool)
    out = {"interval_method": METHOD, "interval_level": LEVEL}
    if n < 2:
        out["interval_note"] = f"n/a (intervals need at least 2 samples, got {n})"
        return out
    b = replicates_for(n, np.asarray(pool).shape[1])
    idx, key = bootstrap_indices(n, b, labels)
    w = counts(idx, n)
    out.update(boot_replicates=b, boot_key=key)
    reps = {}
    if row.get("fid") is not None:
        prog = Progress(b, progress_desc or "bootstrap FID", unit="rep") if progress_desc else None
        reps["fid"] = fid_replicates(pool, ref.mu, ref.sigma, w, prog)
    if row.get("kid_mean") is not None:
        kid_reps, kid_full = kid_replicates(pool, ref.features, w)
        reps["kid"] = kid_reps - kid_full + row["kid_mean"]   # spread of the full-set estimator
    if row.get("precision") is not None:
        reps["precision"], reps["recall"], _, _ = pr_replicates(pool, ref.features, pr_k, w)
    if row.get("is_mean") is not None and logits is not None:
        reps["is"] = is_replicates(logits, idx)
    if row.get("clip_score") is not None and cos is not None:
        reps["clip"] = w @ np.clip(np.asarray(cos, np.float64), 0, None) / n
    for m, r in reps.items():
        lo, hi = basic_interval(row[POINT_FIELDS[m]], r)
        out[f"{m}_lo"], out[f"{m}_hi"] = lo, hi
        out[f"boot_{m}"] = [float(v) for v in r]
    return out
