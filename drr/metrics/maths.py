"""Metric maths on features: FID, IS, KID, precision/recall through torch-fidelity's own functions.

Every function takes features (never images) and returns ``(values, note)``: the values, or None
with a one-line note saying why the metric could not be computed ("n/a (...)"). Nothing is ever
filled in with a made-up number.

Conventions (the same as torch-fidelity's defaults unless stated):

- FID (Heusel et al.): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` on the 2048-d pool
  features, statistics in float64 (sample covariance, N - 1); torch-fidelity's
  `fid_statistics_to_metric` (trace of the square root from the eigenvalues of S1 S2).
  `fid_scipy` is an independent computation (scipy.linalg.sqrtm, as pytorch-fid / the ADM
  evaluator) used by the tests.
- IS (Salimans et al.): torch-fidelity's `isc_features_to_metric` on the 1008 'logits_unbiased',
  10 splits, shuffled with seed 2020; mean and std over splits.
- KID (Binkowski et al.): torch-fidelity's `kid_features_to_metric`, cubic polynomial kernel,
  100 subsets of ``metrics.kid_subset_size`` (reduced to the smaller set's size when a set is
  smaller; the row records the size used), seed 2020; reported as is (not x1000). Where the full
  kernel matrices are small and cheaper than the subsets' (`kid_from_full_kernels`), the same
  subsets are read out of them instead, with torch-fidelity's kernel and MMD functions.
- Precision/recall (Kynkäänniemi et al. 2019): torch-fidelity's `prc_features_to_metric`, k-th
  nearest neighbour balls (k = ``metrics.pr_k``, 3) in the pool feature space, all N samples against
  the M reference features (the ADM evaluator's convention: M = 10,000 reference images).
"""

from __future__ import annotations

import numpy as np
import torch

from drr.core.device import pick_device
from drr.core.errors import DrrError

IS_SPLITS = 10
KID_SUBSETS = 100
KID_FULL_KERNEL_MAX = 10 ** 8  # kernel entries (float32, 400 MB) up to which KID computes each kernel once
RNG_SEED = 2020  # torch-fidelity's default seed for IS shuffling and KID subsets


def na(reason: str) -> str:
    return f"n/a ({reason})"


# --- statistics ------------------------------------------------------------------------------------

class RunningStats:
    """Mean and covariance of a stream of feature batches, accumulated in float64.

    Lets the reference statistics of 1.28M ImageNet images be computed without holding all
    features; equals ``np.mean`` / ``np.cov(rowvar=False)`` up to float64 rounding.
    """

    def __init__(self, dim: int):
        self.n = 0
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros((dim, dim), np.float64)

    def update(self, feats: np.ndarray) -> None:
        f = np.asarray(feats, np.float64)
        self.n += len(f)
        self.s1 += f.sum(0)
        self.s2 += f.T @ f

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise DrrError(f"statistics need at least 2 images, got {self.n}")
        mu = self.s1 / self.n
        sigma = (self.s2 - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, (sigma + sigma.T) / 2


def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) in float64, as torch-fidelity's fid_features_to_statistics but in float64."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


# --- FID -------------------------------------------------------------------------------------------

def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """torch-fidelity's fid_statistics_to_metric (both statistics cast to float64)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    s1 = {"mu": np.asarray(mu1, np.float64), "sigma": np.asarray(sigma1, np.float64)}
    s2 = {"mu": np.asarray(mu2, np.float64), "sigma": np.asarray(sigma2, np.float64)}
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def fid_scipy(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Independent FID: scipy.linalg.sqrtm of S1 S2 (pytorch-fid / ADM evaluator style)."""
    import scipy.linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals (pytorch-fid)
        off = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + off) @ (sigma2 + off))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --- IS, KID, precision/recall ---------------------------------------------------------------------

def inception_score(logits: np.ndarray | None, note: str | None = None):
    """((mean, std), None) or (None, 'n/a (reason)')."""
    if logits is None:
        return None, na(note or "Inception logits unavailable")
    if len(logits) < IS_SPLITS:
        return None, na(f"IS needs at least {IS_SPLITS} samples for {IS_SPLITS} splits, got {len(logits)}")
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    r = isc_features_to_metric(torch.from_numpy(np.asarray(logits, np.float32)), IS_SPLITS, True, RNG_SEED)
    return (r[KEY_METRIC_ISC_MEAN], r[KEY_METRIC_ISC_STD]), None


def kid(sample_feats: np.ndarray, ref_feats: np.ndarray | None, subset_size: int, note: str | None = None):
    """((mean, std, subset size used), None) or (None, 'n/a (reason)')."""
    if ref_feats is None:
        return None, na(note or "the reference has no features")
    size = min(subset_size, len(sample_feats), len(ref_feats))
    if size < 2:
        return None, na(f"KID needs at least 2 samples and 2 reference features, got "
                        f"{len(sample_feats)} and {len(ref_feats)}")
    x, y = np.asarray(sample_feats, np.float32), np.asarray(ref_feats, np.float32)
    if len(x) ** 2 + len(x) * len(y) + len(y) ** 2 <= min(KID_FULL_KERNEL_MAX, 3 * KID_SUBSETS * size ** 2):
        return kid_from_full_kernels(x, y, size), None
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    r = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=KID_SUBSETS,
                               kid_subset_size=size, rng_seed=RNG_SEED, verbose=False)
    return (r[KEY_METRIC_KID_MEAN], r[KEY_METRIC_KID_STD], size), None


def kid_from_full_kernels(x: np.ndarray, y: np.ndarray, size: int) -> tuple[float, float, int]:
    """torch-fidelity's KID (the same subsets, drawn in the same order from the same seed, and its
    own kernel and MMD functions) with each kernel matrix computed once for all the points instead of
    once per subset: a subset's kernel is the full matrix's rows and columns of its points. At
    1,000 samples against 5,000 reference features (2048-d), one core: 11.2 s -> 3.7 s a row
    (measured on the small suite's features). Each kernel entry is the same float32 dot product,
    summed by the BLAS in another blocking, so the result equals torch-fidelity's to float32
    rounding (6e-9 relative there), not bit for bit; tests/test_metrics.py compares the two."""
    from torch_fidelity.metric_kid import kernel_poly, mmd2

    kxx, kxy, kyy = kernel_poly(x, x), kernel_poly(x, y), kernel_poly(y, y)
    rng = np.random.RandomState(RNG_SEED)
    mmds = np.zeros(KID_SUBSETS)
    for i in range(KID_SUBSETS):
        a = rng.choice(len(x), size, replace=False)
        b = rng.choice(len(y), size, replace=False)
        mmds[i] = mmd2(kxx[np.ix_(a, a)], kxy[np.ix_(a, b)], kyy[np.ix_(b, b)])
    return float(np.mean(mmds)), float(np.std(mmds)), size


def precision_recall(sample_feats: np.ndarray, ref_feats: np.ndarray | None, k: int,
                     note: str | None = None, device=None):
    """((precision, recall), None) or (None, 'n/a (reason)').

    precision: fraction of samples inside the union of the reference k-NN balls;
    recall: fraction of reference features inside the union of the sample k-NN balls.
    """
    if ref_feats is None:
        return None, na(note or "the reference has no features")
    if len(sample_feats) <= k or len(ref_feats) <= k:
        return None, na(f"k = {k} needs more than {k} samples and reference features, got "
                        f"{len(sample_feats)} and {len(ref_feats)}")
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    dev = pick_device(device)
    gen = torch.from_numpy(np.asarray(sample_feats, np.float32)).to(dev)
    real = torch.from_numpy(np.asarray(ref_feats, np.float32)).to(dev)
    r = prc_features_to_metric(gen, real, prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=True,
                               verbose=False)
    return (r[KEY_METRIC_PRECISION], r[KEY_METRIC_RECALL]), None
