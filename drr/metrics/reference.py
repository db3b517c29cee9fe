"""Reference statistics: Inception mean/covariance and features of the real images, cached by a key.

    python -m drr.metrics.reference --config configs/experiments/tiny.yaml --out REF.npz \
        [--import ADM_REF.npz] [--cache-dir results/cache/reference] [--device cuda] [--workers N]

Computed (default): ``metrics.reference_images`` images (null: all) of the split
``metrics.reference_split`` of the config's dataset (``data`` section, same preprocessing and
resolution as training), evenly spaced over the split (index floor(i T / N) of its T images, so
class-sorted folders such as ImageNet's give every class its share), through the configured
Inception (drr.metrics.inception). Written:

    mu        float64 (2048,)       mean of the pool features of all N reference images (FID)
    sigma     float64 (2048, 2048)  their covariance (N - 1)
    features  float32 (M, 2048)     pool features of M = min(metrics.pr_reference_size, N) images,
                                    evenly spaced over the N (index floor(i N / M)), for
                                    precision/recall and KID (ADM convention: M = 10,000)
    meta      str                   JSON: format, key, reference_id, kind, the key material, counts,
                                    full content sha256 of the N images, extractor, provenance

Imported (``--import FILE``): a precomputed reference, e.g. the ADM evaluator's reference batch
(``VIRTUAL_imagenet256_labeled.npz``: ``mu``/``sigma`` of the pool features of the whole training
set and ``arr_0``, 10,000 uint8 NHWC images; its ``mu_s``/``sigma_s`` spatial statistics for sFID are
not used), or any npz with ``mu``/``sigma`` (a mean/covariance file), and/or ``arr_0`` (uint8
images, whose features are computed here) or 2-d float features (``arr_0`` or ``features``). An
import is identified by the file's own sha256 (reference_id ``import-<16 hex>``); statistics or
features taken from the file are marked ``imported:<16 hex>`` as their extractor (the file's own
network, assumed to be the same TF Inception), those computed here carry this extractor's id.

Cache key: sha256 of the key material, which covers

- the image list: dataset, split, resolution, the dataset's preprocessing description, N, the
  identifiers of all N images in order (file names relative to the split folder, webdataset keys,
  or positions for in-memory sets), and the pixel content (uint8 bytes after preprocessing) of 32
  images evenly spaced over the list; the content sha256 of all N images is computed during the
  pass and recorded in ``meta`` but is not part of the key (it would need a full pass to check);
- the Inception preprocessing and the extractor id (hash of its trunk tensors);
- M and how the M images are chosen.

The entry lives at ``<cache-dir>/<key>.npz`` and is linked or copied to ``--out``. An existing
``--out`` or cache entry whose stored key material differs from the request (other images, other
preprocessing, other extractor) is refused with an error naming the file and what differs; it is
never reused or silently replaced.

Statistics and features are checked when a reference is read, and an imported file's before any
feature is computed (`check_statistics`): ``mu`` finite, ``sigma`` finite, symmetric and positive
semi-definite (both within float rounding), features finite. A covariance that is not one gives a
FID with no meaning (negative, even), not an error, so it is refused in one line naming the file
and the array.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path, sha256_file
from drr.core.progress import Progress, log
from drr.core.provenance import provenance
from drr.metrics.maths import RunningStats

FORMAT = "drr-reference/1"
CONTENT_SAMPLE = 32   # images whose pixels enter the cache key
DEFAULT_CACHE = "results/cache/reference"
REFERENCE_SELECTION = "metrics.reference_images of the split's T images, index floor(i * T / N)"
PR_SELECTION = "evenly spaced over the reference list: index floor(i * N / M), i = 0..M-1"



def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def pr_indices(n: int, m: int) -> np.ndarray:
    """M of N indices, evenly spaced (class-stratified for class-sorted folders)."""
    return (np.arange(m, dtype=np.int64) * n) // m


class SpacedSubset(torch.utils.data.Dataset):
    """N of a dataset's T items, evenly spaced (`pr_indices`), keeping its identifiers
    (``files``/``keys``), ``source`` and ``preprocessing`` for the key material."""

    def __init__(self, ds, n: int):
        self.ds, self.indices = ds, pr_indices(len(ds), n)
        self.source = getattr(ds, "source", "")
        self.preprocessing = getattr(ds, "preprocessing", None)
        for attr in ("files", "keys"):
            seq = getattr(ds, attr, None)
            if seq is not None and not callable(seq) and len(seq) == len(ds):
                setattr(self, attr, [seq[int(i)] for i in self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.ds[int(self.indices[i])]


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(8, max(0, cpus - 1))


# --- key material ----------------------------------------------------------------------------------

def image_identifiers(ds, n: int):
    keys = getattr(ds, "keys", None)
    if keys is not None and not callable(keys) and len(keys) == len(ds):
        return "keys", [str(k) for k in keys[:n]]
    files = getattr(ds, "files", None)
    if files is not None and len(files) == len(ds):
        src = getattr(ds, "source", "")
        return "relative paths", [os.path.relpath(f, src) if src else str(f) for f in files[:n]]
    return "positions", list(range(n))


def images_material(ds, n: int, data_cfg: dict, split: str) -> dict:
    kind, ids = image_identifiers(ds, n)
    h = hashlib.sha256()
    sample = sorted(set(int(i) for i in pr_indices(n, min(CONTENT_SAMPLE, n))) | {n - 1})
    for i in sample:
        h.update(str(i).encode())
        h.update(ds[i]["image"].numpy().tobytes())
    return {"dataset": data_cfg.get("name"), "split": split, "resolution": int(data_cfg["resolution"]),
            "selection": REFERENCE_SELECTION,
            "preprocessing": getattr(ds, "preprocessing", None), "num_images": n,
            "identifiers": kind, "list_sha256": _sha(ids), "content_sample": len(sample),
            "content_sample_sha256": h.hexdigest()}


def extractor_material(extractor) -> dict:
    return {"id": extractor.id, "preprocessing": extractor.preprocessing}


def describe_difference(have: dict, want: dict) -> str:
    parts = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            sub = [s for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)]
            parts.append(f"{k}: " + ", ".join(f"{s} {_short(a.get(s))} vs requested {_short(b.get(s))}"
                                               for s in sub[:3]))
        else:
            parts.append(f"{k}: {_short(a)} vs requested {_short(b)}")
    return "; ".join(parts) or "key differs"


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


# --- files -----------------------------------------------------------------------------------------

SYMMETRY_TOL = 1e-6  # |S - S^T| allowed, relative to max |S|: rounding of a float64 covariance
PSD_TOL = 1e-6       # eigenvalue of S allowed below 0, relative to max |S|: rounding as well


def check_statistics(path, mu, sigma, features=None) -> None:
    """DrrError naming `path` and the array unless `mu` and `features` (None: none) are finite
    numbers and `sigma` is a covariance: finite, symmetric and positive semi-definite within
    rounding (Cholesky of S + PSD_TOL max|S| I). Shapes are checked by the scorer, against the
    extractor's width."""
    for key, arr in (("mu", mu), ("sigma", sigma), ("features", features)):
        if arr is None:
            continue
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DrrError(f"{path}: '{key}' holds {arr.dtype} values, not numbers")
        if not np.isfinite(arr).all():
            raise DrrError(f"{path}: '{key}' holds NaN or inf")
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1] or not sigma.size:
        return
    s = np.asarray(sigma, np.float64)
    scale = float(np.abs(s).max()) or 1.0
    asym = float(np.abs(s - s.T).max())
    if asym > SYMMETRY_TOL * scale:
        raise DrrError(f"{path}: 'sigma' is not symmetric (|S - S^T| up to {asym:.3g}); not a "
                       f"covariance")
    try:
        np.linalg.cholesky(s + np.eye(len(s)) * (PSD_TOL * scale))
    except np.linalg.LinAlgError:
        low = float(np.linalg.eigvalsh(s)[0])
        raise DrrError(f"{path}: 'sigma' is not positive semi-definite (smallest eigenvalue "
                       f"{low:.3g}); not a covariance") from None

@dataclass
class Reference:
    path: Path
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    meta: dict

    @property
    def id(self) -> str:
        return self.meta["reference_id"]


def read_meta(path) -> dict:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise DrrError(f"{path}: not a drr reference file (no 'meta'); import it with "
                               f"python -m drr.metrics.reference --import {path}")
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError) as e:
        raise DrrError(f"{path}: not a readable reference .npz ({e})") from None
    if meta.get("format") != FORMAT:
        raise DrrError(f"{path}: reference format {meta.get('format')!r}, expected {FORMAT!r}; recompute it")
    return meta


def read_reference(path) -> Reference:
    path = Path(path)
    meta = read_meta(path)
    with np.load(path, allow_pickle=False) as z:
        for key in ("mu", "sigma"):
            if key not in z.files:
                raise DrrError(f"{path}: no '{key}' array; not a drr reference file")
        feats = z["features"] if "features" in z.files else None
        mu, sigma = z["mu"], z["sigma"]
    check_statistics(path, mu, sigma, feats)
    return Reference(path, mu, sigma, feats, meta)


def write_reference(path, mu, sigma, features, meta: dict) -> None:
    arrays = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64),
              "meta": np.array(json.dumps(meta, sort_keys=True, default=str))}
    if features is not None:
        arrays["features"] = np.asarray(features, np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def check_entry(path, key: str, material: dict, what: str) -> bool:
    """True if `path` holds exactly this request; False if absent; DrrError if it differs."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        meta = read_meta(path)
    except DrrError as e:
        raise DrrError(f"{path}: {what} exists but is not a usable drr reference ({e}); delete it") from None
    if meta.get("key") == key and meta.get("material") == material:
        return True
    raise DrrError(f"{path}: {what} was made from something else and is not reused "
                   f"({describe_difference(meta.get('material') or {}, material)}); delete it to recompute")


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    with atomic_path(dst) as tmp:
        tmp.unlink()  # a hard link needs a free name; the temporary's was reserved by atomic_path
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


# --- computing -------------------------------------------------------------------------------------

def extract_dataset(ds, n: int, keep: np.ndarray, extractor, batch_size: int, workers: int, desc: str):
    """One pass over the first n images: running stats, kept features, content sha256, timings."""
    from drr.data import collate

    subset = torch.utils.data.Subset(ds, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate,
                                         num_workers=workers)
    stats = RunningStats(extractor.pool_dim)
    want = np.zeros(n, bool)
    want[keep] = True
    kept, content = [], hashlib.sha256()
    progress = Progress(n, desc, unit="img")
    t0, done = time.monotonic(), 0
    for batch in loader:
        images = batch["image"]
        content.update(images.numpy().tobytes())
        pool = extractor(images)["pool"]
        stats.update(pool)
        sel = want[done:done + len(images)]
        if sel.any():
            kept.append(pool[sel])
        done += len(images)
        progress.update(len(images))
    secs = time.monotonic() - t0
    feats = np.concatenate(kept) if kept else np.zeros((0, extractor.pool_dim), np.float32)
    mu, sigma = stats.result()
    return mu, sigma, feats, content.hexdigest(), secs


def reference_request(cfg: dict, extractor, dataset_kwargs: dict | None = None):
    """(dataset, N, M, key, material) for the config's reference split.

    dataset_kwargs go to drr.data.build_dataset (tests: Fashion-MNIST's verify=False).
    """
    from drr.data import build_dataset

    m = cfg["metrics"]
    split = m["reference_split"]
    ds = build_dataset(cfg["data"], split, **(dataset_kwargs or {}))
    n = len(ds)
    if m["reference_images"] is not None:
        if m["reference_images"] > n:
            raise DrrError(f"metrics.reference_images: {m['reference_images']} requested but split "
                           f"'{split}' of {cfg['data']['name']} has {n} images")
        n = m["reference_images"]
        if n < len(ds):
            ds = SpacedSubset(ds, n)
    if n < 2:
        raise DrrError(f"metrics.reference_split: split '{split}' has {n} image(s); statistics need 2")
    mm = min(m["pr_reference_size"], n)
    material = {"format": FORMAT, "images": images_material(ds, n, cfg["data"], split),
                "extractor": extractor_material(extractor),
                "pr_reference": {"size": mm, "selection": PR_SELECTION}}
    return ds, n, mm, _sha(material)[:32], material


def import_request(src: Path, cfg: dict, extractor):
    """(arrays info, key, material) for an imported reference file."""
    import zipfile

    from drr.metrics.samples import npz_keys, read_npy_header

    sha = sha256_file(src)

    keys = npz_keys(src)
    has_stats = "mu" in keys and "sigma" in keys
    image_key = feat_key = None
    if "arr_0" in keys:
        with zipfile.ZipFile(src) as zf, zf.open("arr_0.npy") as f:
            shape, dtype = read_npy_header(f, src, "arr_0")
        if dtype == np.uint8 and len(shape) == 4:
            image_key = "arr_0"
        elif len(shape) == 2 and np.issubdtype(dtype, np.floating):
            feat_key = "arr_0"
        else:
            raise DrrError(f"{src}: 'arr_0' is neither uint8 (N, H, W, 3) images nor (N, D) float features "
                           f"({dtype} {shape})")
    if feat_key is None and image_key is None and "features" in keys:
        feat_key = "features"
    if not has_stats and image_key is None and feat_key is None:
        raise DrrError(f"{src}: nothing to import: needs 'mu' and 'sigma', or 'arr_0' images/features "
                       f"(has {', '.join(keys)})")
    material = {"format": FORMAT, "import": {"sha256": sha, "stats": has_stats, "images": image_key,
                                             "features": feat_key},
                "extractor": extractor_material(extractor) if image_key else None,
                "pr_reference": {"size": cfg["metrics"]["pr_reference_size"], "selection": PR_SELECTION}}
    return (sha, has_stats, image_key, feat_key), _sha(material)[:32], material


def compute_import(src: Path, info, cfg: dict, extractor, batch_size: int):
    sha, has_stats, image_key, feat_key = info
    tag = f"imported:{sha[:16]}"
    d = extractor.pool_dim
    mu = sigma = feats = None
    stats_from = feats_from = None
    content, secs, n_stats = None, 0.0, None
    if has_stats:
        with np.load(src, allow_pickle=False) as z:
            mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise DrrError(f"{src}: mu {mu.shape} / sigma {sigma.shape} are not ({d},) / ({d}, {d}) "
                           f"pool statistics")
        check_statistics(src, mu, sigma)
        stats_from = tag
    if image_key:
        from drr.metrics.samples import NpzImages

        imgs = NpzImages(src, image_key)
        n = len(imgs)
        mm = min(cfg["metrics"]["pr_reference_size"], n)
        want = np.zeros(n, bool)
        want[pr_indices(n, mm)] = True
        stats = RunningStats(d)
        kept, h = [], hashlib.sha256()
        progress = Progress(n, f"reference import {src.name}", unit="img")
        t0, done = time.monotonic(), 0
        for batch in imgs.batches(batch_size):
            h.update(batch.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
            pool = extractor(batch)["pool"]
            stats.update(pool)
            sel = want[done:done + len(batch)]
            if sel.any():
                kept.append(pool[sel])
            done += len(batch)
            progress.update(len(batch))
        secs = time.monotonic() - t0
        feats, feats_from, content = np.concatenate(kept), extractor.id, h.hexdigest()
        if mu is None:
            mu, sigma = stats.result()
            stats_from, n_stats = extractor.id, n
    elif feat_key:
        with np.load(src, allow_pickle=False) as z:
            allf = np.asarray(z[feat_key], np.float32)
        if allf.ndim != 2 or allf.shape[1] != d:
            raise DrrError(f"{src}: '{feat_key}' features have shape {allf.shape}, expected (N, {d})")
        if not np.isfinite(allf).all():
            raise DrrError(f"{src}: '{feat_key}' holds NaN or inf")
        mm = min(cfg["metrics"]["pr_reference_size"], len(allf))
        feats, feats_from = allf[pr_indices(len(allf), mm)], tag
        if mu is None:
            mu, sigma = allf.astype(np.float64).mean(0), np.cov(allf.astype(np.float64), rowvar=False)
            stats_from, n_stats = tag, len(allf)
    return mu, sigma, feats, {"stats_extractor": stats_from, "features_extractor": feats_from,
                              "n_images": n_stats, "content_sha256": content, "seconds": secs}


def build_reference(cfg: dict, out, *, extractor=None, import_path=None, cache_dir=DEFAULT_CACHE,
                    batch_size: int | None = None, workers: int | None = None, device=None,
                    dataset_kwargs: dict | None = None) -> dict:
    """Compute (or import) the reference for `cfg`, through the cache; returns its meta."""
    out = Path(out)
    if extractor is None:
        from drr.metrics.inception import load_inception
        extractor = load_inception(cfg["metrics"], device or cfg["device"])
    batch_size = batch_size or cfg["metrics"]["batch_size"]
    workers = default_workers() if workers is None else workers
    if import_path is not None:
        src = Path(import_path)
        if not src.is_file():
            raise DrrError(f"{src}: reference file to import not found")
        info, key, material = import_request(src, cfg, extractor)
    else:
        ds, n, mm, key, material = reference_request(cfg, extractor, dataset_kwargs)
    if check_entry(out, key, material, "existing --out reference"):
        log(f"{out}: up to date (key {key[:16]})")
        return read_meta(out)
    entry = Path(cache_dir) / f"{key}.npz" if cache_dir else None
    if entry is not None and check_entry(entry, key, material, "reference cache entry"):
        log(f"reusing cached reference {entry}")
        _link_or_copy(entry, out)
        return read_meta(out)

    t0 = time.monotonic()
    if import_path is not None:
        mu, sigma, feats, extra = compute_import(src, info, cfg, extractor, batch_size)
        rid, kind = f"import-{info[0][:16]}", "imported"
        extra["source"] = str(src)
    else:
        desc = f"reference {cfg['data']['name']} {cfg['metrics']['reference_split']}"
        mu, sigma, feats, content, secs = extract_dataset(ds, n, pr_indices(n, mm), extractor,
                                                          batch_size, workers, desc)
        rid, kind = f"ref-{key[:16]}", "computed"
        extra = {"stats_extractor": extractor.id, "features_extractor": extractor.id, "n_images": n,
                 "content_sha256": content, "seconds": secs}
    meta = {"format": FORMAT, "key": key, "reference_id": rid, "kind": kind, "material": material,
            "n_features": None if feats is None else int(len(feats)),
            "pr_selection": PR_SELECTION if feats is not None else None,
            "extractor": extractor.describe() if hasattr(extractor, "describe") else {"id": extractor.id},
            "wall_s": round(time.monotonic() - t0, 2),
            "images_per_s": (round(extra["n_images"] / extra["seconds"], 2)
                             if extra.get("n_images") and extra.get("seconds") else None),
            "provenance": provenance(cfg), **extra}
    target = entry if entry is not None else out
    write_reference(target, mu, sigma, feats, meta)
    if entry is not None:
        _link_or_copy(entry, out)
    log(f"wrote {out} ({rid}: {kind}, statistics of {meta['n_images'] or 'imported'} images, "
        f"{meta['n_features']} features, {meta['wall_s']} s)")
    return meta


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="reference .npz to write")
    p.add_argument("--import", dest="import_path", type=Path,
                   help="precomputed reference to import (ADM reference batch, mean/covariance npz)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE,
                   help=f"content-keyed cache of references (default {DEFAULT_CACHE}); '' for none")
    p.add_argument("--device", help="auto | cuda | cuda:N | cpu (default: the config's `device`)")
    p.add_argument("--workers", type=int, help="data-loader processes (default: CPUs - 1, at most 8)")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        build_reference(cfg, args.out, import_path=args.import_path, cache_dir=args.cache_dir or None,
                        workers=args.workers, device=args.device)


if __name__ == "__main__":
    main()
