"""Score a sample set against a reference: FID, IS, KID, precision/recall and CLIP score.

    python -m drr.metrics.score --config configs/experiments/tiny.yaml [--config ablation.yaml] \
        [--set metrics.min_samples=50000] \
        --samples results/samples/tiny/samples.npz --reference results/reference/tiny.npz \
        --out results/metrics/tiny/base.parquet \
        [--phase revised|draft|all] [--experiment NAME] [--variant NAME] [--device cuda|cpu] \
        [--features-cache results/cache/features]

One row per phase: ``revised`` scores ``arr_0`` (the final samples), ``draft`` scores ``drafts``
(the draft-phase images, present when generation.save_drafts was on), ``all`` every phase the file
has. ``--experiment`` defaults to the first config's file stem, ``--variant`` to the stems of the
other configs joined by '+' ('base' when there are none). The rows go to ``--out`` atomically:
``.parquet`` (typed columns, ROW_FIELDS below), ``.jsonl`` (one JSON object per line) or ``.json``
(a list). A config whose ``metrics.min_samples`` exceeds the number of samples is refused before
anything is computed. The reference (drr.metrics.reference) must come from the same extractor as
the one used here (its trunk id), and a computed reference from the config's dataset, reference
split and resolution; anything else is refused. Progress lines give images/s and the time left.
Metrics that cannot be computed are null with a ``*_note`` column saying ``n/a (reason)``.
Every metric also gets a 95% interval (``<metric>_lo``/``_hi``) and its half-sampling replicates
(``boot_<metric>``, for paired differences): drr.metrics.intervals says how and why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path, sha256_file, write_text
from drr.core.lock import hold
from drr.core.progress import Progress, log
from drr.core.provenance import provenance
from drr.metrics import intervals, maths
from drr.metrics.samples import PHASE_KEYS, NpzImages, npz_keys, read_captions

PR_CONVENTION = ("Kynkaanniemi et al. 2019 k-NN manifolds in Inception pool features; all N samples vs "
                 "M reference features (ADM convention M = 10000)")

# name, pyarrow type, meaning. The schema of every row (Parquet columns; JSON keys).
ROW_FIELDS = [
    ("experiment", "string", "experiment name (first config's stem unless --experiment)"),
    ("variant", "string", "variant name (--variant; else the other configs' stems, 'base' when none)"),
    ("phase", "string", "revised (arr_0) | draft (drafts)"),
    ("sample_key", "string", "npz array scored"),
    ("n_samples", "int64", "number of images scored; every metric of the row is over these"),
    ("min_samples", "int64", "metrics.min_samples at scoring time (null: no minimum)"),
    ("fid", "float64", "FID against the reference statistics (torch-fidelity)"),
    ("fid_note", "string", "n/a reason when fid is null"),
    ("is_mean", "float64", "Inception Score, mean over 10 splits"),
    ("is_std", "float64", "Inception Score, std over 10 splits"),
    ("is_note", "string", "n/a reason when is_mean is null"),
    ("kid_mean", "float64", "KID (not x1000), mean over 100 subsets"),
    ("kid_std", "float64", "KID std over subsets"),
    ("kid_subset_size", "int64", "KID subset size used"),
    ("kid_note", "string", "n/a reason when kid_mean is null"),
    ("precision", "float64", "improved precision (Kynkaanniemi et al.)"),
    ("recall", "float64", "improved recall"),
    ("pr_k", "int64", "k of the k-NN radii (metrics.pr_k)"),
    ("pr_reference_size", "int64", "M reference features used for precision/recall and KID"),
    ("pr_convention", "string", "how precision/recall were computed"),
    ("pr_note", "string", "n/a reason when precision is null"),
    ("clip_score", "float64", "mean max(cos, 0) of image and caption CLIP embeddings (not x100)"),
    ("clip_note", "string", "n/a reason when clip_score is null"),
    ("clip_id", "string", "CLIP model/weights id (<model>/openai/sha256-<16 hex>)"),
    ("reference_id", "string", "ref-<key16> (computed) or import-<sha16> (imported file)"),
    ("reference_kind", "string", "computed | imported"),
    ("reference_images", "int64", "images behind the reference mean/covariance (null: imported statistics)"),
    ("reference_dataset", "string", "dataset/split of a computed reference"),
    ("reference_note", "string", "where imported statistics/features came from"),
    ("extractor_id", "string", "inception-v3-compat/trunk-<16 hex> (sha256 of the trunk tensors)"),
    ("fid_network", "string", "torch-fidelity | fid-helper (weight source) or the stub's name"),
    ("extractor_weights_sha256", "string", "sha256 of the Inception weights file"),
    ("samples_path", "string", "the .npz scored"),
    ("samples_sha256", "string", "its sha256"),
    ("config_hash", "string", "hash of the resolved config"),
    ("git_commit", "string", "code version"),
    ("packages", "string", "JSON of package versions (torch, torch-fidelity, open_clip_torch, ...)"),
    ("device", "string", "where features were computed"),
    ("images_per_s", "float64", "feature-extraction throughput of this row (Inception + CLIP)"),
    ("wall_s", "float64", "seconds for this row"),
    ("created", "string", "ISO time"),
]
ROW_FIELDS += intervals.row_fields()  # 95% intervals and bootstrap replicates (drr.metrics.intervals)



def arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
             "float64[]": pa.list_(pa.float64())}
    return pa.schema([(n, types[t]) for n, t, _ in ROW_FIELDS])


def write_rows(rows: list[dict], out) -> None:
    out = Path(out)
    names = [n for n, _, _ in ROW_FIELDS]
    rows = [{k: r.get(k) for k in names} for r in rows]
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=arrow_schema())
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    elif out.suffix == ".jsonl":
        write_text(out, "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))
    elif out.suffix == ".json":
        write_text(out, json.dumps(rows, indent=1) + "\n")  # columns in schema order
    else:
        raise DrrError(f"--out {out}: use .parquet, .jsonl or .json")


def read_rows(path) -> list[dict]:
    """Rows back from any of the three formats (for tables and tests)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


# --- checks ----------------------------------------------------------------------------------------

def check_reference(ref, extractor, cfg: dict, resolution: int) -> str | None:
    """Refuse a reference from another extractor or another dataset, or whose arrays do not have
    the extractor's feature width; returns a note for imports."""
    meta, notes = ref.meta, []
    width = getattr(extractor, "pool_dim", 2048)
    for key, arr, want in (("mu", ref.mu, (width,)), ("sigma", ref.sigma, (width, width)),
                           ("features", ref.features, (None, width))):
        if arr is not None and (arr.ndim != len(want) or any(w is not None and s != w
                                                             for s, w in zip(arr.shape, want))):
            raise DrrError(f"{ref.path}: '{key}' has shape {tuple(arr.shape)}; the Inception pool "
                           f"features are {width} wide, so it should be "
                           f"{tuple('M' if w is None else w for w in want)}")
    for part, what in (("stats_extractor", "statistics"), ("features_extractor", "features")):
        made = meta.get(part)
        if made is None:
            continue
        if made.startswith("imported:"):
            notes.append(f"{what} imported from {Path(meta.get('source', '?')).name} "
                         f"(sha256 {made.split(':', 1)[1]}; made by that file's own Inception)")
        elif made != extractor.id:
            raise DrrError(f"{ref.path}: reference {what} were made with extractor {made}, but samples "
                           f"are scored with {extractor.id} (metrics.fid_network="
                           f"{cfg['metrics']['fid_network']}); recompute the reference")
    if meta["kind"] == "computed":
        im = meta["material"]["images"]
        want = {"dataset": cfg["data"]["name"], "split": cfg["metrics"]["reference_split"],
                "resolution": int(cfg["data"]["resolution"])}
        have = {k: im.get(k) for k in want}
        if have != want:
            raise DrrError(f"{ref.path}: reference made from {have} but the config scores against {want} "
                           f"(data.name / metrics.reference_split / data.resolution)")
        n_ref = cfg["metrics"]["reference_images"]
        if n_ref is not None and im["num_images"] != n_ref:
            raise DrrError(f"{ref.path}: reference holds {im['num_images']} images, "
                           f"metrics.reference_images is {n_ref}")
        if resolution != im["resolution"]:
            raise DrrError(f"{ref.path}: reference images are {im['resolution']} px, samples {resolution} px")
    return "; ".join(notes) or None


FID_ROUNDING = 1e-3  # a FID below -FID_ROUNDING is not rounding: features or statistics are broken


def check_ranges(rows: list[dict], out) -> None:
    """DrrError before any row is written if a metric is outside its possible range (or NaN)."""
    for r in rows:
        for key, lo, hi in (("fid", -FID_ROUNDING, np.inf), ("precision", 0, 1), ("recall", 0, 1)):
            if r.get(key) is not None and not (lo <= r[key] <= hi and np.isfinite(r[key])):
                raise DrrError(f"{out}: metric '{key}' of phase {r['phase']} is {r[key]:.6g}, outside "
                               f"[{lo}, {hi}]: not written (check {r['samples_path']} and reference "
                               f"{r['reference_id']})")


def check_min_samples(n: int, cfg: dict, path, key: str) -> None:
    need = cfg["metrics"]["min_samples"]
    if need is not None and n < need:
        raise DrrError(f"{path}: '{key}' holds {n} samples but metrics.min_samples is {need}; "
                       f"refusing to score fewer (the config asks for FID-{need // 1000}k)")


# --- scoring ---------------------------------------------------------------------------------------

_AUTO = object()


def extract_samples(images: NpzImages, extractor, batch_size: int, clip=None, captions=None,
                    desc: str = "score"):
    """Pool features, logits (or None) and CLIP cosines (or None) of every image."""
    from drr.metrics.clip import clip_cosines

    pools, logits, cos = [], [], []
    progress = Progress(len(images), desc, unit="img")
    done = 0
    for batch in images.batches(batch_size):
        f = extractor(batch)
        pools.append(f["pool"])
        if "logits" in f:
            logits.append(f["logits"])
        if clip is not None and captions is not None:
            cos.append(clip_cosines(clip, batch, captions[done:done + len(batch)]))
        done += len(batch)
        progress.update(len(batch))
    d = getattr(extractor, "pool_dim", 2048)
    pools = np.concatenate(pools) if pools else np.zeros((0, d), np.float32)
    return (pools, np.concatenate(logits) if logits else None,
            np.concatenate(cos) if cos else None)


def features_key(images: NpzImages, extractor, clip=None, captions=None) -> str:
    """sha256 of what the features of a sample set depend on: the extractor id, the images' pixels
    and shape, and (when CLIP cosines are computed) the CLIP id and the captions."""
    import hashlib

    h = hashlib.sha256(f"{extractor.id}|{tuple(images.shape)}".encode())
    for batch in images.batches(4096):
        h.update(batch.numpy().tobytes())
    if clip is not None and captions is not None:
        h.update(f"|{clip.id}|".encode())
        h.update(json.dumps([str(c) for c in captions]).encode())
    return h.hexdigest()


def cached_features(images: NpzImages, extractor, batch_size: int, clip, captions, desc: str,
                    cache_dir=None):
    """`extract_samples`, through a content-addressed cache when `cache_dir` is given: sample sets
    with the same pixels (the drafts of ablation variants that differ only in the revise phase, or
    one config reached under two variant names) are put through the networks once."""
    if cache_dir is None:
        return extract_samples(images, extractor, batch_size, clip, captions, desc)
    key = features_key(images, extractor, clip, captions)
    entry = Path(cache_dir) / f"{key[:32]}.npz"
    if entry.is_file():
        try:
            with np.load(entry) as z:
                pool = z["pool"]
                logits = z["logits"] if "logits" in z.files else None
                cos = z["cos"] if "cos" in z.files else None
            if len(pool) == len(images) and np.isfinite(pool).all():
                log(f"{desc}: features from cache {entry}")
                return pool, logits, cos
        except Exception:  # a damaged entry is recomputed and replaced
            pass
    pool, logits, cos = extract_samples(images, extractor, batch_size, clip, captions, desc)
    arrays = {"pool": pool}
    if logits is not None:
        arrays["logits"] = logits
    if cos is not None:
        arrays["cos"] = cos
    entry.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(entry) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return pool, logits, cos


def score_phase(cfg: dict, samples: Path, phase: str, ref, extractor, clip, clip_reason,
                batch_size: int, cache_dir=None) -> dict:
    m = cfg["metrics"]
    key = PHASE_KEYS[phase]
    images = NpzImages(samples, key)
    n = len(images)
    check_min_samples(n, cfg, samples, key)
    captions = read_captions(samples, n)
    t0 = time.monotonic()
    use_clip = clip if captions is not None else None
    pool, logits, cos = cached_features(images, extractor, batch_size, use_clip, captions,
                                        f"score {samples.parent.name}/{phase}", cache_dir)
    extract_s = time.monotonic() - t0
    row = {"phase": phase, "sample_key": key, "n_samples": n, "min_samples": m["min_samples"]}

    if n >= 2:
        mu, sigma = maths.stats(pool)
        row["fid"] = maths.fid_from_stats(mu, sigma, ref.mu, ref.sigma)
    else:
        row["fid_note"] = maths.na(f"FID needs at least 2 samples, got {n}")
    ism, row["is_note"] = maths.inception_score(logits, getattr(extractor, "logits_note", None))
    if ism:
        row["is_mean"], row["is_std"] = ism
    kidv, row["kid_note"] = maths.kid(pool, ref.features, m["kid_subset_size"])
    if kidv:
        row["kid_mean"], row["kid_std"], row["kid_subset_size"] = kidv
    prv, row["pr_note"] = maths.precision_recall(pool, ref.features, m["pr_k"])
    if prv:
        row["precision"], row["recall"] = prv
    row["pr_k"] = m["pr_k"]
    row["pr_reference_size"] = None if ref.features is None else int(len(ref.features))
    row["pr_convention"] = PR_CONVENTION
    if captions is None:
        row["clip_note"] = maths.na("samples have no captions; the CLIP score is for text-conditional "
                                    "samples")
    elif clip is None:
        row["clip_note"] = maths.na(clip_reason)
    else:
        from drr.metrics.clip import clip_score
        row["clip_score"], row["clip_id"] = clip_score(cos), clip.id
    labels = read_labels(samples, n)
    row.update(intervals.row_intervals(row, pool, logits, cos if row.get("clip_score") is not None else None,
                                       ref, m["pr_k"], labels, f"intervals {samples.parent.name}/{phase}"))
    row.update(images_per_s=round(n / extract_s, 3) if extract_s > 0 else None,
               wall_s=round(time.monotonic() - t0, 3))
    return row


def read_labels(samples: Path, n: int):
    """The class labels of a sample set (the bootstrap's strata), or None."""
    if "labels" not in npz_keys(samples):
        return None
    with np.load(samples) as z:
        labels = z["labels"]
    if labels.shape != (n,):
        raise DrrError(f"{samples}: 'labels' has shape {labels.shape}, expected ({n},)")
    return labels


def score(cfg: dict, samples, reference, phases=("revised",), experiment: str = "experiment",
          variant: str = "base", *, extractor=None, clip=_AUTO, device=None,
          features_cache=None) -> list[dict]:
    """Rows for each phase of `samples` scored against `reference` (paths); features are cached
    by content under `features_cache` when given (see `cached_features`)."""
    from drr.metrics.reference import read_reference

    samples = Path(samples)
    if not samples.is_file():
        raise DrrError(f"{samples}: samples file not found")
    have = npz_keys(samples)
    if phases == ("all",) or phases == ["all"]:
        phases = [p for p, k in PHASE_KEYS.items() if k in have]
        if not phases:
            raise DrrError(f"{samples}: no 'arr_0' array (the ADM evaluator's images) and no "
                           f"'drafts' (has {', '.join(have) or 'nothing'})")
    for p in phases:
        if p not in PHASE_KEYS:
            raise DrrError(f"--phase {p}: expected revised, draft or all")
        if PHASE_KEYS[p] not in have:
            extra = " (generation.save_drafts was off)" if p == "draft" else ""
            raise DrrError(f"{samples}: no '{PHASE_KEYS[p]}' array for phase {p}{extra}")
        check_min_samples(len(NpzImages(samples, PHASE_KEYS[p])), cfg, samples, PHASE_KEYS[p])
    ref = read_reference(reference)
    if extractor is None:
        from drr.metrics.inception import load_inception
        extractor = load_inception(cfg["metrics"], device or cfg["device"])
    resolution = NpzImages(samples, PHASE_KEYS[phases[0]]).shape[1]
    ref_note = check_reference(ref, extractor, cfg, resolution)
    clip_reason = None
    if clip is _AUTO:
        if read_captions(samples, len(NpzImages(samples, PHASE_KEYS[phases[0]]))) is not None:
            from drr.metrics.clip import load_clip
            clip, clip_reason = load_clip(cfg["metrics"], device or cfg["device"])
        else:
            clip = None
    elif clip is None:
        clip_reason = "no CLIP model given"
    prov = provenance(cfg)
    desc = extractor.describe() if hasattr(extractor, "describe") else {}
    common = {
        "experiment": experiment, "variant": variant,
        "reference_id": ref.id, "reference_kind": ref.meta["kind"],
        "reference_images": ref.meta.get("n_images"),
        "reference_dataset": (f"{ref.meta['material']['images']['dataset']}/"
                              f"{ref.meta['material']['images']['split']}" if ref.meta["kind"] == "computed"
                              else None),
        "reference_note": ref_note, "extractor_id": extractor.id,
        "fid_network": desc.get("fid_network", getattr(extractor, "network", None)),
        "extractor_weights_sha256": desc.get("weights_sha256"),
        "samples_path": str(samples), "samples_sha256": sha256_file(samples),
        "config_hash": prov["config_hash"], "git_commit": prov["git_commit"],
        "packages": json.dumps(prov["packages"], sort_keys=True),
        "device": str(getattr(extractor, "device", "cpu")),
    }
    rows = []
    for p in phases:
        row = score_phase(cfg, samples, p, ref, extractor, clip, clip_reason, cfg["metrics"]["batch_size"],
                          features_cache)
        row.update(common)
        row["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        row = {name: row.get(name) for name, _, _ in ROW_FIELDS}  # every column, in schema order
        rows.append(row)
        log(summary(row))
    return rows


def _fmt(v, spec=".4g"):
    return "n/a" if v is None else format(v, spec)


def summary(row: dict) -> str:
    parts = [f"{row['experiment']}/{row['variant']}/{row['phase']}: N={row['n_samples']}",
             f"FID {_fmt(row.get('fid'), '.3f')}",
             f"IS {_fmt(row.get('is_mean'), '.2f')}"
             + ("" if row.get("is_mean") is not None else f" {row.get('is_note')}"),
             f"KID {_fmt(row.get('kid_mean'))}",
             f"P {_fmt(row.get('precision'), '.3f')} R {_fmt(row.get('recall'), '.3f')} (k={row['pr_k']}, "
             f"M={row.get('pr_reference_size')})",
             f"CLIP {_fmt(row.get('clip_score'), '.4f')}"]
    return " | ".join(parts)


def default_names(configs: list[str]) -> tuple[str, str]:
    stems = [Path(c).stem for c in configs]
    return stems[0], "+".join(stems[1:]) or "base"


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--samples", required=True, type=Path, help="samples .npz (arr_0 uint8 NHWC)")
    p.add_argument("--reference", required=True, type=Path, help="reference .npz (drr.metrics.reference)")
    p.add_argument("--out", required=True, type=Path, help="rows: .parquet, .jsonl or .json")
    p.add_argument("--phase", action="append", choices=["revised", "draft", "all"],
                   help="phase(s) to score (default revised; repeatable)")
    p.add_argument("--experiment", help="experiment name in the rows")
    p.add_argument("--variant", help="variant name in the rows")
    p.add_argument("--device", help="auto | cuda | cuda:N | cpu (default: the config's `device`)")
    p.add_argument("--features-cache", type=Path,
                   help="folder of features cached by content (sample sets with the same pixels "
                        "are put through the networks once); default: no cache")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        exp, var = default_names(args.config)
        phases = args.phase or ["revised"]
        if "all" in phases:
            phases = ["all"]
        with hold(args.out.parent, args.out.name):  # also: the output folder is writable
            rows = score(cfg, args.samples, args.reference, phases, args.experiment or exp,
                         args.variant or var, device=args.device, features_cache=args.features_cache)
            check_ranges(rows, args.out)
            write_rows(rows, args.out)
        log(f"wrote {args.out} ({len(rows)} row{'s' * (len(rows) != 1)})")


if __name__ == "__main__":
    main()
